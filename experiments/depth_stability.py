"""Do deep candidates train above chance where the base does?  resnet20-cifar and resnet18 at
d = 1, 2, 4 (32 px), the default recipe, the built-in synthetic task, 2 seeds each.

    python experiments/depth_stability.py  [--train 2000 --val 500 --epochs 4 --seeds 2]

Prints a markdown table (top-1 per seed, mean, the divergence verdict) and writes it to
experiments/results/depth/depth.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from scalesearch import get_base, scale
from scalesearch.cost import count_cost
from scalesearch.data import open_dataset
from scalesearch.models import build
from scalesearch.train import TrainConfig, chance_threshold, train_candidate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    data = open_dataset("synthetic", train_subset=args.train, val_subset=args.val, seed=0)
    line = f"chance {1 / data.num_classes:.1%}; at-chance line {chance_threshold(data.num_classes, data.n_val):.1%}"
    rows = [f"Data: synthetic, {data.n_train} train / {data.n_val} held-out images, {data.num_classes} classes ({line}).",
            f"Recipe: TrainConfig defaults, {args.epochs:g} epochs, {args.threads} threads, seeds 0..{args.seeds - 1}.", "",
            "| base | d | layers | FLOPs ratio | top-1 per seed | mean | marked |", "|---|---|---|---|---|---|---|"]
    started = time.time()
    for name in ("resnet20-cifar", "resnet18"):
        base = get_base(name).replace(num_classes=data.num_classes, resolution=32)
        base_flops = count_cost(base).flops
        for d in (1, 2, 4):
            spec = scale(base, d=d)
            scores, marks = [], []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                result = train_candidate(build(spec), data, 32, TrainConfig(epochs=args.epochs, seed=seed,
                                                                             threads=args.threads))
                scores.append(result.top1)
                marks.append(result.diverged or "ok")
            rows.append(f"| {name} | {d} | {spec.total_layers} | {count_cost(spec).flops / base_flops:.2f} | "
                        f"{', '.join(f'{100 * s:.1f}%' for s in scores)} | {100 * statistics.fmean(scores):.1f}% | "
                        f"{'; '.join(marks)} |")
            print(rows[-1], flush=True)
    rows.append("")
    rows.append(f"{time.time() - started:.0f} s on this machine.")
    out = Path(__file__).resolve().parent / "results" / "depth" / "depth.md"
    out.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
