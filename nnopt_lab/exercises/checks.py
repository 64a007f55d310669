"""The checker kit every chapter's exercises share.

A checker runs the learner's function on fixed inputs, compares with the reference and either
prints one ``✓`` line or raises ``AssertionError`` whose message says *what* is wrong. The kit
keeps three promises for every chapter:

* a learner who has not started yet (the function still raises ``NotImplementedError``) is told
  so -- :data:`NOT_STARTED` -- and not that the answer is wrong;
* an error raised by the learner's code comes back as one ``✗`` line naming the function and
  the error, with no traceback through the checker's code;
* answers are read as numbers or float64 arrays whatever they came as (numpy, torch, lists).

>>> got = numbers("cosine_lr", cosine_lr, [(t, 0.1, 50, 0.0) for t in range(51)])   # doctest: +SKIP
>>> verdict("cosine_lr", diagnose(got, want, {"missing the 1/2 factor": half}), "CosineAnnealingLR")  # doctest: +SKIP

See: chapters/04_1_learning_rate.ipynb
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .. import backend as B

__all__ = ["NOT_STARTED", "ExerciseFailed", "require_function", "call", "numbers", "as_float64", "close_numbers", "diagnose",
           "verdict"]

#: What a learner who has not written the answer yet is told.
NOT_STARTED = ("not answered yet (it raises NotImplementedError): write your answer in the cell above, "
               "in place of `raise NotImplementedError()`, and run that cell again")


class ExerciseFailed(AssertionError):
    """A checker's verdict that the answer is wrong (or not there yet), shown as its message alone.

    Jupyter (IPython) calls ``_render_traceback_`` to display an exception: the learner sees the
    one ``✗`` line that says what is wrong, not a traceback through the checker's code. It is an
    ``AssertionError``, so nbgrader's autograder and pytest count it as a failed check.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def require_function(name: str, fn: Any) -> Callable:
    """``fn`` must be callable (the learner passed their function, not its result)."""
    if not callable(fn):
        raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
    return fn


def call(name: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``; the learner's ``NotImplementedError`` or any error becomes one AssertionError line."""
    require_function(name, fn)
    try:
        return fn(*args)
    except NotImplementedError:
        raise ExerciseFailed(f"✗ {name}: {NOT_STARTED}") from None
    except Exception as err:                      # noqa: BLE001 - the learner's error, reported in words
        raise ExerciseFailed(f"✗ {name} raised {type(err).__name__}: {err}") from None


def numbers(name: str, fn: Callable, args_list: Sequence[tuple]) -> list[float]:
    """``[float(fn(*args)) for args in args_list]``, saying which call did not return a number."""
    out = []
    for args in args_list:
        value = call(name, fn, *args)
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            raise ExerciseFailed(f"✗ {name}{tuple(args)} returned {value!r}; expected a number") from None
    return out


def as_float64(value: Any, what: str, shape: tuple | None = None) -> Any:
    """The learner's answer as a numpy float64 array (of ``shape`` when given), else AssertionError."""
    try:
        array = B.to_numpy(value).astype("float64")
    except Exception as err:                      # noqa: BLE001 - a learner may return anything
        raise ExerciseFailed(f"✗ {what} could not be read as an array of numbers: "
                             f"{type(value).__name__} ({err})") from None
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ExerciseFailed(f"✗ {what} returned shape {tuple(array.shape)}, expected {tuple(shape)}")
    return array


def close_numbers(a: Sequence[float], b: Sequence[float], tol: float = 1e-9) -> bool:
    """Same length and :math:`|a_i - b_i| \\le tol \\cdot \\max(1, |b_i|)` everywhere (NaN never matches)."""
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b))


def diagnose(got: Sequence[float], want: Sequence[float], variants: dict[str, Sequence[float]],
             label: str = "step") -> str | None:
    """``None`` when ``got`` equals ``want``; else the message of the first known mistake that
    ``got`` equals, or where the first difference is."""
    if close_numbers(got, want):
        return None
    for message, values in variants.items():
        if close_numbers(got, values):
            return message
    if len(got) != len(want):
        return f"expected {len(want)} values, got {len(got)}"
    i = next(i for i, (a, b) in enumerate(zip(got, want)) if not close_numbers([a], [b]))
    return f"first difference at {label} {i}: yours {got[i]:.6g}, expected {want[i]:.6g}"


def verdict(name: str, message: str | None, what: str) -> None:
    """Print ``✓ name matches what`` when ``message`` is None, else raise ``AssertionError(✗ name: message)``."""
    if message is not None:
        raise ExerciseFailed(f"✗ {name}: {message}")
    print(f"✓ {name} matches {what}")
