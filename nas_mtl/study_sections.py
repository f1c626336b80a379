"""The small study tables: ``[derive]``, ``[controls]``, ``[report]``, ``[retrain]``, ``[tune]``.

Split from ``study`` (which re-exports them) so that the study module keeps to parsing and the
two large tables, data and search. Each is a frozen dataclass whose fields are the table's keys,
with its defaults and the reason for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.ranges import (
    AT_LEAST_0,
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    TRAINING_RULES,
    UNIT,
    check_ranges,
)

DERIVE_POOLS = ("affinity", "none")
RETRAIN_INITS = ("scratch", "search")


@dataclass(frozen=True)
class DeriveConfig:
    """Turn gate distributions into one discrete architecture."""

    samples: int = 0  # K extra architectures sampled from the gates; best on validation wins
    # per-task gates decide per group of tasks, the groups found on the search's gradient
    # affinity ("affinity"), or each task alone ("none") (docs/search.md, "Group-consistent
    # derive"); needs [search] affinity_every > 0, else each task decides alone
    pool: str = "affinity"
    groups: int | None = None  # number of task groups (all pooled); default: the best
    # silhouette's, each pooled when its tasks' mean normalized affinity (≈ gradient cosine)
    # reaches min_affinity
    min_affinity: float = 0.1

    def __post_init__(self) -> None:
        check_ranges(
            "[derive]", self, {"samples": AT_LEAST_0, "groups": AT_LEAST_1, "min_affinity": UNIT}
        )
        if self.pool not in DERIVE_POOLS:
            raise ConfigError(
                f"[derive] pool = {self.pool!r} is not one of {', '.join(DERIVE_POOLS)}"
                f"{did_you_mean(str(self.pool), DERIVE_POOLS)}"
            )


@dataclass(frozen=True)
class ControlsConfig:
    """Extra rows that isolate what the search contributes (docs/search.md, "Controls")."""

    # K architectures drawn uniformly at each searched space's open fraction, retrained the
    # same way: a search that does not beat them has not found structure (standard NAS check)
    random: int = 0

    def __post_init__(self) -> None:
        check_ranges("[controls]", self, {"random": AT_LEAST_0})


@dataclass(frozen=True)
class ReportConfig:
    """What ``nas-mtl run`` adds to its report once every run has finished (docs/plots.md)."""

    plots: bool = False  # each searched run's pictures (nas-mtl plot), embedded in the report
    cluster: bool = False  # task groups of each searched space (nas-mtl cluster)
    k: int | None = None  # number of task groups; default: chosen by silhouette

    def __post_init__(self) -> None:
        check_ranges("[report]", self, {"k": AT_LEAST_1})


@dataclass(frozen=True)
class RetrainConfig:
    """Train the derived, pruned architecture from scratch."""

    epochs: int = 20
    batch_size: int = 256
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    # at least this many training steps (early stopping may end it sooner): a small data
    # set's epochs are few steps each, and a model stopped far from converged says how fast
    # it learns, not how good it is; the patience stretches with the epochs (0: exactly
    # `epochs`)
    min_steps: int = 2000
    device: str = "auto"  # auto: CUDA when available, else CPU
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    # torch.compile the training forward; off by default: the compile costs more than it
    # saves in short runs (docs/speed.md)
    compile: bool = False
    threads: int = 0  # intra-op threads on the CPU; 0: by the step's FLOPs, as in [search]
    checkpoint_every_s: float = 10.0  # resumable checkpoints at most this often, as in [search]
    # "scratch": fresh weights (the papers' protocol); "search": start from the searched
    # supernet's weights, so a few epochs fine-tune what the search trained (docs/search.md,
    # "Warm start"); spaces without a search start from scratch either way
    init: str = "scratch"

    def __post_init__(self) -> None:
        check_ranges("[retrain]", self, {**TRAINING_RULES, "lr": POSITIVE, "min_steps": AT_LEAST_0})
        if self.init not in RETRAIN_INITS:
            raise ConfigError(
                f"[retrain] init = {self.init!r} is not one of {', '.join(RETRAIN_INITS)}"
                f"{did_you_mean(str(self.init), RETRAIN_INITS)}"
            )


TUNE_OBJECTIVES = ("retrain", "search")
TUNE_COSTS = ("macs", "params")
TUNE_PICKS = ("best", "cheapest_within")
TUNE_PRUNERS = ("median", "none")


@dataclass(frozen=True)
class TuneConfig:
    """``nas-mtl tune``: an Optuna study over the study's own settings (``docs/tuning.md``).

    Empty ``params`` (the default) means the study cannot be tuned. The dotted paths in
    ``params`` are checked against the study when tuning starts (``nas_mtl.tuning.config``);
    the scalar settings are checked here, when the file is read.
    """

    space: str | None = None  # the searched space to tune; default: the study's first searched
    # "retrain": validation metric of the retrained derived model (each trial retrains);
    # "search": validation loss of the search's selected derived architecture (cheaper)
    objective: str = "retrain"
    # ["quality"], or ["quality", "macs" | "params"]: a Pareto front of quality against cost
    directions: tuple[str, ...] = ("quality",)
    pick: str = "best"  # or "cheapest_within": the cheapest front point within tolerance
    tolerance: float = 0.01  # relative to the best quality, for pick = "cheapest_within"
    seed: int = 0  # sampler seed (TPE for one objective, NSGA-II for two)
    # the seeds every trial trains (data split, initialisation): quality is their mean, so a
    # pick is not a lucky draw of one seed; empty: the study's first seed only (cheapest)
    seeds: tuple[int, ...] = ()
    # trial 0 runs the study's own values of the tuned keys: the tuning starts from the
    # default, so the pick is never worse than it on the objective
    baseline: bool = True
    pruner: str = "median"  # median stopping on the search's per-epoch selection loss, or none
    # trials sampled at random before TPE models (NSGA-II: the population size), and trials
    # that finish before the pruner may stop one: small budgets need a small number here
    startup_trials: int = 4
    # seconds between a running trial's heartbeats; a trial silent for `grace` seconds (its
    # worker was killed) is marked failed and retried with the same params, up to max_retry
    heartbeat: int = 10
    grace: int = 60
    max_retry: int = 2
    # dotted study path -> {low, high[, log, step, type]} or {choices = [...]}
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "[tune]"
        check_ranges(
            where,
            self,
            {
                "tolerance": NON_NEGATIVE,
                "startup_trials": AT_LEAST_1,
                "heartbeat": AT_LEAST_1,
                "grace": AT_LEAST_1,
                "max_retry": AT_LEAST_0,
            },
        )
        for name, value, allowed in (
            ("objective", self.objective, TUNE_OBJECTIVES),
            ("pick", self.pick, TUNE_PICKS),
            ("pruner", self.pruner, TUNE_PRUNERS),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"{where} {name} = {value!r} is not one of {', '.join(allowed)}"
                    f"{did_you_mean(str(value), allowed)}"
                )
        d = tuple(self.directions)
        if d != ("quality",) and not (len(d) == 2 and d[0] == "quality" and d[1] in TUNE_COSTS):
            raise ConfigError(
                f'{where} directions = {list(d)}; use ["quality"], ["quality", "macs"] or '
                f'["quality", "params"]'
            )
        if self.pick == "cheapest_within" and len(d) < 2:
            raise ConfigError(
                f"{where} pick = 'cheapest_within' needs a cost to be cheap in: set "
                f'directions = ["quality", "macs"] (or "params")'
            )
        if self.grace <= self.heartbeat:
            raise ConfigError(
                f"{where} grace must exceed heartbeat (a live trial beats every heartbeat "
                f"seconds), got heartbeat = {self.heartbeat}, grace = {self.grace}"
            )
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"{where} params must be a table ([tune.params]), got {self.params}")
        seeds = tuple(self.seeds)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError(f"{where} seeds must be whole numbers >= 0, got {list(seeds)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"{where} seed must be a whole number >= 0, got {self.seed!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{where} seeds lists a seed twice: {list(seeds)}")
