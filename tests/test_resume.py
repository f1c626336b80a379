"""kill -9 at any point, then the same command: the run ends as an uninterrupted one would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import without_measured

STUDY = """name = "resume"
spaces = ["snr_trans"]
seeds = [0]

[data]
name = "synthetic"
params = { n_train = 3000, n_val = 200, n_test = 200, input_dim = 8, groups = [2, 1] }

[space_params]
snr_trans = { subnetworks = 3, width = 16 }

[search]
epochs = 8
batch_size = 32
patience = 20
checkpoint_every_s = 0  # a checkpoint after every epoch, to be killed after one

[retrain]
epochs = 8
batch_size = 32
lr = 1e-2
patience = 20
checkpoint_every_s = 0
"""
RUN = Path("default/snr_trans/seed_0")


def _cmd(study: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "nas_mtl.cli", "run", str(study), "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _comparable(path: Path) -> dict:
    return without_measured(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    study = folder / "study.toml"
    study.write_text(STUDY)
    subprocess.run(_cmd(study, folder / "out"), env=_env(), check=True, capture_output=True)
    return folder / "out" / RUN


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["search", "retrain"])
def test_a_killed_run_resumes_from_its_last_epoch_and_ends_the_same(tmp_path, reference, stage):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    out = tmp_path / "out"
    mark = out / RUN / "checkpoints" / f"{stage}_epoch_002.pt"
    proc = subprocess.Popen(_cmd(study, out), env=_env(), stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not mark.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / RUN / "result.json").exists(), "the run ended before it was killed"
    again = subprocess.run([*_cmd(study, out), "-v"], env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"{stage}: resuming after epoch" in again.stderr  # not a restart from epoch 0
    log = (out / RUN / f"{stage}_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == list(range(len(log)))  # no repeats
    for name in ("result.json", "architecture.json", "search.json"):
        assert _comparable(out / RUN / name) == _comparable(reference / name), name
