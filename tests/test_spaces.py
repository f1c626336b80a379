"""The eight seed search spaces compile from their files; overrides are checked."""

from __future__ import annotations

import pytest

from nas_mtl.errors import ConfigError
from nas_mtl.model.graph import components, head_id
from nas_mtl.model.spaces import available_spaces, build_space, list_spaces

SEED = {
    "shared_bottom",
    "no_sharing",
    "mmoe",
    "omoe",
    "snr_trans",
    "snr_aver",
    "gumbel_matrix",
    "custom_dag",
}
TASKS = {"a": 1, "b": 1, "c": 1}


def test_all_seed_spaces_are_listed_with_descriptions():
    listed = dict(list_spaces())
    assert SEED <= set(listed)
    assert all(len(listed[name]) > 20 for name in SEED)


# what a registered space cannot default: the groups of tasks that grouped shares trunks in
REQUIRED = {"grouped": {"groups": [["a", "b"], ["c"]]}}


@pytest.mark.parametrize("space", sorted(available_spaces()))
def test_every_registered_space_compiles(space):
    g = build_space(space, (20,), TASKS, **REQUIRED.get(space, {}))
    assert [head_id(t) for t in TASKS] == [n for n in g if n.startswith("head:")]
    assert components(g)


def test_sizes_are_parameters():
    g = build_space("snr_trans", (20,), TASKS, layers=3, subnetworks=5, width=16)
    comps = components(g)
    assert len(comps) == 15 and {g.nodes[n]["width"] for n in comps} == {16}
    # layer 1 fixed from the input, layers 2..3 and the heads gated
    kinds = {g.edges[e]["gate"]["kind"] for e in g.in_edges("L2.0")}
    assert kinds == {"hard_concrete"} and len(g.in_edges(head_id("a"))) == 5
    g = build_space("no_sharing", (20,), TASKS)
    assert len(components(g)) == 3 and all(g.in_degree(head_id(t)) == 1 for t in TASKS)


@pytest.mark.parametrize("space", ["mmoe", "omoe"])
def test_expert_depth_matches_other_spaces(space):
    """`layers` makes each expert a chain, so a mixture can be compared at equal depth."""
    g = build_space(space, (20,), TASKS, layers=3, experts=2, expert_width=8)
    comps = components(g)
    assert len(comps) == 6 and {g.nodes[n]["layer"] for n in comps} == {1, 2, 3}
    assert sorted(g.successors("L1.0")) == ["L2.0"] and sorted(g.successors("L2.1")) == ["L3.1"]
    assert sorted(u for u, _ in g.in_edges(head_id("a"))) == ["L3.0", "L3.1"]


def test_gumbel_edges_are_tied_per_source():
    g = build_space("gumbel_matrix", (20,), TASKS, layers=1, components=4)
    gates = [g.edges[u, v]["gate"] for u, v in g.in_edges(head_id("a"))]
    assert {x["kind"] for x in gates} == {"gumbel"} and {x["scope"] for x in gates} == {"task"}


def test_unknown_override_and_space():
    with pytest.raises(
        ConfigError,
        match="search space 'mmoe' has no parameter 'expert' \\(did you mean 'experts'\\?\\)",
    ):
        build_space("mmoe", (20,), TASKS, expert=4)
    with pytest.raises(ConfigError, match="unknown search space 'mmoee' \\(did you mean 'mmoe'"):
        build_space("mmoee", (20,), TASKS)


def test_space_without_image_layers_refuses_images():
    with pytest.raises(ConfigError, match="no \\[\\[layers\\]\\] apply to image input"):
        build_space("mmoe", (1, 28, 28), TASKS)


def test_user_space_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(
        'description = "tiny"\n[params]\nw = 4\n'
        '[[layers]]\ncomponent = { kind = "mlp", width = "$w" }\n'
        "[heads]\ntower = []\n"
    )
    g = build_space(path, (5,), TASKS, w=6)
    assert g.nodes["L1.0"]["width"] == 6
    path.write_text(
        'description = "tiny"\n[[layers]]\ncomponent = { kind = "mlp", width = 3 }\n'
        'conect = "all"\n'
    )
    with pytest.raises(ConfigError, match="unknown key 'conect' \\(did you mean 'connect'\\?\\)"):
        build_space(path, (5,), TASKS)


def test_space_files_are_found_from_the_source_tree():
    assert SEED <= set(available_spaces())


def test_grouped_space_gives_each_group_one_trunk():
    tasks = {"a": 1, "b": 1, "c": 1, "d": 1}
    g = build_space("grouped", (20,), tasks, groups=[["a", "c"], ["b", "d"]], layers=2)
    heads = {v: u for u, v in g.edges if v.startswith("head:")}
    assert heads["head:a"] == heads["head:c"] != heads["head:b"] == heads["head:d"]
    assert len(components(g)) == 4  # 2 groups x 2 layers


@pytest.mark.parametrize(
    "groups, message",
    [
        ([], "needs groups as lists of task names"),
        ([["a", "b"], ["c"]], r"tasks in no group \['d'\]"),
        ([["a", "b", "x"], ["c", "d"]], r"unknown tasks \['x'\]"),
        ([["a", "b"], ["b", "c", "d"]], r"tasks in several groups \['b'\]"),
    ],
)
def test_grouped_space_checks_its_groups(groups, message):
    with pytest.raises(ConfigError, match=message):
        build_space("grouped", (20,), {"a": 1, "b": 1, "c": 1, "d": 1}, groups=groups)
