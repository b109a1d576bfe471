"""fastoptim.torch against torch.optim on real torch models: the same training runs on
both and are compared; state dicts both ways; torch's schedulers; None grads; bad input;
zero-copy and autograd.

Tolerances against torch.optim (params after 100 training steps, |a - b| <= tol * (1 + |b|)):
float32 1e-6 and float64 2e-15, a few units in the last place.  torch's CPU kernels fuse
some multiply-adds (``add_(x, alpha=)``, ``addcmul_``, ``lerp_``) where fastoptim rounds every
operation on its own, so single steps differ in the last bit, and through training (the
next gradient depends on the params) those differences are carried along; the largest
seen in these runs are 3e-7 (float32) and 8e-16 (float64).  Centered RMSprop computes
``sqrt(sq - ga * ga)``, a cancellation that magnifies that last-bit difference (README:
torch fuses it into one FMA): it is compared with torch in float64 only, at 1e-11.
Where the operations are the same -- fastoptim's own NumPy classes fed the same
gradients -- the results are compared with ``==``.

The state buffers are compared on a second copy whose params are set to torch's before
every step (``test_100_training_steps_match_torch``): otherwise the params' last-bit
drift reaches the state through the weight decay, ``g + wd * p``, and where that sum
cancels (maximize=True with weight decay settles the params where ``-grad + wd * p`` is
near 0) RMSprop's division by ``sqrt(square_avg)`` of a near-zero gradient magnifies it
(seen: a 3e-8 param difference became 1.5e-6 in a momentum buffer, float32, on some
thread counts, whose conv backward sums in another order and so leads to another
trajectory).  Fed the same params and gradients each step, the state's own difference
stays within rounding over 100 steps, and the params still run free on the first copy.
"""

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastoptim.optim as fo  # noqa: E402
import fastoptim.torch as ft  # noqa: E402
from _torch_models import MODELS, convnet, data, mlp  # noqa: E402,F401

TOL = {torch.float32: 1e-6, torch.float64: 2e-15}
DTYPES = [torch.float32, torch.float64]
CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("RMSprop", dict(lr=0.001)),
    ("RMSprop", dict(lr=0.001, alpha=0.9, momentum=0.5, weight_decay=0.01, maximize=True)),
    ("RMSprop", dict(lr=0.001, momentum=0.5, centered=True, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.001, centered=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.1)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]


def train(model, opt, X, Y, steps, maximize=False, sched=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        (-loss if maximize else loss).backward()
        opt.step()
        if sched is not None:
            sched.step()


def assert_close(got, want, tol):
    for a, b in zip(got, want):
        a, b = a.detach(), b.detach()
        err = ((a - b).abs() / (1 + b.abs())).max().item()
        assert err <= tol, (err, tol)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------ equivalence
def _check_same_state(want_sd, got_sd):
    """The same state, by the same keys, in the same order, dtypes and shapes."""
    assert want_sd["param_groups"] == got_sd["param_groups"]
    assert want_sd["state"].keys() == got_sd["state"].keys()
    for k, st in want_sd["state"].items():
        assert list(st) == list(got_sd["state"][k])
        for key, t in st.items():
            assert got_sd["state"][k][key].dtype == t.dtype
            assert got_sd["state"][k][key].shape == t.shape


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_100_training_steps_match_torch(model, dtype, name, kw):
    """A model trained 100 steps by torch.optim, and two copies of its params stepped by
    fastoptim.torch with the same gradients each step: the first runs free (its params
    agree within rounding after 100 steps); the second gets torch's params before each
    step, so its state buffers, which evolve on their own for 100 steps, are compared
    without the params' drift magnified (module docstring)."""
    centered = kw.get("centered", False)
    if centered and dtype == torch.float32:
        pytest.skip("centered RMSprop: torch's FMA in sq - ga*ga, magnified by the "
                    "cancellation (compared in float64; == with the NumPy class below)")
    tol = 1e-11 if centered else TOL[dtype]
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    params = list(net.parameters())
    shadow = [p.detach().clone().requires_grad_() for p in params]
    synced = [p.detach().clone().requires_grad_() for p in params]
    topt = getattr(torch.optim, name)(params, **kw)
    fopt, sopt = getattr(ft, name)(shadow, **kw), getattr(ft, name)(synced, **kw)
    for _ in range(100):
        topt.zero_grad()
        loss = ((net(X) - Y) ** 2).mean()
        (-loss if kw.get("maximize") else loss).backward()
        with torch.no_grad():
            for s, c, p in zip(shadow, synced, params):
                s.grad, c.grad = p.grad.clone(), p.grad.clone()
                c.copy_(p)
        topt.step()
        fopt.step()
        sopt.step()
    assert_close(shadow, params, tol)
    for c, p in zip(synced, params):
        for key, t in topt.state.get(p, {}).items():
            if key != "step":
                assert_close([sopt.state[c][key]], [t], tol)
    _check_same_state(topt.state_dict(), fopt.state_dict())
    _check_same_state(topt.state_dict(), sopt.state_dict())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_independent_training_runs_match_torch(dtype, name, kw):
    """The conv net trained 100 steps by each library on its own: the trajectories stay
    within rounding.  (On the MLP, RMSprop's momentum on elements whose gradient is near
    eps magnifies last-bit differences along independent trajectories; the same-gradient
    comparison above covers it.)"""
    centered = kw.get("centered", False)
    if centered and dtype == torch.float32:
        pytest.skip("centered RMSprop in float32: see the module docstring")
    X, Y = data("convnet", dtype)
    results = []
    for module in (torch.optim, ft):
        net = convnet(dtype)
        opt = getattr(module, name)(net.parameters(), **kw)
        train(net, opt, X, Y, 100, kw.get("maximize", False))
        results.append((params_of(net), opt.state_dict()))
    (want, want_sd), (got, got_sd) = results
    assert_close(got, want, 1e-11 if centered else TOL[dtype])
    _check_same_state(want_sd, got_sd)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_equal_to_the_numpy_classes_bit_for_bit(model, dtype, name, kw):
    """fastoptim.torch runs the kernels of fastoptim.optim: fed the same gradients, the
    params and every state buffer are == after each of 30 steps (two param groups)."""
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    tparams = list(net.parameters())
    arrays = [p.detach().numpy().copy() for p in tparams]
    half = len(tparams) // 2
    groups = lambda ps: [dict(params=ps[:half]), dict(params=ps[half:], lr=kw["lr"] / 2)]
    topt = getattr(ft, name)(groups(tparams), **kw)
    nopt = getattr(fo, name)(groups(arrays), **kw)
    for _ in range(20):
        topt.zero_grad()
        ((net(X) - Y) ** 2).mean().backward()
        nopt.step([p.grad.numpy().copy() for p in tparams])
        topt.step()
        for a, p in zip(arrays, tparams):
            assert np.array_equal(a, p.detach().numpy())
    for i, p in enumerate(tparams):
        for key, buf in nopt.state[i].items():
            if key == "step":
                if name != "SGD":
                    assert topt.state[p]["step"].item() == buf
            else:
                assert np.array_equal(buf, topt.state[p][key].numpy()), key


# ------------------------------------------------------------------ state dicts
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_state_dict_interchange_both_ways(name, kw):
    """torch -> fastoptim -> torch mid-run loses nothing: a run that moves its state
    through the other library (without stepping there) equals the uninterrupted run
    bit for bit, both ways; and continuing in the other library stays within rounding."""
    dtype = torch.float64
    X, Y = data("convnet", dtype)
    maximize = kw.get("maximize", False)
    for first, other in ((torch.optim, ft), (ft, torch.optim)):
        net = convnet(dtype)
        opt = getattr(first, name)(net.parameters(), **kw)
        train(net, opt, X, Y, 20, maximize)
        ref = convnet(dtype)
        ref.load_state_dict(net.state_dict())
        ref_opt = getattr(first, name)(ref.parameters(), **kw)
        ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        # through the other library and back, then on
        there = getattr(other, name)(net.parameters(), **kw)
        there.load_state_dict(copy.deepcopy(opt.state_dict()))
        back = getattr(first, name)(net.parameters(), **kw)
        back.load_state_dict(copy.deepcopy(there.state_dict()))
        train(net, back, X, Y, 20, maximize)
        train(ref, ref_opt, X, Y, 20, maximize)
        for a, b in zip(net.parameters(), ref.parameters()):
            assert torch.equal(a, b)
        # continuing in the other library: within rounding of the uninterrupted run
        cont = getattr(other, name)(net.parameters(), **kw)
        cont.load_state_dict(copy.deepcopy(back.state_dict()))
        train(net, cont, X, Y, 20, maximize)
        train(ref, ref_opt, X, Y, 20, maximize)
        assert_close(list(net.parameters()), list(ref.parameters()),
                     1e-11 if kw.get("centered") else TOL[dtype])


def test_state_dict_from_torch_adamw_continues_within_rounding_in_float32():
    X, Y = data("convnet", torch.float32)
    a, b = convnet(torch.float32), convnet(torch.float32)
    ta, tb = torch.optim.AdamW(a.parameters(), lr=0.01), torch.optim.AdamW(b.parameters(), lr=0.01)
    train(a, ta, X, Y, 50)
    train(b, tb, X, Y, 50)
    fb = ft.AdamW(b.parameters(), lr=0.01)
    fb.load_state_dict(tb.state_dict())
    train(a, ta, X, Y, 50)
    train(b, fb, X, Y, 50)
    assert_close(list(b.parameters()), list(a.parameters()), TOL[torch.float32])
    assert int(fb.state[next(b.parameters())]["step"]) == 100


def test_load_state_dict_keeps_adamw_decoupled_and_refuses_bad_dicts():
    net = mlp(torch.float32)
    opt = ft.AdamW(net.parameters())
    sd = torch.optim.Adam(mlp(torch.float32).parameters()).state_dict()
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    before = copy.deepcopy(opt.state_dict())
    for bad in (None, {}, {"state": {}}, {"state": {}, "param_groups": []},
                {"state": [], "param_groups": sd["param_groups"]}):
        with pytest.raises((TypeError, ValueError)):
            opt.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["param_groups"][0]["lr"] = float("nan")
    with pytest.raises(ValueError):
        opt.load_state_dict(bad)
    assert opt.state_dict()["param_groups"] == before["param_groups"]


# ------------------------------------------------------------------ schedulers
@pytest.mark.parametrize("make_sched", [
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=100),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=1e-4),
], ids=["StepLR", "OneCycleLR", "CosineAnnealingLR"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_torch_schedulers_drive_it_unchanged(make_sched, name):
    """Each optimizer under its own scheduler; fastoptim's steps a shadow copy of the
    params with torch's gradients: the same learning rates (==, no ordering warning),
    the same group values, params within rounding."""
    dtype = torch.float64
    X, Y = data("convnet", dtype)
    net = convnet(dtype)
    params = list(net.parameters())
    shadow = [p.detach().clone().requires_grad_() for p in params]
    kw = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    topt, fopt = getattr(torch.optim, name)(params, **kw), getattr(ft, name)(shadow, **kw)
    tsched, fsched = make_sched(topt), make_sched(fopt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        for _ in range(100):
            topt.zero_grad()
            ((net(X) - Y) ** 2).mean().backward()
            for s, p in zip(shadow, params):
                s.grad = p.grad.clone()
            topt.step()
            fopt.step()
            tsched.step()
            fsched.step()
            assert fsched.get_last_lr() == tsched.get_last_lr()
    assert {k: v for k, v in fopt.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in topt.param_groups[0].items() if k != "params"}
    assert_close(shadow, params, TOL[dtype])


# ------------------------------------------------------------------ None grads
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_params_without_grad_are_skipped_as_torch_does(name, kw):
    dtype = torch.float64
    nets = [mlp(dtype), mlp(dtype)]
    opts = [getattr(m, name)(n.parameters(), **kw) for m, n in zip((torch.optim, ft), nets)]
    g = torch.Generator().manual_seed(3)
    for step in range(12):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in nets[0].parameters()]
        for net, opt in zip(nets, opts):
            for j, (p, gr) in enumerate(zip(net.parameters(), grads)):
                # param 0 never has a grad; param 1 every other step
                p.grad = None if j == 0 or (j == 1 and step % 2) else gr.clone()
            opt.step()
    (tnet, fnet), (topt, fopt) = nets, opts
    assert_close(list(fnet.parameters()), list(tnet.parameters()), 1e-11)
    p0 = next(fnet.parameters())
    assert torch.equal(p0, next(mlp(dtype).parameters()))  # never updated
    tsd, fsd = topt.state_dict()["state"], fopt.state_dict()["state"]
    assert tsd.keys() == fsd.keys()
    for k in tsd:
        if "step" in tsd[k]:
            assert float(fsd[k]["step"]) == float(tsd[k]["step"])


# ------------------------------------------------------------------ zero-copy
def test_updates_the_tensors_own_memory_and_follows_replacements():
    net = mlp(torch.float32)
    X, Y = data("mlp", torch.float32)
    opt = ft.Adam(net.parameters(), lr=0.01)
    ptrs = [p.data_ptr() for p in net.parameters()]
    train(net, opt, X, Y, 3)
    assert [p.data_ptr() for p in net.parameters()] == ptrs
    w = net[0].weight
    exp_avg_ptr = opt.state[w]["exp_avg"].data_ptr()
    train(net, opt, X, Y, 1)
    assert opt.state[w]["exp_avg"].data_ptr() == exp_avg_ptr
    # a replaced p.data is the memory updated next; the old memory is left alone
    old = w.data
    snapshot = old.clone()
    w.data = old.clone()
    train(net, opt, X, Y, 1)
    assert torch.equal(old, snapshot) and not torch.equal(w.data, snapshot)
    # a replaced state buffer is the one updated
    new_avg = opt.state[w]["exp_avg"].clone()
    opt.state[w]["exp_avg"] = new_avg
    before = new_avg.clone()
    train(net, opt, X, Y, 1)
    assert opt.state[w]["exp_avg"] is new_avg and not torch.equal(new_avg, before)
    # an edited step count is read, not a cached one
    opt.state[w]["step"].fill_(1.0)
    train(net, opt, X, Y, 1)
    assert opt.state[w]["step"].item() == 2.0


def test_large_state_is_staggered_and_interchanges_with_torch():
    """State buffers of 64 KiB or more start at their param's page offset plus k * 1088
    bytes (fastoptim.zeros_state_like's placement), yet are ordinary tensors: the
    param's shape, dtype and strides (a transposed param too), saved and loaded by
    torch, and a state dict moves to torch.optim.Adam and back with the runs equal to
    torch's own."""
    import io
    g = torch.Generator().manual_seed(2)
    start = [torch.randn(300, 100, generator=g, dtype=torch.float64),
             torch.randn(100, 300, generator=g, dtype=torch.float64).t(), torch.randn(8)]
    grads = [[torch.empty_like(p).copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
              for p in start] for _ in range(6)]  # (in their param's memory order)
    fparams = [p.clone(memory_format=torch.preserve_format).requires_grad_() for p in start]
    tparams = [p.clone(memory_format=torch.preserve_format).requires_grad_() for p in start]
    fopt = ft.Adam(fparams, lr=0.01, amsgrad=True)
    topt = torch.optim.Adam(tparams, lr=0.01, amsgrad=True)

    def step(k):
        for fp, tp, gr in zip(fparams, tparams, grads[k]):
            fp.grad, tp.grad = gr.clone(), gr.clone()
        fopt.step()
        topt.step()

    step(0)
    for p in fparams[:2]:
        st = fopt.state[p]
        for index, key in enumerate(("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), 1):
            t = st[key]
            assert (t.data_ptr() - p.data_ptr()) % 4096 == index * 1088, key
            assert t.shape == p.shape and t.stride() == p.stride() and t.dtype == p.dtype
    buf = io.BytesIO()
    torch.save(fopt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf)
    moved = torch.optim.Adam(fparams, lr=0.01, amsgrad=True)  # ours -> torch
    moved.load_state_dict(saved)
    back = ft.Adam(tparams, lr=0.01, amsgrad=True)  # torch's -> ours
    back.load_state_dict(topt.state_dict())
    fopt, topt = moved, back
    for k in range(1, 6):
        step(k)
    for fp, tp in zip(fparams, tparams):
        assert_close([fp], [tp], TOL[tp.dtype])


def test_same_grad_tensor_kept_between_steps_is_reread():
    """zero_grad(set_to_none=False) keeps the grad tensors: their new values are used."""
    dtype = torch.float64
    X, Y = data("convnet", dtype)
    nets = [convnet(dtype), convnet(dtype)]
    opts = [torch.optim.Adam(nets[0].parameters(), lr=0.01), ft.Adam(nets[1].parameters(), lr=0.01)]
    for _ in range(10):
        for net, opt in zip(nets, opts):
            opt.zero_grad(set_to_none=False)
            ((net(X) - Y) ** 2).mean().backward()
            opt.step()
    assert_close(list(nets[1].parameters()), list(nets[0].parameters()), TOL[dtype])


# ------------------------------------------------------------------ autograd
def test_autograd_untouched_and_versions_bumped_as_torch():
    X, Y = data("mlp", torch.float32)
    for module in (torch.optim, ft):
        net = mlp(torch.float32)
        opt = module.Adam(net.parameters(), lr=0.01, foreach=False)
        w = net[0].weight
        loss = ((net(X) - Y) ** 2).mean()
        loss.backward(retain_graph=True)
        v = w._version
        opt.step()
        assert w._version > v and w.requires_grad and w.is_leaf and w.grad_fn is None
        # the old graph saved w: using it now is torch's in-place error, for both
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()
        # the next step's graph works
        opt.zero_grad()
        ((net(X) - Y) ** 2).mean().backward()
        opt.step()
        assert not torch.is_grad_enabled() or net[0].weight.requires_grad


def test_closure_runs_with_grad_enabled_and_returns_the_loss():
    X, Y = data("mlp", torch.float64)
    net = mlp(torch.float64)
    opt = ft.SGD(net.parameters(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = ((net(X) - Y) ** 2).mean()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert loss.item() > 0


def test_hooks_run_as_torch_runs_them():
    net = mlp(torch.float32)
    opt = ft.AdamW(net.parameters())
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    handle = register_optimizer_step_pre_hook(
        lambda o, a, k: calls.append("global"))
    try:
        for p in net.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
    finally:
        handle.remove()
    assert calls == ["global", "pre", "post"]
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd"))
    opt.state_dict()
    assert calls[-1] == "sd"


def test_deepcopy_and_pickle_keep_working():
    import pickle
    X, Y = data("mlp", torch.float64)
    net = mlp(torch.float64)
    opt = ft.Adam(net.parameters(), lr=0.01)
    train(net, opt, X, Y, 3)
    net2, opt2 = pickle.loads(pickle.dumps((net, opt)))
    train(net, opt, X, Y, 3)
    train(net2, opt2, X, Y, 3)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ bad input
def _snapshot(opt):
    sd = opt.state_dict()
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = {k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in st.items()}
             for k, st in sd["state"].items()}
    return params, state


def _assert_unchanged(opt, snap):
    params, state = _snapshot(opt)
    assert all(torch.equal(a, b) for a, b in zip(params, snap[0]))
    assert state.keys() == snap[1].keys()
    for k in state:
        for n, v in state[k].items():
            assert torch.equal(v, snap[1][k][n]) if torch.is_tensor(v) else v == snap[1][k][n]


@pytest.mark.parametrize("make,error,match", [
    (lambda: torch.zeros(3, dtype=torch.int32), TypeError, "int32"),
    (lambda: torch.zeros(3, dtype=torch.complex64, requires_grad=True), TypeError, "complex"),
    (lambda: torch.zeros(3, device="meta", requires_grad=True), TypeError, "CPU"),
    (lambda: torch.zeros(4, 4).t().requires_grad_()[::2], ValueError, "contiguous"),
    (lambda: torch.zeros(4, 6)[:, ::2].requires_grad_(), ValueError, "contiguous"),
    (lambda: torch.zeros(3, requires_grad=True) * 2, ValueError, "non-leaf"),
    (lambda: np.zeros(3), TypeError, "Tensor"),
])
def test_bad_params_are_refused_clearly(make, error, match):
    with pytest.raises(error, match=match):
        ft.Adam([make()])


def test_params_sharing_memory_are_refused():
    base = torch.zeros(10)
    a, b = base[:6].requires_grad_(), base[4:].requires_grad_()
    with pytest.raises(ValueError, match="share memory"):
        ft.SGD([a, b], lr=0.1)
    opt = ft.SGD([base[:5].requires_grad_()], lr=0.1)
    with pytest.raises(ValueError, match="share memory"):
        opt.add_param_group({"params": [base[3:].requires_grad_()]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("kw,error", [
    (dict(lr=float("nan")), ValueError), (dict(lr=-1.0), ValueError),
    (dict(differentiable=True), ValueError), (dict(lr="0.1"), TypeError),
    (dict(betas=(0.9, 1.0)), ValueError), (dict(foreach=True, fused=True), ValueError),
])
def test_bad_hyperparameters_are_refused(kw, error):
    with pytest.raises(error):
        ft.Adam([torch.zeros(3, requires_grad=True)], **kw)


@pytest.mark.parametrize("spoil,error,match", [
    (lambda opt, p: setattr(p, "grad", torch.zeros(3, 4).t()), ValueError, "memory order"),
    (lambda opt, p: opt.param_groups[1].__setitem__("lr", float("nan")), ValueError, "lr"),
    (lambda opt, p: opt.param_groups[1].__setitem__("betas", (0.9, 2.0)), ValueError, "beta2"),
    (lambda opt, p: opt.state[p].__setitem__("exp_avg", torch.zeros(12)), ValueError, "shape"),
    (lambda opt, p: opt.state[p].pop("exp_avg_sq"), ValueError, "missing"),
    (lambda opt, p: opt.state[p].__setitem__("step", torch.tensor(2.5)), ValueError, "whole"),
    (lambda opt, p: opt.state[p].__setitem__("exp_avg", opt.state[p]["exp_avg_sq"]),
     ValueError, "share memory"),
])
def test_a_refused_step_changes_nothing(spoil, error, match):
    """Two groups: whichever call would fail, nothing is written by any of them."""
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    opt = ft.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    for _ in range(2):
        a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
        opt.step()
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
    spoil(opt, a)
    snap = _snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step()
    _assert_unchanged(opt, snap)


def test_sparse_grad_is_refused():
    p = torch.zeros(5, requires_grad=True)
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.zeros(5).to_sparse()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()


def test_grad_requiring_grad_is_read_without_copy():
    """backward(create_graph=True) leaves grads with autograd history: read as they are."""
    dtype = torch.float64
    X, Y = data("mlp", dtype)
    nets = [mlp(dtype), mlp(dtype)]
    opts = [torch.optim.SGD(nets[0].parameters(), lr=0.1), ft.SGD(nets[1].parameters(), lr=0.1)]
    for net, opt in zip(nets, opts):
        ((net(X) - Y) ** 2).mean().backward(create_graph=True)
        assert next(net.parameters()).grad.requires_grad
        opt.step()
    assert_close(list(nets[1].parameters()), list(nets[0].parameters()), TOL[dtype])


def test_constructor_signatures_and_defaults_are_torchs():
    import inspect
    for name in [n for n in ft.__all__ if hasattr(torch.optim, n)]:  # Lion ...: their peers'
        ours = inspect.signature(getattr(ft, name)).parameters.values()
        theirs = inspect.signature(getattr(torch.optim, name)).parameters.values()
        # torch's, then fastoptim's keyword-only storage options (16-bit params)
        storage = [("state_dtype", inspect.Parameter.KEYWORD_ONLY, None),
                   ("master_weights", inspect.Parameter.KEYWORD_ONLY, True),
                   ("rounding", inspect.Parameter.KEYWORD_ONLY, "nearest"),
                   ("seed", inspect.Parameter.KEYWORD_ONLY, 0)
                   ] if getattr(ft, name)._COMPACT else []
        assert [(p.name, p.kind, p.default) for p in ours] == \
            [(p.name, p.kind, p.default) for p in theirs] + storage, name
        p = torch.zeros(2, 2, requires_grad=True)  # (Muon: 2-D params only)
        assert getattr(ft, name)([p]).defaults == getattr(torch.optim, name)([p]).defaults
        assert isinstance(getattr(ft, name)([p]), getattr(torch.optim, name))
