"""From found task groups to a study that tests them: ``nas-mtl cluster --export-study``.

A clustering is a hypothesis ("these tasks should share a trunk"); the exported study reruns it
as the fixed space ``grouped`` (one trunk per group) beside no_sharing, shared_bottom and the
space that was searched, on the same data, seeds and training settings, so the report says
whether the grouping pays. The source study's file is the template: everything not about the
spaces is copied, a data file path is rewritten relative to the new study's folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from nas_mtl.errors import ConfigError
from nas_mtl.storage import write_bytes_atomic
from nas_mtl.study import load_study

COMPARED = ("no_sharing", "shared_bottom")
DEPTH_KEYS = ("layers", "width", "image_layers", "channels", "strides", "tower")


def grouped_study(
    study_path: str | Path,
    groups: Sequence[Sequence[str]],
    searched_space: str,
    dest: str | Path,
) -> dict[str, Any]:
    """The study document (a dict, TOML-ready) for ``dest``; see the module docstring.

    The grouped trunks take the searched space's depth and widths where it states them, so the
    comparison with the searched architecture is like for like.
    """
    study_path, dest = Path(study_path), Path(dest)
    try:
        raw = tomllib.loads(study_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the source study {study_path}: {e}") from None
    if not groups or any(not g for g in groups):
        raise ConfigError("export needs at least one non-empty group of tasks")
    out = {k: v for k, v in raw.items() if k not in ("spaces", "space_params", "controls", "sweep")}
    out["name"] = f"{raw.get('name', study_path.stem)}_grouped"
    out["description"] = (
        f"{len(groups)} task groups found in {searched_space}'s allocations, rerun as 'grouped' "
        f"beside {', '.join(COMPARED)} and {searched_space}"
    )
    out["spaces"] = list(dict.fromkeys([*COMPARED, "grouped", searched_space]))
    params: Mapping[str, Any] = raw.get("space_params", {})
    kept = {s: dict(params[s]) for s in out["spaces"] if s in params and s != "grouped"}
    trunk = {k: v for k, v in params.get(searched_space, {}).items() if k in DEPTH_KEYS}
    kept["grouped"] = {
        **dict(params.get("grouped", {})),
        **trunk,
        "groups": [list(g) for g in groups],
    }
    out["space_params"] = kept
    data = dict(raw.get("data", {}))
    if data.get("file") and not Path(data["file"]).is_absolute():
        source = (study_path.parent / data["file"]).resolve()
        data["file"] = os.path.relpath(source, dest.parent.resolve())
    if "sweep" in data:  # a grouping was found on one data variant: rerun on that one only
        raise ConfigError(
            f"{study_path} sweeps [data] parameters; export the groups of one variant by "
            f"giving that variant's run folder"
        )
    out["data"] = data
    return out


def write_grouped_study(
    study_path: str | Path,
    groups: Sequence[Sequence[str]],
    searched_space: str,
    dest: str | Path,
) -> Path:
    """Write :func:`grouped_study` to ``dest`` (atomic) and check that it loads as a study."""
    dest = Path(dest)
    doc = grouped_study(study_path, groups, searched_space, dest)
    header = (
        f"# Exported by `nas-mtl cluster` from {Path(study_path).name}: the task groups that\n"
        f"# {searched_space}'s allocations found, as a fixed 'grouped' space to rerun.\n"
    )
    write_bytes_atomic(dest, (header + tomli_w.dumps(doc)).encode())
    load_study(dest)  # fails loudly here, not when the user runs it
    return dest
