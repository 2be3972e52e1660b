"""The plan: every row of an experiment built from its base at the proxy with the scaler, and
counted; compound rows by phi fitted on measured FLOPs, or matched to the single rows' FLOPs;
strategy rows by their s, or matched to the compound row's FLOPs or latency."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .experiment import MATCHES, SINGLES, ExperimentError, ReproduceSettings, Row

MODELS = "models.csv"
MATCH_TOLERANCE = 0.05     # a matched compound row must measure within 5% of the single rows' mean
PHI_TARGET = 2.0           # FLOPs ratio per unit of phi, as the grid's default target (2x)


@dataclass
class Model:
    """A row of the experiment, built: its spec and measured cost at the proxy."""

    id: int
    row: Row
    spec: Any = None                  # NetworkSpec (None: waits for a grid search)
    d: float | None = None
    w: float | None = None
    r: float | None = None
    phi: float | None = None
    params: int | None = None
    flops: int | None = None
    flops_ratio: float | None = None
    flops_paper_res: int | None = None
    paper_ratio: float | None = None
    coefficients: str = ""            # where a compound row's alpha, beta, gamma came from
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(model=self.id, base=self.row.base, method=self.row.method, label=self.row.label, d=self.d,
                    w=self.w, r=self.r, phi=self.phi,
                    resolution=self.spec.resolution if self.spec is not None else None, params=self.params,
                    flops=self.flops, flops_ratio=self.flops_ratio, flops_paper_res=self.flops_paper_res,
                    paper_flops=self.row.paper_flops, paper_ratio=self.paper_ratio,
                    paper_top1=self.row.paper_top1, coefficients=self.coefficients, note=self.note)


MODEL_COLUMNS = ["model", "base", "method", "label", "d", "w", "r", "phi", "resolution", "params", "flops",
                 "flops_ratio", "flops_paper_res", "paper_flops", "paper_ratio", "paper_top1", "coefficients",
                 "note"]


@dataclass(frozen=True)
class Coefficients:
    alpha: float
    beta: float
    gamma: float
    source: str                       # 'paper', a config, or the grid run it came from


def proxy_base(name: str, resolution: int, num_classes: int, keep_maps: bool = False):  # noqa: ANN201 - NetworkSpec
    """The base at the proxy resolution (with its early strides adapted under ``keep_maps``)."""
    from ..net.bases import get_base

    base = get_base(name).replace(num_classes=num_classes)
    if keep_maps:
        from ..net.proxy import keep_maps as adapt

        return adapt(base, resolution)[0]
    return base.replace(resolution=resolution)


def plan(settings: ReproduceSettings, num_classes: int,
         coefficients: Mapping[str, Coefficients] | None = None) -> list[Model]:
    """Build and count every row.  Compound rows whose base's coefficients are not known yet
    (a search still to run) are listed with the FLOPs they will be fitted to and no spec."""
    from ..net.bases import get_base
    from ..measure.cost import count_cost
    from ..net.scaling import scale

    exp = settings.experiment
    known = dict(coefficients or {})
    for base, coeff in exp.coefficients.items():
        if isinstance(coeff, dict) and base not in known:
            known[base] = Coefficients(coeff["alpha"], coeff["beta"], coeff["gamma"], "experiment file")
    models: list[Model] = []
    by_base: dict[str, list[Model]] = {}
    for i, row in enumerate(exp.rows):
        model = Model(id=i, row=row)
        models.append(model)
        by_base.setdefault(row.base, []).append(model)
    for base, group in by_base.items():
        proxy = proxy_base(base, settings.resolution, num_classes, settings.keep_maps)
        base_flops = count_cost(proxy).flops
        full = get_base(base)
        paper_base = next((m.row.paper_flops for m in group if m.row.method == "baseline"), None)

        def finish(m: Model, d: float, w: float, r: float, spec: Any) -> None:
            cost = count_cost(spec)
            m.spec, m.d, m.w, m.r = spec, d, w, r
            m.params, m.flops, m.flops_ratio = cost.params, cost.flops, cost.flops / base_flops
            if m.row.paper_flops is not None:  # the paper's rows, counted as the paper counts them too
                m.flops_paper_res = count_cost(scale(full, d, w, r)).flops

        for m in group:
            row = m.row
            if row.phi is None and row.match is None:
                finish(m, row.d, row.w, row.r, scale(proxy, row.d, row.w, row.r))
        singles = {kind: [m.flops for m in group if m.row.method in SINGLES and m.flops
                          and (kind == "singles" or m.row.paper_flops is not None or m.row.paper_top1 is not None)]
                   for kind in MATCHES}
        for m in group:
            row = m.row
            if row.method != "compound" or (row.phi is None and row.match is None):
                continue
            if row.match and not singles[row.match]:
                raise ExperimentError(f"{exp.source}: bases.{base}: a 'match: {row.match}' compound row needs "
                                      f"depth, width or resolution rows{' with paper figures' if row.match == 'paper' else ''}"
                                      f" to match")
            matched = singles.get(row.match or "", [])
            target = base_flops * PHI_TARGET ** row.phi if row.phi is not None else sum(matched) / len(matched)
            coeff = known.get(base)
            if coeff is None:
                m.flops, m.flops_ratio = int(round(target)), target / base_flops
                m.note = "coefficients from a phi = 1 grid search, run before training"
                continue
            if row.phi is not None:
                phi, (d, w, r, spec) = row.phi, _fitted(proxy, coeff, row.phi, target)
            else:
                phi, (d, w, r, spec) = _match_phi(proxy, coeff, target, base_flops)
            finish(m, d, w, r, spec)
            m.phi = phi
            m.coefficients = (f"alpha={coeff.alpha:g} beta={coeff.beta:g} gamma={coeff.gamma:g} "
                              f"({coeff.source})")
            off = m.flops / target - 1
            if abs(off) > MATCH_TOLERANCE:
                m.note = (f"measures {off:+.1%} from its FLOPs target {target:,.0f}: rounding leaves no "
                          f"resolution closer")
        compound = next((m for m in group if m.row.method == "compound" and m.spec is not None), None)
        for m in group:
            if m.row.method != "strategy" or m.row.match is None:
                continue
            if compound is None:
                if not any(c.row.method == "compound" for c in group):
                    raise ExperimentError(f"{exp.source}: bases.{base}: a 'match: {m.row.match}' strategy row needs "
                                          f"a compound row to match")
                m.note = f"matched to the compound row's {m.row.match} once its coefficients are known"
                continue
            threads = max(1, round(settings.backend.cpus_per_trial))
            s, (d, w, r, spec), m.note = match_strategy(proxy, m.row.strategy, compound.spec, m.row.match, threads)
            finish(m, d, w, r, spec)
        for m in group:
            if paper_base and m.row.paper_flops:
                m.paper_ratio = m.row.paper_flops / paper_base
    return models


MATCH_STEPS = 10   # halvings of the bracket in log s a matched strategy row may take


def match_strategy(proxy: Any, strategy: str, target: Any, kind: str,
                   threads: int = 1) -> tuple[float, tuple[float, float, float, Any], str]:
    """The scale s of ``strategy`` whose network's measured FLOPs (``kind`` 'flops') or latency
    ('latency': batch 1 on the CPU at ``threads`` threads, measure/latency.py) is closest to
    ``target``'s.  Rounding makes cost a step function of s (at 32 px one pixel more can triple
    MobileNetV2's FLOPs), so s is bracketed from the target's FLOPs ratio and the bracket halved
    in log s; the closest s seen wins.  Returns s, (d, w, r, spec) and a note naming both costs."""
    from ..measure.cost import count_cost
    from ..measure.latency import measure_latency
    from ..net.scaling import scale, strategy_factors

    def cost(spec: Any) -> float:
        return float(count_cost(spec).flops) if kind == "flops" else measure_latency(spec, threads=threads).median_ms

    goal = cost(target)
    seen: dict[float, tuple[float, tuple[float, float, float, Any]]] = {}

    def at(s: float) -> float:
        if s not in seen:
            d, w, r = strategy_factors(strategy, s)
            spec = scale(proxy, d, w, r)
            seen[s] = (cost(spec), (d, w, r, spec))
        return seen[s][0]

    lo, hi = 1.0, max(1.0, count_cost(target).flops / count_cost(proxy).flops)
    if at(lo) < goal:
        while at(hi) < goal and hi < 1e4:
            lo, hi = hi, hi * 2
        for _ in range(MATCH_STEPS):
            mid = math.sqrt(lo * hi)
            if at(mid) < goal:
                lo = mid
            else:
                hi = mid
    best = min(seen, key=lambda k: abs(math.log(seen[k][0] / goal)))
    value, fitted = seen[best]
    unit = (lambda v: f"{v:,.0f} FLOPs") if kind == "flops" else (lambda v: f"{v:.3g} ms at batch 1, {threads} thread(s)")
    return best, fitted, (f"s = {best:g} matched to the compound row's {kind}: {unit(value)} against {unit(goal)} "
                          f"({value / goal - 1:+.1%})")


def _fitted(proxy: Any, coeff: Coefficients, phi: float, target: float) -> tuple[float, float, float, Any]:
    """d = alpha^phi, w = beta^phi, and the resolution whose measured FLOPs are closest to ``target``."""
    from ..search.fit import fit_resolution
    from ..net.scaling import compound, scale

    d, w, _ = compound(coeff.alpha, coeff.beta, coeff.gamma, phi)
    base_flops = target / max(PHI_TARGET ** phi, 1.0)
    resolution, _ = fit_resolution(proxy, d, w, target, gamma_max=max(4.0, 2 * math.sqrt(target / base_flops)))
    r = resolution / proxy.resolution
    return d, w, r, scale(proxy, d, w, r)


def _match_phi(proxy: Any, coeff: Coefficients, target: float, base_flops: float,
               step: float = 0.05, above: float = 0.6) -> tuple[float, tuple[float, float, float, Any]]:
    """Raise phi until the fitted network measures within MATCH_TOLERANCE of ``target``.

    Starts from log2(target / base) (each phi doubles FLOPs) and walks both ways in steps
    of ``step``, down to phi = 0 and up to ``above`` past the start: depth rounds per
    stage and resolution in whole pixels, so a phi can overshoot where a smaller one lands
    on target (at 32 px, one pixel more takes EfficientNet-B0 from 1x to 2.2x, so the
    match may sit well below the start).  Returns the first phi within tolerance, nearest
    the start, else the closest found.
    """
    from ..measure.cost import count_cost

    start = math.log(target / base_flops) / math.log(PHI_TARGET)
    best: tuple[float, float, tuple[float, float, float, Any]] | None = None
    for k in range(int(math.ceil(max(start, above) / step)) + 1):
        for phi in ((start,) if k == 0 else (start - k * step, start + k * step)):
            if phi < 0 or phi > start + above + 1e-9:
                continue
            fitted = _fitted(proxy, coeff, phi, target)
            off = abs(count_cost(fitted[3]).flops / target - 1)
            if best is None or off < best[0]:
                best = (off, phi, fitted)
        if best is not None and best[0] <= MATCH_TOLERANCE:
            break
    assert best is not None
    return round(best[1], 4), best[2]
