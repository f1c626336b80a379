"""Candidate architectures: random ones at a given size, and ranking on the derived objective."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.candidates import choose_architecture, random_architecture
from nas_mtl.stages.derive import Targets, derive_edges, open_fraction


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=64, n_val=32, n_test=16, input_dim=8, groups=[2, 1])


def _net(data, space, **kw):
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return Supernet(build_space(space, data.input_shape, out_dims, **kw))


@pytest.mark.parametrize("space", ["snr_trans", "gumbel_matrix"])
@pytest.mark.parametrize("target", [0.25, 0.5])
def test_random_architecture_meets_the_open_fraction_and_keeps_every_task(data, space, target):
    net = _net(data, space, width=4)
    gen = torch.Generator().manual_seed(3)
    draws = [derive_edges(net, random_architecture(net, target, gen)) for _ in range(3)]
    for derived in draws:
        assert not derived.dead  # a task left without a path got a random one
        assert open_fraction(net, derived) == pytest.approx(target, abs=0.1)
    assert len({frozenset(d.per_task["g0_t0"]) for d in draws}) > 1  # the draws differ


def test_sampled_candidates_outside_the_target_are_not_eligible(data):
    net = _net(data, "snr_trans", subnetworks=3, width=4)  # gates all open: samples are dense
    targets = Targets(open=0.3)
    _, how = choose_architecture(
        net,
        data,
        4,
        seed=0,
        device=torch.device("cpu"),
        cap=targets.within(net),
        eligible=targets.near(net),
    )
    assert how["method"] == "sampled" and how["chosen"] == 0 and how["eligible"] == [0]
    assert how["open_fraction"][0] <= 0.3 < min(how["open_fraction"][1:])
