"""The main job: for every sweep point, seed and search space, search → derive → retrain.

Each stage is a plain function (:func:`run_search`, :func:`run_derive`, ``retrain``) that
reads and writes one run directory (layout in :mod:`nas_mtl.rundir`), so the CLI, tuning and
crash recovery call the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import networkx as nx
import torch

import nas_mtl
from nas_mtl.controls import run_random_control
from nas_mtl.data import MultiTaskData, standardize_targets
from nas_mtl.errors import ConfigError
from nas_mtl.model.cost import graph_costs
from nas_mtl.model.graph_files import load_architecture, load_graph, save_architecture, save_graph
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.parallel_runs import run_in_processes
from nas_mtl.report import write_report
from nas_mtl.report_figures import report_figures
from nas_mtl.results import (
    RESULT_FILE,
    RunResult,
    add_delta_m,
    graph_shape,
    read_result,
    reference_cost,
    result_summary,
    write_result,
)
from nas_mtl.rundir import (
    check_out,
    check_run_names,
    open_run_dir,
    out_lock,
    prepare_out,
    replace_run_dir,
    resumable,
    run_rel,
    study_of_run,
    variant_label,
)
from nas_mtl.serving.preprocessing import write_preprocessing
from nas_mtl.stages.candidates import choose_architecture
from nas_mtl.stages.checkpoint import load_checkpoint
from nas_mtl.stages.derive import derive
from nas_mtl.stages.distributed import is_main, process_group
from nas_mtl.stages.evaluation import resolve_device
from nas_mtl.stages.pooling import pooled_tasks, run_groups
from nas_mtl.stages.retrain import RetrainResult, retrain
from nas_mtl.stages.search import search, targets_of
from nas_mtl.storage import read_json, write_json_atomic
from nas_mtl.study import Study, load_study
from nas_mtl.study_data import load_data, space_graph

log = logging.getLogger(__name__)


SEARCH_INFO = "search.json"  # written when a search has finished: what it chose


def run_search(
    study: Study,
    space: str,
    data: MultiTaskData,
    seed: int,
    run_dir: Path,
    progress: bool = False,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Supernet, dict[str, Any]]:
    """Build the space's supernet and search its gates (spaces without gates skip search).

    With ``resume``, a finished search is read back and an interrupted one continues from its
    last epoch checkpoint. ``on_epoch`` sees every search epoch's log record (a tuning
    trial's pruner).
    """
    if resume and (run_dir / SEARCH_INFO).exists():
        return load_searched(run_dir), read_json(run_dir / SEARCH_INFO, "search summary")
    torch.manual_seed(seed)
    net = Supernet(space_graph(study, space, data))
    save_graph(net.graph, run_dir / "supernet.json")
    if not learned_gates(net):
        info: dict[str, Any] = {"searched": False}
        write_json_atomic(run_dir / SEARCH_INFO, info)
        return net, info
    result = search(
        net,
        data,
        study.search,
        seed=seed,
        run_dir=run_dir,
        progress=progress,
        resume=resume,
        on_epoch=on_epoch,
    )
    chosen = result.history[result.best_epoch] if result.history else {}
    info = {
        "searched": True,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "selection_loss": result.best_val_loss,  # the selected epoch's selection objective
        "wall_s": result.wall_s,
        "threads": result.threads,
        "open_fraction": chosen.get("open_fraction"),
        "undecided": chosen.get("undecided"),
        "warnings": result.warnings,
    }
    write_json_atomic(run_dir / SEARCH_INFO, info)
    return result.supernet, info


def run_derive(
    net: Supernet,
    study: Study,
    data: MultiTaskData,
    seed: int,
    run_dir: Path,
    provenance: Mapping[str, Any],
) -> nx.DiGraph:
    device = next(net.parameters()).device
    targets = targets_of(study.search)
    cfg = study.derive
    groups = (
        run_groups(run_dir, net, cfg.groups, cfg.min_affinity) if cfg.pool == "affinity" else None
    )
    with pooled_tasks(net, groups):
        decisions, how = choose_architecture(
            net, data, cfg.samples, seed, device, targets.within(net), targets.near(net)
        )
        arch = derive(net, decisions)
    if groups is not None:
        how = {**how, "task_groups": groups.record()}
    save_architecture(run_dir / "architecture.json", arch, {**provenance, "derive": how})
    return arch


def run_provenance(
    study: Study, variant: Mapping[str, Any], space: str, seed: int
) -> dict[str, Any]:
    """Where a derived architecture came from, as ``architecture.json`` records it."""
    return {
        "seed": seed,
        "space": space,
        "variant": dict(variant),
        "study": study.name,
        "study_sha256": study.sha256,
    }


def load_searched(run_dir: Path) -> Supernet:
    """The searched supernet of a run directory (graph + best search checkpoint)."""
    net = Supernet(load_graph(run_dir / "supernet.json"))
    best = run_dir / "checkpoints" / "search_best.pt"
    if best.exists():
        net.load_state_dict(load_checkpoint(best)["model"])
    return net


def searched_weights(run_dir: Path) -> Supernet:
    """The searched supernet a warm-started retraining starts from; a clear error without it."""
    net = load_searched(run_dir)
    if learned_gates(net) and not (run_dir / "checkpoints" / "search_best.pt").exists():
        raise ConfigError(
            f"[retrain] init = 'search' starts from the search's weights, but "
            f"{run_dir / 'checkpoints' / 'search_best.pt'} is missing; run the search again "
            f"(nas-mtl run) or retrain with init = 'scratch'"
        )
    return net


def run_one(
    study: Study,
    variant: Mapping[str, Any],
    space: str,
    seed: int,
    data: MultiTaskData,
    out: Path,
    progress: bool = False,
) -> RunResult:
    """All stages for one space and seed; returns its result (also written to result.json).

    Regression labels are trained in the model's units and reported in the user's
    (``nas_mtl.data.targets``; data loaded by :func:`load_data` already are).
    """
    data = standardize_targets(data)
    start = time.perf_counter()
    rel = run_rel(variant, space, seed)
    run_dir = out / rel
    if (run_dir / RESULT_FILE).exists():  # never redo or overwrite a finished result
        finished = read_result(run_dir)
        if finished.study_sha256 != study.sha256:
            raise ConfigError(
                f"{run_dir} holds a finished result of a different version of the study; "
                f"choose another --out (or move that folder away)"
            )
        log.info("%s: finished earlier, reusing result.json", run_dir)
        return finished
    resume = resumable(out, rel, study.sha256)  # an interrupted run of this study continues
    if not resume:
        replace_run_dir(out, rel)
    open_run_dir(out, variant, space, seed, study.sha256)
    net, search_info = run_search(study, space, data, seed, run_dir, progress, resume)
    derived = run_dir / "architecture.json"
    if resume and derived.exists():
        arch = load_architecture(derived).graph
    else:
        why = run_provenance(study, variant, space, seed)
        arch = run_derive(net, study, data, seed, run_dir, why)
    retrained = retrain(
        arch,
        data,
        study.retrain,
        seed=seed,
        run_dir=run_dir,
        progress=progress,
        resume=resume,
        searched=net,
    )
    write_preprocessing(run_dir, data, study.data)  # what `nas-mtl predict` encodes rows with
    result = run_result(study, data, net, arch, retrained, search_info, variant, space, seed, rel)
    result = replace(result, wall_s=time.perf_counter() - start)
    write_result(out, result)
    return result


def run_result(
    study: Study,
    data: MultiTaskData,
    net: Supernet,
    arch: nx.DiGraph,
    retrained: RetrainResult,
    search_info: Mapping[str, Any],
    variant: Mapping[str, Any],
    space: str,
    seed: int,
    rel: str,
) -> RunResult:
    """The result record of one searched, derived and retrained run (``wall_s`` left 0)."""
    return RunResult(
        space=space,
        seed=seed,
        variant=dict(variant),
        run_dir=rel,
        **result_summary(study, data, arch, retrained),
        supernet={**graph_costs(net.graph), **graph_shape(net.graph)},
        study_sha256=study.sha256,
        search=dict(search_info),
        wall_s=0.0,
    )


def run_space(
    study: Study,
    variant: Mapping[str, Any],
    seed: int,
    space: str,
    out: Path,
    data_dir: str | Path | None,
    progress: bool = False,
    data: MultiTaskData | None = None,
) -> list[RunResult]:
    """One space at one seed of one variant, and its random control where the study asks."""
    vstudy = study.for_variant(variant)
    data = data if data is not None else load_data(study, variant, seed, data_dir)
    result = run_one(vstudy, variant, space, seed, data, out, progress)
    runs = [result]
    if vstudy.controls.random and result.searched:
        runs.append(run_random_control(vstudy, variant, result, data, out, progress))
    return runs


def _run_all(
    study: Study,
    seeds: list[int],
    out: Path,
    data_dir: str | Path | None,
    progress: bool,
    on_result: Callable[[RunResult], None] | None,
    workers: int,
) -> tuple[list[RunResult], dict[str, Any]]:
    """Every variant × seed × space (and its random controls), in order.

    With ``workers`` > 1 the spaces × seeds run in that many processes
    (:mod:`nas_mtl.parallel_runs`); the results keep the serial order.
    """
    reference: dict[str, Any] = {}
    jobs = [(v, seed, space) for v in study.variants() for seed in seeds for space in study.spaces]

    def report(runs: list[RunResult]) -> None:
        for r in runs:
            if on_result is not None:
                on_result(r)

    if workers > 1 and len(jobs) > 1:
        for variant in study.variants():
            data = load_data(study, variant, seeds[0], data_dir)
            reference[variant_label(variant)] = reference_cost(study, data)
        arguments = [(study, v, seed, space, out, data_dir) for v, seed, space in jobs]
        done = run_in_processes(run_space, arguments, workers, report)
        return [r for runs in done for r in runs], reference
    results: list[RunResult] = []
    for variant in study.variants():
        for seed in seeds:
            data = load_data(study, variant, seed, data_dir)
            reference.setdefault(variant_label(variant), reference_cost(study, data))
            for space in study.spaces:
                runs = run_space(study, variant, seed, space, out, data_dir, progress, data)
                report(runs)
                results.extend(runs)
    return results, reference


def run_study(
    study: Study | str | Path,
    out: str | Path,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool = False,
    on_result: Callable[[RunResult], None] | None = None,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Run every variant × seed × space of a study; write report.json and report.md.

    ``workers`` > 1 runs the spaces × seeds in that many local processes (no progress bars).

    ``out`` must be new, empty or a nas-mtl output folder of the same study (then finished
    runs are reused); ``overwrite`` replaces what nas-mtl wrote in a nas-mtl output folder.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
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
    check_run_names(study)
    check_out(out)  # before the lock file: an unrelated folder gets nothing written into it
    with out_lock(out):
        prepare_out(study, out, overwrite)
        start = time.perf_counter()
        results, reference = _run_all(
            study, seeds, out, data_dir, progress and workers == 1, on_result, workers
        )
        add_delta_m(results)
        for r in results:  # result.json and report.json carry the same Δm
            write_result(out, r)
        report = {
            "study": study.name,
            "study_sha256": study.sha256,
            "package_version": nas_mtl.__version__,
            "seeds": seeds,
            "spaces": list(study.spaces),
            "settings": {"search": asdict(study.search), "retrain": asdict(study.retrain)},
            "results": [r.to_json() for r in results],
            "shared_bottom_cost": reference,  # per data variant: params and MACs, for scale
            "failed": [f"{r.run_dir}: {r.failure}" for r in results if r.status == "failed"],
            "wall_s": time.perf_counter() - start,
        }
        write_report(out, report)  # the results first: pictures may fail, results may not
        figures = report_figures(study, out, results)
        if figures:
            write_report(out, report, figures)
        return report


def retrain_run(
    run_dir: Path,
    *,
    device: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """CLI ``retrain``: retrain a run directory's architecture.json (``[retrain] init``).

    Started by torchrun, every rank calls this and they train data parallel; rank 0 writes
    the log and checkpoints (:mod:`nas_mtl.stages.distributed`, ``docs/distributed.md``).
    """
    study, ctx = study_of_run(run_dir)
    if device is not None:
        study = replace(study, retrain=replace(study.retrain, device=device))
    data = load_data(study, ctx["variant"], ctx["seed"], data_dir)
    arch = load_architecture(run_dir / "architecture.json").graph
    searched = searched_weights(run_dir) if study.retrain.init == "search" else None
    with process_group(study.retrain.device) as rank_device:
        result = retrain(
            arch,
            data,
            replace(study.retrain, device=rank_device),
            seed=ctx["seed"],
            run_dir=run_dir,
            progress=progress,
            searched=searched,
        )
    if is_main():
        write_preprocessing(run_dir, data, study.data)
    return {t.name: result.test.metrics[t.name] for t in data.tasks}
