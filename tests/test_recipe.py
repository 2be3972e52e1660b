"""The recipe is data: --config, --recipe and --set reach every setting by name; the research
flags of earlier releases still work, each with a one-line note; a run's config.json re-runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalesearch.cli.main import app
from scalesearch.settings import (SettingsError, build_settings, load_recipe, load_settings, parse_assignments,
                                  recipe_fields)

QUICK = ["grid", "--base", "resnet20-cifar", "--dry-run", "--set", "data.train_subset=64", "--set",
         "data.val_subset=32", "--set", "grid.step=0.25", "--no-estimate"]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_set_parses_names_and_yaml_scalars():
    assert parse_assignments(["train.clip_norm=0.5", "clip_norm=null", "optimizer=lars", "grid.step=0.05",
                              "keep_maps=true", "candidates=[0, 4]", "order=spread"]) == \
        dict(clip_norm=None, optimizer="lars", step=0.05, keep_maps=True, candidates=(0, 4), order="spread")


@pytest.mark.parametrize("item, said", [
    ("x", "--set 'x' must be NAME=VALUE"),
    ("=1", "--set '=1' must be NAME=VALUE"),
    ("grid.clip_norm=1", "unknown setting 'grid.clip_norm' (it is train.clip_norm)"),
    ("nosuch=1", "unknown setting 'nosuch'"),
    ("train.nosuch=1", "unknown setting 'train.nosuch'"),
    ("train.lr={a: 1}", "the value must be a single number, word, true/false or null"),
])
def test_set_refuses_what_it_cannot_place(item, said):
    with pytest.raises(SettingsError, match=None) as info:
        parse_assignments([item])
    assert said in str(info.value)


def test_every_training_field_is_reachable_by_recipe_and_by_set(tmp_path):
    values = dict(epochs=2.0, images=640, batch_size=16, lr=0.05, lr_per_256=0.2, weight_decay=1e-4,
                  label_smoothing=0.0, warmup=0.1, clip_norm=None, optimizer="lars", trust=0.02,
                  bn_recalibration=0, feature_norm=False, residual_init="scaled", precision="bf16",
                  layout="channels_last", eval_every=0)
    assert set(values) == {f.name for f in recipe_fields()}   # a new field must be added here too
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items()))
    by_file = build_settings(load_recipe(recipe), {"base": "resnet20-cifar"})
    by_set = build_settings({"base": "resnet20-cifar"},
                            assignments=parse_assignments([f"train.{k}={json.dumps(v)}" for k, v in values.items()]))
    for settings in (by_file, by_set):
        assert {k: getattr(settings.train, k) for k in values} == values


def test_later_sources_win_config_then_recipe_then_flags_then_set(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("base: resnet20-cifar\ntrain: {lr: 0.1, clip_norm: 2.0, optimizer: sgd}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 0.2\nclip_norm: 3.0\n")
    settings = load_settings(config, {"clip_norm": 4.0}, recipe=load_recipe(recipe),
                             assignments=parse_assignments(["train.optimizer=lars"]))
    assert (settings.train.lr, settings.train.clip_norm, settings.train.optimizer) == (0.2, 4.0, "lars")


def test_a_recipe_with_a_field_that_is_not_training_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {lr: 0.1, step: 0.05}\n")
    with pytest.raises(SettingsError, match=r"recipe file '.*r.yaml': unknown training setting 'step'"):
        load_recipe(recipe)
    with pytest.raises(SettingsError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")


def test_grid_help_lists_the_flags_a_search_needs_to_start():
    text = cli("grid", "--help").stdout
    options = [line.split()[1] for line in text.splitlines() if line.startswith("│ --") or line.startswith("│ -")]
    options = [o for o in options if o.startswith("--")]
    assert len(options) <= 19, options        # 18 and --help
    assert {"--set", "--recipe", "--config", "--base", "--target-flops", "--target-latency", "--dataset", "--epochs", "--images",
            "--fidelity", "--seeds", "--max-trials", "--out", "--backend", "--address", "--device",
            "--dry-run"} <= set(options)
    assert "--step" not in options and "--clip-norm" not in options and "--precision" not in options
    assert "--keep-maps" not in options and "--resolution" in options


def test_set_and_recipe_reach_config_json_and_it_reruns_the_search(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  optimizer: lars\n  residual_init: scaled\n")
    result = cli(*QUICK, "--recipe", recipe, "--set", "train.clip_norm=null", "--set", "order=spread",
                 "--out", tmp_path / "a")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "a" / "config.json").read_text())["settings"]
    assert (saved["train"]["optimizer"], saved["train"]["residual_init"], saved["train"]["clip_norm"],
            saved["order"], saved["grid"]["step"], saved["data"]["train_subset"]) == \
        ("lars", "scaled", None, "spread", 0.25, 64)
    again = cli("grid", "--config", tmp_path / "a" / "config.json", "--dry-run", "--no-estimate",
                "--out", tmp_path / "b")
    assert again.exit_code == 0, again.stderr
    rerun = json.loads((tmp_path / "b" / "config.json").read_text())["settings"]
    assert {**rerun, "out": None} == {**saved, "out": None}
    assert (tmp_path / "a" / "candidates.csv").read_text() == (tmp_path / "b" / "candidates.csv").read_text()


@pytest.mark.parametrize("command", ["grid", "reproduce"])
def test_a_removed_flag_is_refused_naming_the_setting_that_replaced_it(command):
    """The research flags that moved behind --set in 0.2.0 are gone in 0.3.0: one line naming
    the --set spelling, before anything is built; every named setting exists."""
    from scalesearch.cli.common import REMOVED_FLAGS

    args = [*QUICK[1:], "--clip-norm", "0.5"] if command == "grid" else ["figure8", "--clip-norm", "0.5"]
    result = cli(command, *args)
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == \
        ["error: --clip-norm was removed in 0.3.0: use --set train.clip_norm=VALUE (CHANGELOG.md lists every moved flag)"]
    assert len(REMOVED_FLAGS) == 28
    for flag, setting in REMOVED_FLAGS.items():
        assert parse_assignments([f"{setting}=1"]) == {setting.rpartition(".")[2]: 1}, flag
    changelog = Path("CHANGELOG.md").read_text()
    assert all(f"`{flag}" in changelog and f"{setting}=" in changelog for flag, setting in REMOVED_FLAGS.items())
    refused = cli(*QUICK, "--set", "order=spread", "--set", "nosuch=1")
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines() == \
        ["error: --set 'nosuch=1': unknown setting 'nosuch'"]        # a refusal stays one line


def test_reproduce_takes_training_and_backend_settings_by_name(tmp_path):
    result = cli("reproduce", "figure8", "--dry-run", "--set", "train.optimizer=sgd", "--set",
                 "backend.cpus_per_trial=1", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["settings"]
    assert saved["train"]["optimizer"] == "sgd" and saved["backend"]["cpus_per_trial"] == 1
    refused = cli("reproduce", "figure8", "--dry-run", "--set", "grid.step=1", "--out", tmp_path / "s")
    assert refused.exit_code == 2 and refused.stderr.strip() == (
        "error: --set grid.step: reproduce takes training, backend and data settings (and keep_maps) by name; "
        "the rest is the experiment file's")
    assert not (tmp_path / "s").exists()


def test_precision_is_a_recipe_setting_and_a_run_written_before_it_was_fp32(tmp_path):
    """train.precision reaches the recipe (grid and reproduce); a run's config.json whose train section predates the field reads as
    fp32, what its CPU steps were, so resuming it under the new default is refused by name and
    --set train.precision=fp32 resumes it."""
    from scalesearch.reproduce import make_settings
    from scalesearch.settings import saved
    from scalesearch.study.rundir import RunDir

    assert build_settings({"base": "resnet18"}).train.precision == "auto"
    assert build_settings({"base": "resnet18"}, {"precision": "bf16"}).train.precision == "bf16"
    assert make_settings("table3", "smoke", recipe={"precision": "fp32"}).train.precision == "fp32"
    assert saved({"base": "x", "train": {"epochs": 2}})["train"] == {"precision": "fp32", "epochs": 2}
    assert saved({"base": "x", "train": {"precision": "bf16"}})["train"] == {"precision": "bf16"}
    out = tmp_path / "run"
    first = cli(*QUICK, "--set", "train.precision=fp32", "--out", out)
    assert first.exit_code == 0, first.output
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["train"]["precision"] == "fp32"
    del config["settings"]["train"]["precision"]  # as a run of an earlier release wrote it
    RunDir(out).write_checked("config.json", json.dumps(config))
    assert load_settings(out / "config.json").train.precision == "fp32"
    again = cli(*QUICK, "--out", out)
    assert again.exit_code == 2 and "(precision = 'fp32' there, 'auto' here)" in again.output
    assert cli(*QUICK, "--set", "train.precision=fp32", "--out", out).exit_code == 0
    bad = cli(*QUICK, "--set", "train.precision=fp16", "--out", tmp_path / "other")
    assert bad.exit_code != 0 and "train setting 'precision' must be one of auto, fp32, bf16 (got 'fp16')" in bad.output
    assert not (tmp_path / "other").exists()


def test_bf16_given_for_a_depthwise_network_on_a_cpu_is_warned_about(tmp_path):
    """The measured rule keeps depthwise networks fp32 on a CPU; asking for bf16 is allowed, with
    a warning before anything trains; a dense network gets none."""
    quick = [a if a != "resnet20-cifar" else "mobilenetv2" for a in QUICK] + ["--resolution", "32"]
    warned = cli(*quick, "--set", "train.precision=bf16", "--set", "device=cpu", "--out", tmp_path / "a")
    assert warned.exit_code == 0 and "warning: train.precision bf16 on mobilenetv2, which has depthwise convolutions" \
        in warned.output
    dense = cli(*QUICK, "--set", "train.precision=bf16", "--set", "device=cpu", "--out", tmp_path / "b")
    assert dense.exit_code == 0 and "depthwise" not in dense.output


def test_numbers_are_read_as_users_write_them(tmp_path):
    """5e-4, 1E-3 and .5 are numbers in --set, recipe files and config files (YAML 1.1 alone reads
    the first two as text, and the default weight decay's own value was refused)."""
    assert parse_assignments(["train.weight_decay=5e-4", "lr=1E-3", "warmup=.5", "optimizer=5e"]) == \
        dict(weight_decay=5e-4, lr=1e-3, warmup=0.5, optimizer="5e")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  weight_decay: 5e-4\n  lr_per_256: 4E-1\n")
    assert load_recipe(recipe) == dict(weight_decay=5e-4, lr_per_256=0.4)
    config = tmp_path / "config.yaml"
    config.write_text("base: resnet20-cifar\ntrain:\n  weight_decay: 1e-3\n")
    assert load_settings(config).train.weight_decay == 1e-3
