"""The cost counter: params, FLOPs and activations of a spec, with fvcore as the counter of record.

What is counted (the convention of the paper and of the reference implementations'
published figures):

* ``flops``: multiply-adds of convolution and linear layers (fvcore's ``conv``,
  ``linear``, ``addmm``, ``matmul`` counts; one multiply-add = one FLOP).
* ``other_flops``: everything else fvcore counts: batch norm (two per element in eval
  mode: normalise, then scale and shift) and adaptive average pooling (one per input
  element).  Element-wise ops (activations, residual adds, the SE multiply) and max
  pooling are not counted by fvcore and are not counted here.
* ``acts``: output elements of every convolution (fvcore's activation rule for conv),
  the memory side of the paper's Eq. 2.

How: a network is split into parts (stem, each block, head) whose cost depends only on
their shape key, and each distinct part is counted once per process and reused within a
network (repeated layers of a stage) and across the networks of a search.  A built-in part
is counted from its key alone by its analytic twin (``cost_analytic``: fvcore's formulas,
no module built, nothing traced); a part without a twin (a user-registered block type) is
built and traced with fvcore.  Totals are identical to one fvcore call on the whole
network (``count_cost_plain``, the reference the tests hold the twins to), since fvcore's
totals are sums over operators.

Before anything is counted, each part's memory at batch size 1 (float32 weights, buffers,
its input and every layer's output) is worked out from shapes alone: by the twin, or for a
part without one by running it on the meta device; a part over ``MEMORY_LIMIT_GIB`` is
refused with a ``MemoryLimitError`` instead of being allocated.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.activation_count import generic_activation_jit
from fvcore.nn.flop_count import conv_flop_jit

from ..net import blocks
from .cost_analytic import Tally, part_tally
from ..errors import UserError, checked_arguments, require
from .models import Part, build, iter_parts
from ..net.spec import NetworkSpec, output_size

FLOP_OPERATORS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")
ACTS_KEY = "conv_activations"


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int        # conv + linear multiply-adds
    other_flops: int  # batch norm, pooling (fvcore's other counts)
    acts: int         # output elements of conv layers

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.flops + other.flops,
                    self.other_flops + other.other_flops, self.acts + other.acts)


ZERO = Cost(0, 0, 0, 0)
MEMORY_LIMIT_GIB = 2.0  # per part, weights + activations at batch size 1
BYTES_PER_ELEMENT = 4   # float32


class MemoryLimitError(UserError):
    """A part of the network is too large to build (the message gives the figure and the limit)."""
_conv_acts = generic_activation_jit(ACTS_KEY)


def _conv_handle(inputs, outputs):  # noqa: ANN001 - fvcore handle signature
    # One trace gives both figures: conv multiply-adds and conv output elements.
    return conv_flop_jit(inputs, outputs) + _conv_acts(inputs, outputs)  # both Counters


def _analysis(module: torch.nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    fa = FlopCountAnalysis(module, x)
    fa.set_op_handle("aten::_convolution", _conv_handle)
    return fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def split_counts(by_operator: Counter) -> tuple[int, int, int]:
    """(flops, other_flops, acts) from fvcore's per-operator counts."""
    acts = int(by_operator.get(ACTS_KEY, 0))
    flops = int(sum(v for k, v in by_operator.items() if k in FLOP_OPERATORS))
    other = int(sum(v for k, v in by_operator.items() if k not in FLOP_OPERATORS and k != ACTS_KEY))
    return flops, other, acts


_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def _twin(part: Part) -> tuple[Tally, int] | None:
    # The analytic (Tally, output size) of a part, or None for a part without a twin.
    return part_tally(part.key)


@functools.lru_cache(maxsize=None)
def part_footprint(part: Part) -> int:
    """Bytes one part needs at batch size 1: weights, buffers, its input and every layer's output.

    From the part's analytic twin where it has one, else from ``traced_footprint``.
    """
    twin = _twin(part)
    if twin is None:
        return traced_footprint(part)
    tally, size = twin
    if part.key[0] == "block":
        _check_block_output(part, (1, part.key[3], size, size))
    channels, height, width = part.input_shape
    return BYTES_PER_ELEMENT * (channels * height * width + tally.memory)


def traced_footprint(part: Part) -> int:
    """``part_footprint`` worked out by building the part and running it on the meta device.

    The meta device carries shapes and allocates nothing.  Every leaf module's output is
    counted (what a training step keeps for backward).  A user block whose forward cannot
    run on meta is sized by its weights and input alone.
    """
    channels, height, width = part.input_shape
    elements = [channels * height * width]

    def add_output(module, inputs, output):  # noqa: ANN001 - torch hook signature
        # An output that is its input (identity, in-place activation) takes no new memory.
        if isinstance(output, torch.Tensor) and not any(output is x for x in inputs):
            elements.append(output.numel())

    with _lock, torch.no_grad(), torch.device("meta"):
        module = part.build()
        elements += [t.numel() for t in (*module.parameters(), *module.buffers())]
        leaves = [m for m in module.modules() if next(m.children(), None) is None]
        hooks = [m.register_forward_hook(add_output) for m in leaves]
        try:
            output = module.eval()(torch.zeros(1, *part.input_shape))
        except Exception:  # noqa: BLE001 - a forward that needs real data: weights + input only
            output = None
        finally:
            for hook in hooks:
                hook.remove()
    if part.key[0] == "block" and isinstance(output, torch.Tensor):
        _check_block_output(part, tuple(output.shape))
    return BYTES_PER_ELEMENT * sum(elements)


def _check_block_output(part: Part, shape: tuple[int, ...]) -> None:
    # Every part is counted at the input shape the walk gives it, so a block must map
    # (cin, size) to (cout, ceil(size / stride)) or the next part's figures would be wrong.
    _, block, _, cout, stride, *_ = part.key
    size = output_size(part.input_shape[1], stride)
    if shape != (1, cout, size, size):
        raise ValueError(f"block '{block}' at {part.where or 'a layer'} maps input {(1, *part.input_shape)} "
                         f"to {shape}; expected {(1, cout, size, size)} (cout channels, ceil(size / stride) pixels)")


def check_memory(parts: list[Part], limit_gib: float | None = None) -> None:
    """Refuse, before any allocation, a network whose largest part exceeds the memory limit."""
    _forget_replaced_blocks()
    limit_gib = MEMORY_LIMIT_GIB if limit_gib is None else limit_gib
    largest = max(parts, key=part_footprint)
    need_gib = part_footprint(largest) / 2**30
    if need_gib > limit_gib:
        what = largest.where or largest.key[0]
        if largest.key[0] == "block":
            what += f" ({largest.key[1]} block)"
        raise MemoryLimitError(f"{what} needs {need_gib:.1f} GiB at batch size 1 (limit {limit_gib:g} GiB): "
                               "lower w, r or the spec's channels")


@functools.lru_cache(maxsize=None)
def part_cost(part: Part) -> Cost:
    """One part's cost at batch size 1 (cached by the part's shape key): from its analytic
    twin where it has one, else traced with fvcore (``traced_part_cost``)."""
    twin = _twin(part)
    if twin is None:
        return traced_part_cost(part)
    tally = twin[0]
    return Cost(tally.params, tally.flops, tally.other_flops, tally.acts)


def traced_part_cost(part: Part) -> Cost:
    """Build one part and trace it with fvcore at batch size 1 (the counter of record)."""
    with _lock, torch.no_grad():
        module = part.build().eval()
        counts = _analysis(module, torch.zeros(1, *part.input_shape)).by_operator()
        flops, other, acts = split_counts(counts)
        params = sum(p.numel() for p in module.parameters())
    return Cost(params, flops, other, acts)


_spec_costs: dict[tuple, Cost] = {}  # by _network_key: name and provenance do not change cost


def _network_key(spec: NetworkSpec) -> tuple:
    # NetworkSpec.key() as a tuple of its (frozen, hashable) fields: the same fields, without
    # the JSON encoding, which took most of the time of a cold count of a grid.
    return tuple(getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in ("name", "scale"))
_block_generation = blocks.generation()


def _forget_replaced_blocks() -> None:
    # Parts are keyed by block name: a name re-registered with another builder must be re-traced.
    global _block_generation
    if blocks.generation() != _block_generation:
        clear_cache()
        _block_generation = blocks.generation()


@checked_arguments
def count_cost(spec: NetworkSpec) -> Cost:
    """Params, FLOPs (conv+linear multiply-adds), other FLOPs and conv activations of a spec."""
    require(isinstance(spec, NetworkSpec), "count_cost", "spec", spec, "a NetworkSpec (get_base('resnet18') gives one)")
    _forget_replaced_blocks()
    key = _network_key(spec)
    if key not in _spec_costs:
        parts = list(iter_parts(spec))
        check_memory(parts)
        total = ZERO
        for part in parts:
            total = total + part_cost(part)
        _spec_costs[key] = total
    return _spec_costs[key]


def count_cost_plain(spec: NetworkSpec) -> Cost:
    """The same figures from one uncached fvcore call on the whole built network.

    The reference the cached counter is checked against (tests, benchmark).
    """
    check_memory(list(iter_parts(spec)))
    with torch.no_grad():
        model = build(spec).eval()
        counts = _analysis(model, torch.zeros(1, spec.in_channels, spec.resolution, spec.resolution)).by_operator()
    flops, other, acts = split_counts(counts)
    return Cost(sum(p.numel() for p in model.parameters()), flops, other, acts)


def clear_cache() -> None:
    _twin.cache_clear()
    part_cost.cache_clear()
    part_footprint.cache_clear()
    _spec_costs.clear()
