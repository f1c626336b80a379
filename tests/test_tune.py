"""``nas-mtl tune``: the [tune] table's checks, the pick rule, trial counting, kill recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas_mtl.cli import main
from nas_mtl.results import TaskScore
from nas_mtl.study import load_study
from nas_mtl.tuning import pareto_front, pick_index, pick_trial, plan_tune, retrain_quality
from nas_mtl.tuning.objective import RESULT, RUN_DIR, PruningHook
from nas_mtl.tuning.outputs import set_path

REPO = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
spaces = ["no_sharing", "snr_trans"]
seeds = [0]

[data]
name = "synthetic"
params = {{ n_train = 256, n_val = 64, n_test = 64, input_dim = 8, groups = [2, 1] }}

[space_params]
snr_trans = {{ subnetworks = 3, width = 4 }}

[search]
epochs = {epochs}
batch_size = 64
patience = 2

[retrain]
lr = 3e-2
epochs = 2
batch_size = 64
patience = 2

[tune]
{tune}

[tune.params]
{params}
"""
PARAMS = """\
"search.lr_arch" = { low = 0.01, high = 0.3, log = true }
"space_params.snr_trans.width" = { low = 2, high = 6 }
"""


def _study(tmp_path: Path, tune: str = "", params: str = PARAMS, epochs: int = 2) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(tune=tune, params=params, epochs=epochs))
    return path


def _trials(out: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna.db").trials


@pytest.mark.parametrize(
    "tune, params, message",
    [
        (
            "",
            '"search.lr_ach" = { low = 0.01, high = 0.3 }',
            "[tune.params] \"search.lr_ach\" = 0.01: 'lr_ach' is not a field "
            "(did you mean 'lr_arch'?)",
        ),
        (
            "",
            '"space_params.mmoe.width" = { low = 2, high = 8 }',
            '[tune.params] "space_params.mmoe.width" = 2: write \'space_params.<space>.',
        ),
        (
            "",
            '"search.target_open" = { low = 0.5, high = 1.5 }',
            '[tune.params] "search.target_open" = 1.5: [search] target_open must be in (0, 1]',
        ),
        (
            "",
            '"search.lr_arch" = { low = 0.3, high = 0.1 }',
            '[tune.params] "search.lr_arch": low must be < high, got low = 0.3, high = 0.1',
        ),
        (
            "",
            '"search.dual_lr" = { low = 0.0, high = 10.0, log = true }',
            '[tune.params] "search.dual_lr": a log range needs low > 0, got low = 0.0',
        ),
        (
            "",
            '"search.schedule" = { choices = [] }',
            '[tune.params] "search.schedule": choices must be a non-empty list',
        ),
        (
            "",
            '"search.lr_arch" = { low = 0.01, hihg = 0.3 }',
            "[tune.params] \"search.lr_arch\": unknown key 'hihg' (did you mean 'high'?)",
        ),
        (
            "",
            '"space_params.snr_trans.width" = { low = 2, high = 6.5, type = "int" }',
            "type = 'int' needs whole numbers, got high = 6.5",
        ),
        (
            "",
            "search.lr_arch = { low = 0.01, high = 0.3 }",
            '[tune.params] "search": quote the whole dotted path, "search.lr_arch" = ',
        ),
        (
            'objectve = "search"',
            PARAMS,
            "[tune]: unknown key 'objectve' (did you mean 'objective'?)",
        ),
        ('pick = "cheapest_within"', PARAMS, "pick = 'cheapest_within' needs a cost"),
        ('directions = ["macs"]', PARAMS, "[tune] directions = ['macs']"),
        ('space = "mmoe"', PARAMS, "[tune] space = 'mmoe' is not one of the study's spaces"),
        ("heartbeat = 5\ngrace = 5", PARAMS, "grace must exceed heartbeat"),
    ],
)
def test_bad_tune_tables_are_one_line_naming_the_key(tmp_path, capsys, tune, params, message):
    out = tmp_path / "out"
    code = main(["tune", str(_study(tmp_path, tune, params)), "--trials", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()  # checked before anything is written


def test_a_study_without_tune_params_cannot_be_tuned(tmp_path, capsys):
    path = tmp_path / "plain.toml"
    path.write_text(_study(tmp_path).read_text().split("[tune]")[0])
    assert main(["tune", str(path), "--trials", "1", "--out", str(tmp_path / "o")]) == 2
    assert "no [tune.params]: nothing to tune" in capsys.readouterr().err


def test_an_out_written_for_another_study_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".nas-mtl-out").write_text("{}")
    (out / "study.toml").write_text('name = "other"')
    assert main(["tune", str(_study(tmp_path)), "--trials", "1", "--out", str(out)]) == 2
    assert "was written for another study or another version" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".nas-mtl-out", "study.toml"]


def test_plan_defaults_to_the_first_searched_space_and_infers_int_ranges(tmp_path):
    plan = plan_tune(load_study(_study(tmp_path)))
    assert plan.space == "snr_trans" and plan.seed == 0 and not plan.multi_objective
    lr, width = plan.params
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 0.01, 0.3, True)
    assert (width.type, width.low, width.high) == ("int", 2, 6)


def test_quickstart_tune_table_is_valid_and_run_ignores_it():
    study = load_study(REPO / "studies" / "quickstart.toml")
    plan = plan_tune(study)
    assert plan.space == "gumbel_matrix" and plan.multi_objective
    assert [p.key for p in plan.params] == [
        "search.lr_arch",
        "search.target_open",
        "space_params.gumbel_matrix.components",
    ]
    assert plan.params[2].type == "int"
    assert study.spaces[0] == "no_sharing" and study.search.epochs == 60  # the rest unchanged


def test_pick_rule_on_hand_made_values():
    points = [(0.50, 100.0), (0.40, 900.0), (0.404, 500.0), (0.45, 300.0), (0.41, 950.0)]
    front = pareto_front(points)
    assert front == [0, 1, 2, 3]  # (0.41, 950) is dominated by (0.40, 900)
    on_front = [points[i] for i in front]
    assert on_front[pick_index(on_front, "best")] == (0.40, 900.0)
    # within 1% of 0.40 (<= 0.404): 0.404 at 500 MACs is cheaper than the best
    assert on_front[pick_index(on_front, "cheapest_within", 0.01)] == (0.404, 500.0)
    assert on_front[pick_index(on_front, "cheapest_within", 0.0)] == (0.40, 900.0)
    assert on_front[pick_index(on_front, "cheapest_within", 0.3)] == (0.50, 100.0)
    # relative to |best|: a negative quality (a negated metric) widens the same way
    assert pick_index([(-1.0, 9.0), (-0.95, 1.0)], "cheapest_within", 0.06) == 1
    assert pick_index([(0.3, 5.0), (0.3, 2.0)], "best") == 1  # a tie goes to the cheaper
    assert pick_index([(0.2,), (0.1,)], "best") == 1  # one objective


def test_pick_trial_reads_the_front_of_an_optuna_study():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for values in [(0.40, 900.0), (0.404, 500.0), (0.45, 950.0)]:
        study.add_trial(create_trial(values=list(values), state=TrialState.COMPLETE))
    study.add_trial(create_trial(state=TrialState.FAIL))
    assert pick_trial(study, "best", 0.01).number == 0
    assert pick_trial(study, "cheapest_within", 0.01).number == 1
    assert pick_trial(optuna.create_study(), "best", 0.0) is None


def test_retrain_quality_turns_higher_is_better_metrics_into_errors():
    tasks = {
        "clicks": TaskScore("auc", True, 0.8, 0.7, {}),
        "spend": TaskScore("mse", False, 0.5, 0.6, {}),
        "digit": TaskScore("accuracy", True, 0.9, 0.9, {}),
    }
    assert retrain_quality(tasks) == pytest.approx((0.2 + 0.5 + 0.1) / 3)


class _FakeTrial:
    def __init__(self, prune_from: int) -> None:
        self.reported: list[tuple[float, int]] = []
        self.prune_from = prune_from

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return self.reported[-1][1] >= self.prune_from


def test_pruning_hook_reports_the_selection_loss_and_prunes_when_told():
    trial = _FakeTrial(prune_from=2)
    hook = PruningHook(trial, report=True)
    hook({"epoch": 0, "selection_objective": 3.0})
    hook({"epoch": 1, "selection_objective": float("nan")})  # not a number: not reported
    with pytest.raises(optuna.TrialPruned, match="after search epoch 2"):
        hook({"epoch": 2, "selection_objective": 2.5})
    assert trial.reported == [(3.0, 0), (2.5, 2)] and hook.epoch == 2
    silent = _FakeTrial(prune_from=0)
    PruningHook(silent, report=False)({"epoch": 0, "selection_objective": 1.0})  # 2 objectives
    assert silent.reported == []


def test_pruned_trials_count_as_finished_and_are_never_picked(tmp_path, monkeypatch, capsys):
    """The pruner, the counting and the pick on scripted search curves (no training)."""
    from nas_mtl.rundir import write_run_context
    from nas_mtl.study import load_study
    from nas_mtl.tuning import objective
    from nas_mtl.tuning.store import pruning_starts
    from nas_mtl.tuning.trial_run import TrialRun

    curves = {0: [3.0, 2.0, 1.0], 1: [9.0, 8.0, 7.0], 2: [2.5, 1.5, 0.5], 3: [9.5, 9.0, 8.5]}

    def scripted(study, variant, space, seed, data, out, rel, *, retrain_model, on_epoch, **_):
        write_run_context(out, rel, variant, space, seed, study.sha256)
        losses = curves[int(rel.rsplit("/", 1)[1])]
        for epoch, loss in enumerate(losses):
            on_epoch({"epoch": epoch, "selection_objective": loss})
        costs = {"macs": 10.0, "params": 20.0}
        return TrialRun(losses[-1], None, costs, {"open_fraction": 0.5}, {"searched": True}, 0.0)

    monkeypatch.setattr(objective, "run_trial", scripted)
    tune = 'objective = "search"\nstartup_trials = 1\npruner = "median"'
    out = tmp_path / "out"
    assert main(["tune", str(_study(tmp_path, tune)), "--trials", "4", "--out", str(out)]) == 0
    trials = _trials(out)
    states = [t.state for t in trials]
    # trial 1 is worse than trial 0 from epoch 0: pruned there; 2 beats the median; 3 pruned
    assert states == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    ]
    # never before the annealing is half done: epoch 1 of this 2-epoch search
    start = pruning_starts(load_study(tmp_path / "tiny.toml").search)
    assert start == 1 and trials[1].user_attrs["pruned_at_epoch"] == start
    assert trials[1].intermediate_values == {0: 9.0, 1: 8.0}
    assert trials[2].values == [0.5] and trials[2].intermediate_values == {0: 2.5, 1: 1.5, 2: 0.5}
    printed = capsys.readouterr().out
    assert "trial   1 pruned   at search epoch 1 (selection loss 8)" in printed
    assert json.loads((out / "best.json").read_text())["number"] == 2
    assert (out / "plots" / "intermediate_values.png").exists()


def test_a_trial_started_past_n_by_a_racing_worker_fails_unrun(tmp_path):
    """Workers on other machines share no start gate: trial numbers settle the race."""
    from nas_mtl.tuning.objective import SurplusTrial, TrialObjective

    plan = plan_tune(load_study(_study(tmp_path)))
    study = optuna.create_study()
    study.add_trial(create_trial(value=1.0, params={}, distributions={}))
    study.enqueue_trial({})  # a retry waiting for a worker: it will run, so it counts
    racing = TrialObjective(plan, tmp_path / "out")
    racing.limit = 2
    study.optimize(racing, n_trials=2, catch=(SurplusTrial,))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert (tmp_path / "out" / "trials" / "1" / "result.json").exists()  # the retry ran
    assert study.trials[2].user_attrs["error"] == "surplus: 2 trials were under way"
    assert not (tmp_path / "out" / "trials" / "2").exists()  # the surplus trial did not


def test_set_path_writes_each_kind_of_dotted_path_into_a_study_document():
    doc = {
        "data": {"name": "synthetic", "sweep": {"rho": [0.5, 0.9]}},
        "sweep": {"search.lr_arch": [0.1], "retrain.lr": [0.01]},
    }
    set_path(doc, "search.lr_arch", 0.05)
    set_path(doc, "data.params.rho", 0.7)
    set_path(doc, "space_params.snr_trans.width", 8)
    assert doc == {
        "data": {"name": "synthetic", "params": {"rho": 0.7}},
        "sweep": {"retrain.lr": [0.01]},
        "search": {"lr_arch": 0.05},
        "space_params": {"snr_trans": {"width": 8}},
    }
    user = {"data": {"file": "x.csv"}}
    set_path(user, "data.split_column", "fold")
    assert user["data"] == {"file": "x.csv", "split_column": "fold"}


@pytest.mark.slow
def test_tune_runs_to_n_finished_trials_and_hands_over_the_pick(tmp_path, capsys):
    study = _study(tmp_path, 'pruner = "none"\nstartup_trials = 2')
    out = tmp_path / "out"
    args = ["tune", str(study), "--out", str(out)]
    assert main([*args, "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("  trial ")]
    assert len(lines) == 3 and all(" complete quality " in line for line in lines)
    assert [t.state for t in _trials(out)] == [TrialState.COMPLETE] * 3
    assert main([*args, "--trials", "4"]) == 0  # adds exactly the difference
    assert [t.number for t in _trials(out)] == [0, 1, 2, 3]
    assert main([*args, "--trials", "4"]) == 0  # nothing to add: prints the pick again
    printed = capsys.readouterr().out
    assert "0 trial(s) run now" in printed and "nas-mtl: picked trial" in printed
    trials = _trials(out)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)

    best = min(trials, key=lambda t: t.values[0])
    record = json.loads((out / "best.json").read_text())
    assert record["number"] == best.number and record["params"] == best.params
    assert record["values"] == best.values and record["run_dir"] == f"trials/{best.number}"
    assert record["trials"]["complete"] == 4
    for t in trials:  # every trial is a run directory with its result
        assert t.user_attrs[RUN_DIR] == f"trials/{t.number}"
        result = json.loads((out / "trials" / str(t.number) / "result.json").read_text())
        assert t.user_attrs[RESULT]["quality"] == pytest.approx(
            sum(v["val"] for v in result["tasks"].values()) / 3
        )  # MSE tasks: the mean validation MSE
        assert t.user_attrs[RESULT]["macs"] == result["total_macs"]

    tuned = load_study(out / "best_study.toml")  # the picked values, written in
    assert tuned.name == "tiny_tuned" and tuned.spaces == ("no_sharing", "snr_trans")
    assert tuned.search.lr_arch == best.params["search.lr_arch"]
    assert tuned.space_params["snr_trans"] == {
        "subnetworks": 3,
        "width": best.params["space_params.snr_trans.width"],
    }
    assert tomllib.loads((out / "best_study.toml").read_text())["tune"]["pruner"] == "none"

    assert (out / "best" / "architecture.json").read_bytes() == (
        out / "trials" / str(best.number) / "architecture.json"
    ).read_bytes()
    assert json.loads((out / "best" / "result.json").read_text())["run_dir"] == record["run_dir"]
    assert main(["retrain", str(out / "best")]) == 0
    assert "g0_t0: mse" in capsys.readouterr().out
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["intermediate_values.png", "optimization_history.png", "param_importances.png"]
    assert main([*args, "--trials", "5", "--study-name", "other"]) == 2  # one study per OUT
    assert "holds the trials of Optuna study 'tiny'" in capsys.readouterr().err

    text = study.read_text()  # tuning-only settings may change between runs ...
    study.write_text(text.replace('pruner = "none"', 'pruner = "median"\nseed = 7'))
    assert main([*args, "--trials", "4"]) == 0
    assert (out / "study.toml").read_text() == study.read_text()
    study.write_text(
        text.replace(
            "epochs = 2\nbatch_size = 64\npatience = 2\n\n[retrain]",
            ("epochs = 3\nbatch_size = 64\npatience = 2\n\n[retrain]"),
        )
    )  # ... the search may not
    assert main([*args, "--trials", "5"]) == 2
    assert "differs outside the tuning settings of [tune]" in capsys.readouterr().err
    assert len(_trials(out)) == 4


def test_trial_zero_runs_the_study_values_and_each_trial_averages_its_seeds(tmp_path):
    study = _study(tmp_path, 'pruner = "none"\nstartup_trials = 2\nseeds = [0, 1]')
    out = tmp_path / "out"
    assert main(["tune", str(study), "--trials", "2", "--out", str(out)]) == 0
    trials = _trials(out)
    baseline = load_study(study)
    assert trials[0].user_attrs["baseline"] is True and "baseline" not in trials[1].user_attrs
    assert trials[0].params == {  # the study's own values: lr_arch's default, width 4
        "search.lr_arch": baseline.search.lr_arch,
        "space_params.snr_trans.width": 4,
    }
    for t in trials:
        assert t.user_attrs[RUN_DIR] == f"trials/{t.number}/seed_0"
        record = t.user_attrs[RESULT]
        per_seed = []
        for seed in (0, 1):
            result = json.loads(
                (out / "trials" / str(t.number) / f"seed_{seed}" / "result.json").read_text()
            )
            assert result["seed"] == seed
            per_seed.append(sum(v["val"] for v in result["tasks"].values()) / 3)
            assert record["seeds"][str(seed)]["quality"] == pytest.approx(per_seed[-1])
        assert t.values[0] == pytest.approx(sum(per_seed) / 2)  # the mean over the seeds
    best = json.loads((out / "best.json").read_text())
    assert best["seeds"] == [0, 1] and best["baseline"] == 0
    assert (out / "best" / "architecture.json").exists()


def test_tune_seeds_must_be_distinct_whole_numbers(tmp_path, capsys):
    for bad, message in (
        ("[0, 0]", "[tune] seeds lists a seed twice"),
        ('["a"]', "[tune].seeds[0] must be an integer, got 'a'"),
    ):
        study = _study(tmp_path, f"seeds = {bad}")
        assert main(["tune", str(study), "--trials", "1", "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_two_objectives_write_the_pareto_front_and_pick_by_the_rule(tmp_path):
    tune = (
        'objective = "search"\ndirections = ["quality", "macs"]\npick = "cheapest_within"\n'
        'tolerance = 0.05\nstartup_trials = 4\npruner = "none"'
    )
    params = (
        '"search.target_open" = { low = 0.2, high = 0.9 }\n'
        '"space_params.snr_trans.width" = { low = 2, high = 8 }'
    )
    out = tmp_path / "out"
    assert (
        main(["tune", str(_study(tmp_path, tune, params)), "--trials", "4", "--out", str(out)]) == 0
    )
    trials = [t for t in _trials(out) if t.state == TrialState.COMPLETE]
    assert len(trials) == 4 and all(len(t.values) == 2 for t in trials)
    assert all(t.values[1] == t.user_attrs[RESULT]["macs"] for t in trials)
    assert all(t.values[0] == t.user_attrs[RESULT]["search_loss"] for t in trials)
    front = [trials[i] for i in pareto_front([t.values for t in trials])]
    expected = front[pick_index([t.values for t in front], "cheapest_within", 0.05)]
    record = json.loads((out / "best.json").read_text())
    assert record["number"] == expected.number
    assert [p["number"] for p in record["pareto_front"]] == sorted(t.number for t in front)
    png = (out / "plots" / "pareto_front.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not (out / "plots" / "intermediate_values.png").exists()  # no pruning: no reports


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_trial_leaves_a_failed_trial_that_is_retried(
    tmp_path, request, backend
):
    tune = 'pruner = "none"\nstartup_trials = 2\nheartbeat = 1\ngrace = 2'
    study, out = _study(tmp_path, tune, epochs=15), tmp_path / "out"
    cmd = [sys.executable, "-m", "nas_mtl.cli", "tune", str(study), "--trials", "2"]
    cmd += ["--out", str(out)]
    url, name = f"sqlite:///{out}/optuna.db", "tiny"
    if backend == "postgresql":  # the throw-away server of tests/postgres.py
        url, name = request.getfixturevalue("postgres_url"), f"killed_{os.getpid()}"
        cmd += ["--storage", url, "--study-name", name]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, running = time.monotonic() + 60, []
    while not running and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if backend == "sqlite" and not (out / "optuna.db").exists():
            continue  # opening it here would create it under the command's feet
        try:
            running = optuna.load_study(study_name=name, storage=url).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,)
            )
        except Exception:  # the study is not created yet
            continue
    assert running, "no trial started"
    time.sleep(0.5)  # into the search
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name=name, storage=url).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 1
    killed = next(t for t in trials if t.state == TrialState.FAIL)
    assert killed.number == 0
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert f"retry of trial {killed.number}" in done.stdout


def test_pruner_curves_break_where_one_seed_ends_and_the_next_begins():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nas_mtl.tuning.plots import _split_by_seed

    _, ax = plt.subplots()
    ax.plot([0, 1, 2, 3, 4], [5.0, 4.0, 9.0, 8.0, 7.0])
    _split_by_seed(ax, epochs=2, seeds=(0, 1, 2))
    x, y = ax.get_lines()[0].get_data()
    assert [str(v) for v in x] == ["0.0", "1.0", "nan", "2.0", "3.0", "nan", "4.0"]
    assert [str(v) for v in y] == ["5.0", "4.0", "nan", "9.0", "8.0", "nan", "7.0"]
    assert [t.get_text() for t in ax.texts] == ["seed 0", "seed 1", "seed 2"]
    plt.close("all")
