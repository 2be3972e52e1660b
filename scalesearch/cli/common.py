"""What every command shares: usage errors and refusals as one line and an exit status,
never a traceback; JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Iterator

import typer
from typer.core import TyperGroup

from ..errors import UserError
from ..study.interrupts import acknowledge_interrupt, raise_pending_interrupt


class OneLineErrors(TyperGroup):
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
                setting = REMOVED_FLAGS.get(getattr(exc, "option_name", None) or "")
                if setting and command.split()[-1] in ("grid", "reproduce"):
                    typer.echo(f"error: {getattr(exc, 'option_name')} was removed in 0.3.0: use --set {setting}=VALUE "
                               f"(CHANGELOG.md lists every moved flag)", err=True)
                else:
                    typer.echo(f"error: {' '.join(exc.format_message().split())} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, _CLICK_ABORT):
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# The research flags of grid and reproduce that moved behind --set in 0.2.0 and were removed in
# 0.3.0: a user's old command is told the spelling that replaced its flag (CHANGELOG.md).
REMOVED_FLAGS = {
    "--max-params": "grid.max_params", "--max-acts": "grid.max_acts", "--alpha-max": "grid.alpha_max",
    "--beta-max": "grid.beta_max", "--step": "grid.step", "--tolerance": "grid.tolerance",
    "--nominal-tolerance": "grid.nominal_tolerance", "--depth-rounding": "rounding.depth_rule",
    "--train-subset": "data.train_subset", "--val-subset": "data.val_subset", "--cache-dir": "data.cache_dir",
    "--batch-size": "train.batch_size", "--lr": "train.lr", "--clip-norm": "train.clip_norm",
    "--optimizer": "train.optimizer", "--trust": "train.trust", "--residual-init": "train.residual_init",
    "--precision": "train.precision", "--seed": "seed", "--candidates": "candidates", "--order": "order",
    "--phi-max": "phi_max", "--early-stop": "backend.early_stop", "--no-early-stop": "backend.early_stop",
    "--cpus-per-trial": "backend.cpus_per_trial", "--gpus-per-trial": "backend.gpus_per_trial",
    "--keep-maps": "keep_maps", "--native-strides": "keep_maps",
}

_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_CLICK_ABORT = getattr(sys.modules[_CLICK_ERROR.__module__], "Abort", typer.Abort)



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


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
