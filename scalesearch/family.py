"""Step 2 of the method: fix alpha, beta, gamma and raise phi (Eq. 3) to get a family."""

from __future__ import annotations

from typing import Any

from .cost import count_cost
from .scaling import DEFAULT_ROUNDING, Rounding, compound, nominal_ratio, scale
from .spec import NetworkSpec


def family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phi_max: int = 7,
           rounding: Rounding = DEFAULT_ROUNDING) -> list[dict[str, Any]]:
    """Rows for phi = 0..phi_max: the scaled network's (d, w, r) and its measured cost.

    ``nominal_ratio`` is the formula's (alpha * beta^2 * gamma^2)^phi; ``flops_ratio`` is
    the measured FLOPs over the base's.  They differ because channels, layers and pixels
    are rounded to integers.
    """
    base_cost = count_cost(base)
    rows = []
    for phi in range(phi_max + 1):
        d, w, r = compound(alpha, beta, gamma, phi)
        net = scale(base, d, w, r, rounding)
        cost = count_cost(net)
        rows.append(dict(
            base=base.name, phi=phi, d=d, w=w, r=r, resolution=net.resolution,
            layers=net.total_layers, params=cost.params, flops=cost.flops, acts=cost.acts,
            nominal_ratio=nominal_ratio(alpha, beta, gamma, phi),
            flops_ratio=cost.flops / base_cost.flops,
        ))
    return rows
