"""Declarative checks for configuration dataclasses.

Every config's ``__post_init__`` states its rules with these three checkers, so a bad
value fails the same way everywhere: a :class:`~simlabel.errors.ConfigError` (a
``ValueError``) that names the field, the value and what was expected::

    def __post_init__(self) -> None:
        one_of(self.kind, KINDS, "kind")
        positive_int(self.k, "k")
        in_range(self.alpha, "alpha", 0, 1)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from simlabel.errors import ConfigError

__all__ = ["in_range", "one_of", "positive_int"]


def one_of(value: Any, options: Iterable[Any], name: str) -> Any:
    """Return ``value`` if it is one of ``options``, else raise naming them all."""
    opts = tuple(options)
    if value not in opts:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, opts))}; got {value!r}")
    return value


def positive_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an integer ``>= minimum`` (``bool`` is not an integer here)."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}; got {value!r}")
    return value


def in_range(
    value: Any,
    name: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_none: bool = False,
) -> Any:
    """Return ``value`` if it is a real number in the interval ``[lo, hi]`` (ends open on request).

    NaN is never in range.
    """
    if value is None and allow_none:
        return value
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    interval = f"{left}{lo:g}, {hi:g}{right}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ConfigError(f"{name} must be a number in {interval}; got {value!r}")
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        raise ConfigError(f"{name} must be in {interval}; got {value!r}")
    return value
