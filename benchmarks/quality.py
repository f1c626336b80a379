"""Quality tables: what each sharing structure scores on the papers' data sets, with the peers.

Why: a toolkit that searches how tasks share parameters must show what its models score next
to fixed structures, to the peer libraries and to the papers it implements. Each table is a
nas-mtl *study* built below, written to ``DIR/quality/<mode>/<table>/study.toml`` and run by
the package's own pipeline (``nas_mtl.pipeline.run_study``, as ``nas-mtl run`` does) into
``DIR/quality/<mode>/<table>/run/``; the numbers are read back from that run's ``report.json``.
The tables (full mode; ``--quick`` runs census1, planted and mnist_family at reduced sizes):

    census1    Census-Income group 1 (income > 50K, never married; AUC per task)
    census2    Census-Income group 2 (education >= college, never married; AUC per task)
    synthetic  the MMoE §3.2 generator's hard variant (sinusoids "index"), rho in 0.5/0.9/1.0
    planted    12 tasks in 3 planted groups, per-task inputs (``studies/planted_groups.toml``)
    omniglot   Omniglot at CPU scale: 5 of the paper's 20 alphabets at 28x28
    mnist      the Gumbel-Matrix MNIST family (MNIST, MNIST-2, rotated, rotated-2)

Spaces: no_sharing, shared_bottom, mmoe, snr_trans, snr_aver and gumbel_matrix on tabular
data, grouped (with the planted groups) on planted, and on images the spaces that have image
layers (no_sharing, shared_bottom, gumbel_matrix). Seeds 0, 1, 2 (one in ``--smoke``); a seed
fixes the data split, so every space and peer of a seed sees the same rows.

Peers (tabular tables): deepctr-torch MMOE, SharedBottom, PLE and LibMTL MMoE, CGC, PLE at the
sizes of the study's own mmoe / shared_bottom spaces, trained by nas-mtl's training loop
(``nas_mtl.stages.training.train``: the same seeded batches, epochs, batch size, learning rate
and early stopping on validation as the study's retraining) and scored on the test split by
nas-mtl's metrics. Each peer result is cached in ``.../<table>/peers/`` per (data variant,
peer, seed); a peer that is not installed or fails keeps its row with the reason (``--smoke``
skips them: it uses no optional package).

Papers: the figures on record in the project (``shared/data/README.md``: the MMoE paper's
Census-Income group 1 AUCs and the Gumbel-Matrix paper's Omniglot accuracy) are rows labelled
"paper: ...", and each table ends with a sentence, generated from the numbers, comparing our
best model with them and naming how our run differs from theirs.

Resume: rerun the same command with the same ``--out``. Finished runs are reused, an
interrupted run continues from its last checkpoint (``nas-mtl run``'s own resume) and cached
peers are skipped. A table whose study text changed (a new version of this script) is rerun
from scratch in its folder, and so are its peers.

Headline: ``census1_best_mean_auc`` (the best nas-mtl space's mean AUC over the two tasks and
the seeds), ``census1_income_auc_minus_paper`` (the best nas-mtl income AUC minus the paper's
MMoE mean, 0.9359), ``census2_best_mean_auc``, ``synthetic_searched_vs_no_sharing_max`` (per
rho, the best searched space's test MSE over no_sharing's, seed by seed and averaged; the
largest over rho), ``planted_best_searched_vs_no_sharing`` and ``planted_grouped_vs_no_sharing``
(the same ratio on planted; below 1 beats no sharing), ``omniglot_best_accuracy``,
``mnist_best_accuracy``; null where the table did not run. Budgets on 2 cores: full <= 2 hours
(the expected minutes of each table are in its comments), ``--quick`` <= 8 minutes,
``--smoke`` <= 15 s.

Run from the repository root: ``python benchmarks/quality.py [--smoke|--quick] [--out DIR]
[--tables NAME ...] [--seeds N ...]``; writes ``DIR/quality.json``. Real data from
``$NAS_MTL_DATA_DIR`` (``docs/data.md``); ``--smoke`` uses synthetic data only.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import tomli_w  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import peers as peer_lib  # noqa: E402
from _quality_peers import brief, run_peers  # noqa: E402
from _quality_tables import (  # noqa: E402
    CENSUS1_PAPER_MEAN_INCOME,
    SEARCHED,
    SEEDS,
    THREADS,
    Table,
    plan,
)

from nas_mtl.metrics import delta_m  # noqa: E402
from nas_mtl.pipeline import run_study  # noqa: E402
from nas_mtl.results import RunResult  # noqa: E402
from nas_mtl.rundir import holds_other_version, variant_label  # noqa: E402
from nas_mtl.storage import read_json, strict_json, write_bytes_atomic  # noqa: E402
from nas_mtl.study import Study, load_study  # noqa: E402


# --------------------------------------------------------------------------- one table
def write_study(table: Table, folder: Path) -> Study:
    """``folder/study.toml`` (rewritten only when its text changes) and the loaded study."""
    text = (
        f"# Written by benchmarks/quality.py: the study behind the '{table.key}' quality table.\n"
        f"# {table.title}\n" + tomli_w.dumps(table.study)
    )
    path = folder / "study.toml"
    if not path.exists() or path.read_text() != text:
        write_bytes_atomic(path, text.encode())
    return load_study(path)


def run_table(
    table: Table,
    folder: Path,
    seeds: Sequence[int] | None,
    libs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Run (or resume) the table's study and its peers; the raw results and what happened."""
    t0 = time.perf_counter()
    st = write_study(table, folder)
    out = folder / "run"
    changed = holds_other_version(out, st)
    if changed:  # an older version of this table: its runs answer another question
        print(f"  {table.key}: the study changed since the last run; rerunning it", flush=True)
    chosen = list(seeds) if seeds is not None else list(st.seeds)
    run_study(st, out, seeds=chosen, overwrite=changed)
    report = read_json(out / "report.json", "report")
    results = [RunResult.from_json(r, str(out / "report.json")) for r in report["results"]]
    peer_rows = run_peers(table, st, folder, chosen, libs) if table.peers else []
    return {
        "study": st,
        "results": results,
        "peers": peer_rows,
        "seeds": chosen,
        "wall_s": time.perf_counter() - t0,
        "restarted": changed,
    }


# --------------------------------------------------------------------------- summaries
def mean_std(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
        "values": vals,
    }


def shown(stat: Mapping[str, Any] | None, digits: int = 4) -> str | None:
    if not stat or stat.get("mean") is None:
        return None
    text = f"{stat['mean']:.{digits}f}"
    return text if stat.get("std") is None else f"{text} ± {stat['std']:.{digits}f}"


@dataclass
class Entry:
    """One (variant, model) of a table: per-seed task scores and costs."""

    library: str
    model: str
    variant: dict[str, Any]
    per_seed: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> task -> test
    delta_m: dict[int, float | None] = field(default_factory=dict)
    params: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)


def entries(raw: dict[str, Any], tasks: Sequence[str], higher: Mapping[str, bool]) -> list[Entry]:
    """nas-mtl's spaces and the peers, grouped by (variant, model), in table order."""
    found: dict[tuple[str, str, str], Entry] = {}

    def entry(lib: str, model: str, variant: dict[str, Any]) -> Entry:
        key = (variant_label(variant), lib, model)
        return found.setdefault(key, Entry(lib, model, dict(variant)))

    base: dict[tuple[str, int], dict[str, float]] = {}
    for r in raw["results"]:
        e = entry("nas-mtl", r.space, r.variant)
        e.per_seed[r.seed] = {t: v.test for t, v in r.tasks.items()}
        e.delta_m[r.seed] = r.delta_m
        e.params.append(r.total_params)
        e.wall.append(r.wall_s)
        e.status.append("ok" if r.status == "finished" else f"failed: {r.failure}")
        if r.space == "no_sharing":
            base[(variant_label(r.variant), r.seed)] = e.per_seed[r.seed]
    for p in raw["peers"]:
        e = entry(p["library"], p["model"], p["variant"])
        if "tasks" not in p:  # not installed, or an error
            e.status.append(p["status"])
            continue
        e.per_seed[p["seed"]] = {t: v["test"] for t, v in p["tasks"].items()}
        ref = base.get((variant_label(p["variant"]), p["seed"]))
        scores = e.per_seed[p["seed"]]
        ok = ref is not None and all(
            v is not None and math.isfinite(v) for v in (*scores.values(), *ref.values())
        )
        e.delta_m[p["seed"]] = delta_m(scores, ref, higher) if ok else None  # type: ignore[arg-type]
        e.params.append(p["params"])
        e.wall.append(p["wall_s"])
        e.status.append("ok" if p["status"] == "ok" else f"failed: {p['failure']}")
    order = {v: i for i, v in enumerate(dict.fromkeys(k[0] for k in found))}
    return sorted(found.values(), key=lambda e: order[variant_label(e.variant)])


def summary_row(table: Table, e: Entry, tasks: Sequence[str]) -> dict[str, Any]:
    seeds = sorted(e.per_seed)
    per_seed = {s: statistics.fmean(e.per_seed[s].values()) for s in seeds}
    per_seed = {s: v if math.isfinite(v) else None for s, v in per_seed.items()}
    short = [brief(s, width=200) for s in e.status]
    counts = {s: short.count(s) for s in dict.fromkeys(short)}
    if list(counts) == ["ok"]:
        status = "ok"
    else:
        status = "; ".join(f"{n}/{len(e.status)} {s}" for s, n in counts.items()) or "no result"
    return {
        "table": table.key,
        "variant": e.variant,
        "library": e.library,
        "model": e.model,
        "seeds": seeds,
        "tasks": {t: mean_std([e.per_seed[s][t] for s in seeds]) for t in tasks},
        "mean": mean_std(list(per_seed.values())),
        "per_seed": per_seed,  # seed -> mean over tasks
        "delta_m": mean_std([e.delta_m[s] for s in seeds if e.delta_m.get(s) is not None]),
        "params": statistics.fmean(e.params) if e.params else None,
        "wall_s_per_seed": statistics.fmean(e.wall) if e.wall else None,
        "status": status,
        "failures": sorted({s for s in e.status if s != "ok"}),  # in full
    }


def paper_rows(table: Table, tasks: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for p in table.papers:
        vals = [p.values[t] for t in tasks if t in p.values]
        mean = p.values.get("mean", statistics.fmean(vals) if len(vals) == len(tasks) else None)
        rows.append(
            {
                "table": table.key,
                "variant": {},
                "library": p.source,
                "model": f"paper: {p.model} ({p.label})",
                "seeds": [],
                "tasks": {t: {"mean": p.values.get(t), "std": None} for t in tasks},
                "mean": {"mean": mean, "std": None},
                "per_seed": {},
                "delta_m": None,
                "params": None,
                "wall_s_per_seed": None,
                "status": "published figure",
            }
        )
    return rows


def best(rows: Sequence[dict[str, Any]], higher: bool, library: str | None = "nas-mtl") -> Any:
    """The row with the best mean metric (nas-mtl's own rows unless ``library`` is None)."""
    cand = [
        r
        for r in rows
        if r["mean"]["mean"] is not None
        and r["status"] == "ok"
        and r["seeds"]
        and (library is None or r["library"] == library)
    ]
    if not cand:
        return None
    return (max if higher else min)(cand, key=lambda r: r["mean"]["mean"])


def statement(
    table: Table, rows: Sequence[dict[str, Any]], tasks: Sequence[str], metric: str, higher: bool
) -> str:
    """Plain sentences on our best against the papers' figures, generated from the numbers."""
    ours = [r for r in rows if r["library"] == "nas-mtl"]
    if not table.papers:
        parts = []
        for variant in dict.fromkeys(variant_label(r["variant"]) for r in ours):
            here = [r for r in ours if variant_label(r["variant"]) == variant]
            top = best(here, higher)
            if top is None:
                continue
            where = "" if variant == "default" else f"{variant}: "
            text = f"{where}best {top['model']} ({metric} {shown(top['mean'])})"
            ref = next((r for r in here if r["model"] == "no_sharing"), None)
            ratio = seed_ratio(top, ref)
            if ratio is not None and top is not ref:
                text += f", {ratio:.3f}x no_sharing's (mean of per-seed ratios)"
            parts.append(text)
        return (
            "No published figure for this table is on record in the project "
            "(shared/SPEC.md, shared/data/README.md). Ours: "
            + ("; ".join(parts) or "no finished nas-mtl result")
            + "."
        )
    top = best(ours, higher)
    if top is None:
        return "No finished nas-mtl result to compare with the papers' figures."
    clauses, below = [], []
    for p in table.papers:
        keys = [t for t in tasks if t in p.values] or ["mean"]
        same = next((r for r in ours if r["model"] == p.space and r["status"] == "ok"), None)
        parts = []
        for name, row in (("our best", top), ("our", same)):
            if row is None or (name == "our" and row is top):  # our best is the paper's family
                continue
            mine = [row["mean"]["mean"] if k == "mean" else row["tasks"][k]["mean"] for k in keys]
            if any(m is None for m in mine):
                continue
            gaps = [m - p.values[k] for m, k in zip(mine, keys, strict=True)]
            if row is top:
                below += [
                    f"{k} ({p.label})"
                    for k, g in zip(keys, gaps, strict=True)
                    if (g < 0 if higher else g > 0)
                ]
            parts.append(
                f"{name} {row['model']} "
                + " / ".join(f"{m:.4f}" for m in mine)
                + " ("
                + " / ".join(f"{g:+.4f}" for g in gaps)
                + ")"
            )
        figure = " / ".join(f"{p.values[k]:.4f}" for k in keys)
        clauses.append(
            f"paper {p.model} {p.label}, {' / '.join(keys)} {figure}: " + "; ".join(parts)
        )
    verdict = (
        f"Our best is below the paper on {', '.join(below)}"
        if below
        else "Our best is at or above every paper figure here"
    )
    return (
        ". ".join(clauses)
        + f". {verdict}; and this run is not the paper's: "
        + "; ".join(table.differences)
        + "."
    )


def seed_ratio(row: Mapping[str, Any] | None, ref: Mapping[str, Any] | None) -> float | None:
    """Mean over the common seeds of ``row``'s mean metric over ``ref``'s (seed by seed)."""
    if row is None or ref is None:
        return None
    a, b = row["per_seed"], ref["per_seed"]
    ratios = [a[s] / b[s] for s in a if s in b and a[s] is not None and b[s]]
    return statistics.fmean(ratios) if ratios else None


COLUMNS_HEAD: list[_common.Column] = [("model", "model", ""), ("library", "library", "")]
COLUMNS_TAIL: list[_common.Column] = [
    ("delta_m_shown", "Δm % vs no_sharing", ""),
    ("params", "params", ",.0f"),
    ("wall_shown", "s / seed", ""),
    ("n_seeds", "seeds", "d"),
    ("status", "status", ""),
]
MAX_TASK_COLUMNS = 4  # more tasks: only their mean is printed (every task is in the JSON)


def markdown(
    table: Table, rows: Sequence[dict[str, Any]], tasks: Sequence[str], metric: str
) -> str:
    sweep = bool(table.study["data"].get("sweep"))
    task_cols = list(tasks) if len(tasks) <= MAX_TASK_COLUMNS else []
    columns = (
        ([("variant_shown", "variant", "")] if sweep else [])
        + COLUMNS_HEAD
        + [(f"task:{t}", f"{t} {metric}", "") for t in task_cols]
        + [("mean_shown", f"mean {metric}", "")]
        + COLUMNS_TAIL
    )
    shown_rows = []
    for r in rows:
        v = ", ".join(f"{k}={x}" for k, x in r["variant"].items())
        shown_rows.append(
            {
                **r,
                "variant_shown": v or "—",
                **{f"task:{t}": shown(r["tasks"].get(t)) for t in task_cols},
                "mean_shown": shown(r["mean"]),
                "delta_m_shown": shown(r["delta_m"], 2) if r["delta_m"] else None,
                "wall_shown": f"{r['wall_s_per_seed']:.0f}" if r["wall_s_per_seed"] else None,
                "n_seeds": len(r["seeds"]) if r["seeds"] else None,
                "status": brief(r["status"], width=80),
            }
        )
    return _common.table(shown_rows, columns)


# --------------------------------------------------------------------------- headline
def headline_of(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The tracked numbers (module docstring); None where a table did not run."""

    def here(table: str, variant: str = "") -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if r["table"] == table
            and r["library"] == "nas-mtl"
            and (not variant or variant_label(r["variant"]) == variant)
        ]

    def best_mean(table: str) -> float | None:
        top = best(here(table), higher=True)  # the accuracy and AUC tables
        return top["mean"]["mean"] if top else None

    def vs_no_sharing(table: str, models: Sequence[str], variant: str = "") -> float | None:
        mine = here(table, variant)
        ref = next((r for r in mine if r["model"] == "no_sharing"), None)
        ratios = [seed_ratio(r, ref) for r in mine if r["model"] in models and r["status"] == "ok"]
        ratios = [x for x in ratios if x is not None]
        return min(ratios) if ratios else None  # the best of the models (lower MSE)

    income = [
        r["tasks"]["income_50k"]["mean"]
        for r in here("census1")
        if r["status"] == "ok" and r["tasks"].get("income_50k", {}).get("mean") is not None
    ]
    variants = dict.fromkeys(variant_label(r["variant"]) for r in here("synthetic"))
    synthetic = [vs_no_sharing("synthetic", SEARCHED, v) for v in variants]
    synthetic = [x for x in synthetic if x is not None]
    return {
        "census1_best_mean_auc": best_mean("census1"),
        "census1_income_auc_minus_paper": (
            max(income) - CENSUS1_PAPER_MEAN_INCOME if income else None
        ),
        "census2_best_mean_auc": best_mean("census2"),
        "synthetic_searched_vs_no_sharing_max": max(synthetic) if synthetic else None,
        "planted_best_searched_vs_no_sharing": vs_no_sharing("planted", SEARCHED),
        "planted_grouped_vs_no_sharing": vs_no_sharing("planted", ("grouped",)),
        "omniglot_best_accuracy": best_mean("omniglot"),
        "mnist_best_accuracy": best_mean("mnist"),
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _common.parser(__doc__)
    ap.add_argument("--tables", nargs="+", metavar="NAME", help="run only these tables")
    ap.add_argument(
        "--seeds", nargs="+", type=int, metavar="N", help="run only these of the seeds (timing)"
    )
    args = ap.parse_args(argv)
    mode = _common.mode_of(args)
    tables = plan(mode)
    if args.tables:
        unknown = set(args.tables) - {t.key for t in tables}
        if unknown:
            ap.error(f"--tables: {sorted(unknown)} unknown; {mode}: {[t.key for t in tables]}")
        tables = [t for t in tables if t.key in args.tables]
    torch.set_num_threads(THREADS)
    logging.basicConfig(level=logging.ERROR)  # search warnings are in each run's logs
    out = _common.out_dir(args)
    t0 = time.perf_counter()
    libs = peer_lib.library_status(mode)  # --smoke uses no optional package (the contract)
    rows: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    for table in tables:
        print(f"== {table.key}: {table.title}", flush=True)
        folder = out / "quality" / mode / table.key
        try:
            raw = run_table(table, folder, args.seeds, libs)
        except Exception as e:  # noqa: BLE001 - one broken table keeps the others
            why = f"error: {type(e).__name__}: {e}"
            print(f"{table.key}: {why}\n{traceback.format_exc()}", flush=True)
            failed.append(table.key)
            rows.append(
                {
                    "table": table.key,
                    "variant": {},
                    "library": "nas-mtl",
                    "model": None,
                    "seeds": [],
                    "tasks": {},
                    "mean": {"mean": None, "std": None},
                    "per_seed": {},
                    "status": why,
                }
            )
            done.append({"table": table.key, "title": table.title, "error": why})
            continue
        first = raw["results"][0]
        tasks = list(first.tasks)
        metric = first.tasks[tasks[0]].metric
        higher = {t: v.higher_is_better for t, v in first.tasks.items()}
        mine = [summary_row(table, e, tasks) for e in entries(raw, tasks, higher)]
        mine += paper_rows(table, tasks)
        said = statement(table, mine, tasks, metric, higher[tasks[0]])
        text = f"### {table.title}\n\n{markdown(table, mine, tasks, metric)}\n\n{said}"
        print(text + "\n", flush=True)
        rows += mine
        done.append(
            {
                "table": table.key,
                "title": table.title,
                "folder": str(folder),
                "seeds": raw["seeds"],
                "wall_s": raw["wall_s"],
                "restarted": raw["restarted"],
                "expected_minutes": table.minutes,
                "statement": said,
                "markdown": text,
                "study": tomli_w.dumps(table.study),
            }
        )
    headline = headline_of(rows)
    settings = _common.settings(
        mode,
        seeds=list(args.seeds) if args.seeds else list(SEEDS if mode != "smoke" else (0,)),
        tables=[t.key for t in tables],
        libraries=libs,
        wall_s=time.perf_counter() - t0,
        data_dir=os.environ.get("NAS_MTL_DATA_DIR"),
    )
    print(
        f"quality ({mode}): {len(tables)} table(s) in {settings['wall_s']:.0f} s, "
        f"{THREADS} threads; load average {settings['load_average']}"
    )
    for k, v in headline.items():
        print(f"{k} = {'—' if v is None else f'{v:.4f}'}")
    _common.write_result(
        out, "quality", settings, strict_json(rows), strict_json(headline), tables=done
    )
    if failed:
        sys.exit(f"quality: table(s) {failed} failed (their rows say why)")
    return headline


if __name__ == "__main__":
    main()
