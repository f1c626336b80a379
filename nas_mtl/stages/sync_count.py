"""Counting the host's waits for the GPU during training (``docs/speed.md``, "Host syncs").

The training loop promises at most one host read per step; this is how that promise is
checked on a GPU, by ``tests/test_cuda.py`` and ``benchmarks/gpu_speed.py`` alike. It lives
beside the loop because it must know which of the loop's reads are allowed: validation and
the epoch's verdict (``training._judge``) read results once per epoch by design and are left
out of the count.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from nas_mtl.stages import training


@contextlib.contextmanager
def cuda_syncs() -> Iterator[list[int]]:
    """Count synchronizing CUDA calls inside the block: ``torch.cuda.set_sync_debug_mode("warn")``
    warns once per such call. The count is ``count[0]`` once the block has ended."""
    count = [0]
    judge = training._judge

    def judged(*args: Any, **kwargs: Any) -> Any:
        torch.cuda.set_sync_debug_mode("default")
        try:
            return judge(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("warn")

    torch.cuda.synchronize()
    training._judge = judged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield count
        finally:
            torch.cuda.set_sync_debug_mode("default")
            training._judge = judge
            count[0] = sum("synchroniz" in str(w.message) for w in caught)
