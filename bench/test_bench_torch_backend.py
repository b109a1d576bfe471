"""fastoptim.torch.Adam against torch.optim.Adam (default, foreach, for-loop, fused) on
an RL-sized policy, an MNIST-sized MLP and a big model: the step alone and a whole
training step (forward, backward, step); and on bfloat16 copies of the models,
fastoptim.torch.Adam (float32 master, bfloat16 state) against torch's fused step.

    python -m pytest bench/test_bench_torch_backend.py --benchmark-only
    FASTOPTIM_BENCH_BIG_PARAMS=100000000 python -m pytest bench/test_bench_torch_backend.py \\
        --benchmark-only          # the 100 M-parameter model (default 2 M: CI stays fast)
    python -c "from fastoptim.bench import torch_backend_report; torch_backend_report()"

The report function times the contenders taking turns (the machine's drift cancels in
the ratios); pytest-benchmark times them one after the other.  No timed assertion.
"""

import os

import pytest

torch = pytest.importorskip("torch")

from fastoptim.bench import (TORCH_BF16_CONTENDERS, TORCH_CONTENDERS, TORCH_MODELS,  # noqa
                             TorchBackendCase, TorchBF16Case, big_widths)

BIG = int(os.environ.get("FASTOPTIM_BENCH_BIG_PARAMS", 2_000_000))
MODELS = dict(TORCH_MODELS, big=big_widths(BIG))
_cases = {}


def case(model, make=TorchBackendCase):
    if (model, make) not in _cases:
        _cases.clear()  # one model's state at a time (the big one is large)
        _cases[model, make] = make(MODELS[model])
    return _cases[model, make]


@pytest.mark.parametrize("contender", TORCH_CONTENDERS)
@pytest.mark.parametrize("model", list(MODELS))
def test_step(benchmark, model, contender):
    benchmark.group = f"torch backend step: {model}"
    benchmark(case(model).step_fn(contender))


@pytest.mark.parametrize("contender", TORCH_CONTENDERS)
@pytest.mark.parametrize("model", list(MODELS))
def test_train_step(benchmark, model, contender):
    benchmark.group = f"torch backend train step: {model}"
    benchmark(case(model).train_step_fn(contender))


@pytest.mark.parametrize("contender", TORCH_BF16_CONTENDERS)
@pytest.mark.parametrize("model", list(MODELS))
def test_step_bf16(benchmark, model, contender):
    """bfloat16 params: fastoptim.torch.Adam (float32 master, bfloat16 state) against
    torch.optim.Adam(fused=True) (the issue's target: >= 2x)."""
    benchmark.group = f"torch backend step, bfloat16: {model}"
    benchmark(case(model, TorchBF16Case).step_fn(contender))


@pytest.mark.parametrize("contender", TORCH_BF16_CONTENDERS)
@pytest.mark.parametrize("model", list(MODELS))
def test_train_step_bf16(benchmark, model, contender):
    benchmark.group = f"torch backend train step, bfloat16: {model}"
    benchmark(case(model, TorchBF16Case).train_step_fn(contender))
