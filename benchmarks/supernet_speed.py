"""CPU training-step throughput of each compiled supernet against its dense limit.

Why: the supernet compiles a routing graph into block matmuls so that searching an
architecture costs about as much as training one dense network of the same arithmetic. For
SNR-Trans, SNR-Aver, Gumbel-Matrix, MMoE and Shared-Bottom (the spaces' default sizes, input
100, 4 tasks of one output) this script times, at batch 128 and 1024 and with 2 and 1 threads,

    (a) the compiled ``Supernet`` of ``search_spaces/<space>.toml``;
    (b) its *dense limit*: what a performance engineer would write by hand for the same
        arithmetic, a ReLU MLP trunk as deep as the space (``in -> H -> ... -> H``) and every
        task's tower batched over tasks (the first tower layer of all tasks is one
        ``Linear(H, T * h)``, later layers one ``baddbmm`` over tasks), with H chosen so that
        its forward pass executes as many multiply-adds per example as (a) does;
    (c) where the supernet executes more than its nominal multiply-adds (task streams after a
        per-task gate run the later layers once per task; gated identity edges mix their
        sources, which the nominal count leaves out), a dense model of the nominal count
        (``nas_mtl.model.cost.graph_costs``), so the extra work shows as ``vs nominal``;
    (d) for SNR-Trans, a naive per-edge implementation (one ``nn.Linear`` per edge, per-edge
        hard-concrete gates, Python loops), written here only.

Executed multiply-adds are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
forward pass (matmul-type ops; FLOPs / 2); nominal ones by ``nas_mtl.model.cost``.
A training step is the same for every case: forward on the batch, loss = sum of the 4
per-task MSEs + 1e-4 * L0 penalty (where the model has one), backward, Adam on the weights and,
where the model has architecture parameters, a second Adam on them. The process keeps freed
memory for reuse as nas-mtl's training does (``nas_mtl.stages.allocator``), for every case.

Reported per (space, batch, threads): samples/s of (a) and (b) and ``ratio`` = the median over
repeats of (a)/(b) measured in the same repeat (round-robin, rotating start). Headline:
``supernet_vs_dense_min``, the lowest ratio over every space, batch and thread count (target
>= 0.9), and ``snr_vs_naive_min`` (target >= 3). ``--profile`` adds torch.profiler's top ops
per space (batch 1024, first thread count).

Run from the repository root: ``python benchmarks/supernet_speed.py [--smoke|--quick]
[--out DIR] [--profile]``; writes ``DIR/supernet_speed.json``.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin, or they steal the other core between the
# many small ops of a step; this has to be set before torch (and its OpenMP runtime) loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from nas_mtl.model.cost import graph_costs  # noqa: E402
from nas_mtl.model.graph import components, heads, node_layers  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.stages.allocator import keep_freed_memory  # noqa: E402

INPUT_DIM = 100
N_TASKS = 4
TASKS = {f"t{i}": 1 for i in range(N_TASKS)}
L0_WEIGHT = 1e-4
LR = 1e-3
TARGET_VS_DENSE = 0.9
TARGET_VS_NAIVE = 3.0
SPACES = {
    "snr_trans": "SNR-Trans",
    "snr_aver": "SNR-Aver",
    "gumbel_matrix": "Gumbel-Matrix",
    "mmoe": "MMoE",
    "shared_bottom": "Shared-Bottom",
}
COUNT_BATCH = 64  # multiply-adds are linear in the batch; counted on this one


@dataclass(frozen=True)
class Plan:
    """What one mode measures; step counts are fixed so every machine times the same work."""

    batches: tuple[int, ...]
    threads: tuple[int, ...]
    repeats: int
    steps: dict[int, int]  # training steps per timed repeat, by batch size
    warmup: int
    naive: bool


PLANS = {
    "full": Plan((128, 1024), (2, 1), 7, {128: 40, 1024: 12}, 10, True),
    "quick": Plan((128, 1024), (2, 1), 3, {128: 20, 1024: 6}, 3, True),
    "smoke": Plan((16,), (1,), 1, {16: 2}, 1, False),
}

# SNR-Trans defaults (search_spaces/snr_trans.toml) for the naive per-edge version
SUBNETS, WIDTH, TOWER_HIDDEN = 8, 32, 8
HC_BETA, HC_GAMMA, HC_ZETA = 2 / 3, -0.1, 1.1
HC_INIT_MEAN, HC_INIT_STD = 1.0, 0.01


# --------------------------------------------------------------------------- (b) dense limit
class DenseLimit(nn.Module):
    """A dense ReLU trunk ``in -> H (-> H) x (depth - 1)`` and towers batched over tasks.

    The first layer of every task's tower reads the whole trunk output, so all of them are one
    ``Linear(H, T * h_1)``; each later tower layer is one ``baddbmm`` over tasks:
    (B, T*h1) -> (T, B, h1) -> ... -> (T, B, out).
    """

    def __init__(self, d_in: int, width: int, depth: int, tower: list[int], tasks: list[str]):
        super().__init__()
        self.tasks = tasks
        n = len(tasks)
        dims = [d_in] + [width] * depth
        self.trunk = nn.Sequential(
            *(
                m
                for a, b in zip(dims[:-1], dims[1:], strict=True)
                for m in (nn.Linear(a, b), nn.ReLU())
            )
        )
        self.first = nn.Linear(width, n * tower[0])
        self.widths = tower
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(tower[:-1], tower[1:], strict=True):
            bound = 1 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(n, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-bound, bound)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)  # (B, H)
        y = self.first(h).view(x.shape[0], len(self.tasks), self.widths[0]).transpose(0, 1)
        for w, b in zip(self.weights, self.biases, strict=True):  # y (T, B, h_i)
            y = torch.baddbmm(b, F.relu(y), w)
        return {t: y[i] for i, t in enumerate(self.tasks)}


def dense_width(macs: float, d_in: int, depth: int, tower: list[int], n_tasks: int) -> int:
    """The trunk width H whose dense model executes ``macs`` multiply-adds per example."""
    rest = n_tasks * sum(a * b for a, b in zip(tower[:-1], tower[1:], strict=True))
    lin = d_in + n_tasks * tower[0]  # MACs per unit of H
    if depth == 1:
        return max(1, round((macs - rest) / lin))
    quad = depth - 1  # quad * H^2 + lin * H + rest = macs
    return max(1, round((-lin + math.sqrt(lin * lin + 4 * quad * (macs - rest))) / (2 * quad)))


# --------------------------------------------------------------------------- (d) naive loop
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

    def penalties(self) -> dict[str, Tensor]:
        """Expected L0: sum over edges of sigmoid(log alpha - beta log(-gamma/zeta))."""
        shift = HC_BETA * math.log(-HC_GAMMA / HC_ZETA)
        return {"l0": torch.sigmoid(torch.stack(self.arch_parameters()) - shift).sum()}


# --------------------------------------------------------------------------- harness
@dataclass
class Case:
    """A model with its optimizers; ``step(x, ys)`` is the one training step of every case."""

    key: str
    model: nn.Module
    opts: list[torch.optim.Optimizer] = field(default_factory=list)
    has_l0: bool = False
    n_params: int = 0

    def step(self, x: Tensor, ys: dict[str, Tensor]) -> None:
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        out = self.model(x)
        loss = sum(F.mse_loss(out[t], ys[t]) for t in TASKS)
        if self.has_l0:
            loss = loss + L0_WEIGHT * self.model.penalties()["l0"]
        loss.backward()
        for opt in self.opts:
            opt.step()


def make_case(key: str, model: nn.Module) -> Case:
    """Adam on the weights; a second Adam on architecture parameters where they exist."""
    arch = list(model.arch_parameters()) if hasattr(model, "arch_parameters") else []
    ids = {id(p) for p in arch}
    weights = [p for p in model.parameters() if id(p) not in ids]
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(weights, lr=LR)]
    if arch:
        opts.append(torch.optim.Adam(arch, lr=LR))
    has_l0 = hasattr(model, "penalties") and "l0" in model.penalties()
    model.train()
    return Case(key, model, opts, has_l0, sum(p.numel() for p in weights))


def executed_macs(model: nn.Module) -> float:
    """Multiply-adds per example of one forward pass, as executed (matmul-type ops)."""
    x = torch.randn(COUNT_BATCH, INPUT_DIM)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2 / COUNT_BATCH


@dataclass
class Space:
    name: str
    cases: dict[str, Case]  # "supernet", "dense", maybe "nominal" and "naive"
    info: dict[str, Any]


def build(space: str, naive: bool) -> Space:
    torch.manual_seed(0)
    g = build_space(space, (INPUT_DIM,), TASKS)
    net = Supernet(g)
    nominal = graph_costs(g)["total"]["macs"]
    executed = executed_macs(net)
    layers = node_layers(g)
    depth = len({layers[n] for n in components(g)})
    tower = [*g.nodes[heads(g)[0]].get("params", {}).get("hidden", []), 1]
    width = dense_width(executed, INPUT_DIM, depth, tower, N_TASKS)
    dense = DenseLimit(INPUT_DIM, width, depth, tower, list(TASKS))
    cases = {"supernet": make_case("supernet", net), "dense": make_case("dense", dense)}
    info: dict[str, Any] = {
        "macs_nominal": nominal,
        "macs_executed": executed,
        "executed_over_nominal": executed / nominal,
        "dense_depth": depth,
        "dense_width": width,
        "dense_tower": tower,
        "dense_macs": executed_macs(dense),
        "supernet_params": cases["supernet"].n_params,
        "dense_params": cases["dense"].n_params,
        "arch_params": sum(p.numel() for p in net.arch_parameters()),
    }
    if abs(executed - nominal) > 0.02 * nominal:
        w = dense_width(nominal, INPUT_DIM, depth, tower, N_TASKS)
        cases["nominal"] = make_case("nominal", DenseLimit(INPUT_DIM, w, depth, tower, list(TASKS)))
        info["nominal_dense_width"] = w
    if naive and space == "snr_trans":
        cases["naive"] = make_case("naive", NaiveSNRTrans())
    return Space(space, cases, info)


def time_steps(step: Callable[[], None], n: int) -> float:
    """Steps per second over n consecutive steps."""
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def measure(spaces: list[Space], plan: Plan, batch: int, threads: int) -> list[dict[str, Any]]:
    """One row per space at this batch size and thread count (all cases round-robin)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, INPUT_DIM, generator=gen)
    ys = {t: torch.randn(batch, 1, generator=gen) for t in TASKS}
    steps = {
        (sp.name, key): (lambda c=case: c.step(x, ys))
        for sp in spaces
        for key, case in sp.cases.items()
    }
    for step in steps.values():  # warm-up: allocator, oneDNN primitive caches, Adam state
        for _ in range(plan.warmup):
            step()
    n = plan.steps[batch]
    runs = _common.round_robin(steps, plan.repeats, lambda step: time_steps(step, n))
    rows = []
    for sp in spaces:
        sup = runs[(sp.name, "supernet")]

        def vs(key: str, sp: Space = sp, sup: list[float] = sup) -> float | None:
            if key not in sp.cases:
                return None
            return _common.median([a / b for a, b in zip(sup, runs[(sp.name, key)], strict=True)])

        def rate(key: str, sp: Space = sp) -> float | None:
            return _common.median(runs[(sp.name, key)]) * batch if key in sp.cases else None

        ratios = [a / b for a, b in zip(sup, runs[(sp.name, "dense")], strict=True)]
        rows.append(
            {
                "space": sp.name,
                "label": SPACES[sp.name],
                "batch": batch,
                "threads": threads,
                "supernet_samples_s": rate("supernet"),
                "dense_samples_s": rate("dense"),
                "ratio": vs("dense"),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "nominal_dense_samples_s": rate("nominal"),
                "ratio_vs_nominal": vs("nominal"),
                "naive_samples_s": rate("naive"),
                "snr_vs_naive": vs("naive"),
                "repeats": plan.repeats,
                "steps_per_repeat": n,
                **sp.info,
            }
        )
    return rows


def profile(spaces: list[Space], batch: int, threads: int, steps: int = 10) -> dict[str, Any]:
    """torch.profiler's top ops by self CPU time, per space, for the supernet and its limit."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(threads)
    x = torch.randn(batch, INPUT_DIM)
    ys = {t: torch.randn(batch, 1) for t in TASKS}
    out: dict[str, Any] = {}
    for sp in spaces:
        out[sp.name] = {}
        for key in ("supernet", "dense"):
            case = sp.cases[key]
            for _ in range(3):
                case.step(x, ys)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    case.step(x, ys)
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events) or 1.0
            out[sp.name][key] = {
                "ms_per_step": total / 1e3 / steps,
                "top_ops": [
                    {
                        "op": e.key,
                        "calls_per_step": e.count / steps,
                        "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                        "share": e.self_cpu_time_total / total,
                    }
                    for e in events[:8]
                ],
            }
    return out


COLUMNS: list[_common.Column] = [
    ("label", "space", ""),
    ("batch", "batch", "d"),
    ("threads", "threads", "d"),
    ("supernet_samples_s", "supernet samples/s", ",.0f"),
    ("dense_samples_s", "dense limit samples/s", ",.0f"),
    ("ratio", "supernet / dense", ".2f"),
    ("ratio_vs_nominal", "vs nominal-MAC dense", ".2f"),
    ("macs_executed", "MACs/ex executed", ",.0f"),
    ("macs_nominal", "MACs/ex nominal", ",.0f"),
    ("dense_width", "dense H", "d"),
    ("snr_vs_naive", "vs naive", ".2f"),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _common.parser(__doc__)
    ap.add_argument("--profile", action="store_true", help="add torch.profiler's top ops")
    args = ap.parse_args(argv)
    mode = _common.mode_of(args)
    plan = PLANS[mode]
    # the process keeps freed memory, as nas-mtl's training does (every case benefits)
    reuse = keep_freed_memory()
    spaces = [build(name, plan.naive) for name in SPACES]
    rows = []
    for threads in plan.threads:
        for batch in plan.batches:
            rows += measure(spaces, plan, batch, threads)
    worst = min(rows, key=lambda r: r["ratio"])
    naive = [r["snr_vs_naive"] for r in rows if r["snr_vs_naive"] is not None]
    headline = {
        "supernet_vs_dense_min": worst["ratio"],
        "snr_vs_naive_min": min(naive) if naive else None,
    }
    prof = profile(spaces, max(plan.batches), plan.threads[0]) if args.profile else None
    settings = _common.settings(
        mode,
        threads=list(plan.threads),
        keep_freed_memory=reuse,
        batches=list(plan.batches),
        input_dim=INPUT_DIM,
        tasks=N_TASKS,
        repeats=plan.repeats,
        steps_per_repeat=plan.steps,
        warmup_steps=plan.warmup,
        l0_weight=L0_WEIGHT,
        lr=LR,
        step="forward + sum of per-task MSE (+1e-4 L0) + backward + Adam (weights; a second "
        "Adam on architecture parameters where present)",
    )
    print(
        f"supernet_speed ({mode}): CPU training steps, input {INPUT_DIM}, {N_TASKS} tasks; "
        f"median of {plan.repeats} round-robin repeats; OMP_WAIT_POLICY="
        f"{settings['omp_wait_policy']}, load average {settings['load_average']}"
    )
    print(_common.table(rows, COLUMNS))
    print(
        f"supernet_vs_dense_min = {worst['ratio']:.2f} ({worst['label']}, batch {worst['batch']}"
        f", {worst['threads']} threads; target >= {TARGET_VS_DENSE})"
    )
    if naive:
        print(f"snr_vs_naive_min = {min(naive):.2f} (target >= {TARGET_VS_NAIVE})")
    if prof is not None:
        for name, per in prof.items():
            for key, p in per.items():
                ops = ", ".join(
                    f"{o['op']} {o['share']:.0%} ({o['calls_per_step']:.0f}/step)"
                    for o in p["top_ops"][:5]
                )
                print(f"profile {name} {key} {p['ms_per_step']:.2f} ms/step: {ops}")
    extra: dict[str, Any] = {
        "targets": {"supernet_vs_dense_min": TARGET_VS_DENSE, "snr_vs_naive_min": TARGET_VS_NAIVE},
        "worst": {k: worst[k] for k in ("space", "batch", "threads")},
    }
    if prof is not None:
        extra["profile"] = prof
    _common.write_result(_common.out_dir(args), "supernet_speed", settings, rows, headline, **extra)
    return headline


if __name__ == "__main__":
    main()
