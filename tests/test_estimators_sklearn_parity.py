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


# ---- failed calls change nothing; bad parameters and inputs refused at fit ---------------

def _snapshot(est):
    return {k: (v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v))
            for k, v in vars(est).items() if (k.endswith("_") or k.startswith("_"))
            and k not in ("net_", "_optimizer", "_rng", "coefs_", "intercepts_")}


def _assert_same_state(est, before, params_before):
    after = _snapshot(est)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_equal(after[k], before[k], err_msg=k)
    np.testing.assert_array_equal(est.net_.params_flat, params_before)


@pytest.mark.parametrize("call", ["fit", "warm_fit", "partial_fit"])
def test_diverging_call_keeps_the_fitted_model(call):
    X, y = _blobs()
    y = y.astype(float)
    ours, theirs = _pair("MLPRegressor", hidden_layer_sizes=(8,), solver="sgd",
                         max_iter=5, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
    for est in (ours, theirs):
        est.set_params(learning_rate_init=1e10, warm_start=call == "warm_fit")
    with pytest.raises(ValueError):                   # scikit-learn: non-finite weights
        for _ in range(5):
            _quiet(theirs.partial_fit if call == "partial_fit" else theirs.fit, X * 1e3, y)
    for _ in range(5):                                # partial_fit: until it diverges
        before, params, pred = _snapshot(ours), ours.net_.params_flat.copy(), ours.predict(X)
        try:
            _quiet(ours.partial_fit if call == "partial_fit" else ours.fit, X * 1e3, y)
        except ValueError:
            break
    else:
        pytest.fail("did not diverge")
    _assert_same_state(ours, before, params)
    np.testing.assert_array_equal(ours.predict(X), pred)


def test_diverging_first_fit_leaves_the_estimator_unfitted():
    X, y = _blobs()
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e10,
                       random_state=0)
    with pytest.raises(FloatingPointError, match="non-finite"):     # also a ValueError
        _quiet(est.fit, X * 1e3, y.astype(float))
    assert not any(k.endswith("_") for k in vars(est))


@pytest.mark.parametrize("name, value", [("alpha", 1e308), ("learning_rate_init", 1e308),
                                         ("alpha", np.inf), ("learning_rate_init", np.nan)])
@pytest.mark.parametrize("dtype", [None, np.float32])
def test_huge_alpha_or_learning_rate_refused_at_fit(name, value, dtype):
    X, y = _blobs(n=20)
    est = MLPClassifier(max_iter=2, dtype=dtype, **{name: value})
    with pytest.raises(ValueError, match=f"'{name}' parameter of MLPClassifier"):
        est.fit(X, y)
    assert not hasattr(est, "net_")


@pytest.mark.parametrize("params", [dict(alpha=-1.0), dict(max_iter=0), dict(batch_size=0),
                                    dict(momentum=1.5), dict(beta_1=1.0), dict(epsilon=0.0),
                                    dict(n_iter_no_change=0), dict(solver="nope"),
                                    dict(activation="swish"), dict(shuffle=1),
                                    dict(validation_fraction=1.0), dict(max_fun=0),
                                    dict(learning_rate_init=0.0), dict(tol=-1.0)])
def test_bad_parameters_give_sklearns_message(params):
    X, y = _blobs(n=20)
    ours, theirs = _pair("MLPClassifier", **params)
    name = next(iter(params))
    prefix = f"The '{name}' parameter of MLPClassifier must be"
    with pytest.raises(ValueError, match=prefix):
        theirs.fit(X, y)
    with pytest.raises(ValueError, match=prefix):
        ours.fit(X, y)
    assert not hasattr(ours, "net_")


def test_masked_arrays_are_refused():
    X, y = _blobs(n=20)
    Xm = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    est = MLPClassifier(max_iter=2)
    with pytest.raises(TypeError, match="masked array"):
        est.fit(Xm, y)
    with pytest.raises(TypeError, match="masked array"):
        est.fit(X, np.ma.masked_array(y))
    _quiet(est.fit, X, y)
    with pytest.raises(TypeError, match="masked array"):
        est.predict(Xm)
    from fastoptim.nn import MLP
    with pytest.raises(TypeError, match="masked array"):
        MLP([4, 3]).fit(Xm, y, epochs=1)


@pytest.mark.parametrize("kw, msg", [(dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"),
                                     (dict(epochs=2.5), "epochs"),
                                     (dict(batch_size=0), "batch_size"),
                                     (dict(batch_size=True), "batch_size")])
def test_network_fit_refuses_bad_counts(kw, msg):
    from fastoptim.nn import MLP
    X, y = _blobs(n=20)
    net = MLP([4, 3], seed=0)
    params = net.params_flat.copy()
    with pytest.raises(ValueError, match=msg):
        net.fit(X, y, **kw)
    np.testing.assert_array_equal(net.params_flat, params)


# ---- scikit-learn's fit semantics ---------------------------------------------------------

def test_n_iter_counts_this_calls_epochs():
    X, y = _blobs()
    for est in _pair("MLPClassifier", hidden_layer_sizes=(8,), max_iter=3, warm_start=True,
                     random_state=0):
        _quiet(est.fit, X, y)
        _quiet(est.fit, X, y)
        assert (est.n_iter_, len(est.loss_curve_), est.t_) == (3, 6, 6 * len(X))
        est.partial_fit(X, y)
        assert (est.n_iter_, len(est.loss_curve_), est.t_) == (1, 7, 7 * len(X))
        est.set_params(warm_start=False)
        _quiet(est.fit, X, y)
        assert (est.n_iter_, len(est.loss_curve_), est.t_) == (3, 3, 3 * len(X))


def test_invscaling_learning_rate_as_sklearn():
    X, y = _blobs()
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(8,), solver="sgd",
                         learning_rate="invscaling", learning_rate_init=0.1, power_t=0.3,
                         batch_size=16, max_iter=4, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
        est.partial_fit(X, y)
    assert ours.t_ == theirs.t_ == 5 * len(X)
    assert ours._optimizer.param_groups[0]["lr"] == theirs._optimizer.learning_rate
    assert theirs._optimizer.learning_rate == 0.1 / (ours.t_ + 1) ** 0.3


def test_invscaling_keeps_the_rate_within_an_epoch(monkeypatch):
    from fastoptim import optim
    X, y = _blobs(n=64)
    est = MLPClassifier(hidden_layer_sizes=(4,), solver="sgd", learning_rate="invscaling",
                        learning_rate_init=0.1, batch_size=8, max_iter=1, random_state=0)
    _quiet(est.fit, X, y)
    seen, step = [], optim.SGD.step

    def spy(self, grads):
        seen.append(self.param_groups[0]["lr"])
        return step(self, grads)
    monkeypatch.setattr(optim.SGD, "step", spy)
    est.partial_fit(X, y)
    assert seen == [0.1 / (64 + 1) ** 0.5] * 8      # set at the end of the first epoch


@pytest.mark.parametrize("X_rows, y, match", [
    (2, [0, 1], "validation set is too small|least populated"),
    (10, [0] + [1] * 9, "least populated"),
    (20, [0, 1] * 10, r"test_size = 1 should be greater or equal to the number of classes"),
    (20, [0, 1, 2, 3] * 5, "validation set is too small")])
def test_early_stopping_split_errors_as_sklearn(X_rows, y, match):
    X = np.random.default_rng(0).normal(size=(X_rows, 3))
    for est in _pair("MLPClassifier", early_stopping=True, validation_fraction=0.05,
                     max_iter=3):
        with pytest.raises(ValueError, match=match):
            est.fit(X, y)
    assert not hasattr(est, "net_") if isinstance(est, MLPClassifier) else True


def test_early_stopping_with_a_one_member_class_in_multiclass_fits_as_sklearn():
    X, y = _blobs(n=40)
    y = y.copy()
    y[0] = 9
    for est in _pair("MLPClassifier", early_stopping=True, max_iter=3, random_state=0):
        _quiet(est.fit, X, y)
        assert len(est.validation_scores_) == est.n_iter_


def test_n_iter_no_change_inf_runs_every_epoch():
    X, y = _blobs()
    for est in _pair("MLPClassifier", hidden_layer_sizes=(4,), n_iter_no_change=np.inf,
                     tol=100.0, max_iter=7, random_state=0):
        with pytest.warns(Warning, match="Maximum iterations"):
            est.fit(X, y)
        assert est.n_iter_ == 7


def test_single_class_fits_as_sklearn():
    X, _ = _blobs(n=30)
    y = np.full(30, "only")
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
    assert ours.classes_.tolist() == theirs.classes_.tolist() == ["only"]
    assert ours.n_outputs_ == theirs.n_outputs_ == 1
    assert ours.out_activation_ == theirs.out_activation_ == "logistic"
    assert (ours.predict(X) == "only").all() and ours.score(X, y) == theirs.score(X, y) == 1
    assert ours.predict_proba(X).shape == theirs.predict_proba(X).shape


@pytest.mark.parametrize("X_dtype", [np.float32, np.float64, np.int64])
def test_training_dtype_follows_X_as_sklearn(X_dtype):
    X, y = _blobs()
    X = (X * 10).astype(X_dtype)
    ours, theirs = _pair("MLPRegressor", hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y.astype(float))
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype
    assert ours.predict(X).dtype == theirs.predict(X).dtype


def test_float64_values_beyond_float32_range():
    X, y = _blobs(n=20)
    X = X.copy()
    X[0, 0] = 1e39                                     # finite in float64, not in float32
    est = MLPClassifier(max_iter=1, dtype=np.float32)
    with pytest.raises(ValueError, match="beyond float32's range") as err:
        est.fit(X, y)
    assert "infinity" not in str(err.value)
    est64 = _quiet(MLPClassifier(hidden_layer_sizes=(2,), max_iter=1).fit, X / 1e30, y)
    assert est64.coefs_[0].dtype == np.float64


@pytest.mark.parametrize("early", [False, True])
def test_curve_and_score_attributes_as_sklearn(early):
    X, y = _blobs(n=600)
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(8,), early_stopping=early,
                         max_iter=40, n_iter_no_change=5, learning_rate_init=0.01,
                         random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
        assert len(est.loss_curve_) == est.n_iter_ and est.loss_ == est.loss_curve_[-1]
        if early:
            assert est.best_loss_ is None
            assert len(est.validation_scores_) == est.n_iter_
            assert est.best_validation_score_ == max(est.validation_scores_)
            # stopped after more than n_iter_no_change epochs without improvement
            assert est.n_iter_ == 40 or est.n_iter_ >= 6
        else:
            assert est.validation_scores_ is None and est.best_validation_score_ is None
            assert est.best_loss_ == min(est.loss_curve_)
    assert abs(ours.score(X, y) - theirs.score(X, y)) < 0.1


# ---- what was missing ---------------------------------------------------------------------

def test_lbfgs_as_sklearn():
    X, y = _blobs()
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(8,), solver="lbfgs",
                         max_iter=50, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
        assert 1 <= est.n_iter_ <= 50 and np.isfinite(est.loss_)
        assert not hasattr(est, "partial_fit") and not hasattr(est, "loss_curve_")
        assert est.score(X, y) > 0.95
    for est in _pair("MLPRegressor", solver="lbfgs", max_iter=2, random_state=0):
        with pytest.warns(Warning, match="lbfgs failed to converge after 2 iteration"):
            est.fit(X, y.astype(float))


def test_lbfgs_without_scipy_says_so(tmp_path):
    import subprocess
    import sys
    code = ("import sys; sys.modules['scipy'] = None; sys.modules['scipy.optimize'] = None\n"
            "import numpy as np\nfrom fastoptim.nn import MLPClassifier\n"
            "X = np.random.default_rng(0).normal(size=(20, 3)); y = [0, 1] * 10\n"
            "try:\n    MLPClassifier(solver='lbfgs').fit(X, y)\n"
            "except ImportError as e:\n    print('ok', e)\n"
            "MLPClassifier(max_iter=2).fit(X, y)\n")
    from conftest import subprocess_env
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, env=subprocess_env(), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok solver='lbfgs' needs scipy" in out.stdout


def _one_full_batch_step(cls_name, X, y, sw, **kw):
    """One plain-SGD full-batch step from the same weights in both; return both."""
    ours, theirs = _pair(cls_name, hidden_layer_sizes=(5,), solver="sgd", momentum=0.0,
                         learning_rate_init=0.1, batch_size=len(X), shuffle=False,
                         alpha=0.01, random_state=0, max_iter=1, warm_start=True, **kw)
    _quiet(theirs.fit, X, y)
    _quiet(ours.fit, X, y)
    for i in range(len(theirs.coefs_)):
        ours.coefs_[i] = theirs.coefs_[i].copy()      # scikit-learn updates in place
        ours.intercepts_[i] = theirs.intercepts_[i].copy()
    _quiet(theirs.fit, X, y, sample_weight=sw)
    _quiet(ours.fit, X, y, sample_weight=sw)
    return ours, theirs


@pytest.mark.parametrize("target", ["binary", "multiclass", "multilabel", "squared_error",
                                    "poisson"])
@pytest.mark.parametrize("weighted", [False, True])
def test_one_step_matches_sklearn(target, weighted):
    """Same weights, one SGD step with sample weights: same loss and same new weights."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    kw = {}
    if target == "binary":
        cls, y = "MLPClassifier", rng.integers(0, 2, 30)
    elif target == "multiclass":
        cls, y = "MLPClassifier", rng.integers(0, 4, 30)
    elif target == "multilabel":
        cls, y = "MLPClassifier", rng.integers(0, 2, (30, 3))
    else:
        cls, kw = "MLPRegressor", {"loss": target}
        y = rng.poisson(2.0, size=30).astype(float) if target == "poisson" else \
            rng.normal(size=(30, 2))
    sw = rng.uniform(0.2, 3.0, 30) if weighted else None
    ours, theirs = _one_full_batch_step(cls, X, y, sw, **kw)
    assert ours.out_activation_ == theirs.out_activation_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    if cls == "MLPClassifier":
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)


def test_integer_sample_weight_equals_repeated_rows():
    X, y = _blobs(n=40)
    sw = np.random.default_rng(1).integers(0, 3, 40)
    a = _quiet(MLPClassifier(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=30,
                             random_state=0).fit, X, y, sample_weight=sw)
    b = _quiet(MLPClassifier(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=30,
                             random_state=0).fit, np.repeat(X, sw, 0), np.repeat(y, sw))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-6, atol=1e-9)


def test_bad_sample_weight():
    X, y = _blobs(n=20)
    for sw, msg in ((np.ones(3), "shape"), (-np.ones(20), "Negative"),
                    (np.full(20, np.nan), "NaN"), (np.zeros(20), "non-zero")):
        est = MLPClassifier(max_iter=2)
        with pytest.raises(ValueError, match=msg):
            est.fit(X, y, sample_weight=sw)
        assert not hasattr(est, "net_")


def test_multilabel_as_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    Y = np.column_stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 2] > 0]).astype(int)
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(16,), max_iter=200,
                         learning_rate_init=0.01, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, Y)
    assert ours.classes_.tolist() == theirs.classes_.tolist() == [0, 1, 2]
    assert ours.predict(X).shape == theirs.predict(X).shape == (80, 3)
    assert ours.predict_proba(X).shape == theirs.predict_proba(X).shape
    assert ours.score(X, Y) > 0.85 and abs(ours.score(X, Y) - theirs.score(X, Y)) < 0.15
    ours.partial_fit(X, Y)          # no classes needed for an indicator matrix
    assert ours.n_iter_ == 1


def test_sparse_X_trains_like_dense():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = _blobs()
    X = np.where(np.abs(X) < 1, 0.0, X)
    dense = _quiet(MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit,
                   X, y)
    for fmt in (scipy_sparse.csr_matrix, scipy_sparse.csc_matrix, scipy_sparse.csr_array):
        sparse = _quiet(MLPClassifier(hidden_layer_sizes=(8,), max_iter=5,
                                      random_state=0).fit, fmt(X), y)
        np.testing.assert_allclose(sparse.predict_proba(fmt(X)), dense.predict_proba(X),
                                   rtol=1e-9, atol=1e-12)


def test_poisson_regressor():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0] + 0.2))
    ours, theirs = _pair("MLPRegressor", loss="poisson", hidden_layer_sizes=(8,),
                         activation="tanh", max_iter=400, learning_rate_init=0.01,
                         random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, X, y)
        assert est.out_activation_ == "exp" and (est.predict(X) > 0).all()
    assert ours.score(X, y) > theirs.score(X, y) - 0.1
    # scikit-learn documents y >= 0 but does not check it (its loss turns nan)
    with pytest.raises(ValueError, match="negative"):
        ours.fit(X, -y - 1.0)


def test_feature_names_as_sklearn():
    pd = pytest.importorskip("pandas")
    X, y = _blobs(n=40)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    ours, theirs = _pair("MLPClassifier", hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    for est in (ours, theirs):
        _quiet(est.fit, df, y)
    np.testing.assert_array_equal(ours.feature_names_in_, theirs.feature_names_in_)
    renamed = df.rename(columns={"b": "B"})
    messages = []
    for est in (ours, theirs):
        with pytest.raises(ValueError) as err:
            est.predict(renamed)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    for est in (ours, theirs):
        with pytest.warns(UserWarning, match="X does not have valid feature names, but "
                          f"{type(est).__name__} was fitted with feature names"):
            est.predict(X)
    plain = _quiet(MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit, X, y)
    assert not hasattr(plain, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but MLPClassifier was fitted "
                      "without feature names"):
        plain.predict(df)
    _quiet(ours.set_params(warm_start=False).fit, X, y)      # refit without names
    assert not hasattr(ours, "feature_names_in_")


def test_partial_fit_keeps_its_optimizer_as_sklearn():
    """scikit-learn's partial_fit goes on with the optimizer it made first: a later
    set_params(learning_rate_init=...) does not reach it, a new fit does."""
    X, y = _blobs()
    for est in _pair("MLPClassifier", hidden_layer_sizes=(4,), solver="sgd",
                     learning_rate_init=0.01, random_state=0):
        est.partial_fit(X, y, classes=[0, 1, 2])
        est.set_params(learning_rate_init=0.5)
        est.partial_fit(X, y)
        lr = (est._optimizer.param_groups[0]["lr"] if isinstance(est, MLPClassifier)
              else est._optimizer.learning_rate)
        assert lr == 0.01
        _quiet(est.set_params(max_iter=1).fit, X, y)
        lr = (est._optimizer.param_groups[0]["lr"] if isinstance(est, MLPClassifier)
              else est._optimizer.learning_rate)
        assert lr == 0.5


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_pickled_regressor_predicts_the_same(solver):
    X, y = _blobs()
    est = _quiet(MLPRegressor(hidden_layer_sizes=(4,), solver=solver, max_iter=5,
                              random_state=0).fit, X, y.astype(float))
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.n_iter_ == est.n_iter_ and back.loss_ == est.loss_


# ---- item: random_state=None draws from NumPy's global RandomState, as scikit-learn -----

@pytest.mark.parametrize("cls_name", ["MLPClassifier", "MLPRegressor"])
def test_random_state_none_follows_np_random_seed(cls_name):
    X, y = _blobs()
    coefs = []
    for seed in (3, 3, 4):
        np.random.seed(seed)
        est = _pair(cls_name, hidden_layer_sizes=(5,), max_iter=2)[0]
        _quiet(est.fit, X, y)
        coefs.append(est.coefs_[0].copy())
    np.testing.assert_array_equal(coefs[0], coefs[1])
    assert not np.array_equal(coefs[0], coefs[2])


# ---- item: weights set before the first (warm-start) fit are its starting point --------

@pytest.mark.parametrize("first_call", ["partial_fit", "warm_start_fit"])
def test_preset_weights_start_training_as_sklearn(first_call):
    X, y = _blobs(n=40, k=2, d=3)
    rng = np.random.default_rng(1)
    W = [rng.normal(size=(3, 4)), rng.normal(size=(4, 1))]
    b = [rng.normal(size=4), rng.normal(size=1)]
    results = []
    for est in _pair("MLPClassifier", hidden_layer_sizes=(4,), solver="sgd", momentum=0.0,
                     learning_rate_init=0.05, batch_size=40, max_iter=1, shuffle=False,
                     warm_start=first_call == "warm_start_fit", random_state=0):
        est.coefs_ = [w.copy() for w in W]
        est.intercepts_ = [c.copy() for c in b]
        # scikit-learn also needs the attributes its first pass would have set (as in
        # its own test_fit); fastoptim needs only the weights
        est.n_outputs_, est.n_layers_, est.out_activation_ = 1, 3, "logistic"
        est.t_, est.n_iter_, est.best_loss_, est.loss_curve_ = 0, 0, np.inf, []
        est._no_improvement_count = 0
        if first_call == "partial_fit":
            est.partial_fit(X, y, classes=[0, 1])
        else:
            _quiet(est.fit, X, y)
        results.append(np.concatenate([a.ravel() for a in est.coefs_ + est.intercepts_]))
    start = np.concatenate([a.ravel() for a in W + b])
    assert not np.allclose(results[0], start)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-12)


def test_preset_weights_of_the_wrong_shape_are_refused_and_nothing_changes():
    X, y = _blobs(n=40, k=2, d=3)
    est = MLPClassifier(hidden_layer_sizes=(4,), solver="sgd")
    est.coefs_ = [np.zeros((3, 5)), np.zeros((5, 1))]
    est.intercepts_ = [np.zeros(5), np.zeros(1)]
    with pytest.raises(ValueError, match=r"coefs_\[0\] must be a real array of shape \(3, 4\)"):
        est.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(est, "net_") and est.coefs_[0].shape == (3, 5)


# ---- item: a diverging fit with early stopping keeps its best weights, as scikit-learn ---

def test_diverging_fit_with_early_stopping_restores_the_best_weights():
    X, y = _blobs(n=150, k=3, d=4)
    X = X * 1e3
    for est in _pair("MLPRegressor", hidden_layer_sizes=(20,), activation="identity",
                     solver="sgd", learning_rate_init=1.0, max_iter=15, early_stopping=True,
                     n_iter_no_change=20, random_state=0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y.astype(float))
        assert not np.isfinite(est.loss_curve_[-1])
        assert all(np.isfinite(c).all() for c in est.coefs_ + est.intercepts_)
        assert len(est.loss_curve_) == 15
    ours = _pair("MLPRegressor", hidden_layer_sizes=(20,), activation="identity",
                 solver="sgd", learning_rate_init=1.0, max_iter=15, random_state=0)[0]
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        _quiet(ours.fit, X, y.astype(float))
    assert not hasattr(ours, "coefs_")


# ---- item: the same random_state draws what scikit-learn draws ------------------------

def _targets(target, rng, n=90):
    X = rng.normal(size=(n, 4))
    if target == "binary":
        return "MLPClassifier", X, rng.integers(0, 2, n)
    if target == "multiclass":
        return "MLPClassifier", X, rng.integers(0, 3, n)
    if target == "multilabel":
        return "MLPClassifier", X, rng.integers(0, 2, (n, 3))
    return "MLPRegressor", X, rng.normal(size=n)


def _assert_same_model(ours, theirs, rtol):
    assert ours.n_iter_ == theirs.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("target", ["binary", "multiclass", "multilabel", "regression"])
@pytest.mark.parametrize("activation", ["relu", "logistic", "tanh", "identity"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_same_random_state_trains_the_same_model_as_sklearn(target, activation,
                                                            early_stopping):
    """Initial weights (scikit-learn's Glorot bounds, biases drawn too), each epoch's
    shuffle and the early-stopping split come from the same draws as scikit-learn's: with
    plain SGD (the same update rule in both) the fitted weights agree to rounding."""
    cls, X, y = _targets(target, np.random.default_rng(1))
    ours, theirs = _pair(cls, hidden_layer_sizes=(7, 5), activation=activation,
                         solver="sgd", momentum=0.0, learning_rate_init=0.05, batch_size=16,
                         max_iter=4, tol=0.0, n_iter_no_change=100, random_state=3,
                         early_stopping=early_stopping)
    _quiet(theirs.fit, X, y)
    _quiet(ours.fit, X, y)
    _assert_same_model(ours, theirs, 1e-12)
    if early_stopping:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_,
                                   rtol=1e-12)


@pytest.mark.parametrize("random_state", ["RandomState", "np.random.seed"])
def test_random_state_objects_draw_as_sklearn(random_state):
    """A RandomState instance is used (and advanced) as scikit-learn uses it; None draws
    from NumPy's global RandomState."""
    cls, X, y = _targets("multiclass", np.random.default_rng(2))
    fits = []
    for est_cls in (MLPClassifier, sk_nn.MLPClassifier):
        rs = np.random.RandomState(5)
        if random_state == "np.random.seed":
            np.random.seed(5)
            rs = None
        est = est_cls(hidden_layer_sizes=(6,), solver="sgd", momentum=0.9,
                      learning_rate_init=0.05, batch_size=20, max_iter=3, tol=0.0,
                      n_iter_no_change=100, random_state=rs)
        _quiet(est.fit, X, y)
        _quiet(est.fit, X, y)             # a refit draws on from the same generator
        after = (rs if rs is not None else np.random.mtrand._rand).randint(2**31)
        fits.append((est, after))
    (ours, ours_after), (theirs, theirs_after) = fits
    _assert_same_model(ours, theirs, 1e-12)
    assert ours_after == theirs_after


@pytest.mark.parametrize("call", ["partial_fit", "warm_start_fit"])
def test_later_calls_reseed_from_random_state_as_sklearn(call):
    """An int random_state seeds every fit / partial_fit call anew (scikit-learn's
    check_random_state in _fit): later calls shuffle as scikit-learn's do."""
    cls, X, y = _targets("multiclass", np.random.default_rng(3))
    ours, theirs = _pair(cls, hidden_layer_sizes=(6,), solver="sgd", momentum=0.9,
                         learning_rate_init=0.05, batch_size=20, max_iter=2, tol=0.0,
                         n_iter_no_change=100, random_state=4,
                         warm_start=call == "warm_start_fit")
    for est in (ours, theirs):
        for _ in range(3):
            if call == "partial_fit":
                _quiet(est.partial_fit, X, y, classes=np.unique(y))
            else:
                _quiet(est.fit, X, y)
    _assert_same_model(ours, theirs, 1e-12)


def test_lbfgs_from_the_same_random_state_as_sklearn():
    cls, X, y = _targets("multiclass", np.random.default_rng(4))
    ours, theirs = _pair(cls, hidden_layer_sizes=(8,), solver="lbfgs", max_iter=30,
                         random_state=2)
    _quiet(theirs.fit, X, y)
    _quiet(ours.fit, X, y)
    _assert_same_model(ours, theirs, 1e-9)


@pytest.mark.parametrize("solver", [
    dict(solver="adam"),
    dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-4),
    dict(solver="sgd", learning_rate="invscaling", power_t=0.3),
    dict(solver="sgd", learning_rate="invscaling", nesterovs_momentum=False),
    dict(solver="sgd", learning_rate="adaptive"),
    dict(solver="sgd", learning_rate="adaptive", nesterovs_momentum=False, momentum=0.5),
], ids=["adam", "adam-options", "invscaling", "invscaling-plain", "adaptive",
        "adaptive-plain"])
@pytest.mark.parametrize("target", ["multiclass", "regression"])
def test_every_solver_trains_the_same_model_as_sklearn(solver, target):
    """Adam adds eps as scikit-learn does (before v's bias correction) and SGD's momentum
    buffers follow a rate change as scikit-learn's velocity does: from the same
    random_state the fitted weights agree to rounding, adaptive rate drops and early
    stops included."""
    cls, X, y = _targets(target, np.random.default_rng(5), n=150)
    ours, theirs = _pair(cls, hidden_layer_sizes=(9,), learning_rate_init=0.01,
                         batch_size=32, max_iter=40, tol=1e-2, n_iter_no_change=2,
                         random_state=6, **solver)
    _quiet(theirs.fit, X, y)
    _quiet(ours.fit, X, y)
    _assert_same_model(ours, theirs, 1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    # the private attribute scikit-learn's own tests read
    assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate,
                                                          rel=1e-14)


def test_rate_change_rescales_an_8bit_momentum_buffer():
    """_set_sgd_lr scales 8-bit momentum through its absmax: the decoded values scale."""
    from fastoptim.nn._estimators import _set_sgd_lr
    import fastoptim
    p = np.zeros(5000, np.float32)
    opt = fastoptim.optim.SGD([p], lr=0.1, momentum=0.9, state_dtype="int8")
    opt.step([np.linspace(-1, 1, 5000, dtype=np.float32)])
    buf = opt.state[0]["momentum_buffer"]
    before = buf.dequantize().copy()
    _set_sgd_lr(opt, 0.025)
    assert opt.param_groups[0]["lr"] == 0.025
    np.testing.assert_array_equal(buf.dequantize(), before * np.float32(4.0))
