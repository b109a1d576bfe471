"""Each optimizer reaches the minimum of a quadratic bowl and of Rosenbrock's valley.

The seed's pictures of optimizer paths: Momentum, RMSProp and Adam started at the
classic (-1.5, 2) point on f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 (minimum at (1, 1)).
"""

import numpy as np
import pytest

import fastoptim


def quadratic_grad(p, scales):
    return scales * p  # f = 0.5 * sum(scales * p^2), minimum at 0


def rosenbrock_grad(p):
    x, y = float(p[0]), float(p[1])
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], dtype=p.dtype)


def _optimize(kind, p, grad_fn, steps, **options):
    z = np.zeros_like
    state = [z(p), z(p), z(p)]
    for t in range(1, steps + 1):
        g = grad_fn(p)
        if kind == "momentum":
            fastoptim.sgd_(p, g, state[0], step=t, momentum=0.9, **options)
        elif kind == "rmsprop":
            fastoptim.rmsprop_(p, g, state[0], step=t, **options)
        elif kind == "adam":
            fastoptim.adam_(p, g, state[0], state[1], step=t, **options)
        else:
            fastoptim.adamw_(p, g, state[0], state[1], step=t, weight_decay=0.0, **options)
    return p


RUNS = {
    # kind: (quadratic options, rosenbrock options, rosenbrock steps)
    "momentum": (dict(lr=0.05), dict(lr=1e-4), 20_000),
    "rmsprop": (dict(lr=0.01), dict(lr=1e-3), 20_000),
    "adam": (dict(lr=0.05), dict(lr=0.01), 10_000),
    "adamw": (dict(lr=0.05), dict(lr=0.01), 10_000),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_quadratic_bowl(kind, dtype):
    scales = np.array([1.0, 3.0, 10.0], dtype=dtype)
    p = np.array([2.0, -1.5, 1.0], dtype=dtype)
    _optimize(kind, p, lambda q: quadratic_grad(q, scales), 2000, **RUNS[kind][0])
    assert np.abs(p).max() < 1e-2, p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_rosenbrock(kind, dtype):
    p = np.array([-1.5, 2.0], dtype=dtype)
    _, options, steps = RUNS[kind]
    _optimize(kind, p, rosenbrock_grad, steps, **options)
    np.testing.assert_allclose(p, [1.0, 1.0], atol=2e-2)
