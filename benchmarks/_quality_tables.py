"""The quality tables of ``benchmarks/quality.py``: each table's study, peers and papers.

A table is a nas-mtl study (a TOML dict) sized per mode, with the published figures it is
compared with and how our run differs from the papers' settings. Not a benchmark (underscore).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nas_mtl.data import GUMBEL_MATRIX_ALPHABETS  # noqa: E402

THREADS = 2
SEEDS = (0, 1, 2)
TABULAR = ("no_sharing", "shared_bottom", "mmoe", "snr_trans", "snr_aver", "gumbel_matrix")
IMAGE = ("no_sharing", "shared_bottom", "gumbel_matrix")  # the spaces with image layers
SEARCHED = ("snr_trans", "snr_aver", "gumbel_matrix")
# The papers' figures on record in the project: shared/data/README.md (and studies/*.toml).
MA_2018 = "Ma et al., KDD 2018, §5.2 (as quoted in shared/data/README.md)"
MAZIARZ_2019 = "Maziarz et al. 2019, Omniglot (as quoted in shared/data/README.md)"
CENSUS1_PAPER_MEAN_INCOME = 0.9359


@dataclass(frozen=True)
class Paper:
    """One published figure: a model's per-task (or mean-only) metric values."""

    model: str  # the paper's model name
    space: str | None  # the nas-mtl space of the same family, if any
    label: str  # "best", "mean", "mean over 20 alphabets"
    values: Mapping[str, float]  # task -> value; "mean" -> the mean over the paper's tasks
    source: str


@dataclass(frozen=True)
class Table:
    """One quality table: its study (as a TOML dict), its peers and the papers' figures."""

    key: str
    title: str
    study: dict[str, Any]
    peers: bool = False
    papers: tuple[Paper, ...] = ()
    differences: tuple[str, ...] = ()  # how this run differs from the papers' setting
    minutes: float | None = None  # expected wall minutes on 2 busy cores (this mode)


def study(
    name: str,
    description: str,
    spaces: Sequence[str],
    data: dict[str, Any],
    space_params: dict[str, dict[str, Any]],
    search: dict[str, Any],
    retrain: dict[str, Any],
    seeds: Sequence[int] = SEEDS,
) -> dict[str, Any]:
    """A study file's contents (``nas_mtl/study.py``): what ``nas-mtl run`` reads.

    Each table states its retrain length in epochs (its study file's, or the papers'
    protocol), so ``[retrain] min_steps`` does not stretch it unless the table says so.
    """
    retrain = {"min_steps": 0, **retrain}
    return {
        "name": name,
        "description": description,
        "spaces": list(spaces),
        "seeds": list(seeds),
        "data": data,
        "space_params": {s: p for s, p in space_params.items() if s in spaces},
        "search": search,
        "retrain": retrain,
    }


CENSUS_SPACE_PARAMS = {  # studies/census_income.toml
    "shared_bottom": {"width": 113},
    "snr_trans": {"subnetworks": 4, "width": 16},
    "snr_aver": {"subnetworks": 4, "width": 24},
    "gumbel_matrix": {"components": 4, "width": 16},
}
CENSUS_TASKS = {1: "income > 50K, never married", 2: "education >= college, never married"}


def census(group: int, mode: str) -> Table:
    # full: one epoch over all 199,523 rows takes 1.1-2.9 s per space (probe, 2 busy cores),
    # so 4 + 6 epochs are ~95 s a seed for the six spaces, and the five peers ~110 s
    # (extrapolated from --quick): ~10 min a group. quick: 40,000 rows per split, ~1.5 min
    full = mode == "full"
    epochs, batch = ((4, 6), 1024) if full else ((2, 3), 512)
    params: dict[str, Any] = {"group": group}
    if not full:
        params["subsample"] = 40000
    rows = "all 199,523 training rows" if full else "40,000 rows per split (quick)"
    papers: tuple[Paper, ...] = ()
    if group == 1:
        papers = (
            Paper("MMoE", "mmoe", "best", {"income_50k": 0.9410, "never_married": 0.9926}, MA_2018),
            Paper(
                "MMoE",
                "mmoe",
                "mean",
                {"income_50k": CENSUS1_PAPER_MEAN_INCOME, "never_married": 0.9927},
                MA_2018,
            ),
        )
    return Table(
        key=f"census{group}",
        title=f"Census-Income group {group} ({CENSUS_TASKS[group]}), test AUC, {rows}",
        study=study(
            f"quality_census{group}",
            f"Census-Income group {group}: AUC per task (benchmarks/quality.py)",
            TABULAR,
            {"name": "census_income", "params": params},
            CENSUS_SPACE_PARAMS,
            {"epochs": epochs[0], "batch_size": batch, "lr_arch": 3e-2, "patience": 3},
            {"epochs": epochs[1], "batch_size": batch, "lr": 1e-3, "patience": 3},
        ),
        peers=True,
        papers=papers,
        differences=(
            f"this run trains {rows} for {epochs[0]} search + {epochs[1]} retrain epochs "
            f"(batch {batch}, Adam 1e-3, early stopping on validation) with untuned default sizes "
            "(MMoE 8 experts x 16), and its validation/test halves are one seeded split per seed",
            "the paper's figures come from its own hyper-parameter tuning and repeated runs, "
            "which this table does not reproduce",
        ),
        minutes=10.0 if full else 1.5,
    )


def synthetic(mode: str) -> Table:
    # 10,000 rows, batch 128 (79 steps per epoch): 0.45 s per search epoch and 0.15-0.2 s per
    # retrain epoch (probe), so ~55 s a (rho, seed) for the six spaces and ~55 s for the five
    # peers: ~17 min for 3 rho x 3 seeds
    epochs = (15, 30)
    return Table(
        key="synthetic",
        title="Synthetic, MMoE §3.2 generator, hard variant (sinusoids = index), 2 tasks, "
        "test MSE per task by rho",
        study=study(
            "quality_synthetic",
            "rho sweep, hard sinusoids (benchmarks/quality.py)",
            TABULAR,
            {
                "name": "synthetic",
                "params": {
                    "n_train": 10000,
                    "n_val": 1000,
                    "n_test": 1000,
                    "input_dim": 100,
                    "groups": [2],
                    "m": 10,
                    "sinusoids": "index",
                },
                "sweep": {"rho": [0.5, 0.9, 1.0]},
            },
            {  # studies/mmoe_synthetic.toml; gumbel_matrix as on Census-Income
                "snr_trans": {"subnetworks": 4, "width": 16},
                "snr_aver": {"subnetworks": 4, "width": 24},
                "no_sharing": {"width": 64},
                "gumbel_matrix": {"components": 4, "width": 16},
            },
            {"epochs": epochs[0], "batch_size": 128, "lr_arch": 3e-2, "patience": 5},
            {"epochs": epochs[1], "batch_size": 128, "lr": 1e-3, "patience": 5},
        ),
        peers=True,
        minutes=17.0,
    )


PLANTED_GROUPS = [[f"g{g}_t{t}" for t in range(4)] for g in range(3)]


def planted(mode: str) -> Table:
    # --quick at 30 + 30 epochs: ~0.22 s a search epoch and ~0.08 s a retrain epoch for the
    # searched spaces, ~0.05 s a retrain epoch for the fixed ones, ~26 s for the five peers; so
    # full (150 + 100 epochs, as studies/planted_groups.toml) is ~230 s a seed: ~12 min.
    # quick: 20 + 20 epochs, ~2 min
    full = mode == "full"
    search = {"epochs": 150 if full else 20, "batch_size": 32}
    retrain = {"epochs": 100 if full else 20, "batch_size": 32, "lr": 3e-3, "patience": 8}
    return Table(
        key="planted",
        title="Planted groups: 12 tasks in 3 groups of 4, per-task inputs, mean test MSE over "
        f"tasks ({search['epochs']} search / {retrain['epochs']} retrain epochs)",
        study=study(
            "quality_planted",
            "12 tasks in 3 planted groups (benchmarks/quality.py)",
            ("no_sharing", "shared_bottom", "mmoe", "grouped", *SEARCHED),
            {  # studies/planted_groups.toml
                "name": "synthetic",
                "params": {
                    "groups": [4, 4, 4],
                    "inputs": "per_task",
                    "n_train": 150,
                    "n_val": 300,
                    "n_test": 1000,
                    "input_dim": 32,
                    "rho": 0.95,
                    "m": 3,
                },
            },
            {
                "no_sharing": {"layers": 2, "width": 32},
                "shared_bottom": {"layers": 2, "width": 96},
                "mmoe": {"layers": 2, "expert_width": 32},
                "gumbel_matrix": {"layers": 2, "components": 12, "width": 32},
                "grouped": {"layers": 2, "width": 32, "groups": PLANTED_GROUPS},
            },
            search,
            retrain,
        ),
        peers=True,
        minutes=12.0 if full else 2.0,
    )


OMNIGLOT_ALPHABETS = 5


def image_stages(
    epochs: tuple[int, int], batch: int, steps: int, patience: tuple[int, int]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """[search] and [retrain] of an image table: fixed steps per epoch, gates at lr 1e-2."""
    search = {
        "epochs": epochs[0],
        "batch_size": batch,
        "steps_per_epoch": steps,
        "lr_arch": 1e-2,
        "patience": patience[0],
    }
    retrain = {
        "epochs": epochs[1],
        "batch_size": batch,
        "steps_per_epoch": steps,
        "patience": patience[1],
    }
    return search, retrain


def omniglot(mode: str) -> Table:
    alphabets = list(GUMBEL_MATRIX_ALPHABETS[:OMNIGLOT_ALPHABETS])
    # 5 alphabets x 16 images a step: Gumbel-Matrix 0.28 s a search step and 0.15 s a retrain
    # step, no_sharing ~0.05 s, shared_bottom ~0.025 s (probe), so 50 steps x (10 + 15)
    # epochs are ~310 s a seed: ~16 min
    epochs, steps = (10, 15), 50
    return Table(
        key="omniglot",
        title=f"Omniglot at CPU scale: the first {OMNIGLOT_ALPHABETS} of the paper's 20 "
        "alphabets, 28x28 (paper 105x105), test accuracy",
        study=study(
            "quality_omniglot",
            "Omniglot at CPU scale (benchmarks/quality.py)",
            IMAGE,
            {"name": "omniglot", "params": {"image_size": 28, "alphabets": alphabets}},
            {  # studies/omniglot.toml
                "gumbel_matrix": {"channels": 16, "p0": 0.97},
                "shared_bottom": {"channels": 24},
                "no_sharing": {"channels": 8},
            },
            *image_stages(epochs, 16, steps, patience=(5, 6)),
        ),
        papers=(
            Paper(
                "Gumbel-Matrix",
                "gumbel_matrix",
                "mean over its 20 alphabets",
                {"mean": 0.9352},
                MAZIARZ_2019,
            ),
        ),
        differences=(
            f"{OMNIGLOT_ALPHABETS} alphabets instead of 20 (a mean over other tasks)",
            "28x28 images instead of 105x105",
            "16 channels and 4 routed layers instead of 48 and 8 (studies/omniglot.toml)",
            f"{epochs[0]} search + {epochs[1]} retrain epochs of {steps} steps instead of the "
            "paper scale's 100 + 100 epochs of 100 steps (studies/omniglot.toml)",
        ),
        minutes=16.0,
    )


def mnist(mode: str) -> Table:
    full = mode == "full"
    # full: 4 tasks x 32 images a step at 28x28: Gumbel-Matrix 0.32 s a search step and 0.18 s
    # a retrain step, no_sharing and shared_bottom ~0.03 s (--quick of an earlier version), so
    # 50 steps x (8 + 10) epochs are ~250 s a seed: ~12.5 min. quick: 14x14 images, ~1.5 min
    n, size, steps, epochs = (2500, 28, 50, (8, 10)) if full else (600, 14, 30, (3, 5))
    return Table(
        key="mnist",
        title=f"MNIST family (MNIST, MNIST-2, rotated, rotated-2), {n} images per task, "
        f"{size}x{size}, test accuracy",
        study=study(
            "quality_mnist",
            "Gumbel-Matrix MNIST family (benchmarks/quality.py)",
            IMAGE,
            {"name": "mnist_family", "params": {"image_size": size, "n_per_task": n}},
            {  # studies/mnist_family.toml
                "gumbel_matrix": {"channels": 16, "p0": 0.9},
                "shared_bottom": {"channels": 24},
                "no_sharing": {"channels": 12},
            },
            *image_stages(epochs, 32, steps, patience=(4, 5)),
        ),
        minutes=12.5 if full else 1.5,
    )


def smoke_tables() -> list[Table]:
    """Toy synthetic tables (one shared-input, one per-task): does the script run?"""
    # named as the real tables, so that the headline code runs too (in its own mode folder)
    toy_search = {"epochs": 2, "batch_size": 16, "lr_weights": 1e-2}
    toy_retrain = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "patience": 2}
    small = {"layers": 1, "width": 8}
    return [
        Table(
            key="synthetic",
            title="smoke: synthetic, shared inputs (toy sizes; the numbers mean nothing)",
            study=study(
                "quality_smoke_shared",
                "toy (benchmarks/quality.py --smoke)",
                ("no_sharing", "mmoe", "snr_trans"),
                {
                    "name": "synthetic",
                    "params": {"n_train": 96, "n_val": 32, "n_test": 32, "input_dim": 8},
                    "sweep": {"rho": [0.5]},
                },
                {
                    "no_sharing": small,
                    "mmoe": {"experts": 2, "expert_width": 8},
                    "snr_trans": {"subnetworks": 2, "width": 8},
                },
                toy_search,
                toy_retrain,
                seeds=(0,),
            ),
            peers=True,
        ),
        Table(
            key="planted",
            title="smoke: synthetic, per-task inputs (toy sizes; the numbers mean nothing)",
            study=study(
                "quality_smoke_per_task",
                "toy (benchmarks/quality.py --smoke)",
                ("no_sharing", "grouped", "gumbel_matrix"),
                {
                    "name": "synthetic",
                    "params": {
                        "groups": [2, 2],
                        "inputs": "per_task",
                        "n_train": 48,
                        "n_val": 32,
                        "n_test": 32,
                        "input_dim": 8,
                    },
                },
                {
                    "no_sharing": small,
                    "grouped": {**small, "groups": [["g0_t0", "g0_t1"], ["g1_t0", "g1_t1"]]},
                    "gumbel_matrix": {"layers": 1, "components": 2, "width": 8},
                },
                toy_search,
                toy_retrain,
                seeds=(0,),
            ),
        ),
    ]


def plan(mode: str) -> list[Table]:
    """The tables of a mode, in the order they run."""
    if mode == "smoke":
        return smoke_tables()
    if mode == "quick":
        return [census(1, mode), planted(mode), mnist(mode)]
    return [
        census(1, mode),
        census(2, mode),
        synthetic(mode),
        planted(mode),
        omniglot(mode),
        mnist(mode),
    ]
