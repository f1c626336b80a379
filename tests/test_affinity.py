"""Inter-task gradient affinity (TAG): the lookahead formula, no trace on the search, groups."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from nas_mtl.cluster import ari, cluster_tasks
from nas_mtl.data import load_dataset
from nas_mtl.errors import ConfigError
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.affinity import (
    AFFINITY_FILE,
    AffinityProbe,
    affinity_similarity,
    lookahead_affinity,
    read_affinity,
    shared_parameters,
)
from nas_mtl.stages.checkpoint import load_checkpoint
from nas_mtl.stages.search import search
from nas_mtl.study import SearchConfig

LR = 0.05


class _Linear(nn.Module):
    """y_t = a_t · (x w): w shared by every task, a_t task-specific (not probed)."""

    def __init__(self, d: int, n_tasks: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(d, generator=gen, dtype=torch.float64))
        self.a = nn.Parameter(1.0 + torch.rand(n_tasks, generator=gen, dtype=torch.float64))


def _linear_problem(n_tasks: int = 3, d: int = 5, n: int = 16, same: bool = False):
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(n_tasks, n, d, generator=gen, dtype=torch.float64)
    ys = torch.randn(n_tasks, n, generator=gen, dtype=torch.float64)
    if same:
        xs, ys = xs[:1].expand_as(xs), ys[:1].expand_as(ys)
    model = _Linear(d, n_tasks)
    names = [f"t{i}" for i in range(n_tasks)]

    def losses():
        return {
            t: ((model.a[i] * (xs[i] @ model.w) - ys[i]) ** 2).mean() for i, t in enumerate(names)
        }

    return model, names, losses, xs.numpy(), ys.numpy()


def test_two_identical_tasks_help_each_other_as_much_as_themselves():
    model, names, losses, _, _ = _linear_problem(n_tasks=2, same=True)
    with torch.no_grad():
        model.a.fill_(1.5)  # identical heads too: L_0 and L_1 are the same function
    z, base = lookahead_affinity(model, losses, names, [model.w], LR)
    assert base[0] == base[1]
    assert z[0, 1] == z[0, 0] and z[1, 0] == z[1, 1]
    assert z[0, 0] > 0  # a small step down one's own gradient lowers one's own loss


def test_lookahead_matches_the_closed_form_of_a_linear_model():
    model, names, losses, xs, ys = _linear_problem()
    w, a = model.w.detach().numpy().copy(), model.a.detach().numpy().copy()
    z, base = lookahead_affinity(model, losses, names, [model.w], LR)
    want = np.zeros((3, 3))
    for i in range(3):  # g_i = ∇_w mean((a_i X_i w − y_i)²) = 2 a_i X_iᵀ r_i / n
        r = a[i] * xs[i] @ w - ys[i]
        g = 2 * a[i] * xs[i].T @ r / len(r)
        for j in range(3):
            before = np.mean((a[j] * xs[j] @ w - ys[j]) ** 2)
            after = np.mean((a[j] * xs[j] @ (w - LR * g) - ys[j]) ** 2)
            want[i, j] = 1 - after / before
    np.testing.assert_allclose(z.numpy(), want, rtol=1e-10, atol=1e-12)
    assert np.abs(want - np.diag(np.diag(want))).max() > 1e-3  # the tasks do interact


def test_the_probe_restores_weights_exactly_and_leaves_gradients_alone():
    model, names, losses, _, _ = _linear_problem()
    before = [p.detach().clone() for p in model.parameters()]
    lookahead_affinity(model, losses, names, [model.w], LR)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all(p.grad is None for p in model.parameters())


@pytest.fixture(scope="module")
def small():
    return load_dataset(
        "synthetic", n_train=96, n_val=64, n_test=64, input_dim=8, groups=[2, 1], inputs="per_task"
    )


def _net(data, space, **kw):
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return Supernet(build_space(space, data.input_shape, out_dims, **kw))


SPACES = {
    "gumbel_matrix": {"layers": 2, "components": 3, "width": 8},
    "snr_trans": {"subnetworks": 3, "width": 8},
}


@pytest.mark.parametrize("space", SPACES)
def test_shared_parameters_are_the_body_weights(small, space):
    net = _net(small, space, **SPACES[space])
    shared = {id(p) for p in shared_parameters(net)}
    arch = {id(p) for p in net.arch_parameters()}
    heads = {id(p) for blk in net.blocks if blk.is_head for p in blk.parameters()}
    body = {id(p) for blk in net.blocks if not blk.is_head for p in blk.parameters()}
    assert shared and shared == body - arch
    assert not shared & (arch | heads)


def _comparable(history):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in history]


@pytest.mark.parametrize("space, inputs", [("gumbel_matrix", "per_task"), ("snr_trans", "shared")])
def test_the_probe_leaves_the_search_bit_identical(tmp_path, space, inputs):
    data = load_dataset(
        "synthetic", n_train=96, n_val=64, n_test=64, input_dim=8, groups=[2, 1], inputs=inputs
    )
    cfg = SearchConfig(epochs=3, batch_size=32, warmup=0.34, patience=10, affinity_every=0)
    off = search(_net(data, space, **SPACES[space]), data, cfg, run_dir=tmp_path / "off")
    on = search(
        _net(data, space, **SPACES[space]),
        data,
        replace(cfg, affinity_every=1),
        run_dir=tmp_path / "on",
    )
    assert off.affinity is None and not (tmp_path / "off" / AFFINITY_FILE).exists()
    assert on.affinity is not None and on.affinity.measurements == on.history[-1]["step"]
    assert _comparable(on.history) == _comparable(off.history)  # training losses included
    for name, p in off.supernet.state_dict().items():
        assert torch.equal(p, on.supernet.state_dict()[name]), name
    last = "checkpoints/search_epoch_002.pt"
    a, b = load_checkpoint(tmp_path / "off" / last), load_checkpoint(tmp_path / "on" / last)
    for key in ("w_opt", "a_opt"):  # Adam moments and step counts of weights and gates
        for k, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]["state"][k][name]), (key, k, name)
    assert torch.equal(a["rng"], b["rng"]) and torch.equal(a["gen"], b["gen"])


def test_affinity_json_is_written_and_read_back(tmp_path, small):
    cfg = SearchConfig(epochs=2, batch_size=32, warmup=0.5, affinity_every=2)
    net = _net(small, "snr_trans", **SPACES["snr_trans"])
    result = search(net, small, cfg, run_dir=tmp_path)
    doc = json.loads((tmp_path / AFFINITY_FILE).read_text())
    assert doc["tasks"] == list(small.task_names)
    assert doc["every"] == 2 and doc["lookahead_lr"] == cfg.lr_weights
    assert doc["measurements"] == result.affinity.measurements == 3  # steps 0, 2, 4 of 6
    assert 0 < doc["extra_seconds"] < doc["search_seconds"]
    for where in (tmp_path, tmp_path / AFFINITY_FILE):
        tasks, matrix = read_affinity(where)
        assert tasks == list(small.task_names)
        np.testing.assert_array_equal(matrix, result.affinity.matrix)
    assert matrix.shape == (3, 3) and np.isfinite(matrix).all()


def test_a_resumed_search_keeps_the_running_sums(tmp_path, small):
    cfg = SearchConfig(epochs=4, batch_size=32, warmup=0.25, patience=10, affinity_every=3)
    whole = search(_net(small, "snr_trans", **SPACES["snr_trans"]), small, cfg)

    def crash(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt  # after the epoch's checkpoint, like a kill

    with pytest.raises(KeyboardInterrupt):
        search(
            _net(small, "snr_trans", **SPACES["snr_trans"]),
            small,
            cfg,
            run_dir=tmp_path,
            on_epoch=crash,
        )
    resumed = search(
        _net(small, "snr_trans", **SPACES["snr_trans"]), small, cfg, run_dir=tmp_path, resume=True
    )
    assert resumed.affinity.measurements == whole.affinity.measurements == 4  # 12 steps / 3
    np.testing.assert_array_equal(resumed.affinity.matrix, whole.affinity.matrix)


def test_probe_state_round_trips(small):
    net = _net(small, "snr_trans", **SPACES["snr_trans"])
    probe = AffinityProbe(net, small.task_names, every=1, lr=1e-3)
    probe.sums += torch.arange(9.0).reshape(3, 3).double()
    probe.counts += 2
    probe.measurements = 2
    other = AffinityProbe(net, small.task_names, every=1, lr=1e-3)
    other.load_state(probe.state())
    np.testing.assert_array_equal(other.mean(), np.arange(9.0).reshape(3, 3) / 2)
    assert other.measurements == 2
    with pytest.raises(ValueError, match="every must be >= 1"):
        AffinityProbe(net, small.task_names, every=0, lr=1e-3)


def test_similarity_is_the_symmetrized_affinity_rescaled_to_unit_range():
    z = np.array([[5.0, 0.3, -0.1], [0.1, 4.0, -0.2], [0.0, -0.2, 9.0]])
    s = affinity_similarity(z)
    sym = (z + z.T) / 2  # off-diagonal: 0.2, -0.05, -0.2
    np.testing.assert_allclose(s, s.T)
    np.testing.assert_allclose(np.diag(s), 1.0)
    np.testing.assert_allclose(s[0, 1], 1.0)  # the most affine pair
    np.testing.assert_allclose(s[1, 2], 0.0)  # the least affine pair
    np.testing.assert_allclose(s[0, 2], (sym[0, 2] + 0.2) / 0.4)
    z[0, 2] = np.nan  # never measured: the least affine
    assert affinity_similarity(z)[0, 2] == 0.0 and np.isfinite(affinity_similarity(z)).all()
    with pytest.raises(ValueError, match="square"):
        affinity_similarity(np.zeros((2, 3)))


def test_affinity_every_is_checked():
    assert SearchConfig(affinity_every=0).affinity_every == 0
    with pytest.raises(ConfigError, match="affinity_every must be an integer >= 0"):
        SearchConfig(affinity_every=-1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_affinity_clustering_recovers_planted_groups(seed):
    # every task labelled on the same rows: with per-task rows (the planted studies) a set this
    # small and short is noisier; benchmarks/affinity_overhead.py measures those studies
    data = load_dataset(
        "synthetic",
        seed=seed,
        groups=[3, 3],
        inputs="shared",
        n_train=150,
        n_val=100,
        n_test=10,
        input_dim=32,
        rho=0.95,
        m=3,
    )
    cfg = SearchConfig(epochs=60, batch_size=32, affinity_every=3)
    net = _net(data, "gumbel_matrix", layers=2, components=6, width=32)
    result = search(net, data, cfg, seed=seed)
    labels = cluster_tasks(affinity_similarity(result.affinity.matrix), k=2).labels
    truth = {t: int(t[1]) for t in data.task_names}  # "g{group}_t{index}"
    assert ari(dict(zip(result.affinity.tasks, labels.tolist(), strict=True)), truth) == 1.0


def test_every_forward_draws_the_next_noise_and_the_rng_stream_is_untouched():
    model, names, _, xs, ys = _linear_problem(n_tasks=2, same=True)
    x, y = torch.from_numpy(xs[0]), torch.from_numpy(ys[0])

    def noisy():  # like a sampled gate: fresh noise in every forward
        scale = 1.0 + torch.rand(()).double()
        loss = ((scale * (x @ model.w) - y) ** 2).mean()
        return {t: loss for t in names}

    torch.manual_seed(3)
    state = torch.get_rng_state()
    z, base = lookahead_affinity(model, noisy, names, [model.w], LR)
    assert torch.equal(torch.get_rng_state(), state)
    assert z[0, 1] == z[0, 0] and z[0, 0] > 0  # one noise draw: exact ties, no noise in Z
    torch.manual_seed(3)
    assert base[0] == noisy()["t0"]  # the draw the next real forward makes
