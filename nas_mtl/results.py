"""Run results: what one retrained architecture scored and cost, and Δm against no sharing.

A :class:`RunResult` is written to ``result.json`` by :func:`write_result` and read back by
:func:`read_result`; report.json holds the same records, so the run directory, the report,
Δm (computed once, by :func:`add_delta_m`, then written to both) and every later reader
(tuning, plots, clustering) see one thing.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import networkx as nx

from nas_mtl.data import MultiTaskData
from nas_mtl.errors import ConfigError, NasMtlError
from nas_mtl.metrics import delta_m
from nas_mtl.model.cost import graph_costs
from nas_mtl.model.graph import node_layers
from nas_mtl.stages.evaluation import constant_objective
from nas_mtl.stages.retrain import RetrainResult
from nas_mtl.storage import read_json, write_json_atomic
from nas_mtl.study import Study
from nas_mtl.study_data import space_graph

log = logging.getLogger(__name__)

BASELINE = "no_sharing"
RESULT_FILE = "result.json"


@dataclass
class TaskScore:
    """One task's primary metric on validation and test, and every test metric."""

    metric: str
    higher_is_better: bool
    val: float
    test: float
    test_metrics: dict[str, float]


@dataclass
class RunResult:
    """One space × seed × data variant: its scores, costs, architecture and provenance."""

    space: str
    seed: int
    variant: dict[str, Any]
    run_dir: str  # relative to the study's output folder
    tasks: dict[str, TaskScore]
    params: dict[str, int]  # per task: everything on the task's subgraph
    macs: dict[str, int]
    total_params: float  # each part counted once (a mean for random controls)
    total_macs: float
    architecture: dict[str, Any]  # open fraction, components, depth, widths
    retrain: dict[str, Any]
    search: dict[str, Any]  # {"searched": bool, epochs, best_epoch, warnings, ...}
    study_sha256: str
    wall_s: float
    status: str = "finished"  # or "failed": metrics not finite, or worse than a constant
    failure: str | None = None  # why the run failed
    delta_m: float | None = None  # vs no_sharing of the same seed and variant (add_delta_m)
    delta_m_note: str | None = None  # why Δm is undefined, when it is
    supernet: dict[str, Any] | None = None  # the searched supernet's cost and shape
    control: dict[str, Any] | None = None  # random controls: of which space, how many samples
    samples_mean_test: list[float] | None = None
    mean_test: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean_test = sum(t.test for t in self.tasks.values()) / len(self.tasks)

    @property
    def searched(self) -> bool:
        return bool(self.search.get("searched"))

    @property
    def architecture_path(self) -> str | None:
        """architecture.json relative to the output folder (controls keep one per sample)."""
        return None if self.control else f"{self.run_dir}/architecture.json"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "result") -> RunResult:
        known = {f.name for f in fields(cls) if f.init}
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = known - set(data) - optional
        if missing:
            raise ConfigError(
                f"{where} is not a nas-mtl run result (missing {', '.join(sorted(missing))}); "
                f"it was written by another version: rerun the study into a new --out"
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["tasks"] = {t: TaskScore(**v) for t, v in data["tasks"].items()}
        return cls(**kwargs)


def write_result(out: Path, result: RunResult) -> None:
    write_json_atomic(Path(out) / result.run_dir / RESULT_FILE, result.to_json())


def read_result(path: Path) -> RunResult:
    """A run directory's result.json (``path`` is the file or its folder)."""
    path = Path(path)
    path = path / RESULT_FILE if path.is_dir() else path
    return RunResult.from_json(read_json(path, "result"), str(path))


def result_summary(
    study: Study, data: MultiTaskData, arch: nx.DiGraph, result: RetrainResult
) -> dict[str, Any]:
    """Metrics, costs and shape of one retrained architecture (part of a result entry)."""
    arch_cost = graph_costs(arch)
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
    failure = judge(data, tasks, result.fit.best_val_loss)
    return {
        "tasks": {t: TaskScore(**v) for t, v in tasks.items()},
        "status": "failed" if failure else "finished",
        "failure": failure,
        "params": {t: c["params"] for t, c in arch_cost["per_task"].items()},
        "macs": {t: c["macs"] for t, c in arch_cost["per_task"].items()},
        "total_params": arch_cost["total"]["params"],
        "total_macs": arch_cost["total"]["macs"],
        "architecture": architecture_summary(arch),
        "retrain": {
            "epochs": len(result.fit.history),
            "best_epoch": result.fit.best_epoch,
            "device": result.fit.device,
            "threads": result.fit.threads,  # CPU intra-op threads (docs/speed.md, "Threads")
            "wall_s": result.fit.wall_s,
            "warnings": [w for w in [constant_warning(data, result.fit.best_val_loss)] if w],
        },
    }


CONSTANT_BAND = 0.01  # a validation objective within 1% of the constant's: it learned little


def judge(data: MultiTaskData, tasks: dict[str, dict[str, Any]], best_val: float) -> str | None:
    """Why a retrained model is not a result, or None.

    Not a result: a metric that is not a finite number, or a best validation objective more
    than ``CONSTANT_BAND`` above that of the constant predictor (training mean / class prior;
    ``docs/metrics.md``), next to which every model retrained from scratch starts
    (``nas_mtl.stages.heads``): training made it worse. Divergence that stays finite (an MSE
    of 1e19) fails the second test.
    """
    for name, v in tasks.items():
        bad = [m for m, x in {"val": v["val"], "test": v["test"]}.items() if not math.isfinite(x)]
        if bad:
            return f"task '{name}': the {bad[0]} {v['metric']} is not a finite number"
    constant = constant_objective(data)
    if not math.isfinite(best_val) or best_val > constant + CONSTANT_BAND * abs(constant):
        return (
            f"worse than a constant prediction: best validation objective {best_val:.4g} > "
            f"{constant:.4g} of predicting the training mean / class prior (where a model "
            f"retrained from scratch starts); check the learning rate, epochs and labels"
        )
    return None


def constant_warning(data: MultiTaskData, best_val: float) -> str | None:
    """A note for a result that barely moved from the constant prediction it started at."""
    constant = constant_objective(data)
    if abs(best_val - constant) > CONSTANT_BAND * abs(constant):
        return None
    return (
        f"the best validation objective {best_val:.4g} is within {CONSTANT_BAND:.0%} of the "
        f"constant prediction's {constant:.4g}: the model learned little; train longer or "
        f"raise the learning rate"
    )


def reference_cost(study: Study, data: MultiTaskData) -> dict[str, Any]:
    """The Shared-Bottom model's cost at the study's settings: the yardstick for every row."""
    return graph_costs(space_graph(study, "shared_bottom", data))["total"]


def graph_shape(graph: nx.DiGraph) -> dict[str, Any]:
    """Depth (component layers) and the distinct component widths: what controls must match."""
    comps = [n for n, r in graph.nodes(data="role") if r == "component"]
    layers = node_layers(graph)
    return {
        "depth": max((layers[n] for n in comps), default=0),
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


def add_delta_m(results: list[RunResult]) -> None:
    """Δm of each result against the no-sharing result of the same variant and seed.

    The one place Δm is computed (``docs/metrics.md``); a result without a baseline keeps
    ``delta_m = None``, and an undefined Δm (a baseline metric of 0) says why in
    ``delta_m_note``.
    """

    def key(r: RunResult) -> tuple[str, int]:
        return json.dumps(r.variant, sort_keys=True), r.seed

    base = {key(r): r for r in results if r.space == BASELINE}
    for r in results:
        b = base.get(key(r))
        if b is None:
            continue
        try:
            r.delta_m = delta_m(
                {t: v.test for t, v in r.tasks.items()},
                {t: b.tasks[t].test for t in r.tasks},
                {t: v.higher_is_better for t, v in r.tasks.items()},
            )
            r.delta_m_note = None
        except NasMtlError as e:  # e.g. a baseline metric of 0: Δm is undefined, not fatal
            r.delta_m, r.delta_m_note = None, str(e)
            log.warning("%s seed %s: no delta_m: %s", r.space, r.seed, e)


def mean_of_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One result summary whose numbers are the means of several (the first gives the shape)."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    first = samples[0]
    tasks = {
        t: TaskScore(
            metric=v.metric,
            higher_is_better=v.higher_is_better,
            val=mean([s["tasks"][t].val for s in samples]),
            test=mean([s["tasks"][t].test for s in samples]),
            test_metrics={
                m: mean([s["tasks"][t].test_metrics[m] for s in samples]) for m in v.test_metrics
            },
        )
        for t, v in first["tasks"].items()
    }
    failures = [s["failure"] for s in samples if s["failure"]]
    return {
        **first,
        "tasks": tasks,
        "status": "failed" if failures else "finished",
        "failure": failures[0] if failures else None,
        "total_params": mean([s["total_params"] for s in samples]),
        "total_macs": mean([s["total_macs"] for s in samples]),
        "architecture": {
            **first["architecture"],
            "open_fraction": mean([s["architecture"]["open_fraction"] for s in samples]),
            "per_sample": [s["architecture"]["open_fraction"] for s in samples],
        },
        "samples_mean_test": [
            sum(v.test for v in s["tasks"].values()) / len(s["tasks"]) for s in samples
        ],
    }
