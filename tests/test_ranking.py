"""search/ranking.py: a candidate's summary over seeds, and when a gap is beyond the noise."""

from __future__ import annotations

import math

import pytest

from scalesearch.search.ranking import Summary, binomial_error, compare, pooled_spread, summarize, ties
from scalesearch.study.rows import TrialRow


def _summary(cid, scores):
    rows = [TrialRow(trial=f"c{cid}-s{i}", candidate=cid, seed=i, top1=t) for i, t in enumerate(scores)]
    return summarize(rows)[0]


def test_summary_statistics_and_verdict():
    a, b = _summary(1, [0.50, 0.52, 0.54]), _summary(2, [0.40, 0.41, 0.42])
    assert a.n == 3 and a.top1_mean == pytest.approx(0.52) and a.top1_std == pytest.approx(0.02)
    assert pooled_spread(a, b) == pytest.approx(((0.02**2 + 0.01**2) / 2) ** 0.5)
    v = compare(a, b)
    assert v.gap == pytest.approx(0.11) and v.separable is True and "separable" in v.text
    close = compare(a, _summary(3, [0.49, 0.51, 0.53]))
    assert close.separable is False and "within noise" in close.text
    single = compare(_summary(4, [0.5]), _summary(5, [0.4]))
    assert single.separable is None and "--seeds 2" in single.text


def _by_hand(candidate, scores):
    """A Summary written out by hand (sample std), not by summarize."""
    rows = [TrialRow(trial=f"c{candidate}-s{i}", candidate=candidate, seed=i, top1=s) for i, s in enumerate(scores)]
    return Summary(candidate, len(scores), sum(scores) / len(scores),
                   (sum((s - sum(scores) / len(scores)) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5,
                   None, 0, 0, rows)


def test_the_spread_adds_the_held_out_binomial_error():
    """The demo's kind of gap: 2.7 points with a seed spread of about 1 is separable on seeds
    alone, but 500 held-out images measure 35% only to 2.1 points: within noise."""
    best, other = _by_hand(0, [0.354, 0.362]), _by_hand(7, [0.322, 0.340])
    seeds_only = compare(best, other)
    assert seeds_only.separable and seeds_only.binomial is None
    both = compare(best, other, n_val=500)
    assert both.binomial == pytest.approx(math.sqrt(0.3445 * 0.6555 / 500))
    assert both.spread == pytest.approx(math.hypot(seeds_only.spread, both.binomial))
    assert not both.separable
    assert "(seeds 0.98, held-out binomial 2.13 at 500 images): within noise" in both.text
    assert binomial_error(0.5, 10_000) == pytest.approx(0.005)
    assert [v.runner_up for v in ties([best, other], 500)] == [7] and ties([best, other]) == []
    assert ties([best, _by_hand(1, [0.10, 0.11])], 500) == []       # a clear gap is no tie
