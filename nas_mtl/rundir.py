"""Run directories: where each result lives, what it was made from, and never losing one.

Layout of ``OUT``::

    study.toml                       copy of the study file (study.json for a Python study)
    report.json, report.md           every result, and the comparison tables
    <variant>/<space>/seed_<s>/
        context.json                 what this run is (study, variant, space, seed)
        supernet.json                the searched routing graph
        search_log.jsonl             per-epoch losses and gate statistics
        architecture.json            the derived architecture (+ provenance)
        retrain_log.jsonl
        checkpoints/                 search_epoch_NNN.pt, search_best.pt, retrain_best.pt
        result.json                  this run's entry of report.json
    <variant>/<space>-random/seed_<s>/sample_<k>/   random-architecture controls
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nas_mtl.errors import ConfigError
from nas_mtl.storage import write_bytes_atomic, write_json_atomic
from nas_mtl.study import Study, load_study, parse_study

STUDY_COPY = "study.toml"
STUDY_JSON = "study.json"  # a study built in Python has no file: its fields are saved instead


def variant_label(variant: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items()) or "default"


def prepare_out(study: Study, out: Path) -> None:
    """Create OUT with a copy of the study; refuse an OUT holding another study's results."""
    out.mkdir(parents=True, exist_ok=True)
    previous = out / STUDY_COPY
    if previous.exists() and any(out.glob("*/*/seed_*/result.json")):
        sha = hashlib.sha256(previous.read_bytes()).hexdigest()
        if sha != study.sha256:
            raise ConfigError(
                f"{out} holds finished results of a different version of the study; "
                f"choose another --out (or move that folder away)"
            )
    if study.path is not None:
        write_bytes_atomic(out / STUDY_COPY, Path(study.path).read_bytes())
    else:
        fields = {k: v for k, v in asdict(study).items() if k not in ("path", "sha256")}
        write_json_atomic(out / STUDY_JSON, fields)


def open_run_dir(out: Path, variant: Mapping[str, Any], space: str, seed: int) -> Path:
    """``OUT/<variant>/<space>/seed_<s>`` with its context.json (what the run is)."""
    run_dir = out / variant_label(variant) / space / f"seed_{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    study_file = STUDY_COPY if (out / STUDY_COPY).exists() else STUDY_JSON
    write_json_atomic(
        run_dir / "context.json",
        {"study": f"../../../{study_file}", "variant": dict(variant), "space": space, "seed": seed},
    )
    return run_dir


def study_of_run(run_dir: Path) -> tuple[Study, dict[str, Any]]:
    """The study (with the run's sweep values) and context of a run directory."""
    ctx_path = run_dir / "context.json"
    if not ctx_path.exists():
        raise ConfigError(
            f"{run_dir} is not a run directory (no context.json); give "
            f"OUT/<variant>/<space>/seed_<s>"
        )
    ctx = json.loads(ctx_path.read_text())
    path = run_dir / ctx["study"]
    if path.suffix == ".json":
        study = parse_study(json.loads(path.read_text()), str(path))
    else:
        study = load_study(path)
    return study.for_variant(ctx["variant"]), ctx
