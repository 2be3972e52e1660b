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
