"""Task clustering from derived edge sets, and the search recovering planted task groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from nas_mtl.cluster import (
    allocation_embedding,
    ari,
    cluster_edge_sets,
    cluster_tasks,
    consensus,
    groups_to_labels,
    jaccard_distances,
    similarity,
    stability,
)
from nas_mtl.data import load_dataset
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.derive import derive
from nas_mtl.stages.search import search
from nas_mtl.study import SearchConfig


def test_jaccard_distances():
    d = jaccard_distances([{1, 2}, {2, 3}, set(), set()])
    assert d[0, 1] == pytest.approx(1 - 1 / 3)
    assert d[2, 3] == 0.0 and d[0, 2] == 1.0
    np.testing.assert_array_equal(d, d.T)


def test_clustering_recovers_disjoint_edge_sets_and_ari_scores_it():
    edges = {"a": {1, 2, 3}, "b": {1, 2}, "c": {7, 8}, "d": {7, 8, 9}}
    labels = cluster_edge_sets(edges, k=2)
    truth = groups_to_labels([["a", "b"], ["c", "d"]])
    assert ari(labels, truth) == 1.0
    assert ari({"a": 0, "b": 1, "c": 0, "d": 1}, truth) < 0.5
    with pytest.raises(ValueError, match="k must be between 1"):
        cluster_edge_sets(edges, k=5)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="with centred targets (search standardizes them, as `nas-mtl run` always did) the "
    "allocations miss the groups here: ARI 0.50 and 0.22 on seeds 0 and 2; it passed only on "
    "raw labels of mean -0.5 (docs/search.md, 'Task groups'); strict, so a fix shows",
)
def test_gumbel_matrix_search_recovers_planted_groups():
    """12 tasks in 3 unrelated groups: the tasks of a group end up on the same components."""
    scores = []
    for seed in (0, 2):
        data = load_dataset(
            "synthetic", seed=seed, groups=[4, 4, 4], n_train=500, input_dim=32, rho=0.95, m=3
        )
        torch.manual_seed(seed)
        out_dims = {t.name: t.out_dim for t in data.tasks}
        net = Supernet(build_space("gumbel_matrix", data.input_shape, out_dims))
        result = search(net, data, SearchConfig(epochs=30, batch_size=32, device="cpu"), seed=seed)
        arch = derive(result.supernet)
        edges = {
            t: {(u, v) for u, v, d in arch.edges(data=True) if t in d["tasks"]}
            for t in data.task_names
        }
        truth = groups_to_labels([data.task_names[i : i + 4] for i in (0, 4, 8)])
        scores.append(ari(cluster_edge_sets(edges, k=3), truth))
    assert np.mean(scores) >= 0.9, scores


def _blocks(groups, width=4, noise=0.0, seed=0):
    """Tasks of group g use components g*width .. g*width+width-1 (plus optional noise)."""
    rng = np.random.default_rng(seed)
    n = sum(groups)
    m = np.zeros((n, len(groups) * width))
    row = 0
    for g, size in enumerate(groups):
        m[row : row + size, g * width : (g + 1) * width] = 1.0
        row += size
    return np.clip(m + noise * rng.random(m.shape), 0, 1)


@pytest.mark.parametrize("method", ["agglomerative", "spectral"])
@pytest.mark.parametrize("metric", ["cosine", "jaccard"])
def test_silhouette_finds_the_number_of_blocks(method, metric):
    groups = [3, 4, 3]
    m = _blocks(groups) if metric == "jaccard" else _blocks(groups, noise=0.1)
    found = cluster_tasks(similarity(m, metric), method=method)
    truth = np.repeat(np.arange(3), groups)
    assert found.k == 3 and adjusted_rand_score(truth, found.labels) == 1.0
    assert found.silhouette is not None and found.silhouette > 0.5


def test_similarity_rows_and_errors():
    m = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    cos = similarity(m)
    assert cos[0, 1] == pytest.approx(1.0) and cos[0, 2] == pytest.approx(0.0)
    assert cos[3, 3] == 0.0  # a task with no allocation is similar to nothing
    assert similarity(m, "jaccard")[0, 1] == 1.0
    with pytest.raises(ValueError, match="'cosine' or 'jaccard'"):
        similarity(m, "euclid")


def test_stability_and_consensus_of_several_seeds():
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    flipped = np.array([1, 1, 1, 0, 0, 0, 2, 2])  # the same partition, other names
    noisy = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    assert stability([truth, flipped]) == 1.0
    assert stability([truth, noisy]) < 1.0
    assert adjusted_rand_score(truth, consensus([truth, flipped, noisy], 3)) == 1.0


def test_allocation_embedding_of_a_derived_architecture():
    from nas_mtl.model.graph import add_component, add_head, connect, new_graph

    g = new_graph((4,), {"a": 1, "b": 1, "c": 1})
    for name, users in (("c1", ["a", "b"]), ("c2", ["c"])):
        add_component(g, name, "mlp", 4)
        g.nodes[name]["tasks"] = users
        connect(g, "input", name)
    for task, comp in (("a", "c1"), ("b", "c1"), ("c", "c2")):
        add_head(g, task)
        connect(g, comp, f"head:{task}")
    for u, v in g.edges:
        g.edges[u, v]["tasks"] = g.nodes[u].get("tasks") or g.nodes[v]["tasks"]
    emb = allocation_embedding(g, "components")
    assert emb.tasks == ("a", "b", "c") and emb.columns == ("c1", "c2")
    assert emb.matrix.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    edges = allocation_embedding(g)  # the edges into the heads serve one task each: left out
    assert edges.columns == ("input→c1", "input→c2")
    assert edges.matrix.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="unit must be one of"):
        allocation_embedding(g, "nodes")


def test_components_every_task_uses_are_left_out_of_the_similarity():
    from nas_mtl.cluster import informative_columns

    shared = np.ones((4, 5))
    own = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    m = np.hstack([shared, own])
    np.testing.assert_array_equal(informative_columns(m), own)
    # with the shared stem, the two groups look 5/7 alike; without it, not at all
    assert similarity(m, "jaccard")[0, 2] == pytest.approx(5 / 7)
    assert similarity(informative_columns(m), "jaccard")[0, 2] == 0.0
    np.testing.assert_array_equal(informative_columns(shared), shared)  # nothing varies
