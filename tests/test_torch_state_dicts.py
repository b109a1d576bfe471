"""torch.optim fidelity of the optimizer classes, checked against torch itself: state
dicts both ways, param-group keys and signatures, named params, None grads, momentum
switched on mid-run, and the hyperparameter values torch accepts or refuses."""

import inspect

import numpy as np
import pytest

from fastoptim.optim import SGD, Adam, AdamW, RMSprop

torch = pytest.importorskip("torch")

TORCH = {SGD: torch.optim.SGD, RMSprop: torch.optim.RMSprop, Adam: torch.optim.Adam,
         AdamW: torch.optim.AdamW}
CONFIGS = [
    (SGD, dict(lr=0.1)),  # torch keeps no state at all
    (SGD, dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (Adam, dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
    (AdamW, dict(lr=0.01, maximize=True)),
    (AdamW, dict(lr=0.01, amsgrad=True)),
]
IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CONFIGS]
SHAPES = [(4, 3), (5,), (2, 3)]


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-15) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)


class Pair:
    """The same model under fastoptim and torch (single-tensor path), two param groups."""

    def __init__(self, cls, kw, dtype, rng, params=None):
        self.rng, self.dtype = rng, dtype
        init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.params = params if params is not None else [p.copy() for p in init]
        self.tparams = [torch.tensor(p.copy(), requires_grad=True) for p in self.params]
        groups = lambda ps: [dict(params=ps[:2]), dict(params=ps[2:], lr=kw["lr"] / 2)]
        self.opt = cls(groups(self.params), **kw)
        self.topt = TORCH[cls](groups(self.tparams), foreach=False, **kw)

    def grads(self, mask=(1, 1, 1)):
        return [self.rng.standard_normal(s).astype(self.dtype) if m else None
                for s, m in zip(SHAPES, mask)]

    def step(self, n, which="both", mask=(1, 1, 1)):
        for _ in range(n):
            g = self.grads(mask)
            if which in ("both", "fastoptim"):
                self.opt.step(g)
            if which in ("both", "torch"):
                for tp, x in zip(self.tparams, g):
                    tp.grad = None if x is None else torch.tensor(x)
                self.topt.step()

    def assert_equal(self):
        for i, (p, tp) in enumerate(zip(self.params, self.tparams)):
            np.testing.assert_allclose(p, tp.detach().numpy(), **tol(self.dtype))
            tstate = self.topt.state.get(tp, {})
            st = self.opt.state.get(i, {})
            names = {k for k, v in tstate.items() if k != "step" and v is not None}
            assert names <= set(st), (i, names, set(st))
            for name in names:
                np.testing.assert_allclose(st[name], tstate[name].numpy(), **tol(self.dtype),
                                           err_msg=f"{i} {name}")
            if "step" in tstate and type(self.opt) is not SGD:  # torch's SGD counts none
                assert st["step"] == int(tstate["step"])
            if type(self.opt) is not SGD or self.opt.param_groups[0]["momentum"]:
                assert bool(st) == bool(tstate), i  # state only for params that stepped


def numpy_state_dict(sd, step_as):
    """torch's state dict with every tensor converted by .numpy() (step as a float32 0-d
    array or a Python float)."""
    def conv(key, v):
        if torch.is_tensor(v):
            if key == "step":
                return v.numpy().copy() if step_as == "array" else float(v)
            return v.detach().numpy().copy()
        return v
    return {"state": {i: {k: conv(k, v) for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def torch_state_dict(sd):
    return {"state": {i: {k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
                          for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


# ------------------------------------------------------------ state dicts
@pytest.mark.parametrize("step_as", ["array", "float"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_torch_state_dict_loads_and_the_run_continues_as_torch(cls, kw, dtype, step_as, rng):
    pair = Pair(cls, kw, dtype, rng)
    pair.step(4, "torch")
    sd = numpy_state_dict(pair.topt.state_dict(), step_as)
    if cls is SGD:
        assert all("step" not in st for st in sd["state"].values())  # loads without one
    for p, tp in zip(pair.params, pair.tparams):
        p[...] = tp.detach().numpy()
    pair.opt.load_state_dict(sd)
    for g, tg in zip(pair.opt.param_groups, pair.topt.param_groups):
        assert {k: v for k, v in g.items() if k != "params"} == \
            {k: v for k, v in tg.items() if k != "params"}
    pair.assert_equal()
    pair.step(4)
    pair.assert_equal()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_fastoptim_state_dict_loads_into_torch(cls, kw, dtype, rng):
    pair = Pair(cls, kw, dtype, rng)
    pair.step(4, "fastoptim")
    with torch.no_grad():
        for p, tp in zip(pair.params, pair.tparams):
            tp.copy_(torch.from_numpy(p))
    pair.topt.load_state_dict(torch_state_dict(pair.opt.state_dict()))
    pair.step(4)
    pair.assert_equal()


def test_torch_sgd_state_with_a_momentum_buffer_continues_it(rng):
    # No 'step' entry: the buffer is continued (not restarted from the gradient).
    pair = Pair(SGD, dict(lr=0.1, momentum=0.9, dampening=0.5), np.float64, rng)
    pair.step(3, "torch")
    for p, tp in zip(pair.params, pair.tparams):
        p[...] = tp.detach().numpy()
    pair.opt.load_state_dict(numpy_state_dict(pair.topt.state_dict(), "float"))
    assert pair.opt.state[0]["step"] == 0  # torch's SGD keeps no count
    pair.step(3)
    pair.assert_equal()


# ------------------------------------------------------- groups, signatures
@pytest.mark.parametrize("cls", [SGD, RMSprop, Adam, AdamW])
def test_signature_is_torch_plus_fastoptim_keywords(cls):
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(TORCH[cls]).parameters
    assert list(ours)[:len(theirs)] == list(theirs)
    assert list(ours)[len(theirs):] == ["nonfinite", "n_threads", "state_dtype",
                                       "master_weights", "rounding", "seed", "min_8bit_size"]
    for name, param in theirs.items():
        assert ours[name].kind == param.kind, name
        assert ours[name].default == param.default, name


GROUP_KWARGS = [
    (SGD, {}), (SGD, dict(momentum=0.9, foreach=False, fused=True)),
    (RMSprop, {}), (RMSprop, dict(capturable=True, foreach=True, centered=True)),
    (Adam, {}), (Adam, dict(fused=True, capturable=False, amsgrad=True)),
    (Adam, dict(decoupled_weight_decay=True)), (AdamW, {}), (AdamW, dict(foreach=True)),
]


@pytest.mark.parametrize("cls,kw", GROUP_KWARGS)
def test_param_group_keys_and_values_are_torchs(cls, kw):
    opt = cls([np.zeros(3, np.float32)], **kw)
    topt = TORCH[cls]([torch.zeros(3, requires_grad=True)], **kw)
    ours = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    theirs = {k: v for k, v in topt.param_groups[0].items() if k != "params"}
    assert ours == theirs
    assert opt.defaults == topt.defaults


def test_named_params_as_torch(rng):
    arrays = [rng.standard_normal(s) for s in SHAPES]
    names = ["layer.weight", "layer.bias", "head.weight"]
    named = lambda ps: [dict(params=list(zip(names[:2], ps[:2]))),
                        dict(params=list(zip(names[2:], ps[2:])), lr=0.5)]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt, topt = Adam(named(arrays), lr=0.1), torch.optim.Adam(named(tensors), lr=0.1)
    for g, tg in zip(opt.param_groups, topt.param_groups):
        assert g["param_names"] == tg["param_names"]
    flat = [p for g in opt.param_groups for p in g["params"]]
    assert len(flat) == 3 and all(p is a for p, a in zip(flat, arrays))
    g = [rng.standard_normal(s) for s in SHAPES]
    opt.step(g)
    for tp, x in zip(tensors, g):
        tp.grad = torch.tensor(x)
    topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert [x["param_names"] for x in sd["param_groups"]] == \
        [x["param_names"] for x in tsd["param_groups"]]
    # torch's named state dict loads; names from the dict replace the optimizer's
    other = Adam(named([a.copy() for a in arrays]), lr=0.1)
    tsd_np = numpy_state_dict(tsd, "array")
    tsd_np["param_groups"][0]["param_names"] = ["a", "b"]
    other.load_state_dict(tsd_np)
    assert other.param_groups[0]["param_names"] == ["a", "b"]
    # without names in the dict, the optimizer keeps its own (as torch)
    del tsd_np["param_groups"][1]["param_names"]
    topt.load_state_dict(torch_state_dict(tsd_np))
    other.load_state_dict(tsd_np)
    assert other.param_groups[1]["param_names"] == topt.param_groups[1]["param_names"]
    # named parameters at the top level, like model.named_parameters()
    top = SGD(list(zip(names, arrays)), lr=0.1)
    assert top.state_dict()["param_groups"][0]["param_names"] == names


@pytest.mark.parametrize("build", [
    lambda P, a, b: P([("w", a), b]),
    lambda P, a, b: P([dict(params=[("w", a)]), dict(params=[b])]),
    lambda P, a, b: P([dict(params=[a]), dict(params=[("b", b)])]),
])
def test_mixing_named_and_unnamed_params_is_refused_as_torch(build):
    with pytest.raises(ValueError, match="with/without names") as ours:
        build(SGD, np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError) as theirs:
        build(torch.optim.SGD, torch.zeros(2, requires_grad=True),
              torch.zeros(3, requires_grad=True))
    assert str(ours.value) == str(theirs.value)


# ------------------------------------------------------------- None grads
MASKS = [(1, 0, 1), (1, 1, 0), (0, 0, 0), (0, 1, 1), (1, 1, 1), (1, 0, 1)]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_none_grads_skip_params_as_torch(cls, kw, rng):
    pair = Pair(cls, kw, np.float64, rng)
    for mask in MASKS:
        pair.step(1, mask=mask)
        pair.assert_equal()


# ------------------------------------------------------ SGD momentum buffer
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_switched_on_mid_run_as_torch(nesterov, rng):
    pair = Pair(SGD, dict(lr=0.1), np.float64, rng)
    pair.step(3)
    for g in pair.opt.param_groups + pair.topt.param_groups:
        g.update(momentum=0.9, dampening=0.0 if nesterov else 0.3, nesterov=nesterov)
    pair.step(4)
    pair.assert_equal()


def test_sgd_momentum_buffer_deleted_mid_run_as_torch(rng):
    pair = Pair(SGD, dict(lr=0.1, momentum=0.9, dampening=0.4), np.float64, rng)
    pair.step(3)
    del pair.opt.state[0]["momentum_buffer"]
    del pair.topt.state[pair.tparams[0]]["momentum_buffer"]
    pair.opt.state[2]["momentum_buffer"] = None
    pair.topt.state[pair.tparams[2]]["momentum_buffer"] = None
    pair.step(3)
    pair.assert_equal()


# ------------------------------------------------------ hyperparameter values
ACCEPTED = [  # torch accepts these: so does fastoptim, with torch's results
    (Adam, dict(lr=0.01, eps=0.0)),
    (AdamW, dict(lr=0.01, eps=0.0, amsgrad=True)),
    (RMSprop, dict(lr=0.01, alpha=1.0)),
    (RMSprop, dict(lr=0.001, alpha=1.5, eps=0.0)),
    (RMSprop, dict(lr=0.01, alpha=0.0, momentum=0.5)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=1.5)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=-0.5)),
    (SGD, dict(lr="array", momentum=0.9)),
    (Adam, dict(lr="array")),
    (RMSprop, dict(lr="array", momentum=0.3)),
    (Adam, dict(lr=0.01, betas=(0.0, 0.0))),
]


@pytest.mark.parametrize("cls,kw", ACCEPTED, ids=[f"{c.__name__}-{kw}" for c, kw in ACCEPTED])
def test_values_torch_accepts_are_accepted_with_torchs_results(cls, kw, rng):
    params = [rng.standard_normal(s) for s in SHAPES]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    ours, theirs = dict(kw), dict(kw)
    if kw["lr"] == "array":  # a one-element lr: torch's Tensor lr, an ndarray here
        ours["lr"], theirs["lr"] = np.array(0.01), torch.tensor(0.01, dtype=torch.float64)
    opt, topt = cls(params, **ours), TORCH[cls](tparams, foreach=False, **theirs)
    for _ in range(5):
        g = [rng.standard_normal(s) for s in SHAPES]
        opt.step(g)
        for tp, x in zip(tparams, g):
            tp.grad = torch.tensor(x)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-15)
    if kw["lr"] == "array":  # the group holds the array itself; state_dict a copy
        lr = opt.param_groups[0]["lr"]
        assert lr is ours["lr"]
        assert opt.state_dict()["param_groups"][0]["lr"] is not lr


@pytest.mark.parametrize("cls,kw", [
    (SGD, dict(lr=float("inf"))), (Adam, dict(lr=float("inf"), eps=float("inf"))),
    (RMSprop, dict(momentum=float("inf"), weight_decay=float("inf"))),
    (SGD, dict(dampening=float("-inf"), momentum=1e300)),
])
def test_infinite_values_torch_accepts_are_accepted(cls, kw):
    TORCH[cls]([torch.zeros(2, requires_grad=True)], **kw)
    opt = cls([np.zeros(2)], **kw)
    with np.errstate(all="ignore"):
        opt.step([np.ones(2)])


REFUSED = [  # torch refuses these: fastoptim too, with torch's message
    (SGD, dict(lr=-1)), (SGD, dict(lr=-0.5)), (SGD, dict(momentum=-0.5)),
    (SGD, dict(weight_decay=-1e-3)), (SGD, dict(nesterov=True)),
    (SGD, dict(momentum=0.9, dampening=0.1, nesterov=True)),
    (RMSprop, dict(lr=-0.1)), (RMSprop, dict(eps=-1e-8)), (RMSprop, dict(alpha=-0.1)),
    (RMSprop, dict(momentum=-1)), (RMSprop, dict(weight_decay=-1)),
    (Adam, dict(lr=-1e-3)), (Adam, dict(eps=-1e-8)), (Adam, dict(betas=(1.0, 0.999))),
    (Adam, dict(betas=(0.9, -0.1))), (Adam, dict(betas=(0.9, 1.0))),
    (Adam, dict(weight_decay=-0.1)), (AdamW, dict(weight_decay=-0.1)),
    (Adam, dict(lr=float("nan"))),
    (SGD, dict(fused=True, foreach=True)), (Adam, dict(fused=True, foreach=True)),
]


@pytest.mark.parametrize("cls,kw", REFUSED, ids=[f"{c.__name__}-{kw}" for c, kw in REFUSED])
def test_values_torch_refuses_are_refused_with_its_message(cls, kw):
    with pytest.raises((ValueError, RuntimeError)) as theirs:
        TORCH[cls]([torch.zeros(2, requires_grad=True)], **kw)
    with pytest.raises(ValueError) as ours:
        cls([np.zeros(2)], **kw)
    assert str(ours.value) == str(theirs.value)
