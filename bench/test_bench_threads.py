"""pytest-benchmark: one thread against two around the parallel threshold.

    pytest bench/test_bench_threads.py --benchmark-only [-k "adam and float64"]

Each group is one kernel, dtype and size, timed on 1 and on 2 threads with the
threshold lowered to 0 so that both counts really run, back to back ("busy": the
threads still spin from the previous call) and with the threads idle for 1.5 ms
before every call ("idle": as between the steps of a training loop).  The threshold
in the kernels (`show_config()` prints it) is where two threads stop losing; the
interleaved table is `python -c "from fastoptim.bench import thread_report;
thread_report()"`.
"""

import time

import pytest

from fastoptim._backend import kernels
from fastoptim.bench import DTYPES, KERNELS, Case

SIZES = (4_096, 8_192, 16_384, 32_768, 65_536, 131_072)
IDLE_SECONDS = 0.0015


@pytest.fixture
def threads_at_any_size():
    saved = kernels.get_parallel_min_elements()
    kernels.set_parallel_min_elements(0)
    yield
    kernels.set_parallel_min_elements(saved)


@pytest.mark.parametrize("between_calls", ["busy", "idle"])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_threads(benchmark, threads_at_any_size, kernel, dtype, size, n_threads,
                 between_calls):
    case = Case(kernel, DTYPES[dtype], size)
    case.check_equal_to_reference()
    benchmark.group = f"{kernel} {dtype} {size}: threads, {between_calls}"

    def step():
        case._call(case.fn, case.param, case.states, 2, n_threads=n_threads)

    if between_calls == "busy":
        benchmark(step)
    else:
        benchmark.pedantic(step, setup=lambda: time.sleep(IDLE_SECONDS), rounds=200,
                           warmup_rounds=1)
