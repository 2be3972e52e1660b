"""Plots of a run: top-1 against FLOPs (best marked) and top-1 over the (alpha, beta) plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runs import BEST, CANDIDATES, TRIALS, read_csv
from .errors import UserError


def _complete(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("state") == "COMPLETE" and r.get("top1") is not None]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw the run's plots as PNG and SVG; returns the files written."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    if not (run / TRIALS).is_file():
        raise UserError(f"'{run}' has no {TRIALS}: not a scalesearch run directory, or no trial finished yet")
    trials = _complete(read_csv(run / TRIALS))
    if not trials:
        raise UserError(f"'{run}' has no completed trial to plot yet")
    candidates = read_csv(run / CANDIDATES)
    best = json.loads((run / BEST).read_text()) if (run / BEST).is_file() else max(trials, key=lambda r: r["top1"])
    config = json.loads((run / "config.json").read_text()).get("settings", {}) if (run / "config.json").is_file() else {}
    title = f"{config.get('base', '')} at phi = 1, target {config.get('target_flops', '')} FLOPs, {config.get('dataset', '')}"
    written = []

    # 1. top-1 against measured FLOPs.
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    flops = [r["flops"] / 1e6 for r in trials]
    top1 = [100 * r["top1"] for r in trials]
    pts = ax.scatter(flops, top1, c=[r["alpha"] for r in trials], cmap="viridis", s=36, edgecolor="k", linewidth=0.4)
    fig.colorbar(pts, ax=ax, label="alpha (depth coefficient)")
    ax.scatter([best["flops"] / 1e6], [100 * best["top1"]], marker="*", s=320, color="crimson",
               edgecolor="k", zorder=5,
               label=f"best: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:.3f}")
    ax.set_xlabel("measured FLOPs (M multiply-adds)")
    ax.set_ylabel("top-1 on held-out split (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = run / f"top1_vs_flops.{ext}"
        fig.savefig(path)
        written.append(path)
    plt.close(fig)

    # 2. top-1 over the (alpha, beta) plane; dropped candidates in grey.
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
    dropped = [c for c in candidates if str(c.get("kept")).lower() not in ("true", "1")]
    if dropped:
        ax.scatter([c["alpha"] for c in dropped], [c["beta"] for c in dropped], marker="x", color="0.75", s=18,
                   label="outside FLOPs tolerance / budget")
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
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = run / f"top1_alpha_beta.{ext}"
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written
