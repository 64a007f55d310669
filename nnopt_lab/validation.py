"""Argument checks shared by every module: one implementation, one wording of the error.

Each check raises ``ValueError`` (a value out of range) or ``TypeError`` (a value of the
wrong kind) naming the caller's argument, the value it got and what is allowed, e.g.
``stride must be an int >= 1, got 0``, and returns the value -- converted to a plain
Python ``int``/``float``/``bool`` -- when it is fine.

Numbers that users pass from numpy or torch (``np.int64(4)``, ``np.float32(0.1)``, a 0-d
tensor) are accepted like Python numbers; ``bool`` is never taken for a number.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Sequence

__all__ = ["check_int", "check_number", "check_probability", "check_choice", "check_bool",
           "check_shape", "check_path", "check_callable", "as_int", "as_float", "check_array",
           "check_generator", "check_sequence"]


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def _scalar(value: Any) -> Any:
    """A 0-d numpy/torch value as a Python number; anything else unchanged."""
    if hasattr(value, "item") and getattr(value, "shape", None) == () and not isinstance(value, numbers.Number):
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            return value
    if hasattr(value, "item") and isinstance(value, numbers.Number) and not isinstance(value, (int, float)):
        return value.item()  # numpy scalars
    return value


def as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (Python, numpy or 0-d torch), else None."""
    if _is_bool(value):
        return None
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def as_float(value: Any) -> float | None:
    """``value`` as a Python float when it is a real number (not bool), else None."""
    if _is_bool(value):
        return None
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_int(name: str, value: Any, low: int | None = 1, high: int | None = None) -> int:
    """``value`` must be an integer (not a bool) in ``[low, high]`` (``None``: unbounded).

    >>> check_int("stride", 2)
    2
    """
    as_python = as_int(value)
    if as_python is None or (low is not None and as_python < low) or (high is not None and as_python > high):
        if low is not None and high is not None:
            allowed = f"an int in [{low}, {high}]"
        elif low is not None:
            allowed = f"an int >= {low}"
        elif high is not None:
            allowed = f"an int <= {high}"
        else:
            allowed = "an int"
        error = ValueError if as_python is not None else TypeError
        if as_python is None and as_float(value) is not None:
            error = ValueError  # 2.5 for an int: the kind is close enough, the value is wrong
        raise error(f"{name} must be {allowed}, got {value!r}")
    return as_python


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{lo}, {hi}{right}"


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """``value`` must be a real number in the interval from ``low`` to ``high``.

    ``low_open`` / ``high_open`` make an end exclusive; ``None`` leaves it unbounded.
    NaN is always refused, infinity unless ``finite=False``.

    >>> check_number("momentum", 0.9, 0, 1, high_open=True)
    0.9
    """
    as_python = as_float(value)
    ok = as_python is not None and not math.isnan(as_python) and (not finite or math.isfinite(as_python))
    if ok and low is not None:
        ok = as_python > low if low_open else as_python >= low
    if ok and high is not None:
        ok = as_python < high if high_open else as_python <= high
    if not ok:
        kind = "a finite number" if finite else "a number"
        error = TypeError if as_python is None and not isinstance(value, str) else ValueError
        if as_python is None:
            error = TypeError
        raise error(f"{name} must be {kind} in {_interval(low, high, low_open, high_open)}, got {value!r}")
    return as_python


def check_probability(name: str, value: Any, *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` must be a probability in [0, 1] (ends open where asked)."""
    return check_number(name, value, 0.0, 1.0, low_open=low_open, high_open=high_open)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if hasattr(value, "shape") and getattr(value, "shape", None) != ():
        ok = False  # an array compares elementwise
    elif _is_bool(value) != any(_is_bool(choice) for choice in choices) and _is_bool(value):
        ok = False  # True == 1: a bool is only a choice where the choices are bools
    else:
        try:
            ok = bool(value in choices)
        except (TypeError, ValueError):  # unhashable or uncomparable
            ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be a bool (Python or numpy)."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_shape(name: str, value: Any, length: int | None = None, low: int = 1) -> tuple[int, ...]:
    """``value`` must be an int or a sequence of ints, each ``>= low``.

    With ``length``, an int is repeated to that length (``3`` -> ``(3, 3)`` for ``length=2``)
    and a sequence must have exactly that many entries.
    """
    if as_int(value) is not None:
        items = [value] * (length if length is not None else 1)
    elif isinstance(value, (tuple, list)):
        items = list(value)
    else:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
    if length is not None and len(items) != length:
        raise ValueError(f"{name} must be an int or a tuple of {length} ints, got {value!r}")
    out = []
    for item in items:
        as_python = as_int(item)
        if as_python is None or as_python < low:
            raise ValueError(f"{name} must be an int >= {low} or a tuple of such ints, got {value!r}")
        out.append(as_python)
    return tuple(out)


def check_path(name: str, value: Any) -> str:
    """``value`` must be a path: a non-empty ``str`` or ``os.PathLike``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a path (a non-empty str or os.PathLike), got {value!r}")
    return value


def check_callable(name: str, value: Any) -> Any:
    """``value`` must be callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_array(name: str, value: Any, ndim: int | Sequence[int] | None = None, layout: str = "") -> Any:
    """``value`` must be a numpy array or torch tensor, with ``ndim`` axes (an int or allowed ints).

    ``layout`` (e.g. ``"(N, C, H, W)"``) is shown in the message when the number of axes is wrong.

    >>> check_array("images", [1, 2])
    Traceback (most recent call last):
    TypeError: images must be a numpy array or torch tensor, got list
    """
    from . import backend as B  # backend imports this module: import it when first needed

    try:
        B.namespace(value)
    except TypeError:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}") from None
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim) if ndim is not None else None
    if allowed is not None and value.ndim not in allowed:
        axes = " or ".join(str(n) for n in allowed)
        raise ValueError(f"{name} must have {axes} axes{' ' + layout if layout else ''}, "
                         f"got shape {tuple(value.shape)}")
    return value


def check_generator(name: str, value: Any) -> Any:
    """``value`` must be a numpy random ``Generator`` (``nnopt_lab.backend.generator(seed)``) or None."""
    if value is not None and not hasattr(value, "bit_generator"):
        raise TypeError(f"{name} must be a numpy random Generator (nnopt_lab.backend.generator(seed)) or None, "
                        f"got {type(value).__name__}")
    return value


def check_sequence(name: str, value: Any) -> list:
    """``value`` must be a sequence (list, tuple, range, ...; not a str): returned as a list.

    >>> check_sequence("milestones", 3)
    Traceback (most recent call last):
    TypeError: milestones must be a sequence (a list or tuple), got int
    """
    try:
        if isinstance(value, (str, bytes, dict)):
            raise TypeError
        return list(value)
    except TypeError:                     # not iterable (a number, a 0-d array, ...)
        raise TypeError(f"{name} must be a sequence (a list or tuple), got {type(value).__name__}") from None
