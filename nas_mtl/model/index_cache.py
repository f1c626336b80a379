"""Small index tensors that a forward pass needs, built once per device instead of per call.

``torch.tensor([...], device="cuda")`` copies host memory to the GPU and waits for the copy:
built in every forward pass, such an index (which task streams, which heads) would make every
training step wait for the device (``docs/speed.md``, "Host syncs"). The values come from the
graph and the requested tasks, a handful of combinations per model, so they are cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class IndexCache:
    """``cache(values, device)``: a long tensor of ``values`` on ``device``, made once.

    >>> cache = IndexCache()
    >>> a = cache([2, 0], torch.device("cpu"))
    >>> a.tolist(), a is cache((2, 0), torch.device("cpu"))
    ([2, 0], True)
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple[tuple[int, ...], torch.device], Tensor] = {}

    def __call__(self, values: Sequence[int], device: torch.device) -> Tensor:
        key = (tuple(values), device)
        if torch.compiler.is_compiling():  # torch.compile / torch.export trace: a constant of
            # the graph, never cached (a traced tensor is fake and must not outlive the trace)
            return torch.tensor(key[0], dtype=torch.long, device=device)
        found = self._tensors.get(key)
        if found is None:
            found = self._tensors[key] = torch.tensor(key[0], dtype=torch.long, device=device)
        return found
