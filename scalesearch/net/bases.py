"""The named base networks, declared as data, and lookup by name or spec-file path.

Each base reproduces a widely used reference implementation exactly (parameter counts
are asserted in the tests).  EfficientNet-B1..B7 are not separate tables: they are B0
scaled by the released (width, depth, resolution) coefficients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import checked_arguments
from .scaling import scale
from .spec import HeadSpec, NetworkSpec, SpecError, StageSpec, StemSpec, load_spec


def _resnet(name: str, block: str, layers: tuple[int, int, int, int]) -> NetworkSpec:
    expansion = 4 if block == "bottleneck" else 1
    widths = (64, 128, 256, 512)
    return NetworkSpec(
        name=name,
        stem=StemSpec(out_channels=64, kernel=7, stride=2, pool=True),
        stages=tuple(
            StageSpec(block=block, out_channels=w * expansion, layers=n, stride=1 if i == 0 else 2,
                      kernel=3, expand_ratio=1 / expansion if block == "bottleneck" else 1.0)
            for i, (w, n) in enumerate(zip(widths, layers))
        ),
        head=HeadSpec(channels=0),
        activation="relu",
    )


def resnet20_cifar() -> NetworkSpec:
    """ResNet-20 for 32px CIFAR images (He et al. 2016, Sec. 4.2), with projection shortcuts."""
    return NetworkSpec(
        name="resnet20-cifar",
        stem=StemSpec(out_channels=16, kernel=3, stride=1),
        stages=tuple(StageSpec(block="basic", out_channels=c, layers=3, stride=s)
                     for c, s in ((16, 1), (32, 2), (64, 2))),
        head=HeadSpec(channels=0),
        resolution=32,
        num_classes=10,
        activation="relu",
    )


def mobilenetv1() -> NetworkSpec:
    """MobileNetV1 (Howard et al. 2017), width 1.0, 224px: 13 depthwise-separable layers."""
    rows = [(64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2)]
    return NetworkSpec(
        name="mobilenetv1",
        stem=StemSpec(out_channels=32, kernel=3, stride=2),
        stages=tuple(StageSpec(block="dwsep", out_channels=c, layers=n, stride=s) for c, n, s in rows),
        head=HeadSpec(channels=0),
        activation="relu",
    )


def mobilenetv2() -> NetworkSpec:
    """MobileNetV2 (Sandler et al. 2018), as in torchvision: rows of (t, c, n, s)."""
    rows = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
    return NetworkSpec(
        name="mobilenetv2",
        stem=StemSpec(out_channels=32, kernel=3, stride=2),
        stages=tuple(StageSpec(block="inverted_residual", out_channels=c, layers=n, stride=s,
                               kernel=3, expand_ratio=t) for t, c, n, s in rows),
        head=HeadSpec(channels=1280, dropout=0.2),
        activation="relu6",
    )


def efficientnet_b0() -> NetworkSpec:
    """EfficientNet-B0, the paper's Table 1: rows of (expand, kernel, stride, channels, layers)."""
    rows = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
            (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    return NetworkSpec(
        name="efficientnet-b0",
        stem=StemSpec(out_channels=32, kernel=3, stride=2),
        stages=tuple(StageSpec(block="mbconv", out_channels=c, layers=n, stride=s, kernel=k,
                               expand_ratio=t, se_ratio=0.25) for t, k, s, c, n in rows),
        head=HeadSpec(channels=1280, dropout=0.2),
        activation="silu",
    )


# The released EfficientNet coefficients: (width, depth, resolution, dropout).
EFFICIENTNET_COEFFICIENTS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
}


def _efficientnet(name: str) -> Callable[[], NetworkSpec]:
    def make() -> NetworkSpec:
        width, depth, resolution, dropout = EFFICIENTNET_COEFFICIENTS[name]
        b0 = efficientnet_b0()
        scaled = scale(b0, d=depth, w=width, r=resolution / b0.resolution)
        return scaled.replace(name=name, head=HeadSpec(scaled.head.channels, dropout))
    return make


BASES: dict[str, Callable[[], NetworkSpec]] = {
    "resnet18": lambda: _resnet("resnet18", "basic", (2, 2, 2, 2)),
    "resnet34": lambda: _resnet("resnet34", "basic", (3, 4, 6, 3)),
    "resnet50": lambda: _resnet("resnet50", "bottleneck", (3, 4, 6, 3)),
    "resnet101": lambda: _resnet("resnet101", "bottleneck", (3, 4, 23, 3)),
    "resnet152": lambda: _resnet("resnet152", "bottleneck", (3, 8, 36, 3)),
    "resnet20-cifar": resnet20_cifar,
    "mobilenetv1": mobilenetv1,
    "mobilenetv2": mobilenetv2,
    **{name: _efficientnet(name) for name in EFFICIENTNET_COEFFICIENTS},
}


class UnknownBaseError(SpecError):
    pass


def base_names() -> list[str]:
    return list(BASES)


@checked_arguments
def get_base(name_or_path: str | Path) -> NetworkSpec:
    """A registered base by name, or a spec read from a .json/.yaml/.yml file path."""
    key = str(name_or_path)
    if key in BASES:
        return BASES[key]()
    if key.lower() in BASES:
        return BASES[key.lower()]()
    path = Path(key)
    if path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists():
        return load_spec(path)
    raise UnknownBaseError(f"unknown base '{key}'; valid bases: {', '.join(BASES)} "
                           "(or a path to a .json/.yaml spec file)")
