"""The checked functional API: one fused, in-place optimizer step per call.

Each function updates ``param`` and its state buffers in place and returns None.
Array arguments are either single ``numpy.ndarray`` objects or lists/tuples of them
(one entry per parameter array of a model): a list is updated with one call into
compiled code and one release of the GIL.  Every argument is checked before any
buffer is touched; a rejected call raises TypeError/ValueError and changes nothing.

The update rules are torch.optim's single-tensor ones, operation for operation; see
README.md ("Update rules") and each docstring.

Compact storage (README "Compact precision"): param and grad may be float16 or
bfloat16 (ml_dtypes) and every state buffer float16 or bfloat16, with float32 math.
``master=`` (float32 arrays like param) holds the exact weights of 16-bit params: the
step updates it and stores its rounding in param.  ``rounding="nearest"`` (even) or
``"stochastic"`` applies to every 16-bit store; stochastic rounding draws its bits from
a hash of (``seed``, ``step``, buffer, element index): the same for any thread count,
and a resumed run continues the same stream.  With a list of arrays, an int ``seed``
gives array k the seed ``seed + k`` (mod 2**64); a list gives one seed per array.
"""

import math
import numbers

from fastoptim._backend import kernels, resolve_n_threads
from fastoptim._validation import check_flag, check_real, check_step

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_"]

# Steps up to here take the fast path; larger ones are checked (a double must hold them).
_FAST_STEP_MAX = 2 ** 53
_ROUNDINGS = ("nearest", "stochastic")
_SEED_END = 2 ** 64
_COMPACT_DTYPE_NAMES = ("float16", "bfloat16")


def _require(name, buffer, why):
    if buffer is None:
        raise ValueError(f"{name} is required {why}")


def _check_rounding(rounding):
    if not isinstance(rounding, str):
        raise TypeError(f"rounding must be 'nearest' or 'stochastic', got "
                        f"{type(rounding).__name__}")
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    return str(rounding)


def _check_seed_int(seed, name="seed"):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, 2**64), got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < _SEED_END:
        shown = seed if seed.bit_length() <= 64 else f"an int of {seed.bit_length()} bits"
        raise ValueError(f"{name} must be an int in [0, 2**64), got {shown}")
    return seed


def _check_seed(seed):
    """An int in [0, 2**64), or a list/tuple of them (one per array)."""
    if isinstance(seed, (list, tuple)):
        return tuple(_check_seed_int(s, f"seed[{k}]") for k, s in enumerate(seed))
    return _check_seed_int(seed)


def _seeds(seed, param):
    """One seed per array of the call: seed + k for array k of an int seed."""
    if isinstance(seed, tuple):
        return seed
    n = len(param) if isinstance(param, (list, tuple)) else 1
    return tuple((seed + k) % _SEED_END for k in range(n))


def _is_compact(arrays):
    """Does a call need the compact kernels (some 16-bit buffer) rather than the
    float32/float64 ones?  The one place that dispatches on storage: a list is judged
    by its first array (the kernels check that the others match)."""
    for a in arrays:
        if isinstance(a, (list, tuple)):
            a = a[0] if a else None
        if getattr(getattr(a, "dtype", None), "name", None) in _COMPACT_DTYPE_NAMES:
            return True
    return False


def _run_compact(compact, arrays, master, options, rounding, seed, step, n_threads):
    """The compact kernel (some buffer 16-bit, or a master).  Each function first tries
    the float32/float64 kernel when no master is given (no extra cost on the common
    call): it checks every array before writing, so a refusal changes nothing, and a
    TypeError it raises is re-raised unless _is_compact says the call is compact."""
    stochastic = rounding == "stochastic"
    compact(*arrays, master, *options, stochastic,
            _seeds(seed, arrays[0]) if stochastic else None, step, n_threads)


def sgd_(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
         dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False, master=None,
         rounding="nearest", seed=0, n_threads=None):
    """SGD with momentum (torch.optim.SGD), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        if momentum != 0:
            buf = g                                       if step == 1
            buf = momentum * buf + (1 - dampening) * g    otherwise
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    ``momentum_buffer`` is required when momentum != 0 (start it at zeros: step 1
    overwrites it with the gradient).  ``master``, ``rounding``, ``seed``: compact
    storage (module docstring).
    """
    # Ranges are torch.optim.SGD's (it does not check dampening); NaN is refused.
    if not (type(step) is int and 1 <= step <= _FAST_STEP_MAX
            and type(lr) is float and lr >= 0.0
            and type(momentum) is float and momentum >= 0.0
            and type(dampening) is float and dampening == dampening
            and type(weight_decay) is float and weight_decay >= 0.0
            and type(nesterov) is bool and type(maximize) is bool
            and type(rounding) is str and rounding in _ROUNDINGS
            and type(seed) is int and 0 <= seed < _SEED_END):
        rounding = _check_rounding(rounding)
        seed = _check_seed(seed)
        step = check_step(step)
        lr = check_real("lr", lr, low=0.0)
        momentum = check_real("momentum", momentum, low=0.0)
        dampening = check_real("dampening", dampening)
        weight_decay = check_real("weight_decay", weight_decay, low=0.0)
        nesterov = check_flag("nesterov", nesterov)
        maximize = check_flag("maximize", maximize)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov requires momentum > 0 and dampening == 0, "
                         f"got momentum={momentum}, dampening={dampening}")
    if momentum != 0:
        _require("momentum_buffer", momentum_buffer, "when momentum != 0")
    n_threads = resolve_n_threads(n_threads)
    if master is None:
        try:
            return kernels.sgd(param, grad, momentum_buffer, lr, momentum, dampening,
                               nesterov, weight_decay, maximize, step == 1, n_threads)
        except TypeError:
            if not _is_compact((param, grad, momentum_buffer)):
                raise
    _run_compact(kernels.sgd_compact, (param, grad, momentum_buffer), master,
                 (lr, momentum, dampening, nesterov, weight_decay, maximize, step == 1),
                 rounding, seed, step, n_threads)


def rmsprop_(param, grad, square_avg, *, step, lr=1e-2, alpha=0.99, eps=1e-8,
             weight_decay=0.0, momentum=0.0, momentum_buffer=None, centered=False,
             grad_avg=None, maximize=False, master=None, rounding="nearest", seed=0,
             n_threads=None):
    """RMSProp (torch.optim.RMSprop), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        avg = sqrt(sq - ga * ga) + eps,  ga = lerp(ga, g, 1 - alpha)   if centered
        avg = sqrt(sq) + eps                                           otherwise
        buf = momentum * buf + g / avg;  p = p - lr * buf              if momentum > 0
        p = p - lr * g / avg                                           otherwise

    torch fuses ``sq - ga * ga``; here ``ga * ga`` is rounded on its own, except that an
    infinite ``sq`` stays infinite when ``ga * ga`` alone overflows (torch's result).
    State buffers start at zero.  ``momentum_buffer`` is required when momentum > 0,
    ``grad_avg`` when centered.  ``step`` is checked; RMSProp's rule does not use it
    (stochastic rounding does).  ``master``, ``rounding``, ``seed``: compact storage
    (module docstring).
    """
    # Ranges are torch.optim.RMSprop's (alpha >= 1 too); NaN is refused.
    if not (type(step) is int and 1 <= step <= _FAST_STEP_MAX
            and type(lr) is float and lr >= 0.0
            and type(alpha) is float and alpha >= 0.0
            and type(eps) is float and eps >= 0.0
            and type(weight_decay) is float and weight_decay >= 0.0
            and type(momentum) is float and momentum >= 0.0
            and type(centered) is bool and type(maximize) is bool
            and type(rounding) is str and rounding in _ROUNDINGS
            and type(seed) is int and 0 <= seed < _SEED_END):
        rounding = _check_rounding(rounding)
        seed = _check_seed(seed)
        step = check_step(step)
        lr = check_real("lr", lr, low=0.0)
        alpha = check_real("alpha", alpha, low=0.0)
        eps = check_real("eps", eps, low=0.0)
        weight_decay = check_real("weight_decay", weight_decay, low=0.0)
        momentum = check_real("momentum", momentum, low=0.0)
        centered = check_flag("centered", centered)
        maximize = check_flag("maximize", maximize)
    if momentum > 0:
        _require("momentum_buffer", momentum_buffer, "when momentum > 0")
    if centered:
        _require("grad_avg", grad_avg, "when centered=True")
    # Buffers the options do not use are ignored by the compiled layer.
    n_threads = resolve_n_threads(n_threads)
    if master is None:
        try:
            return kernels.rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, lr,
                                   alpha, eps, weight_decay, momentum, centered, maximize,
                                   n_threads)
        except TypeError:
            if not _is_compact((param, grad, square_avg, momentum_buffer, grad_avg)):
                raise
    _run_compact(kernels.rmsprop_compact, (param, grad, square_avg, momentum_buffer, grad_avg),
                 master, (lr, alpha, eps, weight_decay, momentum, centered, maximize),
                 rounding, seed, step, n_threads)


def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
          max_exp_avg_sq=None, maximize=False, master=None, rounding="nearest", seed=0,
          n_threads=None):
    """Adam (torch.optim.Adam; AdamW with decoupled_weight_decay=True), in place.

    ::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)   if decoupled_weight_decay   (AdamW)
        g = g + weight_decay * p          otherwise                   (L2)
        m = lerp(m, g, 1 - beta1)         (= beta1 * m + (1 - beta1) * g)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v), used for v below            if amsgrad
        p = p - (lr / (1 - beta1**step)) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)

    eps is added after the bias correction, as in torch and the paper (not the
    TensorFlow "epsilon hat" form).  ``max_exp_avg_sq`` is required when amsgrad.
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    # Fast path for the common call (Python floats in range, real bools): the checks
    # below cost more than a 1,000-element update.  Ranges are torch.optim.Adam's
    # (eps = 0 and inf lr included); NaN fails every comparison and is refused.
    if not (type(step) is int and 1 <= step <= _FAST_STEP_MAX
            and type(lr) is float and lr >= 0.0
            and type(beta1) is float and 0.0 <= beta1 < 1.0
            and type(beta2) is float and 0.0 <= beta2 < 1.0
            and type(eps) is float and eps >= 0.0
            and type(weight_decay) is float and weight_decay >= 0.0
            and type(decoupled_weight_decay) is bool and type(amsgrad) is bool
            and type(maximize) is bool
            and type(rounding) is str and rounding in _ROUNDINGS
            and type(seed) is int and 0 <= seed < _SEED_END):
        rounding = _check_rounding(rounding)
        seed = _check_seed(seed)
        step = check_step(step)
        lr = check_real("lr", lr, low=0.0)
        beta1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
        beta2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
        eps = check_real("eps", eps, low=0.0)
        weight_decay = check_real("weight_decay", weight_decay, low=0.0)
        decoupled_weight_decay = check_flag("decoupled_weight_decay", decoupled_weight_decay)
        amsgrad = check_flag("amsgrad", amsgrad)
        maximize = check_flag("maximize", maximize)
    decoupled = decoupled_weight_decay  # short name for the two uses below
    if amsgrad:
        _require("max_exp_avg_sq", max_exp_avg_sq, "when amsgrad=True")
    # Scalars in double, in the reference's (and torch's) order of operations.
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    decay = 1 - lr * weight_decay if decoupled and weight_decay != 0 else 1.0
    l2 = weight_decay != 0 and not decoupled
    step_size, bc2_sqrt = lr / bias_correction1, math.sqrt(bias_correction2)
    n_threads = resolve_n_threads(n_threads)
    if master is None:
        try:  # positional: keyword parsing in the compiled entry costs more than its checks
            return kernels.adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad,
                                beta1, beta2, eps, weight_decay, l2, decay, step_size,
                                bc2_sqrt, maximize, n_threads)
        except TypeError:
            if not _is_compact((param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)):
                raise
    _run_compact(kernels.adam_compact, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
                 master, (amsgrad, beta1, beta2, eps, weight_decay, l2, decay, step_size,
                          bc2_sqrt, maximize), rounding, seed, step, n_threads)


def adamw_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None,
           maximize=False, master=None, rounding="nearest", seed=0, n_threads=None):
    """AdamW (torch.optim.AdamW): adam_ with decoupled weight decay, 1e-2 by default.

    ``p = p * (1 - lr * weight_decay)`` before the Adam step, instead of adding
    ``weight_decay * p`` to the gradient.
    """
    adam_(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
          eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True,
          amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq, maximize=maximize,
          master=master, rounding=rounding, seed=seed, n_threads=n_threads)
