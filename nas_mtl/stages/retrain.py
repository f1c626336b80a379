"""Retrain a derived architecture as a pruned standalone model.

The derived graph compiles with the same :class:`Supernet` machinery, but holds only live
components and fixed gates, so it computes only what some task uses; a component shared by
several tasks runs once per batch when inputs are shared. Fresh initialization (seeded), or
with ``[retrain] init = "search"`` the searched supernet's weights
(:mod:`nas_mtl.stages.warm_start`); early stopping on validation, test metrics; CUDA when
available and bf16 autocast there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import networkx as nx
import torch

from nas_mtl.data import MultiTaskData, standardize_targets
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.stages.batches import epochs_for_steps, steps_in_epoch
from nas_mtl.stages.evaluation import Evaluation, evaluate, resolve_device
from nas_mtl.stages.heads import start_at_constant
from nas_mtl.stages.training import FitResult, train, train_config
from nas_mtl.stages.warm_start import warm_start
from nas_mtl.study import RetrainConfig

RETRAIN_LOG = "retrain_log.jsonl"

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    fit: FitResult
    val: Evaluation
    test: Evaluation


def build_model(graph: nx.DiGraph, seed: int = 0, input_regime: str = "shared") -> Supernet:
    """A freshly initialized model of the architecture (same seed, same weights).

    With per-task inputs (``input_regime = "per_task"``) a pruned model computes each
    component only on the streams of the tasks that use it.
    """
    torch.manual_seed(seed)
    return Supernet(graph, input_regime)


def with_min_steps(cfg: RetrainConfig, data: MultiTaskData) -> RetrainConfig:
    """``cfg`` with enough epochs for ``min_steps`` steps, and its patience stretched alike.

    20 epochs of 1,000 rows at batch 256 are 80 steps: every model stops far from converged,
    and a comparison of architectures then measures which one learns fastest, not which one
    is better (wider models win; measured in benchmarks/README.md, "The zoo"). The patience
    grows by the same factor, so that a stretched retrain stops on the same share of its run
    without improvement, not on a few noisy steps (docs/search.md, "Length").
    """
    per_epoch = steps_in_epoch(data, data.train, cfg.batch_size, cfg.steps_per_epoch)
    epochs = epochs_for_steps(cfg.epochs, cfg.min_steps, per_epoch)
    if epochs == cfg.epochs:
        return cfg
    patience = math.ceil(cfg.patience * epochs / cfg.epochs)
    log.info(
        "retrain: %d epochs of %d steps are fewer than min_steps = %d; up to %d epochs, "
        "patience %d",
        cfg.epochs,
        per_epoch,
        cfg.min_steps,
        epochs,
        patience,
    )
    return replace(cfg, epochs=epochs, patience=patience)


def retrain(
    graph: nx.DiGraph,
    data: MultiTaskData,
    cfg: RetrainConfig,
    *,
    seed: int = 0,
    run_dir: str | Path | None = None,
    progress: bool = False,
    resume: bool = False,
    searched: Supernet | None = None,
) -> RetrainResult:
    """Train the architecture; ``resume`` continues from ``run_dir``'s checkpoints.

    With ``cfg.init == "search"``, the model starts from ``searched``, the supernet whose
    search derived ``graph``, when that supernet had gates to search.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    data = standardize_targets(data)  # a no-op for data the pipeline loaded
    cfg = with_min_steps(cfg, data)
    model = build_model(graph, seed, data.regime)
    if cfg.init == "search" and searched is not None and learned_gates(searched):
        warm_start(model, searched)
    else:
        start_at_constant(model, data)  # the first prediction: the constant (stages/heads.py)
    fit = train(
        model,
        data,
        train_config(cfg, lr=cfg.lr, amp=cfg.amp, keep_checkpoints=1),
        seed=seed,
        stem="retrain",
        checkpoint_dir=run_dir / "checkpoints" if run_dir else None,
        progress=progress,
        log_path=run_dir / RETRAIN_LOG if run_dir else None,
        resume=resume,
    )
    device = resolve_device(cfg.device)
    return RetrainResult(
        fit=fit,
        val=evaluate(fit.model, data, data.val, device, cfg.amp),
        test=evaluate(fit.model, data, data.test, device, cfg.amp),
    )
