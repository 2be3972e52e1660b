"""The row schema: a trial as pure data (``TrialSpec``) and one row of trials.csv (``TrialRow``).

A trial is a scaled ``NetworkSpec``, the training recipe and a seed, with a stable id
(``c12-s0``: candidate 12, seed 0; ``c12-s0-r1`` at successive-halving rung 1).  Rows are
built in one place (``TrialRow.of``, which every backend calls) and read back in one place
(``TrialRow.from_row``, which refuses a damaged or cut-short row by name).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, fields
from typing import Any, Callable

from ..errors import UserError
from ..net.spec import NetworkSpec

TRIALS = "trials.csv"

class TrialState(str, enum.Enum):
    """The state of a trial, as trials.csv writes it (a member equals its text)."""

    COMPLETE = "COMPLETE"   # trained; its top-1 counts
    PRUNED = "PRUNED"       # stopped early by the backend's pruner
    DIVERGED = "DIVERGED"   # trained, but not healthy (``train.health.divergence``): never ranked
    FAIL = "FAIL"           # the trial raised; tried again on the next run

    def __str__(self) -> str:
        return self.value


COMPLETE, PRUNED, DIVERGED, FAIL = TrialState.COMPLETE, TrialState.PRUNED, TrialState.DIVERGED, TrialState.FAIL
FINISHED = (COMPLETE, PRUNED, DIVERGED)  # a FAIL is tried again on the next run


def trial_id(candidate: int, seed: int, rung: int = 0) -> str:
    """"c7-s1": candidate 7, seed 1; a successive-halving rung above 0 adds "-r2"."""
    return f"c{candidate}-s{seed}" + (f"-r{rung}" if rung else "")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: train ``spec`` with ``recipe`` from seed ``seed``; the rest describes it."""

    candidate: int
    seed: int
    spec: NetworkSpec
    recipe: Any                       # train.recipe.TrainConfig (per-trial fields are set by the trial)
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    params: int = 0
    flops: int = 0
    flops_ratio: float = 1.0
    acts: int = 0
    rung: int = 0                     # the successive-halving rung (0: the first budget, or no halving)
    images: int | None = None         # the training images of its budget (steps x batch)

    @property
    def id(self) -> str:
        return trial_id(self.candidate, self.seed, self.rung)


@dataclass
class TrialRow:
    """One row of trials.csv: the trial, its network and what training measured."""

    trial: str
    candidate: int
    seed: int
    rung: int = 0                     # the successive-halving rung (0 without halving)
    budget: int | None = None         # training images the trial's budget allows
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    d: float | None = None
    w: float | None = None
    r: float | None = None
    resolution: int | None = None
    params: int | None = None
    flops: int | None = None
    flops_ratio: float | None = None
    acts: int | None = None
    top1: float | None = None
    loss: float | None = None
    train_loss: float | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    epochs: float | None = None
    clipped: float | None = None      # fraction of steps the gradient clip cut down
    precision: str = ""               # the step's form (train/step_form.py): fp32 or bf16,
    layout: str = ""                  # contiguous or channels_last ("" in rows written before)
    machine: str = ""                 # what it trained on (train.machine.machine_label; "" in rows written before)
    state: str = COMPLETE
    diverged: str = ""                # why a DIVERGED trial was marked so
    backend: str = ""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, trial: TrialSpec, state: str, backend: str, result: Any = None, **measured: Any) -> "TrialRow":
        """The row of ``trial``: the one place a row is built (every backend calls this)."""
        d, w, r = trial.spec.scale
        values = dict(trial=trial.id, candidate=trial.candidate, seed=trial.seed, rung=trial.rung,
                      budget=trial.images, alpha=trial.alpha,
                      beta=trial.beta, gamma=trial.gamma, d=d, w=w, r=r, resolution=trial.spec.resolution,
                      params=trial.params, flops=trial.flops, flops_ratio=trial.flops_ratio, acts=trial.acts,
                      state=state, backend=backend)
        if result is not None:
            for name in ("top1", "loss", "train_loss", "seconds", "images_per_second", "epochs", "clipped"):
                values[name] = getattr(result, name)
            values.update(precision=getattr(result, "precision", ""), layout=getattr(result, "layout", ""),
                          machine=getattr(result, "machine", ""))
            reason = getattr(result, "diverged", "") or ""
            if reason and state == COMPLETE:
                values.update(state=DIVERGED, diverged=reason)
        values.update(measured)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str = TRIALS) -> "TrialRow":
        """A row read back from CSV (pandas types, NaN for empty cells) or from a backend."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = row.get(f.name)
            if isinstance(raw, float) and math.isnan(raw):
                raw = None
            values[f.name] = raw
        try:
            values["candidate"] = _whole(values["candidate"])
            if values["seed"] is None:  # written before seeds existed: the run's one seed
                values["seed"] = 0
            values["seed"] = _whole(values["seed"])
            values["rung"] = _whole(values["rung"] or 0)  # no rung column: written before halving existed
            expected = trial_id(values["candidate"], values["seed"], values["rung"])
            given, values["trial"] = values["trial"], expected
            for name in ("resolution", "params", "flops", "acts", "budget"):
                if values[name] is not None:
                    values[name] = _whole(values[name])
            for name in ("alpha", "beta", "gamma", "d", "w", "r", "flops_ratio", "top1", "loss", "train_loss",
                         "seconds", "images_per_second", "epochs", "clipped"):
                if values[name] is not None:
                    values[name] = float(values[name])
        except (TypeError, ValueError):
            raise UserError(f"{where}: a row is damaged ({dict(row)!r:.200}); move the file away to re-run "
                            f"those trials, or choose another --out") from None
        if given is not None and str(given) != expected:
            raise UserError(f"{where}: the row of trial {given!r} is candidate {values['candidate']}, seed "
                            f"{values['seed']}, rung {values['rung']}, whose id is {expected}: the row was changed; "
                            f"restore the file, or move it away to train its trials again")
        problem = _incomplete(row, values)
        if problem:
            raise UserError(f"{where}: the row of trial {values['trial']} is incomplete ({problem}), so it is no "
                            f"result; move the file away to train its trials again, or choose another --out")
        nonsense = _out_of_range(values)
        if nonsense:
            raise UserError(f"{where}: the row of trial {values['trial']} has {nonsense}, which no run writes; "
                            f"restore the file, or move it away to train its trials again")
        values["state"] = str(values["state"] or COMPLETE)  # no state column: written before states existed
        values["diverged"] = str(values["diverged"] or "")
        for name in ("backend", "precision", "layout", "machine"):
            values[name] = str(values[name] or "")
        return cls(**values)


STATES = (COMPLETE, PRUNED, DIVERGED, FAIL)


# (field, the check, what it must be) for the values a run writes; None always passes.
_RANGES = (
    ("candidate", lambda v: v >= 0, "a candidate id >= 0"),
    ("seed", lambda v: v >= 0, "a seed >= 0"),
    ("rung", lambda v: v >= 0, "a rung >= 0"),
    ("budget", lambda v: v > 0, "a positive number of images"),
    ("resolution", lambda v: v > 0, "a positive resolution"),
    ("params", lambda v: v > 0, "a positive parameter count"),
    ("flops", lambda v: v > 0, "a positive FLOP count"),
    ("acts", lambda v: v >= 0, "an activation count >= 0"),
    ("alpha", lambda v: 0 < v < math.inf, "a finite coefficient > 0"),
    ("beta", lambda v: 0 < v < math.inf, "a finite coefficient > 0"),
    ("gamma", lambda v: 0 < v < math.inf, "a finite coefficient > 0"),
    ("flops_ratio", lambda v: 0 < v < math.inf, "a finite ratio > 0"),
    ("loss", lambda v: not v < 0, "a cross-entropy >= 0"),
    ("train_loss", lambda v: not v < 0, "a cross-entropy >= 0"),
    ("epochs", lambda v: 0 < v < math.inf, "a finite number of epochs > 0"),
    ("clipped", lambda v: 0 <= v <= 1, "a fraction of steps in [0, 1]"),
    ("seconds", lambda v: 0 <= v < math.inf, "a finite time >= 0"),
    ("images_per_second", lambda v: 0 <= v < math.inf, "a finite rate >= 0"),
    ("clipped", lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
)


def _whole(value: Any) -> int:
    """A count or an id read back: a whole number (64.9 is no resolution, and is not read as 64)."""
    number = float(value)
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _out_of_range(values: dict[str, Any]) -> str:
    """What in a row read back is a value no run writes ("" when nothing): a top-1 outside
    [0, 1], a count that is not positive, a non-finite number where a run writes a finite one.
    A DIVERGED or FAILed row may hold non-finite losses and top-1; a COMPLETE one may not."""
    for name, ok, what in _RANGES:
        value = values[name]
        if value is not None and not ok(value):
            return f"{name} = {value!r} (it must be {what})"
    top1 = values["top1"]
    if top1 is not None and math.isfinite(top1) and not 0 <= top1 <= 1:
        return f"top1 = {top1!r} (a top-1 accuracy is a fraction in [0, 1])"
    if (values["state"] or COMPLETE) == COMPLETE:
        for name in ("top1", "loss", "train_loss"):
            if values[name] is not None and not math.isfinite(values[name]):
                return f"{name} = {values[name]!r} in a COMPLETE row (a run marks a non-finite result DIVERGED)"
    return ""


def _incomplete(row: dict[str, Any], values: dict[str, Any]) -> str:
    """Why a row read back is not a whole row ("" when it is): a row cut short leaves its
    last cells empty, and an empty cell is never read as a default."""
    if "state" in row and values["state"] not in STATES:
        return "no state" if values["state"] is None else f"state {values['state']!r} is not one of {', '.join(STATES)}"
    # every row has its cost (acts: 0 where not counted); a reproduction's budget may be empty
    needed = ["flops", "params", "resolution", "acts"] + (["top1", "loss", "seconds"]
                                                  if (values["state"] or COMPLETE) == COMPLETE else [])
    missing = [name for name in needed if name in row and values[name] is None]
    if missing:
        return f"no {', no '.join(missing)}"
    return ""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study needs besides its own spec: where data and compute are."""

    data: Any                 # settings.DataSettings
    device: str = "auto"
    threads: int | None = None
    progress: bool = False

    @classmethod
    def of(cls, data: Any, backend: Any, progress: bool = False) -> "TrialContext":
        """The context of a run's trials from its data and backend settings.  Every trial trains
        on the same number of threads under either backend: CPU training is bit-identical only
        at equal thread counts (oneDNN's conv weight gradient splits by thread)."""
        return cls(data=data, device=backend.device, threads=max(1, int(backend.cpus_per_trial)), progress=progress)


OnRow = Callable[[TrialRow], None]   # what a backend calls with each row as its trial ends
