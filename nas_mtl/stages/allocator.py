"""Keep freed tensor memory in the process, so a training step does not page-fault it again.

Why: torch's CPU allocator takes each tensor from ``malloc``. glibc serves blocks above its
mmap threshold (128 KiB at first, raised only as far as the largest block freed so far) with
a fresh ``mmap`` and returns them with ``munmap``, and trims the heap top when more than its
trim threshold lies free there. Either way the next step's activations land on pages the
kernel must fault in and zero again. With a Gumbel-Matrix supernet at batch 1024 (4 task
streams × 8 components × 32 units: 4 MB per activation) the first write of such a tensor
cost 1.5 ms instead of 0.1 ms, and a training step took 19.7 ms instead of 11.7 ms on one
thread; dense models of equal multiply-adds, whose activations are a quarter of the size,
gained under 5 %. Raising both thresholds (``mallopt``) keeps freed blocks for reuse; the
process's resident memory then stays at its peak instead of shrinking between steps
(docs/speed.md, "Memory reuse"). Only glibc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # blocks above this still come from mmap: data sets, not activations
TRIM_THRESHOLD = 512 << 20  # free memory kept at the heap top before it is returned

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; whether they are set."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows)
        log.debug("no mallopt in %s: freed memory is returned as the C library decides", name)
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done
