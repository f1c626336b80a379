"""What a trained model computes, read off its modules: one *instance* per node and stream.

The serving packer (:mod:`nas_mtl.serving.packed`) never re-runs the supernet's forward; it
reads what that forward would compute from the model's tensors. This module walks the blocks of
a :class:`~nas_mtl.model.supernet.Supernet` in its own order and mirrors ``Supernet.forward``
step by step (docs/serving.md, "What the packer reads"):

* a block's gate is evaluated once in eval mode; fixed gates, SNR's deterministic ẑ and
  Gumbel-Matrix's greedy allocation all give constants ``G (S_g, 1, J, C)``; only the MMoE/OMoE
  softmax gates depend on the example and stay dynamic;
* the number of streams ``S`` follows the supernet: 1 while every task sees the same values,
  one per requested task after the first task-scoped gate (or from the start with per-task
  inputs);
* a component is *present* on a stream exactly when ``Block.run_components`` computes it
  there (the others are zeros, which contribute nothing to a sum);
* each present (node, stream) becomes an :class:`~nas_mtl.serving.instances.Instance`: the
  sum of its sources (instance, gate value, edge matrix for linear transforms), then the
  component's layers.

Only the instances some requested head depends on are kept. Image inputs, non-vector
components and softmax gates on linear edges raise :class:`NotPackable`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nas_mtl.errors import GraphError
from nas_mtl.model.blocks import Block
from nas_mtl.model.components import (
    ACTIVATIONS,
    BatchedMLP,
    BatchedTowers,
    BiasActivation,
    StridedIdentity,
)
from nas_mtl.model.gates import GateContext, SoftmaxGate
from nas_mtl.model.graph import INPUT
from nas_mtl.model.supernet import Supernet
from nas_mtl.serving.instances import Instance, Layer, SoftmaxMixing, Source, Trace


class NotPackable(GraphError):
    """The model holds something the packer does not fold; it is served as it is."""


def act_name(module: nn.Module) -> str:
    """The registry name of an activation module (the supernet shares the registry's objects)."""
    for name, candidate in ACTIVATIONS.items():
        if module is candidate or type(module) is type(candidate):
            return name
    raise NotPackable(f"activation {type(module).__name__} is not in the registry")


def component_layers(module: nn.Module, k: int) -> list[Layer]:
    """Component ``k`` of a batched group as plain layers (docs/serving.md)."""
    if isinstance(module, BatchedMLP):
        act = act_name(module.act)
        n = len(module.layers)
        return [
            Layer(
                lin.weight[k].detach(),
                None if lin.bias is None else lin.bias[k].detach(),
                act if module.last_act or i < n - 1 else "none",
            )
            for i, lin in enumerate(module.layers)
        ]
    if isinstance(module, BiasActivation):
        return [Layer(None, module.bias[k].detach(), act_name(module.act))]
    if isinstance(module, StridedIdentity):
        return []
    raise NotPackable(f"component module {type(module).__name__} is not a vector component")


def tower_layers(towers: BatchedTowers, k: int) -> list[Layer]:
    """Head ``k`` of a batched tower group, its padded output columns cut off."""
    act = act_name(towers.act)
    out_dim = towers.out_dims[k]
    layers = [Layer(h.weight[k].detach(), h.bias[k].detach(), act) for h in towers.hidden]
    w, b = towers.out.weight[k, :, :out_dim], towers.out.bias[k, :out_dim]
    return [*layers, Layer(w.detach(), b.detach(), "none")]


Edges = dict[tuple[int, int], Tensor]  # (source j, destination c) -> W_jc


def _edge_matrices(block: Block, widths: list[int]) -> Edges:
    """W_jc of a linear-transform block: rows of the dense weight, or one live edge each."""
    assert block.weight is not None
    w = block.weight.detach()
    if block.edge_mode:
        pairs = zip(block.edge_src.tolist(), block.edge_dst.tolist(), strict=True)
        return {(j, c): w[e] for e, (j, c) in enumerate(pairs)}
    offsets = [0]
    for d in widths:
        offsets.append(offsets[-1] + d)
    return {
        (j, c): w[offsets[j] : offsets[j + 1], c, :]
        for j in range(len(widths))
        for c in range(len(block.dst))
    }


def _present(
    block: Block, grp: Any, n_streams: int, stream_ids: list[int], static: bool
) -> list[set[int]]:
    """The streams on which ``Block.run_components`` computes each component of ``grp``."""
    C = grp.hi - grp.lo
    every = [set(range(n_streams)) for _ in range(C)]
    if (block.fused_bias and static) or n_streams == 1 or grp.usage is None:
        return every
    stream_of = {t: s for s, t in enumerate(stream_ids)}
    own = [next(iter(u)) for u in grp.usage if len(u) == 1]
    if len(own) == C and all(t in stream_of for t in own):
        return [{stream_of[t]} for t in own]
    union = set().union(*grp.usage)
    used = {s for s, t in enumerate(stream_ids) if t in union}
    return [set(used) for _ in range(C)]


class _Tracer:
    def __init__(self, net: Supernet, tasks: tuple[str, ...], per_task_inputs: bool) -> None:
        self.net = net
        self.tasks = tasks
        self.stream_ids = [net.tasks.index(t) for t in tasks]
        self.instances: list[Instance] = []
        self.input_dim = int(math.prod(net.input_shape))
        n_x = len(tasks) if per_task_inputs else 1
        self.inputs = [
            self._new(INPUT, s if per_task_inputs else None, -1, self.input_dim).id
            for s in range(n_x)
        ]
        # value[node][s]: the instance on stream s (one entry while S = 1); None: zeros
        self.value: dict[str, list[int | None]] = {INPUT: list(self.inputs)}
        self.outputs: dict[str, int] = {}

    def _new(self, node: str, stream: int | None, block: int, width: int) -> Instance:
        inst = Instance(len(self.instances), node, stream, block, width)
        self.instances.append(inst)
        return inst

    def run(self) -> Trace:
        net = self.net
        dev = next(iter(net.buffers()), torch.zeros(())).device  # where the gate values live
        ctx = GateContext(
            stream_tasks=torch.tensor(self.stream_ids, device=dev),
            x_flat=torch.zeros(len(self.inputs), 2, self.input_dim, device=dev),
        )
        for b, block in enumerate(net.blocks):
            if len(block.in_shape) != 1:
                raise NotPackable(f"block {b} has image input {block.in_shape}")
            with torch.no_grad():
                G = block.gate(ctx).detach().cpu()  # (S_g, B_g, J, C)
            softmax = isinstance(block.gate, SoftmaxGate)
            if G.shape[1] != 1 and not softmax:
                raise NotPackable(f"block {b}: gate '{block.gate.kind}' depends on the example")
            if softmax and block.linear:
                raise NotPackable(f"block {b}: softmax gates on linear edges")
            n_src = max(len(self.value[u]) for u in block.src)
            n_streams = max(n_src, G.shape[0])
            widths = [net.shapes[u][0] for u in block.src]
            edges = _edge_matrices(block, widths) if block.linear else {}
            static = G.shape[0] == 1 and G.shape[1] == 1
            if block.is_head:
                self._heads(b, block, G, n_streams, edges, softmax)
            else:
                self._components(b, block, G, n_streams, edges, softmax, static)
        return self._prune()

    def _sources(self, block: Block, G: Tensor, c: int, s: int, edges: Edges) -> list[Source]:
        out = []
        g = G[s if G.shape[0] > 1 else 0, 0]
        for j, u in enumerate(block.src):
            ids = self.value[u]
            uid = ids[s if len(ids) > 1 else 0]
            coef = float(g[j, c])
            if uid is None or coef == 0.0:
                continue
            out.append(Source(uid, coef, edges.get((j, c)) if block.linear else None))
        return out

    def _softmax(self, block: Block, c: int, s: int) -> SoftmaxMixing:
        gate = block.gate
        assert isinstance(gate, SoftmaxGate)
        net_index = c if gate.n_nets > 1 else 0
        rows = slice(net_index * gate.J, (net_index + 1) * gate.J)
        sources = []
        for u in block.src:
            ids = self.value[u]
            sources.append(ids[s if len(ids) > 1 else 0])
        return SoftmaxMixing(
            weight=gate.net.weight[rows].detach().cpu(),
            bias=gate.net.bias[rows].detach().cpu(),
            neg=gate.neg_mask[:, c].detach().cpu(),
            mask=gate.mask[:, c].detach().cpu(),
            sources=tuple(sources),
            x_instance=self.inputs[s if len(self.inputs) > 1 else 0],
        )

    def _fill(
        self, inst: Instance, block: Block, G: Tensor, c: int, s: int, edges: Edges, softmax: bool
    ) -> None:
        inst.linear = block.linear
        if softmax:
            inst.softmax = self._softmax(block, c, s)
        else:
            inst.sources = self._sources(block, G, c, s, edges)

    def _heads(
        self, b: int, block: Block, G: Tensor, n_streams: int, edges: Edges, softmax: bool
    ) -> None:
        g = self.net.graph
        for grp, towers in zip(block.groups, block.modules_, strict=True):
            assert isinstance(towers, BatchedTowers)
            for c in range(grp.lo, grp.hi):
                node = block.dst[c]
                task = g.nodes[node]["task"]
                if task not in self.tasks:
                    continue
                s = self.tasks.index(task) if n_streams > 1 else 0
                layers = tower_layers(towers, c - grp.lo)
                inst = self._new(node, s if n_streams > 1 else None, b, towers.out_dims[c - grp.lo])
                self._fill(inst, block, G, c, s, edges, softmax)
                inst.layers, inst.task = layers, task
                self.outputs[task] = inst.id

    def _components(
        self,
        b: int,
        block: Block,
        G: Tensor,
        n_streams: int,
        edges: Edges,
        softmax: bool,
        static: bool,
    ) -> None:
        shapes = self.net.shapes
        for grp, module in zip(block.groups, block.modules_, strict=True):
            present = _present(block, grp, n_streams, self.stream_ids, static)
            for c in range(grp.lo, grp.hi):
                node = block.dst[c]
                layers = component_layers(module, c - grp.lo)
                row: list[int | None] = []
                for s in range(n_streams):
                    if s not in present[c - grp.lo]:
                        row.append(None)
                        continue
                    inst = self._new(node, s if n_streams > 1 else None, b, shapes[node][0])
                    self._fill(inst, block, G, c, s, edges, softmax)
                    inst.layers = layers
                    row.append(inst.id)
                self.value[node] = row

    def _prune(self) -> Trace:
        """Keep the instances some requested head depends on, renumbered in order."""
        needed = set(self.inputs) | depends_on(self.instances, self.outputs.values())
        new_id = {old: k for k, old in enumerate(sorted(needed))}
        kept = []
        for old in sorted(needed):
            inst = self.instances[old]
            inst.id = new_id[old]
            inst.sources = [Source(new_id[s.instance], s.coef, s.edge) for s in inst.sources]
            if inst.softmax is not None:
                mix = inst.softmax
                inst.softmax = SoftmaxMixing(
                    mix.weight,
                    mix.bias,
                    mix.neg,
                    mix.mask,
                    tuple(None if u is None else new_id[u] for u in mix.sources),
                    new_id[mix.x_instance],
                )
            kept.append(inst)
        return Trace(
            instances=kept,
            outputs={t: new_id[i] for t, i in self.outputs.items()},
            inputs=[new_id[i] for i in self.inputs],
            tasks=self.tasks,
            n_streams=len(self.tasks),
            input_dim=self.input_dim,
        )


def trace(
    net: Supernet, tasks: Sequence[str] | None = None, per_task_inputs: bool = False
) -> Trace:
    """The instances ``net`` computes in eval mode for ``tasks`` (default: all, in order).

    ``per_task_inputs``: the input is ``(len(tasks), B, D)``, one stream per task, as in
    ``net(x, tasks)`` with per-task batches.
    """
    tasks = tuple(net.tasks if tasks is None else tasks)
    unknown = [t for t in tasks if t not in net.tasks]
    if unknown:
        raise GraphError(f"unknown task(s) {unknown}; this model has {list(net.tasks)}")
    if len(net.input_shape) != 1:
        raise NotPackable(f"image input {net.input_shape}: only vector (tabular) models are packed")
    was_training = net.training
    net.eval()
    try:
        return _Tracer(net, tasks, per_task_inputs).run()
    finally:
        net.train(was_training)


def depends_on(instances: Sequence[Instance], roots: Iterable[int]) -> set[int]:
    """``roots`` and every instance they read, directly or not (sources, softmax mixing)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        inst = instances[i]
        stack.extend(src.instance for src in inst.sources)
        if inst.softmax is not None:
            stack.extend(u for u in inst.softmax.sources if u is not None)
            stack.append(inst.softmax.x_instance)
    return seen


def restrict(tr: Trace, stream: int) -> Trace:
    """One stream of a per-task-input trace as a single-stream trace of its task alone.

    Streams never mix, so a task's output with per-task inputs depends on its own stream only;
    the instances of that stream (and those computed once) are relabelled as computed once.
    """
    task = tr.tasks[stream]
    keep = depends_on(tr.instances, [tr.outputs[task]])
    x = tr.inputs[stream if len(tr.inputs) > 1 else 0]
    keep.add(x)
    new_id = {old: k for k, old in enumerate(sorted(keep))}
    out = []
    for old in sorted(keep):
        inst = tr.instances[old]
        mix = inst.softmax
        out.append(
            Instance(
                id=new_id[old],
                node=inst.node,
                stream=None,
                block=inst.block,
                width=inst.width,
                sources=[Source(new_id[s.instance], s.coef, s.edge) for s in inst.sources],
                softmax=None
                if mix is None
                else SoftmaxMixing(
                    mix.weight,
                    mix.bias,
                    mix.neg,
                    mix.mask,
                    tuple(new_id.get(u) if u is not None else None for u in mix.sources),
                    new_id[mix.x_instance],
                ),
                linear=inst.linear,
                layers=inst.layers,
                task=inst.task,
            )
        )
    return Trace(out, {task: new_id[tr.outputs[task]]}, [new_id[x]], (task,), 1, tr.input_dim)
