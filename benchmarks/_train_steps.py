"""What the training-speed benchmarks share: one search or retrain step, batches, syncs.

A step here is the body of ``nas_mtl.stages.training.train`` for one batch, written out so a
benchmark can time steps without the epoch's evaluation: the search's
:class:`~nas_mtl.stages.search.ArchitectureStep` hooks (schedule, penalties, multiplier, gate
optimizer) around forward, per-task losses, backward and Adam, as the loop calls them. Host
syncs, in contrast, are counted on the real loop (``nas_mtl.stages.sync_count.cuda_syncs``,
:func:`per_step`). The
command line, settings and JSON file are ``_common``'s. Not a benchmark (underscore).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from nas_mtl.data import MultiTaskData
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.batches import place_split, train_batches
from nas_mtl.stages.evaluation import autocast, task_losses, weighted_loss
from nas_mtl.stages.search import ArchitectureStep
from nas_mtl.stages.training import adam
from nas_mtl.study import SearchConfig

Step = Callable[[Tensor, Tensor], None]


def search_step(
    net: Supernet, data: MultiTaskData, cfg: SearchConfig, device: torch.device, amp: bool
) -> Step:
    """One search training step after warm-up (gates sampled, penalties on), as ``train`` runs it.

    The gradient-affinity probe is left to ``cfg`` (benchmarks turn it off: it is its own cost).
    """
    net.to(device).train()
    hooks = ArchitectureStep(net, data, cfg)
    excluded = {id(p) for p in hooks.parameters_excluded()}
    w_opt = adam([p for p in net.parameters() if id(p) not in excluded], lr=cfg.lr_weights)
    hooks.start_epoch(net, cfg.epochs - 1, 1000)  # the last epoch: past warm-up
    per_task = data.regime == "per_task"
    step_no = [0]

    def batch_loss(batch: tuple[Tensor, Tensor]) -> Tensor:
        return weighted_loss(losses_of(*batch), data.tasks)

    def losses_of(x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with autocast(device, amp):
            out = net(x, tasks=list(data.task_names)) if per_task else net(x)
        return task_losses(out, y, data.tasks, per_task)

    def step(x: Tensor, y: Tensor) -> None:
        hooks.before_step(net, step_no[0])
        loss = weighted_loss(losses_of(x, y), data.tasks)
        extra = hooks.extra_loss(net)
        if extra is not None:
            loss = loss + extra
        w_opt.zero_grad(set_to_none=True)
        hooks.zero_grad()
        loss.backward()
        w_opt.step()
        hooks.after_step(net, batch_loss)
        step_no[0] += 1

    return step


def plain_step(
    net: Supernet, data: MultiTaskData, lr: float, device: torch.device, amp: bool
) -> Step:
    """One retrain step: forward, weighted per-task losses, backward, the training's Adam."""
    net.to(device).train()
    opt = adam(list(net.parameters()), lr=lr)
    per_task = data.regime == "per_task"

    def step(x: Tensor, y: Tensor) -> None:
        with autocast(device, amp):
            out = net(x, tasks=list(data.task_names)) if per_task else net(x)
        loss = weighted_loss(task_losses(out, y, data.tasks, per_task), data.tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def batch_stream(
    data: MultiTaskData, batch_size: int, device: torch.device, seed: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Training batches without end, as the loop draws them: the split placed on the device
    once (``place_split``), rows gathered there, epoch after epoch."""
    split = place_split(data.train, device)
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield from train_batches(data, split, batch_size, None, gen)


def steps_per_second(
    step: Step,
    x: Tensor | None,
    y: Tensor | None,
    n: int,
    sync: Callable[[], None] = lambda: None,
    batches: Iterator[tuple[Tensor, Tensor]] | None = None,
) -> float:
    """Steps per second over ``n`` consecutive steps, on ``(x, y)`` or the next ``batches``;
    ``sync`` waits for a device to finish its queue (before the clock starts and stops)."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        if batches is not None:
            x, y = next(batches)
        step(x, y)  # type: ignore[arg-type]
    sync()
    return n / (time.perf_counter() - t0)


def per_step(run: Callable[[int, int], int], epochs: int, steps: int) -> float:
    """What one more step adds to ``run(epochs, steps_per_epoch)``'s count: three times the
    steps against ``steps``, so one-time and per-epoch counts cancel."""
    return (run(epochs, 3 * steps) - run(epochs, steps)) / (epochs * 2 * steps)
