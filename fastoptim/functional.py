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
from fastoptim.reference import nadam_momentum, radam_rectification

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "adagrad_", "lion_", "adamax_", "radam_",
           "adadelta_", "rprop_", "nadam_", "asgd_", "adamw_schedule_free_"]

# Steps up to here take the fast path; larger ones are checked (a double must hold them).
_FAST_STEP_MAX = 2 ** 53


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


# ------------------------------------------------- the template's optimizers
# Their loops are generated from fastoptim/_kernels_elementwise.pxi.tp; the compiled
# entry points take the scalars below positionally, computed here in double in the
# reference's (and torch's) order of operations.

def _sign(maximize):
    return -1.0 if maximize else 1.0


def adagrad_(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
             eps=1e-10, maximize=False, n_threads=None):
    """Adagrad (torch.optim.Adagrad), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g * g
        p = p + (-clr * g) / (sqrt(sum) + eps)

    ``state_sum`` starts at ``initial_accumulator_value`` (torch's default 0).
    """
    step = check_step(step)
    lr, lr_decay, weight_decay, eps = (
        check_real("lr", lr, low=0.0), check_real("lr_decay", lr_decay, low=0.0),
        check_real("weight_decay", weight_decay, low=0.0), check_real("eps", eps, low=0.0))
    maximize = check_flag("maximize", maximize)
    clr = lr / (1 + (step - 1) * lr_decay)
    kernels.adagrad(param, grad, state_sum, _sign(maximize), weight_decay, -clr, eps,
                    weight_decay != 0, resolve_n_threads(n_threads))


def lion_(param, grad, exp_avg, *, step, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
          n_threads=None):
    """Lion (Chen et al. 2023; lion-pytorch's update), in place.

    ::

        p = p * (1 - lr * weight_decay)
        p = p + (-lr) * sign(beta1 * m + (1 - beta1) * g)     (sign(0) = sign(NaN) = 0)
        m = beta2 * m + (1 - beta2) * g

    ``step`` is checked but Lion does not use it.  lion-pytorch has no ``maximize``.
    """
    check_step(step)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0)
    weight_decay = check_real("weight_decay", weight_decay)
    kernels.lion(param, grad, exp_avg, 1 - lr * weight_decay, -lr, beta1, 1 - beta1, beta2,
                 1 - beta2, resolve_n_threads(n_threads))


def adamax_(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, beta1=0.9, beta2=0.999,
            eps=1e-8, weight_decay=0.0, maximize=False, n_threads=None):
    """Adamax (torch.optim.Adamax), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        m = lerp(m, g, 1 - beta1)
        u = max(beta2 * u, |g| + eps)            (NaN from either side wins)
        p = p + (-(lr / (1 - beta1**step)) * m) / u
    """
    step = check_step(step)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    maximize = check_flag("maximize", maximize)
    clr = lr / (1 - beta1 ** step)
    kernels.adamax(param, grad, exp_avg, exp_inf, _sign(maximize), weight_decay, 1 - beta1,
                   beta2, eps, -clr, weight_decay != 0, abs(1 - beta1) < 0.5,
                   resolve_n_threads(n_threads))


def radam_(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999,
           eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
           n_threads=None):
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
    """
    step = check_step(step)
    lr = check_real("lr", lr, low=0.0)
    beta1 = check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
    beta2 = check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    decoupled = check_flag("decoupled_weight_decay", decoupled_weight_decay)
    maximize = check_flag("maximize", maximize)
    rectify, rect = radam_rectification(beta2, step)
    decay = 1 - lr * weight_decay if decoupled and weight_decay != 0 else 1.0
    kernels.radam(param, grad, exp_avg, exp_avg_sq, _sign(maximize), weight_decay, decay,
                  1 - beta1, beta2, 1 - beta2, 1 - beta1 ** step, lr,
                  (1 - beta2 ** step) ** 0.5, eps, rect, weight_decay != 0 and not decoupled,
                  abs(1 - beta1) < 0.5, rectify, resolve_n_threads(n_threads))


def adadelta_(param, grad, square_avg, acc_delta, *, step, lr=1.0, rho=0.9, eps=1e-6,
              weight_decay=0.0, maximize=False, n_threads=None):
    """Adadelta (torch.optim.Adadelta), in place.

    ::

        g = -g if maximize;  g = g + weight_decay * p
        sq = rho * sq + (1 - rho) * g * g
        d = sqrt(acc + eps) / sqrt(sq + eps) * g
        acc = rho * acc + (1 - rho) * d * d
        p = p + (-lr) * d

    ``step`` is checked but Adadelta does not use it.
    """
    check_step(step)
    lr = check_real("lr", lr, low=0.0)
    rho = check_real("rho", rho, low=0.0, high=1.0)
    eps = check_real("eps", eps, low=0.0)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    maximize = check_flag("maximize", maximize)
    kernels.adadelta(param, grad, square_avg, acc_delta, _sign(maximize), weight_decay, rho,
                     1 - rho, eps, -lr, weight_decay != 0, resolve_n_threads(n_threads))


def rprop_(param, grad, prev, step_size, *, step, etaminus=0.5, etaplus=1.2,
           step_size_min=1e-6, step_size_max=50.0, maximize=False, n_threads=None):
    """Rprop (torch.optim.Rprop), in place.

    ::

        g = -g if maximize
        f = etaplus if g * prev > 0, etaminus if g * prev < 0, 1 otherwise (NaN too)
        step_size = clamp(step_size * f, step_size_min, step_size_max)
        g = 0 where g * prev < 0
        p = p - sign(g) * step_size;  prev = g

    ``prev`` starts at zeros and ``step_size`` at the learning rate (torch's state).
    ``step`` is checked but Rprop does not use it.
    """
    check_step(step)
    etaminus = check_real("etaminus", etaminus, low=0.0, high=1.0, high_open=True)
    etaplus = check_real("etaplus", etaplus, low=1.0)
    if etaminus == 0.0 or etaplus == 1.0:
        raise ValueError(f"Rprop needs 0 < etaminus < 1 < etaplus, got etaminus={etaminus}, "
                         f"etaplus={etaplus}")
    step_size_min = check_real("step_size_min", step_size_min)
    step_size_max = check_real("step_size_max", step_size_max)
    maximize = check_flag("maximize", maximize)
    kernels.rprop(param, grad, prev, step_size, _sign(maximize), etaminus, etaplus,
                  step_size_min, step_size_max, resolve_n_threads(n_threads))


def nadam_(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, lr=2e-3, beta1=0.9,
           beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
           decoupled_weight_decay=False, maximize=False, n_threads=None):
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
    mu = nadam_momentum(beta1, momentum_decay, step)
    mu_next = nadam_momentum(beta1, momentum_decay, step + 1)
    decay = 1 - lr * weight_decay if decoupled and weight_decay != 0 else 1.0
    kernels.nadam(param, grad, exp_avg, exp_avg_sq, _sign(maximize), weight_decay, decay,
                  1 - beta1, beta2, 1 - beta2, 1 - beta2 ** step, eps,
                  -lr * (1.0 - mu) / (1.0 - mu_product),
                  (-lr * mu_next) / (1.0 - mu_product * mu_next),
                  weight_decay != 0 and not decoupled, abs(1 - beta1) < 0.5,
                  resolve_n_threads(n_threads))


def asgd_(param, grad, ax, *, step, eta, mu, lambd=1e-4, weight_decay=0.0, maximize=False,
          n_threads=None):
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
    """
    check_step(step)
    eta = check_real("eta", eta)
    mu = check_real("mu", mu)
    lambd = check_real("lambd", lambd)
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    maximize = check_flag("maximize", maximize)
    kernels.asgd(param, grad, ax, _sign(maximize), weight_decay, 1 - lambd * eta, -eta, mu,
                 weight_decay != 0, mu != 1, resolve_n_threads(n_threads))


def adamw_schedule_free_(param, grad, z, exp_avg_sq, *, ckp1, lr, bias_correction2,
                         beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, n_threads=None):
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
    kernels.adamw_schedule_free(param, grad, z, exp_avg_sq, beta2, 1 - beta2, bias_correction2,
                                eps, weight_decay, ckp1, lr * (beta1 * (1 - ckp1) - 1), lr,
                                weight_decay != 0, abs(ckp1) < 0.5,
                                resolve_n_threads(n_threads))
