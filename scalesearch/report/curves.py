"""Top-1 against FLOPs from any saved results: grid runs, reproductions, or their CSV files.

``load_series(path)`` reads one path into labelled point sets (``Series``): a grid run
directory (or its trials.csv / summary.csv) gives one set of candidates; a reproduction
(or its NAME.csv) gives one curve per (base, method), each starting from the baseline.
``curves(paths, out)`` draws them all on one plot: what `scalesearch curves` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import UserError
from ..study.rows import DIVERGED, PRUNED


@dataclass(frozen=True)
class Point:
    flops: float
    top1: float | None                # percent, mean over seeds (None: no healthy seed)
    std: float | None = None          # percent, sample std over seeds
    n: int = 1
    diverged: bool = False
    label: str = ""


@dataclass
class Series:
    label: str
    points: list[Point] = field(default_factory=list)
    line: bool = True                 # a curve (a scaling method) or a point cloud (grid candidates)


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value


def series_from_results(rows: Iterable[dict[str, Any]], prefix: str = "") -> dict[str, list[Series]]:
    """Reproduction summary rows (NAME.csv) -> one panel per base, one curve per method.

    The baseline is the first point of every curve of its base; a compound row given by its
    own (d, w, r) next to compound rows given by phi is drawn as its own point.
    """
    summaries = [r for r in rows if r.get("kind") == "summary"]
    panels: dict[str, list[Series]] = {}
    for base in dict.fromkeys(str(r["base"]) for r in summaries):
        group = [r for r in summaries if str(r["base"]) == base]
        points = {int(r["model"]): _point(r) for r in group}
        baseline = next((points[int(r["model"])] for r in group if r["method"] == "baseline"), None)
        has_phi = any(r["method"] == "compound" and _num(r.get("phi")) is not None for r in group)
        curves: dict[str, Series] = {}
        for r in group:
            method = str(r["method"])
            if method == "baseline":
                continue
            key = method
            if method == "compound" and has_phi and _num(r.get("phi")) is None:
                key = str(r["label"])
            if key not in curves:
                curves[key] = Series(f"{prefix}{key}", [baseline] if baseline is not None and key == method else [],
                                     line=key == method)
            curves[key].points.append(points[int(r["model"])])
        for s in curves.values():
            s.points.sort(key=lambda p: p.flops)
        if not curves and baseline is not None:
            curves["baseline"] = Series(f"{prefix}baseline", [baseline], line=False)
        panels[base] = list(curves.values())
    return panels


def _point(r: dict[str, Any]) -> Point:
    mean = _num(r.get("top1_mean"))
    flops = _num(r.get("flops"))
    if flops is None:
        raise UserError(f"a result row has no FLOPs ({r.get('label')!r})")
    state = str(r.get("state") or "")
    return Point(flops=flops, top1=mean, std=_num(r.get("top1_std")), n=int(_num(r.get("n")) or 0),
                 diverged=state in (DIVERGED, PRUNED), label=str(r.get("label") or ""))


def _grid_series(summaries: Sequence[Any], label: str) -> Series:
    pts = []
    for s in summaries:
        first = s.rows[0]
        pts.append(Point(flops=float(first.flops or 0), top1=100 * s.top1_mean if s.top1_mean is not None else None,
                         std=100 * s.top1_std if s.top1_std is not None else None, n=s.n,
                         diverged=not s.ranked, label=f"a={first.alpha:g} b={first.beta:g}"
                         if first.alpha is not None else f"c{s.candidate}"))
    return Series(label, sorted(pts, key=lambda p: p.flops), line=False)


def _run_series(rows: list[Any], config: dict[str, Any], name: str) -> list[Series]:
    """A grid run's trials as one series; under successive halving, one per rung (each candidate
    at that rung's budget, the rungs as they stand now: halving.current), labelled with it."""
    from ..search.halving import standing
    from ..search.ranking import summarize

    rows = standing(rows, config)
    if not any(r.rung for r in rows):
        return [_grid_series(summarize(rows), f"{name} (grid)")]
    out = []
    for k in sorted({r.rung for r in rows}):
        at = [r for r in rows if r.rung == k]
        budget = next((r.budget for r in at if r.budget), None)
        label = f"{name} (grid, rung {k}" + (f": {budget:,} images" if budget else "") + ")"
        out.append(_grid_series(summarize(at), label))
    return out


def load_series(path: str | Path) -> list[Series]:
    """The results saved at ``path`` as labelled series (see the module docstring).

    A file read from a run folder is checked against the checksum recorded when it was
    written (as a resume would), so a damaged file is refused instead of plotted."""
    from ..study.rows import TRIALS, TrialRow
    from ..study.rundir import RunDir, read_csv

    path = Path(path)
    if not path.exists():
        raise UserError(f"'{path}' does not exist")
    name = path.name if path.is_dir() else path.parent.name
    if path.is_dir():
        run = RunDir(path)
        results = [p for p in sorted(path.glob("*.csv")) if _is_reproduction(p)]
        if results:
            run.open_to_read([results[0].name])
            return _flatten(series_from_results(read_csv(results[0])), name)
        if (path / TRIALS).is_file():
            config = run.open_to_read([TRIALS])
            rows = list(run.trials().values())
            return _run_series(rows, config, name) if rows else _none(path)
        return _none(path)
    if path.suffix.lower() != ".csv":
        return _none(path)
    RunDir(path.parent).verify([path.name])
    if _is_reproduction(path):
        return _flatten(series_from_results(read_csv(path)), name)
    rows = read_csv(path)
    if rows and "candidate" in rows[0] and "top1" in rows[0]:
        config = RunDir(path.parent).read_config() if (path.parent / "config.json").is_file() else {}
        return _run_series([TrialRow.from_row(r, str(path)) for r in rows], config, name)
    if rows and "candidate" in rows[0] and "top1_mean" in rows[0]:
        pts = [Point(flops=float(r["flops"]), top1=100 * r["top1_mean"] if _num(r["top1_mean"]) is not None else None,
                     std=100 * r["top1_std"] if _num(r.get("top1_std")) is not None else None,
                     n=int(_num(r.get("n")) or 0), diverged=_num(r["top1_mean"]) is None) for r in rows]
        return [Series(f"{name} (grid)", sorted(pts, key=lambda p: p.flops), line=False)]
    return _none(path)


def _is_reproduction(path: Path) -> bool:
    try:
        head = path.read_text(errors="replace").split("\n", 1)[0].split(",")
    except OSError:
        return False
    return {"kind", "method", "top1_mean", "flops"} <= set(head)


def _flatten(panels: dict[str, list[Series]], name: str) -> list[Series]:
    many = len(panels) > 1
    out = []
    for base, group in panels.items():
        for s in group:
            s.label = f"{name}: " + (f"{base} " if many else "") + s.label
            out.append(s)
    return out


def _none(path: Path) -> list[Series]:
    raise UserError(f"'{path}' holds no results: give a grid run directory, a reproduce output directory, "
                    f"or one of their CSV files (trials.csv, summary.csv, table3.csv, figure8.csv)")


def data_set_of(path: str | Path) -> str | None:
    """The data set a saved result was trained on, from its run folder's config.json (a grid
    run's settings or a reproduction's identity); None when it does not say."""
    import json

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    settings, identity = config.get("settings"), config.get("identity")
    if isinstance(settings, dict):
        data = settings.get("data")
        found = data.get("dataset") if isinstance(data, dict) else settings.get("dataset")
    elif isinstance(identity, dict):
        found = identity.get("dataset")
    else:
        found = None
    return str(found) if found is not None else None


def mixed_data_note(paths: Sequence[str | Path]) -> str:
    """A warning when the results come from more than one data set ("" otherwise): top-1 on
    different held-out sets are not comparable, whatever the plot suggests."""
    found = {str(p): data_set_of(p) for p in paths}
    names = sorted({d for d in found.values() if d is not None})
    if len(names) < 2:
        return ""
    return ("these results come from different data sets (" + "; ".join(f"{p}: {d}" for p, d in found.items()
                                                                          if d is not None)
            + "): their top-1 are not comparable with each other")


def curves(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> list[Path]:
    """Draw every series of ``paths`` on one plot; writes OUT (.png) and its .svg twin."""
    from .plots import draw_curves

    if not paths:
        raise UserError("curves: give at least one results path")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg"):
        raise UserError(f"--out '{out}' must end in .png or .svg")
    if out.parent and not out.parent.is_dir():
        raise UserError(f"--out '{out}': folder '{out.parent}' does not exist")
    from ..study.rundir import writable_problem

    problem = writable_problem(out.parent)
    if problem:
        raise UserError(f"--out '{out}': folder '{out.parent}' is not writable ({problem})")
    series: list[Series] = []
    for p in paths:
        series += load_series(p)
    if not any(pt.top1 is not None for s in series for pt in s.points):
        raise UserError(f"no healthy trained result in {', '.join(str(p) for p in paths)} to plot")
    stems = [out.with_suffix(".png"), out.with_suffix(".svg")]
    existing = [p for p in stems if p.exists()]
    if existing:
        raise UserError(f"'{existing[0]}' exists; choose another --out (nothing is overwritten)")
    return draw_curves({"": series}, out.with_suffix(""), title=title or "top-1 against FLOPs")


__all__ = ["Point", "Series", "curves", "load_series", "mixed_data_note", "series_from_results"]
