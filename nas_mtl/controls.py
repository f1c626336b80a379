"""Controls that isolate the search: random architectures at the searched one's cost.

A search that does not beat architectures drawn uniformly at the same open fraction, trained
the same way, has found a size, not a structure (docs/search.md, "Controls").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas_mtl.data import MultiTaskData
from nas_mtl.model.graph_files import save_architecture
from nas_mtl.model.supernet import Supernet
from nas_mtl.results import (
    RESULT_FILE,
    RunResult,
    mean_of_samples,
    read_result,
    result_summary,
    write_result,
)
from nas_mtl.rundir import open_run_dir, replace_run_dir, run_rel
from nas_mtl.stages.candidates import random_architecture
from nas_mtl.stages.derive import derive
from nas_mtl.stages.retrain import retrain
from nas_mtl.study import Study
from nas_mtl.study_data import space_graph

RANDOM_SUFFIX = "-random"


def run_random_control(
    study: Study,
    variant: Mapping[str, Any],
    searched: RunResult,
    data: MultiTaskData,
    out: Path,
    progress: bool = False,
) -> RunResult:
    """K random architectures of a searched space at its open fraction, retrained the same way.

    The result's metrics are the means over the K samples (one row of the report, named
    ``<space>-random``); each sample keeps its own architecture.json and retrain log in
    ``sample_<k>/``.
    """
    start = time.perf_counter()
    space, seed = searched.space, searched.seed
    name = space + RANDOM_SUFFIX
    rel = run_rel(variant, name, seed)
    run_dir = out / rel
    if (run_dir / RESULT_FILE).exists():
        return read_result(run_dir)
    replace_run_dir(out, rel)
    open_run_dir(out, variant, name, seed)
    weights = None  # a warm start starts the samples from the same searched weights
    if study.retrain.init == "search":
        from nas_mtl.pipeline import searched_weights  # the pipeline imports this module

        weights = searched_weights(out / searched.run_dir)
    torch.manual_seed(seed)
    net = Supernet(space_graph(study, space, data))
    target = searched.architecture["open_fraction"]
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for k in range(study.controls.random):
        arch = derive(net, random_architecture(net, target, generator))
        sample_dir = run_dir / f"sample_{k}"
        sample_dir.mkdir()
        save_architecture(
            sample_dir / "architecture.json",
            arch,
            {"seed": seed, "space": name, "variant": dict(variant), "sample": k},
        )
        result = retrain(
            arch,
            data,
            study.retrain,
            seed=seed,
            run_dir=sample_dir,
            progress=progress,
            searched=weights,
        )
        samples.append(result_summary(study, data, arch, result))
    result = RunResult(
        space=name,
        seed=seed,
        variant=dict(variant),
        run_dir=rel,
        **mean_of_samples(samples),
        control={"of": space, "samples": len(samples), "target_open": target},
        study_sha256=study.sha256,
        search={"searched": False},
        wall_s=time.perf_counter() - start,
    )
    write_result(out, result)
    return result
