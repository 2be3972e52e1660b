"""What a run folder's writes never do: follow a link out of the folder, or change a file when
the command has nothing to train."""

from __future__ import annotations

import os

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
