"""Step 1's pure parts: budgets, the grid space, the grid axis, gamma fitted on measured FLOPs."""

import io
import json
import math

import pandas as pd
import pytest
import yaml

from scalesearch import get_base, scale
from scalesearch.measure.cost import count_cost
from scalesearch.errors import UserError
from scalesearch.search.budget import Budget, parse_budget
from scalesearch.search.fit import fit_resolution
from scalesearch.search.space import DROP_CODES, Candidate, GridSettingError, GridSpec, axis, candidates, drop_counts


@pytest.mark.parametrize("text, budget", [
    ("2x", Budget(2.0, True)), ("1.5X", Budget(1.5, True)), ("800M", Budget(800e6, False)),
    ("1.6G", Budget(1.6e9, False)), ("5e8", Budget(5e8, False)), ("20m", Budget(20e6, False)),
])
def test_parse_budget(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text, why", [
    ("2y", "ratio like 2x"), ("", "ratio like 2x"), ("x2", "ratio like 2x"), ("-1x", "ratio like 2x"),
    ("two", "ratio like 2x"), ("1.6 GB", "ratio like 2x"), ("0x", "positive"), ("0", "positive"),
    ("nan", "finite"), ("inf", "finite"), ("nanx", "finite"), (math.nan, "finite"), (math.inf, "finite"),
    ("1e400x", "too large"), ("1e300T", "too large"),
])
def test_parse_budget_rejects(text, why):
    with pytest.raises(UserError, match=f"--target-flops .*{why}"):
        parse_budget(text)


@pytest.mark.parametrize("budget", [
    Budget(2.0, True), Budget(1.25, True), Budget(1 / 3, True), Budget(800e6, False), Budget(1.6e9, False),
    Budget(81_626_624, False), Budget(123.5, False), Budget(1e15, False), Budget(2.5e-3, True),
])
def test_budget_text_reads_back(budget):
    assert parse_budget(budget.text()) == budget and str(budget) == budget.text()


def test_budget_text_is_short():
    assert [str(b) for b in (Budget(2.0, True), Budget(800e6, False), Budget(1.6e9, False))] == ["2x", "800M", "1.6G"]


# -- the grid space ---------------------------------------------------------------------------

def test_grid_spec_defaults_and_parsed_budgets():
    grid = GridSpec()
    assert grid.to_dict() == dict(target_flops="2x", alpha_max=2.0, beta_max=1.5, step=0.05, tolerance=0.05,
                                  nominal_tolerance=grid.nominal_tolerance, max_params=None, max_acts=None,
                                  gamma_max=4.0, target_latency=None, latency_tolerance=0.10, max_latency=None,
                                  latency=True, latency_batch=1, latency_at="proxy")
    assert grid.target == Budget(2.0, True) and grid.max_params_budget is None and grid.max_acts_budget is None
    grid = GridSpec(target_flops="800M", max_params="1.5x", max_acts="20M")
    assert grid.target == Budget(800e6, False)
    assert grid.max_params_budget == Budget(1.5, True) and grid.max_acts_budget == Budget(20e6, False)


def test_grid_spec_round_trips_through_json_and_yaml():
    grid = GridSpec(target_flops="1.6G", alpha_max=1.4, step=0.1, nominal_tolerance=0.2, max_params="3x")
    assert GridSpec.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    assert GridSpec.from_dict(yaml.safe_load(yaml.safe_dump(grid.to_dict()))) == grid
    with pytest.raises(GridSettingError, match="unknown grid setting.*'stepp'"):
        GridSpec.from_dict({"stepp": 0.1})


def test_points_counts_without_building():
    assert GridSpec().points() == len(axis(2.0, 0.05)) * len(axis(1.5, 0.05)) == 231
    assert GridSpec(alpha_max=1.0, beta_max=1.0).points() == 1


@pytest.mark.parametrize("setting, value, why", [
    ("step", math.nan, "finite number > 0"), ("step", math.inf, "finite number > 0"),
    ("step", -0.05, "> 0"), ("step", 0, "> 0"), ("step", "0.05", "finite number"), ("step", True, "finite number"),
    ("alpha_max", math.nan, "finite number"), ("alpha_max", math.inf, "finite number"), ("alpha_max", 0.5, ">= 1"),
    ("beta_max", -1.0, ">= 1"), ("gamma_max", 0.0, ">= 1"), ("gamma_max", math.inf, "finite number"),
    ("tolerance", 0, "between 0 and 1"), ("tolerance", 1.0, "between 0 and 1"), ("tolerance", math.nan, "finite"),
    ("tolerance", -0.1, "between 0 and 1"), ("nominal_tolerance", 0, "between 0 and 1"),
    ("nominal_tolerance", math.inf, "finite"),
    ("target_flops", "0x", "positive"), ("target_flops", "0.5x", "at least 1x"),
    ("target_flops", "1e400x", "too large"),
    ("target_flops", "nan", "finite"), ("target_flops", "-800M", "ratio like"), ("target_flops", 2.0, "must be text"),
    ("max_params", "0x", "positive"), ("max_params", "0", "positive"), ("max_params", "1e400x", "too large"),
    ("max_params", "inf", "finite"), ("max_acts", "0x", "positive"), ("max_acts", "lots", "ratio like"),
])
def test_grid_spec_refuses_bad_settings(setting, value, why):
    with pytest.raises(GridSettingError) as error:
        GridSpec(**{setting: value})
    message = str(error.value)
    assert isinstance(error.value, UserError)
    assert f"grid setting '{setting}'" in message and why in message and "--" not in message


@pytest.mark.parametrize("settings, count", [
    (dict(step=1e-6), "500,001,500,001"), (dict(step=0.001), "501,501"), (dict(alpha_max=1e9, step=1), "1,000,000,000"),
    (dict(step=1e-300), "more than 1e15"), (dict(step=5e-324), "more than 1e15"),
])
def test_grid_spec_refuses_too_many_points(settings, count):
    with pytest.raises(GridSettingError, match=f"give {count} .*limit of 20,000"):
        GridSpec(**settings)


def test_grid_limit_is_inclusive():
    assert GridSpec(alpha_max=100, beta_max=200, step=1).points() == 20_000
    with pytest.raises(GridSettingError, match="20,100"):
        GridSpec(alpha_max=100, beta_max=201, step=1)


def test_axis_has_no_float_drift():
    assert axis(1.3, 0.1) == [1.0, 1.1, 1.2, 1.3]
    assert axis(2.0, 0.05)[-1] == 2.0 and len(axis(2.0, 0.05)) == 21
    assert axis(1.0, 0.05) == [1.0]


# -- fitting gamma and the candidate table ----------------------------------------------------

def test_fit_resolution_is_closest_by_brute_force():
    base = get_base("resnet18").replace(resolution=64, num_classes=10)
    target = 2 * count_cost(base).flops
    res, cost = fit_resolution(base, 1.2, 1.1, target)
    widened = scale(base, 1.2, 1.1, 1.0)
    gaps = {r: abs(count_cost(widened.replace(resolution=r)).flops - target) for r in range(64, 160)}
    assert gaps[res] == min(gaps.values())
    assert cost.flops == count_cost(widened.replace(resolution=res)).flops


def test_papers_coefficients_measure_far_from_two():
    # The formula says 1.92x; the rounded network measures about 2.57x: the reason to measure.
    b0 = get_base("efficientnet-b0")
    ratio = count_cost(scale(b0, 1.2, 1.1, 1.15)).flops / count_cost(b0).flops
    assert ratio == pytest.approx(2.573, abs=0.01)


def test_kept_candidates_are_honest_in_measure_and_formula():
    base = get_base("mobilenetv2").replace(resolution=64, num_classes=10)
    grid = GridSpec(alpha_max=1.4, beta_max=1.2, step=0.1, tolerance=0.05)
    found = candidates(base, grid)
    assert len(found) == 5 * 3 == grid.points()
    kept = [c for c in found if c.kept]
    assert kept
    assert all(abs(c.flops_ratio / 2 - 1) <= 0.05 and abs(c.nominal_ratio / 2 - 1) <= grid.nominal_tolerance
               for c in kept)
    assert all(c.drop in DROP_CODES and c.reason and not c.kept for c in found if c.drop)
    assert all(c.drop == "" and c.reason == "" for c in kept)
    for c in kept:  # the table is what the scaler builds
        assert count_cost(c.spec(base)).flops == c.flops
        assert c.gamma >= 1 and c.d == c.alpha and c.w == c.beta


def test_on_target_but_off_formula_is_dropped():
    # The README demo's winner: beta = 1.2 at 33px measures 2.06x, yet its formula says 1.53x.
    base = get_base("resnet20-cifar")
    found = {c.beta: c for c in candidates(base, GridSpec(alpha_max=1.0, beta_max=1.5, step=0.05))}
    demo = found[1.2]
    assert demo.resolution == 33 and abs(demo.flops_ratio / 2 - 1) <= 0.05
    assert demo.drop == "nominal" and "1.53" in demo.reason
    assert found[1.0].kept  # 45px, 1.98 nominal, 2.09 measured
    loose = candidates(base, GridSpec(alpha_max=1.0, beta_max=1.5, step=0.05, nominal_tolerance=0.99))
    assert loose[4].kept and loose[4].beta == 1.2


def test_budgets_drop_candidates():
    base = get_base("mobilenetv2").replace(resolution=64, num_classes=10)
    grid = GridSpec(alpha_max=1.4, beta_max=1.2, step=0.1, nominal_tolerance=0.5)
    loose = candidates(base, grid)
    tight = candidates(base, GridSpec.from_dict(grid.to_dict() | dict(max_params="2x", max_acts="1.8x")))
    assert sum(c.kept for c in tight) == 1 < sum(c.kept for c in loose) == 3
    counts = drop_counts(tight)
    assert counts["params"] and counts["acts"] and sum(counts.values()) == sum(not c.kept for c in tight)
    assert all("max_params" in c.reason for c in tight if c.drop == "params")


def test_absolute_target():
    base = get_base("resnet18").replace(resolution=64, num_classes=10)
    target = Budget(3 * count_cost(base).flops, False)
    found = candidates(base, GridSpec(target_flops=target.text(), alpha_max=1.2, beta_max=1.2, step=0.2,
                                      nominal_tolerance=0.5))
    assert any(c.kept and abs(c.flops_ratio - 3) < 0.15 for c in found)
    assert all(abs(c.nominal_ratio / 3 - 1) <= 0.5 for c in found if c.kept)  # the target ratio is 3


def test_rounding_twins_are_trained_once():
    base = get_base("resnet50").replace(resolution=32, num_classes=10)
    found = candidates(base, GridSpec(alpha_max=1.15, beta_max=1.3, step=0.05, nominal_tolerance=0.5))
    twins = [c for c in found if c.drop == "twin"]
    assert twins  # ceil(3 * 1.05) == ceil(3 * 1.10) == 4: one network, two grid points
    for c in twins:
        first = found[int(c.reason.split()[4])]
        assert first.kept and first.id < c.id  # a twin always points at the kept one
        assert c.spec(base) == first.spec(base).replace(scale=c.spec(base).scale)
    assert len({c.spec(base).key() for c in found if c.kept}) == sum(c.kept for c in found)


# -- typed rows --------------------------------------------------------------------------------

KEPT = Candidate(id=3, alpha=1.0, beta=1.15, gamma=1.0625, resolution=34, nominal_ratio=1.49, flops=81_500_000,
                 flops_ratio=1.997, params=378_212, acts=315_952, kept=True, drop="", reason="")
TWIN = Candidate(id=9, alpha=1.05, beta=1.15, gamma=1.0625, resolution=34, nominal_ratio=1.57, flops=81_500_000,
                 flops_ratio=1.997, params=378_212, acts=315_952, kept=False, drop="twin",
                 reason="same network as candidate 3 after rounding")


def test_columns_and_row():
    assert Candidate.columns() == ["id", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "nominal_ratio",
                                   "flops", "flops_ratio", "params", "acts", "kept", "drop", "reason",
                                   "latency_ms", "latency_iqr_ms", "latency_ratio"]
    assert list(KEPT.row()) == Candidate.columns() and KEPT.row()["r"] == KEPT.gamma


def test_rows_round_trip_through_a_pandas_csv():
    buffer = io.StringIO()
    pd.DataFrame([KEPT.row(), TWIN.row()], columns=Candidate.columns()).to_csv(buffer, index=False)
    buffer.seek(0)
    rows = pd.read_csv(buffer).to_dict("records")  # kept as numpy bools, "" as NaN
    assert [Candidate.from_row(r) for r in rows] == [KEPT, TWIN]


@pytest.mark.parametrize("changes", [
    dict(kept="True"), dict(kept=1), dict(kept="1"), dict(kept=1.0), dict(id=3.0, flops=81_500_000.0),
    dict(resolution="34"), dict(drop=math.nan, reason=math.nan), dict(drop=None),
])
def test_from_row_coerces(changes):
    assert Candidate.from_row(KEPT.row() | changes) == KEPT


@pytest.mark.parametrize("changes, column", [
    (dict(kept="maybe"), "kept"), (dict(id=3.5), "id"), (dict(alpha="wide"), "alpha"), (dict(flops=math.nan), "flops"),
    (dict(gamma=math.inf), "gamma"), (dict(drop="tired"), "drop"), (dict(kept=False), "kept"),
])
def test_from_row_names_the_bad_column(changes, column):
    with pytest.raises(UserError, match=column):
        Candidate.from_row(KEPT.row() | changes)


def test_from_row_names_a_missing_column():
    row = KEPT.row()
    del row["resolution"]
    with pytest.raises(UserError, match="no 'resolution' column"):
        Candidate.from_row(row)


@pytest.mark.parametrize("kept, reason, drop", [
    (True, "", ""), (False, "same network as candidate 3 after rounding", "twin"),
    (False, "flops 2.31x miss the target by +15.5%", "flops"), (False, "params 9,000 > --max-params 8,000", "params"),
])
def test_rows_written_before_drop_codes_still_load(kept, reason, drop):
    row = {k: v for k, v in KEPT.row().items() if k != "drop"} | {"kept": str(kept), "reason": reason}
    assert Candidate.from_row(row).drop == drop


def test_drop_counts():
    assert drop_counts([KEPT, TWIN, TWIN]) == dict(twin=2, flops=0, nominal=0, params=0, acts=0, latency=0)
    assert drop_counts([]) == dict.fromkeys(("twin", "flops", "nominal", "params", "acts", "latency"), 0)
