"""Save / load checkpoints (optimizer and scheduler state dicts, model arrays) as .npz.

    fastoptim.save("ckpt.npz", opt=opt.state_dict(), sched=sched.state_dict(), w=w, b=b)
    ck = fastoptim.load("ckpt.npz")      # {"opt": {...}, "sched": {...}, "w": array, "b": array}

Format: a plain ``.npz`` that never needs pickle. Every leaf of the nested structure is
stored as its own array under its path (``"opt/state/0/exp_avg"``); Python scalars are
stored as 0-d arrays. A JSON manifest (entry ``__fastoptim__``, a 0-d unicode array) records
the tree: container types (dict / list / tuple), dict key types (str / int) and the type
tag of each scalar leaf (int, float, bool, None, str, NumPy scalar of a given dtype), so
everything round-trips exactly. Files are read with ``np.load(allow_pickle=False)``;
object arrays are refused on save and on load.

Writes are atomic: the archive goes to a temporary file in the target directory, is
flushed and fsync'ed, then ``os.replace``'d over the target, so an interrupted save leaves
any previous checkpoint intact.
"""

import json
import os
import tempfile

from urllib.parse import quote

import numpy as np

__all__ = ["save", "load"]

_MANIFEST = "__fastoptim__"
_FORMAT = 1


def _escape(key):
    # Zip member names cannot hold every character (a NUL ends the name): keep only
    # [A-Za-z0-9_.~-] and percent-encode the rest, "/" included.
    return quote(key, safe="")


def _encode(obj, path, arrays):
    """Return the manifest node for ``obj``; put its leaves into ``arrays``."""
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if isinstance(k, bool) or not isinstance(k, (str, int, np.integer)):
                raise TypeError(f"{path or '<root>'}: dict keys must be str or int, "
                                f"got {type(k).__name__}")
            kt = "s" if isinstance(k, str) else "i"
            k = k if kt == "s" else int(k)
            sub = f"{path}/{_escape(str(k))}" if path else _escape(str(k))
            items.append([kt, k, _encode(v, sub, arrays)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        return {"t": "list" if isinstance(obj, list) else "tuple",
                "items": [_encode(v, f"{path}/{i}" if path else str(i), arrays)
                          for i, v in enumerate(obj)]}
    if not path:
        raise TypeError("the root must be a dict")
    if path in arrays or path == _MANIFEST:
        raise ValueError(f"two entries map to the same key {path!r}")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{path}: object arrays cannot be saved without pickle")
        arrays[path] = obj
        return {"t": "array", "k": path}
    if obj is None:
        arrays[path] = np.zeros((), np.bool_)
        return {"t": "none", "k": path}
    if isinstance(obj, np.generic):  # first: np.float64 is also a float
        if obj.dtype.hasobject:
            raise TypeError(f"{path}: object scalars cannot be saved without pickle")
        arrays[path] = np.array(obj)
        tag = "npscalar"
    elif isinstance(obj, bool):
        arrays[path] = np.array(obj, np.bool_)
        tag = "bool"
    elif isinstance(obj, int):
        if not -2**63 <= obj < 2**63:
            raise OverflowError(f"{path}: int {obj} does not fit in int64")
        arrays[path] = np.array(obj, np.int64)
        tag = "int"
    elif isinstance(obj, float):
        arrays[path] = np.array(obj, np.float64)
        tag = "float"
    elif isinstance(obj, str):
        arrays[path] = np.array(obj, np.str_)
        tag = "str"
    else:
        raise TypeError(f"{path}: cannot save a {type(obj).__name__} (supported: dict, list, "
                        "tuple, ndarray, int, float, bool, None, str, NumPy scalars)")
    return {"t": tag, "k": path}


def _decode(node, arrays, used):
    t = node["t"]
    if t == "dict":
        return {(k if kt == "s" else int(k)): _decode(v, arrays, used)
                for kt, k, v in node["items"]}
    if t in ("list", "tuple"):
        items = [_decode(v, arrays, used) for v in node["items"]]
        return items if t == "list" else tuple(items)
    key = node["k"]
    if key not in arrays:
        raise ValueError(f"corrupt checkpoint: entry {key!r} is missing")
    used.add(key)
    a = arrays[key]
    if t == "array":
        return a
    if a.ndim != 0:
        raise ValueError(f"corrupt checkpoint: scalar entry {key!r} is not 0-d")
    if t == "none":
        return None
    if t == "bool":
        return bool(a)
    if t == "int":
        return int(a)
    if t == "float":
        return float(a)
    if t == "str":
        return str(a)
    if t == "npscalar":
        return a[()]
    raise ValueError(f"corrupt checkpoint: unknown type tag {t!r}")


def save(path, /, **objects):
    """Write ``objects`` (state dicts, arrays, scalars; nested dict/list/tuple) atomically."""
    if not objects:
        raise ValueError("nothing to save: pass objects as keyword arguments")
    arrays = {}
    manifest = {"format": _FORMAT, "root": _encode(objects, "", arrays)}
    arrays[_MANIFEST] = np.array(json.dumps(manifest, allow_nan=False), np.str_)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def load(path):
    """Read a checkpoint written by :func:`save`; returns the same nested structure."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as npz:
            if _MANIFEST not in npz.files:
                raise ValueError(f"{path} is not a fastoptim checkpoint (no manifest)")
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise ValueError(f"{path} contains object arrays; refusing to unpickle them") from e
        raise
    manifest = arrays.pop(_MANIFEST)
    if manifest.dtype.kind != "U" or manifest.ndim != 0:
        raise ValueError(f"corrupt checkpoint {path}: bad manifest")
    try:
        manifest = json.loads(str(manifest))
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"unsupported checkpoint format {manifest.get('format')!r}")
        used = set()
        out = _decode(manifest["root"], arrays, used)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt checkpoint {path}: {e}") from e
    extra = set(arrays) - used
    if extra:
        raise ValueError(f"corrupt checkpoint {path}: entries not in the manifest: "
                         f"{sorted(extra)[:5]}")
    return out
