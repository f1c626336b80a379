"""Turn a table into float32 features, float32 labels and split assignments, refusing bad data.

Rules (the user data contract in docs/data.md):

* numeric feature columns are standardized with the mean and standard deviation of the
  **training rows only** (no information leaks from validation/test); a constant column is only
  centred;
* categorical columns must be declared and are one-hot encoded over the categories present in
  the file (the vocabulary is input-only information, so a category seen only in the test split
  still gets its own column);
* NaN/inf in a feature, a non-numeric undeclared column or a label that does not fit the task
  type is an error naming the column -- nothing is dropped, filled or guessed;
* a missing label (empty cell, NaN) stays NaN, which removes the row from that task's loss and
  metrics only (:meth:`nas_mtl.tasks.TaskSpec.loss`).

What was fitted (means, standard deviations, vocabularies) is returned as a
:class:`FeatureEncoding`, so that a served model encodes new rows the same way
(``preprocessing.json``, docs/serving.md).

Rows are emitted grouped by split (train, then val, then test; file order inside each split), so
each split is a contiguous slice of one tensor and no copy is made per split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from nas_mtl.errors import ConfigError, DataError, did_you_mean
from nas_mtl.tasks import TaskSpec

__all__ = [
    "SPLIT_NAMES",
    "ColumnEncoding",
    "FeatureEncoding",
    "check_columns",
    "check_fractions",
    "encode_features",
    "parse_labels",
    "random_split",
    "split_from_column",
]

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "validation": 1, "test": 2}


@dataclass(frozen=True)
class ColumnEncoding:
    """How one feature column became model inputs.

    ``numeric``: one input ``(value - mean) / std`` (``std`` 1 for a column constant on the
    training rows); ``categorical``: one 0/1 input per category, in ``categories`` order
    (each category as ``str`` of the value read from the file).
    """

    column: str
    kind: str  # "numeric" | "categorical"
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureEncoding:
    """What :func:`encode_features` fitted, column by column in input order."""

    columns: tuple[ColumnEncoding, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The model's input names: ``column`` or ``column=category``."""
        return tuple(
            name
            for c in self.columns
            for name in (
                [f"{c.column}={v}" for v in c.categories] if c.kind == "categorical" else [c.column]
            )
        )


def _preview(values: Sequence[object], counts: Sequence[int] | None = None, limit: int = 5) -> str:
    items = []
    for i, v in enumerate(values[:limit]):
        text = repr(v.item() if isinstance(v, np.generic) else v)
        items.append(f"{text} ({counts[i]} rows)" if counts is not None else text)
    more = f", ... ({len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(items) + more


def check_columns(frame: pd.DataFrame, names: Sequence[str], *, where: str, what: str) -> None:
    """Raise a :class:`DataError` with did-you-mean for the first name that is not a column."""
    present = set(frame.columns)
    for name in names:
        if name not in present:
            columns = ", ".join(map(str, frame.columns))
            if len(columns) > 300:
                columns = columns[:297] + "..."
            raise DataError(
                f"{where}: {what} column '{name}' not found{did_you_mean(name, frame.columns)}; "
                f"columns: {columns}"
            )


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions: three numbers >= 0, train > 0, summing to 1."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"split_fractions must be three numbers, got {fractions!r}") from None
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or values[0] <= 0:
        raise ConfigError(
            "split_fractions must be three numbers (train, val, test) >= 0 with train > 0, "
            f"got {fractions!r}"
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"split_fractions must sum to 1, got {fractions!r} (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def random_split(n: int, fractions: Sequence[float], seed: int | Sequence[int]) -> np.ndarray:
    """Seeded split codes (0 train, 1 val, 2 test) for ``n`` rows with the given fractions.

    ``seed`` is anything :func:`numpy.random.default_rng` takes, e.g. ``[seed, task_index]``.

    Sizes are ``round(f_train · n)`` and ``round(f_val · n)``; the test split takes the rest.
    """
    f_train, f_val, _ = check_fractions(fractions)
    n_train = int(round(f_train * n))
    n_val = min(int(round(f_val * n)), n - n_train)
    codes = np.full(n, 2, dtype=np.int8)
    perm = np.random.default_rng(seed).permutation(n)
    codes[perm[:n_train]] = 0
    codes[perm[n_train : n_train + n_val]] = 1
    return codes


def split_from_column(series: pd.Series, *, where: str) -> np.ndarray:
    """Split codes from a column of ``train`` / ``val`` (or ``validation``) / ``test`` values."""
    if series.isna().any():
        raise DataError(
            f"{where}: split column '{series.name}' has {int(series.isna().sum())} empty cells; "
            "every row needs train, val or test"
        )
    text = series.astype(str).str.strip().str.lower()
    codes = text.map(_SPLIT_CODES)
    bad = codes.isna()
    if bad.any():
        counts = series[bad].astype(str).value_counts().sort_index()
        raise DataError(
            f"{where}: split column '{series.name}' has values other than train/val/validation/"
            f"test: {_preview(list(counts.index), list(counts.values))}"
        )
    return codes.to_numpy(dtype=np.int8)


def encode_features(
    frame: pd.DataFrame,
    features: Sequence[str],
    categorical: Sequence[str],
    rows: np.ndarray,
    train_rows: int,
    *,
    where: str,
) -> tuple[np.ndarray, tuple[str, ...], FeatureEncoding]:
    """Encode ``frame[features]`` at positions ``rows`` into a float32 matrix, feature names and
    the fitted :class:`FeatureEncoding`.

    ``rows`` lists the frame positions to emit, training rows first (``rows[:train_rows]``):
    standardization statistics come from those only.
    """
    categorical_set = set(categorical)
    non_numeric = [
        c for c in features if c not in categorical_set and not ptypes.is_numeric_dtype(frame[c])
    ]
    if non_numeric:
        examples = []
        for c in non_numeric[:5]:
            value = frame[c].dropna()
            examples.append(f"'{c}' (e.g. {value.iloc[0]!r})" if len(value) else f"'{c}'")
        raise DataError(
            f"{where}: non-numeric feature columns {', '.join(examples)} were not declared "
            "categorical; add them to categorical=[...] (one-hot) or drop them from features"
        )
    problems = []
    for c in features:  # one column at a time: a large table is never held twice as float64
        if c in categorical_set:
            continue
        values = _column(frame, c, rows)
        n_nan = int(np.isnan(values).sum())
        n_inf = int(np.isinf(values).sum())
        if n_nan or n_inf:
            parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "inf")) if n]
            problems.append(f"'{c}' ({', '.join(parts)})")
    if problems:
        raise DataError(
            f"{where}: feature columns contain missing or infinite values: {', '.join(problems)}; "
            "fill or remove them before loading (features are never imputed silently)"
        )
    cat_codes: dict[str, tuple[np.ndarray, list[str]]] = {}
    for c in categorical:
        all_codes, uniques = pd.factorize(frame[c], sort=True)
        codes = all_codes[rows]
        missing = int((codes < 0).sum())
        if missing:
            raise DataError(
                f"{where}: categorical column '{c}' has {missing} missing values; fill them with a "
                "category of your own (e.g. 'unknown') so that the choice is explicit"
            )
        cat_codes[c] = (codes, [str(u) for u in uniques])
    width = sum(len(cat_codes[c][1]) if c in cat_codes else 1 for c in features)
    x = np.zeros((rows.size, width), dtype=np.float32)
    names: list[str] = []
    fitted: list[ColumnEncoding] = []
    for c in features:
        col = len(names)
        if c in cat_codes:
            codes, categories = cat_codes[c]
            x[np.arange(rows.size), col + codes] = 1.0
            names.extend(f"{c}={v}" for v in categories)
            fitted.append(ColumnEncoding(c, "categorical", categories=tuple(categories)))
            continue
        values = _column(frame, c, rows)
        train = values[:train_rows]
        mean = float(train.mean())
        std = float(train.std())
        if std == 0.0:
            logger.info(
                "%s: feature '%s' is constant on the training split; centred only", where, c
            )
            std = 1.0
        x[:, col] = (values - mean) / std
        names.append(c)
        fitted.append(ColumnEncoding(c, "numeric", mean=mean, std=std))
    return x, tuple(names), FeatureEncoding(tuple(fitted))


def _column(frame: pd.DataFrame, name: str, rows: np.ndarray) -> np.ndarray:
    """One numeric feature column at ``rows`` as float64 (NaN for missing)."""
    return frame[name].to_numpy(dtype=np.float64, na_value=np.nan)[rows]


def _binary_values(series: pd.Series, spec: TaskSpec, where: str) -> np.ndarray:
    if ptypes.is_bool_dtype(series) or ptypes.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        present = series.notna()
        text = series[present].astype(str).str.strip().str.lower()
        mapped = text.map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0})
        values = np.full(len(series), np.nan)
        ok = mapped.notna().to_numpy()
        values[np.flatnonzero(present.to_numpy())[ok]] = mapped[ok].to_numpy(dtype=np.float64)
        if not ok.all():
            counts = series[present][~ok].astype(str).value_counts().sort_index()
            raise DataError(
                f"{where}: binary task '{spec.name}' (column '{series.name}') has labels other "
                f"than 0/1 (or True/False): {_preview(list(counts.index), list(counts.values))}"
            )
    _reject(
        values,
        (values != 0) & (values != 1),
        f"{where}: binary task '{spec.name}' (column '{series.name}') has labels other "
        f"than 0/1 (or True/False):",
    )
    return values


def parse_labels(series: pd.Series, spec: TaskSpec, *, where: str) -> np.ndarray:
    """One task's labels as float64 with NaN for missing, checked against the task type."""
    if spec.type == "binary":
        return _binary_values(series, spec, where)
    if not (ptypes.is_numeric_dtype(series) and not ptypes.is_bool_dtype(series)):
        sample = series.dropna()
        example = f" (e.g. {sample.iloc[0]!r})" if len(sample) else ""
        raise DataError(
            f"{where}: {spec.type} task '{spec.name}' needs a numeric label column, but "
            f"'{series.name}' holds {series.dtype} values{example}"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    if spec.type == "regression":
        n_inf = int(np.isinf(values).sum())
        if n_inf:
            raise DataError(
                f"{where}: regression task '{spec.name}' (column '{series.name}') has {n_inf} "
                "infinite labels; leave a label empty to mark it missing"
            )
        return values
    n_classes = spec.out_dim
    _reject(
        values,
        (values != np.round(values)) | (values < 0) | (values >= n_classes),
        f"{where}: multiclass task '{spec.name}' (column '{series.name}') needs integer "
        f"labels 0..{n_classes - 1}, got",
    )
    return values


def _reject(values: np.ndarray, invalid: np.ndarray, message: str) -> None:
    """Raise ``message`` + a preview of the offending labels when a present label is invalid."""
    bad = ~np.isnan(values) & invalid
    if bad.any():
        uniq, counts = np.unique(values[bad], return_counts=True)
        raise DataError(f"{message} {_preview(list(uniq), list(counts))}")
