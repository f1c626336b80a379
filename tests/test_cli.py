"""Every CLI command end to end on tiny data; user mistakes are one line and exit 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch

from nas_mtl.cli import main
from nas_mtl.model.spaces import list_spaces

TINY = """
name = "tiny"
spaces = {spaces}
seeds = [0]

[data]
name = "synthetic"
params = {{ n_train = 256, n_val = 64, n_test = 64, input_dim = 8, groups = [2, 1] }}

[space_params]
{space_params}

[search]
epochs = 2
batch_size = 64
patience = 2
min_steps = 0  # exactly two epochs, in-process and in a subprocess alike

[derive]
samples = {samples}

[retrain]
lr = 3e-2  # enough to beat a constant prediction (else the run fails)
epochs = 2
batch_size = 64
patience = 2
min_steps = 0
"""


def _study(
    tmp_path: Path,
    spaces=("no_sharing", "snr_trans"),
    samples=0,
    space_params="snr_trans = { subnetworks = 3, width = 4 }",
) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(
        TINY.format(spaces=json.dumps(list(spaces)), samples=samples, space_params=space_params)
    )
    return path


def test_spaces_lists_every_registered_space_with_its_description(capsys):
    assert main(["spaces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    registered = list_spaces()
    assert len(lines) == len(registered) >= 9  # the seed spaces and grouped
    for (name, description), line in zip(registered, lines, strict=True):
        assert line.split()[0] == name and line.endswith(description)


def test_run_writes_the_run_directory_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_study(tmp_path, samples=2)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| snr_trans |" in printed and "| no_sharing |" in printed
    report = json.loads((out / "report.json").read_text())
    entries = {(r["space"], r["seed"]): r for r in report["results"]}
    assert set(entries) == {("no_sharing", 0), ("snr_trans", 0)}
    assert report["shared_bottom_cost"]["default"]["params"] > 0  # once per variant, not per run
    snr = entries[("snr_trans", 0)]
    assert set(snr["tasks"]) == {"g0_t0", "g0_t1", "g1_t0"}
    assert all(v["metric"] == "mse" and v["test"] >= 0 for v in snr["tasks"].values())
    assert entries[("no_sharing", 0)]["delta_m"] == 0.0 and snr["delta_m"] is not None
    for (space, seed), entry in entries.items():  # result.json is the report's record
        on_disk = json.loads((out / "default" / space / f"seed_{seed}" / "result.json").read_text())
        assert on_disk == entry
    assert snr["macs"]["g0_t0"] > 0 and snr["supernet"]["total"]["macs"] >= snr["total_macs"]
    run = out / "default" / "snr_trans" / "seed_0"
    log = [json.loads(line) for line in (run / "search_log.jsonl").read_text().splitlines()]
    keys = {
        "open_fraction",
        "undecided",
        "dead_paths",
        "temperature",
        "price",
        "budget",
        "cap_closed",
        "gates",
    }
    assert len(log) == 2 and keys | {"gate_entropy", "val_loss"} <= set(log[0])
    arch = json.loads((run / "architecture.json").read_text())
    assert f"open {arch['open_fraction']:.3f}" in printed  # the figure printed is the chosen one
    assert snr["architecture"]["open_fraction"] == arch["open_fraction"]
    assert (run / "checkpoints" / "search_best.pt").exists()
    arch = json.loads((run / "architecture.json").read_text())
    assert arch["provenance"]["seed"] == 0 and len(arch["provenance"]["study_sha256"]) == 64
    assert arch["provenance"]["derive"]["method"] == "sampled"
    assert (out / "report.md").read_text().startswith("# nas-mtl report: tiny")
    assert main(["report", str(out)]) == 0
    assert "| snr_trans |" in capsys.readouterr().out


def test_workers_run_spaces_and_seeds_side_by_side_with_the_serial_results(tmp_path, capsys):
    study, seeds = str(_study(tmp_path)), ["--seed", "0", "--seed", "1"]
    assert main(["run", study, "--out", str(tmp_path / "serial"), *seeds]) == 0
    capsys.readouterr()
    assert main(["run", study, "--out", str(tmp_path / "side"), *seeds, "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    serial, side = (
        json.loads((tmp_path / name / "report.json").read_text())["results"]
        for name in ("serial", "side")
    )
    order = [(r["space"], r["seed"]) for r in serial]
    assert [(r["space"], r["seed"]) for r in side] == order  # the serial order, not finishing
    ran = re.findall(r"^  (\w+) +seed (\d) +mean test", printed, flags=re.M)
    assert len(order) == 4 and sorted(ran) == sorted((s, str(i)) for s, i in order)  # once each
    for one, other in zip(serial, side, strict=True):  # the same runs, up to summation order
        for task, scores in one["tasks"].items():
            assert other["tasks"][task]["test"] == pytest.approx(scores["test"], rel=1e-4)
    assert main(["run", study, "--out", str(tmp_path / "none"), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "nas-mtl: error: --workers must be >= 1, got 0"


def test_search_derive_retrain_commands(tmp_path, capsys):
    study, out = _study(tmp_path), tmp_path / "out"
    assert main(["search", str(study), "--space", "snr_trans", "--out", str(out)]) == 0
    run = out / "default" / "snr_trans" / "seed_0"
    assert (run / "supernet.json").exists() and not (run / "architecture.json").exists()
    assert main(["derive", str(run), "--samples", "1"]) == 0
    assert (run / "architecture.json").exists()
    assert main(["retrain", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "g0_t0: mse" in printed and "r2" in printed


def test_a_warm_started_retraining_starts_from_the_searched_weights(tmp_path, capsys):
    """With a negligible learning rate a retrained model stays where it started: the run's and
    its random control's retrained weights are the searched supernet's, copied by warm_start;
    without the search's weights, ``retrain`` names the missing file."""
    from nas_mtl.model.graph_files import load_architecture
    from nas_mtl.pipeline import load_searched
    from nas_mtl.stages.checkpoint import load_checkpoint
    from nas_mtl.stages.retrain import build_model
    from nas_mtl.stages.warm_start import warm_start

    study = _study(tmp_path, spaces=("snr_trans",))
    text = study.read_text().replace("lr = 3e-2", "lr = 1e-9")
    study.write_text(text + 'init = "search"\n[controls]\nrandom = 1\n')
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) in (0, 1)  # 1: untrained, failed
    run = out / "default" / "snr_trans" / "seed_0"
    searched = load_searched(run)
    for where in (run, out / "default" / "snr_trans-random" / "seed_0" / "sample_0"):
        model = build_model(load_architecture(where / "architecture.json").graph, seed=5)
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        warm_start(model, searched)
        retrained = load_checkpoint(where / "checkpoints" / "retrain_best.pt")["model"]
        for name, value in model.state_dict().items():
            torch.testing.assert_close(retrained[name], value, rtol=0, atol=1e-6)
        assert any(not torch.equal(fresh[k], v) for k, v in model.state_dict().items())
    (run / "checkpoints" / "search_best.pt").unlink()
    capsys.readouterr()
    assert main(["retrain", str(run)]) == 2
    err = capsys.readouterr().err
    assert "search_best.pt is missing" in err and "init = 'scratch'" in err


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.replace("[search]", "[search]\nepocs = 3"),
            "unknown key 'epocs' (did you mean 'epochs'?)",
        ),
        (
            lambda s: s.replace('"snr_trans"]', '"snr_tran"]'),
            "unknown search space 'snr_tran' (did you mean 'snr_trans'?)",
        ),
        (
            lambda s: s.replace(
                'name = "synthetic"', 'file = "missing.csv"\ntasks = [{ name = "a", column = "y" }]'
            ),
            "missing.csv",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, edit, message):
    study = _study(tmp_path)
    study.write_text(edit(study.read_text()))
    proc = subprocess.run(
        [sys.executable, "-m", "nas_mtl.cli", "run", str(study), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-mtl: error:") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_study_and_run_dir(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "study file not found" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err
    assert main(["derive", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_user_csv_study_end_to_end(tmp_path):
    """A CSV with a categorical column, missing labels and a split column runs every stage."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 240
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    spend = 2 * x1 + (color == "red") + rng.normal(scale=0.1, size=n)
    churn = (x2 + (color == "blue") > 0.5).astype(float)
    split = np.array(["train"] * 160 + ["val"] * 40 + ["test"] * 40)
    lines = ["x1,x2,color,split,spend,churn"]
    for i in range(n):
        s = "" if i % 7 == 0 else f"{spend[i]:.4f}"  # missing labels
        c = "" if i % 5 == 0 else f"{int(churn[i])}"
        lines.append(f"{x1[i]:.4f},{x2[i]:.4f},{color[i]},{split[i]},{s},{c}")
    (tmp_path / "users.csv").write_text("\n".join(lines) + "\n")
    study = tmp_path / "users.toml"
    study.write_text(
        textwrap.dedent("""
        name = "users"
        spaces = ["no_sharing", "snr_aver", "gumbel_matrix"]
        [data]
        file = "users.csv"
        categorical = ["color"]
        split_column = "split"
        tasks = [{ name = "spend", type = "regression" },
                 { name = "churn", type = "binary", weight = 2.0 }]
        [space_params]
        snr_aver = { subnetworks = 2, width = 8 }
        gumbel_matrix = { components = 2, width = 8 }
        [search]
        epochs = 2
        batch_size = 32
        [retrain]
lr = 3e-2  # enough to beat a constant prediction (else the run fails)
        epochs = 2
        batch_size = 32
    """)
    )
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["space"] for r in report["results"]] == ["no_sharing", "snr_aver", "gumbel_matrix"]
    for r in report["results"]:
        assert r["tasks"]["spend"]["metric"] == "mse" and r["tasks"]["churn"]["metric"] == "auc"
        assert 0.0 <= r["tasks"]["churn"]["test"] <= 1.0


def test_rerun_reuses_finished_results_and_refuses_another_study(tmp_path, capsys):
    study = _study(tmp_path, spaces=("no_sharing",), space_params="")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    result = out / "default" / "no_sharing" / "seed_0" / "result.json"
    first = json.loads(result.read_text())
    assert first["architecture"]["components"] == 3
    assert 1 <= first["retrain"]["threads"] <= torch.get_num_threads()  # what it trained with
    assert main(["run", str(study), "--out", str(out)]) == 0  # reused, not retrained
    assert json.loads(result.read_text()) == first
    study.write_text(study.read_text().replace("epochs = 2", "epochs = 1"))
    capsys.readouterr()
    assert main(["run", str(study), "--out", str(out)]) == 2
    assert "holds finished results of a different version of the study" in capsys.readouterr().err
    assert json.loads(result.read_text()) == first  # the finished result is untouched
    assert "epochs = 2" in (out / "study.toml").read_text()  # and so is its study copy


def test_per_task_file_and_sweep_end_to_end(tmp_path):
    """A per-task CSV (a column names each row's task) with a swept data parameter."""
    import numpy as np

    rng = np.random.default_rng(1)
    rows = ["shop,f1,f2,label"]
    for shop, shift in (("north", 0.0), ("south", 1.0)):
        for _ in range(90):
            f1, f2 = rng.normal(size=2)
            rows.append(f"{shop},{f1:.4f},{f2:.4f},{int(f1 + shift > 0.5) + int(f2 > 0)}")
    (tmp_path / "shops.csv").write_text("\n".join(rows) + "\n")
    study = tmp_path / "shops.toml"
    study.write_text(
        textwrap.dedent("""
        name = "shops"
        spaces = ["no_sharing", "shared_bottom"]
        [data]
        file = "shops.csv"
        task_column = "shop"
        label_column = "label"
        task_type = "multiclass"
        n_classes = 3
        weights = { south = 2.0 }
        sweep = { split_fractions = [[0.6, 0.2, 0.2], [0.5, 0.25, 0.25]] }
        [search]
        epochs = 1
        batch_size = 16
        [retrain]
lr = 3e-2  # enough to beat a constant prediction (else the run fails)
        epochs = 1
        batch_size = 16
    """)
    )
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["results"]) == 4
    variants = {json.dumps(r["variant"]) for r in report["results"]}
    assert len(variants) == 2
    assert (out / "split_fractions=[0.5,0.25,0.25]" / "no_sharing" / "seed_0").is_dir()
    for r in report["results"]:
        assert set(r["tasks"]) == {"north", "south"}
        assert r["tasks"]["south"]["metric"] == "accuracy"


def test_describe_previews_sizes_and_gates_without_training(tmp_path, capsys):
    study = _study(tmp_path, spaces=("no_sharing", "snr_trans"))
    assert main(["describe", str(study)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"no_sharing", "snr_trans"}
    assert rows["no_sharing"][6:] == ["0", "–", "(nothing", "to", "search)"]
    # snr_trans: 2 layers of 3 sub-networks of width 4; 3x3 gated edges into layer 2 plus
    # 3 per head, one log α each; a shared gate decides each edge once
    assert rows["snr_trans"][3:6] == ["6", "2", "4"] and rows["snr_trans"][6:] == ["18", "18"]
    assert not (tmp_path / "runs").exists()


def test_sweep_over_a_search_field_end_to_end(tmp_path):
    study = _study(tmp_path, spaces=("snr_trans",))
    study.write_text(study.read_text() + '\n[sweep]\n"search.epochs" = [1, 2]\n')
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    epochs = {r["variant"]["search.epochs"]: r["search"]["epochs"] for r in report["results"]}
    assert epochs == {1: 1, 2: 2}
    assert (out / "search.epochs=1" / "snr_trans" / "seed_0" / "architecture.json").exists()
    run_dir = out / "search.epochs=1" / "snr_trans" / "seed_0"
    assert main(["derive", str(run_dir)]) == 0  # the run's own sweep values are used again


def test_random_control_rows_match_the_searched_open_fraction(tmp_path):
    study = _study(tmp_path, spaces=("no_sharing", "snr_trans"))
    study.write_text(study.read_text() + "\n[controls]\nrandom = 2\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["space"]: r for r in report["results"]}
    assert list(rows) == ["no_sharing", "snr_trans", "snr_trans-random"]
    control = rows["snr_trans-random"]
    searched = rows["snr_trans"]["architecture"]["open_fraction"]
    assert control["control"] == {"of": "snr_trans", "samples": 2, "target_open": searched}
    # a 2-task graph has few pairs: each draw lands on the nearest reachable fraction
    assert all(abs(f - searched) <= 0.25 for f in control["architecture"]["per_sample"])
    runs = out / "default" / "snr_trans-random" / "seed_0"
    tests = [json.loads((runs / f"sample_{k}" / "architecture.json").read_text()) for k in range(2)]
    assert all(a["provenance"]["sample"] == k for k, a in enumerate(tests))
    assert control["mean_test"] == pytest.approx(sum(control["samples_mean_test"]) / 2)
    text = (out / "report.md").read_text()
    assert "| snr_trans-random |" in text and "| no_sharing |" in text  # depth 1, not 2
    assert "Paired, snr_trans − " in text


def test_search_warnings_are_printed_once(tmp_path):
    study = _study(tmp_path, spaces=("snr_trans",))
    proc = subprocess.run(  # a real process: logging goes to stderr as it does for a user
        [sys.executable, "-m", "nas_mtl.cli", "run", str(study), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    warned = [line.split("warning: ", 1)[1] for line in lines if "warning: " in line]
    assert warned  # two epochs leave the gates open: the target was never approached
    for text in warned:
        assert (proc.stdout + proc.stderr).count(text) == 1


def test_an_internal_error_is_one_line_with_a_traceback_file(tmp_path, capsys, monkeypatch):
    import nas_mtl.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(nas_mtl.pipeline, "run_search", broken)
    out = tmp_path / "out"
    assert main(["run", str(_study(tmp_path)), "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error (RuntimeError: boom)" in err[0]
    log = out / "nas-mtl-error.log"
    assert str(log) in err[0] and "RuntimeError: boom" in log.read_text()


def test_json_outputs_are_strict(tmp_path):
    from nas_mtl.storage import write_json_atomic

    write_json_atomic(tmp_path / "r.json", {"auc": float("nan"), "m": [1.0, float("inf")]})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "m": [1.0, None]}


def test_an_untrained_model_stays_at_the_constant_with_a_warning(tmp_path, capsys):
    study = _study(tmp_path, spaces=("no_sharing",), space_params="")
    text = study.read_text().replace("lr = 3e-2", "lr = 1e-9")
    study.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) == 0  # the heads start at the constant
    captured = capsys.readouterr()
    assert "warning: the best validation objective" in captured.out
    assert "of the constant prediction's" in captured.out and "learned little" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["status"] == "finished" and not report["failed"]
    assert "learned little" in report["results"][0]["retrain"]["warnings"][0]


def test_a_model_worse_than_the_constant_is_a_failed_run_not_a_result(tmp_path, capsys):
    study = _study(tmp_path, spaces=("no_sharing",), space_params="")
    out = tmp_path / "out"
    with mock.patch("nas_mtl.results.constant_objective", return_value=1e-6):
        assert main(["run", str(study), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED: worse than a constant prediction" in captured.out
    assert "1 run(s) failed" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["status"] == "failed" and len(report["failed"]) == 1
    assert "| no_sharing ✗ |" in (out / "report.md").read_text()


def test_cluster_groups_the_tasks_of_a_run_and_of_an_output_folder(tmp_path, capsys):
    study = _study(tmp_path, spaces=("no_sharing", "gumbel_matrix"), space_params="")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--seed", "0", "--seed", "1"]) in (0, 1)
    capsys.readouterr()
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps([["g0_t0", "g0_t1"], ["g1_t0"]]))
    args = ["cluster", str(out), "--k", "2", "--groups", str(groups)]
    assert main([*args, "--embedding", "allocation"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(
        "gumbel_matrix (default), allocation: k = 2 over 2 seed(s), seed stability"
    )
    assert "ARI vs known groups" in printed[0] and "per seed" in printed[0]
    members = sorted(t for line in printed[1:3] for t in line.split(": ")[1].split(", "))
    assert members == ["g0_t0", "g0_t1", "g1_t0"] and len(printed) == 4
    assert printed[3] == f"nas-mtl: wrote 3 files to {out / 'clusters'}"
    assert main(args) == 0  # both embeddings: the search measured the gradient affinity
    printed = capsys.readouterr().out.splitlines()
    assert printed[3].startswith("gumbel_matrix (default), affinity: k = 2 over 2 seed(s)")
    assert printed[6].startswith("gumbel_matrix (default): the allocation and affinity")
    run = out / "default" / "gumbel_matrix" / "seed_0"
    assert main(["cluster", str(run), "--k", "3"]) == 0
    assert (
        "k = 3 over 1 seed(s), seed stability (mean pairwise ARI) 1.00" in capsys.readouterr().out
    )
    assert main(["cluster", str(tmp_path)]) == 2
    assert "holds no searched run" in capsys.readouterr().err
    assert main(["cluster", str(out), "--k", "9"]) == 2
    assert "has 3 tasks; choose k in 1..3" in capsys.readouterr().err


@pytest.mark.slow
def test_report_pictures_clusters_html_and_an_exported_study_that_runs(tmp_path, capsys):
    study = _study(tmp_path, spaces=("no_sharing", "gumbel_matrix"), space_params="")
    study.write_text(study.read_text() + "\n[report]\nplots = true\ncluster = true\nk = 2\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) in (0, 1)
    run = out / "default" / "gumbel_matrix" / "seed_0"
    for name in ("task_subgraphs", "overview", "allocation", "search_curves", "sharing"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000, name
    assert (out / "default" / "no_sharing" / "seed_0" / "plots" / "overview.svg").exists()
    assert not (out / "default" / "no_sharing" / "seed_0" / "plots" / "allocation.png").exists()
    assert len(list((run / "plots" / "graphs").glob("*.graphml"))) == 3
    md = (out / "report.md").read_text()
    assert "default/gumbel_matrix/seed_0/plots/allocation.png)" in md
    assert "## Task groups" in md and "clusters/similarity_gumbel_matrix" in md
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4 and "<img" not in page
    clusters = json.loads((out / "clusters" / "clusters.json").read_text())
    (allocation,) = [c for c in clusters["clusterings"] if c["embedding"] == "allocation"]
    assert allocation["k"] == 2 and sorted(t for g in allocation["groups"] for t in g) == [
        "g0_t0",
        "g0_t1",
        "g1_t0",
    ]
    assert allocation["truth_ari"] is not None  # the synthetic data's planted groups
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    assert "plots" in capsys.readouterr().out
    exported = tmp_path / "grouped.toml"
    args = ["cluster", str(out), "--k", "2", "--embedding", "allocation"]
    assert main([*args, "--space", "gumbel_matrix", "--export-study", str(exported)]) == 0
    assert "run it with" in capsys.readouterr().out
    assert main(["run", str(exported), "--out", str(tmp_path / "out2")]) in (0, 1)
    report = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert {r["space"] for r in report["results"]} == {
        "no_sharing",
        "shared_bottom",
        "grouped",
        "gumbel_matrix",
    }
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no architecture.json" in capsys.readouterr().err


def test_run_dir_commands_find_a_relative_data_file_of_the_original_study(tmp_path, monkeypatch):
    """OUT holds a copy of the study; its relative data.file still means the file next to the
    study that was run, so `nas-mtl derive RUN_DIR` works from any folder."""
    import numpy as np

    from nas_mtl.rundir import study_of_run

    rng = np.random.default_rng(0)
    folder = tmp_path / "project"
    folder.mkdir()
    x = rng.normal(size=(120, 2))
    rows = ["x1,x2,y,z"] + [f"{a:.4f},{b:.4f},{a + b:.4f},{a - b:.4f}" for a, b in x]
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    study = folder / "s.toml"
    study.write_text(
        textwrap.dedent("""
        name = "relative"
        spaces = ["gumbel_matrix"]
        [data]
        file = "table.csv"
        tasks = [{ name = "y" }, { name = "z" }]
        [space_params]
        gumbel_matrix = { components = 2, width = 4 }
        [search]
        epochs = 1
        batch_size = 32
        [retrain]
        epochs = 1
        batch_size = 32
        lr = 3e-2
    """)
    )
    out = tmp_path / "out"
    monkeypatch.chdir(folder)
    assert main(["run", "s.toml", "--out", str(out)]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_dir = out / "default" / "gumbel_matrix" / "seed_0"
    study_copy, _ = study_of_run(run_dir)
    assert Path(study_copy.data.file) == (folder / "table.csv").resolve()
    assert main(["derive", str(run_dir)]) == 0
