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


# --------------------------------------------------------------------------- hostile use
class Diverging(OracleClassifier):
    """Raises FloatingPointError in fit when ``q`` is above 1 (a learning rate that
    diverges), or when the training set holds ``fail_rows`` rows or more."""

    _names = ("q", "fail_rows")

    def __init__(self, q=0.9, fail_rows=10**9):
        super().__init__(q=q)
        self.fail_rows = fail_rows

    def fit(self, X, y):
        if self.q > 1 or len(y) >= self.fail_rows:
            raise FloatingPointError("the training loss became nan at epoch 3")
        return super().fit(X, y)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_diverging_set_is_recorded_as_failed_and_the_search_goes_on(n_jobs):
    from fastoptim.model_selection import FitFailedWarning

    X, y = _oracle_data()
    seen = []
    search = KFoldSearch(Diverging(), [{"q": 0.7}, {"q": 5.0}, {"q": 0.9}], cv=4,
                         n_jobs=n_jobs, refit="both", callback=seen.append)
    with pytest.warns(FitFailedWarning, match=r"4 of 12 fits failed .* the first: set 1 "
                                              r"\{'q': 5.0\} fold \d: FloatingPointError"):
        search.fit(X, y)
    cv = search.cv_results_
    assert cv["mean_val_loss"][1] == np.inf and np.isfinite(cv["mean_val_loss"][[0, 2]]).all()
    assert np.isnan(cv["mean_val_score"][1])  # error_score=nan, as scikit-learn
    assert cv["rank_val_loss"].tolist() == [2, 3, 1]
    assert all(e.startswith("FloatingPointError: the training loss became nan")
               for e in cv["fit_errors"][1])
    assert cv["fit_errors"][0] == cv["fit_errors"][2] == [None] * 4
    assert search.best_params_ == {"q": 0.9}
    assert search.predict(X).tolist() == y.tolist()
    assert sum(s["error"] is not None for s in seen) == 4


def test_a_set_failing_on_one_fold_is_never_chosen():
    X, y = _oracle_data()  # 100 rows; 5 folds train on 80 rows each
    sets = [{"q": 0.99, "fail_rows": 80}, {"q": 0.6}]
    with pytest.warns(RuntimeWarning, match="5 of 10 fits failed"):
        search = KFoldSearch(Diverging(), sets, cv=5, refit=False).fit(X, y)
    assert search.best_index_ == 1


def test_every_set_failing_is_an_error_and_keeps_the_previous_fit():
    X, y = _oracle_data()
    search = KFoldSearch(Diverging(), [{"q": 0.8}], cv=4, refit=True).fit(X, y)
    before = dict(search.__dict__)
    search.set_params(param_sets=[{"q": 2.0}, {"q": 3.0}])
    with pytest.raises(ValueError, match=r"every parameter set failed on at least one fold "
                                         r"\(8 of 8 fits raised\); the first: set 0"):
        search.fit(X, y)
    search.set_params(param_sets=[{"q": 3.0}], error_score="raise")
    with pytest.raises(FloatingPointError):
        search.fit(X, y)
    # the refit on all 100 rows fails after the folds (80 rows) ran
    search.set_params(param_sets=[{"q": 0.7, "fail_rows": 100}], error_score=np.nan)
    with pytest.raises(FloatingPointError):
        search.fit(X, y)
    after = dict(search.__dict__)
    for k in ("cv_results_", "best_estimator_", "best_index_", "best_params_"):
        assert after[k] is before[k]
    assert search.predict(X).tolist() == y.tolist()


def test_predict_before_fit_is_not_fitted_error():
    from fastoptim.nn import NotFittedError

    X, y = _oracle_data()
    search = KFoldSearch(OracleClassifier(), [{"q": 0.6}], cv=3)
    for method in ("predict", "predict_proba"):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(search, method)(X)
    with pytest.raises(NotFittedError):
        search.score(X, y)
    assert issubclass(NotFittedError, (ValueError, AttributeError))
    search.set_params(refit=False).fit(X, y)
    with pytest.raises(AttributeError, match="refit=False") as info:
        search.predict(X)
    assert not isinstance(info.value, NotFittedError)


def test_not_fitted_error_is_also_scikit_learns():
    exceptions = pytest.importorskip("sklearn.exceptions")
    with pytest.raises(exceptions.NotFittedError):
        KFoldSearch(OracleClassifier(), [{"q": 0.6}]).predict(np.zeros((2, 2)))


class _Recorder:
    def __init__(self):
        self.n_jobs = []

    def install(self, monkeypatch):
        import joblib
        real = joblib.Parallel

        def parallel(*args, **kwargs):
            self.n_jobs.append(kwargs.get("n_jobs"))
            return real(*args, **kwargs)

        monkeypatch.setattr(joblib, "Parallel", parallel)
        return self


@pytest.mark.parametrize("n_jobs", [1000, 2**70])
def test_n_jobs_is_capped_at_the_usable_cores(monkeypatch, n_jobs):
    import joblib

    cores = joblib.cpu_count()
    rec = _Recorder().install(monkeypatch)
    X, y = _blobs()
    with pytest.warns(UserWarning, match=rf"n_jobs={n_jobs} is more than the {cores} usable "
                                         rf"CPU core\(s\); using {cores} workers"):
        big = _run(n_jobs)
    assert rec.n_jobs == [cores]
    assert _summary(big, X) == _summary(_run(1), X)


def test_n_jobs_within_the_cores_is_not_capped(monkeypatch, recwarn):
    rec = _Recorder().install(monkeypatch)
    X, y = _oracle_data()
    for n_jobs in (None, 1, -1, -1000):
        KFoldSearch(OracleClassifier(), [{"q": 0.6}], cv=2, n_jobs=n_jobs,
                    refit=False).fit(X, y)
    assert rec.n_jobs == [None, 1, -1, -1000]
    assert not [w for w in recwarn if "usable CPU" in str(w.message)]


BAD_SEARCH_ARGS = [
    (dict(cv=1), ValueError, "cv must be an int >= 2"),
    (dict(cv=2.5), TypeError, "cv must be an int >= 2 or a splitter"),
    (dict(cv=True), TypeError, "cv must be an int >= 2 or a splitter"),
    (dict(n_jobs=0), ValueError, "n_jobs must not be 0"),
    (dict(n_jobs=1.5), TypeError, "n_jobs must be None or an int"),
    (dict(n_jobs="2"), TypeError, "n_jobs must be None or an int"),
    (dict(random_state=-1), ValueError, "random_state must be >= 0"),
    (dict(random_state=1.5), TypeError, "random_state must be None or an int"),
    (dict(random_state=np.random.default_rng(0)), TypeError, "random_state must be None"),
    (dict(pre_dispatch="__import__('os')"), ValueError, "pre_dispatch must be"),
    (dict(pre_dispatch=0), ValueError, "pre_dispatch must be"),
    (dict(callback=5), TypeError, "callback must be None or callable"),
    (dict(val_curves="yes"), TypeError, "val_curves must be True or False"),
    (dict(ignore_warnings=UserWarning), TypeError, "ignore_warnings must be a tuple"),
    (dict(error_score="ignore"), TypeError, "error_score must be 'raise' or a number"),
    (dict(verbose="loud"), TypeError, "verbose must be an int"),
    (dict(refit="yes"), ValueError, "refit must be"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_SEARCH_ARGS,
                         ids=[str(k) for k, _, _ in BAD_SEARCH_ARGS])
def test_bad_search_arguments_are_refused_before_any_fit(kwargs, exc, match):
    X, y = _oracle_data()
    calls = []
    search = KFoldSearch(OracleClassifier(), [{"q": 0.6}], cv=2,
                         callback=calls.append).set_params(**kwargs)
    with pytest.raises(exc, match=match):
        search.fit(X, y)
    assert calls == [] and not hasattr(search, "cv_results_")


@pytest.mark.parametrize("cls, kwargs, exc, match", [
    (KFold, dict(n_splits=True), TypeError, "n_splits must be an integer"),
    (KFold, dict(n_splits=3.0), TypeError, "n_splits must be an integer"),
    (KFold, dict(n_splits=-(2**70)), ValueError, "n_splits must be an integer >= 2"),
    (StratifiedKFold, dict(shuffle="no"), TypeError, "shuffle must be True or False"),
    (StratifiedKFold, dict(random_state=-5), ValueError, "random_state must be >= 0"),
    (KFold, dict(random_state="seed"), TypeError, "random_state must be None, a Generator"),
])
def test_bad_splitter_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


def test_splitters_refuse_bad_data():
    with pytest.raises(ValueError, match=r"cannot split 10 samples into 1180591620717411303424"):
        list(KFold(2**70).split(np.zeros(10)))
    with pytest.raises(TypeError, match="X must be array-like"):
        list(KFold(2).split(5))
    with pytest.raises(ValueError, match="at least one dimension"):
        list(KFold(2).split(np.float64(3.0)))
    with pytest.raises(ValueError, match="y has a 0-d array"):
        list(StratifiedKFold(2).split(np.zeros(4), 3))
    with pytest.raises(ValueError, match="y has a 0-d array"):
        KFoldSearch(OracleClassifier(), [{"q": 0.6}]).fit(np.zeros((4, 2)), 1)


@pytest.mark.parametrize("val_curves", [False, True])
def test_recorded_epochs_are_the_epochs_trained_on_both_paths(val_curves):
    # with val_curves each epoch is one partial_fit, whose n_iter_ is 1 (scikit-learn)
    from fastoptim import MLPClassifier
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 4)), np.arange(60) % 3
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=4, n_iter_no_change=10, tol=0.0,
                        random_state=0)
    search = KFoldSearch(est, [{"alpha": 1e-4}], cv=3, refit=False, n_jobs=1,
                         val_curves=val_curves, ignore_warnings=(Warning,)).fit(X, y)
    assert search.cv_results_["n_iter"] == [[4, 4, 4]]


@pytest.mark.parametrize("call, exc", [
    (lambda ms: ms.clone(object()), TypeError),
    (lambda ms: ms.clone(ms.KFold), TypeError),
    (lambda ms: ms.log_loss([0, 1], [[0.5, 0.5]], [0, 1]), ValueError),
    (lambda ms: ms.log_loss([0, 1], [[0.5, 0.5], [0.5, 0.5]], []), ValueError),
    (lambda ms: ms.mean_squared_error([1.0, 2.0], [10 ** 400, 1.0]), ValueError),
    (lambda ms: ms.r2_score([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError),
    (lambda ms: ms.VotingEnsemble("models"), TypeError),
    (lambda ms: ms.VotingEnsemble([None]), TypeError),
    (lambda ms: ms.KFoldSearch(None, [{}], cv=2).fit(np.zeros((4, 2)), np.arange(4)),
     TypeError),
])
def test_bad_arguments_are_named_errors(call, exc):
    from fastoptim import model_selection as ms
    with pytest.raises(exc):
        call(ms)


def test_ensemble_refuses_input_that_is_not_2d():
    from fastoptim import MLPClassifier, VotingEnsemble
    X, y = np.random.default_rng(0).standard_normal((30, 3)), np.arange(30) % 3
    ens = VotingEnsemble([MLPClassifier(hidden_layer_sizes=(3,), max_iter=2,
                                        random_state=s).fit(X, y) for s in (0, 1)])
    with pytest.raises(ValueError, match="2-D"):
        ens.votes(np.float32(1.0))
