"""Gamma fitted to a measured constraint: FLOPs (``fit_resolution``) or latency (``fit_latency``).

Measured FLOPs are a step function of the resolution (every stage's map is ceil(R / stride)),
counted analytically in microseconds, so ``fit_resolution`` brackets and bisects.  Under
``grid.target_latency`` the resolution of each (alpha, beta) is chosen so that the
candidate's *measured* latency lands closest to the target, as ``fit_resolution`` does
for measured FLOPs.  Timing is the expensive step (a fraction of a second per network, against
microseconds for an analytic FLOPs count), so the fit is steered by FLOPs: at one (alpha, beta)
the same layers run on more pixels as the resolution grows, so latency grows with FLOPs, but
not in proportion (fixed per-call costs, cache effects, kernels that change with the map
size).  ``fit_latency`` therefore times the network at gamma = 1, asks the FLOPs fit for the
resolution whose FLOPs are the target's multiple of that, times it there, and corrects the
FLOPs goal by a secant step in log latency against log FLOPs, at most ``MAX_TIMINGS`` times;
the measured resolution closest to the target wins.  Timings are cached per network
(``measure/latency.py``), so rounding twins and a second run cost nothing.

The timer is passed in (``Timer``: latency of (alpha, beta) at a proxy resolution), so the
search decides where a latency is measured (device, threads, batch; proxy or native
resolution) and the tests pass an exact stub.  No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..net.scaling import DEFAULT_ROUNDING, Rounding, scale
from ..net.spec import NetworkSpec

if TYPE_CHECKING:
    from ..measure.cost import Cost

MAX_TIMINGS = 5          # timings per (alpha, beta) after the one at gamma = 1
SLOPE_RANGE = (0.3, 1.5)  # d log latency / d log FLOPs a secant step may assume


class Timed(Protocol):
    median_ms: float
    iqr_ms: float


Timer = Callable[[float, float, int], Timed]   # (alpha, beta, proxy resolution) -> its latency


@dataclass(frozen=True)
class LatencyFit:
    """The resolution chosen for one (alpha, beta), its FLOPs cost and its latency."""

    resolution: int
    cost: Any            # measure.cost.Cost at that resolution
    latency: Timed
    timings: int         # how many resolutions were timed


def fit_resolution(base: NetworkSpec, alpha: float, beta: float, target: float,
                   rounding: Rounding = DEFAULT_ROUNDING, gamma_max: float = 4.0) -> tuple[int, Cost]:
    """The input resolution >= the base's whose measured FLOPs are closest to ``target``.

    Measured FLOPs are a non-decreasing step function of resolution (every stage's
    feature map is ceil(R / stride)), so: bracket from a quadratic guess, bisect for the
    first resolution at or above the target, and compare it with the one below.
    ``alpha`` and ``beta`` are the d and w applied (alpha^phi, beta^phi in step 2).
    """
    R = base.resolution
    hi = max(R, int(math.floor(R * gamma_max)))
    widened = scale(base, alpha, beta, 1.0, rounding)
    from ..measure.cost import count_cost

    seen: dict[int, Cost] = {}

    def cost_at(res: int) -> Cost:
        if res not in seen:
            seen[res] = count_cost(widened.replace(resolution=res))
        return seen[res]

    guess = min(hi, max(R, int(round(R * math.sqrt(max(target / cost_at(R).flops, 1.0))))))
    step = 2  # bracket [lo, up] around the first resolution at or above the target
    if cost_at(guess).flops >= target:
        up = guess
        while up - step > R and cost_at(up - step).flops >= target:
            up, step = up - step, step * 2
        lo = max(R, up - step)
    else:
        lo = guess
        while lo + step < hi and cost_at(lo + step).flops < target:
            lo, step = lo + step, step * 2
        up = min(hi, lo + step)
    if cost_at(lo).flops >= target:  # already at or above target at the lower end
        return lo, cost_at(lo)
    while up - lo > 1:
        mid = (lo + up) // 2
        if cost_at(mid).flops >= target:
            up = mid
        else:
            lo = mid
    best = min((lo, up), key=lambda res: (abs(cost_at(res).flops - target), res))
    return best, cost_at(best)


def fit_latency(base: NetworkSpec, alpha: float, beta: float, target_ms: float, rounding: Rounding,
                gamma_max: float, timer: Timer, start: int | None = None) -> LatencyFit:
    """The resolution >= the base's whose measured latency is closest to ``target_ms`` (see the
    module docstring); a tie goes to the smaller resolution.  ``start``, a resolution to time
    second (a family's gamma^phi guess), makes a member whose (alpha, beta, resolution) a
    search measured come back to the same resolution: a latency is not smooth in resolution,
    and another path could find another resolution as close to the target."""
    R = base.resolution
    seen: dict[int, tuple[Any, Timed]] = {}

    def at(res: int) -> tuple[Any, Timed]:
        if res not in seen:
            from ..measure.cost import count_cost

            seen[res] = (count_cost(scale(base, alpha, beta, 1.0, rounding).replace(resolution=res)),
                         timer(alpha, beta, res))
        return seen[res]

    def secant() -> float:   # the FLOPs whose latency the last two points predict to be the target
        (f0, l0), (f1, l1) = points[-2], points[-1]
        slope = math.log(l1 / l0) / math.log(f1 / f0) if f1 != f0 and l1 > 0 and l0 > 0 else 1.0
        slope = min(max(slope, SLOPE_RANGE[0]), SLOPE_RANGE[1])
        return f1 * (target_ms / l1) ** (1 / slope)

    def on_target() -> bool:
        return abs(math.log(points[-1][1] / target_ms)) < 1e-3

    cost, latency = at(R)
    points = [(cost.flops, latency.median_ms)]
    goal = cost.flops * target_ms / latency.median_ms
    if start is not None and start > R and latency.median_ms < target_ms:
        cost, latency = at(start)
        points.append((cost.flops, latency.median_ms))
        goal = secant()
    for _ in range(MAX_TIMINGS - len(seen) + 1):
        if on_target() or (points[-1][1] >= target_ms and len(seen) == 1):
            break   # on the target, or already over it at gamma = 1: nothing smaller to try
        res, _ = fit_resolution(base, alpha, beta, goal, rounding, gamma_max)
        if res in seen:
            break
        cost, latency = at(res)
        points.append((cost.flops, latency.median_ms))
        goal = secant()
    best = min(seen, key=lambda res: (abs(math.log(seen[res][1].median_ms / target_ms)), res))
    return LatencyFit(best, seen[best][0], seen[best][1], len(seen))


def noise(latency: Timed, base: Timed | None = None) -> float:
    """Half the interquartile range as a fraction of the median (of a ratio to ``base``: both
    timings' noise): how far one latency can be trusted."""
    own = latency.iqr_ms / (2 * latency.median_ms) if latency.median_ms > 0 else math.inf
    theirs = base.iqr_ms / (2 * base.median_ms) if base is not None and base.median_ms > 0 else 0.0
    return math.hypot(own, theirs)
