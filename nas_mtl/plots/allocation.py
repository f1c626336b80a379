"""Which task uses what: the allocation heatmap and the sharing ratio per layer.

The heatmap is the Gumbel-Matrix paper's picture (Maziarz et al. 2019, Fig. 3): tasks × routed
components, coloured by P(task uses component) at the selected search epoch, with a dot where
the derived architecture kept it. For gates that decide edges rather than components (SNR's
hard-concrete gates) the columns are the gated edges. ``docs/plots.md`` defines both figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from nas_mtl.model.graph import head_id, node_layers
from nas_mtl.plots.figures import new_figure, save_figure

MAX_LABELLED_COLUMNS = 80  # beyond this the column names are unreadable: layers are labelled


@dataclass(frozen=True)
class Allocation:
    """Tasks × columns (components or edges) at one search epoch."""

    tasks: tuple[str, ...]
    columns: tuple[str, ...]
    layers: tuple[int, ...]  # the layer of each column's source, for separators
    probability: np.ndarray  # (T, K) P(open); NaN where a column cannot serve the task
    kept: np.ndarray  # (T, K) bool: the derived architecture uses it


def _kept_by(arch: nx.DiGraph | None, task: str, column: tuple[str, str] | str) -> bool:
    if arch is None:
        return False
    if isinstance(column, str):  # a component: does the task's derived subgraph pass it?
        return column in arch and task in arch.nodes[column].get("tasks", [])
    u, v = column
    edge = (u, head_id(task)) if v == "head" else column
    return arch.has_edge(*edge) and task in arch.edges[edge].get("tasks", [])


def allocation(
    record: Mapping[str, Any], tasks: Sequence[str], arch: nx.DiGraph | None = None
) -> Allocation:
    """The allocation at a search-log epoch (its ``gates`` snapshot), kept cells from ``arch``.

    Gumbel variables are tied per source component, so their column is the component; other
    learned gates give one column per gated edge, except that a component's edges into the
    heads share one column ``u→head`` (each task's row holds the edge into its own head).
    """
    tasks = tuple(tasks)
    heads = {head_id(t): t for t in tasks}
    cols: dict[tuple[str, str] | str, np.ndarray] = {}
    block_of: dict[str, int] = {}  # blocks run in layer order: a source's block is its layer
    for gate in record.get("gates", []):
        p = np.asarray(gate["open_probability"], dtype=float)  # (rows, J, C)
        p = np.broadcast_to(p, (len(tasks), *p.shape[1:])) if p.shape[0] == 1 else p
        for j, u in enumerate(gate["src"]):
            block_of[u] = int(gate["block"])
            if gate["kind"] == "gumbel":
                cols[u] = p[:, j, :].max(axis=1)
                continue
            for c, v in enumerate(gate["dst"]):
                col = p[:, j, c]
                if not col.any():  # not an edge of the graph (gates mask those to exactly 0)
                    continue
                if v in heads:  # u's edges into the heads share a column: each task its own
                    key = (u, "head")
                    cols.setdefault(key, np.full(len(tasks), np.nan))
                    cols[key][tasks.index(heads[v])] = col[tasks.index(heads[v])]
                else:
                    cols[(u, v)] = col.copy()
    names = list(cols)
    src_of = [n if isinstance(n, str) else n[0] for n in names]
    return Allocation(
        tasks=tasks,
        columns=tuple(n if isinstance(n, str) else f"{n[0]}→{n[1]}" for n in names),
        layers=tuple(block_of[s] for s in src_of),
        probability=np.stack([cols[n] for n in names], axis=1)
        if names
        else np.zeros((len(tasks), 0)),
        kept=np.array([[_kept_by(arch, t, n) for n in names] for t in tasks], dtype=bool).reshape(
            len(tasks), len(names)
        ),
    )


def draw_allocation(
    alloc: Allocation, stem: str | Path, order: Sequence[str] | None = None, title: str = ""
) -> list[Path]:
    """Heatmap of P(open), tasks (rows, in ``order``) × columns, dots on the kept cells."""
    rows = [alloc.tasks.index(t) for t in order] if order is not None else range(len(alloc.tasks))
    rows = list(rows)
    prob, kept = alloc.probability[rows], alloc.kept[rows]
    T, K = prob.shape
    fig = new_figure(min(2.5 + 0.22 * K, 22.0), 1.4 + 0.28 * T)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(prob), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ys, xs = np.nonzero(kept)
    ax.scatter(xs, ys, s=10, c="white", edgecolors="black", linewidths=0.4, label="kept")
    ax.set_yticks(range(T), [alloc.tasks[r] for r in rows], fontsize=8)
    if K <= MAX_LABELLED_COLUMNS:
        ax.set_xticks(range(K), alloc.columns, rotation=90, fontsize=7)
    else:
        starts = [i for i in range(K) if i == 0 or alloc.layers[i] != alloc.layers[i - 1]]
        ax.set_xticks(starts, [f"layer {alloc.layers[i]}" for i in starts], fontsize=8)
    for i in range(1, K):  # layer separators
        if alloc.layers[i] != alloc.layers[i - 1]:
            ax.axvline(i - 0.5, color="white", linewidth=1.5)
    ax.set_xlabel(
        "components (gate variable's source)"
        if "→" not in "".join(alloc.columns)
        else "gated edges"
    )
    ax.set_title(title or "allocation: P(open) at the selected epoch; dots: derived", fontsize=9)
    fig.colorbar(image, ax=ax, label="P(open)", fraction=0.04, pad=0.01)
    if len(xs):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, -0.02), fontsize=7, frameon=False)
    return save_figure(fig, stem)


@dataclass(frozen=True)
class LayerSharing:
    layer: int
    components: int  # used by at least one task
    shared: int  # used by at least two tasks
    ratio: float  # mean tasks per used component ÷ tasks: 1 = all shared, 1/T = none


def sharing_by_layer(arch: nx.DiGraph) -> list[LayerSharing]:
    """Per component layer of a derived architecture, how widely its components are shared."""
    tasks = arch.graph["tasks"]
    layers = node_layers(arch)
    users: dict[int, list[int]] = {}
    for n, d in arch.nodes(data=True):
        if d.get("role") == "component" and d.get("tasks"):
            users.setdefault(layers[n], []).append(len(d["tasks"]))
    return [
        LayerSharing(
            layer=layer,
            components=len(u),
            shared=sum(1 for x in u if x > 1),
            ratio=float(np.mean(u)) / len(tasks),
        )
        for layer, u in sorted(users.items())
    ]


def draw_sharing(sharing: Sequence[LayerSharing], n_tasks: int, stem: str | Path) -> list[Path]:
    """Bars of the sharing ratio per layer, with the no-sharing floor 1/T marked."""
    fig = new_figure(max(4.2, 0.6 * len(sharing) + 2.4), 3.0)
    ax = fig.add_subplot()
    xs = np.arange(len(sharing))
    ax.bar(xs, [s.ratio for s in sharing], color="tab:blue")
    for x, s in zip(xs, sharing, strict=True):
        ax.annotate(
            f"{s.shared}/{s.components}",
            (x, s.ratio),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.axhline(1.0 / n_tasks, color="grey", linestyle="--", linewidth=1, label="no sharing (1/T)")
    ax.set_xticks(xs, [str(s.layer) for s in sharing])
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("layer")
    ax.set_ylabel("tasks per used component ÷ T")
    ax.set_title("sharing per layer\n(bar labels: shared / used components)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, stem)
