"""Benchmark: the training step of each base in every form, against the machine's matmul peak.

For each base and resolution, the recipe's own step (the built network with its head,
Nesterov SGD, label smoothing, gradient clipping: ``train._train_step``) is timed in each
form: fp32 or bf16 autocast, contiguous or channels-last.  Rounds interleave the networks
and the forms, so that a slow spell of a shared machine hits all of them alike; the table
gives the best and the median images/s over the rounds, the ratio of each form to plain
fp32, and marks the form ``train.step_form`` picks ("auto") and the fastest.

Only the forms this CPU runs natively are timed: bf16 needs AVX-512 BF16 or AMX
(``train.cpu_has_bf16``); elsewhere oneDNN emulates it, many times slower than fp32 (a
matmul 13-47x on a Zen 3 EPYC), and its rows say so instead of taking minutes (``--emulated``
times them anyway).  "auto" marks the form a run takes on this machine (``forms.choose``: its
own timing, cached per machine, network, resolution and batch).

The peak (``peak``): the best of a large matmul and a large convolution in fp32, and in bf16
where it is native, on the same threads.  A step's training
FLOP/s is 3 x forward multiply-adds x 2 x images/s (forward, and a backward pass of about
twice the forward), and its fraction of the peak in its own precision says how much of the
machine the step uses.

    python experiments/bench/step_forms.py [--base resnet20-cifar ...] [--resolution 32 --resolution 64]
        [--threads 2] [--batch 32] [--rounds 3] [--steps 4] [--emulated]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from scalesearch import get_base
from scalesearch.measure.cost import count_cost
from scalesearch.train.forms import choose
from scalesearch.train.machine import machine
from scalesearch.train.loop import _synchronize, _train_step, build_model
from scalesearch.train.optim import make_optimizer
from scalesearch.train.recipe import TrainConfig
from scalesearch.train.step_form import StepForm, cpu_has_bf16

DEFAULT_BASES = ("resnet20-cifar", "resnet50", "mobilenetv2", "efficientnet-b0")
FORMS = (StepForm("fp32", "contiguous"), StepForm("fp32", "channels_last"),
         StepForm("bf16", "contiguous"), StepForm("bf16", "channels_last"))


def peak(precision: str, repeats: int = 5) -> float:
    """The machine's dense peak in GFLOP/s for ``precision``: the best of a 2048-cube matmul
    (MKL on this torch) and a 3x3 convolution of 512 channels on 32x32 maps, channels-last
    (oneDNN), each the best of ``repeats``.  On AMD CPUs MKL's fp32 matmul reaches less than
    half of what oneDNN's convolutions do, so a matmul alone understates the peak."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    x = torch.randn(8, 512, 32, 32).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False).to(memory_format=torch.channels_last)

    def convolve() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            conv(x)

    rates = []
    for work, flops in ((lambda: a @ b, 2 * 2048 ** 3), (convolve, 2 * 9 * 8 * 512 * 512 * 32 * 32)):
        work()
        best = float("inf")
        for _ in range(repeats):
            tick = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - tick)
        rates.append(flops / best / 1e9)
    return max(rates)


class Step:
    """One network in one form on ``device``, ready to step on a fixed random batch resident there."""

    def __init__(self, name: str, resolution: int, form: StepForm, batch: int,
                 device: torch.device = torch.device("cpu"), classes: int = 10) -> None:
        torch.manual_seed(0)
        spec = get_base(name).replace(resolution=resolution, num_classes=classes)
        self.config = TrainConfig()
        self.model = build_model(spec, self.config).to(device, memory_format=form.memory_format).train()
        self.optimizer = make_optimizer(self.model, self.config, 0.01)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)
        self.x = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(
            memory_format=form.memory_format)
        self.y = torch.randint(0, classes, (batch,), device=device)
        self.form, self.device = form, device

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps, the device synchronised before and after."""
        _synchronize(self.device)
        tick = time.perf_counter()
        with self.form.applied(self.model):
            for _ in range(steps):
                _train_step(self.model, self.criterion, self.optimizer, self.x, self.y,
                            self.form.autocast(self.device), self.config.clip_norm)
        _synchronize(self.device)
        return (time.perf_counter() - tick) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="append", help=f"a base (repeatable; default: {', '.join(DEFAULT_BASES)})")
    parser.add_argument("--resolution", action="append", type=int, help="input px (repeatable; default 32 and 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per network, form and round")
    parser.add_argument("--emulated", action="store_true", help="time bf16 where the CPU only emulates it (slow)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bases, resolutions = args.base or list(DEFAULT_BASES), args.resolution or [32, 64]
    native = cpu_has_bf16()
    timed = [f for f in FORMS if f.precision == "fp32" or native or args.emulated]
    peak_rate = {p: peak(p) for p in ("fp32", "bf16") if p == "fp32" or native}
    bf16_peak = (f"bf16 {peak_rate['bf16']:.0f} GFLOP/s" if native else
                 "bf16 not measured (not native on this CPU: no avx512_bf16 or amx_bf16)")
    print(f"{machine('cpu', args.threads).label}; torch {torch.__version__}, batch {args.batch}, {args.rounds} rounds "
          f"x {args.steps} steps; peak: fp32 {peak_rate['fp32']:.0f} GFLOP/s, {bf16_peak}")
    cases = [(name, r) for r in resolutions for name in bases]
    steps = {(name, r, form): Step(name, r, form, args.batch) for name, r in cases for form in timed}
    for step in steps.values():  # warm-up: allocation and oneDNN's first-call kernel choice
        step.run(2)
    seconds: dict = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            seconds[key].append(step.run(args.steps))
    print()
    print("| network | px | form | best img/s | median img/s | vs fp32 contiguous | % of peak | |")
    print("|---|--:|---|--:|--:|--:|--:|---|")
    misses = []
    for name, r in cases:
        spec = get_base(name).replace(resolution=r, num_classes=10)
        macs = count_cost(spec).flops
        rate = {form: args.batch / min(seconds[(name, r, form)]) for form in timed}
        median = {form: args.batch / statistics.median(seconds[(name, r, form)]) for form in timed}
        choice = choose(spec, TrainConfig(batch_size=args.batch), "cpu", args.threads, n_train=10 * args.batch)
        auto = StepForm(choice.precision, choice.layout)
        fastest = max(timed, key=rate.get)
        for form in FORMS:
            if form not in timed:
                print(f"| {name} | {r} | {form} | - | - | - | - | not timed: bf16 is emulated on this CPU |")
                continue
            used = (f"{100 * 3 * macs * 2 * rate[form] / (peak_rate[form.precision] * 1e9):.1f}"
                    if form.precision in peak_rate else "-")
            marks = " ".join(m for m, on in (("auto", form == auto), ("fastest", form == fastest)) if on)
            print(f"| {name} | {r} | {form} | {rate[form]:.0f} | {median[form]:.0f} | "
                  f"{rate[form] / rate[FORMS[0]]:.2f}x | {used} | {marks} |")
        if rate.get(auto, 0) < 0.95 * rate[fastest]:
            misses.append(f"{name} at {r}px: auto picks {auto} ({rate.get(auto, 0):.0f} img/s), "
                          f"{fastest} is faster ({rate[fastest]:.0f} img/s)")
    print()
    print("\n".join(misses) if misses else "the auto form is within 5% of the fastest on every network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
