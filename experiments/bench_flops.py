"""Benchmark: counting FLOPs for the candidates of a phi = 1 grid on efficientnet-b0.

Times scalesearch's cached counter against one plain, uncached fvcore call per network
on the same networks, side by side, and checks that every total is identical.

    python experiments/bench_flops.py [--base efficientnet-b0] [--step 0.1]
"""

from __future__ import annotations

import argparse
import time

from scalesearch import get_base, scale
from scalesearch.cost import clear_cache, count_cost, count_cost_plain
from scalesearch.gridspace import GridSpec, candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="efficientnet-b0")
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--alpha-max", type=float, default=2.0)
    parser.add_argument("--beta-max", type=float, default=1.4)
    args = parser.parse_args()

    base = get_base(args.base)
    grid = GridSpec(alpha_max=args.alpha_max, beta_max=args.beta_max, step=args.step)
    # Every distinct network the grid fits a gamma for (kept or not): rounding twins count once.
    found = candidates(base, grid)
    nets = [scale(base, c.alpha, c.beta, c.gamma) for c in found if not c.reason.startswith("same network")]
    print(f"{len(nets)} distinct candidate networks of the phi = 1 grid on {args.base} "
          f"({len(found)} grid points, step {args.step}, {sum(c.kept for c in found)} within tolerance)")

    clear_cache()
    t0 = time.perf_counter()
    cached = [count_cost(n) for n in nets]
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = [count_cost(n) for n in nets]
    t_again = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = [count_cost_plain(n) for n in nets]
    t_plain = time.perf_counter() - t0

    identical = all(a == b for a, b in zip(cached, plain)) and again == cached
    print(f"{'counter':<38}{'seconds':>9}{'per net':>10}{'speed-up':>10}")
    for label, t in (("plain fvcore, one call per network", t_plain),
                     ("scalesearch, cold cache (per part)", t_cached),
                     ("scalesearch, warm cache (per spec)", t_again)):
        print(f"{label:<38}{t:>9.2f}{t / len(nets) * 1e3:>8.1f}ms{t_plain / t:>9.1f}x")
    print(f"totals identical (params, flops, other flops, acts) on all {len(nets)} networks: {identical}")
    if not identical:
        raise SystemExit(1)
    fitting(base)


def fitting(base) -> None:
    """The whole candidate fitting (gamma searched per (alpha, beta)) with each counter."""
    import scalesearch.gridspace as search

    grid = GridSpec(alpha_max=1.4, beta_max=1.2, step=0.1)
    seen: list = []

    def plain_counter(spec):
        seen.append(spec)
        return count_cost_plain(spec)

    clear_cache()
    t0 = time.perf_counter()
    fast = candidates(base, grid)
    t_fast = time.perf_counter() - t0
    search.count_cost, original = plain_counter, search.count_cost
    try:
        t0 = time.perf_counter()
        slow = candidates(base, grid)
        t_slow = time.perf_counter() - t0
    finally:
        search.count_cost = original
    print(f"\ncandidate fitting on a {len(fast)}-point grid ({len(seen)} networks measured while fitting gamma):")
    print(f"  plain fvcore {t_slow:.1f}s, scalesearch {t_fast:.1f}s: {t_slow / t_fast:.1f}x; "
          f"identical candidate tables: {fast == slow}")


if __name__ == "__main__":
    main()
