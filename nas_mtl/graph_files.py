"""Routing-graph files: versioned JSON, architecture files, and exports for other tools.

A routing graph is stored as networkx node-link JSON with a format name and version; an
architecture file adds each task's edges, the open fraction and where it came from. Writes go
through ``storage``'s atomic writers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import networkx as nx
from networkx.readwrite import json_graph

import nas_mtl
from nas_mtl.errors import GraphError
from nas_mtl.graph import FORMAT, FORMAT_VERSION, validate
from nas_mtl.storage import read_json, write_json_atomic

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
