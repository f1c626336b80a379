"""Optuna on a real PostgreSQL server (tests/postgres.py): parallel workers and a killed one.

The pattern ``nas-mtl tune --storage postgresql+psycopg2://...`` relies on: worker processes
share one study, trial numbers stay unique (Optuna locks the study row while it numbers a new
trial), and a worker killed mid-trial leaves a RUNNING trial whose heartbeat stops, so a later
worker marks it FAILED and the retry callback queues it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

N = 6
# One worker: waits for tmp/go (so that parallel workers start together), then optimizes until
# N trials are complete. MaxTrialsCallback alone would let each other worker finish the trial it
# is running when the N-th completes (N + workers - 1 in all), so a trial starts only while
# fewer than N trials with smaller numbers are waiting, running or complete: trial numbers are
# unique and ordered, so at most N ever complete; the others end PRUNED at once.
WORKER = r"""
import os, sys, time
from pathlib import Path
import optuna
from optuna.trial import TrialState

url, name, n, pause, folder = sys.argv[1:6]
n, pause, folder = int(n), float(pause), Path(folder)
optuna.logging.set_verbosity(optuna.logging.WARNING)
try:  # Optuna >= 4.9 name; RetryFailedTrialCallback before
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    retry = {"heartbeat_stale_trial_callback": Retry(max_retry=3)}
except ImportError:
    from optuna.storages import RetryFailedTrialCallback as Retry
    retry = {"failed_trial_callback": Retry(max_retry=3)}
storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2, **retry)
study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)

def objective(trial):
    trial.set_user_attr("pid", os.getpid())
    live = study.get_trials(deepcopy=False, states=LIVE)
    if sum(t.number < trial.number for t in live) >= n:
        time.sleep(0.05)
        raise optuna.TrialPruned("N trials are complete or under way")
    x = trial.suggest_float("x", -1.0, 1.0)
    (folder / f"running-{trial.number}").touch()
    time.sleep(pause)
    return x * x

(folder / f"ready-{os.getpid()}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
done = optuna.study.MaxTrialsCallback(n, states=(TrialState.COMPLETE,))
study.optimize(objective, callbacks=[done])
"""


def _worker(url: str, name: str, pause: float, folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, name, str(N), str(pause), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def _trials(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_two_worker_processes_share_one_study(postgres_url, tmp_path):
    optuna.create_study(storage=postgres_url, study_name="parallel")  # tables made once
    workers = [_worker(postgres_url, "parallel", pause, tmp_path) for pause in (0.3, 0.4)]
    _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2, 60, "both workers")
    (tmp_path / "go").touch()
    for w in workers:
        _finish(w)
    trials = _trials(postgres_url, "parallel")
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # no number twice, none skipped
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert {t.user_attrs["pid"] for t in complete} == {w.pid for w in workers}  # both worked


def test_a_killed_workers_trial_is_failed_and_retried_by_a_later_worker(postgres_url, tmp_path):
    optuna.create_study(storage=postgres_url, study_name="killed")
    first = _worker(postgres_url, "killed", 0.5, tmp_path)
    (tmp_path / "go").touch()
    _wait_for(lambda: (tmp_path / "running-2").exists(), 60, "the third trial")
    os.kill(first.pid, signal.SIGKILL)  # mid-trial: the objective sleeps for 0.5 s
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    stale = [t for t in _trials(postgres_url, "killed") if t.state == TrialState.RUNNING]
    assert [t.number for t in stale] == [2]

    _finish(_worker(postgres_url, "killed", 0.2, tmp_path))
    trials = {t.number: t for t in _trials(postgres_url, "killed")}
    assert sorted(trials) == list(range(len(trials)))
    assert trials[2].state == TrialState.FAIL  # marked by the later worker (no heartbeat)
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 2]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[2].params  # the same point, evaluated again
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == N
    assert sum(t.state == TrialState.FAIL for t in trials.values()) == 1
