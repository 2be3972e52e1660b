"""`scalesearch grid` end to end on tiny budgets: outputs, resume after SIGKILL, Ray, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import tempfile
from pathlib import Path

from conftest import ROOT, make_color_folders

EXE = ROOT / ".venv" / "bin" / "scalesearch"
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "scalesearch"]

# A proxy budget: resnet20-cifar at 32px on a few hundred images of a task it learns in two epochs.
_SCRATCH = Path(tempfile.mkdtemp(prefix="scalesearch-tests-"))
DATA = make_color_folders(_SCRATCH / "colours")
PROXY = ["--dataset", str(DATA), "--cache-dir", str(_SCRATCH / "cache"), "--base", "resnet20-cifar", "--target-flops", "2x", "--train-subset", "128",
         "--val-subset", "64", "--epochs", "2", "--batch-size", "16", "--alpha-max", "1.6",
         "--beta-max", "1.3", "--step", "0.05", "--phi-max", "3"]
TRIAL_COLUMNS = ["candidate", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "params", "flops",
                 "flops_ratio", "acts", "top1", "loss", "seconds", "state"]


def run(*args, ok=True, timeout=600, env=None):
    proc = subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def proxy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "resnet50-proxy"
    proc = run("grid", *PROXY, "--max-trials", "3", "--out", out)
    return out, proc


def test_grid_writes_every_output(proxy_run):
    out, proc = proxy_run
    for name in ("config.json", "candidates.csv", "trials.csv", "best.json", "family.csv", "study.db",
                 "top1_vs_flops.png", "top1_vs_flops.svg", "top1_alpha_beta.png", "top1_alpha_beta.svg"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    trials = pd.read_csv(out / "trials.csv")
    from scalesearch.study import TrialRow

    assert list(trials.columns) == TrialRow.columns() and set(TRIAL_COLUMNS) <= set(trials.columns)
    assert len(trials) == 3 and set(trials.state) == {"COMPLETE"}
    assert ((trials.flops_ratio - 2).abs() <= 2 * 0.05).all()          # every trained candidate within tolerance of 2x
    assert trials.top1.between(0, 1).all() and (trials.seconds > 0).all()
    best = json.loads((out / "best.json").read_text())
    assert best["top1"] == trials.top1.max()
    assert {"alpha", "beta", "gamma", "top1", "settings"} <= set(best)
    family = pd.read_csv(out / "family.csv")
    assert list(family.phi) == [0, 1, 2, 3] and family.flops.is_monotonic_increasing
    cands = pd.read_csv(out / "candidates.csv")
    assert {"alpha", "beta", "gamma", "d", "w", "r", "resolution", "nominal_ratio", "flops_ratio", "params",
            "acts", "kept", "reason"} <= set(cands.columns)
    assert (~cands.kept).any() and cands[~cands.kept].reason.str.len().gt(0).all()   # dropped ones kept, with reasons
    assert "best at phi = 1" in proc.stdout and str(out) in proc.stdout


def test_plot_redraws(proxy_run):
    out, _ = proxy_run
    (out / "top1_vs_flops.png").unlink()
    proc = run("plot", out)
    assert (out / "top1_vs_flops.png").is_file() and "top1_alpha_beta.svg" in proc.stdout


def test_rerun_resumes_without_training(proxy_run):
    out, _ = proxy_run
    before = (out / "trials.csv").read_text()
    proc = run("grid", *PROXY, "--max-trials", "3", "--out", out)
    assert "3 finished trial(s) kept, 0 to train" in proc.stdout
    assert (out / "trials.csv").read_text() == before


def test_same_command_twice_gives_identical_numbers(tmp_path, proxy_run):
    out = tmp_path / "again"
    run("grid", *PROXY, "--max-trials", "2", "--out", out)
    again = pd.read_csv(out / "trials.csv").set_index("trial")
    first = pd.read_csv(proxy_run[0] / "trials.csv").set_index("trial").loc[again.index]
    for column in ("top1", "loss", "train_loss", "flops", "params"):
        assert (again[column].values == first[column].values).all(), column


def test_config_file_reproduces_a_run(tmp_path, proxy_run):
    from scalesearch.settings import load_settings

    out = tmp_path / "from-config"
    run("grid", "--config", proxy_run[0] / "config.json", "--out", out, "--dry-run")
    ours, theirs = load_settings(out / "config.json"), load_settings(proxy_run[0] / "config.json")
    assert ours == theirs.replace(out=str(out))
    assert (out / "candidates.csv").read_text() == (proxy_run[0] / "candidates.csv").read_text()


def test_clip_norm_and_optimizer_flags_set_the_recipe(tmp_path):
    for value, expected in (("0", None), ("3", 3.0)):
        out = tmp_path / f"clip-{value}"
        run("grid", *PROXY, "--clip-norm", value, "--dry-run", "--out", out)
        assert json.loads((out / "config.json").read_text())["settings"]["train"]["clip_norm"] == expected
    out = tmp_path / "lars"
    run("grid", *PROXY, "--optimizer", "lars", "--trust", "0.05", "--residual-init", "scaled", "--dry-run",
        "--out", out)
    train = json.loads((out / "config.json").read_text())["settings"]["train"]
    assert (train["optimizer"], train["trust"], train["residual_init"]) == ("lars", 0.05, "scaled")
    help_text = run("grid", "--help", env={"COLUMNS": "200"}).stdout
    assert "(default: 1.0)" in help_text and "(default: 64)" in help_text   # defaults shown, not eaten as markup


def test_dry_run_stops_before_training(tmp_path):
    out = tmp_path / "dry"
    proc = run("grid", *PROXY, "--dry-run", "--out", out)
    assert (out / "candidates.csv").is_file() and not (out / "trials.csv").exists()
    assert "flops_ratio" in proc.stdout and "dry run" in proc.stdout


def test_sigkill_then_rerun_finishes_without_retraining(tmp_path):
    out = tmp_path / "killed"
    args = [*CMD, "grid", *PROXY, "--max-trials", "4", "--out", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "2"})
    deadline = time.time() + 300
    while time.time() < deadline:
        trials = out / "trials.csv"
        if trials.is_file() and len(pd.read_csv(trials)) >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = pd.read_csv(out / "trials.csv")
    assert 1 <= len(first) < 4, "the kill should land mid-search"
    resumed = run("grid", *PROXY, "--max-trials", "4", "--out", out)
    assert f"{len(first)} finished trial(s) kept" in resumed.stdout
    final = pd.read_csv(out / "trials.csv")
    assert len(final) == 4 and final.candidate.is_unique and set(final.state) == {"COMPLETE"}
    kept = final.set_index("candidate").loc[first.candidate]
    assert (kept.seconds.values == first.seconds.values).all()   # finished trials were not retrained


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_backend_joins_a_loopback_head(tmp_path, proxy_run):
    ray = shutil.which("ray", path=str(ROOT / ".venv" / "bin")) or shutil.which("ray")
    if ray is None:
        pytest.skip("the ray command is not installed")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        out = tmp_path / "ray"
        run("grid", *PROXY, "--max-trials", "2", "--backend", "ray", "--address", f"127.0.0.1:{port}",
            "--cpus-per-trial", "2", "--out", out, env={"RAY_USAGE_STATS_ENABLED": "0"})
        trials = pd.read_csv(out / "trials.csv")
        optuna_trials = pd.read_csv(proxy_run[0] / "trials.csv")
        assert list(trials.columns) == list(optuna_trials.columns)
        assert len(trials) == 2 and set(trials.state) == {"COMPLETE"} and set(trials.backend) == {"ray"}
        assert (out / "family.csv").is_file() and (out / "top1_vs_flops.png").is_file()
        # The same trials under both backends compute the same numbers.
        ours = trials.set_index("trial")[["top1", "loss"]]
        theirs = optuna_trials.set_index("trial").loc[ours.index, ["top1", "loss"]]
        assert (ours.values == theirs.values).all(), (ours, theirs)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


def _one_line_error(proc, message):
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("extra, message", [
    (["--base", "resnet5"], "unknown base 'resnet5'; valid bases"),
    (["--target-flops", "2y"], "setting 'target_flops' must be a ratio like 2x or a count like 800M"),
    (["--target-flops", "0.5x"], "must be at least 1x"),
    (["--dataset", "no/such/folder"], "no/such/folder"),
    (["--tolerance", "0.0001", "--step", "0.3"], "no candidate is within the FLOPs tolerance"),
    (["--clip-norm", "-1"], "--clip-norm must be > 0, or 0 for no clipping (got -1)"),
    (["--optimizer", "adam"], "train setting 'optimizer' must be one of sgd, lars (got 'adam')"),
    (["--trust", "0.1"], "--trust 0.1 sets the layer-wise rate of --optimizer lars (got optimizer 'sgd')"),
    (["--optimizer", "lars", "--trust", "0"], "train setting 'trust' must be > 0 (got 0.0)"),
])
def test_bad_input(tmp_path, extra, message):
    out = tmp_path / "out"
    args = [*PROXY, "--out", out, "--dry-run"]
    for i in range(0, len(extra), 2):
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i:i + 2]
    _one_line_error(run("grid", *args, ok=False), message)
    assert not out.exists()


def test_dataset_without_class_folders(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    _one_line_error(run("grid", *PROXY, "--dataset", tmp_path / "data", "--dry-run", "--out", tmp_path / "o",
                        ok=False), str(tmp_path / "data"))


def test_unreadable_image_is_named(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / cls / f"{i}.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    _one_line_error(run("grid", *PROXY, "--dataset", root, "--dry-run", "--out", tmp_path / "o",
                        "--cache-dir", tmp_path / "cache", ok=False), "broken.jpg")


def test_out_of_a_different_search_is_refused(tmp_path):
    out = tmp_path / "run"
    run("grid", *PROXY, "--dry-run", "--out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = list(PROXY)
    args[args.index("--alpha-max") + 1] = "1.4"
    _one_line_error(run("grid", *args, "--dry-run", "--out", out, ok=False), "holds a different search")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_out_that_is_not_a_run_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    _one_line_error(run("grid", *PROXY, "--dry-run", "--out", out, ok=False), "is not a scalesearch run")
    assert (out / "thesis.tex").read_text() == "precious"


def test_early_stop_with_the_optuna_pruner(tmp_path):
    import optuna

    out = tmp_path / "pruned"
    run("grid", "--base", "resnet20-cifar", "--dataset", DATA, "--cache-dir", _SCRATCH / "cache",
        "--train-subset", "128", "--val-subset", "64", "--epochs", "3",
        "--batch-size", "32", "--alpha-max", "1.6", "--beta-max", "1.3", "--step", "0.05", "--max-trials", "4",
        "--early-stop", "--phi-max", "2", "--out", out)
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials.state) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in set(trials.state)
    study = optuna.load_study(study_name="scalesearch", storage=f"sqlite:///{out / 'study.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == sorted(trials.state)                          # the study and trials.csv agree
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)  # every epoch was reported to the pruner
    assert (out / "family.csv").is_file()


def test_cuda_requested_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error cannot happen here")
    out = tmp_path / "gpu"
    _one_line_error(run("grid", *PROXY, "--device", "cuda", "--dry-run", "--out", out, ok=False), "no CUDA device")
    assert not out.exists()
