"""Adafactor and Muon steps on one float32 matrix, fastoptim vs torch.optim (same data).

    python -m pytest bench/test_bench_factored.py --benchmark-only [--runslow]

The 4096 x 4096 cases run only with --runslow (a Muon step there is seconds of matrix
products).  Each group first checks that the contenders agree after one step (Adafactor:
float32 rounding; Muon: torch's bfloat16 Newton-Schulz, so loosely); no timed assertion.
"""

import numpy as np
import pytest

from fastoptim.optim import Adafactor, Muon

SIZES = [1024, 4096]


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, n)).astype(np.float32),
            (0.01 * rng.standard_normal((n, n))).astype(np.float32))


def _fastoptim_step(cls, n, kw):
    p, g = _data(n)
    opt = cls([p], **kw)
    return p, lambda: opt.step([g])


def _torch_step(cls_name, n, kw):
    torch = pytest.importorskip("torch")
    p0, g = _data(n)
    p = torch.tensor(p0, requires_grad=True)
    opt = getattr(torch.optim, cls_name)([p], **kw)
    p.grad = torch.tensor(g)
    return p, lambda: opt.step()


def _skip_large(n, request):
    if n > 1024 and not request.config.getoption("--runslow", default=False):
        pytest.skip("4096 x 4096: pass --runslow")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", ["fastoptim", "torch"])
@pytest.mark.parametrize("kind,kw,rtol", [("Adafactor", dict(lr=1e-2), 1e-5),
                                          ("Muon", dict(lr=2e-2), 2e-2)])
def test_factored_step(benchmark, request, n, impl, kind, kw, rtol):
    _skip_large(n, request)
    benchmark.group = f"{kind} step, float32 {n}x{n}"
    ours, step = _fastoptim_step({"Adafactor": Adafactor, "Muon": Muon}[kind], n, kw)
    theirs, tstep = _torch_step(kind, n, kw)
    if impl == "fastoptim":  # the same result first (one step each, from the same data)
        step()
        tstep()
        diff = np.linalg.norm(ours - theirs.detach().numpy()) / np.linalg.norm(ours)
        assert diff < rtol
    benchmark(step if impl == "fastoptim" else tstep)
