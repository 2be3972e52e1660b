"""The block registry: one registration from user code makes a block type scalable, countable, buildable."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import scalesearch
from scalesearch import SpecError, count_cost, get_base, load_spec
from scalesearch.net.blocks import block_names, block_types, register_block, unregister_block
from scalesearch.measure.cost import count_cost_plain
from scalesearch.measure.models import build
from scalesearch.net.spec import HeadSpec, NetworkSpec, StageSpec, StemSpec

from conftest import ROOT


@pytest.fixture
def plain_conv():
    """A user block registered from outside the package: kxk conv with bias + ReLU, no BN."""

    @register_block("plain_conv", uses=("kernel",), doc="kxk conv with bias + ReLU, no batch norm")
    def make(a):
        return nn.Sequential(nn.Conv2d(a.cin, a.cout, a.kernel, a.stride, a.kernel // 2), nn.ReLU())

    yield "plain_conv"
    unregister_block("plain_conv")


def tiny(block: str) -> NetworkSpec:
    return NetworkSpec(name="tiny", stem=StemSpec(out_channels=8, kernel=3, stride=1),
                       stages=(StageSpec(block=block, out_channels=16, layers=1, stride=2),),
                       head=HeadSpec(channels=0), resolution=32, num_classes=10)


def test_user_block_scales_counts_and_builds(plain_conv):
    net = scalesearch.scale(tiny(plain_conv), d=2, w=2)
    # d=2, w=2: stem 8 -> 16 channels, the stage 16 -> 32 channels and 1 -> 2 layers; 32 px.
    assert [(s.out_channels, s.layers) for s in net.stages] == [(32, 2)]
    stem = 3 * 16 * 9 + 2 * 16           # 3x3 conv (no bias) + BN gamma, beta
    layer1 = 16 * 32 * 9 + 32            # 3x3 conv + bias, stride 2: 32 px -> 16 px
    layer2 = 32 * 32 * 9 + 32            # 3x3 conv + bias at 16 px
    fc = 32 * 10 + 10
    cost = count_cost(net)
    assert cost.params == stem + layer1 + layer2 + fc == 14_682
    # Multiply-adds of conv weights (biases are not multiply-adds) and of the classifier.
    assert cost.flops == (32 * 32 * 16 * 3 * 9) + (16 * 16 * 32 * 16 * 9) + (16 * 16 * 32 * 32 * 9) + 32 * 10
    assert cost.flops == 3_981_632
    assert cost.acts == 32 * 32 * 16 + 16 * 16 * 32 + 16 * 16 * 32 == 32_768  # conv output elements
    assert cost == count_cost_plain(net)

    model = build(net)
    assert sum(p.numel() for p in model.parameters()) == cost.params
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.blocks.modules())


def test_user_block_in_a_spec_file_and_in_the_docs(plain_conv, tmp_path):
    path = tmp_path / "net.json"
    path.write_text(tiny(plain_conv).to_json())
    assert load_spec(path).stages[0].block == plain_conv
    assert dict(block=plain_conv, uses="kernel", doc="kxk conv with bias + ReLU, no batch norm") in block_types()


def test_unregistered_block_names_the_field_and_the_registered_ones():
    with pytest.raises(SpecError) as err:
        tiny("resnext")
    message = str(err.value)
    assert "'stages[0].block'" in message and "'resnext'" in message
    assert all(name in message for name in block_names())
    assert "plain_conv" not in block_names()  # the fixture cleaned up after itself


def test_field_a_block_ignores_is_refused_not_dropped(plain_conv):
    with pytest.raises(SpecError, match=r"'stages\[0\].se_ratio': block 'plain_conv' does not use se_ratio"):
        NetworkSpec(name="x", stem=StemSpec(8),
                    stages=(StageSpec(block=plain_conv, out_channels=16, layers=1, se_ratio=0.25),))
    with pytest.raises(SpecError, match=r"'stages\[0\].expand_ratio': block 'basic' does not use"):
        NetworkSpec(name="x", stem=StemSpec(8), stages=(StageSpec("basic", 16, 1, expand_ratio=4),))


def test_every_builtin_block_is_documented_and_used_by_a_base():
    rows = block_types()
    assert {r["block"] for r in rows} >= {"basic", "bottleneck", "dwsep", "inverted_residual", "mbconv", "conv"}
    assert all(r["doc"] and "\n" not in r["doc"] for r in rows)
    used = {st.block for name in scalesearch.base_names() for st in get_base(name).stages}
    assert used <= set(block_names())


def test_registration_mistakes_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_block("basic", lambda a: None, doc="again")
    with pytest.raises(ValueError, match="'groups', not a stage field"):
        register_block("grouped", lambda a: None, uses=("groups",), doc="groups are not a stage field")
    with pytest.raises(ValueError, match="doc must be one non-empty line"):
        register_block("nodoc", lambda a: None, doc="")
    assert "grouped" not in block_names() and "nodoc" not in block_names()


def test_replacing_a_block_recounts_it(plain_conv):
    net = tiny(plain_conv)
    before = count_cost(net)
    register_block(plain_conv, lambda a: nn.Conv2d(a.cin, a.cout, a.kernel, a.stride, a.kernel // 2, bias=False),
                   uses=("kernel",), doc="kxk conv, no bias", replace=True)
    assert count_cost(net).params == before.params - 16  # the 16 biases are gone: no stale cache


def test_registry_and_validation_need_no_torch():
    code = ("import sys; from scalesearch.net.blocks import block_types; from scalesearch import get_base, scale; "
            "scale(get_base('efficientnet-b0'), 2, 2, 2).stage_table(); block_types(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_spec_round_trips_through_json_with_a_user_block(plain_conv):
    spec = scalesearch.scale(tiny(plain_conv), 1.5, 1.25)
    assert scalesearch.net.spec.from_dict(json.loads(spec.to_json())) == spec


def test_block_with_the_wrong_output_shape_is_named(plain_conv):
    register_block(plain_conv, lambda a: nn.Conv2d(a.cin, a.cout, a.kernel, 1, a.kernel // 2),  # ignores stride
                   uses=("kernel",), doc="forgets its stride", replace=True)
    with pytest.raises(ValueError, match=r"block 'plain_conv' at stage 1 layer 1 maps input \(1, 8, 32, 32\) "
                                         r"to \(1, 16, 32, 32\); expected \(1, 16, 16, 16\)"):
        count_cost(tiny(plain_conv))
