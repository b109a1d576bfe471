"""The compiled kernels against the NumPy reference, element for element.

Tolerance: none.  The kernels are built with -ffp-contract=off and evaluate every
operation in the reference's order with float constants for float32 buffers, and
IEEE add/mul/div/sqrt are correctly rounded in both NumPy and C, so param and every
state buffer must be bit-for-bit equal (np.array_equal) after 100 steps, on both the
AVX2 and the baseline build.  A kernel that computed float32 in double, fused an FMA,
or reordered a formula would fail here.
"""

import numpy as np
import pytest

import fastoptim
from fastoptim import _backend, reference
from _cases import OPTIMIZERS, call, copy_state, make_state
from conftest import kernels_variants

SHAPES = [(0,), (1,), (7,), (1000,), (100_003,), (33, 17), (5, 4, 3)]
DTYPES = [np.float32, np.float64]
STEPS = 100


def _run_both(kind, options, shape, dtype, lr, steps, rng, n_threads=None):
    param = rng.standard_normal(shape).astype(dtype)
    ref_param = param.copy()
    state = make_state(kind, param, options)
    ref_state = copy_state(state)
    for step in range(1, steps + 1):
        grad = rng.standard_normal(shape).astype(dtype)
        call(fastoptim, kind, param, grad, state, step, lr, dict(options, n_threads=n_threads))
        call(reference, kind, ref_param, grad, ref_state, step, lr, options)
    return param, state, ref_param, ref_state


def _assert_identical(param, state, ref_param, ref_state):
    np.testing.assert_array_equal(param, ref_param, strict=True)
    for name, buf in state.items():
        if buf is not None:
            np.testing.assert_array_equal(buf, ref_state[name], err_msg=name, strict=True)


@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    """Run the functional API on one compiled variant (AVX2 and baseline)."""
    monkeypatch.setattr(fastoptim.functional, "kernels", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_option_combination_matches_reference(variant, kind, dtype, rng):
    options_grid, lr = OPTIMIZERS[kind]
    for options in options_grid:
        got = _run_both(kind, options, (1000,), dtype, lr, STEPS, rng)
        _assert_identical(*got)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_shape_matches_reference(variant, kind, dtype, shape, rng):
    options_grid, lr = OPTIMIZERS[kind]
    # The richest option set of each optimizer: every buffer in play.
    options = max(options_grid, key=lambda o: sum(bool(v) for v in o.values()))
    _assert_identical(*_run_both(kind, options, shape, dtype, lr, STEPS, rng))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_results_identical_for_any_thread_count(kind, n_threads, rng):
    # 100_003 elements is above the parallel threshold: threads really split it.
    assert 100_003 >= _backend.kernels.get_parallel_min_elements()
    options_grid, lr = OPTIMIZERS[kind]
    options = options_grid[-1]
    _assert_identical(*_run_both(kind, options, (100_003,), np.float32, lr, 20, rng,
                                 n_threads=n_threads))


def test_fortran_order_arrays_update_elementwise(rng):
    param = np.asfortranarray(rng.standard_normal((40, 30)))
    grad = np.asfortranarray(rng.standard_normal((40, 30)))
    m, v = np.zeros_like(param), np.zeros_like(param)
    assert param.flags.f_contiguous and m.flags.f_contiguous
    ref = param.copy(order="C")
    rm, rv = np.zeros_like(ref), np.zeros_like(ref)
    fastoptim.adam_(param, grad, m, v, step=1, lr=0.1)
    reference.adam_(ref, np.ascontiguousarray(grad), rm, rv, step=1, lr=0.1)
    np.testing.assert_array_equal(param, ref)


def test_read_only_memmap_grad(tmp_path, rng):
    grad = rng.standard_normal(5000).astype(np.float32)
    path = tmp_path / "grad.npy"
    np.save(path, grad)
    mapped = np.load(path, mmap_mode="r")
    assert not mapped.flags.writeable
    param = np.ones(5000, np.float32)
    m, v = np.zeros_like(param), np.zeros_like(param)
    ref = param.copy()
    rm, rv = m.copy(), v.copy()
    fastoptim.adam_(param, mapped, m, v, step=1)
    reference.adam_(ref, grad, rm, rv, step=1)
    np.testing.assert_array_equal(param, ref)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_list_of_arrays_in_one_call_equals_one_call_per_array(kind, rng):
    options_grid, lr = OPTIMIZERS[kind]
    options = options_grid[-1]
    shapes = [(3,), (0,), (50, 4), (70_000,), (2, 3, 4)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    singles = [p.copy() for p in params]
    states = [make_state(kind, p, options) for p in params]
    single_states = [copy_state(s) for s in states]
    for step in range(1, 6):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        batched = {k: [s[k] for s in states] for k in states[0]}
        batched = {k: (None if v[0] is None else v) for k, v in batched.items()}
        call(fastoptim, kind, params, grads, batched, step, lr, options)
        for p, g, s in zip(singles, grads, single_states):
            call(reference, kind, p, g, s, step, lr, options)
    for p, s, q, t in zip(params, states, singles, single_states):
        _assert_identical(p, s, q, t)


@pytest.mark.parametrize("n_states", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("variant_module", kernels_variants(),
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_traffic_probe_adds_scaled_grad_to_every_stream(variant_module, dtype, n_states):
    # The benchmarks' limit must do the kernel's traffic: every written stream updated.
    rng = np.random.default_rng(4)
    for n, n_threads in ((5, 1), (40_000, 2)):  # below and above the parallel threshold
        a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        states = [rng.standard_normal(n).astype(dtype) for _ in range(n_states)]
        d = dtype(0.25) * b
        want = [a + d] + [x + d for x in states]
        variant_module.stream_probe(a, b, states, 0.25, n_threads)
        for got, expected in zip([a] + states, want):
            np.testing.assert_array_equal(got, expected, strict=True)
    with pytest.raises(TypeError, match="states"):
        variant_module.stream_probe(a, b, [a, a, a, a], 0.25, 1)
    with pytest.raises(ValueError, match="share memory"):
        variant_module.stream_probe(a, b, [b], 0.25, 1)


def test_benchmark_placements_give_same_results_and_offsets():
    # bench.Case's "staggered" buffers really sit at distinct page offsets, and the
    # kernel gives the same bits whichever placement it runs on.
    from fastoptim.bench import Case
    same = Case("adam_amsgrad", np.float32, 300_000, placement="same")
    stag = Case("adam_amsgrad", np.float32, 300_000, placement="staggered")
    bufs = [stag.param, stag.grad] + stag.states
    assert len({b.ctypes.data % 4096 for b in bufs}) == len(bufs)
    for case in (same, stag):
        for _ in range(3):
            case.fastoptim_step()
    np.testing.assert_array_equal(same.param, stag.param, strict=True)
    for a, b in zip(same.states, stag.states):
        np.testing.assert_array_equal(a, b, strict=True)
    with pytest.raises(ValueError, match="placement"):
        Case("adam", np.float32, 10, placement="aligned")
    # The report's cases: the staggered views lie in the same-offset case's arrays.
    shared = Case("adam", np.float32, 300_000, placement="staggered", memory=same.memory)
    for a, b in zip([same.param, same.grad] + same.states,
                    [shared.param, shared.grad] + shared.states):
        assert np.shares_memory(a, b) and a.ctypes.data % 4096 != b.ctypes.data % 4096
