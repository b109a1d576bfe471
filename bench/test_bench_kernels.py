"""pytest-benchmark: each kernel x dtype x size, fastoptim vs the NumPy reference vs
torch.optim (fused, foreach, for-loop) in one group, plus the bandwidth probe.

    pytest bench/test_bench_kernels.py --benchmark-only [--runslow] [-k adam]

Results are checked equal to the reference before anything is timed.  The printed
table with GB/s and % of the limit comes from `python -m fastoptim.bench`.
"""

import pytest

from fastoptim.bench import DTYPES, KERNELS, SIZES, Case, StreamProbe, torch_available

PEERS = ["fastoptim", "numpy"] + (["torch_fused", "torch_foreach", "torch_forloop"]
                                   if torch_available() else [])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("peer", PEERS)
def test_step(benchmark, peer, kernel, dtype, size):
    case = Case(kernel, DTYPES[dtype], size)
    case.check_equal_to_reference()
    benchmark.group = f"{kernel} {dtype} {size}"
    benchmark.extra_info["bytes_per_step"] = case.bytes_per_step
    if peer == "fastoptim":
        fn = case.fastoptim_step
    elif peer == "numpy":
        fn = case.reference_step
    else:
        try:
            fn = case.torch_step_fn(peer.split("_", 1)[1])
        except (TypeError, RuntimeError) as exc:  # e.g. torch has no fused RMSprop
            pytest.skip(f"torch.optim.{case.torch_cls} has no {peer} step: {exc}")
    benchmark(fn)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_bandwidth_probe(benchmark, dtype, size):
    """a += s * b in place: 3 * itemsize bytes per element, the kernels' access pattern."""
    probe = StreamProbe(size, DTYPES[dtype])
    benchmark.group = f"probe {dtype} {size}"
    benchmark.extra_info["bytes_per_step"] = probe.bytes_per_call
    benchmark(probe)
