"""Tuning a study's own settings with Optuna: ``nas-mtl tune`` (``docs/tuning.md``).

One module per job: ``config`` checks the ``[tune]`` table against its study, ``store`` opens
the Optuna storage (heartbeats, retries) and study, ``objective`` and ``trial_run`` run and
score one trial, ``gate`` and ``workers`` let several processes share a study, ``pareto``
picks the trial to hand over, ``outputs`` and ``plots`` write it to OUT, and ``runner`` ties
them together.
"""

from __future__ import annotations

from nas_mtl.tuning.config import ParamSpec, TunePlan, parse_param, plan_tune
from nas_mtl.tuning.objective import retrain_quality
from nas_mtl.tuning.pareto import pareto_front, pick_index, pick_trial
from nas_mtl.tuning.runner import TuneOutcome, default_tune_out, tune

__all__ = [
    "ParamSpec",
    "TuneOutcome",
    "TunePlan",
    "default_tune_out",
    "pareto_front",
    "parse_param",
    "pick_index",
    "pick_trial",
    "plan_tune",
    "retrain_quality",
    "tune",
]
