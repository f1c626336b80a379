"""Files: routing graphs, derived architectures and JSON results, always written atomically.

A routing graph is stored as networkx node-link JSON with a format name and version; an
architecture file adds each task's edges, the open fraction and where it came from. Every
write goes through a temp file and a rename, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
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


@functools.cache
def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 minus the process umask.

    Read once: reading the umask means setting it, which must not happen on every write.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would hide results from a user's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: JSON that strict parsers read."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Strict JSON (no bare NaN: a metric that is not a number is written as null)."""
    text = json.dumps(strict_json(payload), indent=2, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def save_graph(g: nx.DiGraph, path: str | Path) -> None:
    write_json_atomic(path, to_json(g))


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing or broken file is a GraphError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GraphError(f"{what} file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise GraphError(f"{path} is not valid JSON: {e}") from None


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


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line per record, flushed so a crash keeps every finished epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
