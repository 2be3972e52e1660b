"""An independent timing of a latency-constrained grid's kept candidates.

``grid --target-latency`` keeps candidates whose measured latency (scalesearch/measure/latency.py:
torch.utils.benchmark's blocked_autorange, cached per machine) is within tolerance of the
target.  This script checks those figures another way: it reads RUN/candidates.csv, rebuilds
every kept candidate from its (d, w, r) and resolution, and times it with a plain
``time.perf_counter`` loop in this process (no cache, no benchmark.Timer): the median of
ROUNDS rounds, the candidates visited in a shuffled order each round so a drift of the machine
falls on all of them alike.  It prints each candidate's latency ratio both ways and how far
they differ, and exits 1 when any differs by more than --agree (25%).

    python experiments/scripts/latency_check.py RUN [--agree 0.25] [--rounds 7] [--threads N]

Run it on a quiet machine: another process on the cores moves every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from scalesearch import get_base, scale
from scalesearch.measure.models import build


def per_call_ms(model: torch.nn.Module, x: torch.Tensor, seconds: float = 0.15) -> float:
    """Milliseconds per forward call, over as many calls as fit in ``seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        model(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 1e3 * elapsed / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--agree", type=float, default=0.25, help="largest relative difference allowed")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, help="default: the run's backend.cpus_per_trial, as it timed")
    args = parser.parse_args()

    config = json.loads((args.run / "config.json").read_text())["settings"]
    table = pd.read_csv(args.run / "candidates.csv")
    kept = table[table["kept"].astype(str) == "True"]
    base = get_base(config["base"])
    if config.get("resolution"):
        base = base.replace(resolution=int(config["resolution"]))
    batch = int(config.get("grid", {}).get("latency_batch", 1))
    args.threads = args.threads or max(1, round(float(config["backend"]["cpus_per_trial"])))
    torch.set_num_threads(args.threads)
    nets = {"base": base} | {int(c.id): scale(base, c.d, c.w, 1.0).replace(resolution=int(c.resolution))
                             for c in kept.itertuples()}
    models = {k: build(spec).eval() for k, spec in nets.items()}
    inputs = {k: torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution) for k, spec in nets.items()}
    times: dict = {k: [] for k in nets}
    rng = random.Random(0)
    with torch.inference_mode():
        for k in nets:                      # warm-up
            for _ in range(3):
                models[k](inputs[k])
        for _ in range(args.rounds):
            order = list(nets)
            rng.shuffle(order)
            for k in order:
                times[k].append(per_call_ms(models[k], inputs[k]))
    base_ms = statistics.median(times["base"])
    print(f"{args.run}: {len(kept)} kept candidates, batch {batch}, {args.threads} thread(s), "
          f"median of {args.rounds} rounds; base {base_ms:.3f} ms here")
    print(f"{'id':>5} {'alpha':>6} {'beta':>6} {'px':>4} {'run ms':>8} {'here ms':>8} {'run ratio':>10} "
          f"{'here ratio':>11} {'differ':>8}")
    worst = 0.0
    for c in kept.itertuples():
        here = statistics.median(times[int(c.id)])
        differ = (here / base_ms) / c.latency_ratio - 1
        worst = max(worst, abs(differ))
        print(f"{int(c.id):>5} {c.alpha:>6.2f} {c.beta:>6.2f} {int(c.resolution):>4} {c.latency_ms:>8.3f} "
              f"{here:>8.3f} {c.latency_ratio:>10.2f} {here / base_ms:>11.2f} {100 * differ:>+7.1f}%")
    ratios = [statistics.median(times[int(c.id)]) / base_ms for c in kept.itertuples()]
    print(f"latency ratio here: {min(ratios):.2f}-{max(ratios):.2f}; largest difference from the run's "
          f"{100 * worst:.1f}% (allowed {100 * args.agree:.0f}%)")
    return 0 if worst <= args.agree else 1


if __name__ == "__main__":
    sys.exit(main())
