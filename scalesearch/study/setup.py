"""A study: trials of scaled networks x seeds, run by a backend into one run folder.

Producers build the list of trials (``grid`` makes the phi = 1 candidates, ``reproduce`` the
rows of an experiment, ``halving`` one rung at a time; a user's own code can make any other)
and consume the rows.  ``run_study`` hands the trials not yet finished to a backend and
records each row as it ends; this module is also the one run setup around it (check, lock,
resume, estimate, run, rewrite).  The run folder is ``rundir.py``, the row schema ``rows.py``,
the ranking over seeds ``search/ranking.py``.

The one run setup, which every command that trains shares (grid, its rungs under
successive halving, check-proxy through grid, reproduce):

1. ``open_run``: the backend, the folder (usable, free, whole) and, when it holds a run,
   that it is the same run (``check_same``: one rule, one message);
2. ``data_classes``: the data set's classes, refused before any file when a classifier cannot
   rank on it; once the producer knows its largest trained resolution, ``with_store`` names the
   image store S and ``load_data`` opens the set (building an image folder's store);
3. the producer builds its trials and, under ``locked`` (the folder's lock, its files checked
   again), writes its own files (config.json, the candidate or model table);
4. ``run_trials``: what is finished is kept (resume), the rest is estimated and announced
   (one ``Planned`` event), then trained, the producer's tables rewritten after each trial.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import UserError

from .interrupts import raise_pending_interrupt
from .rows import FINISHED, TrialContext, TrialRow, TrialSpec
from .rundir import RunDir, RunFileDamaged

Emit = Callable[[Any], None]


@dataclass(frozen=True)
class Planned:
    """What training will cost, before it starts: the one event every producer emits."""

    units: int                    # candidates (grid) or models (reproduce)
    unit: str                     # their name on screen: "candidate(s)", "models"
    seeds: int
    trials: int
    todo: int
    seconds: float | None         # the estimate (None: not estimated)
    images_per_trial: int | None = None
    halving: str = ""             # under --fidelity halving: what each rung will train (halving.plan_text)
    models: tuple = ()            # reproduce: its rows, built and counted (shown as a table)
    cheaper: str = ""             # how to make the run cheaper (said when the estimate is long)


def verify_run(run: RunDir) -> None:
    """Refuse a run whose recorded files no longer match their checksums; a file caught
    mid-write by a process that holds the run is reported as that instead."""
    try:
        run.verify()
    except RunFileDamaged:
        run.check_free()
        raise


def check_same(run: RunDir, ours: dict[str, Any], theirs: dict[str, Any], what: str) -> None:
    """Refuse ``run`` when what decides its results (``theirs``, from its config.json) differs
    from this command's (``ours``): the first difference is named down to its leaf
    (``train.optimizer``, ``bases.resnet50.rows[2].w``)."""
    found = first_difference(json.loads(json.dumps(ours, default=str)), json.loads(json.dumps(theirs, default=str)))
    if found is not None:
        key, mine, yours = found
        raise UserError(f"--out '{run.path}' holds a different {what} ({key} = {_short(yours)} there, "
                        f"{_short(mine)} here); choose another --out to keep its results")


def first_difference(ours: Any, theirs: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first place two JSON values differ, as (path, ours, theirs); None when equal."""
    if ours == theirs:
        return None
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in list(ours) + [k for k in theirs if k not in ours]:
            found = first_difference(ours.get(key), theirs.get(key), f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
    return path, ours, theirs


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def open_run(out: str | Path, backend: Any, same: Callable[[RunDir], None]) -> RunDir:
    """Step 1: check the backend and the folder before anything is touched; a folder that holds
    a run must be free, whole and the same run (``same`` refuses another one)."""
    backend.check()
    run = RunDir(out)
    run.check_usable()
    if run.exists:
        run.check_free()
        verify_run(run)
        same(run)
    return run


def data_classes(data: Any, seed: int, progress: bool = True) -> list[str]:
    """Step 2a: the data set's class names, before anything is decoded: an image folder's from
    its listing (an unusable folder is refused here, before any file), else the opened set's."""
    from ..data import is_image_tree, list_image_tree

    if not is_image_tree(data.dataset):
        return load_data(data, seed, progress).classes
    classes, _ = list_image_tree(Path(data.dataset).expanduser())
    if len(classes) < 2:
        load_data(data, seed, progress)  # refused there, by name
    return classes


def with_store(data: Any, resolutions: Sequence[int]) -> Any:
    """``data`` naming the store S every trial of the run reads: the user's ``store_resolution``, or
    the largest of ``resolutions`` x 256/224 (docs/method.md, "The image store"), for an image
    folder; other data sets as they are."""
    from ..data import is_image_tree, store_resolution_for

    if data.store_resolution is not None or not resolutions or not is_image_tree(data.dataset):
        return data
    return dataclasses.replace(data, store_resolution=store_resolution_for(max(resolutions)))


def load_data(data: Any, seed: int, progress: bool = True) -> Any:
    """Step 2: the data set (cached per process), refused before any file is written when a
    classifier search cannot rank on it: fewer than 2 classes, or a class with no image in
    the training or the held-out split (top-1 would not measure it)."""
    from .trial import load_dataset

    dataset = load_dataset(data, seed, progress)
    classes = dataset.classes
    if len(classes) < 2:
        raise UserError(f"data set '{data.dataset}' has {len(classes)} class{'' if len(classes) == 1 else 'es'}"
                        f"{' (' + repr(classes[0]) + ')' if classes else ''}: a classifier needs at least 2 classes "
                        f"(one folder per class under train/)")
    for split, option, where in (("train", "--set data.train_subset", "training split"),
                                 ("val", "--set data.val_subset", "held-out split")):
        counts = dataset.class_counts(split)
        missing = [c for c, n in zip(classes, counts) if n == 0]
        if missing:
            subset = getattr(data, f"{split}_subset")
            fix = (f"raise {option} (at least one image per class: {len(classes)})" if subset is not None
                   and subset < len(classes) else f"add images of that class to the {where}")
            raise UserError(f"data set '{data.dataset}': the {where} has no image of class '{missing[0]}'"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                            + f", so top-1 would not measure every class; {fix}")
    return dataset


@contextmanager
def locked(run: RunDir, backend: Any = None, trials: Sequence[TrialSpec] = (), dry_run: bool = False) -> Iterator[None]:
    """Step 3: hold the folder's lock.  Before anything is written, a resumed run's files are
    checked again under it (the files resumed from are whole), and so is the backend's own
    store (Optuna's study.db) when ``trials`` are left to train."""
    resumed = run.exists
    run.create_and_lock()
    try:
        if resumed:
            verify_run(run)
        check_store = getattr(backend, "check_store", None)
        if check_store is not None and not dry_run and trials:
            finished = run.finished()
            if any(t.id not in finished for t in trials):
                check_store(run)
        yield
    finally:
        run.release()


def step_forms(run: RunDir, trials: Sequence[TrialSpec], backend_settings: Any, data: Any, n_train: int,
               backend: Any, progress: bool = False, timed: bool = True
               ) -> tuple[list[TrialSpec], dict[str, Any], dict[str, Any]]:
    """Step 3, under the lock: (the trials with each base's step form fixed, the choices, what
    config.json records: a form recorded before stays as it was written).  ``forms.fix_forms``
    times the forms on this machine, or keeps the form the run's finished trials trained in.
    Untimed (``timed`` False: a dry run, or a backend that trains nothing) a cached timing or else
    the rule decides: a dry run stays quick, and its estimate times the form the real run would
    take wherever this machine has timed it before."""
    from ..train.forms import fix_forms, recorded_forms

    finished = list(run.finished().values()) if run.exists else []
    config = run.read_config() if finished else {}  # nothing trained yet: nothing to keep
    recorded = recorded_forms(config, finished)
    context = TrialContext.of(data, backend_settings, progress)
    trials, choices = fix_forms(trials, context, n_train, recorded, timed=timed and getattr(backend, "trains", True))
    written = config.get("step_forms") if isinstance(config.get("step_forms"), dict) else {}
    return trials, choices, {name: written.get(name, choice.as_dict()) for name, choice in choices.items()}


Schedule = Callable[[Sequence[TrialSpec], Callable[[list[TrialSpec], list[TrialRow]], list[TrialRow]]], list[TrialRow]]


def run_trials(trials: Sequence[TrialSpec], run: RunDir, backend: Any, context: TrialContext, *, emit: Emit,
               planned: dict[str, Any], rewrite: Callable[[list[TrialRow]], Any], seed: int,
               dry_run: bool = False, estimate: bool = True, schedule: Schedule | None = None,
               cost_scale: float = 1.0) -> list[TrialRow] | None:
    """Step 4, under the lock: keep what is finished, estimate the rest and emit ``Planned``
    (``planned``: its producer's fields), then, unless ``dry_run`` (None), train and return
    every row.  ``rewrite(rows)`` writes the producer's tables as they stand after each trial
    (``rows``: all of the run's rows so far).  ``schedule(trials, study)`` runs the trials in
    stages (successive halving's rungs: ``study(stage_trials, rows_below)``); ``cost_scale``
    multiplies the estimate of ``trials`` to the schedule's whole cost."""
    finished = run.finished()
    todo = [t for t in trials if t.id not in finished]
    seconds = None
    if estimate and todo:
        from .trial import estimate_seconds

        seconds = cost_scale * estimate_seconds(todo, context, seed, quick=dry_run)  # a dry run: quickly
    emit(Planned(trials=len(trials), todo=len(todo), seconds=seconds, **planned))
    if dry_run:
        return None

    def study(stage: list[TrialSpec], below: list[TrialRow]) -> list[TrialRow]:
        def on_event(event: Any) -> None:
            emit(event)
            if isinstance(event, TrialFinished):
                rewrite(below + event.rows)

        return run_study(stage, run, backend, context, on_event)

    return schedule(trials, study) if schedule is not None else study(list(trials), [])


@dataclass(frozen=True)
class StudyStarted:
    """Emitted before training: how much is finished and what is left."""

    finished: int
    todo: int


@dataclass(frozen=True)
class TrialFinished:
    row: TrialRow
    done: int
    total: int
    rows: list[TrialRow]      # the study's rows so far, in trial order


def run_study(trials: Sequence[TrialSpec], run: RunDir, backend: Any, context: TrialContext,
              on_event: Callable[[Any], None] | None = None) -> list[TrialRow]:
    """Train every trial not yet finished in ``run``; return every row of the study, in trial order.

    Rows of trials.csv that belong to no trial of this study (an earlier, larger selection)
    are kept in the file.
    """
    emit = on_event or (lambda event: None)
    known = run.trials()
    finished = {k: r for k, r in known.items() if r.state in FINISHED}
    todo = [t for t in trials if t.id not in finished]
    emit(StudyStarted(finished=len(trials) - len(todo), todo=len(todo)))
    rows = dict(known)
    order = [t.id for t in trials]
    wanted = set(order)
    lock = threading.Lock()

    def on_row(row: TrialRow) -> None:
        with lock:  # Ray calls back from its own thread
            rows[row.trial] = row
            ours = [rows[k] for k in order if k in rows]
            extra = [r for k, r in rows.items() if k not in wanted]
            run.write_trials(sorted(ours + extra, key=lambda r: r.rung))  # halving's rungs in order
            done = sum(1 for r in ours if r.state in FINISHED)
            emit(TrialFinished(row=row, done=done, total=len(order), rows=ours))
        if threading.current_thread() is threading.main_thread():
            raise_pending_interrupt()  # a Ctrl-C dropped in a callback stops the study here

    if todo:
        backend.run(todo, [t.id for t in trials], run, context, on_row)
    return [rows[k] for k in order if k in rows]


__all__ = ["Planned", "StudyStarted", "TrialFinished", "check_same", "data_classes", "first_difference", "load_data",
           "locked", "open_run", "run_study", "run_trials", "step_forms", "verify_run", "with_store"]
