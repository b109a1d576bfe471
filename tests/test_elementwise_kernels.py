"""The template-generated kernels (fastoptim/_kernels_elementwise.pxi.tp) against the
NumPy reference, bit for bit: every option combination on both dtypes and both compiled
variants, odd shapes, lists of arrays in one call, 1/2/3 threads; bad input refused
with nothing changed.  As in test_kernels_vs_reference.py there is no tolerance: the
build uses -ffp-contract=off and both sides round each operation once, in one order."""

import numpy as np
import pytest

import fastoptim
from fastoptim import _backend, functional, reference
from _elementwise_cases import ELEMENTWISE, NO_STEP, call, make_state, richest
from conftest import kernels_variants

KINDS = sorted(ELEMENTWISE)
DTYPES = [np.float32, np.float64]
SHAPES = [(0,), (1,), (7,), (1000,), (100_003,), (33, 17), (5, 4, 3)]


def _copy(state):
    return {k: v.copy() for k, v in state.items()}


def _run_both(kind, options, shape, dtype, steps, rng, n_threads=None):
    param = rng.standard_normal(shape).astype(dtype)
    ref_param = param.copy()
    state = make_state(kind, param)
    ref_state = _copy(state)
    for step in range(1, steps + 1):
        grad = rng.standard_normal(shape).astype(dtype)
        if step % 7 == 0 and grad.size:
            grad.flat[::3] = 0  # zero gradients: Rprop's sign logic, Adamax's max
        call(functional, kind, param, grad, state, step, options, n_threads)
        call(reference, kind, ref_param, grad, ref_state, step, options)
    return param, state, ref_param, ref_state


def _assert_identical(param, state, ref_param, ref_state):
    np.testing.assert_array_equal(param, ref_param, strict=True)
    for name, buf in state.items():
        np.testing.assert_array_equal(buf, ref_state[name], err_msg=name, strict=True)


@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    monkeypatch.setattr(functional, "kernels", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_option_combination_matches_reference(variant, kind, dtype, rng):
    for options in ELEMENTWISE[kind][2]:
        _assert_identical(*_run_both(kind, options, (1000,), dtype, 60, rng))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_shape_matches_reference(variant, kind, dtype, shape, rng):
    _assert_identical(*_run_both(kind, richest(kind), shape, dtype, 30, rng))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_results_identical_for_any_thread_count(kind, n_threads, rng):
    assert 100_003 >= _backend.kernels.get_parallel_min_elements()
    _assert_identical(*_run_both(kind, richest(kind), (100_003,), np.float32, 15, rng,
                                 n_threads=n_threads))


@pytest.mark.parametrize("kind", KINDS)
def test_list_of_arrays_in_one_call_equals_one_call_per_array(kind, rng):
    shapes = [(3,), (0,), (50, 4), (70_000,), (2, 3, 4)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    singles = [p.copy() for p in params]
    states = [make_state(kind, p) for p in params]
    single_states = [_copy(s) for s in states]
    options = richest(kind)
    for step in range(1, 6):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        batched = {k: [s[k] for s in states] for k in states[0]}
        call(functional, kind, params, grads, batched, step, options, n_threads=2)
        for p, g, s in zip(singles, grads, single_states):
            call(reference, kind, p, g, s, step, options)
    for p, s, q, t in zip(params, states, singles, single_states):
        _assert_identical(p, s, q, t)


def test_radam_takes_both_sides_of_the_rho_t_branch():
    # beta2 = 0.999: rho_t <= 5 for the first steps (plain momentum step), > 5 later
    rect = [reference.radam_rectification(0.999, t)[0] for t in range(1, 10)]
    assert not rect[0] and rect[-1]


def test_torch_sign_semantics_in_lion_and_rprop():
    # sign(NaN) = sign(+-0) = 0, as torch.sign (np.sign gives NaN): NaN momentum leaves
    # Lion's param alone; Rprop moves nothing where the gradient is NaN
    p = np.ones(4)
    m = np.array([np.nan, 0.0, -0.0, 1.0])
    fastoptim.functional.lion_(p, np.zeros(4), m, step=1, lr=0.5, beta1=1.0, beta2=1.0)
    np.testing.assert_array_equal(p, [1.0, 1.0, 1.0, 0.5])
    p, prev, ss = np.ones(3), np.array([1.0, 1.0, -1.0]), np.full(3, 0.25)
    fastoptim.functional.rprop_(p, np.array([np.nan, 2.0, 2.0]), prev, ss, step=2)
    np.testing.assert_array_equal(p, [1.0, 1.0 - 0.25 * 1.2, 1.0])
    np.testing.assert_array_equal(ss, [0.25, 0.25 * 1.2, 0.25 * 0.5])
    np.testing.assert_array_equal(prev, [np.nan, 2.0, 0.0])


# ------------------------------------------------------------------ bad input
def _bad_calls(kind, param, grad, state):
    names = ELEMENTWISE[kind][0]
    bufs = [state[n] for n in names]
    fn = getattr(functional, kind + "_")
    opts = richest(kind)
    if kind not in NO_STEP:
        yield TypeError, lambda: fn(param, grad, *bufs, step=1.5, **opts)
        yield ValueError, lambda: fn(param, grad, *bufs, step=0, **opts)
        opts = dict(opts, step=1)
    yield TypeError, lambda: fn(param, grad.astype(np.float32), *bufs, **opts)
    yield ValueError, lambda: fn(param, grad[:-1], *bufs, **opts)
    yield ValueError, lambda: fn(param, grad, *([param] + bufs[1:]), **opts)
    yield TypeError, lambda: fn(param, grad, *([None] + bufs[1:]), **opts)
    yield TypeError, lambda: fn([param], [grad], *bufs, **opts)
    ro = bufs[-1].copy()
    ro.flags.writeable = False
    yield ValueError, lambda: fn(param, grad, *(bufs[:-1] + [ro]), **opts)
    yield ValueError, lambda: fn(param, grad, *bufs, n_threads=0, **opts)
    for key, value in opts.items():
        if key == "step":
            continue
        if isinstance(value, bool):
            yield TypeError, lambda key=key: fn(param, grad, *bufs,
                                                **dict(opts, **{key: "yes"}))
        else:
            yield ValueError, lambda key=key: fn(param, grad, *bufs,
                                                 **dict(opts, **{key: float("nan")}))
            yield TypeError, lambda key=key: fn(param, grad, *bufs,
                                                **dict(opts, **{key: "0.1"}))
            # lion-pytorch takes any weight decay; Rprop's step size bounds are any reals
            if key not in ("step_size_min", "step_size_max", "eta", "mu", "lambd") and (
                    kind, key) not in (("lion", "weight_decay"),
                                       ("adamw_schedule_free", "weight_decay")):
                yield ValueError, lambda key=key: fn(param, grad, *bufs,
                                                     **dict(opts, **{key: -1.0}))


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_refused_and_changes_nothing(kind, rng):
    param = rng.standard_normal(50)
    grad = rng.standard_normal(50)
    state = make_state(kind, param)
    before = [param.copy()] + [b.copy() for b in state.values()]
    n = 0
    for exc, bad in _bad_calls(kind, param, grad, state):
        with pytest.raises(exc):
            bad()
        for got, want in zip([param] + list(state.values()), before):
            np.testing.assert_array_equal(got, want)
        n += 1
    assert n > 10


def test_nadam_refuses_a_mu_product_outside_0_1():
    p = np.zeros(3)
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="mu_product"):
            functional.nadam_(p, p.copy(), np.zeros(3), np.zeros(3), step=1, mu_product=bad)


def test_rprop_refuses_etas_outside_torchs_range():
    p = np.zeros(3)
    for etaminus, etaplus in ((0.0, 1.2), (1.0, 1.2), (0.5, 1.0), (0.5, 0.9)):
        with pytest.raises(ValueError, match="eta"):
            functional.rprop_(p, p.copy(), np.zeros(3), np.ones(3), step=1,
                              etaminus=etaminus, etaplus=etaplus)


def test_every_template_entry_is_compiled_and_the_build_is_current():
    import pathlib
    for variant_module in kernels_variants():
        for kind in KINDS:
            assert callable(getattr(variant_module, kind)), (variant_module, kind)
    template = pathlib.Path(fastoptim.__file__).with_name("_kernels_elementwise.pxi.tp")
    generated = template.with_suffix("")
    if not (template.exists() and generated.exists()):
        pytest.skip("the template or its output is not next to the package")
    tempita = pytest.importorskip("Cython.Tempita")
    assert generated.read_text() == tempita.sub(template.read_text()), \
        "stale _kernels_elementwise.pxi: rebuild (python setup.py build_ext --inplace)"


@pytest.mark.parametrize("offsets", ["same", "same-misaligned", "near", "staggered"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_option_combination_matches_reference_at_any_page_offset(variant, kind, dtype,
                                                                       offsets):
    # Buffers at the same page offset go through the staged blocks (from 2,048 elements,
    # 4,099: partial blocks at both ends); staggered ones through the plain loop.
    from test_page_offsets import NEAR, SAME, SAME_MISALIGNED, STAGGERED, _at_page_offsets
    offsets = {"same": SAME, "same-misaligned": SAME_MISALIGNED, "near": NEAR,
               "staggered": STAGGERED}[offsets]
    names, start, options_grid = ELEMENTWISE[kind]
    rng = np.random.default_rng(7)
    for options in options_grid:
        for n in (15, 1000 + 5, 4096 + 3):
            param, grad, *bufs = _at_page_offsets(n, dtype, offsets[:2 + len(names)])
            param[...] = rng.standard_normal(n)
            state = dict(zip(names, bufs))
            for name, buf in state.items():
                buf[...] = start.get(name, 0.0)
            ref_param, ref_state = param.copy(), _copy(state)
            for step in range(1, 4):
                grad[...] = rng.standard_normal(n)
                call(functional, kind, param, grad, state, step, options)
                call(reference, kind, ref_param, grad, ref_state, step, options)
            _assert_identical(param, state, ref_param, ref_state)
