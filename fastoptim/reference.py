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

import math

import numpy as np

__all__ = ["sgd_", "rmsprop_", "adam_", "adamw_", "lerp_", "adagrad_", "lion_", "adamax_",
           "radam_", "adadelta_", "rprop_", "nadam_", "asgd_", "adamw_schedule_free_",
           "adafactor_", "muon_"]


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
    Python's float power would raise)."""
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
                         beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, n_threads=None):
    """schedulefree.AdamWScheduleFree's step (its single-tensor path) on y = param, with the
    step's scalars: ``lr`` (warmup applied), ``ckp1`` = weight / weight_sum and
    ``bias_correction2`` = 1 - beta2**(k + 1)."""
    for y, g, zz, v in zip(*_as_lists(param, grad, z, exp_avg_sq)):
        v *= beta2
        v += (1 - beta2) * g * g
        g = g / (np.sqrt(v / bias_correction2) + eps)
        if weight_decay != 0:
            g = g + weight_decay * y
        lerp_(y, zz, ckp1)
        y += (lr * (beta1 * (1 - ckp1) - 1)) * g
        zz -= lr * g
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
        p += (-alpha / denom) * u.reshape(p.shape)


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
        p += -adjusted_lr * x
