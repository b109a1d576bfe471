"""Pick the compiled kernels for this CPU, and resolve thread counts.

The AVX2+FMA build is used when the CPU has both; setting the environment
variable FASTOPTIM_FORCE_BASELINE=1 (before import) forces the portable build,
which is how the tests check both paths against the reference.
"""

import numbers
import os

try:
    from fastoptim import _kernels_baseline
except ImportError as exc:  # the source tree shadows the installed package
    _here = os.path.dirname(os.path.abspath(__file__))
    raise ImportError(
        f"fastoptim's compiled kernels are not built in {_here}: this is a source "
        "checkout, found first on sys.path (Python puts the current directory first). "
        "Run from another directory to use the installed package, or build in place "
        "with 'python setup.py build_ext --inplace'."
    ) from exc

__all__ = ["kernels", "isa", "resolve_n_threads", "set_num_threads", "get_num_threads"]


def _choose():
    if os.environ.get("FASTOPTIM_FORCE_BASELINE", "") not in ("", "0"):
        return _kernels_baseline
    if _kernels_baseline.cpu_has_avx2_fma():
        try:
            from fastoptim import _kernels_avx2
        except ImportError:  # built on a platform without the AVX2 variant
            return _kernels_baseline
        return _kernels_avx2
    return _kernels_baseline


kernels = _choose()
isa = kernels.ISA

_default_n_threads = None  # None: all usable cores (set_num_threads changes it)


def _usable_cores():
    # Respect OMP_NUM_THREADS and the CPU affinity mask, like scikit-learn.
    n = kernels.omp_max_threads()
    try:
        n = min(n, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        n = min(n, os.cpu_count() or 1)
    return max(n, 1)


_cores_cache = None


def _cores():
    # Asking the OS costs ~1 us: once per process (or per set_num_threads) is enough
    # for a step's hot path.
    global _cores_cache
    if _cores_cache is None:
        _cores_cache = _usable_cores()
    return _cores_cache


def _max_threads():
    # The processors this process may run on (the affinity mask when last read:
    # import or set_num_threads); 1 without OpenMP.
    return kernels.max_threads()


def resolve_n_threads(n_threads):
    """scikit-learn's contract: None = all usable cores, -1 = all, -2 = all but one...

    A request above the processors this process may run on is capped to that count:
    more threads only slow a call down, and a huge count would make the OpenMP
    runtime abort.  Any int is accepted (0 is an error)."""
    if n_threads is None:
        n_threads = _default_n_threads
        if n_threads is None:
            return _cores()
    if type(n_threads) is int and n_threads > 0:  # the common case, before the ABC checks
        return min(n_threads, _max_threads())
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be None or an int, got {type(n_threads).__name__}")
    n_threads = int(n_threads)
    if n_threads == 0:
        raise ValueError("n_threads must be a non-zero int (None for all cores, "
                         "negative to count back from all cores), got 0")
    if n_threads > 0:
        return min(n_threads, _max_threads())
    return max(1, _cores() + 1 + n_threads)


def set_num_threads(n_threads):
    """Set the default thread count of every kernel call (None: all usable cores)."""
    global _default_n_threads
    global _cores_cache
    if n_threads is not None:
        resolve_n_threads(n_threads)  # validate
    _default_n_threads = n_threads
    _cores_cache = None  # re-read OMP_NUM_THREADS / affinity
    kernels.refresh_max_threads()


def get_num_threads():
    """The number of threads a kernel call uses by default."""
    return resolve_n_threads(None)
