"""Training throughput of nas-mtl's MMoE and Shared-Bottom next to deepctr-torch and LibMTL.

Why: a user choosing a multi-task library asks what the same model costs in each. Same run,
same synthetic data (``nas_mtl``'s MMoE §3.2 generator: input 100, one regression task per
tower), same sizes (the MMoE paper's: 8 experts x 16 units, towers of 8; Shared-Bottom of 113
units, parameter-matched to MMoE in the paper; PLE/CGC with 2 shared + 2 task experts x 16),
and the same training step for every model: forward on the batch, loss = sum of the per-task
MSEs, backward, Adam (lr 1e-3) as the library's own training builds it (nas-mtl: torch's
fused kernel where torch has one; deepctr-torch and LibMTL: torch's default). Models:

    nas-mtl        mmoe, shared_bottom (the compiled ``Supernet`` of the space files)
    deepctr-torch  MMOE, SharedBottom, PLE (2 levels); one ``DenseFeat`` of width 100 (its
                   fastest input path); its regularization only applies in ``fit``, not here
    LibMTL         MMoE, HPS (hard parameter sharing = Shared-Bottom), CGC, PLE (the
                   ``architecture`` classes with MLP experts and equal weighting)

A peer that is not installed is reported as "not installed"; one that fails to build or train
keeps its row with the error. The peers are the optional ``bench`` extra:
``pip install torch==2.13.0 -e ".[bench]"``.

Reported per (tasks, batch): samples/s per model and, for MMoE and Shared-Bottom rows, nas-mtl's
samples/s over the model's, the median over round-robin repeats of the ratio measured in the
same repeat. Headline: ``mmoe_vs_deepctr``, the lowest nas-mtl MMoE / deepctr-torch MMOE
ratio over the tasks and batch sizes measured (target >= 2; null when deepctr-torch is not
installed), and the same for Shared-Bottom and for LibMTL.

Run from the repository root: ``python benchmarks/peers.py [--smoke|--quick] [--out DIR]
[--threads N]``; writes ``DIR/peers.json``.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import functools  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from nas_mtl.data import load_dataset  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.stages.training import adam  # noqa: E402

INPUT_DIM = 100
EXPERTS, EXPERT_WIDTH, TOWER = 8, 16, 8  # MMoE paper sizes
BOTTOM = 113  # Shared-Bottom, parameter-matched to MMoE 8 x 16 (MMoE paper §3)
# PLE / CGC: shared experts, experts per task, levels (deepctr-torch's PLE; CGC is one level)
SHARED_EXPERTS, TASK_EXPERTS, PLE_LEVELS = 2, 2, 2
LR = 1e-3
TARGET = 2.0


@dataclass(frozen=True)
class Plan:
    tasks: tuple[int, ...]
    batches: tuple[int, ...]
    repeats: int
    steps: dict[int, int]  # training steps per timed repeat, by batch size
    warmup: int


PLANS = {
    "full": Plan((2, 4), (128, 1024), 7, {128: 40, 1024: 12}, 10),
    "quick": Plan((2, 4), (128, 1024), 3, {128: 20, 1024: 6}, 3),
    "smoke": Plan((2,), (16,), 1, {16: 2}, 1),
}


# --------------------------------------------------------------------------- importing peers
class NotInstalled(Exception):
    pass


@functools.cache
def import_deepctr() -> tuple[types.ModuleType, str | None]:
    """deepctr_torch.models, without its import-time version check.

    deepctr-torch's ``__init__`` starts a thread that asks PyPI for a newer release (and
    needs ``requests``, which it does not declare); a benchmark makes no network calls, so a
    no-op ``check_version`` is put in place of that module first.
    """
    if importlib.util.find_spec("deepctr_torch") is None:
        raise NotInstalled("deepctr-torch")
    stub = types.ModuleType("deepctr_torch.utils")
    stub.check_version = lambda version: None  # type: ignore[attr-defined]
    sys.modules.setdefault("deepctr_torch.utils", stub)
    import deepctr_torch.inputs
    import deepctr_torch.models

    return deepctr_torch.models, None


@functools.cache
def import_libmtl() -> tuple[types.ModuleType, str | None]:
    """LibMTL.architecture, and a note when the package itself does not import.

    LibMTL 1.1.5's package ``__init__`` imports its ResNet module, which needs
    ``torchvision.models.utils`` (gone since torchvision 0.13), and a PyPI torchvision wheel
    does not load with a CPU torch build. The architecture classes need neither, so when the
    package import fails they are loaded without the package ``__init__`` and the row says so.
    """
    spec = importlib.util.find_spec("LibMTL")
    if spec is None:
        raise NotInstalled("LibMTL")
    try:
        import LibMTL.architecture

        return LibMTL.architecture, None
    except Exception as e:  # noqa: BLE001 - any import failure: fall back, and report it
        note = f"import LibMTL fails ({type(e).__name__}: {str(e)[:120]}); loaded " + (
            "LibMTL.architecture without the package __init__"
        )
    for name in [m for m in sys.modules if m == "LibMTL" or m.startswith("LibMTL.")]:
        del sys.modules[name]
    package = types.ModuleType("LibMTL")
    package.__path__ = list(spec.submodule_search_locations or [])
    sys.modules["LibMTL"] = package
    import LibMTL.architecture

    return LibMTL.architecture, note


# --------------------------------------------------------------------------- the models
Loss = Callable[[Any, Tensor], Tensor]


def dict_loss(tasks: list[str]) -> Loss:
    def loss(out: dict[str, Tensor], y: Tensor) -> Tensor:
        return sum(F.mse_loss(out[t][:, 0], y[:, i]) for i, t in enumerate(tasks))

    return loss


def column_loss(tasks: list[str]) -> Loss:
    def loss(out: Tensor, y: Tensor) -> Tensor:  # deepctr-torch: (B, T)
        return sum(F.mse_loss(out[:, i], y[:, i]) for i in range(len(tasks)))

    return loss


def mlp(*widths: int, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def nas_mtl_model(space: str, tasks: list[str]) -> tuple[nn.Module, Loss]:
    g = build_space(space, (INPUT_DIM,), {t: 1 for t in tasks})
    sp = g.graph["space_params"]
    if space == "mmoe":
        assert (sp["experts"], sp["expert_width"], list(sp["tower"])) == (
            EXPERTS,
            EXPERT_WIDTH,
            [TOWER],
        ), f"mmoe defaults changed: {sp}"
    else:
        assert (sp["width"], list(sp["tower"])) == (BOTTOM, [TOWER]), f"defaults changed: {sp}"
    return Supernet(g), dict_loss(tasks)


def deepctr_model(kind: str, tasks: list[str]) -> tuple[nn.Module, Loss]:
    models, _ = import_deepctr()
    from deepctr_torch.inputs import DenseFeat

    common = {
        "dnn_feature_columns": [DenseFeat("x", INPUT_DIM)],
        "tower_dnn_hidden_units": (TOWER,),
        "task_types": ("regression",) * len(tasks),
        "task_names": tuple(tasks),
        "device": "cpu",
    }
    if kind == "MMOE":
        model = models.MMOE(
            num_experts=EXPERTS,
            expert_dnn_hidden_units=(EXPERT_WIDTH,),
            gate_dnn_hidden_units=(),
            **common,
        )
    elif kind == "SharedBottom":
        model = models.SharedBottom(bottom_dnn_hidden_units=(BOTTOM,), **common)
    else:
        model = models.PLE(
            shared_expert_num=SHARED_EXPERTS,
            specific_expert_num=TASK_EXPERTS,
            num_levels=PLE_LEVELS,
            expert_dnn_hidden_units=(EXPERT_WIDTH,),
            gate_dnn_hidden_units=(),
            **common,
        )
    return model, column_loss(tasks)


def libmtl_model(kind: str, tasks: list[str]) -> tuple[nn.Module, Loss]:
    arch, _ = import_libmtl()
    width = BOTTOM if kind == "HPS" else EXPERT_WIDTH
    decoders = nn.ModuleDict({t: mlp(width, TOWER, 1, last_act=False) for t in tasks})
    args = (tasks, lambda: mlp(INPUT_DIM, width), decoders, False, False, torch.device("cpu"))
    if kind == "HPS":
        model = arch.HPS(*args)
    elif kind == "MMoE":
        model = arch.MMoE(*args, img_size=[INPUT_DIM], num_experts=[EXPERTS])
    else:  # CGC and PLE: shared experts, then each task's own
        experts = [SHARED_EXPERTS] + [TASK_EXPERTS] * len(tasks)
        model = getattr(arch, kind)(*args, img_size=[INPUT_DIM], num_experts=experts)
    return model, dict_loss(tasks)


# (library, model, family, builder): family pairs a peer with the nas-mtl model it is compared to
PEERS: list[tuple[str, str, str | None, Callable[[list[str]], tuple[nn.Module, Loss]]]] = [
    ("nas-mtl", "mmoe", "mmoe", lambda t: nas_mtl_model("mmoe", t)),
    ("nas-mtl", "shared_bottom", "shared_bottom", lambda t: nas_mtl_model("shared_bottom", t)),
    ("deepctr-torch", "MMOE", "mmoe", lambda t: deepctr_model("MMOE", t)),
    ("deepctr-torch", "SharedBottom", "shared_bottom", lambda t: deepctr_model("SharedBottom", t)),
    ("deepctr-torch", "PLE", None, lambda t: deepctr_model("PLE", t)),
    ("LibMTL", "MMoE", "mmoe", lambda t: libmtl_model("MMoE", t)),
    ("LibMTL", "HPS", "shared_bottom", lambda t: libmtl_model("HPS", t)),
    ("LibMTL", "CGC", None, lambda t: libmtl_model("CGC", t)),
    ("LibMTL", "PLE", None, lambda t: libmtl_model("PLE", t)),
]
# Adam as each library's own training builds it: nas-mtl's fused kernel where torch has one
# (nas_mtl.stages.training.adam); deepctr-torch's compile("adam") and LibMTL's Trainer call
# torch.optim.Adam with torch's defaults (the per-tensor loop on the CPU)
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "nas-mtl": adam,
    "deepctr-torch": torch.optim.Adam,
    "LibMTL": torch.optim.Adam,
}
NOTES = {
    ("deepctr-torch", "PLE"): "deepctr-torch 0.3.0 builds PLE's shared experts with "
    "specific_expert_num (models/multitask/ple.py, line 87): shared_expert_num > "
    "specific_expert_num raises IndexError in forward, hence 2 shared + 2 task experts here",
    ("LibMTL", "PLE"): "LibMTL's PLE supports ResNet encoders only (its documentation), so it "
    "fails with MLP experts",
}
IMPORTS = {"deepctr-torch": import_deepctr, "LibMTL": import_libmtl}


def library_status(mode: str) -> dict[str, dict[str, Any]]:
    """Per peer library: installed?, its version, and a note on how it was imported."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, dict[str, Any]] = {}
    for lib, load in IMPORTS.items():
        if mode == "smoke":  # the smoke run checks this script, not the optional peers
            out[lib] = {"status": "skipped in --smoke", "version": None, "note": None}
            continue
        try:
            v = version(lib)
        except PackageNotFoundError:
            out[lib] = {"status": "not installed", "version": None, "note": None}
            continue
        try:
            _, note = load()
            out[lib] = {"status": "ok", "version": v, "note": note}
        except Exception as e:  # noqa: BLE001 - a peer that fails to import keeps its row
            out[lib] = {"status": f"import error: {type(e).__name__}: {e}", "version": v}
    out["nas-mtl"] = {"status": "ok", "version": version("nas-mtl"), "note": None}
    return out


# --------------------------------------------------------------------------- timing
@dataclass
class Trainee:
    model: nn.Module
    loss: Loss
    opt: torch.optim.Optimizer
    params: int

    def step(self, x: Tensor, y: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(x), y).backward()
        self.opt.step()


def time_steps(step: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def measure(n_tasks: int, plan: Plan, libs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for every peer at this task count and every batch size."""
    data = load_dataset(
        "synthetic", n_train=max(plan.batches), n_val=0, n_test=0, groups=[n_tasks], seed=0
    )
    tasks = [t.name for t in data.tasks]
    x_all, y_all = data.train.x, data.train.y  # (N, 100), (N, T)
    trainees: dict[tuple[str, str], Trainee] = {}
    failed: dict[tuple[str, str], str] = {}
    for lib, name, _, make in PEERS:
        if libs[lib]["status"] != "ok":
            failed[(lib, name)] = libs[lib]["status"]
            continue
        torch.manual_seed(0)
        try:
            model, loss = make(tasks)
            model.train()
            trainees[(lib, name)] = Trainee(
                model,
                loss,
                OPTIMIZERS[lib](list(model.parameters()), lr=LR),
                sum(p.numel() for p in model.parameters()),
            )
        except Exception as e:  # noqa: BLE001 - a peer that crashes keeps its row
            failed[(lib, name)] = f"error: {type(e).__name__}: {e}"
    rows = []
    for batch in plan.batches:
        x, y = x_all[:batch], y_all[:batch]
        steps: dict[tuple[str, str], Callable[[], None]] = {}
        for key, tr in trainees.items():
            try:
                for _ in range(plan.warmup):
                    tr.step(x, y)
                steps[key] = lambda tr=tr, x=x, y=y: tr.step(x, y)
            except Exception as e:  # noqa: BLE001
                failed[key] = f"error in training step: {type(e).__name__}: {e}"
        n = plan.steps[batch]
        runs = _common.round_robin(steps, plan.repeats, lambda step, n=n: time_steps(step, n))
        for lib, name, family, _ in PEERS:
            key = (lib, name)
            row: dict[str, Any] = {
                "tasks": n_tasks,
                "batch": batch,
                "library": lib,
                "model": name,
                "version": libs[lib].get("version"),
                "status": failed.get(key, "ok"),
                "samples_s": None,
                "nas_mtl_ratio": None,
                "params": trainees[key].params if key in trainees else None,
                "note": NOTES.get(key),
            }
            if key in runs:
                row["samples_s"] = _common.median(runs[key]) * batch
                ours = ("nas-mtl", family) if family else None
                if ours is not None and ours != key and ours in runs:
                    row["nas_mtl_ratio"] = _common.median(
                        [a / b for a, b in zip(runs[ours], runs[key], strict=True)]
                    )
            rows.append(row)
    return rows


def lowest(rows: list[dict[str, Any]], lib: str, model: str) -> float | None:
    vals = [
        r["nas_mtl_ratio"]
        for r in rows
        if r["library"] == lib and r["model"] == model and r["nas_mtl_ratio"] is not None
    ]
    return min(vals) if vals else None


COLUMNS: list[_common.Column] = [
    ("tasks", "tasks", "d"),
    ("batch", "batch", "d"),
    ("library", "library", ""),
    ("model", "model", ""),
    ("samples_s", "samples/s", ",.0f"),
    ("nas_mtl_ratio", "nas-mtl ÷ this", ".2f"),
    ("params", "params", ",d"),
    ("status", "status", ""),
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _common.parser(__doc__)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = ap.parse_args(argv)
    mode = _common.mode_of(args)
    plan = PLANS[mode]
    torch.set_num_threads(args.threads)
    libs = library_status(mode)
    rows = []
    for n_tasks in plan.tasks:
        rows += measure(n_tasks, plan, libs)
    headline = {
        "mmoe_vs_deepctr": lowest(rows, "deepctr-torch", "MMOE"),
        "shared_bottom_vs_deepctr": lowest(rows, "deepctr-torch", "SharedBottom"),
        "mmoe_vs_libmtl": lowest(rows, "LibMTL", "MMoE"),
        "shared_bottom_vs_libmtl": lowest(rows, "LibMTL", "HPS"),
    }
    settings = _common.settings(
        mode,
        tasks=list(plan.tasks),
        batches=list(plan.batches),
        repeats=plan.repeats,
        steps_per_repeat=plan.steps,
        warmup_steps=plan.warmup,
        input_dim=INPUT_DIM,
        sizes={
            "experts": EXPERTS,
            "expert_width": EXPERT_WIDTH,
            "tower": [TOWER],
            "shared_bottom": BOTTOM,
            "ple": {
                "shared_experts": SHARED_EXPERTS,
                "task_experts": TASK_EXPERTS,
                "deepctr_levels": PLE_LEVELS,
            },
        },
        step="forward + sum of per-task MSE + backward + Adam (lr 1e-3)",
        libraries=libs,
    )
    print(
        f"peers ({mode}): training samples/s, input {INPUT_DIM}, {args.threads} threads, "
        f"median of {plan.repeats} round-robin repeats; load average {settings['load_average']}"
    )
    for lib, s in libs.items():
        note = f"; {s['note']}" if s.get("note") else ""
        print(f"  {lib} {s.get('version') or ''}: {s['status']}{note}")
    print(_common.table(rows, COLUMNS))
    for (lib, name), note in NOTES.items():
        print(f"note on {lib} {name}: {note}")
    for k, v in headline.items():
        print(f"{k} = {'—' if v is None else f'{v:.2f}'}")
    _common.write_result(
        _common.out_dir(args),
        "peers",
        settings,
        rows,
        headline,
        targets={"mmoe_vs_deepctr": TARGET},
    )
    return headline


if __name__ == "__main__":
    main()
