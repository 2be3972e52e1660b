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
    from .scaling import compound

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
               f"alpha*beta^2*gamma^2 = {rows[1]['nominal_ratio'] if len(rows) > 1 else alpha * beta**2 * gamma**2:.4f}")
    typer.echo(table(rows, ["phi", ("d", ".3f"), ("w", ".3f"), ("r", ".3f"), "resolution", "layers",
                            ("params", ","), ("flops", ","), ("nominal_ratio", ".2f"), ("flops_ratio", ".2f")]))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
