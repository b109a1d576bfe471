"""pytest-benchmark: the optimizers generated from _kernels_elementwise.pxi.tp, float32,
one group per optimizer and size: fastoptim's class step, the peer's default step
(torch.optim's foreach, lion_pytorch.Lion, schedulefree.AdamWScheduleFree) and the probe
with the optimizer's own streams (kernels.stream_probe: its limit).

    pytest bench/test_bench_elementwise.py --benchmark-only [--runslow] [-k Lion]

The printed table: fastoptim.bench.elementwise_report().
"""

import pytest

from fastoptim.bench import ELEMENTWISE, ELEMENTWISE_SIZES, ElementwiseCase


@pytest.mark.parametrize("size", ELEMENTWISE_SIZES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.parametrize("peer", ["fastoptim", "probe", "peer_default"])
def test_step(benchmark, peer, name, size):
    case = ElementwiseCase(name, size)
    benchmark.group = f"{name} float32 {size}"
    benchmark.extra_info["bytes_per_step"] = case.bytes_per_element * size
    if peer == "fastoptim":
        fn = case.fastoptim_step
    elif peer == "probe":
        fn = case.probe
    else:
        try:
            fn = case.peer_step_fn()
        except ImportError as exc:
            pytest.skip(f"{ELEMENTWISE[name][2]} is not installed: {exc}")
    benchmark(fn)
