"""What a search must keep within: a fraction of its gated pairs and/or multiply-adds.

Both are constraints of the search (``docs/search.md``, "The target"). The search needs their
*expectation* under the gate distributions, differentiable in the gate variables, to push the
gates; derive needs their *value* on a discrete architecture, to cap it and to decide which
epochs and samples may be chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nas_mtl.model.cost import part_costs
from nas_mtl.model.graph import INPUT, head_id
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.stages.derive import Targets, learned_pairs


@dataclass
class ExpectedUsage:
    """P(task t uses a part) for every edge and node, with independent gates.

    ``kept[i]`` is (T, J, C) for block i: task t keeps edge src[j] -> dst[c] when the edge is
    open and lies on an open path from the input to the task's head; ``node[v]`` is (T,).
    """

    kept: list[Tensor]
    node: dict[str, Tensor]


def expected_usage(net: Supernet) -> ExpectedUsage:
    """Reachability with independent gates (``docs/search.md``, "Open fraction")::

    r_in(v)  = 1 − Π_{u→v} (1 − P(u→v) · r_in(u))       reachable from the input
    r_out(u) = 1 − Π_{u→v} (1 − P(u→v) · r_out(v))      reaches the task's head
    E[kept (t, u→v)] = r_in(u) · P(u→v) · r_out(v),     E[uses (t, v)] = r_in(v) · r_out(v)
    """
    T = len(net.tasks)
    probs = [blk.gate.open_probability().expand(T, -1, -1) for blk in net.blocks]
    dev = probs[0].device
    r_in = {INPUT: torch.ones(T, device=dev)}
    for blk, P in zip(net.blocks, probs, strict=True):  # (T, J, C)
        src = torch.stack([r_in[u] for u in blk.src], dim=1)  # (T, J)
        reach = 1 - torch.prod(1 - P * src.unsqueeze(-1), dim=1)  # (T, C)
        r_in.update({v: reach[:, c] for c, v in enumerate(blk.dst)})
    eye = torch.eye(T, device=dev)
    r_out = {head_id(t): eye[:, i] for i, t in enumerate(net.tasks)}
    missed: dict[str, Tensor] = {}
    kept: list[Tensor] = [torch.zeros(())] * len(net.blocks)
    for i in reversed(range(len(net.blocks))):
        blk, P = net.blocks[i], probs[i]
        dst = torch.stack([_complete(r_out, missed, v, T, dev) for v in blk.dst], dim=1)
        through = P * dst.unsqueeze(1)  # (T, J, C): open edge into a head-reaching node
        for j, u in enumerate(blk.src):
            missed[u] = missed.get(u, 1) * torch.prod(1 - through[:, j], dim=-1)
        src = torch.stack([r_in[u] for u in blk.src], dim=1)  # (T, J)
        kept[i] = src.unsqueeze(-1) * through
    for v in list(r_in):
        _complete(r_out, missed, v, T, dev)
    node = {v: r_in[v] * r_out[v] for v in r_in if v != INPUT}
    return ExpectedUsage(kept=kept, node=node)


def _complete(
    r_out: dict[str, Tensor], missed: dict[str, Tensor], node: str, T: int, dev: torch.device
) -> Tensor:
    """r_out of a node once every edge out of it has been seen (reverse block order)."""
    if node not in r_out:
        r_out[node] = 1 - missed.get(node, torch.ones(T, device=dev))
    return r_out[node]


def _any_task(p: Tensor) -> Tensor:
    """P(some task uses a part) from per-task probabilities (T, ...)."""
    return 1 - torch.prod(1 - p, dim=0)


def expected_open_fraction(net: Supernet, usage: ExpectedUsage) -> Tensor:
    """E[open fraction]: per-task gates count each task's pair; a shared edge counts once."""
    kept = torch.zeros((), device=usage.kept[0].device)
    for i, _, gate in learned_gates(net):
        per_task = usage.kept[i]
        kept = kept + (per_task.sum() if gate.scope == "task" else _any_task(per_task).sum())
    return kept / max(float(len(learned_pairs(net))), 1.0)


class MacsModel:
    """Expected multiply-adds per example of the derived model, all tasks served.

    A part costs its multiply-adds times the probability that some task uses it; heads are
    always computed. The part list is read once from the supernet graph (``cost.part_costs``),
    so a step only multiplies and sums.
    """

    def __init__(self, net: Supernet) -> None:
        costs = part_costs(net.graph)
        where = {
            (u, v): (i, j, c)
            for i, blk in enumerate(net.blocks)
            for j, u in enumerate(blk.src)
            for c, v in enumerate(blk.dst)
        }
        heads = {head_id(t) for t in net.tasks}
        self.fixed = sum(m for part, (_, m) in costs.items() if part in heads)
        self.nodes = [(part, m) for part, (_, m) in costs.items() if isinstance(part, str)]
        self.nodes = [(n, m) for n, m in self.nodes if n not in heads]
        self.edges = [(where[p], m) for p, (_, m) in costs.items() if p in where]
        gated = [
            (p[1], m) for p, (_, m) in costs.items() if isinstance(p, tuple) and p[0] == "gate"
        ]
        group_of = {
            v: (d["gate"].get("group") if d["gate"]["scope"] == "shared" else v)
            for _, v, d in net.graph.edges(data=True)
        }
        self.gate_nets = [([v for v, g in group_of.items() if g == grp], m) for grp, m in gated]

    def expected(self, usage: ExpectedUsage) -> Tensor:
        total = usage.kept[0].new_full((), float(self.fixed))  # a fill: no host-to-device copy
        any_node = {v: _any_task(p) for v, p in usage.node.items()}
        for n, m in self.nodes:
            total = total + m * any_node[n]
        for (i, j, c), m in self.edges:
            total = total + m * _any_task(usage.kept[i][:, j, c])
        for dsts, m in self.gate_nets:  # a gate network runs when any destination it serves does
            total = total + m * _any_task(torch.stack([any_node[v] for v in dsts]))
        return total


def expected_excess(
    targets: Targets, net: Supernet, usage: ExpectedUsage, macs: MacsModel | None
) -> dict[str, Tensor]:
    """Expected excess over each target, both in fractions so one dual_lr fits both."""
    out = {}
    if targets.open is not None:
        out["open"] = expected_open_fraction(net, usage) - targets.open
    if targets.macs is not None and macs is not None:
        out["macs"] = macs.expected(usage) / targets.macs - 1.0
    return out
