"""The step uses what is in param_groups / state, checked; a rejected step changes
nothing, whichever kernel call it would have failed in; None grads skip their params;
step(None) is a TypeError; concurrent steps are serialized; optimizers pickle."""

import copy
import pickle
import subprocess
import sys
import threading
import textwrap

import numpy as np
import pytest

from fastoptim.optim import SGD, Adam, AdamW, RMSprop

from conftest import subprocess_env

CONFIGS = [
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    (AdamW, dict(lr=0.01)),
]
IDS = [c.__name__ for c, _ in CONFIGS]


def model(rng):
    """Three kernel calls: group 0 holds a float64 and a float32 param, group 1 float64."""
    return [rng.standard_normal((4, 3)), rng.standard_normal(5).astype(np.float32),
            rng.standard_normal((2, 3))]


def build(cls, kw, params):
    return cls([dict(params=params[:2]), dict(params=params[2:], lr=kw["lr"] / 2)], **kw)


def grads_for(rng, params):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def snapshot(opt):
    """Bytes of every param and state buffer, the step counts and the entry names."""
    def data(x):
        return (x.tobytes(), x.shape, x.flags.writeable) if isinstance(x, np.ndarray) else repr(x)

    params = [[data(p) for p in g["params"]] if isinstance(g["params"], list) else data(g["params"])
              for g in opt.param_groups]
    state = {i: {k: data(v) for k, v in st.items()} if isinstance(st, dict) else data(st)
             for i, st in opt.state.items()}
    return params, state


def assert_same_run(opt, ref):
    """opt and ref hold equal params and state, bit for bit."""
    a, b = opt.state_dict(), ref.state_dict()
    for g, h in zip(opt.param_groups, ref.param_groups):
        for p, q in zip(g["params"], h["params"]):
            np.testing.assert_array_equal(p, q)
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k, v in a["state"][i].items():
            np.testing.assert_array_equal(v, b["state"][i][k], err_msg=f"{i} {k}")


def twins(cls, kw, rng, steps=2):
    """Two optimizers on equal copies, stepped alike."""
    params = model(rng)
    copies = [p.copy() for p in params]
    opt, ref = build(cls, kw, params), build(cls, kw, copies)
    for _ in range(steps):
        g = grads_for(rng, params)
        opt.step(g)
        ref.step(g)
    return opt, ref


# ------------------------------------------------------------------ step(None)
def test_step_none_is_a_type_error_not_a_crash():
    # This crashed the interpreter once: run it in a child process.
    script = textwrap.dedent("""
        import numpy as np
        from fastoptim.optim import SGD, Momentum, RMSprop, Adam, AdamW
        for cls in (SGD, Momentum, RMSprop, Adam, AdamW):
            for groups in ([np.zeros(3)], [dict(params=[np.zeros(3)]), dict(params=[np.zeros(2)])]):
                opt = cls(groups)
                n = sum(len(g["params"]) for g in opt.param_groups)
                for stepped in (False, True):
                    for bad in (None, 3.0, np.zeros(3)):
                        try:
                            opt.step(bad)
                        except TypeError as exc:
                            assert "grads must be a list or tuple" in str(exc), exc
                        else:
                            raise AssertionError(f"{cls.__name__}.step({bad!r}) passed")
                    opt.step([np.ones(p.shape) for g in opt.param_groups for p in g["params"]])
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=subprocess_env(), cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------- live objects
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_replaced_param_is_the_one_updated(cls, kw, rng):
    opt, ref = twins(cls, kw, rng)
    old = opt.param_groups[1]["params"][0]
    new = old.copy()
    opt.param_groups[1]["params"][0] = new
    frozen = old.copy()
    for _ in range(3):
        g = grads_for(rng, opt.param_groups[0]["params"] + [new])
        opt.step(g)
        ref.step(g)
    np.testing.assert_array_equal(old, frozen)  # the replaced array is left alone
    assert_same_run(opt, ref)
    assert opt.state[2]["step"] == 5


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_replaced_state_buffer_is_the_one_used(cls, kw, rng):
    opt, ref = twins(cls, kw, rng)
    for i in (0, 2):
        for name in list(opt.state[i]):
            if name != "step":
                opt.state[i][name] = opt.state[i][name] * 0.5  # a new array
                ref.state[i][name] *= 0.5                      # the same array, in place
    replaced = opt.state[2][name]
    g = grads_for(rng, model(rng))
    opt.step(g)
    ref.step(g)
    assert opt.state[2][name] is replaced  # updated in place, not a cached old buffer
    assert_same_run(opt, ref)


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_state_clear_restarts_state_as_torch_does(cls, kw, rng):
    opt, _ = twins(cls, kw, rng, steps=3)
    opt.state.clear()
    fresh = build(cls, kw, [p.copy() for g in opt.param_groups for p in g["params"]])
    for _ in range(2):
        g = grads_for(rng, model(rng))
        opt.step(g)
        fresh.step(g)
    assert_same_run(opt, fresh)
    assert [opt.state[i]["step"] for i in range(3)] == [2, 2, 2]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_deleted_state_entry_restarts_that_param(cls, kw, rng):
    opt, ref = twins(cls, kw, rng)
    del opt.state[1]
    ref.state[1] = {}  # torch's empty entry means the same
    solo = build(cls, kw, [p.copy() for g in opt.param_groups for p in g["params"]])
    for _ in range(2):
        g = grads_for(rng, model(rng))
        opt.step(g)
        ref.step(g)
        solo.step(g)
    assert_same_run(opt, ref)
    np.testing.assert_array_equal(opt.param_groups[0]["params"][1], solo.param_groups[0]["params"][1])
    assert [opt.state[i]["step"] for i in range(3)] == [4, 2, 4]


@pytest.mark.parametrize("cls,kw,name", [
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True), "square_avg"),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True), "momentum_buffer"),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True), "grad_avg"),
    (Adam, dict(lr=0.01, amsgrad=True), "max_exp_avg_sq"),
])
def test_deleted_buffer_starts_again_at_zeros(cls, kw, name, rng):
    opt, ref = twins(cls, kw, rng)
    del opt.state[2][name]
    ref.state[2][name][...] = 0.0
    g = grads_for(rng, model(rng))
    opt.step(g)
    ref.step(g)
    assert_same_run(opt, ref)


def test_sgd_deleted_momentum_buffer_starts_from_the_gradient(rng):
    # torch: a missing buffer is started from the gradient (test_torch_state_dicts.py
    # compares with torch itself).
    opt, _ = twins(SGD, dict(lr=0.1, momentum=0.9, dampening=0.5), rng)
    opt.state[0]["momentum_buffer"] = None
    p = opt.param_groups[0]["params"][0]
    fresh = SGD([p.copy()], lr=0.1, momentum=0.9, dampening=0.5)
    g = grads_for(rng, model(rng))
    opt.step(g)
    fresh.step(g[:1])
    np.testing.assert_array_equal(p, fresh.param_groups[0]["params"][0])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], g[0])


# ------------------------------------------------- rejected steps change nothing
def _other_param_view(opt):
    return opt.param_groups[0]["params"][0].reshape(-1)[:6]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# Each edit breaks something the step would meet in the LAST kernel call (group 1),
# or in the second one (the float32 param of group 0); the step must raise before
# the first call writes anything.
BAD_EDITS = [
    ("param replaced by another shape",
     lambda o: o.param_groups[1]["params"].__setitem__(0, np.zeros((3, 2))),
     ValueError, r"state\[2\]\['\w+'\] has shape \(2, 3\), param 2 has shape \(3, 2\)"),
    ("param replaced by another dtype",
     lambda o: o.param_groups[1]["params"].__setitem__(0, np.zeros((2, 3), np.float32)),
     TypeError, "param 2 has dtype float32"),
    ("param replaced by a non-contiguous view",
     lambda o: o.param_groups[1]["params"].__setitem__(0, np.zeros((2, 6))[:, ::2]),
     ValueError, "param 2 .* not contiguous"),
    ("param replaced by a read-only array",
     lambda o: o.param_groups[1]["params"].__setitem__(0, _readonly(np.zeros((2, 3)))),
     ValueError, "param 2 .* read-only"),
    ("param replaced by a Fortran-order array",
     lambda o: o.param_groups[1]["params"].__setitem__(0, np.zeros((2, 3), order="F")),
     ValueError, "memory order of param 2"),
    ("param replaced by memory of another param",
     lambda o: o.param_groups[1]["params"].__setitem__(0, _other_param_view(o).reshape(2, 3)),
     ValueError, "param 0 and param 2 share memory"),
    ("param replaced by another param",
     lambda o: o.param_groups[1]["params"].__setitem__(0, o.param_groups[0]["params"][0]),
     ValueError, "appear more than once"),
    ("param replaced by a list",
     lambda o: o.param_groups[1]["params"].__setitem__(0, [[0.0] * 3] * 2),
     TypeError, "can only optimize ndarrays"),
    ("param made read-only in place",
     lambda o: setattr(o.param_groups[1]["params"][0].flags, "writeable", False),
     ValueError, "param 2 .* read-only"),
    ("float32 param made read-only in place",
     lambda o: setattr(o.param_groups[0]["params"][1].flags, "writeable", False),
     ValueError, "param 1 .* read-only"),
    ("param reshaped in place",
     lambda o: setattr(o.param_groups[1]["params"][0], "shape", (3, 2)),
     ValueError, "has shape"),
    ("param added to a group",
     lambda o: o.param_groups[1]["params"].append(np.zeros(2)),
     ValueError, r"now have \[2, 2\] params, they had \[2, 1\]"),
    ("params of a group not a list",
     lambda o: o.param_groups[1].__setitem__("params", 7),
     TypeError, r"param_groups\[1\]\['params'\] must be a list"),
    ("hyperparameter deleted",
     lambda o: o.param_groups[1].pop("lr"),
     ValueError, r"param_groups\[1\] has no 'lr' entry"),
    ("hyperparameter out of range",
     lambda o: o.param_groups[1].__setitem__("lr", -1.0),
     ValueError, "Invalid learning rate: -1.0"),
    ("hyperparameter too large",
     lambda o: o.param_groups[1].__setitem__("weight_decay", 10**400),
     ValueError, "Invalid weight_decay value: an int of"),
    ("buffer replaced by another shape",
     lambda o: o.state[2].__setitem__(_name(o), np.zeros(6)),
     ValueError, r"state\[2\]\['\w+'\] has shape \(6,\), param 2 has shape \(2, 3\)"),
    ("buffer replaced by another dtype",
     lambda o: o.state[2].__setitem__(_name(o), np.zeros((2, 3), np.float32)),
     TypeError, r"state\[2\]\['\w+'\] has dtype float32"),
    ("buffer replaced by a Fortran-order array",
     lambda o: o.state[2].__setitem__(_name(o), np.zeros((2, 3), order="F")),
     ValueError, r"state\[2\]\['\w+'\] must be contiguous in the memory order"),
    ("buffer replaced by a read-only array",
     lambda o: o.state[2].__setitem__(_name(o), _readonly(np.zeros((2, 3)))),
     ValueError, r"state\[2\]\['\w+'\] is read-only"),
    ("buffer replaced by a list",
     lambda o: o.state[2].__setitem__(_name(o), [[0.0] * 3] * 2),
     TypeError, r"state\[2\]\['\w+'\] must be an ndarray"),
    ("buffer replaced by memory of a param",
     lambda o: o.state[2].__setitem__(_name(o), _other_param_view(o).reshape(2, 3)),
     ValueError, r"param 0 and state\[2\]\['\w+'\] share memory"),
    ("buffer made read-only in place",
     lambda o: setattr(o.state[2][_name(o)].flags, "writeable", False),
     ValueError, r"state\[2\]\['\w+'\] is read-only"),
    ("float32 buffer made read-only in place",
     lambda o: setattr(o.state[1][_name(o)].flags, "writeable", False),
     ValueError, r"state\[1\]\['\w+'\] is read-only"),
    ("buffer reshaped in place",
     lambda o: setattr(o.state[2][_name(o)], "shape", (3, 2)),
     ValueError, r"state\[2\]\['\w+'\] has shape \(3, 2\)"),
    ("step count not a number",
     lambda o: o.state[2].__setitem__("step", "two"),
     ValueError, r"state\[2\]\['step'\] must be an int >= 0"),
    ("step count negative",
     lambda o: o.state[2].__setitem__("step", -1),
     ValueError, r"state\[2\]\['step'\] must be an int >= 0"),
    ("step count not integral",
     lambda o: o.state[2].__setitem__("step", 2.5),
     ValueError, r"state\[2\]\['step'\] must be an int >= 0"),
    ("state entry not a dict",
     lambda o: o.state.__setitem__(2, [1, 2]),
     TypeError, r"state\[2\] must be a dict"),
]


def _name(opt):
    return {SGD: "momentum_buffer", RMSprop: "square_avg", Adam: "exp_avg",
            AdamW: "exp_avg_sq"}[type(opt)]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("what,edit,exc,match", BAD_EDITS, ids=[e[0] for e in BAD_EDITS])
def test_bad_edit_is_refused_and_changes_nothing(cls, kw, what, edit, exc, match, rng):
    opt, _ = twins(cls, kw, rng)
    grads = grads_for(rng, model(rng))
    edit(opt)
    before = snapshot(opt)
    for _ in range(2):  # refused again: the plan is not replaced by a half-checked one
        with pytest.raises(exc, match=match):
            opt.step(grads)
        assert snapshot(opt) == before


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_adam_step_bound_buffer_missing_is_refused(cls, kw, rng):
    opt, _ = twins(cls, kw, rng)
    if cls in (Adam, AdamW):
        del opt.state[2]["exp_avg_sq"]
        before = snapshot(opt)
        with pytest.raises(ValueError, match=r"state\[2\] is missing 'exp_avg_sq' at step 2"):
            opt.step(grads_for(rng, model(rng)))
        assert snapshot(opt) == before
        del opt.state[2]  # the way out the message names
    else:
        for name in [k for k in opt.state[2] if k != "step"]:
            del opt.state[2][name]  # re-created: SGD from the grad, RMSprop at zeros
    opt.step(grads_for(rng, model(rng)))


BAD_GRADS = [  # each in the last kernel call (group 1) or the float32 call
    ("wrong dtype", lambda g, o: g.__setitem__(2, g[2].astype(np.float32)), TypeError,
     "grad 2 has dtype float32"),
    ("wrong shape", lambda g, o: g.__setitem__(2, g[2].reshape(3, 2)), ValueError,
     "grad 2 has shape"),
    ("not an array", lambda g, o: g.__setitem__(1, [0.0] * 5), TypeError, "grad 1 is list"),
    ("aliases a state buffer of another call",
     lambda g, o: g.__setitem__(2, o.state[0][_name(o)].reshape(-1)[:6].reshape(2, 3)),
     ValueError, r"grad 2 and state\[0\]\['\w+'\] share memory"),
    ("aliases a param of another call",
     lambda g, o: g.__setitem__(1, o.param_groups[1]["params"][0].reshape(-1)[:5]
                                .astype(np.float32, copy=False)
                                if False else _other_param_view(o)[:5].view(np.float32)[:5]),
     ValueError, "grad 1 and param 0 share memory"),
]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("what,edit,exc,match", BAD_GRADS, ids=[e[0] for e in BAD_GRADS])
def test_bad_grad_in_a_later_call_changes_nothing(cls, kw, what, edit, exc, match, rng):
    opt, _ = twins(cls, kw, rng)
    grads = grads_for(rng, model(rng))
    edit(grads, opt)
    before = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.step(grads)
    assert snapshot(opt) == before


# ------------------------------------------------------------ None gradients
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_none_grad_skips_its_param(cls, kw, rng):
    """Like torch with .grad None: no state created, no step counted for that param;
    the others step exactly as an optimizer of their own would."""
    params = model(rng)
    opt = build(cls, kw, params)
    solo = [cls([p.copy()], **dict(kw, lr=kw["lr"] / (2 if i == 2 else 1)))
            for i, p in enumerate(params)]
    pattern = [(1, 0, 1), (1, 1, 0), (0, 1, 1), (1, 1, 1), (0, 0, 0), (1, 0, 1)]
    for mask in pattern:
        g = [x if m else None for x, m in zip(grads_for(rng, params), mask)]
        assert opt.step(g) is True
        if mask == (1, 0, 1) and 1 not in opt.state:
            assert opt.state.get(1) is None  # no state created for the skipped param
        for s, x in zip(solo, g):
            if x is not None:
                s.step([x])
    for i, (p, s) in enumerate(zip(params, solo)):
        np.testing.assert_array_equal(p, s.param_groups[0]["params"][0])
        assert opt.state[i]["step"] == s.state[0]["step"]
        for k, v in s.state[0].items():
            np.testing.assert_array_equal(opt.state[i][k], v)
    assert [opt.state[i]["step"] for i in range(3)] == [4, 3, 4]


def test_all_none_grads_change_nothing(rng):
    params = model(rng)
    opt = build(Adam, dict(lr=0.1), params)
    before = snapshot(opt)
    assert opt.step([None, None, None]) is True
    assert snapshot(opt) == before and opt.state == {}


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_nonfinite_guard_ignores_none_and_names_the_right_grad(mode, rng):
    params = model(rng)
    opt = Adam(params, nonfinite=mode)
    g = grads_for(rng, params)
    g[0] = None
    g[2][1, 1] = np.nan
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="grad 2 contains non-finite"):
            opt.step(g)
    else:
        assert opt.step(g) is False
    assert opt.state == {}


# ------------------------------------------------------------------- threads
def _run_threads(targets):
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_threads_stepping_one_optimizer_lose_no_step(cls, kw, rng):
    n_threads, n_steps = 4, 40
    params = [rng.standard_normal(20_000), rng.standard_normal(300).astype(np.float32),
              rng.standard_normal(20_000)]
    serial = [p.copy() for p in params]
    opt, ref = build(cls, kw, params), build(cls, kw, serial)
    grads = grads_for(rng, params)  # the same grads every step: the order cannot matter
    errors = []

    def work():
        try:
            for _ in range(n_steps):
                opt.step(grads)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_threads([work] * n_threads)
    assert not errors
    for _ in range(n_threads * n_steps):
        ref.step(grads)
    assert [opt.state[i]["step"] for i in range(3)] == [n_threads * n_steps] * 3
    assert_same_run(opt, ref)


def test_threads_on_different_optimizers(rng):
    runs = []
    for cls, kw in CONFIGS:
        params = model(rng)
        runs.append((build(cls, kw, params), build(cls, kw, [p.copy() for p in params]),
                     [grads_for(rng, params) for _ in range(30)]))

    def work(opt, grads):
        return lambda: [opt.step(g) for g in grads]

    _run_threads([work(opt, grads) for opt, _, grads in runs])
    for opt, ref, grads in runs:
        for g in grads:
            ref.step(g)
        assert_same_run(opt, ref)


def test_lock_is_documented():
    assert "lock" in SGD.__mro__[1].__doc__


# ----------------------------------------------------------------- pickling
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_copies_continue_identically_with_their_own_lock(cls, kw, how, rng):
    opt, _ = twins(cls, kw, rng)
    twin = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    assert twin._lock is not opt._lock
    for _ in range(3):
        g = grads_for(rng, model(rng))
        opt.step(g)
        twin.step(g)
    assert_same_run(twin, opt)
    assert not np.shares_memory(twin.param_groups[0]["params"][0],
                                opt.param_groups[0]["params"][0])


# ---- the one-kernel-call fast step (one group, one dtype): it reuses its checks only
# ---- while every object they were made from is the live one
def _one_call(cls, kw, rng, steps=3):
    params = [rng.standard_normal(4), rng.standard_normal((2, 3)), rng.standard_normal(1)]
    opt = cls(params, **kw)
    for _ in range(steps):
        opt.step(grads_for(rng, params))
    return opt, params


def _in_place_nan(opt):
    opt.param_groups[0]["lr"][...] = np.nan


def _equal_swap(key, first, then):
    """A step with group value ``first`` (valid), then ``then``: equal, of a refused type."""
    def edit(opt):
        group = opt.param_groups[0]
        group[key] = first
        opt.step([np.zeros_like(p) for p in group["params"]])
        group[key] = then
    return edit


FAST_BAD_EDITS = [
    ("lr 1 then True", _equal_swap("lr", 1, True), TypeError, "learning rate"),
    ("foreach False then 0", _equal_swap("foreach", False, 0), TypeError, "foreach"),
    ("key deleted", lambda o: o.param_groups[0].pop("maximize"), ValueError, "maximize"),
    # values that change in place are checked again every step
    ("0-d array lr set to nan", _in_place_nan, ValueError, "nan"),
    ("step a 1-element array", lambda o: o.state[0].__setitem__(
        "step", np.array([o.state[0]["step"]])), ValueError, "step"),
]


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("what,edit,exc,match", FAST_BAD_EDITS,
                         ids=[e[0] for e in FAST_BAD_EDITS])
def test_fast_step_rechecks_what_changed(cls, kw, what, edit, exc, match, rng):
    if what.startswith("0-d"):
        kw = dict(kw, lr=np.array(kw["lr"]))
    opt, params = _one_call(cls, kw, rng)
    if what.startswith("foreach") and "foreach" not in cls._TORCH_FLAGS:
        pytest.skip("no foreach switch")
    edit(opt)
    before = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.step(grads_for(rng, params))
    assert snapshot(opt) == before


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_fast_step_uses_replaced_equal_objects(cls, kw, rng):
    """Objects equal to the planned ones but not the same are the ones used: a
    1-element param and buffer replaced by equal copies, a new equal lr."""
    opt, params = _one_call(cls, kw, rng)
    opt2, params2 = copy.deepcopy((opt, params))
    new_p = params2[2].copy()
    opt2.param_groups[0]["params"][2] = new_p
    name = next(k for k in opt2.state[2] if k != "step")
    new_buf = opt2.state[2][name].copy()
    opt2.state[2][name] = new_buf
    opt2.param_groups[0]["lr"] = float(str(kw["lr"]))
    gs = grads_for(rng, params)
    opt.step(gs)
    opt2.step(gs)
    assert opt2.state[2][name] is new_buf and opt2.param_groups[0]["params"][2] is new_p
    assert_same_run(opt2, opt)
    assert not np.array_equal(new_p, params2[2])  # the replaced one was not updated
