"""Successive halving against training every candidate at the top budget, from two finished runs.

Reads a `grid --fidelity halving` run and a `grid` run of the same candidates at the halving
run's top budget (same settings otherwise), and prints, as markdown:

- per candidate: top-1 at rung 0's budget (from the halving run), at the top budget (from the
  full run), and the rung halving sent it to;
- the training images each run spent (the budgets in trials.csv, summed over trials);
- whether halving's best is the full run's best, or within the full run's noise of it (the
  verdict rule every ranking uses: seed spread and the held-out binomial error);
- the rank agreement of rung 0's budget with the top budget over every candidate
  (``scalesearch.search.agreement``), and a plot of the two (``--plot FILE.png``).

    python experiments/scripts/halving_vs_full.py experiments/halving-cifar10/halving \
        experiments/halving-cifar10/full-9x --plot experiments/halving-cifar10/proxy_vs_9x.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scalesearch.search.agreement import agreement
from scalesearch.search.ranking import compare, summarize
from scalesearch.study.rundir import RunDir


def scores(rows, rung=None) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in rows:
        if r.state == "COMPLETE" and r.top1 is not None and (rung is None or r.rung == rung):
            out.setdefault(r.candidate, []).append(r.top1)
    return out


def cell(values) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{100 * mean:.2f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{100 * mean:.2f} +/- {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("halving", type=Path)
    parser.add_argument("full", type=Path)
    parser.add_argument("--plot", type=Path, help="write the rung-0-against-top-budget plot here (PNG and SVG)")
    args = parser.parse_args()
    halved, full = RunDir(args.halving), RunDir(args.full)
    halved_rows, full_rows = list(halved.trials().values()), list(full.trials().values())
    best = json.loads((halved / "best.json").read_text())
    n_val = (best.get("verdict") or {}).get("n_val")
    reached = {r.candidate: r.rung for r in sorted(halved_rows, key=lambda r: r.rung)}
    small, large = scores(halved_rows, rung=0), scores(full_rows)
    b = next(r.budget for r in halved_rows if r.rung == 0)
    top = next(r.budget for r in full_rows)
    full_summaries = summarize(full_rows)
    ranked = [s for s in full_summaries if s.ranked]
    print(f"| candidate | alpha | beta | gamma | b ({b:,}) | top ({top:,}) | halving reached |")
    print("|---|--:|--:|--:|--:|--:|---|")
    for s in ranked:
        first = s.rows[0]
        mark = ", best" if s.candidate == best["candidate"] else ""
        print(f"| {s.candidate} | {first.alpha:.2f} | {first.beta:.2f} | {first.gamma:.3f} | {cell(small.get(s.candidate))} "
              f"| {cell(large.get(s.candidate))} | rung {reached.get(s.candidate, '-')}{mark} |")
    spent = sum(r.budget or 0 for r in halved_rows)
    everything = sum(r.budget or 0 for r in full_rows)
    print(f"\ntraining images: halving {spent:,}, every candidate at the top budget {everything:,} "
          f"({spent / everything:.0%})")
    by_id = {s.candidate: s for s in ranked}
    chosen, winner = by_id.get(best["candidate"]), ranked[0]
    if chosen is None:
        print(f"halving's best, candidate {best['candidate']}, did not train healthily at the top budget")
    elif chosen.candidate == winner.candidate:
        print(f"same best: candidate {winner.candidate} ({100 * winner.top1_mean:.2f}% at the top budget)")
    else:
        v = compare(winner, chosen, "halving's best", n_val)
        print(f"different best: the full run's is candidate {winner.candidate}; {v.text}")
    found = agreement(small, large, f"{b:,}-image", f"{top:,}-image", seed=0)
    print(f"rank agreement, rung 0 against the top budget, every candidate: {found.verdict}")
    if args.plot:
        from scalesearch.report.plots import draw_agreement

        points = [dict(candidate=c, small=small[c], large=large.get(c, [])) for c in small]
        for path in draw_agreement(points, args.plot.with_suffix(""), found.small, found.large, found.verdict):
            print(f"written: {path}")


if __name__ == "__main__":
    main()
