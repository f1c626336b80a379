"""Where trials live: an Optuna RDB storage with heartbeats, and the study in it.

Any SQLAlchemy URL works (``sqlite:///OUT/optuna.db`` by default, PostgreSQL or MySQL for
workers on several machines). Every running trial beats every ``[tune] heartbeat`` seconds; a
trial that stayed silent for ``grace`` seconds belonged to a killed worker, and the next worker
to look marks it failed and re-enqueues it with the same params (Optuna's retry callback), so
``kill -9`` costs one trial's work and no trial is lost or counted twice.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import TrialState

from nas_mtl.errors import ConfigError
from nas_mtl.study import SearchConfig
from nas_mtl.study_sections import TuneConfig
from nas_mtl.tuning.config import TunePlan, trials_fingerprint

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials N counts
BASELINE = "baseline"  # trial user attr: the trial ran the study's own values
FINGERPRINT = "nas_mtl_study"  # Optuna study user attr: what the trials ran (trials_fingerprint)
SQLITE_TIMEOUT_S = 60  # workers share one SQLite file: wait for its write lock, don't fail


def default_storage_url(out: Path) -> str:
    """``sqlite:///OUT/optuna.db``: the storage travels with the output folder."""
    return f"sqlite:///{Path(out).as_posix()}/optuna.db"


def shown_url(url: str) -> str:
    """``url`` fit to print: a password becomes ``***``."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: open_storage says so
        return url


@contextmanager
def quiet_experimental() -> Iterator[None]:
    """Heartbeats, retries and the matplotlib plots are 'experimental' in Optuna: say it once
    in docs/tuning.md rather than in a warning on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def open_storage(url: str, cfg: TuneConfig) -> optuna.storages.RDBStorage:
    """The RDB storage at ``url`` with heartbeats and a retry of stale trials."""
    # Optuna 4.9 renamed the callback and its argument; 3.4 (our floor) has the old names
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    arg = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in params
        else "failed_trial_callback"
    )
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    try:
        with quiet_experimental():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=cfg.heartbeat,
                grace_period=cfg.grace,
                **{arg: retry_cls(max_retry=cfg.max_retry)},
            )
    except ImportError as e:
        raise ConfigError(
            f"--storage {url}: its database driver is not installed ({e}); e.g. "
            f"pip install psycopg2-binary for postgresql://"
        ) from None
    except Exception as e:  # SQLAlchemy's errors: a bad URL, no server, no permission
        raise ConfigError(f"--storage {url}: cannot open it: {type(e).__name__}: {e}") from None


def session_seed(seed: int, worker: int, n_trials: int) -> int:
    """A sampler seed per worker and per session: reproducible, never the same stream twice.

    A sampler seeded with ``seed`` alone would draw trial 0's params again in a second
    worker, and again after a restart.
    """
    return int(np.random.SeedSequence([seed, worker, n_trials]).generate_state(1)[0])


def open_study(
    storage: optuna.storages.BaseStorage, name: str, plan: TunePlan, worker: int = 0
) -> optuna.Study:
    """Create or load the Optuna study ``name``: directions, sampler, pruner and the check
    that its trials ran this version of the study file."""
    cfg = plan.config
    directions = ["minimize"] * len(cfg.directions)  # quality and cost: lower is better
    with quiet_experimental():
        study = optuna.create_study(
            storage=storage, study_name=name, directions=directions, load_if_exists=True
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            f"Optuna study '{name}' in the storage has {len(study.directions)} objective(s), "
            f"[tune] directions has {len(directions)}; use another --study-name or --out"
        )
    trials = study.get_trials(deepcopy=False)
    held, fingerprint = study.user_attrs.get(FINGERPRINT), trials_fingerprint(plan.study)
    if trials and held is not None and held != fingerprint:
        raise ConfigError(
            f"Optuna study '{name}' holds trials of a different version of "
            f"{plan.study.path or 'the study'} (settings outside [tune], or its space, "
            f"objective or directions changed); use another --study-name or --out"
        )
    if held != fingerprint:
        study.set_user_attr(FINGERPRINT, fingerprint)
    if not trials and worker == 0 and cfg.baseline:
        baseline = plan.baseline_values()
        if baseline is None:
            log.warning("[tune] baseline: a tuned key has no value in the study; no baseline")
        else:  # trial 0 scores the study as written: the pick is never worse on the objective
            study.enqueue_trial(baseline, user_attrs={BASELINE: True}, skip_if_exists=True)
    seed = session_seed(cfg.seed, worker, len(trials))
    if plan.multi_objective:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(
            population_size=max(2, cfg.startup_trials), seed=seed
        )
    else:
        sampler = optuna.samplers.TPESampler(n_startup_trials=cfg.startup_trials, seed=seed)
    with quiet_experimental():
        return optuna.load_study(
            study_name=name, storage=storage, sampler=sampler, pruner=_pruner(plan)
        )


def _pruner(plan: TunePlan) -> optuna.pruners.BasePruner:
    cfg, search = plan.config, plan.study.search
    if cfg.pruner == "none" or plan.multi_objective:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.startup_trials, n_warmup_steps=pruning_starts(search)
    )


def pruning_starts(search: SearchConfig) -> int:
    """The first search epoch at which a trial may be pruned: half-way through annealing.

    Before it, the selection loss ranks how fast a search learns rather than where it ends: on
    planted_groups, pruning right after the warm-up stopped 14 of 20 trials, while the curves
    of the searches that went on met by epoch ~45 (``docs/tuning.md``, "Pruning").
    """
    warm = math.floor(search.warmup * search.epochs)
    return warm + math.ceil(0.5 * search.anneal * (search.epochs - warm))


@dataclass(frozen=True)
class Counts:
    """Trials by state, as --trials N sees them."""

    finished: int  # complete + pruned
    complete: int
    running: int
    waiting: int  # enqueued, e.g. the retry of a killed trial
    failed: int


def count_trials(study: optuna.Study) -> Counts:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return Counts(
        finished=sum(s in FINISHED for s in states),
        complete=states.count(TrialState.COMPLETE),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        failed=states.count(TrialState.FAIL),
    )
