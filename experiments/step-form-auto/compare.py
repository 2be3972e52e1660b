"""Is `auto` the fastest step form, measured through the command line?

For each base, the same small search (`scalesearch grid`, 2 candidates x 1 seed, synthetic data)
runs with the step's form left to `auto` and with each form fixed by hand (`--set
train.precision=fp32 --set train.layout=...`; bf16 forms too where this CPU runs bf16
natively), in interleaved rounds; the figure compared is what trials.csv records, the training
images/s of each trial, summed over a run's trials as total images over total training seconds.
The runs share one form cache (in --work), as one user's runs do: the first `auto` run times the
forms, the rest read the cache.

    python experiments/step-form-auto/compare.py [--base resnet20-cifar --base mobilenetv2] [--rounds 2]
        [--work /tmp/step-form-auto] [--out experiments/step-form-auto/table.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / ".venv" / "bin" / "scalesearch"


def forms() -> list[tuple[str, str]]:
    from scalesearch.train.step_form import cpu_has_bf16

    out = [("fp32", "contiguous"), ("fp32", "channels_last")]
    return out + ([("bf16", "contiguous"), ("bf16", "channels_last")] if cpu_has_bf16() else [])


def run(base: str, form: tuple[str, str] | None, out: Path, cache: Path, resolution: int) -> tuple[float, str]:
    """One search; (images/s over its trials, the form its rows record)."""
    fixed = ["--set", f"train.precision={form[0]}", "--set", f"train.layout={form[1]}"] if form else []
    command = [str(EXE), "grid", "--base", base, "--resolution", str(resolution), "--dataset", "synthetic",
               "--epochs", "1", "--max-trials", "2", "--seeds", "1", "--set", "data.train_subset=1024",
               "--set", "data.val_subset=128", "--set", "train.eval_every=0", "--set", "grid.step=0.1",
               "--set", "order=id", "--no-estimate", *fixed, "--out", str(out)]
    env = {**os.environ, "SCALESEARCH_CACHE_DIR": str(cache)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    rows = list(csv.DictReader((out / "trials.csv").open())) if (out / "trials.csv").is_file() else []
    if not rows:
        raise SystemExit(f"{' '.join(command)} wrote no trials:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    images = sum(float(r["budget"]) for r in rows)  # each trial's training images over its training seconds
    seconds = sum(float(r["budget"]) / float(r["images_per_second"]) for r in rows)
    taken = {f"{r['precision']} {r['layout'].replace('_', '-')}" for r in rows}
    return images / seconds, ", ".join(sorted(taken))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="append")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/step-form-auto"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    bases = args.base or ["resnet20-cifar", "mobilenetv2"]
    shutil.rmtree(args.work, ignore_errors=True)
    cache = args.work / "cache"
    variants: list[tuple[str, str] | None] = [None, *forms()]
    rates: dict = {}
    taken: dict = {}
    for k in range(args.rounds):
        for base in bases:
            for form in variants:
                name = "auto" if form is None else f"{form[0]} {form[1].replace('_', '-')}"
                rate, took = run(base, form, args.work / f"{base}-{name.replace(' ', '-')}-{k}", cache,
                                 args.resolution)
                rates.setdefault((base, name), []).append(rate)
                taken[(base, name)] = took
                print(f"round {k}: {base} {name}: {rate:.0f} images/s ({took})", flush=True)
    from scalesearch.train.machine import machine

    lines = [f"{machine('cpu', 2).label}; {args.rounds} rounds; images/s from trials.csv "
             f"(best round, median), {args.resolution} px", "",
             "| network | form asked | form trained | best img/s | median img/s | vs fastest fixed form |",
             "|---|---|---|--:|--:|--:|"]
    for base in bases:
        fixed = [n for (b, n) in rates if b == base and n != "auto"]
        fastest = max(max(rates[(base, n)]) for n in fixed)
        for (b, name), values in rates.items():
            if b == base:
                lines.append(f"| {base} | {name} | {taken[(b, name)]} | {max(values):.0f} | "
                             f"{statistics.median(values):.0f} | {max(values) / fastest:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
