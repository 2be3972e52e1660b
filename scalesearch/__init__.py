"""scalesearch: compound model scaling (Tan & Le, ICML 2019) as a general tool.

The sub-packages follow the paper: ``net`` (Eq. 1, the network as data, and Eq. 3, the
scaler), ``measure`` (the torch builder; measured FLOPs, params, activations), ``train``
(short training), ``study`` (a run as trials, and its folder), ``search`` (step 1, the phi = 1
grid search, and step 2, the family), ``report`` (plots and curves), ``data``, ``reproduce``
(Table 3, Figure 8) and ``cli``; docs/architecture.md draws them.
"""

from . import reproduce as _module  # the module loads first, so that the name below stays the function
from .api import reproduce  # the function, as ``family`` and ``curves``: never the module of that name
from .net.bases import base_names, get_base
from .report.curves import curves
from .errors import UserError
from .search.family import family
from .net.scaling import Rounding, compound, nominal_ratio, round_channels, round_depth, round_resolution, scale
from .net.spec import HeadSpec, NetworkSpec, SpecError, StageSpec, StemSpec, load_spec, save_spec

del _module

try:  # one version, pyproject.toml's, as installed
    from importlib.metadata import version as _version

    __version__ = _version("scalesearch")
except Exception:  # noqa: BLE001 - not installed (a source tree on sys.path)
    __version__ = "0+unknown"

# Torch-side names load on first use, so specs and the scaler stay importable without torch.
_LAZY = {"Cost": "measure.cost", "count_cost": "measure.cost", "build": "measure.models", "run_grid": "search.grid",
         "SearchSettings": "settings", "load_settings": "settings", "create_model": "api",
         "export_member": "api", "load_model": "api", "measure": "api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # the function, not the submodule of the same name, from now on
        return value
    raise AttributeError(f"module 'scalesearch' has no attribute {name!r}")


__all__ = [
    "Cost", "HeadSpec", "NetworkSpec", "Rounding", "SearchSettings", "SpecError", "StageSpec", "StemSpec",
    "UserError", "base_names", "build", "compound", "count_cost", "create_model", "curves", "export_member",
    "family", "get_base", "load_model", "load_settings", "load_spec", "measure", "nominal_ratio", "reproduce",
    "round_channels", "round_depth", "round_resolution", "run_grid", "save_spec", "scale",
]
