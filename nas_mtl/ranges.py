"""Ranges of the numbers in a study: checked when the study is parsed, before any work.

A bad value (``epochs = 0``, ``lr = 0``, a negative penalty weight) would otherwise train
nothing, or train the wrong thing, and still report a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from nas_mtl.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]
AT_LEAST_1: Rule = (lambda v: v >= 1, "an integer >= 1")
AT_LEAST_0: Rule = (lambda v: v >= 0, "an integer >= 0")
POSITIVE: Rule = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE: Rule = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
UNIT: Rule = (lambda v: -1 <= v <= 1, "a number between -1 and 1")  # a cosine
# the training loop's settings, shared by [search] and [retrain]
TRAINING_RULES: dict[str, Rule] = {
    "epochs": AT_LEAST_1,
    "batch_size": AT_LEAST_1,
    "steps_per_epoch": AT_LEAST_1,
    "patience": AT_LEAST_1,
    "weight_decay": NON_NEGATIVE,
    "threads": AT_LEAST_0,
    "checkpoint_every_s": NON_NEGATIVE,
}


def check_ranges(where: str, cfg: Any, rules: Mapping[str, Rule]) -> None:
    """Every number in range before any work starts: one message naming the field and range."""
    for name, (ok, need) in rules.items():
        value = getattr(cfg, name)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue  # optional and unset, or a type error reported by the parser
        if not ok(value):
            raise ConfigError(f"{where} {name} must be {need}, got {name} = {value!r}")
