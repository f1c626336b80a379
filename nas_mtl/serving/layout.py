"""The planner's bookkeeping: where a step puts each instance's output, and what a step costs.

Every first step the planner emits (fold, mix, softmax mix) and every later layer is built from
the same pieces: the slab address of each value (``Loc``), one :class:`Item` per instance's
output with the terms of its input sum, the step's output columns (one segment per activation,
streams padded to the widest), and the two-term cost model that picks fold or mix at the batch
hint. They live here, apart from :class:`nas_mtl.serving.planner.Planner`, so that the planner
reads as its decisions. docs/serving.md, "Packing" and "Costs and the batch hint".
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from nas_mtl.serving.instances import Instance, Layer
from nas_mtl.serving.ops import Segment

CALL_US = 4.0  # one eager PyTorch call on a CPU core: dispatch, allocation, BLAS set-up
MAC_US = 2.5e-5  # one multiply-add inside a BLAS call (about 40 GMAC/s on one core)
WAKE_US = 10.0  # a batched matmul under > 1 thread: ATen splits it over the sleeping workers

Labels = tuple[Hashable, ...]  # one per stream of a slab
Loc = tuple[int, int, int]  # (slab, stream, first column)


@dataclass
class Cost:
    macs: int = 0  # per example
    calls: int = 0
    batched: int = 0  # calls that are batched matmuls over streams (bmm, baddbmm)

    def time(self, batch: int, threads: int = 1) -> float:
        wake = self.batched * WAKE_US if threads > 1 else 0.0
        return self.calls * CALL_US + wake + self.macs * batch * MAC_US


Plan = tuple[Cost, Callable[[], None]]  # a candidate step: its cost, and how to emit it


@dataclass
class Item:
    """One instance's output in a step: where it goes and what it is made of."""

    inst: Instance
    stream: int
    width: int
    act: str
    bias: Tensor | None
    col: int = 0
    terms: list[tuple[Loc, int, float, Tensor | None]] = field(default_factory=list)
    # terms: (source location, source width, coefficient, matrix; None = identity)


def column_layout(items: Sequence[Item], streams: int) -> tuple[int, list[Segment]]:
    """Columns of a step's output: one segment per activation, padded to the widest stream."""
    acts = list(dict.fromkeys(it.act for it in items))
    segments: list[Segment] = []
    lo = 0
    for act in acts:
        used = [0] * streams
        for it in items:
            if it.act == act:
                it.col = lo + used[it.stream]
                used[it.stream] += it.width
        hi = lo + max(used)
        segments.append((lo, hi, act))
        lo = hi
    return lo, segments


def aligned_term(slab: int, w: Tensor) -> tuple[int, str, int, Tensor]:
    """A term whose output stream s reads stream s of ``slab`` (a one-stream slab is 2-D)."""
    return (slab, "bmm", 0, w) if w.shape[0] > 1 else (slab, "mm", 0, w[0])


def first_layer(inst: Instance) -> Layer | None:
    """The component layer the first step takes over: after identity edges, or a bias-only
    layer after linear edges (the SNR-Trans sub-network)."""
    if not inst.layers:
        return None
    first = inst.layers[0]
    return first if not inst.linear or first.weight is None else None


def in_width(inst: Instance, widths: dict[int, int]) -> int:
    if inst.sources:
        src = inst.sources[0]
        return int(src.edge.shape[1]) if src.edge is not None else widths[src.instance]
    if inst.layers and inst.layers[0].weight is not None:
        return int(inst.layers[0].weight.shape[0])
    return inst.width
