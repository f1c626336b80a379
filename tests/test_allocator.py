"""Freed tensor memory stays in the process: glibc neither maps a large block on its own nor
returns a freed one to the kernel, so the next step's activations need no fresh pages.

Checked on glibc's own accounting (``mallinfo2``), not on page-fault counts: whether a
repeated allocation lands on the very pages of a freed one depends on what else sits on the
heap at that moment (glibc's aligned allocation asks for a little more than the freed block
holds when a small object was placed after it), which differs between machines and test
orders.
"""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from nas_mtl.stages.allocator import keep_freed_memory


class MallInfo2(ctypes.Structure):  # glibc >= 2.33, <malloc.h>
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of the heap (sbrk), free or not
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmap-ed blocks
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",  # free bytes kept in the heap
            "keepcost",
        )
    ]


def _mallinfo2():
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_freed_activation_stays_in_the_heap():
    info = _mallinfo2()
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    n = 48 << 20  # bytes: above glibc's largest own mmap threshold (32 MiB), below ours
    before = info()
    t = torch.empty(n // 4)
    t.fill_(1.0)  # first touch of every page
    during = info()
    del t
    after = info()
    assert during.hblkhd == before.hblkhd  # from the heap, not a fresh mapping
    assert during.arena >= n
    assert after.fordblks >= n  # freed, and kept for the next step rather than trimmed
