"""The training hot path (docs/speed.md): host reads per step, per-example noise, batches, compile.

On a GPU every read of a device value by the host (``.item()``, ``float(t)``, ``if t:``,
``.tolist()``, ``.cpu()``, ``torch.equal``) and every tensor built from host data
(``torch.tensor(..., device=...)``) waits for the device. The rule is at most one such sync
per training step; here it is enforced without a GPU by counting those calls when they come
from nas_mtl code: the count must not grow with the number of steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo  # imported before host_reads() wraps torch.tensor: dynamo keeps references

from nas_mtl.data import load_dataset, per_task_batches, shared_batches
from nas_mtl.errors import ConfigError, TrainingError
from nas_mtl.model.gates import GateContext
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages import training
from nas_mtl.stages.batches import place_split, train_batches
from nas_mtl.stages.derive import derive
from nas_mtl.stages.evaluation import compile_model, configure_device, full_precision
from nas_mtl.stages.retrain import retrain
from nas_mtl.stages.search import search
from nas_mtl.stages.training import train_config
from nas_mtl.study import RetrainConfig, SearchConfig, parse_study

# ---------------------------------------------------------------- counting host reads
_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


def _from_package(depth: int = 2) -> bool:
    """Whether the caller ``depth`` frames up is nas_mtl code (torch's own reads are not ours)."""
    return sys._getframe(depth).f_globals.get("__name__", "").startswith("nas_mtl")


@contextlib.contextmanager
def host_reads() -> Iterator[Counter]:
    """Count, by kind, host reads of tensors and host-to-device tensor builds made by nas_mtl.

    Per-epoch work (validation, the search's epoch verdict) is left out: it runs inside
    ``training._judge``, during which counting pauses. What remains is the step loop and the
    epoch's bookkeeping.
    """
    counts: Counter = Counter()
    paused = [0]
    undo: list[Callable[[], None]] = []

    def patch(owner: Any, name: str, label: str, when: Callable[..., bool] | None = None) -> None:
        own = name in vars(owner)
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if not paused[0] and _from_package() and (when is None or when(*args, **kwargs)):
                counts[label] += 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)
        undo.append(lambda: setattr(owner, name, original) if own else delattr(owner, name))

    for name in _READS:
        patch(torch.Tensor, name, name)
    patch(torch, "equal", "torch.equal")
    patch(torch, "nonzero", "torch.nonzero")
    patch(torch.Tensor, "nonzero", "nonzero")
    to_device = lambda *a, **k: k.get("device") is not None  # noqa: E731
    patch(torch, "tensor", "torch.tensor(device=)", to_device)
    patch(torch, "as_tensor", "torch.as_tensor(device=)", to_device)
    judge = training._judge

    def judged(*args: Any, **kwargs: Any) -> Any:
        paused[0] += 1
        try:
            return judge(*args, **kwargs)
        finally:
            paused[0] -= 1

    training._judge = judged
    try:
        yield counts
    finally:
        training._judge = judge
        for restore in reversed(undo):
            restore()


EPOCHS, STEPS = 2, 3


def rates(run: Callable[[int, int], Counter]) -> tuple[float, float, Counter]:
    """Host reads per step and per epoch of ``run(epochs, steps_per_epoch)``, and one count.

    Two more epochs, or three times the steps, add exactly what an epoch or a step reads; the
    one-time reads of setting up (graph bookkeeping on CPU tensors) cancel out.
    """
    base = run(EPOCHS, STEPS)
    longer = run(EPOCHS, 3 * STEPS)
    more = run(2 * EPOCHS, STEPS)
    per_step = (sum(longer.values()) - sum(base.values())) / (EPOCHS * 2 * STEPS)
    per_epoch = (sum(more.values()) - sum(base.values())) / EPOCHS
    return per_step, per_epoch, base


@pytest.fixture(scope="module")
def per_task():
    return load_dataset(
        "synthetic", inputs="per_task", n_train=48, n_val=24, n_test=24, input_dim=6, groups=[2, 1]
    )


def _supernet(data, space: str, **params: Any) -> Supernet:
    torch.manual_seed(0)
    out_dims = {t.name: t.out_dim for t in data.tasks}
    return Supernet(build_space(space, data.input_shape, out_dims, **params), data.regime)


SPACES = {
    "gumbel_matrix": {"components": 3, "width": 4},
    "snr_trans": {"subnetworks": 2, "width": 4},
}


def _searching(data, space: str, **cfg: Any) -> Callable[[int, int], Counter]:
    def run(epochs: int, steps: int) -> Counter:
        settings = {"epochs": epochs, "batch_size": 8, "steps_per_epoch": steps}
        net = _supernet(data, space, **SPACES[space])
        with host_reads() as counts:
            search(net, data, SearchConfig(**{"affinity_every": 0, **settings, **cfg}))
        return counts

    return run


@pytest.mark.parametrize("space", sorted(SPACES))
def test_search_reads_the_host_once_per_epoch_and_never_per_step(per_task, space):
    per_step, per_epoch, counts = rates(_searching(per_task, space))
    assert per_step == 0 and per_epoch <= 1, (per_step, per_epoch, counts)


def test_alternation_and_a_macs_target_read_nothing_per_step(per_task):
    run = _searching(per_task, "snr_trans", alternate=True, target_macs=400.0)
    per_step, per_epoch, counts = rates(run)
    assert per_step == 0 and per_epoch <= 1, (per_step, per_epoch, counts)


def test_the_affinity_probe_reads_the_host_once_per_measurement(per_task):
    per_step, per_epoch, counts = rates(_searching(per_task, "gumbel_matrix", affinity_every=3))
    assert per_step == 1 / 3 and per_epoch <= 1 + 1, (per_step, per_epoch, counts)


def test_retrain_reads_the_host_once_per_epoch_and_never_per_step(per_task):
    arch = derive(_supernet(per_task, "gumbel_matrix", **SPACES["gumbel_matrix"]))

    def run(epochs: int, steps: int) -> Counter:
        cfg = RetrainConfig(epochs=epochs, batch_size=8, steps_per_epoch=steps, patience=epochs)
        with host_reads() as counts:
            retrain(arch, per_task, cfg)
        return counts

    per_step, per_epoch, counts = rates(run)
    assert per_step == 0 and per_epoch <= 1, (per_step, per_epoch, counts)


@pytest.fixture(scope="module")
def shared():
    return load_dataset("synthetic", n_train=48, n_val=24, n_test=24, input_dim=6, groups=[2])


def test_shared_inputs_search_with_per_example_noise_reads_nothing_per_step(shared):
    sized = {n: shared_rows(shared, n) for n in (STEPS, 3 * STEPS)}

    def run(epochs: int, steps: int) -> Counter:
        data = sized[steps]
        net = _supernet(data, "snr_trans", noise="example", **SPACES["snr_trans"])
        cfg = SearchConfig(epochs=epochs, batch_size=8, affinity_every=0)
        with host_reads() as counts:
            search(net, data, cfg)
        return counts

    per_step, per_epoch, counts = rates(run)
    assert per_step == 0 and per_epoch <= 1, (per_step, per_epoch, counts)


def shared_rows(data, steps: int, batch: int = 8):
    """``data`` with ``steps * batch`` training rows: ``steps`` steps of shared inputs."""
    rows = steps * batch
    train = type(data.train)(data.train.x[:rows], data.train.y[:rows])
    return dataclasses.replace(data, train=train)


# ---------------------------------------------------------------- what the loop reads, once
def test_a_diverging_loss_fails_at_the_end_of_its_epoch_naming_it(shared):
    arch = derive(_supernet(shared, "snr_trans", **SPACES["snr_trans"]))
    with pytest.raises(TrainingError, match=r"retrain epoch 0: the loss became (nan|inf)"):
        retrain(arch, shared, RetrainConfig(epochs=2, batch_size=8, lr=1e30))


def test_train_loss_is_the_mean_of_the_steps_losses(shared):
    """The device-side sums give what summing Python floats per step gave."""
    arch = derive(_supernet(shared, "snr_trans", **SPACES["snr_trans"]))
    seen: list[dict[str, float]] = []
    original = training.task_losses

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = original(*args, **kwargs)
        seen.append({k: float(v.detach()) for k, v in out.items()})
        return out

    training.task_losses = spy
    try:
        # threads fixed: the thread rule's FLOP count would be one more forward pass
        fit = retrain(arch, shared, RetrainConfig(epochs=1, batch_size=8, threads=1)).fit
    finally:
        training.task_losses = original
    for name, value in fit.history[0]["train_loss"].items():
        total = 0.0
        for step in seen:
            total += step[name]
        assert value == total / len(seen)


# ---------------------------------------------------------------- per-example noise
def _per_example_weights(block, U, G, W):
    """The formulation the block replaced: a per-example weight tensor (S, B, Σd, C, d_out)."""
    S, B = U.shape[:2]
    P = torch.einsum("sbr,rce->sbrce", U.reshape(S, B, -1), W)
    return (P * G[..., block.row_src, :].unsqueeze(-1)).sum(2)


def _linear_learned_blocks(net):
    return [b for b in net.blocks if b.linear and b.gate.learned]


@pytest.mark.parametrize(
    ("streams", "gate_streams", "heads"),
    [(1, 1, None), (3, 1, None), (1, 3, None), (3, 3, None), (1, 1, [2, 0])],
)
@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_mix_equals_the_per_example_weight_formulation(
    streams, gate_streams, heads, uniform
):
    """Forward and gradients (inputs, weights, log α) of v_c = Σ_j g_bjc W_jc u_bj agree."""
    out_dims = {"a": 1, "b": 2, "c": 1}
    g = build_space("snr_trans", (5,), out_dims, subnetworks=3, width=4, noise="example")
    net = Supernet(g).train()
    for block in _linear_learned_blocks(net):
        block.uniform_src = uniform  # False: the general path for sources of unequal widths
        C = len(block.dst)
        cols = None if heads is None or not block.is_head else torch.tensor(heads)
        B, J, d = 7, len(block.src), block.weight.shape[0] // len(block.src)
        U = torch.randn(streams, B, J, d, requires_grad=True)
        ctx = GateContext(torch.arange(gate_streams), x_flat=torch.randn(gate_streams, B, 5))
        G = block.gate(ctx).expand(gate_streams, B, J, C)  # (S_g, B, J, C), per example
        assert G.shape[1] == B
        W = block.weight if cols is None else block.weight.index_select(1, cols)
        Gc = G if cols is None else G.index_select(-1, cols)
        new = block.mix(U, G, cols)
        old = _per_example_weights(block, U, Gc, W)
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
        R = torch.randn_like(old)
        params = [U, block.weight, block.gate.log_alpha]
        for a, b in zip(
            torch.autograd.grad((new * R).sum(), params, retain_graph=True),
            torch.autograd.grad((old * R).sum(), params),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- batches
def test_shared_train_batches_are_the_data_modules_batches(shared):
    ours = list(train_batches(shared, shared.train, 10, None, torch.Generator().manual_seed(3)))
    gen = torch.Generator().manual_seed(3)
    theirs = list(shared_batches(shared.train, 10, shuffle=True, generator=gen))
    assert len(ours) == len(theirs) == 5
    for (x, y), (x2, y2) in zip(ours, theirs, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize("batch", [4, 10, 30])  # 30: a task smaller than a batch, with replacement
def test_per_task_train_batches_are_the_data_modules_batches(batch):
    data = load_dataset(
        "synthetic", inputs="per_task", n_train=24, n_val=4, n_test=4, input_dim=3, groups=[2]
    )
    small = type(data.train)(
        (data.train.x[0], data.train.x[1][:9]), (data.train.y[0], data.train.y[1][:9])
    )
    data = dataclasses.replace(data, train=small)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ours = list(train_batches(data, small, batch, 11, a))  # 11 steps: several reshuffles
    theirs = list(per_task_batches(small, batch, steps=11, generator=b))
    assert len(ours) == len(theirs) == 11
    for (x, y), (x2, y2) in zip(ours, theirs, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(a.get_state(), b.get_state())  # the same draws, so resuming matches


def test_the_split_stays_where_it_is_off_cuda(shared):
    assert place_split(shared.train, torch.device("cpu")) is shared.train


# ---------------------------------------------------------------- device settings
def _flags() -> tuple[bool, bool, bool]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )


def test_tf32_and_cudnn_autotuning_are_set_for_cuda_only():
    before = _flags()
    try:
        configure_device(torch.device("cpu"))
        assert _flags() == before
        configure_device(torch.device("cuda"))  # flags only: no GPU is touched
        assert _flags() == (True, True, True)
        with full_precision(torch.device("cuda")):
            assert _flags()[:2] == (False, False)
        assert _flags() == (True, True, True)
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = before


STUDY = """
name = "t"
spaces = ["snr_trans"]
[data]
name = "synthetic"
[search]
{search}
[retrain]
{retrain}
"""


def test_amp_and_compile_are_study_settings():
    default = parse_study(tomllib.loads(STUDY.format(search="", retrain="")))
    assert (default.search.amp, default.search.compile, default.retrain.compile) == (
        True,
        False,
        False,
    )
    study = parse_study(
        tomllib.loads(STUDY.format(search="amp = false\ncompile = true", retrain="compile = true"))
    )
    assert (study.search.amp, study.search.compile, study.retrain.compile) == (False, True, True)
    assert train_config(study.search, lr=1.0).compile
    assert train_config(study.retrain, lr=1.0).compile


# ---------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("space", ["gumbel_matrix", "snr_trans", "mmoe"])
def test_the_supernet_forward_traces_as_one_graph(space):
    """torch.compile sees the whole forward: nothing in it reads the routing graph (networkx)
    or otherwise breaks the trace, so compiled kernels can fuse across blocks."""
    net = Supernet(build_space(space, (6,), {"a": 1, "b": 1, "c": 2}))
    explained = torch._dynamo.explain(net)(torch.randn(5, 6))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_compile_says_so_when_this_torch_cannot(monkeypatch):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(ConfigError, match=r"\[search\]: compile = true, but torch.compile is not"):
        compile_model(torch.nn.Linear(2, 2), "[search]")


def test_a_compiler_failure_is_a_config_error_naming_the_setting(monkeypatch):
    def broken(model: Any) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            raise torch._dynamo.exc.BackendCompilerFailed(
                "inductor", RuntimeError("no C++ compiler"), None
            )

        return run

    monkeypatch.setattr(torch, "compile", broken)
    forward = compile_model(torch.nn.Linear(2, 2), "[retrain]")
    with pytest.raises(ConfigError, match=r"\[retrain\]: compile = true, but .*no C\+\+ compiler"):
        forward(torch.ones(1, 2))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, inside torch.compile
def test_compiled_search_and_retrain_train_a_tiny_study_to_the_same_shaped_results(shared):
    """torch.compile works on this CPU build (Inductor); results match in shape, not bits
    (compiled kernels draw their own noise and fuse float operations)."""
    runs = []
    for compiled in (False, True):
        net = _supernet(shared, "snr_trans", **SPACES["snr_trans"])
        cfg = SearchConfig(epochs=2, batch_size=16, affinity_every=0, compile=compiled)
        found = search(net, shared, cfg)
        fit = retrain(
            derive(found.supernet), shared, RetrainConfig(epochs=2, batch_size=16, compile=compiled)
        )
        runs.append((found, fit))
    (eager, eager_fit), (comp, comp_fit) = runs
    assert len(comp.history) == len(eager.history) == 2
    assert comp.history[-1].keys() == eager.history[-1].keys()
    assert comp_fit.test.metrics.keys() == eager_fit.test.metrics.keys()
    for h, h2 in zip(comp.history, eager.history, strict=True):
        assert math.isfinite(h["val_objective"])
        assert h["val_objective"] == pytest.approx(h2["val_objective"], rel=0.05)


# ---------------------------------------------------------------- the benchmarks' output
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "headline"),
    [("noise_speed", "example_vs_batch_noise"), ("gpu_speed", "gpu_syncs_per_step_max")],
)
def test_speed_benchmarks_smoke_write_their_json(tmp_path, name, headline):
    """``--smoke`` runs on CPU in seconds; the file has the benchmarks' four keys."""
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    subprocess.run(
        [sys.executable, str(bench), "--smoke", "--out", str(tmp_path)], check=True, timeout=300
    )
    doc = json.loads((tmp_path / f"{name}.json").read_text())
    assert doc["benchmark"] == name and doc["settings"]["mode"] == "smoke"
    assert {"threads", "omp_wait_policy", "torch", "platform", "device"} <= set(doc["settings"])
    assert doc["rows"] and all({"space", "steps_per_s"} <= set(r) for r in doc["rows"])
    value = doc["headline"][headline]
    if name == "gpu_speed" and not torch.cuda.is_available():
        assert value is None  # host syncs are counted on CUDA only
    else:
        assert value > 0


def test_index_tensors_built_while_tracing_are_not_kept(shared):
    """torch.export (and torch.compile) trace with fake tensors: none may stay in the cache."""

    class AllTasks(torch.nn.Module):
        def __init__(self, net: Supernet) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return self.net(x, list(self.net.tasks))

    net = _supernet(shared, "snr_trans", **SPACES["snr_trans"]).eval()
    x = shared.train.x[:5]
    program = torch.export.export(AllTasks(net), (x,))
    assert not net._index._tensors
    want = net(x)
    assert all(type(t) is torch.Tensor for t in net._index._tensors.values())
    got = program.module()(x)
    for task in want:
        torch.testing.assert_close(got[task], want[task])
