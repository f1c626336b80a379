"""The routing graph: one ``networkx.DiGraph`` that expresses every sharing architecture.

Nodes are the input, components (sub-networks) in layers, and one head (tower) per task.
Every edge carries a gate description and a transform, so Shared-Bottom, no-sharing, MMoE,
SNR-Trans/Aver and Gumbel-Matrix are the same object with different attributes.

Node attributes (constants below):
    role      "input" | "component" | "head"
    layer     int; 0 for the input, heads after the last component layer
    kind      component kind (see ``COMPONENTS``); "tower" for heads
    width     output width (features or channels); a head's width is its task's output size
    in_width  input width when the incoming edges are linear transforms (default: width)
    params    kind-specific dict (hidden sizes, stride, activation, ...)
    task      task name (heads only)
    shape     input shape as a list (input node only)

Edge attributes:
    gate       {"kind", "scope": "shared"|"task", "group", "params"}
    transform  "identity" | "linear"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from nas_mtl.errors import GraphError
from nas_mtl.model.components import COMPONENTS, Shape

INPUT = "input"
ROLES = ("input", "component", "head")
TRANSFORMS = ("identity", "linear")
GATE_SCOPES = ("shared", "task")
FORMAT = "nas-mtl/routing-graph"
FORMAT_VERSION = 1


def head_id(task: str) -> str:
    return f"head:{task}"


def new_graph(input_shape: Shape, tasks: Mapping[str, int], name: str = "custom") -> nx.DiGraph:
    """An empty routing graph with its input node; ``tasks`` maps task name to output size."""
    g = nx.DiGraph(
        format=FORMAT,
        version=FORMAT_VERSION,
        name=name,
        input_shape=list(input_shape),
        tasks=list(tasks),
    )
    g.add_node(INPUT, role="input", layer=0, width=int(input_shape[0]), shape=list(input_shape))
    g.graph["out_dims"] = {t: int(d) for t, d in tasks.items()}
    return g


def add_component(
    g: nx.DiGraph,
    node: str,
    kind: str,
    width: int,
    layer: int | None = None,
    in_width: int | None = None,
    **params: Any,
) -> str:
    attrs: dict[str, Any] = {
        "role": "component",
        "kind": kind,
        "width": int(width),
        "params": dict(params),
    }
    if layer is not None:
        attrs["layer"] = int(layer)
    if in_width is not None:
        attrs["in_width"] = int(in_width)
    g.add_node(node, **attrs)
    return node


def add_head(
    g: nx.DiGraph,
    task: str,
    hidden: list[int] | tuple[int, ...] = (),
    in_width: int | None = None,
    activation: str = "relu",
) -> str:
    node = head_id(task)
    attrs: dict[str, Any] = {
        "role": "head",
        "kind": "tower",
        "task": task,
        "width": g.graph["out_dims"][task],
        "params": {"hidden": list(hidden), "activation": activation},
    }
    if in_width is not None:
        attrs["in_width"] = int(in_width)
    g.add_node(node, **attrs)
    return node


def gate_spec(
    kind: str = "fixed", scope: str = "shared", group: str | None = None, **params: Any
) -> dict[str, Any]:
    return {"kind": kind, "scope": scope, "group": group, "params": dict(params)}


def connect(
    g: nx.DiGraph,
    src: str,
    dst: str,
    gate: Mapping[str, Any] | None = None,
    transform: str = "identity",
) -> None:
    g.add_edge(src, dst, gate=dict(gate or gate_spec()), transform=transform)


def heads(g: nx.DiGraph) -> list[str]:
    """Head nodes in task order."""
    return [head_id(t) for t in g.graph["tasks"]]


def components(g: nx.DiGraph) -> list[str]:
    return [n for n, r in g.nodes(data="role") if r == "component"]


def edge_serves(data: Mapping[str, Any], task: str) -> bool:
    """Whether an edge can carry ``task``'s signal.

    A derived architecture lists its users in ``tasks``; in a supernet a fixed gate with value 0
    for the task (a no-sharing pattern) closes the edge to it, and every other gate may open.
    """
    if "tasks" in data:
        return task in data["tasks"]
    gate = data.get("gate")
    if gate is None or gate["kind"] != "fixed":
        return True
    params = gate.get("params", {})
    if gate.get("scope") == "task":
        return float((params.get("values") or {}).get(task, 0.0)) != 0.0
    return float(params.get("value", 1.0)) != 0.0


def task_subgraph(g: nx.DiGraph, task: str) -> nx.DiGraph:
    """The part of a routing graph that ``task`` uses: edges that serve it (see
    :func:`edge_serves`) and lie on a path from the input to its head, with their attributes.

    The one place that extracts a task's subgraph; derive, drawing and export read it. Empty
    when the head cannot be reached.
    """
    head = head_id(task)
    usable = nx.DiGraph()
    usable.add_edges_from((u, v) for u, v, d in g.edges(data=True) if edge_serves(d, task))
    if INPUT not in usable or head not in usable or not nx.has_path(usable, INPUT, head):
        return nx.DiGraph(**g.graph)
    keep = (nx.ancestors(usable, head) | {head}) & (nx.descendants(usable, INPUT) | {INPUT})
    out = nx.DiGraph(**g.graph)
    out.add_nodes_from((n, g.nodes[n]) for n in g.nodes if n in keep)  # the graph's node order
    out.add_edges_from((u, v, g.edges[u, v]) for u, v in usable.edges if u in keep and v in keep)
    return out


def check_acyclic(g: nx.DiGraph) -> None:
    if not nx.is_directed_acyclic_graph(g):
        cycle = " -> ".join(str(u) for u, _ in nx.find_cycle(g))
        raise GraphError(f"the routing graph has a cycle: {cycle}; edges must point forward")


def node_layers(g: nx.DiGraph) -> dict[str, int]:
    """Every node's layer: its ``layer`` attribute, else its longest-path depth from the input;
    heads without one go after the last component layer. Reads the graph, never changes it."""
    check_acyclic(g)
    depth: dict[str, int] = {}
    for n in nx.topological_sort(g):
        preds = list(g.predecessors(n))
        depth[n] = 0 if not preds else 1 + max(depth[p] for p in preds)
    layers = {n: int(d.get("layer", depth[n])) for n, d in g.nodes(data=True)}
    comps = [layers[n] for n, d in g.nodes(data=True) if d.get("role") == "component"]
    last = max(comps, default=0)
    for n, d in g.nodes(data=True):
        if d.get("role") == "head" and "layer" not in d:
            layers[n] = last + 1
    return layers


def assign_layers(g: nx.DiGraph) -> None:
    """Write :func:`node_layers` into the nodes that have no ``layer`` (graph builders)."""
    for n, layer in node_layers(g).items():
        g.nodes[n].setdefault("layer", layer)


def in_shape(g: nx.DiGraph, node: str, shapes: Mapping[str, Shape]) -> Shape:
    """The shape a node receives: its sources' shape, or (in_width,) through linear edges."""
    data = g.nodes[node]
    edges = list(g.in_edges(node, data=True))
    if edges and edges[0][2]["transform"] == "linear":
        return (int(data.get("in_width", data["width"])),)
    return shapes[edges[0][0]]


def infer_shapes(g: nx.DiGraph) -> dict[str, Shape]:
    """Output shape of every node, in topological order (the graph must be valid)."""
    shapes: dict[str, Shape] = {INPUT: tuple(g.nodes[INPUT]["shape"])}
    for n in nx.topological_sort(g):
        if n == INPUT:
            continue
        data = g.nodes[n]
        if data["role"] == "head":
            shapes[n] = (data["width"],)
            continue
        shapes[n] = COMPONENTS.get(data["kind"]).out_shape(
            in_shape(g, n, shapes), data["width"], data.get("params", {})
        )
    return shapes


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def validate(g: nx.DiGraph) -> dict[str, Shape]:
    """Check every rule a supernet relies on; return the node output shapes.

    Errors name the node or edge and the fix, because graphs often come from user files. The
    graph is only read: missing layers are computed (:func:`node_layers`), not written.
    """
    from nas_mtl.model.gates import GATES  # local: gates import graph constants

    if INPUT not in g or g.nodes[INPUT].get("role") != "input":
        raise GraphError(f"the graph needs an input node named '{INPUT}' with role 'input'")
    check_acyclic(g)
    tasks = list(g.graph.get("tasks", []))
    if not tasks:
        raise GraphError("the graph names no tasks (graph attribute 'tasks')")
    for n, data in g.nodes(data=True):
        role = data.get("role")
        if role not in ROLES:
            raise GraphError(f"node '{n}' has role {role!r}; expected one of {ROLES}")
        if role == "component":
            COMPONENTS.get(data.get("kind", "<missing>"))
            if not g.in_degree(n):
                raise GraphError(f"component '{n}' has no incoming edge")
            if not _positive_int(data.get("width")):
                raise GraphError(
                    f"component '{n}': width must be an integer >= 1, got {data.get('width')!r}"
                )
        if role == "head":
            if data.get("task") not in tasks or n != head_id(data["task"]):
                raise GraphError(f"head '{n}' must be named 'head:<task>' for a task in {tasks}")
            if g.out_degree(n):
                raise GraphError(f"head '{n}' has outgoing edges; heads are the graph's sinks")
            hidden = data.get("params", {}).get("hidden", [])
            if not all(_positive_int(h) for h in hidden):
                raise GraphError(
                    f"head '{n}': tower sizes must be integers >= 1, got tower = {hidden!r}"
                )
    for t in tasks:
        h = head_id(t)
        if h not in g:
            raise GraphError(f"task '{t}' has no head node '{h}'")
        if not nx.has_path(g, INPUT, h):
            raise GraphError(f"the head of task '{t}' is unreachable from the input")
    for u, v, data in g.edges(data=True):
        if data.get("transform") not in TRANSFORMS:
            raise GraphError(
                f"edge {u} -> {v}: transform {data.get('transform')!r} is not one of {TRANSFORMS}"
            )
        gate = data.get("gate") or {}
        GATES.get(gate.get("kind", "<missing>"))
        if gate.get("scope") not in GATE_SCOPES:
            raise GraphError(
                f"edge {u} -> {v}: gate scope {gate.get('scope')!r} is not one of {GATE_SCOPES}"
            )
        if g.nodes[v]["role"] == "input":
            raise GraphError(f"edge {u} -> {v} points into the input")
    layers = node_layers(g)
    for u, v in g.edges():
        if layers[u] >= layers[v]:
            raise GraphError(
                f"edge {u} -> {v} goes from layer {layers[u]} "
                f"to layer {layers[v]}; edges must go to a later layer"
            )
    for n in g.nodes:
        edges = list(g.in_edges(n, data=True))
        kinds = {(d["transform"], d["gate"]["kind"], d["gate"]["scope"]) for _, _, d in edges}
        if len(kinds) > 1:
            raise GraphError(
                f"node '{n}': all incoming edges need the same transform and gate "
                f"kind/scope, got {sorted(kinds)}"
            )
    shapes: dict[str, Shape] = {INPUT: tuple(g.nodes[INPUT]["shape"])}
    for n in nx.topological_sort(g):
        if n == INPUT:
            continue
        data = g.nodes[n]
        edges = list(g.in_edges(n, data=True))
        linear = edges[0][2]["transform"] == "linear"
        for u, _, _ in edges:
            if linear and len(shapes[u]) != 1:
                raise GraphError(
                    f"edge {u} -> {n}: linear transforms need flat inputs, "
                    f"got shape {shapes[u]}; use identity edges between images"
                )
        want = in_shape(g, n, shapes) if not linear else None
        if data["role"] == "head":
            want_w = data.get("in_width")
            if not linear:
                for u, _, _ in edges:
                    if shapes[u] != shapes[edges[0][0]]:
                        raise GraphError(
                            f"identity edges into '{n}' join different shapes "
                            f"{shapes[u]} and {shapes[edges[0][0]]}"
                        )
                if want_w is not None and want_w != shapes[edges[0][0]][0]:
                    raise GraphError(
                        f"head '{n}' declares in_width {want_w} but its identity "
                        f"edges bring width {shapes[edges[0][0]][0]}"
                    )
            shapes[n] = (data["width"],)
            continue
        for u, _, _ in edges:
            if not linear and shapes[u] != want:
                raise GraphError(
                    f"identity edge {u} -> {n} joins width {shapes[u]} to {want}; identity "
                    f"edges need equal widths (use a linear transform or matching widths)"
                )
        kind = COMPONENTS.get(data["kind"])
        shape_in = in_shape(g, n, shapes)
        kind.check(shape_in, data["width"], data.get("params", {}))
        shapes[n] = kind.out_shape(shape_in, data["width"], data.get("params", {}))
    return shapes
