"""Bad values, sizes and files a user gives (issue 9's fault classes, the first kinds): each is
refused in exactly one line on stderr starting with "error:", a non-zero exit, no traceback,
every file of an existing run as it was (hashed before and after) and nothing at all in a new
--out.

The tables of bad values are checked where they are refused: by the command's option parser
(the values its function would receive, or click's usage error), then by the settings layer
(build_settings, scaling, the spec loader, family) and, for the few values only a search can
judge, by run_grid before it creates anything.  One value of each kind then goes through the
whole command (typer's CliRunner, in this process).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import (CLICK_ERROR, ROOT, cli, grid_settings, no_grid, one_line, parsed, refused, snapshot,
                      with_option)
from scalesearch.errors import UserError


# -- 1. sizes that cannot be built ------------------------------------------------------------

def _spec(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


VGG = (ROOT / "examples" / "vgg11.yaml").read_text()

SIZES = [
    ("flops", "resnet18", dict(r=1e5)),
    ("flops", "resnet18", dict(w=1e5)),
    ("flops", "resnet18", dict(d=1e5)),
    ("flops", "efficientnet-b7", dict(w=30, r=8)),
    ("flops", "resnet50", dict(r=40)),             # within the spec's limits, over the memory limit
    ("family", "resnet18", dict(alpha=1, beta=1, gamma=100, phi_max=20)),
    ("family", "resnet18", dict(alpha=1, beta=100, gamma=1, phi_max=20)),
    ("family", "resnet18", dict(alpha=100, beta=1, gamma=1, phi_max=20)),
    ("family", "resnet18", dict(alpha=1.2, beta=1.1, gamma=1.15, phi_max=20, target=9.0)),
]


@pytest.mark.parametrize("command, base, values", SIZES, ids=[f"{c}-{b}-{v}" for c, b, v in SIZES])
def test_sizes_that_cannot_be_built_are_refused_before_any_part_is_built(monkeypatch, command, base, values):
    """`flops` is api.measure, `family` is family.family: the limit is named, and found from the
    spec alone (no module is built, so no memory is asked for: the refusal is immediate)."""
    from scalesearch.api import measure
    from scalesearch.net.bases import get_base
    from scalesearch.search.family import family
    from scalesearch.measure.models import Part

    def build(*args, **kwargs):
        raise AssertionError("a part was built before the size was refused")

    monkeypatch.setattr(Part, "build", build)
    with pytest.raises(UserError) as info:
        measure(base, **values) if command == "flops" else family(get_base(base), **values)
    message = one_line(info.value)
    assert any(word in message for word in ("at most", "GiB", "limit")), message


def test_a_size_that_cannot_be_built_through_the_command():
    line = refused(cli("flops", "--base", "resnet50", "--r", "40"), "flops --r 40")
    assert "GiB at batch size 1 (limit" in line, line


@pytest.mark.parametrize("field, value", [("out_channels: 64", "out_channels: 1000000000"),
                                          ("resolution: 224", "resolution: 100000"),
                                          ("layers: 2", "layers: 100000")])
def test_spec_sizes_that_cannot_be_built_are_refused(tmp_path, field, value):
    from scalesearch.api import measure

    path = _spec(tmp_path, "big.yaml", VGG.replace(field, value, 1))
    with pytest.raises(UserError) as info:
        measure(path)
    assert "at most" in one_line(info.value)


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
    """The parser refuses what is not a number; api.measure (scaling.check_factors) the rest."""
    from scalesearch.api import measure

    try:
        params = parsed("flops", ["--base", "resnet20-cifar", option, value])
    except CLICK_ERROR as error:
        assert option in error.format_message()
        return
    with pytest.raises(UserError) as info:
        measure(params["base"], d=params["d"], w=params["w"], r=params["r"])
    one_line(info.value)


@pytest.mark.parametrize("option, value", FAMILY_CASES)
def test_family_refuses_bad_numbers(option, value):
    """The parser refuses what is not a number (and --phi-max outside 0..20); the rest is refused
    by what `family` calls: parse_budget for --target-flops, then family.family."""
    from scalesearch.net.bases import get_base
    from scalesearch.search.family import family
    from scalesearch.search.budget import parse_budget
    from scalesearch.settings import default_of

    args = with_option(FAMILY, option, value)[1:] + (["--target-flops", "2x"] if option == "--tolerance" else [])
    try:
        params = parsed("family", args)
    except CLICK_ERROR as error:
        assert option in error.format_message()
        return
    with pytest.raises(UserError) as info:
        text = params["target_flops"]
        target = parse_budget(text, "--target-flops").value if text is not None else None
        phi_max = default_of("phi_max") if params["phi_max"] is None else params["phi_max"]
        family(get_base(params["base"]), params["alpha"], params["beta"], params["gamma"], phi_max,
               target=target, tolerance=params["tolerance"])
    one_line(info.value)


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
    result = cli(*with_option(with_option(FAMILY, "--phi-max", str(phi)), option, value), "--json")
    if result.exit_code == 0:
        assert len(json.loads(result.stdout)) == phi + 1
    else:
        refused(result, f"family {option} {value!r}")


SET_BAD = ["nan", "inf", "-inf", "-1", "1e400", "-1e400", "abc"]  # as --set values ("" is null: the default)
GRID_CASES = (
    [("--target-flops", v) for v in ("nan", "inf", "1e400x", "1e400", "0x", "0", "-1x", "abc", "nanx", "")]
    + [(opt, v) for opt in ("grid.max_params", "grid.max_acts")
       for v in ("nan", "inf", "1e400x", "1e400", "0x", "0", "-1x", "abc", "nanx")]
    + [(opt, v) for opt in ("grid.alpha_max", "grid.beta_max") for v in SET_BAD + ["0", "0.5", "1e5"]]
    + [("grid.step", v) for v in SET_BAD + ["0", "1e-6", "0.001"]]
    + [(opt, v) for opt in ("grid.tolerance", "grid.nominal_tolerance") for v in SET_BAD + ["0", "1", "1e5"]]
    + [(opt, v) for opt in ("--resolution", "--images", "--seeds", "--max-trials")
       for v in ("-1", "0", "nan", "1e400", "1.5", "abc", "")]
    + [(opt, v) for opt in ("data.train_subset", "data.val_subset", "train.batch_size", "phi_max")
       for v in ("-1", "0", "nan", "1e400", "1.5", "abc") if (opt, v) != ("phi_max", "0")]
    + [("--resolution", v) for v in ("3", "100000")] + [("--seeds", "101"), ("phi_max", "21")]
    + [("--images", "1e15"), ("data.train_subset", "1000000000")]
    + [("--epochs", v) for v in NON_FINITE + ["0", "1e9"]]
    + [("train.lr", v) for v in SET_BAD + ["0"]]
    + [("seed", v) for v in ("-1", "nan", "1e400", "4294967296", "1.5", "abc")]
    + [("backend.cpus_per_trial", v) for v in SET_BAD + ["0", "1e9", "99"]] + [("train.batch_size", "1")]
    + [("backend.gpus_per_trial", v) for v in SET_BAD + ["1"]]
    + [("candidates", v) for v in ("-1", "abc", "1,,x", "nan", "99999")]
    + [("order", "bogus"), ("--backend", "bogus"), ("--device", "bogus"), ("--device", "cuda:x"),
       ("rounding.depth_rule", "bogus"), ("--dataset", "/nonexistent"), ("--dataset", ""), ("--base", "nosuchnet"),
       ("--address", "nohost"), ("--config", "/nonexistent.yaml")]
)


@pytest.mark.parametrize("option, value", GRID_CASES)
def test_grid_refuses_bad_values_before_creating_anything(tmp_path, tiny, finished, option, value):
    """Class 2 and class 5, each value where it is refused: the option parser (the value is not
    of the option's type), the settings layer (one line naming the setting), or, for what only
    a search can judge (a missing folder, an unknown base, a candidate id, this machine's CPUs),
    run_grid before it creates a new --out or changes a file of an existing run."""
    args = [*with_option(tiny, option, value), "--out", str(tmp_path / "new-run")]
    try:
        built = grid_settings(args)
    except CLICK_ERROR as error:
        assert option in error.format_message(), error.format_message()
        return
    except UserError as error:
        one_line(error)
        return
    no_grid(built, tmp_path / "new-run")
    no_grid(built, finished)


@pytest.mark.parametrize("option, value, kind", [
    ("grid.alpha_max", "nan", "non-finite"),
    ("--seeds", "101", "out of range"),
    ("train.batch_size", "abc", "wrong type"),
    ("--base", "nosuchnet", "unknown name"),
    ("--dataset", "/nonexistent", "bad path"),
])
def test_a_refused_grid_creates_no_out_and_leaves_a_run_unchanged(tmp_path, tiny, finished, option, value, kind):
    """One value of each kind through the whole command: one line, no new --out, and an
    existing run exactly as it was."""
    new = tmp_path / "new-run"
    refused(cli("grid", *with_option(tiny, option, value), "--out", new), f"grid {option} {value!r} ({kind})")
    assert not new.exists(), sorted(p.name for p in new.iterdir())
    before = snapshot(finished)
    refused(cli("grid", *with_option(tiny, option, value), "--out", finished), f"grid {option} {value!r} on a run")
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


def _spec_case(tmp_path: Path, case: str) -> Path:
    name, text = SPEC_CASES[case]
    if text is None:
        path = tmp_path / name
        path.mkdir()
        return path
    return _spec(tmp_path, name, text)


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_spec_files_of_the_wrong_shape_are_named(tmp_path, tiny, case):
    """The spec loader (bases.get_base, what `flops --base` and `grid --base` read) names the
    spec or the field; a search over it is refused before it creates its --out."""
    from scalesearch.net.bases import get_base

    path = _spec_case(tmp_path, case)
    with pytest.raises(UserError) as info:
        get_base(path)
    message = one_line(info.value)
    assert "spec" in message or "field" in message, message
    no_grid(grid_settings(with_option(tiny, "--base", str(path))), tmp_path / "new-run")


def test_a_spec_file_of_the_wrong_shape_through_the_command(tmp_path, tiny):
    path = _spec_case(tmp_path, "layers as text")
    line = refused(cli("flops", "--base", path), "flops")
    assert "stages[0].layers" in line, line
    new = tmp_path / "new-run"
    assert "stages[0].layers" in refused(cli("grid", *with_option(tiny, "--base", str(path)), "--out", new), "grid")
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
def test_data_sets_a_classifier_cannot_rank_on_are_refused(tmp_path, tiny, case):
    """run_grid's check, before any file (the same refusal through the command: a data set
    without class folders, tests/test_grid.py)."""
    extra: list[str] = []
    if case == "one class":
        data = _tree(tmp_path / "d", {"only": 20}, {"only": 8})
    elif case == "held-out split missing a class":
        data = _tree(tmp_path / "d", {"a": 20, "b": 20, "c": 20}, {"a": 8, "b": 8})
    elif case == "held-out folder empty":
        data = _tree(tmp_path / "d", {"a": 20, "b": 20}, {"a": 8, "b": 0})
    else:
        data = _tree(tmp_path / "d", {"a": 20, "b": 20, "c": 20}, {"a": 8, "b": 8, "c": 8})
        extra = ["data.train_subset", "2"] if case.startswith("train") else ["data.val_subset", "2"]
    args = with_option(with_option(with_option(tiny, "--dataset", str(data)), "data.train_subset", "48"),
                       "data.val_subset", "24")
    for i in range(0, len(extra), 2):
        args = with_option(args, extra[i], extra[i + 1])
    from scalesearch.study.trial import load_dataset

    load_dataset.cache_clear()
    line = no_grid(grid_settings(args), tmp_path / "new-run")
    assert ("at least 2 classes" in line) if case == "one class" else ("no image of class" in line), line


@pytest.mark.parametrize("extra, words", [
    (["--set", "train.lr=0"], "'lr'"),
    (["--set", "grid.max_params=0x"], "max_params"),
    (["--set", "grid.max_acts=0x"], "max_acts"),
    (["--backend", "optuna", "--set", "backend.gpus_per_trial=1"], "gpus_per_trial"),
])
def test_values_that_used_to_run_silently_wrong_are_named(tmp_path, tiny, extra, words):
    with pytest.raises(UserError) as info:
        grid_settings([*tiny, *extra, "--out", str(tmp_path / "new-run")])
    assert words in one_line(info.value)


def test_family_json_and_csv_together_are_refused():
    assert "choose one" in refused(cli(*FAMILY, "--json", "--csv"), "family --json --csv")


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


def test_out_of_range_cifar_labels_are_refused_by_the_dry_run(tmp_path, tiny):
    """57 in a 10-class set once passed loading and --dry-run, then killed training."""
    data = _cifar_pickles(tmp_path / "cifar", [i % 10 for i in range(19)] + [57])
    line = refused(cli("grid", *with_option(tiny, "--dataset", str(data)), "--dry-run", "--out", tmp_path / "run"),
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
    import scalesearch.study.rundir as rundir

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(rundir.os, "access", lambda path, mode, **kw: False)
    monkeypatch.setattr(rundir.os, "statvfs", lambda path: ReadOnly())
    assert rundir.writable_problem(tmp_path) == "read-only file system"


def test_a_damaged_study_db_names_the_damage_not_sqlites_header(tmp_path):
    """The damage is one SQLite's check reports the same way every time: the header's freelist
    count (5) disagrees with the free pages there (none).  Damaged cell pointers are not: SQLite
    then sometimes reports the page and sometimes only raises "database disk image is malformed"
    (5 of 8 runs on the same bytes), which made this test fail at random."""
    import sqlite3

    from scalesearch.study.backends.optuna_backend import OptunaBackend
    from scalesearch.errors import UserError
    from scalesearch.settings import BackendSettings
    from scalesearch.study.rundir import RunDir

    path = tmp_path / "study.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trials (a, b)")
        db.executemany("INSERT INTO trials VALUES (?, ?)", [(i, "x" * 200) for i in range(2000)])
    db.close()
    raw = bytearray(path.read_bytes())
    raw[36:40] = (5).to_bytes(4, "big")  # the header's count of free pages: 5, where there are none
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as info:
        OptunaBackend(BackendSettings()).check_store(RunDir(tmp_path))
    message = str(info.value)
    assert "is damaged or not an Optuna study (Main freelist: size is 0 but should be 5)" in message, message
    assert "***" not in message, message
