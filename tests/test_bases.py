"""Golden numbers: the bases must equal the reference implementations exactly.

tests/golden.json holds every base's params, FLOPs and activations.  After a change that
is meant to move them (a new base, a new counting convention), rewrite the file instead
of asserting against it, then review the diff:

    SCALESEARCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_bases.py -k golden
"""

import json
import os
from pathlib import Path

import pytest
import torch

from scalesearch import base_names, count_cost, get_base, scale
from scalesearch.measure.cost import count_cost_plain
from scalesearch.measure.models import build, count_params
from scalesearch.net.spec import NetworkSpec, StageSpec, StemSpec

GOLDEN_PATH = Path(__file__).parent / "golden.json"
GOLDEN = json.loads(GOLDEN_PATH.read_text())
REGEN_GOLDEN = os.environ.get("SCALESEARCH_REGEN_GOLDEN") == "1"

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
    measured = dict(params=cost.params, flops=cost.flops, acts=cost.acts)
    if REGEN_GOLDEN:
        GOLDEN[name] = measured
        # Existing entries keep their place (a small diff); bases that no longer exist are dropped.
        kept = {n: counts for n, counts in GOLDEN.items() if n in base_names()}
        GOLDEN_PATH.write_text(json.dumps(kept, indent=1))
        pytest.skip(f"SCALESEARCH_REGEN_GOLDEN=1: wrote {name} to {GOLDEN_PATH.name}, nothing asserted")
    assert measured == GOLDEN[name]


@pytest.mark.parametrize("name, factors", [
    ("efficientnet-b0", (1.2, 1.1, 1.15)), ("resnet18", (1.5, 1.3, 0.5)),
    ("mobilenetv2", (1.0, 0.75, 0.6)), ("mobilenetv1", (1.4, 1.2, 0.3)),
])
def test_cached_counter_equals_one_plain_fvcore_call(name, factors):
    spec = scale(get_base(name), *factors)
    assert count_cost(spec) == count_cost_plain(spec)


def test_built_network_runs_and_has_spec_shape():
    spec = scale(get_base("efficientnet-b0"), 0.5, 0.5, 0.25).replace(num_classes=7)
    out = build(spec)(torch.zeros(2, 3, spec.resolution, spec.resolution))
    assert out.shape == (2, 7)


def test_default_init_leaves_every_bn_at_one():
    net = build(scale(get_base("resnet18"), 0.5, 0.25, 0.25))
    assert all(bool((m.weight == 1).all()) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_residual_branches_start_at_zero_gamma():
    """Goyal et al. 2017: the BN feeding each residual add starts at gamma = 0, all others at 1."""
    from scalesearch.measure.models import BasicBlock, Bottleneck, InvertedResidual

    for base in ("resnet18", "resnet50", "mobilenetv2"):
        net = build(scale(get_base(base), 0.5, 0.25, 0.25), residual_init="zero")
        zeroed = {id(m.residual_bn()) for m in net.modules()
                  if isinstance(m, (BasicBlock, Bottleneck, InvertedResidual)) and m.residual_bn() is not None}
        assert zeroed, base
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert bool((m.weight == 0).all()) if id(m) in zeroed else bool((m.weight == 1).all())
    # Only an inverted residual with a shortcut has one (stride 1 and cin == cout).
    assert InvertedResidual(16, 24, 2, 3, 6, 0, "relu").residual_bn() is None
    assert InvertedResidual(16, 16, 1, 3, 6, 0, "relu").residual_bn() is not None


@pytest.mark.parametrize("d", [1, 2, 4])
def test_scaled_residual_init_is_one_over_root_of_the_number_of_residual_blocks(d):
    """residual_init="scaled": each BN feeding a residual add starts at 1/sqrt(L), so the
    stream's variance at the end of the body does not grow with depth; ``build_model``
    (what a trial trains) builds what its recipe says."""
    from scalesearch.measure.models import residual_bns
    from scalesearch.train.loop import build_model
    from scalesearch.train.recipe import TrainConfig

    spec = scale(get_base("resnet18").replace(resolution=32), d=d)
    net = build_model(spec, TrainConfig(residual_init="scaled"))
    scaled = residual_bns(net)
    assert len(scaled) == sum(stage.layers for stage in spec.stages)   # one per basic block
    for bn in scaled:
        assert torch.allclose(bn.weight, torch.full_like(bn.weight, len(scaled) ** -0.5))
    rest = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) and all(m is not b for b in scaled)]
    assert rest and all(bool((m.weight == 1).all()) for m in rest)
    plain = build_model(spec, TrainConfig())
    assert all(bool((bn.weight == 1).all()) for bn in residual_bns(plain))
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():   # train-mode BN: the body's output scale at the start, by depth
        out, out_plain = (float(n.blocks(n.stem(x)).std()) for n in (net, plain))
    assert 0.5 < out < 0.75, out                    # measured 0.62, 0.61, 0.60 at d = 1, 2, 4
    assert out_plain > 0.9 * d ** 0.4, out_plain    # grows with depth: 1.01, 1.31, 1.76


def test_part_memory_is_worked_out_from_shapes():
    from scalesearch.measure.cost import part_footprint
    from scalesearch.measure.models import Part

    # conv block 3x3, 8 -> 16 channels at 8 px: input, conv weights, BN gamma/beta, BN buffers
    # (mean, var, step count), conv output, BN output; the in-place ReLU adds nothing.
    part = Part(("block", "conv", 8, 16, 1, 3, 1.0, 0.0, "relu", 8), (8, 8, 8))
    elements = 8 * 64 + 8 * 16 * 9 + 2 * 16 + (2 * 16 + 1) + 16 * 64 + 16 * 64
    assert part_footprint(part) == 4 * elements


@pytest.mark.parametrize("spec, where", [
    (NetworkSpec(name="wide", stem=StemSpec(8), resolution=32,
                 stages=(StageSpec("conv", out_channels=60_000, layers=2),)), r"stage 1 layer 2 \(conv block\)"),
    (get_base("efficientnet-b0").replace(resolution=9000), r"stage 2 layer 1 \(mbconv block\)"),
])
def test_too_large_to_build_is_refused_before_allocating(spec, where):
    from scalesearch.measure.cost import MemoryLimitError
    from scalesearch.errors import UserError

    assert issubclass(MemoryLimitError, UserError)
    for counter in (count_cost, count_cost_plain):
        with pytest.raises(MemoryLimitError, match=rf"^({where}) needs \d+\.\d GiB at batch size 1 \(limit 2 GiB\): "
                                                   r"lower w, r or the spec's channels$"):
            counter(spec)


@pytest.mark.parametrize("base", ["resnet20-cifar", "efficientnet-b0"])
def test_feature_norm_centres_the_pooled_features_and_folds_away(base):
    """The recipe's head normalisation: in training the classifier sees pooled features with
    zero mean per channel (before dropout); folded after training, the reference head (no extra module, same
    parameter count) gives the same eval outputs."""
    from scalesearch.measure.models import fold_feature_norm

    spec = scale(get_base(base), 1.0, 0.5, 1.0).replace(num_classes=5, resolution=32)
    torch.manual_seed(0)
    net = build(spec, feature_norm=True)
    seen = {}
    net.head.norm.register_forward_hook(lambda module, args, out: seen.__setitem__("x", out))
    x = torch.randn(16, 3, 32, 32)
    net.train()
    for _ in range(3):  # running statistics to fold
        net(x + 0.1 * torch.randn_like(x))
    assert seen["x"].mean(0).abs().max() < 1e-4 and (seen["x"].std(0) - 1).abs().max() < 0.1
    net.eval()
    before = net(x)
    folded = fold_feature_norm(net)
    assert isinstance(folded.head.norm, torch.nn.Identity)
    assert sum(p.numel() for p in folded.parameters()) == sum(p.numel() for p in build(spec).parameters())
    torch.testing.assert_close(folded(x), before, rtol=1e-4, atol=1e-4)
    plain = build(spec)
    assert isinstance(plain.head.norm, torch.nn.Identity)    # the counted architecture has none
