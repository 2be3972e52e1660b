"""The experiment file: bases, rows (method, d, w, r or phi), named budgets and the recipe,
validated field by field; and the settings of one reproduction (a budget preset, the options on top)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import UserError, checked_arguments
from ..settings import BackendSettings, DataSettings, SettingsError, by_section

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXPERIMENTS = ("table3", "figure8")
METHODS = ("baseline", "depth", "width", "resolution", "compound", "strategy")
SINGLES = ("depth", "width", "resolution")
BUDGET_FIELDS = ("resolution", "keep_maps", "dataset", "train_subset", "val_subset", "epochs", "images", "batch_size", "seeds")
MATCHES = ("singles", "paper")  # what a 'match' compound row matches the FLOPs of
STRATEGY_MATCHES = ("flops", "latency")  # what a 'match' strategy row matches of the compound row


class ExperimentError(UserError):
    """An experiment file is malformed; the message names the file and the field."""


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
    strategy: str | None = None       # strategy: a name of scaling.STRATEGIES or shares (d1_w8_r1)
    s: float | None = None            # strategy: the nominal FLOPs factor d * w^2 * r^2 (or, with
    #                                   match 'flops' or 'latency', s fitted to the compound row's)

    @property
    def label(self) -> str:
        if self.method == "baseline":
            return "baseline"
        if self.method == "strategy":
            return f"{self.strategy} s={self.s:g}" if self.s is not None else f"{self.strategy} (matched {self.match})"
        if self.method == "compound":
            if self.phi is not None:
                return f"compound phi={self.phi:g}"
            if self.match:
                return "compound (matched FLOPs)"
            return f"compound d={self.d:g} w={self.w:g} r={self.r:g}"
        value = {"depth": self.d, "width": self.w, "resolution": self.r}[self.method]
        return f"{self.method} {self.method[0]}={value:g}"


def carries_paper_figures(rows: Iterable[Row]) -> bool:
    """Whether any row holds the paper's FLOPs or top-1 (a file of one's own may hold none)."""
    return any(r.paper_flops is not None or r.paper_top1 is not None for r in rows)


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
    from ..settings import read_data_file

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
    from ..net.bases import get_base
    from ..train.recipe import TrainConfig

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
        if "dataset" in preset and (not isinstance(preset["dataset"], str) or not preset["dataset"].strip()):
            raise ExperimentError(f"{where}.dataset must be a data set: synthetic[:level] or a folder "
                                  f"(got {preset['dataset']!r})")
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
    _unknown(raw, ("method", "d", "w", "r", "phi", "match", "strategy", "s", "paper_gflops", "paper_top1"), where)
    method = raw.get("method")
    if method not in METHODS:
        raise ExperimentError(f"{where}: 'method' must be one of {', '.join(METHODS)} (got {method!r})")
    if method == "strategy" or "strategy" in raw or "s" in raw:   # (a strategy row may 'match' too)
        return _strategy_row(base, raw, where, method)
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


def _strategy_row(base: str, raw: dict[str, Any], where: str, method: Any) -> Row:
    """A row given by a scaling strategy: ``{method: strategy, strategy: dWr, s: 4}``, its (d, w, r)
    split from s by the strategy's shares (scaling.strategy_factors)."""
    from ..net.scaling import ScaleError, strategy_factors

    if method != "strategy":
        raise ExperimentError(f"{where}: 'strategy' and 's' belong to rows with method: strategy")
    extra = [k for k in ("d", "w", "r", "phi") if k in raw]
    if extra or "strategy" not in raw or ("s" in raw) == ("match" in raw):
        raise ExperimentError(f"{where}: a strategy row takes 'strategy' and 's' (and no {extra[0]})" if extra else
                              f"{where}: a strategy row needs 'strategy' (dWr, uniform, or shares such as d1_w8_r1) "
                              f"and one of 's' (its FLOPs factor) or 'match' (flops or latency: the compound row's)")
    match = raw.get("match")
    if match is not None and match not in STRATEGY_MATCHES:
        raise ExperimentError(f"{where}.match must be 'flops' or 'latency' for a strategy row (got {match!r})")
    s = _number(raw["s"], f"{where}.s", at_least=1.0) if match is None else None
    try:
        d, w, r = strategy_factors(str(raw["strategy"]), s if s is not None else 1.0)
    except ScaleError as exc:
        raise ExperimentError(f"{where}: {exc}") from None
    paper = {k: _number(raw[k], f"{where}.{k}") for k in ("paper_gflops", "paper_top1") if raw.get(k) is not None}
    return Row(base=base, method="strategy", d=d, w=w, r=r, strategy=str(raw["strategy"]), s=s, match=match,
               paper_flops=1e9 * paper["paper_gflops"] if "paper_gflops" in paper else None,
               paper_top1=paper.get("paper_top1"))


@dataclass(frozen=True)
class ReproduceSettings:
    """Every setting of a reproduction; config.json holds them all."""

    experiment: Experiment
    budget: str
    resolution: int
    seeds: int
    data: DataSettings
    train: Any                        # train.recipe.TrainConfig
    backend: BackendSettings
    out: str
    coefficients: tuple[str, ...] = ()   # finished grid runs to take compound coefficients from
    keep_maps: bool = False              # the proxy keeps the base's last feature map (proxy.py)

    @property
    def seed(self) -> int:
        return self.experiment.seed

    def as_dict(self) -> dict[str, Any]:
        from ..settings import recipe_fields

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
                    store_resolution=self.data.store_resolution,
                    train=data["train"], coefficients=data["coefficients"], keep_maps=self.keep_maps)


@checked_arguments
def make_settings(experiment: str | Path | Experiment, budget: str = "smoke", *, dataset: str | None = None,
                  seeds: int | None = None, device: str | None = None, backend: str | None = None,
                  address: str | None = None, cpus_per_trial: float | None = None,
                  gpus_per_trial: float | None = None, cache_dir: str | None = None, out: str | None = None,
                  store_resolution: int | None = None,
                  coefficients: Sequence[str] = (), optimizer: str | None = None,
                  residual_init: str | None = None, keep_maps: bool | None = None,
                  recipe: Mapping[str, Any] | None = None,
                  assignments: Mapping[str, Any] | None = None) -> ReproduceSettings:
    """Settings of a reproduction: the experiment's budget preset, then the given options on top
    (``recipe``, and ``optimizer``/``residual_init``, replace the experiment's ``train``
    fields), then ``assignments`` (``--set``, flat names) routed by settings.by_section, the
    rule grid's settings use: train, backend and data settings, and keep_maps."""
    from ..train.recipe import TrainConfig

    sets, top = by_section(assignments or {}, "--set", top={"keep_maps"}, sections=("train", "backend", "data"),
                           refusal="reproduce takes training, backend and data settings (and keep_maps) by name; "
                                   "the rest is the experiment file's")
    keep_maps = top.get("keep_maps", keep_maps)

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
    preset_dataset = preset.pop("dataset", None)   # the preset's data set; --dataset replaces it
    data_values = dict(dataset=dataset or preset_dataset or "synthetic", train_subset=preset.pop("train_subset", None),
                       val_subset=preset.pop("val_subset", None), cache_dir=cache_dir, store_resolution=store_resolution)
    try:
        data = DataSettings(**{**data_values, **sets["data"]})
    except TypeError as exc:
        raise SettingsError(f"data settings: {exc}") from None
    try:
        given = {k: v for k, v in (("optimizer", optimizer), ("residual_init", residual_init)) if v is not None}
        train = TrainConfig(**{**exp.train, **preset, **dict(recipe or {}), **given, **sets["train"]})
    except TypeError as exc:
        raise ExperimentError(f"{exp.source}: budgets.{budget}: {exc}") from None
    flags = dict(backend=backend, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                 device=device)
    try:
        backend_settings_checked = BackendSettings(**{**{k: v for k, v in flags.items() if v is not None},
                                                      **sets["backend"]})
    except TypeError as exc:
        raise SettingsError(f"backend settings: {exc}") from None
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    return ReproduceSettings(experiment=exp, budget=budget, resolution=resolution, seeds=n_seeds, data=data,
                             train=train, backend=backend_settings_checked,
                             out=out or str(Path("runs") / f"{exp.name}-{budget}-{stamp}"),
                             coefficients=tuple(str(c) for c in coefficients), keep_maps=keep_maps)
