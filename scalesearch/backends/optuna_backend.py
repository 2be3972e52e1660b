"""The Optuna backend: a study over the candidate list, stored in the run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..runs import STUDY, SearchSettings
from ..trial import pruned_row, run_trial
from . import OnResult


class OptunaBackend:
    name = "optuna"

    def run(self, todo: list[dict[str, Any]], space: list[int], settings: SearchSettings, out: Path,
            on_result: OnResult) -> None:
        import optuna
        from optuna.trial import TrialState
        from tqdm.auto import tqdm

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                  if settings.early_stop else optuna.pruners.NopPruner())
        study = optuna.create_study(study_name="scalesearch", storage=f"sqlite:///{(out / STUDY).resolve()}",
                                    direction="maximize", load_if_exists=True, pruner=pruner)
        # A trial that was running when the process died can never finish: mark it failed.
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        # Trials enqueued by an earlier, interrupted run are still waiting: do not queue them twice.
        queued = {t.system_attrs.get("fixed_params", {}).get("candidate")
                  for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
        for cand in todo:
            if cand["id"] not in queued:
                study.enqueue_trial({"candidate": int(cand["id"])})
        by_id = {int(c["id"]): c for c in todo}
        choices = sorted(space)
        bar = tqdm(total=len(todo), desc="search", unit="trial", position=0, dynamic_ncols=True, disable=None)
        try:
            for _ in range(len(todo)):
                trial = study.ask()
                cid = trial.suggest_categorical("candidate", choices)
                cand = by_id[cid]
                for key in ("alpha", "beta", "gamma", "resolution", "flops"):
                    trial.set_user_attr(key, cand[key])
                last: dict[str, float] = {}
                started = time.time()

                def report(step: int, top1: float) -> None:
                    last["top1"] = top1
                    trial.report(top1, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned()

                try:
                    row = run_trial(cand, settings, report=report, progress=True)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                    on_result({**pruned_row(cand, last.get("top1"), time.time() - started), "backend": self.name})
                else:
                    study.tell(trial, row["top1"])
                    on_result({**row, "backend": self.name})
                bar.update(1)
        finally:
            bar.close()
