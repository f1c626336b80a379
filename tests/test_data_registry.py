"""Every registered data set loads by name, batches correctly and rejects unknown parameters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nas_mtl.data import (
    DATASETS,
    MultiTaskData,
    dataset_params,
    load_dataset,
    per_task_batches,
    resolve_data_dir,
    shared_batches,
    task_batches,
)
from nas_mtl.errors import ConfigError

# Small parameters per data set, so that the parametrized tests stay fast; a new data set must
# add an entry here (test_every_data_set_has_small_params).
SMALL = {
    "synthetic": {"n_train": 64, "n_val": 16, "n_test": 16},
    "census_income": {"subsample": 300},
    "omniglot": {"alphabets": ["Angelic", "Keble"]},
    "mnist_family": {"n_per_task": 100},
    "domain_clusters": {"per_domain": 1, "n_per_task": 100},
}


def test_registered_names() -> None:
    assert DATASETS.names() == sorted(SMALL)
    assert DATASETS.describe("census_income").startswith("UCI Census-Income")


def test_every_data_set_has_small_params() -> None:
    assert set(DATASETS) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_params_are_flat_and_documented(name: str) -> None:
    params = dataset_params(name)
    for key, default in params.items():
        flat = default is None or isinstance(default, (int, float, str))
        flat = flat or (
            isinstance(default, (list, tuple))
            and all(isinstance(v, (int, float, str)) for v in default)
        )
        assert flat, f"{name}.{key} default {default!r} is not a flat value"
        assert key in (DATASETS.get(name).__doc__ or ""), (
            f"{name}: parameter {key} is not documented"
        )


@pytest.mark.parametrize("name", sorted(SMALL))
def test_loads_and_batches(name: str, data_dir: Path) -> None:
    data = load_dataset(name, data_dir=data_dir, seed=1, **SMALL[name])
    assert isinstance(data, MultiTaskData)
    assert data.summary().startswith(data.name)
    gen = torch.Generator().manual_seed(0)
    t_count = len(data.tasks)
    if data.regime == "shared":
        x, y = next(shared_batches(data.train, 8, shuffle=True, generator=gen))
        assert x.shape == (8, *data.input_shape) and y.shape == (8, t_count)
    else:
        x, y = next(per_task_batches(data.train, 8, steps=1, generator=gen))
        assert x.shape == (t_count, 8, *data.input_shape) and y.shape == (t_count, 8)
    for t, spec in enumerate(data.tasks):
        xb, yb = next(task_batches(data.val, t, 4))
        assert xb.shape[1:] == data.input_shape and yb.dim() == 1
        out = torch.zeros(xb.shape[0], spec.out_dim)
        assert math.isfinite(spec.loss(out, yb).item())
        assert set(spec.evaluate(out, yb)) >= {spec.primary_metric}
    again = load_dataset(name, data_dir=data_dir, seed=1, **SMALL[name])
    first = data.train.x if data.regime == "shared" else data.train.x[0]
    second = again.train.x if again.regime == "shared" else again.train.x[0]
    assert torch.equal(first, second)  # deterministic given the seed


def test_unknown_data_set_and_parameter() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown data set 'omniglt' \(did you mean 'omniglot'\?\); known: census_income",
    ):
        load_dataset("omniglt")
    with pytest.raises(
        ConfigError,
        match=r"unknown parameter 'image_sise' for data set 'omniglot' "
        r"\(did you mean 'image_size'\?\); accepted: alphabets, image_size \(plus data_dir, seed\)",
    ):
        load_dataset("omniglot", image_sise=28)
    with pytest.raises(ConfigError, match="seed must be an integer, got seed='1'"):
        load_dataset("synthetic", seed="1")


def test_dataset_params_defaults() -> None:
    assert dataset_params("census_income") == {"group": 1, "subsample": None}
    assert dataset_params("omniglot") == {"alphabets": None, "image_size": 28}
    assert dataset_params("synthetic")["rho"] == 0.9


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAS_MTL_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("NAS_MTL_DATA_DIR")
    assert resolve_data_dir(None) == Path("data")
