"""The network description of the paper's Eq. 1, as pure data.

A network is a stem, a list of stages and a head.  Stage i repeats one block type
F_i (a name in the ``blocks`` registry) L_i times (``layers``), producing C_i channels
(``out_channels``); the first layer of a stage carries its stride.  The input resolution
and class count complete the spec.

Nothing here imports torch: specs are created, scaled, compared, printed and
(de)serialized as plain data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from .blocks import OPTIONAL_FIELDS, block_names, get_block
from ..errors import UserError

ACTIVATIONS = ("relu", "relu6", "silu")


class SpecError(UserError):
    """A network description is malformed; the message names the field."""


@dataclass(frozen=True)
class StemSpec:
    """The first convolution (and optional max-pool) applied to the image."""

    out_channels: int
    kernel: int = 3
    stride: int = 2
    pool: bool = False  # a 3x3 stride-2 max-pool after the conv (ResNet)


@dataclass(frozen=True)
class StageSpec:
    """One stage of Eq. 1: ``layers`` repeats of ``block`` producing ``out_channels``.

    ``expand_ratio`` sets a block's hidden width: the block input times the ratio for
    inverted residuals (MobileNetV2, MBConv), the block output times the ratio for ResNet
    bottlenecks (0.25 in ResNet-50).  ``se_ratio`` is squeeze-excitation width as a
    fraction of the block input (0 = no SE).
    """

    block: str
    out_channels: int
    layers: int
    stride: int = 1
    kernel: int = 3
    expand_ratio: float = 1.0
    se_ratio: float = 0.0


@dataclass(frozen=True)
class HeadSpec:
    """A 1x1 conv to ``channels`` (0 = none), global pooling, dropout and the classifier."""

    channels: int = 0
    dropout: float = 0.0


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = HeadSpec()
    resolution: int = 224
    num_classes: int = 1000
    in_channels: int = 3                 # the image's channels (the data sets scalesearch reads are RGB)
    activation: str = "relu"
    # Where the spec came from after scaling: (d, w, r) relative to its base.
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        # Lists are accepted where a tuple is meant (written by hand, or read from JSON).
        for name in ("stages", "scale"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        validate(self)

    # -- convenience -----------------------------------------------------------------
    def replace(self, **changes: Any) -> "NetworkSpec":
        return dataclasses.replace(self, **changes)

    @property
    def total_layers(self) -> int:
        return sum(s.layers for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stages"] = [dataclasses.asdict(s) for s in self.stages]
        out["scale"] = list(self.scale)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def key(self) -> str:
        """A canonical string that identifies the network (used as a cache key)."""
        d = self.to_dict()
        d.pop("name")
        d.pop("scale")
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def stage_table(self) -> list[dict[str, Any]]:
        """Per-stage rows (Table 1 of the paper): operator, input resolution, channels, layers."""
        rows = [dict(stage="stem", block=f"conv{self.stem.kernel}x{self.stem.kernel}",
                     resolution=self.resolution, channels=self.stem.out_channels,
                     layers=1, stride=self.stem.stride, kernel=self.stem.kernel,
                     expand_ratio=None, se_ratio=None)]
        for site in layer_inputs(self):
            if site.part == "block" and site.layer == 0:
                st = self.stages[site.stage - 1]
                rows.append(dict(stage=str(site.stage), block=st.block, resolution=site.size,
                                 channels=st.out_channels, layers=st.layers, stride=st.stride,
                                 kernel=st.kernel, expand_ratio=st.expand_ratio, se_ratio=st.se_ratio))
            elif site.part == "head":
                rows.append(dict(stage="head", block="conv1x1+pool+fc" if self.head.channels else "pool+fc",
                                 resolution=site.size, channels=self.head.channels or site.in_channels,
                                 layers=1, stride=1, kernel=1, expand_ratio=None, se_ratio=None))
        return rows


class LayerInput(NamedTuple):
    """One layer of the Eq. 1 walk and the input it sees (batch size 1, square images)."""

    part: str         # "stem", "block" or "head"
    stage: int        # 1-based stage of a block; 0 for the stem and the head
    layer: int        # 0-based layer within its stage
    in_channels: int
    size: int         # input height = width
    stride: int       # the layer's own stride (the stem's max-pool is part of the stem)


def layer_inputs(spec: NetworkSpec) -> Iterator[LayerInput]:
    """Walk stem, every layer of every stage, head, with each one's input channels and size.

    Convolutions are same-padded, so a layer of stride s maps size to ceil(size / s); the
    first layer of a stage carries the stage's stride, the others stride 1.
    """
    size = spec.resolution
    yield LayerInput("stem", 0, 0, spec.in_channels, size, spec.stem.stride)
    size = output_size(size, spec.stem.stride)
    if spec.stem.pool:
        size = output_size(size, 2)
    cin = spec.stem.out_channels
    for index, st in enumerate(spec.stages, start=1):
        for layer in range(st.layers):
            stride = st.stride if layer == 0 else 1
            yield LayerInput("block", index, layer, cin, size, stride)
            size = output_size(size, stride)
            cin = st.out_channels
    yield LayerInput("head", 0, 0, cin, size, 1)


def output_size(size: int, stride: int) -> int:
    """A same-padded conv's output size: ceil(size / stride)."""
    return -(-size // stride)


# -- validation ----------------------------------------------------------------------

# Refuse absurd sizes up front: they are typos (or runaway scaling), and the torch side
# would otherwise try to allocate them.
MAX_CHANNELS = 100_000
MAX_RESOLUTION = 10_000
MAX_LAYERS = 10_000      # per stage
MAX_KERNEL = 63
MAX_CLASSES = 1_000_000
MAX_IN_CHANNELS = 1_024   # a multispectral stack, not an RGB image
MAX_EXPAND_RATIO = 64.0
STRIDES = (1, 2)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _require(cond: bool, field_name: str, value: Any, why: str) -> None:
    if not cond:
        raise SpecError(f"field '{field_name}': {why} (got {_show(value)})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any, field_name: str, low: int, high: int, what: str) -> None:
    """An integer in [low, high]; ``what`` names the limit in the message."""
    wanted = "a positive integer" if low == 1 else "a non-negative integer"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    _require(is_int, field_name, value, f"must be {wanted}, not {_kind(value)}")
    _require(value >= low, field_name, value, f"must be {wanted}")
    _require(value <= high, field_name, value, f"must be at most {high} (the limit on {what})")


def _number(value: Any, field_name: str, low: float, high: float, why: str, *, open_low: bool = False,
            open_high: bool = False) -> None:
    _require(_is_number(value), field_name, value, f"must be a number, not {_kind(value)}")
    _require(math.isfinite(value), field_name, value, "must be a finite number")
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    _require(above and below, field_name, value, why)


def _stride(value: Any, field_name: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value in STRIDES, field_name, value,
             "must be 1 or 2")


def _validate_stem(stem: Any) -> None:
    _require(isinstance(stem, StemSpec), "stem", stem, "must be a mapping (out_channels, kernel, stride, pool)")
    _int(stem.out_channels, "stem.out_channels", 1, MAX_CHANNELS, "channels")
    _int(stem.kernel, "stem.kernel", 1, MAX_KERNEL, "kernel size")
    _require(stem.kernel % 2 == 1, "stem.kernel", stem.kernel, "must be odd")
    _stride(stem.stride, "stem.stride")
    _require(isinstance(stem.pool, bool), "stem.pool", stem.pool, "must be true or false")


def _validate_stage(st: Any, p: str) -> None:
    _require(isinstance(st, StageSpec), p, st, "must be a mapping (block, out_channels, layers, ...)")
    names = block_names()
    _require(isinstance(st.block, str) and st.block in names, f"{p}.block", st.block,
             f"must be a registered block type: {', '.join(names)}")
    _int(st.out_channels, f"{p}.out_channels", 1, MAX_CHANNELS, "channels")
    _int(st.layers, f"{p}.layers", 1, MAX_LAYERS, "layers per stage")
    _stride(st.stride, f"{p}.stride")
    _int(st.kernel, f"{p}.kernel", 1, MAX_KERNEL, "kernel size")
    _require(st.kernel % 2 == 1, f"{p}.kernel", st.kernel, "must be odd")
    _number(st.expand_ratio, f"{p}.expand_ratio", 0, MAX_EXPAND_RATIO,
            f"must be > 0 and at most {MAX_EXPAND_RATIO:g}", open_low=True)
    _number(st.se_ratio, f"{p}.se_ratio", 0, 1, "must be between 0 and 1")
    block = get_block(st.block)
    for name, default in OPTIONAL_FIELDS.items():
        if name not in block.uses:
            value = getattr(st, name)
            _require(value == default, f"{p}.{name}", value,
                     f"block '{st.block}' does not use {name} (it uses: {', '.join(block.uses) or 'none'}); "
                     f"leave it out or at {default:g}")


def validate(spec: NetworkSpec) -> None:
    """Check every field's type and range; a SpecError names the first bad field."""
    _require(isinstance(spec.name, str) and spec.name != "", "name", spec.name, "must be a non-empty string")
    _int(spec.resolution, "resolution", 1, MAX_RESOLUTION, "resolution")
    _int(spec.num_classes, "num_classes", 1, MAX_CLASSES, "classes")
    _int(spec.in_channels, "in_channels", 1, MAX_IN_CHANNELS, "input channels")
    _require(isinstance(spec.activation, str) and spec.activation in ACTIVATIONS, "activation",
             spec.activation, f"must be one of {', '.join(ACTIVATIONS)}")
    _require(isinstance(spec.scale, tuple) and len(spec.scale) == 3, "scale", spec.scale,
             "must be a list of three numbers (d, w, r)")
    for name, value in zip("dwr", spec.scale):
        _number(value, f"scale.{name}", 0, math.inf, "must be > 0", open_low=True)
    _validate_stem(spec.stem)
    _require(isinstance(spec.stages, tuple) and len(spec.stages) > 0, "stages", spec.stages,
             "must list at least one stage")
    for i, st in enumerate(spec.stages):
        _validate_stage(st, f"stages[{i}]")
    _require(isinstance(spec.head, HeadSpec), "head", spec.head, "must be a mapping (channels, dropout)")
    _int(spec.head.channels, "head.channels", 0, MAX_CHANNELS, "channels")
    _number(spec.head.dropout, "head.dropout", 0, 1, "must be in [0, 1)", open_high=True)


# -- (de)serialization ---------------------------------------------------------------

def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"field '{where}': must be a mapping, not {_kind(data)} (got {_show(data)})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise SpecError(f"field '{where}.{unknown[0]}': unknown field (valid: {', '.join(sorted(names))})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in data:
            raise SpecError(f"field '{where}.{name}' is missing")
    return data


def from_dict(data: Any) -> NetworkSpec:
    """Build a NetworkSpec from plain data (as read from JSON/YAML); errors name the field."""
    data = dict(_build(NetworkSpec, data, "spec"))
    stem = StemSpec(**_build(StemSpec, data["stem"], "stem"))
    stages_raw = data["stages"]
    if not isinstance(stages_raw, list):
        raise SpecError(f"field 'stages': must be a list of stages, not {_kind(stages_raw)} (got {_show(stages_raw)})")
    stages = tuple(StageSpec(**_build(StageSpec, s, f"stages[{i}]")) for i, s in enumerate(stages_raw))
    head = HeadSpec(**_build(HeadSpec, data.get("head", {}), "head"))
    data.update(stem=stem, stages=stages, head=head)
    return NetworkSpec(**data)  # validate() checks every value, including scale


def _read_text(path: Path) -> str:
    """The file as text, refusing what cannot be a spec (empty, binary, not UTF-8) in one line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"spec file '{path}' cannot be read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise SpecError(f"spec file '{path}' is empty")
    if b"\0" in raw:
        raise SpecError(f"spec file '{path}' is binary, not a JSON or YAML text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(f"spec file '{path}' is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}, "
                        f"offset {exc.start})") from None


SPEC_SUFFIXES = (".json", ".yaml", ".yml")


def load_spec(path: str | Path) -> NetworkSpec:
    """Read a spec from a .json, .yaml or .yml file; any problem is one SpecError line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"spec file '{path}' is a folder: give a .json, .yaml or .yml file")
    if not path.is_file():
        raise SpecError(f"spec file '{path}' does not exist")
    if path.suffix.lower() not in SPEC_SUFFIXES:
        raise SpecError(f"spec file '{path}' must end in .json, .yaml or .yml (got "
                        f"{path.suffix or 'no suffix'})")
    text = _read_text(path)
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            from .._yaml import load

            data = load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - report any parser error as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"spec file '{path}' is not valid {path.suffix.lstrip('.') or 'JSON'}: {first}") from None
    if data is None:
        raise SpecError(f"spec file '{path}' is empty (no document in it)")
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    try:
        return from_dict(data)
    except SpecError as exc:
        raise SpecError(f"spec file '{path}': {exc}") from None


def save_spec(spec: NetworkSpec, path: str | Path) -> None:
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    else:
        path.write_text(spec.to_json() + "\n")
