"""The Python API does what the commands do: reproduce and curves too, one version."""

from __future__ import annotations

import sys

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
    from scalesearch.cli import trial_line
    from scalesearch.study import TrialFinished, TrialRow

    row = TrialRow(trial="c7-s1", candidate=7, seed=1, top1=0.331, seconds=75.2, state="COMPLETE")
    assert trial_line(TrialFinished(row=row, done=3, total=6, rows=[row])) == \
        "trial c7-s1 COMPLETE: top-1 33.10%, 1 min 15 s [3/6]"
    bad = TrialRow(trial="c2-s0", candidate=2, seed=0, state="DIVERGED", diverged="loss is nan")
    assert trial_line(TrialFinished(row=bad, done=4, total=6, rows=[bad])) == \
        "trial c2-s0 DIVERGED (loss is nan): no top-1 [4/6]"
