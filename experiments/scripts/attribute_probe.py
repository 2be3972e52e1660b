"""Which attribute does a short-trained network get right on a synthetic level: the shape or the texture?

A synthetic class is (shape, texture), so a prediction can be right on one and wrong on
the other.  This trains resnet20-cifar at some rows of the capacity study's experiment file
(experiments/capacity/capacity.yaml, named by their labels: baseline, "width w=1.414", ...) under the
default recipe and prints held-out top-1 with the shape and texture accuracy apart.  It is
how the capacity study (experiments/capacity/NOTES.md) tells a task that only resolution
can pay for (texture at chance) from one where capacity pays too.  The numbers quoted there:

    # the level that was "hard" before 2026-12: 6 shapes x 3 textures, gratings down to 1/64
    python experiments/scripts/attribute_probe.py --shapes disk,hexagon,square,triangle,cross,star \\
        --textures plain,stripes,checks --period 0.015625,0.125 --radius 0.15,0.30 --seeds 0
    # the current synthetic:hard
    python experiments/scripts/attribute_probe.py --level hard --seeds 0,1

The data set is fixed (data seed 0); a seed changes the initial weights and the training order.
"""

from __future__ import annotations

import argparse

import torch

from pathlib import Path

from scalesearch.net.bases import get_base
from scalesearch.measure.cost import count_cost
from scalesearch.data.synthetic import SYNTHETIC_LEVELS, SyntheticLevel, synthetic_dataset
from scalesearch.measure.models import build
from scalesearch.reproduce import load_experiment
from scalesearch.net.scaling import scale
from scalesearch.train.loop import train_candidate
from scalesearch.train.recipe import TrainConfig


CAPACITY = Path(__file__).resolve().parents[1] / "capacity" / "capacity.yaml"


def pair(text: str) -> tuple[float, float]:
    low, high = (float(v) for v in text.split(","))
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=sorted(SYNTHETIC_LEVELS), help="a named level (else the fields below)")
    parser.add_argument("--shapes", default="disk,ring,square,triangle,cross,star")
    parser.add_argument("--textures", default="plain,stripes,checks,rings")
    parser.add_argument("--period", type=pair, default=(0.08, 0.2), help="grating period range, image widths")
    parser.add_argument("--radius", type=pair, default=(0.2, 0.35), help="object radius range, image widths")
    parser.add_argument("--rows", default="baseline", help="comma-separated row labels of capacity/capacity.yaml")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr-per-256", type=float, default=TrainConfig().lr_per_256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    level = SYNTHETIC_LEVELS[args.level] if args.level else SyntheticLevel(
        "probe", shapes=tuple(args.shapes.split(",")), textures=tuple(args.textures.split(",")),
        period_range=args.period, radius_range=args.radius)
    by_name = {row.label: row for row in load_experiment(CAPACITY).rows}
    unknown = [n for n in args.rows.split(",") if n not in by_name]
    if unknown:
        parser.error(f"unknown row {unknown[0]!r} (choose from {', '.join(by_name)})")
    dataset = synthetic_dataset(args.train, args.val, 0, level=level)
    base = get_base("resnet20-cifar").replace(num_classes=dataset.num_classes)
    base_flops = count_cost(base).flops
    textures = len(level.textures)
    print(f"{len(level.classes)} classes ({len(level.shapes)} shapes x {textures} textures), "
          f"{args.train} train / {args.val} held-out images, {args.epochs:g} epochs, lr_per_256 {args.lr_per_256:g}")
    for name in args.rows.split(","):
        row = by_name[name]
        spec = scale(base, d=row.d, w=row.w, r=row.r)
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            model = build(spec, feature_norm=True)
            config = TrainConfig(epochs=args.epochs, threads=args.threads, lr_per_256=args.lr_per_256, seed=seed)
            result = train_candidate(model, dataset, spec.resolution, config)
            predicted, truth = predictions(model, dataset, spec.resolution)
            shape = (predicted // textures == truth // textures).float().mean().item()
            texture = (predicted % textures == truth % textures).float().mean().item()
            print(f"{name:12s} seed {seed}: {count_cost(spec).flops / base_flops:.2f}x FLOPs  top-1 {result.top1:.3f}  "
                  f"shape {shape:.3f}  texture {texture:.3f}  loss {result.loss:.3f}  {result.seconds:.0f} s "
                  f"{result.diverged}", flush=True)


@torch.no_grad()
def predictions(model: torch.nn.Module, dataset, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    predicted, truth = [], []
    for x, y in dataset.val_batches(resolution, 256, torch.device("cpu")):
        predicted.append(model(x).argmax(1))
        truth.append(y)
    return torch.cat(predicted), torch.cat(truth)


if __name__ == "__main__":
    main()
