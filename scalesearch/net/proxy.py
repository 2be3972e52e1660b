"""Proxies that keep the base's feature-map geometry (``--keep-maps``).

A short-training proxy usually shrinks the input: ImageNet bases at 32 px instead of 224.
With the native strides, a total stride of 32 leaves efficientnet-b0's last stages, and
ResNet-50's after its max-pool, on 1x1 maps: their 3x3 convolutions see one pixel and the
squeeze-excitation pools a single value, so extra depth or width has nothing spatial to
work on and only resolution can pay.  A ranking measured there describes the proxy, not
the method (experiments/table3-cifar10/NOTES.md, experiments/figure8-cifar10/NOTES.md).

``keep_maps`` adapts a base to a proxy resolution with one rule: remove stride-2 steps
from the earliest layers (the stem's stride, then the stem's max-pool, then each stage's
first stride in order) until the last feature map at the proxy resolution is at least as
large as at the base's native resolution, removing as few as that needs.  The earliest
steps go first because they are the ones a small image does not need: at 32 px the
network should start at the resolution the native base reaches after its stem, and every
later stage then sees the map size it was designed for (efficientnet-b0 at 32 px: three of
its five halvings removed, last map 8x8 against 7x7 natively).

The transform is pure: channels, layers, kernels and blocks are untouched, only strides
(and the pool flag) change, so (d, w, r) scaling applies to the adapted spec exactly as to
the base.  The family a search extrapolates is built on the native base (the geometry is a
property of the proxy, not of the models a user will train).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .spec import NetworkSpec, layer_inputs


def last_map(spec: NetworkSpec) -> int:
    """Height (= width) of the feature map the head pools, at the spec's resolution."""
    return next(site.size for site in layer_inputs(spec) if site.part == "head")


def halvings(spec: NetworkSpec) -> list[str]:
    """The spec's stride-2 steps, earliest first, by name: 'stem', 'pool', 'stage N'."""
    steps = ["stem"] if spec.stem.stride == 2 else []
    steps += ["pool"] if spec.stem.pool else []
    steps += [f"stage {i}" for i, stage in enumerate(spec.stages, start=1) if stage.stride == 2]
    return steps


def remove_halvings(spec: NetworkSpec, count: int) -> NetworkSpec:
    """``spec`` with its first ``count`` stride-2 steps (earliest first) made stride 1."""
    if not 0 <= count <= len(halvings(spec)):
        raise UserError(f"{spec.name} has {len(halvings(spec))} stride-2 steps; cannot remove {count}")
    stem, stages, left = spec.stem, list(spec.stages), count
    if left and stem.stride == 2:
        stem, left = stem.__class__(**{**stem.__dict__, "stride": 1}), left - 1
    if left and stem.pool:
        stem, left = stem.__class__(**{**stem.__dict__, "pool": False}), left - 1
    for i, stage in enumerate(stages):
        if left and stage.stride == 2:
            stages[i], left = stage.__class__(**{**stage.__dict__, "stride": 1}), left - 1
    return spec.replace(stem=stem, stages=tuple(stages))


@dataclass(frozen=True)
class Geometry:
    """What ``keep_maps`` did: the steps removed and the last map before and after."""

    native_resolution: int
    native_map: int       # last feature map of the base at its native resolution
    resolution: int
    proxy_map: int        # last feature map at ``resolution`` with the native strides
    adapted_map: int      # ... and with the adapted strides
    removed: tuple[str, ...]

    @property
    def text(self) -> str:
        if not self.removed:
            return (f"keep-maps: nothing to remove: at {self.resolution}px the last feature map is "
                    f"{self.adapted_map}x{self.adapted_map} (native {self.native_resolution}px: "
                    f"{self.native_map}x{self.native_map})")
        return (f"keep-maps: stride 1 at {', '.join(self.removed)}: last feature map "
                f"{self.adapted_map}x{self.adapted_map} at {self.resolution}px (native strides: "
                f"{self.proxy_map}x{self.proxy_map}; native {self.native_resolution}px: "
                f"{self.native_map}x{self.native_map})")


def keep_maps(base: NetworkSpec, resolution: int) -> tuple[NetworkSpec, Geometry]:
    """``base`` at ``resolution`` with as few early stride-2 steps removed as keep its last
    feature map at least as large as at its native resolution (see the module docstring)."""
    native_map = last_map(base)
    proxy = base.replace(resolution=resolution)
    steps = halvings(proxy)
    count = 0
    while count < len(steps) and last_map(remove_halvings(proxy, count)) < native_map:
        count += 1
    adapted = remove_halvings(proxy, count)
    return adapted, Geometry(base.resolution, native_map, resolution, last_map(proxy), last_map(adapted),
                             tuple(steps[:count]))


__all__ = ["Geometry", "halvings", "keep_maps", "last_map", "remove_halvings"]
