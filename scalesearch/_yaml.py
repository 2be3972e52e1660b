"""YAML read the way users write numbers.

PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent: ``5e-4``, ``1E-3``
and ``1e5`` are read as text, so ``--set train.weight_decay=5e-4`` (the default's own value)
was refused as "must be a number".  ``load`` reads YAML 1.2's float forms as floats; every
other scalar is read as PyYAML reads it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2 (core schema) floats with an exponent, which YAML 1.1's resolver leaves as text.
_EXPONENT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with the exponent floats added (its own resolver table, so PyYAML's is untouched)."""


_Loader.yaml_implicit_resolvers = {key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789."))


def load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``5e-4``, ``1E-3`` and ``1e5`` as floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
