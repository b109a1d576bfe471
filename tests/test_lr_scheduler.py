"""LR schedulers against torch.optim.lr_scheduler: the same scenario runs on both.

Each case is one factory ``f(L, opt)`` written once and called with ``L`` = torch's module
and with fastoptim's (the signatures are the same), on a torch optimizer over tensors and
on a fastoptim optimizer over arrays with the same param groups. Both compute in Python
floats with the same expressions, so the learning rates (and cycled momenta) must be
equal bit for bit, as must the state dicts.
"""

import copy
import math
import warnings

import numpy as np
import pytest

import fastoptim
from fastoptim import lr_scheduler as F
from fastoptim.optim import SGD, Adam

torch = pytest.importorskip("torch")
from torch.optim import lr_scheduler as T  # noqa: E402

LRS = (0.1, 0.025)
N_STEPS = 40


def torch_opt(kind):
    w = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    groups = [dict(params=[w[0]], lr=LRS[0]), dict(params=[w[1]], lr=LRS[1])]
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    return torch.optim.Adam(groups, betas=(0.9, 0.999))


def fast_opt(kind):
    groups = [dict(params=[np.zeros(3)], lr=LRS[0]), dict(params=[np.zeros(2)], lr=LRS[1])]
    if kind == "sgd":
        return SGD(groups, momentum=0.9)
    return Adam(groups, betas=(0.9, 0.999))


def opt_step(opt):
    if isinstance(opt, torch.optim.Optimizer):
        opt.step()
    else:
        opt.step([np.zeros(3), np.zeros(2)])


class Scale:
    """A callable object: its __dict__ is scheduler state (torch saves it)."""

    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return self.k ** x


def _plateau_metrics():
    rng = np.random.default_rng(0)
    base = np.concatenate([np.linspace(2.0, 1.0, 10), np.full(15, 1.0), np.linspace(1, 0.5, 15)])
    return (base + 0.01 * rng.standard_normal(base.size)).tolist()


METRICS = _plateau_metrics()

# id -> (optimizer kind, factory(L, opt))
CASES = {
    "LambdaLR": ("sgd", lambda L, o: L.LambdaLR(o, lambda e: 0.95 ** e)),
    "LambdaLR-list": ("adam", lambda L, o: L.LambdaLR(o, [lambda e: 1 / (e + 1),
                                                        Scale(0.9)])),
    "MultiplicativeLR": ("sgd", lambda L, o: L.MultiplicativeLR(o, lambda e: 0.97)),
    "StepLR": ("sgd", lambda L, o: L.StepLR(o, step_size=3, gamma=0.5)),
    "MultiStepLR": ("adam", lambda L, o: L.MultiStepLR(o, [12, 5, 12, 30], gamma=0.5)),
    "ConstantLR": ("sgd", lambda L, o: L.ConstantLR(o, factor=0.5, total_iters=6)),
    "LinearLR": ("sgd", lambda L, o: L.LinearLR(o, start_factor=0.2, total_iters=10)),
    "LinearLR-decay": ("sgd", lambda L, o: L.LinearLR(o, 1.0, 0.25, total_iters=20)),
    "ExponentialLR": ("adam", lambda L, o: L.ExponentialLR(o, gamma=0.93)),
    "PolynomialLR": ("sgd", lambda L, o: L.PolynomialLR(o, total_iters=30, power=2.0)),
    "CosineAnnealingLR": ("sgd", lambda L, o: L.CosineAnnealingLR(o, T_max=10, eta_min=1e-3)),
    "WarmRestarts": ("sgd", lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2,
                                                                        eta_min=1e-4)),
    "CyclicLR": ("sgd", lambda L, o: L.CyclicLR(o, 0.01, [0.1, 0.05], step_size_up=4,
                                                step_size_down=6)),
    "CyclicLR-tri2-adam": ("adam", lambda L, o: L.CyclicLR(o, [0.01, 0.002], 0.1, 3,
                                                           mode="triangular2",
                                                           base_momentum=0.85)),
    "CyclicLR-exp": ("sgd", lambda L, o: L.CyclicLR(o, 0.01, 0.1, 5, mode="exp_range",
                                                    gamma=0.97)),
    "CyclicLR-fn": ("adam", lambda L, o: L.CyclicLR(o, 0.01, 0.1, 5, scale_fn=Scale(0.98),
                                                    scale_mode="iterations",
                                                    cycle_momentum=False)),
    "OneCycleLR": ("sgd", lambda L, o: L.OneCycleLR(o, [0.3, 0.1], total_steps=45)),
    "OneCycleLR-3-linear": ("adam", lambda L, o: L.OneCycleLR(
        o, 0.2, epochs=9, steps_per_epoch=5, pct_start=0.25, anneal_strategy="linear",
        three_phase=True, div_factor=10.0, final_div_factor=100.0)),
    "SequentialLR": ("sgd", lambda L, o: L.SequentialLR(
        o, [L.LinearLR(o, 0.2, total_iters=5), L.CosineAnnealingLR(o, T_max=12)], [5])),
    "SequentialLR-3": ("adam", lambda L, o: L.SequentialLR(
        o, [L.ConstantLR(o, 0.5, 4), L.ExponentialLR(o, 0.9), L.StepLR(o, 4)], [6, 20])),
    "ChainedScheduler": ("sgd", lambda L, o: L.ChainedScheduler(
        [L.ConstantLR(o, 0.3, 8), L.ExponentialLR(o, 0.95), L.MultiStepLR(o, [10, 25])])),
    "ReduceLROnPlateau": ("sgd", lambda L, o: L.ReduceLROnPlateau(o, factor=0.5, patience=2,
                                                                 cooldown=1, min_lr=1e-3)),
}
IDS = list(CASES)
# schedulers torch steps with step(epoch) (its closed form where it has one)
WITH_EPOCH = {"LambdaLR", "LambdaLR-list", "MultiplicativeLR", "StepLR", "MultiStepLR",
              "ConstantLR", "LinearLR", "LinearLR-decay", "ExponentialLR", "PolynomialLR",
              "CosineAnnealingLR", "WarmRestarts", "CyclicLR", "CyclicLR-exp"}


def sched_step(case, sched, i, epoch=None):
    if case == "ReduceLROnPlateau":
        sched.step(METRICS[i % len(METRICS)])
    elif epoch is not None:
        sched.step(epoch)
    else:
        sched.step()


def group_values(opt):
    keys = ("lr", "momentum", "betas", "initial_lr", "max_lr", "min_lr", "max_momentum",
            "base_momentum")
    return [{k: (tuple(g[k]) if k == "betas" else g[k]) for k in keys if k in g}
            for g in opt.param_groups]


class Pair:
    """The same scheduler scenario on torch and on fastoptim, compared at every step."""

    def __init__(self, case, chain=False):
        kind, factory = CASES[case]
        self.case = case
        self.topt, self.fopt = torch_opt(kind), fast_opt(kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.tsched, self.fsched = factory(T, self.topt), factory(F, self.fopt)
            # a second scheduler stepping the same optimizer: the effects compose
            self.textra = T.ExponentialLR(self.topt, 0.97) if chain else None
            self.fextra = F.ExponentialLR(self.fopt, 0.97) if chain else None
        self.check("construction")

    def check(self, where):
        assert group_values(self.fopt) == group_values(self.topt), where
        assert self.fsched.get_last_lr() == self.tsched.get_last_lr(), where
        assert getattr(self.fsched, "last_epoch", None) == getattr(self.tsched, "last_epoch",
                                                                   None), where

    def step(self, i, epoch=None):
        caught = []
        for opt, sched, extra in ((self.topt, self.tsched, self.textra),
                                  (self.fopt, self.fsched, self.fextra)):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                opt_step(opt)
                sched_step(self.case, sched, i, epoch)
                if extra is not None:
                    extra.step()
            caught.append(sorted(str(x.message)[:40] for x in w
                                 if issubclass(x.category, UserWarning)))
        assert caught[1] == caught[0], f"step {i}: warnings differ"
        self.check(f"step {i}")

    def edit(self, fn):
        for opt in (self.topt, self.fopt):
            fn(opt.param_groups)
        self.check("manual edit")


def halve_first(groups):
    groups[0]["lr"] *= 0.5


def set_second(groups):
    groups[1]["lr"] = 0.03


def run(pair, n=N_STEPS, start=0, edits=True, epoch_jump=False):
    for i in range(start, start + n):
        if edits and i == 7:
            pair.edit(halve_first)
        if edits and i == 19:
            pair.edit(set_second)
        jump = epoch_jump and i == 25 and pair.case in WITH_EPOCH
        pair.step(i, epoch=30 if jump else None)


@pytest.mark.parametrize("chain", [False, True], ids=["alone", "chained"])
@pytest.mark.parametrize("case", IDS)
def test_matches_torch_step_for_step(case, chain):
    pair = Pair(case, chain)
    run(pair, edits=True, epoch_jump=not chain)


@pytest.mark.parametrize("case", IDS)
def test_plain_run_changes_the_lr(case):
    """The scenario is not vacuous: the lr actually moves (and stays equal to torch's)."""
    pair = Pair(case)
    seen = set()
    for i in range(N_STEPS):
        pair.step(i)
        seen.add(pair.fopt.param_groups[0]["lr"])
    assert len(seen) >= 2


def test_issue_example_exponential_and_step_compose():
    pair_t, pair_f = torch_opt("sgd"), fast_opt("sgd")
    for opt in (pair_t, pair_f):
        for g in opt.param_groups:
            g["lr"] = 0.1
    scheds = [(T.ExponentialLR(pair_t, 0.9), T.StepLR(pair_t, 3, 0.1)),
              (F.ExponentialLR(pair_f, 0.9), F.StepLR(pair_f, 3, 0.1))]
    seqs = []
    for opt, (a, b) in zip((pair_t, pair_f), scheds):
        seq = []
        for _ in range(6):
            opt_step(opt)
            a.step()
            b.step()
            seq.append(opt.param_groups[0]["lr"])
        seqs.append(seq)
    assert seqs[1] == seqs[0]
    assert seqs[1][:3] == pytest.approx([0.09, 0.081, 0.00729], rel=1e-12)


def test_manual_lr_edit_survives_the_next_step():
    opt = fast_opt("sgd")
    sched = F.ExponentialLR(opt, 0.5)
    opt.param_groups[0]["lr"] *= 0.1
    opt_step(opt)
    sched.step()
    assert opt.param_groups[0]["lr"] == LRS[0] * 0.1 * 0.5


# ------------------------------------------------------------ resume / last_epoch
@pytest.mark.parametrize("case", [c for c in IDS if c not in (
    "ReduceLROnPlateau", "SequentialLR", "SequentialLR-3", "ChainedScheduler")])
def test_construct_with_last_epoch_matches_torch(case):
    pair = Pair(case)
    run(pair, n=12, edits=False)
    kind, factory = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t2 = _with_last_epoch(factory, T, pair.topt, 11)
        f2 = _with_last_epoch(factory, F, pair.fopt, 11)
    assert group_values(pair.fopt) == group_values(pair.topt)
    pair.tsched, pair.fsched = t2, f2
    pair.check("resumed")
    run(pair, n=15, start=12, edits=False)


def _with_last_epoch(factory, L, opt, last_epoch):
    """factory(L, opt) with last_epoch=... added to the constructor call."""
    return factory(_LastEpoch(L, last_epoch), opt)


class _LastEpoch:
    """A stand-in for the scheduler module that passes last_epoch to every constructor."""

    def __init__(self, L, last_epoch):
        self.L, self.last_epoch = L, last_epoch

    def __getattr__(self, name):
        cls = getattr(self.L, name)
        return lambda *a, **k: cls(*a, last_epoch=self.last_epoch, **k)


def test_last_epoch_without_initial_lr():
    with pytest.raises(KeyError):
        T.StepLR(torch_opt("sgd"), 3, last_epoch=4)
    opt = fast_opt("sgd")
    before = copy.deepcopy(group_values(opt))
    with pytest.raises(ValueError, match="initial_lr"):
        F.StepLR(opt, 3, last_epoch=4)
    assert group_values(opt) == before


# ---------------------------------------------------------------- state dicts
def _copy_lr_keys(src, dst):
    """Copy what a scheduler keeps in the param groups from one optimizer to the other."""
    for gs, gd in zip(src.param_groups, dst.param_groups):
        for k, v in gs.items():
            if k in ("lr", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum",
                     "momentum"):
                gd[k] = v
            elif k == "betas":
                gd[k] = tuple(v)


@pytest.mark.parametrize("case", IDS)
def test_state_dicts_equal_torchs(case):
    pair = Pair(case)
    run(pair, n=13)
    tsd, fsd = pair.tsched.state_dict(), pair.fsched.state_dict()
    assert fsd == tsd


@pytest.mark.parametrize("direction", ["torch->fastoptim", "fastoptim->torch"])
@pytest.mark.parametrize("case", IDS)
def test_state_dict_round_trip_with_torch(case, direction):
    """Run 13 steps on one library, load its state into a fresh scheduler of the other,
    and go on: both continue exactly like an uninterrupted torch run."""
    ref = Pair(case)
    run(ref, n=13)
    fresh = Pair(case)
    if direction == "torch->fastoptim":
        _copy_lr_keys(ref.topt, fresh.fopt)
        fresh.fsched.load_state_dict(copy.deepcopy(ref.tsched.state_dict()))
        _copy_lr_keys(ref.topt, fresh.topt)
        fresh.tsched.load_state_dict(copy.deepcopy(ref.tsched.state_dict()))
    else:
        _copy_lr_keys(ref.fopt, fresh.topt)
        fresh.tsched.load_state_dict(copy.deepcopy(ref.fsched.state_dict()))
        _copy_lr_keys(ref.fopt, fresh.fopt)
        fresh.fsched.load_state_dict(copy.deepcopy(ref.fsched.state_dict()))
    fresh.check("loaded")
    run(fresh, n=20, start=13, edits=False)
    run(ref, n=20, start=13, edits=False)
    assert group_values(fresh.fopt) == group_values(ref.topt)


@pytest.mark.parametrize("case", IDS)
def test_state_dict_through_a_checkpoint(case, tmp_path):
    pair = Pair(case)
    run(pair, n=9)
    fastoptim.save(tmp_path / "ck.npz", sched=pair.fsched.state_dict(),
                   opt=pair.fopt.state_dict())
    ck = fastoptim.load(tmp_path / "ck.npz")
    fresh = Pair(case)
    fresh.fopt.load_state_dict(ck["opt"])
    fresh.fsched.load_state_dict(ck["sched"])
    fresh.tsched, fresh.topt = pair.tsched, pair.topt
    fresh.check("loaded")
    run(fresh, n=15, start=9, edits=False)


def test_legacy_torch_state_dict_keys_load():
    """Older torch state dicts carry ``verbose`` and lack ``_is_initial``."""
    pair = Pair("StepLR")
    run(pair, n=5)
    sd = pair.tsched.state_dict()
    sd["verbose"] = False
    del sd["_is_initial"]
    opt = fast_opt("sgd")
    sched = F.StepLR(opt, 3, 0.5)
    sched.load_state_dict(sd)
    assert sched.last_epoch == pair.tsched.last_epoch
    assert "verbose" not in sched.state_dict()


def _bad_values(key, value):
    yield object()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float("nan")
        if key != "best":  # a metric of -inf is a valid best
            yield -10 ** 400
    if isinstance(value, list) and value:
        if key != "min_lrs":  # with a default min_lr torch resizes them: any length loads
            yield value[:-1]
        yield [float("inf")] * len(value) if isinstance(value[0], float) else [object()]


@pytest.mark.parametrize("case", IDS)
def test_load_state_dict_rejects_bad_values_and_changes_nothing(case):
    pair = Pair(case)
    run(pair, n=6)
    sched, opt = pair.fsched, pair.fopt
    good = sched.state_dict()
    groups = copy.deepcopy(group_values(opt))
    tried = 0
    for key, value in good.items():
        for bad in _bad_values(key, value):
            sd = copy.deepcopy(good)
            sd[key] = bad
            with pytest.raises((TypeError, ValueError)):
                sched.load_state_dict(sd)
            tried += 1
            assert sched.state_dict() == good, key
            assert group_values(opt) == groups
        sd = copy.deepcopy(good)
        del sd[key]
        if key in ("_is_initial", "_get_lr_called_within_step") or (
                key == "_last_lr" and case == "ReduceLROnPlateau"):
            sched.load_state_dict(sd)  # optional: older torch state dicts lack them
            sched.load_state_dict(good)
        else:
            with pytest.raises(ValueError, match="missing keys"):
                sched.load_state_dict(sd)
        assert sched.state_dict() == good
    for bad in ([1, 2], None, dict(good, surprise=1)):
        with pytest.raises((TypeError, ValueError)):
            sched.load_state_dict(bad)
    assert tried >= len(good)
    assert sched.state_dict() == good


def test_load_state_dict_specific_checks():
    opt = fast_opt("sgd")
    sched = F.StepLR(opt, 3)
    sd = sched.state_dict()
    with pytest.raises(ValueError, match="step_size"):
        sched.load_state_dict(dict(sd, step_size=0))
    with pytest.raises(ValueError, match="gamma"):
        sched.load_state_dict(dict(sd, gamma=-0.5))
    with pytest.raises(ValueError, match="base_lrs"):
        sched.load_state_dict(dict(sd, base_lrs=[0.1]))
    with pytest.raises(ValueError, match="missing keys"):
        F.ExponentialLR(fast_opt("sgd"), 0.9).load_state_dict(sd)
    plateau = F.ReduceLROnPlateau(fast_opt("sgd"))
    with pytest.raises(ValueError, match="mode"):
        plateau.load_state_dict(dict(plateau.state_dict(), mode="avg"))
    cyc = F.CyclicLR(fast_opt("sgd"), 0.01, 0.1)
    with pytest.raises(ValueError, match="use_beta1"):
        cyc.load_state_dict(dict(cyc.state_dict(), use_beta1=True))
    one = F.OneCycleLR(fast_opt("sgd"), 0.1, total_steps=10)
    phases = copy.deepcopy(one.state_dict()["_schedule_phases"])
    phases[0]["end_step"] = 0.0
    with pytest.raises(ValueError, match="divide by zero"):
        one.load_state_dict(dict(one.state_dict(), _schedule_phases=phases))


# -------------------------------------------------------------------- warnings
def _user_warnings(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    return [str(x.message) for x in w if issubclass(x.category, UserWarning)]


@pytest.mark.parametrize("L,make", [(T, torch_opt), (F, fast_opt)], ids=["torch", "fastoptim"])
def test_warnings_like_torch(L, make):
    opt = make("sgd")
    sched = L.StepLR(opt, 2)
    msgs = _user_warnings(sched.step)  # before any optimizer.step()
    assert len(msgs) == 1 and "before `optimizer.step()`" in msgs[0]
    opt = make("sgd")
    sched = L.StepLR(opt, 2)
    opt_step(opt)
    assert _user_warnings(sched.step) == []
    msgs = _user_warnings(sched.get_lr)
    assert len(msgs) == 1 and "get_last_lr()" in msgs[0]
    msgs = _user_warnings(lambda: sched.step(5))
    assert len(msgs) == 1 and "epoch parameter" in msgs[0]


# ------------------------------------------------------------------- bad input
class NoMomentum:
    """An optimizer-like object without momentum or betas."""

    def __init__(self):
        self.param_groups = [{"params": [], "lr": 0.1}]
        self.defaults = {"lr": 0.1}


BAD_ARGS = [
    # (factory(opt), exception, message fragment)
    (lambda o: F.StepLR(object(), 3), TypeError, "not an Optimizer"),
    (lambda o: F.StepLR(o, 0), ValueError, "step_size"),
    (lambda o: F.StepLR(o, 2.5), TypeError, "step_size"),
    (lambda o: F.StepLR(o, 10 ** 400), ValueError, "step_size"),
    (lambda o: F.StepLR(o, 3, gamma=-0.1), ValueError, "gamma"),
    (lambda o: F.StepLR(o, 3, gamma=float("nan")), ValueError, "gamma"),
    (lambda o: F.StepLR(o, 3, gamma=10 ** 400), ValueError, "gamma"),
    (lambda o: F.StepLR(o, 3, gamma="0.1"), TypeError, "gamma"),
    (lambda o: F.StepLR(o, 3, last_epoch=-2), ValueError, "last_epoch"),
    (lambda o: F.StepLR(o, 3, last_epoch=10 ** 400), ValueError, "last_epoch"),
    (lambda o: F.StepLR(o, 3, last_epoch=1.5), TypeError, "last_epoch"),
    (lambda o: F.ExponentialLR(o, -0.5), ValueError, "gamma"),
    (lambda o: F.ExponentialLR(o, float("inf")), ValueError, "gamma"),
    (lambda o: F.ExponentialLR(o, True), TypeError, "gamma"),
    (lambda o: F.MultiStepLR(o, [3, -1]), ValueError, "milestones"),
    (lambda o: F.MultiStepLR(o, "35"), TypeError, "milestones"),
    (lambda o: F.MultiStepLR(o, [2.5]), TypeError, "milestones"),
    (lambda o: F.LambdaLR(o, 3.0), TypeError, "lr_lambda"),
    (lambda o: F.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas"),
    (lambda o: F.MultiplicativeLR(o, [lambda e: 1.0, None]), TypeError, "lr_lambda"),
    (lambda o: F.ConstantLR(o, factor=0.0), ValueError, "factor"),
    (lambda o: F.ConstantLR(o, factor=1.5), ValueError, "factor"),
    (lambda o: F.ConstantLR(o, total_iters=-1), ValueError, "total_iters"),
    (lambda o: F.LinearLR(o, start_factor=0.0), ValueError, "Starting multiplicative"),
    (lambda o: F.LinearLR(o, end_factor=1.5), ValueError, "Ending multiplicative"),
    (lambda o: F.LinearLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: F.PolynomialLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: F.PolynomialLR(o, power=-1.0), ValueError, "power"),
    (lambda o: F.CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: F.CosineAnnealingLR(o, 10, eta_min=-1e-3), ValueError, "eta_min"),
    (lambda o: F.CosineAnnealingWarmRestarts(o, 0), ValueError, "T_0"),
    (lambda o: F.CosineAnnealingWarmRestarts(o, 2.0), ValueError, "T_0"),
    (lambda o: F.CosineAnnealingWarmRestarts(o, 5, T_mult=0), ValueError, "T_mult"),
    (lambda o: F.CosineAnnealingWarmRestarts(o, 5, eta_min="0"), ValueError, "eta_min"),
    (lambda o: F.CyclicLR(o, 0.01, 0.1, step_size_up=0), ValueError, "step_size_up"),
    (lambda o: F.CyclicLR(o, 0.01, 0.1, step_size_down=-1), ValueError, "step_size_down"),
    (lambda o: F.CyclicLR(o, 0.01, [0.1]), ValueError, "max_lr must have the same length"),
    (lambda o: F.CyclicLR(o, -0.01, 0.1), ValueError, "base_lr"),
    (lambda o: F.CyclicLR(o, 0.01, 0.1, mode="sine"), ValueError, "mode is invalid"),
    (lambda o: F.CyclicLR(o, 0.01, 0.1, scale_fn=3), TypeError, "scale_fn"),
    (lambda o: F.CyclicLR(o, 0.01, 0.1, scale_mode="epochs"), ValueError, "scale_mode"),
    (lambda o: F.CyclicLR(o, 0.01, 0.1, max_momentum=[0.9, -0.1]), ValueError,
     "max_momentum"),
    (lambda o: F.CyclicLR(NoMomentum(), 0.01, 0.1), ValueError, "momentum or beta1"),
    (lambda o: F.OneCycleLR(o, 0.1), ValueError, "total_steps OR"),
    (lambda o: F.OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps"),
    (lambda o: F.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0), ValueError,
     "steps_per_epoch"),
    (lambda o: F.OneCycleLR(o, 0.1, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: F.OneCycleLR(o, 0.1, 10, pct_start=0.1), ValueError, "divide by zero"),
    (lambda o: F.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda o: F.OneCycleLR(o, 0.1, 10, div_factor=0), ValueError, "div_factor"),
    (lambda o: F.OneCycleLR(o, 1e300, 10, div_factor=1e-10), ValueError, "div_factor"),
    (lambda o: F.OneCycleLR(o, 0.1, 10, three_phase=1), TypeError, "three_phase"),
    (lambda o: F.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor should be < 1.0"),
    (lambda o: F.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode"),
    (lambda o: F.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold_mode"),
    (lambda o: F.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 min_lrs"),
    (lambda o: F.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
    (lambda o: F.ReduceLROnPlateau(o, eps=float("nan")), ValueError, "eps"),
]


# composites: their schedulers (built first) set initial_lr in the groups
BAD_COMPOSITE_ARGS = [
    (lambda o: F.SequentialLR(o, [], []), ValueError, "at least one"),
    (lambda o: F.SequentialLR(o, [F.StepLR(o, 2), F.StepLR(o, 3)], []), ValueError,
     "one more than"),
    (lambda o: F.SequentialLR(o, [F.StepLR(o, 2), F.StepLR(o, 3), F.StepLR(o, 3)], [5, 3]),
     ValueError, "increasing"),
    (lambda o: F.SequentialLR(o, [F.StepLR(o, 2), F.StepLR(fast_opt("sgd"), 3)], [3]),
     ValueError, "same optimizer"),
    (lambda o: F.SequentialLR(o, [F.StepLR(o, 2), F.ReduceLROnPlateau(o)], [3]), ValueError,
     "ReduceLROnPlateau"),
    (lambda o: F.ChainedScheduler([]), ValueError, "at least one"),
    (lambda o: F.ChainedScheduler([F.StepLR(o, 2), 3]), TypeError, "not an LRScheduler"),
]


@pytest.mark.parametrize("i", range(len(BAD_ARGS) + len(BAD_COMPOSITE_ARGS)))
def test_constructor_rejects_bad_arguments_and_changes_nothing(i):
    opt = fast_opt("sgd")
    if i < len(BAD_ARGS):
        factory, exc, match = BAD_ARGS[i]
    else:
        factory, exc, match = BAD_COMPOSITE_ARGS[i - len(BAD_ARGS)]
        F.StepLR(opt, 10 ** 6)  # initial_lr set: the schedulers built below add nothing
    before = copy.deepcopy(group_values(opt))
    with pytest.raises(exc, match=match):
        factory(opt)
    assert group_values(opt) == before


def test_torch_fails_late_where_we_refuse_early():
    """The constructor checks above that go beyond torch's: torch breaks at a step."""
    o = torch_opt("sgd")
    s = T.ConstantLR(o, factor=0.0, total_iters=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.step()
        with pytest.raises(ZeroDivisionError):
            s.step()
        with pytest.raises(ZeroDivisionError):
            T.OneCycleLR(torch_opt("sgd"), 0.1, 10, pct_start=0.1)
        s = T.StepLR(torch_opt("sgd"), 3, gamma=-1.0)
        for _ in range(3):
            s.step()
        assert s.get_last_lr()[0] < 0


def _state(sched, opt):
    return copy.deepcopy(sched.state_dict()), copy.deepcopy(group_values(opt))


def test_lr_overflow_is_a_value_error_and_changes_nothing():
    opt = fast_opt("sgd")
    sched = F.ExponentialLR(opt, 1e200)
    opt_step(opt)
    sched.step()  # 0.1 * 1e200
    before = _state(sched, opt)
    with pytest.raises(ValueError, match="learning rate of param group 0 would become inf"):
        sched.step()
    assert _state(sched, opt) == before
    sched = F.ExponentialLR(opt, 2.0)
    opt_step(opt)
    before = _state(sched, opt)
    with pytest.raises(ValueError, match="gamma=2.0"):  # torch: OverflowError
        with pytest.warns(UserWarning, match="epoch parameter"):
            sched.step(2000)
    assert _state(sched, opt) == before
    for bad, exc in ((10 ** 400, ValueError), (-1, ValueError), ("3", TypeError),
                     (True, TypeError), (float("nan"), ValueError)):
        with pytest.raises(exc, match="epoch"):
            sched.step(bad)
        assert _state(sched, opt) == before


def test_bad_lambda_results_change_nothing():
    opt = fast_opt("sgd")
    results = {1: -1.0, 2: "x", 3: np.ones(2), 4: float("nan")}
    sched = F.LambdaLR(opt, lambda e: results.get(e, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch) is deprecated
        before = _state(sched, opt)
        for epoch, exc in ((1, ValueError), (2, TypeError), (3, TypeError), (4, ValueError)):
            with pytest.raises(exc):
                sched.step(epoch)
            assert _state(sched, opt) == before
    sched = F.LambdaLR(opt, lambda e: 1 / (3 - e))
    opt_step(opt)
    sched.step()
    sched.step()
    before = _state(sched, opt)
    with pytest.raises(ValueError, match="division by zero"):
        sched.step()
    assert _state(sched, opt) == before


def test_one_cycle_past_the_end_changes_nothing():
    opt = fast_opt("adam")
    sched = F.OneCycleLR(opt, 0.1, total_steps=3)
    for _ in range(3):
        opt_step(opt)
        sched.step()
    before = _state(sched, opt)
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        sched.step()
    assert _state(sched, opt) == before


def test_chained_failure_rolls_back_every_scheduler():
    opt = fast_opt("sgd")
    ok = F.ExponentialLR(opt, 0.9)
    bad = F.LambdaLR(opt, lambda e: 1.0 if e < 2 else -1.0)
    chain = F.ChainedScheduler([ok, bad])
    opt_step(opt)
    chain.step()
    before = _state(chain, opt)
    with pytest.raises(ValueError):
        chain.step()
    assert _state(chain, opt) == before
    assert ok.last_epoch == 1


def test_plateau_metrics_checked():
    opt = fast_opt("sgd")
    sched = F.ReduceLROnPlateau(opt)
    for bad in ("low", None, np.ones(2), True):
        with pytest.raises(TypeError, match="metrics"):
            sched.step(bad)
    sched.step(np.float32(0.5))
    sched.step(np.array(0.25))
    assert sched.best == 0.25 and sched.last_epoch == 2


def test_negative_lr_never_reaches_the_optimizer():
    """If a learning rate is made negative by hand, the next step refuses it: the
    scheduler (naming itself) or, without a scheduler step, the optimizer."""
    opt = fast_opt("sgd")
    sched = F.StepLR(opt, 1, gamma=0.5)
    opt.param_groups[0]["lr"] = -0.1
    with pytest.raises(ValueError, match="StepLR"):
        with pytest.warns(UserWarning, match="before `optimizer.step"):
            sched.step()
    with pytest.raises(ValueError, match="learning rate"):
        opt_step(opt)


def test_array_learning_rates_stay_arrays():
    """A 0-d array lr stays a 0-d array of its dtype (torch fills a tensor lr in place)."""
    opt = fast_opt("sgd")
    opt.param_groups[0]["lr"] = np.array(0.1, dtype=np.float32)
    sched = F.StepLR(opt, 1, gamma=0.5)
    opt_step_free = sched.step  # the scheduler alone: no optimizer step involved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt_step_free()
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, np.ndarray) and lr.shape == () and lr.dtype == np.float32
    assert lr == np.float32(0.1) * 0.5
    assert sched.get_last_lr()[0] is not lr


def test_schedule_used_by_the_optimizer():
    p = np.zeros(1)
    opt = SGD([p], lr=1.0)
    sched = F.StepLR(opt, step_size=1, gamma=0.5)
    total = 0.0
    for epoch in range(5):
        opt.step([np.ones(1)])
        total -= 0.5 ** epoch
        sched.step()
    assert p[0] == total


def test_closed_form_jump_equals_torch():
    """step(epoch) uses torch's closed form (_get_closed_form_lr) from base_lrs."""
    for case in ("StepLR", "MultiStepLR", "CosineAnnealingLR", "PolynomialLR", "LinearLR",
                 "ConstantLR", "ExponentialLR"):
        pair = Pair(case)
        for i, epoch in enumerate([3, 17, 4, 29, 100]):
            pair.step(i, epoch=epoch)
        assert pair.fsched.last_epoch == 100
        assert math.isfinite(pair.fopt.param_groups[0]["lr"])
