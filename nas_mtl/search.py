"""Differentiable architecture search: weights and gate variables trained together.

Objective per step (SPEC §1–2): Σ_t w_t L_t + λ_L0 · E[L0] + λ_b · budget + λ_H · entropy,
with separate Adam optimizers for weights and gate variables. Options: warm-up epochs with
gates held open, DARTS-style alternation (weights on one half of the training data, gates on
the other), early stopping on validation loss, a checkpoint and a log line per epoch.

The per-epoch log (``search_log.jsonl``) keeps every learned gate's open probabilities, so
later tools (drawings, task clustering, tuning) read the search's trajectory from the run
directory without re-running it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_mtl.data import MultiTaskData
from nas_mtl.study import SearchConfig
from nas_mtl.supernet import Supernet, learned_gates
from nas_mtl.training import train

log = logging.getLogger(__name__)

SEARCH_LOG = "search_log.jsonl"


@dataclass
class SearchResult:
    """The searched supernet (best validation epoch restored) and its history."""

    supernet: Supernet
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


def gate_snapshot(net: Supernet) -> list[dict[str, Any]]:
    """Open probabilities of every learned gate: (T or 1, J, C) lists with node names."""
    snap = []
    for i, blk, gate in learned_gates(net):
        snap.append(
            {
                "block": i,
                "kind": gate.kind,
                "scope": gate.scope,
                "src": list(blk.src),
                "dst": list(blk.dst),
                "open_probability": gate.open_probability().detach().cpu().tolist(),
                "open": gate.decisions().cpu().tolist(),
            }
        )
    return snap


def gate_summary(net: Supernet) -> dict[str, float]:
    """Fraction of learned-gate edges open (per task where per-task) and mean gate entropy."""
    opened, total, entropy, n = 0.0, 0.0, 0.0, 0
    for _, _, gate in learned_gates(net):
        dec = gate.decisions().float() * gate.mask
        opened += float(dec.sum())
        total += float(gate.mask.sum()) * dec.shape[0]
        entropy += float(gate.entropy().detach())
        n += 1
    return {
        "frac_open": opened / total if total else 1.0,
        "gate_entropy": entropy / n if n else 0.0,
    }


def search(
    supernet: Supernet,
    data: MultiTaskData,
    cfg: SearchConfig,
    *,
    seed: int = 0,
    run_dir: str | Path | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Search the gate variables of ``supernet`` on ``data``; returns the best epoch's net.

    ``on_epoch`` receives each epoch's log record (an Optuna pruner hooks in here).
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    fit = train(
        supernet,
        data,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        steps_per_epoch=cfg.steps_per_epoch,
        lr_weights=cfg.lr_weights,
        lr_arch=cfg.lr_arch,
        weight_decay=cfg.weight_decay,
        penalty_weights={"l0": cfg.l0_weight, "budget": cfg.budget_weight},
        entropy_weight=cfg.entropy_weight,
        warmup_epochs=cfg.warmup_epochs,
        alternate=cfg.alternate,
        patience=cfg.patience,
        device=cfg.device,
        amp=False,
        seed=seed,
        checkpoint_dir=run_dir / "checkpoints" if run_dir else None,
        stem="search",
        keep_checkpoints=cfg.keep_checkpoints,
        progress=progress,
        log_path=run_dir / SEARCH_LOG if run_dir else None,
        extra_record=lambda net: {
            **gate_summary(net),
            "temperature": _temperature(net),
            "penalties": {k: float(v.detach()) for k, v in net.penalties().items()},
            "gates": gate_snapshot(net),
        },
        on_epoch=on_epoch,
    )
    return SearchResult(
        supernet=fit.model,
        best_epoch=fit.best_epoch,
        best_val_loss=fit.best_val_loss,
        history=fit.history,
        wall_s=fit.wall_s,
    )


def _temperature(net: Supernet) -> float | None:
    temps = [g.temperature for _, _, g in learned_gates(net) if hasattr(g, "temperature")]
    return temps[0] if temps else None
