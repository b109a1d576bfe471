"""fastoptim's own kernel threads in a digits MLPClassifier fit: kernel_threads=1, the
default count (fastoptim.get_num_threads()) and "auto" (the count the first batches of
training measured faster), BLAS at 1 thread; checks that the weights are the same bits.

    python bench/experiments/nn_threads.py "(128, 64)"

ms per epoch, best of 3 interleaved 30-epoch fits of float64 MLPClassifier(HIDDEN,
batch_size=64) on the bundled digits.  Measured before kernel_threads existed
(2026-11-29 ~14:50 UTC, quiet 2-core VM, fastoptim.set_num_threads(2) against (1)):
(128, 64) 5.34 against 4.58 ms and, in a second run, 4.80 against 4.62 (two threads
4-17% slower), (256, 128) 14.64 against 14.41, (512, 256) 45.70 against 45.15.  Under
load (~5 on the 2 cores, 15:36 UTC) two threads for the step only ran the digits
epoch at 14-260 ms against 3.4 ms: an OpenMP thread that waits between the steps of a
loop gets its core back late on a busy VM, which is why "auto" times the choice.
"""

import contextlib
import sys
import time
import warnings

import numpy as np

import fastoptim
from fastoptim.datasets import load_digits

warnings.simplefilter("ignore")
digits = load_digits()
X, y = np.asarray(digits.data, np.float64) / 16.0, digits.target
HIDDEN = eval(sys.argv[1]) if len(sys.argv) > 1 else (128, 64)
SETTINGS = (fastoptim.get_num_threads(), 1, "auto")


def fit(kernel_threads):
    clf = fastoptim.MLPClassifier(HIDDEN, batch_size=64, max_iter=30, random_state=0, tol=0,
                                  n_iter_no_change=1000, kernel_threads=kernel_threads)
    try:
        import threadpoolctl
        limit = threadpoolctl.threadpool_limits(1, "blas")
    except ImportError:
        limit = contextlib.nullcontext()
    with limit:
        start = time.perf_counter()
        clf.fit(X, y)
        return (time.perf_counter() - start) / 30 * 1e3, clf.net_.params_flat


best, weights = {}, {}
for _ in range(3):
    for n in SETTINGS:
        ms, weights[n] = fit(n)
        best[n] = min(best.get(n, float("inf")), ms)
same = all(np.array_equal(w, weights[1]) for w in weights.values())
for n, ms in best.items():
    print(f"kernel_threads={n!r}: {ms:.2f} ms/epoch")
print("same weights for every setting:", same)
print("auto chose:", fastoptim.nn._training._kernel_choice)
