"""How the training commands print: the events of a run as lines, and the summary tables."""

from __future__ import annotations

import sys

import typer

from ..report.formatting import duration, table
from ..study.rows import DIVERGED


LONG_WORK = 2 * 3600  # seconds of estimated training above which a search warns before it starts


class GridPrinter:
    """Prints the events of a search as they come."""

    def __call__(self, event) -> None:  # noqa: ANN001
        from ..train.forms import FormsChosen
        from ..search.fit import MAX_TIMINGS
        from ..search.grid import FamilyTiming, Measured
        from ..search.space import dropped_summary
        from ..study.setup import Planned, StudyStarted, TrialFinished

        if isinstance(event, Measured):
            kept = [c for c in event.rows if c.kept]
            typer.echo(f"{event.base.name} at {event.base.resolution}px: {event.base_flops:,} FLOPs; target "
                       f"{event.target_flops / event.base_flops:.3g}x = {event.target_flops:,.0f}; "
                       f"{len(event.rows)} (alpha, beta) points, {len(kept)} kept")
            if event.latency_target:
                typer.echo(f"gamma fitted to measured latency: target {event.latency_target} of the base's")
            if kept:
                timed = any(c.latency_ms is not None for c in kept)
                typer.echo(table([c.row() for c in kept], [
                    ("id", ""), ("alpha", ".2f"), ("beta", ".2f"), ("gamma", ".3f"), "resolution",
                    ("nominal_ratio", ".3f"), ("flops_ratio", ".3f"), ("params", ","), ("acts", ",")]
                    + ([("latency_ms", ".3g"), ("latency_iqr_ms", ".2g"), ("latency_ratio", ".3f")] if timed else [])))
                noisy = [c.id for c in kept if c.reason]
                if noisy:
                    typer.echo(f"note: candidate(s) {', '.join(map(str, noisy))} kept within their timing noise "
                               f"(candidates.csv says by how much)")
            typer.echo(dropped_summary(event.rows) + (f" (every row, with its reason: {event.out / 'candidates.csv'})"
                                                      if kept else ""))
            if event.flops_latency is not None or any(c.latency_ms is not None for c in event.rows):
                from ..search.agreement import cost_agreement_text

                typer.echo(cost_agreement_text(event.flops_latency))
            if event.geometry:
                typer.echo(event.geometry)
            if event.lost:
                typer.echo(f"warning: {event.lost}")
            if event.precision:
                typer.echo(f"warning: {event.precision}")
        elif isinstance(event, FamilyTiming):
            typer.echo(f"fitting the family's {event.members} members to measured latency: each timed at up to "
                       f"{MAX_TIMINGS + 1} resolutions, the largest the slowest (cached for the next run)")
        elif isinstance(event, FormsChosen):
            for choice in event.choices:
                typer.echo(choice.text())
                if choice.note:
                    typer.echo(f"warning: {choice.note}")
        elif isinstance(event, Planned):
            if event.models:
                typer.echo(models_table(event.models))
            eta = f"; estimated {duration(event.seconds)} on this machine" if event.seconds else ""
            each = f", {event.images_per_trial:,} images each" if event.images_per_trial else ""
            typer.echo(f"training {event.units} {event.unit} x {event.seeds} seed(s) = {event.trials} trials "
                       f"({event.todo} to train){each}{eta}")
            if event.halving:
                typer.echo(event.halving)
            if event.seconds and event.seconds > LONG_WORK:
                typer.echo(f"warning: about {duration(event.seconds)} of training on this machine; a cheaper run "
                           f"first: {event.cheaper}")
        elif isinstance(event, StudyStarted) and event.finished:
            typer.echo(f"resuming: {event.finished} finished trial(s) kept, {event.todo} to train")
        elif isinstance(event, TrialFinished) and not sys.stdout.isatty():
            # Redirected to a log there are no progress bars: one line per trial says it is alive.
            typer.echo(trial_line(event))


def trial_line(event) -> str:  # noqa: ANN001 - study.TrialFinished
    """One finished trial, for a log: which, how it ended, its top-1 and time, and the count."""
    row = event.row
    top1 = f"top-1 {100 * row.top1:.2f}%" if row.top1 is not None else "no top-1"
    took = f", {duration(row.seconds)}" if row.seconds is not None else ""
    why = f" ({row.diverged})" if row.diverged else ""
    return f"trial {row.trial} {row.state}{why}: {top1}{took} [{event.done}/{event.total}]"


def print_summary(result, recipe) -> None:  # noqa: ANN001 - GridResult, TrainConfig
    best = result.best
    line = "=" * 78
    typer.echo(line)
    rows = []
    for s in result.summaries:
        row = s.as_dict()
        row["top1"] = (f"{100 * s.top1_mean:.2f}" if s.top1_mean is not None else "-") + (
            f" +/- {100 * s.top1_std:.2f}" if s.top1_std is not None else "")
        row["note"] = ("DIVERGED" if s.diverged else "pruned" if s.pruned else "") + (
            " <- best" if s.candidate == best["candidate"] else "")
        rows.append(row)
    rungs = [("rung", ""), ("budget", ",")] if result.rungs else []
    typer.echo("ranking by mean top-1 over seeds (%)" + (", the top rung first:" if result.rungs else ":"))
    typer.echo(table(rows, [("candidate", ""), ("alpha", ".2f"), ("beta", ".2f"), ("gamma", ".3f"), "resolution",
                            ("flops_ratio", ".3f"), *rungs, "n", "top1", "note"]))
    for rung in result.rungs:
        if rung.kept:
            typer.echo(f"rung {rung.rung} ({rung.candidates} candidates at {rung.images:,} images) sent up "
                       f"{', '.join(map(str, rung.kept))}")
    for found in result.agreements:
        typer.echo(f"rank agreement, rung {found['rung']} -> {found['next_rung']}: {found['verdict']}")
    diverged = [r for r in result.rows if r.state == DIVERGED]
    for r in diverged:
        typer.echo(f"DIVERGED: trial {r.trial} ({r.diverged}); never ranked")
    plateau_hint(diverged, recipe)
    if result.verdict is not None:
        from ..search.ranking import comparable, compare

        typer.echo(result.verdict.text)
        ranked = comparable(result.summaries)  # the best's rung only: one budget
        if len(ranked) > 2:
            typer.echo(compare(ranked[0], ranked[-1], "worst", n_val=result.n_val).text)
    if result.ties:
        from ..search.grid import tie_text

        typer.echo(f"note: {tie_text(result.ties)}")
    by_mean = " (by mean: a tie)" if result.ties else ""
    typer.echo(f"best at phi = 1{by_mean}: alpha = {best['alpha']:g}  beta = {best['beta']:g}  gamma = {best['gamma']:.4f}"
               f"   (top-1 {100 * best['top1_mean']:.2f}%" + (f" +/- {100 * best['top1_std']:.2f}" if best.get("top1_std") is not None else "")
               + f", {best['n']} seed(s))")
    typer.echo(f"  d = {best['d']:.3f}  w = {best['w']:.3f}  r = {best['r']:.3f}  -> {best['resolution']}px, "
               f"{best['params']:,} params, {best['flops']:,} FLOPs ({best['flops_ratio']:.3f}x the base)")
    fitted = "latency" if result.family and "latency_ms" in result.family[0] else "FLOPs"  # grid times it only then
    typer.echo(f"family{' of the best by mean' if result.ties else ''} (d = alpha^phi, w = beta^phi; resolution fitted "
               f"so measured {fitted} follow the target^phi):")
    typer.echo(family_table(result.family))
    if result.family_note:
        typer.echo(f"note: {result.family_note}")
    typer.echo(f"written to {result.out}/: " + ", ".join(p.name for p in result.files))
    typer.echo(line)


def plateau_hint(diverged, recipe) -> None:  # noqa: ANN001 - TrialRows, TrainConfig
    """Trials that never left a uniform guess: name the recipe options that got deep candidates
    off that plateau in our measurements, those the run did not use."""
    from ..train.health import NEVER_LEARNED

    if not any(NEVER_LEARNED in (r.diverged or "") for r in diverged):
        return
    options = ([] if recipe.residual_init == "scaled" else ["--set train.residual_init=scaled"]) + (
        [] if recipe.optimizer == "lars" else ["--set train.optimizer=lars"])
    if options:
        typer.echo(f"hint: deep candidates that sit at chance at a short budget trained with {' and '.join(options)} "
                   f"in our measurements (experiments/deep-candidates/NOTES.md)")


def family_table(rows) -> str:  # noqa: ANN001
    columns = ["phi", ("d", ".3f"), ("w", ".3f"), ("r", ".3f")]
    if rows and "gamma_nominal" in rows[0]:
        columns.append(("gamma_nominal", ".3f"))
    columns += ["resolution", "layers", ("params", ","), ("flops", ","), ("acts", ","), ("nominal_ratio", ".2f")]
    if rows and "target_ratio" in rows[0]:
        columns.append(("target_ratio", ".2f"))
    columns.append(("flops_ratio", ".2f"))
    if rows and "latency_ms" in rows[0]:
        columns += [("latency_ms", ".3g"), ("latency_iqr_ms", ".2g"), ("latency_ratio", ".2f")]
    if rows and "within_tolerance" in rows[0]:
        columns.append("within_tolerance")
    return table(rows, columns)


def models_table(models) -> str:  # noqa: ANN001 - reproduce.Model
    rows = [dict(m.as_dict(), paper_gflops=m.row.paper_flops / 1e9 if m.row.paper_flops else None) for m in models]
    from ..reproduce import carries_paper_figures

    paper = carries_paper_figures(m.row for m in models)
    return table(rows, [("model", ""), "base", "label", ("d", ".3f"), ("w", ".3f"), ("r", ".3f"), "resolution",
                        ("params", ","), ("flops", ","), ("flops_ratio", ".2f")]
                 + ([("paper_gflops", ".2f"), ("paper_ratio", ".2f"), ("paper_top1", ".1f")] if paper else []))


class ReproducePrinter(GridPrinter):
    """Prints a reproduction's events, and those of its grid searches."""

    def __call__(self, event) -> None:  # noqa: ANN001
        from ..reproduce import SearchStarted

        if isinstance(event, SearchStarted):
            typer.echo(f"compound coefficients for {event.base}: phi = 1 grid search in {event.out}")
        else:
            super().__call__(event)
