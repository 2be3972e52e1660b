"""The CLI's read-only commands through the command in this process, and one smoke test of the
installed `scalesearch` entry point in a real process."""

import json

import pytest

from conftest import ROOT, cli, ok, refused, run_process

GOLDEN = json.loads((ROOT / "tests" / "golden.json").read_text())


def test_the_installed_entry_point_runs_and_refuses_in_one_line():
    """The console script itself (its import, main(), exit codes): golden numbers, then a
    refusal as one line with exit status 2."""
    data = json.loads(ok(run_process("flops", "--base", "resnet50", "--json")))
    assert data["params"] == GOLDEN["resnet50"]["params"] and data["flops"] == GOLDEN["resnet50"]["flops"]
    proc = run_process("flops", "--base", "resnet5")
    assert proc.returncode == 2 and "unknown base 'resnet5'" in refused(proc, "flops --base resnet5")


def test_bases_lists_every_base():
    out = ok(cli("bases"))
    for name in ("resnet50", "mobilenetv1", "mobilenetv2", "efficientnet-b7"):
        assert name in out


def test_flops_json_for_every_base():
    for name in ("resnet50", "mobilenetv2", "efficientnet-b0", "efficientnet-b7"):
        data = json.loads(ok(cli("flops", "--base", name, "--json")))
        assert data["params"] == GOLDEN[name]["params"] and data["flops"] == GOLDEN[name]["flops"]
        for key in ("base", "d", "w", "r", "resolution", "params", "flops", "acts", "stages"):
            assert key in data


def test_flops_text_has_stage_table():
    out = ok(cli("flops", "--base", "resnet50", "--w", "2"))
    assert "16,116,613,120" in out and "98,004,072" in out
    assert "bottleneck" in out and "stem" in out and "head" in out


def test_family_json_and_csv():
    rows = json.loads(ok(cli("family", "--base", "efficientnet-b0", "--alpha", "1.2", "--beta", "1.1",
                             "--gamma", "1.15", "--phi-max", "3", "--json")))
    assert [r["phi"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["flops_ratio"] == 1.0 and rows[1]["resolution"] == 258
    assert rows[1]["nominal_ratio"] == pytest.approx(1.9203, abs=1e-4)
    assert rows[1]["flops_ratio"] == pytest.approx(2.573, abs=0.01)
    for key in ("base", "d", "w", "r", "params", "flops", "nominal_ratio", "flops_ratio"):
        assert key in rows[0]
    csv = ok(cli("family", "--base", "resnet18", "--alpha", "1.1", "--beta", "1.1", "--gamma", "1.1",
                 "--phi-max", "1", "--csv")).splitlines()
    assert csv[0].startswith("base,phi,d,w,r") and len(csv) == 3


@pytest.mark.parametrize("args, message", [
    (["flops", "--base", "resnet5"], "unknown base 'resnet5'; valid bases: resnet18"),
    (["flops", "--base", "resnet50", "--d", "0"], "d must be > 0"),
    (["flops", "--base", "resnet50", "--w", "-1"], "w must be > 0"),
    (["flops", "--base", "resnet50", "--r", "0"], "r must be > 0"),
    (["family", "--base", "resnet50", "--alpha", "0.9", "--beta", "1", "--gamma", "1"], "alpha must be >= 1"),
    (["family", "--base", "resnet50", "--alpha", "1", "--beta", "0.5", "--gamma", "1"], "beta must be >= 1"),
    (["family", "--base", "resnet50", "--alpha", "1", "--beta", "1", "--gamma", "0"], "gamma must be >= 1"),
    (["flops", "--base", "missing.yaml"], "spec file 'missing.yaml' does not exist"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    assert message in refused(cli(*args), " ".join(args))


def test_malformed_spec_file_names_the_field(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text((ROOT / "examples" / "vgg11.yaml").read_text().replace("layers: 1", "layers: zero"))
    result = cli("flops", "--base", str(path))
    assert result.exit_code == 2 and "stages[0].layers" in refused(result, "a malformed spec")


def test_a_plateau_gets_a_hint_naming_the_recipe_options_not_used(capsys):
    from types import SimpleNamespace

    from scalesearch.cli.printers import plateau_hint as _plateau_hint
    from scalesearch.train.health import divergence
    from scalesearch.train.recipe import TrainConfig

    stuck = SimpleNamespace(diverged=divergence(1 / 12, 2.5, 2.5, 12, 96))     # never left ln(12)
    blown = SimpleNamespace(diverged=divergence(0.3, 8037.0, 1.0, 12, 96))     # learned, then blew up
    _plateau_hint([blown], TrainConfig())
    assert capsys.readouterr().out == ""
    _plateau_hint([blown, stuck], TrainConfig())
    assert "--set train.residual_init=scaled and --set train.optimizer=lars" in capsys.readouterr().out
    _plateau_hint([stuck], TrainConfig(optimizer="lars"))
    out = capsys.readouterr().out
    assert "--set train.residual_init=scaled" in out and "train.optimizer=lars" not in out
    _plateau_hint([stuck], TrainConfig(optimizer="lars", residual_init="scaled"))
    assert capsys.readouterr().out == ""
