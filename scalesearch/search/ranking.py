"""The ranking: one summary per candidate over its seeds, and whether two can be told apart.

A candidate ranks only when every seed trained healthily; the verdict between two is
separable only when the gap of their mean top-1 exceeds twice the spread, the pooled
seed-to-seed standard deviation combined with the held-out set's binomial error.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..study.rows import COMPLETE, DIVERGED, FINISHED, PRUNED, TrialRow

@dataclass
class Summary:
    """A candidate's trials over its seeds.  Ranked only when every seed trained healthily."""

    candidate: int
    n: int
    top1_mean: float | None
    top1_std: float | None    # sample standard deviation over seeds (None for one seed)
    loss_mean: float | None
    diverged: int
    pruned: int
    rows: list[TrialRow]
    rung: int = 0             # the rung its rows come from: its highest (0 without halving)

    @property
    def ranked(self) -> bool:
        return self.n > 0 and self.diverged == 0 and self.pruned == 0

    def as_dict(self) -> dict[str, Any]:
        first = self.rows[0]
        return dict(candidate=self.candidate, alpha=first.alpha, beta=first.beta, gamma=first.gamma,
                    d=first.d, w=first.w, r=first.r, resolution=first.resolution, params=first.params,
                    flops=first.flops, flops_ratio=first.flops_ratio, acts=first.acts, n=self.n,
                    top1_mean=self.top1_mean, top1_std=self.top1_std, loss_mean=self.loss_mean,
                    diverged=self.diverged, pruned=self.pruned, seeds=" ".join(str(r.seed) for r in self.rows),
                    rung=self.rung, budget=first.budget)


SUMMARY_COLUMNS = ["candidate", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "params", "flops",
                   "flops_ratio", "acts", "n", "top1_mean", "top1_std", "loss_mean", "diverged", "pruned", "seeds",
                   "rung", "budget"]


def summarize(rows: Iterable[TrialRow]) -> list[Summary]:
    """Group finished rows by candidate; ranked summaries first, best mean top-1 first.

    Under successive halving a candidate is summarised by its highest rung's rows, and
    candidates that reached a higher rung rank above those dropped earlier (at a smaller
    budget): the ranking is the top rung's, then the rung below's, and so on.
    """
    groups: dict[int, list[TrialRow]] = {}
    for row in rows:
        if row.state in FINISHED:
            groups.setdefault(row.candidate, []).append(row)
    out = []
    for cid, group in groups.items():
        top = max(r.rung for r in group)
        group = sorted((r for r in group if r.rung == top), key=lambda r: r.seed)
        scores = [r.top1 for r in group if r.state == COMPLETE and r.top1 is not None]
        losses = [r.loss for r in group if r.state == COMPLETE and r.loss is not None]
        out.append(Summary(
            candidate=cid, n=len(scores),
            top1_mean=statistics.fmean(scores) if scores else None,
            top1_std=statistics.stdev(scores) if len(scores) > 1 else None,
            loss_mean=statistics.fmean(losses) if losses else None,
            diverged=sum(r.state == DIVERGED for r in group), pruned=sum(r.state == PRUNED for r in group),
            rows=group, rung=top))
    return sorted(out, key=lambda s: (not s.ranked, -s.rung, -(s.top1_mean if s.top1_mean is not None else -1),
                                      s.rows[0].flops or 0, s.candidate))


def comparable(summaries: Sequence[Summary]) -> list[Summary]:
    """The ranked summaries that can be compared with the best: those of its rung (its budget)."""
    ranked = [s for s in summaries if s.ranked]
    return [s for s in ranked if s.rung == ranked[0].rung] if ranked else []


@dataclass(frozen=True)
class Verdict:
    """How the best candidate compares with another (the runner-up), over seeds.

    ``spread`` is what a gap is judged against: the pooled seed-to-seed standard deviation
    (``seed_spread``) combined with the held-out set's binomial error (``binomial``), since
    every seed is scored on the same images and a held-out set of n images measures a top-1
    of p only to about sqrt(p (1 - p) / n) (2.1 points at 35% and 500 images).
    """

    best: int
    runner_up: int | None
    gap: float | None         # difference of mean top-1
    spread: float | None      # sqrt(seed_spread^2 + binomial^2); None when the seed spread is unknown
    separable: bool | None    # |gap| > 2 * spread; None when it cannot be told
    other: str = "runner-up"
    seed_spread: float | None = None
    binomial: float | None = None
    n_val: int | None = None

    @property
    def text(self) -> str:
        if self.runner_up is None:
            return "one candidate ranked: nothing to compare it with"
        if self.spread is None:
            return (f"best vs {self.other}: {100 * self.gap:+.2f} points; one seed each, so the seed-to-seed "
                    f"spread is unknown: run with --seeds 2 or more to tell a real gap from noise")
        word = "separable" if self.separable else "within noise"
        parts = (f" (seeds {100 * self.seed_spread:.2f}, held-out binomial {100 * self.binomial:.2f} at "
                 f"{self.n_val:,} images)" if self.binomial is not None and self.seed_spread is not None else
                 " seed-to-seed")
        return (f"best vs {self.other} (candidate {self.runner_up}): {100 * self.gap:+.2f} points, spread "
                f"{100 * self.spread:.2f} points{parts}: {word} (separable means a gap above twice the spread)")


def pooled_spread(a: Summary, b: Summary) -> float | None:
    """Pooled sample standard deviation of two candidates' top-1 over their seeds."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.top1_std ** 2, b.top1_std ** 2  # type: ignore[operator]
    return math.sqrt(((a.n - 1) * va + (b.n - 1) * vb) / (a.n + b.n - 2))


def binomial_error(top1: float, n_val: int) -> float:
    """Standard error of a top-1 measured on ``n_val`` held-out images: sqrt(p (1 - p) / n)."""
    p = min(max(top1, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n_val)


def compare(best: Summary, other: Summary | None, label: str = "runner-up", n_val: int | None = None) -> Verdict:
    """Best against ``other``; with ``n_val`` (held-out images) the spread adds their binomial error."""
    if other is None:
        return Verdict(best.candidate, None, None, None, None, label)
    gap = best.top1_mean - other.top1_mean  # type: ignore[operator]
    seeds = pooled_spread(best, other)
    binomial = (binomial_error((best.top1_mean + other.top1_mean) / 2, n_val)  # type: ignore[operator]
                if n_val else None)
    spread = None if seeds is None else math.sqrt(seeds ** 2 + (binomial or 0.0) ** 2)
    # Separable either way: a comparison that is not best against runner-up can be a loss.
    return Verdict(best.candidate, other.candidate, gap, spread, None if spread is None else abs(gap) > 2 * spread,
                   label, seeds, binomial, n_val)


def verdict(summaries: Sequence[Summary], n_val: int | None = None) -> Verdict | None:
    """Best against runner-up among the ranked summaries of the best's rung (None when nothing
    is ranked)."""
    ranked = comparable(summaries)
    if not ranked:
        return None
    return compare(ranked[0], ranked[1] if len(ranked) > 1 else None, n_val=n_val)


def ties(summaries: Sequence[Summary], n_val: int | None = None) -> list[Verdict]:
    """Every ranked candidate the best cannot be told from (within twice the spread): a tie.
    Empty when the spread is unknown (one seed): then nothing can be called either way."""
    ranked = comparable(summaries)
    found = [compare(ranked[0], other, n_val=n_val) for other in ranked[1:]]
    return [v for v in found if v.separable is False]
