"""Serving: the packed model equals the pruned model; export, preprocessing and predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.cli import main
from nas_mtl.data import load_dataset, load_per_task_table, load_table
from nas_mtl.model.gates import HardConcreteGate
from nas_mtl.model.graph_files import save_architecture
from nas_mtl.model.spaces import available_spaces, build_space, load_space
from nas_mtl.model.supernet import Supernet
from nas_mtl.serving import NotPackable, PackedModel, ServedAsIs, pack, serving_model
from nas_mtl.serving.export import export_program
from nas_mtl.serving.layout import WAKE_US, Cost
from nas_mtl.serving.preprocessing import read_preprocessing, write_preprocessing
from nas_mtl.stages.checkpoint import save_atomic
from nas_mtl.stages.derive import derive, sampled_decisions
from nas_mtl.stages.retrain import build_model
from nas_mtl.tasks import TaskSpec
from tests.conftest import required_space_params

TASKS = {"a": 1, "b": 1, "c": 3, "d": 1}
# every registered space that builds on tabular input (all of them today)
VECTOR_SPACES = [
    s
    for s in available_spaces()
    if any(e.get("when", "any") != "image" for e in load_space(s).raw.get("layers", [{}]))
]


def _derived(space: str, seed: int, rate: float, regime: str = "shared", dim: int = 10):
    """A retrained-like pruned model: random fixed gates, derived, weights jittered."""
    torch.manual_seed(seed)
    g = build_space(space, (dim,), TASKS, **required_space_params(space, TASKS))
    net = Supernet(g)
    arch = derive(net, sampled_decisions(net, torch.Generator().manual_seed(seed), rate))
    model = build_model(arch, seed, regime).eval()
    with torch.no_grad():  # nonzero biases everywhere
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _assert_same(ref: dict, got: dict) -> None:
    assert list(got) == list(ref)
    for t in ref:
        torch.testing.assert_close(got[t], ref[t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space", VECTOR_SPACES)
@pytest.mark.parametrize("regime", ["shared", "per_task"])
def test_packed_model_equals_the_pruned_model_on_every_space(space, regime):
    for seed, rate in ((0, 0.3), (1, 0.7)):
        model = _derived(space, seed, rate, regime)
        x = torch.randn(7, 10)
        with torch.no_grad():
            _assert_same(model(x), pack(model)(x))
            subset = ["c", "a"]  # some tasks, in another order: only their steps are kept
            _assert_same(model(x, subset), pack(model, subset)(x))
            xs = torch.randn(4, 5, 10)  # per-task inputs: each task its own rows
            _assert_same(model(xs, list(TASKS)), pack(model, per_task_inputs=True)(xs))


def test_fractional_fixed_gates_fold_into_the_weights():
    """SNR's ẑ and Gumbel-Matrix's 1/k averaging are constants folded into the matrices."""
    torch.manual_seed(0)
    for space in ("snr_trans", "snr_aver", "custom_dag"):
        net = Supernet(build_space(space, (10,), TASKS)).eval()
        for _, gate in net.gate_modules():
            if isinstance(gate, HardConcreteGate):
                with torch.no_grad():  # ẑ strictly between 0 and 1, some exactly 0
                    gate.log_alpha.copy_(torch.randn_like(gate.log_alpha) * 2)
        x = torch.randn(6, 10)
        with torch.no_grad():
            _assert_same(net(x), pack(net)(x))
    model = _derived("gumbel_matrix", 3, 0.6)
    values = [v for blk in model.blocks for v in blk.gate.values.unique().tolist() if 0 < v < 1]
    assert values, "some Gumbel-Matrix destination averages several components"
    x = torch.randn(6, 10)
    with torch.no_grad():
        _assert_same(model(x), pack(model)(x))


@settings(max_examples=12, deadline=None)
@given(
    space=st.sampled_from(["snr_trans", "snr_aver", "gumbel_matrix", "no_sharing", "mmoe"]),
    seed=st.integers(0, 10_000),
    rate=st.floats(0.1, 0.9),
    batch=st.integers(1, 9),
    hint=st.sampled_from([1, 64, 4096]),
)
def test_property_packed_outputs_match_for_any_architecture(space, seed, rate, batch, hint):
    model = _derived(space, seed, rate)
    x = torch.randn(batch, 10)
    with torch.no_grad():
        _assert_same(model(x), pack(model, batch_hint=hint)(x))


def test_batch_hint_changes_the_layout_not_the_outputs():
    model = _derived("snr_aver", 0, 0.7)
    small, large = pack(model, batch_hint=1), pack(model, batch_hint=4096)
    assert "block 1: fold" in small.choices and "block 1: mix" in large.choices
    x = torch.randn(5, 10)
    with torch.no_grad():
        _assert_same(small(x), large(x))
    with pytest.raises(Exception, match="batch_hint must be an integer >= 1"):
        pack(model, batch_hint=0)


def test_planner_counts_a_thread_wake_up_per_batched_matmul():
    """Under 2 threads ATen splits a batched matmul over sleeping workers (~10 µs to wake
    them), so at batch 1 the one-call fold beats the mix's two batched calls; one thread
    keeps the mix. Outputs are the same either way."""
    assert Cost(macs=10, calls=2, batched=2).time(1, 2) - Cost(macs=10, calls=2, batched=2).time(
        1, 1
    ) == pytest.approx(2 * WAKE_US)
    model = _derived("gumbel_matrix", 0, 0.7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pack(model, batch_hint=1)
        torch.set_num_threads(2)
        two = pack(model, batch_hint=1)
    finally:
        torch.set_num_threads(before)
    assert "block 1: mix" in one.choices and "block 1: fold" in two.choices
    x = torch.randn(3, 10)
    with torch.no_grad():
        _assert_same(one(x), two(x))


def test_all_open_snr_trans_is_one_dense_matmul_per_layer():
    net = Supernet(build_space("snr_trans", (10,), TASKS)).eval()
    packed = pack(net)
    assert isinstance(packed, PackedModel)
    # input -> L1, L1 -> L2, L2 -> heads, tower hidden, tower out: one BLAS call each
    assert packed.n_calls() == 5
    sp = net.graph.graph["space_params"]
    n, w, T = sp["subnetworks"], sp["width"], len(TASKS)
    assert packed.steps[0].w0.shape == (10, n * w) and packed.steps[1].w0.shape == (n * w, n * w)
    assert packed.steps[2].w0.shape == (n * w, T * w)  # four heads' edge matrices side by side


def test_pruned_edges_are_zero_blocks_and_dropped_components_are_gone():
    model = _derived("snr_trans", 0, 0.3)
    full = pack(Supernet(build_space("snr_trans", (10,), TASKS)).eval())
    assert pack(model).macs() < full.macs()


def test_image_models_are_served_as_they_are_with_the_reason():
    torch.manual_seed(0)
    net = Supernet(build_space("no_sharing", (1, 8, 8), TASKS, channels=4)).eval()
    with pytest.raises(NotPackable, match="image input"):
        pack(net)
    served = serving_model(net)
    assert isinstance(served, ServedAsIs) and "image input" in served.reason
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        _assert_same(net(x), served(x))


# ---------------------------------------------------------------------------- export
LOADER = """
import sys
sys.modules["nas_mtl"] = None  # this Python cannot import nas-mtl
try:
    import nas_mtl  # noqa
except ImportError:
    pass
else:
    raise SystemExit("nas_mtl is importable")
import torch
x = torch.load("x.pt")
for name in sys.argv[1:]:
    out = torch.export.load(name + ".pt2").module()(x)
    torch.save(out if isinstance(out, torch.Tensor) else dict(out), name + ".out.pt")
"""


def test_export_round_trip_without_nas_mtl(tmp_path):
    """Every task (a dict) and one task (a tensor), loaded in a Python without nas-mtl."""
    from nas_mtl.serving.export import OneTask

    gumbel, mmoe = _derived("gumbel_matrix", 2, 0.5), _derived("mmoe", 2, 0.5)
    export_program(pack(gumbel), (10,), tmp_path / "gumbel.pt2")
    export_program(OneTask(pack(mmoe, ["c"]), "c"), (10,), tmp_path / "mmoe_c.pt2")
    x = torch.randn(5, 10)  # another batch size than the example the export traced
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "load.py").write_text(LOADER)
    proc = subprocess.run(
        [sys.executable, "-I", "load.py", "gumbel", "mmoe_c"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        _assert_same(gumbel(x), torch.load(tmp_path / "gumbel.out.pt"))
        torch.testing.assert_close(torch.load(tmp_path / "mmoe_c.out.pt"), mmoe(x)["c"])


# ---------------------------------------------------------------------------- runs on tables
def _people(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 70, n).astype(float)
    hours = rng.normal(40, 8, n).round(1)
    city = rng.choice(["berlin", "london", "paris"], n)
    income = (age * 0.8 + hours * 0.3 + (city == "paris") * 5 + rng.normal(0, 3, n)).round(2)
    return pd.DataFrame(
        {
            "age": age,
            "city": city,
            "hours": hours,
            "income": income,
            "high": (income > income.mean()).astype(int),
            "tier": np.digitize(age, [35, 50]),
            "split": np.where(
                np.arange(n) % 5 == 0, "test", np.where(np.arange(n) % 5 == 1, "val", "train")
            ),
        }
    )


STUDY = """
name = "people"
spaces = ["snr_trans"]
seeds = [0]

[data]
file = "people.csv"
categorical = ["city"]
split_column = "split"
tasks = [
  { name = "high", type = "binary" },
  { name = "income", type = "regression" },
  { name = "tier", type = "multiclass", n_classes = 3 },
]

[space_params]
snr_trans = { subnetworks = 2, width = 8 }

[search]
epochs = 1
batch_size = 32

[retrain]
lr = 3e-2
epochs = 2
batch_size = 32
"""


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    """A finished `nas-mtl run` of a tiny table study; its run directory."""
    root = tmp_path_factory.mktemp("people")
    _people().to_csv(root / "people.csv", index=False)
    (root / "study.toml").write_text(STUDY)
    code = main(["run", str(root / "study.toml"), "--out", str(root / "out")])
    assert code in (0, 1)  # 1: a run worse than a constant, which still has its files
    return root / "out" / "default" / "snr_trans" / "seed_0"


def test_run_saves_the_fitted_preprocessing(table_run):
    doc = json.loads((table_run / "preprocessing.json").read_text())
    assert doc["format"] == "nas-mtl/preprocessing" and doc["regime"] == "shared"
    age, city, hours = doc["features"]
    train = _people().query("split == 'train'")
    assert age["column"] == "age" and age["mean"] == pytest.approx(train["age"].mean())
    assert age["std"] == pytest.approx(train["age"].std(ddof=0))
    assert city == {
        "column": "city",
        "type": "categorical",
        "categories": ["berlin", "london", "paris"],
    }
    assert hours["type"] == "numeric"
    assert doc["inputs"] == ["age", "city=berlin", "city=london", "city=paris", "hours"]
    assert [(t["name"], t["type"], t["out_dim"]) for t in doc["tasks"]] == [
        ("high", "binary", 1),
        ("income", "regression", 1),
        ("tier", "multiclass", 3),
    ]
    assert (table_run / "checkpoints" / "retrain_best.pt").exists()


def test_saved_preprocessing_encodes_rows_as_training_did(table_run):
    pre = read_preprocessing(table_run)
    path = table_run.parents[3] / "people.csv"
    data = load_table(
        path,
        tasks=[TaskSpec("high", "binary")],
        categorical=["city"],
        split_column="split",
        features=["age", "city", "hours"],
    )
    frame = pd.read_csv(path)
    x, unknown = pre.encode(frame, str(path))
    assert not unknown
    np.testing.assert_allclose(x[frame["split"] == "train"], data.train.x.numpy(), atol=1e-6)
    np.testing.assert_allclose(x[frame["split"] == "test"], data.test.x.numpy(), atol=1e-6)


def test_predict_writes_every_task_for_new_rows(table_run, tmp_path, capsys):
    new = _people(9, seed=5).drop(columns=["income", "high", "tier", "split"])
    new.loc[0, "city"] = "rome"  # a category training never saw: all-zero one-hot
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(table_run), str(tmp_path / "new.csv"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "9 rows" in captured.out and "1 rows of 'city'" in captured.err
    pred = pd.read_csv(out)
    assert list(pred.columns) == [
        "row",
        "high_prob",
        "high_class",
        "income",
        "tier_prob_0",
        "tier_prob_1",
        "tier_prob_2",
        "tier_class",
    ]
    assert pred["row"].tolist() == list(range(9))
    # the same numbers as the retrained model on the encoded rows
    from nas_mtl.serving.run_model import load_run_model

    net, pre = load_run_model(table_run)
    x, _ = pre.encode(new, "new.csv")
    assert x[0, 1:4].tolist() == [0.0, 0.0, 0.0]
    with torch.no_grad():
        y = net(torch.from_numpy(x))
    # the regression task in its labels' units: the model's output mapped by the saved scale
    scale = pre.targets["income"]
    assert scale.std > 1 and abs(scale.mean) > 10  # the table's income has mean ~50
    expected = scale.mean + scale.std * y["income"][:, 0].double().numpy()
    np.testing.assert_allclose(pred["income"], expected, rtol=1e-6)
    assert set(pre.targets) == {"income"}  # class labels are never rescaled
    np.testing.assert_allclose(pred["high_prob"], torch.sigmoid(y["high"][:, 0]).numpy(), atol=1e-6)
    probs = torch.softmax(y["tier"], dim=1).numpy()
    np.testing.assert_allclose(pred[[f"tier_prob_{k}" for k in range(3)]], probs, atol=1e-6)
    assert pred["tier_class"].tolist() == probs.argmax(1).tolist()
    assert pred["high_class"].tolist() == (pred["high_prob"] >= 0.5).astype(int).tolist()


def test_export_command_writes_a_program_of_the_run(table_run, tmp_path, capsys):
    out = tmp_path / "tier.pt2"
    assert main(["export", str(table_run), "--task", "tier", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    from nas_mtl.serving.run_model import load_run_model

    net, _ = load_run_model(table_run)
    x = torch.randn(4, 5)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(out).module()(x), net(x)["tier"])
    # every task: the regression output in its labels' units, like predict's
    every = tmp_path / "all.pt2"
    assert main(["export", str(table_run), "--out", str(every)]) == 0
    net, pre = load_run_model(table_run)
    with torch.no_grad():
        got, raw = torch.export.load(every).module()(x), net(x)
    scale = pre.targets["income"]
    torch.testing.assert_close(got["income"], scale.mean + scale.std * raw["income"])
    torch.testing.assert_close(got["high"], raw["high"])
    assert main(["export", str(table_run), "--task", "tiers"]) == 2
    assert "did you mean 'tier'" in capsys.readouterr().err


def test_a_missing_column_exits_2_with_one_line(table_run, tmp_path):
    bad = tmp_path / "bad.csv"
    _people(6, seed=3).drop(columns=["hours"]).to_csv(bad, index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "nas_mtl.cli", "predict", str(table_run), str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "feature column 'hours' is missing" in lines[0], proc.stderr
    assert str(bad) in lines[0] and not (tmp_path / "bad.predictions.csv").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.assign(age=[np.nan] + list(f["age"][1:])), "'age' has 1 missing or infinite"),
        (lambda f: f.assign(hours=[np.inf] + list(f["hours"][1:])), "'hours' has 1 missing or"),
        (lambda f: f.assign(city=[None] + list(f["city"][1:])), "'city' has 1 missing values"),
        (lambda f: f.assign(age=["old"] * len(f)), "'age' must be numeric"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_column_and_file(
    table_run, tmp_path, capsys, edit, message
):
    bad = tmp_path / "bad.csv"
    edit(_people(6, seed=3)).to_csv(bad, index=False)
    assert main(["predict", str(table_run), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(bad) in err, err
    assert not (tmp_path / "bad.predictions.csv").exists()


def _hand_run(root: Path, data, space: str = "snr_trans", config=None) -> Path:
    """A run directory written by hand: architecture, weights, preprocessing."""
    torch.manual_seed(0)
    tasks = {t.name: t.out_dim for t in data.tasks}
    g = build_space(space, data.input_shape, tasks, **required_space_params(space, tasks))
    net = Supernet(g)
    arch = derive(net, sampled_decisions(net, torch.Generator().manual_seed(0), 0.6))
    model = build_model(arch, 0, data.regime)
    run = root / "run"
    save_architecture(run / "architecture.json", arch, {"seed": 0})
    save_atomic({"epoch": 0, "model": model.state_dict()}, run / "checkpoints" / "retrain_best.pt")
    write_preprocessing(run, data, config)
    return run


def test_predict_on_a_built_in_data_set_run_says_it_needs_a_table(tmp_path, capsys):
    data = load_dataset("synthetic", n_train=32, n_val=8, n_test=8, input_dim=6, groups=[2])
    run = _hand_run(tmp_path, data)
    assert read_preprocessing(run).source == {"kind": "dataset", "name": data.name}
    (tmp_path / "rows.csv").write_text("x0,x1\n1,2\n")
    assert main(["predict", str(run), str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "built-in data set" in err and "not on a table file" in err and len(err.splitlines()) == 1
    )
    assert main(["export", str(run)]) == 0  # export needs no table: inputs are model inputs


def test_per_task_table_predicts_each_row_for_its_own_task(tmp_path):
    rng = np.random.default_rng(0)
    n = 90
    frame = pd.DataFrame(
        {
            "task": np.repeat(["t1", "t2", "t3"], n // 3),
            "f1": rng.normal(size=n),
            "f2": rng.normal(size=n),
            "label": rng.integers(0, 2, n),
        }
    )
    frame.to_csv(tmp_path / "rows.csv", index=False)
    data = load_per_task_table(
        tmp_path / "rows.csv", task_column="task", label_column="label", task_type="binary"
    )
    config = SimpleNamespace(file="rows.csv", task_column="task")
    run = _hand_run(tmp_path, data, "gumbel_matrix", config)
    assert read_preprocessing(run).regime == "per_task"
    new = frame.head(4).assign(task=["t2", "t1", "t3", "t2"]).drop(columns=["label"])
    new.to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(run), str(tmp_path / "new.csv")]) == 0
    pred = pd.read_csv(tmp_path / "new.predictions.csv")
    own = {"t1": [1], "t2": [0, 3], "t3": [2]}
    for task, rows in own.items():
        assert pred[f"{task}_prob"].notna().tolist() == [r in rows for r in range(4)]
    # without the task column every row gets every task
    new.drop(columns=["task"]).to_csv(tmp_path / "all.csv", index=False)
    assert main(["predict", str(run), str(tmp_path / "all.csv")]) == 0
    assert pd.read_csv(tmp_path / "all.predictions.csv").notna().all().all()


def test_not_a_run_directory_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("a\n1\n")
    assert main(["predict", str(tmp_path), str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err
    assert "architecture.json not found" in err and len(err.strip().splitlines()) == 1
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
