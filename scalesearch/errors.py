"""The one base class for bad user input: the CLI prints its message as one line and exits 2.

The public functions refuse bad arguments with it too (``checked_arguments``, ``require``), so
that a caller of the Python API gets the CLI's one clear line, not a TypeError from deep inside.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(ValueError):
    """Bad input from a user (a value, a file, a data set); the message names it."""


def checked_arguments(fn: F) -> F:
    """``fn`` refusing an unknown keyword or a wrong count of arguments with a UserError naming
    it, as the CLI refuses an unknown option, instead of Python's TypeError."""
    signature = inspect.signature(fn)
    name = fn.__qualname__.replace(".__init__", "")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UserError(f"{name}(): {exc}") from None
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def require(ok: bool, function: str, argument: str, value: Any, must: str) -> None:
    """Refuse ``value`` of ``function``'s ``argument`` in one line unless ``ok``."""
    if not ok:
        raise UserError(f"{function}(): {argument} must be {must} (got {value!r})")
