"""Reading a search log's gates: each learned edge's open probability, per task.

The drawings take probabilities as a plain mapping (task, u, v) -> P(open); this module is
the one place that knows how ``search_log.jsonl`` lays them out (gate blocks, task or shared
scope, nested [rows][src][dst] lists), so a change to the log format touches only it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nas_mtl.errors import GraphError

EdgeProbabilities = Mapping[tuple[str, str, str], float]  # (task, u, v) -> P(open)


def edge_probabilities(
    record: Mapping[str, Any], tasks: Sequence[str]
) -> dict[tuple[str, str, str], float]:
    """P(open) of every learned edge for every task, from one search-log record.

    ``record`` is a line of ``search_log.jsonl`` (the last is the final epoch): its ``gates``
    list holds, per learned gate block, ``src``, ``dst``, ``scope`` and ``open_probability``
    as nested lists [rows][len(src)][len(dst)], one row per task (in ``tasks`` order) when the
    scope is "task", else one row shared by all tasks. Pairs that are not edges of the graph
    come out as 0 and are never looked up. Edges without a learned gate are absent: they are
    always open, and readers treat a missing key as probability 1 (:func:`open_probability`).

    >>> rec = {"gates": [{"src": ["a"], "dst": ["b"], "scope": "shared",
    ...                   "open_probability": [[[0.25]]]}]}
    >>> edge_probabilities(rec, ["t1", "t2"])
    {('t1', 'a', 'b'): 0.25, ('t2', 'a', 'b'): 0.25}
    """
    tasks = list(tasks)
    out: dict[tuple[str, str, str], float] = {}
    for gate in record.get("gates", []):
        rows = gate["open_probability"]
        per_task = gate.get("scope") == "task"
        if len(rows) != (len(tasks) if per_task else 1):
            raise GraphError(
                f"gate block {gate.get('block', '?')} ({gate.get('scope')} scope) has "
                f"{len(rows)} rows of open probabilities; expected "
                f"{len(tasks) if per_task else 1} for tasks {tasks}: pass the tasks the "
                "search ran with, in the graph's order"
            )
        for r, row in enumerate(rows):
            users = [tasks[r]] if per_task else tasks
            for j, u in enumerate(gate["src"]):
                for c, v in enumerate(gate["dst"]):
                    for t in users:
                        out[(t, u, v)] = float(row[j][c])
    return out


def open_probability(probabilities: EdgeProbabilities | None, task: str, u: str, v: str) -> float:
    """An edge's P(open) for ``task``; 1 for edges without a learned gate (always open)."""
    return 1.0 if probabilities is None else float(probabilities.get((task, u, v), 1.0))
