"""The CUDA path: retraining on the GPU with bf16 autocast (skipped where there is no GPU)."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.errors import ConfigError
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.derive import derive
from nas_mtl.stages.evaluation import resolve_device
from nas_mtl.stages.retrain import retrain
from nas_mtl.study import RetrainConfig

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
