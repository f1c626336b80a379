"""A retrained model's output heads start at the constant predictor, so training starts next
to it.

Why: a tower's last layer initialized uniformly in ±1/√fan_in predicts values near 0, while the
labels' mean may be 1000 or a binary task's prior 0.02; a short training then spends its steps
learning the mean and may end worse than a constant prediction (``docs/metrics.md``). Every
head's output bias starts at the constant that the check compares against
(``constant_output``: the training labels' mean for regression, the log prior odds for binary
tasks, the log class priors for multiclass ones), whatever the labels' mean, and its output
weights at ``RETRAIN_WEIGHT_SCALE`` of their usual initialization, so the validation objective
before any step lies well within the 1% band around the constant's that the result check
allows (with the usual weights it lay 1.6-2.7% above it on the built-in synthetic data, so an
untrained or one-step model failed). Not zero: Adam's first steps would then move all of a
head's weights together by about the learning rate each, and the quick start's retrained
no_sharing model ended at test MSE 0.689 against 0.485 (``docs/metrics.md``, "Heads start at
the constant", also for why the search's supernet keeps its usual start).
"""

from __future__ import annotations

import math

import torch

from nas_mtl.data import MultiTaskData
from nas_mtl.data.base import task_labels
from nas_mtl.model.components import BatchedTowers
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.evaluation import constant_output

# the output weights' share of their usual initialization (the module docstring)
RETRAIN_WEIGHT_SCALE = 0.1


@torch.no_grad()
def start_at_constant(
    net: Supernet, data: MultiTaskData, weight_scale: float = RETRAIN_WEIGHT_SCALE
) -> None:
    """Set every head's output bias to its task's constant prediction and multiply its output
    weights by ``weight_scale``."""
    index = {t.name: i for i, t in enumerate(data.tasks)}
    for block in net.blocks:
        if not block.is_head:
            continue
        for group, towers in zip(block.groups, block.modules_, strict=True):
            assert isinstance(towers, BatchedTowers)
            for k, task_name in enumerate(block.head_tasks[group.lo : group.hi]):
                task = data.tasks[index[task_name]]
                constant = constant_output(task, task_labels(data.train, index[task_name]))
                if not all(math.isfinite(v) for v in constant.tolist()):
                    continue  # no training label: the data checks refuse such a task
                towers.out.weight[k].mul_(weight_scale)
                towers.out.bias[k].zero_()  # padded columns stay 0
                towers.out.bias[k, : constant.numel()] = constant.to(towers.out.bias.dtype)
