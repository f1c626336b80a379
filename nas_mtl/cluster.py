"""Group tasks by the architecture the search gave them.

A task's *allocation embedding* is the set of edges of its derived subgraph (binary), or the
components it passes through. Tasks that the search routed through the same edges belong
together; agglomerative clustering of the Jaccard distances between the edge sets recovers
the groups, and the adjusted Rand index (ARI) scores them against known groups
(``docs/search.md``, "Task groups"). Allocation embeddings (tasks × components), cosine or
Jaccard similarity, agglomerative or spectral clustering with k chosen by silhouette, and the
stability and consensus of several seeds' clusterings build on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import networkx as nx
import numpy as np
from sklearn.cluster import AgglomerativeClustering, SpectralClustering
from sklearn.metrics import adjusted_rand_score, silhouette_score


def jaccard_distances(sets: Sequence[Set]) -> np.ndarray:
    """1 − |A ∩ B| / |A ∪ B| for every pair of sets (0 for two empty sets), (n, n)."""
    n = len(sets)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            union = len(sets[i] | sets[j])
            d[i, j] = d[j, i] = 1.0 - len(sets[i] & sets[j]) / union if union else 0.0
    return d


def cluster_edge_sets(edges: Mapping[str, Set], k: int, linkage: str = "average") -> dict[str, int]:
    """Agglomerative clustering of tasks on the Jaccard distance of their edge sets."""
    tasks = list(edges)
    if not 1 <= k <= len(tasks):
        raise ValueError(f"k must be between 1 and the number of tasks ({len(tasks)}), got k={k}")
    if k == len(tasks):
        return {t: i for i, t in enumerate(tasks)}
    # edges read back from JSON are lists: make them hashable
    d = jaccard_distances(
        [{tuple(e) if isinstance(e, list) else e for e in edges[t]} for t in tasks]
    )
    labels = AgglomerativeClustering(
        n_clusters=k, metric="precomputed", linkage=linkage
    ).fit_predict(d)
    return {t: int(c) for t, c in zip(tasks, labels, strict=True)}


def groups_to_labels(groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """[[a, b], [c]] -> {a: 0, b: 0, c: 1}."""
    return {t: g for g, members in enumerate(groups) for t in members}


def ari(labels: Mapping[str, int], truth: Mapping[str, int]) -> float:
    """Adjusted Rand index of a clustering against known groups, on the tasks of ``truth``."""
    tasks = [t for t in truth if t in labels]
    return float(adjusted_rand_score([truth[t] for t in tasks], [labels[t] for t in tasks]))


@dataclass(frozen=True)
class Embedding:
    """Tasks as vectors over routing units: row t is task t's allocation."""

    tasks: tuple[str, ...]
    columns: tuple[str, ...]  # component names, or edges written "u→v"
    matrix: np.ndarray  # (T, K): 1/0 (derived) or open probabilities


UNITS = ("edges", "components")


def allocation_embedding(arch: nx.DiGraph, unit: str = "edges") -> Embedding:
    """The binary allocation of a derived architecture, over its routed edges or components.

    ``"edges"`` (the default for clustering): which edges between components (and from the
    input) each task's subgraph uses, the edges into the heads left out (each serves one task).
    ``"components"``: which components the subgraph passes through (Gumbel-Matrix's picture).
    Edges are the sharper signal: two tasks share an edge only when they share both its ends,
    so tasks that meet in one layer but part in the next look less alike. On the planted-group
    studies edge sets recovered the groups on 5 of 6 seeds, component sets on 3
    (``docs/plots.md``, "Task groups").
    """
    tasks = tuple(arch.graph["tasks"])
    if unit == "components":
        names = [n for n, d in arch.nodes(data=True) if d.get("role") == "component"]
        users = [arch.nodes[n].get("tasks", tasks) for n in names]
        columns = tuple(names)
    elif unit == "edges":
        edges = [(u, v) for u, v in arch.edges if arch.nodes[v].get("role") != "head"]
        users = [arch.edges[e].get("tasks", tasks) for e in edges]
        columns = tuple(f"{u}→{v}" for u, v in edges)
    else:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    matrix = np.array([[float(t in u) for u in users] for t in tasks]).reshape(
        len(tasks), len(users)
    )
    return Embedding(tasks, columns, matrix)


def informative_columns(matrix: np.ndarray) -> np.ndarray:
    """The columns on which tasks differ; all of them when none does.

    A component every task uses (a stem, a fully shared layer) says nothing about who belongs
    with whom, yet it adds the same overlap to every pair and so flattens cosine and Jaccard
    similarities towards 1 (``docs/plots.md``, "Task groups").
    """
    varies = matrix.min(axis=0) != matrix.max(axis=0)
    return matrix[:, varies] if varies.any() else matrix


def similarity(matrix: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Task × task similarity of embedding rows: cosine, or Jaccard of the non-zero sets."""
    if metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        unit = np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=float), where=norms > 0)
        return np.clip(unit @ unit.T, -1.0, 1.0)
    if metric == "jaccard":
        sets = [set(np.flatnonzero(row)) for row in matrix]
        return 1.0 - jaccard_distances(sets)
    raise ValueError(f"similarity metric must be 'cosine' or 'jaccard', got {metric!r}")


@dataclass(frozen=True)
class Clustering:
    labels: np.ndarray  # cluster per task
    k: int
    silhouette: float | None  # None when k is 1 or the number of tasks


def cluster_tasks(
    sim: np.ndarray, k: int | None = None, method: str = "agglomerative"
) -> Clustering:
    """Cluster tasks on a similarity matrix; without ``k``, the k of the best silhouette.

    Agglomerative (average linkage on 1 − similarity) or spectral (on the similarity shifted to
    be non-negative). The silhouette is computed on the distance 1 − similarity.
    """
    n = sim.shape[0]
    dist = np.clip(1.0 - sim, 0.0, None)
    np.fill_diagonal(dist, 0.0)

    def fit(kk: int) -> np.ndarray:
        if kk >= n:
            return np.arange(n)
        if kk == 1:
            return np.zeros(n, dtype=int)
        if method == "agglomerative":
            model = AgglomerativeClustering(n_clusters=kk, metric="precomputed", linkage="average")
            return model.fit_predict(dist)
        if method == "spectral":
            affinity = (sim + 1.0) / 2.0 if sim.min() < 0 else sim
            model = SpectralClustering(n_clusters=kk, affinity="precomputed", random_state=0)
            with warnings.catch_warnings():  # disconnected task groups are the point here
                warnings.filterwarnings("ignore", message="Graph is not fully connected")
                return model.fit_predict(affinity)
        raise ValueError(f"method must be 'agglomerative' or 'spectral', got {method!r}")

    def score(labels: np.ndarray) -> float | None:
        if not 1 < len(set(labels)) < n:
            return None
        return float(silhouette_score(dist, labels, metric="precomputed"))

    if k is not None:
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the number of tasks ({n}), got k={k}")
        labels = fit(k)
        return Clustering(labels, k, score(labels))
    best: Clustering | None = None
    for kk in range(2, n):
        labels = fit(kk)
        s = score(labels)
        if s is not None and (best is None or s > (best.silhouette or -1.0)):
            best = Clustering(labels, kk, s)
    return best or Clustering(np.zeros(n, dtype=int), 1, None)


def stability(labelings: Sequence[np.ndarray]) -> float:
    """Mean pairwise ARI of several clusterings of the same tasks (e.g. one per search seed)."""
    pairs = [adjusted_rand_score(a, b) for i, a in enumerate(labelings) for b in labelings[i + 1 :]]
    return float(np.mean(pairs)) if pairs else 1.0


def consensus(labelings: Sequence[np.ndarray], k: int) -> np.ndarray:
    """One clustering from several: agglomerative on how often two tasks share a cluster."""
    together = np.mean([np.equal.outer(lab, lab) for lab in labelings], axis=0).astype(float)
    return cluster_tasks(together, k).labels
