"""The Adam loops divide sqrt(v) by sqrt(1 - beta2**t) with FMAs instead of a divide
instruction (AVX2 build; see _div_by_reciprocal in fastoptim/_kernels.pxi).  That is
only allowed because it rounds exactly like IEEE division; these tests hold it to
that on every float32 of two whole binades (the result scales exactly to the other
binades) and on samples of every magnitude, special values included.
"""

import numpy as np
import pytest

import fastoptim
from fastoptim import reference
from conftest import kernels_variants

FMA_VARIANTS = [k for k in kernels_variants() if k.HAVE_FMA]
needs_fma = pytest.mark.skipif(not FMA_VARIANTS, reason="no build with FMA division here")


def _bias_corrections(dtype):
    """sqrt(1 - beta2**t) in the buffer's dtype for common betas and steps, plus
    the extremes the FMA division accepts."""
    values = [np.sqrt(1.0 - b2 ** t) for b2 in (0.999, 0.99, 0.9, 0.5)
              for t in (1, 2, 3, 10, 1000, 10**5)]
    values += [2.0 ** -30, np.nextafter(2.0 ** -30, 1.0), 1.0, np.nextafter(1.0, 0.0)]
    rng = np.random.default_rng(7)
    values += list(2.0 ** rng.uniform(-30, 0, size=8))
    return sorted({float(dtype(v)) for v in values})


def _special_and_sampled(dtype, rng):
    """x = sqrt(v) for v over every magnitude of the dtype, and the special values."""
    info = np.finfo(dtype)
    v = np.concatenate([
        10.0 ** rng.uniform(np.log10(info.smallest_subnormal), np.log10(info.max), 200_000),
        [0.0, info.smallest_subnormal, info.smallest_normal, info.max, np.inf, np.nan],
    ]).astype(dtype)
    return np.sqrt(v)


def _assert_same_bits(got, want):
    bad = np.flatnonzero(got.view(f"u{got.itemsize}") != want.view(f"u{want.itemsize}"))
    assert bad.size == 0, (f"{bad.size} quotients differ, e.g. x={want[bad[0]]!r}: "
                           f"{got[bad[0]]!r} != {want[bad[0]]!r}")


@needs_fma
@pytest.mark.parametrize("variant", FMA_VARIANTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_float32_every_value_of_two_binades(variant):
    x = np.arange(np.float32(1).view(np.uint32), np.float32(4).view(np.uint32),
                  dtype=np.uint32).view(np.float32)  # all 2**24 floats in [1, 4)
    for c in _bias_corrections(np.float32):
        got = x.copy()
        assert variant.divide_like_adam(got, c)
        _assert_same_bits(got, x / np.float32(c))


@needs_fma
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", FMA_VARIANTS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_magnitude_and_special_values(variant, dtype, rng):
    x = _special_and_sampled(dtype, rng)
    for c in _bias_corrections(dtype):
        got = x.copy()
        assert variant.divide_like_adam(got, c)
        with np.errstate(invalid="ignore"):
            _assert_same_bits(got, x / dtype(c))


@pytest.mark.parametrize("variant", kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_divisor_outside_the_proven_range_divides(variant):
    # Below 2**-30 or above 1 the error analysis does not hold: a plain division.
    for c in (2.0 ** -31, 1.5, 3.0):
        x = np.linspace(0, 10, 101, dtype=np.float32)
        assert not variant.divide_like_adam(x, c)
        np.testing.assert_array_equal(x, np.linspace(0, 10, 101, dtype=np.float32)
                                      / np.float32(c))


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_adam_with_extreme_second_moments_matches_reference(variant, dtype, amsgrad,
                                                            monkeypatch, rng):
    """Through adam_ itself: v of zero, the smallest subnormal, huge, inf and NaN (and
    a -0.0 max_exp_avg_sq) give the reference's bits, whichever division ran."""
    monkeypatch.setattr(fastoptim.functional, "kernels", variant)
    info = np.finfo(dtype)
    v = _special_and_sampled(dtype, rng)[-2000:] ** 2
    v[:6] = [0.0, info.smallest_subnormal, info.smallest_normal, info.max, np.inf, np.nan]
    n = v.size
    param = rng.standard_normal(n).astype(dtype)
    grad = (rng.standard_normal(n) * 1e-3).astype(dtype)
    grad[:6] = 0.0
    state = [rng.standard_normal(n).astype(dtype), v.astype(dtype)]
    vmax = np.zeros(n, dtype) if amsgrad else None
    if amsgrad:
        vmax[6] = -0.0
    ref = [param.copy(), [s.copy() for s in state], None if vmax is None else vmax.copy()]
    for step in (1, 2, 50):
        with np.errstate(all="ignore"):
            fastoptim.adam_(param, grad, *state, step=step, lr=1e-2, amsgrad=amsgrad,
                            max_exp_avg_sq=vmax)
            reference.adam_(ref[0], grad, *ref[1], step=step, lr=1e-2, amsgrad=amsgrad,
                            max_exp_avg_sq=ref[2])
    np.testing.assert_array_equal(param, ref[0], strict=True)
    for got, want in zip(state, ref[1]):
        np.testing.assert_array_equal(got, want, strict=True)
