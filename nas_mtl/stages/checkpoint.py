"""Atomic checkpoints: a crash mid-write never replaces a good file with a broken one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prune_epoch_checkpoints(folder: Path, stem: str, keep: int) -> None:
    """Keep the newest ``keep`` files ``{stem}_epoch_NNN.pt``; ``{stem}_best.pt`` is separate."""
    files = sorted(folder.glob(f"{stem}_epoch_*.pt"))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)
