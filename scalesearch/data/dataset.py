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

Take = Callable[[str, "torch.Tensor | slice", int, torch.device], torch.Tensor]


class Dataset:
    """Labelled uint8 images served as float batches at any input resolution.

    Either ``images(split, resolution, device)`` supplies the whole uint8 tensor of a split,
    already on ``device`` (a render at ``resolution`` for the synthetic task, the arrays of a
    CIFAR pickle folder), or ``take(split, index, resolution, device)`` supplies just the rows
    ``index`` (a tensor of positions or a slice) of a split: an image store read by index
    (``store.py``), so no process holds a copy of the whole set.  Normalisation uses the
    training split's per-channel mean and std.
    """

    def __init__(self, name: str, classes: Sequence[str], labels: dict[str, torch.Tensor],
                 images: Callable[[str, int, torch.device], torch.Tensor] | None,
                 mean: tuple[float, ...], std: tuple[float, ...],
                 native_resolution: int | None, *, take: Take | None = None) -> None:
        self.name = name
        self.classes = list(classes)
        self.native_resolution = native_resolution
        self.mean = mean
        self.std = std
        self._labels = {"cpu": labels}
        if take is None:
            if images is None:
                raise ValueError("a Dataset needs images or take")

            def take(split: str, index: torch.Tensor | slice, resolution: int, device: torch.device) -> torch.Tensor:
                return images(split, resolution, device)[index]
        self._take = take

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
        labels = self._labels_on(device)["train"]
        batch_size = min(batch_size, len(labels))
        order = torch.randperm(len(labels), generator=generator, device=generator.device).to(device)
        for start in range(0, len(labels) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            x = fitted(self._take("train", index, resolution, device), resolution)
            yield to_input(shifted_and_flipped(x, generator), resolution, self.mean, self.std), labels[index]

    def val_batches(self, resolution: int, batch_size: int,
                    device: str | torch.device = "cpu") -> Iterator[Batch]:
        """The held-out split in order, un-augmented (the center view), resized to ``resolution``."""
        check_positive("resolution", resolution)
        check_positive("batch_size", batch_size)
        device = torch.device(device)
        labels = self._labels_on(device)["val"]
        for start in range(0, len(labels), batch_size):
            x = fitted(self._take("val", slice(start, start + batch_size), resolution, device), resolution)
            yield to_input(x.contiguous(), resolution, self.mean, self.std), labels[start:start + batch_size]

    def _labels_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._labels:
            self._labels[key] = {s: y.to(device) for s, y in self._labels["cpu"].items()}
        return self._labels[key]


def check_positive(name: str, value: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise DatasetError(f"{name} must be a positive integer (got {value!r})")


def shifted_and_flipped(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A batch of images, each shifted by up to 1/8 of its side and flipped half the time.

    The standard CIFAR "pad and random crop" plus flip (edges replicated instead of zero
    padding), done for the whole batch at once: each image's shifted, possibly mirrored, pixel
    positions as one flat index, and one gather over the channels: 4 ms for 256 images of
    64 x 64 on one Zen 3 core (docs/performance.md).
    """
    n, c, h, w = images.shape
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    dy = torch.randint(-pad_h, pad_h + 1, (n, 1), generator=generator, device=generator.device)
    dx = torch.randint(-pad_w, pad_w + 1, (n, 1), generator=generator, device=generator.device)
    flip = torch.rand((n, 1), generator=generator, device=generator.device) < 0.5
    rows = (torch.arange(h, device=dy.device) + dy).clamp_(0, h - 1)
    cols = torch.arange(w, device=dx.device).expand(n, w)
    cols = (torch.where(flip, w - 1 - cols, cols) + dx).clamp_(0, w - 1)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).to(images.device)
    # (h, w) merge into one dimension in either memory format: the gather reads channels-last
    # pixels in place and writes a contiguous batch.
    return images.reshape(n, c, h * w).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


def fitted(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 images larger than ``resolution`` (a store's square) downscaled to it, still uint8,
    on a CPU: torch's uint8 antialiased resize of a channels-last batch, about 6x faster there
    than the float one (docs/performance.md); any other batch as given (an upscale, and every
    resize on a GPU, is done in float by ``to_input``)."""
    h, w = images.shape[-2:]
    if images.device.type != "cpu" or images.dtype != torch.uint8 or h <= resolution or w <= resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False)


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


def store_dataset(name: str, store) -> Dataset:  # noqa: ANN001 - a store.ImageStore
    """A Dataset read from an image store by index: each batch copies only its own rows out of
    the memory map (the pages are the OS page cache's, shared by every process that maps them)."""
    rows = {s: store.rows(s) for s in store.header.splits}
    labels = {s: torch.from_numpy(store.labels[r]) for s, r in rows.items()}

    def take(split: str, index: torch.Tensor | slice, resolution: int, device: torch.device) -> torch.Tensor:
        if isinstance(index, slice):
            at = rows[split][index]
            # An evaluation's pass runs in order: read this batch and the next ahead.
            store.will_need(rows[split][index.start:index.stop + len(at)])
        else:
            at = rows[split][index.cpu().numpy()]
        x = torch.from_numpy(store.images[at])  # a copy of these rows alone, (B, S, S, 3)
        x = x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x
        return x.permute(0, 3, 1, 2)            # (B, 3, S, S), channels-last in memory

    header = store.header
    return Dataset(name, header.classes, labels, None, tuple(header.mean), tuple(header.std),
                   native_resolution=header.resolution, take=take)

