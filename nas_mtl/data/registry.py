"""The registry of built-in data sets and the one function that loads any of them by name.

A built-in loader is a function registered with ``@DATASETS.register(name)`` whose keyword
arguments are exactly the parameters a study file may set (plus ``data_dir`` and ``seed``), so an
unknown key is found by comparing against the function's signature (STYLE: a study file maps
onto the code one to one).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas_mtl.data.base import MultiTaskData
from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.registry import Registry

__all__ = ["DATASETS", "dataset_params", "load_dataset"]

logger = logging.getLogger(__name__)

DATASETS: Registry[Callable[..., MultiTaskData]] = Registry("data set")

_COMMON = ("data_dir", "seed")


def dataset_params(name: str) -> dict[str, Any]:
    """The parameters a built-in data set accepts (besides ``data_dir``, ``seed``) and defaults."""
    loader = DATASETS.get(name)
    return {
        p.name: p.default
        for p in inspect.signature(loader).parameters.values()
        if p.name not in _COMMON
    }


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, seed: int = 0, **params: Any
) -> MultiTaskData:
    """Load the built-in data set ``name`` with loader parameters ``params``.

    Example:
        >>> data = load_dataset("synthetic", n_train=64, n_val=16, n_test=16, groups=[2])
        >>> data.task_names, data.input_shape
        (('g0_t0', 'g0_t1'), (100,))
    """
    loader = DATASETS.get(name)
    accepted = dataset_params(name)
    for key in params:
        if key not in accepted:
            raise ConfigError(
                f"unknown parameter '{key}' for data set '{name}'{did_you_mean(key, accepted)}; "
                f"accepted: {', '.join(accepted)} (plus data_dir, seed)"
            )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got seed={seed!r}")
    data = loader(data_dir=data_dir, seed=seed, **params)
    logger.info("loaded %s", data.summary())
    return data
