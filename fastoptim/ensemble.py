"""Majority-vote ensembles of fitted estimators (e.g. the K fold models of a search)."""

import numpy as np

__all__ = ["VotingEnsemble", "is_classifier"]


def is_classifier(estimator):
    """True for classifiers: ``_estimator_type == "classifier"`` or a predict_proba."""
    kind = getattr(estimator, "_estimator_type", None)
    if kind is None:
        try:
            kind = estimator.__sklearn_tags__().estimator_type
        except Exception:
            kind = None
    if kind is not None:
        return kind == "classifier"
    return hasattr(estimator, "predict_proba")


class VotingEnsemble:
    """Combine fitted models.

    Classifiers (members with ``classes_``): :meth:`predict` is a **majority vote**
    of the members' predictions; a tie between classes is broken by the members'
    **summed probabilities** (``predict_proba``), and a remaining exact tie by the
    first class in ``classes_``.  :meth:`predict_proba` is the mean of the members'
    probabilities (soft vote), so ``argmax(predict_proba)`` can differ from the hard
    vote.  :meth:`score` is accuracy.

    Regressors (no ``classes_``): :meth:`predict` is the mean prediction and
    :meth:`score` is R^2.

    The members are used as given; the ensemble is never fitted itself.
    """

    def __init__(self, models):
        if isinstance(models, (str, bytes, dict)) or not hasattr(models, "__iter__"):
            raise TypeError(f"models must be a list of fitted estimators, got "
                            f"{type(models).__name__}")
        self.models = list(models)
        if not self.models:
            raise ValueError("VotingEnsemble needs at least one model")
        for i, m in enumerate(self.models):
            if not callable(getattr(m, "predict", None)):
                raise TypeError(f"models[{i}] must be a fitted estimator with predict(), "
                                f"got {type(m).__name__}")
        self._is_classifier = all(hasattr(m, "classes_") for m in self.models)
        if self._is_classifier:
            self.classes_ = np.unique(np.concatenate(
                [np.asarray(m.classes_) for m in self.models]))
            self._estimator_type = "classifier"
        else:
            self._estimator_type = "regressor"

    def __len__(self):
        return len(self.models)

    def __repr__(self):
        return f"VotingEnsemble({len(self.models)} x {type(self.models[0]).__name__})"

    def _aligned_proba(self, model, X):
        """Member probabilities with columns re-ordered to ``self.classes_``."""
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        out = np.zeros((proba.shape[0], len(self.classes_)))
        cols = np.searchsorted(self.classes_, np.asarray(model.classes_))
        out[:, cols] = proba
        return out

    def votes(self, X):
        """Vote counts, shape (n_samples, n_classes), columns = ``classes_``."""
        counts = np.zeros((_n(X), len(self.classes_)), dtype=np.int64)
        rows = np.arange(counts.shape[0])
        for m in self.models:
            col = np.searchsorted(self.classes_, np.asarray(m.predict(X)))
            np.add.at(counts, (rows, col), 1)
        return counts

    def predict_proba(self, X):
        if not self._is_classifier:
            raise AttributeError("predict_proba is only available for classifiers")
        return sum(self._aligned_proba(m, X) for m in self.models) / len(self.models)

    def predict(self, X):
        if not self._is_classifier:
            return np.mean([np.asarray(m.predict(X), dtype=np.float64)
                            for m in self.models], axis=0)
        counts = self.votes(X)
        top = counts == counts.max(axis=1, keepdims=True)
        pred = np.argmax(counts, axis=1)
        tied = np.flatnonzero(top.sum(axis=1) > 1)
        if tied.size:
            summed = sum(self._aligned_proba(m, _rows(X, tied)) for m in self.models)
            summed = np.where(top[tied], summed, -np.inf)  # only the tied classes
            pred[tied] = np.argmax(summed, axis=1)
        return self.classes_[pred]

    def score(self, X, y):
        y = np.asarray(y)
        pred = self.predict(X)
        if self._is_classifier:
            return float(np.mean(pred == y))
        y = y.astype(np.float64)
        ss_tot = np.sum((y - y.mean()) ** 2)
        return float(1 - np.sum((y - pred) ** 2) / ss_tot) if ss_tot > 0 else 0.0


def _n(X):
    """Rows of X, which must be 2-D (samples, features) like every member's input."""
    shape = getattr(X, "shape", None)
    if shape is None:
        shape = np.shape(X)
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(shape)}")
    return int(shape[0])


def _rows(X, idx):
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    return np.asarray(X)[idx]
