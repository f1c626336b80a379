"""A start gate: one worker at a time goes from counting the trials to creating one.

Without it, two workers that both see N - 1 finished trials would both start one and the study
would end with N + 1. An exclusive ``flock`` on a file in OUT covers every worker that shares
OUT (``--workers``, or several ``nas-mtl tune`` on one machine); the OS releases it when its
holder dies, so a killed worker never blocks the others.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: workers may overshoot N by a trial in a rare race
    fcntl = None  # type: ignore[assignment]


class StartGate:
    """``acquire`` blocks until no other process holds the gate; ``release`` is idempotent."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
