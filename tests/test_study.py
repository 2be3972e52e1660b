"""The study machinery in-process with a backend that trains nothing: settings, seeds, ranking,
divergence, resume and extension, the lock, export."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from scalesearch.study.backends.fake import FakeBackend
from scalesearch.errors import UserError
from scalesearch.settings import SearchSettings, SettingsError, build_settings, default_of, load_settings
from scalesearch.study.rows import TrialRow
from scalesearch.study.rundir import RunDir

# resnet20-cifar at 32 px on a few synthetic images: the grid has a handful of kept candidates.
FLAGS = dict(base="resnet20-cifar", train_subset=64, val_subset=32, alpha_max=1.6, beta_max=1.3, step=0.05,
             phi_max=2, epochs=1.0, batch_size=32)


def settings(tmp_path, name="run", **changes):
    return build_settings({}, {**FLAGS, "out": str(tmp_path / name), **changes})


def grid(s, backend=None, **kw):
    from scalesearch.search.grid import run_grid

    backend = backend or FakeBackend()
    return run_grid(s, backend=backend, progress=False, estimate=False, **kw), backend


# -- settings ------------------------------------------------------------------------------

def test_defaults_come_from_the_settings_classes():
    s = build_settings({}, {"base": "resnet18"})
    assert s == SearchSettings(base="resnet18")
    assert default_of("step") == s.grid.step and default_of("epochs") == s.train.epochs
    assert default_of("backend") == "optuna" and default_of("seeds") == 1


def test_settings_round_trip_through_a_file(tmp_path):
    s = settings(tmp_path, seeds=3, candidates="0,4", depth_rule="total", lr=0.05, early_stop=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"settings": s.as_dict()}))
    assert load_settings(path) == s
    yaml_path = tmp_path / "s.yaml"
    yaml_path.write_text("base: resnet18\ngrid: {step: 0.1}\ntrain: {epochs: 2}\n")
    loaded = load_settings(yaml_path, {"epochs": 3})         # a flag beats the file
    assert loaded.grid.step == 0.1 and loaded.train.epochs == 3 and loaded.base == "resnet18"


def test_a_flat_legacy_config_still_loads(tmp_path):
    legacy = {"base": "resnet18", "target_flops": "2x", "alpha_max": 2.0, "epochs": 5.0, "backend": "optuna",
              "cpus_per_trial": 1.0, "dataset": "synthetic", "seed": 0, "out": None}
    s = build_settings(legacy)
    assert s.train.epochs == 5.0 and s.backend.backend == "optuna" and s.grid.alpha_max == 2.0


@pytest.mark.parametrize("data, overrides, message", [
    ({"base": "resnet18", "stepp": 1}, {}, "unknown setting 'stepp'"),
    ({"base": "resnet18", "grid": {"epochs": 1}}, {}, "unknown setting 'grid.epochs'"),
    ({"base": "resnet18", "grid": 5}, {}, "section 'grid' must be a mapping"),
    ({}, {}, "setting 'base' is missing"),
    ({"base": "resnet18"}, {"seeds": 0}, "setting 'seeds'"),
    ({"base": "resnet18"}, {"backend": "slurm"}, "setting 'backend'"),
    ({"base": "resnet18"}, {"address": "1.2.3.4:6379"}, "use it with backend ray"),
    ({"base": "resnet18"}, {"candidates": "a,b"}, "setting 'candidates'"),
    ({"base": "resnet18"}, {"order": "best"}, "setting 'order'"),
    ({"base": "resnet18"}, {"device": "tpu"}, "setting 'device'"),
    ({"base": "resnet18"}, {"cpus_per_trial": float("nan")}, "setting 'cpus_per_trial'"),
    ({"base": "resnet18"}, {"train_subset": 0}, "setting 'train_subset'"),
])
def test_bad_settings_are_named(data, overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        build_settings(data, overrides)


def test_a_damaged_config_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage: [")
    with pytest.raises(SettingsError, match="bad.yaml"):
        load_settings(bad)


# -- seeds and ranking ----------------------------------------------------------------------

def test_grid_with_seeds_writes_a_row_per_candidate_and_seed(tmp_path):
    s = settings(tmp_path, seeds=3, max_trials=3)
    result, backend = grid(s)
    trials = pd.read_csv(result.out / "trials.csv")
    assert len(trials) == 9
    assert {c: sorted(g.seed) for c, g in trials.groupby("candidate")} == {c: [0, 1, 2] for c in set(trials.candidate)}
    assert list(trials.columns) == TrialRow.columns()
    summary = pd.read_csv(result.out / "summary.csv")
    assert len(summary) == 3 and (summary.n == 3).all() and summary.top1_std.notna().all()
    best = json.loads((result.out / "best.json").read_text())
    assert best["candidate"] == summary.iloc[0].candidate and best["top1_mean"] == summary.top1_mean.max()
    assert best["verdict"]["text"] == result.verdict.text and best["n"] == 3
    family = pd.read_csv(result.out / "family.csv")
    assert list(family.phi) == [0, 1, 2]


def test_resume_and_extend_per_candidate_and_seed(tmp_path):
    s = settings(tmp_path, max_trials=2)
    first, backend = grid(s)
    assert len(backend.ran) == 2
    _, again = grid(s)
    assert again.ran == []                                   # nothing trained twice
    _, more = grid(s.replace(max_trials=3))                   # a larger selection extends the run
    assert len(more.ran) == 1 and more.ran[0] not in backend.ran
    _, seeded = grid(s.replace(max_trials=3, seeds=2))        # and so do more seeds
    assert sorted(seeded.ran) == sorted(f"c{c}-s1" for c in {int(t.split('-')[0][1:]) for t in backend.ran + more.ran})
    trials = pd.read_csv(first.out / "trials.csv")
    assert len(trials) == 6 and trials.trial.is_unique


def test_a_killed_study_resumes_where_it_stopped(tmp_path):
    s = settings(tmp_path, max_trials=3, seeds=2)
    with pytest.raises(KeyboardInterrupt):
        grid(s, FakeBackend(stop_after=4))
    assert len(pd.read_csv(tmp_path / "run" / "trials.csv")) == 4
    _, backend = grid(s)
    assert len(backend.ran) == 2


def test_diverged_trials_are_marked_and_never_ranked(tmp_path):
    s = settings(tmp_path, max_trials=3, order="id")
    probe, _ = grid(settings(tmp_path, "probe", max_trials=3, order="id"))
    winner = probe.best["candidate"]
    result, _ = grid(s, FakeBackend(diverge={f"c{winner}-s0"}))
    trials = pd.read_csv(result.out / "trials.csv").set_index("trial")
    assert trials.loc[f"c{winner}-s0", "state"] == "DIVERGED" and "forced" in trials.loc[f"c{winner}-s0", "diverged"]
    assert result.best["candidate"] != winner and winner in result.best["diverged"]


def test_nothing_healthy_is_a_clear_error(tmp_path):
    s = settings(tmp_path, max_trials=2, order="id")
    cands, _ = grid(settings(tmp_path, "dry", max_trials=2, order="id"), dry_run=True)
    ids = [c.id for c in cands.candidates if c.kept][:2]
    with pytest.raises(UserError, match="no candidate trained healthily"):
        grid(s, FakeBackend(diverge={f"c{i}-s0" for i in ids}))


def test_chosen_candidates_and_orders(tmp_path):
    dry, _ = grid(settings(tmp_path, "dry"), dry_run=True)
    kept = [c for c in dry.candidates if c.kept]
    pick = [kept[-1].id, kept[0].id]
    result, backend = grid(settings(tmp_path, candidates=",".join(map(str, pick))))
    assert backend.ran == [f"c{i}-s0" for i in pick]
    with pytest.raises(UserError, match="is not a kept candidate"):
        grid(settings(tmp_path, "bad", candidates="99999"))
    nearest, backend = grid(settings(tmp_path, "near", max_trials=1, order="nearest"))
    target = 2.0
    assert backend.ran == [f"c{min(kept, key=lambda c: (abs(c.flops_ratio - target), c.id)).id}-s0"]


def test_a_family_member_too_large_to_build_ends_the_family_not_the_search(tmp_path, monkeypatch):
    import scalesearch.measure.cost as cost

    # A limit that phi = 0 and 1 fit under and every 4x member (phi = 2) does not.
    monkeypatch.setattr(cost, "MEMORY_LIMIT_GIB", 0.0008)
    result, backend = grid(settings(tmp_path, phi_max=3, max_trials=2, order="id"))
    assert [row["phi"] for row in result.family] == [0, 1]
    assert result.family_note.startswith("the family stops at phi = 1: family member phi = 2 ")
    assert "cannot be built" in result.family_note
    run = tmp_path / "run"
    assert json.loads((run / "best.json").read_text())["candidate"] == result.best["candidate"]
    assert len(pd.read_csv(run / "family.csv")) == 2 and len(pd.read_csv(run / "trials.csv")) == 2


def test_spread_order_takes_the_grids_corners_first():
    from types import SimpleNamespace
    from scalesearch.search.order import spread_order
    # A depth-, a width- and a resolution-heavy point around a cluster of compound ones.
    shapes = [(1.2, 1.1, 1.15), (1.25, 1.1, 1.1), (2.0, 1.0, 1.0), (1.2, 1.15, 1.1),
              (1.0, 1.4, 1.0), (1.0, 1.0, 1.4), (1.15, 1.1, 1.15)]
    kept = [SimpleNamespace(id=i, alpha=a, beta=b, gamma=g) for i, (a, b, g) in enumerate(shapes)]
    order = [c.id for c in spread_order(kept)]
    assert order[0] == 2                      # farthest from the centre: the deepest
    assert set(order[:3]) == {2, 4, 5}        # then the other two corners
    assert sorted(order) == list(range(len(shapes)))    # every candidate, once
    assert [c.id for c in spread_order(list(reversed(kept)))] == order     # the order is fixed
    assert spread_order([]) == []


# -- the run directory ------------------------------------------------------------------------

def test_the_lock_refuses_a_second_process(tmp_path):
    run = RunDir(tmp_path / "locked")
    run.create_and_lock()
    try:
        other = RunDir(tmp_path / "locked")
        with pytest.raises(UserError, match=f"in use by another scalesearch process \\(pid {os.getpid()}\\)"):
            other.create_and_lock()
    finally:
        run.release()
    RunDir(tmp_path / "locked").create_and_lock()            # free again once released


# The lock held by another process, through the command: tests/test_faults_processes.py
# (test_a_run_held_by_another_process_is_refused_untouched).


def test_damaged_trials_csv_is_named(tmp_path):
    s = settings(tmp_path, max_trials=1)
    result, _ = grid(s)
    (result.out / "trials.csv").write_text("trial,candidate,seed\nc0-s0,notanumber,zero\n")
    with pytest.raises(UserError, match="trials.csv"):
        grid(s)


# -- the chosen model leaves the tool ----------------------------------------------------------

def test_export_and_create_model_match_the_family(tmp_path):
    import scalesearch
    from scalesearch.api import export_member, load_model

    result, _ = grid(settings(tmp_path, max_trials=2))
    family = pd.read_csv(result.out / "family.csv").set_index("phi")
    files = export_member(result.out, 2, tmp_path / "export")
    assert [f.name for f in files] == ["spec.yaml", "model.pt", "meta.json"]
    model = load_model(tmp_path / "export")
    assert sum(p.numel() for p in model.parameters()) == family.loc[2, "params"]
    assert model.spec.resolution == family.loc[2, "resolution"]
    made = scalesearch.create_model(result.out, phi=1)
    assert sum(p.numel() for p in made.parameters()) == family.loc[1, "params"]
    with pytest.raises(UserError, match="not an empty folder"):
        export_member(result.out, 1, tmp_path / "export")
    with pytest.raises(UserError, match="phi 9 is not in"):
        export_member(result.out, 9, tmp_path / "export9")


def test_export_takes_other_image_channels_and_a_search_refuses_them(tmp_path):
    """A grayscale (or multispectral) member: the stem takes in_channels, counted the same by
    the analytic counter and fvcore; a search, whose data sets are RGB, refuses such a base."""
    import json

    import torch

    from scalesearch.api import export_member, load_model
    from scalesearch.measure.cost import count_cost, count_cost_plain
    from scalesearch.net.spec import load_spec, save_spec

    result, _ = grid(settings(tmp_path, max_trials=2))
    export_member(result.out, 1, tmp_path / "gray", in_channels=1, num_classes=5)
    model = load_model(tmp_path / "gray")
    assert model.spec.in_channels == 1 and model(torch.zeros(2, 1, 32, 32)).shape == (2, 5)
    rgb = load_spec(tmp_path / "gray" / "spec.yaml").replace(in_channels=3)
    gray, four = rgb.replace(in_channels=1), rgb.replace(in_channels=4)
    assert count_cost(gray) == count_cost_plain(gray) and count_cost(four) == count_cost_plain(four)
    # The stem's first convolution is the only difference: out elements x 9 per extra input channel.
    side = -(-rgb.resolution // rgb.stem.stride)  # the stem's output map, same-padded
    assert count_cost(four).flops - count_cost(gray).flops == 3 * rgb.stem.kernel ** 2 * side ** 2 * rgb.stem.out_channels
    meta = json.loads((tmp_path / "gray" / "meta.json").read_text())
    assert meta["flops"] == count_cost(gray).flops
    with pytest.raises(UserError, match="--in-channels must be a whole number from 1 to 1,024 \\(got 0\\)"):
        export_member(result.out, 1, tmp_path / "zero", in_channels=0)
    save_spec(four, tmp_path / "four.yaml")
    with pytest.raises(UserError, match="takes 4-channel images .* export --in-channels 4"):
        grid(settings(tmp_path, "four", base=str(tmp_path / "four.yaml")))


def test_grid_and_reproduce_share_one_run_setup(tmp_path):
    """Both commands go through study/setup.py: one Planned event each (the estimate's
    announcement), and one same-run rule whose message names the first setting that differs."""
    from scalesearch.reproduce import make_settings, reproduce
    from scalesearch.study.setup import Planned

    events: list = []
    grid(settings(tmp_path, seeds=2), dry_run=True, on_event=events.append)
    experiment = tmp_path / "e.yaml"
    experiment.write_text("name: e\nbudgets: {smoke: {resolution: 32, train_subset: 64, val_subset: 32, "
                          "epochs: 1}}\nbases: {resnet20-cifar: {rows: [{method: baseline}, {method: width, w: 2}]}}\n")
    reproduce(make_settings(experiment, out=str(tmp_path / "rep")), dry_run=True, on_event=events.append,
              backend=FakeBackend(), progress=False, estimate=False)
    planned = [e for e in events if isinstance(e, Planned)]
    assert [(p.unit, p.seeds, p.todo, p.trials == p.units * p.seeds) for p in planned] == [
        ("candidate(s)", 2, planned[0].trials, True), ("models", 1, 2, True)]
    assert planned[1].models and planned[0].images_per_trial == 64 and planned[1].images_per_trial is None
    with pytest.raises(UserError, match=r"holds a different search \(seed = 0 there, 3 here\)"):
        grid(settings(tmp_path, seed=3), dry_run=True)
    experiment.write_text(experiment.read_text().replace("w: 2", "w: 3"))
    with pytest.raises(UserError, match=r"holds a different reproduction \(bases.resnet20-cifar.rows\[1\].w = 2 there, 3 here\)"):
        reproduce(make_settings(experiment, out=str(tmp_path / "rep")), dry_run=True, backend=FakeBackend(),
                  progress=False, estimate=False)
