"""The search's constraints in expectation: usage, open fraction and multiply-adds."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.model.cost import graph_costs
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.stages.budget import MacsModel, expected_open_fraction, expected_usage
from nas_mtl.stages.derive import (
    derive,
    derive_edges,
    derived_macs,
    open_fraction,
)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=64, n_val=16, n_test=16, input_dim=8, groups=[2])


def _net(data, space, **kw):
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return Supernet(build_space(space, data.input_shape, out_dims, **kw))


def _decided(net, seed):
    """Every gate variable pushed to a random extreme: open probabilities are 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.where(torch.rand(p.shape, generator=gen) < 0.5, 30.0, -30.0))
        for _, _, gate in learned_gates(net):
            if gate.kind == "gumbel":  # (on, off) logit pairs: decide on the first alone
                gate.logits[..., 1] = 0.0
    return net


@pytest.mark.parametrize(
    "space, kw",
    [
        ("snr_trans", {"subnetworks": 3, "width": 4}),
        ("snr_aver", {"subnetworks": 3, "width": 4}),
        ("gumbel_matrix", {"components": 3, "width": 4}),
    ],
)
def test_expected_usage_matches_the_derived_architecture_for_decided_gates(data, space, kw):
    checked = 0
    for seed in range(40):  # three draws in which every task keeps a path of its own
        net = _decided(_net(data, space, **kw), seed)
        derived = derive_edges(net)
        if derived.dead:  # a dead task keeps a fallback path that no gate opened
            continue
        usage = expected_usage(net)
        exact = open_fraction(net, derived)
        assert expected_open_fraction(net, usage).item() == pytest.approx(exact, abs=1e-4)
        macs = derived_macs(net, derived)
        assert macs == graph_costs(derive(net))["total"]["macs"]
        assert MacsModel(net).expected(usage).item() == pytest.approx(macs, rel=1e-5)
        checked += 1
        if checked == 3:
            return
    pytest.fail(f"only {checked} draws without dead tasks")


def test_expected_macs_of_open_gates_is_the_supernet_cost(data):
    net = _net(data, "snr_trans", subnetworks=3, width=4)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.fill_(30.0)
    full = graph_costs(net.graph)["total"]["macs"]
    assert MacsModel(net).expected(expected_usage(net)).item() == pytest.approx(full, rel=1e-5)
