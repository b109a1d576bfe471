"""Compact storage for the optimizers generated from fastoptim/_kernels_elementwise.pxi.tp:
16-bit state, 16-bit params with a float32 master, nearest-even and stochastic rounding,
in the functional API (against fastoptim.reference, bit for bit, both builds, 1 and 2
threads) and in the classes (state stored compact, every step the reference's on the
class's own scalars, exact resume through state_dict and checkpoints).  Bad combinations
are refused and change nothing."""

import copy
import os

import numpy as np
import pytest

import fastoptim
from fastoptim import functional, reference
from fastoptim.optim import (ASGD, Adadelta, Adagrad, Adamax, AdamWScheduleFree, Lion, NAdam,
                             RAdam, Rprop)
from _elementwise_cases import ELEMENTWISE, NO_STEP, richest
from conftest import kernels_variants

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
KINDS = sorted(ELEMENTWISE)
N = 20_011   # above the parallel threshold (threads split it), not a tile multiple
# (param dtype, grad dtype, state dtype, master)
STORAGES = {"bf16-state": (F32, F32, BF16, False), "f16-state": (F32, F32, F16, False),
            "bf16-params-master": (BF16, BF16, BF16, True),
            "f16-params-no-master": (F16, F32, F32, False)}


@pytest.fixture(params=kernels_variants(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def variant(request, monkeypatch):
    monkeypatch.setattr(functional, "kernels", request.param)
    return request.param


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_same_bits(got, want, what):
    assert got.dtype == want.dtype, what
    np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=what)


def _state(kind, param, dtype):
    names, start, _ = ELEMENTWISE[kind]
    state = {}
    for name in names:
        state[name] = np.zeros(param.shape, dtype)
        state[name][...] = start.get(name, 0.0)
    if kind == "adamw_schedule_free":
        state["z"][...] = param  # z starts at the param
    return state


def _call(module, kind, param, grad, state, step, options, **extra):
    getattr(module, kind + "_")(param, grad, *(state[n] for n in ELEMENTWISE[kind][0]),
                                step=step, **options, **extra)


def _run(kind, options, storage, rounding, n=N, steps=4, n_threads=None, seed=11):
    """The kernels and the reference side by side from the same start: both final
    (param, state, master)."""
    pdt, gdt, sdt, with_master = STORAGES[storage]
    rng = np.random.default_rng(5)
    p = rng.standard_normal(n).astype(pdt)
    state = _state(kind, p, sdt)
    master = p.astype(F32) if with_master else None
    ours = (p, state, master)
    ref = (p.copy(), {k: v.copy() for k, v in state.items()},
           None if master is None else master.copy())
    for t in range(1, steps + 1):
        # gradients of every magnitude: subnormal and overflowing float16 results too
        g = (rng.standard_normal(n) * 2.0 ** rng.integers(-30, 6, n)).astype(gdt)
        for module, (pp, st, mm), extra in ((functional, ours, dict(n_threads=n_threads)),
                                            (reference, ref, {})):
            _call(module, kind, pp, g, st, t, options, master=mm, rounding=rounding,
                  seed=seed, **extra)
    return ours, ref


def _compare(ours, ref):
    _assert_same_bits(ours[0], ref[0], "param")
    for name, buf in ours[1].items():
        _assert_same_bits(buf, ref[1][name], name)
    if ours[2] is not None:
        _assert_same_bits(ours[2], ref[2], "master")


# ------------------------------------------------------------------ functional
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("storage", sorted(STORAGES))
@pytest.mark.parametrize("kind", KINDS)
def test_kernels_match_the_reference_bit_for_bit(variant, kind, storage, rounding):
    ours, ref = _run(kind, richest(kind), storage, rounding)
    _compare(ours, ref)
    assert ours[1][ELEMENTWISE[kind][0][0]].dtype == STORAGES[storage][2]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_same_bits_for_any_thread_count(kind, n_threads):
    for storage in ("bf16-params-master", "f16-state"):
        _compare(*_run(kind, richest(kind), storage, "stochastic", n=70_001,
                       n_threads=n_threads))


@pytest.mark.parametrize("kind", KINDS)
def test_every_option_set_with_bfloat16_params_and_state(variant, kind):
    for options in ELEMENTWISE[kind][2]:
        _compare(*_run(kind, options, "bf16-params-master", "stochastic", n=1_500, steps=3))


@pytest.mark.parametrize("kind", KINDS)
def test_lists_of_arrays_with_per_array_seeds_equal_calls_per_array(kind):
    rng = np.random.default_rng(2)
    sizes = [700, 0, 1_300]
    params = [rng.standard_normal(n).astype(BF16) for n in sizes]
    masters = [p.astype(F32) for p in params]
    states = [_state(kind, p, BF16) for p in params]
    singles = copy.deepcopy((params, masters, states))
    names = ELEMENTWISE[kind][0]
    options = richest(kind)
    seeds = [3, 2 ** 64 - 1, 17]
    for t in range(1, 4):
        grads = [rng.standard_normal(n).astype(BF16) for n in sizes]
        getattr(functional, kind + "_")(params, grads, *([s[n] for s in states] for n in names),
                                        step=t, master=masters, rounding="stochastic",
                                        seed=seeds, **options)
        for k in range(len(sizes)):
            _call(functional, kind, singles[0][k], grads[k], singles[2][k], t, options,
                  master=singles[1][k], rounding="stochastic", seed=seeds[k])
    for k in range(len(sizes)):
        _compare((params[k], states[k], masters[k]),
                 (singles[0][k], singles[2][k], singles[1][k]))


def test_int_seed_gives_array_k_seed_plus_k():
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(600).astype(BF16) for _ in range(2)]
    grads = [rng.standard_normal(600).astype(F32) for _ in range(2)]
    sums = [np.full(600, 0.1, BF16) for _ in range(2)]
    twins = copy.deepcopy((params, sums))
    functional.adagrad_(params, grads, sums, step=3, rounding="stochastic", seed=40)
    functional.adagrad_(twins[0], grads, twins[1], step=3, rounding="stochastic",
                        seed=[40, 41])
    for a, b in zip(params + sums, twins[0] + twins[1]):
        _assert_same_bits(a, b, "seed + k")


def test_stochastic_rounding_follows_seed_and_step():
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(4_000).astype(F32)
    g = rng.standard_normal(4_000).astype(F32)

    def run(seed, step):
        p, m = p0.astype(BF16), p0.copy()
        s = np.zeros(4_000, BF16)
        functional.lion_(p, g, s, step=step, lr=0.01, master=m, rounding="stochastic",
                         seed=seed)
        return _bits(s).copy()
    assert np.array_equal(run(1, 5), run(1, 5))
    assert not np.array_equal(run(1, 5), run(2, 5))
    assert not np.array_equal(run(1, 5), run(1, 6))


def _schedule_free_args():
    return dict(ckp1=0.3, lr=0.01, bias_correction2=0.5)


def _bad_cases():
    """(label, function name, arrays, keywords, exception, message)."""
    p32 = np.linspace(-1, 1, 64, dtype=F32)
    b = p32.astype(BF16)
    cases = []
    for kind in KINDS:
        n_bufs = len(ELEMENTWISE[kind][0])
        kw = richest(kind)
        if kind not in NO_STEP:
            kw = dict(kw, step=2)
        bf = [np.ones(64, BF16) for _ in range(n_bufs)]
        cases += [
            (f"{kind}-float64-param", kind, [p32.astype(np.float64), b.copy()] + bf, kw,
             TypeError, "param must have dtype float32, float16 or bfloat16, got float64"),
            (f"{kind}-master-for-float32", kind, [p32.copy(), b.copy()] + bf,
             dict(kw, master=p32.copy()), ValueError, "master is only for float16/bfloat16"),
            (f"{kind}-float16-master", kind, [b.copy(), b.copy()] + bf,
             dict(kw, master=p32.astype(F16)), TypeError, "master must have dtype float32"),
            (f"{kind}-master-shape", kind, [b.copy(), b.copy()] + bf,
             dict(kw, master=np.zeros(63, F32)), ValueError, "master"),
            (f"{kind}-int-state", kind, [b.copy(), b.copy()] + [np.ones(64, np.int16)] * n_bufs,
             kw, TypeError, "float32, float16 or bfloat16"),
            (f"{kind}-rounding", kind, [b.copy(), b.copy()] + bf, dict(kw, rounding="up"),
             ValueError, "rounding must be 'nearest' or 'stochastic'"),
            (f"{kind}-seed", kind, [b.copy(), b.copy()] + bf,
             dict(kw, rounding="stochastic", seed=-1), ValueError, "seed must be an int"),
            (f"{kind}-mixed-list", kind,
             [[b.copy(), b.copy()], [b.copy(), b.copy()]] + [[x, x.astype(F16)] for x in bf],
             kw, TypeError, "share one dtype"),
        ]
        master = p32.copy()
        shared = [b.copy(), b.copy()] + bf
        shared[-1] = master.view(BF16)[:64]  # a state buffer inside the master's memory
        cases.append((f"{kind}-shared-memory", kind, shared, dict(kw, master=master),
                      ValueError, "share memory"))
    cases.append(("schedule-free-stochastic-without-step", "adamw_schedule_free",
                  [b.copy(), b.copy(), b.copy(), np.ones(64, BF16)],
                  dict(_schedule_free_args(), rounding="stochastic"), ValueError,
                  "step is required with rounding='stochastic'"))
    return cases


BAD = _bad_cases()


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_combinations_are_refused_and_change_nothing(case):
    _, kind, arrays, kw, exc, match = case
    kw = dict(kw)
    if kind in NO_STEP:
        kw.update({k: v for k, v in _schedule_free_args().items() if k not in kw})
    before = copy.deepcopy((arrays, kw.get("master")))
    with pytest.raises(exc, match=match):
        getattr(functional, kind + "_")(*arrays, **kw)
    for got, want in zip(arrays, before[0]):
        for a, w in zip(got if isinstance(got, list) else [got],
                        want if isinstance(want, list) else [want]):
            _assert_same_bits(a, w, "unchanged")
    if kw.get("master") is not None:
        _assert_same_bits(kw["master"], before[1], "master unchanged")


# --------------------------------------------------------------------- classes
CLASSES = {  # kind: class and options with every state buffer and branch in play
    "adagrad": (Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=0.05,
                              initial_accumulator_value=0.1)),
    "lion": (Lion, dict(lr=0.01, weight_decay=0.1)),
    "adamax": (Adamax, dict(lr=0.01, weight_decay=0.05, maximize=True)),
    "radam": (RAdam, dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    "adadelta": (Adadelta, dict(lr=0.5, weight_decay=0.05)),
    "rprop": (Rprop, dict(lr=0.01, step_sizes=(1e-4, 0.05))),
    "nadam": (NAdam, dict(lr=0.01, weight_decay=0.05)),
    "asgd": (ASGD, dict(lr=0.01, t0=2, weight_decay=0.05)),
    "adamw_schedule_free": (AdamWScheduleFree, dict(lr=0.01, weight_decay=0.05,
                                                   warmup_steps=2)),
}
CLASS_STORAGES = [  # (param dtype, state_dtype, master_weights, rounding)
    (F32, "bfloat16", None, "nearest"), (F32, "float16", None, "stochastic"),
    (BF16, "bfloat16", None, "stochastic"), (BF16, None, None, "nearest"),
    (F16, "float16", False, "stochastic"),
]
CLASS_IDS = [f"{np.dtype(p).name}-{s}-{'nomaster' if m is False else 'master'}-{r}"
             for p, s, m, r in CLASS_STORAGES]


def _make(kind, params, state_dtype, master_weights, rounding, seed=9):
    cls, options = CLASSES[kind]
    opt = cls(params, **options, state_dtype=state_dtype, master_weights=master_weights,
              rounding=rounding, seed=seed)
    if kind == "adamw_schedule_free":
        opt.train()
    return opt


def _params(dtype, rng):
    return [rng.standard_normal((30, 7)).astype(dtype), rng.standard_normal(5).astype(dtype)]


def _functional_options(kind, opt, i, before, after, schedule):
    """The functional keywords of param i's step: the group's values and the scalars the
    class used (NAdam's mu_product after the step, ASGD's eta and mu before it,
    Schedule-Free's schedule)."""
    g = opt.param_groups[0]
    if kind == "adagrad":
        return dict(lr=g["lr"], lr_decay=g["lr_decay"], weight_decay=g["weight_decay"],
                    eps=g["eps"], maximize=g["maximize"])
    if kind == "lion":
        return dict(lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1],
                    weight_decay=g["weight_decay"])
    if kind == "adadelta":
        return dict(lr=g["lr"], rho=g["rho"], eps=g["eps"], weight_decay=g["weight_decay"],
                    maximize=g["maximize"])
    if kind == "rprop":
        return dict(etaminus=g["etas"][0], etaplus=g["etas"][1],
                    step_size_min=g["step_sizes"][0], step_size_max=g["step_sizes"][1],
                    maximize=g["maximize"])
    if kind == "asgd":
        eta, mu = (before.get("eta", np.float32(g["lr"]).item()), before.get("mu", 1.0))
        return dict(eta=eta, mu=mu, lambd=g["lambd"], weight_decay=g["weight_decay"],
                    maximize=g["maximize"])
    if kind == "adamw_schedule_free":
        ckp1, lr, bias_correction2 = schedule
        return dict(ckp1=ckp1, lr=lr, bias_correction2=bias_correction2,
                    beta1=g["betas"][0], beta2=g["betas"][1], eps=g["eps"],
                    weight_decay=g["weight_decay"])
    kw = dict(lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1], eps=g["eps"],
              weight_decay=g["weight_decay"], maximize=g["maximize"])
    if kind in ("radam", "nadam"):
        kw["decoupled_weight_decay"] = g["decoupled_weight_decay"]
    if kind == "nadam":
        kw.update(mu_product=after["mu_product"], momentum_decay=g["momentum_decay"])
    return kw


@pytest.mark.parametrize("storage", CLASS_STORAGES, ids=CLASS_IDS)
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_class_state_is_compact_and_each_step_is_the_reference(kind, storage):
    """Before each step, copy the class's params and state (buffers it has not created
    yet: as it creates them); after it, the reference on the copies with the step's
    scalars must give the class's bits."""
    pdt, state_dtype, master_weights, rounding = storage
    rng = np.random.default_rng(0)
    params = _params(pdt, rng)
    opt = _make(kind, params, state_dtype, master_weights, rounding)
    names = ELEMENTWISE[kind][0]
    keys = opt._ALL_BUFFERS  # the class's names of the functional's buffers, in order
    for t in range(1, 6):
        grads = [rng.standard_normal(p.shape).astype(pdt) for p in params]
        group = opt.param_groups[0]
        schedule = opt._advance(0, group)[0] if kind == "adamw_schedule_free" else None
        before = []
        for i, p in enumerate(params):
            st = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                  for k, v in opt.state.get(i, {}).items()}
            for key in keys + (("master",) if opt._uses_master(p) else ()):
                if key not in st:
                    st[key] = opt._new_buffer(p, key, group)
            before.append((p.copy(), st))
        opt.step(grads)
        for i, (p, st) in enumerate(before):
            after = opt.state[i]
            kw = _functional_options(kind, opt, i, st, after, schedule)
            reference_step = getattr(reference, kind + "_")
            reference_step(p, grads[i], *(st[k] for k in keys), step=t,
                           master=st.get("master"), rounding=rounding,
                           seed=(opt.seed + i) % 2 ** 64, **kw)
            _assert_same_bits(params[i], p, f"param {i} at step {t}")
            for key, name in zip(keys, names):
                want = np.dtype(state_dtype) if state_dtype else F32
                assert after[key].dtype == want, key
                _assert_same_bits(after[key], st[key], f"{key} of param {i} at step {t}")
            assert ("master" in after) == (pdt != F32 and master_weights is not False)
            if "master" in after:
                _assert_same_bits(after["master"], st["master"], "master")
                if rounding == "nearest":
                    np.testing.assert_array_equal(_bits(params[i]),
                                                  _bits(after["master"].astype(pdt)))


@pytest.mark.parametrize("storage", CLASS_STORAGES, ids=CLASS_IDS)
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_class_resume_through_state_dict_and_checkpoint_is_bit_exact(kind, storage, tmp_path):
    pdt, state_dtype, master_weights, rounding = storage
    rng = np.random.default_rng(1)
    init = _params(pdt, rng)
    grads = [[rng.standard_normal(p.shape).astype(pdt) for p in init] for _ in range(8)]
    straight = [p.copy() for p in init]
    opt = _make(kind, straight, state_dtype, master_weights, rounding)
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in init]
    opt1 = _make(kind, first, state_dtype, master_weights, rounding)
    for g in grads[:3]:
        opt1.step(g)
    if kind == "adamw_schedule_free":
        opt1.eval()  # saved in eval mode, as schedulefree advises
    path = os.fspath(tmp_path / "ckpt.npz")
    fastoptim.save(path, opt=opt1.state_dict(), params=first)
    ck = fastoptim.load(path)
    resumed = [np.array(p) for p in ck["params"]]
    opt2 = _make(kind, resumed, state_dtype, master_weights, rounding)
    opt2.load_state_dict(ck["opt"])
    if kind == "adamw_schedule_free":
        opt2.train()
    for g in grads[3:]:
        opt2.step(g)
    if kind == "adamw_schedule_free" and master_weights is False and pdt != F32:
        return  # the switch rounds 16-bit params without a master: not the same path
    for a, b in zip(straight, resumed):
        _assert_same_bits(b, a, "param")
    for i in opt.state:
        for name, buf in opt.state[i].items():
            if isinstance(buf, np.ndarray):
                assert opt2.state[i][name].dtype == buf.dtype
                _assert_same_bits(opt2.state[i][name], buf, name)
            else:
                assert opt2.state[i][name] == buf, name


def test_schedule_free_switch_moves_the_master_and_rounds_the_param():
    rng = np.random.default_rng(3)
    p = rng.standard_normal(300).astype(BF16)
    opt = AdamWScheduleFree([p], lr=0.05, state_dtype="bfloat16")
    opt.train()
    for _ in range(3):
        opt.step([rng.standard_normal(300).astype(BF16)])
    st = opt.state[0]
    x = st["master"].copy()
    reference.lerp_(x, st["z"].astype(F32), 1 - 1 / 0.9)
    opt.eval()
    _assert_same_bits(st["master"], x, "master moved to x")
    _assert_same_bits(p, x.astype(BF16), "param = master rounded")
    reference.lerp_(x, st["z"].astype(F32), 1 - 0.9)
    opt.train()
    _assert_same_bits(st["master"], x, "master moved back to y")


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_class_refuses_int8_state_and_bad_storage_options(kind):
    cls, options = CLASSES[kind]
    p = [np.zeros(3, F32)]
    if kind in ("adadelta", "rprop", "asgd"):  # the others take it
        with pytest.raises(ValueError, match=rf"Invalid state_dtype: 'int8' \({cls.__name__} "
                                             r"keeps no 8-bit state"):
            cls(p, **options, state_dtype="int8")
    for kwargs, exc, match in ((dict(state_dtype="int4"), ValueError, "Invalid state_dtype"),
                               (dict(rounding="up"), ValueError, "Invalid rounding: 'up'"),
                               (dict(seed=-1), ValueError, "Invalid seed: -1"),
                               (dict(master_weights="yes"), TypeError,
                                "Invalid master_weights")):
        with pytest.raises(exc, match=match):
            cls(p, **options, **kwargs)


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_class_refused_step_changes_nothing(kind):
    rng = np.random.default_rng(8)
    p = rng.standard_normal(50).astype(BF16)
    opt = _make(kind, [p], "bfloat16", None, "stochastic")
    opt.step([rng.standard_normal(50).astype(BF16)])
    before = p.copy(), copy.deepcopy(opt.state), copy.deepcopy(opt.param_groups[0])
    before[2].pop("params")
    with pytest.raises(TypeError, match="grad 0 has dtype float64"):
        opt.step([rng.standard_normal(50)])
    with pytest.raises(ValueError, match="grad 0 has shape"):
        opt.step([rng.standard_normal(49).astype(BF16)])
    _assert_same_bits(p, before[0], "param")
    for key, value in before[1][0].items():
        if isinstance(value, np.ndarray):
            _assert_same_bits(opt.state[0][key], value, key)
        else:
            assert opt.state[0][key] == value
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == before[2]
