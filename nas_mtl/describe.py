"""Preview a study before anything trains: per space, how big the supernet is and what is searched.

A search can run for hours; ``nas-mtl describe`` shows in a second whether the spaces are the
sizes the user meant (parameters, multiply-adds, components, layers) and how many gate
decisions the search will make, so a typo in a width or a space that has nothing to search is
caught before the run, not after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas_mtl.model.cost import graph_costs
from nas_mtl.model.graph import components
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.results import graph_shape
from nas_mtl.stages.derive import learned_pairs
from nas_mtl.study import Study
from nas_mtl.study_data import load_data


@dataclass(frozen=True)
class SpaceSummary:
    """The size of one space's supernet on the study's data, and what its search decides."""

    space: str
    params: int  # all weights of the supernet (every part once)
    macs: int  # multiply-adds per example, every task served, every gate open
    components: int
    depth: int  # component layers on the longest input → head path
    widths: tuple[int, ...]  # distinct component widths
    gate_variables: int  # learnable gate parameters (logits / log α)
    gated_pairs: int  # learned (task, edge) decisions: the denominator of the open fraction


def describe_space(
    study: Study, space: str, input_shape: tuple[int, ...], tasks: dict
) -> SpaceSummary:
    """Build one space of the study on ``input_shape`` and ``tasks`` ({name: out_dim})."""
    graph = build_space(space, input_shape, tasks, **study.space_params.get(space, {}))
    net = Supernet(graph)
    cost = graph_costs(graph)
    comps = components(graph)
    shape = graph_shape(graph)
    return SpaceSummary(
        space=space,
        params=cost["total"]["params"],
        macs=cost["total"]["macs"],
        components=len(comps),
        depth=shape["depth"],
        widths=tuple(shape["widths"]),
        gate_variables=sum(p.numel() for p in net.arch_parameters()),
        gated_pairs=len(learned_pairs(net)),
    )


def describe_study(study: Study, data_dir: str | Path | None = None) -> list[SpaceSummary]:
    """Every space of the study on its data (first sweep point and seed: shapes do not vary)."""
    variant = study.variants()[0]
    data = load_data(study, variant, study.seeds[0], data_dir)
    study = study.for_variant(variant)
    tasks = {t.name: t.out_dim for t in data.tasks}
    return [describe_space(study, s, data.input_shape, tasks) for s in study.spaces]


def format_summaries(rows: list[SpaceSummary]) -> str:
    """A plain-text table, one row per space."""
    head = ("space", "params", "MACs", "components", "depth", "widths", "gate vars", "gated pairs")
    cells = [
        (
            r.space,
            f"{r.params:,}",
            f"{r.macs:,}",
            str(r.components),
            str(r.depth),
            ",".join(map(str, r.widths)),
            str(r.gate_variables),
            str(r.gated_pairs) if r.gated_pairs else "– (nothing to search)",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
    lines = [
        "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in (head, *cells)
    ]
    return "\n".join(lines)
