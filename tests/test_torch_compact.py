"""fastoptim.torch with bfloat16 and float16 params (fastoptim's compact-precision kernels):
against fastoptim.optim's classes on NumPy arrays (the same kernels: ``==``), against
torch.optim (within 16-bit rounding), state dicts both ways, exact resume, schedulers,
bad input, autograd.

Criteria against torch.optim (params after 100 training steps):
* ``state_dtype="float32"`` with masters: torch.optim's float32 step of float32 copies
  fed the same gradients (widened) is the exact math.  Our master equals it within
  float32 rounding (|a - b| <= 1e-6 * (1 + |b|), the float32 tolerance of
  tests/test_torch_backend.py: torch fuses some multiply-adds), and our 16-bit param
  is within one unit in the last place of the 16-bit rounding of torch's value (a
  master that close to a rounding midpoint may round the other way).
* ``master_weights=False``, state in the param's dtype, round to nearest: torch's fused
  CPU Adam/AdamW does the same, in float32 with one rounding per stored value: params
  and state agree within 2 units of the 16-bit precision (``units``: seen 0 for
  bfloat16 and up to 1.5 for float16 state, where torch fuses a multiply-add and a
  result sits at a rounding midpoint; the next steps carry that).
"""

import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")

import fastoptim.optim as fo  # noqa: E402
import fastoptim.torch as ft  # noqa: E402
from _torch_models import MODELS, convnet, data, mlp  # noqa: E402,F401


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's tiny matmuls on one thread: on a shared machine its thread team waits
    for busy cores (ms per op instead of us).  The results compared do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DTYPES = [torch.bfloat16, torch.float16]
NUMPY = {torch.bfloat16: np.dtype(ml_dtypes.bfloat16), torch.float16: np.dtype(np.float16)}
NAME = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
CONFIGS = [
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.001, momentum=0.5, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]
# fastoptim.torch storage keywords -> fastoptim.optim's for the same storage
STORAGES = {
    "default": (dict(), lambda d: dict(state_dtype=NAME[d])),
    "float32 state": (dict(state_dtype="float32"), lambda d: dict()),
    "no master": (dict(master_weights=False), lambda d: dict(state_dtype=NAME[d],
                                                             master_weights=False)),
    "stochastic": (dict(rounding="stochastic", seed=7),
                   lambda d: dict(state_dtype=NAME[d], rounding="stochastic", seed=7)),
}


def backward(net, X, Y):
    net.zero_grad()
    ((net(X).float() - Y.float()) ** 2).mean().backward()


def train(net, opt, X, Y, steps, sched=None):
    for _ in range(steps):
        backward(net, X, Y)
        opt.step()
        if sched is not None:
            sched.step()


def as_array(t):
    """A copy of a tensor's values as NumPy (bfloat16 as ml_dtypes')."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(NUMPY[torch.bfloat16]).copy()
    return t.numpy().copy()


def bits(t):
    return t.detach().contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


def same(a, b):
    """Bit for bit (NaN payloads and signed zeros included)."""
    return a.dtype == b.dtype and torch.equal(bits(a), bits(b))


def ulps(a, b):
    """The largest distance in units in the last place between two 16-bit tensors."""
    def ordered(t):
        u = bits(t).to(torch.int32) & 0xFFFF
        return torch.where(u >= 0x8000, -(u & 0x7FFF), u)
    return (ordered(a) - ordered(b)).abs().max().item()


# ------------------------------------------------------------------ fastoptim.optim
@pytest.mark.parametrize("storage", sorted(STORAGES))
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_100_steps_equal_the_numpy_classes_bit_for_bit(name, kw, dtype, model, storage):
    """fastoptim.torch runs fastoptim.optim's kernels: the same model's 16-bit params as
    NumPy arrays stepped by fastoptim.optim.X with the same storage, fed the same
    gradients: params after every step, state buffers and masters after 100 are ==."""
    tkw, nkw = STORAGES[storage]
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    tparams = list(net.parameters())
    arrays = [as_array(p) for p in tparams]
    half = len(tparams) // 2
    groups = lambda ps: [dict(params=ps[:half]), dict(params=ps[half:], lr=kw["lr"] / 2)]
    topt = getattr(ft, name)(groups(tparams), **kw, **tkw)
    nopt = getattr(fo, name)(groups(arrays), **kw, **nkw(dtype))
    for step in range(100):
        backward(net, X, Y)
        nopt.step([as_array(p.grad) for p in tparams])
        topt.step()
        for a, p in zip(arrays, tparams):
            assert np.array_equal(a.view(np.int16), as_array(p).view(np.int16)), step
    for i, p in enumerate(tparams):
        st = topt.state[p]
        for key, buf in nopt.state[i].items():
            if key == "step":
                assert name == "SGD" and storage != "stochastic" or st["step"].item() == buf
                continue
            ours = st["master_param" if key == "master" else key]
            assert ours.dtype == {np.float32: torch.float32, np.float16: torch.float16}.get(
                buf.dtype.type, torch.bfloat16)
            assert np.array_equal(buf.view(np.uint8), as_array(ours).view(np.uint8)), key
        assert ("master_param" in st) == (storage != "no master")


def test_mixed_dtypes_in_one_group_equal_the_numpy_class():
    """bfloat16, float16 and float32 params in one group: one call per dtype, == to
    fastoptim.optim on the same list."""
    torch.manual_seed(0)
    tparams = [torch.randn(5, 3).to(d).requires_grad_()
               for d in (torch.bfloat16, torch.float32, torch.float16, torch.bfloat16)]
    arrays = [as_array(p) for p in tparams]
    topt = ft.Adam(tparams, lr=0.01, state_dtype="bfloat16", rounding="stochastic", seed=3)
    nopt = fo.Adam(arrays, lr=0.01, state_dtype="bfloat16", rounding="stochastic", seed=3)
    for _ in range(10):
        for p in tparams:
            p.grad = torch.randn(5, 3).to(p.dtype)
        nopt.step([as_array(p.grad) for p in tparams])
        topt.step()
    for i, (a, p) in enumerate(zip(arrays, tparams)):
        assert np.array_equal(a.view(np.uint8), as_array(p).view(np.uint8))
        assert topt.state[p]["exp_avg"].dtype == torch.bfloat16
        assert ("master_param" in topt.state[p]) == (p.dtype != torch.float32)


# ------------------------------------------------------------------ torch.optim
TORCH_CONFIGS = [("SGD", dict(lr=0.05, momentum=0.9)), ("RMSprop", dict(lr=0.001)),
                 ("Adam", dict(lr=0.01)), ("AdamW", dict(lr=0.01))]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", TORCH_CONFIGS, ids=[n for n, _ in TORCH_CONFIGS])
def test_masters_match_torch_on_float32_copies(name, kw, dtype, model):
    """state_dtype="float32": our master is torch.optim's float32 step of float32 copies
    fed the same gradients, and the 16-bit param is its rounding (module docstring)."""
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    params = list(net.parameters())
    shadow = [p.detach().float().requires_grad_() for p in params]
    opt = getattr(ft, name)(params, **kw, state_dtype="float32")
    ref = getattr(torch.optim, name)(shadow, **kw)
    for _ in range(100):
        backward(net, X, Y)
        for s, p in zip(shadow, params):
            s.grad = p.grad.float()
        opt.step()
        ref.step()
    for p, s in zip(params, shadow):
        master = opt.state[p]["master_param"]
        err = ((master - s.detach()).abs() / (1 + s.detach().abs())).max().item()
        assert err <= 1e-6, err
        assert same(p.detach(), master.to(dtype))  # the kernel's own rounding
        assert ulps(p.detach(), s.detach().to(dtype)) <= 1


def units(a, b):
    """The largest |a - b| of two 16-bit tensors in units of their format's precision
    at |b|, floored at b's root-mean-square value (near zero no relative error holds)."""
    eps = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[b.dtype]
    a, b = a.detach().float(), b.detach().float()
    return ((a - b).abs() / (eps * (b.abs() + b.pow(2).mean().sqrt()))).max().item()


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_without_masters_match_torchs_fused_16bit_step(name, dtype, model):
    """master_weights=False, state in the param's dtype: torch's fused Adam on 16-bit
    tensors (float32 math, one rounding per store) fed the same gradients: params and
    state within 2 units of 16-bit precision (``units``).  (torch's for-loop step rounds
    every operation to 16 bits -- in float16 its eps=1e-8 is 0 and the params become
    NaN -- and its fused SGD differs from its own for-loop: neither is a reference.)"""
    X, Y = data(model, dtype)
    net = MODELS[model][0](dtype)
    params = list(net.parameters())
    shadow = [p.detach().clone().requires_grad_() for p in params]
    opt = getattr(ft, name)(params, lr=0.01, master_weights=False)
    ref = getattr(torch.optim, name)(shadow, lr=0.01, fused=True)
    for _ in range(100):
        backward(net, X, Y)
        for s, p in zip(shadow, params):
            s.grad = p.grad.clone()
        opt.step()
        ref.step()
    for p, s in zip(params, shadow):
        assert "master_param" not in opt.state[p]
        assert units(p, s) <= 2
        for key, t in ref.state[s].items():
            if key != "step":
                assert opt.state[p][key].dtype == dtype
                assert units(opt.state[p][key], t) <= 2, key


# ------------------------------------------------------------------ state dicts
RESUME = [("AdamW", dict(lr=0.01)), ("SGD", dict(lr=0.05, momentum=0.9)),
          ("SGD", dict(lr=0.05)), ("RMSprop", dict(lr=0.001, centered=True))]


@pytest.mark.parametrize("storage", [dict(), dict(rounding="stochastic", seed=11),
                                     dict(state_dtype="float32", rounding="stochastic"),
                                     dict(master_weights=False, rounding="stochastic")],
                         ids=["default", "stochastic", "float32-state", "no-master"])
@pytest.mark.parametrize("name,kw", RESUME, ids=[n + str(len(k)) for n, k in RESUME])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_resume_from_a_state_dict_is_exact(dtype, name, kw, storage):
    """Model and optimizer saved at step 30, loaded into new objects (the model through
    load_state_dict, which writes the params in place), 30 more steps: bit for bit the
    uninterrupted run (stochastic rounding continues its stream)."""
    X, Y = data("convnet", dtype)
    net = convnet(dtype)
    opt = getattr(ft, name)(net.parameters(), **kw, **storage)
    train(net, opt, X, Y, 30)
    saved = copy.deepcopy((net.state_dict(), opt.state_dict()))
    train(net, opt, X, Y, 30)
    again = convnet(dtype, seed=5)
    opt2 = getattr(ft, name)(again.parameters(), **kw, **storage)
    opt2.load_state_dict(saved[1])  # before the model's weights: either order works
    again.load_state_dict(saved[0])
    train(again, opt2, X, Y, 30)
    for a, b in zip(again.parameters(), net.parameters()):
        assert same(a, b)
    for a, b in zip(again.parameters(), net.parameters()):
        for key, t in opt.state[b].items():
            assert same(opt2.state[a][key], t), key
    if storage.get("rounding") == "stochastic":
        assert "step" in opt2.state[next(again.parameters())]


def test_state_dict_keeps_dtypes_and_moves_to_torch_and_back():
    """state_dict() holds the tensors as stored (16-bit state, float32 master).  torch's
    AdamW loads it (it keeps master_param as an unused entry, cast to the param's dtype:
    its run equals the same dict without it) and its state dict loads back: the master
    is made again from the param where torch moved it.  bfloat16 only: torch's fused
    float16 step turns the elements whose float16 exp_avg_sq underflowed to 0 into inf
    (its for-loop step rounds eps=1e-8 to 0 in float16 from the start)."""
    dtype = torch.bfloat16
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    opt = ft.AdamW(net.parameters(), lr=0.01)
    train(net, opt, X, Y, 10)
    sd = opt.state_dict()
    p0 = next(net.parameters())
    assert sd["state"][0]["exp_avg"].dtype == dtype
    assert sd["state"][0]["master_param"].dtype == torch.float32
    assert same(sd["state"][0]["master_param"], opt.state[p0]["master_param"])
    # into torch.optim, with and without the extra key: the same run
    nets = [mlp(dtype), mlp(dtype)]
    for n in nets:
        n.load_state_dict(net.state_dict())
    topts = [torch.optim.AdamW(n.parameters(), lr=0.01) for n in nets]
    topts[0].load_state_dict(copy.deepcopy(sd))
    plain = copy.deepcopy(sd)
    for st in plain["state"].values():
        del st["master_param"]
    topts[1].load_state_dict(plain)
    for n, t in zip(nets, topts):
        train(n, t, X, Y, 10)
    for a, b in zip(*(n.parameters() for n in nets)):
        assert same(a, b)
    # and back: torch's stale master_param is replaced by the param's values
    back = ft.AdamW(nets[0].parameters(), lr=0.01)
    back.load_state_dict(copy.deepcopy(topts[0].state_dict()))
    q0 = next(nets[0].parameters())
    assert back.state[q0]["master_param"].dtype == torch.float32
    before = q0.detach().clone()
    backward(nets[0], X, Y)
    back.step()
    moved = (q0.detach().float() - before.float()).abs().max().item()
    assert moved <= 0.05  # a step of lr 0.01 from the param, not a jump back to step 10
    assert same(q0.detach(), back.state[q0]["master_param"].to(dtype))


@pytest.mark.parametrize("state_dtype", [None, "float32"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_torch_state_dict_of_a_16bit_model_continues_here(dtype, state_dtype):
    """torch.optim.AdamW's state of a 16-bit model (16-bit state, no master) loads; the
    next steps make the master from the param and equal fastoptim.optim's class given
    the same state (cast to the state dtype chosen) and no master."""
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    topt = torch.optim.AdamW(net.parameters(), lr=0.01, fused=True)  # float16: see above
    train(net, topt, X, Y, 10)
    opt = ft.AdamW(net.parameters(), lr=0.01, state_dtype=state_dtype)
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    params = list(net.parameters())
    sdt = dtype if state_dtype is None else torch.float32
    arrays = [as_array(p) for p in params]
    nopt = fo.AdamW(arrays, lr=0.01, state_dtype=None if state_dtype else NAME[dtype])
    nopt.state.update({i: {"step": 10, "exp_avg": as_array(topt.state[p]["exp_avg"].to(sdt)),
                           "exp_avg_sq": as_array(topt.state[p]["exp_avg_sq"].to(sdt))}
                       for i, p in enumerate(params)})
    for i, p in enumerate(params):
        assert opt.state[p]["exp_avg"].dtype == sdt and "master_param" not in opt.state[p]
    for _ in range(10):
        backward(net, X, Y)
        nopt.step([as_array(p.grad) for p in params])
        opt.step()
    for i, (a, p) in enumerate(zip(arrays, params)):
        assert np.array_equal(a.view(np.int16), as_array(p).view(np.int16))
        assert np.array_equal(nopt.state[i]["master"], as_array(opt.state[p]["master_param"]))


def test_torch_schedulers_drive_it_as_the_numpy_class():
    dtype = torch.bfloat16
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    params = list(net.parameters())
    arrays = [as_array(p) for p in params]
    opt = ft.AdamW(params, lr=0.01, rounding="stochastic")
    nopt = fo.AdamW(arrays, lr=0.01, state_dtype="bfloat16", rounding="stochastic")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=40)
    lrs = set()
    for _ in range(40):
        backward(net, X, Y)
        for key in ("lr", "betas"):  # OneCycleLR cycles beta1 too
            nopt.param_groups[0][key] = opt.param_groups[0][key]
        lrs.add(opt.param_groups[0]["lr"])
        nopt.step([as_array(p.grad) for p in params])
        opt.step()
        sched.step()
    assert len(lrs) > 30
    for a, p in zip(arrays, params):
        assert np.array_equal(a.view(np.int16), as_array(p).view(np.int16))


# ------------------------------------------------------------------ masters, autograd
def test_a_param_changed_outside_gets_a_new_master_and_an_unchanged_one_keeps_it():
    """A param written outside the optimizer (in place under no_grad, as a weight clip,
    nn.init or the model's load_state_dict do, or p.data replaced) is the truth: if it
    no longer rounds from its master, the next step makes the master from it; written
    with the same values, the master (and its extra bits) is kept."""
    torch.manual_seed(0)
    p = torch.randn(6, 4).to(torch.bfloat16).requires_grad_()
    opt = ft.Adam([p], lr=0.01, rounding="stochastic")

    def step():
        p.grad = torch.randn(6, 4).to(torch.bfloat16)
        opt.step()

    for _ in range(3):
        step()
    master = opt.state[p]["master_param"]
    assert not torch.equal(master, p.detach().float())  # it holds more bits than p
    with torch.no_grad():
        p.copy_(p.detach().clone())  # the same values, written in place (version bumped)
    step()
    assert opt.state[p]["master_param"] is master
    with torch.no_grad():
        p.fill_(0.5)
    step()
    assert opt.state[p]["master_param"] is not master
    assert (opt.state[p]["master_param"] - 0.5).abs().max().item() < 0.05  # one step away
    p.data = torch.full((6, 4), -2.0, dtype=torch.bfloat16)  # new memory
    step()
    assert (opt.state[p]["master_param"] + 2).abs().max().item() < 0.05


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autograd_graph_intact_and_versions_bumped(dtype):
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    opt = ft.Adam(net.parameters(), lr=0.01, state_dtype="bfloat16")
    train(net, opt, X, Y, 2)
    p = next(net.parameters())
    versions = [p._version] + [t._version for k, t in opt.state[p].items() if k != "step"]
    ptr = p.data_ptr()
    loss = ((net(X).float() - Y.float()) ** 2).mean()  # the graph saves the params
    backward(net, X, Y)
    opt.step()
    assert p.data_ptr() == ptr  # updated in place
    assert p._version > versions[0]
    assert all(t._version > v for t, v in zip(
        [t for k, t in opt.state[p].items() if k != "step"], versions[1:]))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    train(net, opt, X, Y, 2)  # the next forward/backward works as usual
    assert p.requires_grad and p.is_leaf and p.grad is not None


def test_pickle_and_deepcopy_keep_the_storage_options():
    p = torch.randn(4).to(torch.float16).requires_grad_()
    opt = ft.RMSprop([p], lr=0.01, state_dtype="bfloat16", master_weights=False,
                     rounding="stochastic", seed=9)
    p.grad = torch.ones(4, dtype=torch.float16)
    opt.step()
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert (other.state_dtype, other.master_weights, other.rounding, other.seed) == \
            ("bfloat16", False, "stochastic", 9)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw,error,match", [
    (dict(state_dtype="int8"), ValueError, "state_dtype"),
    (dict(state_dtype=torch.bfloat16), TypeError, "state_dtype"),
    (dict(master_weights="yes"), TypeError, "master_weights"),
    (dict(rounding="up"), ValueError, "rounding"),
    (dict(rounding=None), TypeError, "rounding"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2 ** 64), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_bad_storage_options_are_refused(kw, error, match):
    with pytest.raises(error, match=match):
        ft.Adam([torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)], **kw)


def test_float64_params_with_a_16bit_state_dtype_are_refused():
    with pytest.raises(TypeError, match="param 1 .*float64"):
        ft.SGD([torch.zeros(2, requires_grad=True), torch.zeros(3, dtype=torch.float64,
                                                                requires_grad=True)],
               lr=0.1, state_dtype="bfloat16")
    opt = ft.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, state_dtype="float16")
    with pytest.raises(TypeError, match="float64"):
        opt.add_param_group({"params": [torch.zeros(3, dtype=torch.float64, requires_grad=True)]})
    assert len(opt.param_groups) == 1


def test_a_class_without_a_compact_kernel_refuses_16bit_params():
    class NoCompact(ft.Adam):  # what a table entry without a compact path inherits
        _COMPACT = False

    with pytest.raises(TypeError, match="param 0 .*bfloat16.*NoCompact"):
        NoCompact([torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)])
    p = torch.zeros(3, requires_grad=True)
    opt = NoCompact([p])
    p.data = torch.zeros(3, dtype=torch.float16)
    p.grad = torch.zeros(3, dtype=torch.float16)
    with pytest.raises(TypeError, match="param 0 .*float16"):
        opt.step()
    assert not opt.state


def _spoil_master_dtype(opt, p):
    opt.state[p]["master_param"] = opt.state[p]["master_param"].to(torch.float64)


@pytest.mark.parametrize("spoil,error,match", [
    (lambda opt, p: opt.state[p].__setitem__("exp_avg", opt.state[p]["exp_avg"].float()),
     TypeError, r"state\['exp_avg'\] of param 0 has dtype torch.float32, expected "
                r"torch.bfloat16"),
    (_spoil_master_dtype, TypeError, "master_param"),
    (lambda opt, p: opt.state[p].__setitem__("master_param", torch.zeros(5)), ValueError,
     "shape"),
    (lambda opt, p: opt.state[p].__setitem__("master_param", opt.state[p]["exp_avg_sq"]),
     TypeError, "master_param"),
    (lambda opt, p: setattr(p, "grad", torch.zeros(4, 3, dtype=torch.bfloat16).t()),
     ValueError, "memory order"),
])
def test_a_refused_16bit_step_changes_nothing(spoil, error, match):
    """Two groups, bfloat16 and float16: whichever call fails, nothing is written."""
    torch.manual_seed(0)
    a = torch.randn(3, 4).to(torch.bfloat16).requires_grad_()
    b = torch.randn(5).to(torch.float16).requires_grad_()
    opt = ft.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1,
                  rounding="stochastic")
    for _ in range(2):
        a.grad, b.grad = torch.randn(3, 4).to(a.dtype), torch.randn(5).to(b.dtype)
        opt.step()
    a.grad, b.grad = torch.randn(3, 4).to(a.dtype), torch.randn(5).to(b.dtype)
    spoil(opt, a)
    snap = [t.clone() for t in (a, b)] + [
        (t.clone() if torch.is_tensor(t) else t) for q in (a, b) for t in opt.state[q].values()]
    with pytest.raises(error, match=match):
        opt.step()
    now = [a, b] + [t for q in (a, b) for t in opt.state[q].values()]
    assert len(now) == len(snap)
    for x, y in zip(now, snap):
        assert same(x, y) if torch.is_tensor(x) and x.dtype != torch.float64 else \
            (torch.equal(x, y) if torch.is_tensor(x) else x == y)
