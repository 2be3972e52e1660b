"""CIFAR-10/100 in the python-pickle layout that torchvision downloads."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from .dataset import DatasetError


def find_cifar_pickles(root: Path) -> Path | None:
    """The folder holding CIFAR-10 (batches.meta) or CIFAR-100 (meta, train) pickles, if any."""
    for folder in (root, root / "cifar-10-batches-py", root / "cifar-100-python"):
        if (folder / "batches.meta").is_file() or ((folder / "meta").is_file() and (folder / "train").is_file()):
            return folder
    return None


def read_cifar_pickles(folder: Path) -> tuple[str, list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Name, classes and (images (N, 3, H, W) uint8, labels) of the train and test splits."""
    if (folder / "batches.meta").is_file():
        name, classes = "cifar10", _unpickle(folder / "batches.meta")["label_names"]
        train_files = sorted(folder.glob("data_batch_*"))
        test_files, label_key = [folder / "test_batch"], "labels"
    else:
        name, classes = "cifar100", _unpickle(folder / "meta")["fine_label_names"]
        train_files, test_files, label_key = [folder / "train"], [folder / "test"], "fine_labels"
    if not train_files:
        raise DatasetError(f"'{folder}' has batches.meta but no data_batch_* files")
    classes = [_text(c) for c in classes]
    splits = {"train": _read_batches(train_files, label_key, len(classes)),
              "val": _read_batches(test_files, label_key, len(classes))}
    return name, classes, splits


def _read_batches(files: Sequence[Path], label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Every batch checked as it is read: one label per image, each a class index, so a
    damaged file is refused here instead of pairing images with the wrong labels."""
    images, labels = [], []
    for path in files:
        if not path.is_file():
            raise DatasetError(f"CIFAR pickle file '{path}' is missing")
        batch = _unpickle(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            side = math.isqrt(data.shape[1] // 3)
            if data.ndim != 2 or 3 * side * side != data.shape[1]:
                raise ValueError(f"rows of {data.shape[1:]} values are not 3 x H x H pixels")
            batch_labels = np.asarray(batch[label_key])
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise DatasetError(f"CIFAR pickle file '{path}' is malformed: {exc}") from None
        problem = _label_problem(batch_labels, len(data), num_classes, label_key)
        if problem:
            raise DatasetError(f"CIFAR pickle file '{path}' is malformed: {problem}")
        images.append(data.reshape(len(data), 3, side, side))
        labels.append(batch_labels.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _label_problem(labels: np.ndarray, num_images: int, num_classes: int, key: str) -> str:
    """What is wrong with a batch's labels ("" when nothing is)."""
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        return f"'{key}' is not a list of integer class indices (shape {labels.shape}, {labels.dtype})"
    if len(labels) != num_images:
        return f"{len(labels):,} labels for {num_images:,} images"
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if len(outside):
        return (f"label {int(outside[0])} is outside 0..{num_classes - 1} ({num_classes} classes in the "
                f"meta file; {len(outside):,} such labels)")
    return ""


class _ArrayUnpickler(pickle.Unpickler):
    """Loads plain data and numpy arrays only, so a data file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DatasetError(f"cannot read CIFAR pickle file '{path}': {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"CIFAR pickle file '{path}' does not hold a dict")
    return {_text(k): v for k, v in data.items()}


def _text(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)

