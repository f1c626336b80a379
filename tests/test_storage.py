"""Files: routing graphs and architectures round-trip exactly; bad files are named."""

from __future__ import annotations

import json

import pytest

from nas_mtl.errors import GraphError
from nas_mtl.model.graph import add_component, add_head, connect, new_graph, validate
from nas_mtl.model.graph_files import load_architecture, load_graph, save_graph, to_json


def test_save_load_is_exact_and_versioned(tmp_path):
    g = new_graph((10,), {"a": 1, "b": 2})
    add_component(g, "c1", "mlp", 8)
    add_head(g, "a")
    add_head(g, "b")
    connect(g, "input", "c1")
    connect(g, "c1", "head:a")
    connect(g, "c1", "head:b")
    validate(g)
    path = tmp_path / "g.json"
    save_graph(g, path)
    back = load_graph(path)
    assert to_json(back) == to_json(g)
    data = json.loads(path.read_text())
    data["graph"]["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(GraphError, match="version 99 is not supported"):
        load_graph(path)


def test_load_architecture_errors(tmp_path):
    with pytest.raises(GraphError, match="architecture file not found"):
        load_architecture(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(GraphError, match="not a nas-mtl architecture file"):
        load_architecture(bad)
