"""Every setting of a search, as small typed layers that own their defaults and checks.

A search's settings are composed of sections, each a frozen dataclass that validates
itself on construction:

* ``grid``      the phi = 1 grid space and its FLOPs constraint (``search.space.GridSpec``)
* ``rounding``  how scaled layers, channels and pixels become integers (``scaling.Rounding``)
* ``data``      the data set and its subsets (``DataSettings``)
* ``train``     the short-training recipe (``train.recipe.TrainConfig``, less the per-trial fields)
* ``backend``   who runs the trials and where (``BackendSettings``)

plus the study-level fields of ``SearchSettings`` (base, seeds, which candidates...).
Each default is written once, in its dataclass.  The same settings load from a YAML or
JSON file (``load_settings``), and a run's config.json is such a file.  Overrides are flat
``{field: value}`` maps routed to the section that owns the field, so the CLI adds nothing
but flag names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import UserError
from .search.space import GridSpec
from .net.scaling import Rounding
from .train.recipe import TrainConfig

BACKENDS = ("optuna", "ray")
MAX_EPOCHS = 10_000       # per trial
MAX_IMAGES = 10**12       # per trial
ORDERS = ("random", "nearest", "spread", "id")
FIDELITIES = ("full", "halving")
PHI_MAX_LIMIT = 20        # the largest phi a family extrapolates to
# TrainConfig fields that a trial sets itself (one seed per trial, the device and threads it runs on).
PER_TRIAL = ("seed", "device", "threads")
# Recipe fields added after runs were first written whose default differs from what those runs
# did: a saved recipe without the field is read with this value (``saved``).  Before
# ``precision`` a CPU step was always fp32 (and its layout what "auto" still picks for fp32).
BEFORE_FIELDS = {"precision": "fp32"}


def saved(data: Mapping[str, Any]) -> dict[str, Any]:
    """A run's saved settings (config.json's "settings") as they were meant: a train section
    written before a field of ``BEFORE_FIELDS`` existed gets that field's old value."""
    data = dict(data)
    if isinstance(data.get("train"), Mapping):
        data["train"] = {**BEFORE_FIELDS, **data["train"]}
    return data


class SettingsError(UserError):
    """A setting is out of range or of the wrong type; the message names it."""


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise SettingsError(f"setting '{name}' {why} (got {value!r})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_address(text: str) -> bool:
    if text in ("auto", "local"):
        return True
    host, colon, port = text.removeprefix("ray://").rpartition(":")
    return bool(colon and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536
                and not any(c.isspace() for c in host))


@dataclass(frozen=True)
class DataSettings:
    """The data set: 'synthetic' (built in), an image-folder tree or a CIFAR pickle folder."""

    dataset: str = "synthetic"
    train_subset: int | None = None   # train on N images (class-balanced)
    val_subset: int | None = None     # score on N held-out images
    cache_dir: str | None = None      # image stores are kept here (default ~/.cache/scalesearch)
    store_resolution: int | None = None  # S of an image folder's store (default: largest trained px x 256/224)

    def __post_init__(self) -> None:
        _check(isinstance(self.dataset, str) and self.dataset.strip() != "", "dataset", self.dataset,
               "must name a data set")
        for name in ("train_subset", "val_subset"):
            value = getattr(self, name)
            _check(value is None or (_is_int(value) and 0 < value <= 10**8), name, value,
                   "must be a positive integer")
        _check(self.cache_dir is None or isinstance(self.cache_dir, str), "cache_dir", self.cache_dir,
               "must be a folder path")
        _check(self.store_resolution is None or (_is_int(self.store_resolution) and 8 <= self.store_resolution <= 4096),
               "store_resolution", self.store_resolution, "must be an integer from 8 to 4096")


@dataclass(frozen=True)
class BackendSettings:
    """Who runs the trials: Optuna in this process, or Ray Tune here or on a cluster."""

    backend: str = "optuna"
    address: str | None = None        # Ray: join this cluster (HEAD:PORT)
    early_stop: bool = False          # Optuna MedianPruner / Tune ASHA
    cpus_per_trial: float = 2.0       # threads each trial trains on (both backends); Ray reserves them
    gpus_per_trial: float = 0.0       # Ray: GPUs reserved per trial
    device: str = "auto"              # auto, cpu or cuda[:N]

    def __post_init__(self) -> None:
        _check(self.backend in BACKENDS, "backend", self.backend, f"must be one of {', '.join(BACKENDS)}")
        _check(isinstance(self.early_stop, bool), "early_stop", self.early_stop, "must be true or false")
        _check(_is_number(self.cpus_per_trial) and 0 < self.cpus_per_trial <= 4096, "cpus_per_trial",
               self.cpus_per_trial, "must be a number > 0")
        _check(_is_number(self.gpus_per_trial) and 0 <= self.gpus_per_trial <= 1024, "gpus_per_trial",
               self.gpus_per_trial, "must be a number >= 0")
        device = self.device
        _check(isinstance(device, str) and (device in ("auto", "cpu") or device == "cuda"
                                            or (device.startswith("cuda:") and device[5:].isdigit())),
               "device", device, "must be auto, cpu, cuda or cuda:N")
        _check(self.address is None or (isinstance(self.address, str) and _is_address(self.address)),
               "address", self.address, "must be HOST:PORT (or ray://HOST:PORT, auto, local)")
        if self.address is not None and self.backend != "ray":
            raise SettingsError(f"setting 'address' joins a Ray cluster: use it with backend ray "
                                f"(got backend {self.backend!r})")
        if self.backend == "optuna" and self.gpus_per_trial:
            raise SettingsError(f"setting 'gpus_per_trial' reserves GPUs on a Ray cluster: use it with backend ray "
                                f"(got backend {self.backend!r})")


def recipe_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that make up the shared training recipe."""
    return [f for f in fields(TrainConfig) if f.name not in PER_TRIAL]


def _train_default() -> TrainConfig:
    return TrainConfig()


@dataclass(frozen=True)
class SearchSettings:
    """Every setting of a search; config.json holds them all (``as_dict``)."""

    base: str
    resolution: int | None = None     # search at this base resolution (a cheap proxy)
    keep_maps: bool = False           # adapt the proxy's strides to keep the base's last feature map (proxy.py)
    seed: int = 0                     # data subsets, candidate sampling; trial k uses seed + k
    seeds: int = 1                    # trials per candidate, each with its own seed
    max_trials: int | None = None     # train at most N candidates
    candidates: tuple[int, ...] | None = None  # train exactly these candidate ids
    order: str = "random"             # which kept candidates come first: random (seeded), nearest, spread, id
    phi_max: int = 7                  # extrapolate the family to this phi
    fidelity: str = "full"            # full: every candidate at the budget; halving: successive halving
    eta: int = 3                      # halving: each rung keeps the top 1/eta at eta times the budget
    rungs: int = 3                    # halving: budgets b, eta b, ..., eta^(rungs-1) b
    out: str | None = None            # run directory
    grid: GridSpec = field(default_factory=GridSpec)
    rounding: Rounding = field(default_factory=Rounding)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainConfig = field(default_factory=_train_default)
    backend: BackendSettings = field(default_factory=BackendSettings)

    # Settings that do not change what a trial computes: a run resumes under other values.
    # (A halving run's rung 0 is the full run's study, and more rungs extend it.)
    RUNTIME = ("max_trials", "candidates", "order", "seeds", "out", "backend", "cache_dir", "fidelity", "rungs")

    def __post_init__(self) -> None:
        _check(isinstance(self.base, str) and self.base.strip() != "", "base", self.base,
               "must be a base name or a spec file")
        _check(self.resolution is None or (_is_int(self.resolution) and 8 <= self.resolution <= 4096),
               "resolution", self.resolution, "must be an integer from 8 to 4096")
        _check(isinstance(self.keep_maps, bool), "keep_maps", self.keep_maps, "must be true or false")
        _check(_is_int(self.seed) and 0 <= self.seed < 2**31, "seed", self.seed, "must be an integer from 0 to 2^31-1")
        _check(_is_int(self.seeds) and 1 <= self.seeds <= 100, "seeds", self.seeds, "must be an integer from 1 to 100")
        _check(self.max_trials is None or (_is_int(self.max_trials) and self.max_trials > 0), "max_trials",
               self.max_trials, "must be a positive integer")
        if self.candidates is not None:
            _check(isinstance(self.candidates, tuple) and len(self.candidates) > 0
                   and all(_is_int(c) and c >= 0 for c in self.candidates),
                   "candidates", self.candidates, "must be a list of candidate ids (0, 1, ...)")
        _check(self.order in ORDERS, "order", self.order, f"must be one of {', '.join(ORDERS)}")
        _check(_is_int(self.phi_max) and 0 <= self.phi_max <= PHI_MAX_LIMIT, "phi_max", self.phi_max,
               f"must be an integer from 0 to {PHI_MAX_LIMIT}")
        _check(self.fidelity in FIDELITIES, "fidelity", self.fidelity, f"must be one of {', '.join(FIDELITIES)}")
        _check(_is_int(self.eta) and 2 <= self.eta <= 10, "eta", self.eta, "must be an integer from 2 to 10")
        _check(_is_int(self.rungs) and 1 <= self.rungs <= 6, "rungs", self.rungs, "must be an integer from 1 to 6")
        # A short-training budget past these is a typo that would run for days, not a search.
        epochs, images = getattr(self.train, "epochs", None), getattr(self.train, "images", None)
        _check(not _is_number(epochs) or epochs <= MAX_EPOCHS, "epochs", epochs,
               f"must be at most {MAX_EPOCHS:,} per trial")
        _check(not _is_number(images) or images <= MAX_IMAGES, "images", images,
               f"must be at most {MAX_IMAGES:.0e} per trial")
        if self.fidelity == "halving" and _is_int(self.eta) and _is_int(self.rungs):
            # successive halving multiplies the budget by eta at each rung: its top rung must fit too
            growth = self.eta ** (self.rungs - 1)
            for name, value, limit in (("images", images, MAX_IMAGES), ("epochs", epochs, MAX_EPOCHS)):
                if _is_number(value) and value * growth > limit:
                    raise SettingsError(f"settings: the top rung (rung {self.rungs - 1}) would train {name} = "
                                        f"{value:g} x eta^{self.rungs - 1} = {value * growth:.3g} per trial, above "
                                        f"the limit of {limit:.3g}: lower {name}, eta or rungs")

    def replace(self, **changes: Any) -> "SearchSettings":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Nested plain data: what config.json holds and ``from_dict`` reads back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                names = _section_names(f.name)
                out[f.name] = {k: _plain(getattr(value, k)) for k in names}
            else:
                out[f.name] = _plain(value)
        return out

    def identity(self) -> dict[str, Any]:
        """The settings that decide what a finished trial computed (resume compares these)."""
        flat = flatten(self.as_dict())
        return {k: v for k, v in flat.items() if k not in self.RUNTIME and k not in _section_names("backend")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "settings") -> "SearchSettings":
        return build_settings(data, source=source)

    @classmethod
    def make(cls, base: str, **flat: Any) -> "SearchSettings":
        """Settings from flat names, as the CLI's flags are: ``make("resnet18", epochs=2, step=0.1)``."""
        return build_settings({"base": base}, flat, source="SearchSettings.make")


SECTIONS = {"grid": GridSpec, "rounding": Rounding, "data": DataSettings, "train": None, "backend": BackendSettings}


def _section_names(section: str) -> list[str]:
    if section == "train":
        return [f.name for f in recipe_fields()]
    return [f.name for f in fields(SECTIONS[section])]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def owner_of(name: str) -> str | None:
    """The section that owns a flat field name (None: a top-level field)."""
    for section in SECTIONS:
        if name in _section_names(section):
            return section
    return None


def flatten(nested: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if key in SECTIONS and isinstance(value, Mapping):
            out.update(value)
        else:
            out[key] = value
    return out


def by_section(values: Mapping[str, Any], where: str, *, top: Iterable[str] | None = None,
               sections: Iterable[str] = tuple(SECTIONS), refusal: str = "") -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Flat settings (``--set``, options) split by their owner: ``({section: {name: value}},
    {top-level name: value})``.  A name no section of ``sections`` owns and not in ``top`` (all
    of SearchSettings' own names by default) is refused, naming ``where`` and ``refusal``'s
    reason, so grid and reproduce route a setting by one rule."""
    known = {f.name for f in fields(SearchSettings)} - set(SECTIONS)
    top_names = known if top is None else set(top)
    allowed = tuple(sections)
    split: dict[str, dict[str, Any]] = {s: {} for s in allowed}
    rest: dict[str, Any] = {}
    for name, value in values.items():
        section = owner_of(name)
        if section in allowed:
            split[section][name] = value
        elif section is None and name in top_names:
            rest[name] = value
        else:
            spelled = f"{section}.{name}" if section else name
            if refusal and (section or name in known):
                raise SettingsError(f"{where} {spelled}: {refusal}")
            raise SettingsError(f"{where}: unknown setting '{spelled}'")
    return split, rest


def build_settings(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   source: str = "settings", assignments: Mapping[str, Any] | None = None) -> SearchSettings:
    """Settings from nested (or flat) plain data, then flat ``overrides`` on top (a None
    there means "not given"), then ``assignments`` (``--set``: flat names, None is a value).

    Unknown keys are refused with the name and where they came from; every section
    validates itself, so a bad value is named before anything is created.
    """
    if not isinstance(data, Mapping):
        raise SettingsError(f"{source}: must be a mapping of settings (got {type(data).__name__})")
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    top: dict[str, Any] = {}

    def put(values: Mapping[str, Any], where: str) -> None:
        split, rest = by_section(values, where)
        for section, named in split.items():
            sections[section].update(named)
        top.update(rest)

    for key, value in data.items():
        if key in SECTIONS and not (key == "backend" and isinstance(value, str)):  # flat 'backend: ray' too
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: section '{key}' must be a mapping (got {value!r})")
            for name, inner in value.items():
                if owner_of(name) != key:
                    raise SettingsError(f"{source}: unknown setting '{key}.{name}'")
                sections[key][name] = inner
        else:
            put({key: value}, source)
    put({k: v for k, v in (overrides or {}).items() if v is not None}, "option")
    put(assignments or {}, "--set")
    if "base" not in top:
        raise SettingsError(f"{source}: setting 'base' is missing (a base name or a spec file)")
    if top.get("candidates") is not None and not isinstance(top["candidates"], tuple):
        value = top["candidates"]
        if isinstance(value, str):
            value = parse_ids(value)
        elif isinstance(value, list):
            value = tuple(value)
        top["candidates"] = value
    try:
        built = {name: _make(name, values) for name, values in sections.items()}
        return SearchSettings(**top, **built)
    except TypeError as exc:  # a value of the wrong kind inside a section
        raise SettingsError(f"{source}: {exc}") from None


def _make(section: str, values: dict[str, Any]) -> Any:
    if section == "train":
        return TrainConfig(**values)
    return SECTIONS[section](**values)


def parse_ids(text: str) -> tuple[int, ...]:
    """'0,4,77' -> (0, 4, 77)."""
    try:
        ids = tuple(int(part) for part in str(text).replace(" ", "").split(",") if part != "")
    except ValueError:
        raise SettingsError(f"setting 'candidates' must be ids separated by commas like 0,4,77 (got {text!r})") from None
    if not ids or any(i < 0 for i in ids):
        raise SettingsError(f"setting 'candidates' must be ids separated by commas like 0,4,77 (got {text!r})")
    return ids


def load_settings(path: str | Path, overrides: Mapping[str, Any] | None = None, *,
                  recipe: Mapping[str, Any] | None = None,
                  assignments: Mapping[str, Any] | None = None) -> SearchSettings:
    """Settings from a YAML/JSON file (a run's config.json too), then a ``recipe`` (flat train
    fields, over the file's), then flat ``overrides``, then ``assignments`` (see build_settings)."""
    path = Path(path)
    data = read_data_file(path, "config file")
    if isinstance(data, Mapping) and isinstance(data.get("settings"), Mapping):
        data = saved(data["settings"])  # a run's config.json
    data = data if data is not None else {}
    if recipe and isinstance(data, Mapping):
        data = {**data, **recipe}  # flat train fields, read after the file's own train section
    return build_settings(data, overrides, source=f"config file '{path}'", assignments=assignments)


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` items as flat settings: NAME is a field (``clip_norm``) or
    SECTION.FIELD (``train.clip_norm``), VALUE a YAML scalar (0.5, 5e-4, true, null, sgd)."""
    import yaml

    from ._yaml import load

    out: dict[str, Any] = {}
    for item in items:
        name, equals, text = str(item).partition("=")
        name = name.strip()
        if not equals or not name:
            raise SettingsError(f"--set '{item}' must be NAME=VALUE, e.g. train.clip_norm=0.5")
        section, dot, field_name = name.rpartition(".")
        owner = owner_of(field_name)
        if dot and (section not in SECTIONS or owner != section):
            raise SettingsError(f"--set '{item}': unknown setting '{name}'"
                                + (f" (it is {owner}.{field_name})" if owner else ""))
        if owner is None and field_name not in {f.name for f in fields(SearchSettings)} - set(SECTIONS):
            raise SettingsError(f"--set '{item}': unknown setting '{field_name}'")
        try:
            value = load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if isinstance(value, (dict, list)) and field_name != "candidates":
            raise SettingsError(f"--set '{item}': the value must be a single number, word, true/false or null")
        out[field_name] = tuple(value) if isinstance(value, list) else value
    return out


def read_data_file(path: Path, what: str, error: type[UserError] = SettingsError) -> Any:
    """A YAML (or JSON, a subset) file's contents; a missing or unparsable file is one
    ``error`` line naming ``what`` and the path."""
    if not path.is_file():
        raise error(f"{what} '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            return json.loads(text)
        from ._yaml import load

        return load(text)
    except Exception as exc:  # noqa: BLE001 - any read or parser error, as one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{what} '{path}' is not valid YAML/JSON: {first}") from None


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A training recipe file: the ``train:`` section of a config (or its fields alone), as
    flat train settings; anything that is not a recipe field is refused by name."""
    path = Path(path)
    data = read_data_file(path, "recipe file")
    if isinstance(data, Mapping) and set(data) == {"train"}:
        data = data["train"]
    if not isinstance(data, Mapping):
        raise SettingsError(f"recipe file '{path}' must be a mapping of training settings (a 'train:' section)")
    names = {f.name for f in recipe_fields()}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise SettingsError(f"recipe file '{path}': unknown training setting '{unknown[0]}' "
                            f"(one of: {', '.join(sorted(names))})")
    return dict(data)


def default_of(name: str) -> Any:
    """The default of a flat setting name (for the CLI's help texts)."""
    section = owner_of(name)
    cls = SearchSettings if section is None else (None if section == "train" else SECTIONS[section])
    flds = recipe_fields() if section == "train" else fields(cls)
    for f in flds:
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
    raise KeyError(name)
