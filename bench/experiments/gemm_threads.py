"""The layer products of fastoptim.nn on one and two threads (_kernels_gemm.pxi) against
NumPy's product + the layer kernel, per call, interleaved rounds (best of each):

    PYTHONPATH=. python bench/experiments/gemm_threads.py [float64|float32]

Prints microseconds per call for each shape of digits' 64-128-64-10 network at 64 rows.
"""
import sys
import time

import numpy as np

from fastoptim._backend import kernels as K
from fastoptim.nn._network import _gemm_ready

_dot = np.ndarray.dot


def best_us(fn, reps=200, rounds=5):
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e6


def main(dt):
    from threadpoolctl import threadpool_limits
    assert _gemm_ready()
    rng = np.random.default_rng(0)
    n = 64
    with threadpool_limits(1):
        for k, m in [(64, 128), (128, 64), (64, 10)]:
            a = np.maximum(rng.standard_normal((n, k)), 0).astype(dt)
            W = rng.standard_normal((k, m)).astype(dt)
            b = np.zeros(m, dt)
            z = np.empty((n, m), dt)
            d = rng.standard_normal((n, m)).astype(dt)
            g = np.empty((k, m), dt)
            dp = np.empty((n, k), dt)
            bg = np.empty(k, dt)
            wt = np.empty((m, k), dt)
            wt2 = np.empty((2, m, k), dt)          # room for each thread's W.T

            def backward(threads, room):
                return lambda: K.backward_products(a, d, W, g, dp, 1, bg, False, room, threads)
            runs = {
                "forward numpy": lambda: (_dot(a, W, z), K.dense_forward(z, b, 1, 1)),
                "forward gemm 1": lambda: K.dense_forward_product(a, W, b, z, 1, 1),
                "forward gemm 2": lambda: K.dense_forward_product(a, W, b, z, 1, 2),
                "backward numpy": lambda: (_dot(a.T, d, g), K.transpose_into(W, wt),
                                           _dot(d, wt, dp), K.dense_backward(dp, a, 1, bg)),
                "backward gemm 1": backward(1, wt2),
                "backward gemm 2": backward(2, wt2),
                "backward gemm 1 no wt": backward(1, None),
                "backward gemm 2 no wt": backward(2, None),
            }
            old = K.get_gemm_parallel_min_macs()
            K.set_gemm_parallel_min_macs(0)
            best = {}
            for _ in range(3):
                for name, fn in runs.items():
                    best[name] = min(best.get(name, np.inf), best_us(fn))
            K.set_gemm_parallel_min_macs(old)
            print(f"{n} x {k} x {m} {np.dtype(dt).name}: " + ", ".join(
                f"{name} {t:.1f}" for name, t in best.items()))


if __name__ == "__main__":
    main(np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float64").type)
