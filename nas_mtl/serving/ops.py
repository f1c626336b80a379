"""The steps of a packed forward: dense matmuls over *slabs* of packed features.

A slab is one tensor ``(S, B, F)``: ``S`` streams (a stream per task, per mix or per head),
``B`` examples, ``F`` packed features; a one-stream slab is kept as ``(B, F)``. Every step
reads earlier slabs by index and returns a new one, with no Python loop over edges or
components and no gather of columns; the layouts and the packing math are in docs/serving.md.
Weights are buffers: a packed model is for inference (``torch.inference_mode``) and for
``torch.export``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ACT_FN: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}

Segment = tuple[int, int, str]  # columns [lo, hi) and their activation


def apply_acts(y: Tensor, segments: Sequence[Segment]) -> Tensor:
    """The activations of a slab's column segments ("none" segments are left as they are)."""
    live = [s for s in segments if s[2] != "none"]
    if not live:
        return y
    if len(segments) == 1:
        return ACT_FN[live[0][2]](y)
    parts = [
        y[..., lo:hi] if act == "none" else ACT_FN[act](y[..., lo:hi]) for lo, hi, act in segments
    ]
    return torch.cat(parts, dim=-1)


class Affine(nn.Module):
    """``Y = act(b + Σ_i X_i ⋆ W_i)``: one BLAS call per input slab.

    One-stream slabs are kept 2-D ``(B, F)``, so a dense layer is one ``addmm`` with no
    reshaping. Term modes (how input slab ``X_i`` meets the output's ``S`` streams):

    * ``mm``: ``X_i (B, F_i)`` and ``S = 1``; ``addmm`` with ``W (F_i, F)``.
    * ``bcast``: ``X_i (B, F_i)`` and ``S > 1``; one ``addmm`` with ``W (F_i, S·F)``,
      viewed as ``(S, B, F)``.
    * ``bmm``: ``X_i (S_i, B, F_i)``; output stream ``s`` reads stream ``lo + s``;
      ``baddbmm`` with ``W (S, F_i, F)``.
    """

    def __init__(
        self,
        terms: Sequence[tuple[int, str, int, Tensor]],
        bias: Tensor,
        streams: int,
        width: int,
        segments: Sequence[Segment],
    ) -> None:
        super().__init__()
        self.streams, self.width = streams, width
        self.terms = [(slab, mode, lo) for slab, mode, lo, _ in terms]
        self.segments = list(segments)
        live = [s for s in segments if s[2] != "none"]
        # one activation over every column (the usual case) is a single call
        self.act = ACT_FN[live[0][2]] if len(segments) == 1 and live else None
        self.mixed_acts = len(segments) > 1 and bool(live)
        for i, (_, _, _, w) in enumerate(terms):
            self.register_buffer(f"w{i}", w.contiguous())
        first = terms[0][1]
        shape = {"mm": (width,), "bcast": (streams * width,)}.get(first, (streams, 1, width))
        self.register_buffer("bias", bias.reshape(shape).contiguous())
        self.single = len(terms) == 1

    def _term(self, env: list[Tensor], i: int, first: bool) -> Tensor:
        slab, mode, lo = self.terms[i]
        x, w = env[slab], getattr(self, f"w{i}")
        if mode == "mm":
            return torch.addmm(self.bias, x, w) if first else x @ w
        if mode == "bcast":
            t = torch.addmm(self.bias, x, w) if first else x @ w
            return t.view(x.shape[0], self.streams, self.width).transpose(0, 1)
        if lo or x.shape[0] != self.streams:
            x = x[lo : lo + self.streams]
        return torch.baddbmm(self.bias, x, w) if first else torch.bmm(x, w)

    def forward(self, env: list[Tensor]) -> Tensor:
        y = self._term(env, 0, True)
        if not self.single:
            for i in range(1, len(self.terms)):
                y = y + self._term(env, i, False)
        if self.act is not None:
            return self.act(y)
        return apply_acts(y, self.segments) if self.mixed_acts else y

    def macs(self) -> int:
        """Multiply-adds per example, zero blocks and padding included."""
        return sum(getattr(self, f"w{i}").numel() for i in range(len(self.terms)))


class Mix(nn.Module):
    """``M[k] = Σ_slot G[k, slot] · slot``: fixed sums of equal-width slots, ``(K, B, d)``
    (``(B, d)`` for one mix).

    The slab is read as ``S · F/d`` slots of width ``d``. A one-stream slab is mixed by one
    batched matmul over its ``(B, n, d)`` view; a slab of one slot per stream by one plain
    matmul over its ``(S, B·d)`` view; anything else is first laid out slot-major (a copy).
    """

    def __init__(self, slab: int, d: int, coefs: Tensor, layout: str) -> None:
        super().__init__()
        self.slab, self.d, self.layout = slab, d, layout
        self.register_buffer("coefs", coefs.contiguous())  # (K, n_slots)

    def forward(self, env: list[Tensor]) -> Tensor:
        x = env[self.slab]
        K = self.coefs.shape[0]
        if self.layout == "flat":  # x (B, F)
            B = x.shape[0]
            m = torch.matmul(self.coefs, x.view(B, -1, self.d)).transpose(0, 1)
        else:
            S, B, Fw = x.shape
            if self.layout == "general":
                x = x.view(S, B, Fw // self.d, self.d).transpose(1, 2)
            m = (self.coefs @ x.reshape(-1, B * self.d)).view(K, B, self.d)
        return m[0] if K == 1 else m

    def macs(self) -> int:
        return self.coefs.numel() * self.d


class SoftmaxMix(nn.Module):
    """MMoE/OMoE mixing: ``M[k] = Σ_j softmax_j(x W_k^T + b_k + neg_k) · mask_kj · slot(k, j)``.

    All K destinations' gate networks are one ``addmm``; the J edge values are placed on the
    source slots by a fixed 0/1 matrix (skipped when it is the identity), and the mixing is
    one batched matmul over the one-stream source slab's ``(B, n, d)`` view.
    """

    def __init__(
        self,
        x_slab: int,
        slab: int,
        d: int,
        weight: Tensor,
        bias: Tensor,
        neg: Tensor,
        mask: Tensor,
        place: Tensor | None,
    ) -> None:
        super().__init__()
        self.x_slab, self.slab, self.d = x_slab, slab, d
        self.K, self.J = neg.shape
        self.register_buffer("weight", weight.contiguous())  # (input_dim, K·J)
        self.register_buffer("bias", bias.contiguous())  # (K·J,)
        self.register_buffer("neg", neg.contiguous())  # (K, J)
        self.register_buffer("mask", mask.contiguous())  # (K, J)
        self.has_place = place is not None
        if place is not None:
            self.register_buffer("place", place.contiguous())  # (K, J, n_slots)

    def forward(self, env: list[Tensor]) -> Tensor:
        x, u = env[self.x_slab], env[self.slab]  # one-stream slabs: (B, D), (B, F)
        B = x.shape[0]
        logits = torch.addmm(self.bias, x, self.weight).view(B, self.K, self.J) + self.neg
        g = logits.softmax(dim=-1) * self.mask  # (B, K, J)
        if self.has_place:
            g = torch.einsum("bkj,kjn->bkn", g, self.place)
        m = torch.bmm(g, u.view(B, u.shape[1] // self.d, self.d))  # (B, K, d)
        return m[:, 0] if self.K == 1 else m.transpose(0, 1)

    def macs(self) -> int:
        n = self.place.shape[-1] if self.has_place else self.J
        return self.weight.numel() + self.K * n * self.d


class Flatten(nn.Module):
    """A slab's streams side by side in one stream, ``(B, S·F)`` (a copy)."""

    def __init__(self, slab: int) -> None:
        super().__init__()
        self.slab = slab

    def forward(self, env: list[Tensor]) -> Tensor:
        x = env[self.slab]
        return x.transpose(0, 1).reshape(x.shape[1], -1)

    def macs(self) -> int:
        return 0
