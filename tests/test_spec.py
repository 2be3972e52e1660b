"""The network description: pure data, (de)serialization, clear errors, user specs."""

import json
import sys

import pytest

from scalesearch import SpecError, count_cost, get_base, load_spec, save_spec, scale
from scalesearch.bases import UnknownBaseError
from scalesearch.spec import from_dict

from conftest import ROOT

VGG = ROOT / "examples" / "vgg11.yaml"


def test_spec_module_needs_no_torch():
    import subprocess
    code = ("import sys; import scalesearch.spec, scalesearch.scaling; "
            "from scalesearch.scaling import scale; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    spec = scale(get_base("efficientnet-b3"), 1.1, 1.2, 0.9)
    path = tmp_path / f"net{suffix}"
    save_spec(spec, path)
    assert load_spec(path) == spec
    assert get_base(str(path)) == spec


def test_user_vgg_scales_like_a_plain_conv_net():
    base = get_base(str(VGG))
    assert base.name == "vgg11-bn"
    flops = count_cost(base).flops
    assert 3.8 < count_cost(scale(base, w=2)).flops / flops < 4.1     # quadratic in width
    assert 1.8 < count_cost(scale(base, d=2)).flops / flops < 2.5     # linear in depth (stem not repeated)
    assert 3.9 < count_cost(scale(base, r=2)).flops / flops < 4.1     # quadratic in resolution


def test_missing_file():
    with pytest.raises(SpecError, match="does not exist"):
        load_spec("nope/net.yaml")


def test_unknown_base_lists_valid_ones():
    with pytest.raises(UnknownBaseError, match="resnet50.*efficientnet-b0"):
        get_base("resnet5")


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][1].update(layers=0), "stages[1].layers"),
    (lambda d: d["stages"][0].update(block="transformer"), "stages[0].block"),
    (lambda d: d["stages"][0].pop("out_channels"), "stages[0].out_channels"),
    (lambda d: d["stem"].update(kernal=3), "stem.kernal"),
    (lambda d: d.update(resolution=-5), "resolution"),
    (lambda d: d.update(stages="many"), "stages"),
    (lambda d: d.pop("stem"), "spec.stem"),
])
def test_malformed_spec_names_the_field(tmp_path, mutate, field):
    data = get_base("mobilenetv2").to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert f"'{field}'" in str(err.value)


def test_unparseable_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stages: [\n")
    with pytest.raises(SpecError, match="not valid yaml"):
        load_spec(path)


def test_stage_table_follows_table1():
    rows = get_base("efficientnet-b0").stage_table()
    assert [(r["resolution"], r["channels"], r["layers"]) for r in rows] == [
        (224, 32, 1), (112, 16, 1), (112, 24, 2), (56, 40, 2), (28, 80, 3),
        (14, 112, 3), (14, 192, 4), (7, 320, 1), (7, 1280, 1)]


def test_from_dict_rejects_non_mapping():
    with pytest.raises(SpecError, match="mapping"):
        from_dict([1, 2])
