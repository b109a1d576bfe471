"""K-fold splitters, KFoldSearch's selection rule, voting ensembles, parallel determinism."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastoptim.ensemble import VotingEnsemble, is_classifier
from fastoptim.model_selection import (KFold, KFoldSearch, ParameterGrid, StratifiedKFold,
                                       clone, log_loss, mean_squared_error)


# --------------------------------------------------------------------------- stand-ins
class _Params:
    _names = ()

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in self._names}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._names:
                raise ValueError(k)
            setattr(self, k, v)
        return self


class OracleClassifier(_Params):
    """Deterministic losses: column 0 of X is the true label, column 1 a 'hard' flag.

    Puts probability ``q`` on the true class, except on hard rows when ``flip`` is set:
    there ``q`` goes to the next class and the true class gets ``(1 - q) / (k - 1)``.
    """

    _estimator_type = "classifier"
    _names = ("q", "flip", "random_state")

    def __init__(self, q=0.9, flip=False, random_state=None):
        self.q = q
        self.flip = flip
        self.random_state = random_state

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.fit_rows_ = len(y)
        return self

    def predict_proba(self, X):
        k = len(self.classes_)
        label = np.searchsorted(self.classes_, X[:, 0].astype(int))
        target = label.copy()
        if self.flip:
            hard = X[:, 1] == 1
            target[hard] = (label[hard] + 1) % k
        P = np.full((len(X), k), (1 - self.q) / (k - 1))
        P[np.arange(len(X)), target] = self.q
        return P

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class EpochOracle(OracleClassifier):
    """OracleClassifier whose confidence grows with every ``partial_fit`` epoch."""

    _names = ("max_iter", "random_state")

    def __init__(self, max_iter=4, random_state=None):
        super().__init__(q=0.5, random_state=random_state)
        self.max_iter = max_iter

    def fit(self, X, y):
        raise AssertionError("val_curves must train through partial_fit")

    def partial_fit(self, X, y, classes=None):
        if not hasattr(self, "classes_"):
            self.classes_ = np.asarray(classes)
            self.q = 0.5
        self.q = 1 - (1 - self.q) / 2   # 0.75, 0.875, ...
        return self


class NoisyCentroid(_Params):
    """A seeded classifier: class centroids plus noise drawn from ``random_state``."""

    _estimator_type = "classifier"
    _names = ("noise", "scale", "random_state")

    def __init__(self, noise=0.5, scale=1.0, random_state=None):
        self.noise = noise
        self.scale = scale
        self.random_state = random_state

    def fit(self, X, y):
        rng = np.random.default_rng(self.random_state)
        self.classes_ = np.unique(y)
        self.centroids_ = np.array([X[y == c].mean(axis=0) for c in self.classes_])
        self.centroids_ += self.noise * rng.standard_normal(self.centroids_.shape)
        self.loss_curve_ = list(rng.random(3))
        return self

    def predict_proba(self, X):
        d = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(axis=2)
        z = -self.scale * d
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y):
        return float(np.mean(self.predict(X) == y))


class ThreadProbe(OracleClassifier):
    """Records the kernel thread count it sees while fitting."""

    def fit(self, X, y):
        import fastoptim
        self.kernel_threads_ = fastoptim.get_num_threads()
        return super().fit(X, y)


class MeanRegressor(_Params):
    _names = ("shift",)
    _estimator_type = "regressor"

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_ + self.shift)


class Fixed:
    """A 'fitted' model returning preset predictions and probabilities."""

    def __init__(self, classes, pred, proba):
        self.classes_ = np.asarray(classes)
        self._pred = np.asarray(pred)
        self._proba = np.asarray(proba, dtype=float)

    def predict(self, X):
        return self._pred

    def predict_proba(self, X):
        return self._proba


def _blobs(n=120, k=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.standard_normal((n, d)) + 1.5 * np.eye(k, d)[y]
    return X, y


# --------------------------------------------------------------------------- splitters
@given(n=st.integers(2, 60), k=st.integers(2, 7), seed=st.integers(0, 2**31 - 1),
       shuffle=st.booleans())
def test_kfold_validates_every_index_once(n, k, seed, shuffle):
    if n < k:
        with pytest.raises(ValueError):
            list(KFold(k, shuffle=shuffle, random_state=seed).split(np.zeros(n)))
        return
    cv = KFold(k, shuffle=shuffle, random_state=seed)
    seen = np.zeros(n, dtype=int)
    sizes = []
    for train, val in cv.split(np.zeros((n, 2))):
        assert np.intersect1d(train, val).size == 0
        assert np.union1d(train, val).tolist() == list(range(n))
        seen[val] += 1
        sizes.append(len(val))
    assert len(sizes) == cv.get_n_splits() == k
    assert np.all(seen == 1)
    assert max(sizes) - min(sizes) <= 1


def test_kfold_seeded_and_shuffled():
    X = np.zeros((50, 1))
    a = [v.tolist() for _, v in KFold(5, random_state=3).split(X)]
    b = [v.tolist() for _, v in KFold(5, random_state=3).split(X)]
    c = [v.tolist() for _, v in KFold(5, random_state=4).split(X)]
    plain = [v.tolist() for _, v in KFold(5, shuffle=False).split(X)]
    assert a == b
    assert a != c
    assert plain[0] == list(range(10))
    assert a != plain


@given(counts=st.lists(st.integers(5, 40), min_size=2, max_size=5),
       k=st.integers(2, 5), seed=st.integers(0, 1000))
def test_stratified_kfold_proportions(counts, k, seed):
    y = np.repeat(np.array(["a", "b", "c", "d", "e"][:len(counts)]), counts)
    y = np.random.default_rng(seed).permutation(y)
    n = len(y)
    seen = np.zeros(n, dtype=int)
    sizes = []
    for train, val in StratifiedKFold(k, random_state=seed).split(np.zeros(n), y):
        assert np.intersect1d(train, val).size == 0
        assert len(train) + len(val) == n
        seen[val] += 1
        sizes.append(len(val))
        for label, c in zip(np.unique(y), counts):
            in_val = np.sum(y[val] == label)
            # each class is split as evenly as possible across the folds
            assert math.floor(c / k) <= in_val <= math.ceil(c / k)
    assert np.all(seen == 1)
    assert max(sizes) - min(sizes) <= 1


def test_stratified_kfold_errors():
    with pytest.raises(ValueError, match="fewer than"):
        list(StratifiedKFold(5).split(np.zeros(12), [0] * 8 + [1] * 4))
    with pytest.raises(ValueError, match="needs y"):
        list(StratifiedKFold(2).split(np.zeros(4)))
    with pytest.raises(ValueError):
        KFold(1)


# --------------------------------------------------------------------------- helpers
def test_clone_and_grid():
    est = NoisyCentroid(noise=0.1, random_state=7)
    est.fit(*_blobs())
    c = clone(est, scale=2.0)
    assert type(c) is NoisyCentroid and c is not est
    assert c.get_params() == {"noise": 0.1, "scale": 2.0, "random_state": 7}
    assert not hasattr(c, "centroids_")
    grid = list(ParameterGrid({"a": [1, 2], "b": ["x", "y", "z"]}))
    assert len(grid) == 6 and grid[0] == {"a": 1, "b": "x"} and grid[-1] == {"a": 2, "b": "z"}


def test_log_loss_and_mse():
    P = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    y = np.array(["n", "y", "n"])
    expected = -(math.log(0.8) + math.log(0.7) + math.log(0.5)) / 3
    assert log_loss(y, P, ["n", "y"]) == pytest.approx(expected)
    # columns follow `classes`, whatever their order
    assert log_loss(y, P[:, ::-1], ["y", "n"]) == pytest.approx(expected)
    assert log_loss(["n"], [[0.0, 1.0]], ["n", "y"]) == pytest.approx(-math.log(1e-15))
    assert mean_squared_error([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3)


# --------------------------------------------------------------------------- selection
def _oracle_data(n=100):
    y = np.arange(n) % 2
    hard = np.zeros(n, dtype=int)
    hard[[3, 4, 7, 11, 18, 33, 40, 41, 42, 77]] = 1   # unevenly spread over the folds
    X = np.column_stack([y, hard]).astype(float)
    return X, y


def test_selection_picks_lowest_mean_validation_loss_by_hand():
    X, y = _oracle_data()
    cv = KFold(5, shuffle=False)
    sets = [{"q": 0.6, "flip": False},   # always right, unsure:    loss -ln 0.6
            {"q": 0.99, "flip": True},   # 10% confidently wrong:   lower loss, lower acc
            {"q": 0.55, "flip": False}]
    search = KFoldSearch(OracleClassifier(), sets, cv=cv, refit=False).fit(X, y)
    res = search.cv_results_

    # by hand, fold by fold
    hard = X[:, 1] == 1
    losses_b, accs_b = [], []
    for _, val in cv.split(X):
        h = hard[val].sum()
        m = len(val)
        losses_b.append((h * -math.log(0.01) + (m - h) * -math.log(0.99)) / m)
        accs_b.append((m - h) / m)
    assert np.allclose(res["split0_val_loss"], [-math.log(0.6), losses_b[0], -math.log(0.55)])
    assert res["mean_val_loss"][0] == pytest.approx(-math.log(0.6))
    assert res["std_val_loss"][0] == pytest.approx(0.0, abs=1e-12)
    assert res["mean_val_loss"][1] == pytest.approx(np.mean(losses_b))
    assert res["std_val_loss"][1] == pytest.approx(np.std(losses_b))
    assert res["mean_val_accuracy"][0] == 1.0
    assert res["mean_val_accuracy"][1] == pytest.approx(np.mean(accs_b))
    assert res["std_val_accuracy"][1] == pytest.approx(np.std(accs_b))
    assert np.mean(losses_b) < -math.log(0.6)  # the case is what it claims to be

    # lowest mean validation loss wins, although its accuracy is the worst
    assert search.best_index_ == 1
    assert search.best_params_ == {"q": 0.99, "flip": True}
    assert search.best_score_ == pytest.approx(np.mean(losses_b))
    assert res["rank_val_loss"].tolist() == [2, 1, 3]
    assert list(res["param_q"]) == [0.6, 0.99, 0.55]
    assert search.best_estimator_ is None


def test_selection_ties_go_to_the_first_set_and_nan_never_wins():
    X, y = _oracle_data()
    sets = [{"q": 0.7}, {"q": 0.9}, {"q": 0.9}]
    search = KFoldSearch(OracleClassifier(), sets, cv=4, refit=False, random_state=0)
    assert search.fit(X, y).best_index_ == 1


def test_refit_trains_best_set_on_all_data():
    X, y = _oracle_data()
    search = KFoldSearch(OracleClassifier(), {"q": [0.6, 0.8]}, cv=5, refit=True).fit(X, y)
    assert search.best_params_ == {"q": 0.8}
    assert search.best_estimator_.q == 0.8
    assert search.best_estimator_.fit_rows_ == 100
    assert search.predict(X).tolist() == y.tolist()
    assert search.ensemble_ is None


def test_refit_ensemble_keeps_fold_models():
    X, y = _blobs()
    search = KFoldSearch(NoisyCentroid(), {"noise": [0.0, 3.0]}, cv=4, refit="ensemble",
                         random_state=0).fit(X, y)
    ens = search.best_estimator_
    assert isinstance(ens, VotingEnsemble) and len(ens) == 4
    assert all(m.noise == search.best_params_["noise"] for m in ens.models)
    # each fold model was trained on its K-1 folds only
    assert len({m.centroids_.tobytes() for m in ens.models}) == 4
    assert 0 <= search.score(X, y) <= 1
    assert search.predict_proba(X).shape == (len(y), 3)


def test_val_curves_record_the_fold_loss_after_every_epoch():
    X, y = _oracle_data()
    search = KFoldSearch(EpochOracle(), [{"max_iter": 3}, {"max_iter": 5}], cv=5,
                         refit="ensemble", val_curves=True).fit(X, y)
    curves = search.cv_results_["val_loss_curves"]
    for i, n in enumerate((3, 5)):
        expected = [-math.log(1 - 0.5 ** (e + 1)) for e in range(1, n + 1)]
        assert len(curves[i]) == 5
        for c in curves[i]:
            assert np.allclose(c, expected)
        assert search.cv_results_["mean_val_loss"][i] == pytest.approx(expected[-1])
    assert search.best_params_ == {"max_iter": 5}
    # without val_curves an estimator without a history records none
    plain = KFoldSearch(OracleClassifier(), [{"q": 0.7}], cv=3, refit=False).fit(X, y)
    assert plain.cv_results_["val_loss_curves"] == [[None, None, None]]


def test_regressor_uses_mse():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    y = rng.standard_normal(40)
    search = KFoldSearch(MeanRegressor(), [{"shift": 1.0}, {"shift": 0.0}],
                         cv=KFold(4, shuffle=False), refit=True).fit(X, y)
    assert not is_classifier(MeanRegressor())
    assert search.best_index_ == 1
    train, val = next(KFold(4, shuffle=False).split(X))
    expected = np.mean((y[val] - y[train].mean() - 1.0) ** 2)
    assert search.cv_results_["split0_val_loss"][0] == pytest.approx(expected)


def test_bad_arguments():
    X, y = _oracle_data()
    with pytest.raises(ValueError, match="unknown parameter"):
        KFoldSearch(OracleClassifier(), [{"nope": 1}]).fit(X, y)
    with pytest.raises(ValueError, match="refit"):
        KFoldSearch(OracleClassifier(), [{"q": 0.6}], refit="yes").fit(X, y)


# --------------------------------------------------------------------------- ensembles
def test_majority_vote():
    classes = [0, 1, 2]
    p = [[0.4, 0.3, 0.3]] * 2
    models = [Fixed(classes, [0, 2], p), Fixed(classes, [0, 1], p), Fixed(classes, [1, 1], p)]
    ens = VotingEnsemble(models)
    assert ens.predict(np.zeros((2, 1))).tolist() == [0, 1]
    assert ens.votes(np.zeros((2, 1))).tolist() == [[2, 1, 0], [0, 2, 1]]


def test_vote_tie_broken_by_summed_probabilities():
    classes = ["a", "b", "c"]
    m1 = Fixed(classes, ["a", "a"], [[0.50, 0.10, 0.40], [0.6, 0.3, 0.1]])
    m2 = Fixed(classes, ["c", "b"], [[0.05, 0.55, 0.40], [0.2, 0.7, 0.1]])
    ens = VotingEnsemble([m1, m2])
    # sample 0: a vs c tied at one vote; summed a=0.55 < c=0.80, although b has the
    # largest summed probability (0.65 < 0.80 here, so check b is never a candidate below)
    # sample 1: a vs b tied; summed a=0.8 < b=1.0
    assert ens.predict(np.zeros((2, 1))).tolist() == ["c", "b"]
    # only the tied classes compete: b has the top summed probability but no votes
    m3 = Fixed(classes, ["a"], [[0.30, 0.69, 0.01]])
    m4 = Fixed(classes, ["c"], [[0.01, 0.69, 0.30]])
    m5 = Fixed(classes, ["a"], [[0.02, 0.68, 0.30]])
    m6 = Fixed(classes, ["c"], [[0.02, 0.58, 0.40]])
    ens = VotingEnsemble([m3, m4, m5, m6])
    assert ens.predict(np.zeros((1, 1))).tolist() == ["c"]   # a: 0.35, c: 1.01
    assert np.argmax(ens.predict_proba(np.zeros((1, 1)))) == 1  # soft vote says b


def test_ensemble_aligns_member_classes():
    m1 = Fixed([0, 1], [1], [[0.2, 0.8]])
    m2 = Fixed([1, 2], [2], [[0.05, 0.95]])
    ens = VotingEnsemble([m1, m2])
    assert ens.classes_.tolist() == [0, 1, 2]
    assert np.allclose(ens.predict_proba(np.zeros((1, 1))), [[0.1, 0.425, 0.475]])
    assert ens.predict(np.zeros((1, 1))).tolist() == [2]  # tie 1 vs 2: 0.95 > 0.85
    assert ens.score(np.zeros((1, 1)), [2]) == 1.0


def test_regression_ensemble_averages():
    a, b = MeanRegressor().fit(None, [1.0]), MeanRegressor().fit(None, [3.0])
    ens = VotingEnsemble([a, b])
    assert ens.predict(np.zeros((2, 1))).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError):
        VotingEnsemble([])


# --------------------------------------------------------------------------- parallel
def _run(n_jobs, seed=3, est=None, sets=None, X=None, y=None):
    if X is None:
        X, y = _blobs()
    search = KFoldSearch(est or NoisyCentroid(), sets or {"noise": [0.3, 1.0, 2.0]},
                         cv=3, n_jobs=n_jobs, refit="both", random_state=seed,
                         ignore_warnings=(UserWarning,))
    return search.fit(X, y)


def _summary(search, X):
    cv = search.cv_results_
    return (cv["mean_val_loss"].tolist(), cv["std_val_loss"].tolist(),
            cv["mean_val_score"].tolist(), search.best_index_,
            search.best_estimator_.predict_proba(X).tolist(),
            search.ensemble_.predict_proba(X).tolist())


def test_seeded_results_do_not_depend_on_n_jobs():
    X, _ = _blobs()
    one, two = _run(1), _run(2)
    assert _summary(one, X) == _summary(two, X)
    assert _summary(_run(1), X) == _summary(one, X)
    # the seed matters: every fit's random_state comes from it
    assert _summary(_run(1, seed=4), X) != _summary(one, X)
    # folds get distinct seeds, parameter sets share them
    seeds = [m.random_state for m in one.fold_models_]
    assert len(set(seeds)) == 3


def test_parallel_fits_limit_kernel_threads():
    import os

    import joblib

    import fastoptim
    X, y = _oracle_data()
    before = fastoptim.get_num_threads()
    serial = KFoldSearch(ThreadProbe(), [{"q": 0.6}], cv=2, n_jobs=1, refit="ensemble")
    assert [m.kernel_threads_ for m in serial.fit(X, y).fold_models_] == [before] * 2
    par = KFoldSearch(ThreadProbe(), [{"q": 0.6}], cv=2, n_jobs=2, refit="ensemble")
    expected = max(1, (os.cpu_count() or 1) // 2)
    assert [m.kernel_threads_ for m in par.fit(X, y).fold_models_] == [expected] * 2
    assert fastoptim.get_num_threads() == before
    # thread-based backends share one process: limits apply there too, and are undone
    with joblib.parallel_config(backend="threading"):
        fit = KFoldSearch(ThreadProbe(), [{"q": 0.6}, {"q": 0.7}], cv=4, n_jobs=2,
                          refit="ensemble").fit(X, y)
    assert [m.kernel_threads_ for m in fit.fold_models_] == [expected] * 4
    assert fastoptim.get_num_threads() == before


def test_progress_callback_sees_every_fit():
    seen = []
    X, y = _blobs()
    KFoldSearch(NoisyCentroid(), {"noise": [0.1, 0.2]}, cv=3, n_jobs=2, refit=False,
                random_state=0, callback=seen.append).fit(X, y)
    assert sorted((s["index"], s["fold"]) for s in seen) == [(i, k) for i in range(2)
                                                            for k in range(3)]
    assert sorted(s["done"] for s in seen) == list(range(1, 7))


def test_real_mlp_search_is_deterministic_across_n_jobs():
    nn = pytest.importorskip("fastoptim.nn")
    if not hasattr(nn, "MLPClassifier"):
        pytest.skip("fastoptim.nn.MLPClassifier not available")
    X, y = _blobs(n=150, d=6)
    est = nn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, batch_size=32)
    sets = [{"solver": "adam", "learning_rate_init": 1e-2},
            {"solver": "rmsprop", "learning_rate_init": 1e-2}]
    one = _run(1, est=est, sets=sets, X=X, y=y)
    two = _run(2, est=est, sets=sets, X=X, y=y)
    assert _summary(one, X) == _summary(two, X)
    assert one.best_estimator_.n_iter_ == 3
    curves = KFoldSearch(est, sets, cv=3, n_jobs=2, random_state=0, refit=False,
                         val_curves=True, ignore_warnings=(Warning,)).fit(X, y)
    for per_set in curves.cv_results_["val_loss_curves"]:
        assert [len(c) for c in per_set] == [3, 3, 3]
        assert all(np.all(np.isfinite(c)) for c in per_set)


def test_dask_backend_gives_the_same_results():
    distributed = pytest.importorskip("dask.distributed")
    import joblib

    X, _ = _blobs()
    local = _run(1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            remote = _run(None)
    assert _summary(remote, X) == _summary(local, X)
