"""Small bundled data sets and a seeded, stratified train/validation/test split.

NumPy only: nothing here needs scikit-learn.

- :func:`load_digits` -- UCI optical-recognition handwritten digits (8x8, 1,797 samples,
  10 classes), the file scikit-learn ships, bundled unchanged in ``data/`` with its
  citation and licence (CC BY 4.0) in ``data/README.txt``.
- :func:`train_test_split` / :func:`train_val_test_split` -- seeded shuffling splits,
  stratified by class for classification targets.
"""

import gzip
from importlib import resources

import numpy as np

from ._split import train_test_split, train_val_test_split

__all__ = ["Bunch", "load_digits", "train_test_split", "train_val_test_split"]

_DIGITS_DESCR = """\
Optical recognition of handwritten digits (UCI), test set "optdigits.tes".
1,797 samples, 64 features (8x8 image, integer pixel counts 0..16), 10 classes (0..9).

Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits.
UCI Machine Learning Repository. https://doi.org/10.24432/C50P49
Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
"""


class Bunch(dict):
    """A dict whose keys are also attributes (``b.data is b["data"]``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __dir__(self):
        return list(self.keys())


def _read_csv_gz(name):
    with resources.files(__name__).joinpath("data", name).open("rb") as raw:
        with gzip.GzipFile(fileobj=raw) as f:
            return np.loadtxt(f, delimiter=",", dtype=np.float64)


def load_digits(*, return_X_y=False):
    """Load the UCI handwritten digits: ``X`` float64 (1797, 64), ``y`` int64 (1797,).

    Parameters
    ----------
    return_X_y : bool, default False
        If True return ``(X, y)``; otherwise a :class:`Bunch` with ``data`` (X),
        ``target`` (y), ``images`` (1797, 8, 8), ``target_names`` (0..9),
        ``feature_names`` and ``DESCR`` (description and citation).

    Pixel values are the raw counts 0..16; scale them (e.g. ``X / 16``) before training.
    Each call returns fresh arrays.
    """
    table = _read_csv_gz("digits.csv.gz")
    X = np.ascontiguousarray(table[:, :-1])
    y = table[:, -1].astype(np.int64)
    if return_X_y:
        return X, y
    return Bunch(
        data=X,
        target=y,
        images=X.reshape(-1, 8, 8),
        target_names=np.arange(10),
        feature_names=[f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
        DESCR=_DIGITS_DESCR,
    )
