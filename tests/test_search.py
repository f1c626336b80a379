"""The search loop: penalties are wired, warm-up holds gates, alternation, early stopping."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.search import search
from nas_mtl.spaces import build_space
from nas_mtl.study import SearchConfig
from nas_mtl.supernet import Supernet
from nas_mtl.training import halves


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=512, n_val=128, n_test=128, input_dim=8, groups=[2])


def _net(data, space="snr_trans", **kw):
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return Supernet(build_space(space, data.input_shape, out_dims, **kw))


def _open(net):
    return torch.cat([p.flatten() for p in net.arch_parameters()]).clone()


def test_l0_penalty_closes_gates(data):
    cfg = SearchConfig(epochs=3, batch_size=64, lr_arch=0.1, patience=5)
    free = search(
        _net(data, subnetworks=3, width=4), data, SearchConfig(**{**cfg.__dict__, "l0_weight": 0.0})
    )
    sparse = search(
        _net(data, subnetworks=3, width=4), data, SearchConfig(**{**cfg.__dict__, "l0_weight": 1.0})
    )
    assert sparse.supernet.penalties()["l0"] < free.supernet.penalties()["l0"] - 1.0
    assert sparse.history[-1]["frac_open"] <= free.history[-1]["frac_open"]


def test_warmup_holds_gates_and_freezes_their_variables(data):
    net = _net(data, subnetworks=2, width=4)
    before = _open(net)
    result = search(net, data, SearchConfig(epochs=1, batch_size=64, warmup_epochs=1))
    assert torch.equal(_open(result.supernet), before)
    assert result.history[0]["warmup"] is True


def test_alternate_updates_gates_on_the_other_half(data):
    net = _net(data, "gumbel_matrix", layers=1, components=2, width=4)
    before = _open(net)
    result = search(net, data, SearchConfig(epochs=1, batch_size=64, alternate=True))
    assert not torch.equal(_open(result.supernet), before)
    a, b = halves(data.train, torch.Generator().manual_seed(0))
    rows = torch.cat([a.x, b.x])
    assert len(a) + len(b) == len(data.train)
    assert torch.unique(rows, dim=0).shape[0] == len(data.train)  # disjoint, complete


def test_early_stopping_and_epoch_records(data):
    seen = []
    cfg = SearchConfig(epochs=10, batch_size=64, lr_weights=0.0, lr_arch=0.0, patience=2)
    result = search(_net(data, subnetworks=2, width=4), data, cfg, on_epoch=seen.append)
    assert len(result.history) == 3 and result.best_epoch == 0  # nothing can improve
    assert seen == result.history
    gates = seen[0]["gates"]
    assert {g["kind"] for g in gates} == {"hard_concrete"}
    assert torch.tensor(gates[0]["open_probability"]).shape == (1, 2, 2)


def test_gumbel_temperature_follows_the_step(data):
    net = _net(data, "gumbel_matrix", layers=1, components=2, width=4)
    result = search(net, data, SearchConfig(epochs=2, batch_size=128))
    steps = result.history[-1]["step"]  # 4 steps an epoch
    assert result.history[-1]["temperature"] == pytest.approx(max(0.5, 50 / (steps) ** 0.5))
