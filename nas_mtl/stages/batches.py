"""Which rows each training step sees: batches of a shared or per-task split, and halves.

With per-task inputs each step draws one batch per task (the Gumbel-Matrix protocol); an epoch
is one pass over the largest task unless ``steps_per_epoch`` says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from nas_mtl.data import MultiTaskData, PerTaskSplit, SharedSplit, per_task_batches, shared_batches


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


def steps_in_epoch(
    data: MultiTaskData, split: SharedSplit | PerTaskSplit, batch_size: int, steps: int | None
) -> int:
    """Steps in one epoch over ``split`` (the split the weights train on)."""
    if isinstance(split, PerTaskSplit):
        return steps_per_epoch(data, batch_size, steps)
    return max(1, math.ceil(len(split) / batch_size))
