"""Pictures for ``python -m fastoptim``: learning curves and Rosenbrock paths.

The path computation needs only NumPy and fastoptim's functional API; drawing needs
matplotlib (``pip install "fastoptim[plot]"``), imported lazily with the Agg backend
so it works without a display.
"""

import numbers
import os

import numpy as np

__all__ = ["rosenbrock", "rosenbrock_grad", "optimizer_paths", "have_matplotlib",
           "plot_learning_curves", "plot_rosenbrock_paths", "PLOT_HINT",
           "ROSENBROCK_START", "ROSENBROCK_SETTINGS"]

PLOT_HINT = 'pip install "fastoptim[plot]"'

ROSENBROCK_START = (-1.5, 2.0)

# One setting per optimizer, chosen by hand so each path is readable in 2000 steps.
ROSENBROCK_SETTINGS = {
    "Momentum": {"lr": 2e-4, "momentum": 0.9},
    "RMSProp": {"lr": 1e-2},
    "Adam": {"lr": 5e-2},
}

COLORS = {"Momentum": "tab:blue", "RMSProp": "tab:orange", "Adam": "tab:green"}


def _reals(name, value):
    """value as a float64 array of real numbers (a scalar stays 0-d)."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or np.ma.isMaskedArray(value):
        raise TypeError(f"{name} must be a real number or an array of them, "
                        f"got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must be a real number or an array of them, "
                        f"got {type(value).__name__}") from None
    return arr


def _finite_real(name, value):
    arr = _reals(name, value)
    if arr.ndim != 0 or not np.isfinite(arr):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(arr)


def _point(name, value):
    arr = _reals(name, value)
    if arr.shape != (2,) or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a point (x, y) of two finite reals, got {value!r}")
    return arr


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike), "
                        f"got {type(path).__name__}")


def _check_mapping(name, value):
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{name} must be a non-empty dict {{label (str): values}}, "
                        f"got {type(value).__name__}")


def rosenbrock(x, y, a=1.0, b=100.0):
    """f(x, y) = (a - x)^2 + b (y - x^2)^2 (minimum 0 at (a, a^2)); x, y may be arrays.
    Values too large for a double give inf."""
    x, y = _reals("x", x), _reals("y", y)
    a, b = _finite_real("a", a), _finite_real("b", b)
    with np.errstate(over="ignore", invalid="ignore"):
        f = (a - x) ** 2 + b * (y - x * x) ** 2
    return float(f) if f.ndim == 0 else f


def rosenbrock_grad(p, a=1.0, b=100.0):
    """The gradient of :func:`rosenbrock` at the point ``p = (x, y)``."""
    x, y = _point("p", p)
    a, b = _finite_real("a", a), _finite_real("b", b)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array([-2.0 * (a - x) - 4.0 * b * x * (y - x * x), 2.0 * b * (y - x * x)])


def _functional_api():
    import fastoptim
    return fastoptim.sgd_, fastoptim.rmsprop_, fastoptim.adam_


def optimizer_paths(n_steps=2000, start=ROSENBROCK_START, settings=None):
    """Step Momentum, RMSProp and Adam on the Rosenbrock function from ``start``.

    Uses fastoptim's in-place functional API on a 2-element float64 array.
    Returns ``{name: array of shape (n_steps + 1, 2)}``.
    """
    if isinstance(n_steps, (bool, np.bool_)) or not isinstance(n_steps, numbers.Integral) \
            or not 1 <= n_steps <= 10 ** 7:
        raise ValueError(f"n_steps must be an int in [1, 10**7], got {n_steps!r}")
    start = _point("start", start)
    if settings is not None:
        _check_mapping("settings", settings)
        unknown = set(settings) - set(ROSENBROCK_SETTINGS)
        if unknown or not all(isinstance(v, dict) for v in settings.values()):
            raise ValueError(f"settings must map {sorted(ROSENBROCK_SETTINGS)} to dicts of "
                             f"keyword arguments, got {settings!r}")
    sgd_, rmsprop_, adam_ = _functional_api()
    settings = {**ROSENBROCK_SETTINGS, **(settings or {})}
    paths = {}
    for name, kw in settings.items():
        p = np.array(start, dtype=np.float64)
        s0 = np.zeros_like(p)
        s1 = np.zeros_like(p)
        path = np.empty((n_steps + 1, 2))
        path[0] = p
        for t in range(1, n_steps + 1):
            g = rosenbrock_grad(p)
            if name == "Momentum":
                sgd_(p, g, s0, step=t, **kw)
            elif name == "RMSProp":
                rmsprop_(p, g, s0, step=t, **kw)
            elif name == "Adam":
                adam_(p, g, s0, s1, step=t, **kw)
            else:
                raise ValueError(f"unknown optimizer {name!r}")
            path[t] = p
        paths[name] = path
    return paths


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_learning_curves(curves, path, title=None, ylabel="validation log-loss"):
    """``curves``: {label: 2-D array (folds, epochs) or 1-D array (epochs)}.

    Draws the mean per epoch with a band of +- one standard deviation across folds.
    """
    _check_mapping("curves", curves)
    curves = {label: _reals(f"curves[{label!r}]", c) for label, c in curves.items()}
    for label, c in curves.items():
        if c.ndim not in (1, 2) or c.size == 0:
            raise ValueError(f"curves[{label!r}] must be a non-empty 1-D (epochs) or 2-D "
                             f"(folds, epochs) array, got shape {c.shape}")
    _check_path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, c in curves.items():
        c = np.asarray(c, dtype=np.float64)
        if c.ndim == 1:
            c = c[None, :]
        epochs = np.arange(1, c.shape[1] + 1)
        mean, std = c.mean(axis=0), c.std(axis=0)
        name = label.split()[0]
        line, = ax.plot(epochs, mean, label=label, color=COLORS.get(name), lw=2)
        if c.shape[0] > 1:
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(),
                            alpha=0.13, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    finite = np.concatenate([np.ravel(c) for c in curves.values()])
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        from matplotlib.ticker import FormatStrFormatter
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_title(title or "Learning curves (best learning rate of each optimizer)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _lognorm(levels):
    from matplotlib.colors import LogNorm
    return LogNorm(vmin=levels[0], vmax=levels[-1])


def plot_rosenbrock_paths(paths, path, start=ROSENBROCK_START, settings=None):
    """Contour plot of the Rosenbrock function with each optimizer's path (left) and
    the function value per step (right)."""
    _check_mapping("paths", paths)
    paths = {name: _reals(f"paths[{name!r}]", p) for name, p in paths.items()}
    for name, p in paths.items():
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
            raise ValueError(f"paths[{name!r}] must have shape (steps + 1, 2) with at least "
                             f"one step, got {p.shape}")
    start = _point("start", start)
    if settings is not None:
        _check_mapping("settings", settings)
    _check_path(path)
    plt = _pyplot()
    settings = {**ROSENBROCK_SETTINGS, **(settings or {})}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.2), dpi=110,
                                  gridspec_kw={"width_ratios": [1.25, 1]})
    xs = np.linspace(-2.0, 2.0, 400)
    ys = np.linspace(-1.0, 3.0, 400)
    X, Y = np.meshgrid(xs, ys)
    Z = rosenbrock(X, Y)
    levels = np.logspace(-1, 3.5, 19)
    ax.contourf(X, Y, Z, levels=levels, cmap="Blues_r", alpha=0.35,
                norm=_lognorm(levels), extend="both")
    ax.contour(X, Y, Z, levels=levels, colors="0.45", linewidths=0.5)
    styles = {"Momentum": "-", "RMSProp": "--", "Adam": ":"}
    for j, (name, p) in enumerate(paths.items()):
        p = np.asarray(p)
        kw = ", ".join(f"{k}={v:g}" for k, v in settings.get(name, {}).items())
        color = COLORS.get(name)
        ax.plot(p[:, 0], p[:, 1], styles.get(name, "-"), color=color,
                lw=2.2 - 0.4 * j, alpha=0.95, label=f"{name} ({kw})")
        mark = np.unique(np.geomspace(1, len(p) - 1, 12).astype(int))
        ax.plot(p[mark, 0], p[mark, 1], "o", color=color, ms=3.5)
        f = rosenbrock(p[:, 0], p[:, 1])
        steps = np.arange(len(p))
        ax2.plot(steps[1:], np.maximum(f[1:], 1e-16), styles.get(name, "-"), color=color,
                 lw=2.0, label=f"{name}: f={f[-1]:.1e} after {len(p) - 1} steps")
    ax.plot(*start, "ks", ms=6, label=f"start {tuple(start)}")
    ax.plot(1.0, 1.0, "r*", ms=14, label="minimum (1, 1)")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("Rosenbrock f = (1 - x)² + 100 (y - x²)²: paths\n"
                 "(dots at steps 1, 2, 4, ... on a log scale)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("f(x, y)")
    ax2.set_title("function value per step (fastoptim's in-place functional API)",
                  fontsize=10)
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
