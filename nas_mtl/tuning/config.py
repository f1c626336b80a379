"""The ``[tune]`` table checked against its study: what is tuned, over which values, how.

Everything a trial could trip over is checked here, before the first trial trains: every dotted
path in ``[tune.params]`` is set on the study at both ends of its range (and at every choice)
exactly as a trial would set it, so a bad path or an out-of-range end fails now with one line
naming the key, not hours later in trial 37.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from nas_mtl.errors import ConfigError, did_you_mean
from nas_mtl.model.gates import GATES
from nas_mtl.model.spaces import load_space
from nas_mtl.study import Study, _with_value
from nas_mtl.study_sections import TuneConfig

RANGE_KEYS = ("low", "high", "log", "step", "type")
CHOICE_KEYS = ("choices",)
TYPES = ("float", "int")
CHOICE_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class ParamSpec:
    """One tuned study field: a range (``low``..``high``, optionally log or stepped) or choices."""

    key: str  # dotted study path, also the Optuna parameter name
    type: str = "float"  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """The trial's value (a retried trial gets back the value of the trial it repeats)."""
        if self.type == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.key, float(self.low), float(self.high), step=self.step, log=self.log
        )

    def ends(self) -> tuple[Any, ...]:
        """The values that bound what a trial can get: checked against the study up front."""
        return self.choices if self.type == "choice" else (self.low, self.high)


@dataclass(frozen=True)
class TunePlan:
    """A study's ``[tune]`` table resolved and checked: ready to run trials."""

    study: Study
    config: TuneConfig
    space: str
    params: tuple[ParamSpec, ...]
    base_variant: Mapping[str, Any]  # the study's first sweep point; tuned values go on top

    @property
    def multi_objective(self) -> bool:
        return len(self.config.directions) > 1

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds every trial trains, ``[tune] seeds`` or the study's first: trials differ
        in params only."""
        return tuple(self.config.seeds) or self.study.seeds[:1]

    @property
    def seed(self) -> int:
        """The seed whose run directory stands for a trial (``best/``, ``nas-mtl retrain``)."""
        return self.seeds[0]

    def baseline_values(self) -> dict[str, Any] | None:
        """The study's own values of the tuned keys (trial 0 with ``[tune] baseline``), or
        None where one of them is not a plain value the study states or defaults to."""
        values = {}
        for spec in self.params:
            value = study_value(self.study, spec.key, self.base_variant)
            if value is None:
                return None
            values[spec.key] = value
        return values

    def variant(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """What a trial's context.json records: the sweep point plus the trial's values."""
        return {**self.base_variant, **values}

    def trial_study(self, values: Mapping[str, Any]) -> Study:
        return self.study.for_variant(self.variant(values))


def plan_tune(study: Study) -> TunePlan:
    """Check ``study.tune`` against ``study``; raises :class:`ConfigError` naming the key."""
    where = study.path or "study"
    cfg = study.tune
    if not cfg.params:
        raise ConfigError(
            f"{where}: no [tune.params]: nothing to tune; add e.g. [tune.params] "
            f'"search.lr_arch" = {{ low = 0.01, high = 0.3, log = true }} (docs/tuning.md)'
        )
    space = _tuned_space(study, cfg, where)
    params = tuple(parse_param(key, entry, where) for key, entry in cfg.params.items())
    base = study.variants()[0]
    for spec in params:
        for value in spec.ends():
            check_path(study, spec.key, value, where, base)
    return TunePlan(study=study, config=cfg, space=space, params=params, base_variant=base)


def trials_fingerprint(study: Study) -> str:
    """What makes two trials comparable: the whole study except the device and the [tune]
    settings that only steer the tuning (ranges, pick, pruner, heartbeats), which may change
    between runs.
    """
    fields = asdict(study)
    for name in ("path", "sha256"):
        fields.pop(name)
    for section in ("search", "retrain"):  # --device moves a trial, it does not change it
        fields[section].pop("device")
    tune = fields.pop("tune")
    fields["tune"] = {k: tune[k] for k in ("space", "objective", "directions", "seeds")}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_param(key: str, entry: Any, where: str = "study") -> ParamSpec:
    """One ``[tune.params]`` entry as a :class:`ParamSpec`; the rules are in the messages."""
    at = f'{where} [tune.params] "{key}"'
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{at} must be a table: {{ low = ..., high = ... }} or {{ choices = [...] }}, "
            f"got {entry!r}"
        )
    if entry and all(isinstance(v, Mapping) for v in entry.values()):  # TOML's dotted keys
        inner = next(iter(entry))
        raise ConfigError(
            f'{at}: quote the whole dotted path, "{key}.{inner}" = {{ low = ..., high = ... }}; '
            f"unquoted, TOML splits it into nested tables"
        )
    allowed = CHOICE_KEYS if "choices" in entry else RANGE_KEYS
    for name in entry:
        if name not in allowed:
            raise ConfigError(
                f"{at}: unknown key '{name}'{did_you_mean(name, RANGE_KEYS + CHOICE_KEYS)}; "
                f"give low, high (and log, step, type) or choices alone"
            )
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{at}: choices must be a non-empty list, got {choices!r}")
        bad = [c for c in choices if not isinstance(c, CHOICE_TYPES)]
        if bad:
            raise ConfigError(f"{at}: choices must be strings, numbers or booleans, got {bad[0]!r}")
        return ParamSpec(key, "choice", choices=tuple(choices))
    if "low" not in entry or "high" not in entry:
        raise ConfigError(f"{at}: give both low and high (or choices = [...])")
    low, high = entry["low"], entry["high"]
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{at}: {name} must be a finite number, got {name} = {v!r}")
    kind = entry.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in TYPES:
        raise ConfigError(f"{at}: type must be one of {', '.join(TYPES)}, got type = {kind!r}")
    if not low < high:
        raise ConfigError(f"{at}: low must be < high, got low = {low}, high = {high}")
    log, step = entry.get("log", False), entry.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: log must be true or false, got log = {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{at}: a log range needs low > 0, got low = {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
            raise ConfigError(f"{at}: step must be a number > 0, got step = {step!r}")
        if log:
            raise ConfigError(f"{at}: give log = true or a step, not both (Optuna's rule)")
    if kind == "int":
        not_int = [n for n, v in (("low", low), ("high", high), ("step", step)) if _fraction(v)]
        if not_int:
            raise ConfigError(
                f"{at}: type = 'int' needs whole numbers, got {not_int[0]} = {entry[not_int[0]]}"
            )
        return ParamSpec(key, "int", int(low), int(high), log, int(step) if step else None)
    return ParamSpec(key, "float", float(low), float(high), log, step)


def check_path(
    study: Study, key: str, value: Any, where: str, base: Mapping[str, Any] | None = None
) -> Study:
    """``study`` with ``key`` set to ``value`` as a trial sets it; errors name the tune key.

    The message is the one a bad ``[sweep]`` path gets (the same rule, ``_with_value``), with
    its ``[sweep]`` prefix replaced by the ``[tune.params]`` key.
    """
    prefix = f"{where} [sweep] '{key}' = {value!r}"
    try:
        return _with_value(study.for_variant(base or {}), key, value, where)
    except ConfigError as e:
        text = str(e)
        detail = text[len(prefix) :] if text.startswith(prefix) else f": {text}"
        raise ConfigError(f'{where} [tune.params] "{key}" = {value!r}{detail}') from None


def study_value(study: Study, key: str, base: Mapping[str, Any] | None = None) -> Any:
    """The value ``study`` (at sweep point ``base``) has at the dotted ``key``, defaults
    included (a space parameter not in the study: its space file's ``[params]`` default);
    None where there is none (an unset optional field)."""
    if base and key in base:
        return base[key]
    section, _, rest = key.partition(".")
    if not rest:
        return study.data.params.get(key, getattr(study.data, key, None))
    if section == "space_params":
        space, _, param = rest.partition(".")
        given = study.space_params.get(space, {})
        return given[param] if param in given else load_space(space).params.get(param)
    if section == "data":
        if rest.startswith("params."):
            return study.data.params.get(rest.removeprefix("params."))
        return getattr(study.data, rest, None)
    return getattr(getattr(study, section, None), rest, None)


def _fraction(value: Any) -> bool:
    return value is not None and float(value) != int(value)


def _tuned_space(study: Study, cfg: TuneConfig, where: str) -> str:
    if cfg.space is not None:
        if cfg.space not in study.spaces:
            raise ConfigError(
                f"{where} [tune] space = {cfg.space!r} is not one of the study's spaces "
                f"{list(study.spaces)}{did_you_mean(cfg.space, study.spaces)}"
            )
        return cfg.space
    searched = [s for s in study.spaces if searched_space(s)]
    if not searched:
        raise ConfigError(
            f"{where} [tune]: none of the spaces {list(study.spaces)} has learned gates; "
            f"name the space to tune with [tune] space = '...'"
        )
    return searched[0]


def searched_space(space: str) -> bool:
    """Whether a space file declares a learned gate kind (the search has something to learn)."""
    return any(GATES.get(kind).learned for kind in _gate_kinds(load_space(space).raw))


def _gate_kinds(table: Any) -> set[str]:
    kinds: set[str] = set()
    if isinstance(table, Mapping):
        for key, value in table.items():
            if key in ("gate", "first_gate") and isinstance(value, Mapping):
                kind = value.get("kind")
                if isinstance(kind, str) and kind in GATES:
                    kinds.add(kind)
            kinds |= _gate_kinds(value)
    elif isinstance(table, list):
        for item in table:
            kinds |= _gate_kinds(item)
    return kinds
