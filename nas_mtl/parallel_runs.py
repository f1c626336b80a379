"""Independent jobs in local worker processes: ``nas-mtl run --workers K``.

Why processes: a training step of the small models a search trains is hundreds of ops of a
few microseconds each, so the thread rule (``docs/speed.md``, "Threads") gives most runs one
thread and a study run one at a time leaves the other cores idle. Every space × seed of a study
is independent (its own run directory, its own seed), so K processes finish a study up to K×
sooner. Each worker gets an equal share of the CPU threads, as ``nas-mtl tune --workers`` does;
a result then equals the serial one up to the floating-point order of sums that the thread
count changes (``nas_mtl/stages/threads.py``), no more.

Workers are spawned, not forked: a forked child inherits the parent's OpenMP and autograd
thread pools in whatever state they were, which can deadlock.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any, TypeVar

Result = TypeVar("Result")


def threads_per_worker(workers: int) -> int:
    """This machine's CPU threads split evenly over ``workers`` processes (at least 1 each)."""
    return max(1, (os.cpu_count() or 1) // workers)


def _start_worker(threads: int, log_level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")


def run_in_processes(
    job: Callable[..., Result],
    arguments: Sequence[tuple[Any, ...]],
    workers: int,
    on_done: Callable[[Result], None] | None = None,
) -> list[Result]:
    """``[job(*a) for a in arguments]`` in ``workers`` spawned processes, in that order.

    ``on_done`` sees each result as it finishes (in finishing order). The first job to raise
    stops the rest (queued jobs are cancelled, running ones finish) and its error is raised
    here; finished jobs have already written their results where ``job`` puts them.
    """
    level = logging.getLogger().getEffectiveLevel()
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(arguments))),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads_per_worker(workers), level),
    )
    with pool:
        futures = [pool.submit(job, *a) for a in arguments]
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    result = future.result()  # re-raises the job's error here
                    if on_done is not None:
                        on_done(result)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        return [f.result() for f in futures]
