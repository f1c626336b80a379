"""Per-task data from in-memory arrays: the entry point for users' own images or tensors.

The per-task regime (Gumbel-Matrix, Maziarz et al. 2019) gives each task its own examples, e.g.
one Omniglot alphabet per task. Users with such data in arrays call
:func:`from_per_task_arrays`; the built-in image loaders use it too, so both paths get the same
checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from nas_mtl.data.base import MultiTaskData, PerTaskSplit
from nas_mtl.data.encoding import random_split, split_from_column
from nas_mtl.errors import ConfigError, DataError
from nas_mtl.tasks import TaskSpec

__all__ = ["from_per_task_arrays"]


def _split_codes(split: object, n: int, where: str) -> np.ndarray:
    arr = np.asarray(split)
    if arr.shape != (n,):
        raise DataError(f"{where}: the split array has shape {arr.shape}, expected ({n},)")
    if np.issubdtype(arr.dtype, np.integer):
        bad = (arr < 0) | (arr > 2)
        if bad.any():
            raise DataError(
                f"{where}: integer split codes must be 0 (train), 1 (val) or 2 (test), got "
                f"{sorted(set(arr[bad].tolist()))[:5]}"
            )
        return arr.astype(np.int8)
    return split_from_column(pd.Series(arr, name="split"), where=where)


def from_per_task_arrays(
    name: str,
    tasks: Sequence[TaskSpec],
    x: Sequence[np.ndarray | torch.Tensor],
    y: Sequence[np.ndarray | torch.Tensor],
    *,
    split: Sequence[np.ndarray | Sequence[str]] | None = None,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    check_finite: bool = True,
) -> MultiTaskData:
    """Build per-task :class:`MultiTaskData` from one ``(x, y)`` pair of arrays per task.

    Args:
        name: data set name.
        tasks: one :class:`TaskSpec` per task, in the order of ``x`` and ``y``.
        x: per task, inputs ``(N_t, *input_shape)``; the same ``input_shape`` for every task.
        y: per task, labels ``(N_t,)`` (every example labelled; class ids for multiclass).
        split: per task, ``"train"/"val"/"test"`` strings or codes 0/1/2 for each example; if
            omitted, a seeded split with ``split_fractions`` is drawn inside every task.
        split_fractions: train/val/test fractions for the seeded split.
        seed: seed of that split (task t uses the stream ``[seed, t]``).
        check_finite: reject NaN/inf inputs (one pass over the data; the built-in image
            loaders skip it because their pixels come from integer files).

    Example:
        >>> import numpy as np
        >>> from nas_mtl.tasks import TaskSpec
        >>> rng = np.random.default_rng(0)
        >>> data = from_per_task_arrays(
        ...     "toy", [TaskSpec("a", "binary"), TaskSpec("b", "multiclass", n_classes=3)],
        ...     x=[rng.random((40, 1, 8, 8)), rng.random((30, 1, 8, 8))],
        ...     y=[np.arange(40) % 2, np.arange(30) % 3])
        >>> data.regime, data.input_shape, data.train.sizes()
        ('per_task', (1, 8, 8), (28, 21))
    """
    tasks = tuple(tasks)
    if not (len(tasks) == len(x) == len(y)):
        raise DataError(
            f"data set '{name}': {len(tasks)} tasks, {len(x)} input arrays and {len(y)} label "
            "arrays; give one of each per task"
        )
    if split is not None and len(split) != len(tasks):
        raise DataError(f"data set '{name}': {len(split)} split arrays for {len(tasks)} tasks")
    if not tasks:
        raise ConfigError(f"data set '{name}' has no tasks")
    parts: list[list[torch.Tensor]] = [[], [], []]
    labels: list[list[torch.Tensor]] = [[], [], []]
    input_shape: tuple[int, ...] | None = None
    for t, spec in enumerate(tasks):
        where = f"data set '{name}', task '{spec.name}'"
        xt = torch.as_tensor(x[t]).to(torch.float32)
        yt = torch.as_tensor(y[t])  # float64 labels stay so until standardized (data/targets.py)
        yt = yt if yt.dtype == torch.float64 else yt.to(torch.float32)
        if yt.dim() != 1 or xt.dim() < 2 or xt.shape[0] != yt.shape[0]:
            raise DataError(
                f"{where}: inputs and labels have unequal lengths or wrong ranks: x "
                f"{tuple(xt.shape)}, y {tuple(yt.shape)} (need (N, ...) and (N,))"
            )
        if input_shape is None:
            input_shape = tuple(xt.shape[1:])
        elif tuple(xt.shape[1:]) != input_shape:
            raise DataError(
                f"{where}: input shape {tuple(xt.shape[1:])} differs from the first task's "
                f"{input_shape}; all tasks must share one input shape"
            )
        n_bad = int((~torch.isfinite(xt)).sum()) if check_finite else 0
        if n_bad:
            raise DataError(f"{where}: inputs contain {n_bad} NaN/inf values")
        n_missing = int(torch.isnan(yt).sum())
        if n_missing:
            raise DataError(
                f"{where}: {n_missing} labels are missing (NaN); per-task examples must be labelled"
            )
        n = int(yt.shape[0])
        if split is None:
            codes = random_split(n, split_fractions, seed=[seed, t])
        else:
            codes = _split_codes(split[t], n, where)
        codes_t = torch.from_numpy(codes.astype(np.int64))
        for k in range(3):
            idx = torch.nonzero(codes_t == k).squeeze(1)
            parts[k].append(xt[idx].contiguous())
            labels[k].append(yt[idx].contiguous())
    train, val, test = (PerTaskSplit(tuple(parts[k]), tuple(labels[k])) for k in range(3))
    return MultiTaskData(name, tasks, input_shape or (), train, val, test)
