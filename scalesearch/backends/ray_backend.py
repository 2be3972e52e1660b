"""The Ray Tune backend: one trial per candidate, on this machine or a Ray cluster.

A user who outgrows one machine runs ``ray start --head`` there, ``ray start
--address=HEAD:6379`` on the others, and adds ``--backend ray --address HEAD:6379``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ray import tune

from ..errors import UserError
from ..runs import SearchSettings
from . import OnResult


def _trainable(config: dict[str, Any]) -> None:
    """Runs in a Ray worker: train one candidate, reporting top-1 after every epoch."""
    import torch

    from ..trial import run_trial

    settings = SearchSettings.from_dict(config["settings"])
    threads = max(1, int(settings.cpus_per_trial))
    torch.set_num_threads(threads)
    row = run_trial(config["candidate"], settings, threads=threads,
                    report=lambda step, top1: tune.report({"top1": top1, "step": step, "final": False}))
    tune.report({**row, "final": True})


class _Collect(tune.Callback):
    """Hands each finished trial's row to the run directory as it ends (in the driver)."""

    def __init__(self, on_result: OnResult, backend: str, started: float) -> None:
        self.on_result, self.backend, self.started = on_result, backend, started

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the tuner state; the live writer stays in this process.
        return {"backend": self.backend, "started": self.started, "on_result": None}

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001 - Ray's signature
        from ..trial import pruned_row

        result = trial.last_result or {}
        if result.get("final"):
            row = {k: v for k, v in result.items() if k not in ("final", "step")}
            self.on_result({**row, "state": "COMPLETE", "backend": self.backend})
        else:  # stopped early by ASHA
            row = pruned_row(trial.config["candidate"], result.get("top1"), time.time() - self.started)
            self.on_result({**row, "backend": self.backend})

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        from ..trial import pruned_row

        row = pruned_row(trial.config["candidate"], None, time.time() - self.started)
        self.on_result({**row, "state": "FAIL", "backend": self.backend})


class RayBackend:
    name = "ray"

    def run(self, todo: list[dict[str, Any]], space: list[int], settings: SearchSettings, out: Path,
            on_result: OnResult) -> None:
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        import ray
        from ray.tune.schedulers import ASHAScheduler

        started = time.time()
        try:
            if settings.address:
                ray.init(address=settings.address, log_to_driver=False, ignore_reinit_error=True,
                         include_dashboard=False)
            else:
                ray.init(log_to_driver=False, ignore_reinit_error=True, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot join the Ray cluster at --address '{settings.address}': {first}") from None

        collect = _Collect(on_result, self.name, started)
        scheduler = None
        if settings.early_stop:
            epochs = max(1, int(round(settings.epochs)))
            scheduler = ASHAScheduler(time_attr="training_iteration", metric="top1", mode="max",
                                      max_t=epochs + 1, grace_period=1, reduction_factor=2)
        trainable = tune.with_resources(_trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space={"settings": settings.as_dict(), "candidate": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1,
                                        max_concurrent_trials=None),
            run_config=tune.RunConfig(name="tune", storage_path=str((out / "ray").resolve()),
                                      callbacks=[collect], verbose=0),
        )
        try:
            tuner.fit()
        finally:
            ray.shutdown()
