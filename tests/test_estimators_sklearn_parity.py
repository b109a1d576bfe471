"""MLPClassifier / MLPRegressor against scikit-learn's: the same scenario on both, the same
behaviour (attributes, exceptions, n_iter_, curve lengths; accuracy bands where the numbers
differ by design of the optimizer)."""

import copy
import io
import pickle
import warnings

import numpy as np
import pytest

from fastoptim.nn import MLPClassifier, MLPRegressor

sk_nn = pytest.importorskip("sklearn.neural_network")


def _blobs(n=120, k=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    return centers[y] + rng.normal(size=(n, d)), y


def _pair(cls_name, **kw):
    """(ours, scikit-learn's) built with the same parameters."""
    ours = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[cls_name]
    return ours(**kw), getattr(sk_nn, cls_name)(**kw)


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


# ---- item: copies of a fitted estimator keep training ----------------------------------

def _joblib_copy(est):
    joblib = pytest.importorskip("joblib")
    buf = io.BytesIO()
    joblib.dump(est, buf)
    buf.seek(0)
    return joblib.load(buf)


@pytest.mark.parametrize("copier", [lambda e: pickle.loads(pickle.dumps(e)), copy.deepcopy,
                                    _joblib_copy], ids=["pickle", "deepcopy", "joblib"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_copy_then_partial_fit_continues_like_the_original(copier, solver):
    X, y = _blobs()
    for est in _pair("MLPClassifier", hidden_layer_sizes=(8,), solver=solver, max_iter=3,
                     random_state=0):
        _quiet(est.fit, X, y)
        twin = copier(est)
        twin.partial_fit(X, y)
        assert np.isfinite(twin.loss_)
    ours = _pair("MLPClassifier", hidden_layer_sizes=(8,), solver=solver, max_iter=3,
                 random_state=0)[0]
    _quiet(ours.fit, X, y)
    twin = copier(ours)
    ours.partial_fit(X, y)
    twin.partial_fit(X, y)       # same weights, same optimizer state, same data order
    np.testing.assert_array_equal(twin.net_.params_flat, ours.net_.params_flat)
    assert np.shares_memory(twin.coefs_[0], twin.net_.params_flat)


def test_assigned_coefs_are_used_and_trained():
    X, y = _blobs()
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
        est.coefs_[0] = np.zeros_like(est.coefs_[0])
        est.intercepts_[0] = np.zeros_like(est.intercepts_[0])
        # a zero first layer: every row gets the same prediction
        proba = est.predict_proba(X)
        np.testing.assert_allclose(proba, proba[:1].repeat(len(X), 0), rtol=1e-6)
        est.partial_fit(X, y)
        assert np.abs(est.coefs_[0]).max() > 0       # the assigned array was trained
        assert not np.allclose(est.predict_proba(X), proba)
    with pytest.raises(ValueError, match=r"coefs_\[1\]"):
        ours.coefs_[1] = np.zeros((2, 2))
        ours.predict(X)


def test_score_counts_unseen_labels_as_wrong():
    X, y = _blobs()
    y_other = np.where(y == 0, 7, y)                 # label 7 never seen at fit
    for est in _pair("MLPClassifier", hidden_layer_sizes=(8,), max_iter=50,
                     learning_rate_init=0.01, random_state=0):
        _quiet(est.fit, X, y)
        expected = np.mean(est.predict(X) == y_other)
        assert est.score(X, y_other) == pytest.approx(expected)
        assert est.score(X, y_other) <= 1 - np.mean(y == 0) + 1e-12


def test_cross_val_score_with_a_fold_missing_a_class():
    ms = pytest.importorskip("sklearn.model_selection")
    X, y = _blobs(n=60)
    y = y.copy()
    y[:3] = 5                                        # a class only in the first fold
    scores = {}
    for est in _pair("MLPClassifier", hidden_layer_sizes=(8,), max_iter=30,
                     learning_rate_init=0.01, random_state=0):
        scores[type(est).__module__] = _quiet(ms.cross_val_score, est, X, y,
                                              cv=ms.KFold(3))
    for s in scores.values():
        assert np.isfinite(s).all() and s.shape == (3,)
