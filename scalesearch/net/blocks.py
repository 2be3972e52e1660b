"""The block registry: the block types F_i a stage of Eq. 1 may repeat.

Adding a block type is one registration: its name, the StageSpec fields it reads
(``kernel``, ``expand_ratio``, ``se_ratio``), a one-line doc and its torch builder.
The spec validator, the model builder and ``block_types()`` (the docs) all read this
table, so nothing else needs editing.

No torch here: a builder is a callable or a lazy ``"module:attr"`` reference that is only
resolved when a network is built, so specs validate without torch.  A builder takes one
``BlockArgs`` and returns an ``nn.Module`` mapping (N, cin, H, W) to
(N, cout, ceil(H / stride), ceil(W / stride)) (checked when counted); the counter traces
it like any other.  A residual block may define ``residual_bn()``, returning the BN that
feeds its shortcut add, to have that BN's gamma start at zero.

    from scalesearch.net.blocks import register_block

    @register_block("plain", uses=("kernel",), doc="kxk conv + bias + ReLU, no BN")
    def plain(a):
        return nn.Sequential(nn.Conv2d(a.cin, a.cout, a.kernel, a.stride, a.kernel // 2), nn.ReLU())
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

# How the last norm of a residual branch starts (the builder's ``residual_init``): gamma 1, 0, or
# 1/sqrt(L) for L residual blocks.
RESIDUAL_INITS = ("one", "zero", "scaled")

# The StageSpec fields a block type may read, with the value a stage must leave them at
# when its block ignores them (StageSpec's defaults).
OPTIONAL_FIELDS: dict[str, float] = {"kernel": 3, "expand_ratio": 1.0, "se_ratio": 0.0}


@dataclass(frozen=True)
class BlockArgs:
    """What a builder gets for one layer: channels and stride from the walk, the rest from its stage."""

    cin: int
    cout: int
    stride: int
    kernel: int
    expand_ratio: float
    se_ratio: float
    activation: str  # the spec's activation name: "relu", "relu6" or "silu"


Builder = Callable[[BlockArgs], Any]  # returns a torch.nn.Module


@dataclass(frozen=True)
class BlockType:
    name: str
    uses: tuple[str, ...]     # the OPTIONAL_FIELDS this block reads; the others must stay default
    doc: str
    builder: Builder | str    # a callable, or "module:attr" resolved on first build

    def resolve(self) -> Builder:
        if callable(self.builder):
            return self.builder
        module, _, path = self.builder.partition(":")
        target: Any = importlib.import_module(module)
        for attr in path.split("."):  # "models:BasicBlock.from_args" names a classmethod
            target = getattr(target, attr)
        return target

    def build(self, args: BlockArgs) -> Any:
        return self.resolve()(args)


_REGISTRY: dict[str, BlockType] = {}
_generation = 0  # bumped when a registered name changes meaning; caches keyed by name compare it


def generation() -> int:
    """Changes whenever a registered block type is replaced or removed (for caches keyed by name)."""
    return _generation


def register_block(name: str, builder: Builder | str | None = None, *, uses: Iterable[str] = ("kernel",),
                   doc: str, replace: bool = False) -> Any:
    """Register block type ``name``; without ``builder`` it returns a decorator for the builder.

    ``uses`` names the StageSpec fields the builder reads (any of kernel, expand_ratio,
    se_ratio); a stage of this block that sets another of them is refused, so a value is
    never silently ignored.  Registering a taken name raises unless ``replace=True``.
    """
    if builder is None:
        def decorator(fn: Builder) -> Builder:
            register_block(name, fn, uses=uses, doc=doc, replace=replace)
            return fn
        return decorator

    global _generation
    uses = tuple(uses)
    if not (isinstance(name, str) and name and name == name.strip() and " " not in name):
        raise ValueError(f"block name must be a non-empty string without spaces (got {name!r})")
    unknown = [f for f in uses if f not in OPTIONAL_FIELDS]
    if unknown:
        raise ValueError(f"block '{name}': uses {unknown[0]!r}, not a stage field a block can read "
                         f"(valid: {', '.join(OPTIONAL_FIELDS)})")
    if not (isinstance(doc, str) and doc.strip() and "\n" not in doc.strip()):
        raise ValueError(f"block '{name}': doc must be one non-empty line")
    if not (callable(builder) or (isinstance(builder, str) and ":" in builder)):
        raise ValueError(f"block '{name}': builder must be a callable or a 'module:attr' string (got {builder!r})")
    if name in _REGISTRY:
        if not replace:
            raise ValueError(f"block '{name}' is already registered (pass replace=True to redefine it)")
        _generation += 1
    _REGISTRY[name] = BlockType(name, tuple(f for f in OPTIONAL_FIELDS if f in uses), doc.strip(), builder)
    return _REGISTRY[name]


def unregister_block(name: str) -> None:
    global _generation
    if _REGISTRY.pop(name, None) is not None:
        _generation += 1


def get_block(name: str) -> BlockType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown block type {name!r}; registered: {', '.join(_REGISTRY)}") from None


def block_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def block_types() -> list[dict[str, str]]:
    """One row per registered block type: name, the stage fields it uses, its doc."""
    return [dict(block=b.name, uses=", ".join(b.uses) or "-", doc=b.doc) for b in _REGISTRY.values()]


# -- the built-in block types (builders live in models.py, the torch side) ---------------

register_block("basic", "scalesearch.measure.models:BasicBlock.from_args", uses=("kernel",),
               doc="ResNet basic block: two kxk convs + identity/projection shortcut")
register_block("bottleneck", "scalesearch.measure.models:Bottleneck.from_args", uses=("kernel", "expand_ratio"),
               doc="ResNet bottleneck (v1.5): 1x1, kxk (strided), 1x1; hidden = out * expand_ratio")
register_block("dwsep", "scalesearch.measure.models:DepthwiseSeparable.from_args", uses=("kernel",),
               doc="MobileNetV1 layer: depthwise kxk conv, then pointwise 1x1 conv")
register_block("inverted_residual", "scalesearch.measure.models:InvertedResidual.from_args",
               uses=("kernel", "expand_ratio", "se_ratio"),
               doc="MobileNetV2 inverted residual: 1x1 expand, depthwise kxk, (SE), linear 1x1")
register_block("mbconv", "scalesearch.measure.models:InvertedResidual.from_args",
               uses=("kernel", "expand_ratio", "se_ratio"),
               doc="EfficientNet MBConv: the inverted residual, used with SE and SiLU")
register_block("conv", "scalesearch.measure.models:conv_block", uses=("kernel",),
               doc="plain kxk conv + BN + activation (VGG)")
