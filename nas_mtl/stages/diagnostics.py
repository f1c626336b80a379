"""What the search says about its gates: per-epoch figures and end-of-search warnings.

The figures are in ``docs/search.md`` ("Diagnostics"): open fraction, undecided pairs, dead
paths, temperature, penalties and multipliers; the warnings say in plain words when a search
ended undecided, collapsed to one path, kept everything, or needed derive's cap.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nas_mtl.stages.derive import Targets

UNDECIDED = (0.2, 0.8)  # an open probability in this band is undecided


def single_path(edges: set[tuple[str, str]]) -> bool:
    """True when no node of the subgraph has more than one incoming edge."""
    dst = [v for _, v in edges]
    return len(dst) == len(set(dst))


def between(p: Tensor, low: float, high: float) -> Tensor:
    return ((p > low) & (p < high)).float()


def search_warnings(record: dict[str, Any], targets: Targets) -> list[str]:
    """Plain-language warnings about the chosen epoch's architecture."""
    target = targets.open
    out = []
    if record.get("undecided", 0.0) > 0.25:
        out.append(
            f"the search ended undecided: {record['undecided']:.0%} of gate pairs have an open "
            f"probability between {UNDECIDED[0]} and {UNDECIDED[1]}; search longer, raise "
            f"lr_arch, or lower [search] anneal so temperatures reach their end sooner"
        )
    if record.get("dead_paths"):
        out.append(
            f"{record['dead_paths']} task(s) had no open path and kept their most probable "
            f"path; raise target_open or lower the penalty"
        )
    elif record.get("single_path"):
        out.append("the search collapsed to one path per task; raise target_open")
    frac = record.get("open_fraction", 0.0)
    greedy = record.get("greedy_open_fraction", frac)
    if target is not None and greedy > target + 0.05 and greedy < 0.95:
        out.append(
            f"the gates left {greedy:.0%} of the gated edges open; derive closed the least "
            f"probable ones to meet target_open = {target}; raise [search] min_steps or epochs "
            f"to let the search itself choose"
        )
    closed = record.get("cap_closed", 0.0)
    if target is not None and greedy <= target + 0.05 and closed > targets.tolerance:
        out.append(
            f"derive's cap closed {closed:.0%} of the pairs beyond the gates' own decisions "
            f"(more than target_tolerance = {targets.tolerance}): no epoch met target_open = "
            f"{target} by the gates alone; raise [search] min_steps or epochs"
        )
    macs = record.get("greedy_macs")
    if targets.macs is not None and macs is not None and macs > targets.macs * 1.05:
        out.append(
            f"the gates left {macs:,} multiply-adds; derive closed the least probable edges "
            f"to meet target_macs = {targets.macs:,.0f}; raise [search] dual_lr or epochs to "
            f"let the search itself choose"
        )
    if frac >= 0.95 and target is None and targets.macs is None:
        out.append(
            f"the search kept {frac:.0%} of the gated edges; set [search] target_open "
            f"(e.g. 0.4) or raise l0_weight to find a sparser structure"
        )
    elif target is not None and greedy >= 0.95 and target < 0.9:
        out.append(
            f"the gates kept {greedy:.0%} of the gated edges open and never approached "
            f"target_open = {target} (derive pruned the least probable ones); raise [search] "
            f"min_steps or epochs so the constraint can act"
        )
    return out
