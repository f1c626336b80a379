"""Per-task metrics and the multi-task summary people expect (``docs/metrics.md``).

Every metric takes ``(y_true, y_pred)`` as NumPy arrays, where ``y_pred`` is the model's **raw
output** -- a value for regression, a logit for binary tasks and a row of logits for multiclass
tasks -- and returns a Python float. Working from logits (not probabilities) keeps log loss and
cross-entropy exact for confident predictions, where ``sigmoid``/``softmax`` would round to 0 or 1.

The multi-task summary follows the convention of Maninis et al. (CVPR 2019) used across the MTL
literature: Δm is the mean relative change of each task's metric against the single-task
(no-sharing) baseline, sign-corrected so that a positive Δm always means "better than no sharing".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from nas_mtl.errors import ConfigError, did_you_mean

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "auc",
    "cross_entropy",
    "delta_m",
    "log_loss",
    "mean_metric",
    "mse",
    "r2",
]


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error of a regression output."""
    y, p = _flat(y_true), _flat(y_pred)
    if y.size == 0:
        return math.nan
    return float(np.mean((p - y) ** 2))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination ``1 - SSE / SST``.

    A constant target has ``SST = 0``: R² is then 1.0 for a perfect prediction and undefined
    (NaN) otherwise, rather than scikit-learn's arbitrary 0.0.
    """
    y, p = _flat(y_true), _flat(y_pred)
    if y.size == 0:
        return math.nan
    sse = float(np.sum((y - p) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst == 0.0:
        return 1.0 if sse == 0.0 else math.nan
    return 1.0 - sse / sst


def auc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """ROC AUC of a binary score (a logit works: AUC only depends on the ranking).

    NaN when only one class is present, since the ROC curve is then undefined.
    """
    y, p = _flat(y_true), _flat(y_pred)
    if y.size == 0 or np.unique(y).size < 2:
        return math.nan
    return float(roc_auc_score(y, p))


def log_loss(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Binary cross-entropy from logits: ``mean(softplus(z) - y * z)``, exact for any logit."""
    y, z = _flat(y_true), _flat(y_pred)
    if y.size == 0:
        return math.nan
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _logits_2d(y_pred: np.ndarray, n: int) -> np.ndarray:
    z = np.asarray(y_pred, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != n:
        raise ValueError(
            f"multiclass metrics need logits of shape (N, C) with N={n}, got {z.shape}"
        )
    return z


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of rows whose arg-max logit is the true class."""
    y = _flat(y_true).astype(np.int64)
    if y.size == 0:
        return math.nan
    z = _logits_2d(y_pred, y.size)
    return float(np.mean(np.argmax(z, axis=1) == y))


def cross_entropy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean softmax cross-entropy from logits (log-sum-exp, so no overflow)."""
    y = _flat(y_true).astype(np.int64)
    if y.size == 0:
        return math.nan
    z = _logits_2d(y_pred, y.size)
    zmax = z.max(axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(z - zmax), axis=1)) + zmax[:, 0]
    return float(np.mean(lse - z[np.arange(y.size), y]))


@dataclass(frozen=True)
class Metric:
    """A metric function and the direction in which it improves (used by Δm and model selection)."""

    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "mse": Metric(mse, higher_is_better=False),
    "r2": Metric(r2, higher_is_better=True),
    "auc": Metric(auc, higher_is_better=True),
    "log_loss": Metric(log_loss, higher_is_better=False),
    "accuracy": Metric(accuracy, higher_is_better=True),
    "cross_entropy": Metric(cross_entropy, higher_is_better=False),
}


def mean_metric(values: Mapping[str, float]) -> float:
    """Unweighted mean of per-task metric values (the papers' "mean test accuracy/AUC")."""
    if not values:
        raise ConfigError("mean_metric needs at least one task value, got an empty mapping")
    return float(np.mean([float(v) for v in values.values()]))


def delta_m(
    values: Mapping[str, float],
    baseline: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δm in percent: ``mean_t s_t · (M_t − B_t) / |B_t| · 100``, ``s_t = +1`` if higher is better.

    ``values`` and ``baseline`` map task name to the task's metric; ``baseline`` holds the
    single-task (no-sharing) results. Positive means the multi-task model beats no sharing.
    """
    if not values:
        raise ConfigError("delta_m needs at least one task value, got an empty mapping")
    terms = []
    for task, value in values.items():
        if task not in baseline:
            raise ConfigError(
                f"delta_m: task '{task}' has no baseline value{did_you_mean(task, baseline)}; "
                f"baseline tasks: {', '.join(baseline) or '(none)'}"
            )
        if task not in higher_is_better:
            raise ConfigError(
                f"delta_m: task '{task}' has no higher_is_better entry"
                f"{did_you_mean(task, higher_is_better)}"
            )
        base = float(baseline[task])
        if base == 0.0:
            raise ConfigError(
                f"delta_m: the baseline of task '{task}' is 0, so its relative change is "
                "undefined; "
                "use a metric whose baseline is non-zero"
            )
        sign = 1.0 if higher_is_better[task] else -1.0
        terms.append(sign * (float(value) - base) / abs(base) * 100.0)
    return float(np.mean(terms))
