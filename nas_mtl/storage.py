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

from nas_mtl.errors import ConfigError, GraphError


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


def read_json(path: str | Path, what: str, kind: type = object, keys: tuple[str, ...] = ()) -> Any:
    """Parse a JSON file that nas-mtl wrote; a missing, broken or edited file is a GraphError
    naming it. ``kind`` (``dict``, ``list``) and ``keys`` are what the reader needs, so a file a
    user edited by hand is an answer about that file, not a KeyError deep inside a command."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise GraphError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise GraphError(f"{path} is a folder, not the {what} file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GraphError(
            f"{path} is not valid JSON ({e}); rerun the step that writes it, or restore it"
        ) from None
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if not isinstance(value, kind) or missing:
        found = f"lacks {', '.join(map(repr, missing))}" if missing else "holds another kind"
        raise GraphError(
            f"{path} is not a {what} file nas-mtl wrote (it {found}); rerun the step that "
            "writes it, or restore it"
        )
    return value


def read_toml_text(path: Path, what: str) -> str:
    """The text of a TOML file (a study or a search space); a file that is not UTF-8 text is
    a one-line error.

    TOML is UTF-8 by definition; a UTF-8 byte-order mark (some Windows editors write one) is
    dropped, and line ends are read as ``\\n`` whatever the file uses, as ``Path.read_text``
    reads them (so a study's SHA-256 does not change with its line ends).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the {what}'s path (a .toml file)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}){hint}; "
            "TOML files must be UTF-8: save it as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line per record, flushed so a crash keeps every finished epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
