"""The search loop: penalties, the target constraint, warm-up, alternation, selection."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.data import load_dataset
from nas_mtl.errors import ConfigError
from nas_mtl.model.cost import graph_costs
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages.batches import halves
from nas_mtl.stages.checkpoint import load_checkpoint
from nas_mtl.stages.derive import (
    Targets,
    capped_decisions,
    derive,
    derive_edges,
    greedy_decisions,
    learned_pairs,
    open_fraction,
)
from nas_mtl.stages.search import ArchitectureStep, search
from nas_mtl.stages.search import with_min_steps as real_min_steps
from nas_mtl.study import SearchConfig


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=512, n_val=128, n_test=128, input_dim=8, groups=[2])


def _net(data, space="snr_trans", **kw):
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return Supernet(build_space(space, data.input_shape, out_dims, **kw))


def _open(net):
    return torch.cat([p.flatten() for p in net.arch_parameters()]).clone()


def test_l0_penalty_closes_gates(data):
    cfg = SearchConfig(epochs=3, batch_size=64, lr_arch=0.1, target_open=None, warmup=0.0)
    free = search(
        _net(data, subnetworks=3, width=4), data, SearchConfig(**{**cfg.__dict__, "l0_weight": 0.0})
    )
    sparse = search(
        _net(data, subnetworks=3, width=4), data, SearchConfig(**{**cfg.__dict__, "l0_weight": 5.0})
    )
    assert sparse.supernet.penalties()["l0"] < free.supernet.penalties()["l0"] - 1.0
    assert sparse.history[-1]["expected_open"] < free.history[-1]["expected_open"]


@pytest.mark.parametrize("form", ["normalized", "sum"])
def test_normalized_penalty_is_the_sum_divided_by_the_number_of_gates(data, form):
    net = _net(data, subnetworks=3, width=4)
    step = ArchitectureStep(net, data, SearchConfig(penalty_form=form))
    total = net.penalties()["l0"]
    n_gates = sum(p.numel() for p in net.arch_parameters())
    want = total if form == "sum" else total / n_gates
    torch.testing.assert_close(step.penalties()["l0"], want)


def test_target_open_caps_the_derived_architecture(data):
    net = _net(data, subnetworks=4, width=8)
    cfg = SearchConfig(epochs=8, batch_size=32, target_open=0.3, warmup=0.0)
    result = search(net, data, cfg)
    chosen = result.history[result.best_epoch]
    assert chosen["eligible"] and chosen["open_fraction"] <= 0.3
    budgets = [r["budget"] for r in result.history]
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == pytest.approx(0.3)
    # the gates themselves closed: E[open] tracks the budget, derive's cap had little to do
    for r in result.history:
        assert r["expected_open"] <= r["budget"] + 0.02
    assert result.history[-1]["expected_open"] == pytest.approx(0.3, abs=0.05)
    assert chosen["cap_closed"] <= 0.05
    net = result.supernet
    arch = derive(net, capped_decisions(net, Targets(open=0.3).within(net)))
    assert arch.graph["open_fraction"] == pytest.approx(chosen["open_fraction"])


def test_target_macs_caps_the_derived_architecture(data):
    net = _net(data, subnetworks=4, width=8)
    full = graph_costs(net.graph)["total"]["macs"]
    target = 0.6 * full
    cfg = SearchConfig(epochs=8, batch_size=32, target_open=None, target_macs=target, warmup=0.0)
    result = search(net, data, cfg)
    chosen = result.history[result.best_epoch]
    assert chosen["macs"] <= target < full
    assert chosen["expected_macs"] is not None and chosen["budget"] is None
    assert max(r["macs_multiplier"] for r in result.history) > 0  # the constraint acted
    capped = capped_decisions(result.supernet, Targets(macs=target).within(result.supernet))
    assert graph_costs(derive(result.supernet, capped))["total"]["macs"] == chosen["macs"]


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_the_cap_closes_the_least_probable_edges_first(data, target):
    net = _net(data, subnetworks=4, width=4)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # every gate open (greedy keeps all), with distinct probabilities
        for p in net.arch_parameters():
            p.copy_(2.0 + 3.0 * torch.rand(p.shape, generator=gen))
    assert open_fraction(net, derive_edges(net, greedy_decisions(net))) == 1.0
    capped = capped_decisions(net, Targets(open=target).within(net))
    kept = open_fraction(net, derive_edges(net, capped))
    assert target - 0.25 < kept <= target
    # one threshold θ closes every learned edge with P ≤ θ and keeps only edges with P > θ
    # (reachability may close more), so the least probable edge of all is among the closed
    closed, kept_p = [], []
    for i, blk in enumerate(net.blocks):
        if blk.gate.learned:
            p, mask = blk.gate.open_probability().detach(), blk.gate.mask.bool()
            closed.append(p[~capped[i] & mask])
            kept_p.append(p[capped[i] & mask])
    assert torch.cat(closed).min() < torch.cat(kept_p).min()
    uncapped = capped_decisions(net, Targets(open=1.0).within(net))
    assert open_fraction(net, derive_edges(net, uncapped)) == 1.0


def test_unknown_penalty_name_is_an_error(data, monkeypatch):
    net = _net(data, subnetworks=2, width=4)
    gate = next(blk.gate for blk in net.blocks if blk.gate.learned)
    monkeypatch.setattr(type(gate), "penalty_name", "l1")
    with pytest.raises(ConfigError, match="penalty 'l1'"):
        ArchitectureStep(net, data, SearchConfig())


def test_open_pairs_count_shared_edges_once(data):
    net = _net(data, subnetworks=2, width=4)  # 2x2 inner edges + 2 heads x 2 edges
    pairs = learned_pairs(net)
    assert len(pairs) == 4 + 4
    assert sum(t == "*" for t, _ in pairs) == 8  # SNR gates are shared: one decision each


def test_warmup_holds_gates_and_freezes_their_variables(data):
    net = _net(data, subnetworks=2, width=4)
    before = _open(net)
    result = search(net, data, SearchConfig(epochs=2, batch_size=64, warmup=0.5))
    assert result.history[0]["warmup"] is True and result.history[1]["warmup"] is False
    assert not result.history[0]["eligible"]  # a warm-up epoch is never selected
    assert torch.equal(_open(result.supernet), before) or result.best_epoch == 1


def test_alternate_updates_gates_on_the_other_half(data):
    net = _net(data, "gumbel_matrix", layers=1, components=2, width=4)
    before = _open(net)
    result = search(net, data, SearchConfig(epochs=1, batch_size=64, alternate=True))
    assert not torch.equal(_open(result.supernet), before)
    a, b = halves(data.train, torch.Generator().manual_seed(0))
    rows = torch.cat([a.x, b.x])
    assert len(a) + len(b) == len(data.train)
    assert torch.unique(rows, dim=0).shape[0] == len(data.train)  # disjoint, complete


def test_early_stopping_and_epoch_records(data):
    seen = []
    cfg = SearchConfig(
        epochs=10,
        batch_size=64,
        lr_weights=1e-30,  # below float32 resolution: nothing moves
        lr_arch=1e-30,
        patience=2,
        warmup=0.0,
        anneal=0.1,
        target_open=None,  # without a target, epochs are selectable once annealed
    )
    result = search(_net(data, subnetworks=2, width=4), data, cfg, on_epoch=seen.append)
    # annealing ends with epoch 1's first step: epochs 1.. are selectable; nothing can improve
    assert [r["eligible"] for r in result.history] == [False, True, True, True]
    assert len(result.history) == 4 and result.best_epoch == 1
    assert seen == result.history
    gates = seen[0]["gates"]
    assert {g["kind"] for g in gates} == {"hard_concrete"}
    assert torch.tensor(gates[0]["open_probability"]).shape == (1, 2, 2)


def test_an_epoch_the_cap_would_decide_is_never_selected(data, tmp_path):
    # frozen gates stay open (P ≈ 0.9): every epoch meets target_open = 0.4 only by derive's
    # cap, so none is selectable, annealed or not; the last epoch is kept and saved as best
    cfg = SearchConfig(epochs=4, batch_size=128, lr_arch=1e-30, warmup=0.0, anneal=0.25)
    result = search(_net(data, subnetworks=2, width=4), data, cfg, run_dir=tmp_path)
    assert [r["annealed"] for r in result.history][-1]
    assert all(r["cap_closed"] > cfg.target_tolerance for r in result.history)
    assert not any(r["eligible"] for r in result.history)
    assert result.best_epoch == len(result.history) - 1
    best = load_checkpoint(tmp_path / "checkpoints" / "search_best.pt")
    assert best["epoch"] == len(result.history) - 1
    for name, value in result.supernet.state_dict().items():
        assert torch.equal(best["model"][name], value), name
    assert any("never approached target_open" in w for w in result.warnings)


def test_selectable_epochs_leave_the_cap_at_most_the_tolerance(data):
    cfg = SearchConfig(epochs=6, batch_size=64, warmup=0.0, patience=10, target_tolerance=0.05)
    result = search(_net(data, subnetworks=3, width=4), data, cfg)
    for r in result.history:
        meets = r["greedy_open_fraction"] <= 0.45 and r["cap_closed"] <= 0.05
        assert r["eligible"] == meets, r["epoch"]


def test_early_stopping_waits_for_the_end_of_annealing(data):
    # frozen weights and gates: no epoch improves, so patience 1 would stop at epoch 1; every
    # epoch is selectable (target 1.0 is always met) but annealing ends with the first step
    # of epoch 6 (anneal 0.6 of 10 epochs × 4 steps), so the search runs to epoch 6 and stops
    cfg = SearchConfig(
        epochs=10,
        batch_size=128,
        lr_weights=1e-30,  # below float32 resolution: frozen
        lr_arch=1e-30,
        patience=1,
        warmup=0.0,
        anneal=0.6,
        target_open=1.0,
    )
    result = search(_net(data, "gumbel_matrix", layers=1, components=2, width=4), data, cfg)
    assert [r["annealed"] for r in result.history] == [False] * 6 + [True]
    assert all(r["eligible"] for r in result.history)


def test_gumbel_temperature_follows_the_step(data):
    net = _net(data, "gumbel_matrix", layers=1, components=2, width=4)
    cfg = SearchConfig(epochs=2, batch_size=128, schedule="sqrt_step")
    result = search(net, data, cfg)
    steps = result.history[-1]["step"]  # 4 steps an epoch
    assert result.history[-1]["temperature"] == pytest.approx(max(0.5, 50 / (steps) ** 0.5))


def test_relative_schedule_reaches_tau_min_when_annealing_ends(data):
    net = _net(data, "gumbel_matrix", layers=1, components=2, width=4)
    cfg = SearchConfig(epochs=5, batch_size=128, warmup=0.2, anneal=0.5, patience=10)
    result = search(net, data, cfg)
    temps = [r["temperature"] for r in result.history]
    assert temps[0] == pytest.approx(50.0)  # warm-up: the schedule has not started
    assert temps == sorted(temps, reverse=True)
    assert temps[-1] == pytest.approx(0.5) and result.history[-1]["annealed"]


def test_selection_uses_the_derived_architecture(data):
    net = _net(data, "gumbel_matrix", layers=1, components=3, width=4)
    cfg = SearchConfig(epochs=4, batch_size=64, warmup=0.0, patience=10)
    result = search(net, data, cfg)
    for r in result.history:
        assert r["selection_objective"] == r["derived_val_objective"]
    eligible = [r for r in result.history if r["eligible"]]
    best = min(eligible, key=lambda r: r["selection_objective"])
    assert result.best_epoch == best["epoch"]


def test_search_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="schedule = 'cosine'"):
        SearchConfig(schedule="cosine")
    with pytest.raises(ConfigError, match="target_open must be in"):
        SearchConfig(target_open=1.5)
    with pytest.raises(ConfigError, match="target_macs must be a positive number"):
        SearchConfig(target_macs=0)


@pytest.mark.parametrize("space", ["snr_trans", "gumbel_matrix"])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), gap=st.floats(-0.01, 0.01))  # a gate step's excess
def test_one_projection_step_meets_a_budget_to_first_order(data, space, seed, gap):
    torch.manual_seed(seed)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    kw = {"subnetworks": 3, "width": 4} if space == "snr_trans" else {"components": 3, "width": 4}
    net = Supernet(build_space(space, data.input_shape, out_dims, **kw))
    with torch.no_grad():  # a spread of open probabilities, not the initial near-equal ones
        for p in net.arch_parameters():
            p.add_(torch.randn_like(p))
    step = ArchitectureStep(net, data, SearchConfig())
    before, logits = step._expected_open().detach(), _open(net)
    budget = float(before) - gap  # gap > 0: the gate step left more open than allowed
    step.budget_start = torch.tensor(budget)
    step.targets = replace(step.targets, open=budget)
    step.project_open()
    after, moved = float(step._expected_open()), logits - _open(net)
    if gap <= 0:  # a cap: a sparser architecture is left alone
        assert torch.equal(moved, torch.zeros_like(moved))
        return
    assert abs(after - budget) <= 0.5 * gap + 1e-6  # one Newton step: the error is second order
    changed = moved[moved != 0]  # one common shift of the open logits, down
    assert (changed > 0).all()
    torch.testing.assert_close(changed, changed[:1].expand_as(changed), atol=1e-5, rtol=0)


def test_short_searches_run_enough_epochs_for_min_steps(data):
    four_steps = SearchConfig(epochs=2, batch_size=128, min_steps=100)  # 512 rows: 4 per epoch
    assert real_min_steps(four_steps, data).epochs == 25
    assert real_min_steps(replace(four_steps, min_steps=0), data) == replace(
        four_steps, min_steps=0
    )
    assert real_min_steps(replace(four_steps, epochs=40), data).epochs == 40
    alternating = replace(four_steps, alternate=True)  # the weights see half the rows
    assert real_min_steps(alternating, data).epochs == 50
