"""benchmarks/run_all.py and the benchmark scripts' JSON contract (benchmarks/README.md).

The fast tests drive ``run_all`` over stand-in scripts (no torch); the slow one runs every real
benchmark with ``--smoke`` once and checks the shapes of what they wrote, never the timings.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
HEADLINE_KEYS = (
    "supernet_vs_dense_min",
    "serving_vs_handwritten_max",
    "search_cost_vs_shared_bottom",
    "mmoe_vs_deepctr",
)
SETTINGS_KEYS = ("threads", "omp_wait_policy", "torch", "platform", "mode")


def _load_run_all() -> Any:
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _load_run_all()


def number_or_null(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# a stand-in benchmark: follows the contract, writes the given headline (no torch)
FAKE = """
import argparse, json, pathlib, sys
ap = argparse.ArgumentParser()
ap.add_argument("--smoke", action="store_true")
ap.add_argument("--quick", action="store_true")
ap.add_argument("--out", type=pathlib.Path)
args = ap.parse_args()
mode = "smoke" if args.smoke else "quick" if args.quick else "full"
{body}
doc = {{"benchmark": "{name}", "settings": {{"mode": mode}}, "rows": [], "headline": {headline}}}
(args.out / "{name}.json").write_text(json.dumps(doc))
"""


def fake(folder: Path, name: str, headline: dict[str, Any], body: str = "") -> None:
    (folder / f"{name}.py").write_text(
        textwrap.dedent(FAKE).format(name=name, headline=repr(headline), body=body)
    )


def test_discover_keeps_contract_scripts_and_skips_helpers(tmp_path):
    fake(tmp_path, "alpha", {})
    (tmp_path / "_helper.py").write_text("X = 1\n")
    (tmp_path / "legacy.py").write_text("import argparse  # only --out here\n")
    scripts, skipped = run_all.discover(tmp_path)
    assert [p.stem for p in scripts] == ["alpha"]
    assert skipped == ["legacy"]


def test_headline_collects_numbers_and_reports_what_went_wrong(tmp_path, capsys):
    bench, out = tmp_path / "bench", tmp_path / "out"
    bench.mkdir()
    fake(bench, "peers", {"mmoe_vs_deepctr": 2.5, "other": 1.0})
    fake(bench, "search_cost", {"search_cost_vs_shared_bottom": "fast"})
    fake(bench, "supernet_speed", {}, body="sys.exit('boom: the supernet broke')")
    fake(bench, "serving_speed", {}, body="sys.exit(0)")  # writes nothing
    result = run_all.main(["--smoke", "--out", str(out), "--bench-dir", str(bench)])
    written = json.loads((out / "headline.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert {k: written[k] for k in HEADLINE_KEYS} == {
        "supernet_vs_dense_min": None,
        "serving_vs_handwritten_max": None,
        "search_cost_vs_shared_bottom": None,
        "mmoe_vs_deepctr": 2.5,
    }
    errors = written["errors"]
    assert "boom: the supernet broke" in errors["supernet_speed"]
    assert "exit code 1" in errors["supernet_speed"]
    assert "did not write" in errors["serving_speed"]
    assert "is not a number" in errors["search_cost"]
    assert "peers" not in errors
    assert written["scripts"]["peers"] == {
        "status": "ok",
        "wall_s": written["scripts"]["peers"]["wall_s"],
        "headline": {"mmoe_vs_deepctr": 2.5, "other": 1.0},
    }
    assert written["scripts"]["supernet_speed"]["status"] == "failed"
    assert written["scripts"]["serving_speed"]["status"] == "bad JSON"
    assert written["settings"]["mode"] == "smoke"
    assert written["settings"]["scripts"] == ["peers", "search_cost", "serving_speed"] + [
        "supernet_speed"
    ]
    assert run_all.exit_code(result) == 1
    assert "error: supernet_speed" in capsys.readouterr().out


def test_a_missing_tracked_script_is_null_with_a_reason(tmp_path):
    bench, out = tmp_path / "bench", tmp_path / "out"
    bench.mkdir()
    fake(bench, "peers", {"mmoe_vs_deepctr": None})
    result = run_all.main(["--quick", "--out", str(out), "--bench-dir", str(bench)])
    assert result["mmoe_vs_deepctr"] is None
    assert "not found" in result["errors"]["serving_speed"]
    assert "peers" not in result["errors"]  # null is a valid headline (peer not installed)
    assert result["scripts"]["peers"]["headline"] == {"mmoe_vs_deepctr": None}
    assert run_all.exit_code(result) == 0


def test_only_rejects_unknown_names(tmp_path):
    fake(tmp_path, "alpha", {})
    with pytest.raises(SystemExit):
        run_all.main(["--smoke", "--bench-dir", str(tmp_path), "--only", "beta"])


def test_every_benchmark_script_declares_the_contract():
    scripts, skipped = run_all.discover(BENCH)
    names = {p.stem for p in scripts}
    assert {"supernet_speed", "search_cost", "peers", "scaling"} <= names
    assert {"affinity_overhead", "data_load_speed", "csv_load_memory"} <= names
    assert skipped == []


@pytest.mark.slow
def test_run_all_smoke_writes_the_contract_json(tmp_path):
    """Every benchmark at toy sizes (about a minute on 2 idle cores; the contract asks <= 90 s)."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    headline = json.loads((tmp_path / "headline.json").read_text())
    assert proc.returncode == 0, headline["errors"]
    for key in HEADLINE_KEYS:
        assert key in headline
        assert number_or_null(headline[key]), (key, headline[key])
    assert all(why.endswith("not found: not run") for why in headline["errors"].values())
    assert headline["settings"]["mode"] == "smoke"
    assert {"timestamp", "git_commit", "scripts"} <= set(headline)
    ran = headline["settings"]["scripts"]
    assert {"supernet_speed", "search_cost", "peers", "scaling"} <= set(ran)
    for name in ran:
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert {"benchmark", "settings", "rows", "headline"} <= set(doc), name
        assert doc["benchmark"] == name
        assert all(k in doc["settings"] for k in SETTINGS_KEYS), (name, sorted(doc["settings"]))
        assert doc["settings"]["mode"] == "smoke"
        assert isinstance(doc["rows"], list) and isinstance(doc["headline"], dict)
        assert all(isinstance(r, dict) for r in doc["rows"])
    assert (tmp_path / "scaling.png").stat().st_size > 0
    peers = json.loads((tmp_path / "peers.json").read_text())
    assert {r["library"] for r in peers["rows"]} == {"nas-mtl", "deepctr-torch", "LibMTL"}


def test_quality_statement_compares_our_best_with_the_paper():
    """The sentence under a quality table names our best model and its gap to each figure,
    also when our best is the paper's own family (it was left empty then)."""
    sys.path.insert(0, str(BENCH))
    quality = importlib.import_module("quality")
    tables = importlib.import_module("_quality_tables")
    paper = tables.Paper("MMoE", "mmoe", "best", {"a": 0.94, "b": 0.99}, "a paper")
    table = tables.Table("t", "title", {}, papers=(paper,), differences=("fewer epochs",))

    def row(model: str, a: float, b: float) -> dict[str, Any]:
        stat = {"mean": (a + b) / 2}
        tasks = {"a": {"mean": a}, "b": {"mean": b}}
        return {
            "library": "nas-mtl",
            "model": model,
            "status": "ok",
            "seeds": [0],
            "mean": stat,
            "tasks": tasks,
            "variant": {},
        }

    best_is_family = quality.statement(
        table, [row("mmoe", 0.95, 0.99), row("no_sharing", 0.93, 0.98)], ["a", "b"], "auc", True
    )
    assert "our best mmoe 0.9500 / 0.9900 (+0.0100 / +0.0000)" in best_is_family
    assert "at or above every paper figure" in best_is_family
    other = quality.statement(
        table, [row("mmoe", 0.93, 0.99), row("no_sharing", 0.935, 0.995)], ["a", "b"], "auc", True
    )
    assert "our best no_sharing 0.9350 / 0.9950" in other and "our mmoe 0.9300 / 0.9900" in other
    assert "below the paper on a (best)" in other


def test_the_quality_tables_get_their_own_full_mode_budget():
    assert run_all.script_timeout("quality", "full") == 7800
    assert run_all.script_timeout("quality", "quick") == run_all.TIMEOUT_S["quick"]
    assert run_all.script_timeout("peers", "full") == run_all.TIMEOUT_S["full"]
    assert run_all.script_timeout("quality", "full", given=60) == 60


def test_the_zoo_smoke_table_has_a_row_per_config_with_its_figures(tmp_path):
    """The zoo (benchmarks/zoo.py) at toy sizes: its planted groups, controls and columns."""
    sys.path.insert(0, str(BENCH))
    zoo = importlib.import_module("zoo")
    assert len(zoo.FAMILY) >= 24 and set(zoo.QUICK) <= set(zoo.FAMILY)
    regimes = {p["inputs"] for p in zoo.FAMILY.values()}
    assert regimes == {"shared", "per_task"}
    sizes = [sum(p["groups"]) for p in zoo.FAMILY.values()]
    assert min(sizes) == 2 and max(sizes) == 16
    assert zoo.planted([2, 1]) == {"g0_t0": 0, "g0_t1": 0, "g1_t0": 1}
    headline = zoo.main(["--smoke", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "zoo.json").read_text())
    assert [r["config"] for r in doc["rows"]] == ["sh-2x2", "pt-2x2"]
    for row in doc["rows"]:
        assert row["best_searched"] in zoo.SEARCHED
        # the fixed candidates: depth-matched, the oracle, and the capacity-matched three
        assert {"grouped", "shared_bottom@params", "mmoe@params"} <= set(row["all_dm"])
        assert row["best_fixed"] != "grouped"  # the oracle is a reference, not a control
        assert row["oracle_dm"] == row["all_dm"]["grouped"]
        assert -1.0 <= row["ari"] <= 1.0 and 0.0 <= row["snr_trans_open"] <= 1.0
        assert row["units_change"] is not None and row["failed_runs"] >= 0
    assert headline["configs"] == 2 and number_or_null(headline["snr_open_deviation_max"])
