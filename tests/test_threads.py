"""The training's CPU thread count: candidates, the measured choice, restoring, equal math."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import load_dataset
from nas_mtl.errors import ConfigError
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages import threads
from nas_mtl.stages.threads import fastest_threads, thread_candidates, training_threads
from nas_mtl.stages.training import TrainConfig, train
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
    with training_threads(1, torch.device("cpu"), lambda: lambda: None, "t", 10**6) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(KeyError):
        with training_threads(1, torch.device("cpu"), lambda: lambda: None, "t", 10**6):
            raise KeyError("boom")
    assert torch.get_num_threads() == 2


def test_measured_choice_leaves_the_rng_alone(two_threads):
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)

    def make_step():
        return lambda: torch.rand(100)  # consumes the global RNG, as gate sampling does

    with training_threads(0, torch.device("cpu"), make_step, "t", 10**6) as n:
        assert n in (1, 2)
        assert torch.equal(torch.rand(3), expected)


def test_a_short_training_keeps_the_count_without_measuring(two_threads):
    def make_step():
        raise AssertionError("measured a training too short to pay for it")

    with training_threads(0, torch.device("cpu"), make_step, "t", 5) as n:
        assert n == 2


@pytest.mark.parametrize("space", ["snr_trans", "snr_aver", "gumbel_matrix", "mmoe"])
def test_gradients_do_not_depend_on_the_thread_count(space, two_threads):
    """What lets the choice be made by timing: the same gradients, bit for bit."""
    grads = []
    for n in (1, 2):
        torch.set_num_threads(n)
        torch.manual_seed(0)
        net = Supernet(build_space(space, (20,), {f"t{i}": 1 for i in range(3)}))
        x = torch.randn(4096, 20)  # above ATen's grain size: the ops run split over threads
        sum(o.square().mean() for o in net(x).values()).backward()
        grads.append([p.grad.clone() for p in net.parameters() if p.grad is not None])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_train_reports_its_threads_and_restores_the_count(two_threads):
    data = load_dataset("synthetic", n_train=256, n_val=64, n_test=64, input_dim=8, groups=[2])
    dims = {t.name: t.out_dim for t in data.tasks}
    net = Supernet(build_space("shared_bottom", data.input_shape, dims))
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, steps_per_epoch=2, threads=1)
    assert train(net, data, cfg).threads == 1
    # long enough to measure: 25 epochs x 8 steps = 200 >= 10 x 20 probe steps
    fit = train(net, data, TrainConfig(epochs=25, batch_size=32, lr=1e-3, patience=100))
    assert fit.threads in (1, 2) and len(fit.history) == 25
    assert torch.get_num_threads() == 2


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
