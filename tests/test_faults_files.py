"""Damaged run files, stores and caches, read-only folders, and every reader of a run folder
(plot, curves, export) as careful as a resume: each refused in one line naming the file, or
read as it was before the damage; nothing replaced.  The finished run they damage is
tests/conftest.py's ``finished``, copied for each case.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli, ok, refused, snapshot, trial_rows, with_option
from scalesearch.errors import UserError


# -- 6. damaged run files and caches -------------------------------------------------------------

def _truncate_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garble(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    at = random.Random(path.name).randrange(len(raw) // 4, max(len(raw) // 4 + 1, 3 * len(raw) // 4))
    raw[at:at + 32] = bytes(random.Random(at).randrange(256) for _ in range(len(raw[at:at + 32])))
    path.write_bytes(bytes(raw))


def _drop_last_line(path: Path) -> None:  # still a well-formed CSV: only the checksum can tell
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


DAMAGES = {"truncated": _truncate_half, "emptied": _empty, "garbled": _garble, "last row cut": _drop_last_line}
RUN_FILES = ["config.json", "candidates.csv", "trials.csv", "study.db", ".checksums.json"]


DAMAGE_CASES = [(f, d, extend) for f in RUN_FILES for d in DAMAGES for extend in (False, True)
                if not (d == "last row cut" and not f.endswith(".csv"))
                and not (extend and f == "config.json")]  # refused before the command matters


@pytest.mark.parametrize("name, damage, extend", DAMAGE_CASES,
                         ids=[f"{f}-{d}-{'extend' if e else 'same'}" for f, d, e in DAMAGE_CASES])
def test_damaged_run_file_is_refused_or_resumed_correctly(run_copy, tiny, name, damage, extend):
    """Re-run (the same command, or one that extends the run to 2 trials): either one clear
    refusal that changes nothing, or a correct finish that never retrains a finished trial."""
    original = trial_rows(run_copy)
    DAMAGES[damage](run_copy / name)
    before = snapshot(run_copy)
    max_trials = "2" if extend else "1"
    result = cli("grid", *with_option(tiny, "--max-trials", max_trials), "--out", run_copy)
    if result.exit_code != 0:
        line = refused(result, f"{damage} {name}")
        # a damaged manifest may still parse, and then names the file it no longer matches
        assert name in line or (name == ".checksums.json" and "is damaged" in line), line
        assert snapshot(run_copy) == before, f"a refused re-run changed files ({damage} {name})"
        return
    rows = trial_rows(run_copy)
    assert len(rows) == int(max_trials) and set(rows.state) <= {"COMPLETE", "DIVERGED"}
    kept = rows.loc[original.index]
    assert (kept[["top1", "loss", "seconds"]].values == original[["top1", "loss", "seconds"]].values).all(), \
        f"a finished trial was trained again after {damage} {name}"
    best = json.loads((run_copy / "best.json").read_text())
    assert best["candidate"] in set(rows.candidate)


@pytest.mark.parametrize("name", ["candidates.csv", "study.db", ".checksums.json"])
def test_what_a_refusal_says_to_do_works(run_copy, tiny, tmp_path, name):
    """'Move it away': the next run extends the search without training a finished trial again
    (and a re-measured candidate table is the one that was lost)."""
    original, table = trial_rows(run_copy), (run_copy / "candidates.csv").read_bytes()
    _truncate_half(run_copy / name)
    args = ["grid", *with_option(tiny, "--max-trials", "2"), "--out", run_copy]
    assert name in refused(cli(*args), name)
    shutil.move(run_copy / name, tmp_path / name)
    result = cli(*args)
    assert result.exit_code == 0, result.stderr[-2000:]
    rows = trial_rows(run_copy)
    assert len(rows) == 2
    assert (rows.loc[original.index, ["top1", "seconds"]].values == original[["top1", "seconds"]].values).all()
    assert (run_copy / "candidates.csv").read_bytes() == table


@pytest.mark.parametrize("damage", ["truncated", "emptied", "garbled"])
def test_damaged_store_is_rebuilt_and_the_run_resumes(run_copy, tiny, tmp_path, caplog, damage):
    """A store is the tool's own: rebuilt with one warning line naming it, the run resumed with
    the same numbers (the rebuilt store holds the same pixels)."""
    import logging

    from scalesearch.data import open_store

    cache = tmp_path / "cache"  # the finished run's data, and only that, stored here
    ok(cli("grid", *with_option(tiny, "data.cache_dir", str(cache)), "--dry-run", "--out", tmp_path / "dry"))
    stores = list((cache / "stores").glob("*px"))
    assert len(stores) == 1
    DAMAGES[damage](stores[0] / "images.npy")
    original = trial_rows(run_copy)
    with caplog.at_level(logging.WARNING, logger="scalesearch"):
        result = cli("grid", *with_option(tiny, "data.cache_dir", str(cache)), "--out", run_copy)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "rebuilding" in warnings[0], warnings
    assert str(cache) in warnings[0] and "\n" not in warnings[0]
    rows = trial_rows(run_copy)
    assert (rows[["top1", "loss", "seconds"]].values == original[["top1", "loss", "seconds"]].values).all()
    open_store(stores[0])  # whole again


# -- 9. read-only --out and --cache-dir -----------------------------------------------------------------

def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in: a read-only one, or (as root, whom
    file modes do not stop) one of sysfs, which refuses new entries to root too."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys")
    try:
        (folder / "scalesearch-probe").mkdir()
    except OSError:
        return folder
    (folder / "scalesearch-probe").rmdir()
    pytest.skip("no folder here refuses a new entry to root")


@pytest.mark.parametrize("case", ["--out", "--cache-dir"])
def test_unwritable_out_or_cache_dir_is_named_in_one_line(tmp_path, tiny, case):
    """A real refusal from the kernel (not a simulated one)."""
    unwritable = _unwritable_folder(tmp_path)
    named = unwritable / "scalesearch-run" if case == "--out" else unwritable / "scalesearch-cache"
    out = named if case == "--out" else tmp_path / "new-run"
    fresh_cache = tmp_path / "cache"  # nothing cached: the data must be decoded and written
    args = with_option(tiny, "data.cache_dir", str(named if case == "--cache-dir" else fresh_cache))
    try:
        proc = cli("grid", *args, "--out", out)
    finally:
        if os.geteuid() != 0:
            unwritable.chmod(0o755)
    line = refused(proc, case)
    assert str(named) in line, line
    assert not out.exists() and not named.exists()


def test_read_only_finished_run_is_refused_untouched(run_copy, tiny, monkeypatch):
    """A run directory this process may not write to (as root, file modes stop nothing, so the
    permission check is what is made to say no): one line naming it, every file as it was."""
    import scalesearch.study.rundir as rundir

    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(rundir.os, "access", lambda path, mode, **kw: (
            False if Path(path) == run_copy and mode & os.W_OK else real_access(path, mode, **kw)))
    else:
        for path in (*run_copy.iterdir(), run_copy):
            path.chmod(0o555 if path.is_dir() else 0o444)
    before = snapshot(run_copy)
    try:
        line = refused(cli("grid", *tiny, "--out", run_copy), "read-only run")
    finally:
        run_copy.chmod(0o755)
    assert str(run_copy) in line and "not writable" in line, line
    assert snapshot(run_copy) == before


# -- 10. every reader of a run folder as careful as a resume (plot, curves, export) ------------------

def _cut_top1(path: Path) -> None:
    """A top-1 value cut short (0.34 -> 0.3): still a well-formed CSV, only the checksum can tell."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    value = frame.loc[0, "top1"]
    frame.loc[0, "top1"] = value[:3] if len(value) > 3 else "0.3"  # a run that scored 1.0 has nothing to cut
    frame.to_csv(path, index=False)


def _cut_row(path: Path) -> None:
    """The last row ends in the middle (its later cells, state among them, gone)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2] + "\n")


@pytest.mark.parametrize("damage", [_cut_top1, _cut_row], ids=["top1-cut", "row-cut"])
def test_plot_and_curves_refuse_a_damaged_trials_csv_and_replace_nothing(run_copy, tmp_path, damage):
    damage(run_copy / "trials.csv")
    before = snapshot(run_copy)
    line = refused(cli("plot", run_copy), "plot")
    assert f"'{run_copy / 'trials.csv'}' is damaged" in line, line
    for source in (run_copy, run_copy / "trials.csv"):
        line = refused(cli("curves", source, "--out", tmp_path / "c.png"), f"curves {source}")
        assert "trials.csv' is damaged" in line, line
    assert snapshot(run_copy) == before and not (tmp_path / "c.png").exists()


def test_a_cut_row_without_the_manifest_is_never_a_result(run_copy, tiny):
    """The tool's own advice for a damaged manifest is to move it away; a row cut short is then
    refused by name (it once read as COMPLETE and changed the ranking)."""
    _cut_row(run_copy / "trials.csv")
    (run_copy / ".checksums.json").unlink()
    before = snapshot(run_copy)
    for args in (["grid", *tiny, "--out", run_copy], ["plot", run_copy]):
        line = refused(cli(*args), args[0])
        assert "trials.csv: the row of trial c" in line and "is incomplete (no state)" in line, line
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("seed, rung", [(7, 0), (0, 2)], ids=["a seed the run does not train", "a rung of no halving"])
def test_a_row_outside_the_runs_plan_stays_in_the_file_and_counts_in_no_result(run_copy, tiny, seed, rung):
    """A whole, consistent row of a seed or rung the run's settings do not train (left by a run
    once given more seeds, or written by hand) is kept, as a resume keeps it, and read by no
    result: plot and curves count what the search ranks."""
    import csv

    from scalesearch.report.curves import load_series
    from scalesearch.report.plots import _points
    from scalesearch.study.rundir import RunDir
    from scalesearch.study.rows import trial_id

    before = (_points(RunDir(run_copy)), load_series(run_copy))
    (run_copy / ".checksums.json").unlink()
    with open(run_copy / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    extra = dict(rows[0], seed=str(seed), rung=str(rung), top1="0.99",
                 trial=trial_id(int(rows[0]["candidate"]), seed, rung))
    with open(run_copy / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, extra])
    assert (_points(RunDir(run_copy)), load_series(run_copy)) == before
    ok(cli("grid", *tiny, "--out", run_copy))                              # a resume: nothing to train
    assert extra["trial"] in trial_rows(run_copy).index
    assert (_points(RunDir(run_copy)), load_series(run_copy)) == before


def test_export_refuses_a_damaged_family_csv(run_copy, tmp_path):
    family = run_copy / "family.csv"
    _garble(family)
    line = refused(cli("export", run_copy, "--phi", "1", "--out", tmp_path / "m"), "export")
    assert f"'{family}' is damaged: it no longer matches" in line and "re-run the same command" in line, line
    (run_copy / ".checksums.json").unlink()  # without the check: the garbled values themselves
    family.write_text("base,phi,d,w\nresnet20-cifar,one,x,1\n")
    line = refused(cli("export", run_copy, "--phi", "1", "--out", tmp_path / "m"), "export, no manifest")
    assert f"'{family}' is damaged (a row without a whole phi" in line, line
    assert not (tmp_path / "m").exists()


def test_export_refuses_a_family_csv_whose_values_no_run_writes(run_copy):
    """Without the manifest (moved away, or re-signed): a phi listed twice, a fractional
    resolution, and a config.json whose base no longer builds family.csv's networks are refused
    by name, never exported as another network."""
    import json

    from scalesearch.api import member_spec

    (run_copy / ".checksums.json").unlink()
    family = run_copy / "family.csv"
    rows = family.read_text().splitlines()
    original = member_spec(run_copy, 1)
    family.write_text("\n".join([*rows, rows[2]]) + "\n")            # phi 1 again
    with pytest.raises(UserError, match=r"family.csv' is damaged \(phi 1 is listed twice\)"):
        member_spec(run_copy, 1)
    header = rows[0].split(",")
    cells = rows[2].split(",")
    cells[header.index("resolution")] = "64.9"
    family.write_text("\n".join([rows[0], rows[1], ",".join(cells), *rows[3:]]) + "\n")
    with pytest.raises(UserError, match=r"whole resolution in pixels: phi=1, .*resolution=64.9"):
        member_spec(run_copy, 1)
    family.write_text("\n".join(rows) + "\n")
    assert member_spec(run_copy, 1) == original
    config = json.loads((run_copy / "config.json").read_text())
    config["settings"]["base"] = "mobilenetv2" if config["settings"]["base"] != "mobilenetv2" else "resnet20-cifar"
    (run_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config.json and .*family.csv disagree: phi 1 of family.csv has [\d,]+ params"):
        member_spec(run_copy, 1)


def test_plot_refuses_a_garbled_config_json(run_copy):
    (run_copy / "config.json").write_bytes(b"\xff\xfe{garbage")
    assert "config.json' is damaged: it no longer matches" in refused(cli("plot", run_copy), "plot")
    (run_copy / ".checksums.json").unlink()
    assert "config.json' is damaged (not a JSON object)" in refused(cli("plot", run_copy), "plot, no manifest")


def test_plot_export_and_curves_refuse_folders_they_cannot_write(run_copy, tmp_path, monkeypatch):
    """The check grid makes, before any work: one line naming the folder, nothing changed."""
    import scalesearch.study.rundir as rundir

    real_access = os.access
    monkeypatch.setattr(rundir.os, "access", lambda path, mode, **kw: (
        False if Path(path) == run_copy and mode & os.W_OK else real_access(path, mode, **kw)))
    before = snapshot(run_copy)
    line = refused(cli("plot", run_copy), "plot into a read-only run")
    assert f"cannot write the plots into '{run_copy}' (permission denied)" in line, line
    assert snapshot(run_copy) == before
    monkeypatch.undo()
    unwritable = _unwritable_folder(tmp_path)
    try:
        line = refused(cli("export", run_copy, "--phi", "1", "--out", unwritable / "m"), "export --out")
        assert f"--out '{unwritable / 'm'}' cannot be created (" in line, line
        line = refused(cli("curves", run_copy, "--out", unwritable / "c.png"), "curves --out")
        assert f"folder '{unwritable}' is not writable" in line, line
    finally:
        if os.geteuid() != 0:
            unwritable.chmod(0o755)


def test_export_says_its_weights_are_untrained(run_copy, tmp_path):
    result = cli("export", run_copy, "--phi", "1", "--out", tmp_path / "m", "--num-classes", "7")
    assert result.exit_code == 0, result.stderr
    assert "note: model.pt is untrained" in result.stdout
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["weights"].startswith("untrained")
    from scalesearch import load_model

    assert load_model(tmp_path / "m").head.fc.out_features == 7       # your data set's classes
    assert "--num-classes must be a whole number" in refused(cli("export", run_copy, "--phi", "1", "--out",
                                                                 tmp_path / "n", "--num-classes", "0"))


def test_a_damaged_export_is_one_line_from_load_model(run_copy, tmp_path):
    from scalesearch import load_model
    from scalesearch.errors import UserError

    assert cli("export", run_copy, "--phi", "1", "--out", tmp_path / "m").exit_code == 0
    (tmp_path / "m" / "model.pt").write_bytes(b"not a state dict")
    with pytest.raises(UserError, match=r"model.pt' does not hold the weights of the network in its spec.yaml"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "spec.yaml").unlink()
    with pytest.raises(UserError, match=r"is not an exported member: it has no spec.yaml"):
        load_model(tmp_path / "m")


# -- random damage to the values of a finished run's files --------------------------------------

_WHOLE = ["-1", "64.9", "abc", "inf", "1e300"]      # counts and ids: no run writes these
_BAD = {  # column -> values no run writes there (a plausible wrong value, like top-1 0.3, only a checksum tells)
    "trials.csv": {"top1": ["-0.2", "1.5", "inf", "abc", ""], "loss": ["-1", "abc", "inf", ""],
                   "flops": [*_WHOLE, "0", ""], "params": [*_WHOLE, "0", ""], "resolution": [*_WHOLE, "0", ""],
                   "seed": _WHOLE, "candidate": [*_WHOLE, "999"], "budget": [*_WHOLE, "0"], "state": ["abc", ""],
                   "trial": ["abc", "-1", "c0-s9"], "acts": [*_WHOLE, ""], "epochs": ["-1", "0", "abc", "inf"],
                   "flops_ratio": ["-1", "0", "abc", "inf", "1.5"], "gamma": ["-1", "0", "1.7"],
                   "seconds": ["-1", "abc", "inf", ""]},
    "family.csv": {"phi": ["-1", "64.9", "abc"], "d": ["-1", "0", "abc", "inf"], "w": ["-1", "0", "abc"],
                   "resolution": [*_WHOLE, "0"], "params": ["64.9", "-1", "12345"]},
    "candidates.csv": {"id": ["abc", "999"], "flops": ["-1", "123"], "params": ["777"], "resolution": ["17"],
                       "flops_ratio": ["9.5"]},
}


def _readers(run: Path) -> dict:
    from scalesearch.api import member_spec
    from scalesearch.report.curves import load_series
    from scalesearch.study.rundir import RunDir

    def resume() -> dict:  # what a resume reads: every row checked, and against candidates.csv
        folder = RunDir(run)
        folder.check_references()
        return folder.trials()
    return {"resume": resume, "export": lambda: member_spec(run, 1), "curves": lambda: load_series(run)}


@pytest.mark.parametrize("seed", range(int(os.environ.get("DAMAGE_SEEDS", 40))))  # more: DAMAGE_SEEDS=300
def test_random_damage_to_run_files_is_refused_or_changes_nothing(run_copy, seed):
    """A value no run writes, or a duplicated row, put at random into trials.csv, family.csv or
    candidates.csv of a finished run without its manifest: every reader (a resume, export,
    curves) either refuses it in one line or reads exactly what it read before."""
    import csv
    import random

    rng = random.Random(seed)
    (run_copy / ".checksums.json").unlink()
    readers = _readers(run_copy)
    before = {name: read() for name, read in readers.items()}
    name = rng.choice(sorted(_BAD))
    with open(run_copy / name, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0])
    if rng.random() < 0.2:
        rows.append(dict(rows[rng.randrange(len(rows))]))                     # a row twice
        what = "a duplicated row"
    else:
        column = rng.choice([c for c in _BAD[name] if c in columns])
        value = rng.choice(_BAD[name][column])
        rows[rng.randrange(len(rows))][column] = value
        what = f"{column} = {value!r}"
    with open(run_copy / name, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    for reader, read in readers.items():
        try:
            after = read()
        except UserError as exc:
            assert "\n" not in str(exc)
            continue
        assert after == before[reader], f"{name}: {what} changed what {reader} reads"
