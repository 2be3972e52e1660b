"""One search abstraction, several backends: each runs a list of trials and hands back one
``TrialRow`` per finished trial, as it finishes (rows are built by ``TrialRow.of``).

* ``optuna``: an Optuna study in SQLite inside the run directory (resumable, opens in
  optuna-dashboard), trials in this process, MedianPruner for early stopping.
* ``ray``: Ray Tune, one trial per job with configurable resources, on this machine or on
  a cluster (``--address``), ASHA for early stopping.

A backend is built from its ``BackendSettings`` and checks them itself (``check``) before
anything is written.  Python callers may pass any object with the same ``run`` method to
``run_grid(backend=...)``; the tests use an in-process fake that trains nothing.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ...settings import BACKENDS, BackendSettings
from ..rows import OnRow, TrialContext, TrialSpec
from ..rundir import RunDir


class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Refuse settings this backend cannot honour (raise UserError), before any file is written."""

    def run(self, todo: Sequence[TrialSpec], space: Sequence[str], run: RunDir, context: TrialContext,
            on_row: OnRow) -> None:
        """Train every trial of ``todo``; call ``on_row(row)`` as each ends.

        ``space`` is every trial id of the study (finished ones too): the same on every
        resume of a run, so a backend's stored search space stays valid.
        """


def get_backend(settings: BackendSettings, data_seed: int = 0) -> Any:
    if settings.backend == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend(settings, data_seed)
    if settings.backend == "ray":
        from .ray_backend import RayBackend

        return RayBackend(settings, data_seed)
    raise ValueError(f"unknown backend {settings.backend!r}; valid: {', '.join(BACKENDS)}")  # settings check this
