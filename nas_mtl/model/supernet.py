"""Compile a routing graph into one fast ``nn.Module``.

The graph is cut into *blocks*: the destinations of one layer that share an input shape, a
transform and a gate kind. A block runs as

    G = gate(ctx)                                  # (S_g, B_g, J, C) edge values
    V = mix(U, G)                                  # (S, B, C, *in): v_c = Σ_j G_jc T_jc(u_j)
    out = component_group(V)                       # one batched matmul / grouped conv per kind

with no Python loop over edges. An SNR-Trans layer is one block matmul ``U_cat @ (W ⊙ G)``
with the gate mask broadcast over the (d_in × d_out) blocks; identity edges are one
``(J → C)`` matmul over the stacked sources.

Tensors are batch-major ``(S, B, C, *feat)``: S task streams (1 when every task sees the same
input and no gate so far is task-specific), B examples, C components of a group. Both data
regimes fit: a shared batch ``x (B, *in)`` produces every task's output, a per-task batch
``x (S, B, *in)`` (stream s = ``tasks[s]``) produces each task's output from its own examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import networkx as nx
import torch
from torch import Tensor, nn

from nas_mtl.errors import GraphError
from nas_mtl.model.blocks import Block, component_signature, gate_signature, prunes_streams
from nas_mtl.model.components import BatchedTowers, Shape
from nas_mtl.model.gates import Gate, GateContext
from nas_mtl.model.graph import INPUT, in_shape, node_layers, validate
from nas_mtl.model.index_cache import IndexCache
from nas_mtl.model.schedules import SchedulePosition


def _runs(plan: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(group, column) pairs as (group, first, end) runs of consecutive columns.

    Each run is one slice of its group's output; in backward every slice allocates and fills
    a zero tensor of the group's full size, so one slice per run rather than per column
    keeps a pruned model's gather cheap (``docs/speed.md``).
    """
    runs: list[tuple[int, int, int]] = []
    for p, k in plan:
        if runs and runs[-1][0] == p != -1 and runs[-1][2] == k:
            runs[-1] = (p, runs[-1][1], k + 1)
        else:
            runs.append((p, k, k + 1))
    return runs


class Supernet(nn.Module):
    """A routing graph as a module: ``forward(x, tasks) -> {task: output (B, out_dim)}``.

    Parameter groups (nanoGPT-style explicit rule): *architecture* parameters are the gate
    variables that encode the discrete structure (hard-concrete log α, Gumbel allocation
    logits) and get their own optimizer and learning rate; everything else, the MMoE softmax
    gate networks included (a derived model keeps them), is a *weight*.
    """

    def __init__(self, graph: nx.DiGraph, input_regime: str = "shared") -> None:
        super().__init__()
        self.graph = graph
        shapes = validate(graph)
        self.shapes = shapes
        self.tasks: tuple[str, ...] = tuple(graph.graph["tasks"])
        self.input_shape: Shape = tuple(graph.nodes[INPUT]["shape"])
        self.out_dims = {t: int(graph.graph["out_dims"][t]) for t in self.tasks}
        input_dim = int(torch.tensor(self.input_shape).prod())
        layers: dict[int, list[str]] = {}
        order = {n: i for i, n in enumerate(nx.topological_sort(graph))}
        layer_of = node_layers(graph)
        for n in graph.nodes:
            if n != INPUT:
                layers.setdefault(layer_of[n], []).append(n)
        blocks: list[Block] = []
        position: dict[str, int] = {INPUT: 0}  # order in which outputs are produced
        for layer in sorted(layers):
            parts: dict[str, list[str]] = {}
            for n in sorted(layers[layer], key=order.__getitem__):
                e = graph.edges[next(iter(graph.in_edges(n)))]
                key = json.dumps(
                    [
                        graph.nodes[n]["role"],
                        list(in_shape(graph, n, shapes)),
                        e["transform"],
                        gate_signature(e["gate"]),
                    ]
                )
                parts.setdefault(key, []).append(n)
            for dst in parts.values():
                if graph.nodes[dst[0]]["role"] == "head":
                    dst = sorted(dst, key=lambda h: self.tasks.index(graph.nodes[h]["task"]))
                else:  # stable sort keeps same-signature components contiguous
                    by_usage = prunes_streams(graph, input_regime)
                    sigs: dict[str, int] = {}
                    for n in dst:
                        sigs.setdefault(component_signature(graph.nodes[n], by_usage), len(sigs))
                    dst = sorted(
                        dst, key=lambda n: sigs[component_signature(graph.nodes[n], by_usage)]
                    )
                src = sorted(
                    {u for v in dst for u in graph.predecessors(v)}, key=position.__getitem__
                )
                streams = prunes_streams(graph, input_regime)
                blocks.append(Block(graph, src, dst, shapes, self.tasks, input_dim, streams))
                for n in dst:
                    position[n] = len(position)
        self.blocks = nn.ModuleList(blocks)
        self._plan_sources()
        self._index = IndexCache()  # stream and head indices, built once per device

    def _plan_sources(self) -> None:
        """Where each block's sources live: (output group, column); -1 is the input.

        When a block reads exactly one whole group in order (every seed space does), the
        group's tensor is used as it is; otherwise the columns are gathered and concatenated.
        """
        loc: dict[str, tuple[int, int]] = {INPUT: (-1, 0)}
        sizes: list[int] = []
        self._src_plan: list[list[tuple[int, int, int]]] = []
        self._src_whole: list[int | None] = []
        for block in self.blocks:
            plan = [loc[u] for u in block.src]
            producers = {p for p, _ in plan}
            whole = None
            if len(producers) == 1:
                p = producers.pop()
                if p == -1 or [k for _, k in plan] == list(range(sizes[p])):
                    whole = p
            self._src_plan.append(_runs(plan))
            self._src_whole.append(whole)
            if not block.is_head:
                for grp in block.groups:
                    for k, n in enumerate(grp.nodes):
                        loc[n] = (len(sizes), k)
                    sizes.append(grp.hi - grp.lo)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        tasks = list(self.tasks if tasks is None else tasks)
        for t in tasks:
            if t not in self.out_dims:
                raise GraphError(f"unknown task '{t}'; this model has {list(self.tasks)}")
        nd = len(self.input_shape)
        if x.dim() == nd + 1:  # shared input: (B, *in)
            x = x.unsqueeze(0)
        elif x.dim() != nd + 2 or x.shape[0] != len(tasks):
            raise GraphError(
                f"expected input (B, {self.input_shape}) or per-task "
                f"({len(tasks)}, B, {self.input_shape}), got {tuple(x.shape)}"
            )
        if tuple(x.shape[2:]) != self.input_shape:
            raise GraphError(f"input shape {tuple(x.shape[2:])} != graph input {self.input_shape}")
        index = {t: i for i, t in enumerate(self.tasks)}
        stream_ids = [index[t] for t in tasks]
        stream_tasks = self._index(stream_ids, x.device)
        ctx = GateContext(stream_tasks=stream_tasks, x_flat=x.reshape(x.shape[0], x.shape[1], -1))
        inp = x.unsqueeze(2)  # (S, B, 1, *in)
        outs: list[Tensor] = []
        results: dict[str, Tensor] = {}
        for b, block in enumerate(self.blocks):
            whole = self._src_whole[b]
            if whole is not None:
                U = inp if whole == -1 else outs[whole]
            else:
                parts = [
                    inp if p == -1 else outs[p][:, :, lo:hi] for p, lo, hi in self._src_plan[b]
                ]
                S = max(t.shape[0] for t in parts)
                U = torch.cat([t.expand(S, *t.shape[1:]) for t in parts], dim=2)
            G = block.gate(ctx)
            if block.is_head:
                results.update(self._run_heads(block, U, G, tasks, stream_tasks))
            else:
                static = G.shape[0] == 1 and G.shape[1] == 1  # mix fuses the bias then
                outs.extend(block.run_components(block.mix(U, G, None), stream_ids, static))
        return {t: results[t] for t in tasks}

    def _run_heads(
        self, block: Block, U: Tensor, G: Tensor, tasks: list[str], stream_tasks: Tensor
    ) -> dict[str, Tensor]:
        head_tasks = block.head_tasks
        wanted = [c for c, t in enumerate(head_tasks) if t in tasks]
        if not wanted:
            return {}
        every = wanted == list(range(len(head_tasks)))
        cols = None if every else self._index(wanted, U.device)
        # one input for every head (Shared-Bottom): the towers read it unexpanded, (B, 1, d)
        one_input = U.dim() == 4 and U.shape[0] == U.shape[2] == 1
        shared = one_input and block.gate.static_ones and not block.linear
        streams = [tasks.index(head_tasks[c]) for c in wanted]
        per_stream = U.shape[0] > 1 or G.shape[0] > 1
        if per_stream and not block.linear and G.shape[1] == 1:
            V = block.mix_streams(U, G, wanted, streams)  # each head on its task's stream
        else:
            V = U if shared else block.mix(U, G, cols)  # (S, B, k, *in)
            if V.shape[0] > 1:  # each head reads its own task's stream
                rows = self._index(range(len(wanted)), U.device)
                V = V.permute(2, 0, 1, *range(3, V.dim()))[rows, self._index(streams, U.device)]
                V = V.transpose(0, 1)  # (B, k, *in)
            else:
                V = V.squeeze(0)  # a view: its backward fills no zeros, unlike V[0]
        if V.dim() > 3:  # image features: global average pooling before the tower
            V = V.mean(dim=tuple(range(3, V.dim())))
        results = {}
        for grp, towers in zip(block.groups, block.modules_, strict=True):
            sel = [i for i, c in enumerate(wanted) if grp.lo <= c < grp.hi]
            if not sel:
                continue
            whole = every and len(block.groups) == 1
            heads = [wanted[i] - grp.lo for i in sel]
            local = self._index(heads, U.device)
            part = V if whole or shared else V.index_select(1, self._index(sel, U.device))
            y = towers(part, None if whole else local)  # (B, k_g, max_out)
            for i, li in zip(sel, heads, strict=True):
                t = head_tasks[wanted[i]]
                results[t] = y[:, sel.index(i), : towers.out_dims[li]]
        return results

    def count_parameters(self) -> int:
        """Trainable model weights: no gate variables, no tower padding (matches cost.py)."""
        arch = sum(p.numel() for p in self.arch_parameters())
        padding = sum(
            m.padding_params()
            for blk in self.blocks
            for m in blk.modules_
            if isinstance(m, BatchedTowers)
        )
        return sum(p.numel() for p in self.parameters()) - arch - padding

    # ------------------------------------------------------------------ gates
    def gate_modules(self) -> Iterator[tuple[Block, Gate]]:
        for block in self.blocks:
            yield block, block.gate

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for blk in self.blocks if blk.gate.learned for p in blk.gate.parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_position(self, pos: SchedulePosition) -> None:
        for blk in self.blocks:
            blk.gate.set_position(pos)

    def penalties(self) -> dict[str, Tensor]:
        """The gates' regularizers in the papers' summed form, by name ("l0", "budget")."""
        terms: dict[str, Tensor] = {}
        for blk in self.blocks:
            if blk.gate.penalty_name is not None:
                value = blk.gate.penalty_terms()[0]
                terms[blk.gate.penalty_name] = terms.get(blk.gate.penalty_name, 0.0) + value
        return terms


def learned_gates(net: Supernet) -> list[tuple[int, Block, Gate]]:
    """The blocks whose gates carry architecture variables (what search learns)."""
    return [(i, blk, blk.gate) for i, blk in enumerate(net.blocks) if blk.gate.learned]


def hold_gates_open(net: Supernet, hold: bool) -> None:
    for blk in net.blocks:
        blk.gate.hold_open = hold
