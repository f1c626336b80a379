"""Start a retraining from the searched supernet's weights (``[retrain] init = "search"``).

Why: by the end of a search the supernet has trained every component and edge that the derived
architecture keeps. Retraining from scratch (the default) throws that training away; starting
the pruned model from it lets a shorter retraining fine-tune what the search learned. Where the
search trained well that matches a full retraining from scratch in half the epochs; where it
fit its training rows, it does worse (docs/search.md, "Warm start", with the figures).

What is copied, by node and edge name (the derived graph keeps the supernet's names):

* every kept component's and tower's parameters and buffers (its slice of the batched module);
* every kept linear edge's matrix ``W_uv``, times the hard-concrete gate's deterministic value
  ẑ_uv that the derived model's fixed gate 1 replaces (averaged over the tasks that use the edge
  when the gate is per task), so the pruned model starts out computing what the searched
  supernet computes in eval mode; an edge kept although its ẑ is 0 (a dead task's fallback
  path) keeps its matrix unscaled;
* the rows of the MMoE/OMoE softmax gate networks that score the kept edges.

Gumbel-Matrix gates are 0/1 in eval mode and their averaging survives in the derived fixed
gates; SNR-Aver's identity edges have no matrix, so their ẑ (a scale on a sum) is not carried.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas_mtl.model.blocks import Block
from nas_mtl.model.gates import HardConcreteGate, SoftmaxGate
from nas_mtl.model.supernet import Supernet

Slices = dict[str, tuple[Tensor, bool]]  # tensor name -> (one instance's slice, a parameter?)


def _node_tensors(module: nn.Module, n: int, k: int) -> Slices:
    """Instance ``k``'s slice of every tensor of a module batched over ``n`` instances.

    Batched modules keep instances along the first dimension, one row each (weights
    ``(n, ...)``) or ``n`` equal runs (grouped convolutions and their batch norms,
    ``(n·c, ...)``); scalars such as batch-norm step counters are not per instance.
    """
    params = dict(module.named_parameters())
    out = {}
    for name, t in [*params.items(), *module.named_buffers()]:
        if t.dim() == 0 or t.shape[0] % n:
            continue
        out[name] = (t.view(n, t.shape[0] // n, *t.shape[1:])[k], name in params)
    return out


def _nodes(net: Supernet) -> dict[str, Slices]:
    """Every component and tower of a model: node name -> {tensor name: its slice}."""
    found = {}
    for block in net.blocks:
        for grp, module in zip(block.groups, block.modules_, strict=True):
            n = len(grp.nodes)
            for k, node in enumerate(grp.nodes):
                found[node] = _node_tensors(module, n, k)
    return found


def _blocks_of(net: Supernet) -> dict[str, Block]:
    """The block that computes each destination node."""
    return {v: block for block in net.blocks for v in block.dst}


def _gate_values(block: Block) -> Tensor | None:
    """ẑ of every edge of a searched block, (rows, J, C) on the CPU; None when its gate is not
    hard-concrete (a derived edge's fixed 1 then stands for 1)."""
    if not isinstance(block.gate, HardConcreteGate):
        return None
    return block.gate.eval_values().detach().cpu()


def _edge_scale(
    block: Block, z: Tensor | None, u: str, v: str, users: list[str], tasks: tuple[str, ...]
) -> float:
    """ẑ of edge u -> v, averaged over the tasks that use it when the gate is per task."""
    if z is None:
        return 1.0
    j, c = block.src.index(u), block.dst.index(v)
    rows = [tasks.index(t) for t in users] if z.shape[0] > 1 else [0]
    return float(z[rows, j, c].mean())


def _copy_softmax(dst: Block, src: Block) -> int:
    """The softmax gate rows that score the destination block's edges (MMoE gate networks)."""
    g_dst, g_src = dst.gate, src.gate
    assert isinstance(g_dst, SoftmaxGate) and isinstance(g_src, SoftmaxGate)
    copied = 0
    w_dst = g_dst.net.weight.view(g_dst.n_nets, g_dst.J, -1)
    b_dst = g_dst.net.bias.view(g_dst.n_nets, g_dst.J)
    w_src = g_src.net.weight.view(g_src.n_nets, g_src.J, -1)
    b_src = g_src.net.bias.view(g_src.n_nets, g_src.J)
    for c_dst in range(g_dst.n_nets):
        c_src = src.dst.index(dst.dst[c_dst]) if g_dst.n_nets > 1 else 0
        for j_dst, u in enumerate(dst.src):
            j_src = src.src.index(u)
            w_dst[c_dst, j_dst] = w_src[c_src, j_src]
            b_dst[c_dst, j_dst] = b_src[c_src, j_src]
            copied += w_dst.shape[-1] + 1
    return copied


@torch.no_grad()
def warm_start(model: Supernet, searched: Supernet) -> int:
    """Copy ``searched``'s weights into ``model``, a derived architecture of it.

    Returns the number of parameters copied: all of ``model``'s (tests/test_warm_start.py).
    """
    searched_nodes = _nodes(searched)
    copied = 0
    for node, tensors in _nodes(model).items():
        source = searched_nodes[node]
        for name, (t, is_param) in tensors.items():
            t.copy_(source[name][0])
            copied += t.numel() if is_param else 0
    searched_blocks = _blocks_of(searched)
    values = {id(b): _gate_values(b) for b in searched.blocks if b.linear}  # once per block
    tasks = searched.tasks
    for block in model.blocks:
        if block.linear:
            for u, v, users in model.graph.in_edges(block.dst, data="tasks"):
                src_block = searched_blocks[v]
                z = _edge_scale(src_block, values[id(src_block)], u, v, users or list(tasks), tasks)
                w = src_block.edge_weight(u, v)
                block.edge_weight(u, v).copy_(w * z if z > 0 else w)
                copied += w.numel()
        if isinstance(block.gate, SoftmaxGate):
            copied += _copy_softmax(block, searched_blocks[block.dst[0]])
    return copied
