"""Allocation heatmap, sharing ratio, search curves, gate trajectories and the similarity
figure: the numbers they draw, and files that are real PNG/SVG."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from nas_mtl.plots.allocation import allocation, draw_allocation, draw_sharing, sharing_by_layer
from nas_mtl.plots.curves import draw_gate_trajectories, draw_search_curves, gate_trajectories
from nas_mtl.plots.similarity import draw_similarity, leaf_order

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gumbel_record(p_on: float) -> dict:
    # block 1: components a, b -> c, d (tied per source: a row per task, same value per dst)
    return {
        "epoch": 0,
        "gates": [
            {
                "block": 1,
                "kind": "gumbel",
                "scope": "task",
                "src": ["a", "b"],
                "dst": ["c", "d"],
                "open_probability": [[[p_on, p_on], [0.1, 0.1]], [[0.2, 0.2], [0.9, 0.9]]],
            },
            {
                "block": 2,
                "kind": "hard_concrete",
                "scope": "shared",
                "src": ["c", "d"],
                "dst": ["head:x", "head:y"],
                "open_probability": [[[0.7, 0.6], [0.0, 0.3]]],
            },
        ],
    }


def _derived() -> nx.DiGraph:
    g = nx.DiGraph(tasks=["x", "y"])
    g.add_node("input", role="input", layer=0)
    for n, layer, users in (("a", 1, ["x"]), ("b", 1, ["y"]), ("c", 2, ["x", "y"])):
        g.add_node(n, role="component", layer=layer, tasks=users)
    for t in ("x", "y"):
        g.add_node(f"head:{t}", role="head", layer=3, task=t, tasks=[t])
    g.add_edge("input", "a", tasks=["x"])
    g.add_edge("input", "b", tasks=["y"])
    g.add_edge("a", "c", tasks=["x"])
    g.add_edge("b", "c", tasks=["y"])
    g.add_edge("c", "head:x", tasks=["x"])
    g.add_edge("c", "head:y", tasks=["y"])
    return g


def test_allocation_columns_tied_components_gated_edges_and_head_columns():
    alloc = allocation(_gumbel_record(0.8), ["x", "y"], _derived())
    # gumbel: one column per source; hard-concrete: per edge, head edges share "u→head";
    # d's edge into head:x is masked (0 for every task), so only d→head:y remains
    assert alloc.columns == ("a", "b", "c→head", "d→head")
    assert alloc.layers == (1, 1, 2, 2)
    np.testing.assert_allclose(alloc.probability[:, 0], [0.8, 0.2])
    np.testing.assert_allclose(alloc.probability[:, 2], [0.7, 0.6])  # each task its own head
    assert math.isnan(alloc.probability[0, 3]) and alloc.probability[1, 3] == pytest.approx(0.3)
    assert alloc.kept.tolist() == [[True, False, True, False], [False, True, True, False]]


def test_draw_allocation_orders_rows_and_writes_png_and_svg(tmp_path):
    alloc = allocation(_gumbel_record(0.8), ["x", "y"], _derived())
    png, svg = draw_allocation(alloc, tmp_path / "alloc", order=["y", "x"])
    assert png.read_bytes()[:8] == PNG_MAGIC and b"<svg" in svg.read_bytes()[:400]
    assert b"y" in svg.read_bytes()


def test_sharing_by_layer_counts_tasks_per_used_component(tmp_path):
    sharing = sharing_by_layer(_derived())
    assert [(s.layer, s.components, s.shared) for s in sharing] == [(1, 2, 0), (2, 1, 1)]
    assert sharing[0].ratio == pytest.approx(0.5) and sharing[1].ratio == pytest.approx(1.0)
    assert draw_sharing(sharing, 2, tmp_path / "s")[0].read_bytes()[:8] == PNG_MAGIC


def _history(n: int) -> list[dict]:
    return [
        {
            **_gumbel_record(0.5 + 0.4 * e / (n - 1)),
            "epoch": e,
            "warmup": e == 0,
            "train_loss": {"x": 1.0 / (e + 1), "y": 2.0 / (e + 1)},
            "val_objective": 3.0 - 0.1 * e,
            "derived_val_objective": 3.1 - 0.1 * e,
            "open_fraction": 0.5,
            "greedy_open_fraction": 0.6,
            "expected_open": 0.55,
            "undecided": 0.2,
            "temperature": 10.0 / (e + 1),
            "price": 0.1 * e,
            "budget": 0.9 - 0.1 * e,
        }
        for e in range(n)
    ]


def test_gate_trajectories_drop_masked_pairs_and_tied_copies():
    blocks = gate_trajectories(_history(4))
    gumbel, hard = blocks
    # gumbel: 2 tasks × 2 sources (the copies per destination are tied) = 4 decisions
    assert gumbel[1].shape == (4, 4)
    np.testing.assert_allclose(sorted(gumbel[1][-1]), [0.1, 0.2, 0.9, 0.9])
    # hard-concrete: 4 pairs, one masked to 0 at every epoch
    assert hard[1].shape == (4, 3)
    assert any(np.allclose(col, 0.2) for col in gumbel[1].T)  # a constant decision stays


def test_search_curves_and_trajectories_write_figures(tmp_path):
    history = _history(5)
    curves = draw_search_curves(history, tmp_path / "curves", best_epoch=3, target_open=0.4)
    gates = draw_gate_trajectories(history, tmp_path / "gates", best_epoch=3)
    for path in (*curves, *gates):
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no learned gates"):
        draw_gate_trajectories([{"epoch": 0}], tmp_path / "none")


def test_leaf_order_puts_blocks_together_and_the_figure_is_written(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.array([0, 1, 0, 2, 1, 2, 0])
    sim = (truth[:, None] == truth[None, :]).astype(float) * 0.8 + rng.uniform(0, 0.1, (7, 7))
    sim = (sim + sim.T) / 2
    order = leaf_order(sim)
    assert sorted(order) == list(range(7))
    runs = [truth[i] for i in order]
    assert sum(a != b for a, b in zip(runs, runs[1:], strict=False)) == 2  # three blocks
    tasks = [f"t{i}" for i in range(7)]
    labels = {t: int(c) for t, c in zip(tasks, truth, strict=True)}
    png, _ = draw_similarity(tasks, sim, labels, tmp_path / "sim", truth=labels)
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_found_groups_take_the_ids_of_the_known_groups_they_match():
    from nas_mtl.plots.similarity import matched_to

    truth = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2}
    found = {"a": 5, "b": 5, "c": 3, "d": 3, "e": 3}
    assert matched_to(found, truth) == {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1}
    extra = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}  # more found groups than known ones
    renamed = matched_to(extra, {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1})
    assert len(set(renamed.values())) == 5 and renamed["a"] in (0, 1)
