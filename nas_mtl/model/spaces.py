"""Search spaces as declarative TOML files, compiled into routing graphs by one builder.

A space file has a ``description``, a ``[params]`` table of sizes a study may override, and
either a stack of ``[[layers]]`` plus ``[heads]`` or an explicit ``[[nodes]]``/``[[edges]]``
DAG. Any value may reference a parameter as ``"$name"``; ``"$tasks"`` is the number of tasks.
See ``search_spaces/README.md`` for the format.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.model.graph import (
    INPUT,
    add_component,
    add_head,
    assign_layers,
    connect,
    gate_spec,
    head_id,
    new_graph,
    validate,
)
from nas_mtl.storage import read_toml_text

LAYER_KEYS = {
    "repeat",
    "count",
    "component",
    "components",
    "connect",
    "transform",
    "gate",
    "first_gate",
    "in_width",
    "per_repeat",
    "when",
    "name",
}
HEAD_KEYS = {"connect", "transform", "gate", "tower", "in_width", "activation"}
NODE_KEYS = {"id", "kind", "width", "in_width", "layer", "params"}
EDGE_KEYS = {"src", "dst", "gate", "transform"}
TOP_KEYS = {"description", "params", "layers", "heads", "nodes", "edges"}
GATE_KEYS = {"kind", "scope", "group"}


def spaces_dirs() -> list[Path]:
    """Where named spaces are looked up: $NAS_MTL_SPACES_DIR, the source tree, the install."""
    dirs = []
    if os.environ.get("NAS_MTL_SPACES_DIR"):
        dirs.append(Path(os.environ["NAS_MTL_SPACES_DIR"]))
    dirs.append(Path(__file__).resolve().parents[2] / "search_spaces")
    dirs.append(Path(sys.prefix) / "share" / "nas-mtl" / "search_spaces")
    return [d for d in dirs if d.is_dir()]


def available_spaces() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in spaces_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def space_path(space: str | Path) -> Path:
    """A space name ('mmoe') or a path to a .toml file."""
    p = Path(space)
    if p.suffix == ".toml":
        if not p.is_file():
            raise ConfigError(f"search-space file not found: {p}")
        return p
    found = available_spaces()
    if str(space) not in found:
        raise ConfigError(
            f"unknown search space '{space}'{did_you_mean(str(space), found)}; "
            f"known: {', '.join(found)} (or give a path to a .toml file)"
        )
    return found[str(space)]


@dataclass(frozen=True)
class SpaceFile:
    name: str
    path: Path
    description: str
    params: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False)


def load_space(space: str | Path) -> SpaceFile:
    path = space_path(space)
    try:
        raw = tomllib.loads(read_toml_text(path, "search-space file"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    _check_keys(raw, TOP_KEYS, f"{path}")
    if ("layers" in raw) == ("nodes" in raw) or ("layers" in raw and "edges" in raw):
        raise ConfigError(f"{path}: give either [[layers]] + [heads] or [[nodes]] + [[edges]]")
    return SpaceFile(
        name=path.stem,
        path=path,
        description=str(raw.get("description", "")),
        params=dict(raw.get("params", {})),
        raw=raw,
    )


def list_spaces() -> list[tuple[str, str]]:
    return [(name, load_space(p).description) for name, p in available_spaces().items()]


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )


class _Resolver:
    """Replaces "$name" references with parameter values."""

    def __init__(self, params: Mapping[str, Any], where: str) -> None:
        self.params, self.where = params, where

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            name = value[1:]
            if name not in self.params:
                raise ConfigError(
                    f"{self.where}: '{value}' names no parameter{did_you_mean(name, self.params)}"
                )
            return self.params[name]
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


def _gate(table: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    table = dict(table or {"kind": "fixed"})
    kind = table.pop("kind", "fixed")
    scope = table.pop("scope", "task" if kind == "gumbel" else "shared")
    group = table.pop("group", None)
    return gate_spec(kind, scope, group, **table)


def _kind_of(default: Any) -> tuple[str, Callable[[Any], bool]]:
    """What a parameter with this default may be set to: its default's type (an integer where
    the default is one, any number where it is a float or an off-switch ``false``)."""
    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    if isinstance(default, bool):
        return "true, false or a number", lambda v: isinstance(v, bool) or number(v)
    if isinstance(default, int):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return "a number", number
    if isinstance(default, str):
        return "text (a quoted string)", lambda v: isinstance(v, str)
    if isinstance(default, list):
        if default and all(isinstance(d, int) and not isinstance(d, bool) for d in default):
            ints = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
            return "a list of integers", lambda v: isinstance(v, list) and all(map(ints, v))
        return "a list", lambda v: isinstance(v, list)
    return "a value", lambda v: True


def check_space_params(
    space: str | Path | SpaceFile, params: Mapping[str, Any], where: str = ""
) -> None:
    """Every key of ``params`` is a ``[params]`` entry of the space file, of its default's type
    (checked when a study is read, so a typo fails before any training)."""
    sf = space if isinstance(space, SpaceFile) else load_space(space)
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"{where}[space_params] {sf.name} must be a table of its parameters, got {params!r}"
        )
    for key, value in params.items():
        if key not in sf.params:
            raise ConfigError(
                f"{where}search space '{sf.name}' has no parameter '{key}'"
                f"{did_you_mean(key, sf.params)}; its parameters: "
                f"{', '.join(sf.params) or 'none'}"
            )
        what, ok = _kind_of(sf.params[key])
        if not ok(value):
            raise ConfigError(
                f"{where}[space_params] {sf.name}.{key} must be {what} (its default is "
                f"{sf.params[key]!r}), got {value!r}"
            )


def build_space(
    space: str | Path, input_shape: Sequence[int], tasks: Mapping[str, int], **overrides: Any
) -> nx.DiGraph:
    """Compile a space file into a validated routing graph.

    ``tasks`` maps task name to output size; ``overrides`` replace ``[params]`` defaults and
    an unknown override is an error with a did-you-mean.
    """
    sf = load_space(space)
    check_space_params(sf, overrides)
    params = {**sf.params, **overrides, "tasks": len(tasks), "input_width": int(input_shape[0])}
    where = str(sf.path)
    if "groups" in params:
        params["n_groups"] = len(_check_groups(params["groups"], list(tasks), sf.name))
    res = _Resolver(params, where)
    g = new_graph(tuple(int(d) for d in input_shape), tasks, name=sf.name)
    g.graph["space_params"] = {k: v for k, v in params.items() if k in sf.params}
    image = len(input_shape) == 3
    if "layers" in sf.raw:
        _build_layers(g, sf, res, image)
    else:
        _build_explicit(g, sf, res)
    assign_layers(g)
    validate(g)
    return g


def _build_layers(g: nx.DiGraph, sf: SpaceFile, res: _Resolver, image: bool) -> None:
    where = str(sf.path)
    prev = [INPUT]
    layer = 0
    entries = [
        e
        for e in sf.raw["layers"]
        if e.get("when", "any") in ("any", "image" if image else "tabular")
    ]
    if not entries:
        raise ConfigError(
            f"{where}: no [[layers]] apply to {'image' if image else 'tabular'} "
            f"input; this space does not support it"
        )
    for i, entry in enumerate(entries):
        w = f"{where} [[layers]] #{i + 1}"
        _check_keys(entry, LAYER_KEYS, w)
        repeat = res(entry.get("repeat", 1))
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ConfigError(f"{w}: repeat must be an integer >= 1, got repeat = {repeat!r}")
        per_repeat = {k: res(v) for k, v in entry.get("per_repeat", {}).items()}
        for k, v in per_repeat.items():
            if not isinstance(v, list) or len(v) != repeat:
                raise ConfigError(f"{w}: per_repeat.{k} must be a list of {repeat} values, got {v}")
        for r in range(repeat):
            layer += 1
            if "components" in entry:
                specs = [dict(res(c)) for c in entry["components"]]
            else:
                specs = [dict(res(entry["component"]))] * int(res(entry.get("count", 1)))
            nodes = []
            for c, spec in enumerate(specs):
                spec = {**spec, **{k: v[r] for k, v in per_repeat.items()}}
                kind, width = spec.pop("kind", None), spec.pop("width", None)
                if kind is None or width is None:
                    raise ConfigError(f"{w}: a component needs 'kind' and 'width'")
                name = entry.get("name", "L")
                in_width = (
                    res(entry.get("in_width")) if entry.get("transform") == "linear" else None
                )
                if entry.get("transform") == "linear" and in_width is None:
                    in_width = width
                nodes.append(
                    add_component(
                        g, f"{name}{layer}.{c}", kind, int(width), layer, in_width=in_width, **spec
                    )
                )
            gate = _gate(
                res(entry.get("first_gate", entry.get("gate")))
                if r == 0
                else res(entry.get("gate")),
                w,
            )
            _connect_layer(
                g,
                prev,
                nodes,
                entry.get("connect", "all"),
                gate,
                entry.get("transform", "identity"),
                w,
            )
            prev = nodes
    heads_cfg = dict(sf.raw.get("heads", {}))
    _check_keys(heads_cfg, HEAD_KEYS, f"{where} [heads]")
    transform = heads_cfg.get("transform", "identity")
    in_width = res(heads_cfg.get("in_width")) if transform == "linear" else None
    hs = [
        add_head(
            g,
            t,
            res(heads_cfg.get("tower", [])),
            in_width,
            res(heads_cfg.get("activation", "relu")),
        )
        for t in g.graph["tasks"]
    ]
    _connect_layer(
        g,
        prev,
        hs,
        heads_cfg.get("connect", "all"),
        _gate(res(heads_cfg.get("gate")), where),
        transform,
        f"{where} [heads]",
    )


def _check_groups(groups: Any, tasks: list[str], space: str) -> list[list[str]]:
    """Task groups as lists of task names: every task in exactly one group."""
    fix = f"set [space_params] {space} = {{ groups = [[task, ...], ...] }} naming every task"
    if not isinstance(groups, list) or not groups or not all(isinstance(g, list) for g in groups):
        raise ConfigError(f"search space '{space}' needs groups as lists of task names; {fix}")
    seen = [t for grp in groups for t in grp]
    unknown = sorted(set(seen) - set(tasks))
    missing = [t for t in tasks if t not in seen]
    twice = sorted({t for t in seen if seen.count(t) > 1})
    if unknown or missing or twice or any(not grp for grp in groups):
        problems = [
            f"unknown tasks {unknown}" if unknown else "",
            f"tasks in no group {missing}" if missing else "",
            f"tasks in several groups {twice}" if twice else "",
            "an empty group" if any(not grp for grp in groups) else "",
        ]
        raise ConfigError(
            f"search space '{space}': groups have {'; '.join(p for p in problems if p)}; {fix}"
        )
    return groups


def _connect_layer(
    g: nx.DiGraph,
    src: list[str],
    dst: list[str],
    pattern: str,
    gate: dict[str, Any],
    transform: str,
    where: str,
) -> None:
    if pattern == "groups":  # trunk k of the previous layer feeds the heads of group k
        groups = g.graph["space_params"].get("groups")
        if not groups or len(groups) != len(src) or any(g.nodes[v]["role"] != "head" for v in dst):
            raise ConfigError(
                f"{where}: connect = 'groups' joins one component per group (count = "
                f"'$n_groups') to the heads, with the space parameter 'groups'"
            )
        member = {t: k for k, grp in enumerate(groups) for t in grp}
        for v in dst:
            connect(g, src[member[g.nodes[v]["task"]]], v, gate, transform)
        return
    if pattern == "all":
        pairs = [(u, v) for v in dst for u in src]
    elif pattern == "diagonal":
        if len(src) != len(dst) and len(src) != 1:
            raise ConfigError(
                f"{where}: connect = 'diagonal' needs as many sources ({len(src)}) "
                f"as destinations ({len(dst)})"
            )
        pairs = [(src[0] if len(src) == 1 else src[i], v) for i, v in enumerate(dst)]
    else:
        raise ConfigError(
            f"{where}: connect must be 'all', 'diagonal' or 'groups', got {pattern!r}"
        )
    for u, v in pairs:
        connect(g, u, v, gate, transform)


def _build_explicit(g: nx.DiGraph, sf: SpaceFile, res: _Resolver) -> None:
    where = str(sf.path)
    for i, node in enumerate(sf.raw.get("nodes", [])):
        _check_keys(node, NODE_KEYS, f"{where} [[nodes]] #{i + 1}")
        node = res(node)
        add_component(
            g,
            node["id"],
            node["kind"],
            int(node["width"]),
            node.get("layer"),
            in_width=node.get("in_width"),
            **node.get("params", {}),
        )
    heads_cfg = dict(sf.raw.get("heads", {}))
    _check_keys(heads_cfg, HEAD_KEYS, f"{where} [heads]")
    for t in g.graph["tasks"]:
        add_head(
            g,
            t,
            res(heads_cfg.get("tower", [])),
            res(heads_cfg.get("in_width")),
            res(heads_cfg.get("activation", "relu")),
        )
    for i, edge in enumerate(sf.raw.get("edges", [])):
        w = f"{where} [[edges]] #{i + 1}"
        _check_keys(edge, EDGE_KEYS, w)
        edge = res(edge)
        dsts = [head_id(t) for t in g.graph["tasks"]] if edge["dst"] == "@heads" else [edge["dst"]]
        for dst in dsts:
            for end in (edge["src"], dst):
                if end not in g:
                    raise ConfigError(f"{w}: unknown node '{end}'{did_you_mean(end, g.nodes)}")
            connect(
                g, edge["src"], dst, _gate(edge.get("gate"), w), edge.get("transform", "identity")
            )
