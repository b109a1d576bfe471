"""pytest-benchmark: adam_ at 16,777,216 (and 1,048,576) float32 elements with float32
state vs 8-bit state (fastoptim.QuantizedState), and bitsandbytes' CPU 8-bit Adam as
a peer where it installs.

    pytest bench/test_bench_quant8.py --benchmark-only [--runslow]

The table with the two states timed taking turns (the ratio that matters on a shared
machine) and bytes per parameter: `python -m fastoptim.bench --quant8`.
"""

import pytest

from fastoptim.bench import QUANT8_SIZES, QUANT8_STATES, Quant8Case


@pytest.mark.parametrize("size", QUANT8_SIZES)
@pytest.mark.parametrize("state", QUANT8_STATES)
def test_adam_step(benchmark, state, size):
    case = Quant8Case(size, state)
    benchmark.group = f"adam float32 params {size}"
    benchmark.extra_info["state_bytes_per_param"] = case.state_bytes_per_param
    benchmark.extra_info["bytes_per_step"] = case.bytes_per_step
    benchmark(case.step)


@pytest.mark.parametrize("size", QUANT8_SIZES)
def test_bitsandbytes_adam8bit_cpu(benchmark, size):
    pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    case = Quant8Case(size, "int8")
    benchmark.group = f"adam float32 params {size}"
    benchmark.extra_info["state_bytes_per_param"] = case.state_bytes_per_param
    # one step takes seconds at 16 M elements: a few rounds only
    benchmark.pedantic(case.bitsandbytes_step_fn(), rounds=3, iterations=1, warmup_rounds=1)
