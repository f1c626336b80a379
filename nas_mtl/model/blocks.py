"""A block: the destinations of one layer that one gate module and one transform mix.

The supernet compiles each layer of the routing graph into blocks; a block gathers its
sources, applies the gate values and the transform (identity, or an SNR-Trans block matmul
``U · (W ⊙ Z)``), and runs its components grouped by kind, so a layer costs one batched call
per kind. Pruned models with task streams run each component only on the streams it serves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
from torch import Tensor, nn

from nas_mtl.model.components import COMPONENTS, BatchedTowers, BiasActivation, Shape
from nas_mtl.model.gates import GATES, Gate, edges_for_block
from nas_mtl.model.graph import in_shape
from nas_mtl.model.index_cache import IndexCache


def component_signature(node_data: dict, by_usage: bool = False) -> str:
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


def gate_signature(gate: dict) -> str:
    params = {k: v for k, v in gate.get("params", {}).items() if k not in ("value", "values")}
    return json.dumps([gate["kind"], gate["scope"], params], sort_keys=True)


def _component_major_mix(U: Tensor, G: Tensor, feat: tuple[int, ...]) -> Tensor:
    """``v_{s,c} = Σ_j g_{s,j,c} u_{(s),j}`` as one matmul whose result is laid out
    component-major: U (S_u, B, J, F) with S_u = 1 or the same gates for every stream,
    G (S_g, J, C) -> (S, B, C, *feat), a view of a contiguous (C, S, B, *feat) tensor.

    The components then run as one batched matmul over C on (C, S·B, F) with no copy, and
    their outputs, views of (C, S·B, F') tensors, arrive at the next mix already J-major, so
    ``U``'s permute below is a view too (docs/speed.md, "Component-major mixing").
    """
    S_u, B, J, _ = U.shape
    S_g, _, C = G.shape
    Ut = U.permute(2, 0, 1, 3).reshape(J, -1)  # (J, S_u·B·F); a copy unless J-major already
    Gt = G.permute(2, 0, 1).reshape(C * S_g, J)  # row (c, s) holds g_{s,·,c}
    S = max(S_u, S_g)
    V = (Gt @ Ut).view(C, S, B, *feat)
    return V.permute(1, 2, 0, *range(3, V.dim()))


class _StreamMix(torch.autograd.Function):
    """``v_s = Σ_j g_sj u_js``: each stream s mixes the sources of its own stream.

    ``u`` arrives source-major, ``(J, S, F)``, as the components leave it (docs/speed.md,
    "Component-major mixing"). A ``bmm`` over the streams reads it through strides, but its
    backward would write the gradient stream-major, which the components' backward can only
    use after a full copy, and through a ReLU backward whose two operands' layouts differ.
    This backward writes it source-major, as one broadcast product: ``∂u_js = g_sj ∂v_s``
    (and ``∂g`` as one fused dot product: a ``bmm`` through these strides took 6× longer).
    """

    @staticmethod
    def forward(ctx: Any, g: Tensor, u: Tensor) -> Tensor:  # g (S, J), u (J, S, F) -> (S, F)
        ctx.save_for_backward(g, u)
        return torch.bmm(g.unsqueeze(1), u.transpose(0, 1)).squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        g, u = ctx.saved_tensors
        grad_g = grad_u = None
        if ctx.needs_input_grad[0]:  # ∂g_sj = <u_js, ∂v_s>: one fused dot, not a strided bmm
            grad_g = torch.linalg.vecdot(u, grad.unsqueeze(0).to(u.dtype)).t().to(g.dtype)
        if ctx.needs_input_grad[1]:  # written into a source-major tensor: the layout is set
            grad_u = u.new_empty(u.shape)  # here, not left to the inputs' strides
            torch.mul(g.t().unsqueeze(-1).to(u.dtype), grad.unsqueeze(0).to(u.dtype), out=grad_u)
        return grad_g, grad_u


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
        # read once here: the forward pass never touches the graph (torch.compile traces it)
        self.head_tasks: list[str] = [g.nodes[v]["task"] for v in dst] if self.is_head else []
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
            sig = component_signature(g.nodes[dst[lo]], by_tasks)
            hi = lo
            while hi < len(dst) and component_signature(g.nodes[dst[hi]], by_tasks) == sig:
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
        self._index = IndexCache()  # task-stream indices, built once per device
        # SNR-Trans: the sub-networks' bias joins the block matmul as one addmm
        self.fused_bias = (
            self.linear
            and not self.edge_mode
            and len(modules) == 1
            and isinstance(modules[0], BiasActivation)
        )

    def edge_weight(self, u: str, v: str) -> Tensor:
        """The matrix of edge ``u -> v`` of a linear block, (d_u, d_out): a view of ``weight``."""
        assert self.weight is not None, "identity edges have no weight"
        j, c = self.src.index(u), self.dst.index(v)
        if self.edge_mode:
            e = torch.nonzero((self.edge_src == j) & (self.edge_dst == c)).flatten()
            if e.numel() != 1:
                raise KeyError(f"edge {u} -> {v} is not in this block")
            return self.weight[int(e)]
        rows = torch.nonzero(self.row_src == j).flatten()
        return self.weight[int(rows[0]) : int(rows[-1]) + 1, c]

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
            return self._mix_per_example(U, G, W)  # per-example gates (noise = "example")
        feat = U.shape[3:]
        if self.gate.static_ones and J == 1:
            return U.expand(S, B, C, *feat)  # same input for every destination, no copy
        Uf = U.reshape(S, B, J, -1)
        if static or (G.shape[1] == 1 and S == 1):
            return _component_major_mix(Uf, G[:, 0], feat)
        V = torch.einsum("sbjc,sbjf->sbcf", G, Uf)
        return V.reshape(V.shape[0], B, C, *feat)

    def mix_streams(self, U: Tensor, G: Tensor, cols: list[int], streams: list[int]) -> Tensor:
        """Destination ``cols[i]`` on stream ``streams[i]`` only: (B, k, *in).

        The heads of per-task streams each read their own task's stream, so of the full mix's
        (stream, destination) pairs only k are used; this computes those, as one matmul (all
        heads on one input stream) or one batched matmul over the heads. Identity edges, gates
        per stream or shared: U (S_u, B, J, *in), G (S_g, 1, J, C).
        """
        S_u, B, J = U.shape[:3]
        feat, k, dev = U.shape[3:], len(cols), U.device
        g = G[:, 0].index_select(-1, self._index(cols, dev))  # (S_g, J, k)
        if G.shape[0] > 1:  # head i's gates on its own stream: g[streams[i], :, i]
            g = g[self._index(streams, dev), :, self._index(range(k), dev)]
        else:
            g = g[0].t()
        Uj = U.reshape(S_u, B, J, -1).permute(2, 0, 1, 3)  # (J, S_u, B, F): a view
        if S_u == 1:
            V = g @ Uj.reshape(J, -1)  # (k, B·F)
        else:
            if streams != list(range(S_u)):
                Uj = Uj.index_select(1, self._index(streams, dev))
            V = _StreamMix.apply(g, Uj.reshape(J, k, -1))
        return V.view(k, B, *feat).transpose(0, 1)

    def _mix_per_example(self, U: Tensor, G: Tensor, W: Tensor) -> Tensor:
        """v_{b,c} = Σ_j g_{b,j,c} W_jc u_{b,j} with gates per example (``docs/speed.md``).

        The gates cannot be folded into one weight matrix, but they scale whole (j, c) blocks:
        Y_j = U_j W_j is one batched matmul over the sources, (J, S·B, C·d_out), as many
        multiply-adds as the shared-gate matmul; the gates then weigh Y and the sum runs over
        j. Nothing of size (B, Σd, C, d_out) is built. U (S, B, J, d), G (S_g, B, J, C),
        W (Σd, C, d_out) -> (max(S, S_g), B, C, d_out).
        """
        S, B, J = U.shape[:3]
        C, d_out = W.shape[1], W.shape[2]
        if not self.uniform_src:  # sources of unequal widths: gate the inputs, one bmm per c
            Ug = U.reshape(S, B, -1).unsqueeze(-1) * G[..., self.row_src, :]  # (S', B, Σd, C)
            S2 = Ug.shape[0]
            V = torch.bmm(Ug.permute(3, 0, 1, 2).reshape(C, S2 * B, -1), W.transpose(0, 1))
            return V.view(C, S2, B, d_out).permute(1, 2, 0, 3)
        Ut = U.reshape(S * B, J, -1).transpose(0, 1)  # (J, S·B, d)
        Y = torch.bmm(Ut, W.reshape(J, -1, C * d_out)).view(J, S, B, C, d_out)
        return (Y * G.permute(2, 0, 1, 3).contiguous().unsqueeze(-1)).sum(0)

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

    def _run_on_streams(
        self, grp: _Group, module: nn.Module, v: Tensor, stream_tasks: list[int]
    ) -> Tensor:
        S, B, C = v.shape[:3]
        stream_of = {t: s for s, t in enumerate(stream_tasks)}
        own = [next(iter(u)) for u in grp.usage if len(u) == 1]
        if len(own) == C and all(t in stream_of for t in own):
            streams = self._index([stream_of[t] for t in own], v.device)
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
        idx = self._index(used, v.device)
        y = module(v.index_select(0, idx).reshape(len(used) * B, *v.shape[2:]))
        y = y.view(len(used), B, *y.shape[1:])
        return y.new_zeros(S, *y.shape[1:]).index_copy(0, idx, y)
