"""The `scalesearch` command: a thin typer layer over the Python API."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Iterator, Optional

import typer

from .bases import base_names, get_base
from .errors import UserError
from .formatting import human, table

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Compound model scaling (EfficientNet, Tan & Le 2019) for any stage-structured ConvNet.")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit status 2, never a traceback."""
    try:
        yield
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


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
def flops(
    base: str = typer.Option(..., "--base", help=BASE_HELP),
    d: float = typer.Option(1.0, "--d", help="Depth multiplier (layers x d, rounded up)."),
    w: float = typer.Option(1.0, "--w", help="Width multiplier (channels x w, to a multiple of 8)."),
    r: float = typer.Option(1.0, "--r", help="Resolution multiplier (pixels x r, rounded)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Params, FLOPs, activations and the stage table of a base scaled by (d, w, r)."""
    from .api import measure

    with user_errors():
        result = measure(base, d=d, w=w, r=r)
    if as_json:
        _emit_json(result)
        return
    typer.echo(f"{result['name']}  scaled by d={d:g} w={w:g} r={r:g}")
    typer.echo(f"  resolution   {result['resolution']} px")
    typer.echo(f"  params       {result['params']:>15,}  ({human(result['params'])})")
    typer.echo(f"  flops        {result['flops']:>15,}  ({human(result['flops'])})  conv + linear multiply-adds")
    typer.echo(f"  other flops  {result['other_flops']:>15,}  ({human(result['other_flops'])})  batch norm + pooling")
    typer.echo(f"  activations  {result['acts']:>15,}  ({human(result['acts'])})  conv output elements")
    typer.echo("")
    typer.echo(table(result["stages"], ["stage", "block", "resolution", "channels", "layers", "stride",
                                        "kernel", "expand_ratio", "se_ratio"]))


@app.command(name="family")
def family_cmd(
    base: str = typer.Option(..., "--base", help=BASE_HELP),
    alpha: float = typer.Option(..., "--alpha", help="Depth coefficient (>= 1)."),
    beta: float = typer.Option(..., "--beta", help="Width coefficient (>= 1)."),
    gamma: float = typer.Option(..., "--gamma", help="Resolution coefficient (>= 1)."),
    phi_max: int = typer.Option(7, "--phi-max", min=0, max=20, help="Largest phi."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array and nothing else."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """The family phi = 0..N of Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi, measured."""
    from .family import family
    from .scaling import compound, nominal_ratio

    with user_errors():
        compound(alpha, beta, gamma, 0)  # validates alpha, beta, gamma before any work
        rows = family(get_base(base), alpha, beta, gamma, phi_max)
    if as_json:
        _emit_json(rows)
        return
    if as_csv:
        import pandas as pd

        sys.stdout.write(pd.DataFrame(rows).to_csv(index=False))
        return
    typer.echo(f"{rows[0]['base']}: alpha={alpha:g} beta={beta:g} gamma={gamma:g}, "
               f"alpha*beta^2*gamma^2 = {nominal_ratio(alpha, beta, gamma):.4f}")
    typer.echo(table(rows, ["phi", ("d", ".3f"), ("w", ".3f"), ("r", ".3f"), "resolution", "layers",
                            ("params", ","), ("flops", ","), ("nominal_ratio", ".2f"), ("flops_ratio", ".2f")]))


@app.command()
def grid(
    base: str = typer.Option(..., "--base", help=BASE_HELP),
    target_flops: str = typer.Option("2x", "--target-flops", help="FLOPs at phi = 1: a ratio (2x) or a count (800M, 1.6G)."),
    max_params: Optional[str] = typer.Option(None, "--max-params", help="Params budget: a ratio (3x) or a count (20M)."),
    max_acts: Optional[str] = typer.Option(None, "--max-acts", help="Activations budget: a ratio or a count."),
    alpha_max: float = typer.Option(2.0, "--alpha-max", help="Largest alpha (depth) on the grid."),
    beta_max: float = typer.Option(1.5, "--beta-max", help="Largest beta (width) on the grid."),
    step: float = typer.Option(0.05, "--step", help="Grid step for alpha and beta."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Keep candidates whose measured FLOPs are within this fraction of the target."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Search at this base resolution (a cheap proxy)."),
    dataset: str = typer.Option("synthetic", "--dataset", help="'synthetic' (built in), an image-folder tree, or a CIFAR pickle folder."),
    train_subset: Optional[int] = typer.Option(None, "--train-subset", help="Train on N images (class-balanced)."),
    val_subset: Optional[int] = typer.Option(None, "--val-subset", help="Score on N held-out images."),
    epochs: float = typer.Option(1.0, "--epochs", help="Short-training budget per candidate, in epochs."),
    images: Optional[int] = typer.Option(None, "--images", help="Budget in training images instead of epochs."),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: the trainer's)."),
    seed: int = typer.Option(0, "--seed"),
    max_trials: Optional[int] = typer.Option(None, "--max-trials", help="Train at most N of the kept candidates (a seeded sample)."),
    phi_max: int = typer.Option(7, "--phi-max", min=0, max=20, help="Extrapolate the family to this phi."),
    backend: str = typer.Option("optuna", "--backend", help="optuna (SQLite study in the run directory) or ray (Ray Tune)."),
    address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster (with --backend ray)."),
    early_stop: bool = typer.Option(False, "--early-stop", help="Stop weak candidates early (Optuna MedianPruner / Tune ASHA)."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial", help="Ray: CPUs per trial."),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="Ray: GPUs per trial."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Where decoded images are cached."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<base>-<timestamp>); re-run to resume."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure and save the candidate table, train nothing."),
) -> None:
    """Step 1: grid-search alpha, beta, gamma at phi = 1 on measured FLOPs, short-training each candidate."""
    from .grid import run_grid
    from .runs import SearchSettings

    settings = SearchSettings(
        base=base, target_flops=target_flops, max_params=max_params, max_acts=max_acts, alpha_max=alpha_max,
        beta_max=beta_max, step=step, tolerance=tolerance, resolution=resolution, dataset=dataset,
        train_subset=train_subset, val_subset=val_subset, epochs=epochs, images=images, batch_size=batch_size,
        lr=lr, seed=seed, max_trials=max_trials, phi_max=phi_max, backend=backend, address=address,
        early_stop=early_stop, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, device=device,
        cache_dir=cache_dir, out=out)
    with user_errors():
        result = run_grid(settings, dry_run=dry_run, echo=typer.echo)
    if dry_run:
        typer.echo(f"dry run: candidate table written to {result.out / 'candidates.csv'}")
        return
    _summary(result)


def _summary(result) -> None:  # noqa: ANN001 - GridResult
    best = result.best
    line = "=" * 78
    typer.echo(line)
    typer.echo(f"best at phi = 1: alpha = {best['alpha']:g}  beta = {best['beta']:g}  gamma = {best['gamma']:.4f}"
               f"   (top-1 {100 * best['top1']:.2f}% of {best['trials_complete']} trials)")
    typer.echo(f"  d = {best['d']:.3f}  w = {best['w']:.3f}  r = {best['r']:.3f}  -> {best['resolution']}px, "
               f"{best['params']:,} params, {best['flops']:,} FLOPs ({best['flops_ratio']:.3f}x the base)")
    typer.echo("family (Eq. 3, measured):")
    typer.echo(table(result.family, ["phi", ("d", ".3f"), ("w", ".3f"), ("r", ".3f"), "resolution",
                                     ("params", ","), ("flops", ","), ("nominal_ratio", ".2f"), ("flops_ratio", ".2f")]))
    typer.echo(f"written to {result.out}/: " + ", ".join(p.name for p in result.files))
    typer.echo(line)


@app.command()
def plot(run_dir: str = typer.Argument(..., help="A run directory written by `scalesearch grid`.")) -> None:
    """Redraw a run's plots (PNG and SVG) from its CSV files."""
    from .plots import plot_run

    with user_errors():
        files = plot_run(run_dir)
    for path in files:
        typer.echo(str(path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
