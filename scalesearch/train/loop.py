"""Short training of one candidate network from scratch: the accuracy a grid search ranks.

The recipe (``recipe.TrainConfig``) is meant to rank candidates fairly on a small budget, not to
set records: Nesterov SGD under a one-cycle rate, gradients clipped to a global norm, label
smoothing, no weight decay on biases and norms, batch-norm statistics recomputed from
training images before every evaluation ("precise BN"), and the pooled features normalised
before the classifier; the measurements behind each choice are in
experiments/deep-candidates/NOTES.md and experiments/capacity/NOTES.md.  Each network trains
in the step's form chosen for it (``step_form``, ``forms``).  A run that went wrong is marked,
not dropped (``health.divergence``).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import Dataset
from ..measure.models import build
from .health import divergence
from .machine import machine_label
from .optim import make_optimizer
from .recipe import TrainConfig, TrainResult, planned_steps
from .step_form import StepForm, step_form

Report = Callable[[int, float], None]


def build_model(spec: Any, config: TrainConfig) -> nn.Module:
    """The untrained network the recipe ``config`` trains: ``spec`` (a NetworkSpec) built with
    the recipe's head (``feature_norm``) and residual initialisation (``residual_init``)."""
    return build(spec, feature_norm=config.feature_norm, residual_init=config.residual_init)


def train_candidate(model: nn.Module, dataset: Dataset, resolution: int, config: TrainConfig, *,
                    report: Report | None = None, progress: bool = False, desc: str = "") -> TrainResult:
    """Train ``model`` in place from its current weights, then score it on the held-out split.

    ``report(step, top1)`` is called after every evaluation (the final one included); an
    exception it raises, such as ``optuna.TrialPruned``, stops training and propagates.
    With the same seed, the same initial weights and the same ``config.threads`` a CPU
    run is exactly repeatable; the caller's random state is left as it was.  Runs at
    different thread counts differ in the last bits (and so, a little, in loss and
    top-1): this torch's oneDNN convolutions sum the weight gradient over the batch in
    per-thread chunks, whatever ``torch.use_deterministic_algorithms`` says; only the
    native convolution (``torch.backends.mkldnn`` off) is thread-count-independent, at
    about ten times the cost.  So callers that must agree fix ``threads`` to one value.
    """
    device = torch.device(config.device)
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with _num_threads(config.threads if device.type == "cpu" else None), \
            torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        return _train(model, dataset, resolution, config, device, report, progress, desc)


def _train(model: nn.Module, dataset: Dataset, resolution: int, config: TrainConfig,
           device: torch.device, report: Report | None, progress: bool, desc: str) -> TrainResult:
    start = time.perf_counter()
    total, batch = planned_steps(config, dataset.n_train)
    form = step_form(model, device, config.precision, config.layout)
    layout = form.memory_format
    model.to(device, memory_format=layout)
    peak_lr = config.peak_lr(batch)
    optimizer = make_optimizer(model, config, peak_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_lr, total_steps=total, pct_start=config.warmup,
        anneal_strategy="cos", cycle_momentum=False, div_factor=25, final_div_factor=1e3)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(config.seed)
    bar = tqdm(total=total, desc=desc or "train", unit="batch", disable=None if progress else True, leave=False)
    step = epoch = 0
    clipped = torch.zeros((), device=device)  # steps whose gradient norm the clip cut down
    train_seconds = 0.0
    top1 = loss = train_loss = math.nan
    with bar:
        while step < total:
            epoch += 1
            tick = time.perf_counter()
            model.train()
            loss_sum, batches = torch.zeros((), device=device), 0
            with form.applied(model):  # evaluate and recalibrate_bn apply the form themselves
                for x, y in _limit(dataset.train_batches(resolution, batch, generator, device), total - step):
                    loss, norm = _train_step(model, criterion, optimizer, x.contiguous(memory_format=layout), y,
                                             form.autocast(device), config.clip_norm)
                    loss_sum += loss
                    if norm is not None:
                        clipped += norm > config.clip_norm
                    schedule.step()
                    step, batches = step + 1, batches + 1
                    _update_bar(bar, step, loss_sum, batches, batch, tick, device)
            _synchronize(device)
            train_seconds += time.perf_counter() - tick
            train_loss = loss_sum.item() / batches
            done = step >= total or not math.isfinite(train_loss)  # a diverged run stops here
            if done or (config.eval_every and epoch % config.eval_every == 0):
                if config.bn_recalibration:
                    recalibrate_bn(model, dataset, resolution, batch, config.bn_recalibration,
                                   config.seed, device, form)
                top1, loss = evaluate(model, dataset, resolution, 2 * batch, device, form)
                if report is not None:
                    report(step, top1)
            if done:
                break
    images = step * batch
    return TrainResult(top1=top1, loss=loss, train_loss=train_loss,
                       seconds=time.perf_counter() - start,
                       images_per_second=images / max(train_seconds, 1e-9),
                       images_seen=images, epochs=images / dataset.n_train,
                       clipped=clipped.item() / max(step, 1),
                       diverged=divergence(top1, loss, train_loss, dataset.num_classes, dataset.n_val),
                       precision=form.precision, layout=form.layout,
                       machine=machine_label(device, config.threads if device.type == "cpu" else None))


def seconds_per_image(model: nn.Module, resolution: int, config: TrainConfig, batch: int,
                      num_classes: int, steps: int = 3) -> float:
    """Seconds a training image costs ``model`` in the trainer's own step (its form, optimizer
    and clip, on ``config.device`` and ``config.threads``) at ``batch`` images a step: the mean
    of ``steps`` timed steps, after one that pays for allocation, on a random batch of the
    right shape (so nothing is rendered or decoded; cutting batches is a small part of a step on
    every base measured, experiments/bench/trainer_vs_loop.py).  The model's weights change; the
    caller's random state does not."""
    device = torch.device(config.device)
    with _num_threads(config.threads if device.type == "cpu" else None), torch.random.fork_rng():
        torch.manual_seed(0)
        form = step_form(model, device, config.precision, config.layout)
        model.to(device, memory_format=form.memory_format).train()
        optimizer = make_optimizer(model, config, config.peak_lr(batch) / 25)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        x = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=form.memory_format)
        y = torch.randint(0, num_classes, (batch,), device=device)
        timings = []
        with form.applied(model):
            for _ in range(steps + 1):
                tick = time.perf_counter()
                loss, _ = _train_step(model, criterion, optimizer, x, y, form.autocast(device), config.clip_norm)
                loss.item()  # waits for the device
                timings.append(time.perf_counter() - tick)
    warm = timings[1:] or timings
    return sum(warm) / len(warm) / batch


def _train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                x: torch.Tensor, y: torch.Tensor, autocast: torch.autocast,
                clip_norm: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step: (the loss, the gradient's global norm before clipping, or None
    without clipping); the forward pass runs under ``autocast`` (``StepForm.autocast``)."""
    with autocast:
        loss = criterion(model(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = None
    if clip_norm is not None:
        # A non-finite norm leaves non-finite weights, so the loss shows it and training stops.
        norm = nn.utils.clip_grad_norm_(model.parameters(), clip_norm, foreach=True)
    optimizer.step()
    return loss.detach(), norm


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, resolution: int, batch_size: int = 256,
             device: str | torch.device = "cpu", form: "StepForm | None" = None) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` on the held-out split, in the step's
    ``form`` (default: the one ``step_form`` picks)."""
    device = torch.device(device)
    model.eval()
    form = form or step_form(model, device)
    layout = form.memory_format
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), device=device)
    with form.applied(model):
        for x, y in dataset.val_batches(resolution, batch_size, device):
            with form.autocast(device):
                logits = model(x.contiguous(memory_format=layout)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    return correct.item() / dataset.n_val, loss_sum.item() / dataset.n_val


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset: Dataset, resolution: int, batch_size: int, images: int,
                   seed: int = 0, device: str | torch.device = "cpu", form: "StepForm | None" = None) -> int:
    """Recompute every batch-norm layer's running mean and variance from training images
    with the current weights ("precise BN", as in facebookresearch/pycls); returns how
    many images were used.

    ``images`` is capped at the training split and rounded down to whole batches of
    ``batch_size`` (itself capped at the split), at least one batch; the batches are
    drawn (shifted and flipped, as in training) from a generator seeded with ``seed``,
    so the caller's random state and the training order are untouched.  Each layer's
    statistics become the equal-weight average over those batches of the batch mean and
    the (unbiased) batch variance, which is what the layer normalised with in training;
    its momentum is restored afterwards.  The global random state is left as it was.  The
    model is left in eval mode; a model with no batch norm is left as it was.
    """
    device = torch.device(device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    batch = min(batch_size, dataset.n_train)
    batches = max(1, min(images, dataset.n_train) // batch)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
    model.train()
    generator = torch.Generator().manual_seed(seed)
    form = form or step_form(model, device)
    layout = form.memory_format
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        # Forked: a dropout layer draws from the global generator in train mode, and training
        # (or the caller) must not see those draws.
        with torch.random.fork_rng(devices=cuda_devices), form.applied(model):
            for x, _ in _limit(dataset.train_batches(resolution, batch, generator, device), batches):
                with form.autocast(device):
                    model(x.contiguous(memory_format=layout))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return batches * batch


def _limit(batches: Iterator, n: int) -> Iterator:
    # At most n batches; stops drawing from the iterator (and its random numbers) after.
    for i, item in enumerate(batches):
        yield item
        if i + 1 >= n:
            return


def _update_bar(bar: tqdm, step: int, loss_sum: torch.Tensor, batches: int, batch: int,
                tick: float, device: torch.device) -> None:
    # Reading the loss forces a device sync, so the bar's numbers refresh every 10 steps.
    bar.update(1)
    if bar.disable or step % 10:
        return
    _synchronize(device)
    rate = batches * batch / max(time.perf_counter() - tick, 1e-9)
    bar.set_postfix(loss=f"{loss_sum.item() / batches:.3f}", img_s=f"{rate:.0f}")


# -- the form of the step ----------------------------------------------------------------

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the run and restore them after (None: unchanged)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
