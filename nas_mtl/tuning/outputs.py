"""What a tune leaves in OUT for the next step: the picked trial, as files people use.

``best.json`` (the picked trial: number, params, values, run dir, the front), ``best_study.toml``
(the study with the picked values written in: ``nas-mtl run`` it on every space and seed) and
``best/``, a copy of the picked trial's run directory (``architecture.json``, ``result.json``;
``nas-mtl retrain OUT/best`` retrains it). Each file is written atomically; ``best/`` is
swapped in whole, so a reader sees the old pick or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import tomli_w
from optuna.trial import FrozenTrial, TrialState

from nas_mtl.errors import ConfigError
from nas_mtl.rundir import LOCK, RUN_MARKER
from nas_mtl.storage import write_bytes_atomic, write_json_atomic
from nas_mtl.tuning.config import TunePlan
from nas_mtl.tuning.objective import ERROR, OUT, PRUNED_AT, PRUNED_SEED, RESULT, RUN_DIR
from nas_mtl.tuning.pareto import front_trials
from nas_mtl.tuning.store import BASELINE

log = logging.getLogger(__name__)

BEST_JSON = "best.json"
BEST_STUDY = "best_study.toml"
BEST_DIR = "best"


def write_best(study: optuna.Study, plan: TunePlan, out: Path, picked: FrozenTrial) -> list[Path]:
    """best.json, best_study.toml (for a study from a file) and best/; returns the paths."""
    rel = picked.user_attrs[RUN_DIR]
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    record = {
        "study_name": study.study_name,
        "number": picked.number,
        "params": picked.params,
        "objectives": list(plan.config.directions),
        "values": picked.values,
        "objective": plan.config.objective,
        "pick": plan.config.pick,
        "tolerance": plan.config.tolerance,
        "space": plan.space,
        "seed": plan.seed,  # the seed of run_dir
        "seeds": list(plan.seeds),  # the seeds each trial trained; quality is their mean
        "baseline": next(
            (t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get(BASELINE)),
            None,
        ),
        "run_dir": rel,
        "result": picked.user_attrs.get(RESULT),
        "pareto_front": [
            {"number": t.number, "values": t.values, "params": t.params}
            for t in front_trials(study)
        ],
        "trials": counts,
    }
    written = [out / BEST_JSON]
    write_json_atomic(out / BEST_JSON, record)
    if plan.study.path is not None:
        written.append(write_tuned_study(plan.study.path, picked.params, out / BEST_STUDY))
    src = Path(picked.user_attrs.get(OUT, out)) / rel  # the OUT of the worker that ran it
    if not src.is_dir():
        src = out / rel
    if src.is_dir():
        written.append(copy_run_dir(out, src, BEST_DIR))
    else:
        log.warning("trial %d ran in %s, not reachable here: no %s/", picked.number, src, BEST_DIR)
    return written


def write_tuned_study(source: str | Path, values: Mapping[str, Any], dest: Path) -> Path:
    """``source`` with each dotted path in ``values`` written in, as TOML at ``dest``.

    The document is the study file itself (comments aside), renamed ``<name>_tuned`` so that
    ``nas-mtl run`` writes to a new folder; a swept key that is tuned leaves the sweep, and a
    relative data file path is rewritten for ``dest``'s folder.
    """
    source = Path(source)
    raw = tomllib.loads(source.read_text())
    for key, value in values.items():
        set_path(raw, key, value)
    raw["name"] = f"{raw.get('name', source.stem)}_tuned"
    data = raw.get("data", {})
    if data.get("file") and not Path(data["file"]).is_absolute():
        full = (source.parent / data["file"]).resolve()
        data["file"] = os.path.relpath(full, dest.parent.resolve())
    write_bytes_atomic(dest, tomli_w.dumps(raw).encode())
    return dest


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a study field by its dotted path in a raw study document (``_with_value``'s rules).

    >>> doc = {"data": {"name": "synthetic"}, "sweep": {"search.lr_arch": [0.1, 0.2]}}
    >>> set_path(doc, "search.lr_arch", 0.05); set_path(doc, "rho", 0.5); doc
    {'data': {'name': 'synthetic', 'params': {'rho': 0.5}}, 'search': {'lr_arch': 0.05}}
    """
    data = raw.setdefault("data", {})
    section, _, rest = key.partition(".")
    if not rest or section == "data":
        name = key if not rest else rest
        if data.get("name") is not None and (not rest or name.startswith("params.")):
            name = name.removeprefix("params.")
            data.setdefault("params", {})[name] = value
        else:
            data[name] = value
        _unsweep(data, "sweep", name)
    elif section == "space_params":
        space, _, param = rest.partition(".")
        raw.setdefault("space_params", {}).setdefault(space, {})[param] = value
    else:
        raw.setdefault(section, {})[rest] = value
    _unsweep(raw, "sweep", key)


def _unsweep(table: dict[str, Any], name: str, key: str) -> None:
    sweep = table.get(name)
    if isinstance(sweep, dict) and key in sweep:
        del sweep[key]
        if not sweep:
            del table[name]


def copy_run_dir(out: Path, src: Path, name: str) -> Path:
    """Copy the run directory ``src`` to ``OUT/name`` (replacing an earlier copy nas-mtl made)
    as a run directory of OUT: its context.json points at OUT's study file."""
    dest = out / name
    if dest.exists() and not (dest / RUN_MARKER).exists():
        raise ConfigError(f"{dest} exists but was not written by nas-mtl; move it away")
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
    try:
        copy = staging / name
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns(LOCK, ".*.tmp"))
        ctx = json.loads((copy / "context.json").read_text())
        ctx["study"] = "../" + Path(ctx["study"]).name
        write_json_atomic(copy / "context.json", ctx)
        old = staging / "old"
        if dest.exists():
            dest.rename(old)
        copy.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def trial_line(trial: FrozenTrial, names: list[str]) -> str:
    """One line per finished trial: number, state, value(s), params (the CLI prints it)."""
    state = trial.state.name.lower()
    if trial.state == TrialState.PRUNED:  # Optuna gives it the last reported value: not quality
        epoch = trial.user_attrs.get(PRUNED_AT)
        loss = trial.intermediate_values.get(max(trial.intermediate_values, default=None))
        seed = trial.user_attrs.get(PRUNED_SEED)
        where = f"search epoch {epoch}" + (f" of seed {seed}" if seed is not None else "")
        values = f"at {where} (selection loss {_num(loss)})"
    elif trial.values:
        values = ", ".join(f"{n} {_num(v)}" for n, v in zip(names, trial.values, strict=False))
    else:
        values = trial.user_attrs.get(ERROR) or "no value"
    params = ", ".join(f"{k}={_num(v)}" for k, v in trial.params.items())
    retry = trial.system_attrs.get("failed_trial")
    again = f", retry of trial {retry}" if retry is not None else ""
    again += ", baseline" if trial.user_attrs.get(BASELINE) else ""
    took = f"{trial.duration.total_seconds():.1f} s" if trial.duration is not None else "-"
    return f"  trial {trial.number:>3} {state:<8} {values}  [{params}]  ({took}{again})"


def _num(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return str(v)
