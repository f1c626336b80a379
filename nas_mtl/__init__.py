"""nas-mtl: search how multi-task neural networks should share parameters.

The public API, importable from the package root::

    from nas_mtl import load_study, run_study                # the main job, as the CLI runs it
    from nas_mtl import load_dataset, build_space, Supernet   # the pieces ...
    from nas_mtl import search, derive, retrain               # ... and the stages
    from nas_mtl import new_graph, add_component, add_head, connect, gate_spec  # your own DAG

Names load on first use (PEP 562 module ``__getattr__``): ``import nas_mtl`` and the CLI's
argument parsing do not import torch, so the CLI can set thread settings before it loads.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_study": "nas_mtl.study",
    "parse_study": "nas_mtl.study",
    "Study": "nas_mtl.study",
    "SearchConfig": "nas_mtl.study",
    "RetrainConfig": "nas_mtl.study",
    "run_study": "nas_mtl.pipeline",
    "run_one": "nas_mtl.pipeline",
    "load_dataset": "nas_mtl.data",
    "MultiTaskData": "nas_mtl.data",
    "build_space": "nas_mtl.model.spaces",
    "Supernet": "nas_mtl.model.supernet",
    "search": "nas_mtl.stages.search",
    "derive": "nas_mtl.stages.derive",
    "retrain": "nas_mtl.stages.retrain",
    "new_graph": "nas_mtl.model.graph",
    "add_component": "nas_mtl.model.graph",
    "add_head": "nas_mtl.model.graph",
    "connect": "nas_mtl.model.graph",
    "gate_spec": "nas_mtl.model.graph",
    "validate": "nas_mtl.model.graph",
    "graph_costs": "nas_mtl.model.cost",
    "cluster_edge_sets": "nas_mtl.cluster",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nas_mtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
