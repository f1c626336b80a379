"""The ``nas-mtl`` argument parser: every command, option and help line in one place.

Kept apart from ``cli`` (which dispatches and turns errors into exit codes) so that the
command-line surface reads as one table; nothing here imports torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser, out: bool = True) -> None:
    if out:
        p.add_argument("--out", type=Path, help="output folder (default: runs/<study name>)")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the results in --out (only what nas-mtl wrote there)",
        )
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder of the real data sets (default: $NAS_MTL_DATA_DIR or ./data)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log each epoch")


def seed_value(text: str) -> int:
    """A ``--seed``: a whole number >= 0 (torch and numpy seed their generators with it)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {text!r}") from None
    if not 0 <= seed < 2**63:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in [0, 2^63), got {seed}")
    return seed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-mtl", description="Search how multi-task networks should share parameters."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("spaces", help="list the search spaces")
    p = sub.add_parser("run", help="run a study: search, derive, retrain and report every space")
    p.add_argument("study", type=Path)
    p.add_argument(
        "--seed",
        type=seed_value,
        action="append",
        help="seed(s) to run instead of the study's (repeat the flag for several)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local processes that run the spaces x seeds side by side (default 1)",
    )
    _common(p)
    p = sub.add_parser(
        "describe", help="preview a study: size and gate count of every space, nothing trains"
    )
    p.add_argument("study", type=Path)
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder of the real data sets (default: $NAS_MTL_DATA_DIR or ./data)",
    )
    p = sub.add_parser("search", help="search one space of a study (writes supernet + logs)")
    p.add_argument("study", type=Path)
    p.add_argument("--space", required=True)
    p.add_argument("--seed", type=seed_value, default=None)
    _common(p)
    p = sub.add_parser("derive", help="derive architecture.json from a searched run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--samples", type=int, default=None, help="also sample K architectures")
    _common(p, out=False)
    p = sub.add_parser("retrain", help="retrain a run directory's architecture.json")
    p.add_argument("run_dir", type=Path)
    _common(p, out=False)
    p = sub.add_parser("cluster", help="group the tasks by the architectures a search derived")
    p.add_argument("path", type=Path, help="a run directory, or a study's output folder")
    p.add_argument("--k", type=int, default=None, help="number of groups (default: silhouette)")
    p.add_argument("--metric", choices=("cosine", "jaccard"), default="cosine")
    p.add_argument("--method", choices=("agglomerative", "spectral"), default="agglomerative")
    p.add_argument(
        "--groups",
        type=Path,
        default=None,
        help="known groups (JSON) to score (default: the groups a built-in data set planted)",
    )
    p.add_argument(
        "--embedding",
        choices=("allocation", "affinity", "both"),
        default="both",
        help="task embedding: the derived allocations, the search's gradient affinity, or both "
        "(default; the affinity where the search measured it)",
    )
    p.add_argument("--space", default=None, help="only this searched space")
    p.add_argument(
        "--export-study",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a study that reruns the found groups as the 'grouped' space",
    )
    p = sub.add_parser("plot", help="draw a finished run: task subgraphs, allocation, curves")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("report", help="print the comparison tables of a finished run")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser(
        "export", help="write a run's retrained model as a torch.export program (.pt2)"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--task", default=None, help="one task's model (default: every task, a dict)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="the program file (default: RUN_DIR/model.pt2, or RUN_DIR/model.<task>.pt2)",
    )
    p.add_argument(
        "--batch-hint",
        type=int,
        default=None,
        metavar="N",
        help="batch size the packed layout is tuned for (default 64); any batch size runs",
    )
    p = sub.add_parser("predict", help="predict every task for the rows of a table file")
    p.add_argument("run_dir", type=Path)
    p.add_argument("data", type=Path, help="a .csv, .csv.gz, .parquet or .npz table")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="predictions CSV (default: <data name>.predictions.csv next to the data)",
    )
    p = sub.add_parser("tune", help="tune a study's [tune.params] with Optuna (docs/tuning.md)")
    p.add_argument("study", type=Path)
    p.add_argument(
        "--trials",
        type=int,
        required=True,
        help="finished (complete + pruned) trials the Optuna study should have in all; "
        "rerun with a larger N to add the difference",
    )
    p.add_argument("--out", type=Path, help="output folder (default: runs/<study name>_tune)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: OUT/optuna.db)")
    p.add_argument("--study-name", default=None, help="Optuna study name (default: the study's)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    _common(p, out=False)
    return parser
