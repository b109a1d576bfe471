"""K-fold model selection for fastoptim estimators (NumPy + joblib only).

* :class:`KFold` / :class:`StratifiedKFold` -- seeded splitters, ``split(X, y)``
  yields ``(train_idx, val_idx)``.
* :class:`KFoldSearch` -- trains every hyperparameter set on K-1 folds, validates on
  the held-out fold, and keeps the set with the **lowest mean validation loss**
  (log-loss from ``predict_proba`` for classifiers, mean squared error for
  regressors).  Afterwards it either refits that set on all the data
  (``refit=True``), keeps its K fold models as a majority-vote
  :class:`~fastoptim.ensemble.VotingEnsemble` (``refit="ensemble"``), or both
  (``refit="both"``).
* :func:`clone` -- ``type(est)(**est.get_params())``; scikit-learn is not needed.

Fits run through ``joblib.Parallel(n_jobs=...)``.  The backend is whatever joblib is
configured to use, so ``with joblib.parallel_config(backend="dask"): search.fit(X, y)``
runs the same search on a Dask cluster.  Every fit is seeded from
``(random_state, fold)`` -- not from the worker -- so results do not depend on
``n_jobs`` or the backend.
"""

import inspect
import itertools
import numbers
import os
import re
import threading
import time
import warnings
from collections.abc import Mapping

import numpy as np

from .ensemble import VotingEnsemble, is_classifier
from .nn._estimators import NotFittedError, _sk

__all__ = [
    "KFold",
    "StratifiedKFold",
    "KFoldSearch",
    "FitFailedWarning",
    "ParameterGrid",
    "VotingEnsemble",
    "clone",
    "log_loss",
    "mean_squared_error",
    "accuracy_score",
    "r2_score",
]

_EPS = 1e-15  # probability clipping for the log-loss


class FitFailedWarning(RuntimeWarning):
    """Some fits of a search raised; they count as failed (as scikit-learn's)."""


# --------------------------------------------------------------------------- helpers
def _check_estimator(estimator):
    if inspect.isclass(estimator) or not callable(getattr(estimator, "get_params", None)):
        raise TypeError(f"estimator must be an estimator instance with get_params() "
                        f"(scikit-learn's API), got {type(estimator).__name__}")


def clone(estimator, **params):
    """A new, unfitted estimator with the same constructor parameters (plus ``params``)."""
    _check_estimator(estimator)
    kwargs = dict(estimator.get_params(deep=False) if _accepts_deep(estimator)
                  else estimator.get_params())
    kwargs.update(params)
    return type(estimator)(**kwargs)


def _accepts_deep(estimator):
    try:
        estimator.get_params(deep=False)
    except TypeError:
        return False
    return True


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def _check_seed(seed, generator_ok=True):
    """None, an int >= 0 or (if ``generator_ok``) a np.random.Generator."""
    if seed is None or (generator_ok and isinstance(seed, np.random.Generator)):
        return seed
    if not _is_int(seed):
        raise TypeError(f"random_state must be None{', a Generator' if generator_ok else ''} "
                        f"or an int >= 0, got {seed!r}")
    if seed < 0:
        raise ValueError(f"random_state must be >= 0, got {seed}")
    return int(seed)


def _check_random_state(seed):
    seed = _check_seed(seed)
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _num_samples(X):
    shape = getattr(X, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise ValueError("X must have at least one dimension (one row per sample), "
                             "got a 0-d array")
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        raise TypeError(f"X must be array-like (one row per sample), got "
                        f"{type(X).__name__}") from None


def _check_n_jobs(n_jobs):
    if n_jobs is None:
        return None
    if not _is_int(n_jobs):
        raise TypeError(f"n_jobs must be None or an int, got {n_jobs!r}")
    if n_jobs == 0:
        raise ValueError("n_jobs must not be 0 (None or 1: one job, -1: all cores)")
    return int(n_jobs)


def _runs_locally():
    """Whether joblib's active backend runs on this machine (not e.g. a Dask cluster)."""
    try:
        from joblib._parallel_backends import (LokyBackend, MultiprocessingBackend,
                                               SequentialBackend, ThreadingBackend)
        from joblib.parallel import get_active_backend
    except ImportError:  # pragma: no cover - another joblib layout: assume local
        return True
    backend, _ = get_active_backend()
    return isinstance(backend, (LokyBackend, MultiprocessingBackend, SequentialBackend,
                                ThreadingBackend))


def _capped_n_jobs(n_jobs):
    """``(n_jobs to use, note)``: more workers than usable cores (``joblib.cpu_count()``,
    which respects CPU affinity and container quotas) only slow a local run down and can
    exhaust memory, so a larger request is cut to the core count and ``note`` says so
    (else None).  Backends that run elsewhere (Dask) are left alone."""
    import joblib

    n_jobs = _check_n_jobs(n_jobs)
    wanted = joblib.effective_n_jobs(n_jobs)
    cores = joblib.cpu_count()
    if wanted <= cores or not _runs_locally():
        return n_jobs, None
    return cores, (f"n_jobs={wanted} is more than the {cores} usable CPU core(s); "
                   f"using {cores} workers")


def _take(X, idx):
    if hasattr(X, "iloc"):  # pandas
        return X.iloc[idx]
    if isinstance(X, np.ndarray):
        return X[idx]
    return np.asarray(X)[idx]


def _labels(name, values):
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {arr.shape}")
    return arr


def _reals(name, values, ndims=(1, 2)):
    """values as a float64 array of one of the allowed ranks (no OverflowError)."""
    if np.ma.isMaskedArray(values):
        raise TypeError(f"{name} is a masked array; its mask would be ignored: pass "
                        f"{name}.compressed() or {name}.filled(...)")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must hold real numbers within the float range") from None
    if arr.ndim not in ndims or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty {' or '.join(f'{d}-D' for d in ndims)} "
                         f"array, got shape {arr.shape}")
    return arr


def log_loss(y_true, proba, classes):
    """Mean negative log-likelihood of ``y_true`` under ``proba`` (columns = ``classes``).

    Probabilities are clipped to ``[1e-15, 1]`` and renormalised; a label that is not
    in ``classes`` gets probability 1e-15.
    """
    y_true = _labels("y_true", y_true)
    proba = _reals("proba", proba)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    classes = _labels("classes", classes)
    if proba.shape != (len(y_true), len(classes)) or not len(classes):
        raise ValueError(f"proba must have shape (len(y_true), len(classes)) = "
                         f"({len(y_true)}, {len(classes)}), got {proba.shape}")
    proba = np.clip(proba, _EPS, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    order = np.argsort(classes, kind="stable")
    pos = np.searchsorted(classes[order], y_true)
    pos = np.clip(pos, 0, len(classes) - 1)
    col = order[pos]
    found = classes[col] == y_true
    p = np.where(found, proba[np.arange(len(y_true)), col], _EPS)
    return float(-np.mean(np.log(p)))


def _pair(y_true, y_pred):
    y_true, y_pred = _reals("y_true", y_true), _reals("y_pred", y_pred)
    if y_pred.size != y_true.size or len(y_pred) != len(y_true):
        raise ValueError(f"y_true and y_pred have different shapes: {y_true.shape} and "
                         f"{y_pred.shape}")
    return y_true, y_pred.reshape(y_true.shape)


def mean_squared_error(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean((y_true - y_pred) ** 2))


def accuracy_score(y_true, y_pred):
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def r2_score(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred)
    ss_res = np.sum((y_true - y_pred) ** 2)
    ss_tot = np.sum((y_true - y_true.mean(axis=0)) ** 2)
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 0.0


# --------------------------------------------------------------------------- splitters
class KFold:
    """K folds of (almost) equal size; every sample is validated exactly once.

    The first ``n % n_splits`` folds get one extra sample.  With ``shuffle=True``
    the order is permuted by ``np.random.default_rng(random_state)`` first.
    """

    def __init__(self, n_splits=5, shuffle=True, random_state=None):
        if not _is_int(n_splits):
            raise TypeError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        if n_splits < 2:
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        self.n_splits = int(n_splits)
        self.shuffle = bool(shuffle)
        self.random_state = _check_seed(random_state)

    def get_n_splits(self, X=None, y=None, groups=None):
        return self.n_splits

    def _val_folds(self, X, y):
        n = _num_samples(X)
        if n < self.n_splits:
            raise ValueError(f"cannot split {n} samples into {self.n_splits} folds")
        idx = np.arange(n)
        if self.shuffle:
            idx = _check_random_state(self.random_state).permutation(n)
        sizes = np.full(self.n_splits, n // self.n_splits)
        sizes[: n % self.n_splits] += 1
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [np.sort(idx[bounds[k]:bounds[k + 1]]) for k in range(self.n_splits)]

    def split(self, X, y=None, groups=None):
        n = _num_samples(X)
        for val in self._val_folds(X, y):
            mask = np.ones(n, dtype=bool)
            mask[val] = False
            yield np.flatnonzero(mask), val

    def __repr__(self):
        return (f"{type(self).__name__}(n_splits={self.n_splits}, shuffle={self.shuffle}, "
                f"random_state={self.random_state!r})")


class StratifiedKFold(KFold):
    """K folds that keep each class's proportion in every fold (within one sample).

    Samples of each class are (optionally shuffled and) dealt round-robin over the
    folds, continuing where the previous class stopped, so fold sizes differ by at
    most one as well.  Every class needs at least ``n_splits`` members.
    """

    def _val_folds(self, X, y):
        if y is None:
            raise ValueError("StratifiedKFold.split needs y")
        y = np.asarray(y)
        n = _num_samples(X)
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"X has {n} samples but y has "
                             f"{y.shape[0] if y.ndim else 'a 0-d array'}")
        classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
        if counts.min() < self.n_splits:
            bad = classes[np.argmin(counts)]
            raise ValueError(f"class {bad!r} has only {counts.min()} member(s), fewer than "
                             f"n_splits={self.n_splits}")
        rng = _check_random_state(self.random_state) if self.shuffle else None
        fold_of = np.empty(n, dtype=np.intp)
        offset = 0
        for c in range(len(classes)):
            members = np.flatnonzero(y_idx == c)
            if rng is not None:
                members = rng.permutation(members)
            fold_of[members] = (offset + np.arange(len(members))) % self.n_splits
            offset = (offset + len(members)) % self.n_splits
        return [np.flatnonzero(fold_of == k) for k in range(self.n_splits)]


# --------------------------------------------------------------------------- grids
class ParameterGrid:
    """Expand a dict of lists (or a list of such dicts) into a list of dicts.

    A list of plain dicts (values that are not lists) is kept as given.
    """

    def __init__(self, param_grid):
        if isinstance(param_grid, Mapping):
            param_grid = [param_grid]
        self.param_grid = list(param_grid)

    def __iter__(self):
        for grid in self.param_grid:
            if not isinstance(grid, Mapping):
                raise TypeError(f"parameter sets must be dicts, got {grid!r}")
            keys = list(grid)
            values = [v if isinstance(v, (list, tuple, np.ndarray)) else [v]
                      for v in (grid[k] for k in keys)]
            for combo in itertools.product(*values):
                yield dict(zip(keys, combo))

    def __len__(self):
        return sum(1 for _ in self)


def _expand(param_sets):
    if isinstance(param_sets, Mapping):
        return list(ParameterGrid(param_sets))
    sets = list(param_sets)
    if not sets:
        raise ValueError("param_sets is empty")
    if all(isinstance(s, Mapping) and not any(isinstance(v, list) for v in s.values())
           for s in sets):
        return [dict(s) for s in sets]
    return list(ParameterGrid(sets))


# --------------------------------------------------------------------------- workers
def _fold_seed(random_state, fold):
    """Seed for every fit on ``fold``: depends on the search seed and the fold only.

    All parameter sets see the same seed on the same fold (common random numbers),
    so their differences come from the hyperparameters, not from the draw.
    """
    ss = np.random.SeedSequence([int(random_state), int(fold)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def _return_as():
    """Results as they finish (joblib >= 1.4), else in order (joblib 1.3)."""
    import joblib
    try:
        major, minor = (int(v) for v in joblib.__version__.split(".")[:2])
    except ValueError:  # pragma: no cover - unusual version string
        return "generator"
    return "generator_unordered" if (major, minor) >= (1, 4) else "generator"


_HISTORY_ATTRS = ("validation_loss_curve_", "val_loss_curve_", "validation_loss_",
                  "validation_losses_")


def _history(est):
    for name in _HISTORY_ATTRS:
        h = getattr(est, name, None)
        if h is not None:
            return np.asarray(h, dtype=np.float64)
    return None


class _thread_limits:
    """Limit BLAS/OpenMP threads (threadpoolctl) and fastoptim's kernel threads
    (``fastoptim.set_num_threads``) while fits run.

    Both settings are process-wide, and thread-based backends (joblib's "threading",
    Dask with ``processes=False``) run several fits in one process at once: the first
    fit to enter applies the limits, the last one to leave restores them.
    """

    _lock = threading.Lock()
    _depth = 0
    _ctl = None
    _prev = None
    _restore = False

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def __enter__(self):
        if self.n_threads is None:
            return self
        cls = type(self)
        with cls._lock:
            cls._depth += 1
            if cls._depth == 1:
                cls._apply(self.n_threads)
        return self

    def __exit__(self, *exc):
        if self.n_threads is None:
            return False
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                cls._undo()
        return False

    @classmethod
    def _apply(cls, n_threads):
        try:
            from threadpoolctl import threadpool_limits
            cls._ctl = threadpool_limits(limits=n_threads)
        except ImportError:  # pragma: no cover
            # Without threadpoolctl, BLAS/OpenMP limits come from the environment:
            # joblib's loky workers start with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
            # MKL_NUM_THREADS... = cpu_count // n_jobs (its inner_max_num_threads
            # default).  Setting them here, after the runtimes started, would be moot.
            cls._ctl = None
        cls._restore = False
        try:
            import fastoptim
            if hasattr(fastoptim, "set_num_threads"):
                backend = getattr(fastoptim, "_backend", None)
                # the unresolved default (None = all cores) when it is visible
                cls._prev = getattr(backend, "_default_n_threads",
                                    fastoptim.get_num_threads()
                                    if hasattr(fastoptim, "get_num_threads") else None)
                fastoptim.set_num_threads(n_threads)
                cls._restore = True
        except ImportError:  # pragma: no cover - kernels not built: nothing to limit
            pass

    @classmethod
    def _undo(cls):
        if cls._ctl is not None:
            cls._ctl.restore_original_limits()
            cls._ctl = None
        if cls._restore:
            import fastoptim
            fastoptim.set_num_threads(cls._prev)
            cls._restore = False


def _can_fit_epochs(est):
    return hasattr(est, "partial_fit") and "max_iter" in est.get_params()


def _evaluate(est, X_val, y_val, classifier):
    if classifier:
        proba = est.predict_proba(X_val)
        classes = getattr(est, "classes_", None)
        if classes is None:
            classes = np.arange(np.asarray(proba).shape[1])
        loss = log_loss(y_val, proba, classes)
        pred = np.asarray(classes)[np.argmax(np.asarray(proba), axis=1)]
        return loss, accuracy_score(y_val, pred)
    pred = est.predict(X_val)
    return mean_squared_error(y_val, pred), r2_score(y_val, pred)


def _fit_epochs(est, X_tr, y_tr, X_val, y_val, classifier, classes):
    """Train one ``partial_fit`` epoch at a time; validation loss after each epoch."""
    curve = []
    for _ in range(int(est.get_params()["max_iter"])):
        if classifier:
            est.partial_fit(X_tr, y_tr, classes=classes)
        else:
            est.partial_fit(X_tr, y_tr)
        with np.errstate(all="ignore"):
            curve.append(_evaluate(est, X_val, y_val, classifier)[0])
    return np.asarray(curve, dtype=np.float64)


def _fit_and_score(estimator, params, X, y, train, val, seed, n_threads, keep_model,
                   classifier, task=None, val_curves=False, ignore_warnings=(),
                   error_score="raise"):
    """Fit a clone with ``params`` on ``train``; loss and score on ``val``.

    If the fit or the evaluation raises and ``error_score`` is not "raise", the fit is
    recorded as failed: infinite loss, score ``error_score``, the error as text.
    """
    est = clone(estimator, **params)
    if seed is not None and "random_state" in est.get_params():
        est.set_params(random_state=seed)
    X_tr, y_tr, X_val, y_val = _take(X, train), y[train], _take(X, val), y[val]
    t0 = time.perf_counter()
    try:
        with _thread_limits(n_threads), warnings.catch_warnings():
            for category in ignore_warnings or ():
                warnings.simplefilter("ignore", category)
            history = None
            if val_curves and _can_fit_epochs(est):
                history = _fit_epochs(est, X_tr, y_tr, X_val, y_val, classifier,
                                      np.unique(y) if classifier else None)
            else:
                est.fit(X_tr, y_tr)
            fit_time = time.perf_counter() - t0
            with np.errstate(all="ignore"):
                loss, score = _evaluate(est, X_val, y_val, classifier)
    except Exception as exc:  # noqa: BLE001 - as scikit-learn's error_score
        if isinstance(error_score, str):
            raise
        return {"loss": np.inf, "score": float(error_score),
                "fit_time": time.perf_counter() - t0, "n_iter": None, "history": None,
                "loss_curve": None, "model": None, "task": task,
                "error": f"{type(exc).__name__}: {exc}"}
    if history is None:
        history = _history(est)
    if not np.isfinite(loss):
        loss = np.inf
    # epochs trained: n_iter_ counts only the last call's (scikit-learn), and the per-epoch
    # path calls partial_fit once per epoch; loss_curve_ has one entry per epoch of all
    curve = getattr(est, "loss_curve_", None)
    n_iter = len(curve) if curve is not None else getattr(est, "n_iter_", None)
    return {"loss": loss, "score": score, "fit_time": fit_time,
            "n_iter": n_iter, "history": history,
            "loss_curve": (np.asarray(est.loss_curve_, dtype=np.float64)
                           if getattr(est, "loss_curve_", None) is not None else None),
            "model": est if keep_model else None, "task": task, "error": None}


# --------------------------------------------------------------------------- search
class KFoldSearch:
    """Choose hyperparameters by K-fold cross-validation (lowest mean validation loss).

    Parameters
    ----------
    estimator : object with ``get_params``/``set_params``/``fit``/``predict``
        (and ``predict_proba`` + ``classes_`` for classifiers).
    param_sets : list of dicts, or a dict of lists (a grid), or a list of grids.
    cv : int or splitter
        An int makes a :class:`StratifiedKFold` for classifiers, :class:`KFold` for
        regressors, both shuffled with ``random_state``.
    n_jobs : int or None
        Passed to ``joblib.Parallel``; None uses the active joblib configuration
        (``joblib.parallel_config``), i.e. one job unless configured otherwise.  On a
        local backend, more jobs than usable CPU cores are cut to the core count
        (with a UserWarning).
    refit : True, False, "ensemble" or "both"
        True: ``best_estimator_`` is the best set refitted on all of ``X, y``.
        "ensemble": ``best_estimator_`` is a :class:`VotingEnsemble` of the best
        set's K fold models.  "both": refit in ``best_estimator_`` *and* the
        ensemble in ``ensemble_``.
    random_state : int or None
        Seeds the folds and every fit (``random_state`` of the clones, derived from
        ``(random_state, fold)``).  None leaves the estimator's own seed alone.
    verbose : int
        > 0 prints one line per finished fit to stderr (through ``callback``).
    callback : callable(info: dict) or None
        Called in the parent process as each fit finishes (in completion order);
        ``info`` has keys index, fold, params, loss, score, fit_time, done,
        total.
    pre_dispatch : passed to joblib.Parallel.
    val_curves : bool
        Record the validation loss on the held-out fold after every epoch: the fold
        models are then trained by ``max_iter`` calls of ``partial_fit`` (one epoch
        each) instead of one ``fit``.  Needs ``partial_fit`` and a ``max_iter``
        parameter; otherwise (and when False) ``val_loss_curves`` holds the
        estimator's own per-epoch validation history if it records one
        (``val_loss_curve_``), else None.
    ignore_warnings : tuple of warning categories silenced during every fit (e.g. a
        ConvergenceWarning when the number of epochs is fixed on purpose).
    error_score : "raise" or a number (default nan)
        As scikit-learn's: when a fit raises (e.g. FloatingPointError when a learning
        rate diverges), that fit is recorded with an infinite validation loss and this
        score, a :class:`FitFailedWarning` names the failures, and the search goes on;
        a set with a failed fold is never chosen.  If every set has a failed fit,
        ``fit`` raises ValueError.  "raise" re-raises the first error instead.

    Attributes
    ----------
    cv_results_ : dict of arrays, one entry per parameter set: ``params``,
        ``param_<name>``, ``split<k>_val_loss``, ``split<k>_val_score``,
        ``mean_val_loss``, ``std_val_loss``, ``mean_val_score``, ``std_val_score``
        (score = accuracy for classifiers, R^2 for regressors; classifiers also get
        ``mean_val_accuracy``/``std_val_accuracy``), ``rank_val_loss``,
        ``mean_fit_time``, ``val_loss_curves`` (per-set list of per-fold per-epoch
        validation histories, or None when the estimator records none) and
        ``loss_curves`` (per-fold training loss curves).
    best_index_, best_params_, best_score_ (mean validation loss of the best set),
    best_estimator_, ensemble_ (refit="ensemble"/"both"), fold_models_ (the best
    set's fold models when kept), n_splits_, refit_time_.  ``cv_results_["fit_errors"]``
    holds, per set and fold, the error of a failed fit as text (None when it ran).
    """

    def __init__(self, estimator, param_sets, cv=5, n_jobs=None, refit=True,
                 random_state=None, verbose=0, callback=None, pre_dispatch="2*n_jobs",
                 val_curves=False, ignore_warnings=(), error_score=np.nan):
        self.estimator = estimator
        self.param_sets = param_sets
        self.cv = cv
        self.n_jobs = n_jobs
        self.refit = refit
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.pre_dispatch = pre_dispatch
        self.val_curves = val_curves
        self.ignore_warnings = ignore_warnings
        self.error_score = error_score

    # sklearn-style parameter access for the search itself
    def get_params(self, deep=False):
        return {k: getattr(self, k) for k in
                ("estimator", "param_sets", "cv", "n_jobs", "refit", "random_state",
                 "verbose", "callback", "pre_dispatch", "val_curves", "ignore_warnings",
                 "error_score")}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"invalid parameter {k!r} for KFoldSearch")
            setattr(self, k, v)
        return self

    def _splitter(self, classifier):
        if _is_int(self.cv):
            cls = StratifiedKFold if classifier else KFold
            return cls(n_splits=int(self.cv), shuffle=True, random_state=self.random_state)
        return self.cv

    _PRE_DISPATCH = re.compile(r"\s*(all|\d+|(\d+\s*\*\s*)?n_jobs)\s*")

    def _check_params(self):
        """Check every constructor argument (scikit-learn does it in ``fit`` too)."""
        if self.refit not in (True, False, "ensemble", "both"):
            raise ValueError(f"refit must be True, False, 'ensemble' or 'both', "
                             f"got {self.refit!r}")
        _check_seed(self.random_state, generator_ok=False)  # it seeds SeedSequences
        if not (_is_int(self.verbose) or isinstance(self.verbose, bool)):
            raise TypeError(f"verbose must be an int, got {self.verbose!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be None or callable, got {self.callback!r}")
        pd = self.pre_dispatch
        if not ((_is_int(pd) and pd >= 1)
                or (isinstance(pd, str) and self._PRE_DISPATCH.fullmatch(pd))):
            raise ValueError(f"pre_dispatch must be an int >= 1, 'all' or an expression "
                             f"like '2*n_jobs', got {pd!r}")
        if not isinstance(self.val_curves, (bool, np.bool_)):
            raise TypeError(f"val_curves must be True or False, got {self.val_curves!r}")
        ignore = self.ignore_warnings
        if not (isinstance(ignore, (tuple, list)) and all(
                isinstance(w, type) and issubclass(w, Warning) for w in ignore)):
            raise TypeError(f"ignore_warnings must be a tuple of Warning classes, "
                            f"got {ignore!r}")
        es = self.error_score
        if not (es == "raise" if isinstance(es, str)
                else isinstance(es, numbers.Real) and not isinstance(es, bool)):
            raise TypeError(f"error_score must be 'raise' or a number, got {es!r}")
        if _is_int(self.cv):
            if self.cv < 2:
                raise ValueError(f"cv must be an int >= 2 or a splitter, got {self.cv!r}")
        elif not hasattr(self.cv, "split"):
            raise TypeError(f"cv must be an int >= 2 or a splitter with a split method, "
                            f"got {self.cv!r}")

    @staticmethod
    def _inner_threads(n_jobs):
        """Threads per fit so that parallel fits do not oversubscribe the cores."""
        import joblib
        n_jobs = joblib.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            return None
        return max(1, (os.cpu_count() or 1) // n_jobs)

    def fit(self, X, y):
        """Run the search; on an error nothing of a previous fit is changed."""
        import joblib

        self._check_params()
        n_jobs, note = _capped_n_jobs(self.n_jobs)
        if note:
            warnings.warn(note, UserWarning, stacklevel=2)
        n_samples = _num_samples(X)
        y = np.asarray(y)
        if y.ndim == 0 or n_samples != y.shape[0]:
            raise ValueError(f"X has {n_samples} samples but y has "
                             f"{y.shape[0] if y.ndim else 'a 0-d array'}")
        _check_estimator(self.estimator)
        classifier = is_classifier(self.estimator)
        candidates = _expand(self.param_sets)
        valid = set(self.estimator.get_params())
        for p in candidates:
            unknown = set(p) - valid
            if unknown:
                raise ValueError(f"unknown parameter(s) {sorted(unknown)} for "
                                 f"{type(self.estimator).__name__}")
        splitter = self._splitter(classifier)
        folds = list(splitter.split(X, y))
        n_folds = len(folds)
        keep = self.refit in ("ensemble", "both")
        n_threads = self._inner_threads(n_jobs)
        seeds = [None if self.random_state is None else _fold_seed(self.random_state, k)
                 for k in range(n_folds)]
        tasks = [(i, k) for i in range(len(candidates)) for k in range(n_folds)]

        parallel = joblib.Parallel(n_jobs=n_jobs, pre_dispatch=self.pre_dispatch,
                                   return_as=_return_as())
        out = parallel(
            joblib.delayed(_fit_and_score)(self.estimator, candidates[i], X, y,
                                           folds[k][0], folds[k][1], seeds[k],
                                           n_threads, keep, classifier, (i, k),
                                           self.val_curves, tuple(self.ignore_warnings),
                                           self.error_score)
            for i, k in tasks)
        results = {}  # with keep, every set's fold models stay until the best is known
        for done, res in enumerate(out, start=1):
            i, k = res["task"]
            results[i, k] = res
            info = {"index": i, "fold": k, "params": candidates[i], "loss": res["loss"],
                    "score": res["score"], "fit_time": res["fit_time"],
                    "done": done, "total": len(tasks), "error": res["error"]}
            if self.callback is not None:
                self.callback(info)
            elif self.verbose:
                import sys
                print(f"[{done}/{len(tasks)}] set {i} fold {k}: loss={res['loss']:.4f} "
                      f"score={res['score']:.4f} ({res['fit_time']:.2f}s)",
                      file=sys.stderr, flush=True)

        cv_results = self._collect(candidates, results, n_folds, classifier)
        failed = [(i, k) for i, k in tasks if results[i, k]["error"] is not None]
        if failed:
            self._report_failures(failed, results, candidates, len(tasks))
        mean = cv_results["mean_val_loss"]
        best_index = int(np.argmin(np.where(np.isnan(mean), np.inf, mean)))

        # Everything is set at the end, so a failed refit leaves a previous fit intact.
        fitted = {"cv_results_": cv_results, "best_index_": best_index,
                  "best_params_": dict(candidates[best_index]),
                  "best_score_": float(mean[best_index]), "n_splits_": n_folds,
                  "classifier_": classifier, "fold_models_": None, "ensemble_": None,
                  "best_estimator_": None}
        if keep:
            fitted["fold_models_"] = [results[best_index, k]["model"] for k in range(n_folds)]
            fitted["ensemble_"] = VotingEnsemble(fitted["fold_models_"])
        if self.refit in (True, "both"):
            est = clone(self.estimator, **fitted["best_params_"])
            if self.random_state is not None and "random_state" in est.get_params():
                est.set_params(random_state=_fold_seed(self.random_state, n_folds))
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                for category in self.ignore_warnings or ():
                    warnings.simplefilter("ignore", category)
                est.fit(X, y)
            fitted["refit_time_"] = time.perf_counter() - t0
            fitted["best_estimator_"] = est
        elif self.refit == "ensemble":
            fitted["best_estimator_"] = fitted["ensemble_"]
        best = fitted["best_estimator_"]
        if best is not None and hasattr(best, "classes_"):
            fitted["classes_"] = best.classes_
        elif hasattr(self, "classes_"):
            del self.classes_
        self.__dict__.update(fitted)
        return self

    @staticmethod
    def _report_failures(failed, results, candidates, total):
        """Warn about failed fits; raise if no parameter set ran on every fold."""
        i, k = failed[0]
        first = f"set {i} {candidates[i]} fold {k}: {results[i, k]['error']}"
        if len({i for i, _ in failed}) == len(candidates):
            raise ValueError(f"every parameter set failed on at least one fold ({len(failed)} "
                             f"of {total} fits raised); the first: {first}")
        warnings.warn(f"{len(failed)} of {total} fits failed and count as an infinite "
                      f"validation loss; the first: {first}",
                      _sk("FitFailedWarning", FitFailedWarning), stacklevel=3)

    @staticmethod
    def _collect(candidates, results, n_folds, classifier):
        n = len(candidates)
        loss = np.array([[results[i, k]["loss"] for k in range(n_folds)] for i in range(n)],
                        dtype=np.float64)
        score = np.array([[results[i, k]["score"] for k in range(n_folds)]
                          for i in range(n)], dtype=np.float64)
        fit_time = np.array([[results[i, k]["fit_time"] for k in range(n_folds)]
                             for i in range(n)], dtype=np.float64)
        cv = {"params": list(candidates)}
        names = []
        for p in candidates:
            names.extend(k for k in p if k not in names)
        for name in names:
            col = np.empty(n, dtype=object)
            col[:] = [p.get(name) for p in candidates]
            cv[f"param_{name}"] = col
        for k in range(n_folds):
            cv[f"split{k}_val_loss"] = loss[:, k]
            cv[f"split{k}_val_score"] = score[:, k]
        with np.errstate(invalid="ignore"):
            cv["mean_val_loss"] = loss.mean(axis=1)
            cv["std_val_loss"] = loss.std(axis=1)
        cv["mean_val_score"] = score.mean(axis=1)
        cv["std_val_score"] = score.std(axis=1)
        if classifier:
            cv["mean_val_accuracy"] = cv["mean_val_score"]
            cv["std_val_accuracy"] = cv["std_val_score"]
        finite = np.where(np.isnan(cv["mean_val_loss"]), np.inf, cv["mean_val_loss"])
        order = np.argsort(finite, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(1, n + 1)
        cv["rank_val_loss"] = rank
        cv["mean_fit_time"] = fit_time.mean(axis=1)
        cv["val_loss_curves"] = [[results[i, k]["history"] for k in range(n_folds)]
                                 for i in range(n)]
        cv["loss_curves"] = [[results[i, k]["loss_curve"] for k in range(n_folds)]
                             for i in range(n)]
        cv["n_iter"] = [[results[i, k]["n_iter"] for k in range(n_folds)] for i in range(n)]
        cv["fit_errors"] = [[results[i, k]["error"] for k in range(n_folds)]
                            for i in range(n)]
        return cv

    # delegation to the chosen model ------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "cv_results_"):
            raise _sk("NotFittedError", NotFittedError)(
                "This KFoldSearch instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator.")
        if self.best_estimator_ is None:  # as scikit-learn's search with refit=False
            raise AttributeError("KFoldSearch was fitted with refit=False: there is no "
                                 "model to predict with; use cv_results_ / best_params_")
        return self.best_estimator_

    def predict(self, X):
        return self._check_fitted().predict(X)

    def predict_proba(self, X):
        return self._check_fitted().predict_proba(X)

    def score(self, X, y):
        return self._check_fitted().score(X, y)
