"""Pure-NumPy reference optimizers, written from the update rules.

Same signatures and semantics as the compiled ``fastoptim.sgd_`` / ``rmsprop_`` /
``adam_`` / ``adamw_``: they update ``param`` and the state buffers in place and
return None.  Tests compare the kernels against these, and the benchmarks time them
as the "plain NumPy" baseline.

Every operation is written in the order of torch.optim's single-tensor code and
evaluated with IEEE rounding after each operation (NumPy never fuses a*b+c), so the
compiled kernels (built with ``-ffp-contract=off``) match these bit for bit.  Where
torch fuses and the kernels call fma (the last update of Muon and Adafactor),
``_add_scaled`` builds the fused result from exact parts.

Compact storage (float16 / bfloat16 buffers, a float32 ``master``, ``rounding`` and
``seed``) is the float32 rule on float32 copies of the buffers, each 16-bit buffer then
rounded back: to nearest even with NumPy's / ml_dtypes' casts, or stochastically with
the kernels' hash written out in NumPy below (``_round_16bit``).

Scalars are Python floats: under NumPy 2 (NEP 50) a Python float does not upcast a
float32 array, while a NumPy float64 scalar would.  Scalars derived from
hyperparameters (bias corrections, step sizes) are computed in double first, as in
the kernels.  The reference does not validate its inputs; the compiled API does.
"""

import functools
import inspect
import math
from itertools import chain

import numpy as np

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "lerp_", "adagrad_", "lion_", "adamax_",
           "radam_", "adadelta_", "rprop_", "nadam_", "asgd_", "adamw_schedule_free_",
           "adafactor_", "muon_", "dynamic_map", "quantize_blockwise", "dequantize_blockwise"]


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


# ------------------------------------------------- the template's optimizers
def _sign(x):
    """torch.sign: -1, 0 or 1 in x's dtype; 0 for NaN and -0.0 (np.sign gives NaN, -0.0)."""
    one = x.dtype.type(1)
    return np.where(x > 0, one, 0).astype(x.dtype) - np.where(x < 0, one, 0).astype(x.dtype)


def adagrad_(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False, n_threads=None):
    """torch.optim.Adagrad: sum += g * g;  p -= clr * g / (sqrt(sum) + eps)."""
    clr = lr / (1 + (step - 1) * lr_decay)
    for p, g, ss in zip(*_as_lists(param, grad, state_sum)):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        ss += g * g
        p += (-clr * g) / (np.sqrt(ss) + eps)


def lion_(param, grad, exp_avg, *, step, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
          n_threads=None):
    """lion-pytorch's update_fn: p *= 1 - lr * wd;  p -= lr * sign(beta1 * m + (1 - beta1) * g);
    m = beta2 * m + (1 - beta2) * g."""
    del step  # Lion keeps no step count; the compiled API checks it
    for p, g, m in zip(*_as_lists(param, grad, exp_avg)):
        p *= 1 - lr * weight_decay
        p += -lr * _sign(m * beta1 + (1 - beta1) * g)
        m *= beta2
        m += (1 - beta2) * g


def adamax_(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
            eps=1e-8, weight_decay=0.0, maximize=False, n_threads=None):
    """torch.optim.Adamax: m = lerp(m, g, 1 - beta1);  u = max(beta2 * u, |g| + eps);
    p -= lr / (1 - beta1**t) * m / u."""
    clr = lr / (1 - beta1 ** step)
    for p, g, m, u in zip(*_as_lists(param, grad, exp_avg, exp_inf)):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        lerp_(m, g, 1 - beta1)
        u *= beta2
        np.maximum(u, np.abs(g) + eps, out=u)
        p += (-clr * m) / u


def radam_rectification(beta2, step):
    """RAdam's (rho_t > 5, rect) for this step, in double, as torch computes them."""
    bias_correction2 = 1 - beta2 ** step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
    if not rho_t > 5.0:
        return False, 1.0
    rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    return True, rect


def radam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
           n_threads=None):
    """torch.optim.RAdam: Adam's moments; the rectified adaptive step when rho_t > 5,
    else p -= lr * m / (1 - beta1**t)."""
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    rectify, rect = radam_rectification(beta2, step)
    for p, g, m, v in zip(*_as_lists(param, grad, exp_avg, exp_avg_sq)):
        g = -g if maximize else g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        lerp_(m, g, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        bcm = m / bias_correction1
        if rectify:
            p -= ((bcm * lr) * (bias_correction2 ** 0.5 / (np.sqrt(v) + eps))) * rect
        else:
            p -= bcm * lr


def adadelta_(param, grad, square_avg, acc_delta, *, step, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False, n_threads=None):
    """torch.optim.Adadelta: sq = rho * sq + (1 - rho) * g * g;
    d = sqrt(acc + eps) / sqrt(sq + eps) * g;  acc = rho * acc + (1 - rho) * d * d;  p -= lr * d."""
    del step  # Adadelta's update does not use it; the compiled API checks it
    for p, g, sq, acc in zip(*_as_lists(param, grad, square_avg, acc_delta)):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        sq *= rho
        sq += (1 - rho) * g * g
        d = (np.sqrt(acc + eps) / np.sqrt(sq + eps)) * g
        acc *= rho
        acc += (1 - rho) * d * d
        p += -lr * d


def rprop_(param, grad, prev, step_size, *, step, etaminus=0.5, etaplus=1.2,
           step_size_min=1e-6, step_size_max=50.0, maximize=False, n_threads=None):
    """torch.optim.Rprop: step sizes grow by etaplus where the gradient kept its sign,
    shrink by etaminus where it flipped (and that gradient counts as 0), clamped;
    p -= sign(g) * step_size;  prev = g."""
    del step  # Rprop's update does not use it; the compiled API checks it
    for p, g, pv, ss in zip(*_as_lists(param, grad, prev, step_size)):
        dtype = p.dtype.type
        g = -g if maximize else g.copy()
        d = g * pv
        factor = np.where(d > 0, dtype(etaplus), np.where(d < 0, dtype(etaminus), dtype(1)))
        ss *= factor
        np.minimum(np.maximum(ss, dtype(step_size_min)), dtype(step_size_max), out=ss)
        g[d < 0] = 0
        p -= _sign(g) * ss
        pv[...] = g


def nadam_momentum(beta1, momentum_decay, step):
    """NAdam's momentum coefficient mu_t, in double, as torch computes it."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))


def nadam_(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, lr=2e-3, beta1=0.9,
           beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
           decoupled_weight_decay=False, maximize=False, n_threads=None):
    """torch.optim.NAdam: ``mu_product`` is mu_1 * ... * mu_t (this step's mu included)."""
    bias_correction2 = 1 - beta2 ** step
    mu = nadam_momentum(beta1, momentum_decay, step)
    mu_next = nadam_momentum(beta1, momentum_decay, step + 1)
    grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
    exp_avg_coef = (-lr * mu_next) / (1.0 - mu_product * mu_next)
    for p, g, m, v in zip(*_as_lists(param, grad, exp_avg, exp_avg_sq)):
        g = -g if maximize else g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        lerp_(m, g, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        denom = np.sqrt(v / bias_correction2) + eps
        p += (grad_coef * g) / denom
        p += (exp_avg_coef * m) / denom


def asgd_eta(lr, lambd, alpha, step):
    """ASGD's next eta = lr / (1 + lambd * lr * step) ** alpha, in double (inf or NaN where
    Python's float power would raise).  Python floats first: the class runs it every step."""
    try:
        return lr / math.pow(1 + lambd * lr * step, alpha)
    except (OverflowError, ValueError, ZeroDivisionError):  # the same C pow, IEEE results
        with np.errstate(all="ignore"):
            return float(lr / (np.float64(1 + lambd * lr * step) ** alpha))


def asgd_(param, grad, ax, *, step, eta, mu, lambd=1e-4, weight_decay=0.0, maximize=False,
          n_threads=None):
    """torch.optim.ASGD with this step's ``eta`` and ``mu`` (its per-param state):
    p = p * (1 - lambd * eta) - eta * g;  ax += (p - ax) * mu (ax = p when mu == 1)."""
    del step  # eta and mu carry the schedule; the compiled API checks step
    for p, g, a in zip(*_as_lists(param, grad, ax)):
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        p *= 1 - lambd * eta
        p += -eta * g
        if mu != 1:
            a += (p - a) * mu
        else:
            a[...] = p


def adamw_schedule_free_(param, grad, z, exp_avg_sq, *, ckp1, lr, bias_correction2,
                         beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=None,
                         n_threads=None):
    """schedulefree.AdamWScheduleFree's step (its single-tensor path) on y = param, with the
    step's scalars: ``lr`` (warmup applied), ``ckp1`` = weight / weight_sum and
    ``bias_correction2`` = 1 - beta2**(k + 1).  ``step`` keys stochastic rounding only."""
    del step
    for y, g, zz, v in zip(*_as_lists(param, grad, z, exp_avg_sq)):
        v *= beta2
        v += (1 - beta2) * g * g
        g = g / (np.sqrt(v / bias_correction2) + eps)
        if weight_decay != 0:
            g = g + weight_decay * y
        lerp_(y, zz, ckp1)
        y += (lr * (beta1 * (1 - ckp1) - 1)) * g
        zz -= lr * g


# Compact storage for the rules above: the same float32 rule on widened copies
# (_compact_step), as the kernels' <name>_compact entries run their float32 loops.
def _with_compact_storage(update):
    """`update` (a template optimizer's rule above) also taking compact storage: 16-bit
    param, grad or state buffers, ``master=``, ``rounding=``, ``seed=`` (module
    docstring), as the compiled functions do.  Its state buffers are the positional
    parameters after param and grad, state buffer k of the kernels in that order."""
    signature = inspect.signature(update)
    names = [name for name, p in signature.parameters.items()
             if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD][2:]

    @functools.wraps(update)
    def wrapper(*args, master=None, rounding="nearest", seed=0, **kwargs):
        if not _needs_compact(master, rounding, *args, *kwargs.values()):
            return update(*args, **kwargs)  # float32/float64: no binding cost per call
        arguments = signature.bind(*args, **kwargs).arguments
        buffers = [arguments.pop(name) for name in names]
        param, grad = arguments.pop("param"), arguments.pop("grad")
        step = arguments.pop("step", None)
        return _compact_step(update, param, grad, dict(enumerate(buffers)), master, rounding,
                             seed, step, **arguments)

    return wrapper


adagrad_, lion_, adamax_, radam_, adadelta_, rprop_, nadam_, asgd_, adamw_schedule_free_ = map(
    _with_compact_storage, (adagrad_, lion_, adamax_, radam_, adadelta_, rprop_, nadam_, asgd_,
                            adamw_schedule_free_))


# ----------------------------------------------------------- Adafactor, Muon
# The compiled kernels sum in double in a fixed order (fastoptim/_kernels_factored.pxi):
# a row with four accumulators over the indices i % 4 (the tail goes to the first),
# combined as (a0 + a1) + (a2 + a3); a column over the rows in order; a total over the
# rows in order.  np.cumsum adds in order, so these helpers give the same bits.

def _row_sumsq(x):
    """Sum of x*x per row of the 2-D array x, in double, in the kernels' order."""
    sq = x.astype(np.float64) ** 2  # exact for float32; one rounding for float64, as x*x
    n, c = sq.shape
    c4 = c - c % 4
    lanes = np.zeros((n, 4))
    if c4:
        lanes = np.cumsum(sq[:, :c4].reshape(n, c4 // 4, 4), axis=1)[:, -1, :].copy()
    for j in range(c4, c):
        lanes[:, 0] += sq[:, j]
    return (lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])


def _ordered_sum(v):
    """v[0] + v[1] + ... in order (a double)."""
    return float(np.cumsum(v)[-1]) if len(v) else 0.0


def _clamp_min(x, low):
    """torch.clamp(x, min=low) (NaN stays NaN)."""
    return np.maximum(x, low)


def adafactor_(param, grad, row_var=None, col_var=None, variance=None, *, step, lr=1e-2,
               beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0,
               maximize=False, n_threads=None):
    """torch.optim.Adafactor (_single_tensor_adafactor): factored second moment
    (row_var, col_var) for params of >= 2 dims, full (variance) for the others."""
    lists = _as_lists(param, grad, row_var, col_var, variance)
    for p, g, rv, cv, var in zip(*lists):
        dtype = p.dtype.type
        g = -g if maximize else g
        e1 = np.finfo(p.dtype).eps.item() if eps1 is None else eps1
        n = p.size
        if n == 0:
            continue
        weight = step ** beta2_decay
        rho = min(lr, 1 / (step ** 0.5))
        cols = p.shape[-1] if p.ndim >= 2 else n
        pnorm = float(dtype(math.sqrt(_ordered_sum(_row_sumsq(p.reshape(-1, cols))))))
        alpha = max(eps2, pnorm / math.sqrt(n)) * rho
        if weight_decay != 0:
            p *= 1 - lr * weight_decay
        if p.ndim >= 2:
            rows = p.shape[-2]
            g3 = g.reshape(-1, rows, cols)
            row_norm = np.sqrt(_row_sumsq(g3.reshape(-1, cols))).astype(dtype)
            lerp_(rv.reshape(-1), row_norm * row_norm / cols, weight)
            g64 = g3.astype(np.float64)
            col_norm = np.sqrt(np.cumsum(g64 * g64, axis=1)[:, -1, :]).astype(dtype)
            lerp_(cv.reshape(-1), (col_norm * col_norm / rows).reshape(-1), weight)
            r = rv.reshape(-1, rows)
            row_mean = (np.cumsum(r.astype(np.float64), axis=1)[:, -1] / rows).astype(dtype)
            row_mean = _clamp_min(row_mean, dtype(e1))
            v = (r[:, :, None] * cv.reshape(-1, 1, cols)) / row_mean[:, None, None]
            u = (1 / np.sqrt(_clamp_min(v, dtype(e1 * e1)))) * g3
        else:
            lerp_(var, g * g, weight)
            u = (1 / np.sqrt(_clamp_min(var, dtype(e1 * e1)))) * g
        unorm = float(dtype(math.sqrt(_ordered_sum(_row_sumsq(u.reshape(-1, cols))))))
        denom = max(1.0, unorm / (math.sqrt(n) * d))
        _add_scaled(p, u.reshape(p.shape), -alpha / denom)


def muon_(param, grad, momentum_buffer, *, lr=1e-3, weight_decay=0.1, momentum=0.95,
          nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
          adjust_lr_fn=None, n_threads=None):
    """torch.optim.Muon (_single_tensor_muon) for 2-D params, with the Newton-Schulz
    iteration in the param's dtype (torch runs it in bfloat16)."""
    a, b, c = ns_coefficients
    for p, g, buf in zip(*_as_lists(param, grad, momentum_buffer)):
        dtype = p.dtype.type
        lerp_(buf, g, 1 - momentum)
        if p.size == 0:
            continue
        update = g.copy(order="K")
        if nesterov:
            lerp_(update, buf, momentum)
        else:
            update[...] = buf
        flat = update.ravel(order="K")
        blocks = [flat[k:k + 4096] for k in range(0, flat.size, 4096)]
        sumsq = _ordered_sum([_row_sumsq(blk.reshape(1, -1))[0] for blk in blocks])
        x = update.T if p.shape[0] > p.shape[1] else update
        x = x / _clamp_min(dtype(math.sqrt(sumsq)), dtype(eps))
        for _ in range(ns_steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * (gram @ gram)) @ x
        if p.shape[0] > p.shape[1]:
            x = x.T
        rows, cols = p.shape
        if adjust_lr_fn is None or adjust_lr_fn == "original":
            adjusted_lr = lr * math.sqrt(max(1, rows / cols))
        else:  # "match_rms_adamw"
            adjusted_lr = lr * (0.2 * math.sqrt(max(rows, cols)))
        p *= 1 - lr * weight_decay
        _add_scaled(p, x, -adjusted_lr)


def _add_scaled(y, x, alpha):
    """y += alpha * x rounded once, as torch's CPU y.add_(x, alpha=alpha) (a fused
    multiply-add; alpha rounded to y's dtype first).  NumPy rounds every operation, so
    the fused result is built from exact parts (Boldo & Melquiond 2008, emulated FMA):
    alpha * x = ph + pl (Dekker's product), y + ph = sh + sl (Knuth's sum), then
    RN(sh + RO(sl + pl)), RO rounding to odd.  Exact for finite values whose parts
    neither overflow nor underflow; other elements get y + alpha * x."""
    dtype = y.dtype.type
    alpha, x = dtype(alpha), np.asarray(x, dtype)
    single = dtype is np.float32
    split = dtype(4097.0 if single else 134217729.0)  # 2**ceil(p/2) + 1
    with np.errstate(all="ignore"):
        ph = alpha * x
        a_hi = split * alpha - (split * alpha - alpha)
        a_lo = alpha - a_hi
        x_hi = split * x - (split * x - x)
        x_lo = x - x_hi
        pl = ((a_hi * x_hi - ph) + a_hi * x_lo + a_lo * x_hi) + a_lo * x_lo
        sh = y + ph
        z = sh - y
        sl = (y - (sh - z)) + (ph - z)
        v = sl + pl
        z = v - sl
        err = (sl - (v - z)) + (pl - z)
        # round to odd: an inexact v with an even last bit moves a unit toward the sum
        even = (v.view(np.uint32 if single else np.uint64) & 1) == 0
        v = np.where((err != 0) & even, np.nextafter(v, np.copysign(np.inf, err)), v)
        fused = sh + v
        y[...] = np.where(np.isfinite(fused), fused, y + alpha * x)


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


def _holds_quantized(value):
    """Is `value` a QuantizedState, or a list or tuple starting with one?"""
    if isinstance(value, (list, tuple)):
        return bool(value) and hasattr(value[0], "codes")
    return hasattr(value, "codes")


def _with_quantized_state(update, used_states):
    """`update` (one of the rules above) also taking QuantizedState buffers, or lists of
    them, wherever it takes a state array: each used one is decoded to an array of the
    param's dtype, updated by the float rule, rounded to float32 and encoded back into
    its codes and absmax in place, which is what the 8-bit kernels do block by block."""
    signature = inspect.signature(update)

    @functools.wraps(update)
    def wrapper(*args, **kwargs):
        if not any(map(_holds_quantized, chain(args, kwargs.values()))):
            return update(*args, **kwargs)  # plain arrays: no binding cost per call
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
_ALWAYS = lambda a: True  # noqa: E731
adam_ = _with_quantized_state(adam_, {
    "exp_avg": _ALWAYS, "exp_avg_sq": _ALWAYS, "max_exp_avg_sq": lambda a: a["amsgrad"]})
adamw_ = _with_quantized_state(adamw_, {
    "exp_avg": _ALWAYS, "exp_avg_sq": _ALWAYS, "max_exp_avg_sq": lambda a: a["amsgrad"]})


# The template optimizers whose state takes 8-bit codes (every buffer of each; the
# compiled table is fastoptim.quantized.template_maps): Schedule-Free's exp_avg_sq (its
# z stays float); Adadelta, Rprop and ASGD keep float state (README "8-bit state").
adagrad_ = _with_quantized_state(adagrad_, {"state_sum": _ALWAYS})
lion_ = _with_quantized_state(lion_, {"exp_avg": _ALWAYS})
adamax_ = _with_quantized_state(adamax_, {"exp_avg": _ALWAYS, "exp_inf": _ALWAYS})
radam_ = _with_quantized_state(radam_, {"exp_avg": _ALWAYS, "exp_avg_sq": _ALWAYS})
nadam_ = _with_quantized_state(nadam_, {"exp_avg": _ALWAYS, "exp_avg_sq": _ALWAYS})
adamw_schedule_free_ = _with_quantized_state(adamw_schedule_free_, {"exp_avg_sq": _ALWAYS})
