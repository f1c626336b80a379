"""Which tasks belong together, read from finished runs: the ``nas-mtl cluster`` stage.

Two independent task embeddings: the *allocation* (which components each task's derived
architecture uses) and, where the search measured it, the *gradient affinity* (how a step on
one task's loss changes another's). For one run directory: its tasks clustered. For an output
folder: every searched space's seeds, clustered one by one, with their stability (mean pairwise
ARI) and a consensus; with known groups (a file, or the groups a built-in data set planted), the
ARI against them; with both embeddings, their agreement (``docs/plots.md``, "Task groups").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas_mtl.cluster import (
    allocation_embedding,
    ari,
    cluster_tasks,
    consensus,
    informative_columns,
    similarity,
    stability,
)
from nas_mtl.data import DOMAINS, domain_of
from nas_mtl.errors import ConfigError, NasMtlError
from nas_mtl.model.graph_files import load_architecture
from nas_mtl.results import RESULT_FILE, read_result
from nas_mtl.rundir import safe_name, study_of_run
from nas_mtl.stages.affinity import AFFINITY_FILE, affinity_similarity, read_affinity
from nas_mtl.storage import read_json, write_json_atomic

ARCHITECTURE = "architecture.json"
EMBEDDINGS = ("allocation", "affinity")
SYNTHETIC_TASK = re.compile(r"g(\d+)_t\d+")  # the synthetic generator's planted-group names


@dataclass(frozen=True)
class SpaceGroups:
    """The task groups one searched space found, over its seeds, from one embedding."""

    space: str
    embedding: str  # "allocation" (derived architectures) or "affinity" (gradients)
    tasks: tuple[str, ...]
    similarity: np.ndarray  # (T, T), averaged over the seeds
    labels: dict[str, int]  # the consensus (a single seed's clustering for one run)
    k: int
    run_dirs: tuple[Path, ...]
    stability: float  # mean pairwise ARI of the seeds' clusterings (1.0 for one seed)
    seed_aris: tuple[float, ...] | None  # each seed's ARI against known groups
    truth_ari: float | None  # the consensus' ARI against known groups
    truth: Mapping[str, int] | None = None  # the known groups, when there are any

    def groups(self) -> list[list[str]]:
        """The clusters as lists of task names, in task order."""
        members: dict[int, list[str]] = {}
        for t in self.tasks:
            members.setdefault(self.labels[t], []).append(t)
        return list(members.values())


def run_similarity(
    run_dir: Path, embedding: str, metric: str
) -> tuple[tuple[str, ...], np.ndarray]:
    """A run's task × task similarity from its allocation or its gradient affinity."""
    if embedding == "allocation":
        emb = allocation_embedding(load_architecture(run_dir / ARCHITECTURE).graph)
        return emb.tasks, similarity(informative_columns(emb.matrix), metric)
    if embedding == "affinity":
        tasks, matrix = read_affinity(run_dir)
        return tuple(tasks), affinity_similarity(matrix)
    raise ConfigError(f"--embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")


def groups_of_runs(
    run_dirs: Sequence[Path],
    space: str,
    k: int | None = None,
    metric: str = "cosine",
    method: str = "agglomerative",
    truth: Mapping[str, int] | None = None,
    embedding: str = "allocation",
) -> SpaceGroups:
    """Cluster each run's tasks; pool the seeds by consensus at the most common k."""
    found = [run_similarity(Path(d), embedding, metric) for d in run_dirs]
    tasks = found[0][0]
    if k is not None and not 1 <= k <= len(tasks):
        raise ConfigError(f"k = {k}: {space} has {len(tasks)} tasks; choose k in 1..{len(tasks)}")
    clusterings = [cluster_tasks(sim, k, method) for _, sim in found]
    ks = [c.k for c in clusterings]
    k_all = k if k is not None else max(set(ks), key=ks.count)
    labelings = [c.labels for c in clusterings]
    pooled = labelings[0] if len(labelings) == 1 else consensus(labelings, k_all)

    def named(labels: np.ndarray) -> dict[str, int]:
        return {t: int(c) for t, c in zip(tasks, labels, strict=True)}

    return SpaceGroups(
        space=space,
        embedding=embedding,
        tasks=tasks,
        similarity=np.mean([sim for _, sim in found], axis=0),
        labels=named(pooled),
        k=k_all,
        run_dirs=tuple(Path(d) for d in run_dirs),
        stability=stability(labelings),
        seed_aris=tuple(ari(named(lab), truth) for lab in labelings) if truth else None,
        truth_ari=ari(named(pooled), truth) if truth else None,
        truth=dict(truth) if truth else None,
    )


def searched_runs(path: Path) -> dict[str, list[Path]]:
    """Searched run directories by "space (variant)": one run directory, or an output folder."""
    path = Path(path)
    if (path / ARCHITECTURE).exists():
        space = read_json(path / "context.json", "run context").get("space", path.parent.name)
        return {space: [path]}
    runs: dict[str, list[Path]] = {}
    for result_file in sorted(path.glob(f"*/*/seed_*/{RESULT_FILE}")):
        result = read_result(result_file)
        if result.searched:
            variant = result_file.parent.parent.parent.name
            runs.setdefault(f"{result.space} ({variant})", []).append(result_file.parent)
    if not runs:
        raise ConfigError(
            f"{path} holds no searched run with an {ARCHITECTURE}; give a run directory "
            f"(OUT/<variant>/<space>/seed_<s>) or the output folder of a searched study"
        )
    return runs


def task_groups(
    path: Path,
    k: int | None = None,
    metric: str = "cosine",
    method: str = "agglomerative",
    truth: Mapping[str, int] | None = None,
    embeddings: Sequence[str] = EMBEDDINGS,
) -> list[SpaceGroups]:
    """The groups of a run directory, or of every searched space in an output folder, from
    each embedding asked for that the runs have (a gradient affinity exists only where the
    search measured it). Without ``truth``, the groups a built-in data set planted are used."""
    out = []
    for space, dirs in searched_runs(path).items():
        known = truth if truth is not None else known_groups(dirs[0])
        for embedding in embeddings:
            if embedding == "affinity" and not all((d / AFFINITY_FILE).exists() for d in dirs):
                if list(embeddings) == ["affinity"]:
                    raise ConfigError(
                        f"{space}: its runs have no affinity.json; set [search] affinity_every "
                        f"so that the search measures the gradient affinity"
                    )
                continue
            out.append(groups_of_runs(dirs, space, k, metric, method, known, embedding))
    return out


def agreement(found: Sequence[SpaceGroups]) -> dict[str, float]:
    """Per space, the ARI between its allocation and its affinity clustering."""
    by_space: dict[str, dict[str, SpaceGroups]] = {}
    for g in found:
        by_space.setdefault(g.space, {})[g.embedding] = g
    return {
        space: ari(pair["allocation"].labels, pair["affinity"].labels)
        for space, pair in by_space.items()
        if len(pair) == 2
    }


def known_groups(run_dir: Path) -> dict[str, int] | None:
    """The groups a built-in data set planted (synthetic ``g<i>_t<j>`` tasks, the domains of
    ``domain_clusters``), read from the run's study; None for other data."""
    try:
        study, _ = study_of_run(run_dir)
    except (ConfigError, OSError):
        return None
    tasks = load_architecture(run_dir / ARCHITECTURE).graph.graph["tasks"]
    if study.data.name == "domain_clusters":
        return {t: DOMAINS.index(domain_of(t)) for t in tasks}
    matches = [SYNTHETIC_TASK.fullmatch(t) for t in tasks]
    if study.data.name == "synthetic" and all(matches):
        return {t: int(m.group(1)) for t, m in zip(tasks, matches, strict=True) if m}
    return None


def read_groups(path: Path) -> dict[str, int]:
    """Known groups from a JSON file: {"task": group, ...} or [["a", "b"], ["c"]]."""
    data = read_json(path, "groups")
    if isinstance(data, dict):
        ids: dict[str, int] = {}
        return {str(t): ids.setdefault(str(g), len(ids)) for t, g in data.items()}
    if isinstance(data, list) and all(isinstance(g, list) for g in data):
        return {str(t): i for i, members in enumerate(data) for t in members}
    raise ConfigError(f'{path}: give groups as {{"task": group}} or [["a", "b"], ["c"]]')


def format_groups(found: Sequence[SpaceGroups]) -> str:
    """The clusterings as text: one header line per space and embedding, then its groups."""
    lines = []
    for g in found:
        truth = ""
        if g.truth_ari is not None:
            truth = f", ARI vs known groups {g.truth_ari:.2f}"
        if g.seed_aris and len(g.seed_aris) > 1:
            per_seed = ", ".join(f"{a:.2f}" for a in g.seed_aris)
            truth += f" (per seed {per_seed}; mean {float(np.mean(g.seed_aris)):.2f})"
        lines.append(
            f"{g.space}, {g.embedding}: k = {g.k} over {len(g.run_dirs)} seed(s), seed "
            f"stability (mean pairwise ARI) {g.stability:.2f}{truth}"
        )
        lines += [f"  group {i}: {', '.join(ts)}" for i, ts in enumerate(g.groups())]
    pooled = {g.space for g in found if any(pooled_by_affinity(d) for d in g.run_dirs)}
    lines += [
        f"{space}: the allocation and affinity clusterings agree with ARI {value:.2f}"
        + (
            " (derive pooled the allocations over affinity groups, so they are not "
            'independent of it; [derive] pool = "none" keeps each task\'s own)'
            if space in pooled
            else ""
        )
        for space, value in agreement(found).items()
    ]
    return "\n".join(lines)


def pooled_by_affinity(run_dir: Path) -> bool:
    """Whether derive pooled this run's per-task decisions over affinity groups."""
    try:
        record = read_json(run_dir / ARCHITECTURE, "architecture")
    except NasMtlError:
        return False
    groups = record.get("provenance", {}).get("derive", {}).get("task_groups") or {}
    return bool(groups.get("pooled"))


def figures_folder(path: Path) -> Path:
    """Where the cluster stage writes: RUN_DIR/plots for a run, OUT/clusters for a study."""
    path = Path(path)
    return path / "plots" if (path / ARCHITECTURE).exists() else path / "clusters"


def write_groups(found: Sequence[SpaceGroups], folder: Path) -> list[Path]:
    """``clusters.json`` (groups, k, stability, ARIs, agreement) and, per space and embedding,
    the dendrogram + similarity heatmap; returns the files written."""
    from nas_mtl.plots.similarity import draw_similarity  # matplotlib only when drawing

    folder = Path(folder)
    written = []
    for g in found:
        stem = folder / f"similarity_{safe_name(g.space)}_{g.embedding}"
        title = f"{g.space}: {g.embedding} similarity over {len(g.run_dirs)} seed(s), k = {g.k}"
        written += draw_similarity(g.tasks, g.similarity, g.labels, stem, title, g.truth)
    record = {
        "clusterings": [
            {
                "space": g.space,
                "embedding": g.embedding,
                "k": g.k,
                "groups": g.groups(),
                "seeds": [str(d) for d in g.run_dirs],
                "stability": g.stability,
                "seed_aris": g.seed_aris,
                "truth_ari": g.truth_ari,
            }
            for g in found
        ],
        "agreement": agreement(found),
    }
    write_json_atomic(folder / "clusters.json", record)
    return [*written, folder / "clusters.json"]
