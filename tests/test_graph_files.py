"""Exports for other tools: GraphML round-trips, DOT parses back, one file pair per task."""

from __future__ import annotations

import logging
import warnings

import networkx as nx
import pytest

from nas_mtl.model.graph import head_id, node_layers
from nas_mtl.model.graph_files import (
    export_dot,
    export_graphml,
    export_task_subgraphs,
    flat_attributes,
    to_dot,
)
from nas_mtl.model.spaces import build_space

TASKS = {"a": 1, "b": 2, "c": 1}


@pytest.fixture
def gumbel() -> nx.DiGraph:
    return build_space("gumbel_matrix", (8,), TASKS, layers=2, components=3, width=4)


def _parse_dot(text: str):
    import pydot

    with warnings.catch_warnings():  # pyparsing's diagnostics about pydot's grammar
        warnings.simplefilter("ignore")
        graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, "the DOT file does not parse"
    return graphs[0]


def _dot_nodes(dot) -> list[str]:
    """Node statements (quoted names), without the ``node [...]`` defaults statement."""
    return [n.get_name() for n in dot.get_nodes() if n.get_name() not in ("node", "edge", "graph")]


def test_flat_attributes_turn_dicts_and_lists_into_scalars():
    attrs = {"gate": {"kind": "gumbel", "scope": "task", "group": None, "params": {"p0": 0.5}}}
    assert flat_attributes({**attrs, "tasks": ["a", "b"], "width": 4}) == {
        "gate_kind": "gumbel",
        "gate_scope": "task",
        "gate_params_p0": 0.5,
        "tasks": "a,b",
        "width": 4,
    }


def test_graphml_round_trips_nodes_edges_and_flat_attributes(gumbel, tmp_path):
    for _, _, d in gumbel.edges(data=True):  # a derived graph lists each edge's users
        d["tasks"] = ["a", "c"]
    path = export_graphml(gumbel, tmp_path / "g.graphml")
    back = nx.read_graphml(path)
    assert back.is_directed()
    assert list(back.nodes) == list(gumbel.nodes)
    assert set(back.edges) == set(gumbel.edges)
    assert back.nodes["L1.0"]["kind"] == "mlp" and back.nodes["L1.0"]["layer"] == 1
    assert back.nodes[head_id("b")]["task"] == "b" and back.nodes[head_id("b")]["width"] == 2
    edge = back.edges["L1.0", "L2.1"]
    assert (edge["gate_kind"], edge["gate_scope"], edge["tasks"]) == ("gumbel", "task", "a,c")
    assert edge["gate_params_p0"] == 0.5
    assert back.graph["tasks"] == "a,b,c" and back.graph["out_dims_b"] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, then renamed


def test_dot_parses_back_with_quoted_names_and_one_rank_per_layer(gumbel, tmp_path):
    path = export_dot(gumbel, tmp_path / "g.dot")
    dot = _parse_dot(path.read_text())
    assert len(_dot_nodes(dot)) == gumbel.number_of_nodes()
    assert len(dot.get_edges()) == gumbel.number_of_edges()
    assert '"head:a"' in _dot_nodes(dot)  # unquoted, "head:a" would be node "head", port "a"
    assert {(e.get_source(), e.get_destination()) for e in dot.get_edges()} == {
        (f'"{u}"', f'"{v}"') for u, v in gumbel.edges
    }
    rows = dot.get_subgraphs()
    layers = node_layers(gumbel)
    assert [r.get("rank") for r in rows] == ["same"] * len(set(layers.values()))
    for row in rows:
        names = [n.get_name().strip('"') for n in row.get_nodes()]
        assert len({layers[n] for n in names}) == 1
    attrs = dot.get_node('"L1.0"')[0].get_attributes()
    assert attrs["nas_width"] == "4" and "width" not in attrs  # Graphviz's width is in inches
    assert attrs["label"] == '"L1.0\\nmlp"'


def test_dot_quotes_awkward_task_names():
    g = build_space("snr_trans", (4,), {'say "hi"': 1, "x y:z": 1}, subnetworks=2, width=4)
    dot = _parse_dot(to_dot(g))
    assert len(_dot_nodes(dot)) == g.number_of_nodes()
    assert len(dot.get_edges()) == g.number_of_edges()


def test_task_subgraph_files_hold_one_head_each(gumbel, tmp_path):
    for u, v, d in gumbel.edges(data=True):  # task c passes only L2.2 in layer 2
        d["tasks"] = (
            list(TASKS) if u == "input" else ["c"] if v in ("L2.2", "head:c") else ["a", "b"]
        )
    paths = export_task_subgraphs(gumbel, tmp_path)
    assert [p.name for p in paths] == [f"{t}.{ext}" for t in TASKS for ext in ("graphml", "dot")]
    for task in TASKS:
        g = nx.read_graphml(tmp_path / f"{task}.graphml")
        assert [n for n, r in g.nodes(data="role") if r == "head"] == [head_id(task)]
        dot = _parse_dot((tmp_path / f"{task}.dot").read_text())
        assert [n for n in _dot_nodes(dot) if n.startswith('"head:')] == [f'"{head_id(task)}"']
        assert len(_dot_nodes(dot)) == g.number_of_nodes()
    c = nx.read_graphml(tmp_path / "c.graphml")
    assert {n for n in c if n.startswith("L2")} == {"L2.2"}


def test_task_file_names_are_safe_and_distinct(tmp_path, caplog):
    tasks = {"income > 50k": 1, "income>50k": 1, "../up": 1}
    g = build_space("snr_trans", (4,), tasks, subnetworks=2, width=4)
    for _, v, d in g.edges(data=True):  # "../up" loses its head
        d["tasks"] = ["income > 50k", "income>50k"] if v == "head:../up" else list(tasks)
    with caplog.at_level(logging.WARNING):
        paths = export_task_subgraphs(g, tmp_path)
    assert [p.name for p in paths] == [
        "income_50k.graphml",
        "income_50k.dot",
        "income_50k_1.graphml",
        "income_50k_1.dot",
        "up.graphml",
        "up.dot",
    ]
    assert all(p.parent == tmp_path for p in paths)
    assert nx.read_graphml(tmp_path / "up.graphml").number_of_nodes() == 0
    assert "unreachable" in caplog.text
