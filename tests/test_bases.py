"""Golden numbers: the bases must equal the reference implementations exactly."""

import json
from pathlib import Path

import pytest

from scalesearch import base_names, count_cost, get_base, scale
from scalesearch.cost import count_cost_plain
from scalesearch.models import build, count_params

GOLDEN = json.loads((Path(__file__).parent / "golden.json").read_text())

# torchvision's / the reference implementations' parameter counts (1000 classes).
REFERENCE_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "mobilenetv2": 3_504_872,
    "efficientnet-b0": 5_288_548, "efficientnet-b1": 7_794_184, "efficientnet-b2": 9_109_994,
    "efficientnet-b3": 12_233_232, "efficientnet-b4": 19_341_616, "efficientnet-b5": 30_389_784,
    "efficientnet-b6": 43_040_704, "efficientnet-b7": 66_347_960,
}
# Paper Table 2 FLOPs (multiply-adds).
PAPER_FLOPS = {"efficientnet-b0": 0.39e9, "efficientnet-b1": 0.70e9, "efficientnet-b2": 1.0e9,
               "efficientnet-b3": 1.8e9, "efficientnet-b4": 4.2e9, "efficientnet-b5": 9.9e9,
               "efficientnet-b6": 19e9, "efficientnet-b7": 37e9}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_reference_param_counts(name):
    assert count_params(get_base(name)) == REFERENCE_PARAMS[name]


def test_mobilenetv1_params_within_one_percent():
    assert abs(count_params(get_base("mobilenetv1")) - 4.23e6) / 4.23e6 < 0.01


@pytest.mark.parametrize("name", sorted(PAPER_FLOPS))
def test_efficientnet_flops_match_table2(name):
    assert abs(count_cost(get_base(name)).flops / PAPER_FLOPS[name] - 1) < 0.05


def test_famous_flops():
    assert count_cost(get_base("resnet50")).flops == pytest.approx(4.09e9, rel=0.005)
    assert count_cost(get_base("efficientnet-b0")).flops == pytest.approx(0.386e9, rel=0.005)


@pytest.mark.parametrize("name", base_names())
def test_golden_costs(name):
    cost = count_cost(get_base(name))
    assert dict(params=cost.params, flops=cost.flops, acts=cost.acts) == GOLDEN[name]


@pytest.mark.parametrize("name, factors", [
    ("efficientnet-b0", (1.2, 1.1, 1.15)), ("resnet18", (1.5, 1.3, 0.5)),
    ("mobilenetv2", (1.0, 0.75, 0.6)), ("mobilenetv1", (1.4, 1.2, 0.3)),
])
def test_cached_counter_equals_one_plain_fvcore_call(name, factors):
    spec = scale(get_base(name), *factors)
    assert count_cost(spec) == count_cost_plain(spec)


def test_built_network_runs_and_has_spec_shape():
    import torch

    spec = scale(get_base("efficientnet-b0"), 0.5, 0.5, 0.25).replace(num_classes=7)
    out = build(spec)(torch.zeros(2, 3, spec.resolution, spec.resolution))
    assert out.shape == (2, 7)
