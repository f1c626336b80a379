"""Hostile-but-fair inputs: each is exit 2, one line naming the field or file and the fix, and
nothing outside the temporary --out changes (cases call the CLI's main in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nas_mtl.cli import main

ROOT = Path(__file__).resolve().parent.parent

STUDY = """name = "bad"
spaces = ["no_sharing", "snr_trans"]
seeds = [0]

[data]
name = "synthetic"
params = { n_train = 64, n_val = 32, n_test = 32, input_dim = 4, groups = [1, 1] }

[space_params]
snr_trans = { subnetworks = 2, width = 4 }

[search]
epochs = 1
batch_size = 32

[retrain]
epochs = 1
batch_size = 32
"""

CSV = "x1,x2,y,flag\n" + "".join(f"{i / 10},{i % 3},{i * 0.5},{i % 2}\n" for i in range(40))

CSV_STUDY = STUDY.replace(
    'name = "synthetic"\nparams = { n_train = 64, n_val = 32, n_test = 32, input_dim = 4, '
    "groups = [1, 1] }",
    'file = "table.csv"\ntasks = [{ name = "y" }, { name = "flag", type = "binary" }]',
)


def _space(kind: str) -> str:
    return (ROOT / "search_spaces" / f"{kind}.toml").read_text()


# (case id, file name -> text edits, message substring)
STUDY_CASES = [
    ("epochs-0", ("[search]\nepochs = 1", "[search]\nepochs = 0"), "[search] epochs must be"),
    ("epochs-neg", ("[retrain]\nepochs = 1", "[retrain]\nepochs = -1"), "[retrain] epochs must"),
    ("lr-0", ("[retrain]\n", "[retrain]\nlr = 0.0\n"), "[retrain] lr must be a finite number"),
    ("lr-arch-neg", ("[search]\n", "[search]\nlr_arch = -1.0\n"), "[search] lr_arch must be"),
    ("l0-neg", ("[search]\n", "[search]\nl0_weight = -10.0\n"), "[search] l0_weight must be"),
    ("keep-ckpt", ("[search]\n", "[search]\nkeep_checkpoints = -1\n"), "keep_checkpoints must"),
    ("steps-0", ("[search]\n", "[search]\nsteps_per_epoch = 0\n"), "steps_per_epoch must"),
    ("patience-0", ("[retrain]\n", "[retrain]\npatience = 0\n"), "[retrain] patience must"),
    ("batch-0", ("batch_size = 32\n\n[retrain]", "batch_size = 0\n\n[retrain]"), "batch_size"),
    ("batch-str", ("[retrain]\nepochs = 1", '[retrain]\nepochs = "many"'), "epochs"),
    ("target-2", ("[search]\n", "[search]\ntarget_open = 2.0\n"), "target_open must be in"),
    ("macs-neg", ("[search]\n", "[search]\ntarget_macs = -5\n"), "target_macs must be"),
    ("schedule", ("[search]\n", '[search]\nschedule = "cosine"\n'), "schedule = 'cosine'"),
    ("penalty-form", ("[search]\n", '[search]\npenalty_form = "x"\n'), "penalty_form = 'x'"),
    ("warmup", ("[search]\n", "[search]\nwarmup = 1.5\n"), "warmup must be in [0, 1)"),
    ("typo-key", ("[search]\n", "[search]\nepocs = 3\n"), "did you mean 'epochs'"),
    ("typo-table", ("[retrain]", "[retrian]"), "retrian"),
    ("space", ('"snr_trans"]', '"snr_tran"]'), "unknown search space 'snr_tran'"),
    ("space-params", ("snr_trans = {", "gumbel_matrix = {"), "['gumbel_matrix'] are not in"),
    ("dataset", ('name = "synthetic"', 'name = "synthetik"'), "unknown data set 'synthetik'"),
    ("data-param", ("input_dim = 4", "input_dims = 4"), "input_dims"),
    ("samples", ("[retrain]", "[derive]\nsamples = -1\n\n[retrain]"), "[derive] samples must"),
    ("controls", ("[retrain]", "[controls]\nrandom = -2\n\n[retrain]"), "[controls] random"),
    ("toml", ("[search]", "[search"), "bad.toml"),
    ("no-name", ('name = "bad"\n', ""), "name"),
    ("no-spaces", ('spaces = ["no_sharing", "snr_trans"]\n', "spaces = []\n"), "spaces"),
    ("sweep-path", ("[retrain]", '[sweep]\n"search.epoch" = [1]\n\n[retrain]'), "'epochs'"),
    ("sweep-empty", ("[retrain]", '[sweep]\n"retrain.lr" = []\n\n[retrain]'), "non-empty list"),
    ("sweep-value", ("[retrain]", '[sweep]\n"search.epochs" = [0]\n\n[retrain]'), "epochs"),
    ("width-0", ("subnetworks = 2, width = 4", "subnetworks = 2, width = 0"), "width"),
    ("space-param", ("subnetworks = 2", "subnetwork = 2"), "subnetwork"),
    ("space-file", ('"snr_trans"]', '"missing_space.toml"]'), "missing_space.toml"),
    (
        "csv-missing",
        ('name = "synthetic"', 'file = "nope.csv"\ntasks = [{ name = "y" }]\n#'),
        "nope.csv",
    ),
]

SPACE_CASES = [
    ("edges", ("[[layers]]", '[[edges]]\nsrc = "L1.0"\ndst = "L1.0"\n\n[[layers]]'), "either"),
    ("kind", ('kind = "mlp"', 'kind = "mpl"'), "mpl"),
    ("tower-0", ("tower = [8]", "tower = [0]"), "tower"),
    ("repeat", ('repeat = "$layers"', "repeat = -2"), "repeat"),
]

LATIN1 = "x1,x2,y,flag,city\n" + "".join(
    f"{i / 10},{i % 3},{i * 0.5},{i % 2},{'Zürich' if i % 2 else 'Köln'}\n" for i in range(40)
)

DATA_CASES = [
    ("label-missing", CSV_STUDY.replace('{ name = "y" }', '{ name = "yy" }'), CSV, "yy"),
    ("binary-2", CSV_STUDY, CSV.replace(",1\n", ",2\n"), "flag"),
    ("one-class", CSV_STUDY, CSV.replace(",1\n", ",0\n"), "only label 0"),
    (
        "nan-labels",
        CSV_STUDY,
        CSV.replace("\n", "\n", 1).replace(",0\n", ",\n").replace(",1\n", ",\n"),
        "flag",
    ),
    ("empty", CSV_STUDY, "x1,x2,y,flag\n", "table.csv"),
    ("huge-feature", CSV_STUDY, CSV.replace("0.1,", "1e300,", 1), "'x1' (1 inf)"),
    ("dup-columns", CSV_STUDY, CSV.replace("x1,x2,", "x1,x1,", 1), "appear more than once: x1"),
    (
        "latin-1",
        CSV_STUDY.replace("tasks =", 'categorical = ["city"]\ntasks ='),
        LATIN1,
        "is not utf-8 text",
    ),
    (
        "bad-encoding-name",
        CSV_STUDY.replace("tasks =", 'encoding = "klingon"\ntasks ='),
        CSV,
        "unknown text encoding 'klingon'",
    ),
    ("text-feature", CSV_STUDY, CSV.replace("0.5,", "abc,", 1), "x"),
]


def _snapshot(folder: Path, skip: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


def _expect_one_line(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nas-mtl: error:") and message in err[0], err[0]


def _run_expecting(tmp_path: Path, capsys, study_text: str, message: str, *flags: str) -> None:
    study = tmp_path / "bad.toml"
    study.write_text(study_text)
    out = tmp_path / "out"
    before = _snapshot(tmp_path, out)
    assert main(["run", str(study), "--out", str(out), *flags]) == 2
    _expect_one_line(capsys, message)
    assert _snapshot(tmp_path, out) == before


@pytest.mark.parametrize("case, edit, message", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_bad_study_files(tmp_path, capsys, case, edit, message):
    old, new = edit
    assert old in STUDY, case
    _run_expecting(tmp_path, capsys, STUDY.replace(old, new, 1), message)


DAG_CASES = [
    (
        "cycle",
        (
            '[[edges]]\nsrc = "input"',
            '[[edges]]\nsrc = "deep2"\ndst = "deep1"\n\n[[edges]]\nsrc = "input"',
        ),
        "cycle",
    ),
    ("dup-node", ('id = "deep2"', 'id = "deep1"'), "deep1"),
    ("edge-no-dst", ('dst = "deep2"', 'dts = "deep2"'), "dts"),
    ("edge-unknown-node", ('dst = "skip"', 'dst = "skipp"'), "skipp"),
]


SPACE_FILE_CASES = [("custom_dag", *c) for c in DAG_CASES] + [
    ("gumbel_matrix", *c) for c in SPACE_CASES
]


@pytest.mark.parametrize(
    "base, case, edit, message", SPACE_FILE_CASES, ids=[c[1] for c in SPACE_FILE_CASES]
)
def test_bad_space_files(tmp_path, capsys, base, case, edit, message):
    """A user's space file, edited from a built-in one (layers or a DAG)."""
    old, new = edit
    text = _space(base)
    assert old in text, case
    (tmp_path / "mine.toml").write_text(text.replace(old, new, 1))
    study = STUDY.replace('"snr_trans"]', f'"{tmp_path / "mine.toml"}"]')
    study = study.replace("snr_trans = { subnetworks = 2, width = 4 }\n", "")
    _run_expecting(tmp_path, capsys, study, message)


@pytest.mark.parametrize("case, study, table, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_files(tmp_path, capsys, case, study, table, message):
    (tmp_path / "table.csv").write_bytes(table.encode("latin-1" if case == "latin-1" else "utf-8"))
    _run_expecting(tmp_path, capsys, study, message)


def test_bad_flags_and_run_directories(tmp_path, capsys):
    study = tmp_path / "ok.toml"
    study.write_text(STUDY)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["run", str(study), "--out", str(a_file)]) == 2
    _expect_one_line(capsys, "is a file")
    assert main(["run", str(study), "--out", str(a_file / "under")]) == 2
    _expect_one_line(capsys, "cannot write to --out")
    assert main(["run", str(study), "--out", str(tmp_path / "o"), "--device", "tpu"]) == 2
    _expect_one_line(capsys, "tpu")
    assert main(["derive", str(tmp_path)]) == 2
    _expect_one_line(capsys, "not a run directory")
    assert main(["report", str(tmp_path)]) == 2
    _expect_one_line(capsys, "no report.json")
    out = tmp_path / "out"
    assert main(["search", str(study), "--space", "snr_trans", "--out", str(out)]) == 0
    capsys.readouterr()
    run = out / "default" / "snr_trans" / "seed_0"
    best = run / "checkpoints" / "search_best.pt"
    good = best.read_bytes()
    best.write_bytes(good[: len(good) // 2])  # a truncated checkpoint
    assert main(["derive", str(run)]) == 2
    _expect_one_line(capsys, "search_best.pt cannot be read")
    best.write_bytes(good)
    (run / "supernet.json").write_text("{ truncated")
    assert main(["derive", str(run)]) == 2
    _expect_one_line(capsys, "supernet.json")
    shutil.copy(ROOT / "search_spaces" / "snr_trans.toml", run / "supernet.json")
    assert main(["derive", str(run)]) == 2
    _expect_one_line(capsys, "supernet.json")
    (run / "architecture.json").write_text(json.dumps({"format": "x"}))
    assert main(["retrain", str(run)]) == 2
    _expect_one_line(capsys, "architecture")


def test_a_latin_1_file_loads_with_its_encoding(tmp_path, capsys):
    (tmp_path / "table.csv").write_bytes(LATIN1.encode("latin-1"))
    study = CSV_STUDY.replace("tasks =", 'encoding = "latin-1"\ncategorical = ["city"]\ntasks =')
    (tmp_path / "ok.toml").write_text(
        study.replace('"snr_trans"]', "]").replace(
            "snr_trans = { subnetworks = 2, width = 4 }\n", ""
        )
    )
    assert main(["run", str(tmp_path / "ok.toml"), "--out", str(tmp_path / "out")]) in (0, 1)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["space"] for r in report["results"]} == {"no_sharing"}
