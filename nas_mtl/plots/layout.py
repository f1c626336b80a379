"""Layered layout of a routing graph: where each box goes and how big its label is.

Kept apart from the drawing (:mod:`nas_mtl.plots.subgraphs`) because the geometry is the hard
part to get right and is checked on its own: positions and sizes are plain numbers in inches,
computed before any axes exist, so a test can assert on them without rendering a figure.

The input is at the bottom, heads at the top, one row per layer
(:func:`nas_mtl.model.graph.node_layers`), nodes spread evenly in graph order. Every box is sized
from its label as matplotlib will render it (:func:`box_size`), so a row is always wide enough
for its boxes and labels never overlap, whatever the number of tasks or components; the font
shrinks (to a legible floor, :data:`MIN_FONT`) as rows and panels multiply
(:func:`font_size`), and the figure grows instead. Long names are shortened (:func:`shorten`)
so one name cannot widen a whole row.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from nas_mtl.model.graph import node_layers
from nas_mtl.plots.figures import DPI

MAX_FONT, MIN_FONT = 9.0, 5.5  # points; below 5.5 pt a 130 dpi PNG is not legible
PAD = 0.3  # box padding around a label, in font sizes (matplotlib's boxstyle pad)
HGAP, VGAP = 0.8, 2.2  # space between boxes in a row / between rows, in font sizes
LINESPACING = 1.1
MAX_NAME, MAX_TASK, MAX_TITLE = 12, 14, 28  # characters before a name is shortened with "…"
ROTATE_HEADS = 1.25  # rotate head labels when their row would be this much wider than the rest


# ------------------------------------------------------------------ labels and measuring
def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis; long names must not widen rows."""
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def node_label(graph: nx.DiGraph, node: str) -> str:
    """What a node's box says: the task for heads, "name\\nkind" for components."""
    data = graph.nodes[node]
    role = data.get("role")
    if role == "head":
        return shorten(str(data.get("task", node)), MAX_TASK)
    kind = data.get("kind")
    if role == "input" or not kind:
        return shorten(str(node), MAX_NAME)
    return f"{shorten(str(node), MAX_NAME)}\n{shorten(str(kind), MAX_NAME)}"


@functools.cache
def _scratch() -> tuple[Figure, Any]:
    """A figure and renderer used only to measure text (same dpi as saved figures)."""
    fig = Figure(dpi=DPI)
    return fig, FigureCanvasAgg(fig).get_renderer()


@functools.cache
def box_size(text: str, fontsize: float, rotation: float = 0.0) -> tuple[float, float]:
    """Width and height in inches of a label's box (text plus padding) as it will be drawn."""
    fig, renderer = _scratch()
    t = Text(0, 0, text, fontsize=fontsize, rotation=rotation, linespacing=LINESPACING)
    t.set_figure(fig)
    ext = t.get_window_extent(renderer)
    pad = 2 * PAD * fontsize / 72
    return ext.width / fig.dpi + pad, ext.height / fig.dpi + pad


def font_size(widest_row: int, panels: int) -> float:
    """Smaller text for longer rows and more panels, never below :data:`MIN_FONT`.

    The figure grows with the measured labels, so this only keeps it from growing without
    bound: 9 pt for a small graph alone, the floor for 20 panels.
    """
    return float(np.clip(MAX_FONT - 0.12 * widest_row - 0.2 * panels, MIN_FONT, MAX_FONT))


# ------------------------------------------------------------------ layout
@dataclass(frozen=True)
class Layout:
    """Where each box goes, in inches inside a panel (origin bottom left)."""

    pos: dict[str, tuple[float, float]]
    size: dict[str, tuple[float, float]]  # box width, height
    labels: dict[str, str]
    rotation: dict[str, float]
    width: float
    height: float
    fontsize: float

    @property
    def margin(self) -> float:
        return 0.5 * self.fontsize / 72


def layer_rows(graph: nx.DiGraph, nodes: Iterable[str]) -> list[list[str]]:
    """``nodes`` grouped by layer, lowest layer first, in graph order within a row."""
    layers = node_layers(graph)
    by_layer: dict[int, list[str]] = {}
    for n in nodes:  # graph order within a row
        by_layer.setdefault(layers[n], []).append(n)
    return [by_layer[k] for k in sorted(by_layer)]


def place_rows(
    rows: Sequence[Sequence[str]],
    size: Mapping[str, tuple[float, float]],
    hgap: float,
    vgap: float,
    min_width: float = 0.0,
) -> tuple[dict[str, tuple[float, float]], float, float]:
    """Box centres for rows stacked bottom-up, each row's boxes spread evenly over the width.

    The width is the widest row's need (boxes + gaps), so every slot holds its box: boxes of
    one row cannot overlap, and rows are ``vgap`` apart. Returns (centres, width, height).
    """
    width = max([min_width] + [len(r) * (max(size[n][0] for n in r) + hgap) for r in rows if r])
    pos: dict[str, tuple[float, float]] = {}
    y = 0.0
    for row in rows:
        if not row:
            continue
        h = max(size[n][1] for n in row)
        step = width / len(row)
        for i, n in enumerate(row):
            pos[n] = ((i + 0.5) * step, y + h / 2)
        y += h + vgap
    return pos, width, max(y - vgap, 0.0)


def layered_layout(
    graph: nx.DiGraph,
    nodes: Sequence[str] | None = None,
    fontsize: float = MAX_FONT,
    labels: Mapping[str, str] | None = None,
    min_width: float = 0.0,
) -> Layout:
    """The layered layout of ``nodes`` (default: all) with boxes sized for their labels.

    Heads are rotated a quarter turn when their row would otherwise be much wider than the
    component rows (many tasks or long task names), so the figure stays compact.
    """
    nodes = list(graph.nodes) if nodes is None else list(nodes)
    labels = {n: (labels or {}).get(n) or node_label(graph, n) for n in nodes}
    rows = layer_rows(graph, nodes)
    em = fontsize / 72
    rotation = dict.fromkeys(nodes, 0.0)
    size = {n: box_size(labels[n], fontsize) for n in nodes}

    def need(row: Sequence[str]) -> float:
        return len(row) * (max(size[n][0] for n in row) + HGAP * em)

    heads = [r for r in rows if all(graph.nodes[n].get("role") == "head" for n in r)]
    others = [need(r) for r in rows if r not in heads]
    for row in heads:
        turned = {n: box_size(labels[n], fontsize, 90.0) for n in row}
        wide = need(row) > ROTATE_HEADS * max(others + [min_width, 1e-9])
        if wide and len(row) * (max(w for w, _ in turned.values()) + HGAP * em) < need(row):
            size.update(turned)
            rotation.update(dict.fromkeys(row, 90.0))
    pos, width, height = place_rows(rows, size, HGAP * em, VGAP * em, min_width)
    return Layout(pos, size, labels, rotation, width, height, fontsize)
