from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics as skm

from nas_mtl.errors import ConfigError
from nas_mtl.metrics import (
    METRICS,
    accuracy,
    auc,
    cross_entropy,
    delta_m,
    log_loss,
    mean_metric,
    mse,
    r2,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
vectors = arrays(np.float64, st.integers(1, 50), elements=finite)


def test_metric_table_directions() -> None:
    assert {k: m.higher_is_better for k, m in METRICS.items()} == {
        "mse": False,
        "r2": True,
        "auc": True,
        "log_loss": False,
        "accuracy": True,
        "cross_entropy": False,
    }


def test_values_on_a_small_example() -> None:
    y = np.array([0.0, 1.0, 1.0, 0.0])
    z = np.array([-2.0, 3.0, 0.5, 1.0])
    assert mse(y, z) == pytest.approx(np.mean((z - y) ** 2))
    assert auc(y, z) == pytest.approx(skm.roc_auc_score(y, z))
    assert log_loss(y, z) == pytest.approx(skm.log_loss(y, 1 / (1 + np.exp(-z))))
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 3.0, 0.0]])
    labels = np.array([0, 1, 1])
    assert accuracy(labels, logits) == pytest.approx(2 / 3)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert cross_entropy(labels, logits) == pytest.approx(
        skm.log_loss(labels, probs, labels=[0, 1, 2])
    )


def test_auc_with_one_class_is_nan() -> None:
    assert math.isnan(auc(np.ones(5), np.arange(5.0)))


def test_log_loss_is_exact_for_confident_logits() -> None:
    # sigmoid(40) rounds to 1.0 in float64; the logit form still gives softplus(-40) = 4.25e-18.
    assert log_loss(np.array([1.0]), np.array([40.0])) == pytest.approx(np.log1p(np.exp(-40.0)))
    assert log_loss(np.array([0.0]), np.array([800.0])) == pytest.approx(800.0)


def test_empty_inputs_give_nan() -> None:
    for name, metric in METRICS.items():
        pred = np.zeros((0, 3)) if name in ("accuracy", "cross_entropy") else np.zeros(0)
        assert math.isnan(metric.fn(np.zeros(0), pred)), name


@given(vectors)
def test_r2_of_perfect_prediction_is_one(y: np.ndarray) -> None:
    assert r2(y, y) == 1.0
    assert mse(y, y) == 0.0


@settings(deadline=None)
@given(vectors, vectors)
def test_r2_matches_sklearn_when_defined(y: np.ndarray, p: np.ndarray) -> None:
    n = min(y.size, p.size)
    y, p = y[:n], p[:n]
    if n < 2 or np.var(y) < 1e-6:
        return
    assert r2(y, p) == pytest.approx(skm.r2_score(y, p), rel=1e-9, abs=1e-9)


@settings(deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=40), st.data())
def test_auc_is_invariant_to_monotone_transforms(ints: list[int], data: st.DataObject) -> None:
    z = np.array(ints, dtype=np.float64)  # integers: the transform below keeps ties and order
    y = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=z.size, max_size=z.size)))
    value = auc(y, z)
    if np.unique(y).size < 2:
        assert math.isnan(value)
    else:
        assert auc(y, 3.0 * z + 1.0) == pytest.approx(value)


values_dicts = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.floats(0.01, 100, allow_nan=False),
    min_size=1,
)


@settings(deadline=None)
@given(values_dicts, st.data())
def test_delta_m_sign_correction(values: dict[str, float], data: st.DataObject) -> None:
    baseline = {k: data.draw(st.floats(0.01, 100)) for k in values}
    hib = {k: data.draw(st.booleans()) for k in values}
    got = delta_m(values, baseline, hib)
    expected = np.mean(
        [(1 if hib[k] else -1) * (values[k] - baseline[k]) / baseline[k] * 100 for k in values]
    )
    assert got == pytest.approx(expected)
    # Flipping every direction flips the sign; the baseline against itself is 0.
    flipped = {k: not v for k, v in hib.items()}
    assert delta_m(values, baseline, flipped) == pytest.approx(-got)
    assert delta_m(baseline, baseline, hib) == 0.0


@settings(max_examples=50)
@given(st.floats(0.01, 10), st.floats(0.01, 10))
def test_delta_m_lower_is_better_improvement_is_positive(base: float, gain: float) -> None:
    # An MSE that drops from base to base / (1 + gain) is an improvement: Δm > 0.
    assert delta_m({"t": base / (1 + gain)}, {"t": base}, {"t": False}) > 0


def test_delta_m_example_and_negative_baseline() -> None:
    # accuracy 0.9 vs 0.8 (+12.5%), MSE 0.5 vs 1.0 (+50%)
    got = delta_m({"acc": 0.9, "mse": 0.5}, {"acc": 0.8, "mse": 1.0}, {"acc": True, "mse": False})
    assert got == pytest.approx((12.5 + 50.0) / 2)
    # |B| in the denominator: an R² rising from -0.5 to -0.25 is +50%, not -50%.
    assert delta_m({"r": -0.25}, {"r": -0.5}, {"r": True}) == pytest.approx(50.0)


def test_delta_m_errors() -> None:
    with pytest.raises(ConfigError, match=r"task 'incme' has no baseline value \(did you mean"):
        delta_m({"incme": 1.0}, {"income": 1.0}, {"incme": True})
    with pytest.raises(ConfigError, match="task 'a' has no higher_is_better entry"):
        delta_m({"a": 1.0}, {"a": 1.0}, {})
    with pytest.raises(ConfigError, match="baseline of task 'a' is 0"):
        delta_m({"a": 1.0}, {"a": 0.0}, {"a": True})
    with pytest.raises(ConfigError, match="at least one task"):
        delta_m({}, {}, {})


def test_mean_metric() -> None:
    assert mean_metric({"a": 0.5, "b": 1.0}) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="at least one task"):
        mean_metric({})
