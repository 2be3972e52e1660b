"""Step 1 of the method: the phi = 1 grid over alpha, beta, with gamma fitted on measured FLOPs.

For each (alpha, beta) on the grid the scaler is applied with d = alpha, w = beta, and the
input resolution is chosen (gamma = resolution / base resolution) so that the *measured*
FLOPs of the scaled network land closest to the target.  The formula
alpha * beta^2 * gamma^2 ~= 2 is reported next to the measurement but never trusted:
with the default rounding the paper's own (1.2, 1.1, 1.15) measures about 2.57x on B0.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from .cost import Cost, count_cost
from .errors import UserError
from .scaling import DEFAULT_ROUNDING, Rounding, nominal_ratio, scale
from .spec import NetworkSpec

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


@dataclass(frozen=True)
class Budget:
    """A budget as a ratio to the base (``2x``) or an absolute count (``800M``)."""

    value: float
    is_ratio: bool

    def absolute(self, base_value: float) -> float:
        return self.value * base_value if self.is_ratio else self.value

    def __str__(self) -> str:
        return f"{self.value:g}x" if self.is_ratio else f"{self.value:,.0f}"


def parse_budget(text: str | float, option: str = "--target-flops") -> Budget:
    """'2x' -> ratio 2; '800M', '1.6G', '5e8' -> absolute.  Errors name the option and value."""
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*([xX]|[kKmMgGtT]?)", raw)
    if not match:
        raise UserError(f"{option} '{raw}' is not a ratio like 2x or a count like 800M, 1.6G")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "x":
        return Budget(number, True)
    if number <= 0:
        raise UserError(f"{option} '{raw}' must be positive")
    return Budget(number * _SUFFIX[unit], False)


@dataclass(frozen=True)
class GridSpec:
    """The search space and constraint of step 1."""

    target_flops: Budget = Budget(2.0, True)
    alpha_max: float = 2.0
    beta_max: float = 1.5
    step: float = 0.05
    tolerance: float = 0.05
    max_params: Budget | None = None
    max_acts: Budget | None = None
    gamma_max: float = 4.0

    def __post_init__(self) -> None:
        if self.step <= 0:
            raise UserError(f"--step must be > 0 (got {self.step:g})")
        if self.alpha_max < 1 or self.beta_max < 1:
            raise UserError(f"--alpha-max and --beta-max must be >= 1 (got {self.alpha_max:g}, {self.beta_max:g})")
        if not 0 < self.tolerance < 1:
            raise UserError(f"--tolerance must be between 0 and 1 (got {self.tolerance:g})")


def axis(maximum: float, step: float) -> list[float]:
    """1, 1 + step, ... up to maximum (inclusive, free of float drift)."""
    n = int(math.floor((maximum - 1) / step + 1e-9))
    return [round(1 + i * step, 10) for i in range(n + 1)]


@dataclass(frozen=True)
class Candidate:
    """One (alpha, beta, gamma) of the grid with its measured cost at phi = 1."""

    id: int
    alpha: float
    beta: float
    gamma: float
    resolution: int
    nominal_ratio: float
    flops: int
    flops_ratio: float
    params: int
    acts: int
    kept: bool
    reason: str

    @property
    def d(self) -> float:
        return self.alpha

    @property
    def w(self) -> float:
        return self.beta

    @property
    def r(self) -> float:
        return self.gamma

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(d=self.d, w=self.w, r=self.r)
        return out

    def spec(self, base: NetworkSpec, rounding: Rounding = DEFAULT_ROUNDING) -> NetworkSpec:
        return scale(base, self.alpha, self.beta, self.gamma, rounding)


def fit_resolution(base: NetworkSpec, alpha: float, beta: float, target: float,
                   rounding: Rounding = DEFAULT_ROUNDING, gamma_max: float = 4.0) -> tuple[int, Cost]:
    """The input resolution >= the base's whose measured FLOPs are closest to ``target``.

    Measured FLOPs are a non-decreasing step function of resolution (every stage's
    feature map is ceil(R / stride)), so: bracket from a quadratic guess, bisect for the
    first resolution at or above the target, and compare it with the one below.
    """
    R = base.resolution
    hi = max(R, int(math.floor(R * gamma_max)))
    widened = scale(base, alpha, beta, 1.0, rounding)
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


def candidates(base: NetworkSpec, grid: GridSpec, rounding: Rounding = DEFAULT_ROUNDING,
               progress: Iterable | None = None) -> list[Candidate]:
    """Every (alpha, beta) of the grid with its fitted gamma, measured, kept or dropped with a reason."""
    base_cost = count_cost(base)
    target = grid.target_flops.absolute(base_cost.flops)
    max_params = grid.max_params.absolute(base_cost.params) if grid.max_params else None
    max_acts = grid.max_acts.absolute(base_cost.acts) if grid.max_acts else None
    pairs = [(a, b) for a in axis(grid.alpha_max, grid.step) for b in axis(grid.beta_max, grid.step)]
    out = []
    first_with: dict[str, int] = {}  # network key -> first candidate id that builds it
    for i, (alpha, beta) in enumerate(progress(pairs) if progress else pairs):
        resolution, cost = fit_resolution(base, alpha, beta, target, rounding, grid.gamma_max)
        gamma = resolution / base.resolution
        error = cost.flops / target - 1
        network = scale(base, alpha, beta, gamma, rounding).key()
        twin = first_with.setdefault(network, i)
        reason = ""
        if twin != i:  # rounding maps several (alpha, beta) to one network: train it once
            reason = f"same network as candidate {twin} after rounding"
        elif abs(error) > grid.tolerance:
            reason = (f"flops {cost.flops / base_cost.flops:.2f}x miss the target by {error:+.1%}"
                      + (" even at gamma = 1" if resolution == base.resolution and error > 0 else ""))
        elif max_params is not None and cost.params > max_params:
            reason = f"params {cost.params:,} > --max-params {max_params:,.0f}"
        elif max_acts is not None and cost.acts > max_acts:
            reason = f"acts {cost.acts:,} > --max-acts {max_acts:,.0f}"
        out.append(Candidate(
            id=i, alpha=alpha, beta=beta, gamma=round(gamma, 6), resolution=resolution,
            nominal_ratio=nominal_ratio(alpha, beta, gamma), flops=cost.flops,
            flops_ratio=cost.flops / base_cost.flops, params=cost.params, acts=cost.acts,
            kept=not reason, reason=reason,
        ))
    return out
