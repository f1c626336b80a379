"""Where a model runs and how it is scored: device, autocast, per-task losses, evaluation.

The training loop, the search's selection and retrain all score a model with these; the
losses and metrics are defined in ``docs/metrics.md``, the device settings (TF32, cuDNN
autotuning, bf16 autocast, ``torch.compile``) in ``docs/speed.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nas_mtl.data import MultiTaskData, PerTaskSplit, SharedSplit, shared_batches
from nas_mtl.data.base import task_labels
from nas_mtl.errors import ConfigError
from nas_mtl.tasks import TaskSpec

EVAL_BATCH = 2048


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else must exist here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was asked for but CUDA is not available here; "
            f"use --device auto or cpu"
        )
    return dev


def configure_device(device: torch.device) -> None:
    """Fast CUDA defaults: TF32 matmuls and convolutions, cuDNN autotuning; nothing elsewhere.

    TF32 keeps float32's range with a 10-bit mantissa on Ampere and later GPUs (about 1e-3
    relative error per product), several times the float32 matmul throughput; cuDNN autotuning
    times the convolution algorithms once per input shape and keeps the fastest, so image
    spaces run faster but not bit-reproducibly. These are process-wide PyTorch settings, so
    they are set for the process once a CUDA device is chosen (``docs/speed.md``, "TF32").
    """
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """float32 matmuls inside (TF32 off), the previous settings after; a no-op off CUDA.

    For measurements that compare two nearby losses (the gradient-affinity lookahead), whose
    O(lr) difference TF32 rounding could swamp.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 mixed precision on CUDA (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_model(model: nn.Module, where: str) -> Callable[..., Any]:
    """``model`` compiled by ``torch.compile`` (default mode), failures told as a ConfigError.

    Compilation happens at the first call (and again for a new input shape or gate state), so
    that is where a missing compiler toolchain shows; the message names the setting to turn
    off. The returned callable runs the compiled module; the module itself (its parameters,
    its state dict) is unchanged (``docs/speed.md``, "torch.compile").
    """
    import torch._dynamo  # heavy: only when asked for

    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError(
            f"{where}: compile = true, but torch.compile is not supported by this PyTorch "
            f"({torch.__version__}) or Python; set compile = false"
        )
    compiled = torch.compile(model)

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            raise ConfigError(
                f"{where}: compile = true, but torch.compile failed on this machine "
                f"({type(e.inner_exception).__name__}: {e.inner_exception}); set compile = "
                f"false, or install a C++ compiler (Inductor builds CPU kernels with one)"
            ) from e

    return run


def task_losses(
    outputs: dict[str, Tensor], y: Tensor, tasks: Sequence[TaskSpec], per_task: bool
) -> dict[str, Tensor]:
    """Each task's mean loss over its labelled rows (y: (B, T) shared or (T, B) per task)."""
    return {
        t.name: t.loss(outputs[t.name].float(), y[i] if per_task else y[:, i])
        for i, t in enumerate(tasks)
    }


def weighted_loss(losses: dict[str, Tensor], tasks: Sequence[TaskSpec]) -> Tensor:
    """Σ_t w_t L_t."""
    return sum(
        (t.weight * losses[t.name] for t in tasks),
        torch.zeros((), device=next(iter(losses.values())).device),
    )


@dataclass(frozen=True)
class Evaluation:
    """Per-task metrics and losses on one split."""

    metrics: dict[str, dict[str, float]]
    losses: dict[str, float]

    def loss(self, tasks: Sequence[TaskSpec]) -> float:
        """The weighted validation objective used for early stopping."""
        return sum(t.weight * self.losses[t.name] for t in tasks)

    def primary(self, tasks: Sequence[TaskSpec]) -> dict[str, float]:
        return {t.name: self.metrics[t.name][t.primary_metric] for t in tasks}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: MultiTaskData,
    split: SharedSplit | PerTaskSplit,
    device: torch.device,
    amp: bool = False,
) -> Evaluation:
    """Metrics of every task (in the user's units) and losses (in the model's); shared data
    is scored in one pass that serves all tasks."""
    was_training = model.training
    model.eval()
    tasks = data.tasks
    outs: dict[str, list[Tensor]] = {t.name: [] for t in tasks}
    ys: dict[str, list[Tensor]] = {t.name: [] for t in tasks}
    with autocast(device, amp):
        if isinstance(split, PerTaskSplit):
            for i, t in enumerate(tasks):
                for start in range(0, split.x[i].shape[0], EVAL_BATCH):
                    x = split.x[i][start : start + EVAL_BATCH].to(device, non_blocking=True)
                    outs[t.name].append(model(x.unsqueeze(0), tasks=[t.name])[t.name].float())
                    ys[t.name].append(split.y[i][start : start + EVAL_BATCH])
        else:
            for x, y in shared_batches(split, EVAL_BATCH, shuffle=False):
                out = model(x.to(device, non_blocking=True))
                for i, t in enumerate(tasks):
                    outs[t.name].append(out[t.name].float())
                    ys[t.name].append(y[:, i])
    metrics, losses = {}, {}
    scales = data.targets or {}
    for t in tasks:
        out, y = torch.cat(outs[t.name]).cpu(), torch.cat(ys[t.name])
        losses[t.name] = float(t.loss(out, y))  # the model's units
        scale = scales.get(t.name)
        if scale is not None:  # metrics in the user's units (nas_mtl.data.targets)
            out, y = scale.to_user(out), scale.to_user(y)
        metrics[t.name] = t.evaluate(out, y)
    model.train(was_training)
    return Evaluation(metrics=metrics, losses=losses)


def constant_output(task: TaskSpec, train_y: Tensor) -> Tensor:
    """The best input-free prediction from the training labels: mean, prior logit, log prior."""
    y = train_y[~torch.isnan(train_y)].double()
    if task.type == "regression":
        return y.mean().reshape(1)
    if task.type == "binary":
        p = y.mean().clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p)).reshape(1)
    counts = torch.bincount(y.long(), minlength=task.out_dim).double() + 1.0  # add-one prior
    return torch.log(counts / counts.sum())


def constant_objective(data: MultiTaskData) -> float:
    """Σ_t w_t L_t on validation of the constant predictor: what a trained model must beat."""
    total = 0.0
    for i, task in enumerate(data.tasks):
        y = task_labels(data.val, i)
        out = constant_output(task, task_labels(data.train, i)).float()
        total += task.weight * float(task.loss(out.expand(len(y), task.out_dim), y))
    return total
