"""Step 1 as a study: the phi = 1 candidates, short-trained over seeds, then step 2.

``run_grid(settings)`` is what `scalesearch grid` runs: measure every (alpha, beta) with gamma
fitted to the FLOPs target (``space.candidates``) and save the table; train the chosen
candidates x seeds with a backend, a row written as each trial ends (a re-run resumes or
extends); rank by mean top-1 over seeds against the seed spread; extrapolate the best to
phi = 0..N with the resolution fitted so measured FLOPs follow target^phi (family.csv); draw
the plots.  It returns a ``GridResult`` and reports progress as events; it prints nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from ..study.backends import get_backend
from ..net.bases import get_base
from ..errors import UserError, checked_arguments, require
from .order import choose
from .space import Candidate, candidates, counts_text, drop_counts
from ..settings import SearchSettings
from ..net.spec import NetworkSpec
from .ranking import SUMMARY_COLUMNS, Summary, Verdict, summarize, ties, verdict
from ..study.rows import COMPLETE, TrialContext, TrialRow, TrialSpec
from ..study.rundir import BEST, CANDIDATES, CONFIG, FAMILY, SUMMARY, RunDir
from ..train.forms import FormsChosen
from ..study.setup import (TrialFinished, check_same, data_classes, load_data, locked, open_run, run_trials, step_forms,
                    with_store)

Event = Any


@dataclass(frozen=True)
class Measured:
    """The candidate table is ready (measured now, or read back from the run)."""

    base: NetworkSpec
    base_flops: int
    target_flops: float
    rows: list[Candidate]
    out: Path
    resumed: bool
    geometry: str = ""            # what keep_maps did to the proxy's strides ("" without it)
    lost: str = ""                # a dimension no kept candidate scales, said before training
    precision: str = ""           # a precision given against the measured rule, said before training
    latency_target: str | None = None  # grid.target_latency, when latency is the constraint
    flops_latency: dict[str, Any] | None = None  # agreement.cost_agreement over the timed candidates


@dataclass(frozen=True)
class FamilyTiming:
    """The family is about to be fitted to measured latency: each member is timed (minutes)."""

    members: int


@dataclass
class GridResult:
    out: Path
    candidates: list[Candidate]
    rows: list[TrialRow] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    verdict: Verdict | None = None
    best: dict[str, Any] | None = None
    family: list[dict[str, Any]] = field(default_factory=list)
    family_note: str | None = None   # why the family stops before phi_max, when it does
    files: list[Path] = field(default_factory=list)
    resumed: bool = False
    skipped: int = 0
    n_val: int | None = None          # held-out images each trial is scored on (the binomial error's n)
    ties: list[Verdict] = field(default_factory=list)  # ranked candidates within noise of the best
    rungs: list[Any] = field(default_factory=list)       # halving.Rung per rung trained (halving only)
    agreements: list[dict[str, Any]] = field(default_factory=list)  # rank agreement of each two rungs


def default_out(base: str) -> Path:
    stem = Path(base).stem if base.endswith((".json", ".yaml", ".yml")) else base
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def search_base(settings: SearchSettings, num_classes: int) -> NetworkSpec:
    """The base as searched: the data set's class count, at ``resolution`` when given, with
    its early strides adapted to keep the native last feature map under ``keep_maps``."""
    base = get_base(settings.base).replace(num_classes=num_classes)
    if base.in_channels != 3:
        raise UserError(f"base '{settings.base}' takes {base.in_channels}-channel images (in_channels), but the data "
                        f"sets scalesearch trains on are RGB: search with in_channels 3, then `scalesearch export "
                        f"--in-channels {base.in_channels}`")
    if settings.keep_maps:
        from ..net.proxy import keep_maps

        return keep_maps(base, settings.resolution or base.resolution)[0]
    return base.replace(resolution=settings.resolution or base.resolution)


def _geometry_text(settings: SearchSettings, num_classes: int) -> str:
    from ..net.proxy import keep_maps

    native = get_base(settings.base).replace(num_classes=num_classes)
    return keep_maps(native, settings.resolution or native.resolution)[1].text


def lost_dimension_note(kept: list[Candidate], base: NetworkSpec, settings: SearchSettings) -> str:
    """A warning when every kept candidate leaves one coefficient at 1: the search has silently
    lost that dimension (at a small proxy, FLOPs can move in jumps too coarse for it)."""
    if len(kept) < 2:
        return ""
    names = [name for name, attr in (("alpha (depth)", "alpha"), ("beta (width)", "beta"),
                                     ("gamma (resolution)", "gamma")) if all(abs(getattr(c, attr) - 1) < 1e-9 for c in kept)]
    if not names:
        return ""
    hint = ("; --set keep_maps=true keeps the base's feature-map geometry at a small proxy, where FLOPs move in finer steps"
            if settings.resolution and not settings.keep_maps else "")
    return (f"every kept candidate has {' and '.join(n.split()[0] + ' = 1' for n in names)}: at {base.resolution}px "
            f"this grid cannot scale {' or '.join(n.split()[1].strip('()') for n in names)}, so the search compares "
            f"one dimension fewer{hint}")


def precision_note(base: NetworkSpec, settings: SearchSettings) -> str:
    """A warning when ``train.precision`` bf16 is given on a CPU for a network with depthwise
    convolutions, the kind the measured rule keeps in fp32 (train/step_form.py)."""
    if settings.train.precision != "bf16":
        return ""
    from ..measure.models import build
    from ..train.step_form import has_grouped_convolutions
    from ..train.machine import resolve_device

    if resolve_device(settings.backend.device) != "cpu" or not has_grouped_convolutions(build(base, device="meta")):
        return ""
    return (f"train.precision bf16 on {base.name}, which has depthwise convolutions: on a CPU they train slower in "
            f"bf16 than in fp32 (docs/performance.md), and a narrow one did not repeat bit for bit; "
            f"precision auto (the default) keeps such networks in fp32")


def search_timer(settings: SearchSettings, base: NetworkSpec, num_classes: int):  # noqa: ANN201 - fit.Timer
    """Where a search times its candidates: the run's device, its threads per trial, the grid's
    latency batch, at the proxy resolution or (``latency_at: native``) the base's own."""
    from ..measure.latency import candidate_timer
    from ..train.machine import resolve_device

    native = get_base(settings.base).replace(num_classes=num_classes) if settings.grid.latency_at == "native" else None
    return candidate_timer(base, settings.rounding, device=resolve_device(settings.backend.device),
                           threads=max(1, round(settings.backend.cpus_per_trial)), batch=settings.grid.latency_batch,
                           native=native)


def latency_agreement(table: list[Candidate], seed: int) -> dict[str, Any] | None:
    """agreement.cost_agreement over the timed candidates of a table (rounding twins once)."""
    from .agreement import cost_agreement

    timed = [c for c in table if c.latency_ratio is not None and c.drop != "twin"]
    if not timed:
        return None
    return cost_agreement([c.flops_ratio for c in timed], [c.latency_ratio for c in timed],
                          [c.kept for c in timed], seed=seed)


def family_base(settings: SearchSettings, num_classes: int) -> NetworkSpec:
    """The base the family is built on: the searched base, except that a ``keep_maps`` proxy's
    geometry stays with the proxy and the family is the native base's (proxy.py)."""
    if settings.keep_maps:
        return get_base(settings.base).replace(num_classes=num_classes)
    return search_base(settings, num_classes)


def make_trials(base: NetworkSpec, chosen: list[Candidate], settings: SearchSettings,
                n_train: int | None = None) -> list[TrialSpec]:
    """The study: each chosen candidate's scaled spec x ``seeds`` seeds (seed, seed + 1, ...);
    with ``n_train`` each trial knows its budget in training images."""
    from .halving import rung_images

    images = rung_images(settings, 0, n_train) if n_train is not None else None
    trials = []
    for c in chosen:
        spec = c.spec(base, settings.rounding)
        if spec.resolution != c.resolution:  # the candidate table and the scaler must agree
            raise UserError(f"{CANDIDATES}: candidate {c.id} says {c.resolution}px but scales to "
                            f"{spec.resolution}px; the table belongs to another search")
        for k in range(settings.seeds):
            trials.append(TrialSpec(candidate=c.id, seed=settings.seed + k, spec=spec, recipe=settings.train,
                                    alpha=c.alpha, beta=c.beta, gamma=c.gamma, params=c.params, flops=c.flops,
                                    flops_ratio=c.flops_ratio, acts=c.acts, images=images))
    return trials


@checked_arguments
def run_grid(settings: SearchSettings, *, dry_run: bool = False, on_event: Callable[[Event], None] | None = None,
             progress: bool = True, backend: Any = None, estimate: bool = True) -> GridResult:
    """The whole phi = 1 search; see the module docstring.  ``backend`` overrides the settings' one."""
    from tqdm.auto import tqdm

    from ..measure.cost import count_cost

    require(isinstance(settings, SearchSettings), "run_grid", "settings", settings,
            "a SearchSettings (SearchSettings.make('resnet20-cifar', ...) gives one)")
    emit = on_event or (lambda event: None)
    get_base(settings.base)                                    # an unknown base is named first
    backend = backend or get_backend(settings.backend, settings.seed)
    run = open_run(settings.out or default_out(settings.base), backend, lambda run: check_same_search(run, settings))
    resumed = run.exists
    classes = data_classes(settings.data, settings.seed, progress)  # data errors come before any file
    base = search_base(settings, len(classes))
    base_cost = count_cost(base)
    grid = settings.grid
    target = grid.target.absolute(base_cost.flops)
    if target < base_cost.flops * (1 - grid.tolerance):
        raise UserError(f"--target-flops {grid.target_flops} ({target:,.0f}) is below the base's own "
                        f"{base_cost.flops:,} FLOPs at {base.resolution}px: phi = 1 scales the base up")
    saved = _saved_candidates(run) if resumed else None
    if saved is None:
        def bar(items):  # noqa: ANN001, ANN202
            return tqdm(list(items), desc="measure candidates", unit="net", disable=None if progress else True,
                        leave=False)

        table = candidates(base, grid, settings.rounding, progress=bar,
                           timer=search_timer(settings, base, len(classes)) if grid.timed else None)
    else:
        table = saved
    flops_latency = latency_agreement(table, settings.seed)
    kept = [c for c in table if c.kept]
    if resumed:
        run.check_references()
    geometry = _geometry_text(settings, len(classes)) if settings.keep_maps else ""
    emit(Measured(base=base, base_flops=base_cost.flops, target_flops=target, rows=table, out=run.path,
                  resumed=resumed, geometry=geometry, lost=lost_dimension_note(kept, base, settings),
                  precision=precision_note(base, settings), latency_target=grid.target_latency,
                  flops_latency=flops_latency))
    if not kept and grid.target_latency:
        goal = grid.latency_target

        def miss(c: Candidate) -> float:
            return abs(math.log((c.latency_ratio if goal.is_ratio else c.latency_ms) / goal.value))

        closest = min((c for c in table if c.latency_ms), key=miss)
        raise UserError(f"no candidate is within the latency tolerance {grid.latency_tolerance:g} of the target "
                        f"{grid.target_latency} ({counts_text(drop_counts(table))}; closest: alpha={closest.alpha:g} "
                        f"beta={closest.beta:g} at {closest.latency_ratio or 0:.2f}x); widen grid.latency_tolerance, "
                        f"grid.alpha_max or grid.beta_max (--set NAME=VALUE)")
    if not kept:
        counts = drop_counts(table)
        closest = min(table, key=lambda c: abs(c.flops * 1.0 / target - 1))
        raise UserError(f"no candidate is within the FLOPs tolerance {grid.tolerance:g} and nominal tolerance "
                        f"{grid.nominal_tolerance:g} of the target ({counts_text(counts)}; closest: "
                        f"alpha={closest.alpha:g} beta={closest.beta:g} at {closest.flops_ratio:.2f}x); widen "
                        f"grid.tolerance, grid.alpha_max or grid.beta_max, or lower grid.step (--set NAME=VALUE)")
    chosen = choose(kept, settings, target / base_cost.flops)  # a bad --candidates id is named before any file
    # One store for the whole table (a check-proxy subset reads the same pixels as its run).
    data = with_store(settings.data, [c.resolution for c in kept])
    dataset = load_data(data, settings.seed, progress)
    trials = make_trials(base, chosen, settings, dataset.n_train)
    search = _Search(settings, data, run, resumed, dataset, base, base_cost, target, table, chosen, flops_latency)
    with locked(run, backend, trials, dry_run):
        trials, forms, record = step_forms(run, trials, settings.backend, data, dataset.n_train, backend,
                                           progress, timed=not dry_run)
        emit(FormsChosen(tuple(forms.values())))
        run.write_run_json(CONFIG, {"settings": settings.as_dict(), "base_flops": base_cost.flops,
                                    "base_params": base_cost.params, "target_flops_absolute": target,
                                    "num_classes": dataset.num_classes, "dataset_name": dataset.name,
                                    "step_forms": record, "flops_latency": flops_latency})
        if not (run / CANDIDATES).is_file():
            run.write_run_csv(CANDIDATES, [c.row() for c in table], Candidate.columns())
        if flops_latency is not None and not (run / "latency_vs_flops.png").is_file():
            from ..report.plots import plot_latency

            plot_latency(run.path)
        return _train_and_extrapolate(search, trials, backend, emit, progress, dry_run, estimate)


@dataclass(frozen=True)
class _Search:
    """A search as set up, before training: what ``_train_and_extrapolate`` works from."""

    settings: SearchSettings
    data: Any                         # settings.data naming the image store every trial reads
    run: RunDir
    resumed: bool
    dataset: Any
    base: NetworkSpec
    base_cost: Any                    # cost.Cost of the base as searched
    target: float                     # FLOPs target, absolute
    table: list[Candidate]            # every grid point, kept or not
    chosen: list[Candidate]           # the candidates to train
    flops_latency: dict[str, Any] | None = None  # agreement.cost_agreement of the table


def _train_and_extrapolate(search: _Search, trials: list[TrialSpec], backend: Any, emit: Callable[[Event], None],
                           progress: bool, dry_run: bool, estimate: bool) -> GridResult:
    from . import halving
    from ..measure.cost import count_cost
    from .family import family, reachable_phi
    from ..report.plots import draw_rungs, plot_run

    settings, run, dataset, base = search.settings, search.run, search.dataset, search.base
    result = GridResult(out=run.path, candidates=search.table, resumed=search.resumed)
    target_ratio = search.target / search.base_cost.flops
    finished = run.finished()
    result.skipped = sum(1 for t in trials if t.id in finished)
    context = TrialContext.of(search.data, settings.backend, progress)
    halves = settings.fidelity == "halving"
    images = [halving.rung_images(settings, k, dataset.n_train)  # per trial, at each rung
              for k in range(settings.rungs if halves else 1)]
    rungs = halving.plan(len(search.chosen), settings.seeds, images, settings.eta)
    started = time.time()
    trained: list[str] = []   # trials trained by this command (none: a resume with nothing to train)

    def schedule(rung0: Sequence[TrialSpec], study: Callable[..., list[TrialRow]]) -> list[TrialRow]:
        rows, result.rungs = halving.run_rungs(rung0, images, settings.eta, study)
        return rows

    def counted(event: Event) -> None:
        if isinstance(event, TrialFinished):
            trained.append(event.row.trial)
        emit(event)

    cheaper = ["--resolution R --set keep_maps=true" if not settings.keep_maps else "",
               "--set data.train_subset=N", "fewer --epochs", "--max-trials or --seeds",
               "--fidelity halving" if not halves else ""]
    rows = run_trials(
        trials, run, backend, context, emit=counted, seed=settings.seed, dry_run=dry_run, estimate=estimate,
        planned=dict(units=len(search.chosen), unit="candidate(s)", seeds=settings.seeds,
                     images_per_trial=images[0], halving=halving.plan_text(rungs, settings.eta) if halves else "",
                     cheaper=", ".join(c for c in cheaper if c) + " (docs/method.md)"),
        rewrite=lambda rows: _write_ranking(run, summarize(rows), settings, n_val=dataset.n_val,
                                            flops_latency=search.flops_latency),
        schedule=schedule if halves else None,
        # the later rungs, at rung 0's cost per image
        cost_scale=sum(r.training_images for r in rungs) / rungs[0].training_images if halves else 1.0)
    if rows is None:  # a dry run: the plan and its estimate, nothing trained
        result.files = [run / CONFIG, run / CANDIDATES]
        return result
    result.rows = rows
    if halves:
        result.agreements = halving.rung_agreements(result.rows, result.rungs, settings.seed)
    result.summaries = summarize(result.rows)
    ranked = [s for s in result.summaries if s.ranked]
    if not ranked:
        marked = [r.trial for r in result.rows if r.state != COMPLETE]
        raise UserError(f"no candidate trained healthily in {run.path} ({len(marked)} of {len(result.rows)} trials "
                        f"diverged, were pruned or failed: see trials.csv); raise --epochs or --images, or lower the rate (--set train.lr=...)")
    result.n_val = dataset.n_val
    result.verdict = verdict(result.summaries, dataset.n_val)
    result.ties = ties(result.summaries, dataset.n_val)
    seconds = time.time() - started if trained or not (run / BEST).is_file() else _recorded_seconds(run)
    result.best = _write_ranking(run, result.summaries, settings, seconds=seconds, n_val=dataset.n_val,
                                 rungs=result.rungs, agreements=result.agreements, flops_latency=search.flops_latency)
    best = result.best
    # The trials are done and saved: a family member too large to build ends the family
    # there (said on screen) rather than failing the search.
    grown = family_base(settings, dataset.num_classes)
    grown_flops = search.base_cost.flops if grown == base else count_cost(grown).flops
    last, why = reachable_phi(grown, best["alpha"], best["beta"], best["gamma"], settings.phi_max,
                              settings.rounding, target_ratio, grown_flops)
    result.family_note = why and f"the family stops at phi = {last}: {why}"
    if settings.grid.target_latency:   # each member timed, to the best's own latency ratio per phi
        emit(FamilyTiming(last + 1))
        fit = dict(target_latency=next(c.latency_ratio for c in search.table if c.id == best["candidate"]),
                   tolerance=settings.grid.latency_tolerance, timer=search_timer(settings, grown, dataset.num_classes))
    else:
        fit = dict(target=target_ratio, tolerance=settings.grid.tolerance)
    result.family = family(grown, best["alpha"], best["beta"], best["gamma"], last, settings.rounding, **fit)
    run.write_run_csv(FAMILY, result.family)
    result.files = [run / f for f in (CONFIG, CANDIDATES, "trials.csv", SUMMARY, BEST, FAMILY)] + plot_run(run.path)
    result.files += draw_rungs(run.path, result.agreements)
    return result


def _write_ranking(run: RunDir, summaries: list[Summary], settings: SearchSettings,
                   seconds: float | None = None, n_val: int | None = None, rungs: list[Any] = (),
                   agreements: list[dict[str, Any]] = (), flops_latency: dict[str, Any] | None = None,
                   ) -> dict[str, Any] | None:
    """summary.csv and best.json as they stand (rewritten after every trial); under halving,
    best.json also holds the rungs and the rank agreement of each two."""
    run.write_run_csv(SUMMARY, [s.as_dict() for s in summaries], SUMMARY_COLUMNS)
    ranked = [s for s in summaries if s.ranked]
    if not ranked:
        return None
    best = ranked[0]
    record = best.as_dict()
    record.update(top1=best.top1_mean, candidates_ranked=len(ranked),
                  diverged=[s.candidate for s in summaries if s.diverged],
                  settings=settings.as_dict())
    found = verdict(summaries, n_val)
    if found is not None:
        record["verdict"] = dict(runner_up=found.runner_up, gap=found.gap, spread=found.spread,
                                 seed_spread=found.seed_spread, binomial=found.binomial, n_val=n_val,
                                 separable=found.separable, text=found.text)
    tied = ties(summaries, n_val)
    # The best by mean is still the one extrapolated; a tie says the data do not single it out.
    record["tie"] = [v.runner_up for v in tied]
    if tied:
        record["tie_text"] = tie_text(tied)
    if rungs:
        record["rungs"] = [dict(rung=r.rung, images=r.images, candidates=r.candidates, seeds=r.seeds,
                                promoted=list(r.kept)) for r in rungs]
        record["rank_agreement"] = list(agreements)
    if flops_latency is not None:
        record["flops_latency"] = flops_latency
    if seconds is not None:
        record["search_seconds"] = seconds
    run.write_run_json(BEST, record)
    return record


def _recorded_seconds(run: RunDir) -> float | None:
    """best.json's ``search_seconds`` as the last command that trained wrote it (None if none)."""
    import json

    try:
        value = json.loads((run / BEST).read_text(encoding="utf-8")).get("search_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def tie_text(tied: list[Verdict]) -> str:
    names = ", ".join(f"candidate {v.runner_up} ({100 * v.gap:+.2f} points, spread {100 * v.spread:.2f})"
                      for v in tied)
    return (f"a tie: the best by mean is within noise of {names}; the family below is the best-by-mean's, "
            f"and the data do not single it out (more seeds, held-out images or training would)")


def check_same_search(run: RunDir, settings: SearchSettings) -> None:
    """Refuse a run directory that holds a different search (settings that change results)."""
    from ..settings import SettingsError, build_settings, saved

    previous = run.read_config().get("settings")
    if not isinstance(previous, dict):
        raise UserError(f"--out '{run.path}' has a {CONFIG} without settings; choose another --out")
    try:
        theirs = build_settings(saved(previous), source=str(run / CONFIG)).identity()
    except SettingsError:
        theirs = {}
    check_same(run, settings.identity(), theirs, "search")


def _saved_candidates(run: RunDir) -> list[Candidate] | None:
    from ..study.rundir import read_csv

    rows = read_csv(run / CANDIDATES)
    if not rows:
        return None
    return [Candidate.from_row(r) for r in rows]


__all__ = ["GridResult", "Measured", "make_trials", "run_grid", "search_base"]
