"""Write a photo-like image folder for the store benchmark (experiments/bench/store.py).

Each CIFAR-10 JPEG of ../shared/data/cifar10 is upscaled to a random size (short side 160-400 px,
aspect ratio 0.6-1.7, as in a folder of phone photos) and written as a JPEG of quality 90:
mixed sizes and shapes, real labels, about 13 KB an image.  ``--copies 2`` writes each training
image twice (at two sizes), so 50,000 + 10,000 CIFAR images make a folder of 110,000.

    python experiments/bench/make_photos.py /tmp/photos110k --copies 2

The folder is written outside the repository; nothing here is copied into it.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10"


def _write(job: tuple[str, str, int]) -> int:
    source, target, seed = job
    rng = np.random.default_rng(seed)
    short, aspect = int(rng.integers(160, 401)), float(rng.uniform(0.6, 1.7))
    size = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    with Image.open(source) as image:
        image.convert("RGB").resize(size, Image.BICUBIC).save(target, quality=90)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--copies", type=int, default=2, help="sizes written of each training image")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    jobs = []
    for split, held_out in (("train", "train"), ("test", "val")):
        copies = args.copies if split == "train" else 1
        for folder in sorted((CIFAR / split).iterdir()):
            (args.out / held_out / folder.name).mkdir(parents=True, exist_ok=True)
            for source in sorted(folder.iterdir()):
                for k in range(copies):
                    target = args.out / held_out / folder.name / f"{source.stem}-{k}.jpg"
                    jobs.append((str(source), str(target), len(jobs)))
    with ProcessPoolExecutor(args.workers) as pool:
        done = sum(pool.map(_write, jobs, chunksize=256))
    print(f"wrote {done:,} images in {args.out}")


if __name__ == "__main__":
    main()
