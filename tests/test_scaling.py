"""The rounding rules and Eq. 3: golden edge cases and properties."""

import math

import pytest
from hypothesis import given, strategies as st

from scalesearch import Rounding, compound, get_base, nominal_ratio, round_channels, round_depth, round_resolution, scale
from scalesearch.net.scaling import DEFAULT_ROUNDING, ScaleError, round_depths

NO_GUARD = Rounding(min_fraction=None)


@pytest.mark.parametrize("c, guarded, unguarded", [
    (18, 24, 16),     # 16 < 0.9 * 18, so the guard bumps it one divisor up
    (32, 32, 32),
    (35.2, 32, 32),   # 32 >= 0.9 * 35.2
    (36, 40, 40),     # halfway rounds up
    (3, 8, 8),        # never below one divisor
    (1280 * 1.1, 1408, 1408),
    (320 * 1.8, 576, 576),
])
def test_round_channels_edge_cases(c, guarded, unguarded):
    assert round_channels(c) == guarded
    assert round_channels(c, NO_GUARD) == unguarded


def test_round_channels_other_divisor():
    assert round_channels(18, Rounding(divisor=1)) == 18
    assert round_channels(20, Rounding(divisor=16, min_fraction=None)) == 16


@given(st.floats(min_value=1, max_value=10_000), st.sampled_from([1, 4, 8, 16]))
def test_round_channels_properties(c, divisor):
    rule = Rounding(divisor=divisor)
    out = round_channels(c, rule)
    assert out % divisor == 0 and out >= divisor
    assert out >= 0.9 * c                      # the guard holds
    assert abs(out - c) <= divisor             # at most one divisor away, the one-divisor floor included


@pytest.mark.parametrize("layers, d, ceil, rnd", [
    (3, 1.1, 4, 3), (1, 1.0, 1, 1), (2, 1.2, 3, 2), (4, 3.1, 13, 12), (1, 0.4, 1, 1), (3, 1.5, 5, 5),
])
def test_round_depth(layers, d, ceil, rnd):
    assert round_depth(layers, d) == ceil
    assert round_depth(layers, d, Rounding(depth="round")) == rnd


def test_round_depth_ignores_float_noise():
    assert 3 * 1.1 > 3.3  # the float product is a hair above 3.3 ...
    assert round_depth(10, 1.1) == 11  # ... yet 10 * 1.1 must not ceil to 12


def test_round_resolution():
    assert round_resolution(224, 1.15) == 258
    assert round_resolution(224, 2.0) == 448
    assert round_resolution(224, 1.15, Rounding(resolution_multiple=32)) == 256


def test_compound_is_eq3():
    d, w, r = compound(1.2, 1.1, 1.15, 2)
    assert (d, w, r) == pytest.approx((1.44, 1.21, 1.3225))
    assert nominal_ratio(1.2, 1.1, 1.15) == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    assert compound(1.3, 1.2, 1.1, 0) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("args", [(0.9, 1, 1, 1), (1, 0.5, 1, 1), (1, 1, -2, 1), (1, 1, 1, -1), (1, 1, math.nan, 1)])
def test_compound_rejects_out_of_range(args):
    with pytest.raises(ScaleError):
        compound(*args)


@pytest.mark.parametrize("bad", [dict(d=0), dict(w=-1), dict(r=0)])
def test_scale_rejects_non_positive(bad):
    with pytest.raises(ScaleError, match=next(iter(bad))):
        scale(get_base("resnet18"), **bad)


def test_scale_is_pure_and_generic():
    b0 = get_base("efficientnet-b0")
    s = scale(b0, d=2, w=1.5, r=1.25)
    assert b0 == get_base("efficientnet-b0")                  # the input is untouched
    assert [st.layers for st in s.stages] == [2, 4, 4, 6, 6, 8, 2]
    assert [st.out_channels for st in s.stages] == [24, 40, 64, 120, 168, 288, 480]
    assert s.head.channels == 1920 and s.stem.out_channels == 48 and s.resolution == 280
    assert s.scale == (2, 1.5, 1.25)
    assert scale(b0) == b0.replace(scale=(1.0, 1.0, 1.0))


# -- depth rule "total": round d * sum L_i once, share it by largest remainder ---------------

TOTAL = Rounding(depth_rule="total")
stage_layers = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8)
depth_factor = st.floats(min_value=0.05, max_value=8, allow_nan=False)


@pytest.mark.parametrize("layers, d, expected", [
    ([1, 2, 2, 3, 3, 4, 1], 1.2, (1, 2, 2, 4, 4, 5, 1)),   # 16 -> 19: the 3 largest remainders
    ([2, 2, 2, 2], 1.1, (3, 2, 2, 2)),                      # 8 -> 9: the tie goes to the earlier stage
    ([2, 2, 2, 2], 1.05, (2, 2, 2, 2)),                     # 8.4 rounds to 8: a twin of the base
    ([3, 4, 6, 3], 0.1, (1, 1, 1, 1)),                      # at least one per stage
    ([1, 10], 0.5, (1, 5)),                                 # 6 layers: the short stage is held at one
])
def test_round_depths_total_golden(layers, d, expected):
    assert round_depths(layers, d, TOTAL) == expected


def test_total_rule_grows_one_layer_at_a_time():
    b0 = [s.layers for s in get_base("efficientnet-b0").stages]
    totals = [sum(round_depths(b0, 1 + k / 100, TOTAL)) for k in range(101)]
    assert set(b - a for a, b in zip(totals, totals[1:])) <= {0, 1}
    assert len(set(totals)) == 17                       # 16 .. 32 layers: every count reached
    per_stage = [sum(round_depths(b0, 1 + k / 100)) for k in range(101)]
    assert len(set(per_stage)) < len(set(totals))      # per-stage ceil skips counts


@given(stage_layers, depth_factor)
def test_total_rule_properties(layers, d):
    out = round_depths(layers, d, TOTAL)
    assert len(out) == len(layers) and min(out) >= 1
    assert sum(out) == max(len(layers), int(math.floor(round(d * sum(layers), 9) + 0.5)))


@given(stage_layers, st.sampled_from([DEFAULT_ROUNDING, TOTAL, Rounding(depth="round")]))
def test_depth_identity_at_d_one(layers, rule):
    assert round_depths(layers, 1.0, rule) == tuple(layers)


@given(stage_layers, depth_factor, depth_factor, st.sampled_from([DEFAULT_ROUNDING, TOTAL]))
def test_total_layers_non_decreasing_in_d(layers, d1, d2, rule):
    low, high = sorted((d1, d2))
    assert sum(round_depths(layers, low, rule)) <= sum(round_depths(layers, high, rule))


def test_scale_applies_the_depth_rule():
    b0 = get_base("efficientnet-b0")
    assert [s.layers for s in scale(b0, d=1.2, rounding=TOTAL).stages] == [1, 2, 2, 4, 4, 5, 1]
    assert [s.layers for s in scale(b0, d=1.2).stages] == [2, 3, 3, 4, 4, 5, 2]
    assert scale(b0, rounding=TOTAL) == scale(b0)


@pytest.mark.parametrize("field, value", [
    ("depth_rule", "network"), ("depth", "floor"), ("divisor", 0), ("resolution_multiple", 0),
    ("min_fraction", 1.5), ("divisor", 8.0),
])
def test_rounding_errors_name_field_and_value(field, value):
    with pytest.raises(ScaleError) as error:
        Rounding(**{field: value})
    assert f"'{field}'" in str(error.value) and f"(got {value!r})" in str(error.value)


# -- scaling strategies (pycls's split of d * w^2 * r^2 = s) ------------------------------------

@pytest.mark.parametrize("strategy, s, expected", [
    ("dWr", 4.0, (4 ** 0.1, 4 ** 0.4, 4 ** 0.05)),     # shares 1:8:1, so w takes 8/10 of log s
    ("d1_w8_r1", 4.0, (4 ** 0.1, 4 ** 0.4, 4 ** 0.05)),
    ("uniform", 8.0, (2.0, 2 ** 0.5, 2 ** 0.5)),
    ("d", 3.0, (3.0, 1.0, 1.0)), ("w", 4.0, (1.0, 2.0, 1.0)), ("r", 9.0, (1.0, 1.0, 3.0)),
    ("w1_r1", 16.0, (1.0, 2.0, 2.0)), ("dWr", 1.0, (1.0, 1.0, 1.0)),
])
def test_a_strategy_splits_the_flops_factor_by_its_shares(strategy, s, expected):
    from scalesearch.net.scaling import strategy_factors

    d, w, r = strategy_factors(strategy, s)
    assert (d, w, r) == pytest.approx(expected, rel=1e-12)
    assert nominal_ratio(d, w, r) == pytest.approx(s, rel=1e-12)


@pytest.mark.parametrize("strategy, s, named", [
    ("fast", 2.0, "'fast'"), ("d1_x2", 2.0, "'d1_x2'"), ("d1_w", 2.0, "'d1_w'"), ("d0_w0", 2.0, "positive sum"),
    ("d-1_w2", 2.0, "shares must be >= 0"), ("dWr", 0.5, "0.5"), ("dWr", math.inf, "inf"), ("dWr", True, "True"),
])
def test_a_bad_strategy_or_scale_is_named(strategy, s, named):
    from scalesearch.net.scaling import strategy_factors

    with pytest.raises(ScaleError, match=named):
        strategy_factors(strategy, s)
