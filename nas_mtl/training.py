"""What search and retraining share: devices, batches for both data regimes, losses, evaluation.

Kept in one place so the search loop and the retrain loop cannot drift apart in how they feed
data or score a model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nas_mtl.checkpoint import prune_epoch_checkpoints, save_atomic
from nas_mtl.data import MultiTaskData, PerTaskSplit, SharedSplit, per_task_batches, shared_batches
from nas_mtl.errors import ConfigError, TrainingError
from nas_mtl.supernet import Supernet, hold_gates_open, learned_gates
from nas_mtl.tasks import TaskSpec

log = logging.getLogger(__name__)

EVAL_BATCH = 2048


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else must exist here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was asked for but CUDA is not available here; "
            f"use --device auto or cpu"
        )
    return dev


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def steps_per_epoch(data: MultiTaskData, batch_size: int, configured: int | None) -> int:
    """Per-task data: one pass over the largest task unless configured."""
    if configured is not None:
        return configured
    split = data.train
    n = max(split.sizes()) if isinstance(split, PerTaskSplit) else len(split)
    return max(1, math.ceil(n / batch_size))


def train_batches(
    data: MultiTaskData,
    split: SharedSplit | PerTaskSplit,
    batch_size: int,
    steps: int | None,
    generator: torch.Generator,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of training batches: shared ``(B, *in), (B, T)``; per task ``(T, B, *in), (T, B)``.

    With per-task inputs each step draws one batch per task (the Gumbel-Matrix protocol).
    """
    if isinstance(split, PerTaskSplit):
        yield from per_task_batches(
            split, batch_size, steps=steps_per_epoch(data, batch_size, steps), generator=generator
        )
    else:
        yield from shared_batches(split, batch_size, shuffle=True, generator=generator)


def task_losses(
    outputs: dict[str, Tensor], y: Tensor, tasks: Sequence[TaskSpec], per_task: bool
) -> dict[str, Tensor]:
    """Each task's mean loss over its labelled rows (y: (B, T) shared or (T, B) per task)."""
    return {
        t.name: t.loss(outputs[t.name].float(), y[i] if per_task else y[:, i])
        for i, t in enumerate(tasks)
    }


def weighted_loss(losses: dict[str, Tensor], tasks: Sequence[TaskSpec]) -> Tensor:
    """Σ_t w_t L_t."""
    return sum(
        (t.weight * losses[t.name] for t in tasks),
        torch.zeros((), device=next(iter(losses.values())).device),
    )


@dataclass(frozen=True)
class Evaluation:
    """Per-task metrics and losses on one split."""

    metrics: dict[str, dict[str, float]]
    losses: dict[str, float]

    def loss(self, tasks: Sequence[TaskSpec]) -> float:
        """The weighted validation objective used for early stopping."""
        return sum(t.weight * self.losses[t.name] for t in tasks)

    def primary(self, tasks: Sequence[TaskSpec]) -> dict[str, float]:
        return {t.name: self.metrics[t.name][t.primary_metric] for t in tasks}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: MultiTaskData,
    split: SharedSplit | PerTaskSplit,
    device: torch.device,
    amp: bool = False,
) -> Evaluation:
    """Metrics of every task; shared data is scored in one pass that serves all tasks."""
    was_training = model.training
    model.eval()
    tasks = data.tasks
    outs: dict[str, list[Tensor]] = {t.name: [] for t in tasks}
    ys: dict[str, list[Tensor]] = {t.name: [] for t in tasks}
    with autocast(device, amp):
        if isinstance(split, PerTaskSplit):
            for i, t in enumerate(tasks):
                for start in range(0, split.x[i].shape[0], EVAL_BATCH):
                    x = split.x[i][start : start + EVAL_BATCH].to(device, non_blocking=True)
                    outs[t.name].append(model(x.unsqueeze(0), tasks=[t.name])[t.name].float())
                    ys[t.name].append(split.y[i][start : start + EVAL_BATCH])
        else:
            for x, y in shared_batches(split, EVAL_BATCH, shuffle=False):
                out = model(x.to(device, non_blocking=True))
                for i, t in enumerate(tasks):
                    outs[t.name].append(out[t.name].float())
                    ys[t.name].append(y[:, i])
    metrics, losses = {}, {}
    for t in tasks:
        out, y = torch.cat(outs[t.name]).cpu(), torch.cat(ys[t.name])
        metrics[t.name] = t.evaluate(out, y)
        losses[t.name] = float(t.loss(out, y))
    model.train(was_training)
    return Evaluation(metrics=metrics, losses=losses)


class EarlyStopping:
    """Stop after ``patience`` epochs without a better validation loss; remember the best."""

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ConfigError(f"patience must be >= 1, got patience={patience}")
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch; True when this epoch is the best so far."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def check_finite(loss: Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{where}: the loss became {loss.item()}; lower the learning "
            f"rate or check the data for extreme values"
        )


def halves(
    split: SharedSplit | PerTaskSplit, gen: torch.Generator
) -> tuple[SharedSplit | PerTaskSplit, SharedSplit | PerTaskSplit]:
    """Two disjoint random halves (per task for per-task data) for alternating updates."""

    def cut(n: int) -> tuple[Tensor, Tensor]:
        perm = torch.randperm(n, generator=gen)
        return perm[: n // 2], perm[n // 2 :]

    if isinstance(split, PerTaskSplit):
        parts = [cut(x.shape[0]) for x in split.x]
        return tuple(  # type: ignore[return-value]
            PerTaskSplit(
                tuple(x[p[h]] for x, p in zip(split.x, parts, strict=True)),
                tuple(y[p[h]] for y, p in zip(split.y, parts, strict=True)),
            )
            for h in (0, 1)
        )
    i, j = cut(len(split))
    return SharedSplit(split.x[i], split.y[i]), SharedSplit(split.x[j], split.y[j])


@dataclass
class FitResult:
    """A trained model with its best validation epoch restored, and the per-epoch history."""

    model: nn.Module
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    device: str = "cpu"


def _step_losses(
    net: nn.Module, data: MultiTaskData, x: Tensor, y: Tensor, device: torch.device, amp: bool
) -> dict[str, Tensor]:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    per_task = data.regime == "per_task"
    with autocast(device, amp):
        out = net(x, tasks=list(data.task_names)) if per_task else net(x)
    return task_losses(out, y, data.tasks, per_task)


def _penalty(net: Supernet, weights: Mapping[str, float], entropy_weight: float) -> Tensor:
    terms = net.penalties()
    total = sum(
        (weights.get(k, 0.0) * v for k, v in terms.items()),
        torch.zeros((), device=next(net.parameters()).device),
    )
    if entropy_weight:
        gates = learned_gates(net)
        total = total + entropy_weight * sum(g.entropy() for _, _, g in gates) / max(len(gates), 1)
    return total


def train(
    net: Supernet,
    data: MultiTaskData,
    *,
    epochs: int,
    batch_size: int,
    steps_per_epoch: int | None,
    lr_weights: float,
    lr_arch: float = 0.0,
    weight_decay: float = 0.0,
    penalty_weights: Mapping[str, float] | None = None,
    entropy_weight: float = 0.0,
    warmup_epochs: int = 0,
    alternate: bool = False,
    patience: int = 5,
    device: str = "auto",
    amp: bool = False,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    stem: str = "model",
    keep_checkpoints: int = 2,
    progress: bool = False,
    log_path: Path | None = None,
    extra_record: Callable[[Supernet], dict[str, Any]] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """The one training loop behind search and retraining.

    Weights and gate variables have separate Adam optimizers; gate variables (if any) follow
    the penalty terms. Early stopping watches the weighted validation loss and the best
    epoch's state is restored at the end. Each epoch appends a JSON line to ``log_path`` and
    writes ``{stem}_epoch_NNN.pt`` (+ ``{stem}_best.pt``) to ``checkpoint_dir``.
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    if log_path is not None:
        log_path.unlink(missing_ok=True)  # the log describes this training only
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = net.to(dev).train()
    tasks = data.tasks
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=lr_weights, weight_decay=weight_decay)
    arch = net.arch_parameters()
    a_opt = torch.optim.Adam(arch, lr=lr_arch) if arch else None
    weight_split, arch_split = (
        halves(data.train, gen) if alternate and arch else (data.train, data.train)
    )
    weights = dict(penalty_weights or {})
    stopper = EarlyStopping(patience)
    best_state = copy.deepcopy(net.state_dict())
    history: list[dict[str, Any]] = []
    step = 0
    bar = tqdm(range(epochs), desc=stem, disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        warm = epoch < warmup_epochs
        hold_gates_open(net, warm)
        learn_arch = a_opt is not None and not warm
        sums = {t.name: 0.0 for t in tasks}
        n_steps = 0
        arch_iter = (
            train_batches(data, arch_split, batch_size, steps_per_epoch, gen)
            if alternate and learn_arch
            else None
        )
        for x, y in train_batches(data, weight_split, batch_size, steps_per_epoch, gen):
            net.set_step(step)
            losses = _step_losses(net, data, x, y, dev, amp)
            loss = weighted_loss(losses, tasks)
            if learn_arch and arch_iter is None:
                loss = loss + _penalty(net, weights, entropy_weight)
            check_finite(loss, f"{stem} epoch {epoch}")
            w_opt.zero_grad(set_to_none=True)
            if a_opt is not None:
                a_opt.zero_grad(set_to_none=True)
            loss.backward()
            w_opt.step()
            if learn_arch:
                if arch_iter is not None:  # alternate: gates step on the other half
                    batch = next(arch_iter, None)
                    if batch is not None:
                        a_opt.zero_grad(set_to_none=True)
                        a_loss = weighted_loss(_step_losses(net, data, *batch, dev, amp), tasks)
                        (a_loss + _penalty(net, weights, entropy_weight)).backward()
                a_opt.step()
            for name, v in losses.items():
                sums[name] += float(v.detach())
            n_steps += 1
            step += 1
        hold_gates_open(net, False)
        ev = evaluate(net, data, data.val, dev, amp)
        val_loss = ev.loss(tasks)
        improved = stopper.step(val_loss, epoch)
        if improved:
            best_state = copy.deepcopy(net.state_dict())
        record = {
            "epoch": epoch,
            "step": step,
            "warmup": warm,
            "train_loss": {k: v / max(n_steps, 1) for k, v in sums.items()},
            "val_loss": ev.losses,
            "val_objective": val_loss,
            "val_metric": ev.primary(tasks),
            "wall_s": time.perf_counter() - t0,
            **(extra_record(net) if extra_record else {}),
        }
        history.append(record)
        if log_path is not None:
            append_jsonl(log_path, record)
        if checkpoint_dir is not None:
            state = {
                "epoch": epoch,
                "step": step,
                "model": net.state_dict(),
                "w_opt": w_opt.state_dict(),
                "a_opt": a_opt.state_dict() if a_opt else None,
            }
            save_atomic(state, checkpoint_dir / f"{stem}_epoch_{epoch:03d}.pt")
            prune_epoch_checkpoints(checkpoint_dir, stem, keep_checkpoints)
            if improved:
                save_atomic(state, checkpoint_dir / f"{stem}_best.pt")
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(val=f"{val_loss:.4f}")
        log.info("%s epoch %d: val objective %.4f", stem, epoch, val_loss)
        if stopper.should_stop:
            break
    net.load_state_dict(best_state)
    return FitResult(
        model=net,
        best_epoch=stopper.best_epoch,
        best_val_loss=stopper.best,
        history=history,
        wall_s=time.perf_counter() - start,
        device=str(dev),
    )


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line per record, flushed so a crash keeps every finished epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
