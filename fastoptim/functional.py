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

import numpy as np

from fastoptim._backend import kernels, resolve_n_threads
from fastoptim._validation import check_flag, check_real, check_step
from fastoptim.reference import nadam_momentum, radam_rectification
from fastoptim import quantized as _quant8

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "adagrad_", "lion_", "adamax_", "radam_",
           "adadelta_", "rprop_", "nadam_", "asgd_", "adamw_schedule_free_", "adafactor_", "muon_"]

# Steps up to here take the fast path; larger ones are checked (a double must hold them).
_FAST_STEP_MAX = 2 ** 53
_ROUNDINGS = ("nearest", "stochastic")
_SEED_END = 2 ** 64
_COMPACT_DTYPE_NAMES = ("float16", "bfloat16")


def _no_master_with_8bit(master):
    if master is not None:
        raise TypeError("master weights go with float16/bfloat16 params; 8-bit state "
                        "(QuantizedState) takes float32 or float64 params and no master")


def _quant8_state(*buffers):
    """True when a used state buffer is 8-bit (fastoptim.QuantizedState): the call goes
    to the 8-bit kernels, which refuse any mix with float state buffers."""
    return any(map(_quant8.is_quantized, buffers))  # (no generator: it is per call)


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
        if _quant8_state(momentum_buffer):
            _no_master_with_8bit(master)
            return _quant8.sgd(kernels, param, grad, momentum_buffer, lr, momentum, dampening,
                               nesterov, weight_decay, maximize, step == 1,
                               resolve_n_threads(n_threads))
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
    if _quant8_state(square_avg, momentum_buffer if momentum > 0 else None,
                     grad_avg if centered else None):
        _no_master_with_8bit(master)
        return _quant8.rmsprop(kernels, param, grad, square_avg, momentum_buffer, grad_avg, lr,
                               alpha, eps, weight_decay, momentum, centered, maximize,
                               resolve_n_threads(n_threads))
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
    if amsgrad:
        _require("max_exp_avg_sq", max_exp_avg_sq, "when amsgrad=True")
    l2, decay = _adam_weight_decay(lr, weight_decay, decoupled_weight_decay)
    step_size, bc2_sqrt = _adam_bias_corrections(step, lr, beta1, beta2)
    if _quant8_state(exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None):
        _no_master_with_8bit(master)
        return _quant8.adam(kernels, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad,
                            beta1, beta2, eps, weight_decay, l2, decay, step_size, bc2_sqrt,
                            maximize, resolve_n_threads(n_threads))
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


def _adam_weight_decay(lr, weight_decay, decoupled):
    """(l2, decay): weight decay added to the gradient, or the factor p is scaled by
    (AdamW), in double."""
    l2 = weight_decay != 0 and not decoupled
    return l2, (1 - lr * weight_decay if decoupled and weight_decay != 0 else 1.0)


def _adam_bias_corrections(step, lr, beta1, beta2):
    """(step_size, sqrt(bias_correction2)) of a step, in double in the reference's (and
    torch's) order of operations."""
    return lr / (1 - beta1 ** step), math.sqrt(1 - beta2 ** step)


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


# ------------------------------------------- prepared calls for the classes
# The classes check their groups' values when they change, not every step; a prepared
# call then goes straight to the compiled entry (adam_'s argument checks and storage
# dispatch cost about as much as its kernel on a small model: 2 us against 3 on 5,000
# float32 elements).  It covers float32/float64 state without compact options (None
# otherwise: the class calls the function); a 16-bit grad is handed to the function,
# and any other refusal of the kernel (which checks every array before writing) is
# raised for the class to word with its full checks.

def _handing_16bit_grads_to(function, entry_call):
    def update(grad, step):
        try:
            return entry_call(grad, step)
        except TypeError:
            if not _is_compact((grad,)):
                raise
        function(grad, step)
    return update


def _prepared_sgd(param, momentum_buffer, *, lr, momentum, dampening, nesterov,
                  weight_decay, maximize, first, n_threads, function):
    """update(grad, step) of sgd_ with these checked values; ``first``: start the
    momentum buffer from the gradient (whatever the step), as torch does when it is new."""
    if ((momentum != 0 and (momentum_buffer is None or _quant8_state(momentum_buffer)))
            or _is_compact((param, momentum_buffer))
            or (nesterov and (momentum <= 0 or dampening != 0))):
        return None
    entry = kernels.sgd
    return _handing_16bit_grads_to(function, lambda grad, step: entry(
        param, grad, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay,
        maximize, first, resolve_n_threads(n_threads)))


def _prepared_rmsprop(param, square_avg, momentum_buffer, grad_avg, *, lr, alpha, eps,
                      weight_decay, momentum, centered, maximize, n_threads, function):
    """update(grad, step) of rmsprop_ with these checked values."""
    used = (square_avg, momentum_buffer if momentum > 0 else None,
            grad_avg if centered else None)
    if (square_avg is None or (momentum > 0 and momentum_buffer is None)
            or (centered and grad_avg is None) or _quant8_state(*used)
            or _is_compact((param,) + used)):
        return None
    entry = kernels.rmsprop
    return _handing_16bit_grads_to(function, lambda grad, step: entry(
        param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay,
        momentum, centered, maximize, resolve_n_threads(n_threads)))


def _prepared_adam(param, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps,
                   weight_decay, decoupled_weight_decay, amsgrad, maximize, n_threads,
                   function, eps_at=None):
    """update(grad, step) of adam_ with these checked values (``eps_at(step)`` in place of
    eps when given: _eps_hat)."""
    used = (exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None)
    if _quant8_state(*used) or _is_compact((param,) + used) or (amsgrad and used[2] is None):
        return None
    l2, decay = _adam_weight_decay(lr, weight_decay, decoupled_weight_decay)
    entry = kernels.adam
    if eps_at is not None:
        return _handing_16bit_grads_to(function, lambda grad, step: entry(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, beta1, beta2,
            eps_at(step), weight_decay, l2, decay,
            *_adam_bias_corrections(step, lr, beta1, beta2), maximize,
            resolve_n_threads(n_threads)))
    return _handing_16bit_grads_to(function, lambda grad, step: entry(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, beta1, beta2, eps,
        weight_decay, l2, decay, *_adam_bias_corrections(step, lr, beta1, beta2), maximize,
        resolve_n_threads(n_threads)))


def _eps_hat(eps, beta2):
    """step -> the eps that makes torch's Adam rule add `eps` to sqrt(v) before the
    division by sqrt(1 - beta2**step) (scikit-learn's and Keras's form: ``lr_t * m /
    (sqrt(v) + eps)`` with ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``): equal in
    exact arithmetic, within a few ulp in floating point."""
    return lambda step: eps / math.sqrt(1 - beta2 ** step)


# ------------------------------------------------- the template's optimizers
# Their loops are generated from fastoptim/_kernels_elementwise.pxi.tp.  Each function
# checks its values, then calls kernels.<name>(arrays..., *_<name>_scalars(step,
# values...), n_threads): the scalars function computes the compiled entry's scalars
# and switches, in double in the reference's (and torch's) order of operations, from
# checked values.  The classes (fastoptim.optim) check their groups' values once and
# call the kernel and the scalars function directly, so a step costs no re-check.

def _sign(maximize):
    return -1.0 if maximize else 1.0


#: the template optimizers whose scalars never depend on the step
_STEP_FREE = ("lion", "adadelta", "rprop")


def _template_kernel(name):
    """(kernels.<name>, _<name>_scalars) of a template optimizer: its compiled entry
    point and the function of its checked values that computes the entry's scalars."""
    return getattr(kernels, name), globals()[f"_{name}_scalars"]


def _template_step_free_scalars(name, values):
    """_<name>_scalars(step, *values) when it does not depend on the step for these
    values (the same call, so the same bits, whatever the step), else None: the classes
    then compute it once per plan instead of every step."""
    if name in _STEP_FREE or (name == "adagrad" and values[1] == 0):
        # Adagrad without lr_decay: clr = lr / (1 + (step - 1) * 0.0) = lr exactly
        return globals()[f"_{name}_scalars"](1, *values)
    return None


def _template_run(name, arrays, scalars, step, n_threads, master=None, rounding="nearest",
                  seed=0):
    """kernels.<name>(*arrays, *scalars, n_threads), or, when some buffer is 16-bit or a
    master is given, kernels.<name>_compact (compact storage: module docstring), or
    when the state is 8-bit (QuantizedState), kernels.<name>8 (fastoptim.quantized).
    The values are checked; n_threads is resolved here."""
    n_threads = resolve_n_threads(n_threads)
    if master is None:
        try:
            return getattr(kernels, name)(*arrays, *scalars, n_threads)
        except TypeError:
            if _quant8_state(*arrays[2:]):
                return _quant8.template(kernels, name, arrays, scalars, n_threads)
            if not _is_compact(arrays):
                raise
    elif _quant8_state(*arrays[2:]):
        _no_master_with_8bit(master)
    _run_compact(getattr(kernels, name + "_compact"), arrays, master, scalars, rounding,
                 seed, step, n_threads)


def _check_storage(rounding, seed):
    """The compact-storage keywords of a template function, checked."""
    if type(rounding) is str and rounding in _ROUNDINGS and type(seed) is int and (
            0 <= seed < _SEED_END):
        return rounding, seed
    return _check_rounding(rounding), _check_seed(seed)


def adagrad_(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False, master=None, rounding="nearest", seed=0,
             n_threads=None):
    """Adagrad (torch.optim.Adagrad), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g * g
        p = p + (-clr * g) / (sqrt(sum) + eps)

    ``state_sum`` starts at ``initial_accumulator_value`` (torch's default 0).
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    lr, lr_decay, weight_decay, eps = (
        check_real("lr", lr, low=0.0), check_real("lr_decay", lr_decay, low=0.0),
        check_real("weight_decay", weight_decay, low=0.0), check_real("eps", eps, low=0.0))
    maximize = check_flag("maximize", maximize)
    _template_run("adagrad", (param, grad, state_sum),
                  _adagrad_scalars(step, lr, lr_decay, weight_decay, eps, maximize), step,
                  n_threads, master, *_check_storage(rounding, seed))


def _adagrad_scalars(step, lr, lr_decay, weight_decay, eps, maximize):
    clr = lr / (1 + (step - 1) * lr_decay)
    return _sign(maximize), weight_decay, -clr, eps, weight_decay != 0


def lion_(param, grad, exp_avg, *, step, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
          master=None, rounding="nearest", seed=0, n_threads=None):
    """Lion (Chen et al. 2023; lion-pytorch's update), in place.

    ::

        p = p * (1 - lr * weight_decay)
        p = p + (-lr) * sign(beta1 * m + (1 - beta1) * g)     (sign(0) = sign(NaN) = 0)
        m = beta2 * m + (1 - beta2) * g

    ``step`` is checked but Lion does not use it.  lion-pytorch has no ``maximize``.
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0)
    weight_decay = check_real("weight_decay", weight_decay)
    _template_run("lion", (param, grad, exp_avg),
                  _lion_scalars(step, lr, beta1, beta2, weight_decay), step, n_threads, master,
                  *_check_storage(rounding, seed))


def _lion_scalars(step, lr, beta1, beta2, weight_decay):
    return 1 - lr * weight_decay, -lr, beta1, 1 - beta1, beta2, 1 - beta2


def adamax_(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
            eps=1e-8, weight_decay=0.0, maximize=False, master=None, rounding="nearest",
            seed=0, n_threads=None):
    """Adamax (torch.optim.Adamax), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        m = lerp(m, g, 1 - beta1)
        u = max(beta2 * u, |g| + eps)            (NaN from either side wins)
        p = p + (-(lr / (1 - beta1**step)) * m) / u
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    maximize = check_flag("maximize", maximize)
    _template_run("adamax", (param, grad, exp_avg, exp_inf),
                  _adamax_scalars(step, lr, beta1, beta2, eps, weight_decay, maximize), step,
                  n_threads, master, *_check_storage(rounding, seed))


def _adamax_scalars(step, lr, beta1, beta2, eps, weight_decay, maximize):
    clr = lr / (1 - beta1 ** step)
    return (_sign(maximize), weight_decay, 1 - beta1, beta2, eps, -clr, weight_decay != 0,
            abs(1 - beta1) < 0.5)


def radam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
           master=None, rounding="nearest", seed=0, n_threads=None):
    """RAdam (torch.optim.RAdam), in place.

    ::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)  if decoupled_weight_decay  else  g = g + weight_decay * p
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        p = p - ((m / bc1 * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * rect   if rho_t > 5
        p = p - m / bc1 * lr                                              otherwise

    with ``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t`` and torch's rectification
    ``rect = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))``.
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    decoupled = check_flag("decoupled_weight_decay", decoupled_weight_decay)
    maximize = check_flag("maximize", maximize)
    _template_run("radam", (param, grad, exp_avg, exp_avg_sq),
                  _radam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled,
                                 maximize), step, n_threads, master,
                  *_check_storage(rounding, seed))


def _radam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize):
    rectify, rect = radam_rectification(beta2, step)
    l2, decay = _adam_weight_decay(lr, weight_decay, decoupled)
    return (_sign(maximize), weight_decay, decay, 1 - beta1, beta2, 1 - beta2,
            1 - beta1 ** step, lr, (1 - beta2 ** step) ** 0.5, eps, rect, l2,
            abs(1 - beta1) < 0.5, rectify)


def adadelta_(param, grad, square_avg, acc_delta, *, step, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False, master=None, rounding="nearest", seed=0,
              n_threads=None):
    """Adadelta (torch.optim.Adadelta), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        sq = rho * sq + (1 - rho) * g * g
        d = sqrt(acc + eps) / sqrt(sq + eps) * g
        acc = rho * acc + (1 - rho) * d * d
        p = p + (-lr) * d

    ``step`` is checked but Adadelta does not use it.
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    lr = check_real("lr", lr, low=0.0)
    rho = check_real("rho", rho, low=0.0, high=1.0)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    maximize = check_flag("maximize", maximize)
    _template_run("adadelta", (param, grad, square_avg, acc_delta),
                  _adadelta_scalars(step, lr, rho, eps, weight_decay, maximize), step,
                  n_threads, master, *_check_storage(rounding, seed))


def _adadelta_scalars(step, lr, rho, eps, weight_decay, maximize):
    return _sign(maximize), weight_decay, rho, 1 - rho, eps, -lr, weight_decay != 0


def rprop_(param, grad, prev, step_size, *, step, etaminus=0.5, etaplus=1.2,
           step_size_min=1e-6, step_size_max=50.0, maximize=False, master=None,
           rounding="nearest", seed=0, n_threads=None):
    """Rprop (torch.optim.Rprop), in place.

    ::

        g = -g if maximize
        f = etaplus if g * prev > 0, etaminus if g * prev < 0, 1 otherwise (NaN too)
        step_size = clamp(step_size * f, step_size_min, step_size_max)
        g = 0 where g * prev < 0
        p = p - sign(g) * step_size;  prev = g

    ``prev`` starts at zeros and ``step_size`` at the learning rate (torch's state).
    ``step`` is checked but Rprop does not use it.
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    etaminus = check_real("etaminus", etaminus, low=0.0, high=1.0, high_open=True)
    etaplus = check_real("etaplus", etaplus, low=1.0)
    if etaminus == 0.0 or etaplus == 1.0:
        raise ValueError(f"Rprop needs 0 < etaminus < 1 < etaplus, got etaminus={etaminus}, "
                         f"etaplus={etaplus}")
    step_size_min = check_real("step_size_min", step_size_min)
    step_size_max = check_real("step_size_max", step_size_max)
    maximize = check_flag("maximize", maximize)
    _template_run("rprop", (param, grad, prev, step_size),
                  _rprop_scalars(step, etaminus, etaplus, step_size_min, step_size_max,
                                 maximize), step, n_threads, master,
                  *_check_storage(rounding, seed))


def _rprop_scalars(step, etaminus, etaplus, step_size_min, step_size_max, maximize):
    return _sign(maximize), etaminus, etaplus, step_size_min, step_size_max


def nadam_(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, lr=2e-3, beta1=0.9,
           beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
           decoupled_weight_decay=False, maximize=False, master=None, rounding="nearest",
           seed=0, n_threads=None):
    """NAdam (torch.optim.NAdam), in place.

    ::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)  if decoupled_weight_decay  else  g = g + weight_decay * p
        mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2**t)) + eps
        p = p + (-lr * (1 - mu_t) / (1 - mu_product) * g) / denom
        p = p + (-lr * mu_{t+1} / (1 - mu_product * mu_{t+1}) * m) / denom

    ``mu_product`` is mu_1 * ... * mu_t, this step's mu included (torch keeps it per
    parameter, as ``state["mu_product"]``; fastoptim.optim.NAdam does too): in [0, 1).
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    mu_product = check_real("mu_product", mu_product, low=0.0, high=1.0, high_open=True)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    momentum_decay = check_real("momentum_decay", momentum_decay, low=0.0)
    decoupled = check_flag("decoupled_weight_decay", decoupled_weight_decay)
    maximize = check_flag("maximize", maximize)
    _template_run("nadam", (param, grad, exp_avg, exp_avg_sq),
                  _nadam_scalars(step, mu_product, lr, beta1, beta2, eps, weight_decay,
                                 momentum_decay, decoupled, maximize), step, n_threads, master,
                  *_check_storage(rounding, seed))


def _nadam_scalars(step, mu_product, lr, beta1, beta2, eps, weight_decay, momentum_decay,
                   decoupled, maximize):
    return _nadam_prepared_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, maximize)(
        step, mu_product, nadam_momentum(beta1, momentum_decay, step),
        nadam_momentum(beta1, momentum_decay, step + 1))


def _nadam_prepared_scalars(lr, beta1, beta2, eps, weight_decay, decoupled, maximize):
    """at(step, mu_product, mu, mu_next): _nadam_scalars with these values (mu = mu_t,
    mu_next = mu_{t+1}), the parts that do not depend on the step computed once (the
    class computes each mu_t once: this step's mu_next is the next step's mu)."""
    l2, decay = _adam_weight_decay(lr, weight_decay, decoupled)
    head = (_sign(maximize), weight_decay, decay, 1 - beta1, beta2, 1 - beta2)
    tail = (l2, abs(1 - beta1) < 0.5)

    def at(step, mu_product, mu, mu_next):
        return (*head, 1 - beta2 ** step, eps, -lr * (1.0 - mu) / (1.0 - mu_product),
                (-lr * mu_next) / (1.0 - mu_product * mu_next), *tail)
    return at


def asgd_(param, grad, ax, *, step, eta, mu, lambd=1e-4, weight_decay=0.0, maximize=False,
          master=None, rounding="nearest", seed=0, n_threads=None):
    """Averaged SGD (torch.optim.ASGD), in place, with this step's ``eta`` and ``mu``.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        p = p * (1 - lambd * eta);  p = p + (-eta) * g
        ax = ax + (p - ax) * mu      if mu != 1
        ax = p                       otherwise

    torch keeps ``eta`` and ``mu`` per parameter (``state["eta"]``, ``state["mu"]``,
    starting at lr and 1) and sets them after each step t to
    ``lr / (1 + lambd * lr * t) ** alpha`` and ``1 / max(1, t - t0)``
    (fastoptim.optim.ASGD does the same).
    ``master``, ``rounding``, ``seed``: compact storage (module docstring).
    """
    step = check_step(step)
    eta = check_real("eta", eta)
    mu = check_real("mu", mu)
    lambd = check_real("lambd", lambd)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    maximize = check_flag("maximize", maximize)
    _template_run("asgd", (param, grad, ax),
                  _asgd_scalars(step, eta, mu, lambd, weight_decay, maximize), step, n_threads,
                  master, *_check_storage(rounding, seed))


def _asgd_scalars(step, eta, mu, lambd, weight_decay, maximize):
    return (_sign(maximize), weight_decay, 1 - lambd * eta, -eta, mu, weight_decay != 0,
            mu != 1)


def adamw_schedule_free_(param, grad, z, exp_avg_sq, *, ckp1, lr, bias_correction2,
                         beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=None,
                         master=None, rounding="nearest", seed=0, n_threads=None):
    """Schedule-Free AdamW (Defazio et al. 2024; schedulefree.AdamWScheduleFree), one step
    in place on ``param`` = y (the train-mode weights) and ``z``.

    ::

        v = beta2 * v + (1 - beta2) * g * g
        g = g / (sqrt(v / bias_correction2) + eps);   g = g + weight_decay * y
        y = lerp(y, z, ckp1);   y = y + lr * (beta1 * (1 - ckp1) - 1) * g
        z = z - lr * g

    The step's scalars come from the optimizer's schedule (fastoptim.optim.AdamWScheduleFree
    computes them as schedulefree does): ``lr`` with warmup applied, ``ckp1`` in [0, 1]
    the weight of this step in the average, ``bias_correction2 = 1 - beta2**(k + 1)``.
    ``z`` starts as a copy of the param, ``exp_avg_sq`` at zeros.
    ``master``, ``rounding``, ``seed``: compact storage (module docstring);
    ``step`` (the group's k after this step) keys stochastic rounding's bits and
    is required with it.
    """
    ckp1 = check_real("ckp1", ckp1, low=0.0, high=1.0)
    lr = check_real("lr", lr, low=0.0)
    bias_correction2 = check_real("bias_correction2", bias_correction2, low=0.0, high=1.0)
    if bias_correction2 == 0.0:
        raise ValueError("bias_correction2 must be in (0, 1], got 0.0")
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay)
    if step is not None:
        step = check_step(step)
    rounding, seed = _check_storage(rounding, seed)
    if rounding == "stochastic" and step is None:
        raise ValueError("step is required with rounding='stochastic' (the random bits "
                         "follow the step count, e.g. the group's k after this step)")
    _template_run("adamw_schedule_free", (param, grad, z, exp_avg_sq),
                  _adamw_schedule_free_scalars(ckp1, lr, bias_correction2, beta1, beta2, eps,
                                               weight_decay), step, n_threads, master,
                  rounding, seed)


def _adamw_schedule_free_scalars(ckp1, lr, bias_correction2, beta1, beta2, eps,
                                 weight_decay):
    # no step: the group's schedule (ckp1, lr, bias_correction2) carries it
    return _adamw_schedule_free_prepared_scalars(beta1, beta2, eps, weight_decay)(
        ckp1, lr, bias_correction2)


def _adamw_schedule_free_prepared_scalars(beta1, beta2, eps, weight_decay):
    """at(ckp1, lr, bias_correction2): _adamw_schedule_free_scalars with these values,
    the parts the schedule does not change computed once (the class calls it every
    step)."""
    head, l2 = (beta2, 1 - beta2), weight_decay != 0

    def at(ckp1, lr, bias_correction2):
        return (*head, bias_correction2, eps, weight_decay, ckp1,
                lr * (beta1 * (1 - ckp1) - 1), lr, l2, abs(ckp1) < 0.5)
    return at


def adafactor_(param, grad, row_var=None, col_var=None, variance=None, *, step, lr=1e-2,
               beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0,
               maximize=False, n_threads=None):
    """Adafactor (torch.optim.Adafactor, its single-tensor path), in place.

    ::

        g = -g if maximize;  w = step ** beta2_decay;  rho = min(lr, 1 / sqrt(step))
        alpha = max(eps2, norm(p) / sqrt(p.size)) * rho
        p = p * (1 - lr * weight_decay)                          if weight_decay != 0
        params of >= 2 dims (factored over the last two axes, R x C):
            row_var = lerp(row_var, norm(g, axis=-1)**2 / C, w)   shape (..., R, 1)
            col_var = lerp(col_var, norm(g, axis=-2)**2 / R, w)   shape (..., 1, C)
            v = row_var * col_var / max(mean(row_var, axis=-2), eps1)
        other params:  variance = lerp(variance, g * g, w);  v = variance
        u = g / sqrt(max(v, eps1**2))            (torch: rsqrt, i.e. 1 / sqrt, times g)
        p = p - alpha / max(1, norm(u) / (sqrt(p.size) * d)) * u

    ``eps1=None`` is the machine epsilon of the params' dtype.  Params of >= 2 dims
    must be C-contiguous and need ``row_var`` and ``col_var`` (zeros at step 1), the
    others ``variance`` (zeros, param's shape): single arrays, or lists with None where
    a param does not use that buffer.  Norms are summed in double in a fixed order
    (any thread count gives the same bits).  An empty param is left as it is.
    A float32 ``lr`` (a one-element array or NumPy scalar, as torch's Tensor lr) gives
    ``1 - lr * weight_decay`` and, while ``rho`` is ``lr``, ``alpha`` and
    ``alpha / denom`` in float32, as torch computes them; a float32 ``weight_decay``
    gives ``1 - lr * weight_decay`` in float32 too.
    """
    step = check_step(step)
    lr = _check_keeping_float32("lr", lr)
    beta2_decay = check_real("beta2_decay", beta2_decay, high=0.0)
    if eps1 is not None:
        eps1 = check_real("eps1", eps1, low=0.0)
    eps2 = check_real("eps2", eps2, low=0.0)
    d = check_real("d", d, low=1.0)
    weight_decay = _check_keeping_float32("weight_decay", weight_decay)
    maximize = check_flag("maximize", maximize)
    # Scalars in double, as torch computes them from the (float) step count; from a
    # float32 lr in float32 (min compares in float32 and keeps it, as torch's 0-d tensor).
    weight = float(step) ** beta2_decay
    rho = min(lr, 1 / (float(step) ** 0.5))
    decay, _ = _lr_products(lr, weight_decay)
    kernels.adafactor(param, grad, row_var, col_var, variance, weight, float(rho), eps1, eps2,
                      d, decay, weight_decay != 0, maximize, resolve_n_threads(n_threads),
                      type(rho) is np.float32)


_MUON_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _check_keeping_float32(name, value):
    """check_real's value (>= 0), an np.float32 when given as a float32 array or NumPy
    scalar: torch keeps a Tensor lr or weight_decay a 0-d tensor of its dtype, so what
    Adafactor and Muon compute from a float32 one (1 - lr * weight_decay, ...) is
    float32."""
    checked = check_real(name, value, low=0.0)
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float32:
        return np.float32(checked)
    return checked


def _check_ns_coefficients(value):
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise TypeError(f"ns_coefficients must be a tuple of 3 real numbers, got {value!r}")
    return tuple(check_real(f"ns_coefficients[{k}]", v) for k, v in enumerate(value))


def _newton_schulz(update, sumsq, coefficients, ns_steps, eps):
    """torch's _zeropower_via_newtonschulz in the update's dtype: X / max(norm, eps),
    then ns_steps of  A = X X^T;  X = a X + (b A + c A A) X  (on the transpose of a
    tall matrix).  The products are BLAS's (NumPy ``@``)."""
    dtype = update.dtype.type
    a, b, c = coefficients
    tall = update.shape[0] > update.shape[1]
    x = update.T if tall else update
    norm = dtype(math.sqrt(sumsq))
    x = x / (norm if not norm < dtype(eps) else dtype(eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def muon_(param, grad, momentum_buffer, *, lr=1e-3, weight_decay=0.1, momentum=0.95,
          nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
          adjust_lr_fn=None, n_threads=None):
    """Muon (torch.optim.Muon) for 2-D params, in place.

    ::

        buf = lerp(buf, g, 1 - momentum)
        u = lerp(g, buf, momentum) if nesterov else buf
        O = newton_schulz(u)        (ns_steps quintic steps, ns_coefficients (a, b, c))
        p = p * (1 - lr * weight_decay)
        p = p - lr * ratio * O      ratio: sqrt(max(1, rows / cols)) ("original", None)
                                           or 0.2 * sqrt(max(rows, cols)) ("match_rms_adamw")

    The momentum, the update and its norm are one compiled pass; the Newton-Schulz
    products are BLAS matrix products in the param's dtype (torch computes them in
    bfloat16).  ``momentum_buffer`` starts at zeros.  Every param must be 2-D.
    ``p - lr * ratio * O`` is rounded once (a fused multiply-add), as torch's
    ``add_(O, alpha=-lr * ratio)``.  A float32 ``lr`` (a one-element array or NumPy
    scalar, as torch's Tensor lr) gives ``1 - lr * weight_decay`` and ``lr * ratio`` in
    float32, as torch computes them; a float32 ``weight_decay`` gives
    ``1 - lr * weight_decay`` in float32.
    """
    lr = _check_keeping_float32("lr", lr)
    weight_decay = _check_keeping_float32("weight_decay", weight_decay)
    momentum = check_real("momentum", momentum, low=0.0)
    nesterov = check_flag("nesterov", nesterov)
    ns_coefficients = _check_ns_coefficients(ns_coefficients)
    eps = check_real("eps", eps)
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, numbers.Integral):
        raise TypeError(f"ns_steps must be an int in [0, 100), got {type(ns_steps).__name__}")
    if not 0 <= ns_steps < 100:
        raise ValueError(f"ns_steps must be an int in [0, 100), got {ns_steps}")
    if not (adjust_lr_fn is None or (type(adjust_lr_fn) is str
                                     and adjust_lr_fn in _MUON_ADJUST_LR_FNS)):
        raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', "
                         f"got {adjust_lr_fn!r}")
    single = isinstance(param, np.ndarray)
    params = [param] if single else param
    grads = [grad] if single else grad
    bufs = [momentum_buffer] if single else momentum_buffer
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"param must be a numpy.ndarray or a list/tuple of them, got "
                        f"{type(params).__name__}")
    params = tuple(params)
    for k, p in enumerate(params):
        if isinstance(p, np.ndarray) and p.ndim != 2:
            label = "param" if single else f"param[{k}]"
            raise ValueError(f"Muon only supports 2-D params: {label} has shape {p.shape} "
                             "(optimize the others with AdamW, for example)")
    # plain arrays (subok=False): np.matrix's `*` would run Newton-Schulz through np.dot
    updates = [np.empty_like(p, subok=False)
               if isinstance(p, np.ndarray) and p.dtype.kind == "f" else None for p in params]
    threads = resolve_n_threads(n_threads)
    # The compiled pass checks every array (params included) before writing anything.
    sums = kernels.muon_momentum(params, grads, bufs, updates, 1 - momentum, momentum,
                                 nesterov, threads)
    for p, u, sumsq in zip(params, updates, sums):
        if p.size == 0:
            continue  # nothing to update (torch divides by zero here)
        decay, adjusted_lr = _muon_step_scalars(lr, weight_decay, p.shape, adjust_lr_fn)
        ortho = _newton_schulz(u, sumsq, ns_coefficients, ns_steps, eps)
        np.multiply(p, decay, out=p)  # elementwise also for np.matrix (its *= is np.dot)
        # torch's param.add_(update, alpha=-adjusted_lr): one rounding (FMA); the kernel
        # pairs elements in memory order, so ortho (transposed for a tall p) takes p's
        ortho = np.ascontiguousarray(ortho) if p.flags.c_contiguous else np.asfortranarray(ortho)
        kernels.add_scaled(p, ortho, -adjusted_lr, threads)


def _muon_step_scalars(lr, weight_decay, shape, adjust_lr_fn):
    """(1 - lr * weight_decay, lr * ratio) for a param of ``shape``, as torch's Muon
    computes them (_single_tensor_muon, _adjust_lr): see _lr_products."""
    rows, cols = shape
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    else:  # "match_rms_adamw"
        ratio = 0.2 * math.sqrt(max(rows, cols))
    return _lr_products(lr, weight_decay, ratio)


def _lr_products(lr, weight_decay, ratio=1.0):
    """(1 - lr * weight_decay, lr * ratio) as torch's Muon and Adafactor compute them:
    in double from Python floats; a product with an np.float32 (torch's float32 Tensor
    lr or weight_decay) in float32, the other factor rounded to float32 first (torch's
    tensor-times-number, NumPy's NEP 50 alike).  Both returned as Python floats (exact):
    torch's param.mul_ and add_(alpha=) take their values as doubles."""
    if type(lr) is float and type(weight_decay) is float:
        return 1 - lr * weight_decay, lr * ratio
    with np.errstate(all="ignore"):  # inf and NaN pass silently, as with Python floats
        return float(1 - lr * weight_decay), float(lr * ratio)
