"""Resumable checkpoints at most every ``checkpoint_every_s`` seconds, and the best one kept."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.checkpoint import load_checkpoint
from nas_mtl.stages.training import TrainConfig, train


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=128, n_val=32, n_test=32, input_dim=8, groups=[2])


def _fit(data, tmp_path, every: float, resume: bool = False):
    torch.manual_seed(0)
    dims = {t.name: t.out_dim for t in data.tasks}
    net = Supernet(build_space("shared_bottom", data.input_shape, dims))
    cfg = TrainConfig(
        epochs=5, batch_size=32, lr=1e-2, patience=50, keep_checkpoints=2, checkpoint_every_s=every
    )
    return train(net, data, cfg, checkpoint_dir=tmp_path, stem="retrain", resume=resume)


@pytest.mark.parametrize(
    ("every", "epoch_files"),
    [(1e9, ["retrain_epoch_004.pt"]), (0.0, ["retrain_epoch_003.pt", "retrain_epoch_004.pt"])],
)
def test_checkpoints_by_time_keep_the_last_epoch_and_the_best_model(
    data, tmp_path, every, epoch_files
):
    result = _fit(data, tmp_path, every)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["retrain_best.pt", *epoch_files]  # one interval never passed: the end only
    best = load_checkpoint(tmp_path / "retrain_best.pt")
    assert best["epoch"] == result.best_epoch
    for name, value in result.model.state_dict().items():
        assert torch.equal(best["model"][name], value), name
    assert load_checkpoint(tmp_path / epoch_files[-1])["done"] is True


def test_a_run_checkpointed_by_time_resumes_to_the_same_model(data, tmp_path):
    first = _fit(data, tmp_path, 1e9)
    again = _fit(data, tmp_path, 1e9, resume=True)
    assert again.best_epoch == first.best_epoch
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name
