"""Mini-batch training of an :class:`~fastoptim.nn.MLP` with any fastoptim optimizer.

One epoch: (seeded) shuffle the row order, then for each mini-batch gather its rows into
the network's preallocated batch buffers (``np.take(..., out=...)``), compute loss and
gradients into ``net.grads_flat`` and make ONE optimizer call ``opt.step([grads_flat])``
for the whole network.  After the epoch: validation loss/accuracy, LR scheduler step,
plateau / early-stopping check, history, progress bar.
"""

import contextlib
import math
import numbers
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from fastoptim._backend import resolve_n_threads

__all__ = ["History", "train", "make_optimizer", "DivergenceError"]


class DivergenceError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite (caught by ``except FloatingPointError``
    and by ``except ValueError``, scikit-learn's type for non-finite weights)."""


def _check_count(name, value):
    """A positive int (no bool) that fits in 64 bits: epochs, batch sizes."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or not 1 <= value < 2 ** 63:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _check_step_in_backward(value):
    if not ((isinstance(value, str) and value == "auto") or isinstance(value, (bool, np.bool_))):
        raise ValueError(f"step_in_backward must be True, False or 'auto', got {value!r}")
    return value


def _step_in_backward(value, net, optimizer):
    """Whether to try stepping each layer during backward (the optimizer may still
    refuse a given step: see Optimizer._piecewise_step).  "auto": on when the
    parameters outgrow the cache that the whole step after backward re-reads them from
    (measured: on smaller networks it only adds a kernel call per layer)."""
    if not getattr(net, "fused", False) or not callable(
            getattr(optimizer, "_piecewise_step", None)):
        return False
    if isinstance(value, str):
        return net.params_flat.nbytes >= _STEP_IN_BACKWARD_MIN_BYTES
    return bool(value)


_STEP_IN_BACKWARD_MIN_BYTES = 1 << 22     # 4 MiB (measured: README, network section)


class _Epochs:
    """Passes over (X, Y) in mini-batches, ONE optimizer step per batch for the whole
    network; the buffers and batch views are set up once.  Shared by :func:`train` and
    the scikit-learn estimators (which keep their own stopping rules).

    ``grad_accumulation=k``: each mini-batch's gradient is computed in k micro-batches
    of about batch_size / k rows (the first writes grads_flat, the others add to it; the
    activation buffers hold one micro-batch), then one step.  ``step_in_backward``: each
    layer's parameters are stepped as soon as its gradient is final in the last
    micro-batch's backward (see _step_in_backward)."""

    def __init__(self, net, X, Y, optimizer, batch_size, sample_weight=None, *,
                 grad_accumulation=1, step_in_backward="auto", kernel_threads=None):
        self.net, self.X, self.Y, self.sw = net, X, Y, sample_weight
        self.n = X.shape[0]
        self.optimizer = optimizer
        self.step = optimizer.step
        self.grads = _grads_for(net, optimizer)
        self.batch_size = batch_size
        self.accumulation = min(grad_accumulation, batch_size)
        net.reserve(-(-batch_size // self.accumulation))
        # the layer pieces are ranges of params_flat: only for an optimizer on it
        self.in_backward = (self.grads[0] is net.grads_flat
                            and _step_in_backward(step_in_backward, net, optimizer))
        self.n_updates = 0
        self.products = False          # compiled products: set by threads()
        self.rows = -(-batch_size // self.accumulation)     # per micro-batch
        self.kernel_threads = _KernelThreads(kernel_threads, self)
        # fastoptim's kernel thread count for the layers and (when the optimizer has no
        # n_threads of its own) the step: None = fastoptim's default
        self.n_threads = self.kernel_threads.count

    def threads(self, blas_threads):
        """Context for the training loop: NumPy's BLAS threads as ``blas_threads`` says
        (see _blas_threads), and the kernel threads of this run; the optimizer's
        n_threads is put back afterwards.  Where that leaves every BLAS at one thread,
        the matrix products run in compiled code on the kernel threads (scipy's gemm,
        loaded first so that the limit covers its library: its own threads would fight
        ours for the cores; see MLP._loss_grad_batch's ``products``)."""
        from ._network import _gemm_ready

        stack = contextlib.ExitStack()
        wants = getattr(self.net, "fused", False) and _gemm_ready()
        context, one_thread = _blas_setting(self.net, self.rows, blas_threads, wants)
        stack.enter_context(context)
        self.products = bool(wants and one_thread)
        stack.callback(setattr, self, "products", False)
        stack.callback(self.kernel_threads.restore)
        self.kernel_threads.apply(self.n_threads)
        return stack

    def _batch(self, start, stop, order, after_layer, nt):
        """Loss of rows [start, stop) of the epoch's order; gradients into grads_flat."""
        net, X, Y, sw = self.net, self.X, self.Y, self.sw
        k = self.accumulation
        rows = stop - start
        total = None
        if k > 1 and sw is not None:
            w = sw[order[start:stop]] if order is not None else sw[start:stop]
            total = float(np.add.reduce(w, dtype=np.float64))
        elif k > 1:
            total = rows
        loss = 0.0
        for j in range(k):
            lo, hi = start + rows * j // k, start + rows * (j + 1) // k
            v = net._get_views(hi - lo)
            if order is not None:
                idx = order[lo:hi]
                xb, yb = net._gather(X, Y, idx, v)
                wb = None if sw is None else sw[idx]
            else:
                xb, yb = X[lo:hi], Y[lo:hi]
                wb = None if sw is None else sw[lo:hi]
            if j == k - 1:
                loss += net._loss_grad_batch(xb, yb, v, wb, total=total, accumulate=j > 0,
                                             after_layer=after_layer, n_threads=nt,
                                             products=self.products)
            else:
                loss += net._loss_grad_batch(xb, yb, v, wb, total=total, accumulate=j > 0,
                                             penalty=False, n_threads=nt,
                                             products=self.products)
        return loss

    def run(self, order=None, before_step=None):
        """One epoch over the rows in ``order`` (None: as stored); returns scikit-learn's
        epoch loss, the batch losses weighted by their row counts over n.
        ``before_step(samples_seen_this_epoch)`` runs before every update (and before
        the batch's backward, which may already step)."""
        total = 0.0
        grad = self.net.grads_flat
        pieces = self.net._layer_pieces
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            if before_step is not None:
                before_step(start)
            # a full batch of the thread-count trial
            trial = self.kernel_threads.trial if stop - start == self.batch_size else None
            if trial is not None:
                self.n_threads = trial.next_count()
                self.kernel_threads.apply(self.n_threads)
                t0 = time.perf_counter()
            split = self.optimizer._piecewise_step(grad, pieces) if self.in_backward else None
            if split is None:
                total += self._batch(start, stop, order, None, self.n_threads) * (stop - start)
                self.step(self.grads)
            else:
                calls, finish = split
                total += self._batch(start, stop, order, lambda i: calls[i](),
                                     self.n_threads) * (stop - start)
                finish()
            if trial is not None and trial.record(time.perf_counter() - t0):
                self.n_threads = self.kernel_threads.decide()
            self.n_updates += 1
        return total / self.n


@dataclass
class History:
    """Per-epoch record of a training run (lists have one entry per epoch run)."""

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)   # softmax output only
    val_r2: list = field(default_factory=list)         # identity output only
    lr: list = field(default_factory=list)             # lr used during the epoch
    epoch_time: list = field(default_factory=list)     # seconds
    best_epoch: int = None       # 0-based epoch of the lowest validation loss
    best_val_loss: float = None
    stopped_early: bool = False  # stopped by the plateau rule before `epochs`
    n_updates: int = 0           # optimizer steps taken

    @property
    def n_epochs(self):
        return len(self.train_loss)

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Progress:
    """A one-line progress bar on a terminal (stderr), shown only once a run lasts > delay s."""

    def __init__(self, total, enabled=None, stream=None, delay=1.0, width=24):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            try:
                enabled = bool(isatty and isatty())
            except (ValueError, OSError):  # closed / detached stream
                enabled = False
        self.enabled = enabled
        self.total, self.delay, self.width = total, delay, width
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.drawn = False

    def update(self, epoch, train_loss, val_loss=None):
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.t0
        if elapsed < self.delay or (now - self.last < 0.1 and epoch < self.total):
            return
        self.last = now
        done = int(self.width * epoch / self.total)
        bar = "#" * done + "." * (self.width - done)
        msg = f"\r[{bar}] {epoch}/{self.total} loss {train_loss:.4g}"
        if val_loss is not None:
            msg += f" val {val_loss:.4g}"
        msg += f" {elapsed:.1f}s"
        self.stream.write(msg + " " * 4)
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def make_optimizer(name, params, **kwargs):
    """Build ``fastoptim.optim.<Adam|SGD|RMSprop>(params, **kwargs)`` from a solver name."""
    if not isinstance(name, str):
        raise TypeError(f"solver must be a string ('adam', 'sgd' or 'rmsprop'), got "
                        f"{type(name).__name__}")
    key = name.lower()
    if key not in ("adam", "sgd", "rmsprop"):
        raise ValueError(f"solver must be 'adam', 'sgd' or 'rmsprop', got {name!r}")
    from fastoptim import optim

    cls = {"adam": optim.Adam, "sgd": optim.SGD, "rmsprop": optim.RMSprop}[key]
    return cls(params, **kwargs)


_BLAS_BIG_MACS = 1 << 26      # a product this large: BLAS threads pay, no need to time
_BLAS_TINY_MACS = 1 << 18     # below this OpenBLAS runs gemm on one thread anyway
_controller = None
_controller_stamp = None
_blas_choice = {}             # (layer sizes, rows, dtype, threads) -> measured count


def _glibc_load_counter():
    """A function returning glibc's count of shared-library loads and unloads so far
    (dl_iterate_phdr's dlpi_adds / dlpi_subs, read from the first object only: ~1 us),
    or None where that is not available."""
    import ctypes

    class _PhdrInfo(ctypes.Structure):
        _fields_ = [("addr", ctypes.c_void_p), ("name", ctypes.c_char_p),
                    ("phdr", ctypes.c_void_p), ("phnum", ctypes.c_uint16),
                    ("adds", ctypes.c_ulonglong), ("subs", ctypes.c_ulonglong)]
    try:
        iterate = ctypes.CDLL(None).dl_iterate_phdr
    except (OSError, AttributeError, TypeError):
        return None
    seen = []

    def first(info, size, _data):
        if size >= ctypes.sizeof(_PhdrInfo):
            seen.append((info.contents.adds, info.contents.subs))
        return 1                       # stop after the first object

    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_PhdrInfo), ctypes.c_size_t,
                                ctypes.c_void_p)(first)

    def count():
        seen.clear()
        iterate(callback, None)
        return seen[0] if seen else None
    return count if count() is not None else None


_load_counter = None


def _libraries_stamp():
    """Changes when a shared library was loaded or unloaded (glibc), else when a module
    was imported (how BLAS libraries get loaded: e.g. scipy brings its own OpenBLAS)."""
    global _load_counter
    if _load_counter is None:
        _load_counter = (sys.platform.startswith("linux") and _glibc_load_counter()) or False
    return _load_counter() if _load_counter else len(sys.modules)


def _get_controller():
    """threadpoolctl's controller of the libraries loaded now: made again when one was
    loaded since (a controller only sees the libraries present when it was made, and
    would leave a BLAS loaded later, say scipy's, at its own thread count)."""
    global _controller, _controller_stamp
    if _controller is False:
        return _controller
    stamp = _libraries_stamp()
    if _controller is None or stamp != _controller_stamp:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = False
        else:
            _controller = ThreadpoolController()
            _controller_stamp = stamp
    return _controller


def _time_products(net, rows, controller, threads, repeats):
    """Best time of one batch's matrix products (forward, weight and delta gradients)
    with ``threads`` BLAS threads, on scratch arrays of the network's shapes."""
    dt = net.dtype
    shapes = list(zip(net.layer_sizes[:-1], net.layer_sizes[1:]))
    arrays = [(np.full((rows, a), 0.5, dt), np.full((a, b), 0.01, dt), np.empty((rows, b), dt),
               np.empty((a, b), dt)) for a, b in shapes]
    best = math.inf
    with controller.limit(limits=threads, user_api="blas"):
        for _ in range(repeats):
            t0 = time.perf_counter()
            for A, W, Z, G in arrays:
                np.matmul(A, W, out=Z)
                np.matmul(A.T, Z, out=G)
                np.matmul(Z, W.T, out=A)
            best = min(best, time.perf_counter() - t0)
    return best


def _measured_blas_threads(net, rows, controller):
    """The BLAS thread count for this network at ``rows`` rows per batch: one thread
    unless the library's default count runs the batch's products measurably (10 %)
    faster.  Timed once per process and shape, one and many threads interleaved."""
    many = _blas_max_threads(controller)
    if many <= 1:
        return None
    key = (net.layer_sizes, rows, net.dtype.str, many)
    if key not in _blas_choice:
        macs = rows * max(W.size for W in net.coefs)
        if macs >= _BLAS_BIG_MACS or macs < _BLAS_TINY_MACS:
            _blas_choice[key] = None if macs >= _BLAS_BIG_MACS else 1
        else:
            one = multi = math.inf
            for r in range(2):
                one = min(one, _time_products(net, rows, controller, 1, 3))
                multi = min(multi, _time_products(net, rows, controller, many, 1 + 2 * r))
                if multi > 2 * one:       # clearly slower (e.g. a busy machine): done
                    break
            _blas_choice[key] = None if multi < 0.9 * one else 1
    return _blas_choice[key]


def _blas_threads(net, batch_size, blas_threads):
    """Context limiting NumPy's BLAS threads during training (threadpoolctl, if installed).

    "auto": the count measured faster for this network's products at this batch size
    (:func:`_measured_blas_threads`); None: leave as is; an int: that many.
    """
    return _blas_setting(net, batch_size, blas_threads)[0]


def _blas_setting(net, batch_size, blas_threads, products=False):
    """(the context of :func:`_blas_threads`, True when every BLAS library loaded runs
    on one thread inside it).  Made after a library loaded since (say scipy's) is
    seen: the limit covers it too.  ``products``: the compiled products can run the
    network's products on fastoptim's kernel threads; then "auto" is one BLAS thread
    below _BLAS_BIG_MACS without timing BLAS's threads (the kernel-thread trial times
    ours instead; and a timing run leaves OpenBLAS's threads spinning for a while
    after it, taking a core from ours: measured 5.1 instead of 3.3 ms per digits
    epoch at two kernel threads right after a 2-thread 300 x 300 product)."""
    controller = _get_controller()
    if controller is False or blas_threads is None:
        return contextlib.nullcontext(), False
    if (products and isinstance(blas_threads, str) and blas_threads == "auto"
            and batch_size * max(W.size for W in net.coefs) < _BLAS_BIG_MACS):
        blas_threads = 1
    if isinstance(blas_threads, str) and blas_threads == "auto":
        blas_threads = _measured_blas_threads(net, batch_size, controller)
        if blas_threads is None:     # many threads pay, or every library is at one
            return contextlib.nullcontext(), _blas_max_threads(controller) <= 1
    return controller.limit(limits=int(blas_threads), user_api="blas"), blas_threads == 1


def _blas_max_threads(controller):
    """The largest thread count of the BLAS libraries loaded (1 when none)."""
    return max((i.get("num_threads", 1) for i in controller.info()
                if i.get("user_api") == "blas"), default=1)


_KERNEL_TRIAL_ROUNDS = 4      # blocks per thread count
_KERNEL_TRIAL_BLOCK = 4       # batches per block, the first one untimed
_kernel_choice = {}           # (layer sizes, rows, dtype, optimizer class, threads) -> count


class _ThreadTrial:
    """The batches that time fastoptim's kernel threads: after one untimed batch (the
    first step creates the optimizer's state), blocks of _KERNEL_TRIAL_BLOCK batches at
    ``many`` threads, then at one, interleaved; the first batch of a block is not timed
    (it rebinds the optimizer's call and wakes the threads, and the data the other core
    wrote comes back): a block's later batches cost what a steady run's do (measured:
    pairs, one batch timed after one warm-up, saw two threads 11 % faster on the digits
    network where whole epochs ran 23 % faster)."""

    def __init__(self, many):
        self.counts = [1] + [c for _ in range(_KERNEL_TRIAL_ROUNDS)
                             for c in (many, 1) for _ in range(_KERNEL_TRIAL_BLOCK)]
        self.times = {1: [], many: []}
        self.many = many
        self.i = 0

    def next_count(self):
        return self.counts[self.i]

    def record(self, seconds):
        """Count the batch just run; True once the trial is over."""
        i, self.i = self.i, self.i + 1
        if i and (i - 1) % _KERNEL_TRIAL_BLOCK:
            c = self.counts[i]
            self.times[c].append(seconds)
            if c == 1 and min(self.times[self.many]) > 2 * min(self.times[1]):
                return True               # clearly slower (e.g. a busy machine): done
        return self.i == len(self.counts)

    def choice(self):
        """``many`` when its typical (median) batch is 5 % faster; ties go to one
        thread.  Medians, not minima: an epoch costs the typical batch, and two threads'
        best batch can beat one thread's while their typical batch (a late wake-up, the
        other core busy) loses (seen: the NumPy path chosen at two threads by minima,
        5.1 against 4.7 ms an epoch on one)."""
        median = {c: statistics.median(t) for c, t in self.times.items()}
        return self.many if median[self.many] < 0.95 * median[1] else 1


class _KernelThreads:
    """fastoptim's own kernel thread count in a training loop (``kernel_threads``):
    the layer kernels get it as an argument, the optimizer as its ``n_threads``
    (only when that is None: an optimizer's own count is kept) until restore().

    "auto": one thread or fastoptim's default count (:func:`fastoptim.get_num_threads`),
    whichever ran this network's batches measurably faster: the first batches of
    training alternate the two (the results do not depend on the thread count, so they
    are ordinary training batches); the choice is kept for the process per layer sizes,
    batch rows, dtype, optimizer class, default count and path (``net.fused``).  None:
    fastoptim's default (:func:`fastoptim.set_num_threads`); an int: that many (capped
    at the cores)."""

    def __init__(self, setting, runner):
        self.optimizer = runner.optimizer
        self.owns_optimizer_threads = getattr(self.optimizer, "n_threads", 0) is None
        self.trial = None
        self.key = None
        if setting is None:
            self.count = None
            return
        if not isinstance(setting, str):
            self.count = resolve_n_threads(int(setting))
        else:
            many = resolve_n_threads(None)
            net = runner.net
            # (the layer kernels' path too: the compiled products change what a batch
            # on two threads costs, and the NumPy path must not take their choice)
            self.key = (net.layer_sizes, runner.rows, net.dtype.str,
                        type(self.optimizer).__qualname__, many,
                        bool(getattr(net, "fused", False)))
            self.count = 1 if many <= 1 else _kernel_choice.get(self.key)
            if self.count is None:
                self.trial = _ThreadTrial(many)

    def apply(self, count):
        if self.owns_optimizer_threads and count is not None:
            self.optimizer.n_threads = count

    def decide(self):
        """End of the trial: keep and apply the faster count."""
        self.count = _kernel_choice[self.key] = self.trial.choice()
        self.trial = None
        self.apply(self.count)
        return self.count

    def restore(self):
        if self.owns_optimizer_threads:
            self.optimizer.n_threads = None


def _check_kernel_threads(value):
    if not ((isinstance(value, str) and value == "auto") or value is None
            or (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
                and 1 <= value < 2 ** 31)):
        raise ValueError(f"kernel_threads must be 'auto', None or an int >= 1, got {value!r}")
    return value


def _get_lr(opt):
    try:
        return float(opt.param_groups[0]["lr"])
    except (AttributeError, LookupError, TypeError):
        return float("nan")


def _set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


def _grads_for(net, optimizer):
    """The gradients ``optimizer.step`` takes: ``[net.grads_flat]`` for an optimizer on
    ``[net.params_flat]``; for one on views of params_flat (say the layers' tensors,
    ``net.coefs + net.intercepts``, so that each has its own state: 8-bit state keeps
    small tensors in float32), the views of grads_flat at the same places."""
    flat = net.params_flat
    params = [p for g in getattr(optimizer, "param_groups", ()) if isinstance(g, dict)
              for p in g.get("params", ())]
    if len(params) == 1 and params[0] is flat:
        return [net.grads_flat]
    start = flat.__array_interface__["data"][0]
    grads = []
    for p in params:
        if not (isinstance(p, np.ndarray) and p.dtype == flat.dtype
                and p.flags.c_contiguous and np.shares_memory(p, flat)):
            return [net.grads_flat]  # not the network's views: step() words the mismatch
        offset = (p.__array_interface__["data"][0] - start) // flat.itemsize
        grads.append(net.grads_flat[offset:offset + p.size].reshape(p.shape))
    return grads or [net.grads_flat]


def _check_optimizer_binding(opt, net):
    groups = getattr(opt, "param_groups", None)
    if not groups:
        return
    arrays = [p for g in groups for p in g.get("params", [])]
    if arrays and not any(p is net.params_flat or np.shares_memory(p, net.params_flat)
                          for p in arrays):
        raise ValueError("the optimizer does not update this network: build it on "
                         "[net.params_flat], e.g. Adam([net.params_flat], lr=1e-3)")


def _is_plateau_scheduler(sched):
    try:
        from fastoptim.lr_scheduler import ReduceLROnPlateau
    except ImportError:
        ReduceLROnPlateau = None
    if ReduceLROnPlateau is not None and isinstance(sched, ReduceLROnPlateau):
        return True
    return type(sched).__name__ == "ReduceLROnPlateau"


def _val_metrics(net, X_val, Y_val, labels_val):
    """Validation loss (no penalty) and accuracy (softmax) or R^2 (identity)."""
    loss = net.loss(X_val, Y_val, penalty=False)
    out = net.forward(X_val)
    if net.output == "softmax":
        return loss, float(np.mean(np.argmax(out, axis=1) == labels_val)), None
    if net.output == "identity":
        d = out - Y_val
        ss_tot = float(((Y_val - Y_val.mean(axis=0)) ** 2).sum())
        r2 = 1.0 - float(np.vdot(d, d)) / ss_tot if ss_tot > 0 else float("nan")
        return loss, None, r2
    return loss, None, None


def _check_train_args(net, optimizer, scheduler, monitor, patience, tol, on_plateau, lr_fn,
                      verbose, progress, history, blas_threads, flags):
    """Everything train() uses later, checked before the first batch changes anything."""
    if not all(callable(getattr(net, m, None)) for m in ("check_X", "targets", "loss_and_grad")) \
            or not isinstance(getattr(net, "params_flat", None), np.ndarray):
        raise TypeError(f"net must be a fastoptim.nn.MLP, got {type(net).__name__}")
    if not callable(getattr(optimizer, "step", None)) or \
            not isinstance(getattr(optimizer, "param_groups", None), list):
        raise TypeError("optimizer must be a fastoptim optimizer (with step() and "
                        f"param_groups), got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must be None or have a step() method, got "
                        f"{type(scheduler).__name__}")
    for name, fn in (("on_plateau", on_plateau), ("lr_fn", lr_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be None or callable, got {type(fn).__name__}")
    if not (isinstance(monitor, str) and monitor in ("val_loss", "train_loss")):
        raise ValueError(f"monitor must be 'val_loss' or 'train_loss', got {monitor!r}")
    if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, numbers.Integral) \
            or not 0 <= patience < 2 ** 63:
        raise ValueError(f"patience must be an int >= 0, got {patience!r}")
    try:
        tol_ok = isinstance(tol, numbers.Real) and not isinstance(tol, (bool, np.bool_)) \
            and math.isfinite(tol) and tol >= 0
    except OverflowError:
        tol_ok = False
    if not tol_ok:
        raise ValueError(f"tol must be a finite real >= 0, got {tol!r}")
    for name, value in (("verbose", verbose), *flags):
        if not isinstance(value, (bool, np.bool_, numbers.Integral)):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be None or a bool, got {type(progress).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be None or a History, got {type(history).__name__}")
    if not ((isinstance(blas_threads, str) and blas_threads == "auto") or blas_threads is None
            or (isinstance(blas_threads, numbers.Integral)
                and not isinstance(blas_threads, (bool, np.bool_))
                and 1 <= blas_threads < 2 ** 31)):
        raise ValueError(f"blas_threads must be 'auto', None or an int >= 1, "
                         f"got {blas_threads!r}")


class _Rollback:
    """Puts the network, the optimizer, the scheduler and the history back as they were
    when training fails (divergence, a callback's error, Ctrl-C): a failed call leaves
    the last good weights, not NaN."""

    def __init__(self, net, optimizer, scheduler, history):
        self.params = net.params_flat.copy()
        self.grads = net.grads_flat.copy()
        self.net = net
        self.objects = [(o, o.state_dict()) for o in (optimizer, scheduler)
                        if o is not None and callable(getattr(o, "state_dict", None))]
        self.history = history
        self.fields = None if history is None else {
            k: (list(v) if isinstance(v, list) else v) for k, v in history.as_dict().items()}

    def restore(self):
        np.copyto(self.net.params_flat, self.params)
        np.copyto(self.net.grads_flat, self.grads)
        for obj, state in self.objects:
            obj.load_state_dict(state)
        if self.history is not None:
            for k, v in self.fields.items():
                setattr(self.history, k, v)


def train(net, X, Y, optimizer, *, epochs=10, batch_size=64, shuffle=True, seed=None,
          scheduler=None, X_val=None, Y_val=None, early_stopping=False, monitor="val_loss",
          patience=10, tol=1e-4, restore_best_weights=True, on_plateau=None, lr_fn=None,
          verbose=False, progress=None, history=None, blas_threads="auto",
          grad_accumulation=1, step_in_backward="auto", kernel_threads="auto"):
    """Train ``net`` in place on (X, Y) with mini-batches; return a :class:`History`.

    ``optimizer``: built on ``[net.params_flat]`` (one kernel call per step) or on views
    of it, such as the layers' tensors ``net.coefs + net.intercepts`` (a state per
    tensor: 8-bit state keeps the small ones in float32); each step gets the same
    views of ``net.grads_flat``.

    ``X``/``Y`` (and ``X_val``/``Y_val``) are converted with ``net.check_X`` /
    ``net.targets`` -- no copy when they already are C-contiguous arrays of the network's
    dtype, so convert once before calling ``train`` repeatedly.

    Stopping (scikit-learn's rule): when ``early_stopping``, the monitored quantity
    (``"val_loss"`` or ``"train_loss"``) counts as improved when it drops below
    ``best - tol``; after more than ``patience`` consecutive epochs without improvement
    ``on_plateau()`` is called (default: stop; return False to keep going, e.g. after
    lowering the LR).  With ``monitor="val_loss"`` and ``restore_best_weights`` the
    parameters of the best-val-loss epoch are restored at the end.

    ``scheduler``: stepped after every epoch (``ReduceLROnPlateau.step(val_loss)``, or
    the train loss without validation data).  ``lr_fn(samples_seen)``: if given, sets
    the LR before every update (scikit-learn's "invscaling").  ``progress``: None =
    a progress bar on stderr when it is a terminal and the run lasts over a second.
    ``blas_threads``: "auto" (the BLAS thread count measured fastest for this
    network's products at this batch size, via threadpoolctl when installed), None
    (leave NumPy's setting) or a thread count.  ``kernel_threads``: fastoptim's own
    kernel threads for the layer kernels and the step (of an optimizer built with
    ``n_threads=None``): "auto" (one thread or :func:`fastoptim.get_num_threads`,
    whichever the first batches of training ran measurably faster; chosen once per
    process and network shape), None (fastoptim's default, :func:`fastoptim.
    set_num_threads`) or a thread count.  Where ``blas_threads`` leaves every BLAS at
    one thread (``1``, or "auto" on a small network) and scipy is installed, the matrix
    products also run on the kernel threads (scipy's gemm on fixed blocks of rows, see
    :class:`~fastoptim.nn.MLP`).  The results do not depend on either count.

    ``grad_accumulation=k``: compute each mini-batch's gradient in k micro-batches
    (activation buffers for batch_size / k rows, no extra parameter-sized buffer): the
    same step as the whole batch, within rounding.  ``step_in_backward``: True steps
    each layer's parameters as soon as its gradient is final (same bits as stepping
    after backward), False after the whole backward, "auto" where that was measured
    faster (parameters of 4 MiB or more).  It is used only with an element-wise
    fastoptim optimizer on ``[net.params_flat]`` with ``nonfinite="ignore"`` (a
    non-finite check, like clipping by global norm, needs the whole gradient first)
    from its second step on (state exists); otherwise the step runs after backward.
    """
    _check_step_in_backward(step_in_backward)
    _check_kernel_threads(kernel_threads)
    grad_accumulation = _check_count("grad_accumulation", grad_accumulation)
    _check_train_args(net, optimizer, scheduler, monitor, patience, tol, on_plateau, lr_fn,
                      verbose, progress, history, blas_threads,
                      (("shuffle", shuffle), ("early_stopping", early_stopping),
                       ("restore_best_weights", restore_best_weights)))
    X, Y = net.check_X(X), net.targets(Y)      # no copies when already in shape
    n = X.shape[0]
    if n == 0 or Y.shape[0] != n:
        raise ValueError(f"need matching non-empty X and Y, got {n} and {Y.shape[0]} rows")
    epochs = _check_count("epochs", epochs)
    batch_size = min(_check_count("batch_size", batch_size), n)
    has_val = X_val is not None
    if has_val:
        X_val, Y_val = net.check_X(X_val, "X_val"), net.targets(Y_val, "Y_val")
    if early_stopping and monitor == "val_loss" and not has_val:
        raise ValueError("early stopping on val_loss needs validation data")
    _check_optimizer_binding(optimizer, net)
    labels_val = np.argmax(Y_val, axis=1) if has_val and net.output == "softmax" else None
    plateau_sched = scheduler is not None and _is_plateau_scheduler(scheduler)
    rng = np.random.default_rng(seed)
    hist = History() if history is None else history
    order = np.arange(n)
    epochs_runner = _Epochs(net, X, Y, optimizer, batch_size,
                            grad_accumulation=grad_accumulation,
                            step_in_backward=step_in_backward,
                            kernel_threads=kernel_threads)
    before_step = None
    best = math.inf
    best_params = None
    bad_epochs = 0
    samples_seen = 0
    bar = _Progress(epochs, enabled=progress)
    base_epoch = hist.n_epochs
    rollback = _Rollback(net, optimizer, scheduler, history)
    with epochs_runner.threads(blas_threads):
        try:
            for epoch in range(epochs):
                t0 = time.perf_counter()
                if shuffle:
                    rng.shuffle(order)
                lr_epoch = _get_lr(optimizer)
                if lr_fn is not None:
                    def before_step(start, _seen=samples_seen):
                        _set_lr(optimizer, lr_fn(_seen + start))
                train_loss = epochs_runner.run(order if shuffle else None, before_step)
                samples_seen += n
                hist.n_updates += epochs_runner.n_updates
                epochs_runner.n_updates = 0
                if not math.isfinite(train_loss):
                    raise DivergenceError(
                        f"the training loss became {train_loss} at epoch {base_epoch + epoch + 1}; "
                        "lower the learning rate or scale the inputs")
                hist.train_loss.append(train_loss)
                hist.lr.append(lr_epoch)
                val_loss = None
                if has_val:
                    val_loss, acc, r2 = _val_metrics(net, X_val, Y_val, labels_val)
                    hist.val_loss.append(val_loss)
                    if acc is not None:
                        hist.val_accuracy.append(acc)
                    if r2 is not None:
                        hist.val_r2.append(r2)
                hist.epoch_time.append(time.perf_counter() - t0)
                if verbose:
                    msg = f"Iteration {base_epoch + epoch + 1}, loss = {train_loss:.8f}"
                    if has_val:
                        msg += f", val_loss = {val_loss:.8f}"
                        if labels_val is not None:
                            msg += f", val_accuracy = {hist.val_accuracy[-1]:.4f}"
                    print(msg)
                bar.update(epoch + 1, train_loss, val_loss)
                if scheduler is not None:
                    if plateau_sched:
                        scheduler.step(val_loss if has_val else train_loss)
                    else:
                        scheduler.step()
                if has_val and (hist.best_val_loss is None or val_loss < hist.best_val_loss):
                    hist.best_epoch = base_epoch + epoch
                    hist.best_val_loss = val_loss
                    if early_stopping and monitor == "val_loss" and restore_best_weights:
                        if best_params is None:
                            best_params = np.empty_like(net.params_flat)
                        np.copyto(best_params, net.params_flat)
                watched = val_loss if monitor == "val_loss" and has_val else train_loss
                if early_stopping:
                    bad_epochs = bad_epochs + 1 if watched > best - tol else 0
                    best = min(best, watched)
                    if bad_epochs > patience:
                        if on_plateau is None or on_plateau():
                            hist.stopped_early = True
                            break
                        bad_epochs = 0
        except BaseException:
            rollback.restore()
            raise
        finally:
            bar.close()
    if best_params is not None:
        np.copyto(net.params_flat, best_params)
    return hist
