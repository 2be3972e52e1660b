"""Image-folder trees: ``PATH/train/<class>/*.jpg|*.jpeg|*.png`` plus a held-out split.

The held-out split is ``PATH/val/<class>/`` or ``PATH/test/<class>/``.  A tree is decoded once
into an image store (``store.py``) named by its listing and store resolution S, and read from
it by index; decoded-image caches of scalesearch 0.2 (``<cache>/<name>-<key>.pt``) are no
longer read (``data info`` names them, for deleting).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import Dataset, DatasetError, balanced_subset, store_dataset
from .decode import image_short_sides
from .store import (STORE_FORMAT, ImageStore, Plan, StoreProblem, build_store, open_store, shown_path,
                    store_resolution_for)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HELD_OUT_SPLITS = ("val", "test")
TREE_LAYOUT = "PATH/train/<class>/*.jpg|*.jpeg|*.png and PATH/val/<class>/ or PATH/test/<class>/"
DEFAULT_STORE_RESOLUTION = store_resolution_for(64)  # S when a caller names none: 64 px trials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Listing:
    """The image files of one split (full paths), with their class indices."""

    files: tuple[str, ...]
    labels: np.ndarray


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "scalesearch"


def read_image_tree(root: Path, cache_dir: str | Path | None, train_subset: int | None,
                    val_subset: int | None, seed: int, progress: bool,
                    store_resolution: int | None = None) -> Dataset:
    """The tree's train and held-out splits, read from its image store (built when missing).

    The subsets are picked from the file lists, so only the images kept are decoded.  The store
    is named by a hash of the absolute paths, labels, sizes and mtimes of exactly the files kept
    and by S, so editing the tree or changing a subset setting finds another store.  S is
    ``store_resolution`` (default DEFAULT_STORE_RESOLUTION), but never more than the largest
    short side of a sample of the images: a folder of 32 px images is stored at 32 px as it is.
    """
    return store_dataset(root.resolve().name,
                         tree_store(root, cache_dir, train_subset, val_subset, seed, progress, store_resolution))


def tree_store(root: Path, cache_dir: str | Path | None, train_subset: int | None = None,
               val_subset: int | None = None, seed: int = 0, progress: bool = False,
               store_resolution: int | None = None) -> ImageStore:
    """The store of the tree's kept files at S (see ``read_image_tree``), opened, built when missing."""
    classes, listings = list_image_tree(root)
    subsets = {"train": train_subset, "val": val_subset}
    listings = {s: _subset_listing(lst, subsets[s], seed) for s, lst in listings.items()}
    files = listings["train"].files + listings["val"].files
    sides = image_short_sides(files)
    resolution = min(store_resolution or DEFAULT_STORE_RESOLUTION, max(sides, default=10**9))
    key = _listing_key(root, listings)
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    path = store_path(cache, root, key, resolution)
    store = _open_or_build(path, key, Plan(
        files=files, labels=np.concatenate([listings["train"].labels, listings["val"].labels]),
        splits={"train": len(listings["train"].files), "val": len(listings["val"].files)},
        classes=classes, listing=key, source=str(root.resolve())),
        lambda: _listing_key(root, listings), cache, progress, resolution)
    return store


def store_path(cache: Path, root: Path, key: str, resolution: int) -> Path:
    """Where the store of a listing at S lives: ``<cache>/stores/<folder name>-<key>-<S>px``."""
    name = re.sub(r"[^\w.-]+", "_", os.fsencode(root.resolve().name).decode("utf-8", "replace"))[:60] or "data"
    return cache / "stores" / f"{name}-{key}-{resolution}px"


def _open_or_build(path: Path, key: str, plan: Plan, relist, cache: Path, progress: bool,  # noqa: ANN001
                   resolution: int) -> ImageStore:
    try:
        store = open_store(path, key)
    except StoreProblem as problem:
        if (path / "header.json").exists():
            log.warning("scalesearch: image store '%s' is damaged (%s); rebuilding it", path, problem)
        check_cache_writable(cache)  # before decoding, which may take minutes
        store = build_store(path, plan, resolution, relist, progress=progress, note=_note(progress))
    header = store.header
    if progress and (header.skipped or header.upsampled):
        _note(progress)(store_summary(header))
    return store


def store_summary(header) -> str:  # noqa: ANN001
    parts = []
    if header.skipped:
        many = header.skipped != 1
        parts.append(f"{header.skipped:,} file{'s' if many else ''} could not be decoded and "
                     f"{'are' if many else 'is'} left out, with {'their labels' if many else 'its label'} (first: "
                     f"{', '.join(header.skipped_names)}: {header.skipped_reason})")
    if header.upsampled:
        parts.append(f"{header.upsampled:,} image{'s' if header.upsampled != 1 else ''} smaller than "
                     f"{header.resolution} px {'were' if header.upsampled != 1 else 'was'} upsampled")
    return "image store: " + "; ".join(parts)


def _note(progress: bool):  # noqa: ANN202
    def note(line: str) -> None:
        if progress:
            print(line, file=sys.stderr, flush=True)
    return note


def check_cache_writable(folder: Path) -> None:
    """Refuse, naming it, a cache folder that cannot be made or written (tried for real:
    permission bits do not stop root, a read-only file system stops everyone)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".scalesearch-probe-"))
    except OSError as exc:
        raise DatasetError(f"cannot write the image store in '{folder}' ({exc.strerror or exc}): "
                           f"choose a writable --cache-dir") from None


def list_image_tree(root: Path) -> tuple[list[str], dict[str, _Listing]]:
    """Class names (sorted folder names of train/) and the files of train and held-out."""
    train = root / "train"
    if not train.is_dir():
        raise DatasetError(f"'{root}' has no train/ folder; expected {TREE_LAYOUT} "
                           "or a CIFAR-10/100 python-pickle folder")
    classes = _subfolders(train)
    if not classes:
        raise DatasetError(f"'{train}' has no class folders; expected {TREE_LAYOUT}")
    held_out = next((root / s for s in HELD_OUT_SPLITS if (root / s).is_dir()), None)
    if held_out is None:
        raise DatasetError(f"'{root}' has no held-out split: expected a val/ or test/ folder "
                           "with the same class folders as train/")
    unknown = [c for c in _subfolders(held_out) if c not in classes]
    if unknown:
        raise DatasetError(f"class '{unknown[0]}' of '{held_out}' is not a class of '{train}' "
                           f"(train classes: {', '.join(classes)})")
    return classes, {"train": _list_split(train, classes, require_all=True),
                     "val": _list_split(held_out, classes, require_all=False)}


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def _image_files(folder: Path) -> list[str]:
    # os.scandir rather than Path.iterdir: 60,000 files list in a fraction of the time.
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and _is_image_file(e))


def _is_image_file(entry: os.DirEntry) -> bool:
    """Whether an image-named entry is a file to read; a link that leads nowhere (a loop, a
    missing target) is refused by name rather than skipped, so no image is silently lost."""
    try:
        if entry.is_file():
            return True
    except OSError as exc:
        raise DatasetError(f"image '{shown_path(entry.path)}' cannot be read ({exc.strerror or exc}): a symbolic link "
                           f"that loops? remove or fix it") from None
    if entry.is_symlink():
        raise DatasetError(f"image '{shown_path(entry.path)}' is a symbolic link to nothing "
                           f"('{shown_path(os.readlink(entry.path))}'): remove or fix it")
    return False


def _list_split(folder: Path, classes: list[str], require_all: bool) -> _Listing:
    files: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = _image_files(folder / name)
        if not found and require_all:
            raise DatasetError(f"class folder '{folder / name}' has no {'/'.join(IMAGE_SUFFIXES)} images")
        files += found
        labels += [index] * len(found)
    if not files:
        raise DatasetError(f"'{folder}' has no {'/'.join(IMAGE_SUFFIXES)} images in its class folders")
    return _Listing(tuple(files), np.asarray(labels, dtype=np.int64))


def _subset_listing(listing: _Listing, n: int | None, seed: int) -> _Listing:
    keep = balanced_subset(listing.labels, n, seed)
    return _Listing(tuple(listing.files[i] for i in keep), listing.labels[keep])


def _listing_key(root: Path, listings: dict[str, _Listing]) -> str:
    lines = [f"store {STORE_FORMAT}", str(root.resolve())]
    for split, listing in listings.items():
        for path, label in zip(listing.files, listing.labels.tolist()):
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError:   # gone (or unreadable) since it was listed: a listing of its own
                stamp = "gone"
            lines.append(f"{split}\0{os.path.abspath(path)}\0{label}\0{stamp}")
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:20]  # any file name


# -- what the `scalesearch data` commands show ----------------------------------------------

@dataclass(frozen=True)
class TreeInfo:
    """An image folder as listed now, and the stores of it in a cache folder."""

    root: Path
    classes: list[str]
    counts: dict[str, list[int]]            # images per class in each split, as listed
    listing: str                            # the key of the whole folder's listing now
    stores: list[tuple[Path, object]]       # (path, StoreHeader, or the StoreProblem found)
    old_caches: list[Path]                  # decoded-image caches of scalesearch 0.2 (.pt), no longer read

    def current(self, header) -> bool:  # noqa: ANN001
        return getattr(header, "listing", None) == self.listing


def tree_info(source: str | Path, cache_dir: str | Path | None = None) -> TreeInfo:
    """The folder's classes and counts, and every store of it under ``cache_dir`` (none decoded)."""
    from .store import read_header

    root = Path(source).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data set '{source}' is not a folder: expected {TREE_LAYOUT}")
    classes, listings = list_image_tree(root)
    counts = {s: np.bincount(lst.labels, minlength=len(classes)).tolist() for s, lst in listings.items()}
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    found: list[tuple[Path, object]] = []
    prefix = store_path(cache, root, "", 0).name.rsplit("-", 2)[0] + "-"
    for path in sorted((cache / "stores").glob(f"{glob_escape(prefix)}*px")) if (cache / "stores").is_dir() else []:
        try:
            header = read_header(path)
        except StoreProblem as problem:
            found.append((path, problem))
            continue
        if header.source == str(root.resolve()):
            found.append((path, header))
    old = sorted(cache.glob(f"{glob_escape(root.resolve().name)}-*.pt")) if cache.is_dir() else []
    return TreeInfo(root, classes, counts, _listing_key(root, listings), found, old)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def build_tree_store(source: str | Path, resolution: int | None = None, cache_dir: str | Path | None = None,
                     progress: bool = True) -> ImageStore:
    """``scalesearch data build``: the whole folder's store at S = ``resolution`` (built when missing)."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data set '{source}' is not a folder: expected {TREE_LAYOUT}")
    return tree_store(root, cache_dir, progress=progress, store_resolution=resolution)


def tree_files(root: Path) -> tuple[str, ...]:
    """Every image file of the tree, training split first (as a store of the whole folder orders them)."""
    _, listings = list_image_tree(root)
    return listings["train"].files + listings["val"].files


def estimate_build_seconds(source: str | Path, resolution: int, sample: int = 32) -> tuple[int, float]:
    """(images, seconds) to build the folder's store: ``sample`` images decoded here, the rest
    in proportion, shared among the worker processes a build uses."""
    from .decode import square_image

    files = tree_files(Path(source).expanduser())
    picked = files[::max(1, len(files) // sample)][:sample]
    import time

    started = time.perf_counter()
    for path in picked:
        try:
            square_image(path, resolution)
        except Exception:  # noqa: BLE001 - a bad file is the build's to report
            pass
    per_image = (time.perf_counter() - started) / max(1, len(picked))
    return len(files), per_image * len(files) / min(os.cpu_count() or 1, 8)
