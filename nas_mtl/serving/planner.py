"""Lay a trace's instances out in slabs and fold each block into dense matmuls.

For every block of the model (one layer of the routing graph) the planner emits one *first
step* that computes each kept destination's input sum together with its component's first
layer, then one step per further layer. The first step is either

* **fold**: ``Y = act(b + Σ_slabs X W)`` with ``W[rows(u), cols(v)] = g_uv · M_uv``, where
  ``M_uv`` is the edge matrix ``W_uv`` (linear edges, SNR-Trans) or the component's first
  weight ``W_v`` (identity edges). One ``addmm`` per source slab for all kept edges; pruned
  edges are zero blocks; or
* **mix**: the distinct gate-weighted sums ``m_k = Σ_u g_uk u`` first (one matmul), then one
  batched matmul with each mix's components side by side. Cheaper when many destinations
  read their own mixture of equal-width sources (SNR-Aver, Gumbel-Matrix task streams).

The cheaper of the two at ``batch_hint`` rows is chosen by a cost model (a fixed cost per call,
a thread wake-up per batched matmul when torch runs more than one thread, plus multiply-adds).
docs/serving.md, "Packing", has the math and the costs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas_mtl.serving.instances import Instance, Trace
from nas_mtl.serving.layout import (
    Cost,
    Item,
    Labels,
    Loc,
    Plan,
    aligned_term,
    column_layout,
    first_layer,
    in_width,
)
from nas_mtl.serving.ops import Affine, Flatten, Mix, SoftmaxMix
from nas_mtl.serving.trace import NotPackable


class Planner:
    """Turns a :class:`Trace` into steps (``ops``) and output locations."""

    def __init__(self, tr: Trace, batch_hint: int) -> None:
        self.tr, self.batch = tr, batch_hint
        self.threads = torch.get_num_threads()  # the wake-up term: docs/serving.md, "Costs"
        x_labels: Labels = ("x",) if len(tr.inputs) == 1 else tuple(range(len(tr.inputs)))
        self.labels: list[Labels] = [x_labels]  # per slab
        self.widths_: list[int] = [tr.input_dim]  # per slab
        self.ops: list[nn.Module] = []
        self.loc: dict[int, Loc] = {i: (0, s, 0) for s, i in enumerate(tr.inputs)}
        self.width: dict[int, int] = {i: tr.input_dim for i in tr.inputs}  # current widths
        self.done: dict[int, int] = {}  # layers already computed per instance
        self.flat: dict[int, int] = {}  # slab -> its flattened copy
        self.choices: list[str] = []  # what each block became, for reports and tests

    # ------------------------------------------------------------------ driver
    def run(self) -> dict[str, tuple[int, int, int, int]]:
        by_block: dict[int, list[Instance]] = {}
        for inst in self.tr.instances:
            if inst.block >= 0:
                by_block.setdefault(inst.block, []).append(inst)
        for b in sorted(by_block):
            self._block(b, by_block[b])
        out = {}
        for task, i in self.tr.outputs.items():
            slab, stream, col = self.loc[i]
            out[task] = (slab, stream, col, col + self.tr.instances[i].width)
        return out

    def _emit(self, op: nn.Module, labels: Labels, width: int) -> int:
        self.ops.append(op)
        self.labels.append(labels)
        self.widths_.append(width)
        return len(self.labels) - 1

    def _block(self, b: int, insts: list[Instance]) -> None:
        rest = []
        for inst in insts:
            src = inst.sources
            if (
                not inst.linear
                and inst.softmax is None
                and not inst.layers
                and len(src) == 1
                and src[0].coef == 1.0
            ):  # an identity component on one input: the same tensor, no step
                self.loc[inst.id] = self.loc[src[0].instance]
                self.width[inst.id] = self.width[src[0].instance]
                self.done[inst.id] = 0
                continue
            rest.append(inst)
        if rest:
            if rest[0].softmax is not None:
                self._softmax(b, rest)
            else:
                fold = self._fold_plan(b, rest)
                mix = self._mix_plan(b, rest)
                at = (self.batch, self.threads)
                if mix is not None and mix[0].time(*at) < fold[0].time(*at):
                    mix[1]()
                    self.choices.append(f"block {b}: mix")
                else:
                    fold[1]()
                    self.choices.append(f"block {b}: fold")
        self._continue(insts)

    # ------------------------------------------------------------------ output streams
    def _out_streams(self, insts: list[Instance]) -> tuple[Labels, dict[int, int]]:
        """Output stream labels of a block's first step, and each instance's stream."""
        if insts[0].task is not None:  # heads: one stream each, so towers batch as bmm
            labels = tuple(i.stream if i.stream is not None else ("head", i.task) for i in insts)
            return labels, {i.id: k for k, i in enumerate(insts)}
        if insts[0].stream is None:
            return ("shared",), {i.id: 0 for i in insts}
        return tuple(range(self.tr.n_streams)), {i.id: int(i.stream) for i in insts}

    def _items(self, insts: list[Instance], stream_of: dict[int, int]) -> list[Item]:
        items = []
        for inst in insts:
            first = first_layer(inst)
            d_in = in_width(inst, self.width)
            if first is not None and first.weight is not None:
                width, matrix = int(first.weight.shape[1]), first.weight
            else:
                width, matrix = d_in, None
            it = Item(
                inst,
                stream_of[inst.id],
                width,
                first.act if first is not None else "none",
                first.bias if first is not None else None,
            )
            for src in inst.sources:
                m = src.edge if inst.linear else matrix
                it.terms.append((self.loc[src.instance], self.width[src.instance], src.coef, m))
            items.append(it)
        return items

    # ------------------------------------------------------------------ fold
    def _fold_plan(self, b: int, insts: list[Instance]) -> Plan:
        """The fold step's cost, and the function that emits it."""
        labels, stream_of = self._out_streams(insts)
        items = self._items(insts, stream_of)
        S = len(labels)
        F, segments = column_layout(items, S)
        slabs = list(dict.fromkeys(loc[0] for it in items for loc, *_ in it.terms)) or [0]
        modes: dict[int, tuple[str, int]] = {}
        cost = Cost(calls=1 if any(a != "none" for _, _, a in segments) else 0)
        for slab in slabs:
            mode = self._term_mode(slab, labels, items)
            modes[slab] = mode
            f_in = self.widths_[slab] * (len(self.labels[slab]) if mode[0] == "flatten" else 1)
            cost.macs += f_in * S * F
            cost.calls += 2 if mode[0] == "flatten" else 1
            cost.batched += mode[0] == "bmm" and S > 1

        def build() -> None:
            terms: list[tuple[int, str, int, Tensor]] = []
            for slab in slabs:
                mode, lo = modes[slab]
                src_slab = self._flatten(slab) if mode == "flatten" else slab
                f_in = self.widths_[src_slab]
                kind = "bmm" if mode == "bmm" else ("mm" if S == 1 else "bcast")
                w = torch.zeros(S if kind == "bmm" else 1, f_in, F if kind != "bcast" else S * F)
                for it in items:
                    for (s_slab, s_stream, s_col), d, coef, m in it.terms:
                        if s_slab != slab:
                            continue
                        # a flattened slab holds its streams side by side
                        r0 = s_col + (s_stream * self.widths_[slab] if mode == "flatten" else 0)
                        rows = slice(r0, r0 + d)
                        block = coef * (torch.eye(d) if m is None else m.detach().cpu().float())
                        if kind == "bmm":
                            w[it.stream, rows, it.col : it.col + it.width] += block
                        elif kind == "bcast":
                            c0 = it.stream * F + it.col
                            w[0, rows, c0 : c0 + it.width] += block
                        else:
                            w[0, rows, it.col : it.col + it.width] += block
                terms.append((src_slab, kind, lo, w if kind == "bmm" else w[0]))
            bias = torch.zeros(S, F)
            for it in items:
                if it.bias is not None:
                    bias[it.stream, it.col : it.col + it.width] = it.bias.detach().cpu().float()
            slab = self._emit(Affine(terms, bias, S, F, segments), labels, F)
            self._place(items, slab)

        return cost, build

    def _term_mode(self, slab: int, labels: Labels, items: list[Item]) -> tuple[str, int]:
        """How the output streams read ``slab``: broadcast, aligned streams, or flattened."""
        have = self.labels[slab]
        if len(have) == 1:
            return ("mm", 0)
        S = len(labels)
        if labels[0] in have:
            lo = have.index(labels[0])
            if tuple(have[lo : lo + S]) == tuple(labels) and all(
                loc[1] == lo + it.stream for it in items for loc, *_ in it.terms if loc[0] == slab
            ):
                return ("bmm", lo)
        return ("flatten", 0)

    def _flatten(self, slab: int) -> int:
        if slab not in self.flat:
            width = self.widths_[slab] * len(self.labels[slab])
            self.flat[slab] = self._emit(Flatten(slab), ("flat", slab), width)
        return self.flat[slab]

    def _place(self, items: list[Item], slab: int, consumed: bool = True) -> None:
        for it in items:
            self.loc[it.inst.id] = (slab, it.stream, it.col)
            self.width[it.inst.id] = it.width
            self.done[it.inst.id] = 1 if consumed and first_layer(it.inst) is not None else 0

    # ------------------------------------------------------------------ mix
    def _slots(self, insts: list[Instance]) -> tuple[int, int] | None:
        """(slab, slot width) when every source is a whole slot of one slab."""
        locs = {src.instance for inst in insts for src in inst.sources}
        if not locs:
            return None
        slabs = {self.loc[i][0] for i in locs}
        widths = {self.width[i] for i in locs}
        if len(slabs) != 1 or len(widths) != 1:
            return None
        slab, d = slabs.pop(), widths.pop()
        if self.widths_[slab] % d or any(self.loc[i][2] % d for i in locs):
            return None
        return slab, d

    def _mix_plan(self, b: int, insts: list[Instance]) -> Plan | None:
        """The mix steps' cost and emitter; None when the sources are not slots of one slab."""
        if any(inst.linear or (inst.layers[:1] or [None])[0] is None for inst in insts):
            return None
        if any(inst.layers[0].weight is None for inst in insts):
            return None
        found = self._slots(insts)
        if found is None:
            return None
        slab, d = found
        per = self.widths_[slab] // d
        n_slots = per * len(self.labels[slab])

        def coefs(inst: Instance) -> tuple[tuple[int, float], ...]:
            acc: dict[int, float] = {}
            for src in inst.sources:
                _, s, c = self.loc[src.instance]
                k = s * per + c // d
                acc[k] = acc.get(k, 0.0) + src.coef
            return tuple(sorted(acc.items()))

        keys = {inst.id: coefs(inst) for inst in insts}
        labels, mix_of = self._mix_streams(b, insts, keys)
        K = len(labels)
        stream_of = {inst.id: mix_of[inst.id] for inst in insts}
        items = self._items(insts, stream_of)
        F, segments = column_layout(items, K)
        layout = "flat" if len(self.labels[slab]) == 1 else ("stacked" if per == 1 else "general")
        cost = Cost(
            macs=K * n_slots * d + K * d * F,
            calls=2 + (layout == "general") + any(a != "none" for _, _, a in segments),
            batched=(layout == "flat") + (K > 1),
        )

        def build() -> None:
            g = torch.zeros(K, n_slots)
            for inst in insts:
                for k, coef in keys[inst.id]:
                    g[mix_of[inst.id], k] = coef
            m_slab = self._emit(Mix(slab, d, g, layout), labels, d)
            w = torch.zeros(K, d, F)
            bias = torch.zeros(K, F)
            for it in items:
                first = it.inst.layers[0]
                assert first.weight is not None
                w[it.stream, :, it.col : it.col + it.width] = first.weight.detach().cpu().float()
                if first.bias is not None:
                    bias[it.stream, it.col : it.col + it.width] = first.bias.detach().cpu().float()
            out = self._emit(Affine([aligned_term(m_slab, w)], bias, K, F, segments), labels, F)
            self._place(items, out)

        return cost, build

    def _mix_streams(
        self, b: int, insts: list[Instance], keys: dict[int, tuple]
    ) -> tuple[Labels, dict[int, int]]:
        """Which mix each instance reads; the mixes' stream labels.

        Heads get a mix each; task streams keep their labels when each stream needs one mix
        (Gumbel-Matrix), so that later steps stay aligned; otherwise each distinct mix is a
        stream of its own.
        """
        if insts[0].task is not None:
            return self._out_streams(insts)
        if insts[0].stream is not None:
            per_stream: dict[int, set] = {}
            for inst in insts:
                per_stream.setdefault(int(inst.stream), set()).add(keys[inst.id])
            if all(len(v) == 1 for v in per_stream.values()):
                return tuple(range(self.tr.n_streams)), {i.id: int(i.stream) for i in insts}
        distinct: dict[tuple, int] = {}
        mix_of = {}
        for inst in insts:
            key = (inst.stream, keys[inst.id])
            mix_of[inst.id] = distinct.setdefault(key, len(distinct))
        return tuple(("mix", b, k) for k in range(len(distinct))), mix_of

    # ------------------------------------------------------------------ softmax (MMoE)
    def _softmax(self, b: int, insts: list[Instance]) -> None:
        if any(inst.stream is not None for inst in insts):
            raise NotPackable(f"block {b}: softmax gates on per-task streams")
        x_ids = {inst.softmax.x_instance for inst in insts if inst.softmax is not None}
        srcs = {u for inst in insts for u in inst.softmax.sources if u is not None}
        x_slab = {self.loc[i][0] for i in x_ids}
        widths = {self.width[u] for u in srcs}
        slabs = {self.loc[u][0] for u in srcs}
        if len(x_slab) != 1 or len(slabs) != 1 or len(widths) != 1:
            raise NotPackable(f"block {b}: softmax sources spread over several steps")
        slab, d = slabs.pop(), widths.pop()
        if len(self.labels[slab]) != 1 or self.widths_[slab] % d:
            raise NotPackable(f"block {b}: softmax sources are not whole slots of one slab")
        n_slots = self.widths_[slab] // d
        K = len(insts)
        J = len(insts[0].softmax.sources)
        weight = torch.cat([inst.softmax.weight.float() for inst in insts], dim=0).T
        bias = torch.cat([inst.softmax.bias.float() for inst in insts])
        neg = torch.stack([inst.softmax.neg.float() for inst in insts])
        mask = torch.stack([inst.softmax.mask.float() for inst in insts])
        place = torch.zeros(K, J, n_slots)
        for k, inst in enumerate(insts):
            for j, u in enumerate(inst.softmax.sources):
                if u is not None and self.loc[u][2] % d == 0:
                    place[k, j, self.loc[u][2] // d] = 1.0
                elif u is not None:
                    raise NotPackable(f"block {b}: a softmax source is not a whole slot")
        identity = J == n_slots and bool((place == torch.eye(J).expand(K, J, J)).all())
        labels, stream_of = self._out_streams(insts)
        mixed = SoftmaxMix(
            x_slab.pop(), slab, d, weight, bias, neg, mask, None if identity else place
        )
        m_slab = self._emit(mixed, labels, d)
        items = []
        for inst in insts:
            first = inst.layers[0] if inst.layers else None
            width = d if first is None or first.weight is None else int(first.weight.shape[1])
            items.append(
                Item(
                    inst,
                    stream_of[inst.id],
                    width,
                    first.act if first else "none",
                    first.bias if first else None,
                )
            )
        F, segments = column_layout(items, K)
        w = torch.zeros(K, d, F)
        bias_out = torch.zeros(K, F)
        for it in items:
            first = it.inst.layers[0] if it.inst.layers else None
            m = torch.eye(d) if first is None or first.weight is None else first.weight
            w[it.stream, :, it.col : it.col + it.width] = m.detach().cpu().float()
            if first is not None and first.bias is not None:
                bias_out[it.stream, it.col : it.col + it.width] = first.bias.detach().cpu().float()
        out = self._emit(Affine([aligned_term(m_slab, w)], bias_out, K, F, segments), labels, F)
        self._place(items, out, consumed=False)
        for it in items:
            self.done[it.inst.id] = 1 if it.inst.layers else 0
        self.choices.append(f"block {b}: softmax mix")

    # ------------------------------------------------------------------ later layers
    def _continue(self, insts: list[Instance]) -> None:
        """Each remaining component layer: one block-diagonal step per slab and depth."""
        while True:
            pending = [i for i in insts if self.done.get(i.id, 0) < len(i.layers)]
            if not pending:
                return
            by_slab: dict[int, list[Instance]] = {}
            for inst in pending:
                by_slab.setdefault(self.loc[inst.id][0], []).append(inst)
            for slab, group in by_slab.items():
                labels = self.labels[slab]
                S = len(labels)
                items = []
                for inst in group:
                    layer = inst.layers[self.done[inst.id]]
                    width = self.width[inst.id] if layer.weight is None else layer.weight.shape[1]
                    it = Item(inst, self.loc[inst.id][1], int(width), layer.act, layer.bias)
                    it.terms.append((self.loc[inst.id], self.width[inst.id], 1.0, layer.weight))
                    items.append(it)
                F, segments = column_layout(items, S)
                w = torch.zeros(S, self.widths_[slab], F)
                bias = torch.zeros(S, F)
                for it in items:
                    (_, s, c), d, _, m = it.terms[0]
                    block = torch.eye(d) if m is None else m.detach().cpu().float()
                    w[s, c : c + d, it.col : it.col + it.width] = block
                    if it.bias is not None:
                        bias[s, it.col : it.col + it.width] = it.bias.detach().cpu().float()
                out = self._emit(Affine([aligned_term(slab, w)], bias, S, F, segments), labels, F)
                for it in items:
                    self.loc[it.inst.id] = (out, it.stream, it.col)
                    self.width[it.inst.id] = it.width
                    self.done[it.inst.id] += 1
