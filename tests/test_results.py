"""Run results: one typed record per run, Δm against no sharing."""

from __future__ import annotations

import json

import pytest

from nas_mtl.errors import ConfigError
from nas_mtl.report import comparison_tables
from nas_mtl.results import add_delta_m, read_result, write_result


def test_run_result_round_trips_through_result_json(tmp_path, make_result, as_report):
    r = make_result("snr_trans", 3, 0.9, 0.25, searched=True)
    r.delta_m = 12.5
    write_result(tmp_path, r)
    back = read_result(tmp_path / r.run_dir)
    assert back == r and back.mean_test == pytest.approx((0.9 + 0.25) / 2)
    assert back.architecture_path == "default/snr_trans/seed_3/architecture.json"
    (tmp_path / "bad.json").write_text(json.dumps({"space": "x"}))
    with pytest.raises(ConfigError, match="not a nas-mtl run result .missing"):
        read_result(tmp_path / "bad.json")


def test_undefined_delta_m_is_recorded_not_fatal(make_result, as_report):
    results = [make_result("no_sharing", 0, 0.0, 1.0), make_result("mmoe", 0, 0.5, 1.0)]
    add_delta_m(results)  # the baseline AUC of 0 makes a relative change undefined
    assert results[1].delta_m is None and "baseline" in results[1].delta_m_note
    assert "| mmoe |" in comparison_tables(as_report(results))
