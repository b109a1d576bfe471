"""Optimizer classes with torch.optim's interface over fastoptim's functional kernels.

The classes only manage state; the math is the functional API (``fastoptim.functional``).
Each ``step(grads)`` validates every gradient first, then updates each *bucket* of
parameters (same param group, same per-parameter step count, same dtype -- normally one
bucket per group) with ONE functional call on lists of arrays, so a whole model goes
into compiled code in as many calls as it has param groups.

    opt = Adam([w, b], lr=1e-3)       # or groups: [{"params": [w], "lr": 1e-2}, {"params": [b]}]
    for x, y in batches:
        gw, gb = backward(x, y)
        opt.step([gw, gb])                            # grads in the order params were given

State is plain data: ``opt.state[i]`` (``i`` = position of the parameter in the flattened
parameter list) is a dict ``{"step": int, <buffer name>: ndarray}`` created lazily (zeros)
at the first step; buffer names follow torch (``momentum_buffer``, ``square_avg``,
``grad_avg``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``).
"""

import numbers
from bisect import bisect_right

import numpy as np

from . import functional as _F
from ._alloc import zeros_state_like

from .clip import _all_finite, _nonfinite_index

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NONFINITE_MODES = ("ignore", "raise", "skip")
_INF = float("inf")
_PLAIN_REALS = (float, int)


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_real(label, value, lo=0.0, lo_open=False, hi=None, hi_open=False):
    """Raise unless value is a finite real in the range; torch's message 'Invalid <label>: v'.

    The ranges are those of the functional API, so an optimizer that was constructed
    never fails its kernel call on hyperparameters.  (Called at every step: kept cheap.)
    """
    t = type(value)
    if t is not float and t is not int and not _is_real(value):
        raise TypeError(f"Invalid {label}: {value!r} (expected a real number)")
    v = float(value)
    if not (v > lo if lo_open else v >= lo) or v == _INF or (
            hi is not None and not (v < hi if hi_open else v <= hi)):
        raise ValueError(f"Invalid {label}: {value}")  # also nan: every comparison is False


def _plain(value, lo, hi, lo_open=False):
    """Fast accept for the common case: a Python float or int in [lo, hi) (or (lo, hi)).
    False sends the caller to the full checks, which accept or raise."""
    return (type(value) in _PLAIN_REALS and (lo < value if lo_open else lo <= value)
            and value < hi)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {name}: {value!r} (expected a bool)")


def _byte_range(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


class _Bucket:
    """Parameters updated together by one functional call."""

    __slots__ = ("group", "ids", "params", "names", "bufs", "all")

    def __init__(self, group, ids, params, names, all_params):
        self.group = group
        self.ids = ids              # flattened indices
        self.params = params        # list of ndarrays
        self.names = names          # state buffer names needed
        self.bufs = None            # {name: [ndarray, ...]} once state exists
        self.all = all_params       # True if ids == range(n_params): pass grads as given


class Optimizer:
    """Base class: param groups, lazy state, validation, state_dict / load_state_dict.

    A subclass defines ``_check_group(group)`` (validate hyperparameters, raise),
    ``_buffer_names(group)`` (state buffers the group's options need) and
    ``_update(group, params, grads, bufs, step)`` (one functional call on lists).

    ``nonfinite``: ``"ignore"`` (default, like torch: no check), ``"raise"``
    (FloatingPointError naming the first non-finite gradient) or ``"skip"`` (the whole
    step is skipped and ``step`` returns False). Either way nothing is changed.
    ``n_threads`` is passed to the kernels (None = all usable cores).
    """

    def __init__(self, params, defaults, *, nonfinite="ignore", n_threads=None):
        if nonfinite not in _NONFINITE_MODES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} "
                             f"(expected one of {_NONFINITE_MODES})")
        if n_threads is not None and (not isinstance(n_threads, numbers.Integral)
                                      or isinstance(n_threads, bool) or n_threads == 0):
            raise ValueError(f"Invalid n_threads: {n_threads!r} (expected None or a nonzero int)")
        self.defaults = dict(defaults)
        self.nonfinite = nonfinite
        self.n_threads = n_threads
        self.state = {}
        self.param_groups = []
        if isinstance(params, (np.ndarray, dict)):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"arrays or dicts, but got {type(params).__name__}")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)
        self._plan = None

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a dict ``{"params": [...], <hyperparameters>}``; defaults fill missing keys."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' key")
        params = param_group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of arrays in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        for j, p in enumerate(params):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"optimizer can only optimize ndarrays, but param {j} of the "
                                f"group is {type(p).__name__}")
            if p.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"param {j} of the group has dtype {p.dtype}; "
                                "expected float32 or float64")
            if not (p.flags.c_contiguous or p.flags.f_contiguous):
                raise ValueError(f"param {j} of the group is not contiguous (C or Fortran "
                                 "order); it is updated in place, so no copy can stand in")
            if not p.flags.writeable:
                raise ValueError(f"param {j} of the group is read-only")
        group = dict(param_group)
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        self._check_disjoint([p for g in self.param_groups for p in g["params"]] + params)
        self.param_groups.append(group)
        self._plan = None

    @staticmethod
    def _check_disjoint(params):
        """A param given twice, or two params sharing memory -> ValueError (O(n log n))."""
        seen = {}
        for p in params:
            if id(p) in seen:
                raise ValueError("some parameters appear more than once "
                                 f"(param {seen[id(p)]} and param {len(seen)})")
            seen[id(p)] = len(seen)
        ranges = sorted((*_byte_range(p), i) for i, p in enumerate(params) if p.size)
        for (s0, e0, i0), (s1, e1, i1) in zip(ranges, ranges[1:]):
            if s1 < e0:
                raise ValueError(f"params {min(i0, i1)} and {max(i0, i1)} share memory")

    # subclasses -------------------------------------------------------------
    def _check_group(self, group):  # pragma: no cover - abstract
        raise NotImplementedError

    def _buffer_names(self, group):  # pragma: no cover - abstract
        raise NotImplementedError

    def _update(self, group, params, grads, bufs, step):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------- plan
    def _fingerprint(self):
        return tuple((id(g), id(g["params"]), len(g["params"]), self._buffer_names(g))
                     for g in self.param_groups)

    def _build_plan(self):
        """Split each group into buckets of equal step count and dtype; cache the lists."""
        flat = [p for g in self.param_groups for p in g["params"]]
        buckets = []
        start = 0
        for group in self.param_groups:
            names = self._buffer_names(group)
            keys = {}
            for i in range(start, start + len(group["params"])):
                st = self.state.get(i)
                key = (0 if st is None else st["step"], flat[i].dtype.char)
                keys.setdefault(key, []).append(i)
            for ids in keys.values():
                b = _Bucket(group, ids, [flat[i] for i in ids], names,
                            ids == list(range(len(flat))))
                if all(i in self.state for i in ids):
                    self._attach_buffers(b)
                buckets.append(b)
            start += len(group["params"])
        ranges = sorted((*_byte_range(p), i) for i, p in enumerate(flat) if p.size)
        self._plan = (self._fingerprint(), flat, buckets)
        # sorted, disjoint param byte ranges: for the grad/param overlap check across calls
        self._param_ranges = ([r[0] for r in ranges], [r[1] for r in ranges],
                              [r[2] for r in ranges]) if len(buckets) > 1 else None

    def _attach_buffers(self, b):
        """Point the bucket at its state buffers, creating any missing one (zeros)."""
        for i, p in zip(b.ids, b.params):
            st = self.state.setdefault(i, {"step": 0})
            for k, name in enumerate(b.names):
                if st.get(name) is None:
                    # offset from the param's page offset: no 4K aliasing in the kernel
                    st[name] = zeros_state_like(p, k + 1)
        b.bufs = {name: [self.state[i][name] for i in b.ids] for name in b.names}

    def _get_plan(self):
        plan = self._plan
        if plan is None or plan[0] != self._fingerprint():
            self._build_plan()
            plan = self._plan
        return plan

    # ------------------------------------------------------------------- step
    def _check_grads(self, grads, params):
        if type(grads) is not list and type(grads) is not tuple:
            if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
                raise TypeError("grads must be a list or tuple of ndarrays (one per param, in "
                                "the order the params were given), got "
                                f"{type(grads).__name__}")
        if len(grads) != len(params):
            raise ValueError(f"expected {len(params)} gradients (one per param), got {len(grads)}")
        out = None
        ndarray = np.ndarray
        for i, (g, p) in enumerate(zip(grads, params)):
            c_order = p.flags.c_contiguous
            if type(g) is ndarray and g.dtype is p.dtype and g.shape == p.shape:
                if g.flags.c_contiguous if c_order else g.flags.f_contiguous:
                    continue
            else:
                if not isinstance(g, ndarray):
                    raise TypeError(f"grad {i} is {type(g).__name__}, expected an ndarray")
                if g.dtype != p.dtype:
                    raise TypeError(f"grad {i} has dtype {g.dtype} but its param has dtype "
                                    f"{p.dtype}")
                if g.shape != p.shape:
                    raise ValueError(f"grad {i} has shape {g.shape} but its param has shape "
                                     f"{p.shape}")
                if (g.flags.c_contiguous if c_order else g.flags.f_contiguous) and g.dtype.isnative:
                    continue
            if out is None:
                out = list(grads)
            # grads are only read: a copy in the param's memory order is safe
            out[i] = np.array(g, dtype=p.dtype, order="C" if c_order else "F")
        return grads if out is None else out

    def _check_grads_disjoint(self, grads):
        """A grad sharing memory with a param -> ValueError (one call checks only its own)."""
        starts, ends, ids = self._param_ranges
        for i, g in enumerate(grads):
            if not g.size:
                continue
            s, e = _byte_range(g)
            k = bisect_right(starts, s) - 1
            for j in (k, k + 1):
                if 0 <= j < len(starts) and starts[j] < e and ends[j] > s:
                    raise ValueError(f"grad {i} and param {ids[j]} share memory; every updated "
                                     "buffer needs its own memory")

    def step(self, grads):
        """Apply one update; ``grads[i]`` is the gradient of the i-th param (flattened order).

        Returns True when the update was applied, False when ``nonfinite="skip"`` skipped it.
        On any error nothing is changed (no state created, no step counter advanced).
        """
        _, flat, buckets = self._get_plan()
        for group in self.param_groups:
            self._check_group(group)
        if (len(buckets) == 1 and buckets[0].all and buckets[0].bufs is not None
                and self.nonfinite == "ignore"):
            # The whole step is one kernel call, and the kernel checks every grad (type,
            # dtype, shape, layout, memory shared with a buffer) before it writes
            # anything.  So try it as given; only a rejected call pays for the checks
            # below, which copy a grad that just needs another layout and word the error.
            b = buckets[0]
            step = self.state[b.ids[0]]["step"] + 1
            try:
                self._update(b.group, b.params, grads, b.bufs, step)
            except (TypeError, ValueError):
                pass  # nothing was changed
            else:
                for i in b.ids:
                    self.state[i]["step"] = step
                return True
        grads = self._check_grads(grads, flat)
        if self._param_ranges is not None:  # several kernel calls: check what none of them sees
            self._check_grads_disjoint(grads)
        if self.nonfinite != "ignore" and not _all_finite(grads):
            if self.nonfinite == "skip":
                return False
            i = _nonfinite_index(grads)
            raise FloatingPointError(f"grad {i} contains non-finite values (inf or nan); "
                                     "the step was not applied")
        for b in buckets:
            new = b.bufs is None
            if new:
                self._attach_buffers(b)
            state = self.state
            step = state[b.ids[0]]["step"] + 1
            gs = grads if b.all else [grads[i] for i in b.ids]
            try:
                self._update(b.group, b.params, gs, b.bufs, step)
            except BaseException:
                if new:
                    for i in b.ids:
                        del state[i]
                    b.bufs = None
                raise
            for i in b.ids:
                state[i]["step"] = step
        return True

    # ------------------------------------------------------------ state dicts
    def state_dict(self):
        """Plain data, torch-like; arrays are copies (safe to keep while training goes on).

        ``{"state": {i: {"step": int, name: ndarray}},
          "param_groups": [{..., "params": [i, ...]}]}``
        """
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                 for i, st in sorted(self.state.items())}
        groups = []
        start = 0
        for g in self.param_groups:
            d = {k: (list(v) if isinstance(v, list) else v) for k, v in g.items() if k != "params"}
            d["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Validate ``state_dict`` fully, then copy it into this optimizer's own buffers.

        Saved param ids are mapped positionally onto this optimizer's params (as torch does).
        Raises ValueError/TypeError on any mismatch (group count, param counts, unknown or
        missing state entries, shapes, dtypes) and changes nothing in that case.
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("state_dict must be a dict with exactly the keys 'state' and "
                             "'param_groups'")
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        if not isinstance(saved_groups, (list, tuple)) or not isinstance(saved_state, dict):
            raise TypeError("state_dict['param_groups'] must be a list and "
                            "state_dict['state'] a dict")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        id_map = {}
        new_groups = []
        start = 0
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"param_groups[{gi}] must be a dict with a 'params' key")
            ids = list(saved["params"])
            if len(ids) != len(group["params"]):
                raise ValueError(f"param_groups[{gi}] has {len(ids)} params in the loaded state "
                                 f"dict but {len(group['params'])} in this optimizer")
            for j, sid in enumerate(ids):
                if not isinstance(sid, numbers.Integral) or isinstance(sid, bool) or sid in id_map:
                    raise ValueError(f"param_groups[{gi}]['params'] has an invalid or repeated "
                                     f"param id {sid!r}")
                id_map[int(sid)] = start + j
            new = {k: v for k, v in saved.items() if k != "params"}
            for key, value in self.defaults.items():
                new.setdefault(key, value)
            new["params"] = group["params"]
            self._check_group(new)
            new_groups.append(new)
            start += len(ids)
        flat = [p for g in self.param_groups for p in g["params"]]
        group_of = [g for g in new_groups for _ in g["params"]]
        new_state = {}
        for sid, st in saved_state.items():
            if not isinstance(sid, numbers.Integral) or int(sid) not in id_map:
                raise ValueError(f"state entry {sid!r} does not name a param of the loaded groups")
            i = id_map[int(sid)]
            p = flat[i]
            if not isinstance(st, dict) or "step" not in st:
                raise ValueError(f"state[{sid}] must be a dict with a 'step' entry")
            step = st["step"]
            if isinstance(step, np.ndarray) and step.ndim == 0:
                step = step.item()
            if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 0:
                raise ValueError(f"state[{sid}]['step'] must be an int >= 0, got {step!r}")
            names = self._buffer_names(group_of[i])
            extra = set(st) - {"step"} - set(names)
            extra = {k for k in extra if st[k] is not None}
            if extra:
                raise ValueError(f"state[{sid}] has unexpected entries {sorted(extra)} for "
                                 f"{type(self).__name__} with these options")
            out = {"step": int(step)}
            for k, name in enumerate(names):
                a = st.get(name)
                if a is None:
                    if step > 0:
                        raise ValueError(f"state[{sid}] is missing '{name}'")
                    a = np.zeros_like(p)
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"state[{sid}]['{name}'] must be an ndarray, "
                                    f"got {type(a).__name__}")
                if a.shape != p.shape:
                    raise ValueError(f"state[{sid}]['{name}'] has shape {a.shape}, "
                                     f"param {i} has shape {p.shape}")
                if a.dtype != p.dtype:
                    raise TypeError(f"state[{sid}]['{name}'] has dtype {a.dtype}, "
                                    f"param {i} has dtype {p.dtype}")
                # a copy in the param's memory order, placed like a fresh state buffer
                buf = zeros_state_like(p, k + 1)
                buf[...] = a
                out[name] = buf
            new_state[i] = out
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = new_state
        self._plan = None


# ---------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum (torch.optim.SGD semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        buf = g (t == 1)  |  momentum * buf + (1 - dampening) * g   (if momentum != 0)
        g = g + momentum * buf if nesterov else buf
        p -= lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, nonfinite="ignore", n_threads=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads)

    def _check_group(self, g):
        if (_plain(g["lr"], 0.0, _INF) and _plain(g["momentum"], 0.0, _INF)
                and _plain(g["dampening"], 0.0, 1.0) and _plain(g["weight_decay"], 0.0, _INF)
                and g["nesterov"] is False and type(g["maximize"]) is bool):
            return  # checked every step: the common case in a few comparisons
        _check_real("learning rate", g["lr"])
        _check_real("momentum value", g["momentum"])
        _check_real("dampening value", g["dampening"], hi=1.0)
        _check_real("weight_decay value", g["weight_decay"])
        _check_bool("nesterov", g["nesterov"])
        _check_bool("maximize", g["maximize"])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _buffer_names(self, g):
        return ("momentum_buffer",) if g["momentum"] != 0 else ()

    def _update(self, g, params, grads, bufs, step):
        _F.sgd_(params, grads, bufs.get("momentum_buffer"), step=step, lr=float(g["lr"]),
                momentum=float(g["momentum"]), dampening=float(g["dampening"]),
                nesterov=bool(g["nesterov"]), weight_decay=float(g["weight_decay"]),
                maximize=bool(g["maximize"]), n_threads=self.n_threads)


class Momentum(SGD):
    """SGD with momentum 0.9 by default (the course's "Momentum"); otherwise exactly SGD."""

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, nonfinite="ignore", n_threads=None):
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov,
                         maximize=maximize, nonfinite=nonfinite, n_threads=n_threads)


# ------------------------------------------------------------------ RMSprop
class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        avg = sqrt(sq - ga * ga) + eps  with ga += (1 - alpha) * (g - ga)   if centered
        avg = sqrt(sq) + eps                                                otherwise
        buf = momentum * buf + g / avg;  p -= lr * buf    if momentum > 0
        p -= lr * g / avg                                 otherwise
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False, nonfinite="ignore", n_threads=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads)

    def _check_group(self, g):
        if (_plain(g["lr"], 0.0, _INF) and _plain(g["eps"], 0.0, _INF, lo_open=True)
                and _plain(g["momentum"], 0.0, _INF) and _plain(g["weight_decay"], 0.0, _INF)
                and _plain(g["alpha"], 0.0, 1.0) and type(g["centered"]) is bool
                and type(g["maximize"]) is bool):
            return  # checked every step: the common case in a few comparisons
        _check_real("learning rate", g["lr"])
        _check_real("epsilon value", g["eps"], lo_open=True)
        _check_real("momentum value", g["momentum"])
        _check_real("weight_decay value", g["weight_decay"])
        _check_real("alpha value", g["alpha"], hi=1.0, hi_open=True)
        _check_bool("centered", g["centered"])
        _check_bool("maximize", g["maximize"])

    def _buffer_names(self, g):
        names = ("square_avg",)
        if g["momentum"] > 0:
            names += ("momentum_buffer",)
        if g["centered"]:
            names += ("grad_avg",)
        return names

    def _update(self, g, params, grads, bufs, step):
        _F.rmsprop_(params, grads, bufs["square_avg"], step=step, lr=float(g["lr"]),
                    alpha=float(g["alpha"]), eps=float(g["eps"]),
                    weight_decay=float(g["weight_decay"]), momentum=float(g["momentum"]),
                    momentum_buffer=bufs.get("momentum_buffer"), centered=bool(g["centered"]),
                    grad_avg=bufs.get("grad_avg"), maximize=bool(g["maximize"]),
                    n_threads=self.n_threads)


# --------------------------------------------------------------------- Adam
class Adam(Optimizer):
    r"""Adam (torch.optim.Adam semantics; ``decoupled_weight_decay=True`` is AdamW).

    .. code-block:: text

        g = -g if maximize
        p *= 1 - lr * weight_decay  if decoupled  else  g += weight_decay * p
        m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v) and used in place of v   if amsgrad
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False,
                 nonfinite="ignore", n_threads=None):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads)

    def _check_group(self, g):
        betas = g["betas"]
        if (_plain(g["lr"], 0.0, _INF) and _plain(g["eps"], 0.0, _INF, lo_open=True)
                and type(betas) is tuple and len(betas) == 2 and _plain(betas[0], 0.0, 1.0)
                and _plain(betas[1], 0.0, 1.0) and _plain(g["weight_decay"], 0.0, _INF)
                and type(g["amsgrad"]) is bool and type(g["maximize"]) is bool
                and type(g["decoupled_weight_decay"]) is bool):
            return  # checked every step: the common case in a few comparisons
        _check_real("learning rate", g["lr"])
        _check_real("epsilon value", g["eps"], lo_open=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Invalid betas: {betas!r} (expected a pair of floats)")
        for k in (0, 1):
            _check_real(f"beta parameter at index {k}", betas[k], hi=1.0, hi_open=True)
        _check_real("weight_decay value", g["weight_decay"])
        _check_bool("amsgrad", g["amsgrad"])
        _check_bool("maximize", g["maximize"])
        _check_bool("decoupled_weight_decay", g["decoupled_weight_decay"])

    def _buffer_names(self, g):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if g["amsgrad"] else names

    def _update(self, g, params, grads, bufs, step):
        beta1, beta2 = g["betas"]
        _F.adam_(params, grads, bufs["exp_avg"], bufs["exp_avg_sq"], step=step,
                 lr=float(g["lr"]), beta1=float(beta1), beta2=float(beta2), eps=float(g["eps"]),
                 weight_decay=float(g["weight_decay"]),
                 decoupled_weight_decay=bool(g["decoupled_weight_decay"]),
                 amsgrad=bool(g["amsgrad"]), max_exp_avg_sq=bufs.get("max_exp_avg_sq"),
                 maximize=bool(g["maximize"]), n_threads=self.n_threads)


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, default 1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, nonfinite="ignore", n_threads=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, nonfinite=nonfinite, n_threads=n_threads)
