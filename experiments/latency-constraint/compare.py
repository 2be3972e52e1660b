"""The FLOPs-kept and the latency-kept sets of the phi = 1 mobilenetv2 grid side by side, and
the two trained runs' bests (issue 34).  Prints only; its output is compare-output.txt.

    .venv/bin/python experiments/latency-constraint/compare.py > experiments/latency-constraint/compare-output.txt

Reads, beside this file: flops-dry/ and latency-dry/ (the dry runs), flops/ and latency/ (the
trained runs: candidates.csv, trials.csv, config.json).  A gap between two bests is called
separable with the tool's own rule (scalesearch/search/ranking.py): more than twice the pooled
seed-to-seed standard deviation combined with the held-out set's binomial error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
TOL = 0.10          # grid.latency_tolerance, the default the runs used
TARGET = 2.0        # both targets are 2x the base


def table(run: str) -> pd.DataFrame:
    d = pd.read_csv(HERE / run / "candidates.csv")
    d["base_ms"] = d.latency_ms / d.latency_ratio
    return d


def flops_latency(run: str) -> dict:
    return json.loads((HERE / run / "config.json").read_text()).get("flops_latency", {})


def rng(s: pd.Series, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(s.min())}-{fmt.format(s.max())}" if len(s) else "-"


def describe(name: str, k: pd.DataFrame) -> None:
    print(f"  {name}: {len(k)} kept; alpha {rng(k.alpha)}, beta {rng(k.beta)}, gamma {rng(k.gamma, '{:.3f}')}, "
          f"resolution {rng(k.resolution, '{:.0f}')} px ({(k.gamma > 1).sum()} with gamma > 1); "
          f"flops_ratio {rng(k.flops_ratio)}; latency_ratio {rng(k.latency_ratio)}; "
          f"latency {rng(k.latency_ms, '{:.1f}')} ms")


def sets(fl: str, la: str, label: str) -> None:
    f, l = table(fl), table(la)
    fk, lk = f[f.kept], l[l.kept]
    print(f"== kept sets ({label}: {fl}/ against {la}/) ==")
    print(f"  base latency: {f.base_ms.median():.2f} ms in {fl}/, {l.base_ms.median():.2f} ms in {la}/ "
          f"(1 thread, batch 1, 32 px)")
    describe("FLOPs 2x", fk)
    describe("latency 2x", lk)
    pf = set(zip(fk.alpha.round(2), fk.beta.round(2)))
    pl = set(zip(lk.alpha.round(2), lk.beta.round(2)))
    both = pf & pl
    nf = set(zip(fk.alpha.round(2), fk.beta.round(2), fk.resolution))
    nl = set(zip(lk.alpha.round(2), lk.beta.round(2), lk.resolution))
    print(f"  (alpha, beta) pairs in both: {len(both)} of {len(pf)} FLOPs-kept and {len(pl)} latency-kept "
          f"(Jaccard {len(both) / len(pf | pl):.2f}): {sorted(both)}")
    print(f"  same (alpha, beta, resolution) in both: {len(nf & nl)}")
    # the same *network*: a FLOPs-kept point may be a rounding twin of another (alpha, beta) that the
    # latency grid keeps at the same resolution (twins are named in the reason column)
    li = l.set_index("id")
    same = []
    for i in fk.id:
        row = li.loc[i]
        j = i if row["kept"] else (int(str(row.reason).rsplit("candidate ", 1)[1].split()[0])
                                if row["drop"] == "twin" else None)
        if j is not None and li.loc[j].kept and li.loc[j].resolution == f.set_index("id").loc[i].resolution:
            same.append((int(i), int(j)))
    print(f"  FLOPs-kept networks the latency grid also keeps (counting rounding twins), as (FLOPs id, "
          f"latency id): {len(same)} of {len(fk)}: {same}")
    print(f"  FLOPs-kept only: {sorted(pf - pl)}")
    # latency spread of the FLOPs-kept set, FLOPs spread of the latency-kept set
    print(f"  FLOPs-kept candidates span {fk.latency_ratio.min():.2f}-{fk.latency_ratio.max():.2f}x the base's "
          f"latency ({(abs(fk.latency_ratio / TARGET - 1) <= TOL).sum()} of {len(fk)} within the latency "
          f"target's +/-{TOL:.0%}); at {fk.flops_ratio.min():.2f}-{fk.flops_ratio.max():.2f}x its FLOPs")
    print(f"  latency-kept candidates span {lk.flops_ratio.min():.2f}-{lk.flops_ratio.max():.2f}x the base's "
          f"FLOPs ({(abs(lk.flops_ratio / TARGET - 1) <= 0.05).sum()} of {len(lk)} within the FLOPs target's "
          f"+/-5%); at {lk.latency_ratio.min():.2f}-{lk.latency_ratio.max():.2f}x its latency")
    print("  FLOPs-kept rows:")
    cols = ["id", "alpha", "beta", "resolution", "flops_ratio", "latency_ms", "latency_iqr_ms", "latency_ratio"]
    print(fk[cols].round(3).to_string(index=False, header=True).replace("\n", "\n    ").join(["    ", ""]))
    for run in (fl, la):
        t = flops_latency(run)
        if t:
            print(f"  Kendall tau FLOPs vs latency, {run}/: {t['tau']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}] "
                  f"over n = {t['n']} timed candidates")
    print()


def retime(a: str, b: str) -> None:
    """The same networks timed in two processes: how far apart, and does the kept set move?"""
    x, y = table(a), table(b)
    m = x.merge(y, on="id", suffixes=("_a", "_b"))
    m = m[m.latency_ms_a.notna() & m.latency_ms_b.notna() & (m.resolution_a == m.resolution_b)]
    if m.empty:
        return
    r = m.latency_ms_b / m.latency_ms_a
    q = r.quantile([0.1, 0.5, 0.9])
    print(f"== re-timing: {a}/ against {b}/ ==")
    print(f"  {len(m)} networks timed in both at the same resolution: latency ratio {b}/{a} median "
          f"{q[0.5]:.3f}, 10-90% {q[0.1]:.3f}-{q[0.9]:.3f}, min {r.min():.3f}, max {r.max():.3f}; "
          f"{(abs(r - 1) > 0.10).sum()} differ by more than 10%")
    ka, kb = set(x[x.kept].id), set(y[y.kept].id)
    print(f"  kept in {a}/: {len(ka)}, in {b}/: {len(kb)}, in both: {len(ka & kb)}; "
          f"only {a}/: {sorted(ka - kb)}; only {b}/: {sorted(kb - ka)}")
    ra, rb = x.set_index("id").resolution, y.set_index("id").resolution
    moved = [i for i in ka & kb if ra[i] != rb[i]]
    print(f"  kept in both but fitted to another resolution: {moved}")
    print()


def trained(run: str) -> pd.DataFrame | None:
    p = HERE / run / "trials.csv"
    if not p.exists():
        return None
    t = pd.read_csv(p)
    c = table(run).set_index("id")
    g = t.groupby("candidate")
    s = pd.DataFrame({
        "alpha": g.alpha.first(), "beta": g.beta.first(), "resolution": g.resolution.first(),
        "flops_ratio": g.flops_ratio.first(),
        "latency_ratio": [c.latency_ratio.get(i, math.nan) for i in g.groups],
        "n": g.top1.size(), "states": g.state.agg(lambda v: ",".join(sorted(set(v)))),
        "top1_mean": 100 * g.top1.mean(), "top1_std": 100 * g.top1.std(ddof=1),
        "per_seed": g.apply(lambda d: ", ".join(f"{100 * v:.2f}" for v in d.sort_values("seed").top1)),
        "seconds": g.seconds.mean(),
    })
    s.index.name = "candidate"
    return s.sort_values("top1_mean", ascending=False)


def bests(n_val: int) -> None:
    sf, sl = trained("flops"), trained("latency")
    if sf is None or sl is None:
        print("(trained runs not there yet)")
        return
    for name, s in (("flops", sf), ("latency", sl)):
        print(f"== trained: {name}/ (top-1 in %, mean +/- sample std over seeds) ==")
        print(s.round(3).to_string().replace("\n", "\n    ").join(["    ", ""]))
        print()
    bf, bl = sf.iloc[0], sl.iloc[0]
    gap = bl.top1_mean - bf.top1_mean
    pooled = math.sqrt(((bf.n - 1) * bf.top1_std ** 2 + (bl.n - 1) * bl.top1_std ** 2) / (bf.n + bl.n - 2))
    p = (bf.top1_mean + bl.top1_mean) / 200
    binom = 100 * math.sqrt(p * (1 - p) / n_val)
    spread = math.hypot(pooled, binom)
    print("== the two bests ==")
    for name, b in (("FLOPs-constrained", bf), ("latency-constrained", bl)):
        inside = abs(b.latency_ratio / TARGET - 1) <= TOL
        print(f"  {name} best: candidate {b.name} (alpha {b.alpha:.2f}, beta {b.beta:.2f}, {b.resolution} px): "
              f"{b.top1_mean:.2f} +/- {b.top1_std:.2f} (seeds {b.per_seed}), flops_ratio {b.flops_ratio:.2f}, "
              f"latency_ratio {b.latency_ratio:.2f} ({'within' if inside else 'outside'} the 2x latency "
              f"target's +/-{TOL:.0%})")
    word = "separable" if abs(gap) > 2 * spread else "within noise"
    print(f"  latency best minus FLOPs best: {gap:+.2f} points; pooled seed sd {pooled:.2f}, binomial "
          f"{binom:.2f} at {n_val:,} images, spread {spread:.2f}: {word} (separable means |gap| > 2 x spread "
          f"= {2 * spread:.2f})")
    common = sorted(set(sf.index) & set(sl.index))
    for i in common:
        print(f"  candidate {i} trained in both runs: {sf.loc[i, 'per_seed']} (flops/) and "
              f"{sl.loc[i, 'per_seed']} (latency/)")


if __name__ == "__main__":
    sets("flops-dry", "latency-dry", "dry runs")
    if (HERE / "latency" / "candidates.csv").exists():
        retime("latency-dry", "latency")
    if (HERE / "flops" / "candidates.csv").exists():
        retime("flops-dry", "flops")
    if (HERE / "flops" / "candidates.csv").exists() and (HERE / "latency" / "candidates.csv").exists():
        sets("flops", "latency", "trained runs")
    bests(n_val=2000)
