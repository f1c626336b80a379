"""Study files: one TOML file describes a whole experiment (data, spaces, search, retrain, seeds).

Each table maps one to one onto a frozen dataclass, so an unknown key is found by comparing
against the dataclass fields and reported with a did-you-mean. Defaults live here, with the
reason for each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.model.schedules import SCHEDULES
from nas_mtl.model.spaces import check_space_params, space_path
from nas_mtl.ranges import (
    AT_LEAST_0,
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    TRAINING_RULES,
    check_ranges,
)
from nas_mtl.storage import read_toml_text
from nas_mtl.study_sections import (
    ControlsConfig,
    DeriveConfig,
    ReportConfig,
    RetrainConfig,
    TuneConfig,
)
from nas_mtl.tasks import TaskSpec


@dataclass(frozen=True)
class DataConfig:
    """A built-in data set by ``name`` (with ``params``) or a user ``file``."""

    name: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    sweep: Mapping[str, list] = field(default_factory=dict)  # params to vary: a grid of runs
    file: str | None = None  # shared-input table: .csv, .csv.gz, .parquet, .npz
    tasks: tuple[TaskSpec, ...] = ()  # [[data.tasks]]: name, column, type, n_classes, ...
    features: tuple[str, ...] | None = None  # default: every non-label, non-split column
    categorical: tuple[str, ...] = ()  # one-hot encoded
    split_column: str | None = None  # values train / val / test; else a seeded split
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    task_column: str | None = None  # per-task file: the column naming each row's task
    label_column: str | None = None  # per-task file: the label column
    task_type: str = "multiclass"  # per-task file: the type of every task
    n_classes: int | None = None  # per-task file, multiclass: classes per task
    weights: Mapping[str, float] | None = None  # per-task file: {task: w_t}; others weigh 1
    metric: str | None = None  # per-task file: primary metric of every task
    encoding: str = "utf-8"  # a user CSV's text encoding


@dataclass(frozen=True)
class SearchConfig:
    """Differentiable search of the supernet (weights and gate variables together).

    The defaults give a new task set a sparse, decided architecture without tuning: a target
    fraction of open (task, edge) pairs met by projection with a price that ranks the gates
    (and enough steps for them to decide), temperatures that
    reach their end value within the run, and selection on the derived architecture
    (``docs/search.md``).
    """

    epochs: int = 10
    batch_size: int = 256
    steps_per_epoch: int | None = None  # per-task data: steps per epoch (default: one pass)
    lr_weights: float = 1e-3  # Adam on weights
    lr_arch: float = 1e-1  # Adam on gate variables: they move faster than weights (Gumbel-M.)
    weight_decay: float = 0.0
    target_open: float | None = 0.4  # keep at most this fraction of gated pairs; false: no cap
    # at most this many multiply-adds per example in the derived model (all tasks); false: none
    target_macs: float | None = None
    target_tolerance: float = 0.05  # selectable: open <= target + this, MACs <= target * (1 + this)
    # growth of the target_macs multiplier over the whole gate phase per unit of relative
    # excess (the step is dual_lr / gate steps, so it is independent of the run length)
    dual_lr: float = 20.0
    # growth of the price on the expected open fraction per unit of excess over the budget
    # left by a gate step; the price ranks which gates close (docs/search.md, "The target")
    price_lr: float = 2.0
    # at least this many training steps: a small data set's epochs are few steps each, too few
    # for gates to decide, so the search runs more epochs (0: exactly `epochs`)
    min_steps: int = 500
    l0_weight: float = 0.0  # λ on the expected L0 of hard-concrete gates (SNR)
    budget_weight: float = 0.0  # λ_b on the Gumbel-Matrix budget term
    penalty_form: str = "normalized"  # "normalized": λ̄ · L0 / N_gates; "sum": the paper's λ · L0
    entropy_weight: float = 0.0  # optional push towards decided gates
    schedule: str = "exponential"  # temperatures τ0 -> τ_min: exponential | linear | sqrt_step
    warmup: float = 0.1  # fraction of epochs with gates held open (weights only)
    anneal: float = 0.7  # fraction of the post-warm-up steps over which temperatures anneal
    alternate: bool = False  # weights on one half of train, gates on the other (DARTS-style)
    patience: int = 5  # early stopping, counted over selectable epochs only
    keep_checkpoints: int = 2  # per-epoch checkpoints kept (the best one is always kept)
    device: str = "auto"
    # measure the inter-task gradient affinity (TAG) every this many steps, 0: off; costs
    # 2T + 1 passes per measurement (docs/search.md, "Gradient affinity")
    affinity_every: int = 10
    # bf16 autocast on CUDA, as in [retrain]: about twice the matmul throughput, and the gate
    # variables and losses stay float32; ignored on CPU (docs/speed.md)
    amp: bool = True
    # torch.compile the training forward: fewer, fused kernels once compiled, but a compile
    # (tens of seconds) at the start and again when the gate state changes; off by default so
    # short searches and CPU runs do not pay it (docs/speed.md)
    compile: bool = False
    # intra-op threads on the CPU; 0: 1, 2, 4, … up to torch's count by the step's forward
    # FLOPs, a fixed rule so that a run repeats bit for bit (docs/speed.md, "Threads")
    threads: int = 0
    # write the resumable checkpoint at most this often (seconds; and after the last epoch),
    # so a kill loses at most this much training; 0: after every epoch (docs/runs.md)
    checkpoint_every_s: float = 10.0

    def __post_init__(self) -> None:
        where = "[search]"
        check_ranges(
            where,
            self,
            {
                **TRAINING_RULES,
                "lr_weights": POSITIVE,
                "lr_arch": POSITIVE,
                "dual_lr": NON_NEGATIVE,
                "price_lr": NON_NEGATIVE,
                "min_steps": AT_LEAST_0,
                "l0_weight": NON_NEGATIVE,
                "budget_weight": NON_NEGATIVE,
                "entropy_weight": NON_NEGATIVE,
                "target_tolerance": NON_NEGATIVE,
                "keep_checkpoints": AT_LEAST_1,
                "affinity_every": AT_LEAST_0,
            },
        )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"{where} schedule = {self.schedule!r} is not one of {', '.join(SCHEDULES)}"
            )
        if self.penalty_form not in ("normalized", "sum"):
            raise ConfigError(
                f"{where} penalty_form = {self.penalty_form!r}; use 'normalized' or 'sum'"
            )
        if self.target_open is not None and not 0 < self.target_open <= 1:
            raise ConfigError(
                f"{where} target_open must be in (0, 1] (a fraction of gated edges) or false, "
                f"got target_open={self.target_open}"
            )
        if self.target_macs is not None and not self.target_macs > 0:
            raise ConfigError(
                f"{where} target_macs must be a positive number of multiply-adds per example "
                f"(see `nas-mtl describe` for the supernet's) or false, "
                f"got target_macs={self.target_macs}"
            )
        if not 0 <= self.warmup < 1 or not 0 < self.anneal <= 1:
            raise ConfigError(
                f"{where} warmup must be in [0, 1) and anneal in (0, 1] (fractions of the "
                f"search), got warmup={self.warmup}, anneal={self.anneal}"
            )


@dataclass(frozen=True)
class Study:
    name: str
    spaces: tuple[str, ...]
    data: DataConfig
    seeds: tuple[int, ...] = (0,)
    space_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)  # nas-mtl tune only; run ignores it
    description: str = ""
    # any field by its dotted path: "search.target_open", "space_params.snr_trans.width",
    # "retrain.lr", "data.params.rho"; one run per point of the grid
    sweep: Mapping[str, list] = field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None

    def variants(self) -> list[dict[str, Any]]:
        """The grid of ``[data].sweep`` and ``[sweep]`` values; ``[{}]`` when nothing is swept.

        ``[data].sweep`` keys are data parameters (plain names); ``[sweep]`` keys are dotted
        paths. A variant names a run directory and is turned into a study by
        :meth:`for_variant`.
        """
        grid = {**self.data.sweep, **self.sweep}
        keys = list(grid)
        return [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(grid[k] for k in keys))
        ]

    def for_variant(self, variant: Mapping[str, Any]) -> Study:
        """This study with one sweep point's values put in place (validated like the file)."""
        study = self
        for key, value in variant.items():
            study = _with_value(study, key, value)
        return study


_SECTIONS = {"search", "derive", "retrain", "controls"}


def _with_value(study: Study, key: str, value: Any, where: str = "study") -> Study:
    """``study`` with the field at ``key`` set; a plain key is a data parameter/field."""
    where = f"{where} [sweep] '{key}' = {value!r}"
    section, _, rest = key.partition(".")
    if not rest:  # a [data].sweep key
        d = study.data
        if d.name is not None:
            params = {**d.params, key: value}
            return dataclasses.replace(study, data=dataclasses.replace(d, params=params))
        return dataclasses.replace(study, data=_replaced(d, {key: value}, where))
    if section in _SECTIONS:
        return dataclasses.replace(
            study, **{section: _replaced(getattr(study, section), {rest: value}, where)}
        )
    if section == "space_params":
        space, _, param = rest.partition(".")
        if space not in study.spaces or not param:
            raise ConfigError(
                f"{where}: write 'space_params.<space>.<parameter>' with a space of "
                f"{list(study.spaces)}"
            )
        check_space_params(space_path(space), {param: value}, f"{where}: ")
        params = {**study.space_params, space: {**study.space_params.get(space, {}), param: value}}
        return dataclasses.replace(study, space_params=params)
    if section == "data":
        d = study.data
        if rest.startswith("params.") and d.name is not None:
            params = {**d.params, rest.removeprefix("params."): value}
            return dataclasses.replace(study, data=dataclasses.replace(d, params=params))
        return dataclasses.replace(study, data=_replaced(d, {rest: value}, where))
    raise ConfigError(
        f"{where}: the first part must be one of {', '.join(sorted(_SECTIONS))}, space_params, data"
    )


def _replaced(config: Any, changes: Mapping[str, Any], where: str) -> Any:
    """A config dataclass with ``changes`` checked and coerced as in the study file."""
    names = {f.name for f in dataclasses.fields(config)} - {"params", "sweep"}
    hints = get_type_hints(type(config))
    coerced = {}
    for key, value in changes.items():
        if key not in names:
            raise ConfigError(
                f"{where}: '{key}' is not a field{did_you_mean(key, names)}; "
                f"allowed: {', '.join(sorted(names))}"
            )
        coerced[key] = _coerce(hints[key], value, where)
    try:
        return dataclasses.replace(config, **coerced)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


_NESTED = {
    "data": DataConfig,
    "search": SearchConfig,
    "derive": DeriveConfig,
    "retrain": RetrainConfig,
    "controls": ControlsConfig,
    "report": ReportConfig,
    "tune": TuneConfig,
}
_USER_KEYS = {f.name for f in dataclasses.fields(Study)} - {"path", "sha256"}
_STUDY_HINTS = get_type_hints(Study)


def _build(cls: type, table: Mapping[str, Any], where: str) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table, got {table!r}")
    names = {f.name for f in dataclasses.fields(cls)} - {"path", "sha256"}
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, names)}; "
                f"allowed: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _key(key: object) -> str:
    """A table key as the study file writes it: bare, or quoted when it holds a dot."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against a field's type hint (and lists made tuples), or a ConfigError
    naming the field, what it must be and what it got: every type a study field has."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None  # a Python-built study saved as study.json keeps its nulls
        if value is False and bool not in args and type(None) in args:
            return None  # TOML has no null: `key = false` switches an optional setting off
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    origin = typing.get_origin(hint) or hint
    if hint is TaskSpec:
        return _build(TaskSpec, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(
            _coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        key_hint, value_hint = args or (str, Any)
        return {
            _coerce(key_hint, k, f"{where} key"): _coerce(value_hint, v, f"{where}.{_key(k)}")
            for k, v in value.items()
        }
    if origin is list and (not isinstance(value, list) or not value):
        raise ConfigError(f"{where} must be a non-empty list of values, got {value!r}")
    expected = {
        bool: ("true or false", lambda v: isinstance(v, bool)),
        int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
        str: ("text (a quoted string)", lambda v: isinstance(v, str)),
    }.get(hint)
    if expected is not None and not expected[1](value):
        raise ConfigError(f"{where} must be {expected[0]}, got {value!r}")
    return value


def parse_study(raw: Mapping[str, Any], where: str = "study") -> Study:
    for key in raw:
        if key not in _USER_KEYS:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(key, _USER_KEYS)}; "
                f"allowed: {', '.join(sorted(_USER_KEYS))}"
            )
    for key in ("name", "spaces", "data"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required key '{key}'")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NESTED:
            kwargs[key] = _build(_NESTED[key], value, f"{where} [{key}]")
        elif key == "sweep" and not isinstance(value, Mapping):
            raise ConfigError(f"{where}: [sweep] must be a table of dotted paths to lists")
        elif key in ("spaces", "seeds") and (not isinstance(value, list) or not value):
            raise ConfigError(f"{where}: '{key}' must be a non-empty list, got {value!r}")
        else:  # a table ([sweep], [space_params]) is named as one
            label = f"{where} [{key}]" if isinstance(value, Mapping) else f"{where}: '{key}'"
            kwargs[key] = _coerce(_STUDY_HINTS[key], value, label)
    study = Study(**kwargs)
    bad_seeds = [s for s in study.seeds if not 0 <= s < 2**63]
    if bad_seeds:
        raise ConfigError(f"{where}: seeds must be whole numbers >= 0, got {bad_seeds}")
    data = study.data
    if (data.name is None) == (data.file is None):
        raise ConfigError(f"{where} [data]: give either 'name' (a built-in data set) or 'file'")
    if data.file is not None and not data.tasks and data.task_column is None:
        raise ConfigError(f"{where} [data]: a user file needs [[data.tasks]] (name, column, type)")
    if data.file is not None:
        fields = {f.name for f in dataclasses.fields(DataConfig)} - {"name", "params", "sweep"}
        for key in data.sweep:
            if key not in fields:
                raise ConfigError(
                    f"{where} [data].sweep: '{key}' is not a [data] field of a user file"
                    f"{did_you_mean(key, fields)}; sweepable: {', '.join(sorted(fields))}"
                )
    for key, values in data.sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} [data].sweep.{key} must be a non-empty list of values")
    for key, values in study.sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} [sweep].'{key}' must be a non-empty list of values")
        if "." not in key:
            raise ConfigError(
                f"{where} [sweep]: '{key}' is not a dotted path; write e.g. "
                f"'search.target_open' or 'space_params.snr_trans.width'"
            )
        for value in values:  # a bad path or value fails now, not after the first variant
            _with_value(study, key, value, where)
    for space in study.spaces:  # an unknown space or parameter fails now, not after hours
        check_space_params(space_path(space), study.space_params.get(space, {}), f"{where} ")
    unknown = set(study.space_params) - set(study.spaces)
    if unknown:
        raise ConfigError(
            f"{where} [space_params]: {sorted(unknown)} are not in spaces {list(study.spaces)}"
        )
    return study


def load_study(path: str | Path) -> Study:
    path = Path(path)
    text = read_toml_text(path, "study file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    study = parse_study(raw, str(path))
    return dataclasses.replace(
        study, path=str(path), sha256=hashlib.sha256(text.encode()).hexdigest()
    )
