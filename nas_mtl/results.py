"""Result entries: what one retrained architecture scored and cost, and Δm against no sharing.

Every row of report.json is built here, so the run, the controls and the report agree.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import networkx as nx

from nas_mtl.cost import graph_costs
from nas_mtl.data import MultiTaskData
from nas_mtl.errors import NasMtlError
from nas_mtl.metrics import delta_m
from nas_mtl.stages.retrain import RetrainResult
from nas_mtl.study import Study
from nas_mtl.study_data import space_graph

log = logging.getLogger(__name__)

BASELINE = "no_sharing"


def result_summary(
    study: Study, data: MultiTaskData, arch: nx.DiGraph, result: RetrainResult
) -> dict[str, Any]:
    """Metrics, costs and shape of one retrained architecture (part of a result entry)."""
    arch_cost = graph_costs(arch)
    sb = (
        graph_costs(space_graph(study, "shared_bottom", data))
        if arch.graph.get("name") != "shared_bottom"
        else arch_cost
    )
    tasks = {
        t.name: {
            "metric": t.primary_metric,
            "higher_is_better": t.higher_is_better,
            "val": result.val.metrics[t.name][t.primary_metric],
            "test": result.test.metrics[t.name][t.primary_metric],
            "test_metrics": result.test.metrics[t.name],
        }
        for t in data.tasks
    }
    return {
        "tasks": tasks,
        "mean_test": sum(v["test"] for v in tasks.values()) / len(tasks),
        "delta_m": None,
        "params": {t: c["params"] for t, c in arch_cost["per_task"].items()},
        "macs": {t: c["macs"] for t, c in arch_cost["per_task"].items()},
        "total_params": arch_cost["total"]["params"],
        "total_macs": arch_cost["total"]["macs"],
        "shared_bottom": sb,
        "architecture": architecture_summary(arch),
        "retrain": {
            "epochs": len(result.fit.history),
            "best_epoch": result.fit.best_epoch,
            "device": result.fit.device,
            "wall_s": result.fit.wall_s,
        },
    }


def graph_shape(graph: nx.DiGraph) -> dict[str, Any]:
    """Depth (component layers) and the distinct component widths: what controls must match."""
    comps = [n for n, r in graph.nodes(data="role") if r == "component"]
    return {
        "depth": max((graph.nodes[n]["layer"] for n in comps), default=0),
        "widths": sorted({graph.nodes[n]["width"] for n in comps}),
    }


def architecture_summary(arch: nx.DiGraph) -> dict[str, Any]:
    """How much of the supernet survived: components and edges, per task and in all."""
    comps = [n for n, r in arch.nodes(data="role") if r == "component"]
    return {
        "open_fraction": arch.graph.get("open_fraction"),  # the figure every printout shows
        "components": len(comps),
        "edges": arch.number_of_edges(),
        **graph_shape(arch),
        "components_per_task": {
            t: sum(t in arch.nodes[n].get("tasks", arch.graph["tasks"]) for n in comps)
            for t in arch.graph["tasks"]
        },
    }


def add_delta_m(results: list[dict[str, Any]]) -> None:
    """Δm of each entry against the no-sharing entry of the same variant and seed."""
    base = {
        (json.dumps(r["variant"], sort_keys=True), r["seed"]): r
        for r in results
        if r["space"] == BASELINE
    }
    for r in results:
        b = base.get((json.dumps(r["variant"], sort_keys=True), r["seed"]))
        if b is None:
            continue
        tasks = r["tasks"]
        try:
            r["delta_m"] = delta_m(
                {t: v["test"] for t, v in tasks.items()},
                {t: b["tasks"][t]["test"] for t in tasks},
                {t: v["higher_is_better"] for t, v in tasks.items()},
            )
        except NasMtlError as e:  # e.g. a baseline metric of 0: Δm is undefined, not fatal
            r["delta_m"] = None
            r["delta_m_note"] = str(e)
            log.warning("%s seed %s: no delta_m: %s", r["space"], r["seed"], e)


def mean_of_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One result summary whose numbers are the means of several (the first gives the shape)."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    first = samples[0]
    tasks = {
        t: {
            **v,
            "val": mean([s["tasks"][t]["val"] for s in samples]),
            "test": mean([s["tasks"][t]["test"] for s in samples]),
            "test_metrics": {
                m: mean([s["tasks"][t]["test_metrics"][m] for s in samples])
                for m in v["test_metrics"]
            },
        }
        for t, v in first["tasks"].items()
    }
    return {
        **first,
        "tasks": tasks,
        "mean_test": mean([s["mean_test"] for s in samples]),
        "total_params": mean([s["total_params"] for s in samples]),
        "total_macs": mean([s["total_macs"] for s in samples]),
        "architecture": {
            **first["architecture"],
            "open_fraction": mean([s["architecture"]["open_fraction"] for s in samples]),
            "per_sample": [s["architecture"]["open_fraction"] for s in samples],
        },
        "samples_mean_test": [s["mean_test"] for s in samples],
    }
