"""A backend that trains nothing: each trial scores a fixed function of its FLOPs and seed.

For testing the study machinery in-process and in milliseconds (resume, seeds, ranking,
divergence marking).  Not offered on the command line: its numbers mean nothing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..rows import COMPLETE, FAIL, OnRow, TrialContext, TrialRow, TrialSpec
from ..rundir import RunDir


@dataclass
class FakeResult:
    top1: float
    loss: float
    train_loss: float
    seconds: float = 0.01
    images_per_second: float = 1000.0
    epochs: float | None = None
    clipped: float = 0.0
    diverged: str = ""


def default_score(trial: TrialSpec) -> float:
    """A smooth function of the network's FLOPs and alpha plus seed noise of about 1 point."""
    noise = random.Random(f"{trial.candidate}-{trial.seed}").gauss(0, 0.01)
    return 0.5 + 0.05 * math.log(max(trial.flops_ratio, 1e-9)) - 0.02 * ((trial.alpha or 1) - 1) + noise


@dataclass
class FakeBackend:
    trains = False                                    # the step's form is taken by the rule, untimed
    name: str = "fake"
    score: Callable[[TrialSpec], float] = default_score
    diverge: set[str] = field(default_factory=set)   # trial ids to mark DIVERGED
    fail: set[str] = field(default_factory=set)      # trial ids that raise
    stop_after: int | None = None                    # raise KeyboardInterrupt after this many trials
    ran: list[str] = field(default_factory=list)

    def check(self) -> None:
        pass

    def run(self, todo: Sequence[TrialSpec], space: Sequence[str], run: RunDir, context: TrialContext,
            on_row: OnRow) -> None:
        for trial in todo:
            if self.stop_after is not None and len(self.ran) >= self.stop_after:
                raise KeyboardInterrupt
            self.ran.append(trial.id)
            if trial.id in self.fail:
                on_row(TrialRow.of(trial, FAIL, self.name))
                continue
            top1 = self.score(trial)
            result = FakeResult(top1=top1, loss=2.0 - top1, train_loss=2.1 - top1, epochs=trial.recipe.epochs,
                                diverged="held-out loss grew 1000x (forced)" if trial.id in self.diverge else "")
            on_row(TrialRow.of(trial, COMPLETE, self.name, result))
