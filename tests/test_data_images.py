"""Omniglot, MNIST family and domain clusters on the real files (sizes from the data README)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nas_mtl.data import (
    GUMBEL_MATRIX_ALPHABETS,
    MNIST2_PERMUTATION,
    MultiTaskData,
    area_resize,
    domain_of,
    load_dataset,
    omniglot_alphabets,
)
from nas_mtl.data.images import area_weights, load_image_file
from nas_mtl.data.mnist import load_fashion_mnist, load_mnist
from nas_mtl.errors import ConfigError, DataError

# Characters per alphabet, from omniglot/alphabets.tsv (last_id - first_id + 1).
GM_CLASSES = {
    "Gujarati": 48, "Sylheti": 28, "Arcadian": 26, "Tibetan": 42,
    "Old_Church_Slavonic_(Cyrillic)": 45, "Angelic": 20, "Malay_(Jawi_-_Arabic)": 40,
    "Sanskrit": 42, "Cyrillic": 33, "Anglo-Saxon_Futhorc": 29, "Syriac_(Estrangelo)": 23,
    "Ge_ez": 26, "Japanese_(katakana)": 47, "Keble": 26, "Manipuri": 40,
    "Alphabet_of_the_Magi": 20, "Gurmukhi": 45, "Korean": 40, "Early_Aramaic": 22,
    "Atemayar_Qelisayer": 26,
}  # fmt: skip
# Digit counts of the 10,000 stored MNIST digits (np.bincount of mnist_10k.npz labels).
MNIST_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


# ------------------------------------------------------------------------------ resizing


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_area_resize_preserves_mean_and_range(n_in: int, n_out: int, seed: int) -> None:
    w = area_weights(n_in, n_out)
    np.testing.assert_allclose(w.sum(1), 1.0)
    # every input pixel contributes the same total area: the image mean is preserved
    np.testing.assert_allclose(w.sum(0), n_out / n_in, rtol=1e-9)
    img = np.random.default_rng(seed).random((2, n_in, n_in))
    out = area_resize(img, n_out)
    assert out.shape == (2, n_out, n_out) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), img.mean(axis=(1, 2)), rtol=1e-5)
    assert out.min() >= img.min() - 1e-6 and out.max() <= img.max() + 1e-6


def test_area_resize_integer_factor_is_block_mean() -> None:
    img = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    np.testing.assert_allclose(area_resize(img, 2)[0], [[2.5, 4.5], [10.5, 12.5]])


# ------------------------------------------------------------------------------ omniglot


@pytest.fixture(scope="module")
def omniglot20(data_dir: Path) -> MultiTaskData:
    return load_dataset("omniglot", data_dir=data_dir)


def test_alphabet_table_matches_readme(data_dir: Path) -> None:
    table = omniglot_alphabets(data_dir)
    assert len(table) == 50
    assert sum(a.n_characters for a in table.values()) == 1623
    background = [a for a in table.values() if a.split == "background"]
    assert (len(background), sum(a.n_characters for a in background)) == (30, 964)
    assert {a: table[a].n_characters for a in GUMBEL_MATRIX_ALPHABETS} == GM_CLASSES


def test_omniglot_default_is_the_gumbel_matrix_20(omniglot20: MultiTaskData) -> None:
    data = omniglot20
    assert data.task_names == GUMBEL_MATRIX_ALPHABETS == tuple(GM_CLASSES)
    assert data.regime == "per_task"
    assert data.input_shape == (1, 28, 28)
    assert [t.n_classes for t in data.tasks] == list(GM_CLASSES.values())
    for t, n_classes in enumerate(GM_CLASSES.values()):
        for split, per_char in (("train", 10), ("val", 4), ("test", 6)):
            y = getattr(data, split).y[t].long()
            assert torch.equal(
                torch.bincount(y, minlength=n_classes), torch.full((n_classes,), per_char)
            )
    n_chars = sum(GM_CLASSES.values())
    assert (len(data.train), len(data.val), len(data.test)) == (
        10 * n_chars,
        4 * n_chars,
        6 * n_chars,
    )
    x = data.train.x[0]
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert 0.03 < float(x.mean()) < 0.15  # strokes (1.0) are the minority, background is 0.0


def test_omniglot_subset_full_size_and_split_seed(data_dir: Path) -> None:
    data = load_dataset(
        "omniglot", data_dir=data_dir, alphabets=["Angelic", "Keble"], image_size=105, seed=2
    )
    assert data.task_names == ("Angelic", "Keble")
    assert data.input_shape == (1, 105, 105)
    assert data.train.sizes() == (200, 260) and data.val.sizes() == (80, 104)
    # at full size the pixels are exactly the stored strokes: 1.0 stroke, 0.0 background
    values = torch.unique(data.test.x[0])
    assert values.tolist() == [0.0, 1.0]
    raw = np.load(data_dir / "omniglot" / "images_evaluation.npz")
    angelic = ~raw["images"][:20]  # Angelic = the first 20 evaluation characters
    stroke_fraction = float(np.mean(angelic))
    all_x = torch.cat([data.train.x[0], data.val.x[0], data.test.x[0]])
    assert float(all_x.mean()) == pytest.approx(stroke_fraction, rel=1e-6)
    # a character's drawer split depends on the seed only, not on the other alphabets
    alone = load_dataset("omniglot", data_dir=data_dir, alphabets=["Keble"], image_size=105, seed=2)
    assert torch.equal(alone.train.x[0], data.train.x[1])


def test_omniglot_unknown_alphabet(data_dir: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown alphabet 'Gujarat' \(did you mean 'Gujarati'\?\)"
    ):
        load_dataset("omniglot", data_dir=data_dir, alphabets=["Gujarat"])
    with pytest.raises(ConfigError, match="alphabets must be a non-empty list of names"):
        load_dataset("omniglot", data_dir=data_dir, alphabets="Gujarati")


def test_image_cache_is_shared_and_read_only(data_dir: Path) -> None:
    path = data_dir / "mnist" / "mnist_10k.npz"
    a, la = load_image_file(path, 28)
    b, _ = load_image_file(path, 28)
    assert a is b
    assert not a.flags.writeable and not la.flags.writeable
    assert load_image_file(path, 14)[0].shape == (10_000, 14, 14)


# ------------------------------------------------------------------------------ mnist family


def test_mnist_family_full(data_dir: Path) -> None:
    data = load_dataset("mnist_family", data_dir=data_dir)
    assert data.task_names == ("mnist", "mnist-2", "mnist-rotated", "mnist-rotated-2")
    assert data.input_shape == (1, 28, 28)
    assert all(t.n_classes == 10 for t in data.tasks)
    assert data.train.sizes() == (7000,) * 4
    assert data.val.sizes() == (1500,) * 4 and data.test.sizes() == (1500,) * 4
    labels = torch.cat([data.train.y[0], data.val.y[0], data.test.y[0]]).long()
    assert torch.bincount(labels).tolist() == MNIST_COUNTS
    perm = torch.tensor(MNIST2_PERMUTATION)
    for split in (data.train, data.val, data.test):
        assert torch.equal(split.x[1], split.x[0])  # -2: same images ...
        assert torch.equal(split.y[1].long(), perm[split.y[0].long()])  # ... permuted labels
        assert torch.equal(split.x[2], torch.rot90(split.x[0], 1, dims=(2, 3)))
        assert torch.equal(split.y[2], split.y[0])
        assert torch.equal(split.x[3], split.x[2]) and torch.equal(split.y[3], split.y[1])
    assert sorted(MNIST2_PERMUTATION) == list(range(10))
    assert all(MNIST2_PERMUTATION[k] != k for k in range(10))  # no class keeps its label
    assert 0.0 <= float(data.train.x[0].min()) and float(data.train.x[0].max()) == 1.0


def test_mnist_family_subset(data_dir: Path) -> None:
    data = load_dataset(
        "mnist_family",
        data_dir=data_dir,
        tasks=["mnist-rotated", "mnist"],
        n_per_task=200,
        image_size=14,
    )
    assert data.task_names == ("mnist-rotated", "mnist")
    assert data.input_shape == (1, 14, 14)
    assert data.train.sizes() == (140, 140) and data.test.sizes() == (30, 30)
    with pytest.raises(ConfigError, match=r"unknown task 'mnist-3' \(did you mean 'mnist-2'\?\)"):
        load_dataset("mnist_family", data_dir=data_dir, tasks=["mnist-3"])


# ------------------------------------------------------------------------------ domain clusters


def test_fashion_mnist_files(data_dir: Path) -> None:
    train_x, train_y = load_fashion_mnist(data_dir, 28, "train")
    test_x, test_y = load_fashion_mnist(data_dir, 28, "test")
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10
    assert train_x.dtype == np.float32 and float(train_x.max()) == 1.0
    mnist_x, mnist_y = load_mnist(data_dir, 28)
    assert mnist_x.shape == (10_000, 28, 28) and np.bincount(mnist_y).tolist() == MNIST_COUNTS


def test_domain_clusters_full(data_dir: Path) -> None:
    data = load_dataset("domain_clusters", data_dir=data_dir, per_domain=2)
    assert data.task_names == (
        *("mnist-no0", "mnist-no1", "fashion-no0", "fashion-no1"),
        *("omniglot-Gujarati", "omniglot-Sylheti"),
    )
    assert [domain_of(n) for n in data.task_names] == ["mnist"] * 2 + ["fashion"] * 2 + [
        "omniglot"
    ] * 2
    assert data.input_shape == (1, 28, 28)
    assert [t.n_classes for t in data.tasks] == [9, 9, 9, 9, 48, 28]
    total = [
        a + b + c
        for a, b, c in zip(data.train.sizes(), data.val.sizes(), data.test.sizes(), strict=True)
    ]
    assert total == [10_000 - 1001, 10_000 - 1127, 63_000, 63_000, 960, 560]
    assert data.test.sizes()[2:4] == (9_000, 9_000)  # the official Fashion-MNIST test set
    assert data.train.sizes()[2] + data.val.sizes()[2] == 54_000
    assert data.train.sizes()[4:] == (480, 280)  # Omniglot 10/4/6 drawers per character
    for t in range(4):  # labels renumbered to 0..8
        assert int(data.train.y[t].max()) == 8 and int(data.train.y[t].min()) == 0


def test_domain_clusters_subset(data_dir: Path) -> None:
    data = load_dataset("domain_clusters", data_dir=data_dir, per_domain=1, n_per_task=300, seed=1)
    assert data.task_names == ("mnist-no0", "fashion-no0", "omniglot-Gujarati")
    sizes = [
        a + b + c
        for a, b, c in zip(data.train.sizes(), data.val.sizes(), data.test.sizes(), strict=True)
    ]
    assert sizes == [300, 300, 300]
    assert all(float(y.max()) <= 8 for y in data.train.y[:2])
    with pytest.raises(ConfigError, match="per_domain must be at most 10"):
        load_dataset("domain_clusters", data_dir=data_dir, per_domain=11)


def test_domain_clusters_first_draws_another_task_set(data_dir: Path) -> None:
    data = load_dataset("domain_clusters", data_dir=data_dir, per_domain=2, first=3, n_per_task=200)
    assert data.task_names == (
        *("mnist-no3", "mnist-no4", "fashion-no3", "fashion-no4"),
        *("omniglot-Tibetan", "omniglot-Old_Church_Slavonic_(Cyrillic)"),
    )
    y = data.train.y[0]
    assert int(y.max()) == 8 and int(y.min()) == 0  # without class 3, renumbered
    with pytest.raises(ConfigError, match="first \\+ per_domain must be at most 10"):
        load_dataset("domain_clusters", data_dir=data_dir, per_domain=3, first=8)


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("omniglot", "omniglot/alphabets.tsv"),
        ("mnist_family", "mnist/mnist_10k.npz"),
        ("domain_clusters", "mnist/mnist_10k.npz"),
    ],
)
def test_missing_files(tmp_path: Path, name: str, missing: str) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(name, data_dir=tmp_path)
    assert str(tmp_path / missing) in str(err.value)
    assert "NAS_MTL_DATA_DIR" in str(err.value)
