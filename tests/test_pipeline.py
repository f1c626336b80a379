"""The study runner and report on real per-task image data and on hand-made results."""

from __future__ import annotations

import json

import pytest

from nas_mtl.pipeline import run_study
from nas_mtl.study import parse_study


@pytest.mark.slow
def test_omniglot_per_task_images_end_to_end(tmp_path, data_dir):
    study = parse_study(
        {
            "name": "omni",
            "spaces": ["no_sharing", "gumbel_matrix"],
            "data": {
                "name": "omniglot",
                "params": {"image_size": 28, "alphabets": ["Gujarati", "Sylheti"]},
            },
            "space_params": {
                "gumbel_matrix": {"channels": 4, "image_layers": 2, "strides": [2, 1], "p0": 0.97},
                "no_sharing": {"channels": 4},
            },
            "search": {"epochs": 1, "batch_size": 8, "steps_per_epoch": 5},
            "retrain": {"epochs": 1, "batch_size": 8, "steps_per_epoch": 5},
        }
    )
    report = run_study(study, tmp_path, data_dir=data_dir)
    gm = next(r for r in report["results"] if r["space"] == "gumbel_matrix")
    assert set(gm["tasks"]) == {"Gujarati", "Sylheti"}
    assert all(0 <= v["test"] <= 1 and v["metric"] == "accuracy" for v in gm["tasks"].values())
    arch = json.loads((tmp_path / "default/gumbel_matrix/seed_0/architecture.json").read_text())
    comps = [n for n in arch["graph"]["nodes"] if n.get("role") == "component"]
    assert comps and all(set(n["tasks"]) <= {"Gujarati", "Sylheti"} for n in comps)
    log = (tmp_path / "default/gumbel_matrix/seed_0/search_log.jsonl").read_text().splitlines()
    assert json.loads(log[0])["temperature"] < 50.0  # the schedule advanced during the epoch


def test_python_built_study_can_be_resumed_by_the_cli(tmp_path, capsys):
    """A study built in Python (no file) is saved as study.json so CLI stages can reload it."""
    from nas_mtl.cli import main

    study = parse_study(
        {
            "name": "py",
            "spaces": ["shared_bottom"],
            "data": {
                "name": "synthetic",
                "params": {
                    "n_train": 128,
                    "n_val": 32,
                    "n_test": 32,
                    "input_dim": 4,
                    "groups": [1],
                },
            },
            "retrain": {"epochs": 1, "batch_size": 32},
        }
    )
    run_study(study, tmp_path)
    run = tmp_path / "default" / "shared_bottom" / "seed_0"
    assert json.loads((run / "context.json").read_text())["study"] == "../../../study.json"
    assert main(["retrain", str(run)]) == 0
    assert "g0_t0: mse" in capsys.readouterr().out
