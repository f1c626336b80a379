"""Task clustering from derived edge sets, and the search recovering planted task groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_mtl.cluster import ari, cluster_edge_sets, groups_to_labels, jaccard_distances
from nas_mtl.data import load_dataset
from nas_mtl.spaces import build_space
from nas_mtl.stages.derive import derive
from nas_mtl.stages.search import search
from nas_mtl.study import SearchConfig
from nas_mtl.supernet import Supernet


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
