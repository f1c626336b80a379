"""Optuna's objective: one trial samples the ``[tune.params]``, runs the tuned space, scores it.

Quality is always lower-is-better, so one pruner and one Pareto rule serve every task type:

- objective ``"search"``: the validation loss of the architecture the search selected (the
  weighted task losses, ``docs/search.md``, "Selection");
- objective ``"retrain"``: the mean over tasks of the retrained model's validation primary
  metric, a higher-is-better metric (AUC, accuracy, R²) entering as ``1 − value`` (error rate,
  normalized MSE); validation, never test, so the test metrics stay untouched by the tuning.

The pruner sees the search's per-epoch selection loss (``on_epoch``), in both cases.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas_mtl.data import MultiTaskData
from nas_mtl.errors import ConfigError, NasMtlError, TrainingError
from nas_mtl.results import TaskScore
from nas_mtl.rundir import out_lock
from nas_mtl.study import Study
from nas_mtl.study_data import load_data
from nas_mtl.tuning.config import TunePlan
from nas_mtl.tuning.trial_run import TRIALS, TrialRun, run_trial

RUN_DIR = "run_dir"  # trial user attrs: the trial's run directory, relative to OUT
OUT = "out"  # ... and that OUT, absolute
RESULT = "result"  # ... what it measured (quality, costs, open fraction, metrics)
ERROR = "error"  # ... why it failed
PRUNED_AT = "pruned_at_epoch"


def retrain_quality(tasks: Mapping[str, TaskScore]) -> float:
    """Mean validation primary metric over tasks, each as lower-is-better (``1 − m`` if higher).

    >>> from nas_mtl.results import TaskScore
    >>> retrain_quality({"a": TaskScore("auc", True, 0.75, 0.7, {}),
    ...                  "b": TaskScore("mse", False, 0.5, 0.6, {})})
    0.375
    """
    return sum(1.0 - t.val if t.higher_is_better else t.val for t in tasks.values()) / len(tasks)


def quality(objective: str, run: TrialRun) -> float:
    if objective == "search":
        return float(run.search_loss) if run.search_loss is not None else math.nan
    assert run.result is not None  # objective "retrain" retrains
    return retrain_quality(run.result.tasks)


class PruningHook:
    """The search's ``on_epoch``: report each epoch's selection loss, stop when told to.

    Optuna prunes single-objective studies only; with two objectives nothing is reported.
    """

    def __init__(self, trial: optuna.Trial, report: bool) -> None:
        self.trial, self.report = trial, report
        self.epoch: int | None = None

    def __call__(self, record: Mapping[str, Any]) -> None:
        self.epoch = int(record["epoch"])
        value = record.get("selection_objective")
        if not self.report or value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), self.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after search epoch {self.epoch}")


class SurplusTrial(NasMtlError):
    """A trial started by a worker that raced another one past --trials: it ends FAIL unrun."""


LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


class TrialObjective:
    """Callable by ``Study.optimize``: returns quality, or (quality, cost) for two objectives.

    ``before`` runs first in every trial, once the trial is in the storage (the runner opens
    its start gate there). With ``limit`` N, a trial that finds N live trials with smaller
    numbers does not run: trial numbers are unique and ordered in every storage, so workers
    that share no start gate (other machines) still never finish more than N trials. Data are
    loaded once per worker unless a trial's values change them.
    """

    def __init__(
        self,
        plan: TunePlan,
        out: Path,
        data_dir: str | Path | None = None,
        progress: bool = False,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.plan, self.out, self.data_dir, self.progress = plan, Path(out), data_dir, progress
        self.before = before
        self.limit: int | None = None
        self._data: dict[str, MultiTaskData] = {}

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        if self.before is not None:
            self.before()
        if self.limit is not None:
            live = trial.study.get_trials(deepcopy=False, states=LIVE)
            if sum(t.number < trial.number for t in live) >= self.limit:
                trial.set_user_attr(ERROR, f"surplus: {self.limit} trials were under way")
                raise SurplusTrial(f"{self.limit} earlier trials are finished or under way")
        plan = self.plan
        values = {p.key: p.suggest(trial) for p in plan.params}
        study = plan.trial_study(values)
        rel = f"{TRIALS}/{trial.number}"
        trial.set_user_attr(RUN_DIR, rel)
        trial.set_user_attr(OUT, str(self.out.resolve()))  # workers elsewhere have their own
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        trial.set_user_attr(ERROR, None)
        if (self.out / rel).exists():
            raise ConfigError(
                f"{self.out / rel} exists: it belongs to another Optuna study (another "
                f"--study-name or --storage on this --out); use another --out"
            )
        hook = PruningHook(trial, report=not plan.multi_objective)
        try:
            with out_lock(self.out / rel):  # workers never share a trial directory
                run = run_trial(
                    study,
                    plan.variant(values),
                    plan.space,
                    plan.seed,
                    self._load(study),
                    self.out,
                    rel,
                    retrain_model=plan.config.objective == "retrain",
                    on_epoch=hook,
                    progress=self.progress,
                )
        except optuna.TrialPruned:
            trial.set_user_attr(PRUNED_AT, hook.epoch)
            raise
        except TrainingError as e:  # a diverging sample: a failed trial, not a failed tune
            trial.set_user_attr(ERROR, str(e))
            raise
        q = quality(plan.config.objective, run)
        result = run.result
        trial.set_user_attr(
            RESULT,
            {
                "quality": q,
                **run.costs,
                "open_fraction": run.architecture.get("open_fraction"),
                "search_loss": run.search_loss,
                "search_epochs": run.search.get("epochs"),
                "status": result.status if result else "searched",
                "failure": result.failure if result else None,
                "val": {t: s.val for t, s in result.tasks.items()} if result else None,
                "mean_test": result.mean_test if result else None,
                "wall_s": run.wall_s,
            },
        )
        if plan.multi_objective:
            return q, run.costs[plan.config.directions[1]]
        return q

    def _load(self, study: Study) -> MultiTaskData:
        key = repr(study.data)
        if key not in self._data:
            self._data[key] = load_data(study, {}, self.plan.seed, self.data_dir)
        return self._data[key]


def with_device(plan: TunePlan, device: str | None) -> TunePlan:
    """``--device`` for the search and the retraining of every trial."""
    if device is None:
        return plan
    s = plan.study
    study = replace(
        s, search=replace(s.search, device=device), retrain=replace(s.retrain, device=device)
    )
    return replace(plan, study=study)
