"""Routing-graph files: versioned JSON, architecture files, and exports for other tools.

A routing graph is stored as networkx node-link JSON with a format name and version; an
architecture file adds each task's edges, the open fraction and where it came from. Writes go
through ``storage``'s atomic writers.

GraphML (Gephi, yEd) and DOT (Graphviz) exports are one-way: attributes are flattened to
scalars, so they are for looking at a task's subgraph in other tools, not for reloading.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import networkx as nx
from networkx.readwrite import json_graph

import nas_mtl
from nas_mtl.errors import GraphError
from nas_mtl.model.graph import (
    FORMAT,
    FORMAT_VERSION,
    head_id,
    node_layers,
    task_subgraph,
    validate,
)
from nas_mtl.rundir import safe_name
from nas_mtl.storage import read_json, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

ARCH_FORMAT = "nas-mtl/architecture"
ARCH_VERSION = 1


def to_json(g: nx.DiGraph) -> dict[str, Any]:
    """A versioned, lossless JSON document (networkx node-link)."""
    data = json_graph.node_link_data(g, edges="edges")
    data["graph"] = dict(g.graph)
    return data


def from_json(data: Mapping[str, Any]) -> nx.DiGraph:
    meta = data.get("graph", {})
    if meta.get("format") != FORMAT:
        raise GraphError(f"not a nas-mtl routing graph (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise GraphError(
            f"routing graph version {meta.get('version')} is not supported "
            f"(this nas-mtl reads version {FORMAT_VERSION})"
        )
    return json_graph.node_link_graph(dict(data), directed=True, edges="edges")


def save_graph(g: nx.DiGraph, path: str | Path) -> None:
    write_json_atomic(path, to_json(g))


def load_graph(path: str | Path) -> nx.DiGraph:
    return from_json(read_json(path, "graph"))


@dataclass(frozen=True)
class Architecture:
    """What ``architecture.json`` holds."""

    graph: nx.DiGraph
    task_edges: Mapping[str, list[list[str]]]
    provenance: Mapping[str, Any]


def architecture_record(g: nx.DiGraph, provenance: Mapping[str, Any]) -> dict[str, Any]:
    tasks = {
        t: [[u, v] for u, v, d in g.edges(data=True) if t in d.get("tasks", [])]
        for t in g.graph["tasks"]
    }
    return {
        "format": ARCH_FORMAT,
        "version": ARCH_VERSION,
        "graph": to_json(g),
        "open_fraction": g.graph.get("open_fraction"),
        "task_edges": tasks,
        "provenance": {
            "package_version": nas_mtl.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **provenance,
        },
    }


def save_architecture(path: str | Path, g: nx.DiGraph, provenance: Mapping[str, Any]) -> None:
    write_json_atomic(path, architecture_record(g, provenance))


def load_architecture(path: str | Path) -> Architecture:
    data = read_json(path, "architecture")
    if data.get("format") != ARCH_FORMAT or data.get("version") != ARCH_VERSION:
        raise GraphError(f"{path} is not a nas-mtl architecture file (version {ARCH_VERSION})")
    g = from_json(data["graph"])
    validate(g)
    return Architecture(graph=g, task_edges=data["task_edges"], provenance=data["provenance"])


# ------------------------------------------------------------------ exports for other tools
Scalar = bool | int | float | str


def flat_attributes(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Attributes as scalars, which GraphML and DOT require: nested dicts become
    ``outer_inner`` keys, lists comma-joined strings, None values are left out.

    >>> flat_attributes({"gate": {"kind": "gumbel", "group": None}, "tasks": ["a", "b"]})
    {'gate_kind': 'gumbel', 'tasks': 'a,b'}
    """
    out: dict[str, Scalar] = {}
    for key, value in attrs.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            out.update(flat_attributes(value, f"{name}_"))
        elif isinstance(value, list | tuple | set | frozenset):
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:  # numpy scalars and the like
            out[name] = str(value)
    return out


def _layers(g: nx.DiGraph) -> dict[str, int]:
    return node_layers(g) if g.number_of_nodes() else {}


def flat_graph(g: nx.DiGraph, prefix: str = "") -> nx.DiGraph:
    """A copy of ``g`` with flat attributes (:func:`flat_attributes`) and every node's layer."""
    layers = _layers(g)
    out = nx.DiGraph(**flat_attributes(g.graph, prefix))
    for n, data in g.nodes(data=True):
        out.add_node(n, **flat_attributes({"layer": layers[n], **data}, prefix))
    for u, v, data in g.edges(data=True):
        out.add_edge(u, v, **flat_attributes(data, prefix))
    return out


def export_graphml(g: nx.DiGraph, path: str | Path) -> Path:
    """Write ``g`` (a task's subgraph or any routing graph) as GraphML for Gephi or yEd.

    Numeric attributes that mix ints and floats across nodes are written as the wider type.
    """
    buf = io.BytesIO()
    nx.write_graphml(flat_graph(g), buf, infer_numeric_types=True)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def _escape(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def _dot_id(name: object) -> str:
    """A quoted DOT identifier: unquoted, ``head:a`` would be node ``head`` at port ``a``."""
    return f'"{_escape(name)}"'


def _dot_label(data: Mapping[str, Any], node: object) -> str:
    """A quoted two-line label (DOT's ``\\n`` line break): the node and its kind or task."""
    if data.get("role") == "head":
        lines = ["head", data.get("task", node)]
    else:
        lines = [node, data["kind"]] if data.get("kind") else [node]
    return '"' + "\\n".join(_escape(line) for line in lines) + '"'


def _dot_keys(attrs: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """Attribute names as DOT IDs (flattened task names may hold any character)."""
    return {re.sub(r"\W", "_", k, flags=re.ASCII): v for k, v in attrs.items()}


def to_dot(g: nx.DiGraph) -> str:
    """DOT source of ``g``: drawn bottom-up, one ``rank=same`` row per layer.

    Data attributes are prefixed ``nas_`` so none collides with a Graphviz attribute of the
    same name (``width``, ``layer``, ``shape`` and ``group`` mean something to Graphviz).
    """
    import pydot  # only the DOT export needs it

    flat = flat_graph(g, prefix="nas_")
    out = nx.DiGraph()
    out.graph.update(
        name=str(g.graph.get("name", "routing_graph")),
        graph={"rankdir": "BT", **_dot_keys(flat.graph)},
        node={"shape": "box", "style": "rounded", "fontsize": "10"},
    )
    for n, data in flat.nodes(data=True):
        out.add_node(_dot_id(n), label=_dot_label(g.nodes[n], n), **_dot_keys(data))
    out.add_edges_from((_dot_id(u), _dot_id(v), _dot_keys(d)) for u, v, d in flat.edges(data=True))
    dot = nx.nx_pydot.to_pydot(out)
    rows: dict[int, list[str]] = {}
    for n, layer in _layers(g).items():
        rows.setdefault(layer, []).append(n)
    for layer in sorted(rows):
        row = pydot.Subgraph(rank="same")
        for n in rows[layer]:
            row.add_node(pydot.Node(_dot_id(n)))
        dot.add_subgraph(row)
    return dot.to_string()


def export_dot(g: nx.DiGraph, path: str | Path) -> Path:
    """Write ``g`` as a Graphviz DOT file (render with ``dot -Tsvg file.dot``)."""
    write_bytes_atomic(path, to_dot(g).encode())
    return Path(path)


def export_task_subgraphs(g: nx.DiGraph, folder: str | Path) -> list[Path]:
    """``<task>.graphml`` and ``<task>.dot`` of every task's subgraph in ``folder``.

    Subgraphs come from :func:`nas_mtl.model.graph.task_subgraph`; file names are slugs of the task
    names (a slug that two tasks share gets the task's index appended). A task whose head is
    unreachable gets empty files and a warning.
    """
    folder = Path(folder)
    written: list[Path] = []
    taken: set[str] = set()
    for i, task in enumerate(g.graph["tasks"]):
        slug = safe_name(task)
        if slug in taken:
            slug = f"{slug}_{i}"
        taken.add(slug)
        sub = task_subgraph(g, task)
        if head_id(task) not in sub:
            log.warning("task '%s': its head is unreachable; its export files are empty", task)
        written.append(export_graphml(sub, folder / f"{slug}.graphml"))
        written.append(export_dot(sub, folder / f"{slug}.dot"))
    return written
