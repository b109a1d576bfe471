"""torch.optim optimizers whose step is fastoptim's fused kernels: ``fastoptim.torch``.

    import fastoptim.torch
    opt = fastoptim.torch.AdamW(model.parameters(), lr=1e-3)   # as torch.optim.AdamW
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()                                             # one kernel call per group

The classes subclass torch's own (``torch.optim.Adam`` ...): the constructor, its
defaults and argument checks, ``param_groups``, ``zero_grad``, the hooks,
``state_dict()`` and ``load_state_dict()`` are torch's, with torch's state layout
(``state[p]["step"]`` a scalar tensor, ``exp_avg`` ... tensors shaped like the param), so
state dicts move between ``torch.optim.X`` and ``fastoptim.torch.X`` both ways, and
``torch.optim.lr_scheduler`` drives them unchanged.  Only ``step`` is fastoptim's: it
reads ``p.grad`` (a param whose grad is None is skipped, as torch does) and hands every
param, grad and state buffer of a group to ONE call of the functional API
(``fastoptim.functional``) as NumPy views of the tensors' own memory: zero-copy, in place.

Zero-copy rules: CPU tensors of float32, float64, bfloat16 or float16 (strided,
contiguous in C or Fortran order; a grad and the state in its param's order, as autograd
and ``zeros_like`` make them; bfloat16 is viewed as ml_dtypes' NumPy bfloat16).
Anything else -- another device, dtype or layout, a sparse grad -- is a
TypeError/ValueError naming the tensor, never a silent copy.  The views are cached per
tensor and re-made when the tensor object or its memory (``data_ptr``) changes, so a
replaced ``p.data``, a new ``p.grad`` or a replaced state tensor is always the one
updated.  After a step the version counters of the tensors written are bumped
(``torch.autograd.graph.increment_version``), as torch's in-place ops do.

16-bit params (SGD, RMSprop, Adam, AdamW: fastoptim's compact-precision kernels) keep a
float32 master copy, ``state[p]["master_param"]``, made from the param at its first step:
the kernel updates the master and writes its rounding into the param in the same pass.
``state_dtype``, ``master_weights``, ``rounding`` and ``seed`` (constructor keywords, see
``_STORAGE_DOC``) choose the storage.

Adding an algorithm is a table entry: a subclass of torch's class (or of
``torch.optim.Optimizer``) naming its functional, its state buffers and how a group's
hyperparameters map to the functional's keyword arguments (see ``_FusedStep``).

This module imports torch; ``import fastoptim`` does not import it.
"""

import math
import numbers
from itertools import chain
from operator import attrgetter, is_

import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer

from . import functional as _F
from ._alloc import _MIN_STAGGER_NBYTES, _PAGE, _STAGGER_BYTES
from ._validation import check_real
from .reference import asgd_eta, nadam_momentum

__all__ = ["SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "RAdam",
           "NAdam", "Rprop", "ASGD", "Lion", "AdamWScheduleFree", "Adafactor",
           "Muon"]

_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                 torch.float16: np.dtype(np.float16), torch.bfloat16: None}  # None: ml_dtypes'
_16BIT = (torch.bfloat16, torch.float16)
_STEP_DTYPES = (torch.float32, torch.float64)
#: state_dtype -> the torch dtype state buffers are kept in (None: the param's, as torch)
_STATE_DTYPES = {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}
_MASTER = "master_param"  # the state entry of a 16-bit param's float32 master weights
_TORCH_DTYPES = {_NUMPY_DTYPES[t]: t for t in _STEP_DTYPES}  # per-param scalars' dtypes
_data_ptr = torch.Tensor.data_ptr
_grad_of = attrgetter("grad")
_item = np.ndarray.item
_IMMUTABLE = (float, int, bool, str, type(None))
_bump_versions = torch._C._increment_version  # (graph.increment_version's)
_profiler_enabled = torch._C._autograd._profiler_enabled
_record_function = torch.autograd.profiler.record_function
# torch's registries of the hooks every optimizer runs (register_optimizer_step_*_hook)
_GLOBAL_PRE_HOOKS = _torch_optimizer._global_optimizer_pre_hooks
_GLOBAL_POST_HOOKS = _torch_optimizer._global_optimizer_post_hooks


# ------------------------------------------------------------------ tensors as arrays
def _check_tensor(t, label):
    """A TypeError/ValueError unless fastoptim can update ``t`` in place."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout is not torch.strided:
        raise TypeError(f"{label} is a {t.layout} tensor; fastoptim.torch updates dense "
                        "(strided) tensors only")
    if t.device.type != "cpu":
        raise TypeError(f"{label} is on {t.device}; fastoptim.torch updates CPU tensors "
                        "in place (use torch.optim for other devices)")
    if t.dtype not in _NUMPY_DTYPES:
        raise TypeError(f"{label} has dtype {t.dtype}; fastoptim.torch supports "
                        "torch.float32, float64, bfloat16 and float16")


def _bfloat16():
    import ml_dtypes  # a fastoptim dependency, imported when bfloat16 is first used
    _NUMPY_DTYPES[torch.bfloat16] = dtype = np.dtype(ml_dtypes.bfloat16)
    return dtype


def _numpy(t):
    """``t.numpy()``, bfloat16 included (its bits viewed as ml_dtypes' bfloat16)."""
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(_NUMPY_DTYPES[torch.bfloat16] or _bfloat16())
    return t.numpy()


def _as_array(t, label):
    """The NumPy view of ``t``'s own memory (no copy), checked contiguous."""
    _check_tensor(t, label)
    try:
        a = _numpy(t.detach() if t.requires_grad else t)
    except RuntimeError as exc:  # a negative-bit view, an inference-only tensor kind ...
        raise TypeError(f"{label} cannot be viewed as a NumPy array ({exc})") from None
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError(f"{label} is not contiguous (strides {tuple(t.stride())}); it is "
                         "updated in place, so no copy can stand in: make the tensor "
                         "itself contiguous (p.data = p.data.contiguous())")
    return a


def _same_order(a, p):
    return a.flags.c_contiguous == p.flags.c_contiguous or \
        a.flags.f_contiguous == p.flags.f_contiguous


class _View:
    """A tensor, its data pointer when viewed, and the NumPy view of its memory."""

    __slots__ = ("tensor", "ptr", "array")

    def __init__(self, tensor, array):
        self.tensor, self.ptr, self.array = tensor, _data_ptr(tensor), array

    def current(self, t):
        return t is self.tensor and _data_ptr(t) == self.ptr


def _view_like(t, label, param_view, cached, dtype, why="", shape=None):
    """``cached`` if it still views ``t``, else a checked view of ``t`` of this torch
    ``dtype``, shaped and ordered like the param (grads and state buffers); a buffer of
    another ``shape`` (Adafactor's factors) must be C-contiguous."""
    if cached is not None and cached.current(t):
        return cached
    a = _as_array(t, label)
    p = param_view.array
    if t.dtype != dtype:
        raise TypeError(f"{label} has dtype {t.dtype}, expected {dtype}"
                        f"{why or ' (its param has ' + str(param_view.tensor.dtype) + ')'}")
    if shape is not None and shape != p.shape:
        if a.shape != shape:
            raise ValueError(f"{label} has shape {tuple(t.shape)}, expected {shape} for its "
                             f"param of shape {tuple(param_view.tensor.shape)}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{label} is not C-contiguous (strides {tuple(t.stride())})")
        return _View(t, a)
    if a.shape != p.shape:
        raise ValueError(f"{label} has shape {tuple(t.shape)}, its param has "
                         f"{tuple(param_view.tensor.shape)}")
    if not _same_order(a, p):
        raise ValueError(f"{label} is not in its param's memory order (strides "
                         f"{tuple(t.stride())} vs {tuple(param_view.tensor.stride())}); "
                         "element k must be the same element of both")
    return _View(t, a)


def _zeros_state_like(p, dtype, index):
    """``torch.zeros_like(p, dtype=dtype)`` in p's memory order, placed as
    ``fastoptim.zeros_state_like`` places NumPy state: ``index * 1088`` bytes past p's
    offset within a 4 KiB page (buffers at one page offset conflict in the L1; see
    fastoptim/_alloc.py).  An ordinary tensor: a view of a zeroed allocation 4 KiB
    larger than it needs.  Small buffers (in cache) are plain ``zeros_like``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = p.numel() * itemsize
    if nbytes < _MIN_STAGGER_NBYTES:
        return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
    raw = torch.zeros(nbytes + _PAGE, dtype=torch.uint8)
    start = (_data_ptr(p) + index * _STAGGER_BYTES - _data_ptr(raw)) % _PAGE
    start -= start % itemsize
    return raw[start:start + nbytes].view(dtype).as_strided(p.shape, p.stride())


def _byte_range(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _check_disjoint(arrays, labels):
    """Two of the arrays sharing memory -> ValueError naming both."""
    ranges = sorted((*_byte_range(a), k) for k, a in enumerate(arrays) if a.size)
    end, last = 0, None
    for s, e, k in ranges:
        if s < end:
            raise ValueError(f"{labels[last]} and {labels[k]} share memory; every updated "
                             "tensor needs its own memory (fastoptim.torch refuses params "
                             "that are views of one another)")
        if e > end:
            end, last = e, k


# ------------------------------------------------------------------ hyperparameters
def _scalar(value, name, keep_dtype=False):
    """Hyperparameter ``name`` as the functional API takes it: a one-element tensor (torch
    takes a Tensor lr) becomes a Python float (``keep_dtype``: a float32 one an
    np.float32); anything else is passed on to be checked."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a number or a tensor holding one real number, "
                             f"got a tensor of shape {tuple(value.shape)} and dtype "
                             f"{value.dtype}")
        number = float(value.detach().cpu().reshape(()).item())
        return np.float32(number) if keep_dtype and value.dtype == torch.float32 else number
    if type(value) is int and -2 ** 53 <= value <= 2 ** 53:
        return float(value)  # torch's defaults are ints (weight_decay=0): exact
    return value


def _group_value(group, key, keep_dtype=False):
    """_scalar of a param group's value ``group[key]``."""
    return _scalar(group[key], key, keep_dtype)


def _integral_step(value, label):
    """A saved step count (a tensor, as torch keeps it, or a number) as an int >= 0."""
    v = value
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.is_complex():
            raise ValueError(f"{label} must be a one-element tensor, got shape "
                             f"{tuple(v.shape)}")
        v = v.detach().cpu().reshape(()).item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{label} must be a number, got {type(value).__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise ValueError(f"{label} is too large") from None
    if not (math.isfinite(f) and f >= 0 and f.is_integer() and f < 2 ** 53):
        raise ValueError(f"{label} must be a whole number >= 0, got {v}")
    return int(f)


def _scalar_dtype(fused):
    # torch's _get_scalar_dtype: the dtype torch gives state["step"]
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


# ------------------------------------------------------------------------ the base
class _Param:
    """What the step caches for one param: views of it, its grad, its state buffers."""

    __slots__ = ("view", "grad", "bufs", "step", "synced")

    def __init__(self, view):
        self.view = view
        self.grad = None
        self.bufs = {}
        self.step = None  # _View of state["step"] (a scalar tensor)
        # (master's _View, the param's version) as the last step left them: while both
        # hold, the param still is the master's rounding (nothing else wrote to it)
        self.synced = None


def _ordered_bits(a):
    """16-bit floats as integers in the order of their values (-0 and +0 both 0), so
    neighbouring values differ by 1."""
    u = a.view(np.uint16).astype(np.int32)
    return np.where(u & 0x8000, -(u & 0x7FFF), u)


def _rounds_from(param, master):
    """Is every element of the 16-bit ``param`` one of the two 16-bit values next to its
    float32 ``master`` (as nearest or stochastic rounding leaves it)?"""
    with np.errstate(over="ignore", invalid="ignore"):
        nearest = master.astype(param.dtype)
    return bool(np.all(np.abs(_ordered_bits(param) - _ordered_bits(nearest)) <= 1))


_STORAGE_DOC = """
16-bit params and compact state (fastoptim's keywords, after torch's): bfloat16 and
float16 params and grads are updated in place too, with float32 math.
``state_dtype=None`` keeps each state buffer in its param's dtype, as torch does;
``"float32"``, ``"bfloat16"`` or ``"float16"`` keeps it in that dtype instead (float32
and 16-bit params; float64 params keep float64 state).  ``master_weights=True`` keeps a
float32 copy of every 16-bit param, ``state[p]["master_param"]``, made from the param
at its first step: the update runs on it and writes its rounding into the param in
the same pass (False: 16-bit params are updated directly and rounded every step, as
torch.optim does).  A param changed outside the optimizer (under ``torch.no_grad()``,
by ``load_state_dict`` of the model, or ``p.data = ...``) so that it no longer rounds
from its master gets a new master made from it at the next step.
``rounding="nearest"`` (even) or ``"stochastic"`` applies to every 16-bit store;
param i's random bits come from ``seed + i`` and its step count (SGD then keeps
``state[p]["step"]`` too), so a run resumed from a state dict continues the same stream.
"""


class _FusedStep(torch.optim.Optimizer):
    """The step of every fastoptim.torch optimizer.  A subclass is a table entry:

    * ``_FUNCTIONAL``: the name of the fastoptim.functional function to call, as
      ``fn(params, grads, *positional buffers, step=, **keyword buffers, **hyper,
      n_threads=)`` on lists of NumPy views;
    * ``_BUFFERS``: ``(state name, "pos" or keyword name, needed(group))`` in call order
      (a positional buffer a group does not need is passed as None);
    * ``_hyper(group)``: the group's hyperparameters as the functional's keyword
      arguments (the functional checks them);
    * ``_uses_buffer(p, name)`` and ``_buffer_shape(p, name)``: which of the group's
      buffers a param keeps (the call passes None for the others) and their shapes
      (the param's unless a subclass says otherwise: Adafactor's factors);
    * ``_COUNTS_STEPS``: torch keeps ``state["step"]`` (False for SGD: its buffers start
      from the gradient instead, which the functional does at ``step=1``);
    * ``_STEP_BOUND``: buffers that may not be missing once steps were counted (their
      bias correction depends on the count); any other missing buffer starts as
      ``_new_buffer`` makes it (zeros unless a subclass says otherwise);
    * ``_COMPACT``: the functional takes 16-bit params with ``master=``, ``rounding=``
      and ``seed=`` (fastoptim's compact path); a class without it refuses 16-bit
      params, and its constructor need not call ``_set_storage``;
    * ``_SCALAR_STATE``: per-param scalars torch keeps as 0-d tensors besides ``step``
      (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``): kept so, read each step
      (params whose values differ go to separate calls), starting at
      ``_scalar_start(group)``; ``_scalar_step`` gives the functional's arguments made
      from them and their values after the step, stored when the step succeeds.
    """

    _FUNCTIONAL = None
    _BUFFERS = ()
    _COUNTS_STEPS = True
    _STEP_BOUND = ()
    _SCALAR_STATE = ()
    #: the functional has a compact path: 16-bit params, masters, compact state
    _COMPACT = False
    # the storage options (set by _set_storage; these values for classes without them)
    _state_dtype, _master_weights, _rounding, _seed = None, True, "nearest", 0

    state_dtype = property(lambda self: self._state_dtype,
                           doc="None (state in its param's dtype), 'float32', 'bfloat16' "
                               "or 'float16'")
    master_weights = property(lambda self: self._master_weights,
                              doc="a float32 master copy for every 16-bit param")
    rounding = property(lambda self: self._rounding,
                        doc="'nearest' or 'stochastic' (every 16-bit store)")
    seed = property(lambda self: self._seed, doc="param i's rounding stream is seed + i")

    def _hyper(self, group):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _step_kwargs(self, group, step):
        """The functional's keyword arguments but the buffers, for a call at ``step``."""
        return dict(step=step, **self._hyper(group))

    def _uses_buffer(self, p, name):
        """Does param p keep state buffer ``name`` (of those its group needs)?"""
        return True

    def _buffer_shape(self, p, name):
        """The shape of param p's state buffer ``name`` (a tuple)."""
        return tuple(p.shape)

    def _new_buffer(self, name, p, group):
        """A state buffer as a param's first step makes it: torch's zeros_like, in the
        dtype the state is kept in (the master: the param's values in float32)."""
        if name == _MASTER:
            return torch.empty_like(p, dtype=torch.float32).copy_(p.detach())
        index = 1 + [n for n, _, _ in self._BUFFERS].index(name)
        return _zeros_state_like(p, self._buffer_dtype(p, name), index)

    def _scalar_start(self, group):  # pragma: no cover - subclasses with _SCALAR_STATE
        raise NotImplementedError

    def _scalar_step(self, group, kwargs, step, values):  # pragma: no cover - likewise
        """(extra functional arguments, new values) for a call at ``step`` whose params'
        scalars hold ``values`` (NumPy scalars of the state tensors' dtype); ``kwargs``
        are the call's other arguments."""
        raise NotImplementedError

    def _scalar_kwargs_for_check(self, group, kwargs):
        if not self._SCALAR_STATE:
            return {}
        start = np.dtype(np.float32).type
        return self._scalar_step(group, kwargs, 1,
                                 tuple(start(v) for v in self._scalar_start(group)))[0]

    # -------------------------------------------------------------- construction
    def _set_storage(self, state_dtype, master_weights, rounding, seed):
        """The storage keywords, checked; set before torch's constructor adds the params
        (their check depends on them)."""
        expected = f"None or one of {[k for k in _STATE_DTYPES if k]}"
        if not (state_dtype is None or isinstance(state_dtype, str)):
            raise TypeError(f"state_dtype must be {expected}, got {type(state_dtype).__name__}")
        if state_dtype not in _STATE_DTYPES:
            raise ValueError(f"state_dtype must be {expected}, got {state_dtype!r}")
        if not isinstance(master_weights, (bool, np.bool_)):
            raise TypeError(f"master_weights must be a bool, got "
                            f"{type(master_weights).__name__}")
        self._state_dtype, self._master_weights = state_dtype, bool(master_weights)
        self._rounding = _F._check_rounding(rounding)
        self._seed = _F._check_seed_int(seed)

    def _check_param_kind(self, p, label):
        """A param the class updates, with the storage chosen (TypeError otherwise)."""
        if p.dtype in _16BIT and not self._COMPACT:
            raise TypeError(f"{label} has dtype {p.dtype}; {type(self).__name__} updates "
                            "float32 and float64 params (16-bit params: SGD, RMSprop, Adam, "
                            "AdamW)")
        if p.dtype is torch.float64 and self._state_dtype is not None:
            raise TypeError(f"{label} is float64: its state is float64 too "
                            f"(state_dtype={self._state_dtype!r} is for float32 and 16-bit "
                            "params)")

    def _uses_master(self, p):
        return self._master_weights and p.dtype in _16BIT

    def _buffer_dtype(self, p, name):
        """The torch dtype state buffer ``name`` of param p is kept in."""
        if name == _MASTER:
            return torch.float32
        return _STATE_DTYPES[self._state_dtype] or p.dtype

    def _counts_steps(self):
        """state["step"] is kept: torch's (not SGD's), or for the stochastic stream."""
        return self._COUNTS_STEPS or self._rounding == "stochastic"

    def _functional_step(self, count, fresh):
        """The functional's ``step`` after ``count`` steps (SGD: a buffer just made,
        ``fresh``, starts from the gradient at step 1)."""
        if self._COUNTS_STEPS:
            return count + 1
        return 1 if fresh else max(count + 1, 2)

    def _storage_kw(self, ids):
        """The functional's rounding keywords for the params of flat indices ``ids``."""
        if self._rounding == "nearest":
            return {}
        return {"rounding": self._rounding,
                "seed": [(self._seed + i) % 2 ** 64 for i in ids]}

    def _fastoptim_init(self):
        self._cache = {}  # param -> _Param (rebuilt when the params change)
        self._cache_key = None
        self._armed = None  # the last step's single call, re-run while nothing changed
        if getattr(self, "_step_supports_amp_scaling", False):
            # torch's fused=True tells GradScaler the step unscales the grads itself; this
            # step does not, so GradScaler must unscale them first (its default path)
            del self._step_supports_amp_scaling

    def _check_group_values(self, group):
        """The group's hyperparameters, checked as the step will use them (a dry run of
        the functional on no arrays)."""
        if not isinstance(group, dict):
            raise TypeError(f"a param group must be a dict, got {type(group).__name__}")
        if group.get("differentiable"):
            raise ValueError("differentiable=True is not supported: fastoptim's step runs in "
                             "compiled code outside autograd (use torch.optim)")
        for key in ("foreach", "fused", "capturable", "maximize"):
            v = group.get(key)
            if v is not None and not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{key} must be a bool{' or None' if key in ('foreach', 'fused') else ''}, "
                                f"got {type(v).__name__}")
        if group.get("fused") and group.get("foreach"):
            raise ValueError("`fused` and `foreach` cannot be `True` together.")
        try:
            kwargs = self._step_kwargs(group, 1)
            kwargs.update(self._scalar_kwargs_for_check(group, kwargs))
        except KeyError as exc:
            raise ValueError(f"the param group has no {exc.args[0]!r} entry") from None
        fn = getattr(_F, self._FUNCTIONAL)
        pos = [None if kind == "pos" and not needed(group) else []
               for _, kind, needed in self._BUFFERS if kind == "pos"]
        kw = {kind: [] for _, kind, needed in self._BUFFERS if kind != "pos" and needed(group)}
        fn([], [], *pos, **kw, **kwargs)

    def add_param_group(self, param_group):
        """torch's ``add_param_group``, after fastoptim's checks of the params (CPU,
        float32/float64, dense, contiguous, no memory shared) and of the group's values
        (as the step uses them); a refused group changes nothing."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' key")
        params = param_group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        elif isinstance(params, (str, bytes, dict)) or not hasattr(params, "__iter__"):
            raise TypeError("param_group['params'] must be a tensor or a list of tensors, "
                            f"got {type(params).__name__}")
        params = list(params)  # an iterator is read once: torch gets this list
        tensors = []
        for j, p in enumerate(params):
            if isinstance(p, tuple):
                if len(p) != 2:
                    raise ValueError("a named param must be a (name, tensor) pair")
                p = p[1]
            _as_array(p, f"param {j} of the group")
            self._check_param_kind(p, f"param {j} of the group")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
            tensors.append(p)
        merged = dict(self.defaults)
        merged.update((k, v) for k, v in param_group.items() if k != "params")
        self._check_group_values(merged)
        existing = [p for g in self.param_groups for p in g["params"]]
        seen = set(map(id, existing))
        if any(id(p) in seen for p in tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        unique = list({id(p): p for p in existing + tensors}.values())
        _check_disjoint([_as_array(p, "") for p in unique],
                        [f"param {k}" for k in range(len(unique))])
        param_group["params"] = params
        super().add_param_group(param_group)
        self._cache_key = None

    def __setstate__(self, state):
        storage = state.pop("fastoptim_storage", None)  # absent: load_state_dict's call
        super().__setstate__(state)
        if storage is not None:
            self._state_dtype, self._master_weights, self._rounding, self._seed = storage
        self._cache = {}
        self._cache_key = None
        self._armed = None

    def __getstate__(self):
        state = super().__getstate__()  # torch's: defaults, state, param_groups (no caches)
        state["fastoptim_storage"] = (self._state_dtype, self._master_weights,
                                      self._rounding, self._seed)
        return state

    def load_state_dict(self, state_dict):
        """torch's ``load_state_dict`` (state tensors kept, or cast to the param's dtype,
        as torch does), after checking the dict's shape and every group's values: a
        refused dict changes nothing.  Buffers are checked (shape, layout) at the next step."""
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with the keys 'state' and "
                             "'param_groups' (from Optimizer.state_dict())")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or not isinstance(state, dict):
            raise TypeError("state_dict['param_groups'] must be a list of dicts and "
                            "state_dict['state'] a dict")
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        ids = []
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, dict) or not isinstance(saved.get("params"), (list, tuple)):
                raise ValueError(f"param_groups[{gi}] must be a dict with a 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")
            merged = dict(self.defaults)
            merged.update((k, v) for k, v in saved.items() if k != "params")
            merged.update(self._FORCED_ON_LOAD)
            self._check_group_values(merged)
            ids += list(saved["params"])
        try:
            known = set(ids)
        except TypeError:
            raise TypeError("param ids in state_dict['param_groups'] must be hashable") from None
        if len(known) != len(ids):
            raise ValueError("state_dict['param_groups'] repeats a param id")
        flat = [p for g in self.param_groups for p in g["params"]]
        param_of = dict(zip(ids, flat))
        buffer_names = {name for name, _, _ in self._BUFFERS}
        for sid, st in state.items():
            if sid not in param_of:
                continue  # torch keeps state it cannot assign, as is
            if not isinstance(st, dict):
                raise TypeError(f"state[{sid!r}] must be a dict, got {type(st).__name__}")
            p = param_of[sid]
            if st and self._COUNTS_STEPS and "step" not in st:
                raise ValueError(f"state[{sid!r}] has no 'step' entry")
            for key, v in st.items():
                if key == "step":
                    _integral_step(v, f"state[{sid!r}]['step']")
                elif key in self._SCALAR_STATE:
                    _check_scalar_state(v, f"state[{sid!r}][{key!r}]", loading=True)
                elif isinstance(v, torch.Tensor):
                    shape = self._buffer_shape(p, key) if key in buffer_names else \
                        tuple(p.shape)
                    if tuple(v.shape) != shape:
                        raise ValueError(f"state[{sid!r}][{key!r}] has shape {tuple(v.shape)}, "
                                         f"expected {shape} (its param has {tuple(p.shape)})")
                    if v.is_complex() or not (v.is_floating_point()):
                        raise TypeError(f"state[{sid!r}][{key!r}] has dtype {v.dtype}; "
                                        "expected a real floating-point tensor")
                elif v is not None:
                    raise TypeError(f"state[{sid!r}][{key!r}] must be a tensor, got "
                                    f"{type(v).__name__}")
        super().load_state_dict(state_dict)
        # torch cast every floating state tensor to its param's dtype: the master and
        # buffers kept in another dtype (state_dtype) are cast from the saved values
        names = {name for name, _, _ in self._BUFFERS} | {_MASTER}
        for sid, st in state.items():
            p = param_of.get(sid)
            if p is None:
                continue
            loaded = self.state[p]
            for key, v in st.items():
                if key in names and isinstance(v, torch.Tensor) and \
                        (key != _MASTER or p.dtype in _16BIT):
                    dtype = self._buffer_dtype(p, key)
                    if loaded[key].dtype != dtype:
                        loaded[key] = v.to(dtype=dtype, device=p.device)
        self._cache_key = None

    #: group values forced on load (AdamW keeps decoupled weight decay, as torch)
    _FORCED_ON_LOAD = {}

    # ----------------------------------------------------------------------- step
    def step(self, closure=None):
        """One update of every param with a grad (``closure`` re-evaluates the model and
        returns the loss, run with grad enabled, as torch).  One fastoptim kernel call per
        param group (per dtype and step count when they differ within a group).  A refused
        step (a bad grad, buffer or group value) raises TypeError/ValueError and changes
        nothing."""
        # torch's hook wrapper (Optimizer.profile_hook_step), run when it has something to
        # do: a profiler (its record_function range, and _optimizer_step_code, which the
        # profiler's Python tracer watches) or step hooks.  Without either it would only
        # cost more than a small model's update.
        if _profiler_enabled():
            with _record_function(f"Optimizer.step#{type(self).__name__}.step"):
                return self._hooked_step(closure)
        if _GLOBAL_PRE_HOOKS or _GLOBAL_POST_HOOKS or self._optimizer_step_pre_hooks \
                or self._optimizer_step_post_hooks:
            return self._hooked_step(closure)
        return self._step(closure)

    step.hooked = True  # torch's Optimizer does not wrap it again

    def _hooked_step(self, closure):
        args, kwargs = ((self,) if closure is None else (self, closure)), {}
        for pre_hook in chain(_GLOBAL_PRE_HOOKS.values(),
                              self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{self.step} must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {result}.")
        out = self._step(*args[1:], **kwargs)
        self._optimizer_step_code()
        for post_hook in chain(self._optimizer_step_post_hooks.values(),
                               _GLOBAL_POST_HOOKS.values()):
            post_hook(self, args, kwargs)
        return out

    def _step(self, closure=None):
        loss = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"closure must be callable or None, got "
                                f"{type(closure).__name__}")
            with torch.enable_grad():
                loss = closure()
        armed = self._armed
        if armed is not None and armed.try_step(self):
            return loss
        self._armed = None
        calls = self._plan_calls()
        if len(calls) > 1:
            # each call checks its own arrays: check what none of them sees first (the
            # values of every group, memory shared across calls)
            for call in calls:
                self._check_group_values(call.group)
            arrays, labels = [], []
            for call in calls:
                for k in range(len(call.params)):
                    for role, lst in (("param", call.params), ("grad", call.grads),
                                      *call.bufs.items()):
                        if lst is not None and lst[k] is not None:
                            arrays.append(lst[k])
                            labels.append(f"{role} of param {call.ids[k]}")
            _check_written_disjoint(arrays, labels)
        for call in calls:
            call.run()
        written = []
        for call in calls:
            written += call.commit(self.state)
        if written:
            _bump_versions(written)
        for call in calls:
            call.synced()
        if len(calls) == 1 and len(self.param_groups) == 1 and \
                len(calls[0].ids) == len(self.param_groups[0]["params"]):
            self._armed = _Armed(self, calls[0])
        return loss

    def _records(self):
        """The cache of views, rebuilt when the param lists change."""
        key = [p for g in self.param_groups for p in g["params"]]
        if self._cache_key is None or len(key) != len(self._cache_key) or \
                any(a is not b for a, b in zip(key, self._cache_key)):
            self._cache = {id(p): self._cache.get(id(p)) for p in key}
            self._cache_key = key
        return self._cache

    def _plan_calls(self):
        """The functional calls of this step, every array checked; nothing written."""
        cache = self._records()
        state = self.state
        calls = []
        index = 0
        counts = self._counts_steps()
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            names = [(name, kind) for name, kind, needed in self._BUFFERS if needed(group)]
            with_master = names + [(_MASTER, "master")]
            buckets = {}
            for j, p in enumerate(params):
                i = index + j
                g = p.grad
                if g is None:
                    continue
                rec = cache.get(id(p))
                if rec is None or not rec.view.current(p):
                    view = _View(p, _as_array(p, f"param {i}"))
                    self._check_param_kind(p, f"param {i}")
                    rec = cache[id(p)] = _Param(view)
                if g.layout is not torch.strided:
                    raise TypeError(f"the grad of param {i} is sparse ({g.layout}); "
                                    f"{type(self).__name__} supports dense grads only")
                rec.grad = _view_like(g, f"the grad of param {i}", rec.view, rec.grad,
                                      p.dtype)
                st = state.get(p)
                step = 0
                if st and counts:
                    if "step" in st:
                        step = self._read_step(rec, st["step"], i)
                    elif self._COUNTS_STEPS:
                        raise ValueError(f"state of param {i} has no 'step' (delete "
                                         f"opt.state[p] to restart it)")
                bucket_names = with_master if self._uses_master(p) else names
                pnames = [(n, k) for n, k in bucket_names if self._uses_buffer(p, n)]
                missing = []
                for name, _ in pnames:
                    t = st.get(name) if st else None
                    if t is not None:
                        dtype = self._buffer_dtype(p, name)
                        rec.bufs[name] = _view_like(
                            t, f"state[{name!r}] of param {i}", rec.view, rec.bufs.get(name),
                            dtype, "" if dtype == p.dtype else
                            f" (state_dtype={self._state_dtype!r}, its param has {p.dtype})",
                            self._buffer_shape(p, name))
                        if name == _MASTER and rec.synced != (rec.bufs[name], p._version) \
                                and not _rounds_from(rec.view.array, rec.bufs[name].array):
                            t = None  # the param was changed: a new master is made from it
                    if t is None:
                        if st and step > 0 and name in self._STEP_BOUND:
                            raise ValueError(f"state of param {i} is missing {name!r} at "
                                             f"step {step} (delete opt.state[p] to restart "
                                             "this param)")
                        missing.append(name)
                        rec.bufs.pop(name, None)
                scalars = self._read_scalars(st, group, i) if self._SCALAR_STATE else None
                key = (rec.view.array.dtype, step, tuple(missing),
                       None if scalars is None else
                       (scalars[0].char, b"".join(v.tobytes() for v in scalars[1])))
                # (params of one call may keep different buffers: Adafactor's matrices
                # and vectors; the call passes None for a buffer a param does not keep)
                buckets.setdefault(key, (bucket_names, scalars, []))[2].append((i, p, rec))
            for (_, step, missing, _), (pnames, scalars, members) in buckets.items():
                calls.append(_Call(self, group, pnames, step, missing, members, scalars))
            index += len(params)
        return calls

    def _read_scalars(self, st, group, i):
        """(dtype, values) of the param's scalar state: its tensors' values, or where
        there are none yet, the start values in torch's dtype for them."""
        if st and all(name in st for name in self._SCALAR_STATE):
            arrays = [_check_scalar_state(st[name], f"state[{name!r}] of param {i}")
                      for name in self._SCALAR_STATE]
            dtypes = {a.dtype for a in arrays}
            if len(dtypes) != 1:
                raise TypeError(f"the scalar state of param {i} "
                                f"({', '.join(self._SCALAR_STATE)}) mixes dtypes")
            return arrays[0].dtype, tuple(a[()] for a in arrays)
        dtype = np.dtype(_NUMPY_DTYPES[_scalar_dtype(group.get("fused"))])
        with np.errstate(over="ignore"):
            return dtype, tuple(dtype.type(v) for v in self._scalar_start(group))

    def _read_step(self, rec, t, i):
        if isinstance(t, torch.Tensor):
            cached = rec.step
            if cached is None or not cached.current(t):
                if t.numel() != 1 or t.device.type != "cpu" or t.dtype not in _STEP_DTYPES:
                    _integral_step(t, f"state['step'] of param {i}")  # words the error
                    raise TypeError(f"state['step'] of param {i} must be a float32/float64 "
                                    f"CPU scalar tensor, got {t.dtype} on {t.device}")
                rec.step = cached = _View(t, t.detach().numpy().reshape(()))
            value = cached.array.item()
            if not (value >= 0 and float(value).is_integer() and value < 2 ** 53):
                raise ValueError(f"state['step'] of param {i} must be a whole number >= 0, "
                                 f"got {value}")
            return int(value)
        rec.step = None
        return _integral_step(t, f"state['step'] of param {i}")


def _check_scalar_state(t, label, loading=False):
    """A per-param scalar state tensor (NAdam's mu_product ...): its 0-d NumPy view."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{label} must be a tensor, got {type(t).__name__}")
    if t.numel() != 1 or t.is_complex() or not t.is_floating_point():
        raise ValueError(f"{label} must be a one-element real floating-point tensor, got "
                         f"shape {tuple(t.shape)} and dtype {t.dtype}")
    if loading:
        return None  # load_state_dict casts it to the param's dtype, as torch
    if t.device.type != "cpu" or t.dtype not in _STEP_DTYPES:
        raise TypeError(f"{label} must be a float32/float64 CPU tensor, got {t.dtype} on "
                        f"{t.device}")
    return t.detach().numpy().reshape(())


def _check_written_disjoint(arrays, labels):
    """Across the calls of one step: no memory shared unless both are grads (read only)."""
    ranges = sorted((*_byte_range(a), k) for k, a in enumerate(arrays) if a.size)
    end, last = 0, None
    for s, e, k in ranges:
        if s < end and not (labels[k].startswith("grad") and labels[last].startswith("grad")):
            raise ValueError(f"{labels[last]} and {labels[k]} share memory; every updated "
                             "tensor needs its own memory")
        if e > end:
            end, last = e, k


class _Call:
    """One functional call: a group's params of one dtype and step count."""

    __slots__ = ("opt", "group", "names", "step", "missing", "ids", "tensors", "recs",
                 "params", "grads", "bufs", "new", "scalars", "after")

    def __init__(self, opt, group, names, step, missing, members, scalars=None):
        self.opt, self.group, self.names = opt, group, names
        self.step, self.missing = step, missing
        self.scalars, self.after = scalars, None  # (dtype, values) before, values after
        self.ids = [i for i, _, _ in members]
        self.tensors = [p for _, p, _ in members]
        self.recs = [r for _, _, r in members]
        self.params = [r.view.array for r in self.recs]
        self.grads = [r.grad.array for r in self.recs]
        # missing buffers (kept only if the step succeeds): as torch makes them, a
        # master from its param
        self.new = {name: [opt._new_buffer(name, p, group) for p in self.tensors]
                    for name in missing}
        self.bufs = {}
        for name, _ in names:
            if name in self.new:
                self.bufs[name] = [_numpy(t) for t in self.new[name]]
            else:
                self.bufs[name] = [r.bufs[name].array if name in r.bufs else None
                                   for r in self.recs]

    def arguments(self):
        """The functional's buffer arguments: positional list and keywords."""
        pos, kw = [], {}
        for name, kind, needed in self.opt._BUFFERS:
            if kind == "pos":
                pos.append(self.bufs.get(name))
            elif name in self.bufs:
                kw[kind] = self.bufs[name]
        if _MASTER in self.bufs:
            kw["master"] = self.bufs[_MASTER]
        kw.update(self.opt._storage_kw(self.ids))
        return pos, kw

    def run(self):
        opt = self.opt
        pos, kw = self.arguments()
        # SGD: a buffer just created starts from the gradient (step 1); a new master does not
        step = opt._functional_step(self.step, any(n != _MASTER for n in self.missing))
        kwargs = opt._step_kwargs(self.group, step)
        if self.scalars is not None:
            extra, self.after = opt._scalar_step(self.group, kwargs, step, self.scalars[1])
            kwargs.update(extra)
        getattr(_F, opt._FUNCTIONAL)(self.params, self.grads, *pos, **kw, **kwargs)

    def commit(self, state):
        """Store the new buffers and step counts; the tensors written, for their versions."""
        opt = self.opt
        written = list(self.tensors)
        counts = opt._counts_steps()
        if not self.names and not counts:
            return written  # no state (SGD without momentum): torch makes no entry either
        dtype = _scalar_dtype(self.group.get("fused"))
        for k, (p, rec) in enumerate(zip(self.tensors, self.recs)):
            st = state[p]
            if counts:  # first, as torch orders a new state dict
                t = st.get("step")
                if rec.step is not None and t is rec.step.tensor:
                    rec.step.array[()] = self.step + 1
                    written.append(t)
                else:
                    st["step"] = t = torch.tensor(float(self.step + 1), dtype=dtype)
                    rec.step = _View(t, t.numpy().reshape(()))
            if self.after is not None:
                written += self._store_scalars(st)
            for name, tensors in self.new.items():
                st[name] = tensors[k]
                rec.bufs[name] = _View(tensors[k], self.bufs[name][k])
            for name, _ in self.names:
                if self.bufs[name][k] is not None:
                    written.append(st[name])
        return written

    def synced(self):
        """After the versions were bumped: each param is its master's rounding now."""
        for p, rec in zip(self.tensors, self.recs):
            if _MASTER in rec.bufs:
                rec.synced = (rec.bufs[_MASTER], p._version)

    def _store_scalars(self, st):
        """The scalars' values after the step, into the tensors read (or new ones in the
        dtype torch gives them); the tensors written."""
        dtype, _ = self.scalars
        written = []
        for name, value in zip(self.opt._SCALAR_STATE, self.after):
            t = st.get(name)
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN stay so
                if isinstance(t, torch.Tensor) and t.dtype == _TORCH_DTYPES.get(dtype):
                    t.detach().numpy().reshape(())[()] = value
                    written.append(t)
                else:
                    st[name] = torch.tensor(dtype.type(value).item(),
                                            dtype=_TORCH_DTYPES[dtype])
        return written


class _Armed:
    """A step that was one call over every param of the only group, kept to be run again
    as long as every object it was made from is still the live one: the group and its
    values, the params and their memory, the state dict, the params' state dicts and
    their entries (compared by identity, in one pass), the buffers' memory, the step
    counts and per-param scalars (by value).  The grads may be new each step
    (``zero_grad()`` sets them to None): their views are made here and the kernel checks
    them (dtype, shape, layout, memory shared) before it writes anything.  New group
    values (a scheduler's lr) are mapped again, and checked by the functional, while they
    need the same buffers; per-step values (NAdam's ``mu_product``, ASGD's ``eta`` and
    ``mu``, Schedule-Free's schedule) are computed each step as the full step does."""

    def __init__(self, opt, call):
        group, state = call.group, opt.state
        self.group, self.state = group, state
        self.params = list(group["params"])
        self.values = list(group.values())
        self.names = [name for name, _ in call.names if name != _MASTER]  # the group's
        self.spec = opt._BUFFERS
        self.live = _live(self.params, state)
        counts = opt._counts_steps()
        keys = (("step",) if counts else ()) + tuple(n for n, _ in call.names) + \
            opt._SCALAR_STATE
        states = [state.get(p) for p in self.params]  # None: no state (SGD, no momentum)
        # (the call's params are the group's, in order; None: a buffer a param does not
        # keep, as Adafactor's vectors keep no factors)
        self.written = self.params + [st[k] for j, st in enumerate(states) for k in keys
                                      if k not in call.bufs or call.bufs[k][j] is not None]
        self.written_ptrs = list(map(_data_ptr, self.written))
        # params with a master: their versions must be the ones the last step left
        self.synced = [(p, r) for p, r in zip(call.tensors, call.recs) if _MASTER in r.bufs]
        self.count = call.step + 1  # the step counts stored now
        self.step_arrays = [r.step.array for r in call.recs] if counts else []
        # the scalar state's 0-d views, param by param, and their dtype's scalar type
        self.scalar_arrays = [st[name].detach().numpy().reshape(()) for st in states
                              for name in opt._SCALAR_STATE]
        self.first_scalars = self.scalar_arrays[:len(opt._SCALAR_STATE)]
        self.scalar_type = self.scalar_arrays[0].dtype.type if self.scalar_arrays else None
        self.expected = [self.count] * len(self.step_arrays) + \
            list(map(_item, self.scalar_arrays))
        self.grads = [r.grad.tensor for r in call.recs]
        self.grad_arrays = list(call.grads)
        self.ptrs = self.written_ptrs + list(map(_data_ptr, self.grads))
        # a float32/float64/float16 grad's view is torch's numpy(); bfloat16 needs _numpy
        # (the grads of a call have its params' dtype)
        self.numpy_of = _numpy if call.tensors[0].dtype is torch.bfloat16 else \
            torch.Tensor.numpy
        self.fn = getattr(_F, opt._FUNCTIONAL)
        self.pos, self.kw = call.arguments()
        self.arrays = call.params
        self.hyper_of, self.kwargs_of = opt._hyper, opt._step_kwargs
        self.scalar_step = opt._scalar_step if opt._SCALAR_STATE else None
        self.step_of = opt._functional_step
        # the functional's keywords are _hyper's and the step (not a class's own
        # _step_kwargs): kept with the buffer keywords while the group's values are these
        self.plain = type(opt)._step_kwargs is _FusedStep._step_kwargs and \
            self.scalar_step is None
        self.hyper = {**self.kw, **opt._hyper(group)} if self.plain and \
            _immutable(group) else None

    def try_step(self, opt):
        """Run the step if nothing but the grads and the group's values changed: True
        when done; False (nothing written) sends the step to the full path."""
        groups = opt.param_groups
        group = self.group
        state = self.state
        if type(groups) is not list or len(groups) != 1 or groups[0] is not group \
                or opt.state is not state:
            return False
        values = list(group.values())
        changed = len(values) != len(self.values) or not all(map(is_, values, self.values))
        params = self.params
        try:
            live = _live(group["params"], state)
        except (KeyError, TypeError):
            return False
        if len(live) != len(self.live) or not all(map(is_, live, self.live)):
            return False
        if changed:
            # new values (a scheduler sets lr each step): fine while the same buffers
            # are needed; the functional checks the values
            try:
                if [name for name, _, needed in self.spec if needed(group)] != self.names:
                    return False
            except Exception:
                return False
        grads = list(map(_grad_of, params))
        same_grads = all(map(is_, grads, self.grads))
        if same_grads:
            if list(map(_data_ptr, chain(self.written, grads))) != self.ptrs:
                return False
            arrays = self.grad_arrays
        else:
            if list(map(_data_ptr, self.written)) != self.written_ptrs:
                return False
            try:
                arrays = list(map(self.numpy_of, grads))  # None, sparse ...: refused
            except Exception:
                return False
        if list(map(_item, chain(self.step_arrays, self.scalar_arrays))) != self.expected:
            return False  # a count or scalar edited in place
        for p, rec in self.synced:
            if p._version != rec.synced[1]:
                return False  # a param written by someone else: is it still its master's?
        count = self.count
        step = self.step_of(count, False)
        after = None
        try:
            if self.plain:
                hyper = self.hyper
                if hyper is None or changed:
                    hyper = {**self.kw, **self.hyper_of(group)}
                self.fn(self.arrays, arrays, *self.pos, step=step, **hyper)
            else:
                kwargs = self.kwargs_of(group, step)
                if self.scalar_step is not None:
                    # every param holds the same values (checked above): the first's
                    extra, after = self.scalar_step(
                        group, kwargs, step, tuple(a[()] for a in self.first_scalars))
                    kwargs.update(extra)
                self.fn(self.arrays, arrays, *self.pos, **self.kw, **kwargs)
        except (TypeError, ValueError, KeyError):
            return False  # nothing was written: the full step words the error
        if changed:
            self.values, self.hyper = values, None
        elif self.hyper is None and self.plain and _immutable(group):
            self.hyper = hyper
        if self.step_arrays:
            count += 1
            for a in self.step_arrays:
                a[()] = count
            self.count = count
        if after is not None:
            self._store_scalars(after)
        self.expected = [count] * len(self.step_arrays) + \
            list(map(_item, self.scalar_arrays))
        if not same_grads:
            self.grads, self.grad_arrays = grads, arrays
            self.ptrs = self.written_ptrs + list(map(_data_ptr, grads))
        _bump_versions(self.written)
        for p, rec in self.synced:
            rec.synced = (rec.synced[0], p._version)
        return True

    def _store_scalars(self, after):
        """The scalar state after the step into every param's tensors (as _Call does)."""
        values = after * (len(self.scalar_arrays) // len(after))
        if all(type(v) is self.scalar_type for v in after):
            for a, v in zip(self.scalar_arrays, values):
                a[()] = v
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN stay so
                for a, v in zip(self.scalar_arrays, values):
                    a[()] = v


def _live(params, state):
    """What an armed step is made from, for an identity check in one pass: the params,
    the state dict's keys and values (its per-param dicts), and every dict's entries."""
    values = state.values()
    return list(chain(params, state, values, chain.from_iterable(map(dict.values, values))))


def _immutable(group):
    """Are the group's values (but its params) of kinds that cannot change in place?"""
    return all(type(v) in _IMMUTABLE or (type(v) is tuple and all(type(x) in _IMMUTABLE
                                                                    for x in v))
               for k, v in group.items() if k not in ("params", "param_names"))


def _needed_always(group):
    return True


# ------------------------------------------------------------------------ the table
class SGD(_FusedStep, torch.optim.SGD):
    __doc__ = ("torch.optim.SGD with fastoptim's fused step (``fastoptim.sgd_``); "
               "``foreach`` and ``fused`` are accepted and change nothing.\n"
               + _STORAGE_DOC + "\n" + (torch.optim.SGD.__doc__ or ""))

    _FUNCTIONAL = "sgd_"
    _COMPACT = True
    _BUFFERS = (("momentum_buffer", "pos", lambda g: _group_value(g, "momentum") != 0),)
    _COUNTS_STEPS = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None, state_dtype=None, master_weights=True, rounding="nearest",
                 seed=0):
        self.defaults = {}  # _check_group_values reads only the group given
        self._check_group_values(dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))
        self._set_storage(state_dtype, master_weights, rounding, seed)
        torch.optim.SGD.__init__(self, params, lr, momentum, dampening, weight_decay, nesterov,
                                 maximize=maximize, foreach=foreach,
                                 differentiable=differentiable, fused=fused)
        self._fastoptim_init()

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), momentum=_group_value(g, "momentum"),
                    dampening=_group_value(g, "dampening"),
                    weight_decay=_group_value(g, "weight_decay"), nesterov=g["nesterov"],
                    maximize=g["maximize"])


class RMSprop(_FusedStep, torch.optim.RMSprop):
    __doc__ = ("torch.optim.RMSprop with fastoptim's fused step (``fastoptim.rmsprop_``); "
               "``foreach`` and ``capturable`` are accepted and change nothing.\n"
               + _STORAGE_DOC + "\n" + (torch.optim.RMSprop.__doc__ or ""))

    _FUNCTIONAL = "rmsprop_"
    _COMPACT = True
    _BUFFERS = (("square_avg", "pos", _needed_always),
                ("momentum_buffer", "momentum_buffer", lambda g: _group_value(g, "momentum") > 0),
                ("grad_avg", "grad_avg", lambda g: bool(g["centered"])))

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, state_dtype=None, master_weights=True,
                 rounding="nearest", seed=0):
        self.defaults = {}
        self._check_group_values(dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))
        self._set_storage(state_dtype, master_weights, rounding, seed)
        torch.optim.RMSprop.__init__(self, params, lr, alpha, eps, weight_decay, momentum,
                                     centered, capturable, foreach, maximize, differentiable)
        self._fastoptim_init()

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), alpha=_group_value(g, "alpha"),
                    eps=_group_value(g, "eps"), weight_decay=_group_value(g, "weight_decay"),
                    momentum=_group_value(g, "momentum"),
                    centered=g["centered"], maximize=g["maximize"])


class Adam(_FusedStep, torch.optim.Adam):
    __doc__ = ("torch.optim.Adam with fastoptim's fused step (``fastoptim.adam_``); "
               "``foreach``, ``fused`` and ``capturable`` are accepted and change nothing.\n"
               + _STORAGE_DOC + "\n" + (torch.optim.Adam.__doc__ or ""))

    _FUNCTIONAL = "adam_"
    _COMPACT = True
    _BUFFERS = (("exp_avg", "pos", _needed_always), ("exp_avg_sq", "pos", _needed_always),
                ("max_exp_avg_sq", "max_exp_avg_sq", lambda g: bool(g["amsgrad"])))
    _STEP_BOUND = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 state_dtype=None, master_weights=True, rounding="nearest", seed=0):
        self.defaults = {}
        self._check_group_values(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                                      capturable=capturable, differentiable=differentiable,
                                      fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))
        self._set_storage(state_dtype, master_weights, rounding, seed)
        torch.optim.Adam.__init__(self, params, lr, betas, eps, weight_decay, amsgrad,
                                  foreach=foreach, maximize=maximize, capturable=capturable,
                                  differentiable=differentiable, fused=fused,
                                  decoupled_weight_decay=decoupled_weight_decay)
        self._fastoptim_init()

    def _hyper(self, g):
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers, got {betas!r}")
        return dict(lr=_group_value(g, "lr"), beta1=_scalar(betas[0], "betas[0]"),
                    beta2=_scalar(betas[1], "betas[1]"),
                    eps=_group_value(g, "eps"), weight_decay=_group_value(g, "weight_decay"),
                    decoupled_weight_decay=g["decoupled_weight_decay"], amsgrad=g["amsgrad"],
                    maximize=g["maximize"])


class AdamW(_FusedStep, torch.optim.AdamW):
    __doc__ = ("torch.optim.AdamW with fastoptim's fused step (``fastoptim.adam_`` with "
               "decoupled weight decay); ``foreach``, ``fused`` and ``capturable`` are "
               "accepted and change nothing.\n" + _STORAGE_DOC + "\n"
               + (torch.optim.AdamW.__doc__ or ""))

    _FUNCTIONAL = Adam._FUNCTIONAL
    _COMPACT = True
    _BUFFERS = Adam._BUFFERS
    _STEP_BOUND = Adam._STEP_BOUND
    _FORCED_ON_LOAD = {"decoupled_weight_decay": True}
    _hyper = Adam._hyper

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, state_dtype=None, master_weights=True,
                 rounding="nearest", seed=0):
        self.defaults = {}
        self._check_group_values(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                                      capturable=capturable, differentiable=differentiable,
                                      fused=fused, decoupled_weight_decay=True))
        self._set_storage(state_dtype, master_weights, rounding, seed)
        torch.optim.AdamW.__init__(self, params, lr, betas, eps, weight_decay, amsgrad,
                                   maximize=maximize, foreach=foreach, capturable=capturable,
                                   differentiable=differentiable, fused=fused)
        self._fastoptim_init()


# ------------------------------------------------- the template's optimizers (torch's)
def _construct(opt, base, args):
    """torch's constructor ``base`` on the constructor's arguments (``locals()``), after
    checking the group values it will make as the step uses them (a refused
    construction changes nothing)."""
    args = {k: v for k, v in args.items() if k not in ("self", "__class__")}
    params = args.pop("params")
    opt.defaults = {}  # _check_group_values reads only the group given
    opt._check_group_values(dict(args))
    base.__init__(opt, params, **args)
    opt._fastoptim_init()


def _doc(base, functional, noops):
    return (f"torch.optim.{base.__name__} with fastoptim's fused step "
            f"(``fastoptim.{functional}``); {noops} accepted and change nothing.\n\n"
            + (base.__doc__ or ""))


def _full_like(p, value, label):
    """torch.full_like, with a value the param's dtype cannot hold a ValueError."""
    try:
        return torch.full_like(p, value, memory_format=torch.preserve_format)
    except (RuntimeError, OverflowError, TypeError) as exc:
        raise ValueError(f"{label}={value!r} cannot fill a {p.dtype} state buffer "
                         f"({exc})") from None


def _betas(g):
    betas = g["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of numbers, got {betas!r}")
    return dict(beta1=_scalar(betas[0], "betas[0]"), beta2=_scalar(betas[1], "betas[1]"))


class Adagrad(_FusedStep, torch.optim.Adagrad):
    __doc__ = _doc(torch.optim.Adagrad, "adagrad_", "``foreach`` and ``fused`` are")

    _FUNCTIONAL = "adagrad_"
    _BUFFERS = (("sum", "pos", _needed_always),)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        check_real("initial_accumulator_value",
                   _scalar(initial_accumulator_value, "initial_accumulator_value"), low=0.0)
        try:  # torch's constructor fills every param's sum
            _construct(self, torch.optim.Adagrad, locals())
        except (RuntimeError, OverflowError) as exc:
            raise ValueError(f"initial_accumulator_value={initial_accumulator_value!r} "
                             f"cannot fill the params' state buffers ({exc})") from None

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), lr_decay=_group_value(g, "lr_decay"),
                    weight_decay=_group_value(g, "weight_decay"), eps=_group_value(g, "eps"),
                    maximize=g["maximize"])

    def _new_buffer(self, name, p, group):
        # torch fills a sum made after the constructor with the optimizer's default
        return _full_like(p, self.defaults["initial_accumulator_value"],
                          "initial_accumulator_value")


class Adadelta(_FusedStep, torch.optim.Adadelta):
    __doc__ = _doc(torch.optim.Adadelta, "adadelta_", "``foreach`` and ``capturable`` are")

    _FUNCTIONAL = "adadelta_"
    _BUFFERS = (("square_avg", "pos", _needed_always), ("acc_delta", "pos", _needed_always))

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        _construct(self, torch.optim.Adadelta, locals())

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), rho=_group_value(g, "rho"),
                    eps=_group_value(g, "eps"),
                    weight_decay=_group_value(g, "weight_decay"), maximize=g["maximize"])


class Adamax(_FusedStep, torch.optim.Adamax):
    __doc__ = _doc(torch.optim.Adamax, "adamax_", "``foreach`` and ``capturable`` are")

    _FUNCTIONAL = "adamax_"
    _BUFFERS = (("exp_avg", "pos", _needed_always), ("exp_inf", "pos", _needed_always))
    _STEP_BOUND = ("exp_avg", "exp_inf")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        _construct(self, torch.optim.Adamax, locals())

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), **_betas(g), eps=_group_value(g, "eps"),
                    weight_decay=_group_value(g, "weight_decay"), maximize=g["maximize"])


class RAdam(_FusedStep, torch.optim.RAdam):
    __doc__ = _doc(torch.optim.RAdam, "radam_", "``foreach`` and ``capturable`` are")

    _FUNCTIONAL = "radam_"
    _BUFFERS = (("exp_avg", "pos", _needed_always), ("exp_avg_sq", "pos", _needed_always))
    _STEP_BOUND = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        _construct(self, torch.optim.RAdam, locals())

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), **_betas(g), eps=_group_value(g, "eps"),
                    weight_decay=_group_value(g, "weight_decay"),
                    decoupled_weight_decay=g["decoupled_weight_decay"],
                    maximize=g["maximize"])


class NAdam(_FusedStep, torch.optim.NAdam):
    __doc__ = _doc(torch.optim.NAdam, "nadam_", "``foreach`` and ``capturable`` are")

    _FUNCTIONAL = "nadam_"
    _BUFFERS = RAdam._BUFFERS
    _STEP_BOUND = RAdam._STEP_BOUND
    _SCALAR_STATE = ("mu_product",)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        _construct(self, torch.optim.NAdam, locals())

    def _hyper(self, g):
        return dict(lr=_group_value(g, "lr"), **_betas(g), eps=_group_value(g, "eps"),
                    weight_decay=_group_value(g, "weight_decay"),
                    momentum_decay=_group_value(g, "momentum_decay"),
                    decoupled_weight_decay=g["decoupled_weight_decay"],
                    maximize=g["maximize"])

    def _scalar_start(self, group):
        return (1.0,)

    def _scalar_step(self, group, kwargs, step, values):
        beta1 = check_real("beta1", kwargs["beta1"], low=0.0, high=1.0, high_open=True)
        momentum_decay = check_real("momentum_decay", kwargs["momentum_decay"], low=0.0)
        # torch's mu_product *= mu_t, in the dtype of its tensor
        with np.errstate(over="ignore", invalid="ignore"):
            mu_product = values[0] * nadam_momentum(beta1, momentum_decay, step)
        return dict(mu_product=float(mu_product)), (mu_product,)


class Rprop(_FusedStep, torch.optim.Rprop):
    __doc__ = _doc(torch.optim.Rprop, "rprop_", "``foreach`` and ``capturable`` are")

    _FUNCTIONAL = "rprop_"
    _BUFFERS = (("prev", "pos", _needed_always), ("step_size", "pos", _needed_always))

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        _construct(self, torch.optim.Rprop, locals())

    def _hyper(self, g):
        etas, sizes = g["etas"], g["step_sizes"]
        for key, pair in (("etas", etas), ("step_sizes", sizes)):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"{key} must be a pair of numbers, got {pair!r}")
        return dict(etaminus=_scalar(etas[0], "etas[0]"),
                    etaplus=_scalar(etas[1], "etas[1]"),
                    step_size_min=_scalar(sizes[0], "step_sizes[0]"),
                    step_size_max=_scalar(sizes[1], "step_sizes[1]"),
                    maximize=g["maximize"])

    def _new_buffer(self, name, p, group):
        if name == "step_size":  # torch's: the group's lr
            return _full_like(p, check_real("lr", _group_value(group, "lr")), "lr")
        return super()._new_buffer(name, p, group)


class ASGD(_FusedStep, torch.optim.ASGD):
    __doc__ = _doc(torch.optim.ASGD, "asgd_", "``foreach`` and ``capturable`` are")

    _FUNCTIONAL = "asgd_"
    _BUFFERS = (("ax", "pos", _needed_always),)
    _SCALAR_STATE = ("eta", "mu")

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        _construct(self, torch.optim.ASGD, locals())

    def _hyper(self, g):
        return dict(lambd=_group_value(g, "lambd"), weight_decay=_group_value(g, "weight_decay"),
                    maximize=g["maximize"])

    def _scalar_start(self, group):
        return (check_real("lr", _group_value(group, "lr"), low=0.0), 1.0)

    def _scalar_step(self, group, kwargs, step, values):
        lr = check_real("lr", _group_value(group, "lr"), low=0.0)
        lambd = check_real("lambd", kwargs["lambd"])
        alpha = check_real("alpha", _group_value(group, "alpha"))
        t0 = check_real("t0", _group_value(group, "t0"))
        eta, mu = values
        # after the step torch sets them from the step count, in double, through a tensor
        # of the default dtype (torch.as_tensor), whatever the state tensors' dtype
        rounded = _NUMPY_DTYPES[_scalar_dtype(False)].type
        with np.errstate(over="ignore", invalid="ignore"):
            after = (rounded(asgd_eta(lr, lambd, alpha, step)), rounded(1 / max(1, step - t0)))
        return dict(eta=float(eta), mu=float(mu)), after


class Adafactor(_FusedStep, torch.optim.Adafactor):
    __doc__ = _doc(torch.optim.Adafactor, "adafactor_", "``foreach`` is") + """
    fastoptim: the state is torch's (``step``; ``row_var`` of shape ``(..., R, 1)`` and
    ``col_var`` of shape ``(..., 1, C)`` for params of two or more dimensions, which must
    be C-contiguous; ``variance`` for the others), so state dicts move both ways.  One
    kernel call per group and dtype updates params of both kinds.
    """

    _FUNCTIONAL = "adafactor_"
    _BUFFERS = (("row_var", "pos", _needed_always), ("col_var", "pos", _needed_always),
                ("variance", "pos", _needed_always))
    _STEP_BOUND = ("row_var", "col_var", "variance")
    _FACTORS = ("row_var", "col_var")

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, foreach=None, maximize=False):
        _construct(self, torch.optim.Adafactor, locals())

    def _hyper(self, g):
        eps = g["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"eps must be a pair (eps1 or None, eps2), got {eps!r}")
        eps1 = eps[0]
        if eps1 is None:
            # torch's loop sets eps1 from the first param with a grad and keeps it for
            # the rest of the group, whatever their dtypes
            first = next((p for p in g.get("params", ()) if isinstance(p, torch.Tensor)
                          and p.grad is not None and p.is_floating_point()), None)
            eps1 = None if first is None else torch.finfo(first.dtype).eps
        # a float32 Tensor lr or weight_decay stays float32: adafactor_ computes with it
        # as torch does
        return dict(lr=_group_value(g, "lr", keep_dtype=True),
                    beta2_decay=_group_value(g, "beta2_decay"),
                    eps1=None if eps1 is None else _scalar(eps1, "eps[0]"),
                    eps2=_scalar(eps[1], "eps[1]"),
                    d=_group_value(g, "d"),
                    weight_decay=_group_value(g, "weight_decay", keep_dtype=True),
                    maximize=g["maximize"])

    def _check_param_kind(self, p, label):
        super()._check_param_kind(p, label)
        if p.dim() >= 2 and not p.is_contiguous():
            raise ValueError(f"{label} has {p.dim()} dimensions and is not C-contiguous "
                             f"(strides {tuple(p.stride())}); Adafactor factors its last two "
                             "axes in row-major order (p.data = p.data.contiguous())")

    def _uses_buffer(self, p, name):
        # torch: factored state for a grad of more than one dimension
        return (name in self._FACTORS) == (p.dim() > 1)

    def _buffer_shape(self, p, name):
        shape = tuple(p.shape)
        if name == "row_var":
            return shape[:-1] + (1,)
        if name == "col_var":
            return shape[:-2] + (1, shape[-1])
        return shape

    def _new_buffer(self, name, p, group):
        if name in self._FACTORS:  # torch's p.grad.new_zeros(row_shape / col_shape)
            return torch.zeros(self._buffer_shape(p, name), dtype=p.dtype)
        return super()._new_buffer(name, p, group)


class Muon(_FusedStep, torch.optim.Muon):
    __doc__ = ("torch.optim.Muon with fastoptim's step (``fastoptim.muon_``: the momentum, "
               "the Nesterov blend and the norm in one compiled pass; the Newton-Schulz "
               "products are NumPy's BLAS in the param's dtype, where torch's run in "
               "bfloat16, so the results are not torch's: within bfloat16's precision of "
               "them).  Every param must be 2-D (a ValueError, also from add_param_group).  "
               "The state is torch's, ``momentum_buffer`` only, so state dicts move both "
               "ways.\n\n" + (torch.optim.Muon.__doc__ or ""))

    _FUNCTIONAL = "muon_"
    _BUFFERS = (("momentum_buffer", "pos", _needed_always),)
    _COUNTS_STEPS = False  # torch's Muon keeps no step, and the rule needs none

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5,
                 adjust_lr_fn=None):
        _construct(self, torch.optim.Muon, locals())

    def _hyper(self, g):
        # a float32 Tensor lr or weight_decay stays float32: muon_ computes with it as
        # torch does
        return dict(lr=_group_value(g, "lr", keep_dtype=True),
                    weight_decay=_group_value(g, "weight_decay", keep_dtype=True),
                    momentum=_group_value(g, "momentum"), nesterov=g["nesterov"],
                    ns_coefficients=g["ns_coefficients"], eps=_group_value(g, "eps"),
                    ns_steps=g["ns_steps"], adjust_lr_fn=g["adjust_lr_fn"])

    def _step_kwargs(self, group, step):
        return self._hyper(group)  # muon_ takes no step

    def _check_param_kind(self, p, label):
        super()._check_param_kind(p, label)
        if p.dim() != 2:
            raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter "
                             f"with size: {p.size()} ({label}; optimize it with another "
                             "optimizer, e.g. AdamW)")


# ------------------------------------------------- optimizers torch.optim does not have
class Lion(_FusedStep):
    """Lion (Chen et al. 2023) as ``lion_pytorch.Lion`` (its constructor, group keys and
    state: ``exp_avg`` only, so its state dicts load both ways), with fastoptim's fused
    step (``fastoptim.lion_``)::

        p = p * (1 - lr * wd)     (wd = weight_decay / the constructor's lr if decoupled_weight_decay)
        p = p - lr * sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g

    ``use_triton`` is accepted and changes nothing.  lion-pytorch asserts ``lr > 0`` and
    betas in [0, 1]: a ValueError here.
    """

    _FUNCTIONAL = "lion_"
    _BUFFERS = (("exp_avg", "pos", _needed_always),)
    _COUNTS_STEPS = False  # lion-pytorch keeps no step

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, use_triton=False,
                 decoupled_weight_decay=False):
        if not isinstance(use_triton, (bool, np.bool_)):
            raise TypeError(f"use_triton must be a bool, got {type(use_triton).__name__}")
        if not isinstance(decoupled_weight_decay, (bool, np.bool_)):
            raise TypeError(f"decoupled_weight_decay must be a bool, got "
                            f"{type(decoupled_weight_decay).__name__}")
        if not check_real("lr", _scalar(lr, "lr"), low=0.0) > 0:
            raise ValueError(f"lr must be > 0 (lion-pytorch asserts it), got {lr}")
        # lion-pytorch's attributes: the decay divides by the constructor's lr
        self._init_lr, self.decoupled_wd = lr, bool(decoupled_weight_decay)
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
        self.defaults = {}
        self._check_group_values(defaults)
        torch.optim.Optimizer.__init__(self, params, defaults)
        self._fastoptim_init()

    def __getstate__(self):  # torch's keeps only defaults, state and param_groups
        return {**super().__getstate__(), "_init_lr": self._init_lr,
                "decoupled_wd": self.decoupled_wd}

    def _hyper(self, g):
        weight_decay = _group_value(g, "weight_decay")
        if self.decoupled_wd:
            weight_decay = check_real("weight_decay", weight_decay) / _scalar(self._init_lr, "lr")
        return dict(lr=_group_value(g, "lr"), **_betas(g), weight_decay=weight_decay)


class AdamWScheduleFree(_FusedStep):
    """Schedule-Free AdamW (Defazio et al. 2024) as ``schedulefree.AdamWScheduleFree``
    (its constructor, group keys -- ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr``,
    ``train_mode`` ... -- and state: ``z``, ``exp_avg_sq``), with fastoptim's fused step
    (``fastoptim.adamw_schedule_free_``).  Call ``train()`` before training and
    ``eval()`` before evaluating or saving: the params switch between y, where the
    gradients are taken, and the averaged weights x, as schedulefree's.  ``step`` in eval
    mode is a ValueError (schedulefree: Exception).  Each group's schedule advances once
    per step (also for a group without grads), not when the step is refused.  The grads
    are read, not overwritten (schedulefree divides them in place).  ``foreach`` is
    accepted and changes nothing.
    """

    _FUNCTIONAL = "adamw_schedule_free_"
    _BUFFERS = (("z", "pos", _needed_always), ("exp_avg_sq", "pos", _needed_always))
    _COUNTS_STEPS = False  # the groups count the steps (k)

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0,
                 foreach=hasattr(torch, "_foreach_mul_")):
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps,
                        train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0,
                        weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                        foreach=foreach)
        self.defaults = {}
        self._check_group_values(defaults)
        torch.optim.Optimizer.__init__(self, params, defaults)
        self._fastoptim_init()

    @staticmethod
    def _advance(g):
        """The group's schedule for its next step, as schedulefree computes it: (the
        functional's scalars, the group's values after the step)."""
        for key in ("k", "warmup_steps"):
            v = g[key]
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) \
                    or not 0 <= v < 2 ** 53:
                raise ValueError(f"{key} must be an int >= 0, got {v!r}")
        if not isinstance(g["train_mode"], (bool, np.bool_)):
            raise TypeError(f"train_mode must be a bool, got {type(g['train_mode']).__name__}")
        k, warmup_steps = int(g["k"]), int(g["warmup_steps"])
        beta2 = check_real("beta2", _betas(g)["beta2"], low=0.0, high=1.0)
        r = check_real("r", _group_value(g, "r"))
        power = check_real("weight_lr_power", _group_value(g, "weight_lr_power"))
        sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
        lr = check_real("lr", _group_value(g, "lr"), low=0.0) * sched
        lr_max = max(lr, check_real("lr_max", _group_value(g, "lr_max")))
        with np.errstate(all="ignore"):
            weight = float(np.float64(k + 1) ** r * np.float64(lr_max) ** power)
        weight_sum = check_real("weight_sum", _group_value(g, "weight_sum"), low=0.0) + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        return (dict(lr=lr, ckp1=ckp1, bias_correction2=1 - beta2 ** (k + 1)),
                dict(k=k + 1, scheduled_lr=lr, lr_max=lr_max, weight_sum=weight_sum))

    def _step_kwargs(self, group, step):
        return dict(**self._advance(group)[0], **_betas(group), eps=_group_value(group, "eps"),
                    weight_decay=_group_value(group, "weight_decay"))

    def _hyper(self, g):
        return self._step_kwargs(g, None)

    def _new_buffer(self, name, p, group):
        if name == "z":  # schedulefree's clone of the param
            return torch.clone(p.detach(), memory_format=torch.preserve_format)
        return super()._new_buffer(name, p, group)

    def _step(self, closure=None):
        groups = self.param_groups
        if not groups[0]["train_mode"]:
            raise ValueError("Optimizer was not in train mode when step is called. Please "
                             "insert .train() and .eval() calls on the optimizer. See "
                             "documentation for details.")
        after = [self._advance(g)[1] for g in groups]  # every group checked first
        loss = super()._step(closure)
        for g, values in zip(groups, after):
            g.update(values)
        return loss

    def _switch(self, to_train):
        moves = []  # everything checked before the first param moves
        for gi, g in enumerate(self.param_groups):
            if bool(g["train_mode"]) == to_train:
                continue
            beta1 = check_real("beta1", _betas(g)["beta1"])
            if not to_train and beta1 == 0:
                raise ValueError("eval() needs beta1 > 0: with beta1 = 0 the params are z "
                                 "and the averaged weights cannot be recovered")
            for j, p in enumerate(g["params"]):
                z = self.state[p].get("z")  # (an empty entry made, as schedulefree's)
                if z is None:
                    continue
                if not isinstance(z, torch.Tensor) or z.shape != p.shape or \
                        z.dtype != p.dtype or z.device != p.device:
                    raise ValueError(f"state['z'] of param {j} of group {gi} must be a "
                                     f"tensor shaped like its param ({tuple(p.shape)}, "
                                     f"{p.dtype})")
                moves.append((p, z, 1 - beta1 if to_train else 1 - 1 / beta1))
        with torch.no_grad():
            for p, z, weight in moves:
                p.lerp_(z, weight)
        for g in self.param_groups:
            g["train_mode"] = to_train

    def train(self):
        """Switch the params to y, where the gradients are taken (before training)."""
        self._switch(True)

    def eval(self):
        """Switch the params to x, the averaged weights (before evaluating or saving)."""
        self._switch(False)
