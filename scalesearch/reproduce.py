"""The paper's headline experiment as a study: one dimension at a time against compound scaling.

An *experiment* is a declarative file (``scalesearch/configs/table3.yaml``,
``figure8.yaml``; ``experiments/`` links to them): bases, one row per (method, d, w, r) or
per phi, the paper's FLOPs and top-1 for each row, named budgets and the training recipe.
``reproduce(settings)`` is what `scalesearch reproduce` runs:

1. build every row from its base at the budget's proxy resolution with the scaler, and
   count it (``plan``).  Compound rows take explicit (d, w, r), or a phi of the base's
   coefficients (d = alpha^phi, w = beta^phi, resolution fitted so measured FLOPs are
   2^phi times the base's), or ``match: singles`` (phi raised until measured FLOPs match
   the mean of the base's single-dimension rows; ``match: paper``: of those with the
   paper's figures).  Coefficients the paper does not state
   come from a phi = 1 grid search at the same proxy (``run_grid``, into OUT/grid-BASE) or
   a finished grid run (``--coefficients RUN_DIR``);
2. make a study of rows x seeds and run it with a backend (``study.run_study``): the same
   recipe and seeds for every row, resumable like ``grid``;
3. summarise per row (mean and seed-to-seed std of top-1), compare compound with every
   single-dimension row of its base at equal FLOPs (``study.compare``: separable only when
   the gap exceeds twice the pooled spread), and write NAME.csv, NAME.md and the curves.

It returns a ``ReproduceResult`` and reports progress as events; it prints nothing.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import UserError
from .settings import BackendSettings, DataSettings, SettingsError, flatten
from .study import (COMPLETE, CONFIG, TRIALS, RunDir, Summary, TrialContext, TrialFinished, TrialRow, TrialSpec, Verdict, compare,
                    summarize)

CONFIGS = Path(__file__).resolve().parent / "configs"
EXPERIMENTS = ("table3", "figure8")
METHODS = ("baseline", "depth", "width", "resolution", "compound")
SINGLES = ("depth", "width", "resolution")
BUDGET_FIELDS = ("resolution", "keep_maps", "train_subset", "val_subset", "epochs", "images", "batch_size", "seeds")
MODELS = "models.csv"
MATCHES = ("singles", "paper")  # what a 'match' compound row matches the FLOPs of
MATCH_TOLERANCE = 0.05     # a matched compound row must measure within 5% of the single rows' mean
PHI_TARGET = 2.0           # FLOPs ratio per unit of phi, as the grid's default target (2x)


class ExperimentError(UserError):
    """An experiment file is malformed; the message names the file and the field."""


# -- the experiment file ----------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One model of an experiment: a base scaled by one method."""

    base: str
    method: str
    d: float = 1.0
    w: float = 1.0
    r: float = 1.0
    phi: float | None = None          # compound: a point of the base's family
    match: str | None = None          # compound: 'singles' (FLOPs of the single-dimension rows),
    #                                   'paper' (of those that carry the paper's figures)
    paper_flops: float | None = None
    paper_top1: float | None = None   # percent, as the paper prints it

    @property
    def label(self) -> str:
        if self.method == "baseline":
            return "baseline"
        if self.method == "compound":
            if self.phi is not None:
                return f"compound phi={self.phi:g}"
            if self.match:
                return "compound (matched FLOPs)"
            return f"compound d={self.d:g} w={self.w:g} r={self.r:g}"
        value = {"depth": self.d, "width": self.w, "resolution": self.r}[self.method]
        return f"{self.method} {self.method[0]}={value:g}"


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    seed: int
    budgets: dict[str, dict[str, Any]]
    train: dict[str, Any]
    search: dict[str, Any]
    coefficients: dict[str, Any]      # base -> {alpha, beta, gamma} or 'search'
    rows: tuple[Row, ...]
    source: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def bases(self) -> list[str]:
        return list(dict.fromkeys(r.base for r in self.rows))


def experiment_path(name: str) -> Path:
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment '{name}' (built in: {', '.join(EXPERIMENTS)}; or pass your own "
                              f"file with --config)")
    return CONFIGS / f"{name}.yaml"


def load_experiment(source: str | Path) -> Experiment:
    """An experiment from a built-in name (table3, figure8) or a YAML/JSON file, validated field by field."""
    path = Path(source) if str(source) not in EXPERIMENTS else experiment_path(str(source))
    if not path.is_file():
        if path.suffix == "" and len(path.parts) == 1:  # a name, not a path: say which names exist
            experiment_path(str(source))
        raise ExperimentError(f"experiment file '{path}' does not exist")
    from .settings import read_data_file

    return parse_experiment(read_data_file(path, "experiment file", ExperimentError), str(path))


def _number(value: Any, where: str, *, positive: bool = True, at_least: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExperimentError(f"{where} must be a finite number (got {value!r})")
    if positive and value <= 0:
        raise ExperimentError(f"{where} must be > 0 (got {value!r})")
    if at_least is not None and value < at_least:
        raise ExperimentError(f"{where} must be >= {at_least:g} (got {value!r})")
    return float(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ExperimentError(f"{where} must be a mapping (got {value!r:.80})")
    return dict(value)


def _unknown(keys: Any, allowed: Sequence[str], where: str) -> None:
    extra = [k for k in keys if k not in allowed]
    if extra:
        raise ExperimentError(f"{where}: unknown field '{extra[0]}' (known: {', '.join(allowed)})")


def parse_experiment(data: Any, source: str = "experiment") -> Experiment:
    from .bases import get_base
    from .train import TrainConfig

    top = _mapping(data, source)
    _unknown(top, ("name", "title", "seed", "budgets", "train", "search", "bases"), source)
    for key in ("name", "budgets", "bases"):
        if key not in top:
            raise ExperimentError(f"{source}: field '{key}' is missing")
    name = top["name"]
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ExperimentError(f"{source}: 'name' must be a word such as table3 (got {name!r})")
    seed = top.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ExperimentError(f"{source}: 'seed' must be an integer from 0 to 2^31-1 (got {seed!r})")
    budgets = _mapping(top["budgets"], f"{source}: 'budgets'")
    if not budgets:
        raise ExperimentError(f"{source}: 'budgets' names no preset")
    for bname, preset in budgets.items():
        where = f"{source}: budgets.{bname}"
        preset = _mapping(preset, where)
        recipe = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "device", "threads")]
        _unknown(preset, list(BUDGET_FIELDS) + [k for k in recipe if k not in BUDGET_FIELDS], where)
        if "resolution" not in preset:
            raise ExperimentError(f"{where}: field 'resolution' is missing (the proxy base resolution)")
        budgets[bname] = preset
    train = _mapping(top.get("train"), f"{source}: 'train'")
    try:
        TrainConfig(**train)
    except TypeError as exc:
        raise ExperimentError(f"{source}: 'train': {exc}") from None
    except UserError as exc:
        raise ExperimentError(f"{source}: 'train': {exc}") from None
    search = _mapping(top.get("search"), f"{source}: 'search'")
    bases = _mapping(top["bases"], f"{source}: 'bases'")
    if not bases:
        raise ExperimentError(f"{source}: 'bases' names no base")
    rows: list[Row] = []
    coefficients: dict[str, Any] = {}
    for base, entry in bases.items():
        where = f"{source}: bases.{base}"
        try:
            get_base(str(base))
        except UserError as exc:
            raise ExperimentError(f"{where}: {exc}") from None
        entry = _mapping(entry, where)
        _unknown(entry, ("coefficients", "rows"), where)
        coeff = entry.get("coefficients")
        if coeff is not None:
            if coeff == "search":
                coefficients[base] = "search"
            else:
                coeff = _mapping(coeff, f"{where}.coefficients")
                _unknown(coeff, ("alpha", "beta", "gamma"), f"{where}.coefficients")
                coefficients[base] = {k: _number(coeff.get(k), f"{where}.coefficients.{k}", at_least=1.0)
                                      for k in ("alpha", "beta", "gamma")}
        raw_rows = entry.get("rows")
        if not isinstance(raw_rows, list) or not raw_rows:
            raise ExperimentError(f"{where}: field 'rows' is missing or empty (a list of rows)")
        for i, raw in enumerate(raw_rows):
            rows.append(_parse_row(str(base), raw, f"{where}.rows[{i}]", coefficients.get(base)))
        if not any(r.method == "baseline" for r in rows if r.base == base):
            raise ExperimentError(f"{where}: needs a row with method: baseline (the 1x point every curve starts from)")
    return Experiment(name=name, title=str(top.get("title") or name), seed=seed, budgets=budgets, train=train,
                      search=search, coefficients=coefficients, rows=tuple(rows), source=source, raw=top)


def _parse_row(base: str, raw: Any, where: str, coefficients: Any) -> Row:
    raw = _mapping(raw, where)
    _unknown(raw, ("method", "d", "w", "r", "phi", "match", "paper_gflops", "paper_top1"), where)
    method = raw.get("method")
    if method not in METHODS:
        raise ExperimentError(f"{where}: 'method' must be one of {', '.join(METHODS)} (got {method!r})")
    values = {k: _number(raw[k], f"{where}.{k}", at_least=1.0) for k in ("d", "w", "r") if k in raw}
    extra = {"depth": "d", "width": "w", "resolution": "r"}
    if method == "baseline" and any(v != 1 for v in values.values()):
        raise ExperimentError(f"{where}: a baseline row scales nothing (d = w = r = 1)")
    if method in extra:
        own = extra[method]
        if own not in raw:
            raise ExperimentError(f"{where}: a {method} row needs field '{own}'")
        others = [k for k in values if k != own and values[k] != 1]
        if others:
            raise ExperimentError(f"{where}: a {method} row scales only '{own}' (got {others[0]} = {values[others[0]]:g})")
    phi = raw.get("phi")
    match = raw.get("match")
    if method == "compound":
        ways = sum([bool(values), phi is not None, match is not None])
        if ways != 1:
            raise ExperimentError(f"{where}: a compound row needs exactly one of d/w/r, phi or match")
        if phi is not None:
            phi = _number(phi, f"{where}.phi", positive=False)
            if phi < 0:
                raise ExperimentError(f"{where}.phi must be >= 0 (got {phi!r})")
        if match is not None and match not in MATCHES:
            raise ExperimentError(f"{where}.match must be 'singles' or 'paper' (got {match!r})")
        if (phi is not None or match is not None) and coefficients is None:
            raise ExperimentError(f"{where}: a compound row by phi or match needs the base's 'coefficients' "
                                  f"(alpha, beta, gamma, or 'search')")
    elif phi is not None or match is not None:
        raise ExperimentError(f"{where}: 'phi' and 'match' belong to compound rows")
    paper_flops = (1e9 * _number(raw["paper_gflops"], f"{where}.paper_gflops")
                   if raw.get("paper_gflops") is not None else None)
    paper_top1 = (_number(raw["paper_top1"], f"{where}.paper_top1") if raw.get("paper_top1") is not None else None)
    if paper_top1 is not None and paper_top1 > 100:
        raise ExperimentError(f"{where}.paper_top1 is a percentage (got {paper_top1!r})")
    return Row(base=base, method=method, phi=phi, match=match, paper_flops=paper_flops, paper_top1=paper_top1,
               **values)


# -- settings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReproduceSettings:
    """Every setting of a reproduction; config.json holds them all."""

    experiment: Experiment
    budget: str
    resolution: int
    seeds: int
    data: DataSettings
    train: Any                        # train.TrainConfig
    backend: BackendSettings
    out: str
    coefficients: tuple[str, ...] = ()   # finished grid runs to take compound coefficients from
    keep_maps: bool = False              # the proxy keeps the base's last feature map (proxy.py)

    @property
    def seed(self) -> int:
        return self.experiment.seed

    def as_dict(self) -> dict[str, Any]:
        from .settings import recipe_fields

        return dict(experiment=self.experiment.raw, experiment_file=self.experiment.source, budget=self.budget,
                    resolution=self.resolution, seeds=self.seeds, data=dataclasses.asdict(self.data),
                    train={f.name: getattr(self.train, f.name) for f in recipe_fields()},
                    backend=dataclasses.asdict(self.backend), out=self.out, coefficients=list(self.coefficients),
                    keep_maps=self.keep_maps)

    def identity(self) -> dict[str, Any]:
        """What decides a finished trial's result (resume compares these; seeds and backend may change)."""
        data = self.as_dict()
        raw = data["experiment"]
        return dict(bases=raw.get("bases"), search=raw.get("search"), seed=self.seed, resolution=self.resolution,
                    dataset=self.data.dataset, train_subset=self.data.train_subset, val_subset=self.data.val_subset,
                    train=data["train"], coefficients=data["coefficients"], keep_maps=self.keep_maps)


def make_settings(experiment: str | Path | Experiment, budget: str = "smoke", *, dataset: str | None = None,
                  seeds: int | None = None, device: str | None = None, backend: str | None = None,
                  address: str | None = None, cpus_per_trial: float | None = None,
                  gpus_per_trial: float | None = None, cache_dir: str | None = None, out: str | None = None,
                  coefficients: Sequence[str] = (), optimizer: str | None = None,
                  residual_init: str | None = None, keep_maps: bool | None = None,
                  recipe: Mapping[str, Any] | None = None,
                  backend_settings: Mapping[str, Any] | None = None) -> ReproduceSettings:
    """Settings of a reproduction: the experiment's budget preset, then the given options on top
    (``recipe``, and ``optimizer``/``residual_init``, replace the experiment's ``train``
    fields; ``backend_settings`` adds BackendSettings fields by name)."""
    from .train import TrainConfig

    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if budget not in exp.budgets:
        raise ExperimentError(f"--budget '{budget}' is not a preset of {exp.name} (presets: "
                              f"{', '.join(exp.budgets)})")
    preset = dict(exp.budgets[budget])
    resolution = preset.pop("resolution")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 8 <= resolution <= 4096:
        raise ExperimentError(f"{exp.source}: budgets.{budget}.resolution must be an integer from 8 to 4096 "
                              f"(got {resolution!r})")
    preset_keep_maps = preset.pop("keep_maps", False)
    keep_maps = preset_keep_maps if keep_maps is None else keep_maps
    if not isinstance(keep_maps, bool):
        raise ExperimentError(f"{exp.source}: budgets.{budget}.keep_maps must be true or false (got {keep_maps!r})")
    n_seeds = seeds if seeds is not None else preset.pop("seeds", 1)
    preset.pop("seeds", None)
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or not 1 <= n_seeds <= 100:
        raise SettingsError(f"--seeds must be an integer from 1 to 100 (got {n_seeds!r})")
    data = DataSettings(dataset=dataset or "synthetic", train_subset=preset.pop("train_subset", None),
                        val_subset=preset.pop("val_subset", None), cache_dir=cache_dir)
    try:
        given = {k: v for k, v in (("optimizer", optimizer), ("residual_init", residual_init)) if v is not None}
        train = TrainConfig(**{**exp.train, **preset, **dict(recipe or {}), **given})
    except TypeError as exc:
        raise ExperimentError(f"{exp.source}: budgets.{budget}: {exc}") from None
    flags = dict(backend=backend, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                 device=device)
    flags.update({k: v for k, v in (backend_settings or {}).items() if v is not None})
    try:
        backend_settings_checked = BackendSettings(**{k: v for k, v in flags.items() if v is not None})
    except TypeError as exc:
        raise SettingsError(f"backend settings: {exc}") from None
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    return ReproduceSettings(experiment=exp, budget=budget, resolution=resolution, seeds=n_seeds, data=data,
                             train=train, backend=backend_settings_checked,
                             out=out or str(Path("runs") / f"{exp.name}-{budget}-{stamp}"),
                             coefficients=tuple(str(c) for c in coefficients), keep_maps=keep_maps)


# -- the plan: every row built and counted ---------------------------------------------------

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
    from .bases import get_base

    base = get_base(name).replace(num_classes=num_classes)
    if keep_maps:
        from .proxy import keep_maps as adapt

        return adapt(base, resolution)[0]
    return base.replace(resolution=resolution)


def plan(settings: ReproduceSettings, num_classes: int,
         coefficients: Mapping[str, Coefficients] | None = None) -> list[Model]:
    """Build and count every row.  Compound rows whose base's coefficients are not known yet
    (a search still to run) are listed with the FLOPs they will be fitted to and no spec."""
    from .bases import get_base
    from .cost import count_cost
    from .scaling import scale

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
            if row.phi is None and row.match is None:
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
        for m in group:
            if paper_base and m.row.paper_flops:
                m.paper_ratio = m.row.paper_flops / paper_base
    return models


def _fitted(proxy: Any, coeff: Coefficients, phi: float, target: float) -> tuple[float, float, float, Any]:
    """d = alpha^phi, w = beta^phi, and the resolution whose measured FLOPs are closest to ``target``."""
    from .gridspace import fit_resolution
    from .scaling import compound, scale

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
    from .cost import count_cost

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


# -- running ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    """The plan is counted: what will train."""

    models: list[Model]
    seeds: int
    trials: int
    todo: int
    seconds: float | None


@dataclass(frozen=True)
class SearchStarted:
    """A phi = 1 grid search for a base's compound coefficients starts (or resumes)."""

    base: str
    out: Path


@dataclass
class BaseVerdict:
    base: str
    compound: int | None                      # the model compared (the paper's compound row)
    against: list[tuple[int, Verdict]]        # (model, verdict) per single-dimension row
    text: str


@dataclass
class ReproduceResult:
    out: Path
    models: list[Model]
    rows: list[TrialRow] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    verdicts: list[BaseVerdict] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def reproduce(settings: ReproduceSettings, *, dry_run: bool = False, on_event: Callable[[Any], None] | None = None,
              progress: bool = True, backend: Any = None, estimate: bool = True) -> ReproduceResult:
    """The whole experiment; see the module docstring.  ``backend`` overrides the settings' one."""
    from .backends import get_backend
    from .trial import load_dataset

    emit = on_event or (lambda event: None)
    exp = settings.experiment
    backend = backend or get_backend(settings.backend, settings.seed)
    backend.check()
    from .grid import check_classifiable

    run = RunDir(settings.out)
    run.check_usable()
    if run.exists:                                # refuses before anything is touched
        run.check_free()
        run.verify()
        _check_same(run, settings)
    given = {base: _coefficients_from_run(path) for base, path in _given_runs(settings).items()}
    # Coefficients a finished search of this run found stay fixed: rows trained with them keep meaning.
    found = _found_coefficients(run) if run.exists else {}
    given.update({b: c for b, c in found.items() if b not in given})
    dataset = load_dataset(settings.data, settings.seed, progress)
    check_classifiable(dataset, settings.data)
    models = plan(settings, dataset.num_classes, given)
    if dry_run and (run / TRIALS).is_file():
        raise UserError(f"--out '{run.path}' holds trained results, which a dry run would replace in "
                        f"{exp.name}.csv; choose another --out for the dry run")
    run.create_and_lock()
    try:
        def write_config() -> None:
            run.write_run_json(CONFIG, {"kind": "reproduce", "settings": settings.as_dict(),
                                        "identity": settings.identity(), "num_classes": dataset.num_classes,
                                        "dataset_name": dataset.name,
                                        "coefficients_found": {b: dataclasses.asdict(c) for b, c in found.items()}})

        write_config()
        result = ReproduceResult(out=run.path, models=models)
        if dry_run:
            run.write_run_csv(MODELS, [m.as_dict() for m in models], MODEL_COLUMNS)
            run.write_run_csv(f"{exp.name}.csv", [m.as_dict() for m in models], MODEL_COLUMNS)
            result.files = [run / CONFIG, run / MODELS, run / f"{exp.name}.csv"]
            return result
        searched = [b for b in exp.bases if exp.coefficients.get(b) == "search" and b not in given]
        for base in searched:
            given[base] = found[base] = _search(settings, base, run, backend, emit, progress, estimate)
            write_config()
        if searched:
            models = result.models = plan(settings, dataset.num_classes, given)
        run.write_run_csv(MODELS, [m.as_dict() for m in models], MODEL_COLUMNS)
        # The paper's rows first (they carry the verdict), then the rest of the curves; seed-major
        # within each, so a run stopped early already holds whole comparisons.
        paper = [m for m in models if m.row.paper_top1 is not None]
        rest = [m for m in models if m.row.paper_top1 is None]
        trials = [TrialSpec(candidate=m.id, seed=settings.seed + k, spec=m.spec, recipe=settings.train,
                            params=m.params or 0, flops=m.flops or 0, flops_ratio=m.flops_ratio or 1.0)
                  for group in (paper, rest)
                  for k in range(settings.seeds) for m in group]
        from .study import run_study

        context = TrialContext(data=settings.data, device=settings.backend.device,
                               threads=max(1, int(settings.backend.cpus_per_trial)), progress=progress)
        finished = run.finished()
        todo = [t for t in trials if t.id not in finished]
        seconds = None
        if estimate and todo:
            from .trial import estimate_seconds

            seconds = estimate_seconds(todo, context, settings.seed)
        emit(Planned(models=models, seeds=settings.seeds, trials=len(trials), todo=len(todo), seconds=seconds))

        def write(rows: Sequence[TrialRow]) -> list[Path]:
            summaries = summarize(rows)
            found = verdicts(models, summaries, dataset.n_val)
            result.summaries, result.verdicts = summaries, found
            return write_outputs(run, settings, models, rows, summaries, found, dataset.name)

        def on_study_event(event: Any) -> None:
            emit(event)
            if isinstance(event, TrialFinished):  # the tables and curves as they stand, after every trial
                write(event.rows)

        result.rows = run_study(trials, run, backend, context, on_study_event)
        result.files = write(result.rows)
        healthy = [r for r in result.rows if r.state == COMPLETE and r.top1 is not None]
        if result.rows and not healthy:  # as grid: nothing to compare is a failed run, not a result
            raise UserError(f"no row trained healthily in {run.path} (all {len(result.rows)} trials diverged, were "
                            f"pruned or failed: see {exp.name}.md and trials.csv); raise the budget, or try "
                            f"--optimizer lars")
        return result
    finally:
        run.release()


def _search(settings: ReproduceSettings, base: str, run: RunDir, backend: Any, emit: Callable[[Any], None],
            progress: bool, estimate: bool) -> Coefficients:
    """A phi = 1 grid search for ``base`` at the reproduction's proxy and budget, in OUT/grid-BASE."""
    from .grid import run_grid
    from .settings import build_settings

    exp = settings.experiment
    out = run.path / f"grid-{base}"
    flat = dict(base=base, resolution=settings.resolution, keep_maps=settings.keep_maps, seed=settings.seed, seeds=settings.seeds,
                dataset=settings.data.dataset, train_subset=settings.data.train_subset,
                val_subset=settings.data.val_subset, cache_dir=settings.data.cache_dir, out=str(out))
    flat.update({f.name: getattr(settings.train, f.name) for f in _recipe()})
    flat.update(dataclasses.asdict(settings.backend))
    flat.update(exp.search)
    flat["early_stop"] = False
    grid_settings = build_settings({}, flat, source=f"{exp.source}: search")
    emit(SearchStarted(base=base, out=out))
    found = run_grid(grid_settings, on_event=emit, progress=progress, backend=backend, estimate=estimate)
    best = found.best or {}
    return Coefficients(best["alpha"], best["beta"], best["gamma"], f"grid run {out}")


def _recipe() -> list[dataclasses.Field]:
    from .settings import recipe_fields

    return recipe_fields()


def _given_runs(settings: ReproduceSettings) -> dict[str, Path]:
    """--coefficients RUN_DIR, keyed by the base each run searched."""
    out: dict[str, Path] = {}
    for text in settings.coefficients:
        path = Path(text)
        config = path / CONFIG
        if not config.is_file():
            raise UserError(f"--coefficients '{path}' is not a grid run directory (no {CONFIG})")
        base = flatten(RunDir(path).read_config().get("settings") or {}).get("base")
        if base not in settings.experiment.bases:
            raise UserError(f"--coefficients '{path}' searched base {base!r}, which is not a base of "
                            f"{settings.experiment.name} ({', '.join(settings.experiment.bases)})")
        if base in out:
            raise UserError(f"--coefficients: two runs for base {base!r} ({out[base]} and {path})")
        out[base] = path
    return out


def _found_coefficients(run: RunDir) -> dict[str, Coefficients]:
    """The coefficients earlier searches of this run found (config.json's coefficients_found)."""
    saved = run.read_config().get("coefficients_found") or {}
    try:
        return {str(b): Coefficients(float(c["alpha"]), float(c["beta"]), float(c["gamma"]), str(c["source"]))
                for b, c in saved.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"--out '{run.path}': {CONFIG} has damaged coefficients_found; choose another --out") from None


def _coefficients_from_run(path: Path) -> Coefficients:
    import json

    best = path / "best.json"
    try:
        data = json.loads(best.read_text())
        return Coefficients(float(data["alpha"]), float(data["beta"]), float(data["gamma"]), f"grid run {path}")
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--coefficients '{path}' has no readable best.json: is the search finished?") from None


def _check_same(run: RunDir, settings: ReproduceSettings) -> None:
    """Refuse a run directory that holds another reproduction (settings that change results)."""
    import json

    config = run.read_config()
    if config.get("kind") != "reproduce" or not isinstance(config.get("identity"), dict):
        raise UserError(f"--out '{run.path}' holds something other than a reproduction; choose another --out")
    theirs = dict(config["identity"])
    theirs.setdefault("keep_maps", False)  # written before the field existed
    ours = json.loads(json.dumps(settings.identity(), default=str))
    if isinstance(theirs.get("train"), dict):  # a recipe field added since that run holds its default
        from .settings import BEFORE_FIELDS, recipe_fields

        defaults = json.loads(json.dumps({f.name: BEFORE_FIELDS.get(f.name, f.default) for f in recipe_fields()},
                                         default=str))
        theirs["train"] = {**{k: v for k, v in defaults.items() if k in ours["train"]}, **theirs["train"]}
    diff = [k for k in ours if ours[k] != theirs.get(k)]
    if diff:
        raise UserError(f"--out '{run.path}' holds a different reproduction ({diff[0]} differs); choose another "
                        f"--out to keep its results")


# -- comparing and writing --------------------------------------------------------------------

def verdicts(models: Sequence[Model], summaries: Sequence[Summary], n_val: int | None = None) -> list[BaseVerdict]:
    """Per base and compound row: the paper's compound row, and any row matched to the single
    rows' FLOPs (``match``), against every single-dimension paper row, over seeds."""
    by_id = {s.candidate: s for s in summaries}
    out = []
    for base in dict.fromkeys(m.row.base for m in models):
        group = [m for m in models if m.row.base == base]
        paper = [m for m in group if m.row.paper_top1 is not None] or group
        first = next((m for m in paper if m.row.method == "compound"), None)
        compound_rows = [m for m in group if m is first or (m.row.method == "compound" and m.row.match)]
        singles = [m for m in paper if m.row.method in SINGLES]
        if not compound_rows or not singles:
            continue
        for c in compound_rows:
            name = base if len(compound_rows) == 1 else f"{base} ({c.row.label})"
            cs = by_id.get(c.id)
            # A row with no trial yet (a run stopped early) is waiting, not failed: say which.
            waiting = [m for m in (c, *singles) if m.id not in by_id]
            pending = (f"not trained yet: {len(waiting)} of {len(singles) + 1} rows of this comparison "
                       f"(re-run the same command to resume)") if waiting else ""
            if cs is None:
                out.append(BaseVerdict(base, c.id, [], f"{name}: {pending}; no comparison yet"))
                continue
            if not cs.ranked:
                out.append(BaseVerdict(base, c.id, [], f"{name}: the compound row did not train healthily "
                                                       f"(see trials.csv); no comparison"))
                continue
            against = []
            for m in singles:
                s = by_id.get(m.id)
                if s is not None and s.ranked:
                    against.append((m.id, compare(cs, s, m.row.label, n_val)))
            if not against and pending:
                text = f"{name}: {pending}; no comparison yet"
            else:
                text = _verdict_text(name, c, against, models) + (f"; {pending}" if pending else "")
            out.append(BaseVerdict(base, c.id, against, text))
    return out


def _verdict_text(base: str, c: Model, against: list[tuple[int, Verdict]], models: Sequence[Model]) -> str:
    labels = {m.id: m.row.label for m in models}
    if not against:
        return f"{base}: no single-dimension row trained healthily; no comparison"
    parts = [f"{labels[i]} {100 * v.gap:+.2f}" for i, v in against]
    ratios = {m.id: m.flops_ratio for m in models}
    dearer = [labels[i] for i, _ in against if ratios.get(c.id) and ratios.get(i) and ratios[c.id] > 1.1 * ratios[i]]
    cost = (f"; at this proxy compound costs {ratios[c.id]:.2f}x the baseline's FLOPs, over 10% more than "
            f"{', '.join(dearer)}, so those comparisons favour it" if dearer else "")
    spreads = [v.spread for _, v in against]
    if any(s is None for s in spreads):
        return (f"{base}: compound minus each single-dimension row (points): {', '.join(parts)}; one seed per "
                f"row, so the seed-to-seed spread is unknown: run with --seeds 2 or more to call it{cost}")
    spread = max(s for s in spreads if s is not None)
    if all(v.separable and v.gap > 0 for _, v in against):
        word = "compound beat every single-dimension row by more than twice the seed spread"
    elif all(v.separable and v.gap < 0 for _, v in against):
        word = "compound lost to every single-dimension row by more than twice the seed spread"
    else:
        wins = sum(1 for _, v in against if v.separable and v.gap > 0)
        losses = sum(1 for _, v in against if v.separable and v.gap < 0)
        word = (f"compound did not beat every single-dimension row beyond the noise ({wins} separable win(s), "
                f"{losses} separable loss(es), {len(against) - wins - losses} within noise)")
    binomial = " and the held-out set's binomial error" if any(v.binomial for _, v in against) else ""
    return (f"{base}: {word}; compound minus each row (points): {', '.join(parts)}; largest spread (pooled "
            f"seed-to-seed{binomial}) {100 * spread:.2f} points{cost}")


def result_rows(models: Sequence[Model], rows: Sequence[TrialRow], summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """NAME.csv: one row per (model, seed), then one summary row per model."""
    by_id = {s.candidate: s for s in summaries}
    out = []
    for m in models:
        base = m.as_dict()
        for r in sorted((r for r in rows if r.candidate == m.id), key=lambda r: r.seed):
            out.append(dict(base, kind="trial", seed=r.seed, state=r.state,
                            top1=100 * r.top1 if r.top1 is not None else None, loss=r.loss, seconds=r.seconds))
    for m in models:
        s = by_id.get(m.id)
        row = dict(m.as_dict(), kind="summary")
        if s is not None:
            mean, std = s.top1_mean, s.top1_std
            if not s.ranked:  # shown (hollow in the plot) but never compared: the mean over every seed
                scores = [r.top1 for r in s.rows if r.top1 is not None]
                mean = statistics.fmean(scores) if scores else None
                std = statistics.stdev(scores) if len(scores) > 1 else None
            row.update(top1_mean=100 * mean if mean is not None else None,
                       top1_std=100 * std if std is not None else None, n=len(s.rows),
                       diverged=s.diverged, seeds=" ".join(str(r.seed) for r in s.rows),
                       state="COMPLETE" if s.ranked else "DIVERGED" if s.diverged else "PRUNED")
        out.append(row)
    return out


RESULT_COLUMNS = ["kind", "model", "base", "method", "label", "d", "w", "r", "phi", "resolution", "params", "flops",
                  "flops_ratio", "flops_paper_res", "paper_flops", "paper_ratio", "paper_top1", "seed", "state",
                  "top1", "loss", "seconds", "top1_mean", "top1_std", "n", "diverged", "seeds", "coefficients",
                  "note"]


def markdown(settings: ReproduceSettings, models: Sequence[Model], summaries: Sequence[Summary],
             found: Sequence[BaseVerdict], dataset_name: str) -> str:
    """NAME.md: our FLOPs and top-1 beside the paper's, one table per base, a verdict per compound row compared."""
    exp = settings.experiment
    by_id = {s.candidate: s for s in summaries}
    recipe = settings.train
    lines = [f"# {exp.title}", "",
             f"Ours: {dataset_name}, budget `{settings.budget}` (proxy base resolution {settings.resolution} px"
             f"{', strides adapted to keep the native last feature map (keep_maps)' if settings.keep_maps else ''}, "
             f"{settings.data.train_subset or 'all'} training / {settings.data.val_subset or 'all'} held-out images, "
             f"{recipe.images or recipe.epochs} {'images' if recipe.images else 'epochs'}, batch {recipe.batch_size}), "
             f"seeds {settings.seed}..{settings.seed + settings.seeds - 1}; top-1 is the mean over seeds +/- the "
             f"sample standard deviation. The paper: ImageNet, 224 px and up, full training.", ""]
    verdict_of: dict[str, list[BaseVerdict]] = {}
    for v in found:
        verdict_of.setdefault(v.base, []).append(v)
    for base in exp.bases:
        group = [m for m in models if m.row.base == base]
        lines += [f"## {base}", "",
                  "| model | d | w | r | px | params | FLOPs (ours) | ratio | FLOPs at 224 px | paper FLOPs "
                  "| paper ratio | top-1 (ours, %) | paper top-1 (%) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in group:
            s = by_id.get(m.id)
            if s is None:
                score = "not trained"
            elif not s.ranked:
                score = f"DIVERGED ({s.diverged} of {s.diverged + s.n} seeds)"
            else:
                score = f"{100 * s.top1_mean:.2f}" + (f" +/- {100 * s.top1_std:.2f}" if s.top1_std is not None else "")
            lines.append(
                f"| {m.row.label} | {_f(m.d, '.3f')} | {_f(m.w, '.3f')} | {_f(m.r, '.3f')} | "
                f"{m.spec.resolution if m.spec is not None else '-'} | {_f(m.params, ',')} | {_f(m.flops, ',')} | "
                f"{_f(m.flops_ratio, '.2f', 'x')} | {_f(m.flops_paper_res and m.flops_paper_res / 1e9, '.2f', 'B')} | "
                f"{_f(m.row.paper_flops and m.row.paper_flops / 1e9, '.2f', 'B')} | {_f(m.paper_ratio, '.2f', 'x')} | "
                f"{score} | {_f(m.row.paper_top1, '.1f')} |")
        notes = [f"{m.row.label}: {m.note}" for m in group if m.note]
        if notes:
            lines += [""] + [f"Note, {n}." for n in notes]
        coeffs = {m.coefficients for m in group if m.coefficients}
        if coeffs:
            lines += ["", "Compound coefficients: " + "; ".join(sorted(coeffs)) + "."]
        for v in verdict_of.get(base, []):
            lines += ["", v.text + "."]
        lines.append("")
    return "\n".join(lines)


def _f(value: Any, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec) + unit


def write_outputs(run: RunDir, settings: ReproduceSettings, models: Sequence[Model], rows: Sequence[TrialRow],
                  summaries: Sequence[Summary], found: Sequence[BaseVerdict], dataset_name: str) -> list[Path]:
    from .plots import draw_curves
    from .study import write_atomic
    from .curves import series_from_results

    out = run.path
    name = settings.experiment.name
    table = result_rows(models, rows, summaries)
    run.write_run_csv(f"{name}.csv", table, RESULT_COLUMNS)
    write_atomic(out / f"{name}.md", markdown(settings, models, summaries, found, dataset_name))
    recipe = settings.train
    budget = (f"{dataset_name}, {settings.resolution} px proxy{' (keep-maps)' if settings.keep_maps else ''}, {recipe.images or recipe.epochs:g} "
              f"{'images' if recipe.images else 'epochs'}, {settings.seeds} seed(s)")
    panels = series_from_results(table)
    figures = draw_curves(panels, out / name, title=f"{settings.experiment.title}\n{budget}")
    return [out / CONFIG, out / MODELS, out / TRIALS, out / f"{name}.csv", out / f"{name}.md"] + figures


__all__ = ["Experiment", "ReproduceResult", "ReproduceSettings", "load_experiment", "make_settings", "plan",
           "reproduce"]
