"""Users' own tables: shared-input files (one row, several labels) and per-task files.

Shared input is the MMoE / SNR setting (Ma et al. 2018, 2019): every row is one example with a
label column per task; an empty label removes that row from that task's loss only. A per-task
file holds one example per row plus a column that names its task (each task its own examples,
as in the Gumbel-Matrix setting). Encoding rules live in :mod:`nas_mtl.data.encoding`; the full
contract with worked examples is docs/data.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nas_mtl.data.base import MultiTaskData, PerTaskSplit, SharedSplit
from nas_mtl.data.encoding import (
    check_columns,
    check_fractions,
    encode_features,
    parse_labels,
    random_split,
    split_from_column,
)
from nas_mtl.data.files import read_frame
from nas_mtl.errors import ConfigError, DataError, did_you_mean
from nas_mtl.tasks import TaskSpec

__all__ = ["load_per_task_table", "load_table", "shared_from_frame"]

logger = logging.getLogger(__name__)


def _check_unique(names: Sequence[str], what: str) -> None:
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ConfigError(f"{what} must be unique, repeated: {', '.join(dupes)}")


def _feature_columns(
    frame: pd.DataFrame,
    features: Sequence[str] | None,
    categorical: Sequence[str],
    reserved: dict[str, str],
    where: str,
) -> list[str]:
    """Resolve and check the feature list; ``reserved`` maps label/split/task columns to roles."""
    if isinstance(features, str) or isinstance(categorical, str):
        raise ConfigError("features and categorical must be lists of column names, not a string")
    if features is None:
        features = [c for c in frame.columns if c not in reserved]
    else:
        features = list(features)
        check_columns(frame, features, where=where, what="feature")
        _check_unique(features, "feature columns")
        for c in features:
            if c in reserved:
                raise ConfigError(
                    f"{where}: column '{c}' is the {reserved[c]} and cannot be a feature"
                )
    check_columns(frame, list(categorical), where=where, what="categorical")
    not_features = [c for c in categorical if c not in features]
    if not_features:
        raise ConfigError(
            f"{where}: categorical columns {not_features} are not among the features "
            f"({', '.join(features)})"
        )
    if not features:
        raise DataError(f"{where}: no feature columns left after removing labels and the split")
    return features


def shared_from_frame(
    frame: pd.DataFrame,
    *,
    name: str,
    tasks: Sequence[TaskSpec],
    features: Sequence[str],
    categorical: Sequence[str],
    split_codes: np.ndarray,
    where: str,
) -> MultiTaskData:
    """Encode a checked frame into shared-input :class:`MultiTaskData`.

    ``split_codes`` holds 0/1/2 (train/val/test) per frame row, or -1 to leave a row out.
    The three splits are contiguous slices of one feature tensor.
    """
    specs = tuple(tasks)
    kept = np.flatnonzero(split_codes >= 0)
    rows = kept[np.argsort(split_codes[kept], kind="stable")]
    counts = np.bincount(split_codes[rows], minlength=3)
    if counts[0] == 0:
        raise DataError(f"{where}: the training split is empty")
    x, names, encoding = encode_features(
        frame, features, categorical, rows, int(counts[0]), where=where
    )
    y = np.empty((rows.size, len(tasks)), dtype=np.float32)
    for t, task in enumerate(tasks):
        y[:, t] = parse_labels(frame[task.label_column], task, where=where)[rows]
        if np.isnan(y[: counts[0], t]).all():
            raise DataError(
                f"{where}: task '{task.name}' (column '{task.label_column}') has no labels in the "
                f"training split ({int(counts[0])} training rows, all missing)"
            )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    train, val, test = (
        SharedSplit(xt[bounds[k] : bounds[k + 1]], yt[bounds[k] : bounds[k + 1]]) for k in range(3)
    )
    return MultiTaskData(
        name, specs, (x.shape[1],), train, val, test, feature_names=names, encoding=encoding
    )


def load_table(
    path: str | Path,
    *,
    tasks: Sequence[TaskSpec],
    features: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    split_column: str | None = None,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    name: str | None = None,
    encoding: str = "utf-8",
) -> MultiTaskData:
    """Load a shared-input table (``.csv``, ``.csv.gz``, ``.parquet``, ``.npz``).

    Args:
        path: the file; NPZ holds one 1-D array per column name.
        tasks: one :class:`TaskSpec` per task (its type and ``column``, default its name).
        features: feature columns; default every column that is not a label or the split.
        categorical: feature columns to one-hot encode; other features must be numeric.
        split_column: column of ``train`` / ``val`` (or ``validation``) / ``test`` values;
            without it a seeded split with ``split_fractions`` is drawn.
        split_fractions: train/val/test fractions of the seeded split.
        seed: seed of that split.
        name: data set name (default: the file name without extensions).

    Labels: binary 0/1 (or True/False), multiclass integers ``0..n_classes-1``, regression any
    finite number; an empty cell is a missing label for that task only.

    Example:
        >>> data = load_table("people.csv", categorical=["city"], split_column="split",
        ...     tasks=[TaskSpec("income", "binary", column="high_income"),
        ...            TaskSpec("age", "regression")])  # doctest: +SKIP
    """
    path = Path(path)
    where = str(path)
    tasks = tuple(tasks)
    if not tasks:
        raise ConfigError(f"{where}: give at least one TaskSpec in tasks=[...]")
    _check_unique([t.name for t in tasks], "task names")
    frame = read_frame(path, encoding)
    check_columns(frame, [t.label_column for t in tasks], where=where, what="label")
    reserved = {t.label_column: f"label of task '{t.name}'" for t in tasks}
    if split_column is not None:
        check_columns(frame, [split_column], where=where, what="split")
        if split_column in reserved:
            raise ConfigError(
                f"{where}: column '{split_column}' cannot be both a label and the split"
            )
        reserved[split_column] = "split column"
    feats = _feature_columns(frame, features, categorical, reserved, where)
    if split_column is not None:
        codes = split_from_column(frame[split_column], where=where)
    else:
        codes = random_split(len(frame), split_fractions, seed)
    data = shared_from_frame(
        frame,
        name=name or path.name.split(".")[0],
        tasks=tasks,
        features=feats,
        categorical=categorical,
        split_codes=codes,
        where=where,
    )
    logger.info("loaded %s", data.summary())
    return data


def _per_task_value(value: object, task: str, what: str) -> object:
    if isinstance(value, Mapping):
        if task not in value:
            raise ConfigError(
                f"{what} has no entry for task '{task}'{did_you_mean(task, value)}; "
                f"it has: {', '.join(map(str, value))}"
            )
        return value[task]
    return value


def load_per_task_table(
    path: str | Path,
    *,
    task_column: str,
    label_column: str,
    task_type: str,
    n_classes: int | Mapping[str, int] | None = None,
    tasks: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    metric: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    split_column: str | None = None,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    name: str | None = None,
    encoding: str = "utf-8",
) -> MultiTaskData:
    """Load a per-task table: one example per row, ``task_column`` names the row's task.

    Args:
        path: ``.csv``, ``.csv.gz``, ``.parquet`` or ``.npz`` file.
        task_column: column whose value is the task of the row (read as text).
        label_column: column with the row's label (for its own task).
        task_type: type of every task (``regression``, ``binary`` or ``multiclass``).
        n_classes: for multiclass, one number for all tasks or a ``{task: n}`` mapping.
        tasks: which tasks to load and in which order; default every task, in order of first
            appearance in the file.
        weights: optional ``{task: w_t}``; unnamed tasks weigh 1.
        metric: primary metric of every task (default by type).
        features, categorical: as in :func:`load_table`; encoded over all tasks' rows with
            statistics from the training rows of all tasks.
        split_column: as in :func:`load_table`; without it each task is split on its own
            (seeded, so that every task gets ``split_fractions`` of its rows).
        seed, name: split seed and data set name.

    A row with an empty label is not an example of its task; such rows are left out and their
    number per task is logged (they carry no information in the per-task regime).
    """
    path = Path(path)
    where = str(path)
    frame = read_frame(path, encoding)
    check_columns(frame, [task_column, label_column], where=where, what="task/label")
    if task_column == label_column:
        raise ConfigError(
            f"{where}: task_column and label_column must differ, both are '{task_column}'"
        )
    reserved = {task_column: "task column", label_column: "label column"}
    if split_column is not None:
        check_columns(frame, [split_column], where=where, what="split")
        if split_column in reserved:
            raise ConfigError(
                f"{where}: column '{split_column}' cannot be both the split and the "
                f"{reserved[split_column]}"
            )
        reserved[split_column] = "split column"
    feats = _feature_columns(frame, features, categorical, reserved, where)
    task_values = frame[task_column]
    if task_values.isna().any():
        raise DataError(
            f"{where}: task column '{task_column}' has {int(task_values.isna().sum())} empty "
            "cells; "
            "every row must name its task"
        )
    task_values = task_values.astype(str)
    found = list(pd.unique(task_values))
    if tasks is None:
        names = found
    else:
        if isinstance(tasks, str):
            raise ConfigError("tasks must be a list of task names, not a string")
        names = list(tasks)
        _check_unique(names, "task names")
        for t in names:
            if t not in found:
                raise DataError(
                    f"{where}: task '{t}' has no rows in column '{task_column}'"
                    f"{did_you_mean(t, found)}; tasks in the file: {', '.join(found)}"
                )
    weights = dict(weights or {})
    unknown = [w for w in weights if w not in names]
    if unknown:
        raise ConfigError(f"weights name unknown tasks {unknown}; tasks: {', '.join(names)}")
    specs = tuple(
        TaskSpec(
            t,
            task_type,
            _per_task_value(n_classes, t, "n_classes"),  # type: ignore[arg-type]
            float(weights.get(t, 1.0)),
            metric,
        )
        for t in names
    )
    index_of = {t: i for i, t in enumerate(names)}
    task_ids = task_values.map(index_of).fillna(-1).to_numpy(dtype=np.int64)
    labels = np.full(len(frame), np.nan)
    for t, spec in enumerate(specs):
        rows_t = np.flatnonzero(task_ids == t)
        values = parse_labels(frame[label_column].iloc[rows_t], spec, where=where)
        labels[rows_t] = values
        n_missing = int(np.isnan(values).sum())
        if n_missing:
            logger.info(
                "%s: task '%s' has %d rows without a label; left out", where, spec.name, n_missing
            )
    keep = (task_ids >= 0) & ~np.isnan(labels)
    if split_column is not None:
        codes = split_from_column(frame[split_column], where=where)
    else:
        check_fractions(split_fractions)
        codes = np.full(len(frame), -1, dtype=np.int8)
        for t in range(len(specs)):
            rows_t = np.flatnonzero(keep & (task_ids == t))
            codes[rows_t] = random_split(rows_t.size, split_fractions, seed=[seed, t])
    codes = np.where(keep, codes, -1).astype(np.int8)
    kept = np.flatnonzero(codes >= 0)
    rows = kept[np.argsort(codes[kept], kind="stable")]
    n_train = int((codes[rows] == 0).sum())
    for t, spec in enumerate(specs):
        if not ((task_ids[rows] == t) & (codes[rows] == 0)).any():
            raise DataError(
                f"{where}: task '{spec.name}' has no labelled rows in the training split"
            )
    x, feature_names, encoding = encode_features(
        frame, feats, categorical, rows, n_train, where=where
    )
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(labels[rows].astype(np.float32))
    row_task, row_code = (
        torch.from_numpy(task_ids[rows]),
        torch.from_numpy(codes[rows].astype(np.int64)),
    )
    splits = []
    for k in range(3):
        xs, ys = [], []
        for t in range(len(specs)):
            idx = torch.nonzero((row_task == t) & (row_code == k)).squeeze(1)
            xs.append(xt[idx])
            ys.append(yt[idx])
        splits.append(PerTaskSplit(tuple(xs), tuple(ys)))
    data = MultiTaskData(
        name or path.name.split(".")[0],
        specs,
        (x.shape[1],),
        *splits,
        feature_names=feature_names,
        encoding=encoding,
    )
    logger.info("loaded %s", data.summary())
    return data
