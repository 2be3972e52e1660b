"""The studies that are experiment files regenerate from their committed trials: the command
their NOTES.md names, re-run on a copy of the run folder, trains nothing and writes the
committed table, with the figures the NOTES quote."""

from __future__ import annotations

import shutil

import pytest

from conftest import ROOT, cli, ok

EXPERIMENTS = ROOT / "experiments"
CAPACITY = ["--config", EXPERIMENTS / "capacity" / "capacity.yaml"]
DEEP = ["--config", EXPERIMENTS / "deep-candidates" / "deep.yaml", "--budget", "synthetic"]

CASES = [
    # folder, the command's options, its table, figures quoted in the study's NOTES.md
    ("capacity/harder", [*CAPACITY, "--budget", "harder"], "capacity.md",
     ["| 83.8, 83.4, 84.3 |", "| 94.9, 89.4, 95.0 |", "| 92.1, 92.0, 91.6 |"]),
    ("capacity/harder-noclip", [*CAPACITY, "--budget", "harder-noclip"], "capacity.md",
     ["| 91.0, 92.8, 90.6 |", "| +0.07 (noise, spread 0.92) |"]),
    ("deep-candidates/sgd", [*DEEP], "deep.md",      # the default recipe, at-chance runs marked
     ["| 9.0 (at chance), 12.8 |", "| 8.2 (at chance), 10.2 (at chance) |", "| 39.6, 36.0 |"]),
    ("deep-candidates/sgd-scaled", [*DEEP, "--set", "train.residual_init=scaled"], "deep.md",
     ["| 14.8, 21.4 |", "| 26.0, 20.6 |", "| 35.8, 33.8 |"]),
    ("deep-candidates/lars-scaled", [*DEEP, "--set", "train.residual_init=scaled", "--set", "train.optimizer=lars"],
     "deep.md", ["| 29.4, 33.0 |", "| 33.2, 31.2 |", "| 30.6, 31.4 |"]),
]


@pytest.mark.parametrize("folder, options, table, quoted", CASES, ids=[c[0] for c in CASES])
def test_a_study_run_regenerates_its_table_from_trials_csv(tmp_path, folder, options, table, quoted):
    committed = EXPERIMENTS / folder
    out = tmp_path / "run"
    shutil.copytree(committed, out)
    (out / table).unlink()
    text = ok(cli("reproduce", *options, "--set", "backend.cpus_per_trial=1", "--out", out))
    assert "(0 to train)" in text                       # every trial kept: nothing trained again
    written = (out / table).read_text()
    assert written == (committed / table).read_text()   # the committed table is current
    for figure in quoted:
        assert figure in written, figure
