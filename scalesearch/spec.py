"""The network description of the paper's Eq. 1, as pure data.

A network is a stem, a list of stages and a head.  Stage i repeats one block type
F_i, L_i times (``layers``), producing C_i channels (``out_channels``); the first layer of
a stage carries its stride.  The input resolution and class count complete the spec.

Nothing here imports torch: specs are created, scaled, compared, printed and
(de)serialized as plain data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

BLOCK_TYPES = ("basic", "bottleneck", "dwsep", "inverted_residual", "mbconv", "conv")
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
    activation: str = "relu"
    # Where the spec came from after scaling: (d, w, r) relative to its base.
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
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
        rows = []
        size = _after(self.resolution, self.stem.stride)
        if self.stem.pool:
            size = _after(size, 2)
        rows.append(dict(stage="stem", block=f"conv{self.stem.kernel}x{self.stem.kernel}",
                         resolution=self.resolution, channels=self.stem.out_channels,
                         layers=1, stride=self.stem.stride, kernel=self.stem.kernel,
                         expand_ratio=None, se_ratio=None))
        for i, st in enumerate(self.stages, start=1):
            rows.append(dict(stage=str(i), block=st.block, resolution=size,
                             channels=st.out_channels, layers=st.layers, stride=st.stride,
                             kernel=st.kernel, expand_ratio=st.expand_ratio,
                             se_ratio=st.se_ratio))
            size = _after(size, st.stride)
        rows.append(dict(stage="head", block="conv1x1+pool+fc" if self.head.channels else "pool+fc",
                         resolution=size, channels=self.head.channels or self.stages[-1].out_channels,
                         layers=1, stride=1, kernel=1, expand_ratio=None, se_ratio=None))
        return rows


def _after(size: int, stride: int) -> int:
    # Same-padded conv output size: ceil(size / stride).
    return -(-size // stride)


# -- validation ----------------------------------------------------------------------

def _require(cond: bool, field_name: str, value: Any, why: str) -> None:
    if not cond:
        raise SpecError(f"field '{field_name}': {why} (got {value!r})")


def _positive_int(value: Any, field_name: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             field_name, value, "must be a positive integer")


def validate(spec: NetworkSpec) -> None:
    _require(isinstance(spec.name, str) and spec.name != "", "name", spec.name, "must be a non-empty string")
    _positive_int(spec.resolution, "resolution")
    _positive_int(spec.num_classes, "num_classes")
    _require(spec.activation in ACTIVATIONS, "activation", spec.activation, f"must be one of {', '.join(ACTIVATIONS)}")
    _positive_int(spec.stem.out_channels, "stem.out_channels")
    _positive_int(spec.stem.kernel, "stem.kernel")
    _positive_int(spec.stem.stride, "stem.stride")
    _require(len(spec.stages) > 0, "stages", list(spec.stages), "must list at least one stage")
    for i, st in enumerate(spec.stages):
        p = f"stages[{i}]"
        _require(st.block in BLOCK_TYPES, f"{p}.block", st.block, f"must be one of {', '.join(BLOCK_TYPES)}")
        _positive_int(st.out_channels, f"{p}.out_channels")
        _positive_int(st.layers, f"{p}.layers")
        _positive_int(st.stride, f"{p}.stride")
        _positive_int(st.kernel, f"{p}.kernel")
        _require(st.kernel % 2 == 1, f"{p}.kernel", st.kernel, "must be odd")
        _require(isinstance(st.expand_ratio, (int, float)) and st.expand_ratio > 0,
                 f"{p}.expand_ratio", st.expand_ratio, "must be a positive number")
        _require(isinstance(st.se_ratio, (int, float)) and 0 <= st.se_ratio <= 1,
                 f"{p}.se_ratio", st.se_ratio, "must be between 0 and 1")
    _require(isinstance(spec.head.channels, int) and spec.head.channels >= 0,
             "head.channels", spec.head.channels, "must be a non-negative integer")
    _require(isinstance(spec.head.dropout, (int, float)) and 0 <= spec.head.dropout < 1,
             "head.dropout", spec.head.dropout, "must be in [0, 1)")


# -- (de)serialization ---------------------------------------------------------------

def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"field '{where}': must be a mapping (got {data!r})")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
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
        raise SpecError(f"field 'stages': must be a list (got {stages_raw!r})")
    stages = tuple(StageSpec(**_build(StageSpec, s, f"stages[{i}]")) for i, s in enumerate(stages_raw))
    head = HeadSpec(**_build(HeadSpec, data.get("head", {}), "head"))
    data.update(stem=stem, stages=stages, head=head)
    if "scale" in data:
        data["scale"] = tuple(data["scale"])
    try:
        return NetworkSpec(**data)
    except TypeError as exc:  # pragma: no cover - guarded by _build
        raise SpecError(str(exc)) from None


def load_spec(path: str | Path) -> NetworkSpec:
    """Read a spec from a .json, .yaml or .yml file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file '{path}' does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - report any parser error as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"spec file '{path}' is not valid {path.suffix.lstrip('.') or 'JSON'}: {first}") from None
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
