from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nas_mtl.data import load_dataset, synthetic_sinusoids, synthetic_task_weights
from nas_mtl.errors import ConfigError

SMALL = {"n_train": 200, "n_val": 50, "n_test": 50}


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.3, 1.0])
def test_anchor_weights_have_cosine_rho_inside_and_zero_across_groups(rho: float) -> None:
    groups = [3, 2, 1]
    w = synthetic_task_weights(20, groups, rho, c=2.5, seed=7)
    assert w.shape == (6, 20)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 2.5)
    members = [[0, 1, 2], [3, 4], [5]]
    for group in members:
        anchor = group[0]
        for j in group[1:]:
            assert cos(w[anchor], w[j]) == pytest.approx(rho, abs=1e-12)
        for i, j in itertools.combinations(group[1:], 2):  # the MMoE anchor form: ρ² off-anchor
            assert cos(w[i], w[j]) == pytest.approx(rho**2, abs=1e-12)
    for ga, gb in itertools.combinations(members, 2):
        for i, j in itertools.product(ga, gb):
            assert cos(w[i], w[j]) == pytest.approx(0.0, abs=1e-12)


def test_equicorrelated_weights_have_cosine_rho_for_every_pair() -> None:
    w = synthetic_task_weights(30, [4, 3], 0.6, within_group="equicorrelated", seed=1)
    for group in ([0, 1, 2, 3], [4, 5, 6]):
        for i, j in itertools.combinations(group, 2):
            assert cos(w[i], w[j]) == pytest.approx(0.6, abs=1e-12)
    for i, j in itertools.product(range(4), range(4, 7)):
        assert cos(w[i], w[j]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="within_group='equicorrelated' needs rho >= 0"):
        synthetic_task_weights(30, [2], -0.5, within_group="equicorrelated")


def test_targets_follow_the_formula() -> None:
    params = {"input_dim": 10, "groups": [2, 1], "rho": 0.8, "m": 3, "sinusoids": "index"}
    data = load_dataset("synthetic", seed=4, noise=0.0, **SMALL, **params)
    w = synthetic_task_weights(10, [2, 1], 0.8, seed=4)
    alpha, beta = synthetic_sinusoids(3, "index")
    np.testing.assert_array_equal(alpha, [1, 2, 3])
    np.testing.assert_array_equal(beta, [0, 1, 4])
    x = data.train.x.double().numpy()
    z = x @ w.T
    expected = z + sum(np.sin(a * z + b) for a, b in zip(alpha, beta, strict=True))
    np.testing.assert_allclose(data.train.y.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_per_task_inputs_give_each_task_its_own_rows_with_the_same_formula() -> None:
    params = {"input_dim": 10, "groups": [2, 1], "rho": 0.8, "m": 3, "noise": 0.0}
    data = load_dataset("synthetic", seed=4, inputs="per_task", **SMALL, **params)
    assert data.regime == "per_task" and data.train.sizes() == (SMALL["n_train"],) * 3
    assert not torch.equal(data.train.x[0], data.train.x[1])  # distinct inputs per task
    w = synthetic_task_weights(10, [2, 1], 0.8, seed=4)
    alpha, beta = synthetic_sinusoids(3, "normal", 4)
    for t in range(3):
        z = data.test.x[t].double().numpy() @ w[t]
        expected = z + sum(np.sin(a * z + b) for a, b in zip(alpha, beta, strict=True))
        np.testing.assert_allclose(data.test.y[t].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_noise_has_the_requested_scale() -> None:
    a = load_dataset("synthetic", seed=0, noise=0.0, n_train=4000, n_val=1, n_test=1, groups=[1])
    b = load_dataset("synthetic", seed=0, noise=0.5, n_train=4000, n_val=1, n_test=1, groups=[1])
    assert float((b.train.y - a.train.y).std()) == pytest.approx(0.5, rel=0.05)


def test_shapes_names_and_determinism() -> None:
    data = load_dataset("synthetic", seed=3, **SMALL)
    assert data.task_names == ("g0_t0", "g0_t1", "g1_t0", "g1_t1")
    assert all(t.type == "regression" for t in data.tasks)
    assert data.input_shape == (100,)
    assert data.train.x.shape == (200, 100) and data.train.y.shape == (200, 4)
    assert (len(data.val), len(data.test)) == (50, 50)
    again = load_dataset("synthetic", seed=3, **SMALL)
    other = load_dataset("synthetic", seed=4, **SMALL)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(data, split).x, getattr(again, split).x)
        assert torch.equal(getattr(data, split).y, getattr(again, split).y)
    assert not torch.equal(data.train.x, other.train.x)
    # Sizes do not change the task weights or the other splits.
    bigger = load_dataset("synthetic", seed=3, n_train=300, n_val=50, n_test=50)
    assert torch.equal(bigger.val.x, data.val.x)
    assert torch.equal(bigger.train.x[:200], data.train.x)
    normal_a, normal_b = synthetic_sinusoids(10, "normal", seed=3)
    assert normal_a.shape == normal_b.shape == (10,)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"groups": []}, r"groups must be a non-empty list of task counts per group"),
        ({"groups": [2, 0]}, r"groups must be a non-empty list"),
        ({"rho": 1.5}, r"rho must be a number in \[-1, 1\], got rho=1.5"),
        ({"sinusoids": "idx"}, r"sinusoids must be one of 'normal', 'index', got sinusoids='idx'"),
        ({"input_dim": 3, "groups": [2, 2]}, r"need 4 orthonormal vectors but input_dim=3"),
        ({"n_train": 0}, r"n_train must be an integer >= 1, got n_train=0"),
        ({"noise": -1.0}, r"noise must be a number in \[0, inf\]"),
        ({"c": 0.0}, r"c must be a number in \(0, inf\]"),
    ],
)
def test_invalid_params(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset("synthetic", **{**SMALL, **params})


@pytest.mark.parametrize("inputs", ["shared", "per_task"])
def test_label_units_and_binary_tasks_keep_the_same_task_set(inputs):
    """Other units scale and shift the regression labels; a binary task is 1[y > 0] of the
    same target; inputs and every other label stay as they were."""
    kw = dict(n_train=300, n_val=50, n_test=50, input_dim=8, groups=[2, 2], inputs=inputs)
    plain = load_dataset("synthetic", **kw)
    other = load_dataset("synthetic", **kw, label_scale=100.0, label_offset=1000.0, binary=[1])
    assert [t.type for t in other.tasks] == ["regression", "binary", "regression", "regression"]
    for split in ("train", "val", "test"):
        a, b = getattr(plain, split), getattr(other, split)
        ya = [a.y[:, t] for t in range(4)] if inputs == "shared" else list(a.y)
        yb = [b.y[:, t] for t in range(4)] if inputs == "shared" else list(b.y)
        for t in (0, 2, 3):
            torch.testing.assert_close(yb[t], ya[t] * 100 + 1000, rtol=1e-6, atol=1e-3)
        assert torch.equal(yb[1], (ya[1] > 0).float())
        assert 0.05 < float(yb[1].mean()) < 0.95  # both classes present
        xa = a.x if inputs == "shared" else a.x[0]
        xb = b.x if inputs == "shared" else b.x[0]
        assert torch.equal(xa, xb)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"binary": [4]}, "binary must be a list of distinct task indices in 0..3"),
        ({"binary": [0, 0]}, "binary must be a list of distinct task indices"),
        ({"binary": "0"}, "binary must be a list"),
        ({"label_scale": 0.0}, "label_scale"),
        ({"label_offset": float("nan")}, "label_offset"),
    ],
)
def test_bad_label_parameters_name_the_rule(params, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset(
            "synthetic", n_train=8, n_val=4, n_test=4, input_dim=8, groups=[2, 2], **params
        )
