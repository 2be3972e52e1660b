"""Analytic cost twins: the figures fvcore would count for a built-in part, from its shape key alone.

As in pycls, each layer the built-in parts use has a twin that computes its cost from
shapes (no module is built, nothing is traced), and each built-in part (stem, head, every
built-in block type in ``models.py``) is the sum of its layers' twins, in the order its
``forward`` runs them.  Every formula follows fvcore's own handle for the operator the
layer emits when traced in eval mode at batch size 1, so the totals are identical to
fvcore's (tests/test_cost.py checks them against one fvcore call per network):

* Conv2d: flops = output elements x (in_ch / groups) x kh x kw (``conv_flop_jit``: the
  weight's size times the output pixels; a bias adds no multiply-add); acts = output
  elements (``generic_activation_jit``, asked for conv only).
* Linear: flops = in features x out features at batch size 1 (``linear_flop_jit``).
* BatchNorm2d: other_flops = 2 per element (``batchnorm_flop_jit``, eval mode with
  affine: normalise, then scale and shift).
* AdaptiveAvgPool2d: other_flops = 1 per input element (``elementwise_flop_counter(1, 0)``).
* MaxPool2d, activations, sigmoid, the residual add, the SE multiply, dropout, flatten:
  nothing (fvcore ignores these operators or has no handle for them).

``params`` is the sum of the layers' parameter counts (weights, biases, BN gamma/beta).
``memory`` is what the memory check needs beside the part's input, in elements: weights,
buffers (a BN's running mean, variance and step count) and the output of every layer that
makes a new tensor (in-place activations, identities and eval-mode dropout make none).

Which parts have a twin is decided by the *builder* a block name is registered with, not
by the name: a user block type, or a built-in name re-registered with another builder,
has none, and the counter traces it with fvcore instead.  No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..net.blocks import get_block
from ..net.scaling import round_channels


@dataclass(frozen=True)
class Tally:
    """The cost of some layers at batch size 1 (the fields of ``cost.Cost``, plus memory)."""

    params: int = 0
    flops: int = 0        # conv + linear multiply-adds
    other_flops: int = 0  # batch norm, adaptive average pooling
    acts: int = 0         # conv output elements
    memory: int = 0       # elements of weights, buffers and new layer outputs (not the input)

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.params + other.params, self.flops + other.flops, self.other_flops + other.other_flops,
                     self.acts + other.acts, self.memory + other.memory)


NOTHING = Tally()


# -- layer twins: each takes its input (channels, size) and returns (Tally, output size) -----

def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """torch's Conv2d/MaxPool2d output size (dilation 1, floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv2d(cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
           bias: bool = False) -> tuple[Tally, int]:
    """Conv2d padded by kernel // 2 (as ``models.conv_bn_act`` and the SE convs are).

    fvcore's ``conv_flop_jit``: batch x prod(weight shape) x output pixels, the weight
    being (cout, cin / groups, k, k); the bias adds no multiply-add.  Its activation
    count (``generic_activation_jit`` on the conv) is the output's element count.
    """
    out = conv_output_size(size, kernel, stride, kernel // 2)
    weights = cout * (cin // groups) * kernel * kernel
    params = weights + (cout if bias else 0)
    outputs = cout * out * out
    return Tally(params=params, flops=weights * out * out, acts=outputs, memory=params + outputs), out


def batch_norm2d(channels: int, size: int) -> Tally:
    """BatchNorm2d in eval mode (the counted network is in eval mode).

    fvcore's ``batchnorm_flop_jit`` counts 2 per input element when not training and
    affine (normalise, then scale and shift).  Its buffers: running mean and variance
    (one each per channel) and the step count (one element).
    """
    elements = channels * size * size
    return Tally(params=2 * channels, other_flops=2 * elements, memory=2 * channels + 2 * channels + 1 + elements)


def adaptive_avg_pool2d(channels: int, size: int) -> Tally:
    """Global average pooling to 1x1: fvcore's ``elementwise_flop_counter(1, 0)``, one per input element."""
    return Tally(other_flops=channels * size * size, memory=channels)


def max_pool2d(channels: int, size: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> tuple[Tally, int]:
    """MaxPool2d: fvcore has no handle for it (skipped, 0 FLOPs); its output takes memory."""
    out = conv_output_size(size, kernel, stride, padding)
    return Tally(memory=channels * out * out), out


def linear(cin: int, cout: int) -> Tally:
    """Linear with bias on a (1, cin) input: fvcore's ``linear_flop_jit``, input elements x out features."""
    params = cin * cout + cout
    return Tally(params=params, flops=cin * cout, memory=params + cout)


def conv_bn(cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> tuple[Tally, int]:
    """``models.conv_bn_act``: conv (no bias) + BN; its activation, in place, counts nothing."""
    conv, out = conv2d(cin, cout, kernel, stride, size, groups)
    return conv + batch_norm2d(cout, out), out


# -- part twins: (the part key's arguments) -> (Tally, output size) ----------------------

def stem(cin: int, cout: int, kernel: int, stride: int, pool: bool, size: int) -> tuple[Tally, int]:
    """``models.Stem``: conv_bn_act on the cin-channel image, then an optional 3x3 stride-2 max-pool."""
    tally, out = conv_bn(cin, cout, kernel, stride, size)
    if pool:
        pooled, out = max_pool2d(cout, out)
        tally = tally + pooled
    return tally, out


def head(cin: int, channels: int, classes: int, size: int) -> Tally:
    """``models.Head`` as counted (no feature norm): optional 1x1 conv_bn_act, pool, dropout, classifier."""
    tally = NOTHING
    if channels:
        tally, _ = conv_bn(cin, channels, 1, 1, size)
    features = channels or cin
    return tally + adaptive_avg_pool2d(features, size) + linear(features, classes)


def _shortcut(cin: int, cout: int, stride: int, size: int) -> Tally:
    # Identity (no new tensor) unless the shape changes: then a 1x1 projection conv + BN.
    return conv_bn(cin, cout, 1, stride, size)[0] if stride != 1 or cin != cout else NOTHING


def basic(cin: int, cout: int, stride: int, kernel: int, expand_ratio: float, se_ratio: float,
          size: int) -> tuple[Tally, int]:
    """``models.BasicBlock``: two kxk conv_bn, the shortcut; the add and the out activation count nothing."""
    first, out = conv_bn(cin, cout, kernel, stride, size)
    second, out = conv_bn(cout, cout, kernel, 1, out)
    return first + second + _shortcut(cin, cout, stride, size), out


def bottleneck(cin: int, cout: int, stride: int, kernel: int, expand_ratio: float, se_ratio: float,
               size: int) -> tuple[Tally, int]:
    """``models.Bottleneck`` (v1.5): 1x1, kxk (strided), 1x1 through mid = round(cout * ratio) channels."""
    mid = max(1, int(round(cout * expand_ratio)))
    reduce, _ = conv_bn(cin, mid, 1, 1, size)
    spatial, out = conv_bn(mid, mid, kernel, stride, size)
    expand, out = conv_bn(mid, cout, 1, 1, out)
    return reduce + spatial + expand + _shortcut(cin, cout, stride, size), out


def dwsep(cin: int, cout: int, stride: int, kernel: int, expand_ratio: float, se_ratio: float,
          size: int) -> tuple[Tally, int]:
    """``models.DepthwiseSeparable``: depthwise kxk conv_bn (groups = cin), pointwise 1x1 conv_bn."""
    depthwise, out = conv_bn(cin, cin, kernel, stride, size, groups=cin)
    pointwise, out = conv_bn(cin, cout, 1, 1, out)
    return depthwise + pointwise, out


def squeeze_excitation(channels: int, squeeze: int, size: int) -> Tally:
    """``models.SqueezeExcitation``: global pool, 1x1 conv (bias) to ``squeeze``, act, 1x1 conv (bias) back.

    The sigmoid and the multiply are element-wise ops fvcore does not count.
    """
    reduce, _ = conv2d(channels, squeeze, 1, 1, 1, bias=True)
    expand, _ = conv2d(squeeze, channels, 1, 1, 1, bias=True)
    return adaptive_avg_pool2d(channels, size) + reduce + expand


def inverted_residual(cin: int, cout: int, stride: int, kernel: int, expand_ratio: float, se_ratio: float,
                      size: int) -> tuple[Tally, int]:
    """``models.InvertedResidual`` (MBConv with SE): 1x1 expand, depthwise kxk, SE, linear 1x1 project."""
    hidden = round_channels(cin * expand_ratio) if expand_ratio != 1 else cin
    tally = NOTHING
    if expand_ratio != 1:
        tally, _ = conv_bn(cin, hidden, 1, 1, size)
    depthwise, out = conv_bn(hidden, hidden, kernel, stride, size, groups=hidden)
    tally = tally + depthwise
    if se_ratio > 0:
        tally = tally + squeeze_excitation(hidden, max(1, int(cin * se_ratio)), out)
    project, out = conv_bn(hidden, cout, 1, 1, out)
    return tally + project, out


def conv_block(cin: int, cout: int, stride: int, kernel: int, expand_ratio: float, se_ratio: float,
               size: int) -> tuple[Tally, int]:
    """``models.conv_block``: one kxk conv_bn (+ activation)."""
    return conv_bn(cin, cout, kernel, stride, size)


BlockTwin = Callable[[int, int, int, int, float, float, int], "tuple[Tally, int]"]

# The twin of each built-in builder, by the builder reference ``blocks`` registers it with.
BLOCK_TWINS: dict[str, BlockTwin] = {
    "scalesearch.measure.models:BasicBlock.from_args": basic,
    "scalesearch.measure.models:Bottleneck.from_args": bottleneck,
    "scalesearch.measure.models:DepthwiseSeparable.from_args": dwsep,
    "scalesearch.measure.models:InvertedResidual.from_args": inverted_residual,
    "scalesearch.measure.models:conv_block": conv_block,
}


def block_twin(block: str) -> BlockTwin | None:
    """The twin of a registered block type, or None when its builder has none (a user block)."""
    builder = get_block(block).builder
    return BLOCK_TWINS.get(builder) if isinstance(builder, str) else None


def part_tally(key: tuple) -> tuple[Tally, int] | None:
    """(Tally, output size) of a part from its key (``models.Part.key``), or None without a twin.

    The key's activation name does not matter: no activation is counted and all run in place.
    """
    kind, *args = key
    if kind == "stem":
        cin, cout, kernel, stride, pool, _act, size = args
        return stem(cin, cout, kernel, stride, pool, size)
    if kind == "head":
        cin, channels, classes, _dropout, _act, size = args
        return head(cin, channels, classes, size), 1
    block, cin, cout, stride, kernel, expand_ratio, se_ratio, _act, size = args
    twin = block_twin(block)
    return None if twin is None else twin(cin, cout, stride, kernel, expand_ratio, se_ratio, size)
