"""Pure-NumPy reference optimizers, written from the update rules.

Same signatures and semantics as the compiled ``fastoptim.sgd_`` / ``rmsprop_`` /
``adam_`` / ``adamw_``: they update ``param`` and the state buffers in place and
return None.  Tests compare the kernels against these, and the benchmarks time them
as the "plain NumPy" baseline.

Every operation is written in the order of torch.optim's single-tensor code and
evaluated with IEEE rounding after each operation (NumPy never fuses a*b+c), so the
compiled kernels (built with ``-ffp-contract=off``) match these bit for bit.

Scalars are Python floats: under NumPy 2 (NEP 50) a Python float does not upcast a
float32 array, while a NumPy float64 scalar would.  Scalars derived from
hyperparameters (bias corrections, step sizes) are computed in double first, as in
the kernels.  The reference does not validate its inputs; the compiled API does.
"""

import functools
import inspect
import math

import numpy as np

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "lerp_", "dynamic_map", "quantize_blockwise",
           "dequantize_blockwise"]


def _as_lists(*arrays):
    """Accept single arrays or sequences of arrays, as the compiled API does."""
    if isinstance(arrays[0], np.ndarray):
        return [[a] for a in arrays]
    n = len(arrays[0])
    return [list(a) if a is not None else [None] * n for a in arrays]


def lerp_(start, end, weight):
    """start += weight * (end - start), in place, as torch's CPU lerp computes it."""
    dtype = start.dtype.type
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        one_minus_w = float(dtype(1) - dtype(weight))
        start[...] = end - (end - start) * one_minus_w


def _centered_sq(sq, ga):
    """sq - ga * ga.  torch computes it as one fused multiply-add (addcmul), so an
    infinite sq stays infinite when ga * ga alone overflows (a finite ga): inf, where
    the separately rounded product gives inf - inf = NaN."""
    return np.where(np.isposinf(sq) & np.isfinite(ga), sq, sq - ga * ga)


def sgd_(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
         dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False, n_threads=None):
    """p -= lr * g, with torch.optim.SGD's momentum, dampening, Nesterov and L2."""
    for p, g, buf in zip(*_as_lists(param, grad, momentum_buffer)):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            if step == 1:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g


def rmsprop_(param, grad, square_avg, *, step, lr=1e-2, alpha=0.99, eps=1e-8,
             weight_decay=0.0, momentum=0.0, momentum_buffer=None, centered=False,
             grad_avg=None, maximize=False, n_threads=None):
    """torch.optim.RMSprop: p -= lr * g / (sqrt(sq) + eps), optionally centered / momentum."""
    del step  # RMSProp keeps no bias correction; step is validated by the compiled API
    lists = _as_lists(param, grad, square_avg, momentum_buffer, grad_avg)
    for p, g, sq, buf, ga in zip(*lists):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        sq *= alpha
        sq += (1 - alpha) * g * g
        if centered:
            lerp_(ga, g, 1 - alpha)
            avg = np.sqrt(_centered_sq(sq, ga))
        else:
            avg = np.sqrt(sq)
        avg += eps
        if momentum > 0:
            buf *= momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)


def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
          max_exp_avg_sq=None, maximize=False, n_threads=None):
    """torch.optim.Adam / AdamW: bias-corrected moments, eps added after the correction."""
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = math.sqrt(bias_correction2)
    lists = _as_lists(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    for p, g, m, v, vmax in zip(*lists):
        g = -g if maximize else g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        lerp_(m, g, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            np.maximum(vmax, v, out=vmax)
            denom = np.sqrt(vmax) / bias_correction2_sqrt + eps
        else:
            denom = np.sqrt(v) / bias_correction2_sqrt + eps
        p -= step_size * (m / denom)


def adamw_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None,
           maximize=False, n_threads=None):
    """AdamW: adam_ with decoupled weight decay (p *= 1 - lr * weight_decay first)."""
    adam_(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
          eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True,
          amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq, maximize=maximize)


# ---------------------------------------------------------------------------
# 8-bit blockwise state (fastoptim.quantized.QuantizedState)
# ---------------------------------------------------------------------------
# bitsandbytes' format: blocks of BLOCK consecutive elements (in memory order), one
# float32 absmax per block, codes indexing a 256-value dynamic map.  Encoding is
# bitsandbytes' own reference rule (its pure-PyTorch "default" backend): scale by
# RN(1 / max(absmax, 1e-38)), clamp to [-1, 1], and take the code whose interval
# between midpoints of neighbouring codes holds the value (a value on a midpoint takes
# the lower code).  Decoding is code_value * absmax in float32.

BLOCK = 256
_ABSMAX_FLOOR = np.float32(1e-38)


def _torch_linspace_f32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=torch.float32) on the CPU: endpoints and
    step rounded to float32, each point computed in double from the nearer end."""
    start, end = np.float32(start), np.float32(end)
    step = np.float64(np.float32((end - start) / np.float32(steps - 1)))
    i = np.arange(steps)
    from_start = np.float64(start) + step * i
    from_end = np.float64(end) - step * (steps - 1 - i)
    return np.where(i < steps // 2, from_start, from_end).astype(np.float32)


_MAPS = {}


def dynamic_map(signed):
    """bitsandbytes.functional.create_dynamic_map(signed) (7 exponent bits, 8 bits in
    all), as float32: per decade 10**-6 .. 10**0, the means of neighbouring points of
    linspace(0.1, 1) scaled by the decade (mirrored when signed), plus 0 and 1, sorted."""
    if bool(signed) in _MAPS:
        return _MAPS[bool(signed)]
    values = []
    for i in range(7):
        bounds = _torch_linspace_f32(0.1, 1.0, (2 ** i if signed else 2 ** (i + 1)) + 1)
        means = (bounds[:-1] + bounds[1:]) / np.float32(2)
        scale = 10.0 ** (i - 6)
        values += (means * np.float32(scale)).tolist()
        if signed:
            values += (means * np.float32(-scale)).tolist()
    values += [0.0, 1.0]
    values.sort()
    table = np.array(values, dtype=np.float32)
    table.flags.writeable = False
    return _MAPS.setdefault(bool(signed), table)


def _memory_order(a):
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def quantize_blockwise(values, signed):
    """(codes, absmax) of a float32 array: codes uint8 shaped like `values` (same memory
    order), absmax float32 of ceil(size / BLOCK) blocks.  A block holding a NaN or an
    infinity is stored as absmax NaN and the code of 0 (it decodes to NaN)."""
    order = _memory_order(values)
    flat = np.asarray(values, dtype=np.float32).ravel(order=order)
    code = dynamic_map(signed)
    midpoints = (code[:-1] + code[1:]) / np.float32(2)
    n = flat.size
    nblocks = -(-n // BLOCK)
    padded = np.zeros(nblocks * BLOCK, dtype=np.float32)
    padded[:n] = flat
    blocks = padded.reshape(nblocks, BLOCK)
    with np.errstate(invalid="ignore", over="ignore"):
        absmax = np.abs(blocks).max(axis=1) if nblocks else np.zeros(0, np.float32)
        scale = np.float32(1) / np.maximum(absmax, _ABSMAX_FLOOR)
        normed = np.clip(blocks * scale[:, None], np.float32(-1), np.float32(1))
    codes = np.searchsorted(midpoints, normed.ravel()[:n], side="left").astype(np.uint8)
    bad = ~np.isfinite(absmax)
    if bad.any():
        zero = np.uint8(np.flatnonzero(code == 0)[0])
        codes[np.repeat(bad, BLOCK)[:n]] = zero
        absmax[bad] = np.nan
    return codes.reshape(values.shape, order=order), absmax.astype(np.float32)


def dequantize_blockwise(codes, absmax, signed):
    """float32 array shaped like `codes`: map[code] * absmax of the code's block."""
    order = _memory_order(codes)
    flat = codes.ravel(order=order)
    scale = np.repeat(absmax.astype(np.float32, copy=False), BLOCK)[:flat.size]
    return (dynamic_map(signed)[flat] * scale).reshape(codes.shape, order=order)


def _with_quantized_state(update, used_states):
    """`update` (one of the rules above) also taking QuantizedState buffers, or lists of
    them, wherever it takes a state array: each used one is decoded to an array of the
    param's dtype, updated by the float rule, rounded to float32 and encoded back into
    its codes and absmax in place, which is what the 8-bit kernels do block by block."""
    signature = inspect.signature(update)

    @functools.wraps(update)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        params = arguments["param"]
        params = [params] if isinstance(params, np.ndarray) else list(params)
        encoded = []
        for name, used in used_states.items():
            buffer = arguments[name]
            if not used(arguments) or buffer is None or (
                    isinstance(buffer, np.ndarray) or not hasattr(
                        buffer if not isinstance(buffer, (list, tuple)) else buffer[0], "codes")):
                continue
            states = list(buffer) if isinstance(buffer, (list, tuple)) else [buffer]
            arrays = [dequantize_blockwise(s.codes, s.absmax, s.signed).astype(p.dtype)
                      for s, p in zip(states, params)]
            arguments[name] = arrays if isinstance(buffer, (list, tuple)) else arrays[0]
            encoded += zip(states, arrays)
        update(*bound.args, **bound.kwargs)
        for state, array in encoded:
            with np.errstate(over="ignore"):
                state.codes[...], state.absmax[...] = quantize_blockwise(
                    array.astype(np.float32), state.signed)

    return wrapper


sgd_ = _with_quantized_state(sgd_, {"momentum_buffer": lambda a: a["momentum"] != 0})
rmsprop_ = _with_quantized_state(rmsprop_, {
    "square_avg": lambda a: True, "momentum_buffer": lambda a: a["momentum"] > 0,
    "grad_avg": lambda a: a["centered"]})
adam_ = _with_quantized_state(adam_, {
    "exp_avg": lambda a: True, "exp_avg_sq": lambda a: True,
    "max_exp_avg_sq": lambda a: a["amsgrad"]})
adamw_ = _with_quantized_state(adamw_, {
    "exp_avg": lambda a: True, "exp_avg_sq": lambda a: True,
    "max_exp_avg_sq": lambda a: a["amsgrad"]})
