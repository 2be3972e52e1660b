"""scalesearch: compound model scaling (Tan & Le, ICML 2019) as a general tool.

The layout follows the paper: ``spec`` (Eq. 1, the network as data), ``scaling``
(Eq. 3 and the rounding rules), ``cost`` (measured FLOPs, params, activations),
``search`` (step 1: the phi = 1 grid), ``family`` (step 2: raising phi).
"""

from .bases import base_names, get_base
from .errors import UserError
from .scaling import Rounding, compound, nominal_ratio, round_channels, round_depth, round_resolution, scale
from .spec import HeadSpec, NetworkSpec, SpecError, StageSpec, StemSpec, load_spec, save_spec

__version__ = "0.1.0"

# Torch-side names load on first use, so specs and the scaler stay importable without torch.
_LAZY = {"Cost": "cost", "count_cost": "cost", "family": "family"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'scalesearch' has no attribute {name!r}")


__all__ = [
    "Cost", "HeadSpec", "NetworkSpec", "Rounding", "SpecError", "StageSpec", "StemSpec", "UserError",
    "base_names", "compound", "count_cost", "family", "get_base", "load_spec", "nominal_ratio",
    "round_channels", "round_depth", "round_resolution", "save_spec", "scale",
]
