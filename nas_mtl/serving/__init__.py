"""Serving a retrained architecture: packed dense model, export, preprocessing and predict.

``pack`` folds a retrained pruned model into a few dense matmuls per layer; the export,
the saved preprocessing and ``nas-mtl predict`` build on it. docs/serving.md.
"""

from __future__ import annotations

from nas_mtl.serving.packed import (
    DEFAULT_BATCH_HINT,
    PackedModel,
    PackedPerTask,
    ServedAsIs,
    pack,
    serving_model,
)
from nas_mtl.serving.trace import NotPackable

__all__ = [
    "DEFAULT_BATCH_HINT",
    "NotPackable",
    "PackedModel",
    "PackedPerTask",
    "ServedAsIs",
    "pack",
    "serving_model",
]
