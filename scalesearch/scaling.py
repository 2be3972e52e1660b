"""The scaler: Eq. 3 of the paper and the rounding rules that turn (d, w, r) into a network.

``compound(alpha, beta, gamma, phi)`` gives (d, w, r) = (alpha^phi, beta^phi, gamma^phi).
``scale(spec, d, w, r)`` rewrites every stage of a spec: layers L_i -> ceil(L_i * d),
channels C_i -> round(C_i * w) to a multiple of 8 (never below 90% of C_i * w),
resolution R -> round(R * r).  The rules are pluggable through ``Rounding``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import UserError
from .spec import HeadSpec, NetworkSpec


class ScaleError(UserError):
    """A scaling coefficient is out of range."""


@dataclass(frozen=True)
class Rounding:
    """How scaled channels, depths and resolutions become integers.

    The defaults follow the reference EfficientNet implementation.
    """

    divisor: int = 8            # channels are rounded to a multiple of this
    min_fraction: float | None = 0.9  # guard: never below this fraction of c*w (None = off)
    depth: str = "ceil"         # "ceil" or "round" for L * d
    resolution_multiple: int = 1  # resolution rounded to a multiple of this

    def __post_init__(self) -> None:
        if self.divisor < 1:
            raise ScaleError(f"rounding divisor must be >= 1 (got {self.divisor})")
        if self.depth not in ("ceil", "round"):
            raise ScaleError(f"depth rounding must be 'ceil' or 'round' (got {self.depth!r})")
        if self.resolution_multiple < 1:
            raise ScaleError(f"resolution multiple must be >= 1 (got {self.resolution_multiple})")


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
    """L * d as an integer number of layers, at least one."""
    value = layers * d
    # Guard against float noise such as 3 * 1.1 = 3.3000000000000003 before ceil.
    value = round(value, 9)
    out = math.ceil(value) if rounding.depth == "ceil" else int(math.floor(value + 0.5))
    return max(1, out)


def round_resolution(resolution: int, r: float, rounding: Rounding = DEFAULT_ROUNDING) -> int:
    """R * r rounded to the nearest multiple of ``resolution_multiple`` (at least one)."""
    m = rounding.resolution_multiple
    return max(m, int(math.floor(resolution * r / m + 0.5)) * m)


def compound(alpha: float, beta: float, gamma: float, phi: float) -> tuple[float, float, float]:
    """Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
            raise ScaleError(f"{name} must be >= 1 (got {value})")
    if not (isinstance(phi, (int, float)) and math.isfinite(phi) and phi >= 0):
        raise ScaleError(f"phi must be >= 0 (got {phi})")
    return alpha**phi, beta**phi, gamma**phi


def nominal_ratio(alpha: float, beta: float, gamma: float, phi: float = 1.0) -> float:
    """The FLOPs ratio the formula predicts: (alpha * beta^2 * gamma^2)^phi."""
    return (alpha * beta**2 * gamma**2) ** phi


def check_factors(d: float, w: float, r: float) -> None:
    for name, value in (("d", d), ("w", w), ("r", r)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ScaleError(f"{name} must be > 0 (got {value})")


def scale(spec: NetworkSpec, d: float = 1.0, w: float = 1.0, r: float = 1.0,
          rounding: Rounding = DEFAULT_ROUNDING) -> NetworkSpec:
    """Return a new spec with depth x d, width x w and resolution x r (Eq. 1 rewritten).

    Generic: the same rules apply to every stage of every family.  The stem, every
    stage's channels and the head's 1x1 conv scale with w; every stage's layers with d.
    """
    check_factors(d, w, r)
    stem = replace(spec.stem, out_channels=round_channels(spec.stem.out_channels * w, rounding))
    stages = tuple(
        replace(st,
                out_channels=round_channels(st.out_channels * w, rounding),
                layers=round_depth(st.layers, d, rounding))
        for st in spec.stages
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
