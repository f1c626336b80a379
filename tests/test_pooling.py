"""Group-consistent derive (nas_mtl/stages/pooling.py): per-task gates decide per task group."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.cli import main
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.derive import derive, greedy_decisions
from nas_mtl.stages.pooling import (
    TaskGroups,
    affinity_groups,
    normalized_affinity,
    pool_matrix,
    pooled_tasks,
)

TASKS = {"a": 1, "b": 1, "c": 1, "d": 1}
P_ON = [  # P(on) per task (rows) and component (columns)
    [0.9, 0.6, 0.1],
    [0.2, 0.6, 0.1],
    [0.1, 0.2, 0.9],
    [0.1, 0.45, 0.3],
]


def _gumbel(p_on: list[list[float]]) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(build_space("gumbel_matrix", (6,), TASKS, layers=1, components=3, width=4))
    gate = net.blocks[1].gate
    with torch.no_grad():  # softmax((log p, log(1 - p)))[0] = p
        p = torch.tensor(p_on)
        gate.logits[:, :, 0] = p.log()
        gate.logits[:, :, 1] = (1 - p).log()
    return net


def _groups(labels: list[int]) -> TaskGroups:
    """Every group pooled, as when ``[derive] groups`` is given."""
    return TaskGroups(tuple(TASKS), tuple(labels), 0.9, (None,) * len(set(labels)), None)


@settings(deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=8))
def test_pool_matrix_averages_over_each_group(labels):
    a = pool_matrix(labels)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(len(labels)))
    for s, ls in enumerate(labels):
        for t, lt in enumerate(labels):
            expected = 1 / labels.count(ls) if ls == lt else 0.0
            assert a[s, t].item() == pytest.approx(expected)


def test_a_group_decides_on_its_mean_probability_and_training_is_untouched():
    net = _gumbel(P_ON)
    gate = net.blocks[1].gate
    alone = greedy_decisions(net)[1][:, :, 0]  # (T, C) for the single head input row
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    before = net.train()(x)
    with pooled_tasks(net, _groups([0, 0, 1, 1])):
        pooled = greedy_decisions(net)[1][:, :, 0]
        torch.manual_seed(1)
        during = net.train()(x)  # the forward pass samples from each task's own logits
        probs = gate.open_probability()[:, :, 0]
    assert gate.task_pool is None  # restored on leaving
    assert alone.tolist() == [
        [True, True, False],
        [False, True, False],
        [False, False, True],
        [False, False, False],
    ]
    # a, b: mean P = (0.55, 0.6, 0.1); c, d: (0.1, 0.325, 0.6)
    assert pooled.tolist() == [[True, True, False]] * 2 + [[False, False, True]] * 2
    torch.testing.assert_close(probs[2], torch.tensor([0.1, 0.325, 0.6]))
    for task in TASKS:
        torch.testing.assert_close(during[task], before[task])


def test_singleton_groups_change_nothing():
    net = _gumbel(P_ON)
    alone = greedy_decisions(net)
    with pooled_tasks(net, _groups([0, 1, 2, 3])):
        pooled = greedy_decisions(net)
    assert all(torch.equal(alone[i], pooled[i]) for i in alone)


def test_grouped_tasks_derive_the_same_subgraph():
    net = _gumbel(P_ON)
    arch = derive(net, task_groups=_groups([0, 0, 1, 1]))
    users = {n: arch.nodes[n]["tasks"] for n in arch.nodes if n.startswith("L1")}
    assert users == {"L1.0": ["a", "b"], "L1.1": ["a", "b"], "L1.2": ["c", "d"]}
    assert derive(net).nodes["L1.2"]["tasks"] == ["c"]  # d alone had nothing: a fallback path


def test_groups_of_another_task_list_are_refused():
    net = _gumbel(P_ON)
    with pytest.raises(ValueError, match="groups are over tasks"):
        with pooled_tasks(net, TaskGroups(("a", "b", "c", "x"), (0, 0, 1, 1), 0.9, (1, 1))):
            pass


def test_only_groups_whose_gradients_agree_are_pooled():
    # a, b: each one's step helps the other by half its own gain (Ẑ = 0.5); c, d: barely
    # (Ẑ = 0.02), as unrelated tasks do; the clustering groups both pairs all the same
    z = np.array(
        [[4.0, 2.0, 0.0, 0.0], [2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.08], [0.0, 0.0, 0.08, 4.0]]
    )
    groups = affinity_groups(list("abcd"), z)
    assert groups.groups == [["a", "b"], ["c", "d"]] and groups.agreement == (0.5, 0.02)
    assert groups.pooled_groups == [["a", "b"]]
    assert groups.pool_labels() == [0, 0, 1, 2]  # c and d each decide alone
    assert affinity_groups(list("abcd"), z, min_affinity=0.01).pooled_groups == groups.groups
    assert affinity_groups(list("abcd"), z, k=2).pooled_groups == groups.groups  # k given
    record = groups.record()
    assert record["pooled"] == [["a", "b"]] and record["min_affinity"] == 0.1


def test_normalized_affinity_is_scale_free():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 5)) + np.diag(np.full(5, 4.0))
    np.testing.assert_allclose(normalized_affinity(7.0 * z), normalized_affinity(z))
    np.testing.assert_allclose(np.diag(normalized_affinity(z)), np.ones(5))
    z[2, 2] = -1.0  # a task its own step did not help: no scale, no affinity
    assert (normalized_affinity(z)[2] == 0).all()


def test_bad_pool_setting_is_one_line(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(
        'name = "s"\nspaces = ["gumbel_matrix"]\n[data]\nname = "synthetic"\n'
        '[derive]\npool = "afinity"\n'
    )
    assert main(["describe", str(study)]) == 2
    err = capsys.readouterr().err
    assert (
        "[derive] pool = 'afinity' is not one of affinity, none (did you mean 'affinity'?)" in err
    )


@pytest.mark.slow
def test_a_run_records_the_groups_and_grouped_tasks_share_their_edges(tmp_path):
    tmp = tmp_path
    study = tmp / "g.toml"
    study.write_text(
        'name = "g"\nspaces = ["gumbel_matrix"]\n[data]\nname = "synthetic"\n'
        "params = { groups = [2, 2], n_train = 256, n_val = 128, n_test = 128, input_dim = 8 }\n"
        "[space_params]\ngumbel_matrix = { layers = 2, components = 4, width = 8 }\n"
        "[search]\nepochs = 6\nbatch_size = 64\naffinity_every = 2\n"
        "[derive]\ngroups = 2\n[retrain]\nepochs = 5\nbatch_size = 64\nlr = 1e-2\n"
    )
    assert main(["run", str(study), "--out", str(tmp / "out")]) == 0
    run = tmp / "out" / "default" / "gumbel_matrix" / "seed_0"
    arch = json.loads((run / "architecture.json").read_text())
    record = arch["provenance"]["derive"]["task_groups"]
    assert len(record["groups"]) == 2  # [derive] groups = 2: every group of 2+ tasks pooled
    assert record["pooled"] == [g for g in record["groups"] if len(g) > 1]
    edges = {
        t: {tuple(e) for e in es if not e[1].startswith("head")}
        for t, es in arch["task_edges"].items()
    }
    for group in record["pooled"]:
        assert all(edges[t] == edges[group[0]] for t in group)


def test_a_shared_gate_pools_its_edges_into_the_heads_of_a_group():
    """SNR: one variable per edge; the edges into task towers are each one task's, so a group
    averages log α over its heads, source by source; edges between layers stay as they are."""
    torch.manual_seed(0)
    net = Supernet(build_space("snr_trans", (6,), TASKS, subnetworks=2, width=4))
    inner, head = net.blocks[1].gate, net.blocks[-1].gate
    assert not inner.per_task_variables and head.per_task_variables
    with torch.no_grad():
        inner.log_alpha.fill_(-3.0)  # closed: ẑ = 0 below log α ≈ −2.4
        for c, task in enumerate(head.dst_task.tolist()):
            for j in range(2):  # a: sub-network 0 open (+3), b: closed (−5): mean −1 → open
                value = {0: (3.0, -5.0), 1: (-5.0, 3.0), 2: (-5.0, -5.0), 3: (3.0, -5.0)}[task]
                head.log_alpha[0, head.index[j, c]] = value[0] if j == 0 else value[1]
    alone = greedy_decisions(net)
    with pooled_tasks(net, _groups([0, 0, 1, 1])):
        pooled = greedy_decisions(net)
    i = len(net.blocks) - 1
    assert torch.equal(pooled[1], alone[1])  # between layers: untouched
    # group {a, b}: source 0 mean (3 − 5)/2 = −1 → open; source 1 mean −1 → open
    # group {c, d}: source 0 mean −1 → open; source 1 mean −5 → closed
    assert alone[i][0].T.tolist() == [[True, False], [False, True], [False, False], [True, False]]
    assert pooled[i][0].T.tolist() == [[True, True]] * 2 + [[True, False]] * 2
