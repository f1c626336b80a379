"""Which rows each training step sees: batches of a shared or per-task split, and halves.

With per-task inputs each step draws one batch per task (the Gumbel-Matrix protocol); an epoch
is one pass over the largest task unless ``steps_per_epoch`` says otherwise.

Batches are drawn as *row indices* from the CPU generator, exactly the draws of
:func:`nas_mtl.data.shared_batches` and :func:`nas_mtl.data.per_task_batches` (so a seed gives
the same batches on every device), and the rows are gathered where the split lives. On CUDA
:func:`place_split` puts the training split on the GPU once per training; the indices then go
over asynchronously from pinned memory, one copy per epoch (shared inputs) or per step (per
task), and no batch waits for the host (``docs/speed.md``, "Data placement").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from nas_mtl.data import MultiTaskData, PerTaskSplit, SharedSplit
from nas_mtl.data.base import per_task_indices
from nas_mtl.errors import ConfigError

log = logging.getLogger(__name__)

# a training split goes to the GPU when it takes at most this fraction of the free memory;
# a larger one stays on the host and each batch is copied over (as on every step before)
DEVICE_FRACTION = 0.5


def steps_per_epoch(data: MultiTaskData, batch_size: int, configured: int | None) -> int:
    """Per-task data: one pass over the largest task unless configured."""
    if configured is not None:
        return configured
    split = data.train
    n = max(split.sizes()) if isinstance(split, PerTaskSplit) else len(split)
    return max(1, math.ceil(n / batch_size))


def split_device(split: SharedSplit | PerTaskSplit) -> torch.device:
    """Where a split's tensors live."""
    return split.x.device if isinstance(split, SharedSplit) else split.x[0].device


def place_split(
    split: SharedSplit | PerTaskSplit, device: torch.device
) -> SharedSplit | PerTaskSplit:
    """``split`` on ``device`` when that is a GPU with room for it; else ``split`` itself.

    Moving the rows once per training replaces one host-to-device copy per batch (which a
    pageable CPU tensor makes synchronous) by an on-device gather.
    """
    if device.type != "cuda" or split_device(split) == device:
        return split
    tensors = [split.x, split.y] if isinstance(split, SharedSplit) else [*split.x, *split.y]
    need = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if need > DEVICE_FRACTION * free:
        log.info(
            "training split of %.1f GB stays on the host (%.1f GB free on %s): batches are "
            "copied per step",
            need / 1e9,
            free / 1e9,
            device,
        )
        return split
    if isinstance(split, SharedSplit):
        return SharedSplit(split.x.to(device), split.y.to(device))
    return PerTaskSplit(tuple(x.to(device) for x in split.x), tuple(y.to(device) for y in split.y))


def _to(index: Tensor, device: torch.device) -> Tensor:
    """Row indices on the split's device; to a GPU without waiting (pinned, non-blocking)."""
    if device.type == "cpu":
        return index
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index.to(device)


def train_batches(
    data: MultiTaskData,
    split: SharedSplit | PerTaskSplit,
    batch_size: int,
    steps: int | None,
    generator: torch.Generator,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of training batches: shared ``(B, *in), (B, T)``; per task ``(T, B, *in), (T, B)``.

    With per-task inputs each step draws one batch per task (the Gumbel-Matrix protocol). The
    batches are on the split's device and equal, row for row, those of the data module's
    ``shared_batches`` / ``per_task_batches`` with the same generator.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got batch_size={batch_size}")
    device = split_device(split)
    if isinstance(split, PerTaskSplit):
        n_steps = steps_per_epoch(data, batch_size, steps)
        for rows in per_task_indices(split.sizes(), batch_size, n_steps, generator):
            index = _to(torch.stack(rows), device)  # (T, B)
            yield (
                torch.stack([x[index[t]] for t, x in enumerate(split.x)]),
                torch.stack([y[index[t]] for t, y in enumerate(split.y)]),
            )
        return
    # one shuffled epoch, as shared_batches(shuffle=True) draws it; one copy to the device
    perm = _to(torch.randperm(len(split), generator=generator), device)
    for start in range(0, len(split), batch_size):
        idx = perm[start : start + batch_size]
        yield split.x[idx], split.y[idx]


def halves(
    split: SharedSplit | PerTaskSplit, gen: torch.Generator
) -> tuple[SharedSplit | PerTaskSplit, SharedSplit | PerTaskSplit]:
    """Two disjoint random halves (per task for per-task data) for alternating updates."""
    device = split_device(split)

    def cut(n: int) -> tuple[Tensor, Tensor]:
        perm = _to(torch.randperm(n, generator=gen), device)
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


def epochs_for_steps(epochs: int, min_steps: int, per_epoch: int) -> int:
    """``epochs``, or more when ``epochs`` epochs of ``per_epoch`` steps are fewer than
    ``min_steps`` steps (docs/search.md, "Length"): what a stage counts in epochs acts by steps,
    and a small data set's epochs are few steps each."""
    return max(epochs, math.ceil(min_steps / per_epoch))
