"""Shared fixtures: where the real data files are, and a throwaway PostgreSQL server.

The real data (census_income, omniglot, mnist, fashion_mnist) is read from ``$NAS_MTL_DATA_DIR``,
else from ``<repo>/../shared/data``. Without it the data tests are skipped with a reason --
except in CI (``$CI`` set), where a missing data folder fails the run instead of hiding tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nas_mtl.results import RunResult, TaskScore

REPO = Path(__file__).resolve().parent.parent
# torch.compile's kernels go to a folder of this test session: Inductor's shared cache
# (/tmp/torchinductor_<user>) keys its kernels without ATen's CPU capability, so a kernel built
# for AVX-512 was reused under ATEN_CPU_CAPABILITY=avx2 and failed an index check
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="nas_mtl_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
DATA_SETS = ("census_income", "omniglot", "mnist", "fashion_mnist")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding the real data sets (one sub-folder each)."""
    env = os.environ.get("NAS_MTL_DATA_DIR", "")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    missing = [name for name in DATA_SETS if not (path / name).is_dir()]
    if missing:
        reason = (
            f"real data not found: {path} lacks {', '.join(missing)}; set NAS_MTL_DATA_DIR to "
            "the folder described in docs/data.md"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of a throwaway PostgreSQL server for this session (tests/postgres.py).

    Skipped with the reason when no server can start here, except in CI (``$CI`` set) or when
    ``$NAS_MTL_POSTGRES`` is set (.ci/run sets it after installing PostgreSQL): there a
    missing server fails the run.
    """
    from postgres import REQUIRED_ENV, PostgresUnavailable, postgres_server

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(postgres_server())
        except PostgresUnavailable as e:
            if os.environ.get("CI") or REQUIRED_ENV in os.environ:
                pytest.fail(f"{e} (CI or ${REQUIRED_ENV} is set: an error, not a skip)")
            pytest.skip(str(e))
        yield server.url


def required_space_params(space: str, tasks) -> dict:
    """Values a space needs from its user (``groups`` of the grouped space), for tests.

    Spaces are tested by iterating the registry; a parameter without a usable default gets
    two groups of tasks here.
    """
    from nas_mtl.model.spaces import load_space

    names = list(tasks)
    if "groups" in load_space(space).params:
        half = (len(names) + 1) // 2
        return {"groups": [names[:half], names[half:]] if len(names) > 1 else [names]}
    return {}


def _run_result(space, seed, a, b, params=100, searched=False, depth=2):
    """A RunResult with tasks a (AUC) and b (MSE), for report and Δm tests."""
    tasks = {
        "a": TaskScore("auc", True, a, a, {"auc": a}),
        "b": TaskScore("mse", False, b, b, {"mse": b}),
    }
    return RunResult(
        space=space,
        seed=seed,
        variant={},
        run_dir=f"default/{space}/seed_{seed}",
        tasks=tasks,
        params={"a": params, "b": params},
        macs={"a": params, "b": params},
        total_params=params,
        total_macs=params,
        architecture={"open_fraction": 1.0, "depth": depth, "widths": [32]},
        retrain={},
        search={"searched": searched},
        study_sha256="x",
        wall_s=1.0,
        supernet={"depth": 2, "widths": [32]} if searched else None,
    )


def _report(results):
    """The report.json document of some results."""
    return {"study": "s", "results": [r.to_json() for r in results]}


@pytest.fixture
def make_result():
    return _run_result


@pytest.fixture
def as_report():
    return _report


def without_measured(value):
    """A JSON value with every ``wall_s`` and ``created`` left out: what two runs of one
    command must agree on bit for bit (docs/runs.md)."""
    if isinstance(value, dict):
        return {k: without_measured(v) for k, v in value.items() if k not in ("wall_s", "created")}
    if isinstance(value, list):
        return [without_measured(v) for v in value]
    return value


@pytest.fixture(autouse=True)
def exact_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches and retrains in tests run exactly their ``epochs``: ``min_steps`` would stretch
    the tiny data sets here 50–250×; tests/test_search.py and tests/test_retrain.py check the
    rules themselves on the real functions."""
    import nas_mtl.stages.retrain as retrain_module
    import nas_mtl.stages.search as search_module

    monkeypatch.setattr(search_module, "with_min_steps", lambda cfg, data: cfg)
    monkeypatch.setattr(retrain_module, "with_min_steps", lambda cfg, data: cfg)
