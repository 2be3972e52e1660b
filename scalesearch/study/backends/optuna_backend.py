"""The Optuna backend: a study over the trial ids, stored in the run directory.

The grid is fixed before training (step 1's candidates x seeds), so every trial is
enqueued with its id and Optuna is the study's store, its pruner and its dashboard
(``optuna-dashboard sqlite:///RUN/study.db``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Iterator, Sequence

from ...errors import UserError
from ...settings import BackendSettings
from ..rows import FAIL, PRUNED, OnRow, TrialContext, TrialRow, TrialSpec, trial_id
from ..rundir import STUDY, RunDir
from ..trial import execute


def available_cpus() -> int:
    """The machine's CPUs, as Ray counts them (so both backends refuse the same requests)."""
    return os.cpu_count() or 1


class OptunaBackend:
    name = "optuna"

    def __init__(self, settings: BackendSettings, data_seed: int = 0) -> None:
        self.settings, self.data_seed = settings, data_seed

    def check(self) -> None:
        cpus = available_cpus()
        if self.settings.cpus_per_trial > cpus:
            # Threads past the cores time-share them: each trial slows (about 2x measured at 99 on 2 cores).
            raise UserError(f"backend.cpus_per_trial {self.settings.cpus_per_trial:g} is more than this machine has "
                            f"({cpus} CPUs): each trial trains on that many threads; ask for at most {cpus}")
        if self.settings.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError(f"--device {self.settings.device}: this machine has no CUDA device "
                                f"(use --device cpu or auto)")

    def check_store(self, run: RunDir) -> None:
        """Refuse a damaged study.db before anything is written.

        Only reads, except that SQLite itself rolls back the journal of a write that a kill
        interrupted (as Optuna's own open would): that restores the file, it damages nothing.
        A database without Optuna's tables yet (killed while being created) is a new study.
        """
        path = run / STUDY
        if not path.is_file() or path.stat().st_size == 0:
            return  # none yet (an empty file is a new database to SQLite)
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError(problems[0] if problems else "no answer to a check")
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "trials" in tables:
                    db.execute("SELECT count(*) FROM trials").fetchone()
        except sqlite3.Error as exc:
            # SQLite's integrity report opens with a "*** in database main ***" header line.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("***")]
            first = lines[0] if lines else "its integrity check fails"
            raise UserError(f"'{path}' is damaged or not an Optuna study ({first}); move it away (trials.csv "
                            f"keeps the finished trials, which are not trained again), or choose another --out"
                            ) from None

    def run(self, todo: Sequence[TrialSpec], space: Sequence[str], run: RunDir, context: TrialContext,
            on_row: OnRow) -> None:
        import optuna
        from optuna.trial import TrialState
        from tqdm.auto import tqdm

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                  if self.settings.early_stop else optuna.pruners.NopPruner())
        with _store(run):
            study = optuna.create_study(study_name="scalesearch", storage=f"sqlite:///{(run / STUDY).resolve()}",
                                        direction="maximize", load_if_exists=True, pruner=pruner)
            # A trial that was running when its process died can never finish: mark it failed.
            for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study.tell(stale.number, state=TrialState.FAIL)
            # Trials enqueued by an earlier, interrupted run are still waiting: do not queue them twice.
            waiting = {_fixed_id(t.system_attrs.get("fixed_params") or {})
                       for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
            for trial in todo:
                if trial.id not in waiting:
                    study.enqueue_trial({"candidate": trial.candidate, "seed": trial.seed, "rung": trial.rung})
        by_id = {t.id: t for t in todo}
        bar = tqdm(total=len(todo), desc="search", unit="trial", position=0, dynamic_ncols=True,
                   disable=None if context.progress else True)
        try:
            while by_id:
                with _store(run):
                    handle = study.ask()
                    # Fixed integer ranges, not the study's trial ids: raising --max-trials or --seeds
                    # later extends the same study (a categorical's choices may never change).
                    tid = trial_id(handle.suggest_int("candidate", 0, ID_HIGH), handle.suggest_int("seed", 0, ID_HIGH),
                                   handle.suggest_int("rung", 0, ID_HIGH))
                    trial = by_id.pop(tid, None)
                    if trial is None:  # queued by an earlier run whose selection was larger: not wanted now
                        study.tell(handle, state=TrialState.FAIL)
                        continue
                    for key in ("alpha", "beta", "gamma", "flops"):
                        handle.set_user_attr(key, getattr(trial, key))
                started = time.time()
                last: dict[str, float] = {}

                def report(step: int, top1: float) -> None:
                    last["top1"] = top1
                    with _store(run):
                        handle.report(top1, step)
                        prune = handle.should_prune()
                    if prune:
                        raise optuna.TrialPruned()

                try:
                    row = execute(trial, context, self.data_seed, self.name, report=report)
                except optuna.TrialPruned:
                    with _store(run):
                        study.tell(handle, state=TrialState.PRUNED)
                    on_row(TrialRow.of(trial, PRUNED, self.name, top1=last.get("top1"),
                                       seconds=time.time() - started))
                except Exception:
                    with contextlib.suppress(Exception):  # the study may be what failed
                        study.tell(handle, state=TrialState.FAIL)
                    on_row(TrialRow.of(trial, FAIL, self.name, seconds=time.time() - started))
                    raise
                else:
                    with _store(run):
                        if row.diverged:
                            handle.set_user_attr("diverged", row.diverged)
                        study.tell(handle, row.top1 if row.top1 == row.top1 else None,
                                   state=TrialState.COMPLETE if row.top1 == row.top1 else TrialState.FAIL)
                    on_row(row)
                bar.update(1)
        finally:
            bar.close()


ID_HIGH = 2**32  # candidate ids and seeds are below this (settings: seed < 2^31, seeds <= 100)


def _fixed_id(fixed: dict) -> str | None:
    """The id of a trial waiting in the study, or None for one this version cannot ask for again:
    enqueued without its rung, or with the trial id itself, by an earlier version.  Such a trial
    is queued anew; the old entry, when asked, draws a rung it was never given and is dropped."""
    if "candidate" in fixed and "seed" in fixed and "rung" in fixed:
        return trial_id(int(fixed["candidate"]), int(fixed["seed"]), int(fixed["rung"]))
    return None


@contextlib.contextmanager
def _store(run: RunDir) -> Iterator[None]:
    """An error of the Optuna store (never of training) names study.db and what to do."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - sqlalchemy, sqlite and optuna errors alike
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"'{run / STUDY}' cannot be used ({type(exc).__name__}: {first}); move it away (trials.csv "
                        f"keeps the finished trials, which are not trained again), or choose another --out") from None
