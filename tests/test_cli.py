"""The CLI through the real installed command."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

EXE = shutil.which("scalesearch", path=str(ROOT / ".venv" / "bin")) or shutil.which("scalesearch")
CMD = [EXE] if EXE else [sys.executable, "-m", "scalesearch"]


def run(*args, ok=True):
    proc = subprocess.run([*CMD, *args], capture_output=True, text=True, cwd=ROOT)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_bases_lists_every_base():
    out = run("bases").stdout
    for name in ("resnet50", "mobilenetv1", "mobilenetv2", "efficientnet-b7"):
        assert name in out


def test_flops_json_for_every_base():
    golden = json.loads((ROOT / "tests" / "golden.json").read_text())
    for name in ("resnet50", "mobilenetv2", "efficientnet-b0", "efficientnet-b7"):
        data = json.loads(run("flops", "--base", name, "--json").stdout)
        assert data["params"] == golden[name]["params"] and data["flops"] == golden[name]["flops"]
        for key in ("base", "d", "w", "r", "resolution", "params", "flops", "acts", "stages"):
            assert key in data


def test_flops_text_has_stage_table():
    out = run("flops", "--base", "resnet50", "--w", "2").stdout
    assert "16,116,613,120" in out and "98,004,072" in out
    assert "bottleneck" in out and "stem" in out and "head" in out


def test_family_json_and_csv():
    rows = json.loads(run("family", "--base", "efficientnet-b0", "--alpha", "1.2", "--beta", "1.1",
                          "--gamma", "1.15", "--phi-max", "3", "--json").stdout)
    assert [r["phi"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["flops_ratio"] == 1.0 and rows[1]["resolution"] == 258
    assert rows[1]["nominal_ratio"] == pytest.approx(1.9203, abs=1e-4)
    assert rows[1]["flops_ratio"] == pytest.approx(2.573, abs=0.01)
    for key in ("base", "d", "w", "r", "params", "flops", "nominal_ratio", "flops_ratio"):
        assert key in rows[0]
    csv = run("family", "--base", "resnet18", "--alpha", "1.1", "--beta", "1.1", "--gamma", "1.1",
              "--phi-max", "1", "--csv").stdout.splitlines()
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
    proc = run(*args, ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_malformed_spec_file_names_the_field(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text((ROOT / "examples" / "vgg11.yaml").read_text().replace("layers: 1", "layers: zero"))
    proc = run("flops", "--base", str(path), ok=False)
    assert proc.returncode == 2 and "stages[0].layers" in proc.stderr and "Traceback" not in proc.stderr


def test_a_plateau_gets_a_hint_naming_the_recipe_options_not_used(capsys):
    from types import SimpleNamespace

    from scalesearch.cli import _plateau_hint
    from scalesearch.train import TrainConfig, divergence

    stuck = SimpleNamespace(diverged=divergence(1 / 12, 2.5, 2.5, 12, 96))     # never left ln(12)
    blown = SimpleNamespace(diverged=divergence(0.3, 8037.0, 1.0, 12, 96))     # learned, then blew up
    _plateau_hint([blown], TrainConfig())
    assert capsys.readouterr().out == ""
    _plateau_hint([blown, stuck], TrainConfig())
    assert "--residual-init scaled and --optimizer lars" in capsys.readouterr().out
    _plateau_hint([stuck], TrainConfig(optimizer="lars"))
    out = capsys.readouterr().out
    assert "--residual-init scaled" in out and "--optimizer lars" not in out
    _plateau_hint([stuck], TrainConfig(optimizer="lars", residual_init="scaled"))
    assert capsys.readouterr().out == ""
