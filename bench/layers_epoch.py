"""ms per training epoch on digits, 64-128-64-10 ReLU, batch 64, Adam(lr=1e-3): fastoptim
(layer kernels and the NumPy reference path, float32/float64), scikit-learn (float64
input) and torch (1 thread, float32), interleaved round by round; BLAS and fastoptim on
one thread.  Prints the best CPU time and best wall time per contender (a shared machine:
CPU time is the steadier figure).

    python bench/layers_epoch.py [rounds]
"""

import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
import test_bench_mlp as mlp  # noqa: E402  (the contenders of the pytest-benchmark group)

import fastoptim  # noqa: E402
from fastoptim.datasets import load_digits, train_test_split  # noqa: E402

NAMES = ["fastoptim-train", "fastoptim-train-numpy-path", "fastoptim-train-float64",
         "fastoptim-train-float64-numpy-path", "sklearn-MLPClassifier.partial_fit-float64",
         "torch-1thread-foreach"]


def main(rounds=10):
    from threadpoolctl import threadpool_limits
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split((X / 16.0).astype(np.float32), y, test_size=0.2,
                                          random_state=0)
    fastoptim.set_num_threads(1)
    best = {n: [np.inf, np.inf] for n in NAMES}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = {}
        for name in NAMES:
            try:
                runs[name] = mlp.CONTENDERS[name](Xtr, ytr)[0]
            except BaseException as exc:       # a peer not installed (pytest.skip)
                print(f"{name}: skipped ({type(exc).__name__})")
                continue
            for _ in range(2):
                runs[name]()
        for _ in range(rounds):
            for name, epoch in runs.items():
                c, t = time.process_time(), time.perf_counter()
                epoch()
                c, t = time.process_time() - c, time.perf_counter() - t
                best[name][0] = min(best[name][0], c * 1e3)
                best[name][1] = min(best[name][1], t * 1e3)
    for name in runs:
        print(f"{name:45s} cpu {best[name][0]:7.2f} ms  wall {best[name][1]:7.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
