"""The checked functional API: one fused, in-place optimizer step per call.

Each function updates ``param`` and its state buffers in place and returns None.
Array arguments are either single ``numpy.ndarray`` objects or lists/tuples of them
(one entry per parameter array of a model): a list is updated with one call into
compiled code and one release of the GIL.  Every argument is checked before any
buffer is touched; a rejected call raises TypeError/ValueError and changes nothing.

The update rules are torch.optim's single-tensor ones, operation for operation; see
README.md ("Update rules") and each docstring.
"""

import math

from fastoptim._backend import kernels, resolve_n_threads
from fastoptim._validation import check_flag, check_real, check_step
from fastoptim import quantized as _quant8

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_"]

# Steps up to here take the fast path; larger ones are checked (a double must hold them).
_FAST_STEP_MAX = 2 ** 53


def _quant8_state(*buffers):
    """True when a used state buffer is 8-bit (fastoptim.QuantizedState): the call goes
    to the 8-bit kernels, which refuse any mix with float state buffers."""
    return any(_quant8.is_quantized(b) for b in buffers)


def _require(name, buffer, why):
    if buffer is None:
        raise ValueError(f"{name} is required {why}")


def sgd_(param, grad, momentum_buffer=None, *, step, lr=1e-3, momentum=0.0,
         dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False, n_threads=None):
    """SGD with momentum (torch.optim.SGD), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        if momentum != 0:
            buf = g                                       if step == 1
            buf = momentum * buf + (1 - dampening) * g    otherwise
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    ``momentum_buffer`` is required when momentum != 0 (start it at zeros: step 1
    overwrites it with the gradient).
    """
    # Ranges are torch.optim.SGD's (it does not check dampening); NaN is refused.
    if not (type(step) is int and 1 <= step <= _FAST_STEP_MAX
            and type(lr) is float and lr >= 0.0
            and type(momentum) is float and momentum >= 0.0
            and type(dampening) is float and dampening == dampening
            and type(weight_decay) is float and weight_decay >= 0.0
            and type(nesterov) is bool and type(maximize) is bool):
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
            return _quant8.sgd(kernels, param, grad, momentum_buffer, lr, momentum, dampening,
                               nesterov, weight_decay, maximize, step == 1,
                               resolve_n_threads(n_threads))
    kernels.sgd(param, grad, momentum_buffer, lr, momentum, dampening, nesterov,
                weight_decay, maximize, step == 1, resolve_n_threads(n_threads))


def rmsprop_(param, grad, square_avg, *, step, lr=1e-2, alpha=0.99, eps=1e-8,
             weight_decay=0.0, momentum=0.0, momentum_buffer=None, centered=False,
             grad_avg=None, maximize=False, n_threads=None):
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
    ``grad_avg`` when centered.  ``step`` is checked but RMSProp does not use it.
    """
    # Ranges are torch.optim.RMSprop's (alpha >= 1 too); NaN is refused.
    if not (type(step) is int and 1 <= step <= _FAST_STEP_MAX
            and type(lr) is float and lr >= 0.0
            and type(alpha) is float and alpha >= 0.0
            and type(eps) is float and eps >= 0.0
            and type(weight_decay) is float and weight_decay >= 0.0
            and type(momentum) is float and momentum >= 0.0
            and type(centered) is bool and type(maximize) is bool):
        check_step(step)
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
        return _quant8.rmsprop(kernels, param, grad, square_avg, momentum_buffer, grad_avg, lr,
                               alpha, eps, weight_decay, momentum, centered, maximize,
                               resolve_n_threads(n_threads))
    # Buffers the options do not use are ignored by the compiled layer.
    kernels.rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                    weight_decay, momentum, centered, maximize, resolve_n_threads(n_threads))


def adam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
          eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
          max_exp_avg_sq=None, maximize=False, n_threads=None):
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
            and type(maximize) is bool):
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
    if _quant8_state(exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None):
        return _quant8.adam(kernels, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad,
                            beta1, beta2, eps, weight_decay, weight_decay != 0 and not decoupled,
                            decay, lr / bias_correction1, math.sqrt(bias_correction2), maximize,
                            resolve_n_threads(n_threads))
    # Positional: keyword parsing in the compiled entry costs more than its checks.
    kernels.adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, beta1, beta2, eps,
                 weight_decay, weight_decay != 0 and not decoupled, decay,
                 lr / bias_correction1, math.sqrt(bias_correction2), maximize,
                 resolve_n_threads(n_threads))


def adamw_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=1e-2, amsgrad=False, max_exp_avg_sq=None,
           maximize=False, n_threads=None):
    """AdamW (torch.optim.AdamW): adam_ with decoupled weight decay, 1e-2 by default.

    ``p = p * (1 - lr * weight_decay)`` before the Adam step, instead of adding
    ``weight_decay * p`` to the gradient.
    """
    adam_(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
          eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True,
          amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq, maximize=maximize,
          n_threads=n_threads)
