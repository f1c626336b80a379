"""An exported grouped study keeps the source's settings, takes the searched depth and loads."""

from __future__ import annotations

import tomllib

import pytest

from nas_mtl.errors import ConfigError
from nas_mtl.study import load_study
from nas_mtl.study_export import grouped_study, write_grouped_study

SOURCE = """
name = "src"
spaces = ["no_sharing", "gumbel_matrix"]
seeds = [3, 4]

[data]
file = "data/table.csv"
tasks = [
  {{ name = "a", type = "binary" }},
  {{ name = "b", type = "binary" }},
  {{ name = "c", type = "binary" }},
]

[space_params]
gumbel_matrix = {{ layers = 3, width = 16, components = 6 }}
no_sharing = {{ width = 8 }}

[search]
epochs = 7

[controls]
random = 2

[retrain]
lr = 0.01
"""


def _source(tmp_path, body=SOURCE):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "table.csv").write_text("x,a,b,c\n1,0,1,0\n")
    path = folder / "study.toml"
    path.write_text(body.format())
    return path


def test_export_keeps_settings_takes_the_searched_depth_and_rebases_the_data_path(tmp_path):
    src = _source(tmp_path)
    dest = tmp_path / "elsewhere" / "grouped.toml"
    dest.parent.mkdir()
    write_grouped_study(src, [["a", "b"], ["c"]], "gumbel_matrix", dest)
    doc = tomllib.loads(dest.read_text())
    assert doc["name"] == "src_grouped"
    assert doc["spaces"] == ["no_sharing", "shared_bottom", "grouped", "gumbel_matrix"]
    assert doc["seeds"] == [3, 4] and doc["search"] == {"epochs": 7}
    assert doc["retrain"] == {"lr": 0.01} and "controls" not in doc
    assert doc["space_params"]["grouped"] == {
        "layers": 3,
        "width": 16,
        "groups": [["a", "b"], ["c"]],
    }
    assert doc["space_params"]["gumbel_matrix"]["components"] == 6
    assert doc["data"]["file"] == "../project/data/table.csv"
    study = load_study(dest)  # the same data file, found from the new folder
    assert study.space_params["grouped"]["groups"] == [["a", "b"], ["c"]]


def test_export_refuses_empty_groups_and_data_sweeps(tmp_path):
    src = _source(tmp_path)
    with pytest.raises(ConfigError, match="non-empty group"):
        grouped_study(src, [["a"], []], "gumbel_matrix", tmp_path / "g.toml")
    swept = _source(
        tmp_path / "s",
        SOURCE.replace(
            'file = "data/table.csv"', 'file = "data/table.csv"\nsweep = {{ rho = [0.1, 0.2] }}'
        ),
    )
    with pytest.raises(ConfigError, match="sweeps"):
        grouped_study(swept, [["a", "b", "c"]], "gumbel_matrix", tmp_path / "g.toml")
