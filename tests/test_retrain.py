"""The retrain's length rule: enough steps to converge on small data sets (stages/retrain.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nas_mtl.data import load_dataset
from nas_mtl.stages.retrain import with_min_steps
from nas_mtl.study import RetrainConfig


@pytest.fixture(scope="module")
def shared():
    return load_dataset("synthetic", n_train=512, n_val=64, n_test=64, input_dim=8, groups=[2])


def test_short_retrains_run_enough_epochs_with_patience_stretched_alike(shared):
    four_steps = RetrainConfig(epochs=2, batch_size=128, patience=1, min_steps=100)
    stretched = with_min_steps(four_steps, shared)  # 512 rows: 4 steps per epoch
    assert (stretched.epochs, stretched.patience) == (25, 13)  # 12.5 epochs rounded up
    assert replace(stretched, epochs=2, patience=1) == four_steps  # nothing else changes


def test_long_enough_retrains_are_left_alone(shared):
    cfg = RetrainConfig(epochs=30, batch_size=128, min_steps=100)
    assert with_min_steps(cfg, shared) is cfg
    assert with_min_steps(replace(cfg, epochs=2, min_steps=0), shared).epochs == 2


def test_per_task_rows_count_steps_over_the_tasks_batches():
    per_task = load_dataset(
        "synthetic", n_train=256, n_val=64, n_test=64, input_dim=8, groups=[2], inputs="per_task"
    )
    cfg = RetrainConfig(epochs=1, batch_size=64, patience=1, min_steps=40)
    assert with_min_steps(cfg, per_task).epochs == 10  # 4 steps of 64 rows per epoch
    assert with_min_steps(replace(cfg, steps_per_epoch=20), per_task).epochs == 2
