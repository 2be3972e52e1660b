"""The run folder: its files, their checksums, its lock, and what has finished.

One run folder holds one study.  Every write is atomic; a lock file keeps a second process
out while one runs (the kernel releases it on any exit, a SIGKILL too).  The files a resume
reads (config.json, candidates.csv, trials.csv) are recorded with their sha256 in a manifest
(``.checksums.json``) as they are written, so a file damaged or cut short later is refused by
name instead of resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import UserError
from .rows import FINISHED, TRIALS, TrialRow

CONFIG = "config.json"
CANDIDATES = "candidates.csv"
SUMMARY = "summary.csv"
BEST = "best.json"
FAMILY = "family.csv"
STUDY = "study.db"
LOCK = ".lock"
MANIFEST = ".checksums.json"              # sha256 of the files a resume reads
CHECKED = (CONFIG, CANDIDATES, TRIALS)


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
        names = list(names)
        self.verify(names)
        if TRIALS in names:
            self.check_references()
        return self.read_config() if self.exists else {}

    def check_references(self) -> None:
        """Refuse a trials.csv row (each checked by ``TrialRow.from_row``, ids unique) that names a
        candidate this run's candidates.csv does not hold: no search of this run trained it."""
        if not (self.path / CANDIDATES).is_file():
            return  # a reproduction: its rows are models.csv's, numbered by the plan
        table = {row.get("id"): row for row in read_csv(self.path / CANDIDATES)}
        for trial in self.trials().values():
            if trial.candidate not in table:
                raise UserError(f"'{self.path / TRIALS}': trial {trial.trial} names candidate {trial.candidate}, which "
                                f"is not a row of {CANDIDATES}; restore the file, or move it away to train its trials "
                                f"again")
            differs = _differs(trial, table[trial.candidate])
            if differs:
                raise UserError(f"'{self.path / TRIALS}': trial {trial.trial} says {differs[0]} = {differs[1]!r} where "
                                f"{CANDIDATES} says {differs[2]!r} for candidate {trial.candidate}: the files disagree; "
                                f"restore them, or move trials.csv away to train its trials again")

    def check_writable(self, what: str) -> None:
        """Refuse before any work when ``what`` cannot be written into this folder."""
        problem = writable_problem(self.path)
        if problem:
            raise RunFileError(f"cannot write {what} into '{self.path}' ({problem})")

    def create_and_lock(self) -> None:
        """Make the folder and take its lock, or refuse naming the process that holds it."""
        import fcntl

        lock = self.path / LOCK
        if lock.is_symlink():  # the lock is truncated and written: never through a link
            raise RunFileError(f"'{lock}' is a symbolic link (to '{os.readlink(lock)}'), and a run's lock is never "
                               f"followed: remove the link, or choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
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
            fd = os.open(self.path / LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
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
        """trials.csv's rows by trial id; a trial id written twice is refused (which row would count?)."""
        rows = [TrialRow.from_row(r, str(self.path / TRIALS)) for r in read_csv(self.path / TRIALS)]
        found: dict[str, TrialRow] = {}
        for row in rows:
            if row.trial in found:
                raise UserError(f"'{self.path / TRIALS}': trial {row.trial} has two rows, which no run writes; "
                                f"restore the file, or move it away to train its trials again")
            found[row.trial] = row
        return found

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


_SHARED = ("alpha", "beta", "gamma", "resolution", "params", "flops", "flops_ratio", "acts")


def _differs(trial: Any, candidate: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first of a candidate's figures a trial row copies (its coefficients, resolution and cost)
    where the two files disagree, or None."""
    import math

    for name in _SHARED:
        mine, theirs = getattr(trial, name, None), candidate.get(name)
        if mine is None or theirs is None:
            continue   # a column one of the files does not have (written before it existed)
        try:
            same = math.isclose(float(mine), float(theirs), rel_tol=1e-9, abs_tol=0.0)
        except (TypeError, ValueError):
            same = False
        if not same:
            return name, mine, theirs
    return None
