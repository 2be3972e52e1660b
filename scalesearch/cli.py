"""The `scalesearch` command: a thin typer layer over the Python API."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Iterator, Optional

import typer
from typer.core import TyperGroup

from .bases import base_names, get_base
from .errors import UserError
from .formatting import human, table
from .interrupts import acknowledge_interrupt, raise_pending_interrupt, redeliver_interrupts


class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value of the wrong type) as one line, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001, ANN201
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERROR as exc:  # typer's own click: its errors share a base with typer.BadParameter
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # the help text
            else:
                ctx = getattr(exc, "ctx", None)
                command = ctx.command_path if ctx is not None else "scalesearch"
                typer.echo(f"error: {' '.join(exc.format_message().split())} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, _CLICK_ABORT):
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_CLICK_ABORT = getattr(sys.modules[_CLICK_ERROR.__module__], "Abort", typer.Abort)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, cls=_OneLineErrors,
                  help="Compound model scaling (EfficientNet, Tan & Le 2019) for any stage-structured ConvNet.")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit status 2, never a traceback."""
    try:
        yield
        raise_pending_interrupt()  # a Ctrl-C dropped in a callback and not yet delivered
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        acknowledge_interrupt()
        typer.echo("interrupted: finished trials are saved; re-run the same command to resume", err=True)
        raise typer.Exit(130) from None
    except MemoryError:
        typer.echo("error: out of memory: lower the batch size, the resolution or the network's size", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("SCALESEARCH_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        typer.echo(f"error: internal error {type(exc).__name__}: {first} (set SCALESEARCH_DEBUG=1 for the "
                   f"traceback, and please report it)", err=True)
        raise typer.Exit(1) from None


def _emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


BASE_HELP = "A base network name (see `scalesearch bases`) or a path to a .json/.yaml spec file."


@app.command()
def bases(as_json: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
    """List the built-in base networks (FLOPs: `scalesearch flops --base NAME`)."""
    from .models import count_params

    rows = []
    for name in base_names():
        spec = get_base(name)
        rows.append(dict(base=name, resolution=spec.resolution, stages=len(spec.stages),
                         layers=spec.total_layers, block=spec.stages[-1].block, params=count_params(spec)))
    if as_json:
        _emit_json(rows)
        return
    typer.echo(table(rows, ["base", "block", "resolution", "stages", "layers", ("params", ",")]))


@app.command()
def blocks(as_json: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
    """List the block types a spec's stages may use (the registry, built-in and your own)."""
    from .blocks import block_types

    rows = [dict(block=r["block"], uses=r["uses"] if isinstance(r["uses"], str) else ", ".join(r["uses"]), doc=r["doc"]) for r in block_types()]
    if as_json:
        _emit_json(rows)
        return
    typer.echo(table(rows, ["block", "uses", "doc"]))


@app.command()
def flops(
    base: str = typer.Option(..., "--base", help=BASE_HELP),
    d: float = typer.Option(1.0, "--d", help="Depth multiplier (layers x d, rounded up)."),
    w: float = typer.Option(1.0, "--w", help="Width multiplier (channels x w, to a multiple of 8)."),
    r: float = typer.Option(1.0, "--r", help="Resolution multiplier (pixels x r, rounded)."),
    depth_rounding: Optional[str] = typer.Option(None, "--depth-rounding", help="stage (per-stage ceil, the reference rule) or total (one layer at a time)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Measure the base at this resolution (a proxy) before scaling by r."),
    keep_maps: bool = typer.Option(False, "--keep-maps", help="With --resolution: remove the earliest stride-2 steps until the last feature map is as large as at the native resolution."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Params, FLOPs, activations and the stage table of a base scaled by (d, w, r)."""
    from .api import measure

    with user_errors():
        result = measure(base, d=d, w=w, r=r, rounding=_rounding(depth_rounding), resolution=resolution,
                         keep_maps=keep_maps)
    if as_json:
        _emit_json(result)
        return
    typer.echo(f"{result['name']}  scaled by d={d:g} w={w:g} r={r:g}")
    if result.get("geometry"):
        typer.echo(f"  {result['geometry']}")
    typer.echo(f"  resolution   {result['resolution']} px  (last feature map {result['last_map']}x{result['last_map']})")
    typer.echo(f"  params       {result['params']:>15,}  ({human(result['params'])})")
    typer.echo(f"  flops        {result['flops']:>15,}  ({human(result['flops'])})  conv + linear multiply-adds")
    typer.echo(f"  other flops  {result['other_flops']:>15,}  ({human(result['other_flops'])})  batch norm + pooling")
    typer.echo(f"  activations  {result['acts']:>15,}  ({human(result['acts'])})  conv output elements")
    typer.echo("")
    typer.echo(table(result["stages"], ["stage", "block", "resolution", "channels", "layers", "stride",
                                        "kernel", "expand_ratio", "se_ratio"]))


def _help(text: str, name: str) -> str:
    """A flag's help with the setting's default, read from the settings class (written once there)."""
    from .settings import default_of

    value = default_of(name)
    return f"{text} (default: {value if value is not None else 'none'})"


@app.command(name="family")
def family_cmd(
    base: str = typer.Option(..., "--base", help=BASE_HELP),
    alpha: float = typer.Option(..., "--alpha", help="Depth coefficient (>= 1)."),
    beta: float = typer.Option(..., "--beta", help="Width coefficient (>= 1)."),
    gamma: float = typer.Option(..., "--gamma", help="Resolution coefficient (>= 1)."),
    phi_max: Optional[int] = typer.Option(None, "--phi-max", min=0, max=20, help=_help("Largest phi.", "phi_max")),
    target_flops: Optional[str] = typer.Option(None, "--target-flops", help="Fit the resolution at each phi so measured FLOPs are target^phi (a ratio such as 2x); without it, Eq. 3 literally."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help=_help("With --target-flops (refused without it): how far from target^phi a member may measure.", "tolerance")),
    depth_rounding: Optional[str] = typer.Option(None, "--depth-rounding", help="stage (per-stage ceil, the reference rule) or total (one layer at a time)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array and nothing else."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """The family phi = 0..N of Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi, measured."""
    from .family import family
    from .scaling import compound, nominal_ratio

    with user_errors():
        if as_json and as_csv:
            raise UserError("--json and --csv both ask for the whole output: choose one")
        compound(alpha, beta, gamma, 0)  # validates alpha, beta, gamma before any work
        target = _ratio_option(target_flops) if target_flops is not None else None
        from .settings import default_of

        phi_max = default_of("phi_max") if phi_max is None else phi_max
        rows = family(get_base(base), alpha, beta, gamma, phi_max, _rounding(depth_rounding), target=target,
                      tolerance=tolerance)
    if as_json:
        _emit_json(rows)
        return
    if as_csv:
        import pandas as pd

        sys.stdout.write(pd.DataFrame(rows).to_csv(index=False))
        return
    typer.echo(f"{rows[0]['base']}: alpha={alpha:g} beta={beta:g} gamma={gamma:g}, "
               f"alpha*beta^2*gamma^2 = {nominal_ratio(alpha, beta, gamma):.4f}"
               + (f"; resolution fitted to {target:g}^phi measured FLOPs" if target is not None else ""))
    typer.echo(_family_table(rows))


def _ratio_option(text: str) -> float:
    from .gridspace import parse_budget

    budget = parse_budget(text, "--target-flops")
    if not budget.is_ratio or budget.value < 1:
        raise UserError(f"--target-flops '{text}' must be a ratio of at least 1x here, such as 2x")
    return budget.value


def _rounding(depth_rounding: Optional[str]):  # noqa: ANN202 - scaling.Rounding
    from .scaling import DEFAULT_ROUNDING, Rounding

    return DEFAULT_ROUNDING if depth_rounding is None else Rounding(depth_rule=depth_rounding)


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="A finished run directory of `scalesearch grid`."),
    phi: int = typer.Option(..., "--phi", help="Which family member (a phi of the run's family.csv)."),
    out: str = typer.Option(..., "--out", help="A new folder for spec.yaml, model.pt and meta.json."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="The classifier's classes (default: the searched data set's)."),
    in_channels: Optional[int] = typer.Option(None, "--in-channels", help="The image channels the stem takes (default 3; 1 for grayscale)."),
) -> None:
    """Write a family member's spec (YAML) and its built, untrained module (state_dict) for your own pipeline."""
    from .api import export_member

    from .api import UNTRAINED

    with user_errors():
        files = export_member(run_dir, phi, out, num_classes, in_channels)
    for path in files:
        typer.echo(str(path))
    typer.echo(f"note: model.pt is {UNTRAINED}")


# -- options grid and reproduce share, declared once ----------------------------------------------

DATASET_OPTION = typer.Option(None, "--dataset", help=_help("'synthetic' (built in; 'synthetic:hard' and 'synthetic:harder' are harder levels), an image-folder tree, or a CIFAR pickle folder.", "dataset"))
SET_OPTION = typer.Option(None, "--set", metavar="NAME=VALUE", help="Any setting by name, repeatable: --set train.clip_norm=0.5 --set grid.step=0.05 --set data.train_subset=2000 (names: docs/cli.md).")
RECIPE_OPTION = typer.Option(None, "--recipe", help="A training recipe file (YAML: the train: section of a config, e.g. optimizer, lr, clip_norm, residual_init).")
DEVICE_OPTION = typer.Option(None, "--device", help=_help("auto, cpu or cuda[:N].", "device"))
BACKEND_OPTION = typer.Option(None, "--backend", help=_help("optuna (SQLite study in the run directory) or ray (Ray Tune); one trial per candidate (or row) and seed.", "backend"))
ADDRESS_OPTION = typer.Option(None, "--address", help="Join this Ray cluster (with --backend ray; docs/ray.md).")
NO_ESTIMATE_OPTION = typer.Option(False, "--no-estimate", hidden=True, help="Skip timing a few steps to estimate the training time.")

# Research knobs that moved into the recipe file / --set: still accepted for one release, each with a
# one-line note naming its new spelling.  name -> (flag, setting path).
MOVED = {"max_params": ("--max-params", "grid.max_params"), "max_acts": ("--max-acts", "grid.max_acts"),
         "alpha_max": ("--alpha-max", "grid.alpha_max"), "beta_max": ("--beta-max", "grid.beta_max"),
         "step": ("--step", "grid.step"), "tolerance": ("--tolerance", "grid.tolerance"),
         "nominal_tolerance": ("--nominal-tolerance", "grid.nominal_tolerance"),
         "depth_rule": ("--depth-rounding", "rounding.depth_rule"),
         "train_subset": ("--train-subset", "data.train_subset"), "val_subset": ("--val-subset", "data.val_subset"),
         "cache_dir": ("--cache-dir", "data.cache_dir"), "batch_size": ("--batch-size", "train.batch_size"),
         "lr": ("--lr", "train.lr"), "clip_norm": ("--clip-norm", "train.clip_norm"),
         "optimizer": ("--optimizer", "train.optimizer"), "trust": ("--trust", "train.trust"),
         "residual_init": ("--residual-init", "train.residual_init"), "seed": ("--seed", "seed"),
         "candidates": ("--candidates", "candidates"), "order": ("--order", "order"), "phi_max": ("--phi-max", "phi_max"),
         "early_stop": ("--early-stop", "backend.early_stop"),
         "cpus_per_trial": ("--cpus-per-trial", "backend.cpus_per_trial"),
         "gpus_per_trial": ("--gpus-per-trial", "backend.gpus_per_trial"),
         "precision": ("--precision", "train.precision"), "keep_maps": ("--keep-maps", "keep_maps")}


def _moved(name: str, text: str, decls: str = ""):  # noqa: ANN202 - a typer OptionInfo
    flag, path = MOVED[name]
    return typer.Option(None, decls or flag, hidden=True, help=f"{text} (moved: --set {path}=VALUE)")


# moved flags grid and reproduce share, declared once
PRECISION_OPTION = _moved("precision", "auto (the measured fastest step per network and device, docs/performance.md), fp32 or bf16.")
KEEP_MAPS_OPTION = _moved("keep_maps", "Keep the base's last feature map at a proxy resolution (docs/method.md).", "--keep-maps/--native-strides")


def _moved_notes(given: dict[str, object]) -> list[str]:
    """One line per moved flag the user gave: the spelling that replaces it, written so that it
    runs as printed (``--set`` reads it back as the same setting)."""
    return [f"note: {MOVED[k][0]} is now --set {MOVED[k][1]}={_as_set_value(k, v)} (the flag works for this release)"
            for k, v in given.items() if k in MOVED and v is not None]


def _as_set_value(name: str, value: object) -> str:
    """``value`` as ``--set NAME=`` text that reads back as the same setting: the old --clip-norm 0
    is null (no clipping), candidates a list [a, b]; a count limit reads back as a number, which
    the grid takes as the same count."""
    if name == "clip_norm" and value == 0:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) or name == "candidates":  # a list, even of one id
        return "[" + ", ".join(_as_set_value("", v) for v in (value if isinstance(value, (list, tuple)) else [value])) + "]"
    return str(value)


@app.command()
def grid(
    config: Optional[str] = typer.Option(None, "--config", help="Read settings from a YAML/JSON file (a run's config.json too); flags override it."),
    recipe: Optional[str] = RECIPE_OPTION,
    assignments: Optional[list[str]] = SET_OPTION,
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    target_flops: Optional[str] = typer.Option(None, "--target-flops", help=_help("FLOPs at phi = 1: a ratio (2x) or a count (800M, 1.6G).", "target_flops")),
    dataset: Optional[str] = DATASET_OPTION,
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Search at this base resolution (a cheap proxy)."),
    keep_maps: Optional[bool] = KEEP_MAPS_OPTION,
    epochs: Optional[float] = typer.Option(None, "--epochs", help=_help("Short-training budget per trial, in epochs.", "epochs")),
    images: Optional[int] = typer.Option(None, "--images", help="Budget in training images instead of epochs."),
    fidelity: Optional[str] = typer.Option(None, "--fidelity", help="full: every candidate at the budget; halving: successive halving, the top 1/eta of each rung trained at eta times its budget (--set eta=3 --set rungs=3)."),
    precision: Optional[str] = PRECISION_OPTION,
    seeds: Optional[int] = typer.Option(None, "--seeds", help=_help("Train each candidate with N seeds; rank by the mean.", "seeds")),
    max_trials: Optional[int] = typer.Option(None, "--max-trials", help="Train at most N candidates (raise it later to extend a run)."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<base>-<timestamp>); re-run to resume or extend."),
    backend: Optional[str] = BACKEND_OPTION,
    address: Optional[str] = ADDRESS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure and save the candidate table, train nothing."),
    no_estimate: bool = NO_ESTIMATE_OPTION,
    max_params: Optional[str] = _moved("max_params", "Params budget: a ratio or a count."),
    max_acts: Optional[str] = _moved("max_acts", "Activations budget: a ratio or a count."),
    alpha_max: Optional[float] = _moved("alpha_max", "Largest alpha (depth) on the grid."),
    beta_max: Optional[float] = _moved("beta_max", "Largest beta (width) on the grid."),
    step: Optional[float] = _moved("step", "Grid step for alpha and beta."),
    tolerance: Optional[float] = _moved("tolerance", "FLOPs tolerance of a kept candidate."),
    nominal_tolerance: Optional[float] = _moved("nominal_tolerance", "Tolerance of alpha*beta^2*gamma^2."),
    depth_rounding: Optional[str] = _moved("depth_rule", "stage or total depth rounding."),
    train_subset: Optional[int] = _moved("train_subset", "Train on N images (class-balanced)."),
    val_subset: Optional[int] = _moved("val_subset", "Score on N held-out images."),
    cache_dir: Optional[str] = _moved("cache_dir", "Where image stores are kept."),
    batch_size: Optional[int] = _moved("batch_size", "Training batch size."),
    lr: Optional[float] = _moved("lr", "Peak learning rate."),
    clip_norm: Optional[float] = _moved("clip_norm", "Gradient clip; 0: none."),
    optimizer: Optional[str] = _moved("optimizer", "sgd or lars."),
    trust: Optional[float] = _moved("trust", "LARS trust ratio."),
    residual_init: Optional[str] = _moved("residual_init", "one, zero or scaled."),
    seed: Optional[int] = _moved("seed", "First seed."),
    candidates: Optional[str] = _moved("candidates", "Exactly these candidate ids."),
    order: Optional[str] = _moved("order", "random, nearest, spread or id."),
    phi_max: Optional[int] = _moved("phi_max", "Extrapolate the family to this phi."),
    early_stop: Optional[bool] = typer.Option(None, "--early-stop/--no-early-stop", hidden=True, help="Stop weak trials early (moved: --set backend.early_stop=true)."),
    cpus_per_trial: Optional[float] = _moved("cpus_per_trial", "Threads per trial."),
    gpus_per_trial: Optional[float] = _moved("gpus_per_trial", "Ray: GPUs per trial."),
) -> None:
    """Step 1: grid-search alpha, beta, gamma at phi = 1 on measured FLOPs, short-training each candidate.

    Every setting has a name (docs/cli.md): a --config file holds them all, a --recipe file the
    training recipe, and --set NAME=VALUE any one of them.
    """
    from .grid import run_grid
    from .settings import build_settings, load_recipe, load_settings, parse_assignments

    flags = dict(base=base, target_flops=target_flops, resolution=resolution,
                 dataset=dataset, epochs=epochs, images=images, fidelity=fidelity, seeds=seeds,
                 max_trials=max_trials, backend=backend, address=address, device=device, out=out)
    moved = dict(max_params=max_params, max_acts=max_acts, alpha_max=alpha_max, beta_max=beta_max, step=step,
                 tolerance=tolerance, nominal_tolerance=nominal_tolerance, depth_rule=depth_rounding,
                 train_subset=train_subset, val_subset=val_subset, cache_dir=cache_dir, batch_size=batch_size,
                 lr=lr, clip_norm=clip_norm, optimizer=optimizer, trust=trust, residual_init=residual_init,
                 seed=seed, candidates=candidates, order=order, phi_max=phi_max, early_stop=early_stop,
                 cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, precision=precision,
                 keep_maps=keep_maps)
    with user_errors():
        from .settings import SettingsError

        if clip_norm is not None and not clip_norm >= 0:
            raise SettingsError(f"--clip-norm must be > 0, or 0 for no clipping (got {clip_norm:g})")
        exact = parse_assignments(assignments or [])
        if clip_norm == 0:  # the old flag's "off"; the recipe's own word for it is null
            exact.setdefault("clip_norm", None)
        given = {**{k: v for k, v in moved.items() if not (k == "clip_norm" and v == 0)}, **flags}
        recipe_values = load_recipe(recipe) if recipe else {}
        if config:
            settings = load_settings(config, given, recipe=recipe_values, assignments=exact)
        else:
            settings = build_settings(recipe_values, given, source="options", assignments=exact)
        if trust is not None and settings.train.optimizer != "lars":
            raise SettingsError(f"--trust {trust:g} sets the layer-wise rate of --optimizer lars "
                                f"(got optimizer {settings.train.optimizer!r})")
        if settings.out is None:
            from .grid import default_out

            settings = settings.replace(out=str(default_out(settings.base)))
        printer = _GridPrinter()
        result = run_grid(settings, dry_run=dry_run, on_event=printer, estimate=not no_estimate)
    if dry_run:
        typer.echo(f"dry run: candidate table written to {result.out / 'candidates.csv'}")
    else:
        _summary(result, settings.train)
    for note in _moved_notes(moved):  # last, so that a refusal stays one line
        typer.echo(note, err=True)


LONG_WORK = 2 * 3600  # seconds of estimated training above which a search warns before it starts


class _GridPrinter:
    """Prints the events of a search as they come."""

    def __call__(self, event) -> None:  # noqa: ANN001
        from .forms import FormsChosen
        from .grid import Measured, dropped_summary
        from .study import Planned, StudyStarted, TrialFinished

        if isinstance(event, Measured):
            kept = [c for c in event.rows if c.kept]
            typer.echo(f"{event.base.name} at {event.base.resolution}px: {event.base_flops:,} FLOPs; target "
                       f"{event.target_flops / event.base_flops:.3g}x = {event.target_flops:,.0f}; "
                       f"{len(event.rows)} (alpha, beta) points, {len(kept)} kept")
            if kept:
                typer.echo(table([c.row() for c in kept], [
                    ("id", ""), ("alpha", ".2f"), ("beta", ".2f"), ("gamma", ".3f"), "resolution",
                    ("nominal_ratio", ".3f"), ("flops_ratio", ".3f"), ("params", ","), ("acts", ",")]))
            typer.echo(dropped_summary(event.rows) + (f" (every row, with its reason: {event.out / 'candidates.csv'})"
                                                      if kept else ""))
            if event.geometry:
                typer.echo(event.geometry)
            if event.lost:
                typer.echo(f"warning: {event.lost}")
            if event.precision:
                typer.echo(f"warning: {event.precision}")
        elif isinstance(event, FormsChosen):
            for choice in event.choices:
                typer.echo(choice.text())
                if choice.note:
                    typer.echo(f"warning: {choice.note}")
        elif isinstance(event, Planned):
            if event.models:
                typer.echo(_models_table(event.models))
            eta = f"; estimated {_duration(event.seconds)} on this machine" if event.seconds else ""
            each = f", {event.images_per_trial:,} images each" if event.images_per_trial else ""
            typer.echo(f"training {event.units} {event.unit} x {event.seeds} seed(s) = {event.trials} trials "
                       f"({event.todo} to train){each}{eta}")
            if event.halving:
                typer.echo(event.halving)
            if event.seconds and event.seconds > LONG_WORK:
                typer.echo(f"warning: about {_duration(event.seconds)} of training on this machine; a cheaper run "
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
    took = f", {_duration(row.seconds)}" if row.seconds is not None else ""
    why = f" ({row.diverged})" if row.diverged else ""
    return f"trial {row.trial} {row.state}{why}: {top1}{took} [{event.done}/{event.total}]"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _summary(result, recipe) -> None:  # noqa: ANN001 - GridResult, TrainConfig
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
    diverged = [r for r in result.rows if r.state == "DIVERGED"]
    for r in diverged:
        typer.echo(f"DIVERGED: trial {r.trial} ({r.diverged}); never ranked")
    _plateau_hint(diverged, recipe)
    if result.verdict is not None:
        from .ranking import comparable, compare

        typer.echo(result.verdict.text)
        ranked = comparable(result.summaries)  # the best's rung only: one budget
        if len(ranked) > 2:
            typer.echo(compare(ranked[0], ranked[-1], "worst", n_val=result.n_val).text)
    if result.ties:
        from .grid import tie_text

        typer.echo(f"note: {tie_text(result.ties)}")
    by_mean = " (by mean: a tie)" if result.ties else ""
    typer.echo(f"best at phi = 1{by_mean}: alpha = {best['alpha']:g}  beta = {best['beta']:g}  gamma = {best['gamma']:.4f}"
               f"   (top-1 {100 * best['top1_mean']:.2f}%" + (f" +/- {100 * best['top1_std']:.2f}" if best.get("top1_std") is not None else "")
               + f", {best['n']} seed(s))")
    typer.echo(f"  d = {best['d']:.3f}  w = {best['w']:.3f}  r = {best['r']:.3f}  -> {best['resolution']}px, "
               f"{best['params']:,} params, {best['flops']:,} FLOPs ({best['flops_ratio']:.3f}x the base)")
    typer.echo(f"family{' of the best by mean' if result.ties else ''} (d = alpha^phi, w = beta^phi; resolution fitted "
               f"so measured FLOPs follow the target^phi):")
    typer.echo(_family_table(result.family))
    if result.family_note:
        typer.echo(f"note: {result.family_note}")
    typer.echo(f"written to {result.out}/: " + ", ".join(p.name for p in result.files))
    typer.echo(line)


def _plateau_hint(diverged, recipe) -> None:  # noqa: ANN001 - TrialRows, TrainConfig
    """Trials that never left a uniform guess: name the recipe options that got deep candidates
    off that plateau in our measurements, those the run did not use."""
    from .train import NEVER_LEARNED

    if not any(NEVER_LEARNED in (r.diverged or "") for r in diverged):
        return
    options = ([] if recipe.residual_init == "scaled" else ["--residual-init scaled"]) + (
        [] if recipe.optimizer == "lars" else ["--optimizer lars"])
    if options:
        typer.echo(f"hint: deep candidates that sit at chance at a short budget trained with {' and '.join(options)} "
                   f"in our measurements (experiments/deep-candidates/NOTES.md)")


def _family_table(rows) -> str:  # noqa: ANN001
    columns = ["phi", ("d", ".3f"), ("w", ".3f"), ("r", ".3f")]
    if rows and "gamma_nominal" in rows[0]:
        columns.append(("gamma_nominal", ".3f"))
    columns += ["resolution", "layers", ("params", ","), ("flops", ","), ("nominal_ratio", ".2f")]
    if rows and "target_ratio" in rows[0]:
        columns.append(("target_ratio", ".2f"))
    columns.append(("flops_ratio", ".2f"))
    if rows and "within_tolerance" in rows[0]:
        columns.append("within_tolerance")
    return table(rows, columns)


@app.command()
def plot(run_dir: str = typer.Argument(..., help="A run directory written by `scalesearch grid`.")) -> None:
    """Redraw a run's plots (PNG and SVG) from its CSV files."""
    from .plots import plot_run

    with user_errors():
        files = plot_run(run_dir)
    for path in files:
        typer.echo(str(path))


@app.command()
def reproduce(
    experiment: Optional[str] = typer.Argument(None, help="table3 or figure8 (built in); leave out with --config."),
    config: Optional[str] = typer.Option(None, "--config", help="Your own experiment file (copy experiments/table3.yaml or figure8.yaml and edit it)."),
    budget: str = typer.Option("smoke", "--budget", help="A preset of the experiment: smoke (minutes on 2 cores), cpu, gpu."),
    recipe: Optional[str] = RECIPE_OPTION,
    assignments: Optional[list[str]] = typer.Option(None, "--set", metavar="NAME=VALUE", help="A training or backend setting by name, repeatable: --set train.optimizer=lars --set backend.cpus_per_trial=1 (the rest is the experiment file's)."),
    dataset: Optional[str] = DATASET_OPTION,
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per row (default: the budget's)."),
    precision: Optional[str] = PRECISION_OPTION,
    keep_maps: Optional[bool] = KEEP_MAPS_OPTION,
    coefficients: Optional[list[str]] = typer.Option(None, "--coefficients", help="A finished `scalesearch grid` run whose best alpha, beta, gamma give a base's compound row (instead of searching); repeat per base."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder (default runs/<name>-<budget>-<timestamp>); re-run to resume."),
    backend: Optional[str] = BACKEND_OPTION,
    address: Optional[str] = ADDRESS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Build and count every row, train nothing."),
    no_estimate: bool = NO_ESTIMATE_OPTION,
    optimizer: Optional[str] = _moved("optimizer", "sgd or lars."),
    residual_init: Optional[str] = _moved("residual_init", "one, zero or scaled."),
    cpus_per_trial: Optional[float] = _moved("cpus_per_trial", "Threads per trial."),
    gpus_per_trial: Optional[float] = _moved("gpus_per_trial", "Ray: GPUs per trial."),
    cache_dir: Optional[str] = _moved("cache_dir", "Where image stores are kept."),
) -> None:
    """Reproduce the paper's Table 3 or Figure 8: single-dimension against compound scaling, trained side by side."""
    from .reproduce import ExperimentError, make_settings, reproduce as run_reproduction
    from .settings import SettingsError, load_recipe, owner_of, parse_assignments

    moved = dict(optimizer=optimizer, residual_init=residual_init, cpus_per_trial=cpus_per_trial,
                 gpus_per_trial=gpus_per_trial, cache_dir=cache_dir, precision=precision, keep_maps=keep_maps)
    with user_errors():
        if experiment is None and config is None:
            raise ExperimentError("name an experiment (table3, figure8) or give --config FILE")
        if experiment is not None and config is not None:
            raise ExperimentError(f"give either the experiment name '{experiment}' or --config, not both")
        train = load_recipe(recipe) if recipe else {}
        train.update({k: v for k, v in (("optimizer", optimizer), ("residual_init", residual_init),
                                        ("precision", precision)) if v is not None})
        backend_flags = dict(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)
        data_flags = dict(cache_dir=cache_dir, keep_maps=keep_maps, store_resolution=None)
        for name, value in parse_assignments(assignments or []).items():
            section = owner_of(name)
            if section == "train":
                train[name] = value
            elif section == "backend":
                backend_flags[name] = value
            elif name in ("cache_dir", "keep_maps", "store_resolution"):
                data_flags[name] = value
            else:
                raise SettingsError(f"--set {name}: reproduce takes training and backend settings (and keep_maps, "
                                    f"cache_dir, store_resolution) by name; the rest is the experiment file's")
        settings = make_settings(config or experiment, budget, dataset=dataset, seeds=seeds, device=device,
                                 backend=backend, address=address, cache_dir=data_flags["cache_dir"], out=out,
                                 coefficients=coefficients or (), recipe=train, keep_maps=data_flags["keep_maps"],
                                 store_resolution=data_flags["store_resolution"], backend_settings=backend_flags)
        result = run_reproduction(settings, dry_run=dry_run, on_event=_ReproducePrinter(), estimate=not no_estimate)
    name = settings.experiment.name
    if dry_run:  # the table of rows was printed with the plan
        typer.echo(f"dry run: every row built and counted, nothing trained: {result.out / (name + '.csv')}")
    else:
        typer.echo("=" * 78)
        typer.echo((result.out / f"{name}.md").read_text().split("\n", 2)[2].strip())
        typer.echo(f"written to {result.out}/: " + ", ".join(p.name for p in result.files))
        typer.echo("=" * 78)
    for note in _moved_notes(moved):  # last, so that a refusal stays one line
        typer.echo(note, err=True)


def _models_table(models) -> str:  # noqa: ANN001 - reproduce.Model
    rows = [dict(m.as_dict(), paper_gflops=m.row.paper_flops / 1e9 if m.row.paper_flops else None) for m in models]
    from .reproduce import carries_paper_figures

    paper = carries_paper_figures(m.row for m in models)
    return table(rows, [("model", ""), "base", "label", ("d", ".3f"), ("w", ".3f"), ("r", ".3f"), "resolution",
                        ("params", ","), ("flops", ","), ("flops_ratio", ".2f")]
                 + ([("paper_gflops", ".2f"), ("paper_ratio", ".2f"), ("paper_top1", ".1f")] if paper else []))


class _ReproducePrinter(_GridPrinter):
    """Prints a reproduction's events, and those of its grid searches."""

    def __call__(self, event) -> None:  # noqa: ANN001
        from .reproduce import SearchStarted

        if isinstance(event, SearchStarted):
            typer.echo(f"compound coefficients for {event.base}: phi = 1 grid search in {event.out}")
        else:
            super().__call__(event)


@app.command(name="check-proxy")
def check_proxy_cmd(
    run_dir: str = typer.Argument(..., help="A finished run directory of `scalesearch grid`."),
    budget: str = typer.Option("4x", "--budget", help="The larger budget, as a multiple of the run's epochs or images."),
    top: int = typer.Option(4, "--top", help="How many of the run's best candidates to train again (2 or more)."),
    no_estimate: bool = NO_ESTIMATE_OPTION,
) -> None:
    """Would a bigger budget rank the candidates the same? Train the top ones again and measure the rank agreement."""
    from .api import check_proxy

    with user_errors():
        record = check_proxy(run_dir, budget, top, on_event=_GridPrinter(), estimate=not no_estimate)
    rows = []
    for p in record["candidates"]:
        row = dict(candidate=p["candidate"])
        for key, name in (("small", record["small"]), ("large", record["large"])):
            row[name] = f"{100 * sum(p[key]) / len(p[key]):.2f}" if p[key] else "-"
        rows.append(row)
    typer.echo("=" * 78)
    typer.echo("mean top-1 (%) over seeds at each budget:")
    typer.echo(table(rows, [("candidate", ""), record["small"], record["large"]]))
    typer.echo(record["verdict"])
    typer.echo("written: " + ", ".join(record["files"]))


@app.command()
def curves(
    paths: list[str] = typer.Argument(..., help="Grid run directories, reproduce outputs, or their CSV files."),
    out: str = typer.Option(..., "--out", help="The plot to write (FILE.png; an .svg twin is written beside it)."),
    title: Optional[str] = typer.Option(None, "--title", help="The plot's title."),
) -> None:
    """Draw top-1 against FLOPs from saved results, one labelled curve or point set per run or method."""
    from .curves import curves as draw, mixed_data_note

    with user_errors():
        files = draw(paths, out, title)
    for path in files:
        typer.echo(str(path))
    note = mixed_data_note(paths)
    if note:
        typer.echo(f"warning: {note}")


from .cli_data import data_app  # noqa: E402 - the sub-commands' module imports this one lazily

app.add_typer(data_app, name="data")


def main() -> None:
    sys.unraisablehook = redeliver_interrupts(sys.unraisablehook)
    app()


if __name__ == "__main__":
    main()
