"""Peak memory of loading a large shared-input CSV with ``load_table``.

Writes (once, cached) a CSV of N rows × F float features + one regression label, then loads it
in a fresh subprocess and reports the resident-set growth over the RSS before loading, as a
multiple of the float32 payload (N × (F + 1) × 4 bytes). Target (issue 10): ≤ 3×.

    python benchmarks/csv_load_memory.py [--rows 1000000] [--features 50]

Threads: OMP_WAIT_POLICY=PASSIVE, torch's default thread count (the load is pandas/numpy).
Writes benchmarks/results/csv_load_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=50)
    args = ap.parse_args()
    path = Path(tempfile.gettempdir()) / f"nas_mtl_bench_{args.rows}x{args.features}.csv"
    if not path.exists():
        write_csv(path, args.rows, args.features)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
    )
    m = json.loads(out.stdout)
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
        "threads": {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]},
    }
    print("| rows | features | file MB | payload MB | RSS growth MB | × payload | load s |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.rows:,} | {args.features} | {result['file_mb']} | {result['payload_mb']} | "
        f"{result['growth_mb']} | {result['growth_over_payload']} | {result['wall_s']} |"
    )
    target = Path(__file__).parent / "results" / "csv_load_memory.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
