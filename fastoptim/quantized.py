"""8-bit blockwise quantized optimizer state.

A `QuantizedState` stores one state buffer (a momentum buffer, ``exp_avg``,
``exp_avg_sq``, ...) in bitsandbytes' 8-bit blockwise format: uint8 ``codes`` shaped
like the param and one float32 ``absmax`` per block of 256 consecutive elements (in
memory order); element = ``dynamic_map(signed)[code] * absmax``.  The dynamic map is
bitsandbytes' (``create_dynamic_map``): signed for first moments (momentum_buffer,
exp_avg, grad_avg), unsigned for second moments (square_avg, exp_avg_sq,
max_exp_avg_sq).  That is 1 + 4/256 bytes per element instead of 4.

``fastoptim.adam_``, ``adamw_``, ``sgd_`` and ``rmsprop_``, and of the template
optimizers ``adagrad_``, ``lion_``, ``adamax_``, ``radam_``, ``nadam_`` and
``adamw_schedule_free_`` (its ``exp_avg_sq``; ``template_maps``), take QuantizedState
objects (or lists of them) in place of their state arrays: each block is decoded,
updated in float32 exactly as with float32 state, and re-encoded (new absmax, nearest
code) in one pass.  ``fastoptim.reference`` does the same in NumPy, bit for bit.
"""

import numpy as np

from fastoptim import reference
from fastoptim._backend import resolve_n_threads
from fastoptim.reference import BLOCK, dynamic_map

__all__ = ["QuantizedState"]


# --------------------------------------------------------------------------- codec tables
def _lookup_table(signed, base, buckets):
    """The kernels' bucket table for one map (see _kernels_quant8.pxi): for each sign
    and each 16-bit prefix of |y|'s float32 bits from `base`, the code at the bucket's
    low end, the code at its high end and the first low 16 bits taking the latter."""
    code = dynamic_map(signed)
    midpoints = (code[:-1] + code[1:]) / np.float32(2)
    prefix = (np.arange(buckets, dtype=np.uint32) + np.uint32(base)) << np.uint32(16)
    table = np.empty(2 * buckets, dtype=np.uint32)
    for sign in (0, 1):
        def code_of(low):
            bits = prefix | low.astype(np.uint32) | np.uint32(sign << 31)
            return np.searchsorted(midpoints, bits.view(np.float32), side="left")
        low_code = code_of(np.zeros(buckets, np.uint32))
        high_code = code_of(np.full(buckets, 0xFFFF, np.uint32))
        if np.abs(high_code - low_code).max() > 1:
            raise AssertionError("two midpoints in one bucket: the table cannot hold the map")
        # Bisect for the first low half-word giving high_code (the code is monotone in it).
        lo, hi = np.zeros(buckets, np.int64), np.full(buckets, 0xFFFF, np.int64)
        while (lo < hi).any():
            mid = (lo + hi) // 2
            above = code_of(mid) == high_code
            hi, lo = np.where(above, mid, hi), np.where(above, lo, mid + 1)
        switch = np.where(low_code == high_code, 0, lo)
        table[sign * buckets:(sign + 1) * buckets] = (
            low_code | (high_code << 8) | (switch << 16)).astype(np.uint32)
    # Magnitudes below the first bucket share it, and above 1 (clamped) the last one.
    for sign in (0, 1):
        for b in (0, buckets - 1):
            entry = int(table[sign * buckets + b])
            if entry & 0xFF != (entry >> 8) & 0xFF:
                raise AssertionError("an edge bucket of the table holds a midpoint")
    return table


_CODECS = {}


def _codecs(kernels):
    """(signed, unsigned) Quant8Codec of one compiled variant, built once."""
    pair = _CODECS.get(kernels)
    if pair is None:
        pair = tuple(kernels.Quant8Codec(dynamic_map(s), _lookup_table(
            s, kernels.Q8_BUCKET_BASE, kernels.Q8_BUCKETS)) for s in (True, False))
        _CODECS[kernels] = pair
    return pair


# ------------------------------------------------------------------------------ container
def _blocks(size):
    return -(-size // BLOCK)


def _check_signed(signed):
    if type(signed) is not bool and not isinstance(signed, np.bool_):
        raise TypeError(f"signed must be a bool (True for first moments, False for second "
                        f"moments), got {type(signed).__name__}")
    return bool(signed)


def _order(a):
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


class QuantizedState:
    """One optimizer state buffer in 8-bit blockwise form (bitsandbytes' format).

    Attributes
    ----------
    codes : numpy.ndarray of uint8, the param's shape (and memory order)
    absmax : numpy.ndarray of float32, shape (ceil(codes.size / 256),): the largest
        magnitude of each block of 256 consecutive elements (memory order)
    signed : bool, the code map: True (signed) for first moments, False (unsigned,
        non-negative values) for second moments

    The arrays are used as given (not copied) and updated in place by the optimizer
    functions, so ``codes.nbytes + absmax.nbytes`` is the state's memory: 1 + 1/64
    bytes per element.  Build one with `zeros_like` (fresh state) or `from_array`.
    """

    def __init__(self, codes, absmax, signed):
        signed = _check_signed(signed)
        for name, a, dtype in (("codes", codes, np.uint8), ("absmax", absmax, np.float32)):
            if type(a) is not np.ndarray:
                raise TypeError(f"{name} must be a numpy.ndarray of {np.dtype(dtype)}, got "
                                f"{type(a).__name__}")
            if a.dtype != dtype:
                raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
            if not (a.flags.c_contiguous or a.flags.f_contiguous):
                raise ValueError(f"{name} must be contiguous")
            if not a.flags.writeable:
                raise ValueError(f"{name} must be writeable: the optimizer updates it in place")
        if not absmax.dtype.isnative:
            raise TypeError("absmax must be in native byte order")
        if absmax.shape != (_blocks(codes.size),):
            raise ValueError(f"absmax must have shape ({_blocks(codes.size)},) for codes of "
                             f"size {codes.size} (one per {BLOCK} elements), got {absmax.shape}")
        if np.shares_memory(codes, absmax):
            raise ValueError("codes and absmax share memory")
        if (absmax < 0).any():  # NaN is legal: a block a NaN or an infinity reached
            raise ValueError("absmax must be >= 0 (a block's largest magnitude)")
        self.codes = codes
        self.absmax = absmax
        self.signed = signed

    @classmethod
    def zeros_like(cls, param, *, signed):
        """Zero state for `param` (any float array): the code of 0 everywhere, absmax 0.
        codes take the param's shape and memory order."""
        signed = _check_signed(signed)
        if not isinstance(param, np.ndarray):
            raise TypeError(f"param must be a numpy.ndarray, got {type(param).__name__}")
        if param.dtype.kind != "f":
            raise TypeError(f"param must be a floating-point array, got dtype {param.dtype}")
        zero = int(np.flatnonzero(dynamic_map(signed) == 0)[0])
        codes = np.full(param.shape, zero, dtype=np.uint8, order=_order(param))
        return cls(codes, np.zeros(_blocks(param.size), dtype=np.float32), signed)

    @classmethod
    def from_array(cls, values, *, signed, n_threads=None):
        """Encode a float array (rounded to float32, finite; >= 0 when unsigned) as a new
        QuantizedState: per block absmax = max |value|, then the nearest code of each
        value / absmax (bitsandbytes' quantize_blockwise)."""
        signed = _check_signed(signed)
        if not isinstance(values, np.ndarray) or isinstance(values, np.ma.MaskedArray):
            raise TypeError(f"values must be a numpy.ndarray, got {type(values).__name__}")
        if values.dtype.kind != "f":
            raise TypeError(f"values must be a floating-point array, got dtype {values.dtype}")
        with np.errstate(over="ignore"):
            values = values.astype(np.float32, order="K")   # the state's precision
        if not np.isfinite(values).all():
            raise ValueError("values must be finite in float32")
        if not signed and (values < 0).any():
            raise ValueError("values must be >= 0 for an unsigned (second-moment) state")
        values = np.require(values, requirements=["C"] if _order(values) == "C" else ["F"])
        state = cls.zeros_like(values, signed=signed)
        from fastoptim._backend import kernels
        kernels.quant8_encode(values, state.codes, state.absmax, _codecs(kernels)[not signed],
                              resolve_n_threads(n_threads))
        return state

    def dequantize(self):
        """The state as a new float32 array shaped like codes."""
        _check_arrays(self, "state")
        return reference.dequantize_blockwise(self.codes, self.absmax, self.signed)

    @property
    def shape(self):
        return self.codes.shape

    @property
    def nbytes(self):
        """Bytes the state occupies (codes and absmax)."""
        return self.codes.nbytes + self.absmax.nbytes

    def __repr__(self):
        kind = "signed" if self.signed else "unsigned"
        return f"QuantizedState(shape={self.codes.shape}, {kind}, {self.nbytes} bytes)"


def _check_arrays(state, name):
    """The attributes may have been replaced since construction: check them again."""
    if not isinstance(state, QuantizedState):
        raise TypeError(f"{name} must be a QuantizedState, got {type(state).__name__}")
    try:
        QuantizedState(state.codes, state.absmax, state.signed)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


# ------------------------------------------------------------------------- functional glue
def is_quantized(buffer):
    """True for a QuantizedState, or a list/tuple starting with one (the rest is
    checked by the 8-bit path; a float path meeting one refuses it)."""
    if isinstance(buffer, QuantizedState):
        return True
    return (isinstance(buffer, (list, tuple)) and len(buffer) > 0
            and isinstance(buffer[0], QuantizedState))


def _arrays(name, buffer, signed, indexed):
    """(codes, absmax) of a state argument: single arrays, or tuples when indexed."""
    items = list(buffer) if indexed and isinstance(buffer, (list, tuple)) else [buffer]
    if indexed and not isinstance(buffer, (list, tuple)):
        raise TypeError(f"{name} must be a list/tuple of QuantizedState (param is a list), "
                        f"got {type(buffer).__name__}")
    for i, item in enumerate(items):
        label = f"{name}[{i}]" if indexed else name
        if not isinstance(item, QuantizedState):
            raise TypeError(f"{label} must be a QuantizedState like the other 8-bit state "
                            f"buffers (8-bit and float state cannot be mixed in one call), "
                            f"got {type(item).__name__}")
        if _check_signed(item.signed) != signed:
            raise ValueError(f"{label} must be a {'signed' if signed else 'unsigned'} "
                             f"QuantizedState ({'first' if signed else 'second'} moment), "
                             f"got {'signed' if item.signed else 'unsigned'}")
    if not indexed:
        return items[0].codes, items[0].absmax
    return tuple(s.codes for s in items), tuple(s.absmax for s in items)


def _states(param, specs):
    """Flat (codes, absmax, ...) for the kernels; specs: (name, buffer, signed, used)."""
    indexed = not isinstance(param, np.ndarray)
    out = ()
    for name, buffer, signed, used in specs:
        out += _arrays(name, buffer, signed, indexed) if used else (None, None)
    return out


def sgd(kernels, param, grad, momentum_buffer, lr, momentum, dampening, nesterov,
        weight_decay, maximize, first, n_threads):
    signed, _ = _codecs(kernels)
    states = _states(param, [("momentum_buffer", momentum_buffer, True, True)])
    kernels.sgd8(param, grad, *states, signed, lr, momentum, dampening, nesterov,
                 weight_decay, maximize, first, n_threads)


def rmsprop(kernels, param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
            weight_decay, momentum, centered, maximize, n_threads):
    signed, unsigned = _codecs(kernels)
    states = _states(param, [("square_avg", square_avg, False, True),
                             ("momentum_buffer", momentum_buffer, True, momentum > 0),
                             ("grad_avg", grad_avg, True, centered)])
    kernels.rmsprop8(param, grad, *states, signed, unsigned, lr, alpha, eps, weight_decay,
                     momentum, centered, maximize, n_threads)


def adam(kernels, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, *scalars):
    signed, unsigned = _codecs(kernels)
    states = _states(param, [("exp_avg", exp_avg, True, True),
                             ("exp_avg_sq", exp_avg_sq, False, True),
                             ("max_exp_avg_sq", max_exp_avg_sq, False, amsgrad)])
    kernels.adam8(param, grad, *states, signed, unsigned, amsgrad, *scalars)


def template_maps(kernels, name):
    """((buffer, signed), ...) of template optimizer `name`'s state buffers when stored
    8-bit (generated from _kernels_elementwise.pxi.tp; signed None: the buffer stays a
    float array, as Schedule-Free's z), or None: its state takes no 8-bit codes
    (why_not_8bit)."""
    return kernels.ELEMENTWISE_8BIT.get(name)


#: why a template optimizer's state is not stored 8-bit (tests/test_quant8_elementwise.py
#: shows each on the NumPy rules)
_NOT_8BIT = {
    "adadelta": "with both buffers 8-bit its step sqrt(acc_delta + eps) / sqrt(square_avg "
                "+ eps) grows where square_avg decodes as 0, and diverges",
    "rprop": "its per-element step sizes stall: a 1.2x growth rounds back to the same code",
    "asgd": "ax is an average of the weights: updates below the code spacing are lost",
}


def why_not_8bit(name):
    """The reason template optimizer `name` takes no 8-bit state (for error messages)."""
    return _NOT_8BIT.get(name, "8-bit codes would destroy its state")


def template(kernels, name, arrays, scalars, n_threads):
    """Template optimizer `name` (kernels.<name>8) on (param, grad, *8-bit states)."""
    maps = template_maps(kernels, name)
    if maps is None:
        raise TypeError(f"{name}_ takes no 8-bit state (QuantizedState): "
                        f"{why_not_8bit(name)}; pass float arrays (or float16/bfloat16 ones)")
    param, grad, *buffers = arrays
    signed, unsigned = _codecs(kernels)
    states = ()
    for (buffer_name, is_signed), buffer in zip(maps, buffers):
        if is_signed is not None:
            states += _states(param, [(buffer_name, buffer, is_signed, True)])
        elif is_quantized(buffer):
            raise TypeError(f"{buffer_name} must be a float array like the param: it is an "
                            "iterate like the weights, and updates below 8-bit codes' "
                            "spacing would be lost (only the other state buffers take "
                            "QuantizedState)")
        else:
            states += (buffer,)  # checked by the kernel, as the param
    getattr(kernels, name + "8")(param, grad, *states, signed, unsigned, *scalars, n_threads)
