"""The comparison tables and the paired comparison against the best control."""

from __future__ import annotations

import pytest

from nas_mtl.report import comparison_tables, paired_comparison
from nas_mtl.results import add_delta_m


def test_delta_m_and_tables_mark_the_best_per_column(make_result, as_report):
    results = [
        make_result("no_sharing", 0, 0.80, 1.0, 300),
        make_result("snr_trans", 0, 0.88, 0.5, 200),
        make_result("no_sharing", 1, 0.80, 1.0, 300),
        make_result("snr_trans", 1, 0.84, 0.5, 200),
    ]
    add_delta_m(results)
    assert results[0].delta_m == 0.0
    assert results[1].delta_m == pytest.approx((10.0 + 50.0) / 2)  # AUC +10 %, MSE halved
    text = comparison_tables(as_report(results))
    snr_row = next(line for line in text.splitlines() if line.startswith("| snr_trans"))
    ns_row = next(line for line in text.splitlines() if line.startswith("| no_sharing"))
    assert "**0.8600 ± 0.0283**" in snr_row and "**0.5000 ± 0.0000**" in snr_row
    assert "**28.75 ± 1.77**" in snr_row  # Δm: mean of 30 % and 27.5 %
    assert "**200**" in snr_row and "**" not in ns_row.split("|")[2]
    assert "mean ± std over 2 seed(s)" in text


def test_paired_comparison_against_the_best_control(make_result, as_report):
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
            rows.append(make_result(space, seed, value, value, searched=searched, depth=depth))
    lines = paired_comparison(rows, higher=False)
    assert lines[1] == (
        "Paired, snr_trans − grouped (best control), mean test per seed: "
        "-0.0200, +0.0200, -0.0500; snr_trans better on 2 of 3 seed(s)."
    )
    text = comparison_tables(as_report(rows))
    assert "| grouped † |" in text and "| no_sharing |" in text  # only depth 2 is matched
    assert "| 2 × 32 |" in text and "| 1 × 32 |" in text
