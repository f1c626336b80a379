"""The seam between the one training loop and what a stage adds to it.

:func:`nas_mtl.stages.training.train` fits the weights and nothing else; the search plugs its
architecture step (:class:`nas_mtl.stages.search.ArchitectureStep`) in through
:class:`TrainingHooks`: the gate optimizer, penalties and schedules, the gradient-affinity probe
on the step's batch, and its own rule for which epochs may be selected and when early stopping
may act (:class:`EpochVerdict`; docs/search.md, "Selection" and "Gradient affinity"). The base
hooks do nothing, which is plain retraining. The contract lives apart from the loop so that it
reads on its own, without the loop's bookkeeping (checkpoints, resuming, ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nas_mtl.data import PerTaskSplit, SharedSplit
from nas_mtl.stages.evaluation import Evaluation


@dataclass(frozen=True)
class EpochVerdict:
    """How an epoch counts for selection: its objective, whether it may be chosen, log fields."""

    objective: float
    eligible: bool = True
    record: Mapping[str, Any] = field(default_factory=dict)
    may_stop: bool = True  # False: early stopping waits (a search still annealing its gates)


class TrainingHooks:
    """What a training loop adds beyond fitting weights; the search's architecture step.

    The base class does nothing, which is plain training (retrain): every epoch is eligible
    and selected on its weighted validation loss.
    """

    def parameters_excluded(self) -> list[nn.Parameter]:
        """Parameters the weight optimizer must not touch (the gate variables)."""
        return []

    def start_epoch(self, net: nn.Module, epoch: int, steps_per_epoch: int) -> None:
        """Called before an epoch's first step."""

    def before_step(self, net: nn.Module, step: int) -> None:
        """Called before each forward pass (schedules)."""

    def inspect_batch(
        self, net: nn.Module, step: int, task_losses: Callable[[], dict[str, Tensor]]
    ) -> None:
        """Called after :meth:`before_step`, before the step's forward pass.

        ``task_losses()`` scores this step's batch per task with the current weights: a probe
        (the search's gradient affinity) reads the batch the step trains on. A hook that
        uses it must leave weights, optimizers and the RNG stream as it found them.
        """

    def extra_loss(self, net: nn.Module) -> Tensor | None:
        """Added to the loss that the weight step differentiates; None for nothing."""
        return None

    def zero_grad(self) -> None:
        """Clear the hook's own gradients before the backward pass."""

    def after_step(self, net: nn.Module, batch_loss: Callable[[Any], Tensor]) -> None:
        """Called after the weight step; ``batch_loss(batch)`` scores another batch."""

    def training_split(
        self, split: SharedSplit | PerTaskSplit, gen: torch.Generator
    ) -> SharedSplit | PerTaskSplit:
        """The rows the weights train on (alternating search keeps half for the gates)."""
        return split

    def end_epoch(
        self, net: nn.Module, ev: Evaluation, device: torch.device
    ) -> EpochVerdict | None:
        """How the epoch counts for selection; None: its weighted validation loss."""
        return None

    def state(self) -> dict[str, Any]:
        """Optimizer and controller states for checkpoints."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (resuming from a checkpoint)."""
