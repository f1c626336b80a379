"""Multi-task data: task sets from users' files and the benchmarks the papers used.

Two regimes (:mod:`nas_mtl.data.base`): *shared input* (one row, a label per task; MMoE, SNR)
and *per-task inputs* (each task its own examples; Gumbel-Matrix). Users load their own tables
with :func:`load_table` / :func:`load_per_task_table` or arrays with
:func:`from_per_task_arrays`; built-in data sets load by name with :func:`load_dataset` from a
data directory (``data_dir``, else ``$NAS_MTL_DATA_DIR``, else ``./data``). Nothing is
downloaded. The user data contract is docs/data.md.
"""

from __future__ import annotations

# Importing the loader modules (census, mnist, omniglot, synthetic) registers them in DATASETS.
from nas_mtl.data.arrays import from_per_task_arrays
from nas_mtl.data.base import (
    MultiTaskData,
    PerTaskSplit,
    SharedSplit,
    per_task_batches,
    shared_batches,
    task_batches,
)
from nas_mtl.data.census import COLLEGE_OR_HIGHER, census_income
from nas_mtl.data.files import DATA_DIR_ENV, read_frame, resolve_data_dir
from nas_mtl.data.images import area_resize, clear_image_cache
from nas_mtl.data.mnist import (
    DOMAINS,
    MNIST2_PERMUTATION,
    MNIST_FAMILY_TASKS,
    domain_clusters,
    domain_of,
    mnist_family,
)
from nas_mtl.data.omniglot import GUMBEL_MATRIX_ALPHABETS, omniglot, omniglot_alphabets
from nas_mtl.data.registry import DATASETS, dataset_params, load_dataset
from nas_mtl.data.synthetic import synthetic, synthetic_sinusoids, synthetic_task_weights
from nas_mtl.data.tabular import load_per_task_table, load_table
from nas_mtl.data.targets import TargetScale, fit_target_scales, standardize_targets

__all__ = [
    "TargetScale",
    "fit_target_scales",
    "standardize_targets",
    "COLLEGE_OR_HIGHER",
    "DATASETS",
    "DATA_DIR_ENV",
    "DOMAINS",
    "GUMBEL_MATRIX_ALPHABETS",
    "MNIST2_PERMUTATION",
    "MNIST_FAMILY_TASKS",
    "MultiTaskData",
    "PerTaskSplit",
    "SharedSplit",
    "area_resize",
    "census_income",
    "clear_image_cache",
    "dataset_params",
    "domain_clusters",
    "domain_of",
    "from_per_task_arrays",
    "load_dataset",
    "load_per_task_table",
    "load_table",
    "mnist_family",
    "omniglot",
    "omniglot_alphabets",
    "per_task_batches",
    "read_frame",
    "resolve_data_dir",
    "shared_batches",
    "synthetic",
    "synthetic_sinusoids",
    "synthetic_task_weights",
    "task_batches",
]
