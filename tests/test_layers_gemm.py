"""The dense network's matrix products in compiled code (fastoptim/_kernels_gemm.pxi):
scipy's BLAS gemm on fixed blocks of output rows over fastoptim's kernel threads.

Bit for bit throughout: the blocks do not depend on the thread count, so neither may
any result; and on the sizes below (up to ~1e6 multiply-adds per product) the products
are the sums np.matmul gives when NumPy's and scipy's BLAS are both OpenBLAS."""

import importlib
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim import optim
from fastoptim._backend import kernels as K
from fastoptim.nn import MLP, train
from fastoptim.nn import _network, _training

pytest.importorskip("scipy")

DTYPES = [np.float32, np.float64]
RELU = K.LAYER_ACTIVATIONS.index("relu")


# training runs the compiled products only where threadpoolctl holds every BLAS at one
# thread (without it, NumPy's products: tested in test_layers.py / test_nn.py)
def _importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


needs_threadpoolctl = pytest.mark.skipif(
    not _importable("threadpoolctl"),
    reason="the compiled products run in training only with threadpoolctl")


def _both_openblas():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return False
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return len(blas) >= 2 and all(i.get("internal_api") == "openblas" for i in blas)


@pytest.fixture
def products():
    """The compiled products loaded, every call split over threads (no size limit),
    two kernel threads allowed; put back afterwards."""
    assert _network._gemm_ready()
    old = K.get_gemm_parallel_min_macs()
    K.set_gemm_parallel_min_macs(0)
    threads = fastoptim._backend._default_n_threads
    fastoptim.set_num_threads(2)
    yield
    K.set_gemm_parallel_min_macs(old)
    fastoptim.set_num_threads(threads)


def _row_split(n):
    return min(((n + 15) // 16 + 1) // 2 * 16, n)


# (rows, inputs, units); 64 x 64 x 300 float64 is one whose halves and whole product
# take different OpenBLAS kernels (different last bits here): a split that followed
# the thread count would show there
SHAPES = [(64, 64, 128), (64, 128, 64), (64, 64, 10), (45, 7, 9), (203, 33, 4), (1, 3, 2),
          (17, 5, 6), (64, 64, 300)]


def _forward(a, W, b, act, threads):
    z = np.empty((a.shape[0], W.shape[1]), a.dtype)
    K.dense_forward_product(a, W, b, z, act, threads)
    return z


def _backward(a, d, W, act, threads, wt=False, bias=True, accumulate=False, start=None):
    n, k = a.shape
    m = d.shape[1]
    g = np.empty((k, m), a.dtype)
    dp = np.empty((n, k), a.dtype)
    bg = np.empty(k, a.dtype) if start is None else start.copy()
    K.backward_products(a, d, W, g, dp, act, bg if bias else None, accumulate,
                        np.empty((2, m, k), a.dtype) if wt else None, threads)
    return g, dp, bg


def _layer(dt, n, k, m, seed=0):
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.standard_normal((n, k)), 0).astype(dt)    # a relu layer's output
    return (a, rng.standard_normal((k, m)).astype(dt), rng.standard_normal(m).astype(dt),
            rng.standard_normal((n, m)).astype(dt))


def _blocks(dt, a, W, d):
    """The products block by block as the kernels cut them, each by its own Fortran
    gemm call through scipy.linalg.blas (the same library and operand order):
    a @ W and d @ W.T in two blocks of rows, a.T @ d in two halves of its rows."""
    from scipy.linalg import blas
    gemm = blas.dgemm if dt == np.float64 else blas.sgemm
    n, k = a.shape
    cuts = ((0, _row_split(n)), (_row_split(n), n))
    rows = lambda f, ranges: np.concatenate([f(r0, r1) for r0, r1 in ranges])  # noqa: E731
    empty = lambda r0, r1, width, f: (np.zeros((0, width), dt) if r1 <= r0  # noqa: E731
                                      else f(r0, r1).T)
    z = rows(lambda r0, r1: empty(r0, r1, W.shape[1],
                                  lambda r0, r1: gemm(1.0, W.T, a[r0:r1].T)), cuts)
    g = rows(lambda r0, r1: gemm(1.0, d.T, a[:, r0:r1].T, trans_b=1).T,
             ((0, (k + 1) // 2), ((k + 1) // 2, k)))
    dp = rows(lambda r0, r1: empty(r0, r1, k, lambda r0, r1: gemm(1.0, W.T, d[r0:r1].T,
                                                                   trans_a=1)), cuts)
    dp_wt = rows(lambda r0, r1: empty(r0, r1, k, lambda r0, r1: gemm(1.0, W, d[r0:r1].T)),
                 cuts)
    return z.astype(dt), g.astype(dt), dp.astype(dt), dp_wt.astype(dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_products_do_not_depend_on_the_thread_count(products, dt, shape):
    n, k, m = shape
    a, W, b, d = _layer(dt, n, k, m)
    z, g_want, dp_want, dp_wt_want = _blocks(dt, a, W, d)
    for act in range(len(K.LAYER_FORWARD_ACTIVATIONS)):
        want = z.copy()
        K.dense_forward(want, b, act)
        for threads in (1, 2):
            np.testing.assert_array_equal(_forward(a, W, b, act, threads), want)
    for act in range(len(K.LAYER_ACTIVATIONS)):
        bias_want = {}
        for wt, dp_blocks in ((False, dp_want), (True, dp_wt_want)):
            bias_want[wt] = np.empty(k, dt)
            masked = dp_blocks.copy()
            K.dense_backward(masked, a, act, bias_want[wt])
            for threads in (1, 2):
                g, dp, bg = _backward(a, d, W, act, threads, wt)
                np.testing.assert_array_equal(g, g_want)
                np.testing.assert_array_equal(dp, masked)
                np.testing.assert_array_equal(bg, bias_want[wt])


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:-1])
def test_products_are_numpys_with_the_layer_kernels(products, dt, shape):
    if not _both_openblas():
        pytest.skip("the same sums as np.matmul are expected from OpenBLAS on both sides")
    n, k, m = shape
    a, W, b, d = _layer(dt, n, k, m)
    for act in range(len(K.LAYER_FORWARD_ACTIVATIONS)):
        want = a @ W
        K.dense_forward(want, b, act)
        np.testing.assert_array_equal(_forward(a, W, b, act, 2), want)
    for act in range(len(K.LAYER_ACTIVATIONS)):
        dp_want, bg_want = np.matmul(d, W.T), np.empty(k, dt)
        K.dense_backward(dp_want, a, act, bg_want)
        start = np.random.default_rng(1).standard_normal(k).astype(dt)
        acc_want = start.copy()
        K.dense_backward(np.matmul(d, W.T), a, act, acc_want, True)
        for wt in (False, True):
            g, dp, bg = _backward(a, d, W, act, 2, wt)
            np.testing.assert_array_equal(g, a.T @ d)
            np.testing.assert_array_equal(dp, dp_want)
            np.testing.assert_array_equal(bg, bg_want)
            np.testing.assert_array_equal(
                _backward(a, d, W, act, 2, wt, accumulate=True, start=start)[2], acc_want)


def test_products_of_empty_batches(products):
    a, W, b, d = _layer(np.float64, 0, 4, 3)
    assert _forward(a, W, b, RELU, 2).shape == (0, 3)
    g, dp, bg = _backward(a, d, W, RELU, 2, start=np.ones(4))
    np.testing.assert_array_equal(g, 0)
    np.testing.assert_array_equal(bg, 0)
    np.testing.assert_array_equal(_backward(a, d, W, RELU, 2, accumulate=True,
                                            start=np.ones(4))[2], 1)


# ---- whole training runs ---------------------------------------------------------------

def _train(dt, act, out, threads, accumulation=1, in_backward=False, weighted=False):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 12)).astype(dt)
    if out == "softmax":
        y = rng.integers(0, 5, 150)
    elif out == "logistic":
        y = (rng.random((150, 5)) > 0.5).astype(dt)
    else:
        y = rng.random((150, 5)).astype(dt)
    net = MLP([12, 40, 24, 5], act, out, dtype=dt, alpha=1e-3, seed=4)
    opt = optim.Adam([net.params_flat], lr=1e-2)
    seen = []
    inner = net._loss_grad_batch

    def spy(*a, **kw):
        seen.append(kw.get("products", False))
        return inner(*a, **kw)
    net._loss_grad_batch = spy
    if weighted:
        from fastoptim.nn._training import _Epochs
        runner = _Epochs(net, net.check_X(X), net.targets(y), opt, 32,
                         rng.random(150).astype(dt) + 0.5, grad_accumulation=accumulation,
                         step_in_backward=in_backward, kernel_threads=threads)
        with runner.threads(1):
            losses = [runner.run(np.arange(150)[::-1]) for _ in range(3)]
    else:
        losses = train(net, X, y, opt, epochs=3, batch_size=32, seed=9, progress=False,
                       blas_threads=1, kernel_threads=threads, grad_accumulation=accumulation,
                       step_in_backward=in_backward).train_loss
    return net.params_flat.copy(), losses, seen


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("act, out, accumulation, in_backward, weighted", [
    ("relu", "softmax", 1, False, False), ("relu", "softmax", 1, True, False),
    ("tanh", "identity", 2, False, False), ("sigmoid", "logistic", 3, True, False),
    ("identity", "exp", 1, True, True), ("relu", "identity", 2, True, True)])
@needs_threadpoolctl
def test_training_gives_the_same_bits_on_one_and_two_threads(
        products, dt, act, out, accumulation, in_backward, weighted):
    one = _train(dt, act, out, 1, accumulation, in_backward, weighted)
    two = _train(dt, act, out, 2, accumulation, in_backward, weighted)
    assert all(one[2]) and all(two[2])          # the compiled products ran
    np.testing.assert_array_equal(one[0], two[0])
    assert one[1] == two[1]
    if _both_openblas():                         # and NumPy's products give these bits
        _network._gemm = False
        try:
            numpy_path = _train(dt, act, out, 2, accumulation, in_backward, weighted)
        finally:
            _network._gemm = None
        assert not any(numpy_path[2])
        np.testing.assert_array_equal(numpy_path[0], one[0])
        assert numpy_path[1] == one[1]


@needs_threadpoolctl
def test_products_only_where_every_blas_is_at_one_thread(products, monkeypatch):
    X = np.random.default_rng(0).standard_normal((64, 6))
    y = np.arange(64) % 3

    def used(**kw):
        net = MLP([6, 8, 3], dtype=np.float64, seed=0)
        seen = []
        inner = net._loss_grad_batch
        net._loss_grad_batch = lambda *a, **k: seen.append(k["products"]) or inner(*a, **k)
        train(net, X, y, optim.SGD([net.params_flat], lr=0.1), epochs=1, batch_size=32,
              progress=False, **kw)
        return set(seen)
    assert used(blas_threads=1) == {True}
    assert used(blas_threads=None) == {False}       # the user's BLAS setting is kept
    if _training._get_controller() is not False and \
            _training._blas_max_threads(_training._get_controller()) > 1:
        assert used(blas_threads=2) == {False}
    def untimed(*a):
        raise AssertionError("BLAS's threads timed")
    monkeypatch.setattr(_training, "_measured_blas_threads", untimed)
    assert used() == {True}             # "auto": our threads, BLAS's not even timed
    monkeypatch.setattr(_network, "_gemm", False)
    monkeypatch.setattr(_training, "_measured_blas_threads", lambda *a: 1)
    assert used() == {False}            # no compiled products: BLAS's timed as before


# ---- without scipy: NumPy's products -------------------------------------------------

@needs_threadpoolctl
def test_without_scipy_the_network_keeps_numpys_products(monkeypatch):
    X = np.random.default_rng(0).standard_normal((100, 6))
    y = np.arange(100) % 3
    fits = {}
    for scipy_there in (False, True):
        if not scipy_there:
            monkeypatch.setitem(sys.modules, "scipy.linalg.cython_blas", None)  # no import
            monkeypatch.setattr(_network, "_gemm", None)
            assert _network._load_gemm() is False
            assert not _network._gemm_ready()
        else:
            monkeypatch.undo()
            assert _network._gemm_ready()
        seen = []
        net = MLP([6, 16, 3], dtype=np.float64, seed=0)
        inner = net._loss_grad_batch
        net._loss_grad_batch = lambda *a, **k: seen.append(k["products"]) or inner(*a, **k)
        train(net, X, y, optim.Adam([net.params_flat], lr=1e-2), epochs=2, batch_size=32,
              seed=0, progress=False, blas_threads=1)
        fits[scipy_there] = (net.params_flat.copy(), set(seen))
    assert fits[False][1] == {False} and fits[True][1] == {True}
    if _both_openblas():
        np.testing.assert_array_equal(fits[False][0], fits[True][0])


@pytest.fixture
def reload_gemm():
    yield
    from scipy.linalg import cython_blas
    capi = cython_blas.__pyx_capi__
    assert K.gemm_load(capi["dgemm"], capi["sgemm"]) is True


def test_gemm_load_refuses_unexpected_capsules(reload_gemm):
    from scipy.linalg import cython_blas
    capi = cython_blas.__pyx_capi__
    with pytest.raises(TypeError, match="dgemm_capsule"):
        K.gemm_load(object(), capi["sgemm"])
    with pytest.raises(TypeError, match="sgemm_capsule"):
        K.gemm_load(capi["dgemm"], None)
    assert K.gemm_load(capi["sgemm"], capi["dgemm"]) is False       # swapped
    assert K.gemm_load(capi["dgemm"], capi["dgemv"]) is False
    # a refused load keeps what was loaded (a call in flight may be using it)
    assert K.gemm_ready()
    a, W, b, d = _layer(np.float64, 4, 3, 2)
    np.testing.assert_array_equal(_forward(a, W, b, RELU, 1), np.maximum(a @ W + b, 0))


# ---- the kernels' own checks ---------------------------------------------------------

def _bad_product_calls(a, W, b, d, z, g, dp, bg, wt, wt2):
    g2 = np.zeros((2, 3, 8))
    f32 = a.astype(np.float32)
    ro = z.copy()
    ro.flags.writeable = False
    fwd, bwd = K.dense_forward_product, K.backward_products
    return [
        (TypeError, lambda: fwd(a.tolist(), W, b, z, RELU)),
        (TypeError, lambda: fwd(None, W, b, z, RELU)),
        (TypeError, lambda: fwd(a, W, b, None, RELU)),
        (TypeError, lambda: fwd(a, W.astype(np.float32), b, z, RELU)),
        (TypeError, lambda: fwd(f32, W, b, z, RELU)),
        (TypeError, lambda: fwd(a.astype(">f8"), W, b, z, RELU)),
        (TypeError, lambda: fwd(a, W, b, z, 1.0)),
        (ValueError, lambda: fwd(a, W, b, z, 2)),
        (ValueError, lambda: fwd(a, W[:2], b, z, RELU)),           # inputs don't match
        (ValueError, lambda: fwd(a, W, b[:1], z, RELU)),
        (ValueError, lambda: fwd(a, W, b, z[:3], RELU)),
        (ValueError, lambda: fwd(a, W, b, ro, RELU)),
        (ValueError, lambda: fwd(a, W, b, np.asfortranarray(z), RELU)),
        (ValueError, lambda: fwd(a[:, ::-1], W, b, z, RELU)),
        (ValueError, lambda: fwd(a.ravel(), W, b, z, RELU)),
        (ValueError, lambda: fwd(a, W, b, a.ravel()[:15].reshape(5, 3), RELU)),  # z in a
        (ValueError, lambda: fwd(a, W, z[0], z, RELU)),              # bias inside z
        (ValueError, lambda: fwd(a, W, b, z, RELU, 0)),
        (TypeError, lambda: fwd(a, W, b, z, RELU, "2")),
        (TypeError, lambda: bwd(a, d, W, g, dp, RELU, bg, 1)),         # accumulate
        (TypeError, lambda: bwd(a, None, W, g, dp, RELU)),
        (TypeError, lambda: bwd(a, d, W, None, dp, RELU)),
        (TypeError, lambda: bwd(a, d.astype(np.float32), W, g, dp, RELU)),
        (ValueError, lambda: bwd(a, d, W, g, dp, 4)),
        (ValueError, lambda: bwd(a, d[:3], W, g, dp, RELU)),
        (ValueError, lambda: bwd(a, d, W.T.copy(), g, dp, RELU)),
        (ValueError, lambda: bwd(a, d, W, g.T.copy(), dp, RELU)),
        (ValueError, lambda: bwd(a, d, W, g, dp[:, :2], RELU)),
        (ValueError, lambda: bwd(a, d, W, g, dp, RELU, bg[:2])),
        (ValueError, lambda: bwd(a, d, W, g, dp, RELU, bg, False, wt)),    # one copy
        (ValueError, lambda: bwd(a, d, W, g, dp, RELU, bg, False, g2[:, :, ::2])),
        (ValueError, lambda: bwd(a, d, W, g, a, RELU)),               # dp is a
        (ValueError, lambda: bwd(a, d, W, g, dp, RELU, dp[0])),       # bias_grad in dp
        (ValueError, lambda: bwd(a, d, W, W, dp, RELU)),              # grad is W
        (ValueError, lambda: bwd(a, d, W, g, dp, RELU, bg, False, dp.reshape(2, 10))),
        (TypeError, lambda: bwd(a, d, W, g, dp, RELU, bg, False, wt2.astype(np.float32))),
        (TypeError, lambda: bwd(a, d, W, g, dp, RELU, bg, False, 1)),
        (ValueError, lambda: bwd(a, d, W, g, None, RELU, bg)),        # bias_grad, no dp
        (ValueError, lambda: bwd(a, d, W, g, None, RELU, None, False, wt2)),
        (ValueError, lambda: bwd(a, d, W, g, dp, RELU, n_threads=-1)),
    ]


def _product_arrays(dt=np.float64, n=5, k=4, m=3):
    a, W, b, d = _layer(dt, n, k, m)
    return (a, W, b, d, np.zeros((n, m), dt), np.zeros((k, m), dt), np.zeros((n, k), dt),
            np.zeros(k, dt), np.zeros((m, k), dt), np.zeros((2, m, k), dt))


@pytest.mark.parametrize("case", range(len(_bad_product_calls(*_product_arrays()))))
def test_products_refuse_bad_input_and_change_nothing(products, case):
    arrays = _product_arrays()
    before = [x.copy() for x in arrays]
    exc, call = _bad_product_calls(*arrays)[case]
    with pytest.raises(exc):
        call()
    for x, x0 in zip(arrays, before):
        np.testing.assert_array_equal(x, x0)
