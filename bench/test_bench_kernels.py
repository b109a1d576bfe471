"""pytest-benchmark: each kernel x dtype x size, fastoptim (buffers at the same page
offset, as NumPy allocates them, and at staggered offsets) vs the NumPy reference vs
torch.optim (fused, foreach, for-loop) in one group, plus the kernel's own-traffic
probe (its limit).

    pytest bench/test_bench_kernels.py --benchmark-only [--runslow] [-k adam]

Results are checked equal to the reference before anything is timed.  The printed
table with every column timed taking turns comes from `python -m fastoptim.bench`.
"""

import pytest

from fastoptim.bench import (DTYPES, KERNELS, PLACEMENTS, SIZES, Case, TrafficProbe,
                             torch_available)

PEERS = ([f"fastoptim_{p}" for p in PLACEMENTS] + ["numpy"]
         + (["torch_fused", "torch_foreach", "torch_forloop"] if torch_available() else []))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("peer", PEERS)
def test_step(benchmark, peer, kernel, dtype, size):
    placement = peer.split("_", 1)[1] if peer.startswith("fastoptim") else "same"
    case = Case(kernel, DTYPES[dtype], size, placement=placement)
    case.check_equal_to_reference()
    benchmark.group = f"{kernel} {dtype} {size}"
    benchmark.extra_info["bytes_per_step"] = case.bytes_per_step
    if peer.startswith("fastoptim"):
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
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_traffic_probe(benchmark, kernel, dtype, size):
    """The kernel's streams and traffic in a trivial loop, buffers staggered: its limit."""
    probe = TrafficProbe(kernel, size, DTYPES[dtype])
    benchmark.group = f"{kernel} {dtype} {size}"
    benchmark.extra_info["bytes_per_step"] = probe.bytes_per_call
    benchmark(probe)
