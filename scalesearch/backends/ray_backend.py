"""The Ray Tune backend: one trial per candidate, on this machine or a Ray cluster.

A user who outgrows one machine runs ``ray start --head`` there, ``ray start
--address=HEAD:6379`` on the others, and adds ``--backend ray --address HEAD:6379``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runs import SearchSettings
from . import OnResult


def _trainable(config: dict[str, Any]) -> None:
    """Runs in a Ray worker: train one candidate, reporting top-1 after every epoch."""
    import torch
    from ray import tune

    from ..trial import run_trial

    settings = SearchSettings.from_dict(config["settings"])
    threads = max(1, int(settings.cpus_per_trial))
    torch.set_num_threads(threads)
    row = run_trial(config["candidate"], settings, threads=threads,
                    report=lambda step, top1: tune.report({"top1": top1, "step": step, "final": False}))
    tune.report({**row, "final": True})


class RayBackend:
    name = "ray"

    def run(self, todo: list[dict[str, Any]], settings: SearchSettings, out: Path, on_result: OnResult) -> None:
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        from ..trial import pruned_row

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

        backend = self.name

        class Collect(tune.Callback):
            def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001 - Ray's signature
                result = trial.last_result or {}
                cand = trial.config["candidate"]
                if result.get("final"):
                    row = {k: result.get(k) for k in result if k not in ("final", "step")}
                    on_result({**row, "state": "COMPLETE", "backend": backend})
                else:
                    on_result({**pruned_row(cand, result.get("top1"), time.time() - started), "backend": backend})

            def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
                cand = trial.config["candidate"]
                on_result({**pruned_row(cand, None, time.time() - started), "state": "FAIL", "backend": backend})

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
                                      callbacks=[Collect()], verbose=0),
        )
        try:
            tuner.fit()
        finally:
            ray.shutdown()
