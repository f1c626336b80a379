"""Data-parallel retraining (nas_mtl/stages/distributed.py): shards, one writer, ranks in sync."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas_mtl.cli import main
from nas_mtl.errors import ConfigError
from nas_mtl.stages import distributed
from nas_mtl.stages.batches import steps_in_epoch, train_batches
from nas_mtl.stages.checkpoint import load_checkpoint
from nas_mtl.study import load_study
from nas_mtl.study_data import load_data

# Per-task inputs, 192 rows per task in batches of 64: 3 steps per epoch, so with 2 ranks the
# last group has one batch and rank 1 takes a stand-in step (the uneven case).
STUDY = """
name = "ddp"
spaces = ["snr_trans"]
seeds = [0]

[data]
name = "synthetic"

[data.params]
inputs = "per_task"
n_train = 192
n_val = 64
n_test = 64
input_dim = 8
groups = [2, 1]

[space_params]
snr_trans = { subnetworks = 2, width = 8 }

[search]
epochs = 2
batch_size = 64

[retrain]
lr = 3e-2
epochs = 3
min_steps = 0
batch_size = 64
patience = 5
"""
RUN = Path("default/snr_trans/seed_0")
DIGEST = re.compile(r"retrain: rank (\d+) of 2 weights sha256 ([0-9a-f]{64})")


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 11])
def test_shard_gives_every_batch_to_exactly_one_rank_in_equal_steps(n, world):
    per_rank = [list(distributed.shard(range(n), rank=r, world=world)) for r in range(world)]
    assert len({len(steps) for steps in per_rank}) == 1  # lockstep: no rank waits in all-reduce
    trained = sorted(b for steps in per_rank for b, share in steps if share > 0)
    assert trained == list(range(n))
    for step in zip(*per_rank, strict=True):  # DDP averages over `world`: mean of real batches
        real = [share for _, share in step if share > 0]
        assert sum(real) == pytest.approx(world) and len(set(real)) == 1


def test_shard_is_the_identity_in_one_process():
    assert list(distributed.shard("abc")) == [("a", 1.0), ("b", 1.0), ("c", 1.0)]


def test_ranks_draw_the_same_stream_and_split_it(tmp_path):
    path = tmp_path / "ddp.toml"
    path.write_text(STUDY)
    data = load_data(load_study(path), {}, 0)
    n = steps_in_epoch(data, data.train, 64, None)
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    parts = [
        list(distributed.shard(train_batches(data, data.train, 64, None, g), rank=r, world=2))
        for r, g in enumerate(gens)
    ]
    assert torch.equal(gens[0].get_state(), gens[1].get_state())  # checkpoints stay valid
    whole = list(train_batches(data, data.train, 64, None, torch.Generator().manual_seed(0)))
    assert len(whole) == n == 3
    (x00, _), share00 = parts[0][0]
    (x10, _), share10 = parts[1][0]
    (x01, _), share01 = parts[0][1]
    (x11, _), share11 = parts[1][1]
    assert torch.equal(x00, whole[0][0]) and torch.equal(x10, whole[1][0])
    assert share00 == share10 == 1.0
    assert torch.equal(x01, whole[2][0]) and share01 == 2.0  # the last group has one batch:
    assert torch.equal(x11, whole[2][0]) and share11 == 0.0  # rank 1 steps along with share 0


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed.process_group("auto") as device:
        assert device == "auto"
        assert not torch.distributed.is_initialized()
        assert distributed.world_size() == 1 and distributed.is_main()
        assert distributed.from_main(lambda: 7) == 7
        assert distributed.mean_over_ranks({"a": 3.0}, 2) == {"a": 1.5}
        net = torch.nn.Linear(2, 2)
        assert distributed.wrap(net, torch.device("cpu")) is net
        assert distributed.check_in_sync(net, "x") is None


def test_a_torchrun_rank_gets_its_own_device(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.rank_device("cpu") == "cpu"
    assert distributed.rank_device("auto") == ("cuda:1" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="cuda:LOCAL_RANK.*device='cuda:0'"):
        distributed.rank_device("cuda:0")
    assert not distributed.is_main()  # rank 1 prints nothing, even outside the group


def test_state_digest_sees_every_value():
    state = {"w": torch.zeros(2, 3), "b": torch.tensor(1.0)}
    same = {"b": torch.tensor(1.0), "w": torch.zeros(2, 3)}
    assert distributed.state_digest(state) == distributed.state_digest(same)
    state["w"][1, 2] = 1e-30
    assert distributed.state_digest(state) != distributed.state_digest(same)


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "nas_mtl", "spaces"], capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[0] == "custom_dag"


@pytest.mark.slow
def test_torchrun_retrains_data_parallel_with_one_writer_and_equal_ranks(tmp_path):
    study = tmp_path / "ddp.toml"
    study.write_text(STUDY)
    assert main(["run", str(study), "--out", str(tmp_path / "out")]) == 0
    run = tmp_path / "out" / RUN
    (run / "retrain_log.jsonl").unlink()  # what follows is written by the torchrun job alone
    for old in (run / "checkpoints").glob("retrain_*.pt"):
        old.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, "-m", "nas_mtl", "retrain", str(run), "--device", "cpu", "-v"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("joined: gloo, cpu") == 2

    printed = [ln for ln in done.stdout.splitlines() if re.match(r"g\d_t\d: ", ln)]
    assert sorted(ln.split(":")[0] for ln in printed) == ["g0_t0", "g0_t1", "g1_t0"]  # once
    values = [float(v) for ln in printed for v in re.findall(r" (-?[\d.]+(?:e-?\d+)?)", ln)]
    assert values and all(math.isfinite(v) for v in values)

    records = [json.loads(ln) for ln in (run / "retrain_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]  # one writer: no line twice
    assert [r["step"] for r in records] == [2, 4, 6]  # 3 batches per epoch over 2 ranks
    assert all(math.isfinite(v) for r in records for v in r["val_loss"].values())
    assert all(math.isfinite(v) for r in records for v in r["train_loss"].values())
    files = sorted(p.name for p in (run / "checkpoints").iterdir() if "retrain" in p.name)
    assert files == ["retrain_best.pt", "retrain_epoch_002.pt"]  # no temp file left behind

    digests = dict(DIGEST.findall(done.stderr))
    assert set(digests) == {"0", "1"}, done.stderr[-3000:]
    best = load_checkpoint(run / "checkpoints" / "retrain_best.pt")["model"]
    assert digests["0"] == digests["1"] == distributed.state_digest(best)
