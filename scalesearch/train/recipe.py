"""The short-training recipe as data: every default in one place, no torch.

``TrainConfig`` is what a trial trains with (settings.py reads and writes it beside the other
settings); ``TrainResult`` is what a trial gives back; ``planned_steps`` is the budget in steps.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..net.blocks import RESIDUAL_INITS

OPTIMIZERS = ("sgd", "lars")
PRECISIONS = ("auto", "fp32", "bf16")
LAYOUTS = ("auto", "contiguous", "channels_last")


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
    1/sqrt(L) for L residual blocks (``net.blocks.RESIDUAL_INITS``).  ``train_candidate`` trains
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
            ("clip_norm", False, True, lambda v: v > 0, "must be > 0 (or null: no clipping)"),
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
    ran on (``machine.machine_label``: CPU model and instruction set, threads; or the GPU).
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
