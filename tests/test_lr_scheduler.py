"""LR schedules: closed forms, torch.optim.lr_scheduler parity, state dicts, validation."""

import math

import numpy as np
import pytest

from fastoptim.lr_scheduler import (CosineAnnealingLR, ExponentialLR, LinearLR,
                                    ReduceLROnPlateau, SequentialLR, StepLR)
from fastoptim.optim import SGD, Adam

BASE_LRS = (0.1, 0.025)


def make_opt(cls=SGD):
    return cls([dict(params=[np.zeros(3)], lr=BASE_LRS[0]),
                dict(params=[np.zeros(2)], lr=BASE_LRS[1])])


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


# (name, factory(opt), closed form f(base_lr, epoch)) -- the forms written out independently.
SCHEDULES = [
    ("StepLR", lambda o: StepLR(o, step_size=7, gamma=0.5),
     lambda b, e: b * 0.5 ** (e // 7)),
    ("ExponentialLR", lambda o: ExponentialLR(o, gamma=0.95),
     lambda b, e: b * 0.95 ** e),
    ("CosineAnnealingLR", lambda o: CosineAnnealingLR(o, T_max=30, eta_min=1e-4),
     lambda b, e: 1e-4 + (b - 1e-4) * (1 + math.cos(math.pi * e / 30)) / 2),
    ("LinearLR", lambda o: LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
     lambda b, e: b * (0.1 + 0.9 * min(e, 10) / 10)),
    ("LinearLR-decay", lambda o: LinearLR(o, start_factor=1.0, end_factor=0.25, total_iters=20),
     lambda b, e: b * (1.0 - 0.75 * min(e, 20) / 20)),
    ("Sequential", lambda o: SequentialLR(o, [LinearLR(o, 0.2, total_iters=5),
                                              CosineAnnealingLR(o, T_max=40)], milestones=[5]),
     lambda b, e: (b * (0.2 + 0.8 * e / 5) if e < 5
                   else b * (1 + math.cos(math.pi * (e - 5) / 40)) / 2)),
]
SCHED_IDS = [s[0] for s in SCHEDULES]


@pytest.mark.parametrize("name,factory,form", SCHEDULES, ids=SCHED_IDS)
def test_closed_forms(name, factory, form):
    opt = make_opt()
    sched = factory(opt)
    for epoch in range(120):
        expected = [form(b, epoch) for b in BASE_LRS]
        np.testing.assert_allclose(lrs(opt), expected, rtol=1e-14, atol=1e-18)
        assert sched.get_last_lr() == lrs(opt)
        assert sched.last_epoch == epoch
        opt.step([np.ones(3), np.ones(2)])
        sched.step()


def test_scheduled_lr_is_used_by_the_optimizer():
    p = np.zeros(1)
    opt = SGD([p], lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.5)
    total = 0.0
    for epoch in range(5):
        opt.step([np.ones(1)])
        total -= 0.5 ** epoch
        sched.step()
    assert p[0] == total


def _torch_pair(name):
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as tls
    w = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    topt = torch.optim.SGD([dict(params=[w[0]], lr=BASE_LRS[0]),
                            dict(params=[w[1]], lr=BASE_LRS[1])])
    factories = {
        "StepLR": lambda o: tls.StepLR(o, step_size=7, gamma=0.5),
        "ExponentialLR": lambda o: tls.ExponentialLR(o, gamma=0.95),
        "CosineAnnealingLR": lambda o: tls.CosineAnnealingLR(o, T_max=30, eta_min=1e-4),
        "LinearLR": lambda o: tls.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
        "LinearLR-decay": lambda o: tls.LinearLR(o, start_factor=1.0, end_factor=0.25,
                                                 total_iters=20),
        "Sequential": lambda o: tls.SequentialLR(
            o, [tls.LinearLR(o, 0.2, total_iters=5), tls.CosineAnnealingLR(o, T_max=40)],
            milestones=[5]),
    }
    return topt, factories[name](topt)


@pytest.mark.parametrize("name,factory,form", SCHEDULES, ids=SCHED_IDS)
def test_matches_torch(name, factory, form):
    topt, tsched = _torch_pair(name)
    opt = make_opt()
    sched = factory(opt)
    for epoch in range(150):
        tl = [g["lr"] for g in topt.param_groups]
        # torch chains multiplicative updates; we use the closed form: rounding differs.
        np.testing.assert_allclose(lrs(opt), tl, rtol=1e-11, atol=1e-16, err_msg=str(epoch))
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-11,
                                   atol=1e-16)
        assert sched.last_epoch == tsched.last_epoch
        topt.step()
        tsched.step()
        sched.step()


PLATEAU_KW = [
    dict(),
    dict(mode="max", factor=0.5, patience=2, threshold=0.01, cooldown=2),
    dict(mode="min", threshold_mode="abs", threshold=0.05, patience=1, min_lr=[0.02, 0.001]),
    dict(mode="max", threshold_mode="abs", patience=0, factor=0.3, min_lr=0.005, eps=1e-3),
]


def _metrics(n=120, seed=0):
    rng = np.random.default_rng(seed)
    # improves, then plateaus with noise, improves again, then gets worse
    base = np.concatenate([np.linspace(2.0, 1.0, 30), np.full(40, 1.0),
                           np.linspace(1.0, 0.5, 20), np.linspace(0.5, 0.9, n - 90)])
    return (base + 0.02 * rng.standard_normal(n)).tolist()


@pytest.mark.parametrize("kw", PLATEAU_KW, ids=range(len(PLATEAU_KW)))
def test_reduce_on_plateau_matches_torch(kw):
    torch = pytest.importorskip("torch")
    from torch.optim.lr_scheduler import ReduceLROnPlateau as TorchPlateau
    w = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    topt = torch.optim.SGD([dict(params=[w[0]], lr=BASE_LRS[0]),
                            dict(params=[w[1]], lr=BASE_LRS[1])])
    tsched = TorchPlateau(topt, **kw)
    opt = make_opt()
    sched = ReduceLROnPlateau(opt, **kw)
    changes = 0
    for m in _metrics():
        before = lrs(opt)
        sched.step(m)
        tsched.step(m)
        changes += lrs(opt) != before
        assert lrs(opt) == [g["lr"] for g in topt.param_groups]
        assert sched.get_last_lr() == tsched.get_last_lr()
        assert sched.num_bad_epochs == tsched.num_bad_epochs
        assert sched.best == tsched.best
    assert changes > 0


def test_reduce_on_plateau_rules():
    opt = make_opt()
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=2, min_lr=0.04)
    for m in [1.0, 0.9, 0.9, 0.9]:  # two bad epochs: not yet more than patience
        sched.step(m)
    assert lrs(opt) == list(BASE_LRS)
    sched.step(0.9)  # third bad epoch
    assert lrs(opt) == [0.05, BASE_LRS[1]]  # second group is already below min_lr
    for _ in range(3):
        sched.step(0.9)
    assert lrs(opt) == [0.04, BASE_LRS[1]]  # clamped at min_lr
    sched.step(np.float32(0.1))  # NumPy scalars accepted
    assert sched.best == float(np.float32(0.1))


@pytest.mark.parametrize("name,factory,form", SCHEDULES, ids=SCHED_IDS)
def test_state_dict_resume_exact(name, factory, form):
    opt = make_opt()
    sched = factory(opt)
    full = []
    for _ in range(60):
        sched.step()
        full.append(lrs(opt))
    opt = make_opt()
    sched = factory(opt)
    for _ in range(23):
        sched.step()
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    opt2 = make_opt()
    sched2 = factory(opt2)
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(sched_sd)
    resumed = full[:23]
    for _ in range(37):
        sched2.step()
        resumed.append(lrs(opt2))
    assert resumed == full
    assert sched2.get_last_lr() == full[-1]


def test_plateau_state_dict_resume_exact():
    metrics = _metrics()
    opt = make_opt()
    sched = ReduceLROnPlateau(opt, patience=1, cooldown=1)
    full = []
    for m in metrics:
        sched.step(m)
        full.append(lrs(opt))
    opt = make_opt()
    sched = ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in metrics[:50]:
        sched.step(m)
    opt2 = make_opt()
    sched2 = ReduceLROnPlateau(opt2, patience=1, cooldown=1)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    resumed = full[:50]
    for m in metrics[50:]:
        sched2.step(m)
        resumed.append(lrs(opt2))
    assert resumed == full


def test_state_dict_is_plain_data():
    opt = make_opt(Adam)
    sched = SequentialLR(opt, [LinearLR(opt, 0.5, total_iters=2), ExponentialLR(opt, 0.9)], [2])
    sd = sched.state_dict()

    def check(x):
        if isinstance(x, dict):
            assert all(isinstance(k, str) for k in x)
            for v in x.values():
                check(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                check(v)
        else:
            assert x is None or isinstance(x, (int, float, str, bool)), type(x)

    check(sd)
    check(ReduceLROnPlateau(opt).state_dict())


def test_load_state_dict_mismatch():
    opt = make_opt()
    sched = StepLR(opt, 3)
    sd = sched.state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        ExponentialLR(make_opt(), 0.9).load_state_dict(sd)
    bad = dict(sd, base_lrs=[0.1])
    with pytest.raises(ValueError, match="base_lrs"):
        StepLR(make_opt(), 3).load_state_dict(bad)
    with pytest.raises(TypeError, match="must be a dict"):
        sched.load_state_dict([1, 2])
    seq = SequentialLR(opt, [StepLR(opt, 2), StepLR(opt, 3)], [4])
    with pytest.raises(ValueError, match="_schedulers"):
        seq.load_state_dict(dict(seq.state_dict(), _schedulers=[sd]))


def test_invalid_arguments():
    opt = make_opt()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        StepLR(object(), 3)
    with pytest.raises(ValueError, match="step_size must be >= 1"):
        StepLR(opt, 0)
    with pytest.raises(TypeError, match="step_size must be an int"):
        StepLR(opt, 2.5)
    with pytest.raises(ValueError, match="gamma must be finite"):
        ExponentialLR(opt, float("nan"))
    with pytest.raises(ValueError, match="T_max must be >= 1"):
        CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="Ending multiplicative factor"):
        LinearLR(opt, end_factor=1.5)
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(make_opt(), 3, last_epoch=4)
    with pytest.raises(ValueError, match="one more than the number of milestone"):
        SequentialLR(opt, [StepLR(opt, 2), StepLR(opt, 3)], [])
    with pytest.raises(ValueError, match="same optimizer"):
        SequentialLR(opt, [StepLR(opt, 2), StepLR(make_opt(), 3)], [3])
    with pytest.raises(ValueError, match="does not support ReduceLROnPlateau"):
        SequentialLR(opt, [StepLR(opt, 2), ReduceLROnPlateau(opt)], [3])
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode 'avg' is unknown"):
        ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="threshold mode 'x' is unknown"):
        ReduceLROnPlateau(opt, threshold_mode="x")
    with pytest.raises(ValueError, match="expected 2 min_lrs"):
        ReduceLROnPlateau(opt, min_lr=[0.1])
    with pytest.raises(TypeError, match="metrics must be a real number"):
        ReduceLROnPlateau(opt).step("low")


def test_resume_with_last_epoch():
    opt = make_opt()
    sched = ExponentialLR(opt, 0.9)
    for _ in range(5):
        sched.step()
    # torch's other resume path: initial_lr is in the groups, last_epoch given
    sched2 = ExponentialLR(opt, 0.9, last_epoch=4)
    assert sched2.last_epoch == 5
    np.testing.assert_allclose(lrs(opt), [b * 0.9 ** 5 for b in BASE_LRS], rtol=1e-15)
