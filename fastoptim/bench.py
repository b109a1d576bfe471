"""Benchmark cases and the report table: ``python -m fastoptim.bench``.

Each case builds one optimizer step three ways on the same arrays -- fastoptim's
kernel, the NumPy reference, and (when torch is installed) torch.optim's fused,
foreach and for-loop steps -- so the pytest-benchmark suite (bench/) and the report
time exactly the same work.

Where the buffers live can matter: NumPy (through glibc) starts every large array at
the same offset within a 4 KiB page, and a loop streaming through several such
buffers at once meets L1 conflicts that staggered buffers avoid (the kernels handle
that case; this checks it).  Each kernel is therefore timed on buffers placed both
ways ("same": all at the page offset where NumPy puts large arrays, what users have;
"staggered": every buffer at its own page offset), on the same arrays
(``CaseMemory``).  The limit is a probe with the kernel's own streams and traffic
(Adam: read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq) on
staggered buffers, its best placement, timed taking turns with the kernel.
"""

import argparse
import sys
import time

import numpy as np

import fastoptim
import fastoptim.optim
from fastoptim import reference
from fastoptim._alloc import zeros_at_page_offset, zeros_state_like
from fastoptim._backend import get_num_threads, kernels

# kernel name: (fastoptim function, reference function, state buffer names, options,
#               torch optimizer class name, torch options, bytes per element / itemsize)
KERNELS = {
    "sgd_momentum": ("sgd_", ("momentum_buffer",), dict(lr=0.01, momentum=0.9),
                     "SGD", dict(lr=0.01, momentum=0.9), 5),
    "rmsprop": ("rmsprop_", ("square_avg",), dict(lr=0.01),
                "RMSprop", dict(lr=0.01), 5),
    "adam": ("adam_", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3),
             "Adam", dict(lr=1e-3), 7),
    "adamw": ("adamw_", ("exp_avg", "exp_avg_sq"), dict(lr=1e-3),
              "AdamW", dict(lr=1e-3), 7),
    "adam_amsgrad": ("adam_", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                     dict(lr=1e-3, amsgrad=True), "Adam", dict(lr=1e-3, amsgrad=True), 9),
}
SIZES = (1_000, 65_536, 1_048_576, 16_777_216)
DTYPES = {"float32": np.float32, "float64": np.float64}
# A model of 50 parameter arrays of 1,000-100,000 elements (2.49 M in all).
MANY_SHAPES = [int(n) for n in np.random.default_rng(1).integers(1_000, 100_001, size=50)]


PLACEMENTS = ("same", "staggered")
#: the page offset of every buffer in the "same" placement: where NumPy's large arrays
#: start (glibc's mmap chunk header is 16 bytes)
SAME_PAGE_OFFSET = 16


def _staggered_offsets(count):
    """Page offsets spread evenly over 4 KiB, 64-byte aligned, one per buffer."""
    step = (4096 // count) // 64 * 64
    return [64 * 7 + k * step for k in range(count)]


def staggered_copies(arrays):
    """Copies of `arrays` whose data start at page offsets spread evenly over 4 KiB
    (64-byte aligned): no two of them at the same offset, whatever their size."""
    return [_filled(zeros_at_page_offset(a, offset), a)
            for a, offset in zip(arrays, _staggered_offsets(len(arrays)))]


def _filled(dst, src):
    dst[...] = src
    return dst


class CaseMemory:
    """The buffers of one case, allocated once, to be viewed at either placement.

    Each buffer is a plain ``np.zeros`` array with 4 KiB of slack.  "same" views start
    at page offset SAME_PAGE_OFFSET, where NumPy puts every large array (what users
    have; an array from the heap can start anywhere, so the view is placed there rather
    than taken as allocated); "staggered" views of the SAME arrays start at page
    offsets spread over the page.  Both placements thus use the same physical memory:
    on this VM separate allocations of the same size differ in speed by up to 1.5x
    (their pages come from different host memory), which would otherwise be read as a
    placement effect."""

    def __init__(self, n_buffers, size, dtype):
        self.size, self.dtype = size, np.dtype(dtype)
        slack = -(-4096 // self.dtype.itemsize)
        self.arrays = [np.zeros(size + slack, self.dtype) for _ in range(n_buffers)]

    def views(self, placement):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        n = len(self.arrays)
        offsets = [SAME_PAGE_OFFSET] * n if placement == "same" else _staggered_offsets(n)
        views = []
        for a, offset in zip(self.arrays, offsets):
            shift = (offset - a.ctypes.data) % 4096 // self.dtype.itemsize
            views.append(a[shift:shift + self.size])
        return views


class Case:
    """One optimizer step on one set of arrays, callable several ways.

    placement "same": param, grad and state in plain np.zeros arrays, all at the page
    offset where NumPy puts large arrays (the common case); "staggered":
    every buffer at its own page offset.  Two cases given the same `memory`
    (``CaseMemory``) view the same arrays, so they compare placements on the same
    physical memory (and overwrite each other's values: time them, do not compare
    their results)."""

    def __init__(self, kernel, dtype, size, seed=0, placement="same", memory=None):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        fn_name, states, options, torch_cls, torch_opts, words = KERNELS[kernel]
        rng = np.random.default_rng(seed)
        self.kernel, self.dtype, self.size = kernel, np.dtype(dtype), size
        self.placement = placement
        self.fn = getattr(fastoptim, fn_name)
        self.ref_fn = getattr(reference, fn_name)
        self.options = options
        self.state_names = states
        self.bytes_per_step = words * self.dtype.itemsize * size
        self.memory = memory or CaseMemory(2 + len(states), size, dtype)
        self.param, self.grad, *self.states = self.memory.views(placement)
        self.param[...] = rng.standard_normal(size)
        self.grad[...] = rng.standard_normal(size)
        for buf in self.states:
            buf[...] = 0
        self.torch_cls, self.torch_opts = torch_cls, torch_opts
        self.step = 1

    def _call(self, fn, param, states, step, **extra):
        kwargs = dict(self.options, step=step, **extra)
        if self.kernel == "adam_amsgrad":
            fn(param, self.grad, states[0], states[1], max_exp_avg_sq=states[2], **kwargs)
        else:
            fn(param, self.grad, *states, **kwargs)

    def fastoptim_step(self):
        self._call(self.fn, self.param, self.states, self.step)
        self.step += 1

    def reference_step(self):
        self._call(self.ref_fn, self.param, self.states, self.step)
        self.step += 1

    def check_equal_to_reference(self, steps=3):
        """fastoptim and the reference give identical results on a fresh copy."""
        p, s = self.param.copy(), [b.copy() for b in self.states]
        q, t = self.param.copy(), [b.copy() for b in self.states]
        for step in range(1, steps + 1):
            self._call(self.fn, p, s, step)
            self._call(self.ref_fn, q, t, step)
        if not (np.array_equal(p, q) and all(np.array_equal(a, b) for a, b in zip(s, t))):
            raise AssertionError(f"{self.kernel} {self.dtype} {self.size}: fastoptim != reference")

    def torch_step_fn(self, mode, same_memory=False):
        """A zero-argument torch step ('fused', 'foreach' or 'forloop').  By default on
        copies of param and grad, with the state torch allocates; with `same_memory`,
        on this case's own buffers (param, grad and, after one step, the state tensors
        are views of them), so torch and fastoptim are timed on the same memory."""
        import torch
        arrays = (self.param, self.grad) if same_memory else (self.param.copy(),
                                                               self.grad.copy())
        param = torch.nn.Parameter(torch.from_numpy(arrays[0]))
        param.grad = torch.from_numpy(arrays[1])
        flags = {"fused": dict(fused=True), "foreach": dict(foreach=True),
                 "forloop": dict(foreach=False)}[mode]
        opt = getattr(torch.optim, self.torch_cls)([param], **self.torch_opts, **flags)
        if same_memory:
            opt.step()  # creates the state; then swap in views of ours
            state = opt.state[param]
            for name, buf in zip(self.state_names, self.states):
                if state[name].shape != buf.shape:
                    raise AssertionError(f"torch's {name} is not shaped like ours")
                state[name] = torch.from_numpy(buf)
        return opt.step


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def best_time(fn, min_time=0.2, max_repeats=2000):
    """Minimum over repeats of one call's wall time (the least disturbed run)."""
    fn()  # warm up: page in buffers, create state
    best, spent, n = float("inf"), 0.0, 0
    while (spent < min_time or n < 3) and n < max_repeats:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


def best_times_interleaved(fns, min_time=0.2, max_rounds=400, calls_per_turn=4, pause=0.0):
    """best_time of several functions taking turns, so that each sees the same
    machine: on a shared VM the memory bandwidth drifts from minute to minute, and a
    ratio of two minima taken far apart measures the drift as much as the code.
    Each turn starts with an untimed call, so in-cache sizes are timed warm.  With
    `pause` (seconds), the process sleeps before every timed call, as a training
    loop leaves the kernels' threads idle between steps."""
    best, spent, rounds = [float("inf")] * len(fns), 0.0, 0
    while (spent < min_time or rounds < 3) and rounds < max_rounds:
        for k, fn in enumerate(fns):
            fn()  # warm this function's buffers back into cache
            for _ in range(calls_per_turn):
                if pause:
                    time.sleep(pause)
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                best[k], spent = min(best[k], dt), spent + dt
        rounds += 1
    return best


class _StreamsProbe:
    """A trivial in-place loop (kernels.stream_probe) that reads a, b and n_states state
    buffers and writes a and the state buffers, on buffers at staggered page offsets (its
    best placement; or the `arrays` given), on the kernels' threads."""

    def __init__(self, n_states, size, dtype, n_threads=None, arrays=None):
        if arrays is None:
            arrays = staggered_copies([np.ones(size, dtype) for _ in range(2 + n_states)])
        elif len(arrays) != 2 + n_states:
            raise ValueError(f"the probe needs {2 + n_states} arrays, got {len(arrays)}")
        self.a, self.b, self.states = arrays[0], arrays[1], tuple(arrays[2:])
        self.n_threads = n_threads or get_num_threads()
        self.bytes_per_call = (3 + 2 * n_states) * self.a.itemsize * size

    def __call__(self):
        kernels.stream_probe(self.a, self.b, self.states, 1e-9, self.n_threads)


class TrafficProbe(_StreamsProbe):
    """The limit for one kernel: the probe with the kernel's streams and traffic -- read
    param, grad and each state buffer, write param and the state buffers."""

    def __init__(self, kernel, size, dtype, n_threads=None, arrays=None):
        super().__init__(len(KERNELS[kernel][1]), size, dtype, n_threads, arrays)


def report(kernels_=None, dtypes=None, sizes=SIZES, with_torch=True, file=None):
    file = file or sys.stdout
    kernels_ = kernels_ or list(KERNELS)
    dtypes = dtypes or list(DTYPES)
    use_torch = with_torch and torch_available()
    if use_torch:
        import torch
        torch_threads = torch.get_num_threads()
    header = ["kernel", "dtype", "size", "same offset", "staggered", "same/stag", "numpy",
              "speed-up", "GB/s", "probe GB/s", "% of probe"]
    if use_torch:
        header += ["torch fused", "torch/fastoptim"]
    rows = []
    for dt in dtypes:
        for size in sizes:
            for name in kernels_:
                # Every column on the same arrays (CaseMemory): same offset, staggered
                # views of them, the probe on the staggered views, torch on the
                # same-offset ones.
                same = Case(name, DTYPES[dt], size, placement="same")
                same.check_equal_to_reference()
                stag = Case(name, DTYPES[dt], size, placement="staggered", memory=same.memory)
                probe = TrafficProbe(name, size, DTYPES[dt],
                                     arrays=[stag.param, stag.grad] + stag.states)
                fns = [same.fastoptim_step, stag.fastoptim_step, probe]
                torch_fn = None
                if use_torch:
                    try:
                        torch_fn = same.torch_step_fn("fused", same_memory=True)
                    except (TypeError, RuntimeError):  # torch has no fused kernel for it
                        pass
                    else:
                        fns.append(torch_fn)
                # All in turn, so that every ratio in the row compares the same moment.
                times = best_times_interleaved(fns, min_time=0.8)
                t_same, t_stag, t_probe = times[:3]
                t_ref = best_time(same.reference_step, min_time=0.1, max_repeats=50)
                # The probe moves the kernel's bytes: its GB/s is the kernel's limit.
                row = [name, dt, f"{size:,}", _fmt_time(t_same), _fmt_time(t_stag),
                       f"{t_same / t_stag:.2f}", _fmt_time(t_ref), f"{t_ref / t_same:.1f}x",
                       f"{same.bytes_per_step / t_same / 1e9:.1f}",
                       f"{probe.bytes_per_call / t_probe / 1e9:.1f}",
                       f"{100 * t_probe / t_same:.0f}%"]
                if use_torch:
                    row += ([_fmt_time(times[3]), f"{times[3] / t_same:.2f}x"]
                            if torch_fn is not None else ["no fused", "-"])
                rows.append(row)
                print("  ".join(row), file=sys.stderr, flush=True)
                del same, stag, probe, torch_fn, fns
    rows.sort(key=lambda r: (kernels_.index(r[0]), dtypes.index(r[1])))  # stable: sizes stay in order
    print(file=file)
    print(f"fastoptim {fastoptim.__version__}, kernels {kernels.ISA}, "
          f"{get_num_threads()} threads"
          + (f"; torch {torch.__version__} with {torch_threads} threads" if use_torch else "")
          + ". Best of interleaved rounds, every column of a row on the same np.zeros "
            "arrays. same offset: param, grad and state all at page offset 16, where "
            "NumPy puts large arrays; staggered: views of the same arrays, each at its own "
            "page offset; "
            "probe: the kernel's own streams and traffic in a trivial loop, staggered; "
            "torch fused: on the same-offset buffers; GB/s, % of probe and torch/fastoptim "
            "use the same-offset time.", file=file)
    print(file=file)
    _print_markdown(header, rows, file)
    return rows


def adam_arrays(shapes, dtype=np.float32, seed=0):
    """params, grads, exp_avgs, exp_avg_sqs for arrays of these shapes (state as the
    optimizer classes allocate it)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return (params, grads, [zeros_state_like(p, 1) for p in params],
            [zeros_state_like(p, 2) for p in params])


def many_arrays_report(shapes=MANY_SHAPES, file=None):
    """adam_ (float32) over a model of many arrays: one call on the lists, one call per
    array, and one call on a single array of the same total size, timed taking turns
    (the model does not fit in cache, so drifting bandwidth would decide otherwise)."""
    file = file or sys.stdout
    model = adam_arrays(shapes)
    flat = adam_arrays([sum(shapes)])

    def one_call():
        fastoptim.adam_(*model, step=10)

    def call_per_array():
        for p, g, m, v in zip(*model):
            fastoptim.adam_(p, g, m, v, step=10)

    def one_flat_array():
        fastoptim.adam_(*(a[0] for a in flat), step=10)

    t_flat, t_one, t_each = best_times_interleaved([one_flat_array, one_call, call_per_array],
                                                   min_time=1.0)
    print(file=file)
    print(f"adam_ float32 over {len(shapes)} arrays ({sum(shapes):,} elements), the three "
          "timed taking turns:", file=file)
    print(file=file)
    rows = [["one call over one array of the same total size", _fmt_time(t_flat), "1.00x"],
            [f"one call over the list of {len(shapes)}", _fmt_time(t_one),
             f"{t_one / t_flat:.2f}x"],
            [f"{len(shapes)} calls, one per array", _fmt_time(t_each), f"{t_each / t_flat:.2f}x"]]
    _print_markdown(["how", "time", "vs one array"], rows, file)
    return t_flat, t_one, t_each


THREAD_SIZES = (4_096, 8_192, 16_384, 32_768, 65_536, 131_072, 262_144)


def thread_report(kernels_=None, dtypes=None, sizes=THREAD_SIZES, pause=0.0015, file=None):
    """One thread against two on one call, with the parallel threshold lowered to 0 so
    that both really run, the threads idle for `pause` seconds before every call (as
    between the steps of a training loop), timed taking turns.  Prints, per kernel and
    dtype, the two-thread / one-thread time at each size and the smallest size from
    which two threads win at every larger size (the crossover)."""
    file = file or sys.stdout
    kernels_ = kernels_ or list(KERNELS)
    dtypes = dtypes or list(DTYPES)
    saved = kernels.get_parallel_min_elements()
    header = ["kernel", "dtype"] + [f"{n:,}" for n in sizes] + ["crossover"]
    rows = []
    try:
        kernels.set_parallel_min_elements(0)
        for name in kernels_:
            for dt in dtypes:
                ratios = []
                for size in sizes:
                    case = Case(name, DTYPES[dt], size)

                    def on_threads(n_threads, case=case):
                        return lambda: case._call(case.fn, case.param, case.states, 2,
                                                  n_threads=n_threads)
                    t1, t2 = best_times_interleaved([on_threads(1), on_threads(2)],
                                                    min_time=0.3, max_rounds=60, pause=pause)
                    ratios.append(t2 / t1)
                wins = [r < 1 for r in ratios]
                cross = next((f"{sizes[k]:,}" for k in range(len(sizes)) if all(wins[k:])),
                             f"> {sizes[-1]:,}")
                rows.append([name, dt] + [f"{r:.2f}" for r in ratios] + [cross])
                print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    finally:
        kernels.set_parallel_min_elements(saved)
    print(file=file)
    print(f"Time on 2 threads / time on 1 thread for one call, threads idle {pause * 1e3:g} ms "
          f"before each call (threshold lowered to 0; it is {saved:,} elements):", file=file)
    print(file=file)
    _print_markdown(header, rows, file)
    return rows


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def _print_markdown(header, rows, file):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |", file=file)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=file)
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |", file=file)


MAX_SIZE = 2**28  # elements per array: 1 GiB of float32 per buffer, 5 buffers at most


def _size(text):
    try:
        n = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an array size, got {text!r}") from None
    if not 1 <= n <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"sizes must be between 1 and {MAX_SIZE:,}, "
                                         f"got {text}")
    return n


def build_parser(prog="python -m fastoptim.bench", parser_class=argparse.ArgumentParser):
    parser = parser_class(
        prog=prog,
        description="Time fastoptim's kernels against the NumPy reference and torch.optim "
                    "(when installed) and print one table.")
    parser.add_argument("--kernels", nargs="+", choices=list(KERNELS), default=None)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None)
    parser.add_argument("--sizes", nargs="+", type=_size, default=None,
                        help=f"elements per array (1 to {MAX_SIZE:,}; default "
                             f"{' '.join(f'{n:,}' for n in SIZES)}, and for --quant8 "
                             f"{' '.join(f'{n:,}' for n in QUANT8_SIZES)})")
    parser.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    parser.add_argument("--many-arrays", action="store_true",
                        help="then compare adam_ over a 50-array model in one call with one "
                             "call per array and with one array of the same total size")
    parser.add_argument("--compact", action="store_true",
                        help="instead: Adam with float16/bfloat16 params, grads and state "
                             "(compact_report) at --sizes, with bytes per parameter")
    parser.add_argument("--quant8", action="store_true",
                        help="then compare adam_ with float32 and 8-bit state at --sizes "
                             "(bytes per parameter; bitsandbytes' CPU 8-bit Adam when "
                             "installed)")
    return parser


def run(args):
    sizes = args.sizes or list(SIZES)
    if args.compact:
        compact_report(sizes, with_torch=not args.no_torch)
        return 0
    report(args.kernels, args.dtypes, sizes, with_torch=not args.no_torch)
    if args.many_arrays:
        many_arrays_report()
    if args.quant8:
        quant8_report(args.sizes or QUANT8_SIZES, with_bnb=not args.no_torch)
    return 0


def main(argv=None):
    return run(build_parser().parse_args(argv))


# ----------------------------------------------------------- fastoptim.torch backend
#: models of the torch-backend report: name -> layer widths of an MLP (Tanh between
#: layers); "big" is sized by torch_backend_report(big_params=...)
TORCH_MODELS = {"policy 8-64-64-2": (8, 64, 64, 2), "mlp 784-256-128-10": (784, 256, 128, 10)}
TORCH_CONTENDERS = ("fastoptim.torch", "torch default", "torch foreach", "torch for-loop",
                    "torch fused")


def torch_mlp(widths, seed=0):
    """An MLP over torch with these layer widths (Tanh between the layers)."""
    import torch
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


def big_widths(n_params):
    """Four square layers of about n_params parameters in all."""
    d = max(2, int((n_params / 4) ** 0.5))
    return (d,) * 5


class TorchBackendCase:
    """One model and Adam through each contender: fastoptim.torch.Adam and
    torch.optim.Adam by default (the for-loop on CPU), foreach=True, foreach=False and
    fused=True.  They share the model's params and grads (each keeps its own state), so
    the step alone is timed on the same memory; ``train_step(name)`` times forward,
    backward and the step on a batch of ``batch`` rows."""

    def __init__(self, widths, batch=32, seed=0):
        import torch

        import fastoptim.torch as ft
        self.torch = torch
        self.model = torch_mlp(widths, seed)
        params = list(self.model.parameters())
        self.n_params = sum(p.numel() for p in params)
        g = torch.Generator().manual_seed(seed + 1)
        self.X = torch.randn(batch, widths[0], generator=g)
        self.Y = torch.randn(batch, widths[-1], generator=g)
        self.optimizers = {
            "fastoptim.torch": ft.Adam(params, lr=1e-4),
            "torch default": torch.optim.Adam(params, lr=1e-4),
            "torch foreach": torch.optim.Adam(params, lr=1e-4, foreach=True),
            "torch for-loop": torch.optim.Adam(params, lr=1e-4, foreach=False),
            "torch fused": torch.optim.Adam(params, lr=1e-4, fused=True),
        }
        self.backward()

    def backward(self):
        self.model.zero_grad()
        ((self.model(self.X) - self.Y) ** 2).mean().backward()

    def step_fn(self, name):
        return self.optimizers[name].step

    def train_step_fn(self, name):
        opt = self.optimizers[name]

        def train_step():
            opt.zero_grad()
            ((self.model(self.X) - self.Y) ** 2).mean().backward()
            opt.step()
        return train_step


#: the bfloat16 table: fastoptim.torch.Adam's defaults for bfloat16 params (a float32
#: master, bfloat16 state) against torch.optim.Adam(fused=True) on bfloat16 tensors
TORCH_BF16_CONTENDERS = ("fastoptim.torch", "torch fused")


class TorchBF16Case(TorchBackendCase):
    """A bfloat16 model and Adam: fastoptim.torch.Adam with its defaults for 16-bit
    params (float32 master weights, bfloat16 state, round to nearest) against
    torch.optim.Adam(fused=True) (bfloat16 state, no master).  Each has its own copy of
    the model: the params of a master are written from it, not shared."""

    def __init__(self, widths, batch=32, seed=0):
        import torch

        import fastoptim.torch as ft
        self.torch = torch
        self.models = {c: torch_mlp(widths, seed).to(torch.bfloat16)
                       for c in TORCH_BF16_CONTENDERS}
        self.n_params = sum(p.numel() for p in self.models["torch fused"].parameters())
        g = torch.Generator().manual_seed(seed + 1)
        self.X = torch.randn(batch, widths[0], generator=g).to(torch.bfloat16)
        self.Y = torch.randn(batch, widths[-1], generator=g).to(torch.bfloat16)
        self.optimizers = {
            "fastoptim.torch": ft.Adam(self.models["fastoptim.torch"].parameters(), lr=1e-4),
            "torch fused": torch.optim.Adam(self.models["torch fused"].parameters(), lr=1e-4,
                                            fused=True),
        }
        for name in TORCH_BF16_CONTENDERS:
            self.model = self.models[name]
            self.backward()

    def train_step_fn(self, name):
        self.model = self.models[name]
        return super().train_step_fn(name)


def _torch_backend_table(models, make_case, contenders, min_time, file):
    header = ["model", "params", "timed"] + list(contenders) + \
        [f"{c} ratio" for c in contenders[1:]]
    rows = []
    for name, widths in models.items():
        case = make_case(widths)
        for timed, make in (("step", case.step_fn), ("train step", case.train_step_fn)):
            times = best_times_interleaved([make(c) for c in contenders], min_time=min_time)
            rows.append([name, f"{case.n_params:,}", timed] + [_fmt_time(t) for t in times]
                        + [f"{t / times[0]:.2f}x" for t in times[1:]])
        del case
    _print_markdown(header, rows, file)
    return rows


def torch_backend_report(big_params=100_000_000, min_time=0.3, file=None):
    """fastoptim.torch.Adam against torch.optim.Adam's steps on three models: the step
    alone and a whole training step (forward, backward, step), the contenders taking
    turns (best of interleaved rounds); ratios are torch's time / fastoptim's."""
    import torch
    file = file or sys.stdout
    models = dict(TORCH_MODELS)
    models[f"big {big_params:,}"] = big_widths(big_params)
    print(f"fastoptim {fastoptim.__version__}, kernels {kernels.ISA}, {get_num_threads()} "
          f"threads; torch {torch.__version__} with {torch.get_num_threads()} threads. Adam, "
          "float32, best of interleaved rounds; ratio = torch / fastoptim.", file=file)
    rows = _torch_backend_table(models, TorchBackendCase, TORCH_CONTENDERS, min_time, file)
    print("\nbfloat16 params and grads: fastoptim.torch.Adam with a float32 master and "
          "bfloat16 state (its defaults) vs torch.optim.Adam(fused=True) (bfloat16 state, "
          "no master).", file=file)
    rows += _torch_backend_table(models, TorchBF16Case, TORCH_BF16_CONTENDERS, min_time, file)
    return rows
# --------------------------------------------------------------- compact precision
# Adam steps with 16-bit storage: name -> (param, grad, state dtype, master, rounding).
COMPACT_CASES = {
    "float32 state": ("float32", "float32", "float32", False, "nearest"),
    "bfloat16 state": ("float32", "float32", "bfloat16", False, "nearest"),
    "bfloat16 state, stochastic": ("float32", "float32", "bfloat16", False, "stochastic"),
    "float16 state": ("float32", "float32", "float16", False, "nearest"),
    "bf16 params+master+bf16 state": ("bfloat16", "bfloat16", "bfloat16", True, "nearest"),
    "bf16 params+master+bf16 state, stochastic": ("bfloat16", "bfloat16", "bfloat16", True,
                                                  "stochastic"),
}


def _storage_dtype(name):
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class CompactCase:
    """One Adam step with compact storage on arrays as NumPy allocates them (every
    buffer at the same page offset, as in the float32 table's "same" column)."""

    def __init__(self, name, size, seed=0):
        pdt, gdt, sdt, master, rounding = (COMPACT_CASES[name][0],) + COMPACT_CASES[name][1:]
        pdt, gdt, sdt = map(_storage_dtype, (pdt, gdt, sdt))
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(size).astype(np.float32)
        self.name, self.size, self.rounding = name, size, rounding
        self.param, self.grad = x.astype(pdt), rng.standard_normal(size).astype(gdt)
        self.states = [np.zeros(size, sdt) for _ in range(2)]
        self.master = x.copy() if master else None
        self.step = 1
        # state memory per parameter (the master counts: it is state the step keeps)
        self.state_bytes = 2 * sdt.itemsize + (4 if master else 0)
        # bytes one step moves: read grad, state and param (the master instead of a
        # 16-bit param: the param is only written); write state, param (and master)
        self.bytes_per_param = (gdt.itemsize + 2 * (2 * sdt.itemsize)
                                + (pdt.itemsize + 8 if master else 2 * pdt.itemsize))

    def _call(self, fn, param, states, master, step):
        fn(param, self.grad, *states, step=step, lr=1e-3, master=master,
           rounding=self.rounding, seed=1)

    def fastoptim_step(self):
        self._call(fastoptim.adam_, self.param, self.states, self.master, self.step)
        self.step += 1

    def check_equal_to_reference(self, steps=2):
        ours = [self.param.copy(), [b.copy() for b in self.states],
                None if self.master is None else self.master.copy()]
        ref = [self.param.copy(), [b.copy() for b in self.states],
               None if self.master is None else self.master.copy()]
        for step in range(1, steps + 1):
            self._call(fastoptim.adam_, *ours, step)
            self._call(reference.adam_, *ref, step)
        pairs = [(ours[0], ref[0])] + list(zip(ours[1], ref[1])) + (
            [] if self.master is None else [(ours[2], ref[2])])
        if not all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in pairs):
            raise AssertionError(f"compact {self.name} {self.size}: fastoptim != reference")


def torch_bf16_adam_fn(size, seed=0):
    """torch.optim.Adam(fused=True) on bfloat16 param and grad (its state is bfloat16
    too: torch keeps state in the param's dtype, rounds to nearest, no master)."""
    import torch
    rng = np.random.default_rng(seed)
    param = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(size).astype(np.float32))
                               .to(torch.bfloat16))
    param.grad = torch.from_numpy(rng.standard_normal(size).astype(np.float32)).to(
        torch.bfloat16)
    opt = torch.optim.Adam([param], lr=1e-3, fused=True)
    return opt.step


def compact_report(sizes=(16_777_216,), with_torch=True, file=None):
    """One table per size: every COMPACT_CASES step and torch's fused bfloat16 Adam,
    timed taking turns; bytes per parameter of state memory and moved per step."""
    file = sys.stdout if file is None else file
    for size in sizes:
        cases = [CompactCase(name, size) for name in COMPACT_CASES]
        for case in cases:
            case.check_equal_to_reference()
        fns = [c.fastoptim_step for c in cases]
        names = [c.name for c in cases]
        if with_torch and torch_available():
            fns.append(torch_bf16_adam_fn(size))
            names.append("torch fused Adam, bfloat16 (state bf16)")
        times = best_times_interleaved(fns, min_time=1.0 if size >= 1 << 20 else 0.2)
        t32 = times[0]
        t_torch = times[-1] if len(fns) > len(cases) else None
        rows = []
        for k, (name, t) in enumerate(zip(names, times)):
            case = cases[k] if k < len(cases) else None
            rows.append([name, f"{size:,}",
                         case.state_bytes if case else 4,
                         case.bytes_per_param if case else 14,
                         _fmt_time(t), f"{t32 / t:.2f}x",
                         f"{t_torch / t:.2f}x" if t_torch else "-"])
        print(f"\nAdam, {size:,} elements, {get_num_threads()} threads, buffers as NumPy "
              "allocates them (same page offset), timed taking turns:\n", file=file)
        _print_markdown(["case", "size", "state B/param", "moved B/param", "time",
                         "float32 state / this", "torch bf16 / this"], rows, file)
# ---------------------------------------------------------------------------
# 8-bit state (fastoptim.QuantizedState)
# ---------------------------------------------------------------------------
QUANT8_SIZES = (1_048_576, 16_777_216)
QUANT8_STATES = ("float32", "int8")


class Quant8Case:
    """adam_ on one float32 param with float32 state (from zeros_state_like: its best
    placement) or 8-bit state (fastoptim.QuantizedState)."""

    def __init__(self, size, state, seed=0):
        if state not in QUANT8_STATES:
            raise ValueError(f"state must be one of {QUANT8_STATES}, got {state!r}")
        rng = np.random.default_rng(seed)
        self.size, self.state = size, state
        self.param = rng.standard_normal(size).astype(np.float32)
        self.grad = (rng.standard_normal(size) * 1e-2).astype(np.float32)
        if state == "float32":
            self.exp_avg, self.exp_avg_sq = zeros_state_like(self.param, 1), \
                zeros_state_like(self.param, 2)
            state_bytes = self.exp_avg.nbytes + self.exp_avg_sq.nbytes
        else:
            self.exp_avg = fastoptim.QuantizedState.zeros_like(self.param, signed=True)
            self.exp_avg_sq = fastoptim.QuantizedState.zeros_like(self.param, signed=False)
            state_bytes = self.exp_avg.nbytes + self.exp_avg_sq.nbytes
        self.state_bytes_per_param = state_bytes / size
        # read and write param and state, read grad
        self.bytes_per_step = 2 * (self.param.nbytes + state_bytes) + self.grad.nbytes
        self.t = 0

    def step(self):
        self.t += 1
        fastoptim.adam_(self.param, self.grad, self.exp_avg, self.exp_avg_sq, step=self.t,
                        lr=1e-3)

    def bitsandbytes_step_fn(self):
        """bitsandbytes' CPU 8-bit Adam (blockwise, 256) on a copy, or None when
        bitsandbytes (and torch) are not installed."""
        try:
            import torch
            import bitsandbytes
        except ImportError:
            return None
        param = torch.nn.Parameter(torch.from_numpy(self.param.copy()))
        param.grad = torch.from_numpy(self.grad.copy())
        opt = bitsandbytes.optim.Adam8bit([param], lr=1e-3, min_8bit_size=0)
        return opt.step


def quant8_report(sizes=QUANT8_SIZES, with_bnb=True, file=None, min_time=0.5):
    """adam_ with float32 and 8-bit state timed taking turns; bitsandbytes' CPU 8-bit
    Adam (far slower: timed once per size, on its own) when installed."""
    file = file or sys.stdout
    rows = []
    for size in sizes:
        cases = [Quant8Case(size, s) for s in QUANT8_STATES]
        times = best_times_interleaved([c.step for c in cases], min_time=min_time)
        for case, t in zip(cases, times):
            rows.append([f"adam_ {case.state} state", f"{size:,}", _fmt_time(t),
                         f"{times[0] / t:.2f}x", f"{case.state_bytes_per_param:.3f}",
                         f"{case.bytes_per_step / size:.2f}", f"{case.bytes_per_step / t / 1e9:.1f}"])
        bnb_step = cases[1].bitsandbytes_step_fn() if with_bnb else None
        if bnb_step is not None:
            t = best_time(bnb_step, min_time=0.0, max_repeats=2)
            rows.append(["bitsandbytes Adam8bit (CPU)", f"{size:,}", _fmt_time(t),
                         f"{times[0] / t:.2f}x", f"{cases[1].state_bytes_per_param:.3f}", "", ""])
    _print_markdown(["step", "size", "time", "speed vs float32 state",
                     "state bytes/param", "traffic bytes/param", "GB/s"], rows, file)
    return rows


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------- the template's optimizers
# One row per optimizer generated from _kernels_elementwise.pxi.tp: a class step of
# fastoptim.optim against its peer's default step (torch.optim's default is foreach) and
# against a probe with the optimizer's own streams.
# name: (fastoptim.optim class, options, peer module, peer class, peer options, state buffers)
ELEMENTWISE = {
    "Adagrad": ("Adagrad", {}, "torch.optim", "Adagrad", {}, 1),
    "Lion": ("Lion", {}, "lion_pytorch", "Lion", {}, 1),
    "Adamax": ("Adamax", {}, "torch.optim", "Adamax", {}, 2),
    "RAdam": ("RAdam", {}, "torch.optim", "RAdam", {}, 2),
    "Adadelta": ("Adadelta", {}, "torch.optim", "Adadelta", {}, 2),
    "Rprop": ("Rprop", {}, "torch.optim", "Rprop", {}, 2),
    "NAdam": ("NAdam", {}, "torch.optim", "NAdam", {}, 2),
    "ASGD": ("ASGD", {}, "torch.optim", "ASGD", {}, 1),
    "AdamWScheduleFree": ("AdamWScheduleFree", {}, "schedulefree", "AdamWScheduleFree", {}, 2),
}
ELEMENTWISE_SIZES = (65_536, 16_777_216)


class ElementwiseCase:
    """One step of a template optimizer's class over one float array: fastoptim's, its
    peer's default (when the peer is installed) and the own-streams probe."""

    def __init__(self, name, size, dtype=np.float32, seed=0):
        cls_name, options, self.peer_module, self.peer_cls, self.peer_options, n_states = \
            ELEMENTWISE[name]
        rng = np.random.default_rng(seed)
        self.name, self.size, self.dtype = name, size, np.dtype(dtype)
        self.param = rng.standard_normal(size).astype(dtype)
        self.grad = rng.standard_normal(size).astype(dtype)
        self.grads = [self.grad]
        self.opt = getattr(fastoptim.optim, cls_name)([self.param], **options)
        if hasattr(self.opt, "train"):
            self.opt.train()
        self.probe = _StreamsProbe(n_states, size, dtype)
        # read param, grad and every state buffer; write param and every state buffer
        self.bytes_per_element = (3 + 2 * n_states) * self.dtype.itemsize

    def fastoptim_step(self):
        self.opt.step(self.grads)

    def peer_step_fn(self):
        """The peer's default step on a copy (ImportError when it is not installed)."""
        import importlib

        import torch
        module = importlib.import_module(self.peer_module)
        param = torch.nn.Parameter(torch.from_numpy(self.param.copy()))
        param.grad = torch.from_numpy(self.grad.copy())
        opt = getattr(module, self.peer_cls)([param], **self.peer_options)
        if hasattr(opt, "train"):
            opt.train()
        return opt.step


def elementwise_report(names=None, sizes=ELEMENTWISE_SIZES, dtype=np.float32, file=None):
    """One row per template optimizer and size: bytes per element, the class step's time,
    % of its own-streams probe, and the peer's default step (torch: foreach)."""
    file = file or sys.stdout
    header = ["optimizer", "bytes/elem", "size", "fastoptim", "probe", "% of probe",
              "peer default", "peer/fastoptim"]
    rows = []
    for name in names or list(ELEMENTWISE):
        for size in sizes:
            case = ElementwiseCase(name, size, dtype)
            fns = [case.fastoptim_step, case.probe]
            try:
                fns.append(case.peer_step_fn())
            except ImportError:
                pass
            times = best_times_interleaved(fns, min_time=0.8)
            row = [name, str(case.bytes_per_element), f"{size:,}", _fmt_time(times[0]),
                   _fmt_time(times[1]), f"{100 * times[1] / times[0]:.0f}%"]
            row += ([_fmt_time(times[2]), f"{times[2] / times[0]:.2f}x"] if len(times) > 2
                    else ["not installed", "-"])
            rows.append(row)
            print("  ".join(row), file=sys.stderr, flush=True)
            del case, fns
    print(file=file)
    print(f"fastoptim {fastoptim.__version__}, kernels {kernels.ISA}, {get_num_threads()} "
          f"threads, {np.dtype(dtype).name}. Class steps (fastoptim.optim and the peer's: "
          "torch.optim default = foreach, lion_pytorch.Lion, schedulefree's default) and the "
          "probe with the optimizer's own streams (staggered), best of interleaved rounds.",
          file=file)
    print(file=file)
    _print_markdown(header, rows, file)
    return rows
