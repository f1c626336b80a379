"""``preprocessing.json``: what a run's model expects, saved with the run, applied to new rows.

A retrained model reads standardized numbers and one-hot categories in one fixed order; the
statistics were fitted on the training rows of the study's table (:mod:`nas_mtl.data.encoding`).
Retraining writes them into the run directory with the tasks (names, types, classes, label
columns) and the data regime, and ``nas-mtl predict`` encodes new rows with them exactly as
training did: numbers ``(v - mean) / std`` in float64 then float32, categories one-hot over the
saved vocabulary; a category the vocabulary lacks gets all zeros. Each regression task's
``target`` (mean, std) maps the model's outputs back to the user's units
(:mod:`nas_mtl.data.targets`); every run saves it, built-in data sets included, and a file
without it (runs before targets were standardized) means outputs already in the user's units.
The file format is in docs/serving.md ("preprocessing.json").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from nas_mtl.data import MultiTaskData
from nas_mtl.data.encoding import ColumnEncoding, FeatureEncoding
from nas_mtl.data.targets import TargetScale
from nas_mtl.errors import ConfigError, DataError
from nas_mtl.storage import read_json, write_json_atomic
from nas_mtl.tasks import TaskSpec

PREPROCESSING_FILE = "preprocessing.json"
FORMAT = "nas-mtl/preprocessing"
VERSION = 1


@dataclass(frozen=True)
class Preprocessing:
    """A run's inputs and outputs: feature encoding (None unless the data was a table file),
    tasks in head order, the data regime and where the data came from."""

    tasks: tuple[TaskSpec, ...]
    regime: str  # "shared" | "per_task"
    input_shape: tuple[int, ...]
    encoding: FeatureEncoding | None
    source: Mapping[str, Any]  # {"kind": "table" | "per_task_table" | "dataset", ...}
    targets: Mapping[str, TargetScale] = field(default_factory=dict)  # regression tasks

    def to_json(self) -> dict[str, Any]:
        enc = self.encoding
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": dict(self.source),
            "regime": self.regime,
            "input_shape": list(self.input_shape),
            "features": None
            if enc is None
            else [
                {"column": c.column, "type": "numeric", "mean": c.mean, "std": c.std}
                if c.kind == "numeric"
                else {"column": c.column, "type": "categorical", "categories": list(c.categories)}
                for c in enc.columns
            ],
            "inputs": None if enc is None else list(enc.names),
            "tasks": [
                {
                    "name": t.name,
                    "type": t.type,
                    "n_classes": t.n_classes,
                    "out_dim": t.out_dim,
                    "column": t.label_column,
                    "target": self.targets[t.name].to_json() if t.name in self.targets else None,
                }
                for t in self.tasks
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Preprocessing:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ConfigError(
                f"{where} is not a nas-mtl preprocessing file (format {FORMAT}, version "
                f"{VERSION}); retrain the run to rewrite it"
            )
        try:
            features = data["features"]
            encoding = None
            if features is not None:
                encoding = FeatureEncoding(
                    tuple(
                        ColumnEncoding(f["column"], "numeric", float(f["mean"]), float(f["std"]))
                        if f["type"] == "numeric"
                        else ColumnEncoding(
                            f["column"], "categorical", categories=tuple(f["categories"])
                        )
                        for f in features
                    )
                )
            tasks = tuple(
                TaskSpec(t["name"], t["type"], t["n_classes"], column=t["column"])
                for t in data["tasks"]
            )
            targets = {
                t["name"]: TargetScale(float(t["target"]["mean"]), float(t["target"]["std"]))
                for t in data["tasks"]
                if t.get("target") is not None
            }
            return cls(
                tasks=tasks,
                regime=str(data["regime"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                encoding=encoding,
                source=dict(data.get("source", {})),
                targets=targets,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"{where}: broken preprocessing file ({e}); retrain the run"
            ) from None

    @property
    def is_table(self) -> bool:
        return self.encoding is not None

    @property
    def task_column(self) -> str | None:
        """Per-task tables: the column that names each row's task."""
        return self.source.get("task_column")

    def encode(self, frame: pd.DataFrame, where: str) -> tuple[np.ndarray, dict[str, int]]:
        """New rows as model inputs ``(N, D)`` float32, and unknown categories per column.

        A missing feature column or a missing/NaN/infinite value is a :class:`DataError`
        naming the column and ``where`` (the file), as when the table was loaded for training.
        """
        if self.encoding is None:
            raise ConfigError("this run's data was not a table file: nothing to encode")
        missing = [c.column for c in self.encoding.columns if c.column not in frame.columns]
        if missing:
            raise DataError(
                f"{where}: feature column '{missing[0]}' is missing"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; the model "
                f"reads {', '.join(c.column for c in self.encoding.columns)}"
            )
        n = len(frame)
        x = np.zeros((n, len(self.encoding.names)), dtype=np.float32)
        unknown: dict[str, int] = {}
        col = 0
        for c in self.encoding.columns:
            series = frame[c.column]
            if c.kind == "numeric":
                x[:, col] = _standardized(series, c, where)
                col += 1
                continue
            if series.isna().any():
                raise DataError(
                    f"{where}: categorical column '{c.column}' has {int(series.isna().sum())} "
                    f"missing values; fill them with a category (training refused them too)"
                )
            index = {v: i for i, v in enumerate(c.categories)}
            codes = np.array([index.get(str(v), -1) for v in series.tolist()], dtype=np.int64)
            known = codes >= 0
            if not known.all():
                unknown[c.column] = int((~known).sum())
            x[np.flatnonzero(known), col + codes[known]] = 1.0
            col += len(c.categories)
        return x, unknown


def _standardized(series: pd.Series, c: ColumnEncoding, where: str) -> np.ndarray:
    if not ptypes.is_numeric_dtype(series) or ptypes.is_bool_dtype(series):
        example = series.dropna()
        shown = f" (e.g. {example.iloc[0]!r})" if len(example) else ""
        raise DataError(
            f"{where}: feature column '{c.column}' must be numeric, got {series.dtype} "
            f"values{shown}"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"{where}: feature column '{c.column}' has {int(bad.sum())} missing or infinite "
            f"values (first at row {int(np.flatnonzero(bad)[0])}); fill them before predicting "
            f"(features are never imputed)"
        )
    return (values - c.mean) / c.std


def preprocessing_of(data: MultiTaskData, config: Any = None) -> Preprocessing:
    """What a run's model expects, from the data it was trained on and the study's [data]."""
    file = getattr(config, "file", None)
    task_column = getattr(config, "task_column", None)
    if file is None:  # a built-in data set (Census-Income's loader still encodes a table)
        source: dict[str, Any] = {"kind": "dataset", "name": data.name}
    elif task_column is not None:
        source = {"kind": "per_task_table", "file": file, "task_column": task_column}
    else:
        source = {"kind": "table", "file": file}
    return Preprocessing(
        tasks=tuple(data.tasks),
        regime=data.regime,
        input_shape=tuple(data.input_shape),
        encoding=data.encoding,
        source=source,
        targets=dict(data.targets or {}),
    )


def write_preprocessing(run_dir: str | Path, data: MultiTaskData, config: Any = None) -> Path:
    """``RUN_DIR/preprocessing.json`` (atomic), written when a run retrains."""
    path = Path(run_dir) / PREPROCESSING_FILE
    write_json_atomic(path, preprocessing_of(data, config).to_json())
    return path


def read_preprocessing(run_dir: str | Path) -> Preprocessing:
    path = Path(run_dir) / PREPROCESSING_FILE
    if not path.exists():
        raise ConfigError(
            f"{path} not found: runs write it when they retrain; run `nas-mtl retrain "
            f"{run_dir}` to write it"
        )
    return Preprocessing.from_json(read_json(path, "preprocessing"), str(path))
