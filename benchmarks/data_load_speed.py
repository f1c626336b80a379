"""Wall time to load UCI Census-Income (KDD) from both original gzipped files into tensors.

Why: the issue's acceptance bar is "loading Census-Income (both files) takes under 20 s" on the
project's 2-core CPU machine. One load reads and parses 199,523 + 99,762 rows of 42 columns,
builds the MMoE task labels, one-hot encodes 32 categorical columns, standardizes 7 numeric
columns on the training split and slices the three splits out of one float32 tensor.
Nothing is cached between repeats (the census loader has no cache), so every repeat is a cold
parse from the files; the median of ``--repeats`` runs is reported per task group, together
with the thread settings the timing ran under.

Run from the repository root: ``python benchmarks/data_load_speed.py [--data-dir DIR]``
(default ``$NAS_MTL_DATA_DIR``, else ``../shared/data``); writes
``benchmarks/results/data_load_speed.json``.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere

from nas_mtl.data import load_dataset  # noqa: E402

TARGET_S = 20.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding census_income/")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "data_load_speed.json")
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data_dir = (
        args.data_dir or os.environ.get("NAS_MTL_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    )

    rows = []
    for group in (1, 2):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            data = load_dataset("census_income", data_dir=data_dir, group=group)
            times.append(time.perf_counter() - start)
            shape = tuple(data.train.x.shape)
            sizes = (len(data.train), len(data.val), len(data.test))
            del data
        rows.append(
            {
                "data_set": f"census_income group={group}",
                "median_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "repeats": args.repeats,
                "train_x_shape": shape,
                "split_rows": sizes,
            }
        )

    settings = {
        "torch_num_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    print(
        f"threads: torch={settings['torch_num_threads']}, OMP_NUM_THREADS="
        f"{settings['OMP_NUM_THREADS']}, OMP_WAIT_POLICY={settings['OMP_WAIT_POLICY']}, "
        f"cpus={settings['cpu_count']}"
    )
    print(
        f"{'data set':<26} {'median s':>9} {'min s':>7} {'max s':>7}  {'train x':<15} "
        "rows (train/val/test)"
    )
    for r in rows:
        print(
            f"{r['data_set']:<26} {r['median_s']:>9.2f} {r['min_s']:>7.2f} {r['max_s']:>7.2f}  "
            f"{str(r['train_x_shape']):<15} {'/'.join(f'{n:,}' for n in r['split_rows'])}"
        )
    worst = max(r["median_s"] for r in rows)
    verdict = "meets" if worst < TARGET_S else "MISSES"
    print(f"slowest median {worst:.2f} s {verdict} the {TARGET_S:.0f} s target")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "target_s": TARGET_S,
        "meets_target": worst < TARGET_S,
        "settings": settings,
        "results": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
