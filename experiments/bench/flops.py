"""Benchmark: counting the cost of every candidate network of phi = 1 grids, three ways.

For each base (default: efficientnet-b0 and resnet50) the distinct networks of its
phi = 1 grid are counted by

* plain fvcore: one uncached fvcore call per network (``count_cost_plain``, the reference);
* fvcore per part: each distinct part (stem, block, head) traced once with fvcore and
  sized on the meta device (the counter before the analytic twins);
* scalesearch: ``count_cost``, each distinct part counted by its analytic twin.

Every round starts from a cold cache, and the rounds interleave the bases and the
counters, so that a slow spell of a shared machine hits all of them alike.  The table
gives the minimum and the median over the rounds and the speed-up over plain fvcore;
every total (params, flops, other flops, acts) must be identical on every network, or
the script exits 1.  Then the whole candidate fitting (gamma searched per (alpha, beta))
is timed with the plain counter and with scalesearch's.

    python experiments/bench/flops.py [--base efficientnet-b0 --base resnet50] [--step 0.05] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import scalesearch.measure.cost as cost
from scalesearch import get_base, scale
from scalesearch.measure.cost import (ZERO, MemoryLimitError, clear_cache, count_cost, count_cost_plain, traced_footprint,
                              traced_part_cost)
from scalesearch.search.space import GridSpec, candidates
from scalesearch.measure.models import iter_parts
from scalesearch.net.spec import NetworkSpec

DEFAULT_BASES = ("efficientnet-b0", "resnet50")


def grid_networks(base: NetworkSpec, grid: GridSpec) -> list[NetworkSpec]:
    """Every distinct network the grid fits a gamma for (kept or not): rounding twins count once."""
    found = candidates(base, grid)
    return [scale(base, c.alpha, c.beta, c.gamma) for c in found if not c.reason.startswith("same network")]


def count_plain(nets: list[NetworkSpec]) -> list:
    return [count_cost_plain(n) for n in nets]


def count_traced_parts(nets: list[NetworkSpec]) -> list:
    """The counter before the analytic twins: each distinct part sized on meta and traced once."""
    footprints: dict = {}
    costs: dict = {}
    totals = []
    for spec in nets:
        parts = list(iter_parts(spec))
        for part in parts:
            if part not in footprints:
                footprints[part] = traced_footprint(part)
        if max(footprints[p] for p in parts) > cost.MEMORY_LIMIT_GIB * 2**30:
            raise MemoryLimitError(f"{spec.name} is over the memory limit")
        total = ZERO
        for part in parts:
            if part not in costs:
                costs[part] = traced_part_cost(part)
            total = total + costs[part]
        totals.append(total)
    return totals


def count_scalesearch(nets: list[NetworkSpec]) -> list:
    return [count_cost(n) for n in nets]


COUNTERS: dict[str, Callable[[list[NetworkSpec]], list]] = {
    "plain fvcore, one call per network": count_plain,
    "fvcore per part, cached (before)": count_traced_parts,
    "scalesearch: analytic twins per part": count_scalesearch,
}
PLAIN = next(iter(COUNTERS))


def timed(counter: Callable[[list[NetworkSpec]], list], nets: list[NetworkSpec]) -> tuple[float, list]:
    clear_cache()  # cold: no part and no network counted before
    start = time.perf_counter()
    totals = counter(nets)
    return time.perf_counter() - start, totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="append", help=f"a base (repeatable; default: {', '.join(DEFAULT_BASES)})")
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--alpha-max", type=float, default=2.0)
    parser.add_argument("--beta-max", type=float, default=1.4)
    parser.add_argument("--rounds", type=int, default=3, help="cold-cache rounds per base and counter")
    parser.add_argument("--no-fitting", action="store_true", help="skip the timing of the whole candidate fitting")
    args = parser.parse_args(argv)

    bases = args.base or list(DEFAULT_BASES)
    grid = GridSpec(alpha_max=args.alpha_max, beta_max=args.beta_max, step=args.step)
    nets = {name: grid_networks(get_base(name), grid) for name in bases}
    print(f"phi = 1 grids: alpha 1..{args.alpha_max:g}, beta 1..{args.beta_max:g}, step {args.step:g}; "
          f"{args.rounds} cold-cache round(s), bases and counters interleaved")

    seconds: dict[tuple[str, str], list[float]] = {(b, c): [] for b in bases for c in COUNTERS}
    identical = {name: True for name in bases}
    for round_number in range(1, args.rounds + 1):
        for name in bases:
            reference = None
            for label, counter in COUNTERS.items():
                elapsed, totals = timed(counter, nets[name])
                seconds[name, label].append(elapsed)
                reference = totals if reference is None else reference
                identical[name] &= totals == reference
            # Progress on stderr: a round of plain fvcore takes minutes.
            print(f"round {round_number}/{args.rounds}, {name}: "
                  + ", ".join(f"{seconds[name, label][-1]:.3g}s" for label in COUNTERS), file=sys.stderr, flush=True)

    print("\n| grid (phi = 1) | networks | counter | min s | median s | per network (median) "
          "| speed-up (min) | speed-up (median) |")
    print("|---|--:|---|--:|--:|--:|--:|--:|")
    for name in bases:
        plain = seconds[name, PLAIN]
        for label in COUNTERS:
            times = seconds[name, label]
            low, mid = min(times), statistics.median(times)
            print(f"| {name} | {len(nets[name])} | {label} | {low:.3g} | {mid:.3g} "
                  f"| {mid / len(nets[name]) * 1e3:.3g} ms | {min(plain) / low:.1f}x "
                  f"| {statistics.median(plain) / mid:.1f}x |")
    print()
    for name in bases:
        print(f"{name}: totals identical (params, flops, other flops, acts) on all {len(nets[name])} networks, "
              f"every counter, every round: {identical[name]}")
    if not all(identical.values()):
        raise SystemExit(1)
    if not args.no_fitting:
        # A smaller grid, since plain fvcore counts every resolution the fit of gamma tries.
        fit_grid = GridSpec(alpha_max=min(1.4, args.alpha_max), beta_max=min(1.2, args.beta_max),
                            step=max(0.1, args.step))
        for name in bases:
            fitting(name, fit_grid)


def fitting(name: str, grid: GridSpec) -> None:
    """The whole candidate fitting (gamma searched per (alpha, beta)) with each counter."""
    base = get_base(name)
    seen: list = []

    def plain_counter(spec: NetworkSpec):
        seen.append(spec)
        return count_cost_plain(spec)

    clear_cache()
    start = time.perf_counter()
    fast = candidates(base, grid)
    t_fast = time.perf_counter() - start
    # candidates() imports count_cost from scalesearch.measure.cost when it runs: swap it there.
    cost.count_cost, original = plain_counter, cost.count_cost
    try:
        start = time.perf_counter()
        slow = candidates(base, grid)
        t_slow = time.perf_counter() - start
    finally:
        cost.count_cost = original
    print(f"\ncandidate fitting on {name}, a {len(fast)}-point grid ({len(seen)} networks measured while fitting "
          f"gamma): plain fvcore {t_slow:.1f}s, scalesearch {t_fast:.2f}s: {t_slow / t_fast:.0f}x; "
          f"identical candidate tables: {fast == slow}")
    if fast != slow:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
