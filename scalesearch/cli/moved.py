"""Flags of grid that moved behind --set in 0.2.0: still accepted for this release, each with a
one-line note whose --set spelling runs as printed."""

from __future__ import annotations

import typer

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


def moved(name: str, text: str, decls: str = ""):  # noqa: ANN202 - a typer OptionInfo
    flag, path = MOVED[name]
    return typer.Option(None, decls or flag, hidden=True, help=f"{text} (moved: --set {path}=VALUE)")


# moved flags grid and reproduce share, declared once
PRECISION_OPTION = moved("precision", "auto (the measured fastest step per network and device, docs/performance.md), fp32 or bf16.")
KEEP_MAPS_OPTION = moved("keep_maps", "Keep the base's last feature map at a proxy resolution (docs/method.md).", "--keep-maps/--native-strides")


def moved_notes(given: dict[str, object]) -> list[str]:
    """One line per moved flag the user gave: the spelling that replaces it, written so that it
    runs as printed (``--set`` reads it back as the same setting)."""
    return [f"note: {MOVED[k][0]} is now --set {MOVED[k][1]}={as_set_value(k, v)} (the flag works for this release)"
            for k, v in given.items() if k in MOVED and v is not None]


def as_set_value(name: str, value: object) -> str:
    """``value`` as ``--set NAME=`` text that reads back as the same setting: the old --clip-norm 0
    is null (no clipping), candidates a list [a, b]; a count limit reads back as a number, which
    the grid takes as the same count."""
    if name == "clip_norm" and value == 0:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) or name == "candidates":  # a list, even of one id
        return "[" + ", ".join(as_set_value("", v) for v in (value if isinstance(value, (list, tuple)) else [value])) + "]"
    return str(value)
