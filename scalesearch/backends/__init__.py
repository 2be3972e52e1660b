"""One search abstraction, several backends: each trains a list of candidates and hands
back one trials.csv row per finished trial, as it finishes.

* ``optuna``: an Optuna study in SQLite inside the run directory (resumable, opens in
  optuna-dashboard), trials in this process, MedianPruner for early stopping.
* ``ray``: Ray Tune, one trial per candidate with configurable resources, on this
  machine or on a cluster (``--address``), ASHA for early stopping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import UserError
from ..runs import SearchSettings

OnResult = Callable[[dict[str, Any]], None]


class Backend(Protocol):
    name: str

    def run(self, todo: list[dict[str, Any]], space: list[int], settings: SearchSettings, out: Path,
            on_result: OnResult) -> None:
        """Train every candidate of ``todo``; call ``on_result(row)`` as each trial ends.

        ``space`` is every candidate id of the search (finished ones too): the same on every
        resume of a run, so a backend's stored search space stays valid.
        """


BACKENDS = ("optuna", "ray")


def get_backend(name: str) -> Backend:
    if name == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend()
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend()
    raise UserError(f"unknown backend '{name}'; valid backends: {', '.join(BACKENDS)}")
