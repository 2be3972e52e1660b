"""Step 1 of the method: the phi = 1 grid over alpha, beta, with gamma fitted on measured FLOPs.

For each (alpha, beta) on the grid the scaler is applied with d = alpha, w = beta, and the
input resolution is chosen (gamma = resolution / base resolution) so that the *measured*
FLOPs of the scaled network land closest to the target.  A candidate is kept only when
both the measurement and the formula alpha * beta^2 * gamma^2 agree with the target:
the measurement because that is the network trained, the formula because step 2 raises
these coefficients to the power phi and trusts their product (Eq. 3).  With the default
rounding the paper's own (1.2, 1.1, 1.15) measures about 2.57x on B0, not 1.92x.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import UserError
from .budget import Budget, parse_budget, parse_time
from ..net.scaling import DEFAULT_ROUNDING, Rounding, nominal_ratio, scale
from ..net.spec import NetworkSpec

if TYPE_CHECKING:  # the counter needs torch: imported where it is used, so settings stay light
    from .fit import Timer

class GridSettingError(UserError):
    """A setting of the grid space is out of range; the message names the setting."""


LATENCY_AT = ("proxy", "native")
MAX_POINTS = 20_000  # (alpha, beta) pairs: each is a gamma fit of several cost counts

# How far alpha * beta^2 * gamma^2 may sit from the target ratio.  Not as tight as the
# measured tolerance: gamma moves in steps of 1/resolution (3% at 32px, so gamma^2 6%), and
# the fit follows measured FLOPs, which jump with ceil(R / stride), channels on multiples of
# 8 and ceil depth.  Distinct networks kept on the default grid (2x +/- 5%, step 0.05) by
# nominal tolerance, measured:   0.05  0.08  0.10  0.15  none
#   resnet20-cifar at 32px          4     4     6     7     8
#   efficientnet-b0 at 224px        3     5    10    11    17
# 0.10 is the knee; it drops the demo's 1.48-1.53 rows (experiments/demo-seeds/candidates.csv;
# their product, raised to phi = 7, gives 19x instead of 128x) and bounds the drift at phi = 7
# to 1.1^7 = 1.9x.
NOMINAL_TOLERANCE = 0.10


def _axis_length(maximum: float, step: float) -> float:
    # A float, so that a tiny step gives a huge (or infinite) count instead of an overflow.
    span = (maximum - 1) / step
    return float(math.floor(span + 1e-9) + 1) if math.isfinite(span) else math.inf


@dataclass(frozen=True)
class GridSpec:
    """The grid space of step 1: the one place its settings and their defaults live.

    Plain fields (numbers, budget texts) so it round-trips through JSON and YAML:
    ``GridSpec.from_dict(spec.to_dict()) == spec``.  ``target``, ``max_params_budget`` and
    ``max_acts_budget`` give the parsed budgets.
    """

    target_flops: str = "2x"          # ratio to the base ('2x') or absolute ('800M')
    alpha_max: float = 2.0            # alpha (= d at phi = 1) runs 1, 1 + step, ..., alpha_max
    beta_max: float = 1.5             # beta (= w) likewise
    step: float = 0.05
    tolerance: float = 0.05           # measured FLOPs within this fraction of the target
    nominal_tolerance: float = NOMINAL_TOLERANCE  # alpha*beta^2*gamma^2 within this of the target ratio
    max_params: str | None = None     # ratio or absolute; None = no limit
    max_acts: str | None = None
    gamma_max: float = 4.0            # largest gamma the resolution fit may try
    # Latency (search/fit.py, docs/method.md "Latency as the constraint"): the constraint gamma is fitted
    # to instead of FLOPs, a limit, and where a latency is measured.
    target_latency: str | None = None  # ratio to the base's latency ('2x') or a time ('12ms'); None = FLOPs
    latency_tolerance: float = 0.10    # measured latency within this fraction of its target
    max_latency: str | None = None     # ratio or time; None = no limit
    latency: bool = True               # time the candidates (for the FLOPs-latency agreement) under a FLOPs target
    latency_batch: int = 1             # images per timed forward pass: 1 is one deployed request
    latency_at: str = "proxy"          # proxy: the searched resolution; native: the base's own x gamma

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> GridSettingError:
            value = getattr(self, name)
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            return GridSettingError(f"grid setting '{name}' {why} (got {shown})")

        def check(name: str, why: str, within: Callable[[float], bool]) -> None:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or not within(value)):
                raise bad(name, f"must be a finite number {why}")

        for name in ("alpha_max", "beta_max", "gamma_max"):
            check(name, ">= 1", lambda v: v >= 1)
        check("step", "> 0", lambda v: v > 0)
        for name in ("tolerance", "nominal_tolerance", "latency_tolerance"):
            check(name, "between 0 and 1", lambda v: 0 < v < 1)
        if not isinstance(self.latency, bool):
            raise bad("latency", "must be true or false")
        if isinstance(self.latency_batch, bool) or not isinstance(self.latency_batch, int) or not 1 <= self.latency_batch <= 4096:
            raise bad("latency_batch", "must be an integer from 1 to 4096")
        if self.latency_at not in LATENCY_AT:
            raise bad("latency_at", f"must be one of {', '.join(LATENCY_AT)}")
        for name in ("target_latency", "max_latency"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise bad(name, "must be text: a ratio like '2x' or a time like '12ms'")
            try:
                budget = parse_time(value, f"grid setting '{name}'")
            except UserError as error:
                raise GridSettingError(str(error)) from None
            if name == "target_latency" and budget.is_ratio and budget.value < 1:
                raise bad(name, "must be at least 1x: phi = 1 scales the base up")
        for name in ("target_flops", "max_params", "max_acts"):
            value = getattr(self, name)
            if value is None and name != "target_flops":
                continue
            if name != "target_flops" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = str(value)  # a limit written as a plain count (YAML reads 5000000 as a number)
                object.__setattr__(self, name, value)
            if not isinstance(value, str):
                raise bad(name, "must be text: a ratio like '2x' or a count like '800M'")
            try:  # parse_budget refuses 0, nan, inf and overflow
                budget = parse_budget(value, f"grid setting '{name}'")
            except UserError as error:
                raise GridSettingError(str(error)) from None
            if name == "target_flops" and budget.is_ratio and budget.value < 1:
                raise bad(name, "must be at least 1x: phi = 1 scales the base up")
        points = self.points()
        if points > MAX_POINTS:
            shown = f"{points:,}" if points < 1e15 else "more than 1e15"
            raise GridSettingError(
                f"grid settings alpha_max={self.alpha_max:g}, beta_max={self.beta_max:g}, step={self.step:g} "
                f"give {shown} (alpha, beta) points, over the limit of {MAX_POINTS:,}: raise 'step' "
                f"or lower 'alpha_max' / 'beta_max'")

    def points(self) -> int | float:
        """How many (alpha, beta) pairs the grid has, without building them (inf past a float)."""
        n = _axis_length(self.alpha_max, self.step) * _axis_length(self.beta_max, self.step)
        return int(n) if n < 1e15 else n

    @property
    def target(self) -> Budget:
        return parse_budget(self.target_flops, "grid setting 'target_flops'")

    @property
    def max_params_budget(self) -> Budget | None:
        return parse_budget(self.max_params, "grid setting 'max_params'") if self.max_params is not None else None

    @property
    def latency_target(self) -> Budget | None:
        return parse_time(self.target_latency, "grid setting 'target_latency'") if self.target_latency else None

    @property
    def max_latency_budget(self) -> Budget | None:
        return parse_time(self.max_latency, "grid setting 'max_latency'") if self.max_latency else None

    @property
    def timed(self) -> bool:
        """Whether a search times its candidates: under a latency target or limit, or ``latency``."""
        return bool(self.target_latency or self.max_latency or self.latency)

    @property
    def max_acts_budget(self) -> Budget | None:
        return parse_budget(self.max_acts, "grid setting 'max_acts'") if self.max_acts is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GridSpec":
        """The inverse of ``to_dict``; an unknown setting is refused by name."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise GridSettingError(f"unknown grid setting(s) {', '.join(map(repr, unknown))}; "
                                   f"valid settings: {', '.join(names)}")
        return cls(**data)


def axis(maximum: float, step: float) -> list[float]:
    """1, 1 + step, ... up to maximum (inclusive, free of float drift)."""
    n = int(_axis_length(maximum, step))
    return [round(1 + i * step, 10) for i in range(n)]


DROP_CODES = ("", "twin", "flops", "nominal", "params", "acts", "latency")  # "" = kept


@dataclass(frozen=True)
class Candidate:
    """One (alpha, beta, gamma) of the grid with its measured cost at phi = 1.

    ``drop`` says why a candidate is not trained, for programs: "" (kept), "twin" (the
    same network as an earlier kept candidate), "flops" (measured FLOPs outside the
    tolerance), "nominal" (alpha * beta^2 * gamma^2 outside the nominal tolerance),
    "params", "acts" (over a budget), "latency" (measured latency outside the latency
    tolerance of a latency target, or over ``max_latency``).  ``reason`` says the same for
    people.  The latency fields are None where the candidate was not timed.
    """

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
    drop: str
    reason: str
    latency_ms: float | None = None      # median forward time (measure/latency.py)
    latency_iqr_ms: float | None = None  # its interquartile range: the spread
    latency_ratio: float | None = None   # to the base's latency, timed the same way

    def __post_init__(self) -> None:
        if self.drop not in DROP_CODES:
            raise UserError(f"candidate drop code must be one of {DROP_CODES} (got {self.drop!r})")
        if self.kept != (self.drop == ""):
            raise UserError(f"candidate {self.id}: kept={self.kept} contradicts drop={self.drop!r}")

    @property
    def d(self) -> float:
        return self.alpha

    @property
    def w(self) -> float:
        return self.beta

    @property
    def r(self) -> float:
        return self.gamma

    @classmethod
    def columns(cls) -> list[str]:
        """The columns of candidates.csv: the fields, with d, w, r after gamma."""
        names = [f.name for f in fields(cls)]
        at = names.index("gamma") + 1
        return names[:at] + ["d", "w", "r"] + names[at:]

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(d=self.d, w=self.w, r=self.r)
        return {name: out[name] for name in self.columns()}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Candidate":
        """A candidate from a row of candidates.csv as pandas or csv read it.

        Types are coerced (ints read as floats, kept as True/"True"/1, empty text as NaN);
        d, w, r are derived and not read.  A missing or malformed column is a UserError
        naming it.
        """
        values = {}
        if "drop" not in row and "kept" in row:  # written before drop codes existed: read the old reason
            row = {**row, "drop": _legacy_drop(row)}
        for f in fields(cls):
            if f.name.startswith("latency"):   # optional: a table of an earlier release has none
                values[f.name] = _coerce_optional(f.name, row.get(f.name))
                continue
            if f.name not in row:
                raise UserError(f"candidate row has no '{f.name}' column (columns: {', '.join(map(str, row))})")
            values[f.name] = _coerce(f.name, row[f.name], _COLUMN_TYPES[f.name])
        return cls(**values)

    def spec(self, base: NetworkSpec, rounding: Rounding = DEFAULT_ROUNDING) -> NetworkSpec:
        return scale(base, self.alpha, self.beta, self.gamma, rounding)


def _legacy_drop(row: dict[str, Any]) -> str:
    if _coerce("kept", row.get("kept"), bool):
        return ""
    reason = str(row.get("reason") or "")
    for prefix, code in (("same network", "twin"), ("flops", "flops"), ("params", "params"), ("acts", "acts")):
        if reason.startswith(prefix):
            return code
    return "flops"


_COLUMN_TYPES = {"id": int, "alpha": float, "beta": float, "gamma": float, "resolution": int,
                 "nominal_ratio": float, "flops": int, "flops_ratio": float, "params": int, "acts": int,
                 "kept": bool, "drop": str, "reason": str}
_TRUE, _FALSE = ("true", "1", "1.0", "yes"), ("false", "0", "0.0", "no")


def _coerce(name: str, value: Any, kind: type) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    missing = value is None or (isinstance(value, float) and math.isnan(value))

    def bad(why: str) -> UserError:
        return UserError(f"candidate row column '{name}' {why} (got {value!r})")

    if kind is str:
        return "" if missing else str(value)  # pandas reads an empty cell as NaN
    if missing:
        raise bad("is empty")
    if kind is bool:
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise bad("must be True or False")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad("must be a number") from None
    if not math.isfinite(number):
        raise bad("must be a finite number")
    if kind is int:
        if number != int(number):
            raise bad("must be a whole number")
        return int(number)
    return number


def _coerce_optional(name: str, value: Any) -> float | None:
    """A latency cell: empty or missing is None, else a finite number >= 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return None
    number = _coerce(name, value, float)
    if number < 0:
        raise UserError(f"candidate row column '{name}' must be >= 0 (got {value!r})")
    return number


def drop_counts(cands: Iterable[Candidate]) -> dict[str, int]:
    """How many candidates each drop code removed: every code but "" (kept), zeros included."""
    counts = {code: 0 for code in DROP_CODES if code}
    for c in cands:
        if c.drop:
            counts[c.drop] += 1
    return counts


def counts_text(counts: dict[str, int]) -> str:
    """The drop counts (``drop_counts``) in words: 'dropped: 3 rounding twins, ...'."""
    names = {"twin": "rounding twins", "flops": "outside the FLOPs tolerance",
             "nominal": "nominal product off target", "params": "over grid.max_params", "acts": "over grid.max_acts",
             "latency": "off the latency target or over grid.max_latency"}
    parts = [f"{n} {names.get(k, k)}" for k, n in counts.items() if n and k]
    return "dropped: " + (", ".join(parts) if parts else "none")


def dropped_summary(table: list[Candidate]) -> str:
    """One line counting the dropped grid points by kind."""
    return counts_text(drop_counts(table))


def candidates(base: NetworkSpec, grid: GridSpec, rounding: Rounding = DEFAULT_ROUNDING,
               progress: Iterable | None = None, timer: "Timer | None" = None) -> list[Candidate]:
    """Every (alpha, beta) of the grid with its fitted gamma, measured, kept or dropped with a reason.

    Gamma is fitted to measured FLOPs, or under ``grid.target_latency`` to measured latency
    (``fit.fit_latency``, timed by ``timer``).  The checks run in order: the target
    (measured FLOPs and the nominal ratio, or measured latency), params, acts, max_latency; a
    candidate that passes them all is a "twin" when an earlier *kept* candidate builds the
    same network (rounding maps several (alpha, beta) to one network: it is trained once).
    Twins are found among passing candidates only, since the nominal check depends on the
    coefficients and not on the network: a network is kept if any of its coefficients are.
    With a ``timer`` and ``grid.timed``, every candidate that passes the FLOPs checks is timed.
    """
    from ..measure.cost import count_cost
    from .fit import fit_latency, fit_resolution, noise

    base_cost = count_cost(base)
    target = grid.target.absolute(base_cost.flops)
    target_ratio = target / base_cost.flops
    max_params = grid.max_params_budget.absolute(base_cost.params) if grid.max_params_budget else None
    max_acts = grid.max_acts_budget.absolute(base_cost.acts) if grid.max_acts_budget else None
    timer = timer if grid.timed else None
    if timer is None and (grid.target_latency or grid.max_latency):
        raise UserError("a latency target or limit needs a timer (grid.target_latency, grid.max_latency)")
    base_latency = timer(1.0, 1.0, base.resolution) if timer else None
    goal = grid.latency_target.absolute(base_latency.median_ms) if grid.latency_target else None
    max_latency = grid.max_latency_budget.absolute(base_latency.median_ms) if grid.max_latency else None
    pairs = [(a, b) for a in axis(grid.alpha_max, grid.step) for b in axis(grid.beta_max, grid.step)]
    out = []
    kept_as: dict[str, int] = {}  # network key -> the kept candidate that builds it
    for i, (alpha, beta) in enumerate(progress(pairs) if progress else pairs):
        latency = None
        if goal is not None:
            fit = fit_latency(base, alpha, beta, goal, rounding, grid.gamma_max, timer)
            resolution, cost, latency = fit.resolution, fit.cost, fit.latency
        else:
            resolution, cost = fit_resolution(base, alpha, beta, target, rounding, grid.gamma_max)
        gamma = resolution / base.resolution
        error = cost.flops / target - 1
        nominal = nominal_ratio(alpha, beta, gamma)
        nominal_error = nominal / target_ratio - 1
        drop, reason = "", ""
        if goal is not None:
            miss, spread = latency.median_ms / goal - 1, noise(latency, base_latency)
            if abs(miss) > grid.latency_tolerance:
                drop, reason = "latency", (f"latency {latency.median_ms / base_latency.median_ms:.2f}x misses the "
                                           f"target by {miss:+.1%}" + (" even at gamma = 1" if resolution ==
                                                                       base.resolution and miss > 0 else ""))
                if abs(miss) - grid.latency_tolerance < spread:
                    reason += f" (within its timing noise of +/-{spread:.1%}: cannot be told from the tolerance's edge)"
            elif spread > grid.latency_tolerance - abs(miss):
                reason = f"kept within its timing noise of +/-{spread:.1%}: cannot be told from the tolerance's edge"
        elif abs(error) > grid.tolerance:
            drop, reason = "flops", (f"flops {cost.flops / base_cost.flops:.2f}x miss the target by {error:+.1%}"
                                     + (" even at gamma = 1" if resolution == base.resolution and error > 0 else ""))
        elif abs(nominal_error) > grid.nominal_tolerance:
            drop, reason = "nominal", (f"nominal alpha*beta^2*gamma^2 = {nominal:.2f} misses the target "
                                       f"ratio {target_ratio:.2f} by {nominal_error:+.1%}")
        if not drop and max_params is not None and cost.params > max_params:
            drop, reason = "params", f"params {cost.params:,} over the max_params budget {max_params:,.0f}"
        elif not drop and max_acts is not None and cost.acts > max_acts:
            drop, reason = "acts", f"acts {cost.acts:,} over the max_acts budget {max_acts:,.0f}"
        if not drop and timer is not None and latency is None:
            latency = timer(alpha, beta, resolution)
        if not drop and max_latency is not None and latency.median_ms > max_latency:
            drop, reason = "latency", f"latency {latency.median_ms:,.3g} ms over the max_latency budget {max_latency:,.3g} ms"
        if not drop:
            twin = kept_as.setdefault(scale(base, alpha, beta, gamma, rounding).key(), i)
            if twin != i:
                drop, reason = "twin", f"same network as candidate {twin} after rounding"
        out.append(Candidate(
            id=i, alpha=alpha, beta=beta, gamma=round(gamma, 6), resolution=resolution,
            nominal_ratio=nominal, flops=cost.flops, flops_ratio=cost.flops / base_cost.flops,
            params=cost.params, acts=cost.acts, kept=not drop, drop=drop, reason=reason,
            latency_ms=latency.median_ms if latency else None, latency_iqr_ms=latency.iqr_ms if latency else None,
            latency_ratio=latency.median_ms / base_latency.median_ms if latency else None,
        ))
    return out
