"""Synthetic regression tasks with controlled relatedness (MMoE §3.2 in groups; ``docs/data.md``).

Tasks come in groups. Each group has an anchor direction ``u_0``; with orthonormal ``u``:

* ``within_group="anchor"`` (exactly MMoE for two tasks): the group's first task uses
  ``w = c · u_0`` and task j uses ``w_j = c · (ρ · u_0 + sqrt(1 − ρ²) · u_j)``, so every task
  has ``cos = ρ`` with the anchor task (two non-anchor tasks have ``cos = ρ²``);
* ``within_group="equicorrelated"``: every task uses ``w_j = c · (sqrt(ρ) · u_0 +
  sqrt(1 − ρ) · u_j)``, so **every** pair in the group has ``cos = ρ`` (needs ``ρ >= 0``).

Tasks of different groups use disjoint orthonormal vectors (``cos = 0``). Then
``x ~ N(0, I_d)`` and ``y = wᵀx + Σ_{i=1..m} sin(α_i · wᵀx + β_i) + ε``, ``ε ~ N(0, noise²)``, with
``α_i, β_i ~ N(0, 1)`` (``sinusoids="normal"``, as PLE's reproduction) or ``α_i = i,
β_i = (i − 1)²`` (``sinusoids="index"``, as the Gumbel-Matrix code; much harder). The sinusoid
parameters are shared by all tasks so that relatedness is governed by ρ alone.

Everything is deterministic given ``seed`` and the parameters; the weight vectors depend only on
``seed``, ``input_dim``, ``groups``, ``rho``, ``c`` and ``within_group`` (not on the sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nas_mtl.data.base import MultiTaskData, PerTaskSplit, SharedSplit
from nas_mtl.data.checks import check_choice, check_float, check_int
from nas_mtl.data.registry import DATASETS
from nas_mtl.errors import ConfigError
from nas_mtl.tasks import TaskSpec

__all__ = [
    "SINUSOIDS",
    "WITHIN_GROUP",
    "synthetic",
    "synthetic_sinusoids",
    "synthetic_task_weights",
]

SINUSOIDS = ("normal", "index")
WITHIN_GROUP = ("anchor", "equicorrelated")
INPUTS = ("shared", "per_task")

# Independent random streams: changing a size never changes the task weights or other splits.
_STREAM_WEIGHTS, _STREAM_SINUSOIDS, _STREAM_SPLITS = 0, 1, 2


def _check_groups(groups: object) -> list[int]:
    if (
        isinstance(groups, (str, bytes))
        or not isinstance(groups, Sequence)
        or not groups
        or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in groups)
    ):
        raise ConfigError(
            "data set 'synthetic': groups must be a non-empty list of task counts per group "
            f"(integers >= 1), e.g. [2, 2]; got groups={groups!r}"
        )
    return list(groups)


def synthetic_task_weights(
    input_dim: int,
    groups: Sequence[int],
    rho: float,
    *,
    c: float = 1.0,
    within_group: str = "anchor",
    seed: int = 0,
) -> np.ndarray:
    """The task weight vectors ``w_t`` as a ``(T, input_dim)`` array (tasks in group order).

    Orthonormal vectors are the columns of the Q factor of a seeded Gaussian matrix (a random
    orthogonal basis of R^d). Group g with k tasks uses k fresh vectors: ``u_0`` and one per task.
    """
    groups = _check_groups(groups)
    check_int("synthetic", "input_dim", input_dim, minimum=1)
    check_float("synthetic", "rho", rho, low=-1.0, high=1.0)
    check_float("synthetic", "c", c, low=0.0, high=float("inf"), low_open=True)
    check_choice("synthetic", "within_group", within_group, WITHIN_GROUP)
    if within_group == "equicorrelated" and rho < 0:
        raise ConfigError(
            f"data set 'synthetic': within_group='equicorrelated' needs rho >= 0, got rho={rho!r}"
        )
    needed = sum(g + 1 if within_group == "equicorrelated" else g for g in groups)
    if needed > input_dim:
        raise ConfigError(
            f"data set 'synthetic': groups={groups} need {needed} orthonormal vectors but "
            f"input_dim={input_dim}; raise input_dim or use fewer tasks"
        )
    rng = np.random.default_rng([seed, _STREAM_WEIGHTS])
    q, r = np.linalg.qr(rng.standard_normal((input_dim, input_dim)))
    basis = (q * np.sign(np.diag(r))).T  # rows orthonormal; sign fix makes Q unique (Haar)
    weights, next_vec = [], 0
    for size in groups:
        anchor = basis[next_vec]
        next_vec += 1
        for j in range(size):
            if within_group == "anchor":
                if j == 0:
                    w = anchor
                else:
                    w = rho * anchor + np.sqrt(1.0 - rho**2) * basis[next_vec]
                    next_vec += 1
            else:
                w = np.sqrt(rho) * anchor + np.sqrt(1.0 - rho) * basis[next_vec]
                next_vec += 1
            weights.append(c * w)
    return np.stack(weights)


def _check_binary(binary: object, n_tasks: int) -> np.ndarray:
    """``binary`` as a boolean mask over the tasks, or a ConfigError naming the rule."""
    if (
        isinstance(binary, (str, bytes))
        or not isinstance(binary, Sequence)
        or any(isinstance(t, bool) or not isinstance(t, int) for t in binary)
        or any(not 0 <= t < n_tasks for t in binary)
        or len(set(binary)) != len(binary)
    ):
        raise ConfigError(
            "data set 'synthetic': binary must be a list of distinct task indices in "
            f"0..{n_tasks - 1} (tasks in group order), e.g. [0, 2]; got binary={binary!r}"
        )
    mask = np.zeros(n_tasks, dtype=bool)
    mask[list(binary)] = True
    return mask


def synthetic_sinusoids(m: int, sinusoids: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(α, β)`` of the ``m`` sinusoids: seeded N(0, 1) draws, or ``α_i = i, β_i = (i − 1)²``."""
    check_int("synthetic", "m", m, minimum=0)
    check_choice("synthetic", "sinusoids", sinusoids, SINUSOIDS)
    if sinusoids == "index":
        i = np.arange(1, m + 1, dtype=np.float64)
        return i, (i - 1.0) ** 2
    rng = np.random.default_rng([seed, _STREAM_SINUSOIDS])
    return rng.standard_normal(m), rng.standard_normal(m)


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))


def _targets(
    x: np.ndarray, w: np.ndarray, alpha: np.ndarray, beta: np.ndarray, eps: np.ndarray
) -> np.ndarray:
    z = x @ w.T  # (N, T)
    waves = np.sin(z[:, :, None] * alpha + beta).sum(axis=2) if alpha.size else 0.0
    return z + waves + eps


@DATASETS.register("synthetic", "MMoE-style regression tasks with controlled correlation rho")
def synthetic(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 1000,
    input_dim: int = 100,
    groups: Sequence[int] = (2, 2),
    rho: float = 0.9,
    c: float = 1.0,
    m: int = 10,
    sinusoids: str = "normal",
    noise: float = 0.01,
    within_group: str = "anchor",
    inputs: str = "shared",
    label_scale: float = 1.0,
    label_offset: float = 0.0,
    binary: Sequence[int] = (),
) -> MultiTaskData:
    """Regression tasks in groups (MMoE §3.2); task ``g{group}_t{index}`` (``data_dir`` unused).

    Args:
        n_train, n_val, n_test: rows per split (fresh ``x`` draws, one stream per split).
        input_dim: d (MMoE uses 100).
        groups: number of tasks in each group, e.g. ``[2, 2]``; tasks are related only inside
            a group.
        rho: correlation of the weight vectors inside a group (MMoE ρ).
        c: scale of the weight vectors.
        m: number of sinusoids.
        sinusoids: ``"normal"`` (α, β ~ N(0, 1)) or ``"index"`` (α_i = i, β_i = (i − 1)²).
        noise: standard deviation of ε (MMoE: 0.01).
        within_group: ``"anchor"`` (MMoE) or ``"equicorrelated"``, see the module docstring.
        inputs: ``"shared"`` (every row labelled for every task, the MMoE setting) or
            ``"per_task"`` (each task draws its own ``n`` rows): with per-task inputs a group
            that shares a trunk sees more distinct inputs, so sharing pays as it does when
            tasks come from different data sets.
        label_scale, label_offset: regression labels in other units, ``y · scale + offset``
            (the same task set in a user's units: metrics scale, relatedness does not).
        binary: indices of tasks (in group order) whose label is ``1[y > 0]`` instead of
            ``y``: binary tasks of the same relatedness (``y`` has mean about 0).

    Labels are float64, as a user's would be before standardization (``nas_mtl.data.targets``
    stores them as float32 once in the model's units), so ``label_scale`` and ``label_offset``
    change no training target.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        check_int("synthetic", name, value, minimum=1 if name == "n_train" else 0)
    check_float("synthetic", "noise", noise, low=0.0, high=float("inf"))
    groups = _check_groups(groups)
    check_choice("synthetic", "inputs", inputs, INPUTS)
    check_float("synthetic", "label_scale", label_scale, low=0.0, high=1e30, low_open=True)
    check_float("synthetic", "label_offset", label_offset, low=-1e30, high=1e30)
    w = synthetic_task_weights(input_dim, groups, rho, c=c, within_group=within_group, seed=seed)
    is_binary = _check_binary(binary, w.shape[0])

    def labels(y: np.ndarray, binary_mask: np.ndarray) -> np.ndarray:
        """Raw targets in the tasks' units: 1[y > 0] for binary tasks, y · scale + offset."""
        return np.where(binary_mask, y > 0, y * label_scale + label_offset)

    alpha, beta = synthetic_sinusoids(m, sinusoids, seed)
    splits: list[SharedSplit | PerTaskSplit] = []
    for k, n in enumerate((n_train, n_val, n_test)):
        rng = np.random.default_rng([seed, _STREAM_SPLITS, k])
        if inputs == "shared":
            x = rng.standard_normal((n, input_dim))
            eps = noise * rng.standard_normal((n, w.shape[0]))
            y = labels(_targets(x, w, alpha, beta, eps), is_binary)  # (N, T)
            splits.append(SharedSplit(_f32(x), torch.from_numpy(y.astype(np.float64))))
            continue
        xs, ys = [], []
        for t in range(w.shape[0]):  # task t's rows: x drawn for it alone
            x = rng.standard_normal((n, input_dim))
            eps = noise * rng.standard_normal((n, 1))
            xs.append(_f32(x))
            y = labels(_targets(x, w[t : t + 1], alpha, beta, eps)[:, 0], is_binary[t])
            ys.append(torch.from_numpy(y.astype(np.float64)))
        splits.append(PerTaskSplit(tuple(xs), tuple(ys)))
    names = [f"g{g}_t{j}" for g, size in enumerate(groups) for j in range(size)]
    tasks = tuple(
        TaskSpec(name, "binary" if is_binary[t] else "regression") for t, name in enumerate(names)
    )
    return MultiTaskData(
        "synthetic",
        tasks,
        (input_dim,),
        *splits,
        feature_names=tuple(f"x{i}" for i in range(input_dim)),
    )
