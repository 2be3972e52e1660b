"""Distinct candidate networks of the default phi = 1 grid under each depth rounding rule.

Per-stage rounding (depth_rule "stage": L_i -> ceil(L_i * d)) moves a stage of 2-3 layers
in steps of 33-50%, so many alphas of the grid build the same network: rounding twins,
trained once.  Rounding the total once (depth_rule "total") grows depth one layer at a
time.  For each base and rule this prints the distinct depths along the alpha axis and the
candidates kept (distinct networks within both tolerances), with the drop counts.

    python experiments/scripts/depth_rounding.py [--resolution-32]

The grid is GridSpec()'s default: alpha <= 2, beta <= 1.5, step 0.05, target 2x, tolerance
5%, and the default nominal tolerance.  --resolution-32 runs resnet18 and efficientnet-b0 at
32px instead of their 224px, which is faster.
"""

from __future__ import annotations

import argparse
import time

from scalesearch import get_base
from scalesearch.net.scaling import DEPTH_RULES, Rounding, round_depths
from scalesearch.search.space import GridSpec, axis, candidates, drop_counts

BASES = ("resnet18", "resnet20-cifar", "efficientnet-b0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution-32", action="store_true", help="resnet18 and efficientnet-b0 at 32px")
    args = parser.parse_args()

    grid = GridSpec()
    print(f"default grid: {grid.to_dict()}, {grid.points()} (alpha, beta) points")
    header = (f"{'base':<16}{'px':>4}  {'rule':<6}{'depths':>7}{'kept':>6}{'twin':>6}{'flops':>6}{'nominal':>8}"
              f"{'seconds':>8}")
    print(header)
    print("-" * len(header))
    for name in BASES:
        base = get_base(name)
        if args.resolution_32:
            base = base.replace(resolution=32)
        layers = [st.layers for st in base.stages]
        for rule in DEPTH_RULES:
            rounding = Rounding(depth_rule=rule)
            depths = len({round_depths(layers, alpha, rounding) for alpha in axis(grid.alpha_max, grid.step)})
            started = time.perf_counter()
            found = candidates(base, grid, rounding)
            counts = drop_counts(found)
            print(f"{name:<16}{base.resolution:>4}  {rule:<6}{depths:>7}{sum(c.kept for c in found):>6}"
                  f"{counts['twin']:>6}{counts['flops']:>6}{counts['nominal']:>8}"
                  f"{time.perf_counter() - started:>8.0f}")
    print("depths: distinct per-stage layer counts over the alpha axis; kept: distinct networks "
          "within both tolerances (twins of a kept network are not counted)")


if __name__ == "__main__":
    main()
