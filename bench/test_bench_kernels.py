"""pytest-benchmark: each kernel x dtype x size, fastoptim (buffers at the same page
offset, as NumPy allocates them, and at staggered offsets) vs the NumPy reference vs
torch.optim (fused, foreach, for-loop) in one group, plus the kernel's own-traffic
probe (its limit), all on the same arrays (bench.CaseMemory; torch's state swapped
for views of them).

    pytest bench/test_bench_kernels.py --benchmark-only [--runslow] [-k adam]

Results are checked equal to the reference before anything is timed.  The printed
table with every column timed taking turns comes from `python -m fastoptim.bench`.
"""

import pytest

from fastoptim.bench import (DTYPES, KERNELS, PLACEMENTS, SIZES, Case, TrafficProbe,
                             torch_available)

PEERS = ([f"fastoptim_{p}" for p in PLACEMENTS] + ["probe", "numpy"]
         + (["torch_fused", "torch_foreach", "torch_forloop"] if torch_available() else []))


_memory = {}


def _case(kernel, dtype, size, placement):
    """A Case on the arrays every peer of this group uses (CaseMemory): separate
    allocations of one size can differ in speed on this VM, which would read as a
    difference between peers.  Only the latest group's arrays are kept."""
    key = (kernel, dtype, size)
    if key not in _memory:
        _memory.clear()
        _memory[key] = Case(kernel, DTYPES[dtype], size).memory
    return Case(kernel, DTYPES[dtype], size, placement=placement, memory=_memory[key])


# peer varies fastest, so that a group's peers run one after another on its arrays
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_step(benchmark, peer, kernel, dtype, size):
    placement = peer.split("_", 1)[1] if peer.startswith("fastoptim") else "same"
    case = _case(kernel, dtype, size, placement)
    case.check_equal_to_reference()
    benchmark.group = f"{kernel} {dtype} {size}"
    benchmark.extra_info["bytes_per_step"] = case.bytes_per_step
    if peer == "probe":
        # The kernel's streams and traffic in a trivial loop, on the staggered views:
        # its limit.
        stag = _case(kernel, dtype, size, "staggered")
        fn = TrafficProbe(kernel, size, DTYPES[dtype],
                          arrays=[stag.param, stag.grad] + stag.states)
    elif peer.startswith("fastoptim"):
        fn = case.fastoptim_step
    elif peer == "numpy":
        fn = case.reference_step
    else:
        try:
            fn = case.torch_step_fn(peer.split("_", 1)[1], same_memory=True)
        except (TypeError, RuntimeError) as exc:  # e.g. torch has no fused RMSprop
            pytest.skip(f"torch.optim.{case.torch_cls} has no {peer} step: {exc}")
    benchmark(fn)
