"""report.json and report.md: every result, and per-variant comparison tables.

Tables show mean ± std over seeds for each space; the best value of each column is bold
(higher or lower per metric; fewer parameters and multiply-adds are better). Fixed spaces
with the depth of a searched space's supernet are marked as depth-matched controls, and
each searched space is compared seed by seed with the best control (docs/search.md,
"Controls"), because a mean over three seeds hides whether the search wins reliably.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas_mtl.errors import ConfigError
from nas_mtl.report_html import report_html
from nas_mtl.results import RunResult
from nas_mtl.storage import read_json, write_bytes_atomic, write_json_atomic


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _int(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):,.0f}" if values else "–"


def comparison_tables(report: dict[str, Any]) -> str:
    """Markdown tables, one per data variant."""
    results = [RunResult.from_json(r, "report.json") for r in report["results"]]
    variants: dict[str, list[RunResult]] = {}
    for r in results:
        key = ", ".join(f"{k}={v}" for k, v in r.variant.items()) or "default"
        variants.setdefault(key, []).append(r)
    blocks = []
    for label, rows in variants.items():
        tasks = list(rows[0].tasks)
        metric = {t: rows[0].tasks[t].metric for t in tasks}
        higher = {t: rows[0].tasks[t].higher_is_better for t in tasks}
        spaces = list(dict.fromkeys(r.space for r in rows))
        cols: list[tuple[str, str, bool | None]] = [
            (f"{t} ({metric[t]})", t, higher[t]) for t in tasks
        ] + [
            ("mean", "mean_test", None),
            ("Δm %", "delta_m", True),
            ("params", "total_params", False),
            ("MACs", "total_macs", False),
            ("wall s", "wall_s", None),
        ]
        table: dict[str, dict[str, list[float]]] = {}
        for space in spaces:
            mine = [r for r in rows if r.space == space]
            table[space] = {}
            for _, key, _ in cols:
                vals = [(r.tasks[key].test if key in r.tasks else getattr(r, key)) for r in mine]
                # a metric that is not a number (one-class AUC, divergence) is no candidate
                table[space][key] = [float(v) for v in vals if v is not None and math.isfinite(v)]
        means = {s: {k: statistics.fmean(v) for k, v in table[s].items() if v} for s in spaces}
        best: dict[str, str] = {}
        for _, key, hi in cols:
            if hi is None and key != "mean_test":
                continue
            if key == "mean_test":  # the mean is only comparable when all metrics agree
                if len(set(higher.values())) != 1:
                    continue
                hi = next(iter(higher.values()))
            cand = [s for s in spaces if key in means[s]]
            if cand:
                best[key] = (max if hi else min)(cand, key=lambda s: means[s][key])
        searched_depths = {
            r.supernet["depth"] for r in rows if r.searched and "depth" in (r.supernet or {})
        }
        shape = {s: _shape(next(r for r in rows if r.space == s)) for s in spaces}
        head = "| space | " + " | ".join(c for c, _, _ in cols) + " | depth × width |"
        sep = "|---" * (len(cols) + 2) + "|"
        lines = [f"### {report['study']}: {label}", "", head, sep]
        for space in spaces:
            cells = []
            for _, key, _ in cols:
                vals = table[space][key]
                text = (
                    _int(vals)
                    if key in ("total_params", "total_macs")
                    else (
                        _fmt(vals, 1)
                        if key == "wall_s"
                        else _fmt(vals, 2 if key == "delta_m" else 4)
                    )
                )
                cells.append(f"**{text}**" if best.get(key) == space and vals else text)
            first = next(r for r in rows if r.space == space)
            fixed = not first.searched and first.control is None  # not a random control
            matched = fixed and shape[space][0] in searched_depths
            name = f"{space} †" if matched else space
            if any(r.status == "failed" for r in rows if r.space == space):
                name += " ✗"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {shape[space][1]} |")
        n_seeds = len({r.seed for r in rows})
        lines += [
            "",
            f"Test metrics, mean ± std over {n_seeds} seed(s); best per column in "
            f"bold; Δm vs no_sharing (higher is better); params and MACs of the "
            f"retrained model, per example, all tasks."
            + (" †: a fixed space at a searched space's depth." if searched_depths else ""),
        ]
        failed = [r for r in rows if r.status == "failed"]
        if failed:
            lines += ["", "✗: failed runs, not results:"]
            lines += [f"- {r.space} seed {r.seed}: {r.failure}" for r in failed]
        if "mean_test" in best:
            lines += paired_comparison(rows, higher=next(iter(higher.values())))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _shape(result: RunResult) -> tuple[int | None, str]:
    """(depth, "depth × widths") of a row: the supernet's for a searched space."""
    src = result.supernet if result.searched else None
    src = src if src and "depth" in src else result.architecture
    if "depth" not in src:
        return None, "–"
    return src["depth"], f"{src['depth']} × {'/'.join(map(str, src['widths']))}"


def paired_comparison(rows: list[RunResult], higher: bool) -> list[str]:
    """Per-seed differences of each searched space's mean test metric against the best control.

    The best control is the non-searched row (fixed space or random control) with the best
    mean over seeds; a difference is searched − control, and the sign count says on how many
    seeds the search won.
    """
    by_space: dict[str, dict[int, float]] = {}
    for r in rows:
        by_space.setdefault(r.space, {})[r.seed] = float(r.mean_test)
    searched = list(dict.fromkeys(r.space for r in rows if r.searched))
    controls = [s for s in by_space if s not in searched]
    if not searched or not controls:
        return []
    pick = max if higher else min
    best = pick(controls, key=lambda s: statistics.fmean(by_space[s].values()))
    lines = [""]
    for space in searched:
        seeds = sorted(set(by_space[space]) & set(by_space[best]))
        diffs = [by_space[space][k] - by_space[best][k] for k in seeds]
        wins = sum((d > 0) if higher else (d < 0) for d in diffs)
        lines.append(
            f"Paired, {space} − {best} (best control), mean test per seed: "
            + ", ".join(f"{d:+.4f}" for d in diffs)
            + f"; {space} better on {wins} of {len(diffs)} seed(s)."
        )
    return lines


def write_report(out: str | Path, report: dict[str, Any], figures: str = "") -> None:
    """``report.json``, ``report.md`` (tables, then the pictures' markdown) and the same as
    one self-contained ``report.html``."""
    out = Path(out)
    write_json_atomic(out / "report.json", report)
    text = f"# nas-mtl report: {report['study']}\n\n" + comparison_tables(report)
    if figures:
        text += "\n\n" + figures
    write_bytes_atomic(out / "report.md", text.encode())
    page = report_html(text, out, f"nas-mtl report: {report['study']}")
    write_bytes_atomic(out / "report.html", page.encode())


def load_report(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise ConfigError(
            f"no report.json in {run_dir}; give the --out folder of a finished 'nas-mtl run'"
        )
    return read_json(path, "report", dict, keys=("results",))
