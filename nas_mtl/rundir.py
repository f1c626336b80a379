"""Run directories: where each result lives, what it was made from, and never losing one.

Layout of ``OUT``::

    study.toml                       copy of the study file (study.json for a Python study)
    report.json, report.md           every result, and the comparison tables
    report.html                      the same report as one self-contained page
    clusters/                        task groups (nas-mtl cluster, [report] cluster)
    <variant>/<space>/seed_<s>/
        context.json                 what this run is (study, variant, space, seed)
        supernet.json                the searched routing graph
        search_log.jsonl             per-epoch losses and gate statistics
        search.json, affinity.json   what the search chose; its gradient affinity
        architecture.json            the derived architecture (+ provenance)
        retrain_log.jsonl
        checkpoints/                 search_epoch_NNN.pt, search_best.pt, retrain_best.pt
        result.json                  this run's entry of report.json
        plots/                       pictures (nas-mtl plot, [report] plots)
    <variant>/<space>-random/seed_<s>/sample_<k>/   random-architecture controls

nas-mtl owns only what it creates (``docs/runs.md``): every path component that comes from a
study (its name, space names or paths, sweep values) becomes a safe slug and is checked to stay
inside ``OUT``; ``OUT`` and each run directory carry a marker file, and nothing without one is
ever overwritten or removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from nas_mtl.errors import ConfigError, GraphError
from nas_mtl.storage import read_json, write_bytes_atomic, write_json_atomic
from nas_mtl.study import Study, load_study, parse_study

STUDY_COPY = "study.toml"
STUDY_JSON = "study.json"  # a study built in Python has no file: its fields are saved instead


OUT_MARKER = ".nas-mtl-out"  # in OUT: this folder is a nas-mtl output folder
RUN_MARKER = ".nas-mtl-run"  # in each run directory: nas-mtl created it and may replace it
LOCK = ".nas-mtl-lock"  # holds the PID of the run writing to OUT
REPORT_FILES = ("report.json", "report.md", "report.html", STUDY_COPY, STUDY_JSON)
CLUSTERS = "clusters"  # nas-mtl cluster on OUT: clusters.json and similarity_* figures


def safe_name(text: object) -> str:
    """A path component from a study value: letters, digits, ``. _ - = , + [ ]``; never ``..``.

    A space given as a file path is named by its file stem, so ``../x/my.toml`` runs in
    ``my/``; anything else that is not in the set becomes ``_``.
    """
    text = str(text)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        text = Path(text.replace("\\", "/")).stem
    slug = re.sub(r"[^A-Za-z0-9._=,+\[\]-]+", "_", re.sub(r"\s+", "", text)).strip("._")
    return slug[:100] or "_"


def variant_label(variant: Mapping[str, Any]) -> str:
    return safe_name(",".join(f"{k}={v}" for k, v in variant.items()) or "default")


def run_rel(variant: Mapping[str, Any], space: str, seed: int) -> str:
    """A run directory relative to OUT: ``<variant>/<space>/seed_<s>``, all safe names."""
    return f"{variant_label(variant)}/{safe_name(space)}/seed_{int(seed)}"


def check_run_names(study: Study) -> None:
    """Two spaces (say ``a/x.toml`` and ``b/x.toml``) must not share a run folder name."""
    seen: dict[str, str] = {}
    for space in study.spaces:
        name = safe_name(space)
        if name in seen:
            raise ConfigError(
                f"spaces {seen[name]!r} and {space!r} would share the run folder '{name}'; "
                f"rename one of the files"
            )
        seen[name] = space


def default_out(study: Study) -> Path:
    return Path("runs") / safe_name(study.name)


def _inside(out: Path, path: Path) -> Path:
    if not path.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"{path} is outside the output folder {out}; refusing to write there")
    return path


def replace_run_dir(out: Path, rel: str) -> Path:
    """Remove an unfinished run directory so the run starts afresh, if nas-mtl created it."""
    run_dir = _inside(out, out / rel)
    if run_dir.exists():
        if not (run_dir / RUN_MARKER).exists():
            raise ConfigError(
                f"{run_dir} exists but was not created by nas-mtl (no {RUN_MARKER}); "
                f"move it away or choose another --out"
            )
        shutil.rmtree(run_dir)
    return run_dir


def check_out(out: Path) -> None:
    """OUT must be new, empty (a lock file aside) or a nas-mtl output folder; reads only."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (new or a nas-mtl output)")
    others = out.is_dir() and any(p.name != LOCK for p in out.iterdir())
    if others and not (out / OUT_MARKER).exists():
        raise ConfigError(
            f"--out {out} is not empty and is not a nas-mtl output folder (no {OUT_MARKER}); "
            f"choose a new or empty folder"
        )


def _clear(out: Path) -> None:
    """--overwrite: remove what nas-mtl wrote in a marked OUT, nothing else."""
    for marker in sorted(out.rglob(RUN_MARKER), key=lambda m: len(m.parts), reverse=True):
        if marker.parent.exists():
            shutil.rmtree(_inside(out, marker.parent))
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    clusters = out / CLUSTERS
    if clusters.is_dir():  # the cluster stage's files only; the folder goes when it is empty
        for path in [clusters / "clusters.json", *clusters.glob("similarity_*.*")]:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            clusters.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold OUT for this process: a second run on the same OUT stops with a clear message.

    The lock file holds the PID; a lock left by a process that no longer runs (killed) is
    taken over.
    """
    lock = out / LOCK
    for _ in range(2):
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _alive(holder):
                raise ConfigError(
                    f"another nas-mtl run (PID {holder}) is writing to {out}; wait for it to "
                    f"finish or choose another --out"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except OSError as e:  # read-only, under a file, no space ...
            raise ConfigError(f"cannot write to --out {out}: {e.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:  # the lock changed hands twice while we looked: someone else is starting here
        raise ConfigError(f"another nas-mtl run is starting in {out}; choose another --out")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def clean_stale_temp_files(out: Path) -> int:
    """Remove the ``.<name>.<random>.tmp`` files that a killed atomic write left in OUT."""
    stale = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def holds_other_version(out: Path, study: Study) -> bool:
    """OUT's study copy is not this study file (another version of it was run there)."""
    previous = out / STUDY_COPY
    return previous.exists() and hashlib.sha256(previous.read_bytes()).hexdigest() != study.sha256


def prepare_out(study: Study, out: Path, overwrite: bool = False) -> None:
    """Create or reuse OUT with a copy of the study.

    A new or empty folder becomes a nas-mtl output folder; a nas-mtl output folder of the same
    study is resumed; anything else is refused, except that ``overwrite`` replaces a nas-mtl
    output folder (only what nas-mtl wrote in it).
    """
    check_run_names(study)
    check_out(out)
    if overwrite and out.is_dir():
        _clear(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --out {out}: {e.strerror}") from None
    if holds_other_version(out, study) and any(out.glob("*/*/seed_*/result.json")):
        raise ConfigError(
            f"{out} holds finished results of a different version of the study; "
            f"choose another --out, or add --overwrite to replace them"
        )
    marker: dict[str, Any] = {"tool": "nas-mtl", "study": study.name}
    if study.path is not None:  # where relative data paths of the study copy point to
        marker["study_dir"] = str(Path(study.path).resolve().parent)
    write_json_atomic(out / OUT_MARKER, marker)
    clean_stale_temp_files(out)
    if study.path is not None:
        write_bytes_atomic(out / STUDY_COPY, Path(study.path).read_bytes())
    else:
        fields = {k: v for k, v in asdict(study).items() if k not in ("path", "sha256")}
        write_json_atomic(out / STUDY_JSON, fields)


def open_run_dir(
    out: Path, variant: Mapping[str, Any], space: str, seed: int, study_sha256: str = ""
) -> Path:
    """``OUT/<variant>/<space>/seed_<s>`` with its marker and context.json (what the run is)."""
    return write_run_context(out, run_rel(variant, space, seed), variant, space, seed, study_sha256)


def write_run_context(
    out: Path,
    rel: str,
    variant: Mapping[str, Any],
    space: str,
    seed: int,
    study_sha256: str | None = "",
) -> Path:
    """Make ``OUT/rel`` a run directory: its marker, and a context.json whose study path is
    relative to it (so a run directory at any depth, a tuning trial's included, finds the
    study copy)."""
    run_dir = _inside(out, out / rel)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).touch()
    study_file = STUDY_COPY if (out / STUDY_COPY).exists() else STUDY_JSON
    context = {
        "study": "../" * len(Path(rel).parts) + study_file,
        "study_sha256": study_sha256 or "",
        "variant": dict(variant),
        "space": space,
        "seed": seed,
    }
    write_json_atomic(run_dir / "context.json", context)
    return run_dir


def resumable(out: Path, rel: str, study_sha256: str) -> bool:
    """An interrupted run directory of this very study, which can continue where it stopped."""
    run_dir = _inside(out, out / rel)
    context = run_dir / "context.json"
    if not (run_dir / RUN_MARKER).exists() or not context.exists():
        return False
    try:
        ctx = json.loads(context.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(ctx, dict) and ctx.get("study_sha256") == study_sha256


def study_of_run(run_dir: Path) -> tuple[Study, dict[str, Any]]:
    """The study (with the run's sweep values) and context of a run directory."""
    ctx_path = run_dir / "context.json"
    if not ctx_path.exists():
        raise ConfigError(
            f"{run_dir} is not a run directory (no context.json); give "
            f"OUT/<variant>/<space>/seed_<s>"
        )
    ctx = read_json(ctx_path, "run context", dict, keys=("study", "variant"))
    if not isinstance(ctx["study"], str) or not isinstance(ctx["variant"], dict):
        raise GraphError(f"{ctx_path} is not a run context nas-mtl wrote; rerun the study")
    path = run_dir / ctx["study"]
    if path.suffix == ".json":
        study = parse_study(read_json(path, "study", dict), str(path))
    else:
        study = load_study(path)
    return _data_file_from_origin(study.for_variant(ctx["variant"]), path.parent), ctx


def _data_file_from_origin(study: Study, out: Path) -> Study:
    """The study with a relative ``data.file`` pointing next to the original study file.

    The study copy lives in OUT, but its relative paths were written for the folder of the
    study file that was run (recorded in OUT's marker); a path that exists there wins, so
    ``nas-mtl derive / plot / predict`` on a run directory read the same table as the run.
    """
    file = study.data.file
    if file is None or Path(file).is_absolute():
        return study
    try:
        origin = json.loads((out / OUT_MARKER).read_text()).get("study_dir")
    except (OSError, ValueError):
        return study
    if not origin or not (Path(origin) / file).exists():
        return study
    return replace(study, data=replace(study.data, file=str(Path(origin) / file)))
