"""Time per training epoch: 64-128-64-10 ReLU network on digits, batch 64, Adam(lr=1e-3).

    python -m pytest bench/test_bench_mlp.py --benchmark-group-by=group --benchmark-autosave
    python -m pytest bench/test_bench_mlp.py --benchmark-compare

Contenders, each timed over one epoch of the same 1,437 training rows (80 % stratified
split of digits, pixels / 16), shuffled every epoch, 23 mini-batches (22 x 64 + 29):

* fastoptim ``MLP`` + ``fastoptim.optim.Adam`` (one fused step over ``params_flat``),
  through the training loop ``fastoptim.nn.train``, float32 and float64, with the
  compiled layer kernels and with the NumPy reference path (``net.fused = False``, the
  path before the kernels) -- and through the estimator ``MLPClassifier.partial_fit``
  (adds input checks per call);
* scikit-learn ``MLPClassifier(solver="adam").partial_fit`` (one epoch per call), on
  float32 and on float64 input (it trains in the input's dtype);
* PyTorch ``nn.Sequential`` + ``torch.optim.Adam`` with ``torch.set_num_threads(1)``
  (default foreach and ``fused=True``).

Two groups.  "BLAS default threads": every library as it comes (fastoptim's training loop
itself drops NumPy's BLAS to one thread for a network this small when threadpoolctl is
installed; scikit-learn uses OpenBLAS's default thread count).  "1 thread everywhere":
fastoptim's kernels and every BLAS pinned to one thread (threadpoolctl), like-for-like
with single-threaded PyTorch.  Before
timing, every contender must reach >= 90 % held-out accuracy within 8 epochs (all
learn the same task); no timed assertion is made.
"""

import warnings

import numpy as np
import pytest

import fastoptim
from fastoptim.datasets import load_digits, train_test_split
from fastoptim.nn import MLP, MLPClassifier, train
from fastoptim.optim import Adam

SIZES = [64, 128, 64, 10]
BATCH = 64
LR = 1e-3


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16.0).astype(np.float32), y, test_size=0.2, random_state=0)


def _threads(limit):
    """Context: at most `limit` threads for BLAS (threadpoolctl) and fastoptim kernels."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        old = fastoptim.get_num_threads()
        if limit is not None:
            fastoptim.set_num_threads(limit)
        try:
            if limit is None:
                yield
            else:
                threadpoolctl = pytest.importorskip("threadpoolctl")
                with threadpoolctl.threadpool_limits(limits=limit):
                    yield
        finally:
            fastoptim.set_num_threads(old)
    return ctx()


# ---- contenders: each returns (run_one_epoch, accuracy_on(X, y)) ---------------------------

def _fastoptim_loop(dtype, fused):
    def make(Xtr, ytr):
        net = MLP(SIZES, "relu", "softmax", dtype=dtype, alpha=1e-4, seed=0)
        net.fused = fused
        opt = Adam([net.params_flat], lr=LR)
        X, Y = net.check_X(Xtr), net.targets(ytr)
        rng = np.random.default_rng(0)

        def epoch():
            train(net, X, Y, opt, epochs=1, batch_size=BATCH, seed=rng, progress=False)

        return epoch, lambda Xe, ye: float(np.mean(net.forward(Xe).argmax(1) == ye))
    return make


def fastoptim_estimator(Xtr, ytr):
    clf = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], batch_size=BATCH, learning_rate_init=LR,
                        random_state=0)
    classes = np.unique(ytr)
    return lambda: clf.partial_fit(Xtr, ytr, classes=classes), clf.score


def _sklearn_adam(dtype):
    def make(Xtr, ytr):
        nn = pytest.importorskip("sklearn.neural_network")
        clf = nn.MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), batch_size=BATCH,
                               solver="adam", learning_rate_init=LR, random_state=0)
        classes = np.unique(ytr)
        X = Xtr.astype(dtype)
        return lambda: clf.partial_fit(X, ytr, classes=classes), clf.score
    return make


def _torch(fused):
    def make(Xtr, ytr):
        torch = pytest.importorskip("torch")
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
            torch.nn.ReLU(), torch.nn.Linear(64, 10))
        kw = {"fused": True} if fused else {}
        opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0, **kw)
        loss_fn = torch.nn.CrossEntropyLoss()
        X = torch.from_numpy(np.ascontiguousarray(Xtr, dtype=np.float32))
        y = torch.from_numpy(ytr.astype(np.int64))
        n = X.shape[0]
        gen = torch.Generator().manual_seed(0)

        def epoch():
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, BATCH):
                idx = perm[start:start + BATCH]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(X[idx]), y[idx])
                loss.backward()
                opt.step()

        def acc(Xe, ye):
            with torch.no_grad():
                out = model(torch.from_numpy(np.ascontiguousarray(Xe, dtype=np.float32)))
            return float((out.argmax(1).numpy() == ye).mean())
        return epoch, acc
    return make


CONTENDERS = {
    "fastoptim-train": _fastoptim_loop(np.float32, True),
    "fastoptim-train-float64": _fastoptim_loop(np.float64, True),
    "fastoptim-train-numpy-path": _fastoptim_loop(np.float32, False),
    "fastoptim-train-float64-numpy-path": _fastoptim_loop(np.float64, False),
    "fastoptim-MLPClassifier.partial_fit": fastoptim_estimator,
    "sklearn-MLPClassifier.partial_fit": _sklearn_adam(np.float32),
    "sklearn-MLPClassifier.partial_fit-float64": _sklearn_adam(np.float64),
    "torch-1thread-foreach": _torch(False),
    "torch-1thread-fused": _torch(True),
}


@pytest.mark.parametrize("threads", [None, 1], ids=["default-threads", "1-thread"])
@pytest.mark.parametrize("name", list(CONTENDERS))
def test_epoch_time(benchmark, digits, name, threads):
    Xtr, Xte, ytr, yte = digits
    with _threads(threads):
        epoch, accuracy = CONTENDERS[name](Xtr, ytr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(8):               # correctness first: all learn the same task
                epoch()
            assert accuracy(Xte, yte) >= 0.90
            benchmark.group = f"mlp-epoch digits 64-128-64-10 adam b{BATCH} " + (
                "(BLAS default threads)" if threads is None else "(1 thread everywhere)")
            benchmark.extra_info["epoch_rows"] = len(Xtr)
            benchmark.pedantic(epoch, rounds=30, warmup_rounds=2, iterations=1)
