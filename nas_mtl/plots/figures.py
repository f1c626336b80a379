"""Saving figures: headless, atomic, PNG and SVG from one figure.

The Agg backend is chosen before pyplot is imported, so plotting works on servers and in CI
without a display. A figure is rendered to bytes and written through ``storage``'s atomic
writer, so an interrupted run never leaves a half-written picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from nas_mtl.storage import write_bytes_atomic  # noqa: E402

FORMATS = ("png", "svg")
DPI = 130


def new_figure(width: float, height: float) -> Figure:
    """A figure not registered with pyplot's global state (no leak across many plots)."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, stem: str | Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``stem.png`` / ``stem.svg`` atomically; returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
        path = stem.with_suffix(f".{fmt}")
        write_bytes_atomic(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written
