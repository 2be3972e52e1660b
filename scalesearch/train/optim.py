"""The recipe's optimizer: Nesterov SGD, or SGD with layer-wise rates (LARS)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .recipe import TrainConfig


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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only: decaying biases and norm scales
    only fights the normalisation and hurts short runs."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
