"""Regression targets in the model's units: each task standardized on its training labels.

Why: a model's heads start near 0 and every loss enters one sum ``Σ_t w_t L_t``. With labels in
a user's units (a mean of 1000, a scale of 100) the first epochs are spent learning the means
and the tasks on the largest scale dominate the sum, so the same task set in other units gave
12-18x worse models (``docs/data.md``, "Regression targets"). So every run trains on
``(y - mean_t) / std_t``, with ``mean_t`` and ``std_t`` fitted on task t's labelled training
rows (float64, population std; a constant task keeps std 1), and everything a user reads is
mapped back to the user's units ``mean_t + std_t · output``: metrics, reports, ``predict`` and
the exported model. Losses, the validation objective and the constant prediction's objective
stay in the model's units, where a task's MSE is its share of unexplained variance.

Labels may arrive as float64 (the ``synthetic`` generator, arrays a user passes as float64):
they are standardized in float64 and only then stored as float32, so the same labels in other
units (``y · 100 + 1000``) give the same float32 training targets, bit for bit in all but a
few rows in a million, and the same run (float32 storage first would round ``1000 + 100 y``
to ~6e-5, a 1e-6 perturbation of every standardized label, enough to move a retrain's test
MSE by tens of percent: the zoo's "units Δ" column measured that; docs/data.md).

Binary and multiclass labels are class codes and are never rescaled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from nas_mtl.data.base import MultiTaskData, PerTaskSplit, SharedSplit, task_labels

__all__ = ["TargetScale", "fit_target_scales", "standardize_targets"]


@dataclass(frozen=True)
class TargetScale:
    """``user = mean + std · model`` for one regression task."""

    mean: float
    std: float

    def to_user(self, values: Tensor) -> Tensor:
        """Model units to the user's, in float64 (metrics and predictions are computed there)."""
        return values.double() * self.std + self.mean

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def _scale_of(y: Tensor) -> TargetScale:
    present = y[~torch.isnan(y)].double()
    mean = float(present.mean())
    std = float(present.std(correction=0)) if present.numel() > 1 else 0.0
    return TargetScale(mean, std if std > 0 and math.isfinite(std) else 1.0)


def fit_target_scales(data: MultiTaskData) -> dict[str, TargetScale]:
    """Each regression task's scale from its labelled training rows (the data checks ensure
    every task has some)."""
    return {
        spec.name: _scale_of(task_labels(data.train, t))
        for t, spec in enumerate(data.tasks)
        if spec.type == "regression"
    }


def _rescaled(
    split: SharedSplit | PerTaskSplit, index: Mapping[int, TargetScale]
) -> SharedSplit | PerTaskSplit:
    def scaled(y: Tensor, s: TargetScale) -> Tensor:
        return ((y.double() - s.mean) / s.std).float()

    if isinstance(split, SharedSplit):
        y = split.y.to(torch.float32, copy=True)  # class codes and NaN are exact in float32
        for t, s in index.items():
            y[:, t] = scaled(split.y[:, t], s)
        return SharedSplit(split.x, y)
    ys = tuple(scaled(y, index[t]) if t in index else y.float() for t, y in enumerate(split.y))
    return PerTaskSplit(split.x, ys)


def standardize_targets(data: MultiTaskData) -> MultiTaskData:
    """``data`` with every regression task's labels in the model's units (float32), its
    scales kept in ``data.targets``; data already standardized come back as they are, so
    calling this twice is harmless."""
    if data.targets is not None:
        return data
    scales = fit_target_scales(data)
    index = {t: scales[spec.name] for t, spec in enumerate(data.tasks) if spec.name in scales}
    return dataclasses.replace(
        data,
        train=_rescaled(data.train, index),
        val=_rescaled(data.val, index),
        test=_rescaled(data.test, index),
        targets=scales,
    )
