"""Data-parallel retraining under torchrun: process group, ranks, batch shards, rank-0 decisions.

``torchrun --nproc_per_node K -m nas_mtl retrain RUN_DIR`` starts K processes with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. :func:`process_group` joins
them (gloo on CPU, nccl on CUDA, one GPU per rank: ``cuda:LOCAL_RANK``); inside it the training
loop wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`, each rank trains
on its :func:`shard` of the one seeded batch stream, rank 0 evaluates and :func:`from_main`
hands its verdict to every rank, and only rank 0 writes files. Without torchrun (or outside
:func:`process_group`) every helper is the identity: world size 1, no process group, so the
single-process path is unchanged. Details and the why: ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from nas_mtl.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


def launched() -> bool:
    """True in a process that torchrun started with more than one rank (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True inside :func:`process_group` with more than one rank: collectives will run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Ranks that train together (1 outside :func:`process_group`)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's rank: the process group's, else torchrun's ``RANK``, else 0."""
    return _rank()


def _rank() -> int:
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0; always true without torchrun)."""
    return rank() == 0


def rank_device(device: str) -> str:
    """The device a torchrun rank uses for ``device`` (auto, cpu, cuda): ``cuda:LOCAL_RANK``.

    A rank owns one GPU, so an explicit ``cuda:N`` would put several ranks on one device
    (nccl refuses that); it is an error here. Without torchrun ``device`` is returned as is.
    """
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cpu":
        return device
    if device == "auto":
        return f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' was asked for but CUDA is not available here; "
                "use --device auto or cpu"
            )
        return f"cuda:{local}"
    raise ConfigError(
        f"under torchrun each rank uses its own GPU (cuda:LOCAL_RANK), got device={device!r}; "
        f"use --device auto, cuda or cpu"
    )


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """Join torchrun's ranks for the block and yield this rank's device; leave the group after.

    gloo on CPU, nccl on CUDA (after selecting ``cuda:LOCAL_RANK``). Without torchrun, or with
    one rank, nothing is initialized and ``device`` comes back unchanged.
    """
    if not launched():
        yield device
        return
    if not dist.is_available():
        raise ConfigError(
            "torchrun started several ranks, but this torch build has no torch.distributed; "
            "run nas-mtl without torchrun"
        )
    device = rank_device(device)
    backend = "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        backend = "nccl"
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined: %s, %s", rank(), world_size(), backend, device)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` in DistributedDataParallel when ranks train together, else ``net`` itself.

    ``find_unused_parameters`` stays off: a derived model holds only live components and every
    training step asks for all tasks (per-task batches carry one batch of every task), so every
    parameter gets a gradient in every step; DDP would otherwise pay a graph traversal per step.
    """
    if not active():
        return net
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def shard(
    batches: Iterable[T], *, rank: int | None = None, world: int | None = None
) -> Iterator[tuple[T, float]]:
    """This rank's part of a batch stream that every rank draws alike: ``(batch, share)`` pairs.

    ``rank`` and ``world`` default to this process's. The stream is cut into groups of
    ``world`` consecutive batches and rank r takes the r-th of each, so every batch trains on
    exactly one rank while every rank draws the same seeded stream (the generator states stay
    equal, as checkpoints need). ``share`` scales the batch's loss so that DDP's gradient
    average is the mean over real batches: 1 in full groups; in a last group of ``m < world``
    batches the ranks that have one get ``world / m`` and the others repeat the group's first
    batch with share 0, so every rank takes as many steps (a rank that skipped one would leave
    the others waiting in the gradient all-reduce).
    """
    r = _rank() if rank is None else rank
    k = world_size() if world is None else world
    if k == 1:
        for batch in batches:
            yield batch, 1.0
        return
    group: list[T] = []
    for batch in batches:
        group.append(batch)
        if len(group) == k:
            yield group[r], 1.0
            group = []
    if group:
        yield (group[r], k / len(group)) if r < len(group) else (group[0], 0.0)


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, its result on every rank (a decision all ranks must share)."""
    if not active():
        return compute()
    box = [compute() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def mean_over_ranks(sums: dict[str, float], count: int) -> dict[str, float]:
    """Per-key ``Σ sums / Σ count`` over all ranks (this rank's means outside a group)."""
    if not active():
        return {k: v / max(count, 1) for k, v in sums.items()}
    keys = list(sums)
    total = torch.tensor([*(sums[k] for k in keys), count], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    n = max(float(total[-1]), 1.0)
    return {k: float(total[i]) / n for i, k in enumerate(keys)}


def sync_buffers(net: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank.

    DDP broadcasts buffers before each forward pass, but each rank's last forward of an epoch
    updates its own running statistics; evaluation and saved states must see one model.
    """
    if active():
        for buffer in net.buffers():
            dist.broadcast(buffer, src=0)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict (names, dtypes, shapes, values): equal digests, equal weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_in_sync(net: nn.Module, what: str) -> str | None:
    """Fail unless every rank holds the same weights; log and return this rank's digest.

    A no-op (None) in one process. The log line (``-v``) lets a test compare the ranks.
    """
    if not active():
        return None
    digest = state_digest(net.state_dict())
    log.info("%s: rank %d of %d weights sha256 %s", what, rank(), world_size(), digest)
    digests: list[Any] = [None] * world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"{what}: the ranks' weights differ after training: {digests}")
    return digest
