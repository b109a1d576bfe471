"""The optimizers generated from fastoptim/_kernels_elementwise.pxi.tp: their buffers, how
the classes start them, and option grids that turn every loop variant on (shared by the
kernel, class and torch tests)."""

import itertools

import numpy as np


def _grid(**choices):
    keys = list(choices)
    return [dict(zip(keys, values)) for values in itertools.product(*choices.values())]


# kind: (state buffers in the functional API's order, {buffer: start value}, options grid)
ELEMENTWISE = {
    "adagrad": (("state_sum",), {"state_sum": 0.1},
                _grid(lr=[0.05], lr_decay=[0.0, 0.01], weight_decay=[0.0, 0.05],
                      eps=[1e-10, 1e-3], maximize=[False, True])),
    "lion": (("exp_avg",), {},
             _grid(lr=[0.01], beta1=[0.9, 0.3], beta2=[0.99, 0.5],
                   weight_decay=[0.0, 0.1])),
    "adamax": (("exp_avg", "exp_inf"), {},
               _grid(lr=[0.01], beta1=[0.9, 0.2], beta2=[0.999, 0.5],
                     weight_decay=[0.0, 0.05], maximize=[False, True])),
    "radam": (("exp_avg", "exp_avg_sq"), {},
              _grid(lr=[0.01], beta1=[0.9, 0.2], beta2=[0.999, 0.3],
                    weight_decay=[0.0, 0.05], decoupled_weight_decay=[False, True],
                    maximize=[False, True])),
    "adadelta": (("square_avg", "acc_delta"), {},
                 _grid(lr=[1.0, 0.1], rho=[0.9, 0.3], weight_decay=[0.0, 0.05],
                       maximize=[False, True])),
    "rprop": (("prev", "step_size"), {"step_size": 0.01},
              _grid(etaminus=[0.5, 0.3], etaplus=[1.2, 1.7],
                    step_size_min=[1e-6, 5e-3], step_size_max=[50.0, 0.02],
                    maximize=[False, True])),
    "nadam": (("exp_avg", "exp_avg_sq"), {},
              _grid(lr=[0.01], mu_product=[0.5, 0.01], beta1=[0.9, 0.2], beta2=[0.999, 0.3],
                    weight_decay=[0.0, 0.05], momentum_decay=[4e-3, 0.5],
                    decoupled_weight_decay=[False, True], maximize=[False, True])),
    "asgd": (("ax",), {},
             _grid(eta=[0.01, 0.003], mu=[1.0, 0.3], lambd=[1e-4, 0.5],
                   weight_decay=[0.0, 0.05], maximize=[False, True])),
    "adamw_schedule_free": (("z", "exp_avg_sq"), {},
                            _grid(lr=[0.01], ckp1=[0.3, 0.8, 1.0], bias_correction2=[0.1, 1.0],
                                  beta1=[0.9, 0.2], beta2=[0.999, 0.5],
                                  weight_decay=[0.0, 0.05])),
}
# the functions that take no step count (Schedule-Free's schedule is its optimizer's)
NO_STEP = {"adamw_schedule_free"}


def richest(kind):
    """The option set with the most options on (every buffer and branch in play)."""
    return max(ELEMENTWISE[kind][2], key=lambda o: sum(bool(v) and v is not False
                                                     for k, v in o.items() if k != "lr"))


def make_state(kind, param):
    names, start, _ = ELEMENTWISE[kind]
    state = {}
    for name in names:
        state[name] = np.zeros_like(param)
        state[name][...] = start.get(name, 0.0)
    return state


def call(module, kind, param, grad, state, step, options, n_threads=None):
    """module.<kind>_ (fastoptim.functional or fastoptim.reference) on these buffers."""
    names = ELEMENTWISE[kind][0]
    extra = {} if n_threads is None else {"n_threads": n_threads}
    if kind not in NO_STEP:
        extra["step"] = step
    getattr(module, kind + "_")(param, grad, *(state[n] for n in names), **options, **extra)
