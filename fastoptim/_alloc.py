"""Allocation of buffers at chosen offsets within a 4 KiB page.

Arrays from NumPy's allocator start at the same offset within a 4 KiB page, so
element i of param, grad, exp_avg and exp_avg_sq share address bits 0-11 and fall in
the same L1 cache set.  A loop streaming through all of them at once then loses time
to conflicts in the L1 (on AMD Zen: its way predictor, which cannot hold two lines of
one set whose virtual addresses hash alike).  The kernels recover most of it
themselves (fastoptim/_kernels.pxi, `_apply_rule`), but buffers at staggered page
offsets stay the fastest placement, so the buffers fastoptim allocates itself are
placed so: state buffers from `zeros_state_like` start at param's page offset plus
k * 1088 bytes (mod 4096), a gradient buffer from `zeros_grad_like` halfway between
param and its first state buffer (+544 bytes).  `zeros_at_page_offset` places a
buffer anywhere (the benchmarks' staggered cases).
"""

import numbers

import numpy as np

__all__ = ["zeros_state_like"]

_STAGGER_BYTES = 1088          # 17 cache lines: spread over the page, 64-byte aligned steps
_PAGE = 4096
_MIN_STAGGER_NBYTES = 1 << 16  # small arrays live in cache: plain zeros_like


def zeros_state_like(param, index=1, dtype=None):
    """A zero array shaped like `param` (its dtype unless `dtype` is given, its memory
    order), the `index`-th state buffer of `param`, placed to avoid 4K aliasing with it.
    A dtype may be float16/32/64 or bfloat16 (ml_dtypes)."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"index must be an int >= 0, got {type(index).__name__}")
    if index < 0:
        raise ValueError(f"index must be an int >= 0, got {index}")
    index = int(index) % _PAGE  # only its page offset matters (and a huge int stays exact)
    param = np.asarray(param)
    if not _is_float(param.dtype):
        raise TypeError(f"param must be a floating-point array, got dtype {param.dtype}")
    if dtype is None:
        dtype = param.dtype
    else:
        try:
            dtype = np.dtype(dtype)
        except (TypeError, ValueError):
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
        if not _is_float(dtype):
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    order = "F" if param.flags.f_contiguous and not param.flags.c_contiguous else "C"
    if param.size * dtype.itemsize < _MIN_STAGGER_NBYTES:
        return np.zeros(param.shape, dtype=dtype, order=order)
    raw = zeros_at_page_offset_nbytes(param.size * dtype.itemsize,
                                      param.ctypes.data + index * _STAGGER_BYTES, dtype)
    return raw.reshape(param.shape, order=order)


def _is_float(dtype):
    return dtype.kind == "f" or dtype.name == "bfloat16"


def zeros_at_page_offset_nbytes(nbytes, offset, dtype):
    """A flat zero array of `nbytes` bytes of `dtype` whose data starts at `offset`
    modulo 4096 (rounded down to the dtype's alignment)."""
    raw = np.zeros(nbytes + _PAGE, dtype=np.uint8)
    start = (offset - raw.ctypes.data) % _PAGE
    start -= start % dtype.itemsize  # keep the dtype's alignment
    return raw[start:start + nbytes].view(dtype)


def zeros_grad_like(param):
    """A zero array shaped like `param` (same dtype and memory order) for its gradient,
    at a page offset of its own: 544 bytes past param's, between param and its first
    state buffer from `zeros_state_like` (at least 544 bytes from each of them)."""
    param = np.asarray(param)
    order = "F" if param.flags.f_contiguous and not param.flags.c_contiguous else "C"
    if param.nbytes < _MIN_STAGGER_NBYTES:
        return np.zeros(param.shape, dtype=param.dtype, order=order)
    return zeros_at_page_offset(param, param.ctypes.data + _STAGGER_BYTES // 2)


def zeros_at_page_offset(like, offset):
    """A zero array shaped like `like` (same dtype and memory order) whose data starts
    at `offset` modulo 4096 (rounded down to the dtype's alignment), whatever its size."""
    order = "F" if like.flags.f_contiguous and not like.flags.c_contiguous else "C"
    flat = zeros_at_page_offset_nbytes(like.nbytes, offset, like.dtype)
    return flat.reshape(like.shape, order=order)
