"""UCI Census-Income (KDD) as the MMoE paper's two task groups (Ma et al., KDD 2018, §5.2).

Group 1: income > $50K and "never married"; group 2: education at least college and "never
married". The columns a group's labels come from are removed from its inputs, and the
instance-weight column (a sampling weight, not a person's attribute) is dropped. As in the MMoE
paper, the original training file is the training split and the original test file is split
50/50 (seeded) into validation and test.

"Education at least college" is read as having attended college: "Some college but no degree",
both associate degrees, bachelor's, master's, professional school and doctorate
(:data:`COLLEGE_OR_HIGHER`). The paper gives no finer definition.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nas_mtl.data.base import MultiTaskData
from nas_mtl.data.checks import check_int
from nas_mtl.data.files import require_file, resolve_data_dir
from nas_mtl.data.registry import DATASETS
from nas_mtl.data.tabular import shared_from_frame
from nas_mtl.errors import ConfigError, DataError
from nas_mtl.tasks import TaskSpec

__all__ = [
    "CENSUS_COLUMNS",
    "CENSUS_FILES",
    "COLLEGE_OR_HIGHER",
    "census_income",
    "read_census_file",
]

logger = logging.getLogger(__name__)

# The 42 columns of census-income.names, in file order (short snake-case names).
CENSUS_COLUMNS = (
    "age", "class_of_worker", "industry_code", "occupation_code", "education",
    "wage_per_hour", "enrolled_in_edu_last_week", "marital_status", "major_industry",
    "major_occupation", "race", "hispanic_origin", "sex", "union_member",
    "unemployment_reason", "employment_status", "capital_gains", "capital_losses",
    "stock_dividends", "tax_filer_status", "previous_region", "previous_state",
    "household_family_status", "household_summary", "instance_weight", "migration_msa",
    "migration_region", "migration_within_region", "same_house_1_year_ago",
    "migration_sunbelt", "num_persons_worked_for_employer", "family_under_18",
    "father_birth_country", "mother_birth_country", "birth_country", "citizenship",
    "own_business_or_self_employed", "veterans_questionnaire", "veterans_benefits",
    "weeks_worked", "year", "income",
)  # fmt: skip

# Integer-coded columns that are nominal codes, not quantities: one-hot like the text columns.
_NOMINAL_CODES = (
    "industry_code", "occupation_code", "own_business_or_self_employed", "veterans_benefits",
    "year",
)  # fmt: skip
_NUMERIC = (
    "age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends",
    "num_persons_worked_for_employer", "weeks_worked",
)  # fmt: skip

COLLEGE_OR_HIGHER = frozenset(
    {
        "Some college but no degree",
        "Associates degree-academic program",
        "Associates degree-occup /vocational",
        "Bachelors degree(BA AB BS)",
        "Masters degree(MA MS MEng MEd MSW MBA)",
        "Prof school degree (MD DDS DVM LLB JD)",
        "Doctorate degree(PhD EdD)",
    }
)
_INCOME_VALUES = {"- 50000.": 0.0, "50000+.": 1.0}

CENSUS_FILES = {"train": "census-income-train.csv.gz", "test": "census-income-test.csv.gz"}
_SOURCE = (
    "the UCI Machine Learning Repository, data set 'Census-Income (KDD)' "
    "(https://archive.ics.uci.edu/dataset/117): census-income.data.gz and census-income.test.gz, "
    "saved as census_income/census-income-train.csv.gz and census_income/census-income-test.csv.gz"
)

# (task name, source column) per group; the label rule of each task is in _labels().
_GROUPS = {
    1: (("income_50k", "income"), ("never_married", "marital_status")),
    2: (("education_college", "education"), ("never_married", "marital_status")),
}


def read_census_file(path: Path) -> pd.DataFrame:
    """Read one original UCI file (no header, values padded with a space) with named columns."""
    frame = pd.read_csv(path, header=None, skipinitialspace=True, na_filter=False)
    if frame.shape[1] != len(CENSUS_COLUMNS):
        raise DataError(
            f"{path}: expected the {len(CENSUS_COLUMNS)} columns of the UCI Census-Income (KDD) "
            f"file, found {frame.shape[1]}"
        )
    frame.columns = list(CENSUS_COLUMNS)
    return frame


def _labels(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    income = frame["income"].map(_INCOME_VALUES)
    if income.isna().any():
        odd = frame["income"][income.isna()].value_counts()
        raise DataError(
            f"{where}: income column has values other than '- 50000.' and '50000+.': "
            f"{dict(odd.head(5))}"
        )
    return pd.DataFrame(
        {
            "income_50k": income.to_numpy(dtype=np.float32),
            "never_married": (frame["marital_status"] == "Never married").to_numpy(np.float32),
            "education_college": frame["education"].isin(COLLEGE_OR_HIGHER).to_numpy(np.float32),
        }
    )


@DATASETS.register("census_income", "UCI Census-Income (KDD), MMoE task groups 1 and 2")
def census_income(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    group: int = 1,
    subsample: int | None = None,
) -> MultiTaskData:
    """Census-Income (KDD) with the MMoE paper's task group 1 or 2 (two binary tasks, AUC).

    Args:
        data_dir: folder holding ``census_income/`` (default ``$NAS_MTL_DATA_DIR`` or ``./data``).
        seed: seed of the 50/50 validation/test split of the test file (and of ``subsample``).
        group: 1 = income > 50K + never married; 2 = education >= college + never married.
        subsample: keep a seeded random subset of at most this many rows in each split
            (quick runs); ``None`` keeps all 199,523 / 49,881 / 49,881 rows.

    Inputs: 7 standardized numeric columns and one-hot encodings of the text columns and of the
    nominal integer codes (industry/occupation codes, own business, veterans benefits, year).
    """
    if group not in _GROUPS:
        raise ConfigError(f"data set 'census_income': group must be 1 or 2, got group={group!r}")
    check_int("census_income", "subsample", subsample, minimum=1, optional=True)
    start = time.perf_counter()
    folder = resolve_data_dir(data_dir) / "census_income"
    paths = {
        k: require_file(folder / f, dataset="census_income", source=_SOURCE)
        for k, f in CENSUS_FILES.items()
    }
    train = read_census_file(paths["train"])
    test = read_census_file(paths["test"])
    frame = pd.concat([train, test], ignore_index=True)
    labels = _labels(frame, str(folder))
    label_sources = {column for _, column in _GROUPS[group]}
    features = [
        c for c in CENSUS_COLUMNS if c not in label_sources and c not in ("instance_weight",)
    ]
    categorical = [c for c in features if c not in _NUMERIC]
    task_names = [name for name, _ in _GROUPS[group]]
    frame = pd.concat([frame[features], labels[task_names]], axis=1)

    rng = np.random.default_rng(seed)
    codes = np.zeros(len(frame), dtype=np.int8)
    n_train, n_test = len(train), len(test)
    perm = rng.permutation(n_test)
    test_codes = np.full(n_test, 2, dtype=np.int8)
    test_codes[perm[: n_test // 2]] = 1
    codes[n_train:] = test_codes
    if subsample is not None:
        for k in range(3):
            rows = np.flatnonzero(codes == k)
            if rows.size > subsample:
                drop = rng.choice(rows, size=rows.size - subsample, replace=False)
                codes[drop] = -1
    data = shared_from_frame(
        frame,
        name=f"census_income_group{group}",
        tasks=[TaskSpec(name, "binary") for name in task_names],
        features=features,
        categorical=categorical,
        split_codes=codes,
        where=str(folder),
    )
    logger.info("census_income group %d loaded in %.2f s", group, time.perf_counter() - start)
    return data
