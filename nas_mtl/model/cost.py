"""Parameters and multiply-adds per task, computed from the graph (no tracing).

A task's cost counts everything on its subgraph: components, linear edge transforms, gate
networks and its tower; shared parts count fully for every task that uses them. ``total``
counts each part once: what a shared-input batch costs when every task is served.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from nas_mtl.model.components import COMPONENTS, tower_macs, tower_params
from nas_mtl.model.graph import INPUT, head_id, in_shape, validate


def edge_active_for(data: dict[str, Any], task: str) -> bool:
    gate = data["gate"]
    if gate["kind"] == "fixed":
        if gate["scope"] == "task":
            return float((gate["params"].get("values") or {}).get(task, 0.0)) != 0.0
        return float(gate["params"].get("value", 1.0)) != 0.0
    return True


Part = str | tuple[str, str] | tuple[str, Any]  # a node, an edge (u, v), or ("gate", group)


def part_costs(g: nx.DiGraph) -> dict[Part, tuple[int, int]]:
    """(params, multiply-adds per example) of every part that costs something.

    Parts are components and heads (by node), linear edge transforms (by edge) and softmax
    gate networks (``("gate", destination or group)``).
    """
    shapes = validate(g)
    input_dim = math.prod(g.nodes[INPUT]["shape"])
    part_cost: dict[Part, tuple[int, int]] = {}
    for n, data in g.nodes(data=True):
        if data["role"] == "component":
            kind = COMPONENTS.get(data["kind"])
            shp = in_shape(g, n, shapes)
            part_cost[n] = (
                kind.num_params(shp, data["width"], data.get("params", {})),
                kind.macs(shp, data["width"], data.get("params", {})),
            )
        elif data["role"] == "head":
            d_in = in_shape(g, n, shapes)[0]
            hidden = data.get("params", {}).get("hidden", [])
            part_cost[n] = (
                tower_params(d_in, hidden, data["width"]),
                tower_macs(d_in, hidden, data["width"]),
            )
    for u, v, data in g.edges(data=True):
        if data["transform"] == "linear":
            d = shapes[u][0] * in_shape(g, v, shapes)[0]
            part_cost[(u, v)] = (d, d)
        if data["gate"]["kind"] == "softmax":  # one gate network per destination, or shared
            group = data["gate"].get("group") if data["gate"]["scope"] == "shared" else v
            j = g.in_degree(v)
            part_cost[("gate", group)] = (input_dim * j + j, input_dim * j)
    return part_cost


def graph_costs(g: nx.DiGraph) -> dict[str, Any]:
    """{"per_task": {task: {"params", "macs"}}, "total": {"params", "macs"}}."""
    part_cost = part_costs(g)
    per_task: dict[str, dict[str, int]] = {}
    union: set[Any] = set()
    for task in g.graph["tasks"]:
        live = nx.DiGraph([(u, v) for u, v, d in g.edges(data=True) if edge_active_for(d, task)])
        head = head_id(task)
        nodes = nx.ancestors(live, head) | {head} if head in live else {head}
        parts: set[Any] = {n for n in nodes if n in part_cost}
        for u, v, data in g.edges(data=True):
            if v in nodes and u in nodes and edge_active_for(data, task):
                if (u, v) in part_cost:
                    parts.add((u, v))
                if data["gate"]["kind"] == "softmax":
                    group = data["gate"].get("group") if data["gate"]["scope"] == "shared" else v
                    parts.add(("gate", group))
        union |= parts
        per_task[task] = {
            "params": sum(part_cost[p][0] for p in parts),
            "macs": sum(part_cost[p][1] for p in parts),
        }
    return {
        "per_task": per_task,
        "total": {
            "params": sum(part_cost[p][0] for p in union),
            "macs": sum(part_cost[p][1] for p in union),
        },
    }
