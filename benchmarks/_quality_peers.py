"""The peer libraries of ``benchmarks/quality.py``: trained as nas-mtl retrains, cached.

deepctr-torch and LibMTL models at the sizes of the study's own mmoe / shared_bottom spaces,
behind nas-mtl's model interface, trained by nas-mtl's training loop on the same split and
scored by its metrics; one JSON file per (data variant, peer, seed). Not a benchmark.
"""

from __future__ import annotations

import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import peers as peer_lib  # noqa: E402
from _quality_tables import Table  # noqa: E402

PEER_CODE = re.compile(r"deepctr_torch|LibMTL")  # where a peer's error is reported from
# (library, model): the peers of the tabular tables (benchmarks/peers.py imports them)
PEERS = (
    ("deepctr-torch", "MMOE"),
    ("deepctr-torch", "SharedBottom"),
    ("deepctr-torch", "PLE"),
    ("LibMTL", "MMoE"),
    ("LibMTL", "CGC"),
    ("LibMTL", "PLE"),
)
# PLE / CGC: shared experts and experts per task, levels (as benchmarks/peers.py)
PLE_SHARED, PLE_TASK, PLE_LEVELS = (
    peer_lib.SHARED_EXPERTS,
    peer_lib.TASK_EXPERTS,
    peer_lib.PLE_LEVELS,
)


from nas_mtl.data import MultiTaskData  # noqa: E402
from nas_mtl.results import judge  # noqa: E402
from nas_mtl.rundir import variant_label  # noqa: E402
from nas_mtl.stages.evaluation import evaluate, resolve_device  # noqa: E402
from nas_mtl.stages.training import train, train_config  # noqa: E402
from nas_mtl.storage import read_json, strict_json  # noqa: E402
from nas_mtl.study import Study  # noqa: E402
from nas_mtl.study_data import load_data, space_graph  # noqa: E402


def brief(status: str, width: int = 60) -> str:
    """A status short enough for a table cell (a row's ``failures`` keep the full text)."""
    status = status.replace("worse than a constant prediction", "worse than a constant")
    status = status.split(": best validation objective")[0]
    return status if len(status) <= width else status[: width - 1] + "…"


class PeerNet(nn.Module):
    """A peer library's model behind nas-mtl's model interface, for nas-mtl's training loop.

    Shared inputs: ``net(x)`` with ``x (B, D)`` gives ``{task: (B, 1)}``. Per-task inputs:
    ``net(x, tasks)`` with ``x (k, B, D)``, one batch per task; the k batches go through the
    peer as one batch of ``k * B`` rows (same gradients as k passes: no batch statistics), and
    task t keeps its own rows of its own output.
    """

    def __init__(self, model: nn.Module, tasks: Sequence[str], columns: bool) -> None:
        super().__init__()
        self.model = model
        self.columns = columns  # deepctr-torch: one (B, T) tensor; LibMTL: {task: (B, 1)}
        self.index = {t: i for i, t in enumerate(tasks)}

    def _outputs(self, x: Tensor) -> Callable[[str], Tensor]:
        out = self.model(x)
        if self.columns:
            return lambda t: out[:, self.index[t]].unsqueeze(1)
        return lambda t: out[t]

    def forward(self, x: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        if tasks is None:  # shared inputs (B, D)
            get = self._outputs(x)
            return {t: get(t) for t in self.index}
        k, b = x.shape[0], x.shape[1]  # (k, B, D): one batch per task
        get = self._outputs(x.reshape(k * b, *x.shape[2:]))
        return {t: get(t)[i * b : (i + 1) * b] for i, t in enumerate(tasks)}


@dataclass(frozen=True)
class PeerSizes:
    """The peers' sizes: those of the study's own mmoe and shared_bottom spaces."""

    experts: int
    expert_width: int
    expert_layers: int
    bottom: int
    bottom_layers: int
    tower: tuple[int, ...]


def peer_sizes(st: Study, data: MultiTaskData) -> PeerSizes:
    mm = space_graph(st, "mmoe", data).graph["space_params"]
    sb = space_graph(st, "shared_bottom", data).graph["space_params"]
    return PeerSizes(
        experts=int(mm["experts"]),
        expert_width=int(mm["expert_width"]),
        expert_layers=int(mm["layers"]),
        bottom=int(sb["width"]),
        bottom_layers=int(sb["layers"]),
        tower=tuple(int(w) for w in mm["tower"]),
    )


def deepctr_model(
    kind: str, sz: PeerSizes, input_dim: int, tasks: Sequence[str], seed: int, device: str
) -> nn.Module:
    """deepctr-torch's model; every task declared "regression" so that it outputs raw scores
    (its "binary" applies a sigmoid; nas-mtl's losses and AUC take logits)."""
    models, _ = peer_lib.import_deepctr()
    from deepctr_torch.inputs import DenseFeat

    experts = (sz.expert_width,) * sz.expert_layers
    common = {
        "dnn_feature_columns": [DenseFeat("x", input_dim)],
        "tower_dnn_hidden_units": sz.tower,
        "task_types": ("regression",) * len(tasks),
        "task_names": tuple(tasks),
        "seed": seed,
        "device": device,
    }
    if kind == "MMOE":
        return models.MMOE(
            num_experts=sz.experts,
            expert_dnn_hidden_units=experts,
            gate_dnn_hidden_units=(),
            **common,
        )
    if kind == "SharedBottom":
        return models.SharedBottom(
            bottom_dnn_hidden_units=(sz.bottom,) * sz.bottom_layers, **common
        )
    return models.PLE(
        shared_expert_num=PLE_SHARED,
        specific_expert_num=PLE_TASK,
        num_levels=PLE_LEVELS,
        expert_dnn_hidden_units=experts,
        gate_dnn_hidden_units=(),
        **common,
    )


def libmtl_model(
    kind: str, sz: PeerSizes, input_dim: int, tasks: Sequence[str], seed: int, device: str
) -> nn.Module:
    """LibMTL's architecture class with MLP experts (equal weighting: a plain summed loss)."""
    arch, _ = peer_lib.import_libmtl()
    torch.manual_seed(seed)
    width = sz.expert_width
    decoders = nn.ModuleDict({t: peer_lib.mlp(width, *sz.tower, 1, last_act=False) for t in tasks})
    args = (
        list(tasks),
        lambda: peer_lib.mlp(input_dim, *(width,) * sz.expert_layers),
        decoders,
        False,
        False,
        torch.device(device),
    )
    if kind == "MMoE":
        return arch.MMoE(*args, img_size=[input_dim], num_experts=[sz.experts])
    experts = [PLE_SHARED] + [PLE_TASK] * len(tasks)
    return getattr(arch, kind)(*args, img_size=[input_dim], num_experts=experts)


BUILDERS = {"deepctr-torch": deepctr_model, "LibMTL": libmtl_model}


def run_peer(
    lib: str, kind: str, st: Study, data: MultiTaskData, seed: int, sz: PeerSizes
) -> dict[str, Any]:
    """Train one peer as nas-mtl retrains a derived model; its scores (a result-like dict)."""
    t0 = time.perf_counter()
    dev = resolve_device(st.retrain.device)
    torch.manual_seed(seed)
    (input_dim,) = data.input_shape
    model = BUILDERS[lib](kind, sz, input_dim, data.task_names, seed, str(dev))
    net = PeerNet(model, data.task_names, columns=lib == "deepctr-torch")
    cfg = st.retrain
    fit = train(
        net,  # type: ignore[arg-type]  # nas-mtl's model interface, not a Supernet
        data,
        train_config(cfg, lr=cfg.lr, amp=cfg.amp, keep_checkpoints=1),
        seed=seed,
        stem=f"{lib} {kind}",
    )
    val = evaluate(fit.model, data, data.val, dev, cfg.amp)
    test = evaluate(fit.model, data, data.test, dev, cfg.amp)
    tasks = {
        t.name: {
            "metric": t.primary_metric,
            "higher_is_better": t.higher_is_better,
            "val": val.metrics[t.name][t.primary_metric],
            "test": test.metrics[t.name][t.primary_metric],
            "test_metrics": test.metrics[t.name],
        }
        for t in data.tasks
    }
    failure = judge(data, tasks, fit.best_val_loss)
    return {
        "status": "failed" if failure else "ok",
        "failure": failure,
        "tasks": tasks,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": len(fit.history),
        "best_epoch": fit.best_epoch,
        "wall_s": time.perf_counter() - t0,
    }


def peer_file(folder: Path, variant: Mapping[str, Any], lib: str, kind: str, seed: int) -> Path:
    return folder / "peers" / variant_label(variant) / f"{lib}_{kind}_seed_{seed}.json"


def run_peers(
    table: Table,
    st: Study,
    folder: Path,
    seeds: Sequence[int],
    libs: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Every peer on every data variant and seed of the study; cached per (variant, peer, seed)."""
    done: list[dict[str, Any]] = []
    for variant in st.variants():
        vstudy = st.for_variant(variant)
        for seed in seeds:
            data: MultiTaskData | None = None
            for lib, kind in PEERS:
                base = {"library": lib, "model": kind, "variant": dict(variant), "seed": seed}
                if libs[lib]["status"] != "ok":
                    done.append({**base, "status": libs[lib]["status"], "cached": False})
                    continue
                path = peer_file(folder, variant, lib, kind, seed)
                if path.exists():
                    cached = read_json(path, "peer result")
                    if cached.get("study_sha256") == st.sha256:
                        done.append({**cached, "cached": True})
                        continue
                if data is None:
                    data = load_data(st, variant, seed)
                try:
                    result = run_peer(lib, kind, vstudy, data, seed, peer_sizes(vstudy, data))
                except Exception as e:  # noqa: BLE001 - a peer that fails keeps its row
                    frames = traceback.extract_tb(e.__traceback__)
                    mine = [f for f in frames if PEER_CODE.search(f.filename)] or frames
                    where = f" ({Path(mine[-1].filename).name}, line {mine[-1].lineno})"
                    result = {"status": f"error: {type(e).__name__}: {e}"[:300] + where}
                record = {
                    **base,
                    **result,
                    "version": libs[lib].get("version"),
                    "study_sha256": st.sha256,
                }
                _common.write_json_atomic(path, strict_json(record))
                print(
                    f"  {table.key} {variant_label(variant)} seed {seed}: {lib} {kind} "
                    f"{brief(record['status'])} ({record.get('wall_s', 0.0):.1f} s)",
                    flush=True,
                )
                done.append({**record, "cached": False})
    return done
