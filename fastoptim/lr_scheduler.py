"""Learning-rate schedules: torch.optim.lr_scheduler's classes, behaviour for behaviour.

Every scheduler of torch 2.13 is here, with torch's constructor signature, defaults and
arithmetic (the same Python float expressions, so the same bits):

    LambdaLR, MultiplicativeLR, StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR,
    PolynomialLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR,
    SequentialLR, ChainedScheduler, ReduceLROnPlateau

Semantics are torch's *chainable* ones: ``step()`` derives each new learning rate from the
current ``param_groups[i]["lr"]`` (``get_lr``), so a manual ``group["lr"] *= 0.1`` carries
on and two schedulers stepping one optimizer compose. ``step(epoch)`` (deprecated in torch,
with its warning) jumps to ``epoch`` with the closed form ``_get_closed_form_lr`` from
``base_lrs`` where torch has one. As in torch, constructing a scheduler with
``last_epoch=-1`` records ``initial_lr`` in each param group and performs a first step; a
scheduler built with ``last_epoch >= 0`` resumes from the groups' ``initial_lr``. Call
``step()`` after ``optimizer.step()`` (torch's warning when the order looks reversed).
CyclicLR and OneCycleLR also cycle ``momentum`` (SGD, RMSprop) or ``betas[0]`` (Adam).

Stricter than torch, on purpose: every argument is checked when the scheduler is built
(TypeError/ValueError naming it) where torch fails later or computes garbage; a step that
would put a negative, NaN or infinite learning rate into a param group, or overflows,
raises ValueError; and any rejected call (``step``, ``load_state_dict``, construction)
leaves the scheduler and the optimizer's param groups as they were.

State dicts carry torch's keys (``_step_count``, ``_is_initial``,
``_get_lr_called_within_step``...), so torch's load into these classes and these into
torch's; ``load_state_dict`` checks every value first and changes nothing on bad input.
"""

import copy
import math
import numbers
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from contextlib import contextmanager
from functools import partial

import numpy as np

__all__ = ["LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR",
           "ConstantLR", "LinearLR", "ExponentialLR", "SequentialLR", "PolynomialLR",
           "CosineAnnealingLR", "ChainedScheduler", "ReduceLROnPlateau", "CyclicLR",
           "CosineAnnealingWarmRestarts", "OneCycleLR"]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available.")

# Counts and epochs stay exact as floats (the schedules compute with them in floats).
_MAX_COUNT = 2 ** 53


# ----------------------------------------------------------------- argument checks
def _plain(value):
    """A checked number as a Python int or float (NumPy scalars converted)."""
    if type(value) is int or type(value) is float:
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _check_int(name, value, lo, hi=_MAX_COUNT, bad_type=TypeError):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise bad_type(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value}")
    return value


def _check_real(name, value, lo=None, hi=None, lo_open=False, hi_open=False, finite=True,
                msg=None, bad_type=TypeError):
    """Return value (int or float) if it is a real number in range, else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_type(f"{name} must be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond float range
        v = math.inf if value > 0 else -math.inf
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{name} must be {'finite' if finite else 'a number'}, got {value}")
    if ((lo is not None and (v <= lo if lo_open else v < lo))
            or (hi is not None and (v >= hi if hi_open else v > hi))):
        if msg is None:
            interval = (("(" if lo_open else "[") + ("-inf" if lo is None else repr(lo)) + ", "
                        + ("inf" if hi is None else repr(hi)) + (")" if hi_open else "]"))
            msg = f"{name} must be in {interval}"
        raise ValueError(f"{msg}, got {value}")
    return v if math.isinf(v) else _plain(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_epoch(name, value, lo=0):
    """An epoch passed to ``step`` (torch accepts floats there) or a stored ``last_epoch``."""
    return _check_real(name, value, lo=lo, hi=_MAX_COUNT)


def _is_lr_value(v):
    return ((isinstance(v, numbers.Real) and not isinstance(v, bool))
            or (isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "fiu"))


def _check_lr(name, value):
    """A learning rate (or another group value the schedules produce): finite and >= 0."""
    if not _is_lr_value(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond float range
        v = math.inf
    if not (v >= 0.0 and v != math.inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value.copy() if isinstance(value, np.ndarray) else _plain(value)


def _check_list(name, value, n, check_item):
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    if len(value) != n:
        raise ValueError(f"{name} must have {n} entries (one per param group), "
                         f"got {len(value)}")
    return [check_item(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _per_group(name, optimizer, value, check_item):
    """torch's _format_param: one value for every group, or a list with one per group."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. "
                             f"{name} has {len(value)} values, param_groups has {n}.")
        return [check_item(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check_item(name, value)] * n


def _check_optimizer(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if (not isinstance(groups, list) or not groups
            or not all(isinstance(g, dict) and "lr" in g for g in groups)):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer "
                        "(needs a non-empty param_groups list of dicts with an 'lr')")
    return optimizer


def _check_lambdas(name, value, optimizer):
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"Expected {n} lr_lambdas, but got {len(value)}")
        fns = list(value)
    else:
        fns = [value] * n
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"{name} should be a function, but got {type(fn).__name__}")
    return fns


# ------------------------------------------------------- param groups, rollback
def _group_values(optimizer, key):
    """group[key] of every group; 0-d arrays copied (torch clones tensors)."""
    return [g[key].copy() if isinstance(g[key], np.ndarray) else g[key]
            for g in optimizer.param_groups]


def _set_group_value(group, key, value):
    old = group.get(key)
    if isinstance(old, np.ndarray):  # an array lr stays an array of its dtype (torch: fill_)
        value = np.full_like(old, value)
    group[key] = value


def _snapshot(sched):
    state = dict(sched.__dict__)
    subs = state.get("_schedulers")
    return state, [_snapshot(s) for s in subs] if isinstance(subs, list) else []


def _restore(sched, snap):
    state, subs = snap
    sched.__dict__.clear()
    sched.__dict__.update(state)
    for s, sub_snap in zip(state.get("_schedulers") or (), subs):
        _restore(s, sub_snap)


@contextmanager
def _atomic(optimizer, sched=None, what=None):
    """Undo every change to the param groups (and to ``sched``) if the block raises.

    Arithmetic errors of the schedule become a ValueError naming ``what`` and the
    scheduler's arguments. Schedules only ever assign group values (no in-place
    writes), so restoring the dicts' contents restores everything.
    """
    groups = optimizer.param_groups
    saved_groups = [dict(g) for g in groups]
    saved = _snapshot(sched) if sched is not None else None
    try:
        yield
    except BaseException as exc:
        for g, s in zip(groups, saved_groups):
            g.clear()
            g.update(s)
        if saved is not None:
            _restore(sched, saved)
        if what is None or not isinstance(exc, (OverflowError, ZeroDivisionError, KeyError)):
            raise
        if isinstance(exc, KeyError):
            raise ValueError(f"{what}: a param group has no {exc.args[0]!r} entry, which "
                             "this scheduler needs") from exc
        args = f" with {sched._describe()}" if sched is not None else ""
        raise ValueError(f"{what}: the learning rate cannot be computed ({exc}){args}") from exc


def _optimizer_progress(optimizer):
    """Sum of the optimizer's per-param step counts, or None if it keeps none we can read.

    Used only for torch's "scheduler.step() before optimizer.step()" warning (torch
    wraps ``optimizer.step`` instead; a wrapper would make optimizers unpicklable).
    """
    state = getattr(optimizer, "state", None)
    if not isinstance(state, dict):
        return None
    total = 0
    for entry in state.values():
        step = entry.get("step", 0) if isinstance(entry, dict) else None
        try:
            total += int(step)
        except (TypeError, ValueError, OverflowError):
            return None
    return total


def _warn_get_lr_called_within_step(sched):
    if not sched._get_lr_called_within_step:
        warnings.warn("To get the last learning rate computed by the scheduler, "
                      "please use `get_last_lr()`.", UserWarning, stacklevel=3)


# ------------------------------------------------------------------- base class
class LRScheduler:
    """Base class: ``base_lrs``, ``last_epoch``, ``step()``, ``get_last_lr()``, state dicts.

    A subclass defines ``get_lr()`` (the chainable update, from the groups' current lrs)
    and, where torch has one, ``_get_closed_form_lr()`` (from ``base_lrs``, for
    ``step(epoch)``). ``_args`` maps each constructor argument kept as an attribute to its
    check, shared by the constructor and ``load_state_dict``.
    """

    _get_lr_called_within_step = False
    _is_initial = False
    _args = {}
    # attributes that are not state (torch's state dicts hold everything but the optimizer)
    _not_state = ("optimizer", "_optimizer_progress_at_init")
    # keys torch's state dicts may carry that hold nothing to restore here
    _transient_state = ("_is_initial", "_get_lr_called_within_step", "verbose")

    def __init__(self, optimizer, last_epoch=-1):
        _check_optimizer(optimizer)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        groups = optimizer.param_groups
        if last_epoch != -1:
            for i, group in enumerate(groups):
                if "initial_lr" not in group:
                    raise ValueError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming scheduler with last_epoch >= 0 (load the optimizer's "
                        "state dict first, or use last_epoch=-1 for a fresh run)")
        with _atomic(optimizer, self, f"{type(self).__name__}()"):
            if last_epoch == -1:
                for group in groups:
                    lr = group["lr"]
                    group.setdefault("initial_lr", lr.copy() if isinstance(lr, np.ndarray)
                                     else lr)
            self.optimizer = optimizer
            self.base_lrs = [_check_lr(f"param_groups[{i}]['initial_lr']", v)
                             for i, v in enumerate(_group_values(optimizer, "initial_lr"))]
            self.last_epoch = last_epoch
            self._optimizer_progress_at_init = _optimizer_progress(optimizer)
            self._initial_step()

    def _describe(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args if hasattr(self, k))
        epoch = getattr(self, "last_epoch", None)
        return ", ".join(s for s in (args, f"epoch={epoch!r}" if epoch is not None else "") if s)

    def _check_arg(self, key, value):
        return self._args[key](key, value)

    def _initial_step(self):
        """Initialize the step count and perform the first step."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The learning rates of the next step (chainable form); use ``get_last_lr()``."""
        raise NotImplementedError

    def get_last_lr(self):
        """Learning rates set by the last ``step()`` (a copy)."""
        return [v.copy() if isinstance(v, np.ndarray) else v for v in self._last_lr]

    def _warn_step_order(self):
        if self._step_count == 1:
            before = getattr(self, "_optimizer_progress_at_init", None)
            if before is not None and _optimizer_progress(self.optimizer) == before:
                warnings.warn(
                    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                    "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
                    "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
                    "will result in PyTorch skipping the first value of the learning rate "
                    "schedule.", UserWarning, stacklevel=3)

    def step(self, epoch=None):
        """Advance one step (or jump to ``epoch``, deprecated) and set the groups' lrs."""
        if epoch is not None:
            epoch = _check_epoch("epoch", epoch)
        with _atomic(self.optimizer, self, f"{type(self).__name__}.step"):
            self._warn_step_order()
            self._step_count += 1
            if epoch is not None:
                warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
            self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        self._set_lrs(values)

    def _set_lrs(self, values):
        """Check every new lr, then write them all (a bad one changes nothing)."""
        groups = self.optimizer.param_groups
        values = list(values)
        for i, v in enumerate(values):
            try:
                _check_lr("lr", v)
            except (TypeError, ValueError) as exc:
                raise type(exc)(
                    f"{type(self).__name__}: the learning rate of param group {i} would "
                    f"become {v!r} ({self._describe()}); a learning rate must be a finite "
                    "number >= 0") from None
        if len(values) != len(groups):
            raise ValueError(f"{type(self).__name__}: {len(values)} learning rates for "
                             f"{len(groups)} param groups")
        for group, lr in zip(groups, values):
            _set_group_value(group, "lr", lr)
        self._last_lr = _group_values(self.optimizer, "lr")

    # ------------------------------------------------------------- state dicts
    def state_dict(self):
        """Every attribute but the optimizer, as torch (values deep-copied)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                if k not in self._not_state}

    def _state_checks(self, incoming):
        """key -> check(name, value) for every key of this scheduler's state dict.

        ``incoming`` (the dict being loaded) decides keys that exist only with some
        options (the momentum entries of CyclicLR/OneCycleLR)."""
        n = len(self.optimizer.param_groups)
        lr_list = partial(_check_list, n=n, check_item=_check_lr)
        checks = {"base_lrs": lr_list,
                  "last_epoch": partial(_check_epoch, lo=-1),
                  "_step_count": partial(_check_int, lo=0, hi=None),
                  "_last_lr": lr_list}
        checks.update(self._args)
        return checks

    def _checked_state(self, state_dict):
        """The state to apply, every value checked; raises before anything is changed."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(f"{name}.load_state_dict: state_dict must be a dict, got "
                            f"{type(state_dict).__name__}")
        checks = self._state_checks(state_dict)
        missing = set(checks) - set(state_dict)
        unexpected = set(state_dict) - set(checks) - set(self._transient_state)
        if missing or unexpected:
            raise ValueError(f"{name}.load_state_dict: missing keys {sorted(missing)}, "
                             f"unexpected keys {sorted(map(str, unexpected))}")
        for key in self._transient_state:
            if key in state_dict:
                _check_bool(f"state_dict[{key!r}]", state_dict[key])
        state = {k: check(f"state_dict[{k!r}]", state_dict[k]) for k, check in checks.items()}
        self._check_consistency(state)
        return state

    def _check_consistency(self, state):
        """Checks across the keys of a state about to be loaded (raise on a mismatch)."""

    def _apply_state(self, state):
        self.__dict__.update(state)

    def load_state_dict(self, state_dict):
        """Restore a state dict (ours or torch's); every value is checked first.

        ``_is_initial``/``_get_lr_called_within_step`` (True only inside a step) and a
        legacy ``verbose`` are accepted and not restored.
        """
        self._apply_state(self._checked_state(state_dict))


# ---------------------------------------------------------------- the schedules
class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` (one function, or one per param group).

    ``state_dict()`` saves the ``__dict__`` of callable objects, not plain functions.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = _check_optimizer(optimizer)
        self.lr_lambdas = _check_lambdas("lr_lambda", lr_lambda, optimizer)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        return [base_lr * lmbda(self.last_epoch)
                for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]

    def state_dict(self):
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in self._not_state and k != "lr_lambdas"}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
                               for fn in self.lr_lambdas]
        return state

    def _state_checks(self, incoming):
        def check_fn_state(name, value):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be None or a dict, got {type(value).__name__}")
            return value
        checks = super()._state_checks(incoming)
        checks["lr_lambdas"] = partial(_check_list, n=len(self.lr_lambdas),
                                       check_item=check_fn_state)
        return checks

    def _apply_state(self, state):
        fn_states = state.pop("lr_lambdas")
        super()._apply_state(state)
        for fn, fn_state in zip(self.lr_lambdas, fn_states):
            if fn_state is not None:
                fn.__dict__.update(fn_state)


class MultiplicativeLR(LambdaLR):
    """``lr = lr * lr_lambda(epoch)`` at every step (one function, or one per group)."""

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * lmbda(self.last_epoch)
                for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups,
                                        strict=True)]


_gamma = partial(_check_real, lo=0.0)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs.

    Closed form: ``base_lr * gamma ** (epoch // step_size)``.
    """

    _args = {"step_size": partial(_check_int, lo=1), "gamma": _gamma}

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = self._check_arg("step_size", step_size)
        self.gamma = self._check_arg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if (self.last_epoch == 0) or (self.last_epoch % self.step_size != 0):
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


def _check_milestones(name, value):
    """Epochs (ints >= 0, repeats multiply), or torch's stored Counter {epoch: count}."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__}")
    else:
        items = [(m, 1) for m in value]
    counts = Counter()
    for m, count in items:
        counts[_check_int(f"{name} entry", m, 0)] += _check_int(f"{name} count", count, 1)
    return counts


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each epoch in ``milestones``.

    Closed form: ``base_lr * gamma ** bisect_right(sorted(milestones), epoch)``.
    """

    _args = {"milestones": _check_milestones, "gamma": _gamma}

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = self._check_arg("milestones", milestones)
        self.gamma = self._check_arg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr times ``factor`` for the first ``total_iters`` epochs, then the lr itself.

    ``factor`` must be in (0, 1]: torch also takes 0, then divides by it at
    ``total_iters``.
    """

    _args = {"factor": partial(_check_real, lo=0.0, hi=1.0, lo_open=True,
                               msg="Constant multiplicative factor expected to be "
                                   "between 0 and 1 (0 excluded)"),
             "total_iters": partial(_check_int, lo=0)}

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = self._check_arg("factor", factor)
        self.total_iters = self._check_arg("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters)
                           * (1 - self.factor))
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Factor moves linearly from ``start_factor`` to ``end_factor`` over ``total_iters``.

    Closed form: ``base_lr * (start + (end - start) * min(total_iters, epoch) / total_iters)``.
    """

    _args = {"start_factor": partial(_check_real, lo=0.0, hi=1.0, lo_open=True,
                                     msg="Starting multiplicative factor expected to be "
                                         "greater than 0 and less or equal to 1"),
             "end_factor": partial(_check_real, lo=0.0, hi=1.0,
                                   msg="Ending multiplicative factor expected to be between "
                                       "0 and 1"),
             "total_iters": partial(_check_int, lo=1)}

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        self.start_factor = self._check_arg("start_factor", start_factor)
        self.end_factor = self._check_arg("end_factor", end_factor)
        self.total_iters = self._check_arg("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 + (self.end_factor - self.start_factor)
                               / (self.total_iters * self.start_factor
                                  + (self.last_epoch - 1)
                                  * (self.end_factor - self.start_factor)))
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch. Closed form: ``base_lr * gamma ** epoch``."""

    _args = {"gamma": _gamma}

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = self._check_arg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """``base_lr * (1 - min(epoch, total_iters) / total_iters) ** power``."""

    _args = {"total_iters": partial(_check_int, lo=1),
             "power": partial(_check_real, lo=0.0)}

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = self._check_arg("total_iters", total_iters)
        self.power = self._check_arg("power", power)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        decay_factor = ((1.0 - self.last_epoch / self.total_iters)
                        / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters)
                ** self.power for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (period 2 T_max).

    As in torch the steps apply it recursively (the ratio of consecutive values).
    """

    _args = {"T_max": partial(_check_real, lo=0.0, hi=_MAX_COUNT, lo_open=True),
             "eta_min": partial(_check_real, lo=0.0)}

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = self._check_arg("T_max", T_max)
        self.eta_min = self._check_arg("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min)
                    * (1 + math.cos((self.last_epoch) * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min)
                    * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups,
                                              strict=True)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every ``T_i`` epochs (``T_0``, then times ``T_mult``).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``;
    ``step(epoch)`` takes fractional epochs (e.g. ``epoch + i / iters``), no warning.
    """

    _args = {"T_0": partial(_check_int, lo=1, bad_type=ValueError),
             "T_mult": partial(_check_int, lo=1, bad_type=ValueError),
             "eta_min": partial(_check_real, lo=0.0, bad_type=ValueError)}

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        self.T_0 = self._check_arg("T_0", T_0)
        self.T_i = self.T_0
        self.T_mult = self._check_arg("T_mult", T_mult)
        self.eta_min = self._check_arg("eta_min", eta_min)
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def _state_checks(self, incoming):
        checks = super()._state_checks(incoming)
        checks["T_i"] = partial(_check_int, lo=1, hi=None)
        checks["T_cur"] = partial(_check_real, lo=0.0)
        return checks

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base_lr in self.base_lrs]

    def step(self, epoch=None):
        """One step, or jump to ``epoch`` (a real >= 0); as torch, no step count."""
        if epoch is not None:
            epoch = _check_epoch("epoch", epoch)
        with _atomic(self.optimizer, self, f"{type(self).__name__}.step"):
            if epoch is None and self.last_epoch < 0:
                epoch = 0
            if epoch is None:
                epoch = self.last_epoch + 1
                self.T_cur = self.T_cur + 1
                if self.T_cur >= self.T_i:
                    self.T_cur = self.T_cur % self.T_i
                    self.T_i = self.T_i * self.T_mult
            elif epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** (n)
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
            self.last_epoch = math.floor(epoch)
            self._get_lr_called_within_step = True
            try:
                values = self.get_lr()
            finally:
                self._get_lr_called_within_step = False
            self._set_lrs(values)


# ------------------------------------------------------ cyclic (lr and momentum)
def _momentum_key(optimizer):
    """'betas' (cycle betas[0]) or 'momentum', picked from the defaults as torch does."""
    defaults = getattr(optimizer, "defaults", None)
    if not isinstance(defaults, dict):
        defaults = optimizer.param_groups[0]
    if "momentum" not in defaults and "betas" not in defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` "
                         "option enabled")
    return "betas" if "betas" in defaults else "momentum"


def _check_momentum(use_beta1):
    # betas[0] must stay below 1; SGD/RMSprop momentum only needs to be >= 0
    return partial(_check_real, lo=0.0, hi=1.0 if use_beta1 else None, hi_open=True)


def _set_momentum(group, use_beta1, momentum):
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _momentum_state_checks(sched, incoming, lists=()):
    """Checks of the entries a state dict has when it cycles momentum (none otherwise)."""
    if not isinstance(incoming, dict) or incoming.get("cycle_momentum") is not True:
        return {}
    use_beta1 = _momentum_key(sched.optimizer) == "betas"

    def check_use_beta1(name, value):
        if _check_bool(name, value) != use_beta1:
            raise ValueError(f"{name} is {value}, but this optimizer keeps its momentum in "
                             f"{'betas' if use_beta1 else 'momentum'}")
        return use_beta1
    n = len(sched.optimizer.param_groups)
    checks = {"use_beta1": check_use_beta1}
    for key in lists:
        checks[key] = partial(_check_list, n=n, check_item=_check_momentum(use_beta1))
    return checks


class CyclicLR(LRScheduler):
    """Cyclical learning rate (and inverse momentum) between ``base_lr`` and ``max_lr``.

    Policies "triangular", "triangular2", "exp_range" (``gamma ** iteration``) or a
    custom ``scale_fn``; step once per batch. ``cycle_momentum`` cycles ``momentum``
    (SGD, RMSprop) or ``betas[0]`` (Adam) between ``max_momentum`` and ``base_momentum``.
    """

    _args = {"total_size": partial(_check_real, lo=0.0, lo_open=True),
             "step_ratio": partial(_check_real, lo=0.0, hi=1.0, lo_open=True),
             "gamma": _gamma,
             "scale_mode": partial(_check_choice, choices=("cycle", "iterations")),
             "cycle_momentum": _check_bool}
    _modes = ("triangular", "triangular2", "exp_range")

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        self.optimizer = _check_optimizer(optimizer)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        base_lrs = _per_group("base_lr", optimizer, base_lr, _check_lr)
        self.max_lrs = _per_group("max_lr", optimizer, max_lr, _check_lr)
        step_size_up = float(_check_real("step_size_up", step_size_up, lo=0.0, lo_open=True,
                                         hi=_MAX_COUNT))
        step_size_down = (step_size_up if step_size_down is None else
                          float(_check_real("step_size_down", step_size_down, lo=0.0,
                                            hi=_MAX_COUNT)))
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn must be None or a function, got "
                            f"{type(scale_fn).__name__}")
        if mode not in self._modes and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = self._check_arg("gamma", gamma)
        self._scale_fn_custom = scale_fn
        self.scale_mode = self._check_arg("scale_mode", scale_mode)
        self._init_scale_fn()
        self.cycle_momentum = self._check_arg("cycle_momentum", cycle_momentum)
        if self.cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer) == "betas"
            check = _check_momentum(self.use_beta1)
            self.base_momentums = _per_group("base_momentum", optimizer, base_momentum, check)
            self.max_momentums = _per_group("max_momentum", optimizer, max_momentum, check)
        with _atomic(optimizer):
            if last_epoch == -1:
                for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                    _set_group_value(group, "lr", lr)
                if self.cycle_momentum:
                    for m_momentum, b_momentum, group in zip(
                            self.max_momentums, self.base_momentums, optimizer.param_groups,
                            strict=True):
                        _set_momentum(group, self.use_beta1, m_momentum)
                        group["max_momentum"] = m_momentum
                        group["base_momentum"] = b_momentum
            super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self):
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x):
        """The scaling policy at cycle (or iteration) ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _triangular_scale_fn(x):
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x):
        return 1 / (2.0 ** (x - 1))

    @staticmethod
    def _exp_range_scale_fn(gamma, x):
        return gamma ** x

    def get_lr(self):
        """Next lrs; as in torch, also sets the groups' momentum when cycling it."""
        _warn_get_lr_called_within_step(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        at = cycle if self.scale_mode == "cycle" else self.last_epoch
        lrs = [base_lr + ((max_lr - base_lr) * scale_factor) * self.scale_fn(at)
               for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)]
        if self.cycle_momentum:
            momentums = [max_m - ((max_m - base_m) * scale_factor) * self.scale_fn(at)
                         for base_m, max_m in zip(self.base_momentums, self.max_momentums,
                                                  strict=True)]
            for group, momentum in zip(self.optimizer.param_groups, momentums, strict=True):
                _set_momentum(group, self.use_beta1, momentum)
        return lrs

    def _describe(self):
        return (f"base_lrs={self.base_lrs!r}, max_lrs={self.max_lrs!r}, mode={self.mode!r}, "
                + super()._describe())

    def state_dict(self):
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in self._not_state and k not in ("_scale_fn_ref", "_scale_fn_custom")}
        fn = self._scale_fn_custom  # saved only if it is a callable object, as in torch
        state["_scale_fn_custom"] = (None if fn is None or isinstance(fn, types.FunctionType)
                                     else fn.__dict__.copy())
        return state

    def _state_checks(self, incoming):
        checks = super()._state_checks(incoming)
        checks["max_lrs"] = partial(_check_list, n=len(self.optimizer.param_groups),
                                    check_item=_check_lr)
        checks["mode"] = partial(_check_choice, choices=(
            self._modes if self._scale_fn_custom is None else (self.mode,) + self._modes))
        checks["_scale_fn_custom"] = self._check_scale_fn_state
        checks.update(_momentum_state_checks(self, incoming,
                                             ("base_momentums", "max_momentums")))
        return checks

    def _check_scale_fn_state(self, name, value):
        if value is not None:
            if not isinstance(value, dict):
                raise TypeError(f"{name} must be None or a dict, got {type(value).__name__}")
            if self._scale_fn_custom is None:
                raise ValueError(f"{name} holds the state of a custom scale_fn, but this "
                                 "scheduler has none")
        return value

    def _apply_state(self, state):
        fn_state = state.pop("_scale_fn_custom")
        super()._apply_state(state)
        if fn_state is not None:
            self._scale_fn_custom.__dict__.update(fn_state)
        self._init_scale_fn()


def _one_cycle_phases(pct_start, total_steps, three_phase):
    phase = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
    if three_phase:
        rows = [(float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum",
                 "base_momentum"),
                (float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr",
                 "base_momentum", "max_momentum"),
                (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
    else:
        rows = [(float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum",
                 "base_momentum"),
                (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
    return [dict(zip(phase, row)) for row in rows]


def _check_phases(name, phases):
    """OneCycleLR's phase table; a phase of zero steps would divide by zero."""
    lr_keys, m_keys = ("initial_lr", "max_lr", "min_lr"), ("max_momentum", "base_momentum")
    if not isinstance(phases, (list, tuple)) or len(phases) not in (2, 3):
        raise ValueError(f"{name} must be a list of 2 or 3 phases")
    out, start = [], 0.0
    for i, ph in enumerate(phases):
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        if not isinstance(ph, dict) or set(ph) != set(keys):
            raise ValueError(f"{name}[{i}] must be a dict with the keys {list(keys)}")
        end = _check_real(f"{name}[{i}]['end_step']", ph["end_step"], lo=-1.0)
        for k, allowed in (("start_lr", lr_keys), ("end_lr", lr_keys),
                           ("start_momentum", m_keys), ("end_momentum", m_keys)):
            _check_choice(f"{name}[{i}][{k!r}]", ph[k], allowed)
        if end == start:
            raise ValueError(f"{name}: phase {i} ends at step {end}, where it starts: it "
                             "would divide by zero (choose pct_start so that no phase is "
                             "empty)")
        out.append(dict(ph, end_step=end))
        start = end
    return out


class OneCycleLR(LRScheduler):
    """The 1cycle policy: lr from ``max_lr / div_factor`` up to ``max_lr`` and down to
    ``initial_lr / final_div_factor`` over ``total_steps`` (or ``epochs * steps_per_epoch``)
    batches, cosine or linear; momentum cycled inversely (``momentum`` or ``betas[0]``).
    """

    _args = {"total_steps": partial(_check_int, lo=1, bad_type=ValueError),
             "_anneal_func_type": partial(_check_choice, choices=("cos", "linear")),
             "cycle_momentum": _check_bool}

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
                 base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):
        self.optimizer = _check_optimizer(optimizer)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        if total_steps is not None:
            self.total_steps = self._check_arg("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            epochs = _check_int("epochs", epochs, 1, bad_type=ValueError)
            steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1,
                                         bad_type=ValueError)
            self.total_steps = _check_int("epochs * steps_per_epoch", epochs * steps_per_epoch, 1)
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        pct_start = _check_real("pct_start", pct_start, lo=0.0, hi=1.0, bad_type=ValueError)
        three_phase = _check_bool("three_phase", three_phase)
        self._schedule_phases = _check_phases(
            f"pct_start={pct_start} with total_steps={self.total_steps}",
            _one_cycle_phases(pct_start, self.total_steps, three_phase))
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        div_factor = _check_real("div_factor", div_factor, lo=0.0, lo_open=True)
        final_div_factor = _check_real("final_div_factor", final_div_factor, lo=0.0,
                                       lo_open=True)
        max_lrs = _per_group("max_lr", optimizer, max_lr, _check_lr)
        initial_lrs = [_check_lr("max_lr / div_factor", m / div_factor) for m in max_lrs]
        min_lrs = [_check_lr("max_lr / div_factor / final_div_factor", i / final_div_factor)
                   for i in initial_lrs]
        self.cycle_momentum = self._check_arg("cycle_momentum", cycle_momentum)
        if self.cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer) == "betas"
            check = _check_momentum(self.use_beta1)
            max_momentums = _per_group("max_momentum", optimizer, max_momentum, check)
            base_momentums = _per_group("base_momentum", optimizer, base_momentum, check)
        with _atomic(optimizer):
            if last_epoch == -1:
                for group, m, i, lo in zip(optimizer.param_groups, max_lrs, initial_lrs,
                                           min_lrs, strict=True):
                    group["initial_lr"], group["max_lr"], group["min_lr"] = i, m, lo
                if self.cycle_momentum:
                    for m_momentum, b_momentum, group in zip(
                            max_momentums, base_momentums, optimizer.param_groups, strict=True):
                        _set_momentum(group, self.use_beta1, m_momentum)
                        group["max_momentum"] = m_momentum
                        group["base_momentum"] = b_momentum
            super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        return self._annealing_linear(start, end, pct)

    @staticmethod
    def _annealing_cos(start, end, pct):
        """Cosine anneal from `start` to `end` as pct goes from 0.0 to 1.0."""
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start, end, pct):
        """Linearly anneal from `start` to `end` as pct goes from 0.0 to 1.0."""
        return (end - start) * pct + start

    def get_lr(self):
        """Next lrs; as in torch, also sets the groups' momentum when cycling it."""
        _warn_get_lr_called_within_step(self)
        lrs = []
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of total "
                             f"steps is {self.total_steps}")
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    computed_lr = self._anneal_func(group[phase["start_lr"]],
                                                    group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        computed_momentum = self._anneal_func(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(computed_lr)
            if self.cycle_momentum:
                _set_momentum(group, self.use_beta1, computed_momentum)
        return lrs

    def _check_consistency(self, state):
        phases, total = state["_schedule_phases"], state["total_steps"]
        if phases[-1]["end_step"] != total - 1:
            raise ValueError(f"state_dict['_schedule_phases'] ends at step "
                             f"{phases[-1]['end_step']}, not at total_steps - 1 = {total - 1}")
        lr_path = [phases[0]["start_lr"]] + [ph["end_lr"] for ph in phases]
        if (lr_path[0] != "initial_lr" or lr_path[-1] != "min_lr"
                or any(ph["start_lr"] != prev for ph, prev in zip(phases, lr_path))):
            raise ValueError("state_dict['_schedule_phases'] is not a 1cycle phase table "
                             f"(learning rates {' -> '.join(lr_path)})")

    def _state_checks(self, incoming):
        checks = super()._state_checks(incoming)
        checks["_schedule_phases"] = _check_phases
        checks.update(_momentum_state_checks(self, incoming))
        return checks


# ------------------------------------------------------------------ composites
class _Composite(LRScheduler):
    """Shared by SequentialLR and ChainedScheduler: state dicts nest the schedulers'."""

    def state_dict(self):
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                 if k not in self._not_state and k != "_schedulers"}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def _check_sub_states(self, name, value):
        subs = _check_list(name, value, len(self._schedulers), lambda n, v: v)
        return [s._checked_state(d) for s, d in zip(self._schedulers, subs)]

    def _state_checks(self, incoming):
        lr_list = partial(_check_list, n=len(self.optimizer.param_groups), check_item=_check_lr)
        checks = {"_last_lr": lr_list, "_schedulers": self._check_sub_states}
        if isinstance(incoming, dict) and "_step_count" in incoming:
            # a composite inside SequentialLR gets a step count when it starts the run
            checks["_step_count"] = partial(_check_int, lo=0, hi=None)
        return checks

    def _apply_state(self, state):
        for s, sub in zip(self._schedulers, state.pop("_schedulers")):
            s._apply_state(sub)
        super()._apply_state(state)


def _check_scheduler_list(owner, schedulers, optimizer=None):
    """(schedulers as a list, their optimizer); all must share it, none a plateau one."""
    if not isinstance(schedulers, (list, tuple)):
        raise TypeError(f"{owner} expects a list of schedulers, got "
                        f"{type(schedulers).__name__}")
    if len(schedulers) < 1:
        raise ValueError(f"{owner} expects at least one scheduler, but got no scheduler.")
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler):
            raise TypeError(f"{owner}: the scheduler at index {i} is a {type(s).__name__}, "
                            "not an LRScheduler")
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(f"{owner} does not support `ReduceLROnPlateau` scheduler as it "
                             "requires additional kwargs to be specified when calling `step`, "
                             f"but got one at index {i} in the given schedulers sequence.")
    if optimizer is None:
        optimizer = schedulers[0].optimizer
    _check_optimizer(optimizer)
    for i, s in enumerate(schedulers):
        if s.optimizer is not optimizer:
            raise ValueError(f"{owner} expects all schedulers to belong to the same optimizer, "
                             f"but the scheduler {type(s).__name__} at index {i} has another "
                             "one")
    return list(schedulers), optimizer


def _check_milestone_list(name, value, n):
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__}")
    if len(value) != n:
        raise ValueError("Sequential Schedulers expects number of schedulers provided to be one "
                         "more than the number of milestone points, but got number of "
                         f"schedulers {n + 1} and the number of milestones to be equal to "
                         f"{len(value)}")
    milestones = [_check_int(f"{name}[{i}]", m, 0) for i, m in enumerate(value)]
    if any(a >= b for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {milestones}")
    return milestones


class SequentialLR(_Composite):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (restarted at
    its epoch 0 with its closed form)...

    e.g. ``SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=5), CosineAnnealingLR(opt, 95)],
    milestones=[5])``: 5 warm-up epochs, then cosine decay.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer(optimizer)
        schedulers, _ = _check_scheduler_list("SequentialLR", schedulers, optimizer)
        milestones = _check_milestone_list("milestones", milestones, len(schedulers) - 1)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        with _atomic(optimizer, self, "SequentialLR()"):
            for group in optimizer.param_groups:  # reset lrs to their initial values
                _set_group_value(group, "lr", group["initial_lr"])
            self.recursive_undo()  # "undo" the step each scheduler's constructor performed
            idx = bisect_right(self._milestones, 0)
            self._schedulers[idx]._initial_step()
            self._last_lr = schedulers[idx].get_last_lr()

    def recursive_undo(self, sched=None):
        """Recursively undo any step performed by the initialization of schedulers."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self):
        """One step of the scheduler whose turn it is."""
        with _atomic(self.optimizer, self, "SequentialLR.step"):
            self.last_epoch += 1
            idx = bisect_right(self._milestones, self.last_epoch)
            scheduler = self._schedulers[idx]
            if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
                scheduler._update_lr(0)
            else:
                scheduler.step()
            self._last_lr = scheduler.get_last_lr()

    def _state_checks(self, incoming):
        checks = super()._state_checks(incoming)
        checks["_milestones"] = partial(_check_milestone_list, n=len(self._schedulers) - 1)
        checks["last_epoch"] = _check_epoch
        return checks


class ChainedScheduler(_Composite):
    """Step every scheduler in ``schedulers`` at each ``step()`` (their effects compose)."""

    def __init__(self, schedulers, optimizer=None):
        schedulers, optimizer = _check_scheduler_list("ChainedScheduler", schedulers, optimizer)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self):
        """Step each scheduler in turn."""
        with _atomic(self.optimizer, self, "ChainedScheduler.step"):
            for scheduler in self._schedulers:
                scheduler.step()
            self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")


# ------------------------------------------------------------------ on plateau
def _check_metric(value):
    if (isinstance(value, (str, bytes, bool, np.bool_))
            or (isinstance(value, np.ndarray) and value.ndim != 0)):
        raise TypeError(f"metrics must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metrics must be a real number, got {type(value).__name__}") from None
    except OverflowError:  # an int beyond any double
        raise ValueError(f"metrics must be a real number within the float range, "
                         f"got {value}") from None


class ReduceLROnPlateau(LRScheduler):
    """Reduce lr by ``factor`` when ``metric`` (``step(metric)``) stops improving.

    Improvement (mode "min", threshold_mode "rel"): ``metric < best * (1 - threshold)``
    ("abs": ``metric < best - threshold``; mode "max" mirrored). After more than
    ``patience`` epochs without improvement: ``lr = max(lr * factor, min_lr)`` (skipped if
    the change is at most ``eps``), then ``cooldown`` epochs during which bad epochs are
    not counted.
    """

    _args = {"factor": partial(_check_real, lo=0.0, hi=1.0, hi_open=True,
                               msg="Factor should be < 1.0 and >= 0"),
             "patience": partial(_check_int, lo=0, hi=None),
             "cooldown": partial(_check_int, lo=0, hi=None),
             "eps": partial(_check_real, lo=0.0),
             "threshold": _check_real,
             "mode": partial(_check_choice, choices=("min", "max")),
             "threshold_mode": partial(_check_choice, choices=("rel", "abs"))}

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        self.factor = self._check_arg("factor", factor)
        self.optimizer = _check_optimizer(optimizer)
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = [_check_lr(f"min_lr[{i}]", v) for i, v in enumerate(min_lr)]
        else:
            self.default_min_lr = _check_lr("min_lr", min_lr)
            self.min_lrs = [self.default_min_lr] * n
        self.patience = self._check_arg("patience", patience)
        self.cooldown = self._check_arg("cooldown", cooldown)
        self.eps = self._check_arg("eps", eps)
        self.last_epoch = 0
        self._last_lr = _group_values(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self):
        """Reset num_bad_epochs counter and cooldown counter."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None):
        """Record this epoch's metric (e.g. validation loss); reduce the lr on a plateau."""
        current = _check_metric(metrics)
        if epoch is not None:
            epoch = _check_epoch("epoch", epoch)
        with _atomic(self.optimizer, self, "ReduceLROnPlateau.step"):
            if epoch is None:
                epoch = self.last_epoch + 1
            else:
                warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
            self.last_epoch = epoch
            if self._is_better(current, self.best):
                self.best = current
                self.num_bad_epochs = 0
            else:
                self.num_bad_epochs += 1
            if self.in_cooldown:
                self.cooldown_counter -= 1
                self.num_bad_epochs = 0  # ignore any bad epochs in cooldown
            if self.num_bad_epochs > self.patience:
                self._reduce_lr(epoch)
                self.cooldown_counter = self.cooldown
                self.num_bad_epochs = 0
            self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self, epoch):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise ValueError(
                    f"The number of param groups in the `optimizer` ({len(groups)}) differs "
                    f"from when `ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), "
                    "usually due to a new param group being added to the optimizer. Please "
                    "modify the `min_lrs` field to match the length of the `optimizer` param "
                    "groups.")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, group in enumerate(groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                _set_group_value(group, "lr", _check_lr(f"param_groups[{i}]['lr']", new_lr))

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode, threshold, threshold_mode):
        mode = self._check_arg("mode", mode)
        threshold_mode = self._check_arg("threshold_mode", threshold_mode)
        threshold = self._check_arg("threshold", threshold)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _state_checks(self, incoming):
        n = len(self.optimizer.param_groups)
        saved_min_lrs = incoming.get("min_lrs") if isinstance(incoming, dict) else None
        n_min_lrs = n
        if incoming.get("default_min_lr") is not None and isinstance(saved_min_lrs, list):
            n_min_lrs = len(saved_min_lrs)  # torch resizes them when groups were added
        checks = dict(self._args)
        checks.update({
            "default_min_lr": lambda name, v: None if v is None else _check_lr(name, v),
            "min_lrs": partial(_check_list, n=n_min_lrs, check_item=_check_lr),
            "last_epoch": _check_epoch,
            "_last_lr": partial(_check_list, n=n, check_item=_check_lr),
            "mode_worse": partial(_check_real, finite=False),
            "best": partial(_check_real, finite=False),
            "cooldown_counter": partial(_check_int, lo=0, hi=None),
            "num_bad_epochs": partial(_check_int, lo=0, hi=None)})
        return checks

    def _check_consistency(self, state):
        if state["mode_worse"] != (math.inf if state["mode"] == "min" else -math.inf):
            raise ValueError(f"state_dict['mode_worse'] is {state['mode_worse']}, not the "
                             f"worst value for mode {state['mode']!r}")

    def _checked_state(self, state_dict):
        if isinstance(state_dict, dict) and "_last_lr" not in state_dict:
            # torch before 2.2 set _last_lr only in step()
            state_dict = dict(state_dict, _last_lr=_group_values(self.optimizer, "lr"))
        return super()._checked_state(state_dict)

    def _apply_state(self, state):
        super()._apply_state(state)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
