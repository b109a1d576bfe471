"""Save / load checkpoints (optimizer and scheduler state dicts, model arrays) as .npz.

    fastoptim.save("ckpt.npz", opt=opt.state_dict(), sched=sched.state_dict(), w=w, b=b)
    ck = fastoptim.load("ckpt.npz")      # {"opt": {...}, "sched": {...}, "w": array, "b": array}

Format: a plain ``.npz`` (an uncompressed zip of ``.npy`` files) that never needs
pickle. Every leaf of the nested structure is stored as its own array under its path
(``"opt/state/0/exp_avg"``, keys percent-encoded); Python scalars are stored as 0-d
arrays. A JSON manifest (entry ``__fastoptim__``, a 0-d unicode array) records the tree:
container types (dict / list / tuple), dict key types (str / int) and the type tag of
each scalar leaf (int, float, bool, None, str, NumPy scalar of a given dtype), so
everything round-trips exactly.

Loading treats the file as untrusted: before any array is read, the manifest must name
exactly the entries in the archive, and every entry's declared size (zip directory and
``.npy`` header) must agree with its dtype and shape and stay within ``max_bytes``. A
leaf whose stored dtype does not match its tag (an int stored as 2.5) is refused, and
object arrays are never unpickled. Anything malformed raises ValueError.

Writes are atomic: the archive goes to a temporary file in the target directory, is
flushed and fsync'ed, then ``os.replace``'d over the target, so an interrupted save leaves
any previous checkpoint intact. The temporary name carries the host and process id of
the writer; a later save to the same target removes temporary files whose writer on
this host is gone (a save killed mid-write).
"""

import json
import os
import re
import socket
import tempfile
import zipfile
import zlib

from urllib.parse import quote

import numpy as np

__all__ = ["save", "load"]

_MANIFEST = "__fastoptim__"
_FORMAT = 1
_MAX_DEPTH = 100          # nesting levels of dicts / lists / tuples
_MAX_NAME_BYTES = 0xFFFF  # a zip member name holds at most 65,535 bytes
_TMP_SUFFIX = ".fastoptim-tmp"


def _escape(key):
    # Zip member names cannot hold every character (a NUL ends the name): keep only
    # [A-Za-z0-9_.~-] and percent-encode the rest, "/" included.
    return quote(key, safe="")


def _where(path):
    return repr(path) if len(path) <= 60 else repr(path[:57] + "...")


# --------------------------------------------------------------------------- save
def _encode(obj, path, arrays, depth):
    """Return the manifest node for ``obj``; put its leaves into ``arrays``."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{_where(path)}: nested more than {_MAX_DEPTH} levels deep "
                         "(or a container holds itself)")
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (str, int, np.integer)):
                raise TypeError(f"{_where(path or '<root>')}: dict keys must be str or int, "
                                f"got {type(k).__name__}")
            kt = "s" if isinstance(k, str) else "i"
            if kt == "i":
                k = int(k)
                if not -2**63 <= k < 2**63:
                    raise ValueError(f"{_where(path or '<root>')}: int key {k} does not fit "
                                     "in int64")
            sub = _escape(str(k))
            sub = f"{path}/{sub}" if depth else sub
            items.append([kt, k, _encode(v, sub, arrays, depth + 1)])
        return {"t": "dict", "items": items}
    if isinstance(obj, (list, tuple)):
        return {"t": "list" if isinstance(obj, list) else "tuple",
                "items": [_encode(v, f"{path}/{i}" if depth else str(i), arrays, depth + 1)
                          for i, v in enumerate(obj)]}
    if not depth:
        raise TypeError("the root must be a dict")
    if len(path) + len(".npy") > _MAX_NAME_BYTES:
        raise ValueError(f"{_where(path)}: key path too long ({len(path):,} characters after "
                         f"percent-encoding; a checkpoint entry name holds at most "
                         f"{_MAX_NAME_BYTES - 4:,})")
    if path == _MANIFEST:
        raise ValueError(f"the top-level key {_MANIFEST!r} is reserved for the manifest")
    if path in arrays:
        raise ValueError(f"two entries map to the same key {_where(path)} "
                         "(an int key and the str of it in one dict)")
    if isinstance(obj, np.ndarray):
        if isinstance(obj, np.ma.MaskedArray):
            raise TypeError(f"{_where(path)}: masked arrays cannot be saved (the mask would "
                            "be lost); save .filled(...) or the data and the mask separately")
        a = np.asarray(obj)
        if a.dtype.name in _BITS_DTYPES and a.dtype.kind == "V" and a.dtype.isnative:
            # ml_dtypes' bfloat16: .npy would store it as raw void; store its bits and
            # name the dtype in the manifest
            arrays[path] = a.view(_BITS_DTYPES[a.dtype.name][0])
            return {"t": "array", "k": path, "d": a.dtype.name}
        arrays[path] = _storable(a, path)
        return {"t": "array", "k": path}
    if obj is None:
        arrays[path] = np.zeros((), np.bool_)
        return {"t": "none", "k": path}
    if isinstance(obj, np.generic):  # first: np.float64 is also a float
        arrays[path] = _storable(np.array(obj), path)
        tag = "npscalar"
    elif isinstance(obj, bool):
        arrays[path] = np.array(obj, np.bool_)
        tag = "bool"
    elif isinstance(obj, int):
        if not -2**63 <= obj < 2**63:
            raise ValueError(f"{_where(path)}: int {obj} does not fit in int64")
        arrays[path] = np.array(obj, np.int64)
        tag = "int"
    elif isinstance(obj, float):
        arrays[path] = np.array(obj, np.float64)
        tag = "float"
    elif isinstance(obj, str):
        arrays[path] = np.array(obj, np.str_)
        tag = "str"
    else:
        raise TypeError(f"{_where(path)}: cannot save a {type(obj).__name__} (supported: dict, "
                        "list, tuple, ndarray, int, float, bool, None, str, NumPy scalars)")
    return {"t": tag, "k": path}


def _storable(a, path):
    if a.dtype.hasobject:
        raise TypeError(f"{_where(path)}: object arrays cannot be saved without pickle")
    try:  # .npy versions 1 and 2 need a latin-1 header (version 3 is not read back)
        repr(np.lib.format.dtype_to_descr(a.dtype)).encode("latin1")
    except UnicodeEncodeError:
        raise TypeError(f"{_where(path)}: structured dtype field names must be latin-1") \
            from None
    return a


def _tmp_tag():
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"
    return host, os.getpid()


def _tmp_prefix(path):
    # The target's name is cut short so that the temporary name fits in 255 bytes.
    return f".{os.path.basename(path)[:100]}."


def _writer_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _remove_stale_tmp_files(path):
    """Delete temporary files of earlier saves to ``path`` that were killed mid-write.

    A temporary name is ``.<target>.<host>.<pid>.<random>.fastoptim-tmp``; only files
    written on this host by a process that no longer exists are removed, so a save
    running concurrently (here or on another host sharing the directory) is left alone.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _tmp_prefix(path)
    host, _ = _tmp_tag()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        parts = name[len(prefix):-len(_TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _writer_gone(int(parts[1])):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _write_npz(f, arrays):
    """An uncompressed zip of ``<name>.npy`` members, as ``np.savez`` writes it (but any
    name is allowed: ``np.savez(f, **arrays)`` would take ``file``/``allow_pickle`` as
    its own arguments)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def save(path, /, **objects):
    """Write ``objects`` (state dicts, arrays, scalars; nested dict/list/tuple) atomically.

    Any keyword names the objects (``save(p, file=..., allow_pickle=...)`` works).
    Raises TypeError for what cannot be stored without pickle (sets, objects, object or
    masked arrays) and ValueError for ints or int keys beyond int64, nesting deeper than
    100 levels, key paths longer than a zip entry name, and colliding keys; nothing is
    written then.
    """
    if not objects:
        raise ValueError("nothing to save: pass objects as keyword arguments")
    arrays = {}
    manifest = {"format": _FORMAT, "root": _encode(objects, "", arrays, 0)}
    arrays[_MANIFEST] = np.array(json.dumps(manifest, allow_nan=False), np.str_)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_tmp_files(path)
    host, pid = _tmp_tag()
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{host}.{pid}.",
                               suffix=_TMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
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


# --------------------------------------------------------------------------- load
class _Corrupt(ValueError):
    """The archive is damaged or tampered with."""


class _NotCheckpoint(ValueError):
    """A valid archive, but not one written by save()."""


def _read_npy_header(f):
    """(shape, fortran_order, dtype) of a .npy stream, checked; the stream is left at
    the start of the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise _Corrupt(f".npy format version {version[0]}.{version[1]} is not supported")
    count = 1
    for d in shape:
        if d < 0:
            raise _Corrupt(f"negative dimension in shape {shape}")
        count *= d
    if count >= 2**62:
        raise _Corrupt(f"shape {shape} is too large")
    return shape, fortran, dtype


def _nbytes(shape, dtype):
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def _check_entry(zf, info, budget):
    """Check one member's .npy header against its declared size; return its data size."""
    with zf.open(info) as f:
        shape, _, dtype = _read_npy_header(f)
        header_len = f.tell()
    name = info.filename[:-4]
    if dtype.hasobject:
        raise _Corrupt(f"entry {_where(name)} holds object arrays; refusing to unpickle them")
    nbytes = _nbytes(shape, dtype)
    if nbytes > budget:
        raise _Corrupt(f"entry {_where(name)} declares {nbytes:,} bytes, over the max_bytes "
                       f"limit ({budget:,} bytes left)")
    if header_len + nbytes != info.file_size:
        raise _Corrupt(f"entry {_where(name)}: shape {shape} and dtype {dtype} need "
                       f"{header_len + nbytes:,} bytes, the archive declares "
                       f"{info.file_size:,}")
    return nbytes


def _read_entry(zf, info):
    with zf.open(info) as f:
        a = np.lib.format.read_array(f, allow_pickle=False)
        if f.read(1):  # reaching the end also checks the CRC
            raise _Corrupt(f"entry {_where(info.filename[:-4])} has trailing data")
    return a


def _manifest_keys(node, keys, depth=0):
    """Validate the manifest tree's shape; collect the entry names it references."""
    if depth > _MAX_DEPTH:
        raise _Corrupt(f"the manifest is nested more than {_MAX_DEPTH} levels deep")
    if not isinstance(node, dict) or not isinstance(node.get("t"), str):
        raise _Corrupt("malformed manifest node")
    t = node["t"]
    if t in ("dict", "list", "tuple"):
        items = node.get("items")
        if not isinstance(items, list):
            raise _Corrupt(f"malformed {t} node in the manifest")
        seen = set()
        for item in items:
            if t == "dict":
                if not (isinstance(item, list) and len(item) == 3
                        and ((item[0] == "s" and isinstance(item[1], str))
                             or (item[0] == "i" and type(item[1]) is int))):
                    raise _Corrupt("malformed dict item in the manifest")
                if item[1] in seen:
                    raise _Corrupt(f"dict key {item[1]!r} repeated in the manifest")
                seen.add(item[1])
                item = item[2]
            _manifest_keys(item, keys, depth + 1)
        return
    key = node.get("k")
    if "d" in node and (t != "array" or not isinstance(node["d"], str)
                        or node["d"] not in _BITS_DTYPES):
        raise _Corrupt(f"unknown array dtype tag {node['d']!r}"[:80])
    if t not in _LEAF_KINDS or not isinstance(key, str):
        raise _Corrupt(f"unknown type tag {t!r}" if t not in _LEAF_KINDS
                       else "malformed leaf node in the manifest")
    if key in keys or key == _MANIFEST:
        raise _Corrupt(f"entry {_where(key)} is referenced twice")
    keys.add(key)


# Array dtypes stored as the bits of another dtype (name -> bits dtype, loader).
def _bfloat16():
    import ml_dtypes
    return ml_dtypes.bfloat16


_BITS_DTYPES = {"bfloat16": (np.dtype(np.uint16), _bfloat16)}

# The dtype kinds a scalar leaf may be stored as (None = any non-object dtype).
_LEAF_KINDS = {"array": None, "npscalar": None, "none": "b", "bool": "b", "int": "iu",
               "float": "f", "str": "U"}
_KIND_NAMES = {"b": "a bool", "iu": "an integer", "f": "a float", "U": "a str"}


def _decode(node, arrays):
    t = node["t"]
    if t == "dict":
        return {k: _decode(v, arrays) for _, k, v in node["items"]}
    if t in ("list", "tuple"):
        items = [_decode(v, arrays) for v in node["items"]]
        return items if t == "list" else tuple(items)
    key = node["k"]
    a = arrays[key]
    if t == "array":
        if "d" in node:
            bits, loader = _BITS_DTYPES[node["d"]]
            if a.dtype != bits:
                raise _Corrupt(f"{node['d']} entry {_where(key)} is stored as {a.dtype}, "
                               f"not as its bits ({bits})")
            return a.view(loader())
        return a
    kinds = _LEAF_KINDS[t]
    if a.ndim != 0:
        raise _Corrupt(f"scalar entry {_where(key)} is not 0-d (shape {a.shape})")
    if kinds is not None and a.dtype.kind not in kinds:
        raise _Corrupt(f"{t} entry {_where(key)} is stored as {a.dtype} "
                       f"({repr(a.item())[:40]}), not as {_KIND_NAMES[kinds]}")
    if t == "npscalar":
        return a[()]
    return {"none": lambda v: None, "bool": bool, "int": int, "float": float,
            "str": str}[t](a[()])


def load(path, *, max_bytes=None):
    """Read a checkpoint written by :func:`save`; returns the same nested structure.

    ``max_bytes`` caps the total size of the arrays the file may inflate to; it is
    checked against the declared sizes before anything is decompressed. The default
    (None) is the file's own size: :func:`save` stores arrays uncompressed, so a genuine
    checkpoint never exceeds it. Pass a number to read an archive that was recompressed.

    Raises ValueError for anything that is not an intact checkpoint (not a zip, truncated,
    corrupted, object arrays, tampered manifest, over the size limit); OSError only for
    the file system (missing file, permissions).
    """
    if max_bytes is not None and (isinstance(max_bytes, bool)
                                  or not isinstance(max_bytes, (int, np.integer))
                                  or max_bytes < 0):
        raise TypeError(f"max_bytes must be None or an int >= 0, got {max_bytes!r}")
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        limit = size if max_bytes is None else int(max_bytes)
        try:
            return _load(f, size, limit)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error,
                NotImplementedError) as e:  # the last: zip features zipfile lacks
            raise ValueError(f"{path} is not a valid fastoptim checkpoint (damaged or not "
                             f"a zip archive: {e})") from None
        except _NotCheckpoint as e:
            raise ValueError(f"{path} is not a fastoptim checkpoint ({e})") from None
        except _Corrupt as e:
            raise ValueError(f"corrupt checkpoint {path}: {e}") from None
        except ValueError as e:  # from NumPy's .npy parser
            raise ValueError(f"corrupt checkpoint {path}: {e}") from None


def _load(f, size, limit):
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        members = {}
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise _Corrupt(f"unexpected archive entry {_where(info.filename)}")
            if not 0 <= info.header_offset < size:
                raise _Corrupt(f"entry {_where(info.filename)} points outside the file")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) \
                    or info.flag_bits & 0x1:
                raise _Corrupt(f"entry {_where(info.filename)} is encrypted or compressed "
                               "with an unsupported method")
            name = info.filename[:-4]
            if name in members:
                raise _Corrupt(f"entry {_where(name)} appears twice")
            members[name] = info
        if _MANIFEST not in members:
            raise _NotCheckpoint("no manifest")
        declared = sum(info.file_size for info in infos)
        if declared > limit:
            raise _Corrupt(f"the archive declares {declared:,} bytes of data, over the "
                           f"max_bytes limit of {limit:,} (pass max_bytes= to allow more)")

        info = members.pop(_MANIFEST)
        budget = limit - _check_entry(zf, info, limit)
        manifest = _read_entry(zf, info)
        if manifest.dtype.kind != "U" or manifest.ndim != 0:
            raise _Corrupt("bad manifest")
        try:
            manifest = json.loads(str(manifest))
        except RecursionError:
            raise _Corrupt("the manifest is nested too deeply") from None
        except json.JSONDecodeError as e:
            raise _Corrupt(f"the manifest is not JSON: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise _Corrupt(f"unsupported checkpoint format {fmt!r}")
        root = manifest.get("root")
        if not (isinstance(root, dict) and root.get("t") == "dict"):
            raise _Corrupt("the root is not a dict")
        keys = set()
        _manifest_keys(root, keys)
        missing = keys - set(members)
        if missing:
            raise _Corrupt(f"entry {_where(sorted(missing)[0])} is missing")
        extra = set(members) - keys
        if extra:
            raise _Corrupt(f"entries not in the manifest: {sorted(extra)[:5]}")

        for info in members.values():  # every size before any data is read
            budget -= _check_entry(zf, info, budget)
        arrays = {name: _read_entry(zf, info) for name, info in members.items()}
    return _decode(root, arrays)
