"""Gate math (docs/search.md): hard-concrete/L0, straight-through Gumbel, softmax gates."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.model.gates import (
    GATES,
    BlockEdges,
    FixedGate,
    GateContext,
    GumbelGate,
    HardConcreteGate,
    SoftmaxGate,
    gumbel_temperature,
)
from nas_mtl.model.schedules import SchedulePosition, temperature

TASKS = ("a", "b", "c")


def _edges(J=3, C=2, scope="shared", groups=None, **params) -> BlockEdges:
    mask = torch.ones(J, C, dtype=torch.bool)
    groups = groups or tuple(tuple(f"{j}->{c}" for c in range(C)) for j in range(J))
    return BlockEdges(
        src=tuple(f"s{j}" for j in range(J)),
        dst=tuple(f"d{c}" for c in range(C)),
        mask=mask,
        groups=groups,
        params=params,
        scope=scope,
        tasks=TASKS,
        input_dim=5,
    )


def _ctx(S=3, B=4):
    return GateContext(stream_tasks=torch.arange(S), x_flat=torch.randn(1, B, 5))


def _hc(log_alpha: float, **params) -> HardConcreteGate:
    gate = HardConcreteGate(_edges(J=1, C=1, **params))
    with torch.no_grad():
        gate.log_alpha.fill_(log_alpha)
    return gate


def _sample_hc(gate: HardConcreteGate, n: int) -> torch.Tensor:
    gate.train()
    ctx = GateContext(stream_tasks=torch.arange(1), x_flat=torch.zeros(1, n, 5))
    return gate(ctx).flatten()


def test_hard_concrete_samples_lie_in_unit_interval_with_mass_at_0_and_1():
    z = _sample_hc(_hc(0.0, noise="example"), 100_000)
    assert z.min() >= 0 and z.max() <= 1
    assert (z == 0).float().mean() > 0.05  # real probability mass at exactly 0 ...
    assert (z == 1).float().mean() > 0.05  # ... and at exactly 1
    assert ((z > 0) & (z < 1)).float().mean() > 0.5


@settings(max_examples=15, deadline=None)
@given(log_alpha=st.floats(-3, 3), beta=st.floats(0.3, 1.0))
def test_empirical_nonzero_rate_matches_expected_l0(log_alpha, beta):
    gate = _hc(log_alpha, noise="example", beta=beta)
    n = 100_000
    p_hat = (_sample_hc(gate, n) != 0).float().mean().item()
    expected = torch.sigmoid(torch.tensor(log_alpha - beta * math.log(0.1 / 1.1))).item()
    assert gate.penalty().item() == pytest.approx(expected, rel=1e-5)
    # Monte Carlo tolerance: 5 standard errors of a Bernoulli mean over n draws
    assert abs(p_hat - expected) < 5 * math.sqrt(expected * (1 - expected) / n) + 1e-3


@pytest.mark.parametrize("log_alpha", [-5.0, -1.0, 0.0, 0.7, 3.0])
def test_hard_concrete_eval_gate_matches_spec(log_alpha):
    gate = _hc(log_alpha).eval()
    z = gate(_ctx(S=1)).item()
    expected = min(1.0, max(0.0, 1 / (1 + math.exp(-log_alpha)) * 1.2 - 0.1))
    assert z == pytest.approx(expected, abs=1e-6)
    assert bool(gate.decisions().item()) == (expected > 0)


def test_hard_concrete_per_batch_noise_shares_one_draw():
    gate = _hc(0.0).train()
    z = gate(_ctx(S=1, B=64))
    assert z.shape == (1, 1, 1, 1)


def test_hard_concrete_groups_tie_variables():
    groups = (("g", "g"), ("h", "h"))
    gate = HardConcreteGate(_edges(J=2, C=2, groups=groups)).eval()
    assert gate.log_alpha.shape == (1, 2)
    z = gate(_ctx(S=1))[0, 0]
    assert torch.equal(z[0, 0], z[0, 1]) and torch.equal(z[1, 0], z[1, 1])


def test_hard_concrete_rejects_bad_stretch():
    with pytest.raises(Exception, match="gamma < 0 and zeta > 1"):
        HardConcreteGate(_edges(gamma=0.1))


def _gumbel(J=3, C=2, **params) -> GumbelGate:
    groups = tuple(tuple(f"s{j}" for _ in range(C)) for j in range(J))  # tied per source
    return GumbelGate(_edges(J=J, C=C, scope="task", groups=groups, **params))


def test_gumbel_straight_through_is_hard_forward_with_gradient_backward():
    gate = _gumbel().train()
    G = gate(_ctx())  # (T, 1, J, C): y_j / max(Σ y, 1)
    active = (G[:, 0, :, 0] > 0).float()
    expected = active / active.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(G[:, 0, :, 0], expected)  # exactly 0 or 1/k: hard values
    (G * torch.randn_like(G)).sum().backward()  # a plain sum of averages is constant
    assert gate.logits.grad is not None and gate.logits.grad.abs().sum() > 0


def test_gumbel_init_and_eval_are_greedy():
    gate = _gumbel(p0=0.97).eval()
    torch.testing.assert_close(gate.probability_on(), torch.full((3, 3), 0.97))
    G = gate(_ctx())
    torch.testing.assert_close(G, torch.full_like(G, 1 / 3))  # all on: average of 3
    with torch.no_grad():
        gate.logits[1, 0] = torch.tensor([0.0, 1.0])  # task b drops source 0
    G = gate(_ctx())
    assert G[1, 0, 0].eq(0).all() and torch.allclose(G[1, 0, 1:], torch.tensor(0.5))


def test_gumbel_temperature_schedule():
    assert gumbel_temperature(0) == 50.0
    assert gumbel_temperature(99) == pytest.approx(5.0)
    assert gumbel_temperature(10**6) == 0.5
    gate = _gumbel(tau0=10.0, tau_min=1.0)
    gate.set_position(SchedulePosition(step=3, kind="sqrt_step"))
    assert gate.temperature == pytest.approx(5.0)


@given(
    step=st.integers(0, 10_000),
    warm=st.integers(0, 500),
    anneal=st.integers(1, 5_000),
    tau0=st.floats(1.0, 100.0),
    tau_min=st.floats(0.05, 1.0),
)
def test_relative_schedules_go_from_tau0_to_tau_min(step, warm, anneal, tau0, tau_min):
    """Linear and exponential: τ0 until warm-up ends, τ_min once annealing ends, monotone."""
    for kind in ("linear", "exponential"):
        pos = SchedulePosition(step, warm, anneal, kind)
        tau = temperature(pos, tau0, tau_min)
        p = min(max((step - warm) / anneal, 0.0), 1.0)
        want = tau0 + (tau_min - tau0) * p if kind == "linear" else tau0 * (tau_min / tau0) ** p
        assert tau == pytest.approx(want)
        assert tau_min - 1e-9 <= tau <= tau0 + 1e-9
        later = temperature(SchedulePosition(step + 1, warm, anneal, kind), tau0, tau_min)
        assert later <= tau + 1e-12
    assert temperature(SchedulePosition(warm + anneal, warm, anneal, "linear"), tau0, tau_min) == (
        pytest.approx(tau_min)
    )
    sqrt = temperature(SchedulePosition(step, warm, anneal, "sqrt_step"), tau0, tau_min)
    assert sqrt == pytest.approx(max(tau_min, tau0 / math.sqrt(step + 1)))


def test_gumbel_budget_penalty():
    gate = _gumbel(p0=0.9, budget=0.5)
    assert gate.penalty().item() == pytest.approx(3 * (0.9 - 0.5), rel=1e-5)
    value, count = gate.penalty_terms()
    assert count == 3 and value.item() / count == pytest.approx(0.4, rel=1e-5)  # per task
    assert _gumbel(p0=0.9).penalty().item() == 0.0


def test_gumbel_needs_task_scope():
    with pytest.raises(Exception, match="scope = 'task'"):
        GumbelGate(_edges(scope="shared"))


def test_mmoe_gates_sum_to_one_and_depend_on_input():
    gate = SoftmaxGate(_edges(J=4, C=3, scope="task"))
    x = torch.randn(1, 6, 5)
    G = gate(GateContext(stream_tasks=torch.arange(1), x_flat=x))  # (1, B, J, C)
    torch.testing.assert_close(G.sum(2), torch.ones(1, 6, 3))
    assert not torch.allclose(G[0, 0], G[0, 1])  # different examples, different gates
    assert not torch.allclose(G[..., 0], G[..., 1])  # one gate network per task


def test_omoe_shares_one_gate():
    gate = SoftmaxGate(_edges(J=4, C=3, scope="shared"))
    G = gate(GateContext(stream_tasks=torch.arange(1), x_flat=torch.randn(1, 6, 5)))
    torch.testing.assert_close(G[..., 0], G[..., 2])
    torch.testing.assert_close(G.sum(2), torch.ones(1, 6, 3))


def test_fixed_gate_values_and_normalization():
    e = _edges(J=2, C=2, scope="task", values={"a": 1, "c": 1}, normalize=True)
    gate = FixedGate(e)
    G = gate(_ctx())
    torch.testing.assert_close(G[0, 0], torch.full((2, 2), 0.5))
    assert G[1].eq(0).all()
    assert FixedGate(_edges()).static_ones


@pytest.mark.parametrize("kind", GATES.names())
def test_every_gate_kind_has_probabilities_and_decisions(kind):
    scope = "task" if kind == "gumbel" else "shared"
    gate = GATES.get(kind)(_edges(scope=scope))
    p = gate.open_probability()
    assert p.shape[-2:] == (3, 2) and (p >= 0).all() and (p <= 1).all()
    assert gate.decisions().dtype == torch.bool
    assert 0 <= gate.entropy().item() <= math.log(2) + 1e-6
    G = gate.train()(_ctx())
    assert G.shape[-2:] == (3, 2) and torch.isfinite(G).all()
