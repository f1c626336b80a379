"""The user data contract of docs/data.md: shared-input and per-task tables, and bad data."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nas_mtl.data import load_per_task_table, load_table
from nas_mtl.errors import ConfigError, DataError
from nas_mtl.tasks import TaskSpec

NAN = float("nan")

# The worked example of docs/data.md ("people.csv").
PEOPLE_CSV = """\
age,city,hours,income,high_income,split
25,paris,40,31000,0,train
38,london,45,,1,train
52,paris,38,64000,1,train
29,berlin,50,42000,,train
61,london,20,58000,0,val
33,paris,42,39000,1,val
45,berlin,36,,0,test
"""
PEOPLE_TASKS = [
    TaskSpec("high_income", "binary"),
    TaskSpec("income", "regression", weight=0.5),
]


@pytest.fixture
def people_csv(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(PEOPLE_CSV)
    return path


def standardized(values: list[float], train: list[float]) -> list[float]:
    mean, std = np.mean(train), np.std(train)
    return [(v - mean) / std for v in values]


def test_csv_with_categorical_missing_label_and_split_column(people_csv: Path) -> None:
    data = load_table(people_csv, tasks=PEOPLE_TASKS, categorical=["city"], split_column="split")
    assert data.name == "people"
    assert data.regime == "shared"
    assert data.task_names == ("high_income", "income")
    assert data.tasks[1].weight == 0.5
    # features in file order, the categorical column expanded in place (categories sorted)
    assert data.feature_names == ("age", "city=berlin", "city=london", "city=paris", "hours")
    assert data.input_shape == (5,)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 1)
    # numeric columns standardized with the training rows only
    train_age = [25, 38, 52, 29]
    expect_age = standardized([25, 38, 52, 29, 61, 33, 45], train_age)
    got_age = torch.cat([data.train.x[:, 0], data.val.x[:, 0], data.test.x[:, 0]])
    torch.testing.assert_close(got_age, torch.tensor(expect_age, dtype=torch.float32))
    assert data.train.x[:, 0].mean().abs() < 1e-6
    # one-hot
    assert data.train.x[:, 1:4].tolist() == [[0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert data.test.x[:, 1:4].tolist() == [[1, 0, 0]]
    # missing labels stay NaN for that task only
    y = data.train.y
    assert y[:, 0].tolist()[:3] == [0.0, 1.0, 1.0] and torch.isnan(y[3, 0])
    assert torch.isnan(y[1, 1]) and y[3, 1].item() == 42000.0
    assert torch.isnan(data.test.y[0, 1]) and data.test.y[0, 0].item() == 0.0
    # ... and the row leaves only that task's loss
    out = torch.zeros(4, 1)
    loss = data.tasks[0].loss(out, y[:, 0])
    assert loss.item() == pytest.approx(np.log(2))


def test_parquet_npz_and_csv_gz_give_the_same_data(people_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(people_csv)
    frame.to_parquet(tmp_path / "people.parquet")
    np.savez(
        tmp_path / "people.npz",
        **{c: frame[c].to_numpy(dtype=str if c in ("city", "split") else float) for c in frame},
    )
    with gzip.open(tmp_path / "people.csv.gz", "wt") as f:
        f.write(PEOPLE_CSV)
    kwargs = {"tasks": PEOPLE_TASKS, "categorical": ["city"], "split_column": "split"}
    ref = load_table(people_csv, **kwargs)
    for name in ("people.parquet", "people.npz", "people.csv.gz"):
        other = load_table(tmp_path / name, **kwargs)
        assert other.feature_names == ref.feature_names, name
        for split in ("train", "val", "test"):
            a, b = getattr(ref, split), getattr(other, split)
            torch.testing.assert_close(a.x, b.x, msg=name)
            torch.testing.assert_close(a.y, b.y, equal_nan=True, msg=name)


def test_seeded_split_without_split_column(people_csv: Path) -> None:
    kwargs = {"tasks": PEOPLE_TASKS[:1], "features": ["age", "hours"]}
    a = load_table(people_csv, split_fractions=(0.5, 0.25, 0.25), seed=3, **kwargs)
    b = load_table(people_csv, split_fractions=(0.5, 0.25, 0.25), seed=3, **kwargs)
    assert (len(a.train), len(a.val), len(a.test)) == (4, 2, 1)  # round(3.5)=4, round(1.75)=2
    assert a.feature_names == ("age", "hours")
    torch.testing.assert_close(a.train.x, b.train.x)
    with pytest.raises(ConfigError, match=r"split_fractions must sum to 1, got \(0.5, 0.5, 0.5\)"):
        load_table(people_csv, split_fractions=(0.5, 0.5, 0.5), **kwargs)


def test_binary_true_false_and_multiclass_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("x,flag,kind\n1,True,0\n2,False,2\n3,,1\n4,true,\n")
    data = load_table(
        path,
        tasks=[TaskSpec("flag", "binary"), TaskSpec("kind", "multiclass", 3)],
        split_fractions=(1.0, 0.0, 0.0),
    )
    y = data.train.y
    order = torch.argsort(data.train.x[:, 0])
    assert y[order, 0].tolist()[:2] == [1.0, 0.0] and torch.isnan(y[order[2], 0])
    assert y[order[3], 0].item() == 1.0
    assert y[order, 1].tolist()[:3] == [0.0, 2.0, 1.0] and torch.isnan(y[order[3], 1])
    assert data.tasks[1].out_dim == 3


def test_per_task_file(tmp_path: Path) -> None:
    path = tmp_path / "alphabets.csv"
    rows = ["alphabet,p0,p1,label,split"]
    for t, name in enumerate(["greek", "latin"]):
        for i in range(6):
            split = ["train", "train", "train", "val", "test", "test"][i]
            rows.append(f"{name},{i + t},{i * 2},{i % (3 + t)},{split}")
    rows.append("latin,9,9,,train")  # no label: not an example
    path.write_text("\n".join(rows) + "\n")
    data = load_per_task_table(
        path,
        task_column="alphabet",
        label_column="label",
        task_type="multiclass",
        n_classes={"greek": 3, "latin": 4},
        split_column="split",
        weights={"latin": 2.0},
    )
    assert data.regime == "per_task"
    assert data.task_names == ("greek", "latin")
    assert [t.n_classes for t in data.tasks] == [3, 4]
    assert [t.weight for t in data.tasks] == [1.0, 2.0]
    assert (
        data.train.sizes() == (3, 3) and data.val.sizes() == (1, 1) and data.test.sizes() == (2, 2)
    )
    assert data.feature_names == ("p0", "p1")
    assert data.train.y[1].tolist() == [0.0, 1.0, 2.0]
    # standardization over the training rows of all tasks
    train_p0 = np.array([0, 1, 2, 1, 2, 3], dtype=float)
    expect = (np.array([1, 2, 3]) - train_p0.mean()) / train_p0.std()
    torch.testing.assert_close(data.train.x[1][:, 0], torch.tensor(expect, dtype=torch.float32))
    only = load_per_task_table(
        path,
        task_column="alphabet",
        label_column="label",
        task_type="multiclass",
        n_classes=4,
        tasks=["latin"],
        features=["p0", "p1"],
        split_fractions=(0.5, 0.5, 0.0),
    )
    assert only.task_names == ("latin",) and only.train.sizes() == (3,)
    with pytest.raises(
        DataError, match=r"task 'latn' has no rows in column 'alphabet' \(did you mean 'latin'\?\)"
    ):
        load_per_task_table(
            path,
            task_column="alphabet",
            label_column="label",
            task_type="multiclass",
            n_classes=4,
            tasks=["latn"],
        )


# ---------------------------------------------------------------------------- bad data


def write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BINARY = [TaskSpec("y", "binary")]


def test_nan_and_inf_in_features_name_columns_and_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c,y\n1,,1,0\n2,inf,,1\nnan,-inf,3,0\n")
    with pytest.raises(
        DataError,
        match=r"feature columns contain missing or infinite values: "
        r"'a' \(1 NaN\), 'b' \(1 NaN, 2 inf\), 'c' \(1 NaN\)",
    ):
        load_table(path, tasks=BINARY)


def test_binary_label_with_other_values(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,0\n2,1\n3,2\n4,2\n5,-1\n")
    with pytest.raises(
        DataError,
        match=r"binary task 'y' \(column 'y'\) has labels other than 0/1 \(or True/False\): "
        r"-1.0 \(1 rows\), 2.0 \(2 rows\)",
    ):
        load_table(path, tasks=BINARY)
    text = write(tmp_path, "x,y\n1,yes\n2,no\n3,true\n", "text.csv")
    with pytest.raises(
        DataError,
        match=r"has labels other than 0/1 \(or True/False\): 'no' \(1 rows\), 'yes' \(1 rows\)",
    ):
        load_table(text, tasks=BINARY)


def test_task_without_training_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y,s\n1,,train\n2,,train\n3,1,test\n")
    with pytest.raises(
        DataError,
        match=r"task 'y' \(column 'y'\) has no labels in the training split "
        r"\(2 training rows, all missing\)",
    ):
        load_table(path, tasks=BINARY, split_column="s")


def test_unequal_lengths_in_npz(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros(4), y=np.zeros(3))
    with pytest.raises(DataError, match=r"columns have unequal lengths: 'x' has 4, 'y' has 3 rows"):
        load_table(path, tasks=BINARY)
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(
        DataError, match=r"array 'x' has shape \(4, 2\); a table NPZ needs one 1-D array per column"
    ):
        load_table(path, tasks=BINARY)


def test_unknown_column_with_did_you_mean(people_csv: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"label column 'incme' not found \(did you mean 'income'\?\); columns: age, city",
    ):
        load_table(people_csv, tasks=[TaskSpec("inc", "regression", column="incme")])
    with pytest.raises(
        DataError, match=r"feature column 'hour' not found \(did you mean 'hours'\?\)"
    ):
        load_table(people_csv, tasks=BINARY[:0] + PEOPLE_TASKS, features=["age", "hour"])
    with pytest.raises(
        DataError, match=r"split column 'splt' not found \(did you mean 'split'\?\)"
    ):
        load_table(people_csv, tasks=PEOPLE_TASKS, split_column="splt")


def test_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"empty.csv is empty: no header and no rows"):
        load_table(write(tmp_path, "", "empty.csv"), tasks=BINARY)
    with pytest.raises(
        DataError, match=r"header.csv is empty: it has columns \(x, y\) but no rows"
    ):
        load_table(write(tmp_path, "x,y\n", "header.csv"), tasks=BINARY)
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(DataError, match="empty.npz is empty: the NPZ file holds no arrays"):
        load_table(tmp_path / "empty.npz", tasks=BINARY)


def test_non_numeric_column_not_declared_categorical(people_csv: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"non-numeric feature columns 'city' \(e.g. 'paris'\) were not declared "
        r"categorical; add them to categorical",
    ):
        load_table(people_csv, tasks=PEOPLE_TASKS, split_column="split")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n1,0\n", "data.xlsx")
    with pytest.raises(
        DataError,
        match=r"unsupported file extension '.xlsx'; use one of .csv, .csv.gz, .parquet, .npz",
    ):
        load_table(path, tasks=BINARY)


def test_more_bad_cases(tmp_path: Path, people_csv: Path) -> None:
    split = write(tmp_path, "x,y,s\n1,0,train\n2,1,tset\n3,1,dev\n", "split.csv")
    with pytest.raises(
        DataError,
        match=r"split column 's' has values other than train/val/validation/test: "
        r"'dev' \(1 rows\), 'tset' \(1 rows\)",
    ):
        load_table(split, tasks=BINARY, split_column="s")
    multi = write(tmp_path, "x,y\n1,0\n2,3\n3,1.5\n", "multi.csv")
    with pytest.raises(
        DataError,
        match=r"multiclass task 'y' \(column 'y'\) needs integer labels 0..2, "
        r"got 1.5 \(1 rows\), 3.0 \(1 rows\)",
    ):
        load_table(multi, tasks=[TaskSpec("y", "multiclass", 3)])
    cat = write(tmp_path, "c,y\na,0\n,1\n", "cat.csv")
    with pytest.raises(DataError, match="categorical column 'c' has 1 missing values"):
        load_table(cat, tasks=BINARY, categorical=["c"])
    with pytest.raises(
        DataError, match=r"regression task 'r' needs a numeric label column, but 'city' holds"
    ):
        load_table(people_csv, tasks=[TaskSpec("r", "regression", column="city")], features=["age"])
    with pytest.raises(
        ConfigError, match="column 'income' is the label of task 'income' and cannot be a feature"
    ):
        load_table(people_csv, tasks=PEOPLE_TASKS, features=["age", "income"])
    with pytest.raises(
        ConfigError, match=r"categorical columns \['city'\] are not among the features"
    ):
        load_table(people_csv, tasks=PEOPLE_TASKS, features=["age"], categorical=["city"])
    with pytest.raises(ConfigError, match="a multiclass task needs n_classes >= 2"):
        TaskSpec("k", "multiclass")
    with pytest.raises(DataError, match=r"nope.csv: no such file"):
        load_table(tmp_path / "nope.csv", tasks=BINARY)


def test_per_task_missing_labels_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "task,x,y\na,1,0\na,2,1\na,3,\nb,1,1\nb,2,0\n", "pt.csv")
    with caplog.at_level(logging.INFO, logger="nas_mtl.data.tabular"):
        data = load_per_task_table(
            path,
            task_column="task",
            label_column="y",
            task_type="binary",
            split_fractions=(1.0, 0.0, 0.0),
        )
    assert data.train.sizes() == (2, 2)
    assert "task 'a' has 1 rows without a label; left out" in caplog.text


def test_chunked_csv_read_matches_a_plain_read_and_falls_back_on_late_text(tmp_path):
    from nas_mtl.data.files import _read_csv

    path = tmp_path / "t.csv"
    rows = [f"{i * 0.25},{i % 3},{'a' if i % 2 else 'b'},{'' if i == 7 else i}" for i in range(20)]
    path.write_text("x,k,c,y\n" + "\n".join(rows) + "\n")
    chunked = _read_csv(path, sample_rows=4, chunk_rows=3)  # many chunks, joined per column
    plain = pd.read_csv(path)
    assert list(chunked.columns) == list(plain.columns) and len(chunked) == 20
    assert chunked["x"].dtype == np.float32 and chunked["c"].tolist() == plain["c"].tolist()
    np.testing.assert_allclose(chunked["y"].to_numpy(), plain["y"].to_numpy())  # NaN kept
    late = tmp_path / "late.csv"
    late.write_text("x,y\n" + "\n".join(f"{i},{i}" for i in range(10)) + "\noops,3\n")
    assert _read_csv(late, sample_rows=5, chunk_rows=4)["x"].tolist()[-1] == "oops"


def test_complex_npz_columns_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.array([1 + 2j, 3 + 0j, 1j]), y=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(DataError, match="array 'x' holds complex numbers"):
        load_table(path, tasks=[TaskSpec("y", "regression")])


def test_large_nearly_constant_numbers_stay_float64_when_read(tmp_path):
    from nas_mtl.data.files import _read_csv

    path = tmp_path / "t.csv"
    stamps = [1_700_000_000 + 7 * i for i in range(10)]  # 1 s resolution matters here
    path.write_text("t,big,x\n" + "".join(f"{t}.5,{2**30 + i},{i}\n" for i, t in enumerate(stamps)))
    frame = _read_csv(path)
    assert frame["x"].dtype == np.float32
    assert frame["t"].dtype == np.float64 and frame["t"].iloc[1] == stamps[1] + 0.5
    assert frame["big"].iloc[3] == 2**30 + 3  # integers beyond 2^24 stay exact
