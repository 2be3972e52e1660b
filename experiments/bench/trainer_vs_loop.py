"""Benchmark: scalesearch's trainer against the training loop a competent user writes by hand.

Both train the same network (``train.build_model``), at the same batch size, resolution and
torch threads, with the same optimizer (Nesterov SGD, label smoothing, gradient clip at 1),
on the same image-folder tree (default ../shared/data/cifar10), for the same number of steps:

* **trainer**: ``train.train_candidate``; its images/s (``TrainResult.images_per_second``)
  counts the training loop, batches included, not the evaluation at the end.  The images are
  decoded once into a uint8 array (cached on disk, as every run does; that one-off decode is
  timed apart) and each batch is cut, shifted, flipped, resized and normalised as one tensor;
  the step takes the form a run takes on this machine (``forms.choose``: timed, cached).
* **hand loop**: a ``torch.utils.data.Dataset`` that opens and decodes each JPEG with PIL per
  sample, pads by 4 and crops at random, flips, resizes and normalises it, under a
  ``DataLoader`` with worker processes and persistent workers (pinned memory where there is a
  GPU), then a plain fp32 step, as in the PyTorch tutorials.
* **hand loop, trainer's form**: the same loop with the trainer's precision and layout, which
  parts the gain into the data path and the form of the step.

Rounds interleave the networks and the loops, so that a slow spell of a shared machine hits all
of them alike; the table gives the best and the median over the rounds and the ratios.

    python experiments/bench/trainer_vs_loop.py [--data ../shared/data/cifar10] [--base resnet20-cifar ...]
        [--resolution 32 --resolution 64] [--threads 2] [--workers 2] [--batch 32] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from scalesearch import get_base
from scalesearch.data import open_dataset
from scalesearch.train.forms import choose
from scalesearch.train.machine import machine
from scalesearch.train.loop import build_model, train_candidate
from scalesearch.train.recipe import TrainConfig
from scalesearch.train.step_form import StepForm

DEFAULT_BASES = ("resnet20-cifar", "mobilenetv2", "efficientnet-b0", "resnet50")
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Folder(torch.utils.data.Dataset):
    """``root/train/<class>/<file>``, ``per_class`` files of each class, decoded per sample."""

    def __init__(self, root: Path, per_class: int, resolution: int) -> None:
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        self.items = [(path, label) for label, name in enumerate(classes)
                      for path in sorted((root / "train" / name).iterdir())[:per_class]]
        self.resolution = resolution
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255)
        h, w = x.shape[1:]
        x = F.pad(x, (4, 4, 4, 4))
        top, left = np.random.randint(0, 9, size=2)
        x = x[:, top:top + h, left:left + w]
        if np.random.rand() < 0.5:
            x = x.flip(2)
        if self.resolution != h:
            x = F.interpolate(x[None], size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        return (x - self.mean) / self.std, label


def hand_loop(model: nn.Module, loader: torch.utils.data.DataLoader, steps: int, config: TrainConfig,
              precision: str = "fp32", layout: str = "contiguous") -> float:
    """Images/s of ``steps`` steps of a plain loop over ``loader``, the iterator's start included."""
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model.to(memory_format=memory_format).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=0.01, momentum=0.9, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    done, images = 0, 0
    tick = time.perf_counter()
    while done < steps:
        for x, y in loader:
            x = x.contiguous(memory_format=memory_format)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = criterion(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done, images = done + 1, images + len(y)
            if done >= steps:
                break
    loss.item()
    return images / (time.perf_counter() - tick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an image-folder tree with train/<class>/")
    parser.add_argument("--base", action="append", help=f"a base (repeatable; default: {', '.join(DEFAULT_BASES)})")
    parser.add_argument("--resolution", action="append", type=int, help="input px (repeatable; default 32 and 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the hand loop")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="training steps per network, loop and round")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.data / "train").is_dir():
        print(f"no image-folder tree at {args.data} (train/<class>/ expected)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    bases, resolutions = args.base or list(DEFAULT_BASES), args.resolution or [32, 64]
    classes = sum(1 for p in (args.data / "train").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as cache:
        tick = time.perf_counter()
        dataset = open_dataset(args.data, cache_dir=cache, train_subset=args.per_class * classes, val_subset=2 * args.batch)
        decode = time.perf_counter() - tick
    config = TrainConfig(images=args.steps * args.batch, batch_size=args.batch, threads=args.threads, eval_every=0,
                         bn_recalibration=0)
    print(f"{machine('cpu', args.threads).label}; torch {torch.__version__}, {args.workers} DataLoader worker(s), batch "
          f"{args.batch}, {args.steps} steps x {args.rounds} rounds, {dataset.n_train} images of {args.data} "
          f"(the trainer's one-off decode: {decode:.1f} s)")
    cases = [(name, r) for r in resolutions for name in bases]
    specs = {case: get_base(case[0]).replace(resolution=case[1], num_classes=dataset.num_classes) for case in cases}
    loaders = {r: torch.utils.data.DataLoader(Folder(args.data, args.per_class, r), batch_size=args.batch,
                                              shuffle=True, num_workers=args.workers, drop_last=True,
                                              pin_memory=torch.cuda.is_available(),
                                              persistent_workers=args.workers > 0) for r in resolutions}
    # The form a run takes on this machine (forms.choose: timed once, cached), as grid trains it.
    chosen = {case: choose(specs[case], config, "cpu", args.threads, dataset.n_train) for case in cases}
    rates: dict = {}
    for _ in range(args.rounds):
        for case in cases:
            spec = specs[case]
            torch.manual_seed(0)
            model = build_model(spec, config)
            form = StepForm(chosen[case].precision, chosen[case].layout)
            result = train_candidate(model, dataset, case[1], config.replace(precision=form.precision,
                                                                             layout=form.layout))
            rates.setdefault((case, "trainer"), []).append(result.images_per_second)
            for kind, precision, layout in (("hand", "fp32", "contiguous"), ("hand-form", form.precision, form.layout)):
                torch.manual_seed(0)
                with torch.random.fork_rng():
                    rate = hand_loop(build_model(spec, config), loaders[case[1]], args.steps, config, precision, layout)
                rates.setdefault((case, kind), []).append(rate)
            rates[(case, "form")] = str(form)
    print()
    print("| network | px | trainer's form | trainer img/s (best, median) | hand loop fp32 | hand loop, trainer's form "
          "| trainer / hand loop | of which the form |")
    print("|---|--:|---|--:|--:|--:|--:|--:|")
    slower = []
    for case in cases:
        best = {kind: max(rates[(case, kind)]) for kind in ("trainer", "hand", "hand-form")}
        median = {kind: statistics.median(rates[(case, kind)]) for kind in ("trainer", "hand", "hand-form")}
        print(f"| {case[0]} | {case[1]} | {rates[(case, 'form')]} | {best['trainer']:.0f}, {median['trainer']:.0f} | "
              f"{best['hand']:.0f}, {median['hand']:.0f} | {best['hand-form']:.0f}, {median['hand-form']:.0f} | "
              f"{best['trainer'] / best['hand']:.2f}x | {best['hand-form'] / best['hand']:.2f}x |")
        if best["trainer"] < best["hand"]:
            slower.append(f"{case[0]} at {case[1]}px")
    print()
    print(f"the trainer is slower than the hand loop on: {', '.join(slower)}" if slower
          else "the trainer is at least as fast as the hand loop on every network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
