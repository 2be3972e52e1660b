"""Each benchmark of experiments/bench runs on a tiny input and prints its tables.

The numbers are not checked (a busy test machine times anything); only that every table has
its rows, with numbers where numbers belong (make bench measures; docs/performance.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "bench"
NUMBER = r"\d+(?:\.\d+)?"
FORMS = ["fp32 contiguous", "fp32 channels-last", "bf16 contiguous", "bf16 channels-last"]


def run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rows(output: str, title: str) -> list[list[str]]:
    """The body rows of the Markdown table under the heading that starts with ``title``, as cells."""
    section = output.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_gpu_script_runs_its_tiny_preset_on_a_cpu() -> None:
    out = run("gpu.py", "--device", "cpu", "--tiny")
    header = out.splitlines()[0]
    assert re.match(r"torch \S+; device cpu .+ \(1 thread\(s\)\); \d{4}-\d\d-\d\d", header), header

    forms = rows(out, "A.")
    assert [row[2] for row in forms] == FORMS
    for network, px, _, best, median, ratio, _ in forms:
        assert (network, px) == ("efficientnet-b0", "16")
        assert re.fullmatch(NUMBER, best) and re.fullmatch(NUMBER, median) and re.fullmatch(rf"{NUMBER}x", ratio)
    assert forms[0][5] == "1.00x"
    assert sum("auto" in row[6] for row in forms) == 1

    (trainer,) = rows(out, "B.")
    network, px, form, batch, steps, best, median, util, memory = trainer
    assert (network, px, batch, steps) == ("efficientnet-b0", "16", "8", "2")
    assert form in FORMS
    assert re.fullmatch(NUMBER, best) and re.fullmatch(NUMBER, median)
    assert (util, memory) == ("n/a", "n/a")

    packing = rows(out, "C.")
    assert [row[3] for row in packing] == ["1", "2"]
    for network, px, batch, k, images, seconds, aggregate, per_trial, speedup, util, memory in packing:
        assert (network, px, batch) == ("resnet20-cifar", "16", "8")
        assert images == str(int(k) * 8 * 4)
        for value in (seconds, aggregate, per_trial):
            assert re.fullmatch(NUMBER, value), value
        assert re.fullmatch(rf"{NUMBER}x", speedup) and (util, memory) == ("n/a", "n/a")
    assert packing[0][8] == "1.00x"
    assert "skipped" not in out


def markdown_rows(output: str, first_cell: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in output.splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_step_forms_prints_every_form_against_plain_fp32():
    """Every form has its row; bf16 is timed (and its peak measured) only where this CPU runs it
    natively, and its rows say why not elsewhere, so the bench stays small on either kind."""
    from scalesearch.train.step_form import cpu_has_bf16

    out = run("step_forms.py", "--base", "resnet20-cifar", "--resolution", "16", "--threads", "1", "--batch", "4",
              "--rounds", "1", "--steps", "1")
    native = cpu_has_bf16()
    bf16 = rf"bf16 {NUMBER} GFLOP/s" if native else r"bf16 not measured \(not native on this CPU"
    assert re.search(rf"\(\w+, 1 thread\); torch .*peak: fp32 {NUMBER} GFLOP/s, {bf16}", out), out
    table = markdown_rows(out, "resnet20-cifar")
    assert [row[2] for row in table] == FORMS and table[0][5] == "1.00x"
    timed = [row for row in table if native or row[2].startswith("fp32")]
    for _, px, _, best, median, ratio, peak, _ in timed:
        assert px == "16" and all(re.fullmatch(NUMBER, v) for v in (best, median, peak)), table
        assert re.fullmatch(rf"{NUMBER}x", ratio)
    for row in table[len(timed):]:
        assert row[3:7] == ["-"] * 4 and row[7] == "not timed: bf16 is emulated on this CPU"
    assert sum("auto" in row[7] for row in timed) == 1 and sum("fastest" in row[7] for row in timed) == 1
    assert re.search(r"within 5% of the fastest|auto picks", out)


def test_trainer_vs_loop_prints_the_trainer_beside_the_hand_loop(colours):
    data, _ = colours
    out = run("trainer_vs_loop.py", "--data", str(data), "--base", "resnet20-cifar", "--resolution", "16",
              "--threads", "1", "--workers", "1", "--batch", "8", "--steps", "2", "--per-class", "16", "--rounds", "1")
    (row,) = markdown_rows(out, "resnet20-cifar")
    _, px, form, trainer, hand, hand_form, ratio, form_ratio = row
    assert px == "16" and form in FORMS
    for cell in (trainer, hand, hand_form):
        assert re.fullmatch(rf"{NUMBER}, {NUMBER}", cell), row
    assert re.fullmatch(rf"{NUMBER}x", ratio) and re.fullmatch(rf"{NUMBER}x", form_ratio)


def test_the_store_bench_runs_on_a_small_folder(tmp_path) -> None:
    from conftest import make_color_folders

    folder = make_color_folders(tmp_path / "photos", per_class=8, val_per_class=4, size=20)
    out = run("store.py", str(folder), "--cache", str(tmp_path / "stores"), "--resolution", "16")
    for line in ("plain PIL decode:", "store build:", "warm store, 1 thread, 64 px: rows"):
        assert re.search(re.escape(line) + r" [\d,]+ images/s", out), out
    assert '"images": 36' in out and '"S": 16' in out
