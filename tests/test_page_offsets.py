"""Buffers at the same offset within a 4 KiB page: the kernels' staged loop.

Large arrays from NumPy all start at the same page offset.  For buffers that start
within a few cache lines of each other modulo 4 KiB the kernels go through blocks of
16 elements staged in local copies (fastoptim/_kernels.pxi, `_apply_rule`); elsewhere
through the plain loop.  Both must give the reference's bits, for every option set,
both dtypes, both compiled variants, any thread count, and sizes and page offsets
that leave partial blocks at either end.
"""

import numpy as np
import pytest

import fastoptim
from fastoptim import reference
from _cases import OPTIMIZERS, call, copy_state
from conftest import kernels_variants

PAGE = 4096


def _at_page_offsets(n, dtype, offsets):
    """Zero arrays of n elements carved from one allocation, array k starting at
    offsets[k] modulo 4096, each on pages of its own."""
    itemsize = np.dtype(dtype).itemsize
    stride = -(-n * itemsize // PAGE) * PAGE + PAGE
    raw = np.zeros(stride * len(offsets) + 2 * PAGE, dtype=np.uint8)
    first = (-raw.ctypes.data) % PAGE
    out = []
    for k, off in enumerate(offsets):
        start = first + k * stride + off
        out.append(raw[start:start + n * itemsize].view(dtype))
    for a, off in zip(out, offsets):
        assert a.ctypes.data % PAGE == off
    return out


def _placed(kind, options, n, dtype, offsets, rng):
    """param, grad and the state the options need, at the given page offsets."""
    names = {"sgd": ["momentum_buffer"],
             "rmsprop": ["square_avg", "momentum_buffer", "grad_avg"],
             "adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]}[kind]
    used = {"momentum_buffer": options.get("momentum", 0) > 0,
            "grad_avg": options.get("centered", False),
            "max_exp_avg_sq": options.get("amsgrad", False)}
    bufs = _at_page_offsets(n, dtype, offsets[:2 + len(names)])
    param, grad = bufs[0], bufs[1]
    param[...] = rng.standard_normal(n)
    state = {name: (buf if used.get(name, True) else None)
             for name, buf in zip(names, bufs[2:])}
    return param, grad, state


SAME = [16] * 5                      # NumPy's own offset for large arrays
SAME_MISALIGNED = [40] * 5           # not on a cache-line boundary: partial first block
NEAR = [16, 80, 144, 16, 464]        # within a few lines of each other
STAGGERED = [(16 + 1088 * k) % PAGE for k in range(5)]  # zeros_state_like spacing: plain loop


@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    monkeypatch.setattr(fastoptim.functional, "kernels", request.param)
    return request.param


@pytest.mark.parametrize("offsets", [SAME, SAME_MISALIGNED, NEAR, STAGGERED],
                         ids=["same", "same-misaligned", "near", "staggered"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_option_set_matches_reference_at_any_page_offset(variant, kind, dtype, offsets):
    rng = np.random.default_rng(12)
    options_grid, lr = OPTIMIZERS[kind]
    for options in options_grid:
        # Ranges under the kernels' STAGED_MIN (2,048) run the plain loop; 4,099 the
        # staged one, with partial blocks at both ends.
        for n in (1, 15, 16, 17, 1000 + 5, 4096 + 3):
            param, grad, state = _placed(kind, options, n, dtype, offsets, rng)
            ref_param, ref_state = param.copy(), copy_state(state)
            for step in range(1, 4):
                grad[...] = rng.standard_normal(n)
                call(fastoptim, kind, param, grad, state, step, lr, options)
                call(reference, kind, ref_param, grad, ref_state, step, lr, options)
            np.testing.assert_array_equal(param, ref_param, strict=True)
            for name, buf in state.items():
                if buf is not None:
                    np.testing.assert_array_equal(buf, ref_state[name], err_msg=name,
                                                  strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_same_offset_and_staggered_buffers_give_the_same_bits_on_any_thread_count(kind, dtype):
    # Above the parallel threshold, so the threads split the arrays: each thread's chunk
    # has its own partial blocks.
    n = 100_003
    options_grid, lr = OPTIMIZERS[kind]
    options = max(options_grid, key=lambda o: sum(bool(v) for v in o.values()))
    results = []
    for offsets, n_threads in ((STAGGERED, 1), (SAME, 1), (SAME, 2), (SAME_MISALIGNED, 3)):
        rng = np.random.default_rng(3)
        param, grad, state = _placed(kind, options, n, dtype, offsets, rng)
        for step in range(1, 6):
            grad[...] = rng.standard_normal(n)
            call(fastoptim, kind, param, grad, state, step, lr,
                 dict(options, n_threads=n_threads))
        results.append((param, state))
    (want, want_state), others = results[0], results[1:]
    for param, state in others:
        np.testing.assert_array_equal(param, want, strict=True)
        for name, buf in state.items():
            if buf is not None:
                np.testing.assert_array_equal(buf, want_state[name], err_msg=name, strict=True)


@pytest.mark.parametrize("n_states", [0, 1, 2, 3])
@pytest.mark.parametrize("variant_module", kernels_variants(),
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_traffic_probe_at_the_same_page_offset(variant_module, n_states):
    rng = np.random.default_rng(5)
    for n, n_threads in ((37, 1), (40_000, 2)):
        bufs = _at_page_offsets(n, np.float32, [16] * (2 + n_states))
        for buf in bufs:
            buf[...] = rng.standard_normal(n)
        d = np.float32(0.25) * bufs[1]
        want = [bufs[0] + d] + [x + d for x in bufs[2:]]
        variant_module.stream_probe(bufs[0], bufs[1], bufs[2:], 0.25, n_threads)
        for got, expected in zip([bufs[0]] + bufs[2:], want):
            np.testing.assert_array_equal(got, expected, strict=True)


# --- buffers fastoptim allocates itself --------------------------------------------

def _page_distance(a, b):
    d = (a.ctypes.data - b.ctypes.data) % PAGE
    return min(d, PAGE - d)


def test_network_grads_and_optimizer_state_at_their_own_page_offsets():
    from fastoptim.nn import MLP
    from fastoptim.optim import Adam
    net = MLP([200, 100, 10], dtype=np.float64, seed=0)
    assert net.params_flat.nbytes >= 1 << 16   # large enough to be placed
    opt = Adam([net.params_flat], amsgrad=True)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 200)), rng.integers(0, 10, 32)
    net.loss_and_grad(X, y)
    opt.step([net.grads_flat])
    st = opt.state[0]
    bufs = [net.params_flat, net.grads_flat, st["exp_avg"], st["exp_avg_sq"],
            st["max_exp_avg_sq"]]
    for i in range(len(bufs)):
        for j in range(i + 1, len(bufs)):
            assert _page_distance(bufs[i], bufs[j]) >= 512, (i, j)
    # and after a pickle round trip (the network is rebuilt by __init__)
    import pickle
    net2 = pickle.loads(pickle.dumps(net))
    assert _page_distance(net2.params_flat, net2.grads_flat) >= 512


def test_network_results_do_not_depend_on_where_grads_live(monkeypatch):
    from fastoptim._alloc import zeros_at_page_offset
    from fastoptim.nn import MLP, _network
    from fastoptim.optim import Adam
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((64, 200)), rng.integers(0, 10, 64)

    def train():
        net = MLP([200, 100, 10], dtype=np.float32, seed=0)
        opt = Adam([net.params_flat], lr=1e-2)
        for _ in range(5):
            net.loss_and_grad(X, y)
            opt.step([net.grads_flat])
        return net

    placed = train()
    # grads at param's own page offset, as two NumPy allocations of that size would be
    monkeypatch.setattr(_network, "zeros_grad_like",
                        lambda p: zeros_at_page_offset(p, p.ctypes.data))
    plain = train()
    assert _page_distance(plain.params_flat, plain.grads_flat) == 0
    assert _page_distance(placed.params_flat, placed.grads_flat) >= 512
    np.testing.assert_array_equal(placed.params_flat, plain.params_flat, strict=True)
    np.testing.assert_array_equal(placed.grads_flat, plain.grads_flat, strict=True)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zeros_grad_like(dtype, order):
    from fastoptim._alloc import zeros_grad_like, zeros_state_like
    big = np.ones((300, 200), dtype=dtype, order=order)
    g = zeros_grad_like(big)
    assert g.shape == big.shape and g.dtype == big.dtype and not g.any()
    assert g.flags.f_contiguous == big.flags.f_contiguous
    assert g.flags.c_contiguous == big.flags.c_contiguous
    for k in (1, 2, 3):
        assert _page_distance(g, zeros_state_like(big, k)) >= 512
    assert _page_distance(g, big) >= 512
    small = np.ones(10, dtype=dtype)
    assert zeros_grad_like(small).shape == (10,)
