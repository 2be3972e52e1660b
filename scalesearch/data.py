"""The data sets that a grid search short-trains its candidates on.

``open_dataset`` puts one ``Dataset`` API over three sources:

* ``"synthetic"`` (the default): a procedurally generated 12-class task, shipped as code.
  Every image is rendered natively at the resolution asked for, so a larger input shows
  more real detail, as a photo taken with more pixels would; nothing is downloaded.
* a folder tree ``PATH/train/<class>/*.jpg|*.jpeg|*.png`` with a held-out split in
  ``PATH/val/<class>/`` or ``PATH/test/<class>/``, decoded once and cached on disk.
* the CIFAR-10/100 python-pickle layout that torchvision downloads.

Every source ends as uint8 images (N, 3, H, W) and int64 labels.  Batches are cut,
augmented, resized and normalised as whole tensors on the training device, so the data
side costs little next to the network, with no per-sample Python loops.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .errors import UserError

SYNTHETIC = "synthetic"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HELD_OUT_SPLITS = ("val", "test")
TREE_LAYOUT = "PATH/train/<class>/*.jpg|*.jpeg|*.png and PATH/val/<class>/ or PATH/test/<class>/"
CACHE_FORMAT = 1  # bump when the on-disk cache layout changes

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

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, num_classes={self.num_classes}, n_train={self.n_train}, "
                f"n_val={self.n_val}, native_resolution={self.native_resolution})")

    def train_batches(self, resolution: int, batch_size: int, generator: torch.Generator,
                      device: str | torch.device = "cpu") -> Iterator[Batch]:
        """One epoch in an order drawn from ``generator``, randomly shifted and flipped.

        Only full batches are yielded (a batch of one breaks batch norm); the images left
        over differ from epoch to epoch.  A split smaller than ``batch_size`` is one batch.
        """
        _check_positive("resolution", resolution)
        _check_positive("batch_size", batch_size)
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
        _check_positive("resolution", resolution)
        _check_positive("batch_size", batch_size)
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


def _check_positive(name: str, value: int) -> None:
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


# -- opening -------------------------------------------------------------------------

def open_dataset(source: str | Path = SYNTHETIC, *, cache_dir: str | Path | None = None,
                 train_subset: int | None = None, val_subset: int | None = None, seed: int = 0,
                 progress: bool = False) -> Dataset:
    """Open ``"synthetic"``, an image-folder tree, or a CIFAR-10/100 pickle folder.

    ``train_subset``/``val_subset`` keep a seeded, class-balanced subset of each split
    (for the synthetic task they set the number of images, 5000/1000 by default).
    Image-folder trees are decoded once and cached under ``cache_dir`` (default
    ``~/.cache/scalesearch``); ``progress`` shows a bar while decoding.  The images of a
    tree must share one size to form one array: any that differ are resized to the size
    of the first training image.
    """
    for name, value in (("train_subset", train_subset), ("val_subset", val_subset)):
        if value is not None:
            _check_positive(name, value)
    if str(source) == SYNTHETIC:
        return synthetic_dataset(train_subset or 5000, val_subset or 1000, seed)
    root = Path(source).expanduser()
    if not root.exists():
        raise DatasetError(f"data set '{source}' does not exist (give '{SYNTHETIC}' or a folder: "
                           f"{TREE_LAYOUT}, or a CIFAR pickle folder)")
    pickles = find_cifar_pickles(root)
    if pickles is not None:
        name, classes, splits = read_cifar_pickles(pickles)
        subsets = {"train": train_subset, "val": val_subset}
        splits = {s: _take(arrays, balanced_subset(arrays[1], subsets[s], seed)) for s, arrays in splits.items()}
    else:
        classes, splits = read_image_tree(root, cache_dir, train_subset, val_subset, seed, progress)
        name = root.resolve().name
    return stored_dataset(name, classes, splits)


def _take(arrays: tuple[np.ndarray, np.ndarray], index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, labels = arrays
    return images[index], labels[index]


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


# -- image-folder trees ----------------------------------------------------------------

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
    cache = Path(cache_dir or Path.home() / ".cache" / "scalesearch").expanduser()
    path = cache / f"{root.resolve().name}-{_listing_key(root, listings)}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        return stored["classes"], {s: (stored[f"{s}_images"], stored[f"{s}_labels"]) for s in listings}
    files = listings["train"].files + listings["val"].files
    size = _first_image_size(files[0])
    images = decode_images(files, size, progress, desc=f"decoding {root.name}")
    n_train = len(listings["train"].files)
    splits = {"train": (images[:n_train], listings["train"].labels),
              "val": (images[n_train:], listings["val"].labels)}
    _save_atomic(path, {"classes": classes,
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
        return sorted(e.path for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())


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
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20]


def _save_atomic(path: Path, payload: dict) -> None:
    # Concurrent trials may open the same tree: write aside, then rename into place.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


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


# -- CIFAR python pickles ------------------------------------------------------------------

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
    splits = {"train": _read_batches(train_files, label_key), "val": _read_batches(test_files, label_key)}
    return name, [_text(c) for c in classes], splits


def _read_batches(files: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for path in files:
        if not path.is_file():
            raise DatasetError(f"CIFAR pickle file '{path}' is missing")
        batch = _unpickle(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            side = math.isqrt(data.shape[1] // 3)
            images.append(data.reshape(len(data), 3, side, side))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError, IndexError) as exc:
            raise DatasetError(f"CIFAR pickle file '{path}' is malformed: {exc!r}") from None
    return np.concatenate(images), np.concatenate(labels)


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


# -- the synthetic task -----------------------------------------------------------------
#
# Class = shape x surface texture (plain, stripes or checks).  The textures are made of
# sinusoidal gratings of one spatial frequency, random per image over a wide range, and
# average to the plain object's colour, so once a grating is finer than the pixel grid
# can carry, stripes, checks and plain look the same: each step up in resolution
# resolves more of them, and telling stripes from checks takes some capacity too.
# Rendering is analytic (signed distances, band-limited gratings), so every resolution is
# a true native render, free of aliasing, rather than a resize.

SHAPES = ("disk", "square", "triangle", "cross")
TEXTURES = ("plain", "stripes", "checks")
SYNTHETIC_CLASSES = tuple(f"{s}-{t}" for s in SHAPES for t in TEXTURES)
CLUTTER = 5               # distractor ellipses and bars behind the object
CLUTTER_RADIUS = (0.01, 0.07)     # their long semi-axis, in image widths
PERIOD_RANGE = (1 / 128, 1 / 8)   # texture period, in image widths (log-uniform)
RADIUS_RANGE = (0.15, 0.30)       # object radius, in image widths
PIXEL_BLUR = 0.5          # the renderer's Gaussian pixel filter, in pixels
NOISE = 0.04              # per-pixel sensor noise, in 0..1 units
RENDER_CACHE = 4          # (split, resolution, device) renders kept in memory


@dataclass(frozen=True)
class Scenes:
    """Resolution-free parameters of synthetic images; lengths are in image widths."""

    label: torch.Tensor            # (N,) shape index * len(TEXTURES) + texture index
    center: torch.Tensor           # (N, 2) x, y
    radius: torch.Tensor           # (N,)
    angle: torch.Tensor            # (N,)
    period: torch.Tensor           # (N,)
    phase: torch.Tensor            # (N, 2)
    colors: torch.Tensor           # (N, 2, 3) the texture's two colours
    background: torch.Tensor       # (N, 2, 3) the ends of a linear gradient
    gradient: torch.Tensor         # (N,) its direction
    clutter_center: torch.Tensor   # (N, CLUTTER, 2)
    clutter_radii: torch.Tensor    # (N, CLUTTER, 2)
    clutter_angle: torch.Tensor    # (N, CLUTTER)
    clutter_color: torch.Tensor    # (N, CLUTTER, 3)

    def __len__(self) -> int:
        return len(self.label)

    def part(self, index: slice, device: torch.device) -> "Scenes":
        return Scenes(**{f.name: getattr(self, f.name)[index].to(device) for f in fields(self)})


def sample_scenes(n: int, seed: int) -> Scenes:
    """``n`` random scenes; labels cycle through the classes so any prefix is balanced."""
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=g)

    # One dark and one light colour per channel, so that every texture has contrast.
    colors = torch.stack([uniform(n, 3, high=0.45), uniform(n, 3, low=0.55)], 1)
    # A dark background, so that the mid-toned object always stands out from it, and by
    # the same polarity: the task should be about shape and texture, not finding things.
    level = uniform(n, 1, 1, high=0.2)
    log_period = uniform(n, low=math.log(PERIOD_RANGE[0]), high=math.log(PERIOD_RANGE[1]))
    return Scenes(
        label=torch.arange(n) % len(SYNTHETIC_CLASSES),
        center=uniform(n, 2, low=0.3, high=0.7),
        radius=uniform(n, low=RADIUS_RANGE[0], high=RADIUS_RANGE[1]),
        angle=uniform(n, high=2 * math.pi),
        period=log_period.exp(),
        phase=uniform(n, 2, high=2 * math.pi),
        colors=colors,
        background=(level + uniform(n, 2, 3, low=-0.1, high=0.1)).clamp(0, 1),
        gradient=uniform(n, high=2 * math.pi),
        clutter_center=uniform(n, CLUTTER, 2),
        clutter_radii=torch.stack([uniform(n, CLUTTER, low=CLUTTER_RADIUS[0], high=CLUTTER_RADIUS[1]),
                                   uniform(n, CLUTTER, low=0.004, high=0.03)], -1),
        clutter_angle=uniform(n, CLUTTER, high=math.pi),
        clutter_color=uniform(n, CLUTTER, 3),
    )


def render_scenes(scenes: Scenes, resolution: int, device: str | torch.device = "cpu",
                  noise_seed: int = 0) -> torch.Tensor:
    """Render scenes natively at ``resolution``: uint8 (N, 3, resolution, resolution).

    Work is split into chunks of about 4M pixels to bound memory at large resolutions.
    """
    device = torch.device(device)
    noise = torch.Generator(device=device).manual_seed(noise_seed)
    out = torch.empty((len(scenes), 3, resolution, resolution), dtype=torch.uint8, device=device)
    step = max(1, (1 << 22) // (resolution * resolution))
    for start in range(0, len(scenes), step):
        part = scenes.part(slice(start, start + step), device)
        image = _render(part, resolution)
        image += NOISE * torch.randn(image.shape, generator=noise, device=device)
        out[start:start + step] = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out


def _render(s: Scenes, resolution: int) -> torch.Tensor:
    """Float (n, 3, R, R) in 0..1: background gradient, clutter, then the textured object."""
    px = 1.0 / resolution
    grid = (torch.arange(resolution, device=s.label.device, dtype=torch.float32) + 0.5) * px
    x, y = grid.view(1, 1, -1), grid.view(1, -1, 1)
    along = ((x - 0.5) * s.gradient.cos().view(-1, 1, 1)
             + (y - 0.5) * s.gradient.sin().view(-1, 1, 1) + 0.5).clamp(0, 1)
    c0, c1 = s.background[:, 0, :, None, None], s.background[:, 1, :, None, None]
    # Pixels in a flat canvas with one spare pixel (see _paint_clutter); image is a view.
    canvas = grid.new_empty((len(s), 3, resolution * resolution + 1))
    image = canvas[:, :, :-1].unflatten(2, (resolution, resolution))
    image.copy_(c0 + (c1 - c0) * along[:, None])
    for k in range(CLUTTER):
        _paint_clutter(canvas, resolution, s.clutter_center[:, k], s.clutter_radii[:, k],
                       s.clutter_angle[:, k], s.clutter_color[:, k])
    a, b = _rotated(x, y, s.center, s.angle)
    r = s.radius.view(-1, 1, 1)
    shapes = [_SHAPE_DISTANCE[name] for name in SHAPES]
    distance = _per_kind(s.label // len(TEXTURES), shapes, a / r, b / r) * r
    t = _texture(s.label % len(TEXTURES), a, b, s.period.view(-1, 1, 1), s.phase, resolution)
    mid = s.colors.mean(1)[:, :, None, None]
    half = (s.colors[:, 1] - s.colors[:, 0])[:, :, None, None] / 2
    coverage = _coverage(distance, px)[:, None]
    return image.lerp_(mid + half * t[:, None], coverage.expand_as(image))


def _rotated(x: torch.Tensor, y: torch.Tensor, center: torch.Tensor,
             angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's coordinates in the frame of an object at ``center`` turned by ``angle``."""
    dx, dy = x - center[:, 0, None, None], y - center[:, 1, None, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return cos * dx + sin * dy, cos * dy - sin * dx


def _coverage(distance: torch.Tensor, px: float) -> torch.Tensor:
    # Fraction of a pixel inside the shape: a one-pixel ramp across the edge (antialiasing).
    return (0.5 - distance / px).clamp_(0, 1)


def _paint_clutter(canvas: torch.Tensor, res: int, center: torch.Tensor, radii: torch.Tensor,
                   angle: torch.Tensor, color: torch.Tensor) -> None:
    """Paint one small ellipse per image into ``canvas`` (n, 3, res * res + 1), in place.

    Distractors cover a few percent of the image, so evaluating them on a window rather
    than the full grid keeps clutter cheap at any resolution.  Window pixels that fall
    outside the image are routed to the canvas's last, spare pixel.
    """
    n = len(canvas)
    side = 2 * math.ceil(CLUTTER_RADIUS[1] * res) + 2
    origin = (center * res).floor().long() - side // 2                       # (n, 2) x, y
    cols = origin[:, 0, None] + torch.arange(side, device=canvas.device)      # (n, side)
    rows = origin[:, 1, None] + torch.arange(side, device=canvas.device)
    x, y = ((cols + 0.5) / res)[:, None, :], ((rows + 0.5) / res)[:, :, None]
    a, b = _rotated(x, y, center, angle)
    distance = _ellipse_distance(a, b, radii[:, 0, None, None], radii[:, 1, None, None])
    coverage = _coverage(distance, 1.0 / res).view(n, 1, -1)
    inside = ((rows >= 0) & (rows < res))[:, :, None] & ((cols >= 0) & (cols < res))[:, None, :]
    flat_index = torch.where(inside, rows[:, :, None] * res + cols[:, None, :], res * res)
    flat_index = flat_index.view(n, 1, -1).expand(n, 3, -1)
    painted = canvas.gather(2, flat_index).lerp_(color[:, :, None].expand(n, 3, side * side),
                                                 coverage.expand(n, 3, -1))
    canvas.scatter_(2, flat_index, painted)


def _norm(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # sqrt(u^2 + v^2); torch's hypot guards against overflow at twice the cost, needless here.
    return torch.addcmul(u * u, v, v).sqrt_()


def _ellipse_distance(a: torch.Tensor, b: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    # First-order distance estimate (q - 1) / |grad q| of the implicit q = |(a/ra, b/rb)|.
    q = _norm(a / ra, b / rb)
    grad = _norm(a / ra**2, b / rb**2) / q.clamp_min(1e-6)
    return (q - 1) / grad.clamp_min(1e-6)


def _box(u: torch.Tensor, v: torch.Tensor, half_u: float, half_v: float) -> torch.Tensor:
    du, dv = u.abs() - half_u, v.abs() - half_v
    return _norm(du.clamp(min=0), dv.clamp(min=0)) + torch.maximum(du, dv).clamp(max=0)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral triangle centred on its centroid (Quilez's exact distance), area pi.
    half_side, k = math.sqrt(math.pi / math.sqrt(3)), math.sqrt(3)
    pu, pv = u.abs() - half_side, v + half_side / k
    fold = pu + k * pv > 0
    pu, pv = torch.where(fold, (pu - k * pv) / 2, pu), torch.where(fold, (-k * pu - pv) / 2, pv)
    pu = pu - pu.clamp(-2 * half_side, 0)
    return -_norm(pu, pv) * torch.sign(pv)


# Signed distances in units of the object radius; each shape has an area close to pi so
# that size alone does not give the class away.
_SHAPE_DISTANCE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "disk": lambda u, v: _norm(u, v) - 1,
    "square": lambda u, v: _box(u, v, 0.886, 0.886),
    "triangle": _triangle,
    "cross": lambda u, v: torch.minimum(_box(u, v, 1.15, 0.42), _box(u, v, 0.42, 1.15)),
}


def _per_kind(kind: torch.Tensor, functions: Sequence[Callable[..., torch.Tensor]],
              *args: torch.Tensor) -> torch.Tensor:
    """``functions[kind[i]]`` applied to image i's slice of ``args``, each function called
    once on all of its images (the output has the shape of ``args[0]``)."""
    out = torch.empty_like(args[0])
    for index, function in enumerate(functions):
        chosen = (kind == index).nonzero().squeeze(1)
        if len(chosen):
            out[chosen] = function(*(x[chosen] for x in args))
    return out


# Textures of the object's rotated coordinates (a, b) as functions of the angular
# frequency w = 2 pi / period and two phases, in -1..1, built from gratings of frequency
# exactly 1 / period so that one gain (see _texture) band-limits them exactly.
_TEXTURE: dict[str, Callable[..., torch.Tensor]] = {
    "plain": lambda a, b, w, p0, p1: torch.zeros_like(a),
    "stripes": lambda a, b, w, p0, p1: torch.cos(w * a + p0),
    "checks": lambda a, b, w, p0, p1: torch.cos(w / math.sqrt(2) * a + p0) * torch.cos(w / math.sqrt(2) * b + p1),
}


def _texture(texture: torch.Tensor, a: torch.Tensor, b: torch.Tensor, period: torch.Tensor,
             phase: torch.Tensor, resolution: int) -> torch.Tensor:
    """The object's texture in -1..1, attenuated as the pixel grid would blur it.

    The gain is the response of a Gaussian pixel filter at frequency 1 / period, and zero
    past the Nyquist limit, so that detail this resolution cannot carry fades to the mean
    colour instead of aliasing.
    """
    cycles_per_pixel = 1 / (period * resolution)
    gain = torch.exp(-2 * (math.pi * PIXEL_BLUR * cycles_per_pixel) ** 2) * (cycles_per_pixel < 0.5)
    w = (2 * math.pi / period).expand_as(a)
    p0, p1 = (phase[:, i, None, None].expand_as(a) for i in range(2))
    return gain * _per_kind(texture, [_TEXTURE[t] for t in TEXTURES], a, b, w, p0, p1)


def synthetic_dataset(n_train: int = 5000, n_val: int = 1000, seed: int = 0) -> Dataset:
    """The synthetic task, deterministic given ``seed``.

    The scenes do not depend on the resolution or the device; only the pixel noise is
    drawn per resolution, from a generator on the rendering device.
    """
    scenes = {"train": sample_scenes(n_train, 2 * seed), "val": sample_scenes(n_val, 2 * seed + 1)}
    renders: OrderedDict[tuple[str, int, str], torch.Tensor] = OrderedDict()

    def rendered(split: str, resolution: int, device: torch.device) -> torch.Tensor:
        key = (split, resolution, str(device))
        if key not in renders:
            noise_seed = (2 * seed + (split == "val")) * 100_003 + resolution
            renders[key] = render_scenes(scenes[split], resolution, device, noise_seed)
            while len(renders) > RENDER_CACHE:
                renders.popitem(last=False)
        renders.move_to_end(key)
        return renders[key]

    sample = scenes["train"].part(slice(0, 512), torch.device("cpu"))
    mean, std = channel_stats(render_scenes(sample, 32))
    labels = {s: sc.label.clone() for s, sc in scenes.items()}
    return Dataset(SYNTHETIC, SYNTHETIC_CLASSES, labels, rendered, mean, std, native_resolution=None)
