from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.errors import ConfigError
from nas_mtl.tasks import TASK_TYPES, TaskSpec, summarize


def spec_of(kind: str) -> TaskSpec:
    return TaskSpec(kind, kind, n_classes=4 if kind == "multiclass" else None)


def test_defaults_and_shapes() -> None:
    assert TASK_TYPES == ("regression", "binary", "multiclass")
    reg, binary, multi = (spec_of(k) for k in TASK_TYPES)
    assert (reg.out_dim, binary.out_dim, multi.out_dim) == (1, 1, 4)
    assert (reg.primary_metric, binary.primary_metric, multi.primary_metric) == (
        "mse",
        "auc",
        "accuracy",
    )
    assert (reg.higher_is_better, binary.higher_is_better, multi.higher_is_better) == (
        False,
        True,
        True,
    )
    assert TaskSpec("r", "regression", metric="r2").higher_is_better is True
    assert TaskSpec("b", "binary", metric="log_loss").higher_is_better is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "t", "type": "binary_"}, r"type must be one of .* got type='binary_' \(did you"),
        (
            {"name": "t", "type": "multiclass"},
            "multiclass task needs n_classes >= 2, got n_classes=None",
        ),
        ({"name": "t", "type": "multiclass", "n_classes": 1}, "n_classes >= 2, got n_classes=1"),
        ({"name": "t", "type": "binary", "n_classes": 2}, "n_classes is only for multiclass tasks"),
        ({"name": "t", "type": "binary", "weight": -1.0}, "weight must be a finite number >= 0"),
        ({"name": "t", "type": "binary", "weight": float("nan")}, "weight must be a finite"),
        ({"name": "t", "type": "binary", "metric": "mse"}, "metric must be one of auc, log_loss"),
        ({"name": "", "type": "binary"}, "task name must be a non-empty string"),
    ],
)
def test_invalid_specs(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskSpec(**kwargs)


def _reference_loss(spec: TaskSpec, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    keep = ~torch.isnan(target)
    out, target = out[keep], target[keep]
    if spec.type == "regression":
        return F.mse_loss(out[:, 0], target)
    if spec.type == "binary":
        return F.binary_cross_entropy_with_logits(out[:, 0], target)
    return F.cross_entropy(out, target.long())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(TASK_TYPES), st.integers(1, 30), st.integers(0, 2**31 - 1), st.data())
def test_loss_ignores_missing_rows_exactly(
    kind: str, n: int, seed: int, data: st.DataObject
) -> None:
    spec = spec_of(kind)
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(n, spec.out_dim, generator=g)
    if kind == "regression":
        target = torch.randn(n, generator=g)
    else:
        target = torch.randint(spec.out_dim if kind == "multiclass" else 2, (n,), generator=g)
        target = target.float()
    missing = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    target[missing] = float("nan")
    loss = spec.loss(out, target)
    if bool(missing.all()):
        assert loss.item() == 0.0
    else:
        torch.testing.assert_close(loss, _reference_loss(spec, out, target), rtol=1e-6, atol=1e-7)
    # Gradients flow to labelled rows only.
    out.requires_grad_(True)
    spec.loss(out, target).backward()
    assert torch.all(out.grad[missing] == 0)


@pytest.mark.parametrize("kind", TASK_TYPES)
def test_loss_without_labels_is_a_zero_with_grad_path(kind: str) -> None:
    spec = spec_of(kind)
    out = torch.randn(3, spec.out_dim, requires_grad=True)
    loss = spec.loss(out, torch.full((3,), float("nan")))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(out.grad, torch.zeros_like(out))


def test_loss_accepts_flat_output_for_scalar_heads() -> None:
    spec = TaskSpec("r", "regression")
    out, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0])
    assert spec.loss(out, target).item() == pytest.approx(0.5)


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match=r"output must have shape \(B, 4\) with B=2, got \(2, 3\)"):
        spec_of("multiclass").loss(torch.zeros(2, 3), torch.zeros(2))


def test_evaluate_uses_labelled_rows_only() -> None:
    binary = TaskSpec("b", "binary")
    out = torch.tensor([[-1.0], [2.0], [0.5], [9.0]])
    target = torch.tensor([0.0, 1.0, float("nan"), 0.0])
    got = binary.evaluate(out, target)
    assert set(got) == {"auc", "log_loss"}
    assert got["auc"] == pytest.approx(0.5)  # scores -1 (neg), 2 (pos), 9 (neg)
    z, y = np.array([-1.0, 2.0, 9.0]), np.array([0.0, 1.0, 0.0])
    assert got["log_loss"] == pytest.approx(np.mean(np.logaddexp(0, z) - y * z))
    multi = TaskSpec("m", "multiclass", n_classes=3)
    res = multi.evaluate(torch.eye(3) * 5, torch.tensor([0.0, 1.0, float("nan")]))
    assert res["accuracy"] == 1.0 and set(res) == {"accuracy", "cross_entropy"}
    reg = TaskSpec("r", "regression").evaluate(torch.ones(2, 1), torch.ones(2))
    assert reg == {"mse": 0.0, "r2": 1.0}
    one_class = binary.evaluate(torch.zeros(2, 1), torch.ones(2))
    assert math.isnan(one_class["auc"])


def test_summarize_mean_and_delta_m() -> None:
    tasks = [TaskSpec("inc", "binary"), TaskSpec("age", "regression")]
    results = {"inc": {"auc": 0.9, "log_loss": 0.3}, "age": {"mse": 0.5, "r2": 0.5}}
    baseline = {"inc": {"auc": 0.8, "log_loss": 0.4}, "age": {"mse": 1.0, "r2": 0.0}}
    s = summarize(tasks, results, baseline)
    assert s.primary == {"inc": 0.9, "age": 0.5}
    assert s.mean == pytest.approx(0.7)
    assert s.delta_m == pytest.approx((12.5 + 50.0) / 2)
    assert summarize(tasks, results).delta_m is None
    with pytest.raises(ConfigError, match="baseline has no entry for task 'age'"):
        summarize(tasks, results, {"inc": baseline["inc"]})
