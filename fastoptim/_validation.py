"""Checks of hyperparameters, shared by the functional API and the optimizer classes.

Array checks (dtype, shape, layout, writeability, overlap) happen in the compiled
module itself, right before the kernel runs, so that no path into C is unchecked.
"""

import math
import numbers

__all__ = ["check_real", "check_step", "check_flag"]


def check_real(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """Return value as a finite Python float, or raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
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
    """step is the 1-based count of this update: an int >= 1."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int >= 1 (the 1-based count of this update), "
                        f"got {type(step).__name__}")
    step = int(step)
    if step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based count of this update), got {step}")
    return step


def check_flag(name, value):
    if not isinstance(value, (bool,)) and not (hasattr(value, "dtype") and value.dtype == bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)
