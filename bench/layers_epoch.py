"""ms per epoch of ONE 30-epoch training run on digits, 64-128-64-10 ReLU, batch 64,
Adam(lr=1e-3), as issue #16 measures it: fastoptim ``train`` (layer kernels and the
NumPy reference path, float32/float64), scikit-learn ``MLPClassifier.fit`` on float64
input (30 iterations, no early stop) and torch (1 thread, float32, same net and batch
size), the runs interleaved round by round; BLAS and fastoptim on one thread.  Prints the
best CPU time and best wall time per epoch (a shared machine: CPU time is steadier).
The per-epoch pytest-benchmark group is bench/test_bench_mlp.py.

    python bench/layers_epoch.py [rounds] [--default-threads]

``--default-threads``: every library with its own default threads (fastoptim's training
loop then picks its BLAS thread count and its own kernel thread count by timing,
blas_threads="auto" and kernel_threads="auto"; torch stays at 1).
"""

import time
import warnings

import numpy as np

import fastoptim
from fastoptim.datasets import load_digits, train_test_split
from fastoptim.nn import MLP, train
from fastoptim.optim import Adam

SIZES, BATCH, LR, EPOCHS = [64, 128, 64, 10], 64, 1e-3, 30


def fastoptim_run(dtype, fused):
    def run(Xtr, ytr):
        net = MLP(SIZES, "relu", "softmax", dtype=dtype, alpha=1e-4, seed=0)
        net.fused = fused
        train(net, Xtr.astype(dtype), ytr, Adam([net.params_flat], lr=LR), epochs=EPOCHS,
              batch_size=BATCH, seed=0, progress=False)
    return run


def sklearn_run(Xtr, ytr):
    from sklearn.neural_network import MLPClassifier
    MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), batch_size=BATCH, solver="adam",
                  learning_rate_init=LR, max_iter=EPOCHS, tol=0.0, n_iter_no_change=10**6,
                  random_state=0).fit(Xtr.astype(np.float64), ytr)


def torch_run(Xtr, ytr):
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
        torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.from_numpy(np.ascontiguousarray(Xtr, dtype=np.float32))
    y = torch.from_numpy(ytr.astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        perm = torch.randperm(X.shape[0], generator=gen)
        for start in range(0, X.shape[0], BATCH):
            idx = perm[start:start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()


RUNS = {
    "fastoptim float32 (layer kernels)": fastoptim_run(np.float32, True),
    "fastoptim float32 (NumPy path)": fastoptim_run(np.float32, False),
    "fastoptim float64 (layer kernels)": fastoptim_run(np.float64, True),
    "fastoptim float64 (NumPy path)": fastoptim_run(np.float64, False),
    "scikit-learn MLPClassifier float64": sklearn_run,
    "torch 1 thread float32": torch_run,
}


def main(rounds=3, one_thread=True):
    import contextlib

    from threadpoolctl import threadpool_limits
    X, y = load_digits(return_X_y=True)
    Xtr, _, ytr, _ = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
    if one_thread:
        fastoptim.set_num_threads(1)
    best = {}
    limit = threadpool_limits(1) if one_thread else contextlib.nullcontext()
    with limit, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(rounds):
            for name, run in RUNS.items():
                c, t = time.process_time(), time.perf_counter()
                try:
                    run(Xtr, ytr)
                except ImportError:
                    continue
                c, t = time.process_time() - c, time.perf_counter() - t
                b = best.setdefault(name, [np.inf, np.inf])
                b[0], b[1] = min(b[0], c * 1e3 / EPOCHS), min(b[1], t * 1e3 / EPOCHS)
    for name, (c, t) in best.items():
        print(f"{name:36s} cpu {c:7.2f} ms/epoch  wall {t:7.2f} ms/epoch")


if __name__ == "__main__":
    import sys
    args = [a for a in sys.argv[1:] if a != "--default-threads"]
    main(int(args[0]) if args else 3, one_thread="--default-threads" not in sys.argv)
