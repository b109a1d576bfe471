"""fastoptim.torch.Muon against torch.optim.Muon on the shared torch models' 2-D params.

torch's Newton-Schulz iteration casts its input to bfloat16 (8 significant bits);
fastoptim's runs in the param's dtype (README: PyTorch backend).  So the comparisons run
torch with that one cast made a copy in the param's dtype (``torch_ns_in_param_dtype``:
the rest of torch's code as shipped), where the results agree within rounding, and
``test_bfloat16_newton_schulz_is_the_only_difference`` measures the difference with
torch as shipped.

Tolerances (normwise relative error, params and momentum buffers, after 100 steps fed
the same gradients): float64 1e-12, float32 1e-5 (seen: 2e-15 and 1e-6; BLAS and torch's
matrix products sum in other orders).
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastoptim  # noqa: E402
import fastoptim.optim as fo  # noqa: E402
import fastoptim.reference as R  # noqa: E402
import fastoptim.torch as ft  # noqa: E402
from _torch_models import (MODELS, TENSOR_LRS, assert_refused_step_changes_nothing, needs_fused_add,  # noqa: E402
                           data, mlp, numpy_lrs, step_in_lockstep)

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
CONFIGS = [dict(lr=0.02),
           dict(lr=0.01, nesterov=False, momentum=0.9, adjust_lr_fn="match_rms_adamw"),
           dict(lr=0.02, weight_decay=0.0, ns_steps=3, eps=1e-5, adjust_lr_fn="original")]
IDS = ["default", "no-nesterov-match_rms_adamw", "ns_steps-eps"]


@pytest.fixture
def torch_ns_in_param_dtype(monkeypatch):
    """torch's Muon with its bfloat16 cast made a copy in the param's dtype."""
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())


def rel_err(got, want):
    a = torch.cat([t.detach().reshape(-1).double() for t in got])
    b = torch.cat([t.detach().reshape(-1).double() for t in want])
    return ((a - b).norm() / (b.norm() if b.norm() else 1.0)).item()


def loss_of(net, X, Y):
    return ((net(X) - Y) ** 2).mean()


def matrices(net):
    return [p for p in net.parameters() if p.dim() == 2]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_100_training_steps_match_torch(torch_ns_in_param_dtype, model, dtype, kw):
    """torch trains the model's 2-D params with Muon (the others with AdamW); a copy of
    the 2-D params is stepped by fastoptim.torch.Muon with the same gradients."""
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    params = matrices(net)
    others = [p for p in net.parameters() if p.dim() != 2]
    shadow = [p.detach().clone().requires_grad_() for p in params]
    topt, adamw = torch.optim.Muon(params, **kw), torch.optim.AdamW(others, lr=0.01)
    fopt = ft.Muon(shadow, **kw)
    for _ in range(100):
        net.zero_grad()
        loss_of(net, X, Y).backward()
        for s, p in zip(shadow, params):
            s.grad = p.grad.clone()
        topt.step()
        adamw.step()
        fopt.step()
    assert rel_err(shadow, params) <= TOL[dtype]
    for s, p in zip(shadow, params):
        assert list(fopt.state[s]) == list(topt.state[p]) == ["momentum_buffer"]
        assert rel_err([fopt.state[s]["momentum_buffer"]],
                       [topt.state[p]["momentum_buffer"]]) <= TOL[dtype]
    assert fopt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]


def test_bfloat16_newton_schulz_is_the_only_difference():
    """torch as shipped: one step from the same params and grads gives the same momentum
    buffer (within rounding), and an update that differs from fastoptim's by what
    bfloat16's 8 bits leave after 5 Newton-Schulz iterations (seen: 1.5-1.8%
    relative), not much more and not less."""
    dtype = torch.float64
    g = torch.Generator().manual_seed(4)
    shapes = [(16, 12), (12, 16), (32, 32)]
    start = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    tparams = [p.clone().requires_grad_() for p in start]
    fparams = [p.clone().requires_grad_() for p in start]
    topt = torch.optim.Muon(tparams, lr=0.5, weight_decay=0.0)
    fopt = ft.Muon(fparams, lr=0.5, weight_decay=0.0)
    for tp, fp, gr in zip(tparams, fparams, grads):
        tp.grad, fp.grad = gr.clone(), gr.clone()
    topt.step()
    fopt.step()
    for tp, fp, p0 in zip(tparams, fparams, start):
        assert rel_err([fopt.state[fp]["momentum_buffer"]],
                       [topt.state[tp]["momentum_buffer"]]) <= TOL[dtype]
        err = rel_err([fp - p0], [tp - p0])
        assert 1e-3 < err < 5e-2, err


def test_the_comparison_can_fail(torch_ns_in_param_dtype):
    """One Newton-Schulz coefficient off by 1e-6 relative is caught."""
    dtype = torch.float64
    X, Y = data("mlp", dtype)
    nets = [mlp(dtype), mlp(dtype)]
    coeffs = (3.4445, -4.775, 2.0315)
    opts = [torch.optim.Muon(matrices(nets[0]), lr=0.02, ns_coefficients=coeffs),
            ft.Muon(matrices(nets[1]), lr=0.02,
                    ns_coefficients=(coeffs[0] * (1 + 1e-6),) + coeffs[1:])]
    for _ in range(30):
        for net, opt in zip(nets, opts):
            net.zero_grad()
            loss_of(net, X, Y).backward()
            opt.step()
    assert rel_err(matrices(nets[1]), matrices(nets[0])) > TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_equal_to_the_numpy_class_bit_for_bit(dtype):
    """fastoptim.optim.Muon's functional on the tensors' own memory: fed the same
    gradients, params and momentum buffers are == after every step (two groups)."""
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    tparams = matrices(net)
    arrays = [p.detach().numpy().copy() for p in tparams]
    groups = lambda ps: [dict(params=ps[:1]), dict(params=ps[1:], lr=0.01)]
    topt, nopt = ft.Muon(groups(tparams), lr=0.02), fo.Muon(groups(arrays), lr=0.02)
    step_in_lockstep(net, X, Y, tparams, arrays, topt, nopt)
    for i, p in enumerate(tparams):
        assert np.array_equal(nopt.state[i]["momentum_buffer"],
                              topt.state[p]["momentum_buffer"].numpy())


def test_state_dict_interchange_both_ways(torch_ns_in_param_dtype):
    """torch -> fastoptim -> torch mid-run loses nothing (== the uninterrupted run), both
    ways; continuing in the other library stays within rounding."""
    dtype = torch.float64
    X, Y = data("mlp", dtype)

    def train(net, opt, steps):
        for _ in range(steps):
            net.zero_grad()
            loss_of(net, X, Y).backward()
            opt.step()

    for first, other in ((torch.optim, ft), (ft, torch.optim)):
        net, ref = mlp(dtype), mlp(dtype)
        opt = first.Muon(matrices(net), lr=0.02)
        train(net, opt, 20)
        ref.load_state_dict(net.state_dict())
        ref_opt = first.Muon(matrices(ref), lr=0.02)
        ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        there = other.Muon(matrices(net), lr=0.5)
        there.load_state_dict(copy.deepcopy(opt.state_dict()))
        assert there.param_groups[0]["lr"] == 0.02
        back = first.Muon(matrices(net), lr=0.02)
        back.load_state_dict(copy.deepcopy(there.state_dict()))
        train(net, back, 20)
        train(ref, ref_opt, 20)
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))
        cont = other.Muon(matrices(net), lr=0.02)
        cont.load_state_dict(copy.deepcopy(back.state_dict()))
        train(net, cont, 20)
        train(ref, ref_opt, 20)
        assert rel_err(matrices(net), matrices(ref)) <= TOL[dtype]


def test_with_adamw_for_the_rest_under_torchs_schedulers(torch_ns_in_param_dtype):
    """torch's Muon recipe (2-D params to Muon, the rest to AdamW), each under a
    scheduler, against fastoptim.torch's Muon and AdamW stepping a copy with the same
    gradients: the same learning rates, params within rounding."""
    dtype = torch.float64
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    params = list(net.parameters())
    shadow = [p.detach().clone().requires_grad_() for p in params]

    def pair(module, ps):
        opts = [module.Muon([p for p in ps if p.dim() == 2], lr=0.02),
                module.AdamW([p for p in ps if p.dim() != 2], lr=0.01)]
        return opts, [torch.optim.lr_scheduler.StepLR(opts[0], step_size=10, gamma=0.5),
                      torch.optim.lr_scheduler.CosineAnnealingLR(opts[1], T_max=30)]

    (topts, tscheds), (fopts, fscheds) = pair(torch.optim, params), pair(ft, shadow)
    for _ in range(60):
        net.zero_grad()
        loss_of(net, X, Y).backward()
        for s, p in zip(shadow, params):
            s.grad = p.grad.clone()
        for opt in topts + fopts:
            opt.step()
        for sched in tscheds + fscheds:
            sched.step()
        assert [o.param_groups[0]["lr"] for o in fopts] == \
            [o.param_groups[0]["lr"] for o in topts]
    assert rel_err(shadow, params) <= TOL[dtype]


def test_transposed_weights_are_updated_in_place(torch_ns_in_param_dtype):
    """A Fortran-ordered (transposed) 2-D param and its grad: updated in their own
    memory, as torch's."""
    dtype = torch.float64
    g = torch.Generator().manual_seed(8)
    base = torch.randn(7, 5, generator=g, dtype=dtype)
    tp, fp = base.clone().t().requires_grad_(), base.clone().t().requires_grad_()
    ptr = fp.data_ptr()
    topt, fopt = torch.optim.Muon([tp], lr=0.05), ft.Muon([fp], lr=0.05)
    for _ in range(10):
        gr = torch.randn(7, 5, generator=g, dtype=dtype).t()
        tp.grad, fp.grad = gr.clone(), gr.clone()
        topt.step()
        fopt.step()
    assert fp.data_ptr() == ptr and not fp.is_contiguous()
    assert rel_err([fp], [tp]) <= TOL[dtype]


@pytest.mark.parametrize("make,error,match", [
    (lambda: torch.zeros(3, requires_grad=True), ValueError, "2D"),
    (lambda: torch.zeros(2, 3, 4, requires_grad=True), ValueError, "2D"),
    (lambda: torch.zeros(3, 4, dtype=torch.bfloat16, requires_grad=True), TypeError,
     "bfloat16"),
    (lambda: torch.zeros(4, 6)[:, ::2].requires_grad_(), ValueError, "contiguous"),
    (lambda: torch.zeros(3, 4, device="meta", requires_grad=True), TypeError, "CPU"),
])
def test_bad_params_are_refused_clearly(make, error, match):
    """As torch's constructor (ValueError naming 2D params); add_param_group refuses them
    too (torch's accepts them and fails at the step)."""
    with pytest.raises(error, match=match):
        ft.Muon([make()])
    opt = ft.Muon([torch.zeros(2, 2, requires_grad=True)])
    with pytest.raises(error, match=match):
        opt.add_param_group({"params": [make()]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("kw", [dict(lr=-1.0), dict(momentum=-0.1), dict(weight_decay=-0.1),
                                dict(adjust_lr_fn="other")])
def test_bad_hyperparameters_are_refused_as_torch(kw):
    p = torch.zeros(2, 2, requires_grad=True)
    with pytest.raises(ValueError):
        torch.optim.Muon([p], **kw)
    with pytest.raises(ValueError):
        ft.Muon([p], **kw)


@pytest.mark.parametrize("spoil,error,match", [
    (lambda opt, a: opt.state[a].__setitem__("momentum_buffer", torch.zeros(12)), ValueError,
     "shape"),
    (lambda opt, a: setattr(a, "grad", torch.zeros(3, 4).t()), ValueError, "memory order"),
    (lambda opt, a: opt.param_groups[1].__setitem__("ns_steps", 100), ValueError, "ns_steps"),
    (lambda opt, a: opt.param_groups[1].__setitem__("ns_coefficients", (1.0, 2.0)), TypeError,
     "ns_coefficients"),
    (lambda opt, a: opt.param_groups[1].__setitem__("lr", torch.tensor(-0.1)), ValueError,
     "lr"),
], ids=["buffer-shape", "grad-order", "ns_steps", "ns_coefficients", "float32-tensor-lr"])
def test_a_refused_step_changes_nothing(spoil, error, match):
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, requires_grad=True), torch.randn(2, 5, requires_grad=True)
    opt = ft.Muon([{"params": [a]}, {"params": [b], "lr": 0.005}], lr=0.05)
    for _ in range(3):
        a.grad, b.grad = torch.randn(4, 3), torch.randn(2, 5)
        opt.step()
    a.grad, b.grad = torch.randn(4, 3), torch.randn(2, 5)
    spoil(opt, a)
    assert_refused_step_changes_nothing(opt, [a, b], error, match)


# ------------------------------------------------------ a Tensor lr, as torch uses it
@pytest.mark.parametrize("lr_kind", sorted(TENSOR_LRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.05, adjust_lr_fn="match_rms_adamw")],
                         ids=["default", "match_rms_adamw"])
def test_a_tensor_lr_is_used_as_torch_uses_it_bit_for_bit(lr_kind, dtype, kw):
    """torch's Muon keeps a Tensor lr a 0-d tensor of its dtype and computes
    ``1 - lr * weight_decay`` and the adjusted lr in it (float32 here), then applies
    them to the param as doubles.  With ns_steps=0 and a gradient with one nonzero
    entry, Newton-Schulz gives exactly 1 there and 0 elsewhere, in torch's bfloat16 and
    in fastoptim alike: each step is p * decay, then that entry minus the adjusted lr,
    so the params must be torch's (as shipped) bit for bit.  Computing those scalars in
    double, as fastoptim did, misses by float32's rounding of 1 - 1e-4 (~6e-8)."""
    start = np.random.default_rng(5).standard_normal((6, 5))  # tall: the ratio is not 1
    grad = np.zeros((6, 5))
    grad[2, 3] = 1.0
    kw = dict(kw, ns_steps=0)

    def run_torch(cls, lr):
        p = torch.tensor(start, dtype=dtype, requires_grad=True)
        opt = cls([p], lr=lr, **kw)
        for _ in range(20):
            p.grad = torch.tensor(grad, dtype=dtype)
            opt.step()
        return p.detach().numpy()

    def run_numpy(lr):
        np_dtype = np.float32 if dtype is torch.float32 else np.float64
        p, q = start.astype(np_dtype), start.astype(np_dtype)
        opt, buf = fo.Muon([p], lr=lr, **kw), np.zeros_like(q)
        for _ in range(20):
            opt.step([grad.astype(np_dtype)])
            fastoptim.muon_(q, grad.astype(np_dtype), buf, lr=lr, **kw)
        return p, q

    lr = TENSOR_LRS[lr_kind](1e-3)
    want = run_torch(torch.optim.Muon, lr)
    assert not np.array_equal(want, start.astype(want.dtype))
    assert run_torch(ft.Muon, lr).tobytes() == want.tobytes()
    for numpy_lr in numpy_lrs(lr):
        for got in run_numpy(numpy_lr):
            assert got.tobytes() == want.tobytes(), type(numpy_lr)


@pytest.mark.parametrize("tensor_keys", [("weight_decay",), ("momentum",),
                                         ("weight_decay", "momentum")], ids="+".join)
def test_tensor_weight_decay_and_momentum_give_torchs_params(tensor_keys):
    """torch's Muon computes 1 - lr * weight_decay and the momentum's lerp weights with
    these as float32 0-d tensors when given so (1 - lr * weight_decay rounds in float32,
    lr first rounded to float32).  The scenario of the test above (ns_steps=0, one
    nonzero gradient entry), lr * weight_decay large enough for that rounding to show:
    fastoptim.torch, the NumPy class and muon_ (with np.float32 values) must give
    torch's params bit for bit."""
    start = np.random.default_rng(5).standard_normal((6, 5))
    grad = np.zeros((6, 5))
    grad[2, 3] = 1.0
    rng = np.random.default_rng(0)

    def run_torch(cls, kw):
        p = torch.tensor(start, dtype=torch.float32, requires_grad=True)
        opt = cls([p], ns_steps=0, **kw)
        for _ in range(5):
            p.grad = torch.tensor(grad, dtype=torch.float32)
            opt.step()
        return p.detach().numpy()

    def run_numpy(kw):
        kw = {k: np.float32(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        p, q = start.astype(np.float32), start.astype(np.float32)
        opt, buf = fo.Muon([p], ns_steps=0, **kw), np.zeros_like(q)
        for _ in range(5):
            opt.step([grad.astype(np.float32)])
            fastoptim.muon_(q, grad.astype(np.float32), buf, ns_steps=0, **kw)
        return p, q

    rounding_shown = 0
    for _ in range(12):
        kw = dict(lr=float(rng.uniform(0.1, 0.9)), weight_decay=float(rng.uniform(0.3, 1.0)),
                  momentum=float(rng.uniform(0.5, 0.99)))
        as_floats = run_torch(torch.optim.Muon, kw)
        kw.update({k: torch.tensor(kw[k]) for k in tensor_keys})
        want = run_torch(torch.optim.Muon, kw)
        rounding_shown += want.tobytes() != as_floats.tobytes()
        assert run_torch(ft.Muon, kw).tobytes() == want.tobytes(), kw
        for got in run_numpy(kw):
            assert got.tobytes() == want.tobytes(), kw
    if "weight_decay" in tensor_keys:
        assert rounding_shown  # the draws reach cases where float32 rounding differs


@pytest.mark.parametrize("seed", range(3))
def test_one_minus_lr_times_weight_decay_rounds_as_torchs(seed):
    """_lr_products (Muon's and Adafactor's decay) against torch's own scalar arithmetic
    for every mix of Python floats and float32 tensors."""
    from fastoptim.functional import _lr_products

    rng = np.random.default_rng(seed)
    for _ in range(200):
        lr, wd = float(rng.uniform(0.01, 1.0)), float(rng.uniform(0.01, 1.0))
        for lr_t, wd_t in [(False, True), (True, False), (True, True), (False, False)]:
            tl = torch.tensor(lr) if lr_t else lr
            tw = torch.tensor(wd) if wd_t else wd
            want = 1 - tl * tw
            want = float(want) if isinstance(want, torch.Tensor) else want
            got, _ = _lr_products(np.float32(lr) if lr_t else lr,
                                  np.float32(wd) if wd_t else wd)
            assert got == want, (lr, wd, lr_t, wd_t)


# ------------------------------------- the last update, one fused multiply-add as torch's
def _integer_grads(shape, steps, rng):
    """Gradients of 16 entries of +-1 and 5 of +-2 (the rest 0), placed at random: the
    squares sum to 36 in any order, so the norm is 6 exactly in torch and in fastoptim."""
    size = shape[0] * shape[1]
    grads = []
    for _ in range(steps):
        g = np.zeros(size)
        where = rng.permutation(size)[:21]
        g[where] = np.r_[np.ones(16), np.full(5, 2.0)] * rng.choice([-1.0, 1.0], 21)
        grads.append(g.reshape(shape))
    return grads


@needs_fused_add
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(6, 5), (4, 7)], ids=["tall", "wide"])
@pytest.mark.parametrize("lr_kind", ["float", "float32-0d"])
@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.0, adjust_lr_fn="match_rms_adamw")],
                         ids=["default", "match_rms_adamw"])
def test_the_last_update_is_one_fused_multiply_add_as_torchs(dtype, shape, lr_kind, kw,
                                                              monkeypatch):
    """torch's param.add_(update, alpha=-adjusted_lr) rounds once: its CPU loops use
    fused multiply-adds.  With momentum=0 the update is the gradient; its entries are
    small integers whose squares sum to 36, so its norm is 6 exactly on both sides, and
    with ns_steps=0 and torch's bfloat16 cast made a copy in the param's dtype (as
    test_torch_optim_inputs.py) the orthogonalized update is gradient / 6 on both sides
    (entries like 1/6 and 1/3, one rounding each).  The params must then be torch's bit
    for bit; rounding -adjusted_lr * update first, as fastoptim did (p += -lr * O),
    misses them in the last bit.  The reference's emulated FMA is held to it too."""
    rng = np.random.default_rng(9)
    # params of the update's size, so that rounding the product first changes the sum
    start = rng.standard_normal(shape) * 0.01
    grads = _integer_grads(shape, 20, rng)
    lr = TENSOR_LRS[lr_kind](0.02)
    kw = dict(kw, lr=lr, momentum=0.0, ns_steps=0)
    np_dtype = np.float32 if dtype is torch.float32 else np.float64

    def run_torch(cls):
        p = torch.tensor(start, dtype=dtype, requires_grad=True)
        opt = cls([p], **kw)
        for g in grads:
            p.grad = torch.tensor(g, dtype=dtype)
            opt.step()
        return p.detach().numpy()

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
        want = run_torch(torch.optim.Muon)
    assert run_torch(ft.Muon).tobytes() == want.tobytes()
    numpy_kw = dict(kw, lr=numpy_lrs(lr)[0])
    p, q, r = (start.astype(np_dtype) for _ in range(3))
    opt, buf_q, buf_r = fo.Muon([p], **numpy_kw), np.zeros_like(q), np.zeros_like(r)
    for g in grads:
        g = g.astype(np_dtype)
        opt.step([g])
        fastoptim.muon_(q, g, buf_q, **numpy_kw)
        R.muon_(r, g, buf_r, **numpy_kw)
    for got in (p, q, r):
        assert got.tobytes() == want.tobytes()
