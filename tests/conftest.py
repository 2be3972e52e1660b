import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar10"

os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture
def cifar10_path() -> Path:
    if not (SHARED_CIFAR10 / "train").is_dir():
        pytest.skip(f"no CIFAR-10 image folder at {SHARED_CIFAR10} (only present beside the project's CI checkout)")
    return SHARED_CIFAR10


def make_color_folders(root: Path, per_class: int = 64, val_per_class: int = 32, size: int = 32) -> Path:
    """A small image-folder tree a network learns in one epoch: 3 colour classes with pixel noise.

    The built-in synthetic task needs thousands of images before a network leaves chance, far
    more than a test can train; tests of the search machinery use this instead.
    """
    import numpy as np
    from PIL import Image

    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
    for split, n in (("train", per_class), ("val", val_per_class)):
        for name, rgb in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "done").write_text("ok")
    return root
