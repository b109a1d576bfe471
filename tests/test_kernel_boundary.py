"""The compiled layer and the functional API refuse what they cannot run: nothing crashes.

Anything that could crash the interpreter runs in a child process, so a crash is a
test failure (with the child's exit code), not a dead test run.
"""

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastoptim
from fastoptim import reference
from _cases import call, copy_state, make_state
from _torch_peer import torch_steps
from conftest import kernels_variants, subprocess_env


def _run_child(code, tmp_path, timeout=300):
    """Run `code` in a fresh interpreter; return its stdout, failing on any crash."""
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=subprocess_env(),
                         capture_output=True, text=True, cwd=tmp_path, timeout=timeout)
    assert res.returncode == 0, f"child exited with {res.returncode}:\n{res.stderr[-3000:]}"
    return res.stdout


# --- 1. None for a required buffer -------------------------------------------------

_NONE_CALLS = [
    # (call, argument named in the error)
    ("fastoptim.sgd_(p, None, step=1)", "grad"),
    ("fastoptim.sgd_([p], [None], step=1)", r"grad\[0\]"),
    ("fastoptim.sgd_([p], None, step=1)", "grad"),
    ("fastoptim.rmsprop_(p, g, None, step=1)", "square_avg"),
    ("fastoptim.rmsprop_([p], [g], None, step=1)", "square_avg"),
    ("fastoptim.rmsprop_([p], [g], [None], step=1)", r"square_avg\[0\]"),
    ("fastoptim.rmsprop_(p, None, s, step=1)", "grad"),
    ("fastoptim.adam_(p, g, None, s, step=1)", "exp_avg"),
    ("fastoptim.adam_(p, g, s, None, step=1)", "exp_avg_sq"),
    ("fastoptim.adam_([p], [g], [s], None, step=1)", "exp_avg_sq"),
    ("fastoptim.adamw_([p], [g], None, [s], step=1)", "exp_avg"),
    ("fastoptim.adam_([p], [g], [s], [None], step=1)", r"exp_avg_sq\[0\]"),
    ("fastoptim.sgd_([p], [g], [None], step=2, momentum=0.9)", r"momentum_buffer\[0\]"),
    ("fastoptim.rmsprop_([p], [g], [s], step=1, centered=True, grad_avg=[None])", r"grad_avg\[0\]"),
    ("fastoptim.adam_([p], [g], [s], [t], step=1, amsgrad=True, max_exp_avg_sq=[None])",
     r"max_exp_avg_sq\[0\]"),
    # the compiled entry points called directly, past every Python check
    ("K.adam(p, g, None, None, None, False, 0.9, 0.999, 1e-8, 0.0, False, 1.0, 0.1, 1.0, False, 1)",
     "exp_avg"),
    ("K.adam(p, g, s, t, None, True, 0.9, 0.999, 1e-8, 0.0, False, 1.0, 0.1, 1.0, False, 1)",
     "max_exp_avg_sq"),
    ("K.adam([p], [g], [s], None, None, False, 0.9, 0.999, 1e-8, 0.0, False, 1.0, 0.1, 1.0, False, 1)",
     "exp_avg_sq"),
    ("K.rmsprop(p, g, None, None, None, 0.1, 0.9, 1e-8, 0.0, 0.0, False, False, 1)", "square_avg"),
    ("K.rmsprop(p, g, s, None, None, 0.1, 0.9, 1e-8, 0.0, 0.5, False, False, 1)",
     "momentum_buffer"),
    ("K.rmsprop(p, g, s, None, None, 0.1, 0.9, 1e-8, 0.0, 0.0, True, False, 1)", "grad_avg"),
    ("K.sgd(p, None, None, 0.1, 0.0, 0.0, False, 0.0, False, True, 1)", "grad"),
    ("K.sgd(p, g, None, 0.1, 0.9, 0.0, False, 0.0, False, False, 1)", "momentum_buffer"),
    ("K.sgd([p], [g], [None], 0.1, 0.9, 0.0, False, 0.0, False, False, 1)",
     r"momentum_buffer\[0\]"),
    ("K.stream_axpy(p, None, 1.0, 1)", "b"),
    ("K.norm_pow_sum(None, 2.0, 1)", "grads"),
    ("K.norm_pow_sum([None], 2.0, 1)", r"grads\[0\]"),
    ("K.all_finite([g, None])", r"grads\[1\]"),
]


@pytest.mark.parametrize("variant", kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_none_for_a_required_buffer_is_a_type_error(variant, tmp_path):
    code = f"""
    import re, numpy as np, fastoptim
    import {variant.__name__} as K
    fastoptim.functional.kernels = K
    calls = {[c for c, _ in _NONE_CALLS]!r}
    names = {[n for _, n in _NONE_CALLS]!r}
    for c, name in zip(calls, names):
        p, g, s, t = (np.full(5, v) for v in (1.0, 2.0, 3.0, 4.0))
        try:
            eval(c)
        except TypeError as e:
            assert re.search(name, str(e)), (c, str(e))
        else:
            raise AssertionError("no error: " + c)
        assert (p == 1).all() and (s == 3).all() and (t == 4).all(), c
    print(len(calls))
    """
    assert _run_child(code, tmp_path).strip() == str(len(_NONE_CALLS))


def test_buffers_the_options_do_not_use_are_ignored_by_the_compiled_layer():
    from fastoptim._backend import kernels as K
    p, g = np.ones(5), np.full(5, 2.0)
    junk = "not an array"  # never looked at: momentum == 0
    K.sgd(p, g, junk, 0.5, 0.0, 0.0, False, 0.0, False, True, 1)
    np.testing.assert_array_equal(p, 0.0)
    s = np.zeros(5)
    K.rmsprop(p, g, s, junk, junk, 0.1, 0.9, 1e-8, 0.0, 0.0, False, False, 1)
    want, ws = np.zeros(5), np.zeros(5)
    reference.rmsprop_(want, g, ws, step=1, lr=0.1, alpha=0.9)
    np.testing.assert_array_equal(p, want)


# --- 3. use after free --------------------------------------------------------------

def test_list_subclass_returning_fresh_arrays_does_not_crash(tmp_path):
    code = """
    import numpy as np, fastoptim
    class Fresh(list):
        # every access makes a new array that nobody else holds
        def __getitem__(self, i):
            return np.ones(200_000)
        def __iter__(self):
            return (np.ones(200_000) for _ in range(len(self)))
    for _ in range(20):
        for n_threads in (1, 2):
            fastoptim.sgd_(Fresh([0, 0]), Fresh([0, 0]), step=1, lr=0.1, n_threads=n_threads)
            fastoptim.adam_(Fresh([0, 0]), Fresh([0, 0]), Fresh([0, 0]), Fresh([0, 0]),
                            step=1, n_threads=n_threads)
    # the snapshot is what is updated: one read per element, then those very arrays
    fresh = [np.ones(3), np.ones(3)]
    class Once(list):
        def __iter__(self):
            return iter(fresh)
    fastoptim.sgd_(Once([0, 0]), [np.ones(3), np.ones(3)], step=1, lr=0.5)
    assert (fresh[0] == 0.5).all() and (fresh[1] == 0.5).all()
    print("ok")
    """
    assert _run_child(code, tmp_path).strip() == "ok"


def test_another_thread_replacing_list_elements_during_calls_does_not_crash(tmp_path):
    code = """
    import threading, numpy as np, fastoptim
    n = 400_000
    params = [np.ones(n) for _ in range(4)]
    grads = [np.ones(n) for _ in range(4)]
    ms = [np.zeros(n) for _ in range(4)]
    vs = [np.zeros(n) for _ in range(4)]
    stop = threading.Event()
    def vandal():
        while not stop.is_set():
            for lst in (params, grads, ms, vs):
                lst[0] = np.ones(n)  # frees the array the call may be writing
                lst[3] = np.ones(n)
    t = threading.Thread(target=vandal)
    t.start()
    try:
        for step in range(1, 150):
            fastoptim.adam_(params, grads, ms, vs, step=step, n_threads=2)
            fastoptim.sgd_(params, grads, step=step, lr=0.1, n_threads=1)
    finally:
        stop.set()
        t.join()
    print("ok")
    """
    assert _run_child(code, tmp_path).strip() == "ok"


# --- 8. threads calling the kernels at once -------------------------------------------

@pytest.mark.parametrize("kind", ["sgd", "rmsprop", "adam"])
def test_concurrent_calls_on_different_arrays_equal_serial_calls(kind):
    options = {"sgd": dict(momentum=0.9, nesterov=True),
               "rmsprop": dict(momentum=0.5, centered=True),
               "adam": dict(amsgrad=True, weight_decay=0.1)}[kind]
    n_workers, steps = 4, 30
    rng = np.random.default_rng(11)
    shapes = [(50_000,), (1_000,)]  # above and below the parallel threshold
    work = []
    for _ in range(n_workers):
        params = [rng.standard_normal(s) for s in shapes]
        grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
        work.append((params, grads))

    def run(params, grads):
        params = [p.copy() for p in params]
        states = [make_state(kind, p, options) for p in params]
        batched = {k: (None if states[0][k] is None else [s[k] for s in states])
                   for k in states[0]}
        for step, g in enumerate(grads, 1):
            call(fastoptim, kind, params, g, batched, step, 0.01, dict(options, n_threads=2))
        return params, batched

    serial = [run(*w) for w in work]
    results = [None] * n_workers
    barrier = threading.Barrier(n_workers)

    def worker(i):
        barrier.wait()
        results[i] = run(*work[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (params, state), (want, want_state) in zip(results, serial):
        for p, q in zip(params, want):
            np.testing.assert_array_equal(p, q)
        for name, bufs in state.items():
            if bufs is not None:
                for b, c in zip(bufs, want_state[name]):
                    np.testing.assert_array_equal(b, c)


# --- 6. ndarray subclasses ----------------------------------------------------------

@pytest.mark.parametrize("role", ["param", "grad", "exp_avg"])
def test_masked_arrays_refused(role):
    arrays = dict(param=np.ones(4), grad=np.full(4, 2.0), exp_avg=np.zeros(4))
    arrays[role] = np.ma.masked_array(arrays[role], mask=[0, 1, 0, 0])
    before = {k: np.array(v) for k, v in arrays.items()}
    v = np.zeros(4)
    with pytest.raises(TypeError, match=f"{role} is a masked array"):
        fastoptim.adam_(arrays["param"], arrays["grad"], arrays["exp_avg"], v, step=1)
    with pytest.raises(TypeError, match=rf"{role}\[0\] is a masked array"):
        fastoptim.adam_([arrays["param"]], [arrays["grad"]], [arrays["exp_avg"]], [v], step=1)
    for k, a in arrays.items():
        np.testing.assert_array_equal(np.asarray(a), before[k])
    assert not v.any()


def test_masked_arrays_refused_by_clipping():
    g = np.ma.masked_array([3.0, 4.0], mask=[0, 1])
    with pytest.raises(TypeError, match="grad 0 is a masked array"):
        fastoptim.clip_grad_norm_([g], 1.0)
    with pytest.raises(TypeError, match="grad 0 is a masked array"):
        fastoptim.clip_grad_value_(g, 1.0)
    np.testing.assert_array_equal(g.data, [3.0, 4.0])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
def test_matrix_and_memmap_update_like_plain_arrays(tmp_path):
    rng = np.random.default_rng(12)
    base = rng.standard_normal((3, 4))
    grad = rng.standard_normal((3, 4))
    want = base.copy()
    reference.adam_(want, grad, np.zeros((3, 4)), np.zeros((3, 4)), step=1, lr=0.1)
    mat = np.matrix(base.copy())
    fastoptim.adam_(mat, np.matrix(grad), np.zeros((3, 4)), np.zeros((3, 4)), step=1, lr=0.1)
    np.testing.assert_array_equal(np.asarray(mat), want)
    mm = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float64,
                                   shape=(3, 4))
    mm[...] = base
    fastoptim.adam_(mm, grad, np.zeros((3, 4)), np.zeros((3, 4)), step=1, lr=0.1)
    mm.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)


# --- 7. no OverflowError ------------------------------------------------------------

BIG = 10 ** 400


@pytest.mark.parametrize("call_, exc, match", [
    (lambda a: fastoptim.sgd_(a, a.copy(), step=1, lr=BIG), ValueError, "lr"),
    (lambda a: fastoptim.sgd_(a, a.copy(), step=BIG, lr=0.1), ValueError, "step"),
    (lambda a: fastoptim.adam_(a, a.copy(), a * 0, a * 0, step=BIG), ValueError, "step"),
    (lambda a: fastoptim.adam_(a, a.copy(), a * 0, a * 0, step=1, eps=BIG), ValueError, "eps"),
    (lambda a: fastoptim.rmsprop_(a, a.copy(), a * 0, step=1, alpha=-BIG), ValueError, "alpha"),
    (lambda a: fastoptim.sgd_(a, a.copy(), a * 0, step=1, momentum=0.5, dampening=BIG),
     ValueError, "dampening"),
    (lambda a: fastoptim.clip_grad_norm_([a], BIG), ValueError, "max_norm"),
    (lambda a: fastoptim.clip_grad_norm_([a], 1.0, norm_type=BIG), ValueError, "norm_type"),
    (lambda a: fastoptim.clip_grad_value_([a], BIG), ValueError, "clip_value"),
    (lambda a: fastoptim.zeros_state_like(a, 1.5), TypeError, "index"),
    (lambda a: fastoptim.zeros_state_like(a, -1), ValueError, "index"),
    (lambda a: fastoptim.zeros_state_like(None), TypeError, "param"),
    (lambda a: fastoptim.set_num_threads(1.5), TypeError, "n_threads"),
])
def test_huge_numbers_give_value_or_type_errors(call_, exc, match):
    a = np.arange(1.0, 6.0)
    before = a.copy()
    with pytest.raises(exc, match=match):
        call_(a)
    np.testing.assert_array_equal(a, before)


def test_huge_counts_that_mean_something_are_accepted():
    a = np.full(70_000, 0.25)
    fastoptim.adam_(a, a.copy(), a * 0, a * 0, step=2 ** 70, n_threads=2 ** 31)
    fastoptim.sgd_(a, a.copy(), step=2 ** 70, lr=0.5, n_threads=BIG)
    assert fastoptim.zeros_state_like(a, BIG).shape == a.shape
    fastoptim.set_num_threads(2 ** 40)
    fastoptim.set_num_threads(None)


def test_tiny_norm_type_gives_torch_inf_norm():
    torch = pytest.importorskip("torch")
    g = np.array([0.5, 2.0, 0.0])
    tp = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    tp.grad = torch.tensor(g.copy())
    want = torch.nn.utils.clip_grad_norm_([tp], 1.0, norm_type=1e-300, foreach=False)
    assert fastoptim.clip_grad_norm_([g], 1.0, norm_type=1e-300) == float(want)
    np.testing.assert_array_equal(g, tp.grad.numpy())


# --- 4, 5. non-finite values as torch has them ---------------------------------------

@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    monkeypatch.setattr(fastoptim.functional, "kernels", request.param)
    return request.param


def _steps(module, kind, param, grads, lr, options, before_step=None):
    param = param.copy()
    state = make_state(kind, param, options)
    with np.errstate(all="ignore"):
        for step, g in enumerate(grads, 1):
            if before_step is not None:
                before_step(step, state)
            call(module, kind, param, g, state, step, lr, options)
    return param, state


def _assert_same_as_torch_and_reference(got, ref, want):
    # the kernels equal the reference bit for bit; torch to rounding, NaN where it has NaN
    (p, state), (rp, rstate), (tp, tstate) = got, ref, want
    np.testing.assert_array_equal(p, rp, strict=True)
    np.testing.assert_array_equal(np.isnan(p), np.isnan(tp))
    rtol = 1e-5 if p.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(p, tp, rtol=rtol)
    for name, buf in state.items():
        if buf is not None:
            np.testing.assert_array_equal(buf, rstate[name], err_msg=name)
            np.testing.assert_array_equal(np.isnan(buf), np.isnan(tstate[name]), err_msg=name)
            np.testing.assert_allclose(buf, tstate[name], rtol=rtol, err_msg=name)


@pytest.mark.parametrize("foreach", [False, None], ids=["single", "default"])
@pytest.mark.parametrize("options", [dict(centered=True), dict(centered=True, weight_decay=0.5),
                                     dict(centered=True, momentum=0.9, alpha=0.5)], ids=str)
@pytest.mark.parametrize("dtype, big", [(np.float32, 1e30), (np.float64, 1e200)],
                         ids=["f32", "f64"])
def test_centered_rmsprop_with_huge_values_like_torch(variant, dtype, big, options, foreach):
    pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    param = (rng.standard_normal(40) * big).astype(dtype)
    grads = [(rng.standard_normal(40) * big).astype(dtype) for _ in range(4)]
    for g in grads:
        g[:5] = rng.standard_normal(5)  # ordinary values alongside
    got = _steps(fastoptim, "rmsprop", param, grads, 0.01, options)
    ref = _steps(reference, "rmsprop", param, grads, 0.01, options)
    want = torch_steps("rmsprop", param, grads, 0.01, options, foreach=foreach)
    assert np.isinf(got[1]["square_avg"]).any()  # the case this is about
    _assert_same_as_torch_and_reference(got, ref, want)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_amsgrad_keeps_a_stored_nan_like_torch(variant, dtype, decoupled):
    pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    param = rng.standard_normal(64).astype(dtype)
    grads = [rng.standard_normal(64).astype(dtype) for _ in range(3)]
    options = dict(amsgrad=True, decoupled_weight_decay=decoupled, weight_decay=0.01)

    def poison(step, state):
        if step == 2:  # NaN stored after step 1, in a few places (both loops of the kernel)
            state["max_exp_avg_sq"][[0, 17, 40]] = np.nan

    got = _steps(fastoptim, "adam", param, grads, 0.01, options, poison)
    ref = _steps(reference, "adam", param, grads, 0.01, options, poison)
    want = torch_steps("adam", param, grads, 0.01, options, foreach=False, before_step=poison)
    assert np.isnan(got[0][[0, 17, 40]]).all()
    _assert_same_as_torch_and_reference(got, ref, want)
