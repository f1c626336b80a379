"""Peak memory of loading a large shared-input CSV with ``load_table``.

Writes (once, cached) a CSV of N rows × F float features + one regression label, then loads it
in a fresh subprocess and reports the resident-set growth over the RSS before loading, as a
multiple of the float32 payload (N × (F + 1) × 4 bytes). Target (issue 10): ≤ 3×.

    python benchmarks/csv_load_memory.py [--smoke|--quick] [--out DIR] [--rows N] [--features F]

Modes (the benchmarks' contract, ``benchmarks/README.md``): the default loads 1,000,000 x 50,
``--quick`` 200,000 x 50, ``--smoke`` 2,000 x 5 (its ratio means nothing: the fixed cost of a
load dominates). Headline: ``csv_peak_over_payload``.
Threads: OMP_WAIT_POLICY=PASSIVE, torch's default thread count (the load is pandas/numpy).
Writes ``DIR/csv_load_memory.json`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

TARGET = 3.0
SIZES = {"full": (1_000_000, 50), "quick": (200_000, 50), "smoke": (2_000, 5)}  # rows, features

CHILD = """
import json, sys, time
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
from nas_mtl.data import load_table
from nas_mtl.tasks import TaskSpec
import torch  # imported before measuring: its own footprint is not the load's
before = rss('VmRSS')
t = time.perf_counter()
data = load_table(sys.argv[1], tasks=[TaskSpec('y', 'regression')])
wall = time.perf_counter() - t
print(json.dumps({'before': before, 'peak': rss('VmHWM'), 'after': rss('VmRSS'), 'wall_s': wall,
                  'rows': len(data.train) + len(data.val) + len(data.test)}))
"""


def write_csv(path: Path, rows: int, features: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    cols = {f"x{i}": rng.standard_normal(rows, dtype=np.float32) for i in range(features)}
    cols["y"] = rng.standard_normal(rows, dtype=np.float32)
    pacsv.write_csv(pa.table(cols), path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _common.parser(__doc__)
    ap.add_argument("--rows", type=int, default=None, help="default: by mode")
    ap.add_argument("--features", type=int, default=None, help="default: by mode")
    args = ap.parse_args(argv)
    mode = _common.mode_of(args)
    args.rows = args.rows or SIZES[mode][0]
    args.features = args.features or SIZES[mode][1]
    path = Path(tempfile.gettempdir()) / f"nas_mtl_bench_{args.rows}x{args.features}.csv"
    if not path.exists():
        write_csv(path, args.rows, args.features)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    payload = args.rows * (args.features + 1) * 4
    growth = m["peak"] - m["before"]
    result = {
        "rows": args.rows,
        "features": args.features,
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "payload_mb": round(payload / 2**20, 1),
        "rss_before_mb": round(m["before"] / 2**20, 1),
        "peak_rss_mb": round(m["peak"] / 2**20, 1),
        "growth_mb": round(growth / 2**20, 1),
        "growth_over_payload": round(growth / payload, 2),
        "wall_s": round(m["wall_s"], 1),
    }
    print("| rows | features | file MB | payload MB | RSS growth MB | × payload | load s |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.rows:,} | {args.features} | {result['file_mb']} | {result['payload_mb']} | "
        f"{result['growth_mb']} | {result['growth_over_payload']} | {result['wall_s']} |"
    )
    headline = {"csv_peak_over_payload": result["growth_over_payload"]}
    _common.write_result(
        _common.out_dir(args),
        "csv_load_memory",
        _common.settings(mode, rows=args.rows, features=args.features),
        [result],
        headline,
        target=TARGET,
        meets_target=result["growth_over_payload"] <= TARGET,
    )
    return headline


if __name__ == "__main__":
    main()
