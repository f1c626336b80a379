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
from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor, nn

from nas_mtl.components import COMPONENTS, BatchedTowers, BiasActivation, Shape
from nas_mtl.errors import GraphError
from nas_mtl.gates import GATES, Gate, GateContext, edges_for_block
from nas_mtl.graph import INPUT, in_shape, validate
from nas_mtl.schedules import SchedulePosition


def _signature(node_data: dict, by_usage: bool = False) -> str:
    """Nodes with equal signatures run as one batched module (towers pad their outputs).

    ``by_usage`` (pruned models with task streams): components are also grouped by the tasks
    that use them, with every single-task component in one group, so that a group runs on
    the streams it serves: its tasks' streams, or for single-task components the "diagonal".
    """
    width = None if node_data["role"] == "head" else node_data["width"]
    key = [node_data["kind"], width, node_data.get("params", {})]
    if by_usage and node_data["role"] == "component":
        users = sorted(node_data["tasks"])
        key.append("single" if len(users) == 1 else users)
    return json.dumps(key, sort_keys=True)


def prunes_streams(g: nx.DiGraph, input_regime: str) -> bool:
    """Whether a derived graph runs task streams: per-task inputs or per-task gates."""
    if not g.graph.get("derived"):
        return False
    task_gates = any(d["gate"]["scope"] == "task" for _, _, d in g.edges(data=True))
    return task_gates or input_regime == "per_task"


def _gate_signature(gate: dict) -> str:
    params = {k: v for k, v in gate.get("params", {}).items() if k not in ("value", "values")}
    return json.dumps([gate["kind"], gate["scope"], params], sort_keys=True)


@dataclass(frozen=True)
class _Group:
    lo: int  # destinations [lo, hi) of the block
    hi: int
    nodes: tuple[str, ...]
    # pruned models with task streams: the task indices that use each component
    usage: tuple[frozenset[int], ...] | None = None


class Block(nn.Module):
    """Destinations of one layer that are mixed by one gate module and one transform."""

    def __init__(
        self,
        g: nx.DiGraph,
        src: list[str],
        dst: list[str],
        shapes: dict[str, Shape],
        tasks: Sequence[str],
        input_dim: int,
        by_tasks: bool = False,
    ) -> None:
        super().__init__()
        self.src, self.dst = src, dst
        first = g.edges[next(iter(g.in_edges(dst[0])))]
        self.linear = first["transform"] == "linear"
        self.is_head = g.nodes[dst[0]]["role"] == "head"
        edge_data = {(u, v): g.edges[u, v] for v in dst for u in g.predecessors(v)}
        edges = edges_for_block(src, dst, edge_data, tasks, input_dim)
        self.gate: Gate = GATES.get(first["gate"]["kind"])(edges)
        self.in_shape: Shape = in_shape(g, dst[0], shapes)
        self.weight: nn.Parameter | None = None
        self.edge_mode = False
        if self.linear:
            # W as (Σ_j d_j, C, d_out); row_src maps each input row to its source j so the
            # gate mask broadcasts over every (d_j × d_out) block.
            widths = [shapes[u][0] for u in src]
            d_out = self.in_shape[0]
            self.uniform_src = len(set(widths)) == 1
            # A derived (fixed-gate) block with missing edges stores and multiplies only its
            # live edges: W (E, d, d_out), one bmm over edges, then a scatter-add into the
            # destinations. A supernet block is dense so that every edge can be learned.
            self.edge_mode = (
                self.gate.kind == "fixed" and self.uniform_src and not bool(edges.mask.all())
            )
            if self.edge_mode:
                e_src, e_dst = torch.nonzero(edges.mask, as_tuple=True)
                self.register_buffer("edge_src", e_src, persistent=False)
                self.register_buffer("edge_dst", e_dst, persistent=False)
                fan_in = edges.mask.sum(0)[e_dst].float() * widths[0]  # per destination
                bound = fan_in.rsqrt().view(-1, 1, 1)
                w = (torch.rand(len(e_src), widths[0], d_out) * 2 - 1) * bound
            else:
                # nn.Linear scale over each destination's whole fan-in Σ_j d_j, so that
                # all-open gates start like a dense layer (Shared-Bottom) would
                fan_in = (
                    edges.mask.float() * torch.tensor(widths, dtype=torch.float).unsqueeze(1)
                ).sum(0)  # (C,)
                w = (torch.rand(sum(widths), len(dst), d_out) * 2 - 1) * fan_in.clamp(
                    min=1
                ).rsqrt().view(1, -1, 1)
            self.weight = nn.Parameter(w)
            self.register_buffer(
                "row_src",
                torch.repeat_interleave(torch.arange(len(src)), torch.tensor(widths)),
                persistent=False,
            )
        # component groups: contiguous runs of destinations with one stack signature
        index = {t: i for i, t in enumerate(tasks)}
        self.groups: list[_Group] = []
        modules = []
        lo = 0
        while lo < len(dst):
            sig = _signature(g.nodes[dst[lo]], by_tasks)
            hi = lo
            while hi < len(dst) and _signature(g.nodes[dst[hi]], by_tasks) == sig:
                hi += 1
            data = g.nodes[dst[lo]]
            usage = None
            if by_tasks and data["role"] == "component":
                usage = tuple(frozenset(index[t] for t in g.nodes[n]["tasks"]) for n in dst[lo:hi])
            self.groups.append(_Group(lo, hi, tuple(dst[lo:hi]), usage))
            if self.is_head:
                params = data.get("params", {})
                modules.append(
                    BatchedTowers(
                        hi - lo,
                        self.in_shape[0],
                        params.get("hidden", []),
                        [g.nodes[v]["width"] for v in dst[lo:hi]],
                        params.get("activation", "relu"),
                    )
                )
            else:
                kind = COMPONENTS.get(data["kind"])
                modules.append(
                    kind.build(hi - lo, self.in_shape, data["width"], data.get("params", {}))
                )
            lo = hi
        self.modules_ = nn.ModuleList(modules)
        # SNR-Trans: the sub-networks' bias joins the block matmul as one addmm
        self.fused_bias = (
            self.linear
            and not self.edge_mode
            and len(modules) == 1
            and isinstance(modules[0], BiasActivation)
        )

    def mix(self, U: Tensor, G: Tensor, cols: Tensor | None) -> Tensor:
        """v_c = Σ_j G_jc T_jc(u_j). U (S, B, J, *in_src), G (S_g, B_g, J, C) -> (S, B, C', *in)."""
        if cols is not None:
            G = G.index_select(-1, cols)
        S, B, J = U.shape[:3]
        C = G.shape[-1]
        static = G.shape[0] == 1 and G.shape[1] == 1
        if self.linear and self.edge_mode:
            return self._mix_edges(U, G, cols)
        if self.linear:
            assert self.weight is not None
            W = self.weight if cols is None else self.weight.index_select(1, cols)
            d_out = W.shape[-1]
            Uc = U.reshape(S, B, -1)  # (S, B, Σd)
            if static:
                if self.gate.static_ones:
                    W_eff = W.reshape(W.shape[0], C * d_out)
                elif self.uniform_src:  # a view, not a gather: no scatter in backward
                    W_eff = (W.view(J, -1, C, d_out) * G[0, 0].view(J, 1, C, 1)).reshape(
                        W.shape[0], C * d_out
                    )
                else:
                    W_eff = (W * G[0, 0][self.row_src].unsqueeze(-1)).reshape(W.shape[0], C * d_out)
                if self.fused_bias and cols is None:
                    bias = self.modules_[0].bias.reshape(-1)
                    return torch.addmm(bias, Uc.reshape(S * B, -1), W_eff).view(S, B, C, d_out)
                return (Uc @ W_eff).view(S, B, C, d_out)
            if G.shape[1] == 1:  # per-stream gates: one matmul per stream
                W_eff = (W * G[:, 0][:, self.row_src].unsqueeze(-1)).reshape(
                    G.shape[0], W.shape[0], C * d_out
                )
                return torch.matmul(Uc, W_eff).view(-1, B, C, d_out)
            P = torch.einsum("sbr,rce->sbrce", Uc, W)  # per-example gates: general path
            return (P * G[..., self.row_src, :].unsqueeze(-1)).sum(2)
        feat = U.shape[3:]
        if self.gate.static_ones and J == 1:
            return U.expand(S, B, C, *feat)  # same input for every destination, no copy
        Uf = U.reshape(S, B, J, -1)
        if static:
            V = (Uf.reshape(S * B, J, -1).transpose(1, 2) @ G[0, 0]).transpose(1, 2)
            return V.reshape(S, B, C, *feat)
        V = torch.einsum("sbjc,sbjf->sbcf", G, Uf)
        return V.reshape(V.shape[0], B, C, *feat)

    def _mix_edges(self, U: Tensor, G: Tensor, cols: Tensor | None) -> Tensor:
        """Live edges only: y_e = W_e u_src(e), v_c = Σ_{e→c} g_e y_e."""
        S, B, _, d = U.shape
        E, _, d_out = self.weight.shape
        Ue = U.index_select(2, self.edge_src).reshape(S * B, E, d).transpose(0, 1)
        Y = torch.bmm(Ue, self.weight).transpose(0, 1).reshape(S, B, E, d_out)
        if not self.gate.static_ones:
            Y = Y * G[:, :, self.edge_src, self.edge_dst].unsqueeze(-1)
        V = Y.new_zeros(Y.shape[0], B, len(self.dst), d_out).index_add_(2, self.edge_dst, Y)
        return V if cols is None else V.index_select(2, cols)

    def run_components(
        self, V: Tensor, stream_tasks: list[int], static: bool = False
    ) -> list[Tensor]:
        """Each group's output, (S, B, C_g, *out).

        With task streams in a pruned model, a group runs only on the streams of tasks that
        use one of its components; when each component serves one task of its own (no
        sharing), only the "diagonal" (component c on its task's stream) is computed. Streams
        left out get zeros, which no edge of theirs reads (their gate values are 0).
        """
        S, B = V.shape[:2]
        outs = []
        for grp, module in zip(self.groups, self.modules_, strict=True):
            v = V[:, :, grp.lo : grp.hi]
            if self.fused_bias and static:  # bias already added inside the block matmul
                outs.append(module.act(v))
                continue
            if S == 1 or grp.usage is None:
                y = module(v.reshape(S * B, *v.shape[2:]))
                outs.append(y.view(S, B, *y.shape[1:]))
                continue
            outs.append(self._run_on_streams(grp, module, v, stream_tasks))
        return outs

    @staticmethod
    def _run_on_streams(
        grp: _Group, module: nn.Module, v: Tensor, stream_tasks: list[int]
    ) -> Tensor:
        S, B, C = v.shape[:3]
        stream_of = {t: s for s, t in enumerate(stream_tasks)}
        own = [next(iter(u)) for u in grp.usage if len(u) == 1]
        if len(own) == C and all(t in stream_of for t in own):
            streams = torch.tensor([stream_of[t] for t in own], device=v.device)
            cols = torch.arange(C, device=v.device)
            y = module(v[streams, :, cols].transpose(0, 1))  # (B, C, *out): the diagonal
            out = y.new_zeros(S, B, *y.shape[1:])
            out[streams, :, cols] = y.transpose(0, 1)
            return out
        union = set().union(*grp.usage)
        used = [s for s, t in enumerate(stream_tasks) if t in union]
        if len(used) == S:
            y = module(v.reshape(S * B, *v.shape[2:]))
            return y.view(S, B, *y.shape[1:])
        idx = torch.tensor(used, device=v.device)
        y = module(v.index_select(0, idx).reshape(len(used) * B, *v.shape[2:]))
        y = y.view(len(used), B, *y.shape[1:])
        return y.new_zeros(S, *y.shape[1:]).index_copy(0, idx, y)


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
        for n, data in graph.nodes(data=True):
            if n != INPUT:
                layers.setdefault(data["layer"], []).append(n)
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
                        _gate_signature(e["gate"]),
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
                        sigs.setdefault(_signature(graph.nodes[n], by_usage), len(sigs))
                    dst = sorted(dst, key=lambda n: sigs[_signature(graph.nodes[n], by_usage)])
                src = sorted(
                    {u for v in dst for u in graph.predecessors(v)}, key=position.__getitem__
                )
                streams = prunes_streams(graph, input_regime)
                blocks.append(Block(graph, src, dst, shapes, self.tasks, input_dim, streams))
                for n in dst:
                    position[n] = len(position)
        self.blocks = nn.ModuleList(blocks)
        self._plan_sources()

    def _plan_sources(self) -> None:
        """Where each block's sources live: (output group, column); -1 is the input.

        When a block reads exactly one whole group in order (every seed space does), the
        group's tensor is used as it is; otherwise the columns are gathered and concatenated.
        """
        loc: dict[str, tuple[int, int]] = {INPUT: (-1, 0)}
        sizes: list[int] = []
        self._src_plan: list[list[tuple[int, int]]] = []
        self._src_whole: list[int | None] = []
        for block in self.blocks:
            plan = [loc[u] for u in block.src]
            producers = {p for p, _ in plan}
            whole = None
            if len(producers) == 1:
                p = producers.pop()
                if p == -1 or [k for _, k in plan] == list(range(sizes[p])):
                    whole = p
            self._src_plan.append(plan)
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
        stream_tasks = torch.tensor(stream_ids, device=x.device)
        ctx = GateContext(stream_tasks=stream_tasks, x_flat=x.reshape(x.shape[0], x.shape[1], -1))
        inp = x.unsqueeze(2)  # (S, B, 1, *in)
        outs: list[Tensor] = []
        results: dict[str, Tensor] = {}
        for b, block in enumerate(self.blocks):
            whole = self._src_whole[b]
            if whole is not None:
                U = inp if whole == -1 else outs[whole]
            else:
                parts = [inp if p == -1 else outs[p][:, :, k : k + 1] for p, k in self._src_plan[b]]
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
        head_tasks = [self.graph.nodes[v]["task"] for v in block.dst]
        wanted = [c for c, t in enumerate(head_tasks) if t in tasks]
        if not wanted:
            return {}
        every = wanted == list(range(len(head_tasks)))
        cols = None if every else torch.tensor(wanted, device=U.device)
        V = block.mix(U, G, cols)  # (S, B, k, *in)
        if V.shape[0] > 1:  # each head reads its own task's stream
            streams = torch.tensor([tasks.index(head_tasks[c]) for c in wanted], device=U.device)
            V = V.permute(2, 0, 1, *range(3, V.dim()))[torch.arange(len(wanted)), streams]
            V = V.transpose(0, 1)  # (B, k, *in)
        else:
            V = V[0]
        if V.dim() > 3:  # image features: global average pooling before the tower
            V = V.mean(dim=tuple(range(3, V.dim())))
        results = {}
        for grp, towers in zip(block.groups, block.modules_, strict=True):
            sel = [i for i, c in enumerate(wanted) if grp.lo <= c < grp.hi]
            if not sel:
                continue
            whole = every and len(block.groups) == 1
            local = torch.tensor([wanted[i] - grp.lo for i in sel], device=U.device)
            y = towers(V if whole else V[:, sel], None if whole else local)  # (B, k_g, max_out)
            for i, li in zip(sel, local.tolist(), strict=True):
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
