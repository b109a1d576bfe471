"""Learning-rate schedules with torch.optim.lr_scheduler's interface and semantics.

Each scheduler sets ``optimizer.param_groups[i]["lr"]``. The epoch-based schedules compute
the learning rate from the closed form (torch's ``_get_closed_form_lr``) of
``base_lr = param_groups[i]["initial_lr"]`` and ``last_epoch``, so a resumed run gives
exactly the same values as an uninterrupted one:

    StepLR             lr = base_lr * gamma ** (last_epoch // step_size)
    ExponentialLR      lr = base_lr * gamma ** last_epoch
    CosineAnnealingLR  lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * last_epoch / T_max)) / 2
    LinearLR           lr = base_lr * (start_factor + (end_factor - start_factor)
                                       * min(last_epoch, total_iters) / total_iters)
    SequentialLR       runs schedulers[k] from milestones[k - 1] on (restarted at epoch 0)
    ReduceLROnPlateau  lr = max(lr * factor, min_lr) after more than ``patience`` bad epochs

As in torch, constructing a scheduler (with ``last_epoch=-1``) records ``initial_lr`` in
each param group and performs the first ``step()``; call ``step()`` once per epoch after
``optimizer.step``. State dicts are plain data (ints, floats, lists, strings).
"""

import math
import numbers
from bisect import bisect_right

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
           "SequentialLR", "ReduceLROnPlateau"]


def _check_optimizer(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "lr" in g for g in groups):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer "
                        "(needs a param_groups list of dicts with an 'lr')")


def _check_int(name, value, lo):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _check_float(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


class LRScheduler:
    """Base class: ``base_lrs``, ``last_epoch``, ``step()``, ``get_last_lr()``, state dicts.

    A subclass defines ``_lr_at(base_lr, epoch)`` (the closed form).
    """

    def __init__(self, optimizer, last_epoch=-1):
        _check_optimizer(optimizer)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                                   "when resuming a scheduler with last_epoch >= 0")
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self.step()

    def _lr_at(self, base_lr, epoch):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_lr(self):
        """Learning rates for the current ``last_epoch`` (closed form)."""
        return [self._lr_at(base, self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr

    def step(self, epoch=None):
        """Advance one epoch (or jump to ``epoch``) and set the optimizer's learning rates."""
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
        else:
            self.last_epoch = _check_int("epoch", epoch, 0)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """Learning rates set by the last ``step()``."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute except the optimizer, as plain data (lists copied)."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore a ``state_dict()``; keys must match this scheduler's exactly."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        own = set(self.state_dict())
        missing, unexpected = own - set(state_dict), set(state_dict) - own
        if missing or unexpected:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing keys "
                             f"{sorted(missing)}, unexpected keys {sorted(unexpected)}")
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr", "min_lrs"):
            if key in state_dict and len(state_dict[key]) != n:
                raise ValueError(f"state_dict['{key}'] has {len(state_dict[key])} entries, "
                                 f"the optimizer has {n} param groups")
        for k, v in state_dict.items():
            setattr(self, k, list(v) if isinstance(v, (list, tuple)) and k != "_schedulers" else v)


class StepLR(LRScheduler):
    """Decay by ``gamma`` every ``step_size`` epochs.

    ``lr = base_lr * gamma ** (epoch // step_size)``
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = _check_float("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """Decay by ``gamma`` every epoch: ``base_lr * gamma ** epoch``."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _check_float("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRScheduler):
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (period 2*T_max)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _check_int("T_max", T_max, 1)
        self.eta_min = _check_float("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, epoch):
        return (self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * epoch / self.T_max)) / 2)


class LinearLR(LRScheduler):
    """Linear warm-up: factor goes from ``start_factor`` to ``end_factor`` over ``total_iters``."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        start_factor = _check_float("start_factor", start_factor)
        end_factor = _check_float("end_factor", end_factor)
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 "
                             "and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = _check_int("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, epoch):
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                          * min(self.total_iters, epoch) / self.total_iters)


class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (from its epoch 0)...

    e.g. ``SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=5), CosineAnnealingLR(opt, 95)],
    milestones=[5])``: 5 warm-up epochs, then cosine decay.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer(optimizer)
        schedulers = list(schedulers)
        milestones = [_check_int("milestone", m, 1) for m in milestones]
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler.")
        for i, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError("SequentialLR does not support ReduceLROnPlateau (its step needs "
                                 f"a metric), got one at index {i}")
            if not isinstance(s, LRScheduler):
                raise TypeError(f"scheduler at index {i} is {type(s).__name__}, "
                                "not an LRScheduler")
            if s.optimizer is not optimizer:
                raise ValueError("SequentialLR expects all schedulers to belong to the same "
                                 f"optimizer, but the scheduler at index {i} has another one")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError("SequentialLR expects number of schedulers provided to be one more "
                             f"than the number of milestone points, but got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        if milestones != sorted(set(milestones)):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = _check_int("last_epoch", last_epoch, -1) + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in schedulers:  # "undo" the step performed by each scheduler's constructor
            s.last_epoch -= 1
        idx = bisect_right(milestones, 0)
        schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler.step(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        d = {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
             if k not in ("optimizer", "_schedulers")}
        d["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return d

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        subs = state_dict.get("_schedulers")
        if not isinstance(subs, (list, tuple)) or len(subs) != len(self._schedulers):
            raise ValueError(f"state_dict['_schedulers'] must list {len(self._schedulers)} "
                             "scheduler state dicts")
        rest = {k: v for k, v in state_dict.items() if k != "_schedulers"}
        own = set(self.state_dict()) - {"_schedulers"}
        if set(rest) != own:
            raise ValueError(f"SequentialLR.load_state_dict: missing keys {sorted(own - set(rest))}"
                             f", unexpected keys {sorted(set(rest) - own)}")
        for s, sd in zip(self._schedulers, subs):
            s.load_state_dict(sd)
        for k, v in rest.items():
            setattr(self, k, list(v) if isinstance(v, (list, tuple)) else v)


class ReduceLROnPlateau:
    """Reduce lr by ``factor`` when ``metric`` (``step(metric)``) stops improving (torch semantics).

    Improvement (mode "min", threshold_mode "rel"): ``metric < best * (1 - threshold)``
    ("abs": ``metric < best - threshold``; mode "max" mirrored). After more than
    ``patience`` epochs without improvement: ``lr = max(lr * factor, min_lr)`` (skipped if
    the change is at most ``eps``), then ``cooldown`` epochs during which bad epochs are
    not counted.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        _check_optimizer(optimizer)
        factor = _check_float("factor", factor)
        if factor >= 1.0 or factor < 0:
            raise ValueError("Factor should be < 1.0 and >= 0.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown!")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = [_check_float("min_lr", v) for v in min_lr]
        else:
            self.default_min_lr = _check_float("min_lr", min_lr)
            self.min_lrs = [self.default_min_lr] * n
        self.factor = factor
        self.patience = _check_int("patience", patience, 0)
        self.cooldown = _check_int("cooldown", cooldown, 0)
        self.threshold = _check_float("threshold", threshold)
        self.eps = _check_float("eps", eps)
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def step(self, metrics):
        """Record this epoch's metric (e.g. validation loss) and reduce lr on a plateau."""
        if not isinstance(metrics, numbers.Real) and not hasattr(metrics, "__float__"):
            raise TypeError(f"metrics must be a real number, got {type(metrics).__name__}")
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def get_last_lr(self):
        return list(self._last_lr)

    state_dict = LRScheduler.state_dict
    load_state_dict = LRScheduler.load_state_dict
