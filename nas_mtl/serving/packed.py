"""A trained pruned model as a few dense matmuls per layer, for serving (docs/serving.md).

``pack(net)`` reads what a retrained model computes (:mod:`nas_mtl.serving.trace`) and folds
each layer's kept edges, their fixed gate values and the components' weights into dense
blocks (:mod:`nas_mtl.serving.planner`), so that latency follows the multiply-adds the
architecture keeps rather than the number of edges. The packed model computes the pruned
model's eval outputs (to float rounding) and nothing else: no gates, no edge loop, no gather.

Example:
    >>> import torch
    >>> from nas_mtl.model.spaces import build_space
    >>> from nas_mtl.model.supernet import Supernet
    >>> net = Supernet(build_space("snr_trans", (6,), {"a": 1, "b": 2})).eval()
    >>> packed = pack(net)
    >>> x = torch.randn(4, 6)
    >>> bool(torch.allclose(packed(x)["b"], net(x)["b"], atol=1e-5))
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor, nn

from nas_mtl.errors import ConfigError, GraphError
from nas_mtl.model.supernet import Supernet
from nas_mtl.serving.instances import Trace
from nas_mtl.serving.planner import Planner
from nas_mtl.serving.trace import NotPackable, restrict, trace

log = logging.getLogger(__name__)

DEFAULT_BATCH_HINT = 64  # rows per call the packing is tuned for; any batch size works


class PackedModel(nn.Module):
    """``forward(x (B, D)) -> {task: (B, out_dim)}`` through dense steps over packed slabs."""

    def __init__(
        self,
        steps: Sequence[nn.Module],
        outputs: dict[str, tuple[int, int, int, int]],
        input_dim: int,
        choices: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.tasks = tuple(outputs)
        self.input_dim = input_dim
        self._outputs = [(t, *outputs[t]) for t in self.tasks]  # (task, slab, stream, lo, hi)
        self.choices = list(choices)  # what each block became (fold / mix), for reports

    @classmethod
    def from_trace(cls, tr: Trace, batch_hint: int = DEFAULT_BATCH_HINT) -> PackedModel:
        if len(tr.inputs) != 1:
            raise GraphError("a packed model reads one input stream; split per-task inputs first")
        planner = Planner(tr, batch_hint)
        placed = planner.run()
        outputs = {}
        for t in tr.tasks:  # the requested order
            slab, k, lo, hi = placed[t]
            outputs[t] = (slab, -1 if len(planner.labels[slab]) == 1 else k, lo, hi)
        return cls(planner.ops, outputs, tr.input_dim, planner.choices)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise GraphError(f"expected input (B, {self.input_dim}), got {tuple(x.shape)}")
        env = [x]
        for step in self.steps:  # plain calls: no module hooks on the serving path
            env.append(step.forward(env))
        out = {}
        for t, slab, k, lo, hi in self._outputs:
            y = env[slab] if k < 0 else env[slab][k]
            out[t] = y if lo == 0 and hi == y.shape[-1] else y[:, lo:hi]
        return out

    def macs(self) -> int:
        """Multiply-adds per example of every step, zero blocks and padding included."""
        return sum(int(step.macs()) for step in self.steps)

    def n_calls(self) -> int:
        return len(self.steps)


class PackedPerTask(nn.Module):
    """Per-task inputs ``x (T, B, D)``: each task's packed chain on its own rows.

    Streams never mix in the supernet, so task t's output depends on ``x[t]`` alone; each
    chain holds only what its task computes.
    """

    def __init__(self, chains: dict[str, PackedModel]) -> None:
        super().__init__()
        self.tasks = tuple(chains)
        self.chains = nn.ModuleList(chains[t] for t in self.tasks)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 3 or x.shape[0] != len(self.tasks):
            raise GraphError(
                f"expected per-task input ({len(self.tasks)}, B, D), got {tuple(x.shape)}"
            )
        return {
            t: chain(x[i])[t]
            for i, (t, chain) in enumerate(zip(self.tasks, self.chains, strict=True))
        }

    def macs(self) -> int:
        return sum(c.macs() for c in self.chains)


def pack(
    net: Supernet,
    tasks: Sequence[str] | None = None,
    *,
    per_task_inputs: bool = False,
    batch_hint: int = DEFAULT_BATCH_HINT,
) -> PackedModel | PackedPerTask:
    """The packed model of ``net`` (eval mode) for ``tasks`` (default: all, in model order).

    ``batch_hint`` only steers the choice between equivalent layouts (docs/serving.md,
    "Costs"). Raises :class:`NotPackable` for what is not folded (image inputs); use
    :func:`serving_model` to fall back to the model itself.
    """
    if isinstance(batch_hint, bool) or not isinstance(batch_hint, int) or batch_hint < 1:
        raise ConfigError(f"batch_hint must be an integer >= 1, got batch_hint={batch_hint!r}")
    param = next(net.parameters(), None)
    tr = trace(net, tasks, per_task_inputs)
    if per_task_inputs:
        chains = {
            t: PackedModel.from_trace(restrict(tr, s), batch_hint) for s, t in enumerate(tr.tasks)
        }
        model: PackedModel | PackedPerTask = PackedPerTask(chains)
    else:
        model = PackedModel.from_trace(tr, batch_hint)
    return model.to(param.device) if param is not None else model


class ServedAsIs(nn.Module):
    """The pruned model itself behind the packed model's interface (the fallback)."""

    def __init__(self, net: Supernet, tasks: Sequence[str] | None, reason: str) -> None:
        super().__init__()
        self.net = net.eval()
        self.tasks = tuple(net.tasks if tasks is None else tasks)
        self.reason = reason

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.net(x, list(self.tasks))


def serving_model(
    net: Supernet,
    tasks: Sequence[str] | None = None,
    *,
    batch_hint: int = DEFAULT_BATCH_HINT,
) -> PackedModel | ServedAsIs:
    """:func:`pack`, or the model itself with the reason logged when it cannot be packed."""
    try:
        model = pack(net, tasks, batch_hint=batch_hint)
    except NotPackable as e:
        log.info("serving the pruned model as it is: %s", e)
        return ServedAsIs(net, tasks, str(e))
    assert isinstance(model, PackedModel)
    return model
