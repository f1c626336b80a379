"""CPU training-step throughput of the compiled supernet against its speed limits.

Why: the supernet compiles a routing graph into block matmuls so that searching an
architecture costs about as much as training one dense network. This benchmark checks that
claim on SNR-Trans (2 routed layers x 8 sub-networks of width 32, 4 tasks) by timing

    (a) the compiled ``Supernet`` of ``search_spaces/snr_trans.toml``,
    (b) a dense MLP with the same multiply-adds per example (the limit),
    (c) a naive per-edge implementation of the same SNR-Trans (one ``nn.Linear`` per edge,
        per-edge hard-concrete gates, Python loops), written here only,
    (d) MMoE at the paper's sizes (8 experts x 16, towers of 8),

and writes ``snr_vs_dense`` = (a)/(b) (target >= 0.8) and ``snr_vs_naive`` = (a)/(c)
(target >= 3). A training step is the same for every case: forward on a batch of 512,
loss = sum of 4 per-task MSEs + 1e-4 * L0 penalty (where the model has one), backward, Adam
on the weights and, where the model has architecture parameters, a second Adam on them.

Run from the repository root: ``python benchmarks/supernet_speed.py [--threads 2]``.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin, or they steal the other core between the
# many small ops of a step; this has to be set before torch (and its OpenMP runtime) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import networkx as nx  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from nas_mtl.model.components import COMPONENTS, tower_macs  # noqa: E402
from nas_mtl.model.graph import INPUT, in_shape, infer_shapes  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402

BATCH = 512
INPUT_DIM = 100
N_TASKS = 4
TASKS = {f"t{i}": 1 for i in range(N_TASKS)}
L0_WEIGHT = 1e-4
LR = 1e-3
WARMUP_STEPS = 10

# SNR-Trans sizes (the defaults of search_spaces/snr_trans.toml, asserted below)
SUBNETS, WIDTH, TOWER_HIDDEN = 8, 32, 8
HC_BETA, HC_GAMMA, HC_ZETA = 2 / 3, -0.1, 1.1
HC_INIT_MEAN, HC_INIT_STD = 1.0, 0.01


# --------------------------------------------------------------------------- MACs
def graph_macs(g: nx.DiGraph) -> int:
    """Multiply-adds per example of a routing graph, from its attributes alone.

    Linear edges cost d_src x d_in(dst); components cost what their kind says; heads cost
    their tower. Gate arithmetic is O(edges), not per example, and is not counted.
    """
    shapes = infer_shapes(g)
    total = 0
    for u, v, data in g.edges(data=True):
        if data["transform"] == "linear":
            total += int(math.prod(shapes[u])) * in_shape(g, v, shapes)[0]
    for n, data in g.nodes(data=True):
        if n == INPUT:
            continue
        params = data.get("params", {})
        if data["role"] == "head":
            total += tower_macs(in_shape(g, n, shapes)[0], params.get("hidden", []), data["width"])
        else:
            total += COMPONENTS.get(data["kind"]).macs(
                in_shape(g, n, shapes), data["width"], params
            )
    return total


def gate_net_macs(net: Supernet) -> int:
    """Per-example multiply-adds of input-conditioned (softmax) gate networks, e.g. MMoE's."""
    return sum(
        b.gate.net.in_features * b.gate.net.out_features
        for b in net.blocks
        if hasattr(b.gate, "net") and isinstance(b.gate.net, nn.Linear)
    )


def snr_macs_formula() -> int:
    """The issue's closed form: input->L1, L1->L2, L2->heads linear edges, plus towers."""
    return (
        SUBNETS * INPUT_DIM * WIDTH
        + SUBNETS * SUBNETS * WIDTH * WIDTH
        + N_TASKS * SUBNETS * WIDTH * WIDTH
        + N_TASKS * (WIDTH * TOWER_HIDDEN + TOWER_HIDDEN * 1)
    )


def mlp_macs(widths: list[int], tower: list[int]) -> int:
    trunk = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return trunk + N_TASKS * sum(a * b for a, b in zip(tower[:-1], tower[1:], strict=True))


# --------------------------------------------------------------------------- (b) dense MLP
class DenseMLP(nn.Module):
    """Plain trunk + one tower per task on its own slice of the trunk output.

    Widths 100 -> 256 -> 256 -> 4*32 mirror the SNR-Trans tensor sizes (8 x 32 per layer,
    32 per head), so the multiply-adds match exactly; towers are the same 32 -> 8 -> 1.
    """

    TRUNK = [INPUT_DIM, SUBNETS * WIDTH, SUBNETS * WIDTH, N_TASKS * WIDTH]
    TOWER = [WIDTH, TOWER_HIDDEN, 1]

    def __init__(self) -> None:
        super().__init__()
        w = self.TRUNK
        self.trunk = nn.Sequential(
            nn.Linear(w[0], w[1]),
            nn.ReLU(),
            nn.Linear(w[1], w[2]),
            nn.ReLU(),
            nn.Linear(w[2], w[3]),
        )
        t = self.TOWER
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(t[0], t[1]), nn.ReLU(), nn.Linear(t[1], t[2]))
            for _ in range(N_TASKS)
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x).split(WIDTH, dim=1)
        return {
            name: tower(h[i])
            for i, (name, tower) in enumerate(zip(TASKS, self.towers, strict=True))
        }


# --------------------------------------------------------------------------- (c) naive loop
class HardConcreteEdge(nn.Module):
    """One gated edge z_ij W_ij with its own log alpha, sampled per forward (batch noise)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.log_alpha = nn.Parameter(torch.randn(()) * HC_INIT_STD + HC_INIT_MEAN)

    def gate(self) -> Tensor:
        """z = clamp(sigmoid((log u - log(1-u) + log alpha)/beta)(zeta-gamma)+gamma, 0, 1)."""
        u = torch.rand(()).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / HC_BETA)
        return (s * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0, 1)

    def forward(self, u: Tensor) -> Tensor:
        return self.gate() * self.linear(u)


class NaiveSNRTrans(nn.Module):
    """SNR-Trans as one would first write it: a module per edge and loops over edges.

    Layer 1: u_i = relu(W_i x + b_i) (fixed gates); layer 2: v_i = relu(sum_j z_ij W_ij u_j
    + b_i); head t: h_t = sum_j z_tj W_tj v_j, then the tower 32 -> 8 -> 1, as in the space.
    """

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.ModuleList(nn.Linear(INPUT_DIM, WIDTH, bias=False) for _ in range(SUBNETS))
        self.first_bias = nn.ParameterList(nn.Parameter(torch.zeros(WIDTH)) for _ in range(SUBNETS))
        self.routed = nn.ModuleList(
            nn.ModuleList(HardConcreteEdge(WIDTH, WIDTH) for _ in range(SUBNETS))
            for _ in range(SUBNETS)
        )  # routed[i][j]: u_j -> v_i
        self.routed_bias = nn.ParameterList(
            nn.Parameter(torch.zeros(WIDTH)) for _ in range(SUBNETS)
        )
        self.heads = nn.ModuleList(
            nn.ModuleList(HardConcreteEdge(WIDTH, WIDTH) for _ in range(SUBNETS))
            for _ in range(N_TASKS)
        )  # heads[t][j]: v_j -> head t
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(WIDTH, TOWER_HIDDEN), nn.ReLU(), nn.Linear(TOWER_HIDDEN, 1))
            for _ in range(N_TASKS)
        )

    def _edges(self) -> list[HardConcreteEdge]:
        return [e for dst in [*self.routed, *self.heads] for e in dst]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        u = [F.relu(lin(x) + b) for lin, b in zip(self.first, self.first_bias, strict=True)]
        v = []
        for edges, b in zip(self.routed, self.routed_bias, strict=True):
            acc = edges[0](u[0])
            for j in range(1, SUBNETS):
                acc = acc + edges[j](u[j])
            v.append(F.relu(acc + b))
        out = {}
        for name, edges, tower in zip(TASKS, self.heads, self.towers, strict=True):
            acc = edges[0](v[0])
            for j in range(1, SUBNETS):
                acc = acc + edges[j](v[j])
            out[name] = tower(acc)
        return out

    def arch_parameters(self) -> list[nn.Parameter]:
        return [e.log_alpha for e in self._edges()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def penalties(self) -> dict[str, Tensor]:
        """Expected L0: sum over edges of sigmoid(log alpha - beta log(-gamma/zeta))."""
        shift = HC_BETA * math.log(-HC_GAMMA / HC_ZETA)
        return {"l0": torch.sigmoid(torch.stack(self.arch_parameters()) - shift).sum()}


# --------------------------------------------------------------------------- harness
@dataclass
class Case:
    """A model with its optimizers and one compiled-in training step."""

    key: str
    label: str
    model: nn.Module
    macs: int
    opts: list[torch.optim.Optimizer] = field(default_factory=list)
    has_l0: bool = False
    n_params: int = 0
    n_arch: int = 0


def make_case(key: str, label: str, model: nn.Module, macs: int) -> Case:
    """Adam on the weights; a second Adam on architecture parameters where they exist."""
    arch = list(model.arch_parameters()) if hasattr(model, "arch_parameters") else []
    ids = {id(p) for p in arch}
    weights = [p for p in model.parameters() if id(p) not in ids]
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(weights, lr=LR)]
    if arch:
        opts.append(torch.optim.Adam(arch, lr=LR))
    has_l0 = hasattr(model, "penalties") and "l0" in model.penalties()
    model.train()
    return Case(
        key,
        label,
        model,
        macs,
        opts,
        has_l0,
        sum(p.numel() for p in weights),
        sum(p.numel() for p in arch),
    )


def train_step(case: Case, x: Tensor, ys: dict[str, Tensor]) -> None:
    """One training step, identical for every case."""
    for opt in case.opts:
        opt.zero_grad(set_to_none=True)
    out = case.model(x)
    loss = sum(F.mse_loss(out[t], ys[t]) for t in TASKS)
    if case.has_l0:
        loss = loss + L0_WEIGHT * case.model.penalties()["l0"]
    loss.backward()
    for opt in case.opts:
        opt.step()


def time_steps(step: Callable[[], None], n: int) -> float:
    """Steps per second over n consecutive steps."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def build_cases() -> tuple[list[Case], dict[str, Any]]:
    g = build_space("snr_trans", (INPUT_DIM,), TASKS)
    sp = g.graph["space_params"]
    assert (sp["layers"], sp["subnetworks"], sp["width"], list(sp["tower"])) == (
        2,
        SUBNETS,
        WIDTH,
        [TOWER_HIDDEN],
    ), f"snr_trans defaults changed: {sp}"
    snr_macs = graph_macs(g)
    assert snr_macs == snr_macs_formula(), (snr_macs, snr_macs_formula())
    dense_macs = mlp_macs(DenseMLP.TRUNK, DenseMLP.TOWER)
    assert abs(dense_macs - snr_macs) <= 0.02 * snr_macs, (dense_macs, snr_macs)
    g_mmoe = build_space("mmoe", (INPUT_DIM,), TASKS)
    sp_m = g_mmoe.graph["space_params"]
    mmoe = Supernet(g_mmoe)
    naive = NaiveSNRTrans()
    cases = [
        make_case("snr_trans", "(a) SNR-Trans supernet", Supernet(g), snr_macs),
        make_case("dense", "(b) dense MLP, same MACs", DenseMLP(), dense_macs),
        make_case("naive", "(c) SNR-Trans naive per-edge loop", naive, snr_macs),
        make_case(
            "mmoe", "(d) MMoE 8x16, towers 8", mmoe, graph_macs(g_mmoe) + gate_net_macs(mmoe)
        ),
    ]
    info = {
        "snr_trans_params": dict(sp),
        "mmoe_params": {k: v for k, v in sp_m.items()},
        "dense_trunk_widths": DenseMLP.TRUNK,
        "dense_tower_widths": DenseMLP.TOWER,
        "snr_macs_per_example": snr_macs,
        "dense_macs_per_example": dense_macs,
        "dense_vs_snr_macs_rel_diff": (dense_macs - snr_macs) / snr_macs,
        "naive_edges": len(naive._edges()) + SUBNETS,
    }
    return cases, info


def write_json_atomic(path: Path, payload: Any) -> None:
    """Temp file in the target directory + os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per case (default 7)")
    ap.add_argument("--steps", type=int, default=30, help="training steps per repeat (default 30)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/supernet_speed.json"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cases, info = build_cases()
    x = torch.randn(BATCH, INPUT_DIM)
    ys = {t: torch.randn(BATCH, 1) for t in TASKS}
    steps = {c.key: (lambda c=c: train_step(c, x, ys)) for c in cases}

    for c in cases:  # warm-up: allocator, oneDNN primitive caches, Adam state
        for _ in range(WARMUP_STEPS):
            steps[c.key]()
    runs: dict[str, list[float]] = {c.key: [] for c in cases}
    for r in range(args.repeats):
        # round-robin within a repeat, rotating the start so no case always runs first
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        for c in order:
            runs[c.key].append(time_steps(steps[c.key], args.steps))

    med = {k: statistics.median(v) for k, v in runs.items()}
    per_rep = {
        "snr_vs_dense": [a / b for a, b in zip(runs["snr_trans"], runs["dense"], strict=True)],
        "snr_vs_naive": [a / b for a, b in zip(runs["snr_trans"], runs["naive"], strict=True)],
    }
    ratios = {
        "snr_vs_dense": med["snr_trans"] / med["dense"],
        "snr_vs_naive": med["snr_trans"] / med["naive"],
    }
    targets = {"snr_vs_dense": 0.8, "snr_vs_naive": 3.0}
    threads = {
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }

    print(
        f"supernet_speed: CPU training steps/s, batch {BATCH}, input {INPUT_DIM}, "
        f"{N_TASKS} tasks; median of {args.repeats} x {args.steps} steps (round-robin)"
    )
    print("threads: " + ", ".join(f"{k}={v}" for k, v in threads.items()))
    print(
        f"MACs/example: SNR-Trans {info['snr_macs_per_example']:,} (graph), dense MLP "
        f"{info['dense_macs_per_example']:,} (trunk {DenseMLP.TRUNK}, towers "
        f"{N_TASKS}x{DenseMLP.TOWER})"
    )
    print(f"{'case':<36}{'steps/s':>9}{'min':>8}{'max':>8}{'MACs/ex':>10}{'weights':>9}{'arch':>6}")
    for c in cases:
        v = runs[c.key]
        print(
            f"{c.label:<36}{med[c.key]:>9.1f}{min(v):>8.1f}{max(v):>8.1f}{c.macs:>10,}"
            f"{c.n_params:>9,}{c.n_arch:>6}"
        )
    for k, v in ratios.items():
        ok = "met" if v >= targets[k] else "NOT met"
        print(
            f"{k:<13} = {v:5.2f} (per-repeat median {statistics.median(per_rep[k]):5.2f}, "
            f"target >= {targets[k]}: {ok})"
        )

    payload = {
        "benchmark": "supernet_speed",
        "description": "CPU training steps/s: forward + sum of 4 MSE (+1e-4 L0) + backward + "
        "Adam (weights; second Adam on arch params where present)",
        "config": {
            "batch": BATCH,
            "input_dim": INPUT_DIM,
            "tasks": N_TASKS,
            "repeats": args.repeats,
            "steps": args.steps,
            "warmup_steps": WARMUP_STEPS,
            "seed": args.seed,
            "l0_weight": L0_WEIGHT,
            "lr": LR,
        },
        "threads": threads,
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "models": info,
        "steps_per_s": {c.key: med[c.key] for c in cases},
        "steps_per_s_runs": runs,
        "macs_per_example": {c.key: c.macs for c in cases},
        "snr_vs_dense": ratios["snr_vs_dense"],
        "snr_vs_naive": ratios["snr_vs_naive"],
        "per_repeat_ratio_median": {k: statistics.median(v) for k, v in per_rep.items()},
        "per_repeat_ratios": per_rep,
        "targets": targets,
        "targets_met": {k: ratios[k] >= targets[k] for k in targets},
    }
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
