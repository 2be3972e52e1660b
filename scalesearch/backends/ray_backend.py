"""The Ray Tune backend: one Tune trial per study trial, on this machine or a Ray cluster.

A user who outgrows one machine runs ``ray start --head`` there, ``ray start
--address=HEAD:6379`` on the others, and adds ``--backend ray --address HEAD:6379``.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Sequence

from ..errors import UserError
from ..settings import BackendSettings
from ..study import FAIL, PRUNED, OnRow, RunDir, TrialContext, TrialRow, TrialSpec


def _trainable(config: dict[str, Any], trials: dict[str, TrialSpec], context: TrialContext,
               data_seed: int) -> None:
    """Runs in a Ray worker: train one trial, reporting top-1 after every epoch."""
    from ray import tune

    from ..trial import execute

    row = execute(trials[config["trial"]], context, data_seed, "ray",
                  report=lambda step, top1: tune.report({"top1": top1, "step": step, "final": False}))
    tune.report({"row": row.as_dict(), "top1": row.top1, "final": True})


def _collector(tune):  # noqa: ANN001, ANN202 - ray.tune, imported late
    class Collect(tune.Callback):
        """Hands each finished trial's row to the run directory as it ends (in the driver)."""

        def __init__(self, on_row: OnRow, by_id: dict[str, TrialSpec]) -> None:
            self.on_row, self.by_id = on_row, by_id

        def __getstate__(self) -> dict:
            return {}  # Ray pickles callbacks with the tuner state; the writer stays in the driver

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001 - Ray's signature
            result = trial.last_result or {}
            if result.get("final"):
                self.on_row(TrialRow.from_row(result["row"]))
            else:  # stopped early by ASHA: the trial's own seconds, not the search's
                self.on_row(TrialRow.of(self.by_id[trial.config["trial"]], PRUNED, "ray", top1=result.get("top1"),
                                        seconds=result.get("time_total_s")))

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            result = trial.last_result or {}
            self.on_row(TrialRow.of(self.by_id[trial.config["trial"]], FAIL, "ray",
                                    seconds=result.get("time_total_s")))

    return Collect


CONNECT_TIMEOUT_S = 10.0


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``[ray://]HOST:PORT`` address; None for 'auto' and 'local'."""
    if address in ("auto", "local"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host.strip("[]"), int(port)  # settings have checked the form


class RayBackend:
    name = "ray"

    def __init__(self, settings: BackendSettings, data_seed: int = 0) -> None:
        self.settings, self.data_seed = settings, data_seed

    def check(self) -> None:
        """Before anything is written: is anything listening at ``--address``?  (Resources are
        checked against the cluster once connected.)  Ray itself would retry for ever."""
        if self.settings.address is None:
            return
        endpoint = ray_endpoint(self.settings.address)
        if endpoint is None:
            return  # 'auto' / 'local': Ray finds or starts the cluster itself
        host, port = endpoint
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            why = (f"no answer within {CONNECT_TIMEOUT_S:g} s" if isinstance(exc, socket.timeout)
                   else (exc.strerror or str(exc) or type(exc).__name__).lower())
            raise UserError(f"cannot reach the Ray cluster at --address '{self.settings.address}' ({why}): "
                            f"start it there with `ray start --head --port {port}`, or check HOST:PORT") from None

    def run(self, todo: Sequence[TrialSpec], space: Sequence[str], run: RunDir, context: TrialContext,
            on_row: OnRow) -> None:
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        settings = self.settings
        try:
            ray.init(address=settings.address, log_to_driver=False, ignore_reinit_error=True,
                     include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot join the Ray cluster at --address '{settings.address}': {first}") from None
        try:
            cluster = ray.cluster_resources()
            if settings.cpus_per_trial > cluster.get("CPU", 0):
                raise UserError(f"--cpus-per-trial {settings.cpus_per_trial:g} is more than the cluster has "
                                f"({cluster.get('CPU', 0):g} CPUs)")
            if settings.gpus_per_trial > cluster.get("GPU", 0):
                raise UserError(f"--gpus-per-trial {settings.gpus_per_trial:g} is more than the cluster has "
                                f"({cluster.get('GPU', 0):g} GPUs)")
            if context.device.startswith("cuda") and not cluster.get("GPU", 0):
                raise UserError(f"--device {context.device}: the Ray cluster has no GPU")
            self._fit(todo, run, context, on_row, tune, ASHAScheduler)
        finally:
            ray.shutdown()

    def _fit(self, todo, run, context, on_row, tune, ASHAScheduler) -> None:  # noqa: ANN001, N803
        settings = self.settings
        by_id = {t.id: t for t in todo}
        context = TrialContext(data=context.data, device=context.device, threads=context.threads, progress=False)

        scheduler = None
        if settings.early_stop:
            epochs = max(1, int(round(todo[0].recipe.epochs)))
            scheduler = ASHAScheduler(time_attr="training_iteration", metric="top1", mode="max",
                                      max_t=epochs + 1, grace_period=1, reduction_factor=2)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, trials=by_id, context=context, data_seed=self.data_seed),
            {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(by_id))},
            tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1),
            run_config=tune.RunConfig(name="tune", storage_path=str((run / "ray").resolve()),
                                      callbacks=[_collector(tune)(on_row, by_id)], verbose=0),
        )
        tuner.fit()
