"""The dense network: layout, forward values, backprop vs finite differences, training."""

import copy
import io
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastoptim.nn import ACTIVATIONS, MLP, OUTPUTS, History, make_optimizer, train
import fastoptim
from fastoptim.nn._training import _Progress

DTYPES = [np.float32, np.float64]


def _data(rng, n, sizes, output):
    X = rng.normal(size=(n, sizes[0]))
    if output == "softmax":
        y = rng.integers(0, sizes[-1], size=n)
    elif output == "logistic":
        y = rng.integers(0, 2, size=(n, sizes[-1]))
    elif output == "exp":
        y = rng.poisson(1.5, size=(n, sizes[-1])).astype(float)
    else:
        y = rng.normal(size=(n, sizes[-1]))
    return X, y


def _numpy_forward(net, X):
    """Straightforward NumPy evaluation of the same network (float64)."""
    f = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
         "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}[net.activation]
    a = np.asarray(X, dtype=np.float64)
    for i, (W, b) in enumerate(zip(net.coefs, net.intercepts)):
        z = a @ W.astype(np.float64) + b.astype(np.float64)
        a = f(z) if i < net.n_layers - 1 else z
    if net.output == "softmax":
        a = np.exp(a - a.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
    return a


# ---- layout ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_params_are_views_of_one_buffer(dtype):
    net = MLP([5, 7, 3, 4], dtype=dtype, seed=0)
    assert net.params_flat.dtype == dtype and net.params_flat.flags.c_contiguous
    assert net.n_params == 5 * 7 + 7 * 3 + 3 * 4 + 7 + 3 + 4 == net.params_flat.size
    for arrs, flat in ((net.coefs + net.intercepts, net.params_flat),
                       (net.coef_grads + net.intercept_grads, net.grads_flat)):
        assert all(a.base is flat or np.shares_memory(a, flat) for a in arrs)
        assert sum(a.size for a in arrs) == flat.size
    assert [W.shape for W in net.coefs] == [(5, 7), (7, 3), (3, 4)]
    # writing through the flat buffer changes the layers, and vice versa
    net.params_flat[:] = 0
    assert all((W == 0).all() for W in net.coefs)
    net.intercepts[-1][:] = 2
    assert (net.params_flat[-4:] == 2).all()


def test_initialisation_is_seeded_and_scaled():
    a, b = MLP([64, 128, 64, 10], seed=3), MLP([64, 128, 64, 10], seed=3)
    np.testing.assert_array_equal(a.params_flat, b.params_flat)
    assert not np.array_equal(a.params_flat, MLP([64, 128, 64, 10], seed=4).params_flat)
    assert all((bias == 0).all() for bias in a.intercepts)
    # He-uniform for relu hidden layers, Glorot-uniform for the output layer / tanh
    assert np.abs(a.coefs[0]).max() <= np.sqrt(6 / 64)
    assert np.abs(a.coefs[0]).max() > 0.9 * np.sqrt(6 / 64)
    assert np.abs(a.coefs[2]).max() <= np.sqrt(6 / 74)
    t = MLP([64, 128, 10], activation="tanh", seed=0)
    assert 0.9 * np.sqrt(6 / 192) < np.abs(t.coefs[0]).max() <= np.sqrt(6 / 192)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(layer_sizes=[3]), "at least 2"),
    (dict(layer_sizes=[3, 0, 2]), "positive ints"),
    (dict(layer_sizes=[3, 2.5]), "positive ints"),
    (dict(layer_sizes=[3, 2], activation="swish"), "activation must be one of"),
    (dict(layer_sizes=[3, 2], output="tanh"), "output must be one of"),
    (dict(layer_sizes=[3, 2], dtype=np.int32), "float32 or float64"),
    (dict(layer_sizes=[3, 2], alpha=-1.0), "alpha"),
])
def test_bad_construction(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        MLP(**kwargs)


# ---- forward -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_forward_matches_plain_numpy(dtype, activation, output, rng):
    net = MLP([6, 9, 5, 3], activation=activation, output=output, dtype=dtype, seed=1)
    X = rng.normal(size=(37, 6))
    got = net.forward(X)
    assert got.dtype == dtype and got.shape == (37, 3)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, _numpy_forward(net, X), rtol=tol, atol=tol)


def test_forward_large_input_is_chunked(rng):
    net = MLP([4, 8, 3], seed=0)
    net.reserve(16)
    X = rng.normal(size=(1000, 4))
    np.testing.assert_allclose(net.forward(X), _numpy_forward(net, X), rtol=1e-5, atol=1e-6)


def test_sigmoid_and_softmax_are_stable():
    net = MLP([2, 3, 2], activation="sigmoid", dtype=np.float64, seed=0)
    X = np.array([[1e4, -1e4], [-1e4, 1e4], [0.0, 0.0]])
    with np.errstate(all="raise"):
        p = net.forward(X)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # huge logits: softmax saturates without overflow, the loss stays finite
    big = MLP([2, 3], output="softmax", dtype=np.float64, seed=0)
    big.coefs[0][...] = [[1e3, -1e3, 0], [0, 0, 0]]
    with np.errstate(over="raise", invalid="raise"):
        P = big.forward(np.array([[10.0, 0.0]]))
        loss = big.loss(np.array([[10.0, 0.0]]), np.array([1]))
    np.testing.assert_allclose(P, [[1.0, 0.0, 0.0]], atol=1e-300)
    np.testing.assert_allclose(loss, 2e4)


# ---- backprop vs central finite differences ------------------------------------------------

def _finite_difference_grad(net, X, Y, h=1e-6):
    g = np.empty_like(net.params_flat)
    p = net.params_flat
    for j in range(p.size):
        old = p[j]
        p[j] = old + h
        up = net.loss(X, Y)
        p[j] = old - h
        down = net.loss(X, Y)
        p[j] = old
        g[j] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("n", [1, 7])
def test_gradient_matches_finite_differences(activation, output, alpha, n):
    rng = np.random.default_rng(n)
    sizes = [4, 6, 5, 3]
    net = MLP(sizes, activation=activation, output=output, dtype=np.float64, alpha=alpha, seed=2)
    for b in net.intercepts:          # nonzero biases: no ReLU input sits exactly on the kink
        b[:] = rng.normal(scale=0.1, size=b.size)
    X, y = _data(rng, n, sizes, output)
    loss = net.loss_and_grad(X, y)
    assert loss == pytest.approx(net.loss(X, y), rel=1e-12)
    num = _finite_difference_grad(net, X, y)
    err = np.linalg.norm(net.grads_flat - num) / max(np.linalg.norm(num), 1e-12)
    assert err < 1e-6


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_gradient_of_final_partial_batch(activation, output):
    """Batch 4 over 11 rows: the last batch (3 rows) runs on views of the buffers."""
    rng = np.random.default_rng(0)
    sizes = [3, 5, 4, 2]
    net = MLP(sizes, activation=activation, output=output, dtype=np.float64, alpha=0.1, seed=5)
    for b in net.intercepts:
        b[:] = rng.normal(scale=0.1, size=b.size)
    X, y = _data(rng, 11, sizes, output)
    Xc, Y = net.check_X(X), net.targets(y)
    net.reserve(4)
    order = rng.permutation(11)
    for start in (0, 4, 8):
        idx = order[start:start + 4]
        v = net._get_views(len(idx))
        xb, yb = net._gather(Xc, Y, idx, v)
        assert np.shares_memory(xb, net._xbuf)
        loss = net._loss_grad_batch(xb, yb, v)
        got = net.grads_flat.copy()
        num = _finite_difference_grad(net, X[idx], Y[idx])
        assert loss == pytest.approx(net.loss(X[idx], Y[idx]), rel=1e-12)
        err = np.linalg.norm(got - num) / max(np.linalg.norm(num), 1e-12)
        assert err < 1e-6, (start, err)


@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_float32_gradient_matches_float64(output):
    rng = np.random.default_rng(1)
    sizes = [5, 8, 3]
    n64 = MLP(sizes, output=output, dtype=np.float64, alpha=0.1, seed=0)
    n32 = MLP(sizes, output=output, dtype=np.float32, alpha=0.1, seed=0)
    n32.params_flat[:] = n64.params_flat
    n64.params_flat[:] = n32.params_flat    # same (float32-representable) weights
    X, y = _data(rng, 20, sizes, output)
    l64, l32 = n64.loss_and_grad(X, y), n32.loss_and_grad(X, y)
    assert n32.grads_flat.dtype == np.float32
    assert l32 == pytest.approx(l64, rel=1e-5)
    np.testing.assert_allclose(n32.grads_flat, n64.grads_flat, rtol=1e-4, atol=1e-6)


def test_l2_penalty_matches_sklearn_convention(rng):
    net = MLP([3, 4, 2], output="identity", dtype=np.float64, alpha=0.5, seed=0)
    X, y = _data(rng, 8, [3, 4, 2], "identity")
    plain = MLP([3, 4, 2], output="identity", dtype=np.float64, alpha=0.0, seed=0)
    loss, loss0 = net.loss_and_grad(X, y), plain.loss_and_grad(X, y)
    sq = sum(float((W ** 2).sum()) for W in net.coefs)
    assert loss == pytest.approx(loss0 + 0.5 * 0.5 / 8 * sq)
    for g, g0, W in zip(net.coef_grads, plain.coef_grads, net.coefs):
        np.testing.assert_allclose(g, g0 + 0.5 / 8 * W)
    for g, g0 in zip(net.intercept_grads, plain.intercept_grads):   # biases not penalised
        np.testing.assert_allclose(g, g0)


def test_matches_sklearn_loss_and_gradient():
    """Same weights -> same loss and gradients as scikit-learn's MLP internals."""
    sk = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 4))
    y = rng.normal(size=9)
    reg = sk.MLPRegressor(hidden_layer_sizes=(5,), activation="tanh", alpha=0.2,
                          max_iter=1, random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(X, y)
    net = MLP([4, 5, 1], activation="tanh", output="identity", dtype=np.float64, alpha=0.2)
    for W, Wsk in zip(net.coefs, reg.coefs_):
        W[...] = Wsk
    for b, bsk in zip(net.intercepts, reg.intercepts_):
        b[...] = bsk
    loss = net.loss_and_grad(X, y)
    activations = [X] + [None] * 2
    deltas = [None] * 2
    cg = [np.empty_like(W) for W in reg.coefs_]
    ig = [np.empty_like(b) for b in reg.intercepts_]
    sk_loss, cg, ig = reg._backprop(X, y.reshape(-1, 1), None, activations, deltas, cg, ig)
    assert loss == pytest.approx(sk_loss, rel=1e-12)
    for g, gsk in zip(net.coef_grads + net.intercept_grads, cg + ig):
        np.testing.assert_allclose(g, gsk, rtol=1e-10, atol=1e-14)


_SK_OUTPUTS = {"softmax": ("MLPClassifier", "log_loss", "softmax"),
               "logistic": ("MLPClassifier", "log_loss", "logistic"),
               "identity": ("MLPRegressor", "squared_error", "identity"),
               "exp": ("MLPRegressor", "poisson", "exp")}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_sklearn_backprop_every_output(output, weighted, sparse):
    """Same weights, sample weights and (sparse) X -> scikit-learn's loss and gradients."""
    sk = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(3)
    sizes = [4, 5, 3]
    X, y = _data(rng, 9, sizes, output)
    if sparse:
        scipy_sparse = pytest.importorskip("scipy.sparse")
        X = np.where(rng.random(X.shape) < 0.5, 0.0, X)
        X = scipy_sparse.csr_matrix(X)
    w = rng.uniform(0.1, 3.0, size=9) if weighted else None
    net = MLP(sizes, activation="tanh", output=output, dtype=np.float64, alpha=0.2, seed=1)
    Y = net.targets(y)
    cls, loss, act = _SK_OUTPUTS[output]
    est = getattr(sk, cls)(hidden_layer_sizes=(5,), activation="tanh", alpha=0.2)
    if cls == "MLPRegressor":
        est.loss = loss
    est.coefs_ = [W.copy() for W in net.coefs]
    est.intercepts_ = [b.copy() for b in net.intercepts]
    est.n_layers_, est.out_activation_ = 3, act
    net.mean_over_outputs = output == "identity"        # scikit-learn's reported loss
    Xc = net.check_X(X)
    v = net._get_views(9)
    got = net._loss_grad_batch(Xc, Y, v, w)
    cg = [np.empty_like(W) for W in net.coefs]
    ig = [np.empty_like(b) for b in net.intercepts]
    sk_loss, cg, ig = est._backprop(X, Y, w, [X, None, None], [None, None], cg, ig)
    assert got == pytest.approx(sk_loss, rel=1e-9)
    for g, gsk in zip(net.coef_grads + net.intercept_grads, cg + ig):
        np.testing.assert_allclose(g, gsk, rtol=1e-9, atol=1e-13)


# ---- buffers: no allocation per batch ------------------------------------------------------

def test_batch_buffers_are_reused(rng):
    net = MLP([4, 6, 3], seed=0)
    X = net.check_X(rng.normal(size=(10, 4)))
    Y = net.targets(rng.integers(0, 3, size=10))
    net.reserve(4)
    bufs = (net._xbuf, net._acts, net._deltas, net._scratch)
    v4, v2 = net._get_views(4), net._get_views(2)
    assert net._get_views(4) is v4                       # cached views per batch size
    for idx, v in ((np.arange(4), v4), (np.arange(4, 8), v4), (np.arange(8, 10), v2)):
        xb, yb = net._gather(X, Y, idx, v)
        net._loss_grad_batch(xb, yb, v)
        assert all(np.shares_memory(a, b) for a, b in zip(v.acts, net._acts))
    assert (net._xbuf, net._acts, net._deltas, net._scratch) == bufs


# ---- training ------------------------------------------------------------------------------

def _blobs(rng, n=300, k=3, d=5):
    centers = rng.normal(scale=4.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    return centers[y] + rng.normal(size=(n, d)), y


@pytest.mark.parametrize("solver, kw", [("adam", dict(lr=1e-2)),
                                        ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                        ("rmsprop", dict(lr=1e-2))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_learns_blobs(solver, kw, dtype, rng):
    X, y = _blobs(rng)
    net = MLP([5, 16, 3], dtype=dtype, seed=0)
    opt = make_optimizer(solver, [net.params_flat], **kw)
    hist = net.fit(X, y, optimizer=opt, epochs=15, batch_size=32, seed=0,
                   validation_fraction=0.2)
    assert isinstance(hist, History) and hist.n_epochs == 15
    assert len(hist.val_loss) == len(hist.val_accuracy) == 15
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.val_accuracy[-1] > 0.9
    assert hist.n_updates == 15 * int(np.ceil(240 / 32))


def test_fit_is_seeded(rng):
    X, y = _blobs(rng)
    runs = []
    for _ in range(2):
        net = MLP([5, 8, 3], seed=1)
        h = net.fit(X, y, epochs=3, batch_size=16, seed=7, validation_fraction=0.1)
        runs.append((net.params_flat.copy(), h.train_loss))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_one_optimizer_call_per_batch(rng):
    X, y = _blobs(rng, n=100)
    net = MLP([5, 8, 3], seed=0)

    class Recorder:
        def __init__(self):
            self.param_groups = [{"params": [net.params_flat], "lr": 0.1}]
            self.calls = []

        def step(self, grads):
            assert len(grads) == 1 and grads[0] is net.grads_flat
            self.calls.append(1)

    opt = Recorder()
    net.fit(X, y, optimizer=opt, epochs=2, batch_size=30)
    assert len(opt.calls) == 2 * 4          # 30, 30, 30, 10


def test_optimizer_must_be_built_on_params_flat(rng):
    X, y = _blobs(rng, n=50)
    net = MLP([5, 8, 3], seed=0)
    other = MLP([5, 8, 3], seed=0)
    opt = make_optimizer("adam", [other.params_flat])
    with pytest.raises(ValueError, match="params_flat"):
        net.fit(X, y, optimizer=opt, epochs=1)


def test_early_stopping_restores_best_weights(rng):
    X, y = _blobs(rng, n=200)
    y_noisy = y.copy()
    y_noisy[::2] = rng.integers(0, 3, size=100)       # overfitting bait
    net = MLP([5, 64, 3], seed=0)
    opt = make_optimizer("adam", [net.params_flat], lr=0.05)
    hist = net.fit(X[:150], y_noisy[:150], optimizer=opt, epochs=200, batch_size=16, seed=0,
                   validation_data=(X[150:], y[150:]), early_stopping=True, patience=3)
    assert hist.stopped_early and hist.n_epochs < 200
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert hist.n_epochs == hist.best_epoch + 1 + 4       # more than `patience` bad epochs
    assert net.loss(X[150:], y[150:], penalty=False) == pytest.approx(
        min(hist.val_loss), rel=1e-5)


def test_scheduler_is_stepped_per_epoch(rng):
    X, y = _blobs(rng, n=60)
    net = MLP([5, 4, 3], seed=0)
    opt = make_optimizer("sgd", [net.params_flat], lr=0.1)

    class Halve:
        def __init__(self):
            self.calls = 0

        def step(self):
            self.calls += 1
            opt.param_groups[0]["lr"] /= 2

    class ReduceLROnPlateau:      # recognised by name when lr_scheduler is absent
        def __init__(self):
            self.metrics = []

        def step(self, metric):
            self.metrics.append(metric)

    s = Halve()
    hist = net.fit(X, y, optimizer=opt, scheduler=s, epochs=4, batch_size=20)
    assert s.calls == 4 and hist.lr == [0.1, 0.05, 0.025, 0.0125]
    p = ReduceLROnPlateau()
    hist = net.fit(X, y, optimizer=opt, scheduler=p, epochs=3, batch_size=20,
                   validation_fraction=0.2)
    assert p.metrics == hist.val_loss


def test_fastoptim_lr_scheduler_integration(rng):
    lr_scheduler = pytest.importorskip("fastoptim.lr_scheduler")
    X, y = _blobs(rng, n=60)
    net = MLP([5, 4, 3], seed=0)
    opt = make_optimizer("adam", [net.params_flat], lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = net.fit(X, y, optimizer=opt, scheduler=sched, epochs=3, batch_size=20)
    np.testing.assert_allclose(hist.lr, [0.1, 0.05, 0.025])
    opt = make_optimizer("adam", [net.params_flat], lr=0.1)
    plat = lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    net.fit(X, y, optimizer=opt, scheduler=plat, epochs=3, batch_size=20,
            validation_fraction=0.2)


def test_training_divergence_is_reported(rng):
    X, y = _blobs(rng, n=60)
    X[0, 0] = 1e30
    net = MLP([5, 4, 3], dtype=np.float32, seed=0)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="loss became"):
        net.fit(X, y, optimizer=make_optimizer("sgd", [net.params_flat], lr=10.0), epochs=3)


@pytest.mark.parametrize("bad, msg", [
    (dict(X=np.full((5, 5), np.nan)), "NaN"),
    (dict(y=np.array([0, 1, 2, 1])), "different lengths"),
    (dict(X=np.zeros((5, 4))), "features"),
    (dict(y=np.array([0, 1, 2, 3, 4])), "class indices"),
])
def test_fit_rejects_bad_input(bad, msg):
    args = dict(X=np.zeros((5, 5)), y=np.array([0, 1, 2, 0, 1]))
    args.update(bad)
    with pytest.raises(ValueError, match=msg):
        MLP([5, 4, 3], seed=0).fit(args["X"], args["y"], epochs=1)


def test_pickle_and_deepcopy_keep_views(rng):
    net = MLP([4, 5, 2], output="identity", seed=0)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone.params_flat, net.params_flat)
        assert np.shares_memory(clone.coefs[0], clone.params_flat)
        clone.params_flat[:] = 0
        assert (clone.coefs[1] == 0).all() and not (net.coefs[1] == 0).all()


def test_progress_bar_only_on_terminals():
    class TTY(io.StringIO):
        def isatty(self):
            return True

    quiet = io.StringIO()
    p = _Progress(10, stream=quiet, delay=0.0)
    p.update(10, 0.5)
    p.close()
    assert quiet.getvalue() == ""
    tty = TTY()
    p = _Progress(10, stream=tty, delay=0.0)
    p.update(10, 0.5, 0.6)
    p.close()
    assert "10/10" in tty.getvalue() and tty.getvalue().endswith("\n")
    slow = TTY()
    p = _Progress(10, stream=slow, delay=60.0)    # short runs draw nothing
    p.update(10, 0.5)
    p.close()
    assert slow.getvalue() == ""


def test_train_function_directly(rng):
    X, y = _blobs(rng, n=64)
    net = MLP([5, 6, 3], dtype=np.float64, seed=0)
    Xc, Y = net.check_X(X), net.targets(y)
    opt = make_optimizer("adam", [net.params_flat], lr=1e-2)
    h = train(net, Xc, Y, opt, epochs=2, batch_size=64, shuffle=False)
    assert h.n_epochs == 2 and h.val_loss == []


def test_blas_threads_limited_for_small_networks(rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fastoptim.nn import _training
    X, y = _blobs(rng, n=64)
    net = MLP([5, 6, 3], seed=0)
    seen = []

    class Spy:
        param_groups = [{"params": [net.params_flat], "lr": 0.0}]

        def step(self, grads):
            info = threadpoolctl.threadpool_info()
            seen.append({d["num_threads"] for d in info if d["user_api"] == "blas"})

    before = {d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"}
    net.fit(X, y, optimizer=Spy(), epochs=1, batch_size=32)
    assert seen and all(s <= {1} for s in seen)
    after = {d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"}
    assert after == before
    # a large layer keeps NumPy's own setting
    assert isinstance(_training._blas_threads(MLP([2048, 2048, 2]), 256, "auto"),
                      type(__import__("contextlib").nullcontext()))


def test_blas_threads_limit_a_blas_loaded_after_the_first_fit():
    """The threadpoolctl controller sees the libraries loaded when it was made: a BLAS
    loaded later (scipy's own OpenBLAS, here) must be limited too (fresh process: in
    this one scipy may already be loaded)."""
    pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy")
    import subprocess
    import sys
    from conftest import subprocess_env
    code = """
import sys
import numpy as np
from fastoptim.nn import MLP, _network, _training
_network._gemm = False      # (the compiled products would load scipy's BLAS right away)
net = MLP([5, 6, 3], seed=0)
X, y = np.random.default_rng(0).normal(size=(64, 5)), np.arange(64) % 3
net.fit(X, y, epochs=1, batch_size=32)          # the controller is made here
assert "scipy.linalg" not in sys.modules
import scipy.linalg                               # loads scipy's OpenBLAS
import threadpoolctl
seen = []

class Spy:
    param_groups = [{"params": [net.params_flat], "lr": 0.0}]

    def step(self, grads):
        seen.append({d["filepath"]: d["num_threads"] for d in threadpoolctl.threadpool_info()
                     if d["user_api"] == "blas"})

net.fit(X, y, optimizer=Spy(), epochs=1, batch_size=32)
assert len(seen[0]) >= 2, seen                    # NumPy's and scipy's
assert all(set(s.values()) == {1} for s in seen), seen
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env(OPENBLAS_NUM_THREADS="2"), cwd="/",
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_alpha_can_change_after_construction(rng):
    X, y = _data(rng, 6, [3, 4, 2], "identity")
    a = MLP([3, 4, 2], output="identity", dtype=np.float64, alpha=0.0, seed=0)
    b = MLP([3, 4, 2], output="identity", dtype=np.float64, alpha=0.2, seed=0)
    a.alpha = 0.2
    assert a.loss_and_grad(X, y) == pytest.approx(b.loss_and_grad(X, y), rel=1e-14)
    np.testing.assert_array_equal(a.grads_flat, b.grads_flat)
    with pytest.raises(ValueError, match="alpha"):
        a.alpha = float("nan")


@settings(max_examples=25)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4),
       activation=st.sampled_from(ACTIVATIONS), output=st.sampled_from(["softmax", "identity"]),
       n=st.integers(1, 9), alpha=st.sampled_from([0.0, 0.05]), seed=st.integers(0, 2**16))
def test_gradient_property(sizes, activation, output, n, alpha, seed):
    rng = np.random.default_rng(seed)
    net = MLP(sizes, activation=activation, output=output, dtype=np.float64, alpha=alpha,
              seed=seed)
    for b in net.intercepts:
        b[:] = rng.normal(scale=0.1, size=b.size)
    X, y = _data(rng, n, sizes, output)
    net.loss_and_grad(X, y)
    num = _finite_difference_grad(net, X, y)
    scale = max(np.linalg.norm(num), 1e-8)
    if activation == "relu":
        # a ReLU input within h of its kink makes the finite difference itself wrong
        A = np.asarray(X, dtype=np.float64)
        for i, (W, b) in enumerate(zip(net.coefs[:-1], net.intercepts[:-1])):
            z = A @ W + b
            if np.abs(z).min() < 1e-4:
                return
            A = np.maximum(z, 0)
    assert np.linalg.norm(net.grads_flat - num) / scale < 1e-6


def test_training_matches_torch_adam():
    """Same initial weights, same batches: fastoptim + Adam follows torch.optim.Adam."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    sizes = [6, 8, 5, 3]
    net = MLP(sizes, dtype=np.float64, seed=0)
    X, y = _data(rng, 40, sizes, "softmax")
    layers = []
    for W, b in zip(net.coefs, net.intercepts):
        lin = torch.nn.Linear(W.shape[0], W.shape[1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        layers += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    topt = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = make_optimizer("adam", [net.params_flat], lr=1e-2)
    net.fit(X, y, optimizer=opt, epochs=3, batch_size=16, shuffle=False)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(3):
        for start in range(0, 40, 16):
            topt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt[start:start + 16]),
                                              yt[start:start + 16]).backward()
            topt.step()
    for i, (W, b) in enumerate(zip(net.coefs, net.intercepts)):
        np.testing.assert_allclose(W, model[2 * i].weight.detach().numpy().T, rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(b, model[2 * i].bias.detach().numpy(), rtol=1e-9,
                                   atol=1e-12)


def test_validation_r2_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 3)), rng.normal(size=(60, 2))
    net = MLP([3, 8, 2], output="identity", dtype=np.float64, seed=0)
    hist = net.fit(X[:40], Y[:40], epochs=3, validation_data=(X[40:], Y[40:]), seed=0)
    assert len(hist.val_r2) == 3
    pred = net.forward(X[40:])
    assert hist.val_r2[-1] == pytest.approx(
        metrics.r2_score(Y[40:], pred, multioutput="variance_weighted"), rel=1e-12)


def test_train_that_diverges_leaves_net_optimizer_and_history_as_they_were():
    from fastoptim.nn import DivergenceError, History, train
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    net = MLP([4, 6, 3], seed=0)
    Y = net.targets(np.arange(40) % 3)
    opt = fastoptim.SGD([net.params_flat], lr=0.1, momentum=0.9)
    hist = train(net, X, Y, opt, epochs=2, batch_size=8, seed=0)
    params, grads = net.params_flat.copy(), net.grads_flat.copy()
    state = opt.state_dict()
    n_epochs = hist.n_epochs
    opt.param_groups[0]["lr"] = 1e30            # diverges at once
    with pytest.raises(DivergenceError):
        train(net, X, Y, opt, epochs=3, batch_size=8, seed=1, history=hist)
    assert np.array_equal(net.params_flat, params)
    assert np.array_equal(net.grads_flat, grads)
    assert opt.param_groups[0]["lr"] == 1e30    # the user's own edit, from before the call
    assert np.array_equal(opt.state[0]["momentum_buffer"], state["state"][0]["momentum_buffer"])
    assert opt.state[0]["step"] == state["state"][0]["step"]
    assert hist.n_epochs == n_epochs and isinstance(hist, History)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(optimizer=object()), TypeError), (dict(scheduler=3), TypeError),
    (dict(lr_fn="x"), TypeError), (dict(monitor="accuracy"), ValueError),
    (dict(patience=-1), ValueError), (dict(tol=float("nan")), ValueError),
    (dict(epochs=10 ** 400), ValueError), (dict(blas_threads=0), ValueError),
    (dict(kernel_threads=0), ValueError), (dict(kernel_threads="all"), ValueError),
    (dict(kernel_threads=True), ValueError), (dict(kernel_threads=2.0), ValueError),
    (dict(history={}), TypeError), (dict(progress="yes"), TypeError),
])
def test_train_checks_its_arguments_before_any_batch(kwargs, exc):
    from fastoptim.nn import train
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20, 4))
    net = MLP([4, 5, 3], seed=0)
    Y = net.targets(np.arange(20) % 3)
    args = dict(optimizer=fastoptim.Adam([net.params_flat]))
    args.update(kwargs)
    opt = args.pop("optimizer")
    params, grads = net.params_flat.copy(), net.grads_flat.copy()
    with pytest.raises(exc):
        train(net, X, Y, opt, **args)
    assert np.array_equal(net.params_flat, params) and np.array_equal(net.grads_flat, grads)
