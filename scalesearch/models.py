"""Builders from a NetworkSpec to a torch.nn.Module (the only torch in the model code).

One builder decodes every stage of a spec into blocks, so every family gets scaling
for free.  A network is kept as a list of *parts* (stem, each block, head), each with a
hashable key that fully determines its shape and cost: the cost counter reuses parts
that repeat within a network and across the networks of a search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .scaling import round_channels
from .spec import NetworkSpec

_ACT = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    return _ACT[name](inplace=True)


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                act: str | None = "relu") -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, act: str) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, kernel, stride, act=act)
        self.conv2 = conv_bn_act(cout, cout, kernel, 1, act=None)
        self.shortcut = (conv_bn_act(cin, cout, 1, stride, act=None)
                         if stride != 1 or cin != cout else nn.Identity())
        self.out_act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck (v1.5: the stride sits on the 3x3 conv)."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, ratio: float, act: str) -> None:
        super().__init__()
        mid = max(1, int(round(cout * ratio)))
        self.conv1 = conv_bn_act(cin, mid, 1, act=act)
        self.conv2 = conv_bn_act(mid, mid, kernel, stride, act=act)
        self.conv3 = conv_bn_act(mid, cout, 1, act=None)
        self.shortcut = (conv_bn_act(cin, cout, 1, stride, act=None)
                         if stride != 1 or cin != cout else nn.Identity())
        self.out_act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 layer: depthwise kxk conv, then pointwise 1x1 conv, each BN + act."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, act: str) -> None:
        super().__init__()
        self.dw = conv_bn_act(cin, cin, kernel, stride, groups=cin, act=act)
        self.pw = conv_bn_act(cin, cout, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int, act: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual with linear bottleneck; with SE + SiLU it is MBConv."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, expand_ratio: float,
                 se_ratio: float, act: str) -> None:
        super().__init__()
        hidden = round_channels(cin * expand_ratio) if expand_ratio != 1 else cin
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(cin, hidden, 1, act=act))
        layers.append(conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se_ratio > 0:
            layers.append(SqueezeExcitation(hidden, max(1, int(cin * se_ratio)), act))
        layers.append(conv_bn_act(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class Head(nn.Module):
    def __init__(self, cin: int, channels: int, num_classes: int, dropout: float, act: str) -> None:
        super().__init__()
        self.conv = conv_bn_act(cin, channels, 1, act=act) if channels else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(channels or cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.conv(x)), 1)))


class Stem(nn.Module):
    def __init__(self, cout: int, kernel: int, stride: int, pool: bool, act: str) -> None:
        super().__init__()
        self.conv = conv_bn_act(3, cout, kernel, stride, act=act)
        self.pool = nn.MaxPool2d(3, 2, 1) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


@dataclass(frozen=True)
class Part:
    """One piece of a network: its cost depends only on ``key`` (which includes the input shape)."""

    key: tuple
    input_shape: tuple[int, int, int]  # (C, H, W) for batch size 1

    def build(self) -> nn.Module:
        kind, *args = self.key
        if kind == "stem":
            cout, kernel, stride, pool, act, _ = args
            return Stem(cout, kernel, stride, pool, act)
        if kind == "head":
            cin, channels, classes, dropout, act, _ = args
            return Head(cin, channels, classes, dropout, act)
        block, cin, cout, stride, kernel, expand, se, act, _ = args
        if block == "basic":
            return BasicBlock(cin, cout, stride, kernel, act)
        if block == "bottleneck":
            return Bottleneck(cin, cout, stride, kernel, expand, act)
        if block == "dwsep":
            return DepthwiseSeparable(cin, cout, stride, kernel, act)
        if block == "conv":
            return conv_bn_act(cin, cout, kernel, stride, act=act)
        if block in ("inverted_residual", "mbconv"):
            return InvertedResidual(cin, cout, stride, kernel, expand, se, act)
        raise ValueError(f"unknown block type {block!r}")


def iter_parts(spec: NetworkSpec) -> Iterator[Part]:
    """Walk the spec's Eq. 1 structure, yielding stem, each layer of each stage, head."""
    size = spec.resolution
    act = spec.activation
    yield Part(("stem", spec.stem.out_channels, spec.stem.kernel, spec.stem.stride,
                spec.stem.pool, act, size), (3, size, size))
    size = -(-size // spec.stem.stride)
    if spec.stem.pool:
        size = -(-size // 2)
    cin = spec.stem.out_channels
    for st in spec.stages:
        for i in range(st.layers):
            stride = st.stride if i == 0 else 1
            yield Part(("block", st.block, cin, st.out_channels, stride, st.kernel,
                        float(st.expand_ratio), float(st.se_ratio), act, size), (cin, size, size))
            size = -(-size // stride)
            cin = st.out_channels
    yield Part(("head", cin, spec.head.channels, spec.num_classes, float(spec.head.dropout), act, size),
               (cin, size, size))


class ScaledNet(nn.Module):
    """A network built from a spec: stem, the stages' blocks in order, head."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        parts = list(iter_parts(spec))
        self.stem = parts[0].build()
        self.blocks = nn.Sequential(*(p.build() for p in parts[1:-1]))
        self.head = parts[-1].build()
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _init_weights(model: nn.Module) -> None:
    if next(model.parameters()).is_meta:
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build(spec: NetworkSpec, device: str | torch.device | None = None) -> ScaledNet:
    """Build the torch module for a spec (``device='meta'`` builds shapes without memory)."""
    if device is None:
        return ScaledNet(spec)
    with torch.device(device):
        return ScaledNet(spec)


def count_params(spec: NetworkSpec) -> int:
    """Parameters of the built network, counted on the meta device (no memory, no init)."""
    return sum(p.numel() for p in build(spec, "meta").parameters())
