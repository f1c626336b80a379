"""What every benchmark script shares: its command line, its settings record, its JSON file.

The contract (``benchmarks/README.md``) that ``benchmarks/run_all.py`` relies on::

    python benchmarks/<name>.py [--smoke|--quick] [--out DIR]

writes ``DIR/<name>.json`` = ``{"benchmark": name, "settings": {...}, "rows": [...],
"headline": {...}}`` and prints a table. ``--smoke`` runs toy sizes in seconds (it checks that
the script works, its numbers mean nothing) and writes to a fresh temporary folder unless
``--out`` is given; ``--quick`` runs reduced sizes; no flag runs the full benchmark.
Scripts set ``OMP_WAIT_POLICY=PASSIVE`` before importing torch (idle OpenMP workers must sleep,
or they steal the other core of a 2-core machine between the many small ops of a step).

Not a benchmark itself: ``run_all.py`` skips files whose name starts with an underscore.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("smoke", "quick", "full")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the contract's ``--smoke``, ``--quick`` and ``--out``."""
    ap = argparse.ArgumentParser(
        description=(doc or "").strip().split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="toy sizes: checks the script runs")
    mode.add_argument("--quick", action="store_true", help="reduced sizes (minutes)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for <name>.json (default {RESULTS.relative_to(ROOT)}; --smoke: a temp dir)",
    )
    return ap


def mode_of(args: argparse.Namespace) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def out_dir(args: argparse.Namespace) -> Path:
    """``--out``, else the results folder, else (``--smoke``) a new temporary folder."""
    if args.out is not None:
        return Path(args.out)
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix="nas_mtl_bench_smoke_"))
    return RESULTS


def settings(mode: str, **extra: Any) -> dict[str, Any]:
    """What a timing ran under: threads, OpenMP policy, versions, machine, mode."""
    import torch

    return {
        "mode": mode,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        **extra,
    }


def write_json_atomic(path: Path, payload: Any) -> None:
    """Temp file in the target folder + ``os.replace``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_result(
    out: Path,
    name: str,
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    headline: dict[str, float | None],
    **extra: Any,
) -> Path:
    """``out/<name>.json`` with the contract's four keys (and ``extra`` ones after them)."""
    path = Path(out) / f"{name}.json"
    payload = {
        "benchmark": name,
        "settings": settings,
        "rows": rows,
        "headline": headline,
        **extra,
    }
    write_json_atomic(path, payload)
    print(f"wrote {path}")
    return path


Column = tuple[str, str, str]  # (row key, header, format spec)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A Markdown table of ``rows``; a missing or None value prints as an em dash."""

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        v = row.get(key)
        if v is None:
            return "—"
        if isinstance(v, str):
            return v
        if fmt.endswith("d") and isinstance(v, float) and v.is_integer():
            v = int(v)  # a median of counts
        return format(v, fmt)

    lines = [
        "| " + " | ".join(h for _, h, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cell(r, k, f) for k, h, f in columns) + " |" for r in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def round_robin(
    cases: dict[str, Callable[[], None]], repeats: int, run: Callable[[Callable[[], None]], float]
) -> dict[str, list[float]]:
    """``run(case)`` for every case, ``repeats`` times, rotating which case goes first.

    Cases measured in the same repeat see the same load on a busy machine, so a per-repeat
    ratio between two of them is less noisy than the ratio of their separate medians.
    """
    keys = list(cases)
    out: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            out[k].append(run(cases[k]))
    return out
