"""Option grids and helpers shared by the kernel tests."""

import itertools

import numpy as np

import fastoptim
from fastoptim import reference

SGD_OPTIONS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True),
                                             (0.0, 0.05), (False, True))
    if not (n and (m == 0 or d != 0))
]
RMSPROP_OPTIONS = [
    dict(alpha=a, momentum=m, centered=c, weight_decay=wd, maximize=mx)
    for a, m, c, wd, mx in itertools.product((0.99, 0.3), (0.0, 0.8), (False, True),
                                             (0.0, 0.05), (False, True))
]
ADAM_OPTIONS = [
    dict(beta1=b1, weight_decay=wd, decoupled_weight_decay=dec, amsgrad=ams, maximize=mx)
    for b1, wd, dec, ams, mx in itertools.product((0.9, 0.2), (0.0, 0.05), (False, True),
                                                  (False, True), (False, True))
]
OPTIMIZERS = {
    "sgd": (SGD_OPTIONS, 0.01),
    "rmsprop": (RMSPROP_OPTIONS, 0.001),
    "adam": (ADAM_OPTIONS, 0.01),
}


def make_state(kind, param, options):
    """Zero state buffers the options need, as the classes create them."""
    z = np.zeros_like
    if kind == "sgd":
        return dict(momentum_buffer=z(param) if options.get("momentum", 0) else None)
    if kind == "rmsprop":
        return dict(square_avg=z(param),
                    momentum_buffer=z(param) if options.get("momentum", 0) > 0 else None,
                    grad_avg=z(param) if options.get("centered") else None)
    return dict(exp_avg=z(param), exp_avg_sq=z(param),
                max_exp_avg_sq=z(param) if options.get("amsgrad") else None)


def call(module, kind, param, grad, state, step, lr, options):
    """Call sgd_/rmsprop_/adam_ of `module` (fastoptim or fastoptim.reference)."""
    fn = getattr(module, kind + "_")
    if kind == "sgd":
        fn(param, grad, state["momentum_buffer"], step=step, lr=lr, **options)
    elif kind == "rmsprop":
        fn(param, grad, state["square_avg"], step=step, lr=lr,
           momentum_buffer=state["momentum_buffer"], grad_avg=state["grad_avg"], **options)
    else:
        fn(param, grad, state["exp_avg"], state["exp_avg_sq"], step=step, lr=lr,
           max_exp_avg_sq=state["max_exp_avg_sq"], **options)


def copy_state(state):
    return {k: None if v is None else v.copy() for k, v in state.items()}


__all__ = ["OPTIMIZERS", "make_state", "call", "copy_state", "fastoptim", "reference"]
