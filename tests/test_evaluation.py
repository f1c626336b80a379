"""Scoring: the constant predictor that every retrained model must beat (docs/metrics.md)."""

from __future__ import annotations

import math

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.stages.evaluation import constant_objective, constant_output
from nas_mtl.tasks import TaskSpec


def test_constant_outputs_are_the_mean_and_the_log_priors():
    y = torch.tensor([1.0, 3.0, float("nan"), 5.0])
    assert constant_output(TaskSpec("r", "regression"), y).item() == pytest.approx(3.0)
    p = constant_output(TaskSpec("b", "binary"), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert p.item() == pytest.approx(math.log(0.25 / 0.75))
    logp = constant_output(TaskSpec("m", "multiclass", 3), torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(logp.exp(), torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64) / 6)


def test_constant_objective_is_the_validation_spread_about_the_training_mean():
    data = load_dataset("synthetic", n_train=200, n_val=100, n_test=10, input_dim=4, groups=[2])
    want = 0.0
    for i in range(2):
        mean = data.train.y[:, i].double().mean()
        want += float(((data.val.y[:, i].double() - mean) ** 2).mean())
    assert constant_objective(data) == pytest.approx(want, rel=1e-5)
