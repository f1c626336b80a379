"""Study files map onto dataclasses; every shipped study parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_mtl.errors import ConfigError
from nas_mtl.study import load_study, parse_study

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.toml"))
BASE = {"name": "s", "spaces": ["mmoe"], "data": {"name": "synthetic"}}


def test_the_required_studies_ship():
    names = {p.stem for p in STUDIES}
    assert {"quickstart", "mmoe_synthetic", "census_income", "omniglot", "mnist_family"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_shipped_study_parses(path):
    study = load_study(path)
    assert study.name == path.stem and study.spaces and len(study.sha256) == 64


def test_sweep_any_field_is_a_grid_of_studies():
    study = parse_study(
        {
            **BASE,
            "data": {"name": "synthetic", "sweep": {"rho": [0.5, 0.9]}},
            "sweep": {"search.target_open": [0.3, False], "space_params.mmoe.experts": [4]},
        }
    )
    variants = study.variants()
    assert len(variants) == 4 and variants[1] == {
        "rho": 0.5,
        "search.target_open": False,
        "space_params.mmoe.experts": 4,
    }
    one = study.for_variant(variants[1])
    assert one.data.params == {"rho": 0.5} and one.search.target_open is None
    assert one.space_params == {"mmoe": {"experts": 4}} and study.space_params == {}
    assert study.for_variant(variants[2]).search.target_open == 0.3


def test_mmoe_synthetic_sweeps_rho():
    study = load_study(next(p for p in STUDIES if p.stem == "mmoe_synthetic"))
    assert [v["rho"] for v in study.variants()] == [0.5, 0.9, 1.0]
    assert {"shared_bottom", "mmoe", "snr_trans", "snr_aver"} <= set(study.spaces)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({**BASE, "sead": 1}, "unknown key 'sead'"),
        (
            {**BASE, "search": {"lr_weight": 1.0}},
            "unknown key 'lr_weight' (did you mean 'lr_weights'?)",
        ),
        (
            {**BASE, "retrain": {"epochs": "ten"}},
            "study [retrain].epochs must be an integer, got 'ten'",
        ),
        (
            {**BASE, "retrain": {"init": "serch"}},
            "[retrain] init = 'serch' is not one of scratch, search (did you mean 'search'?)",
        ),
        ({**BASE, "data": {"name": "synthetic", "file": "x.csv"}}, "give either 'name'"),
        ({**BASE, "data": {"file": "x.csv"}}, "a user file needs [[data.tasks]]"),
        ({**BASE, "spaces": []}, "'spaces' must be a non-empty list"),
        ({**BASE, "space_params": {"snr": {}}}, "['snr'] are not in spaces"),
        ({"name": "s", "data": {"name": "synthetic"}}, "missing required key 'spaces'"),
        (
            {**BASE, "data": {"name": "synthetic", "sweep": {"rho": 0.5}}},
            "[data].sweep.rho must be a non-empty list",
        ),
        (
            {
                **BASE,
                "data": {"file": "x.csv", "task_column": "t", "sweep": {"split_fraction": [1]}},
            },
            "'split_fraction' is not a [data] field of a user file (did you mean "
            "'split_fractions'?)",
        ),
        (
            {**BASE, "data": {"file": "x.csv", "tasks": [{"name": "a", "colum": "y"}]}},
            "unknown key 'colum' (did you mean 'column'?)",
        ),
        ({**BASE, "sweep": {"search.lr_weight": [1e-3]}}, "(did you mean 'lr_weights'?)"),
        ({**BASE, "sweep": {"search.epochs": [2, "x"]}}, "'search.epochs' = 'x'"),
        ({**BASE, "sweep": {"search.target_open": [2.0]}}, "target_open must be in (0, 1]"),
        ({**BASE, "sweep": {"space_params.snr.width": [8]}}, "with a space of ['mmoe']"),
        (
            {**BASE, "sweep": {"model.width": [8]}},
            "first part must be one of controls, derive, retrain, search",
        ),
        ({**BASE, "sweep": {"epochs": [8]}}, "'epochs' is not a dotted path"),
        ({**BASE, "sweep": {"retrain.lr": []}}, "[sweep].'retrain.lr' must be a non-empty list"),
    ],
)
def test_bad_studies_name_the_field(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_study(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "table, field, value, need",
    [
        ("search", "epochs", 0, "an integer >= 1"),
        ("search", "epochs", -1, "an integer >= 1"),
        ("search", "batch_size", 0, "an integer >= 1"),
        ("search", "steps_per_epoch", 0, "an integer >= 1"),
        ("search", "patience", 0, "an integer >= 1"),
        ("search", "keep_checkpoints", -1, "an integer >= 1"),
        ("search", "lr_weights", 0.0, "a finite number > 0"),
        ("search", "lr_arch", -0.1, "a finite number > 0"),
        ("search", "lr_weights", float("inf"), "a finite number > 0"),
        ("search", "l0_weight", -10.0, "a finite number >= 0"),
        ("search", "dual_lr", float("nan"), "a finite number >= 0"),
        ("search", "weight_decay", -1e-4, "a finite number >= 0"),
        ("retrain", "epochs", 0, "an integer >= 1"),
        ("retrain", "lr", 0.0, "a finite number > 0"),
        ("retrain", "batch_size", -5, "an integer >= 1"),
        ("derive", "samples", -1, "an integer >= 0"),
        ("controls", "random", -2, "an integer >= 0"),
    ],
)
def test_numbers_out_of_range_are_refused_before_any_work(table, field, value, need):
    with pytest.raises(ConfigError) as err:
        parse_study({**BASE, table: {field: value}})
    assert f"[{table}] {field} must be {need}, got {field} = {value!r}" in str(err.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_study(path)
