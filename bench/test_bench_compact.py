"""pytest-benchmark: Adam with compact storage at 16,777,216 elements (float32 state,
bfloat16 state, bfloat16 params with a float32 master and bfloat16 state, with either
rounding) and torch's fused Adam on bfloat16 tensors, in one group.

    pytest bench/test_bench_compact.py --benchmark-only [--runslow]

Results are checked equal to the reference before anything is timed.  The table with
bytes per parameter, every case timed taking turns, comes from
`python -m fastoptim.bench --compact`.
"""

import pytest

from fastoptim.bench import COMPACT_CASES, CompactCase, torch_available, torch_bf16_adam_fn

pytest.importorskip("ml_dtypes")
SIZES = (1_048_576, 16_777_216)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(COMPACT_CASES))
def test_compact_adam(benchmark, name, size):
    case = CompactCase(name, size)
    case.check_equal_to_reference()
    benchmark.group = f"compact adam {size}"
    benchmark.extra_info["state_bytes_per_param"] = case.state_bytes
    benchmark.extra_info["moved_bytes_per_param"] = case.bytes_per_param
    benchmark(case.fastoptim_step)


@pytest.mark.skipif(not torch_available(), reason="torch is not installed")
@pytest.mark.parametrize("size", SIZES)
def test_torch_fused_adam_bfloat16(benchmark, size):
    benchmark.group = f"compact adam {size}"
    benchmark.extra_info["state_bytes_per_param"] = 4
    benchmark(torch_bf16_adam_fn(size))
