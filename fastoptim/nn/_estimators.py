"""scikit-learn-compatible ``MLPClassifier`` / ``MLPRegressor`` on :class:`~fastoptim.nn.MLP`.

Drop-in for scikit-learn's classes of the same names: the same constructor parameters
(where they mean the same), ``fit`` / ``partial_fit`` / ``predict`` / ``predict_proba`` /
``score``, ``get_params`` / ``set_params`` and fitted attributes with a trailing
underscore.  scikit-learn is NOT imported (``__sklearn_tags__`` imports it lazily, and
is only ever called by scikit-learn itself).

Differences from scikit-learn's classes:

* ``solver``: "adam", "sgd" (``momentum``, ``nesterovs_momentum``, ``learning_rate``
  schedules) and "rmsprop" (decay ``rho``, ``epsilon``); no "lbfgs" (``max_fun`` is
  accepted and ignored).  Every update is one fused fastoptim kernel call over the whole
  network (``fastoptim.optim``, torch.optim semantics).
* ``early_stopping=True`` stops on the **validation loss** (not the score) and restores
  the weights of the best epoch; ``validation_scores_`` (accuracy / R^2) and
  ``val_loss_curve_`` are recorded per epoch.
* Binary classification uses a 2-unit softmax output (scikit-learn: one logistic unit),
  so the last entry of ``coefs_`` has 2 columns.
* ``dtype`` (default float32) selects the precision of parameters and computations;
  ``predict_proba`` returns that dtype (regressor predictions are float64).
* ``fit(X, y, validation_data=(X_val, y_val))`` validates on given rows instead of a
  split; NumPy's BLAS is limited to one thread while training small networks when
  threadpoolctl is installed (faster, and immune to oversubscription).
"""

import inspect
import numbers
import sys
import warnings

import numpy as np

from ._network import MLP
from ._training import make_optimizer, train

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
        return state

    def __setstate__(self, state):
        state = dict(state)
        opt_state = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if "net_" in state:
            self._bind_views()
            if opt_state is not None:
                cls, opt_state = opt_state
                self._optimizer = cls([self.net_.params_flat])
                self._optimizer.load_state_dict(opt_state)

    def _bind_views(self):
        """coefs_ / intercepts_: this estimator's own lists of views into net_.params_flat."""
        self.coefs_ = list(self.net_.coefs)
        self.intercepts_ = list(self.net_.intercepts)

    def _sync_params(self):
        """Copy arrays assigned into coefs_ / intercepts_ (``est.coefs_[i] = W``) into the
        parameter buffer and put the views back, so predict and training use the same
        weights.  Checks every entry before copying any."""
        net = self.net_
        pairs = []
        for name, mine, views in (("coefs_", self.coefs_, net.coefs),
                                  ("intercepts_", self.intercepts_, net.intercepts)):
            if not isinstance(mine, list) or len(mine) != len(views):
                raise ValueError(f"{name} must be a list of {len(views)} arrays")
            for i, (a, v) in enumerate(zip(mine, views)):
                if a is v:
                    continue
                a = np.asarray(a)
                if a.shape != v.shape or a.dtype.kind not in "biuf":
                    raise ValueError(f"{name}[{i}] must be a real array of shape {v.shape}, "
                                     f"got {a.dtype} of shape {a.shape}")
                pairs.append((v, a))
        if pairs:
            for v, a in pairs:
                v[...] = a
            self._bind_views()

    def __sklearn_tags__(self):
        from sklearn.utils import (ClassifierTags, InputTags, RegressorTags, Tags,
                                   TargetTags)
        clf = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True, single_output=True,
                                   multi_output=not clf),
            transformer_tags=None,
            classifier_tags=ClassifierTags(multi_class=True, multi_label=False) if clf else None,
            regressor_tags=None if clf else RegressorTags(),
            input_tags=InputTags(two_d_array=True, allow_nan=False, sparse=False),
            non_deterministic=False,
        )


def _short_repr(value):
    if isinstance(value, type):
        return value.__name__ if value.__module__ == "builtins" else f"np.{value.__name__}"
    return repr(value)


# ---- input checks -----------------------------------------------------------------------

def _check_X(X, dtype, name="X"):
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise TypeError(f"sparse input is not supported; pass a dense array "
                        f"(e.g. {name}.toarray())")
    if hasattr(X, "__array__") or isinstance(X, (list, tuple)):
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
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"Input {name} contains NaN or infinity.")
    return arr


def _check_lengths(X, y):
    if X.shape[0] != len(y):
        raise ValueError(f"X and y have inconsistent numbers of samples: "
                         f"{X.shape[0]} != {len(y)}")


def _as_rng(random_state):
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, (np.random.Generator, type(None))) or (
            isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, an int, a numpy Generator or RandomState, "
                     f"got {random_state!r}")


def _real(name, value, lo, hi=None, lo_open=False, hi_open=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (
            hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open or hi is None else "]"
        raise ValueError(f"The '{name}' parameter must be a real number in "
                         f"{lb}{lo}, {'inf' if hi is None else hi}{rb}, got {value!r}.")
    return float(value)


def _int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"The '{name}' parameter must be an int >= {lo}, got {value!r}.")
    return int(value)


def _choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"The '{name}' parameter must be one of "
                         f"{', '.join(map(repr, allowed))}, got {value!r}.")
    return value


# ---- the estimators ----------------------------------------------------------------------

class _BaseMLP(_ParamsMixin):
    _output = None

    def _validate_params(self):
        hls = self.hidden_layer_sizes
        if isinstance(hls, numbers.Integral) and not isinstance(hls, bool):
            hls = (hls,)
        try:
            hls = tuple(hls)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes must be an int or a sequence of ints, "
                             f"got {self.hidden_layer_sizes!r}") from None
        for h in hls:
            _int("hidden_layer_sizes", h, 1)
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not supported by fastoptim; use 'adam', "
                             "'sgd' or 'rmsprop'")
        _choice("solver", self.solver, ("adam", "sgd", "rmsprop"))
        _choice("activation", self.activation, ("identity", "logistic", "sigmoid", "tanh", "relu"))
        _choice("learning_rate", self.learning_rate, ("constant", "invscaling", "adaptive"))
        _real("alpha", self.alpha, 0.0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _int("batch_size", self.batch_size, 1)
        _real("learning_rate_init", self.learning_rate_init, 0.0, lo_open=True)
        _real("power_t", self.power_t, 0.0)
        _int("max_iter", self.max_iter, 1)
        _real("tol", self.tol, 0.0)
        _real("momentum", self.momentum, 0.0, 1.0)
        _real("validation_fraction", self.validation_fraction, 0.0, 1.0, True, True)
        _real("beta_1", self.beta_1, 0.0, 1.0, hi_open=True)
        _real("beta_2", self.beta_2, 0.0, 1.0, hi_open=True)
        _real("rho", self.rho, 0.0, 1.0)
        _real("epsilon", self.epsilon, 0.0, lo_open=True)
        _int("n_iter_no_change", self.n_iter_no_change, 1)
        for flag in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"The '{flag}' parameter must be a bool, got "
                                 f"{getattr(self, flag)!r}.")
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            dt = None
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError("The 'dtype' parameter must be float32 or float64, "
                             f"got {self.dtype!r}.")
        return hls, dt

    # -- pieces the subclasses fill in --------------------------------------------------

    def _check_y(self, y):  # validated y (raises ValueError)
        raise NotImplementedError

    def _encode_y(self, y, first, classes=None):  # -> (dense targets Y, labels to stratify)
        raise NotImplementedError

    # -- fitting ------------------------------------------------------------------------

    def _make_optimizer(self, params):
        lr = float(self.learning_rate_init)
        if self.solver == "adam":
            return make_optimizer("adam", params, lr=lr, betas=(float(self.beta_1),
                                  float(self.beta_2)), eps=float(self.epsilon))
        if self.solver == "sgd":
            mom = float(self.momentum)
            return make_optimizer("sgd", params, lr=lr, momentum=mom,
                                  nesterov=bool(self.nesterovs_momentum) and mom > 0)
        return make_optimizer("rmsprop", params, lr=lr, alpha=float(self.rho),
                              eps=float(self.epsilon))

    def _fit(self, X, y, *, incremental, classes=None, validation_data=None):
        hls, dtype = self._validate_params()
        X = _check_X(X, dtype)
        y = self._check_y(y)
        _check_lengths(X, y)
        fitted = hasattr(self, "net_")
        if fitted and (incremental or self.warm_start):
            self._sync_params()
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} "
                                 f"is expecting {self.n_features_in_} features as input.")
        first = not fitted or not (incremental or self.warm_start)
        Y, strat = self._encode_y(y, first, classes)
        n = X.shape[0]
        rng = _as_rng(self.random_state) if first or not hasattr(self, "_rng") else self._rng
        self._rng = rng

        X_val = Y_val = None
        early = bool(self.early_stopping) and not incremental
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            X_val = _check_X(X_val, dtype, "X_val")
            if X_val.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {X_val.shape[1]} features, but X has {X.shape[1]}")
            y_val = self._check_y(y_val)
            _check_lengths(X_val, y_val)
            Y_val, _ = self._encode_y(y_val, False)
        elif early:
            n_val = int(np.ceil(self.validation_fraction * n))
            if not 0 < n_val < n:
                raise ValueError(f"validation_fraction={self.validation_fraction} leaves no "
                                 f"training or validation samples out of {n}")
            from fastoptim.datasets._split import _split_indices
            use_strat = strat is not None and np.unique(strat).size <= n_val \
                and np.bincount(strat).min() >= 2
            tr, va = _split_indices(strat if use_strat else None, n, n_val, use_strat, rng)
            X, X_val, Y, Y_val = X[tr], X[va], Y[tr], Y[va]
            n = X.shape[0]

        n_out = Y.shape[1]
        sizes = [X.shape[1], *hls, n_out]
        if first or list(self.net_.layer_sizes) != sizes or self.net_.dtype != dtype:
            act = "sigmoid" if self.activation == "logistic" else self.activation
            self.net_ = MLP(sizes, act, self._output, dtype=dtype, alpha=float(self.alpha),
                            seed=rng)
            self.loss_curve_ = []
            self.t_ = 0
            self.n_iter_ = 0
            self.val_loss_curve_ = []
            self.validation_scores_ = [] if X_val is not None else None
            self.best_loss_ = np.inf
            self.best_validation_score_ = None
        else:
            self.net_.alpha = float(self.alpha)
        net = self.net_
        self.n_features_in_ = X.shape[1]
        self._bind_views()
        self.n_layers_ = len(sizes)
        self.n_outputs_ = n_out
        self.out_activation_ = self._output

        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer([net.params_flat])
        opt = self._optimizer
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            batch_size = min(int(self.batch_size), n)

        lr_fn = on_plateau = None
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            lr0, pt, t0 = float(self.learning_rate_init), float(self.power_t), self.t_

            def lr_fn(seen):
                return lr0 / (t0 + seen + 1) ** pt
        if self.solver == "sgd" and self.learning_rate == "adaptive":
            def on_plateau():
                lr = opt.param_groups[0]["lr"]
                if lr <= 1e-6:
                    return True
                for g in opt.param_groups:
                    g["lr"] = lr / 5.0
                if self.verbose:
                    print(f"Setting learning rate to {lr / 5.0:f}")
                return False

        epochs = 1 if incremental else int(self.max_iter)
        hist = train(net, X, Y, opt, epochs=epochs, batch_size=batch_size,
                     shuffle=bool(self.shuffle), seed=rng, X_val=X_val, Y_val=Y_val,
                     early_stopping=not incremental, monitor="val_loss" if early else "train_loss",
                     patience=int(self.n_iter_no_change), tol=float(self.tol),
                     restore_best_weights=early, on_plateau=on_plateau, lr_fn=lr_fn,
                     verbose=bool(self.verbose))
        self.history_ = hist
        self.n_iter_ += hist.n_epochs
        self.t_ += hist.n_epochs * n
        self.loss_curve_.extend(hist.train_loss)
        self.loss_ = self.loss_curve_[-1]
        if X_val is not None:
            self.val_loss_curve_.extend(hist.val_loss)
            scores = hist.val_accuracy if self._output == "softmax" else hist.val_r2
            if self.validation_scores_ is None:
                self.validation_scores_ = []
            self.validation_scores_.extend(scores)
            self.best_validation_score_ = scores[hist.best_epoch] if scores else None
        if early:
            self.best_loss_ = None
        else:
            self.best_loss_ = min(self.best_loss_ if self.best_loss_ is not None else np.inf,
                                  min(hist.train_loss))
        if not incremental and not hist.stopped_early and hist.n_epochs == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          _sk("ConvergenceWarning", ConvergenceWarning), stacklevel=3)
        return self

    def fit(self, X, y, *, validation_data=None):
        """Train for up to ``max_iter`` epochs (see the class docstring); return self.

        ``validation_data=(X_val, y_val)`` (fastoptim extension): validate on these rows
        every epoch (``val_loss_curve_``, ``validation_scores_``) instead of splitting
        ``validation_fraction`` off the training data; with ``early_stopping`` training
        stops on their loss.
        """
        return self._fit(X, y, incremental=False, validation_data=validation_data)

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise _sk("NotFittedError", NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator.")

    def _forward(self, X):
        self._check_fitted()
        self._sync_params()
        X = _check_X(X, self.net_.dtype)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        return self.net_.forward(X)


class MLPClassifier(_BaseMLP):
    """Multi-layer perceptron classifier (softmax output, cross-entropy loss).

    Parameters are scikit-learn's ``MLPClassifier`` parameters (same names, defaults and
    meaning) plus ``rho`` (RMSprop's squared-gradient decay, solver="rmsprop") and
    ``dtype``.  ``max_iter`` counts epochs; without ``early_stopping`` training stops when
    the training loss has not improved by ``tol`` for more than ``n_iter_no_change``
    epochs (scikit-learn's rule).  With ``early_stopping``, ``validation_fraction`` of the
    training data (stratified) is held out, training stops on the validation loss, and
    the best epoch's weights are restored.

    Fitted attributes: ``classes_``, ``coefs_``, ``intercepts_`` (views into
    ``net_.params_flat``), ``net_`` (the :class:`~fastoptim.nn.MLP`), ``n_iter_``,
    ``t_``, ``loss_``, ``loss_curve_``, ``best_loss_``, ``val_loss_curve_``,
    ``validation_scores_`` (validation accuracy per epoch), ``best_validation_score_``,
    ``history_``, ``n_features_in_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``.
    """

    _estimator_type = "classifier"
    _output = "softmax"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 rho=0.99, dtype=np.float32):
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

    def _check_y(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             "target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; "
                          "it was raveled to shape (n_samples,).",
                          _sk("DataConversionWarning", DataConversionWarning), stacklevel=4)
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels, got shape {y.shape} "
                             "(multi-label / multi-output classification is not supported)")
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

    def _encode_y(self, y, first, classes=None):
        if first:
            if classes is not None:
                all_classes = np.unique(np.asarray(classes))
            else:
                all_classes = np.unique(y)
            if all_classes.size < 2:
                raise ValueError(f"The number of classes has to be greater than one; got "
                                 f"{all_classes.size} class ({all_classes!r})")
            self.classes_ = all_classes
        idx = self._label_index(y)
        Y = np.zeros((y.shape[0], self.classes_.size), dtype=np.dtype(self.dtype))
        Y[np.arange(y.shape[0]), idx] = 1
        return Y, idx

    def _label_index(self, y, what="y"):
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, self.classes_.size - 1)
        unseen = self.classes_[idx] != y
        if np.any(unseen):
            raise ValueError(f"{what} contains labels not seen at fit: "
                             f"{np.unique(np.asarray(y)[unseen]).tolist()!r}")
        return idx

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), keeping weights and optimizer state between calls.

        ``classes`` (all labels that will ever appear) is required on the first call.
        """
        if not hasattr(self, "net_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, incremental=True, classes=classes)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        return self._forward(X)

    def predict_log_proba(self, X):
        p = self.predict_proba(X)
        return np.log(np.clip(p, np.finfo(p.dtype).tiny, None), out=p)

    def predict(self, X):
        """The most probable label (from ``classes_``) for each row."""
        proba = self._forward(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on (X, y); labels unseen at fit count as wrong (as scikit-learn)."""
        self._check_fitted()
        y = self._check_y(y)
        pred = self.predict(X)
        _check_lengths(pred.reshape(-1, 1), y)
        hit = (pred == y).astype(np.float64)
        if sample_weight is None:
            return float(hit.mean())
        return float(np.average(hit, weights=np.asarray(sample_weight, dtype=np.float64)))


class MLPRegressor(_BaseMLP):
    """Multi-layer perceptron regressor (identity output, squared-error loss).

    Same parameters as :class:`MLPClassifier` (scikit-learn's ``MLPRegressor``), plus
    ``loss`` (only "squared_error").  ``loss_curve_`` holds scikit-learn's
    ``sum((y - pred)**2) / (2 n)`` (+ the L2 term); ``validation_scores_`` are R^2.
    """

    _estimator_type = "regressor"
    _output = "identity"

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 rho=0.99, dtype=np.float32):
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

    def _validate_params(self):
        _choice("loss", self.loss, ("squared_error",))
        return super()._validate_params()

    def _check_y(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             "target y is None")
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            try:
                y = y.astype(np.float64)
            except (ValueError, TypeError):
                raise ValueError(f"y must hold numbers, got dtype {y.dtype}") from None
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity.")
        return y

    def _encode_y(self, y, first, classes=None):
        if first:
            self._y_1d = y.ndim == 1
        elif (y.ndim == 1) != self._y_1d:
            raise ValueError("y must have the same number of dimensions as at fit")
        Y = np.ascontiguousarray(y.reshape(-1, 1) if y.ndim == 1 else y,
                                 dtype=np.dtype(self.dtype))
        return Y, None

    def partial_fit(self, X, y):
        """One epoch over (X, y), keeping weights and optimizer state between calls."""
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predicted targets, shape (n_samples,) if fitted on 1-D y else (n_samples, n_outputs)."""
        out = self._forward(X).astype(np.float64)
        return out.ravel() if self._y_1d else out

    def score(self, X, y, sample_weight=None):
        """R^2 (coefficient of determination), averaged uniformly over outputs."""
        self._check_fitted()
        y = self._check_y(y)
        pred = self.predict(X).astype(np.float64)
        _check_lengths(pred.reshape(len(pred), -1), y)
        y2 = y.reshape(len(y), -1).astype(np.float64)
        p2 = pred.reshape(len(pred), -1)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        ss_res = np.average((y2 - p2) ** 2, axis=0, weights=w)
        ss_tot = np.average((y2 - np.average(y2, axis=0, weights=w)) ** 2, axis=0, weights=w)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                          np.where(ss_res > 0, 0.0, 1.0))
        return float(r2.mean())
