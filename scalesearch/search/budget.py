"""Budgets as users write them: a ratio to the base (``2x``), a count (``800M``, ``1.6G``) or,
for latency, a time (``12ms``, ``0.5s``, ``800us``).  Pure parsing: no torch."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import UserError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TEXT_SUFFIX = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


@dataclass(frozen=True)
class Budget:
    """A budget as a ratio to the base (``2x``) or an absolute count (``800M``)."""

    value: float
    is_ratio: bool

    def absolute(self, base_value: float) -> float:
        return self.value * base_value if self.is_ratio else self.value

    def text(self) -> str:
        """The budget as ``parse_budget`` reads it back exactly: '2x', '800M', '1.6G'."""
        if self.is_ratio:
            forms = [f"{self.value:g}x", f"{self.value!r}x"]
        else:
            forms = [f"{self.value / mult:g}{suffix}" for suffix, mult in _TEXT_SUFFIX if self.value >= mult]
            forms += [f"{self.value:.0f}", repr(self.value)]
        return next(t for t in forms if parse_budget(t) == self)

    def __str__(self) -> str:
        return self.text()


def parse_budget(text: str | float, option: str = "--target-flops") -> Budget:
    """'2x' -> ratio 2; '800M', '1.6G', '5e8' -> absolute.  Errors name the option and value.

    Refused: anything else, zero, and numbers that are not finite (nan, inf, or an
    overflow such as '1e400x').
    """
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*([xX]|[kKmMgGtT]?)", raw)
    if not match:
        if raw.lower().rstrip("xkmgt").lstrip("+-") in ("nan", "inf", "infinity"):
            raise UserError(f"{option} must be a finite number (got '{raw}')")
        raise UserError(f"{option} must be a ratio like 2x or a count like 800M, 1.6G (got '{raw}')")
    unit = match.group(2).lower()
    return _checked(float(match.group(1)) * (1.0 if unit == "x" else _SUFFIX[unit]), unit == "x", raw, option)


def _checked(value: float, is_ratio: bool, raw: str, option: str) -> Budget:
    if not math.isfinite(value):
        raise UserError(f"{option} is too large to be a number (got '{raw}')")
    if value <= 0:
        raise UserError(f"{option} must be positive (got '{raw}')")
    return Budget(value, is_ratio)


_TIME_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_time(text: str | float, option: str = "--target-latency") -> Budget:
    """A latency budget: '2x' -> a ratio to the base's latency; '12ms', '0.5s', '800us' -> an
    absolute time, in milliseconds.  A bare number is refused (a unit says what it means)."""
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*(x|X|us|ms|s)", raw)
    if not match:
        raise UserError(f"{option} must be a ratio like 2x or a time like 12ms, 0.5s, 800us (got '{raw}')")
    unit = match.group(2).lower()
    return _checked(float(match.group(1)) * (1.0 if unit == "x" else _TIME_UNIT[unit]), unit == "x", raw, option)
