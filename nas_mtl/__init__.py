"""nas-mtl: search how multi-task neural networks should share parameters."""

from __future__ import annotations

__version__ = "0.1.0"
