"""``torch.export`` programs of a run's packed model, loadable without nas-mtl.

The exported program holds the packed steps as an ATen graph with its weights, and a batch
dimension of any size: ``torch.export.load(path).module()(x)`` returns ``{task: (B, out)}``
(all tasks) or one ``(B, out)`` tensor (``--task``) in any Python with torch, nas-mtl not
installed. Inputs are the encoded features of ``preprocessing.json`` (docs/serving.md);
regression outputs are in the units of the training labels (:mod:`nas_mtl.serving.user_units`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.rundir import safe_name
from nas_mtl.serving.packed import DEFAULT_BATCH_HINT, PackedModel, ServedAsIs, serving_model
from nas_mtl.serving.run_model import load_run_model
from nas_mtl.serving.user_units import InUserUnits
from nas_mtl.storage import write_bytes_atomic

log = logging.getLogger(__name__)


class OneTask(nn.Module):
    """A serving model narrowed to one task's output tensor (what a one-task export returns)."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[self.task]


def export_program(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Export ``model`` (input ``(B, *input_shape)``, any B) with ``torch.export`` to ``path``.

    The file is written atomically (a temp file and a rename).
    """
    model = model.eval()
    example = torch.zeros(3, *input_shape)
    program = None
    errors = []
    for batch in (torch.export.Dim("batch"), torch.export.Dim.AUTO):
        try:
            program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
            break
        except Exception as e:  # a graph torch.export cannot prove for every batch size
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")
    if program is None:
        raise ConfigError(f"torch.export cannot export this model: {'; '.join(errors)}")
    buf = io.BytesIO()
    torch.export.save(program, buf)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


@dataclass(frozen=True)
class Exported:
    path: Path
    tasks: tuple[str, ...]
    packed: bool  # False: an image model exported as the pruned model itself
    input_shape: tuple[int, ...]


def export_run(
    run_dir: str | Path,
    task: str | None = None,
    out: str | Path | None = None,
    *,
    batch_hint: int = DEFAULT_BATCH_HINT,
) -> Exported:
    """Export the retrained model of ``run_dir``: every task (a dict), or ``task`` (a tensor).

    Default file: ``RUN_DIR/model.pt2`` (all tasks) or ``RUN_DIR/model.<task>.pt2``.
    """
    run_dir = Path(run_dir)
    net, pre = load_run_model(run_dir)
    if task is not None and task not in net.tasks:
        raise ConfigError(
            f"--task {task!r}: no such task{did_you_mean(task, net.tasks)}; this run has "
            f"{', '.join(net.tasks)}"
        )
    tasks = tuple(net.tasks) if task is None else (task,)
    model: nn.Module = serving_model(net, tasks, batch_hint=batch_hint)
    packed = isinstance(model, PackedModel)
    if isinstance(model, ServedAsIs):
        log.warning("exporting the pruned model as it is: %s", model.reason)
    if pre.targets:  # regression outputs in the labels' units (docs/serving.md)
        model = InUserUnits(model, pre.targets)
    if task is not None:
        model = OneTask(model, task)
    if out is None:
        out = run_dir / ("model.pt2" if task is None else f"model.{safe_name(task)}.pt2")
    path = export_program(model, tuple(net.input_shape), out)
    return Exported(path, tasks, packed, tuple(net.input_shape))
