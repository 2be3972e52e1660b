"""Short training of one candidate network from scratch: the accuracy a grid search ranks.

The recipe is meant to rank candidates fairly on a small budget, not to set records:
SGD with Nesterov momentum under a one-cycle learning rate (linear warm-up, cosine decay
to near zero), so that any budget, even a fraction of an epoch, ends annealed; a peak
rate that scales linearly with the batch size; gradients clipped to a global norm of 1, so
that deep and wide candidates survive the peak of the schedule; label smoothing; no weight
decay on biases and normalisation parameters; and, before every evaluation, batch-norm
statistics recomputed from training images with the weights as they are ("precise BN"),
so that a short run is scored on what it learned, not on running averages that lag
behind its weights; and the pooled features normalised before the classifier
(``TrainConfig.feature_norm``), without which deep candidates sat at chance.  Every
default of the recipe is written once, in ``TrainConfig``.

Both stabilisers were measured (experiments/deep-candidates/NOTES.md).  At 124 steps the old
limit of 5 let a gradient spike (global norm 4.3, at the peak rate) through that left
resnet20-cifar at d = 2 at chance for good, its training loss at ln(classes); a limit of 1
caps that step.  Measured since (experiments/capacity/NOTES.md): on ResNet-20
the global gradient norm stays between 1.3 and 2.3, so the limit of 1 cuts down nearly every
step (``TrainResult.clipped``) and acts as a rate that is lower for networks with larger
gradients, deeper ones above all; ``clip_norm=None`` trains without it.
At a budget of a few dozen steps, or a high rate, the running averages
(momentum 0.1, from mean 0 and variance 1) lag behind the weights: a deep net with a
training loss of 0.3 scored 50% (chance) on a 2-class task, and 100% with its statistics
recomputed.  Each network trains in the fastest form of the step measured for its kind
(``step_form``): a precision (fp32, or bfloat16 autocast where the device runs it natively)
and a memory layout (contiguous or channels-last), chosen by a rule from the network's
structure and the device, so that a run is repeatable; docs/performance.md has the
measurements behind the rule.

``optimizer="lars"`` adds layer-wise rates (``LayerwiseSGD``): at the reproduce ``cpu``
budget (CIFAR-10, 250 steps at batch 32, every step clipped) it took every Table 3 row off
chance (ResNet-50's baseline from 14% to 38%), but on the synthetic task it cost ResNet-20
4 to 6 points and left ResNet-18 at d = 4 at chance, so SGD stays the default
(experiments/deep-candidates/NOTES.md, experiments/table3-cifar10/NOTES.md).

A run that went wrong is not dropped but marked: ``TrainResult.diverged`` says why
(``divergence``), so a search can refuse to rank it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import Dataset
from .errors import UserError
from .forms import machine_label
from .models import RESIDUAL_INITS, build

Report = Callable[[int, float], None]


class TrainConfigError(UserError):
    """A training setting is out of range; the message names it."""


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train a candidate: the recipe's defaults live here and only here.

    The budget is ``images`` training images when set, else ``epochs`` (fractional
    allowed) passes over the training split; both round down to whole batches.  The
    peak learning rate of the one-cycle schedule, reached after the ``warmup`` fraction
    of the steps, is ``lr`` exactly when given, else ``lr_per_256 * batch / 256`` (the
    linear scaling rule, Goyal et al. 2017; see ``peak_lr``).  Gradients are clipped to
    a global L2 norm of ``clip_norm`` (None: no clipping).  ``optimizer`` is "sgd" (Nesterov
    momentum 0.9) or "lars": the same SGD with layer-wise rates, every weight tensor's
    gradient rescaled to ``trust`` x its weight norm before the step (``LayerwiseSGD``); the
    clip acts first, on the raw gradient.  Before each evaluation the
    batch-norm running statistics are recomputed from ``bn_recalibration`` training images
    (capped at the training split, whole batches of the training batch size, at least
    one; 0: off, the running averages of training are used), see ``recalibrate_bn``;
    training itself always normalises with batch statistics, so this changes only the
    scores, never the weights.  ``feature_norm`` says how a trial builds the network to
    train: with a batch norm (no affine parameters) on the pooled features before the
    classifier (``models.Head``, ``build(..., feature_norm=True)``); it folds into the
    classifier for deployment (``models.fold_feature_norm``).  ``residual_init`` says how
    that network's BN scale feeding each residual add starts: "one", "zero" or "scaled",
    1/sqrt(L) for L residual blocks (``models.RESIDUAL_INITS``).  ``train_candidate`` trains
    the model it is given as it is.  ``threads`` fixes torch's
    CPU threads for the run (None: as they are).  ``eval_every`` evaluates on the
    held-out split every that many epochs (0: only at the end); the end of training is
    always evaluated.  ``precision`` ("auto", "fp32", "bf16") and ``layout`` ("auto",
    "contiguous", "channels_last") fix the form of the step; "auto" lets ``step_form`` choose
    by the measured rule.
    """

    epochs: float = 1.0
    images: int | None = None
    batch_size: int = 64
    lr: float | None = None
    lr_per_256: float = 0.4
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.2
    clip_norm: float | None = 1.0
    optimizer: str = "sgd"
    trust: float = 0.03
    bn_recalibration: int = 512
    feature_norm: bool = True
    residual_init: str = "one"
    precision: str = "auto"
    layout: str = "auto"
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    eval_every: int = 1

    def __post_init__(self) -> None:
        # (name, integer?, may be None, in range?, why); non-numbers, NaN and inf never pass.
        checks = [
            ("epochs", False, False, lambda v: v > 0, "must be > 0"),
            ("images", True, True, lambda v: v > 0, "must be > 0"),
            # Batch norm normalises over the batch: one image per batch (on a 1x1 map) has nothing to normalise by.
            ("batch_size", True, False, lambda v: v >= 2, "must be >= 2 (batch norm needs two images per batch)"),
            ("lr", False, True, lambda v: v > 0, "must be > 0"),
            ("lr_per_256", False, False, lambda v: v > 0, "must be > 0"),
            ("weight_decay", False, False, lambda v: v >= 0, "must be >= 0"),
            ("label_smoothing", False, False, lambda v: 0 <= v < 1, "must be in [0, 1)"),
            ("warmup", False, False, lambda v: 0 < v < 1, "must be in (0, 1)"),
            ("clip_norm", False, True, lambda v: v > 0, "must be > 0 (or None: no clipping)"),
            ("trust", False, False, lambda v: v > 0, "must be > 0"),
            ("bn_recalibration", True, False, lambda v: v >= 0, "must be >= 0 (0: off)"),
            ("seed", True, False, lambda v: v >= 0, "must be >= 0"),
            ("threads", True, True, lambda v: v > 0, "must be > 0"),
            ("eval_every", True, False, lambda v: v >= 0, "must be >= 0"),
        ]
        for name, integer, optional, in_range, why in checks:
            value = getattr(self, name)
            if value is None and optional:
                continue
            kind = numbers.Integral if integer else numbers.Real
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TrainConfigError(f"train setting '{name}' must be {'an integer' if integer else 'a number'} "
                                       f"(got {value!r})")
            if not math.isfinite(value):
                raise TrainConfigError(f"train setting '{name}' must be finite (got {value!r})")
            if not in_range(value):
                raise TrainConfigError(f"train setting '{name}' {why} (got {value!r})")
        if self.optimizer not in OPTIMIZERS:
            raise TrainConfigError(f"train setting 'optimizer' must be one of {', '.join(OPTIMIZERS)} "
                                   f"(got {self.optimizer!r})")
        if not isinstance(self.feature_norm, bool):
            raise TrainConfigError(f"train setting 'feature_norm' must be true or false (got {self.feature_norm!r})")
        if self.residual_init not in RESIDUAL_INITS:
            raise TrainConfigError(f"train setting 'residual_init' must be one of {', '.join(RESIDUAL_INITS)} "
                                   f"(got {self.residual_init!r})")
        if self.precision not in PRECISIONS:
            raise TrainConfigError(f"train setting 'precision' must be one of {', '.join(PRECISIONS)} "
                                   f"(got {self.precision!r})")
        if self.layout not in LAYOUTS:
            raise TrainConfigError(f"train setting 'layout' must be one of {', '.join(LAYOUTS)} "
                                   f"(got {self.layout!r})")
        if not isinstance(self.device, str) or not self.device:
            raise TrainConfigError(f"train setting 'device' must name a device (got {self.device!r})")

    def peak_lr(self, batch: int | None = None) -> float:
        """The one-cycle peak: ``lr`` when set, else ``lr_per_256`` scaled linearly to
        ``batch`` (default ``batch_size``; training passes the batch it really uses)."""
        if self.lr is not None:
            return float(self.lr)
        return self.lr_per_256 * (batch or self.batch_size) / 256

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """The outcome of one short training run.

    ``top1`` and ``loss`` (plain cross-entropy) are measured on the held-out split at the
    end; ``train_loss`` is the mean training loss (with label smoothing) over the last
    epoch; ``images_per_second`` counts training time only, ``seconds`` everything.
    ``clipped`` is the fraction of steps whose global gradient norm exceeded
    ``clip_norm`` and was cut down to it (0 without clipping): near 1, the clip rescales
    every step by 1 / norm, and so acts as a learning rate that differs between networks.
    ``diverged`` is "" for a healthy run, else why it is not (see ``divergence``).
    ``precision`` and ``layout`` are the form the step took (``step_form``), ``machine`` what it
    ran on (``forms.machine_label``: CPU model and instruction set, threads; or the GPU).
    """

    top1: float
    loss: float
    train_loss: float
    seconds: float
    images_per_second: float
    images_seen: int
    epochs: float
    clipped: float = 0.0
    diverged: str = ""
    precision: str = ""
    layout: str = ""
    machine: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def planned_steps(config: TrainConfig, n_train: int) -> tuple[int, int]:
    """(optimizer steps, batch size) for the budget: whole batches, at least one step.

    The batch shrinks to the training split when the split is smaller than a batch.
    """
    batch = min(config.batch_size, n_train)
    if config.images is not None:
        steps = config.images // batch
    else:
        steps = math.floor(config.epochs * (n_train // batch) + 1e-9)
    return max(1, steps), batch


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


# -- the optimizer --------------------------------------------------------------------

OPTIMIZERS = ("sgd", "lars")


class LayerwiseSGD(torch.optim.SGD):
    """SGD with a layer-wise rate (LARS, You, Gitman & Ginsburg 2017, as a gradient rescale).

    Before each step, the gradient g of every weight tensor with two or more dimensions
    (convolutions, the classifier) is multiplied by ``trust * ||w|| / ||g||``, so each such
    tensor moves by the same fraction of its own norm whatever its gradient's size; biases
    and normalisation parameters, and a tensor whose weight or gradient norm is zero, keep
    the plain gradient.  Momentum, Nesterov, weight decay and the schedule then act as in
    ``torch.optim.SGD``.  Why: in a deep BN network at initialisation most of the gradient's
    norm sits in the first layers (the stem held 61 of 75 on ResNet-18 at d = 4), so one
    global rate or clip gives the body almost no step (experiments/deep-candidates/NOTES.md).
    """

    def __init__(self, params: Any, *, trust: float, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.trust = trust

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        layers = [p for group in self.param_groups for p in group["params"] if p.grad is not None and p.ndim >= 2]
        if layers:
            weights = torch._foreach_norm(layers)
            grads = torch._foreach_norm([p.grad for p in layers])
            for p, w, g in zip(layers, weights, grads):
                ratio = torch.where((w > 0) & (g > 0), self.trust * w / g, torch.ones_like(w))  # 0/0 is never picked
                p.grad.mul_(ratio)
        return super().step(closure)


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer for ``model`` at rate ``lr``: ``config.optimizer``, Nesterov
    momentum 0.9, weight decay off for biases and normalisation parameters."""
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "lars":
        return LayerwiseSGD(groups, trust=config.trust, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)


# -- divergence -----------------------------------------------------------------------

LOSS_GROWTH = 10.0  # a held-out loss this many times its start means the run blew up
CHANCE_SIGMAS = 2.0  # binomial standard errors above chance that a top-1 must clear
PLATEAU = 0.95  # a final training loss above this fraction of ln(classes): never started to learn
NEVER_LEARNED = "it never started to learn"   # how a divergence reason says so


def chance_threshold(num_classes: int, n_val: int) -> float:
    """The top-1 a run must exceed to count as having learned anything.

    Chance p = 1 / num_classes plus ``CHANCE_SIGMAS`` binomial standard errors of a
    held-out count of ``n_val``: sqrt(p (1 - p) / n_val).  A guesser clears it only about
    2% of the time (normal approximation).
    """
    if num_classes < 2 or n_val < 1:
        raise ValueError(f"need >= 2 classes and >= 1 held-out image (got {num_classes}, {n_val})")
    p = 1 / num_classes
    return p + CHANCE_SIGMAS * math.sqrt(p * (1 - p) / n_val)


def divergence(top1: float, loss: float, train_loss: float, num_classes: int, n_val: int) -> str:
    """Why a finished run is not healthy, or "" when it is.

    In order: a non-finite training or held-out loss (or top-1); a held-out cross-entropy
    above ``LOSS_GROWTH`` times its start, ln(num_classes), the loss of a uniform guess;
    a top-1 not above ``chance_threshold`` (chance plus two binomial standard errors),
    which names the plateau when the training loss too stayed near ln(num_classes).
    """
    if not math.isfinite(train_loss):
        return "non-finite training loss"
    if not (math.isfinite(loss) and math.isfinite(top1)):
        return "non-finite held-out loss"
    if num_classes < 2:  # nothing to learn, nothing to compare with
        return ""
    start = math.log(num_classes)
    if loss > LOSS_GROWTH * start:
        return f"held-out loss {loss:,.4g} is {loss / start:,.0f}x its start ln({num_classes}) = {start:.2f}"
    threshold = chance_threshold(num_classes, n_val)
    if top1 <= threshold:
        why = (f"top-1 {top1:.1%} is at chance (1/{num_classes} = {1 / num_classes:.1%}, {n_val} images; "
               f"needs > {threshold:.1%})")
        if train_loss >= PLATEAU * start:
            why += (f"; its training loss {train_loss:.3f} never left ln({num_classes}) = {start:.2f}, "
                    f"a uniform guess: {NEVER_LEARNED} (too few steps for this network?)")
        return why
    return ""


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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only: decaying biases and norm scales
    only fights the normalisation and hurts short runs."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


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

PRECISIONS = ("auto", "fp32", "bf16")
LAYOUTS = ("auto", "contiguous", "channels_last")


@dataclass(frozen=True)
class StepForm:
    """How a training step runs: ``precision`` "fp32" or "bf16" and ``layout`` "contiguous" or
    "channels_last" (the memory format of the weights and the inputs).

    bf16 is the forward pass under bfloat16 autocast (convolutions and linear layers take bf16
    inputs) with every batch norm fed fp32 (``applied``), so the statistics, the normalised
    activations and the residual sums stay fp32; weights, gradients and the optimizer are fp32.
    With batch norm in bf16 too, 2 of the demo's 6 trials (2 seeds x 3 candidates) fell from
    32-36% to 20-23% top-1, their training loss stuck 0.3 above the fp32 runs'; with it in fp32
    both trained as in fp32 (docs/performance.md).
    """

    precision: str
    layout: str

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.layout == "channels_last" else torch.contiguous_format

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """While inside, ``model``'s batch norms take fp32 inputs when the form is bf16 (forward
        pre-hooks, removed on the way out); an fp32 form changes nothing."""
        handles = [m.register_forward_pre_hook(_fp32_input) for m in model.modules()
                   if self.precision == "bf16" and isinstance(m, nn.modules.batchnorm._BatchNorm)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __str__(self) -> str:
        return f"{self.precision} {self.layout.replace('_', '-')}"


def _fp32_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].float(), *args[1:])


def step_form(model: nn.Module, device: torch.device, precision: str = "auto", layout: str = "auto") -> StepForm:
    """The form of the step for ``model`` on ``device``: ``precision`` and ``layout`` as
    given, each "auto" one by the rule measured on every base (docs/performance.md).

    On CUDA: bf16 and channels-last.  On a CPU, the rule splits networks by whether they
    have grouped (depthwise) convolutions, the one structural feature that reversed the
    ranking of the forms in the measurements: oneDNN runs depthwise convolutions about
    twice as fast channels-last, and its bf16 depthwise kernels are slower than fp32 ones,
    so those networks (MobileNetV2, EfficientNet) train in fp32 channels-last; dense
    networks (the ResNets) in bf16 where the CPU has native bf16 instructions
    (``cpu_has_bf16``), channels-last, else in fp32 contiguous.  The rule depends only on
    the network and the machine, so the same command repeats exactly on the same machine.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    device = torch.device(device)
    grouped = has_grouped_convolutions(model)
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16"
        else:
            precision = "bf16" if not grouped and cpu_has_bf16() else "fp32"
    if layout == "auto":
        if device.type == "cuda" or grouped:
            layout = "channels_last"
        else:
            layout = "channels_last" if precision == "bf16" else "contiguous"
    return StepForm(precision, layout)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 or AMX), where bf16 autocast
    pays; oneDNN emulates it on older AVX-512 CPUs, slower than fp32."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False  # no way to tell native from emulated: stay with fp32
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_grouped_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` has a grouped (depthwise) convolution: what splits the step-form rule."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())


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
