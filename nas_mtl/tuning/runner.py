"""``nas-mtl tune``: run trials until the Optuna study has N finished ones, then hand over.

``trials`` is the total the study should reach, not a number to add: a rerun with the same N
does nothing but write the pick again, a larger N adds the difference, and a run killed at any
point continues where it stopped. Every worker (this process and the ``--workers`` it starts,
or another ``nas-mtl tune`` on the same storage) counts the finished (complete + pruned) and
running trials before it starts one, under a lock in OUT, so together they never run past N;
a worker that sees N reached, or N about to be reached by running trials, waits for those
instead (a stale one, from a killed worker, is failed and re-enqueued meanwhile).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_mtl.errors import ConfigError, NasMtlError, TrainingError
from nas_mtl.parallel_runs import threads_per_worker
from nas_mtl.rundir import OUT_MARKER, STUDY_COPY, STUDY_JSON, check_out, prepare_out, safe_name
from nas_mtl.stages.evaluation import resolve_device
from nas_mtl.storage import read_json, write_bytes_atomic, write_json_atomic
from nas_mtl.study import Study, load_study
from nas_mtl.tuning.config import TunePlan, plan_tune, trials_fingerprint
from nas_mtl.tuning.gate import StartGate
from nas_mtl.tuning.objective import ERROR, SurplusTrial, TrialObjective, with_device
from nas_mtl.tuning.outputs import write_best
from nas_mtl.tuning.pareto import pick_trial
from nas_mtl.tuning.plots import write_plots
from nas_mtl.tuning.store import (
    FINISHED,
    Counts,
    count_trials,
    default_storage_url,
    open_storage,
    open_study,
    quiet_experimental,
    shown_url,
)
from nas_mtl.tuning.workers import (
    start_workers,
    stop_workers,
    wait_workers,
    worker_command,
)

log = logging.getLogger(__name__)

TUNE_INFO = "tune.json"  # in OUT: the Optuna study whose trials OUT/trials holds
START_LOCK = ".nas-mtl-tune-start"  # held from counting the trials to creating one
MAX_FAILED_IN_A_ROW = 5  # a worker whose trials all fail stops instead of burning the budget


@dataclass
class TuneOutcome:
    """Where a tune stands: its files, its trials by state and the picked trial."""

    out: Path
    storage: str  # its URL, password hidden
    study_name: str
    counts: Counts
    picked: FrozenTrial | None = None
    files: list[Path] = field(default_factory=list)
    ran: int = 0  # trials this process ran


def default_tune_out(study: Study) -> Path:
    return Path("runs") / f"{safe_name(study.name)}_tune"


def tune(
    study: Study,
    trials: int,
    *,
    out: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    worker: int | None = None,
    progress: bool = False,
) -> TuneOutcome:
    """Tune ``study``'s ``[tune.params]`` until its Optuna study has ``trials`` finished trials.

    ``on_trial`` receives each trial this process finishes. ``worker`` marks a worker started
    by another ``tune`` call: it runs trials only, and leaves OUT's files to its starter.
    """
    if trials < 1 or workers < 1:
        raise ConfigError(f"--trials and --workers must be >= 1, got {trials} and {workers}")
    if device is not None:
        resolve_device(device)  # fail now, not in the first trial
    plan = with_device(plan_tune(study), device)
    out = Path(out) if out is not None else default_tune_out(study)
    url = storage or default_storage_url(out)
    name = study_name or study.name
    starter = worker is None
    if starter:
        check_out(out)
        if not (out / OUT_MARKER).exists():  # new or empty: make it a nas-mtl output folder
            prepare_out(study, out)
        _check_study_copy(out, study)
        _claim(out, name)
    with quiet_experimental():
        ostudy = open_study(open_storage(url, plan.config), name, plan, worker or 0)
    if starter and plan.multi_objective and plan.config.pruner != "none":
        log.warning("[tune] pruner is off: Optuna does not prune multi-objective studies")
    procs = []
    if starter and workers > 1:
        if study.path is None:
            raise ConfigError("--workers > 1 needs a study file (workers load it themselves)")
        commands = [
            worker_command(study.path, trials, out, url, name, i, data_dir, device)
            for i in range(1, workers)
        ]
        if "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(threads_per_worker(workers))
        procs = start_workers(commands)
    objective = TrialObjective(plan, out, data_dir, progress)
    try:
        ran = work(ostudy, plan, trials, out, objective, on_trial, say_wait=starter)
    except BaseException:
        stop_workers(procs)
        raise
    wait_workers(procs)
    outcome = TuneOutcome(out, shown_url(url), name, count_trials(ostudy), ran=ran)
    if starter:
        outcome.picked = pick_trial(ostudy, plan.config.pick, plan.config.tolerance)
        if outcome.picked is not None:
            outcome.files = write_best(ostudy, plan, out, outcome.picked)
        outcome.files += write_plots(ostudy, plan, out, outcome.picked)
    return outcome


def work(
    study: optuna.Study,
    plan: TunePlan,
    trials: int,
    out: Path,
    objective: TrialObjective,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    say_wait: bool = True,
) -> int:
    """Run trials until the study has ``trials`` finished ones; returns how many ran here.

    ``say_wait``: log (once) that this worker waits for trials running elsewhere.
    """
    gate = StartGate(out / START_LOCK)
    objective.before = gate.release  # the trial is in the storage: others may count it now
    objective.limit = trials
    ran: list[FrozenTrial] = []

    def finished(_: optuna.Study, trial: FrozenTrial) -> None:
        ran.append(trial)
        if on_trial is not None:
            on_trial(trial)

    callbacks = [optuna.study.MaxTrialsCallback(trials, states=FINISHED), finished]
    poll = max(1, min(plan.config.heartbeat, 5))
    told = not say_wait
    while True:
        gate.acquire()
        try:
            with quiet_experimental():
                optuna.storages.fail_stale_trials(study)  # a killed worker's trial: retried
            counts = count_trials(study)
            if counts.finished >= trials:
                return len(ran)
            if counts.finished + counts.running < trials:
                study.optimize(
                    objective, n_trials=1, callbacks=callbacks, catch=(TrainingError, SurplusTrial)
                )
                _check_failures(ran)
                continue
        finally:
            gate.release()
        if not told:
            log.warning(
                "waiting for %d trial(s) running in other workers (the trial of a killed "
                "worker is retried once silent for [tune] grace = %d s)",
                counts.running,
                plan.config.grace,
            )
            told = True
        time.sleep(poll)


def _check_failures(ran: list[FrozenTrial]) -> None:
    last = [t for t in ran if not str(t.user_attrs.get(ERROR)).startswith("surplus")]
    last = last[-MAX_FAILED_IN_A_ROW:]
    if len(last) == MAX_FAILED_IN_A_ROW and all(t.state == TrialState.FAIL for t in last):
        raise ConfigError(
            f"{MAX_FAILED_IN_A_ROW} trials in a row failed (the last: "
            f"{last[-1].user_attrs.get(ERROR)}); narrow the [tune.params] ranges"
        )


def _check_study_copy(out: Path, study: Study) -> None:
    """The trials' context.json files name OUT's copy of the study: it must be this study.

    A copy that differs in the tuning-only settings of [tune] (ranges, pick, pruner, ...) is
    replaced: the trials stay comparable (``trials_fingerprint``).
    """
    copy = out / STUDY_COPY
    if not copy.exists() and not (out / STUDY_JSON).exists():
        prepare_out(study, out)
    elif copy.exists() and study.path is not None and copy.read_bytes() != _read(study.path):
        try:
            same = trials_fingerprint(load_study(copy)) == trials_fingerprint(study)
        except NasMtlError:
            same = False
        if not same:
            raise ConfigError(
                f"{out} was written for another study or another version of {study.path} "
                f"({copy} differs outside the tuning settings of [tune]); use another --out"
            )
        write_bytes_atomic(copy, _read(study.path))


def _read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _claim(out: Path, name: str) -> None:
    """One Optuna study per OUT: trial directories are named by trial number."""
    path = out / TUNE_INFO
    if path.exists():
        held = read_json(path, "tune info").get("study_name")
        if held != name:
            raise ConfigError(
                f"{out} holds the trials of Optuna study '{held}', not '{name}'; use "
                f"another --out (or --study-name {held})"
            )
        return
    write_json_atomic(path, {"study_name": name})
