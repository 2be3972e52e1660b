"""Do runs give the same numbers through the image store as before it?  (experiments/store-same-numbers)

Trains the same trials with two source trees side by side on this machine: the tree before the
store (scalesearch 0.2's torch.save cache, a git worktree at ``--before``) and this one.  Three
data paths, two trials each (2 candidates x 1 seed), in one fixed step form (fp32, contiguous,
so that no timing can pick another form):

* ``demo``: the built-in synthetic task at the demo's 24 px proxy (no store: rendered natively);
* ``cifar10``: the CIFAR-10 JPEG tree of ../shared/data (2,000 training, 1,000 held-out images),
  32 px proxy: candidate 0 trains at 32 px, candidate 2 at 44 px (an upscale);
* ``fashion``: a Fashion-MNIST-style folder of 28 x 28 grayscale PNGs written here from the same
  CIFAR-10 images, 28 px proxy.

    python experiments/store-same-numbers/compare.py --before 3c27292

Prints top-1 and loss of each trial in both trees, and whether they are identical.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
FIXED = ["--set", "train.precision=fp32", "--set", "train.layout=contiguous", "--set", "backend.cpus_per_trial=2"]
CASES = {
    "demo": ["--base", "resnet20-cifar", "--resolution", "24", "--dataset", "synthetic", "--epochs", "2",
             "--set", "data.train_subset=1500", "--set", "data.val_subset=500", "--set", "train.batch_size=32",
             "--set", "train.eval_every=0", "--set", "train.residual_init=scaled", "--set", "grid.tolerance=0.1",
             "--set", "grid.step=0.05", "--set", "grid.alpha_max=2", "--set", "grid.beta_max=1.45",
             "--set", "candidates=[0,7]"],
    "cifar10": ["--base", "resnet20-cifar", "--resolution", "32", "--dataset", str(CIFAR), "--images", "2000",
                "--set", "data.train_subset=2000", "--set", "data.val_subset=1000", "--set", "train.batch_size=32",
                "--set", "candidates=[0,2]"],
    "fashion": ["--base", "resnet20-cifar", "--resolution", "28", "--dataset", "{fashion}", "--images", "2000",
                "--set", "data.train_subset=2000", "--set", "data.val_subset=1000", "--set", "train.batch_size=32",
                "--set", "candidates=[0,2]"],
}


def fashion_folder(out: Path, per_class: dict[str, int]) -> Path:
    """28 x 28 grayscale PNGs of the first CIFAR-10 images of each class."""
    for split, n in per_class.items():
        source = "train" if split == "train" else "test"
        for folder in sorted((CIFAR / source).iterdir()):
            target = out / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.iterdir())[:n]:
                with Image.open(path) as image:
                    image.convert("L").resize((28, 28), Image.BILINEAR).save(target / f"{path.stem}.png")
    return out


def run(tree: Path, case: str, args: list[str], work: Path) -> list[dict[str, str]]:
    out = work / f"{tree.name}-{case}"
    env = {**os.environ, "PYTHONPATH": str(tree), "SCALESEARCH_CACHE_DIR": str(work / f"forms-{tree.name}")}
    command = [sys.executable, "-m", "scalesearch", "grid", *args, *FIXED, "--max-trials", "2", "--seeds", "1",
               "--set", f"data.cache_dir={work / ('cache-' + tree.name)}", "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree.name} {case} failed:\n{done.stderr[-3000:]}")
    with open(out / "trials.csv") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["candidate"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="3c27292", help="the commit before the store")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="store-same-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                   check=True, capture_output=True)
    fashion = fashion_folder(work / "fashion", {"train": 200, "val": 100})
    try:
        print(f"{'case':8} {'candidate':>9} {'px':>4} {'top-1 before':>12} {'top-1 store':>11} "
              f"{'loss before':>12} {'loss store':>12}  same")
        for case in args.cases:
            case_args = [a.replace("{fashion}", str(fashion)) for a in CASES[case]]
            old, new = (run(tree, case, case_args, work) for tree in (before, ROOT))
            for a, b in zip(old, new):
                same = (a["top1"], a["loss"]) == (b["top1"], b["loss"])
                print(f"{case:8} {a['candidate']:>9} {a['resolution']:>4} {float(a['top1']):12.4f} "
                      f"{float(b['top1']):11.4f} {float(a['loss']):12.6f} {float(b['loss']):12.6f}  "
                      f"{'identical' if same else 'differs'}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)


if __name__ == "__main__":
    main()
