"""The on-disk image store: a folder's images decoded once, read by index from a memory map.

A store is a folder ``<cache>/stores/<name>-<listing key>-<S>px/`` holding

* ``images.npy``: uint8 (N, S, S, 3), every image resized by its short side to S and
  center-cropped to S x S (docs/method.md, "The image store"), in the (height, width, RGB)
  order PIL decodes and FFCV stores; a batch of rows is a channels-last tensor as it is;
* ``labels.npy``: int64 (N,), the class of each row, -1 for a file that could not be decoded;
* ``header.json``: S, the classes, the rows of each split, the listing key, a sha256 of every
  chunk of rows and of the labels, the training split's channel statistics, what was skipped
  or upsampled, and a checksum of itself.  It is written last: a store without it is not a
  store, so a build that stops (killed, a full disk, a changed folder) leaves nothing that
  reads as good.

Why numpy's .npy: one documented header and then the raw array, so ``np.load(mmap_mode="r")``
opens it in constant time and every process that maps it shares the same pages of the OS page
cache; any tool with numpy can read it.  No index or record format is needed because every row
has one size.

A build streams: worker processes decode chunks (``decode.py``), the writer puts each at its
offset as it comes (memory stays a few chunks, whatever N), ``build.json`` lets a stopped build
resume, and a lock file makes a second builder wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import mmap
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from . import decode
from .decode import Decoded
from .dataset import DatasetError

STORE_FORMAT = 1            # bump when the layout of a store changes
CHUNK = 256                 # rows a worker decodes and the writer checks as one piece
CROP_RATIO = 256 / 224      # S is the largest trained resolution times this (the 256/224 convention)
HEADER, IMAGES, LABELS, PROGRESS = "header.json", "images.npy", "labels.npy", "build.json"
SHOWN_NAMES = 3             # the first names of skipped files a message shows
POOL_FROM = 2048            # images from which a build decodes in worker processes
SAVE_EVERY = 5.0            # seconds between two records of a build's progress (build.json)


def store_resolution_for(resolution: int) -> int:
    """S for training up to ``resolution`` px: resolution x 256/224, rounded up."""
    return math.ceil(resolution * CROP_RATIO - 1e-9)


@dataclass(frozen=True)
class StoreHeader:
    """What ``header.json`` holds (see the module docstring)."""

    resolution: int
    classes: list[str]
    splits: dict[str, int]             # rows of each split, in order: train first, then val
    listing: str                       # the key of the file listing the store was built from
    source: str                        # the folder it was built from
    checksums: list[str]               # sha256 of each chunk of CHUNK rows of images.npy
    labels_checksum: str
    mean: list[float]
    std: list[float]
    skipped: int = 0
    skipped_names: list[str] = field(default_factory=list)
    skipped_reason: str = ""
    upsampled: int = 0
    build_seconds: float = 0.0
    chunk: int = CHUNK
    format: int = STORE_FORMAT

    @property
    def n(self) -> int:
        return sum(self.splits.values())

    def as_json(self) -> dict:
        body = asdict(self)
        return {**body, "sha256": _json_hash(body)}


def _json_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class StoreProblem(Exception):
    """A store on disk that must not be read (damaged, partial, or of another listing)."""


class ImageStore:
    """An opened store: the memory-mapped images and the labels, read by row."""

    def __init__(self, path: Path, header: StoreHeader, images: np.ndarray, labels: np.ndarray) -> None:
        self.path = path
        self.header = header
        self.images = images
        self.labels = labels
        first = 0
        self._rows: dict[str, np.ndarray] = {}
        for split, n in header.splits.items():
            part = labels[first:first + n]
            self._rows[split] = first + np.flatnonzero(part >= 0)
            first += n

    @property
    def resolution(self) -> int:
        return self.header.resolution

    def rows(self, split: str) -> np.ndarray:
        """The store rows of ``split`` that hold an image (skipped files left out)."""
        return self._rows[split]

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def will_need(self, rows: np.ndarray) -> None:
        """Ask the kernel to read the span of ``rows`` ahead (the store is mapped for random
        reads, so a sequential pass, such as an evaluation, says so itself)."""
        whole = getattr(self.images, "_mmap", None)
        if whole is None or not len(rows):
            return
        row = self.images[0].nbytes
        start = self.images.offset + int(rows.min()) * row
        start -= start % mmap.PAGESIZE
        end = self.images.offset + (int(rows.max()) + 1) * row
        with contextlib.suppress(OSError, ValueError):
            whole.madvise(mmap.MADV_WILLNEED, start, end - start)


def open_store(path: Path, listing: str | None = None) -> ImageStore:
    """The store at ``path``, checked cheaply: its header whole and of ``listing``, every file of
    the size the header says, the labels and the first and last chunk of images matching their
    sha256.  Raises StoreProblem naming what is wrong; ``verify_store`` checks every chunk."""
    header = read_header(path)
    if listing is not None and header.listing != listing:
        raise StoreProblem("built from another listing of the folder")
    images = _map_images(path, header)
    labels = _read_labels(path, header)
    for k in sorted({0, len(header.checksums) - 1}):
        if _chunk_hash(images, k, header.chunk) != header.checksums[k]:
            raise StoreProblem(f"chunk {k} of {IMAGES} does not match its checksum")
    return ImageStore(path, header, images, labels)


def read_header(path: Path) -> StoreHeader:
    try:
        raw = json.loads((path / HEADER).read_text())
        body = {k: v for k, v in raw.items() if k != "sha256"}
        if raw.get("sha256") != _json_hash(body):
            raise StoreProblem(f"{HEADER} does not match its checksum")
        if body.get("format") != STORE_FORMAT:
            raise StoreProblem(f"format {body.get('format')!r}, not {STORE_FORMAT}")
        return StoreHeader(**body)
    except FileNotFoundError:
        raise StoreProblem(f"no {HEADER} (a build that did not finish)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise StoreProblem(f"{HEADER} cannot be read ({type(exc).__name__})") from None


def _map_images(path: Path, header: StoreHeader) -> np.ndarray:
    shape = (header.n, header.resolution, header.resolution, 3)
    try:
        images = np.load(path / IMAGES, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise StoreProblem(f"{IMAGES} cannot be read ({type(exc).__name__}: {str(exc)[:80]})") from None
    if images.shape != shape or images.dtype != np.uint8:
        raise StoreProblem(f"{IMAGES} holds {images.dtype} {images.shape}, not uint8 {shape}")
    expected = images.offset + images.nbytes
    if (path / IMAGES).stat().st_size != expected:
        raise StoreProblem(f"{IMAGES} is {(path / IMAGES).stat().st_size:,} bytes, not {expected:,}")
    # Batches read rows at random: without this the kernel reads ahead 128 KB around every row
    # (8 rows of 74 px), and a trial of 4,000 images pulled 1.4 GB of a 1.8 GB store into memory.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        images._mmap.madvise(mmap.MADV_RANDOM)
    return images


def _read_labels(path: Path, header: StoreHeader) -> np.ndarray:
    try:
        labels = np.load(path / LABELS, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise StoreProblem(f"{LABELS} cannot be read ({type(exc).__name__})") from None
    if labels.shape != (header.n,) or hashlib.sha256(labels.tobytes()).hexdigest() != header.labels_checksum:
        raise StoreProblem(f"{LABELS} does not match its checksum")
    return labels


def _chunk_hash(images: np.ndarray, k: int, chunk: int) -> str:
    return hashlib.sha256(np.ascontiguousarray(images[k * chunk:(k + 1) * chunk]).data).hexdigest()


def verify_store(path: Path, progress: bool = False) -> list[str]:
    """Every problem of the store at ``path`` (empty when whole): each chunk's sha256 is read back."""
    from tqdm import tqdm

    try:
        store = open_store(path)
    except StoreProblem as exc:
        return [str(exc)]
    header = store.header
    bad = [k for k in tqdm(range(len(header.checksums)), desc="verify", unit="chunk", leave=False,
                           disable=None if progress else True)
           if _chunk_hash(store.images, k, header.chunk) != header.checksums[k]]
    return [f"chunk {k} (rows {k * header.chunk:,}-{min((k + 1) * header.chunk, header.n) - 1:,}) of {IMAGES} "
            f"does not match its checksum" for k in bad]


# -- building ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a store is built from: the files in row order (train first), their labels, the key."""

    files: tuple[str, ...]
    labels: np.ndarray
    splits: dict[str, int]
    classes: list[str]
    listing: str
    source: str


def build_store(path: Path, plan: Plan, resolution: int, relist: Callable[[], str], *,
                progress: bool = False, workers: int | None = None,
                note: Callable[[str], None] = lambda line: None) -> ImageStore:
    """Build (or finish building) the store of ``plan`` at S = ``resolution`` in ``path``.

    Under the store's lock: a second process asking for the same store waits, then opens the one
    built.  ``relist`` gives the folder's listing key again after the build; if it changed the
    build is thrown away (a stale store is never used).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock"), note):
        with contextlib.suppress(StoreProblem):
            return open_store(path, plan.listing)          # built by the process we waited for
        started = time.perf_counter()
        path.mkdir(exist_ok=True)
        (path / HEADER).unlink(missing_ok=True)
        n, row = len(plan.files), 3 * resolution * resolution
        needed = n * row
        partial = path / (IMAGES + ".partial")
        done, checksums = _resume_point(path, plan, resolution, partial)
        if done == 0:
            _check_space(path, needed)
            offset = _create_partial(partial, (n, resolution, resolution, 3), needed)
        else:
            offset = _npy_offset(partial)
            note(f"resuming the build of {path.name} at image {done * CHUNK:,} of {n:,}")
        labels = plan.labels.copy()
        skipped, upsampled = _saved_skips(path) if done else ([], 0)
        for i, _ in skipped:
            labels[i] = -1
        chunks = [plan.files[i:i + CHUNK] for i in range(0, n, CHUNK)]
        size_gb = needed / 1e9
        note(f"building the image store of '{plan.source}': {n:,} images at {resolution} px "
             f"({size_gb:.2f} GB) in {path}")
        from tqdm import tqdm

        bar = tqdm(total=n, initial=min(done * CHUNK, n), desc=f"store {resolution}px", unit="img",
                   disable=None if progress else True, leave=False, smoothing=0.1)
        last_saved = time.monotonic()
        try:
            with bar, open(partial, "r+b") as out:
                for k, (pixels, bad, up) in _decoded(chunks, done, resolution, workers):
                    out.seek(offset + k * CHUNK * row)
                    out.write(pixels.data)
                    checksums.append(hashlib.sha256(pixels.data).hexdigest())
                    for i, reason in bad:
                        labels[k * CHUNK + i] = -1
                        skipped.append((k * CHUNK + i, reason))
                    upsampled += up
                    bar.update(len(pixels))
                    if time.monotonic() - last_saved > SAVE_EVERY or k == len(chunks) - 1:
                        out.flush()
                        os.fsync(out.fileno())
                        _save_progress(path, plan, resolution, k + 1, checksums, skipped, upsampled)
                        last_saved = time.monotonic()
        except OSError as exc:
            raise DatasetError(f"cannot write the image store in '{path.parent}' ({exc.strerror or exc}); "
                               f"free space or choose another --cache-dir, then run again (the build resumes)"
                               ) from None
        if relist() != plan.listing:
            shutil.rmtree(path, ignore_errors=True)
            raise DatasetError(f"the folder '{plan.source}' changed while its image store was built; "
                               f"the store was thrown away: run again once the folder is still")
        _finish(path, plan, resolution, partial, offset, labels, checksums, skipped, upsampled,
                time.perf_counter() - started)
        return open_store(path, plan.listing)


@contextlib.contextmanager
def _locked(lock: Path, note: Callable[[str], None]) -> Iterator[None]:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note(f"waiting for another process building the image store {lock.name[:-5]}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def _resume_point(path: Path, plan: Plan, resolution: int, partial: Path) -> tuple[int, list[str]]:
    """(chunks already written, their sha256) of an earlier build of the same store, or (0, [])."""
    try:
        saved = json.loads((path / PROGRESS).read_text())
        ok = (saved["listing"] == plan.listing and saved["resolution"] == resolution and saved["chunk"] == CHUNK
              and saved["format"] == STORE_FORMAT and partial.is_file() and isinstance(saved["skipped"], list))
        if ok:
            done, checksums = int(saved["done"]), list(saved["checksums"])
            images = np.load(partial, mmap_mode="r")
            if (len(checksums) == done and images.shape[0] == len(plan.files)
                    and all(_chunk_hash(images, k, CHUNK) == checksums[k] for k in range(max(0, done - 2), done))):
                return done, checksums
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        pass
    return 0, []


def _save_progress(path: Path, plan: Plan, resolution: int, done: int, checksums: list[str],
                   skipped: list[tuple[int, str]], upsampled: int) -> None:
    _write_atomic(path / PROGRESS, json.dumps(dict(
        format=STORE_FORMAT, listing=plan.listing, resolution=resolution, chunk=CHUNK, done=done,
        checksums=checksums, skipped=skipped, upsampled=upsampled)))


def _saved_skips(path: Path) -> tuple[list[tuple[int, str]], int]:
    saved = json.loads((path / PROGRESS).read_text())
    return [(int(i), str(why)) for i, why in saved["skipped"]], int(saved["upsampled"])


def _check_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed * 1.02:
        raise DatasetError(f"the image store needs {needed / 1e9:.2f} GB and '{path.parent}' has "
                           f"{free / 1e9:.2f} GB free: free space, choose another --cache-dir, or lower "
                           f"the store's resolution (--set data.store_resolution=S)")


def _create_partial(partial: Path, shape: tuple[int, ...], nbytes: int) -> int:
    """An .npy file of ``shape`` with its space reserved (a full disk fails here, not mid-build);
    returns the offset of the first pixel."""
    with open(partial, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        offset = f.tell()
        try:
            os.posix_fallocate(f.fileno(), 0, offset + nbytes)
        except OSError as exc:
            f.close()
            partial.unlink(missing_ok=True)
            if exc.errno in (95, 22):            # EOPNOTSUPP, EINVAL: a file system without fallocate
                with open(partial, "wb") as g:
                    np.lib.format.write_array_header_1_0(g, {"descr": "|u1", "fortran_order": False,
                                                             "shape": shape})
                    g.truncate(offset + nbytes)
                return offset
            raise DatasetError(f"cannot reserve {nbytes / 1e9:.2f} GB for the image store in "
                               f"'{partial.parent.parent}' ({exc.strerror}): free space or choose another "
                               f"--cache-dir") from None
    return offset


def _npy_offset(partial: Path) -> int:
    return int(np.load(partial, mmap_mode="r").offset)


def _finish(path: Path, plan: Plan, resolution: int, partial: Path, offset: int, labels: np.ndarray,
            checksums: list[str], skipped: list[tuple[int, str]], upsampled: int, seconds: float) -> None:
    images = np.load(partial, mmap_mode="r")
    train_rows = np.flatnonzero(labels[:plan.splits["train"]] >= 0)
    for split, first, n in (("train", 0, plan.splits["train"]), ("held-out", plan.splits["train"], plan.splits["val"])):
        if n and not (labels[first:first + n] >= 0).any():
            i, why = next((i, why) for i, why in skipped if i >= first)
            raise DatasetError(f"none of the {n:,} {split} images of '{plan.source}' could be decoded "
                               f"(first: '{shown_path(plan.files[i])}': {why})")
    mean, std = _channel_stats(images, train_rows)
    _write_atomic(path / LABELS, _npy_bytes(labels))
    os.replace(partial, path / IMAGES)
    header = StoreHeader(resolution=resolution, classes=list(plan.classes), splits=dict(plan.splits),
                         listing=plan.listing, source=plan.source, checksums=checksums,
                         labels_checksum=hashlib.sha256(labels.tobytes()).hexdigest(), mean=mean, std=std,
                         skipped=len(skipped), skipped_names=[shown_path(plan.files[i]) for i, _ in skipped[:SHOWN_NAMES]],
                         skipped_reason=skipped[0][1] if skipped else "", upsampled=upsampled,
                         build_seconds=round(seconds, 1), chunk=CHUNK)
    _write_atomic(path / HEADER, json.dumps(header.as_json(), indent=1))
    (path / PROGRESS).unlink(missing_ok=True)


def _channel_stats(images: np.ndarray, train_rows: np.ndarray) -> tuple[list[float], list[float]]:
    import torch

    from .dataset import channel_stats

    limit = 8192
    sample = train_rows[::max(1, math.ceil(len(train_rows) / limit))]
    mean, std = channel_stats(torch.from_numpy(np.ascontiguousarray(images[sample])).permute(0, 3, 1, 2))
    return list(mean), list(std)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_atomic(target: Path, content: str | bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def shown_path(path: str) -> str:
    """A path as a message can print it: bytes that are not UTF-8 shown as escapes, not an error."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")




def _decoded(chunks: Sequence[Sequence[str]], start: int, resolution: int,
             workers: int | None) -> Iterator[tuple[int, Decoded]]:
    """(chunk index, decoded chunk) in order from ``start``, decoded in worker processes with at
    most two chunks a worker in flight (memory stays bounded whatever the folder's size)."""
    todo = list(range(start, len(chunks)))
    workers = min(workers or os.cpu_count() or 1, 8, max(1, len(todo)))
    if workers == 1 or sum(len(chunks[k]) for k in todo) < POOL_FROM:
        for k in todo:
            yield k, decode.decode_chunk(chunks[k], resolution)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: dict[int, Future] = {}
        for k in todo:
            pending[k] = pool.submit(decode.decode_chunk, chunks[k], resolution)
            while len(pending) >= 2 * workers or (k == todo[-1] and pending):
                first = min(pending)
                yield first, pending.pop(first).result()
