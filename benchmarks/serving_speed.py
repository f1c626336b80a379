"""CPU inference latency of the packed serving model against its yardsticks.

Why: a retrained architecture should be as fast to serve as a dense network of its pruned
shape, so that its latency follows the multiply-adds it keeps (docs/serving.md). For derived
architectures of SNR-Trans, SNR-Aver and Gumbel-Matrix at several kept fractions (random
fixed gates drawn at rate 0.3 / 0.5 / 0.7 from the search space, then derived), this times

    (a) the packed model (``nas_mtl.serving.pack``, tuned for the batch it is timed at),
    (b) a hand-written dense model of the same pruned shape: ``nn.Linear`` layers over the
        kept widths (a component that task-scoped gates run on k task streams counts k
        times), one ``nn.Linear`` to the heads' inputs and the towers batched as ``bmm``,
        written here only,
    (c) the retrained pruned ``Supernet`` (what ``nas-mtl retrain`` trains today),
    (d) the full supernet of the space in eval mode,

at batch 1 and 256 and with 1 and 2 threads. Latency is the median over repeats of the mean
time per forward, in ``torch.inference_mode``, the cases interleaved within each repeat.
A ratio is the median over repeats of that repeat's ratio (the cases of one repeat share the
machine's load). The headline holds the largest packed / hand-written ratio
(target <= 1.1) and whether the packed model beats the full supernet on every row whose
architecture keeps less than 70% of the supernet's multiply-adds (graph count,
``nas_mtl.model.cost``). Timings on a shared machine are noisy: rerun on a quiet one.

Run from the repository root: ``python benchmarks/serving_speed.py [--smoke|--quick]
[--out DIR]``; writes ``DIR/serving_speed.json`` (default ``benchmarks/results``) and prints
a table. ``--smoke`` uses toy sizes and finishes in seconds, writing to a new temporary folder
unless ``--out`` is given (CI runs it; nothing is asserted about timings).
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import networkx as nx  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # run from anywhere
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import mode_of, out_dir, parser, write_json_atomic  # noqa: E402

from nas_mtl.model.cost import graph_costs  # noqa: E402
from nas_mtl.model.graph import INPUT, in_shape, node_layers, validate  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.serving import pack  # noqa: E402
from nas_mtl.stages.derive import derive, sampled_decisions  # noqa: E402
from nas_mtl.stages.retrain import build_model  # noqa: E402

SPACES = ("snr_trans", "snr_aver", "gumbel_matrix")


@dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of one benchmark mode."""

    name: str
    input_dim: int
    n_tasks: int
    space_params: dict[str, dict[str, Any]]
    rates: tuple[float, ...]
    batches: tuple[int, ...]
    threads: tuple[int, ...]
    repeats: int
    min_time_s: float  # per case and repeat
    seeds: int = 1


MODES = {
    "full": Mode("full", 100, 4, {}, (0.3, 0.5, 0.7), (1, 256), (1, 2), 7, 0.05),
    "quick": Mode("quick", 100, 4, {}, (0.3, 0.7), (1, 256), (1, 2), 3, 0.02),
    "smoke": Mode(
        "smoke",
        16,
        3,
        {
            "snr_trans": {"subnetworks": 3, "width": 8},
            "snr_aver": {"subnetworks": 3, "width": 8},
            "gumbel_matrix": {"components": 3, "width": 8},
        },
        (0.5,),
        (1, 256),
        (1,),
        1,
        0.002,
    ),
}


# --------------------------------------------------------------------------- (b) hand-written
def kept_widths(g: nx.DiGraph) -> tuple[list[int], int, list[int], list[int]]:
    """Layer widths of a derived graph as a dense network: (trunk, head in-width, tower hidden,
    head output sizes).

    A component counts once while every task sees the same values, and once per task that
    uses it after the first task-scoped gate (it then runs on each of those task streams).
    """
    shapes = validate(g)
    layer_of = node_layers(g)
    tasks = list(g.graph["tasks"])
    streams_from = min(
        (layer_of[v] for _, v, d in g.edges(data=True) if d["gate"]["scope"] == "task"),
        default=math.inf,
    )
    widths: dict[int, int] = {}
    for n, data in g.nodes(data=True):
        if data["role"] != "component":
            continue
        copies = len(data.get("tasks", tasks)) if layer_of[n] >= streams_from else 1
        widths[layer_of[n]] = widths.get(layer_of[n], 0) + copies * shapes[n][0]
    heads = [f"head:{t}" for t in tasks]
    head_in = in_shape(g, heads[0], shapes)[0]
    hidden = list(g.nodes[heads[0]]["params"].get("hidden", []))
    outs = [int(g.nodes[h]["width"]) for h in heads]
    trunk = [int(g.nodes[INPUT]["shape"][0])] + [widths[k] for k in sorted(widths)]
    return trunk, head_in, hidden, outs


class HandWritten(nn.Module):
    """A plain MLP of the pruned shape; towers batched over tasks as bmm (a dense baseline)."""

    def __init__(self, trunk: list[int], head_in: int, hidden: list[int], outs: list[int]) -> None:
        super().__init__()
        self.trunk = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(trunk[:-1], trunk[1:], strict=True)
        )
        self.to_heads = nn.Linear(trunk[-1], len(outs) * head_in)
        self.n, self.head_in, self.outs = len(outs), head_in, outs
        widths = [head_in, *hidden, max(outs)]
        self.tw = nn.ParameterList(
            nn.Parameter(torch.randn(self.n, a, b) / math.sqrt(a))
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.tb = nn.ParameterList(nn.Parameter(torch.zeros(self.n, 1, b)) for b in widths[1:])

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        for layer in self.trunk:
            x = torch.relu(layer(x))
        h = self.to_heads(x).view(x.shape[0], self.n, self.head_in).transpose(0, 1)
        for i, (w, b) in enumerate(zip(self.tw, self.tb, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.tw) - 1:
                h = torch.relu(h)
        return {t: h[t, :, : self.outs[t]] for t in range(self.n)}


def dense_macs(trunk: list[int], head_in: int, hidden: list[int], outs: list[int]) -> int:
    macs = sum(a * b for a, b in zip(trunk[:-1], trunk[1:], strict=True))
    widths = [head_in, *hidden, max(outs)]
    towers = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return macs + trunk[-1] * len(outs) * head_in + len(outs) * towers


# --------------------------------------------------------------------------- timing
def latency_us(fn: Callable[[], Any], min_time_s: float) -> float:
    """Mean µs per call over enough calls to fill ``min_time_s`` (after one warm call)."""
    fn()
    n, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            return elapsed / n * 1e6
        n = max(2 * n, int(n * min_time_s / max(elapsed, 1e-9)) + 1)


def architectures(mode: Mode, space: str) -> list[dict[str, Any]]:
    """Random derived architectures of one space: one per rate (and seed)."""
    tasks = {f"t{i}": 1 for i in range(mode.n_tasks)}
    out = []
    for rate in mode.rates:
        for seed in range(mode.seeds):
            torch.manual_seed(seed)
            g = build_space(space, (mode.input_dim,), tasks, **mode.space_params.get(space, {}))
            supernet = Supernet(g).eval()
            decisions = sampled_decisions(supernet, torch.Generator().manual_seed(seed), rate)
            arch = derive(supernet, decisions)
            pruned = build_model(arch, seed).eval()
            full_macs = graph_costs(g)["total"]["macs"]
            out.append(
                {
                    "space": space,
                    "rate": rate,
                    "seed": seed,
                    "supernet": supernet,
                    "pruned": pruned,
                    "arch": arch,
                    "open_fraction": arch.graph["open_fraction"],
                    "kept_macs_fraction": graph_costs(arch)["total"]["macs"] / full_macs,
                    "full_macs": full_macs,
                }
            )
    return out


def run(mode: Mode) -> dict[str, Any]:
    rows = []
    for space in SPACES:
        for a in architectures(mode, space):
            shape = kept_widths(a["arch"])
            hand = HandWritten(*shape).eval()
            for batch in mode.batches:
                x = torch.randn(batch, mode.input_dim)
                for threads in mode.threads:
                    torch.set_num_threads(threads)  # before pack: the planner plans for it
                    packed = pack(a["pruned"], batch_hint=batch).eval()
                    with torch.inference_mode():  # equal outputs before timing anything
                        ref, got = a["pruned"](x), packed(x)
                        err = max(float((ref[t] - got[t]).abs().max()) for t in ref)
                    cases = {
                        "packed": lambda m=packed, x=x: m(x),
                        "handwritten": lambda m=hand, x=x: m(x),
                        "pruned_supernet": lambda m=a["pruned"], x=x: m(x),
                        "full_supernet": lambda m=a["supernet"], x=x: m(x),
                    }
                    runs: dict[str, list[float]] = {k: [] for k in cases}
                    with torch.inference_mode():
                        for r in range(mode.repeats):
                            keys = list(cases)
                            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                                runs[k].append(latency_us(cases[k], mode.min_time_s))
                    med = {k: statistics.median(v) for k, v in runs.items()}

                    def ratio(a: str, b: str, runs: dict[str, list[float]] = runs) -> float:
                        """Median of per-repeat ratios: cases of one repeat share the load."""
                        return statistics.median(
                            x / y for x, y in zip(runs[a], runs[b], strict=True)
                        )

                    rows.append(
                        {
                            "space": space,
                            "rate": a["rate"],
                            "seed": a["seed"],
                            "batch": batch,
                            "threads": threads,
                            "open_fraction": a["open_fraction"],
                            "kept_macs_fraction": a["kept_macs_fraction"],
                            "packed_macs_fraction": packed.macs() / a["full_macs"],
                            "handwritten_macs_fraction": dense_macs(*shape) / a["full_macs"],
                            "packed_steps": packed.n_calls(),
                            "packed_layout": packed.choices,
                            "max_abs_diff_vs_pruned": err,
                            "latency_us": med,
                            "packed_vs_handwritten": ratio("packed", "handwritten"),
                            "packed_vs_full_supernet": ratio("packed", "full_supernet"),
                            "packed_vs_pruned_supernet": ratio("packed", "pruned_supernet"),
                        }
                    )
    below = [r for r in rows if r["kept_macs_fraction"] < 0.7]
    return {
        "rows": rows,
        "headline": {
            "serving_vs_handwritten_max": max(r["packed_vs_handwritten"] for r in rows),
            "serving_faster_than_supernet_below_70pct": all(
                r["packed_vs_full_supernet"] < 1.0 for r in below
            ),
            "rows_below_70pct": len(below),
            "packed_vs_pruned_supernet_max": max(r["packed_vs_pruned_supernet"] for r in rows),
        },
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'space':<14}{'rate':>5}{'batch':>6}{'thr':>4}{'kept':>6}{'pack':>6}"
        f"{'packed':>9}{'hand':>9}{'pruned':>9}{'super':>9}{'p/hand':>8}{'p/sup':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = r["latency_us"]
        lines.append(
            f"{r['space']:<14}{r['rate']:>5.1f}{r['batch']:>6}{r['threads']:>4}"
            f"{r['kept_macs_fraction']:>6.2f}{r['packed_macs_fraction']:>6.2f}"
            f"{lat['packed']:>9.1f}{lat['handwritten']:>9.1f}{lat['pruned_supernet']:>9.1f}"
            f"{lat['full_supernet']:>9.1f}{r['packed_vs_handwritten']:>8.2f}"
            f"{r['packed_vs_full_supernet']:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__).parse_args(argv)
    mode = MODES[mode_of(args)]
    out = out_dir(args)  # a smoke run checks the script; it never replaces the real results
    start = time.perf_counter()
    result = run(mode)
    settings = {
        "mode": mode.name,
        "threads": list(mode.threads),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "input_dim": mode.input_dim,
        "tasks": mode.n_tasks,
        "space_params": mode.space_params or "defaults of search_spaces/*.toml",
        "rates": list(mode.rates),
        "batches": list(mode.batches),
        "repeats": mode.repeats,
        "min_time_s_per_case": mode.min_time_s,
        "wall_s": time.perf_counter() - start,
    }
    payload = {"benchmark": "serving_speed", "settings": settings, **result}
    path = out / "serving_speed.json"
    write_json_atomic(path, payload)
    print(
        f"serving_speed ({mode.name}): latency µs per forward (median of {mode.repeats}), "
        f"input {mode.input_dim}, {mode.n_tasks} tasks; kept/pack = fraction of the supernet's "
        f"MACs the architecture keeps / the packed model multiplies"
    )
    print(table(result["rows"]))
    h = result["headline"]
    print(
        f"packed / hand-written max {h['serving_vs_handwritten_max']:.2f} (target <= 1.1); "
        f"faster than the supernet on every row below 70% MACs: "
        f"{h['serving_faster_than_supernet_below_70pct']} ({h['rows_below_70pct']} rows)"
    )
    print(f"wrote {path} in {settings['wall_s']:.1f} s")
    return payload


if __name__ == "__main__":
    main()
