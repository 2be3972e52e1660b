"""Measured latency (measure/latency.py): what a measurement holds and that the cache answers.
Nothing here asserts a time: only that the figures are well formed and read back."""

from __future__ import annotations

import json

import pytest

from scalesearch import get_base, scale
from scalesearch.measure import latency as lat

from conftest import cli, ok


def small():
    return scale(get_base("resnet20-cifar").replace(resolution=16), 1.0, 0.5, 1.0)


@pytest.mark.real_latency
def test_a_latency_is_a_median_with_its_spread_and_is_cached(monkeypatch):
    first = lat.measure_latency(small(), min_run_time=0.02)
    assert first.median_ms > 0 and first.iqr_ms >= 0 and first.blocks >= 1
    assert (first.batch, first.resolution, first.device) == (1, 16, "cpu") and "thread" in first.machine
    assert first.spread == pytest.approx(first.iqr_ms / first.median_ms)

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again instead of reading the cache")
    monkeypatch.setattr(lat, "_time", no_timing)
    assert lat.measure_latency(small(), min_run_time=0.02) == first          # the same network: cached
    with pytest.raises(AssertionError, match="timed again"):
        lat.measure_latency(small(), batch=2, min_run_time=0.02)               # another batch: not the same
    saved = json.loads(lat.CACHE.path.read_text())
    assert saved["format"] == lat.CACHE.format and any(e == first.as_dict() for e in saved["entries"].values())


@pytest.mark.real_latency
def test_flops_prints_the_latency_when_asked():
    said = json.loads(ok(cli("flops", "--base", "resnet20-cifar", "--resolution", "16", "--w", "0.5", "--latency",
                             "--json")))
    assert said["latency"]["median_ms"] > 0 and said["latency"]["batch"] == 1
    assert "latency" not in json.loads(ok(cli("flops", "--base", "resnet20-cifar", "--resolution", "16", "--json")))


# -- gamma fitted to latency, under exact stubs (search/fit.py, search/space.py) ----------------

from types import SimpleNamespace  # noqa: E402

from scalesearch.errors import UserError  # noqa: E402
from scalesearch.measure.cost import count_cost  # noqa: E402
from scalesearch.search.budget import Budget, parse_time  # noqa: E402
from scalesearch.search.space import Candidate, GridSettingError, GridSpec, candidates  # noqa: E402

BASE = get_base("resnet20-cifar")


def stub(power: float = 1.0, depth: float = 0.0, iqr: float = 0.0):
    """A timer whose latency is an exact function of the network: FLOPs/1e6 ms, raised to
    ``power``, times alpha^depth (depth dearer than its FLOPs); a fixed relative spread."""
    def timer(alpha, beta, res):
        ms = (count_cost(scale(BASE, alpha, beta, 1.0).replace(resolution=res)).flops / 1e6) ** power * alpha ** depth
        return SimpleNamespace(median_ms=ms, iqr_ms=iqr * ms)
    return timer


def test_latency_in_proportion_to_flops_fits_the_same_resolutions_as_flops():
    by_flops = candidates(BASE, GridSpec(step=0.1))
    by_latency = candidates(BASE, GridSpec(step=0.1, target_latency="2x", latency_tolerance=0.05), timer=stub())
    assert [c.resolution for c in by_latency] == [c.resolution for c in by_flops]
    for c in by_latency:   # the ratio is the FLOPs ratio, exactly; no nominal check under a latency target
        assert c.latency_ratio == pytest.approx(c.flops_ratio, rel=1e-12)
        assert c.kept == (abs(c.latency_ratio / 2 - 1) <= 0.05 and c.drop != "twin") or c.drop == "twin"
        assert c.drop in ("", "twin", "latency")


def test_every_kept_candidate_is_within_the_latency_tolerance_when_depth_is_dear():
    table = candidates(BASE, GridSpec(step=0.1, target_latency="2x"), timer=stub(power=0.8, depth=1.5))
    kept = [c for c in table if c.kept]
    assert kept and all(abs(c.latency_ratio / 2 - 1) <= 0.10 for c in kept)
    dropped = [c for c in table if c.drop == "latency"]
    assert dropped and all(abs(c.latency_ratio / 2 - 1) > 0.10 for c in dropped)
    assert all(c.reason.startswith("latency ") and "misses the target by" in c.reason for c in dropped)
    # a depth-dear machine keeps shallower candidates at higher resolution than FLOPs would
    flops_kept = [c for c in candidates(BASE, GridSpec(step=0.1)) if c.kept]
    assert max(c.alpha for c in kept) <= max(c.alpha for c in flops_kept)


def test_an_absolute_latency_target_and_the_latency_limit():
    base_ms = stub()(1.0, 1.0, BASE.resolution).median_ms
    table = candidates(BASE, GridSpec(step=0.1, target_latency=f"{2 * base_ms:.6f}ms", latency_tolerance=0.05),
                       timer=stub())
    assert [c.kept for c in table] == [c.kept for c in candidates(BASE, GridSpec(step=0.1, target_latency="2x",
                                                                                 latency_tolerance=0.05), timer=stub())]
    limited = candidates(BASE, GridSpec(step=0.1, max_latency="1.95x", tolerance=0.1), timer=stub(power=1.0, depth=1.0))
    over = [c for c in limited if c.drop == "latency"]
    assert over and all(c.latency_ratio > 1.95 and "over the max_latency budget" in c.reason for c in over)
    assert all(c.latency_ratio <= 1.95 for c in limited if c.kept)
    assert all(c.latency_ms is None for c in limited if c.drop in ("flops", "nominal"))  # never timed


def test_a_latency_within_its_timing_noise_of_the_edge_says_so():
    table = candidates(BASE, GridSpec(step=0.1, target_latency="2x", latency_tolerance=0.05),
                       timer=stub(power=0.8, depth=1.5, iqr=0.2))
    near = [c for c in table if c.drop == "latency" and abs(c.latency_ratio / 2 - 1) < 0.05 + 0.14]
    assert near and all("within its timing noise of +/-14.1%" in c.reason for c in near)
    assert all(c.reason.startswith("kept within its timing noise") for c in table if c.kept)


def test_a_flops_search_times_what_it_keeps_only_when_asked():
    timed = candidates(BASE, GridSpec(step=0.1), timer=stub())
    assert all((c.latency_ms is not None) == (c.drop in ("", "twin")) for c in timed)
    assert all(c.latency_ms is None for c in candidates(BASE, GridSpec(step=0.1, latency=False), timer=stub()))
    with pytest.raises(UserError, match="needs a timer"):
        candidates(BASE, GridSpec(step=0.1, target_latency="2x"))


def test_candidates_csv_reads_latency_columns_back_and_tables_without_them():
    row = candidates(BASE, GridSpec(step=0.5), timer=stub())[0].row()
    assert Candidate.from_row({k: ("" if v is None else v) for k, v in row.items()}) == Candidate.from_row(row)
    old = {k: v for k, v in row.items() if not k.startswith("latency")}
    assert Candidate.from_row(old).latency_ms is None
    with pytest.raises(UserError, match="'latency_ms' must be >= 0"):
        Candidate.from_row({**row, "latency_ms": -1})


@pytest.mark.parametrize("text, value, ratio", [("2x", 2, True), ("12ms", 12, False), ("0.5s", 500, False),
                                                ("800us", 0.8, False), (".5ms", 0.5, False), ("1e1ms", 10, False)])
def test_latency_budgets_as_users_write_them(text, value, ratio):
    assert parse_time(text) == Budget(pytest.approx(value), ratio)


@pytest.mark.parametrize("text", ["12", "abc", "0ms", "-1ms", "nanms", "1e400ms", "2 parsecs"])
def test_latency_budgets_refused(text):
    with pytest.raises(UserError, match="--target-latency"):
        parse_time(text)


@pytest.mark.parametrize("field, value, why", [
    ("target_latency", "0.5x", "at least 1x"), ("target_latency", "12", "a time like 12ms"),
    ("max_latency", 12, "must be text"), ("latency_tolerance", 0, "between 0 and 1"),
    ("latency_batch", 0, "from 1 to 4096"), ("latency_batch", 1.5, "from 1 to 4096"),
    ("latency_at", "deployed", "proxy, native"), ("latency", "yes", "true or false")])
def test_latency_settings_are_checked_where_they_are_made(field, value, why):
    with pytest.raises(GridSettingError, match=why):
        GridSpec(**{field: value})


def test_grid_target_latency_end_to_end_under_a_stub(tmp_path, tiny, monkeypatch):
    """--target-latency through the command: the fit, the columns, the agreement on screen and in
    config.json, the plot; the timer stubbed (FLOPs x alpha^1.5 / 1e6 ms)."""
    def timed(spec, **kwargs):
        alpha = spec.total_layers / tiny_layers
        return lat.Latency(median_ms=count_cost(spec).flops / 1e6 * alpha ** 1.5, iqr_ms=0.0, batch=1,
                           resolution=spec.resolution, device="cpu", threads=1, blocks=1, machine="stub")
    tiny_layers = BASE.total_layers
    monkeypatch.setattr(lat, "measure_latency", timed)
    out = tmp_path / "run"
    said = ok(cli("grid", *tiny, "--target-latency", "2x", "--dry-run", "--out", out))
    assert "gamma fitted to measured latency: target 2x" in said and "FLOPs against latency over" in said
    import pandas as pd

    table = pd.read_csv(out / "candidates.csv")
    kept = table[table.kept]
    assert len(kept) and ((kept.latency_ratio / 2 - 1).abs() <= 0.10).all()
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["grid"]["target_latency"] == "2x" and config["flops_latency"]["n"] >= 3
    assert (out / "latency_vs_flops.png").is_file()


def test_family_under_a_latency_target_follows_it_as_the_flops_family_follows_flops():
    """Under a timer in proportion to FLOPs, a latency-fitted family is the FLOPs-fitted one;
    under a depth-dear timer each member's latency_ratio stays within tolerance of 2^phi."""
    from scalesearch.search.family import family

    by_flops = family(BASE, 1.2, 1.1, 1.15, 3, target=2.0)
    by_latency = family(BASE, 1.2, 1.1, 1.15, 3, target_latency=2.0, timer=stub())
    assert [m["resolution"] for m in by_latency] == [m["resolution"] for m in by_flops]
    assert [m["latency_ratio"] for m in by_latency] == pytest.approx([m["flops_ratio"] for m in by_flops], rel=1e-12)
    dear = family(BASE, 1.2, 1.1, 1.15, 3, target_latency=2.0, timer=stub(power=0.8, depth=1.5))
    assert [m["target_ratio"] for m in dear] == [1, 2, 4, 8] and all(m["within_tolerance"] for m in dear)
    assert all(abs(m["latency_ratio"] / 2 ** m["phi"] - 1) <= 0.10 for m in dear)
    assert dear[3]["resolution"] < by_flops[3]["resolution"]     # depth is dear: it buys fewer pixels
    timed = family(BASE, 1.2, 1.1, 1.15, 2, latency=True, timer=stub())          # Eq. 3 literally, timed
    assert "target_ratio" not in timed[0] and timed[2]["latency_ratio"] == pytest.approx(timed[2]["flops_ratio"])
    with pytest.raises(UserError, match="one target"):
        family(BASE, 1.2, 1.1, 1.15, 1, target=2.0, target_latency=2.0, timer=stub())
    with pytest.raises(UserError, match=r"target_latency must be a latency ratio >= 1 per phi \(got 0.5\)"):
        family(BASE, 1.2, 1.1, 1.15, 1, target_latency=0.5, timer=stub())


def test_two_targets_are_refused_in_one_line(tmp_path):
    out = cli("grid", "--base", "resnet20-cifar", "--target-flops", "2x", "--target-latency", "2x", "--dry-run",
              "--out", str(tmp_path / "run"))
    assert out.exit_code == 2 and out.stderr.count("\n") == 1
    assert "--target-flops 2x and --target-latency 2x: one constraint is fitted" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_family_under_a_latency_target_comes_back_to_the_searched_best_at_phi_1():
    """Latency is not smooth in resolution (here +/-10% by the resolution's remainder mod 3, as a
    CPU's kernels favour some sizes): at phi = 1 the family returns to the candidate the search
    kept, not to another resolution as close to the target."""
    from scalesearch.search.family import family

    def jagged(alpha, beta, res):
        ms = count_cost(scale(BASE, alpha, beta, 1.0).replace(resolution=res)).flops / 1e6
        return SimpleNamespace(median_ms=ms * (1 + 0.1 * (res % 3 - 1)), iqr_ms=0.0)

    kept = [c for c in candidates(BASE, GridSpec(step=0.1, target_latency="2x"), timer=jagged) if c.kept]
    assert kept
    for c in kept:
        member = family(BASE, c.alpha, c.beta, c.gamma, 1, target_latency=c.latency_ratio, timer=jagged)[1]
        assert (member["resolution"], member["latency_ratio"]) == (c.resolution, pytest.approx(c.latency_ratio))
