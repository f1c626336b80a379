"""What a trace is made of: instances, the terms of their input sums, and their layers.

:func:`nas_mtl.serving.trace.trace` reads these off a trained supernet and
:class:`nas_mtl.serving.planner.Planner` folds them into dense steps. They are the plain data
that one hands to the other, kept apart from both so that the tracer (which walks the
supernet) and the planner (which lays out slabs) each keep one job. An instance is one
(node, stream) value of the model's eval forward: the sum of its sources, then the
component's layers (docs/serving.md, "What the packer reads").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class Layer:
    """One step of a component after its inputs are summed: ``y = act(x @ weight + bias)``.

    ``weight`` None is the identity (an SNR-Trans sub-network: bias and activation only).
    """

    weight: Tensor | None  # (d_in, d_out)
    bias: Tensor | None  # (d_out,)
    act: str  # a key of nas_mtl.model.components.ACTIVATIONS


@dataclass(frozen=True)
class Source:
    """One term of an instance's input sum: ``coef · (value(instance) @ edge)``."""

    instance: int
    coef: float
    edge: Tensor | None  # (d_src, d_in) for linear transforms; None: identity


@dataclass(frozen=True)
class SoftmaxMixing:
    """An MMoE/OMoE destination: coefficients ``softmax(x W^T + b + neg) · mask`` over J sources."""

    weight: Tensor  # (J, input_dim): this destination's rows of the gate network
    bias: Tensor  # (J,)
    neg: Tensor  # (J,): 0 for an edge, -inf for none
    mask: Tensor  # (J,): 1 for an edge
    sources: tuple[int | None, ...]  # the instance read through edge j (None: a zero stream)
    x_instance: int  # the input instance the gate network reads


@dataclass
class Instance:
    """A node's value on one stream (``stream`` None: one value for every stream)."""

    id: int
    node: str
    stream: int | None
    block: int  # -1 for the input
    width: int  # output width
    sources: list[Source] = field(default_factory=list)
    softmax: SoftmaxMixing | None = None
    linear: bool = False  # the sources reach it through linear edge transforms
    layers: list[Layer] = field(default_factory=list)
    task: str | None = None  # heads: the task whose output this is


@dataclass
class Trace:
    """The instances (input first, then in block order) and which one is each task's output."""

    instances: list[Instance]
    outputs: dict[str, int]  # task -> head instance
    inputs: list[int]  # the input instance of each input stream
    tasks: tuple[str, ...]
    n_streams: int  # P: streams after a task-scoped gate (the requested tasks)
    input_dim: int
