"""Bundled digits data and the seeded, stratified splits."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastoptim.datasets import load_digits, train_test_split, train_val_test_split


def test_load_digits_shapes_and_types():
    X, y = load_digits(return_X_y=True)
    assert X.shape == (1797, 64) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.array_equal(X, np.round(X))
    assert np.array_equal(np.unique(y), np.arange(10))
    assert np.bincount(y).min() >= 170
    # first image is a zero, as in the UCI file
    assert y[0] == 0 and X[0, :8].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


def test_load_digits_bunch():
    d = load_digits()
    assert d.data.shape == (1797, 64) and d.images.shape == (1797, 8, 8)
    np.testing.assert_array_equal(d.images[5].ravel(), d.data[5])
    assert d["target"] is d.target
    assert "Alpaydin" in d.DESCR and "10.24432/C50P49" in d.DESCR and "CC BY 4.0" in d.DESCR
    assert len(d.feature_names) == 64


def test_citation_file_is_bundled():
    from importlib import resources
    text = resources.files("fastoptim.datasets").joinpath("data", "README.txt").read_text()
    assert "https://doi.org/10.24432/C50P49" in text and "CC BY 4.0" in text


def test_same_data_as_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    Xs, ys = datasets.load_digits(return_X_y=True)
    X, y = load_digits(return_X_y=True)
    np.testing.assert_array_equal(X, Xs)
    np.testing.assert_array_equal(y, ys)


@pytest.mark.parametrize("test_size", [0.2, 0.25, 100])
def test_train_test_split_stratified_and_seeded(test_size):
    X, y = load_digits(return_X_y=True)
    a = train_test_split(X, y, test_size=test_size, random_state=0)
    b = train_test_split(X, y, test_size=test_size, random_state=0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    Xtr, Xte, ytr, yte = a
    n_test = test_size if isinstance(test_size, int) else int(np.ceil(test_size * 1797))
    assert len(Xte) == len(yte) == n_test and len(Xtr) == 1797 - n_test
    # every class keeps its share, within one sample
    share = np.bincount(y) * n_test / 1797
    assert np.all(np.abs(np.bincount(yte, minlength=10) - share) < 1)
    # a partition of the rows: together they are the whole data set
    rows = np.concatenate([Xtr, Xte])
    assert sorted(map(bytes, rows)) == sorted(map(bytes, X))
    c = train_test_split(X, y, test_size=test_size, random_state=1)
    assert not np.array_equal(c[3], yte)


def test_train_val_test_split():
    X, y = load_digits(return_X_y=True)
    Xtr, Xva, Xte, ytr, yva, yte = train_val_test_split(X, y, val_size=0.1, test_size=0.2,
                                                        random_state=3)
    assert len(Xte) == 360 and len(Xva) == 180 and len(Xtr) == 1797 - 540
    for part in (ytr, yva, yte):
        assert np.array_equal(np.unique(part), np.arange(10))
    assert len({bytes(r) for r in np.concatenate([Xtr, Xva, Xte])}) == len(
        {bytes(r) for r in X})


def test_string_labels_and_regression_targets():
    X = np.arange(40).reshape(20, 2)
    y = np.array(["a"] * 10 + ["b"] * 10)
    _, _, ytr, yte = train_test_split(X, y, test_size=0.5, random_state=0)
    assert (yte == "a").sum() == 5
    yr = np.linspace(0, 1, 20)           # real-valued: not stratified, still a partition
    _, _, rtr, rte = train_test_split(X, yr, test_size=0.25, random_state=0)
    assert len(rte) == 5 and sorted(np.concatenate([rtr, rte])) == sorted(yr)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(test_size=0.0), "test_size"),
    (dict(test_size=1.5), "test_size"),
    (dict(test_size=20), "empty split"),
    (dict(stratify="maybe"), "stratify"),
])
def test_bad_split_arguments(kwargs, msg):
    X, y = np.zeros((20, 2)), np.arange(20) % 2
    with pytest.raises(ValueError, match=msg):
        train_test_split(X, y, **kwargs)


def test_split_errors():
    with pytest.raises(ValueError, match="different lengths"):
        train_test_split(np.zeros((5, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="empty"):
        train_test_split(np.zeros((0, 2)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="least populated class"):
        train_test_split(np.zeros((5, 2)), np.array([0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="no training samples"):
        train_val_test_split(np.zeros((10, 2)), np.arange(10) % 2, val_size=5, test_size=5)


@given(counts=st.lists(st.integers(2, 30), min_size=2, max_size=6),
       frac=st.floats(0.1, 0.6), seed=st.integers(0, 2**32 - 1))
def test_stratified_split_properties(counts, frac, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    X = np.arange(len(y)).reshape(-1, 1)
    n_test = int(np.ceil(frac * len(y)))
    if n_test < len(counts) or len(y) - n_test < len(counts):
        return  # too small to keep every class on both sides (raises; tested above)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=frac, random_state=seed)
    assert len(yte) == n_test
    assert sorted(np.concatenate([Xtr, Xte]).ravel()) == list(range(len(y)))
    np.testing.assert_array_equal(y[Xtr.ravel()], ytr)
    got = np.bincount(yte, minlength=len(counts))
    assert (got >= 1).all() and (got <= np.array(counts) - 1).all()
    share = np.array(counts) * n_test / len(y)
    # largest-remainder rounding, nudged only to keep each class on both sides
    assert np.all(np.abs(got - share) < 2)
