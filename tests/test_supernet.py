"""The supernet computes the published models exactly, in both data regimes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_mtl.model.components import COMPONENTS
from nas_mtl.model.gates import HardConcreteGate
from nas_mtl.model.graph_files import from_json, to_json
from nas_mtl.model.spaces import available_spaces, build_space
from nas_mtl.model.supernet import Supernet
from tests.conftest import required_space_params

TASKS = {"a": 1, "b": 1, "c": 3, "d": 1}


def _net(space: str, tasks=TASKS, shape=(100,), **kw) -> Supernet:
    torch.manual_seed(0)
    kw = {**required_space_params(space, tasks), **kw}
    return Supernet(build_space(space, shape, tasks, **kw))


def _set_hard_concrete(net: Supernet, open_fn) -> None:
    """Force deterministic gates: log α = +20 gives ẑ = 1, −20 gives ẑ = 0 (docs/search.md)."""
    for block, gate in net.gate_modules():
        if isinstance(gate, HardConcreteGate):
            with torch.no_grad():
                for j, u in enumerate(block.src):
                    for c, v in enumerate(block.dst):
                        if gate.mask[j, c]:
                            gate.log_alpha[0, gate.index[j, c]] = 20.0 if open_fn(u, v) else -20.0


def _tower(block, c: int, h: torch.Tensor) -> torch.Tensor:
    towers = block.modules_[0]
    for layer in towers.hidden:
        h = torch.relu(h @ layer.weight[c] + layer.bias[c])
    return (h @ towers.out.weight[c] + towers.out.bias[c])[:, : towers.out_dims[c]]


def test_snr_trans_all_open_equals_shared_bottom():
    net = _net("snr_trans").eval()
    _set_hard_concrete(net, lambda u, v: True)
    b1, b2, bh = net.blocks
    x = torch.randn(32, 100)
    # hand-built Shared-Bottom: two dense layers with the concatenated W_ij, then towers
    dense1 = nn.Linear(100, 256)
    dense2 = nn.Linear(256, 256)
    with torch.no_grad():
        dense1.weight.copy_(b1.weight.reshape(100, 256).T)
        dense1.bias.copy_(b1.modules_[0].bias.reshape(256))
        dense2.weight.copy_(b2.weight.reshape(256, 256).T)
        dense2.bias.copy_(b2.modules_[0].bias.reshape(256))
    bottom = torch.relu(dense2(torch.relu(dense1(x))))
    out = net(x)
    for c, task in enumerate(TASKS):
        ref = _tower(bh, c, bottom @ bh.weight[:, c, :])
        torch.testing.assert_close(out[task], ref, rtol=1e-5, atol=1e-5)


def test_snr_trans_diagonal_equals_independent_networks():
    net = _net("snr_trans", subnetworks=4).eval()
    diag = {f"L{layer}.{i}": i for layer in (1, 2) for i in range(4)}
    tasks = list(TASKS)
    _set_hard_concrete(net, lambda u, v: diag[u] == (diag[v] if v in diag else tasks.index(v[5:])))
    b1, b2, bh = net.blocks
    x = torch.randn(16, 100)
    out = net(x)
    for t, task in enumerate(tasks):
        rows = slice(32 * t, 32 * (t + 1))
        h = torch.relu(x @ b1.weight[:, t, :] + b1.modules_[0].bias[t])
        h = torch.relu(h @ b2.weight[rows, t, :] + b2.modules_[0].bias[t])
        ref = _tower(bh, t, h @ bh.weight[rows, t, :])
        torch.testing.assert_close(out[task], ref, rtol=1e-5, atol=1e-5)


def test_snr_aver_all_open_is_sum_of_subnetworks():
    net = _net("snr_aver", subnetworks=3, width=8).eval()
    _set_hard_concrete(net, lambda u, v: True)
    b1, b2, bh = net.blocks
    x = torch.randn(8, 100)
    m1, m2 = b1.modules_[0].layers[0], b2.modules_[0].layers[0]
    u1 = [torch.relu(x @ m1.weight[i] + m1.bias[i]) for i in range(3)]
    v2 = sum(u1)
    u2 = [torch.relu(v2 @ m2.weight[i] + m2.bias[i]) for i in range(3)]
    out = net(x)
    for c, task in enumerate(TASKS):
        torch.testing.assert_close(out[task], _tower(bh, c, sum(u2)), rtol=1e-5, atol=1e-5)


def test_gumbel_all_on_equals_average_of_components():
    net = _net("gumbel_matrix", layers=1, components=3, width=8).eval()
    for _, gate in net.gate_modules():
        if gate.kind == "gumbel":
            with torch.no_grad():
                gate.logits[..., 0] = 5.0
                gate.logits[..., 1] = -5.0
    b1, bh = net.blocks
    x = torch.randn(8, 100)
    m = b1.modules_[0].layers[0]
    avg = sum(torch.relu(x @ m.weight[i] + m.bias[i]) for i in range(3)) / 3
    out = net(x)
    for c, task in enumerate(TASKS):
        torch.testing.assert_close(out[task], _tower(bh, c, avg), rtol=1e-5, atol=1e-5)


def test_gumbel_no_component_gives_zero_input():
    net = _net("gumbel_matrix", layers=1, components=2, width=8).eval()
    for _, gate in net.gate_modules():
        if gate.kind == "gumbel":
            with torch.no_grad():
                gate.logits[..., 0] = -5.0
    _, bh = net.blocks
    out = net(torch.randn(4, 100))
    for c, task in enumerate(TASKS):
        torch.testing.assert_close(out[task], _tower(bh, c, torch.zeros(4, 8)))


def test_shared_bottom_and_no_sharing_match_hand_built():
    x = torch.randn(8, 100)
    sb = _net("shared_bottom").eval()
    m = sb.blocks[0].modules_[0].layers[0]
    bottom = torch.relu(x @ m.weight[0] + m.bias[0])
    out = sb(x)
    for c, task in enumerate(TASKS):
        torch.testing.assert_close(out[task], _tower(sb.blocks[1], c, bottom))
    ns = _net("no_sharing").eval()
    m = ns.blocks[0].modules_[0].layers[0]
    out = ns(x)
    for c, task in enumerate(TASKS):
        own = torch.relu(x @ m.weight[c] + m.bias[c])
        torch.testing.assert_close(out[task], _tower(ns.blocks[1], c, own))


def test_mmoe_matches_formula():
    net = _net("mmoe").eval()
    b1, bh = net.blocks
    x = torch.randn(8, 100)
    m = b1.modules_[0].layers[0]
    experts = torch.stack([torch.relu(x @ m.weight[i] + m.bias[i]) for i in range(8)], 1)
    gate_logits = bh.gate.net(x).view(8, 4, 8)  # (B, task, expert)
    out = net(x)
    for c, task in enumerate(TASKS):
        g = gate_logits[:, c].softmax(-1)  # g_k(x) = softmax(W_gk x)
        mixed = (g.unsqueeze(-1) * experts).sum(1)
        torch.testing.assert_close(out[task], _tower(bh, c, mixed), rtol=1e-5, atol=1e-5)


SPACES = sorted(available_spaces())


@pytest.mark.parametrize("space", SPACES)
def test_per_task_input_equals_one_task_at_a_time(space):
    net = _net(space).eval()
    x = torch.randn(4, 6, 100)
    together = net(x, tasks=list(TASKS))
    for t, task in enumerate(TASKS):
        alone = net(x[t : t + 1], tasks=[task])[task]
        torch.testing.assert_close(together[task], alone, rtol=1e-5, atol=1e-5)
        shared = net(x[t])[task]  # the same rows as a shared batch
        torch.testing.assert_close(together[task], shared, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space", SPACES)
def test_gradients_reach_every_parameter(space):
    net = _net(space).train()
    x, params = torch.randn(64, 100), list(net.parameters())
    for _ in range(4):  # hard-concrete z can clamp at 1 (zero grad) in one draw, not in four
        out = net(x)
        loss = sum(o.pow(2).mean() for o in out.values())
        loss = loss + sum(net.penalties().values(), torch.zeros(()))
        loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert len(params) == len(net.arch_parameters()) + len(net.weight_parameters())


@pytest.mark.parametrize("space", ["gumbel_matrix", "shared_bottom", "no_sharing"])
def test_image_spaces_run_on_both_regimes(space):
    net = _net(space, tasks={"x": 5, "y": 7}, shape=(1, 28, 28)).eval()
    x = torch.randn(2, 3, 1, 28, 28)
    out = net(x, tasks=["x", "y"])
    assert out["x"].shape == (3, 5) and out["y"].shape == (3, 7)
    torch.testing.assert_close(net(x[1:], tasks=["y"])["y"], out["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space", SPACES)
def test_json_round_trip_rebuilds_the_same_model(space):
    g = build_space(space, (100,), TASKS, **required_space_params(space, TASKS))
    back = from_json(to_json(g))
    assert dict(back.graph) == dict(g.graph)
    assert list(back.nodes(data=True)) == list(g.nodes(data=True))
    assert list(back.edges(data=True)) == list(g.edges(data=True))
    a, b = Supernet(g).eval(), Supernet(back).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 100)
    for task, y in a(x).items():
        torch.testing.assert_close(b(x)[task], y)


def test_wrong_input_shape_is_a_clear_error():
    net = _net("mmoe")
    with pytest.raises(Exception, match=r"expected input \(B, \(100,\)\)"):
        net(torch.randn(2, 3, 4, 100))


def test_component_registry_has_image_kinds():
    for kind in (
        "mlp",
        "conv3x3",
        "conv5x5",
        "conv1x7_7x1",
        "maxpool3x3",
        "avgpool3x3",
        "identity",
    ):
        assert kind in COMPONENTS


def test_source_runs_gather_as_columns_do():
    """A pruned model reads its sources as runs of consecutive columns: same outputs and
    gradients as one slice per column, with fewer slices (each costs a zero fill in backward)."""
    from nas_mtl.stages.derive import derive, sampled_decisions
    from nas_mtl.stages.retrain import build_model

    torch.manual_seed(0)
    tasks = {"a": 1, "b": 1, "c": 1}
    net = Supernet(build_space("gumbel_matrix", (6,), tasks, width=4))
    arch = derive(net, sampled_decisions(net, torch.Generator().manual_seed(1), 0.5))
    model = build_model(arch, seed=0)
    runs = model._src_plan
    columns = [[(p, k, k + 1) for p, lo, hi in plan for k in range(lo, hi)] for plan in runs]
    assert sum(map(len, runs)) < sum(map(len, columns))
    x = torch.randn(5, 6)
    grads = []
    for plan in (runs, columns):
        model._src_plan = plan
        model.zero_grad()
        out = model(x)
        sum(o.sum() for o in out.values()).backward()
        grads.append((out, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    for t in tasks:
        torch.testing.assert_close(grads[0][0][t], grads[1][0][t])
    for g0, g1 in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(g0, g1)


@pytest.mark.parametrize(
    ("s_u", "s_g"), [(1, 1), (3, 1), (1, 4)], ids=["shared", "static-streams", "per-stream"]
)
def test_component_major_mix_matches_the_formula(s_u, s_g):
    """v_{s,b,c} = Σ_j g_{s,j,c} u_{s,b,j} for the mixes laid out component-major, values and
    gradients, also when U arrives J-major (as component outputs do)."""
    net = _net("gumbel_matrix", components=5, width=6)
    block = net.blocks[1]  # identity edges, per-task Gumbel gates
    J, C = block.gate.mask.shape
    G = torch.rand(s_g, 1, J, C, requires_grad=True)
    for j_major in (False, True):
        U0 = torch.randn(J, s_u, 7, 6) if j_major else torch.randn(s_u, 7, J, 6)
        U0.requires_grad_(True)
        U = U0.permute(1, 2, 0, 3) if j_major else U0
        got = block.mix(U, G, None)
        want = torch.einsum("sbjc,sbjf->sbcf", G, U)
        torch.testing.assert_close(got, want.expand_as(got))
        w = torch.randn_like(got)
        g_got = torch.autograd.grad((got * w).sum(), (U0, G))
        g_want = torch.autograd.grad((want.expand_as(got) * w).sum(), (U0, G))
        for a, b in zip(g_got, g_want, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("s_u", [1, 4])
def test_heads_mix_only_their_own_stream(s_u):
    """Heads of per-task streams: mix_streams equals the full mix read on each head's stream."""
    net = _net("gumbel_matrix", components=5, width=6)
    heads = net.blocks[-1]
    J, C = heads.gate.mask.shape
    U = torch.randn(s_u, 3, J, 6)
    G = torch.rand(4, 1, J, C)
    full = torch.einsum("sbjc,sbjf->sbcf", G, U)  # (4, B, C, F)
    for cols, streams in (([0, 1, 2, 3], [0, 1, 2, 3]), ([3, 1], [3, 1]), ([2], [0])):
        got = heads.mix_streams(U, G, cols, streams)
        want = torch.stack([full[s, :, c] for c, s in zip(cols, streams, strict=True)], 1)
        torch.testing.assert_close(got, want)


def test_heads_stream_mix_gradients_keep_the_components_layout():
    """With per-task streams (U arriving source-major, as components leave it), mix_streams'
    gradients equal the formula's, and U's gradient is source-major too: the components'
    backward then needs no copy (docs/speed.md, "Component-major mixing")."""
    net = _net("gumbel_matrix", components=5, width=6)
    heads = net.blocks[-1]
    J, C = heads.gate.mask.shape
    U0 = torch.randn(J, 4, 3, 6, requires_grad=True)  # (J, S, B, F) in memory
    U = U0.permute(1, 2, 0, 3)  # (S, B, J, F), a view
    G = torch.rand(4, 1, J, C, requires_grad=True)
    for cols, streams in (([0, 1, 2, 3], [0, 1, 2, 3]), ([3, 1], [3, 1])):
        got = heads.mix_streams(U, G, cols, streams)
        full = torch.einsum("sbjc,sbjf->sbcf", G, U)
        want = torch.stack([full[s, :, c] for c, s in zip(cols, streams, strict=True)], 1)
        w = torch.randn_like(got)
        g_got = torch.autograd.grad((got * w).sum(), (U0, G))
        g_want = torch.autograd.grad((want * w).sum(), (U0, G))
        for a, b in zip(g_got, g_want, strict=True):
            torch.testing.assert_close(a, b)
    seen = []
    U = U0.permute(1, 2, 0, 3)
    U.register_hook(lambda g: seen.append(g.stride()))
    heads.mix_streams(U, G, [0, 1, 2, 3], [0, 1, 2, 3]).sum().backward()
    assert seen == [U.stride()]  # source-major, like U itself
