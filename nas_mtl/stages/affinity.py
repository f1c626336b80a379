"""Inter-task gradient affinity measured during the search (TAG; ``docs/search.md``).

Fifty et al. (NeurIPS 2021), "Efficiently Identifying Task Groupings in Multi-Task Learning"
(TAG): the lookahead affinity of task i onto task j on one batch x is

    Z_{i→j} = 1 − L_j(x; θ_s − η ∇_{θ_s} L_i(x), θ_j) / L_j(x; θ_s, θ_j)

the relative change of task j's loss after one SGD step of task i alone on the shared weights
θ_s (positive: i's step helps j). The paper takes the lookahead as a plain SGD step with the
learning rate even when training uses another optimizer, and so does this module: η is the
weight optimizer's (Adam's) learning rate ``lr_weights``. Z is averaged over every
measurement of the search, as the paper averages over training.

*Shared* weights are every weight of the supernet outside the head block (task towers and the
edges into them) and outside the gate variables: the parameters through which one task's
step can reach another task's loss. Every gate is held open while Z is measured (see
:meth:`AffinityProbe.measure`). A probe leaves no trace on the search: weights and buffers are
restored bit-exactly, optimizers and gradients are not touched, and the RNG stream of training
is restored.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nas_mtl.model.supernet import Supernet, hold_gates_open
from nas_mtl.storage import read_json, write_json_atomic

__all__ = [
    "AFFINITY_FILE",
    "AffinityProbe",
    "TaskAffinity",
    "affinity_similarity",
    "lookahead_affinity",
    "read_affinity",
    "shared_parameters",
    "write_affinity",
]

AFFINITY_FILE = "affinity.json"

TaskLosses = Callable[[], Mapping[str, Tensor]]


def shared_parameters(net: Supernet) -> list[nn.Parameter]:
    """The weights any two tasks may both use: all but the head block's and the gate variables.

    A weight that only task i reads (its tower, its column of the edges into the heads) has a
    zero gradient for every other task and moves no other task's loss, so it could only add to
    Z_{i→i}; the gate variables are the architecture, not the shared representation.
    """
    arch = {id(p) for p in net.arch_parameters()}
    return [
        p
        for blk in net.blocks
        if not blk.is_head
        for p in blk.parameters()
        if p.requires_grad and id(p) not in arch
    ]


@contextlib.contextmanager
def _gates_open(net: Supernet) -> Iterator[None]:
    """Every gate held open (as in warm-up), then each gate's own setting back."""
    held = [blk.gate.hold_open for blk in net.blocks]
    try:
        hold_gates_open(net, True)
        yield
    finally:
        for blk, h in zip(net.blocks, held, strict=True):
            blk.gate.hold_open = h


@contextlib.contextmanager
def _same_noise(devices: Sequence[int]) -> Iterator[None]:
    """Run a forward pass on a fork of the RNG: it draws what the next real draw would be."""
    with torch.random.fork_rng(devices=devices):
        yield


def lookahead_affinity(
    net: nn.Module,
    task_losses: TaskLosses,
    tasks: Sequence[str],
    params: Sequence[nn.Parameter],
    lr: float,
) -> tuple[Tensor, Tensor]:
    """Z (T, T) on one batch (row i = source task, column j = target task), and L (T,).

    ``task_losses()`` scores the batch per task with the network's current weights. Cost: one
    forward and T backward passes for the per-task gradients g_i = ∇_{θ_s} L_i, then T forward
    passes without autograd, one per lookahead θ_s − η g_i, each scoring every task j. The
    lookaheads are a loop that writes θ_s − η g_i into the weights in place and copies θ_s back
    (bit-exact) rather than one ``torch.func.vmap`` over T parameter sets: vmap cannot run
    batch norm in training mode (image components), and on the tabular supernets on CPU it was
    no faster (gumbel_matrix) or 1.5 times faster (snr_trans) on the forward half only.

    Every forward runs on a fork of the RNG (``torch.random.fork_rng``): all T + 1 forwards
    draw the same noise, the draw the training step makes next, and the RNG state afterwards
    is the one before. Fresh noise per forward would change L_j by far more than the O(η)
    lookahead does. Buffers a training-mode forward updates (batch-norm statistics) are
    restored with the weights.
    """
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    buffers = list(net.buffers())
    saved_buffers = [b.detach().clone() for b in buffers]
    with _same_noise(devices), torch.enable_grad():
        out = task_losses()
        base = torch.stack([out[t] for t in tasks])  # (T,)
        grads = _task_gradients(base, params)  # per parameter: (T, *shape)
    del out
    saved = [p.detach().clone() for p in params]
    looked = []
    try:
        with torch.no_grad():
            for i in range(len(tasks)):
                for p, s, g in zip(params, saved, grads, strict=True):
                    p.copy_(s).add_(g[i], alpha=-lr)
                with _same_noise(devices):
                    ahead = task_losses()
                looked.append(torch.stack([ahead[t] for t in tasks]))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
            for b, s in zip(buffers, saved_buffers, strict=True):
                b.copy_(s)
    base = base.detach().double()
    return 1.0 - torch.stack(looked).double() / base, base


def _task_gradients(losses: Tensor, params: Sequence[nn.Parameter]) -> list[Tensor]:
    """∇ L_i for every task i on every parameter, stacked (T, *shape); unused ones are 0."""
    rows: list[list[Tensor]] = []
    for i in range(losses.shape[0]):
        g = torch.autograd.grad(
            losses[i], params, retain_graph=i + 1 < losses.shape[0], allow_unused=True
        )
        rows.append(
            [torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params, strict=True)]
        )
    return [torch.stack(col) for col in zip(*rows, strict=True)]


@dataclass(frozen=True)
class TaskAffinity:
    """The search's mean lookahead affinity, and what it cost (``affinity.json``)."""

    tasks: tuple[str, ...]
    matrix: np.ndarray  # (T, T): row i = source task, column j = target task
    measurements: int
    every: int  # one measurement every this many training steps
    lookahead_lr: float  # η of the SGD lookahead step
    extra_seconds: float  # wall time spent measuring (a resumed search: all its runs)
    search_seconds: float  # wall time of the search, measurements included (a resumed
    # search: the run that finished it, as SearchResult.wall_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "matrix": self.matrix.tolist(),
            "measurements": self.measurements,
            "every": self.every,
            "lookahead_lr": self.lookahead_lr,
            "extra_seconds": self.extra_seconds,
            "search_seconds": self.search_seconds,
        }


class AffinityProbe:
    """Measures Z every ``every`` training steps and keeps its running mean over the search.

    The running sums live on the CPU in float64, with a count per (i, j) pair: a pair whose
    source or target loss is 0 on a batch (no labelled row of that task) is skipped there
    rather than counted as a zero affinity. :meth:`state` and :meth:`load_state` carry the
    sums through checkpoints, so a resumed search ends with the matrix of an uninterrupted one.
    """

    def __init__(self, net: Supernet, tasks: Sequence[str], every: int, lr: float) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 (steps between measurements), got {every}")
        self.net, self.tasks, self.every, self.lr = net, tuple(tasks), every, lr
        self.params = shared_parameters(net)
        n = len(self.tasks)
        self.sums = torch.zeros(n, n, dtype=torch.float64)
        self.counts = torch.zeros(n, n, dtype=torch.long)
        self.measurements = 0
        self.seconds = 0.0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def measure(self, task_losses: TaskLosses) -> None:
        """One measurement on the batch that ``task_losses`` scores, added to the sums.

        The gates are held open, as in warm-up: every task reaches every shared weight, the
        hard-shared network TAG measures affinity in. With the gates the search samples (or
        their eval-mode values), two tasks that the search has already routed apart share no
        weight and have Z = 0 whatever their relation, so Z would restate the search's own
        allocation instead of giving a view independent of it. On 12 planted-group tasks
        (Gumbel-Matrix, seed 2, the searched net at its end) the within- minus across-group
        mean of Z was −0.7 standard deviations of the across-group values with sampled gates,
        −1.0 with eval-mode gates and +3.8 with open gates; over whole searches, sampled gates
        clustered the groups with ARI 0.11 / 0.17 / −0.06 (seeds 0-2), open gates with 1.0
        (``docs/search.md``). An open gate draws no noise, so then the forwards are
        deterministic as well.
        """
        start = time.perf_counter()
        with _gates_open(self.net):
            z, base = lookahead_affinity(self.net, task_losses, self.tasks, self.params, self.lr)
        # one device sync per measurement (every `every` steps), none in other steps
        both = torch.cat([z, base.unsqueeze(0)]).cpu()  # (T + 1, T)
        z, base = both[:-1], both[-1]
        valid = (base > 0).unsqueeze(1) & (base > 0).unsqueeze(0) & torch.isfinite(z)
        self.sums += torch.where(valid, z, torch.zeros((), dtype=z.dtype))
        self.counts += valid.long()
        self.measurements += 1
        self.seconds += time.perf_counter() - start

    def mean(self) -> np.ndarray:
        """The mean Z over all measurements (NaN for a pair never measured)."""
        n = self.counts.double()
        return torch.where(n > 0, self.sums / n.clamp(min=1), torch.nan).numpy()

    def result(self, search_seconds: float) -> TaskAffinity:
        return TaskAffinity(
            tasks=self.tasks,
            matrix=self.mean(),
            measurements=self.measurements,
            every=self.every,
            lookahead_lr=self.lr,
            extra_seconds=self.seconds,
            search_seconds=search_seconds,
        )

    def state(self) -> dict[str, Any]:
        return {
            "sums": self.sums.clone(),
            "counts": self.counts.clone(),
            "measurements": self.measurements,
            "seconds": self.seconds,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.sums = state["sums"].clone().double()
        self.counts = state["counts"].clone().long()
        self.measurements = int(state["measurements"])
        self.seconds = float(state["seconds"])


def write_affinity(run_dir: str | Path, affinity: TaskAffinity) -> Path:
    """``run_dir/affinity.json``, written atomically."""
    path = Path(run_dir) / AFFINITY_FILE
    write_json_atomic(path, affinity.to_json())
    return path


def read_affinity(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(tasks, Z) from ``affinity.json`` or from the run directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / AFFINITY_FILE
    doc = read_json(path, "affinity")
    matrix = np.array(doc["matrix"], dtype=float)  # null (never measured) reads as NaN
    return list(doc["tasks"]), matrix


def affinity_similarity(matrix: np.ndarray) -> np.ndarray:
    """A task similarity for :func:`nas_mtl.cluster.cluster_tasks` from Z: values in [0, 1].

    Z is directed; clustering needs a symmetric score, so S = (Z + Zᵀ) / 2 (the mean affinity
    of a pair both ways, the quantity TAG's grouping adds up). Z's scale is set by η, the loss
    scale and the gradient norms, so only its order carries meaning; the off-diagonal entries
    are mapped linearly onto [0, 1] (least to most affine pair) and the diagonal set to 1.
    ``cluster_tasks`` reads 1 − S as a distance, which is then in [0, 1] as its silhouette and
    clipping expect, and spectral clustering gets the non-negative affinity it needs. Average
    linkage depends only on the order of the merged averages, which a positive linear map
    keeps: the agglomerative clustering of S is that of the raw symmetrized Z. A pair never
    measured (NaN) counts as the least affine.

    >>> affinity_similarity(np.array([[0.5, 0.3, -0.1], [0.1, 0.4, -0.2], [0.0, -0.2, 0.9]]))
    array([[1.   , 1.   , 0.375],
           [1.   , 1.   , 0.   ],
           [0.375, 0.   , 1.   ]])
    """
    z = np.asarray(matrix, dtype=float)
    if z.ndim != 2 or z.shape[0] != z.shape[1]:
        raise ValueError(f"an affinity matrix must be square (T, T), got shape {z.shape}")
    s = (z + z.T) / 2.0
    off = ~np.eye(len(s), dtype=bool)
    values = s[off & np.isfinite(s)]
    out = np.zeros_like(s)
    if values.size:
        lo, hi = values.min(), values.max()
        scaled = (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
        out = np.where(np.isfinite(scaled), scaled, 0.0)
    np.fill_diagonal(out, 1.0)
    return out
