"""Image component kinds: convolutions and pools, batched as grouped convolutions.

A layer of ``n`` convolution components of one kind runs as one grouped ``conv2d`` over
``n · C`` channels, so routed image layers cost one kernel launch per kind, not ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from nas_mtl.errors import GraphError
from nas_mtl.model.components import COMPONENTS, ComponentKind, Shape, _image_out, activation


class GroupedConv(nn.Module):
    """``n`` independent conv(+BN)+activation stacks as grouped convolutions (groups = n).

    (N, n, C, H, W) reshapes to (N, n*C, H, W) without a copy, so a whole layer of same-kind
    components is one cuDNN/oneDNN call.
    """

    def __init__(
        self,
        n: int,
        c_in: int,
        c_out: int,
        kernels: Sequence[tuple[int, int]],
        stride: int,
        norm: str,
        act: str,
    ) -> None:
        super().__init__()
        self.n = n
        convs, norms = [], []
        for i, (kh, kw) in enumerate(kernels):
            s = stride if i == len(kernels) - 1 else 1
            a = c_in if i == 0 else c_out
            convs.append(
                nn.Conv2d(
                    n * a,
                    n * c_out,
                    (kh, kw),
                    stride=s,
                    padding=(kh // 2, kw // 2),
                    groups=n,
                    bias=norm == "none",
                )
            )
            norms.append(nn.BatchNorm2d(n * c_out) if norm == "batch" else nn.Identity())
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:  # (N, n, C, H, W)
        N = x.shape[0]
        y = x.reshape(N, -1, *x.shape[-2:])
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = norm(conv(y))
            if i == len(self.convs) - 1:
                y = self.act(y)
        return y.view(N, self.n, -1, *y.shape[-2:])


class _ConvKind(ComponentKind):
    image = True
    allowed_params = frozenset({"stride", "norm", "activation"})
    kernels: tuple[tuple[int, int], ...] = ()

    def __init__(self, name: str, kernels: tuple[tuple[int, int], ...], description: str) -> None:
        self.name, self.kernels, self.description = name, kernels, description

    def check(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> None:
        super().check(in_shape, width, params)
        if params.get("norm", "batch") not in ("batch", "none"):
            raise GraphError(f"conv 'norm' must be 'batch' or 'none', got {params['norm']!r}")

    def out_shape(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> Shape:
        return _image_out(in_shape, width, params.get("stride", 1))

    def build(self, n: int, in_shape: Shape, width: int, params: Mapping[str, Any]) -> nn.Module:
        return GroupedConv(
            n,
            in_shape[0],
            width,
            self.kernels,
            params.get("stride", 1),
            params.get("norm", "batch"),
            params.get("activation", "relu"),
        )

    def macs(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        _, h, w = self.out_shape(in_shape, width, params)
        total, c = 0, in_shape[0]
        for i, (kh, kw) in enumerate(self.kernels):
            hh, ww = (h, w) if i == len(self.kernels) - 1 else in_shape[1:]
            total += kh * kw * c * width * hh * ww
            c = width
        return total

    def num_params(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        total, c = 0, in_shape[0]
        for kh, kw in self.kernels:
            total += kh * kw * c * width + 2 * width  # conv + BN affine (or bias)
            c = width
        return total


class BatchedPool(nn.Module):
    def __init__(self, mode: str, stride: int) -> None:
        super().__init__()
        self.mode, self.stride = mode, stride

    def forward(self, x: Tensor) -> Tensor:
        N, n = x.shape[:2]
        y = x.reshape(N, -1, *x.shape[-2:])
        if self.mode == "max":
            y = F.max_pool2d(y, 3, self.stride, 1)
        else:
            y = F.avg_pool2d(y, 3, self.stride, 1, count_include_pad=False)
        return y.view(N, n, -1, *y.shape[-2:])


class _PoolKind(ComponentKind):
    image = True
    allowed_params = frozenset({"stride"})
    keeps_width = True

    def __init__(self, name: str, mode: str) -> None:
        self.name, self.mode = name, mode
        self.description = f"3x3 {mode} pooling (no weights); keeps channels"

    def out_shape(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> Shape:
        return _image_out(in_shape, width, params.get("stride", 1))

    def build(self, n: int, in_shape: Shape, width: int, params: Mapping[str, Any]) -> nn.Module:
        return BatchedPool(self.mode, params.get("stride", 1))

    def macs(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        return 0

    def num_params(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        return 0


for _kind in (
    _ConvKind("conv3x3", ((3, 3),), "3x3 convolution + batch norm + activation"),
    _ConvKind("conv5x5", ((5, 5),), "5x5 convolution + batch norm + activation"),
    _ConvKind(
        "conv1x7_7x1", ((1, 7), (7, 1)), "1x7 then 7x1 convolution + batch norm + activation"
    ),
    _PoolKind("maxpool3x3", "max"),
    _PoolKind("avgpool3x3", "avg"),
):
    COMPONENTS.register(_kind.name, _kind.description)(_kind)
