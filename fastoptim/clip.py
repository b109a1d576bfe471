"""Gradient clipping with torch.nn.utils semantics, deterministic whatever the thread count.

``clip_grad_norm_`` computes the total norm over all gradients with the compiled
``kernels.norm_pow_sum`` (|x|**p summed in double in fixed-size blocks, so the result does
not depend on the number of threads).
"""

import math

import numpy as np

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

from ._backend import kernels as _kernels, resolve_n_threads as _resolve_n_threads
from ._validation import to_float as _to_float

_k_norm_pow_sum = _kernels.norm_pow_sum
_k_all_finite = _kernels.all_finite


def _by_dtype(arrays):
    """Split into per-dtype tuples of C-contiguous arrays (one kernel call takes one dtype)."""
    out = {}
    for a in arrays:
        if a.size:
            out.setdefault(a.dtype.char, []).append(
                a if a.flags.c_contiguous and a.flags.aligned else np.ascontiguousarray(a))
    return [tuple(v) for v in out.values()]


def _norm_pow_sum(arrays, p):
    """sum |x|**p over all arrays (max |x| for inf), deterministic for any thread count."""
    n_threads = _resolve_n_threads(None)
    try:  # common case: one dtype, all contiguous -> one call
        return float(_k_norm_pow_sum(tuple(arrays), float(p), n_threads))
    except (TypeError, ValueError):  # mixed dtypes or layouts: the kernel refused, read-only
        pass
    parts = [float(_k_norm_pow_sum(t, float(p), n_threads)) for t in _by_dtype(arrays)]
    if p == math.inf:
        return max(parts, default=0.0)
    return sum(parts)  # at most two parts (float32, float64): a + b == b + a exactly


def _all_finite(arrays):
    """True if no array contains inf or nan."""
    try:  # common case: one dtype, all contiguous -> one call
        return bool(_k_all_finite(tuple(arrays)))
    except (TypeError, ValueError):  # mixed dtypes or layouts: the kernel refused, read-only
        pass
    return all(_k_all_finite(t) for t in _by_dtype(arrays))


def _nonfinite_index(arrays):
    """Index of the first array containing inf or nan (None if all finite)."""
    for i, a in enumerate(arrays):
        if not np.isfinite(a).all():
            return i
    return None


def _as_grad_list(grads):
    if isinstance(grads, np.ndarray):
        grads = [grads]
    elif isinstance(grads, (list, tuple)):
        grads = list(grads)
    else:
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError("grads must be an ndarray or an iterable of ndarrays, "
                            f"got {type(grads).__name__}") from None
    for i, g in enumerate(grads):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grad {i} is {type(g).__name__}, expected an ndarray")
        if isinstance(g, np.ma.MaskedArray):
            raise TypeError(f"grad {i} is a masked array; clipping would ignore its mask: "
                            "pass a plain ndarray")
        if g.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"grad {i} has dtype {g.dtype}; expected float32 or float64")
        if not g.flags.writeable:
            raise ValueError(f"grad {i} is read-only; clipping works in place")
    return grads


def _check_nonneg(name, value):
    value = _to_float(name, value)
    if not value >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    r"""Scale ``grads`` in place so that their total ``norm_type``-norm is at most ``max_norm``.

    .. code-block:: text

        total = (sum_i ||g_i||_p ** p) ** (1/p)        (max_i |g| for p = inf), in double
        coef = max_norm / (total + 1e-6);  g_i *= coef  if coef < 1

    Returns the total norm (before clipping) as a Python float. As in torch, a non-finite
    total norm raises FloatingPointError if ``error_if_nonfinite``, otherwise the gradients
    are scaled by the resulting non-finite/zero coefficient (nan propagates).
    ``norm_type`` is a float > 0 or ``inf``.
    """
    grads = _as_grad_list(grads)
    max_norm = _check_nonneg("max_norm", max_norm)
    p = _to_float("norm_type", norm_type)
    if not p > 0.0:
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type}")
    if not grads:
        return 0.0
    s = _norm_pow_sum(grads, p)
    if p == math.inf or p == 1.0:
        total = s
    elif p == 2.0:
        total = math.sqrt(s)
    else:
        try:
            total = s ** (1.0 / p)
        except OverflowError:  # a tiny norm_type: torch's norm is inf there too
            total = math.inf
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise FloatingPointError(
                f"The total norm of order {norm_type} for gradients is non-finite, so it cannot "
                "be clipped. To scale the gradients by the non-finite norm anyway, set "
                "error_if_nonfinite=False")
    clip_coef = max_norm / (total + 1e-6)
    if not clip_coef >= 1.0:  # coef < 1, or nan as in torch's clamp
        with np.errstate(invalid="ignore"):  # inf * 0 -> nan, as in torch
            for g in grads:
                g *= clip_coef
    return total


def clip_grad_value_(grads, clip_value):
    """Clip every gradient element in place to ``[-clip_value, clip_value]`` (nan stays nan)."""
    grads = _as_grad_list(grads)
    v = _check_nonneg("clip_value", clip_value)
    for g in grads:
        np.clip(g, -v, v, out=g)
