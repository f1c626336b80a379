"""Deriving, saving and reloading architectures; costs drop when gates are pruned."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.model.cost import graph_costs
from nas_mtl.model.graph_files import load_architecture, save_architecture
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.derive import derive
from nas_mtl.stages.retrain import build_model

TASKS = {"a": 1, "b": 1, "c": 2}


def _snr(keep):
    """SNR-Trans with 3 sub-networks whose hard-concrete gates are set by hand."""
    torch.manual_seed(0)
    net = Supernet(build_space("snr_trans", (12,), TASKS, subnetworks=3, width=8))
    for block, gate in net.gate_modules():
        if gate.kind != "hard_concrete":
            continue
        with torch.no_grad():
            for j, u in enumerate(block.src):
                for c, v in enumerate(block.dst):
                    gate.log_alpha[0, gate.index[j, c]] = 20.0 if keep(u, v) else -20.0
    return net


def test_all_open_derives_the_whole_supernet():
    net = _snr(lambda u, v: True)
    arch = derive(net)
    assert graph_costs(arch)["total"] == graph_costs(net.graph)["total"]


def test_pruned_gates_drop_components_edges_and_macs():
    # layer 2 keeps only L1.0 -> L2.0 and L1.1 -> L2.1; head a reads L2.0, heads b, c read L2.1
    keep = {
        ("L1.0", "L2.0"),
        ("L1.1", "L2.1"),
        ("L2.0", "head:a"),
        ("L2.1", "head:b"),
        ("L2.1", "head:c"),
    }
    net = _snr(lambda u, v: (u, v) in keep)
    arch = derive(net)
    assert "L2.2" not in arch and "L1.2" not in arch  # nobody reaches them: removed
    assert set(arch.edges) - {("input", n) for n in arch if n.startswith("L1")} == keep
    assert arch.nodes["L2.1"]["tasks"] == ["b", "c"]
    full, pruned = graph_costs(net.graph), graph_costs(arch)
    assert pruned["total"]["macs"] < full["total"]["macs"]
    # task a: input->L1.0 (12*8), L1.0->L2.0 (8*8), L2.0->head (8*8), tower 8*8 + 8*1
    assert pruned["per_task"]["a"]["macs"] == 12 * 8 + 8 * 8 + 8 * 8 + 8 * 8 + 8
    model = build_model(arch, seed=1)
    assert model.count_parameters() == pruned["total"]["params"]
    assert model.blocks[1].edge_mode  # only live edges are stored and multiplied


def test_architecture_json_reloads_into_the_same_model(tmp_path):
    net = _snr(lambda u, v: not (u == "L1.2" or v == "L2.2"))
    arch = derive(net)
    path = tmp_path / "architecture.json"
    save_architecture(path, arch, {"seed": 3, "study_sha256": "abc"})
    loaded = load_architecture(path)
    assert loaded.provenance["seed"] == 3 and loaded.provenance["package_version"]
    assert sorted(map(tuple, loaded.task_edges["a"])) == sorted(
        (u, v) for u, v, d in arch.edges(data=True) if "a" in d["tasks"]
    )
    m1, m2 = build_model(arch, seed=5).eval(), build_model(loaded.graph, seed=5).eval()
    assert [(k, v.shape) for k, v in m1.state_dict().items()] == [
        (k, v.shape) for k, v in m2.state_dict().items()
    ]
    x = torch.randn(4, 12)
    for task, y in m1(x).items():
        torch.testing.assert_close(m2(x)[task], y)


def test_closed_head_keeps_its_most_probable_path(caplog):
    net = _snr(lambda u, v: v != "head:a" or u == "L2.1")
    with torch.no_grad():  # now close every edge into head a
        for block, gate in net.gate_modules():
            if "head:a" in block.dst and gate.kind == "hard_concrete":
                c = block.dst.index("head:a")
                for j in range(len(block.src)):
                    gate.log_alpha[0, gate.index[j, c]] = -20.0 + j  # L2.2 is the least closed
    arch = derive(net)
    assert list(arch.predecessors("head:a")) == ["L2.2"]
    assert "task 'a' had no open path" in caplog.text


def test_a_dead_tasks_path_opens_shared_gates_for_every_task_that_reads_them():
    """A shared node is one computation: the kept path of a dead task cannot give it inputs
    of its own there, or its prediction depends on which other tasks are in the batch."""
    torch.manual_seed(0)
    net = Supernet(build_space("snr_aver", (12,), TASKS, subnetworks=3, width=8))
    keep = {("L1.0", "L2.0"), ("L1.1", "L2.0"), ("L2.0", "head:a"), ("L2.0", "head:b")}
    for block, gate in net.gate_modules():
        if gate.kind != "hard_concrete":
            continue
        with torch.no_grad():
            for j, u in enumerate(block.src):
                for c, v in enumerate(block.dst):
                    closed = -19.0 if (u, v) == ("L2.0", "head:c") else -20.0
                    gate.log_alpha[0, gate.index[j, c]] = 20.0 if (u, v) in keep else closed
    arch = derive(net)  # task c: no open path; its likeliest runs through L1.0 or L1.1 to L2.0
    assert arch.graph["dead_paths"] == ["c"]
    assert sorted(arch.predecessors("L2.0")) == ["L1.0", "L1.1"]
    for u in arch.predecessors("L2.0"):  # every task that computes L2.0 reads all its inputs
        assert arch.edges[u, "L2.0"]["tasks"] == ["a", "b", "c"]
    for regime in ("per_task", "shared"):
        model = build_model(arch, seed=2, input_regime=regime).eval()
        x = torch.randn(3, 4, 12)
        with torch.no_grad():
            together = model(x if regime == "per_task" else x[0])
            for i, task in enumerate(model.tasks):
                alone = model(x[i : i + 1] if regime == "per_task" else x[0], [task])[task]
                ref = together[task]
                torch.testing.assert_close(alone, ref)


def test_gumbel_derivation_is_per_task_and_averages():
    torch.manual_seed(0)
    net = Supernet(build_space("gumbel_matrix", (6,), TASKS, layers=1, components=3, width=4))
    gate = net.blocks[1].gate
    with torch.no_grad():
        gate.logits[:, :, 0] = torch.tensor(
            [[3.0, 3.0, -3.0], [-3.0, 3.0, -3.0], [-3.0, -3.0, -1.0]]
        )
        gate.logits[:, :, 1] = 0.0
    arch = derive(net)
    assert arch.nodes["L1.0"]["tasks"] == ["a"] and arch.nodes["L1.1"]["tasks"] == ["a", "b"]
    # task c had nothing allocated: its most probable path (through L1.2) is kept
    assert list(arch.predecessors("head:c")) == ["L1.2"] and arch.nodes["L1.2"]["tasks"] == ["c"]
    edge = arch.edges["L1.1", "head:a"]["gate"]
    assert edge["kind"] == "fixed" and edge["params"]["normalize"] is True
    # the derived model computes the supernet's eval function for tasks a and b, and each
    # component group runs only on the streams of the tasks that use it
    model = Supernet(arch).eval()
    usage = [g.usage for g in model.blocks[0].groups]
    assert usage == [(frozenset({0}), frozenset({2})), (frozenset({0, 1}),)]
    for node in ("L1.0", "L1.1", "L1.2"):
        _copy_component(net, model, node)
    model.blocks[1].modules_[0].load_state_dict(net.blocks[1].modules_[0].state_dict())
    x = torch.randn(5, 6)
    ref, got = net.eval()(x), model(x)
    for task in ("a", "b"):
        torch.testing.assert_close(got[task], ref[task])


def _copy_component(src: Supernet, dst: Supernet, node: str) -> None:
    """Copy one component's slice of its batched module (instance axis first)."""

    def locate(net):
        for blk in net.blocks:
            for grp, module in zip(blk.groups, blk.modules_, strict=True):
                if node in grp.nodes:
                    return module, grp.nodes.index(node)
        raise KeyError(node)

    (m_src, i), (m_dst, k) = locate(src), locate(dst)
    with torch.no_grad():
        for p_src, p_dst in zip(m_src.parameters(), m_dst.parameters(), strict=True):
            p_dst[k].copy_(p_src[i])


def test_edge_mode_computes_the_sparse_snr_formula():
    keep = {
        ("L1.0", "L2.0"),
        ("L1.1", "L2.1"),
        ("L1.0", "L2.1"),
        ("L2.0", "head:a"),
        ("L2.1", "head:b"),
        ("L2.1", "head:c"),
    }
    model = build_model(derive(_snr(lambda u, v: (u, v) in keep)), seed=2).eval()
    b1, b2, bh = model.blocks
    assert b2.edge_mode and bh.edge_mode and not b1.edge_mode
    x = torch.randn(6, 12)
    u = [torch.relu(x @ b1.weight[:, c, :] + b1.modules_[0].bias[c]) for c in range(2)]
    edges = list(zip(b2.edge_src.tolist(), b2.edge_dst.tolist(), strict=True))
    v = [sum(u[j] @ b2.weight[e] for e, (j, c) in enumerate(edges) if c == dst) for dst in range(2)]
    h = [torch.relu(v[c] + b2.modules_[0].bias[c]) for c in range(2)]
    head_edges = list(zip(bh.edge_src.tolist(), bh.edge_dst.tolist(), strict=True))
    out = model(x)
    towers = bh.modules_[0]
    for e, (j, c) in enumerate(head_edges):
        z = h[j] @ bh.weight[e]
        z = torch.relu(z @ towers.hidden[0].weight[c] + towers.hidden[0].bias[c])
        ref = (z @ towers.out.weight[c] + towers.out.bias[c])[:, : towers.out_dims[c]]
        torch.testing.assert_close(out[bh.dst[c][5:]], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space", ["no_sharing", "gumbel_matrix"])
def test_pruned_task_streams_compute_less_and_the_same(space):
    """Per-task inputs: groups skip the streams of tasks that do not use them."""
    from dataclasses import replace

    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = Supernet(build_space(space, (6,), TASKS, width=4))
    if space == "gumbel_matrix":
        for _, gate in net.gate_modules():
            if gate.kind == "gumbel":  # task c uses no layer-2 component that a or b uses
                with torch.no_grad():
                    gate.logits[..., 1] = 0.0
                    gate.logits[..., 0] = -3.0
                    gate.logits[:2, :4, 0] = 3.0
                    gate.logits[2, 4:, 0] = 3.0
    arch = derive(net)
    pruned = build_model(arch, seed=0, input_regime="per_task").eval()
    assert any(g.usage for blk in pruned.blocks for g in blk.groups if not blk.is_head)
    full = build_model(arch, seed=0, input_regime="per_task").eval()
    for blk in full.blocks:  # the same model computing every stream
        blk.groups = [replace(g, usage=None) for g in blk.groups]
    x = torch.randn(3, 5, 6)
    with FlopCounterMode(display=False) as c_pruned:
        y_pruned = pruned(x, tasks=list(TASKS))
    with FlopCounterMode(display=False) as c_full:
        y_full = full(x, tasks=list(TASKS))
    for task in TASKS:
        torch.testing.assert_close(y_pruned[task], y_full[task])
    assert c_pruned.get_total_flops() < c_full.get_total_flops()
