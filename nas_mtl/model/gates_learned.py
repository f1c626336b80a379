"""The learned gate kinds: SNR's hard-concrete (L0) gates and Gumbel-Matrix allocations.

Both carry architecture variables that the search learns (``learned = True``); their math,
the papers and the schedules are in ``docs/search.md`` ("Gates", "Penalties", "Schedules").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas_mtl.errors import GraphError
from nas_mtl.model.gates import GATES, BlockEdges, Gate, GateContext, _task_select, _var_index
from nas_mtl.model.schedules import SchedulePosition, sqrt_step_temperature, temperature


@GATES.register("hard_concrete", "SNR coding variables: hard-concrete / L0 gates (Louizos 2018)")
class HardConcreteGate(Gate):
    """Hard-concrete relaxation of Bernoulli gates (Louizos et al. 2018; SNR, Ma 2019).

    Training: z = clamp(sigmoid((log u - log(1-u) + log α)/β)·(ζ-γ)+γ, 0, 1) with fresh noise
    per forward (per batch, or per example with ``noise = "example"``). Eval: the deterministic
    ẑ = clamp(sigmoid(log α)·(ζ-γ)+γ, 0, 1); an edge is pruned when ẑ = 0.
    """

    kind = "hard_concrete"
    penalty_name = "l0"
    learned = True
    PARAMS = {
        "beta": 2 / 3,
        "gamma": -0.1,
        "zeta": 1.1,
        "init_mean": 1.0,
        "init_std": 0.01,
        "noise": "batch",
    }

    def __init__(self, edges: BlockEdges) -> None:
        super().__init__(edges)
        if not self.p["gamma"] < 0 < 1 < self.p["zeta"]:
            raise GraphError(
                f"hard_concrete needs gamma < 0 and zeta > 1, got "
                f"gamma={self.p['gamma']}, zeta={self.p['zeta']}"
            )
        if self.p["noise"] not in ("batch", "example"):
            raise GraphError(
                f"hard_concrete noise must be 'batch' or 'example', got {self.p['noise']!r}"
            )
        index, n_vars = _var_index(edges)
        self.register_buffer("index", index.clamp(min=0), persistent=False)
        rows = self.n_tasks if self.scope == "task" else 1
        self.log_alpha = nn.Parameter(
            torch.randn(rows, n_vars) * self.p["init_std"] + self.p["init_mean"]
        )

    def _edge(self, per_var: Tensor) -> Tensor:  # (..., n_vars) -> (..., J, C) masked
        return per_var[..., self.index] * self.mask

    def _rows(self, ctx: GateContext) -> Tensor:
        return self.log_alpha if self.scope == "shared" else _task_select(self.log_alpha, ctx)

    def forward(self, ctx: GateContext) -> Tensor:
        forced = self.override(ctx)
        if forced is not None:
            return forced
        beta, gamma, zeta = self.p["beta"], self.p["gamma"], self.p["zeta"]
        log_alpha = self._rows(ctx)  # (S_g, n_vars)
        if not self.training:
            return self._edge(self._z_hat(log_alpha)).unsqueeze(1)
        # per-example noise draws (S_g, B, n_vars) values, a few per example: cheap; the block
        # mixes them without a per-example weight matrix (Block._mix_per_example)
        per_example = self.p["noise"] == "example" and ctx.x_flat is not None
        batch = ctx.x_flat.shape[1] if per_example else 1
        shape = (log_alpha.shape[0], batch, log_alpha.shape[1])
        log_alpha = log_alpha.unsqueeze(1)  # (S_g, 1, n_vars)
        u = torch.rand(shape, device=log_alpha.device).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / beta)
        z = (s * (zeta - gamma) + gamma).clamp(0, 1)
        return self._edge(z)  # (S_g, B_g, J, C)

    def expected_open(self, log_alpha: Tensor | None = None) -> Tensor:
        """P(z ≠ 0) per variable: sigmoid(log α − β log(−γ/ζ)), (rows, n_vars)."""
        shift = self.p["beta"] * math.log(-self.p["gamma"] / self.p["zeta"])
        return torch.sigmoid((self.log_alpha if log_alpha is None else log_alpha) - shift)

    @torch.no_grad()
    def shift_open_(self, c: Tensor | float) -> None:
        """Lower every open logit by ``c``: the target's projection (docs/search.md)."""
        self.log_alpha.sub_(c)

    def penalty_terms(self) -> tuple[Tensor, int]:
        """Expected L0 norm: Σ over gate variables of P(z ≠ 0), and the number of variables."""
        p = self.expected_open()
        return p.sum(), p.numel()

    def open_probability(self) -> Tensor:
        return self._edge(self.expected_open(self._pooled(self.log_alpha, self.index)))

    def sample_decisions(
        self, generator: torch.Generator | None = None, rate: float | None = None
    ) -> Tensor:
        p = self.expected_open(self._pooled(self.log_alpha, self.index)).detach().cpu()
        p = p if rate is None else torch.full_like(p, rate)
        on = (torch.rand(p.shape, generator=generator) < p).float().to(self.mask.device)
        return self._edge(on) > 0

    def _z_hat(self, log_alpha: Tensor) -> Tensor:
        """The deterministic gate ẑ = clamp(sigmoid(log α)·(ζ−γ)+γ, 0, 1)."""
        gamma, zeta = self.p["gamma"], self.p["zeta"]
        return (torch.sigmoid(log_alpha) * (zeta - gamma) + gamma).clamp(0, 1)

    def decisions(self) -> Tensor:
        return self._edge(self._z_hat(self._pooled(self.log_alpha, self.index))) > 0

    def eval_values(self) -> Tensor:
        """ẑ of every edge, (rows, J, C): the scale a derived edge's fixed 1 replaces."""
        return self._edge(self._z_hat(self.log_alpha))


def gumbel_temperature(step: int, tau0: float = 50.0, tau_min: float = 0.5) -> float:
    """The Gumbel-Matrix paper's schedule τ = max(τ_min, τ_0 / sqrt(step + 1))."""
    return sqrt_step_temperature(step, tau0, tau_min)


@GATES.register("gumbel", "Gumbel-Matrix per-task on/off allocation, straight-through Gumbel")
class GumbelGate(Gate):
    """Per-task binary allocation of components (Maziarz et al. 2019; docs/search.md).

    Variables are tied per group (default: the source component), so one logit pair
    L[t, c] = (on, off) decides whether component c serves task t. Training samples
    y = one_hot(argmax) − stopgrad(y_soft) + y_soft; eval is greedy (P(on) > 0.5). Each
    destination averages its active inputs: a_c = y_c / max(Σ_c y_c, 1).
    """

    kind = "gumbel"
    normalize = True
    penalty_name = "budget"
    learned = True
    PARAMS = {"p0": 0.5, "tau0": 50.0, "tau_min": 0.5, "budget": None}

    def __init__(self, edges: BlockEdges) -> None:
        super().__init__(edges)
        if self.scope != "task":
            raise GraphError("gumbel gates allocate components per task: use scope = 'task'")
        if not 0 < self.p["p0"] < 1:
            raise GraphError(f"gumbel p0 must be in (0, 1), got p0={self.p['p0']}")
        index, n_vars = _var_index(edges)
        self.register_buffer("index", index.clamp(min=0), persistent=False)
        init = torch.tensor([math.log(self.p["p0"]), math.log(1 - self.p["p0"])])
        self.logits = nn.Parameter(init.repeat(self.n_tasks, n_vars, 1))  # (T, n_vars, 2)
        self._tau = float(self.p["tau0"])  # a Python float: reading it never syncs a device

    @property
    def temperature(self) -> float:
        return self._tau

    def set_position(self, pos: SchedulePosition) -> None:
        self._tau = temperature(pos, self.p["tau0"], self.p["tau_min"])

    def _combine(self, y_on: Tensor) -> Tensor:  # (S, n_vars) -> (S, 1, J, C)
        g = y_on[:, self.index] * self.mask
        return (g / g.sum(dim=1, keepdim=True).clamp(min=1.0)).unsqueeze(1)

    def forward(self, ctx: GateContext) -> Tensor:
        forced = self.override(ctx)
        if forced is not None:
            return forced
        logits = _task_select(self.logits, ctx)  # (S, n_vars, 2)
        if not self.training:
            return self._combine((logits.softmax(-1)[..., 0] > 0.5).float())
        u = torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)
        g = -torch.log(-torch.log(u))
        y_soft = ((logits + g) / self.temperature).softmax(-1)
        y_hard = F.one_hot(y_soft.argmax(-1), 2).to(y_soft.dtype)
        y = y_hard - y_soft.detach() + y_soft
        return self._combine(y[..., 0])

    @torch.no_grad()
    def shift_open_(self, c: Tensor | float) -> None:
        """Lower every on-logit by ``c``: the target's projection (docs/search.md)."""
        self.logits[..., 0].sub_(c)

    def probability_on(self) -> Tensor:
        """P_t,c(on), (T, n_vars)."""
        return self.logits.softmax(-1)[..., 0]

    def penalty_terms(self) -> tuple[Tensor, int]:
        """Budget terms max(0, mean_c P_t,c(on) − budget), one per task; none without a budget."""
        if self.p["budget"] in (None, False):
            return self.logits.new_zeros(()), 0
        over = (self.probability_on().mean(dim=1) - self.p["budget"]).clamp(min=0)
        return over.sum(), over.numel()

    def open_probability(self) -> Tensor:
        return self._pooled(self.probability_on())[:, self.index] * self.mask

    def sample_decisions(
        self, generator: torch.Generator | None = None, rate: float | None = None
    ) -> Tensor:
        p = self._pooled(self.probability_on()).detach().cpu()
        p = p if rate is None else torch.full_like(p, rate)
        on = (torch.rand(p.shape, generator=generator) < p).to(self.mask.device)
        return on[:, self.index] & self.mask.bool()

    def decisions(self) -> Tensor:
        return (self._pooled(self.probability_on()) > 0.5)[:, self.index] & self.mask.bool()
