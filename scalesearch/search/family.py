"""Step 2 of the method: fix alpha, beta, gamma and raise phi (Eq. 3) to get a family.

Two modes.  Literal (the paper's Eq. 3): d, w, r = alpha^phi, beta^phi, gamma^phi, each
network measured; rounding makes the measured FLOPs drift from (alpha*beta^2*gamma^2)^phi.
Fitted (``target=2.0``): d = alpha^phi and w = beta^phi as in Eq. 3, and the resolution is
fitted on *measured* FLOPs to target^phi times the base's, so each phi costs what the
method promises; the formula's gamma^phi is reported beside the fitted r.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import UserError, checked_arguments, require
from ..net.scaling import DEFAULT_ROUNDING, Rounding, compound, nominal_ratio, scale
from .fit import fit_resolution
from ..net.spec import NetworkSpec


@checked_arguments
def family(base: NetworkSpec | str | Path, alpha: float, beta: float, gamma: float, phi_max: int | None = None,
           rounding: Rounding = DEFAULT_ROUNDING, *, target: float | None = None,
           tolerance: float | None = None, target_latency: float | None = None, latency: bool = False,
           device: str = "cpu", batch: int = 1, timer: Any = None) -> list[dict[str, Any]]:
    """Rows for phi = 0..phi_max: the scaled network's (d, w, r) and its measured cost.

    Without ``target`` (Eq. 3 literally) the columns are base, phi, d, w, r, resolution,
    layers, params, flops, acts, nominal_ratio, flops_ratio: ``nominal_ratio`` is the
    formula's (alpha * beta^2 * gamma^2)^phi, ``flops_ratio`` the measured FLOPs over the
    base's; they differ because channels, layers and pixels are rounded to integers.

    With ``target`` (a FLOPs ratio per unit of phi) the resolution is fitted to
    target^phi times the base's measured FLOPs, among resolutions >= the base's.  Rows add
    gamma_nominal (gamma^phi; r is then the fitted resolution over the base's),
    target_ratio (target^phi) and within_tolerance (|flops_ratio / target_ratio - 1| <=
    ``tolerance``).  A phi whose d and w alone overshoot the target stays at the base
    resolution and is reported outside the tolerance.  The literal rows get none of
    these columns: there is no target to be within.

    With ``target_latency`` (a latency ratio per unit of phi) the resolution is fitted instead
    to measured latency, target_latency^phi times the base's (``fit.fit_latency``), timed on
    ``device`` at ``batch``; target_ratio is then the latency's and within_tolerance uses
    ``tolerance`` (default: the grid's latency tolerance).  With ``latency`` (or a latency
    target) each row adds latency_ms, latency_iqr_ms and latency_ratio.  ``timer`` replaces
    the measurement (search/fit.py's Timer), for tests.
    """
    from ..net.bases import get_base
    from ..settings import PHI_MAX_LIMIT, default_of

    require(isinstance(base, (NetworkSpec, str, Path)), "family", "base", base, "a NetworkSpec, a base name or a spec file")
    require(isinstance(rounding, Rounding), "family", "rounding", rounding, "a Rounding (e.g. Rounding(depth_rule='stage'))")
    base = base if isinstance(base, NetworkSpec) else get_base(str(base))  # a name or spec file, as the CLI takes
    compound(alpha, beta, gamma, 0)
    for name, value in (("target", target), ("target_latency", target_latency)):
        if value is not None and (isinstance(value, bool) or not (isinstance(value, (int, float))
                                                                  and math.isfinite(value) and value >= 1)):
            raise UserError(f"family {name} must be a {'FLOPs' if name == 'target' else 'latency'} ratio >= 1 per "
                            f"phi (got {value!r})")
    if target is not None and target_latency is not None:
        raise UserError("family takes one target: FLOPs (target) or latency (target_latency), not both")
    if phi_max is None:
        phi_max = default_of("phi_max")  # SearchSettings' default, written there once
    if isinstance(phi_max, bool) or not isinstance(phi_max, int) or not 0 <= phi_max <= PHI_MAX_LIMIT:
        raise UserError(f"family phi_max must be a whole number from 0 to {PHI_MAX_LIMIT} (got {phi_max!r})")
    if tolerance is not None and target is None and target_latency is None:
        raise UserError(f"family tolerance ({tolerance!r}) applies to a fitted family only: give a target too")
    if tolerance is None:
        from .space import GridSpec

        # the grid's own defaults, written there once
        tolerance = GridSpec().tolerance if target_latency is None else GridSpec().latency_tolerance
    if isinstance(tolerance, bool) or not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise UserError(f"family tolerance must be between 0 and 1 (got {tolerance!r})")
    from ..measure.cost import count_cost

    base_cost = count_cost(base)
    if target is not None:
        check_reachable(base, alpha, beta, gamma, phi_max, rounding, target, base_cost.flops)
    timed = latency or target_latency is not None
    if timed and timer is None:
        from ..measure.latency import candidate_timer

        timer = candidate_timer(base, rounding, device=device, batch=batch)
    base_ms = timer(1.0, 1.0, base.resolution) if timed else None
    rows = []
    for phi in range(phi_max + 1):
        d, w, r = compound(alpha, beta, gamma, phi)
        row: dict[str, Any] = dict(base=base.name, phi=phi, d=d, w=w, r=r)
        found = None
        if target_latency is not None:
            from .fit import fit_latency

            gamma_max = max(4.0, 2 * math.sqrt(target_latency**phi))
            fitted = fit_latency(base, d, w, target_latency**phi * base_ms.median_ms, rounding, gamma_max, timer,
                                 start=round(base.resolution * gamma**phi))
            r, found = fitted.resolution / base.resolution, fitted.latency
            row.update(r=r, gamma_nominal=gamma**phi)
        elif target is not None:
            target_ratio = target**phi
            # The fit never needs a gamma above sqrt(target^phi) by much, since d, w >= 1;
            # twice that bounds the search without tracing absurd resolutions.
            gamma_max = max(4.0, 2 * math.sqrt(target_ratio))
            resolution, _ = fit_resolution(base, d, w, target_ratio * base_cost.flops, rounding, gamma_max)
            r = resolution / base.resolution
            row.update(r=r, gamma_nominal=gamma**phi)
        net = scale(base, d, w, r, rounding)
        cost = count_cost(net)
        row.update(resolution=net.resolution, layers=net.total_layers, params=cost.params, flops=cost.flops,
                   acts=cost.acts, nominal_ratio=nominal_ratio(alpha, beta, gamma, phi))
        if target is not None:
            row.update(target_ratio=target_ratio)
        row.update(flops_ratio=cost.flops / base_cost.flops)
        if timed:
            found = found or timer(d, w, net.resolution)
            row.update(latency_ms=found.median_ms, latency_iqr_ms=found.iqr_ms,
                       latency_ratio=found.median_ms / base_ms.median_ms)
        if target is not None:
            row.update(within_tolerance=abs(row["flops_ratio"] / target_ratio - 1) <= tolerance)
        if target_latency is not None:
            row.update(target_ratio=target_latency**phi,
                       within_tolerance=abs(row["latency_ratio"] / target_latency**phi - 1) <= tolerance)
        rows.append(row)
    return rows


def check_reachable(base: NetworkSpec, alpha: float, beta: float, gamma: float, phi_max: int, rounding: Rounding,
                    target: float, base_flops: int) -> None:
    """Before any fit: refuse a member whose resolution, to reach target^phi, could not be built."""
    last, why = reachable_phi(base, alpha, beta, gamma, phi_max, rounding, target, base_flops)
    if why is not None:
        raise UserError(f"{why}; lower --phi-max or --target-flops")


def reachable_phi(base: NetworkSpec, alpha: float, beta: float, gamma: float, phi_max: int, rounding: Rounding,
                  target: float, base_flops: int) -> tuple[int, str | None]:
    """The last phi <= ``phi_max`` up to which every fitted member can be built, and why the
    next one cannot (None when all can).

    FLOPs grow with the square of the resolution, so one count at the base resolution
    predicts the fitted one; its size is checked on shapes alone (no allocation), at 90% of
    the prediction so that only members clearly past a limit are refused.  Without this, a
    family would trace ever larger inputs for minutes before reaching one it must refuse.
    """
    from ..measure.cost import check_memory, count_cost
    from ..measure.models import iter_parts

    for phi in range(phi_max + 1):
        d, w, _ = compound(alpha, beta, gamma, phi)
        predicted = float(base.resolution)
        try:
            widened = scale(base, d, w, 1.0, rounding)
            ratio = target**phi * base_flops / count_cost(widened).flops
            predicted = base.resolution * math.sqrt(max(ratio, 1.0))
            check_memory(list(iter_parts(widened.replace(resolution=max(base.resolution, int(0.9 * predicted))))))
        except UserError as exc:
            return phi - 1, (f"family member phi = {phi} (d = {d:.3g}, w = {w:.3g}, about {predicted:,.0f} px to "
                             f"reach {target:g}^{phi} = {target**phi:,.4g}x the base's FLOPs) cannot be built: {exc}")
    return phi_max, None
