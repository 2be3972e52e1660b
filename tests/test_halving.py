"""Successive halving (`grid --fidelity halving`): the rung plan, promotion, the rank agreement
between rungs, and resuming after a kill mid-rung, with a backend that trains nothing; one
real search under Optuna."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from scalesearch.study.backends.fake import FakeBackend
from scalesearch.search.halving import plan, plan_text, rung_recipe, survivors
from scalesearch.settings import SettingsError, build_settings
from scalesearch.train.recipe import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
# resnet20-cifar at 32 px on 64 synthetic images, the demo's grid with a FLOPs tolerance of 10%:
# 9 kept candidates; batch 32, so rung k trains 64 x 2^k images (eta 2), 9 -> 5 -> 3 candidates.
FLAGS = dict(base="resnet20-cifar", train_subset=64, val_subset=32, alpha_max=2.0, beta_max=1.45, step=0.05,
             tolerance=0.1, phi_max=2, epochs=1.0, batch_size=32, fidelity="halving", eta=2, rungs=3, seeds=2,
             order="id")


def settings(tmp_path, name="run", **changes):
    return build_settings({}, {**FLAGS, "out": str(tmp_path / name), **changes})


def grid(s, backend=None, **kw):
    from scalesearch.search.grid import run_grid

    backend = backend or FakeBackend()
    return run_grid(s, backend=backend, progress=False, estimate=False, **kw), backend


def by_candidate(order):
    """A fake score: candidates ranked as ``order`` (best first) at rung 0, reversed at higher
    rungs when ``flip``; seeds add 0.1 points."""
    def score(trial, flip=False):
        place = order.index(trial.candidate) if trial.candidate in order else len(order)
        if flip and trial.rung:
            place = -place
        return 0.5 - 0.02 * place + 0.001 * trial.seed  # a top-1 in [0, 1] whatever the place
    return score


def test_the_plan_keeps_the_top_1_over_eta_and_at_least_two():
    assert [survivors(n, 3) for n in (0, 1, 2, 3, 6, 7, 9, 10)] == [0, 0, 2, 2, 2, 3, 3, 4]
    assert rung_recipe(TrainConfig(epochs=2), 2, 3).epochs == 18
    assert rung_recipe(TrainConfig(images=100), 1, 3).images == 300
    rungs = plan(9, 2, [100, 300, 900], 3)
    assert [(r.candidates, r.images, r.trials) for r in rungs] == [(9, 100, 18), (3, 300, 6), (2, 900, 4)]
    # 1,800 + 1,800 + 3,600 images against 9 x 2 x 900 = 16,200 for every candidate at the top budget.
    assert plan_text(rungs, 3).endswith("7,200 training images in all, 44% of the 16,200 that every candidate "
                                        "at the top budget would take")
    assert len(plan(1, 2, [100, 300], 3)) == 1  # one candidate: nothing to halve
    # two candidates: a rung keeps at least two, so halving spends more than full training, and says so
    two = plan_text(plan(2, 1, [100, 300, 900], 3), 3)
    assert "2,600 training images in all, 144% of the 1,800" in two
    assert two.endswith("warning: with 2 candidate(s) halving saves nothing (a rung keeps at least two); "
                        "--fidelity full --images 900 trains each once at the top budget for less")
    assert "warning" not in plan_text(rungs, 3)


@pytest.mark.parametrize("name, value, why", [("fidelity", "hyperband", "must be one of full, halving"),
                                              ("eta", 1, "must be an integer from 2 to 10"),
                                              ("rungs", 0, "must be an integer from 1 to 6")])
def test_bad_halving_settings_are_named(tmp_path, name, value, why):
    with pytest.raises(SettingsError, match=f"'{name}' {why}"):
        settings(tmp_path, **{name: value})


def test_rungs_train_the_top_at_eta_times_the_budget_and_agree(tmp_path):
    dry, _ = grid(settings(tmp_path, "dry"), dry_run=True)
    kept = [c.id for c in dry.candidates if c.kept]
    assert len(kept) == 9
    order = kept[::-1]  # the last id scores best
    result, backend = grid(settings(tmp_path), FakeBackend(score=by_candidate(order)))
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    # 9 candidates x 2 seeds at 64 images, the top 5 at 128, the top 3 at 256: rows in rung order.
    assert list(trials.groupby("rung", sort=True).size()) == [18, 10, 6] and trials.rung.is_monotonic_increasing
    assert dict(trials.groupby("rung").budget.first()) == {0: 64, 1: 128, 2: 256}
    assert set(trials[trials.rung == 2].candidate) == set(order[:3]) and trials.trial.is_unique
    assert len(backend.ran) == 34
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["candidate"] == order[0] and best["rung"] == 2
    assert [(r["rung"], r["candidates"], r["images"], r["promoted"]) for r in best["rungs"]] == [
        (0, 9, 64, order[:5]), (1, 5, 128, order[:3]), (2, 3, 256, [])]
    first, second = best["rank_agreement"]
    assert (first["n"], first["tau"], first["rho"]) == (5, 1.0, 1.0) and first["low"] > 0
    assert first["verdict"].startswith(f"the 64-image proxy ranks like the 128-image budget: tau 1.00 "
                                       f"[{first['low']:.2f}, 1.00], rho 1.00, n=5")
    assert second["n"] == 3 and "the interval includes 0" in second["verdict"]  # 3 candidates say little
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert list(summary.candidate[:3]) == order[:3] and list(summary.rung[:4]) == [2, 2, 2, 1]


def test_rungs_that_disagree_say_so(tmp_path):
    kept = [c.id for c in grid(settings(tmp_path, "dry"), dry_run=True)[0].candidates if c.kept]
    order = kept[::-1]
    flipped = by_candidate(order)
    result, _ = grid(settings(tmp_path), FakeBackend(score=lambda t: flipped(t, flip=True)))
    first = result.agreements[0]
    assert (first["n"], first["tau"], first["rho"]) == (5, -1.0, -1.0) and first["high"] < 0
    assert "the 64-image proxy ranks against the 128-image budget: tau -1.00" in first["verdict"]
    # Rung 1 reverses rung 0 and rung 2 agrees with rung 1: the fifth of rung 0 wins the search.
    assert result.agreements[1]["tau"] == 1.0
    assert result.best["candidate"] == order[4] and result.best["rung"] == 2


def test_raising_max_trials_re_ranks_the_rungs_and_keeps_stale_rows_out_of_the_ranking(tmp_path):
    """5 candidates, then all 9: rung 0 gains 4, which now outrank the old promotions. The rows
    of candidates no longer promoted stay in trials.csv, but the ranking, the plots and the
    curves take each rung as it stands now (halving.current), the curves one series per rung."""
    from scalesearch.report.curves import load_series
    from scalesearch.search.halving import current
    from scalesearch.report.plots import _points
    from scalesearch.study.rundir import RunDir

    kept = [c.id for c in grid(settings(tmp_path, "dry"), dry_run=True)[0].candidates if c.kept]
    order = kept[::-1]  # the last id scores best: the 4 added candidates beat the first 5
    score = FakeBackend(score=by_candidate(order)).score
    grid(settings(tmp_path, max_trials=5), FakeBackend(score=score))
    result, _ = grid(settings(tmp_path), FakeBackend(score=score))
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    stale = set(trials[trials.rung == 1].candidate) - set(order[:5])
    assert stale == {kept[2], kept[3]}                          # promoted from 5 before, not from 9 now
    assert result.best["candidate"] == order[0] and [s.candidate for s in result.summaries[:3]] == order[:3]
    run = RunDir(tmp_path / "run")
    now = current(run.trials().values(), 2)
    assert {(r.rung, r.candidate) for r in now if r.rung} == {(1, c) for c in order[:5]} | {(2, c) for c in order[:3]}
    points = _points(run)
    assert [p["candidate"] for p in points[:3]] == order[:3] and not stale & {p["candidate"] for p in points if p["rung"]}
    series = load_series(tmp_path / "run")
    assert [(s.label, len(s.points)) for s in series] == [
        ("run (grid, rung 0: 64 images)", 9), ("run (grid, rung 1: 128 images)", 5), ("run (grid, rung 2: 256 images)", 3)]


KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_halving import FakeBackend, grid, settings
    from pathlib import Path

    class Killed(FakeBackend):
        def run(self, todo, space, run, context, on_row):
            def row(r):
                on_row(r)
                if r.trial == {victim!r}:
                    os.kill(os.getpid(), signal.SIGKILL)
            super().run(todo, space, run, context, row)

    grid(settings(Path({tmp!r})), Killed())
""")


def test_a_run_killed_mid_rung_resumes_with_no_trial_lost_or_doubled(tmp_path):
    """SIGKILL right after the first rung-1 trial's row is written, then the same search again:
    every planned trial is in trials.csv once, and the resumed run trains only what was left."""
    grid(settings(tmp_path, "probe"))  # the same search uninterrupted: which trials rung 1 trains
    victim = pd.read_csv(tmp_path / "probe" / "trials.csv").query("rung == 1").trial.iloc[0]
    script = KILLER.format(tests=str(ROOT / "tests"), victim=victim, tmp=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    before = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert len(before) == 19 and victim in set(before.trial)  # rung 0's 18 and the victim
    _, resumed = grid(settings(tmp_path))
    after = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert after.trial.is_unique and sorted(after.trial) == sorted(pd.read_csv(tmp_path / "probe" / "trials.csv").trial)
    assert not set(resumed.ran) & set(before.trial) and len(resumed.ran) == len(after) - 19


def test_a_real_halving_search_under_optuna(tiny, tmp_path):
    """Two rungs of real training: 3 candidates x 1 seed, the top 2 again at twice the images."""
    from conftest import cli, ok, with_option

    out = tmp_path / "run"
    args = with_option(with_option(tiny, "--max-trials", "3"), "--out", str(out))
    stdout = ok(cli("grid", *args, "--fidelity", "halving", "--set", "eta=2", "--set", "rungs=2"))
    assert "successive halving (eta 2): rung 0 trains 3 candidate(s) x 1 seed(s)" in stdout
    assert "rank agreement, rung 0 -> 1: cannot tell" in stdout  # two candidates at rung 1
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.rung) == [0, 0, 0, 1, 1] and (trials.state == "COMPLETE").all()
    assert trials.budget[3] == 2 * trials.budget[0] and trials.epochs[3] == pytest.approx(2 * trials.epochs[0])
    best = json.loads((out / "best.json").read_text())
    assert best["rung"] == 1 and best["rank_agreement"][0]["n"] == 2


def test_the_halving_demo_study_regenerates_from_its_trials(capsys, monkeypatch):
    """experiments/scripts/halving_vs_full.py on the committed runs prints the figures NOTES.md states."""
    import runpy

    study = ROOT / "experiments" / "halving-demo"
    monkeypatch.setattr(sys, "argv", ["halving_vs_full.py", str(study / "halving"), str(study / "full-9x")])
    runpy.run_path(str(ROOT / "experiments" / "scripts" / "halving_vs_full.py"), run_name="__main__")
    printed = capsys.readouterr().out
    notes = (study / "NOTES.md").read_text()
    assert "| 0 | 1.00 | 1.00 | 1.406 | 33.00 +/- 1.70 | 54.20 +/- 0.28 | rung 2, best |" in printed
    assert "halving 353,280, every candidate at the top budget 635,904 (56%)" in printed
    assert "same best: candidate 0" in printed and "tau 0.33 [-0.56, 0.86], rho 0.37, n=6" in printed
    for figure in ("33.00 +/- 1.70", "54.20 +/- 0.28", "353,280", "635,904", "56%", "tau 0.33 [-0.56, 0.86]"):
        assert figure in notes, figure


def test_a_halving_run_whose_top_rung_passes_the_per_trial_limit_is_refused():
    """Successive halving multiplies the budget by eta at each rung: the top rung is checked against
    the per-trial limits when the settings are made, not when rung 2 asks for 1e13 images."""
    from scalesearch.settings import SettingsError, build_settings

    with pytest.raises(SettingsError, match=r"top rung \(rung 2\) would train images = 1e\+11 x eta\^2 = 1e\+13"):
        build_settings({}, dict(base="resnet20-cifar", images=10**11, fidelity="halving", eta=10, rungs=3))
    with pytest.raises(SettingsError, match=r"epochs = 5000 x eta\^2 = 4.5e\+04 per trial, above the limit"):
        build_settings({}, dict(base="resnet20-cifar", epochs=5000, fidelity="halving", eta=3, rungs=3))
    assert build_settings({}, dict(base="resnet20-cifar", images=10**11, eta=10, rungs=3)).train.images == 10**11
