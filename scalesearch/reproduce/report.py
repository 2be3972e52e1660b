"""The report: verdicts of compound against each single-dimension row, NAME.csv, NAME.md and the curves."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..search.ranking import Summary, Verdict, compare
from ..study.rows import COMPLETE, DIVERGED, PRUNED, TRIALS, TrialRow
from ..study.rundir import CONFIG, RunDir
from .experiment import BUDGET_FIELDS, SINGLES, ReproduceSettings, carries_paper_figures
from .plan import MODELS, Model

@dataclass
class BaseVerdict:
    base: str
    compound: int | None                      # the model compared (the paper's compound row)
    against: list[tuple[int, Verdict]]        # (model, verdict) per single-dimension row
    text: str


def verdicts(models: Sequence[Model], summaries: Sequence[Summary], n_val: int | None = None) -> list[BaseVerdict]:
    """Per base and compound row: the paper's compound row, and any row matched to the single
    rows' FLOPs (``match``), against every single-dimension paper row, over seeds."""
    by_id = {s.candidate: s for s in summaries}
    out = []
    for base in dict.fromkeys(m.row.base for m in models):
        group = [m for m in models if m.row.base == base]
        paper = [m for m in group if m.row.paper_top1 is not None] or group
        first = next((m for m in paper if m.row.method == "compound"), None)
        compound_rows = [m for m in group if m is first or (m.row.method == "compound" and m.row.match)]
        # the single-dimension rows, and any row of a scaling strategy (dWr, uniform, ...)
        singles = [m for m in paper if m.row.method in SINGLES] + [m for m in group if m.row.method == "strategy"]
        if not compound_rows or not singles:
            continue
        for c in compound_rows:
            name = base if len(compound_rows) == 1 else f"{base} ({c.row.label})"
            cs = by_id.get(c.id)
            # A row with no trial yet (a run stopped early) is waiting, not failed: say which.
            waiting = [m for m in (c, *singles) if m.id not in by_id]
            pending = (f"not trained yet: {len(waiting)} of {len(singles) + 1} rows of this comparison "
                       f"(re-run the same command to resume)") if waiting else ""
            if cs is None:
                out.append(BaseVerdict(base, c.id, [], f"{name}: {pending}; no comparison yet"))
                continue
            if not cs.ranked:
                out.append(BaseVerdict(base, c.id, [], f"{name}: the compound row did not train healthily "
                                                       f"(see trials.csv); no comparison"))
                continue
            against = []
            for m in singles:
                s = by_id.get(m.id)
                if s is not None and s.ranked:
                    against.append((m.id, compare(cs, s, m.row.label, n_val)))
            if not against and pending:
                text = f"{name}: {pending}; no comparison yet"
            else:
                text = _verdict_text(name, c, against, models) + (f"; {pending}" if pending else "")
            out.append(BaseVerdict(base, c.id, against, text))
    return out


def gains(models: Sequence[Model], summaries: Sequence[Summary], n_val: int | None = None) -> dict[int, Verdict]:
    """Each row against its base's baseline row over seeds, by the rule every ranking uses
    (``ranking.compare``): what scaling bought, with the spread that says whether it is noise.
    Rows that did not train healthily, and bases whose baseline did not, get no entry."""
    by_id = {s.candidate: s for s in summaries}
    out: dict[int, Verdict] = {}
    for base in dict.fromkeys(m.row.base for m in models):
        group = [m for m in models if m.row.base == base]
        baseline = next((by_id.get(m.id) for m in group if m.row.method == "baseline"), None)
        if baseline is None or not baseline.ranked:
            continue
        for m in group:
            s = by_id.get(m.id)
            if m.row.method != "baseline" and s is not None and s.ranked:
                out[m.id] = compare(s, baseline, "baseline", n_val)
    return out


def _gain_text(v: Verdict | None) -> str:
    if v is None:
        return "-"
    if v.spread is None:
        return f"{100 * v.gap:+.2f}"
    return f"{100 * v.gap:+.2f} ({'separable' if v.separable else 'noise'}, spread {100 * v.spread:.2f})"


def _verdict_text(base: str, c: Model, against: list[tuple[int, Verdict]], models: Sequence[Model]) -> str:
    labels = {m.id: m.row.label for m in models}
    methods = {m.id: m.row.method for m in models}
    noun = ("single-dimension or strategy row" if any(methods.get(i) == "strategy" for i, _ in against)
            else "single-dimension row")
    if not against:
        return f"{base}: no single-dimension row trained healthily; no comparison"
    parts = [f"{labels[i]} {100 * v.gap:+.2f}" for i, v in against]
    ratios = {m.id: m.flops_ratio for m in models}
    dearer = [labels[i] for i, _ in against if ratios.get(c.id) and ratios.get(i) and ratios[c.id] > 1.1 * ratios[i]]
    cost = (f"; at this proxy compound costs {ratios[c.id]:.2f}x the baseline's FLOPs, over 10% more than "
            f"{', '.join(dearer)}, so those comparisons favour it" if dearer else "")
    spreads = [v.spread for _, v in against]
    if any(s is None for s in spreads):
        return (f"{base}: compound minus each single-dimension row (points): {', '.join(parts)}; one seed per "
                f"row, so the seed-to-seed spread is unknown: run with --seeds 2 or more to call it{cost}")
    spread = max(s for s in spreads if s is not None)
    if all(v.separable and v.gap > 0 for _, v in against):
        word = f"compound beat every {noun} by more than twice the seed spread"
    elif all(v.separable and v.gap < 0 for _, v in against):
        word = f"compound lost to every {noun} by more than twice the seed spread"
    else:
        wins = sum(1 for _, v in against if v.separable and v.gap > 0)
        losses = sum(1 for _, v in against if v.separable and v.gap < 0)
        word = (f"compound did not beat every {noun} beyond the noise ({wins} separable win(s), "
                f"{losses} separable loss(es), {len(against) - wins - losses} within noise)")
    binomial = " and the held-out set's binomial error" if any(v.binomial for _, v in against) else ""
    return (f"{base}: {word}; compound minus each row (points): {', '.join(parts)}; largest spread (pooled "
            f"seed-to-seed{binomial}) {100 * spread:.2f} points{cost}")


def result_rows(models: Sequence[Model], rows: Sequence[TrialRow], summaries: Sequence[Summary],
                gained: dict[int, Verdict] | None = None) -> list[dict[str, Any]]:
    """NAME.csv: one row per (model, seed), then one summary row per model (with its gain over
    the baseline, ``gains``)."""
    by_id = {s.candidate: s for s in summaries}
    gained = gained or {}
    out = []
    for m in models:
        base = m.as_dict()
        for r in sorted((r for r in rows if r.candidate == m.id), key=lambda r: r.seed):
            out.append(dict(base, kind="trial", seed=r.seed, state=r.state,
                            top1=100 * r.top1 if r.top1 is not None else None, loss=r.loss, seconds=r.seconds))
    for m in models:
        s = by_id.get(m.id)
        row = dict(m.as_dict(), kind="summary")
        if s is not None:
            mean, std = s.top1_mean, s.top1_std
            if not s.ranked:  # shown (hollow in the plot) but never compared: the mean over every seed
                scores = [r.top1 for r in s.rows if r.top1 is not None]
                mean = statistics.fmean(scores) if scores else None
                std = statistics.stdev(scores) if len(scores) > 1 else None
            row.update(top1_mean=100 * mean if mean is not None else None,
                       top1_std=100 * std if std is not None else None, n=len(s.rows),
                       diverged=s.diverged, seeds=" ".join(str(r.seed) for r in s.rows),
                       state=COMPLETE if s.ranked else DIVERGED if s.diverged else PRUNED)
        v = gained.get(m.id)
        if v is not None:
            row.update(gain_vs_baseline=100 * v.gap, gain_spread=100 * v.spread if v.spread is not None else None,
                       gain_separable=v.separable)
        out.append(row)
    return out


RESULT_COLUMNS = ["kind", "model", "base", "method", "label", "d", "w", "r", "phi", "resolution", "params", "flops",
                  "flops_ratio", "flops_paper_res", "paper_flops", "paper_ratio", "paper_top1", "seed", "state",
                  "top1", "loss", "seconds", "top1_mean", "top1_std", "n", "diverged", "seeds", "gain_vs_baseline",
                  "gain_spread", "gain_separable", "coefficients", "note"]


def markdown(settings: ReproduceSettings, models: Sequence[Model], summaries: Sequence[Summary],
             found: Sequence[BaseVerdict], dataset_name: str, gained: dict[int, Verdict] | None = None) -> str:
    """NAME.md: our FLOPs and top-1 beside the paper's, one table per base (each row's gain over
    the baseline, ``gains``), a verdict per compound row compared."""
    gained = gained or {}
    exp = settings.experiment
    by_id = {s.candidate: s for s in summaries}
    recipe = settings.train
    paper = carries_paper_figures(exp.rows)
    lines = [f"# {exp.title}", "",
             f"Ours: {dataset_name}, budget `{settings.budget}` (proxy base resolution {settings.resolution} px"
             f"{', strides adapted to keep the native last feature map (keep_maps)' if settings.keep_maps else ''}, "
             f"{settings.data.train_subset or 'all'} training / {settings.data.val_subset or 'all'} held-out images, "
             f"{recipe.images or recipe.epochs} {'images' if recipe.images else 'epochs'}, batch {recipe.batch_size}), "
             f"seeds {settings.seed}..{settings.seed + settings.seeds - 1}; top-1 is the mean over seeds +/- the "
             f"sample standard deviation." + (" The paper: ImageNet, 224 px and up, full training." if paper else ""),
             "", _recipe_line(recipe), ""]
    # (header, cell): the paper's columns only where the experiment carries the paper's figures
    columns: list[tuple[str, Callable[[Model, Summary | None], str]]] = [
        ("model", lambda m, s: m.row.label), ("d", lambda m, s: _f(m.d, ".3f")), ("w", lambda m, s: _f(m.w, ".3f")),
        ("r", lambda m, s: _f(m.r, ".3f")), ("px", lambda m, s: str(m.spec.resolution) if m.spec is not None else "-"),
        ("params", lambda m, s: _f(m.params, ",")), ("FLOPs (ours)", lambda m, s: _f(m.flops, ",")),
        ("ratio", lambda m, s: _f(m.flops_ratio, ".2f", "x"))]
    if paper:
        columns += [("FLOPs at 224 px", lambda m, s: _f(m.flops_paper_res and m.flops_paper_res / 1e9, ".2f", "B")),
                    ("paper FLOPs", lambda m, s: _f(m.row.paper_flops and m.row.paper_flops / 1e9, ".2f", "B")),
                    ("paper ratio", lambda m, s: _f(m.paper_ratio, ".2f", "x"))]
    columns += [("top-1 (ours, %)", lambda m, s: _score(s)), ("per seed (%)", lambda m, s: _per_seed(s)),
                ("vs baseline (points)", lambda m, s: _gain_text(gained.get(m.id)))]
    if paper:
        columns.append(("paper top-1 (%)", lambda m, s: _f(m.row.paper_top1, ".1f")))
    verdict_of: dict[str, list[BaseVerdict]] = {}
    for v in found:
        verdict_of.setdefault(v.base, []).append(v)
    for base in exp.bases:
        group = [m for m in models if m.row.base == base]
        lines += [f"## {base}", "", "| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
        for m in group:
            s = by_id.get(m.id)
            lines.append("| " + " | ".join(cell(m, s) for _, cell in columns) + " |")
        notes = [f"{m.row.label}: {m.note}" for m in group if m.note]
        if notes:
            lines += [""] + [f"Note, {n}." for n in notes]
        coeffs = {m.coefficients for m in group if m.coefficients}
        if coeffs:
            lines += ["", "Compound coefficients: " + "; ".join(sorted(coeffs)) + "."]
        if any(gained.get(m.id) is not None and gained[m.id].spread is not None for m in group):
            lines += ["", "vs baseline: the row's mean minus the baseline's, separable when more than twice the "
                          "spread (pooled seed-to-seed and the held-out set's binomial error)."]
        for v in verdict_of.get(base, []):
            lines += ["", v.text + "."]
        lines.append("")
    return "\n".join(lines)


def _recipe_changes(recipe: Any) -> list[str]:
    """The recipe's fields that differ from the defaults (train.recipe.TrainConfig), besides the budget's."""
    from ..settings import recipe_fields
    from ..train.recipe import TrainConfig

    default = TrainConfig()
    return [f"{f.name} {getattr(recipe, f.name)}" for f in recipe_fields()
            if f.name not in BUDGET_FIELDS and getattr(recipe, f.name) != getattr(default, f.name)]


def _recipe_line(recipe: Any) -> str:
    changed = _recipe_changes(recipe)
    return "Recipe: the defaults (docs/cli.md)" + (f" but {', '.join(changed)}." if changed else ".")


def _score(s: Summary | None) -> str:
    if s is None:
        return "not trained"
    if not s.ranked:
        return f"DIVERGED ({s.diverged} of {s.diverged + s.n} seeds)"
    return f"{100 * s.top1_mean:.2f}" + (f" +/- {100 * s.top1_std:.2f}" if s.top1_std is not None else "")


def _per_seed(s: Summary | None) -> str:
    """Each seed's top-1 in seed order, marked where it did not train healthily."""
    if s is None:
        return "-"
    def mark(r: TrialRow) -> str:
        if r.state == COMPLETE:
            return ""
        return " (at chance)" if "at chance" in (r.diverged or "") else f" ({r.state.lower()})"

    return ", ".join((f"{100 * r.top1:.1f}" if r.top1 is not None else "-") + mark(r) for r in s.rows)


def _f(value: Any, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec) + unit


def write_outputs(run: RunDir, settings: ReproduceSettings, models: Sequence[Model], rows: Sequence[TrialRow],
                  summaries: Sequence[Summary], found: Sequence[BaseVerdict], dataset_name: str,
                  n_val: int | None = None, plots: bool = True) -> list[Path]:
    """NAME.csv and NAME.md, and with ``plots`` the curves (NAME.png, NAME.svg)."""
    from ..report.plots import draw_curves
    from ..study.rundir import write_atomic
    from ..report.curves import series_from_results

    out = run.path
    name = settings.experiment.name
    gained = gains(models, summaries, n_val)
    table = result_rows(models, rows, summaries, gained)
    run.write_run_csv(f"{name}.csv", table, RESULT_COLUMNS)
    write_atomic(out / f"{name}.md", markdown(settings, models, summaries, found, dataset_name, gained))
    recipe = settings.train
    budget = (f"{dataset_name}, {settings.resolution} px proxy{' (keep-maps)' if settings.keep_maps else ''}, {recipe.images or recipe.epochs:g} "
              f"{'images' if recipe.images else 'epochs'}, {settings.seeds} seed(s)"
              + "".join(f", {c}" for c in _recipe_changes(recipe)))
    figures = draw_curves(series_from_results(table), out / name, title=f"{settings.experiment.title}\n{budget}"
                          ) if plots else []
    return [out / CONFIG, out / MODELS, out / TRIALS, out / f"{name}.csv", out / f"{name}.md"] + figures
