"""Property tests (hypothesis, derandomized): any shape, any valid hyperparameters
(torch's ranges: eps = 0, alpha > 1, any dampening), the kernels equal the reference
bit for bit (NaN where it has NaN) and never touch the grad."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import fastoptim
from fastoptim import reference
from _cases import call, copy_state, make_state

unit = st.floats(0.0, 0.999)
positive = st.floats(1e-12, 1.0)
eps = st.one_of(st.just(0.0), positive)  # torch accepts eps = 0
dtypes = st.sampled_from([np.float32, np.float64])
shapes = array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)

OPTIONS = {
    "sgd": st.fixed_dictionaries(dict(
        momentum=unit, dampening=st.floats(-2.0, 3.0), weight_decay=unit,
        maximize=st.booleans(),
    )),
    "rmsprop": st.fixed_dictionaries(dict(
        alpha=st.floats(0.0, 3.0), eps=eps, momentum=unit, centered=st.booleans(),
        weight_decay=unit, maximize=st.booleans(),
    )),
    "adam": st.fixed_dictionaries(dict(
        beta1=unit, beta2=unit, eps=eps, weight_decay=unit,
        decoupled_weight_decay=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans(),
    )),
}


@given(kind=st.sampled_from(sorted(OPTIONS)), data=st.data(), shape=shapes, dtype=dtypes,
       lr=st.floats(0.0, 1.0), steps=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_matches_reference_for_any_valid_input(kind, data, shape, dtype, lr, steps, seed):
    options = data.draw(OPTIONS[kind])
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape).astype(dtype)
    ref_param = param.copy()
    state = make_state(kind, param, options)
    ref_state = copy_state(state)
    for step in range(1, steps + 1):
        grad = rng.standard_normal(shape).astype(dtype)
        grad_before = grad.copy()
        call(fastoptim, kind, param, grad, state, step, lr, options)
        with np.errstate(all="ignore"):  # eps = 0, alpha > 1: NaN in both
            call(reference, kind, ref_param, grad, ref_state, step, lr, options)
        np.testing.assert_array_equal(grad, grad_before)
    np.testing.assert_array_equal(param, ref_param, strict=True)
    for name, buf in state.items():
        if buf is not None:
            np.testing.assert_array_equal(buf, ref_state[name], strict=True)
