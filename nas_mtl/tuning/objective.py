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
PRUNED_AT = "pruned_at_epoch"  # the search epoch (of seed PRUNED_SEED) at which it stopped
PRUNED_SEED = "pruned_at_seed"


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
    With several ``[tune] seeds`` the steps run on: seed k's epoch e is step k·epochs + e, so
    trials are compared at the same seed and epoch.
    """

    def __init__(self, trial: optuna.Trial, report: bool) -> None:
        self.trial, self.report = trial, report
        self.epoch: int | None = None
        self.offset = 0  # steps of the seeds searched before this one

    @property
    def step(self) -> int:
        return self.offset + (self.epoch or 0)

    def __call__(self, record: Mapping[str, Any]) -> None:
        self.epoch = int(record["epoch"])
        value = record.get("selection_objective")
        if not self.report or value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), self.step)
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
        trial.set_user_attr(RUN_DIR, seed_dir(rel, plan.seed, plan.seeds))
        trial.set_user_attr(OUT, str(self.out.resolve()))  # workers elsewhere have their own
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        trial.set_user_attr(ERROR, None)
        if (self.out / rel).exists():
            raise ConfigError(
                f"{self.out / rel} exists: it belongs to another Optuna study (another "
                f"--study-name or --storage on this --out); use another --out"
            )
        hook = PruningHook(trial, report=not plan.multi_objective)
        runs: list[TrialRun] = []
        try:
            with out_lock(self.out / rel):  # workers never share a trial directory
                for i, seed in enumerate(plan.seeds):
                    hook.offset = i * study.search.epochs  # one step axis over the seeds
                    runs.append(
                        run_trial(
                            study,
                            plan.variant(values),
                            plan.space,
                            seed,
                            self._load(study, seed),
                            self.out,
                            seed_dir(rel, seed, plan.seeds),
                            retrain_model=plan.config.objective == "retrain",
                            on_epoch=hook,
                            progress=self.progress,
                        )
                    )
        except optuna.TrialPruned:
            trial.set_user_attr(PRUNED_AT, hook.epoch)
            if len(plan.seeds) > 1:
                trial.set_user_attr(PRUNED_SEED, plan.seeds[len(runs)])
            raise
        except TrainingError as e:  # a diverging sample: a failed trial, not a failed tune
            trial.set_user_attr(ERROR, str(e))
            raise
        per_seed = [quality(plan.config.objective, run) for run in runs]
        q = sum(per_seed) / len(per_seed)
        costs = {k: sum(r.costs[k] for r in runs) / len(runs) for k in runs[0].costs}
        trial.set_user_attr(RESULT, trial_record(runs, per_seed, q, costs, plan.seeds))
        if plan.multi_objective:
            return q, costs[plan.config.directions[1]]
        return q

    def _load(self, study: Study, seed: int) -> MultiTaskData:
        key = (repr(study.data), seed)
        if key not in self._data:
            self._data[key] = load_data(study, {}, seed, self.data_dir)
        return self._data[key]


def seed_dir(rel: str, seed: int, seeds: tuple[int, ...]) -> str:
    """A trial's run directory for ``seed``: the trial directory itself when it trains one
    seed, ``trials/<n>/seed_<s>`` for each of several."""
    return rel if len(seeds) == 1 else f"{rel}/seed_{seed}"


def trial_record(
    runs: list[TrialRun],
    per_seed: list[float],
    q: float,
    costs: dict[str, float],
    seeds: tuple[int, ...],
) -> dict[str, Any]:
    """A finished trial's user attr ``result``: means over its seeds, then each seed's."""
    first, result = runs[0], runs[0].result
    record: dict[str, Any] = {
        "quality": q,
        **costs,
        "open_fraction": first.architecture.get("open_fraction"),
        "search_loss": first.search_loss,
        "search_epochs": first.search.get("epochs"),
        "status": result.status if result else "searched",
        "failure": result.failure if result else None,
        "val": {t: s.val for t, s in result.tasks.items()} if result else None,
        "mean_test": _mean([r.result.mean_test for r in runs if r.result]),
        "wall_s": sum(r.wall_s for r in runs),
    }
    if len(seeds) > 1:
        record["seeds"] = {
            str(seed): {"quality": qs, **run.costs}
            for seed, qs, run in zip(seeds, per_seed, runs, strict=True)
        }
    return record


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def with_device(plan: TunePlan, device: str | None) -> TunePlan:
    """``--device`` for the search and the retraining of every trial."""
    if device is None:
        return plan
    s = plan.study
    study = replace(
        s, search=replace(s.search, device=device), retrain=replace(s.retrain, device=device)
    )
    return replace(plan, study=study)
