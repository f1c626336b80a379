"""Differentiable architecture search: weights and gate variables trained together.

Objective per step (``docs/search.md``)::

    Σ_t w_t L_t  +  Σ_k λ_k · R_k  +  λ_H · H  (+  μ · max(0, E[MACs] / M − 1))

``R_k`` are the gates' own regularizers (expected L0 of hard-concrete gates, the Gumbel-Matrix
budget), normalized to a fraction by default so one weight means the same on every graph.
``target_open`` is a constraint, not a term: after every gate step the open logits are
shifted by one common amount (a Newton step of the projection) so that E[open fraction] stays
at most a budget that falls from its post-warm-up value to ``target_open`` over annealing; the
loss decides *which* gates stay open, the projection only how many (a search that is sparser
on its own is left alone). A MACs budget keeps a Lagrange multiplier ``μ ≥ 0`` (projected
dual ascent). Weights and gate variables have separate Adam optimizers. Everything the search
adds to the training loop (warm-up, alternation, schedules, penalties, projection, multiplier,
selection) is the :class:`ArchitectureStep`.

Selection: an epoch is judged by the validation loss of its *derived discrete* architecture
(gates forced to what will be retrained), and only epochs whose architecture meets the target
(open fraction ≤ target + ``target_tolerance``) or that come after annealing may be chosen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas_mtl.data import MultiTaskData, PerTaskSplit, SharedSplit, standardize_targets
from nas_mtl.errors import ConfigError
from nas_mtl.model.schedules import SchedulePosition
from nas_mtl.model.supernet import Supernet, hold_gates_open, learned_gates
from nas_mtl.stages.affinity import AffinityProbe, TaskAffinity, write_affinity
from nas_mtl.stages.batches import epochs_for_steps, halves, steps_in_epoch, train_batches
from nas_mtl.stages.budget import MacsModel, expected_excess, expected_open_fraction, expected_usage
from nas_mtl.stages.candidates import score_architecture
from nas_mtl.stages.derive import (
    SHARED,
    Targets,
    capped_decisions,
    derive_edges,
    derived_macs,
    greedy_decisions,
    learned_pairs,
    open_fraction,
)
from nas_mtl.stages.diagnostics import UNDECIDED, between, search_warnings, single_path
from nas_mtl.stages.evaluation import Evaluation
from nas_mtl.stages.training import adam, train, train_config
from nas_mtl.stages.training_hooks import EpochVerdict, TrainingHooks
from nas_mtl.study import SearchConfig

log = logging.getLogger(__name__)

# the projection's finite-difference step in the open logits and its largest shift per step
# (a bound for nearly saturated gates, where the slope is tiny; docs/search.md, "The target")
SLOPE_STEP = 1e-2
MAX_SHIFT = 1.0

SEARCH_LOG = "search_log.jsonl"


@dataclass
class SearchResult:
    """The searched supernet (selected epoch restored), its history and end-of-search warnings."""

    supernet: Supernet
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    affinity: TaskAffinity | None = None  # mean inter-task gradient affinity; None when off
    threads: int = 0  # CPU intra-op threads it ran with (docs/speed.md, "Threads")


def gate_snapshot(net: Supernet) -> list[dict[str, Any]]:
    """Open probabilities of every learned gate: (T or 1, J, C) lists with node names."""
    return [
        {
            "block": i,
            "kind": gate.kind,
            "scope": gate.scope,
            "src": list(blk.src),
            "dst": list(blk.dst),
            "open_probability": gate.open_probability().detach().cpu().tolist(),
            "open": gate.decisions().cpu().tolist(),
        }
        for i, blk, gate in learned_gates(net)
    ]


class ArchitectureStep(TrainingHooks):
    """The search's side of each training step: gate optimizer, penalties, multiplier, schedule.

    Warm-up holds every gate open for the first ``warmup`` fraction of epochs (weights only);
    temperatures anneal over the next ``anneal`` fraction of steps; with ``alternate`` the
    gates step on a disjoint half of the training rows (DARTS-style). Every
    ``affinity_every`` steps its :class:`AffinityProbe` measures the inter-task gradient
    affinity on the step's batch, before the step (``docs/search.md``, "Gradient affinity").
    """

    def __init__(self, net: Supernet, data: MultiTaskData, cfg: SearchConfig) -> None:
        self.net, self.data, self.cfg = net, data, cfg
        self.gates = learned_gates(net)
        weights = {"l0": cfg.l0_weight, "budget": cfg.budget_weight}
        for _, _, gate in self.gates:
            if gate.penalty_name is not None and gate.penalty_name not in weights:
                raise ConfigError(
                    f"gate kind '{gate.kind}' has penalty '{gate.penalty_name}', which no "
                    f"[search] weight sets; known: {', '.join(sorted(weights))}"
                )
        self.penalty_weights = weights
        self.optimizer = adam(net.arch_parameters(), lr=cfg.lr_arch)
        self.pair_weights = self._pair_weights()
        self.total_pairs = float(len(learned_pairs(net)))
        self.targets = targets_of(cfg)
        self.macs_model = MacsModel(net) if cfg.target_macs is not None else None
        # target_macs keeps a Lagrange multiplier (projected dual ascent); target_open is met
        # by projection, from the expected open fraction after warm-up (set on the first step)
        self.multipliers = {"macs": torch.zeros(())} if cfg.target_macs is not None else {}
        self.budget_start: Tensor | None = None
        self.price = torch.zeros(())  # μ_open: the price of E[open fraction] in the objective
        self._excess: dict[str, Tensor] = {}
        self.warm = False
        self.position = SchedulePosition(kind=cfg.schedule)
        self.arch_split: SharedSplit | PerTaskSplit | None = None
        self._arch_batches: Any = None
        self._gen = torch.Generator()
        # the lookahead is an SGD step of the weights' learning rate, as in TAG
        self.affinity = (
            AffinityProbe(net, data.task_names, cfg.affinity_every, cfg.lr_weights)
            if cfg.affinity_every
            else None
        )

    # ------------------------------------------------------------ training-loop hooks
    def parameters_excluded(self) -> list[nn.Parameter]:
        return self.net.arch_parameters()

    def training_split(
        self, split: SharedSplit | PerTaskSplit, gen: torch.Generator
    ) -> SharedSplit | PerTaskSplit:
        if not self.cfg.alternate:
            return split
        weight_half, self.arch_split = halves(split, gen)
        self._gen = gen
        return weight_half

    def start_epoch(self, net: nn.Module, epoch: int, steps_per_epoch: int) -> None:
        cfg = self.cfg
        warm_epochs = math.floor(cfg.warmup * cfg.epochs)
        total = cfg.epochs * steps_per_epoch
        warm_steps = warm_epochs * steps_per_epoch
        self.position = SchedulePosition(
            step=epoch * steps_per_epoch,
            warmup_steps=warm_steps,
            anneal_steps=max(1, round(cfg.anneal * (total - warm_steps))),
            kind=cfg.schedule,
        )
        # dual_lr is the multiplier's growth over the whole gate phase per unit of excess, so
        # one value means the same for a 400-step and a 4000-step search (docs/search.md)
        self._dual_step = cfg.dual_lr / max(1, total - warm_steps)
        self.warm = epoch < warm_epochs
        hold_gates_open(self.net, self.warm)
        device = next(net.parameters()).device
        self.multipliers = {k: m.to(device) for k, m in self.multipliers.items()}
        if self.arch_split is not None and not self.warm:
            self._arch_batches = train_batches(
                self.data, self.arch_split, cfg.batch_size, cfg.steps_per_epoch, self._gen
            )

    def before_step(self, net: nn.Module, step: int) -> None:
        self.position = replace(self.position, step=step)
        self.net.set_position(self.position)

    def inspect_batch(
        self, net: nn.Module, step: int, task_losses: Callable[[], dict[str, Tensor]]
    ) -> None:
        if self.affinity is not None and self.affinity.due(step):
            self.affinity.measure(task_losses)

    def extra_loss(self, net: nn.Module) -> Tensor | None:
        if self.warm or self.cfg.alternate:
            return None
        return self.objective_terms()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def after_step(self, net: nn.Module, batch_loss: Callable[[Any], Tensor]) -> None:
        if self.warm:
            return
        if self.cfg.alternate:
            batch = next(self._arch_batches, None)
            if batch is None:
                return
            self.optimizer.zero_grad(set_to_none=True)
            (batch_loss(batch) + self.objective_terms()).backward()
        self.optimizer.step()
        with torch.no_grad():  # projected dual ascent on each μ ≥ 0; no host sync
            for k, excess in self._excess.items():
                self.multipliers[k].add_(self._dual_step * excess).clamp_(min=0.0)
        if self.targets.open is not None:
            self.project_open()

    @torch.no_grad()
    def open_budget(self) -> Tensor:
        """The open fraction allowed now: from the post-warm-up E[open] down to target_open.

        It falls linearly with the temperatures' progress, so the gates close as they decide
        (a sudden cut at the first gate step would close them before the loss could rank them).
        """
        f = self.targets.open
        assert f is not None and self.budget_start is not None
        return f + (self.budget_start - f).clamp(min=0.0) * (1.0 - self.position.progress)

    @torch.no_grad()
    def project_open(self) -> None:
        """One Newton step of the projection onto E[open fraction] ≤ budget (no host sync).

        Every learned gate's open logits are lowered by one common c (c ≥ 0 unless the price
        is positive, see below); the slope dE/dc is a finite difference. E is decreasing in c,
        so c = (E − b) / slope meets the budget to first order each step; the next step
        corrects the rest (docs/search.md, "The target").
        """
        expected = self._expected_open()
        if self.budget_start is None:
            self.budget_start = expected.clone()
        budget = self.open_budget()
        saved = [p.clone() for p in self.net.arch_parameters()]
        self._shift_open(SLOPE_STEP)
        slope = (expected - self._expected_open()) / SLOPE_STEP
        for p, old in zip(self.net.arch_parameters(), saved, strict=True):
            p.copy_(old)  # exactly back: a shift down and up again is not, in float32
        # complementary slackness: while the price is positive the constraint is active
        # (E = budget, gates the price over-closed reopen); at price 0 it is only a cap
        price = self.price.to(expected.device)
        lowest = torch.where(price > 0, -MAX_SHIFT, 0.0)
        shift = torch.minimum(
            torch.maximum((expected - budget) / slope.clamp(min=1e-6), lowest),
            torch.full_like(lowest, MAX_SHIFT),
        )
        self._shift_open(shift)
        # the price rises while the gate step itself leaves more open than the budget allows
        self.price = (price + self.cfg.price_lr * (expected - budget)).clamp(min=0.0)

    def _expected_open(self) -> Tensor:
        return expected_open_fraction(self.net, expected_usage(self.net))

    def _shift_open(self, c: Tensor | float) -> None:
        for _, _, gate in self.gates:
            gate.shift_open_(c)

    def end_epoch(self, net: nn.Module, ev: Evaluation, device: torch.device) -> EpochVerdict:
        hold_gates_open(self.net, False)
        greedy_edges = derive_edges(self.net, greedy_decisions(self.net))
        greedy = open_fraction(self.net, greedy_edges)
        decisions = capped_decisions(self.net, self.targets.within(self.net))
        chosen = score_architecture(self.net, self.data, decisions, device)
        annealed = self.position.progress >= 1.0
        # the search itself must have closed the gates: an epoch whose architecture meets the
        # targets only by derive's pruning (more than `tolerance` of the pairs closed by the
        # cap) is not selectable, annealed or not (without targets: once annealed);
        # docs/search.md, "Selection"
        near = self.targets.near(self.net)
        cap_closed = max(0.0, greedy - chosen.open_fraction)
        selectable = (
            annealed
            if near is None
            else near(greedy_edges) and cap_closed <= self.targets.tolerance
        )
        record = {
            "warmup": self.warm,
            "open_fraction": chosen.open_fraction,
            "greedy_open_fraction": greedy,
            # what derive's cap had to close beyond the gates' own decisions (docs/search.md)
            "cap_closed": cap_closed,
            "macs": derived_macs(self.net, chosen.derived),
            "greedy_macs": derived_macs(self.net, greedy_edges),
            "derived_val_objective": chosen.val_objective,
            "dead_paths": len(chosen.derived.dead),
            "single_path": all(single_path(e) for e in chosen.derived.per_task.values()),
            "annealed": annealed,
            **self.diagnostics(),
            "gates": gate_snapshot(self.net),
        }
        # early stopping waits for the end of annealing: a plateau of the relaxed supernet
        # says nothing about allocations that are still moving (docs/search.md, "Selection")
        return EpochVerdict(
            chosen.val_objective, not self.warm and selectable, record, may_stop=annealed
        )

    def state(self) -> dict[str, Any]:
        return {
            "a_opt": self.optimizer.state_dict(),
            "multipliers": {k: m.detach().cpu() for k, m in self.multipliers.items()},
            "budget_start": None if self.budget_start is None else self.budget_start.cpu(),
            "price": self.price.detach().cpu(),
            **({"affinity": self.affinity.state()} if self.affinity is not None else {}),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["a_opt"])
        self.multipliers = {
            k: m.clone() for k, m in state["multipliers"].items() if k in self.multipliers
        }
        start = state.get("budget_start")
        device = next(self.net.parameters()).device
        self.budget_start = None if start is None else start.to(device)
        self.price = state.get("price", torch.zeros(())).to(device)
        if self.affinity is not None and "affinity" in state:
            self.affinity.load_state(state["affinity"])

    # ------------------------------------------------------------ the objective
    def penalties(self) -> dict[str, Tensor]:
        """Each named regularizer, normalized (Σ sums / Σ counts) or summed (the papers')."""
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for _, _, gate in self.gates:
            if gate.penalty_name is None:
                continue
            value, count = gate.penalty_terms()
            sums[gate.penalty_name] = sums.get(gate.penalty_name, 0.0) + value
            counts[gate.penalty_name] = counts.get(gate.penalty_name, 0) + count
        if self.cfg.penalty_form == "sum":
            return sums
        return {k: v / max(counts[k], 1) for k, v in sums.items()}

    def objective_terms(self) -> Tensor:
        terms = self.penalties()
        total = sum(
            (self.penalty_weights[k] * v for k, v in terms.items() if self.penalty_weights[k]),
            next(self.net.parameters()).new_zeros(()),
        )
        if self.cfg.entropy_weight:
            entropy = sum(g.entropy() for _, _, g in self.gates) / max(len(self.gates), 1)
            total = total + self.cfg.entropy_weight * entropy
        if self.targets.active:
            usage = expected_usage(self.net)
        if self.targets.open is not None and self.cfg.price_lr:
            # a price on open pairs ranks the gates: those whose loss gradient cannot pay it
            # close first, so the projection does not have to cut equally ranked gates
            total = total + self.price * expected_open_fraction(self.net, usage)
        if self.targets.macs is not None:
            excess = expected_excess(self.targets, self.net, usage, self.macs_model)
            excess.pop("open", None)  # met by projection after the step (project_open)
            self._excess = {k: v.detach() for k, v in excess.items()}
            for k, v in excess.items():
                # a hinge: below a target its lagging multiplier must not keep closing gates
                total = total + self.multipliers[k] * v.clamp(min=0.0)
        return total

    @torch.no_grad()
    def diagnostics(self) -> dict[str, Any]:
        """Per-epoch gate figures for the log and the progress line."""
        undecided = sum(
            (
                (w.to(g.mask.device) * between(g.open_probability(), *UNDECIDED)).sum()
                for (_, _, g), w in zip(self.gates, self.pair_weights, strict=True)
            ),
            torch.zeros(()),
        )
        temps = [g.temperature for _, _, g in self.gates if g.temperature is not None]
        usage = expected_usage(self.net)
        mu = {k: float(m) for k, m in self.multipliers.items()}
        return {
            "expected_open": float(expected_open_fraction(self.net, usage)),
            "expected_macs": float(self.macs_model.expected(usage)) if self.macs_model else None,
            "undecided": float(undecided) / max(self.total_pairs, 1.0),
            "temperature": temps[0] if temps else None,
            "price": float(self.price) if self.targets.open is not None else None,
            "budget": (float(self.open_budget()) if self.budget_start is not None else None),
            "macs_multiplier": mu.get("macs"),
            "penalties": {k: float(v) for k, v in self.penalties().items()},
            "gate_entropy": float(
                sum(g.entropy() for _, _, g in self.gates) / max(len(self.gates), 1)
            ),
        }

    def _pair_weights(self) -> list[Tensor]:
        """Per gate, 1 where a variable row decides a learned (task, edge) pair."""
        pairs = learned_pairs(self.net)
        out = []
        for _, blk, gate in self.gates:
            tasks = self.net.tasks if gate.scope == "task" else (SHARED,)
            w = torch.zeros(len(tasks), len(blk.src), len(blk.dst))
            for j, u in enumerate(blk.src):
                for c, v in enumerate(blk.dst):
                    for row, task in enumerate(tasks):
                        w[row, j, c] = float((task, (u, v)) in pairs)
            out.append(w)
        return out


def targets_of(cfg: SearchConfig) -> Targets:
    """The constraints a search config states (``target_open``, ``target_macs``)."""
    return Targets(open=cfg.target_open, macs=cfg.target_macs, tolerance=cfg.target_tolerance)


def with_min_steps(cfg: SearchConfig, data: MultiTaskData) -> SearchConfig:
    """``cfg`` with enough epochs for ``min_steps`` training steps (docs/search.md, "Length").

    Gate variables decide by steps, not epochs: 10 epochs of 1,000 rows at batch 256 are 40
    steps, in which no gate leaves the middle; the schedules (warm-up, annealing, the open
    budget) stretch with the epochs, so a longer search is the same search, resolved.
    """
    split = data.train
    if cfg.alternate:  # the weights train on one half of the rows
        split = halves(split, torch.Generator().manual_seed(0))[0]
    per_epoch = steps_in_epoch(data, split, cfg.batch_size, cfg.steps_per_epoch)
    epochs = epochs_for_steps(cfg.epochs, cfg.min_steps, per_epoch)
    if epochs == cfg.epochs:
        return cfg
    log.info(
        "search: %d epochs of %d steps are fewer than min_steps = %d; running %d epochs",
        cfg.epochs,
        per_epoch,
        cfg.min_steps,
        epochs,
    )
    return replace(cfg, epochs=epochs)


def search(
    supernet: Supernet,
    data: MultiTaskData,
    cfg: SearchConfig,
    *,
    seed: int = 0,
    run_dir: str | Path | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> SearchResult:
    """Search the gate variables of ``supernet`` on ``data``; returns the selected epoch's net.

    ``on_epoch`` receives each epoch's log record (an Optuna pruner hooks in here); ``resume``
    continues from the last per-epoch checkpoint in ``run_dir``. With ``affinity_every`` the
    mean gradient affinity is returned and written to ``run_dir/affinity.json``.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    data = standardize_targets(data)  # a no-op for data the pipeline loaded
    cfg = with_min_steps(cfg, data)
    step = ArchitectureStep(supernet, data, cfg)
    fit = train(
        supernet,
        data,
        train_config(cfg, lr=cfg.lr_weights, amp=cfg.amp, keep_checkpoints=cfg.keep_checkpoints),
        hooks=step,
        seed=seed,
        checkpoint_dir=run_dir / "checkpoints" if run_dir else None,
        stem="search",
        progress=progress,
        log_path=run_dir / SEARCH_LOG if run_dir else None,
        on_epoch=on_epoch,
        resume=resume,
    )
    chosen = fit.history[fit.best_epoch] if fit.history else {}
    warnings = search_warnings(chosen, targets_of(cfg))
    for w in warnings:
        log.warning("%s", w)
    affinity = step.affinity.result(fit.wall_s) if step.affinity is not None else None
    if affinity is not None and run_dir is not None:
        write_affinity(run_dir, affinity)
    return SearchResult(
        supernet=fit.model,
        best_epoch=fit.best_epoch,
        best_val_loss=fit.best_val_loss,
        history=fit.history,
        wall_s=fit.wall_s,
        warnings=warnings,
        affinity=affinity,
        threads=fit.threads,
    )
