"""The `scalesearch` command: a thin typer layer over the Python API."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ..errors import UserError
from ..net.bases import base_names, get_base
from ..report.formatting import human, table
from ..study.interrupts import redeliver_interrupts
from .common import OneLineErrors, emit_json, user_errors
from .data import data_app
from .printers import GridPrinter, ReproducePrinter, family_table, print_summary

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, cls=OneLineErrors,
                  help="Compound model scaling (EfficientNet, Tan & Le 2019) for any stage-structured ConvNet.")

BASE_HELP = "A base network name (see `scalesearch bases`) or a path to a .json/.yaml spec file."


@app.command()
def bases(as_json: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
    """List the built-in base networks (FLOPs: `scalesearch flops --base NAME`)."""
    from ..measure.models import count_params

    rows = []
    for name in base_names():
        spec = get_base(name)
        rows.append(dict(base=name, resolution=spec.resolution, stages=len(spec.stages),
                         layers=spec.total_layers, block=spec.stages[-1].block, params=count_params(spec)))
    if as_json:
        emit_json(rows)
        return
    typer.echo(table(rows, ["base", "block", "resolution", "stages", "layers", ("params", ",")]))


@app.command()
def blocks(as_json: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
    """List the block types a spec's stages may use (the registry, built-in and your own)."""
    from ..net.blocks import block_types

    rows = [dict(block=r["block"], uses=r["uses"] if isinstance(r["uses"], str) else ", ".join(r["uses"]), doc=r["doc"]) for r in block_types()]
    if as_json:
        emit_json(rows)
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
    latency: bool = typer.Option(False, "--latency", help="Also time the forward pass at batch 1 (median and spread; cached per machine)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else."),
) -> None:
    """Params, FLOPs, activations and the stage table of a base scaled by (d, w, r)."""
    from ..api import measure

    with user_errors():
        result = measure(base, d=d, w=w, r=r, rounding=_rounding(depth_rounding), resolution=resolution,
                         keep_maps=keep_maps, latency=latency)
    if as_json:
        emit_json(result)
        return
    typer.echo(f"{result['name']}  scaled by d={d:g} w={w:g} r={r:g}")
    if result.get("geometry"):
        typer.echo(f"  {result['geometry']}")
    typer.echo(f"  resolution   {result['resolution']} px  (last feature map {result['last_map']}x{result['last_map']})")
    typer.echo(f"  params       {result['params']:>15,}  ({human(result['params'])})")
    typer.echo(f"  flops        {result['flops']:>15,}  ({human(result['flops'])})  conv + linear multiply-adds")
    typer.echo(f"  other flops  {result['other_flops']:>15,}  ({human(result['other_flops'])})  batch norm + pooling")
    typer.echo(f"  activations  {result['acts']:>15,}  ({human(result['acts'])})  conv output elements")
    if latency:
        from ..measure.latency import Latency

        typer.echo(f"  latency      {Latency(**result['latency']).text}")
    typer.echo("")
    typer.echo(table(result["stages"], ["stage", "block", "resolution", "channels", "layers", "stride",
                                        "kernel", "expand_ratio", "se_ratio"]))


def _help(text: str, name: str) -> str:
    """A flag's help with the setting's default, read from the settings class (written once there)."""
    from ..settings import default_of

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
    target_latency: Optional[str] = typer.Option(None, "--target-latency", help="Fit the resolution at each phi so measured latency is target^phi the base's (a ratio such as 2x), timed on --device."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="With a target (refused without it): how far from target^phi a member may measure (default: 0.05 for FLOPs, 0.1 for latency)."),
    latency: bool = typer.Option(False, "--latency", help="Also time each member's forward pass (median and spread; cached per machine)."),
    device: str = typer.Option("cpu", "--device", help="Where latency is timed: cpu or cuda[:N]."),
    batch: int = typer.Option(1, "--batch", min=1, max=4096, help="Images per timed forward pass (1: one deployed request)."),
    depth_rounding: Optional[str] = typer.Option(None, "--depth-rounding", help="stage (per-stage ceil, the reference rule) or total (one layer at a time)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array and nothing else."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
) -> None:
    """The family phi = 0..N of Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi, measured."""
    from ..search.family import family
    from ..net.scaling import compound, nominal_ratio

    with user_errors():
        if as_json and as_csv:
            raise UserError("--json and --csv both ask for the whole output: choose one")
        compound(alpha, beta, gamma, 0)  # validates alpha, beta, gamma before any work
        target = _ratio_option(target_flops) if target_flops is not None else None
        latency_target = _ratio_option(target_latency, "--target-latency") if target_latency is not None else None
        from ..settings import BackendSettings, default_of

        phi_max = default_of("phi_max") if phi_max is None else phi_max
        BackendSettings(device=device)   # the device is named before anything is timed
        rows = family(get_base(base), alpha, beta, gamma, phi_max, _rounding(depth_rounding), target=target,
                      tolerance=tolerance, target_latency=latency_target, latency=latency, device=device,
                      batch=batch)
    if as_json:
        emit_json(rows)
        return
    if as_csv:
        import pandas as pd

        sys.stdout.write(pd.DataFrame(rows).to_csv(index=False))
        return
    typer.echo(f"{rows[0]['base']}: alpha={alpha:g} beta={beta:g} gamma={gamma:g}, "
               f"alpha*beta^2*gamma^2 = {nominal_ratio(alpha, beta, gamma):.4f}"
               + (f"; resolution fitted to {target:g}^phi measured FLOPs" if target is not None else "")
               + (f"; resolution fitted to {latency_target:g}^phi measured latency at batch {batch} on {device}"
                  if latency_target is not None else ""))
    typer.echo(family_table(rows))


def _ratio_option(text: str, option: str = "--target-flops") -> float:
    from ..search.budget import parse_budget

    budget = parse_budget(text, option)
    if not budget.is_ratio or budget.value < 1:
        raise UserError(f"{option} '{text}' must be a ratio of at least 1x here, such as 2x")
    return budget.value


def _rounding(depth_rounding: Optional[str]):  # noqa: ANN202 - scaling.Rounding
    from ..net.scaling import DEFAULT_ROUNDING, Rounding

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
    from ..api import export_member

    from ..api import UNTRAINED

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

@app.command()
def grid(
    config: Optional[str] = typer.Option(None, "--config", help="Read settings from a YAML/JSON file (a run's config.json too); flags override it."),
    recipe: Optional[str] = RECIPE_OPTION,
    assignments: Optional[list[str]] = SET_OPTION,
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    target_flops: Optional[str] = typer.Option(None, "--target-flops", help=_help("FLOPs at phi = 1: a ratio (2x) or a count (800M, 1.6G).", "target_flops")),
    target_latency: Optional[str] = typer.Option(None, "--target-latency", help="Fit gamma to measured latency instead of FLOPs: a ratio to the base's (2x) or a time (12ms); timed on --device (docs/method.md)."),
    dataset: Optional[str] = DATASET_OPTION,
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Search at this base resolution (a cheap proxy)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help=_help("Short-training budget per trial, in epochs.", "epochs")),
    images: Optional[int] = typer.Option(None, "--images", help="Budget in training images instead of epochs."),
    fidelity: Optional[str] = typer.Option(None, "--fidelity", help="full: every candidate at the budget; halving: successive halving, the top 1/eta of each rung trained at eta times its budget (--set eta=3 --set rungs=3)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help=_help("Train each candidate with N seeds; rank by the mean.", "seeds")),
    max_trials: Optional[int] = typer.Option(None, "--max-trials", help="Train at most N candidates (raise it later to extend a run)."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory (default runs/<base>-<timestamp>); re-run to resume or extend."),
    backend: Optional[str] = BACKEND_OPTION,
    address: Optional[str] = ADDRESS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure and save the candidate table, train nothing."),
    no_estimate: bool = NO_ESTIMATE_OPTION,
) -> None:
    """Step 1: grid-search alpha, beta, gamma at phi = 1 on measured FLOPs, short-training each candidate.

    Every setting has a name (docs/cli.md): a --config file holds them all, a --recipe file the
    training recipe, and --set NAME=VALUE any one of them.
    """
    from ..search.grid import run_grid
    from ..settings import build_settings, load_recipe, load_settings, parse_assignments

    flags = dict(base=base, target_flops=target_flops, target_latency=target_latency, resolution=resolution,
                 dataset=dataset, epochs=epochs, images=images, fidelity=fidelity, seeds=seeds,
                 max_trials=max_trials, backend=backend, address=address, device=device, out=out)
    with user_errors():
        exact = parse_assignments(assignments or [])
        if target_flops is not None and (target_latency or exact.get("target_latency")):
            raise UserError(f"--target-flops {target_flops} and --target-latency "
                            f"{target_latency or exact['target_latency']}: one constraint is fitted; keep one target "
                            f"(the other can be a limit: --set grid.max_latency=... or grid.max_params=...)")
        recipe_values = load_recipe(recipe) if recipe else {}
        if config:
            settings = load_settings(config, flags, recipe=recipe_values, assignments=exact)
        else:
            settings = build_settings(recipe_values, flags, source="options", assignments=exact)
        if "trust" in exact and settings.train.optimizer != "lars":
            raise UserError(f"--set train.trust={exact['trust']} sets the layer-wise rate of train.optimizer=lars "
                            f"(got optimizer {settings.train.optimizer!r})")
        if settings.out is None:
            from ..search.grid import default_out

            settings = settings.replace(out=str(default_out(settings.base)))
        printer = GridPrinter()
        result = run_grid(settings, dry_run=dry_run, on_event=printer, estimate=not no_estimate)
    if dry_run:
        typer.echo(f"dry run: candidate table written to {result.out / 'candidates.csv'}")
    else:
        print_summary(result, settings.train)


@app.command()
def plot(run_dir: str = typer.Argument(..., help="A run directory written by `scalesearch grid`.")) -> None:
    """Redraw a run's plots (PNG and SVG) from its CSV files."""
    from ..report.plots import plot_run

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
    assignments: Optional[list[str]] = typer.Option(None, "--set", metavar="NAME=VALUE", help="A training, backend or data setting by name, repeatable: --set train.optimizer=lars --set backend.cpus_per_trial=1 --set keep_maps=true (the rest is the experiment file's)."),
    dataset: Optional[str] = DATASET_OPTION,
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per row (default: the budget's)."),
    coefficients: Optional[list[str]] = typer.Option(None, "--coefficients", help="A finished `scalesearch grid` run whose best alpha, beta, gamma give a base's compound row (instead of searching); repeat per base."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder (default runs/<name>-<budget>-<timestamp>); re-run to resume."),
    backend: Optional[str] = BACKEND_OPTION,
    address: Optional[str] = ADDRESS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Build and count every row, train nothing."),
    no_estimate: bool = NO_ESTIMATE_OPTION,
) -> None:
    """Reproduce the paper's Table 3 or Figure 8: single-dimension against compound scaling, trained side by side."""
    from ..reproduce import ExperimentError, make_settings, reproduce as run_reproduction
    from ..settings import load_recipe, parse_assignments

    with user_errors():
        if experiment is None and config is None:
            raise ExperimentError("name an experiment (table3, figure8) or give --config FILE")
        if experiment is not None and config is not None:
            raise ExperimentError(f"give either the experiment name '{experiment}' or --config, not both")
        settings = make_settings(config or experiment, budget, dataset=dataset, seeds=seeds, device=device,
                                 backend=backend, address=address, out=out, coefficients=coefficients or (),
                                 recipe=load_recipe(recipe) if recipe else {},
                                 assignments=parse_assignments(assignments or []))
        result = run_reproduction(settings, dry_run=dry_run, on_event=ReproducePrinter(), estimate=not no_estimate)
    name = settings.experiment.name
    if dry_run:  # the table of rows was printed with the plan
        typer.echo(f"dry run: every row built and counted, nothing trained: {result.out / (name + '.csv')}")
    else:
        typer.echo("=" * 78)
        typer.echo((result.out / f"{name}.md").read_text().split("\n", 2)[2].strip())
        typer.echo(f"written to {result.out}/: " + ", ".join(p.name for p in result.files))
        typer.echo("=" * 78)


@app.command(name="check-proxy")
def check_proxy_cmd(
    run_dir: str = typer.Argument(..., help="A finished run directory of `scalesearch grid`."),
    budget: str = typer.Option("4x", "--budget", help="The larger budget, as a multiple of the run's epochs or images."),
    top: int = typer.Option(4, "--top", help="How many of the run's best candidates to train again (2 or more)."),
    no_estimate: bool = NO_ESTIMATE_OPTION,
) -> None:
    """Would a bigger budget rank the candidates the same? Train the top ones again and measure the rank agreement."""
    from ..api import check_proxy

    with user_errors():
        record = check_proxy(run_dir, budget, top, on_event=GridPrinter(), estimate=not no_estimate)
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
    from ..report.curves import curves as draw, mixed_data_note

    with user_errors():
        files = draw(paths, out, title)
    for path in files:
        typer.echo(str(path))
    note = mixed_data_note(paths)
    if note:
        typer.echo(f"warning: {note}")


app.add_typer(data_app, name="data")


def main() -> None:
    sys.unraisablehook = redeliver_interrupts(sys.unraisablehook)
    app()


if __name__ == "__main__":
    main()
