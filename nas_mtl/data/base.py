"""The two shapes of multi-task data and fast batching over them.

*Shared input* (MMoE, SNR): one example carries a label for every task, so a batch is ``x (B, ...)``
with ``y (B, T)``; a missing label is NaN and is left out of that task's loss only.
*Per-task inputs* (Gumbel-Matrix, Maziarz et al. 2019): each task has its own examples, and each
training step draws one batch per task, stacked into ``x (T, B, ...)`` and ``y (T, B)``.

Everything lives in tensors; batches are index slices, never per-row Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from nas_mtl.errors import ConfigError, DataError
from nas_mtl.tasks import TaskSpec

if TYPE_CHECKING:
    from nas_mtl.data.encoding import FeatureEncoding
    from nas_mtl.data.targets import TargetScale

__all__ = [
    "MultiTaskData",
    "PerTaskSplit",
    "SharedSplit",
    "per_task_batches",
    "shared_batches",
    "task_batches",
]


def _check_float(t: Tensor, what: str, labels: bool = False) -> None:
    """Inputs are float32; labels may also be float64 until they are standardized
    (``nas_mtl.data.targets``), so that labels in a user's units (a mean of 1000, a scale of
    0.01) reach the model's units with the precision they came with."""
    if not isinstance(t, Tensor):
        raise DataError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    allowed = (torch.float32, torch.float64) if labels else (torch.float32,)
    if t.dtype not in allowed:
        need = "float32 (or float64)" if labels else "float32"
        raise DataError(f"{what} must be {need}, got {t.dtype}; convert with .float()")


@dataclass(frozen=True)
class SharedSplit:
    """One split of shared-input data: ``x (N, *input_shape)``, ``y (N, T)`` (NaN = missing)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        _check_float(self.x, "SharedSplit.x")
        _check_float(self.y, "SharedSplit.y", labels=True)
        object.__setattr__(self, "x", self.x.contiguous())
        object.__setattr__(self, "y", self.y.contiguous())
        if self.y.dim() != 2:
            raise DataError(f"SharedSplit.y must be (N, T), got shape {tuple(self.y.shape)}")
        if self.x.dim() < 2 or self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"SharedSplit: x and y have unequal lengths: x has shape {tuple(self.x.shape)}, "
                f"y has shape {tuple(self.y.shape)}"
            )

    @property
    def n_tasks(self) -> int:
        return int(self.y.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class PerTaskSplit:
    """One split of per-task data: task t has ``x[t] (N_t, *input_shape)`` and ``y[t] (N_t,)``."""

    x: tuple[Tensor, ...]
    y: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "x", tuple(self.x))
        object.__setattr__(self, "y", tuple(self.y))
        if len(self.x) != len(self.y):
            raise DataError(
                f"PerTaskSplit: {len(self.x)} input tensors but {len(self.y)} label tensors"
            )
        for t, (x, y) in enumerate(zip(self.x, self.y, strict=True)):
            _check_float(x, f"PerTaskSplit.x[{t}]")
            _check_float(y, f"PerTaskSplit.y[{t}]", labels=True)
            if y.dim() != 1 or x.dim() < 2 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"PerTaskSplit task {t}: x and y have unequal lengths or wrong ranks: "
                    f"x {tuple(x.shape)}, y {tuple(y.shape)} (need (N, ...) and (N,))"
                )
            if bool(torch.isnan(y).any()):
                raise DataError(
                    f"PerTaskSplit task {t}: labels contain NaN; per-task examples must be labelled"
                )

    @property
    def n_tasks(self) -> int:
        return len(self.x)

    def sizes(self) -> tuple[int, ...]:
        return tuple(int(x.shape[0]) for x in self.x)

    def __len__(self) -> int:
        return sum(self.sizes())


def _label_problem(spec: TaskSpec, y: Tensor) -> str | None:
    """Describe labels that do not fit the task type (None if they fit); NaN means missing."""
    present = y[~torch.isnan(y)]
    if spec.type == "regression":
        bad = present[~torch.isfinite(present)]
        return f"{bad.numel()} infinite labels" if bad.numel() else None
    if spec.type == "binary":
        bad = present[(present != 0) & (present != 1)]
        return f"labels other than 0/1, e.g. {bad[:3].tolist()}" if bad.numel() else None
    bad = present[(present != torch.round(present)) | (present < 0) | (present >= spec.n_classes)]
    if bad.numel():
        return f"labels that are not integers in 0..{spec.n_classes - 1}, e.g. {bad[:3].tolist()}"
    return None


def task_labels(split: SharedSplit | PerTaskSplit, t: int) -> Tensor:
    """Task ``t``'s labels in a split (NaN = missing), whichever kind the split is."""
    return split.y[:, t] if isinstance(split, SharedSplit) else split.y[t]


@dataclass(frozen=True)
class MultiTaskData:
    """A multi-task data set: task specs, input shape and train/val/test splits of one kind.

    Checked on construction: every split has the same kind and number of tasks, inputs match
    ``input_shape``, labels fit their task type, and every task has training labels.
    """

    name: str
    tasks: tuple[TaskSpec, ...]
    input_shape: tuple[int, ...]
    train: SharedSplit | PerTaskSplit
    val: SharedSplit | PerTaskSplit
    test: SharedSplit | PerTaskSplit
    feature_names: tuple[str, ...] = ()
    # table data: the fitted standardization and vocabularies (saved for serving)
    encoding: FeatureEncoding | None = field(default=None, compare=False, repr=False)
    # regression labels in the model's units: each task's scale back to the user's
    # (None: labels as given; nas_mtl.data.targets.standardize_targets sets it)
    targets: Mapping[str, TargetScale] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        if not self.tasks:
            raise ConfigError(f"data set '{self.name}' has no tasks")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                f"data set '{self.name}': task names must be unique, repeated: {dupes}"
            )
        splits = {"train": self.train, "val": self.val, "test": self.test}
        kinds = {name: type(s).__name__ for name, s in splits.items()}
        if len(set(kinds.values())) != 1 or not isinstance(self.train, (SharedSplit, PerTaskSplit)):
            raise DataError(
                f"data set '{self.name}': all splits must be SharedSplit or all PerTaskSplit, got "
                + ", ".join(f"{k}={v}" for k, v in kinds.items())
            )
        for split_name, split in splits.items():
            self._check_split(split_name, split)
        if self.feature_names and self.input_shape != (len(self.feature_names),):
            raise DataError(
                f"data set '{self.name}': {len(self.feature_names)} feature names for input "
                f"shape {self.input_shape}"
            )
        for t, spec in enumerate(self.tasks):
            if not bool((~torch.isnan(task_labels(self.train, t))).any()):
                raise DataError(
                    f"data set '{self.name}': task '{spec.name}' has no labels in the "
                    "training split"
                )

    def check_complete(self) -> None:
        """What a study needs before the first epoch: labelled rows of every task in every split
        (the counts in the message), and two classes in every binary task's training labels."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        for t, spec in enumerate(self.tasks):
            labels = {k: task_labels(s, t) for k, s in splits.items()}
            counts = {k: int((~torch.isnan(y)).sum()) for k, y in labels.items()}
            empty = [k for k, n in counts.items() if n == 0]
            if empty:
                raise DataError(
                    f"data set '{self.name}': task '{spec.name}' has no labelled rows in the "
                    f"{' and '.join(empty)} split"
                    f"{'s' if len(empty) > 1 else ''} (labelled train/val/test: "
                    f"{'/'.join(str(n) for n in counts.values())}); give more rows or change "
                    f"split_fractions"
                )
            if spec.type == "binary":
                y = labels["train"][~torch.isnan(labels["train"])]
                if bool((y == y[0]).all()):
                    raise DataError(
                        f"data set '{self.name}': binary task '{spec.name}' has only label "
                        f"{int(y[0])} in the training split ({counts['train']} rows); it "
                        f"cannot learn to tell the classes apart"
                    )

    def _check_split(self, split_name: str, split: SharedSplit | PerTaskSplit) -> None:
        where = f"data set '{self.name}', {split_name} split"
        if split.n_tasks != len(self.tasks):
            raise DataError(
                f"{where}: {split.n_tasks} label columns/tensors for {len(self.tasks)} tasks"
            )
        xs = (split.x,) if isinstance(split, SharedSplit) else split.x
        for x in xs:
            if tuple(x.shape[1:]) != self.input_shape:
                raise DataError(
                    f"{where}: inputs have shape {tuple(x.shape[1:])} per example, expected "
                    f"input_shape {self.input_shape}"
                )
        for t, spec in enumerate(self.tasks):
            y = split.y[:, t] if isinstance(split, SharedSplit) else split.y[t]
            problem = _label_problem(spec, y)
            if problem:
                raise DataError(f"{where}: {spec.type} task '{spec.name}' has {problem}")

    @property
    def regime(self) -> str:
        """``"shared"`` (one input, all labels) or ``"per_task"`` (each task its own inputs)."""
        return "shared" if isinstance(self.train, SharedSplit) else "per_task"

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def summary(self) -> str:
        """One line for logs: name, regime, tasks, input shape and split sizes."""
        names = ", ".join(self.task_names)
        if len(names) > 120:
            names = names[:117] + "..."
        sizes = "/".join(f"{len(s):,}" for s in (self.train, self.val, self.test))
        unit = "rows" if self.regime == "shared" else "examples over all tasks"
        return (
            f"{self.name}: {self.regime} inputs, {len(self.tasks)} tasks ({names}), input "
            f"{self.input_shape}, train/val/test {sizes} {unit}"
        )


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got batch_size={batch_size!r}")


def shared_batches(
    split: SharedSplit,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of ``(x (B, ...), y (B, T))`` batches; the last partial batch is kept.

    Unshuffled batches are views (no copy); shuffled ones gather rows of a permutation.
    """
    _check_batch_size(batch_size)
    n = len(split)
    if not shuffle:
        for start in range(0, n, batch_size):
            yield split.x[start : start + batch_size], split.y[start : start + batch_size]
        return
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        yield split.x[idx], split.y[idx]


def per_task_indices(
    sizes: Sequence[int], batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[list[Tensor]]:
    """``steps`` steps of one row-index batch per task: the draws of :func:`per_task_batches`.

    Each task walks through its own permutation and reshuffles when it runs out (the leftover
    rows open the next batch); a task with fewer than ``batch_size`` rows samples with
    replacement. The training loop draws these on the host and indexes rows wherever they live
    (``nas_mtl.stages.batches``), so a seed gives the same batches on every device.
    """
    empty = [t for t, n in enumerate(sizes) if n == 0]
    if empty:
        raise DataError(f"per_task_batches: tasks {empty} have no examples in this split")
    perms = [torch.randperm(n, generator=generator) for n in sizes]
    cursors = [0] * len(sizes)
    for _ in range(steps):
        out = []
        for t, n in enumerate(sizes):
            if n < batch_size:
                idx = torch.randint(n, (batch_size,), generator=generator)
            else:
                idx = perms[t][cursors[t] : cursors[t] + batch_size]
                cursors[t] += batch_size
                if idx.numel() < batch_size:
                    perms[t] = torch.randperm(n, generator=generator)
                    need = batch_size - idx.numel()
                    idx = torch.cat([idx, perms[t][:need]])
                    cursors[t] = need
            out.append(idx)
        yield out


def per_task_batches(
    split: PerTaskSplit,
    batch_size: int,
    *,
    steps: int,
    generator: torch.Generator,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``steps`` training steps of the Gumbel-Matrix protocol: one batch of every task per step.

    Yields ``x (T, B, *input_shape)`` and ``y (T, B)`` with ``B = batch_size`` for every task.
    Each task walks through its own permutation and reshuffles when it runs out (the leftover
    rows of an epoch open the next batch, so every example is seen once per epoch); a task with
    fewer than ``B`` examples samples with replacement.
    """
    _check_batch_size(batch_size)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0, got steps={steps!r}")
    for idx in per_task_indices(split.sizes(), batch_size, steps, generator):
        xs = [x[i] for x, i in zip(split.x, idx, strict=True)]
        ys = [y[i] for y, i in zip(split.y, idx, strict=True)]
        yield torch.stack(xs), torch.stack(ys)


def task_batches(
    split: SharedSplit | PerTaskSplit, task_index: int, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Evaluation batches of one task, in order: ``x (B, ...)``, ``y (B,)``.

    For a shared split only the rows where the task's label is present are yielded.
    """
    _check_batch_size(batch_size)
    if not 0 <= task_index < split.n_tasks:
        raise ConfigError(f"task_index must be in 0..{split.n_tasks - 1}, got {task_index}")
    if isinstance(split, PerTaskSplit):
        x, y = split.x[task_index], split.y[task_index]
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    column = split.y[:, task_index]
    present = ~torch.isnan(column)
    if bool(present.all()):
        for start in range(0, len(split), batch_size):
            yield split.x[start : start + batch_size], column[start : start + batch_size]
        return
    rows = torch.nonzero(present).squeeze(1)
    for start in range(0, rows.numel(), batch_size):
        idx = rows[start : start + batch_size]
        yield split.x[idx], column[idx]
