"""GPU training throughput, peak memory and host syncs per step, for search and retrain.

Why: the training loop is written so that a step never waits for the GPU (``docs/speed.md``):
losses are summed on the device and read once per epoch, index tensors are built once, the
training split lives on the GPU, search and retrain run in bf16 autocast with TF32 matmuls.
For every registered space that takes vector input (4 regression tasks, input 100, batch 512,
shared inputs) and one image space (Gumbel-Matrix on 4 ten-class tasks of 28x28 images, batch
128 per task, per-task inputs) this reports

    samples/s     examples per second of a search step (searched spaces) and of a retrain
                  step of the derived model, steps timed back to back with batches drawn as
                  the loop draws them;
    peak memory   torch.cuda.max_memory_allocated over the case (model, optimizer, data,
                  activations);
    syncs/step    the host's waits for the GPU per training step of the real loop
                  (``search`` / ``retrain``), from ``torch.cuda.set_sync_debug_mode("warn")``:
                  the warnings of a run with 3N steps per epoch minus those of N steps, per
                  added step (per-epoch validation excluded). The target is at most 1.

Run from the repository root: ``python benchmarks/gpu_speed.py [--smoke|--quick] [--out DIR]``;
writes ``DIR/gpu_speed.json`` (default DIR benchmarks/results; ``--smoke``: a temporary
folder) per ``benchmarks/_common.py``; under 5 minutes on one GPU.
Without CUDA it prints "no CUDA device" and writes a JSON file that says so (exit 0);
``--smoke`` runs two small spaces on the CPU in seconds, so CI can check the file's shape.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, mode_of, out_dir, parser, settings, table, write_result  # noqa: E402
from _train_steps import (  # noqa: E402
    batch_stream,
    per_step,
    plain_step,
    search_step,
    steps_per_second,
)

from nas_mtl.data import MultiTaskData, from_per_task_arrays, load_dataset  # noqa: E402
from nas_mtl.errors import NasMtlError  # noqa: E402
from nas_mtl.model.spaces import available_spaces, build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.stages.derive import derive  # noqa: E402
from nas_mtl.stages.evaluation import configure_device  # noqa: E402
from nas_mtl.stages.retrain import retrain  # noqa: E402
from nas_mtl.stages.search import search  # noqa: E402
from nas_mtl.stages.sync_count import cuda_syncs  # noqa: E402
from nas_mtl.study import RetrainConfig, SearchConfig  # noqa: E402
from nas_mtl.tasks import TaskSpec  # noqa: E402

NAME = "gpu_speed"
TASKS = 4
IMAGE_SPACE = "gumbel_matrix"


@dataclass(frozen=True)
class Mode:
    batch: int  # shared (vector) inputs
    image_batch: int  # per task
    input_dim: int
    image_side: int
    repeats: int
    steps: int  # timed steps per repeat
    warmup: int
    sync_steps: int  # N of the sync count (runs of N and 3N steps per epoch, 2 epochs)
    spaces: tuple[str, ...] | None  # None: every registered space that takes vector input
    image: bool


MODES = {
    "full": Mode(512, 128, 100, 28, 3, 20, 10, 4, None, True),
    "quick": Mode(512, 128, 100, 28, 2, 10, 5, 3, None, True),
    "smoke": Mode(32, 8, 8, 8, 1, 2, 1, 0, ("snr_trans", "mmoe"), False),
}
SYNC_EPOCHS = 2


def vector_data(rows: int, dim: int) -> MultiTaskData:
    return load_dataset("synthetic", n_train=rows, n_val=64, n_test=8, input_dim=dim, groups=[2, 2])


def image_data(rows: int, side: int) -> MultiTaskData:
    """Random 1 x side x side images of ``TASKS`` ten-class tasks, one stream per task."""
    rng = np.random.default_rng(0)
    n = rows + 80
    split = np.array([0] * rows + [1] * 64 + [2] * 16)
    return from_per_task_arrays(
        "images",
        [TaskSpec(f"t{i}", "multiclass", n_classes=10) for i in range(TASKS)],
        x=[rng.random((n, 1, side, side), dtype=np.float32) for _ in range(TASKS)],
        y=[rng.integers(0, 10, n) for _ in range(TASKS)],
        split=[split] * TASKS,
    )


def space_params(space: str, data: MultiTaskData) -> dict[str, Any]:
    if space == "grouped":  # the oracle space needs its task groups
        names = list(data.task_names)
        return {"groups": [names[: len(names) // 2], names[len(names) // 2 :]]}
    return {}


def sync_count(
    space: str,
    stage: str,
    make_data: Callable[[int], MultiTaskData],
    batch: int,
    dev: str,
    mode: Mode,
) -> float:
    """Host syncs per step of the real loop (``search`` or ``retrain``) on CUDA."""

    def run(epochs: int, steps: int) -> int:
        data = make_data(steps * batch)
        torch.manual_seed(0)
        params = space_params(space, data)
        g = build_space(space, data.input_shape, _out_dims(data), **params)
        per_task = {"steps_per_epoch": steps} if data.regime == "per_task" else {}
        with cuda_syncs() as count:
            if stage == "search":
                cfg = SearchConfig(epochs=epochs, batch_size=batch, device=dev, **per_task)
                search(Supernet(g, data.regime), data, cfg)
            else:
                arch = derive(Supernet(g, data.regime)) if _searched(g, data) else g
                cfg = RetrainConfig(
                    epochs=epochs, batch_size=batch, device=dev, patience=epochs, **per_task
                )
                retrain(arch, data, cfg)
        return count[0]

    return per_step(run, SYNC_EPOCHS, mode.sync_steps)


def _out_dims(data: MultiTaskData) -> dict[str, int]:
    return {t.name: t.out_dim for t in data.tasks}


def _searched(graph: Any, data: MultiTaskData) -> bool:
    return bool(Supernet(graph, data.regime).arch_parameters())


def measure(
    space: str,
    make_data: Callable[[int], MultiTaskData],
    batch: int,
    dev: torch.device,
    mode: Mode,
) -> list[dict[str, Any]]:
    """Rows of one space: search (when it has gate variables) and retrain."""
    data = make_data(batch * 8)
    out_dims = _out_dims(data)
    g = build_space(space, data.input_shape, out_dims, **space_params(space, data))
    searched = _searched(g, data)
    per_step_examples = batch * (len(out_dims) if data.regime == "per_task" else 1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    for stage in ("search", "retrain") if searched else ("retrain",):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        torch.manual_seed(0)
        net = Supernet(g, data.regime)
        if stage == "search":
            cfg = SearchConfig(epochs=10, batch_size=batch, affinity_every=0)
            step = search_step(net, data, cfg, dev, amp=True)
        else:
            arch = derive(net) if searched else g
            step = plain_step(Supernet(arch, data.regime), data, 1e-3, dev, amp=True)
        batches = batch_stream(data, batch, dev)
        steps_per_second(step, None, None, mode.warmup, sync, batches)
        runs = [
            steps_per_second(step, None, None, mode.steps, sync, batches)
            for _ in range(mode.repeats)
        ]
        rate = median(runs)
        row: dict[str, Any] = {
            "space": space,
            "stage": stage,
            "regime": data.regime,
            "batch": batch,
            "steps_per_s": rate,
            "samples_per_s": rate * per_step_examples,
            "peak_memory_mb": (
                torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
            ),
            "syncs_per_step": None,
            "runs": runs,
        }
        if dev.type == "cuda" and mode.sync_steps:
            row["syncs_per_step"] = sync_count(space, stage, make_data, batch, str(dev), mode)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU smoke)")
    args = ap.parse_args(argv)
    mode = mode_of(args)
    sizes = MODES[mode]
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)  # search warnings are not this benchmark's subject
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("no CUDA device: nothing to measure (--smoke runs a CPU check of the output)")
        headline = {"gpu_syncs_per_step_max": None}
        run_settings = settings(mode, device="none")
        write_result(out_dir(args), NAME, run_settings, [], headline, skipped="no CUDA device")
        return {"rows": [], "headline": headline}
    dev = torch.device("cuda" if cuda and not args.smoke else "cpu")
    configure_device(dev)
    start = time.perf_counter()
    spaces = sizes.spaces or tuple(available_spaces())
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for space in spaces:
        try:
            vectors = lambda n: vector_data(n, sizes.input_dim)  # noqa: E731
            rows += measure(space, vectors, sizes.batch, dev, sizes)
        except NasMtlError as e:  # a space without a vector-input layout
            skipped[space] = str(e)
        print(f"  {space}: done at {time.perf_counter() - start:.0f} s", flush=True)
    if sizes.image:
        images = lambda n: image_data(n, sizes.image_side)  # noqa: E731
        rows += measure(IMAGE_SPACE, images, sizes.image_batch, dev, sizes)
    syncs = [r["syncs_per_step"] for r in rows if r["syncs_per_step"] is not None]
    headline = {"gpu_syncs_per_step_max": max(syncs) if syncs else None}
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    run_settings = settings(
        mode,
        device=str(dev),
        gpu=gpu,
        amp="bf16 autocast" if dev.type == "cuda" else "off (CPU)",
        tf32=dev.type == "cuda",
        tasks=TASKS,
        input_dim=sizes.input_dim,
        image_side=sizes.image_side,
        repeats=sizes.repeats,
        steps=sizes.steps,
        sync_steps=sizes.sync_steps,
        wall_s=time.perf_counter() - start,
    )
    print(
        f"{NAME}: {dev} ({gpu or 'CPU'}), {mode}; median of {sizes.repeats} x {sizes.steps} "
        f"steps; syncs per step from set_sync_debug_mode (CUDA only)"
    )
    print(
        table(
            rows,
            [
                ("space", "space", ""),
                ("stage", "stage", ""),
                ("regime", "inputs", ""),
                ("batch", "batch", "d"),
                ("samples_per_s", "samples/s", ",.0f"),
                ("peak_memory_mb", "peak MB", ",.0f"),
                ("syncs_per_step", "syncs/step", ".2f"),
            ],
        )
    )
    for space, why in skipped.items():
        print(f"skipped {space}: {why}")
    print(f"gpu_syncs_per_step_max = {headline['gpu_syncs_per_step_max']} (target <= 1)")
    print(f"wall {run_settings['wall_s']:.0f} s")
    write_result(out_dir(args), NAME, run_settings, rows, headline, skipped=skipped)
    return {"rows": rows, "headline": headline}


if __name__ == "__main__":
    main()
