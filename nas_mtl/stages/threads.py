"""How many intra-op threads a CPU training runs with: the fastest of a few, measured.

Why: ATen splits every op on more than about 32k elements over its intra-op threads, and
between ops the idle workers sleep (``OMP_WAIT_POLICY=PASSIVE``: spinning workers made
training 7-40x slower on busy machines). Waking them costs tens of microseconds per op, and
a training step of the small models a search trains is hundreds of ops of a few microseconds
each, so that more threads can be slower than one. On the 2-core development machine a
retrain step of a pruned Gumbel-Matrix model (batch 256) took 2.9 ms on one thread and
5.9 ms on two, and the fused Adam step over its weights 81 µs against 616 µs. Which
count wins depends on the model, the batch and the machine, so the training measures it:
a few weight steps of a copy of the model at each candidate count, interleaved, before the
first epoch of a training long enough to pay for them (``docs/speed.md``, "Threads"). The
choice does not change the arithmetic of the matmuls and element-wise ops the models use
(``tests/test_threads.py`` checks equal gradients); ``threads = N`` in ``[search]`` /
``[retrain]`` fixes it instead.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

STEPS = 3  # timed steps per candidate and round
ROUNDS = 3  # interleaved rounds; the median round counts
WORTH = 10  # measure only for trainings of at least this many times the probe's steps


def probe_steps(candidates: list[int]) -> int:
    """Steps the measurement takes: a warm-up step and the timed rounds per candidate."""
    return len(candidates) * (1 + ROUNDS * STEPS)


def thread_candidates(available: int) -> list[int]:
    """1, 2, 4, … below ``available``, and ``available`` itself."""
    out, n = [], 1
    while n < available:
        out.append(n)
        n *= 2
    return [*out, available]


def fastest_threads(
    step: Callable[[], None], candidates: list[int]
) -> tuple[int, dict[int, float]]:
    """The candidate with the least median seconds per step (ties: fewer threads), and the
    medians. Candidates are interleaved within each round so that they share the load."""
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


@contextmanager
def training_threads(
    setting: int,
    device: torch.device,
    make_step: Callable[[], Callable[[], None]],
    stem: str,
    planned_steps: int,
) -> Iterator[int]:
    """Run the body with ``setting`` intra-op threads (0: the fastest measured on
    ``make_step()``'s step), and restore the process's count afterwards.

    The measurement runs on the CPU with more than one thread to choose from, and only for a
    training of at least ``WORTH`` times its steps (a short one keeps the count it has)."""
    before = torch.get_num_threads()
    n = setting if setting > 0 else before
    candidates = thread_candidates(before)
    worth = planned_steps >= WORTH * probe_steps(candidates)
    if setting == 0 and device.type == "cpu" and before > 1 and worth:
        with torch.random.fork_rng(devices=[]):  # the probe leaves the training's RNG alone
            n, medians = fastest_threads(make_step(), candidates)
        timings = ", ".join(f"{k}: {v * 1e3:.2f} ms" for k, v in medians.items())
        log.info("%s: %d intra-op thread(s), the fastest step (%s)", stem, n, timings)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
