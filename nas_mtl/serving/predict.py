"""``nas-mtl predict``: a run's retrained model on new rows of a table, one CSV of predictions.

New rows are encoded with the run's saved preprocessing (:mod:`nas_mtl.serving.preprocessing`)
and served by the packed model. The output has one row per input row, in order: ``row`` (its
0-based position in the input), then per task its value (regression), its probability of
class 1 and its class (binary: ``<task>_prob``, ``<task>_class``) or one probability per
class and the most probable class (multiclass: ``<task>_prob_<k>``, ``<task>_class``). With a
per-task table (a study with ``task_column``) whose column is in the file, each row gets its
own task's prediction only (the other tasks' cells are empty). docs/serving.md, "Predict".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nas_mtl.data import TargetScale, read_frame
from nas_mtl.errors import ConfigError, DataError, did_you_mean
from nas_mtl.serving.packed import serving_model
from nas_mtl.serving.preprocessing import Preprocessing
from nas_mtl.serving.run_model import load_run_model
from nas_mtl.storage import write_bytes_atomic
from nas_mtl.tasks import TaskSpec

CHUNK = 8192  # rows per forward: bounded memory on any file size


@dataclass(frozen=True)
class Predictions:
    path: Path
    rows: int
    tasks: tuple[str, ...]
    unknown_categories: dict[str, int]  # column -> rows whose category training never saw


def default_output(data: Path) -> Path:
    """``people.csv`` -> ``people.predictions.csv`` next to it."""
    stem = data.name.split(".")[0]
    return data.with_name(f"{stem}.predictions.csv")


def _columns(spec: TaskSpec, out: torch.Tensor, scale: TargetScale | None) -> dict[str, np.ndarray]:
    """A task's output columns from its logits or values (B, out_dim); a regression value in
    the labels' units."""
    if spec.type == "regression":
        value = out[:, 0].double() if scale is None else scale.to_user(out[:, 0])
        return {spec.name: value.numpy()}
    if spec.type == "binary":
        p = torch.sigmoid(out[:, 0].double())
        return {f"{spec.name}_prob": p.numpy(), f"{spec.name}_class": (p >= 0.5).long().numpy()}
    p = torch.softmax(out.double(), dim=1)
    cols = {f"{spec.name}_prob_{k}": p[:, k].numpy() for k in range(p.shape[1])}
    cols[f"{spec.name}_class"] = p.argmax(dim=1).numpy()
    return cols


def _row_tasks(frame: pd.DataFrame, pre: Preprocessing, where: str) -> np.ndarray | None:
    """Per-task tables: each row's task index when the file names it, else None."""
    column = pre.task_column
    if column is None or column not in frame.columns:
        return None
    names = [t.name for t in pre.tasks]
    values = frame[column]
    if values.isna().any():
        raise DataError(
            f"{where}: task column '{column}' has {int(values.isna().sum())} empty cells; name "
            f"each row's task or drop the column to predict every task for every row"
        )
    text = values.astype(str)
    unknown = sorted(set(text) - set(names))
    if unknown:
        raise DataError(
            f"{where}: task column '{column}' names tasks this run does not have: "
            f"{', '.join(unknown[:5])}{did_you_mean(unknown[0], names)}; tasks: {', '.join(names)}"
        )
    return text.map({n: i for i, n in enumerate(names)}).to_numpy(dtype=np.int64)


def predict_frame(
    frame: pd.DataFrame, net: torch.nn.Module, pre: Preprocessing, where: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Predictions for the rows of ``frame`` (see the module docstring for the columns)."""
    x, unknown = pre.encode(frame, where)
    model = serving_model(net, batch_hint=min(len(frame), CHUNK))
    outs: dict[str, list[torch.Tensor]] = {t.name: [] for t in pre.tasks}
    with torch.inference_mode():
        for start in range(0, len(x), CHUNK):
            y = model(torch.from_numpy(x[start : start + CHUNK]))
            for name in outs:
                outs[name].append(y[name].float().cpu())
    columns: dict[str, np.ndarray] = {"row": np.arange(len(frame))}
    row_task = _row_tasks(frame, pre, where)
    for t, spec in enumerate(pre.tasks):
        scale = pre.targets.get(spec.name)
        for name, values in _columns(spec, torch.cat(outs[spec.name]), scale).items():
            if row_task is not None:  # other tasks' rows: empty cells
                values = pd.array(values).astype("Float64" if values.dtype.kind == "f" else "Int64")
                values[row_task != t] = pd.NA
            columns[name] = values
    return pd.DataFrame(columns), unknown


def predict_run(
    run_dir: str | Path, data: str | Path, out: str | Path | None = None
) -> Predictions:
    """Predict every task for the rows of ``data`` with the model retrained in ``run_dir``.

    Writes the predictions CSV atomically to ``out`` (default: :func:`default_output`).
    """
    run_dir, data = Path(run_dir), Path(data)
    net, pre = load_run_model(run_dir)
    if not pre.is_table:
        raise ConfigError(
            f"{run_dir} was trained on the built-in data set '{pre.source.get('name')}', not on "
            f"a table file, so there is no saved encoding for new rows; predict needs a run of "
            f"a study whose [data] names a file (docs/serving.md); `nas-mtl export` serves this "
            f"run on encoded inputs"
        )
    frame = read_frame(data)
    table, unknown = predict_frame(frame, net, pre, str(data))
    path = Path(out) if out is not None else default_output(data)
    if path.resolve() == data.resolve():
        raise ConfigError(f"--out {path} is the input file; choose another name")
    write_bytes_atomic(path, table.to_csv(index=False, float_format="%.9g").encode())
    return Predictions(path, len(frame), tuple(t.name for t in pre.tasks), unknown)
