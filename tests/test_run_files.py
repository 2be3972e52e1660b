"""What a run folder's writes never do: follow a link out of the folder, or change a file when
the command has nothing to train."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import cli


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_a_resume_with_nothing_to_train_leaves_every_file_as_it_was(colours, tiny, tmp_path):
    out = tmp_path / "run"
    assert cli("grid", *tiny, "--out", out).exit_code == 0
    before = snapshot(out)
    again = cli("grid", *tiny, "--out", out)
    assert again.exit_code == 0, again.output
    assert "step form: " in again.output and "the run's own, recorded in config.json" in again.output
    after = snapshot(out)
    assert sorted(after) == sorted(before)
    assert [name for name in before if after[name] != before[name]] == []  # best.json's search_seconds too


def test_a_lock_that_is_a_link_is_never_followed(colours, tiny, tmp_path):
    """A RUN/.lock that links elsewhere is refused by name before anything is written, and the
    file it points to keeps its bytes (it used to be truncated to a pid)."""
    precious = tmp_path / "precious.txt"
    precious.write_text("precious data")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(precious, out / ".lock")
    refused = cli("grid", *tiny, "--out", out)
    assert refused.exit_code == 2 and "is a symbolic link" in refused.output and "never followed" in refused.output
    assert precious.read_text() == "precious data" and sorted(p.name for p in out.iterdir()) == [".lock"]
    os.unlink(out / ".lock")
    os.symlink(tmp_path / "nowhere", out / ".lock")  # a dangling link is not created through either
    assert cli("grid", *tiny, "--out", out).exit_code == 2 and not (tmp_path / "nowhere").exists()


@pytest.fixture(scope="module")
def finished(colours, tiny, tmp_path_factory):
    """A finished run of two candidates, to copy and damage."""
    out = tmp_path_factory.mktemp("finished") / "run"
    more = [*tiny[:tiny.index("--max-trials")], "--max-trials", "2", *tiny[tiny.index("--max-trials") + 2:]]
    assert cli("grid", *more, "--out", out).exit_code == 0
    return out, more


@pytest.mark.parametrize("column, value, said", [
    ("top1", "37", "has top1 = 37.0 (a top-1 accuracy is a fraction in [0, 1])"),
    ("top1", "-0.2", "has top1 = -0.2 (a top-1 accuracy is a fraction in [0, 1])"),
    ("top1", "inf", "has top1 = inf in a COMPLETE row"),
    ("flops", "-5", "has flops = -5 (it must be a positive FLOP count)"),
    ("resolution", "0", "has resolution = 0 (it must be a positive resolution)"),
    ("candidate", "999", "names candidate 999, which is not a row of candidates.csv"),
    ("trial", "duplicate", "has two rows"),
    ("seed", "1", "whose id is c"),
])
def test_a_run_file_whose_values_make_no_sense_is_refused_by_every_reader(finished, tmp_path, column, value, said):
    """Without the manifest (moved away, as a refusal advises, or re-signed by a user's tool) the
    bytes are not checked, so the values are: a resume and plot refuse the row in one line,
    naming the file, the trial and the value, and leave the folder as it was."""
    import pandas as pd

    source, flags = finished
    out = tmp_path / "run"
    shutil.copytree(source, out)
    (out / ".checksums.json").unlink()
    rows = pd.read_csv(out / "trials.csv", dtype=str, keep_default_na=False)
    if value == "duplicate":
        rows.loc[1] = rows.loc[0]
    else:
        rows.loc[0, column] = value
        if column == "candidate":   # a row of another candidate, its id written to match
            rows.loc[0, "trial"] = "c999-" + rows.loc[0, "trial"].split("-", 1)[1]
    rows.to_csv(out / "trials.csv", index=False)
    before = snapshot(out)
    for args in (("grid", *flags, "--out", out), ("plot", out)):
        refused = cli(*args)
        assert refused.exit_code == 2, refused.output
        assert said in refused.output and "trials.csv" in refused.output and "Traceback" not in refused.output
        assert len(refused.output.strip().splitlines()) == 1 or args[0] == "grid"
    assert snapshot(out) == before
