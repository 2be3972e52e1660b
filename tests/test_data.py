"""Data sets: the synthetic task, image-folder trees, CIFAR pickles, errors, real CIFAR-10."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalesearch import data
from scalesearch.data import DatasetError, decode, open_dataset, synthetic

CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def batches(ds, resolution, batch_size, seed=0):
    return list(ds.train_batches(resolution, batch_size, torch.Generator().manual_seed(seed)))


# -- synthetic ---------------------------------------------------------------------

def test_synthetic_shapes_dtypes_and_classes():
    ds = open_dataset("synthetic:easy", train_subset=48, val_subset=24)
    assert (ds.name, ds.num_classes, ds.n_train, ds.n_val) == ("synthetic", 12, 48, 24)  # the default level
    assert ds.classes == list(data.SYNTHETIC_CLASSES) and ds.native_resolution is None
    for resolution in (24, 40):
        x, y = batches(ds, resolution, 16)[0]
        assert x.shape == (16, 3, resolution, resolution) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < ds.num_classes
        xv, yv = next(ds.val_batches(resolution, 100))
        assert xv.shape == (24, 3, resolution, resolution) and len(yv) == 24


def test_synthetic_levels_are_named_by_the_source():
    default = open_dataset("synthetic", train_subset=64, val_subset=32)
    level = data.SYNTHETIC_LEVELS[synthetic.DEFAULT_LEVEL]
    assert (default.name, default.classes) == ("synthetic", list(level.classes))
    hard = open_dataset("synthetic:hard", train_subset=64, val_subset=48)
    assert hard.name == "synthetic:hard"
    assert hard.num_classes == 24 and len(set(hard.classes)) == 24
    labels = torch.cat([y for _, y in hard.val_batches(16, 64)])
    assert torch.bincount(labels, minlength=24).tolist() == [2] * 24
    # Every grating of the hard level is visible at the 32 px base (a period of more than
    # two pixels), so what a larger network or input adds there is capacity or sharpness.
    assert data.SYNTHETIC_LEVELS["hard"].period_range[0] * 32 > 2
    x, _ = next(hard.val_batches(40, 8))
    assert x.shape == (8, 3, 40, 40) and bool(torch.isfinite(x).all())
    assert "synthetic:easy" in one_line_error("synthetic:medium")


def test_the_harder_level_is_hard_made_harder_to_see():
    """"harder" keeps "hard"'s 24 classes and visible gratings; only seeing them is harder:
    smaller objects, more clutter, more sensor noise (measured on a flat grey image)."""
    hard, harder = data.SYNTHETIC_LEVELS["hard"], data.SYNTHETIC_LEVELS["harder"]
    ds = open_dataset("synthetic:harder", train_subset=48, val_subset=24)
    assert ds.name == "synthetic:harder" and ds.classes == list(hard.classes)
    assert harder.period_range[0] * 32 > 2
    assert harder.radius_range[0] < hard.radius_range[0] and harder.clutter > hard.clutter
    scenes = data.sample_scenes(64, seed=0, level=harder)
    grey = dataclasses.replace(scenes, background=torch.full_like(scenes.background, 0.5),
                               clutter_center=scenes.clutter_center[:, :0],
                               colors=torch.full_like(scenes.colors, 0.5))
    def noise(level):
        x = data.render_scenes(grey, 32, noise=level.noise).float() / 255
        return float(x.std())
    assert noise(harder) == pytest.approx(0.12, abs=0.01) and noise(hard) == pytest.approx(0.04, abs=0.01)


def test_every_shape_and_texture_renders_distinctly():
    """Each outline covers about the same area (size gives nothing away), and no two
    shapes or textures render alike."""
    scene = data.sample_scenes(1, seed=0)
    def render(shape, texture="plain"):
        one = dataclasses.replace(scene, shape=torch.tensor([synthetic.ALL_SHAPES.index(shape)]),
                                  texture=torch.tensor([synthetic.ALL_TEXTURES.index(texture)]),
                                  radius=torch.tensor([0.3]), period=torch.tensor([1 / 16]),
                                  center=torch.tensor([[0.5, 0.5]]), clutter_center=torch.full((1, 5, 2), -1.0))
        return data.render_scenes(one, 64, noise=0).float()
    background = render("disk")[..., :2, :2].mean()
    areas = {}
    for shape in synthetic.ALL_SHAPES:
        image = render(shape)
        areas[shape] = float(((image - background).abs().sum(1) > 30).float().mean())
    assert max(areas.values()) / min(areas.values()) < 1.35, areas
    shapes = [render(s) for s in synthetic.ALL_SHAPES]
    textures = [render("square", t) for t in synthetic.ALL_TEXTURES]
    for group in (shapes, textures):
        for i in range(len(group)):
            for j in range(i):
                assert (group[i] - group[j]).abs().max() > 40


def test_synthetic_is_deterministic_given_seed():
    first = batches(open_dataset(train_subset=36, val_subset=12, seed=5), 32, 12)
    again = batches(open_dataset(train_subset=36, val_subset=12, seed=5), 32, 12)
    other = batches(open_dataset(train_subset=36, val_subset=12, seed=6), 32, 12)
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(first[0][0], other[0][0])


def test_synthetic_classes_are_balanced():
    ds = open_dataset("synthetic:easy", train_subset=120, val_subset=60)
    for split in ("train", "val"):
        labels = torch.cat([y for _, y in ds.val_batches(16, 50)]) if split == "val" else \
            torch.cat([y for _, y in batches(ds, 16, 120)])
        counts = torch.bincount(labels, minlength=ds.num_classes)
        assert counts.min() == counts.max()


def test_synthetic_detail_is_rendered_natively_not_interpolated():
    """Stripes with a 3-pixel period at 64 px show at 64 px and vanish at 32 px (finer
    than the pixel grid there), instead of aliasing into a spurious coarse pattern."""
    scene = data.sample_scenes(1, seed=0)
    def with_texture(name):
        return dataclasses.replace(scene, shape=torch.tensor([data.SHAPES.index("square")]),
                                   texture=torch.tensor([data.TEXTURES.index(name)]),
                                   radius=torch.tensor([0.3]), period=torch.tensor([3 / 64]))
    def difference(resolution):
        striped = data.render_scenes(with_texture("stripes"), resolution, noise_seed=1).float()
        plain = data.render_scenes(with_texture("plain"), resolution, noise_seed=1).float()
        return (striped - plain).abs().max().item()
    assert difference(32) <= 1  # identical up to rounding
    assert difference(64) > 40


def test_synthetic_render_cache_reuses_renders(monkeypatch):
    ds = open_dataset(train_subset=24, val_subset=12)
    calls = []
    real = synthetic.render_scenes
    monkeypatch.setattr(synthetic, "render_scenes", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    for _ in range(2):
        batches(ds, 20, 12)
        list(ds.val_batches(20, 12))
    assert calls == [20, 20]  # train and val, once each


# -- batching -----------------------------------------------------------------------

def test_train_batches_are_full_shuffled_and_augmented():
    ds = open_dataset(train_subset=50, val_subset=10)
    epoch = batches(ds, 16, 16)
    assert [len(y) for _, y in epoch] == [16, 16, 16]  # the 2 left over are skipped
    val_x = torch.cat([x for x, _ in ds.val_batches(16, 4)])
    assert val_x.shape[0] == 10
    assert not torch.equal(epoch[0][1], batches(ds, 16, 16, seed=1)[0][1])


def test_batch_size_larger_than_split_gives_one_batch():
    ds = open_dataset(train_subset=10, val_subset=5)
    assert [len(y) for _, y in batches(ds, 16, 64)] == [10]


def test_shifted_and_flipped_moves_pixels_without_mixing_images():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.int64).view(2, 3, 16, 16).to(torch.uint8)
    images[1] = 7  # a flat image stays flat under any shift or flip
    out = data.shifted_and_flipped(images.flip(0), torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.uint8
    assert bool((out[0] == 7).all())


def test_balanced_subset_is_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 10, 2])
    pick = data.balanced_subset(labels, 20, seed=0)
    counts = np.bincount(labels[pick], minlength=4)
    assert counts.sum() == 20 and counts[3] == 2 and counts.max() - counts[:3].min() <= 1
    assert np.array_equal(pick, data.balanced_subset(labels, 20, seed=0))
    assert not np.array_equal(pick, data.balanced_subset(labels, 20, seed=1))
    assert len(data.balanced_subset(labels, None, seed=0)) == len(labels)


# -- image-folder trees ----------------------------------------------------------------

def write_tree(root: Path, classes=("cat", "dog", "eel"), per_class=4, held_out="val",
               size=(8, 8)) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), (held_out, 2)):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def stores(cache: Path) -> list[Path]:
    return sorted((cache / "stores").glob("pets-*px"))


def test_image_tree_is_read_from_its_store(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    ds = open_dataset(root, cache_dir=cache)
    assert (ds.name, ds.classes, ds.n_train, ds.n_val) == ("pets", ["cat", "dog", "eel"], 12, 6)
    assert ds.native_resolution == 8  # S capped at the images' own size: nothing upsampled
    x, y = next(ds.val_batches(16, 6))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.name.endswith("-8px") for p in stores(cache)] == [True]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the store")
    monkeypatch.setattr(decode, "decode_chunk", no_decoding)
    again = open_dataset(root, cache_dir=cache)
    assert torch.equal(next(again.val_batches(16, 6))[0], x)


def test_store_pixels_are_the_decoded_pixels_of_same_size_images(tmp_path):
    """Where every image already has S x S pixels the store holds them exactly (PNG: lossless)."""
    root = tmp_path / "pets"
    rng = np.random.default_rng(3)
    pixels = {}
    for split, n in (("train", 3), ("val", 1)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels[split, c, i] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels[split, c, i]).save(root / split / c / f"{i}.png")
    ds = open_dataset(root, cache_dir=tmp_path / "c", store_resolution=40)
    assert ds.native_resolution == 8
    (opened,) = (tmp_path / "c" / "stores").glob("*px")
    images = np.load(opened / "images.npy")
    assert np.array_equal(images[0], pixels["train", "cat", 0])          # (S, S, RGB) rows
    assert np.array_equal(images[-1], pixels["val", "dog", 0])


def damage_by_garbling(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(255 - b for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))


def damage_by_truncating(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_by_emptying(path: Path) -> None:
    path.write_bytes(b"")


def damage_by_flipping_one_pixel(path: Path) -> None:
    # Still a valid file: only the checksum can tell the pixels are wrong.
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("part", ["header.json", "images.npy", "labels.npy"])
@pytest.mark.parametrize("damage", [damage_by_garbling, damage_by_truncating, damage_by_emptying,
                                    damage_by_flipping_one_pixel])
def test_damaged_store_is_reported_once_and_rebuilt(tmp_path, caplog, damage, part):
    root = write_tree(tmp_path / "pets")
    cache_dir = tmp_path / "cache"
    first = open_dataset(root, cache_dir=cache_dir)
    expected = torch.cat([x for x, _ in first.val_batches(8, 6)])
    (path,) = stores(cache_dir)
    damage(path / part)
    with caplog.at_level(logging.WARNING, logger="scalesearch"):
        again = open_dataset(root, cache_dir=cache_dir)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "\n" not in warnings[0]
    assert "damaged" in warnings[0] and "rebuilding" in warnings[0]
    assert torch.equal(torch.cat([x for x, _ in again.val_batches(8, 6)]), expected)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scalesearch"):
        open_dataset(root, cache_dir=cache_dir)  # rebuilt: read back cleanly
    assert not caplog.records


def test_image_tree_store_misses_when_subset_or_files_change(tmp_path):
    root = write_tree(tmp_path / "pets")
    cache = tmp_path / "cache"
    open_dataset(root, cache_dir=cache)
    open_dataset(root, cache_dir=cache, train_subset=6)
    Image.new("RGB", (8, 8)).save(root / "train" / "cat" / "extra.png")
    open_dataset(root, cache_dir=cache)
    assert len(stores(cache)) == 3


def test_image_tree_subset_test_split_and_mixed_sizes(tmp_path):
    root = write_tree(tmp_path / "t", per_class=6, held_out="test")
    Image.new("RGB", (12, 10), "red").save(root / "train" / "dog" / "big.png")
    ds = open_dataset(root, cache_dir=tmp_path / "c", train_subset=6, val_subset=3, seed=1)
    assert (ds.n_train, ds.n_val) == (6, 3)
    labels = torch.cat([y for _, y in batches(ds, 8, 6)])
    assert torch.bincount(labels).tolist() == [2, 2, 2]
    full = open_dataset(root, cache_dir=tmp_path / "c", store_resolution=9)
    assert full.n_train == 19 and full.native_resolution == 9  # 8 px images upsampled, big.png cropped


# -- CIFAR pickles -------------------------------------------------------------------

def dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def fake_cifar10(folder: Path, per_batch=6, side=4) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(3)]
    dump(folder / "batches.meta", {b"label_names": [n.encode() for n in names]})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        dump(folder / name, {b"data": rng.integers(0, 256, (per_batch, 3 * side * side), dtype=np.uint8),
                             b"labels": [i % 3 for i in range(per_batch)]})
    return folder


def test_cifar10_pickles_are_read(tmp_path):
    fake_cifar10(tmp_path / "cifar-10-batches-py")
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = open_dataset(path)
        assert (ds.name, ds.classes, ds.n_train, ds.n_val) == ("cifar10", ["class0", "class1", "class2"], 30, 6)
        assert ds.native_resolution == 4
    x, _ = next(open_dataset(tmp_path, train_subset=9).train_batches(8, 9, torch.Generator()))
    assert x.shape == (9, 3, 8, 8)


def test_cifar100_pickles_are_read(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    dump(folder / "meta", {"fine_label_names": ["apple", "bee"], "coarse_label_names": ["x"]})
    for name, n in (("train", 8), ("test", 4)):
        dump(folder / name, {"data": rng.integers(0, 256, (n, 48), dtype=np.uint8),
                             "fine_labels": [i % 2 for i in range(n)], "coarse_labels": [0] * n})
    ds = open_dataset(tmp_path)
    assert (ds.name, ds.classes, ds.n_train, ds.n_val) == ("cifar100", ["apple", "bee"], 8, 4)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = fake_cifar10(tmp_path / "c")
    dump(folder / "test_batch", {"data": Path("/x"), "labels": []})  # pickles a pathlib class
    with pytest.raises(DatasetError, match="test_batch.*refusing"):
        open_dataset(folder)


@pytest.mark.parametrize("labels, problem", [
    ([i % 3 for i in range(5)], "5 labels for 6 images"),                 # one short: would pair wrongly
    ([0, 1, 2, 57, 0, 1], "label 57 is outside 0..2 (3 classes"),         # once: IndexError in training
    ([0, 1, -1, 0, 1, 2], "label -1 is outside 0..2"),                    # once: RuntimeError in bincount
    ([[0, 1]] * 6, "'labels' is not a list of integer class indices (shape (6, 2)"),
    ([0.5] * 6, "'labels' is not a list of integer class indices (shape (6,), float64)"),
], ids=["short", "too-large", "negative", "nested", "float"])
def test_damaged_cifar_labels_are_refused_when_read(tmp_path, labels, problem):
    folder = fake_cifar10(tmp_path / "c")
    rng = np.random.default_rng(1)
    dump(folder / "data_batch_3", {b"data": rng.integers(0, 256, (6, 48), dtype=np.uint8), b"labels": labels})
    message = one_line_error(folder)
    assert f"CIFAR pickle file '{folder / 'data_batch_3'}' is malformed: {problem}" in message, message


def test_cifar_rows_that_are_not_square_images_are_refused(tmp_path):
    folder = fake_cifar10(tmp_path / "c")
    dump(folder / "test_batch", {b"data": np.zeros((6, 50), dtype=np.uint8), b"labels": [0] * 6})
    assert "test_batch' is malformed: rows of (50,) values are not 3 x H x H pixels" in one_line_error(folder)


# -- errors ----------------------------------------------------------------------------

def one_line_error(source, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        open_dataset(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_path_does_not_exist(tmp_path):
    assert "does not exist" in one_line_error(str(tmp_path / "nope"))


def test_error_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    message = one_line_error(tmp_path)
    assert "no class folders" in message and "train/<class>" in message
    (tmp_path / "loose").mkdir()
    assert "no train/ folder" in one_line_error(tmp_path / "loose")


def test_error_no_held_out_split(tmp_path):
    root = write_tree(tmp_path / "t")
    for f in (root / "val").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((root / "val").iterdir()):
        d.rmdir()
    (root / "val").rmdir()
    assert "no held-out split" in one_line_error(root, cache_dir=tmp_path / "c")


def test_undecodable_files_are_left_out_with_their_labels_and_named(tmp_path, capsys):
    root = write_tree(tmp_path / "t")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "train" / "dog" / "empty.png").write_bytes(b"")
    good = root / "train" / "eel" / "0.jpg"
    (root / "train" / "eel" / "cut.jpg").write_bytes(good.read_bytes()[:200])
    ds = open_dataset(root, cache_dir=tmp_path / "c", progress=True)
    assert ds.n_train == 12 and ds.class_counts("train") == [4, 4, 4]   # 15 files, 3 left out
    said = capsys.readouterr().err
    assert "3 files could not be decoded and are left out, with their labels (first: " in said
    assert "broken.jpg" in said
    everything_broken = write_tree(tmp_path / "u")
    for f in (everything_broken / "train").rglob("*.*"):
        f.write_bytes(b"")
    assert "could be decoded" in one_line_error(everything_broken, cache_dir=tmp_path / "c")


def test_error_val_class_not_in_train(tmp_path):
    root = write_tree(tmp_path / "t")
    (root / "val" / "zebra").mkdir()
    assert "'zebra'" in one_line_error(root, cache_dir=tmp_path / "c")


def test_error_empty_class_folder_and_bad_subset(tmp_path):
    root = write_tree(tmp_path / "t")
    (root / "train" / "fox").mkdir()
    assert "fox" in one_line_error(root, cache_dir=tmp_path / "c")
    assert "train_subset" in one_line_error("synthetic", train_subset=0)


# -- the real CIFAR-10 tree ----------------------------------------------------------------

@pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"no CIFAR-10 image tree at {CIFAR10} "
                    "(../shared/data/cifar10 beside the checkout)")
def test_real_cifar10_tree_with_small_subsets(tmp_path):
    ds = open_dataset(CIFAR10, cache_dir=tmp_path, train_subset=200, val_subset=50)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer",
                          "dog", "frog", "horse", "ship", "truck"]
    assert (ds.n_train, ds.n_val, ds.native_resolution) == (200, 50, 32)
    x, y = batches(ds, 32, 200)[0]
    assert x.shape == (200, 3, 32, 32) and torch.bincount(y).tolist() == [20] * 10
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3  # normalised


def test_links_that_lead_nowhere_are_refused_by_name_and_any_file_name_is_read(tmp_path):
    """A symbolic link that loops or whose target is gone is one DatasetError naming it, never an
    OSError; a file or class folder named in bytes that are not UTF-8 is read like any other."""
    import os

    from conftest import make_color_folders

    root = make_color_folders(tmp_path / "tree", per_class=4, val_per_class=2, size=8)
    loop = root / "train" / "red" / "loop.png"
    os.symlink(loop.name, loop)
    with pytest.raises(DatasetError, match=r"image '.*loop.png' cannot be read \(Too many levels of symbolic links\)"):
        open_dataset(str(root), cache_dir=tmp_path / "cache")
    loop.unlink()
    gone = root / "train" / "red" / "gone.png"
    os.symlink(tmp_path / "nowhere.png", gone)
    with pytest.raises(DatasetError, match=r"image '.*gone.png' is a symbolic link to nothing \('.*nowhere.png'\)"):
        open_dataset(str(root), cache_dir=tmp_path / "cache")
    gone.unlink()
    os.rename(os.fsencode(root / "train" / "red" / "0.png"), os.fsencode(root / "train" / "red") + b"/\xff\xfe.png")
    for split in ("train", "val"):
        os.rename(os.fsencode(root / split / "blue"), os.fsencode(root / split) + b"/bl\xe9u")
    ds = open_dataset(str(root), cache_dir=tmp_path / "cache")
    assert ds.n_train == 12 and ds.num_classes == 3
