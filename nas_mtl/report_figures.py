"""The ``[report] plots`` / ``cluster`` stage of ``nas-mtl run``: pictures and task groups.

Runs after every result is on disk, so a drawing that fails costs a picture, never a result:
the failure is logged and named in the report. Returns the markdown that ``report.md`` (and so
``report.html``) embeds: per searched space, its first seed's allocation and search curves; the
task groups with their similarity figures (``docs/plots.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from nas_mtl.errors import NasMtlError
from nas_mtl.results import RunResult
from nas_mtl.study import Study

log = logging.getLogger(__name__)

EMBEDDED = (  # (file stem in RUN_DIR/plots, caption), in the order the report shows them
    ("allocation", "allocation: P(open) per task at the selected epoch; dots = derived"),
    ("search_curves", "search: losses, open fraction, temperature"),
    ("task_subgraphs", "each task's subgraph of the derived architecture"),
)


def _plots(out: Path, results: Sequence[RunResult], study: Study) -> list[str]:
    from nas_mtl.plots.run_plots import plot_run  # matplotlib only when asked for

    lines = ["## Pictures", ""]
    shown: set[tuple[str, str]] = set()
    for r in results:
        run_dir = out / r.run_dir
        if r.control or not (run_dir / "architecture.json").exists():
            continue
        try:
            written = plot_run(run_dir, study.search.target_open)
        except (NasMtlError, ValueError, OSError) as e:
            log.warning("pictures of %s failed: %s", r.run_dir, e)
            lines.append(f"- pictures of `{r.run_dir}` failed: {e}")
            continue
        key = (r.run_dir.split("/")[0], r.space)
        if not r.searched or key in shown:
            continue  # every run is drawn; the report shows each searched space once
        shown.add(key)
        lines += [f"### {r.space} ({key[0]}, seed {r.seed})", ""]
        names = {p.stem for p in written}
        for stem, caption in EMBEDDED:
            if stem in names:
                lines += [f"![{r.space}: {caption}]({r.run_dir}/plots/{stem}.png)", ""]
    return lines


def _clusters(out: Path, study: Study) -> list[str]:
    from nas_mtl.task_groups import format_groups, task_groups, write_groups

    try:
        found = task_groups(out, study.report.k)
    except NasMtlError as e:
        return ["## Task groups", "", f"No task groups: {e}", ""]
    written = write_groups(found, out / "clusters")
    lines = ["## Task groups", "", "```", format_groups(found), "```", ""]
    for path in written:
        if path.suffix == ".png":
            lines += [f"![{path.stem}]({path.relative_to(out).as_posix()})", ""]
    return lines


def report_figures(study: Study, out: str | Path, results: Sequence[RunResult]) -> str:
    """Draw and cluster as ``[report]`` asks; the markdown that embeds the outcome."""
    out = Path(out)
    lines: list[str] = []
    if study.report.plots:
        lines += _plots(out, results, study)
    if study.report.cluster:
        lines += _clusters(out, study)
    return "\n".join(lines)
