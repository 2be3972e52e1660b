"""Benchmark for a short time on a GPU: the step's forms, the trainer's loop, and packed trials.

One script, meant to run in under 5 minutes, so that a short loan of a GPU is used well.  It
prints a header naming torch, the device and the date, then three Markdown tables:

* **A, forms**: for each network and resolution, the recipe's own step (``train._train_step``:
  the built network with its head, Nesterov SGD, label smoothing, gradient clip) on a fixed
  random batch made once on the device, in each form: fp32 or bf16 autocast, contiguous or
  channels-last.  Rounds interleave the forms, so that a slow spell hits all of them alike;
  the table gives the best and the median images/s over the rounds, the ratio of each form's
  best to fp32 contiguous, and marks the form ``train.step_form`` picks ("auto") and the
  fastest.  The device is synchronised before and after each timed run of steps.
* **B, trainer**: ``train.train_candidate`` end to end on the built-in synthetic data set,
  rendered on the device once by a one-step warm-up run (which also pays for allocation and
  kernel choice), so that the trainer's whole loop, batches cut, shifted and flipped on the
  device, is measured: ``TrainResult.images_per_second`` (the training loop, not the
  evaluation at the end), best and median over the rounds, in the form the trainer picks.
* **C, packing**: K small trials (default resnet20-cifar at 32 px, batch 64) trained at the
  same time on the same device, each in its own process (as Ray's fractional GPUs place
  trials), against one at a time (K = 1).  Each process builds its trial and warms it up, then
  all wait at a barrier, so that imports and set-up are not timed; each then trains and
  reports its images and its training loop's seconds.  The aggregate is all images over the
  longest loop; the speed-up is that over K = 1's.  Without CUDA MPS the processes' kernels
  time-slice rather than overlap, so what packing gains is the device time one trial leaves
  idle (kernel launches, host work, synchronisations).

During each row of tables B and C, on CUDA, a background thread samples
``nvidia-smi --query-gpu=utilization.gpu,memory.used`` every 0.2 s; the row gives the mean
utilisation and the peak memory used (the whole device's), or "n/a" on a CPU or without
nvidia-smi.  A measurement that would start after ``--budget-seconds`` is skipped with a
note, so that the run ends within a loan (one that starts in time may run past the budget).
``--tiny`` is a preset for tests on a CPU (16 px, batch 8, a few steps); flags given with
it override its values.

    python experiments/bench/gpu.py [--device cuda] [--base efficientnet-b0 ...]
        [--resolution 64 --resolution 224] [--batch 128] [--steps 10] [--rounds 3]
        [--train-steps 50] [--pack 1 --pack 2 --pack 4] [--pack-base resnet20-cifar]
        [--pack-resolution 32] [--pack-batch 64] [--pack-steps 200] [--budget-seconds 270] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing import get_context
from pathlib import Path

import torch
from torch import nn

from scalesearch import get_base
from scalesearch.data import Dataset, open_dataset
from scalesearch.train.loop import build_model, train_candidate
from scalesearch.train.recipe import TrainConfig
from scalesearch.train.step_form import StepForm, step_form
from step_forms import FORMS, Step  # this folder's CPU benchmark: the same step, on any device
DEFAULTS = dict(base=["efficientnet-b0"], resolution=[64, 224], batch=128, steps=10, rounds=3, train_steps=50,
                pack=[1, 2, 4], pack_base="resnet20-cifar", pack_resolution=32, pack_batch=64, pack_steps=200)
TINY = dict(base=["efficientnet-b0"], resolution=[16], batch=8, steps=2, rounds=1, train_steps=2,
            pack=[1, 2], pack_base="resnet20-cifar", pack_resolution=16, pack_batch=8, pack_steps=4)
SAMPLE_PERIOD = 0.2  # seconds between nvidia-smi samples
WAIT_SECONDS = 300  # the longest a packed trial may take to get ready, or to train


# -- the device ---------------------------------------------------------------------------

def describe(device: torch.device) -> str:
    """The device as the header records it: the GPU's name, memory and CUDA/cuDNN versions, or
    the CPU's model and torch's thread count."""
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
        return (f"{device} {torch.cuda.get_device_name(device)} ({memory:.0f} GiB, CUDA {torch.version.cuda}, "
                f"cuDNN {torch.backends.cudnn.version()})")
    return f"cpu {cpu_model()} ({torch.get_num_threads()} thread(s))"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def release(device: torch.device) -> None:
    """Free what the last measurement left on the device, so that the next starts alike."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class GpuSampler:
    """The device's utilisation (%) and memory used (MiB), sampled with nvidia-smi every
    ``SAMPLE_PERIOD`` s in a background thread while in a ``with`` block.  On a CPU, without
    nvidia-smi, or when its answer cannot be read, there are no samples and both read "n/a"."""

    def __init__(self, device: torch.device) -> None:
        self.command = smi_command(device)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "GpuSampler":
        if self.command:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                answer = subprocess.run(self.command, capture_output=True, text=True, timeout=5, check=True)
                utilisation, memory = (float(v) for v in answer.stdout.splitlines()[0].split(","))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return
            self.samples.append((utilisation, memory))
            self._stop.wait(SAMPLE_PERIOD)

    def utilisation(self) -> str:
        """The mean utilisation over the samples, in %."""
        return f"{statistics.mean(u for u, _ in self.samples):.0f}" if self.samples else "n/a"

    def memory(self) -> str:
        """The most memory used in any sample, in MiB."""
        return f"{max(m for _, m in self.samples):.0f}" if self.samples else "n/a"


def smi_command(device: torch.device) -> list[str] | None:
    """The nvidia-smi query for ``device`` (its physical id through CUDA_VISIBLE_DEVICES), or
    None on a CPU or where nvidia-smi is missing."""
    smi = shutil.which("nvidia-smi")
    if device.type != "cuda" or smi is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",")[device.index].strip() if visible else str(device.index)
    return [smi, f"--id={physical}", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


class Budget:
    """The run's wall-clock budget: a measurement that would start past it is skipped, with a note."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str) -> bool:
        """Whether ``what`` may start; if not, prints why it is skipped."""
        if self.elapsed() <= self.seconds:
            return True
        print(f"skipped {what}: {self.elapsed():.0f} s elapsed, past the budget of {self.seconds:.0f} s")
        return False


# -- A: the step in each form -------------------------------------------------------------

def measure_forms(name: str, resolution: int, batch: int, steps: int, rounds: int,
                  device: torch.device) -> list[list[str]]:
    """Table A's rows for one network at one resolution: each form's best and median images/s
    over ``rounds`` interleaved rounds of ``steps`` steps, after a two-step warm-up each."""
    runs = {form: Step(name, resolution, form, batch, device) for form in FORMS}
    for step in runs.values():  # allocation and the first call's kernel choice
        step.run(2)
    seconds: dict[StepForm, list[float]] = {form: [] for form in FORMS}
    for _ in range(rounds):
        for form, step in runs.items():
            seconds[form].append(step.run(steps))
    auto = step_form(runs[FORMS[0]].model, device)
    best = {form: batch / min(seconds[form]) for form in FORMS}
    fastest = max(FORMS, key=best.get)
    rows = []
    for form in FORMS:
        marks = " ".join(m for m, on in (("auto", form == auto), ("fastest", form == fastest)) if on)
        rows.append([name, str(resolution), str(form), rate(best[form]),
                     rate(batch / statistics.median(seconds[form])), f"{best[form] / best[FORMS[0]]:.2f}x", marks])
    return rows


# -- B: the trainer end to end ------------------------------------------------------------

def synthetic_trial(name: str, resolution: int, batch: int, steps: int,
                    device: torch.device) -> tuple[nn.Module, Dataset, TrainConfig]:
    """A warmed-up trial as a search runs one: network ``name`` at ``resolution`` built by the
    recipe, a synthetic data set of exactly ``steps`` batches (one epoch) and one held-out batch,
    and the recipe's config for that budget on ``device``, evaluating only at the end, with no
    batch-norm recalibration.  The warm-up, one step of ``train_candidate``, renders the data on
    the device and pays for allocation and kernel choice."""
    dataset = open_dataset("synthetic", train_subset=batch * steps, val_subset=batch)
    config = TrainConfig(images=batch * steps, batch_size=batch, device=str(device), eval_every=0,
                         bn_recalibration=0)
    torch.manual_seed(0)
    model = build_model(get_base(name).replace(resolution=resolution, num_classes=dataset.num_classes), config)
    train_candidate(model, dataset, resolution, config.replace(images=batch))
    return model, dataset, config


def measure_trainer(name: str, resolution: int, batch: int, steps: int, rounds: int,
                    device: torch.device) -> list[str]:
    """Table B's row for one network at one resolution: the best and median over ``rounds``
    runs of ``train_candidate`` for ``steps`` steps of ``TrainResult.images_per_second``, with
    the device's utilisation while they ran."""
    model, dataset, config = synthetic_trial(name, resolution, batch, steps, device)
    with GpuSampler(device) as gpu:
        results = [train_candidate(model, dataset, resolution, config) for _ in range(rounds)]
    rates = [r.images_per_second for r in results]
    form = StepForm(results[0].precision, results[0].layout)
    return [name, str(resolution), str(form), str(batch), str(steps), rate(max(rates)),
            rate(statistics.median(rates)), gpu.utilisation(), gpu.memory()]


# -- C: packed trials ---------------------------------------------------------------------

def packed_trial(name: str, resolution: int, batch: int, steps: int, device: str,
                 barrier: threading.Barrier, results: queue.Queue) -> None:
    """One of K packed trials, in its own process: builds and warms up its trial, waits at
    ``barrier`` for the others, trains, and puts (images, seconds of the training loop) on
    ``results``; on failure it breaks the barrier, so that no one waits for it, and puts its
    traceback instead."""
    try:
        model, dataset, config = synthetic_trial(name, resolution, batch, steps, torch.device(device))
        barrier.wait(timeout=WAIT_SECONDS)
        result = train_candidate(model, dataset, resolution, config)
        results.put((result.images_seen, result.images_seen / result.images_per_second))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        barrier.abort()
        results.put(traceback.format_exc())


def collect(results: queue.Queue, count: int, timeout: float) -> list:
    """Up to ``count`` reports from ``results``, waiting at most ``timeout`` s for each."""
    reports: list = []
    with contextlib.suppress(queue.Empty):
        for _ in range(count):
            reports.append(results.get(timeout=timeout))
    return reports


def run_packed(k: int, name: str, resolution: int, batch: int, steps: int,
               device: torch.device) -> tuple[list[tuple[int, float]], GpuSampler]:
    """Train ``k`` trials at once, one spawned process each, timed from when all are ready:
    each one's (images, seconds), and the device's utilisation while they trained."""
    ctx = get_context("spawn")
    barrier, results = ctx.Barrier(k + 1), ctx.Queue()
    workers = [ctx.Process(target=packed_trial, args=(name, resolution, batch, steps, str(device), barrier, results),
                           daemon=True) for _ in range(k)]
    for worker in workers:
        worker.start()
    gpu = GpuSampler(device)
    try:
        barrier.wait(timeout=WAIT_SECONDS)
        with gpu:
            reports = collect(results, k, WAIT_SECONDS)
    except threading.BrokenBarrierError:
        reports = collect(results, k, 10)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    failures = [r for r in reports if isinstance(r, str)]
    if failures or len(reports) < k:
        codes = ", ".join(str(w.exitcode) for w in workers)
        raise RuntimeError(f"{k} packed trials failed (exit codes {codes})" + (f":\n{failures[0]}" if failures else ""))
    return reports, gpu


def measure_packing(ks: list[int], name: str, resolution: int, batch: int, steps: int,
                    device: torch.device, budget: Budget) -> list[list[str]]:
    """Table C's rows: for each K, K trials of ``steps`` steps trained at once; the aggregate
    images/s (all images over the longest training loop) and its speed-up over K = 1."""
    rows, single = [], None
    for k in sorted(set(ks)):
        if not budget.allows(f"packing K={k}"):
            continue
        reports, gpu = run_packed(k, name, resolution, batch, steps, device)
        images, seconds = sum(i for i, _ in reports), max(s for _, s in reports)
        aggregate = images / seconds
        single = aggregate if k == 1 else single
        speedup = f"{aggregate / single:.2f}x" if single else "n/a"
        rows.append([name, str(resolution), str(batch), str(k), str(images), f"{seconds:.2f}", rate(aggregate),
                     rate(aggregate / k), speedup, gpu.utilisation(), gpu.memory()])
        release(device)
    return rows


# -- output -------------------------------------------------------------------------------

def rate(images_per_second: float) -> str:
    """Images/s to print: whole numbers from 100 up, one decimal below."""
    return f"{images_per_second:.0f}" if images_per_second >= 100 else f"{images_per_second:.1f}"


def print_table(title: str, columns: list[tuple[str, bool]], rows: list[list[str]]) -> None:
    """``rows`` as a Markdown table under ``title``, each column padded to its widest cell;
    ``columns`` are (header, right-aligned?) pairs."""
    widths = [max([len(header), 3] + [len(row[i]) for row in rows]) for i, (header, _) in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if right else c.ljust(w)
                                 for c, w, (_, right) in zip(cells, widths, columns)) + " |"

    print(f"\n## {title}\n")
    print(line([header for header, _ in columns]))
    print("|" + "|".join("-" * (w + 1) + ":" if right else "-" * (w + 2) for w, (_, right) in zip(widths, columns))
          + "|")
    for row in rows:
        print(line(row))


# -- the command --------------------------------------------------------------------------

def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text})")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the defaults (or ``--tiny``'s) filled in where a flag is not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def preset(key: str) -> str:
        return f"default {DEFAULTS[key]}; --tiny: {TINY[key]}"

    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available, else cpu)")
    parser.add_argument("--base", action="append", help=f"network of tables A and B (repeatable; {preset('base')})")
    parser.add_argument("--resolution", action="append", type=positive,
                        help=f"input px of tables A and B (repeatable; {preset('resolution')})")
    parser.add_argument("--batch", type=positive, help=f"batch of tables A and B ({preset('batch')})")
    parser.add_argument("--steps", type=positive, help=f"timed steps per form and round in table A ({preset('steps')})")
    parser.add_argument("--rounds", type=positive, help=f"rounds of tables A and B ({preset('rounds')})")
    parser.add_argument("--train-steps", type=positive, help=f"steps of each trainer run in table B "
                                                             f"({preset('train_steps')})")
    parser.add_argument("--pack", action="append", type=positive,
                        help=f"trials trained at once in table C (repeatable; {preset('pack')})")
    parser.add_argument("--pack-base", help=f"network of the packed trials ({preset('pack_base')})")
    parser.add_argument("--pack-resolution", type=positive, help=f"their input px ({preset('pack_resolution')})")
    parser.add_argument("--pack-batch", type=positive, help=f"their batch ({preset('pack_batch')})")
    parser.add_argument("--pack-steps", type=positive, help=f"their steps ({preset('pack_steps')})")
    parser.add_argument("--budget-seconds", type=float, default=270.0,
                        help="skip measurements that would start after this many seconds (default 270)")
    parser.add_argument("--tiny", action="store_true", help="a preset small enough for a test on one CPU thread")
    args = parser.parse_args(argv)
    for key, value in (TINY if args.tiny else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: this torch sees no CUDA device")
        args.device = torch.device("cuda", torch.cuda.current_device() if args.device.index is None
                                   else args.device.index)
        torch.cuda.set_device(args.device)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget, device = Budget(args.budget_seconds), args.device
    sys.stdout.reconfigure(line_buffering=True)  # each table shows as it is done, even through a pipe
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"torch {torch.__version__}; device {describe(device)}; {date}")
    print(f"batch {args.batch}, rounds {args.rounds} x {args.steps} steps (A), {args.train_steps} steps (B); "
          f"packing {args.pack_base} at {args.pack_resolution} px, batch {args.pack_batch}, {args.pack_steps} steps; "
          f"budget {args.budget_seconds:.0f} s")
    cases = [(name, r) for r in args.resolution for name in args.base]

    forms = []
    for name, r in cases:
        if budget.allows(f"forms of {name} at {r} px"):
            forms += measure_forms(name, r, args.batch, args.steps, args.rounds, device)
            release(device)
    print_table("A. The step in each form, batch resident on the device",
                [("network", False), ("px", True), ("form", False), ("best img/s", True), ("median img/s", True),
                 ("vs fp32 contiguous", True), ("", False)], forms)

    trainer = []
    for name, r in cases:
        if budget.allows(f"trainer on {name} at {r} px"):
            trainer.append(measure_trainer(name, r, args.batch, args.train_steps, args.rounds, device))
            release(device)
    print_table("B. train_candidate end to end, synthetic data resident on the device",
                [("network", False), ("px", True), ("form", False), ("batch", True), ("steps", True),
                 ("best img/s", True), ("median img/s", True), ("GPU util %", True), ("GPU MiB", True)], trainer)

    packing = measure_packing(args.pack, args.pack_base, args.pack_resolution, args.pack_batch, args.pack_steps,
                              device, budget)
    print_table("C. K trials packed on the device, one process each, against one at a time",
                [("network", False), ("px", True), ("batch", True), ("K", True), ("images", True),
                 ("seconds", True), ("aggregate img/s", True), ("per trial img/s", True), ("vs K=1", True),
                 ("GPU util %", True), ("GPU MiB", True)], packing)
    print(f"\ndone in {budget.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
