"""Run every benchmark script in one mode and collect the headline numbers in one file.

Every ``benchmarks/<name>.py`` that follows the contract (it takes ``--smoke``, ``--quick`` and
``--out DIR`` and writes ``DIR/<name>.json`` with ``benchmark``, ``settings``, ``rows`` and
``headline``; see ``benchmarks/README.md``) runs as its own subprocess, one after the other,
with the same mode flag and ``--out DIR``. Files whose name starts with an underscore are
helpers, not benchmarks. Then ``DIR/headline.json`` gets the four numbers the project tracks:

    supernet_vs_dense_min          supernet_speed.py   (target >= 0.9)
    serving_vs_handwritten_max     serving_speed.py
    search_cost_vs_shared_bottom   search_cost.py      (target <= 3)
    mmoe_vs_deepctr                peers.py            (target >= 2)

each null where its script is absent, failed or did not report it, with an ``errors`` map
(script -> what went wrong), every script's status, wall time and headline, the settings, a
UTC time stamp and the git commit.

    python benchmarks/run_all.py [--smoke|--quick] [--out DIR] [--only NAME ...]

``--smoke`` (toy sizes, well under 90 s in all; writes to a new temporary folder unless
``--out`` is given) checks that every script runs; ``--quick`` (under 20 minutes on a 2-core
machine) and the default (full) mode write to ``benchmarks/results``. The exit status is 1
when a script that ran failed, timed out or wrote no valid result.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
HEADLINE_FILE = "headline.json"
# the tracked numbers, and the script expected to report each
HEADLINE_KEYS = {
    "supernet_vs_dense_min": "supernet_speed",
    "serving_vs_handwritten_max": "serving_speed",
    "search_cost_vs_shared_bottom": "search_cost",
    "mmoe_vs_deepctr": "peers",
}
RESULT_KEYS = ("benchmark", "settings", "rows", "headline")
TIMEOUT_S = {"smoke": 120, "quick": 900, "full": 3600}  # per script
# scripts whose own budget exceeds that: the full quality tables and zoo take up to 2 hours
LONGER_S = {"quality": {"full": 7800}, "zoo": {"full": 7800}}
CONTRACT_FLAGS = ("--smoke", "--quick", "--out")


def follows_contract(path: Path) -> bool:
    """A benchmark script names the contract's three options in its source (usage or parser)."""
    text = path.read_text(errors="replace")
    return all(flag in text for flag in CONTRACT_FLAGS)


def discover(bench_dir: Path = BENCH_DIR) -> tuple[list[Path], list[str]]:
    """(contract scripts, names of other .py files that are not helpers), sorted by name."""
    scripts, skipped = [], []
    for path in sorted(Path(bench_dir).glob("*.py")):
        if path.name.startswith("_") or path.resolve() == Path(__file__).resolve():
            continue
        (scripts if follows_contract(path) else skipped).append(path)
    return scripts, [p.stem for p in skipped]


def script_timeout(name: str, mode: str, given: float | None = None) -> float:
    """``--timeout`` when given, else the script's own longer budget, else the mode's."""
    if given:
        return given
    return LONGER_S.get(name, {}).get(mode, TIMEOUT_S[mode])


def run_script(path: Path, mode: str, out: Path, timeout_s: float) -> dict[str, Any]:
    """Run one script, streaming its output; status, exit code, wall time and output tail."""
    cmd = [sys.executable, str(path), *([f"--{mode}"] if mode != "full" else []), "--out", str(out)]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    print(f"== {path.stem}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends its children too
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line.rstrip())
        rc = proc.wait()
    finally:
        timer.cancel()
    wall = time.perf_counter() - start
    status = "timeout" if timed_out.is_set() else "ok" if rc == 0 else "failed"
    return {"status": status, "returncode": rc, "wall_s": wall, "tail": list(tail)}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_result(path: Path, name: str, since: float) -> dict[str, Any]:
    """A script's JSON, checked against the contract; raises ValueError saying what is wrong."""
    if not path.exists() or path.stat().st_mtime < since:
        raise ValueError(f"did not write {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    missing = [k for k in RESULT_KEYS if k not in doc]
    if missing:
        raise ValueError(f"{path} lacks {missing}; the contract needs {list(RESULT_KEYS)}")
    if doc["benchmark"] != name:
        raise ValueError(f"{path}: benchmark = {doc['benchmark']!r}, expected {name!r}")
    if not isinstance(doc["headline"], dict) or not isinstance(doc["rows"], list):
        raise ValueError(f"{path}: headline must be an object and rows a list")
    if not isinstance(doc["settings"], dict):
        raise ValueError(f"{path}: settings must be an object")
    return doc


def failure(run: dict[str, Any]) -> str:
    """One line on why a script failed: its exit status and the last lines it printed."""
    last = [line for line in run["tail"] if line.strip()][-3:]
    what = (
        f"timed out after {run['wall_s']:.0f} s"
        if run["status"] == "timeout"
        else f"exit code {run['returncode']}"
    )
    return f"{what}: {' | '.join(last)[-600:]}"


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the work tree has changes), or (None, None) outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        return head, bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        return None, None


def collect(
    runs: dict[str, dict[str, Any]], docs: dict[str, dict[str, Any]], errors: dict[str, str]
) -> dict[str, float | None]:
    """The tracked numbers from the scripts' headlines; null (and an error) where missing."""
    values: dict[str, float | None] = {}
    for key, source in HEADLINE_KEYS.items():
        found = [(n, d["headline"][key]) for n, d in docs.items() if key in d["headline"]]
        value = found[0][1] if found else None
        if value is not None and not is_number(value):
            errors.setdefault(found[0][0], f"headline {key} = {value!r} is not a number")
            value = None
        values[key] = value
        if not found and source not in runs:
            errors.setdefault(source, f"benchmarks/{source}.py not found: not run")
        elif not found and source in docs:
            errors.setdefault(source, f"its headline has no {key}")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode_group = ap.add_mutually_exclusive_group()
    mode_group.add_argument("--smoke", action="store_true", help="toy sizes: do they all run?")
    mode_group.add_argument("--quick", action="store_true", help="reduced sizes (< 20 min)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default: results/)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per script")
    ap.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.out is not None:
        out = args.out
    elif args.smoke:
        out = Path(tempfile.mkdtemp(prefix="nas_mtl_bench_smoke_"))
    else:
        out = RESULTS
    out = out.resolve()  # the scripts run from the repository root
    out.mkdir(parents=True, exist_ok=True)
    scripts, skipped = discover(args.bench_dir)
    if args.only:
        unknown = set(args.only) - {p.stem for p in scripts}
        if unknown:
            ap.error(
                f"--only names no contract script: {sorted(unknown)}; "
                f"known: {[p.stem for p in scripts]}"
            )
        scripts = [p for p in scripts if p.stem in args.only]
    timeout_s = args.timeout or TIMEOUT_S[mode]
    started = datetime.datetime.now(datetime.UTC)
    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {}
    docs: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for path in scripts:
        since = time.time() - 1.0
        run = run_script(path, mode, out, script_timeout(path.stem, mode, args.timeout))
        runs[path.stem] = run
        if run["status"] != "ok":
            errors[path.stem] = failure(run)
            continue
        try:
            docs[path.stem] = read_result(out / f"{path.stem}.json", path.stem, since)
        except ValueError as e:
            errors[path.stem] = str(e)
    values = collect(runs, docs, errors)
    commit, dirty = git_commit()
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    result = {
        **values,
        "errors": errors,
        "scripts": {
            name: {
                "status": run["status"] if run["status"] != "ok" or name in docs else "bad JSON",
                "wall_s": run["wall_s"],
                "headline": docs[name]["headline"] if name in docs else None,
            }
            for name, run in runs.items()
        },
        "settings": {
            "mode": mode,
            "out": str(out.resolve().relative_to(ROOT))
            if out.resolve().is_relative_to(ROOT)
            else str(out),
            "scripts": [p.stem for p in scripts],
            "not_benchmarks": skipped,
            "timeout_s": timeout_s,
            "longer_timeouts_s": {k: v[mode] for k, v in LONGER_S.items() if mode in v},
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            "python": platform.python_version(),
            "torch": torch_version,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": list(os.getloadavg()),
            "wall_s": time.perf_counter() - t0,
        },
        "timestamp": started.isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
    }
    path = out / HEADLINE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"== run_all ({mode}) in {result['settings']['wall_s']:.0f} s; wrote {path}")
    for key, value in values.items():
        print(f"{key:<30} {'null' if value is None else f'{value:.3f}'}")
    for name, why in errors.items():
        print(f"error: {name}: {why}")
    return result


def exit_code(result: dict[str, Any]) -> int:
    """1 when a script that ran failed, timed out or wrote no valid result; else 0."""
    return int(any(s["status"] != "ok" for s in result["scripts"].values()))


if __name__ == "__main__":
    sys.exit(exit_code(main()))
