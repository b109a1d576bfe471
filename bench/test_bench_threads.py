"""pytest-benchmark: one thread against two around the parallel threshold.

    pytest bench/test_bench_threads.py --benchmark-only [-k "adam and float64"]

Each group is one kernel, dtype and size, timed on 1 and on 2 threads with the
threshold lowered to 0 so that both counts really run; the threshold in the kernels
(`show_config()` prints it) is where two threads stop losing.
"""

import pytest

import fastoptim
from fastoptim._backend import kernels
from fastoptim.bench import DTYPES, KERNELS, Case

SIZES = (4_096, 8_192, 12_288, 16_384, 24_576, 32_768)


@pytest.fixture
def threads_at_any_size():
    saved = kernels.get_parallel_min_elements()
    kernels.set_parallel_min_elements(0)
    yield
    kernels.set_parallel_min_elements(saved)
    fastoptim.set_num_threads(None)


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_threads(benchmark, threads_at_any_size, kernel, dtype, size, n_threads):
    case = Case(kernel, DTYPES[dtype], size)
    case.check_equal_to_reference()
    fastoptim.set_num_threads(n_threads)
    benchmark.group = f"{kernel} {dtype} {size}: threads"
    benchmark(case.fastoptim_step)
