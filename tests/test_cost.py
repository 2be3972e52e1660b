"""The analytic cost twins count exactly what fvcore counts; parts without a twin are traced."""

import dataclasses
import re
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from scalesearch import base_names, get_base, load_spec, scale
from scalesearch.net.blocks import OPTIONAL_FIELDS, get_block, register_block, unregister_block
from scalesearch.measure.cost import (clear_cache, count_cost, count_cost_plain, part_cost, part_footprint, traced_footprint,
                              traced_part_cost)
from scalesearch.measure.cost_analytic import BLOCK_TWINS, part_tally
from scalesearch.measure.models import iter_parts
from scalesearch.net.spec import ACTIVATIONS, HeadSpec, NetworkSpec, StageSpec, StemSpec

from conftest import ROOT

BUILTIN_BLOCKS = ("basic", "bottleneck", "dwsep", "inverted_residual", "mbconv", "conv")


def assert_counted_like_fvcore(spec: NetworkSpec) -> None:
    """All four figures equal one fvcore call on the whole network; every part has a twin,
    whose memory figure equals the one worked out by running the part on meta."""
    parts = set(iter_parts(spec))
    assert all(part_tally(p.key) is not None for p in parts)
    assert count_cost(spec) == count_cost_plain(spec)
    for part in parts:
        assert part_footprint(part) == traced_footprint(part), part.where


def test_every_builtin_block_type_has_a_twin():
    assert {get_block(name).builder for name in BUILTIN_BLOCKS} == set(BLOCK_TWINS)


def test_the_twins_need_no_torch():
    code = ("import sys; from scalesearch.measure.cost_analytic import part_tally; "
            "assert part_tally(('block', 'mbconv', 16, 24, 2, 3, 6.0, 0.25, 'silu', 112)) is not None; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("name", base_names())
def test_every_base_at_its_native_resolution(name):
    assert_counted_like_fvcore(get_base(name))


@pytest.mark.parametrize("name, d, w, r", [
    ("efficientnet-b0", 1.2, 1.1, 1.15), ("resnet50", 1.2, 1.1, 1.15),  # the paper's coefficients
    ("efficientnet-b0", 2.0, 0.55, 0.33), ("resnet50", 1.0, 1.45, 0.4),
    ("mobilenetv2", 1.5, 0.75, 0.6), ("mobilenetv1", 1.4, 1.2, 0.3), ("resnet20-cifar", 2.0, 1.3, 1.5),
])
def test_scaled_bases(name, d, w, r):
    assert_counted_like_fvcore(scale(get_base(name), d, w, r))


@pytest.mark.parametrize("d, w, r", [(1.0, 1.0, 1.0), (1.5, 0.6, 0.4)])
def test_the_spec_file_example(d, w, r):
    assert_counted_like_fvcore(scale(load_spec(ROOT / "examples" / "vgg11.yaml"), d, w, r))


@st.composite
def stages(draw):
    block = draw(st.sampled_from(BUILTIN_BLOCKS))
    uses = get_block(block).uses
    fields = dict(block=block, out_channels=draw(st.integers(1, 40)), layers=draw(st.integers(1, 3)),
                  stride=draw(st.sampled_from((1, 2))))
    if "kernel" in uses:
        fields["kernel"] = draw(st.sampled_from((1, 3, 5, 7)))
    if "expand_ratio" in uses:
        fields["expand_ratio"] = draw(st.sampled_from((0.25, 0.5, 1.0, 1.5, 4.0, 6.0)) | st.floats(0.05, 8.0))
    if "se_ratio" in uses:
        fields["se_ratio"] = draw(st.sampled_from((0.0, 0.25)) | st.floats(0.0, 1.0))
    assert set(fields) - {"block", "out_channels", "layers", "stride"} <= set(OPTIONAL_FIELDS)
    return StageSpec(**fields)


@st.composite
def networks(draw):
    return NetworkSpec(
        name="random",
        stem=StemSpec(out_channels=draw(st.integers(1, 32)), kernel=draw(st.sampled_from((1, 3, 5, 7))),
                      stride=draw(st.sampled_from((1, 2))), pool=draw(st.booleans())),
        stages=tuple(draw(st.lists(stages(), min_size=1, max_size=3))),
        head=HeadSpec(channels=draw(st.sampled_from((0, 0, 8, 48))), dropout=draw(st.sampled_from((0.0, 0.2)))),
        resolution=draw(st.integers(1, 48)),
        num_classes=draw(st.integers(1, 20)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_networks_of_builtin_blocks(spec):
    assert_counted_like_fvcore(spec)


@pytest.fixture
def grouped_norm_block():
    """A user block with a layer no twin knows (GroupNorm: fvcore counts it) and a functional op."""

    class Block(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.conv = nn.Conv2d(a.cin, a.cout, a.kernel, a.stride, a.kernel // 2)
            self.norm = nn.GroupNorm(1, a.cout)

        def forward(self, x):
            y = self.norm(self.conv(x))
            return y + nn.functional.conv2d(y, torch.ones(y.shape[1], 1, 1, 1), groups=y.shape[1])

    register_block("grouped_norm", Block, uses=("kernel",), doc="conv + GroupNorm + a functional depthwise conv")
    yield "grouped_norm"
    unregister_block("grouped_norm")


def test_a_user_block_is_traced_with_fvcore(grouped_norm_block, monkeypatch):
    import scalesearch.measure.cost as cost

    spec = NetworkSpec(name="user", stem=StemSpec(8, stride=1), resolution=16, num_classes=10,
                       stages=(StageSpec(grouped_norm_block, 16, 2, stride=2), StageSpec("basic", 16, 1)))
    traced = []
    monkeypatch.setattr(cost, "traced_part_cost", lambda part: traced.append(part.where) or traced_part_cost(part))
    clear_cache()
    counted = count_cost(spec)
    assert traced == ["stage 1 layer 1", "stage 1 layer 2"]  # the built-in parts are not traced
    assert counted == count_cost_plain(spec)
    # GroupNorm (fvcore's norm count: 5 per element with affine) and the functional conv are in the figures.
    layer1, layer2 = (p for p in iter_parts(spec) if p.where.startswith("stage 1"))
    assert part_cost(layer1).other_flops == 5 * 16 * 8 * 8
    assert part_cost(layer2).flops == 16 * 16 * 9 * 8 * 8 + 16 * 8 * 8
    assert part_tally(layer1.key) is None and part_footprint(layer1) == traced_footprint(layer1)


@pytest.fixture
def conv_replaced():
    """The built-in name "conv" re-registered with a user builder (restored afterwards)."""
    original = get_block("conv")
    register_block("conv", lambda a: nn.Sequential(nn.Conv2d(a.cin, a.cout, a.kernel, a.stride, a.kernel // 2),
                                                   nn.LayerNorm([a.cout, 1, 1], elementwise_affine=False)),
                   uses=original.uses, doc="conv + bias, then a layer norm", replace=True)
    yield "conv"
    register_block("conv", original.builder, uses=original.uses, doc=original.doc, replace=True)


def test_a_builtin_name_with_another_builder_is_traced_not_twinned(conv_replaced):
    spec = NetworkSpec(name="replaced", stem=StemSpec(8), resolution=4, num_classes=3,
                       stages=(StageSpec(conv_replaced, 16, 1, stride=2),))
    block = next(p for p in iter_parts(spec) if p.key[0] == "block")
    assert part_tally(block.key) is None
    cost = count_cost(spec)
    assert cost == count_cost_plain(spec)
    # The replacement's conv bias and its layer norm (fvcore: 4 per element without affine) are counted.
    assert part_cost(block).params == 8 * 16 * 9 + 16 and part_cost(block).other_flops == 4 * 16


def test_a_builtin_builder_under_a_new_name_keeps_its_twin():
    register_block("my_bottleneck", "scalesearch.measure.models:Bottleneck.from_args", uses=("kernel", "expand_ratio"),
                   doc="the built-in bottleneck under another name")
    try:
        spec = scale(get_base("resnet50"), 1.0, 0.25, 0.25)
        spec = spec.replace(stages=tuple(dataclasses.replace(s, block="my_bottleneck") for s in spec.stages))
        assert_counted_like_fvcore(spec)
    finally:
        unregister_block("my_bottleneck")


def test_the_benchmark_prints_identical_totals():
    # Two rounds of three networks (alpha 1, 1.5, 2 at beta 1) and a one-point candidate fitting.
    out = subprocess.run([sys.executable, "experiments/bench/flops.py", "--base", "resnet20-cifar", "--step", "0.5",
                          "--beta-max", "1", "--rounds", "2"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| resnet20-cifar | 3 |")]
    assert len(rows) == 3 and all(re.search(r"\| \d+\.\dx \| \d+\.\dx \|$", row) for row in rows), out
    assert re.search(r"^resnet20-cifar: totals identical .* on all 3 networks, every counter, every round: True$",
                     out, re.M), out
    assert re.search(r"^candidate fitting on resnet20-cifar, a 1-point grid .* identical candidate tables: True$",
                     out, re.M), out
