"""From a study's [data] table (and one sweep point) to a :class:`MultiTaskData` and graphs.

A sweep varies a built-in data set's ``params``, a user file's [data] fields, or any other
study field; :meth:`Study.for_variant` puts the values in place before the data are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from nas_mtl.data import (
    MultiTaskData,
    load_dataset,
    load_per_task_table,
    load_table,
    standardize_targets,
)
from nas_mtl.model.spaces import build_space
from nas_mtl.study import Study


def load_data(
    study: Study, variant: Mapping[str, Any], seed: int, data_dir: str | Path | None = None
) -> MultiTaskData:
    """The study's data for one sweep variant, checked complete before any training, its
    regression targets in the model's units (``nas_mtl.data.targets``)."""
    data = _load(study, variant, seed, data_dir)
    data.check_complete()
    return standardize_targets(data)


def _load(
    study: Study, variant: Mapping[str, Any], seed: int, data_dir: str | Path | None
) -> MultiTaskData:
    """A built-in data set, or a user file resolved next to the study."""
    d = study.for_variant(variant).data
    if d.name is not None:
        return load_dataset(d.name, data_dir=data_dir, seed=seed, **d.params)
    path = Path(d.file)
    if not path.is_absolute() and study.path is not None and not path.exists():
        path = Path(study.path).parent / path
    table = {  # what both table loaders take
        "features": d.features,
        "categorical": d.categorical,
        "split_column": d.split_column,
        "split_fractions": d.split_fractions,
        "seed": seed,
        "encoding": d.encoding,
    }
    if d.task_column is not None:
        return load_per_task_table(
            path,
            task_column=d.task_column,
            label_column=d.label_column,
            task_type=d.task_type,
            n_classes=d.n_classes,
            weights=d.weights,
            metric=d.metric,
            **table,
        )
    return load_table(path, tasks=list(d.tasks), **table)


def space_graph(study: Study, space: str, data: MultiTaskData) -> nx.DiGraph:
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return build_space(space, data.input_shape, out_dims, **study.space_params.get(space, {}))
