"""Generated study and data files: whatever a user writes, nas-mtl answers with exit 0, 1 or 2,
never exit 3 (an internal error) or a traceback, writes nothing outside ``--out`` and reports
only finite metrics (``docs/errors.md`` lists the input classes covered).

Each example starts from a tiny valid study (one space, one epoch, a few dozen rows) and
applies one to three mutations: a field of any table set to a value of another type or out of
range, a key added, removed or misspelt, a table replaced by a scalar, the file re-encoded
(UTF-16, Latin-1, a BOM, CRLF) or truncated; or, for the data, a CSV with a ragged row, text in
a number column, NaN/inf, a huge value, odd or repeated column names, an empty file, a BOM or
CRLF, or the right text under the wrong extension. Valid values are kept small so that every
example trains in well under a second: a huge but valid ``epochs`` would run as asked (sizes
beyond the machine's memory are their own test below).

``NAS_MTL_FUZZ_EXAMPLES`` sets the number of examples per test (CI: the defaults below, a
fixed derandomized set, seconds in all); a longer random run is
``NAS_MTL_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_inputs.py``. It is an environment variable,
not a pytest marker, because hypothesis fixes a test's settings when the module is imported.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nas_mtl.cli import main

EXAMPLES = int(os.environ.get("NAS_MTL_FUZZ_EXAMPLES", "0"))

BASE: dict[str, Any] = {
    "name": "fuzz",
    "spaces": ["shared_bottom"],
    "seeds": [0],
    "data": {
        "name": "synthetic",
        "params": {"n_train": 48, "n_val": 16, "n_test": 16, "input_dim": 4, "groups": [1, 1]},
    },
    "space_params": {},
    "search": {"epochs": 1, "batch_size": 16},
    "retrain": {"epochs": 1, "batch_size": 16},
}

SPACES = ["shared_bottom", "no_sharing", "mmoe", "snr_trans", "snr_aver", "gumbel_matrix"]
SPACE_PARAMS = {
    "shared_bottom": ["layers", "width"],
    "no_sharing": ["layers", "width"],
    "mmoe": ["layers", "experts", "expert_width"],
    "snr_trans": ["subnetworks", "width"],
    "snr_aver": ["subnetworks", "width"],
    "gumbel_matrix": ["components", "width", "p0"],
}
FIELDS = {
    "": ["name", "description", "spaces", "seeds", "space_params", "data", "search", "retrain"],
    "search": [
        "epochs",
        "batch_size",
        "lr_weights",
        "lr_arch",
        "target_open",
        "target_macs",
        "l0_weight",
        "warmup",
        "anneal",
        "schedule",
        "penalty_form",
        "patience",
        "steps_per_epoch",
        "affinity_every",
        "threads",
        "device",
        "alternate",
    ],
    "retrain": ["epochs", "batch_size", "lr", "patience", "weight_decay", "init", "threads"],
    "derive": ["samples", "pool"],
    "controls": ["random"],
    "report": ["plots", "cluster"],
    "data": ["name", "params", "file", "tasks", "split_column", "features", "sweep"],
    "data.params": ["n_train", "n_val", "n_test", "input_dim", "groups", "rho", "m", "inputs"],
    "tune": ["seed", "seeds", "space", "objective", "directions", "pick", "pruner", "params"],
}

# values a user may well write, so that a good share of examples train and report
PLAUSIBLE = {
    "search": {
        "epochs": [1, 2],
        "batch_size": [1, 3, 16, 1000],
        "lr_weights": [1e-4, 0.05, 10.0],
        "lr_arch": [1e-3, 1.0],
        "target_open": [0.05, 0.5, 1.0, False],
        "target_macs": [1, 50, 10**9, False],
        "l0_weight": [0.0, 1.0],
        "warmup": [0.0, 0.5, 0.99],
        "anneal": [0.01, 1.0],
        "schedule": ["linear", "sqrt_step"],
        "penalty_form": ["sum"],
        "patience": [1],
        "steps_per_epoch": [1, 3, False],
        "affinity_every": [0, 1],
        "threads": [1, 2],
        "device": ["cpu"],
        "alternate": [True],
    },
    "retrain": {
        "epochs": [1, 2],
        "batch_size": [1, 5, 1000],
        "lr": [1e-5, 0.1, 10.0],
        "patience": [1],
        "weight_decay": [0.0, 0.5],
        "init": ["search"],
        "threads": [1, 2],
    },
    "": {"seeds": [[-1], [0, 0], [2**63 - 1], [1, 2]], "spaces": [["gumbel_matrix", "mmoe"]]},
    "derive": {"samples": [0, 2], "pool": ["none"]},
    "controls": {"random": [0, 1]},
    "tune": {"seed": [-1, 3], "seeds": [[-2], [0, 1]], "space": ["gumbel_matrix", "nope"]},
    "report": {"plots": [True], "cluster": [True]},
    "data.params": {
        "n_train": [1, 2, 17],
        "n_val": [0, 1, 3],
        "n_test": [0, 1],
        "input_dim": [1, 9],
        "groups": [[1], [3], [1, 1, 1, 1]],
        "rho": [0.0, -1.0, 1.0],
        "m": [0, 2],
        "inputs": ["per_task"],
    },
    "space_params": {
        "layers": [1, 3],
        "width": [1, 2],
        "subnetworks": [1, 2],
        "components": [1, 5],
        "experts": [1, 2],
        "expert_width": [1, 3],
        "p0": [0.01, 0.99],
    },
}

# TOML values of every type, small valid ones and hostile ones
scalars = st.one_of(
    st.integers(min_value=-3, max_value=4),
    st.just(-(2**63)),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1e-300, 1e300, 0.5, 1.5, -0.5]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "wide", "auto", "cpu", "cuda", "sum", "none", "index", *SPACES]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


def _get(doc: dict, path: str) -> dict | None:
    node: Any = doc
    for part in filter(None, path.split(".")):
        if not isinstance(node, dict):
            return None
        node = node.setdefault(part, {})
    return node if isinstance(node, dict) else None


@st.composite
def study_docs(draw: st.DrawFn) -> dict:
    doc = json.loads(json.dumps(BASE))
    space = draw(st.sampled_from(SPACES))
    doc["spaces"] = [space]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["plausible"] * 4 + ["set", "set", "space", "delete", "typo", "scalar"])
        )
        if kind == "plausible":
            table = draw(st.sampled_from(sorted(PLAUSIBLE)))
            key = draw(st.sampled_from(sorted(PLAUSIBLE[table])))
            if table == "space_params":
                if key in SPACE_PARAMS[space] and isinstance(doc["space_params"], dict):
                    doc["space_params"].setdefault(space, {})[key] = draw(
                        st.sampled_from(PLAUSIBLE[table][key])
                    )
                continue
            node = _get(doc, table)
            if node is not None:
                node[key] = draw(st.sampled_from(PLAUSIBLE[table][key]))
            continue
        table = draw(st.sampled_from(sorted(FIELDS)))
        key = draw(st.sampled_from(FIELDS[table]))
        node = _get(doc, table)
        if node is None:
            continue
        if kind == "set":
            node[key] = draw(values)
        elif kind == "space":
            params = doc.setdefault("space_params", {})
            if isinstance(params, dict):
                name = draw(st.sampled_from(SPACE_PARAMS[space]))
                params.setdefault(space, {})[name] = draw(values)
        elif kind == "delete":
            node.pop(key, None)
        elif kind == "typo":
            node[key + draw(st.sampled_from(["s", "_", "x"]))] = node.pop(key, 1)
        else:  # a table where a scalar belongs, or the reverse
            if table:
                parent = _get(doc, ".".join(table.split(".")[:-1]))
                if parent is not None:
                    parent[table.split(".")[-1]] = draw(scalars)
    return doc


def _encoded(draw: st.DrawFn, text: str) -> bytes:
    how = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "bom", "crlf", "utf-16", "latin-1"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "crlf":
        return text.replace("\n", "\r\n").encode()
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    return text.encode(how)


@st.composite
def study_files(draw: st.DrawFn) -> bytes:
    doc = draw(study_docs())
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # a value TOML cannot hold (a NaN key, a mixed list)
        text = tomli_w.dumps(BASE)
    if draw(st.integers(0, 9)) == 0:  # truncated mid-file
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return _encoded(draw, text)


CSV_HEADER = ["x1", "x2", "y", "flag"]


@st.composite
def csv_tables(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, bytes) of a CSV with a regression task ``y`` and a binary task ``flag``."""
    rows = [[f"{i / 10}", f"{i % 3}", f"{i * 0.5}", f"{i % 2}"] for i in range(40)]
    header = list(CSV_HEADER)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["ragged", "text", "nan", "inf", "huge", "empty-cell", "header", "dup", "odd"]
            )
        )
        r = draw(st.integers(0, len(rows) - 1)) if rows else 0
        c = draw(st.integers(0, len(header) - 1))
        if kind == "ragged" and rows:
            rows[r] = rows[r] + ["7"] if draw(st.booleans()) else rows[r][:-1]
        elif kind in ("text", "nan", "inf", "huge", "empty-cell") and rows:
            cell = {"text": draw(st.text(max_size=5)), "nan": "nan", "inf": "-inf"}.get(kind)
            cell = cell if cell is not None else {"huge": "1e400", "empty-cell": ""}[kind]
            rows[r][c % len(rows[r])] = cell.replace(",", ";").replace("\n", " ")
        elif kind == "header":
            rows = rows[: draw(st.integers(0, 2))]
        elif kind == "dup":
            header[c] = header[(c + 1) % len(header)]
        else:
            header[c] = draw(st.sampled_from(["", " x1", "ü", "0", "x1.1", "split"]))
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    if draw(st.integers(0, 9)) == 0:
        text = ""
    name = draw(st.sampled_from(["table.csv"] * 6 + ["table.parquet", "table.npz", "table.txt"]))
    return name, _encoded(draw, text)


def _files(folder: Path, skip: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and skip not in p.parents
    }


def _check(tmp: Path, capsys, argv: list[str]) -> None:
    """One CLI call: an allowed exit code, no traceback, nothing new outside OUT, finite
    metrics on success."""
    out = tmp / "out"
    before = _files(tmp, out)
    code = main(argv)
    event(f"{argv[0]}: exit {code}")
    err = capsys.readouterr().err
    assert code in (0, 1, 2), err
    assert "internal error" not in err and "Traceback" not in err, err
    assert _files(tmp, out) == before
    if code == 0 and argv[0] == "run":
        report = json.loads((out / "report.json").read_text())
        for result in report["results"]:
            for score in result["tasks"].values():
                assert math.isfinite(score["test"]) and math.isfinite(score["val"]), result


FUZZ = settings(
    max_examples=EXAMPLES or 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not EXAMPLES,  # CI: the same examples every run
)


@FUZZ
@given(data=study_files())
def test_generated_study_files(tmp_path_factory, capsys, data):
    tmp = tmp_path_factory.mktemp("study")
    study = tmp / "study.toml"
    study.write_bytes(data)
    _check(tmp, capsys, ["run", str(study), "--out", str(tmp / "out")])


@FUZZ
@given(table=csv_tables(), with_split=st.booleans())
def test_generated_data_files(tmp_path_factory, capsys, table, with_split):
    tmp = tmp_path_factory.mktemp("data")
    name, data = table
    (tmp / name).write_bytes(data)
    doc = json.loads(json.dumps(BASE))
    doc["data"] = {
        "file": name,
        "tasks": [{"name": "y"}, {"name": "flag", "type": "binary"}],
    }
    if with_split:
        doc["data"]["split_fractions"] = [0.5, 0.25, 0.25]
    study = tmp / "study.toml"
    study.write_text(tomli_w.dumps(doc))
    _check(tmp, capsys, ["run", str(study), "--out", str(tmp / "out")])


COMMANDS = [
    ["describe", "{study}"],
    ["search", "{study}", "--space", "snr_trans", "--out", "{out}"],
    ["search", "{study}", "--space", "nope", "--out", "{out}"],
    ["tune", "{study}", "--trials", "1", "--out", "{out}"],
]


@settings(FUZZ, max_examples=(EXAMPLES or 60) // 3)
@given(data=study_files(), command=st.sampled_from(COMMANDS))
def test_generated_study_files_for_other_commands(tmp_path_factory, capsys, data, command):
    tmp = tmp_path_factory.mktemp("cmd")
    study = tmp / "study.toml"
    study.write_bytes(data)
    _check(tmp, capsys, [a.format(study=study, out=tmp / "out") for a in command])


@pytest.mark.parametrize(
    "argv",
    [
        ["derive", "{tmp}/nowhere"],
        ["retrain", "{tmp}/nowhere"],
        ["report", "{tmp}/nowhere"],
        ["plot", "{tmp}/nowhere"],
        ["cluster", "{tmp}/nowhere"],
        ["predict", "{tmp}/nowhere", "{tmp}/x.csv"],
        ["export", "{tmp}/nowhere"],
        ["derive", "{tmp}/file.txt"],
        ["report", "{tmp}/file.txt"],
        ["run", "{tmp}/file.txt"],
        ["run", "{tmp}"],
        ["tune", "{tmp}/file.txt", "--trials", "1"],
    ],
)
def test_paths_that_are_not_what_a_command_reads(tmp_path, capsys, argv):
    (tmp_path / "file.txt").write_text("not a study, not a run")
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("nas-mtl: error:") and len(err.strip().splitlines()) == 1, err


def test_a_run_folder_with_damaged_json(tmp_path, capsys):
    """Files a command reads back (result.json, architecture.json, ...) that a user edited."""
    study = tmp_path / "study.toml"
    study.write_text(tomli_w.dumps(BASE))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out)]) in (0, 1)
    capsys.readouterr()
    run = out / "default" / "shared_bottom" / "seed_0"
    for name in ("architecture.json", "result.json", "search.json", "context.json"):
        original = (run / name).read_bytes()
        for damage in (b"", b"{", b"[1, 2]", b'{"tasks": 3}', b"\xff\xfe"):
            (run / name).write_bytes(damage)
            for argv in (["derive", str(run)], ["retrain", str(run)], ["report", str(out)]):
                code = main(argv)
                err = capsys.readouterr().err
                assert code in (0, 1, 2), (name, damage, argv, err)
                assert "internal error" not in err, (name, damage, argv, err)
        (run / name).write_bytes(original)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """A finished run on a CSV of tasks ``y`` and ``flag``: what ``predict`` reads tables for."""
    tmp = tmp_path_factory.mktemp("csv_run")
    rows = "".join(f"{i / 10},{i % 3},{i * 0.5},{i % 2}\n" for i in range(40))
    (tmp / "table.csv").write_text(",".join(CSV_HEADER) + "\n" + rows)
    doc = json.loads(json.dumps(BASE))
    doc["data"] = {
        "file": "table.csv",
        "tasks": [{"name": "y"}, {"name": "flag", "type": "binary"}],
    }
    (tmp / "study.toml").write_text(tomli_w.dumps(doc))
    assert main(["run", str(tmp / "study.toml"), "--out", str(tmp / "out")]) in (0, 1)
    return tmp / "out" / "default" / "shared_bottom" / "seed_0"


@settings(FUZZ, max_examples=(EXAMPLES or 60) // 2)
@given(table=csv_tables())
def test_generated_tables_for_predict(tmp_path_factory, capsys, csv_run, table):
    tmp = tmp_path_factory.mktemp("predict")
    name, data = table
    (tmp / name).write_bytes(data)
    out = tmp / "out" / "predictions.csv"
    _check(tmp, capsys, ["predict", str(csv_run), str(tmp / name), "--out", str(out)])


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "study.toml", "--seed", "-1"],
        ["run", "study.toml", "--seed", "x"],
        ["search", "study.toml", "--space", "snr_trans", "--seed", "-3"],
        ["derive", "nowhere", "--samples", "many"],
        ["tune", "study.toml", "--trials", "0"],
    ],
)
def test_command_line_values_out_of_range(tmp_path, capsys, argv):
    (tmp_path / "study.toml").write_text(tomli_w.dumps(BASE))
    argv = [str(tmp_path / a) if a in ("study.toml", "nowhere") else a for a in argv]
    with pytest.raises(SystemExit) as done:  # argparse's own usage error, or ours
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert "internal error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "edit",
    [
        {"space_params": {"shared_bottom": {"width": 2**40}}},  # torch cannot allocate it
        {"data": {"name": "synthetic", "params": {"n_train": 2**40, "input_dim": 4}}},  # numpy
    ],
)
def test_sizes_beyond_the_machine_are_an_answer(tmp_path, capsys, edit):
    doc = {**json.loads(json.dumps(BASE)), **edit}
    (tmp_path / "study.toml").write_text(tomli_w.dumps(doc))
    code = main(["run", str(tmp_path / "study.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "nas-mtl: error: out of memory" in err and "reduce its sizes" in err, err
