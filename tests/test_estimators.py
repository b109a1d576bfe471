"""MLPClassifier / MLPRegressor: scikit-learn's estimator protocol, errors, real digits."""

import pickle
import warnings

import numpy as np
import pytest

from fastoptim.datasets import load_digits, train_test_split
from fastoptim.nn import MLP, ConvergenceWarning, MLPClassifier, MLPRegressor
from fastoptim.nn._estimators import NotFittedError
from fastoptim.optim import Adam


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.2, random_state=0)


def _blobs(n=200, k=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    return centers[y] + rng.normal(size=(n, d)), y


def _quiet_fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


# ---- the accuracy target: >= 97% held-out on digits ----------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_test_accuracy_estimator(digits, seed):
    Xtr, Xte, ytr, yte = digits
    clf = MLPClassifier(hidden_layer_sizes=(128, 64), batch_size=64, max_iter=60,
                        random_state=seed)
    _quiet_fit(clf, Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.97


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_test_accuracy_network(digits, seed):
    """64-128-64-10, Adam, batch 64, early stopping on a validation split."""
    Xtr, Xte, ytr, yte = digits
    net = MLP([64, 128, 64, 10], activation="relu", output="softmax", dtype=np.float32,
              alpha=1e-4, seed=seed)
    opt = Adam([net.params_flat], lr=1e-3)
    hist = net.fit(Xtr, ytr, optimizer=opt, epochs=80, batch_size=64, seed=seed,
                   validation_fraction=0.1, early_stopping=True, patience=10)
    assert hist.val_accuracy[hist.best_epoch] > 0.9
    acc = np.mean(net.forward(Xte).argmax(axis=1) == yte)
    assert acc >= 0.97


# ---- estimator protocol without scikit-learn ------------------------------------------------

def test_constructor_stores_params_unchanged():
    hls = [50, 20]
    clf = MLPClassifier(hidden_layer_sizes=hls, alpha=3, batch_size=17, dtype="float64")
    assert clf.hidden_layer_sizes is hls and clf.alpha == 3 and clf.dtype == "float64"
    params = clf.get_params()
    for name in ("hidden_layer_sizes", "activation", "solver", "alpha", "batch_size",
                 "learning_rate_init", "max_iter", "shuffle", "random_state",
                 "early_stopping", "validation_fraction", "n_iter_no_change", "tol",
                 "beta_1", "beta_2", "epsilon", "momentum", "nesterovs_momentum",
                 "verbose", "warm_start", "dtype"):
        assert name in params
    assert MLPRegressor().get_params()["loss"] == "squared_error"


def test_defaults_match_sklearn():
    nn = pytest.importorskip("sklearn.neural_network")
    for ours, theirs in ((MLPClassifier(), nn.MLPClassifier()),
                         (MLPRegressor(), nn.MLPRegressor())):
        sk = theirs.get_params()
        for name, value in ours.get_params().items():
            if name in sk:
                assert sk[name] == value, name


def test_set_params_and_clone_without_sklearn():
    clf = MLPClassifier()
    assert clf.set_params(alpha=0.1, max_iter=3) is clf
    assert clf.alpha == 0.1 and clf.max_iter == 3
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        clf.set_params(nope=1)
    twin = type(clf)(**clf.get_params())
    assert twin.get_params() == clf.get_params()
    assert "alpha=0.1" in repr(clf) and "max_iter=3" in repr(clf)
    assert repr(MLPClassifier()) == "MLPClassifier()"


def test_fitted_attributes():
    X, y = _blobs()
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=(7, 5), max_iter=5, random_state=0), X, y)
    assert clf.n_features_in_ == 4 and clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert [W.shape for W in clf.coefs_] == [(4, 7), (7, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(7,), (5,), (3,)]
    assert np.shares_memory(clf.coefs_[0], clf.net_.params_flat)
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 3 and clf.out_activation_ == "softmax"
    assert clf.validation_scores_ is None
    assert clf.t_ == 5 * 200
    assert not any(k.endswith("_") and not k.endswith("__") for k in vars(MLPClassifier()))


@pytest.mark.parametrize("labels", [np.array([3, 7, 11]), np.array(["cat", "dog", "emu"]),
                                    np.array([-1.0, 0.0, 2.0])])
def test_any_labels(labels):
    X, y = _blobs()
    yl = labels[y]
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.01,
                        random_state=0)
    _quiet_fit(clf, X, yl)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype and set(pred) <= set(labels)
    assert clf.score(X, yl) > 0.95
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], pred)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-5)


def test_binary_classification():
    X, y = _blobs(k=2)
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, batch_size=20,
                                   learning_rate_init=0.01, random_state=0), X, y == 1)
    assert clf.classes_.tolist() == [False, True] and clf.predict_proba(X).shape == (200, 2)
    assert clf.score(X, y == 1) > 0.95


@pytest.mark.parametrize("solver, extra", [
    ("adam", dict(learning_rate_init=0.01)),
    ("sgd", dict(learning_rate_init=0.05)),
    ("sgd", dict(learning_rate_init=0.05, nesterovs_momentum=False)),
    ("sgd", dict(learning_rate_init=0.2, learning_rate="invscaling", power_t=0.25)),
    ("sgd", dict(learning_rate_init=0.05, learning_rate="adaptive")),
    ("rmsprop", dict(learning_rate_init=0.005)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_solvers(solver, extra, dtype):
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver=solver, max_iter=30, random_state=0,
                        batch_size=32, dtype=dtype, **extra)
    _quiet_fit(clf, X, y)
    assert clf.net_.params_flat.dtype == dtype
    assert clf.score(X, y) > 0.95


def test_adaptive_lr_divides_by_five():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", learning_rate="adaptive",
                        learning_rate_init=0.05, n_iter_no_change=2, tol=10.0, max_iter=40,
                        random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ < 40          # stops once the lr would drop below 1e-6
    divisions = np.log(0.05 / clf._optimizer.param_groups[0]["lr"]) / np.log(5.0)
    assert divisions == pytest.approx(round(divisions)) and round(divisions) >= 1
    assert clf._optimizer.param_groups[0]["lr"] <= 1e-6


def test_regressor():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 3))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    reg = MLPRegressor(hidden_layer_sizes=(32, 32), max_iter=150, learning_rate_init=0.01,
                       random_state=0)
    _quiet_fit(reg, X, y)
    assert reg.predict(X).shape == (400,) and reg.predict(X).dtype == np.float64
    assert reg.score(X, y) > 0.9
    assert reg.out_activation_ == "identity"
    Y2 = np.column_stack([y, -y])
    reg2 = _quiet_fit(MLPRegressor(hidden_layer_sizes=(32,), max_iter=100,
                                   learning_rate_init=0.01, random_state=0), X, Y2)
    assert reg2.predict(X).shape == (400, 2) and reg2.score(X, Y2) > 0.8


def test_regressor_loss_is_sklearns_half_mse():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 2)), rng.normal(size=50)
    reg = _quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=1, batch_size=50,
                                  alpha=0.0, shuffle=False, random_state=0,
                                  dtype=np.float64), X, y)
    # one full-batch epoch: the recorded loss is that of the initial weights
    from fastoptim.nn._estimators import _sklearn_init
    init = MLP([2, 4, 1], output="identity", dtype=np.float64)
    _sklearn_init(init, "relu", np.random.RandomState(0))
    pred0 = init.forward(X).ravel()
    assert reg.loss_curve_[0] == pytest.approx(0.5 * np.mean((y - pred0) ** 2), rel=1e-12)


def test_early_stopping():
    X, y = _blobs(n=400)
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, validation_fraction=0.2,
                        n_iter_no_change=3, max_iter=300, learning_rate_init=0.05,
                        random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ < 300
    assert len(clf.validation_scores_) == len(clf.val_loss_curve_) == clf.n_iter_
    # stopped n_iter_no_change + 1 epochs after the first best validation score
    best = int(np.argmax(clf.validation_scores_))
    assert clf.best_validation_score_ == clf.validation_scores_[best]
    assert clf.best_loss_ is None
    assert clf.n_iter_ == best + 1 + 4
    assert clf.t_ == clf.n_iter_ * 320


def test_converges_by_tol_and_warns_at_max_iter():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, tol=1.0, n_iter_no_change=2,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.n_iter_ == 4          # first epoch + more than n_iter_no_change without gain
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)


def test_seeded_and_warm_start():
    X, y = _blobs()
    a = _quiet_fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=5), X, y)
    b = _quiet_fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=5), X, y)
    np.testing.assert_array_equal(a.net_.params_flat, b.net_.params_flat)
    w = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, warm_start=True, random_state=0)
    _quiet_fit(w, X, y)
    first = w.loss_curve_[:]
    _quiet_fit(w, X, y)
    assert w.n_iter_ == 2 and len(w.loss_curve_) == 4 and w.loss_curve_[:2] == first


def test_partial_fit():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, batch_size=20,
                        random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for _ in range(10):
        clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
        clf.partial_fit(X[100:], y[100:])
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 20 and clf.score(X, y) > 0.95
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X[:5], np.array([0, 1, 2, 3, 0]))
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    reg.partial_fit(X, y.astype(float))
    assert reg.n_iter_ == 1


def test_pickle_roundtrip():
    X, y = _blobs()
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0), X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert np.shares_memory(back.coefs_[0], back.net_.params_flat)


# ---- bad input: clear ValueError before any training ---------------------------------------

def _assert_untrained(est):
    assert not hasattr(est, "net_") and not hasattr(est, "n_iter_")


@pytest.mark.parametrize("make, msg", [
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y), "NaN"),
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X), y),
     "infinity"),
    (lambda X, y: (X[:0], y[:0]), "0 sample"),
    (lambda X, y: (X[:, :0], y), "0 feature"),
    (lambda X, y: (X, y[:-1]), "inconsistent numbers of samples"),
    (lambda X, y: (X[:, 0], y), "Expected 2D array"),
    (lambda X, y: (X, y + 0.5), "Unknown label type"),
    (lambda X, y: (X, None), "requires y"),
])
def test_classifier_bad_fit_input(make, msg):
    X, y = _blobs(n=20)
    Xb, yb = make(X, y)
    clf = MLPClassifier(max_iter=2)
    with pytest.raises(ValueError, match=msg):
        clf.fit(Xb, yb)
    _assert_untrained(clf)


@pytest.mark.parametrize("make, msg", [
    (lambda X, y: (X, np.where(np.arange(y.size) == 3, np.nan, y)), "NaN"),
    (lambda X, y: (X[:0], y[:0]), "0 sample"),
    (lambda X, y: (X, y[:5]), "inconsistent numbers of samples"),
])
def test_regressor_bad_fit_input(make, msg):
    X, y = _blobs(n=20)
    Xb, yb = make(X, y.astype(float))
    reg = MLPRegressor(max_iter=2)
    with pytest.raises(ValueError, match=msg):
        reg.fit(Xb, yb)
    _assert_untrained(reg)


@pytest.mark.parametrize("params, msg", [
    (dict(solver="nope"), "solver"),
    (dict(activation="swish"), "activation"), (dict(hidden_layer_sizes=(0,)), "hidden"),
    (dict(alpha=-1.0), "alpha"), (dict(batch_size=0), "batch_size"),
    (dict(learning_rate_init=0.0), "learning_rate_init"), (dict(max_iter=0), "max_iter"),
    (dict(validation_fraction=1.0), "validation_fraction"), (dict(beta_1=1.0), "beta_1"),
    (dict(epsilon=0.0), "epsilon"), (dict(dtype=np.int64), "dtype"),
    (dict(learning_rate="sometimes"), "learning_rate"), (dict(random_state="x"), "random_state"),
])
def test_bad_hyperparameters(params, msg):
    X, y = _blobs(n=20)
    clf = MLPClassifier(**params)
    with pytest.raises(ValueError, match=msg):
        clf.fit(X, y)
    _assert_untrained(clf)


def test_predict_and_score_errors():
    X, y = _blobs(n=40)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    _quiet_fit(clf, X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(X[:, :3])
    y9 = np.where(np.arange(40) == 0, 9, y)           # an unseen label counts as wrong
    assert clf.score(X, y9) == np.mean(clf.predict(X) == y9)
    with pytest.raises(ValueError, match="NaN"):
        clf.predict_proba(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="inconsistent"):
        clf.score(X, y[:-1])
    with pytest.raises(ValueError, match="Expected a 2D array-like"):
        clf.predict(object())


def test_verbose_prints_epochs(capsys):
    X, y = _blobs(n=40)
    _quiet_fit(MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True), X, y)
    out = capsys.readouterr()
    assert "Iteration 1, loss = " in out.out and "Iteration 2" in out.out
    assert out.err == ""                    # no progress bar when stderr is not a terminal


# ---- with scikit-learn ---------------------------------------------------------------------

def test_sklearn_clone_and_cross_val_score(digits):
    base = pytest.importorskip("sklearn.base")
    ms = pytest.importorskip("sklearn.model_selection")
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, learning_rate_init=0.01,
                        random_state=0)
    c = base.clone(clf)
    assert c.get_params() == clf.get_params() and not hasattr(c, "net_")
    assert base.is_classifier(clf) and base.is_regressor(MLPRegressor())
    Xtr, _, ytr, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = ms.cross_val_score(clf, Xtr, ytr, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9


def test_sklearn_grid_search_and_pipeline():
    pytest.importorskip("sklearn")
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = _blobs(n=120)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=10,
                                                         random_state=0))
    gs = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gs.fit(X, y)
    assert gs.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-2)


def _sklearn_checks():
    try:
        from sklearn.utils.estimator_checks import parametrize_with_checks
    except ImportError:
        return pytest.mark.parametrize("estimator, check", [pytest.param(
            None, None, marks=pytest.mark.skip(reason="scikit-learn not installed"))])
    with warnings.catch_warnings():     # "does not inherit from BaseEstimator": on purpose
        warnings.simplefilter("ignore", UserWarning)
        return parametrize_with_checks(
        [MLPClassifier(random_state=0),               # dtype follows X, as scikit-learn
         MLPRegressor(random_state=0),
         MLPClassifier(dtype=np.float32, random_state=0),
         MLPRegressor(dtype=np.float32, random_state=0),
         MLPClassifier(solver="lbfgs", random_state=0),
         MLPRegressor(solver="lbfgs", random_state=0)],
        # float32: weights and repeated rows agree to float32 rounding (~1e-7 relative),
        # the check asks for rtol=1e-7
        # lbfgs fits this check's data so closely that a logit passes 36.7 and its
        # probability rounds to 1.0; scikit-learn's own lbfgs MLP fails it the same way
        expected_failed_checks=lambda est: (
            {"check_sample_weight_equivalence_on_dense_data": "float32 rounding",
             "check_sample_weight_equivalence_on_sparse_data": "float32 rounding"}
            if est.dtype is not None else
            {"check_classifiers_multilabel_output_format_predict_proba": "p rounds to 1.0"}
            if est.solver == "lbfgs" else {}),
    )


@_sklearn_checks()
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_validation_data(digits):
    Xtr, Xte, ytr, yte = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, batch_size=64, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr, ytr, validation_data=(Xte, yte))
    assert len(clf.val_loss_curve_) == len(clf.validation_scores_) == 5
    assert clf.validation_scores_[-1] == pytest.approx(clf.score(Xte, yte))
    assert clf.t_ == 5 * len(Xtr)                     # nothing split off
    es = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, batch_size=64, random_state=0,
                       early_stopping=True, n_iter_no_change=2)
    es.fit(Xtr, ytr, validation_data=(Xte, yte))
    assert es.n_iter_ < 200 and es.t_ == es.n_iter_ * len(Xtr)
    with pytest.raises(ValueError, match="classes not in"):
        MLPClassifier(max_iter=1).fit(Xtr, ytr, validation_data=(Xte[:3], [0, 1, 99]))
    with pytest.raises(ValueError, match="X_val has 3 features"):
        MLPClassifier(max_iter=1).fit(Xtr, ytr, validation_data=(Xte[:, :3], yte))


def test_works_without_sklearn(tmp_path):
    """scikit-learn blocked: training, prediction and errors still work."""
    import subprocess
    import sys
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import numpy as np\n"
        "from fastoptim.nn import MLPClassifier\n"
        "from fastoptim.datasets import load_digits\n"
        "X, y = load_digits(return_X_y=True)\n"
        "clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20,\n"
        "                    learning_rate_init=0.01, random_state=0)\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "clf.fit(X / 16, y); assert clf.score(X / 16, y) > 0.5\n"
        "try:\n    MLPClassifier().predict(X)\nexcept ValueError as e:\n    print('ok', e)\n"
    )
    from conftest import subprocess_env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok This MLPClassifier instance is not fitted yet" in out.stdout


def test_float32_regressor_refuses_targets_beyond_float32_range():
    X = np.random.default_rng(0).random((20, 3)).astype(np.float32)
    est = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2)
    with pytest.raises(ValueError, match="beyond float32's range"):
        est.fit(X, np.full(20, 1e39))
    assert not hasattr(est, "coefs_")
