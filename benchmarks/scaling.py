"""How search time and memory grow with the number of tasks and of components per layer.

Why: a searched space has gate variables per (task, edge) and, after a per-task gate, runs its
later layers once per task stream, so the cost of a search step grows with both the task count
T and the components per layer C. For SNR-Trans (``subnetworks = C``) and Gumbel-Matrix
(``components = C``) at their other defaults, with T = 2 ... 32 synthetic regression tasks on
input 100 (shared inputs) and C = 2 ... 16, each cell runs the library's own search loop
(``nas_mtl.stages.training.train`` with the search's ``ArchitectureStep``; the default
``[search]`` settings, batch 256, gradient affinity off, gates live from the first epoch) in a
fresh subprocess (``--smoke``: one SNR-Trans cell) and reports:

    step ms        wall time per search step (weights + gate variables + the open-fraction
                   multiplier), the median over the timed epochs (the first epoch is warm-up)
    epoch end s    the search's end-of-epoch work: derive, cap and score the architecture
    peak RSS MB    resident-set growth of the process: VmHWM at the end minus VmRSS before the
                   supernet is built (data and imports excluded; the high-water mark is reset
                   through /proc/self/clear_refs first, where the kernel allows it). This is
                   RSS, not tracemalloc (which does not see torch's allocations): it includes
                   allocator caching and so bounds the tensors' own peak from above.

Writes a table, ``DIR/scaling.json`` and a log-log plot ``DIR/scaling.png``. Headline:
the log-log slopes of step time against T (at the largest C) and against C (at the largest T).

Run from the repository root: ``python benchmarks/scaling.py [--smoke|--quick] [--out DIR]
[--threads 2]``.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

SPACES = {
    "snr_trans": ("SNR-Trans", "subnetworks"),
    "gumbel_matrix": ("Gumbel-Matrix", "components"),
}
INPUT_DIM = 100
BATCH = 256  # [search] batch_size default


@dataclass(frozen=True)
class Plan:
    spaces: tuple[str, ...]
    tasks: tuple[int, ...]
    components: tuple[int, ...]
    steps_per_epoch: int
    epochs: int  # the first is warm-up, the rest are timed
    timeout_s: int  # per cell


PLANS = {
    "full": Plan(tuple(SPACES), (2, 4, 8, 16, 32), (2, 4, 8, 16), 8, 4, 300),
    "quick": Plan(tuple(SPACES), (2, 8, 32), (2, 8, 16), 6, 4, 240),
    "smoke": Plan(("snr_trans",), (2,), (2,), 2, 2, 60),
}


# --------------------------------------------------------------------------- one cell (child)
def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_cell(space: str, n_tasks: int, n_comp: int, plan: Plan, threads: int) -> dict[str, Any]:
    """Search ``plan.epochs`` epochs of one cell in this process; its timings and memory."""
    import torch

    from nas_mtl.data import load_dataset
    from nas_mtl.model.cost import graph_costs
    from nas_mtl.model.spaces import build_space
    from nas_mtl.model.supernet import Supernet
    from nas_mtl.stages.search import ArchitectureStep
    from nas_mtl.stages.training import train, train_config
    from nas_mtl.study import SearchConfig

    class TimedStep(ArchitectureStep):
        """The search's hooks, with each epoch's step loop and end-of-epoch work timed."""

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.loops: list[float] = []  # start of the first step -> end of the last
            self.ends: list[float] = []

        def start_epoch(self, net: Any, epoch: int, steps_per_epoch: int) -> None:
            super().start_epoch(net, epoch, steps_per_epoch)
            self._t0 = time.perf_counter()

        def after_step(self, net: Any, batch_loss: Any) -> None:
            super().after_step(net, batch_loss)
            self._t_last = time.perf_counter()

        def end_epoch(self, net: Any, ev: Any, device: Any) -> Any:
            self.loops.append(self._t_last - self._t0)  # the validation pass is not counted
            t1 = time.perf_counter()
            verdict = super().end_epoch(net, ev, device)
            self.ends.append(time.perf_counter() - t1)
            return verdict

    torch.set_num_threads(threads)
    data = load_dataset(
        "synthetic",
        n_train=BATCH * plan.steps_per_epoch,
        n_val=BATCH,
        n_test=0,
        input_dim=INPUT_DIM,
        groups=[n_tasks],
        seed=0,
    )
    label, key = SPACES[space]
    out_dims = {t.name: t.out_dim for t in data.tasks}
    cfg = SearchConfig(
        epochs=plan.epochs, batch_size=BATCH, warmup=0.0, affinity_every=0, patience=plan.epochs
    )

    def search(n: int, epochs: int) -> tuple[Any, TimedStep, Any]:
        torch.manual_seed(0)
        net = Supernet(build_space(space, data.input_shape, out_dims, **{key: n}))
        hooks = TimedStep(net, data, cfg)
        tc = train_config(cfg, lr=cfg.lr_weights, keep_checkpoints=1)
        return net, hooks, train(net, data, replace(tc, epochs=epochs), hooks=hooks)

    # torch's lazy one-time set-up (autograd engine, kernels) is not the cell's memory
    search(2, 1)
    reset = _reset_peak()
    base = _status("VmRSS")
    net, hooks, fit = search(n_comp, plan.epochs)
    peak = _status("VmHWM")
    g = net.graph
    timed = hooks.loops[1:] or hooks.loops
    step_s = _common.median(timed) / plan.steps_per_epoch
    costs = graph_costs(g)["total"]
    return {
        "space": space,
        "label": label,
        "tasks": n_tasks,
        "components": n_comp,
        "step_ms": step_s * 1e3,
        "samples_s": BATCH / step_s,
        "epoch_end_s": _common.median(hooks.ends[1:] or hooks.ends),
        "peak_rss_mb": (peak - base) / 2**20,
        "hwm_reset": reset,
        "epochs": len(fit.history),
        "steps_per_epoch": plan.steps_per_epoch,
        "params": sum(p.numel() for p in net.weight_parameters()),
        "gate_variables": sum(p.numel() for p in net.arch_parameters()),
        "macs_nominal": costs["macs"],
    }


# --------------------------------------------------------------------------- the grid (parent)
def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (the exponent of a power law)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else None


def plot(rows: list[dict[str, Any]], plan: Plan, path: Path, mode: str) -> None:
    """Step time and peak memory against tasks, one line per component count, per space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")

    fig, axes = plt.subplots(2, len(plan.spaces), figsize=(11, 8), squeeze=False, sharex=True)
    metrics = (("step_ms", "ms per search step"), ("peak_rss_mb", "peak RSS growth (MB)"))
    colors = plt.get_cmap("viridis")(
        [i / max(1, len(plan.components) - 1) * 0.85 for i in range(len(plan.components))]
    )
    for col, space in enumerate(plan.spaces):
        label, key = SPACES[space]
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row][col]
            for c, color in zip(plan.components, colors, strict=True):
                pts = sorted(
                    (r["tasks"], r[metric])
                    for r in rows
                    if r["space"] == space and r["components"] == c and r.get(metric)
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), "o-", color=color, label=f"{key} = {c}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(plan.tasks, [str(t) for t in plan.tasks])
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.set_ylabel(ylabel, fontsize=11)
            if row == 0:
                ax.set_title(label, fontsize=13)
            else:
                ax.set_xlabel("tasks", fontsize=11)
            ax.legend(fontsize=9, loc="best", framealpha=0.8)
    fig.suptitle(
        f"Search cost vs tasks and components (batch {BATCH}, input {INPUT_DIM}; {mode} run)",
        fontsize=13,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COLUMNS: list[_common.Column] = [
    ("label", "space", ""),
    ("tasks", "tasks", "d"),
    ("components", "components", "d"),
    ("step_ms", "step ms", ".1f"),
    ("samples_s", "samples/s", ",.0f"),
    ("epoch_end_s", "epoch end s", ".3f"),
    ("peak_rss_mb", "peak RSS MB", ".1f"),
    ("gate_variables", "gate vars", ",d"),
    ("params", "weights", ",d"),
    ("status", "status", ""),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _common.parser(__doc__)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument(
        "--cell", nargs=3, metavar=("SPACE", "TASKS", "COMPONENTS"), help=argparse.SUPPRESS
    )
    ap.add_argument("--mode", choices=_common.MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cell:  # child: one cell, JSON on the last line of stdout
        space, t, c = args.cell[0], int(args.cell[1]), int(args.cell[2])
        print(json.dumps(run_cell(space, t, c, PLANS[args.mode], args.threads)))
        return {}
    mode = _common.mode_of(args)
    plan = PLANS[mode]
    out = _common.out_dir(args)
    rows = []
    for space in plan.spaces:
        for c in plan.components:
            for t in plan.tasks:
                cmd = [sys.executable, __file__, "--cell", space, str(t), str(c)]
                cmd += ["--mode", mode, "--threads", str(args.threads)]
                start = time.perf_counter()
                try:
                    proc = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=plan.timeout_s, check=False
                    )
                    if proc.returncode != 0:
                        raise RuntimeError(proc.stderr.strip().splitlines()[-1][:300])
                    row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "status": "ok"}
                except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
                    row = {
                        "space": space,
                        "label": SPACES[space][0],
                        "tasks": t,
                        "components": c,
                        "status": f"error: {type(e).__name__}: {e}",
                    }
                row["cell_wall_s"] = time.perf_counter() - start
                rows.append(row)
                print(
                    f"{row['label']:<14} T={t:<3} C={c:<3} "
                    + (f"{row['step_ms']:8.1f} ms/step" if "step_ms" in row else row["status"]),
                    flush=True,
                )
    ok = [r for r in rows if r["status"] == "ok"]
    headline: dict[str, float | None] = {}
    for space in plan.spaces:
        mine = [r for r in ok if r["space"] == space]
        big_c = [r for r in mine if r["components"] == max(plan.components)]
        big_t = [r for r in mine if r["tasks"] == max(plan.tasks)]
        headline[f"{space}_step_slope_tasks"] = slope(
            [r["tasks"] for r in big_c], [r["step_ms"] for r in big_c]
        )
        headline[f"{space}_step_slope_components"] = slope(
            [r["components"] for r in big_t], [r["step_ms"] for r in big_t]
        )
        headline[f"{space}_max_peak_rss_mb"] = max((r["peak_rss_mb"] for r in mine), default=None)
    import torch

    torch.set_num_threads(args.threads)
    settings = _common.settings(
        mode,
        tasks=list(plan.tasks),
        components=list(plan.components),
        batch=BATCH,
        input_dim=INPUT_DIM,
        steps_per_epoch=plan.steps_per_epoch,
        epochs=plan.epochs,
        memory="RSS: VmHWM minus VmRSS before the supernet is built, one subprocess per cell",
        search="default [search] settings, warmup 0, affinity_every 0, shared inputs",
    )
    print(f"scaling ({mode}): {args.threads} threads, load average {settings['load_average']}")
    print(_common.table(rows, COLUMNS))
    for k, v in headline.items():
        print(f"{k} = {'—' if v is None else f'{v:.2f}'}")
    png = out / "scaling.png"
    out.mkdir(parents=True, exist_ok=True)
    if ok:
        plot(ok, plan, png, mode)
        print(f"wrote {png}")
    _common.write_result(out, "scaling", settings, rows, headline, plot=png.name if ok else None)
    return headline


if __name__ == "__main__":
    main()
