"""A study: trials of scaled networks x seeds, run by a backend into one run directory.

A trial is pure data: a scaled ``NetworkSpec``, the training recipe and a seed, with a
stable id (``c12-s0``: candidate 12, seed 0).  Producers build the list (``grid`` makes the
phi = 1 candidates; a user's own code can make any other), ``run_study`` hands the trials
not yet finished to a backend and records each row as it ends.

The run directory holds one study.  Its rows have one schema (``TrialRow``), written and
read here only; every write is atomic; a lock file keeps a second process out while one
runs (the kernel releases it on any exit, a SIGKILL too).  Re-running resumes: finished
trials are never trained again.  The files a resume reads (config.json, candidates.csv,
trials.csv) are recorded with their sha256 in a manifest (``.checksums.json``) as they are
written, so a file damaged or cut short later is refused by name instead of resumed from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
import tempfile
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import UserError
from .interrupts import raise_pending_interrupt
from .spec import NetworkSpec

CONFIG = "config.json"
CANDIDATES = "candidates.csv"
TRIALS = "trials.csv"
SUMMARY = "summary.csv"
BEST = "best.json"
FAMILY = "family.csv"
STUDY = "study.db"
LOCK = ".lock"
MANIFEST = ".checksums.json"              # sha256 of the files a resume reads
CHECKED = (CONFIG, CANDIDATES, TRIALS)

COMPLETE, PRUNED, DIVERGED, FAIL = "COMPLETE", "PRUNED", "DIVERGED", "FAIL"
FINISHED = (COMPLETE, PRUNED, DIVERGED)  # a FAIL is tried again on the next run


def trial_id(candidate: int, seed: int, rung: int = 0) -> str:
    """"c7-s1": candidate 7, seed 1; a successive-halving rung above 0 adds "-r2"."""
    return f"c{candidate}-s{seed}" + (f"-r{rung}" if rung else "")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: train ``spec`` with ``recipe`` from seed ``seed``; the rest describes it."""

    candidate: int
    seed: int
    spec: NetworkSpec
    recipe: Any                       # train.TrainConfig (per-trial fields are set by the trial)
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    params: int = 0
    flops: int = 0
    flops_ratio: float = 1.0
    acts: int = 0
    rung: int = 0                     # the successive-halving rung (0: the first budget, or no halving)
    images: int | None = None         # the training images of its budget (steps x batch)

    @property
    def id(self) -> str:
        return trial_id(self.candidate, self.seed, self.rung)


@dataclass
class TrialRow:
    """One row of trials.csv: the trial, its network and what training measured."""

    trial: str
    candidate: int
    seed: int
    rung: int = 0                     # the successive-halving rung (0 without halving)
    budget: int | None = None         # training images the trial's budget allows
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    d: float | None = None
    w: float | None = None
    r: float | None = None
    resolution: int | None = None
    params: int | None = None
    flops: int | None = None
    flops_ratio: float | None = None
    acts: int | None = None
    top1: float | None = None
    loss: float | None = None
    train_loss: float | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    epochs: float | None = None
    clipped: float | None = None      # fraction of steps the gradient clip cut down
    precision: str = ""               # the step's form (train.step_form): fp32 or bf16,
    layout: str = ""                  # contiguous or channels_last ("" in rows written before)
    state: str = COMPLETE
    diverged: str = ""                # why a DIVERGED trial was marked so
    backend: str = ""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, trial: TrialSpec, state: str, backend: str, result: Any = None, **measured: Any) -> "TrialRow":
        """The row of ``trial``: the one place a row is built (every backend calls this)."""
        d, w, r = trial.spec.scale
        values = dict(trial=trial.id, candidate=trial.candidate, seed=trial.seed, rung=trial.rung,
                      budget=trial.images, alpha=trial.alpha,
                      beta=trial.beta, gamma=trial.gamma, d=d, w=w, r=r, resolution=trial.spec.resolution,
                      params=trial.params, flops=trial.flops, flops_ratio=trial.flops_ratio, acts=trial.acts,
                      state=state, backend=backend)
        if result is not None:
            for name in ("top1", "loss", "train_loss", "seconds", "images_per_second", "epochs", "clipped"):
                values[name] = getattr(result, name)
            values.update(precision=getattr(result, "precision", ""), layout=getattr(result, "layout", ""))
            reason = getattr(result, "diverged", "") or ""
            if reason and state == COMPLETE:
                values.update(state=DIVERGED, diverged=reason)
        values.update(measured)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str = TRIALS) -> "TrialRow":
        """A row read back from CSV (pandas types, NaN for empty cells) or from a backend."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = row.get(f.name)
            if isinstance(raw, float) and math.isnan(raw):
                raw = None
            values[f.name] = raw
        try:
            values["candidate"] = int(values["candidate"])
            if values["seed"] is None:  # written before seeds existed: the run's one seed
                values["seed"] = 0
            values["seed"] = int(values["seed"])
            values["rung"] = int(values["rung"] or 0)  # no rung column: written before halving existed
            values["trial"] = values["trial"] or trial_id(values["candidate"], values["seed"], values["rung"])
            for name in ("resolution", "params", "flops", "acts", "budget"):
                if values[name] is not None:
                    values[name] = int(values[name])
            for name in ("alpha", "beta", "gamma", "d", "w", "r", "flops_ratio", "top1", "loss", "train_loss",
                         "seconds", "images_per_second", "epochs", "clipped"):
                if values[name] is not None:
                    values[name] = float(values[name])
        except (TypeError, ValueError):
            raise UserError(f"{where}: a row is damaged ({dict(row)!r:.200}); move the file away to re-run "
                            f"those trials, or choose another --out") from None
        problem = _incomplete(row, values)
        if problem:
            raise UserError(f"{where}: the row of trial {values['trial']} is incomplete ({problem}), so it is no "
                            f"result; move the file away to train its trials again, or choose another --out")
        values["state"] = str(values["state"] or COMPLETE)  # no state column: written before states existed
        values["diverged"] = str(values["diverged"] or "")
        for name in ("backend", "precision", "layout"):
            values[name] = str(values[name] or "")
        return cls(**values)


STATES = (COMPLETE, PRUNED, DIVERGED, FAIL)


def _incomplete(row: dict[str, Any], values: dict[str, Any]) -> str:
    """Why a row read back is not a whole row ("" when it is): a row cut short leaves its
    last cells empty, and an empty cell is never read as a default."""
    if "state" in row and values["state"] not in STATES:
        return "no state" if values["state"] is None else f"state {values['state']!r} is not one of {', '.join(STATES)}"
    needed = ["flops"] + (["top1", "loss", "seconds"] if (values["state"] or COMPLETE) == COMPLETE else [])
    missing = [name for name in needed if name in row and values[name] is None]
    if missing:
        return f"no {', no '.join(missing)}"
    return ""


# -- the run directory ----------------------------------------------------------------------

def writable_problem(folder: Path) -> str:
    """Why nothing can be created in an existing ``folder`` ("" when it can): the permission
    bits, then a real try that leaves nothing behind (a read-only file system, or one that
    refuses even root)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "read-only file system" if _read_only_mount(folder) else "permission denied"
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".scalesearch-probe-"))
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return ""


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


class RunFileError(UserError):
    """A run file cannot be written (a read-only folder, a full disk); the message names it."""


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename: a crash never leaves half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise RunFileError(f"cannot write '{path}': {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RunFileError(f"cannot write '{path}': {exc.strerror or exc}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(columns) if columns else None).to_csv(index=False)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json_text(obj))


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    write_atomic(path, csv_text(rows, columns))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_csv(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if not path.is_file() or path.stat().st_size == 0:
        return []
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"'{path}' is damaged ({first}); move it away or choose another --out") from None
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


class RunFileDamaged(UserError):
    """A run file no longer matches the checksum recorded when it was written."""


class RunDir:
    """One study's folder: its files, its lock, and what has finished."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._manifest_lock = threading.Lock()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    def check_usable(self) -> None:
        """Refuse a path that is a file, a folder that holds something other than a run, or a
        place this process cannot write to (checked before anything is created)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out '{self.path}' exists and is not a directory")
        if self.path.is_dir() and not self.exists:
            others = [p for p in self.path.iterdir()
                      if p.name not in (LOCK, MANIFEST) and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
            if others:
                raise UserError(f"--out '{self.path}' exists, is not empty and is not a scalesearch run; "
                                f"choose another --out")
        existing = self.path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise UserError(f"--out '{self.path}' cannot be created: '{existing}' is a file")
        problem = writable_problem(existing)
        if problem:
            inside = "" if existing == self.path else f"'{existing}': "
            raise UserError(f"--out '{self.path}' is not writable ({inside}{problem}): choose another --out")

    def read_config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            return data
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"'{path}' is damaged (not a JSON object): restore it, or use another run "
                            f"folder") from None
        except OSError as exc:
            raise UserError(f"cannot read '{path}': {exc.strerror or exc}") from None

    def open_to_read(self, names: Iterable[str]) -> dict[str, Any]:
        """For a command that reads a run folder and changes nothing in it (plot, curves,
        export): refuse one whose ``names`` no longer match their checksums, as a resume
        would; returns config.json ({} for a folder without one)."""
        self.verify(names)
        return self.read_config() if self.exists else {}

    def check_writable(self, what: str) -> None:
        """Refuse before any work when ``what`` cannot be written into this folder."""
        problem = writable_problem(self.path)
        if problem:
            raise RunFileError(f"cannot write {what} into '{self.path}' ({problem})")

    def create_and_lock(self) -> None:
        """Make the folder and take its lock, or refuse naming the process that holds it."""
        import fcntl

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFileError(f"--out '{self.path}' cannot be written ({exc.strerror or exc}): "
                               f"choose another --out") from None
        for attempt in range(5):  # a moment's grace for another process's check_free (a shared lock)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt == 4:
                    holder = _lock_holder(fd)
                    os.close(fd)
                    raise self._in_use(holder) from None
                import time

                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        for leftover in self.path.glob(".*.tmp"):  # half-written files of a killed run
            leftover.unlink(missing_ok=True)

    def _in_use(self, holder: str) -> UserError:
        return UserError(f"--out '{self.path}' is in use by another scalesearch process (pid {holder}); "
                         f"wait for it to finish or choose another --out")

    def check_free(self) -> None:
        """Refuse, naming its pid, when another process holds this run's lock (takes nothing)."""
        import fcntl

        if self._lock_fd is not None or not (self.path / LOCK).is_file():
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return  # create_and_lock reports an unreadable lock
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise self._in_use(_lock_holder(fd)) from None
        finally:
            os.close(fd)  # closing releases a shared lock taken here

    # -- files recorded with their checksums (what a resume reads) ----------------------------

    def _read_manifest(self) -> dict[str, list[str]]:
        path = self.path / MANIFEST
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not (isinstance(data, dict) and all(isinstance(v, list) for v in data.values())):
                raise ValueError("not a mapping of lists")
            return data
        except (ValueError, UnicodeDecodeError, OSError):
            raise RunFileDamaged(f"'{path}' (the checksums of this run's files) is damaged; move it away to "
                                 f"resume without the check, or choose another --out") from None

    def write_checked(self, name: str, text: str) -> None:
        """Write a run file atomically and record its sha256 in the manifest.

        The new checksum is added before the file is replaced and the old one dropped after,
        so a kill at any point leaves a file the manifest accepts.
        """
        path = self.path / name
        new = _sha256(text.encode("utf-8"))
        with self._manifest_lock:
            manifest = self._read_manifest()
            current = [_sha256(path.read_bytes())] if path.is_file() else []
            write_atomic(self.path / MANIFEST, json_text({**manifest, name: [*current, new]}))
            write_atomic(path, text)
            write_atomic(self.path / MANIFEST, json_text({**manifest, name: [new]}))

    def write_run_json(self, name: str, obj: Any) -> None:
        self.write_checked(name, json_text(obj))

    def write_run_csv(self, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        self.write_checked(name, csv_text(rows, columns))

    def verify(self, names: Iterable[str] = CHECKED) -> None:
        """Refuse a recorded file whose contents no longer match its checksum (a file moved
        away is the user's word: not checked).  Runs written before the manifest pass.

        A resume checks the files it reads (``CHECKED``); every other reader of a run folder
        (plot, curves, export, a report) checks the files it reads the same way."""
        manifest = self._read_manifest()
        for name in names:
            path = self.path / name
            accepted = manifest.get(name)
            if not accepted or not path.is_file():
                continue
            try:
                digest = _sha256(path.read_bytes())
            except OSError as exc:
                raise UserError(f"cannot read '{path}': {exc.strerror or exc}") from None
            if digest not in accepted:
                raise RunFileDamaged(f"'{path}' is damaged: it no longer matches the checksum recorded when it "
                                     f"was written; {_REMEDY.get(name, _REWRITE)}")

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def trials(self) -> dict[str, TrialRow]:
        rows = [TrialRow.from_row(r, str(self.path / TRIALS)) for r in read_csv(self.path / TRIALS)]
        return {r.trial: r for r in rows}

    def finished(self) -> dict[str, TrialRow]:
        return {k: r for k, r in self.trials().items() if r.state in FINISHED}

    def write_trials(self, rows: Iterable[TrialRow]) -> None:
        self.write_run_csv(TRIALS, [r.as_dict() for r in rows], TrialRow.columns())


_REWRITE = ("it is written from trials.csv at the end of a run: re-run the same command to write it again "
            "(finished trials are not trained again)")
_REMEDY = {
    CONFIG: "restore it, or choose another --out (its finished trials are listed in trials.csv)",
    CANDIDATES: "move it away to measure the candidates again (the same settings give the same table), "
                "or choose another --out",
    TRIALS: "move it away to train its trials again, or choose another --out",
}


def _lock_holder(fd: int) -> str:
    """The pid written in a lock file (the holder writes it just after locking: wait a moment)."""
    import time

    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


# -- running a study ------------------------------------------------------------------------

OnRow = Callable[[TrialRow], None]


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study needs besides its own spec: where data and compute are."""

    data: Any                 # settings.DataSettings
    device: str = "auto"
    threads: int | None = None
    progress: bool = False


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


# -- seeds: one summary per candidate -------------------------------------------------------

@dataclass
class Summary:
    """A candidate's trials over its seeds.  Ranked only when every seed trained healthily."""

    candidate: int
    n: int
    top1_mean: float | None
    top1_std: float | None    # sample standard deviation over seeds (None for one seed)
    loss_mean: float | None
    diverged: int
    pruned: int
    rows: list[TrialRow]
    rung: int = 0             # the rung its rows come from: its highest (0 without halving)

    @property
    def ranked(self) -> bool:
        return self.n > 0 and self.diverged == 0 and self.pruned == 0

    def as_dict(self) -> dict[str, Any]:
        first = self.rows[0]
        return dict(candidate=self.candidate, alpha=first.alpha, beta=first.beta, gamma=first.gamma,
                    d=first.d, w=first.w, r=first.r, resolution=first.resolution, params=first.params,
                    flops=first.flops, flops_ratio=first.flops_ratio, acts=first.acts, n=self.n,
                    top1_mean=self.top1_mean, top1_std=self.top1_std, loss_mean=self.loss_mean,
                    diverged=self.diverged, pruned=self.pruned, seeds=" ".join(str(r.seed) for r in self.rows),
                    rung=self.rung, budget=first.budget)


SUMMARY_COLUMNS = ["candidate", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "params", "flops",
                   "flops_ratio", "acts", "n", "top1_mean", "top1_std", "loss_mean", "diverged", "pruned", "seeds",
                   "rung", "budget"]


def summarize(rows: Iterable[TrialRow]) -> list[Summary]:
    """Group finished rows by candidate; ranked summaries first, best mean top-1 first.

    Under successive halving a candidate is summarised by its highest rung's rows, and
    candidates that reached a higher rung rank above those dropped earlier (at a smaller
    budget): the ranking is the top rung's, then the rung below's, and so on.
    """
    groups: dict[int, list[TrialRow]] = {}
    for row in rows:
        if row.state in FINISHED:
            groups.setdefault(row.candidate, []).append(row)
    out = []
    for cid, group in groups.items():
        top = max(r.rung for r in group)
        group = sorted((r for r in group if r.rung == top), key=lambda r: r.seed)
        scores = [r.top1 for r in group if r.state == COMPLETE and r.top1 is not None]
        losses = [r.loss for r in group if r.state == COMPLETE and r.loss is not None]
        out.append(Summary(
            candidate=cid, n=len(scores),
            top1_mean=statistics.fmean(scores) if scores else None,
            top1_std=statistics.stdev(scores) if len(scores) > 1 else None,
            loss_mean=statistics.fmean(losses) if losses else None,
            diverged=sum(r.state == DIVERGED for r in group), pruned=sum(r.state == PRUNED for r in group),
            rows=group, rung=top))
    return sorted(out, key=lambda s: (not s.ranked, -s.rung, -(s.top1_mean if s.top1_mean is not None else -1),
                                      s.rows[0].flops or 0, s.candidate))


def comparable(summaries: Sequence[Summary]) -> list[Summary]:
    """The ranked summaries that can be compared with the best: those of its rung (its budget)."""
    ranked = [s for s in summaries if s.ranked]
    return [s for s in ranked if s.rung == ranked[0].rung] if ranked else []


@dataclass(frozen=True)
class Verdict:
    """How the best candidate compares with another (the runner-up), over seeds.

    ``spread`` is what a gap is judged against: the pooled seed-to-seed standard deviation
    (``seed_spread``) combined with the held-out set's binomial error (``binomial``), since
    every seed is scored on the same images and a held-out set of n images measures a top-1
    of p only to about sqrt(p (1 - p) / n) (2.1 points at 35% and 500 images).
    """

    best: int
    runner_up: int | None
    gap: float | None         # difference of mean top-1
    spread: float | None      # sqrt(seed_spread^2 + binomial^2); None when the seed spread is unknown
    separable: bool | None    # |gap| > 2 * spread; None when it cannot be told
    other: str = "runner-up"
    seed_spread: float | None = None
    binomial: float | None = None
    n_val: int | None = None

    @property
    def text(self) -> str:
        if self.runner_up is None:
            return "one candidate ranked: nothing to compare it with"
        if self.spread is None:
            return (f"best vs {self.other}: {100 * self.gap:+.2f} points; one seed each, so the seed-to-seed "
                    f"spread is unknown: run with --seeds 2 or more to tell a real gap from noise")
        word = "separable" if self.separable else "within noise"
        parts = (f" (seeds {100 * self.seed_spread:.2f}, held-out binomial {100 * self.binomial:.2f} at "
                 f"{self.n_val:,} images)" if self.binomial is not None and self.seed_spread is not None else
                 " seed-to-seed")
        return (f"best vs {self.other} (candidate {self.runner_up}): {100 * self.gap:+.2f} points, spread "
                f"{100 * self.spread:.2f} points{parts}: {word} (separable means a gap above twice the spread)")


def pooled_spread(a: Summary, b: Summary) -> float | None:
    """Pooled sample standard deviation of two candidates' top-1 over their seeds."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.top1_std ** 2, b.top1_std ** 2  # type: ignore[operator]
    return math.sqrt(((a.n - 1) * va + (b.n - 1) * vb) / (a.n + b.n - 2))


def binomial_error(top1: float, n_val: int) -> float:
    """Standard error of a top-1 measured on ``n_val`` held-out images: sqrt(p (1 - p) / n)."""
    p = min(max(top1, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n_val)


def compare(best: Summary, other: Summary | None, label: str = "runner-up", n_val: int | None = None) -> Verdict:
    """Best against ``other``; with ``n_val`` (held-out images) the spread adds their binomial error."""
    if other is None:
        return Verdict(best.candidate, None, None, None, None, label)
    gap = best.top1_mean - other.top1_mean  # type: ignore[operator]
    seeds = pooled_spread(best, other)
    binomial = (binomial_error((best.top1_mean + other.top1_mean) / 2, n_val)  # type: ignore[operator]
                if n_val else None)
    spread = None if seeds is None else math.sqrt(seeds ** 2 + (binomial or 0.0) ** 2)
    # Separable either way: a comparison that is not best against runner-up can be a loss.
    return Verdict(best.candidate, other.candidate, gap, spread, None if spread is None else abs(gap) > 2 * spread,
                   label, seeds, binomial, n_val)


def verdict(summaries: Sequence[Summary], n_val: int | None = None) -> Verdict | None:
    """Best against runner-up among the ranked summaries of the best's rung (None when nothing
    is ranked)."""
    ranked = comparable(summaries)
    if not ranked:
        return None
    return compare(ranked[0], ranked[1] if len(ranked) > 1 else None, n_val=n_val)


def ties(summaries: Sequence[Summary], n_val: int | None = None) -> list[Verdict]:
    """Every ranked candidate the best cannot be told from (within twice the spread): a tie.
    Empty when the spread is unknown (one seed): then nothing can be called either way."""
    ranked = comparable(summaries)
    found = [compare(ranked[0], other, n_val=n_val) for other in ranked[1:]]
    return [v for v in found if v.separable is False]
