"""Does a short-training proxy rank candidates the way a bigger budget does?

Every answer of a search comes from a proxy budget.  ``agreement`` measures that proxy:
for candidates trained at two budgets it gives Kendall's tau-b and Spearman's rho between
their mean top-1 at each budget, with a bootstrap interval that resamples candidates and,
within each candidate, its seeds (so both kinds of noise widen it), and a one-line verdict.
``cost_agreement`` asks the same of two costs: does FLOPs order the candidates as their
measured latency does?  Pure functions of the scores: no torch, no files.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

Scores = Mapping[int, Sequence[float]]   # candidate id -> top-1 of each seed


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties in either ranking counted as neither agreeing nor disagreeing);
    None when one ranking is all ties or there are fewer than 2 pairs.

    Over the pairs: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y),
    the pairs at once with numpy (a bootstrap calls this thousands of times)."""
    import numpy as np

    i, j = np.triu_indices(len(x), 1)
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = np.sign(xs[i] - xs[j]), np.sign(ys[i] - ys[j])
    denominator = math.sqrt(int(np.count_nonzero(dx)) * int(np.count_nonzero(dy)))
    return int((dx * dy).sum()) / denominator if denominator else None


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, tied values sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the ranks; None when a ranking is constant."""
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else None


@dataclass(frozen=True)
class Agreement:
    """The rank agreement of two budgets over the ``n`` candidates trained at both."""

    n: int
    tau: float | None
    rho: float | None
    low: float | None         # 95% bootstrap interval of tau (candidates and seeds resampled)
    high: float | None
    small: str                # the two budgets' names, e.g. "2 epochs" and "8 epochs"
    large: str

    @property
    def verdict(self) -> str:
        if self.tau is None or self.low is None:
            return f"cannot tell whether the {self.small} proxy ranks like the {self.large} budget (n={self.n})"
        interval = f"tau {self.tau:.2f} [{self.low:.2f}, {self.high:.2f}], rho {self.rho:.2f}, n={self.n}"
        if self.low > 0:
            return f"the {self.small} proxy ranks like the {self.large} budget: {interval}"
        if self.high < 0:
            return f"the {self.small} proxy ranks against the {self.large} budget: {interval}"
        return (f"the {self.small} proxy does not rank like the {self.large} budget beyond the noise "
                f"(the interval includes 0): {interval}")

    def as_dict(self) -> dict:
        return dict(asdict(self), verdict=self.verdict)


def agreement(small: Scores, large: Scores, small_name: str = "proxy", large_name: str = "larger",
              rounds: int = 2000, seed: int = 0) -> Agreement:
    """Kendall's tau and Spearman's rho of the mean top-1 at two budgets over the candidates
    scored at both, with a 95% bootstrap interval of tau (``rounds`` resamples, seeded)."""
    ids = sorted(set(small) & set(large))
    ids = [c for c in ids if small[c] and large[c]]
    x = [statistics.fmean(small[c]) for c in ids]
    y = [statistics.fmean(large[c]) for c in ids]
    tau, rho = kendall_tau(x, y), spearman_rho(x, y)
    low = high = None
    if tau is not None and len(ids) >= 3:
        rng = random.Random(seed)
        found = []
        for _ in range(rounds):
            pick = [rng.choice(ids) for _ in ids]
            bx = [statistics.fmean(rng.choices(list(small[c]), k=len(small[c]))) for c in pick]
            by = [statistics.fmean(rng.choices(list(large[c]), k=len(large[c]))) for c in pick]
            value = kendall_tau(bx, by)
            if value is not None:
                found.append(value)
        if found:
            found.sort()
            low, high = found[int(0.025 * (len(found) - 1))], found[int(math.ceil(0.975 * (len(found) - 1)))]
    return Agreement(len(ids), tau, rho, low, high, small_name, large_name)


__all__ = ["Agreement", "agreement", "kendall_tau", "spearman_rho"]


def cost_agreement(flops: Sequence[float], latency: Sequence[float], kept: Sequence[bool], *, seed: int = 0,
              resamples: int = 2000) -> dict[str, Any] | None:
    """How far FLOPs rank the candidates as their measured latency does: Kendall's tau-b with a
    95% bootstrap interval (candidates resampled), and the latency range of the kept ones.
    None with fewer than 3 candidates timed."""
    n = len(flops)
    if n < 3:
        return None
    tau = kendall_tau(flops, latency)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        value = kendall_tau([flops[i] for i in pick], [latency[i] for i in pick])
        if value is not None:
            draws.append(value)
    draws.sort()
    low, high = (draws[int(0.025 * (len(draws) - 1))], draws[int(0.975 * (len(draws) - 1))]) if draws else (None, None)
    kept_latency = [v for v, k in zip(latency, kept) if k]
    return dict(tau=tau, low=low, high=high, n=n,
                kept_latency_min=min(kept_latency) if kept_latency else None,
                kept_latency_max=max(kept_latency) if kept_latency else None,
                kept_flops_min=min(f for f, k in zip(flops, kept) if k) if kept_latency else None,
                kept_flops_max=max(f for f, k in zip(flops, kept) if k) if kept_latency else None)


def cost_agreement_text(found: dict[str, Any] | None) -> str:
    """One line: the tau with its interval, and the kept candidates' spread of the other figure."""
    if not found:
        return "FLOPs against latency: fewer than 3 candidates timed, no agreement measured"
    tau = "undefined (a ranking is all ties)" if found["tau"] is None else f"{found['tau']:+.2f}"
    interval = f" [{found['low']:+.2f}, {found['high']:+.2f}]" if found["low"] is not None else ""
    line = f"FLOPs against latency over {found['n']} timed candidates: Kendall tau {tau}{interval} (95% bootstrap)"
    if found["kept_latency_min"] is not None:
        line += (f"; the kept span {found['kept_flops_min']:.2f}-{found['kept_flops_max']:.2f}x the base's FLOPs "
                 f"and {found['kept_latency_min']:.2f}-{found['kept_latency_max']:.2f}x its latency")
    return line
