"""Group-consistent derive: tasks of one affinity group take one allocation.

A per-task gate (Gumbel-Matrix) lets every task pick its components alone, from its own
noisy straight-through gradients; two tasks that should share a trunk can settle on different
components, and the derived architecture then shares less than the tasks would gain from.
The search also measures the inter-task gradient affinity (TAG, Fifty et al. 2021): which
tasks' steps help which. Derive groups the tasks on that affinity and averages each task's
gate variables over its group (``Gate.task_pool``), so the tasks of a group get one decision
per component: the components their group, taken together, prefers (``docs/search.md``,
"Group-consistent derive"). Training never sees the pooling.

A group is pooled only when its tasks' gradients agree: the mean over its pairs of the
normalized affinity Ẑ_ij = ½(Z_ij + Z_ji) / √(Z_ii Z_jj) (to first order in η, Z_{i→j} ≈
η ⟨g_i, g_j⟩ / L_j, so Ẑ is close to the cosine of the two tasks' gradients) must reach
``min_affinity``. The clustering always returns groups, and their silhouette says nothing here:
it is computed on the affinity's order only, so unrelated tasks form groups as "clear" as
related ones; Ẑ keeps the scale. On 8 unrelated synthetic tasks the groups had mean Ẑ ≤ 0.03;
on planted groups of related tasks, 0.12–0.31.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_mtl.cluster import cluster_tasks
from nas_mtl.model.supernet import Supernet, learned_gates
from nas_mtl.stages.affinity import AFFINITY_FILE, affinity_similarity, read_affinity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskGroups:
    """Tasks grouped by their gradient affinity; which groups derive pools over."""

    tasks: tuple[str, ...]
    labels: tuple[int, ...]  # group per task, in ``tasks`` order
    silhouette: float | None
    agreement: tuple[float | None, ...]  # per group of ``groups``: mean Ẑ of its pairs
    min_affinity: float | None = 0.1  # a group is pooled when its agreement reaches this

    @property
    def groups(self) -> list[list[str]]:
        """The groups as lists of task names, in order of their first task."""
        order = list(dict.fromkeys(self.labels))
        return [[t for t, g in zip(self.tasks, self.labels, strict=True) if g == k] for k in order]

    @property
    def pooled_groups(self) -> list[list[str]]:
        """The groups of two or more tasks whose agreement reaches ``min_affinity`` (all of
        them when ``min_affinity`` is None: the number of groups was given)."""
        return [
            g
            for g, a in zip(self.groups, self.agreement, strict=True)
            if len(g) > 1
            and (self.min_affinity is None or (a is not None and a >= self.min_affinity))
        ]

    @property
    def pooled(self) -> bool:
        return bool(self.pooled_groups)

    def pool_labels(self) -> list[int]:
        """A group per task for pooling: a task outside the pooled groups is its own group."""
        pooled = self.pooled_groups
        index = {t: i for i, g in enumerate(pooled) for t in g}
        alone = iter(range(len(pooled), len(self.tasks)))
        return [index[t] if t in index else next(alone) for t in self.tasks]

    def record(self) -> dict[str, Any]:
        """What ``architecture.json`` keeps of it (provenance ``derive.task_groups``)."""
        return {
            "groups": self.groups,
            "agreement": list(self.agreement),
            "pooled": self.pooled_groups,
            "silhouette": self.silhouette,
            "min_affinity": self.min_affinity,
        }


def normalized_affinity(matrix: np.ndarray) -> np.ndarray:
    """Ẑ_ij = ½(Z_ij + Z_ji) / √(Z_ii Z_jj): the symmetrized affinity on the scale of each
    task's affinity with itself (≈ the cosine of the two gradients); 0 where a task's own
    step did not help it (Z_ii ≤ 0) or a pair was never measured.

    >>> normalized_affinity(np.array([[4.0, 1.0], [3.0, 1.0]]))
    array([[1., 1.],
           [1., 1.]])
    """
    z = np.nan_to_num(np.asarray(matrix, dtype=float))
    own = np.sqrt(np.clip(np.diag(z), 0.0, None))
    scale = np.outer(own, own)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(scale > 0, (z + z.T) / 2 / scale, 0.0)
    return out


def affinity_groups(
    tasks: Sequence[str], matrix: np.ndarray, k: int | None = None, min_affinity: float = 0.1
) -> TaskGroups:
    """Group ``tasks`` on their affinity matrix; ``k`` groups (all pooled), or the best
    silhouette's (pooled where their gradients agree, ``min_affinity``).

    >>> z = np.array([[3, 2, 0, 0], [2, 3, 0, 0], [0, 0, 3, 2], [0, 0, 2, 3]], dtype=float)
    >>> g = affinity_groups(["a", "b", "c", "d"], z)
    >>> g.pooled_groups, g.agreement
    ([['a', 'b'], ['c', 'd']], (0.667, 0.667))
    """
    clustering = cluster_tasks(affinity_similarity(np.asarray(matrix, dtype=float)), k)
    labels = tuple(int(v) for v in clustering.labels)
    zhat = normalized_affinity(matrix)
    agreement = []
    for k_label in dict.fromkeys(labels):
        idx = [i for i, v in enumerate(labels) if v == k_label]
        pairs = [zhat[i, j] for i in idx for j in idx if i < j]
        agreement.append(round(float(np.mean(pairs)), 3) if pairs else None)
    threshold = None if k is not None else min_affinity
    return TaskGroups(tuple(tasks), labels, clustering.silhouette, tuple(agreement), threshold)


def run_groups(
    run_dir: Path, net: Supernet, k: int | None, min_affinity: float
) -> TaskGroups | None:
    """The groups of a searched run from its ``affinity.json``; None without one or when no
    gate decides per task (pooling would change nothing)."""
    if not any(gate.per_task_variables for _, _, gate in learned_gates(net)):
        return None
    if not (run_dir / AFFINITY_FILE).exists():
        log.info("no %s in %s: each task keeps its own decisions", AFFINITY_FILE, run_dir)
        return None
    tasks, matrix = read_affinity(run_dir)
    if np.isnan(matrix).all():
        return None
    order = [tasks.index(t) for t in net.tasks]  # the supernet's task order
    return affinity_groups(net.tasks, matrix[np.ix_(order, order)], k, min_affinity)


def pool_matrix(labels: Sequence[int]) -> torch.Tensor:
    """(T, T) row-stochastic: row t averages over the tasks of t's group.

    >>> pool_matrix([0, 0, 1])
    tensor([[0.5000, 0.5000, 0.0000],
            [0.5000, 0.5000, 0.0000],
            [0.0000, 0.0000, 1.0000]])
    """
    lab = torch.tensor(list(labels))
    same = (lab.unsqueeze(0) == lab.unsqueeze(1)).float()
    return same / same.sum(dim=1, keepdim=True)


@contextlib.contextmanager
def pooled_tasks(net: Supernet, groups: TaskGroups | None) -> Iterator[None]:
    """Within the block, every learned gate's per-task variables decide per group (a
    per-task gate's rows; a shared gate's edges into the heads); None: unchanged."""
    gates = [g for _, _, g in learned_gates(net) if g.per_task_variables]
    if groups is None or not groups.pooled or not gates:
        yield
        return
    if tuple(groups.tasks) != tuple(net.tasks):
        raise ValueError(f"groups are over tasks {groups.tasks}, the supernet has {net.tasks}")
    pool = pool_matrix(groups.pool_labels())
    for gate in gates:
        gate.task_pool = pool
    try:
        yield
    finally:
        for gate in gates:
            gate.task_pool = None
