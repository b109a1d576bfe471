"""Compact storage in the functional API: float16/bfloat16 params, grads and state,
float32 master weights, nearest-even and stochastic rounding.

Tolerance: none against the reference (fastoptim.reference writes the float32 rule on
float32 copies, then rounds with NumPy's / ml_dtypes' casts or the same hash), on both
builds and for 1 and 2 threads.  The conversions are also checked on their own against
NumPy and ml_dtypes over sampled float32 bit patterns of every exponent.
"""

import itertools

import numpy as np
import pytest

import fastoptim
from fastoptim import reference
from _cases import OPTIMIZERS, call
from conftest import kernels_variants

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
STORAGE = [F32, F16, BF16]
N = 20_011   # above the parallel threshold (threads split it), not a tile multiple


@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    monkeypatch.setattr(fastoptim.functional, "kernels", request.param)
    return request.param


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_same_bits(got, want, what):
    assert got.dtype == want.dtype, what
    np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=what)


def _state(kind, like, options, dtype):
    z = np.zeros(like.shape, dtype)
    if kind == "sgd":
        return dict(momentum_buffer=z.copy() if options.get("momentum", 0) else None)
    if kind == "rmsprop":
        return dict(square_avg=z.copy(),
                    momentum_buffer=z.copy() if options.get("momentum", 0) > 0 else None,
                    grad_avg=z.copy() if options.get("centered") else None)
    return dict(exp_avg=z.copy(), exp_avg_sq=z.copy(),
                max_exp_avg_sq=z.copy() if options.get("amsgrad") else None)


def _run(kind, options, lr, pdt, gdt, sdt, master, rounding, steps=4, n=N, n_threads=None,
         seed=11):
    """Run the kernels and the reference side by side; return both final states."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal(n).astype(pdt)
    state = _state(kind, p, options, sdt)
    m = p.astype(np.float32) if master else None
    ours = [p, state, m]
    ref = [p.copy(), {k: None if v is None else v.copy() for k, v in state.items()},
           None if m is None else m.copy()]
    for t in range(1, steps + 1):
        g = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 4, n)).astype(gdt)
        for module, (pp, st, mm), extra in ((fastoptim, ours, dict(n_threads=n_threads)),
                                            (reference, ref, {})):
            call(module, kind, pp, g, st, t, lr,
                 dict(options, master=mm, rounding=rounding, seed=seed, **extra))
    return ours, ref


def _compare(ours, ref):
    _assert_same_bits(ours[0], ref[0], "param")
    for name, buf in ours[1].items():
        if buf is not None:
            _assert_same_bits(buf, ref[1][name], name)
    if ours[2] is not None:
        _assert_same_bits(ours[2], ref[2], "master")


# ------------------------------------------------------------------ conversions
def _float32_patterns():
    """Every exponent (sign too) x mantissas: edges, halfway points, random."""
    rng = np.random.default_rng(0)
    mant = np.concatenate([[0, 1, 2, 0x7FFFFF, 0x7FFFFE, 0x400000, 0x1000, 0xFFF, 0x1001,
                            0x3000, 0x8000, 0x7FFF, 0x18000, 0x10000, 0x2000, 0x6000],
                           rng.integers(0, 1 << 23, 300)]).astype(np.uint32)
    exps = np.arange(256, dtype=np.uint32) << np.uint32(23)
    u = (exps[:, None] | mant[None, :]).ravel()
    return np.concatenate([u, u | np.uint32(0x80000000)]).view(np.float32)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["f16", "bf16"])
def test_nearest_even_matches_numpy_and_ml_dtypes(variant, dtype):
    x = _float32_patterns()
    got = np.empty(x.shape, dtype)
    variant.round_to_16bit(x, got)
    with np.errstate(all="ignore"):
        want = x.astype(dtype)
    quiet = ~np.isnan(x) | ((x.view(np.uint32) & 0x400000) != 0)  # NaN payloads: below
    np.testing.assert_array_equal(got.view(np.uint16)[quiet], want.view(np.uint16)[quiet])
    assert np.isnan(got.astype(np.float32)[np.isnan(x)]).all()


def test_float16_overflow_underflow_and_specials(variant):
    # IEEE binary16 under round-to-nearest-even, as NumPy casts
    cases = {65504.0: 65504.0, 65519.99: 65504.0, 65520.0: np.inf, 1e6: np.inf,
             -1e6: -np.inf, np.inf: np.inf, -np.inf: -np.inf, 2.0 ** -24: 2.0 ** -24,
             2.0 ** -25: 0.0, 2.0 ** -25 * 1.0001: 2.0 ** -24, 1e-30: 0.0, -1e-30: -0.0,
             3 * 2.0 ** -25: 2.0 ** -23, 2.0 ** -14: 2.0 ** -14}
    x = np.array(list(cases), np.float32)
    got = np.empty(x.shape, F16)
    variant.round_to_16bit(x, got)
    want = np.array(list(cases.values()), F16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    for dtype in (F16, BF16):
        nan = np.array([np.nan, -np.nan], np.float32)
        out = np.empty(2, dtype)
        variant.round_to_16bit(nan, out, True, 5, 1, 0)
        assert np.isnan(out.astype(np.float32)).all()
        assert list(np.signbit(out.astype(np.float32))) == [False, True]


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["f16", "bf16"])
def test_widening_is_exact_for_every_16bit_pattern(variant, dtype):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
    got = np.empty(h.shape, np.float32)
    variant.widen_16bit(h, got)
    want = h.astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["f16", "bf16"])
def test_stochastic_rounding_matches_reference_and_is_unbiased(variant, dtype):
    x = _float32_patterns()
    got = np.empty(x.shape, dtype)
    variant.round_to_16bit(x, got, True, 123, 7, 2)
    want = reference._round_16bit(x, dtype, "stochastic", 123, 7, 2)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    # Each value lands on a neighbour, and on average on itself (normal and f16 subnormal)
    for value in (1.0 + 2 ** -10 + 2 ** -12, 3e-6, -0.1234567):
        xs = np.full(200_000, value, np.float32)
        out = np.empty(xs.shape, dtype)
        variant.round_to_16bit(xs, out, True, 9, 1, 0)
        wide = out.astype(np.float64)
        lo, hi = np.sort(np.unique(wide))[[0, -1]]
        assert len(np.unique(wide)) <= 2 and lo <= value <= hi
        spread = hi - lo
        assert abs(wide.mean() - float(np.float32(value))) < 0.01 * spread + 1e-12
    exact = np.array([1.0, -2.5, 0.0, 1024.0], np.float32)
    out = np.empty(4, dtype)
    variant.round_to_16bit(exact, out, True, 1, 1, 0)
    np.testing.assert_array_equal(out.astype(np.float32), exact)


# ------------------------------------------------------- kernels vs reference
PARAM_COMBOS = [  # (param, grad, master)
    (F32, F32, False), (F32, F16, False), (F32, BF16, False),
    (F16, F16, True), (F16, F32, True), (F16, F16, False),
    (BF16, BF16, True), (BF16, F32, True), (BF16, BF16, False),
]


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("sdt", STORAGE, ids=["sf32", "sf16", "sbf16"])
@pytest.mark.parametrize("pdt, gdt, master", PARAM_COMBOS,
                         ids=[f"{p}-{g}-{'master' if m else 'nomaster'}"
                              for p, g, m in PARAM_COMBOS])
@pytest.mark.parametrize("kind", ["sgd", "rmsprop", "adam", "adamw"])
def test_every_storage_combination_matches_reference(variant, kind, pdt, gdt, master, sdt,
                                                     rounding):
    grid, lr = OPTIMIZERS["adam" if kind == "adamw" else kind]
    # the richest option set: every state buffer in play
    options = dict(max(grid, key=lambda o: sum(bool(v) for v in o.values())))
    if kind == "adamw":
        options.pop("decoupled_weight_decay")
        kind = "adam"
        options["decoupled_weight_decay"] = True
    _compare(*_run(kind, options, lr, pdt, gdt, sdt, master, rounding, n=2_053))


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_option_set_with_bfloat16_state_and_params(variant, kind):
    grid, lr = OPTIMIZERS[kind]
    for options in grid:
        _compare(*_run(kind, options, lr, BF16, BF16, BF16, True, "stochastic", steps=3,
                       n=700))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_same_bits_for_any_thread_count(kind, n_threads):
    grid, lr = OPTIMIZERS[kind]
    options = grid[-1]
    for pdt, sdt in ((BF16, BF16), (F16, F16), (F32, BF16)):
        _compare(*_run(kind, options, lr, pdt, pdt, sdt, pdt != F32, "stochastic",
                       n=100_003, steps=3, n_threads=n_threads))


def test_lists_of_arrays_and_per_array_seeds():
    rng = np.random.default_rng(0)
    sizes = [5, 3000, 17]
    ps = [rng.standard_normal(n).astype(BF16) for n in sizes]
    masters = [p.astype(np.float32) for p in ps]
    ms = [np.zeros(n, BF16) for n in sizes]
    vs = [np.zeros(n, F16) for n in sizes]
    ref = [[a.copy() for a in x] for x in (ps, masters, ms, vs)]
    for t in range(1, 4):
        gs = [rng.standard_normal(n).astype(BF16) for n in sizes]
        fastoptim.adam_(ps, gs, ms, vs, step=t, master=masters, rounding="stochastic", seed=5)
        reference.adam_(*ref[:1], gs, *ref[2:], step=t, master=ref[1],
                        rounding="stochastic", seed=5)
    for ours, want in zip((ps, masters, ms, vs), ref):
        for a, b in zip(ours, want):
            _assert_same_bits(a, b, "list")
    # an int seed gives array k the seed + k: the same as that list of seeds
    p1, p2 = [p.copy() for p in ps], [p.copy() for p in ps]
    for pp, seed in ((p1, 5), (p2, [5, 6, 7])):
        m1 = [p.astype(np.float32) for p in ps]
        fastoptim.sgd_(pp, gs, step=9, lr=0.1, master=m1, rounding="stochastic", seed=seed)
    for a, b in zip(p1, p2):
        _assert_same_bits(a, b, "seed list")


def test_stochastic_rounding_depends_on_seed_and_step_and_resumes():
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float32)

    def run(seed, steps):
        p, m, v = x.astype(BF16), np.zeros(5000, BF16), np.zeros(5000, BF16)
        master = x.copy()
        for t in steps:
            fastoptim.adam_(p, x, m, v, step=t, lr=1e-3, master=master, rounding="stochastic",
                            seed=seed)
        return p, m, v, master

    a = run(1, range(1, 11))
    b = run(1, range(1, 11))
    c = run(2, range(1, 11))
    for u, w in zip(a, b):
        _assert_same_bits(u, w, "same seed")
    assert not np.array_equal(_bits(a[1]), _bits(c[1]))
    # resume: stop after step 5, copy everything (a checkpoint), continue 6..10
    p, m, v = x.astype(BF16), np.zeros(5000, BF16), np.zeros(5000, BF16)
    master = x.copy()
    for t in range(1, 6):
        fastoptim.adam_(p, x, m, v, step=t, lr=1e-3, master=master, rounding="stochastic",
                        seed=1)
    p, m, v, master = (np.array(a_) for a_ in (p, m, v, master))
    for t in range(6, 11):
        fastoptim.adam_(p, x, m, v, step=t, lr=1e-3, master=master, rounding="stochastic",
                        seed=1)
    for u, w in zip(a, (p, m, v, master)):
        _assert_same_bits(u, w, "resumed")


# ------------------------------------------------------------------ why SR matters
def test_stochastic_rounding_keeps_bfloat16_second_moment_moving():
    """v = 0.999 v + 0.001 g**2 with g = 1 tends to 1 - 0.999**t.  Stored in bfloat16
    (8 significant bits) with round-to-nearest, the increment 0.001 (1 - v) drops below
    half a unit in the last place once v is about 0.2, so every step rounds back to the
    same v: it stalls.  Stochastic rounding keeps its expected value on the exact
    recurrence, so the mean over many elements follows float32."""
    n, steps = 4096, 3000
    finals = {}
    for name, dtype, rounding in (("f32", F32, "nearest"), ("rne", BF16, "nearest"),
                                  ("sr", BF16, "stochastic")):
        p, g = np.zeros(n, np.float32), np.ones(n, np.float32)
        m, v = np.zeros(n, dtype), np.zeros(n, dtype)
        for t in range(1, steps + 1):
            fastoptim.adam_(p, g, m, v, step=t, lr=0.0, beta2=0.999, rounding=rounding,
                            seed=3)
        finals[name] = float(v.astype(np.float64).mean())
    exact = 1 - 0.999 ** steps
    assert abs(finals["f32"] - exact) < 1e-3
    assert finals["rne"] < 0.5 * exact                     # stalled far below
    assert abs(finals["sr"] - exact) < 0.01 * exact        # within 1% of the truth


# ------------------------------------------------------------------ convergence
def _converge(kind, p0, grad_fn, steps, storage, **options):
    """Run one optimizer with params and state in `storage` (float32 master for 16-bit
    params, stochastic rounding), return the master (or param) as float64."""
    p = p0.astype(storage)
    master = p0.astype(np.float32) if storage != F32 else None
    bufs = [np.zeros(p0.shape, storage) for _ in range(2)]
    for t in range(1, steps + 1):
        x = master if master is not None else p
        g = grad_fn(x.astype(np.float32))
        kw = dict(options, master=master, rounding="stochastic", seed=1)
        if kind == "momentum":
            fastoptim.sgd_(p, g, bufs[0], step=t, momentum=0.9, **kw)
        elif kind == "rmsprop":
            fastoptim.rmsprop_(p, g, bufs[0], step=t, **kw)
        else:
            getattr(fastoptim, kind + "_")(p, g, bufs[0], bufs[1], step=t, weight_decay=0.0,
                                           **kw)
    return (master if master is not None else p).astype(np.float64)


# the float32 test's settings (tests/test_convergence.py) and its criteria
RUNS = {
    "momentum": (dict(lr=0.05), dict(lr=1e-4), 20_000),
    "rmsprop": (dict(lr=0.01), dict(lr=1e-3), 20_000),
    "adam": (dict(lr=0.05), dict(lr=0.01), 10_000),
    "adamw": (dict(lr=0.05), dict(lr=0.01), 10_000),
}


@pytest.mark.parametrize("storage", [F16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_quadratic_bowl_and_rosenbrock_converge_as_float32(kind, storage):
    """Criterion: the float32 tests' own (max |p| < 1e-2 on the bowl, within 2e-2 of
    (1, 1) on Rosenbrock), met by 16-bit params + float32 master + 16-bit state."""
    scales = np.array([1.0, 3.0, 10.0], np.float32)
    p = _converge(kind, np.array([2.0, -1.5, 1.0], np.float32), lambda q: scales * q, 2000,
                  storage, **RUNS[kind][0])
    assert np.abs(p).max() < 1e-2, p

    def rosenbrock(q):
        x, y = float(q[0]), float(q[1])
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], np.float32)

    _, options, steps = RUNS[kind]
    p = _converge(kind, np.array([-1.5, 2.0], np.float32), rosenbrock, steps, storage,
                  **options)
    np.testing.assert_allclose(p, [1.0, 1.0], atol=2e-2)


# ------------------------------------------------------------------ bad combinations
def _arrays(pdt=BF16, sdt=BF16, n=10):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n).astype(pdt), rng.standard_normal(n).astype(pdt),
            np.abs(rng.standard_normal(n)).astype(sdt), np.abs(rng.standard_normal(n)).astype(sdt)]


def _refused(exc, match, arrays, **kwargs):
    kwargs.setdefault("step", 1)
    snapshot = [np.array(a, copy=True) for a in arrays if isinstance(a, np.ndarray)]
    extra = [a for a in kwargs.values() if isinstance(a, np.ndarray)]
    extra_snap = [a.copy() for a in extra]
    with pytest.raises(exc, match=match):
        fastoptim.adam_(*arrays, **kwargs)
    for a, b in zip([a for a in arrays if isinstance(a, np.ndarray)] + extra,
                    snapshot + extra_snap):
        np.testing.assert_array_equal(_bits(a), _bits(b))


@pytest.mark.parametrize("case", [
    "master_for_float32", "master_float16", "master_shape", "master_overlaps", "param_f64",
    "state_f64_param_bf16", "grad_int", "mixed_list", "rounding", "rounding_type",
    "seed_negative", "seed_big", "seed_float", "seed_list_length", "master_readonly",
])
def test_bad_combinations_are_refused_and_change_nothing(case):
    p, g, m, v = _arrays()
    master = p.astype(np.float32)
    if case == "master_for_float32":
        p32 = p.astype(np.float32)
        _refused(ValueError, "master is only for float16/bfloat16 params",
                 [p32, g, m, v], master=master)
    elif case == "master_float16":
        _refused(TypeError, "master must have dtype float32", [p, g, m, v],
                 master=master.astype(np.float16))
    elif case == "master_shape":
        _refused(ValueError, r"master has shape \(9,\)", [p, g, m, v], master=master[:9].copy())
    elif case == "master_overlaps":
        big = np.zeros(20, np.float32)
        _refused(ValueError, "share memory", [p, g, big[:10].view(BF16)[:10], v],
                 master=big[:10])
    elif case == "param_f64":
        _refused(TypeError, "param must have dtype float32, float16 or bfloat16, got float64",
                 [p.astype(np.float64), g, m, v])
    elif case == "state_f64_param_bf16":
        _refused(TypeError, "exp_avg must have dtype float32, float16 or bfloat16",
                 [p, g, m.astype(np.float64), v], master=master)
    elif case == "grad_int":
        _refused(TypeError, "grad must have dtype", [p, g.astype(np.int16), m, v],
                 master=master)
    elif case == "mixed_list":
        q, h, mm, vv = _arrays(F16, F16)
        _refused(TypeError, r"param\[1\] has dtype float16 but param\[0\] has dtype bfloat16",
                 [[p, q], [g, h.astype(BF16)], [m, mm], [v, vv]],
                 master=[master, q.astype(np.float32)])
    elif case == "rounding":
        _refused(ValueError, "rounding must be 'nearest' or 'stochastic', got 'up'",
                 [p, g, m, v], master=master, rounding="up")
    elif case == "rounding_type":
        _refused(TypeError, "rounding must be", [p, g, m, v], master=master, rounding=1)
    elif case == "seed_negative":
        _refused(ValueError, r"seed must be an int in \[0, 2\*\*64\)", [p, g, m, v],
                 master=master, rounding="stochastic", seed=-1)
    elif case == "seed_big":
        _refused(ValueError, "seed must be an int", [p, g, m, v], master=master, seed=2 ** 64)
    elif case == "seed_float":
        _refused(TypeError, "seed must be an int", [p, g, m, v], master=master, seed=1.5)
    elif case == "seed_list_length":
        _refused(ValueError, "seeds must be a list of 1 ints", [p, g, m, v], master=master,
                 rounding="stochastic", seed=[1, 2])
    elif case == "master_readonly":
        master.flags.writeable = False
        _refused(ValueError, "master must be writeable", [p, g, m, v], master=master)


def test_every_storage_combination_is_accepted_or_refused_cleanly():
    """param x grad x state x master over float64/32/16/bfloat16: what is supported
    runs; everything else is a TypeError/ValueError that changes nothing."""
    dtypes = [np.dtype(np.float64), F32, F16, BF16]
    for pdt, gdt, sdt, use_master in itertools.product(dtypes, dtypes, dtypes, (False, True)):
        p, g, m, v = _arrays(pdt, sdt)
        g = g.astype(gdt)
        master = p.astype(np.float32) if use_master else None
        f64 = np.dtype(np.float64)
        if not use_master and pdt == gdt == sdt and pdt in (F32, f64):
            ok = True                             # the float32/float64 kernels
        else:                                     # float32 math, master for 16-bit only
            ok = f64 not in (pdt, gdt, sdt) and not (use_master and pdt == F32)
        if ok:
            fastoptim.adam_(p, g, m, v, step=1, master=master)
        else:
            _refused((TypeError, ValueError), None, [p, g, m, v],
                     **({"master": master} if use_master else {}))
