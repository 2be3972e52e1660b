"""Running a reproduction: the rows x seeds as trials through the one run setup (study/setup.py),
after any phi = 1 searches for coefficients the experiment leaves to a search."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import UserError
from ..settings import flatten
from ..search.ranking import Summary, summarize
from ..study.rows import COMPLETE, TRIALS, TrialContext, TrialRow, TrialSpec
from ..study.rundir import CONFIG, RunDir
from ..train.forms import FormsChosen
from ..study.setup import check_same, data_classes, load_data, locked, open_run, run_trials, step_forms, with_store
from .experiment import ReproduceSettings
from .plan import MODEL_COLUMNS, MODELS, Coefficients, Model, plan
from .report import BaseVerdict, verdicts, write_outputs

PLOT_EVERY_S = 60.0   # while rows come in, the curves are redrawn at most this often

@dataclass(frozen=True)
class SearchStarted:
    """A phi = 1 grid search for a base's compound coefficients starts (or resumes)."""

    base: str
    out: Path


@dataclass
class ReproduceResult:
    out: Path
    models: list[Model]
    rows: list[TrialRow] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    verdicts: list[BaseVerdict] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def reproduce(settings: ReproduceSettings, *, dry_run: bool = False, on_event: Callable[[Any], None] | None = None,
              progress: bool = True, backend: Any = None, estimate: bool = True) -> ReproduceResult:
    """The whole experiment; see the package docstring.  ``backend`` overrides the settings' one."""
    from ..study.backends import get_backend

    emit = on_event or (lambda event: None)
    exp = settings.experiment
    backend = backend or get_backend(settings.backend, settings.seed)
    run = open_run(settings.out, backend, lambda run: check_same_reproduction(run, settings))
    given = {base: _coefficients_from_run(path) for base, path in _given_runs(settings).items()}
    # Coefficients a finished search of this run found stay fixed: rows trained with them keep meaning.
    found = _found_coefficients(run) if run.exists else {}
    given.update({b: c for b, c in found.items() if b not in given})
    classes = data_classes(settings.data, settings.seed, progress)
    models = plan(settings, len(classes), given)
    # One store for every row: S from the largest row built now (rows waiting for a search's
    # coefficients are near the budget's resolution, and are resized from it).
    data = with_store(settings.data, [m.spec.resolution for m in models if m.spec is not None] or [settings.resolution])
    dataset = load_data(data, settings.seed, progress)
    if dry_run and (run / TRIALS).is_file():
        raise UserError(f"--out '{run.path}' holds trained results, which a dry run would replace in "
                        f"{exp.name}.csv; choose another --out for the dry run")
    trials = make_trials(models, settings)
    with locked(run, backend, trials, dry_run):
        forms: dict[str, Any] = {}   # each base's step form, as config.json records it

        def fix(trials: list[TrialSpec]) -> list[TrialSpec]:
            trials, chosen, record = step_forms(run, trials, settings.backend, data, dataset.n_train,
                                                backend, progress, timed=not dry_run)
            new = [choice for name, choice in chosen.items() if name not in forms]
            forms.update(record)
            if new:
                emit(FormsChosen(tuple(new)))
            return trials

        def write_config() -> None:
            run.write_run_json(CONFIG, {"kind": "reproduce", "settings": settings.as_dict(),
                                        "identity": settings.identity(), "num_classes": dataset.num_classes,
                                        "dataset_name": dataset.name,
                                        "coefficients_found": {b: dataclasses.asdict(c) for b, c in found.items()},
                                        "step_forms": forms})

        trials = fix(trials)
        write_config()
        result = ReproduceResult(out=run.path, models=models)
        searched = [b for b in exp.bases if exp.coefficients.get(b) == "search" and b not in given]
        if not dry_run:
            for base in searched:
                given[base] = found[base] = _search(settings, base, run, backend, emit, progress, estimate)
                write_config()
            if searched:
                models = result.models = plan(settings, len(classes), given)
                trials = fix(make_trials(models, settings))  # the searched rows now have specs
                write_config()
        run.write_run_csv(MODELS, [m.as_dict() for m in models], MODEL_COLUMNS)
        context = TrialContext.of(data, settings.backend, progress)

        drawn = [-math.inf]

        def write(rows: Sequence[TrialRow], final: bool = False) -> list[Path]:
            """The tables after every row; the curves at the end and at most once per PLOT_EVERY_S
            while rows come in (a drawing costs about half a second)."""
            summaries = summarize(rows)
            found = verdicts(models, summaries, dataset.n_val)
            result.summaries, result.verdicts = summaries, found
            plots = final or time.monotonic() - drawn[0] >= PLOT_EVERY_S
            if plots:
                drawn[0] = time.monotonic()
            return write_outputs(run, settings, models, rows, summaries, found, dataset.name, dataset.n_val, plots)

        rows = run_trials(trials, run, backend, context, emit=emit, seed=settings.seed, dry_run=dry_run,
                          estimate=estimate, rewrite=write,
                          planned=dict(units=len(models), unit="models", seeds=settings.seeds, models=tuple(models),
                                       cheaper="a smaller --budget preset of the experiment file"
                                               + (", or --seeds 1" if settings.seeds > 1 else "") + " (docs/cli.md)"))
        if rows is None:  # a dry run: every row built and counted, the estimate, nothing trained
            run.write_run_csv(f"{exp.name}.csv", [m.as_dict() for m in models], MODEL_COLUMNS)
            result.files = [run / CONFIG, run / MODELS, run / f"{exp.name}.csv"]
            return result
        result.rows = rows
        result.files = write(result.rows, final=True)
        healthy = [r for r in result.rows if r.state == COMPLETE and r.top1 is not None]
        if result.rows and not healthy:  # as grid: nothing to compare is a failed run, not a result
            raise UserError(f"no row trained healthily in {run.path} (all {len(result.rows)} trials diverged, were "
                            f"pruned or failed: see {exp.name}.md and trials.csv); raise the budget, or try "
                            f"--set train.optimizer=lars")
        return result


def make_trials(models: Sequence[Model], settings: ReproduceSettings) -> list[TrialSpec]:
    """The rows x seeds as trials: the paper's rows first (they carry the verdict), then the rest
    of the curves; seed-major within each, so a run stopped early already holds whole
    comparisons.  A row still waiting for a search's coefficients (a dry run) has no trial."""
    built = [m for m in models if m.spec is not None]
    paper = [m for m in built if m.row.paper_top1 is not None]
    rest = [m for m in built if m.row.paper_top1 is None]
    return [TrialSpec(candidate=m.id, seed=settings.seed + k, spec=m.spec, recipe=settings.train,
                      params=m.params or 0, flops=m.flops or 0, flops_ratio=m.flops_ratio or 1.0)
            for group in (paper, rest) for k in range(settings.seeds) for m in group]


def _search(settings: ReproduceSettings, base: str, run: RunDir, backend: Any, emit: Callable[[Any], None],
            progress: bool, estimate: bool) -> Coefficients:
    """A phi = 1 grid search for ``base`` at the reproduction's proxy and budget, in OUT/grid-BASE."""
    from ..search.grid import run_grid
    from ..settings import build_settings

    exp = settings.experiment
    out = run.path / f"grid-{base}"
    flat = dict(base=base, resolution=settings.resolution, keep_maps=settings.keep_maps, seed=settings.seed, seeds=settings.seeds,
                dataset=settings.data.dataset, train_subset=settings.data.train_subset,
                val_subset=settings.data.val_subset, cache_dir=settings.data.cache_dir,
                store_resolution=settings.data.store_resolution, out=str(out))
    flat.update({f.name: getattr(settings.train, f.name) for f in _recipe()})
    flat.update(dataclasses.asdict(settings.backend))
    flat.update(exp.search)
    flat["early_stop"] = False
    grid_settings = build_settings({}, flat, source=f"{exp.source}: search")
    emit(SearchStarted(base=base, out=out))
    found = run_grid(grid_settings, on_event=emit, progress=progress, backend=backend, estimate=estimate)
    best = found.best or {}
    return Coefficients(best["alpha"], best["beta"], best["gamma"], f"grid run {out}")


def _recipe() -> list[dataclasses.Field]:
    from ..settings import recipe_fields

    return recipe_fields()


def _given_runs(settings: ReproduceSettings) -> dict[str, Path]:
    """--coefficients RUN_DIR, keyed by the base each run searched."""
    out: dict[str, Path] = {}
    for text in settings.coefficients:
        path = Path(text)
        config = path / CONFIG
        if not config.is_file():
            raise UserError(f"--coefficients '{path}' is not a grid run directory (no {CONFIG})")
        base = flatten(RunDir(path).read_config().get("settings") or {}).get("base")
        if base not in settings.experiment.bases:
            raise UserError(f"--coefficients '{path}' searched base {base!r}, which is not a base of "
                            f"{settings.experiment.name} ({', '.join(settings.experiment.bases)})")
        if base in out:
            raise UserError(f"--coefficients: two runs for base {base!r} ({out[base]} and {path})")
        out[base] = path
    return out


def _found_coefficients(run: RunDir) -> dict[str, Coefficients]:
    """The coefficients earlier searches of this run found (config.json's coefficients_found)."""
    saved = run.read_config().get("coefficients_found") or {}
    try:
        return {str(b): Coefficients(float(c["alpha"]), float(c["beta"]), float(c["gamma"]), str(c["source"]))
                for b, c in saved.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"--out '{run.path}': {CONFIG} has damaged coefficients_found; choose another --out") from None


def _coefficients_from_run(path: Path) -> Coefficients:
    import json

    best = path / "best.json"
    try:
        data = json.loads(best.read_text())
        return Coefficients(float(data["alpha"]), float(data["beta"]), float(data["gamma"]), f"grid run {path}")
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--coefficients '{path}' has no readable best.json: is the search finished?") from None


def check_same_reproduction(run: RunDir, settings: ReproduceSettings) -> None:
    """Refuse a run directory that holds another reproduction (settings that change results)."""
    config = run.read_config()
    if config.get("kind") != "reproduce" or not isinstance(config.get("identity"), dict):
        raise UserError(f"--out '{run.path}' holds something other than a reproduction; choose another --out")
    theirs = dict(config["identity"])
    theirs.setdefault("keep_maps", False)  # written before the field existed
    theirs.setdefault("store_resolution", None)
    ours = settings.identity()
    if isinstance(theirs.get("train"), dict):  # a recipe field added since that run holds its default
        from ..settings import BEFORE_FIELDS, recipe_fields

        defaults = {f.name: BEFORE_FIELDS.get(f.name, f.default) for f in recipe_fields()}
        theirs["train"] = {**{k: v for k, v in defaults.items() if k in ours["train"]}, **theirs["train"]}
    check_same(run, ours, theirs, "reproduction")
