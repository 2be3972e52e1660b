"""The scaler: Eq. 3 of the paper and the rounding rules that turn (d, w, r) into a network.

``compound(alpha, beta, gamma, phi)`` gives (d, w, r) = (alpha^phi, beta^phi, gamma^phi).
``scale(spec, d, w, r)`` rewrites every stage of a spec: layers L_i -> ceil(L_i * d),
channels C_i -> round(C_i * w) to a multiple of 8 (never below 90% of C_i * w),
resolution R -> round(R * r).  The rules are pluggable through ``Rounding``; with
``depth_rule="total"`` depth is rounded once for the whole network (``round_depths``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from ..errors import UserError, checked_arguments, require
from .spec import HeadSpec, NetworkSpec


MAX_FACTOR = 1e6  # far past any network the spec's limits allow, short of float overflow in rounding


class ScaleError(UserError):
    """A scaling coefficient or rounding rule is out of range."""


DEPTH_RULES = ("stage", "total")


@dataclass(frozen=True)
class Rounding:
    """How scaled channels, depths and resolutions become integers.

    The defaults follow the reference EfficientNet implementation.

    ``depth_rule`` says where depth is rounded.  ``"stage"`` (the reference rule): every
    stage on its own, L_i -> ceil(L_i * d) (or round, by ``depth``); a network of 2-3
    layers per stage then grows in steps of 33-50%, so most of a depth grid is rounding
    twins.  ``"total"``: round(d * sum L_i) layers in all (at least one per stage), shared
    over the stages in proportion to their base layers (largest remainder), so depth grows
    one layer at a time; ``depth`` is not used by this rule.
    """

    divisor: int = 8            # channels are rounded to a multiple of this
    min_fraction: float | None = 0.9  # guard: never below this fraction of c*w (None = off)
    depth: str = "ceil"         # "ceil" or "round" for L_i * d (depth_rule "stage")
    resolution_multiple: int = 1  # resolution rounded to a multiple of this
    depth_rule: str = "stage"   # "stage": round each L_i * d; "total": round d * sum L_i once

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ScaleError:
            return ScaleError(f"rounding field '{name}' {why} (got {getattr(self, name)!r})")

        for name in ("divisor", "resolution_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be an integer >= 1")
        if self.min_fraction is not None and not (
                isinstance(self.min_fraction, (int, float)) and not isinstance(self.min_fraction, bool)
                and 0 < self.min_fraction <= 1):
            raise bad("min_fraction", "must be None or a number in (0, 1]")
        if self.depth not in ("ceil", "round"):
            raise bad("depth", "must be 'ceil' or 'round'")
        if self.depth_rule not in DEPTH_RULES:
            raise bad("depth_rule", "must be 'stage' or 'total'")


Rounding.__init__ = checked_arguments(Rounding.__init__)  # an unknown field is one line, as a bad value is


DEFAULT_ROUNDING = Rounding()


def round_channels(channels: float, rounding: Rounding = DEFAULT_ROUNDING) -> int:
    """Round c*w to the nearest multiple of the divisor (at least one divisor).

    With the 90% guard on, a result below ``min_fraction * channels`` is bumped up one
    divisor: 18 -> 24 with the guard (16 < 0.9 * 18), 16 without.
    """
    div = rounding.divisor
    out = max(div, int(channels + div / 2) // div * div)
    if rounding.min_fraction is not None and out < rounding.min_fraction * channels:
        out += div
    return int(out)


def round_depth(layers: int, d: float, rounding: Rounding = DEFAULT_ROUNDING) -> int:
    """L * d as an integer number of layers, at least one (one stage, rule "stage")."""
    value = layers * d
    # Guard against float noise such as 3 * 1.1 = 3.3000000000000003 before ceil.
    value = round(value, 9)
    out = math.ceil(value) if rounding.depth == "ceil" else int(math.floor(value + 0.5))
    return max(1, out)


def round_depths(layers: Sequence[int], d: float, rounding: Rounding = DEFAULT_ROUNDING) -> tuple[int, ...]:
    """Every stage's L_i * d as integers, by ``rounding.depth_rule``.

    "stage": ``round_depth`` per stage.  "total": T = max(n_stages, round(d * sum L_i))
    layers, split by the largest-remainder method: stage i gets floor(T * L_i / L), the
    layers left over go to the largest remainders (ties to the earlier stage).  A stage
    whose share is below one gets one and the rest is shared again over the others.
    """
    if rounding.depth_rule == "stage":
        return tuple(round_depth(n, d, rounding) for n in layers)
    total_base = sum(layers)
    total = max(len(layers), int(math.floor(round(total_base * d, 9) + 0.5)))
    out = [0] * len(layers)
    free = list(range(len(layers)))  # stages still to be given a share
    left = total
    while free:
        weight = sum(layers[i] for i in free)
        short = [i for i in free if left * layers[i] < weight]  # share below one layer
        if not short:
            break
        for i in short:
            out[i] = 1
        free = [i for i in free if i not in short]
        left -= len(short)
    if free:
        weight = sum(layers[i] for i in free)  # integer arithmetic: no float ties
        for i in free:
            out[i] = left * layers[i] // weight
        by_remainder = sorted(free, key=lambda i: (-(left * layers[i] % weight), i))
        for i in by_remainder[:left - sum(out[i] for i in free)]:
            out[i] += 1
    return tuple(out)


def round_resolution(resolution: int, r: float, rounding: Rounding = DEFAULT_ROUNDING) -> int:
    """R * r rounded to the nearest multiple of ``resolution_multiple`` (at least one)."""
    m = rounding.resolution_multiple
    return max(m, int(math.floor(resolution * r / m + 0.5)) * m)


def _factor_problem(name: str, value: object, minimum: float, inclusive: bool) -> str:
    """What is wrong with a scaling factor ("" when nothing is): a number, finite, in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} must be a number (got {value!r})"
    if not math.isfinite(value):
        return f"{name} must be a finite number (got {value})"
    if value < minimum or (value == minimum and not inclusive):
        return f"{name} must be {'>=' if inclusive else '>'} {minimum:g} (got {value:g})"
    if value > MAX_FACTOR:
        return f"{name} must be at most {MAX_FACTOR:g} (got {value:g})"
    return ""


@checked_arguments
def compound(alpha: float, beta: float, gamma: float, phi: float) -> tuple[float, float, float]:
    """Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        problem = _factor_problem(name, value, 1, inclusive=True)
        if problem:
            raise ScaleError(problem)
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not math.isfinite(phi) or phi < 0:
        raise ScaleError(f"phi must be a finite number >= 0 (got {phi!r})")
    return alpha**phi, beta**phi, gamma**phi


# Named scaling strategies: the relative share of the FLOPs factor s each of depth, width and
# resolution takes (pycls's "Fast and Accurate Model Scaling", Dollar et al. 2021, eq. d*w^2*r^2 = s).
STRATEGIES = {"dWr": (1.0, 8.0, 1.0),      # pycls's fast compound scaling: mostly width
              "uniform": (1.0, 1.0, 1.0),  # an equal share each
              "d": (1.0, 0.0, 0.0), "w": (0.0, 1.0, 0.0), "r": (0.0, 0.0, 1.0)}


def strategy_factors(strategy: str, s: float) -> tuple[float, float, float]:
    """(d, w, r) whose nominal FLOPs factor d * w^2 * r^2 is ``s``, split by ``strategy``'s
    shares (e_d, e_w, e_r): d = s^(e_d/E), w = s^(e_w/2E), r = s^(e_r/2E), E = e_d + e_w + e_r.
    ``strategy`` is a name of STRATEGIES or shares written as pycls does: ``d1_w8_r1``."""
    shares = STRATEGIES.get(strategy)
    if shares is None:
        parts = dict((p[:1], p[1:]) for p in str(strategy).split("_"))
        try:
            if not parts or set(parts) - set("dwr") or len(parts) != len(str(strategy).split("_")):
                raise ValueError
            shares = tuple(float(parts.get(k, 0)) for k in "dwr")
        except ValueError:
            raise ScaleError(f"strategy must be one of {', '.join(STRATEGIES)} or shares such as d1_w8_r1 "
                             f"(got {strategy!r})") from None
    if not all(math.isfinite(x) and x >= 0 for x in shares) or sum(shares) <= 0:
        raise ScaleError(f"strategy {strategy!r}: shares must be >= 0 with a positive sum")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 1:
        raise ScaleError(f"strategy scale s must be a finite number >= 1 (got {s!r})")
    total = sum(shares)
    e_d, e_w, e_r = (x / total for x in shares)
    return s ** e_d, s ** (e_w / 2), s ** (e_r / 2)


def nominal_ratio(alpha: float, beta: float, gamma: float, phi: float = 1.0) -> float:
    """The FLOPs ratio the formula predicts: (alpha * beta^2 * gamma^2)^phi (inf past a float)."""
    try:
        return (alpha * beta**2 * gamma**2) ** phi
    except OverflowError:
        return math.inf


def check_factors(d: float, w: float, r: float) -> None:
    for name, value in (("d", d), ("w", w), ("r", r)):
        problem = _factor_problem(name, value, 0, inclusive=False)
        if problem:
            raise ScaleError(problem)


@checked_arguments
def scale(spec: NetworkSpec, d: float = 1.0, w: float = 1.0, r: float = 1.0,
          rounding: Rounding = DEFAULT_ROUNDING) -> NetworkSpec:
    """Return a new spec with depth x d, width x w and resolution x r (Eq. 1 rewritten).

    Generic: the same rules apply to every stage of every family.  The stem, every
    stage's channels and the head's 1x1 conv scale with w; every stage's layers with d.
    """
    require(isinstance(spec, NetworkSpec), "scale", "spec", spec, "a NetworkSpec (get_base('resnet18') gives one)")
    require(isinstance(rounding, Rounding), "scale", "rounding", rounding, "a Rounding (e.g. Rounding(depth_rule='stage'))")
    check_factors(d, w, r)
    stem = replace(spec.stem, out_channels=round_channels(spec.stem.out_channels * w, rounding))
    depths = round_depths([st.layers for st in spec.stages], d, rounding)
    stages = tuple(
        replace(st, out_channels=round_channels(st.out_channels * w, rounding), layers=layers)
        for st, layers in zip(spec.stages, depths)
    )
    head = HeadSpec(channels=round_channels(spec.head.channels * w, rounding) if spec.head.channels else 0,
                    dropout=spec.head.dropout)
    d0, w0, r0 = spec.scale
    return spec.replace(
        stem=stem,
        stages=stages,
        head=head,
        resolution=round_resolution(spec.resolution, r, rounding),
        scale=(d0 * d, w0 * w, r0 * r),
    )
