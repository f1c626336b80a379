"""The marks the subgraph figures are made of: label boxes, edge lines, the figure around them.

Both pictures in :mod:`nas_mtl.plots.subgraphs` draw the same way: boxes and edges at the
positions of a :class:`nas_mtl.plots.layout.Layout` (data units are inches), on a figure whose
geometry is set by hand rather than by a layout engine, under a title and a legend line. This
module holds those shared pieces so that the figure functions only say what each picture shows.
Label boxes use the padding and line spacing they were measured with
(:func:`nas_mtl.plots.layout.box_size`), which is what keeps drawn labels from overlapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text

from nas_mtl.plots.figures import new_figure
from nas_mtl.plots.layout import LINESPACING, PAD, Layout, box_size

NODE_LABEL = "node-label"  # gid of the node label texts, which label_boxes returns
EDGE = 0.15  # inches of white around a figure


def _segments(layout: Layout, edges: Iterable[tuple[str, str]]) -> list[list[tuple[float, ...]]]:
    """Edges from the top of the source box to the bottom of the target box."""
    out = []
    for u, v in edges:
        (xu, yu), (xv, yv) = layout.pos[u], layout.pos[v]
        out.append([(xu, yu + layout.size[u][1] / 2), (xv, yv - layout.size[v][1] / 2)])
    return out


def draw_edges(
    ax: Axes,
    layout: Layout,
    edges: list[tuple[str, str]],
    colour: str,
    styles: Sequence[tuple[float, float]],
    zorder: float,
) -> LineCollection:
    """Edges as one collection (fast with hundreds of edges); styles are (width, alpha)."""
    lines = LineCollection(
        _segments(layout, edges),
        linewidths=[w for w, _ in styles],
        colors=[to_rgba(colour, a) for _, a in styles],
        capstyle="round",
        zorder=zorder,
    )
    ax.add_collection(lines)
    return lines


def draw_box(
    ax: Axes,
    layout: Layout,
    node: str,
    face: Any,
    edge: Any,
    text: Any,
    linestyle: str = "-",
) -> Text:
    """A node's label in its box, padded and spaced as :func:`box_size` measured it."""
    x, y = layout.pos[node]
    return ax.text(
        x,
        y,
        layout.labels[node],
        fontsize=layout.fontsize,
        rotation=layout.rotation[node],
        ha="center",
        va="center",
        color=text,
        linespacing=LINESPACING,
        zorder=4,
        gid=NODE_LABEL,
        bbox={
            "boxstyle": f"round,pad={PAD}",
            "facecolor": face,
            "edgecolor": edge,
            "linewidth": 0.6,
            "linestyle": linestyle,
        },
    )


def frame_axes(ax: Axes, layout: Layout) -> None:
    """Data units are inches: the axes is sized to the layout plus a margin."""
    m = layout.margin
    ax.set_xlim(-m, layout.width + m)
    ax.set_ylim(-m, layout.height + m)
    ax.set_axis_off()


def manual_figure(width: float, height: float) -> Figure:
    """A figure with manual geometry (positions in inches) and a renderer to measure with."""
    fig = new_figure(width, height)
    fig.set_layout_engine(None)
    FigureCanvasAgg(fig)
    return fig


@dataclass(frozen=True)
class Header:
    """A title and a legend line above the panels; the figure is at least this wide."""

    title: str
    legend: str
    fontsize: float

    @property
    def width(self) -> float:
        return max(
            box_size(self.title, self.fontsize + 1)[0], box_size(self.legend, self.fontsize)[0]
        )

    @property
    def height(self) -> float:
        return box_size(f"{self.title}\n{self.legend}", self.fontsize + 1)[1] + self.fontsize / 72

    def draw(self, fig: Figure, top: float) -> None:
        y = 1 - top / fig.get_figheight()
        fig.text(0.5, y, self.title, ha="center", va="top", fontsize=self.fontsize + 1)
        fig.text(
            0.5,
            y - 1.5 * (self.fontsize + 1) / 72 / fig.get_figheight(),
            self.legend,
            ha="center",
            va="top",
            fontsize=self.fontsize,
            color="#444444",
        )
