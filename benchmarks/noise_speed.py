"""What per-example hard-concrete noise costs against per-batch noise, per search step.

Why: with ``noise = "example"`` every example draws its own gate values z_{b,j,c}, so an
SNR-Trans block can no longer fold the gates into one weight matrix ``W ⊙ Z``. The block
computes Y_j = U_j W_j per source (one batched matmul) and mixes v_c = Σ_j z_{b,j,c} Y_{jc}
(``docs/speed.md``, "Per-example noise"); the target is at most 2x the time of per-batch noise.
For SNR-Trans and SNR-Aver at their space defaults (4 regression tasks, input 100, batch 512)
this times a search training step after warm-up (gates sampled, the open-fraction target's
multiplier on, Adam on weights and on gate variables; no gradient-affinity probe) with each
noise, round-robin, and reports the median steps/s and the ratio batch/example steps/s (the
headline: the worst space's median of per-repeat ratios, the two noises timed back to back).

Run from the repository root: ``python benchmarks/noise_speed.py [--smoke|--quick]
[--out DIR] [--threads 2]``; writes ``DIR/noise_speed.json`` (default DIR benchmarks/results;
``--smoke``: a temporary folder) per ``benchmarks/_common.py``.
Timings on a shared 2-core machine are noisy: read the medians and the ratio, not one run.
"""

from __future__ import annotations

import os

# Idle OpenMP workers must sleep rather than spin (set before torch loads its OpenMP runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    median,
    mode_of,
    out_dir,
    parser,
    round_robin,
    settings,
    table,
    write_result,
)
from _train_steps import search_step, steps_per_second  # noqa: E402

from nas_mtl.data import load_dataset  # noqa: E402
from nas_mtl.model.spaces import build_space  # noqa: E402
from nas_mtl.model.supernet import Supernet  # noqa: E402
from nas_mtl.study import SearchConfig  # noqa: E402

NAME = "noise_speed"
SPACES = ("snr_trans", "snr_aver")
NOISES = ("batch", "example")
TARGET = 2.0  # per-example noise at most this many times the per-batch step time
# mode -> (batch, input_dim, space overrides, repeats, steps per repeat, warm-up steps)
MODES: dict[str, tuple[int, int, dict[str, Any], int, int, int]] = {
    "full": (512, 100, {}, 7, 20, 5),
    "quick": (512, 100, {}, 3, 10, 3),
    "smoke": (64, 16, {"subnetworks": 2, "width": 8}, 1, 2, 1),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = ap.parse_args(argv)
    mode = mode_of(args)
    batch, dim, overrides, repeats, n_steps, warm = MODES[mode]
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    data = load_dataset("synthetic", n_train=batch, n_val=8, n_test=8, input_dim=dim, groups=[2, 2])
    x, y = data.train.x[:batch], data.train.y[:batch]
    cfg = SearchConfig(epochs=10, batch_size=batch, affinity_every=0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    steps: dict[str, Any] = {}
    for space in SPACES:
        for noise in NOISES:
            torch.manual_seed(0)
            g = build_space(space, (dim,), out_dims, noise=noise, **overrides)
            step = search_step(Supernet(g), data, cfg, device, amp=False)
            for _ in range(warm):  # allocator, oneDNN caches, Adam state
                step(x, y)
            steps[f"{space}/{noise}"] = step
    runs = round_robin(steps, repeats, lambda step: steps_per_second(step, x, y, n_steps))

    rows = []
    for space in SPACES:
        rate = {noise: median(runs[f"{space}/{noise}"]) for noise in NOISES}
        # per repeat, the two noises ran back to back under the same load
        paired = [
            b / e for b, e in zip(runs[f"{space}/batch"], runs[f"{space}/example"], strict=True)
        ]
        for noise in NOISES:
            rows.append(
                {
                    "space": space,
                    "noise": noise,
                    "steps_per_s": rate[noise],
                    "samples_per_s": rate[noise] * batch,
                    "runs": runs[f"{space}/{noise}"],
                    "example_vs_batch": rate["batch"] / rate["example"],
                    "example_vs_batch_paired": median(paired),
                }
            )
    worst = max(r["example_vs_batch_paired"] for r in rows)
    headline = {"example_vs_batch_noise": worst}
    run_settings = settings(
        mode,
        device=str(device),
        batch=batch,
        input_dim=dim,
        space_overrides=overrides,
        repeats=repeats,
        steps=n_steps,
    )
    print(
        f"{NAME}: search steps/s on CPU, batch {batch}, input {dim}, 4 tasks; median of "
        f"{repeats} x {n_steps} steps, round-robin ({mode}); threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(
        table(
            rows,
            [
                ("space", "space", ""),
                ("noise", "noise", ""),
                ("steps_per_s", "steps/s", ".1f"),
                ("samples_per_s", "samples/s", ",.0f"),
                ("example_vs_batch", "example/batch time", ".2f"),
                ("example_vs_batch_paired", "paired", ".2f"),
            ],
        )
    )
    ok = "met" if worst <= TARGET else "NOT met"
    print(f"example_vs_batch_noise = {worst:.2f} (worst space; target <= {TARGET}: {ok})")
    print("timings on a shared machine are noisy: compare medians and ratios only")
    write_result(out_dir(args), NAME, run_settings, rows, headline, target=TARGET)
    return {"rows": rows, "headline": headline}


if __name__ == "__main__":
    main()
