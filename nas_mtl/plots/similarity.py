"""Task similarity: a dendrogram beside the similarity heatmap, tasks in dendrogram order.

Reordering by the dendrogram's leaves turns task groups into blocks on the diagonal, so a user
sees at once whether the clustering is clear-cut or a matter of taste (``docs/plots.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import squareform

from nas_mtl.plots.figures import new_figure, save_figure

GROUP_COLOURS = "tab10"


def leaf_order(sim: np.ndarray) -> list[int]:
    """Task indices in the order of an average-linkage dendrogram on 1 − similarity."""
    if sim.shape[0] < 2:
        return list(range(sim.shape[0]))
    dist = np.clip(1.0 - (sim + sim.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    return [
        int(i) for i in dendrogram(linkage(squareform(dist), "average"), no_plot=True)["leaves"]
    ]


def matched_to(labels: Mapping[str, int], truth: Mapping[str, int]) -> dict[str, int]:
    """``labels`` renamed so that each found group carries the id of the known group it
    overlaps most (a one-to-one assignment): the two colour strips then agree where the
    groups do. Found groups beyond the known ones get fresh ids."""
    found_ids = sorted(set(labels.values()))
    known_ids = sorted(set(truth.values()))
    overlap = np.zeros((len(found_ids), len(known_ids)))
    for task, f in labels.items():
        if task in truth:
            overlap[found_ids.index(f), known_ids.index(truth[task])] += 1
    rows, cols = linear_sum_assignment(-overlap)
    rename = {found_ids[r]: known_ids[c] for r, c in zip(rows, cols, strict=True)}
    spare = iter(i for i in range(len(found_ids) + len(known_ids)) if i not in known_ids)
    for f in found_ids:
        rename.setdefault(f, next(spare))
    return {t: rename[f] for t, f in labels.items()}


def draw_similarity(
    tasks: Sequence[str],
    sim: np.ndarray,
    labels: Mapping[str, int],
    stem: str | Path,
    title: str = "",
    truth: Mapping[str, int] | None = None,
) -> list[Path]:
    """Dendrogram (left), similarity heatmap (right) and coloured strips: found groups, and
    the known groups when given."""
    n = len(tasks)
    dist = np.clip(1.0 - (sim + sim.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    strips = 1 + (truth is not None)
    size = 2.2 + 0.3 * n
    fig = new_figure(size + 1.8 + 0.25 * strips, size)
    grid = fig.add_gridspec(1, 2 + strips, width_ratios=[1.6, *[0.12] * strips, size])
    tree_ax = fig.add_subplot(grid[0, 0])
    order = list(range(n))
    if n > 1:
        tree = dendrogram(
            linkage(squareform(dist), "average"),
            orientation="left",
            no_labels=True,
            ax=tree_ax,
            color_threshold=0,
            above_threshold_color="0.3",
        )
        order = tree["leaves"][::-1]  # the heatmap's first row is the dendrogram's top leaf
    tree_ax.set_axis_off()
    if truth is not None:
        labels = matched_to(labels, truth)
    strip_sets = [("found", labels)] + ([("known", truth)] if truth is not None else [])
    for s, (name, groups) in enumerate(strip_sets):
        ax = fig.add_subplot(grid[0, 1 + s])
        ids = np.array([[groups.get(tasks[i], -1)] for i in order], dtype=float)
        ax.imshow(np.ma.masked_less(ids, 0), cmap=GROUP_COLOURS, vmin=0, vmax=9, aspect="auto")
        ax.set_xticks([0], [name], rotation=90, fontsize=7)
        ax.set_yticks([])
    heat_ax = fig.add_subplot(grid[0, -1])
    image = heat_ax.imshow(sim[np.ix_(order, order)], cmap="magma", aspect="auto")
    labels_in_order = [tasks[i] for i in order]
    heat_ax.set_yticks(range(n), labels_in_order, fontsize=8)
    heat_ax.yaxis.tick_right()
    heat_ax.set_xticks(range(n), labels_in_order, rotation=90, fontsize=8)
    fig.colorbar(image, ax=heat_ax, label="similarity", fraction=0.04, pad=0.12)
    fig.suptitle(title or "task similarity (dendrogram order)", fontsize=9)
    return save_figure(fig, stem)
