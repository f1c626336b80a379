"""Every registered component kind: shapes, instance independence, analytic cost."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas_mtl.model.components import COMPONENTS, BatchedTowers

IMAGE_IN, FLAT_IN = (4, 9, 9), (6,)


def _case(name):
    kind = COMPONENTS.get(name)
    shape = FLAT_IN if kind.image is False else IMAGE_IN
    keeps = name in ("identity", "activation", "maxpool3x3", "avgpool3x3")
    width = shape[0] if keeps else 5
    params = {"stride": 2} if kind.image and "stride" in kind.allowed_params else {}
    return kind, shape, width, params


@pytest.mark.parametrize("name", COMPONENTS.names())
def test_batched_forward_backward_shapes(name):
    kind, shape, width, params = _case(name)
    kind.check(shape, width, params)
    module = kind.build(3, shape, width, params)
    x = torch.randn(7, 3, *shape, requires_grad=True)
    y = module(x)
    assert y.shape == (7, 3, *kind.out_shape(shape, width, params))
    assert torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", COMPONENTS.names())
def test_instances_are_independent(name):
    kind, shape, width, params = _case(name)
    module = kind.build(3, shape, width, params).eval()
    x = torch.randn(5, 3, *shape)
    x2 = x.clone()
    x2[:, 0] += 1.0
    y, y2 = module(x), module(x2)
    torch.testing.assert_close(y[:, 1:], y2[:, 1:])  # changing instance 0 leaves 1, 2 alone


@pytest.mark.parametrize("name", COMPONENTS.names())
def test_analytic_macs_and_params_match_the_module(name):
    kind, shape, width, params = _case(name)
    module = kind.build(2, shape, width, params).eval()
    with FlopCounterMode(display=False) as counter:
        module(torch.randn(3, 2, *shape))
    assert counter.get_total_flops() == 2 * 3 * 2 * kind.macs(shape, width, params)
    assert sum(p.numel() for p in module.parameters()) == 2 * kind.num_params(shape, width, params)


def test_shared_input_fast_path_equals_bmm_path():
    kind = COMPONENTS.get("mlp")
    module = kind.build(4, (6,), 5, {"hidden": [7]})
    x = torch.randn(3, 1, 6)
    fused = module(x.expand(3, 4, 6))  # stride-0 instance axis: one fused matmul
    looped = module(x.repeat(1, 4, 1))  # materialized copy: batched matmul
    torch.testing.assert_close(fused, looped)


def test_towers_read_a_shared_input_like_its_copies():
    """Shared-Bottom towers: (N, 1, d) unexpanded, expanded with stride 0, or copied k times
    give the same outputs and the same input and weight gradients, for all heads or some."""
    towers = BatchedTowers(3, 6, [4], [1, 2, 3], "relu")
    base = torch.randn(5, 1, 6)
    for idx in (None, torch.tensor([2, 0])):
        k = 3 if idx is None else 2
        runs = []
        for make in (
            lambda b, k=k: b,
            lambda b, k=k: b.expand(5, k, 6),
            lambda b, k=k: b.repeat(1, k, 1),
        ):
            x = base.clone().requires_grad_(True)
            towers.zero_grad()
            y = towers(make(x), idx)
            (y * torch.arange(y.numel()).view_as(y)).sum().backward()
            runs.append((y, x.grad, towers.hidden[0].weight.grad.clone()))
        for y, gx, gw in runs[1:]:
            torch.testing.assert_close(y, runs[0][0])
            torch.testing.assert_close(gx, runs[0][1])
            torch.testing.assert_close(gw, runs[0][2])


def test_bad_params_are_named():
    with pytest.raises(Exception, match=r"component kind 'mlp' has no parameter\(s\) \['hiden'\]"):
        COMPONENTS.get("mlp").check((4,), 3, {"hiden": [2]})
    with pytest.raises(Exception, match="needs image input"):
        COMPONENTS.get("conv3x3").check((4,), 3, {})
