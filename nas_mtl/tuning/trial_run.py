"""One trial's stages, search → derive (→ retrain), into its own run directory.

The same stage functions and files as ``nas-mtl run`` (``nas_mtl.pipeline``), with the
search's ``on_epoch`` hook, through which the pruner sees every epoch and can stop a hopeless
trial mid-search. A trial directory is a run
directory (``context.json`` names the study and the trial's values as its variant), so
``nas-mtl retrain``, ``derive`` and ``plot`` work on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nas_mtl.data import MultiTaskData
from nas_mtl.errors import ConfigError
from nas_mtl.model.cost import graph_costs
from nas_mtl.pipeline import run_derive, run_provenance, run_result, run_search
from nas_mtl.results import RunResult, architecture_summary
from nas_mtl.results import write_result as write_run_result
from nas_mtl.rundir import write_run_context
from nas_mtl.stages.retrain import retrain
from nas_mtl.study import Study

TRIALS = "trials"  # OUT/trials/<trial number>/


@dataclass
class TrialRun:
    """What a finished trial measured: the objective's inputs and the derived model's cost."""

    search_loss: float | None  # the selected derived architecture's validation loss
    result: RunResult | None  # the retrained model (objective "retrain" only)
    costs: dict[str, float]  # "macs", "params": the derived model, each part counted once
    architecture: dict[str, Any]
    search: dict[str, Any]
    wall_s: float


def run_trial(
    study: Study,
    variant: Mapping[str, Any],
    space: str,
    seed: int,
    data: MultiTaskData,
    out: Path,
    rel: str,
    *,
    retrain_model: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> TrialRun:
    """Search ``space`` with ``study``'s settings, derive, and retrain when asked.

    ``study`` already holds the trial's values; ``variant`` is what context.json records.
    """
    start = time.perf_counter()
    run_dir = out / rel
    write_run_context(out, rel, variant, space, seed, study.sha256)
    net, info = run_search(study, space, data, seed, run_dir, progress, on_epoch=on_epoch)
    if not info["searched"] and not retrain_model:
        raise ConfigError(
            f"[tune] objective = 'search' needs a searched space; '{space}' has no learned "
            f"gates: use objective = 'retrain'"
        )
    arch = run_derive(net, study, data, seed, run_dir, run_provenance(study, variant, space, seed))
    total = graph_costs(arch)["total"]
    result = None
    if retrain_model:
        retrained = retrain(
            arch, data, study.retrain, seed=seed, run_dir=run_dir, progress=progress, searched=net
        )
        result = run_result(study, data, net, arch, retrained, info, variant, space, seed, rel)
        result = replace(result, wall_s=time.perf_counter() - start)
        write_run_result(out, result)
    return TrialRun(
        search_loss=info.get("selection_loss"),
        result=result,
        costs={"macs": float(total["macs"]), "params": float(total["params"])},
        architecture=architecture_summary(arch),
        search=info,
        wall_s=time.perf_counter() - start,
    )
