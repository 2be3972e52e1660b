"""The Dataset API and its batching: one interface over every source of images.

Every source ends as uint8 images (N, 3, H, W) and int64 labels.  Batches are cut,
augmented, resized and normalised as whole tensors on the training device, so the data
side costs little next to the network, with no per-sample Python loops.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor]


class DatasetError(UserError):
    """A data set cannot be opened; the one-line message names the bad path or value."""


# -- the Dataset ---------------------------------------------------------------------

class Dataset:
    """Labelled uint8 images served as float batches at any input resolution.

    ``images(split, resolution, device)`` supplies the uint8 tensor for a split, already
    on ``device``: the stored arrays for real data (resized here per batch), a render at
    ``resolution`` for the synthetic task.  Normalisation uses the training split's
    per-channel mean and std.
    """

    def __init__(self, name: str, classes: Sequence[str], labels: dict[str, torch.Tensor],
                 images: Callable[[str, int, torch.device], torch.Tensor],
                 mean: tuple[float, ...], std: tuple[float, ...],
                 native_resolution: int | None) -> None:
        self.name = name
        self.classes = list(classes)
        self.native_resolution = native_resolution
        self.mean = mean
        self.std = std
        self._labels = {"cpu": labels}
        self._images = images

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        return len(self._labels["cpu"]["train"])

    @property
    def n_val(self) -> int:
        return len(self._labels["cpu"]["val"])

    def class_counts(self, split: str) -> list[int]:
        """Images per class in ``split`` ("train" or "val"), in class order."""
        labels = self._labels["cpu"][split]
        return torch.bincount(labels.cpu(), minlength=self.num_classes)[:self.num_classes].tolist()

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, num_classes={self.num_classes}, n_train={self.n_train}, "
                f"n_val={self.n_val}, native_resolution={self.native_resolution})")

    def train_batches(self, resolution: int, batch_size: int, generator: torch.Generator,
                      device: str | torch.device = "cpu") -> Iterator[Batch]:
        """One epoch in an order drawn from ``generator``, randomly shifted and flipped.

        Only full batches are yielded (a batch of one breaks batch norm); the images left
        over differ from epoch to epoch.  A split smaller than ``batch_size`` is one batch.
        """
        check_positive("resolution", resolution)
        check_positive("batch_size", batch_size)
        device = torch.device(device)
        images = self._images("train", resolution, device)
        labels = self._labels_on(device)["train"]
        batch_size = min(batch_size, len(labels))
        order = torch.randperm(len(labels), generator=generator, device=generator.device).to(device)
        for start in range(0, len(labels) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            x = shifted_and_flipped(images, index, generator)
            yield to_input(x, resolution, self.mean, self.std), labels[index]

    def val_batches(self, resolution: int, batch_size: int,
                    device: str | torch.device = "cpu") -> Iterator[Batch]:
        """The held-out split in order, un-augmented, resized to ``resolution``."""
        check_positive("resolution", resolution)
        check_positive("batch_size", batch_size)
        device = torch.device(device)
        images = self._images("val", resolution, device)
        labels = self._labels_on(device)["val"]
        for start in range(0, len(labels), batch_size):
            x = images[start:start + batch_size]
            yield to_input(x, resolution, self.mean, self.std), labels[start:start + batch_size]

    def _labels_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._labels:
            self._labels[key] = {s: y.to(device) for s, y in self._labels["cpu"].items()}
        return self._labels[key]


def check_positive(name: str, value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise DatasetError(f"{name} must be a positive integer (got {value!r})")


def shifted_and_flipped(images: torch.Tensor, index: torch.Tensor,
                        generator: torch.Generator) -> torch.Tensor:
    """The images at ``index``, each shifted by up to 1/8 of its side and flipped half the time.

    The standard CIFAR "pad and random crop" plus flip (edges replicated instead of zero
    padding), done for the whole batch at once: one advanced index picks every image's
    shifted rows, one gather its shifted, possibly mirrored, columns.
    """
    n, (c, h, w) = len(index), images.shape[1:]
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    dy = torch.randint(-pad_h, pad_h + 1, (n, 1), generator=generator, device=generator.device)
    dx = torch.randint(-pad_w, pad_w + 1, (n, 1), generator=generator, device=generator.device)
    flip = torch.rand((n, 1), generator=generator, device=generator.device) < 0.5
    rows = (torch.arange(h, device=dy.device) + dy).clamp_(0, h - 1).to(images.device)
    cols = torch.arange(w, device=dx.device).expand(n, w)
    cols = (torch.where(flip, w - 1 - cols, cols) + dx).clamp_(0, w - 1).to(images.device)
    channels = torch.arange(c, device=images.device)
    picked = images[index[:, None, None], channels[None, :, None], rows[:, None, :]]
    return picked.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def to_input(images: torch.Tensor, resolution: int, mean: Sequence[float],
             std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float32 (B, 3, resolution, resolution).

    Resizing uses antialiasing so that a downscaled image is a fair low-resolution view
    rather than an aliased one.
    """
    x = images.float()
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                          antialias=True, align_corners=False)
    m, s = _channel_constants(tuple(mean), tuple(std), x.device)
    return x.sub_(m).div_(s)


@lru_cache(maxsize=32)
def _channel_constants(mean: tuple[float, ...], std: tuple[float, ...],
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # In 0..255 units, shaped to broadcast over (B, 3, H, W); made once per device.
    def as_tensor(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).mul(255).view(1, -1, 1, 1)
    return as_tensor(mean), as_tensor(std)


def channel_stats(images: torch.Tensor, limit: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 units) of uint8 images (N, C, H, W).

    Normalisation needs no more precision than an evenly strided sample of ``limit``
    images gives; exact 256-bin histograms avoid a float copy of them.
    """
    sample = images[::max(1, math.ceil(len(images) / limit))]
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(sample.shape[1]):
        counts = torch.bincount(sample[:, c].reshape(-1).cpu(), minlength=256).double()
        p = counts / counts.sum()
        mean = float((p * values).sum())
        means.append(mean)
        stds.append(max(math.sqrt(float((p * (values - mean) ** 2).sum())), 1e-3))
    return tuple(means), tuple(stds)


def balanced_subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items with classes as equal as the data allows.

    Items are dealt round-robin over the classes, each class in a seeded random order,
    so the first ``n`` are stratified; a class that runs out leaves its share to others.
    """
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    perm = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[perm]
    by_class = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[by_class]
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(perm[np.argsort(rank, kind="stable")[:n]])



def stored_dataset(name: str, classes: Sequence[str],
                   splits: dict[str, tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]]) -> Dataset:
    """A Dataset over decoded uint8 arrays (N, 3, H, W), copied to each device once."""
    images = {s: torch.as_tensor(x, dtype=torch.uint8) for s, (x, _) in splits.items()}
    labels = {s: torch.as_tensor(y, dtype=torch.int64) for s, (_, y) in splits.items()}
    by_device: dict[str, dict[str, torch.Tensor]] = {"cpu": images}

    def on_device(split: str, resolution: int, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in by_device:
            by_device[key] = {s: x.to(device) for s, x in images.items()}
        return by_device[key][split]

    mean, std = channel_stats(images["train"])
    h, w = images["train"].shape[-2:]
    return Dataset(name, classes, labels, on_device, mean, std, native_resolution=min(h, w))

