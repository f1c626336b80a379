"""A serving model whose regression outputs are in the user's units, for exported programs.

Runs train on standardized regression targets (``nas_mtl.data.targets``); an exported model is
used without nas-mtl, so it must answer in the units of the labels it was trained on. The
affine map ``mean + std · output`` is kept as buffers and becomes two ops in the exported
graph. ``nas-mtl predict`` applies the same map in float64 instead (its CSV keeps 9 digits).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from nas_mtl.data.targets import TargetScale


class InUserUnits(nn.Module):
    """``model``'s outputs, each regression task's mapped by its :class:`TargetScale`."""

    def __init__(self, model: nn.Module, targets: Mapping[str, TargetScale]) -> None:
        super().__init__()
        self.model = model
        self.scaled = tuple(targets)
        self.register_buffer("means", torch.tensor([targets[t].mean for t in self.scaled]))
        self.register_buffer("stds", torch.tensor([targets[t].std for t in self.scaled]))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = dict(self.model(x))
        for k, task in enumerate(self.scaled):
            if task in out:
                out[task] = torch.addcmul(self.means[k], out[task], self.stds[k])
        return out
