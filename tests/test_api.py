"""The Python API does what the commands do: reproduce and curves too, one version."""

from __future__ import annotations

import sys

import pytest

import scalesearch
from conftest import ROOT


def test_reproduce_and_curves_are_in_the_api(tmp_path):
    result = scalesearch.reproduce("figure8", "smoke", dry_run=True, progress=False, estimate=False,
                                   out=str(tmp_path / "f8"))
    assert len(result.models) == 18 and (tmp_path / "f8" / "figure8.csv").is_file()
    assert result.models[0].row.method == "baseline" and result.models[0].flops == 8_477_408  # efficientnet-b0 at 32 px, 10 classes
    assert callable(scalesearch.curves) and callable(scalesearch.reproduce)
    from scalesearch.reproduce import make_settings  # the module stays importable by its name

    assert make_settings("figure8").experiment.name == "figure8"


def test_one_version_the_installed_pyprojects():
    if sys.version_info >= (3, 11):
        import tomllib

        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        assert scalesearch.__version__ == declared


def test_a_log_gets_one_line_per_finished_trial():
    """Redirected to a file (no progress bars), a long search says after each trial that it is alive."""
    from scalesearch.cli.printers import trial_line
    from scalesearch.study.rows import TrialRow
    from scalesearch.study.setup import TrialFinished

    row = TrialRow(trial="c7-s1", candidate=7, seed=1, top1=0.331, seconds=75.2, state="COMPLETE")
    assert trial_line(TrialFinished(row=row, done=3, total=6, rows=[row])) == \
        "trial c7-s1 COMPLETE: top-1 33.10%, 1 min 15 s [3/6]"
    bad = TrialRow(trial="c2-s0", candidate=2, seed=0, state="DIVERGED", diverged="loss is nan")
    assert trial_line(TrialFinished(row=bad, done=4, total=6, rows=[bad])) == \
        "trial c2-s0 DIVERGED (loss is nan): no top-1 [4/6]"


@pytest.mark.parametrize("call, said", [
    (lambda ss, b: ss.get_base("resnet18", bogus=1), "get_base(): got an unexpected keyword argument 'bogus'"),
    (lambda ss, b: ss.get_base(None), "unknown base 'None'"),
    (lambda ss, b: ss.scale(None), "scale(): spec must be a NetworkSpec"),
    (lambda ss, b: ss.scale("resnet18", 1.2), "scale(): spec must be a NetworkSpec"),
    (lambda ss, b: ss.scale(b, d="x"), "d must be a number (got 'x')"),
    (lambda ss, b: ss.scale(b, rounding="stage"), "scale(): rounding must be a Rounding"),
    (lambda ss, b: ss.scale(b, bogus=1), "scale(): got an unexpected keyword argument 'bogus'"),
    (lambda ss, b: ss.compound(None, 1, 1, 1), "alpha must be a number (got None)"),
    (lambda ss, b: ss.compound(1.2, 1.1, 1.15, 1, 2), "compound(): too many positional arguments"),
    (lambda ss, b: ss.count_cost(None), "count_cost(): spec must be a NetworkSpec"),
    (lambda ss, b: ss.count_cost(3), "count_cost(): spec must be a NetworkSpec"),
    (lambda ss, b: ss.count_cost("resnet18"), "gives one) (got 'resnet18')"),
    (lambda ss, b: ss.count_cost(b, bogus=1), "count_cost(): got an unexpected keyword argument 'bogus'"),
    (lambda ss, b: ss.family(3, 1.2, 1.1, 1.15), "family(): base must be a NetworkSpec, a base name or a spec file"),
    (lambda ss, b: ss.family(b, 1.2, 1.1, 1.15, rounding="stage"), "family(): rounding must be a Rounding"),
    (lambda ss, b: ss.family(b, 1.2, 1.1, 1.15, phi_max="2"), "phi_max must be a whole number"),
    (lambda ss, b: ss.family(b, 1.2, 1.1, 1.15, bogus=1), "family(): got an unexpected keyword argument 'bogus'"),
    (lambda ss, b: ss.create_model(None), "create_model(): source must be a run directory"),
    (lambda ss, b: ss.create_model(123), "create_model(): source must be a run directory"),
    (lambda ss, b: ss.create_model("resnet20-cifar", phi="2"), "create_model(): phi must be a whole number >= 0"),
    (lambda ss, b: ss.create_model("nowhere"), "unknown base 'nowhere'"),
    (lambda ss, b: ss.create_model("resnet20-cifar", bogus=1), "create_model(): got an unexpected keyword"),
    (lambda ss, b: ss.load_model(None), "load_model(): folder must be the folder `scalesearch export` wrote"),
    (lambda ss, b: ss.load_model(123), "load_model(): folder must be"),
    (lambda ss, b: ss.reproduce(None), "reproduce(): experiment must be table3, figure8 or an experiment file"),
    (lambda ss, b: ss.reproduce("table3", bogus=1), "reproduce(): got an unexpected keyword argument 'bogus'"),
    (lambda ss, b: ss.run_grid(None), "run_grid(): settings must be a SearchSettings"),
    (lambda ss, b: ss.run_grid("resnet18"), "run_grid(): settings must be a SearchSettings"),
    (lambda ss, b: ss.Rounding(divisor="8"), "rounding field 'divisor' must be an integer >= 1 (got '8')"),
    (lambda ss, b: ss.Rounding(bogus=1), "Rounding(): got an unexpected keyword argument 'bogus'"),
    (lambda ss, b: ss.SearchSettings.make(None), "setting 'base' must be a base name or a spec file (got None)"),
    (lambda ss, b: ss.SearchSettings.make("resnet18", bogus=1), "unknown setting 'bogus'"),
])
def test_the_readme_api_refuses_bad_arguments_as_the_cli_does(call, said):
    """Every function of the README's Python API section, given None, a number, a wrong string
    or an unknown keyword, raises the CLI's UserError with one line naming it, never a TypeError
    or an AttributeError from inside."""
    import scalesearch as ss

    with pytest.raises(ss.UserError) as caught:
        call(ss, ss.get_base("resnet20-cifar"))
    assert said in str(caught.value) and "\n" not in str(caught.value)
