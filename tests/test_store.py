"""The image store: the short-side crop, conversions, partial and stale builds, locking, a full disk."""

from __future__ import annotations

import errno
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from scalesearch.data import DatasetError, decode, open_dataset, open_store, store, verify_store
from scalesearch.data.store import StoreProblem


def tree(root, n=3, size=(20, 12)):
    rng = np.random.default_rng(1)
    for split, count in (("train", n), ("val", 1)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root


def only_store(cache):
    (path,) = (cache / "stores").glob("*px")
    return path


def test_a_wide_image_is_center_cropped_not_squashed(tmp_path):
    """400 x 200: green quarters at both ends, red then blue in the middle half.  The center
    crop keeps exactly the middle half (red left, blue right); a squash would show green."""
    pixels = np.zeros((200, 400, 3), dtype=np.uint8)
    pixels[:, :100] = pixels[:, 300:] = (0, 255, 0)
    pixels[:, 100:200] = (255, 0, 0)
    pixels[:, 200:300] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    square, small = decode.square_image(tmp_path / "wide.png", 20)
    assert square.shape == (20, 20, 3) and not small
    assert (square[:, :9] == (255, 0, 0)).all() and (square[:, 11:] == (0, 0, 255)).all()
    assert square[..., 1].max() == 0  # no green anywhere


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA"])
def test_every_image_mode_becomes_8_bit_rgb(tmp_path, mode):
    grey = Image.new("L", (10, 10), 200)
    image = {"I;16": lambda: Image.fromarray(np.full((10, 10), 200 * 257, dtype=np.uint16)),
             "P": lambda: grey.convert("P"), "CMYK": lambda: Image.new("RGB", (10, 10), (200,) * 3).convert("CMYK"),
             "RGBA": lambda: Image.new("RGBA", (10, 10), (200, 200, 200, 255)),
             "LA": lambda: Image.new("LA", (10, 10), (200, 255))}.get(mode, lambda: grey)()
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    square, _ = decode.square_image(path, 10)
    assert square.dtype == np.uint8 and square.shape == (10, 10, 3)
    assert abs(int(square.mean()) - 200) <= 2, (mode, square.mean())


def test_small_images_are_upsampled_and_counted(tmp_path, capsys):
    root = tree(tmp_path / "t", size=(6, 6))
    ds = open_dataset(root, cache_dir=tmp_path / "c", store_resolution=8, progress=True)
    assert ds.native_resolution == 6   # S capped at the images' size: none upsampled
    Image.new("RGB", (30, 40)).save(root / "train" / "a" / "big.png")
    ds = open_dataset(root, cache_dir=tmp_path / "c2", store_resolution=8, progress=True)
    assert ds.native_resolution == 8
    assert "8 images smaller than 8 px were upsampled" in capsys.readouterr().err


def test_a_stopped_build_resumes_where_it_was(tmp_path, monkeypatch):
    root = tree(tmp_path / "t", n=6)
    monkeypatch.setattr(store, "CHUNK", 3)
    monkeypatch.setattr(store, "SAVE_EVERY", 0.0)
    real, calls = decode.decode_chunk, []

    def stopped_after_two(paths, resolution):
        calls.append(len(paths))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(paths, resolution)
    monkeypatch.setattr(decode, "decode_chunk", stopped_after_two)
    with pytest.raises(KeyboardInterrupt):
        open_dataset(root, cache_dir=tmp_path / "c")
    path = only_store(tmp_path / "c")
    assert not (path / "header.json").exists()            # a partial build is never a store
    with pytest.raises(StoreProblem, match="did not finish"):
        open_store(path)
    calls.clear()
    monkeypatch.setattr(decode, "decode_chunk", lambda p, r: (calls.append(len(p)), real(p, r))[1])
    ds = open_dataset(root, cache_dir=tmp_path / "c")
    assert calls == [3, 3, 2]                               # 14 files in chunks 0-4: chunks 2-4 were left
    assert verify_store(path) == [] and ds.n_train == 12
    fresh = open_dataset(root, cache_dir=tmp_path / "fresh")
    assert torch.equal(next(fresh.val_batches(8, 4))[0], next(ds.val_batches(8, 4))[0])


def test_a_folder_that_changes_during_the_build_leaves_no_store(tmp_path, monkeypatch):
    root = tree(tmp_path / "t")
    real = decode.decode_chunk

    def edit_then_decode(paths, resolution):
        Image.new("RGB", (20, 12), "red").save(root / "train" / "a" / "0.png")   # rewritten meanwhile
        return real(paths, resolution)
    monkeypatch.setattr(decode, "decode_chunk", edit_then_decode)
    with pytest.raises(DatasetError, match="changed while its image store was built"):
        open_dataset(root, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c" / "stores").glob("*px"))


def test_a_second_builder_waits_for_the_first(tmp_path):
    root = tree(tmp_path / "t")
    cache = tmp_path / "c"
    first = open_dataset(root, cache_dir=cache)            # learn the store's path, then rebuild under a held lock
    path = only_store(cache)
    (path / "header.json").unlink()
    waiting, done = threading.Event(), []

    def second():
        from scalesearch.data import folders

        real_note = folders._note
        folders._note = lambda progress: (lambda line: waiting.set() if "waiting" in line else None)
        try:
            done.append(open_dataset(root, cache_dir=cache))
        finally:
            folders._note = real_note
    with store._locked(path.with_name(path.name + ".lock"), lambda line: None):
        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(60), "the second builder did not wait for the lock"
        assert not done
    thread.join(60)
    assert done and torch.equal(next(done[0].val_batches(8, 2))[0], next(first.val_batches(8, 2))[0])


def test_a_full_disk_leaves_nothing_that_reads_as_good(tmp_path, monkeypatch):
    root = tree(tmp_path / "t")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store.os, "posix_fallocate", full)
    with pytest.raises(DatasetError, match=r"cannot reserve .* GB for the image store .*No space left"):
        open_dataset(root, cache_dir=tmp_path / "c")
    path = only_store(tmp_path / "c")
    with pytest.raises(StoreProblem):
        open_store(path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(DatasetError, match=r"needs 0.00 GB and .* has 0.00 GB free"):
        open_dataset(root, cache_dir=tmp_path / "c2")


def test_verify_reads_every_chunk_and_open_stays_cheap(tmp_path, monkeypatch):
    root = tree(tmp_path / "t", n=5)
    monkeypatch.setattr(store, "CHUNK", 2)
    open_dataset(root, cache_dir=tmp_path / "c")
    path = only_store(tmp_path / "c")
    header = json.loads((path / "header.json").read_text())
    assert len(header["checksums"]) == 6 and header["resolution"] == 12
    images = np.load(path / "images.npy", mmap_mode="r+")
    images[5, 0, 0, 0] ^= 1                                  # chunk 2 of 0-5: only verify reads it
    images.flush()
    open_store(path)
    assert verify_store(path) == ["chunk 2 (rows 4-5) of images.npy does not match its checksum"]


def test_data_commands_build_describe_and_verify(tmp_path):
    from conftest import cli, ok, refused

    root = tree(tmp_path / "pets", n=4)
    cache = tmp_path / "c"
    (cache).mkdir()
    (cache / "pets-0123abcd.pt").write_bytes(b"x" * 100)       # a decoded-image cache of 0.2
    built = cli("data", "build", str(root), "--resolution", "10", "--cache-dir", str(cache))
    assert "about" in built.stderr and "to build (timed on a sample)" in built.stderr
    assert "10 images (8 training, 2 held-out) of 2 classes at 10 px" in ok(built)
    said = ok(cli("data", "info", str(root), "--cache-dir", str(cache)))
    assert "2 classes, 8 training and 2 held-out images" in said
    assert "a         4        1" in said                         # the per-class table
    assert "10 10            0         0" in said and "current" in said and "pets-" in said
    assert "1 decoded-image cache file(s) of scalesearch 0.2" in said and "pets-0123abcd.pt" in said
    assert "ok " in ok(cli("data", "verify", str(root), "--cache-dir", str(cache)))
    path = only_store(cache)
    images = np.load(path / "images.npy", mmap_mode="r+")
    images[3, 0, 0, 0] ^= 1
    images.flush()
    damaged = cli("data", "verify", str(root), "--cache-dir", str(cache))
    assert damaged.exit_code == 1 and "DAMAGED" in damaged.stdout and "chunk 0 of images.npy" in damaged.stdout
    assert "nowhere" in refused(cli("data", "info", str(tmp_path / "nowhere")), "a missing folder")


def test_a_build_in_worker_processes_writes_the_same_store(tmp_path, monkeypatch):
    root = tree(tmp_path / "t", n=5)
    here = open_dataset(root, cache_dir=tmp_path / "here")
    monkeypatch.setattr(store, "POOL_FROM", 1)
    monkeypatch.setattr(store, "CHUNK", 3)
    pooled = open_dataset(root, cache_dir=tmp_path / "pooled")
    a, b = (np.load(only_store(tmp_path / c) / "images.npy") for c in ("here", "pooled"))
    assert np.array_equal(a, b) and len(json.loads((only_store(tmp_path / "pooled") / "header.json").read_text())["checksums"]) == 4
    assert torch.equal(next(here.val_batches(8, 2))[0], next(pooled.val_batches(8, 2))[0])
