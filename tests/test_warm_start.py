"""Warm start: a derived model started from the searched supernet computes what it computed."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.derive import derive
from nas_mtl.stages.retrain import build_model
from nas_mtl.stages.warm_start import warm_start

TASKS = {"a": 1, "b": 1, "c": 2}


def _searched(space: str, shape: tuple[int, ...] = (6,), **params) -> Supernet:
    """A supernet with trained-looking weights and gates that close some edges, not all."""
    torch.manual_seed(0)
    net = Supernet(build_space(space, shape, TASKS, **params))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "log_alpha" in name:  # ẑ strictly inside (0, 1) for some edges, 0 for others
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0 - 0.5)
            elif "logits" in name:  # Gumbel-Matrix: P(on) far from 0.5 either way
                p.copy_(torch.randn(p.shape, generator=gen) * 3.0)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


@pytest.mark.parametrize(
    ("space", "params"),
    [
        ("snr_trans", {"subnetworks": 3, "width": 5}),
        ("gumbel_matrix", {"components": 4, "width": 5}),
        ("mmoe", {"experts": 3, "expert_width": 5}),
        ("snr_trans", {"subnetworks": 2, "width": 4, "layers": 3}),
        # images: grouped convolutions and their batch norms, instance slices of (n·c, ...)
        (
            "gumbel_matrix",
            {"shape": (1, 8, 8), "channels": 3, "image_layers": 2, "strides": [1, 2]},
        ),
    ],
)
def test_warm_started_model_computes_the_searched_supernet(space, params):
    shape = params.pop("shape", (6,))
    net = _searched(space, shape, **params)
    arch = derive(net)
    assert not arch.graph["dead_paths"]  # every kept edge is open in the supernet
    model = build_model(arch, seed=3).eval()
    x = torch.randn(7, *shape)
    before = model(x)
    copied = warm_start(model, net)
    assert copied == sum(p.numel() for p in model.parameters())  # every weight, from the search
    with torch.no_grad():
        want, got = net(x), model(x)
    for task in TASKS:
        torch.testing.assert_close(got[task], want[task], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(before[task], want[task])  # not equal by accident


def test_snr_edges_carry_their_gate_value():
    """A kept SNR-Trans edge's matrix is W·ẑ: the fixed gate 1 replaces ẑ."""
    net = _searched("snr_trans", subnetworks=3, width=5)
    arch = derive(net)
    model = build_model(arch, seed=3)
    warm_start(model, net)
    block = next(b for b in net.blocks if b.gate.kind == "hard_concrete" and not b.is_head)
    z = block.gate.eval_values().detach()[0]
    j, c = next((j, c) for j, c in torch.nonzero(z).tolist() if z[j, c] < 1)
    u, v = block.src[j], block.dst[c]
    mine = next(b for b in model.blocks if v in b.dst)
    torch.testing.assert_close(mine.edge_weight(u, v), block.edge_weight(u, v) * z[j, c])
