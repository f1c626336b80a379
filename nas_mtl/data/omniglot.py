"""Omniglot alphabets as tasks (Lake et al. 2015): the Gumbel-Matrix benchmark (Maziarz 2019).

Each alphabet is one multiclass task over its own characters. Following the Gumbel-Matrix
setup, every character's 20 drawers are split 50/20/30 into train/validation/test, i.e. 10/4/6
drawers per character, with a seeded permutation per character (a character's split does not
depend on which other alphabets are loaded). Images are area-resized once from 105×105
(``image_size=105`` is the paper's size, 28 suits a CPU), strokes 1.0 and background 0.0.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas_mtl.data.arrays import from_per_task_arrays
from nas_mtl.data.base import MultiTaskData
from nas_mtl.data.checks import check_int, check_names
from nas_mtl.data.files import require_file, resolve_data_dir
from nas_mtl.data.images import load_image_file
from nas_mtl.data.registry import DATASETS
from nas_mtl.errors import DataError
from nas_mtl.tasks import TaskSpec

__all__ = [
    "DRAWER_SPLIT",
    "GUMBEL_MATRIX_ALPHABETS",
    "OmniglotAlphabet",
    "omniglot",
    "omniglot_alphabets",
    "omniglot_task_arrays",
]

# The 20 alphabets of the Gumbel-Matrix Omniglot experiment, in the paper's order.
GUMBEL_MATRIX_ALPHABETS = (
    "Gujarati", "Sylheti", "Arcadian", "Tibetan", "Old_Church_Slavonic_(Cyrillic)", "Angelic",
    "Malay_(Jawi_-_Arabic)", "Sanskrit", "Cyrillic", "Anglo-Saxon_Futhorc",
    "Syriac_(Estrangelo)", "Ge_ez", "Japanese_(katakana)", "Keble", "Manipuri",
    "Alphabet_of_the_Magi", "Gurmukhi", "Korean", "Early_Aramaic", "Atemayar_Qelisayer",
)  # fmt: skip

DRAWER_SPLIT = (10, 4, 6)  # train/val/test drawers per character (50/20/30 of 20)

OMNIGLOT_FILES = {
    "background": "images_background.npz",
    "evaluation": "images_evaluation.npz",
}
_SOURCE = (
    "Omniglot (Lake et al. 2015, https://github.com/brendenlake/omniglot), converted from the "
    "official images_background/images_evaluation PNGs to omniglot/images_background.npz, "
    "omniglot/images_evaluation.npz and omniglot/alphabets.tsv"
)


@dataclass(frozen=True)
class OmniglotAlphabet:
    """One alphabet: its file ('background'/'evaluation') and global character ids (inclusive)."""

    name: str
    split: str
    first_id: int
    last_id: int

    @property
    def n_characters(self) -> int:
        return self.last_id - self.first_id + 1


def omniglot_alphabets(data_dir: str | Path | None = None) -> dict[str, OmniglotAlphabet]:
    """All 50 alphabets from ``omniglot/alphabets.tsv`` (split, alphabet, first_id, last_id)."""
    path = require_file(
        resolve_data_dir(data_dir) / "omniglot" / "alphabets.tsv",
        dataset="omniglot",
        source=_SOURCE,
    )
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    expected = {"split", "alphabet", "first_id", "last_id"}
    if not rows or not expected <= set(rows[0]):
        raise DataError(f"{path}: needs the columns {', '.join(sorted(expected))}")
    out = {}
    for row in rows:
        if row["split"] not in OMNIGLOT_FILES:
            raise DataError(f"{path}: split must be background or evaluation, got {row['split']!r}")
        out[row["alphabet"]] = OmniglotAlphabet(
            row["alphabet"], row["split"], int(row["first_id"]), int(row["last_id"])
        )
    return out


def omniglot_task_arrays(
    alphabets: Sequence[str],
    *,
    image_size: int,
    data_dir: str | Path | None,
    seed: int,
    dataset: str = "omniglot",
) -> tuple[list[TaskSpec], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per alphabet: task spec, images ``(N, 1, S, S)``, class ids and split codes ``(N,)``."""
    table = omniglot_alphabets(data_dir)
    names = check_names(dataset, "alphabets", alphabets, list(table))
    check_int(dataset, "image_size", image_size, minimum=1)
    folder = resolve_data_dir(data_dir) / "omniglot"
    offsets = {
        "background": 1,
        "evaluation": 1 + sum(a.n_characters for a in table.values() if a.split == "background"),
    }
    specs, xs, ys, codes = [], [], [], []
    for name in names:
        alphabet = table[name]
        path = require_file(
            folder / OMNIGLOT_FILES[alphabet.split], dataset=dataset, source=_SOURCE
        )
        images, labels = load_image_file(path, image_size)
        n_chars, n_drawers = labels.shape
        images = images.reshape(n_chars, n_drawers, image_size, image_size)
        ids = np.arange(alphabet.first_id, alphabet.last_id + 1) - offsets[alphabet.split]
        rows = np.flatnonzero(np.isin(labels[:, 0], ids))
        if rows.size != alphabet.n_characters or n_drawers != sum(DRAWER_SPLIT):
            raise DataError(
                f"{path}: alphabet '{name}' should have {alphabet.n_characters} characters × "
                f"{sum(DRAWER_SPLIT)} drawers, found {rows.size} × {n_drawers}"
            )
        x = images[rows].reshape(-1, 1, image_size, image_size)  # (chars·20, 1, S, S), a copy
        y = np.repeat(np.arange(rows.size), n_drawers)
        split = np.empty((rows.size, n_drawers), dtype=np.int8)
        bounds = np.cumsum((0,) + DRAWER_SPLIT)
        for c in range(rows.size):
            perm = np.random.default_rng([seed, alphabet.first_id + c]).permutation(n_drawers)
            for k in range(3):
                split[c, perm[bounds[k] : bounds[k + 1]]] = k
        specs.append(TaskSpec(name, "multiclass", n_classes=int(rows.size)))
        xs.append(x)
        ys.append(y)
        codes.append(split.reshape(-1))
    return specs, xs, ys, codes


@DATASETS.register("omniglot", "Omniglot, one multiclass task per alphabet (Gumbel-Matrix)")
def omniglot(
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    alphabets: Sequence[str] | None = None,
    image_size: int = 28,
) -> MultiTaskData:
    """Omniglot alphabets as per-task multiclass tasks, inputs ``(1, image_size, image_size)``.

    Args:
        data_dir: folder holding ``omniglot/`` (default ``$NAS_MTL_DATA_DIR`` or ``./data``).
        seed: seed of the per-character 10/4/6 drawer split.
        alphabets: alphabet names (any of the 50, see ``omniglot/alphabets.tsv``); default the
            Gumbel-Matrix 20 in the paper's order (:data:`GUMBEL_MATRIX_ALPHABETS`).
        image_size: side of the square images (105 = original; 28 for CPU runs).
    """
    chosen = list(GUMBEL_MATRIX_ALPHABETS) if alphabets is None else alphabets
    specs, xs, ys, codes = omniglot_task_arrays(
        chosen, image_size=image_size, data_dir=data_dir, seed=seed
    )
    return from_per_task_arrays("omniglot", specs, xs, ys, split=codes, check_finite=False)
