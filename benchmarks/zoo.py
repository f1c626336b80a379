"""The task-set zoo: does the search work on task sets nobody tuned it on?

A family of generated task sets (``nas_mtl.data.synthetic``) across both input regimes (every
row labelled for every task / each task its own rows), 2–16 tasks, 1–4 planted groups and
unrelated tasks, label means and scales from 1e-2 to 1e3, binary and regression tasks, noise
levels and 1k–20k rows. Each config runs, with the product's defaults, seeds 0–2 of

* the searched spaces: ``snr_trans``, ``snr_aver``, ``gumbel_matrix`` (their default sizes);
* fixed controls at the searched spaces' depth (2 layers): ``no_sharing``, ``shared_bottom``,
  ``mmoe``, and ``grouped`` (the oracle: one trunk per planted group) where groups are planted;
* the same three fixed controls at the best searched space's retrained parameter count (their
  width chosen to within ±10%; "capacity-matched");
* the best searched space once more at seed 0 with every regression label in other units
  (``y · 100 + 1000``): the largest change of a test MSE in standardized units.

Per config it reports the best searched and the best fixed Δm (%, against depth-matched
no-sharing of the same seed, mean over seeds; the fixed controls are those a user could build
without knowing the groups, and the oracle's Δm is a column of its own), the ARI of the best
searched space's derived allocations against the planted groups (Jaccard distance of per-task
edge sets, k = planted groups, consensus over seeds), the SNR spaces' end-of-search E[open]
and what derive's cap closed, runs no better than a constant, and the wall time.
``docs/search.md`` has the math.

    python benchmarks/zoo.py [--smoke|--quick] [--out DIR]

``--smoke``: two tiny configs, one seed, two epochs (checks the script); ``--quick``: five
configs (both regimes) at at most 1,000 rows, seeds 0–2; no flag: all 24 configs;
``--config NAME`` (repeatable): those configs only. Runs are kept
under ``DIR/zoo/<config>/`` and a rerun resumes them. A table's spaces × seeds run in
``--workers`` processes (default one per CPU), each with single-threaded torch
(``OMP_WAIT_POLICY=PASSIVE``), as every benchmark here.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import tomli_w  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import mode_of, out_dir, parser, settings, table, write_result  # noqa: E402

from nas_mtl.metrics import delta_m  # noqa: E402
from nas_mtl.model.cost import graph_costs  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.pipeline import run_study  # noqa: E402
from nas_mtl.results import RunResult  # noqa: E402
from nas_mtl.storage import read_json, write_bytes_atomic  # noqa: E402
from nas_mtl.study import load_study  # noqa: E402
from nas_mtl.task_groups import groups_of_runs  # noqa: E402

SEARCHED = ("snr_trans", "snr_aver", "gumbel_matrix")
FIXED = ("no_sharing", "shared_bottom", "mmoe")
DEPTH = 2  # the searched spaces' default depth; every fixed control is built as deep
WIDTH_KEY = {"no_sharing": "width", "shared_bottom": "width", "mmoe": "expert_width"}
UNITS = {"label_scale": 100.0, "label_offset": 1000.0}
SEEDS = (0, 1, 2)

# name: synthetic generator parameters (besides seed and the splits' sizes)
FAMILY: dict[str, dict[str, Any]] = {
    # every row labelled for every task
    "sh-2x2": {"inputs": "shared", "groups": [2, 2], "n_train": 1000},
    "sh-3x3-small-units": {
        "inputs": "shared",
        "groups": [3, 3],
        "n_train": 2000,
        "label_scale": 0.01,
        "label_offset": 0.5,
    },
    "sh-4x3-large-units": {
        "inputs": "shared",
        "groups": [4, 4, 4],
        "n_train": 3000,
        "label_scale": 1000.0,
        "label_offset": 1000.0,
    },
    "sh-2-unrelated": {"inputs": "shared", "groups": [1, 1], "n_train": 1000},
    "sh-4x2-binary": {
        "inputs": "shared",
        "groups": [2, 2, 2, 2],
        "n_train": 5000,
        "binary": [0, 2, 4, 6],
    },
    "sh-2x8-16tasks": {"inputs": "shared", "groups": [8, 8], "n_train": 2000, "label_scale": 10.0},
    "sh-6-unrelated-noisy": {"inputs": "shared", "groups": [1] * 6, "n_train": 2000, "noise": 0.5},
    "sh-mixed-groups": {
        "inputs": "shared",
        "groups": [3, 3, 1, 1],
        "n_train": 4000,
        "label_scale": 100.0,
        "label_offset": -50.0,
    },
    "sh-1x6-20k": {"inputs": "shared", "groups": [6], "n_train": 20000},
    "sh-4x4-binary": {
        "inputs": "shared",
        "groups": [4, 4, 4, 4],
        "n_train": 10000,
        "binary": list(range(16)),
    },
    "sh-3x2-rho0.7": {
        "inputs": "shared",
        "groups": [2, 2, 2],
        "n_train": 1500,
        "rho": 0.7,
        "noise": 0.1,
    },
    "sh-2x5-tiny-units": {
        "inputs": "shared",
        "groups": [5, 5],
        "n_train": 20000,
        "label_scale": 0.01,
        "label_offset": -0.3,
    },
    # each task its own rows (n_train rows per task)
    "pt-2x2": {"inputs": "per_task", "groups": [2, 2], "n_train": 1000},
    "pt-3x3-small-units": {
        "inputs": "per_task",
        "groups": [3, 3],
        "n_train": 1000,
        "label_scale": 0.01,
        "label_offset": 0.5,
    },
    "pt-4x3-large-units": {
        "inputs": "per_task",
        "groups": [4, 4, 4],
        "n_train": 1000,
        "label_scale": 1000.0,
        "label_offset": 1000.0,
    },
    "pt-2-unrelated": {"inputs": "per_task", "groups": [1, 1], "n_train": 2000},
    "pt-4x2-binary": {
        "inputs": "per_task",
        "groups": [2, 2, 2, 2],
        "n_train": 1500,
        "binary": [0, 2, 4, 6],
    },
    "pt-2x8-16tasks": {
        "inputs": "per_task",
        "groups": [8, 8],
        "n_train": 1000,
        "label_scale": 10.0,
    },
    "pt-6-unrelated-noisy": {
        "inputs": "per_task",
        "groups": [1] * 6,
        "n_train": 1000,
        "noise": 0.5,
    },
    "pt-mixed-groups": {
        "inputs": "per_task",
        "groups": [3, 3, 1, 1],
        "n_train": 1200,
        "label_scale": 100.0,
        "label_offset": -50.0,
    },
    "pt-1x6-5k": {"inputs": "per_task", "groups": [6], "n_train": 5000},
    "pt-4x4-binary": {
        "inputs": "per_task",
        "groups": [4, 4, 4, 4],
        "n_train": 1000,
        "binary": list(range(16)),
    },
    "pt-3x2-rho0.7": {
        "inputs": "per_task",
        "groups": [2, 2, 2],
        "n_train": 1500,
        "rho": 0.7,
        "noise": 0.1,
    },
    "pt-2x5-tiny-units": {
        "inputs": "per_task",
        "groups": [5, 5],
        "n_train": 3000,
        "label_scale": 0.01,
        "label_offset": -0.3,
    },
}
QUICK = (  # both regimes, binary tasks, unrelated tasks, label units: about 11 minutes
    "sh-3x3-small-units",
    "sh-mixed-groups",
    "sh-6-unrelated-noisy",
    "pt-2x2",
    "pt-4x2-binary",
)
QUICK_ROWS = 1000  # --quick caps n_train at this


def planted(groups: Sequence[int]) -> dict[str, int]:
    """Task -> planted group, as the generator names tasks (``g{group}_t{index}``)."""
    return {f"g{g}_t{j}": g for g, size in enumerate(groups) for j in range(size)}


def task_groups(groups: Sequence[int]) -> list[list[str]]:
    return [[f"g{g}_t{j}" for j in range(size)] for g, size in enumerate(groups)]


def study_table(
    name: str,
    params: Mapping[str, Any],
    spaces: Sequence[str],
    space_params: Mapping[str, Any],
    seeds: Sequence[int],
    smoke: bool,
) -> dict[str, Any]:
    """A study: defaults everywhere except the data, the spaces' depth and the seeds."""
    split = 100 if smoke else 500
    study: dict[str, Any] = {
        "name": name,
        "spaces": list(spaces),
        "seeds": list(seeds),
        "data": {
            "name": "synthetic",
            "params": {"n_val": split, "n_test": split, "input_dim": 32, **params},
        },
        "space_params": {s: dict(space_params[s]) for s in spaces if s in space_params},
    }
    if smoke:
        study["search"] = {"epochs": 2, "min_steps": 0, "affinity_every": 0}
        study["retrain"] = {"epochs": 2, "min_steps": 0}
    return study


def run_table(
    folder: Path, study: dict[str, Any], seeds: Sequence[int], workers: int
) -> list[RunResult]:
    """Run (or resume) one study; its results."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    text = "# Written by benchmarks/zoo.py\n" + tomli_w.dumps(study)
    if not path.exists() or path.read_text() != text:
        write_bytes_atomic(path, text.encode())
    run_study(load_study(path), folder / "run", seeds=list(seeds), workers=workers)
    report = read_json(folder / "run" / "report.json", "report")
    return [RunResult.from_json(r, str(folder / "run" / "report.json")) for r in report["results"]]


def matched_width(space: str, target: float, out_dims: dict[str, int]) -> int:
    """The width whose built space has the parameter count nearest ``target``."""
    best, best_gap = 1, float("inf")
    for width in range(1, 513):
        g = build_space(space, (32,), out_dims, layers=DEPTH, **{WIDTH_KEY[space]: width})
        params = graph_costs(g)["total"]["params"]
        if abs(params - target) < best_gap:
            best, best_gap = width, abs(params - target)
        elif params > target:
            break
    return best


def scores(results: Sequence[RunResult]) -> dict[str, dict[int, RunResult]]:
    out: dict[str, dict[int, RunResult]] = {}
    for r in results:
        out.setdefault(r.space, {})[r.seed] = r
    return out


def dm_against(run: RunResult, base: RunResult) -> float | None:
    if run.status != "finished" or base.status != "finished":
        return None
    values = {t: s.test for t, s in run.tasks.items()}
    baseline = {t: s.test for t, s in base.tasks.items()}
    higher = {t: s.higher_is_better for t, s in run.tasks.items()}
    return delta_m(values, baseline, higher)


def mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def search_end(run_dir: Path) -> tuple[float, float]:
    """End-of-search E[open] and what derive's cap closed in the selected epoch."""
    log = [json.loads(line) for line in (run_dir / "search_log.jsonl").read_text().splitlines()]
    info = read_json(run_dir / "search.json", "search summary")
    return float(log[-1]["expected_open"]), float(log[info["best_epoch"]].get("cap_closed", 0.0))


def units_change(plain: RunResult, units: RunResult) -> float | None:
    """Largest relative change of a regression test MSE in standardized units."""
    if plain.status != "finished" or units.status != "finished":
        return None
    scale = UNITS["label_scale"]
    changes = [
        abs(units.tasks[t].test / scale**2 - s.test) / s.test
        for t, s in plain.tasks.items()
        if s.metric == "mse" and s.test > 0
    ]
    return max(changes) if changes else None


def run_config(
    name: str,
    params: dict[str, Any],
    root: Path,
    seeds: Sequence[int],
    smoke: bool,
    workers: int,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    groups = params["groups"]
    n_groups = len(groups)
    oracle = n_groups >= 2 and any(size > 1 for size in groups)
    fixed_depth = {s: {"layers": DEPTH} for s in FIXED}
    space_params: dict[str, Any] = dict(fixed_depth)
    spaces = [*FIXED, *SEARCHED]
    if oracle:
        spaces.insert(3, "grouped")
        space_params["grouped"] = {"groups": task_groups(groups), "layers": DEPTH}
    folder = root / name
    results = scores(
        run_table(
            folder / "main",
            study_table(name, params, spaces, space_params, seeds, smoke),
            seeds,
            workers,
        )
    )
    base = results["no_sharing"]

    def dm_of(space: str, runs: Mapping[str, Mapping[int, RunResult]] = results) -> float | None:
        return mean([dm_against(runs[space][s], base[s]) for s in seeds if s in runs[space]])

    searched_dm = {s: dm_of(s) for s in SEARCHED}
    best_searched = max(
        searched_dm, key=lambda s: -1e9 if searched_dm[s] is None else searched_dm[s]
    )
    target = statistics.fmean(results[best_searched][s].total_params for s in seeds)
    out_dims = {t: 1 for t in planted(groups)}
    widths = {s: matched_width(s, target, out_dims) for s in FIXED}
    matched_params = {s: {"layers": DEPTH, WIDTH_KEY[s]: w} for s, w in widths.items()}
    matched = scores(
        run_table(
            folder / "matched",
            study_table(name, params, FIXED, matched_params, seeds, smoke),
            seeds,
            workers,
        )
    )
    # the controls a user could build without knowing the groups; the oracle is reported apart
    fixed_dm = {s: dm_of(s) for s in FIXED if s != "no_sharing"}
    fixed_dm["no_sharing"] = 0.0
    fixed_dm.update({f"{s}@params": dm_of(s, matched) for s in FIXED})
    best_fixed = max(fixed_dm, key=lambda s: -1e9 if fixed_dm[s] is None else fixed_dm[s])
    oracle_dm = dm_of("grouped") if oracle else None
    units_params = {
        **params,
        "label_scale": params.get("label_scale", 1.0) * UNITS["label_scale"],
        "label_offset": params.get("label_offset", 0.0) * UNITS["label_scale"]
        + UNITS["label_offset"],
    }
    units = scores(
        run_table(
            folder / "units",
            study_table(name, units_params, [best_searched], {}, [0], smoke),
            [0],
            workers,
        )
    )
    row: dict[str, Any] = {
        "config": name,
        "inputs": params["inputs"],
        "tasks": sum(groups),
        "groups": str(groups),
        "rows": params["n_train"],
        "best_searched": best_searched,
        "searched_dm": searched_dm[best_searched],
        "best_fixed": best_fixed,
        "fixed_dm": fixed_dm[best_fixed],
        "searched_minus_fixed": (
            None
            if searched_dm[best_searched] is None or fixed_dm[best_fixed] is None
            else searched_dm[best_searched] - fixed_dm[best_fixed]
        ),
        "oracle_dm": oracle_dm,
        "searched_minus_oracle": (
            None
            if searched_dm[best_searched] is None or oracle_dm is None
            else searched_dm[best_searched] - oracle_dm
        ),
        "all_dm": {**searched_dm, **fixed_dm, **({"grouped": oracle_dm} if oracle else {})},
        "matched_widths": widths,
        "failed_runs": sum(
            r.status != "finished"
            for runs in (results, matched)
            for by in runs.values()
            for r in by.values()
        ),
        "units_change": units_change(results[best_searched][0], units[best_searched][0]),
    }
    if oracle:
        dirs = [folder / "main" / "run" / results[best_searched][s].run_dir for s in seeds]
        found = groups_of_runs(dirs, best_searched, k=n_groups, truth=planted(groups))
        row["ari"] = found.truth_ari
    for space in ("snr_trans", "snr_aver"):
        ends = [search_end(folder / "main" / "run" / results[space][s].run_dir) for s in seeds]
        row[f"{space}_open"] = statistics.fmean(e for e, _ in ends)
        row[f"{space}_open_dev"] = max(abs(e - 0.4) for e, _ in ends)
        row[f"{space}_cap"] = max(c for _, c in ends)
    row["wall_s"] = time.perf_counter() - t0
    return row


COLUMNS = [
    ("config", "config", ""),
    ("tasks", "T", "d"),
    ("best_searched", "best searched", ""),
    ("searched_dm", "Δm %", ".2f"),
    ("best_fixed", "best fixed", ""),
    ("fixed_dm", "Δm %", ".2f"),
    ("searched_minus_fixed", "searched − fixed", "+.2f"),
    ("oracle_dm", "oracle Δm %", ".2f"),
    ("ari", "ARI", ".2f"),
    ("snr_trans_open", "SNR-T E[open]", ".3f"),
    ("snr_aver_open", "SNR-A E[open]", ".3f"),
    ("snr_trans_cap", "cap closed (max)", ".3f"),
    ("units_change", "units Δ", ".3f"),
    ("failed_runs", "failed", "d"),
    ("wall_s", "wall s", ".0f"),
]


def headline_of(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    diffs = [r["searched_minus_fixed"] for r in rows if r["searched_minus_fixed"] is not None]
    aris = [r["ari"] for r in rows if r.get("ari") is not None]
    devs = [max(r["snr_trans_open_dev"], r["snr_aver_open_dev"]) for r in rows]
    caps = [max(r["snr_trans_cap"], r["snr_aver_cap"]) for r in rows]
    units = [r["units_change"] for r in rows if r["units_change"] is not None]
    return {
        "configs": len(rows),
        "searched_at_least_fixed_share": sum(d >= 0 for d in diffs) / len(diffs) if diffs else None,
        "searched_minus_fixed_min": min(diffs) if diffs else None,
        "searched_within_2_share": sum(d >= -2.0 for d in diffs) / len(diffs) if diffs else None,
        "ari_at_least_0.9_share": sum(a >= 0.9 for a in aris) / len(aris) if aris else None,
        "snr_open_deviation_max": max(devs) if devs else None,
        "snr_cap_closed_max": max(caps) if caps else None,
        "units_change_max": max(units) if units else None,
        "failed_runs": sum(r["failed_runs"] for r in rows),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__)
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that run a table's spaces x seeds side by side (default: one per CPU)",
    )
    ap.add_argument(
        "--config",
        action="append",
        choices=sorted(FAMILY),
        metavar="NAME",
        help="run only this config (repeat the flag for several; --quick caps their rows)",
    )
    args = ap.parse_args(argv)
    mode = mode_of(args)
    import torch

    torch.set_num_threads(1)
    if mode == "smoke":
        chosen = {
            "sh-2x2": {**FAMILY["sh-2x2"], "n_train": 200},
            "pt-2x2": {**FAMILY["pt-2x2"], "n_train": 100},
        }
        seeds: Sequence[int] = (0,)
    elif mode == "quick":
        names = args.config or QUICK
        chosen = {k: {**FAMILY[k], "n_train": min(FAMILY[k]["n_train"], QUICK_ROWS)} for k in names}
        seeds = SEEDS
    else:
        chosen = {k: FAMILY[k] for k in args.config} if args.config else dict(FAMILY)
        seeds = SEEDS
    out = out_dir(args)
    root = out / "zoo"
    t0 = time.perf_counter()
    rows = []
    for name, params in chosen.items():
        row = run_config(name, params, root, seeds, mode == "smoke", args.workers)
        print(
            f"{name}: searched {row['best_searched']} Δm {row['searched_dm']:.2f}, fixed "
            f"{row['best_fixed']} Δm {row['fixed_dm']:.2f}, {row['wall_s']:.0f} s",
            flush=True,
        )
        rows.append(row)
    print(table(rows, COLUMNS))
    headline = headline_of(rows)
    headline["wall_s"] = time.perf_counter() - t0
    config = settings(mode, seeds=list(seeds), target_open=0.4, workers=args.workers)
    write_result(out, "zoo", config, rows, headline)
    return headline


if __name__ == "__main__":
    main()
