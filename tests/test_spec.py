"""The network description: pure data, (de)serialization, clear errors, user specs."""

import json
import re
import sys

import pytest

from scalesearch import SpecError, count_cost, get_base, load_spec, save_spec, scale
from scalesearch.net.bases import UnknownBaseError
from scalesearch.net.spec import from_dict

from conftest import ROOT

VGG = ROOT / "examples" / "vgg11.yaml"


def test_spec_module_needs_no_torch():
    import subprocess
    code = ("import sys; import scalesearch.net.spec, scalesearch.net.scaling, scalesearch.net.blocks, scalesearch.net.bases; "
            "from scalesearch.net.scaling import scale; "
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


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][1].update(layers=0), "stages[1].layers"),
    (lambda d: d["stages"][0].update(block="transformer"), "stages[0].block"),
    (lambda d: d["stages"][0].pop("out_channels"), "stages[0].out_channels"),
    (lambda d: d["stem"].update(kernal=3), "stem.kernal"),
    (lambda d: d.update(resolution=-5), "resolution"),
    (lambda d: d.update(stages="many"), "stages"),
    (lambda d: d.pop("stem"), "spec.stem"),
    # a field of the wrong shape
    (lambda d: d.update(scale=5), "scale"),
    (lambda d: d.update(scale=[1, 1]), "scale"),
    (lambda d: d.update(stages={"block": "basic"}), "stages"),
    (lambda d: d.update(stages=[]), "stages"),
    (lambda d: d["stages"].__setitem__(2, 7), "stages[2]"),
    (lambda d: d.update(stem=3), "stem"),
    (lambda d: d.update(head=[1280]), "head"),
    (lambda d: d.update(name=5), "name"),
    (lambda d: d.update(activation=["relu"]), "activation"),
    (lambda d: d["stages"][0].update(block=None), "stages[0].block"),
    (lambda d: d["stages"][0].update(out_channels="16"), "stages[0].out_channels"),
    (lambda d: d["stages"][0].update(out_channels=16.0), "stages[0].out_channels"),
    # booleans where numbers are meant (and a number where a boolean is)
    (lambda d: d["stages"][1].update(expand_ratio=True), "stages[1].expand_ratio"),
    (lambda d: d["stages"][1].update(layers=True), "stages[1].layers"),
    (lambda d: d["stages"][1].update(stride=True), "stages[1].stride"),
    (lambda d: d["head"].update(channels=True), "head.channels"),
    (lambda d: d["stem"].update(pool=1), "stem.pool"),
    # ranges
    (lambda d: d["stages"][1].update(stride=3), "stages[1].stride"),
    (lambda d: d["stem"].update(stride=4), "stem.stride"),
    (lambda d: d["stages"][1].update(kernel=4), "stages[1].kernel"),
    (lambda d: d["stem"].update(kernel=2), "stem.kernel"),
    (lambda d: d["stages"][1].update(se_ratio=1.5), "stages[1].se_ratio"),
    (lambda d: d["stages"][1].update(expand_ratio=0), "stages[1].expand_ratio"),
    (lambda d: d["head"].update(dropout=1.0), "head.dropout"),
    (lambda d: d["head"].update(channels=-1), "head.channels"),
    (lambda d: d.update(num_classes=0), "num_classes"),
    (lambda d: d.update(activation="gelu"), "activation"),
    (lambda d: d.update(scale=[1, 0, 1]), "scale.w"),
    # NaN and inf anywhere
    (lambda d: d["stages"][1].update(expand_ratio=NAN), "stages[1].expand_ratio"),
    (lambda d: d["stages"][1].update(expand_ratio=INF), "stages[1].expand_ratio"),
    (lambda d: d["stages"][1].update(se_ratio=NAN), "stages[1].se_ratio"),
    (lambda d: d["head"].update(dropout=NAN), "head.dropout"),
    (lambda d: d.update(scale=[1, 1, INF]), "scale.r"),
    (lambda d: d.update(resolution=INF), "resolution"),
    # a field that the stage's block type ignores is refused, not silently dropped
    (lambda d: d["stages"][1].update(block="dwsep"), "stages[1].expand_ratio"),
])
def test_malformed_spec_names_the_field(tmp_path, mutate, field):
    data = get_base("mobilenetv2").to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))  # NaN / Infinity are written as JSON's non-standard literals
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert f"'{field}'" in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("mutate, field, limit", [
    (lambda d: d["stages"][0].update(out_channels=600_000), "stages[0].out_channels", "100000"),
    (lambda d: d["stem"].update(out_channels=100_001), "stem.out_channels", "100000"),
    (lambda d: d["head"].update(channels=10**9), "head.channels", "100000"),
    (lambda d: d.update(resolution=20_000), "resolution", "10000"),
    (lambda d: d["stages"][0].update(layers=50_000), "stages[0].layers", "10000"),
    (lambda d: d["stages"][0].update(kernel=101), "stages[0].kernel", "63"),
    (lambda d: d.update(num_classes=10**7), "num_classes", "1000000"),
    (lambda d: d["stages"][1].update(expand_ratio=1000), "stages[1].expand_ratio", "64"),
])
def test_absurd_sizes_are_refused_with_the_limit(mutate, field, limit):
    data = get_base("mobilenetv2").to_dict()
    mutate(data)
    with pytest.raises(SpecError, match=rf"'{re.escape(field)}': must be .*at most {limit}"):
        from_dict(data)


def test_scaling_past_a_limit_names_the_field():
    with pytest.raises(SpecError, match=r"'stages\[3\].out_channels': must be at most 100000"):
        scale(get_base("resnet50"), w=50)


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"),
    (b"  \n\n", "is empty"),
    (b"# only a comment\n", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is binary"),
    (b"name: caf\xe9\nstages: []\n", "is not UTF-8 text (byte 0xe9 on line 1, offset 9)"),
    (b"- block: basic\n- block: conv\n", "field 'spec': must be a mapping, not a list"),
    (b"just a sentence\n", "field 'spec': must be a mapping, not a string"),
    (b"stages: [\n", "is not valid yaml"),
    (b"resolution: .inf\nstem: {out_channels: 8}\nstages: [{block: conv, out_channels: 8, layers: 1}]\n",
     "field 'resolution': must be a positive integer"),
    (b"stem: {out_channels: 8}\nstages: [{block: conv, out_channels: 8, layers: 1, kernel: .nan}]\n",
     "field 'stages[0].kernel'"),
])
def test_unreadable_spec_file_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "net.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"spec file '{path}'") and problem in message and "\n" not in message


def test_json_list_and_null_are_not_specs(tmp_path):
    for text, kind in (("[1, 2]", "a list"), ("null", "")):
        path = tmp_path / "net.json"
        path.write_text(text)
        with pytest.raises(SpecError, match=f"spec file .*net.json.* (must be a mapping, not {kind}|is empty)"):
            load_spec(path)


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "net.json"
    path.write_bytes(b"\xef\xbb\xbf" + get_base("resnet18").to_json().encode())
    assert load_spec(path) == get_base("resnet18")


def test_stage_walk_is_shared_by_the_table_and_the_builder():
    from scalesearch.measure.models import iter_parts
    from scalesearch.net.spec import layer_inputs

    spec = scale(get_base("resnet50"), r=0.9)  # 202 px: odd sizes, so ceil(size / stride) matters
    sites = list(layer_inputs(spec))
    assert [(s.part, s.size) for s in sites[:2]] == [("stem", 202), ("block", 51)]  # 202 -> 101 -> pool 51
    assert [p.input_shape for p in iter_parts(spec)] == [(s.in_channels, s.size, s.size) for s in sites]
    firsts = [s.size for s in sites if s.part == "block" and s.layer == 0]
    assert [row["resolution"] for row in spec.stage_table()[1:-1]] == firsts == [51, 51, 26, 13]


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
