"""Derive a discrete per-task architecture from a searched supernet.

Discretization follows docs/search.md ("Derive"): a hard-concrete edge is pruned when ẑ = 0,
a Gumbel-Matrix component is allocated to task t iff P_t,c(on) > 0.5; fixed and softmax gates
keep their edges.
Each task's subgraph is the set of active edges on some path from the input to its head
(networkx); components no task reaches are dropped. The derived graph carries *fixed* gates
(per task where the search was per task, averaging kept for Gumbel-Matrix), so it compiles
with the same :class:`Supernet` into a pruned model that computes only live components.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from torch import Tensor

from nas_mtl.model.cost import graph_costs
from nas_mtl.model.graph import INPUT, gate_spec, head_id, task_subgraph, validate
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.stages.pooling import TaskGroups, pooled_tasks

log = logging.getLogger(__name__)

Decisions = dict[int, Tensor]  # block index -> bool (T or 1, J, C)


def greedy_decisions(net: Supernet) -> Decisions:
    return {i: blk.gate.decisions().cpu() for i, blk in enumerate(net.blocks)}


Within = Callable[["DerivedEdges"], bool]  # does a derived architecture meet the targets?


def capped_decisions(net: Supernet, within: Within | None) -> Decisions:
    """Greedy decisions, pruned until the derived architecture is ``within`` the targets.

    When thresholding leaves more than the targets allow (a search that ran out of steps
    before its multipliers closed enough gates), the least probable learned edges are closed
    first: the open-probability threshold is raised, by bisection over the distinct
    probabilities, to the lowest value whose derived architecture is within the targets
    (docs/search.md, "Derive"). Nothing is ever opened: a target is a cap.
    """
    greedy = greedy_decisions(net)
    if within is None or not learned_gates(net) or within(derive_edges(net, greedy)):
        return greedy
    probs = {
        i: blk.gate.open_probability().detach().cpu()
        for i, blk in enumerate(net.blocks)
        if blk.gate.learned
    }

    def above(theta: float) -> Decisions:
        return {i: d & (probs[i] > theta) if i in probs else d for i, d in greedy.items()}

    levels = sorted({float(v) for i, p in probs.items() for v in p[greedy[i]].flatten()})
    if not levels:  # only fallback paths of dead tasks are open: nothing left to close
        return greedy
    lo, hi = 0, len(levels) - 1  # closing all learned edges: the tightest the cap can get
    while lo < hi:
        mid = (lo + hi) // 2
        if within(derive_edges(net, above(levels[mid]))):
            hi = mid
        else:
            lo = mid + 1
    return above(levels[lo])


def sampled_decisions(
    net: Supernet, generator: torch.Generator, rate: float | None = None
) -> Decisions:
    """Draw from the gates' distributions, or with every variable on at ``rate``."""
    return {i: blk.gate.sample_decisions(generator, rate).cpu() for i, blk in enumerate(net.blocks)}


def task_edges(net: Supernet, decisions: Decisions) -> dict[str, set[tuple[str, str]]]:
    """Active edges per task, before reachability pruning."""
    active: dict[str, set[tuple[str, str]]] = {t: set() for t in net.tasks}
    for i, blk in enumerate(net.blocks):
        dec = decisions[i]
        for t_index, task in enumerate(net.tasks):
            row = dec[t_index if dec.shape[0] > 1 else 0]
            for j, c in torch.nonzero(row).tolist():
                active[task].add((blk.src[j], blk.dst[c]))
    return active


def _open_probability(net: Supernet) -> dict[tuple[str, str, int], float]:
    probs = {}
    for blk in net.blocks:
        p = blk.gate.open_probability().detach().cpu()
        for t in range(len(net.tasks)):
            row = p[t if p.shape[0] > 1 else 0]
            for j, u in enumerate(blk.src):
                for c, v in enumerate(blk.dst):
                    probs[(u, v, t)] = float(row[j, c])
    return probs


@dataclass(frozen=True)
class DerivedEdges:
    """Each task's kept edges, and the tasks that had no open path (kept their likeliest)."""

    per_task: dict[str, set[tuple[str, str]]]
    dead: tuple[str, ...]


def derive_edges(net: Supernet, decisions: Decisions | None = None) -> DerivedEdges:
    """Per-task subgraphs of a discrete architecture (reachability-pruned).

    A task with no open path from the input to its head keeps its most probable path rather
    than a dead head; the search reports such tasks as dead paths (``docs/search.md``). The
    path is opened as a decision of its gates, not as edges of that task alone: a shared gate
    opens its edge for every task that computes the edge's destination, because a shared node
    is one computation (with shared inputs, once per batch) and cannot read one set of inputs
    for one task and another set for the others.
    """
    decisions = decisions if decisions is not None else greedy_decisions(net)
    per_task, dead = _reachable_edges(net, decisions), []
    for t_index, task in enumerate(net.tasks):
        if per_task[task]:
            continue
        probs = _open_probability(net)

        def cost(u: str, v: str, _: Any, p: dict = probs, t: int = t_index) -> float:
            return -math.log(max(p[(u, v, t)], 1e-9))

        path = nx.shortest_path(net.graph, INPUT, head_id(task), weight=cost)
        decisions = _opened(net, decisions, set(zip(path[:-1], path[1:], strict=True)), t_index)
        dead.append(task)
    if dead:
        per_task = _reachable_edges(net, decisions)
    return DerivedEdges(per_task=per_task, dead=tuple(dead))


def _reachable_edges(net: Supernet, decisions: Decisions) -> dict[str, set[tuple[str, str]]]:
    active = task_edges(net, decisions)
    return {t: set(task_subgraph(nx.DiGraph(list(active[t])), t).edges) for t in net.tasks}


def _opened(
    net: Supernet, decisions: Decisions, edges: set[tuple[str, str]], t_index: int
) -> Decisions:
    """``decisions`` with ``edges`` on: for task ``t_index`` where its gate is per task, for
    every task where the gate is shared."""
    out = {}
    for i, blk in enumerate(net.blocks):
        dec = decisions[i].clone()
        row = t_index if dec.shape[0] > 1 else 0
        for j, u in enumerate(blk.src):
            for c, v in enumerate(blk.dst):
                if (u, v) in edges:
                    dec[row, j, c] = True
        out[i] = dec
    return out


SHARED = "*"  # the task of a pair decided by a shared gate: one decision serves every task


def learned_pairs(net: Supernet) -> set[tuple[str, tuple[str, str]]]:
    """Every (task, edge) pair a learned gate decides.

    A per-task gate decides (task, edge) for each task whose head the edge can reach; a
    shared gate decides the edge once for all tasks, written (``SHARED``, edge). The open
    fraction of an architecture is the share of these pairs it keeps. Cached on the supernet
    because the graph never changes.
    """
    cached = getattr(net, "_learned_pairs", None)
    if cached is not None:
        return cached
    g = net.graph
    reach = {t: nx.ancestors(g, head_id(t)) | {head_id(t)} for t in net.tasks}
    pairs: set[tuple[str, tuple[str, str]]] = set()
    for _, blk, gate in learned_gates(net):
        for j, u in enumerate(blk.src):
            for c, v in enumerate(blk.dst):
                users = [t for t in net.tasks if v in reach[t]]
                if not blk.gate.mask[j, c] or not users:
                    continue
                tasks = users if gate.scope == "task" else [SHARED]
                pairs.update((t, (u, v)) for t in tasks)
    net._learned_pairs = pairs
    return pairs


def open_fraction(net: Supernet, derived: DerivedEdges) -> float:
    """Learned-gate (task, edge) pairs kept ÷ all learned-gate pairs (1.0 without gates)."""
    pairs = learned_pairs(net)
    if not pairs:
        return 1.0
    kept = {(t, e) for t, edges in derived.per_task.items() for e in edges} | {
        (SHARED, e) for edges in derived.per_task.values() for e in edges
    }
    return len(kept & pairs) / len(pairs)


def forced_decisions(net: Supernet, derived: DerivedEdges) -> Decisions:
    """The derived architecture as gate decisions, so the supernet computes what retrain gets.

    Per-task gates keep each task's own edges; a shared gate keeps an edge that any task uses.
    """
    forced: Decisions = {}
    for i, blk in enumerate(net.blocks):
        rows = len(net.tasks) if blk.gate.decisions().shape[0] > 1 else 1
        dec = torch.zeros(rows, len(blk.src), len(blk.dst), dtype=torch.bool)
        col = {v: c for c, v in enumerate(blk.dst)}
        row = {u: j for j, u in enumerate(blk.src)}
        for t_index, task in enumerate(net.tasks):
            for u, v in derived.per_task[task]:
                if v in col and u in row:
                    dec[t_index if rows > 1 else 0, row[u], col[v]] = True
        forced[i] = dec
    return forced


def derive(
    net: Supernet,
    decisions: Decisions | None = None,
    *,
    target_open: float | None = None,
    target_macs: float | None = None,
    task_groups: TaskGroups | None = None,
) -> nx.DiGraph:
    """The discrete architecture as a routing graph with fixed gates, validated.

    Without ``decisions``, the greedy decisions capped at the targets (what the CLI's derive
    writes for a study with these ``[search]`` targets), per group of ``task_groups`` where
    given (:mod:`nas_mtl.stages.pooling`). The graph attribute ``open_fraction`` is
    :func:`open_fraction` of this architecture, the figure the search log and the report print.
    """
    if decisions is None:
        targets = Targets(open=target_open, macs=target_macs)
        with pooled_tasks(net, task_groups):
            decisions = capped_decisions(net, targets.within(net))
    derived = derive_edges(net, decisions)
    for task in derived.dead:
        log.warning("task '%s' had no open path; kept its most probable path", task)
    return derived_graph(net, derived)


def derived_graph(net: Supernet, derived: DerivedEdges) -> nx.DiGraph:
    """The routing graph of per-task subgraphs: only their nodes and edges, gates fixed."""
    per_task = derived.per_task
    src_graph = net.graph
    g = nx.DiGraph(**copy.deepcopy(dict(src_graph.graph)))
    used = {e for sub in per_task.values() for e in sub}
    nodes = {INPUT} | {n for e in used for n in e}
    for n in src_graph.nodes:  # keep the source graph's node order
        if n in nodes:
            data = copy.deepcopy(src_graph.nodes[n])
            data["tasks"] = (
                [t for t in net.tasks if any(n in e for e in per_task[t])]
                if n != INPUT
                else list(net.tasks)
            )
            g.add_node(n, **data)
    for u, v in src_graph.edges:
        if (u, v) not in used:
            continue
        data = copy.deepcopy(src_graph.edges[u, v])
        old = data["gate"]
        users = [t for t in net.tasks if (u, v) in per_task[t]]
        if old["kind"] == "softmax":
            pass  # input-conditioned mixing is part of the model (MMoE); keep it
        elif old["scope"] == "task":
            normalize = old["kind"] == "gumbel" or old["params"].get("normalize", False)
            data["gate"] = gate_spec(
                "fixed", "task", None, normalize=normalize, values={t: 1.0 for t in users}
            )
        else:
            value = old["params"].get("value", 1.0) if old["kind"] == "fixed" else 1.0
            data["gate"] = gate_spec("fixed", "shared", None, value=value)
        data["tasks"] = users
        g.add_edge(u, v, **data)
    g.graph["derived"] = True
    g.graph["open_fraction"] = open_fraction(net, derived)
    g.graph["dead_paths"] = list(derived.dead)
    validate(g)
    return g


def derived_macs(net: Supernet, derived: DerivedEdges) -> int:
    """Multiply-adds per example of the derived architecture, all tasks served."""
    return int(graph_costs(derived_graph(net, derived))["total"]["macs"])


@dataclass(frozen=True)
class Targets:
    """The search's constraints: at most ``open`` of the gated pairs, at most ``macs``."""

    open: float | None = None
    macs: float | None = None
    tolerance: float = 0.05  # open: absolute; macs: relative

    @property
    def active(self) -> bool:
        return self.open is not None or self.macs is not None

    def within(self, net: Supernet, slack: float = 0.0) -> Within | None:
        """A test of a derived architecture against every target (None without targets)."""
        if not self.active:
            return None

        def test(derived: DerivedEdges) -> bool:
            if self.open is not None and open_fraction(net, derived) > self.open + slack:
                return False
            return self.macs is None or derived_macs(net, derived) <= self.macs * (1 + slack)

        return test

    def near(self, net: Supernet) -> Within | None:
        """Within the targets up to ``tolerance``: which epochs and samples may be chosen."""
        return self.within(net, self.tolerance)
