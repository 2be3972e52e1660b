"""Shared helpers: the command in this process (CliRunner) and in a real process, the one-line
refusal, run-folder snapshots, and the small colour data set the search tests train on."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"
EXE = ROOT / ".venv" / "bin" / "scalesearch"
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "scalesearch"]

os.environ.setdefault("PYTHONUNBUFFERED", "1")
# Training threads sleep rather than spin at OpenMP barriers (set before torch is imported, and
# inherited by every process the tests start).  On a machine shared with one busy process a
# spinning thread waits for one that is descheduled: a 2-thread trial ran 6x slower.  The work is
# split the same way, so every number is the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A launcher that starts the suite in the background (`nohup ... &`) leaves SIGINT ignored, and
# the processes the tests start inherit that: their Ctrl-C (and _thread.interrupt_main) would do
# nothing.  Restored here, the children start with the default and install Python's handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def form_cache(tmp_path_factory) -> Path:
    """The step-form timings (scalesearch/train/forms.py) cached for this session only, so the suite
    never reads or leaves a user's cache; every process the tests start inherits it."""
    path = tmp_path_factory.mktemp("form-cache")
    os.environ["SCALESEARCH_CACHE_DIR"] = str(path)
    return path


def cost_latency(spec, device, batch, threads, min_run_time, label):
    """A stand-in for measure/latency.py's ``_time``: a latency read off the network's cost (1 ms
    per 100M FLOPs and 1 ms per 10M activations, per image), with a 2% spread: well formed,
    exact, and free."""
    from scalesearch.measure.cost import count_cost
    from scalesearch.measure.latency import Latency

    cost = count_cost(spec)
    ms = batch * (cost.flops / 1e8 + cost.acts / 1e7)
    return Latency(median_ms=ms, iqr_ms=0.02 * ms, batch=batch, resolution=spec.resolution, device=device,
                   threads=threads, blocks=10, machine=label)


@pytest.fixture(autouse=True)
def latency_from_cost(request, monkeypatch):
    """Every grid times the candidates it keeps (grid.latency), and a real timing costs a fraction
    of a second a network: in this process the timings come from ``cost_latency`` instead.  Tests
    of the timing itself are marked ``real_latency``; commands run in a process of their own time
    for real."""
    if request.node.get_closest_marker("real_latency") is None:
        from scalesearch.measure import latency

        monkeypatch.setattr(latency, "_time", cost_latency)
    else:   # a cache of its own, holding no stand-in
        monkeypatch.setenv("SCALESEARCH_CACHE_DIR", str(request.getfixturevalue("tmp_path") / "cache"))


@pytest.fixture
def cifar10_path() -> Path:
    if not (SHARED_CIFAR10 / "train").is_dir():
        pytest.skip(f"no CIFAR-10 image folder at {SHARED_CIFAR10} (only present beside the project's CI checkout)")
    return SHARED_CIFAR10


def make_color_folders(root: Path, per_class: int = 64, val_per_class: int = 32, size: int = 32) -> Path:
    """A small image-folder tree a network learns in one epoch: 3 colour classes with pixel noise.

    The built-in synthetic task needs thousands of images before a network leaves chance, far
    more than a test can train; tests of the search machinery use this instead.
    """
    import numpy as np
    from PIL import Image

    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
    for split, n in (("train", per_class), ("val", val_per_class)):
        for name, rgb in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "done").write_text("ok")
    return root


@pytest.fixture(scope="session")
def colours(tmp_path_factory) -> tuple[Path, Path]:
    """The colour data set and a decoded-image cache, made once per session: (data, cache)."""
    root = tmp_path_factory.mktemp("colours")
    return make_color_folders(root / "data"), root / "cache"


@pytest.fixture(scope="session")
def tiny(colours) -> list[str]:
    """`grid` flags of a search that trains one small candidate at 16 px in about a second."""
    data, cache = colours
    return ["--base", "resnet20-cifar", "--dataset", str(data), "--resolution", "16", "--epochs", "2",
            "--max-trials", "1", "--no-estimate"] + sets(**{
                "data.cache_dir": cache, "data.train_subset": 96, "data.val_subset": 48, "train.batch_size": 16,
                "grid.alpha_max": 1.6, "grid.beta_max": 1.6, "phi_max": 2, "order": "id", "backend.cpus_per_trial": 1})


def sets(**values) -> list[str]:
    """``--set NAME=VALUE`` arguments, one pair per setting."""
    return [a for name, value in values.items() for a in ("--set", f"{name}={value}")]


def with_option(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with ``option`` set to ``value`` (replaced where it is given, else added); an
    ``option`` without dashes is a setting's name (``data.cache_dir``), given as ``--set``."""
    args = list(args)
    if option == "--set":   # NAME=VALUE: that setting replaced, not the first --set
        return with_option(args, *value.split("=", 1))
    if not option.startswith("-"):
        short = option.rpartition(".")[2]
        for i in range(len(args) - 1):
            if args[i] == "--set" and str(args[i + 1]).partition("=")[0] in (option, short):
                args[i + 1] = f"{option}={value}"
                return args
        return args + ["--set", f"{option}={value}"]
    if option in args:
        args[args.index(option) + 1] = value
        return args
    return args + [option, value]


# -- the command ------------------------------------------------------------------------------

def cli(*args):
    """The command in this process (typer's CliRunner), with a fresh process's data: no data
    set kept in memory from an earlier command.  Returns the runner's Result (exit_code,
    stdout, stderr, exception)."""
    from typer.testing import CliRunner

    from scalesearch.cli.main import app
    from scalesearch.study.trial import load_dataset

    load_dataset.cache_clear()
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result) -> str:
    """Assert a command (CliRunner result or CompletedProcess) succeeded; return its stdout."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert code == 0, f"exit {code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def run_process(*args, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed `scalesearch` command in a real process (for signals, locks, Ray)."""
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def start_process(args: list, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real process, not waited for: ``args`` is the whole command line."""
    return subprocess.Popen([*map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def refused(result, why: str = "") -> str:
    """Assert the one-line refusal (CliRunner result or CompletedProcess); return the line.

    Exactly one line on stderr starting with "error:", a non-zero exit, no traceback
    anywhere, and not the catch-all for bugs ("internal error")."""
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


# -- the command's layers, each called directly -------------------------------------------------

def _click_error() -> type:
    """The usage error of typer's own click (found as the CLI finds it: typer vendors click)."""
    import typer

    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


CLICK_ERROR = _click_error()


def parsed(command: str, args: list[str]) -> dict:
    """What the command's option parser makes of ``args``: the values its function receives.
    A value it cannot read (not a number, not a whole number, out of an IntRange) raises
    click's usage error, which the command prints as one line (test_a_refused_grid_...)."""
    import typer.main

    from scalesearch.cli.main import app

    command_ = typer.main.get_command(app).commands[command]
    return command_.make_context(command, [str(a) for a in args]).params


def grid_settings(args: list[str]):
    """The settings `scalesearch grid ARGS` runs with, built as the command builds them: its
    option parser, then build_settings (load_settings with --config), --set last.  The command's
    own check (train.trust without lars) runs through it in tests/test_grid.py."""
    from dataclasses import fields

    from scalesearch.settings import (SECTIONS, SearchSettings, build_settings, load_settings, owner_of,
                                      parse_assignments)

    params = parsed("grid", args)
    top = {f.name for f in fields(SearchSettings)} - set(SECTIONS)
    flags = {k: v for k, v in params.items() if v is not None and (owner_of(k) is not None or k in top)}
    exact = parse_assignments(params.get("assignments") or [])
    if params.get("config"):
        return load_settings(params["config"], flags, assignments=exact)
    return build_settings({}, flags, source="options", assignments=exact)


def one_line(error: BaseException) -> str:
    """A refusal's message, which the command prints after "error: ": one line, not a bug's."""
    from scalesearch.errors import UserError

    assert isinstance(error, UserError), repr(error)
    message = str(error)
    assert message and "\n" not in message, repr(message)
    return message


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file of a run; the lock file only records the last holder's pid."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def trial_rows(run: Path):
    import pandas as pd

    return pd.read_csv(run / "trials.csv").set_index("trial")


# -- the fault tests' shared run (tests/test_faults_*.py) ---------------------------------------

def no_grid(settings_, out: Path) -> str:
    """run_grid refuses ``settings_`` with --out ``out`` before it creates or changes a file."""
    from scalesearch.errors import UserError
    from scalesearch.search.grid import run_grid

    existed = out.exists()
    before = snapshot(out) if existed else None
    with pytest.raises(UserError) as info:
        run_grid(settings_.replace(out=str(out)), progress=False, estimate=False)
    assert (snapshot(out) == before) if existed else not out.exists()
    return one_line(info.value)


@pytest.fixture(scope="session")
def finished(tmp_path_factory, tiny) -> Path:
    """One finished search (1 trial), built once per session; copy it (``run_copy``) before
    changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    ok(cli("grid", *tiny, "--out", out))
    rows = trial_rows(out)
    assert len(rows) == 1 and set(rows.state) == {"COMPLETE"}
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy
