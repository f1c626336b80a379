"""Group tasks by the architecture the search gave them.

A task's *allocation embedding* is the set of edges of its derived subgraph (binary), or the
vector of its open probabilities. Tasks that the search routed through the same edges belong
together; agglomerative clustering of the Jaccard distances between the edge sets recovers
the groups, and the adjusted Rand index (ARI) scores them against known groups
(``docs/search.md``, "Task groups").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score


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
