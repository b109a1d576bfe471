"""Every rejected call raises a clear TypeError/ValueError and changes no buffer."""

import numpy as np
import pytest

import fastoptim


def _adam_arrays(n=10, dtype=np.float32):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n).astype(dtype) for _ in range(4)]


def _snapshot(arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def _assert_unchanged(arrays, before):
    for a, b in zip(arrays, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def _reject(exc, match, fn, arrays, **kwargs):
    before = _snapshot(arrays)
    with pytest.raises(exc, match=match):
        fn(*arrays, **kwargs)
    _assert_unchanged(arrays, before)


@pytest.mark.parametrize("bad, exc, match", [
    # (a float16 or bfloat16 exp_avg is compact storage: tests/test_compact.py)
    (np.zeros(10, np.complex64), TypeError, "exp_avg has dtype complex64"),
    (np.zeros(10, np.int64), TypeError, "exp_avg has dtype int64"),
    (np.zeros(10, np.float64), TypeError, "exp_avg has dtype float64 but param has dtype float32"),
    (np.zeros(11, np.float32), ValueError, r"exp_avg has shape \(11,\) but param has shape \(10,\)"),
    (np.zeros((2, 5), np.float32), ValueError, r"exp_avg has shape \(2, 5\)"),
    ([0.0] * 10, TypeError, "exp_avg must be a numpy.ndarray"),
    (np.zeros(20, np.float32)[::2], ValueError, "exp_avg must be contiguous"),
    (np.zeros(10, ">f4"), TypeError, "exp_avg must be in native byte order"),
])
def test_bad_state_buffer(bad, exc, match):
    p, g, m, v = _adam_arrays()
    _reject(exc, match, fastoptim.adam_, [p, g, bad, v], step=1)


def test_param_must_be_float():
    g = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="param must have dtype float32 or float64, got int32"):
        fastoptim.sgd_(np.ones(3, np.int32), g, step=1)
    with pytest.raises(TypeError, match="param must be a numpy.ndarray or a list/tuple"):
        fastoptim.sgd_(3.0, g, step=1)


def test_read_only_param_or_state_rejected_but_read_only_grad_accepted():
    p, g, m, v = _adam_arrays()
    p.flags.writeable = False
    _reject(ValueError, "param must be writeable", fastoptim.adam_, [p, g, m, v], step=1)
    p, g, m, v = _adam_arrays()
    v.flags.writeable = False
    _reject(ValueError, "exp_avg_sq must be writeable", fastoptim.adam_, [p, g, m, v], step=1)
    p, g, m, v = _adam_arrays()
    g.flags.writeable = False
    before = p.copy()
    fastoptim.adam_(p, g, m, v, step=1)
    assert not np.array_equal(p, before)


def test_unaligned_array_rejected():
    raw = np.zeros(10 * 4 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32)
    assert not unaligned.flags.aligned
    p, g, m, v = _adam_arrays()
    _reject(ValueError, "grad must be aligned", fastoptim.adam_, [p, unaligned, m, v], step=1)


def test_different_memory_orders_rejected():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((4, 3))
    g = np.asfortranarray(rng.standard_normal((4, 3)))
    m, v = np.zeros_like(p), np.zeros_like(p)
    _reject(ValueError, "different memory orders", fastoptim.adam_, [p, g, m, v], step=1)


@pytest.mark.parametrize("case", ["same", "grad_is_param", "overlap", "state_view"])
def test_shared_memory_rejected(case):
    base = np.arange(40, dtype=np.float64)
    p, g, m, v = base[0:10], base[10:20].copy(), base[20:30], base[30:40]
    if case == "same":
        m = v
        match = "exp_avg.* and exp_avg_sq.* share memory|exp_avg_sq.* and exp_avg.* share memory"
    elif case == "grad_is_param":
        g = p
        match = "share memory"
    elif case == "overlap":
        m = base[5:15]
        match = "share memory"
    else:
        v = base[9:19]
        match = "share memory"
    _reject(ValueError, match, fastoptim.adam_, [p, g, m, v], step=1)


def test_two_grads_may_share_memory_but_two_params_may_not():
    rng = np.random.default_rng(2)
    g = rng.standard_normal(5)
    params = [np.zeros(5), np.zeros(5)]
    fastoptim.sgd_(params, [g, g], step=1, lr=0.1)
    np.testing.assert_array_equal(params[0], -0.1 * g)
    shared = np.zeros(5)
    before = shared.copy()
    with pytest.raises(ValueError, match=r"param\[0\] and param\[1\] share memory"):
        fastoptim.sgd_([shared, shared], [g, g], step=1, lr=0.1)
    np.testing.assert_array_equal(shared, before)


def test_list_length_and_type_mismatch():
    p = [np.zeros(3), np.zeros(4)]
    g = [np.zeros(3)]
    with pytest.raises(ValueError, match="grad has 1 arrays but param has 2"):
        fastoptim.sgd_(p, g, step=1)
    with pytest.raises(TypeError, match="grad must be a list or tuple"):
        fastoptim.sgd_(p, np.zeros(3), step=1)


def test_error_in_a_later_array_leaves_earlier_arrays_untouched():
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(5), rng.standard_normal(6)]
    grads = [rng.standard_normal(5), rng.standard_normal(7)]
    before = _snapshot(params)
    with pytest.raises(ValueError, match=r"grad\[1\] has shape \(7,\) but param\[1\] has shape \(6,\)"):
        fastoptim.sgd_(params, grads, step=1, lr=0.1)
    _assert_unchanged(params, before)


ADAM_BAD_HYPER = [
    (dict(lr=-1.0), ValueError, r"lr must be in \[0.0, inf\], got -1.0"),
    (dict(lr=float("nan")), ValueError, "lr must be a real number, got nan"),
    (dict(lr=10 ** 400), ValueError, "lr must be a real number a double can hold"),
    (dict(lr="0.1"), TypeError, "lr must be a real number, got str"),
    (dict(lr=True), TypeError, "lr must be a real number, got bool"),
    (dict(beta1=1.0), ValueError, r"beta1 must be in \[0.0, 1.0\), got 1.0"),
    (dict(beta1=-0.1), ValueError, "beta1 must be in"),
    (dict(beta2=1.5), ValueError, "beta2 must be in"),
    (dict(eps=-1e-8), ValueError, r"eps must be in \[0.0, inf\]"),
    (dict(eps=float("nan")), ValueError, "eps must be a real number, got nan"),
    (dict(beta1=float("inf")), ValueError, "beta1 must be in"),
    (dict(weight_decay=-1e-3), ValueError, "weight_decay must be in"),
    (dict(step=0), ValueError, "step must be an int >= 1"),
    (dict(step=1.0), TypeError, "step must be an int >= 1"),
    (dict(step=True), TypeError, "step must be an int >= 1"),
    (dict(step=10 ** 400), ValueError, "step must be an int a double can hold"),
    (dict(lr=np.array([0.1, 0.2])), TypeError, "lr must be a real number, got ndarray"),
    (dict(lr=np.array(True)), TypeError, "lr must be a real number"),
    (dict(amsgrad=True), ValueError, "max_exp_avg_sq is required when amsgrad=True"),
    (dict(amsgrad=1), TypeError, "amsgrad must be a bool"),
    (dict(n_threads=0), ValueError, "n_threads must be a non-zero int"),
    (dict(n_threads=1.5), TypeError, "n_threads must be None or an int"),
]


@pytest.mark.parametrize("kwargs, exc, match", ADAM_BAD_HYPER, ids=lambda x: str(x)[:30])
def test_adam_bad_hyperparameters(kwargs, exc, match):
    arrays = _adam_arrays()
    kwargs = dict(kwargs)
    kwargs.setdefault("step", 1)
    _reject(exc, match, fastoptim.adam_, arrays, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(momentum=-0.5), "momentum must be in"),
    (dict(nesterov=True), "nesterov requires momentum > 0 and dampening == 0"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov requires momentum > 0 and dampening == 0"),
    (dict(dampening=float("nan")), "dampening must be a real number, got nan"),
    (dict(lr=-10 ** 400), "lr must be a real number a double can hold"),
    (dict(momentum=0.9), "momentum_buffer is required when momentum != 0"),
])
def test_sgd_bad_hyperparameters(kwargs, match):
    rng = np.random.default_rng(4)
    p, g = rng.standard_normal(5), rng.standard_normal(5)
    buf = np.zeros(5) if "momentum_buffer" not in match else None
    _reject(ValueError, match, fastoptim.sgd_, [p, g, buf], step=2, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=float("nan")), "alpha must be a real number, got nan"),
    (dict(alpha=-0.1), "alpha must be in"),
    (dict(eps=-1e-8), "eps must be in"),
    (dict(momentum=0.9), "momentum_buffer is required when momentum > 0"),
    (dict(centered=True), "grad_avg is required when centered=True"),
])
def test_rmsprop_bad_hyperparameters(kwargs, match):
    rng = np.random.default_rng(5)
    p, g, sq = rng.standard_normal(5), rng.standard_normal(5), np.ones(5)
    _reject(ValueError, match, fastoptim.rmsprop_, [p, g, sq], step=1, **kwargs)


def test_unused_state_buffers_are_ignored_not_touched():
    rng = np.random.default_rng(6)
    p, g = rng.standard_normal(5), rng.standard_normal(5)
    m, v, vmax = np.zeros(5), np.zeros(5), np.full(5, 7.0)
    fastoptim.adam_(p, g, m, v, step=1, max_exp_avg_sq=vmax)  # amsgrad off
    np.testing.assert_array_equal(vmax, 7.0)
