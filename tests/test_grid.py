"""`scalesearch grid` end to end on tiny budgets, through the command in this process: outputs,
resume, the recipe flags, bad input, the Optuna pruner, and the Ray backend (a real process).

Resume after SIGKILL and Ctrl-C, and the same numbers from another process, are
tests/test_faults_processes.py::test_kill_and_ctrl_c_at_seeded_moments_then_resume.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pandas as pd
import pytest

from conftest import ROOT, cli, grid_settings, ok, refused, run_process, with_option

TRIAL_COLUMNS = ["candidate", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "params", "flops",
                 "flops_ratio", "acts", "top1", "loss", "seconds", "state"]


@pytest.fixture(scope="module")
def proxy(colours, tmp_path_factory) -> list[str]:
    """A proxy budget: resnet20-cifar at 32px on a few hundred images of a task it learns in two
    epochs, one thread per trial."""
    data, _ = colours
    return ["--dataset", str(data), "--set", f"data.cache_dir={tmp_path_factory.mktemp('cache')}", "--base",
            "resnet20-cifar", "--target-flops", "2x", "--set", "data.train_subset=128", "--set", "data.val_subset=64", "--epochs", "2",
            "--set", "train.batch_size=16", "--set", "grid.alpha_max=1.6", "--set", "grid.beta_max=1.3", "--set", "grid.step=0.05", "--set", "phi_max=3",
            "--set", "backend.cpus_per_trial=1"]


@pytest.fixture(scope="module")
def proxy_run(proxy, tmp_path_factory):
    """Three trials, with the training-time estimate (the one search here that makes it)."""
    out = tmp_path_factory.mktemp("runs") / "resnet50-proxy"
    result = cli("grid", *proxy, "--max-trials", "3", "--out", out)
    ok(result)
    return out, result


def test_grid_writes_every_output(proxy_run):
    out, result = proxy_run
    for name in ("config.json", "candidates.csv", "trials.csv", "best.json", "family.csv", "study.db",
                 "top1_vs_flops.png", "top1_vs_flops.svg", "top1_alpha_beta.png", "top1_alpha_beta.svg"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    trials = pd.read_csv(out / "trials.csv")
    from scalesearch.study.rows import TrialRow

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
    assert "best at phi = 1" in result.stdout and str(out) in result.stdout
    assert "on this machine" in result.stdout                           # the estimate was made and shown


def test_plot_redraws(proxy_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(proxy_run[0], out)
    (out / "top1_vs_flops.png").unlink()
    stdout = ok(cli("plot", out))
    assert (out / "top1_vs_flops.png").is_file() and "top1_alpha_beta.svg" in stdout


def test_rerun_resumes_without_training(proxy, proxy_run):
    out, _ = proxy_run
    trials = (out / "trials.csv").read_text()
    stdout = ok(cli("grid", *proxy, "--max-trials", "3", "--out", out))
    assert "3 finished trial(s) kept, 0 to train" in stdout
    assert (out / "trials.csv").read_text() == trials


def test_config_file_reproduces_a_run(tmp_path, proxy_run):
    from scalesearch.settings import load_settings

    out = tmp_path / "from-config"
    ok(cli("grid", "--config", proxy_run[0] / "config.json", "--out", out, "--dry-run"))
    ours, theirs = load_settings(out / "config.json"), load_settings(proxy_run[0] / "config.json")
    assert ours == theirs.replace(out=str(out))
    assert (out / "candidates.csv").read_text() == (proxy_run[0] / "candidates.csv").read_text()


def test_clip_norm_and_optimizer_settings_set_the_recipe(tmp_path, proxy):
    for value, expected in (("null", None), ("3", 3.0)):
        out = tmp_path / f"clip-{value}"
        ok(cli("grid", *proxy, "--set", f"train.clip_norm={value}", "--dry-run", "--out", out))
        assert json.loads((out / "config.json").read_text())["settings"]["train"]["clip_norm"] == expected
    out = tmp_path / "lars"
    ok(cli("grid", *proxy, "--set", "train.optimizer=lars", "--set", "train.trust=0.05", "--set", "train.residual_init=scaled", "--dry-run",
           "--out", out))
    train = json.loads((out / "config.json").read_text())["settings"]["train"]
    assert (train["optimizer"], train["trust"], train["residual_init"]) == ("lars", 0.05, "scaled")
    from typer.testing import CliRunner

    from scalesearch.cli.main import app

    help_text = CliRunner().invoke(app, ["grid", "--help"], env={"COLUMNS": "200"}).stdout
    assert "(default: 1.0)" in help_text and "(default: 2x)" in help_text   # defaults shown, not eaten as markup


def test_dry_run_stops_before_training(tmp_path, proxy):
    out = tmp_path / "dry"
    stdout = ok(cli("grid", *proxy, "--dry-run", "--out", out))
    assert (out / "candidates.csv").is_file() and not (out / "trials.csv").exists()
    assert "flops_ratio" in stdout and "dry run" in stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.xdist_group("ray")
def test_ray_backend_joins_a_head_on_this_machine(tmp_path, proxy, proxy_run):
    """A Ray head on this machine, and the command in a real process joining it.  The head
    listens on the address Ray itself takes for this machine: Ray rewrites a given 127.0.0.1 to
    that address when it joins, so a head bound to loopback alone cannot be joined wherever the
    machine has a routable address."""
    from ray._private.services import resolve_ip_for_localhost

    ray = shutil.which("ray", path=str(ROOT / ".venv" / "bin")) or shutil.which("ray")
    if ray is None:
        pytest.skip("the ray command is not installed")
    port = _free_port()
    host = resolve_ip_for_localhost("127.0.0.1")
    # No token authentication on either side, whatever ~/.ray holds from earlier Ray runs.
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run([ray, "start", "--head", f"--node-ip-address={host}", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        out = tmp_path / "ray"
        ok(run_process("grid", *proxy, "--max-trials", "2", "--backend", "ray", "--address", f"{host}:{port}",
                       "--out", out, "--no-estimate", env=env, timeout=600))
        trials = pd.read_csv(out / "trials.csv")
        optuna_trials = pd.read_csv(proxy_run[0] / "trials.csv")
        assert list(trials.columns) == list(optuna_trials.columns)
        assert len(trials) == 2 and set(trials.state) == {"COMPLETE"} and set(trials.backend) == {"ray"}
        assert (out / "family.csv").is_file() and (out / "top1_vs_flops.png").is_file()
        # The same trials under both backends compute the same numbers.
        ours = trials.set_index("trial")[["top1", "loss"]]
        theirs = optuna_trials.set_index("trial").loc[ours.index, ["top1", "loss"]]
        assert (ours.values == theirs.values).all(), (ours, theirs)
        # Successive halving under Ray: a Tune run per rung in one process, rows per rung.
        halved = tmp_path / "ray-halving"
        stdout = ok(run_process("grid", *proxy, "--max-trials", "2", "--backend", "ray", "--address",
                                f"{host}:{port}", "--fidelity", "halving", "--set", "eta=2", "--set", "rungs=2",
                                "--out", halved, "--no-estimate", env=env, timeout=600))
        rungs = pd.read_csv(halved / "trials.csv")
        assert list(rungs.rung) == [0, 0, 1, 1] and set(rungs.backend) == {"ray"} and rungs.trial.is_unique
        assert (rungs.set_index("trial").loc[ours.index, ["top1", "loss"]].values == ours.values).all()
        assert rungs.budget[2] == 2 * rungs.budget[0] and "rank agreement, rung 0 -> 1" in stdout
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env={**os.environ, **env},
                       timeout=120)


# -- bad input: one case of each kind through the command -------------------------------------------
# (every value of the tables, at the layer that refuses it: tests/test_faults_values.py)

def _one_line_error(result, message):
    line = refused(result, message)
    assert message in line, line


def _replace(args: list[str], extra: list[str]) -> list[str]:
    for i in range(0, len(extra), 2):
        args = with_option(args, extra[i], extra[i + 1])
    return args


@pytest.mark.parametrize("extra, message", [
    (["--base", "resnet5"], "unknown base 'resnet5'; valid bases"),                     # an unknown name
    (["--target-flops", "2y"], "setting 'target_flops' must be a ratio like 2x or a count like 800M"),  # a format
    (["--target-flops", "0.5x"], "must be at least 1x"),                                # out of range
    (["--dataset", "no/such/folder"], "no/such/folder"),                                # a bad path
    (["--set", "grid.tolerance=0.0001", "--set", "grid.step=0.3"], "no candidate is within the FLOPs tolerance"),  # nothing to search
    (["--set", "train.clip_norm=-1"], "train setting 'clip_norm' must be > 0"),
    (["--set", "train.trust=0.1"], "--set train.trust=0.1 sets the layer-wise rate of train.optimizer=lars (got optimizer 'sgd')"),
])
def test_bad_input(tmp_path, proxy, extra, message):
    out = tmp_path / "out"
    _one_line_error(cli("grid", *_replace([*proxy, "--out", str(out), "--dry-run"], extra)), message)
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.optimizer=adam"], "train setting 'optimizer' must be one of sgd, lars (got 'adam')"),
    (["--set", "train.optimizer=lars", "--set", "train.trust=0"], "train setting 'trust' must be > 0 (got 0)"),
])
def test_bad_recipe_is_named_by_the_settings(proxy, extra, message):
    from scalesearch.errors import UserError

    with pytest.raises(UserError) as info:
        grid_settings(_replace(list(proxy), extra))
    assert message in str(info.value)


def test_dataset_without_class_folders(tmp_path, proxy):
    (tmp_path / "data" / "train").mkdir(parents=True)
    _one_line_error(cli("grid", *proxy, "--dataset", tmp_path / "data", "--dry-run", "--out", tmp_path / "o"),
                    str(tmp_path / "data"))


def test_an_unreadable_image_is_left_out_and_named(tmp_path, proxy):
    from PIL import Image

    root = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / cls / f"{i}.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = cli("grid", *_replace(list(proxy), ["--dataset", str(root), "data.cache_dir", str(tmp_path / "c")]),
                 "--dry-run", "--out", tmp_path / "o")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    assert "image store: 1 file could not be decoded and is left out, with its label (first: " in result.stderr
    assert "broken.jpg: UnidentifiedImageError" in result.stderr


def test_out_of_a_different_search_is_refused(tmp_path, proxy):
    out = tmp_path / "run"
    ok(cli("grid", *proxy, "--dry-run", "--out", out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = with_option(proxy, "grid.alpha_max", "1.4")
    _one_line_error(cli("grid", *args, "--dry-run", "--out", out), "holds a different search")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_out_that_is_not_a_run_is_refused(tmp_path, proxy):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    _one_line_error(cli("grid", *proxy, "--dry-run", "--out", out), "is not a scalesearch run")
    assert (out / "thesis.tex").read_text() == "precious"


def test_cuda_requested_without_a_gpu(tmp_path, proxy):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error cannot happen here")
    out = tmp_path / "gpu"
    _one_line_error(cli("grid", *proxy, "--device", "cuda", "--dry-run", "--out", out), "no CUDA device")
    assert not out.exists()


# -- early stop ---------------------------------------------------------------------------------------

def test_early_stop_with_the_optuna_pruner(tmp_path, tiny):
    """The smallest search the MedianPruner stops a trial of: 2 trials it only watches
    (n_startup_trials), then trials it may stop after any epoch; with 3 epochs, the third
    trial falls below the median and is stopped before its last epoch."""
    import optuna

    out = tmp_path / "pruned"
    ok(cli("grid", *with_option(with_option(tiny, "--max-trials", "4"), "--epochs", "3"), "--set", "backend.early_stop=true", "--out", out))
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials.state) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in set(trials.state)
    study = optuna.load_study(study_name="scalesearch", storage=f"sqlite:///{out / 'study.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == sorted(trials.state)                          # the study and trials.csv agree
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)  # every epoch was reported to the pruner
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and all(len(t.intermediate_values) < 3 for t in pruned), [t.intermediate_values for t in pruned]
    assert (out / "family.csv").is_file()
