"""Candidate architectures: drawn from the gates, drawn at random at a given size, ranked.

Search selection, ``derive --samples K`` and the random-architecture control all produce
gate decisions; this module draws them and ranks them on the one objective that matters, the
validation loss of the supernet forced to the derived architecture (docs/search.md,
"Selection", "Controls").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nas_mtl.data import MultiTaskData
from nas_mtl.model.graph import INPUT, head_id
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.stages.derive import (
    Decisions,
    DerivedEdges,
    Within,
    capped_decisions,
    derive_edges,
    forced_decisions,
    open_fraction,
    sampled_decisions,
)
from nas_mtl.stages.evaluation import evaluate


def random_architecture(
    net: Supernet,
    target_open: float,
    generator: torch.Generator,
    tolerance: float = 0.02,
    attempts: int = 200,
) -> Decisions:
    """A uniformly random architecture of the supernet at a given open fraction.

    The random-architecture control of NAS (docs/search.md, "Controls"): every learned gate
    variable is on with one rate, and a task left without a path gets one random path
    (a walk from its head to the input, uniform over predecessors). The rate is recalibrated
    after each draw because reachability pruning closes part of what was drawn open; the
    first draw within ``tolerance`` of ``target_open`` is returned, else the closest one.
    """
    rate = target_open
    best: tuple[float, Decisions] | None = None
    for _ in range(attempts):
        decisions = sampled_decisions(net, generator, rate)
        _open_random_paths(net, decisions, derive_edges(net, decisions).dead, generator)
        fraction = open_fraction(net, derive_edges(net, decisions))
        gap = abs(fraction - target_open)
        if best is None or gap < best[0]:
            best = (gap, decisions)
        if gap <= tolerance:
            break
        rate = min(1.0, max(1e-3, rate * (target_open / max(fraction, 1e-3)) ** 0.5))
    assert best is not None
    return best[1]


def _open_random_paths(
    net: Supernet, decisions: Decisions, tasks: tuple[str, ...], generator: torch.Generator
) -> None:
    """Turn on, for each of ``tasks``, the edges of one random input → head path."""
    where = {
        (u, v): (i, j, c)
        for i, blk in enumerate(net.blocks)
        for j, u in enumerate(blk.src)
        for c, v in enumerate(blk.dst)
    }
    for task in tasks:
        node = head_id(task)
        while node != INPUT:
            preds = list(net.graph.predecessors(node))
            u = preds[int(torch.randint(len(preds), (1,), generator=generator))]
            i, j, c = where[(u, node)]
            dec = decisions[i]
            dec[net.tasks.index(task) if dec.shape[0] > 1 else 0, j, c] = True
            node = u


@dataclass(frozen=True)
class Candidate:
    """A discrete architecture scored as it will be retrained."""

    decisions: Decisions
    derived: DerivedEdges
    open_fraction: float
    val_objective: float  # weighted validation loss with the gates forced to this architecture


@torch.no_grad()
def score_architecture(
    net: Supernet, data: MultiTaskData, decisions: Decisions, device: torch.device
) -> Candidate:
    """Validation loss of the supernet with its gates forced to the derived architecture.

    Search selection, early stopping and ``derive --samples`` all rank on this one number, so
    the chosen epoch or sample is judged by the architecture that will be retrained.
    """
    derived = derive_edges(net, decisions)
    forced = forced_decisions(net, derived)
    for i, blk in enumerate(net.blocks):
        blk.gate.forced = forced[i].to(device)
    try:
        loss = evaluate(net, data, data.val, device).loss(data.tasks)
    finally:
        for blk in net.blocks:
            blk.gate.forced = None
    return Candidate(decisions, derived, open_fraction(net, derived), loss)


def choose_architecture(
    net: Supernet,
    data: MultiTaskData,
    samples: int,
    seed: int,
    device: torch.device,
    cap: Within | None = None,
    eligible: Within | None = None,
) -> tuple[Decisions, dict[str, Any]]:
    """Capped greedy decisions, or the best of those + ``samples`` draws on the derived objective.

    Samples that are not ``eligible`` (outside the targets' tolerance) cannot be chosen (the
    capped greedy architecture always can), so a denser draw cannot win by default.
    """
    greedy = capped_decisions(net, cap)
    if samples <= 0 or not learned_gates(net):
        return greedy, {"method": "greedy"}
    gen = torch.Generator().manual_seed(seed)
    decisions = [greedy] + [sampled_decisions(net, gen) for _ in range(samples)]
    scored = [score_architecture(net, data, d, device) for d in decisions]
    allowed = [i for i, c in enumerate(scored) if i == 0 or eligible is None or eligible(c.derived)]
    best = min(allowed, key=lambda i: scored[i].val_objective)
    return decisions[best], {
        "method": "sampled",
        "samples": samples,
        "chosen": best,
        "val_objective": [c.val_objective for c in scored],
        "open_fraction": [c.open_fraction for c in scored],
        "eligible": allowed,
    }
