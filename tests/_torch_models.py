"""The small torch models the fastoptim.torch tests train (import after
pytest.importorskip("torch"))."""

import numpy as np
import pytest
import torch

from fastoptim import reference


def mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                               torch.nn.Tanh(), torch.nn.Linear(32, 2)).to(dtype)


def convnet(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(),
                               torch.nn.Conv2d(4, 4, 3, stride=2), torch.nn.Tanh(),
                               torch.nn.Flatten(), torch.nn.Linear(16, 2)).to(dtype)


MODELS = {"mlp": (mlp, (16, 8)), "convnet": (convnet, (16, 1, 8, 8))}


def data(model, dtype):
    """A fixed batch (inputs, targets) for `model` ("mlp" or "convnet")."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(*MODELS[model][1], generator=g).to(dtype),
            torch.randn(16, 2, generator=g).to(dtype))


def assert_refused_step_changes_nothing(opt, params, error, match):
    """opt.step() raises `error` matching `match`, and the params, the param groups and
    every state entry are as they were."""
    import copy

    import pytest

    before = copy.deepcopy((opt.state_dict(), [p.detach() for p in params]))
    with pytest.raises(error, match=match):
        opt.step()
    after = opt.state_dict()
    assert all(torch.equal(p, q) for p, q in zip(params, before[1]))
    assert after["param_groups"] == before[0]["param_groups"]
    for k, st in before[0]["state"].items():
        assert list(st) == list(after["state"][k])
        for key, t in st.items():
            assert torch.equal(after["state"][k][key], t), key


def step_in_lockstep(net, X, Y, tparams, arrays, topt, nopt, steps=20):
    """Train `net` on the squared error with `topt` (fastoptim.torch) while `nopt` (the
    NumPy class, on `arrays`: copies of `tparams`) takes the same gradients: the params
    are == after every step."""
    import numpy as np

    for _ in range(steps):
        net.zero_grad()
        ((net(X) - Y) ** 2).mean().backward()
        nopt.step([p.grad.numpy().copy() for p in tparams])
        topt.step()
        for a, p in zip(arrays, tparams):
            assert np.array_equal(a, p.detach().numpy())


# A Tensor lr of each kind torch accepts (and a Python float), for a value v: torch's
# Adafactor and Muon keep a Tensor lr a 0-d tensor of its dtype (_to_scalar).
TENSOR_LRS = {"float32-0d": lambda v: torch.tensor(v), "float32-1d": lambda v: torch.tensor([v]),
              "float64-0d": lambda v: torch.tensor(v, dtype=torch.float64),
              "float": lambda v: v}


def numpy_lrs(lr):
    """The lrs a NumPy user would pass for torch's lr: the tensor's array (and its NumPy
    scalar for a 0-d one)."""
    if not isinstance(lr, torch.Tensor):
        return [lr]
    return [lr.numpy(), lr.numpy()[()]] if lr.dim() == 0 else [lr.numpy()]



def torchs_add_is_fused():
    """Whether torch's CPU add_ with alpha rounds once here: its AVX2 and AVX512 kernels
    fuse, its DEFAULT ones (x86 CPUs without AVX2, or ATEN_CPU_CAPABILITY=default) do
    not; fastoptim fuses on every CPU (Adafactor's and Muon's last update)."""
    rng = np.random.default_rng(5)
    y, x = rng.standard_normal(1000) * 1e-4, rng.standard_normal(1000)
    fused = y.copy()
    reference._add_scaled(fused, x, -1.2345678e-5)
    return torch.from_numpy(y).add_(torch.from_numpy(x), alpha=-1.2345678e-5).numpy().tobytes() \
        == fused.tobytes()


#: marks a bit-for-bit comparison of a fused last update: skipped where torch's add_
#: rounds twice
needs_fused_add = pytest.mark.skipif(
    not torchs_add_is_fused(), reason="torch's add_ rounds twice on this CPU (ATen CPU "
    f"capability {torch.backends.cpu.get_cpu_capability()})")
