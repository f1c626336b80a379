"""Wall time to load UCI Census-Income (KDD) from both original gzipped files into tensors.

Why: the issue's acceptance bar is "loading Census-Income (both files) takes under 20 s" on the
project's 2-core CPU machine. One load reads and parses 199,523 + 99,762 rows of 42 columns,
builds the MMoE task labels, one-hot encodes 32 categorical columns, standardizes 7 numeric
columns on the training split and slices the three splits out of one float32 tensor.
Nothing is cached between repeats (the census loader has no cache), so every repeat is a cold
parse from the files; the median of ``--repeats`` runs is reported per task group, together
with the thread settings the timing ran under.

Modes (the benchmarks' contract, ``benchmarks/README.md``): the default loads each task group
5 times; ``--quick`` twice; ``--smoke`` loads group 1 once from a toy copy of the two files
(their first 2,000 rows each, written to a temporary folder), and when the data set is not
there it writes an empty result saying so instead of failing. Headline: the slowest median.

Run from the repository root: ``python benchmarks/data_load_speed.py [--smoke|--quick]
[--out DIR] [--data-dir DIR]`` (data: default ``$NAS_MTL_DATA_DIR``, else ``../shared/data``);
writes ``DIR/data_load_speed.json`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gzip  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from itertools import islice  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402

from nas_mtl.data import load_dataset  # noqa: E402
from nas_mtl.data.census import CENSUS_FILES  # noqa: E402

TARGET_S = 20.0
SMOKE_ROWS = 2000
# mode -> (repeats, task groups)
PLANS = {"full": (5, (1, 2)), "quick": (2, (1, 2)), "smoke": (1, (1,))}


def toy_copy(data_dir: str, folder: Path) -> str:
    """The first rows of both Census-Income files under ``folder/census_income`` (smoke)."""
    (folder / "census_income").mkdir(parents=True)
    for name in CENSUS_FILES.values():
        with gzip.open(Path(data_dir) / "census_income" / name, "rt") as src:
            head = "".join(islice(src, SMOKE_ROWS))
        with gzip.open(folder / "census_income" / name, "wt") as dst:
            dst.write(head)
    return str(folder)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = _common.parser(__doc__)
    parser.add_argument("--data-dir", default=None, help="folder holding census_income/")
    parser.add_argument("--repeats", type=int, default=None, help="default: by mode")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    mode = _common.mode_of(args)
    repeats, groups = PLANS[mode]
    repeats = args.repeats or repeats
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data_dir = (
        args.data_dir or os.environ.get("NAS_MTL_DATA_DIR") or str(ROOT.parent / "shared" / "data")
    )
    present = all((Path(data_dir) / "census_income" / f).exists() for f in CENSUS_FILES.values())
    settings = _common.settings(mode, repeats=repeats, groups=list(groups), data_dir=data_dir)
    if mode == "smoke" and not present:  # a smoke run checks the script, not the data
        print(f"census_income not found under {data_dir}: nothing to time")
        headline = {"census_load_s_max": None}
        _common.write_result(_common.out_dir(args), "data_load_speed", settings, [], headline)
        return headline
    toy = tempfile.TemporaryDirectory(prefix="nas_mtl_census_toy_") if mode == "smoke" else None
    if toy is not None:
        data_dir = toy_copy(data_dir, Path(toy.name))
        settings["toy_rows_per_file"] = SMOKE_ROWS

    rows = []
    for group in groups:
        times = []
        for _ in range(repeats):
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
                "repeats": repeats,
                "train_x_shape": shape,
                "split_rows": sizes,
            }
        )

    if toy is not None:
        toy.cleanup()
    print(
        f"threads: torch={settings['threads']}, OMP_NUM_THREADS={settings['omp_num_threads']}, "
        f"OMP_WAIT_POLICY={settings['omp_wait_policy']}, cpus={settings['cpu_count']}"
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

    headline = {"census_load_s_max": worst}
    _common.write_result(
        _common.out_dir(args),
        "data_load_speed",
        settings,
        rows,
        headline,
        target_s=TARGET_S,
        meets_target=worst < TARGET_S,
    )
    return headline


if __name__ == "__main__":
    main()
