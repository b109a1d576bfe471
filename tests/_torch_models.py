"""The small torch models the fastoptim.torch tests train (import after
pytest.importorskip("torch"))."""

import torch


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
