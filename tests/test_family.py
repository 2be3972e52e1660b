"""Step 2: Eq. 3 literally, and with the resolution fitted to target^phi on measured FLOPs."""

import pytest

from scalesearch import get_base
from scalesearch.errors import UserError
from scalesearch.search.family import family

LITERAL = ["base", "phi", "d", "w", "r", "resolution", "layers", "params", "flops", "acts", "nominal_ratio",
           "flops_ratio"]
FITTED = ["base", "phi", "d", "w", "r", "gamma_nominal", "resolution", "layers", "params", "flops", "acts",
          "nominal_ratio", "target_ratio", "flops_ratio", "within_tolerance"]


def test_literal_mode_is_eq3_as_before():
    rows = family(get_base("efficientnet-b0"), 1.2, 1.1, 1.15, phi_max=2)
    assert [list(r) for r in rows] == [LITERAL] * 3
    assert rows[0]["flops_ratio"] == 1.0 and rows[0]["resolution"] == 224
    one = rows[1]
    assert (one["d"], one["w"], one["r"]) == pytest.approx((1.2, 1.1, 1.15))
    assert one["resolution"] == 258 and one["layers"] == 23
    assert one["flops_ratio"] == pytest.approx(2.57, abs=0.01)        # the README's figure
    assert one["nominal_ratio"] == pytest.approx(1.92, abs=0.01)


def test_fitted_b0_with_the_papers_coefficients_costs_two_to_the_phi():
    rows = family(get_base("efficientnet-b0"), 1.2, 1.1, 1.15, phi_max=4, target=2.0)
    assert [list(r) for r in rows] == [FITTED] * 5
    for row in rows:
        phi = row["phi"]
        assert row["target_ratio"] == 2.0**phi
        assert abs(row["flops_ratio"] / 2.0**phi - 1) <= 0.05 and row["within_tolerance"] is True
        assert (row["d"], row["w"]) == pytest.approx((1.2**phi, 1.1**phi))
        assert row["gamma_nominal"] == pytest.approx(1.15**phi)
        assert row["r"] == row["resolution"] / 224 and row["resolution"] >= 224
    assert [r["resolution"] for r in rows] == sorted(r["resolution"] for r in rows)


def test_fitted_resnet20_with_the_demo_winner_stays_within_tolerance():
    rows = family(get_base("resnet20-cifar"), 1.0, 1.2, 1.031, phi_max=6, target=2.0)
    assert all(r["within_tolerance"] for r in rows), [(r["phi"], round(r["flops_ratio"], 3)) for r in rows]
    literal = family(get_base("resnet20-cifar"), 1.0, 1.2, 1.031, phi_max=6)
    assert literal[6]["flops_ratio"] < 2.0**6 / 4      # Eq. 3 with a 1.53 product falls far short of 64x


def test_fitted_reports_a_phi_it_cannot_reach():
    # Depth alone at alpha = 3 costs ~3x per phi: a 2x target is out of reach at any resolution >= the base's.
    rows = family(get_base("resnet20-cifar"), 3.0, 1.0, 1.0, phi_max=1, target=2.0)
    assert rows[1]["resolution"] == 32 and rows[1]["within_tolerance"] is False


@pytest.mark.parametrize("kwargs", [dict(target=0.5), dict(target=float("nan")), dict(target=2.0, tolerance=0)])
def test_fitted_refuses_bad_arguments(kwargs):
    with pytest.raises(UserError, match="family"):
        family(get_base("resnet20-cifar"), 1.0, 1.2, 1.0, phi_max=1, **kwargs)


def test_the_api_takes_what_the_cli_takes_and_says_what_it_says():
    """A base name works as in measure and create_model; bad values raise the tool's own error
    with the CLI's one line, never [] or a raw TypeError."""
    by_name = family("resnet20-cifar", 1.2, 1.1, 1.15, phi_max=1)
    assert by_name == family(get_base("resnet20-cifar"), 1.2, 1.1, 1.15, phi_max=1)
    for phi_max in (-1, 2.5, 21, True, "2"):
        with pytest.raises(UserError, match=rf"phi_max must be a whole number from 0 to 20 \(got {phi_max!r}\)"):
            family("resnet20-cifar", 1.2, 1.1, 1.15, phi_max=phi_max)
    with pytest.raises(UserError, match=r"^alpha must be a number \(got '1.2'\)$"):
        family("resnet20-cifar", "1.2", 1.1, 1.15, phi_max=1)
    with pytest.raises(UserError, match=r"tolerance \(0.05\) applies to a fitted family only"):
        family("resnet20-cifar", 1.2, 1.1, 1.15, phi_max=1, tolerance=0.05)
    with pytest.raises(UserError, match=r"unknown base 'nosuch'"):
        family("nosuch", 1.2, 1.1, 1.15, phi_max=1)
