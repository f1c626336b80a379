"""Local worker processes: ``nas-mtl tune --workers K`` runs K processes on one storage.

Each extra worker is the same command with the hidden ``--worker I`` flag (a process of its
own: a killed one costs its running trial only, which the heartbeat hands to another). Workers
split the CPU threads between them, unless ``OMP_NUM_THREADS`` says otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nas_mtl.parallel_runs import threads_per_worker

log = logging.getLogger(__name__)


def worker_command(
    study_path: str | Path,
    trials: int,
    out: Path,
    storage: str,
    study_name: str,
    index: int,
    data_dir: str | Path | None = None,
    device: str | None = None,
) -> list[str]:
    """The command line of worker ``index`` (``python -m nas_mtl.cli tune ... --worker I``)."""
    cmd = [sys.executable, "-m", "nas_mtl.cli", "tune", str(study_path), "--trials", str(trials)]
    cmd += ["--out", str(out), "--storage", storage, "--study-name", study_name]
    cmd += ["--worker", str(index)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if device is not None:
        cmd += ["--device", device]
    return cmd


def start_workers(commands: Sequence[list[str]]) -> list[subprocess.Popen]:
    """Start the workers (their output goes to this process's stdout and stderr)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_worker(len(commands) + 1)))
    return [subprocess.Popen(cmd, env=env) for cmd in commands]


def stop_workers(procs: Sequence[subprocess.Popen]) -> None:
    """Terminate the workers this process started (their running trials are retried later)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_workers(procs: Sequence[subprocess.Popen]) -> list[int]:
    """Wait for every worker; returns their exit codes and logs the ones that failed."""
    codes = []
    for i, proc in enumerate(procs, start=1):
        code = proc.wait()
        if code != 0:
            log.warning("worker %d exited with code %d (its trials stay in the storage)", i, code)
        codes.append(code)
    return codes
