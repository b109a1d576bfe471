"""Seeded train/test and train/validation/test splits, stratified for class labels."""

import math
import numbers

import numpy as np

__all__ = ["train_test_split", "train_val_test_split"]


def _n_from_size(size, n, name):
    """A fraction in (0, 1) -> ceil(size * n) rows; a positive int -> that many rows."""
    if isinstance(size, (bool, np.bool_)):
        raise ValueError(f"{name} must be a float in (0, 1) or a positive int, got {size!r}")
    if isinstance(size, numbers.Integral):
        k = int(size)
    elif isinstance(size, numbers.Real) and 0.0 < float(size) < 1.0:
        k = math.ceil(float(size) * n)
    else:
        raise ValueError(f"{name} must be a float in (0, 1) or a positive int, got {size!r}")
    if not 0 < k < n:
        raise ValueError(f"{name}={size!r} leaves an empty split with n_samples={n}")
    return k


def is_classification_target(y):
    """Labels (ints, bools, strings, objects) rather than real-valued targets."""
    y = np.asarray(y)
    return y.ndim == 1 and y.dtype.kind in "biuUSO"


def _split_indices(y, n, n_test, stratify, rng):
    """Return (train_idx, test_idx), each shuffled."""
    if not stratify:
        perm = rng.permutation(n)
        return perm[n_test:], perm[:n_test]
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            "cannot stratify: the least populated class has only "
            f"{counts.min()} member(s); each class needs at least 2")
    if n_test < len(classes) or n - n_test < len(classes):
        raise ValueError(
            f"cannot stratify {len(classes)} classes into splits of {n - n_test} and "
            f"{n_test} samples; each split needs at least one sample per class")
    # Largest-remainder allocation of n_test over the classes, ties broken at random.
    exact = counts * (n_test / n)
    k = np.floor(exact).astype(np.int64)
    short = n_test - int(k.sum())
    if short:
        frac = exact - k
        order = np.lexsort((rng.random(len(classes)), -frac))
        k[order[:short]] += 1
    # Keep at least one of every class on each side when the sizes allow it.
    k = np.clip(k, 1, counts - 1)
    while k.sum() > n_test:
        k[np.argmax(np.where(k > 1, k - exact, -np.inf))] -= 1
    while k.sum() < n_test:
        k[np.argmin(np.where(k < counts - 1, k - exact, np.inf))] += 1
    train, test = [], []
    by_class = np.argsort(y_idx, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    for c in range(len(classes)):
        members = rng.permutation(by_class[starts[c]:starts[c + 1]])
        test.append(members[:k[c]])
        train.append(members[k[c]:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _check_stratify(stratify, y):
    if isinstance(stratify, str):
        if stratify != "auto":
            raise ValueError(f"stratify must be True, False or 'auto', got {stratify!r}")
        return y is not None and is_classification_target(y)
    if stratify and y is None:
        raise ValueError("stratify=True needs y")
    return bool(stratify)


def _take(a, idx):
    return a[idx] if isinstance(a, np.ndarray) else np.asarray(a)[idx]


def _check_lengths(X, y):
    n = len(X)
    if n == 0:
        raise ValueError("cannot split an empty data set")
    if y is not None and len(y) != n:
        raise ValueError(f"X and y have different lengths: {n} != {len(y)}")
    return n


def train_test_split(X, y=None, *, test_size=0.25, stratify="auto", random_state=None):
    """Shuffle and split into train and test parts.

    ``test_size``: a fraction in (0, 1) (``ceil(test_size * n)`` test rows, as scikit-learn)
    or a row count.  ``stratify``: ``True`` keeps each class's share of ``y`` in both parts
    (largest-remainder rounding, at least one sample per class per part); ``"auto"``
    (default) stratifies when ``y`` holds labels (integer, bool or string dtype, 1-D) and
    not for real-valued targets.  ``random_state``: int, None or ``np.random.Generator``.

    Returns ``X_train, X_test`` or, with ``y``, ``X_train, X_test, y_train, y_test``.
    """
    n = _check_lengths(X, y)
    n_test = _n_from_size(test_size, n, "test_size")
    strat = _check_stratify(stratify, y)
    rng = np.random.default_rng(random_state)
    y_arr = None if y is None else np.asarray(y)
    tr, te = _split_indices(y_arr, n, n_test, strat, rng)
    if y is None:
        return _take(X, tr), _take(X, te)
    return _take(X, tr), _take(X, te), y_arr[tr], y_arr[te]


def train_val_test_split(X, y, *, val_size=0.15, test_size=0.15, stratify="auto",
                         random_state=None):
    """Shuffle and split into train, validation and test parts (sizes as in
    :func:`train_test_split`, both relative to the whole data set).

    Returns ``X_train, X_val, X_test, y_train, y_val, y_test``.
    """
    if y is None:
        raise TypeError("train_val_test_split needs y (use train_test_split for X alone)")
    n = _check_lengths(X, y)
    n_test = _n_from_size(test_size, n, "test_size")
    n_val = _n_from_size(val_size, n, "val_size")
    if n_test + n_val >= n:
        raise ValueError(f"val_size={val_size!r} and test_size={test_size!r} leave no "
                         f"training samples out of {n}")
    strat = _check_stratify(stratify, y)
    rng = np.random.default_rng(random_state)
    y_arr = np.asarray(y)
    rest, te = _split_indices(y_arr, n, n_test, strat, rng)
    tr_local, va_local = _split_indices(y_arr[rest], len(rest), n_val, strat, rng)
    tr, va = rest[tr_local], rest[va_local]
    return (_take(X, tr), _take(X, va), _take(X, te), y_arr[tr], y_arr[va], y_arr[te])
