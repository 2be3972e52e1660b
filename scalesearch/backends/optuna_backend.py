"""The Optuna backend: a study over the trial ids, stored in the run directory.

The grid is fixed before training (step 1's candidates x seeds), so every trial is
enqueued with its id and Optuna is the study's store, its pruner and its dashboard
(``optuna-dashboard sqlite:///RUN/study.db``).
"""

from __future__ import annotations

import time
from typing import Sequence

from ..errors import UserError
from ..settings import BackendSettings
from ..study import FAIL, PRUNED, STUDY, OnRow, RunDir, TrialContext, TrialRow, TrialSpec
from ..trial import execute


class OptunaBackend:
    name = "optuna"

    def __init__(self, settings: BackendSettings, data_seed: int = 0) -> None:
        self.settings, self.data_seed = settings, data_seed

    def check(self) -> None:
        if self.settings.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError(f"--device {self.settings.device}: this machine has no CUDA device "
                                f"(use --device cpu or auto)")

    def run(self, todo: Sequence[TrialSpec], space: Sequence[str], run: RunDir, context: TrialContext,
            on_row: OnRow) -> None:
        import optuna
        from optuna.trial import TrialState
        from tqdm.auto import tqdm

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                  if self.settings.early_stop else optuna.pruners.NopPruner())
        study = optuna.create_study(study_name="scalesearch", storage=f"sqlite:///{(run / STUDY).resolve()}",
                                    direction="maximize", load_if_exists=True, pruner=pruner)
        # A trial that was running when its process died can never finish: mark it failed.
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(stale.number, state=TrialState.FAIL)
        # Trials enqueued by an earlier, interrupted run are still waiting: do not queue them twice.
        waiting = {t.system_attrs.get("fixed_params", {}).get("trial")
                   for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
        for trial in todo:
            if trial.id not in waiting:
                study.enqueue_trial({"trial": trial.id})
        by_id = {t.id: t for t in todo}
        choices = list(space)
        bar = tqdm(total=len(todo), desc="search", unit="trial", position=0, dynamic_ncols=True,
                   disable=None if context.progress else True)
        try:
            while by_id:
                handle = study.ask()
                tid = handle.suggest_categorical("trial", choices)
                trial = by_id.pop(tid, None)
                if trial is None:  # queued by an earlier run whose selection was larger: not wanted now
                    study.tell(handle, state=TrialState.FAIL)
                    continue
                for key in ("alpha", "beta", "gamma", "flops"):
                    handle.set_user_attr(key, getattr(trial, key))
                handle.set_user_attr("seed", trial.seed)
                started = time.time()
                last: dict[str, float] = {}

                def report(step: int, top1: float) -> None:
                    last["top1"] = top1
                    handle.report(top1, step)
                    if handle.should_prune():
                        raise optuna.TrialPruned()

                try:
                    row = execute(trial, context, self.data_seed, self.name, report=report)
                except optuna.TrialPruned:
                    study.tell(handle, state=TrialState.PRUNED)
                    on_row(TrialRow.of(trial, PRUNED, self.name, top1=last.get("top1"),
                                       seconds=time.time() - started))
                except Exception:
                    study.tell(handle, state=TrialState.FAIL)
                    on_row(TrialRow.of(trial, FAIL, self.name, seconds=time.time() - started))
                    raise
                else:
                    if row.diverged:
                        handle.set_user_attr("diverged", row.diverged)
                    study.tell(handle, row.top1 if row.top1 == row.top1 else None,
                               state=TrialState.COMPLETE if row.top1 == row.top1 else TrialState.FAIL)
                    on_row(row)
                bar.update(1)
        finally:
            bar.close()
