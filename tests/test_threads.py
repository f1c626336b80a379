"""The training's CPU thread count: the rule, its inputs, resume, and what the count may change."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nas_mtl.data import load_dataset
from nas_mtl.errors import ConfigError
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages import threads
from nas_mtl.stages.threads import (
    choose_threads,
    fastest_threads,
    rule_threads,
    thread_candidates,
    training_threads,
)
from nas_mtl.stages.training import TrainConfig, step_flops, train
from nas_mtl.study import parse_study


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_candidates_are_powers_of_two_and_the_count():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [1, 2]
    assert thread_candidates(6) == [1, 2, 4, 6]
    assert thread_candidates(16) == [1, 2, 4, 8, 16]


def test_fastest_is_the_least_median_time_and_the_count_is_restored(monkeypatch, two_threads):
    # a clock on which a step takes 1 unit on one thread and 3 on two
    now = [0.0]

    def step() -> None:
        now[0] += 1.0 if torch.get_num_threads() == 1 else 3.0

    monkeypatch.setattr(threads.time, "perf_counter", lambda: now[0])
    best, medians = fastest_threads(step, [1, 2])
    assert best == 1
    assert medians == {1: 1.0, 2: 3.0}
    assert torch.get_num_threads() == 2


def test_training_threads_sets_and_restores(two_threads):
    with training_threads(1, "t") as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyError):
        with training_threads(1, "t"):
            raise KeyError("boom")
    assert torch.get_num_threads() == 2


@given(
    st.floats(min_value=0, max_value=1e13, allow_nan=False),
    st.floats(min_value=0, max_value=1e13, allow_nan=False),
    st.integers(min_value=1, max_value=64),
)
def test_the_rule_is_a_candidate_monotone_in_the_work(a, b, available):
    lo, hi = sorted((a, b))
    n_lo, n_hi = rule_threads(lo, available), rule_threads(hi, available)
    assert n_lo in thread_candidates(available) and n_hi in thread_candidates(available)
    assert 1 <= n_lo <= n_hi <= available
    assert n_hi == 1 or hi >= n_hi * threads.FLOPS_PER_THREAD  # each thread gets its share


def test_the_rule_picks_one_thread_below_and_two_above_the_threshold():
    assert rule_threads(threads.FLOPS_PER_THREAD * 1.99, 2) == 1
    assert rule_threads(threads.FLOPS_PER_THREAD * 2, 2) == 2
    assert rule_threads(threads.FLOPS_PER_THREAD * 1000, 2) == 2  # never above what torch has


def test_choose_threads_setting_then_recorded_then_rule(two_threads):
    def never() -> float:
        raise AssertionError("counted FLOPs although the count was given")

    cpu = torch.device("cpu")
    assert choose_threads(1, cpu, never, recorded=2) == 1  # the study's setting wins
    assert choose_threads(0, cpu, never, recorded=1) == 1  # a resume keeps its count
    assert choose_threads(0, torch.device("cuda"), never) == 2  # a GPU keeps torch's count
    assert choose_threads(0, cpu, lambda: 0.0) == 1
    assert choose_threads(0, cpu, lambda: 1e15) == 2


def test_step_flops_counts_the_forward_and_leaves_model_and_rng_alone():
    data = load_dataset("synthetic", n_train=64, n_val=8, n_test=8, input_dim=10, groups=[2])
    net = Supernet(build_space("gumbel_matrix", data.input_shape, {"g0_t0": 1, "g0_t1": 1}))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    small = step_flops(net, data, TrainConfig(epochs=1, batch_size=16, lr=1e-3))
    assert torch.equal(torch.rand(3), expected)  # the gates' noise left the RNG as it was
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    big = step_flops(net, data, TrainConfig(epochs=1, batch_size=64, lr=1e-3))
    assert small > 0 and big == pytest.approx(4 * small)  # linear in the batch


def _grads(space: str, n: int) -> list[torch.Tensor]:
    torch.set_num_threads(n)
    torch.manual_seed(0)
    net = Supernet(build_space(space, (20,), {f"t{i}": 1 for i in range(3)}))
    x = torch.randn(4096, 20)  # above ATen's grain size: the ops run split over threads
    sum(o.square().mean() for o in net(x).values()).backward()
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


SPACES = ["snr_trans", "snr_aver", "gumbel_matrix", "mmoe"]


@pytest.mark.parametrize("space", SPACES)
def test_gradients_at_one_and_two_threads_agree_within_rounding(space, two_threads):
    """What the thread count may change: the order of a sum, so the last bits (on an AVX-512
    Xeon up to 2.8e-9, relative ~2e-7), never more. Not bit for bit: ATen and MKL split
    reductions by thread count, and only the same count promises the same bits."""
    for a, b in zip(_grads(space, 1), _grads(space, 2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("space", SPACES)
def test_gradients_at_one_thread_count_are_bitwise_repeatable(space, two_threads):
    for n in (1, 2):
        first, again = _grads(space, n), _grads(space, n)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_train_reports_its_threads_and_restores_the_count(two_threads, monkeypatch):
    data = load_dataset("synthetic", n_train=256, n_val=64, n_test=64, input_dim=8, groups=[2])
    dims = {t.name: t.out_dim for t in data.tasks}
    net = Supernet(build_space("shared_bottom", data.input_shape, dims))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, steps_per_epoch=2, threads=1)
    assert train(net, data, cfg).threads == 1
    assert train(net, data, dataclasses.replace(cfg, threads=0)).threads == 1  # a small step
    monkeypatch.setattr(threads, "FLOPS_PER_THREAD", 1.0)
    assert train(net, data, dataclasses.replace(cfg, threads=0)).threads == 2
    assert torch.get_num_threads() == 2


def test_a_resume_keeps_the_recorded_thread_count(two_threads, monkeypatch, tmp_path):
    data = load_dataset("synthetic", n_train=128, n_val=32, n_test=32, input_dim=8, groups=[2])
    dims = {t.name: t.out_dim for t in data.tasks}
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-3)

    def fit(resume: bool) -> int:
        net = Supernet(build_space("shared_bottom", data.input_shape, dims))
        return train(net, data, cfg, checkpoint_dir=tmp_path, resume=resume).threads

    assert fit(resume=False) == 1  # recorded in every epoch's checkpoint
    monkeypatch.setattr(threads, "FLOPS_PER_THREAD", 1.0)  # the rule would now pick 2
    assert fit(resume=True) == 1
    assert fit(resume=False) == 2


def test_threads_must_be_a_count():
    with pytest.raises(ConfigError, match=r"\[retrain\] threads"):
        parse_study(
            {
                "name": "s",
                "spaces": ["shared_bottom"],
                "data": {"name": "synthetic"},
                "retrain": {"threads": -1},
            }
        )
