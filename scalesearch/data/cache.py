"""The on-disk cache of decoded images, each entry checked by a checksum on load.

An entry is one ``torch.save`` file of tensors (and plain lists) plus the sha256 of
their contents.  A file that cannot be read, lacks a part, or whose contents no longer
match the checksum (garbled, truncated, zero bytes) is reported in one warning line
naming the file and treated as a miss, so the caller decodes again and overwrites it:
never a traceback, never silently wrong pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .dataset import DatasetError

CACHE_FORMAT = 2  # bump when the on-disk cache layout changes (2: sha256 stored with each entry)
CHECKSUM = "sha256"

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "scalesearch"


def checksum(payload: dict[str, Any]) -> str:
    """sha256 over the payload's keys, tensor dtypes, shapes and bytes, and other values' repr."""
    h = hashlib.sha256()
    for key in sorted(payload):
        if key == CHECKSUM:
            continue
        value = payload[key]
        h.update(key.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            h.update(f"{value.dtype}{tuple(value.shape)}\0".encode())
            h.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        else:
            h.update(repr(value).encode() + b"\0")
    return h.hexdigest()


def load_cached(path: Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The entry at ``path`` when it exists, holds ``keys`` and matches its checksum, else None.

    A damaged entry is logged as one warning line (the caller rebuilds and overwrites it).
    """
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
        problem = _problem(stored, keys)
    except Exception as exc:  # noqa: BLE001 - any failure to read means a damaged entry
        problem = f"unreadable ({type(exc).__name__})"
    if problem:
        log.warning("scalesearch: cache file '%s' is damaged (%s); rebuilding it", path, problem)
        return None
    return stored


def _problem(stored: Any, keys: tuple[str, ...]) -> str:
    if not isinstance(stored, dict):
        return "not a dict"
    missing = [k for k in (*keys, CHECKSUM) if k not in stored]
    if missing:
        return f"no '{missing[0]}'"
    if stored[CHECKSUM] != checksum(stored):
        return "checksum mismatch"
    return ""


def check_cache_writable(folder: Path) -> None:
    """Refuse, naming it, a cache folder that cannot be made or written (tried for real:
    permission bits do not stop root, a read-only file system stops everyone)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".scalesearch-probe-"))
    except OSError as exc:
        raise DatasetError(f"cannot write the decoded-image cache in '{folder}' ({exc.strerror or exc}): "
                           f"choose a writable --cache-dir") from None


def save_cached(path: Path, payload: dict[str, Any]) -> None:
    """Store ``payload`` with its checksum, atomically.

    Concurrent trials may open the same tree: write aside, then rename into place.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({**payload, CHECKSUM: checksum(payload)}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        why = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
        raise DatasetError(f"cannot write the decoded-image cache in '{path.parent}' ({why}): "
                           f"choose a writable --cache-dir") from None
