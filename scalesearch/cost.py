"""The cost counter: params, FLOPs and activations of a spec, with fvcore as the counter of record.

What is counted (the convention of the paper and of the reference implementations'
published figures):

* ``flops``: multiply-adds of convolution and linear layers (fvcore's ``conv``,
  ``linear``, ``addmm``, ``matmul`` counts; one multiply-add = one FLOP).
* ``other_flops``: everything else fvcore counts: batch norm (one per element) and
  adaptive average pooling.  Element-wise ops (activations, residual adds, the SE
  multiply) are not counted by fvcore and are not counted here.
* ``acts``: output elements of every convolution (fvcore's activation rule for conv),
  the memory side of the paper's Eq. 2.

Counting is cheap when repeated: a network is split into parts (stem, each block, head)
whose cost depends only on their shape key; each distinct part is traced once per process
with fvcore and reused within a network (repeated layers of a stage) and across the
networks of a search.  Totals are identical to one fvcore call on the whole network,
since fvcore's totals are sums over operators.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.activation_count import generic_activation_jit
from fvcore.nn.flop_count import conv_flop_jit

from .models import Part, build, iter_parts
from .spec import NetworkSpec

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
def part_cost(part: Part) -> Cost:
    """Trace one part with fvcore at batch size 1 (cached by the part's shape key)."""
    with _lock, torch.no_grad():
        module = part.build().eval()
        counts = _analysis(module, torch.zeros(1, *part.input_shape)).by_operator()
        flops, other, acts = split_counts(counts)
        params = sum(p.numel() for p in module.parameters())
    return Cost(params, flops, other, acts)


_spec_costs: dict[str, Cost] = {}  # by NetworkSpec.key(): name and provenance do not change cost


def count_cost(spec: NetworkSpec) -> Cost:
    """Params, FLOPs (conv+linear multiply-adds), other FLOPs and conv activations of a spec."""
    key = spec.key()
    if key not in _spec_costs:
        total = ZERO
        for part in iter_parts(spec):
            total = total + part_cost(part)
        _spec_costs[key] = total
    return _spec_costs[key]


def count_cost_plain(spec: NetworkSpec) -> Cost:
    """The same figures from one uncached fvcore call on the whole built network.

    The reference the cached counter is checked against (tests, benchmark).
    """
    with torch.no_grad():
        model = build(spec).eval()
        counts = _analysis(model, torch.zeros(1, 3, spec.resolution, spec.resolution)).by_operator()
    flops, other, acts = split_counts(counts)
    return Cost(sum(p.numel() for p in model.parameters()), flops, other, acts)


def clear_cache() -> None:
    part_cost.cache_clear()
    _spec_costs.clear()
