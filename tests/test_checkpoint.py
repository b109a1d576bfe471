"""State dicts, save/load (.npz without pickle, atomic) and bit-exact resume."""

import os
import zipfile

import numpy as np
import pytest

import fastoptim
import fastoptim.checkpoint as ckpt
from fastoptim.checkpoint import load, save
from fastoptim.lr_scheduler import CosineAnnealingLR, LinearLR, ReduceLROnPlateau, SequentialLR
from fastoptim.optim import SGD, Adam, AdamW, Momentum, RMSprop

# Every optimizer and option set; the second group overrides some options.
RESUME_CASES = [
    (SGD, dict(lr=0.1), dict(lr=0.05)),
    (SGD, dict(lr=0.05, momentum=0.9), dict(nesterov=True)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.4, weight_decay=0.01), dict(maximize=True)),
    (Momentum, dict(lr=0.02, nesterov=True, weight_decay=0.1), dict(momentum=0.5)),
    (RMSprop, dict(lr=0.01), dict(centered=True)),
    (RMSprop, dict(lr=0.01, momentum=0.8, weight_decay=0.05), dict(centered=True, maximize=True)),
    (Adam, dict(lr=0.01), dict(amsgrad=True)),
    (Adam, dict(lr=0.01, weight_decay=0.1, maximize=True), dict(betas=(0.5, 0.9))),
    (Adam, dict(lr=0.01, amsgrad=True, eps=1e-5), dict(decoupled_weight_decay=True,
                                                      weight_decay=0.2)),
    (AdamW, dict(lr=0.01), dict(amsgrad=True, weight_decay=0.0)),
    (AdamW, dict(lr=0.01, amsgrad=True, maximize=True), dict(weight_decay=0.3)),
]
RESUME_IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(RESUME_CASES)]


def model(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in [(4, 3), (3,), (2, 2, 2), (0,), (5,)]]


def grads_for(step, params, dtype):
    rng = np.random.default_rng(1000 + step)  # the same grads in every run
    return [rng.standard_normal(p.shape).astype(dtype) for p in params]


def build(cls, kw, kw2, params):
    opt = cls([dict(params=params[:2]), dict(params=params[2:], **kw2)], **kw)
    warm = LinearLR(opt, start_factor=0.25, total_iters=4)
    sched = SequentialLR(opt, [warm, CosineAnnealingLR(opt, T_max=20, eta_min=1e-4)], [4])
    return opt, sched


def train(opt, sched, params, dtype, steps):
    for t in steps:
        opt.step(grads_for(t, params, dtype))
        sched.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw,kw2", RESUME_CASES, ids=RESUME_IDS)
def test_resume_is_bit_exact(cls, kw, kw2, dtype, tmp_path):
    n, k = 30, 11
    full = model(dtype)
    opt, sched = build(cls, kw, kw2, full)
    train(opt, sched, full, dtype, range(n))

    params = model(dtype)
    opt1, sched1 = build(cls, kw, kw2, params)
    train(opt1, sched1, params, dtype, range(k))
    path = tmp_path / "run.npz"
    save(path, opt=opt1.state_dict(), sched=sched1.state_dict(), params=params)
    del opt1, sched1

    ck = load(path)
    fresh = model(dtype, seed=99)  # different values: everything must come from the file
    for p, saved in zip(fresh, ck["params"]):
        p[...] = saved
    opt2, sched2 = build(cls, kw, kw2, fresh)
    opt2.load_state_dict(ck["opt"])
    sched2.load_state_dict(ck["sched"])
    train(opt2, sched2, fresh, dtype, range(k, n))

    for p, q in zip(fresh, full):
        assert p.dtype == dtype
        assert np.array_equal(p, q)
    assert opt2.state.keys() == opt.state.keys()
    for i, st in opt.state.items():
        assert opt2.state[i].keys() == st.keys()
        for name, v in st.items():
            assert np.array_equal(opt2.state[i][name], v), (i, name)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert sched2.state_dict() == sched.state_dict()


def test_resume_with_plateau_scheduler(tmp_path):
    metric = [1.0, 0.9, 0.95, 0.97, 0.96, 0.99, 0.98, 0.97, 1.0, 1.1, 1.2, 0.99]
    full = model(np.float64)
    opt = Adam(full, lr=0.1)
    sched = ReduceLROnPlateau(opt, patience=1)
    for t, m in enumerate(metric):
        opt.step(grads_for(t, full, np.float64))
        sched.step(m)
    params = model(np.float64)
    opt1 = Adam(params, lr=0.1)
    sched1 = ReduceLROnPlateau(opt1, patience=1)
    for t, m in enumerate(metric[:5]):
        opt1.step(grads_for(t, params, np.float64))
        sched1.step(m)
    save(tmp_path / "c.npz", opt=opt1.state_dict(), sched=sched1.state_dict(), params=params)
    ck = load(tmp_path / "c.npz")
    fresh = [p.copy() for p in ck["params"]]
    opt2 = Adam(fresh, lr=0.1)
    sched2 = ReduceLROnPlateau(opt2, patience=1)
    opt2.load_state_dict(ck["opt"])
    sched2.load_state_dict(ck["sched"])
    for t, m in enumerate(metric[5:], start=5):
        opt2.step(grads_for(t, fresh, np.float64))
        sched2.step(m)
    assert all(np.array_equal(p, q) for p, q in zip(fresh, full))
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] < 0.1


# -------------------------------------------------------------- save / load
def test_round_trip_types_exactly(tmp_path):
    obj = dict(
        ints=[0, -1, 2**62, True, False],
        floats=(0.1, -0.0, float("inf"), 1e-310, 2.0),
        none=None, s="héllo/wörld", empty_s="", empty_list=[], empty_tuple=(), empty_dict={},
        nested={0: {"a/b": [1, (2, 3.5)], "%2F": "x"}, 7: None, "8": "str key",
                "0": {"z": 1}},
        np_scalars=[np.float32(0.1), np.int16(-3), np.bool_(True), np.float64(2.5)],
        arrays=[np.arange(6, dtype=np.int32).reshape(2, 3), np.zeros((0, 4)),
                np.array(3.5), np.array([True, False]), np.array(["ab", "c"]),
                np.array([1 + 2j]), np.linspace(0, 1, 5, dtype=np.float32)[::2]],
    )
    save(tmp_path / "x.npz", obj=obj, w=np.ones(3))
    back = load(tmp_path / "x.npz")
    assert back.keys() == {"obj", "w"}
    assert np.array_equal(back["w"], np.ones(3))
    b = back["obj"]

    def same(x, y):
        assert type(x) is type(y), (x, y)
        if isinstance(x, dict):
            assert list(x) == list(y)
            for k in x:
                same(x[k], y[k])
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y)
            for u, v in zip(x, y):
                same(u, v)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        elif isinstance(x, np.generic):
            assert x.dtype == y.dtype and x == y
        elif isinstance(x, float):
            assert x == y and np.signbit(x) == np.signbit(y)
        else:
            assert x == y

    same(obj, b)


def test_file_is_plain_npz_with_path_keys(tmp_path):
    p = model(np.float32)
    opt = Adam(p)
    opt.step(grads_for(0, p, np.float32))
    save(tmp_path / "a.npz", opt=opt.state_dict())
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert "opt/state/0/exp_avg" in z.files
        assert z["opt/state/0/step"].shape == () and z["opt/state/0/step"] == 1
        assert z["opt/state/0/exp_avg"].dtype == np.float32


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save(path, w=np.arange(5.0), note="first")
    before = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        save(path, w=np.zeros(5), big=np.ones(10_000), note="second")
    monkeypatch.undo()
    assert len(calls) == 2  # failed after part of the archive was written
    assert path.read_bytes() == before
    back = load(path)
    assert back["note"] == "first" and np.array_equal(back["w"], np.arange(5.0))
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind


def test_object_arrays_refused(tmp_path):
    path = tmp_path / "evil.npz"
    manifest = ('{"format": 1, "root": {"t": "dict", '
                '"items": [["s", "x", {"t": "array", "k": "x"}]]}}')
    np.savez(path, **{"__fastoptim__": np.array(manifest),
                      "x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="object arrays"):
        load(path)
    with pytest.raises(TypeError, match="object arrays cannot be saved"):
        save(tmp_path / "o.npz", x=np.array([None, 1], dtype=object))
    assert not (tmp_path / "o.npz").exists()


def test_bad_files_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a fastoptim checkpoint"):
        load(tmp_path / "plain.npz")
    save(tmp_path / "ok.npz", a=np.zeros(2), b=1)
    with zipfile.ZipFile(tmp_path / "ok.npz") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(tmp_path / "missing.npz", "w") as z:
        for n, data in entries.items():
            if n != "b.npy":
                z.writestr(n, data)
    with pytest.raises(ValueError, match="entry 'b' is missing"):
        load(tmp_path / "missing.npz")
    with zipfile.ZipFile(tmp_path / "extra.npz", "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
        z.writestr("c.npy", entries["a.npy"])
    with pytest.raises(ValueError, match="not in the manifest"):
        load(tmp_path / "extra.npz")


def test_unsupported_objects_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot save a set"):
        save(tmp_path / "s.npz", x={1, 2})
    with pytest.raises(TypeError, match="dict keys must be str or int"):
        save(tmp_path / "s.npz", x={(1, 2): 3})
    with pytest.raises(ValueError, match="same key"):
        save(tmp_path / "s.npz", x={0: 1, "0": 2})
    with pytest.raises(ValueError, match="nothing to save"):
        save(tmp_path / "s.npz")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------ state dicts
def stepped(cls=Adam, dtype=np.float64, **kw):
    params = model(dtype)
    opt = cls([dict(params=params[:2]), dict(params=params[2:], lr=0.5)], **kw)
    opt.step(grads_for(0, params, dtype))
    return opt, params


def test_state_dict_layout_and_copies():
    opt, params = stepped(amsgrad=True)
    sd = opt.state_dict()
    assert list(sd) == ["state", "param_groups"]
    assert sd["param_groups"][0]["params"] == [0, 1]
    assert sd["param_groups"][1]["params"] == [2, 3, 4]
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1
    sd["state"][0]["exp_avg"][...] = 123.0  # a copy: the optimizer is not affected
    assert not np.any(opt.state[0]["exp_avg"] == 123.0)


def test_load_copies_into_own_contiguous_buffers():
    opt, params = stepped()
    sd = opt.state_dict()
    src = np.asfortranarray(np.stack([sd["state"][0]["exp_avg"]] * 2, axis=-1))[..., 0]
    src.flags.writeable = False
    sd["state"][0]["exp_avg"] = src
    opt2 = Adam([dict(params=model(np.float64)[:2]), dict(params=model(np.float64)[2:])])
    opt2.load_state_dict(sd)
    buf = opt2.state[0]["exp_avg"]
    assert buf.flags.c_contiguous and buf.flags.writeable and buf.flags.owndata
    assert not np.shares_memory(buf, src)
    assert np.array_equal(buf, opt.state[0]["exp_avg"])
    assert opt2.param_groups[1]["lr"] == 0.5
    opt2.step(grads_for(1, params, np.float64))  # usable after loading


def _corrupt(sd, how):
    sd = {"state": {i: dict(st) for i, st in sd["state"].items()},
          "param_groups": [dict(g) for g in sd["param_groups"]]}
    how(sd)
    return sd


BAD_STATE = [
    (lambda sd: sd["param_groups"].pop(), ValueError, "1 parameter groups"),
    (lambda sd: sd["param_groups"][1]["params"].pop(), ValueError, "has 2 params in the loaded"),
    (lambda sd: sd["state"][0].__setitem__("exp_avg", np.zeros((3, 4))), ValueError,
     r"state\[0\]\['exp_avg'\] has shape \(3, 4\)"),
    (lambda sd: sd["state"][1].__setitem__("exp_avg_sq", np.zeros(3, np.float32)), TypeError,
     r"has dtype float32, param 1 has dtype float64"),
    (lambda sd: sd["state"][2].pop("exp_avg"), ValueError, "missing 'exp_avg'"),
    (lambda sd: sd["state"][2].__setitem__("momentum_buffer", np.zeros((2, 2, 2))), ValueError,
     "unexpected entries"),
    (lambda sd: sd["state"][0].__setitem__("step", -1), ValueError, "must be an int >= 0"),
    (lambda sd: sd["state"][0].__setitem__("step", 1.5), ValueError, "must be an int >= 0"),
    (lambda sd: sd["state"][0].__setitem__("exp_avg", [[0.0] * 3] * 4), TypeError,
     "must be an ndarray"),
    (lambda sd: sd["state"].__setitem__(9, sd["state"][0]), ValueError,
     "state entry 9 does not name a param"),
    (lambda sd: sd["param_groups"][0].__setitem__("lr", -2.0), ValueError,
     "Invalid learning rate: -2.0"),
    (lambda sd: sd["param_groups"][0].__setitem__("params", [0, 0]), ValueError,
     "invalid or repeated param id"),
    (lambda sd: sd.pop("state"), ValueError, "exactly the keys"),
]


@pytest.mark.parametrize("how,exc,match", BAD_STATE, ids=[m for _, _, m in BAD_STATE])
def test_load_state_dict_mismatch_changes_nothing(how, exc, match):
    opt, params = stepped()
    sd = _corrupt(opt.state_dict(), how)
    target, tparams = stepped()
    target.step(grads_for(5, tparams, np.float64))
    before = target.state_dict()
    with pytest.raises(exc, match=match):
        target.load_state_dict(sd)
    after = target.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i, st in before["state"].items():
        for k, v in st.items():
            assert np.array_equal(after["state"][i][k], v)
        assert after["state"][i]["step"] == 2


def test_load_state_dict_from_other_optimizer_kind():
    sgd, _ = stepped(SGD, momentum=0.9)
    adam, _ = stepped(Adam)
    with pytest.raises(ValueError, match="unexpected entries|missing"):
        adam.load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="unexpected entries"):
        sgd.load_state_dict(adam.state_dict())


def test_load_state_dict_float32_into_float32():
    opt, params = stepped(RMSprop, np.float32, centered=True, momentum=0.5)
    opt2, _ = stepped(RMSprop, np.float32, centered=True, momentum=0.5)
    opt2.load_state_dict(opt.state_dict())
    for i, st in opt.state.items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert opt2.state[i][k].dtype == np.float32
                assert np.array_equal(opt2.state[i][k], v)
    opt64, _ = stepped(RMSprop, np.float64, centered=True, momentum=0.5)
    with pytest.raises(TypeError, match="dtype float32, param 0 has dtype float64"):
        opt64.load_state_dict(opt.state_dict())


def test_partial_state_resumes_with_separate_step_counts():
    """Params without saved state start at step 1 while the others continue (torch does too)."""
    params = model(np.float64)
    opt = Adam(params)
    opt.step(grads_for(0, params, np.float64))
    sd = opt.state_dict()
    del sd["state"][1]
    opt2 = Adam(model(np.float64))
    opt2.load_state_dict(sd)
    opt2.step(grads_for(1, params, np.float64))
    assert opt2.state[0]["step"] == 2 and opt2.state[1]["step"] == 1


def test_checkpoint_module_exports():
    assert ckpt.__all__ == ["save", "load"]


# ----------------------------------------------------- property: round trip
def _structures():
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
        st.floats(allow_nan=False), st.text(max_size=8),
        hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
                   hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))
    keys = st.one_of(st.text(min_size=1, max_size=6), st.integers(-5, 50))
    return st.recursive(leaves, lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.tuples(kids, kids),
        st.dictionaries(keys, kids, max_size=4)), max_leaves=12)


def _equal(x, y):
    if type(x) is not type(y):
        return False
    if isinstance(x, dict):
        return list(x) == list(y) and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_equal(u, v) for u, v in zip(x, y))
    if isinstance(x, np.ndarray):
        return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
    if isinstance(x, float):
        return x == y and np.signbit(x) == np.signbit(y)
    return x == y


def test_round_trip_property(tmp_path):
    from hypothesis import given

    @given(_structures())
    def check(obj):
        path = tmp_path / "p.npz"
        try:
            save(path, obj=obj)
        except ValueError as e:  # e.g. {0: ..., "0": ...}: refused, never silently merged
            assert "same key" in str(e)
            return
        assert _equal(load(path)["obj"], obj)

    check()


@pytest.mark.parametrize("key", ["\x00", "a/b", "%2F", "é", " ", "x.npy", "__fastoptim__"])
def test_awkward_dict_keys_round_trip(tmp_path, key):
    # Zip member names end at a NUL and "/" separates levels: keys are percent-encoded.
    path = tmp_path / "k.npz"
    obj = {key: np.arange(3.0), "other": {key: 1}}
    fastoptim.save(path, obj=obj)
    back = fastoptim.load(path)["obj"]
    assert set(back) == {key, "other"} and back["other"] == {key: 1}
    np.testing.assert_array_equal(back[key], np.arange(3.0))


# ------------------------------------------------------- hostile files and names
def _entries(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write_zip(path, entries, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for n, data in entries.items():
            z.writestr(n, data)


def _npy(a):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("names", [
    ["allow_pickle", "w", "file"], ["args", "kwds", "path"], ["", "x.npy", "a b"]])
def test_any_name_round_trips(tmp_path, names):
    objs = {n: v for n, v in zip(names, [np.arange(3.0), 7, {"allow_pickle": "s"}])}
    save(tmp_path / "n.npz", **objs)
    back = load(tmp_path / "n.npz")
    assert list(back) == names
    np.testing.assert_array_equal(back[names[0]], np.arange(3.0))
    assert back[names[1]] == 7 and back[names[2]] == {"allow_pickle": "s"}


@pytest.mark.parametrize("tag_value, stored, match", [
    (2, np.array(2.5), r"int entry 'x' is stored as float64 \(2.5\), not as an integer"),
    (2, np.array(2.0), "not as an integer"),
    (2, np.array(True), "not as an integer"),
    (2.5, np.array(2, np.int64), "not as a float"),
    (True, np.array(1, np.int8), "not as a bool"),
    ("s", np.array(b"s"), "not as a str"),
    (None, np.array(0.0), "not as a bool"),
    (2, np.arange(2), "not 0-d"),
])
def test_leaf_stored_with_another_dtype_is_refused(tmp_path, tag_value, stored, match):
    save(tmp_path / "ok.npz", x=tag_value)
    entries = _entries(tmp_path / "ok.npz")
    entries["x.npy"] = _npy(stored)
    _write_zip(tmp_path / "bad.npz", entries)
    with pytest.raises(ValueError, match=match):
        load(tmp_path / "bad.npz")


def _bomb(path, n, manifest_for="x"):
    """A checkpoint whose float64 array of n zeros is deflated (inflates ~1000x)."""
    save(path.with_suffix(".small.npz"), **{manifest_for: np.zeros(1)})
    entries = _entries(path.with_suffix(".small.npz"))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("__fastoptim__.npy", entries["__fastoptim__.npy"])
        with z.open("x.npy", "w", force_zip64=True) as m:
            np.lib.format.write_array(m, np.zeros(n))


def test_inflating_archive_is_refused_before_any_array_is_read(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    n = 2**24  # 128 MiB of zeros in a file of about 130 kB
    _bomb(path, n)
    assert os.path.getsize(path) < 8 * n / 100
    reads = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(1) or
                        real(*a, **k))
    with pytest.raises(ValueError, match="over the max_bytes limit"):
        load(path)  # default: no more than the file's own size
    with pytest.raises(ValueError, match="over the max_bytes limit"):
        load(path, max_bytes=8 * n - 1)
    assert reads == []  # refused from the declared sizes alone
    assert load(path, max_bytes=8 * n + 1000)["x"].shape == (n,)  # allowed explicitly


def test_npy_header_must_agree_with_declared_size(tmp_path, monkeypatch):
    save(tmp_path / "ok.npz", x=np.zeros(4))
    entries = _entries(tmp_path / "ok.npz")
    header = entries["x.npy"]
    # the header claims 10**9 elements, the entry holds 32 bytes of data
    lie = header.replace(b"(4,)", b"(1000000000,)").replace(b" " * 9 + b"\n", b"\n", 1)
    assert len(lie) == len(header)
    entries["x.npy"] = lie
    _write_zip(tmp_path / "lie.npz", entries)
    with pytest.raises(ValueError, match="over the max_bytes limit"):
        load(tmp_path / "lie.npz")
    with pytest.raises(ValueError, match=r"need 8,000,000,128 bytes, the archive declares 160"):
        load(tmp_path / "lie.npz", max_bytes=10**10)


def test_max_bytes_is_checked():
    for bad in ("1", -1, True, 1.5):
        with pytest.raises(TypeError, match="max_bytes must be None or an int >= 0"):
            load("never-opened.npz", max_bytes=bad)


def _damaged(tmp_path):
    save(tmp_path / "ok.npz", opt={"state": {0: {"step": 3, "buf": np.arange(5.0)}},
                                   "lr": 0.1}, w=np.ones((2, 3), np.float32))
    good = (tmp_path / "ok.npz").read_bytes()
    entries = _entries(tmp_path / "ok.npz")
    cases = {"empty": b"", "text": b"step,lr\n1,0.1\n", "npy": _npy(np.arange(3)),
             "pickle": b"\x80\x04\x95" + b"\x00" * 40,
             "zip header only": good[:30]}
    for n in (len(good) // 3, len(good) // 2, len(good) - 30, len(good) - 1):
        cases[f"truncated at {n}"] = good[:n]
    rng = np.random.default_rng(7)
    for i in range(300):
        d = bytearray(good)
        for j in rng.integers(0, len(d), size=3):
            d[j] ^= 1 + int(rng.integers(255))
        cases[f"flipped {i}"] = bytes(d)
    # well-formed zips with a hostile manifest
    def with_manifest(text):
        return dict(entries, **{"__fastoptim__.npy": _npy(np.array(text))})
    deep = '{"format": 1, "root": ' + "[" * 100_000 + "]" * 100_000 + "}"
    nested = '{"t": "list", "items": []}'
    for _ in range(300):
        nested = '{"t": "list", "items": [' + nested + "]}"
    zips = {"deep JSON": with_manifest(deep),
            "deep tree": with_manifest('{"format": 1, "root": {"t": "dict", "items": '
                                       '[["s", "a", ' + nested + "]]}}"),
            "not JSON": with_manifest("{not json"),
            "JSON list": with_manifest("[1, 2]"),
            "bad items": with_manifest('{"format": 1, "root": {"t": "dict", "items": 5}}'),
            "bad key": with_manifest('{"format": 1, "root": {"t": "dict", "items": '
                                     '[["i", "0", {"t": "int", "k": "w"}]]}}'),
            "manifest 2-d": dict(entries, **{"__fastoptim__.npy": _npy(np.zeros((2, 2)))}),
            "other file": dict(entries, **{"readme.txt": b"hi"}),
            # an object-dtype header (writing one needs pickle: edit a float64 header)
            "object array": dict(entries, **{"w.npy": _npy(np.zeros(2))
                                             .replace(b"'<f8'", b"'|O' ")})}
    for name, ents in zips.items():
        buf = tmp_path / "z.npz"
        _write_zip(buf, ents)
        cases[name] = buf.read_bytes()
    return cases


def test_damaged_files_raise_value_error(tmp_path):
    path = tmp_path / "bad.npz"
    loaded = 0
    for name, data in _damaged(tmp_path).items():
        path.write_bytes(data)
        try:
            load(path)
            loaded += 1  # a flip in a timestamp or other unchecked field
        except ValueError as e:
            assert "Traceback" not in str(e) and str(path) in str(e), (name, e)
            if name in ("empty", "text", "npy", "pickle"):
                assert "not a valid fastoptim checkpoint" in str(e), (name, e)
            if name == "object array":
                assert "refusing to unpickle" in str(e)
            if name.startswith("deep"):
                assert "nested" in str(e), e
    assert loaded < 30


def test_save_refuses_what_cannot_round_trip(tmp_path):
    deep = []
    cur = deep
    for _ in range(10_000):
        cur.append([])
        cur = cur[0]
    loop = []
    loop.append(loop)
    cases = [
        (dict(x={"k" * 65_536: 1}), ValueError, "key path too long"),
        (dict(x=deep), ValueError, "nested more than 100 levels"),
        (dict(x=loop), ValueError, "holds itself"),
        (dict(x=np.ma.masked_array([1.0, 2.0], mask=[0, 1])), TypeError, "masked arrays"),
        (dict(__fastoptim__=1), ValueError, "reserved"),
        (dict(x={2**63: 1}), ValueError, "does not fit in int64"),
        (dict(x=-2**63 - 1), ValueError, "does not fit in int64"),
        (dict(x={1.5: 1}), TypeError, "dict keys must be str or int"),
        (dict(x={True: 1}), TypeError, "dict keys must be str or int"),
        (dict(x=object()), TypeError, "cannot save a object"),
        (dict(x=np.zeros(1, dtype=[("é\u0101", "f8")])), TypeError, "latin-1"),
    ]
    for kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            save(tmp_path / "s.npz", **kw)
    assert os.listdir(tmp_path) == []
    save(tmp_path / "s.npz", x={np.int64(3): np.float64(np.nan), -2**63: [2**63 - 1]})
    back = load(tmp_path / "s.npz")["x"]
    assert list(back) == [3, -2**63] and np.isnan(back[3]) and back[-2**63] == [2**63 - 1]


_KILLED_SAVE = """
import os, signal, sys
import numpy as np
import fastoptim
real = np.lib.format.write_array
calls = []
def dying(*a, **k):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
np.lib.format.write_array = dying
fastoptim.save(sys.argv[1], w=np.zeros(5), big=np.ones(10_000))
"""


def test_killed_save_leaves_a_temp_file_the_next_save_removes(tmp_path):
    import subprocess
    import sys

    from conftest import subprocess_env

    path = tmp_path / "ck.npz"
    save(path, note="first")
    other = tmp_path / "other.npz.fastoptim-tmp"
    other.write_bytes(b"not ours")
    res = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], cwd=tmp_path,
                         env=subprocess_env(), capture_output=True, timeout=120)
    assert res.returncode == -9, res.stderr
    left = [n for n in os.listdir(tmp_path) if n.startswith(".ck.npz.")]
    assert len(left) == 1  # the killed writer's temporary file
    # a temporary file of a save still running (this process) must be left alone
    host, pid = ckpt._tmp_tag()
    running = tmp_path / f".ck.npz.{host}.{pid}.abc{ckpt._TMP_SUFFIX}"
    running.write_bytes(b"in progress")
    assert load(path)["note"] == "first"
    save(path, note="second")
    assert sorted(os.listdir(tmp_path)) == sorted(["ck.npz", other.name, running.name])
    assert load(path)["note"] == "second"
