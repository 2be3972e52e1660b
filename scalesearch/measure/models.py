"""Builders from a NetworkSpec to a torch.nn.Module (the only torch in the model code).

One builder decodes every stage of a spec into blocks, so every family gets scaling
for free; each block type's builder is looked up in the ``blocks`` registry.  A network
is kept as a list of *parts* (stem, each block, head), each with a hashable key that
fully determines its shape and cost: the cost counter reuses parts that repeat within a
network and across the networks of a search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..net.blocks import RESIDUAL_INITS, BlockArgs, get_block
from ..net.scaling import round_channels
from ..net.spec import NetworkSpec, layer_inputs

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


def conv_block(a: BlockArgs) -> nn.Sequential:
    """The registered "conv" block: kxk conv + BN + activation."""
    return conv_bn_act(a.cin, a.cout, a.kernel, a.stride, act=a.activation)


# Residual blocks name (``residual_bn()``) the BN whose output is added to the shortcut.
# It starts at gamma = 0 (Goyal et al. 2017), so each block starts as its shortcut and a
# deep net trains like a shallow one at first.  A registered user block may define it too.

class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, act: str) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, kernel, stride, act=act)
        self.conv2 = conv_bn_act(cout, cout, kernel, 1, act=None)
        self.shortcut = (conv_bn_act(cin, cout, 1, stride, act=None)
                         if stride != 1 or cin != cout else nn.Identity())
        self.out_act = _act(act)

    def residual_bn(self) -> nn.BatchNorm2d:
        return self.conv2[1]

    @classmethod
    def from_args(cls, a: BlockArgs) -> "BasicBlock":
        return cls(a.cin, a.cout, a.stride, a.kernel, a.activation)

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

    def residual_bn(self) -> nn.BatchNorm2d:
        return self.conv3[1]

    @classmethod
    def from_args(cls, a: BlockArgs) -> "Bottleneck":
        return cls(a.cin, a.cout, a.stride, a.kernel, a.expand_ratio, a.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 layer: depthwise kxk conv, then pointwise 1x1 conv, each BN + act."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, act: str) -> None:
        super().__init__()
        self.dw = conv_bn_act(cin, cin, kernel, stride, groups=cin, act=act)
        self.pw = conv_bn_act(cin, cout, 1, act=act)

    @classmethod
    def from_args(cls, a: BlockArgs) -> "DepthwiseSeparable":
        return cls(a.cin, a.cout, a.stride, a.kernel, a.activation)

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

    def residual_bn(self) -> nn.BatchNorm2d | None:
        return self.block[-1][1] if self.residual else None

    @classmethod
    def from_args(cls, a: BlockArgs) -> "InvertedResidual":
        return cls(a.cin, a.cout, a.stride, a.kernel, a.expand_ratio, a.se_ratio, a.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class Head(nn.Module):
    """Optional 1x1 conv, global average pool, dropout, classifier.

    ``feature_norm`` puts a batch norm without affine parameters on the pooled features
    (``self.norm``).  It is for short training: the pooled features of a ReLU/SiLU net share
    a large positive mean (in a residual net it grows with depth), so each step's classifier
    update shifts every class's logit by lr x mean^2 x channels x (the batch's class
    frequencies minus the predicted ones), noise that kept deep candidates at chance.
    Centred and scaled features remove it.  In eval mode it is a fixed affine map, which
    ``fold_feature_norm`` merges into the classifier, leaving the reference architecture.
    """

    def __init__(self, cin: int, channels: int, num_classes: int, dropout: float, act: str,
                 feature_norm: bool = False) -> None:
        super().__init__()
        self.conv = conv_bn_act(cin, channels, 1, act=act) if channels else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.BatchNorm1d(channels or cin, affine=False) if feature_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(channels or cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.norm(torch.flatten(self.pool(self.conv(x)), 1))))


class Stem(nn.Module):
    def __init__(self, cout: int, kernel: int, stride: int, pool: bool, act: str, cin: int = 3) -> None:
        super().__init__()
        self.conv = conv_bn_act(cin, cout, kernel, stride, act=act)
        self.pool = nn.MaxPool2d(3, 2, 1) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


@dataclass(frozen=True)
class Part:
    """One piece of a network: its cost depends only on ``key`` (which includes the input shape)."""

    key: tuple
    input_shape: tuple[int, int, int]  # (C, H, W) for batch size 1
    where: str = field(default="", compare=False)  # "stem", "stage 3 layer 2", "head": for messages

    def build(self, feature_norm: bool = False) -> nn.Module:
        kind, *args = self.key
        if kind == "stem":
            cin, cout, kernel, stride, pool, act, _ = args
            return Stem(cout, kernel, stride, pool, act, cin)
        if kind == "head":
            cin, channels, classes, dropout, act, _ = args
            return Head(cin, channels, classes, dropout, act, feature_norm)
        block, cin, cout, stride, kernel, expand, se, act, _ = args
        module = get_block(block).build(BlockArgs(cin, cout, stride, kernel, expand, se, act))
        if not isinstance(module, nn.Module):
            raise TypeError(f"the builder of block '{block}' returned {type(module).__name__}, not an nn.Module")
        return module


def iter_parts(spec: NetworkSpec) -> Iterator[Part]:
    """Walk the spec's Eq. 1 structure, yielding stem, each layer of each stage, head."""
    act = spec.activation
    for site in layer_inputs(spec):
        shape = (site.in_channels, site.size, site.size)
        if site.part == "stem":
            yield Part(("stem", site.in_channels, spec.stem.out_channels, spec.stem.kernel, spec.stem.stride,
                        spec.stem.pool, act, site.size), shape, "stem")
        elif site.part == "head":
            yield Part(("head", site.in_channels, spec.head.channels, spec.num_classes,
                        float(spec.head.dropout), act, site.size), shape, "head")
        else:
            st = spec.stages[site.stage - 1]
            yield Part(("block", st.block, site.in_channels, st.out_channels, site.stride, st.kernel,
                        float(st.expand_ratio), float(st.se_ratio), act, site.size), shape,
                       f"stage {site.stage} layer {site.layer + 1}")


# How the BN scale (gamma) feeding each residual add starts: "one" (the reference init),
# "zero" (Goyal et al. 2017: every residual block starts as its shortcut) or "scaled":
# 1/sqrt(L) for a network of L residual blocks, so all the branches together add about the
# variance of one unit-scale branch to the stream, whatever the depth (as Fixup and GPT-2
# scale residual branches by depth).


class ScaledNet(nn.Module):
    """A network built from a spec: stem, the stages' blocks in order, head."""

    def __init__(self, spec: NetworkSpec, residual_init: str = "one", feature_norm: bool = False) -> None:
        super().__init__()
        self.spec = spec
        parts = list(iter_parts(spec))
        self.stem = parts[0].build()
        self.blocks = nn.Sequential(*(p.build() for p in parts[1:-1]))
        self.head = parts[-1].build(feature_norm)
        _init_weights(self, residual_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def residual_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The batch norms whose output is added to a residual stream, in order."""
    found = (m.residual_bn() for m in model.modules() if callable(getattr(m, "residual_bn", None)))
    return [bn for bn in found if isinstance(bn, nn.BatchNorm2d)]


def _init_weights(model: nn.Module, residual_init: str = "one") -> None:
    if residual_init not in RESIDUAL_INITS:
        raise ValueError(f"residual_init must be one of {', '.join(RESIDUAL_INITS)} (got {residual_init!r})")
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
    if residual_init == "one":
        return
    bns = residual_bns(model)
    for bn in bns:
        nn.init.constant_(bn.weight, 0.0 if residual_init == "zero" else 1 / math.sqrt(len(bns)))


def build(spec: NetworkSpec, device: str | torch.device | None = None,
          residual_init: str = "one", feature_norm: bool = False) -> ScaledNet:
    """Build the torch module for a spec (``device='meta'`` builds shapes without memory).

    ``residual_init`` says how the BN scale feeding each residual add starts (see
    ``RESIDUAL_INITS``): "one" by default; "zero" (Goyal et al. 2017) left short proxy
    training of shallow nets near chance here; "scaled" (1/sqrt(L) for L residual blocks)
    with layer-wise rates trained ResNet-18 at every depth (experiments/deep-candidates/NOTES.md).
    ``feature_norm`` adds the head's normalisation of the pooled features (see ``Head``),
    which the short-training recipe uses (``TrainConfig.feature_norm``).
    """
    if device is None:
        return ScaledNet(spec, residual_init, feature_norm)
    with torch.device(device):
        return ScaledNet(spec, residual_init, feature_norm)


@torch.no_grad()
def fold_feature_norm(model: ScaledNet) -> ScaledNet:
    """Merge the head's feature normalisation (its running statistics) into the classifier,
    in place: the result computes the same eval-mode outputs with the reference head."""
    head = model.head
    norm = head.norm
    if not isinstance(norm, nn.BatchNorm1d):
        return model
    scale = torch.rsqrt(norm.running_var + norm.eps)
    head.fc.bias.sub_(head.fc.weight @ (norm.running_mean * scale))
    head.fc.weight.mul_(scale)
    head.norm = nn.Identity()
    return model


def count_params(spec: NetworkSpec) -> int:
    """Parameters of the built network, counted on the meta device (no memory, no init)."""
    return sum(p.numel() for p in build(spec, "meta").parameters())
