"""Census-Income (KDD) on the real files: sizes from the data README, labels from the raw file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nas_mtl.data import MultiTaskData, load_dataset
from nas_mtl.errors import ConfigError, DataError

N_TRAIN, N_TEST = 199_523, 99_762  # data README
# Counted independently in the raw files (pandas value_counts of columns 41, 7 and 4).
TRAIN_INCOME_POS, TEST_INCOME_POS = 12_382, 6_186
TRAIN_NEVER_MARRIED, TEST_NEVER_MARRIED = 86_485, 43_143
TRAIN_COLLEGE = 27_820 + 19_865 + 6_541 + 5_358 + 4_363 + 1_793 + 1_263


@pytest.fixture(scope="module")
def group1(data_dir: Path) -> MultiTaskData:
    return load_dataset("census_income", data_dir=data_dir, group=1)


def test_group1_sizes_labels_and_features(group1: MultiTaskData) -> None:
    data = group1
    assert data.name == "census_income_group1"
    assert data.regime == "shared"
    assert data.task_names == ("income_50k", "never_married")
    assert all(t.type == "binary" and t.primary_metric == "auc" for t in data.tasks)
    assert len(data.train) == N_TRAIN
    assert (len(data.val), len(data.test)) == (N_TEST // 2, N_TEST - N_TEST // 2)
    assert data.train.x.shape == (N_TRAIN, 503) and data.train.x.dtype == torch.float32
    assert data.input_shape == (503,) and len(data.feature_names) == 503
    assert data.train.x.is_contiguous() and data.val.x.is_contiguous()
    # labels: train = the train file, val + test = the test file
    assert int(data.train.y[:, 0].sum()) == TRAIN_INCOME_POS
    assert int(data.train.y[:, 1].sum()) == TRAIN_NEVER_MARRIED
    assert int(data.val.y[:, 0].sum() + data.test.y[:, 0].sum()) == TEST_INCOME_POS
    assert int(data.val.y[:, 1].sum() + data.test.y[:, 1].sum()) == TEST_NEVER_MARRIED
    assert not torch.isnan(data.train.y).any()
    # label columns removed from the inputs, the instance weight dropped
    names = data.feature_names
    assert not any(n.startswith(("income", "marital_status", "instance_weight")) for n in names)
    assert "education=Bachelors degree(BA AB BS)" in names
    assert names[:2] == ("age", "class_of_worker=Federal government")
    # numeric columns standardized on the training split; one-hot rows hold one 1 per column
    numeric = [names.index(c) for c in ("age", "wage_per_hour", "weeks_worked", "capital_gains")]
    x = data.train.x[:, numeric].double()
    torch.testing.assert_close(x.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(4, dtype=torch.float64), atol=1e-4, rtol=0)
    onehot = [i for i, n in enumerate(names) if "=" in n]
    assert len(onehot) == 503 - 7
    n_categorical = len({names[i].split("=")[0] for i in onehot})
    assert n_categorical == 32
    assert torch.all(data.test.x[:, onehot].sum(1) == n_categorical)


def test_group2_and_subsample(data_dir: Path) -> None:
    data = load_dataset("census_income", data_dir=data_dir, group=2, subsample=500, seed=1)
    assert data.task_names == ("education_college", "never_married")
    assert (len(data.train), len(data.val), len(data.test)) == (500, 500, 500)
    assert data.input_shape == (488,)
    assert not any(n.startswith(("education=", "marital_status=")) for n in data.feature_names)
    assert any(n.startswith("income=") for n in data.feature_names)
    again = load_dataset("census_income", data_dir=data_dir, group=2, subsample=500, seed=1)
    assert torch.equal(data.train.x, again.train.x)


def test_group2_education_label_count(data_dir: Path) -> None:
    data = load_dataset("census_income", data_dir=data_dir, group=2)
    assert int(data.train.y[:, 0].sum()) == TRAIN_COLLEGE
    assert len(data.train) == N_TRAIN


def test_val_test_split_is_seeded(data_dir: Path, group1: MultiTaskData) -> None:
    other = load_dataset("census_income", data_dir=data_dir, subsample=None, seed=5)
    assert torch.equal(other.train.x, group1.train.x)  # the train file is never split
    assert not torch.equal(other.val.y, group1.val.y)
    both = torch.cat([other.val.y, other.test.y]).sum(0)
    np.testing.assert_array_equal(both.numpy(), [TEST_INCOME_POS, TEST_NEVER_MARRIED])


def test_missing_file_names_path_and_source(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("census_income", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "census_income" / "census-income-train.csv.gz") in message
    assert "UCI Machine Learning Repository" in message
    assert "--data-dir" in message and "NAS_MTL_DATA_DIR" in message


def test_bad_params() -> None:
    with pytest.raises(ConfigError, match="group must be 1 or 2, got group=3"):
        load_dataset("census_income", group=3)
    with pytest.raises(
        ConfigError, match="subsample must be an integer >= 1 or null, got subsample=0"
    ):
        load_dataset("census_income", subsample=0)
