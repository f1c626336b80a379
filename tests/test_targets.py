"""Regression targets in the model's units, results in the user's (nas_mtl.data.targets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.data import (
    MultiTaskData,
    PerTaskSplit,
    SharedSplit,
    load_dataset,
    standardize_targets,
)
from nas_mtl.data.base import task_labels
from nas_mtl.pipeline import run_study
from nas_mtl.stages.evaluation import constant_objective
from nas_mtl.study import parse_study
from nas_mtl.tasks import TaskSpec


def _shared(y_train: torch.Tensor) -> MultiTaskData:
    tasks = (TaskSpec("a"), TaskSpec("b", "binary"), TaskSpec("c"))
    n = y_train.shape[0]
    split = SharedSplit(torch.randn(n, 3), y_train)
    return MultiTaskData("t", tasks, (3,), split, split, split)


def test_each_regression_task_is_standardized_on_its_labelled_training_rows():
    g = torch.Generator().manual_seed(0)
    y = torch.stack(
        [
            torch.randn(200, generator=g) * 50 + 1000,
            (torch.rand(200, generator=g) > 0.5).float(),
            torch.randn(200, generator=g) * 1e-2 - 3,
        ],
        dim=1,
    )
    y[::7, 2] = float("nan")  # missing labels stay missing and do not enter the scale
    data = standardize_targets(_shared(y))
    assert set(data.targets) == {"a", "c"}  # class labels are never rescaled
    z = data.train.y
    for t in (0, 2):
        col = z[:, t][~torch.isnan(z[:, t])].double()
        assert abs(float(col.mean())) < 1e-5 and abs(float(col.std(correction=0)) - 1) < 1e-5
    assert torch.equal(z[:, 1], y[:, 1])
    assert torch.equal(torch.isnan(z[:, 2]), torch.isnan(y[:, 2]))
    s = data.targets["c"]
    present = ~torch.isnan(y[:, 2])
    torch.testing.assert_close(s.to_user(z[present, 2]), y[present, 2].double(), rtol=1e-6, atol=0)
    assert standardize_targets(data) is data  # twice is once


def test_a_constant_task_keeps_std_one_and_per_task_splits_are_scaled_per_task():
    xs = (torch.randn(5, 2), torch.randn(8, 2))
    ys = (torch.full((5,), 7.0), torch.arange(8.0) * 10)
    split = PerTaskSplit(xs, ys)
    data = MultiTaskData("p", (TaskSpec("k"), TaskSpec("r")), (2,), split, split, split)
    scaled = standardize_targets(data)
    assert scaled.targets["k"].mean == 7.0 and scaled.targets["k"].std == 1.0
    assert torch.equal(scaled.train.y[0], torch.zeros(5))
    assert scaled.targets["r"].mean == pytest.approx(35.0)
    assert scaled.targets["r"].std == pytest.approx(float(ys[1].double().std(correction=0)))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    scale=st.floats(1e-3, 1e4),
    offset=st.floats(-1e4, 1e4),
    seed=st.integers(0, 2**16),
)
def test_labels_in_other_units_give_the_same_model_units(scale, offset, seed):
    """An affine change of units a·y + b (a > 0) leaves the trained-on labels unchanged up to
    float32 rounding of the given labels, so training does not see the units."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(64, 3, generator=g)
    y[:, 1] = (y[:, 1] > 0).float()
    moved = y.clone()
    moved[:, [0, 2]] = y[:, [0, 2]] * scale + offset
    a, b = standardize_targets(_shared(y)), standardize_targets(_shared(moved))
    # rounding of the given float32 labels: |b| ulps relative to the label spread a·std
    tol = 4e-7 * (1 + abs(offset) / scale) + 1e-6
    torch.testing.assert_close(a.train.y, b.train.y, rtol=0, atol=tol)


@pytest.mark.parametrize("inputs", ["shared", "per_task"])
def test_float64_labels_in_other_units_give_the_same_float32_targets(inputs):
    """Labels that stay float64 until standardized (the generator's, a user's float64 arrays)
    reach the model's units with their precision: y · 100 + 1000 changes at most a few rows in
    a million, by one float32 ulp (float32 labels first would move every row by ~1e-6)."""

    def targets(**units) -> torch.Tensor:
        data = load_dataset(
            "synthetic",
            seed=1,
            n_train=5000,
            n_val=5,
            n_test=5,
            input_dim=8,
            groups=[2, 2],
            inputs=inputs,
            binary=[1],
            **units,
        )
        assert task_labels(data.train, 0).dtype == torch.float64
        y = standardize_targets(data).train.y
        return y if inputs == "shared" else torch.stack(y, dim=1)

    plain, moved = targets(), targets(label_scale=100.0, label_offset=1000.0)
    assert plain.dtype == moved.dtype == torch.float32
    differ = plain != moved
    assert int(differ.sum()) <= 2
    ulp = torch.finfo(torch.float32).eps * plain.abs().clamp(min=1.0)
    assert bool(((plain - moved).abs() <= ulp).all())


def test_the_constant_objective_is_one_per_regression_task_whatever_the_units():
    data = standardize_targets(
        load_dataset(
            "synthetic",
            seed=0,
            n_train=400,
            n_val=400,
            n_test=10,
            groups=[2],
            label_scale=100.0,
            label_offset=1000.0,
        )
    )
    # the constant predicts the training mean: validation MSE in the model's units ~ 1 each
    assert constant_objective(data) == pytest.approx(2.0, rel=0.25)


def _units_study(scale: float, offset: float) -> dict:
    return {
        "name": "units",
        "spaces": ["shared_bottom", "snr_trans"],
        "seeds": [0],
        "data": {
            "name": "synthetic",
            "params": {
                "n_train": 300,
                "n_val": 200,
                "n_test": 400,
                "input_dim": 8,
                "groups": [2, 2],
                "label_scale": scale,
                "label_offset": offset,
            },
        },
        "space_params": {"shared_bottom": {"width": 16}, "snr_trans": {"width": 8}},
        "search": {"epochs": 3, "batch_size": 64},
        "retrain": {"epochs": 4, "batch_size": 64},
    }


def _standardized_mse(report: dict, out, space: str) -> dict[str, float]:
    result = next(r for r in report["results"] if r["space"] == space)
    pre = json.loads((out / f"default/{space}/seed_0/preprocessing.json").read_text())
    std = {t["name"]: t["target"]["std"] for t in pre["tasks"]}
    return {name: v["test"] / std[name] ** 2 for name, v in result["tasks"].items()}


def test_label_units_change_no_metric_in_standardized_units(tmp_path):
    """Issue 25's check: every label × 100 + 1000 moves no test MSE in standardized units
    by more than 5%; the user-unit MSE is then 10^4 times larger."""
    base = run_study(parse_study(_units_study(1.0, 0.0)), tmp_path / "a")
    moved = run_study(parse_study(_units_study(100.0, 1000.0)), tmp_path / "b")
    for space in ("shared_bottom", "snr_trans"):
        a = _standardized_mse(base, tmp_path / "a", space)
        b = _standardized_mse(moved, tmp_path / "b", space)
        for task in a:
            assert b[task] == pytest.approx(a[task], rel=0.05), (space, task)
        raw_a = next(r for r in base["results"] if r["space"] == space)["tasks"]
        raw_b = next(r for r in moved["results"] if r["space"] == space)["tasks"]
        ratio = np.array([raw_b[t]["test"] / raw_a[t]["test"] for t in raw_a])
        assert np.allclose(ratio, 1e4, rtol=0.05)
