"""The same command twice gives the same results bit for bit, whatever the load and the hash
seed (docs/speed.md, "Threads"; docs/runs.md). 200 steps per training: long enough that the
earlier thread count, timed on a few steps, was measured and could differ under load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import without_measured

STUDY = """name = "repeat"
spaces = ["no_sharing", "shared_bottom", "mmoe", "snr_trans", "snr_aver", "gumbel_matrix"]
seeds = [0]

[data]
name = "synthetic"
params = { n_train = 1600, n_val = 200, n_test = 200, input_dim = 16, groups = [2, 2], m = 3 }

[space_params]
snr_trans = { subnetworks = 3, width = 8 }
snr_aver = { subnetworks = 3, width = 8 }
gumbel_matrix = { components = 4, width = 8 }
mmoe = { experts = 3, expert_width = 8 }

[search]
epochs = 4
batch_size = 32

[retrain]
epochs = 4
batch_size = 32
"""


def _metrics(report: Path) -> list[dict]:
    return without_measured(json.loads(report.read_text())["results"])


def _run(study: Path, out: Path, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "nas_mtl.cli", "run", str(study), "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr  # 1: a run worse than a constant


@pytest.mark.slow
def test_the_same_command_twice_gives_identical_metrics_beside_another_process(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    _run(study, tmp_path / "quiet", hash_seed="1")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:  # the second run shares the CPU with a busy process
        _run(study, tmp_path / "loaded", hash_seed="2")
    finally:
        burner.kill()
        burner.wait()
    first, second = (
        _metrics(tmp_path / "quiet" / "report.json"),
        _metrics(tmp_path / "loaded" / "report.json"),
    )
    assert [r["space"] for r in first] == [r["space"] for r in second]
    assert len(first) == 6
    for a, b in zip(first, second, strict=True):
        assert a == b, a["space"]
