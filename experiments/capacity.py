"""Does capacity pay on the built-in synthetic task?  ResNet-20 at 1x, 2x and 4x FLOPs.

Trains resnet20-cifar scaled by width, depth or resolution (factors chosen with
``scalesearch.scale``, FLOPs measured with ``scalesearch.cost.count_cost``) under one
fixed recipe and budget (TrainConfig's defaults, ``--epochs`` passes over ``--train``
images), several seeds each, and writes a table of held-out top-1, each row compared with
1x by the rule every ranking uses (separable when the gap of the means is above twice the
pooled spread):

    python experiments/capacity.py --dataset synthetic:harder --train 12000 --val 2000 --epochs 2 \
        --seeds 3 --threads 1 --out experiments/results/capacity-harder

The data set is fixed (data seed 0); a seed changes the initial weights and the
training order.  ``chance`` is 1 / classes; ``at_chance`` is the held-out accuracy a
run must exceed not to be marked at chance (see ``scalesearch.train.divergence``);
``clipped`` is the mean fraction of steps whose gradient norm the clip cut down
(``TrainResult.clipped``).  ``--clip-norm 0`` trains without the clip.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from pathlib import Path

import torch

from scalesearch.bases import get_base
from scalesearch.cost import count_cost
from scalesearch.data import open_dataset
from scalesearch.scaling import scale
from scalesearch.study import Summary, compare
from scalesearch.train import TrainConfig, build_model, chance_threshold, train_candidate

# (name, d, w, r): FLOPs about 1x, 2x by one dimension each, and 4x by all three.
CONFIGS = (
    ("1x", 1.0, 1.0, 1.0),
    ("2x (w)", 1.0, 1.414, 1.0),
    ("2x (d)", 2.0, 1.0, 1.0),
    ("2x (r)", 1.0, 1.0, 1.414),
    ("4x (d+w+r)", 1.34, 1.22, 1.13),
)
COLUMNS = ("config", "d", "w", "r", "resolution", "flops_ratio", "top1_mean", "top1_std", "n",
           "chance", "at_chance_below", "diverged", "clipped", "seconds_per_run", "gap_vs_1x", "spread_vs_1x",
           "verdict_vs_1x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--base", default="resnet20-cifar")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr-per-256", type=float, default=TrainConfig().lr_per_256,
                        help="the recipe's base rate (default: TrainConfig's; the runs before "
                             "experiments/results/capacity-hard used 1.6)")
    parser.add_argument("--clip-norm", type=float, default=TrainConfig().clip_norm,
                        help="global gradient-norm clip (default: TrainConfig's; 0: no clipping)")
    parser.add_argument("--optimizer", default=TrainConfig().optimizer, help="sgd or lars (layer-wise rates)")
    parser.add_argument("--residual-init", default=TrainConfig().residual_init,
                        help="the BN scale feeding each residual add starts at: one, zero or scaled (1/sqrt(L))")
    parser.add_argument("--configs", default=",".join(c[0] for c in CONFIGS),
                        help="comma-separated subset of: " + ", ".join(c[0] for c in CONFIGS))
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of capacity.csv for the configs not run now")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "capacity")
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = open_dataset(args.dataset, train_subset=args.train, val_subset=args.val, seed=0)
    base = get_base(args.base).replace(num_classes=dataset.num_classes)
    base_flops = count_cost(base).flops
    config = TrainConfig(epochs=args.epochs, threads=args.threads, lr_per_256=args.lr_per_256,
                         clip_norm=args.clip_norm or None, optimizer=args.optimizer,
                         residual_init=args.residual_init)
    chance = 1 / dataset.num_classes
    threshold = chance_threshold(dataset.num_classes, dataset.n_val)
    wanted = args.configs.split(",")
    unknown = [name for name in wanted if name not in {c[0] for c in CONFIGS}]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}")
    chosen = [c for c in CONFIGS if c[0] in wanted]
    rows = []
    for name, d, w, r in chosen:
        spec = scale(base, d=d, w=w, r=r)
        flops_ratio = count_cost(spec).flops / base_flops
        top1s, diverged, seconds, clipped = [], 0, [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build_model(spec, config)
            result = train_candidate(model, dataset, spec.resolution, config.replace(seed=seed))
            top1s.append(result.top1)
            diverged += bool(result.diverged)
            seconds.append(result.seconds)
            clipped.append(result.clipped)
            print(f"  {name:14s} seed {seed}: top-1 {result.top1:.3f}  loss {result.loss:.3f}  "
                  f"{result.seconds:.0f} s {result.diverged}", flush=True)
        rows.append({"config": name, "d": d, "w": w, "r": r, "resolution": spec.resolution,
                     "flops_ratio": round(flops_ratio, 3), "top1_mean": round(statistics.mean(top1s), 4),
                     "top1_std": round(statistics.stdev(top1s), 4) if len(top1s) > 1 else 0.0,
                     "n": len(top1s), "chance": round(chance, 4), "at_chance_below": round(threshold, 4),
                     "diverged": diverged, "clipped": round(statistics.mean(clipped), 3),
                     "seconds_per_run": round(statistics.mean(seconds), 1)})
    elapsed = time.perf_counter() - started
    if args.merge and (args.out / "capacity.csv").is_file():
        with open(args.out / "capacity.csv", newline="") as f:
            kept = {row["config"]: row for row in csv.DictReader(f) if row["config"] not in wanted}
        elapsed += sum(float(row["seconds_per_run"]) * int(row["n"]) for row in kept.values())
        by_name = {**kept, **{row["config"]: row for row in rows}}
        rows = [by_name[c[0]] for c in CONFIGS if c[0] in by_name]
    write(args, dataset, config, with_verdicts(rows), elapsed)


def with_verdicts(rows: list[dict]) -> list[dict]:
    """Each row against the 1x row by the rule every ranking uses (``study.compare``): the
    gap of the means, the pooled seed-to-seed spread, separable when the gap is above twice
    that spread."""
    def summary(row: dict) -> Summary:
        return Summary(candidate=0, n=int(row["n"]), top1_mean=float(row["top1_mean"]),
                       top1_std=float(row["top1_std"]), loss_mean=None, diverged=int(row["diverged"]),
                       pruned=0, rows=[])
    base = next((summary(row) for row in rows if row["config"] == "1x"), None)
    out = []
    for row in rows:
        v = compare(summary(row), base, "1x") if base is not None and row["config"] != "1x" else None
        known = v is not None and v.spread is not None
        out.append({**row, "gap_vs_1x": f"{100 * v.gap:+.1f}" if v is not None else "-",
                    "spread_vs_1x": f"{100 * v.spread:.1f}" if known else "-",
                    "verdict_vs_1x": ("separable" if v.separable else "within noise") if known else "-"})
    return out


def write(args: argparse.Namespace, dataset, config: TrainConfig, rows: list[dict], elapsed: float) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "capacity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="-")
        writer.writeheader()
        writer.writerows(rows)
    header = "| " + " | ".join(COLUMNS) + " |"
    lines = [
        f"# Capacity on {dataset.name}: {args.base} at 1x, 2x and 4x FLOPs",
        "",
        f"Data: {dataset.name}, {dataset.num_classes} classes, {dataset.n_train} train / {dataset.n_val} "
        f"held-out images (data seed 0).  Recipe: TrainConfig defaults but lr_per_256 {config.lr_per_256:g} ({config.epochs:g} epochs, batch "
        f"{config.batch_size}, lr {config.peak_lr():g}, weight decay {config.weight_decay:g}, label smoothing "
        f"{config.label_smoothing:g}, warm-up {config.warmup:g}, clip norm {config.clip_norm if config.clip_norm else 'off'}, "
        f"optimizer {config.optimizer}, residual init {config.residual_init}), "
        f"{config.threads} threads, CPU ({platform.processor() or platform.machine()}).  "
        f"{args.seeds} seeds per config (initial weights and training order).",
        "",
        f"Command: `python experiments/capacity.py --dataset {args.dataset} --train {args.train} --val {args.val} "
        f"--epochs {args.epochs:g} --seeds {args.seeds} --threads {args.threads} --lr-per-256 {args.lr_per_256:g} --clip-norm {args.clip_norm:g} "
        f"--optimizer {args.optimizer} --residual-init {args.residual_init} --configs '{args.configs}'`; "
        f"{'training time of the rows (merged runs)' if args.merge else 'wall time'} {elapsed / 60:.1f} min.",
        "",
        header,
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(str(row.get(c, "-")) for c in COLUMNS) + " |" for row in rows),
        "",
    ]
    text = "\n".join(lines)
    (args.out / "capacity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
