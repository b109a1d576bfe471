"""Checks of hyperparameters, shared by the functional API and the optimizer classes.

The accepted ranges are torch.optim's own argument checks (``0.0 <= lr`` and so on):
what torch accepts is accepted, including ``inf`` where its comparison lets it
through.  Beyond torch, only what is not a real number is refused: NaN, and Python
ints too large for a double (torch would fail later with an OverflowError).

Array checks (dtype, shape, layout, writeability, overlap) happen in the compiled
module itself, right before the kernel runs, so that no path into C is unchecked.
"""

import math
import numbers

import numpy as np

__all__ = ["to_float", "check_real", "check_step", "check_flag"]

# ints below this convert to a finite double (float(2**1023) is finite, 2**1024 is not)
_DOUBLE_INT_LIMIT = 1 << 1023


def to_float(name, value):
    """value as a Python float: a real number, or a one-element real array (torch
    accepts a one-element Tensor lr)."""
    if type(value) is float:
        return value  # the common case, before the checks through numbers.Real's ABC
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu":
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a real number a double can hold, got an int of "
                         f"{int(value).bit_length()} bits") from None


def check_real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """Return value as a Python float in the range (inf included where the range
    is unbounded on that side), or raise naming the argument.  NaN is refused."""
    value = to_float(name, value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a real number, got nan")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")
    return value


def check_step(step):
    """step is the 1-based count of this update: an int >= 1 that a double can hold
    (the bias corrections raise the betas to this power)."""
    if type(step) is int and 1 <= step < _DOUBLE_INT_LIMIT:
        return step  # the common case, before numbers.Integral's ABC check (~1 us)
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int >= 1 (the 1-based count of this update), "
                        f"got {type(step).__name__}")
    step = int(step)
    if step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based count of this update), got {step}")
    try:
        float(step)
    except OverflowError:
        raise ValueError(f"step must be an int a double can hold, got an int of "
                         f"{step.bit_length()} bits") from None
    return step


def check_flag(name, value):
    """A bool, or a NumPy bool scalar / one-element bool array."""
    if not isinstance(value, bool) and not (
            getattr(value, "dtype", None) == bool and getattr(value, "size", 0) == 1):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)
