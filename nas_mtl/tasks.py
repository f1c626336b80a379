"""Task specifications: what each head predicts, how it is trained and how it is scored.

A :class:`TaskSpec` fixes the task type, the loss ``L_t`` and its weight ``w_t`` in the
multi-task objective ``Σ_t w_t L_t (+ λ · L0)`` (``docs/metrics.md``), and its metrics. Missing
labels are NaN in the target: the loss and the metrics use the labelled rows only, so a row
without a label for task t contributes to the other tasks and to nothing of task t.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.metrics import METRICS, delta_m, mean_metric

__all__ = [
    "DEFAULT_METRIC",
    "METRICS_BY_TYPE",
    "TASK_TYPES",
    "MultiTaskSummary",
    "TaskSpec",
    "summarize",
]

TASK_TYPES = ("regression", "binary", "multiclass")

# The metrics each task type reports (docs/metrics.md); the first one is the default primary metric.
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "regression": ("mse", "r2"),
    "binary": ("auc", "log_loss"),
    "multiclass": ("accuracy", "cross_entropy"),
}
DEFAULT_METRIC = {kind: names[0] for kind, names in METRICS_BY_TYPE.items()}


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task problem.

    Args:
        name: unique task name (used in reports and study files).
        type: one of ``TASK_TYPES``.
        n_classes: number of classes (>= 2) for ``multiclass``; must be ``None`` otherwise.
        weight: ``w_t`` in the objective ``Σ_t w_t L_t``; 0 keeps a task for evaluation only.
        metric: primary metric for model selection and Δm; defaults to MSE, AUC or accuracy.
        column: where a table holds the task's labels (default: the task name). One type
            describes a task from study file to head: the study parser, the table loaders
            and the model all use it.

    Example:
        >>> TaskSpec("income", "binary").primary_metric
        'auc'
        >>> TaskSpec("digit", "multiclass", n_classes=10).out_dim
        10
    """

    name: str
    type: str = "regression"
    n_classes: int | None = None
    weight: float = 1.0
    metric: str | None = None
    column: str | None = None  # the label column in a table; default: the task name

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a task name must be a non-empty string, got name={self.name!r}")
        if self.type not in TASK_TYPES:
            raise ConfigError(
                f"task '{self.name}': type must be one of {', '.join(TASK_TYPES)}, "
                f"got type={self.type!r}{did_you_mean(str(self.type), TASK_TYPES)}"
            )
        if self.type == "multiclass":
            if (
                isinstance(self.n_classes, bool)
                or not isinstance(self.n_classes, int)
                or self.n_classes < 2
            ):
                raise ConfigError(
                    f"task '{self.name}': a multiclass task needs n_classes >= 2, "
                    f"got n_classes={self.n_classes!r}"
                )
        elif self.n_classes is not None:
            raise ConfigError(
                f"task '{self.name}': n_classes is only for multiclass tasks, got "
                f"n_classes={self.n_classes!r} for a {self.type} task; leave it unset"
            )
        weight = float(self.weight)
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(
                f"task '{self.name}': weight must be a finite number >= 0, "
                f"got weight={self.weight!r}"
            )
        allowed = METRICS_BY_TYPE[self.type]
        if self.metric is not None and self.metric not in allowed:
            raise ConfigError(
                f"task '{self.name}': metric must be one of {', '.join(allowed)} for a {self.type} "
                f"task, got metric={self.metric!r}{did_you_mean(str(self.metric), allowed)}"
            )

    @property
    def label_column(self) -> str:
        return self.column or self.name

    @property
    def out_dim(self) -> int:
        """Width of the task head's output: one value/logit, or one logit per class."""
        return self.n_classes if self.type == "multiclass" else 1  # type: ignore[return-value]

    @property
    def primary_metric(self) -> str:
        return self.metric or DEFAULT_METRIC[self.type]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.primary_metric].higher_is_better

    def _check(self, output: Tensor, target: Tensor) -> Tensor:
        if target.dim() != 1:
            raise ValueError(
                f"task '{self.name}': target must be 1-D (B,), got {tuple(target.shape)}"
            )
        if output.dim() == 1 and self.out_dim == 1:
            output = output.unsqueeze(1)
        if output.dim() != 2 or output.shape != (target.shape[0], self.out_dim):
            raise ValueError(
                f"task '{self.name}': output must have shape (B, {self.out_dim}) with "
                f"B={target.shape[0]}, got {tuple(output.shape)}"
            )
        return output

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the labelled rows (``target`` NaN = missing).

        Computed branch-free (per-row loss, masked sum, divided by the labelled count) so that it
        never synchronises a GPU. With no labelled row the result is a zero that keeps the graph
        (like ``output.sum() * 0``): backward still runs and adds nothing for this task.
        """
        output = self._check(output, target)
        present = ~torch.isnan(target)
        filled = torch.where(
            present, target, torch.zeros((), dtype=target.dtype, device=target.device)
        )
        if self.type == "regression":
            rows = (output[:, 0] - filled.to(output.dtype)) ** 2
        elif self.type == "binary":
            rows = F.binary_cross_entropy_with_logits(
                output[:, 0], filled.to(output.dtype), reduction="none"
            )
        else:
            rows = F.cross_entropy(output, filled.long(), reduction="none")
        rows = torch.where(present, rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
        return rows.sum() / present.sum().clamp(min=1).to(rows.dtype)

    def evaluate(self, output: Tensor, target: Tensor) -> dict[str, float]:
        """All metrics of this task type on the labelled rows (AUC with one class present: NaN)."""
        output = self._check(output, target)
        present = ~torch.isnan(target)
        y = target[present].detach().cpu().double().numpy()
        out = output[present].detach().cpu().double().numpy()
        pred = out if self.type == "multiclass" else out[:, 0]
        return {name: METRICS[name].fn(y, pred) for name in METRICS_BY_TYPE[self.type]}


@dataclass(frozen=True)
class MultiTaskSummary:
    """The multi-task summary (``docs/metrics.md``) for one evaluation.

    ``primary`` maps task name to its primary metric; ``delta_m`` is ``None`` without a baseline.
    """

    primary: dict[str, float]
    mean: float
    delta_m: float | None


def summarize(
    tasks: Sequence[TaskSpec],
    results: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]] | None = None,
) -> MultiTaskSummary:
    """Mean primary metric and Δm (against single-task ``baseline`` results, if given).

    ``results`` and ``baseline`` map task name to the dict returned by :meth:`TaskSpec.evaluate`.
    """
    names = [t.name for t in tasks]

    def primary_of(source: Mapping[str, Mapping[str, float]], what: str) -> dict[str, float]:
        out = {}
        for task in tasks:
            if task.name not in source:
                raise ConfigError(
                    f"{what} has no entry for task '{task.name}'; it has: "
                    f"{', '.join(source) or '(none)'}"
                )
            if task.primary_metric not in source[task.name]:
                raise ConfigError(
                    f"{what} for task '{task.name}' lacks its primary metric "
                    f"'{task.primary_metric}'; it has: {', '.join(source[task.name])}"
                )
            out[task.name] = float(source[task.name][task.primary_metric])
        return out

    primary = primary_of(results, "results")
    dm = None
    if baseline is not None:
        base = primary_of(baseline, "baseline")
        dm = delta_m(primary, base, {t.name: t.higher_is_better for t in tasks})
    return MultiTaskSummary(
        primary={n: primary[n] for n in names}, mean=mean_metric(primary), delta_m=dm
    )
