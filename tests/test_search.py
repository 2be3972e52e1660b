"""Step 1's pure parts: budgets, the grid axis, gamma fitted on measured FLOPs."""

import pytest

from scalesearch import get_base, scale
from scalesearch.cost import count_cost
from scalesearch.errors import UserError
from scalesearch.search import Budget, GridSpec, axis, candidates, fit_resolution, parse_budget


@pytest.mark.parametrize("text, budget", [
    ("2x", Budget(2.0, True)), ("1.5X", Budget(1.5, True)), ("800M", Budget(800e6, False)),
    ("1.6G", Budget(1.6e9, False)), ("5e8", Budget(5e8, False)), ("20m", Budget(20e6, False)),
])
def test_parse_budget(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["2y", "", "x2", "-1x", "two", "1.6 GB"])
def test_parse_budget_rejects(text):
    with pytest.raises(UserError, match="--target-flops"):
        parse_budget(text)


def test_axis_has_no_float_drift():
    assert axis(1.3, 0.1) == [1.0, 1.1, 1.2, 1.3]
    assert axis(2.0, 0.05)[-1] == 2.0 and len(axis(2.0, 0.05)) == 21
    assert axis(1.0, 0.05) == [1.0]


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


def test_candidates_keep_only_measured_ratios_within_tolerance():
    base = get_base("mobilenetv2").replace(resolution=64, num_classes=10)
    found = candidates(base, GridSpec(alpha_max=1.4, beta_max=1.2, step=0.1, tolerance=0.05))
    assert len(found) == 5 * 3
    kept = [c for c in found if c.kept]
    assert kept and all(abs(c.flops_ratio / 2 - 1) <= 0.05 for c in kept)
    assert all(c.reason for c in found if not c.kept)
    for c in kept:  # the table is what the scaler builds
        assert count_cost(c.spec(base)).flops == c.flops
        assert c.gamma >= 1 and c.d == c.alpha and c.w == c.beta


def test_params_budget_drops_candidates():
    base = get_base("mobilenetv2").replace(resolution=64, num_classes=10)
    loose = candidates(base, GridSpec(alpha_max=1.4, beta_max=1.2, step=0.1))
    tight = candidates(base, GridSpec(alpha_max=1.4, beta_max=1.2, step=0.1, max_params=Budget(1.2, True)))
    assert sum(c.kept for c in tight) < sum(c.kept for c in loose)
    assert any("--max-params" in c.reason for c in tight)


def test_absolute_target():
    base = get_base("resnet18").replace(resolution=64, num_classes=10)
    target = 3 * count_cost(base).flops
    found = candidates(base, GridSpec(target_flops=Budget(target, False), alpha_max=1.2, beta_max=1.2, step=0.2))
    assert any(c.kept and abs(c.flops_ratio - 3) < 0.15 for c in found)


def test_rounding_twins_are_trained_once():
    base = get_base("resnet50").replace(resolution=32, num_classes=10)
    found = candidates(base, GridSpec(alpha_max=1.15, beta_max=1.3, step=0.05))
    twins = [c for c in found if c.reason.startswith("same network as candidate")]
    assert twins  # ceil(3 * 1.05) == ceil(3 * 1.10) == 4: one network, two grid points
    for c in twins:
        first = found[int(c.reason.split()[4])]
        assert first.kept or first.reason and not first.reason.startswith("same")
        assert c.spec(base) == first.spec(base).replace(scale=c.spec(base).scale)
