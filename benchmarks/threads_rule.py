"""How many CPU threads a training step wants, by its arithmetic: the data behind the rule.

Why: the thread count changes the floating-point result of a step (ATen and MKL split their
reductions by thread count), so ``[search]`` / ``[retrain]`` ``threads = 0`` picks it by a
fixed rule from the step's multiply-adds rather than by timing, which would make two runs of
one command differ on a busy machine (``docs/speed.md``, "Threads"). This script measures
what the rule stands on: for each space at its default sizes, both input regimes and a range
of batch sizes, the median seconds of a weight step (forward, backward, fused Adam) at each
thread count (interleaved rounds, ``nas_mtl.stages.threads.fastest_threads``), and the
forward pass's floating-point operations per step (``torch.utils.flop_counter``), and prints
which count the rule picks against which one was fastest.

Headline: ``rule_vs_fastest_max``, the largest ratio over all cases of the step time at the
rule's count to the step time at the fastest count (1.0: the rule always picked the fastest),
and ``rule_agrees``, the share of cases where it picked the fastest (a case whose counts are
within 10 % of each other counts as agreeing).

Run from the repository root: ``python benchmarks/threads_rule.py [--smoke|--quick] [--out
DIR]``; writes ``DIR/threads_rule.json``. Thread settings: the candidates are 1, 2, 4, ... up
to torch's count at start (``OMP_WAIT_POLICY=PASSIVE``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle workers sleep

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from _common import mode_of, out_dir, parser, settings, table, write_result  # noqa: E402
from _train_steps import batch_stream, plain_step  # noqa: E402

from nas_mtl.data import load_dataset  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.stages.allocator import keep_freed_memory  # noqa: E402
from nas_mtl.stages.threads import (  # noqa: E402
    FLOPS_PER_THREAD,
    fastest_threads,
    rule_threads,
    thread_candidates,
)
from nas_mtl.stages.training import TrainConfig, step_flops  # noqa: E402

SPACES = ("shared_bottom", "no_sharing", "mmoe", "snr_trans", "snr_aver", "gumbel_matrix")
AGREE = 1.10  # counts within 10 % of each other: either is a right pick


def cases(mode: str) -> list[tuple[str, str, int, int]]:
    """(space, inputs, tasks, batch) to measure."""
    batches = {"smoke": (16,), "quick": (32, 256, 2048), "full": (32, 128, 512, 2048, 8192)}
    spaces = SPACES[:2] if mode == "smoke" else SPACES
    return [
        (space, inputs, tasks, batch)
        for inputs, tasks in (("shared", 4), ("per_task", 6))
        for space in spaces
        for batch in batches[mode]
    ]


def measure(space: str, inputs: str, tasks: int, batch: int, candidates: list[int]) -> dict:
    n_train = max(batch, 64)
    data = load_dataset(
        "synthetic",
        n_train=n_train,
        n_val=16,
        n_test=16,
        input_dim=100,
        groups=[tasks],
        inputs=inputs,
    )
    net = Supernet(build_space(space, data.input_shape, {t.name: t.out_dim for t in data.tasks}))
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=1e-3)
    flops = step_flops(net, data, cfg)
    step = plain_step(net, data, 1e-3, torch.device("cpu"), amp=False)
    x, y = next(batch_stream(data, batch, torch.device("cpu")))
    best, medians = fastest_threads(lambda: step(x, y), candidates)
    rule = rule_threads(flops, candidates[-1])
    return {
        "space": space,
        "inputs": inputs,
        "tasks": tasks,
        "batch": batch,
        "mflops": flops / 1e6,
        **{f"ms_{n}": medians[n] * 1e3 for n in candidates},
        "fastest": best,
        "rule": rule,
        "rule_vs_fastest": medians[rule] / medians[best],
    }


def main() -> None:
    args = parser(__doc__).parse_args()
    mode = mode_of(args)
    keep_freed_memory()
    candidates = thread_candidates(torch.get_num_threads())
    rows = [measure(*c, candidates) for c in cases(mode)]
    columns = [
        ("space", "space", "s"),
        ("inputs", "inputs", "s"),
        ("batch", "batch", "d"),
        ("mflops", "MFLOP fwd", ".2f"),
        *[(f"ms_{n}", f"ms @{n}", ".3f") for n in candidates],
        ("fastest", "fastest", "d"),
        ("rule", "rule", "d"),
        ("rule_vs_fastest", "rule/fastest", ".2f"),
    ]
    print(table(rows, columns))
    agree = [r["rule_vs_fastest"] <= AGREE for r in rows]
    headline = {
        "rule_vs_fastest_max": max(r["rule_vs_fastest"] for r in rows),
        "rule_agrees": sum(agree) / len(agree),
    }
    print(f"FLOPS_PER_THREAD = {FLOPS_PER_THREAD:.3g}; {headline}")
    write_result(
        out_dir(args),
        "threads_rule",
        settings(mode, candidates=candidates, flops_per_thread=FLOPS_PER_THREAD),
        rows,
        headline,
    )


if __name__ == "__main__":
    main()
