"""Gradient clipping: torch semantics, determinism, in place, bad input changes nothing."""

import math

import numpy as np
import pytest

import fastoptim
from fastoptim import clip
from fastoptim.clip import clip_grad_norm_, clip_grad_value_

NORM_TYPES = [1.0, 2.0, 3.0, 0.5, math.inf]


def make_grads(rng, dtype=np.float64, scale=1.0):
    shapes = [(40, 30), (17,), (3, 5, 7), (0,)]
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in shapes]


def reference_norm(grads, p):
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    if p == math.inf:
        return float(np.max(np.abs(flat)))
    return float(np.sum(np.abs(flat) ** p) ** (1 / p))


def test_uses_compiled_helpers():
    from fastoptim._backend import kernels
    assert clip._k_norm_pow_sum is kernels.norm_pow_sum
    assert clip._k_all_finite is kernels.all_finite


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", NORM_TYPES)
def test_norm_and_clip(p, dtype, rng):
    grads = make_grads(rng, dtype)
    orig = [g.copy() for g in grads]
    expected = reference_norm(orig, p)
    max_norm = expected / 3
    total = clip_grad_norm_(grads, max_norm, norm_type=p)
    assert isinstance(total, float)
    assert total == pytest.approx(expected, rel=1e-12)
    coef = max_norm / (total + 1e-6)
    for g, o in zip(grads, orig):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, o * coef, rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert reference_norm(grads, p) == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("p", NORM_TYPES)
def test_no_clipping_below_max_norm(p, rng):
    grads = make_grads(rng)
    orig = [g.copy() for g in grads]
    total = clip_grad_norm_(grads, reference_norm(orig, p) * 2, norm_type=p)
    assert total == pytest.approx(reference_norm(orig, p), rel=1e-12)
    for g, o in zip(grads, orig):
        assert np.array_equal(g, o)


@pytest.mark.parametrize("p", NORM_TYPES)
def test_matches_torch(p, rng):
    torch = pytest.importorskip("torch")
    grads = [g for g in make_grads(rng) if g.size]  # torch refuses the inf norm of an empty tensor
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g.copy())
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.5, norm_type=p, foreach=False)
    total = clip_grad_norm_(grads, 1.5, norm_type=p)
    assert total == pytest.approx(float(tnorm), rel=1e-12)
    for g, tp in zip(grads, tparams):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-12)


def test_deterministic_across_thread_counts(rng):
    big = [rng.standard_normal(300_001).astype(np.float32),
           rng.standard_normal((700, 301)).astype(np.float32)]
    from fastoptim import _backend
    old = _backend._default_n_threads
    try:
        results = {}
        for n in (1, 2, 3):
            fastoptim.set_num_threads(n)
            results[n] = [clip._norm_pow_sum(big, p) for p in NORM_TYPES]
    finally:
        fastoptim.set_num_threads(old)
    assert results[1] == results[2] == results[3]
    for p, got in zip(NORM_TYPES, results[1]):
        norm = reference_norm(big, p)
        expected = norm if p == math.inf else norm ** p
        assert got == pytest.approx(expected, rel=1e-10)


def test_single_array_mixed_dtypes_and_layouts(rng):
    a = rng.standard_normal((6, 8))
    b = rng.standard_normal((8, 6)).astype(np.float32).T  # not contiguous
    orig = [a.copy(), b.copy()]
    total = clip_grad_norm_([a, b], 0.5)
    assert total == pytest.approx(reference_norm(orig, 2.0), rel=1e-12)
    assert b.dtype == np.float32 and not b.flags.c_contiguous
    np.testing.assert_allclose(b, orig[1] * (0.5 / (total + 1e-6)), rtol=1e-6)
    c = rng.standard_normal(10)
    c0 = c.copy()
    assert clip_grad_norm_(c, 0.1) == pytest.approx(np.sqrt(np.sum(c0 ** 2)), rel=1e-12)
    assert clip_grad_norm_([], 1.0) == 0.0
    assert clip_grad_norm_((x for x in [np.zeros(3)]), 1.0) == 0.0


def test_nonfinite(rng):
    grads = make_grads(rng)
    grads[1][3] = np.inf
    orig = [g.copy() for g in grads]
    with pytest.raises(FloatingPointError, match="non-finite"):
        clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    for g, o in zip(grads, orig):
        assert np.array_equal(g, o)
    # like torch: scaled by max_norm / inf = 0, the inf itself becomes nan
    assert clip_grad_norm_(grads, 1.0) == math.inf
    assert np.isnan(grads[1][3]) and np.all(grads[0] == 0)
    grads = make_grads(rng)
    grads[0][0, 0] = np.nan
    assert math.isnan(clip_grad_norm_(grads, 1.0))
    assert all(np.isnan(g).all() for g in grads)


BAD_NORM = [
    (dict(grads=[np.zeros(3), [1.0]]), TypeError, "grad 1 is list"),
    (dict(grads=[np.zeros(3), np.zeros(3, np.int32)]), TypeError, "grad 1 has dtype int32"),
    (dict(grads=5), TypeError, "grads must be an ndarray or an iterable"),
    (dict(max_norm=-1.0), ValueError, "max_norm must be >= 0"),
    (dict(max_norm=float("nan")), ValueError, "max_norm must be >= 0"),
    (dict(max_norm="1"), TypeError, "max_norm must be a real number"),
    (dict(norm_type=0), ValueError, "norm_type must be > 0 or inf"),
    (dict(norm_type=-math.inf), ValueError, "norm_type must be > 0 or inf"),
    (dict(norm_type="fro"), TypeError, "norm_type must be a real number"),
]


@pytest.mark.parametrize("kw,exc,match", BAD_NORM, ids=[m for _, _, m in BAD_NORM])
def test_bad_input_clip_norm_changes_nothing(kw, exc, match, rng):
    grads = make_grads(rng, scale=100.0)
    orig = [g.copy() for g in grads]
    args = dict(grads=grads, max_norm=1.0)
    args.update(kw)
    if "grads" in kw and isinstance(kw["grads"], list):
        kw["grads"][0][:] = 7.0
        orig = [kw["grads"][0].copy()]
        grads = kw["grads"][:1]
    with pytest.raises(exc, match=match):
        clip_grad_norm_(args["grads"], args["max_norm"], **{k: v for k, v in args.items()
                                                            if k not in ("grads", "max_norm")})
    for g, o in zip(grads, orig):
        assert np.array_equal(g, o)


def test_read_only_grad_refused(rng):
    a, b = rng.standard_normal(5) * 10, rng.standard_normal(5) * 10
    b.flags.writeable = False
    a0 = a.copy()
    with pytest.raises(ValueError, match="grad 1 is read-only"):
        clip_grad_norm_([a, b], 0.1)
    with pytest.raises(ValueError, match="grad 1 is read-only"):
        clip_grad_value_([a, b], 0.1)
    assert np.array_equal(a, a0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_value(dtype, rng):
    grads = make_grads(rng, dtype, scale=3.0)
    grads[0][0, 0] = np.nan
    grads[1][0] = -np.inf
    orig = [g.copy() for g in grads]
    assert clip_grad_value_(grads, 1.25) is None
    for g, o in zip(grads, orig):
        assert g.dtype == dtype
        assert np.array_equal(g, np.clip(o, -1.25, 1.25), equal_nan=True)
    assert np.isnan(grads[0][0, 0]) and grads[1][0] == dtype(-1.25)


def test_clip_value_matches_torch(rng):
    torch = pytest.importorskip("torch")
    grads = make_grads(rng, scale=3.0)
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_(tparams, 0.7, foreach=False)
    clip_grad_value_(grads, 0.7)
    for g, tp in zip(grads, tparams):
        assert np.array_equal(g, tp.grad.numpy())


@pytest.mark.parametrize("value,exc,match", [(-0.1, ValueError, "clip_value must be >= 0"),
                                             (None, TypeError, "clip_value must be a real")])
def test_clip_value_bad_input(value, exc, match, rng):
    grads = make_grads(rng)
    orig = [g.copy() for g in grads]
    with pytest.raises(exc, match=match):
        clip_grad_value_(grads, value)
    for g, o in zip(grads, orig):
        assert np.array_equal(g, o)
