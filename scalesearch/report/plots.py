"""Plots of a run: top-1 against FLOPs (best marked) and top-1 over the (alpha, beta) plane."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..search.ranking import summarize
from ..study.rows import TRIALS
from ..study.rundir import CANDIDATES, CONFIG, RunDir, read_csv


def _points(run: RunDir) -> list[dict[str, Any]]:
    """One point per ranked candidate: its mean top-1 over seeds and the seed-to-seed std (under
    successive halving, at its highest rung as the rungs stand now: halving.current)."""
    from ..search.halving import standing

    rows = standing(run.trials().values(), run.read_config())
    return [dict(s.as_dict(), top1=s.top1_mean, std=s.top1_std or 0.0) for s in summarize(rows)
            if s.ranked and s.top1_mean is not None]


def _save(fig, stem: Path) -> list[Path]:  # noqa: ANN001 - a matplotlib Figure
    """Write a figure as PNG and SVG beside each other, then free it.  The same figure gives the
    same bytes (no date in the SVG, its ids salted by a constant), so redrawing a run that has
    not changed leaves its plots as they were."""
    import matplotlib
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = [stem.with_suffix(f".{ext}") for ext in ("png", "svg")]
    with matplotlib.rc_context({"svg.hashsalt": "scalesearch"}):
        for path in paths:
            fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
    return paths


GROWTH_COLOURS = ((0.13, 0.55, 0.13), (0.12, 0.35, 0.85), (0.90, 0.45, 0.05))  # depth, width, resolution


def growth_colour(alpha: float, beta: float, gamma: float) -> tuple[float, float, float]:
    """A candidate's colour: the depth, width and resolution colours mixed by each one's share
    of the FLOPs growth (log alpha, 2 log beta, 2 log gamma, as in alpha * beta^2 * gamma^2)."""
    shares = [max(math.log(alpha), 0.0), max(2 * math.log(beta), 0.0), max(2 * math.log(gamma), 0.0)]
    total = sum(shares)
    if total <= 0:
        return (0.5, 0.5, 0.5)  # the base itself
    return tuple(sum(s / total * c[k] for s, c in zip(shares, GROWTH_COLOURS)) for k in range(3))  # type: ignore[return-value]


def _kept(row: dict[str, Any]) -> bool:
    from ..search.space import Candidate

    return Candidate.from_row(row).kept


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw the run's plots as PNG and SVG; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..settings import flatten

    run = RunDir(run_dir)
    if not (run / TRIALS).is_file():
        raise UserError(f"'{run.path}' has no {TRIALS}: not a scalesearch run directory, or no trial finished yet")
    recorded = run.open_to_read((CONFIG, CANDIDATES, TRIALS))
    trials = _points(run)
    if not trials:
        raise UserError(f"'{run.path}' has no completed trial to plot yet")
    run.check_writable("the plots")
    candidates = read_csv(run / CANDIDATES)
    best = trials[0]  # summaries rank the top rung first (halving), then by mean top-1
    config = flatten(recorded.get("settings") or {})
    by_latency = bool(config.get("target_latency"))   # the constraint the resolutions were fitted to
    goal = f"{config['target_latency']} latency" if by_latency else f"{config.get('target_flops', '')} FLOPs"
    title = f"{config.get('base', '')} at phi = 1, target {goal}, {config.get('dataset', '')}"
    halved = any(r["rung"] for r in trials)  # successive halving: each candidate at its highest rung
    if halved:
        budgets = {r["rung"]: r["budget"] for r in trials}
        title += "\neach candidate at its highest halving rung (" + ", ".join(
            f"r{k}: {b:,} images" for k, b in sorted(budgets.items())) + ")"
    written = []

    # 1. top-1 against measured FLOPs.
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    flops = [r["flops"] / 1e6 for r in trials]
    top1 = [100 * r["top1"] for r in trials]
    ax.errorbar(flops, top1, yerr=[100 * r["std"] for r in trials], fmt="none", ecolor="0.3", elinewidth=1,
                capsize=3, zorder=1, label="+/- 1 std over seeds" if any(r["std"] for r in trials) else None)
    # Colour by where the FLOPs growth goes (depth, width, resolution), so a width-heavy and a
    # resolution-heavy candidate never look the same (colouring by alpha alone made them so).
    ax.scatter(flops, top1, zorder=2, c=[growth_colour(r["alpha"], r["beta"], r["gamma"]) for r in trials], s=36,
               edgecolor="k", linewidth=0.4)
    for name, colour in zip(("depth-heavy", "width-heavy", "resolution-heavy"), GROWTH_COLOURS):
        ax.scatter([], [], color=colour, label=name, s=36, edgecolor="k", linewidth=0.4)  # legend entries
    if halved:
        for r, x, y in zip(trials, flops, top1):
            ax.annotate(f"r{r['rung']}", (x, y), textcoords="offset points", xytext=(6, -3), fontsize=7)
    ax.scatter([best["flops"] / 1e6], [100 * best["top1"]], marker="*", s=320, color="crimson",
               edgecolor="k", zorder=5,
               label=f"best: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:.3f}")
    target = None if by_latency else recorded.get("target_flops_absolute")   # a FLOPs target has a line
    if target:
        from ..search.space import GridSpec

        tol = float(config.get("tolerance", GridSpec().tolerance))
        ax.axvline(target / 1e6, color="0.4", linestyle="--", linewidth=1, label="FLOPs target")
        ax.axvspan(target * (1 - tol) / 1e6, target * (1 + tol) / 1e6, color="0.85", alpha=0.5, zorder=0,
                   label=f"tolerance +/-{tol:.0%}")
    ax.set_xlabel("measured FLOPs (M multiply-adds)")
    ax.set_ylabel("top-1 on held-out split (%), mean over seeds")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(y=0.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=7, frameon=False)
    written += _save(fig, run / "top1_vs_flops")

    # 2. top-1 over the (alpha, beta) plane; dropped candidates in grey.
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    trained = {(r["alpha"], r["beta"]) for r in trials}
    dropped = [c for c in candidates if not _kept(c)]
    waiting = [c for c in candidates if _kept(c) and (c["alpha"], c["beta"]) not in trained]
    if dropped:
        ax.scatter([c["alpha"] for c in dropped], [c["beta"] for c in dropped], marker="x", color="0.75", s=18,
                   label=f"dropped ({'latency' if by_latency else 'FLOPs'} tolerance, budget or twin)")
    if waiting:
        ax.scatter([c["alpha"] for c in waiting], [c["beta"] for c in waiting], facecolor="none", edgecolor="0.4",
                   s=60, label="kept, not trained")
    pts = ax.scatter([r["alpha"] for r in trials], [r["beta"] for r in trials], c=top1, cmap="plasma", s=120,
                     edgecolor="k", linewidth=0.4)
    for r, t in zip(trials, top1):
        ax.annotate(f"{t:.1f}", (r["alpha"], r["beta"]), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=6)
    fig.colorbar(pts, ax=ax, label="top-1 (%)")
    ax.scatter([best["alpha"]], [best["beta"]], marker="*", s=320, color="crimson", edgecolor="k", zorder=5,
               label="best")
    ax.set_xlabel("alpha (depth)")
    ax.set_ylabel("beta (width)")
    ax.set_title(f"top-1 over (alpha, beta); gamma fitted per point\n{title}", fontsize=9)
    ax.margins(0.08)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    written += _save(fig, run / "top1_alpha_beta")
    return written + plot_latency(run.path)


METHOD_STYLE = {"compound": ("crimson", "o"), "width": ("tab:blue", "s"), "depth": ("tab:green", "^"),
                "resolution": ("tab:orange", "D"), "baseline": ("0.3", "o")}


def _style(label: str, k: int) -> tuple[str, str]:
    words = label.replace(":", " ").split()
    for method, style in METHOD_STYLE.items():
        if method in words and not (method == "compound" and "d=" in label):
            return style
    cycle = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]
    return cycle[k % len(cycle)], "v*Ph<>"[k % 6]


def hollow_points(series: list) -> set[tuple[float, float]]:
    """The diverged points of ``series`` (curves.Series) as (FLOPs, top-1): a point that
    several curves share (the baseline every method starts from) is one point."""
    return {(p.flops, p.top1) for s in series for p in s.points if p.top1 is not None and p.diverged}


def draw_curves(panels: dict, stem: Path, title: str = "") -> list[Path]:
    """Top-1 (%) against measured FLOPs, one curve or point set per series, error bars from seeds.

    ``panels`` maps a panel title to its ``curves.Series`` (one subplot each); diverged
    points (no healthy seed) are drawn hollow, off the curve, and counted in the legend.
    Writes STEM.png and STEM.svg.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(6.4 * n if n > 1 else 7.5, 5), dpi=120, squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        flops = [p.flops for s in series for p in s.points if p.top1 is not None]
        unit, scale = (1e9, "G") if flops and max(flops) >= 5e9 else (1e6, "M")
        diverged = hollow_points(series)
        for k, s in enumerate(series):
            colour, marker = _style(s.label, k)
            pts = [p for p in s.points if p.top1 is not None and not p.diverged]
            bad = [p for p in s.points if p.top1 is not None and p.diverged]
            if bad:  # shown hollow, never joined to the curve: no healthy seed
                ax.scatter([p.flops / unit for p in bad], [p.top1 for p in bad], marker=marker, s=40,
                           facecolor="none", edgecolor=colour, linewidth=1.2, zorder=3)
            if not pts:
                continue
            x = [p.flops / unit for p in pts]
            y = [p.top1 for p in pts]
            err = [p.std or 0.0 for p in pts]
            ax.errorbar(x, y, yerr=err if any(err) else None, color=colour, marker=marker, markersize=6,
                        linestyle="-" if s.line and len(pts) > 1 else "none", linewidth=1.5, capsize=3,
                        elinewidth=1, label=s.label, markeredgecolor="k", markeredgewidth=0.4)
        if flops and max(flops) / max(min(flops), 1) > 12:
            ax.set_xscale("log")
        ax.set_xlabel(f"measured FLOPs ({scale} multiply-adds per image)")
        ax.set_ylabel("top-1 on held-out split (%), mean +/- std over seeds")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.margins(x=0.06, y=0.12)
        legend_title = f"hollow: {len(diverged)} point(s) at chance (diverged), not compared" if diverged else None
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title=legend_title, title_fontsize=7, loc="best")
        else:  # nothing trained yet, or nothing healthy: say so rather than an empty legend
            ax.text(0.5, 0.5, legend_title or "no trained point yet", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="0.4")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, stem)


def draw_agreement(points: list[dict[str, Any]], stem: Path, small: str, large: str, verdict: str) -> list[Path]:
    """Top-1 at the proxy budget against top-1 at the larger one, a point per candidate
    (mean over seeds, error bars one std), labelled with its id; the verdict as the title."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    for p in points:
        if not p["small"] or not p["large"]:
            continue
        x, y = 100 * statistics.fmean(p["small"]), 100 * statistics.fmean(p["large"])
        ex = 100 * statistics.stdev(p["small"]) if len(p["small"]) > 1 else 0.0
        ey = 100 * statistics.stdev(p["large"]) if len(p["large"]) > 1 else 0.0
        ax.errorbar([x], [y], xerr=[ex], yerr=[ey], fmt="o", color="tab:blue", markeredgecolor="k",
                    markeredgewidth=0.4, capsize=3)
        ax.annotate(f"c{p['candidate']}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ax.set_xlabel(f"top-1 (%) at the proxy budget ({small}), mean +/- std over seeds")
    ax.set_ylabel(f"top-1 (%) at the larger budget ({large})")
    words = verdict.split(": ")
    ax.set_title("\n".join([words[0], ": ".join(words[1:])]) if len(words) > 1 else verdict, fontsize=8)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    return _save(fig, stem)


def draw_rungs(run_dir: Any, agreements: Sequence[dict[str, Any]]) -> list[Any]:
    """A plot per two rungs: top-1 at the lower rung's budget against the higher one's, a point
    per candidate with error bars over seeds, the verdict as its title (rungs_0_1.png ...)."""
    files = []
    for found in agreements:
        files += draw_agreement(found["candidates"], Path(run_dir) / f"rungs_{found['rung']}_{found['next_rung']}",
                                found["small"], found["large"], found["verdict"])
    return files


def plot_latency(run_dir: str | Path) -> list[Path]:
    """Measured latency against measured FLOPs over a run's timed candidates (both as ratios to
    the base), the kept ones marked, with Kendall's tau in the title: how far FLOPs stand in for
    time on the machine that timed them.  No file when no candidate was timed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..search.agreement import cost_agreement_text
    from ..search.space import Candidate
    from ..settings import flatten

    run = RunDir(run_dir)
    recorded = run.open_to_read((CONFIG, CANDIDATES))
    rows = [Candidate.from_row(r) for r in read_csv(run / CANDIDATES)]
    timed = [c for c in rows if c.latency_ratio is not None and c.drop != "twin"]
    if not timed:
        return []
    run.check_writable("the plots")
    config = flatten(recorded.get("settings") or {})
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    for kept, style in ((False, dict(marker="x", color="0.6", s=20, label="dropped")),
                        (True, dict(marker="o", facecolor="none", edgecolor="crimson", s=46, label="kept"))):
        group = [c for c in timed if c.kept == kept]
        if group:
            ax.scatter([c.flops_ratio for c in group], [c.latency_ratio for c in group], zorder=3 if kept else 2, **style)
    ax.errorbar([c.flops_ratio for c in timed], [c.latency_ratio for c in timed],
                yerr=[c.latency_iqr_ms / 2 / c.latency_ms * c.latency_ratio for c in timed],
                fmt="none", ecolor="0.8", elinewidth=0.8, zorder=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    for axis in (ax.xaxis, ax.yaxis):   # plain numbers, not "1.94 x 10^0", on a narrow log axis
        axis.set_major_formatter(FormatStrFormatter("%.3g"))
        axis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.set_xlabel("measured FLOPs / base's (log)")
    ax.set_ylabel("measured latency / base's (log; bars: half the IQR)")
    target = config.get("target_latency") or config.get("target_flops", "")
    constraint = "latency" if config.get("target_latency") else "FLOPs"
    ax.set_title(f"{config.get('base', '')} at {config.get('resolution') or 'native'} px, target {target} {constraint}, "
                 f"batch {config.get('latency_batch', 1)}\n" + cost_agreement_text(recorded.get("flops_latency")).replace("; ", "\n"),
                 fontsize=7, wrap=True)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, run / "latency_vs_flops")
