"""Run directories: nas-mtl writes only inside --out and removes only what it created."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nas_mtl.cli import main
from nas_mtl.errors import ConfigError
from nas_mtl.rundir import OUT_MARKER, RUN_MARKER, default_out, replace_run_dir, safe_name
from nas_mtl.study import parse_study

ROOT = Path(__file__).resolve().parent.parent

STUDY = """
name = "{name}"
spaces = {spaces}
seeds = [0]

[data]
name = "synthetic"
params = {{ n_train = 64, n_val = 32, n_test = 32, input_dim = 4, groups = [1, 1] }}

[search]
epochs = 1
batch_size = 32

[retrain]
lr = 3e-2  # enough to beat a constant prediction (else the run fails)
epochs = 1
batch_size = 32
"""


def _write_study(folder: Path, spaces, name="tiny") -> Path:
    path = folder / "study.toml"
    path.write_text(STUDY.format(name=name, spaces=json.dumps(spaces)))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@given(st.text(max_size=40))
def test_safe_names_stay_one_component_inside_out(text):
    name = safe_name(text)
    assert name and "/" not in name and "\\" not in name and name not in (".", "..")
    out = Path("/tmp/out")
    assert (out / name).resolve().parent == out.resolve()


def test_a_space_path_with_dotdot_runs_inside_out_and_touches_nothing_outside(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(ROOT / "search_spaces" / "no_sharing.toml", outside / "mine.toml")
    (outside / "seed_0").mkdir()  # what the old layout would have replaced
    (outside / "seed_0" / "keep.txt").write_text("user data")
    before = _snapshot(outside)
    out = tmp_path / "out"
    sneaky = f"{outside}/../outside/mine.toml"  # absolute, with .. in it
    assert main(["run", str(_write_study(tmp_path, [sneaky])), "--out", str(out)]) == 0
    assert (out / "default" / "mine" / "seed_0" / "result.json").exists()
    assert _snapshot(outside) == before


def test_a_study_name_is_a_safe_folder_under_runs():
    for name in ("../../etc/x", "/abs/path", "..", "a b/c"):
        study = parse_study({"name": name, "spaces": ["no_sharing"], "data": {"name": "synthetic"}})
        out = default_out(study)
        assert out.parent == Path("runs") and out.name not in ("", ".", "..")
        assert "/" not in out.name


def test_an_unrelated_non_empty_out_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    before = _snapshot(out)
    study = _write_study(tmp_path, ["no_sharing"])
    for flags in ([], ["--overwrite"]):
        assert main(["run", str(study), "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a nas-mtl output folder" in err[0]
        assert _snapshot(out) == before
    file_out = tmp_path / "a_file"
    file_out.write_text("x")
    assert main(["run", str(study), "--out", str(file_out)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_overwrite_replaces_only_what_nas_mtl_wrote(tmp_path, capsys):
    out = tmp_path / "out"
    study = _write_study(tmp_path, ["no_sharing"])
    assert main(["run", str(study), "--out", str(out)]) == 0
    assert (out / OUT_MARKER).exists() and (out / "default/no_sharing/seed_0" / RUN_MARKER).exists()
    (out / "notes.txt").write_text("mine")
    (out / "clusters").mkdir()
    for name in ("clusters.json", "similarity_x_allocation.png", "mine.png"):
        (out / "clusters" / name).write_text("{}")
    other = _write_study(tmp_path, ["no_sharing"], name="other")
    assert main(["run", str(other), "--out", str(out)]) == 2  # another study's results
    assert "--overwrite" in capsys.readouterr().err
    assert main(["run", str(other), "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "clusters").iterdir()) == ["mine.png"]
    umask = os.umask(0)
    os.umask(umask)
    for written in ("report.json", "default/no_sharing/seed_0/result.json"):
        assert (out / written).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert json.loads((out / "report.json").read_text())["study"] == "other"


def test_an_unmarked_run_directory_is_never_removed(tmp_path):
    (tmp_path / "default/x/seed_0").mkdir(parents=True)
    (tmp_path / "default/x/seed_0/data.csv").write_text("1,2")
    with pytest.raises(ConfigError, match="was not created by nas-mtl"):
        replace_run_dir(tmp_path, "default/x/seed_0")
    assert (tmp_path / "default/x/seed_0/data.csv").exists()
    with pytest.raises(ConfigError, match="outside the output folder"):
        replace_run_dir(tmp_path / "out", "../default/x/seed_0")


def test_a_second_run_on_a_locked_out_stops_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from nas_mtl.rundir import LOCK, out_lock

    out = tmp_path / "out"
    with out_lock(out):
        assert (out / LOCK).read_text() == str(os.getpid())
    assert not (out / LOCK).exists()  # released
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(str(holder.pid))  # another live run
        study = _write_study(tmp_path, ["no_sharing"])
        assert main(["run", str(study), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"another nas-mtl run (PID {holder.pid})" in err[0]
    finally:
        holder.kill()
        holder.wait()
    with out_lock(out):  # its process is gone: the stale lock is taken over
        assert (out / LOCK).read_text() == str(os.getpid())


def test_stale_temp_files_of_a_killed_write_are_removed(tmp_path):
    from nas_mtl.rundir import clean_stale_temp_files

    run = tmp_path / "default" / "x" / "seed_0"
    run.mkdir(parents=True)
    (run / ".result.json.ab12.tmp").write_text("half")
    (run / "keep.tmp").write_text("not ours: no leading dot")
    assert clean_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in run.iterdir()) == ["keep.tmp"]


def test_two_space_files_with_one_stem_are_refused(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(ROOT / "search_spaces" / "no_sharing.toml", tmp_path / folder / "x.toml")
    study = _write_study(tmp_path, [str(tmp_path / "a" / "x.toml"), str(tmp_path / "b" / "x.toml")])
    assert main(["run", str(study), "--out", str(tmp_path / "out")]) == 2
    assert "would share the run folder 'x'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
