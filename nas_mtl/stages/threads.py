"""How many intra-op threads a CPU training runs with: a fixed rule on the step's arithmetic.

Why a rule and not a timing: ATen splits every op on more than about 32k elements over its
intra-op threads, and ATen's reductions and MKL's matrix products split their sums by thread
count, so the count changes the floating-point result of a step (on an AVX-512 Xeon the
gradients of one step at 1 and 2 threads differed by up to 2.8e-9, relative ~2e-7). A count
picked by timing could then differ between two runs of one command on a busy machine, and so
would their results. The count is instead a function of what does not change between runs:
the forward pass's floating-point operations per training step (counted once, by
``torch.utils.flop_counter``) and the threads torch has (``docs/speed.md``, "Threads").

Why not always all threads: between ops the idle workers sleep (``OMP_WAIT_POLICY=PASSIVE``;
spinning workers made training 7-40x slower on busy machines) and waking them costs tens of
microseconds per op. A training step of the small models a search trains is hundreds of ops
of a few microseconds each, so more threads can be slower than one: a retrain step of a
pruned Gumbel-Matrix model (batch 256) took 2.9 ms on one thread and 5.9 ms on two. The
threshold ``FLOPS_PER_THREAD`` comes from ``benchmarks/threads_rule.py``, which times every
space at its default sizes, both input regimes and batches 32-8192 at each count.

A resumed training keeps the count its checkpoint recorded, and ``threads = N`` in
``[search]`` / ``[retrain]`` fixes it.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

# forward FLOPs per training step that pay for one more thread (benchmarks/threads_rule.py)
FLOPS_PER_THREAD = 100e6
STEPS = 3  # timed steps per candidate and round (fastest_threads, for the benchmark)
ROUNDS = 3  # interleaved rounds; the median round counts


def thread_candidates(available: int) -> list[int]:
    """1, 2, 4, … below ``available``, and ``available`` itself."""
    out, n = [], 1
    while n < available:
        out.append(n)
        n *= 2
    return [*out, available]


def rule_threads(flops_per_step: float, available: int) -> int:
    """The most threads among :func:`thread_candidates` that each get at least
    ``FLOPS_PER_THREAD`` of the step's forward FLOPs (at least 1).

    >>> rule_threads(1e6, 8), rule_threads(250e6, 8), rule_threads(1e12, 8)
    (1, 2, 8)
    """
    fits = [n for n in thread_candidates(available) if flops_per_step >= n * FLOPS_PER_THREAD]
    return max(fits, default=1)


def fastest_threads(
    step: Callable[[], None], candidates: list[int]
) -> tuple[int, dict[int, float]]:
    """The candidate with the least median seconds per step (ties: fewer threads), and the
    medians. Candidates are interleaved within each round so that they share the load. Used
    by ``benchmarks/threads_rule.py`` to check the rule, never by a training."""
    before = torch.get_num_threads()
    times: dict[int, list[float]] = {n: [] for n in candidates}
    try:
        for n in candidates:  # warm-up: allocator caches, one-time kernels
            torch.set_num_threads(n)
            step()
        for _ in range(ROUNDS):
            for n in candidates:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                for _ in range(STEPS):
                    step()
                times[n].append((time.perf_counter() - t0) / STEPS)
    finally:
        torch.set_num_threads(before)
    medians = {n: statistics.median(v) for n, v in times.items()}
    return min(candidates, key=lambda n: (medians[n], n)), medians


def choose_threads(
    setting: int,
    device: torch.device,
    count_flops: Callable[[], float],
    recorded: int | None = None,
) -> int:
    """The count a training runs with: ``setting`` when > 0, else the one a resumed training
    recorded, else on the CPU :func:`rule_threads` of ``count_flops()`` (not called
    otherwise), else torch's count as it is."""
    available = torch.get_num_threads()
    if setting > 0:
        return setting
    if recorded:
        return recorded
    if device.type != "cpu" or available == 1:
        return available
    return rule_threads(count_flops(), available)


@contextmanager
def training_threads(n: int, stem: str) -> Iterator[int]:
    """Run the body with ``n`` intra-op threads and restore the process's count afterwards."""
    before = torch.get_num_threads()
    log.info("%s: %d intra-op thread(s) of %d", stem, n, before)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
