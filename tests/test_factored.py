"""Adafactor, Muon and LBFGS: kernels against the NumPy reference (bit for bit, any
thread count), classes against torch.optim on the same scenarios (float64: normwise
relative error <= 1e-12 after 50 steps; LBFGS iterates within 1e-10), state dicts both
ways, exact resume, convergence, bad input."""

import re

import numpy as np
import pytest

import fastoptim
from fastoptim import functional as F
from fastoptim import reference as R
from fastoptim.optim import LBFGS, Adafactor, AdamW, Muon

from conftest import kernels_variants

DTYPES = [np.float32, np.float64]
ADAFACTOR_SHAPES = [(7, 9), (3, 5, 130), (300, 257), (11,), (), (2, 1, 1), (1, 33)]


def _factors(p):
    if p.ndim >= 2:
        return [np.zeros(p.shape[:-1] + (1,), p.dtype),
                np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype), None]
    return [None, None, np.zeros(p.shape, p.dtype)]


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


# ------------------------------------------------------------- kernels vs reference
@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    """Run the functional API on one compiled variant (AVX2 and baseline)."""
    monkeypatch.setattr(F, "kernels", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ADAFACTOR_SHAPES)
@pytest.mark.parametrize("options", [
    dict(), dict(weight_decay=0.1, lr=0.05, maximize=True),
    dict(eps1=1e-3, eps2=0.0, d=1.5, beta2_decay=-0.5),
    # a float32 lr: the reference's NumPy arithmetic on it is float32, as torch's on a
    # float32 Tensor lr (0.5: rho is 1/sqrt(t), a Python float, from step 5)
    dict(weight_decay=0.1, lr=np.array(0.05, np.float32)),
    dict(weight_decay=0.1, lr=np.array(0.5, np.float32))],
    ids=["default", "decay-maximize", "eps-d-beta2_decay", "float32-lr", "float32-lr-above-rho"])
def test_adafactor_matches_reference_bit_for_bit(variant, dtype, shape, options):
    rng = np.random.default_rng(1)
    p0 = np.asarray(rng.standard_normal(shape), dtype=dtype)
    runs = []
    for impl, threads in ((R.adafactor_, None), (F.adafactor_, 1), (F.adafactor_, 2)):
        p, state = p0.copy(), _factors(p0)
        g_rng = np.random.default_rng(2)
        for t in range(1, 6):
            g = np.asarray(g_rng.standard_normal(shape) * 10.0 ** (t - 3), dtype=dtype)
            kw = dict(options, n_threads=threads) if threads else options
            impl(p, g, *state, step=t, **kw)
        runs.append([p] + [s for s in state if s is not None])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,nesterov", [((7, 9), True), ((130, 50), False), ((64, 64), True),
                                            ((200, 150), True)])
@pytest.mark.parametrize("lr", [0.02, np.array(0.02, np.float32)], ids=["float", "float32-array"])
def test_muon_matches_reference_bit_for_bit(variant, dtype, shape, nesterov, lr):
    # The same NumPy (BLAS) products run on both sides; the compiled momentum pass and
    # its norm follow the reference's order, so the bits agree.  A float32 lr: the
    # reference's NumPy arithmetic on it is float32, as torch's on a float32 Tensor lr.
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(shape).astype(dtype)
    a, b, c = p0.copy(), p0.copy(), p0.copy()
    ba, bb, bc = np.zeros_like(a), np.zeros_like(b), np.zeros_like(c)
    for _ in range(4):
        g = rng.standard_normal(shape).astype(dtype)
        R.muon_(b, g, bb, lr=lr, nesterov=nesterov)
        F.muon_(a, g, ba, lr=lr, nesterov=nesterov, n_threads=1)
        F.muon_(c, g, bc, lr=lr, nesterov=nesterov, n_threads=2)
    for x, y in ((a, b), (ba, bb), (c, b), (bc, bb)):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_references_fused_multiply_add_is_the_kernels(variant, dtype):
    # Muon's last update (torch's add_ with alpha, one rounding): the reference builds it
    # from exact parts in NumPy, the kernels call fma; over magnitudes 2**-30..2**30 and
    # near-cancelling sums (where the rounded product is furthest off) they must agree.
    rng = np.random.default_rng(8)
    n = 20000
    y = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(dtype)
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 30, n)).astype(dtype)
    alpha = -0.0123456789
    x[:5000] = (-y[:5000] / dtype(alpha) * (1 + 1e-6 * rng.standard_normal(5000))).astype(dtype)
    fused, emulated = y.copy(), y.copy()
    variant.add_scaled(fused, x, alpha, 1)
    R._add_scaled(emulated, x, alpha)
    assert fused.tobytes() == emulated.tobytes()
    assert not np.array_equal(fused, y + dtype(alpha) * x)  # the product rounded first


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_muon_updates_an_np_matrix_param_as_a_plain_array():
    # np.matrix's `*` and `*=` are np.dot (double for a Python float times float32): the
    # scalars and Newton-Schulz must still run elementwise in the param's dtype.
    rng = np.random.default_rng(6)
    plain = rng.standard_normal((3, 5)).astype(np.float32)
    matrix = np.asmatrix(plain.copy())
    bufs = [np.zeros_like(plain), np.zeros_like(plain)]
    for _ in range(3):
        g = rng.standard_normal((3, 5)).astype(np.float32)
        F.muon_(plain, g, bufs[0], lr=0.02)
        F.muon_(matrix, g, bufs[1], lr=0.02)
    assert type(matrix) is np.matrix
    assert np.asarray(matrix).tobytes() == plain.tobytes()
    assert bufs[0].tobytes() == bufs[1].tobytes()


def test_adafactor_lists_equal_single_calls():
    rng = np.random.default_rng(4)
    ps = [rng.standard_normal(s) for s in [(4, 6), (5,), (2, 3, 4)]]
    singles = [p.copy() for p in ps]
    states = [_factors(p) for p in ps]
    single_states = [_factors(p) for p in ps]
    grads = [rng.standard_normal(p.shape) for p in ps]
    F.adafactor_(ps, grads, *[[s[k] for s in states] for k in range(3)], step=1)
    for p, g, st in zip(singles, grads, single_states):
        F.adafactor_(p, g, *st, step=1)
    for a, b in zip(ps, singles):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------- vs torch
def _torch():
    return pytest.importorskip("torch")


SHAPES = [(6, 5), (7,), (3, 4, 5)]


def _run_pair(cls, tcls, kw, n=50, seed=0, shapes=SHAPES, groups=True):
    torch = _torch()
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    split = (lambda ps: [dict(params=ps[:1]), dict(params=ps[1:], lr=kw["lr"] / 2)]) \
        if groups else (lambda ps: ps)
    opt, topt = cls(split(params), **kw), tcls(split(tparams), **kw)
    for _ in range(n):
        grads = [rng.standard_normal(s) for s in shapes]
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        topt.step()
    return opt, topt, params, tparams


@pytest.mark.parametrize("kw", [dict(lr=0.01), dict(lr=0.05, weight_decay=0.1, maximize=True),
                                dict(lr=0.02, eps=(1e-3, 1e-2), d=2.0, beta2_decay=-0.6)])
def test_adafactor_matches_torch(kw):
    torch = _torch()
    opt, topt, params, tparams = _run_pair(Adafactor, torch.optim.Adafactor, kw)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert _rel(p, tp.detach().numpy()) <= 1e-12
        tstate = topt.state[tp]
        assert opt.state[i]["step"] == int(tstate["step"])
        for name in ("row_var", "col_var", "variance"):
            assert (name in opt.state[i]) == (name in tstate)
            if name in tstate:
                assert opt.state[i][name].shape == tuple(tstate[name].shape)
                assert _rel(opt.state[i][name], tstate[name].numpy()) <= 1e-12


@pytest.fixture
def torch_muon_in_param_dtype(monkeypatch):
    """torch's Muon with its bfloat16 cast made a copy in the param's dtype: the rest of
    torch's code runs as shipped (fastoptim's Newton-Schulz runs in the param's dtype)."""
    torch = _torch()
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
    return torch


@pytest.mark.parametrize("kw", [dict(lr=0.02), dict(lr=0.01, nesterov=False, momentum=0.9,
                                                    adjust_lr_fn="match_rms_adamw"),
                                dict(lr=0.02, weight_decay=0.0, ns_steps=3, eps=1e-5,
                                     adjust_lr_fn="original")])
def test_muon_matches_torch(torch_muon_in_param_dtype, kw):
    torch = torch_muon_in_param_dtype
    shapes = [(6, 5), (5, 8), (16, 16)]
    opt, topt, params, tparams = _run_pair(Muon, torch.optim.Muon, kw, shapes=shapes)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert _rel(p, tp.detach().numpy()) <= 1e-12
        assert _rel(opt.state[i]["momentum_buffer"],
                    topt.state[tp]["momentum_buffer"].numpy()) <= 1e-12


def test_muon_close_to_torch_bfloat16():
    # torch's own Newton-Schulz runs in bfloat16 (8 bits of mantissa): one step agrees
    # to bfloat16's precision, no more.
    torch = _torch()
    rng = np.random.default_rng(5)
    p = rng.standard_normal((16, 12))
    tp = torch.tensor(p.copy(), requires_grad=True)
    g = rng.standard_normal((16, 12))
    Muon([p], lr=0.5).step([g])
    tp.grad = torch.tensor(g)
    torch.optim.Muon([tp], lr=0.5).step()
    assert _rel(p, tp.detach().numpy()) < 2e-2


def test_empty_params_are_left_alone():
    # torch divides by zero on an empty param; here it is simply not changed
    p, buf = np.zeros((0, 3)), np.zeros((0, 3))
    F.muon_(p, p.copy(), buf)
    R.muon_(p, p.copy(), buf)
    q = np.zeros((3, 0))
    F.adafactor_(q, q.copy(), np.zeros((3, 1)), np.zeros((1, 0)), step=1)
    assert Muon([np.zeros((0, 4))]).step([np.zeros((0, 4))])


def test_muon_refuses_non_2d_like_torch():
    torch = _torch()
    with pytest.raises(ValueError, match="2D"):
        torch.optim.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="2D"):
        Muon([np.zeros(3)])
    with pytest.raises(ValueError, match="2-D"):
        F.muon_(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))


def test_muon_with_adamw_for_the_rest():
    # README's recipe: 2-D weights to Muon, the rest (biases) to AdamW.
    rng = np.random.default_rng(6)
    W, b = rng.standard_normal((8, 4)), rng.standard_normal(4)
    target_W, target_b = rng.standard_normal((8, 4)), rng.standard_normal(4)
    muon, adamw = Muon([W], lr=0.02, weight_decay=0.0), AdamW([b], lr=0.05, weight_decay=0.0)
    start = np.sum((W - target_W) ** 2) + np.sum((b - target_b) ** 2)
    for _ in range(200):
        muon.step([2 * (W - target_W)])
        adamw.step([2 * (b - target_b)])
    assert np.sum((W - target_W) ** 2) + np.sum((b - target_b) ** 2) < 1e-2 * start


# ----------------------------------------------------------------- state dicts
def _to_numpy(torch, sd):
    def conv(v):
        if torch.is_tensor(v):
            return v.detach().numpy().copy()
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return {"state": {k: {n: conv(v) for n, v in st.items()} for k, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def _to_torch(torch, sd):
    def conv(v):
        if isinstance(v, np.ndarray):
            return torch.tensor(v)
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return {"state": {k: {n: conv(v) for n, v in st.items()} for k, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def test_adafactor_float32_close_to_torch():
    # float32: torch's reductions and its (not always correctly rounded) float32 sqrt
    # differ in the last bits; 20 steps stay within float32 rounding.
    torch = _torch()
    rng = np.random.default_rng(12)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt, topt = Adafactor(params, lr=0.05), torch.optim.Adafactor(tparams, lr=0.05)
    for _ in range(20):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        assert _rel(p, tp.detach().numpy()) <= 1e-5


@pytest.mark.parametrize("cls_name,kw", [("Adafactor", dict(lr=0.05, weight_decay=0.1)),
                                         ("Muon", dict(lr=0.02))])
def test_state_dicts_both_ways(torch_muon_in_param_dtype, cls_name, kw):
    torch = torch_muon_in_param_dtype
    cls, tcls = getattr(fastoptim, cls_name), getattr(torch.optim, cls_name)
    shapes = [(6, 5), (5, 8)] if cls is Muon else SHAPES
    opt, topt, params, tparams = _run_pair(cls, tcls, kw, n=5, shapes=shapes)
    rng = np.random.default_rng(9)
    # torch's state dict into a fresh fastoptim optimizer, ours into a fresh torch one
    p2 = [p.copy() for p in params]
    tp2 = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    groups = lambda ps: [dict(params=ps[:1]), dict(params=ps[1:], lr=kw["lr"] / 2)]
    ours_from_torch = cls(groups(p2), **kw)
    ours_from_torch.load_state_dict(_to_numpy(torch, topt.state_dict()))
    torch_from_ours = tcls(groups(tp2), **kw)
    torch_from_ours.load_state_dict(_to_torch(torch, opt.state_dict()))
    for _ in range(5):
        grads = [rng.standard_normal(s) for s in shapes]
        opt.step(grads)
        ours_from_torch.step(grads)
        for a, b, g in zip(tparams, tp2, grads):
            a.grad, b.grad = torch.tensor(g), torch.tensor(g)
        topt.step()
        torch_from_ours.step()
    for p, q, tp, tq in zip(params, p2, tparams, tp2):
        assert _rel(q, p) <= 1e-12 and _rel(tq.detach().numpy(), tp.detach().numpy()) <= 1e-12


@pytest.mark.parametrize("cls,kw,shapes", [(Adafactor, dict(weight_decay=0.1), SHAPES),
                                           (Muon, dict(lr=0.02), [(6, 5), (5, 8)])])
def test_exact_resume(cls, kw, shapes):
    rng = np.random.default_rng(10)
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(8)]
    straight = [p.copy() for p in init]
    opt = cls(straight, **kw)
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in init]
    opt1 = cls(first, **kw)
    for g in grads[:3]:
        opt1.step(g)
    sd = opt1.state_dict()
    resumed = [p.copy() for p in first]
    opt2 = cls(resumed, **kw)
    opt2.load_state_dict(sd)
    for g in grads[3:]:
        opt2.step(g)
    for a, b in zip(straight, resumed):
        assert a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------- LBFGS
def _rosenbrock(x):
    f = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
    g = np.array([-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]), 200 * (x[1] - x[0] ** 2)])
    return float(f), g


def _quadratic():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((10, 10))
    A, b = M @ M.T + 10 * np.eye(10), rng.standard_normal(10)
    return lambda x: (float(0.5 * x @ A @ x - b @ x), A @ x - b), rng.standard_normal(10)


def _lbfgs_pair(fun, x0, n_steps, **kw):
    """Both optimizers on the same function; the closures compute the same gradients
    (NumPy), so only the optimizers' arithmetic differs.  Returns the worst relative
    difference of the iterates after each step, and both."""
    torch = _torch()
    x = x0.copy()
    tx = torch.tensor(x0.copy(), requires_grad=True)
    opt, topt = LBFGS([x], **kw), torch.optim.LBFGS([tx], **kw)

    def closure():
        f, g = fun(x)
        return f, [g]

    def tclosure():
        f, g = fun(tx.detach().numpy())
        tx.grad = torch.tensor(g)
        return f

    worst = 0.0
    for _ in range(n_steps):
        loss, tloss = opt.step(closure), topt.step(tclosure)
        worst = max(worst, _rel(x, tx.detach().numpy()), abs(loss - tloss) / abs(tloss))
    return worst, opt, topt, x, tx


@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, history_size=3, max_iter=7),
                                dict(line_search_fn="strong_wolfe"),
                                dict(line_search_fn="strong_wolfe", history_size=3, max_iter=7),
                                dict(line_search_fn="strong_wolfe", max_iter=3, max_eval=4)])
def test_lbfgs_rosenbrock_follows_torch(kw):
    worst, opt, topt, x, tx = _lbfgs_pair(_rosenbrock, np.array([-1.5, 2.0]), 10, **kw)
    assert worst <= 1e-10
    st, tst = opt.state[0], topt.state[tx]
    assert (st["func_evals"], st["n_iter"]) == (tst["func_evals"], tst["n_iter"])


@pytest.mark.parametrize("kw", [dict(lr=0.05, history_size=5),
                                dict(line_search_fn="strong_wolfe", history_size=5),
                                dict(lr=0.1, tolerance_change=1e-3)])
def test_lbfgs_quadratic_follows_torch(kw):
    fun, x0 = _quadratic()
    worst, opt, topt, x, tx = _lbfgs_pair(fun, x0, 5, **kw)
    assert worst <= 1e-10
    assert opt.state[0]["func_evals"] == topt.state[tx]["func_evals"]


def test_lbfgs_float32_follows_torch_without_line_search():
    # float32: torch keeps its scalars as float32 0-d tensors, fastoptim as np.float32.
    # (With strong_wolfe, torch 2.13's float32 sqrt of a 0-d tensor is not correctly
    # rounded, so the line search's trial steps differ in the last bit.)
    x0 = np.array([-1.5, 2.0], np.float32)

    def fun(x):
        f, g = _rosenbrock(x.astype(np.float64))
        return f, g.astype(np.float32)
    worst, opt, topt, x, tx = _lbfgs_pair(fun, x0, 10, lr=0.1)
    assert worst == 0


def test_lbfgs_converges_on_rosenbrock():
    # criterion: within 1e-8 of the minimum (1, 1) after 5 steps of 20 iterations
    x = np.array([-1.5, 2.0])
    opt = LBFGS([x], line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                tolerance_change=1e-20)
    for _ in range(5):
        opt.step(lambda: (_rosenbrock(x)[0], [_rosenbrock(x)[1]]))
    assert np.abs(x - 1).max() < 1e-8


def test_lbfgs_state_dict_from_torch_and_back():
    torch = _torch()
    fun, x0 = _quadratic()
    worst, opt, topt, x, tx = _lbfgs_pair(fun, x0, 1, lr=0.05, max_iter=4)
    x2, tx2 = x.copy(), torch.tensor(x.copy(), requires_grad=True)
    ours = LBFGS([x2], lr=0.05, max_iter=4)
    ours.load_state_dict(_to_numpy(torch, topt.state_dict()))
    theirs = torch.optim.LBFGS([tx2], lr=0.05, max_iter=4)
    theirs.load_state_dict(_to_torch(torch, opt.state_dict()))

    def closure():
        f, g = fun(x2)
        return f, [g]

    def tclosure():
        f, g = fun(tx2.detach().numpy())
        tx2.grad = torch.tensor(g)
        return f

    for _ in range(3):
        ours.step(closure)
        theirs.step(tclosure)
    assert _rel(x2, tx2.detach().numpy()) <= 1e-10


def test_lbfgs_bad_closure_changes_nothing():
    x = np.array([-1.5, 2.0])
    opt = LBFGS([x], line_search_fn="strong_wolfe")
    opt.step(lambda: (_rosenbrock(x)[0], [_rosenbrock(x)[1]]))
    before, state = x.copy(), opt.state_dict()
    calls = []

    def bad():
        calls.append(1)
        f, g = _rosenbrock(x)
        return f, [g.astype(np.float32) if len(calls) == 3 else g]  # fails mid-step
    with pytest.raises(TypeError, match="dtype"):
        opt.step(bad)
    assert x.tobytes() == before.tobytes()
    after = opt.state_dict()["state"][0]
    for k, v in state["state"][0].items():
        assert np.array_equal(np.asarray(after[k], dtype=object), np.asarray(v, dtype=object)) \
            if isinstance(v, list) else np.array_equal(after[k], v)
    with pytest.raises(TypeError, match="closure"):
        opt.step(None)
    with pytest.raises(ValueError, match="parameter groups"):
        LBFGS([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)]}])


# ------------------------------------------------------------------ convergence
@pytest.mark.parametrize("dtype", DTYPES)
def test_adafactor_converges_on_quadratic_bowl(dtype):
    # criterion: loss below 1e-3 of its start after 300 steps
    rng = np.random.default_rng(11)
    W, target = rng.standard_normal((8, 6)).astype(dtype), rng.standard_normal((8, 6)).astype(dtype)
    v, vt = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    opt = Adafactor([W, v], lr=0.1)
    start = float(np.sum((W - target) ** 2) + np.sum((v - vt) ** 2))
    for _ in range(300):
        opt.step([2 * (W - target), 2 * (v - vt)])
    assert float(np.sum((W - target) ** 2) + np.sum((v - vt) ** 2)) < 1e-3 * start


# --------------------------------------------------------------------- bad input
def test_adafactor_bad_input_changes_nothing():
    p = np.ones((3, 4))
    row, col = np.zeros((3, 1)), np.zeros((1, 4))
    g = np.full((3, 4), 0.5)
    snapshot = [a.copy() for a in (p, row, col)]
    with pytest.raises(ValueError, match="row_var"):
        F.adafactor_(p, g, np.zeros((3, 4)), col, step=1)
    with pytest.raises(TypeError, match="col_var"):
        F.adafactor_(p, g, row, None, step=1)
    with pytest.raises(TypeError, match="dtype"):
        F.adafactor_([p, np.ones(2, np.float32)], [g, np.ones(2, np.float32)],
                     [row, None], [col, None], [None, np.zeros(2, np.float32)], step=1)
    with pytest.raises(ValueError, match="C-contiguous"):
        F.adafactor_(np.asfortranarray(p), np.asfortranarray(g), row, col, step=1)
    with pytest.raises(ValueError, match="share memory"):
        F.adafactor_(p, p, row, col, step=1)
    with pytest.raises(ValueError, match="d must be"):
        F.adafactor_(p, g, row, col, step=1, d=0.5)
    for a, b in zip((p, row, col), snapshot):
        assert a.tobytes() == b.tobytes()
    opt = Adafactor([p])
    with pytest.raises(ValueError, match="beta2_decay"):
        Adafactor([p], beta2_decay=0.5)
    with pytest.raises(ValueError):
        opt.step([np.ones((4, 3))])
    assert opt.state == {} and p.tobytes() == snapshot[0].tobytes()


# ------------------------------------------------------ torch's switches in a group
SWITCHES = ("foreach", "fused", "capturable", "differentiable")
#: values put in a group: torch's Muon and LBFGS take none of these keywords and read
#: none of these keys, so every value runs as without it (the other classes check them:
#: their torch counterparts read them)
GROUP_SWITCHES = [
    {"foreach": None}, {"foreach": False}, {"foreach": True},
    {"fused": False}, {"fused": True},
    {"capturable": False}, {"capturable": True},
    {"differentiable": None}, {"differentiable": False}, {"differentiable": True},
    {"fused": True, "foreach": True}, {"differentiable": "yes", "fused": 3},
]


def _muon_run(extra):
    """(optimizer, params, step) of Muon with ``extra`` in its group; each step takes the
    next grad of a fixed list (indexed by the step count, so a refused step uses none)."""
    rng = np.random.default_rng(9)
    p = rng.standard_normal((6, 5))
    grads = [rng.standard_normal((6, 5)) for _ in range(4)]
    opt = Muon([dict(params=[p], **extra)], lr=0.02)
    return opt, [p], lambda: opt.step([grads[opt.state.get(0, {}).get("step", 0)]])


def _lbfgs_run(extra):
    fun, x0 = _quadratic()
    x = x0.copy()
    opt = LBFGS([dict(params=[x], **extra)], lr=0.05, history_size=5, max_iter=4)
    return opt, [x], lambda: opt.step(lambda: (fun(x)[0], [fun(x)[1]]))


def _bits(v):
    """A value with every array (and NumPy scalar) as its dtype, shape and bytes."""
    if isinstance(v, np.ndarray):
        return v.dtype.str, v.shape, v.tobytes()
    if isinstance(v, np.generic):
        return v.dtype.str, v.tobytes()
    if isinstance(v, (list, tuple)):
        return tuple(map(_bits, v))
    if isinstance(v, dict):
        return {k: _bits(x) for k, x in v.items()}
    return v


def _params_and_state(opt, params):
    return _bits(params), _bits(opt.state)


@pytest.mark.parametrize("switches", GROUP_SWITCHES,
                         ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
@pytest.mark.parametrize("run", [_muon_run, _lbfgs_run], ids=["Muon", "LBFGS"])
def test_torch_switches_in_a_group_are_ignored_as_torch_does(run, switches):
    """Muon's and LBFGS's groups with torch's switches, in the constructor's group and set
    by hand before the first or the second step: the same bits as without them."""
    plain, plain_params, plain_step = run({})
    for _ in range(3):
        plain_step()
    expected = _params_and_state(plain, plain_params)
    opt, params, step = run(switches)
    for _ in range(3):
        step()
    assert _params_and_state(opt, params) == expected
    for at in (0, 1):
        opt, params, step = run({})
        for _ in range(at):
            step()
        opt.param_groups[0].update(switches)
        for _ in range(3 - at):
            step()
        assert _params_and_state(opt, params) == expected


def test_muon_and_lbfgs_constructors_take_no_torch_switch_like_torch():
    torch = _torch()
    for key in SWITCHES:
        for make in (lambda **kw: torch.optim.Muon([torch.zeros(2, 2, requires_grad=True)], **kw),
                     lambda **kw: torch.optim.LBFGS([torch.zeros(2, requires_grad=True)], **kw),
                     lambda **kw: Muon([np.zeros((2, 2))], **kw),
                     lambda **kw: LBFGS([np.zeros(2)], **kw)):
            with pytest.raises(TypeError, match=f"unexpected keyword argument '{key}'"):
                make(**{key: False})
