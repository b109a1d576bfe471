"""fastoptim.torch's repeated step (``_Armed``: the last step's single kernel call, run
again while only the grads and the group's values changed) and the step's entry (torch's
hook wrapper only when hooks or a profiler need it): what torch users rely on still holds.

* every class takes the armed path once its state exists, and its results equal the full
  path's (every step planned and checked from scratch) bit for bit: params, buffers,
  step counts and per-param scalars (NAdam's ``mu_product``, ASGD's ``eta``/``mu``) and
  Schedule-Free's group schedule; with new grad tensors each step or the same ones
  (``zero_grad(set_to_none=False)``), and with a scheduler changing lr;
* anything edited between steps (a step count, a scalar, a buffer replaced, ``p.data``)
  is seen: the step then runs the full path, as if nothing had been armed;
* step pre/post hooks (global and per-optimizer, in torch's order; a pre hook may
  replace the arguments), the profiler's ``Optimizer.step#<class>.step`` range, and the
  version counters of every tensor written (params, buffers, step counts, scalars) on
  every step, so a graph that saved a param before the step refuses its backward.
"""

import copy

import pytest

torch = pytest.importorskip("torch")

import fastoptim.torch as ft  # noqa: E402
from _torch_models import data, mlp  # noqa: E402

CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("RMSprop", dict(lr=0.001, momentum=0.5, centered=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01)),
    ("Adadelta", dict(lr=0.5)),
    ("Adamax", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.01, decoupled_weight_decay=True,
                   weight_decay=0.01)),
    ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.05, t0=5)),
    ("ASGD", dict(lr=0.05, lambd=1e-3, alpha=0.5, t0=3, weight_decay=0.01)),
    ("Lion", dict(lr=1e-3)),
    ("AdamWScheduleFree", dict(lr=0.01)),
    ("AdamWScheduleFree", dict(lr=0.01, warmup_steps=4, r=0.5, weight_decay=0.01)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CONFIGS]
DTYPES = [torch.float32, torch.float64]


def make(name, params, kw):
    opt = getattr(ft, name)(params, **kw)
    if hasattr(opt, "train"):  # schedule-free: train mode before stepping
        opt.train()
    return opt


def backward(net, X, Y, set_to_none=True, opt=None):
    (opt or net).zero_grad(set_to_none=set_to_none)
    ((net(X) - Y) ** 2).mean().backward()


def snapshot(net, opt):
    """Params, every state entry and the group values, cloned."""
    state = {k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in st.items()}
             for k, st in opt.state_dict()["state"].items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return [p.detach().clone() for p in net.parameters()], state, groups


def assert_identical(a, b):
    params_a, state_a, groups_a = a
    params_b, state_b, groups_b = b
    assert all(torch.equal(x, y) for x, y in zip(params_a, params_b))
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert list(state_a[k]) == list(state_b[k])
        for n, v in state_a[k].items():
            w = state_b[k][n]
            assert (torch.equal(v, w) and v.dtype == w.dtype) if torch.is_tensor(v) \
                else v == w, n
    assert groups_a == groups_b


class FullPathOnly:
    """An optimizer whose every step plans and checks from scratch (nothing armed)."""

    def __init__(self, opt):
        self.opt = opt

    def step(self):
        self.opt._armed = None
        self.opt.step()


def run(name, kw, dtype, steps, full_path, set_to_none=True, sched=None):
    X, Y = data("mlp", dtype)
    net = mlp(dtype)
    opt = make(name, net.parameters(), kw)
    scheduler = sched(opt) if sched else None
    stepper = FullPathOnly(opt) if full_path else opt
    armed_steps = 0
    for _ in range(steps):
        backward(net, X, Y, set_to_none, opt)
        armed = opt._armed
        stepper.step()
        armed_steps += armed is not None and opt._armed is armed
        if scheduler is not None:
            scheduler.step()
    return net, opt, armed_steps


# ------------------------------------------------------------------ the armed path
@pytest.mark.parametrize("set_to_none", [True, False], ids=["new-grads", "same-grads"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_armed_steps_equal_the_full_path_bit_for_bit(name, kw, dtype, set_to_none):
    net, opt, armed_steps = run(name, kw, dtype, 12, False, set_to_none)
    ref_net, ref_opt, _ = run(name, kw, dtype, 12, True, set_to_none)
    assert armed_steps >= 10  # all but the first steps (state made, then armed)
    assert_identical(snapshot(net, opt), snapshot(ref_net, ref_opt))


@pytest.mark.parametrize("name,kw", [c for c in CONFIGS if c[0] in
                                     ("Adam", "NAdam", "ASGD", "Lion")], ids=str)
def test_armed_steps_follow_a_scheduler(name, kw):
    def sched(o):
        return torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.02, total_steps=20,
                                                   cycle_momentum=False)
    net, opt, armed_steps = run(name, kw, torch.float64, 15, False, sched=sched)
    ref_net, ref_opt, _ = run(name, kw, torch.float64, 15, True, sched=sched)
    assert armed_steps >= 13
    assert_identical(snapshot(net, opt), snapshot(ref_net, ref_opt))


def _mlp_stepped_twice(name):
    """The float32 MLP and its fastoptim.torch optimizer (CONFIGS' options for `name`)
    after two steps, so the next one runs armed; with the data (X, Y)."""
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    X, Y = data("mlp", torch.float32)
    net = mlp(torch.float32)
    opt = make(name, net.parameters(), kw)
    for _ in range(2):
        backward(net, X, Y)
        opt.step()
    return net, opt, X, Y


@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD", "AdamWScheduleFree"])
def test_the_armed_step_is_one_kernel_call_and_no_planning(name, monkeypatch):
    net, opt, X, Y = _mlp_stepped_twice(name)
    calls = []
    functional = getattr(ft._F, opt._FUNCTIONAL)
    monkeypatch.setattr(ft._F, opt._FUNCTIONAL,
                        lambda *a, **k: calls.append(len(a[0])) or functional(*a, **k))
    monkeypatch.setattr(type(opt), "_plan_calls", lambda self: pytest.fail("planned"))
    opt._armed.fn = getattr(ft._F, opt._FUNCTIONAL)
    for _ in range(3):
        backward(net, X, Y)
        opt.step()
    assert calls == [len(list(net.parameters()))] * 3


def _edit_count(opt, p):
    opt.state[p]["step"].fill_(1.0)


def _edit_scalar(opt, p):
    name = type(opt)._SCALAR_STATE[0]
    opt.state[p][name].mul_(0.5)


def _replace_buffer(opt, p):
    name = type(opt)._BUFFERS[0][0]
    opt.state[p][name] = opt.state[p][name].clone() + 1


def _replace_data(opt, p):
    p.data = p.data.clone() * 0.5


def _replace_buffer_data(opt, p):
    t = opt.state[p][type(opt)._BUFFERS[0][0]]
    t.data = t.data.clone() + 1


def _new_state_entry(opt, p):
    del opt.state[p]


@pytest.mark.parametrize("edit", [_edit_count, _edit_scalar, _replace_buffer, _replace_data,
                                  _replace_buffer_data, _new_state_entry],
                         ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD"])
def test_edits_between_steps_are_seen_as_by_the_full_path(name, edit):
    """An edit between two steps: the next steps equal those of an optimizer that never
    arms (the edit is honoured, not overwritten by the armed call's cached views)."""
    if edit is _edit_scalar and not getattr(ft, name)._SCALAR_STATE:
        pytest.skip("no scalar state")
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    X, Y = data("mlp", torch.float64)
    results = []
    for full_path in (False, True):
        net = mlp(torch.float64)
        opt = make(name, net.parameters(), kw)
        stepper = FullPathOnly(opt) if full_path else opt
        for k in range(6):
            backward(net, X, Y)
            if k == 3:
                edit(opt, next(net.parameters()))
            stepper.step()
        results.append(snapshot(net, opt))
    assert_identical(*results)


def test_schedule_free_train_eval_switches_between_armed_steps():
    X, Y = data("mlp", torch.float64)
    results = []
    for full_path in (False, True):
        net = mlp(torch.float64)
        opt = make("AdamWScheduleFree", net.parameters(), dict(lr=0.01, warmup_steps=3))
        stepper = FullPathOnly(opt) if full_path else opt
        for k in range(8):
            if k in (3, 5):
                opt.eval()
                net(X)
                opt.train()
            backward(net, X, Y)
            stepper.step()
        opt.eval()
        results.append(snapshot(net, opt))
    assert_identical(*results)


# ------------------------------------------------------------------ what torch users rely on
@pytest.mark.parametrize("name", ["Adam", "NAdam", "AdamWScheduleFree"])
def test_hooks_run_in_torchs_order_on_every_step(name):
    from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    X, Y = data("mlp", torch.float32)
    calls = []
    orders = []
    for module in (torch.optim, ft):
        if module is torch.optim and not hasattr(torch.optim, name):
            continue
        net = mlp(torch.float32)
        opt = make(name, net.parameters(), kw) if module is ft else \
            getattr(torch.optim, name)(net.parameters(), **kw)
        calls.clear()
        backward(net, X, Y)
        opt.step()  # state made (and armed): the hooks come after
        handles = [
            register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
            register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post")),
            opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", len(a)))),
            opt.register_step_post_hook(lambda o, a, k: calls.append(("post", len(a)))),
        ]
        try:
            for _ in range(2):
                backward(net, X, Y)
                opt.step()
        finally:
            for h in handles:
                h.remove()
        backward(net, X, Y)
        opt.step()  # removed: not called
        orders.append(list(calls))
    want = ["global pre", ("pre", 1), ("post", 1), "global post"] * 2
    assert all(order == want for order in orders)


def test_a_pre_hook_may_replace_the_arguments():
    """torch's pre hooks return (args, kwargs): here, a closure that the step runs."""
    X, Y = data("mlp", torch.float64)
    losses = []
    for module in (torch.optim, ft):
        net = mlp(torch.float64)
        opt = module.Adam(net.parameters(), lr=0.01)

        def closure():
            backward(net, X, Y)
            return ((net(X) - Y) ** 2).mean().item()

        opt.register_step_pre_hook(lambda o, a, k: ((o, closure), k))
        got = [opt.step() for _ in range(3)]
        losses.append((got, [p.detach().clone() for p in net.parameters()]))
    (want, want_params), (got, got_params) = losses
    assert got == pytest.approx(want, rel=1e-12) and len(got) == 3 and None not in got
    assert all(torch.allclose(a, b, rtol=0, atol=1e-14) for a, b in zip(got_params,
                                                                          want_params))


def test_a_closure_runs_with_grad_enabled_under_no_grad_on_the_armed_path():
    X, Y = data("mlp", torch.float64)
    net = mlp(torch.float64)
    opt = ft.Adam(net.parameters(), lr=0.01)
    modes = []

    def closure():
        modes.append(torch.is_grad_enabled())
        backward(net, X, Y)
        return 1.0

    for _ in range(3):
        with torch.no_grad():
            assert opt.step(closure) == 1.0
        assert not torch.is_grad_enabled() or modes
    assert modes == [True] * 3 and opt._armed is not None


@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD"])
def test_the_profiler_sees_every_step(name):
    from torch.profiler import ProfilerActivity, profile
    net, opt, X, Y = _mlp_stepped_twice(name)
    armed = opt._armed
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            backward(net, X, Y)
            opt.step()
    events = [e for e in prof.events() if e.name == f"Optimizer.step#{name}.step"]
    assert len(events) == 3
    assert opt._armed is armed  # profiled steps ran the armed call too
    # and when the profiler stops, the steps go on without it
    backward(net, X, Y)
    opt.step()
    assert opt._armed is armed


@pytest.mark.parametrize("name", ["Adam", "NAdam", "ASGD", "SGD"])
def test_every_written_tensor_has_its_version_bumped_on_every_step(name):
    """As torch's for-loop and foreach steps (in-place ops): params, buffers, step counts
    and scalars; a graph that saved a param before the step refuses its backward."""
    kw = dict(CONFIGS[[n for n, _ in CONFIGS].index(name)][1])
    X, Y = data("mlp", torch.float32)
    net = mlp(torch.float32)
    opt = make(name, net.parameters(), kw)
    for _ in range(3):
        backward(net, X, Y)
        opt.step()
    assert opt._armed is not None
    tensors = [p for p in net.parameters()] + [
        v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    before = [t._version for t in tensors]
    opt.zero_grad()
    loss = ((net(X) - Y) ** 2).mean()
    loss.backward(retain_graph=True)
    armed = opt._armed
    opt.step()
    assert opt._armed is armed
    assert all(t._version > v for t, v in zip(tensors, before))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    backward(net, X, Y)  # the next graph works
    opt.step()
    assert all(p.is_leaf and p.requires_grad and p.grad_fn is None for p in net.parameters())


def test_a_deep_copy_of_an_armed_optimizer_steps_its_own_tensors():
    """The copy's first step is planned on its own tensors (the armed call is not
    copied), the original's stays armed on its own: the two runs stay identical."""
    X, Y = data("mlp", torch.float64)
    net = mlp(torch.float64)
    opt = ft.NAdam(net.parameters(), lr=0.01)
    for _ in range(3):
        backward(net, X, Y)
        opt.step()
    net2, opt2 = copy.deepcopy((net, opt))
    assert opt2._armed is None and opt._armed is not None
    for _ in range(3):
        for n, o in ((net, opt), (net2, opt2)):
            backward(n, X, Y)
            o.step()
    assert_identical(snapshot(net, opt), snapshot(net2, opt2))
    assert not any(p.data_ptr() == q.data_ptr()
                   for p, q in zip(net.parameters(), net2.parameters()))
