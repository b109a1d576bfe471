"""Optimizer classes with torch.optim's interface over fastoptim's functional kernels.

The classes only manage state; the math is the functional API (``fastoptim.functional``).
Each ``step(grads)`` checks everything first, then updates each *bucket* of parameters
(same param group, same per-parameter step count, same dtype -- normally one bucket per
group) with ONE functional call on lists of arrays, so a whole model goes into compiled
code in as many calls as it has param groups.

    opt = Adam([w, b], lr=1e-3)       # or groups: [{"params": [w], "lr": 1e-2}, {"params": [b]}]
    for x, y in batches:
        gw, gb = backward(x, y)
        opt.step([gw, gb])                            # grads in the order params were given

State is plain data: ``opt.state[i]`` (``i`` = position of the parameter in the flattened
parameter list) is a dict ``{"step": int, <buffer name>: ndarray}`` created lazily (zeros)
at the param's first step; buffer names follow torch (``momentum_buffer``, ``square_avg``,
``grad_avg``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``).

What is in ``param_groups`` and ``state`` is what the next step uses, as in torch: a param
replaced in ``param_groups[i]["params"]``, a state buffer replaced or deleted, a cleared
``state`` -- each is checked (dtype, shape, memory order, writeable, no shared memory)
when the step sees it.  The step keeps a plan of its kernel calls and compares it with
the live objects by identity each time (cheap); anything changed is re-checked in full.
"""

import numbers
import threading
from bisect import bisect_right
from itertools import chain, repeat
from operator import is_, itemgetter, methodcaller

import numpy as np

from . import functional as _F
from ._alloc import zeros_state_like
from ._backend import resolve_n_threads

from .clip import _all_finite, _nonfinite_index

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32 = np.dtype(np.float32)
_16BIT_NAMES = ("float16", "bfloat16")
_ROUNDINGS = ("nearest", "stochastic")
_MASTER = "master"  # the state entry of a 16-bit param's float32 master weights
_NONFINITE_MODES = ("ignore", "raise", "skip")
_INF = float("inf")
_BIG_INT = 2**63  # larger ints take the full checks (a double may not hold them)
_NONE_TYPE = type(None)
_MAX_STEP = 2**53  # the bias corrections raise the betas to the step count, as a double
#: value types that cannot change in place: a group value of one of these (or a tuple of
#: them) that is the same object as at the last check needs no new check
_IMMUTABLE_TYPES = frozenset({float, int, bool, _NONE_TYPE, np.float16, np.float32, np.float64,
                              np.longdouble, np.int8, np.int16, np.int32, np.int64, np.uint8,
                              np.uint16, np.uint32, np.uint64, np.bool_})


# -------------------------------------------------------- hyperparameters
def _show(value):
    """A value for an error message (a huge int would fill the screen)."""
    if type(value) is int and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    return str(value)


def _real(label, value):
    """value as a Python float: a real number or a one-element real array (torch takes a
    one-element Tensor lr).  NaN and ints beyond a double are refused, naming ``label``."""
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "fiu":
            raise ValueError(f"Invalid {label}: an array must hold one real number, got "
                             f"shape {value.shape} and dtype {value.dtype}")
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {label}: {value!r} (expected a real number)")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"Invalid {label}: {_show(value)} (beyond the range of a double)") \
            from None
    if v != v:
        raise ValueError(f"Invalid {label}: nan")
    return v


def _num(value):
    """A checked hyperparameter as the float the functional API takes."""
    return value if type(value) is float else _real("hyperparameter", value)


def _check_real(label, value, lo=None, hi=None):
    """torch's check ``lo <= value (< hi)`` and message ``Invalid <label>: <value>``; a
    bound of None is not checked (torch lets inf through wherever it does not compare)."""
    v = _real(label, value)
    if (lo is not None and not lo <= v) or (hi is not None and not v < hi):
        raise ValueError(f"Invalid {label}: {_show(value)}")


def _plain(value, lo, hi):
    """Fast accept for the common case: a Python float or int with lo <= value < hi.
    False sends the caller to the full checks, which accept or raise."""
    t = type(value)
    return (t is float or (t is int and -_BIG_INT < value < _BIG_INT)) and lo <= value < hi


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {name}: {value!r} (expected a bool)")


def _check_torch_flags(g, keys):
    """torch's implementation switches: accepted as no-ops, except what fastoptim cannot
    honour (``differentiable=True``) and the combination torch refuses."""
    for key in keys:
        value = g[key]
        if key in ("foreach", "fused") and value is None:
            continue
        _check_bool(key, value)
    if g.get("differentiable"):
        raise ValueError("Invalid differentiable: True (fastoptim's update runs in compiled "
                         "code outside any autograd graph; use differentiable=False)")
    if g.get("fused") and g.get("foreach"):
        raise ValueError("`fused` and `foreach` cannot be `True` together.")


def _plain_torch_flags(g, keys):
    """Fast accept: bools (None for foreach / fused), differentiable False, not both
    fused and foreach.  False sends the caller to _check_torch_flags."""
    for key in keys:
        value = g[key]
        if value is True:
            if key == "differentiable":
                return False
        elif value is not False and not (value is None and key in ("foreach", "fused")):
            return False
    return not (g.get("fused") is True and g.get("foreach") is True)


def _tuple_getter(keys):
    """``itemgetter(*keys)``, a tuple even for one key or none."""
    if not keys:
        return lambda d: ()
    if len(keys) == 1:
        key = keys[0]
        return lambda d: (d[key],)
    return itemgetter(*keys)


def _immutable(values):
    return all(type(v) in _IMMUTABLE_TYPES
               or (type(v) is tuple and all(type(x) in _IMMUTABLE_TYPES for x in v))
               for v in values)


class _Hyper:
    """A group's checked hyperparameters: the values read from the group (``raw``) and
    the state buffer names its options need."""

    __slots__ = ("group", "raw", "names")

    def __init__(self, group, raw, names):
        self.group = group
        self.raw = raw
        self.names = names


# ----------------------------------------------------------------- arrays
def _byte_range(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _same_order(a, p):
    """The kernel's rule: element k is the same element of a and p."""
    return (a.flags.c_contiguous == p.flags.c_contiguous
            or a.flags.f_contiguous == p.flags.f_contiguous)


def _check_param(p, label):
    if not isinstance(p, np.ndarray):
        raise TypeError(f"optimizer can only optimize ndarrays, but {label} is "
                        f"{type(p).__name__}")
    if p.dtype not in _FLOAT_DTYPES and not _is_16bit(p.dtype):
        raise TypeError(f"{label} has dtype {p.dtype}; expected float32, float64, float16 "
                        "or bfloat16 in native byte order")
    flags = p.flags
    if not (flags.c_contiguous or flags.f_contiguous):
        raise ValueError(f"{label} is not contiguous (C or Fortran order); it is updated in "
                         "place, so no copy can stand in")
    if not flags.aligned:
        raise ValueError(f"{label} is not aligned to its dtype")
    if not flags.writeable:
        raise ValueError(f"{label} is read-only")


def _is_16bit(dtype):
    return dtype.name in _16BIT_NAMES and dtype.isnative


def _math_dtype(p):
    """The dtype a param's update computes in: float32 for 16-bit params."""
    return _F32 if _is_16bit(p.dtype) else p.dtype


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:  # a declared dependency: only a broken install lacks it
        raise ImportError("state_dtype='bfloat16' needs the ml_dtypes package "
                          "(pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


#: state_dtype -> the dtype state buffers are stored in (a function: bfloat16 imports
#: ml_dtypes); None = the param's math dtype.  One entry per storage: a storage that is
#: not a plain dtype (8-bit blockwise) adds its entry and its allocation in _zeros_buffer.
_STATE_DTYPES = {None: lambda: None, "float16": lambda: np.dtype(np.float16),
                 "bfloat16": _bfloat16}


def _check_buffer(buf, p, i, name, dtype):
    """A state buffer (of this dtype) the kernel updates in place next to param i."""
    label = f"state[{i}][{name!r}]"
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{label} must be an ndarray, got {type(buf).__name__}")
    if buf.dtype != dtype:
        raise TypeError(f"{label} has dtype {buf.dtype}, param {i} has dtype {p.dtype}"
                        + ("" if dtype == p.dtype else f": its state is {dtype}"))
    if buf.shape != p.shape:
        raise ValueError(f"{label} has shape {buf.shape}, param {i} has shape {p.shape}")
    flags = buf.flags
    if not (flags.c_contiguous or flags.f_contiguous) or not _same_order(buf, p):
        raise ValueError(f"{label} must be contiguous in the memory order of param {i} "
                         "(it is updated in place element by element with the param)")
    if not flags.aligned:
        raise ValueError(f"{label} is not aligned to its dtype")
    if not flags.writeable:
        raise ValueError(f"{label} is read-only")


def _check_no_shared_memory(arrays, labels):
    """Two of the arrays sharing memory -> ValueError naming both (O(n log n))."""
    seen = {}
    for k, a in enumerate(arrays):
        j = seen.setdefault(id(a), k)
        if j != k:
            if labels[j].startswith("param") and labels[k].startswith("param"):
                raise ValueError(f"some parameters appear more than once ({labels[j]} and "
                                 f"{labels[k]})")
            raise ValueError(f"{labels[j]} and {labels[k]} are the same array; every "
                             "updated buffer needs its own memory")
    ranges = sorted((*_byte_range(a), k) for k, a in enumerate(arrays) if a.size)
    end, last = 0, None
    for s, e, k in ranges:
        if s < end:
            first, second = sorted((last, k))
            raise ValueError(f"{labels[first]} and {labels[second]} share memory; every "
                             "updated buffer needs its own memory")
        if e > end:
            end, last = e, k


def _parse_step(sid, step):
    """A saved step count: an int, or an integral float / 0-d array (torch saves a float32
    tensor) -> int >= 0."""
    value = step
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) \
            or not 0 <= value <= _MAX_STEP:
        raise ValueError(f"state[{sid}]['step'] must be an int >= 0 (or an integral float, "
                         f"as torch saves it) that a double holds, got {_show(step)}")
    return int(value)


# ------------------------------------------------------------------- plan
class _Bucket:
    """Parameters updated together by one functional call."""

    __slots__ = ("group", "ids", "params", "names", "missing", "fresh", "step", "states",
                 "bufs", "read", "stride", "expected", "missing_getters", "all")

    def __init__(self, group, ids, params, names, missing, fresh, step, states, bufs,
                 n_params):
        self.group = group          # the param group (dict)
        self.ids = ids              # flattened indices
        self.params = params        # list of ndarrays
        self.names = names          # state buffers the group's options need
        self.missing = missing      # those of them to create at the next step
        self.fresh = fresh          # no state yet (entries absent or empty dicts)
        self.step = step            # every param's step count so far (the same int object)
        self.states = states        # the state dicts (None where a param has none)
        self.bufs = bufs            # {name: [ndarray, ...]} for the names not missing
        # The per-step identity check, one pass over every state dict: ``read(st)`` gives
        # its step count and buffers, ``expected`` all of them in a row, ``stride`` apart.
        keys = ("step",) + tuple(n for n in names if n not in missing)
        self.read = _tuple_getter(keys)
        self.stride = len(keys)
        self.expected = [] if fresh else [step if k == "step" else st[k]
                                          for st in states for k in keys]
        self.missing_getters = [methodcaller("get", n) for n in missing]
        self.all = ids == list(range(n_params))  # True: pass the grads list as given

    def is_current(self, state):
        """Are the live state dicts, step counts and buffers the planned ones? (identity)"""
        states = self.states
        if not all(map(is_, map(state.get, self.ids), states)):
            return False
        if self.fresh:
            return not any(states)  # an empty dict filled in place
        if not all(map(is_, chain.from_iterable(map(self.read, states)), self.expected)):
            return False
        return all(all(map(is_, map(get, states), repeat(None)))
                   for get in self.missing_getters)


class _Plan:
    __slots__ = ("state", "groups", "flat", "buckets", "written", "fast", "call", "live",
                 "tail", "n_threads", "read_states", "read_hypers")

    def __init__(self, state, groups, flat, buckets, written):
        self.state = state          # the state dict the plan was built from
        self.groups = groups        # [(group dict, params list copy, buffer names)]
        self.flat = flat            # all params, flattened
        self.buckets = buckets
        self.written = written      # (starts, ends, labels) of every updated array, sorted
        b = buckets[0] if len(buckets) == 1 else None
        # One kernel call with every param and all of its state: try it first.
        self.fast = b is not None and b.all and not b.missing and not b.fresh
        # Armed (see arm): that kernel call, bound, and what it depends on.
        self.call = self.live = None
        if self.fast:
            self.read_states = _tuple_getter(b.ids)

    def arm(self, opt, hyper, call):
        """A fast plan whose group's values passed their check and cannot change in
        place: the next steps may run ``call`` as long as every object it was made from
        is still the live one (is_armed)."""
        b = self.buckets[0]
        self.n_threads = opt.n_threads
        self.read_hypers = opt._read_hypers
        head = [*b.params, *hyper.raw, *b.states]
        self.tail = len(head)  # then b.expected
        self.live = head + b.expected
        self.call = call

    def is_armed(self, opt):
        """Is everything the armed call depends on what the optimizer holds now?  The
        state dict, the group, n_threads, then one pass of identity checks over the
        params, the group's values, the state dicts, their step counts and buffers."""
        groups = opt.param_groups
        if (type(groups) is not list or len(groups) != 1 or opt.state is not self.state
                or opt.n_threads is not self.n_threads):
            return False
        g = groups[0]
        b = self.buckets[0]
        if g is not b.group:
            return False
        params = g["params"]
        if type(params) not in (list, tuple) or len(params) != len(b.ids):
            return False
        states = self.read_states(self.state)
        return all(map(is_, (*params, *self.read_hypers(g), *states,
                             *chain.from_iterable(map(b.read, states))), self.live))

    def counted(self, b, step):
        """Bucket b's step counts were all set to ``step``, its buffers unchanged."""
        b.step = step
        counts = [step] * len(b.ids)
        b.expected[::b.stride] = counts
        if self.live is not None:
            self.live[self.tail::b.stride] = counts


class Optimizer:
    """Base class: param groups, lazy state, validation, state_dict / load_state_dict.

    A subclass lists the group keys it reads in ``_HYPERPARAMETERS`` (with
    ``_TORCH_FLAGS``) and defines ``_check_group(group)`` (validate them, raise),
    ``_buffer_names(group)`` (state buffers the group's options need),
    and ``_kernel_call(group, params, bufs, first, n_threads, ids)``: the functional call
    on these lists with the group's checked values and ``self._storage_options(bufs,
    ids)``, as a function of ``(grads, step)`` (``first``: the buffers were just created;
    ``ids``: the params' flat indices).

    Compact storage (README "Compact precision"): ``state_dtype`` (None = the param's
    math dtype, "bfloat16", "float16"), ``master_weights`` (None = a float32 master
    copy, state entry ``"master"``, for every float16/bfloat16 param; False = update
    16-bit params directly), ``rounding`` ("nearest" or "stochastic", every 16-bit
    store) and ``seed`` (param i's stochastic rounding stream is ``seed + i``).

    ``nonfinite``: ``"ignore"`` (default, like torch: no check), ``"raise"``
    (FloatingPointError naming the first non-finite gradient) or ``"skip"`` (the whole
    step is skipped and ``step`` returns False). Either way nothing is changed.
    ``n_threads`` is passed to the kernels (None = all usable cores).

    Threads: ``step``, ``state_dict``, ``load_state_dict`` and ``add_param_group`` hold
    a lock of the optimizer, so one optimizer stepped from several threads applies the
    steps one after the other (none is lost); different optimizers step in parallel.
    The lock is not pickled (a pickled or deep-copied optimizer gets its own).
    """

    #: state buffers that the bias correction ties to the step count: missing at step > 0
    #: they are an error, not re-created (every other missing buffer starts as at step 1)
    _STEP_BOUND_BUFFERS = ()
    #: every buffer name the class uses under some option (kept when loaded)
    _ALL_BUFFERS = ()
    #: torch's implementation switches the class accepts (no-ops here)
    _TORCH_FLAGS = ()
    #: the other group keys _check_group, _buffer_names and _kernel_call read
    _HYPERPARAMETERS = ()
    _TORCH_FLAG_DEFAULTS = {"foreach": None, "fused": None, "capturable": False,
                            "differentiable": False}
    #: options a loaded group cannot override (AdamW's decoupled weight decay, as torch)
    _FORCED_GROUP_OPTIONS = {}
    #: torch's SGD keeps no step count: its state dicts load without one (counted from 0)
    _STEP_OPTIONAL = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # What a group's check depends on: its keys (KeyError when one is absent) and
        # the switches _check_torch_flags reads with .get.
        required = _tuple_getter((*cls._HYPERPARAMETERS, *cls._TORCH_FLAGS))
        optional = tuple(k for k in ("foreach", "fused", "differentiable")
                         if k not in cls._TORCH_FLAGS)
        if optional:
            def read(group):
                return required(group) + tuple(map(group.get, optional))
        cls._read_hypers = staticmethod(read if optional else required)

    def __init__(self, params, defaults, *, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0):
        if nonfinite not in _NONFINITE_MODES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} "
                             f"(expected one of {_NONFINITE_MODES})")
        self._check_storage(state_dtype, master_weights, rounding, seed)
        try:
            if n_threads is not None:
                resolve_n_threads(n_threads)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Invalid n_threads: {n_threads!r} ({exc})") from None
        self._lock = threading.RLock()
        self._plan = None
        self._hypers = []  # per group: the _Hyper of its last check, or None
        self._sizes = []  # params per group when last checked: state is kept by position
        self.defaults = dict(defaults)
        self.nonfinite = nonfinite
        self.n_threads = n_threads
        # read-only (properties below): the state's storage and random streams follow them
        self._state_dtype = state_dtype
        self._master_weights = None if master_weights is None else bool(master_weights)
        self._rounding = str(rounding)
        self._seed = int(seed)
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

    def __getstate__(self):
        d = dict(self.__dict__)
        del d["_lock"]
        d["_plan"] = None  # rebuilt (and re-checked) at the next step
        d["_hypers"] = []
        return d

    def __setstate__(self, d):
        d = dict(d)
        d.pop("_param_ranges", None)  # pickles of older versions
        self.__dict__.update(d)
        self._lock = threading.RLock()
        self._plan = None
        self._hypers = []
        if "_sizes" not in d:
            self._sizes = [len(g["params"]) for g in self.param_groups]
        for key, value in (("_state_dtype", None), ("_master_weights", None),
                           ("_rounding", "nearest"), ("_seed", 0)):  # older pickles
            self.__dict__.setdefault(key, value)
        for key in self._TORCH_FLAGS:  # groups pickled before these keys existed
            self.defaults.setdefault(key, self._TORCH_FLAG_DEFAULTS[key])
            for g in self.param_groups:
                g.setdefault(key, self._TORCH_FLAG_DEFAULTS[key])

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a dict ``{"params": [...], <hyperparameters>}``; defaults fill missing keys.

        Params are arrays or, as torch's ``named_parameters()``, ``(name, array)`` pairs
        (all of a group, and all groups, with names or none): the names go to the
        group's ``"param_names"``.
        """
        with self._lock:
            self._add_param_group(param_group)

    def _add_param_group(self, param_group):
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
        elif isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
            raise TypeError("param_group['params'] must be an array or a list of arrays, "
                            f"got {type(params).__name__}")
        else:
            params = list(params)
        group = dict(param_group)
        named = [isinstance(p, tuple) for p in params]
        if any(named):
            if not all(named):
                raise ValueError("all optimizer params should be with/without names. "
                                 "Some param names are missing")
            if any(len(p) != 2 for p in params):
                raise ValueError("a named param must be a (name, array) pair")
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        elif "param_names" in group:
            names = group["param_names"]
            if not isinstance(names, (list, tuple)) or len(names) != len(params):
                raise ValueError("param_group['param_names'] must be a list with one name "
                                 "per param")
            group["param_names"] = list(names)
        for j, p in enumerate(params):
            _check_param(p, f"param {j} of the group")
        for g in self.param_groups:
            if ("param_names" in g) != ("param_names" in group):
                kind = "with names" if "param_names" in group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {kind} to the optimizer")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        flat = [p for g in self.param_groups for p in g["params"]] + params
        _check_no_shared_memory(flat, [f"param {k}" for k in range(len(flat))])
        self.param_groups.append(group)
        self._sizes = self._sizes + [len(params)]
        self._plan = None

    # storage ----------------------------------------------------------------
    state_dtype = property(lambda self: self._state_dtype,
                           doc="None, 'bfloat16' or 'float16' (set at construction)")
    master_weights = property(lambda self: self._master_weights,
                              doc="None (masters for 16-bit params) or a bool")
    rounding = property(lambda self: self._rounding, doc="'nearest' or 'stochastic'")
    seed = property(lambda self: self._seed, doc="param i's rounding stream is seed + i")

    @staticmethod
    def _check_storage(state_dtype, master_weights, rounding, seed):
        """The compact-storage options (README "Compact precision")."""
        if not (state_dtype is None or isinstance(state_dtype, str)):
            raise TypeError(f"Invalid state_dtype: {state_dtype!r} (expected None or one of "
                            f"{[k for k in _STATE_DTYPES if k]})")
        if state_dtype not in _STATE_DTYPES:
            raise ValueError(f"Invalid state_dtype: {state_dtype!r} (expected None or one of "
                             f"{[k for k in _STATE_DTYPES if k]})")
        _STATE_DTYPES[state_dtype]()  # bfloat16: ml_dtypes importable
        if master_weights is not None and not isinstance(master_weights, (bool, np.bool_)):
            raise TypeError(f"Invalid master_weights: {master_weights!r} (expected None or "
                            "a bool)")
        if not isinstance(rounding, str):
            raise TypeError(f"Invalid rounding: {rounding!r} (expected 'nearest' or "
                            "'stochastic')")
        if rounding not in _ROUNDINGS:
            raise ValueError(f"Invalid rounding: {rounding!r} (expected 'nearest' or "
                             "'stochastic')")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"Invalid seed: {seed!r} (expected an int in [0, 2**64))")
        if not 0 <= seed < 2 ** 64:
            raise ValueError(f"Invalid seed: {_show(seed)} (expected an int in [0, 2**64))")

    def _uses_master(self, p):
        """A float32 master copy for this param: 16-bit params, unless master_weights=False."""
        return self.master_weights is not False and _is_16bit(p.dtype)

    def _buffer_dtype(self, p, name):
        """The dtype of state buffer `name` of param p."""
        if name == _MASTER:
            return _F32
        return _STATE_DTYPES[self.state_dtype]() or _math_dtype(p)

    def _storage_options(self, bufs, ids):
        """The compact-storage keywords of a functional call over the params `ids`:
        their masters, the rounding and one seed per param (seed + its index, so a
        param's stream does not depend on how the params are bucketed)."""
        options = {}
        master = bufs.get(_MASTER)
        if master is not None:
            options["master"] = master
        if self.rounding != "nearest":
            options["rounding"] = self.rounding
            options["seed"] = [(self.seed + i) % 2 ** 64 for i in ids]
        return options

    # subclasses -------------------------------------------------------------
    def _check_group(self, group):  # pragma: no cover - abstract
        raise NotImplementedError

    def _buffer_names(self, group):  # pragma: no cover - abstract
        raise NotImplementedError

    def _kernel_call(self, group, params, bufs, first, n_threads, ids):  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------- plan
    def _check_groups(self):
        """Every group's hyperparameters, before anything is updated (each step): a list
        of _Hyper.  A group whose values are the very objects of its last check, all of
        kinds that cannot change in place, reuses that check."""
        groups = self.param_groups
        if type(groups) is not list:
            raise TypeError(f"param_groups must be a list of dicts, got {type(groups).__name__}")
        cache = self._hypers
        if len(cache) != len(groups):
            cache = self._hypers = [None] * len(groups)
        out = []
        for i, group in enumerate(groups):
            h = cache[i]
            if h is not None and h.group is group:
                try:
                    raw = self._read_hypers(group)
                except KeyError:
                    pass  # the full check words it
                else:
                    if False not in map(is_, raw, h.raw):
                        out.append(h)
                        continue
            h = self._check_hypers(i, group)
            cache[i] = h if _immutable(h.raw) else None
            out.append(h)
        return out

    def _check_hypers(self, i, group):
        """Group i's hyperparameters checked in full -> _Hyper (raises naming the group)."""
        if not isinstance(group, dict):
            raise TypeError(f"param_groups[{i}] must be a dict, got {type(group).__name__}")
        try:
            self._check_group(group)
            raw = self._read_hypers(group)
        except KeyError as exc:
            raise ValueError(f"param_groups[{i}] has no {exc.args[0]!r} entry") from None
        return _Hyper(group, raw, self._buffer_names(group))

    def _plan_is_current(self, plan, hypers):
        """Are the live param lists and state what the plan was built from? (identity)"""
        groups = self.param_groups
        if self.state is not plan.state or len(groups) != len(plan.groups):
            return False
        for g, h, (group, params, names) in zip(groups, hypers, plan.groups):
            live = g.get("params")
            if (g is not group or h.names != names or type(live) not in (list, tuple)
                    or len(live) != len(params) or False in map(is_, live, params)):
                return False
        state = self.state
        for b in plan.buckets:
            if not b.is_current(state):
                return False
        return True

    def _build_plan(self, hypers):
        """Check params and state in full, then split each group into buckets of equal
        step count, dtype and missing buffers.  Raises (changing nothing) on bad input."""
        groups, state = self.param_groups, self.state
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        flat, labels, plan_groups = [], [], []
        for gi, g in enumerate(groups):
            params = g.get("params")
            if type(params) not in (list, tuple):
                raise TypeError(f"param_groups[{gi}]['params'] must be a list of arrays, got "
                                f"{type(params).__name__}")
            for j, p in enumerate(params):
                _check_param(p, f"param {len(flat)} (param_groups[{gi}]['params'][{j}])")
                labels.append(f"param {len(flat)}")
                flat.append(p)
            plan_groups.append((g, list(params), hypers[gi].names))
        if not flat:
            raise ValueError("the optimizer has no params")
        sizes = [len(g["params"]) for g in groups]
        if sizes != self._sizes and state:
            raise ValueError(f"the param groups now have {sizes} params, they had "
                             f"{self._sizes}: state is kept by param position, so add "
                             "params with add_param_group (or clear opt.state first)")
        _check_no_shared_memory(flat, labels)  # first: the clearest message for a param
        arrays, steps, missing_of, entries = list(flat), {}, {}, {}
        group_names = [names for _, params, names in plan_groups for _ in params]
        names_of = [names + (_MASTER,) if self._uses_master(p) else names
                    for names, p in zip(group_names, flat)]
        for i, p in enumerate(flat):
            names = names_of[i]
            st = state.get(i)
            if st is not None and not isinstance(st, dict):
                raise TypeError(f"state[{i}] must be a dict, got {type(st).__name__}")
            if not st:
                steps[i], missing_of[i] = 0, names
                continue
            steps[i] = self._saved_step(i, st)
            missing = []
            for name in names:
                buf = st.get(name)
                if buf is None:
                    self._check_missing(i, name, steps[i])
                    missing.append(name)
                else:
                    _check_buffer(buf, p, i, name, self._buffer_dtype(p, name))
                    arrays.append(buf)
                    labels.append(f"state[{i}][{name!r}]")
            missing_of[i] = tuple(missing)
            entries[i] = st
        _check_no_shared_memory(arrays, labels)
        buckets = []
        start = 0
        for g, params, names in plan_groups:
            keys = {}
            for i in range(start, start + len(params)):
                key = (steps[i], flat[i].dtype.char, missing_of[i], i not in entries)
                keys.setdefault(key, []).append(i)
            for (step, _, missing, fresh), ids in keys.items():
                names = names_of[ids[0]]  # the same for the bucket: one dtype
                states = [state.get(i) for i in ids]
                if not fresh:
                    # Checked: one int object per bucket (the plan compares it by identity),
                    # which also normalises torch-style counts (float, 0-d array, absent).
                    for st in states:
                        st["step"] = step
                bufs = {name: [states[k][name] for k in range(len(ids))]
                        for name in names if name not in missing}
                buckets.append(_Bucket(g, ids, [flat[i] for i in ids], names, missing,
                                       fresh, step, states, bufs, len(flat)))
            start += len(params)
        ranges = sorted((*_byte_range(a), labels[k]) for k, a in enumerate(arrays) if a.size)
        written = tuple([r[j] for r in ranges] for j in range(3))
        self._plan = _Plan(state, plan_groups, flat, buckets, written)
        self._sizes = sizes
        return self._plan

    def _saved_step(self, i, st):
        if "step" not in st:
            if self._STEP_OPTIONAL:
                return 0
            raise ValueError(f"state[{i}] has no 'step' entry (delete state[{i}] to restart "
                             "this param's state)")
        return _parse_step(i, st["step"])

    def _check_missing(self, i, name, step):
        """A needed state buffer is absent: created at the next step as at step 1, except
        one whose bias correction depends on the step count."""
        if step > 0 and name in self._STEP_BOUND_BUFFERS:
            raise ValueError(f"state[{i}] is missing '{name}' at step {step} (delete "
                             f"state[{i}] to restart this param's state from step 0)")

    def _zeros_buffer(self, p, name):
        """A zero state buffer in p's memory order, at its own offset within a page (the
        master: p's values in float32)."""
        if name == _MASTER:
            buf = zeros_state_like(p, len(self._ALL_BUFFERS) + 1, _F32)
            buf[...] = p
            return buf
        return zeros_state_like(p, self._ALL_BUFFERS.index(name) + 1,
                                self._buffer_dtype(p, name))

    def _check_arrays(self, plan):
        """The plan's arrays are the same objects, but their flags or shape can change in
        place: re-check them before a step of several kernel calls updates any."""
        for i, p in enumerate(plan.flat):
            _check_param(p, f"param {i}")
        for b in plan.buckets:
            for name, bufs in b.bufs.items():
                for i, p, buf in zip(b.ids, b.params, bufs):
                    _check_buffer(buf, p, i, name, self._buffer_dtype(p, name))

    # ------------------------------------------------------------------- step
    def _check_grads(self, grads, params):
        """grads as a list the kernels take (None kept: that param skips this step)."""
        if not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list or tuple of ndarrays (one per param, in "
                            "the order the params were given; None skips a param), got "
                            f"{type(grads).__name__}")
        grads = list(grads)
        if len(grads) != len(params):
            raise ValueError(f"expected {len(params)} gradients (one per param), got {len(grads)}")
        ndarray = np.ndarray
        for i, (g, p) in enumerate(zip(grads, params)):
            if g is None:
                continue
            if not isinstance(g, ndarray):
                raise TypeError(f"grad {i} is {type(g).__name__}, expected an ndarray or None")
            if g.dtype != p.dtype and not (_math_dtype(p) == _F32 and (
                    g.dtype == _F32 or _is_16bit(g.dtype))):
                raise TypeError(f"grad {i} has dtype {g.dtype} but its param has dtype "
                                f"{p.dtype} (a float32, float16 or bfloat16 param takes a "
                                "float32, float16 or bfloat16 grad)")
            if g.shape != p.shape:
                raise ValueError(f"grad {i} has shape {g.shape} but its param has shape "
                                 f"{p.shape}")
            c_order = p.flags.c_contiguous
            if not ((g.flags.c_contiguous if c_order else g.flags.f_contiguous)
                    and g.flags.aligned):
                # grads are only read: a copy in the param's memory order is safe
                grads[i] = np.array(g, dtype=g.dtype, order="C" if c_order else "F")
        return grads

    @staticmethod
    def _check_grads_disjoint(grads, written):
        """A grad sharing memory with an updated array -> ValueError (one kernel call
        checks only its own arrays)."""
        starts, ends, labels = written
        for i, g in enumerate(grads):
            if g is None or not g.size:
                continue
            s, e = _byte_range(g)
            k = bisect_right(starts, s) - 1
            for j in (k, k + 1):
                if 0 <= j < len(starts) and starts[j] < e and ends[j] > s:
                    raise ValueError(f"grad {i} and {labels[j]} share memory; every updated "
                                     "buffer needs its own memory")

    def step(self, grads):
        """Apply one update; ``grads[i]`` is the gradient of the i-th param (flattened order).

        A ``None`` gradient skips its param this step, as torch skips a param whose
        ``.grad`` is None: no state created for it, its step count not advanced.
        Returns True when the update was applied, False when ``nonfinite="skip"`` skipped it.
        On any error nothing is changed (no param or state written, no step counted).
        """
        with self._lock:
            plan = self._plan
            if plan is not None and plan.call is not None and self.nonfinite == "ignore":
                # grads as given: the kernel refuses a None or a non-list before any write
                try:
                    armed = plan.is_armed(self)
                except Exception:  # a value the check chokes on: the full checks word it
                    armed = False
                if armed and self._try_whole_step(plan, plan.call, grads):
                    return True
            return self._checked_step(grads)

    def _try_whole_step(self, plan, call, grads):
        """The whole step is one kernel call, and the kernel checks every grad (type,
        dtype, shape, layout, memory shared with a buffer) before it writes anything.  So
        try it as given; only a rejected call pays for the checks of _checked_step, which
        copy a grad that just needs another layout and word the error."""
        b = plan.buckets[0]
        step = b.step + 1
        try:
            call(grads, step)
        except (TypeError, ValueError):
            return False  # nothing was changed
        for st in b.states:
            st["step"] = step
        plan.counted(b, step)
        return True

    def _checked_step(self, grads):
        hypers = self._check_groups()
        plan = self._plan
        try:
            current = plan is not None and self._plan_is_current(plan, hypers)
        except Exception:  # a value the comparison chokes on: the full checks word it
            current = False
        if not current:
            plan = self._build_plan(hypers)
        plan.call = plan.live = None
        if plan.fast:
            b = plan.buckets[0]
            call = self._kernel_call(b.group, b.params, b.bufs, False, self.n_threads, b.ids)
            if self._hypers[0] is hypers[0]:  # its values cannot change in place
                plan.arm(self, hypers[0], call)
            if (self.nonfinite == "ignore" and (type(grads) is list or type(grads) is tuple)
                    and _NONE_TYPE not in map(type, grads)
                    and self._try_whole_step(plan, call, grads)):
                return True
        grads = self._check_grads(grads, plan.flat)
        if len(plan.buckets) > 1:  # several kernel calls: check what none of them sees
            self._check_arrays(plan)
            self._check_grads_disjoint(grads, plan.written)
        if self.nonfinite != "ignore":
            given = [g for g in grads if g is not None]
            if not _all_finite([g.astype(_F32) if _is_16bit(g.dtype) else g for g in given]):
                if self.nonfinite == "skip":
                    return False
                bad = given[_nonfinite_index([g.astype(_F32) if _is_16bit(g.dtype) else g
                                              for g in given])]
                i = next(k for k, g in enumerate(grads) if g is bad)
                raise FloatingPointError(f"grad {i} contains non-finite values (inf or nan); "
                                         "the step was not applied")
        calls = []  # everything allocated before the first kernel call writes anything
        for b in plan.buckets:
            if all(grads[i] is not None for i in b.ids):
                pos = range(len(b.ids))
            else:
                pos = [k for k, i in enumerate(b.ids) if grads[i] is not None]
                if not pos:
                    continue
            whole = len(pos) == len(b.ids)
            params = b.params if whole else [b.params[k] for k in pos]
            gs = grads if b.all and whole else [grads[b.ids[k]] for k in pos]
            bufs = {name: (arrays if whole else [arrays[k] for k in pos])
                    for name, arrays in b.bufs.items()}
            new = {name: [self._zeros_buffer(p, name) for p in params] for name in b.missing}
            bufs.update(new)
            calls.append((b, [b.ids[k] for k in pos], params, gs, bufs, new, whole))
        state = self.state
        done = 0
        try:
            for b, ids, params, gs, bufs, new, _ in calls:
                self._kernel_call(b.group, params, bufs, bool(new), self.n_threads,
                                  ids)(gs, b.step + 1)
                done += 1
        finally:  # the state of what was updated (all of it, unless a kernel refused)
            for b, ids, params, gs, bufs, new, whole in calls[:done]:
                step = b.step + 1
                for k, i in enumerate(ids):
                    st = state.get(i)
                    if st is None:
                        st = state[i] = {}
                    st["step"] = step
                    for name, arrays in new.items():
                        st[name] = arrays[k]
                if whole and not new and not b.fresh:
                    plan.counted(b, step)
                else:
                    self._plan = None  # state created or steps now differ: re-plan
            if done != len(calls):
                self._plan = None
        return True

    # ------------------------------------------------------------ state dicts
    def state_dict(self):
        """Plain data, torch-like; arrays are copies (safe to keep while training goes on).

        ``{"state": {i: {"step": int, name: ndarray}},
          "param_groups": [{..., "params": [i, ...]}]}``
        """
        with self._lock:
            state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                         for k, v in st.items()}
                     for i, st in sorted(self.state.items()) if st}
            groups = []
            start = 0
            for g in self.param_groups:
                d = {k: (list(v) if isinstance(v, list) else
                         v.copy() if isinstance(v, np.ndarray) else v)
                     for k, v in g.items() if k != "params"}
                d["params"] = list(range(start, start + len(g["params"])))
                start += len(g["params"])
                groups.append(d)
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Validate ``state_dict`` fully, then copy it into this optimizer's own buffers.

        Saved param ids are mapped positionally onto this optimizer's params (as torch does).
        torch's own state dicts load too (tensors converted with ``.numpy()``; ``step`` an
        int, an integral float or a 0-d array; SGD state without ``step``).
        Raises ValueError/TypeError on any mismatch (group count, param counts, unknown or
        missing state entries, shapes, dtypes) and changes nothing in that case.
        """
        with self._lock:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict):
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
            if not isinstance(saved["params"], (list, tuple)):
                raise TypeError(f"param_groups[{gi}]['params'] must be a list of param ids")
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
            if "param_names" not in new and "param_names" in group:
                new["param_names"] = group["param_names"]  # torch keeps the current names
            elif "param_names" in new:
                names = new["param_names"]
                if not isinstance(names, (list, tuple)) or len(names) != len(ids):
                    raise ValueError(f"param_groups[{gi}]['param_names'] must be a list with "
                                     "one name per param")
                new["param_names"] = list(names)
            for key, value in self.defaults.items():
                new.setdefault(key, value)
            new.update(self._FORCED_GROUP_OPTIONS)
            new["params"] = group["params"]
            try:
                self._check_group(new)
            except KeyError as exc:
                raise ValueError(f"param_groups[{gi}] has no {exc.args[0]!r} entry") from None
            new_groups.append(new)
            start += len(ids)
        flat = [p for g in self.param_groups for p in g["params"]]
        group_of = [g for g in new_groups for _ in g["params"]]
        new_state = {}
        for sid, st in saved_state.items():
            if (not isinstance(sid, numbers.Integral) or isinstance(sid, bool)
                    or int(sid) not in id_map):
                raise ValueError(f"state entry {sid!r} does not name a param of the loaded groups")
            i = id_map[int(sid)]
            p = flat[i]
            if not isinstance(st, dict):
                raise ValueError(f"state[{sid}] must be a dict")
            if not st:
                continue  # torch's empty entry: the param has no state yet
            step = self._saved_step(sid, st)
            names = self._buffer_names(group_of[i])
            known = self._ALL_BUFFERS + ((_MASTER,) if self._uses_master(p) else ())
            extra = {k for k in st if k != "step" and k not in known and st[k] is not None}
            if extra:
                raise ValueError(f"state[{sid}] has unexpected entries {sorted(extra)} for "
                                 f"{type(self).__name__}")
            out = {"step": step}
            for name in known:
                a = st.get(name)
                if a is None:
                    if name in names:
                        self._check_missing(sid, name, step)
                    continue  # created at the next step, as at step 1
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"state[{sid}]['{name}'] must be an ndarray, "
                                    f"got {type(a).__name__}")
                if a.shape != p.shape:
                    raise ValueError(f"state[{sid}]['{name}'] has shape {a.shape}, "
                                     f"param {i} has shape {p.shape}")
                dtype = self._buffer_dtype(p, name)
                if a.dtype != dtype:
                    raise TypeError(f"state[{sid}]['{name}'] has dtype {a.dtype}, "
                                    f"param {i} has dtype {p.dtype}"
                                    + ("" if dtype == p.dtype else f": its state is {dtype} "
                                       f"(state_dtype={self.state_dtype!r})"))
                buf = self._zeros_buffer(p, name)
                buf[...] = a
                out[name] = buf
            new_state[i] = out
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        self.state = new_state
        self._sizes = [len(g["params"]) for g in self.param_groups]  # the state's layout
        self._plan = None


# ---------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum (torch.optim.SGD semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        buf = g (no buffer yet)  |  momentum * buf + (1 - dampening) * g   (if momentum != 0)
        g = g + momentum * buf if nesterov else buf
        p -= lr * g

    As in torch, the momentum buffer starts from the gradient whenever a param has none
    (its first step, or momentum switched on mid-run).  ``foreach`` / ``fused`` are
    accepted as no-ops (every step is one fused kernel call per bucket);
    ``differentiable=True`` is refused.
    """

    _ALL_BUFFERS = ("momentum_buffer",)
    _TORCH_FLAGS = ("foreach", "differentiable", "fused")
    _HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _STEP_OPTIONAL = True

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, nonfinite="ignore", n_threads=None, state_dtype=None,
                 master_weights=None, rounding="nearest", seed=0):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def _check_group(self, g):
        if (_plain(g["lr"], 0.0, _INF) and _plain(g["momentum"], 0.0, _INF)
                and _plain(g["dampening"], -_INF, _INF) and _plain(g["weight_decay"], 0.0, _INF)
                and g["nesterov"] is False and type(g["maximize"]) is bool
                and _plain_torch_flags(g, self._TORCH_FLAGS)):
            return  # checked every step: the common case in a few comparisons
        _check_real("learning rate", g["lr"], lo=0.0)
        _check_real("momentum value", g["momentum"], lo=0.0)
        _check_real("dampening value", g["dampening"])
        _check_real("weight_decay value", g["weight_decay"], lo=0.0)
        _check_bool("nesterov", g["nesterov"])
        _check_bool("maximize", g["maximize"])
        _check_torch_flags(g, self._TORCH_FLAGS)
        if g["nesterov"] and (_num(g["momentum"]) <= 0 or _num(g["dampening"]) != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _buffer_names(self, g):
        return ("momentum_buffer",) if g["momentum"] != 0 else ()

    def _kernel_call(self, g, params, bufs, first, n_threads, ids):
        storage = self._storage_options(bufs, ids)
        lr, momentum, dampening, weight_decay = map(
            _num, (g["lr"], g["momentum"], g["dampening"], g["weight_decay"]))
        nesterov, maximize = bool(g["nesterov"]), bool(g["maximize"])
        buf = bufs.get("momentum_buffer")

        def update(grads, step):
            # sgd_ starts the buffer from the gradient exactly when step == 1; torch
            # starts it whenever the buffer is missing, which is what ``first`` says.
            _F.sgd_(params, grads, buf, step=1 if first else max(step, 2), lr=lr,
                    momentum=momentum, dampening=dampening, nesterov=nesterov,
                    weight_decay=weight_decay, maximize=maximize, n_threads=n_threads,
                    **storage)
        return update


class Momentum(SGD):
    """SGD with momentum 0.9 by default (the course's "Momentum"); otherwise exactly SGD."""

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, nonfinite="ignore", n_threads=None, state_dtype=None,
                 master_weights=None, rounding="nearest", seed=0):
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov,
                         maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)


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

    ``capturable`` / ``foreach`` are accepted as no-ops; ``differentiable=True`` is
    refused.  A state buffer missing at step > 0 (say momentum switched on mid-run)
    starts at zeros, as at step 1 (torch raises KeyError).
    """

    _ALL_BUFFERS = ("square_avg", "momentum_buffer", "grad_avg")
    _TORCH_FLAGS = ("capturable", "foreach", "differentiable")
    _HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered",
                        "maximize")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def _check_group(self, g):
        if (_plain(g["lr"], 0.0, _INF) and _plain(g["eps"], 0.0, _INF)
                and _plain(g["momentum"], 0.0, _INF) and _plain(g["weight_decay"], 0.0, _INF)
                and _plain(g["alpha"], 0.0, _INF) and type(g["centered"]) is bool
                and type(g["maximize"]) is bool and _plain_torch_flags(g, self._TORCH_FLAGS)):
            return  # checked every step: the common case in a few comparisons
        _check_real("learning rate", g["lr"], lo=0.0)
        _check_real("epsilon value", g["eps"], lo=0.0)
        _check_real("momentum value", g["momentum"], lo=0.0)
        _check_real("weight_decay value", g["weight_decay"], lo=0.0)
        _check_real("alpha value", g["alpha"], lo=0.0)
        _check_bool("centered", g["centered"])
        _check_bool("maximize", g["maximize"])
        _check_torch_flags(g, self._TORCH_FLAGS)

    def _buffer_names(self, g):
        names = ("square_avg",)
        if g["momentum"] > 0:
            names += ("momentum_buffer",)
        if g["centered"]:
            names += ("grad_avg",)
        return names

    def _kernel_call(self, g, params, bufs, first, n_threads, ids):
        storage = self._storage_options(bufs, ids)
        lr, alpha, eps, weight_decay, momentum = map(
            _num, (g["lr"], g["alpha"], g["eps"], g["weight_decay"], g["momentum"]))
        centered, maximize = bool(g["centered"]), bool(g["maximize"])
        square_avg, momentum_buffer = bufs["square_avg"], bufs.get("momentum_buffer")
        grad_avg = bufs.get("grad_avg")

        def update(grads, step):
            _F.rmsprop_(params, grads, square_avg, step=step, lr=lr, alpha=alpha, eps=eps,
                        weight_decay=weight_decay, momentum=momentum,
                        momentum_buffer=momentum_buffer, centered=centered,
                        grad_avg=grad_avg, maximize=maximize, n_threads=n_threads,
                        **storage)
        return update


# --------------------------------------------------------------------- Adam
class Adam(Optimizer):
    r"""Adam (torch.optim.Adam semantics; ``decoupled_weight_decay=True`` is AdamW).

    .. code-block:: text

        g = -g if maximize
        p *= 1 - lr * weight_decay  if decoupled  else  g += weight_decay * p
        m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v) and used in place of v   if amsgrad
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    ``foreach`` / ``capturable`` / ``fused`` are accepted as no-ops;
    ``differentiable=True`` is refused.  ``exp_avg`` / ``exp_avg_sq`` missing at step > 0
    is a ValueError (their bias correction depends on the step count; delete
    ``opt.state[i]`` to restart a param); ``max_exp_avg_sq`` missing (amsgrad switched on
    mid-run) starts at zeros (torch raises KeyError for both).
    """

    _STEP_BOUND_BUFFERS = ("exp_avg", "exp_avg_sq")
    _ALL_BUFFERS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _TORCH_FLAGS = ("foreach", "capturable", "differentiable", "fused")
    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                        "decoupled_weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 nonfinite="ignore", n_threads=None, state_dtype=None, master_weights=None,
                 rounding="nearest", seed=0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def _check_group(self, g):
        betas = g["betas"]
        if (_plain(g["lr"], 0.0, _INF) and _plain(g["eps"], 0.0, _INF)
                and type(betas) is tuple and len(betas) == 2 and _plain(betas[0], 0.0, 1.0)
                and _plain(betas[1], 0.0, 1.0) and _plain(g["weight_decay"], 0.0, _INF)
                and type(g["amsgrad"]) is bool and type(g["maximize"]) is bool
                and type(g["decoupled_weight_decay"]) is bool
                and _plain_torch_flags(g, self._TORCH_FLAGS)):
            return  # checked every step: the common case in a few comparisons
        _check_real("learning rate", g["lr"], lo=0.0)
        _check_real("epsilon value", g["eps"], lo=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Invalid betas: {betas!r} (expected a pair of floats)")
        for k in (0, 1):
            _check_real(f"beta parameter at index {k}", betas[k], lo=0.0, hi=1.0)
        _check_real("weight_decay value", g["weight_decay"], lo=0.0)
        _check_bool("amsgrad", g["amsgrad"])
        _check_bool("maximize", g["maximize"])
        _check_bool("decoupled_weight_decay", g["decoupled_weight_decay"])
        _check_torch_flags(g, self._TORCH_FLAGS)

    def _buffer_names(self, g):
        names = ("exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if g["amsgrad"] else names

    def _kernel_call(self, g, params, bufs, first, n_threads, ids):
        storage = self._storage_options(bufs, ids)
        beta1, beta2 = g["betas"]
        lr, beta1, beta2, eps, weight_decay = map(
            _num, (g["lr"], beta1, beta2, g["eps"], g["weight_decay"]))
        decoupled, amsgrad = bool(g["decoupled_weight_decay"]), bool(g["amsgrad"])
        maximize = bool(g["maximize"])
        exp_avg, exp_avg_sq = bufs["exp_avg"], bufs["exp_avg_sq"]
        max_exp_avg_sq = bufs.get("max_exp_avg_sq")

        def update(grads, step):
            _F.adam_(params, grads, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1,
                     beta2=beta2, eps=eps, weight_decay=weight_decay,
                     decoupled_weight_decay=decoupled, amsgrad=amsgrad,
                     max_exp_avg_sq=max_exp_avg_sq, maximize=maximize, n_threads=n_threads,
                     **storage)
        return update


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, default 1e-2.

    As torch's, it keeps ``decoupled_weight_decay=True`` in every group it loads.
    """

    _FORCED_GROUP_OPTIONS = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)
