"""The run directory of a search: settings, atomic CSV/JSON writes, and resuming.

A run directory belongs to one search.  Re-running the same command resumes it;
pointing a different search at it is refused, so no earlier results are overwritten.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError

CONFIG = "config.json"
CANDIDATES = "candidates.csv"
TRIALS = "trials.csv"
BEST = "best.json"
FAMILY = "family.csv"
STUDY = "study.db"

TRIAL_COLUMNS = ["candidate", "alpha", "beta", "gamma", "d", "w", "r", "resolution", "params", "flops",
                 "flops_ratio", "acts", "top1", "loss", "train_loss", "seconds", "images_per_second",
                 "epochs", "state", "backend"]
FINISHED = ("COMPLETE", "PRUNED")


@dataclass
class SearchSettings:
    """Every setting of a search; config.json holds them all."""

    base: str
    target_flops: str = "2x"
    max_params: str | None = None
    max_acts: str | None = None
    alpha_max: float = 2.0
    beta_max: float = 1.5
    step: float = 0.05
    tolerance: float = 0.05
    resolution: int | None = None
    dataset: str = "synthetic"
    train_subset: int | None = None
    val_subset: int | None = None
    epochs: float = 1.0
    images: int | None = None
    batch_size: int = 64
    lr: float | None = None
    seed: int = 0
    max_trials: int | None = None
    phi_max: int = 7
    backend: str = "optuna"
    address: str | None = None
    early_stop: bool = False
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    device: str = "auto"
    cache_dir: str | None = None
    out: str | None = None

    # Settings that do not change what a search computes: a run may resume under others.
    RUNTIME = ("backend", "address", "cpus_per_trial", "gpus_per_trial", "device", "cache_dir", "out")

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
    write_atomic(path, frame.to_csv(index=False))


def read_csv(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    if not path.is_file() or path.stat().st_size == 0:
        return []
    frame = pd.read_csv(path)
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def open_run_dir(out: Path, settings: SearchSettings) -> bool:
    """Create ``out`` for this search, or accept it to resume the same one.

    Returns True when resuming.  Refuses a directory that holds another search or
    anything that is not a scalesearch run.
    """
    config = out / CONFIG
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' exists and is not a directory")
    if config.is_file():
        try:
            previous = json.loads(config.read_text())
        except json.JSONDecodeError:
            raise UserError(f"--out '{out}' has an unreadable {CONFIG}; choose another --out") from None
        theirs = SearchSettings.from_dict(previous.get("settings", {})).identity()
        ours = settings.identity()
        diff = [k for k in ours if ours[k] != theirs.get(k)]
        if diff:
            k = diff[0]
            raise UserError(f"--out '{out}' holds a different search ({k} = {theirs.get(k)!r} there, "
                            f"{ours[k]!r} here); choose another --out to keep its results")
        return True
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out '{out}' exists, is not empty and is not a scalesearch run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return False


def finished_trials(out: Path) -> dict[int, dict[str, Any]]:
    """Rows of trials.csv whose trial finished (COMPLETE or PRUNED), by candidate id."""
    return {int(r["candidate"]): r for r in read_csv(out / TRIALS) if r.get("state") in FINISHED}
