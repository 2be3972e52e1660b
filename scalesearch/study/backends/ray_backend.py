"""The Ray Tune backend: one Tune trial per study trial, on this machine or a Ray cluster.

A user who outgrows one machine runs ``ray start --head`` there, ``ray start
--address=HEAD:6379`` on the others, and adds ``--backend ray --address HEAD:6379``.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Sequence

from ...errors import UserError
from ...settings import BackendSettings
from ..rows import FAIL, PRUNED, OnRow, TrialContext, TrialRow, TrialSpec
from ..rundir import RunDir


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
JOIN_TIMEOUT_S = float(os.environ.get("SCALESEARCH_RAY_JOIN_TIMEOUT_S", 60))

_PROBE = """
import json, os, sys
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
import ray
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
print(json.dumps(ray.cluster_resources()))
ray.shutdown()
"""


def probe_cluster(address: str) -> dict[str, float]:
    """The resource totals of the Ray cluster at ``address``, asked in a child process that
    is stopped after JOIN_TIMEOUT_S: Ray retries an address that answers but is no Ray head
    for ever, and cannot be interrupted in this process."""
    import json
    import subprocess

    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                              timeout=JOIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"cannot join the Ray cluster at --address '{address}': no Ray head answered within "
                        f"{JOIN_TIMEOUT_S:g} s (is a Ray head running there? `ray status --address {address}`"
                        f" checks)") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 and "InvalidAuthToken" in done.stderr:
        raise UserError(f"cannot join the Ray cluster at --address '{address}': the head asks for Ray's "
                        f"authentication token; run with RAY_AUTH_MODE=token and the head's token in "
                        f"~/.ray/auth_token (or RAY_AUTH_TOKEN), or start the head with RAY_AUTH_MODE=disabled")
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.strip().splitlines() if "Error" in line or "error" in line]
        why = errors[-1].strip() if errors else f"exit {done.returncode}"
        raise UserError(f"cannot join the Ray cluster at --address '{address}': {why}")
    return json.loads(lines[-1])


def resource_problem(cluster: dict[str, float], settings: BackendSettings, where: str,
                     device: str | None = None) -> str | None:
    """Why a trial asking for ``settings``' CPUs and GPUs (on ``device``) can never be placed
    on ``cluster`` (Ray's resource totals), or None when it can."""
    cpus, gpus = cluster.get("CPU", 0), cluster.get("GPU", 0)
    if settings.cpus_per_trial > cpus:
        return f"backend.cpus_per_trial {settings.cpus_per_trial:g} is more than {where} has ({cpus:g} CPUs)"
    if settings.gpus_per_trial > gpus:
        return f"backend.gpus_per_trial {settings.gpus_per_trial:g} is more than {where} has ({gpus:g} GPUs)"
    if device is not None and device.startswith("cuda") and not gpus:
        return f"--device {device}: {where} has no GPU"
    return None


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
        """Before anything is written: is a Ray cluster listening at ``--address``, and does it
        (or this machine, when Ray will start here) have the CPUs and GPUs a trial asks for?
        Ray itself would retry a dead address for ever and wait for resources for ever."""
        if self.settings.address is None:
            import torch

            problem = resource_problem({"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()},
                                       self.settings, "this machine", self._asked_device())
            if problem:
                raise UserError(problem)
            return
        endpoint = ray_endpoint(self.settings.address)
        if endpoint is not None:  # 'auto' / 'local': Ray finds or starts the cluster itself
            host, port = endpoint
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            except OSError as exc:
                why = (f"no answer within {CONNECT_TIMEOUT_S:g} s" if isinstance(exc, socket.timeout)
                       else (exc.strerror or str(exc) or type(exc).__name__).lower())
                raise UserError(f"cannot reach the Ray cluster at --address '{self.settings.address}' ({why}): "
                                f"start it there with `ray start --head --port {port}`, or check HOST:PORT") from None
        problem = resource_problem(probe_cluster(self.settings.address), self.settings, "the cluster",
                                   self._asked_device())
        if problem:
            raise UserError(problem)

    def _asked_device(self) -> str | None:
        """The device named with --device (cuda or cuda:N), None for auto and cpu."""
        device = self.settings.device
        return device if device.startswith("cuda") else None

    def _connect(self):  # noqa: ANN202 - the ray module
        """Join (or start) the cluster that ``check`` probed; a failure is one line."""
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        if self.settings.address is None:
            # A cluster of this process alone: no token. Ray 2.60 turns token auth on for a new local
            # cluster and leaves ~/.ray/auth_token, after which a head started by `ray start` asked
            # every driver that joined it for the token (seen 2026-12-07).
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        try:
            ray.init(address=self.settings.address, log_to_driver=False, ignore_reinit_error=True,
                     include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot join the Ray cluster at --address '{self.settings.address}': {first} "
                            f"(is a Ray head running there?)") from None
        return ray

    def run(self, todo: Sequence[TrialSpec], space: Sequence[str], run: RunDir, context: TrialContext,
            on_row: OnRow) -> None:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        ray = self._connect()
        try:
            problem = resource_problem(ray.cluster_resources(), self.settings, "the cluster", context.device)
            if problem:
                raise UserError(problem)
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
