"""Gates: the learnable coding variables on routing-graph edges.

One gate module serves one *block* (the edges from J source nodes into C destination nodes of
one layer that share a gate kind) and returns every edge value as one tensor
``G`` of shape ``(S_g, B_g, J, C)``: ``S_g`` is 1 for gates shared by all tasks or the number
of task streams, ``B_g`` is 1 unless the gate depends on the example. Missing edges are 0.

All gates share one small interface, so the search, derive and cost code never ask what kind
of gate they hold:
    learned             True when the gate carries architecture variables the search learns
    forward(ctx)        sample in training, deterministic value in eval
    penalty_terms()     (sum, count) of the gate's own regularizer, named by ``penalty_name``
    set_position(pos)   follow the search's temperature schedule (``nas_mtl.model.schedules``)
    temperature         the current temperature, or None for gates without one
    open_probability()  P(edge open), (T or 1, J, C), differentiable
    decisions()         the discrete architecture, bool (T or 1, J, C)

The math is in ``docs/search.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nas_mtl.errors import GraphError
from nas_mtl.model.graph import head_id
from nas_mtl.model.schedules import SchedulePosition
from nas_mtl.registry import Registry


@dataclass(frozen=True)
class BlockEdges:
    """What a gate module needs to know about the edges it gates."""

    src: tuple[str, ...]  # J source nodes
    dst: tuple[str, ...]  # C destination nodes
    mask: Tensor  # (J, C) bool: edge exists
    groups: tuple[tuple[str | None, ...], ...]  # (J, C) tying ids; None where no edge
    params: Mapping[str, Any]
    scope: str  # "shared" | "task"
    tasks: tuple[str, ...]  # every task of the graph, in order
    input_dim: int  # flattened input size, for input-conditioned gates


@dataclass
class GateContext:
    """Per-forward information: which task each stream is, and the (flat) network input."""

    stream_tasks: Tensor  # (S,) long: task index of each stream (all tasks if input is shared)
    x_flat: Tensor | None = None  # (S_x, B, input_dim)


class Gate(nn.Module):
    """Base class; subclasses set ``PARAMS`` (allowed params with defaults)."""

    PARAMS: Mapping[str, Any] = {}
    penalty_name: str | None = None  # the study's weight for penalty_terms(): "<name>_weight"
    learned = False  # carries architecture variables (own optimizer, searched, derived)

    def __init__(self, edges: BlockEdges) -> None:
        super().__init__()
        unknown = set(edges.params) - set(self.PARAMS)
        if unknown:
            raise GraphError(
                f"gate kind '{self.kind}' has no parameter(s) {sorted(unknown)}; "
                f"allowed: {sorted(self.PARAMS)}"
            )
        self.p = {**self.PARAMS, **edges.params}
        self.scope = edges.scope
        self.n_tasks = len(edges.tasks)
        self.register_buffer("mask", edges.mask.float(), persistent=False)
        self.hold_open = False  # warm-up: every edge open, gate variables untouched
        self.forced: Tensor | None = None  # (T or 1, J, C) bool: evaluate a sampled architecture
        # (T, T) row-stochastic: derive averages per-task variables over task groups
        # (docs/search.md, "Group-consistent derive"); None: each task decides alone
        self.task_pool: Tensor | None = None
        # a shared gate's edges into task heads are per-task variables too: the task whose
        # head each destination is (-1: not a head)
        head_task = {head_id(t): i for i, t in enumerate(edges.tasks)}
        self.register_buffer(
            "dst_task",
            torch.tensor([head_task.get(v, -1) for v in edges.dst], dtype=torch.long),
            persistent=False,
        )

    kind = "gate"
    normalize = False  # destinations average their open inputs (Gumbel-Matrix)

    def _binary(self, on: Tensor, ctx: GateContext) -> Tensor:
        """Gate values for given open/closed edges (rows: 1 shared or T per task)."""
        if on.shape[0] > 1:
            on = _task_select(on, ctx)
        g = on.float() * self.mask
        if self.normalize:
            g = g / g.sum(dim=1, keepdim=True).clamp(min=1.0)
        return g.unsqueeze(1)

    def override(self, ctx: GateContext) -> Tensor | None:
        """Values when warm-up or a forced architecture replaces the learned gates."""
        if self.forced is not None:
            return self._binary(self.forced, ctx)
        if self.hold_open:
            return self._binary(
                self.mask.unsqueeze(0).expand(self.n_tasks, *self.mask.shape)
                if self.scope == "task"
                else self.mask.unsqueeze(0),
                ctx,
            )
        return None

    @property
    def per_task_variables(self) -> bool:
        """Whether some variable decides for one task only: derive can pool over task groups."""
        return self.scope == "task" or bool((self.dst_task >= 0).any())

    def _pooled(self, values: Tensor, index: Tensor | None = None) -> Tensor:
        """Gate variables averaged over each task's group while derive pools tasks.

        ``values`` (rows, n_vars): a per-task gate's rows (T) are averaged over the group; a
        shared gate's variables of edges into task heads (``index`` maps edges to variables)
        are averaged over the heads of the group, source by source. Only what derive reads
        (decisions, open probabilities, samples) is pooled; training and its penalties always
        see each task's own variables.
        """
        pool = self.task_pool
        if pool is None:
            return values
        if values.shape[0] > 1:
            return torch.tensordot(pool.to(values), values, dims=1)
        if index is None or not bool((self.dst_task >= 0).any()):
            return values
        return values @ self._head_var_pool(pool, index).to(values).T

    def _head_var_pool(self, pool: Tensor, index: Tensor) -> Tensor:
        """(n_vars, n_vars): variable (j → head t) averages over (j → head t') for t' in t's
        group; a variable not of one edge into a head maps to itself."""
        n_vars = int(index.max()) + 1 if index.numel() else 0
        out = torch.eye(n_vars)
        edges_of: dict[int, list[tuple[int, int]]] = {}
        for j, c in torch.nonzero(self.mask > 0).tolist():
            edges_of.setdefault(int(index[j, c]), []).append((j, c))
        var_at = {es[0]: v for v, es in edges_of.items() if len(es) == 1}
        dst_task = self.dst_task.tolist()
        for (j, c), v in var_at.items():
            t = dst_task[c]
            if t < 0:
                continue
            row = {
                var_at[(j, c2)]: float(pool[t, dst_task[c2]])
                for c2 in range(len(dst_task))
                if dst_task[c2] >= 0 and (j, c2) in var_at and pool[t, dst_task[c2]] > 0
            }
            total = sum(row.values())
            out[v] = 0.0
            for v2, w in row.items():
                out[v, v2] = w / total
        return out

    def sample_decisions(
        self, generator: torch.Generator | None = None, rate: float | None = None
    ) -> Tensor:
        """One architecture drawn from the gate distribution, bool (T or 1, J, C).

        Deterministic gates return their decisions; learned gates override this and draw one
        Bernoulli per *variable*, so tied edges stay tied. ``rate`` replaces the learned
        probabilities by one constant: the uniform draws of the random-architecture control.
        """
        return self.decisions()

    @property
    def static_ones(self) -> bool:
        """True when every existing edge is a constant 1 (lets the supernet skip the multiply)."""
        return False

    def set_position(self, pos: SchedulePosition) -> None:
        """Temperature schedules follow the search's position; most gates ignore it."""

    @property
    def temperature(self) -> float | None:
        return None

    def forward(self, ctx: GateContext) -> Tensor:
        raise NotImplementedError

    def penalty_terms(self) -> tuple[Tensor, int]:
        """The gate's own regularizer as (sum of terms, number of terms).

        The search adds ``weight · sum`` (the papers' form) or ``weight · Σ sums / Σ counts``
        over all gates with the same ``penalty_name`` (the normalized form).
        """
        return self.mask.new_zeros(()), 0

    def penalty(self) -> Tensor:
        """The papers' (summed) form of the regularizer."""
        return self.penalty_terms()[0]

    def open_probability(self) -> Tensor:
        return self.mask.unsqueeze(0)

    def decisions(self) -> Tensor:
        return self.mask.unsqueeze(0).bool()

    def shift_open_(self, c: Tensor | float) -> None:
        """Lower the logits that open edges by ``c`` (learned gates; the target's projection)."""
        raise NotImplementedError(f"gate kind '{self.kind}' has no open logits to shift")

    def entropy(self) -> Tensor:
        """Mean binary entropy of P(open) over existing edges (nats); 0 for certain gates."""
        p = self.open_probability().clamp(1e-6, 1 - 1e-6)
        h = -(p * p.log() + (1 - p) * (1 - p).log()) * self.mask
        return h.sum() / (self.mask.sum() * p.shape[0]).clamp(min=1)


GATES: Registry[type[Gate]] = Registry("gate kind")


def _var_index(edges: BlockEdges) -> tuple[Tensor, int]:
    """Map each edge to a variable id (edges with the same group share one variable)."""
    ids: dict[str, int] = {}
    index = torch.full(edges.mask.shape, -1, dtype=torch.long)
    for j, row in enumerate(edges.groups):
        for c, grp in enumerate(row):
            if grp is not None:
                index[j, c] = ids.setdefault(grp, len(ids))
    return index, len(ids)


def _task_select(values: Tensor, ctx: GateContext) -> Tensor:
    """Rows of a per-task tensor (T, ...) for the streams of this forward."""
    return values.index_select(0, ctx.stream_tasks)


@GATES.register("fixed", "constant gate values (0/1 or weights); baselines and derived models")
class FixedGate(Gate):
    """Constant edge values: ``value`` for all tasks, or ``values`` {task: v} with task scope.

    ``normalize`` divides each destination's values by max(sum, 1), the Gumbel-Matrix
    "average of active components" rule, so a derived architecture computes the same function.
    """

    kind = "fixed"
    PARAMS = {"value": 1.0, "values": None, "normalize": False, "_grid": None}

    def __init__(self, edges: BlockEdges) -> None:
        super().__init__(edges)
        J, C = edges.mask.shape
        if self.scope == "task":
            per_task = torch.zeros(self.n_tasks, J, C)
            # each edge may carry its own per-task values in its gate params; the block builder
            # passes them as a (J, C) grid of dicts under the private key "_grid"
            grid = self.p.get("_grid")
            for j in range(J):
                for c in range(C):
                    if not edges.mask[j, c]:
                        continue
                    vals = grid[j][c] if grid is not None else self.p["values"]
                    if not isinstance(vals, Mapping):
                        raise GraphError("a task-scoped fixed gate needs 'values' = {task: value}")
                    for t, task in enumerate(edges.tasks):
                        per_task[t, j, c] = float(vals.get(task, 0.0))
            values = per_task
        else:
            grid = self.p.get("_grid")
            values = torch.zeros(1, J, C)
            for j in range(J):
                for c in range(C):
                    if edges.mask[j, c]:
                        v = grid[j][c] if grid is not None else self.p["value"]
                        values[0, j, c] = float(v)
        if self.p["normalize"]:
            values = values / values.sum(dim=1, keepdim=True).clamp(min=1.0)
        self.register_buffer("values", values, persistent=False)  # (T or 1, J, C)
        # decided once, on the host: torch.equal of GPU tensors waits for the device, and
        # every forward asks (docs/speed.md, "Host syncs")
        self._static_ones = self.scope == "shared" and bool(torch.equal(values[0], self.mask))

    @property
    def static_ones(self) -> bool:
        return self._static_ones

    def forward(self, ctx: GateContext) -> Tensor:
        v = self.values if self.scope == "shared" else _task_select(self.values, ctx)
        return v.unsqueeze(1)  # (S_g, 1, J, C)

    def open_probability(self) -> Tensor:
        return (self.values != 0).float()

    def decisions(self) -> Tensor:
        return self.values != 0


@GATES.register("softmax", "MMoE/OMoE input-conditioned softmax gates over incoming edges")
class SoftmaxGate(Gate):
    """g_k(x) = softmax(W_gk x) over the edges into each destination (MMoE, Ma et al. 2018).

    Task scope: one gate network per destination (MMoE); shared scope: one network serves all
    destinations (OMoE). Gate networks are model weights that a derived model keeps.
    """

    kind = "softmax"
    PARAMS = {"condition": "input"}

    def __init__(self, edges: BlockEdges) -> None:
        super().__init__(edges)
        if self.p["condition"] != "input":
            raise GraphError(
                "softmax gates are conditioned on the network input: condition = 'input'"
            )
        J, C = edges.mask.shape
        self.J, self.C = J, C
        self.n_nets = C if self.scope == "task" else 1
        self.net = nn.Linear(edges.input_dim, self.n_nets * J)
        neg = torch.where(edges.mask, 0.0, float("-inf"))
        self.register_buffer("neg_mask", neg, persistent=False)  # (J, C)

    def forward(self, ctx: GateContext) -> Tensor:
        assert ctx.x_flat is not None
        S, B, _ = ctx.x_flat.shape
        logits = self.net(ctx.x_flat).view(S, B, self.n_nets, self.J).transpose(-1, -2)
        logits = logits.expand(S, B, self.J, self.C) + self.neg_mask  # (S, B, J, C)
        return logits.softmax(dim=2) * self.mask

    def open_probability(self) -> Tensor:
        return self.mask.unsqueeze(0)


def edges_for_block(
    src: Sequence[str],
    dst: Sequence[str],
    edge_data: Mapping[tuple[str, str], Any],
    tasks: Sequence[str],
    input_dim: int,
) -> BlockEdges:
    """Collect the gate description of every edge src[j] -> dst[c] into a BlockEdges."""
    J, C = len(src), len(dst)
    mask = torch.zeros(J, C, dtype=torch.bool)
    groups: list[list[str | None]] = [[None] * C for _ in range(J)]
    first: Mapping[str, Any] | None = None
    for j, u in enumerate(src):
        for c, v in enumerate(dst):
            data = edge_data.get((u, v))
            if data is None:
                continue
            mask[j, c] = True
            gate = data["gate"]
            first = first or gate
            default = u if gate["kind"] == "gumbel" else f"{u}->{v}"
            groups[j][c] = gate.get("group") or default
    assert first is not None
    params = dict(first.get("params", {}))
    if first["kind"] == "fixed":
        key = "values" if first["scope"] == "task" else "value"
        grid = [
            [
                (
                    edge_data[(u, v)]["gate"]["params"].get(key, 1.0 if key == "value" else None)
                    if mask[j, c]
                    else None
                )
                for c, v in enumerate(dst)
            ]
            for j, u in enumerate(src)
        ]
        params["_grid"] = grid
    return BlockEdges(
        src=tuple(src),
        dst=tuple(dst),
        mask=mask,
        groups=tuple(tuple(r) for r in groups),
        params=params,
        scope=first["scope"],
        tasks=tuple(tasks),
        input_dim=input_dim,
    )


# the learned gate kinds register themselves on import; re-exported here for one import path
from nas_mtl.model.gates_learned import (  # noqa: E402
    GumbelGate,
    HardConcreteGate,
    gumbel_temperature,
)

__all__ = [
    "GATES",
    "BlockEdges",
    "FixedGate",
    "Gate",
    "GateContext",
    "GumbelGate",
    "HardConcreteGate",
    "SoftmaxGate",
    "edges_for_block",
    "gumbel_temperature",
]
