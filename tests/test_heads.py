"""Every head starts at its task's constant prediction (nas_mtl/stages/heads.py), and a result
is judged against that constant with a 1% band (nas_mtl/results.py)."""

from __future__ import annotations

import pytest
import torch

from nas_mtl.data import MultiTaskData, SharedSplit
from nas_mtl.model.spaces import build_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.results import CONSTANT_BAND, constant_warning, judge
from nas_mtl.stages.evaluation import constant_objective, evaluate
from nas_mtl.stages.heads import start_at_constant
from nas_mtl.tasks import TaskSpec

TASKS = (
    TaskSpec("price", "regression"),
    TaskSpec("click", "binary"),
    TaskSpec("kind", "multiclass", n_classes=3),
)


def _data(n: int = 400, offset: float = 1000.0, seed: int = 0) -> MultiTaskData:
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> SharedSplit:
        x = torch.randn(m, 6, generator=g)
        price = offset + 50.0 * x[:, 0] + torch.randn(m, generator=g)
        click = (torch.rand(m, generator=g) < 0.1).float()  # a rare positive class
        kind = torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), m, True, generator=g).float()
        return SharedSplit(x, torch.stack([price, click, kind], dim=1))

    return MultiTaskData("toy", TASKS, (6,), split(n), split(n), split(n))


@pytest.mark.parametrize("space", ["shared_bottom", "no_sharing", "mmoe", "snr_trans"])
def test_the_first_prediction_is_the_constant_plus_the_usual_random_part(space):
    data = _data()
    torch.manual_seed(0)
    net = Supernet(build_space(space, data.input_shape, {t.name: t.out_dim for t in TASKS}))
    start_at_constant(net, data)
    with torch.no_grad():
        out = net.eval()(data.train.x)
    y = data.train.y
    assert out["price"].mean().item() == pytest.approx(y[:, 0].mean().item(), abs=1.0)
    p = y[:, 1].mean()
    assert out["click"].mean().item() == pytest.approx(torch.log(p / (1 - p)).item(), abs=0.1)
    counts = torch.bincount(y[:, 2].long(), minlength=3).double() + 1
    priors = torch.log_softmax(out["kind"].double(), dim=1).exp().mean(0)
    torch.testing.assert_close(priors, counts / counts.sum(), atol=0.05, rtol=0)
    # within 1% of the constant's loss before any step, in the labels' own units (mean 1000)
    loss = evaluate(net, data, data.val, torch.device("cpu"), False).loss(TASKS)
    assert loss <= constant_objective(data) * (1 + CONSTANT_BAND)


def test_padded_output_columns_stay_zero():
    data = _data()
    torch.manual_seed(0)
    net = Supernet(build_space("no_sharing", data.input_shape, {t.name: t.out_dim for t in TASKS}))
    start_at_constant(net, data)
    for block in net.blocks:
        if block.is_head:
            for towers in block.modules_:
                for k, d in enumerate(towers.out_dims):
                    assert not towers.out.weight[k, :, d:].any()
                    assert not towers.out.bias[k, d:].any()


def test_judge_fails_only_above_the_band_and_warns_inside_it():
    data = _data()
    constant = constant_objective(data)
    scores = {t.name: {"val": 1.0, "test": 1.0, "metric": t.primary_metric} for t in TASKS}
    assert judge(data, scores, constant * 0.5) is None
    assert judge(data, scores, constant * (1 + CONSTANT_BAND / 2)) is None
    assert "worse than a constant prediction" in judge(data, scores, constant * 1.02)
    assert "worse than a constant" in judge(data, scores, float("nan"))
    assert constant_warning(data, constant * 0.5) is None
    assert "learned little" in constant_warning(data, constant * 1.001)
    assert "learned little" in constant_warning(data, constant * 0.995)
    assert constant_warning(data, constant * 1.02) is None  # a failure, not a warning


ONE_STEP = """name = "one_step"
spaces = ["no_sharing", "shared_bottom", "mmoe", "snr_trans", "gumbel_matrix"]
seeds = [0]
{data}
[search]
epochs = 1
batch_size = 1024

[retrain]
epochs = 1
batch_size = 1024
"""


@pytest.mark.parametrize("source", ["synthetic", "csv"])
def test_one_step_runs_report_without_failing_against_the_constant(tmp_path, capsys, source):
    """One epoch of one step (batch_size > rows), built-in data and a CSV of labels near 1000."""
    from nas_mtl.cli import main

    if source == "synthetic":
        data = '[data]\nname = "synthetic"\nparams = { n_train = 200, n_val = 100, n_test = 100 }'
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(300, 3, generator=g)
        y = 1000 + 5 * x[:, 0] + x[:, 1] ** 2 + 0.1 * torch.randn(300, generator=g)
        rows = "".join(
            f"{a:.4f},{b:.4f},{c:.4f},{t:.4f}\n" for (a, b, c), t in zip(x, y, strict=True)
        )
        (tmp_path / "t.csv").write_text("x1,x2,x3,y\n" + rows)
        data = '[data]\nfile = "t.csv"\ntasks = [{ name = "y" }, { name = "y2", column = "y" }]'
    study = tmp_path / "s.toml"
    study.write_text(ONE_STEP.format(data=data))
    assert main(["run", str(study), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "worse than a constant" not in out
