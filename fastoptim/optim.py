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
parameter list) is a dict ``{"step": int, <buffer name>: ndarray}`` (a QuantizedState
with ``state_dtype="int8"``) created lazily (zeros) at the param's first step; buffer
names follow torch (``momentum_buffer``, ``square_avg``, ``grad_avg``, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``).

What is in ``param_groups`` and ``state`` is what the next step uses, as in torch: a param
replaced in ``param_groups[i]["params"]``, a state buffer replaced or deleted, a cleared
``state`` -- each is checked (dtype, shape, memory order, writeable, no shared memory)
when the step sees it.  The step keeps a plan of its kernel calls and compares it with
the live objects by identity each time (cheap); anything changed is re-checked in full.
"""

import math
import numbers
import struct
import threading
from bisect import bisect_right
from itertools import chain, repeat
from operator import is_, itemgetter, methodcaller

import numpy as np

from . import functional as _F
from . import reference as _R
from ._alloc import zeros_state_like
from ._validation import check_real
from ._backend import kernels as _kernels, resolve_n_threads
from .quantized import QuantizedState, _check_arrays as _check_quantized_arrays
from .quantized import template_maps as _template_maps, why_not_8bit as _why_not_8bit
from .quantized import template as _quant8_template

from .clip import _all_finite, _nonfinite_index

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "AdamW", "Adagrad", "Lion",
           "Adamax", "RAdam", "Adadelta", "Rprop", "NAdam", "ASGD", "AdamWScheduleFree",
           "Adafactor", "Muon", "LBFGS"]

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
    differentiable = g.get("differentiable")
    if differentiable:
        raise ValueError(f"Invalid differentiable: {differentiable!r} (fastoptim's updates run "
                         "on NumPy arrays outside any autograd graph; use differentiable=False)")
    if g.get("fused") and g.get("foreach"):
        raise ValueError("`fused` and `foreach` cannot be `True` together.")


def _plain_torch_flags(g, keys):
    """Fast accept: bools (None for foreach / fused), differentiable False, not both
    fused and foreach.  False sends the caller to _check_torch_flags.  A switch the class
    does not list (Lion's, Schedule-Free's differentiable) is plain only when absent, None
    or False: _check_torch_flags refuses it when true, as a listed one."""
    for key in keys:
        value = g[key]
        if value is True:
            if key == "differentiable":
                return False
        elif value is not False and not (value is None and key in ("foreach", "fused")):
            return False
    for key in ("differentiable", "fused", "foreach"):
        value = g.get(key)
        if value is not None and value is not False and key not in keys:
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


def _reader(required, optional):
    """group -> ``required(group)`` then ``group.get(key)`` for each optional key: one
    tuple (the values a group's check reads; kernels.LiveCheck reads the same keys)."""
    if not optional:
        return required
    if len(optional) == 1:
        key, = optional
        return lambda group: (*required(group), group.get(key))
    if len(optional) == 2:
        key0, key1 = optional
        return lambda group: (*required(group), group.get(key0), group.get(key1))
    return lambda group: (*required(group), *map(group.get, optional))


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


class _Quant8:
    """The storage of state_dtype="int8": a fastoptim.QuantizedState per buffer
    (bitsandbytes' 8-bit blockwise format), where the other storages are a dtype."""

    def __repr__(self):
        return "int8 (QuantizedState)"


_INT8 = _Quant8()
#: the buffers stored with the signed code map (first moments); the others are
#: non-negative second moments (unsigned map)
_SIGNED_STATE = frozenset({"momentum_buffer", "exp_avg", "grad_avg"})
#: bitsandbytes' default min_8bit_size: params with fewer elements keep 32-bit state
_MIN_8BIT_SIZE = 4096

#: state_dtype -> the dtype state buffers are stored in (a function: bfloat16 imports
#: ml_dtypes); None = the param's math dtype, "int8" = 8-bit blockwise (_INT8).
_STATE_DTYPES = {None: lambda: None, "float16": lambda: np.dtype(np.float16),
                 "bfloat16": _bfloat16, "int8": lambda: _INT8}


def _memory(buffers, labels):
    """The arrays whose memory the buffers occupy, labelled: a QuantizedState is its
    codes and its absmax."""
    arrays, names = [], []
    for buf, label in zip(buffers, labels):
        if isinstance(buf, QuantizedState):
            arrays += [buf.codes, buf.absmax]
            names += [f"{label}.codes", f"{label}.absmax"]
        else:
            arrays.append(buf)
            names.append(label)
    return arrays, names


def _check_quantized(buf, p, label, signed):
    """An 8-bit state buffer of param p: a valid QuantizedState of the right code map,
    its codes shaped like p in p's memory order."""
    if not isinstance(buf, QuantizedState):
        raise TypeError(f"{label} must be a QuantizedState (state_dtype='int8'), got "
                        f"{type(buf).__name__}")
    _check_quantized_arrays(buf, label)
    if buf.signed != signed:
        raise ValueError(f"{label} must be a {'signed' if signed else 'unsigned'} "
                         f"QuantizedState ({'first' if signed else 'second'} moment)")
    if buf.codes.shape != p.shape:
        raise ValueError(f"{label}.codes has shape {buf.codes.shape}, the param has shape "
                         f"{p.shape}")
    if not _same_order(buf.codes, p):
        raise ValueError(f"{label}.codes must be in the memory order of its param (it is "
                         "updated in place element by element with the param)")


def _check_buffer(buf, p, i, name, dtype, shape=None):
    """A state buffer (of this dtype, and of ``shape``, by default the param's) the
    kernel updates in place next to param i."""
    label = f"state[{i}][{name!r}]"
    if dtype is _INT8:
        return _check_quantized(buf, p, label, name in _SIGNED_STATE)
    shape = p.shape if shape is None else shape
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{label} must be an ndarray, got {type(buf).__name__}")
    if buf.dtype != dtype:
        raise TypeError(f"{label} has dtype {buf.dtype}, param {i} has dtype {p.dtype}"
                        + ("" if dtype == p.dtype else f": its state is {dtype}"))
    if buf.shape != shape:
        if shape == p.shape:
            raise ValueError(f"{label} has shape {buf.shape}, param {i} has shape {p.shape}")
        raise ValueError(f"{label} has shape {buf.shape}, expected {shape} for param {i} of "
                         f"shape {p.shape}")
    flags = buf.flags
    if not (flags.c_contiguous or flags.f_contiguous) or not _same_order(buf, p):
        raise ValueError(f"{label} must be contiguous in the memory order of param {i} "
                         "(it is updated in place element by element with the param)")
    if not flags.aligned:
        raise ValueError(f"{label} is not aligned to its dtype")
    if not flags.writeable:
        raise ValueError(f"{label} is read-only")


def _check_no_shared_memory(arrays, labels):
    """Two of the buffers (arrays, QuantizedState) sharing memory -> ValueError naming
    both (O(n log n))."""
    arrays, labels = _memory(arrays, labels)
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


def _parse_scalar(sid, name, value):
    """A saved per-param scalar (NAdam's mu_product, ...): a real number or a 0-d array (torch
    saves a 0-d tensor) -> float; NaN and anything else refused."""
    if value is None:
        raise ValueError(f"state[{sid}] has no {name!r} entry (delete state[{sid}] to restart "
                         "this param's state)")
    v = value
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "fiu":
        v = v.item()
    if (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real)
            or isinstance(v, int) and abs(v) > _MAX_STEP):
        raise TypeError(f"state[{sid}][{name!r}] must be a real number, got "
                        f"{type(value).__name__}")
    v = float(v)
    if v != v:
        raise ValueError(f"state[{sid}][{name!r}] must be a real number, got nan")
    return v


def _saved_entry(item):
    """A state entry as state_dict saves it: (key, value) pairs, arrays copied."""
    key, value = item
    if isinstance(value, QuantizedState):
        return ((f"{key}.codes", value.codes.copy()), (f"{key}.absmax", value.absmax.copy()))
    return ((key, value.copy() if isinstance(value, np.ndarray) else value),)


# ------------------------------------------------------------------- plan
class _Bucket:
    """Parameters updated together by one functional call."""

    __slots__ = ("group", "ids", "params", "names", "missing", "fresh", "step", "states",
                 "bufs", "keys", "read", "stride", "expected", "missing_getters", "all",
                 "scalars")

    def __init__(self, group, ids, params, names, missing, fresh, step, states, bufs,
                 n_params, scalar_names=(), scalars=None):
        self.group = group          # the param group (dict)
        self.ids = ids              # flattened indices
        self.params = params        # list of ndarrays
        self.names = names          # state buffers the group's options need
        self.missing = missing      # those of them to create at the next step
        self.fresh = fresh          # no state yet (entries absent or empty dicts)
        self.step = step            # every param's step count so far (the same int object)
        self.states = states        # the state dicts (None where a param has none)
        self.bufs = bufs            # {name: [ndarray, ...]} for the names not missing
        self.scalars = scalars      # every param's per-param scalar state (None: fresh)
        # The per-step identity check, one pass over every state dict: ``read(st)`` gives
        # its step count, scalars and buffers, ``expected`` all of them in a row,
        # ``stride`` apart.
        self.keys = keys = ("step",) + tuple(scalar_names) + tuple(
            n for n in names if n not in missing)
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
    __slots__ = ("state", "groups", "flat", "buckets", "written", "quant8", "fast", "call",
                 "live", "tail", "check")

    def __init__(self, state, groups, flat, buckets, written, quant8=frozenset()):
        self.state = state          # the state dict the plan was built from
        self.groups = groups        # [(group dict, params list copy, buffer names)]
        self.flat = flat            # all params, flattened
        self.buckets = buckets
        self.written = written      # (starts, ends, labels) of every updated array, sorted
        self.quant8 = quant8        # flat indices of the params with 8-bit state
        b = buckets[0] if len(buckets) == 1 else None
        # One kernel call with every param and all of its state: try it first.
        self.fast = b is not None and b.all and not b.missing and not b.fresh
        # Armed (see arm): that kernel call, bound, and what it depends on.
        self.call = self.live = self.check = None
        self.tail = 0

    def arm(self, opt, hyper, call):
        """A fast plan whose group's values passed their check and cannot change in
        place: the next steps may run ``call`` as long as every object it was made from
        is still the live one (is_armed)."""
        b = self.buckets[0]
        head = [*b.params, *hyper.raw, *b.states]
        self.tail = len(head)  # then b.expected
        self.live = head + b.expected
        self.call = call
        # kernels.LiveCheck reads these in this order; counted() keeps live current
        self.check = _kernels.LiveCheck(
            b.group, self.state, opt.n_threads, len(b.ids), opt._REQUIRED_KEYS,
            opt._OPTIONAL_KEYS, tuple(b.ids), b.keys, self.live)

    def is_armed(self, opt):
        """Is everything the armed call depends on what the optimizer holds now?  The
        state dict, the group, n_threads, then identity checks of the params, the
        group's values, the state dicts, their step counts and buffers (compiled: it
        runs at every step)."""
        return self.check(opt.param_groups, opt.state, opt.n_threads)

    def counted(self, b, step, scalars=()):
        """Bucket b's step was applied: its state dicts' step counts (and per-param scalar
        state) are set to ``step`` (and ``scalars``), and the plan's records follow."""
        b.step = step
        if scalars:
            b.scalars = scalars
        _kernels.count_step(b.states, b.keys, step, scalars, b.expected, self.live,
                            self.tail)


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
    math dtype, "bfloat16", "float16", or "int8": a fastoptim.QuantizedState per buffer,
    bitsandbytes' 8-bit blockwise format, for float32/float64 params of
    ``min_8bit_size`` elements or more; smaller ones keep their math dtype, as in
    bitsandbytes), ``master_weights`` (None = a float32 master copy, state entry
    ``"master"``, for every float16/bfloat16 param; False = update 16-bit params
    directly), ``rounding`` ("nearest" or "stochastic", every 16-bit store) and ``seed``
    (param i's stochastic rounding stream is ``seed + i``).

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
    #: per-param scalar state besides the step count (NAdam's mu_product, ASGD's eta and
    #: mu): floats in ``state[i]``; params with different values go to different kernel
    #: calls.  A class with some makes ``_kernel_call``'s function take a third argument,
    #: the bucket's values (None for params without state yet), and return the new ones.
    _SCALAR_STATE = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # What a group's check depends on: its keys (KeyError when one is absent) and
        # the switches _check_torch_flags reads with .get.
        cls._REQUIRED_KEYS = (*cls._HYPERPARAMETERS, *cls._TORCH_FLAGS)
        cls._OPTIONAL_KEYS = tuple(k for k in ("foreach", "fused", "differentiable")
                                   if k not in cls._TORCH_FLAGS)
        cls._read_hypers = staticmethod(_reader(_tuple_getter(cls._REQUIRED_KEYS),
                                                cls._OPTIONAL_KEYS))

    def __init__(self, params, defaults, *, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        if nonfinite not in _NONFINITE_MODES:
            raise ValueError(f"Invalid nonfinite: {nonfinite!r} "
                             f"(expected one of {_NONFINITE_MODES})")
        self._check_storage(state_dtype, master_weights, rounding, seed, min_8bit_size)
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
        self._min_8bit_size = int(min_8bit_size)
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
        d.pop("_pieces", None)  # closures over the plan, rebuilt when needed
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
                           ("_rounding", "nearest"), ("_seed", 0),
                           ("_min_8bit_size", _MIN_8BIT_SIZE)):  # older pickles
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
            self._check_param_kind(p, f"param {j} of the group")
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
                           doc="None, 'bfloat16', 'float16' or 'int8' (set at construction)")
    min_8bit_size = property(lambda self: self._min_8bit_size,
                             doc="with state_dtype='int8', params of fewer elements keep "
                                 "state in their math dtype (bitsandbytes' option)")
    master_weights = property(lambda self: self._master_weights,
                              doc="None (masters for 16-bit params) or a bool")
    rounding = property(lambda self: self._rounding, doc="'nearest' or 'stochastic'")
    seed = property(lambda self: self._seed, doc="param i's rounding stream is seed + i")

    @staticmethod
    def _check_storage(state_dtype, master_weights, rounding, seed,
                       min_8bit_size=_MIN_8BIT_SIZE):
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
        if (isinstance(min_8bit_size, (bool, np.bool_))
                or not isinstance(min_8bit_size, numbers.Integral)):
            raise TypeError(f"Invalid min_8bit_size: {min_8bit_size!r} (expected an int >= 0)")
        if not 0 <= min_8bit_size < 2 ** 63:
            raise ValueError(f"Invalid min_8bit_size: {_show(min_8bit_size)} (expected an "
                             "int >= 0)")
        if state_dtype == "int8":
            # 8-bit state runs the float32/float64 kernels' rules on float params only:
            # no 16-bit store to round, no master copy to keep
            if master_weights:
                raise ValueError("Invalid master_weights: True with state_dtype='int8' "
                                 "(8-bit state takes float32 or float64 params, which "
                                 "need no master copy)")
            if rounding != "nearest":
                raise ValueError(f"Invalid rounding: {rounding!r} with state_dtype='int8' "
                                 "(8-bit state is encoded to the nearest code, as in "
                                 "bitsandbytes; stochastic rounding is for 16-bit stores)")

    def _uses_master(self, p):
        """A float32 master copy for this param: 16-bit params, unless master_weights=False."""
        return self.master_weights is not False and _is_16bit(p.dtype)

    def _buffer_dtype(self, p, name):
        """The dtype of state buffer `name` of param p (_INT8: a QuantizedState)."""
        if name == _MASTER:
            return _F32
        if self.state_dtype == "int8" and p.size < self.min_8bit_size:
            return _math_dtype(p)  # small params keep full state, as in bitsandbytes
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

    # Optional: state whose buffers differ from param to param (Adafactor's factors).
    def _param_buffers(self, names, p):
        """The buffers of ``names`` (the group's) that param p uses."""
        return names

    def _buffer_shape(self, p, name):
        """The shape of p's state buffer ``name``."""
        return p.shape

    #: True in the classes whose kernels take 16-bit params and compact state
    _COMPACT_STORAGE = False

    def _check_param_kind(self, p, label):
        """Refuse (TypeError/ValueError) a param the algorithm does not apply to."""
        if not self._COMPACT_STORAGE and _is_16bit(p.dtype):
            raise TypeError(f"{label} has dtype {p.dtype}; {type(self).__name__} takes "
                            "float32 or float64 params (16-bit params and compact state: "
                            "the element-wise optimizers, SGD to AdamWScheduleFree)")
        if self.state_dtype == "int8" and _is_16bit(p.dtype):
            raise TypeError(f"{label} has dtype {p.dtype}; state_dtype='int8' takes float32 "
                            "or float64 params (16-bit params: state_dtype='bfloat16' or "
                            "'float16')")

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
                self._check_param_kind(p, f"param {len(flat)}")
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
        arrays, steps, missing_of, entries, scalars_of = list(flat), {}, {}, {}, {}
        group_names = [names for _, params, names in plan_groups for _ in params]
        names_of = [names + (_MASTER,) if self._uses_master(p) else names
                    for names, p in zip(group_names, flat)]
        for i, p in enumerate(flat):
            names = names_of[i] = self._param_buffers(names_of[i], p)
            st = state.get(i)
            if st is not None and not isinstance(st, dict):
                raise TypeError(f"state[{i}] must be a dict, got {type(st).__name__}")
            if not st:
                steps[i], missing_of[i] = 0, names
                continue
            steps[i] = self._saved_step(i, st)
            scalars_of[i] = tuple(_parse_scalar(i, name, st.get(name))
                                  for name in self._SCALAR_STATE)
            missing = []
            for name in names:
                buf = st.get(name)
                if buf is None:
                    self._check_missing(i, name, steps[i])
                    missing.append(name)
                else:
                    _check_buffer(buf, p, i, name, self._buffer_dtype(p, name),
                                  self._buffer_shape(p, name))
                    arrays.append(buf)
                    labels.append(f"state[{i}][{name!r}]")
            missing_of[i] = tuple(missing)
            entries[i] = st
        _check_no_shared_memory(arrays, labels)
        quant8 = frozenset(i for i, p in enumerate(flat) if self.state_dtype == "int8"
                           and any(self._buffer_dtype(p, n) is _INT8 for n in names_of[i]))
        buckets = []
        start = 0
        for g, params, names in plan_groups:
            keys = {}
            for i in range(start, start + len(params)):
                # 8-bit and float state go to different kernel calls (min_8bit_size)
                key = (steps[i], flat[i].dtype.char, names_of[i], missing_of[i],
                       i not in entries, scalars_of.get(i), i in quant8)
                keys.setdefault(key, []).append(i)
            for (step, _, names, missing, fresh, scalars, _), ids in keys.items():
                states = [state.get(i) for i in ids]
                if not fresh:
                    # Checked: one int object per bucket (the plan compares it by identity),
                    # which also normalises torch-style counts (float, 0-d array, absent).
                    for st in states:
                        st["step"] = step
                        st.update(zip(self._SCALAR_STATE, scalars))
                bufs = {name: [states[k][name] for k in range(len(ids))]
                        for name in names if name not in missing}
                buckets.append(_Bucket(g, ids, [flat[i] for i in ids], names, missing,
                                       fresh, step, states, bufs, len(flat),
                                       self._SCALAR_STATE, scalars))
            start += len(params)
        arrays, labels = _memory(arrays, labels)
        ranges = sorted((*_byte_range(a), labels[k]) for k, a in enumerate(arrays) if a.size)
        written = tuple([r[j] for r in ranges] for j in range(3))
        self._plan = _Plan(state, plan_groups, flat, buckets, written, quant8)
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
        dtype = self._buffer_dtype(p, name)
        if dtype is _INT8:
            return QuantizedState.zeros_like(p, signed=name in _SIGNED_STATE)
        return zeros_state_like(p, self._ALL_BUFFERS.index(name) + 1, dtype)

    def _new_buffer(self, p, name, group):
        """A state buffer as the param's first step creates it (zeros unless the class
        starts it at a value, as Adagrad's sum and Rprop's step sizes)."""
        return self._zeros_buffer(p, name)

    def _check_arrays(self, plan):
        """The plan's arrays are the same objects, but their flags or shape can change in
        place: re-check them before a step of several kernel calls updates any."""
        for i, p in enumerate(plan.flat):
            _check_param(p, f"param {i}")
            self._check_param_kind(p, f"param {i}")
        for b in plan.buckets:
            for name, bufs in b.bufs.items():
                for i, p, buf in zip(b.ids, b.params, bufs):
                    _check_buffer(buf, p, i, name, self._buffer_dtype(p, name),
                                  self._buffer_shape(p, name))

    # ------------------------------------------------------------------- step
    def _check_grads(self, grads, params, quant8=frozenset()):
        """grads as a list the kernels take (None kept: that param skips this step);
        ``quant8``: the indices of the params with 8-bit state, whose kernels take a grad
        of the param's own dtype only."""
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
            if g.dtype != p.dtype and i in quant8:
                raise TypeError(f"grad {i} has dtype {g.dtype} but its param has dtype "
                                f"{p.dtype} and 8-bit state (state_dtype='int8'), which takes "
                                f"a {p.dtype} grad")
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
            plan = self._armed_plan()
            # grads as given: the kernel refuses a None or a non-list before any write
            if plan is not None and self._try_whole_step(plan, plan.call, grads):
                return True
            return self._checked_step(grads)

    def _armed_plan(self):
        """The plan, when its armed call may run as the whole step (is_armed), else None."""
        plan = self._plan
        if plan is None or plan.call is None or self.nonfinite != "ignore":
            return None
        try:
            return plan if plan.is_armed(self) else None
        except Exception:  # a value the check chokes on: the full checks word it
            return None

    def _try_whole_step(self, plan, call, grads):
        """The whole step is one kernel call, and the kernel checks every grad (type,
        dtype, shape, layout, memory shared with a buffer) before it writes anything.  So
        try it as given; only a rejected call pays for the checks of _checked_step, which
        copy a grad that just needs another layout and word the error."""
        b = plan.buckets[0]
        step = b.step + 1
        try:
            scalars = self._call(call, grads, step, b)
        except (TypeError, ValueError):
            return False  # nothing was changed
        plan.counted(b, step, scalars)
        return True

    def _call(self, call, grads, step, b):
        """Run a kernel call for bucket b's step ``step``: its new scalar state (or ())."""
        if self._SCALAR_STATE:
            return call(grads, step, b.scalars)
        call(grads, step)
        return ()

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
        grads = self._check_grads(grads, plan.flat, plan.quant8)
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
            new = {name: [self._new_buffer(p, name, b.group) for p in params]
                   for name in b.missing}
            bufs.update(new)
            calls.append((b, [b.ids[k] for k in pos], params, gs, bufs, new, whole))
        state = self.state
        done, results = 0, []
        try:
            for b, ids, params, gs, bufs, new, _ in calls:
                # first: a state buffer was just created (a master rebuilt from the
                # param alone is not a first step: SGD's momentum must go on)
                first = any(name != _MASTER for name in new)
                results.append(self._call(
                    self._kernel_call(b.group, params, bufs, first, self.n_threads, ids),
                    gs, b.step + 1, b))
                done += 1
        finally:  # the state of what was updated (all of it, unless a kernel refused)
            for (b, ids, params, gs, bufs, new, whole), scalars in zip(calls, results):
                step = b.step + 1
                for k, i in enumerate(ids):
                    st = state.get(i)
                    if st is None:
                        st = state[i] = {}
                    st["step"] = step
                    if scalars:
                        st.update(zip(self._SCALAR_STATE, scalars))
                    for name, arrays in new.items():
                        st[name] = arrays[k]
                if whole and not new and not b.fresh:
                    plan.counted(b, step, scalars)
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

        8-bit state (a QuantizedState) is saved as its two arrays, ``name + ".codes"``
        and ``name + ".absmax"``: the state dict's array bytes are the state's memory.
        """
        with self._lock:
            state = {i: dict(chain.from_iterable(map(_saved_entry, st.items())))
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
            names = self._param_buffers(self._buffer_names(group_of[i]), p)
            known = self._ALL_BUFFERS + ((_MASTER,) if self._uses_master(p) else ())
            parts = {f"{n}.{part}" for n in self._ALL_BUFFERS for part in ("codes", "absmax")}
            extra = {k for k in st if k != "step" and k not in known and k not in parts
                     and k not in self._SCALAR_STATE and st[k] is not None}
            if extra:
                raise ValueError(f"state[{sid}] has unexpected entries {sorted(extra)} for "
                                 f"{type(self).__name__}")
            out = {"step": step}
            for name in self._SCALAR_STATE:
                out[name] = _parse_scalar(sid, name, st.get(name))
            for name in known:
                dtype = self._buffer_dtype(p, name)
                a = self._loaded_entry(sid, st, name, dtype)
                if a is None:
                    if name in names:
                        self._check_missing(sid, name, step)
                    continue  # created at the next step, as at step 1
                if dtype is _INT8:
                    out[name] = self._loaded_quant8(sid, i, p, name, *a)
                    continue
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"state[{sid}]['{name}'] must be an ndarray, "
                                    f"got {type(a).__name__}")
                if a.shape != self._buffer_shape(p, name):
                    expected = ("" if self._buffer_shape(p, name) == p.shape else
                                f" (expected {self._buffer_shape(p, name)})")
                    raise ValueError(f"state[{sid}]['{name}'] has shape {a.shape}{expected}, "
                                     f"param {i} has shape {p.shape}")
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

    def _loaded_entry(self, sid, st, name, dtype):
        """Saved buffer ``name``: None (absent), an array, or for 8-bit storage the
        (codes, absmax) pair.  A buffer saved in the other form is a TypeError."""
        whole = st.get(name)
        parts = st.get(f"{name}.codes"), st.get(f"{name}.absmax")
        if dtype is _INT8:
            if whole is not None:
                raise TypeError(f"state[{sid}]['{name}'] is an array, but this optimizer "
                                "keeps it 8-bit (state_dtype='int8'): expected "
                                f"'{name}.codes' and '{name}.absmax'")
            if parts[0] is None and parts[1] is None:
                return None
            if parts[0] is None or parts[1] is None:
                have, lack = ("absmax", "codes") if parts[0] is None else ("codes", "absmax")
                raise ValueError(f"state[{sid}] has '{name}.{have}' but no '{name}.{lack}'")
            return parts
        if parts[0] is not None or parts[1] is not None:
            raise TypeError(f"state[{sid}]['{name}'] is 8-bit ('{name}.codes', "
                            f"'{name}.absmax'), but this optimizer keeps it as {dtype} "
                            f"(state_dtype={self.state_dtype!r}, min_8bit_size="
                            f"{self.min_8bit_size})")
        return whole

    def _loaded_quant8(self, sid, i, p, name, codes, absmax):
        """A saved 8-bit buffer of param i, checked, as a new QuantizedState."""
        label = f"state[{sid}]['{name}']"
        for part, a in (("codes", codes), ("absmax", absmax)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{label}.{part} must be an ndarray, got {type(a).__name__}")
        state = QuantizedState.zeros_like(p, signed=name in _SIGNED_STATE)
        if codes.dtype != state.codes.dtype or absmax.dtype != state.absmax.dtype:
            raise TypeError(f"{label}: codes must be uint8 and absmax float32, got "
                            f"{codes.dtype} and {absmax.dtype}")
        if codes.shape != p.shape or absmax.shape != state.absmax.shape:
            raise ValueError(f"{label}: codes must have the shape of param {i} {p.shape} "
                             f"and absmax {state.absmax.shape}, got {codes.shape} and "
                             f"{absmax.shape}")
        if (absmax < 0).any():  # NaN is legal: a block a NaN or an infinity reached
            raise ValueError(f"{label}.absmax must be >= 0 (a block's largest magnitude)")
        state.codes[...] = codes
        state.absmax[...] = absmax
        return state


    # ------------------------------------------------------- stepping in pieces
    #: True when a step updates every element from its own param, grad and state values
    #: (and the group's values and step count) only: stepping a param piece by piece,
    #: every piece once, gives the bits of one whole step.  fastoptim.nn steps each
    #: layer during backward this way.  Read from the class's own body (not inherited:
    #: a subclass may add per-param or global quantities -- norms, trust ratios, scalar
    #: state -- so each class opts in itself).
    _ELEMENTWISE = False

    def _piecewise_step(self, grad, pieces):
        """The next step of this optimizer's ONE param, in pieces: ``pieces[k]`` is a
        list of (start, stop) element ranges of the flattened param, ``grad`` the whole
        gradient (read when a piece runs).  Returns ``(calls, finish)``: ``calls[k]()``
        updates the ranges of pieces[k]; ``finish()`` counts the step once every piece
        ran.  None when the step cannot be split: a class that is not element-wise,
        nonfinite checks (they need the whole gradient first), more than one param or
        group, or state still to be created (the first step).  Checks as step() does."""
        with self._lock:
            if not type(self).__dict__.get("_ELEMENTWISE") or self.nonfinite != "ignore":
                return None
            plan = self._plan
            try:
                armed = plan is not None and plan.call is not None and plan.is_armed(self)
            except Exception:  # a value the check chokes on: the full checks word it
                armed = False
            if not armed:
                hypers = self._check_groups()
                if plan is None or not self._plan_is_current(plan, hypers):
                    plan = self._build_plan(hypers)
                plan.call = plan.live = None
                if (not plan.fast or len(plan.flat) != 1 or plan.flat[0].ndim != 1
                        or self.state_dtype is not None or _is_16bit(plan.flat[0].dtype)):
                    return None  # compact storage: rounding streams follow whole params
                b = plan.buckets[0]
                call = self._kernel_call(b.group, b.params, b.bufs, False, self.n_threads,
                                         b.ids)
                if self._hypers[0] is hypers[0]:  # its values cannot change in place
                    plan.arm(self, hypers[0], call)
            b = plan.buckets[0]
            key = (plan.call, grad, pieces)
            cached = getattr(self, "_pieces", None)
            if cached is None or cached[0] is None or any(
                    x is not y for x, y in zip(cached[0], key)):
                if self._check_grads([grad], plan.flat)[0] is not grad:
                    return None  # a copy in another layout: the pieces must read grad
                p, g = b.params[0], grad
                calls = []
                for ranges in pieces:
                    part = [slice(lo, hi) for lo, hi in ranges]
                    update = self._kernel_call(
                        b.group, [p[s] for s in part],
                        {name: [a[0][s] for s in part] for name, a in b.bufs.items()},
                        False, self.n_threads, [b.ids[0]] * len(part))
                    gs = [g[s] for s in part]
                    calls.append(lambda update=update, gs=gs: update(gs, b.step + 1))
                cached = (key if plan.call is not None else None, calls)
                self._pieces = cached

            def finish():
                plan.counted(b, b.step + 1)
            return cached[1], finish


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

    _COMPACT_STORAGE = True

    _ALL_BUFFERS = ("momentum_buffer",)
    _ELEMENTWISE = True
    _TORCH_FLAGS = ("foreach", "differentiable", "fused")
    _HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _STEP_OPTIONAL = True

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, nonfinite="ignore", n_threads=None, state_dtype=None,
                 master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

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
        return update if storage else _F._prepared_sgd(
            params, buf, lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
            weight_decay=weight_decay, maximize=maximize, first=first, n_threads=n_threads,
            function=update) or update


class Momentum(SGD):
    """SGD with momentum 0.9 by default (the course's "Momentum"); otherwise exactly SGD."""

    _ELEMENTWISE = True

    def __init__(self, params, lr=1e-3, momentum=0.9, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, nonfinite="ignore", n_threads=None, state_dtype=None,
                 master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov,
                         maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)


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

    _COMPACT_STORAGE = True

    _ALL_BUFFERS = ("square_avg", "momentum_buffer", "grad_avg")
    _ELEMENTWISE = True
    _TORCH_FLAGS = ("capturable", "foreach", "differentiable")
    _HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered",
                        "maximize")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

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
        return update if storage else _F._prepared_rmsprop(
            params, square_avg, momentum_buffer, grad_avg, lr=lr, alpha=alpha, eps=eps,
            weight_decay=weight_decay, momentum=momentum, centered=centered,
            maximize=maximize, n_threads=n_threads, function=update) or update


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

    _COMPACT_STORAGE = True
    #: True (the estimators' subclass): eps is added to sqrt(v) before the division by
    #: sqrt(1 - beta2**t), scikit-learn's (and Keras's, the Adam paper's "epsilon hat")
    #: form, run as torch's rule with eps / sqrt(1 - beta2**t) at step t
    _EPS_HAT = False

    _STEP_BOUND_BUFFERS = ("exp_avg", "exp_avg_sq")
    _ALL_BUFFERS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _ELEMENTWISE = True
    _TORCH_FLAGS = ("foreach", "capturable", "differentiable", "fused")
    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                        "decoupled_weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 nonfinite="ignore", n_threads=None, state_dtype=None, master_weights=None,
                 rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

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
        eps_at = _F._eps_hat(eps, beta2) if self._EPS_HAT else None

        def update(grads, step):
            _F.adam_(params, grads, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1,
                     beta2=beta2, eps=eps if eps_at is None else eps_at(step),
                     weight_decay=weight_decay, decoupled_weight_decay=decoupled,
                     amsgrad=amsgrad, max_exp_avg_sq=max_exp_avg_sq, maximize=maximize,
                     n_threads=n_threads, **storage)
        return update if storage else _F._prepared_adam(
            params, exp_avg, exp_avg_sq, max_exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
            eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled,
            amsgrad=amsgrad, maximize=maximize, n_threads=n_threads, function=update,
            eps_at=eps_at) or update


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, default 1e-2.

    As torch's, it keeps ``decoupled_weight_decay=True`` in every group it loads.
    """

    _ELEMENTWISE = True
    _FORCED_GROUP_OPTIONS = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)


# ------------------------------------------------ the template's optimizers
class _Elementwise(Optimizer):
    """Shared group checks of the optimizers whose kernels come from the template
    (fastoptim/_kernels_elementwise.pxi.tp).  A subclass lists its values with torch's
    checks and messages:

    ``_REALS``: (key, label, low, high, high_closed): ``low <= v`` and ``v < high``
    (``v <= high`` when closed); a bound of None is not checked.
    ``_PAIRS``: (key, labels, ranges): a pair of reals, e.g. betas.
    ``_BOOLS``: bool keys.  ``_check_across(g)`` / ``_plain_across(g)``: checks across
    values.

    The step: ``_KERNEL`` names the template kernel (``kernels.<name>``, with
    ``functional._<name>_scalars``); ``_kernel_values(g)`` gives the group's checked
    values as that scalars function takes them after ``step``, converted once per plan,
    so a step computes its scalars in Python floats (once per plan when they do not
    depend on the step: functional._template_step_free_scalars) and makes one kernel
    call (which checks every array before it writes anything).  A class with
    ``_SCALAR_STATE`` also defines ``_scalars_with_state(g, values)``: a function of (step,
    the bucket's scalar state or None) giving the kernel's scalars for this step and the
    state after it (NAdam's mu_product, ASGD's eta and mu: it runs at every step).
    """

    _REALS = ()
    _PAIRS = ()
    _BOOLS = ("maximize",)
    _KERNEL = None
    _COMPACT_STORAGE = True

    def _check_storage(self, state_dtype, master_weights, rounding, seed, min_8bit_size):
        Optimizer._check_storage(state_dtype, master_weights, rounding, seed, min_8bit_size)
        if state_dtype == "int8" and _template_maps(_kernels, self._KERNEL) is None:
            raise ValueError(f"Invalid state_dtype: 'int8' ({type(self).__name__} keeps "
                             f"no 8-bit state: {_why_not_8bit(self._KERNEL)}; it takes None, "
                             "'bfloat16' or 'float16'.  8-bit state: SGD, Momentum, RMSprop, "
                             "Adam, AdamW, Adagrad, Lion, Adamax, RAdam, NAdam, "
                             "AdamWScheduleFree)")

    def _kernel_values(self, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def _buffer_dtype(self, p, name):
        # state_dtype="int8": a buffer the template keeps float (Schedule-Free's z) is an
        # array of the param's dtype
        dtype = Optimizer._buffer_dtype(self, p, name)
        if dtype is _INT8 and dict(zip(self._ALL_BUFFERS, _template_maps(
                _kernels, self._KERNEL)))[name][1] is None:
            return _math_dtype(p)
        return dtype

    def _buffer_names(self, g):
        return self._ALL_BUFFERS

    def _template_runner(self, name, params, buffers, bufs, ids, n_threads):
        """run(grads, step, scalars): template kernel `name` on the bucket, with its
        compact storage (masters, rounding, seeds) when it has some, or its 8-bit entry
        (kernels.<name>8) when its state is; 16-bit buffers or grads alone go to the
        compact kernel in functional._template_run."""
        if _F._quant8_state(*buffers):
            # A bucket's state is all 8-bit or all float (_build_plan's key), and 8-bit
            # state has no compact storage (_check_storage): one call, no float attempt.
            kernels = _F.kernels

            def run_8bit(grads, step, scalars):
                _quant8_template(kernels, name, (params, grads, *buffers), scalars,
                                 resolve_n_threads(n_threads))
            return run_8bit
        storage = self._storage_options(bufs, ids)
        if "seed" in storage:
            storage["seed"] = tuple(storage["seed"])  # checked: one per param
        if storage:
            def run_compact(grads, step, scalars):
                _F._template_run(name, (params, grads, *buffers), scalars, step, n_threads,
                                 **storage)
            return run_compact
        kernel = getattr(_F.kernels, name)

        def run(grads, step, scalars):
            try:  # the kernel checks every array before it writes anything
                kernel(params, grads, *buffers, *scalars, resolve_n_threads(n_threads))
            except TypeError:
                _F._template_run(name, (params, grads, *buffers), scalars, step, n_threads)
        return run

    def _kernel_call(self, g, params, bufs, first, n_threads, ids=None):
        scalars = _F._template_kernel(self._KERNEL)[1]
        run = self._template_runner(self._KERNEL, params,
                                    [bufs[name] for name in self._buffer_names(g)], bufs, ids,
                                    n_threads)
        values = self._kernel_values(g)
        if not self._SCALAR_STATE:
            fixed = _F._template_step_free_scalars(self._KERNEL, values)
            if fixed is not None:
                def update_step_free(grads, step):
                    run(grads, step, fixed)
                return update_step_free

            def update(grads, step):
                run(grads, step, scalars(step, *values))
            return update
        scalars_and_state = self._scalars_with_state(g, values)

        def update_with_state(grads, step, state):
            now, after = scalars_and_state(step, state)
            run(grads, step, now)
            return after
        return update_with_state

    def _scalars_with_state(self, g, values):  # pragma: no cover - abstract
        """(step, scalar state or None) -> (the kernel's scalars, the state after the
        step), for a class with ``_SCALAR_STATE``."""
        raise NotImplementedError

    def _check_group(self, g):
        if self._plain_group(g):
            return  # checked every step: the common case in a few comparisons
        for key, label, low, high, closed in self._REALS:
            _check_range(label, g[key], low, high, closed)
        for key, labels, ranges in self._PAIRS:
            pair = g[key]
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"Invalid {key}: {pair!r} (expected a pair of floats)")
            for label, value, (low, high, closed) in zip(labels, pair, ranges):
                _check_range(label, value, low, high, closed)
        for key in self._BOOLS:
            _check_bool(key, g[key])
        _check_torch_flags(g, self._TORCH_FLAGS)
        self._check_across(g)

    def _plain_group(self, g):
        for key, _, low, high, closed in self._REALS:
            if not _plain_in(g[key], low, high, closed):
                return False
        for key, _, ranges in self._PAIRS:
            pair = g[key]
            if type(pair) is not tuple or len(pair) != 2 or not all(
                    _plain_in(v, *r) for v, r in zip(pair, ranges)):
                return False
        return (all(type(g[key]) is bool for key in self._BOOLS)
                and _plain_torch_flags(g, self._TORCH_FLAGS) and self._plain_across(g))

    def _check_across(self, g):
        """Checks between values (after each passed its own)."""

    def _plain_across(self, g):
        return True


def _plain_in(value, low, high, closed):
    t = type(value)
    if not (t is float or (t is int and -_BIG_INT < value < _BIG_INT)):
        return False
    return ((low is None or low <= value)
            and (high is None or (value <= high if closed else value < high)))


def _check_range(label, value, low, high, closed):
    """torch's ``low <= value (< or <=) high`` with its message ``Invalid <label>: <value>``."""
    v = _real(label, value)
    if (low is not None and not low <= v) or (
            high is not None and not (v <= high if closed else v < high)):
        raise ValueError(f"Invalid {label}: {_show(value)}")


def _pair_tuple(value):
    return tuple(value) if isinstance(value, list) else value


_BETAS = ("betas", ("beta parameter at index 0", "beta parameter at index 1"),
          ((0.0, 1.0, False), (0.0, 1.0, False)))


def _adam_like_values(g):
    """(lr, beta1, beta2, eps, weight_decay) of a checked group, as floats."""
    beta1, beta2 = g["betas"]
    return tuple(map(_num, (g["lr"], beta1, beta2, g["eps"], g["weight_decay"])))


class Adagrad(_Elementwise):
    r"""Adagrad (torch.optim.Adagrad semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        sum += g * g;   p += (-clr * g) / (sqrt(sum) + eps)

    As torch's, the constructor creates every param's state (step 0, ``sum`` filled with
    ``initial_accumulator_value``), and a sum created later starts at the optimizer's
    default ``initial_accumulator_value``.  ``foreach`` / ``fused`` are accepted as
    no-ops; ``differentiable=True`` is refused; sparse gradients do not exist here.
    """

    _ALL_BUFFERS = ("sum",)
    _KERNEL = "adagrad"
    _TORCH_FLAGS = ("foreach", "differentiable", "fused")
    _HYPERPARAMETERS = ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value",
                        "maximize")
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("lr_decay", "lr_decay value", 0.0, None, False),
              ("weight_decay", "weight_decay value", 0.0, None, False),
              ("initial_accumulator_value", "initial_accumulator_value value", 0.0, None,
               False),
              ("eps", "epsilon value", 0.0, None, False))

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        fused=fused)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)
        flat = [(p, g) for g in self.param_groups for p in g["params"]]
        for i, (p, g) in enumerate(flat):
            self.state[i] = {"step": 0, "sum": self._new_buffer(p, "sum", g)}

    def _new_buffer(self, p, name, group):
        # torch fills a new sum with the optimizer's default, not the group's value
        buf = self._zeros_buffer(p, name)
        value = _num(self.defaults["initial_accumulator_value"])
        if isinstance(buf, QuantizedState):  # every block holds the same value
            codes, absmax = _R.quantize_blockwise(np.full(1, value, np.float32), False)
            buf.codes[...], buf.absmax[...] = codes[0], absmax[0]
        else:
            buf[...] = value
        return buf

    def _kernel_values(self, g):
        return (*map(_num, (g["lr"], g["lr_decay"], g["weight_decay"], g["eps"])),
                bool(g["maximize"]))


class Lion(_Elementwise):
    r"""Lion (Chen et al. 2023), as lion-pytorch's ``Lion`` (its constructor and rule).

    .. code-block:: text

        p *= 1 - lr * wd       (wd = weight_decay / the constructor's lr if decoupled_weight_decay)
        p += -lr * sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g

    Groups hold ``lr``, ``betas`` and ``weight_decay`` (lion-pytorch's keys); its state is
    ``exp_avg`` (plus fastoptim's ``step`` count; lion-pytorch's state dicts load without
    one).  ``use_triton`` is accepted as a no-op (the update is one fused kernel anyway).
    lion-pytorch asserts ``lr > 0`` and betas in [0, 1]: ValueError here.
    """

    _ALL_BUFFERS = ("exp_avg",)
    _KERNEL = "lion"
    _HYPERPARAMETERS = ("lr", "betas", "weight_decay")
    _STEP_OPTIONAL = True
    _BOOLS = ()
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("weight_decay", "weight_decay value", None, None, False))
    _PAIRS = (("betas", ("beta parameter at index 0", "beta parameter at index 1"),
               ((0.0, 1.0, True), (0.0, 1.0, True))),)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=False,
                 decoupled_weight_decay=False, *, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        _check_bool("use_triton", use_triton)
        _check_bool("decoupled_weight_decay", decoupled_weight_decay)
        if not _real("learning rate", lr) > 0:
            raise ValueError(f"Invalid learning rate: {_show(lr)} (Lion needs lr > 0)")
        defaults = dict(lr=lr, betas=_pair_tuple(betas), weight_decay=weight_decay)
        self._check_group(defaults)
        self._init_lr = _real("learning rate", lr)
        self.decoupled_wd = bool(decoupled_weight_decay)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    def _kernel_values(self, g):
        beta1, beta2 = g["betas"]
        lr, beta1, beta2, weight_decay = map(_num, (g["lr"], beta1, beta2, g["weight_decay"]))
        if self.decoupled_wd:
            weight_decay /= self._init_lr
        return lr, beta1, beta2, weight_decay


class Adamax(_Elementwise):
    r"""Adamax (torch.optim.Adamax semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        m += (1 - beta1) * (g - m);   u = max(beta2 * u, |g| + eps)
        p += (-lr / (1 - beta1**t) * m) / u

    ``foreach`` / ``capturable`` are accepted as no-ops; ``differentiable=True`` is refused.
    """

    _STEP_BOUND_BUFFERS = ("exp_avg", "exp_inf")
    _ALL_BUFFERS = ("exp_avg", "exp_inf")
    _KERNEL = "adamax"
    _TORCH_FLAGS = ("foreach", "differentiable", "capturable")
    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "maximize")
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("eps", "epsilon value", 0.0, None, False))
    _PAIRS = (_BETAS,)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False,
                 nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, betas=_pair_tuple(betas), eps=eps, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    def _check_across(self, g):
        _check_range("weight_decay value", g["weight_decay"], 0.0, None, False)

    def _plain_across(self, g):
        return _plain_in(g["weight_decay"], 0.0, None, False)

    def _kernel_values(self, g):
        return (*_adam_like_values(g), bool(g["maximize"]))


class RAdam(_Elementwise):
    r"""RAdam (torch.optim.RAdam semantics; ``decoupled_weight_decay=True``: RAdamW).

    .. code-block:: text

        g = -g if maximize
        p *= 1 - lr * weight_decay  if decoupled  else  g += weight_decay * p
        m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g * g
        rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t),  rho_inf = 2 / (1 - beta2) - 1
        p -= ((m / bc1 * lr) * (sqrt(bc2) / (sqrt(v) + eps))) * rect   if rho_t > 5
        p -= m / bc1 * lr                                              otherwise

    ``foreach`` / ``capturable`` are accepted as no-ops; ``differentiable=True`` is refused.
    """

    _STEP_BOUND_BUFFERS = ("exp_avg", "exp_avg_sq")
    _ALL_BUFFERS = ("exp_avg", "exp_avg_sq")
    _KERNEL = "radam"
    _TORCH_FLAGS = ("foreach", "capturable", "differentiable")
    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "maximize",
                        "decoupled_weight_decay")
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("eps", "epsilon value", 0.0, None, False))
    _PAIRS = (_BETAS,)
    _BOOLS = ("maximize", "decoupled_weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False, nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, betas=_pair_tuple(betas), eps=eps, weight_decay=weight_decay,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    _check_across = Adamax._check_across
    _plain_across = Adamax._plain_across

    def _kernel_values(self, g):
        return (*_adam_like_values(g), bool(g["decoupled_weight_decay"]), bool(g["maximize"]))


class Adadelta(_Elementwise):
    r"""Adadelta (torch.optim.Adadelta semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        sq = rho * sq + (1 - rho) * g * g
        d = sqrt(acc + eps) / sqrt(sq + eps) * g;   acc = rho * acc + (1 - rho) * d * d
        p += -lr * d

    ``foreach`` / ``capturable`` are accepted as no-ops; ``differentiable=True`` is refused.
    """

    _ALL_BUFFERS = ("square_avg", "acc_delta")
    _KERNEL = "adadelta"
    _TORCH_FLAGS = ("foreach", "capturable", "differentiable")
    _HYPERPARAMETERS = ("lr", "rho", "eps", "weight_decay", "maximize")
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("rho", "rho value", 0.0, 1.0, True),
              ("eps", "epsilon value", 0.0, None, False),
              ("weight_decay", "weight_decay value", 0.0, None, False))

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False, nonfinite="ignore",
                 n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        capturable=capturable, foreach=foreach, differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def _kernel_values(self, g):
        return (*map(_num, (g["lr"], g["rho"], g["eps"], g["weight_decay"])),
                bool(g["maximize"]))


class Rprop(_Elementwise):
    r"""Rprop (torch.optim.Rprop semantics).

    .. code-block:: text

        g = -g if maximize
        f = etaplus where g * prev > 0, etaminus where < 0, 1 elsewhere
        step_size = clamp(step_size * f, *step_sizes);   g = 0 where g * prev < 0
        p -= sign(g) * step_size;   prev = g

    ``prev`` starts at zeros and ``step_size`` at the group's lr, as torch's state.
    ``foreach`` / ``capturable`` are accepted as no-ops; ``differentiable=True`` is refused.
    """

    _ALL_BUFFERS = ("prev", "step_size")
    _KERNEL = "rprop"
    _TORCH_FLAGS = ("foreach", "differentiable", "capturable")
    _HYPERPARAMETERS = ("lr", "etas", "step_sizes", "maximize")
    _REALS = (("lr", "learning rate", 0.0, None, False),)
    _PAIRS = (("step_sizes", ("step_sizes[0]", "step_sizes[1]"),
               ((None, None, False), (None, None, False))),)

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False,
                 nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0):
        defaults = dict(lr=lr, etas=_pair_tuple(etas), step_sizes=_pair_tuple(step_sizes),
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def _check_across(self, g):
        etas = g["etas"]
        if not isinstance(etas, (tuple, list)) or len(etas) != 2:
            raise TypeError(f"Invalid etas: {etas!r} (expected a pair of floats)")
        lo, hi = (_real("eta values", e) for e in etas)
        if not 0.0 < lo < 1.0 < hi:
            raise ValueError(f"Invalid eta values: {_show(etas[0])}, {_show(etas[1])}")

    def _plain_across(self, g):
        etas = g["etas"]
        return (type(etas) is tuple and len(etas) == 2 and _plain_in(etas[0], 0.0, 1.0, False)
                and _plain_in(etas[1], 1.0, None, False) and etas[0] > 0 and etas[1] > 1)

    def _new_buffer(self, p, name, group):
        buf = self._zeros_buffer(p, name)
        if name == "step_size":
            buf[...] = _num(group["lr"])
        return buf

    def _kernel_values(self, g):
        return (*map(_num, g["etas"]), *map(_num, g["step_sizes"]), bool(g["maximize"]))


_FLOAT32 = struct.Struct("f")


def _float32(x):
    """x rounded to float32 (to nearest even; inf beyond its range), as a Python float:
    torch keeps per-param scalar state (NAdam's mu_product, ASGD's eta and mu) in 0-d
    tensors of its default dtype, float32.  No NumPy scalars: this runs every step."""
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(x))[0]
    except OverflowError:  # rounds to inf
        return _INF if x > 0 else -_INF


class NAdam(_Elementwise):
    r"""NAdam (torch.optim.NAdam semantics; ``decoupled_weight_decay=True``: NAdamW).

    .. code-block:: text

        g = -g if maximize
        p *= 1 - lr * weight_decay  if decoupled  else  g += weight_decay * p
        mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay));  mu_product *= mu_t
        m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2**t)) + eps
        p += (-lr * (1 - mu_t) / (1 - mu_product) * g) / denom
        p += (-lr * mu_{t+1} / (1 - mu_product * mu_{t+1}) * m) / denom

    ``state[i]["mu_product"]`` is a float rounded to float32 and multiplied in float32, as
    torch's 0-d float32 tensor (torch's default dtype).  ``foreach`` / ``capturable`` are
    accepted as no-ops; ``differentiable=True`` is refused.
    """

    _STEP_BOUND_BUFFERS = ("exp_avg", "exp_avg_sq")
    _ALL_BUFFERS = ("exp_avg", "exp_avg_sq")
    _KERNEL = "nadam"
    _SCALAR_STATE = ("mu_product",)
    _TORCH_FLAGS = ("foreach", "capturable", "differentiable")
    _HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "momentum_decay",
                        "decoupled_weight_decay", "maximize")
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("eps", "epsilon value", 0.0, None, False))
    _PAIRS = (_BETAS,)
    _BOOLS = ("maximize", "decoupled_weight_decay")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False, nonfinite="ignore",
                 n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, betas=_pair_tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    def _check_across(self, g):
        _check_range("weight_decay value", g["weight_decay"], 0.0, None, False)
        _check_range("momentum_decay value", g["momentum_decay"], 0.0, None, False)

    def _plain_across(self, g):
        return (_plain_in(g["weight_decay"], 0.0, None, False)
                and _plain_in(g["momentum_decay"], 0.0, None, False))

    def _kernel_values(self, g):
        return (*_adam_like_values(g), _num(g["momentum_decay"]),
                bool(g["decoupled_weight_decay"]), bool(g["maximize"]))

    def _scalars_with_state(self, g, values):
        # Every step: mu_{t+1} and one float32 rounding of mu_product.  This step's
        # mu_{t+1} is the next step's mu_t (the same call, the same bits), and the
        # mu_product stored last step is float32 already (torch's 0-d float32 tensor:
        # the product of two float32 values is exact in double, so rounding it once is a
        # float32 multiply); a value from elsewhere is rounded first.
        lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled, maximize = values
        momentum = _R.nadam_momentum
        scalars_of_mu = _F._nadam_prepared_scalars(lr, beta1, beta2, eps, weight_decay,
                                                   decoupled, maximize)
        last = [None, None, None, None]  # the last step, its mu_{t+1} (and in float32),
        #                                  the mu_product it stored
        pack, unpack = _FLOAT32.pack, _FLOAT32.unpack  # _float32 where nothing overflows

        def at(step, state):
            last_step, mu, mu32, stored = last
            if last_step != step - 1:
                mu = momentum(beta1, momentum_decay, step)
                mu32 = _float32(mu)
            before = 1.0 if state is None else state[0]
            if before is stored:  # a float32 in [0, 1): times mu32 < 1 it cannot overflow
                mu_product = unpack(pack(before * mu32))[0]
            else:
                mu_product = _float32(_float32(before) * mu32)
                if not 0.0 <= mu_product < 1.0:  # the functional's check and message
                    check_real("mu_product", mu_product, low=0.0, high=1.0, high_open=True)
            mu_next = momentum(beta1, momentum_decay, step + 1)
            last[:] = step, mu_next, unpack(pack(mu_next))[0], mu_product
            return scalars_of_mu(step, mu_product, mu, mu_next), (mu_product,)
        return at


class ASGD(_Elementwise):
    r"""Averaged SGD (torch.optim.ASGD semantics).

    .. code-block:: text

        g = -g if maximize;  g += weight_decay * p
        p *= 1 - lambd * eta;   p += -eta * g
        ax += (p - ax) * mu   (ax = p while mu == 1)
        then eta = lr / (1 + lambd * lr * t)**alpha,  mu = 1 / max(1, t - t0)

    ``state[i]["eta"]`` and ``["mu"]`` start at lr and 1 and are floats rounded to float32,
    as torch's 0-d float32 tensors.  ``foreach`` / ``capturable`` are accepted as no-ops;
    ``differentiable=True`` is refused.
    """

    _ALL_BUFFERS = ("ax",)
    _KERNEL = "asgd"
    _SCALAR_STATE = ("eta", "mu")
    _TORCH_FLAGS = ("foreach", "differentiable", "capturable")
    _HYPERPARAMETERS = ("lr", "lambd", "alpha", "t0", "weight_decay", "maximize")
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("weight_decay", "weight_decay value", 0.0, None, False),
              ("lambd", "lambd value", None, None, False),
              ("alpha", "alpha value", None, None, False),
              ("t0", "t0 value", None, None, False))

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False, *,
                 nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0):
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed)

    def _kernel_values(self, g):
        return _num(g["lambd"]), _num(g["weight_decay"]), bool(g["maximize"])

    def _scalars_with_state(self, g, values):
        lr, lambd, alpha, t0 = map(_num, (g["lr"], g["lambd"], g["alpha"], g["t0"]))
        eta_0 = _float32(lr)
        scalars = _F._asgd_scalars

        def at(step, state):
            eta, mu = (eta_0, 1.0) if state is None else state
            if eta != eta or mu != mu:  # NaN (a schedule gone bad): the functional's check
                check_real("eta", eta)
                check_real("mu", mu)
            past_t0 = step - t0  # the next mu = 1 / max(1, past_t0), as torch's
            return scalars(step, eta, mu, *values), (
                _float32(_R.asgd_eta(lr, lambd, alpha, step)),
                _float32(1 / past_t0) if past_t0 > 1 else 1.0)
        return at


_SF_VALUES = itemgetter("lr", "r", "weight_lr_power", "warmup_steps")
_NO_SCHEDULE = {}  # AdamWScheduleFree._schedule between steps (never written)


class AdamWScheduleFree(_Elementwise):
    r"""Schedule-Free AdamW (Defazio et al. 2024), as ``schedulefree.AdamWScheduleFree``
    (its constructor, group keys and single-tensor step).

    .. code-block:: text

        per group, each step:  sched = (k + 1) / warmup_steps if k < warmup_steps else 1
            lr_t = lr * sched;  lr_max = max(lr_max, lr_t)
            weight = (k + 1)**r * lr_max**weight_lr_power;  weight_sum += weight
            ckp1 = weight / weight_sum (0 if weight_sum == 0);  k += 1
        per param (p holds y in train mode):
            v = beta2 * v + (1 - beta2) * g * g
            g = g / (sqrt(v / (1 - beta2**k)) + eps) + weight_decay * y
            y = lerp(y, z, ckp1) + lr_t * (beta1 * (1 - ckp1) - 1) * g;   z -= lr_t * g

    Call ``train()`` before training and ``eval()`` before evaluating or saving: they
    switch the params between y and the averaged x (``p = lerp(p, z, 1 - 1/beta1)`` and
    back with ``1 - beta1``), as schedulefree's.  ``step`` in eval mode is a ValueError
    (schedulefree raises Exception).  The group's ``k``, ``lr_max``, ``weight_sum`` and
    ``scheduled_lr`` advance once per step, even for a group whose grads are all None, as
    schedulefree's; they do not advance when the step is refused.  ``foreach`` is accepted
    as a no-op.  Unlike schedulefree, betas must lie in [0, 1) and the schedule's values
    are checked.
    """

    _ALL_BUFFERS = ("z", "exp_avg_sq")
    _KERNEL = "adamw_schedule_free"  # its own _kernel_call runs it (8-bit: z stays float)
    _TORCH_FLAGS = ("foreach",)
    _STEP_OPTIONAL = True  # schedulefree's state counts no steps (its groups keep k)
    _HYPERPARAMETERS = ("lr", "betas", "eps", "r", "warmup_steps", "train_mode",
                        "weight_lr_power", "weight_decay")
    #: the group keys each step writes: checked by _advance at every step (a check cached
    #: by identity would be redone every step)
    _SCHEDULE = ("k", "lr_max", "weight_sum", "scheduled_lr")
    _READ_SCHEDULE = itemgetter(*_SCHEDULE)
    _REALS = (("lr", "learning rate", 0.0, None, False),
              ("eps", "epsilon value", 0.0, None, False),
              ("weight_decay", "weight_decay value", None, None, False),
              ("r", "r value", None, None, False),
              ("weight_lr_power", "weight_lr_power value", None, None, False),
              ("weight_sum", "weight_sum value", 0.0, None, False),
              ("lr_max", "lr_max value", None, None, False),
              ("scheduled_lr", "scheduled_lr value", None, None, False))
    _PAIRS = (_BETAS,)
    _BOOLS = ("train_mode",)

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0, foreach=True, *,
                 nonfinite="ignore", n_threads=None,
                 state_dtype=None, master_weights=None, rounding="nearest", seed=0,
                 min_8bit_size=_MIN_8BIT_SIZE):
        defaults = dict(lr=lr, betas=_pair_tuple(betas), eps=eps, r=r, k=0,
                        warmup_steps=warmup_steps, train_mode=False, weight_sum=0.0,
                        lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay, foreach=foreach)
        self._check_group(defaults)
        self._schedule = {}  # id(group) -> this step's (ckp1, lr, bias_correction2)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads,
                         state_dtype=state_dtype, master_weights=master_weights,
                         rounding=rounding, seed=seed,
                         min_8bit_size=min_8bit_size)

    def __setstate__(self, d):
        super().__setstate__(d)
        self._schedule = {}

    def _check_across(self, g):
        for key in ("k", "warmup_steps"):
            value = g[key]
            if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
                    or not 0 <= value <= _MAX_STEP):
                raise ValueError(f"Invalid {key}: {_show(value)} (expected an int >= 0)")

    def _plain_across(self, g):
        return all(type(g[key]) is int and 0 <= g[key] <= _MAX_STEP
                   for key in ("k", "warmup_steps"))

    def _new_buffer(self, p, name, group):
        buf = self._zeros_buffer(p, name)
        if name == "z":
            buf[...] = p  # z starts at the param, as schedulefree's clone
        return buf

    def _advance(self, i, g):
        """Group i's schedule for its next step, computed as schedulefree does (in Python
        floats): ((ckp1, lr, bias_correction2) for the kernel, the group's (k,
        scheduled_lr, lr_max, weight_sum) after the step)."""
        try:
            k, lr_max, weight_sum, scheduled_lr = self._READ_SCHEDULE(g)
        except KeyError:
            k = lr_max = weight_sum = scheduled_lr = None  # the check below words it
        if not (type(k) is int and 0 <= k <= _MAX_STEP and type(lr_max) is float
                and lr_max == lr_max and type(weight_sum) is float and weight_sum >= 0.0
                and type(scheduled_lr) is float and scheduled_lr == scheduled_lr):
            self._check_hypers(i, g)  # raises naming the value (or the missing key)
            k, lr_max, weight_sum = int(k), _num(lr_max), _num(weight_sum)
        beta2, (lr, r, weight_lr_power, warmup_steps) = g["betas"][1], _SF_VALUES(g)
        if not (type(beta2) is type(lr) is type(r) is type(weight_lr_power) is float
                and type(warmup_steps) is int):  # checked values, as the functional takes them
            beta2, lr, r, weight_lr_power = map(_num, (beta2, lr, r, weight_lr_power))
            warmup_steps = int(warmup_steps)
        sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
        bias_correction2 = 1 - beta2 ** (k + 1)
        lr = lr * sched
        lr_max = max(lr, lr_max)
        try:
            weight = math.pow(k + 1, r) * math.pow(lr_max, weight_lr_power)
        except (OverflowError, ValueError):  # inf, 0 ** -1, ...: IEEE power, as torch's
            with np.errstate(all="ignore"):
                weight = float(np.float64(k + 1) ** r * np.float64(lr_max) ** weight_lr_power)
        weight_sum = weight_sum + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        return (ckp1, lr, bias_correction2), (k + 1, lr, lr_max, weight_sum)

    def step(self, grads):
        """One schedule-free step (train mode only); see Optimizer.step."""
        with self._lock:
            plan = self._armed_plan()
            if plan is None:
                self._check_groups()
            groups = self.param_groups
            if groups and not groups[0]["train_mode"]:  # no groups: step's own error
                raise ValueError("Optimizer was not in train mode when step is called. "
                                 "Please insert .train() and .eval() calls on the "
                                 "optimizer. See documentation for details.")
            schedule, after = {}, []
            for i, g in enumerate(groups):
                now, values = self._advance(i, g)
                schedule[id(g)] = now
                after.append(values)
            self._schedule = schedule
            try:
                done = ((plan is not None and self._try_whole_step(plan, plan.call, grads))
                        or self._checked_step(grads))
            finally:
                self._schedule = _NO_SCHEDULE
            if done:
                for g, values in zip(groups, after):
                    g["k"], g["scheduled_lr"], g["lr_max"], g["weight_sum"] = values
            return done

    def _kernel_call(self, g, params, bufs, first, n_threads, ids=None):
        run = self._template_runner("adamw_schedule_free", params,
                                    [bufs["z"], bufs["exp_avg_sq"]], bufs, ids, n_threads)
        scalars = _F._adamw_schedule_free_prepared_scalars(
            *map(_num, g["betas"]), _num(g["eps"]), _num(g["weight_decay"]))
        key = id(g)

        def update(grads, step):
            # this step's (ckp1, lr, bias_correction2), set by step()
            run(grads, step, scalars(*self._schedule[key]))
        return update

    def _switch(self, to_train):
        with self._lock:
            # everything checked before the first param moves
            plan = self._build_plan(self._check_groups())
            moves = []
            for g in self.param_groups:
                if bool(g["train_mode"]) == to_train:
                    continue
                beta1 = _num(g["betas"][0])
                if not to_train and beta1 == 0:
                    raise ValueError("eval() needs beta1 > 0: with beta1 = 0 the params are "
                                     "z and the averaged weights cannot be recovered")
                weight = 1 - beta1 if to_train else 1 - 1 / beta1
                moves += [(p, b.bufs["z"][k], b.bufs[_MASTER][k] if _MASTER in b.bufs else None,
                           weight) for b in plan.buckets if b.group is g
                          and "z" in b.bufs for k, p in enumerate(b.params)]
            for p, z, master, weight in moves:
                _lerp_weights(p, z, master, weight)
            for g in self.param_groups:
                g["train_mode"] = to_train

    def train(self):
        """Switch the params to y, the point gradients are taken at (before training)."""
        self._switch(True)

    def eval(self):
        """Switch the params to x, the averaged weights (before evaluating or saving)."""
        self._switch(False)
def _lerp_weights(p, z, master, weight):
    """p = lerp(p, z, weight) in p's math dtype (Schedule-Free's switch).  Compact
    storage: the master of a 16-bit param moves (p gets its rounding to nearest even);
    without one, p's float32 values move and are rounded back; a 16-bit z is widened."""
    x = master if master is not None else p
    if _is_16bit(x.dtype):
        x = x.astype(_F32)
    _R.lerp_(x, z if z.dtype == x.dtype else z.astype(x.dtype), weight)
    if x is not p:
        p[...] = x


# ---------------------------------------------------------------- Adafactor
class Adafactor(Optimizer):
    r"""Adafactor (torch.optim.Adafactor semantics; see ``fastoptim.adafactor_``).

    .. code-block:: text

        rho = min(lr, 1 / sqrt(t));  alpha = max(eps2, rms(p)) * rho
        p *= 1 - lr * weight_decay
        >= 2 dims: row_var, col_var = lerp(.., mean(g*g over the last / second-last
                   axis), t**beta2_decay);  v = row_var * col_var / max(mean(row_var), eps1)
        else:      variance = lerp(variance, g*g, t**beta2_decay);  v = variance
        u = g / sqrt(max(v, eps1**2));  p -= alpha / max(1, rms(u) / d) * u

    State per param: ``step`` and ``row_var`` (shape ``(..., R, 1)``) and ``col_var``
    (``(..., 1, C)``) for params of >= 2 dims, ``variance`` (the param's shape) for the
    others, as torch's.  Params of >= 2 dims must be C-contiguous.  ``eps=(None, eps2)``:
    eps1 is the machine epsilon of each param's dtype.  ``foreach`` is accepted as a
    no-op.  A factor missing at step > 0 is a ValueError (torch: AssertionError).
    """

    _ALL_BUFFERS = ("row_var", "col_var", "variance")
    _STEP_BOUND_BUFFERS = _ALL_BUFFERS
    _TORCH_FLAGS = ("foreach",)
    _HYPERPARAMETERS = ("lr", "beta2_decay", "eps", "d", "weight_decay", "maximize")

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False, nonfinite="ignore",
                 n_threads=None):
        defaults = dict(lr=lr, beta2_decay=beta2_decay,
                        eps=tuple(eps) if isinstance(eps, list) else eps, d=d,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads)

    def _check_group(self, g):
        _check_real("learning rate", g["lr"], lo=0.0)
        beta2_decay = _real("beta2_decay", g["beta2_decay"])
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        eps = g["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"Invalid eps: {eps!r} (expected a pair (eps1 or None, eps2))")
        if eps[0] is not None:
            _check_real("epsilon1", eps[0], lo=0.0)
        _check_real("epsilon2", eps[1], lo=0.0)
        _check_real("clipping threshold d", g["d"], lo=1.0)
        _check_real("weight_decay value", g["weight_decay"], lo=0.0)
        _check_bool("maximize", g["maximize"])
        _check_torch_flags(g, self._TORCH_FLAGS)

    def _buffer_names(self, g):
        return self._ALL_BUFFERS

    def _param_buffers(self, names, p):
        return names[:2] if p.ndim >= 2 else names[2:]

    def _buffer_shape(self, p, name):
        if name == "row_var":
            return p.shape[:-1] + (1,)
        if name == "col_var":
            return p.shape[:-2] + (1, p.shape[-1])
        return p.shape

    def _zeros_buffer(self, p, name):
        shape = self._buffer_shape(p, name)
        return np.zeros(shape, p.dtype) if name != "variance" else super()._zeros_buffer(p, name)

    def _kernel_call(self, g, params, bufs, first, n_threads, ids=None):
        beta2_decay, d = map(_num, (g["beta2_decay"], g["d"]))
        # as given: adafactor_ computes with a float32 lr or weight_decay in float32, as torch
        lr, weight_decay = g["lr"], g["weight_decay"]
        eps1 = None if g["eps"][0] is None else _num(g["eps"][0])
        eps2 = _num(g["eps"][1])
        maximize = bool(g["maximize"])
        row_var, col_var, variance = map(bufs.get, self._ALL_BUFFERS)

        def update(grads, step):
            _F.adafactor_(params, grads, row_var, col_var, variance, step=step, lr=lr,
                          beta2_decay=beta2_decay, eps1=eps1, eps2=eps2, d=d,
                          weight_decay=weight_decay, maximize=maximize, n_threads=n_threads)
        return update


# --------------------------------------------------------------------- Muon
class Muon(Optimizer):
    r"""Muon (torch.optim.Muon semantics; see ``fastoptim.muon_``) for 2-D params.

    .. code-block:: text

        buf = lerp(buf, g, 1 - momentum);  u = lerp(g, buf, momentum) if nesterov else buf
        p *= 1 - lr * weight_decay;  p -= lr * ratio * newton_schulz(u)

    Every param must be 2-D (a ValueError otherwise, as torch's constructor): give the
    others (biases, embeddings, ...) to another optimizer such as ``AdamW``.  The
    Newton-Schulz products run in the param's dtype (torch: bfloat16).  State per param:
    ``momentum_buffer`` (torch's only key) and a ``step`` count; torch's state dicts,
    which have no step, load with the count at 0.
    """

    _ALL_BUFFERS = ("momentum_buffer",)
    _HYPERPARAMETERS = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients",
                        "eps", "ns_steps", "adjust_lr_fn")
    _STEP_OPTIONAL = True

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
                 adjust_lr_fn=None, *, nonfinite="ignore", n_threads=None):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=(tuple(ns_coefficients)
                                         if isinstance(ns_coefficients, list)
                                         else ns_coefficients),
                        eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        self._check_group(defaults)
        super().__init__(params, defaults, nonfinite=nonfinite, n_threads=n_threads)

    def _check_param_kind(self, p, label):
        super()._check_param_kind(p, label)
        if p.ndim != 2:
            raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter "
                             f"with size: {p.shape} ({label}; optimize it with another "
                             "optimizer, e.g. AdamW)")

    def _check_group(self, g):
        _check_real("learning rate", g["lr"], lo=0.0)
        _check_real("momentum value", g["momentum"], lo=0.0)
        _check_real("weight decay value", g["weight_decay"], lo=0.0)
        _check_bool("nesterov", g["nesterov"])
        coefficients = g["ns_coefficients"]
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        for k, c in enumerate(coefficients):
            _check_real(f"ns_coefficients[{k}]", c)
        _check_real("epsilon value", g["eps"])
        steps = g["ns_steps"]
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"Invalid ns_steps: {steps!r} (expected an int)")
        if not 0 <= steps < 100:
            raise ValueError(f"Invalid ns_steps: {_show(steps)} (the number of steps must be "
                             ">= 0 and less than 100 for computational efficiency)")
        fn = g["adjust_lr_fn"]
        if fn is not None and not (type(fn) is str and fn in ("original", "match_rms_adamw")):
            raise ValueError(f"Adjust learning rate function {fn!r} is not supported")

    def _buffer_names(self, g):
        return self._ALL_BUFFERS

    def _kernel_call(self, g, params, bufs, first, n_threads, ids=None):
        momentum, eps = map(_num, (g["momentum"], g["eps"]))
        # as given: muon_ computes with a float32 lr or weight_decay in float32, as torch
        lr, weight_decay = g["lr"], g["weight_decay"]
        coefficients = tuple(map(_num, g["ns_coefficients"]))
        nesterov, ns_steps, adjust_lr_fn = bool(g["nesterov"]), int(g["ns_steps"]), \
            g["adjust_lr_fn"]
        buf = bufs["momentum_buffer"]

        def update(grads, step):
            _F.muon_(params, grads, buf, lr=lr, weight_decay=weight_decay, momentum=momentum,
                     nesterov=nesterov, ns_coefficients=coefficients, eps=eps,
                     ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn, n_threads=n_threads)
        return update


# -------------------------------------------------------------------- LBFGS
# torch.optim.lbfgs ported to NumPy, operation for operation.  Scalars keep the dtype
# torch gives them: a dot product of float32 vectors is a float32 (NumPy scalar), a
# Python float mixed with it stays a "weak" float (NEP 50, like torch's 0-d tensors).
def _add_scaled(y, x, alpha):
    """y += alpha * x with one rounding, as torch's y.add_(x, alpha=alpha) on CPU."""
    _kernels.add_scaled(y, x, float(alpha), 1)


def _dot(a, b):
    """a . b as NumPy's sum of a * b (torch's CPU dot adds small vectors in order, as
    this does; BLAS's dot rounds differently)."""
    return (a * b).sum()


def _rdiv(num, den):
    """num / den as torch computes a Python number over a tensor: den.reciprocal() * num
    (two roundings); a NumPy scalar stands for torch's 0-d tensor."""
    if isinstance(den, np.generic) and not isinstance(num, np.generic):
        return (1 / den) * num
    return num / den


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    # torch/optim/lbfgs.py (from torch7's polyinterp.lua)
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - _rdiv(3 * (f1 - f2), x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9,
                  max_ls=25):
    # torch/optim/lbfgs.py (from torch7's lswolfe.lua)
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _check_count(label, value, lo):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid {label}: {value!r} (expected an int)")
    if not lo <= value <= _MAX_STEP:
        raise ValueError(f"Invalid {label}: {_show(value)} (expected an int in [{lo}, 2**53])")


class LBFGS(Optimizer):
    r"""L-BFGS (torch.optim.LBFGS semantics, with its ``strong_wolfe`` line search).

    ``step(closure)``: ``closure()`` evaluates the objective at the params' current
    values and returns ``(loss, grads)``: a real number and a list with one gradient
    per param (an ndarray of the param's shape, or None for zeros), in the order the
    params were given.  It must not change the params; step moves them (up to
    ``max_iter`` iterations and ``max_eval`` evaluations) and returns the first
    ``loss``.  One param group only; all params of one dtype.

    State (as torch's, kept under the first param, ``opt.state[0]``): ``func_evals``,
    ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``,
    ``prev_flat_grad``, ``prev_loss`` and ``al``.  A step that raises (a closure's
    error, or grads of the wrong type, dtype or shape) restores the params and state
    it started from.
    """

    _HYPERPARAMETERS = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                        "history_size", "line_search_fn")
    _STATE_KEYS = ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                   "prev_flat_grad", "prev_loss", "al")

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        if isinstance(max_iter, numbers.Integral) and not isinstance(max_iter, bool) \
                and max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        self._check_group(defaults)
        super().__init__(params, defaults)

    def _add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super()._add_param_group(param_group)
        dtypes = {p.dtype for p in self.param_groups[0]["params"]}
        if len(dtypes) > 1:
            del self.param_groups[0]
            raise TypeError(f"LBFGS needs all params of one dtype, got {sorted(map(str, dtypes))}")

    def _check_group(self, g):
        _check_real("learning rate", g["lr"], lo=0.0)
        _check_count("max_iter", g["max_iter"], 0)
        _check_count("max_eval", g["max_eval"], 0)
        _real("tolerance_grad", g["tolerance_grad"])
        _real("tolerance_change", g["tolerance_change"])
        _check_count("history_size", g["history_size"], 1)
        fn = g["line_search_fn"]
        if fn is not None and not (type(fn) is str and fn == "strong_wolfe"):
            raise ValueError(f"Invalid line_search_fn: {fn!r} (only 'strong_wolfe' or None "
                             "is supported)")
        if fn is not None and g["max_iter"] > 0 and g["max_eval"] < 1:
            raise ValueError("Invalid max_eval: the line search needs max_eval >= 1")

    def _buffer_names(self, g):
        return ()

    # ------------------------------------------------------------------ step
    def _params(self):
        if type(self.param_groups) is not list or len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        group = self.param_groups[0]
        self._check_group(group)
        params = group["params"]
        for i, p in enumerate(params):
            _check_param(p, f"param {i}")
        if len({p.dtype for p in params}) > 1:
            raise TypeError("LBFGS needs all params of one dtype")
        _check_no_shared_memory(params, [f"param {i}" for i in range(len(params))])
        return group, params

    @staticmethod
    def _evaluate(closure, params):
        """closure() -> (loss as a float, the grads as one flat vector)."""
        out = closure()
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError("closure() must return (loss, grads): the loss and a list with "
                            f"one gradient per param, got {type(out).__name__}")
        loss, grads = out
        loss_value = _real("loss returned by the closure", loss) \
            if not isinstance(loss, float) else loss
        if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
            raise TypeError(f"closure() must return a list of {len(params)} gradients (one "
                            "per param, None for zeros)")
        views = []
        for i, (g, p) in enumerate(zip(grads, params)):
            if g is None:
                views.append(np.zeros(p.size, p.dtype))
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grad {i} is {type(g).__name__}, expected an ndarray or None")
            if g.dtype != p.dtype:
                raise TypeError(f"grad {i} has dtype {g.dtype} but its param has dtype "
                                f"{p.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"grad {i} has shape {g.shape} but its param has shape "
                                 f"{p.shape}")
            views.append(g.ravel())
        return loss, loss_value, np.concatenate(views)

    @staticmethod
    def _add_grad(params, step_size, update):
        offset = 0
        for p in params:
            part = update[offset:offset + p.size].reshape(p.shape)
            _add_scaled(p, part if p.flags.c_contiguous else np.asfortranarray(part), step_size)
            offset += p.size

    def step(self, closure):
        """One L-BFGS step (torch's algorithm); returns the loss of the first closure call.
        On any error the params and the state are restored to what they were."""
        if not callable(closure):
            raise TypeError("LBFGS.step needs a closure: a function returning (loss, grads)")
        with self._lock:
            group, params = self._params()
            saved_params = [p.copy() for p in params]
            saved_state = self.state
            self.state = {k: _copy_lbfgs_state(v) for k, v in saved_state.items()}
            try:
                return self._step(closure, group, params)
            except BaseException:
                for p, x in zip(params, saved_params):
                    p[...] = x
                self.state = saved_state
                raise

    def _step(self, closure, group, params):
        lr = group["lr"]  # as torch's _to_scalar: a Python number stays as it is (int 1)
        lr = lr.reshape(()).item() if isinstance(lr, np.ndarray) else lr
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        state = self.state.setdefault(0, {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss, loss, flat_grad = self._evaluate(closure, params)
        current_evals = 1
        state["func_evals"] += 1
        opt_cond = np.abs(flat_grad).max() <= tolerance_grad if flat_grad.size else True
        if opt_cond:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag = state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = _dot(y, s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _dot(y, y)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = _dot(old_stps[i], q) * ro[i]
                    _add_scaled(q, old_dirs[i], -al[i])
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = _dot(old_dirs[i], r) * ro[i]
                    _add_scaled(r, old_stps[i], al[i] - be_i)
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr
            else:
                t = lr
            gtd = _dot(flat_grad, d)
            if gtd > -tolerance_change:
                break
            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = [p.copy() for p in params]

                def obj_func(x, t, d):
                    self._add_grad(params, t, d)
                    _, value, grad = self._evaluate(closure, params)
                    for p, xp in zip(params, x):
                        p[...] = xp
                    return value, grad
                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals)
                self._add_grad(params, t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(params, t, d)
                if n_iter != max_iter:
                    _, loss, flat_grad = self._evaluate(closure, params)
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if np.abs(d * t).max() <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    # ------------------------------------------------------------ state dicts
    def state_dict(self):
        """torch's layout: ``{"state": {0: {...}}, "param_groups": [...]}``; copies."""
        with self._lock:
            sd = super().state_dict()
            sd["state"] = {k: _copy_lbfgs_state(v) for k, v in self.state.items() if v}
            return sd

    def _load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("state_dict must be a dict with exactly the keys 'state' and "
                             "'param_groups'")
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise TypeError("state_dict['state'] must be a dict")
        old_groups = [dict(g) for g in self.param_groups]
        old_state = self.state
        # The groups are checked and loaded by the base class (no per-param buffers),
        # then the state is checked against them; a failure restores both.
        super()._load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        try:
            group = self.param_groups[0]
            params = group["params"]
            first_id = state_dict["param_groups"][0]["params"][0] if params else 0
            new_state = {}
            for sid, st in saved_state.items():
                if not isinstance(st, dict):
                    raise ValueError(f"state[{sid!r}] must be a dict")
                if not st:
                    continue
                if isinstance(sid, bool) or sid != first_id:
                    raise ValueError(f"state entry {sid!r}: LBFGS keeps its state under the "
                                     f"first param ({first_id!r}) only")
                new_state[0] = _parse_lbfgs_state(st, params[0].dtype,
                                                  sum(p.size for p in params), group)
        except BaseException:
            for g, old in zip(self.param_groups, old_groups):
                g.clear()
                g.update(old)
            self.state = old_state
            raise
        self.state = new_state


def _copy_lbfgs_state(st):
    return {k: ([x.copy() if isinstance(x, np.ndarray) else x for x in v]
                if isinstance(v, list) else v.copy() if isinstance(v, np.ndarray) else v)
            for k, v in st.items()}


def _parse_lbfgs_state(st, dtype, n, group):
    """A saved LBFGS state (ours, or torch's with tensors as .numpy() arrays), checked,
    as NumPy values of the params' dtype."""
    unknown = set(st) - set(LBFGS._STATE_KEYS)
    if unknown:
        raise ValueError(f"state[0] has unexpected entries {sorted(map(str, unknown))} for LBFGS")
    scalar = np.dtype(dtype).type

    def vector(name, v):
        if not isinstance(v, np.ndarray) or v.dtype != dtype or v.shape != (n,):
            raise ValueError(f"state[0]['{name}'] must be an ndarray of shape ({n},) and dtype "
                             f"{dtype}")
        return v.copy()

    def real(name, v, keep_int=False):
        if keep_int and type(v) is int:
            return v
        if isinstance(v, np.ndarray):
            if v.size != 1:
                raise ValueError(f"state[0]['{name}'] must be a number")
            return scalar(_real(f"state[0]['{name}']", v))
        return _real(f"state[0]['{name}']", v) if isinstance(v, float) or \
            not isinstance(v, np.generic) else scalar(_real(f"state[0]['{name}']", v))

    out = {}
    for key in ("func_evals", "n_iter"):
        if key in st:
            _check_count(f"state[0]['{key}']", st[key], 0)
            out[key] = int(st[key])
    lists = [k for k in ("old_dirs", "old_stps", "ro") if st.get(k) is not None]
    for k in lists:
        if not isinstance(st[k], (list, tuple)):
            raise ValueError(f"state[0]['{k}'] must be a list")
    if lists and (len(lists) != 3 or len({len(st[k]) for k in lists}) != 1):
        raise ValueError("state[0]['old_dirs'], ['old_stps'] and ['ro'] must be lists of "
                         "one length")
    for key, v in st.items():
        if key in ("func_evals", "n_iter"):
            continue
        if v is None:
            out[key] = None
        elif key in ("d", "prev_flat_grad"):
            out[key] = vector(key, v)
        elif key in ("old_dirs", "old_stps"):
            out[key] = [vector(key, x) for x in v]
        elif key == "ro":
            out[key] = [real(key, x) for x in v]
        elif key == "al":
            if not isinstance(v, (list, tuple)) or len(v) != group["history_size"]:
                raise ValueError(f"state[0]['al'] must be a list of history_size="
                                 f"{group['history_size']} entries")
            out[key] = [None if x is None else real(key, x) for x in v]
        elif key == "prev_loss":
            out[key] = _real("state[0]['prev_loss']", v)
        else:  # t, H_diag (torch's first H_diag is the int 1)
            out[key] = real(key, v, keep_int=True)
    return out
