"""Optimizer classes: trajectories vs the functional API and torch.optim, validation, guard."""

import numpy as np

import fastoptim
import pytest

from fastoptim import functional as F
from fastoptim.optim import SGD, Adam, AdamW, Momentum, Optimizer, RMSprop

# (class, constructor kwargs): every option of every optimizer appears at least once.
CONFIGS = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    (Momentum, dict(lr=0.05)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1)),
    (RMSprop, dict(lr=0.01, momentum=0.9, maximize=True)),
    (RMSprop, dict(lr=0.01, centered=True, eps=1e-6)),
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    (AdamW, dict(lr=0.01)),
    (AdamW, dict(lr=0.01, amsgrad=True, weight_decay=0.3, maximize=True)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CONFIGS]
SHAPES = [(3, 4), (5,), (2, 3, 2), (1,), (0,)]  # a zero-size param last, as torch's tests do


def make_params(rng, dtype, shapes=SHAPES):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def make_grads(rng, params):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def snapshot(opt, params):
    return ([p.copy() for p in params],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
             for i, st in opt.state.items()})


def assert_unchanged(opt, params, snap):
    old_params, old_state = snap
    for p, q in zip(params, old_params):
        assert np.array_equal(p, q)
    assert set(opt.state) == set(old_state)
    for i, st in old_state.items():
        assert set(opt.state[i]) == set(st)
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(opt.state[i][k], v)
            else:
                assert opt.state[i][k] == v


# --------------------------------------------------- functional-API mirror
def full_options(cls, kw):
    """The hyperparameters a group of ``cls(params, **kw)`` ends up with."""
    opt = cls([np.zeros(1)], **kw)
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def mirror_step(cls, g, p, grad, st, step):
    """One update of one param through the functional API with single arrays."""
    z = np.zeros_like
    if issubclass(cls, SGD):
        if g["momentum"] != 0 and "momentum_buffer" not in st:
            st["momentum_buffer"] = z(p)
        F.sgd_(p, grad, st.get("momentum_buffer"), step=step, lr=g["lr"],
               momentum=g["momentum"], dampening=g["dampening"], nesterov=g["nesterov"],
               weight_decay=g["weight_decay"], maximize=g["maximize"])
    elif cls is RMSprop:
        for name, need in (("square_avg", True), ("momentum_buffer", g["momentum"] > 0),
                           ("grad_avg", g["centered"])):
            if need and name not in st:
                st[name] = z(p)
        F.rmsprop_(p, grad, st["square_avg"], step=step, lr=g["lr"], alpha=g["alpha"],
                   eps=g["eps"], weight_decay=g["weight_decay"], momentum=g["momentum"],
                   momentum_buffer=st.get("momentum_buffer"), centered=g["centered"],
                   grad_avg=st.get("grad_avg"), maximize=g["maximize"])
    else:
        for name, need in (("exp_avg", True), ("exp_avg_sq", True),
                           ("max_exp_avg_sq", g["amsgrad"])):
            if need and name not in st:
                st[name] = z(p)
        fn = F.adamw_ if cls is AdamW else F.adam_
        extra = {} if cls is AdamW else dict(decoupled_weight_decay=g["decoupled_weight_decay"])
        fn(p, grad, st["exp_avg"], st["exp_avg_sq"], step=step, lr=g["lr"],
           beta1=g["betas"][0], beta2=g["betas"][1], eps=g["eps"],
           weight_decay=g["weight_decay"], amsgrad=g["amsgrad"],
           max_exp_avg_sq=st.get("max_exp_avg_sq"), maximize=g["maximize"], **extra)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_class_equals_functional(cls, kw, dtype, rng):
    params = make_params(rng, dtype)
    ref = [p.copy() for p in params]
    opt = cls(params, **kw)
    g = full_options(cls, kw)
    ref_state = [{} for _ in ref]
    for t in range(1, 31):
        grads = make_grads(rng, params)
        assert opt.step(grads) is True
        for p, gr, st in zip(ref, grads, ref_state):
            mirror_step(cls, g, p, gr, st, t)
    for i, (p, q) in enumerate(zip(params, ref)):
        assert np.array_equal(p, q)
        assert opt.state[i]["step"] == 30
        for name, buf in ref_state[i].items():
            assert np.array_equal(opt.state[i][name], buf), name
            assert opt.state[i][name].dtype == dtype


# Param groups with mixed options (and dtypes), lr changed mid-run, a group added later.
GROUPED = [
    (SGD, dict(lr=0.1), [dict(momentum=0.9, nesterov=True), dict(lr=0.01, weight_decay=0.1),
                         dict(momentum=0.5, dampening=0.5, maximize=True)]),
    (RMSprop, dict(lr=0.01), [dict(centered=True), dict(momentum=0.7, lr=0.001),
                              dict(alpha=0.5, weight_decay=0.2, maximize=True)]),
    (Adam, dict(lr=0.01), [dict(amsgrad=True), dict(betas=(0.5, 0.9), weight_decay=0.1),
                           dict(decoupled_weight_decay=True, weight_decay=0.1, maximize=True)]),
    (AdamW, dict(), [dict(amsgrad=True, lr=0.1), dict(weight_decay=0.0), dict(eps=1e-3)]),
]


@pytest.mark.parametrize("cls,kw,group_opts", GROUPED, ids=[c.__name__ for c, _, _ in GROUPED])
def test_param_groups_equal_functional(cls, kw, group_opts, rng):
    dtypes = [np.float64, np.float32, np.float32]
    groups = []
    for opts, dtype in zip(group_opts[:2], dtypes):
        groups.append(dict(params=make_params(rng, dtype, [(4, 3), (6,)]), **opts))
    # The first group mixes dtypes: it is split into one kernel call per dtype.
    groups[0]["params"].append(rng.standard_normal((2, 2)).astype(np.float32))
    opt = cls(groups, **kw)
    all_params = [p for g in groups for p in g["params"]]
    ref = [p.copy() for p in all_params]
    ref_state = [{} for _ in ref]
    ref_steps = [0] * len(ref)
    late = make_params(rng, dtypes[2], [(3,), (2, 5)])
    for t in range(1, 41):
        if t == 15:
            opt.param_groups[1]["lr"] *= 0.5
        if t == 20:
            opt.add_param_group(dict(params=late, **group_opts[2]))
            all_params += late
            ref += [p.copy() for p in late]
            ref_state += [{}, {}]
            ref_steps += [0, 0]
        grads = make_grads(rng, all_params)
        assert opt.step(grads)
        k = 0
        for group in opt.param_groups:
            g = {key: v for key, v in group.items() if key != "params"}
            for _ in group["params"]:
                ref_steps[k] += 1
                mirror_step(cls, g, ref[k], grads[k], ref_state[k], ref_steps[k])
                k += 1
    for i, (p, q) in enumerate(zip(all_params, ref)):
        assert np.array_equal(p, q), i
        assert opt.state[i]["step"] == ref_steps[i]
        for name, buf in ref_state[i].items():
            assert np.array_equal(opt.state[i][name], buf), (i, name)
    assert opt.state[0]["step"] == 40 and opt.state[len(all_params) - 1]["step"] == 21


def test_one_kernel_call_per_group(monkeypatch, rng):
    calls = []
    real = F.kernels.adam

    def spy(param, *args, **kwargs):
        calls.append(len(param))
        return real(param, *args, **kwargs)

    # the compiled entry itself: the class's step goes there directly (a prepared call)
    monkeypatch.setattr(F.kernels, "adam", spy)
    groups = [dict(params=make_params(rng, np.float32, [(3,)] * 10)),
              dict(params=make_params(rng, np.float32, [(2,)] * 3), lr=0.1)]
    opt = Adam(groups)
    for _ in range(3):
        opt.step(make_grads(rng, [p for g in groups for p in g["params"]]))
    assert calls == [10, 3] * 3


def test_lr_change_takes_effect_next_step():
    p = np.zeros(3)
    opt = SGD([p], lr=1.0)
    opt.step([np.ones(3)])
    assert np.array_equal(p, -np.ones(3))
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(3)])
    assert np.array_equal(p, np.full(3, -1.5))


def test_momentum_is_sgd_with_momentum_09():
    opt = Momentum([np.zeros(2)])
    g = opt.param_groups[0]
    assert g["momentum"] == 0.9 and g["nesterov"] is False and g["dampening"] == 0
    assert isinstance(opt, SGD) and isinstance(opt, Optimizer)


def test_defaults_match_torch_signatures():
    # The same checks with torch at hand: tests/test_torch_state_dicts.py
    p = [np.zeros(2)]
    flags = dict(foreach=None, differentiable=False)
    assert full_options(SGD, {}) == dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                                         nesterov=False, maximize=False, fused=None, **flags)
    assert full_options(RMSprop, {}) == dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
                                             momentum=0, centered=False, maximize=False,
                                             capturable=False, **flags)
    assert full_options(Adam, {}) == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=0, amsgrad=False, maximize=False,
                                          decoupled_weight_decay=False, capturable=False,
                                          fused=None, **flags)
    assert full_options(AdamW, {})["weight_decay"] == 1e-2
    assert full_options(AdamW, {})["decoupled_weight_decay"] is True
    assert Adam(p).nonfinite == "ignore"


# ---------------------------------------------------------------- vs torch
def _torch_class(cls):
    import torch
    return {SGD: torch.optim.SGD, Momentum: torch.optim.SGD, RMSprop: torch.optim.RMSprop,
            Adam: torch.optim.Adam, AdamW: torch.optim.AdamW}[cls]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_matches_torch(cls, kw, rng):
    torch = pytest.importorskip("torch")
    params = make_params(rng, np.float64)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    tkw = dict(kw, momentum=0.9) if cls is Momentum and "momentum" not in kw else dict(kw)
    # Two groups, the second with its own lr, in both libraries.
    opt = cls([dict(params=params[:2]), dict(params=params[2:], lr=kw["lr"] / 2)], **kw)
    topt = _torch_class(cls)([dict(params=tparams[:2]), dict(params=tparams[2:],
                                                             lr=kw["lr"] / 2)],
                             foreach=False, **tkw)
    for _ in range(50):
        grads = make_grads(rng, params)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        opt.step(grads)
        topt.step()
    for i, (p, tp) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-15)
        tstate = topt.state[tp]
        for name, buf in opt.state[i].items():
            if name == "step":
                if "step" in tstate:
                    assert buf == int(tstate["step"])
                continue
            np.testing.assert_allclose(buf, tstate[name].numpy(), rtol=1e-12, atol=1e-15,
                                       err_msg=name)


# ------------------------------------------------------ invalid constructions
BAD_HYPER = [  # torch's checks and messages; beyond them only NaN, non-numbers, huge ints
    (SGD, dict(lr=-1), ValueError, "Invalid learning rate: -1"),
    (SGD, dict(lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (SGD, dict(lr=float("nan")), ValueError, "Invalid learning rate: nan"),
    (SGD, dict(lr=10**400), ValueError, "Invalid learning rate: an int of 1329 bits"),
    (SGD, dict(lr="0.1"), TypeError, "Invalid learning rate"),
    (SGD, dict(lr=np.array([0.1, 0.2])), ValueError, "Invalid learning rate: an array must"),
    (SGD, dict(lr=np.array(-0.5)), ValueError, "Invalid learning rate: -0.5"),
    (SGD, dict(momentum=-0.5), ValueError, "Invalid momentum value: -0.5"),
    (SGD, dict(dampening=float("nan")), ValueError, "Invalid dampening value: nan"),
    (SGD, dict(weight_decay=-1e-3), ValueError, "Invalid weight_decay value: -0.001"),
    (SGD, dict(weight_decay=-10**400), ValueError, "Invalid weight_decay value: an int of"),
    (SGD, dict(nesterov=True), ValueError, "Nesterov momentum requires a momentum"),
    (SGD, dict(momentum=0.9, dampening=0.1, nesterov=True), ValueError, "zero dampening"),
    (SGD, dict(nesterov=1), TypeError, "Invalid nesterov"),
    (SGD, dict(maximize="yes"), TypeError, "Invalid maximize"),
    (SGD, dict(differentiable=True), ValueError, "Invalid differentiable: True"),
    (SGD, dict(fused=True, foreach=True), ValueError, "`fused` and `foreach` cannot be"),
    (SGD, dict(foreach="yes"), TypeError, "Invalid foreach"),
    (RMSprop, dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (RMSprop, dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (RMSprop, dict(alpha=-0.1), ValueError, "Invalid alpha value: -0.1"),
    (RMSprop, dict(momentum=-1), ValueError, "Invalid momentum value: -1"),
    (RMSprop, dict(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (RMSprop, dict(centered=None), TypeError, "Invalid centered"),
    (RMSprop, dict(capturable=None), TypeError, "Invalid capturable"),
    (RMSprop, dict(differentiable=True), ValueError, "Invalid differentiable: True"),
    (Adam, dict(lr=-1e-3), ValueError, "Invalid learning rate: -0.001"),
    (Adam, dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (Adam, dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (Adam, dict(betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (Adam, dict(betas=(0.9, 10**400)), ValueError, "Invalid beta parameter at index 1: an int"),
    (Adam, dict(betas=0.9), TypeError, "Invalid betas"),
    (Adam, dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (Adam, dict(amsgrad="no"), TypeError, "Invalid amsgrad"),
    (Adam, dict(fused=True, foreach=True), ValueError, "`fused` and `foreach` cannot be"),
    (AdamW, dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value: -0.1"),
    (AdamW, dict(differentiable=True), ValueError, "Invalid differentiable: True"),
    (Adam, dict(nonfinite="warn"), ValueError, "Invalid nonfinite: 'warn'"),
    (Adam, dict(n_threads=0), ValueError, "Invalid n_threads"),
]


@pytest.mark.parametrize("cls,kw,exc,match", BAD_HYPER,
                         ids=[f"{c.__name__}-{m}" for c, _, _, m in BAD_HYPER])
def test_invalid_hyperparameters(cls, kw, exc, match):
    with pytest.raises(exc, match=match.replace("(", r"\(").replace(".", r"\.")):
        cls([np.zeros(3)], **kw)


@pytest.mark.parametrize("cls,kw,exc,match", BAD_HYPER[:-2],
                         ids=[f"{c.__name__}-{m}" for c, _, _, m in BAD_HYPER[:-2]])
def test_invalid_hyperparameters_in_group(cls, kw, exc, match):
    with pytest.raises(exc, match=match.replace("(", r"\(").replace(".", r"\.")):
        cls([dict(params=[np.zeros(3)]), dict(params=[np.zeros(2)], **kw)])


def test_invalid_params():
    a = np.zeros(4)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([])
    with pytest.raises(TypeError, match="iterable of arrays or dicts"):
        SGD(a)
    with pytest.raises(ValueError, match="appear more than once"):
        SGD([a, a])
    with pytest.raises(ValueError, match="appear more than once"):
        SGD([dict(params=[a]), dict(params=[a])])
    with pytest.raises(ValueError, match="share memory"):
        SGD([a[:2], a[1:]])
    SGD([a[:2], a[2:]])  # disjoint views are fine
    with pytest.raises(TypeError, match="can only optimize ndarrays"):
        SGD([[1.0, 2.0]])
    with pytest.raises(TypeError, match="dtype int64"):
        SGD([np.zeros(3, np.int64)])
    with pytest.raises(TypeError, match="dtype complex64"):  # float16: compact storage
        SGD([np.zeros(3, np.complex64)])
    with pytest.raises(ValueError, match="not contiguous"):
        SGD([np.zeros((3, 4))[:, ::2]])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD([ro])
    with pytest.raises(TypeError, match="sets"):
        SGD([dict(params={1})])
    opt = SGD([a])
    with pytest.raises(ValueError, match="appear more than once"):
        opt.add_param_group(dict(params=[a]))
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_bad_grads_change_nothing(cls, kw, rng):
    params = make_params(rng, np.float32)
    opt = cls(params, **kw)
    good = make_grads(rng, params)
    bad = [
        (good[:-1], ValueError, "expected 5 gradients"),
        (good + [good[0]], ValueError, "expected 5 gradients"),
        (good[:1] + [good[1].astype(np.float64)] + good[2:], TypeError, "grad 1 has dtype float64"),
        (good[:2] + [good[2].reshape(-1)] + good[3:], ValueError, "grad 2 has shape"),
        (good[:3] + [1.0] + good[4:], TypeError, "grad 3 is float"),
        (good[0], TypeError, "grads must be a list or tuple"),
        (iter(good), TypeError, "grads must be a list or tuple"),
    ]
    for first in (True, False):  # before any state exists, then with state
        snap = snapshot(opt, params)
        for grads, exc, match in bad:
            with pytest.raises(exc, match=match):
                opt.step(grads)
            assert_unchanged(opt, params, snap)
        if first:
            assert opt.state == {}
        opt.step(good)
    assert opt.state[0]["step"] == 2


def test_group_hyperparameter_changed_to_invalid_changes_nothing(rng):
    params = make_params(rng, np.float64)
    opt = Adam([dict(params=params[:2]), dict(params=params[2:])])
    opt.step(make_grads(rng, params))
    snap = snapshot(opt, params)
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.step(make_grads(rng, params))
    assert_unchanged(opt, params, snap)  # group 0 was not updated either


@pytest.mark.parametrize("grouped", [False, True])
def test_grad_sharing_memory_with_a_param_changes_nothing(grouped, rng):
    params = make_params(rng, np.float64)
    opt = Adam([dict(params=params[:2]), dict(params=params[2:], lr=0.1)] if grouped
               else params)
    opt.step(make_grads(rng, params))
    snap = snapshot(opt, params)
    for j in (0, 3):
        grads = make_grads(rng, params)
        grads[j] = params[j]  # the param itself given as its own gradient
        with pytest.raises(ValueError, match="share memory"):
            opt.step(grads)
        assert_unchanged(opt, params, snap)
    if grouped:  # a grad of the second group aliasing a param of the first one
        grads = make_grads(rng, params)
        grads[3] = params[0][0, :1]
        with pytest.raises(ValueError, match="grad 3 and param 0 share memory"):
            opt.step(grads)
        assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_noncontiguous_grads_are_accepted(cls, rng):
    # Step 1 creates state; from step 2 on a one-call step first tries the kernel on
    # the grads as given and copies them only when it refuses: both paths.
    p, q = np.zeros((3, 4)), np.zeros((3, 4))
    opt_p, opt_q = cls([p], lr=0.1), cls([q], lr=0.1)
    for step in range(3):
        g = rng.standard_normal((4, 6)).T[::2]  # Fortran-like, then strided
        assert opt_p.step([g if step != 1 else g[:, ::-1][:, ::-1]])
        assert opt_q.step([np.ascontiguousarray(g)])
        assert np.array_equal(p, q)
    assert opt_p.state[0]["step"] == opt_q.state[0]["step"] == 3


# ------------------------------------------------------------ non-finite guard
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cls,kw", CONFIGS[::3], ids=IDS[::3])
def test_nonfinite_guard(cls, kw, bad_value, rng):
    params = make_params(rng, np.float32)
    for mode in ("raise", "skip"):
        opt = cls(params, nonfinite=mode, **kw)
        for first in (True, False):
            grads = make_grads(rng, params)
            grads[2][1, 2, 0] = bad_value
            snap = snapshot(opt, params)
            if mode == "raise":
                with pytest.raises(FloatingPointError, match="grad 2 contains non-finite"):
                    opt.step(grads)
            else:
                assert opt.step(grads) is False
            assert_unchanged(opt, params, snap)
            if first:
                assert opt.state == {}
            assert opt.step(make_grads(rng, params)) is True
        assert opt.state[0]["step"] == 2


def test_nonfinite_ignore_is_like_torch(rng):
    p = np.zeros(3)
    opt = SGD([p], lr=0.1)
    assert opt.step([np.array([np.nan, 1.0, 0.0])]) is True
    assert np.isnan(p[0]) and p[1] == -0.1


# ------------------------------------------------------------- convergence
@pytest.mark.parametrize("cls,kw", [(SGD, dict(lr=0.05, momentum=0.9)), (RMSprop, dict(lr=0.01)),
                                    (Adam, dict(lr=0.05)), (AdamW, dict(lr=0.05))],
                         ids=["SGD", "RMSprop", "Adam", "AdamW"])
def test_converges_on_parabola(cls, kw):
    target = np.array([1.0, -2.0, 3.0])
    x = np.zeros(3)
    opt = cls([x], **kw)
    for _ in range(2000):
        opt.step([2 * (x - target)])
    np.testing.assert_allclose(x, target, atol=0.05)


def test_repr_lists_groups():
    r = repr(Adam([dict(params=[np.zeros(1)], lr=0.5)]))
    assert "Adam (" in r and "Parameter Group 0" in r and "lr: 0.5" in r


def test_fortran_ordered_param_state_round_trips_and_steps():
    # State buffers (fresh or loaded) must share the param's memory order, or the
    # kernel would pair different elements; and they avoid the param's page offset.
    rng = np.random.default_rng(11)
    p = np.asfortranarray(rng.standard_normal((300, 200)))
    opt = fastoptim.Adam([p], lr=1e-2)
    g = np.asfortranarray(rng.standard_normal((300, 200)))
    opt.step([g])
    m = opt.state[0]["exp_avg"]
    assert m.flags.f_contiguous and (m.ctypes.data - p.ctypes.data) % 4096 != 0
    q = p.copy(order="F")
    fresh = fastoptim.Adam([q], lr=1e-2)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[0]["exp_avg"].flags.f_contiguous
    opt.step([g])
    fresh.step([np.ascontiguousarray(g)])  # a C-order grad is copied to the param's order
    np.testing.assert_array_equal(p, q)


# ------------------------------------------- torch-format state dicts, no torch needed
@pytest.mark.parametrize("step", [3, 3.0, np.float32(3.0), np.array(3.0, np.float32),
                                  np.array(3, np.int64)])
def test_step_count_in_torchs_formats_loads_as_an_int(step, rng):
    params = make_params(rng, np.float64, [(3,), (2, 2)])
    opt = Adam(params, lr=0.1)
    for _ in range(3):
        opt.step(make_grads(rng, params))
    sd = opt.state_dict()
    for st in sd["state"].values():
        st["step"] = step
    other = Adam([p.copy() for p in params], lr=0.1)
    other.load_state_dict(sd)
    assert all(type(st["step"]) is int and st["step"] == 3 for st in other.state.values())
    g = make_grads(rng, params)
    opt.step(g)
    other.step(g)
    for p, q in zip(params, other.param_groups[0]["params"]):
        np.testing.assert_array_equal(p, q)


def test_sgd_state_without_step_continues_its_momentum_buffer(rng):
    # torch's SGD keeps no step count: its state dict holds only the buffers.
    params = make_params(rng, np.float64, [(3,), (2, 2)])
    opt = SGD(params, lr=0.1, momentum=0.9, dampening=0.5)
    opt.step(make_grads(rng, params))
    sd = opt.state_dict()
    for st in sd["state"].values():
        del st["step"]
    other = SGD([p.copy() for p in params], lr=0.1, momentum=0.9, dampening=0.5)
    other.load_state_dict(sd)
    assert [st["step"] for st in other.state.values()] == [0, 0]
    g = make_grads(rng, params)
    opt.step(g)
    other.step(g)  # continues the buffer (dampened), does not restart it from g
    for i, p in enumerate(params):
        np.testing.assert_array_equal(p, other.param_groups[0]["params"][i])
        np.testing.assert_array_equal(opt.state[i]["momentum_buffer"],
                                      other.state[i]["momentum_buffer"])


def test_state_without_step_is_refused_where_torch_keeps_one(rng):
    params = make_params(rng, np.float64, [(3,)])
    opt = RMSprop(params)
    opt.step(make_grads(rng, params))
    sd = opt.state_dict()
    del sd["state"][0]["step"]
    with pytest.raises(ValueError, match=r"state\[0\] has no 'step' entry"):
        RMSprop([params[0].copy()]).load_state_dict(sd)


def test_sgd_momentum_switched_on_mid_run_starts_from_the_gradient(rng):
    params = make_params(rng, np.float64, [(4,)])
    opt = SGD(params, lr=0.1)
    for _ in range(3):
        opt.step(make_grads(rng, params))
    opt.param_groups[0].update(momentum=0.9, dampening=0.5)
    fresh = SGD([params[0].copy()], lr=0.1, momentum=0.9, dampening=0.5)
    for _ in range(3):  # a fresh optimizer's first steps: the buffer starts from g
        g = make_grads(rng, params)
        opt.step(g)
        fresh.step(g)
    np.testing.assert_array_equal(params[0], fresh.param_groups[0]["params"][0])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"],
                                  fresh.state[0]["momentum_buffer"])
    assert opt.state[0]["step"] == 6


def test_step_with_no_param_groups_left_is_a_value_error_for_every_class():
    # param_groups emptied by hand: a clear error, not an IndexError from a class's
    # own bookkeeping (AdamWScheduleFree read groups[0] first).
    import inspect
    import fastoptim.optim as optim_module
    classes = [c for c in map(lambda n: getattr(optim_module, n), optim_module.__all__)
               if inspect.isclass(c) and issubclass(c, optim_module.Optimizer)
               and c is not optim_module.Optimizer and c.__name__ != "LBFGS"]
    assert len(classes) >= 15
    for cls in classes:
        opt = cls([np.ones((4, 4))])
        opt.param_groups.clear()
        with pytest.raises(ValueError, match="no params"):
            opt.step([])
