"""Issue 9's fault classes, each driven through the real `scalesearch` command over many values.

Every refusal must be exactly one line on stderr starting with "error:", a non-zero exit, no
traceback anywhere, and must leave every file of an existing run as it was (hashed before
and after) and nothing at all in a new --out.  Most cases run in-process through typer's
CliRunner on ``scalesearch.cli.app`` (fast); kills, Ctrl-C, the concurrency race, an
unreachable Ray address and unwritable folders run the installed command in real processes.

One finished run directory is built once per module and copied for each case that damages
or resumes it.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from conftest import ROOT, make_color_folders
from scalesearch.cli import app

EXE = ROOT / ".venv" / "bin" / "scalesearch"
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "scalesearch"]
SCRATCH = Path(tempfile.mkdtemp(prefix="scalesearch-faults-"))
atexit.register(shutil.rmtree, SCRATCH, True)
DATA = make_color_folders(SCRATCH / "colours")
CACHE = SCRATCH / "cache"
# A search that trains one small candidate at 16px in about a second.
TINY = ["--base", "resnet20-cifar", "--dataset", str(DATA), "--cache-dir", str(CACHE), "--resolution", "16",
        "--train-subset", "96", "--val-subset", "48", "--epochs", "2", "--batch-size", "16", "--alpha-max", "1.6",
        "--beta-max", "1.6", "--phi-max", "2", "--order", "id", "--max-trials", "1", "--no-estimate", "--cpus-per-trial", "1"]


# -- helpers ----------------------------------------------------------------------------------

def cli(*args: str):
    """The command in this process; a fresh process's data (no data set kept in memory)."""
    from scalesearch.trial import load_dataset

    load_dataset.cache_clear()
    return CliRunner().invoke(app, [str(a) for a in args])


def run_process(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          **kwargs)


def refused(result, why: str = "") -> str:
    """Assert the one-line refusal (CliRunner result or CompletedProcess); return the line."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    stdout, stderr = result.stdout, result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    context = f"{why}: exit {code}, stderr {stderr[-1500:]!r}"
    assert code not in (0, None), context
    assert "Traceback" not in stdout + stderr, context
    assert len(lines) == 1 and lines[0].startswith("error:"), context
    assert "internal error" not in lines[0], context  # a bug, not a refusal
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), f"{why}: {exception!r}"
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file of a run; the lock file only records the last holder's pid."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def trial_rows(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "trials.csv").set_index("trial")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished search (1 trial), built once; copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = cli("grid", *TINY, "--out", out)
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = trial_rows(out)
    assert len(rows) == 1 and set(rows.state) == {"COMPLETE"}
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


# -- 1. sizes that cannot be built ------------------------------------------------------------

def _spec(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


VGG = (ROOT / "examples" / "vgg11.yaml").read_text()


@pytest.mark.parametrize("args", [
    ["flops", "--base", "resnet18", "--r", "1e5"],
    ["flops", "--base", "resnet18", "--w", "1e5"],
    ["flops", "--base", "resnet18", "--d", "1e5"],
    ["flops", "--base", "efficientnet-b7", "--w", "30", "--r", "8"],
    ["flops", "--base", "resnet50", "--r", "40"],             # within the spec's limits, over the memory limit
    ["family", "--base", "resnet18", "--alpha", "1", "--beta", "1", "--gamma", "100", "--phi-max", "20"],
    ["family", "--base", "resnet18", "--alpha", "1", "--beta", "100", "--gamma", "1", "--phi-max", "20"],
    ["family", "--base", "resnet18", "--alpha", "100", "--beta", "1", "--gamma", "1", "--phi-max", "20"],
    ["family", "--base", "resnet18", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi-max", "20",
     "--target-flops", "9x"],
])
def test_sizes_that_cannot_be_built_are_refused(args):
    started = time.monotonic()
    line = refused(cli(*args), " ".join(args))
    assert any(word in line for word in ("at most", "GiB", "limit")), line
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("field, value", [("out_channels: 64", "out_channels: 1000000000"),
                                          ("resolution: 224", "resolution: 100000"),
                                          ("layers: 2", "layers: 100000")])
def test_spec_sizes_that_cannot_be_built_are_refused(tmp_path, field, value):
    path = _spec(tmp_path, "big.yaml", VGG.replace(field, value, 1))
    refused(cli("flops", "--base", path), value)


# -- 2. non-finite and extreme numbers for every numeric option --------------------------------

NON_FINITE = ["nan", "inf", "-inf", "-1", "1e400", "-1e400", "abc", ""]
FLOPS_CASES = [(opt, v) for opt in ("--d", "--w", "--r") for v in NON_FINITE + ["0", "1e308", "-0"]]
FAMILY = ["family", "--base", "resnet20-cifar", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15",
          "--phi-max", "2"]
FAMILY_CASES = ([(opt, v) for opt in ("--alpha", "--beta", "--gamma") for v in NON_FINITE + ["0", "0.5", "1e308"]]
                + [("--phi-max", v) for v in ("-1", "21", "nan", "1e400", "1.5", "abc")]
                + [("--target-flops", v) for v in ("nan", "inf", "1e400x", "0x", "-1x", "0.5x", "nanx", "x", "abc", "")]
                + [("--tolerance", v) for v in NON_FINITE + ["0", "1", "1e5"]])


@pytest.mark.parametrize("option, value", FLOPS_CASES)
def test_flops_refuses_bad_numbers(option, value):
    refused(cli("flops", "--base", "resnet20-cifar", option, value), f"flops {option} {value!r}")


def _with(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
        return args
    return args + [option, value]


@pytest.mark.parametrize("option, value", FAMILY_CASES)
def test_family_refuses_bad_numbers(option, value):
    args = _with(FAMILY, option, value)
    if option == "--tolerance":
        args += ["--target-flops", "2x"]
    refused(cli(*args), f"family {option} {value!r}")


_number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-nan", "inf", "+inf", "1e400", "-0.0", "1e-320", "0x10", "1_000", " 2", "٣"]),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=st.sampled_from(["--d", "--w", "--r"]), value=_number_text)
def test_flops_any_number_is_a_result_or_one_line(option, value):
    result = cli("flops", "--base", "resnet20-cifar", option, value, "--json")
    if result.exit_code == 0:
        data = json.loads(result.stdout)
        assert data["params"] > 0 and data["flops"] > 0
    else:
        refused(result, f"flops {option} {value!r}")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=st.sampled_from(["--alpha", "--beta", "--gamma"]), value=_number_text,
       phi=st.integers(min_value=0, max_value=2))
def test_family_any_number_is_a_result_or_one_line(option, value, phi):
    result = cli(*_with(_with(FAMILY, "--phi-max", str(phi)), option, value), "--json")
    if result.exit_code == 0:
        assert len(json.loads(result.stdout)) == phi + 1
    else:
        refused(result, f"family {option} {value!r}")


GRID_CASES = (
    [(opt, v) for opt in ("--target-flops", "--max-params", "--max-acts")
     for v in ("nan", "inf", "1e400x", "1e400", "0x", "0", "-1x", "abc", "nanx", "")]
    + [(opt, v) for opt in ("--alpha-max", "--beta-max") for v in NON_FINITE + ["0", "0.5", "1e5"]]
    + [("--step", v) for v in NON_FINITE + ["0", "1e-6", "0.001"]]
    + [(opt, v) for opt in ("--tolerance", "--nominal-tolerance") for v in NON_FINITE + ["0", "1", "1e5"]]
    + [(opt, v) for opt in ("--resolution", "--train-subset", "--val-subset", "--images", "--batch-size", "--seeds",
                            "--max-trials", "--phi-max")
       for v in ("-1", "0", "nan", "1e400", "1.5", "abc", "") if (opt, v) != ("--phi-max", "0")]
    + [("--resolution", v) for v in ("3", "100000")] + [("--seeds", "101"), ("--phi-max", "21")]
    + [("--images", "1e15"), ("--train-subset", "1000000000")]
    + [("--epochs", v) for v in NON_FINITE + ["0", "1e9"]]
    + [("--lr", v) for v in NON_FINITE + ["0"]]
    + [("--seed", v) for v in ("-1", "nan", "1e400", "4294967296", "1.5", "abc")]
    + [("--cpus-per-trial", v) for v in NON_FINITE + ["0", "1e9", "99"]] + [("--batch-size", "1")]
    + [("--gpus-per-trial", v) for v in NON_FINITE + ["1"]]
    + [("--candidates", v) for v in ("-1", "abc", "1,,x", "nan", "", "99999")]
    + [("--order", "bogus"), ("--backend", "bogus"), ("--device", "bogus"), ("--device", "cuda:x"),
       ("--depth-rounding", "bogus"), ("--dataset", "/nonexistent"), ("--dataset", ""), ("--base", "nosuchnet"),
       ("--address", "nohost"), ("--config", "/nonexistent.yaml")]
)


@pytest.mark.parametrize("option, value", GRID_CASES)
def test_grid_refuses_bad_values_before_creating_anything(tmp_path, finished, option, value):
    """Class 2 and class 5: each bad value refused in one line; a new --out is never created,
    and an existing run is left exactly as it was."""
    new = tmp_path / "new-run"
    refused(cli("grid", *_with(TINY, option, value), "--out", new), f"grid {option} {value!r}")
    assert not new.exists(), sorted(p.name for p in new.iterdir())
    before = snapshot(finished)
    refused(cli("grid", *_with(TINY, option, value), "--out", finished), f"grid {option} {value!r} on a run")
    assert snapshot(finished) == before


# -- 3. spec files of the wrong shape ---------------------------------------------------------

SPEC_CASES = {
    "scale of the wrong shape": ("net.yaml", VGG + "scale: 5\n"),
    "scale with a string": ("net.yaml", VGG + "scale: [1, 1, x]\n"),
    "binary": ("net.yaml", bytes(range(256)) * 4),
    "not UTF-8": ("net.yaml", VGG.replace("vgg11-bn", "vgg\xe9").encode("latin-1")),
    "empty": ("net.yaml", ""),
    "only a comment": ("net.yaml", "# nothing\n"),
    "a list": ("net.yaml", "- 1\n- 2\n"),
    "a number": ("net.json", "5"),
    "stages not a list": ("net.yaml", VGG.split("stages:")[0] + "stages: 5\nhead: {channels: 0}\n"),
    "stride 3": ("net.yaml", VGG.replace("stride: 2}", "stride: 3}", 1)),
    "expand_ratio true": ("net.yaml", VGG.replace("stride: 2}", "stride: 2, expand_ratio: true}", 1)),
    "se_ratio 5": ("net.yaml", VGG.replace("stride: 2}", "stride: 2, se_ratio: 5}", 1)),
    "negative layers": ("net.yaml", VGG.replace("layers: 1", "layers: -1", 1)),
    "layers as text": ("net.yaml", VGG.replace("layers: 1", "layers: one", 1)),
    "kernel 0": ("net.yaml", VGG.replace("kernel: 3", "kernel: 0", 1)),
    "kernel 2.5": ("net.yaml", VGG.replace("kernel: 3", "kernel: 2.5", 1)),
    "unknown block": ("net.yaml", VGG.replace("block: conv", "block: nosuch", 1)),
    "unknown field": ("net.yaml", VGG + "colour: blue\n"),
    "resolution nan": ("net.yaml", VGG.replace("resolution: 224", "resolution: .nan")),
    "resolution true": ("net.yaml", VGG.replace("resolution: 224", "resolution: true")),
    "num_classes 0": ("net.yaml", VGG.replace("num_classes: 1000", "num_classes: 0")),
    "bad activation": ("net.yaml", VGG.replace("activation: relu", "activation: [relu]")),
    "YAML syntax": ("net.yaml", "stages: [\n"),
    "JSON syntax": ("net.json", '{"name": "x", '),
    "JSON NaN": ("net.json", json.dumps({"name": "x", "resolution": float("nan")})),
    "a folder": ("folder.yaml", None),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_spec_files_of_the_wrong_shape_are_named(tmp_path, case):
    name, text = SPEC_CASES[case]
    if text is None:
        path = tmp_path / name
        path.mkdir()
    else:
        path = _spec(tmp_path, name, text)
    line = refused(cli("flops", "--base", path), case)
    assert "spec" in line or "field" in line, line
    new = tmp_path / "new-run"
    refused(cli("grid", *_with(TINY, "--base", str(path)), "--out", new), case)
    assert not new.exists()


# -- 4. what used to be a silent wrong result ---------------------------------------------------

def _tree(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, counts in (("train", train), ("val", val)):
        for name, n in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("case", ["one class", "held-out split missing a class", "held-out folder empty",
                                  "train subset smaller than the classes", "val subset smaller than the classes"])
def test_data_sets_a_classifier_cannot_rank_on_are_refused(tmp_path, case):
    extra: list[str] = []
    if case == "one class":
        data = _tree(tmp_path / "d", {"only": 20}, {"only": 8})
    elif case == "held-out split missing a class":
        data = _tree(tmp_path / "d", {"a": 20, "b": 20, "c": 20}, {"a": 8, "b": 8})
    elif case == "held-out folder empty":
        data = _tree(tmp_path / "d", {"a": 20, "b": 20}, {"a": 8, "b": 0})
    else:
        data = _tree(tmp_path / "d", {"a": 20, "b": 20, "c": 20}, {"a": 8, "b": 8, "c": 8})
        extra = ["--train-subset", "2"] if case.startswith("train") else ["--val-subset", "2"]
    new = tmp_path / "new-run"
    args = _with(_with(_with(TINY, "--dataset", str(data)), "--train-subset", "48"), "--val-subset", "24")
    for i in range(0, len(extra), 2):
        args = _with(args, extra[i], extra[i + 1])
    line = refused(cli("grid", *args, "--out", new), case)
    assert ("at least 2 classes" in line) if case == "one class" else ("no image of class" in line), line
    assert not new.exists()


@pytest.mark.parametrize("args, words", [
    (["grid", *TINY, "--lr", "0"], "'lr'"),
    (["grid", *TINY, "--max-params", "0x"], "max_params"),
    (["grid", *TINY, "--max-acts", "0x"], "max_acts"),
    (["family", *FAMILY[1:], "--json", "--csv"], "choose one"),
    (["grid", *TINY, "--backend", "optuna", "--gpus-per-trial", "1"], "gpus_per_trial"),
])
def test_values_that_used_to_run_silently_wrong_are_named(tmp_path, args, words):
    new = tmp_path / "new-run"
    line = refused(cli(*args, *(["--out", new] if args[0] == "grid" else [])), " ".join(args))
    assert words in line, line
    assert not new.exists()


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
def test_damaged_run_file_is_refused_or_resumed_correctly(run_copy, name, damage, extend):
    """Re-run (the same command, or one that extends the run to 2 trials): either one clear
    refusal that changes nothing, or a correct finish that never retrains a finished trial."""
    original = trial_rows(run_copy)
    DAMAGES[damage](run_copy / name)
    before = snapshot(run_copy)
    max_trials = "2" if extend else "1"
    result = cli("grid", *_with(TINY, "--max-trials", max_trials), "--out", run_copy)
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
def test_what_a_refusal_says_to_do_works(run_copy, tmp_path, name):
    """'Move it away': the next run extends the search without training a finished trial again
    (and a re-measured candidate table is the one that was lost)."""
    original, table = trial_rows(run_copy), (run_copy / "candidates.csv").read_bytes()
    _truncate_half(run_copy / name)
    args = ["grid", *_with(TINY, "--max-trials", "2"), "--out", run_copy]
    assert name in refused(cli(*args), name)
    shutil.move(run_copy / name, tmp_path / name)
    result = cli(*args)
    assert result.exit_code == 0, result.stderr[-2000:]
    rows = trial_rows(run_copy)
    assert len(rows) == 2
    assert (rows.loc[original.index, ["top1", "seconds"]].values == original[["top1", "seconds"]].values).all()
    assert (run_copy / "candidates.csv").read_bytes() == table


@pytest.mark.parametrize("damage", ["truncated", "emptied", "garbled"])
def test_damaged_cache_is_rebuilt_and_the_run_resumes(run_copy, tmp_path, caplog, damage):
    """A cache is the tool's own: rebuilt with one warning line naming it, the run resumed."""
    import logging

    cache = tmp_path / "cache"
    cache.mkdir()
    for path in CACHE.glob(f"{DATA.name}-*.pt"):  # the entry of the finished run's data
        shutil.copy(path, cache / path.name)
        DAMAGES[damage](cache / path.name)
    assert list(cache.glob("*.pt"))
    original = trial_rows(run_copy)
    with caplog.at_level(logging.WARNING, logger="scalesearch"):
        result = cli("grid", *_with(TINY, "--cache-dir", str(cache)), "--out", run_copy)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0] and "rebuilding" in warnings[0], warnings
    assert str(cache) in warnings[0] and "\n" not in warnings[0]
    rows = trial_rows(run_copy)
    assert (rows[["top1", "loss", "seconds"]].values == original[["top1", "loss", "seconds"]].values).all()
    from scalesearch.data import load_cached

    assert all(load_cached(path, ("classes",)) is not None for path in cache.glob("*.pt"))


# -- kills at random points, and Ctrl-C ------------------------------------------------------------

def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*CMD, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


_DROPPED_CTRL_C = """
import sys, time, weakref
from scalesearch.interrupts import raise_pending_interrupt, redeliver_interrupts
sys.unraisablehook = redeliver_interrupts(sys.unraisablehook)
class Thing: pass
thing = Thing()
def callback(ref): raise KeyboardInterrupt
ref = weakref.ref(thing, callback)
try:
    del thing  # Python drops the KeyboardInterrupt raised in the callback
    {after}
    print("lost")
except KeyboardInterrupt:
    print("caught")
"""


@pytest.mark.parametrize("after", [
    # the main thread's checkpoint (each trial, each command's end): needs no other thread
    "raise_pending_interrupt()",
    # the delivery thread alone, however late the scheduler runs it (the deadline only ends a failed run)
    "deadline = time.monotonic() + 120\n    while time.monotonic() < deadline: sum(range(10_000))",
], ids=["checkpoint", "thread"])
def test_ctrl_c_inside_a_garbage_collection_callback_is_not_lost(after):
    """Seen once in a fresh-clone run: Ctrl-C landed in a weakref callback, where Python
    prints "Exception ignored ... Traceback" and drops the interrupt.  The command's hook
    raises it again in the main thread, with no traceback.  (It once ran on a 10 ms timer
    that a test under load could outrun; neither path now has a deadline to miss.)"""
    script = _DROPPED_CTRL_C.format(after=after)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stdout.strip() == "caught" and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_a_dropped_ctrl_c_is_raised_once():
    """The checkpoint and the delivery thread never both raise the same Ctrl-C."""
    from scalesearch.interrupts import _InterruptRedelivery

    class Unraisable:
        exc_type = KeyboardInterrupt

    redelivery = _InterruptRedelivery(default_hook=lambda unraisable: None)
    redelivery.hook(Unraisable())
    with pytest.raises(KeyboardInterrupt):
        redelivery.raise_pending()
    redelivery.thread.join()  # it finds nothing pending and calls no interrupt_main
    redelivery.raise_pending()  # nothing left: returns
    for _ in range(1000):  # an interrupt_main from the thread would be raised by now
        sum(range(100))
    assert not redelivery.pending


def test_kill_and_ctrl_c_at_random_points_then_resume(run_copy):
    """Extend the finished run to 3 trials; SIGKILL it, then Ctrl-C it, each at a seeded
    random moment; the third run finishes with every trial once and the first one unchanged."""
    original = trial_rows(run_copy)
    args = ["grid", *_with(TINY, "--max-trials", "3"), "--out", run_copy]
    rng = random.Random(9)
    for sig in (signal.SIGKILL, signal.SIGINT):
        proc = _start(args)
        first = proc.stdout.readline()  # the search has begun (its first line: the base's FLOPs)
        assert "FLOPs" in first, first + proc.stderr.read()[-2000:]
        time.sleep(rng.uniform(0.0, 2.0))
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stdout + stderr, stderr[-2000:]
        if proc.returncode == 0:  # on a fast machine the search can finish before the signal lands
            continue
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr[-2000:])
        else:
            assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("interrupted:"), stderr[-2000:]
    final = run_process(*args)
    assert final.returncode == 0, final.stderr[-2000:]
    rows = trial_rows(run_copy)
    assert len(rows) == 3 and rows.index.is_unique and set(rows.state) <= {"COMPLETE", "DIVERGED"}
    assert (rows.loc[original.index, ["top1", "seconds"]].values == original[["top1", "seconds"]].values).all()
    assert not list(run_copy.glob(".*.tmp"))


# -- 7. two identical searches at once -------------------------------------------------------------

def test_two_identical_searches_at_once_one_runs_the_other_is_refused(run_copy):
    args = ["grid", *_with(TINY, "--max-trials", "3"), "--out", run_copy]
    first, second = _start(args), _start(args)
    outputs = {p.pid: p.communicate(timeout=300) for p in (first, second)}
    codes = {p.pid: p.returncode for p in (first, second)}
    winners = [pid for pid, code in codes.items() if code == 0]
    assert len(winners) == 1, (codes, {pid: err[-1500:] for pid, (_, err) in outputs.items()})
    (loser,) = set(codes) - set(winners)
    line = refused(subprocess.CompletedProcess([], codes[loser], *outputs[loser]), "the second search")
    assert f"pid {winners[0]}" in line and "in use" in line, line
    rows = trial_rows(run_copy)
    assert len(rows) == 3 and set(rows.state) <= {"COMPLETE", "DIVERGED"}


# -- 8. Ray: an address where nothing listens ---------------------------------------------------------

def test_ray_address_where_nothing_listens_fails_quickly(tmp_path):
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    new = tmp_path / "new-run"
    started = time.monotonic()
    proc = run_process("grid", *TINY, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--out", new,
                       timeout=60)
    assert time.monotonic() - started < 20
    line = refused(proc, "unreachable Ray address")
    assert f"127.0.0.1:{port}" in line
    assert not new.exists()


def test_ray_address_where_something_else_listens_is_one_line(tmp_path):
    """A port that answers but is no Ray head: Ray's own retries (a warning a second) never
    reach the user; one line names the address, and nothing is created."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    new = tmp_path / "new-run"
    try:
        proc = run_process("grid", *TINY, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--out", new,
                           timeout=120, env={**os.environ, "SCALESEARCH_RAY_JOIN_TIMEOUT_S": "15"})
    finally:
        server.close()
    line = refused(proc, "a non-Ray listener")
    assert f"127.0.0.1:{port}" in line and "no Ray head answered within 15 s" in line, line
    assert not new.exists()


@pytest.mark.parametrize("option, value, what", [("--cpus-per-trial", "4096", "CPUs"),
                                                 ("--gpus-per-trial", "64", "GPUs")]
                         + ([] if torch.cuda.is_available() else [("--device", "cuda", "no GPU")]))
def test_ray_resources_beyond_this_machine_refused_before_any_file(tmp_path, option, value, what):
    new = tmp_path / "new-run"
    args = [a for a in TINY]
    i = args.index("--cpus-per-trial")
    del args[i:i + 2]
    result = cli("grid", *args, "--backend", "ray", option, value, "--out", new)
    line = refused(result, option)
    assert f"{option} {value}" in line and what in line and "this machine" in line, line
    assert not new.exists()


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
def test_unwritable_out_or_cache_dir_is_named_in_one_line(tmp_path, case):
    """A real process and a real refusal from the kernel (not a simulated one)."""
    unwritable = _unwritable_folder(tmp_path)
    named = unwritable / "scalesearch-run" if case == "--out" else unwritable / "scalesearch-cache"
    out = named if case == "--out" else tmp_path / "new-run"
    fresh_cache = tmp_path / "cache"  # nothing cached: the data must be decoded and written
    args = _with(TINY, "--cache-dir", str(named if case == "--cache-dir" else fresh_cache))
    try:
        proc = run_process("grid", *args, "--out", out)
    finally:
        if os.geteuid() != 0:
            unwritable.chmod(0o755)
    line = refused(proc, case)
    assert str(named) in line, line
    assert not out.exists() and not named.exists()


def test_read_only_finished_run_is_refused_untouched(run_copy, monkeypatch):
    """A run directory this process may not write to (as root, file modes stop nothing, so the
    permission check is what is made to say no): one line naming it, every file as it was."""
    import scalesearch.study as study

    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(study.os, "access", lambda path, mode, **kw: (
            False if Path(path) == run_copy and mode & os.W_OK else real_access(path, mode, **kw)))
    else:
        for path in (*run_copy.iterdir(), run_copy):
            path.chmod(0o555 if path.is_dir() else 0o444)
    before = snapshot(run_copy)
    try:
        line = refused(cli("grid", *TINY, "--out", run_copy), "read-only run")
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


def test_a_cut_row_without_the_manifest_is_never_a_result(run_copy):
    """The tool's own advice for a damaged manifest is to move it away; a row cut short is then
    refused by name (it once read as COMPLETE and changed the ranking)."""
    _cut_row(run_copy / "trials.csv")
    (run_copy / ".checksums.json").unlink()
    before = snapshot(run_copy)
    for args in (["grid", *TINY, "--out", run_copy], ["plot", run_copy]):
        line = refused(cli(*args), args[0])
        assert "trials.csv: the row of trial c" in line and "is incomplete (no state)" in line, line
    assert snapshot(run_copy) == before


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


def test_plot_refuses_a_garbled_config_json(run_copy):
    (run_copy / "config.json").write_bytes(b"\xff\xfe{garbage")
    assert "config.json' is damaged: it no longer matches" in refused(cli("plot", run_copy), "plot")
    (run_copy / ".checksums.json").unlink()
    assert "config.json' is damaged (not a JSON object)" in refused(cli("plot", run_copy), "plot, no manifest")


def test_plot_export_and_curves_refuse_folders_they_cannot_write(run_copy, tmp_path, monkeypatch):
    """The check grid makes, before any work: one line naming the folder, nothing changed."""
    import scalesearch.study as study

    real_access = os.access
    monkeypatch.setattr(study.os, "access", lambda path, mode, **kw: (
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
    result = cli("export", run_copy, "--phi", "1", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    assert "note: model.pt is untrained" in result.stdout
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["weights"].startswith("untrained")


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


# -- 11. bad values the settings passed, and wording -------------------------------------------------

def _cifar_pickles(folder: Path, labels: list[int]) -> Path:
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    for name in ("data_batch_1", "test_batch"):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((20, 3 * 8 * 8), dtype=np.uint8), "labels": labels}, f)
    return folder


def test_out_of_range_cifar_labels_are_refused_by_the_dry_run(tmp_path):
    """57 in a 10-class set once passed loading and --dry-run, then killed training."""
    data = _cifar_pickles(tmp_path / "cifar", [i % 10 for i in range(19)] + [57])
    line = refused(cli("grid", *_with(TINY, "--dataset", str(data)), "--dry-run", "--out", tmp_path / "run"),
                   "label 57")
    assert f"CIFAR pickle file '{data / 'data_batch_1'}' is malformed: label 57 is outside 0..9" in line, line
    assert not (tmp_path / "run").exists()


def test_family_tolerance_without_a_target_is_refused():
    line = refused(cli(*FAMILY, "--tolerance", "0.05"), "family --tolerance")
    assert "tolerance (0.05) applies to a fitted family only" in line, line


@pytest.mark.parametrize("args, said", [
    (["flops", "--base", "resnet20-cifar", "--d", "inf"], "d must be a finite number (got inf)"),
    (["flops", "--base", "SPECDIR"], "is a folder: give a .json, .yaml or .yml file"),
    (["flops", "--base", "SPECTXT"], "must end in .json, .yaml or .yml (got .txt)"),
], ids=["inf", "folder", "txt"])
def test_wording_names_what_is_wrong(tmp_path, args, said):
    (tmp_path / "x.txt").write_text("stages: []\n")
    args = [str(tmp_path) if a == "SPECDIR" else str(tmp_path / "x.txt") if a == "SPECTXT" else a for a in args]
    assert said in refused(cli(*args), " ".join(args))


def test_a_read_only_file_system_is_called_so(tmp_path, monkeypatch):
    import scalesearch.study as study

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(study.os, "access", lambda path, mode, **kw: False)
    monkeypatch.setattr(study.os, "statvfs", lambda path: ReadOnly())
    assert study.writable_problem(tmp_path) == "read-only file system"


def test_a_damaged_study_db_names_the_damage_not_sqlites_header(tmp_path):
    import sqlite3

    from scalesearch.backends.optuna_backend import OptunaBackend
    from scalesearch.errors import UserError
    from scalesearch.settings import BackendSettings
    from scalesearch.study import RunDir

    path = tmp_path / "study.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trials (a, b)")
        db.executemany("INSERT INTO trials VALUES (?, ?)", [(i, "x" * 200) for i in range(2000)])
    db.close()
    raw = bytearray(path.read_bytes())
    raw[4096 * 5 + 8: 4096 * 5 + 72] = b"\xff" * 64  # a page's cell pointers overwritten
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as info:
        OptunaBackend(BackendSettings()).check_store(RunDir(tmp_path))
    message = str(info.value)
    assert "is damaged or not an Optuna study (On tree page" in message and "***" not in message, message
