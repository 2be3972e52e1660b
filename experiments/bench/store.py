"""The image store, measured side by side in one run (docs/performance.md, "The image store").

On a folder of mixed-size JPEGs (experiments/bench/make_photos.py writes one from CIFAR-10):

1. plain PIL decoding of every file (open, convert to RGB, to an array) in worker processes;
2. building the store of the same files on the same cores (``scalesearch data build``);
3. reading batches from the warm store on one thread at 64 px: the rows alone, and whole
   training batches (gather, shift and flip, resize, normalise);
4. one trial, ``scalesearch grid`` in a child process, with the peak memory of its process tree
   (RSS, and USS: the memory private to it; the store's pages are the page cache's);
5. with ``--ray``, two trials at once under Ray Tune with 2 workers: each worker's USS and PSS.

    python experiments/bench/store.py /tmp/photos110k --cache /tmp/store-bench

Figures are printed as a table and written to ``--json``.  Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil


def _plain(paths: list[str]) -> int:
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB"))
    return len(paths)


def plain_decode(files: tuple[str, ...], workers: int) -> float:
    chunks = [list(files[i:i + 256]) for i in range(0, len(files), 256)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        done = sum(pool.map(_plain, chunks))
    return done / (time.perf_counter() - started)


def read_rates(store, resolution: int, batch: int = 256, batches: int = 60) -> dict[str, float]:
    import torch

    from scalesearch.data import store_dataset

    torch.set_num_threads(1)
    ds = store_dataset("bench", store)
    rows = store.rows("train")
    rng = np.random.default_rng(0)
    with open(store.path / "images.npy", "rb") as f:   # warm: the whole store in the page cache
        while f.read(1 << 26):
            pass
    started = time.perf_counter()
    for _ in range(batches):
        torch.from_numpy(store.images[rng.choice(rows, batch)])
    gather = batch * batches / (time.perf_counter() - started)
    generator = torch.Generator().manual_seed(0)

    def endless():  # epochs one after another (a small folder has few batches an epoch)
        while True:
            yield from ds.train_batches(resolution, batch, generator)
    it = endless()
    next(it)
    started = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(it)
        n += len(x)
    return {"gather_images_per_s": gather, "train_batch_images_per_s": n / (time.perf_counter() - started)}


def store_pages(pid: int) -> tuple[int, int]:
    """(resident, private) bytes of the store's images.npy mapped into process ``pid``."""
    rss = private = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                    inside = line.rstrip().endswith("images.npy")
                elif inside and line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif inside and line.startswith(("Private_Clean:", "Private_Dirty:")):
                    private += int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, private


def watch(pid: int, every: float = 0.5) -> tuple[threading.Thread, dict[str, float]]:
    """Peak RSS, USS and PSS of ``pid`` and its children, summed, and the largest single process's."""
    peaks = {"rss_total": 0.0, "uss_total": 0.0, "pss_total": 0.0, "uss_max_process": 0.0, "samples": 0}
    per_process: dict[int, dict[str, float]] = {}

    def loop() -> None:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        while True:
            try:
                if not root.is_running() or root.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            rss = uss = pss = 0.0
            for p in [root, *root.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, uss, pss = rss + info.rss, uss + info.uss, pss + info.pss
                mine = per_process.setdefault(p.pid, {"name": " ".join(p.cmdline()[:3])[-60:], "uss": 0, "pss": 0,
                                                      "store_rss": 0, "store_private": 0})
                mine["uss"], mine["pss"] = max(mine["uss"], info.uss), max(mine["pss"], info.pss)
                store_rss, store_private = store_pages(p.pid)
                mine["store_rss"] = max(mine["store_rss"], store_rss)
                mine["store_private"] = max(mine["store_private"], store_private)
                peaks["uss_max_process"] = max(peaks["uss_max_process"], info.uss)
            peaks["rss_total"] = max(peaks["rss_total"], rss)
            peaks["uss_total"] = max(peaks["uss_total"], uss)
            peaks["pss_total"] = max(peaks["pss_total"], pss)
            peaks["samples"] += 1
            time.sleep(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    peaks["processes"] = per_process  # type: ignore[assignment]
    return thread, peaks


def trial(folder: Path, cache: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "scalesearch", "grid", "--base", "resnet18", "--dataset", str(folder),
               "--resolution", "64", "--images", "4000", "--max-trials", "1", "--out", str(out),
               "--set", f"data.cache_dir={cache}", "--set", "train.batch_size=64", *extra]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "2"})
    thread, peaks = watch(child.pid)
    output, _ = child.communicate()
    thread.join(5)
    peaks["seconds"] = time.perf_counter() - started
    peaks["exit"] = child.returncode
    peaks["tail"] = output.strip().splitlines()[-3:]
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/store-bench"))
    parser.add_argument("--resolution", type=int, default=74, help="S (74: trials up to 64 px)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--keep-store", action="store_true", help="open the store built before (build figures then "
                        "are an open's)")
    parser.add_argument("--trial", action="store_true", help="also train one trial and watch its memory")
    parser.add_argument("--ray", action="store_true", help="also two trials at once under Ray (2 workers)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from scalesearch.data.folders import tree_files, build_tree_store
    from scalesearch.train.machine import machine_label

    files = tree_files(args.folder)
    size = sum(os.path.getsize(f) for f in files)
    report: dict = {"machine": machine_label("cpu"), "images": len(files), "folder_bytes": size, "S": args.resolution,
                    "workers": args.workers}
    if not args.skip_plain:
        report["plain_decode_images_per_s"] = plain_decode(files, args.workers)
        print(f"plain PIL decode: {report['plain_decode_images_per_s']:,.0f} images/s", flush=True)
    if not args.keep_store:
        shutil.rmtree(args.cache, ignore_errors=True)
    started = time.perf_counter()
    store = build_tree_store(args.folder, args.resolution, args.cache, progress=False)
    seconds = time.perf_counter() - started
    report.update(build_seconds=seconds, build_images_per_s=len(files) / seconds, store_bytes=store.nbytes(),
                  build_peak_rss_parent=psutil.Process().memory_info().rss)
    print(f"store build: {report['build_images_per_s']:,.0f} images/s ({seconds:.0f} s), "
          f"{store.nbytes() / 1e9:.2f} GB", flush=True)
    report.update(read_rates(store, 64))
    print(f"warm store, 1 thread, 64 px: rows {report['gather_images_per_s']:,.0f} images/s, training batches "
          f"{report['train_batch_images_per_s']:,.0f} images/s", flush=True)
    if args.trial:
        out = args.cache / "runs"
        shutil.rmtree(out / "one", ignore_errors=True)
        report["trial"] = trial(args.folder, args.cache, out / "one", [])
        print(f"one trial: {json.dumps({k: v for k, v in report['trial'].items() if k != 'processes'})}", flush=True)
    if args.ray:
        shutil.rmtree(args.cache / "runs" / "ray", ignore_errors=True)
        report["ray"] = trial(args.folder, args.cache, args.cache / "runs" / "ray",
                              ["--backend", "ray", "--max-trials", "2", "--set", "backend.cpus_per_trial=1"])
        print(f"two trials under Ray: {json.dumps(report['ray'], default=str)}", flush=True)
    for name in ("trial", "ray"):
        if name in report:
            print(f"{name}: peak RSS {report[name]['rss_total'] / 1e9:.2f} GB, USS {report[name]['uss_total'] / 1e9:.2f} GB, "
                  f"PSS {report[name]['pss_total'] / 1e9:.2f} GB summed over its processes; those over 200 MB:")
            for pid, proc in report[name]["processes"].items():
                if proc["uss"] > 2e8:
                    print(f"  pid {pid} {proc['name'][-40:]:40} USS {proc['uss'] / 1e9:.2f} GB  PSS "
                          f"{proc['pss'] / 1e9:.2f} GB  store resident {proc['store_rss'] / 1e9:.3f} GB, private "
                          f"{proc['store_private'] / 1e9:.3f} GB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k not in ("trial", "ray")}, indent=1, default=str))


if __name__ == "__main__":
    main()
