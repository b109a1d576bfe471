"""Pure-NumPy reference optimizers, written from the update rules.

Same signatures and semantics as the compiled ``fastoptim.sgd_`` / ``rmsprop_`` /
``adam_`` / ``adamw_``: they update ``param`` and the state buffers in place and
return None.  Tests compare the kernels against these, and the benchmarks time them
as the "plain NumPy" baseline.

Every operation is written in the order of torch.optim's single-tensor code and
evaluated with IEEE rounding after each operation (NumPy never fuses a*b+c), so the
compiled kernels (built with ``-ffp-contract=off``) match these bit for bit.

Compact storage (float16 / bfloat16 buffers, a float32 ``master``, ``rounding`` and
``seed``) is the float32 rule on float32 copies of the buffers, each 16-bit buffer then
rounded back: to nearest even with NumPy's / ml_dtypes' casts, or stochastically with
the kernels' hash written out in NumPy below (``_round_16bit``).

Scalars are Python floats: under NumPy 2 (NEP 50) a Python float does not upcast a
float32 array, while a NumPy float64 scalar would.  Scalars derived from
hyperparameters (bias corrections, step sizes) are computed in double first, as in
the kernels.  The reference does not validate its inputs; the compiled API does.
"""

import math

import numpy as np

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "lerp_"]


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


# ----------------------------------------------------------- compact storage
_M64 = (1 << 64) - 1
_M32 = np.uint32(0xFFFFFFFF)


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _random_bits(seed, step, role, n):
    """32 random bits per element 0..n-1 of a buffer: lowbias32 of the element index
    mixed with the key of (seed, step, role); role 0 = param, 1-3 = state buffers."""
    z = _splitmix64(_splitmix64(seed) ^ ((step * 4 + role) & _M64))
    key_lo, key_hi = np.uint32(z & 0xFFFFFFFF), np.uint32(z >> 32)
    index = np.arange(n, dtype=np.uint64)
    high = (index >> np.uint64(32)).astype(np.uint32)
    x = (index.astype(np.uint32) ^ key_lo) + (key_hi ^ (high * np.uint32(0x9E3779B9)))
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def _f16_stochastic(u, r):
    """float32 bits -> float16 bits, stochastic: add random bits below the result's last
    place to the magnitude, truncate; overflow -> inf, NaN -> quiet NaN."""
    one = np.uint32(1)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    f = u & np.uint32(0x7FFFFFFF)
    e = f >> np.uint32(23)
    normal = np.minimum((f - np.uint32(112 << 23) + (r >> np.uint32(19))) >> np.uint32(13),
                        np.uint32(0x7C00))
    # subnormal results: value = full / 2**shift units of 2**-24; shifts past 31 are
    # split (the part beyond 31 truncates: those values are below half of 2**-24)
    e_sub = np.where(e < 113, np.maximum(e, one), np.uint32(112))
    full = (f & np.uint32(0x7FFFFF)) | np.where(e > 0, np.uint32(0x800000), np.uint32(0))
    shift = np.uint32(126) - e_sub
    sh2 = np.minimum(shift, np.uint32(31))
    fa = full >> np.minimum(shift - sh2, np.uint32(31))
    sub = (fa + (r >> (np.uint32(32) - sh2))) >> sh2
    out = np.where(e < 113, sub, normal)
    out = np.where(f > np.uint32(0x7F800000),
                   np.uint32(0x7E00) | ((f >> np.uint32(13)) & np.uint32(0x3FF)), out)
    return (out | sign).astype(np.uint16)


def _round_16bit(x, dtype, rounding, seed, step, role):
    """float32 array x rounded to dtype (float16 or bfloat16), as the kernels store it."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    u = x.view(np.uint32)
    nan = np.isnan(x)
    if rounding == "nearest":
        out = x.astype(dtype).view(np.uint16)  # NumPy's / ml_dtypes' cast (even)
        if dtype == np.float16:  # a signalling NaN comes out quiet, as from F16C
            out = np.where(nan, out | np.uint16(0x0200), out)
        return out.view(dtype)
    r = _random_bits(seed, step, role, x.size)
    if dtype == np.float16:
        return _f16_stochastic(u, r).view(dtype)
    rounded = ((u + (r >> np.uint32(16))) >> np.uint32(16)).astype(np.uint16)
    quiet = ((u >> np.uint32(16)) & np.uint32(0x8000) | np.uint32(0x7FC0)).astype(np.uint16)
    return np.where(nan, quiet, rounded).view(dtype)


def _is_16bit(a):
    return a is not None and a.dtype.name in ("float16", "bfloat16")


def _compact_step(rule, param, grad, states, master, rounding, seed, step, **options):
    """rule (the float32 reference) on float32 copies of every buffer of each array
    (the master in place of a 16-bit param), then each 16-bit buffer rounded back.
    states: {keyword or position: buffer or list}; position 0-2 = state buffer 0-2."""
    names = list(states)
    lists = _as_lists(param, grad, *(states[k] for k in names),
                      master if master is not None else None)
    seeds = list(seed) if isinstance(seed, (list, tuple)) else None
    for k, (p, g, *bufs, mp) in enumerate(zip(*lists)):
        p32 = mp if mp is not None else p.astype(np.float32)
        wide = [None if b is None else b.astype(np.float32) for b in bufs]
        kw = {name: w for name, w in zip(names, wide) if not isinstance(name, int)}
        args = [w for name, w in zip(names, wide) if isinstance(name, int)]
        rule(p32, g.astype(np.float32), *args, step=step, **kw, **options)
        s_k = seeds[k] if seeds is not None else (seed + k) & _M64
        for name, b, w in zip(names, bufs, wide):
            if _is_16bit(b):
                role = 1 + _STATE_ROLE[name]
                b[...] = _round_16bit(w, b.dtype, rounding, s_k, step, role).reshape(b.shape)
            elif b is not None:
                b[...] = w
        if _is_16bit(p):
            p[...] = _round_16bit(p32, p.dtype, rounding, s_k, step, 0).reshape(p.shape)
        elif mp is None:
            p[...] = p32


# The state buffer each keyword is (its stochastic rounding stream): the kernels' order.
_STATE_ROLE = {0: 0, 1: 1, "momentum_buffer": 1, "square_avg": 0, "exp_avg": 0,
               "exp_avg_sq": 1, "max_exp_avg_sq": 2, "grad_avg": 2}


def _needs_compact(master, rounding, *arrays):
    if master is not None:
        return True
    for a in arrays:
        first = a[0] if isinstance(a, (list, tuple)) and len(a) else a
        if isinstance(first, np.ndarray) and _is_16bit(first):
            return True
    return False


def sgd_(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
         dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False, master=None,
         rounding="nearest", seed=0, n_threads=None):
    """p -= lr * g, with torch.optim.SGD's momentum, dampening, Nesterov and L2."""
    if _needs_compact(master, rounding, param, grad, momentum_buffer):
        return _compact_step(sgd_, param, grad, {0: momentum_buffer if momentum != 0 else None},
                             master, rounding, seed, step, lr=lr, momentum=momentum,
                             dampening=dampening,
                             nesterov=nesterov, weight_decay=weight_decay,
                             maximize=maximize)
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
             grad_avg=None, maximize=False, master=None, rounding="nearest", seed=0,
             n_threads=None):
    """torch.optim.RMSprop: p -= lr * g / (sqrt(sq) + eps), optionally centered / momentum."""
    if _needs_compact(master, rounding, param, grad, square_avg, momentum_buffer, grad_avg):
        return _compact_step(rmsprop_, param, grad,
                             {0: square_avg,
                              "momentum_buffer": momentum_buffer if momentum > 0 else None,
                              "grad_avg": grad_avg if centered else None},
                             master, rounding, seed, step, lr=lr, alpha=alpha, eps=eps,
                             weight_decay=weight_decay, momentum=momentum,
                             centered=centered, maximize=maximize)
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
          max_exp_avg_sq=None, maximize=False, master=None, rounding="nearest", seed=0,
          n_threads=None):
    """torch.optim.Adam / AdamW: bias-corrected moments, eps added after the correction."""
    if _needs_compact(master, rounding, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        return _compact_step(adam_, param, grad,
                             {0: exp_avg, 1: exp_avg_sq,
                              "max_exp_avg_sq": max_exp_avg_sq if amsgrad else None},
                             master, rounding, seed, step, lr=lr, beta1=beta1, beta2=beta2,
                             eps=eps, weight_decay=weight_decay,
                             decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                             maximize=maximize)
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
           maximize=False, master=None, rounding="nearest", seed=0, n_threads=None):
    """AdamW: adam_ with decoupled weight decay (p *= 1 - lr * weight_decay first)."""
    adam_(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
          eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True,
          amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq, maximize=maximize,
          master=master, rounding=rounding, seed=seed)
