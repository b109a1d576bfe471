"""Python overhead of ``Optimizer.step`` vs one functional call, on a 10-array small model.

    python -m pytest bench/test_bench_optimizer_step.py --benchmark-autosave
    python -m pytest bench/test_bench_optimizer_step.py --benchmark-compare

The model is small (about 9 K float32 elements) so the kernel itself takes a few
microseconds and the timings show the per-step cost of the class layer: gradient
validation, the cached per-group lists and the step counters. Each group first checks
that its contenders produce identical results; no timed assertion is made.
"""

import numpy as np
import pytest

from fastoptim import functional as F
from fastoptim.optim import SGD, Adam, RMSprop

SHAPES = [(64, 64), (64,), (64, 32), (32,), (32, 32), (32,), (32, 16), (16,), (16, 10), (10,)]


def model(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def grads(seed=1):
    rng = np.random.default_rng(seed)
    return [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in SHAPES]


def functional_adam(params):
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    state = {"step": 0}

    def step(gs):
        state["step"] += 1
        F.adam_(params, gs, m, v, step=state["step"], lr=1e-3)
    return step


def functional_sgd(params):
    bufs = [np.zeros_like(p) for p in params]
    state = {"step": 0}

    def step(gs):
        state["step"] += 1
        F.sgd_(params, gs, bufs, step=state["step"], lr=1e-3, momentum=0.9)
    return step


def functional_rmsprop(params):
    sq = [np.zeros_like(p) for p in params]

    def step(gs):
        F.rmsprop_(params, gs, sq, step=1, lr=1e-3)
    return step


CASES = {
    "adam": (lambda ps: Adam(ps, lr=1e-3).step, functional_adam),
    "sgd_momentum": (lambda ps: SGD(ps, lr=1e-3, momentum=0.9).step, functional_sgd),
    "rmsprop": (lambda ps: RMSprop(ps, lr=1e-3).step, functional_rmsprop),
}


def _make(kind, impl):
    params = model()
    make_class, make_functional = CASES[kind]
    if impl == "class":
        return params, make_class(params)
    if impl == "class_nonfinite_skip":
        opt = {"adam": Adam, "sgd_momentum": SGD, "rmsprop": RMSprop}[kind]
        kw = dict(momentum=0.9) if kind == "sgd_momentum" else {}
        return params, opt(params, lr=1e-3, nonfinite="skip", **kw).step
    return params, make_functional(params)


@pytest.mark.parametrize("impl", ["functional", "class", "class_nonfinite_skip"])
@pytest.mark.parametrize("kind", list(CASES))
def test_step_overhead(benchmark, kind, impl):
    benchmark.group = f"optimizer-step-{kind}-10-arrays-float32"
    gs = grads()
    # Same results as the functional API over a few steps, before timing.
    ref_params, ref_step = _make(kind, "functional")
    params, step = _make(kind, impl)
    for _ in range(3):
        ref_step(gs)
        step(gs)
    for p, q in zip(params, ref_params):
        assert np.array_equal(p, q)
    benchmark(step, gs)


@pytest.mark.parametrize("impl", ["fastoptim", "torch_foreach_false", "torch_fused"])
def test_step_overhead_vs_torch(benchmark, impl):
    benchmark.group = "optimizer-step-adam-10-arrays-float32-peers"
    gs = grads()
    if impl == "fastoptim":
        params = model()
        benchmark(Adam(params, lr=1e-3).step, gs)
        return
    torch = pytest.importorskip("torch")
    tparams = [torch.tensor(p, requires_grad=True) for p in model()]
    for tp, g in zip(tparams, gs):
        tp.grad = torch.tensor(g)
    kw = dict(foreach=False) if impl == "torch_foreach_false" else dict(fused=True)
    topt = torch.optim.Adam(tparams, lr=1e-3, **kw)
    # check the peer computes the same update (one step from the same start)
    params = model()
    Adam(params, lr=1e-3).step(gs)
    topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6, atol=1e-7)
    benchmark(topt.step)


@pytest.mark.parametrize("n_params", [1, 10])
def test_class_step_overhead_1000_elements(benchmark, n_params):
    """``Adam.step`` over n float32 arrays of 1,000 elements: almost all of it is the
    class layer's per-step checks (live param_groups / state, hyperparameters)."""
    benchmark.group = f"optimizer-step-adam-class-{n_params}x1000-float32"
    rng = np.random.default_rng(0)
    gs = [(0.01 * rng.standard_normal(1000)).astype(np.float32) for _ in range(n_params)]
    params = [np.zeros(1000, np.float32) for _ in range(n_params)]
    ref = [np.zeros(1000, np.float32) for _ in range(n_params)]
    opt, ref_step = Adam(params, lr=1e-3), functional_adam(ref)
    for _ in range(3):  # same results as the functional API, before timing
        opt.step(gs)
        ref_step(gs)
    for p, q in zip(params, ref):
        assert np.array_equal(p, q)
    benchmark(opt.step, gs)
