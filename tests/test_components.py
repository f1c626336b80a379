"""Every registered component kind: shapes, instance independence, analytic cost."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas_mtl.model.components import COMPONENTS

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


def test_bad_params_are_named():
    with pytest.raises(Exception, match=r"component kind 'mlp' has no parameter\(s\) \['hiden'\]"):
        COMPONENTS.get("mlp").check((4,), 3, {"hiden": [2]})
    with pytest.raises(Exception, match="needs image input"):
        COMPONENTS.get("conv3x3").check((4,), 3, {})
