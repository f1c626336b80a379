"""Routing-graph validation gives clear errors; JSON is versioned."""

from __future__ import annotations

import pytest

from nas_mtl.errors import ConfigError, GraphError
from nas_mtl.model.graph import (
    add_component,
    add_head,
    assign_layers,
    connect,
    gate_spec,
    new_graph,
    node_layers,
    task_subgraph,
    validate,
)
from nas_mtl.model.graph_files import to_json


def _base():
    g = new_graph((10,), {"a": 1, "b": 2})
    add_component(g, "c1", "mlp", 8)
    add_component(g, "c2", "mlp", 8)
    add_head(g, "a")
    add_head(g, "b")
    connect(g, "input", "c1")
    connect(g, "c1", "c2")
    connect(g, "c2", "head:a")
    connect(g, "c2", "head:b")
    return g


def test_validate_returns_shapes_and_does_not_change_the_graph():
    g = _base()
    before = to_json(g)
    shapes = validate(g)
    assert shapes["c2"] == (8,) and shapes["head:b"] == (2,)
    assert to_json(g) == before  # layers are computed, not written
    assert [node_layers(g)[n] for n in ("input", "c1", "c2", "head:a")] == [0, 1, 2, 3]
    assign_layers(g)
    assert [g.nodes[n]["layer"] for n in ("input", "c1", "c2", "head:a")] == [0, 1, 2, 3]


def test_cycle_is_reported():
    g = _base()
    connect(g, "c2", "c1")
    with pytest.raises(GraphError, match="cycle: c1 -> c2|cycle: c2 -> c1"):
        validate(g)


def test_unreachable_head_is_reported():
    g = _base()
    g.remove_edge("c2", "head:b")
    add_component(g, "orphan", "mlp", 8)
    connect(g, "orphan", "head:b")
    with pytest.raises(GraphError, match="component 'orphan' has no incoming edge"):
        validate(g)
    g.remove_node("orphan")
    with pytest.raises(GraphError, match="head of task 'b' is unreachable from the input"):
        validate(g)


def test_identity_edge_between_different_widths():
    g = _base()
    add_component(g, "wide", "mlp", 16)
    add_component(g, "mix", "mlp", 4)
    connect(g, "input", "wide")
    connect(g, "c1", "mix")
    connect(g, "wide", "mix")
    connect(g, "mix", "head:a")
    with pytest.raises(
        GraphError,
        match=r"identity edge wide -> mix joins width \(16,\) to "
        r"\(8,\); identity edges need equal widths",
    ):
        validate(g)


def test_unknown_gate_and_component_kinds():
    g = _base()
    g.edges["c1", "c2"]["gate"] = gate_spec("hardconcrete")
    with pytest.raises(
        ConfigError, match="unknown gate kind 'hardconcrete' \\(did you mean 'hard_concrete'\\?\\)"
    ):
        validate(g)
    g = _base()
    g.nodes["c1"]["kind"] = "conv3"
    with pytest.raises(ConfigError, match="unknown component kind 'conv3'"):
        validate(g)


def test_mixed_gate_kinds_into_one_node():
    g = _base()
    connect(g, "c1", "head:a", gate_spec("hard_concrete"))
    with pytest.raises(GraphError, match="node 'head:a': all incoming edges need the same"):
        validate(g)


def test_task_subgraph_follows_fixed_task_gates_and_keeps_attributes():
    g = new_graph((10,), {"a": 1, "b": 2})
    for n in ("ca", "cb", "dead"):
        add_component(g, n, "mlp", 8)
    add_head(g, "a")
    add_head(g, "b")
    only = {
        "a": gate_spec("fixed", "task", None, values={"a": 1.0, "b": 0.0}),
        "b": gate_spec("fixed", "task", None, values={"a": 0.0, "b": 1.0}),
    }
    connect(g, "input", "ca", only["a"])
    connect(g, "input", "cb", only["b"])
    connect(g, "input", "dead")  # reaches no head
    connect(g, "ca", "head:a")
    connect(g, "cb", "head:b")
    connect(g, "ca", "head:b", only["a"])  # open only for a, which does not use head:b
    sub = task_subgraph(g, "a")
    assert set(sub.edges) == {("input", "ca"), ("ca", "head:a")}
    assert sub.nodes["ca"]["kind"] == "mlp" and sub.graph["tasks"] == ["a", "b"]
    assert set(task_subgraph(g, "b").edges) == {("input", "cb"), ("cb", "head:b")}


def test_task_subgraph_of_a_derived_graph_reads_its_users_and_is_empty_when_cut():
    g = _base()
    for u, v in g.edges:
        g.edges[u, v]["tasks"] = ["a"] if v != "head:b" else []
    assert set(task_subgraph(g, "a").edges) == {("input", "c1"), ("c1", "c2"), ("c2", "head:a")}
    assert task_subgraph(g, "b").number_of_edges() == 0
