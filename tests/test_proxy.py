"""Proxies that keep the base's feature-map geometry (--keep-maps), a search that says when it
has lost a dimension, and verdicts that name a tie (the spread with the held-out binomial error)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from scalesearch import get_base, load_spec
from scalesearch.study.backends.fake import FakeBackend
from scalesearch.net.bases import base_names
from scalesearch.cli.main import app
from scalesearch.search.grid import run_grid
from scalesearch.net.proxy import halvings, keep_maps, last_map, remove_halvings
from scalesearch.settings import build_settings

from conftest import ROOT

# (base, proxy resolution) -> (stride-2 steps removed, last map with native strides, adapted last map)
GEOMETRY = {
    ("resnet50", 32): (("stem", "pool", "stage 2"), 1, 8),
    ("resnet18", 64): (("stem", "pool"), 2, 8),
    ("mobilenetv2", 32): (("stem", "stage 2", "stage 3"), 1, 8),
    ("efficientnet-b0", 32): (("stem", "stage 2", "stage 3"), 1, 8),
    ("efficientnet-b0", 64): (("stem", "stage 2"), 2, 8),
    ("resnet20-cifar", 32): ((), 8, 8),
}


@pytest.mark.parametrize("name", base_names())
def test_every_base_keeps_at_least_its_native_last_map_with_the_fewest_removals(name):
    base = get_base(name)
    native = last_map(base)
    for resolution in (32, 64, base.resolution):
        adapted, geometry = keep_maps(base, resolution)
        assert adapted.resolution == resolution and last_map(adapted) == geometry.adapted_map >= native
        removed = len(geometry.removed)
        if removed:  # one fewer would leave the map smaller than the native one
            assert last_map(remove_halvings(base.replace(resolution=resolution), removed - 1)) < native
        assert tuple(halvings(base)[:removed]) == geometry.removed   # earliest first
        # only strides (and the pool) change: channels, layers, kernels, blocks stay
        assert [(s.out_channels, s.layers, s.kernel, s.block) for s in adapted.stages] == \
               [(s.out_channels, s.layers, s.kernel, s.block) for s in base.stages]
        assert adapted.stem.out_channels == base.stem.out_channels and adapted.head == base.head


@pytest.mark.parametrize("key", list(GEOMETRY), ids=[f"{b}@{r}" for b, r in GEOMETRY])
def test_the_adapted_geometry_of_the_built_in_bases(key):
    removed, proxy_map, adapted_map = GEOMETRY[key]
    _, geometry = keep_maps(get_base(key[0]), key[1])
    assert (geometry.removed, geometry.proxy_map, geometry.adapted_map) == (removed, proxy_map, adapted_map)


def test_a_spec_file_is_adapted_the_same_way():
    spec = load_spec(ROOT / "examples" / "vgg11.yaml")
    adapted, geometry = keep_maps(spec, 32)
    assert last_map(adapted) >= last_map(spec) and geometry.removed == tuple(halvings(spec)[:len(geometry.removed)])
    assert last_map(spec.replace(resolution=32)) < last_map(spec)   # the native strides would shrink it


def test_flops_prints_the_adapted_strides_and_the_last_map():
    result = CliRunner().invoke(app, ["flops", "--base", "efficientnet-b0", "--resolution", "32", "--keep-maps"])
    assert result.exit_code == 0, result.stderr
    assert "keep-maps: stride 1 at stem, stage 2, stage 3: last feature map 8x8 at 32px (native strides: 1x1; " \
           "native 224px: 7x7)" in result.stdout
    assert "(last feature map 8x8)" in result.stdout
    stem, *stages = [line.split() for line in result.stdout.splitlines() if line.split()[:1] and
                     line.split()[0] in ("stem", "1", "2", "3", "4", "5", "6", "7")]
    assert stem[4] == "1" and [s[5] for s in stages] == ["1", "1", "1", "2", "1", "2", "1"]  # stride column
    as_json = json.loads(CliRunner().invoke(app, ["flops", "--base", "efficientnet-b0", "--resolution", "32",
                                                  "--keep-maps", "--json"]).stdout)
    assert as_json["last_map"] == 8 and as_json["geometry"].startswith("keep-maps:")


def _grid(tmp_path, name, **flags):
    settings = build_settings({}, dict(base="resnet50", target_flops="2x", resolution=32, train_subset=64,
                                       val_subset=32, step=0.05, alpha_max=2.0, beta_max=1.4, max_trials=2,
                                       order="id", phi_max=1, out=str(tmp_path / name), **flags))
    events = []
    result = run_grid(settings, backend=FakeBackend(), progress=False, estimate=False, on_event=events.append)
    return result, events[0], settings


def test_a_grid_that_lost_resolution_says_so_and_keep_maps_gets_it_back(tmp_path):
    """ResNet-50 at 32px: its FLOPs move in jumps, every kept candidate has gamma = 1."""
    result, measured, _ = _grid(tmp_path, "native")
    assert all(c.gamma == 1 for c in result.candidates if c.kept)
    assert measured.lost.startswith("every kept candidate has gamma = 1: at 32px this grid cannot scale resolution")
    assert "--set keep_maps=true" in measured.lost and measured.geometry == ""
    result, measured, settings = _grid(tmp_path, "kept", keep_maps=True)
    assert any(c.gamma > 1 for c in result.candidates if c.kept) and measured.lost == ""
    assert measured.geometry.startswith("keep-maps: stride 1 at stem, pool, stage 2")
    config = json.loads((result.out / "config.json").read_text())
    assert config["settings"]["keep_maps"] is True
    # FLOPs counted on the adapted proxy; the family is the native base's (224px at phi = 0)
    assert measured.base.stem.stride == 1 and measured.base_flops > 10 * 85_458_944
    assert result.family[0]["resolution"] == 224 and result.family[0]["flops"] == 4_087_160_832  # 224px, the data set's head
    from scalesearch.api import member_spec

    assert member_spec(result.out, 0).stem.stride == 2     # export rebuilds the native member


def test_a_tie_is_said_in_best_json_and_on_screen(tmp_path):
    def score(trial):  # two candidates 0.5 points apart, 1 point of seed noise: a tie
        return 0.40 + 0.005 * (trial.candidate == 0) + 0.01 * (trial.seed % 2)

    settings = build_settings({}, dict(base="resnet20-cifar", target_flops="2x", train_subset=64, val_subset=32,
                                       step=0.1, alpha_max=1.6, beta_max=1.5, max_trials=2, order="id", seeds=2,
                                       phi_max=1, out=str(tmp_path / "tie")))
    result = run_grid(settings, backend=FakeBackend(score=score), progress=False, estimate=False)
    best = json.loads((result.out / "best.json").read_text())
    assert best["tie"] == [result.ties[0].runner_up] and "a tie: the best by mean is within noise" in best["tie_text"]
    assert best["verdict"]["n_val"] == 32 and best["verdict"]["binomial"] > 0.08   # 32 images: ~9 points


# -- does the proxy rank like a bigger budget? ------------------------------------------------------

def _check(tmp_path, score, name, **flags):
    from scalesearch.api import check_proxy

    settings = build_settings({}, dict(base="resnet20-cifar", target_flops="2x", train_subset=64, val_subset=32,
                                       step=0.1, alpha_max=1.6, beta_max=1.5, max_trials=5, order="id", seeds=2,
                                       epochs=1.0, phi_max=1, out=str(tmp_path / name), **flags))
    run_grid(settings, backend=FakeBackend(score=score), progress=False, estimate=False)
    return check_proxy(tmp_path / name, "4x", top=5, progress=False, estimate=False, backend=FakeBackend(score=score))


def test_check_proxy_when_the_budgets_agree(tmp_path):
    def score(trial):  # the same order at every budget, 10 points higher at 4 epochs, small seed noise
        return 0.2 + 0.005 * trial.candidate + 0.025 * trial.recipe.epochs + 0.002 * trial.seed

    record = _check(tmp_path, score, "agree")
    assert (record["n"], record["tau"], record["rho"]) == (4, 1.0, 1.0)      # the grid keeps 4 candidates
    assert record["low"] > 0 and record["verdict"].startswith("the 1 epoch proxy ranks like the 4 epochs budget: "
                                                              "tau 1.00 [")
    check = tmp_path / "agree" / "check-proxy-4x"
    saved = json.loads((check / "agreement.json").read_text())
    assert saved["tau"] == 1.0 and json.loads((check / "config.json").read_text())["settings"]["train"]["epochs"] == 4
    assert (check / "agreement.png").stat().st_size > 10_000
    again = _check(tmp_path, score, "agree")   # resumed: nothing trained twice, the same answer
    assert again["tau"] == record["tau"] and again["low"] == record["low"]


def test_check_proxy_of_a_halving_run_starts_from_its_rung_0(tmp_path):
    """Under successive halving the run's own budget is rung 0's, where every candidate trained:
    check-proxy compares those scores with the larger budget, not the promoted ones' higher rung."""
    def score(trial):
        return 0.2 + 0.005 * trial.candidate + 0.025 * trial.recipe.epochs + 0.002 * trial.seed

    record = _check(tmp_path, score, "halved", fidelity="halving", eta=2, rungs=2)
    rung0 = pd.read_csv(tmp_path / "halved" / "trials.csv").query("rung == 0")
    assert record["n"] == 4 and sorted(p["candidate"] for p in record["candidates"]) == sorted(set(rung0.candidate))
    for point in record["candidates"]:
        assert point["small"] == list(rung0[rung0.candidate == point["candidate"]].sort_values("seed").top1)
    larger = pd.read_csv(tmp_path / "halved" / "check-proxy-4x" / "trials.csv")
    assert set(larger.rung) == {0} and len(larger) == 8 and set(larger.budget) == {4 * rung0.budget.iloc[0]}


def test_check_proxy_when_the_bigger_budget_reverses_the_ranking(tmp_path):
    def score(trial):  # at 1 epoch the small candidates lead; at 4 epochs the order is reversed
        sign = 1 if trial.recipe.epochs == 1 else -1
        return 0.5 + sign * 0.005 * trial.candidate + 0.002 * trial.seed

    record = _check(tmp_path, score, "reverse")
    assert (record["tau"], record["rho"]) == (-1.0, -1.0) and record["high"] < 0
    assert "ranks against the 4 epochs budget: tau -1.00" in record["verdict"]


def test_check_proxy_refuses_what_it_cannot_answer(tmp_path):
    from scalesearch.api import check_proxy
    from scalesearch.errors import UserError

    with pytest.raises(UserError, match="is not a scalesearch run directory"):
        check_proxy(tmp_path, "4x")
    _check(tmp_path, lambda t: 0.3 + 0.01 * t.candidate + 0.01 * t.recipe.epochs, "run")
    for budget, said in (("0.5x", "must be a multiple of the run's budget above 1"), ("800M", "above 1"),
                         ("abc", "--budget must be a ratio")):
        with pytest.raises(UserError, match=said):
            check_proxy(tmp_path / "run", budget)
    with pytest.raises(UserError, match="--top must be a whole number of at least 2"):
        check_proxy(tmp_path / "run", "4x", top=1)
    from scalesearch.study.rundir import RunDir

    busy = RunDir(tmp_path / "run" / "check-proxy-4x")   # another check of the same run, running
    busy.create_and_lock()
    try:
        with pytest.raises(UserError) as info:
            check_proxy(tmp_path / "run", "4x", progress=False, estimate=False, backend=FakeBackend())
    finally:
        busy.release()
    said = str(info.value)
    assert "--out" not in said and f"check-proxy's folder '{busy.path}' is in use" in said, said
