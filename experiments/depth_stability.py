"""Do deep candidates train above chance where the base does?  resnet20-cifar and resnet18 at
d = 1, 2, 4 (32 px unless --resolution), the default recipe, the built-in synthetic task unless --dataset, 2 seeds each.

    python experiments/depth_stability.py  [--train 2000 --val 500 --epochs 4 --seeds 2]
                                           [--bases resnet20-cifar,resnet18 --depths 1,2,4]
                                           [--clip-norm 5 --bn-recalibration 0]   (the old recipe)
                                           [--optimizer lars --trust 0.03 --clip-norm 0]   (layer-wise rates)
                                           [--residual-init scaled]   (residual BN scales start at 1/sqrt(L))
                                           [--resolution 64]   (the base resolution, 32 by default)
                                           [--dataset ../shared/data/cifar10]   (synthetic by default)

Prints a markdown table and writes it, row by row as each finishes (so a stopped run keeps
what it measured), to experiments/results/depth/table.md (--out); the write-up of every run
is experiments/deep-candidates/NOTES.md.

Each network is trained once per seed and scored twice on the held-out split: with the
running BN averages training left ("running"), and after ``recalibrate_bn`` ("top-1", what
``train_candidate`` reports at the default ``bn_recalibration``).  The two come from the
same weights: training normalises with batch statistics, so recalibrating before an
evaluation never changes the weights, and training with recalibration off then
recalibrating once is exactly what ``train_candidate`` does with it on.  The verdict is
``divergence`` on the recalibrated score; the final training loss shows whether the network
learned at all (ln 12 = 2.48 is a uniform guess).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from scalesearch import get_base, scale
from scalesearch.cost import count_cost
from scalesearch.data import open_dataset
from scalesearch.train import (TrainConfig, build_model, chance_threshold, divergence, evaluate, recalibrate_bn,
                               train_candidate)

OUT = Path(__file__).resolve().parent / "results" / "depth" / "table.md"


def percent(values: list[float]) -> str:
    return ", ".join(f"{100 * v:.1f}%" for v in values)


def spread(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f}%"
    return f"{mean:.1f}% (range {100 * (max(values) - min(values)):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthetic",
                    help="synthetic[:level] or a data folder (e.g. ../shared/data/cifar10)")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--resolution", type=int, default=32, help="base resolution in pixels")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bases", default="resnet20-cifar,resnet18")
    ap.add_argument("--depths", default="1,2,4")
    ap.add_argument("--clip-norm", type=float, default=TrainConfig.clip_norm, help="0: no clipping")
    ap.add_argument("--optimizer", default=TrainConfig.optimizer, help="sgd or lars (layer-wise rates)")
    ap.add_argument("--trust", type=float, default=TrainConfig.trust, help="lars: each layer's step as a fraction of its weight norm")
    ap.add_argument("--residual-init", default=TrainConfig.residual_init,
                    help="the BN scale feeding each residual add starts at: one, zero or scaled (1/sqrt(L))")
    ap.add_argument("--bn-recalibration", type=int, default=TrainConfig.bn_recalibration)
    ap.add_argument("--feature-norm", action=argparse.BooleanOptionalAction, default=TrainConfig.feature_norm,
                    help="normalise the pooled features before the classifier (the recipe's default)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # as train_candidate runs, for the recalibration here
    data = open_dataset(args.dataset, train_subset=args.train, val_subset=args.val, seed=0)
    recipe = TrainConfig(epochs=args.epochs, threads=args.threads, clip_norm=args.clip_norm or None,
                         optimizer=args.optimizer, trust=args.trust, feature_norm=args.feature_norm,
                         residual_init=args.residual_init)
    optimizer = "SGD" if recipe.optimizer == "sgd" else f"LARS-style layer-wise SGD (trust {recipe.trust:g})"
    line = f"chance {1 / data.num_classes:.1%}; at-chance line {chance_threshold(data.num_classes, data.n_val):.1%}"
    rows = [f"Data: {args.dataset}, {data.n_train} train / {data.n_val} held-out images, {data.num_classes} classes ({line}).",
            f"Recipe: TrainConfig defaults but as given: lr {recipe.peak_lr():g} at batch {recipe.batch_size}, "
            f"{optimizer}, warm-up {recipe.warmup:g}, clip norm {recipe.clip_norm or 'off'}, BN recalibration on "
            f"{args.bn_recalibration} training images, feature norm {'on' if recipe.feature_norm else 'off'}, "
            f"residual BN scale init {recipe.residual_init}; "
            f"{args.epochs:g} epochs, {args.threads} threads, {args.resolution} px, "
            f"seeds 0..{args.seeds - 1}.", "",
            "| base | d | layers | FLOPs ratio | top-1 per seed | mean (range) | running-BN top-1 per seed | "
            "final train loss per seed | marked | seconds per run |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for name in args.bases.split(","):
        base = get_base(name).replace(num_classes=data.num_classes, resolution=args.resolution)
        base_flops = count_cost(base).flops
        for d in (float(v) for v in args.depths.split(",")):
            spec = scale(base, d=d)
            scores, running, losses, marks, seconds = [], [], [], [], []
            for seed in range(args.seeds):
                tick = time.time()
                torch.manual_seed(seed)
                model = build_model(spec, recipe)
                # Recalibration off in training, then once here: the same weights and the same
                # final score as train_candidate with it on (see the module docstring).
                result = train_candidate(model, data, args.resolution, recipe.replace(seed=seed, bn_recalibration=0))
                running.append(result.top1)
                top1, loss = result.top1, result.loss
                if args.bn_recalibration and math.isfinite(result.train_loss):
                    recalibrate_bn(model, data, args.resolution, recipe.batch_size, args.bn_recalibration, seed)
                    top1, loss = evaluate(model, data, args.resolution, 2 * recipe.batch_size)
                scores.append(top1)
                losses.append(result.train_loss)
                marks.append(divergence(top1, loss, result.train_loss, data.num_classes, data.n_val) or "ok")
                seconds.append(time.time() - tick)
            rows.append(f"| {name} | {d:g} | {spec.total_layers} | {count_cost(spec).flops / base_flops:.2f} | "
                        f"{percent(scores)} | {spread(scores)} | {percent(running)} | "
                        f"{', '.join(f'{v:.3f}' for v in losses)} | {'; '.join(marks)} | "
                        f"{', '.join(f'{s:.0f}' for s in seconds)} |")
            print(rows[-1], flush=True)
            args.out.write_text("\n".join(rows) + "\n")
    rows += ["", f"{time.time() - started:.0f} s in all on this machine."]
    args.out.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
