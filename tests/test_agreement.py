"""search/agreement.py: rank agreement (Kendall's tau-b, Spearman's rho) and the agreement of
two costs over a search's candidates, with a bootstrap interval."""

from __future__ import annotations

import math

import pytest

from scalesearch.search.agreement import cost_agreement, cost_agreement_text


def test_kendall_and_spearman_on_known_rankings():
    from scalesearch.search.agreement import kendall_tau, spearman_rho

    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0 and kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)      # one swapped pair of six
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [5, 5, 5]) is None and spearman_rho([1, 2, 3], [5, 5, 5]) is None
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))  # tau-b with a tie


def test_flops_latency_agreement_is_kendalls_tau_with_an_interval():
    same = cost_agreement([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], [True] * 5)
    assert same["tau"] == 1.0 and same["high"] == 1.0 and same["n"] == 5
    reverse = cost_agreement([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [False, True, True, False, False])
    assert reverse["tau"] == -1.0 and (reverse["kept_latency_min"], reverse["kept_latency_max"]) == (3, 4)
    mixed = cost_agreement([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5], [True] * 6)
    assert mixed["tau"] == pytest.approx(0.6) and mixed["low"] <= 0.6 <= mixed["high"]
    assert cost_agreement([1, 2], [1, 2], [True, True]) is None
    assert "Kendall tau +0.60 [" in cost_agreement_text(mixed) and "fewer than 3" in cost_agreement_text(None)
