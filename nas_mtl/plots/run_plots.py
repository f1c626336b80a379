"""The ``nas-mtl plot`` stage: every picture of one finished run, in ``RUN_DIR/plots``.

Reads only what the run wrote (``architecture.json``, ``search_log.jsonl``, ``search.json`` or
``result.json``); a fixed space has no search log, so it gets the drawings and the sharing
figure but no heatmap or curves. ``docs/plots.md`` shows each figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas_mtl.errors import ConfigError
from nas_mtl.model.graph_files import export_task_subgraphs, load_architecture
from nas_mtl.plots.allocation import allocation, draw_allocation, draw_sharing, sharing_by_layer
from nas_mtl.plots.curves import draw_gate_trajectories, draw_search_curves
from nas_mtl.plots.gate_log import edge_probabilities
from nas_mtl.plots.subgraphs import draw_overview, draw_task_subgraphs
from nas_mtl.storage import read_json

PLOTS = "plots"
ARCHITECTURE = "architecture.json"
SEARCH_LOG = "search_log.jsonl"


def read_search_log(run_dir: Path) -> list[dict[str, Any]]:
    """The search's epoch records; empty for a fixed space. A torn last line (a killed run)
    is skipped: every finished epoch is a complete line."""
    path = run_dir / SEARCH_LOG
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def selected_epoch(run_dir: Path, history: list[dict[str, Any]]) -> int | None:
    """The epoch the search chose (``search.json``, else ``result.json``), if it searched."""
    for name, key in (("search.json", None), ("result.json", "search")):
        path = run_dir / name
        if path.exists():
            info = read_json(path, name)
            info = info.get(key, {}) if key else info
            if info.get("best_epoch") is not None:
                return int(info["best_epoch"])
    return history[-1]["epoch"] if history else None


def plot_run(run_dir: str | Path, target_open: float | None = None) -> list[Path]:
    """Write the run's pictures and its per-task graph exports; returns the files written."""
    run_dir = Path(run_dir)
    if not (run_dir / ARCHITECTURE).exists():
        raise ConfigError(
            f"{run_dir} has no {ARCHITECTURE}: give a finished run directory "
            f"(OUT/<variant>/<space>/seed_<s>), or run the study first"
        )
    arch = load_architecture(run_dir / ARCHITECTURE).graph
    tasks = list(arch.graph["tasks"])
    out = run_dir / PLOTS
    history = read_search_log(run_dir)
    best = selected_epoch(run_dir, history)
    chosen = next((r for r in history if r["epoch"] == best), None)
    probs = edge_probabilities(chosen, tasks) if chosen and chosen.get("gates") else None
    written = [
        *draw_task_subgraphs(arch, out / "task_subgraphs", probabilities=probs),
        *draw_overview(arch, out / "overview", probabilities=probs),
        *draw_sharing(sharing_by_layer(arch), len(tasks), out / "sharing"),
        *export_task_subgraphs(arch, out / "graphs"),
    ]
    if chosen is not None and chosen.get("gates"):
        written += draw_allocation(allocation(chosen, tasks, arch), out / "allocation")
        written += draw_gate_trajectories(history, out / "gate_trajectories", best)
    if history:
        written += draw_search_curves(history, out / "search_curves", best, target_open)
    return written
