"""The Python API behind the CLI: each function is what one command does, minus printing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bases import get_base
from .cost import count_cost
from .scaling import DEFAULT_ROUNDING, Rounding, check_factors, scale
from .spec import NetworkSpec


def resolve(base: str | Path | NetworkSpec) -> NetworkSpec:
    return base if isinstance(base, NetworkSpec) else get_base(base)


def measure(base: str | Path | NetworkSpec, d: float = 1.0, w: float = 1.0, r: float = 1.0,
            rounding: Rounding = DEFAULT_ROUNDING) -> dict[str, Any]:
    """Scale a base by (d, w, r) and measure it: what `scalesearch flops --json` prints."""
    check_factors(d, w, r)
    spec = resolve(base)
    net = scale(spec, d, w, r, rounding)
    cost = count_cost(net)
    return dict(base=spec.name, name=net.name, d=d, w=w, r=r, resolution=net.resolution,
                layers=net.total_layers, **cost.as_dict(), stages=net.stage_table())
