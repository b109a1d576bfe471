"""The classes of the template-generated optimizers against their peers: torch.optim's
Adagrad, Adamax, RAdam, Adadelta, Rprop (single-tensor path, foreach=False) and
lion-pytorch's Lion.  Same model, same gradients, two param groups: params and every
state buffer within float64 normwise relative error 1e-12 after 50 steps (float32:
1e-5), the step counts equal; None grads; state dicts both ways; signatures, group keys
and refused values as the peer's.  Convergence on the quadratic bowl and Rosenbrock.
Bad input through the class: TypeError/ValueError, nothing changed."""

import copy
import inspect

import numpy as np
import pytest

from fastoptim import functional as F
from fastoptim._backend import kernels
from fastoptim.quantized import template_maps
from fastoptim.optim import (ASGD, Adadelta, Adagrad, Adamax, AdamWScheduleFree, Lion, NAdam,
                             RAdam, Rprop)

SHAPES = [(4, 3), (5,), (2, 3)]
CONFIGS = [
    (Adagrad, dict(lr=0.1)),
    (Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3,
                   eps=1e-6, maximize=True)),
    (Lion, dict(lr=0.01)),
    (Lion, dict(lr=0.01, betas=(0.5, 0.8), weight_decay=0.5)),
    (Lion, dict(lr=0.01, weight_decay=0.5, decoupled_weight_decay=True)),
    (Adamax, dict(lr=0.01)),
    (Adamax, dict(lr=0.01, betas=(0.2, 0.5), weight_decay=0.1, maximize=True)),
    (RAdam, dict(lr=0.01)),
    (RAdam, dict(lr=0.01, betas=(0.3, 0.9), weight_decay=0.1)),
    (RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    (Adadelta, dict(lr=1.0)),
    (Adadelta, dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.1, maximize=True)),
    (Rprop, dict(lr=0.01)),
    (Rprop, dict(lr=0.02, etas=(0.3, 1.7), step_sizes=(1e-3, 0.05), maximize=True)),
    (NAdam, dict(lr=0.01)),
    (NAdam, dict(lr=0.01, betas=(0.3, 0.9), weight_decay=0.1, momentum_decay=0.3)),
    (NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    (ASGD, dict(lr=0.01)),
    (ASGD, dict(lr=0.05, lambd=0.1, alpha=0.5, t0=3, weight_decay=0.1, maximize=True)),
    (AdamWScheduleFree, dict(lr=0.01)),
    (AdamWScheduleFree, dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1, warmup_steps=10,
                             r=0.5, weight_lr_power=1.0)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CONFIGS]
CLASSES = [Adagrad, Lion, Adamax, RAdam, Adadelta, Rprop, NAdam, ASGD, AdamWScheduleFree]


def peer(cls):
    """The peer class, and the extra keywords that pick its single-tensor path."""
    if cls is Lion:
        return pytest.importorskip("lion_pytorch").Lion, {}
    if cls is AdamWScheduleFree:
        return pytest.importorskip("schedulefree").AdamWScheduleFree, {"foreach": False}
    torch = pytest.importorskip("torch")
    return getattr(torch.optim, cls.__name__), {"foreach": False}


def make(cls, params, **kw):
    """An optimizer ready to step (Schedule-Free's in train mode)."""
    opt = cls(params, **kw)
    if cls is AdamWScheduleFree:
        opt.train()
    return opt


def tol(dtype):
    return 1e-12 if dtype == np.float64 else 1e-5


def rel_err(a, b):
    scale = np.linalg.norm(b)
    return np.linalg.norm(a - b) / (scale if scale else 1.0)


class Pair:
    """The same model under fastoptim and the peer, two param groups (the second at half
    the learning rate), or one (the classes' armed step)."""

    def __init__(self, cls, kw, dtype, rng, one_group=False):
        self.torch = pytest.importorskip("torch")
        self.cls, self.rng, self.dtype = cls, rng, dtype
        self.params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.tparams = [self.torch.tensor(p.copy(), requires_grad=True) for p in self.params]
        groups = lambda ps: ([dict(params=ps)] if one_group else
                             [dict(params=ps[:2]), dict(params=ps[2:], lr=kw["lr"] / 2)])
        tcls, extra = peer(cls)
        self.opt = make(cls, groups(self.params), **kw)
        self.topt = tcls(groups(self.tparams), **kw, **extra)
        if cls is AdamWScheduleFree:
            self.topt.train()

    def step(self, n, which="both", mask=(1, 1, 1)):
        for _ in range(n):
            g = [self.rng.standard_normal(s).astype(self.dtype) if m else None
                 for s, m in zip(SHAPES, mask)]
            if which in ("both", "fastoptim"):
                self.opt.step(g)
            if which in ("both", "torch"):
                for tp, x in zip(self.tparams, g):
                    tp.grad = None if x is None else self.torch.tensor(x)
                self.topt.step()

    def assert_close(self):
        for i, (p, tp) in enumerate(zip(self.params, self.tparams)):
            assert rel_err(p, tp.detach().numpy()) <= tol(self.dtype), i
            tstate = self.topt.state.get(tp, {})
            st = self.opt.state.get(i, {})
            for name, value in tstate.items():
                if name == "step":  # lion-pytorch and schedulefree keep none (a loaded
                    # one stays put)
                    assert self.cls in (Lion, AdamWScheduleFree) or st["step"] == int(value), i
                else:
                    assert rel_err(st[name], value.numpy()) <= tol(self.dtype), (i, name)
            assert bool(st) == bool(tstate), i

    def sync_params(self, to_torch):
        for p, tp in zip(self.params, self.tparams):
            if to_torch:
                with self.torch.no_grad():
                    tp.copy_(self.torch.from_numpy(p))
            else:
                p[...] = tp.detach().numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_fifty_steps_match_the_peer(cls, kw, dtype, rng):
    pair = Pair(cls, kw, dtype, rng)
    pair.step(50)
    pair.assert_close()


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_none_grads_skip_params_as_the_peer(cls, kw, rng):
    pair = Pair(cls, kw, np.float64, rng)
    for mask in [(1, 0, 1), (1, 1, 0), (0, 0, 0), (0, 1, 1), (1, 1, 1), (1, 0, 1)]:
        pair.step(1, mask=mask)
        pair.assert_close()


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_group_values_changed_mid_run_as_the_peer(cls, kw, rng):
    pair = Pair(cls, kw, np.float64, rng)
    pair.step(3)
    for g in pair.opt.param_groups + pair.topt.param_groups:
        g["lr"] = g["lr"] * 0.5
    pair.step(3)
    pair.assert_close()


# ----------------------------------------------------------------- state dicts
def numpy_state_dict(torch, sd):
    conv = lambda v: v.detach().numpy().copy() if torch.is_tensor(v) else v
    return {"state": {i: {k: conv(v) for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def torch_state_dict(torch, sd):
    conv = lambda v: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
    return {"state": {i: {k: conv(v) for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_peer_state_dict_loads_and_the_run_continues_as_the_peer(cls, kw, dtype, rng):
    pair = Pair(cls, kw, dtype, rng)
    pair.step(4, "torch", mask=(1, 1, 0))  # one param without state (Adagrad: step 0)
    pair.sync_params(to_torch=False)
    pair.opt.load_state_dict(numpy_state_dict(pair.torch, pair.topt.state_dict()))
    for g, tg in zip(pair.opt.param_groups, pair.topt.param_groups):
        assert {k: v for k, v in g.items() if k != "params"} == \
            {k: v for k, v in tg.items() if k != "params"}
    pair.step(4)
    pair.assert_close()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_fastoptim_state_dict_loads_into_the_peer(cls, kw, dtype, rng):
    pair = Pair(cls, kw, dtype, rng)
    pair.step(4, "fastoptim", mask=(1, 1, 0))
    pair.sync_params(to_torch=True)
    pair.topt.load_state_dict(torch_state_dict(pair.torch, pair.opt.state_dict()))
    pair.step(4)
    pair.assert_close()


@pytest.mark.parametrize("cls", CLASSES)
def test_own_state_dict_resumes_exactly(cls, rng):
    kw = next(k for c, k in CONFIGS[::-1] if c is cls)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(6)]
    whole = make(cls, [p.copy() for p in params], **kw)
    wp = [g["params"] for g in whole.param_groups][0]
    for g in grads:
        whole.step(g)
    first = make(cls, [p.copy() for p in params], **kw)
    fp = first.param_groups[0]["params"]
    for g in grads[:3]:
        first.step(g)
    resumed = cls([p.copy() for p in fp], **kw)
    resumed.load_state_dict(first.state_dict())
    for g in grads[3:]:
        resumed.step(g)
    for a, b in zip(resumed.param_groups[0]["params"], wp):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------- signatures, groups, values
@pytest.mark.parametrize("cls", CLASSES)
def test_signature_is_the_peers_plus_fastoptim_keywords(cls):
    tcls, _ = peer(cls)
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(tcls).parameters
    assert list(ours)[:len(theirs)] == list(theirs)
    eight_bit = template_maps(kernels, cls._KERNEL) is not None  # they take min_8bit_size
    assert list(ours)[len(theirs):] == ["nonfinite", "n_threads", "state_dtype",
                                        "master_weights", "rounding", "seed"] + (
        ["min_8bit_size"] if eight_bit else [])
    for name, param in theirs.items():
        assert ours[name].kind == param.kind, name
        assert ours[name].default == param.default, name


@pytest.mark.parametrize("cls", CLASSES)
def test_param_group_keys_and_defaults_are_the_peers(cls):
    torch = pytest.importorskip("torch")
    tcls, _ = peer(cls)
    opt = cls([np.zeros(3, np.float32)])
    topt = tcls([torch.zeros(3, requires_grad=True)])
    ours = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    theirs = {k: v for k, v in topt.param_groups[0].items() if k != "params"}
    assert ours == theirs
    assert opt.defaults == topt.defaults


REFUSED = [
    (Adagrad, dict(lr=-1.0)), (Adagrad, dict(lr_decay=-0.1)), (Adagrad, dict(weight_decay=-1)),
    (Adagrad, dict(initial_accumulator_value=-0.5)), (Adagrad, dict(eps=-1e-10)),
    (Adamax, dict(lr=-1.0)), (Adamax, dict(eps=-1.0)), (Adamax, dict(betas=(1.0, 0.9))),
    (Adamax, dict(betas=(0.9, -0.1))), (Adamax, dict(weight_decay=-1.0)),
    (RAdam, dict(lr=-1.0)), (RAdam, dict(betas=(0.9, 1.0))), (RAdam, dict(weight_decay=-1)),
    (Adadelta, dict(rho=1.5)), (Adadelta, dict(rho=-0.1)), (Adadelta, dict(eps=-1.0)),
    (Adadelta, dict(lr=-0.5)), (Adadelta, dict(weight_decay=-0.5)),
    (Rprop, dict(lr=-1.0)), (Rprop, dict(etas=(0.0, 1.2))), (Rprop, dict(etas=(0.5, 1.0))),
    (Rprop, dict(etas=(1.5, 2.0))),
    (Adagrad, dict(fused=True, foreach=True)),
    (NAdam, dict(lr=-1.0)), (NAdam, dict(betas=(0.9, 1.0))), (NAdam, dict(weight_decay=-1)),
    (NAdam, dict(momentum_decay=-0.1)), (NAdam, dict(eps=-1.0)),
    (ASGD, dict(lr=-1.0)), (ASGD, dict(weight_decay=-0.1)),
]


@pytest.mark.parametrize("cls,kw", REFUSED, ids=[f"{c.__name__}-{kw}" for c, kw in REFUSED])
def test_values_torch_refuses_are_refused_with_its_message(cls, kw):
    torch = pytest.importorskip("torch")
    with pytest.raises((ValueError, RuntimeError)) as theirs:
        getattr(torch.optim, cls.__name__)([torch.zeros(2, requires_grad=True)], **kw)
    with pytest.raises(ValueError) as ours:
        cls([np.zeros(2)], **kw)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("kw", [dict(lr=0.0), dict(lr=-1e-3), dict(betas=(1.5, 0.9)),
                                dict(betas=(0.9, -0.1))])
def test_lion_refuses_what_lion_pytorch_asserts_against(kw):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    torch = pytest.importorskip("torch")
    with pytest.raises(AssertionError):
        lion_pytorch.Lion([torch.zeros(2, requires_grad=True)], **kw)
    with pytest.raises(ValueError):
        Lion([np.zeros(2)], **kw)


@pytest.mark.parametrize("cls", [Adagrad, Adamax, RAdam, Adadelta, Rprop, NAdam, ASGD])
def test_differentiable_is_refused_and_switches_are_no_ops(cls, rng):
    with pytest.raises(ValueError, match="differentiable"):
        cls([np.zeros(2)], differentiable=True)
    flags = {k: True for k in cls._TORCH_FLAGS if k != "differentiable" and k != "fused"}
    p, q = rng.standard_normal(5), None
    q = p.copy()
    a, b = cls([p], **flags), cls([q])
    for _ in range(3):
        g = rng.standard_normal(5)
        a.step([g])
        b.step([g])
    np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("cls,kw", [(NAdam, dict(lr=0.01)), (ASGD, dict(lr=0.05, t0=2))])
def test_per_param_scalar_state_is_torchs_and_splits_kernel_calls(cls, kw, rng):
    # Params whose scalar state differs (loaded, or set by hand) step with their own.
    pair = Pair(cls, kw, np.float64, rng)
    pair.step(3)
    name = cls._SCALAR_STATE[0]
    tstate = pair.topt.state[pair.tparams[1]]
    tstate[name] = tstate[name] * 0.5
    pair.opt.state[1][name] = float(tstate[name])
    pair.step(3)
    pair.assert_close()
    for bad, exc in (("x", TypeError), (float("nan"), ValueError), (None, ValueError)):
        before = [p.copy() for p in pair.params]
        pair.opt.state[1][name] = bad
        with pytest.raises(exc, match=name if bad is not None else "entry"):
            pair.opt.step([np.ones(s) for s in SHAPES])
        for p, q in zip(pair.params, before):
            np.testing.assert_array_equal(p, q)
    pair.opt.state[1][name] = float(tstate[name])
    sd = pair.opt.state_dict()
    sd["state"][0][name] = "x"
    with pytest.raises(TypeError, match=name):
        pair.opt.load_state_dict(sd)


# ------------------------------------------------------------- Schedule-Free
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_schedule_free_train_eval_switches_as_schedulefree(dtype, rng):
    kw = dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.05, warmup_steps=5)
    pair = Pair(AdamWScheduleFree, kw, dtype, rng)
    for rounds in range(3):
        pair.step(7)
        pair.opt.eval()
        pair.topt.eval()
        pair.assert_close()  # x, the averaged weights
        for g, tg in zip(pair.opt.param_groups, pair.topt.param_groups):
            assert {k: v for k, v in g.items() if k not in ("params", "foreach")} == \
                {k: v for k, v in tg.items() if k not in ("params", "foreach")}
        pair.opt.eval()  # twice: no-op, as schedulefree's
        pair.topt.eval()
        pair.opt.train()
        pair.topt.train()
        pair.assert_close()  # back to y


def test_schedule_free_step_in_eval_mode_is_refused_and_changes_nothing(rng):
    params = [rng.standard_normal(s) for s in SHAPES]
    opt = make(AdamWScheduleFree, params, lr=0.01)
    opt.step([rng.standard_normal(s) for s in SHAPES])
    opt.eval()
    before = [p.copy() for p in params], dict(opt.param_groups[0])
    with pytest.raises(ValueError, match="train mode"):
        opt.step([rng.standard_normal(s) for s in SHAPES])
    for p, q in zip(params, before[0]):
        np.testing.assert_array_equal(p, q)
    assert opt.param_groups[0]["k"] == before[1]["k"] == 1
    opt.train()
    with pytest.raises(TypeError):  # a refused step does not advance the schedule
        opt.step([None, None, "x"])
    assert opt.param_groups[0]["k"] == 1


def _snapshot(opt, params):
    return ([p.copy() for p in params],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
             for i, st in opt.state.items()},
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])


def _assert_unchanged(opt, params, before):
    for p, q in zip(params, before[0]):
        np.testing.assert_array_equal(p, q)
    assert opt.state.keys() == before[1].keys()
    for i, st in opt.state.items():
        assert st.keys() == before[1][i].keys()
        for k, v in st.items():
            np.testing.assert_array_equal(v, before[1][i][k])
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == \
        before[2]


@pytest.mark.parametrize("key,bad,exc", [
    ("k", -1, ValueError), ("k", "x", ValueError), ("k", None, ValueError),
    ("weight_sum", float("nan"), ValueError), ("weight_sum", -1.0, ValueError),
    ("lr_max", "x", TypeError), ("scheduled_lr", "x", TypeError)])
def test_schedule_free_checks_its_schedule_at_every_step(key, bad, exc, rng):
    # One group, one param: the steps after the first run the single armed kernel call,
    # which must still see a schedule value set by hand (None: the key deleted).
    params = [rng.standard_normal(5)]
    opt = make(AdamWScheduleFree, params, lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal(5)])
    good = opt.param_groups[0][key]
    if bad is None:
        del opt.param_groups[0][key]
    else:
        opt.param_groups[0][key] = bad
    before = _snapshot(opt, params)
    with pytest.raises(exc, match=key):
        opt.step([rng.standard_normal(5)])
    _assert_unchanged(opt, params, before)
    opt.param_groups[0][key] = good
    assert opt.step([rng.standard_normal(5)]) and opt.param_groups[0]["k"] == 4


def test_schedule_free_takes_a_numpy_int_k_as_schedulefree(rng):
    runs = []
    for k in (3, np.int64(3)):
        params = [np.linspace(-1, 1, 5)]
        opt = make(AdamWScheduleFree, params, lr=0.01, warmup_steps=5)
        opt.param_groups[0]["k"] = k
        for step in range(3):
            opt.step([np.full(5, 0.5 + step)])
        runs.append((params[0], opt.param_groups[0]["k"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] == 6


def test_nadam_refuses_a_mu_product_that_reaches_1_and_changes_nothing(rng):
    params = [rng.standard_normal(5)]
    opt = NAdam(params, lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal(5)])
    opt.state[0]["mu_product"] = 5.0  # a real number: times this step's mu, >= 1
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match="mu_product"):
        opt.step([rng.standard_normal(5)])
    _assert_unchanged(opt, params, before)


def test_asgd_refuses_a_schedule_gone_nan_and_changes_nothing(rng):
    # lambd < 0: 1 + lambd * lr * t turns negative at t = 3, and its power 0.5 is NaN
    params = [rng.standard_normal(5)]
    opt = ASGD(params, lr=0.5, lambd=-1.0, alpha=0.5)
    for _ in range(3):
        opt.step([rng.standard_normal(5)])
    assert opt.state[0]["eta"] != opt.state[0]["eta"]
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match="eta"):
        opt.step([rng.standard_normal(5)])
    _assert_unchanged(opt, params, before)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("cls", CLASSES)
def test_bad_steps_are_refused_and_change_nothing(cls, rng):
    params = [rng.standard_normal(s) for s in SHAPES]
    opt = make(cls, params, lr=0.01)
    opt.step([rng.standard_normal(s) for s in SHAPES])
    before = ([p.copy() for p in params],
              {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
               for i, st in opt.state.items()})
    good = [rng.standard_normal(s) for s in SHAPES]
    bad = [
        (TypeError, good[:2] + [good[2].astype(np.float32)]),
        (ValueError, good[:2] + [good[2][:1]]),
        (ValueError, good[:2]),
        (TypeError, good[:2] + ["x"]),
        (TypeError, "grads"),
    ]
    for exc, grads in bad:
        with pytest.raises(exc):
            opt.step(grads)
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError):
        opt.step(good)
    for p, q in zip(params, before[0]):
        np.testing.assert_array_equal(p, q)
    for i, st in opt.state.items():
        for k, v in st.items():
            np.testing.assert_array_equal(v, before[1][i][k])


# ------------------------------------------------------------ the armed step
def _kernel_name(cls):
    return cls._KERNEL or "adamw_schedule_free"


@pytest.mark.parametrize("cls", CLASSES)
def test_one_kernel_call_per_group(cls, monkeypatch, rng):
    calls = []
    real = getattr(F.kernels, _kernel_name(cls))

    def spy(param, *args):
        calls.append(len(param))
        return real(param, *args)

    # the compiled entry itself: the class's step goes there directly
    monkeypatch.setattr(F.kernels, _kernel_name(cls), spy)
    groups = [dict(params=[rng.standard_normal(3) for _ in range(10)]),
              dict(params=[rng.standard_normal(2) for _ in range(3)], lr=0.005)]
    opt = make(cls, groups, lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal(p.shape) for g in groups for p in g["params"]])
    assert calls == [10, 3] * 3


@pytest.mark.parametrize("cls", CLASSES)
def test_armed_steps_are_one_kernel_call_and_no_checked_step(cls, monkeypatch, rng):
    # One group: once its state exists the step is the armed call alone.
    params = [rng.standard_normal(s) for s in SHAPES]
    opt = make(cls, params, lr=0.01)
    for _ in range(2):
        opt.step([rng.standard_normal(s) for s in SHAPES])
    calls, checked = [], []
    real = getattr(F.kernels, _kernel_name(cls))
    monkeypatch.setattr(F.kernels, _kernel_name(cls),
                        lambda param, *args: calls.append(len(param)) or real(param, *args))
    opt._plan = None  # re-planned with the spy; then armed
    opt.step([rng.standard_normal(s) for s in SHAPES])
    monkeypatch.setattr(opt, "_checked_step", lambda grads: checked.append(1))
    for _ in range(3):
        assert opt.step([rng.standard_normal(s) for s in SHAPES])
    assert calls == [3] * 4 and not checked


def _edits(cls):
    """(step index, edit(opt, params, saved)) applied alike to both runs: every change
    that must drop or re-arm the armed call."""
    name = cls._ALL_BUFFERS[0] if cls is not AdamWScheduleFree else "exp_avg_sq"
    def lr(opt, params, saved):
        opt.param_groups[0]["lr"] = opt.param_groups[0]["lr"] * 0.5
    def save(opt, params, saved):
        saved.append(opt.state_dict())
    def load(opt, params, saved):
        opt.load_state_dict(saved[-1])
    def replace_param(opt, params, saved):
        new = params[1].copy() * 0.5
        opt.param_groups[0]["params"][1] = params[1] = new
    def replace_buffer(opt, params, saved):
        opt.state[0][name] = np.abs(opt.state[0][name]) * 0.5
    def step_count(opt, params, saved):
        opt.state[2]["step"] = 7
    def values(opt, params, saved):
        g = opt.param_groups[0]
        if "weight_decay" in g:
            g["weight_decay"] = 0.05
        if "maximize" in g:
            g["maximize"] = not g["maximize"]
    return [(1, save), (2, lr), (3, replace_param), (4, replace_buffer), (5, step_count),
            (6, values), (7, load), (9, lr)]


@pytest.mark.parametrize("cls", CLASSES)
def test_edits_between_armed_steps_are_honoured_as_by_the_full_path(cls, rng):
    runs = []
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(14)]
    start = [rng.standard_normal(s) for s in SHAPES]
    for armed in (True, False):
        params = [p.copy() for p in start]
        opt = make(cls, params, lr=0.01)
        if not armed:  # every step plans and checks from scratch
            opt._armed_plan = lambda: None
        checked, full = [], opt._checked_step
        opt._checked_step = lambda grads: checked.append(1) or full(grads)
        saved, edits = [], dict(_edits(cls))
        for k, g in enumerate(grads):
            if k in edits:
                edits[k](opt, params, saved)
            assert opt.step([x.copy() for x in g])
        # armed: the steps after an edit re-plan, the others do not
        assert len(checked) <= len(grads) - 5 if armed else len(checked) == len(grads)
        opt.add_param_group(dict(params=[start[0] * 2]))
        params.append(opt.param_groups[1]["params"][0])
        for g in grads[:3]:
            opt.step([x.copy() for x in g] + [g[0].copy()])
        runs.append((params, opt.state_dict()))
    (pa, sa), (pb, sb) = runs
    for a, b in zip(pa, pb):
        np.testing.assert_array_equal(a, b)
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            np.testing.assert_array_equal(v, sb["state"][i][k])
    assert sa["param_groups"] == sb["param_groups"]


@pytest.mark.parametrize("cls", CLASSES)
def test_a_resized_param_or_refused_value_is_refused_by_the_armed_step(cls, rng):
    params = [rng.standard_normal(s) for s in SHAPES]
    opt = make(cls, params, lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal(s) for s in SHAPES])
    assert opt._plan.call is not None  # armed
    before = _snapshot(opt, params)
    good = params[1]
    opt.param_groups[0]["params"][1] = np.zeros(7)  # its state is still of shape (5,)
    with pytest.raises(ValueError):
        opt.step([rng.standard_normal(s) for s in SHAPES[:1]] + [np.zeros(7)]
                 + [rng.standard_normal(SHAPES[2])])
    opt.param_groups[0]["params"][1] = good
    _assert_unchanged(opt, params, before)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        opt.step([rng.standard_normal(s) for s in SHAPES])
    opt.param_groups[0]["lr"] = 0.01
    _assert_unchanged(opt, params, before)


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_one_group_edits_between_armed_steps_as_the_peer(cls, kw, rng):
    # One group: the armed path; lr edited, then each side loads its own earlier state
    pair = Pair(cls, kw, np.float64, rng, one_group=True)
    pair.step(2)
    saved = (pair.opt.state_dict(), copy.deepcopy(pair.topt.state_dict()),
             [p.copy() for p in pair.params])
    pair.step(2)
    for g in pair.opt.param_groups + pair.topt.param_groups:
        g["lr"] = g["lr"] * 0.5
    pair.step(2)
    pair.assert_close()
    pair.opt.load_state_dict(saved[0])
    pair.topt.load_state_dict(saved[1])
    for st in pair.topt.state.values():  # torch's load casts it to the param's dtype;
        if "mu_product" in st:  # it keeps float32 otherwise, as fastoptim always does
            st["mu_product"] = st["mu_product"].float()
    for p, q in zip(pair.params, saved[2]):
        p[...] = q
    pair.sync_params(to_torch=True)
    pair.step(3)
    pair.assert_close()


def _reference_options(cls, opt):
    """The class's group values as reference.<kind>_ takes them."""
    import fastoptim.reference as R
    g = dict(opt.param_groups[0])
    for pair, names in (("betas", ("beta1", "beta2")), ("etas", ("etaminus", "etaplus")),
                        ("step_sizes", ("step_size_min", "step_size_max"))):
        if pair in g:
            g.update(zip(names, g.pop(pair)))
    if cls is Lion and opt.decoupled_wd:
        g["weight_decay"] = g["weight_decay"] / opt.defaults["lr"]
    function = getattr(R, cls._KERNEL + "_")
    taken = inspect.signature(function).parameters
    return function, {k: v for k, v in g.items() if k in taken}, g


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", [c for c in CONFIGS if c[0] is not AdamWScheduleFree],
                         ids=[i for c, i in zip(CONFIGS, IDS) if c[0] is not AdamWScheduleFree])
def test_class_steps_equal_the_reference_bit_for_bit(cls, kw, dtype, rng):
    # One group, one param: the armed step (scalars computed once per plan where the
    # step does not enter them, NAdam's mu_t once per step) against the NumPy reference
    # called with each step's scalars computed here, as torch does.
    p = rng.standard_normal(100).astype(dtype)
    q = p.copy()
    opt = make(cls, [p], **kw)
    function, options, g = _reference_options(cls, opt)
    start = {"sum": g.get("initial_accumulator_value", 0), "step_size": g.get("lr")}
    buffers = [np.full_like(q, start.get(name) or 0) for name in cls._ALL_BUFFERS]
    f32 = np.float32
    mu_product, eta, mu = 1.0, float(f32(g.get("lr", 0))), 1.0
    for t in range(1, 12):
        grad = rng.standard_normal(100).astype(dtype)
        opt.step([grad])
        extra = {}
        if cls is NAdam:
            mu_t = g["beta1"] * (1.0 - 0.5 * 0.96 ** (t * g["momentum_decay"]))
            mu_product = float(f32(mu_product) * f32(mu_t))
            extra["mu_product"] = mu_product
        if cls is ASGD:
            extra.update(eta=eta, mu=mu)
            eta = float(f32(g["lr"] / (1 + g["lambd"] * g["lr"] * t) ** g["alpha"]))
            mu = float(f32(1 / max(1, t - g["t0"])))
        function(q, grad, *buffers, step=t, **options, **extra)
        np.testing.assert_array_equal(p, q, strict=True)
    for name, buf in zip(cls._ALL_BUFFERS, buffers):
        np.testing.assert_array_equal(opt.state[0][name], buf, strict=True)
    assert opt._plan.call is not None  # the steps ran armed



@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nadam_rounds_a_mu_product_set_by_hand_to_float32_first(dtype, rng):
    # The armed step multiplies the mu_product it stored last step as it is (float32
    # already); one set from outside is rounded to float32 first, as torch's 0-d float32
    # tensor holds it.  The value is picked so that rounding once or twice differ.
    import fastoptim.reference as R
    f32 = np.float32
    beta1, momentum_decay, step = 0.9, 4e-3, 4
    mu32 = f32(R.nadam_momentum(beta1, momentum_decay, step))
    by_hand = next(x for x in np.linspace(0.3, 0.4, 10_001)
                   if f32(x * float(mu32)) != f32(f32(x) * mu32))
    p = rng.standard_normal(50).astype(dtype)
    q = p.copy()
    opt = NAdam([p], lr=0.01)
    buffers = [np.zeros_like(q), np.zeros_like(q)]
    mu_product = 1.0
    for t in range(1, step):
        grad = rng.standard_normal(50).astype(dtype)
        opt.step([grad])
        mu_product = float(f32(mu_product) * f32(R.nadam_momentum(beta1, momentum_decay, t)))
        R.nadam_(q, grad, *buffers, step=t, mu_product=mu_product, lr=0.01)
    assert opt._plan.call is not None  # armed
    opt.state[0]["mu_product"] = by_hand
    grad = rng.standard_normal(50).astype(dtype)
    opt.step([grad])
    expected = float(f32(f32(by_hand) * mu32))
    assert opt.state[0]["mu_product"] == expected
    R.nadam_(q, grad, *buffers, step=step, mu_product=expected, lr=0.01)
    np.testing.assert_array_equal(p, q, strict=True)


@pytest.mark.parametrize("cls", CLASSES)
def test_torch_switches_added_between_armed_steps_are_checked(cls, rng):
    # The keys a class does not list (fused; Lion: all three; Schedule-Free: fused and
    # differentiable) are read with .get at each armed step: adding one that fastoptim
    # refuses is refused as a listed one (differentiable=True: the update cannot join an
    # autograd graph), changing nothing.
    params = [rng.standard_normal(5)]
    opt = make(cls, params, lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal(5)])
    assert opt._plan.call is not None  # armed
    g = opt.param_groups[0]
    before = _snapshot(opt, params)
    bool_or = (TypeError, ValueError)  # a listed key refuses 1 as not a bool
    edits = [(dict(fused=True, foreach=True), ValueError, "fused"),
             (dict(differentiable=True), ValueError, "Invalid differentiable: True"),
             (dict(differentiable=1), bool_or, "Invalid differentiable: 1"),
             (dict(fused=1, foreach=True), bool_or, "fused")]
    for edit, exc, match in edits:
        saved = {k: g[k] for k in edit if k in g}
        g.update(edit)
        with pytest.raises(exc, match=match):
            opt.step([rng.standard_normal(5)])
        for k in edit:
            if k in saved:
                g[k] = saved[k]
            else:
                del g[k]
        _assert_unchanged(opt, params, before)
    opt.step([rng.standard_normal(5)])
    assert opt.state[0]["step"] == 4 if cls is not AdamWScheduleFree else g["k"] == 4


@pytest.mark.parametrize("cls", [Lion, AdamWScheduleFree])
def test_differentiable_in_a_group_is_refused_without_the_keyword(cls, rng):
    # lion-pytorch's and schedulefree's constructors take no differentiable (TypeError
    # here too); a group that carries differentiable=True is refused as by every class
    # that lists it, before the first step and after one, changing nothing.
    with pytest.raises(TypeError, match="differentiable"):
        cls([np.zeros(2)], differentiable=False)
    with pytest.raises(ValueError, match="Invalid differentiable: True"):
        cls([dict(params=[np.zeros(2)], differentiable=True)], lr=0.01)
    params = [rng.standard_normal(5)]
    opt = make(cls, params, lr=0.01)
    for steps in (0, 1):
        for _ in range(steps):
            opt.step([rng.standard_normal(5)])
        opt.param_groups[0]["differentiable"] = True
        before = _snapshot(opt, params)
        with pytest.raises(ValueError, match="Invalid differentiable: True"):
            opt.step([rng.standard_normal(5)])
        _assert_unchanged(opt, params, before)
        opt.param_groups[0]["differentiable"] = False  # accepted, as by torch's classes
    opt.step([rng.standard_normal(5)])


# ----------------------------------------------------------------- convergence
def quadratic_grad(p, scales=np.array([1.0, 3.0, 10.0])):
    return (scales * p).astype(p.dtype)  # f = 0.5 * sum(scales * p^2), minimum at 0


def rosenbrock(p):
    x, y = float(p[0]), float(p[1])
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_grad(p):
    x, y = float(p[0]), float(p[1])
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], dtype=p.dtype)


# class: (quadratic options, Rosenbrock options, Rosenbrock steps)
RUNS = {
    Adagrad: (dict(lr=0.5), dict(lr=0.5), 20_000),
    Lion: (dict(lr=1e-3), dict(lr=3e-4), 20_000),
    Adamax: (dict(lr=0.05), dict(lr=0.02), 20_000),
    RAdam: (dict(lr=0.05), dict(lr=0.01), 20_000),
    Adadelta: (dict(lr=1.0), dict(lr=1.0), 20_000),
    Rprop: (dict(lr=0.01), dict(lr=0.01), 5_000),
    NAdam: (dict(lr=0.05), dict(lr=0.01), 20_000),
    ASGD: (dict(lr=0.05), dict(lr=1e-3), 20_000),
    AdamWScheduleFree: (dict(lr=0.05), dict(lr=0.01), 20_000),
}


def _minimize(cls, kw, grad_fn, p, steps):
    opt = make(cls, [p], **kw)
    for _ in range(steps):
        opt.step([grad_fn(p)])
    if cls is AdamWScheduleFree:
        opt.eval()  # the averaged weights x: what schedule-free converges
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_quadratic_bowl(cls, dtype):
    # From (2, -1.5, 1), 2000 steps: every coordinate within 1e-2 of the minimum
    # (Adadelta, whose unit-free steps circle the minimum: within 5e-2).
    p = _minimize(cls, RUNS[cls][0], quadratic_grad, np.array([2.0, -1.5, 1.0], dtype), 2000)
    assert np.abs(p).max() < (5e-2 if cls is Adadelta else 1e-2), p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_rosenbrock(cls, dtype):
    # From (-1.5, 2): within 2e-2 of the minimum (1, 1); Adadelta crawls along the
    # valley: its loss at most a tenth of the start's (12.5).
    _, kw, steps = RUNS[cls]
    p = _minimize(cls, kw, rosenbrock_grad, np.array([-1.5, 2.0], dtype), steps)
    if cls is Adadelta:
        assert rosenbrock(p) < rosenbrock(np.array([-1.5, 2.0])) / 10, p
    else:
        np.testing.assert_allclose(p, [1.0, 1.0], atol=2e-2)


def test_schedule_free_switch_checks_everything_before_moving_a_param(rng):
    params = [rng.standard_normal(s) for s in SHAPES]
    opt = make(AdamWScheduleFree, params, lr=0.01)
    opt.step([rng.standard_normal(s) for s in SHAPES])
    before = [p.copy() for p in params]
    opt.state[2]["z"] = opt.state[2]["z"].astype(np.float32)  # the last param's z is bad
    with pytest.raises(TypeError, match="z"):
        opt.eval()
    for p, q in zip(params, before):
        np.testing.assert_array_equal(p, q)
    assert opt.param_groups[0]["train_mode"] is True
    opt.state[2]["z"] = opt.state[2]["z"].astype(np.float64)
    opt.param_groups[0]["betas"] = (0.0, 0.999)
    with pytest.raises(ValueError, match="beta1"):
        opt.eval()
    for p, q in zip(params, before):
        np.testing.assert_array_equal(p, q)
