"""pytest-benchmark: per-call overhead and one call per model.

    pytest bench/test_bench_overhead.py --benchmark-only

* a 1,000-element adam_ call from Python, checks included (target <= 3 us);
* a step over 50 arrays of 1,000-100,000 elements in one call vs one call over one
  array of the same total size (target: <= 2x), and vs 50 separate calls.

The model does not fit in cache and this machine's memory bandwidth drifts, so the
three are timed one after the other here; `fastoptim bench` prints the same
comparison timed taking turns.
"""

import pytest

import fastoptim
from fastoptim.bench import MANY_SHAPES, adam_arrays


def test_small_call_overhead(benchmark):
    (p,), (g,), (m,), (v,) = adam_arrays([1000])
    benchmark.group = "adam_ 1,000 elements, end to end"
    benchmark(fastoptim.adam_, p, g, m, v, step=10)


@pytest.mark.parametrize("how", ["one call, list of 50", "one call, one flat array",
                                 "50 calls"])
def test_many_arrays_one_call(benchmark, how):
    benchmark.group = f"adam_ over 50 arrays ({sum(MANY_SHAPES):,} elements)"
    if how == "one call, one flat array":
        (p,), (g,), (m,), (v,) = adam_arrays([sum(MANY_SHAPES)])
        benchmark(fastoptim.adam_, p, g, m, v, step=10)
        return
    params, grads, ms, vs = adam_arrays(MANY_SHAPES)
    if how == "one call, list of 50":
        benchmark(fastoptim.adam_, params, grads, ms, vs, step=10)
    else:
        def each():
            for p, g, m, v in zip(params, grads, ms, vs):
                fastoptim.adam_(p, g, m, v, step=10)
        benchmark(each)
