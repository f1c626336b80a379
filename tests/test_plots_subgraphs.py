"""Task-subgraph drawings: readable at paper scale, edges encode P(open), dead heads noted."""

from __future__ import annotations

import itertools
import json
import random

import networkx as nx
import pytest
import torch
from matplotlib.colors import to_rgba

from nas_mtl.data import GUMBEL_MATRIX_ALPHABETS, load_dataset
from nas_mtl.errors import GraphError
from nas_mtl.model.graph import head_id, node_layers, task_subgraph
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.plots.gate_log import edge_probabilities
from nas_mtl.plots.layout import MAX_TASK, MIN_FONT, layered_layout
from nas_mtl.plots.subgraphs import (
    UNREACHABLE,
    draw_overview,
    draw_task_subgraphs,
    edge_style,
    label_boxes,
    overview_figure,
    task_subgraphs_figure,
)
from nas_mtl.stages.derive import derive
from nas_mtl.stages.search import SEARCH_LOG, search
from nas_mtl.study import SearchConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def derived_like(g: nx.DiGraph, seed: int = 0) -> nx.DiGraph:
    """Each task keeps 1-3 random components per routed layer, as a derived graph lists them."""
    rng = random.Random(seed)
    layers = node_layers(g)
    rows: dict[int, list[str]] = {}
    for n, role in g.nodes(data="role"):
        if role == "component":
            rows.setdefault(layers[n], []).append(n)
    for _, _, d in g.edges(data=True):
        d["tasks"] = []
    for t in g.graph["tasks"]:
        keep = {"input", head_id(t)}
        for row in rows.values():
            keep |= set(row) if len(row) == 1 else set(rng.sample(row, rng.randint(1, 3)))
        for u, v, d in g.edges(data=True):
            if u in keep and v in keep:
                d["tasks"].append(t)
    return g


@pytest.fixture(scope="module")
def omniglot() -> nx.DiGraph:
    """The paper-scale Omniglot space: conv stem, 8 routed layers of 6 components, 20 tasks."""
    tasks = {a: 20 for a in GUMBEL_MATRIX_ALPHABETS}
    g = build_space("gumbel_matrix", (1, 28, 28), tasks, image_layers=8, strides=[1, 2] * 4)
    return derived_like(g)


@pytest.fixture
def tabular() -> nx.DiGraph:
    return build_space("snr_trans", (16,), {"a": 1, "b": 1}, subnetworks=3)


def assert_readable(drawing) -> None:
    """No two label boxes of a panel intersect, every box lies inside its panel, panels and
    titles lie inside the figure and apart from each other."""
    fig = drawing.figure
    renderer = fig.canvas.get_renderer()
    frames, titles = [], []
    for name, panel in drawing.panels.items():
        boxes = label_boxes(panel.ax)
        assert len(boxes) == len(panel.labels) > 0
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), f"panel {name}: label boxes {a} and {b} intersect"
        frame = panel.ax.get_window_extent(renderer)
        for b in boxes:
            assert frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
        frames.append(frame)
        if panel.ax.get_title():
            titles.append(panel.ax.title.get_window_extent(renderer))
    for box in frames + titles:
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and 0 <= box.y0 and box.y1 <= fig.bbox.y1
    for a, b in itertools.combinations(frames, 2):
        assert not a.overlaps(b)
    for a, b in itertools.combinations(titles, 2):
        assert not a.overlaps(b)


def assert_written(paths, stem) -> None:
    assert paths == [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    assert b"<svg" in paths[1].read_bytes()[:1000]


def test_paper_scale_omniglot_panels_never_overlap_labels(omniglot):
    drawing = task_subgraphs_figure(omniglot)
    assert list(drawing.panels) == list(GUMBEL_MATRIX_ALPHABETS)
    assert_readable(drawing)
    for task, panel in drawing.panels.items():
        sub = task_subgraph(omniglot, task)
        assert set(panel.edges) == set(sub.edges) and panel.edges
        assert panel.labels[head_id(task)].get_fontsize() >= MIN_FONT
        assert len(panel.labels[head_id(task)].get_text()) <= MAX_TASK
        assert panel.labels[head_id(task)].get_bbox_patch().get_edgecolor() == to_rgba("#1f5fa8")


@pytest.mark.slow
def test_paper_scale_omniglot_panels_are_written_as_png_and_svg(omniglot, tmp_path):
    # about 7 s: 20 panels of 50 labelled boxes rendered twice (PNG and SVG)
    stem = tmp_path / "panels"
    assert_written(draw_task_subgraphs(omniglot, stem), stem)


def test_paper_scale_overview_colours_components_by_their_users(omniglot, tmp_path):
    drawing = overview_figure(omniglot)
    assert_readable(drawing)
    panel = drawing.panels["overview"]
    heads = [panel.labels[head_id(t)] for t in omniglot.graph["tasks"]]
    assert all(h.get_rotation() == 90 for h in heads)  # 20 long names would not fit a row
    assert heads[4].get_text() == "Old_Church_Sl…"
    users = {
        n: sum(n in task_subgraph(omniglot, t) for t in omniglot.graph["tasks"])
        for n in panel.labels
    }
    comps = sorted((n for n in users if n.startswith("L")), key=users.get)
    lum = [sum(panel.labels[n].get_bbox_patch().get_facecolor()[:3]) for n in comps]
    assert all(a >= b for a, b in zip(lum, lum[1:], strict=False))  # more users, darker
    assert users[comps[0]] < users[comps[-1]]
    assert_written(draw_overview(omniglot, tmp_path / "overview"), tmp_path / "overview")


def _record(g: nx.DiGraph) -> dict:
    """A search-log line: shared gates with distinct probabilities on every routed edge."""
    gates = []
    for layer in (1, 2):
        src = [n for n, d in g.nodes(data=True) if d.get("layer") == layer]
        dst = [n for n, d in g.nodes(data=True) if d.get("layer") == layer + 1]
        probs = [
            [(1 + j * len(dst) + c) / (len(src) * len(dst) + 1) for c in range(len(dst))]
            for j in range(len(src))
        ]
        gates.append(
            {"block": layer, "src": src, "dst": dst, "scope": "shared", "open_probability": [probs]}
        )
    return {"epoch": 3, "gates": gates}


def test_edge_widths_are_ordered_like_the_open_probabilities(tabular, tmp_path):
    probs = edge_probabilities(_record(tabular), tabular.graph["tasks"])
    panel = task_subgraphs_figure(tabular, probs).panels["a"]
    gated = sorted((e for e in panel.edges if e[0] != "input"), key=lambda e: probs[("a", *e)])
    assert len(gated) == 3 * 3 + 3  # L1 -> L2 and L2 -> head:a
    widths = [panel.edge_width(*e) for e in gated]
    assert all(a < b for a, b in zip(widths, widths[1:], strict=False))
    alphas = [panel.collection.get_colors()[panel.edges.index(e)][3] for e in gated]
    assert all(a < b for a, b in zip(alphas, alphas[1:], strict=False))
    # edges without a learned gate are always open: the widest lines
    assert panel.edge_width("input", "L1.0") == edge_style(1.0)[0] > max(widths)
    assert_written(draw_task_subgraphs(tabular, tmp_path / "t", probs), tmp_path / "t")


def test_without_probabilities_every_edge_is_solid(tabular):
    panel = task_subgraphs_figure(tabular).panels["b"]
    assert {panel.edge_width(*e) for e in panel.edges} == {edge_style(None)[0]}
    assert {c[3] for c in panel.collection.get_colors()} == {1.0}


def test_edge_probabilities_read_task_and_shared_rows():
    rec = {
        "gates": [
            {
                "src": ["x"],
                "dst": ["y", "z"],
                "scope": "task",
                "open_probability": [[[0.1, 0.2]], [[0.3, 0.4]]],
            },
            {"src": ["y"], "dst": ["head:a"], "scope": "shared", "open_probability": [[[0.9]]]},
        ]
    }
    probs = edge_probabilities(rec, ["a", "b"])
    assert probs == {
        ("a", "x", "y"): 0.1,
        ("a", "x", "z"): 0.2,
        ("b", "x", "y"): 0.3,
        ("b", "x", "z"): 0.4,
        ("a", "y", "head:a"): 0.9,
        ("b", "y", "head:a"): 0.9,
    }
    with pytest.raises(GraphError, match="expected 3"):
        edge_probabilities(rec, ["a", "b", "c"])


def test_a_task_with_an_unreachable_head_gets_an_empty_panel_with_a_note(tabular, tmp_path):
    for _, v, d in tabular.edges(data=True):
        d["tasks"] = ["a"] if v == "head:b" else ["a", "b"]  # nothing leads into head:b for b
    drawing = task_subgraphs_figure(tabular)
    dead, alive = drawing.panels["b"], drawing.panels["a"]
    assert dead.edges == [] and dead.collection is None
    assert "unreachable" in dead.note.get_text() and "unreachable" in dead.ax.get_title()
    assert dead.labels["head:b"].get_color() == UNREACHABLE
    assert alive.note is None and len(alive.edges) == tabular.number_of_edges() - 3
    assert_readable(drawing)
    overview = overview_figure(tabular).panels["overview"]
    assert overview.labels["head:b"].get_bbox_patch().get_linestyle() == "--"
    assert_written(draw_task_subgraphs(tabular, tmp_path / "dead"), tmp_path / "dead")


def test_layout_is_layered_bottom_up_in_graph_order(tabular):
    layout = layered_layout(tabular)
    layers = node_layers(tabular)
    assert (
        layout.pos["input"][1]
        < layout.pos["L1.0"][1]
        < layout.pos["L2.0"][1]
        < layout.pos["head:a"][1]
    )
    for n, m in itertools.combinations(tabular.nodes, 2):
        if layers[n] == layers[m]:
            assert layout.pos[n][1] == layout.pos[m][1] and layout.pos[n][0] < layout.pos[m][0]
    assert layout.pos["input"][0] == pytest.approx(layout.width / 2)  # a lone node is centred


def test_a_real_search_log_draws_the_derived_architecture(tmp_path):
    data = load_dataset("synthetic", n_train=256, n_val=64, n_test=64, input_dim=8, groups=[2])
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    net = Supernet(
        build_space("gumbel_matrix", data.input_shape, out_dims, layers=2, components=3, width=4)
    )
    result = search(net, data, SearchConfig(epochs=2, batch_size=64), run_dir=tmp_path)
    last = json.loads((tmp_path / SEARCH_LOG).read_text().splitlines()[-1])
    tasks = list(out_dims)
    probs = edge_probabilities(last, tasks)
    arch = derive(result.supernet)
    assert {(t, u, v) for t in tasks for u, v in net.graph.edges if u != "input"} <= set(probs)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    drawing = task_subgraphs_figure(arch, probs)
    assert_readable(drawing)
    for t, panel in drawing.panels.items():
        assert set(panel.edges) == set(task_subgraph(arch, t).edges)
        for u, v in panel.edges:
            assert panel.edge_width(u, v) == pytest.approx(edge_style(probs.get((t, u, v), 1.0))[0])
