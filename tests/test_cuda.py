"""The CUDA path: training on the GPU with bf16 autocast, TF32 and at most one host sync per
step (docs/speed.md); skipped where there is no GPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.errors import ConfigError
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.derive import derive
from nas_mtl.stages.evaluation import resolve_device
from nas_mtl.stages.retrain import retrain
from nas_mtl.stages.search import search
from nas_mtl.stages.sync_count import cuda_syncs
from nas_mtl.study import RetrainConfig, SearchConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_device_falls_back_to_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@cuda
def test_retrain_on_cuda_with_mixed_precision():
    data = load_dataset("synthetic", n_train=512, n_val=128, n_test=128, input_dim=16, groups=[2])
    g = build_space(
        "snr_trans", (16,), {t.name: t.out_dim for t in data.tasks}, subnetworks=3, width=8
    )
    arch = derive(Supernet(g))
    result = retrain(arch, data, RetrainConfig(epochs=2, batch_size=128, device="cuda", amp=True))
    assert result.fit.device.startswith("cuda")
    assert next(result.fit.model.parameters()).is_cuda
    for metrics in result.test.metrics.values():
        assert torch.isfinite(torch.tensor(metrics["mse"]))


def _syncs_per_step(run: Callable[[int], None], steps: int = 4) -> float:
    """Syncs of ``run(steps_per_epoch)`` with 3x the steps minus those with ``steps``, per
    added step (2 epochs): what each step adds, one-time and per-epoch syncs cancelling."""
    counts = []
    for n in (steps, 3 * steps):
        with cuda_syncs() as count:
            run(n)
        counts.append(count[0])
    return (counts[1] - counts[0]) / (2 * 2 * steps)


@cuda
@pytest.mark.parametrize(
    ("space", "inputs", "params"),
    [
        ("gumbel_matrix", "per_task", {"components": 3, "width": 8}),
        ("snr_trans", "shared", {"subnetworks": 3, "width": 8, "noise": "example"}),
    ],
)
def test_a_training_step_waits_for_the_gpu_at_most_once(space, inputs, params):
    full = load_dataset(
        "synthetic", inputs=inputs, n_train=256, n_val=64, n_test=64, input_dim=8, groups=[2, 1]
    )
    out_dims = {t.name: t.out_dim for t in full.tasks}

    def data_for(steps: int) -> Any:
        """Per-task inputs take steps_per_epoch; shared ones make one step per 16 rows."""
        if inputs == "per_task":
            return full
        rows = 16 * steps
        return dataclasses.replace(
            full, train=type(full.train)(full.train.x[:rows], full.train.y[:rows])
        )

    def graph() -> Any:
        torch.manual_seed(0)
        return build_space(space, full.input_shape, out_dims, **params)

    def searching(steps: int) -> None:
        cfg = SearchConfig(epochs=2, batch_size=16, steps_per_epoch=steps, device="cuda")
        search(Supernet(graph(), full.regime), data_for(steps), cfg)

    def retraining(steps: int) -> None:
        arch = derive(Supernet(graph(), full.regime))
        cfg = RetrainConfig(
            epochs=2, batch_size=16, steps_per_epoch=steps, patience=2, device="cuda"
        )
        retrain(arch, data_for(steps), cfg)

    # the search (its gradient-affinity probe every 10 steps included) and the retrain
    for run in (searching, retraining):
        assert _syncs_per_step(run) <= 1.0, run.__name__
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.benchmark


@cuda
def test_search_runs_in_bf16_autocast_on_cuda():
    data = load_dataset("synthetic", n_train=256, n_val=64, n_test=64, input_dim=8, groups=[2])
    g = build_space("snr_trans", (8,), {t.name: t.out_dim for t in data.tasks}, width=8)
    net = Supernet(g)
    seen: list[bool] = []
    hook = lambda module, args, out: seen.append(torch.is_autocast_enabled("cuda"))  # noqa: E731
    net.blocks[-1].gate.register_forward_hook(hook)
    result = search(net, data, SearchConfig(epochs=1, batch_size=64, device="cuda"))
    assert seen and all(seen)  # training steps and validation both in autocast
    assert next(result.supernet.parameters()).is_cuda
