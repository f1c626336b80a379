"""What the search's gradient-affinity probe costs, and whether its affinities find the groups.

Why: the probe (``nas_mtl/stages/affinity.py``, ``docs/search.md`` "Gradient affinity")
measures TAG's lookahead affinity every ``affinity_every`` steps, at 2T + 1 passes a
measurement. Its acceptance bars are an extra search time of at most 30 % at the default
``affinity_every`` and a clustering of the mean affinity (k = the number of planted groups,
``cluster_tasks`` on ``affinity_similarity``) that recovers the planted groups, mean ARI >= 0.9.
For each study, seed and searched space this script runs the study's search twice, probe off
and probe on, back to back on the same data, seed and initialization: the probe leaves the
trajectory unchanged (same epochs, same early stop), so the two wall times differ only by the
probe. Reported: ARI per run, the extra time ``on / off - 1`` per run and its median, and the
probe's own share ``extra_seconds / (search_seconds - extra_seconds)`` (timed inside the probe,
so less exposed to other load on the machine).

Modes (the benchmarks' contract, ``benchmarks/README.md``): the default runs both studies on
their seeds; ``--quick`` runs ``planted_groups`` on its first seed; ``--smoke`` runs that for
Gumbel-Matrix only, at 2 search epochs (its ARI means nothing). Headline: the largest median
extra time over the studies and the smallest mean ARI.

Run from the repository root: ``python benchmarks/affinity_overhead.py [--smoke|--quick]
[--out DIR] [--threads 2] [--every N] [--studies studies/planted_groups.toml ...]``; writes
``DIR/affinity_overhead.json`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402

from nas_mtl.cluster import ari, cluster_tasks, groups_to_labels  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.stages.affinity import affinity_similarity  # noqa: E402
from nas_mtl.stages.search import search  # noqa: E402
from nas_mtl.study import SearchConfig, Study, load_study  # noqa: E402
from nas_mtl.study_data import load_data, space_graph  # noqa: E402

STUDIES = ("studies/planted_groups.toml", "studies/planted_groups_heldout.toml")
SPACES = ("gumbel_matrix", "snr_trans")
MAX_OVERHEAD = 0.30
MIN_MEAN_ARI = 0.9


def planted_groups(study: Study) -> dict[str, int]:
    """The planted groups: the oracle ``grouped`` space's ``groups`` in the study file."""
    return groups_to_labels(study.space_params["grouped"]["groups"])


def one_search(study: Study, space: str, seed: int, cfg: SearchConfig) -> tuple[float, Any]:
    """Wall time of one search of ``space`` (as the pipeline builds it), and its result."""
    data = load_data(study, {}, seed)
    torch.manual_seed(seed)
    net = Supernet(space_graph(study, space, data))
    start = time.perf_counter()
    result = search(net, data, cfg, seed=seed)
    return time.perf_counter() - start, result


def measure(study: Study, space: str, seed: int, every: int) -> dict[str, Any]:
    off_s, off = one_search(study, space, seed, dataclasses.replace(study.search, affinity_every=0))
    on_s, on = one_search(
        study, space, seed, dataclasses.replace(study.search, affinity_every=every)
    )
    aff = on.affinity
    truth = planted_groups(study)
    k = len(set(truth.values()))
    labels = cluster_tasks(affinity_similarity(aff.matrix), k).labels
    found = dict(zip(aff.tasks, labels.tolist(), strict=True))
    return {
        "study": study.name,
        "space": space,
        "seed": seed,
        "tasks": len(aff.tasks),
        "k": k,
        "epochs": len(on.history),
        "same_trajectory": len(on.history) == len(off.history) and on.best_epoch == off.best_epoch,
        "measurements": aff.measurements,
        "ari": ari(found, truth),
        "off_s": off_s,
        "on_s": on_s,
        "extra_ratio": on_s / off_s - 1.0,
        "probe_s": aff.extra_seconds,
        "probe_share": aff.extra_seconds / (aff.search_seconds - aff.extra_seconds),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = _common.parser(__doc__)
    parser.add_argument("--studies", nargs="+", default=None, help="default: by mode")
    parser.add_argument("--spaces", nargs="+", default=None, help="default: by mode")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the study's")
    parser.add_argument(
        "--every", type=int, default=SearchConfig.affinity_every, help="default: [search]'s"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    mode = _common.mode_of(args)
    studies = args.studies or (list(STUDIES) if mode == "full" else [STUDIES[0]])
    spaces = args.spaces or (list(SPACES) if mode != "smoke" else [SPACES[0]])
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)  # search warnings are not this benchmark's subject
    settings = _common.settings(mode, every=args.every, studies=studies, spaces=spaces)
    print(f"threads: {settings['threads']}, OMP_WAIT_POLICY={settings['omp_wait_policy']}")
    print(f"affinity_every = {args.every}; each run: search probe off, then probe on")
    header = (
        f"{'study':<24} {'space':<14} {'seed':>4} {'ep':>4} {'meas':>5} {'ARI':>5} "
        f"{'off s':>7} {'on s':>7} {'extra':>7} {'probe':>7}"
    )
    print(header)
    rows = []
    for path in studies:
        study = load_study(ROOT / path)
        if mode == "smoke":
            study = dataclasses.replace(study, search=dataclasses.replace(study.search, epochs=2))
        seeds = args.seeds or (study.seeds if mode == "full" else study.seeds[:1])
        for seed in seeds:
            for space in spaces:
                r = measure(study, space, seed, args.every)
                rows.append(r)
                print(
                    f"{r['study']:<24} {space:<14} {seed:>4} {r['epochs']:>4} "
                    f"{r['measurements']:>5} {r['ari']:>5.2f} {r['off_s']:>7.1f} "
                    f"{r['on_s']:>7.1f} {r['extra_ratio']:>7.1%} {r['probe_share']:>7.1%}",
                    flush=True,
                )
    summary = {}
    print()
    print(
        f"{'study':<24} {'mean ARI':>9} {'median extra':>13} {'max extra':>10} {'median probe':>13}"
    )
    for name in dict.fromkeys(r["study"] for r in rows):
        mine = [r for r in rows if r["study"] == name]
        summary[name] = {
            "mean_ari": statistics.mean(r["ari"] for r in mine),
            "ari": {f"{r['space']}/seed_{r['seed']}": r["ari"] for r in mine},
            "median_extra_ratio": statistics.median(r["extra_ratio"] for r in mine),
            "max_extra_ratio": max(r["extra_ratio"] for r in mine),
            "median_probe_share": statistics.median(r["probe_share"] for r in mine),
        }
        s = summary[name]
        print(
            f"{name:<24} {s['mean_ari']:>9.2f} {s['median_extra_ratio']:>13.1%} "
            f"{s['max_extra_ratio']:>10.1%} {s['median_probe_share']:>13.1%}"
        )
    meets = {
        name: s["mean_ari"] >= MIN_MEAN_ARI and s["median_extra_ratio"] <= MAX_OVERHEAD
        for name, s in summary.items()
    }
    for name, ok in meets.items():
        print(
            f"{name}: {'meets' if ok else 'MISSES'} mean ARI >= {MIN_MEAN_ARI} and median "
            f"extra time <= {MAX_OVERHEAD:.0%}"
        )
    headline = {
        "affinity_extra_ratio_max_median": max(s["median_extra_ratio"] for s in summary.values()),
        "affinity_mean_ari_min": min(s["mean_ari"] for s in summary.values()),
    }
    _common.write_result(
        _common.out_dir(args),
        "affinity_overhead",
        settings,
        rows,
        headline,
        every=args.every,
        targets={"mean_ari": MIN_MEAN_ARI, "median_extra_ratio": MAX_OVERHEAD},
        meets_targets=meets,
        summary=summary,
    )
    return headline


if __name__ == "__main__":
    main()
