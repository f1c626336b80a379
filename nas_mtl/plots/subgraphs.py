"""Drawings of task-specific subgraphs: which components each task routes through, how surely.

Two pictures of one routing graph (a supernet or a derived architecture):

- :func:`draw_task_subgraphs`: small multiples, one panel per task. The whole graph is drawn in
  grey behind each panel and the task's subgraph (:func:`nas_mtl.model.graph.task_subgraph`) in
  colour, so panels compare at a glance: same layout, same scale.
- :func:`draw_overview`: the whole graph once, each component coloured by how many tasks use
  it (the sharing pattern of a Gumbel-Matrix search, Maziarz et al. 2019, as a graph);
  unused ones faded.

Edge line width and opacity encode the open probability of the search's gates when a search
log record is given (:func:`nas_mtl.plots.gate_log.edge_probabilities`), so a confident
allocation reads as thick lines and an undecided one as faint lines.

Boxes go where :func:`nas_mtl.plots.layout.layered_layout` puts them, sized for their labels,
so no two labels overlap; :func:`label_boxes` returns the drawn boxes so tests can check that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from nas_mtl.errors import GraphError
from nas_mtl.model.graph import head_id, task_subgraph
from nas_mtl.plots.canvas import (
    EDGE,
    NODE_LABEL,
    Header,
    draw_box,
    draw_edges,
    frame_axes,
    manual_figure,
)
from nas_mtl.plots.figures import save_figure
from nas_mtl.plots.gate_log import EdgeProbabilities, open_probability
from nas_mtl.plots.layout import (
    MAX_TITLE,
    Layout,
    box_size,
    font_size,
    layer_rows,
    layered_layout,
    node_label,
    shorten,
)

TASK_COLOUR = "#1f5fa8"  # one colour in every panel: small multiples share one encoding
BACKGROUND = "#c9c9c9"  # the greyed-out full graph
FADED_TEXT = "#8f8f8f"
UNREACHABLE = "#b2182b"
UNREACHABLE_NOTE = "head unreachable:\nno path from the input"
GREY_EDGE = (0.5, 0.7)  # (width, alpha) of the greyed-out graph's edges
OVERVIEW_CMAP = "YlGnBu"


def edge_style(p: float | None, width: float = 2.6) -> tuple[float, float]:
    """(line width in points, alpha) of an edge: both grow with P(open); solid when unknown.

    A closed edge (p = 0) stays faintly visible, so a panel still shows what was searched.
    """
    if p is None:
        return 0.45 * width, 1.0
    p = min(max(float(p), 0.0), 1.0)
    return 0.15 * width + 0.85 * width * p, 0.2 + 0.8 * p


# ------------------------------------------------------------------ drawing
@dataclass
class Panel:
    """What one drawn panel holds, for callers and tests to inspect."""

    ax: Axes
    labels: dict[str, Text]
    edges: list[tuple[str, str]] = field(default_factory=list)  # the highlighted edges
    collection: LineCollection | None = None  # their lines, in ``edges`` order
    note: Text | None = None

    def edge_width(self, u: str, v: str) -> float:
        """The drawn line width (points) of a highlighted edge."""
        if self.collection is None:
            raise KeyError(f"no highlighted edge {u} -> {v} in this panel")
        return float(self.collection.get_linewidths()[self.edges.index((u, v))])


@dataclass
class Drawing:
    """A figure and its panels by name (task names, or "overview")."""

    figure: Figure
    panels: dict[str, Panel]

    def save(self, stem: str | Path) -> list[Path]:
        return save_figure(self.figure, stem)


def draw_task_panel(
    ax: Axes,
    graph: nx.DiGraph,
    task: str,
    layout: Layout,
    probabilities: EdgeProbabilities | None = None,
) -> Panel:
    """One task's panel: the graph in grey, the task's subgraph in colour on top.

    ``layout`` must place every non-head node and ``head:<task>`` (see
    :func:`task_subgraphs_figure`). A task whose head cannot be reached from the input gets
    the grey graph and a note instead of a subgraph.
    """
    head = head_id(task)
    drawn = [n for n in graph.nodes if graph.nodes[n].get("role") != "head" or n == head]
    shown = set(drawn)
    sub = task_subgraph(graph, task)
    frame_axes(ax, layout)
    background = [(u, v) for u, v in graph.edges if u in shown and v in shown]
    draw_edges(ax, layout, background, BACKGROUND, [GREY_EDGE] * len(background), zorder=1)
    panel = Panel(ax=ax, labels={})
    if sub.number_of_edges():
        edges = [(u, v) for u, v in graph.edges if sub.has_edge(u, v)]
        styles = [
            edge_style(
                None if probabilities is None else open_probability(probabilities, task, u, v)
            )
            for u, v in edges
        ]
        panel.edges = edges
        panel.collection = draw_edges(ax, layout, edges, TASK_COLOUR, styles, zorder=2)
    tint = to_rgba(TASK_COLOUR, 0.14)
    for n in drawn:
        if n in sub:
            panel.labels[n] = draw_box(ax, layout, n, tint, TASK_COLOUR, "black")
        elif n == head:
            panel.labels[n] = draw_box(ax, layout, n, "white", UNREACHABLE, UNREACHABLE, "--")
        else:
            panel.labels[n] = draw_box(ax, layout, n, "white", BACKGROUND, FADED_TEXT)
    if not sub.number_of_edges():
        panel.note = ax.text(
            layout.width / 2,
            layout.height / 2,
            UNREACHABLE_NOTE,
            fontsize=layout.fontsize + 1,
            color=UNREACHABLE,
            ha="center",
            va="center",
            zorder=6,
            gid="note",
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": UNREACHABLE},
        )
    used = sum(1 for n in sub if sub.nodes[n].get("role") == "component")
    total = sum(1 for n in graph if graph.nodes[n].get("role") == "component")
    title = f"{shorten(task, MAX_TITLE)}: " + (
        f"{used}/{total} components" if sub.number_of_edges() else "unreachable"
    )
    ax.set_title(title, fontsize=layout.fontsize + 1.5, pad=2)
    return panel


def _grid(n: int, cell_w: float, cell_h: float, aspect: float = 1.8) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: few empty cells, the figure about ``aspect`` wide."""
    guess = max(round(math.sqrt(aspect * n * cell_h / cell_w)), 1)
    options = [c for c in (guess - 1, guess, guess + 1) if 1 <= c <= n] or [1]

    def cost(cols: int) -> tuple[int, float]:
        rows = math.ceil(n / cols)
        return rows * cols - n, abs(math.log(cols * cell_w / (rows * cell_h) / aspect))

    cols = min(options, key=cost)
    return math.ceil(n / cols), cols


def task_subgraphs_figure(
    graph: nx.DiGraph,
    probabilities: EdgeProbabilities | None = None,
    tasks: Sequence[str] | None = None,
) -> Drawing:
    """Small multiples: one panel per task (default: all, in the graph's order).

    Every panel has the same layout: the graph's components plus the panel's own head,
    centred in the top row (the other heads belong to other panels).
    """
    tasks = list(graph.graph["tasks"] if tasks is None else tasks)
    if not tasks:
        raise GraphError("no tasks to draw: the graph names none and none were given")
    missing = [t for t in tasks if head_id(t) not in graph]
    if missing:
        raise GraphError(
            f"tasks {missing} have no head in the graph; its tasks are {graph.graph['tasks']}"
        )
    body = [n for n in graph.nodes if graph.nodes[n].get("role") != "head"]
    widest = max((len(r) for r in layer_rows(graph, body)), default=1)
    fs = font_size(widest, len(tasks))
    title_fs = fs + 1.5
    # the widest head label and panel title decide the layout all panels share
    heads = [head_id(t) for t in tasks]
    wide_head = max(heads, key=lambda h: box_size(node_label(graph, h), fs)[0])
    min_w = max(
        box_size(f"{shorten(t, MAX_TITLE)}: 000/000 components", title_fs)[0] for t in tasks
    )
    min_w = max(min_w, 1.1 * box_size(UNREACHABLE_NOTE, fs + 1)[0])
    base = layered_layout(graph, body + [wide_head], fs, min_width=min_w)
    title_h = box_size("Tg", title_fs)[1] + 2 / 72
    m, gap = base.margin, 3 * fs / 72
    panel_w, panel_h = base.width + 2 * m, base.height + 2 * m
    cell_w, cell_h = panel_w + gap, panel_h + title_h + gap
    nrows, ncols = _grid(len(tasks), cell_w, cell_h)
    what = "line width and opacity: P(open)" if probabilities is not None else "all edges solid"
    header = Header(
        f"Task subgraphs of {graph.graph.get('name', 'a routing graph')} ({len(tasks)} tasks)",
        f"blue: used by the task  ·  grey: the whole graph  ·  {what}",
        fs + 0.5,
    )
    grid_w = ncols * cell_w
    fig = manual_figure(
        max(grid_w, header.width) + 2 * EDGE, nrows * cell_h + header.height + 2 * EDGE
    )
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    header.draw(fig, EDGE)
    x0 = (fw - grid_w) / 2
    panels: dict[str, Panel] = {}
    for i, (task, head) in enumerate(zip(tasks, heads, strict=True)):
        r, c = divmod(i, ncols)
        left = x0 + c * cell_w + gap / 2
        bottom = fh - EDGE - header.height - (r + 1) * cell_h + gap / 2
        ax = fig.add_axes((left / fw, bottom / fh, panel_w / fw, panel_h / fh))
        layout = _with_head(base, wide_head, head, node_label(graph, head), fs)
        panels[task] = draw_task_panel(ax, graph, task, layout, probabilities)
    return Drawing(fig, panels)


def _with_head(base: Layout, slot: str, head: str, label: str, fontsize: float) -> Layout:
    """``base`` with the head slot taken by ``head`` (same place, its own label and box)."""
    pos = {n: p for n, p in base.pos.items() if n != slot} | {head: base.pos[slot]}
    size = {n: s for n, s in base.size.items() if n != slot}
    size[head] = box_size(label, fontsize, base.rotation[slot])
    labels = {n: t for n, t in base.labels.items() if n != slot} | {head: label}
    rotation = {n: a for n, a in base.rotation.items() if n != slot} | {head: base.rotation[slot]}
    return Layout(pos, size, labels, rotation, base.width, base.height, base.fontsize)


def draw_task_subgraphs(
    graph: nx.DiGraph,
    stem: str | Path,
    probabilities: EdgeProbabilities | None = None,
    tasks: Sequence[str] | None = None,
) -> list[Path]:
    """Write the per-task panels (:func:`task_subgraphs_figure`) to ``stem``.png/.svg."""
    return task_subgraphs_figure(graph, probabilities, tasks).save(stem)


def task_users(graph: nx.DiGraph) -> tuple[dict[str, int], dict[tuple[str, str], list[str]]]:
    """How many tasks use each node, and which tasks use each edge (via task subgraphs)."""
    nodes = dict.fromkeys(graph.nodes, 0)
    edges: dict[tuple[str, str], list[str]] = {e: [] for e in graph.edges}
    for t in graph.graph["tasks"]:
        sub = task_subgraph(graph, t)
        for n in sub:
            nodes[n] += 1
        for e in sub.edges:
            edges[e].append(t)
    return nodes, edges


def _text_colour(rgba: Sequence[float]) -> str:
    """Black on light boxes, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def overview_figure(graph: nx.DiGraph, probabilities: EdgeProbabilities | None = None) -> Drawing:
    """The whole graph; components coloured by how many tasks use them, unused ones faded.

    An edge's width and opacity show its largest P(open) over the tasks that use it (an edge
    is kept when any task keeps it); without probabilities, the share of tasks that use it.
    Edges no task uses are grey.
    """
    tasks = list(graph.graph["tasks"])
    n_tasks = max(len(tasks), 1)
    count, users = task_users(graph)
    comps = [n for n in graph.nodes if graph.nodes[n].get("role") == "component"]
    body = [n for n in graph.nodes if graph.nodes[n].get("role") != "head"]
    widest = max((len(r) for r in layer_rows(graph, body)), default=1)
    fs = font_size(widest, 1)
    layout = layered_layout(graph, fontsize=fs)
    m = layout.margin
    faded = sum(1 for n in comps if not count[n])
    what = "P(open), largest over its tasks" if probabilities is not None else "share of tasks"
    header = Header(
        f"{graph.graph.get('name', 'Routing graph')}: components by the number of tasks using "
        f"them ({len(tasks)} tasks)",
        f"faded: unused ({faded} of {len(comps)})  ·  edge width and opacity: {what}",
        fs + 0.5,
    )
    bar_label = "tasks using the component"
    bar_w, bar_gap = 0.14, 0.25
    label_w = box_size(f"{n_tasks}", fs)[0] + box_size(bar_label, fs)[1] + 0.25
    bar_h = max(layout.height, box_size(bar_label, fs)[0] + 0.1)
    panel_w, panel_h = layout.width + 2 * m, layout.height + 2 * m
    body_w, body_h = panel_w + bar_gap + bar_w + label_w, max(panel_h, bar_h + 2 * m)
    fig = manual_figure(max(body_w, header.width) + 2 * EDGE, body_h + header.height + 2 * EDGE)
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    header.draw(fig, EDGE)
    x0 = (fw - body_w) / 2
    ax = fig.add_axes((x0 / fw, (EDGE + (body_h - panel_h) / 2) / fh, panel_w / fw, panel_h / fh))
    frame_axes(ax, layout)
    used = [e for e in graph.edges if users[e]]
    unused = [e for e in graph.edges if not users[e]]
    draw_edges(ax, layout, unused, BACKGROUND, [GREY_EDGE] * len(unused), zorder=1)
    styles = [
        edge_style(
            len(users[e]) / n_tasks
            if probabilities is None
            else max(open_probability(probabilities, t, *e) for t in users[e])
        )
        for e in used
    ]
    panel = Panel(ax=ax, labels={}, edges=used)
    panel.collection = draw_edges(ax, layout, used, "#404040", styles, zorder=2)
    cmap = colormaps[OVERVIEW_CMAP]
    norm = BoundaryNorm(np.arange(0.5, n_tasks + 1.5), cmap.N)
    for n in graph.nodes:
        role = graph.nodes[n].get("role")
        if role == "component" and count[n]:
            face = cmap(norm(count[n]))
            panel.labels[n] = draw_box(ax, layout, n, face, "#303030", _text_colour(face))
        elif role == "component":
            panel.labels[n] = draw_box(ax, layout, n, "white", BACKGROUND, FADED_TEXT)
        elif role == "head" and not count[n]:
            panel.labels[n] = draw_box(ax, layout, n, "white", UNREACHABLE, UNREACHABLE, "--")
        else:
            panel.labels[n] = draw_box(ax, layout, n, "white", "#303030", "black")
    cax = fig.add_axes(
        (
            (x0 + panel_w + bar_gap) / fw,
            (EDGE + (body_h - bar_h) / 2) / fh,
            bar_w / fw,
            bar_h / fh,
        )
    )
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.locator = MaxNLocator(nbins=min(n_tasks, 10), integer=True)
    bar.update_ticks()
    bar.ax.tick_params(labelsize=fs)
    bar.set_label(bar_label, fontsize=fs)
    return Drawing(fig, {"overview": panel})


def draw_overview(
    graph: nx.DiGraph, stem: str | Path, probabilities: EdgeProbabilities | None = None
) -> list[Path]:
    """Write the overview (:func:`overview_figure`) to ``stem``.png/.svg."""
    return overview_figure(graph, probabilities).save(stem)


def label_boxes(ax: Axes) -> list[Bbox]:
    """The boxes of a panel's node labels in display (pixel) coordinates, as they are saved.

    Each box is laid out with the figure's renderer (no full draw, so checking 20 panels is
    cheap); a test checks that none intersect and all lie inside their axes.
    """
    renderer = ax.figure.canvas.get_renderer()
    boxes = []
    for t in ax.texts:
        if t.get_gid() != NODE_LABEL:
            continue
        patch = t.get_bbox_patch()
        if patch is None:
            boxes.append(t.get_window_extent(renderer))
            continue
        t.update_bbox_position_size(renderer)
        boxes.append(patch.get_window_extent(renderer))
    return boxes
