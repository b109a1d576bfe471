"""fastoptim.torch's template optimizers (Adagrad, Adadelta, Adamax, RAdam, NAdam, Rprop,
ASGD, Lion, AdamWScheduleFree) and Adafactor against their peers -- torch.optim's class of the same
name, ``lion_pytorch.Lion``, ``schedulefree.AdamWScheduleFree`` -- on real torch models:
the same training runs on both and are compared; state dicts both ways mid-run; torch's
schedulers; None grads; bad hyperparameters and bad tensors.

Tolerances (params and state after 100 steps, normwise relative error ||a - b|| / ||b||
over all params): float64 1e-12; float32 1e-5.  The peers' CPU kernels fuse some
multiply-adds (``add_(x, alpha=)``, ``addcmul_``, ``lerp_``) where fastoptim rounds each
operation, so a step can differ in the last bit (float32: 6e-8 relative), and through
training (the next gradient depends on the params) such differences are carried along
and add up over 100 steps; the largest seen in these runs are about 2e-16 (float64) and
3e-7 (float32), so the bounds leave a margin of ~30x in float32 yet still fail on any
error in the rule (a wrong coefficient moves the params by 1e-3 or more).
"""

import copy
import inspect
import numbers
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastoptim.torch as ft  # noqa: E402
import _torch_models  # noqa: E402
from _torch_models import assert_refused_step_changes_nothing, data, mlp  # noqa: E402  (data: inputs shaped for either net)

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]


def _peer(name):
    if name == "Lion":
        return pytest.importorskip("lion_pytorch").Lion
    if name == "AdamWScheduleFree":
        return pytest.importorskip("schedulefree").AdamWScheduleFree
    return getattr(torch.optim, name)


CONFIGS = [
    ("Adagrad", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1,
                     maximize=True)),
    ("Adadelta", dict(lr=0.5)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, maximize=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.01, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.01, weight_decay=0.01, maximize=True)),
    ("Rprop", dict(lr=0.01)),
    ("Rprop", dict(lr=0.01, etas=(0.4, 1.3), step_sizes=(1e-5, 1.0), maximize=True)),
    ("ASGD", dict(lr=0.05, t0=20)),
    ("ASGD", dict(lr=0.05, lambd=1e-3, alpha=0.5, t0=10, weight_decay=0.01, maximize=True)),
    ("Lion", dict(lr=1e-3)),
    ("Lion", dict(lr=1e-3, betas=(0.8, 0.95), weight_decay=0.1)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamWScheduleFree", dict(lr=0.01)),
    ("AdamWScheduleFree", dict(lr=0.01, betas=(0.8, 0.99), warmup_steps=10, r=0.5,
                               weight_decay=0.01)),
    ("Adafactor", dict(lr=0.01)),
    ("Adafactor", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("Adafactor", dict(lr=0.02, eps=(1e-3, 1e-2), d=2.0, beta2_decay=-0.6)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]
NAMES = sorted({n for n, _ in CONFIGS})


def convnet(dtype, seed=0):
    # one convolution (the shared _torch_models.convnet has two): these optimizers'
    # comparisons were set up on this smaller net
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(),
                               torch.nn.Flatten(), torch.nn.Linear(144, 2)).to(dtype)


MODELS = {"mlp": (mlp, _torch_models.MODELS["mlp"][1]),
          "convnet": (convnet, _torch_models.MODELS["convnet"][1])}


def make(module, name, params, kw):
    cls = getattr(ft, name) if module == "ft" else _peer(name)
    opt = cls(params, **kw)
    if hasattr(opt, "train"):  # schedule-free: train mode before stepping
        opt.train()
    return opt


def rel_err(got, want):
    a = torch.cat([t.detach().reshape(-1).double() for t in got])
    b = torch.cat([t.detach().reshape(-1).double() for t in want])
    return ((a - b).norm() / (b.norm() if b.norm() else 1.0)).item()


def peer_is_stable(name, kw, dtype=torch.float64, model="convnet", steps=100):
    """Does the peer's own training run stay within 1e-13 of itself when every initial
    param moves by one unit in the last place?  Where it does not (maximize=True makes
    the loss grow without bound, for example), independent runs of two libraries part by
    more than rounding whatever their rules, and are compared through the same
    gradients instead (test_100_training_steps_match_the_peer)."""
    X, Y = data(model, dtype)
    runs = []
    for nudge in (False, True):
        net = MODELS[model][0](dtype)
        if nudge:
            with torch.no_grad():
                for p in net.parameters():
                    p.copy_(torch.nextafter(p, torch.full_like(p, np.inf)))
        train(net, make("peer", name, net.parameters(), kw), X, Y, steps,
              kw.get("maximize", False))
        runs.append(list(net.parameters()))
    return rel_err(runs[1], runs[0]) <= 1e-13


def train(model, opt, X, Y, steps, maximize=False, sched=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        (-loss if maximize else loss).backward()
        opt.step()
        if sched is not None:
            sched.step()


def _same_layout(want_sd, got_sd):
    """The same state keys in the same order, dtypes and shapes; the same group values."""
    assert want_sd["param_groups"] == got_sd["param_groups"]
    assert want_sd["state"].keys() == got_sd["state"].keys()
    for k, st in want_sd["state"].items():
        assert list(st) == list(got_sd["state"][k])
        for key, t in st.items():
            assert got_sd["state"][k][key].dtype == t.dtype, key
            assert got_sd["state"][k][key].shape == t.shape, key


# ------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_100_training_steps_match_the_peer(model, dtype, name, kw):
    """A model trained 100 steps by the peer, and a copy of its params stepped by
    fastoptim.torch with the same gradients: params, every state tensor (buffers and
    per-param scalars such as NAdam's mu_product) and the group values agree; the state
    dicts have the same layout.  Schedule-free: also after eval() on both."""
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    params = list(net.parameters())
    shadow = [p.detach().clone().requires_grad_() for p in params]
    peer, ours = make("peer", name, params, kw), make("ft", name, shadow, kw)
    for _ in range(100):
        peer.zero_grad()
        loss = ((net(X) - Y) ** 2).mean()
        (-loss if kw.get("maximize") else loss).backward()
        for s, p in zip(shadow, params):
            s.grad = p.grad.clone()  # the schedule-free peer divides its grads in place
        peer.step()
        ours.step()
    assert rel_err(shadow, params) <= TOL[dtype]
    for s, p in zip(shadow, params):
        for key, t in peer.state[p].items():
            if key != "step":
                assert rel_err([ours.state[s][key]], [t]) <= TOL[dtype], key
            else:
                assert float(ours.state[s][key]) == float(t)
    _same_layout(peer.state_dict(), ours.state_dict())
    if hasattr(peer, "eval"):
        peer.eval()
        ours.eval()
        assert rel_err(shadow, params) <= TOL[dtype]
        _same_layout(peer.state_dict(), ours.state_dict())


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_independent_training_runs_match_the_peer(name, kw):
    """The conv net (a Conv2d and a Linear) trained 100 steps by each library on its
    own, float64: the trajectories stay within rounding."""
    dtype = torch.float64
    if not peer_is_stable(name, kw):
        pytest.skip("the peer's own run is chaotic at this scale (see peer_is_stable)")
    X, Y = data("convnet", dtype)
    results = []
    for module in ("peer", "ft"):
        net = convnet(dtype)
        opt = make(module, name, net.parameters(), kw)
        train(net, opt, X, Y, 100, kw.get("maximize", False))
        results.append((list(net.parameters()), opt.state_dict()))
    (want, want_sd), (got, got_sd) = results
    assert rel_err(got, want) <= TOL[dtype]
    _same_layout(want_sd, got_sd)


def test_the_comparison_can_fail():
    """A rule that differs slightly (lr off by 1e-6 relative) is caught by the bound."""
    dtype = torch.float64
    X, Y = data("convnet", dtype)
    nets = [convnet(dtype), convnet(dtype)]
    train(nets[0], torch.optim.NAdam(nets[0].parameters(), lr=0.01), X, Y, 100)
    train(nets[1], ft.NAdam(nets[1].parameters(), lr=0.01 * (1 + 1e-6)), X, Y, 100)
    assert rel_err(nets[1].parameters(), nets[0].parameters()) > TOL[dtype]


# ------------------------------------------------------------------ state dicts
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_state_dict_interchange_both_ways(name, kw):
    """peer -> fastoptim -> peer mid-run loses nothing (a run whose state went through
    the other library equals the uninterrupted run bit for bit), both ways; and
    continuing in the other library stays within rounding."""
    dtype = torch.float64
    X, Y = data("convnet", dtype)
    maximize = kw.get("maximize", False)
    for first, other in (("peer", "ft"), ("ft", "peer")):
        net = convnet(dtype)
        opt = make(first, name, net.parameters(), kw)
        train(net, opt, X, Y, 20, maximize)
        ref = convnet(dtype)
        ref.load_state_dict(net.state_dict())
        ref_opt = make(first, name, ref.parameters(), kw)
        ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        there = make(other, name, net.parameters(), {**kw, "lr": 0.5})
        there.load_state_dict(copy.deepcopy(opt.state_dict()))
        assert there.param_groups[0]["lr"] == kw["lr"]
        back = make(first, name, net.parameters(), kw)
        back.load_state_dict(copy.deepcopy(there.state_dict()))
        train(net, back, X, Y, 20, maximize)
        train(ref, ref_opt, X, Y, 20, maximize)
        for a, b in zip(net.parameters(), ref.parameters()):
            assert torch.equal(a, b)
        # continuing in the other library: the same gradients give the same steps
        params, shadow = list(net.parameters()), list(ref.parameters())
        cont = make(other, name, params, kw)
        cont.load_state_dict(copy.deepcopy(back.state_dict()))
        for _ in range(20):
            cont.zero_grad()
            loss = ((net(X) - Y) ** 2).mean()
            (-loss if maximize else loss).backward()
            for s, p in zip(shadow, params):
                s.grad = p.grad.clone()
            cont.step()
            ref_opt.step()
        assert rel_err(shadow, params) <= TOL[dtype]
        _same_layout(ref_opt.state_dict(), cont.state_dict())


def test_float32_state_dict_of_a_float64_model_continues_as_torch():
    """torch casts loaded scalar state (NAdam's mu_product, ASGD's eta and mu) to the
    param's dtype: fastoptim keeps and uses them so, as torch does after the load."""
    dtype = torch.float64
    X, Y = data("mlp", dtype)
    for name, kw in (("NAdam", dict(lr=0.01)), ("ASGD", dict(lr=0.05, t0=5))):
        net = mlp(dtype)
        warm = getattr(torch.optim, name)(net.parameters(), **kw)
        train(net, warm, X, Y, 10)
        params = list(net.parameters())
        shadow = [p.detach().clone().requires_grad_() for p in params]
        opts = [getattr(torch.optim, name)(params, **kw), getattr(ft, name)(shadow, **kw)]
        for opt in opts:
            opt.load_state_dict(copy.deepcopy(warm.state_dict()))
        st = opts[1].state[shadow[0]]
        assert all(st[k].dtype == dtype for k in ft_scalars(name))
        for _ in range(30):
            opts[0].zero_grad()
            ((net(X) - Y) ** 2).mean().backward()
            for s, p in zip(shadow, params):
                s.grad = p.grad.clone()
            for opt in opts:
                opt.step()
        assert rel_err(shadow, params) <= TOL[dtype]
        for k in ft_scalars(name):
            assert torch.equal(opts[1].state[shadow[0]][k], opts[0].state[params[0]][k]), k
        _same_layout(opts[0].state_dict(), opts[1].state_dict())


def ft_scalars(name):
    return getattr(ft, name)._SCALAR_STATE


# ------------------------------------------------------------------ schedulers
@pytest.mark.parametrize("make_sched", [
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=1e-4),
], ids=["StepLR", "CosineAnnealingLR"])
@pytest.mark.parametrize("name", NAMES)
def test_torch_schedulers_drive_it_unchanged(make_sched, name):
    """Under torch's scheduler: the same learning rates (==), the same group values, the
    params within rounding (the fastoptim copy stepped with the peer's gradients)."""
    dtype = torch.float64
    X, Y = data("convnet", dtype)
    net = convnet(dtype)
    params = list(net.parameters())
    shadow = [p.detach().clone().requires_grad_() for p in params]
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    peer, ours = make("peer", name, params, kw), make("ft", name, shadow, kw)
    psched, osched = make_sched(peer), make_sched(ours)
    lrs = set()
    for _ in range(60):
        peer.zero_grad()
        ((net(X) - Y) ** 2).mean().backward()
        for s, p in zip(shadow, params):
            s.grad = p.grad.clone()
        peer.step()
        ours.step()
        psched.step()
        osched.step()
        assert osched.get_last_lr() == psched.get_last_lr()
        lrs.add(ours.param_groups[0]["lr"])
    assert len(lrs) > 5  # the schedule did move the lr
    assert {k: v for k, v in ours.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in peer.param_groups[0].items() if k != "params"}
    assert rel_err(shadow, params) <= TOL[dtype]


# ------------------------------------------------------------------ None grads
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_params_without_grad_are_skipped_as_the_peer_does(name, kw):
    """Param 0 never has a grad, param 1 every other step (so its step count and scalar
    state fall behind the others': separate kernel calls)."""
    dtype = torch.float64
    nets = [mlp(dtype), mlp(dtype)]
    opts = [make(m, name, n.parameters(), kw) for m, n in zip(("peer", "ft"), nets)]
    g = torch.Generator().manual_seed(3)
    for step in range(12):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in nets[0].parameters()]
        for net, opt in zip(nets, opts):
            for j, (p, gr) in enumerate(zip(net.parameters(), grads)):
                p.grad = None if j == 0 or (j == 1 and step % 2) else gr.clone()
            opt.step()
    (pnet, fnet), (popt, fopt) = nets, opts
    assert rel_err(fnet.parameters(), pnet.parameters()) <= TOL[dtype]
    assert torch.equal(next(fnet.parameters()), next(mlp(dtype).parameters()))
    _same_layout(popt.state_dict(), fopt.state_dict())
    p1 = list(fnet.parameters())[1]
    for key, t in popt.state[list(pnet.parameters())[1]].items():
        assert torch.equal(fopt.state[p1][key], t) if key in ("step", "mu_product", "mu") \
            else rel_err([fopt.state[p1][key]], [t]) <= TOL[dtype], key


# ------------------------------------------------------------------ bad hyperparameters
BAD = [
    ("Adagrad", dict(lr=-1.0)), ("Adagrad", dict(lr_decay=-0.1)),
    ("Adagrad", dict(weight_decay=-0.1)), ("Adagrad", dict(initial_accumulator_value=-1.0)),
    ("Adagrad", dict(eps=-1.0)), ("Adagrad", dict(foreach=True, fused=True)),
    ("Adadelta", dict(lr=-1.0)), ("Adadelta", dict(rho=1.5)), ("Adadelta", dict(eps=-1.0)),
    ("Adadelta", dict(weight_decay=-0.1)),
    ("Adamax", dict(lr=-1.0)), ("Adamax", dict(betas=(1.0, 0.999))),
    ("Adamax", dict(betas=(0.9, 1.0))), ("Adamax", dict(eps=-1.0)),
    ("Adamax", dict(weight_decay=-0.1)),
    ("RAdam", dict(lr=-1.0)), ("RAdam", dict(betas=(-0.1, 0.999))), ("RAdam", dict(eps=-1.0)),
    ("RAdam", dict(weight_decay=-0.1)),
    ("NAdam", dict(lr=-1.0)), ("NAdam", dict(betas=(0.9, 1.5))), ("NAdam", dict(eps=-1.0)),
    ("NAdam", dict(weight_decay=-0.1)), ("NAdam", dict(momentum_decay=-0.1)),
    ("Rprop", dict(lr=-1.0)), ("Rprop", dict(etas=(1.5, 1.2))), ("Rprop", dict(etas=(0.5, 0.9))),
    ("ASGD", dict(lr=-1.0)), ("ASGD", dict(weight_decay=-0.1)),
    ("Lion", dict(lr=0.0)), ("Lion", dict(lr=-1.0)), ("Lion", dict(betas=(1.5, 0.99))),
    ("Lion", dict(betas=(0.9, -0.5))),
    ("Adafactor", dict(lr=-1.0)), ("Adafactor", dict(beta2_decay=0.1)),
    ("Adafactor", dict(eps=(-1.0, 1e-3))), ("Adafactor", dict(eps=(None, -1.0))),
    ("Adafactor", dict(d=0.5)), ("Adafactor", dict(weight_decay=-0.1)),
]


@pytest.mark.parametrize("name,kw", BAD, ids=[f"{n}-{kw}" for n, kw in BAD])
def test_bad_hyperparameters_are_refused_as_the_peer_does(name, kw):
    """What the peer refuses (ValueError; lion-pytorch: AssertionError) is a ValueError
    here, naming the value."""
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises((ValueError, AssertionError, RuntimeError)):
        _peer(name)([p], **kw)
    with pytest.raises(ValueError):
        getattr(ft, name)([p], **kw)


GOOD = [("Adagrad", dict(lr=0.0, eps=0.0)), ("Adadelta", dict(rho=1.0)),
        ("Adamax", dict(betas=(0.0, 0.0))), ("Rprop", dict(etas=(0.1, 10.0))),
        ("ASGD", dict(lambd=-1.0, alpha=-2.0, t0=-5.0)), ("Lion", dict(betas=(1.0, 1.0))),
        ("NAdam", dict(momentum_decay=0.0)), ("RAdam", dict(lr=torch.tensor(0.01))),
        ("Adafactor", dict(lr=0.0, beta2_decay=0.0, eps=(0.0, 0.0), d=1.0))]


@pytest.mark.parametrize("name,kw", GOOD, ids=[f"{n}-{kw}" for n, kw in GOOD])
def test_edge_hyperparameters_the_peer_accepts_are_accepted(name, kw):
    p = torch.zeros(3, requires_grad=True)
    _peer(name)([p], **kw)
    opt = getattr(ft, name)([p], **kw)
    p.grad = torch.ones(3)
    opt.step()


@pytest.mark.parametrize("name", ["NAdam", "ASGD", "AdamWScheduleFree"])
@pytest.mark.parametrize("spoil", ["group value", "scalar state", "second grad"])
def test_a_refused_step_changes_nothing(name, spoil):
    """Two groups; whichever check fails, no param, buffer, scalar, step count or group
    value (the schedule-free schedule) has moved."""
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    opt = make("ft", name, [{"params": [a]}, {"params": [b], "lr": 0.005}], kw)
    for _ in range(2):
        a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
        opt.step()
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
    if spoil == "group value":
        opt.param_groups[1]["eps" if name != "ASGD" else "lambd"] = float("nan")
    elif spoil == "scalar state":
        if name == "AdamWScheduleFree":
            opt.param_groups[1]["k"] = -1
        else:
            opt.state[b][ft_scalars(name)[0]] = torch.zeros(2)
    else:
        b.grad = torch.zeros(10)[::2]
    snap = copy.deepcopy((opt.state_dict(), [a.detach(), b.detach()]))
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    sd, params = opt.state_dict(), [a.detach(), b.detach()]
    assert all(torch.equal(x, y) for x, y in zip(params, snap[1]))
    for k, st in snap[0]["state"].items():
        for key, t in st.items():
            assert torch.equal(sd["state"][k][key], t), key
    for g, h in zip(sd["param_groups"], snap[0]["param_groups"]):
        assert g.keys() == h.keys()
        assert all(g[k] == h[k] or g[k] != g[k] for k in g)


def _group_number_keys():
    """(class name, group key, index or None) for every number (or pair element) a class
    reads from its param groups at each step."""
    # read only when state is created, as torch does
    not_per_step = {("Adagrad", "initial_accumulator_value"), ("Rprop", "lr"),
                    ("AdamWScheduleFree", "scheduled_lr")}
    cases = []
    for name in ft.__all__:
        defaults = getattr(ft, name)([torch.zeros(4, 3, requires_grad=True)]).defaults
        for key, value in defaults.items():
            if isinstance(value, bool) or (name, key) in not_per_step:
                continue
            if isinstance(value, numbers.Real):
                cases.append((name, key, None))
            elif isinstance(value, tuple):
                cases += [(name, key, i) for i, v in enumerate(value) if v is not None]
    return cases


GROUP_NUMBERS = _group_number_keys()


@pytest.mark.parametrize("name,key,index", GROUP_NUMBERS,
                         ids=[f"{n}-{k}" + ("" if i is None else f"[{i}]")
                              for n, k, i in GROUP_NUMBERS])
def test_a_tensor_of_two_numbers_in_a_group_is_refused_naming_its_key(name, key, index):
    """torch fails on it with "Boolean value of Tensor ... is ambiguous" (or takes it);
    here the error names the group value, and the step changes nothing."""
    torch.manual_seed(0)
    p = torch.randn(4, 3, requires_grad=True)
    opt = make("ft", name, [p], {})
    p.grad = torch.randn(4, 3)
    opt.step()
    group = opt.param_groups[0]
    two = torch.tensor([0.5, 0.25])
    group[key] = two if index is None else tuple(
        two if i == index else v for i, v in enumerate(group[key]))
    label = key if index is None else f"{key}[{index}]"
    before = (p.detach().clone(), copy.deepcopy(opt.state[p]))
    with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(label)} must "):
        opt.step()
    assert torch.equal(p.detach(), before[0])
    assert list(opt.state[p]) == list(before[1])
    for k, v in before[1].items():
        assert torch.equal(opt.state[p][k], v) if isinstance(v, torch.Tensor) else (
            opt.state[p][k] == v), k


# ------------------------------------------------------------------ bad tensors
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spoil,error,match", [
    (lambda opt, p: setattr(p, "grad", torch.zeros(3, 4).t()), ValueError, "memory order"),
    (lambda opt, p: setattr(p, "grad", torch.zeros(8, 3)[::2]), ValueError, "contiguous"),
    (lambda opt, p: _set_grad_dtype(p), TypeError, "dtype"),
    (lambda opt, p: setattr(p, "grad", torch.zeros(4, 3).to_sparse()), TypeError, "sparse"),
    (lambda opt, p: opt.state[p].__setitem__(_first_buffer(opt), torch.zeros(12)), ValueError,
     "shape"),
    (lambda opt, p: opt.state[p].__setitem__(_first_buffer(opt),
                                             torch.zeros(_buffer_shape(opt, p),
                                                         dtype=torch.float64)),
     TypeError, "dtype"),
    (lambda opt, p: opt.state[p].__setitem__(_first_buffer(opt), _strided(_buffer_shape(opt, p))),
     ValueError, "contiguous"),
], ids=["grad-order", "grad-strided", "grad-dtype", "grad-sparse", "buffer-shape",
        "buffer-dtype", "buffer-strided"])
def test_bad_tensors_are_refused_and_nothing_changes(name, spoil, error, match):
    torch.manual_seed(0)
    a, b = torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    opt = make("ft", name, [a, b], kw)
    for _ in range(2):
        a.grad, b.grad = torch.randn(4, 3), torch.randn(5)
        opt.step()
    b.grad = torch.randn(5)
    spoil(opt, a)
    assert_refused_step_changes_nothing(opt, [a, b], error, match)


def _set_grad_dtype(p):
    p.grad_dtype = None  # torch refuses a float64 grad for a float32 param unless told to
    p.grad = torch.zeros(4, 3, dtype=torch.float64)


def _first_buffer(opt):
    return opt._BUFFERS[0][0]


def _buffer_shape(opt, p):
    return opt._buffer_shape(p, _first_buffer(opt))  # Adafactor's row_var: (4, 1)


def _strided(shape):
    """A tensor of this shape that is neither C- nor F-contiguous."""
    return torch.zeros(*shape[:-1], 2 * shape[-1])[..., ::2]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make_param,error,match", [
    (lambda: torch.zeros(4, 4).t().requires_grad_()[::2], ValueError, "contiguous"),
    (lambda: torch.zeros(3, dtype=torch.int64), TypeError, "int64"),
    (lambda: torch.zeros(3, dtype=torch.complex64, requires_grad=True), TypeError, "complex"),
    (lambda: torch.zeros(3, requires_grad=True) * 2, ValueError, "non-leaf"),
])
def test_bad_params_are_refused_clearly(name, make_param, error, match):
    with pytest.raises(error, match=match):
        getattr(ft, name)([make_param()])


# ------------------------------------------------------------------ API shape
@pytest.mark.parametrize("name", NAMES)
def test_constructor_signature_defaults_and_type_are_the_peers(name):
    peer = _peer(name)
    ours = inspect.signature(getattr(ft, name)).parameters.values()
    theirs = inspect.signature(peer).parameters.values()
    assert [(p.name, p.kind, p.default) for p in ours] == \
        [(p.name, p.kind, p.default) for p in theirs]
    p = torch.zeros(2, requires_grad=True)
    assert getattr(ft, name)([p]).defaults == peer([p]).defaults
    assert isinstance(getattr(ft, name)([p]), peer if peer.__module__.startswith("torch.")
                      else torch.optim.Optimizer)
    assert name in ft.__all__


def test_adagrad_state_is_made_in_the_constructor_as_torchs():
    nets = [mlp(torch.float32), mlp(torch.float32)]
    kw = dict(initial_accumulator_value=0.25)
    sds = [torch.optim.Adagrad(nets[0].parameters(), **kw).state_dict(),
           ft.Adagrad(nets[1].parameters(), **kw).state_dict()]
    _same_layout(*sds)
    assert all(torch.equal(sds[0]["state"][k]["sum"], sds[1]["state"][k]["sum"])
               for k in sds[0]["state"])


def test_schedule_free_step_in_eval_mode_is_refused_and_switches_match():
    schedulefree = pytest.importorskip("schedulefree")
    dtype = torch.float64
    X, Y = data("mlp", dtype)
    nets = [mlp(dtype), mlp(dtype)]
    opts = [schedulefree.AdamWScheduleFree(nets[0].parameters(), lr=0.01),
            ft.AdamWScheduleFree(nets[1].parameters(), lr=0.01)]
    p = next(nets[1].parameters())
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="train mode"):
        opts[1].step()
    assert opts[1].param_groups[0]["k"] == 0 and not opts[1].state
    for net, opt in zip(nets, opts):
        opt.train()
        train(net, opt, X, Y, 10)
        opt.eval()
        opt.eval()  # a second eval() changes nothing, as schedulefree's
    assert rel_err(nets[1].parameters(), nets[0].parameters()) <= TOL[dtype]
    for net, opt in zip(nets, opts):
        opt.train()
        train(net, opt, X, Y, 10)
    assert rel_err(nets[1].parameters(), nets[0].parameters()) <= TOL[dtype]
    assert opts[1].param_groups[0]["k"] == opts[0].param_groups[0]["k"] == 20


def test_lion_keeps_its_decoupled_decay_through_pickle():
    import pickle
    dtype = torch.float64
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    opt = ft.Lion(net.parameters(), lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)
    train(net, opt, X, Y, 3)
    net2, opt2 = pickle.loads(pickle.dumps((net, opt)))
    assert opt2.decoupled_wd is True and opt2._init_lr == 1e-3
    train(net, opt, X, Y, 3)
    train(net2, opt2, X, Y, 3)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))
