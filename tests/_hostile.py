"""Generated hostile-input cases for every public entry point of fastoptim.

The entry points come from the ``__all__`` of every public module (PUBLIC_MODULES):
each function, each class's constructor and each public method.  A *recipe* builds a
fresh, valid call of an entry point; the harness then replaces one argument at a time
(every parameter of the signature, given or defaulted) by each value of a catalogue of
hostile values built from the valid one (None, wrong types, numpy scalars, 0-d, empty,
huge, non-finite, wrong dtype/order/shape, read-only, masked, aliasing another buffer,
odd sequences, tampered nested state, damaged files) and checks the contract:

* the call succeeds, and when the hostile value means the same as the valid one (a
  numpy scalar for a float, a tuple for a list, ...) the arrays end up exactly as the
  valid call leaves them; or
* it raises TypeError/ValueError (or an exception the entry documents, ALLOWED below)
  and every array and attribute reachable from the arguments and the object is
  byte-identical to before the call.

Cases run in child processes (``python _hostile.py ENTRY``, or children forked by
``python _hostile.py --serve``) that print one JSON line per case, so an interpreter
crash is a test failure naming the case that crashed.
"""

import copy
import gc
import importlib
import importlib.util
import inspect
import io
import json
import math
import os
import signal
import sys
import tempfile
import traceback
import warnings
import zipfile

import numpy as np

PUBLIC_MODULES = [
    "fastoptim", "fastoptim.functional", "fastoptim.optim", "fastoptim.lr_scheduler",
    "fastoptim.clip", "fastoptim.checkpoint", "fastoptim.nn", "fastoptim.datasets",
    "fastoptim.model_selection", "fastoptim.ensemble", "fastoptim.plotting", "fastoptim.cli",
]
if importlib.util.find_spec("torch") is not None:  # the optional extra, when installed
    PUBLIC_MODULES.append("fastoptim.torch")
# Public names that are not entry points one can feed hostile input to, and why.
NOT_ENTRY_POINTS = {
    # the test oracle: plain NumPy, unchecked on purpose (README says so)
    "fastoptim.reference",
}
# Abstract bases: their constructor is tried (it must refuse cleanly); their methods are
# covered through every subclass, which is what a user calls.
ABSTRACT_BASES = {"fastoptim.optim.Optimizer", "fastoptim.lr_scheduler.LRScheduler"}
CASE_SECONDS = 20          # a case running longer is reported as a hang
EXIT_ON = ("TypeError", "ValueError")


# --------------------------------------------------------------------------- discovery
def _is_exception_or_warning(obj):
    return inspect.isclass(obj) and issubclass(obj, BaseException)


def discover(modules=None):
    """Every public entry point: {name: (kind, owner, attribute)}.

    kind is "function", "constructor" or "method"; names look like
    "fastoptim.optim.Adam.step" (the class as exported, even when the method is
    inherited, since behaviour depends on the subclass).  `modules`: only these of
    PUBLIC_MODULES (default: all)."""
    entries = {}
    seen_functions = {}
    for modname in (PUBLIC_MODULES if modules is None else modules):
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or _is_exception_or_warning(obj):
                continue
            if inspect.isclass(obj):
                cls_name = f"{obj.__module__}.{obj.__qualname__}"
                if cls_name in entries:
                    continue
                entries[cls_name] = ("constructor", obj, None)
                for attr in ([] if cls_name in ABSTRACT_BASES else dir(obj)):
                    if attr.startswith("_"):
                        continue
                    member = inspect.getattr_static(obj, attr)
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if inspect.isfunction(member):
                        entries[f"{cls_name}.{attr}"] = ("method", obj, attr)
            elif callable(obj):
                key = id(obj)
                if key in seen_functions:
                    continue
                qual = f"{obj.__module__}.{obj.__qualname__}"
                seen_functions[key] = qual
                entries[qual] = ("function", obj, None)
    return entries


# ------------------------------------------------------------------------- fingerprints
def fingerprint(roots):
    """Bytes and values of everything reachable from roots (arrays, containers, object
    attributes), as a list of comparable items."""
    out = []
    seen = set()

    def walk(x, path, depth):
        if depth > 8:
            return
        if type(x).__module__.startswith("torch") and hasattr(x, "untyped_storage"):
            x = _tensor_as_array(x)  # torch tensors (fastoptim.torch): their bytes
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                out.append((path, "objarray", x.shape))
                for i, v in enumerate(x.ravel()[:50]):
                    walk(v, f"{path}[{i}]", depth + 1)
                return
            out.append((path, str(x.dtype), x.shape, x.strides,
                        np.ascontiguousarray(x).view(np.uint8).tobytes()
                        if x.size else b""))
            return
        if isinstance(x, (bool, int, str, bytes, type(None), np.generic)):
            out.append((path, type(x).__name__, repr(x)))
            return
        if isinstance(x, float):
            out.append((path, "float", x.hex() if math.isfinite(x) else repr(x)))
            return
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, dict):
            out.append((path, "dict", len(x)))
            for k in sorted(list(x)[:200], key=repr):  # key order is not state
                walk(x[k], f"{path}[{k!r}]", depth + 1)
        elif isinstance(x, (list, tuple)):
            out.append((path, type(x).__name__, len(x)))
            for i, v in enumerate(x[:200]):
                walk(v, f"{path}[{i}]", depth + 1)
        elif hasattr(x, "__dict__") and not inspect.isclass(x) and not inspect.isroutine(x) \
                and not inspect.ismodule(x):
            for k in sorted(vars(x)):
                if k.startswith("_"):  # scratch buffers and caches, not state a user sees
                    continue
                walk(vars(x)[k], f"{path}.{k}", depth + 1)

    for i, r in enumerate(roots):
        walk(r, f"root{i}", 0)
    return out


def _tensor_as_array(t):
    """A torch tensor's values as an ndarray (its bytes, whatever the dtype)."""
    try:
        t = t.detach().cpu().contiguous()
        if t.dtype.is_floating_point and t.element_size() == 2:  # bfloat16/float16: bits
            import torch
            t = t.view(torch.int16)
        return t.numpy().copy()
    except Exception:  # a meta or sparse tensor: what is printable of it
        return np.array(repr(t))


def arrays_of(fp):
    """The arrays of a fingerprint, without measured timings (they differ run to run)."""
    return [item for item in fp if len(item) == 5 and "time" not in item[0]]


# ----------------------------------------------------------------------- hostile values
class WeirdList(list):
    """A list whose __getitem__ hands out a fresh array each time (a use-after-free probe)."""

    def __getitem__(self, i):
        item = list.__getitem__(self, i)
        return item.copy() if isinstance(item, np.ndarray) else item


class Evil:
    """An object whose every conversion raises something exotic."""

    def __float__(self):
        raise ZeroDivisionError("evil float")

    def __index__(self):
        raise ZeroDivisionError("evil index")

    def __len__(self):
        raise ZeroDivisionError("evil len")

    def __iter__(self):
        raise ZeroDivisionError("evil iter")


class H:
    """One hostile value: how to build it (from the valid value and the other args), a
    label, and whether it means the same as the valid value."""

    def __init__(self, label, build, equivalent=False):
        self.label, self.build, self.equivalent = label, build, equivalent


def _const(label, value, equivalent=False):
    return H(label, lambda v, ctx: copy.copy(value), equivalent)


GENERIC = [
    _const("None", None), H("object()", lambda v, c: object()), _const("str", "fastoptim"),
    _const("bytes", b"x"), _const("True", True), _const("empty list", []),
    _const("empty dict", {}), H("Evil()", lambda v, c: Evil()),
    _const("int -1", -1), _const("int 0", 0), _const("int 2**31", 2 ** 31),
    _const("int 2**63", 2 ** 63), _const("int 10**400", 10 ** 400),
    _const("int -10**400", -10 ** 400), _const("nan", float("nan")),
    _const("inf", float("inf")), _const("-inf", float("-inf")), _const("-0.0", -0.0),
    _const("1e-320", 1e-320), _const("1e308", 1e308), _const("complex", 1 + 1j),
    _const("np.float32 nan", np.float32("nan")), _const("np.int64 -1", np.int64(-1)),
    _const("0-d array", np.array(0.5)), _const("empty array", np.zeros(0)),
    _const("object array", np.array([None, 1], dtype=object)),
]


def _numeric_variants(v):
    out = [H("np.float64(v)", lambda v, c: np.float64(v), True),
           H("np.float32(v)", lambda v, c: np.float32(v)),
           H("0-d array(v)", lambda v, c: np.array(v)),
           H("-v", lambda v, c: -v), H("v*1e300", lambda v, c: v * 1e300)]
    if isinstance(v, int) and not isinstance(v, bool):
        out += [H("np.int64(v)", lambda v, c: np.int64(v), True),
                H("float(v)", lambda v, c: float(v)), H("v+0.5", lambda v, c: v + 0.5),
                H("10**v huge", lambda v, c: 10 ** 30)]
    else:
        out += [H("int(v)", lambda v, c: int(v))]
    return out


def _array_variants(v):
    def other_shape(v, c):
        return np.zeros(v.size + 1, v.dtype)

    def fortran(v, c):
        return np.asfortranarray(v)

    def strided(v, c):
        big = np.zeros((v.size * 2,) if v.ndim <= 1 else v.shape[:-1] + (v.shape[-1] * 2,),
                       v.dtype)
        view = big[..., ::2]
        view[...] = v
        return view

    def readonly(v, c):
        a = v.copy()
        a.flags.writeable = False
        return a

    def misaligned(v, c):
        raw = np.zeros(v.nbytes + 1, np.uint8)
        a = raw[1:].view(v.dtype).reshape(v.shape)
        a[...] = v
        return a

    def alias(v, c):
        # the same memory as another array argument of the call
        others = [a for a in c.get("arrays", []) if a is not v and a.shape == v.shape]
        return others[0] if others else v

    def overlap(v, c):
        others = [a for a in c.get("arrays", []) if a is not v and a.ndim == 1 and a.size > 1
                  and a.dtype == v.dtype and a.flags.c_contiguous]
        if not others or v.ndim != 1:
            return v[::-1]
        base = others[0]
        return np.lib.stride_tricks.as_strided(base[1:], shape=v.shape, strides=base.strides)

    out = [
        H("copy", lambda v, c: v.copy(), True),
        H("float16", lambda v, c: v.astype(np.float16)),
        H("int32", lambda v, c: v.astype(np.int32)),
        H("complex", lambda v, c: v.astype(np.complex128)),
        H("object", lambda v, c: v.astype(object)),
        H("other float", lambda v, c: v.astype(np.float64 if v.dtype == np.float32 else np.float32)),
        H("byteswapped", lambda v, c: v.astype(v.dtype.newbyteorder())),
        H("wrong shape", other_shape), H("fortran", fortran, v.ndim <= 1),
        H("strided view", strided), H("read-only", readonly), H("misaligned", misaligned),
        H("0-d", lambda v, c: np.array(v.ravel()[0] if v.size else 0, v.dtype)),
        H("empty", lambda v, c: v[:0] if v.ndim else v.reshape(1)[:0]),
        H("2-d reshaped", lambda v, c: v.reshape(1, -1)),
        H("nan-filled", lambda v, c: np.full_like(v, np.nan)),
        H("inf-filled", lambda v, c: np.full_like(v, np.inf)),
        H("huge-filled", lambda v, c: np.full_like(v, np.finfo(v.dtype).max)
          if v.dtype.kind == "f" else v.copy()),
        H("masked", lambda v, c: np.ma.masked_array(v.copy(), mask=np.zeros(v.shape, bool))),
        H("matrix", lambda v, c: np.asmatrix(v) if v.ndim <= 2 else v.copy()),
        H("list of floats", lambda v, c: v.tolist()),
        H("aliases another argument", alias), H("overlaps another argument", overlap),
        H("[v]", lambda v, c: [v]),
    ]
    return out


def _sequence_variants(v):
    out = [
        H("tuple(v)", lambda v, c: tuple(v), True),
        H("WeirdList(v)", lambda v, c: WeirdList(v)),
        H("generator", lambda v, c: (x for x in v)),
        H("one short", lambda v, c: list(v)[:-1]),
        H("one more", lambda v, c: list(v) + list(v)[-1:]),
        H("first None", lambda v, c: [None] + list(v)[1:]),
        H("nested", lambda v, c: [list(v)]),
        H("set", lambda v, c: set(range(len(v)))),
        H("dict", lambda v, c: {i: x for i, x in enumerate(v)}),
    ]
    if v and type(v[0]).__module__.startswith("torch"):
        out += _tensor_list_variants()
    if v and isinstance(v[0], np.ndarray):
        out += [H("first float16", lambda v, c: [v[0].astype(np.float16)] + list(v)[1:]),
                H("first read-only", lambda v, c: [_ro(v[0])] + list(v)[1:]),
                H("first repeated", lambda v, c: [v[0]] * len(v)),
                H("first wrong shape", lambda v, c: [np.zeros(v[0].size + 1, v[0].dtype)]
                  + list(v)[1:])]
    return out


def _tensor_list_variants():
    """A list of torch tensors (fastoptim.torch's params) with its first entry spoiled."""
    import torch

    def first(make):
        return lambda v, c: [make(v[0])] + list(v)[1:]

    def view_overlapping(t):
        base = torch.zeros(t.numel() + 1, dtype=t.dtype)
        return base[1:].view(t.shape).requires_grad_()

    return [
        H("first bfloat16", first(lambda t: t.detach().to(torch.bfloat16).requires_grad_())),
        H("first float16", first(lambda t: t.detach().to(torch.float16).requires_grad_())),
        H("first int64", first(lambda t: t.detach().to(torch.int64))),
        H("first complex", first(lambda t: t.detach().to(torch.complex64).requires_grad_())),
        H("first meta", first(lambda t: torch.empty_like(t, device="meta").requires_grad_())),
        H("first non-contiguous", first(
            lambda t: torch.zeros(t.numel() * 2, dtype=t.dtype)[::2].requires_grad_())),
        H("first non-leaf", first(lambda t: t * 2)),
        H("first sparse", first(lambda t: t.detach().to_sparse().requires_grad_())),
        H("first ndarray", first(lambda t: t.detach().numpy().copy())),
        H("first overlapping its own copy", lambda v, c: [view_overlapping(v[0])]
          + list(v)[1:]),
        H("first repeated", lambda v, c: [v[0]] * len(v)),
        H("first a view of the second", lambda v, c: [v[1].detach()[:1].requires_grad_()]
          + list(v)[1:] if len(v) > 1 else list(v)),
    ]


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _nested_variants(v, limit=40):
    """Tampered nested data (state dicts, param groups): one leaf replaced, or one key
    dropped, at a time."""
    leaves, dicts = [], []

    def walk(x, path):
        if isinstance(x, dict):
            dicts.append(path)
            for k in list(x):
                walk(x[k], path + (k,))
        elif isinstance(x, list) and len(x) < 20:
            for i, item in enumerate(x):
                walk(item, path + (i,))
        elif path:
            leaves.append(path)

    walk(v, ())

    def get(root, path):
        for k in path:
            root = root[k]
        return root

    def replace(path, bad):
        def build(v, c):
            root = copy.deepcopy(v)
            get(root, path[:-1])[path[-1]] = copy.copy(bad)
            return root
        return build

    def drop(path):
        def build(v, c):
            root = copy.deepcopy(v)
            d = get(root, path)
            if d:
                d.pop(next(iter(d)))
            return root
        return build

    bad_leaves = [None, "x", -1, 2.5, float("nan"), 10 ** 400, np.zeros(3), [1, 2], True]
    out = [H("deepcopy", lambda v, c: copy.deepcopy(v), True)]
    if isinstance(v, dict):
        out.append(H("extra key", lambda v, c: {**v, "unexpected": 1}))
    out += [H(f"drop first key of {list(p)}", drop(p)) for p in dicts[:limit]]
    for path in leaves[:limit]:
        out += [H(f"leaf {list(path)} = {_short(bad)}", replace(path, bad)) for bad in bad_leaves]
    return out


def _short(x):
    r = repr(x)
    return r if len(r) < 30 else r[:27] + "..."


def _path_variants(v, ctx):
    d = ctx["tmpdir"]

    def damaged(kind):
        def build(v, c):
            src = open(v, "rb").read() if os.path.exists(v) else b""
            dst = os.path.join(d, f"damaged-{kind}.npz")
            if kind == "truncated":
                data = src[: len(src) // 2]
            elif kind == "flipped":
                data = bytearray(src)
                for i in range(0, len(data), 97):
                    data[i] ^= 0x5A
                data = bytes(data)
            elif kind == "empty":
                data = b""
            elif kind == "text":
                data = b"step,lr\n1,0.1\n"
            elif kind == "npy":
                buf = io.BytesIO()
                np.save(buf, np.arange(3.0))
                data = buf.getvalue()
            elif kind == "bomb":
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                    header = io.BytesIO()
                    np.lib.format.write_array_header_1_0(
                        header, {"descr": "<f8", "fortran_order": False, "shape": (2 ** 28,)})
                    z.writestr("a.npy", header.getvalue() + bytes(2 ** 25))
                data = buf.getvalue()
            with open(dst, "wb") as f:
                f.write(data)
            return dst
        return build

    return [
        H("os.fspath object", lambda v, c: __import__("pathlib").Path(v), True),
        H("missing file", lambda v, c: os.path.join(d, "no", "such", "file.npz")),
        H("a directory", lambda v, c: d),
        H("/dev/null", lambda v, c: "/dev/null"),
        H("bytes path", lambda v, c: os.fsencode(v)),
        H("NUL in path", lambda v, c: v + "\0x"),
    ] + [H(f"{k} file", damaged(k)) for k in ("truncated", "flipped", "empty", "text", "npy",
                                                "bomb")]


def hostile_values(value, ctx, param_name):
    """The catalogue for one argument, from its valid value."""
    vals = list(GENERIC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        vals += _numeric_variants(value)
    elif isinstance(value, np.ndarray):
        vals += _array_variants(value)
    elif isinstance(value, (list, tuple)) and not (param_name in ctx.get("path_params", ())):
        vals += _sequence_variants(value)
        if value and isinstance(value[0], dict):
            vals += _nested_variants(value)
    elif isinstance(value, dict):
        vals += _nested_variants(value)
    elif isinstance(value, bool):
        vals += [_const("np.bool_(v)", np.bool_(value), True), _const("int 1", 1)]
    if param_name in ctx.get("path_params", ()):
        vals += _path_variants(value, ctx)
    skip = ctx.get("skip", {}).get(param_name, ())
    return [h for h in vals if h.label not in skip]


# ------------------------------------------------------------------------------ recipes
class Call:
    """A valid call: fn(*args, **kwargs), then `then(result)` when given (constructor
    recipes whose arguments only matter at a later method, like estimators' fit)."""

    def __init__(self, fn, args=(), kwargs=None, then=None, path_params=(), skip=None,
                 allowed=()):
        self.fn, self.args, self.kwargs, self.then = fn, list(args), dict(kwargs or {}), then
        self.path_params, self.skip, self.allowed = tuple(path_params), skip or {}, allowed


def _rng():
    return np.random.default_rng(0)


def _vec(n=6, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


# The template-generated optimizers: state buffers (started positive) and their richest
# options.
ELEMENTWISE_FUNCTIONAL = {
    "adagrad_": (1, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, maximize=True)),
    "lion_": (1, dict(lr=0.01, beta1=0.8, weight_decay=0.1)),
    "adamax_": (2, dict(weight_decay=0.1, maximize=True)),
    "radam_": (2, dict(weight_decay=0.1, decoupled_weight_decay=True)),
    "adadelta_": (2, dict(weight_decay=0.1, maximize=True)),
    "rprop_": (2, dict(etaminus=0.3, step_size_max=1.0, maximize=True)),
    "nadam_": (2, dict(mu_product=0.5, weight_decay=0.1, decoupled_weight_decay=True)),
    "asgd_": (1, dict(eta=0.01, mu=0.5, weight_decay=0.1, maximize=True)),
    "adamw_schedule_free_": (2, dict(ckp1=0.3, lr=0.01, bias_correction2=0.5,
                                     weight_decay=0.1)),
}
# keyword arguments these functions require (besides step)
ELEMENTWISE_REQUIRED = {"nadam_": ("mu_product",), "asgd_": ("eta", "mu"),
                        "adamw_schedule_free_": ("ckp1", "lr", "bias_correction2")}
NO_STEP = {"adamw_schedule_free_"}


def _elementwise_functional_calls(fo, name):
    n_bufs, options = ELEMENTWISE_FUNCTIONAL[name]
    fn = getattr(fo, name)
    step = {} if name in NO_STEP else {"step": 3}
    single = Call(fn, [_vec(6), _vec(6, seed=1)] +
                  [np.abs(_vec(6, seed=2 + k)) for k in range(n_bufs)], dict(options, **step))
    listed = Call(fn, [[_vec(6), _vec(3, seed=5)], [_vec(6, seed=1), _vec(3, seed=6)]] +
                  [[np.abs(_vec(6, seed=2 + k)), np.abs(_vec(3, seed=7 + k))]
                   for k in range(n_bufs)],
                  dict({k: options[k] for k in ELEMENTWISE_REQUIRED.get(name, ())}, **step))
    # compact storage: bfloat16 param and grad with a float32 master, bfloat16 state,
    # stochastic rounding (Schedule-Free takes the step for its bits)
    p32 = _vec(6)
    compact = Call(fn, [_bf16(p32), _bf16(_vec(6, seed=1))] +
                   [_bf16(np.abs(_vec(6, seed=2 + k))) for k in range(n_bufs)],
                   dict(options, step=3, master=p32.copy(), rounding="stochastic", seed=7))
    return [single, listed, compact] + _elementwise_calls_8bit(fn, name, options, step)


def _elementwise_calls_8bit(fn, name, options, step):
    """The same steps with 8-bit state, for the optimizers whose state takes it."""
    from fastoptim import QuantizedState as Q
    from fastoptim._backend import kernels
    from fastoptim.quantized import template_maps
    maps = template_maps(kernels, name[:-1])
    if maps is None:
        return []

    def state(n, seed, signed):
        v = _vec(n, seed=seed)
        if signed is None:  # a buffer kept float (Schedule-Free's z)
            return v
        return Q.from_array(v if signed else np.abs(v), signed=signed)

    required = {k: options[k] for k in ELEMENTWISE_REQUIRED.get(name, ())}
    return [Call(fn, [_vec(300), _vec(300, seed=1)] +
                 [state(300, 2 + k, signed) for k, (_, signed) in enumerate(maps)],
                 dict(options, **step)),
            Call(fn, [[_vec(300), _vec(3, seed=5)], [_vec(300, seed=1), _vec(3, seed=6)]] +
                 [[state(300, 2 + k, signed), state(3, 7 + k, signed)]
                  for k, (_, signed) in enumerate(maps)], dict(required, **step))]


def _functional_calls(fo, name):
    p, g = _vec(6), _vec(6, seed=1)
    if name in ELEMENTWISE_FUNCTIONAL:
        return _elementwise_functional_calls(fo, name)
    if name == "sgd_":
        single = Call(fo.sgd_, [p, g, _vec(6, seed=2)], dict(step=2, lr=0.1, momentum=0.9))
        listed = Call(fo.sgd_, [[p, _vec(3, seed=3)], [g, _vec(3, seed=4)],
                                [_vec(6, seed=2), _vec(3, seed=5)]],
                      dict(step=2, lr=0.1, momentum=0.9, nesterov=True))
    elif name == "rmsprop_":
        single = Call(fo.rmsprop_, [p, g, np.abs(_vec(6, seed=2))],
                      dict(step=1, momentum=0.9, momentum_buffer=_vec(6, seed=3), centered=True,
                           grad_avg=_vec(6, seed=4)))
        listed = Call(fo.rmsprop_, [[p, _vec(3, seed=5)], [g, _vec(3, seed=6)],
                                    [np.abs(_vec(6, seed=2)), np.abs(_vec(3, seed=7))]],
                      dict(step=1, weight_decay=0.1))
    elif name == "adafactor_":
        m, gm = _vec(6, seed=8).reshape(2, 3), _vec(6, seed=9).reshape(2, 3)
        single = Call(fo.adafactor_, [m, gm, np.abs(_vec(2, seed=2)).reshape(2, 1),
                                      np.abs(_vec(3, seed=3)).reshape(1, 3)],
                      dict(step=2, weight_decay=0.1, maximize=True))
        listed = Call(fo.adafactor_, [[m, p], [gm, g], [np.zeros((2, 1), np.float32), None],
                                      [np.zeros((1, 3), np.float32), None],
                                      [None, np.abs(_vec(6, seed=4))]],
                      dict(step=1, eps1=1e-30, d=2.0))
    elif name == "muon_":
        m, gm = _vec(6, seed=8).reshape(2, 3), _vec(6, seed=9).reshape(2, 3)
        single = Call(fo.muon_, [m, gm, _vec(6, seed=2).reshape(2, 3)], dict(lr=0.02))
        listed = Call(fo.muon_, [[m, _vec(4, seed=5).reshape(2, 2)],
                                 [gm, _vec(4, seed=6).reshape(2, 2)],
                                 [np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32)]],
                      dict(nesterov=False, adjust_lr_fn="match_rms_adamw", ns_steps=2))
    else:
        fn = getattr(fo, name)
        single = Call(fn, [p, g, _vec(6, seed=2), np.abs(_vec(6, seed=3))],
                      dict(step=3, amsgrad=True, max_exp_avg_sq=np.abs(_vec(6, seed=4))))
        listed = Call(fn, [[p, _vec(3, seed=5)], [g, _vec(3, seed=6)],
                           [_vec(6, seed=2), _vec(3, seed=7)],
                           [np.abs(_vec(6, seed=3)), np.abs(_vec(3, seed=8))]],
                      dict(step=1, weight_decay=0.1))
    if name in ("adafactor_", "muon_"):  # float32/float64 only: no 16-bit or 8-bit forms
        return [single, listed]
    return [single, listed, _compact_call(fo, name)] + _functional_calls_8bit(fo, name)


def _functional_calls_8bit(fo, name):
    """The same steps with 8-bit state (fastoptim.QuantizedState)."""
    from fastoptim import QuantizedState as Q
    p, g = _vec(300), _vec(300, seed=1)

    def first(n, seed):
        return Q.from_array(_vec(n, seed=seed), signed=True)

    def second(n, seed):
        return Q.from_array(np.abs(_vec(n, seed=seed)), signed=False)

    if name == "sgd_":
        return [Call(fo.sgd_, [p, g, first(300, 2)], dict(step=2, lr=0.1, momentum=0.9)),
                Call(fo.sgd_, [[p, _vec(3, seed=3)], [g, _vec(3, seed=4)],
                               [first(300, 2), first(3, 5)]],
                     dict(step=2, lr=0.1, momentum=0.9, nesterov=True))]
    if name == "rmsprop_":
        return [Call(fo.rmsprop_, [p, g, second(300, 2)],
                     dict(step=1, momentum=0.9, momentum_buffer=first(300, 3), centered=True,
                          grad_avg=first(300, 4)))]
    fn = getattr(fo, name)
    return [Call(fn, [p, g, first(300, 2), second(300, 3)],
                 dict(step=3, amsgrad=True, max_exp_avg_sq=second(300, 4))),
            Call(fn, [[p, _vec(3, seed=5)], [g, _vec(3, seed=6)], [first(300, 2), first(3, 7)],
                      [second(300, 3), second(3, 8)]], dict(step=1, weight_decay=0.1))]


def _bf16(a):
    import ml_dtypes
    return a.astype(ml_dtypes.bfloat16)


def _compact_call(fo, name):
    """bfloat16 param and grad with a float32 master, 16-bit state, stochastic rounding."""
    p32 = _vec(6)
    kw = dict(step=2, master=p32.copy(), rounding="stochastic", seed=7)
    p, g = _bf16(p32), _bf16(_vec(6, seed=1))
    if name == "sgd_":
        return Call(fo.sgd_, [p, g, _bf16(_vec(6, seed=2))], dict(kw, lr=0.1, momentum=0.9))
    if name == "rmsprop_":
        return Call(fo.rmsprop_, [p, g, np.abs(_vec(6, seed=2)).astype(np.float16)],
                    dict(kw, momentum=0.9, momentum_buffer=_bf16(_vec(6, seed=3)),
                         centered=True, grad_avg=_bf16(_vec(6, seed=4)) * 0))
    return Call(getattr(fo, name), [p, g, _bf16(_vec(6, seed=2)), _bf16(np.abs(_vec(6, seed=3)))],
                dict(kw, amsgrad=True, max_exp_avg_sq=_bf16(np.abs(_vec(6, seed=4)))))


def _optimizer(cls, stepped=True, mixed=False, compact=False):
    """An optimizer over two params (float32 and, when mixed, float64; compact: bfloat16
    and float32 params, bfloat16 state, stochastic rounding; compact="int8": 8-bit state
    for both, min_8bit_size=0), stepped once."""
    import fastoptim.optim as fo
    params = [_vec(6, seed=10), _vec(4, np.float64 if mixed else np.float32, seed=11)]
    if cls in (fo.Muon, fo.Adafactor):  # Muon: 2-D only; Adafactor: one factored param
        params = [params[0].reshape(2, 3), params[1].reshape(2, 2) if cls is fo.Muon
                  else params[1]]
    kwargs = {}
    if compact is True:
        params[0] = _bf16(params[0])
    if issubclass(cls, fo.SGD):
        kwargs = dict(lr=0.1, momentum=0.9)
    elif issubclass(cls, fo.RMSprop):
        kwargs = dict(momentum=0.5, centered=True)
    elif issubclass(cls, fo.Adam):
        kwargs = dict(amsgrad=True)
    elif cls is fo.LBFGS:
        kwargs = dict(history_size=3, max_iter=4, line_search_fn="strong_wolfe")
    if compact == "int8":
        kwargs.update(state_dtype="int8", min_8bit_size=0)
    elif compact:
        kwargs.update(state_dtype="bfloat16", rounding="stochastic", seed=3)
    opt = cls(params, **kwargs)
    if cls is fo.AdamWScheduleFree:
        opt.train()  # it steps in train mode only
    if stepped:
        opt.step(_lbfgs_closure(params) if cls is fo.LBFGS else _grads_like(params, seed=12))
    return opt, params, kwargs


def _storages(cls):
    """The compact forms of _optimizer a class takes: 16-bit (compact storage) and 8-bit
    state (the classes whose constructor takes min_8bit_size)."""
    if not cls._COMPACT_STORAGE:
        return (False,)
    if "min_8bit_size" in inspect.signature(cls).parameters:
        return (False, True, "int8")
    return (False, True)


def _lbfgs_closure(params):
    """(loss, grads) of sum((p - 1)**2) at the params' current values."""
    def closure():
        return (float(sum(((p.astype(np.float64) - 1) ** 2).sum() for p in params)),
                [2 * (p - 1) for p in params])
    return closure


def _grads_like(params, seed=20):
    return [_vec(p.size, p.dtype, seed=seed + i).reshape(p.shape) for i, p in enumerate(params)]


def _optimizer_calls(cls, method):
    import fastoptim.optim as fo
    if cls is fo.Optimizer:
        # the abstract base: constructing it directly reaches its abstract hooks
        return [Call(cls, [[_vec(3)], {"lr": 0.1}], allowed=("NotImplementedError",))] \
            if method is None else []
    if method is None:
        return [Call(cls, [params], kwargs) for _, params, kwargs in
                (_optimizer(cls, stepped=False, compact=c) for c in _storages(cls))]
    calls = []
    combos = [(False, False)] if cls is fo.LBFGS else [  # LBFGS: one dtype
        (False, False), (True, False)] + [("int8" == c, c) for c in _storages(cls)[1:]]
    for mixed, compact in combos:
        opt, params, _ = _optimizer(cls, mixed=mixed, compact=compact)
        if method == "step" and cls is fo.LBFGS:
            calls.append(Call(opt.step, [_lbfgs_closure(params)]))
        elif method == "add_param_group" and cls is fo.LBFGS:  # one group only: refused
            calls.append(Call(opt.add_param_group, [{"params": [_vec(5, seed=40)]}],
                              allowed=("ValueError",)))
        elif method == "step":
            calls.append(Call(opt.step, [_grads_like(params)]))
        elif method == "state_dict":
            calls.append(Call(opt.state_dict))
        elif method == "load_state_dict":
            twin, twin_params, _ = _optimizer(cls, mixed=mixed, compact=compact)
            twin.step(_lbfgs_closure(twin_params) if cls is fo.LBFGS
                      else _grads_like(params, seed=30))
            calls.append(Call(opt.load_state_dict, [twin.state_dict()]))
        elif method == "add_param_group":
            new = _vec(6, seed=40).reshape(2, 3) if cls is fo.Muon else _vec(5, seed=40)
            calls.append(Call(opt.add_param_group, [{"params": [new], "lr": 0.01}]))
        elif method == "zero_grad":
            calls.append(Call(opt.zero_grad))
        elif method in ("train", "eval"):  # AdamWScheduleFree's weight switch
            calls.append(Call(getattr(opt, method)))
        else:
            return []
    return calls


def _torch_optimizer(cls, stepped=True, dtype=None, compact=False):
    """A fastoptim.torch optimizer over two tensors in two groups, stepped once, each
    with a grad for the next step.  compact: a bfloat16 and a float16 param (float32
    masters, state in their dtypes), stochastic rounding."""
    import torch
    dtypes = (torch.bfloat16, torch.float16) if compact else (dtype or torch.float32,) * 2
    params = [torch.tensor(_vec(6, seed=10), dtype=dtypes[0], requires_grad=True),
              torch.tensor(_vec(4, seed=11), dtype=dtypes[1], requires_grad=True)]
    kwargs = {"SGD": dict(lr=0.1, momentum=0.9), "RMSprop": dict(momentum=0.5, centered=True),
              "Adam": dict(amsgrad=True), "AdamW": dict(amsgrad=True),
              "Adagrad": dict(lr_decay=0.01, initial_accumulator_value=0.1),
              "Adadelta": dict(weight_decay=0.01), "Adamax": dict(weight_decay=0.01),
              "RAdam": dict(decoupled_weight_decay=True, weight_decay=0.1),
              "NAdam": dict(weight_decay=0.01), "Rprop": dict(etas=(0.4, 1.3)),
              "ASGD": dict(t0=1), "Lion": dict(weight_decay=0.1, decoupled_weight_decay=True),
              "AdamWScheduleFree": dict(warmup_steps=2),
              "Adafactor": dict(weight_decay=0.01), "Muon": dict(momentum=0.9)}[cls.__name__]
    if cls.__name__ in ("Adafactor", "Muon"):  # a matrix (Adafactor: and a vector)
        params[0] = params[0].detach().reshape(2, 3).requires_grad_()
    if cls.__name__ == "Muon":  # 2-D params only
        params[1] = params[1].detach().reshape(2, 2).requires_grad_()
    if compact:
        kwargs = dict(kwargs, rounding="stochastic", seed=3)
        if cls.__name__ == "RMSprop":  # centered: square_avg - grad_avg**2 in float32 (README)
            kwargs["state_dtype"] = "float32"
    opt = cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}], **kwargs)
    if hasattr(opt, "train"):  # schedule-free: steps in train mode
        opt.train()
    for k, p in enumerate(params):
        p.grad = torch.tensor(_vec(p.numel(), seed=12 + k), dtype=p.dtype).reshape(p.shape)
    if stepped:
        opt.step()
    return opt, params, kwargs


def _torch_optimizer_calls(cls, method):
    import torch
    if method is None:
        return [Call(cls, [params], kwargs) for _, params, kwargs in
                (_torch_optimizer(cls, stepped=False, compact=c) for c in _compact_variants(cls))]
    calls = []
    for compact in _compact_variants(cls):
        opt, params, _ = _torch_optimizer(cls, compact=compact)
        if method == "step":
            calls += [Call(opt.step), Call(opt.step, [lambda: 1.0])]
        elif method == "load_state_dict":
            twin, _, _ = _torch_optimizer(cls, dtype=torch.float64, compact=compact)
            twin.step()
            calls.append(Call(opt.load_state_dict, [twin.state_dict()]))
        elif method == "add_param_group":
            new = torch.zeros((5, 1) if cls.__name__ == "Muon" else 5,
                              dtype=torch.bfloat16 if compact else torch.float32,
                              requires_grad=True)
            calls.append(Call(opt.add_param_group, [{"params": [new], "lr": 0.01}]))
        elif method == "profile_hook_step":
            return [Call(cls.profile_hook_step, [lambda *a, **k: None])]
        elif method.startswith("register_"):
            return [Call(getattr(opt, method), [lambda *a: None])]
        elif method in ("state_dict", "zero_grad", "share_memory", "train", "eval"):
            # share_memory: Adagrad's; train/eval: schedule-free's
            calls.append(Call(getattr(opt, method)))
        else:
            return None
    return calls


def _compact_variants(cls):
    """float32 tensors, and 16-bit ones where the class has a compact path."""
    return (False, True) if cls._COMPACT else (False,)


SCHEDULER_ARGS = {
    "StepLR": dict(step_size=2), "ExponentialLR": dict(gamma=0.9),
    "CosineAnnealingLR": dict(T_max=5), "LinearLR": dict(), "MultiStepLR": dict(milestones=[2, 4]),
    "ConstantLR": dict(), "PolynomialLR": dict(), "LambdaLR": dict(lr_lambda=lambda e: 0.9 ** e),
    "MultiplicativeLR": dict(lr_lambda=lambda e: 0.9), "CosineAnnealingWarmRestarts": dict(T_0=3),
    "OneCycleLR": dict(max_lr=0.1, total_steps=20), "CyclicLR": dict(base_lr=0.01, max_lr=0.1),
    "ReduceLROnPlateau": dict(),
}


def _scheduler(cls):
    import fastoptim
    import fastoptim.lr_scheduler as ls
    opt = fastoptim.SGD([_vec(4, seed=50)], lr=0.1, momentum=0.9)
    name = cls.__name__
    if name == "SequentialLR":
        return opt, [opt], dict(schedulers=[ls.ConstantLR(opt, factor=0.5, total_iters=2),
                                            ls.ExponentialLR(opt, gamma=0.9)], milestones=[2])
    if name == "ChainedScheduler":
        return opt, [[ls.ConstantLR(opt, factor=0.5, total_iters=2),
                      ls.ExponentialLR(opt, gamma=0.9)]], dict(optimizer=opt)
    if name == "LRScheduler":
        return None
    return opt, [opt], dict(SCHEDULER_ARGS[name])


def _scheduler_calls(cls, method):
    if cls.__name__ == "LRScheduler":
        # the abstract base: constructing it reaches its abstract get_lr; its methods are
        # covered through every subclass
        if method is not None:
            return []
        import fastoptim
        opt = fastoptim.SGD([_vec(4, seed=50)], lr=0.1)
        return [Call(cls, [opt], allowed=("NotImplementedError",))]
    made = _scheduler(cls)
    opt, args, kwargs = made
    if method is None:
        return [Call(cls, args, kwargs)]
    sched = cls(*args, **kwargs)
    plateau = cls.__name__ == "ReduceLROnPlateau"
    if method == "step":
        return [Call(sched.step, [1.0] if plateau else [])]
    if method == "load_state_dict":
        twin_opt, twin_args, twin_kwargs = _scheduler(cls)
        twin = cls(*twin_args, **twin_kwargs)
        for _ in range(3):
            twin.step(*([1.0] if plateau else []))
        return [Call(sched.load_state_dict, [twin.state_dict()])]
    if method == "is_better":
        return [Call(sched.is_better, [1.0, 2.0])]
    if method == "scale_fn":
        return [Call(sched.scale_fn, [0.5])]
    if method == "get_lr" and cls.__name__ in ("SequentialLR", "ChainedScheduler",
                                               "ReduceLROnPlateau"):
        # as in torch: these compose other schedulers and have no get_lr of their own
        return [Call(sched.get_lr, allowed=("NotImplementedError",))]
    return [Call(getattr(sched, method))]


def _data(n=30, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.arange(n) % classes
    return X, y


def _estimator_calls(cls, method):
    from fastoptim.nn import MLPClassifier
    X, y = _data()
    classifier = issubclass(cls, MLPClassifier)
    if not classifier:
        y = X[:, 0] * 2.0
    ctor = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, grad_accumulation=2,
                step_in_backward=True, kernel_threads=1)
    skip = {"max_iter": ("int 2**31", "int 2**63", "10**v huge"),
            "max_fun": ("int 2**31", "int 2**63", "10**v huge"),
            "n_iter_no_change": ("int 2**31", "int 2**63", "10**v huge", "inf")}
    if method is None:
        # a layer of 2**31 units asks for more memory than there is: MemoryError, as in
        # scikit-learn
        return [Call(cls, [], ctor, then=lambda est: est.fit(X, y), skip=skip,
                     allowed=("MemoryError",)),
                Call(cls, [], dict(ctor, state_dtype="int8", dtype=np.float32),  # 8-bit state
                     then=lambda est: est.fit(X, y), skip=skip, allowed=("MemoryError",))]
    est = cls(**ctor).fit(X, y)
    if method in ("fit", "partial_fit"):
        args = [X, y] + ([np.unique(y)] if method == "partial_fit" and classifier else [])
        if method == "partial_fit" and classifier:
            return [Call(est.partial_fit, [X, y], dict(classes=np.unique(y)))]
        return [Call(getattr(est, method), [X, y])]
    if method == "score":
        return [Call(est.score, [X, y])]
    if method in ("predict", "predict_proba", "predict_log_proba"):
        return [Call(getattr(est, method), [X])]
    if method == "get_params":
        return [Call(est.get_params)]
    if method == "set_params":
        return [Call(est.set_params, [], dict(alpha=0.01))]
    return None


def _mlp_calls(method):
    from fastoptim.nn import MLP
    X, y = _data(d=4)
    if method is None:
        return [Call(MLP, [[4, 5, 3]], dict(seed=0), allowed=("MemoryError",))]
    net = MLP([4, 5, 3], seed=0)
    Y = net.targets(y)
    table = {
        "init_params": Call(net.init_params, [], dict(seed=1)),
        "reserve": Call(net.reserve, [8], allowed=("MemoryError",)),  # rows asked for
        "check_X": Call(net.check_X, [X]),
        "targets": Call(net.targets, [y]),
        "forward": Call(net.forward, [X]),
        "predict": Call(net.predict, [X]),
        "loss": Call(net.loss, [X, Y]),
        "loss_and_grad": Call(net.loss_and_grad, [X, Y]),
        "fit": Call(net.fit, [X, y], dict(epochs=2, batch_size=8, seed=0),
                    skip={"epochs": ("int 2**31", "int 2**63", "10**v huge")}),
    }
    return [table[method]] if method in table else None


def _calls(entry, kind, owner, method, ctx):
    """The valid calls of one entry point (None when no recipe is known)."""
    import fastoptim
    import fastoptim.functional as fo
    import fastoptim.lr_scheduler as ls
    import fastoptim.optim as optim
    from fastoptim import nn
    name = owner.__name__
    if kind == "function":
        if owner.__module__ == "fastoptim.functional":
            return _functional_calls(fo, name)
        table = _function_table(ctx)
        return table.get(name)
    if inspect.isclass(owner) and issubclass(owner, optim.Optimizer):
        return _optimizer_calls(owner, method)
    if owner.__module__ == "fastoptim.torch":
        return _torch_optimizer_calls(owner, method)
    if owner.__module__ == "fastoptim.lr_scheduler":
        return _scheduler_calls(owner, method)
    if owner in (nn.MLPClassifier, nn.MLPRegressor):
        return _estimator_calls(owner, method)
    if owner is nn.MLP:
        return _mlp_calls(method)
    return _class_table(ctx, (name, method))


def _checkpoint_file(ctx):
    import fastoptim
    path = os.path.join(ctx["tmpdir"], "valid.npz")
    if not os.path.exists(path):
        opt, _, _ = _optimizer(fastoptim.Adam)
        fastoptim.save(path, optimizer=opt.state_dict(), epoch=3)
    return path


def _train_call():
    import fastoptim
    from fastoptim.nn import MLP, train
    X, y = _data()
    net = MLP([4, 5, 3], seed=0)
    opt = fastoptim.Adam([net.params_flat])
    return Call(train, [net, X, net.targets(y), opt],
                dict(epochs=2, batch_size=8, seed=0, grad_accumulation=2,
                     step_in_backward=True, kernel_threads=1),
                skip={"epochs": ("int 2**31", "int 2**63", "10**v huge"),
                      "patience": ("int 2**31", "int 2**63", "10**v huge")})


def _function_table(ctx):
    import fastoptim
    from fastoptim import model_selection as ms
    from fastoptim import plotting
    X, y = _data()
    proba = np.full((len(y), 3), 1 / 3)
    out = {
        "clip_grad_norm_": [Call(fastoptim.clip_grad_norm_, [[_vec(5), _vec(3, seed=1)], 1.0])],
        "clip_grad_value_": [Call(fastoptim.clip_grad_value_, [[_vec(5), _vec(3, seed=1)], 0.5])],
        "save": [Call(fastoptim.save, [os.path.join(ctx["tmpdir"], "out.npz")],
                      dict(weights=_vec(4), step=3, groups=[{"lr": 0.1}]), path_params=("path",))],
        "load": [Call(fastoptim.load, [_checkpoint_file(ctx)], path_params=("path",))],
        "set_num_threads": [Call(fastoptim.set_num_threads, [1])],
        "get_num_threads": [Call(fastoptim.get_num_threads)],
        "show_config": [Call(fastoptim.show_config, [], dict(file=io.StringIO()))],
        "zeros_state_like": [Call(fastoptim.zeros_state_like, [_vec(7)], dict(index=2)),
                             Call(fastoptim.zeros_state_like, [_vec(7)],
                                  dict(index=2, dtype=np.float16))],
        "load_digits": [Call(fastoptim.load_digits, [], dict(return_X_y=True))],
        "train_test_split": [Call(fastoptim.train_test_split, [X, y],
                                  dict(test_size=0.3, random_state=0))],
        "train_val_test_split": [Call(fastoptim.train_val_test_split, [X, y],
                                      dict(val_size=0.2, test_size=0.2, random_state=0))],
        "clone": [Call(ms.clone, [fastoptim.MLPClassifier(max_iter=2)], dict(alpha=0.1))],
        "log_loss": [Call(ms.log_loss, [y, proba, np.arange(3)])],
        "mean_squared_error": [Call(ms.mean_squared_error, [X[:, 0], X[:, 1]])],
        "accuracy_score": [Call(ms.accuracy_score, [y, y[::-1].copy()])],
        "r2_score": [Call(ms.r2_score, [X[:, 0], X[:, 1]])],
        "is_classifier": [Call(fastoptim.ensemble.is_classifier, [fastoptim.MLPClassifier()])],
        "rosenbrock": [Call(plotting.rosenbrock, [1.0, 2.0])],
        "rosenbrock_grad": [Call(plotting.rosenbrock_grad, [np.array([1.0, 2.0])])],
        "optimizer_paths": [Call(plotting.optimizer_paths, [], dict(n_steps=20),
                                 skip={"n_steps": ("int 2**31", "int 2**63", "10**v huge")})],
        "have_matplotlib": [Call(plotting.have_matplotlib)],
        "plot_learning_curves": [Call(plotting.plot_learning_curves,
                                      [{"adam": [1.0, 0.5]}, os.path.join(ctx["tmpdir"], "c.png")],
                                      path_params=("path",), allowed=("ImportError",))],
        "plot_rosenbrock_paths": [Call(plotting.plot_rosenbrock_paths,
                                       [plotting.optimizer_paths(n_steps=5),
                                        os.path.join(ctx["tmpdir"], "r.png")],
                                       path_params=("path",), allowed=("ImportError",))],
        "train": [_train_call()],
        "make_optimizer": [Call(fastoptim.nn.make_optimizer, ["adam", [_vec(4)]],
                                dict(lr=0.01))],
        # the CLI reports bad flags as argparse does: a message and SystemExit(2)
        "main": [Call(fastoptim.cli.main, [["bench", "--help"]], allowed=("SystemExit",),
                      # no arguments (None, [], ...) is the whole main job: covered by tests/test_cli.py
                      skip={"argv": ("None", "one short", "empty list", "empty dict",
                                     "empty array")})],
    }
    return out


def _class_table(ctx, key):
    import fastoptim
    from fastoptim import model_selection as ms
    X, y = _data()
    search_args = ([fastoptim.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2)],
                   dict(param_sets=[{"alpha": 1e-4}, {"alpha": 1e-2}], cv=2, n_jobs=1,
                        random_state=0))

    def search():
        return ms.KFoldSearch(*search_args[0], **search_args[1])

    def fitted():
        s = search()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return s.fit(X, y)

    def models():
        return [fastoptim.MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=s)
                .fit(X, y) for s in (0, 1, 2)]

    huge = ("int 2**31", "int 2**63", "10**v huge", "int 10**400")
    table = {
        ("KFold", None): lambda: Call(ms.KFold, [], dict(n_splits=3, random_state=0),
                                      then=lambda k: list(k.split(X, y))),
        ("KFold", "split"): lambda: Call(ms.KFold(3).split, [X, y], then=list),
        ("KFold", "get_n_splits"): lambda: Call(ms.KFold(3).get_n_splits, [X, y]),
        ("StratifiedKFold", None): lambda: Call(ms.StratifiedKFold, [], dict(n_splits=3),
                                                then=lambda k: list(k.split(X, y))),
        ("StratifiedKFold", "split"): lambda: Call(ms.StratifiedKFold(3).split, [X, y],
                                                   then=list),
        ("StratifiedKFold", "get_n_splits"): lambda: Call(ms.StratifiedKFold(3).get_n_splits,
                                                          [X, y]),
        ("KFoldSearch", None): lambda: Call(ms.KFoldSearch, *search_args,
                                            then=lambda s: s.fit(X, y), skip={"n_jobs": huge}),
        ("KFoldSearch", "fit"): lambda: Call(search().fit, [X, y]),
        ("KFoldSearch", "predict"): lambda: Call(fitted().predict, [X]),
        ("KFoldSearch", "predict_proba"): lambda: Call(fitted().predict_proba, [X]),
        ("KFoldSearch", "score"): lambda: Call(fitted().score, [X, y]),
        ("KFoldSearch", "get_params"): lambda: Call(search().get_params),
        ("KFoldSearch", "set_params"): lambda: Call(search().set_params, [], dict(cv=3)),
        ("ParameterGrid", None): lambda: Call(ms.ParameterGrid,
                                              [{"alpha": [1e-4, 1e-3], "lr": [0.1]}], then=list),
        ("VotingEnsemble", None): lambda: Call(fastoptim.VotingEnsemble, [models()],
                                               then=lambda e: e.predict(X)),
        ("VotingEnsemble", "votes"): lambda: Call(fastoptim.VotingEnsemble(models()).votes, [X]),
        ("VotingEnsemble", "predict"): lambda: Call(
            fastoptim.VotingEnsemble(models()).predict, [X]),
        ("VotingEnsemble", "predict_proba"): lambda: Call(
            fastoptim.VotingEnsemble(models()).predict_proba, [X]),
        ("VotingEnsemble", "score"): lambda: Call(fastoptim.VotingEnsemble(models()).score,
                                                  [X, y]),
        ("Bunch", None): lambda: Call(fastoptim.datasets.Bunch, [], dict(a=1)),
        ("History", None): lambda: Call(fastoptim.nn.History),
        ("QuantizedState", None): lambda: Call(
            fastoptim.QuantizedState, [np.full(300, 127, np.uint8), np.ones(2, np.float32), True],
            then=lambda q: q.dequantize()),
        ("QuantizedState", "zeros_like"): lambda: Call(fastoptim.QuantizedState.zeros_like,
                                                       [_vec(300)], dict(signed=False)),
        ("QuantizedState", "from_array"): lambda: Call(fastoptim.QuantizedState.from_array,
                                                       [_vec(300)], dict(signed=True)),
        ("QuantizedState", "dequantize"): lambda: Call(
            fastoptim.QuantizedState.from_array(_vec(300), signed=True).dequantize),
        ("History", "as_dict"): lambda: Call(fastoptim.nn.History().as_dict),
    }
    make = table.get(key)
    return None if make is None else [make()]


# ------------------------------------------------------------------------------- runner
class Hang(BaseException):
    pass


ALWAYS_ALLOWED = ("TypeError", "ValueError", "FloatingPointError", "NotFittedError")
PATH_ERRORS = ("FileNotFoundError", "IsADirectoryError", "NotADirectoryError",
               "PermissionError", "FileExistsError")


def _named(exc, names):
    """Is exc of one of these exception classes, by name (subclasses included)?"""
    return any(b.__name__ in names for b in type(exc).__mro__)


def _targets(call, kind, owner):
    """(label, where, key, valid value) for every parameter of the signature."""
    fn = owner if kind == "constructor" else call.fn
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []
    out = []
    named = {p.name for p in params}
    for i, p in enumerate(params):
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            out += [(k, "kw", k, v) for k, v in call.kwargs.items() if k not in named]
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and i < len(call.args):
            out.append((p.name, "pos", i, call.args[i]))
        elif p.name in call.kwargs:
            out.append((p.name, "kw", p.name, call.kwargs[p.name]))
        elif p.default is not p.empty and p.kind is not p.POSITIONAL_ONLY:
            out.append((p.name, "kw", p.name, p.default))
    return out


def _takes_any_keyword(call, kind, owner):
    fn = owner if kind == "constructor" else call.fn
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _arrays_in(values):
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += [a for a in v if isinstance(a, np.ndarray)]
    return out


def _apply(call, where, key, value):
    args, kwargs = list(call.args), dict(call.kwargs)
    if where == "pos":
        args[key] = value
    else:
        kwargs[key] = value
    return args, kwargs


def _roots(call, args, kwargs, where, key):
    """What a call may change: the bound object, the arguments (the mutated one masked
    when comparing with the valid call)."""
    owner = getattr(call.fn, "__self__", None)
    masked_args = [None if (where == "pos" and i == key) else a for i, a in enumerate(args)]
    masked_kw = {k: v for k, v in kwargs.items() if not (where == "kw" and k == key)}
    return [owner, masked_args, masked_kw]


def _invoke(call, args, kwargs):
    signal.alarm(CASE_SECONDS)
    try:
        result = call.fn(*args, **kwargs)
        if call.then is not None:
            result = call.then(result)
        return result
    finally:
        signal.alarm(0)


def _entry_modules(entry):
    """The public modules to import for one entry: fastoptim.torch (and with it
    torch, ~1.5 s) only for its own entries, which nothing else defines."""
    if entry.startswith("fastoptim.torch."):
        return ["fastoptim.torch"]
    return [m for m in PUBLIC_MODULES if m != "fastoptim.torch"]


def _cases(entry):
    kind, owner, method = discover(_entry_modules(entry))[entry]
    ctx = {"tmpdir": tempfile.mkdtemp(prefix="fastoptim-hostile-")}
    calls = _calls(entry, kind, owner, method, ctx)
    if calls is None:
        return ctx, None
    cases = []
    for v, call in enumerate(calls):
        c = dict(ctx, path_params=call.path_params, skip=call.skip,
                 arrays=_arrays_in(list(call.args) + list(call.kwargs.values())))
        cases.append((v, "(the valid call)", "none", None, 0, "as given"))
        if not _takes_any_keyword(call, kind, owner):
            cases.append((v, "(an extra argument)", "extra", None, 0, "unexpected keyword"))
        for label, where, key, valid in _targets(call, kind, owner):
            for h, hv in enumerate(hostile_values(valid, c, label)):
                cases.append((v, label, where, key, h, hv.label))
    return ctx, cases


#: an entry whose one case kills the interpreter: the harness's own test
CRASH_ENTRY = "_hostile.crash"


def run_entry(entry, start=0, out=sys.stdout):
    if entry == CRASH_ENTRY:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from this crash
        print(json.dumps({"n_cases": 1}), file=out, flush=True)
        print(json.dumps({"start": 0, "case": CRASH_ENTRY}), file=out, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
    warnings.simplefilter("ignore")
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(Hang()))
    import fastoptim
    threads = fastoptim.get_num_threads()
    ctx, cases = _cases(entry)
    kind, owner, method = discover(_entry_modules(entry))[entry]
    if cases is None:
        print(json.dumps({"missing_recipe": entry}), file=out, flush=True)
        return
    print(json.dumps({"n_cases": len(cases)}), file=out, flush=True)
    # The modules imported so far (torch's among them) never become garbage: freezing
    # them keeps each case's gc.collect() from walking their objects (73 ms a case).
    gc.collect()
    gc.freeze()
    baselines = {}
    for n in range(start, len(cases)):
        v, label, where, key, h, hlabel = cases[n]
        desc = f"{entry}[variant {v}] {label} = {hlabel}"
        print(json.dumps({"start": n, "case": desc}), file=out, flush=True)
        status, detail = _run_case(entry, kind, owner, method, ctx, v, label, where, key, h,
                                   baselines)
        fastoptim.set_num_threads(threads)
        gc.collect()
        print(json.dumps({"end": n, "case": desc, "status": status, "detail": detail}),
              file=out, flush=True)


def _fresh(entry, kind, owner, method, ctx, v):
    call = _calls(entry, kind, owner, method, ctx)[v]
    c = dict(ctx, path_params=call.path_params, skip=call.skip,
             arrays=_arrays_in(list(call.args) + list(call.kwargs.values())))
    return call, c


def _run_plain(call, extra):
    """The valid call as given, or with one unknown keyword (must be a TypeError)."""
    kwargs = dict(call.kwargs, fastoptim_no_such_argument=1) if extra else call.kwargs
    roots = _roots(call, call.args, kwargs, "none", None)
    before = fingerprint(roots)
    try:
        _invoke(call, call.args, kwargs)
    except Hang:
        return "fail", f"no answer within {CASE_SECONDS} s"
    except TypeError as e:
        if not extra:
            return "fail", f"the valid call raised TypeError: {e}"
        if fingerprint(roots) != before:
            return "fail", f"rejected an unknown keyword but changed state: {e}"
        return "rejected", str(e)[:200]
    except BaseException as e:
        if _named(e, call.allowed):
            return "rejected", f"{type(e).__name__} (documented for this entry)"
        return "fail", f"raised {type(e).__name__}: {str(e)[:300]}"
    if extra and call.then is None:
        return "fail", "accepted an unknown keyword argument"
    return "accepted", ""


def _run_case(entry, kind, owner, method, ctx, v, label, where, key, h, baselines):
    if (v, where, key) not in baselines:
        call, c = _fresh(entry, kind, owner, method, ctx, v)
        try:
            _invoke(call, call.args, call.kwargs)
        except BaseException as e:  # the recipe itself must be a valid call
            if not _named(e, call.allowed):  # (an abstract base may refuse it)
                return "fail", f"the valid call raised {type(e).__name__}: {e}"
        baselines[(v, where, key)] = arrays_of(fingerprint(
            _roots(call, call.args, call.kwargs, where, key)))
    call, c = _fresh(entry, kind, owner, method, ctx, v)
    if where in ("none", "extra"):
        return _run_plain(call, where == "extra")
    valid = call.args[key] if where == "pos" else call.kwargs.get(key)
    if valid is None and where == "kw" and key not in call.kwargs:
        for t in _targets(call, kind, owner):
            if t[0] == label:
                valid = t[3]
    hv = hostile_values(valid, c, label)[h]
    try:
        value = hv.build(valid, c)
    except Exception as e:  # this value cannot be made from the valid one: nothing to test
        return "skip", f"cannot build: {type(e).__name__}"
    args, kwargs = _apply(call, where, key, value)
    roots = _roots(call, args, kwargs, where, key) + [value]
    before = fingerprint(roots)
    try:
        _invoke(call, args, kwargs)
    except Hang:
        return "fail", f"no answer within {CASE_SECONDS} s"
    except BaseException as e:
        name = type(e).__name__
        allowed = (_named(e, ALWAYS_ALLOWED + tuple(call.allowed))
                   or (name == "ZeroDivisionError" and str(e).startswith("evil"))
                   or (label in call.path_params and _named(e, PATH_ERRORS)))
        if not allowed:
            return "fail", (f"raised {name}: {str(e)[:300]} (expected TypeError/ValueError)\n"
                            + "".join(traceback.format_exception(e)[-3:])[-800:])
        after = fingerprint(roots)
        if after != before:
            changed = next((a[0] for a, b in zip(after, before) if a != b), "(length)")
            return "fail", f"raised {name} but changed {changed}: {str(e)[:200]}"
        return "rejected", f"{name}: {str(e)[:200]}"
    if hv.equivalent:
        got = arrays_of(fingerprint(_roots(call, args, kwargs, where, key)))
        if got != baselines[(v, where, key)]:
            return "fail", "accepted an equivalent value but the result differs from the valid call"
    return "accepted", ""


def count_cases():
    """Entry points and generated cases per public module (README's table)."""
    warnings.simplefilter("ignore")
    per_module = {}
    for entry, (kind, owner, method) in sorted(discover().items()):
        # the public module a name is exported from (fastoptim.nn, not fastoptim.nn._network)
        parts = owner.__module__.split(".")
        while parts[-1].startswith("_"):
            parts.pop()
        module = ".".join(parts)
        _, cases = _cases(entry)
        n_entries, n_cases = per_module.get(module, (0, 0))
        per_module[module] = (n_entries + 1, n_cases + len(cases or ()))
    for module, (n_entries, n_cases) in per_module.items():
        print(f"| `{module}` | {n_entries} | {n_cases:,} |")
    print(f"| all | {sum(e for e, _ in per_module.values())} | "
          f"{sum(c for _, c in per_module.values()):,} |")


ENTRY_SECONDS = 1800       # an entry's forked child still running after this is killed


def serve(results):
    """Fork server for the harness (tests/test_hostile_inputs.py): import every public
    module once, print {"ready": ...}, then for each request line {"entry": E, "start": S}
    on stdin run run_entry(E, S) in a forked child (its JSON lines go to `results`) and
    print {"exit": status} (negative: the signal that killed it).  A new process pays
    ~5 s to import torch and torch._dynamo for each fastoptim.torch entry; a fork pays
    milliseconds.
    Only imports happen before a fork: no kernel has run, so OpenMP has no thread pool
    yet for the fork to lose (NumPy's OpenBLAS restarts its own after a fork)."""
    warnings.simplefilter("ignore")
    for modules in ([m for m in PUBLIC_MODULES if m != "fastoptim.torch"],
                    ["fastoptim.torch"] if "fastoptim.torch" in PUBLIC_MODULES else []):
        discover(modules)  # imports them, and the discovery's own imports
    if "fastoptim.torch" in PUBLIC_MODULES:
        # torch.optim.Optimizer's first add_param_group imports torch._dynamo (~2.6 s):
        # once here rather than in every child that builds an optimizer
        import torch._dynamo  # noqa: F401
    print(json.dumps({"ready": os.getpid()}), file=results, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                run_entry(request["entry"], request["start"], out=results)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                results.flush()
                sys.stderr.flush()
                os._exit(code)
        signal.signal(signal.SIGALRM, lambda *a: os.kill(pid, signal.SIGKILL))
        signal.alarm(ENTRY_SECONDS)
        _, status = os.waitpid(pid, 0)
        signal.alarm(0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), file=results,
              flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--count":
        count_cases()
        sys.exit(0)
    # results go to the original stdout; whatever the calls print goes to stderr
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if sys.argv[1] == "--serve":
        serve(results)
    else:
        run_entry(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0, out=results)
