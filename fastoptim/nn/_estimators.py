"""scikit-learn-compatible ``MLPClassifier`` / ``MLPRegressor`` on :class:`~fastoptim.nn.MLP`.

Drop-in for scikit-learn's classes of the same names: the same constructor parameters,
the same checks and errors, ``fit`` / ``partial_fit`` (with ``sample_weight``) /
``predict`` / ``predict_proba`` / ``score``, ``get_params`` / ``set_params`` and the same
fitted attributes with scikit-learn's semantics (``n_iter_`` per call, ``loss_curve_``,
``best_loss_``, ``validation_scores_``, ``best_validation_score_``, ``t_``,
``feature_names_in_``).  Binary and multilabel targets use logistic outputs, multiclass a
softmax, regression identity or (``loss="poisson"``) exp outputs; X may be sparse.
scikit-learn is NOT imported (``__sklearn_tags__`` imports it lazily, and is only ever
called by scikit-learn itself).

What differs on purpose:

* Every stochastic update is one fused fastoptim kernel call over the whole network
  (``fastoptim.optim``), made to follow scikit-learn's solvers: Adam adds eps before the
  bias correction of v (``_ScikitLearnAdam``), and SGD's momentum buffers (torch's form,
  the rate outside them) are rescaled when the rate changes (``_set_sgd_lr``), so
  that they hold scikit-learn's velocity.  ``solver="rmsprop"`` (decay ``rho``) is an
  extra; "lbfgs" uses scipy's L-BFGS-B as scikit-learn does.
* ``random_state`` draws what scikit-learn draws, in its order: the initial weights and
  biases (its Glorot bounds), each epoch's shuffle and the early-stopping split, taken
  anew by every fit / partial_fit call.  So a fit from the same random_state gives
  scikit-learn's weights to rounding.
* ``dtype`` (None: float32 input trains in float32, anything else in float64, as
  scikit-learn) selects the precision.
* ``alpha`` and ``learning_rate_init`` must be finite and at most
  ``sqrt(finfo(dtype).max)``; a fit whose loss or weights become non-finite raises a
  ValueError (also a FloatingPointError) and leaves the estimator as it was.
* ``fit(X, y, validation_data=(X_val, y_val))`` validates on given rows instead of a
  split (``validation_scores_`` and ``val_loss_curve_`` every epoch); NumPy's BLAS is
  limited to one thread while training small networks when threadpoolctl is installed.
* Masked arrays are refused (scikit-learn silently drops the mask).
"""

import inspect
import math
import numbers
import sys
import warnings

import numpy as np

from fastoptim import optim
from fastoptim import quantized as _quant8
from ._network import MLP, _check_representable, _is_sparse, _refuse_masked
from ._training import DivergenceError, _blas_threads, _Epochs, _set_lr, make_optimizer

__all__ = ["MLPClassifier", "MLPRegressor", "ConvergenceWarning", "NotFittedError",
           "DataConversionWarning"]


class ConvergenceWarning(UserWarning):
    """max_iter epochs ran without the training loss converging (as scikit-learn's)."""


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (as scikit-learn's NotFittedError)."""


class DataConversionWarning(UserWarning):
    """The input was converted (e.g. a column-vector y raveled), as scikit-learn's."""


_BOTH = {}  # name -> class deriving from ours and scikit-learn's


def _sk(name, ours):
    """Our exception/warning class ``ours``; once scikit-learn is ALREADY imported, a
    subclass of both ours and scikit-learn's class ``name``, so that filters and
    ``except`` clauses for either one catch it.  Never imports scikit-learn."""
    mod = sys.modules.get("sklearn.exceptions")
    theirs = getattr(mod, name, None) if mod is not None else None
    if theirs is None or issubclass(ours, theirs):
        return ours
    cls = _BOTH.get(name)
    if cls is None:
        cls = _BOTH[name] = type(ours.__name__, (ours, theirs), {"__module__": __name__})
    return cls


def _warn(message, category=UserWarning, stacklevel=4):
    warnings.warn(message, category, stacklevel=stacklevel)


# ---- scikit-learn's estimator protocol, without scikit-learn ----------------------------

class _ParamsMixin:
    """get_params / set_params / repr from the signature of ``__init__`` (BaseEstimator)."""

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self" or p.kind == p.VAR_KEYWORD:
                continue
            if p.kind == p.VAR_POSITIONAL:
                raise RuntimeError(f"{cls.__name__}.__init__ must not take *args")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep=True):
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {self!r}. "
                                 f"Valid parameters are: {self._get_param_names()!r}.")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub in nested.items():
            valid[name].set_params(**sub)
        return self

    def __repr__(self):
        defaults = {p.name: p.default
                    for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = value is default or bool(value == default)
            except Exception:
                same = False
            if not same:
                changed.append(f"{name}={_short_repr(value)}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def __getstate__(self):
        if "net_" in self.__dict__:
            self._sync_params()
        state = dict(self.__dict__)
        state.pop("coefs_", None)       # views into net_.params_flat: rebuilt on load
        state.pop("intercepts_", None)
        opt = state.pop("_optimizer", None)
        if opt is not None:             # bound to net_.params_flat: rebuilt on load
            state["_optimizer_state"] = (type(opt), opt.state_dict())
            state["_optimizer_storage"] = _storage_of(opt)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state.pop("_rng", None)  # kept by versions that carried one generator across calls
        opt_state = state.pop("_optimizer_state", None)
        storage = state.pop("_optimizer_storage", {})
        self.__dict__.update(state)
        if "net_" in state:
            self._bind_views()
            if opt_state is not None:
                cls, opt_state = opt_state
                self._optimizer = cls(_optimizer_params(self.net_, storage), **storage)
                self._optimizer.load_state_dict(opt_state)

    def __sklearn_tags__(self):
        from sklearn.utils import (ClassifierTags, InputTags, RegressorTags, Tags,
                                   TargetTags)
        clf = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True, single_output=True, multi_output=False),
            transformer_tags=None,
            classifier_tags=ClassifierTags(multi_class=True, multi_label=True) if clf else None,
            regressor_tags=None if clf else RegressorTags(),
            input_tags=InputTags(two_d_array=True, allow_nan=False, sparse=True),
            non_deterministic=False,
        )


def _short_repr(value):
    if isinstance(value, type):
        return value.__name__ if value.__module__ == "builtins" else f"np.{value.__name__}"
    return repr(value)


# ---- parameter constraints (scikit-learn's _parameter_constraints, finite) --------------

class _Interval:
    def __init__(self, kind, lo, hi, closed):
        self.kind, self.lo, self.hi, self.closed = kind, lo, hi, closed

    def accepts(self, v):
        if isinstance(v, (bool, np.bool_)):
            return False
        if self.kind is int and not isinstance(v, numbers.Integral):
            return False
        try:
            if not isinstance(v, numbers.Real) or not math.isfinite(v):
                return False
        except OverflowError:  # an int beyond any float
            return False
        lo_ok = v >= self.lo if self.closed in ("left", "both") else v > self.lo
        hi_ok = self.hi is None or (v <= self.hi if self.closed in ("right", "both")
                                    else v < self.hi)
        return lo_ok and hi_ok

    def __str__(self):
        name = "an int" if self.kind is int else "a float"
        lb = "[" if self.closed in ("left", "both") else "("
        rb = "]" if self.closed in ("right", "both") else ")"
        hi = "inf" if self.hi is None else self.hi
        return f"{name} in the range {lb}{self.lo}, {hi}{rb}"


def _storage_of(opt):
    """The compact-storage options of an optimizer, to build its copy."""
    return {k: getattr(opt, k) for k in ("state_dtype", "master_weights", "rounding", "seed",
                                         "min_8bit_size")
            if hasattr(opt, k)}


def _optimizer_params(net, storage):
    """What the optimizer updates: the flat buffer (one kernel call), or with 8-bit
    state each layer's tensors, so that, as in bitsandbytes, each has its own blocks and
    the small ones (biases, small layers: fewer than min_8bit_size elements) keep
    float32 state."""
    if storage.get("state_dtype") == "int8":
        return list(net.coefs) + list(net.intercepts)
    return [net.params_flat]


class _Options:
    def __init__(self, *values):
        self.values = values

    def accepts(self, v):
        try:
            return any(v is o or (type(v) is type(o) and v == o) for o in self.values)
        except Exception:
            return False

    def __str__(self):
        return "a str among {" + ", ".join(map(repr, self.values)) + "}"


class _Bool:
    def accepts(self, v):
        return isinstance(v, (bool, np.bool_))

    def __str__(self):
        return "an instance of 'bool'"


class _Verbose:
    def accepts(self, v):
        return isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v >= 0)

    def __str__(self):
        return "an instance of 'bool' or an int >= 0"


class _Inf:
    def accepts(self, v):
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == np.inf

    def __str__(self):
        return "np.inf"


class _RandomState:
    def accepts(self, v):
        return v is None or isinstance(v, (np.random.RandomState, np.random.Generator)) or (
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
            and 0 <= v < 2**32)

    def __str__(self):
        return "an int in the range [0, 4294967295], an instance of 'RandomState' or None"


class _HiddenSizes:
    def accepts(self, v):
        if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)):
            return v >= 1
        try:
            sizes = list(v)
        except TypeError:
            return False
        return all(isinstance(h, numbers.Integral) and not isinstance(h, (bool, np.bool_))
                   and h >= 1 for h in sizes)

    def __str__(self):
        return "an int >= 1 or an array-like of ints >= 1"


class _DType:
    def accepts(self, v):
        if v is None:
            return True
        try:
            return np.dtype(v) in (np.dtype(np.float32), np.dtype(np.float64))
        except TypeError:
            return False

    def __str__(self):
        return "None, float32 or float64"


_UNIT_LEFT = _Interval(float, 0, 1, "left")
_POSITIVE = _Interval(float, 0, None, "left")
_CONSTRAINTS = {
    "hidden_layer_sizes": [_HiddenSizes()],
    "activation": [_Options("identity", "logistic", "tanh", "relu")],
    "solver": [_Options("lbfgs", "sgd", "adam", "rmsprop")],
    "alpha": [_POSITIVE],
    "batch_size": [_Options("auto"), _Interval(int, 1, None, "left")],
    "learning_rate": [_Options("constant", "invscaling", "adaptive")],
    "learning_rate_init": [_Interval(float, 0, None, "neither")],
    "power_t": [_POSITIVE],
    "max_iter": [_Interval(int, 1, None, "left")],
    "shuffle": [_Bool()],
    "random_state": [_RandomState()],
    "tol": [_POSITIVE],
    "verbose": [_Verbose()],
    "warm_start": [_Bool()],
    "momentum": [_Interval(float, 0, 1, "both")],
    "nesterovs_momentum": [_Bool()],
    "early_stopping": [_Bool()],
    "validation_fraction": [_UNIT_LEFT],
    "beta_1": [_UNIT_LEFT],
    "beta_2": [_UNIT_LEFT],
    "epsilon": [_Interval(float, 0, None, "neither")],
    "n_iter_no_change": [_Interval(int, 1, None, "left"), _Inf()],
    "max_fun": [_Interval(int, 1, None, "left")],
    "rho": [_UNIT_LEFT],
    "dtype": [_DType()],
    "state_dtype": [_Options(None, "bfloat16", "float16", "int8")],
    "loss": [_Options("squared_error", "poisson")],
    "grad_accumulation": [_Interval(int, 1, None, "left")],
    "step_in_backward": [_Options("auto"), _Bool()],
    "kernel_threads": [_Options("auto", None), _Interval(int, 1, None, "left")],
}


def _validate_params(est):
    """scikit-learn's parameter validation (its messages), with finite reals only."""
    for name in est._get_param_names():
        value = getattr(est, name)
        rules = _CONSTRAINTS[name]
        if not any(r.accepts(value) for r in rules):
            if len(rules) == 1:
                must = str(rules[0])
            else:
                must = "one of " + ", ".join(map(str, rules[:-1])) + f" or {rules[-1]}"
            raise ValueError(f"The {name!r} parameter of {type(est).__name__} must be "
                             f"{must}. Got {value!r} instead.")


def _check_scale(est, dtype):
    """alpha and learning_rate_init beyond sqrt(max float) can only overflow training."""
    bound = float(np.sqrt(np.finfo(dtype).max))
    for name in ("alpha", "learning_rate_init"):
        if getattr(est, name) > bound:
            raise ValueError(f"The {name!r} parameter of {type(est).__name__} must be at "
                             f"most {bound:.4g} for {np.dtype(dtype).name} training (larger "
                             f"values overflow); got {getattr(est, name)!r}.")


# ---- input checks -----------------------------------------------------------------------

def _feature_names(X):
    """Column names of a DataFrame-like X when they are all strings (scikit-learn's rule)."""
    cols = getattr(X, "columns", None)
    if cols is None or _is_sparse(X):
        return None
    names = np.asarray(list(cols), dtype=object)
    kinds = {type(c).__name__ for c in names}
    is_str = [isinstance(c, str) for c in names]
    if names.size and all(is_str):
        return names
    if any(is_str):
        raise TypeError("Feature names are only supported if all input features have string "
                        f"names, but your input has {sorted(kinds)} as feature name / column "
                        "name types. If you want feature names to be stored and validated, "
                        "you must convert them all to strings, by using X.columns = "
                        "X.columns.astype(str) for example. Otherwise you can remove feature "
                        "/ column names from your input data, or convert them all to a "
                        "non-string data type.")
    return None


def _check_X(X, dtype, name="X"):
    """X as a float array (or CSR matrix) of ``dtype``; None = float32 stays float32, the
    rest becomes float64 (scikit-learn's rule).  Finite values only."""
    _refuse_masked(X, name)
    if _is_sparse(X):
        arr = X.tocsr()
        if arr.ndim != 2:
            raise ValueError(f"Expected 2D input for {name}, got shape {arr.shape}")
    elif hasattr(X, "__array__") or isinstance(X, (list, tuple)):
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    else:
        raise ValueError(f"Expected a 2D array-like for {name}, got {type(X).__name__}")
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported in {name}")
    if arr.ndim != 2:
        raise ValueError(f"Expected 2D array for {name}, got {arr.ndim}D array instead "
                         f"(shape {arr.shape}). Reshape your data: X.reshape(-1, 1) for a "
                         "single feature or X.reshape(1, -1) for a single sample.")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except TypeError as exc:
            raise TypeError(f"{name} must hold numbers: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{name} must hold numbers: {exc}") from None
    if arr.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum "
                         "of 1 is required.")
    if arr.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a "
                         "minimum of 1 is required.")
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    _check_representable(arr.data if _is_sparse(arr) else arr, dtype, name)
    if _is_sparse(arr):
        return arr.astype(dtype) if arr.dtype != dtype else arr
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_lengths(X, y):
    if X.shape[0] != len(y):
        raise ValueError(f"X and y have inconsistent numbers of samples: "
                         f"{X.shape[0]} != {len(y)}")


def _check_sample_weight(sample_weight, n, dtype):
    """None, a scalar (every row) or n finite weights >= 0, not all zero."""
    if sample_weight is None:
        return None
    _refuse_masked(sample_weight, "sample_weight")
    if isinstance(sample_weight, numbers.Number) and not isinstance(sample_weight, bool):
        try:
            sw = np.full(n, sample_weight, dtype=dtype)
        except (OverflowError, TypeError):  # an int beyond any float, a complex
            raise ValueError(f"sample_weight must be a finite real number, got "
                             f"{sample_weight!r}") from None
    else:
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must hold real numbers, got dtype {sw.dtype}")
        if sw.ndim != 1:
            raise ValueError("Sample weights must be 1D array or scalar")
        if sw.shape[0] != n:
            raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)!")
        _check_representable(sw, dtype, "sample_weight")
        sw = np.ascontiguousarray(sw, dtype=dtype)
    if not np.isfinite(sw).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (sw < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    if not sw.any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sw


class _ScikitLearnAdam(optim.Adam):
    """Adam with scikit-learn's eps: added to sqrt(v) before the bias correction of v
    (``lr_t * m / (sqrt(v) + eps)``), so that its fits follow scikit-learn's."""

    _EPS_HAT = True

    @property
    def learning_rate(self):
        """The last step's lr_t, as scikit-learn's AdamOptimizer (learning_rate_init
        before the first)."""
        lr = self.param_groups[0]["lr"]
        step = self.state.get(0, {}).get("step", 0)
        if not step:
            return lr
        beta1, beta2 = self.param_groups[0]["betas"]
        return lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)


class _ScikitLearnSGD(optim.SGD):
    """SGD as the estimators run it."""

    @property
    def learning_rate(self):
        """The current rate, as scikit-learn's SGDOptimizer."""
        return self.param_groups[0]["lr"]


def _set_sgd_lr(opt, lr):
    """Set an SGD optimizer's rate as scikit-learn's SGD changes it.  scikit-learn's
    velocity ``v = momentum * v - lr * g`` carries the rates it was made with; torch's
    buffer ``buf = momentum * buf + g`` (stepped ``p -= lr * buf``) carries none, so the
    buffers are scaled by old / new rate: the following steps are scikit-learn's.  (A new
    rate of 0 leaves them: scikit-learn's weights would coast on the velocity, these
    stop.)"""
    old = opt.param_groups[0]["lr"]
    if lr > 0 and old != lr:
        scale = old / lr
        for state in opt.state.values():
            buf = state.get("momentum_buffer")
            if buf is None:
                continue
            if _quant8.is_quantized(buf):
                buf.absmax *= np.float32(scale)   # the codes are relative to absmax
            else:
                buf *= buf.dtype.type(scale)
    _set_lr(opt, lr)


def _check_random_state(random_state):
    """scikit-learn's check_random_state: None -> NumPy's global RandomState (so that
    ``np.random.seed`` makes fits repeatable), an int -> a new RandomState seeded with it,
    a RandomState -> itself (fastoptim also takes a Generator, used as it is).  Each fit
    and partial_fit call takes it anew, as scikit-learn's ``_fit`` does."""
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        return random_state
    return np.random.RandomState(int(random_state))


def _sklearn_init(net, activation, rs):
    """scikit-learn's MLP initialisation, drawn in its order so that the same random_state
    gives the same starting weights: per layer, U(+-sqrt(factor / (fan_in + fan_out)))
    weights then biases, factor 2 for logistic hidden units and 6 otherwise, drawn in
    float64 and rounded to the network's dtype."""
    factor = 2.0 if activation == "logistic" else 6.0
    for W, b in zip(net.coefs, net.intercepts):
        fan_in, fan_out = W.shape
        bound = np.sqrt(factor / (fan_in + fan_out))
        W[...] = rs.uniform(-bound, bound, (fan_in, fan_out))
        b[...] = rs.uniform(-bound, bound, fan_out)


def _approximate_mode(class_counts, n_draws, rs):
    """scikit-learn's _approximate_mode (StratifiedShuffleSplit's per-class counts), with
    the same draws to break ties."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rs.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def _train_test_split_indices(n, n_test, stratify, rs):
    """(train, test) row indices as scikit-learn's ``train_test_split(...,
    test_size=n_test, stratify=stratify, random_state=rs)`` draws them (ShuffleSplit,
    or StratifiedShuffleSplit with the classes in sorted order), so that the same
    random_state holds out the same rows."""
    n_train = n - n_test
    if stratify is None:
        perm = rs.permutation(n)
        return perm[n_test:n_test + n_train], perm[:n_test]
    _, y_indices, counts = np.unique(stratify, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(counts)[:-1])
    n_i = _approximate_mode(counts, n_train, rs)
    t_i = _approximate_mode(counts - n_i, n_test, rs)
    train, test = [], []
    for i, rows in enumerate(class_indices):
        rows = rows.take(rs.permutation(counts[i]), mode="clip")
        train.extend(rows[:n_i[i]])
        test.extend(rows[n_i[i]:n_i[i] + t_i[i]])
    return rs.permutation(train), rs.permutation(test)


def _r2(y_true, pred, sample_weight=None):
    """R^2 averaged uniformly over outputs (scikit-learn's r2_score, nan for < 2 rows)."""
    y2 = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p2 = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    if len(y2) < 2:
        _warn("R^2 score is not well-defined with less than two samples.")
        return float("nan")
    w = sample_weight
    ss_res = np.average((y2 - p2) ** 2, axis=0, weights=w)
    ss_tot = np.average((y2 - np.average(y2, axis=0, weights=w)) ** 2, axis=0, weights=w)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res > 0, 0.0, 1.0))
    return float(r2.mean())


def _accuracy(y_true, pred, sample_weight=None):
    """Accuracy (subset accuracy for multilabel rows), as scikit-learn's accuracy_score."""
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    hit = (y_true == pred)
    if hit.ndim == 2:
        hit = hit.all(axis=1)
    return float(np.average(hit.astype(np.float64), weights=sample_weight))


# ---- the estimators ----------------------------------------------------------------------

class _BaseMLP(_ParamsMixin):
    _estimator_type = None

    # -- pieces the subclasses fill in --------------------------------------------------

    def _check_y(self, y):
        """validated y (raises ValueError)."""
        raise NotImplementedError

    def _encode_y(self, y, first, classes, incremental, enc=None):
        """-> (targets Y, encoding dict to commit, output function, stratification labels);
        ``enc``: encode with this encoding instead of the fitted one (validation data)."""
        raise NotImplementedError

    def _decode(self, out, enc):
        """Network outputs -> predictions, with the encoding ``enc``."""
        raise NotImplementedError

    def _score_fn(self, y_true, pred, sample_weight):
        raise NotImplementedError

    # -- hyperparameters ----------------------------------------------------------------

    def _hidden_sizes(self):
        hls = self.hidden_layer_sizes
        if isinstance(hls, numbers.Integral):
            return [int(hls)]
        return [int(h) for h in hls]

    def _storage(self):
        """The optimizer's compact-storage options (stochastic rounding for 16-bit state;
        8-bit state is encoded to the nearest code)."""
        if self.state_dtype is None:
            return {}
        if self.state_dtype == "int8":
            return dict(state_dtype="int8")
        return dict(state_dtype=self.state_dtype, rounding="stochastic", seed=0)

    def _make_optimizer(self, params):
        lr = float(self.learning_rate_init)
        if self.solver == "adam":
            return _ScikitLearnAdam(params, lr=lr, betas=(float(self.beta_1),
                                    float(self.beta_2)), eps=float(self.epsilon),
                                    **self._storage())
        if self.solver == "sgd":
            mom = float(self.momentum)
            return _ScikitLearnSGD(params, lr=lr, momentum=mom,
                                   nesterov=bool(self.nesterovs_momentum) and mom > 0,
                                   **self._storage())
        return make_optimizer("rmsprop", params, lr=lr, alpha=float(self.rho),
                              eps=float(self.epsilon), **self._storage())

    # -- weights as attributes ----------------------------------------------------------

    def _bind_views(self):
        """coefs_ / intercepts_: this estimator's own lists of views into net_.params_flat."""
        self.coefs_ = list(self.net_.coefs)
        self.intercepts_ = list(self.net_.intercepts)

    def _sync_params(self):
        """Copy arrays assigned into coefs_ / intercepts_ (``est.coefs_[i] = W``) into the
        parameter buffer and put the views back, so predict and training use the same
        weights."""
        if self._copy_weights_into(self.net_):
            self._bind_views()

    def _copy_weights_into(self, net):
        """Copy this estimator's coefs_ / intercepts_ entries that are not already views
        of `net` into it; True if any was.  Checks every entry before copying any."""
        pairs = []
        for name, mine, views in (("coefs_", self.coefs_, net.coefs),
                                  ("intercepts_", self.intercepts_, net.intercepts)):
            if not isinstance(mine, (list, tuple)) or len(mine) != len(views):
                raise ValueError(f"{name} must be a list of {len(views)} arrays")
            for i, (a, v) in enumerate(zip(mine, views)):
                if a is v:
                    continue
                a = np.asarray(a)
                if a.shape != v.shape or a.dtype.kind not in "biuf":
                    raise ValueError(f"{name}[{i}] must be a real array of shape {v.shape}, "
                                     f"got {a.dtype} of shape {a.shape}")
                pairs.append((v, a))
        for v, a in pairs:
            v[...] = a
        return bool(pairs)

    # -- input checks against the fitted state ------------------------------------------

    def _check_feature_names(self, X, reset):
        names = _feature_names(X)
        if reset:
            return names
        fitted = getattr(self, "feature_names_in_", None)
        cls = type(self).__name__
        if fitted is None and names is not None:
            _warn(f"X has feature names, but {cls} was fitted without feature names",
                  stacklevel=5)
        elif fitted is not None and names is None:
            _warn(f"X does not have valid feature names, but {cls} was fitted with "
                  "feature names", stacklevel=5)
        elif fitted is not None and (len(fitted) != len(names) or (fitted != names).any()):
            msg = "The feature names should match those that were passed during fit.\n"
            unseen = [n for n in names if n not in set(fitted)]
            missing = [n for n in fitted if n not in set(names)]
            if unseen:
                msg += "Feature names unseen at fit time:\n" + "".join(
                    f"- {n}\n" for n in unseen[:5]) + ("- ...\n" if len(unseen) > 5 else "")
            if missing:
                msg += "Feature names seen at fit time, yet now missing:\n" + "".join(
                    f"- {n}\n" for n in missing[:5]) + ("- ...\n" if len(missing) > 5 else "")
            if not unseen and not missing:
                msg += "Feature names must be in the same order as they were in fit.\n"
            raise ValueError(msg)
        return names

    def _check_n_features(self, X):
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} "
                             f"is expecting {self.n_features_in_} features as input.")

    # -- fitting ------------------------------------------------------------------------

    def _fit(self, X, y, *, incremental, sample_weight=None, classes=None,
             validation_data=None):
        """Train; assign the fitted attributes only once training succeeded, so a failed
        call (bad input, divergence, interrupt) leaves the estimator as it was."""
        _validate_params(self)
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        fitted = hasattr(self, "net_")
        first = not fitted or not (incremental or self.warm_start)
        # scikit-learn trains on from coefs_ / intercepts_ set by hand before the first
        # partial_fit (or a warm-start fit): their values are the starting point
        preset = (not fitted and (incremental or self.warm_start)
                  and "coefs_" in self.__dict__ and "intercepts_" in self.__dict__)
        if fitted:
            self._sync_params()
        names = self._check_feature_names(X, reset=first)
        dtype = None if first else self.net_.dtype
        if first and self.dtype is not None:
            dtype = np.dtype(self.dtype)
        X = _check_X(X, dtype)
        dtype = X.dtype
        _check_scale(self, dtype)
        if self.state_dtype is not None and dtype != np.float32 and self.solver != "lbfgs":
            raise ValueError(f"state_dtype={self.state_dtype!r} needs float32 training "
                             f"(dtype=np.float32, or float32 X), got {dtype}")
        if not first:
            self._check_n_features(X)
        y = self._check_y(y)
        _check_lengths(X, y)
        sw = _check_sample_weight(sample_weight, X.shape[0], dtype)
        Y, enc, output, strat = self._encode_y(y, first, classes, incremental)
        _check_representable(Y, dtype, "y")       # regression targets beyond float32's range
        Y = np.ascontiguousarray(Y, dtype=dtype)  # the network's dtype: no cast per batch

        # the network and optimizer to train: fresh ones, or copies of the fitted ones
        sizes = [X.shape[1], *self._hidden_sizes(), Y.shape[1]]
        act = self.activation
        rng = _check_random_state(self.random_state)
        if first:
            net = MLP(sizes, act, output, dtype=dtype, alpha=float(self.alpha), seed=0)
            net.mean_over_outputs = output == "identity"
            if preset:   # scikit-learn draws no weights for a model that has them
                self._copy_weights_into(net)
            else:
                _sklearn_init(net, act, rng)
            fit_state = {"t_": 0, "loss_curve_": [], "_no_improvement_count": 0,
                         "best_loss_": None if self.early_stopping else np.inf,
                         "validation_scores_": [] if self.early_stopping else None,
                         "best_validation_score_": -np.inf if self.early_stopping else None,
                         "val_loss_curve_": []}
        else:
            if list(self.net_.layer_sizes) != sizes or self.net_.output != output:
                raise ValueError(f"the network {list(self.net_.layer_sizes)} fitted before "
                                 f"does not fit these data and parameters ({sizes}); set "
                                 "warm_start=False to refit from scratch")
            net = MLP.__new__(MLP)
            net.__setstate__(self.net_.__getstate__())
            net.alpha = float(self.alpha)
            fit_state = {k: getattr(self, k, None) for k in (
                "t_", "_no_improvement_count", "best_loss_", "best_validation_score_")}
            fit_state["loss_curve_"] = list(getattr(self, "loss_curve_", None) or [])
            fit_state["val_loss_curve_"] = list(getattr(self, "val_loss_curve_", None) or [])
            vs = getattr(self, "validation_scores_", None)
            fit_state["validation_scores_"] = None if vs is None else list(vs)
            if fit_state["t_"] is None:        # fitted by lbfgs before
                fit_state.update(t_=0, _no_improvement_count=0, best_loss_=np.inf,
                                 validation_scores_=None, best_validation_score_=None)
            if self.early_stopping and fit_state["validation_scores_"] is None:
                fit_state.update(validation_scores_=[], best_validation_score_=-np.inf,
                                 best_loss_=None)

        if self.solver == "lbfgs":
            result = dict(self._run_lbfgs(net, X, Y, sw), t_=fit_state["t_"])
        else:
            old = getattr(self, "_optimizer", None) if incremental and fitted else None
            if old is None:
                opt = self._make_optimizer(_optimizer_params(net, self._storage()))
            else:                            # partial_fit goes on with the same optimizer
                storage = _storage_of(old)
                opt = type(old)(_optimizer_params(net, storage), **storage)
                opt.load_state_dict(old.state_dict())
            result = self._run_stochastic(net, opt, X, Y, y, sw, strat, enc, rng, fit_state,
                                          incremental, validation_data)
            result["_optimizer"] = opt
        if not np.isfinite(net.params_flat).all():
            raise DivergenceError("Solver produced non-finite parameter weights. The input "
                                  "data may contain large values and need to be "
                                  "preprocessed.")

        # success: commit everything at once
        for stale in ("feature_names_in_", "loss_curve_", "best_loss_", "validation_scores_",
                      "best_validation_score_", "val_loss_curve_", "_optimizer") if first \
                else ():
            self.__dict__.pop(stale, None)
        if first and names is not None:
            self.feature_names_in_ = names
        self.__dict__.update(enc)
        self.__dict__.update(result)
        self.net_ = net
        self.n_features_in_ = X.shape[1]
        self.n_layers_ = len(sizes)
        self.n_outputs_ = Y.shape[1]
        self._bind_views()
        return self

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight=None, activations=None,
                         deltas=None, coef_grads=None, intercept_grads=None):
        """scikit-learn's (private) L-BFGS objective, for code that calls it, such as
        scikit-learn's own gradient check: set the weights to `packed_coef_inter` (every
        coef, then every intercept, flattened: the layout of ``net_.params_flat``) and
        return (loss, gradient in that layout) on the binarized targets `y`, the loss
        with its L2 term.  Like scikit-learn's, it leaves the weights set; `coef_grads`
        / `intercept_grads` (lists of arrays), when given, receive the gradient;
        `activations` and `deltas` are accepted and not used (the network has its own)."""
        self._check_fitted()
        self._sync_params()
        net = self.net_
        theta = np.asarray(packed_coef_inter)
        if theta.shape != net.params_flat.shape or theta.dtype.kind not in "biuf":
            raise ValueError(f"packed_coef_inter must be a real array of shape "
                             f"{net.params_flat.shape}, got {theta.dtype} {theta.shape}")
        X = _check_X(X, net.dtype)
        self._check_n_features(X)
        Y = np.ascontiguousarray(y, dtype=net.dtype).reshape(X.shape[0], -1)
        if Y.shape[1] != net.layer_sizes[-1]:
            raise ValueError(f"y must have {net.layer_sizes[-1]} column(s) (the binarized "
                             f"targets), got {Y.shape[1]}")
        sw = _check_sample_weight(sample_weight, X.shape[0], net.dtype)
        net.params_flat[...] = theta
        loss = net._loss_grad_batch(X, Y, net._get_views(X.shape[0]), sw)
        for given, own in ((coef_grads, net.coef_grads), (intercept_grads, net.intercept_grads)):
            if given is not None:
                for i, g in enumerate(own):
                    given[i] = g.copy()
        return float(loss), net.grads_flat.astype(np.float64)

    def _run_lbfgs(self, net, X, Y, sw):
        """Full-batch L-BFGS-B from scipy, as scikit-learn's solver="lbfgs"."""
        try:
            from scipy.optimize import minimize
        except ImportError:
            raise ImportError("solver='lbfgs' needs scipy (pip install \"fastoptim[lbfgs]\"); "
                              "the other solvers do not") from None
        n = X.shape[0]
        v = net._get_views(n)
        # one full-batch evaluation per iteration: no batches to time, "auto" = default
        threads = (int(self.kernel_threads)
                   if isinstance(self.kernel_threads, numbers.Integral) else None)

        def loss_grad(x):
            net.params_flat[...] = x
            loss = net._loss_grad_batch(X, Y, v, sw, n_threads=threads)
            return loss, net.grads_flat.astype(np.float64)

        with _blas_threads(net, n, "auto"), np.errstate(over="ignore", invalid="ignore"):
            res = minimize(loss_grad, net.params_flat.astype(np.float64), method="L-BFGS-B",
                           jac=True, options={"maxfun": int(self.max_fun),
                                              "maxiter": int(self.max_iter),
                                              "gtol": float(self.tol)})
        net.params_flat[...] = res.x
        n_iter = min(int(res.nit), int(self.max_iter))
        if res.status != 0:
            msg = (f"lbfgs failed to converge after {n_iter} iteration(s) "
                   f"(status={res.status}):\n{res.message}\n")
            if n_iter == self.max_iter:
                msg += ("\nIncrease the number of iterations to improve the convergence "
                        f"(max_iter={self.max_iter}).")
            msg += ("\nYou might also want to scale the data as shown in:\n"
                    "    https://scikit-learn.org/stable/modules/preprocessing.html")
            _warn(msg, _sk("ConvergenceWarning", ConvergenceWarning), stacklevel=5)
        if not math.isfinite(res.fun):
            raise DivergenceError("Solver produced non-finite parameter weights. The input "
                                  "data may contain large values and need to be "
                                  "preprocessed.")
        return {"n_iter_": n_iter, "loss_": float(res.fun)}

    def _split_validation(self, X, Y, y, sw, strat, rng):
        """scikit-learn's early-stopping split: ceil(validation_fraction * n) rows,
        stratified for binary targets; at least 2 validation rows."""
        n = X.shape[0]
        n_val = math.ceil(self.validation_fraction * n)
        if not 0 < n_val < n:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves an empty "
                             f"training or validation set out of {n} samples; increase "
                             "'validation_fraction' or the size of your dataset.")
        if strat is not None:
            labels, counts = np.unique(strat, return_counts=True)
            if counts.min() < 2:
                # named as scikit-learn's split names them: by the binarized target
                few = ["True" if c == labels[-1] and labels.size == 2 else "False"
                       for c in labels[counts < 2]]
                raise ValueError(
                    "The least populated classes in y have only 1 member, which is too few. "
                    "The minimum number of groups for any class cannot be less than 2. "
                    f"Classes with too few members are: {few}")
            for what, size in (("test_size", n_val), ("train_size", n - n_val)):
                if size < labels.size:
                    raise ValueError(f"The {what} = {size} should be greater or equal to the "
                                     f"number of classes = {labels.size}")
        tr, va = _train_test_split_indices(n, n_val, strat, rng)
        if va.size < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        take = (lambda a, i: None if a is None else a[i])
        return (X[tr], Y[tr], take(sw, tr)), (X[va], take(y, va), take(sw, va), Y[va])

    def _run_stochastic(self, net, opt, X, Y, y, sw, strat, enc, rng, st, incremental,
                        validation_data):
        """scikit-learn's _fit_stochastic: epochs, stopping rule, learning-rate schedule."""
        val = None
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            X_val = _check_X(X_val, net.dtype, "X_val")
            if X_val.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {X_val.shape[1]} features, but X has {X.shape[1]}")
            y_val = self._check_y(y_val)
            _check_lengths(X_val, y_val)
            Y_val = self._encode_y(y_val, False, None, True, enc)[0]
            val = (X_val, y_val, None, Y_val)
        elif self.early_stopping:
            (X, Y, sw), val = self._split_validation(X, Y, y, sw, strat, rng)
        if val is not None and st["validation_scores_"] is None:
            st["validation_scores_"] = []
            st["best_validation_score_"] = -np.inf
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                _warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                      "to be clipped", stacklevel=5)
            batch_size = min(int(self.batch_size), n)
        runner = _Epochs(net, X, Y, opt, batch_size, sw,
                         grad_accumulation=int(self.grad_accumulation),
                         step_in_backward=self.step_in_backward,
                         kernel_threads=self.kernel_threads)
        order = np.arange(n)
        sgd = self.solver == "sgd"
        lr0 = float(self.learning_rate_init)
        early = bool(self.early_stopping)
        best_params = net.params_flat.copy() if early else None
        loss_curve, t = st["loss_curve_"], st["t_"]
        count = st["_no_improvement_count"]
        n_iter = 0
        verbose = bool(self.verbose)
        with runner.threads("auto"):
            for _ in range(int(self.max_iter)):
                if self.shuffle:
                    rng.shuffle(order)
                loss = runner.run(order if self.shuffle else None)
                # with early stopping a diverged epoch scores NaN and the best weights
                # come back at the end (scikit-learn's rule); otherwise stop here
                if not (early or math.isfinite(loss)):
                    raise DivergenceError(
                        "Solver produced non-finite parameter weights. The input data may "
                        f"contain large values and need to be preprocessed. (The training "
                        f"loss became {loss} at iteration {n_iter + 1}: scale the input "
                        "data, or lower learning_rate_init or alpha.)")
                n_iter += 1
                t += n
                loss_curve.append(loss)
                if verbose:
                    print(f"Iteration {n_iter}, loss = {loss:.8f}")
                if val is not None:
                    X_v, y_v, sw_v, Y_v = val
                    out = net.forward(X_v)
                    st["val_loss_curve_"].append(net.loss(X_v, Y_v, penalty=False))
                    score = (self._score_fn(y_v, self._decode(out, enc), sw_v)
                             if np.isfinite(out).all() else float("nan"))
                    st["validation_scores_"].append(score)
                    if verbose:
                        print(f"Validation score: {score:f}")
                if early:
                    best_vs = st["best_validation_score_"]
                    count = count + 1 if score < best_vs + self.tol else 0   # nan: reset
                    if score > best_vs:
                        st["best_validation_score_"] = score
                        np.copyto(best_params, net.params_flat)
                else:
                    best = st["best_loss_"]
                    count = count + 1 if loss > best - self.tol else 0
                    st["best_loss_"] = min(best, loss)
                    if val is not None:
                        st["best_validation_score_"] = max(st["best_validation_score_"],
                                                           st["validation_scores_"][-1])
                if sgd and self.learning_rate == "invscaling":
                    try:
                        _set_sgd_lr(opt, lr0 / (t + 1) ** float(self.power_t))
                    except OverflowError:        # a huge power_t: the rate is 0
                        _set_sgd_lr(opt, 0.0)
                if count > self.n_iter_no_change:
                    what = "Validation score" if early else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    lr = opt.param_groups[0]["lr"]
                    if sgd and self.learning_rate == "adaptive" and lr > 1e-6:
                        _set_sgd_lr(opt, lr / 5.0)
                        count = 0
                        if verbose:
                            print(msg + f" Setting learning rate to {lr / 5.0:f}")
                    else:
                        if verbose:
                            print(msg + (" Learning rate too small. Stopping."
                                         if sgd and self.learning_rate == "adaptive"
                                         else " Stopping."))
                        break
                if incremental:
                    break
                if n_iter == self.max_iter:
                    _warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          _sk("ConvergenceWarning", ConvergenceWarning), stacklevel=5)
        if early:
            np.copyto(net.params_flat, best_params)
        result = dict(st, _no_improvement_count=count, t_=t, n_iter_=n_iter,
                      loss_=loss_curve[-1])
        if val is None:
            result.pop("val_loss_curve_")
        return result

    def fit(self, X, y, sample_weight=None, *, validation_data=None):
        """Train for up to ``max_iter`` epochs (L-BFGS iterations); return self.

        ``sample_weight``: per-row weights (scikit-learn's weighting: each row's loss and
        gradient times its weight, divided by the sum of the weights).
        ``validation_data=(X_val, y_val)`` (fastoptim extension): validate on these rows
        every epoch (``val_loss_curve_``, ``validation_scores_``) instead of splitting
        ``validation_fraction`` off the training data; with ``early_stopping`` training
        stops on their score.
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight,
                         validation_data=validation_data)

    def _check_partial_fit(self):
        if self.solver not in ("sgd", "adam", "rmsprop"):
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise _sk("NotFittedError", NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    def _forward(self, X):
        self._check_fitted()
        self._sync_params()
        self._check_feature_names(X, reset=False)
        X = _check_X(X, self.net_.dtype)
        self._check_n_features(X)
        return self.net_.forward(X)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy (classifier) or R^2 (regressor) of predict(X) against y."""
        self._check_fitted()
        y = self._check_y(y)
        pred = self.predict(X)
        _check_lengths(pred.reshape(len(pred), -1), y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, len(y), np.float64)
        return self._score_fn(y, pred, sample_weight)


class _partial_fit_only_stochastic:
    """partial_fit exists only for stochastic solvers (hasattr is False for lbfgs), as
    scikit-learn's ``available_if``."""

    def __init__(self, method):
        self.method = method
        self.__doc__ = method.__doc__

    def __get__(self, est, owner=None):
        if est is None:
            return self.method
        est._check_partial_fit()
        return self.method.__get__(est, owner)


_COMMON_DOC = """
    Parameters are scikit-learn's (same names, defaults, checks and meaning) plus ``rho``
    (RMSprop's squared-gradient decay, solver="rmsprop"), ``dtype`` (None: follow X,
    float32 stays float32, the rest trains in float64), ``state_dtype`` (None, or
    "bfloat16" / "float16": the optimizer's state stored in 16 bits with stochastic
    rounding; "int8": bitsandbytes' 8-bit blockwise state for each layer's weights and
    biases of 4,096 elements or more, float32 for smaller ones; README "Compact
    precision"; it needs float32 training), ``grad_accumulation`` (each
    mini-batch's gradient in that many micro-batches: less activation memory, the same
    step within rounding), ``step_in_backward`` (True/False/"auto": step each layer
    as soon as its gradient is final; see :func:`fastoptim.nn.train`) and
    ``kernel_threads`` ("auto", None or an int: fastoptim's own kernel threads while
    training, as :func:`fastoptim.nn.train`'s; the results do not depend on it).  ``max_iter`` counts epochs
    (iterations for "lbfgs"); without ``early_stopping`` training stops when the training
    loss has not improved by ``tol`` for more than ``n_iter_no_change`` epochs; with it,
    ``validation_fraction`` of the training data is held out (stratified for binary y),
    training stops on the validation score and the best epoch's weights are restored.

    Fitted attributes (scikit-learn's): ``coefs_``, ``intercepts_`` (views into
    ``net_.params_flat``; arrays assigned into them are used and trained), ``n_iter_``
    (this call's epochs), ``t_``, ``loss_``, ``loss_curve_``, ``best_loss_``,
    ``validation_scores_``, ``best_validation_score_``, ``n_features_in_``,
    ``feature_names_in_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``; plus
    ``net_`` (the :class:`~fastoptim.nn.MLP`) and ``val_loss_curve_`` (with validation).
"""


class MLPClassifier(_BaseMLP):
    """Multi-layer perceptron classifier (softmax / logistic outputs, log-loss).

    Multiclass y: softmax output; binary y: one logistic unit; a 2-D 0/1 indicator y
    (multilabel): one logistic unit per label; one class: fits and predicts it.
    """ + _COMMON_DOC

    _estimator_type = "classifier"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 rho=0.99, dtype=None, state_dtype=None, grad_accumulation=1,
                 step_in_backward="auto", kernel_threads="auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.rho = rho
        self.dtype = dtype
        self.state_dtype = state_dtype
        self.grad_accumulation = grad_accumulation
        self.step_in_backward = step_in_backward
        self.kernel_threads = kernel_threads

    def _check_y(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             "target y is None")
        _refuse_masked(y, "y")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                          "change the shape of y to (n_samples, ), for example using "
                          "ravel().", _sk("DataConversionWarning", DataConversionWarning),
                          stacklevel=4)
            y = y.ravel()
        if y.ndim == 2:
            if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all() or y.shape[1] < 2:
                raise ValueError("Multioutput target data is not supported: a 2-D y must be "
                                 "a 0/1 label indicator matrix (multilabel)")
            return y
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels or a 2-D label indicator matrix, "
                             f"got shape {y.shape}")
        if y.dtype.kind == "f":
            if not np.isfinite(y).all():
                raise ValueError("Input y contains NaN or infinity.")
            if not np.array_equal(y, np.round(y)):
                raise ValueError("Unknown label type: continuous. Class labels must be "
                                 "discrete (ints, strings, ...); use MLPRegressor for "
                                 "continuous targets.")
        if y.dtype.kind == "O":
            try:
                bad = any(v is None or (isinstance(v, float) and not np.isfinite(v)) for v in y)
            except TypeError:
                bad = False
            if bad:
                raise ValueError("Input y contains missing labels (None or NaN).")
        return y

    def _encode_y(self, y, first, classes, incremental, enc=None):
        if enc is None and not first:
            enc = {"classes_": self.classes_, "_y_type": self._y_type}
        if enc is None:                  # first fit: the label encoding of this y
            if y.ndim == 2:
                y_type, all_classes = "multilabel", np.arange(y.shape[1])
            else:
                source = y if classes is None else np.asarray(classes)
                if source.ndim != 1:
                    raise ValueError("classes must be a 1-D array of labels")
                all_classes = np.unique(source)
                if classes is not None and not np.isin(np.unique(y), all_classes).all():
                    raise ValueError(f"`y` has classes not in `classes`. `classes` has "
                                     f"{all_classes}. 'y' has {np.unique(y)}.")
                y_type = "multiclass" if all_classes.size > 2 else "binary"
            enc = {"classes_": all_classes, "_y_type": y_type,
                   "out_activation_": "softmax" if y_type == "multiclass" else "logistic"}
        else:
            y_type = enc["_y_type"]
            if (y.ndim == 2) != (y_type == "multilabel") or (
                    y.ndim == 2 and y.shape[1] != enc["classes_"].size):
                raise ValueError("y has a different type of target than at fit "
                                 f"({y_type})")
            if y.ndim == 1:
                present = np.unique(y)
                if self.warm_start and not incremental and \
                        set(present.tolist()) != set(enc["classes_"].tolist()):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {enc['classes_']}, `y` "
                        f"has {present}")
                if not np.isin(present, enc["classes_"]).all():
                    raise ValueError(f"`y` has classes not in `self.classes_`. "
                                     f"`self.classes_` has {enc['classes_']}. 'y' has "
                                     f"{present}.")
        cls = enc["classes_"]
        if y_type == "multilabel":
            Y = np.asarray(y, dtype=np.float64)
        elif y_type == "binary":         # one class: all targets 0, as scikit-learn
            Y = (y == cls[-1]).astype(np.float64).reshape(-1, 1) if cls.size == 2 \
                else np.zeros((y.shape[0], 1))
        else:
            Y = np.zeros((y.shape[0], cls.size))
            Y[np.arange(y.shape[0]), np.searchsorted(cls, y)] = 1
        strat = y if y_type == "binary" else None
        output = "softmax" if y_type == "multiclass" else "logistic"
        return Y, enc, output, strat

    def _decode(self, out, enc):
        cls, y_type = enc["classes_"], enc["_y_type"]
        if y_type == "multilabel":
            return (out > 0.5).astype(int)
        if y_type == "binary":
            p = out[:, 0]
            return cls[(p > 0.5).astype(np.intp)] if cls.size == 2 else \
                np.full(len(p), cls[0], dtype=cls.dtype)
        return cls[np.argmax(out, axis=1)]

    def _score_fn(self, y_true, pred, sample_weight):
        return _accuracy(y_true, pred, sample_weight)

    @_partial_fit_only_stochastic
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), keeping weights and optimizer state between calls.

        ``classes`` (all labels that will ever appear) is required on the first call
        (for a multilabel indicator y, the labels are its columns, as scikit-learn).
        """
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if not first and classes is not None and not np.array_equal(
                np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"`classes={np.asarray(classes)!r}` is not the same as on last "
                             f"call to partial_fit, was: {self.classes_!r}")
        return self._fit(X, y, incremental=True, sample_weight=sample_weight,
                         classes=classes)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order
        (binary and single-class: ``[1 - p, p]``, as scikit-learn)."""
        out = self._forward(X)
        if self._y_type == "binary":
            p = out[:, 0]
            return np.column_stack([1 - p, p])
        return out

    def predict_log_proba(self, X):
        p = self.predict_proba(X)
        return np.log(p, out=p)

    def predict(self, X):
        """The most probable label (from ``classes_``) for each row; a 0/1 indicator
        matrix for multilabel y."""
        return self._decode(self._forward(X), {"classes_": self.classes_,
                                               "_y_type": self._y_type})


class MLPRegressor(_BaseMLP):
    """Multi-layer perceptron regressor: identity output with the squared error, or
    (``loss="poisson"``) exp output with the half Poisson deviance (y >= 0).
    """ + _COMMON_DOC

    _estimator_type = "regressor"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 rho=0.99, dtype=None, state_dtype=None, grad_accumulation=1,
                 step_in_backward="auto", kernel_threads="auto"):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.rho = rho
        self.dtype = dtype
        self.state_dtype = state_dtype
        self.grad_accumulation = grad_accumulation
        self.step_in_backward = step_in_backward
        self.kernel_threads = kernel_threads

    def _check_y(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             "target y is None")
        _refuse_masked(y, "y")
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            try:
                y = y.astype(np.float64)
            except (ValueError, TypeError, OverflowError):
                raise ValueError(f"y must hold real numbers within the float range, got "
                                 f"dtype {y.dtype}") from None
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                          "change the shape of y to (n_samples, ), for example using "
                          "ravel().", _sk("DataConversionWarning", DataConversionWarning),
                          stacklevel=4)
            y = y.ravel()
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity.")
        return y

    def _encode_y(self, y, first, classes, incremental, enc=None):
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression.")
        output = "exp" if self.loss == "poisson" else "identity"
        if enc is None:
            enc = {"out_activation_": output}
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        return Y, enc, output, None

    def _decode(self, out, enc):
        return out.ravel() if out.shape[1] == 1 else out

    def _score_fn(self, y_true, pred, sample_weight):
        return _r2(y_true, pred, sample_weight)

    @_partial_fit_only_stochastic
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), keeping weights and optimizer state between calls."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X):
        """Predicted targets, shape (n_samples,) for one output else (n_samples, n_outputs)."""
        return self._decode(self._forward(X), None)
