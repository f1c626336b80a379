"""What a whole search costs: search + derive + retrain against one Shared-Bottom training.

Why: the point of a supernet search is that finding the sharing structure costs a small
multiple of training one fixed model. This script runs the pipeline's own stage functions
(``nas_mtl.pipeline.run_search`` and ``run_derive``, ``nas_mtl.stages.retrain.retrain``, as
``nas-mtl run`` calls them, files and checkpoints included) on a study defined below: the
``synthetic`` data set at its defaults (the MMoE paper's §3.2 generator: input 100, 2 groups
of 2 regression tasks, 10,000 / 1,000 / 1,000 rows), every space at its default sizes and the
default ``[search]`` and ``[retrain]`` settings (10 search epochs, gradient affinity every 10
steps, 20 retrain epochs, batch 256, early stopping), seed 0, 2 threads available (training
measures whether 1 or 2 is faster and uses that: docs/speed.md, "Threads").

For SNR-Trans and Gumbel-Matrix it times search, derive and retrain; for Shared-Bottom the
same stages, which amount to its retraining (no gates to search). Reported per space: the
stage times, search epochs, time per search epoch and per retrain epoch, the gradient-affinity
probe's share of the search, and ``vs Shared-Bottom`` = total / Shared-Bottom's total (the
median over repeats of the ratio within a repeat), and ``multiply-adds vs Shared-Bottom``: the
same ratio for the multiply-adds of the training passes (rows seen × executed multiply-adds
per row of a forward, counted by ``FlopCounterMode``; the affinity probe and validation left
out): what the ratio would be if every model ran its arithmetic equally fast. Headline
``search_cost_vs_shared_bottom``: the larger of the two spaces' ratios (target <= 3). An
untimed Shared-Bottom run first takes torch's one-time set-up out of the timings.

The option the defaults leave off, a warm start (``[retrain] init = "search"``: the retraining
starts from the searched weights, docs/search.md "Warm start"), is measured beside them with
half the retrain epochs: ``warm total s`` = search + derive + that retraining, its ratio to
Shared-Bottom, and the test MSE (mean over tasks) of both retrainings, so that the time saved
is read next to what it costs in quality. Headline ``search_cost_warm_vs_shared_bottom``.
``--profile`` runs one more search of each space under cProfile and adds where its time goes.

Run from the repository root: ``python benchmarks/search_cost.py [--smoke|--quick] [--out DIR]
[--profile]``; writes ``DIR/search_cost.json``.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cProfile  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import nas_mtl  # noqa: E402
from nas_mtl.pipeline import run_derive, run_provenance, run_search  # noqa: E402
from nas_mtl.stages.retrain import RetrainResult, retrain  # noqa: E402
from nas_mtl.study_data import load_data  # noqa: E402

SEARCHED = ("snr_trans", "gumbel_matrix")
BASELINE = "shared_bottom"
TARGET = 3.0
THREADS = 2
SEED = 0
COUNT_ROWS = 64  # multiply-adds are linear in the rows; counted on this many

# The study: every default but the spaces (the [search] / [retrain] tables are left empty on
# purpose, so the defaults of nas_mtl/study.py are what is measured).
STUDY = """
name = "search_cost"
description = "Whole-search cost at the default sizes (benchmarks/search_cost.py)"
spaces = ["snr_trans", "gumbel_matrix", "shared_bottom"]
seeds = [0]

[data]
name = "synthetic"
"""
# --smoke: the same study at toy sizes
SMOKE = """
[data.params]
n_train = 256
n_val = 64
n_test = 64

[search]
epochs = 2
batch_size = 64
min_steps = 0

[retrain]
epochs = 2
batch_size = 64
min_steps = 0
"""


@dataclass(frozen=True)
class Plan:
    repeats: int
    smoke: bool = False


PLANS = {"full": Plan(3), "quick": Plan(1), "smoke": Plan(1, smoke=True)}

# where a search's time goes: (file suffix, function) -> label, for the --profile breakdown
PROFILE_PARTS = {
    ("nas_mtl/model/supernet.py", "forward"): "supernet forward (steps, probe, validation)",
    ("torch/_tensor.py", "backward"): "backward (steps and probe)",
    ("torch/optim/optimizer.py", "wrapper"): "optimizer steps (Adam on weights and gates)",
    ("nas_mtl/stages/search.py", "objective_terms"): "penalties + multiplier terms",
    ("nas_mtl/stages/affinity.py", "measure"): "gradient-affinity probe",
    ("nas_mtl/stages/search.py", "end_epoch"): "end of epoch: derive + cap + score",
    ("nas_mtl/stages/evaluation.py", "evaluate"): "validation passes",
    ("nas_mtl/stages/checkpoint.py", "save_atomic"): "checkpoints",
    ("nas_mtl/stages/batches.py", "train_batches"): "batching",
}


def write_study(folder: Path, smoke: bool) -> Path:
    path = folder / "search_cost.toml"
    path.write_text(STUDY + (SMOKE if smoke else ""))
    return path


def run_space(study: Any, data: Any, space: str, work: Path) -> dict[str, Any]:
    """Search, derive and retrain one space as the pipeline does; stage times and epochs."""
    run_dir = work / space / f"seed_{SEED}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    net, info = run_search(study, space, data, SEED, run_dir)
    t1 = time.perf_counter()
    arch = run_derive(net, study, data, SEED, run_dir, run_provenance(study, {}, space, SEED))
    t2 = time.perf_counter()
    result = retrain(arch, data, study.retrain, seed=SEED, run_dir=run_dir)
    t3 = time.perf_counter()
    warm = None
    if info.get("searched"):  # the option: start from the searched weights, half the epochs
        cfg = replace(
            study.retrain,
            init="search",
            epochs=max(1, study.retrain.epochs // 2),
            min_steps=study.retrain.min_steps // 2,
        )
        warm = retrain(arch, data, cfg, seed=SEED, run_dir=run_dir / "warm", searched=net)
    t4 = time.perf_counter()
    log = run_dir / "search_log.jsonl"
    epochs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    affinity = run_dir / "affinity.json"
    probe_s = json.loads(affinity.read_text())["extra_seconds"] if affinity.exists() else 0.0
    retrain_epochs = len(result.fit.history)
    search_epochs = len(epochs)
    x = data.train.x[:COUNT_ROWS]
    return {
        "space": space,
        "searched": bool(info.get("searched")),
        "search_s": t1 - t0,
        "derive_s": t2 - t1,
        "retrain_s": t3 - t2,
        "total_s": t3 - t0,
        "search_epochs": search_epochs,
        "search_s_per_epoch": (t1 - t0) / search_epochs if search_epochs else None,
        "search_epoch_wall_s": _common.median([e["wall_s"] for e in epochs]) if epochs else None,
        "affinity_probe_s": probe_s,
        "retrain_epochs": retrain_epochs,
        "retrain_s_per_epoch": (t3 - t2) / retrain_epochs if retrain_epochs else None,
        "open_fraction": arch.graph.get("open_fraction"),
        "test": {t: float(v) for t, v in result.test.primary(data.tasks).items()},
        "test_mean": mean_primary(result, data),
        "warm_retrain_s": t4 - t3 if warm else None,
        "warm_retrain_epochs": len(warm.fit.history) if warm else None,
        "warm_total_s": t2 - t0 + t4 - t3 if warm else None,
        "warm_test_mean": mean_primary(warm, data) if warm else None,
        "retrain_threads": result.fit.threads,  # the intra-op count training chose
        # multiply-adds of the training passes: rows seen x executed MACs per row of a forward
        "search_macs": search_epochs * len(data.train) * forward_macs(net, x),
        "retrain_macs": retrain_epochs * len(data.train) * forward_macs(result.fit.model, x),
    }


def vs_baseline(reps: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float:
    """The median over repeats of ``key`` / the baseline's total in the same repeat."""
    return _common.median([a[key] / b["total_s"] for a, b in zip(reps, base, strict=True)])


def mean_primary(result: RetrainResult, data: Any) -> float:
    """The mean over tasks of the primary test metric (MSE on the synthetic tasks)."""
    values = result.test.primary(data.tasks).values()
    return float(sum(values) / len(values))


def forward_macs(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Executed multiply-adds per row of one training-mode forward pass (matmul-type ops)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.train()(x)
    return counter.get_total_flops() / 2 / len(x)


def profile_search(study: Any, data: Any, space: str, work: Path, top: int = 12) -> dict:
    """cProfile one search of ``space`` (``run_search``): named parts and the top functions."""
    run_dir = work / "profile" / space
    run_dir.mkdir(parents=True)
    prof = cProfile.Profile()
    prof.enable()
    run_search(study, space, data, SEED, run_dir)
    prof.disable()
    raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, _, ct, _) in raw.values())
    parts = []
    for (suffix, func), label in PROFILE_PARTS.items():
        ct = sum(v[3] for (f, _, name), v in raw.items() if name == func and f.endswith(suffix))
        parts.append({"part": label, "function": f"{suffix}:{func}", "cumulative_s": ct})
    by_self = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {
        "space": space,
        "total_s": total,
        "parts": [{**p, "share": p["cumulative_s"] / total} for p in parts],
        "top_self": [
            {
                "function": f"{Path(f).name}:{line}:{name}" if line else name,
                "calls": v[1],
                "self_s": v[2],
                "share": v[2] / total,
            }
            for (f, line, name), v in by_self
        ],
    }


COLUMNS: list[_common.Column] = [
    ("space", "space", ""),
    ("search_s", "search s", ".1f"),
    ("search_epochs", "search epochs", "d"),
    ("search_s_per_epoch", "s / search epoch", ".2f"),
    ("affinity_share", "affinity probe", ".0%"),
    ("derive_s", "derive s", ".2f"),
    ("retrain_s", "retrain s", ".1f"),
    ("retrain_epochs", "retrain epochs", "d"),
    ("retrain_s_per_epoch", "s / retrain epoch", ".2f"),
    ("total_s", "total s", ".1f"),
    ("vs_shared_bottom", "vs Shared-Bottom", ".2f"),
    ("macs_vs_shared_bottom", "multiply-adds vs Shared-Bottom", ".2f"),
    ("test_mean", "test MSE", ".4f"),
    ("warm_retrain_epochs", "warm retrain epochs", "d"),
    ("warm_total_s", "warm total s", ".1f"),
    ("warm_vs_shared_bottom", "warm vs Shared-Bottom", ".2f"),
    ("warm_test_mean", "warm test MSE", ".4f"),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _common.parser(__doc__)
    ap.add_argument("--profile", action="store_true", help="add a cProfile of one search per space")
    args = ap.parse_args(argv)
    mode = _common.mode_of(args)
    plan = PLANS[mode]
    torch.set_num_threads(THREADS)
    logging.basicConfig(level=logging.ERROR)  # search warnings are not this benchmark's subject
    work = Path(tempfile.mkdtemp(prefix="nas_mtl_search_cost_"))
    try:
        study = nas_mtl.load_study(write_study(work, plan.smoke))
        data = load_data(study, {}, SEED)
        spaces = (*SEARCHED, BASELINE)
        run_space(study, data, BASELINE, work / "warm-up")  # torch's one-time set-up: untimed
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in spaces}
        for r in range(plan.repeats):
            for space in spaces[r % len(spaces) :] + spaces[: r % len(spaces)]:
                runs[space].append(run_space(study, data, space, work))
                print(f"repeat {r}: {space} {runs[space][-1]['total_s']:.1f} s", flush=True)
        prof = [profile_search(study, data, s, work) for s in SEARCHED] if args.profile else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for space in spaces:
        reps = runs[space]
        row: dict[str, Any] = {"space": space, "repeats": len(reps)}
        for key in reps[0]:
            vals = [r[key] for r in reps]
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
            row[key] = _common.median(vals) if numeric else vals[0]
        row["affinity_share"] = (
            row["affinity_probe_s"] / row["search_s"] if row["searched"] else None
        )
        row["vs_shared_bottom"] = vs_baseline(reps, runs[BASELINE], "total_s")
        row["warm_vs_shared_bottom"] = (
            vs_baseline(reps, runs[BASELINE], "warm_total_s") if row["searched"] else None
        )
        row["totals_s"] = [r["total_s"] for r in reps]
        sb = runs[BASELINE][0]
        row["macs_vs_shared_bottom"] = (row["search_macs"] + row["retrain_macs"]) / (
            sb["search_macs"] + sb["retrain_macs"]
        )
        rows.append(row)
    ratio = {r["space"]: r["vs_shared_bottom"] for r in rows}
    warm = {r["space"]: r["warm_vs_shared_bottom"] for r in rows}
    headline = {
        "search_cost_vs_shared_bottom": max(ratio[s] for s in SEARCHED),
        **{f"{s}_vs_shared_bottom": ratio[s] for s in SEARCHED},
        "search_cost_warm_vs_shared_bottom": max(warm[s] for s in SEARCHED),
    }
    settings = _common.settings(
        mode,
        repeats=plan.repeats,
        seed=SEED,
        study=STUDY + (SMOKE if plan.smoke else ""),
        search=asdict(study.search),
        retrain=asdict(study.retrain),
        data={"name": study.data.name, "params": dict(study.data.params)},
    )
    print(
        f"search_cost ({mode}): {THREADS} threads, median of {plan.repeats} repeat(s); "
        f"load average {settings['load_average']}"
    )
    print(_common.table(rows, COLUMNS))
    print(
        f"search_cost_vs_shared_bottom = {headline['search_cost_vs_shared_bottom']:.2f} "
        f"(target <= {TARGET}); with [retrain] init = 'search' and half the retrain epochs: "
        f"{headline['search_cost_warm_vs_shared_bottom']:.2f}"
    )
    for one in prof or []:
        print(f"cProfile of one {one['space']} search ({one['total_s']:.1f} s, profiler on):")
        for p in one["parts"]:
            print(f"  {p['part']:<46} {p['cumulative_s']:7.2f} s {p['share']:6.1%}")
        print("  top functions by own time:")
        for p in one["top_self"]:
            print(f"  {p['function'][:68]:<68} {p['self_s']:7.2f} s {p['share']:6.1%}")
    extra: dict[str, Any] = {"targets": {"search_cost_vs_shared_bottom": TARGET}}
    if prof is not None:
        extra["profile"] = prof
    _common.write_result(_common.out_dir(args), "search_cost", settings, rows, headline, **extra)
    return headline


if __name__ == "__main__":
    main()
