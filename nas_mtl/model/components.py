"""Component kinds: the sub-networks that sit on the nodes of a routing graph.

Every kind builds a *batched* module that runs ``n`` independent instances at once, so a layer
of sub-networks costs one batched matmul or one grouped convolution instead of a Python loop.
Batched modules map ``(N, n, *in_shape) -> (N, n, *out_shape)``; ``N`` folds batch and task
streams together. Adding a kind is one subclass and one ``COMPONENTS.register`` line; the test
suite parametrizes over the registry.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nas_mtl.errors import GraphError
from nas_mtl.registry import Registry

Shape = tuple[int, ...]

ACTIVATIONS: dict[str, nn.Module] = {
    "relu": nn.ReLU(),
    "gelu": nn.GELU(),
    "tanh": nn.Tanh(),
    "sigmoid": nn.Sigmoid(),
    "none": nn.Identity(),
}


def activation(name: str) -> nn.Module:
    """Look up an activation by name with a message that lists the choices."""
    if name not in ACTIVATIONS:
        raise GraphError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class ComponentKind(ABC):
    """How to build, size and cost one kind of sub-network.

    ``params`` are the node's ``params`` attribute; ``allowed_params`` drives validation so a
    typo in a search-space file is an error, not a silently ignored key.
    """

    name: str
    description: str
    image: bool | None = None  # True: needs (C, H, W) input; False: needs flat input; None: both
    allowed_params: frozenset[str] = frozenset()
    keeps_width = False  # output width (channels) must equal the input's

    def check(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> None:
        unknown = set(params) - self.allowed_params
        if unknown:
            raise GraphError(
                f"component kind '{self.name}' has no parameter(s) {sorted(unknown)}; "
                f"allowed: {sorted(self.allowed_params)}"
            )
        if self.image is True and len(in_shape) != 3:
            raise GraphError(f"component kind '{self.name}' needs image input, got {in_shape}")
        if self.image is False and len(in_shape) != 1:
            raise GraphError(f"component kind '{self.name}' needs flat input, got {in_shape}")
        if self.keeps_width and in_shape[0] != width:
            raise GraphError(
                f"a '{self.name}' component keeps its width: in {in_shape[0]}, out {width}"
            )

    @abstractmethod
    def out_shape(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> Shape: ...

    @abstractmethod
    def build(self, n: int, in_shape: Shape, width: int, params: Mapping[str, Any]) -> nn.Module:
        """A module running ``n`` independent instances: (N, n, *in) -> (N, n, *out)."""

    @abstractmethod
    def macs(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        """Multiply-adds per example of one instance (analytic, so reports need no tracing)."""

    @abstractmethod
    def num_params(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int: ...


COMPONENTS: Registry[ComponentKind] = Registry("component kind")


def _uniform_(t: Tensor, fan_in: int) -> Tensor:
    """nn.Linear / nn.Conv default scale: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


class BatchedLinear(nn.Module):
    """``n`` independent affine maps, weight (n, in, out).

    When the input is the same for every instance (an expanded tensor with stride 0 on the
    instance axis, as produced by a single fixed-gated source) the n maps fuse into one
    ``(N, in) @ (in, n*out)`` matmul — the dense-MLP speed limit.
    """

    def __init__(self, n: int, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.n, self.d_in, self.d_out = n, d_in, d_out
        self.weight = nn.Parameter(_uniform_(torch.empty(n, d_in, d_out), d_in))
        self.bias = nn.Parameter(_uniform_(torch.empty(n, d_out), d_in)) if bias else None

    def forward(self, x: Tensor) -> Tensor:  # (N, n, in) -> (N, n, out)
        if x.stride(1) == 0 or self.n == 1:
            w = self.weight.permute(1, 0, 2).reshape(self.d_in, self.n * self.d_out)
            if self.bias is None:
                return (x[:, 0] @ w).view(x.shape[0], self.n, self.d_out)
            y = torch.addmm(self.bias.reshape(-1), x[:, 0], w)  # the bias inside the GEMM
            return y.view(x.shape[0], self.n, self.d_out)
        if self.bias is None:
            return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1)  # (N, n, out)
        return torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight).transpose(0, 1)

    def select(self, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.weight[idx], None if self.bias is None else self.bias[idx]


class BatchedMLP(nn.Module):
    """A stack of BatchedLinear layers with an activation after each (also the last one)."""

    def __init__(self, n: int, widths: Sequence[int], act: str, last_act: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BatchedLinear(n, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.act = activation(act)
        self.last_act = last_act

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.last_act or i < len(self.layers) - 1:
                x = self.act(x)
        return x


class _MLPKind(ComponentKind):
    name = "mlp"
    description = "fully connected block: Linear+activation per width in hidden + [width]"
    image = False
    allowed_params = frozenset({"hidden", "activation"})

    def _widths(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> list[int]:
        return [in_shape[0], *params.get("hidden", []), width]

    def out_shape(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> Shape:
        return (width,)

    def build(self, n: int, in_shape: Shape, width: int, params: Mapping[str, Any]) -> nn.Module:
        return BatchedMLP(
            n, self._widths(in_shape, width, params), params.get("activation", "relu")
        )

    def macs(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        w = self._widths(in_shape, width, params)
        return sum(a * b for a, b in zip(w[:-1], w[1:], strict=True))

    def num_params(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        w = self._widths(in_shape, width, params)
        return sum(a * b + b for a, b in zip(w[:-1], w[1:], strict=True))


class BiasActivation(nn.Module):
    """Per-instance bias then nonlinearity; the weights live on the incoming edges."""

    def __init__(self, n: int, width: int, act: str) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n, width))
        self.act = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.bias)


class _ActivationKind(ComponentKind):
    name = "activation"
    description = "bias + nonlinearity only: an SNR-Trans sub-network whose weights are its edges"
    image = False
    allowed_params = frozenset({"activation"})
    keeps_width = True

    def out_shape(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> Shape:
        return (width,)

    def build(self, n: int, in_shape: Shape, width: int, params: Mapping[str, Any]) -> nn.Module:
        return BiasActivation(n, width, params.get("activation", "relu"))

    def macs(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        return 0

    def num_params(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        return width


class StridedIdentity(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1 or x.dim() == 3:
            return x
        return x[..., :: self.stride, :: self.stride]


class _IdentityKind(ComponentKind):
    name = "identity"
    description = "pass-through (a skip path); with stride s on images it subsamples"
    image = None
    allowed_params = frozenset({"stride"})
    keeps_width = True

    def out_shape(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> Shape:
        return _image_out(in_shape, width, params.get("stride", 1))

    def build(self, n: int, in_shape: Shape, width: int, params: Mapping[str, Any]) -> nn.Module:
        return StridedIdentity(params.get("stride", 1))

    def macs(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        return 0

    def num_params(self, in_shape: Shape, width: int, params: Mapping[str, Any]) -> int:
        return 0


def _image_out(in_shape: Shape, width: int, stride: int) -> Shape:
    if len(in_shape) == 1:
        return (width,)
    _, h, w = in_shape
    return (width, (h - 1) // stride + 1, (w - 1) // stride + 1)


for _kind in (_MLPKind(), _ActivationKind(), _IdentityKind()):
    COMPONENTS.register(_kind.name, _kind.description)(_kind)


class BatchedTowers(nn.Module):
    """Task towers (MLP heads), batched over heads; output widths padded to the widest head.

    Padding lets towers of tasks with different class counts share one bmm; padded columns
    are sliced off before any loss, so they receive no gradient and are not counted.
    """

    def __init__(
        self, n: int, d_in: int, hidden: Sequence[int], out_dims: Sequence[int], act: str
    ) -> None:
        super().__init__()
        self.out_dims = list(out_dims)
        widths = [d_in, *hidden]
        self.hidden = nn.ModuleList(
            BatchedLinear(n, a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.act = activation(act)
        self.out = BatchedLinear(n, widths[-1], max(self.out_dims))
        with torch.no_grad():  # re-scale the live part of the padded output layer exactly
            for i, d in enumerate(self.out_dims):
                self.out.weight[i, :, d:] = 0
                self.out.bias[i, d:] = 0

    def padding_params(self) -> int:
        """Weights of the padded (dead) output columns."""
        widest, d_in = max(self.out_dims), self.out.d_in
        return sum((widest - d) * (d_in + 1) for d in self.out_dims)

    def forward(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """x (N, k, d_in) for heads ``idx`` (all heads when None) -> (N, k, max_out).

        The towers run head-major, ``(k, N, h)``, from the first layer to the last. When
        every head reads the same input, ``x (N, 1, d_in)`` (Shared-Bottom: the bottom; or
        that input expanded with stride 0), the first layer of all towers is one ``addmm``
        with the heads' weights side by side, rather than a batched matmul over k copies.
        Passing the input unexpanded also spares the backward a zero-filled ``(N, k, d_in)``
        gradient (``docs/speed.md``).
        """
        layers = [*self.hidden, self.out]
        N = x.shape[0]
        h = x.transpose(0, 1)  # (k, N, d_in)
        for i, layer in enumerate(layers):
            w, b = (layer.weight, layer.bias) if idx is None else layer.select(idx)
            k = w.shape[0]
            if i == 0 and k > 1 and (x.shape[1] == 1 or x.stride(1) == 0):
                shared = x.squeeze(1) if x.shape[1] == 1 else x[:, 0]
                w_cat = w.permute(1, 0, 2).reshape(w.shape[1], k * w.shape[2])
                h = torch.addmm(b.reshape(-1), shared, w_cat).view(N, k, -1).transpose(0, 1)
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < len(layers) - 1:
                h = self.act(h)
        return h.transpose(0, 1)


def tower_macs(d_in: int, hidden: Sequence[int], out_dim: int) -> int:
    w = [d_in, *hidden, out_dim]
    return sum(a * b for a, b in zip(w[:-1], w[1:], strict=True))


def tower_params(d_in: int, hidden: Sequence[int], out_dim: int) -> int:
    w = [d_in, *hidden, out_dim]
    return sum(a * b + b for a, b in zip(w[:-1], w[1:], strict=True))


# the image kinds (convolutions, pools) register themselves on import
from nas_mtl.model import components_image as _image_kinds  # noqa: E402, F401
