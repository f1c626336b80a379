"""Which tasks belong together, read from finished runs: the ``nas-mtl cluster`` stage.

For one run directory: its derived architecture's allocation embedding, clustered. For an
output folder: every searched space's seeds, clustered one by one, with their stability (mean
pairwise ARI) and consensus; with known groups, the ARI against them (``docs/search.md``,
"Task groups").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nas_mtl.cluster import (
    Clustering,
    allocation_embedding,
    ari,
    cluster_tasks,
    consensus,
    similarity,
    stability,
)
from nas_mtl.errors import ConfigError
from nas_mtl.graph_files import load_architecture
from nas_mtl.results import RESULT_FILE, read_result
from nas_mtl.storage import read_json

ARCHITECTURE = "architecture.json"


@dataclass(frozen=True)
class SpaceGroups:
    """The task groups one searched space found, over its seeds."""

    space: str
    tasks: tuple[str, ...]
    labels: dict[str, int]  # the consensus (a single seed's clustering for one run)
    k: int
    seeds: int
    stability: float  # mean pairwise ARI of the seeds' clusterings (1.0 for one seed)
    truth_ari: float | None  # against known groups, when given


def _cluster(run_dir: Path, k: int | None, metric: str, method: str) -> tuple:
    emb = allocation_embedding(load_architecture(run_dir / ARCHITECTURE).graph)
    return emb.tasks, cluster_tasks(similarity(emb.matrix, metric), k, method)


def groups_of_runs(
    run_dirs: list[Path],
    space: str,
    k: int | None = None,
    metric: str = "cosine",
    method: str = "agglomerative",
    truth: Mapping[str, int] | None = None,
) -> SpaceGroups:
    """Cluster each run's tasks; pool the seeds by consensus at the most common k."""
    found = [_cluster(d, k, metric, method) for d in run_dirs]
    tasks = found[0][0]
    clusterings: list[Clustering] = [c for _, c in found]
    ks = [c.k for c in clusterings]
    k_all = k if k is not None else max(set(ks), key=ks.count)
    labelings = [c.labels for c in clusterings]
    pooled = labelings[0] if len(labelings) == 1 else consensus(labelings, k_all)
    labels = {t: int(c) for t, c in zip(tasks, pooled, strict=True)}
    return SpaceGroups(
        space=space,
        tasks=tasks,
        labels=labels,
        k=k_all,
        seeds=len(run_dirs),
        stability=stability(labelings),
        truth_ari=ari(labels, truth) if truth else None,
    )


def task_groups(
    path: Path,
    k: int | None = None,
    metric: str = "cosine",
    method: str = "agglomerative",
    truth: Mapping[str, int] | None = None,
) -> list[SpaceGroups]:
    """The groups of a run directory, or of every searched space in an output folder."""
    path = Path(path)
    if (path / ARCHITECTURE).exists():
        space = read_json(path / "context.json", "run context").get("space", path.parent.name)
        return [groups_of_runs([path], space, k, metric, method, truth)]
    runs: dict[str, list[Path]] = {}
    for result_file in sorted(path.glob(f"*/*/seed_*/{RESULT_FILE}")):
        result = read_result(result_file)
        if result.searched:
            runs.setdefault(f"{result.space} ({result_file.parent.parent.parent.name})", []).append(
                result_file.parent
            )
    if not runs:
        raise ConfigError(
            f"{path} holds no searched run with an {ARCHITECTURE}; give a run directory "
            f"(OUT/<variant>/<space>/seed_<s>) or the output folder of a searched study"
        )
    return [groups_of_runs(d, s, k, metric, method, truth) for s, d in runs.items()]


def read_groups(path: Path) -> dict[str, int]:
    """Known groups from a JSON file: {"task": group, ...} or [["a", "b"], ["c"]]."""
    data = read_json(path, "groups")
    if isinstance(data, dict):
        ids: dict[str, int] = {}
        return {str(t): ids.setdefault(str(g), len(ids)) for t, g in data.items()}
    if isinstance(data, list) and all(isinstance(g, list) for g in data):
        return {str(t): i for i, members in enumerate(data) for t in members}
    raise ConfigError(f'{path}: give groups as {{"task": group}} or [["a", "b"], ["c"]]')


def format_groups(found: list[SpaceGroups]) -> str:
    lines = []
    for g in found:
        members: dict[int, list[str]] = {}
        for t, c in g.labels.items():
            members.setdefault(c, []).append(t)
        truth = f", ARI vs known groups {g.truth_ari:.2f}" if g.truth_ari is not None else ""
        lines.append(
            f"{g.space}: k = {g.k} over {g.seeds} seed(s), seed stability (mean pairwise ARI) "
            f"{g.stability:.2f}{truth}"
        )
        lines += [f"  group {i}: {', '.join(ts)}" for i, ts in enumerate(members.values())]
    return "\n".join(lines)
