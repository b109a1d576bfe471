"""Run the same steps with torch.optim, the reference behaviour (tests only)."""

import numpy as np

_STATE_NAMES = {"sgd": ("momentum_buffer",),
                "rmsprop": ("square_avg", "momentum_buffer", "grad_avg"),
                "adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}


def torch_optimizer(torch, kind, params, lr, options, foreach=None):
    """torch's optimizer class for fastoptim's functional keyword arguments."""
    o = dict(options)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=foreach, **o)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=foreach, **o)
    betas = (o.pop("beta1", 0.9), o.pop("beta2", 0.999))
    return torch.optim.Adam(params, lr=lr, betas=betas, foreach=foreach, **o)


def torch_steps(kind, param, grads, lr, options, foreach=None, before_step=None):
    """Apply `grads` one step each to a copy of `param` with torch; return the param
    and its state buffers as NumPy arrays.  before_step(step, state) may edit
    torch's state (a dict of tensors) before each step."""
    import torch
    p = torch.tensor(param.copy(), requires_grad=True)
    opt = torch_optimizer(torch, kind, [p], lr, options, foreach=foreach)
    for step, g in enumerate(grads, 1):
        if before_step is not None:
            before_step(step, opt.state[p])
        p.grad = torch.tensor(g.copy())
        opt.step()
    state = {k: opt.state[p][k].detach().numpy().copy()
             for k in _STATE_NAMES[kind] if torch.is_tensor(opt.state[p].get(k))}
    return p.detach().numpy().copy(), state
