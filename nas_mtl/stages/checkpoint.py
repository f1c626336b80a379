"""Atomic checkpoints: a crash mid-write never replaces a good file with a broken one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nas_mtl.errors import CheckpointError
from nas_mtl.storage import append_jsonl, file_mode


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by nas-mtl; a broken file is a one-line error naming it.

    Loading is always ``weights_only=True`` (tensors and plain containers, never code), so a
    crafted file cannot run anything; a file that fails that is treated as corrupt.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, or holding objects beyond weights
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}); it is corrupt or not "
            f"nas-mtl's: delete it (or its run directory) and rerun that stage"
        ) from None


def prune_epoch_checkpoints(folder: Path, stem: str, keep: int) -> None:
    """Keep the newest ``keep`` files ``{stem}_epoch_NNN.pt``; ``{stem}_best.pt`` is separate."""
    files = sorted(folder.glob(f"{stem}_epoch_*.pt"))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)


def last_epoch_checkpoint(folder: Path | None, stem: str) -> Path | None:
    """The newest ``{stem}_epoch_NNN.pt`` in ``folder``, or None."""
    if folder is None:
        return None
    files = sorted(folder.glob(f"{stem}_epoch_*.pt"))
    return files[-1] if files else None


def history_until(log_path: Path | None, last_epoch: int) -> list[dict[str, Any]]:
    """The log's records up to ``last_epoch`` (rewriting the log without any later line)."""
    if log_path is None or not log_path.exists():
        return []
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["epoch"] <= last_epoch]
    log_path.unlink()
    for r in kept:
        append_jsonl(log_path, r)
    return kept
