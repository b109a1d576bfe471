"""The compiled layer kernels (fastoptim/_kernels_layers.pxi) against the NumPy reference
path of fastoptim.nn.MLP, stepping inside backward, gradient accumulation, BLAS threads.

Tolerances: where the kernels do the same operations as NumPy (bias add, relu, identity,
the activation derivatives, the deltas of an identity output, the L2 fold) the results
are compared bit for bit.  The output layer's exp/log/log1p come from libm in the kernel
and from NumPy's SIMD code in the reference (each within an ulp or two of exact), and
column sums (bias gradients) and losses are summed in double in a fixed order by the
kernel but in the array's dtype by BLAS/NumPy: those are compared to a few units of the
dtype's epsilon relative to the largest value (16 eps)."""

import numpy as np
import pytest

import fastoptim
from fastoptim import optim
from fastoptim._backend import kernels as K
from fastoptim.nn import MLP, MLPClassifier, MLPRegressor, train
from fastoptim.nn import _training

DTYPES = [np.float32, np.float64]
ACTS = ["relu", "tanh", "sigmoid", "identity"]
OUTS = ["softmax", "logistic", "identity", "exp"]


def _problem(out, dt, n=45, d=7, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dt)
    if out == "softmax":
        y = rng.integers(0, k, n)
    elif out == "logistic":
        y = (rng.random((n, k)) > 0.5).astype(dt)
    else:
        y = rng.random((n, k)).astype(dt) * 2
    return X, y


def _grads(net, X, Y, w=None, fused=True):
    net.fused = fused
    v = net._get_views(X.shape[0])
    loss = net._loss_grad_batch(X, Y, v, w)
    return loss, net.grads_flat.copy()


def _close(a, b, dt):
    scale = max(float(np.max(np.abs(b))), 1e-30)
    assert float(np.max(np.abs(a - b))) <= 16 * np.finfo(dt).eps * scale


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("out", OUTS)
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_path_matches_numpy_path(dt, act, out, weighted):
    X, y = _problem(out, dt)
    net = MLP([7, 9, 6, 4], act, out, dtype=dt, alpha=0.01, seed=3)
    Y = net.targets(y)
    w = np.random.default_rng(5).random(X.shape[0]).astype(dt) + 0.5 if weighted else None
    loss_k, g_k = _grads(net, X, Y, w, fused=True)
    loss_r, g_r = _grads(net, X, Y, w, fused=False)
    nw = net.n_weights
    if out == "identity":      # same operations up to the weight gradients: same bits
        np.testing.assert_array_equal(g_k[:nw], g_r[:nw])
    _close(g_k, g_r, dt)
    assert abs(loss_k - loss_r) <= 16 * np.finfo(dt).eps * abs(loss_r)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_forward_activations_same_bits_as_numpy(dt, act):
    X, _ = _problem("identity", dt)
    X[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    net = MLP([7, 9, 6, 4], act, "identity", dtype=dt, seed=3)
    v = net._get_views(X.shape[0])       # (forward() refuses NaN input)
    out_k = [a.copy() for a in (net._forward(X, v), *v.acts)]
    net.fused = False
    out_r = [a.copy() for a in (net._forward(X, v), *v.acts)]
    for a, b in zip(out_k, out_r):
        np.testing.assert_array_equal(a, b)        # NaN in the same places too


@pytest.mark.parametrize("dt", DTYPES)
def test_relu_kernel_is_numpy_maximum_bit_for_bit(dt):
    z = np.array([[np.nan, -0.0, 0.0, -1.0, 2.5, np.inf, -np.inf, 1e-45]], dtype=dt)
    b = np.zeros(z.shape[1], dtype=dt)
    got = z.copy()
    K.dense_forward(got, b, K.LAYER_ACTIVATIONS.index("relu"))
    want = np.maximum(z + b, np.zeros_like(z))
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("out", OUTS)
def test_predictions_and_loss_match_numpy_path(dt, out):
    X, y = _problem(out, dt, n=700)      # several chunks of the prediction buffers
    net = MLP([7, 9, 4], "tanh", out, dtype=dt, alpha=0.1, seed=1)
    Y = net.targets(y)
    p_k, l_k = net.forward(X), net.loss(X, Y)
    net.fused = False
    p_r, l_r = net.forward(X), net.loss(X, Y)
    _close(p_k, p_r, dt)
    assert abs(l_k - l_r) <= 64 * np.finfo(dt).eps * abs(l_r)


@pytest.fixture
def parallel_everywhere():
    old = K.get_layer_parallel_min_work()
    K.set_layer_parallel_min_work(0)
    yield
    K.set_layer_parallel_min_work(old)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("out", OUTS)
def test_results_do_not_depend_on_thread_count(dt, out, parallel_everywhere):
    X, y = _problem(out, dt, n=203)       # 13 row blocks, the last one short
    net = MLP([7, 33, 4], "relu", out, dtype=dt, alpha=0.01, seed=2)
    Y = net.targets(y)
    w = np.random.default_rng(1).random(203).astype(dt)
    runs = []
    for threads in (1, 2, 3):
        fastoptim.set_num_threads(threads)
        try:
            runs.append(_grads(net, X, Y, w))
        finally:
            fastoptim.set_num_threads(None)
    for loss, g in runs[1:]:
        assert loss == runs[0][0]
        np.testing.assert_array_equal(g, runs[0][1])


# ---- the kernels' own checks ---------------------------------------------------------

def _arrays(dt=np.float64, n=5, m=3):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, m)).astype(dt)
    return z, rng.random((n, m)).astype(dt), np.zeros(m, dt), np.empty((n, m), dt)


def _bad_calls():
    z, Y, b, d = _arrays()
    f32 = z.astype(np.float32)
    ro = z.copy()
    ro.flags.writeable = False
    return [
        (TypeError, lambda: K.dense_forward(z.tolist(), b, 1)),
        (TypeError, lambda: K.dense_forward(z, b.astype(np.float32), 1)),
        (TypeError, lambda: K.dense_forward(z.astype(np.int64), b, 1)),
        (TypeError, lambda: K.dense_forward(z.astype(">f8"), b, 1)),
        (TypeError, lambda: K.dense_forward(np.ma.masked_array(z), b, 1)),
        (TypeError, lambda: K.dense_forward(z, b, 1.0)),
        (TypeError, lambda: K.dense_forward(z, b, True)),
        (ValueError, lambda: K.dense_forward(z, b, 2)),        # tanh: NumPy's, not here
        (ValueError, lambda: K.dense_forward(z, b, -1)),
        (ValueError, lambda: K.dense_forward(z, b[:2], 1)),
        (ValueError, lambda: K.dense_forward(z[:, ::-1], b, 1)),
        (ValueError, lambda: K.dense_forward(z.T.copy().T, b, 1)),
        (ValueError, lambda: K.dense_forward(ro, b, 1)),
        (ValueError, lambda: K.dense_forward(z.ravel(), b, 1)),
        (ValueError, lambda: K.dense_forward(z, z[0], 1)),      # bias inside z
        (ValueError, lambda: K.dense_forward(z, b, 1, 0)),
        (TypeError, lambda: K.dense_forward(z, b, 1, "2")),
        (ValueError, lambda: K.dense_backward(d, z[:4], 1)),
        (ValueError, lambda: K.dense_backward(d, d, 1)),         # a is d
        (ValueError, lambda: K.dense_backward(d, z, 1, d[0])),   # bias_grad inside d
        (TypeError, lambda: K.dense_backward(d, z, 1, b, accumulate=1)),
        (ValueError, lambda: K.dense_backward(d, z, 4)),
        (TypeError, lambda: K.dense_backward(f32, z, 1)),
        (ValueError, lambda: K.output_forward(z, 4)),
        (ValueError, lambda: K.output_backward(z, Y, None, 0.0, 0, d, b)),
        (ValueError, lambda: K.output_backward(z, Y, None, float("nan"), 0, d, b)),
        (ValueError, lambda: K.output_backward(z, Y, None, float("inf"), 0, d, b)),
        (ValueError, lambda: K.output_backward(z, Y[:4], None, 5.0, 0, d, b)),
        (ValueError, lambda: K.output_backward(z, Y, np.ones(4), 5.0, 0, d, b)),
        (TypeError, lambda: K.output_backward(z, Y, np.ones(5, np.float32), 5.0, 0, d, b)),
        (ValueError, lambda: K.output_backward(z, Y, None, 5.0, 0, z, b)),   # d is z
        (ValueError, lambda: K.output_backward(z, Y, None, 5.0, 0, Y, b)),   # d is Y
        (ValueError, lambda: K.output_backward(z, Y, None, 5.0, 0, d, d[0])),
        (ValueError, lambda: K.output_backward(z[:, :0], Y[:, :0], None, 5.0, 0,
                                               d[:, :0], b[:0])),
        (TypeError, lambda: K.axpy_sumsq(z, None, 1.0)),
        (ValueError, lambda: K.axpy_sumsq(z, z[:4], 1.0)),
        (ValueError, lambda: K.axpy_sumsq(z, z, 1.0)),
        (ValueError, lambda: K.axpy_sumsq(ro, z, 1.0)),
        (ValueError, lambda: K.axpy_sumsq(z[:, ::2], Y[:, ::2], 1.0)),
        (TypeError, lambda: K.axpy_sumsq(f32, z, 1.0)),
        (TypeError, lambda: K.take_rows(z, [0, 1], d[:2])),
        (TypeError, lambda: K.take_rows(z, np.array([0, 1], np.int32), d[:2])),
        (ValueError, lambda: K.take_rows(z, np.array([0, 5]), d[:2])),
        (ValueError, lambda: K.take_rows(z, np.array([0, -1]), d[:2])),
        (ValueError, lambda: K.take_rows(z, np.array([0, 1]), d[:3])),
        (ValueError, lambda: K.take_rows(z, np.array([0, 1]), z[:2])),       # out inside src
        (TypeError, lambda: K.take_rows(z, np.array([0, 1]), f32[:2])),
        (ValueError, lambda: K.take_rows(z, np.array([0, 1]), ro[:2])),
        (ValueError, lambda: K.transpose_into(z, d)),                        # not (m, n)
        (ValueError, lambda: K.transpose_into(z, z.T)),                      # not C-contiguous
        (TypeError, lambda: K.transpose_into(z, f32.T.copy())),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_kernels_refuse_bad_input_and_change_nothing(case):
    z, Y, b, d = _arrays()
    before = [a.copy() for a in (z, Y, b)]
    exc, call = _bad_calls()[case]
    with pytest.raises(exc):
        call()
    for a, a0 in zip(_arrays()[:3], before):
        np.testing.assert_array_equal(a, a0)


def test_kernels_accept_empty_batches():
    z, Y, b, d = (a[:0] if a.ndim == 2 else a for a in _arrays())
    g = np.ones(3)
    assert K.output_backward(z, Y, None, 1.0, 0, d, g) == 0.0
    np.testing.assert_array_equal(g, 0)
    K.dense_backward(d, z, 1, g, accumulate=True)
    np.testing.assert_array_equal(g, 0)


# ---- the optimizer step inside backward ----------------------------------------------

OPTIMIZERS = [
    (optim.SGD, dict(lr=0.05)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (optim.Momentum, dict(lr=0.05, dampening=0.1)),
    (optim.RMSprop, dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3)),
    (optim.Adam, dict(lr=1e-2)),
    (optim.Adam, dict(lr=1e-2, amsgrad=True, weight_decay=1e-3, maximize=False)),
    (optim.AdamW, dict(lr=1e-2)),
]


def _train(dt, cls, kw, **options):
    X, y = _problem("softmax", dt, n=130, d=8, k=5, seed=4)
    net = MLP([8, 16, 12, 5], "relu", "softmax", dtype=dt, alpha=1e-3, seed=0)
    opt = cls([net.params_flat], **kw)
    split = []
    original = opt._piecewise_step

    def spy(*args):
        r = original(*args)
        split.append(r is not None)
        return r
    opt._piecewise_step = spy
    hist = train(net, X, y, opt, epochs=3, batch_size=20, seed=0, progress=False, **options)
    del opt._piecewise_step
    return net, opt, hist, split


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("cls,kw", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", ""))
def test_step_in_backward_gives_the_bits_of_stepping_after(dt, cls, kw):
    net_a, opt_a, hist_a, split_a = _train(dt, cls, kw, step_in_backward=False)
    net_b, opt_b, hist_b, split_b = _train(dt, cls, kw, step_in_backward=True)
    assert not any(split_a)
    assert split_b[0] is False and all(split_b[1:])    # the first step creates state
    np.testing.assert_array_equal(net_a.params_flat, net_b.params_flat)
    assert hist_a.train_loss == hist_b.train_loss
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa[0]["step"] == sb[0]["step"] == 21
    for k in sa[0]:
        np.testing.assert_array_equal(sa[0][k], sb[0][k])


def test_step_in_backward_turns_itself_off_where_it_must():
    class NotDeclared(optim.Adam):     # a subclass may add non-element-wise terms
        pass
    for opt_kw, cls in ((dict(nonfinite="raise"), optim.Adam),
                        (dict(nonfinite="skip"), optim.SGD), ({}, NotDeclared)):
        _, _, _, split = _train(np.float32, cls, dict(lr=1e-3, **opt_kw), step_in_backward=True)
        assert not any(split)
    net = MLP([3, 4, 2], seed=0)
    two = optim.Adam([net.coefs[0], net.intercepts[0]])
    assert two._piecewise_step(net.grads_flat, net._layer_pieces) is None


def test_step_in_backward_survives_pickling_the_optimizer():
    import pickle
    net, opt, _, _ = _train(np.float64, optim.Adam, dict(lr=1e-2), step_in_backward=True)
    opt2 = pickle.loads(pickle.dumps(opt))
    assert "_pieces" not in opt2.__dict__


def test_step_in_backward_auto_follows_the_parameter_size(monkeypatch):
    net = MLP([8, 16, 5], seed=0)
    opt = optim.Adam([net.params_flat])
    assert _training._step_in_backward("auto", net, opt) is False
    monkeypatch.setattr(_training, "_STEP_IN_BACKWARD_MIN_BYTES", net.params_flat.nbytes)
    assert _training._step_in_backward("auto", net, opt) is True
    net.fused = False
    assert _training._step_in_backward(True, net, opt) is False


@pytest.mark.parametrize("value", ["yes", None, 1, 0.5])
def test_step_in_backward_values_are_checked(value):
    net = MLP([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match="step_in_backward"):
        train(net, np.ones((4, 3)), np.array([0, 1, 0, 1]), optim.Adam([net.params_flat]),
              step_in_backward=value)


# ---- gradient accumulation -----------------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("parts", [2, 3, 7])
def test_accumulated_micro_batches_give_the_big_batch_gradient(dt, weighted, parts):
    X, y = _problem("softmax", dt, n=40, d=7, k=4)
    net = MLP([7, 9, 6, 4], "tanh", "softmax", dtype=dt, alpha=0.05, seed=3)
    Y = net.targets(y)
    w = np.random.default_rng(2).random(40).astype(dt) + 0.1 if weighted else None
    loss_big, g_big = _grads(net, X, Y, w)
    total = 40 if w is None else float(np.add.reduce(w, dtype=np.float64))
    loss = 0.0
    for j in range(parts):
        lo, hi = 40 * j // parts, 40 * (j + 1) // parts
        loss += net._loss_grad_batch(X[lo:hi], Y[lo:hi], net._get_views(hi - lo),
                                     None if w is None else w[lo:hi], total=total,
                                     accumulate=j > 0, penalty=j == parts - 1)
    _close(net.grads_flat, g_big, dt)
    assert abs(loss - loss_big) <= 16 * np.finfo(dt).eps * abs(loss_big)


@pytest.mark.parametrize("dt", DTYPES)
def test_train_with_grad_accumulation_follows_the_big_batch_run(dt):
    _, y = _problem("softmax", dt)
    X, y = _problem("softmax", dt, n=130, d=8, k=5, seed=4)
    runs = []
    for k in (1, 4):
        net = MLP([8, 16, 5], dtype=dt, alpha=1e-3, seed=0)
        train(net, X, y, optim.Adam([net.params_flat], lr=1e-2), epochs=2, batch_size=32,
              seed=0, grad_accumulation=k, progress=False)
        runs.append(net.params_flat.copy())
        if k > 1:
            assert net._capacity == 8         # buffers for one micro-batch only
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-4 if dt == np.float32
                               else 1e-10)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_estimators_take_the_options():
    X, y = _problem("softmax", np.float64, n=60, d=5, k=3)
    a = MLPClassifier((8,), max_iter=3, random_state=0, batch_size=20).fit(X, y)
    b = MLPClassifier((8,), max_iter=3, random_state=0, batch_size=20,
                      grad_accumulation=3, step_in_backward=True).fit(X, y)
    np.testing.assert_allclose(b.net_.params_flat, a.net_.params_flat, atol=1e-10)
    assert b.get_params()["grad_accumulation"] == 3
    r = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, grad_accumulation=2, random_state=0)
    r.fit(X, X[:, 0])
    for bad in (dict(grad_accumulation=0), dict(grad_accumulation=1.5),
                dict(step_in_backward="no"), dict(step_in_backward=None)):
        with pytest.raises(ValueError):
            MLPClassifier((4,), max_iter=2, **bad).fit(X, y)


# ---- BLAS threads by measurement -----------------------------------------------------

class _FakeController:
    def __init__(self, threads):
        self.threads = threads

    def info(self):
        return [{"user_api": "blas", "num_threads": self.threads}]


@pytest.mark.parametrize("one,many,want", [(1.0, 0.5, None), (1.0, 0.95, 1), (1.0, 3.0, 1)])
def test_blas_threads_are_chosen_by_timing(monkeypatch, one, many, want):
    net = MLP([64, 128, 64, 10], seed=0)
    timed = []

    def fake(net_, rows, controller, threads, repeats):
        timed.append(threads)
        return one if threads == 1 else many
    monkeypatch.setattr(_training, "_time_products", fake)
    monkeypatch.setattr(_training, "_blas_choice", {})
    ctl = _FakeController(2)
    assert _training._measured_blas_threads(net, 64, ctl) == want
    assert set(timed) == {1, 2}
    n = len(timed)
    assert _training._measured_blas_threads(net, 64, ctl) == want   # cached
    assert len(timed) == n
    assert _training._measured_blas_threads(net, 64, _FakeController(1)) is None
    tiny = MLP([4, 5, 3], seed=0)
    assert _training._measured_blas_threads(tiny, 8, ctl) == 1
    assert len(timed) == n                                          # not timed


def test_blas_timing_runs_the_products():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    net = MLP([16, 32, 4], seed=0)
    t = _training._time_products(net, 8, threadpoolctl.ThreadpoolController(), 1, 2)
    assert 0 < t < 1


# ---- the training loop against its operations one by one --------------------------

def _sumsq_four_lanes(x, block=4096):
    """sum(x * x) in axpy_sumsq's documented order (fastoptim/_layers.h), in NumPy."""
    x = x.ravel().astype(np.float64)
    total = 0.0
    for b in range(0, x.size, block):
        part = x[b:b + block]
        body = part.size // 4 * 4
        lanes = [0.0] * 4
        for k in range(4):
            for value in part[k:body:4]:
                lanes[k] += value * value
        for value in part[body:]:
            lanes[0] += value * value
        total += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    return total


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 64, 4099, 8195])
def test_axpy_sumsq_bits(dt, n):
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n).astype(dt), rng.standard_normal(n).astype(dt)
    got = y.copy()
    s = K.axpy_sumsq(got, x, 0.3)
    np.testing.assert_array_equal(got, y + dt(0.3) * x)     # c rounded first, as NumPy
    assert s == _sumsq_four_lanes(x)


@pytest.mark.parametrize("dt", DTYPES)
def test_take_rows_and_transpose_into_copy_exactly(dt):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 7)).astype(dt)
    rows = rng.permutation(50)[:13]
    out = np.empty((13, 7), dt)
    K.take_rows(X, rows, out)
    np.testing.assert_array_equal(out, X[rows])
    K.take_rows(X, rows[::2], out[:7])                         # strided indices
    np.testing.assert_array_equal(out[:7], X[rows[::2]])
    # several strips of a cache line (8 doubles, 16 floats), partial ones, edges
    for shape in [(13, 7), (8, 16), (1, 5), (0, 3), (37, 21), (12, 40), (130, 67)]:
        W = rng.standard_normal(shape).astype(dt)
        Wt = np.empty(shape[::-1], dt)
        K.transpose_into(W, Wt)
        np.testing.assert_array_equal(Wt, W.T)


def _epochs_one_call_at_a_time(net, X, Y, opt, epochs, batch_size, seed):
    """What train() does, written out as one plain call per operation: fancy-indexed
    batches, np.matmul with the transposed weights as given, the kernels one layer at a
    time, the L2 term in NumPy.  Returns the epoch losses."""
    relu, identity = K.LAYER_ACTIVATIONS.index("relu"), K.LAYER_ACTIVATIONS.index("identity")
    hidden = relu if net.activation == "relu" else identity
    last = net.n_layers - 1
    rng = np.random.default_rng(seed)
    order = np.arange(X.shape[0])
    losses = []
    for _ in range(epochs):
        rng.shuffle(order)
        epoch = 0.0
        for start in range(0, X.shape[0], batch_size):
            idx = order[start:start + batch_size]
            n = idx.size
            acts = [X[idx]]
            for i, (W, b) in enumerate(zip(net.coefs, net.intercepts)):
                z = np.matmul(acts[-1], W)
                K.dense_forward(z, b, hidden if i < last else identity)
                if i < last and net.activation == "tanh":
                    np.tanh(z, out=z)
                acts.append(z)
            d = np.empty_like(acts[-1])
            loss = K.output_backward(acts[-1], Y[idx], None, float(n),
                                     K.LAYER_OUTPUTS.index(net.output), d,
                                     net.intercept_grads[-1]) / n
            sumsq = 0.0
            for i in range(last, -1, -1):
                W = net.coefs[i]
                net.coef_grads[i][...] = np.matmul(acts[i].T, d)
                net.coef_grads[i] += W * (net.alpha / n)
                sumsq += _sumsq_four_lanes(W)
                if i:
                    d = np.matmul(d, W.T)
                    K.dense_backward(d, acts[i], K.LAYER_ACTIVATIONS.index(net.activation),
                                     net.intercept_grads[i - 1])
            loss += 0.5 * net.alpha / n * sumsq
            opt.step([net.grads_flat])
            epoch += loss * n
        losses.append(epoch / X.shape[0])
    return losses


@pytest.mark.parametrize("dt, act, out", [(np.float64, "relu", "softmax"),
                                          (np.float32, "relu", "softmax"),
                                          (np.float64, "tanh", "identity"),
                                          (np.float32, "relu", "logistic")])
def test_training_loop_gives_the_bits_of_its_operations_one_by_one(dt, act, out):
    X, y = _problem(out, dt, n=150, d=12, k=5)           # a short last batch
    sizes = [12, 40, 24, 5]
    runs = []
    for loop in (True, False):
        net = MLP(sizes, act, out, dtype=dt, alpha=1e-3, seed=4)
        opt = optim.Adam([net.params_flat], lr=1e-2)
        Y = net.targets(y)
        if loop:
            losses = train(net, X, Y, opt, epochs=3, batch_size=32, seed=9, progress=False,
                           blas_threads=None, step_in_backward=False).train_loss
        else:
            losses = _epochs_one_call_at_a_time(net, X, Y, opt, 3, 32, 9)
        runs.append((net.params_flat.copy(), losses))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


# ---- accuracy unchanged --------------------------------------------------------------

@pytest.mark.parametrize("dt", DTYPES)
def test_digits_accuracy_median_of_five_seeds_unchanged(dt):
    from fastoptim.datasets import load_digits, train_test_split
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split((X / 16.0).astype(dt), y, test_size=0.2,
                                          random_state=0)
    acc = {True: [], False: []}
    fastoptim.set_num_threads(1)     # same bits; quicker on a busy machine
    try:
        _digits_runs(acc, Xtr, Xte, ytr, yte, dt)
    finally:
        fastoptim.set_num_threads(None)
    assert abs(np.median(acc[True]) - np.median(acc[False])) <= 0.003


def _digits_runs(acc, Xtr, Xte, ytr, yte, dt):
    for fused in (True, False):
        for seed in range(5):
            net = MLP([64, 128, 64, 10], dtype=dt, alpha=1e-4, seed=seed)
            net.fused = fused
            train(net, Xtr, ytr, optim.Adam([net.params_flat], lr=1e-3), epochs=30,
                  batch_size=64, seed=seed, progress=False)
            acc[fused].append(float(np.mean(net.forward(Xte).argmax(1) == yte)))


# ---- fastoptim's own kernel threads in the training loop ---------------------------

@pytest.fixture
def two_kernel_threads(monkeypatch):
    """fastoptim's default at two threads and no kernel-thread choice made yet."""
    before = fastoptim._backend._default_n_threads
    fastoptim.set_num_threads(2)
    if fastoptim.get_num_threads() < 2:
        fastoptim.set_num_threads(before)
        pytest.skip("one usable core")
    monkeypatch.setattr(_training, "_kernel_choice", {})
    yield
    fastoptim.set_num_threads(before)


def _spied(net, opt):
    """Record the layer kernels' n_threads per batch and the optimizer's at each step."""
    layers, steps = [], []
    inner, step = net._loss_grad_batch, opt.step

    def loss_grad(*a, n_threads=None, **kw):
        layers.append(n_threads)
        return inner(*a, n_threads=n_threads, **kw)

    def spy_step(*a, **kw):
        steps.append(opt.n_threads)
        return step(*a, **kw)
    net._loss_grad_batch, opt.step = loss_grad, spy_step
    return layers, steps


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("make_opt, in_backward, accumulation", [
    (lambda p: optim.Adam(p, lr=1e-2), False, 1), (lambda p: optim.Adam(p, lr=1e-2), True, 1),
    (lambda p: optim.SGD(p, lr=0.05, momentum=0.9), True, 1),
    (lambda p: optim.RMSprop(p, lr=1e-3), False, 2)])
def test_kernel_threads_do_not_change_the_results(two_kernel_threads, dt, make_opt,
                                                  in_backward, accumulation):
    X, y = _problem("softmax", dt, n=400, d=9, k=5)
    results, used = [], set()
    for threads in ("auto", 1, 2, None):
        net = MLP([9, 48, 40, 5], "relu", "softmax", dtype=dt, alpha=1e-3, seed=0)
        opt = make_opt([net.params_flat])
        layers, steps = _spied(net, opt)
        train(net, X, y, opt, epochs=2, batch_size=64 * accumulation, seed=0,
              kernel_threads=threads, step_in_backward=in_backward, blas_threads=1,
              grad_accumulation=accumulation)
        used.update(layers)
        assert opt.n_threads is None                  # put back
        # the step ran with the layers' count (the micro-batches of a batch: one count)
        assert layers[accumulation::accumulation][:len(steps) - 1] == steps[1:]
        assert layers[::accumulation] == layers[accumulation - 1::accumulation]
        results.append(net.params_flat.copy())
    assert used >= {1, 2}                             # the trial ran both
    for r in results[1:]:
        assert np.array_equal(r, results[0])


_TRIAL_BATCHES = 1 + 2 * _training._KERNEL_TRIAL_ROUNDS * _training._KERNEL_TRIAL_BLOCK


@pytest.mark.parametrize("one, many, want, batches", [
    (1.0, 0.5, 2, _TRIAL_BATCHES), (1.0, 0.93, 2, _TRIAL_BATCHES), (1.0, 0.95, 1, _TRIAL_BATCHES),
    (1.0, 3.0, 1, 1 + _training._KERNEL_TRIAL_BLOCK + 2)])  # (stops at one thread's first timed)
def test_kernel_thread_trial_chooses_by_timing(one, many, want, batches):
    trial = _training._ThreadTrial(2)
    counts = []
    while True:
        counts.append(trial.next_count())
        if trial.record(one if counts[-1] == 1 else many):
            break
    assert len(counts) == batches and counts[0] == 1 and set(counts) == {1, 2}
    assert trial.choice() == want


def test_kernel_thread_trial_goes_by_the_typical_batch_not_the_best():
    # two threads: the best batch twice as fast, most batches slower than one thread's
    trial = _training._ThreadTrial(2)
    many_times = iter([0.5] + [1.5] * 20)
    while not trial.record(1.0 if trial.next_count() == 1 else next(many_times)):
        pass
    assert trial.choice() == 1


def test_kernel_threads_are_chosen_once_then_kept(two_kernel_threads):
    X, y = _problem("softmax", np.float64, n=64 * 20, d=9, k=5)
    counts = []
    for _ in range(2):
        net = MLP([9, 16, 5], seed=0, dtype=np.float64)
        opt = optim.Adam([net.params_flat])
        layers, _ = _spied(net, opt)
        train(net, X, y, opt, epochs=2, batch_size=64, seed=0, blas_threads=1)
        counts.append(layers)
    (key, choice), = _training._kernel_choice.items()
    assert key == ((9, 16, 5), 64, "<f8", "Adam", 2, True)      # True: net.fused
    assert set(counts[0][:_TRIAL_BATCHES]) == {1, 2}
    assert set(counts[0][_TRIAL_BATCHES:]) == {choice}
    assert set(counts[1]) == {choice}                 # from the cache: no trial


def test_kernel_threads_keep_the_optimizers_own_count_and_come_back(two_kernel_threads):
    X, y = _problem("softmax", np.float64, n=200)
    net = MLP([7, 8, 4], seed=0, dtype=np.float64)
    opt = optim.Adam([net.params_flat], n_threads=2)
    layers, steps = _spied(net, opt)
    train(net, X, y, opt, epochs=1, batch_size=20, kernel_threads=1)
    assert set(layers) == {1} and set(steps) == {2} and opt.n_threads == 2
    opt = optim.Adam([net.params_flat])     # a failing run puts the count back too
    layers, steps = _spied(net, opt)

    def lr_fn(seen):
        if seen >= 60:
            raise KeyboardInterrupt
        return 1e-3
    with pytest.raises(KeyboardInterrupt):
        train(net, X, y, opt, epochs=3, batch_size=20, kernel_threads=1, lr_fn=lr_fn)
    assert len(steps) == 3 and set(steps) == {1} and opt.n_threads is None


def test_estimators_take_kernel_threads(two_kernel_threads):
    X, y = _problem("softmax", np.float64, n=300, d=9, k=5)
    fits = [MLPClassifier((32, 16), max_iter=3, batch_size=32, random_state=0,
                          kernel_threads=t).fit(X, y).net_.params_flat
            for t in ("auto", 1, 2, None)]
    lbfgs = [MLPRegressor(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=5, random_state=0,
                          kernel_threads=t).fit(X, X[:, 0]).net_.params_flat
             for t in (1, 2)]
    for a in fits[1:]:
        assert np.array_equal(a, fits[0])
    assert np.array_equal(*lbfgs)
    assert MLPClassifier(kernel_threads=3).get_params()["kernel_threads"] == 3
    for bad in (0, -1, "all", 1.5, True):
        with pytest.raises(ValueError, match="kernel_threads"):
            MLPClassifier((4,), max_iter=2, kernel_threads=bad).fit(X, y)
