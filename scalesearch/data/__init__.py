"""The data sets that a grid search short-trains its candidates on.

``open_dataset`` puts one ``Dataset`` API (``dataset.py``) over three sources:

* ``"synthetic"`` (the default) or ``"synthetic:<level>"``: a procedurally generated
  task shipped as code (``synthetic.py``), rendered natively at the resolution asked for,
  so a larger input shows more real detail; nothing is downloaded.
* a folder tree ``PATH/train/<class>/*.jpg|*.jpeg|*.png`` with a held-out split in
  ``PATH/val/<class>/`` or ``PATH/test/<class>/`` (``folders.py``), of images of any size and
  shape, decoded once into an on-disk image store read by index through a memory map
  (``store.py``): memory does not grow with the folder.
* the CIFAR-10/100 python-pickle layout that torchvision downloads (``cifar.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cifar import find_cifar_pickles, read_cifar_pickles
from .dataset import (Batch, Dataset, DatasetError, balanced_subset, channel_stats, check_positive,
                      shifted_and_flipped, store_dataset, stored_dataset, to_input)
from .folders import (DEFAULT_STORE_RESOLUTION, HELD_OUT_SPLITS, IMAGE_SUFFIXES, TREE_LAYOUT, default_cache_dir,
                      list_image_tree, read_image_tree)
from .decode import square_image
from .store import (STORE_FORMAT, ImageStore, StoreProblem, open_store, store_resolution_for,
                    verify_store)
from .synthetic import (SHAPES, SYNTHETIC, SYNTHETIC_CLASSES, SYNTHETIC_LEVELS, TEXTURES, Scenes,
                        SyntheticLevel, render_scenes, sample_scenes, synthetic_dataset, synthetic_level)

__all__ = [
    "Batch", "DEFAULT_STORE_RESOLUTION", "Dataset", "DatasetError", "HELD_OUT_SPLITS", "IMAGE_SUFFIXES",
    "ImageStore", "SHAPES", "STORE_FORMAT", "SYNTHETIC", "SYNTHETIC_CLASSES", "SYNTHETIC_LEVELS", "Scenes",
    "StoreProblem", "SyntheticLevel", "TEXTURES", "TREE_LAYOUT", "balanced_subset", "channel_stats",
    "check_positive", "default_cache_dir", "find_cifar_pickles", "is_image_tree", "list_image_tree",
    "open_dataset", "open_store", "read_cifar_pickles", "read_image_tree", "render_scenes", "sample_scenes",
    "shifted_and_flipped", "square_image", "store_dataset", "store_resolution_for", "stored_dataset",
    "synthetic_dataset", "synthetic_level", "to_input", "verify_store",
]


def open_dataset(source: str | Path = SYNTHETIC, *, cache_dir: str | Path | None = None,
                 train_subset: int | None = None, val_subset: int | None = None, seed: int = 0,
                 progress: bool = False, store_resolution: int | None = None) -> Dataset:
    """Open ``"synthetic[:level]"``, an image-folder tree, or a CIFAR-10/100 pickle folder.

    ``train_subset``/``val_subset`` keep a seeded, class-balanced subset of each split
    (for the synthetic task they set the number of images, 5000/1000 by default).
    Image-folder trees are decoded once into an image store under ``cache_dir`` (default
    ``~/.cache/scalesearch``) at S = ``store_resolution`` px (default DEFAULT_STORE_RESOLUTION,
    capped at the images' own size): each image resized by its short side to S and
    center-cropped; ``progress`` shows a bar while building.
    """
    for name, value in (("train_subset", train_subset), ("val_subset", val_subset)):
        if value is not None:
            check_positive(name, value)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise DatasetError(f"seed must be an integer from 0 to 2^32-1 (got {seed!r})")
    level = synthetic_level(str(source))
    if level is not None:
        return synthetic_dataset(train_subset or 5000, val_subset or 1000, seed, level=level)
    root = Path(source).expanduser()
    if not root.exists():
        raise DatasetError(f"data set '{source}' does not exist (give '{SYNTHETIC}' or a folder: "
                           f"{TREE_LAYOUT}, or a CIFAR pickle folder)")
    pickles = find_cifar_pickles(root)
    if pickles is not None:
        name, classes, splits = read_cifar_pickles(pickles)
        subsets = {"train": train_subset, "val": val_subset}
        splits = {s: _take(arrays, balanced_subset(arrays[1], subsets[s], seed)) for s, arrays in splits.items()}
        return stored_dataset(name, classes, splits)
    if store_resolution is not None:
        check_positive("store_resolution", store_resolution)
    return read_image_tree(root, cache_dir, train_subset, val_subset, seed, progress, store_resolution)


def is_image_tree(source: str | Path) -> bool:
    """Whether ``source`` is read through an image store (a folder that is no CIFAR pickle folder)."""
    if synthetic_level(str(source)) is not None:
        return False
    root = Path(source).expanduser()
    return root.is_dir() and find_cifar_pickles(root) is None


def _take(arrays: tuple[np.ndarray, np.ndarray], index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, labels = arrays
    return images[index], labels[index]
