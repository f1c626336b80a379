"""Argument checks for the built-in loaders, with messages that state the rule, value and fix.

Loader parameters come straight from study files, so a wrong type or range must read as a
user error (:class:`~nas_mtl.errors.ConfigError`), never as a traceback deep inside NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nas_mtl.errors import ConfigError, did_you_mean

__all__ = ["check_choice", "check_float", "check_int", "check_names"]


def check_int(
    dataset: str, name: str, value: object, *, minimum: int, optional: bool = False
) -> None:
    """``value`` must be an int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or null" if optional else ""
        raise ConfigError(
            f"data set '{dataset}': {name} must be an integer >= {minimum}{none}, "
            f"got {name}={value!r}"
        )


def check_float(
    dataset: str, name: str, value: object, *, low: float, high: float, low_open: bool = False
) -> None:
    """``value`` must be a real number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(
            f"data set '{dataset}': {name} must be a number in {bracket}{low:g}, {high:g}], "
            f"got {name}={value!r}"
        )


def check_choice(dataset: str, name: str, value: object, choices: Sequence[str]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"data set '{dataset}': {name} must be one of {', '.join(map(repr, choices))}, got "
            f"{name}={value!r}{did_you_mean(str(value), choices)}"
        )


def check_names(dataset: str, name: str, values: object, choices: Sequence[str]) -> list[str]:
    """``values`` must be a non-empty list of distinct names, each one of ``choices``."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ConfigError(
            f"data set '{dataset}': {name} must be a non-empty list of names, got {name}={values!r}"
        )
    out = [str(v) for v in values]
    for v in out:
        if v not in choices:
            raise ConfigError(
                f"data set '{dataset}': unknown {name[:-1] if name.endswith('s') else name} "
                f"'{v}'{did_you_mean(v, choices)}; choose from: {', '.join(choices)}"
            )
    repeated = sorted({v for v in out if out.count(v) > 1})
    if repeated:
        raise ConfigError(f"data set '{dataset}': {name} lists {repeated} more than once")
    return out
