"""The main job: for every data variant, seed and search space, search → derive → retrain.

Each stage is a plain function (:func:`run_search`, :func:`run_derive`, :func:`run_retrain`)
that reads and writes one run directory, so the CLI, Optuna tuning and crash recovery call
the same code. Layout of ``OUT``::

    study.toml                       copy of the study file
    report.json, report.md           every result, and the comparison tables
    <variant>/<space>/seed_<s>/
        context.json                 what this run is (study, variant, space, seed)
        supernet.json                the searched routing graph
        search_log.jsonl             per-epoch losses and gate statistics
        architecture.json            the derived architecture (+ provenance)
        retrain_log.jsonl
        checkpoints/                 search_epoch_NNN.pt, search_best.pt, retrain_best.pt
        result.json                  this run's entry of report.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import networkx as nx
import torch

import nas_mtl
from nas_mtl.cost import graph_costs
from nas_mtl.data import MultiTaskData, TableTask, load_dataset, load_per_task_table, load_table
from nas_mtl.derive import choose_architecture, derive, load_architecture, save_architecture
from nas_mtl.errors import ConfigError, NasMtlError
from nas_mtl.graph import load_graph, save_graph, write_bytes_atomic, write_json_atomic
from nas_mtl.metrics import delta_m
from nas_mtl.report import write_report
from nas_mtl.retrain import retrain
from nas_mtl.search import search
from nas_mtl.spaces import build_space
from nas_mtl.study import Study, load_study, parse_study
from nas_mtl.supernet import Supernet, learned_gates
from nas_mtl.training import resolve_device

log = logging.getLogger(__name__)

BASELINE = "no_sharing"


def load_data(
    study: Study, variant: Mapping[str, Any], seed: int, data_dir: str | Path | None = None
) -> MultiTaskData:
    """The study's data for one sweep variant; a user file is resolved next to the study.

    A sweep varies a built-in data set's ``params``, or a user file's [data] fields.
    """
    d = study.data
    if d.name is not None:
        return load_dataset(d.name, data_dir=data_dir, seed=seed, **{**d.params, **variant})
    d = replace(d, **{k: tuple(v) if isinstance(v, list) else v for k, v in variant.items()})
    path = Path(d.file)
    if not path.is_absolute() and study.path is not None and not path.exists():
        path = Path(study.path).parent / path
    if d.task_column is not None:
        return load_per_task_table(
            path,
            task_column=d.task_column,
            label_column=d.label_column,
            task_type=d.task_type,
            n_classes=d.n_classes,
            weights=d.weights,
            metric=d.metric,
            features=d.features,
            categorical=d.categorical,
            split_column=d.split_column,
            split_fractions=d.split_fractions,
            seed=seed,
        )
    tasks = [
        TableTask(
            name=t.name,
            column=t.column or t.name,
            type=t.type,
            n_classes=t.n_classes,
            weight=t.weight,
            metric=t.metric,
        )
        for t in d.tasks
    ]
    return load_table(
        path,
        tasks=tasks,
        features=d.features,
        categorical=d.categorical,
        split_column=d.split_column,
        split_fractions=d.split_fractions,
        seed=seed,
    )


def variant_label(variant: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items()) or "default"


def space_graph(study: Study, space: str, data: MultiTaskData) -> nx.DiGraph:
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return build_space(space, data.input_shape, out_dims, **study.space_params.get(space, {}))


def run_search(
    study: Study, space: str, data: MultiTaskData, seed: int, run_dir: Path, progress: bool = False
) -> tuple[Supernet, dict[str, Any]]:
    """Build the space's supernet and search its gates (spaces without gates skip search)."""
    torch.manual_seed(seed)
    net = Supernet(space_graph(study, space, data))
    save_graph(net.graph, run_dir / "supernet.json")
    if not learned_gates(net):
        return net, {"searched": False}
    result = search(net, data, study.search, seed=seed, run_dir=run_dir, progress=progress)
    chosen = result.history[result.best_epoch] if result.history else {}
    return result.supernet, {
        "searched": True,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "wall_s": result.wall_s,
        "open_fraction": chosen.get("open_fraction"),
        "undecided": chosen.get("undecided"),
        "warnings": result.warnings,
    }


def run_derive(
    net: Supernet,
    study: Study,
    data: MultiTaskData,
    seed: int,
    run_dir: Path,
    provenance: Mapping[str, Any],
) -> nx.DiGraph:
    device = next(net.parameters()).device
    decisions, how = choose_architecture(
        net,
        data,
        study.derive.samples,
        seed,
        device,
        study.search.target_open,
        study.search.target_tolerance,
    )
    arch = derive(net, decisions)
    arch.graph["input_regime"] = data.regime  # per-task inputs: prune unused task streams
    save_architecture(run_dir / "architecture.json", arch, {**provenance, "derive": how})
    return arch


def load_searched(run_dir: Path) -> Supernet:
    """The searched supernet of a run directory (graph + best search checkpoint)."""
    net = Supernet(load_graph(run_dir / "supernet.json"))
    best = run_dir / "checkpoints" / "search_best.pt"
    if best.exists():
        net.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
    return net


STUDY_COPY = "study.toml"
STUDY_JSON = "study.json"  # a study built in Python has no file: its fields are saved instead


def prepare_out(study: Study, out: Path) -> None:
    """Create OUT with a copy of the study; refuse an OUT holding another study's results."""
    out.mkdir(parents=True, exist_ok=True)
    previous = out / STUDY_COPY
    if previous.exists() and any(out.glob("*/*/seed_*/result.json")):
        sha = hashlib.sha256(previous.read_bytes()).hexdigest()
        if sha != study.sha256:
            raise ConfigError(
                f"{out} holds finished results of a different version of the study; "
                f"choose another --out (or move that folder away)"
            )
    if study.path is not None:
        write_bytes_atomic(out / STUDY_COPY, Path(study.path).read_bytes())
    else:
        fields = {k: v for k, v in asdict(study).items() if k not in ("path", "sha256")}
        write_json_atomic(out / STUDY_JSON, fields)


def open_run_dir(out: Path, variant: Mapping[str, Any], space: str, seed: int) -> Path:
    """``OUT/<variant>/<space>/seed_<s>`` with its context.json (what the run is)."""
    run_dir = out / variant_label(variant) / space / f"seed_{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    study_file = STUDY_COPY if (out / STUDY_COPY).exists() else STUDY_JSON
    write_json_atomic(
        run_dir / "context.json",
        {"study": f"../../../{study_file}", "variant": dict(variant), "space": space, "seed": seed},
    )
    return run_dir


def run_one(
    study: Study,
    variant: Mapping[str, Any],
    space: str,
    seed: int,
    data: MultiTaskData,
    out: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """All stages for one space and seed; returns its result entry (also result.json)."""
    start = time.perf_counter()
    run_dir = out / variant_label(variant) / space / f"seed_{seed}"
    finished = run_dir / "result.json"
    if finished.exists():  # never redo or overwrite a finished result
        entry = json.loads(finished.read_text())
        if entry.get("study_sha256") != study.sha256:
            raise ConfigError(
                f"{run_dir} holds a finished result of a different version of the study; "
                f"choose another --out (or move that folder away)"
            )
        log.info("%s: finished earlier, reusing result.json", run_dir)
        return entry
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished attempt: start this space and seed afresh
    open_run_dir(out, variant, space, seed)
    provenance = {
        "seed": seed,
        "space": space,
        "variant": dict(variant),
        "study": study.name,
        "study_sha256": study.sha256,
    }
    net, search_info = run_search(study, space, data, seed, run_dir, progress)
    arch = run_derive(net, study, data, seed, run_dir, provenance)
    result = retrain(arch, data, study.retrain, seed=seed, run_dir=run_dir, progress=progress)
    arch_cost = graph_costs(arch)
    sb = (
        graph_costs(space_graph(study, "shared_bottom", data))
        if space != "shared_bottom"
        else arch_cost
    )
    super_cost = graph_costs(net.graph)
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
    entry = {
        "space": space,
        "seed": seed,
        "variant": dict(variant),
        "tasks": tasks,
        "mean_test": sum(v["test"] for v in tasks.values()) / len(tasks),
        "delta_m": None,
        "params": {t: c["params"] for t, c in arch_cost["per_task"].items()},
        "macs": {t: c["macs"] for t, c in arch_cost["per_task"].items()},
        "total_params": arch_cost["total"]["params"],
        "total_macs": arch_cost["total"]["macs"],
        "supernet": super_cost,
        "shared_bottom": sb,
        "study_sha256": study.sha256,
        "architecture": architecture_summary(arch),
        "search": search_info,
        "retrain": {
            "epochs": len(result.fit.history),
            "best_epoch": result.fit.best_epoch,
            "device": result.fit.device,
            "wall_s": result.fit.wall_s,
        },
        "wall_s": time.perf_counter() - start,
    }
    write_json_atomic(run_dir / "result.json", entry)
    return entry


def architecture_summary(arch: nx.DiGraph) -> dict[str, Any]:
    """How much of the supernet survived: components and edges, per task and in all."""
    comps = [n for n, r in arch.nodes(data="role") if r == "component"]
    return {
        "open_fraction": arch.graph.get("open_fraction"),  # the figure every printout shows
        "components": len(comps),
        "edges": arch.number_of_edges(),
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


def run_study(
    study: Study | str | Path,
    out: str | Path,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every variant × seed × space of a study; write report.json and report.md."""
    study = study if isinstance(study, Study) else load_study(study)
    if device is not None:
        resolve_device(device)  # fail now, not after the first search
        study = replace(
            study,
            search=replace(study.search, device=device),
            retrain=replace(study.retrain, device=device),
        )
    seeds = list(seeds) if seeds is not None else list(study.seeds)
    out = Path(out)
    prepare_out(study, out)
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    for variant in study.data_variants():
        for seed in seeds:
            data = load_data(study, variant, seed, data_dir)
            for space in study.spaces:
                entry = run_one(study, variant, space, seed, data, out, progress)
                results.append(entry)
                if on_result is not None:
                    on_result(entry)
    add_delta_m(results)
    report = {
        "study": study.name,
        "study_sha256": study.sha256,
        "package_version": nas_mtl.__version__,
        "seeds": seeds,
        "spaces": list(study.spaces),
        "settings": {"search": asdict(study.search), "retrain": asdict(study.retrain)},
        "results": results,
        "wall_s": time.perf_counter() - start,
    }
    write_report(out, report)
    return report


def study_of_run(run_dir: Path) -> tuple[Study, dict[str, Any]]:
    """The study and context of a ``<variant>/<space>/seed_<s>`` run directory."""
    ctx_path = run_dir / "context.json"
    if not ctx_path.exists():
        raise ConfigError(
            f"{run_dir} is not a run directory (no context.json); give "
            f"OUT/<variant>/<space>/seed_<s>"
        )
    ctx = json.loads(ctx_path.read_text())
    path = run_dir / ctx["study"]
    if path.suffix == ".json":
        return parse_study(json.loads(path.read_text()), str(path)), ctx
    return load_study(path), ctx


def retrain_run(
    run_dir: Path,
    *,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """CLI ``retrain``: retrain a run directory's architecture.json from scratch."""
    study, ctx = study_of_run(run_dir)
    if device is not None:
        study = replace(study, retrain=replace(study.retrain, device=device))
    data = load_data(study, ctx["variant"], ctx["seed"], data_dir)
    arch = load_architecture(run_dir / "architecture.json").graph
    result = retrain(
        arch, data, study.retrain, seed=ctx["seed"], run_dir=run_dir, progress=progress
    )
    return {t.name: result.test.metrics[t.name] for t in data.tasks}
