"""Image-folder trees: ``PATH/train/<class>/*.jpg|*.jpeg|*.png`` plus a held-out split.

The held-out split is ``PATH/val/<class>/`` or ``PATH/test/<class>/``.  Trees are decoded
once into uint8 arrays and kept in the on-disk cache (see ``cache.py``).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .cache import CACHE_FORMAT, check_cache_writable, default_cache_dir, load_cached, save_cached
from .dataset import DatasetError, balanced_subset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HELD_OUT_SPLITS = ("val", "test")
TREE_LAYOUT = "PATH/train/<class>/*.jpg|*.jpeg|*.png and PATH/val/<class>/ or PATH/test/<class>/"


@dataclass(frozen=True)
class _Listing:
    """The image files of one split (full paths), with their class indices."""

    files: tuple[str, ...]
    labels: np.ndarray


def read_image_tree(root: Path, cache_dir: str | Path | None, train_subset: int | None,
                    val_subset: int | None, seed: int, progress: bool,
                    ) -> tuple[list[str], dict[str, tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]]]:
    """Decode (or load from the disk cache) the train and held-out splits of a tree.

    The subsets are picked from the file lists, so only the images kept are decoded.  The
    cache file is named by a hash of the absolute paths, sizes and mtimes of exactly the
    files kept, so editing the tree or changing a subset setting misses the cache.
    """
    classes, listings = list_image_tree(root)
    subsets = {"train": train_subset, "val": val_subset}
    listings = {s: _subset_listing(lst, subsets[s], seed) for s, lst in listings.items()}
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    path = cache / f"{root.resolve().name}-{_listing_key(root, listings)}.pt"
    keys = ("classes", *(f"{s}_{part}" for s in listings for part in ("images", "labels")))
    stored = load_cached(path, keys)
    if stored is not None:
        return stored["classes"], {s: (stored[f"{s}_images"], stored[f"{s}_labels"]) for s in listings}
    check_cache_writable(cache)  # before decoding, which may take minutes
    files = listings["train"].files + listings["val"].files
    size = _first_image_size(files[0])
    images = decode_images(files, size, progress, desc=f"decoding {root.name}")
    n_train = len(listings["train"].files)
    splits = {"train": (images[:n_train], listings["train"].labels),
              "val": (images[n_train:], listings["val"].labels)}
    save_cached(path, {"classes": classes,
                       **{f"{s}_images": torch.from_numpy(x) for s, (x, _) in splits.items()},
                       **{f"{s}_labels": torch.from_numpy(y) for s, (_, y) in splits.items()}})
    return classes, splits


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
        raise DatasetError(f"image '{_shown(entry.path)}' cannot be read ({exc.strerror or exc}): a symbolic link "
                           f"that loops? remove or fix it") from None
    if entry.is_symlink():
        raise DatasetError(f"image '{_shown(entry.path)}' is a symbolic link to nothing "
                           f"('{_shown(os.readlink(entry.path))}'): remove or fix it")
    return False


def _shown(path: str) -> str:
    """A path as a message can print it: bytes that are not UTF-8 shown as escapes, not an error."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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
    lines = [f"{CACHE_FORMAT}", str(root.resolve())]
    for split, listing in listings.items():
        for path, label in zip(listing.files, listing.labels.tolist()):
            st = os.stat(path)
            lines.append(f"{split}\0{os.path.abspath(path)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:20]  # any file name



def _first_image_size(path: str) -> tuple[int, int]:
    height, width = decode_image(path, None).shape[:2]
    return width, height


def decode_image(path: str | Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (H, W, 3) RGB, resized to ``size`` = (W, H) when it differs."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image '{path}': {exc}") from None
    if size is not None and rgb.size != tuple(size):
        rgb = rgb.resize(tuple(size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _decode_chunk(paths: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    return np.stack([decode_image(p, size) for p in paths])


def decode_images(paths: Sequence[str | Path], size: tuple[int, int], progress: bool = False,
                  desc: str = "decoding", chunk: int = 1024) -> np.ndarray:
    """Decode images into one uint8 array (N, 3, H, W), all resized to ``size`` = (W, H).

    Images must share a size for one array; any that differ from the first image are
    resized to it.  Large lists are decoded in worker processes (small JPEGs are bound
    by per-file Python work, which threads would serialise).
    """
    chunks = [[str(p) for p in paths[i:i + chunk]] for i in range(0, len(paths), chunk)]
    workers = min(len(chunks), os.cpu_count() or 1, 8)
    # The bar shows only after a second, so a quick decode (or a quick failure) prints none.
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=None if progress else True, leave=False, delay=1.0)
    parts = []
    with bar:
        if workers > 1 and len(paths) >= 4 * chunk:
            with ProcessPoolExecutor(workers) as pool:
                for part in pool.map(_decode_chunk, chunks, [size] * len(chunks)):
                    parts.append(part)
                    bar.update(len(part))
        else:
            for names in chunks:
                parts.append(_decode_chunk(names, size))
                bar.update(len(names))
    return np.ascontiguousarray(np.concatenate(parts).transpose(0, 3, 1, 2))

