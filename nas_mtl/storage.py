"""Writing files atomically, and reading JSON with errors that name the file.

Every write goes through a temp file and a rename, so a crash never leaves a half-written
result. Routing-graph and architecture files are in ``graph_files``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas_mtl.errors import GraphError


@functools.cache
def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 minus the process umask.

    Read once: reading the umask means setting it, which must not happen on every write.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would hide results from a user's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: JSON that strict parsers read."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Strict JSON (no bare NaN: a metric that is not a number is written as null)."""
    text = json.dumps(strict_json(payload), indent=2, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing or broken file is a GraphError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GraphError(f"{what} file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise GraphError(f"{path} is not valid JSON: {e}") from None


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line per record, flushed so a crash keeps every finished epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
