"""The study runner and report on real per-task image data and on hand-made results."""

from __future__ import annotations

import json

import pytest

from nas_mtl.errors import ConfigError
from nas_mtl.pipeline import run_study
from nas_mtl.report import comparison_tables, paired_comparison
from nas_mtl.results import RunResult, TaskScore, add_delta_m, read_result, write_result
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


def _entry(space, seed, a, b, params=100, searched=False, depth=2):
    tasks = {
        "a": TaskScore("auc", True, a, a, {"auc": a}),
        "b": TaskScore("mse", False, b, b, {"mse": b}),
    }
    return RunResult(
        space=space,
        seed=seed,
        variant={},
        run_dir=f"default/{space}/seed_{seed}",
        tasks=tasks,
        params={"a": params, "b": params},
        macs={"a": params, "b": params},
        total_params=params,
        total_macs=params,
        architecture={"open_fraction": 1.0, "depth": depth, "widths": [32]},
        retrain={},
        search={"searched": searched},
        study_sha256="x",
        wall_s=1.0,
        supernet={"depth": 2, "widths": [32]} if searched else None,
    )


def _report(results):
    return {"study": "s", "results": [r.to_json() for r in results]}


def test_run_result_round_trips_through_result_json(tmp_path):
    r = _entry("snr_trans", 3, 0.9, 0.25, searched=True)
    r.delta_m = 12.5
    write_result(tmp_path, r)
    back = read_result(tmp_path / r.run_dir)
    assert back == r and back.mean_test == pytest.approx((0.9 + 0.25) / 2)
    assert back.architecture_path == "default/snr_trans/seed_3/architecture.json"
    (tmp_path / "bad.json").write_text(json.dumps({"space": "x"}))
    with pytest.raises(ConfigError, match="not a nas-mtl run result .missing"):
        read_result(tmp_path / "bad.json")


def test_delta_m_and_tables_mark_the_best_per_column():
    results = [
        _entry("no_sharing", 0, 0.80, 1.0, 300),
        _entry("snr_trans", 0, 0.88, 0.5, 200),
        _entry("no_sharing", 1, 0.80, 1.0, 300),
        _entry("snr_trans", 1, 0.84, 0.5, 200),
    ]
    add_delta_m(results)
    assert results[0].delta_m == 0.0
    assert results[1].delta_m == pytest.approx((10.0 + 50.0) / 2)  # AUC +10 %, MSE halved
    text = comparison_tables(_report(results))
    snr_row = next(line for line in text.splitlines() if line.startswith("| snr_trans"))
    ns_row = next(line for line in text.splitlines() if line.startswith("| no_sharing"))
    assert "**0.8600 ± 0.0283**" in snr_row and "**0.5000 ± 0.0000**" in snr_row
    assert "**28.75 ± 1.77**" in snr_row  # Δm: mean of 30 % and 27.5 %
    assert "**200**" in snr_row and "**" not in ns_row.split("|")[2]
    assert "mean ± std over 2 seed(s)" in text


def test_undefined_delta_m_is_recorded_not_fatal():
    results = [_entry("no_sharing", 0, 0.0, 1.0), _entry("mmoe", 0, 0.5, 1.0)]
    add_delta_m(results)  # the baseline AUC of 0 makes a relative change undefined
    assert results[1].delta_m is None and "baseline" in results[1].delta_m_note
    assert "| mmoe |" in comparison_tables(_report(results))


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


def test_paired_comparison_against_the_best_control():
    rows = []
    for seed, (ns, grp, snr) in enumerate(
        [(0.30, 0.20, 0.18), (0.40, 0.25, 0.27), (0.2, 0.1, 0.05)]
    ):
        for space, value, searched in (
            ("no_sharing", ns, False),
            ("grouped", grp, False),
            ("snr_trans", snr, True),
        ):
            depth = 2 if space != "no_sharing" else 1
            rows.append(_entry(space, seed, value, value, searched=searched, depth=depth))
    lines = paired_comparison(rows, higher=False)
    assert lines[1] == (
        "Paired, snr_trans − grouped (best control), mean test per seed: "
        "-0.0200, +0.0200, -0.0500; snr_trans better on 2 of 3 seed(s)."
    )
    text = comparison_tables(_report(rows))
    assert "| grouped † |" in text and "| no_sharing |" in text  # only depth 2 is matched
    assert "| 2 × 32 |" in text and "| 1 × 32 |" in text
