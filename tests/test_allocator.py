"""Freed tensor memory stays in the process: a repeated allocation faults no new pages."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from nas_mtl.stages.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_freed_activation_is_reused_without_page_faults():
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    n = 4 << 20  # 16 MB of float32: far above glibc's initial 128 KiB mmap threshold

    def faults_of_one_step() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.empty(n)
        t.fill_(1.0)  # first touch of every page
        del t
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_one_step()  # the heap grows (twice: the first free also moves the threshold)
    faults_of_one_step()
    pages = n * 4 // resource.getpagesize()
    assert faults_of_one_step() < pages // 10  # without reuse: about one fault per page
