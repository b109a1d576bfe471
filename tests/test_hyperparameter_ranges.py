"""The functional API accepts every hyperparameter value torch.optim accepts.

torch's own constructor is asked which values it accepts (its checks are
``0.0 <= lr`` and so on, so inf passes and NaN fails); the functional API must
agree, except that NaN is refused everywhere (torch.optim.SGD's checks are
``lr < 0.0`` and so on, which NaN passes, and it does not check dampening).
The newly allowed values (eps = 0, alpha >= 1, any dampening, inf lr) then give
torch's numbers and the reference's bits.
"""

import math

import numpy as np
import pytest

import fastoptim
from fastoptim import reference
from _cases import call, make_state, copy_state
from _torch_peer import torch_optimizer, torch_steps
from conftest import kernels_variants

VALUES = [-1.0, -0.0, 0.0, 1e-300, 0.5, 0.999, 1.0, 1.5, 1e300, math.inf, -math.inf, math.nan]
HYPER = {
    "sgd": ["lr", "momentum", "dampening", "weight_decay"],
    "rmsprop": ["lr", "alpha", "eps", "weight_decay", "momentum"],
    "adam": ["lr", "beta1", "beta2", "eps", "weight_decay"],
}


def _torch_accepts(kind, name, value):
    torch = pytest.importorskip("torch")
    lr, options = (value, {}) if name == "lr" else (0.1, {name: value})
    try:
        torch_optimizer(torch, kind, [torch.zeros(3, requires_grad=True)], lr, options)
    except ValueError:
        return False
    return True


def _fastoptim_accepts(kind, name, value):
    param = np.zeros(3)
    options = {} if name == "lr" else {name: value}
    if kind != "adam":  # momentum on, so that dampening is used
        options.setdefault("momentum", 0.5)
    state = make_state(kind, param, dict(options, momentum=1.0))
    try:
        call(fastoptim, kind, param, np.ones(3), state, 2, value if name == "lr" else 0.1,
             options)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("kind", sorted(HYPER))
def test_accepts_exactly_what_torch_accepts(kind):
    for name in HYPER[kind]:
        for value in VALUES:
            # On purpose: NaN is not a real number, even where torch lets it through.
            expected = _torch_accepts(kind, name, value) and not math.isnan(value)
            assert _fastoptim_accepts(kind, name, value) == expected, (name, value)


# Values torch accepts that the functional API used to refuse, each run against torch.
NEW_VALUES = [
    ("adam", dict(eps=0.0)),
    ("adam", dict(eps=0.0, amsgrad=True)),
    ("adam", dict(eps=math.inf)),
    ("adam", dict(eps=0.0, decoupled_weight_decay=True, weight_decay=0.1)),
    ("rmsprop", dict(alpha=1.0)),
    ("rmsprop", dict(alpha=1.5, centered=True, momentum=0.5)),
    ("rmsprop", dict(alpha=2.0, eps=0.0)),
    ("sgd", dict(momentum=0.9, dampening=1.5)),
    ("sgd", dict(momentum=0.9, dampening=-2.0)),
    ("sgd", dict(momentum=0.9, dampening=math.inf)),
    ("sgd", dict(momentum=1e300, weight_decay=1e300)),
]


def _run_fastoptim(module, kind, param, grads, lr, options):
    param = param.copy()
    state = make_state(kind, param, options)
    for step, g in enumerate(grads, 1):
        call(module, kind, param, g, state, step, lr, options)
    return param, state


@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    monkeypatch.setattr(fastoptim.functional, "kernels", request.param)
    return request.param


@pytest.mark.parametrize("lr", [0.01, math.inf])
@pytest.mark.parametrize("kind, options", NEW_VALUES, ids=str)
def test_newly_accepted_values_match_torch_and_reference(variant, kind, options, lr):
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    param = rng.standard_normal(64)
    grads = [rng.standard_normal(64) for _ in range(4)]
    for g in grads:
        g[::5] = 0.0  # zero gradients: 0 / 0 with eps = 0
    with np.errstate(all="ignore"):
        got, state = _run_fastoptim(fastoptim, kind, param, grads, lr, options)
        ref, ref_state = _run_fastoptim(reference, kind, param, grads, lr, options)
    want, want_state = torch_steps(kind, param, grads, lr, options, foreach=False)
    np.testing.assert_array_equal(got, ref)  # bit for bit, NaN where the reference has NaN
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    for name, buf in state.items():
        if buf is not None:
            np.testing.assert_array_equal(buf, ref_state[name], err_msg=name)
            np.testing.assert_allclose(buf, want_state[name], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("lr", [np.array(0.05), np.array([0.05]), np.float32(0.05), 0.05])
def test_array_and_numpy_scalar_lr_like_a_float(lr):
    rng = np.random.default_rng(8)
    p, g = rng.standard_normal(10), rng.standard_normal(10)
    m, v = np.zeros(10), np.zeros(10)
    want = p.copy()
    reference.adam_(want, g, np.zeros(10), np.zeros(10), step=1, lr=float(np.ravel(lr)[0]))
    fastoptim.adam_(p, g, m, v, step=1, lr=lr)
    np.testing.assert_array_equal(p, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps", [0.0, 5e-324, 1e-50, 1e-8, math.inf])
def test_adam_fma_division_exact_for_any_eps(variant, dtype, eps):
    # The AVX2 loop divides by sqrt(1 - beta2**t) with FMAs only when the result is
    # exactly IEEE division's; eps = 0 (or an eps that rounds to 0 in float32) keeps
    # the sign of 0/0 and x/0 visible, so the guard must send it to the divide.
    rng = np.random.default_rng(9)
    p = rng.standard_normal(4096).astype(dtype)
    grads = [rng.standard_normal(4096).astype(dtype) for _ in range(3)]
    for g in grads:
        g[::3] = 0.0
        g[1::7] = -0.0
    with np.errstate(all="ignore"):
        for amsgrad in (False, True):
            opts = dict(eps=eps, beta1=0.9, amsgrad=amsgrad)
            got, state = _run_fastoptim(fastoptim, "adam", p, grads, 0.1, opts)
            ref, ref_state = _run_fastoptim(reference, "adam", p, grads, 0.1, opts)
            assert np.array_equal(got, ref, equal_nan=True)
            # NaNs in the same places, zeros with the same signs
            np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))
            for name, buf in state.items():
                if buf is not None:
                    np.testing.assert_array_equal(buf, ref_state[name])


def test_step_is_any_int_a_double_holds_on_both_sides_of_the_fast_path():
    """check_step takes plain ints below 2**1023 without numbers.Integral's check; the
    slow path above and NumPy ints must give the same verdicts."""
    from fastoptim._validation import check_step

    for step in (1, 2, 2 ** 53 + 1, 2 ** 1023 - 1, 2 ** 1023, 2 ** 1024 - 2 ** 970 - 1):
        assert check_step(step) == step and type(check_step(step)) is int
    assert check_step(np.int64(7)) == 7 and type(check_step(np.int64(7))) is int
    for bad in (2 ** 1024 - 1, 2 ** 1024, 10 ** 400):
        with pytest.raises(ValueError, match="a double can hold"):
            check_step(bad)
    for bad in (0, -1, -(2 ** 1023)):
        with pytest.raises(ValueError, match=">= 1"):
            check_step(bad)
    for bad in (True, 1.0, np.float64(1.0), "1", None):
        with pytest.raises(TypeError, match="step must be an int"):
            check_step(bad)
