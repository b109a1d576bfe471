"""Compact storage in the optimizer classes: state_dtype, master_weights, rounding, seed;
state dicts, checkpoints and exact resume; training the MLP with compact state."""

import itertools
import os

import numpy as np
import pytest

import fastoptim
from fastoptim import reference
from fastoptim.optim import SGD, Adam, AdamW, Momentum, RMSprop

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)

CLASSES = {  # class, constructor options (every state buffer in play)
    "sgd": (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "momentum": (Momentum, dict(lr=0.05)),
    "rmsprop": (RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    "adam": (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    "adamw": (AdamW, dict(lr=0.01)),
}
STORAGES = [  # (param dtype, state_dtype, master_weights, rounding)
    (F32, None, None, "nearest"), (F32, "bfloat16", None, "nearest"),
    (F32, "float16", None, "stochastic"), (F32, "bfloat16", None, "stochastic"),
    (BF16, None, None, "nearest"), (BF16, "bfloat16", None, "stochastic"),
    (F16, "float16", None, "nearest"), (BF16, "bfloat16", False, "stochastic"),
]
IDS = [f"{np.dtype(p).name}-{s}-{'nomaster' if m is False else 'master'}-{r}"
       for p, s, m, r in STORAGES]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _params(dtype, rng):
    return [rng.standard_normal((30, 7)).astype(dtype), rng.standard_normal(5).astype(dtype)]


def _grads(params, rng, dtype=None):
    return [rng.standard_normal(p.shape).astype(dtype or p.dtype) for p in params]


def _make(kind, params, state_dtype, master_weights, rounding, seed=4):
    cls, options = CLASSES[kind]
    return cls(params, **options, state_dtype=state_dtype, master_weights=master_weights,
               rounding=rounding, seed=seed)


@pytest.mark.parametrize("storage", STORAGES, ids=IDS)
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_state_is_stored_compact_and_matches_the_reference(kind, storage):
    pdt, state_dtype, master_weights, rounding = storage
    rng = np.random.default_rng(0)
    params = _params(pdt, rng)
    opt = _make(kind, params, state_dtype, master_weights, rounding)
    ref_params = [p.copy() for p in params]
    ref_state = [{}, {}]
    for t in range(1, 6):
        grads = _grads(params, rng)
        opt.step(grads)
        _reference_step(kind, ref_params, grads, ref_state, t, opt, rounding)
    want_state = np.dtype(state_dtype or F32) if pdt != F32 or state_dtype else F32
    for i, (p, rp) in enumerate(zip(params, ref_params)):
        np.testing.assert_array_equal(_bits(p), _bits(rp))
        st = opt.state[i]
        has_master = pdt != F32 and master_weights is not False
        assert ("master" in st) == has_master
        for name, buf in st.items():
            if name == "step":
                continue
            assert buf.dtype == (F32 if name == "master" else want_state), name
            np.testing.assert_array_equal(_bits(buf), _bits(ref_state[i][name]), err_msg=name)
        if has_master and rounding == "nearest":  # the param is its master rounded
            np.testing.assert_array_equal(p, st["master"].astype(pdt))


def _reference_step(kind, params, grads, states, t, opt, rounding):
    """The reference on each param alone, with state created as the class documents
    (zeros of the state dtype; the master a float32 copy; seed + param index)."""
    g = opt.param_groups[0]
    for i, (p, grad) in enumerate(zip(params, grads)):
        st = states[i]
        for name in opt._buffer_names(g) + (("master",) if opt._uses_master(p) else ()):
            if name not in st:
                st[name] = (p.astype(np.float32) if name == "master"
                            else np.zeros(p.shape, opt._buffer_dtype(p, name)))
        kw = dict(master=st.get("master"), rounding=rounding, seed=(opt.seed + i) % 2 ** 64)
        if kind in ("sgd", "momentum"):
            reference.sgd_(p, grad, st.get("momentum_buffer"), step=t, lr=g["lr"],
                           momentum=g["momentum"], dampening=g["dampening"],
                           nesterov=g["nesterov"], weight_decay=g["weight_decay"], **kw)
        elif kind == "rmsprop":
            reference.rmsprop_(p, grad, st["square_avg"], step=t, lr=g["lr"], alpha=g["alpha"],
                               eps=g["eps"], momentum=g["momentum"],
                               momentum_buffer=st.get("momentum_buffer"),
                               centered=g["centered"], grad_avg=st.get("grad_avg"), **kw)
        else:
            reference.adam_(p, grad, st["exp_avg"], st["exp_avg_sq"], step=t, lr=g["lr"],
                            beta1=g["betas"][0], beta2=g["betas"][1], eps=g["eps"],
                            weight_decay=g["weight_decay"],
                            decoupled_weight_decay=g["decoupled_weight_decay"],
                            amsgrad=g["amsgrad"], max_exp_avg_sq=st.get("max_exp_avg_sq"),
                            **kw)


def test_state_dict_bytes_are_the_compact_state():
    n = 10_000
    for state_dtype, pdt, per_param in (("bfloat16", F32, 4), (None, F32, 8),
                                        ("bfloat16", BF16, 8), ("float16", F16, 8)):
        p = np.zeros(n, pdt)
        opt = Adam([p], state_dtype=state_dtype)
        opt.step([np.ones(n, pdt)])
        sd = opt.state_dict()["state"][0]
        nbytes = sum(a.nbytes for a in sd.values() if isinstance(a, np.ndarray))
        # exp_avg + exp_avg_sq (+ the float32 master of a 16-bit param)
        assert nbytes == n * per_param, (state_dtype, pdt)


@pytest.mark.parametrize("storage", STORAGES, ids=IDS)
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_checkpoint_resume_is_bit_exact(kind, storage, tmp_path):
    pdt, state_dtype, master_weights, rounding = storage
    rng = np.random.default_rng(1)
    init = _params(pdt, rng)
    grads = [_grads(init, rng, BF16 if pdt == BF16 and kind == "adam" else None)
             for _ in range(10)]
    straight = [p.copy() for p in init]
    opt = _make(kind, straight, state_dtype, master_weights, rounding)
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in init]
    opt1 = _make(kind, first, state_dtype, master_weights, rounding)
    for g in grads[:4]:
        opt1.step(g)
    path = os.fspath(tmp_path / "ckpt.npz")
    fastoptim.save(path, opt=opt1.state_dict(), params=first)
    ck = fastoptim.load(path)
    resumed = [np.array(p) for p in ck["params"]]
    opt2 = _make(kind, resumed, state_dtype, master_weights, rounding)
    opt2.load_state_dict(ck["opt"])
    for g in grads[4:]:
        opt2.step(g)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    for i in opt.state:
        for name, buf in opt.state[i].items():
            if name != "step":
                np.testing.assert_array_equal(_bits(buf), _bits(opt2.state[i][name]))


def test_load_state_dict_refuses_other_storage_and_changes_nothing():
    p = np.ones(8, np.float32)
    opt = Adam([p], state_dtype="bfloat16")
    opt.step([np.ones(8, np.float32)])
    sd = Adam([np.ones(8, np.float32)])
    sd.step([np.ones(8, np.float32)])
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[0].items()}
    with pytest.raises(TypeError, match=r"'exp_avg'\] has dtype float32.*its state is bfloat16"):
        opt.load_state_dict(sd.state_dict())
    for k, v in before.items():
        np.testing.assert_array_equal(opt.state[0][k], v)
    # a master for a param that has none is refused too
    q = np.ones(8, BF16)
    opt16 = Adam([q], master_weights=False)
    bad = Adam([np.ones(8, BF16)])
    bad.step([np.ones(8, BF16)])
    with pytest.raises(ValueError, match="unexpected entries"):
        opt16.load_state_dict(bad.state_dict())


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(state_dtype="int4"), ValueError, "Invalid state_dtype: 'int4'"),
    (dict(state_dtype=np.float16), TypeError, "Invalid state_dtype"),
    (dict(master_weights="yes"), TypeError, "Invalid master_weights"),
    (dict(rounding="up"), ValueError, "Invalid rounding: 'up'"),
    (dict(rounding=None), TypeError, "Invalid rounding"),
    (dict(seed=-1), ValueError, "Invalid seed: -1"),
    (dict(seed=2 ** 64), ValueError, "Invalid seed"),
    (dict(seed=1.0), TypeError, "Invalid seed"),
])
def test_bad_storage_options_are_refused(kwargs, exc, match):
    for cls in (SGD, Momentum, RMSprop, Adam, AdamW):
        with pytest.raises(exc, match=match):
            cls([np.zeros(3, np.float32)], **kwargs)


def test_16bit_params_take_16bit_or_float32_grads_and_the_step_is_atomic():
    p = np.ones(6, BF16)
    opt = Adam([p], state_dtype="bfloat16")
    opt.step([np.ones(6, np.float32)])
    opt.step([np.ones(6, BF16)])
    before = p.copy(), {k: np.array(v, copy=True) for k, v in opt.state[0].items()}
    with pytest.raises(TypeError, match="grad 0 has dtype float64"):
        opt.step([np.ones(6, np.float64)])
    np.testing.assert_array_equal(_bits(p), _bits(before[0]))
    assert opt.state[0]["step"] == 2
    with pytest.raises(TypeError, match="grad 0 has dtype float16 but its param has dtype float64"):
        Adam([np.ones(3)]).step([np.ones(3, F16)])


def test_nonfinite_guard_reads_16bit_grads():
    p = np.ones(4, BF16)
    opt = Adam([p], nonfinite="skip")
    assert opt.step([np.array([1, np.inf, 0, 0], np.float32).astype(BF16)]) is False
    assert opt.step([np.ones(4, BF16)]) is True


def test_mlp_trains_on_digits_with_compact_state():
    """The network's flat float32 params with bfloat16 (stochastic) state: test accuracy
    within 2 points of float32 state on the same seed (README's criterion; the issue's
    0.5-point median-of-5 comparison is in the benchmark report)."""
    from fastoptim.nn import MLP
    X, y = fastoptim.load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = fastoptim.train_test_split(X / 16, y, test_size=0.25,
                                                        random_state=0)
    scores = {}
    for state_dtype, rounding in ((None, "nearest"), ("bfloat16", "stochastic")):
        net = MLP([64, 64, 10], activation="relu", output="softmax", dtype=np.float32, seed=0)
        opt = fastoptim.nn.make_optimizer("adam", [net.params_flat], lr=3e-3,
                                          state_dtype=state_dtype, rounding=rounding)
        net.fit(X_tr, y_tr, optimizer=opt, epochs=15, batch_size=64, seed=0)
        scores[state_dtype] = np.mean(net.forward(X_te).argmax(axis=1) == y_te)
        assert opt.state[0]["exp_avg"].dtype == (BF16 if state_dtype else F32)
    assert scores[None] > 0.9
    assert abs(scores["bfloat16"] - scores[None]) <= 0.02, scores


def test_estimator_trains_with_compact_state_and_pickles():
    import pickle
    from fastoptim import MLPClassifier
    X, y = fastoptim.load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    X_tr, X_te, y_tr, y_te = fastoptim.train_test_split(X, y, test_size=0.25, random_state=0)
    scores = {}
    for state_dtype in (None, "bfloat16"):
        clf = MLPClassifier((64,), max_iter=15, random_state=0, state_dtype=state_dtype)
        clf.fit(X_tr, y_tr)
        scores[state_dtype] = clf.score(X_te, y_te)
    assert clf._optimizer.state[0]["exp_avg"].dtype == BF16
    assert abs(scores["bfloat16"] - scores[None]) <= 0.02, scores
    # a pickled estimator continues with the same compact state, bit for bit
    twin = pickle.loads(pickle.dumps(clf))
    assert twin._optimizer.state_dtype == "bfloat16"
    clf.partial_fit(X_tr[:64], y_tr[:64])
    twin.partial_fit(X_tr[:64], y_tr[:64])
    for a, b in zip(clf.coefs_, twin.coefs_):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="state_dtype='bfloat16' needs float32 training"):
        MLPClassifier((4,), max_iter=2, state_dtype="bfloat16").fit(X_tr.astype(np.float64),
                                                                     y_tr)
    with pytest.raises(ValueError, match="state_dtype"):
        MLPClassifier(state_dtype="int3").fit(X_tr, y_tr)


def test_sgd_momentum_goes_on_when_only_the_master_is_rebuilt():
    # A state without its master (e.g. loaded from a torch-style dict) rebuilds the
    # master from the 16-bit param; the momentum buffer must continue, not restart
    # from the gradient as at a first step.
    rng = np.random.default_rng(5)
    p = rng.standard_normal(64).astype(BF16)
    opt = SGD([p], lr=0.01, momentum=0.9)  # float32 state (None: the math dtype)
    for _ in range(3):
        opt.step([rng.standard_normal(64).astype(BF16)])
    before = opt.state[0]["momentum_buffer"].copy()
    del opt.state[0]["master"]
    g = rng.standard_normal(64).astype(BF16)
    opt.step([g])
    after = opt.state[0]["momentum_buffer"]
    expected = before * np.float32(0.9) + g.astype(np.float32)
    np.testing.assert_array_equal(after, expected)
    assert "master" in opt.state[0]
