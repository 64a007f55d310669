"""Checking helpers a learner can read: numerical gradient checks and reference comparisons.

``compare(ours, reference, "torch.nn.Conv2d")`` prints one line such as
``✓ matches torch.nn.Conv2d: max |diff| 3e-15`` and raises ``AssertionError`` (with the
place of the worst difference) when the arrays do not match.

None of these helpers passes on NaN: a NaN in the arrays being checked, in the gradient a
backward returns, or in a tolerance is a failure (``AssertionError`` for a failed check,
``ValueError``/``TypeError`` naming the argument for a bad argument), never a silent pass.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

from . import backend as B
from .validation import check_bool, check_callable, check_int, check_number

__all__ = ["rel_error", "max_abs_diff", "compare", "numerical_gradient", "gradcheck", "claim", "ClaimFailed",
           "quick_mode"]


def _np(name: str, x: Any):
    """``x`` as a numpy float64 array of at least one dimension; ``name`` is the caller's argument."""
    if x is None or isinstance(x, (str, bytes, dict, set)):
        raise TypeError(f"{name} must be an array, a tensor or a number, got {type(x).__name__}")
    try:
        a = B.to_numpy(x).astype("float64")
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be an array, a tensor or a number, got {type(x).__name__} "
                        f"({error})") from None
    return a.reshape(a.shape or (1,))


def _first_bad(name: str, a, what: str = "NaN") -> None:
    """Raise ValueError naming ``name`` when ``a`` has a NaN (``what="NaN"``) or a non-finite entry."""
    bad = (a != a) if what == "NaN" else ~(abs(a) < math.inf)
    if bad.any():
        idx = tuple(int(i) for i in next(zip(*bad.nonzero())))
        raise ValueError(f"{name} contains {what} ({int(bad.sum())} of {a.size} entries, first at index {idx}); "
                         f"a difference with {what} is not a number")


def _pair(a: Any, b: Any) -> tuple:
    """``a`` and ``b`` as finite float64 numpy arrays of one shape (ValueError naming the culprit)."""
    a, b = _np("a", a), _np("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    _first_bad("a", a, "NaN or inf")
    _first_bad("b", b, "NaN or inf")
    return a, b


def max_abs_diff(a: Any, b: Any) -> float:
    """max |a - b| over all entries (both moved to numpy float64 first); 0.0 for empty arrays.

    Raises ValueError when the shapes differ or either array holds NaN or inf (the answer
    would be NaN or inf, which says nothing about how close they are).
    """
    a, b = _pair(a, b)
    return float(abs(a - b).max()) if a.size else 0.0


def rel_error(a: Any, b: Any) -> float:
    r"""Largest relative error :math:`\max |a-b| / \max(|a|+|b|, 10^{-300})`, elementwise.

    Raises ValueError when the shapes differ or either array holds NaN or inf.
    """
    a, b = _pair(a, b)
    if not a.size:
        return 0.0
    return float((abs(a - b) / (abs(a) + abs(b)).clip(min=1e-300)).max())


def _tolerance(name: str, value: Any) -> float:
    return check_number(name, value, 0.0)


def compare(ours: Any, reference: Any, name: str, rtol: float = 1e-7, atol: float = 1e-10,
            quiet: bool = False, equal_nan: bool = False) -> float:
    """Check ``ours`` against ``reference`` elementwise: |ours - ref| <= atol + rtol·|ref|.

    Prints a one-line verdict and returns max |diff|; raises AssertionError on a mismatch.
    NaN in either array is a mismatch (unless ``equal_nan=True`` and both have it in the same
    place); an infinity matches only the same infinity in the same place.
    ``rtol`` and ``atol`` must be finite numbers >= 0 (a NaN tolerance would pass everything).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (what the reference is), got {type(name).__name__}")
    rtol, atol = _tolerance("rtol", rtol), _tolerance("atol", atol)
    quiet, equal_nan = check_bool("quiet", quiet), check_bool("equal_nan", equal_nan)
    a, b = _np("ours", ours), _np("reference", reference)
    if a.shape != b.shape:
        raise AssertionError(f"✗ differs from {name}: shape {a.shape} vs reference {b.shape}")
    if a.size == 0:
        if not quiet:
            print(f"✓ matches {name}: both empty")
        return 0.0
    nan_a, nan_b = a != a, b != b
    finite = (abs(a) < math.inf) & (abs(b) < math.inf)
    excused = ((abs(a) == math.inf) & (a == b)) | (nan_a & nan_b & equal_nan)
    a0, b0 = a.copy(), b.copy()
    a0[~finite], b0[~finite] = 0.0, 0.0                  # no inf - inf: non-finite entries judged apart
    diff = abs(a0 - b0)
    bad = ~(diff <= atol + rtol * abs(b0)) | ~finite     # NaN and inf are bad ...
    bad[excused] = False                                 # ... unless they match as asked
    if bad.any():
        idx = tuple(int(i) for i in next(zip(*bad.nonzero())))
        nans = int((nan_a | nan_b)[bad].sum())
        raise AssertionError(
            f"✗ differs from {name}: {int(bad.sum())} of {a.size} entries off ({nans} NaN), max |diff| "
            f"{float(diff.max()):.3g} over finite entries; first at index {idx}: ours {a[idx]!r}, "
            f"reference {b[idx]!r} (rtol={rtol}, atol={atol})")
    worst = float(diff.max())
    if not quiet:
        print(f"✓ matches {name}: max |diff| {worst:.1g}")
    return worst


def _float_array(name: str, x: Any) -> None:
    """``x`` must be a floating numpy array or torch tensor (it is changed in place)."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")) or isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    B.namespace(x)
    if not B.dtype_name(x).startswith("float"):
        raise TypeError(f"{name} must be a floating array (it is nudged by ±h), got {B.dtype_name(x)}")


def _finite_value(f: Callable[[], Any], where: str) -> float:
    value = f()
    try:
        value = B.float_of(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"f must return a number (a scalar), got {type(value).__name__} ({error})") from None
    if not math.isfinite(value):
        raise AssertionError(f"✗ f returned {value} at {where}: a central difference of it is meaningless")
    return value


def numerical_gradient(f: Callable[[], float], x: Any, h: float = 1e-6) -> Any:
    r"""Central differences :math:`\partial f/\partial x_i \approx (f(x+h e_i) - f(x-h e_i)) / 2h`.

    ``x`` (a floating array or tensor whose memory ``reshape(x, (-1,))`` shares: contiguous) is
    changed in place and restored; ``f`` takes no arguments and reads ``x``.
    Returns a numpy float64 array shaped like ``x``.

    Raises AssertionError when ``f`` returns NaN or inf at a nudged point; ValueError when
    ``h`` is not a finite number > 0 or ``x`` is not contiguous (the nudges would not reach it).
    """
    check_callable("f", f)
    _float_array("x", x)
    h = check_number("h", h, 0.0, low_open=True)
    grad = B.to_numpy(B.Backend("numpy", "float64").zeros(tuple(x.shape)))
    flat_view = B.namespace(x).reshape(x, (-1,))
    for i in range(grad.size):
        old = B.float_of(flat_view[i])
        flat_view[i] = old + h
        if i == 0 and B.float_of(x[(0,) * x.ndim]) != B.float_of(flat_view[0]):
            flat_view[i] = old
            raise ValueError("x must be contiguous: reshape(x, (-1,)) made a copy, so the nudges ±h would "
                             "not reach f (pass a contiguous copy, e.g. B.copy(x))")
        fp = _finite_value(f, f"x[{i}] + h")
        flat_view[i] = old - h
        fm = _finite_value(f, f"x[{i}] - h")
        flat_view[i] = old
        grad.flat[i] = (fp - fm) / (2 * h)
    return grad


def gradcheck(forward: Callable[[Any], Any], backward: Callable[[Any], Any], x: Any,
              seed: int = 0, h: float = 1e-6, tol: float = 1e-7, name: str = "backward",
              quiet: bool = True) -> float:
    r"""Check a hand-written backward against central differences, in float64.

    With a random upstream gradient :math:`g` (same shape as the output), the scalar
    :math:`f(x) = \sum g \odot \mathrm{forward}(x)` has gradient ``backward(g)``; compare that
    with :func:`numerical_gradient`. ``x`` must be a contiguous float64 array (changed and
    restored in place).

    Returns the relative error; raises AssertionError when it exceeds ``tol``, when the
    forward output or the gradient ``backward(g)`` holds NaN or inf, or when the gradient's
    shape is not ``x``'s. ``h`` and ``tol`` must be finite numbers > 0.
    """
    check_callable("forward", forward)
    check_callable("backward", backward)
    _float_array("x", x)
    if B.dtype_name(x) != "float64":
        raise TypeError(f"x must be a float64 array for gradcheck, got {B.dtype_name(x)}")
    if math.prod(tuple(x.shape)) == 0:
        raise ValueError(f"x must not be empty (nothing to check), got shape {tuple(x.shape)}")
    seed = check_int("seed", seed, 0)
    h = check_number("h", h, 0.0, low_open=True)
    tol = check_number("tol", tol, 0.0, low_open=True)
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    quiet = check_bool("quiet", quiet)
    out = forward(x)
    out_np = _np("forward(x)", out)
    if not (abs(out_np) < math.inf).all():
        raise AssertionError(f"✗ {name}: forward(x) holds NaN or inf, nothing to check")
    g = B.asarray(B.generator(seed).standard_normal(tuple(out.shape)), x)
    xp = B.namespace(x)
    analytic = _np("backward(g)", backward(g))
    if analytic.size != math.prod(tuple(x.shape)) or (x.ndim and analytic.shape != tuple(x.shape)):
        raise AssertionError(f"✗ {name} returned a gradient of shape {analytic.shape}, x has shape {tuple(x.shape)}")
    if not (abs(analytic) < math.inf).all():
        bad = int((~(abs(analytic) < math.inf)).sum())
        raise AssertionError(f"✗ {name} returned NaN or inf in {bad} of {analytic.size} gradient entries")
    numeric = numerical_gradient(lambda: xp.sum(forward(x) * g), x, h).reshape(analytic.shape)
    if not (abs(numeric) < math.inf).all():
        raise AssertionError(f"✗ {name}: the numerical gradient overflowed (h={h}); try a larger h")
    err = rel_error(analytic, numeric) if abs(numeric).max() > 0 or abs(analytic).max() > 0 else 0.0
    # relative error is unstable for entries near zero: use the scale of the whole gradient
    scale = max(float(abs(numeric).max()), 1e-12)
    err = min(err, float(abs(analytic - numeric).max()) / scale)
    if not err <= tol:                                    # NaN never passes
        raise AssertionError(f"✗ {name} fails the gradient check: relative error {err:.2e} > {tol:.0e}")
    if not quiet:
        print(f"✓ {name} passes the gradient check: relative error {err:.1e}")
    return err


# ----------------------------------------------------------------------------- claims
class ClaimFailed(AssertionError):
    """A sentence of a chapter that its own run contradicts (raised in FULL mode)."""


def quick_mode() -> bool:
    """True when the environment variable ``QUICK`` is set to anything but ``""``/``"0"``."""
    return os.environ.get("QUICK", "0").strip().lower() not in ("", "0", "false", "no")


def _number_text(value: Any) -> str:
    number = float(value)
    return f"{number:.4g}" if number != int(number) or abs(number) >= 1e6 else f"{int(number)}"


def claim(text: str, condition: Any, *, quick: bool | None = None, **numbers: Any) -> bool:
    """Check a sentence of a chapter against the run's numbers and print the verdict.

    Prints ``✓ <text>  (name=value, ...)`` when ``condition`` holds and ``✗ ...`` when it does
    not. In FULL mode a false claim raises :class:`ClaimFailed`, so the chapter fails; in QUICK
    mode (small data, few epochs: the numbers are too small to show the trends) it is reported
    and the run goes on.

    Parameters
    ----------
    text : str
        The sentence, as the chapter states it.
    condition : bool
        Whether the run's numbers support it (computed from ``numbers`` by the caller).
    quick : bool, optional
        The chapter's ``QUICK`` parameter; ``None`` reads the environment (:func:`quick_mode`).
    **numbers : float
        The numbers the claim rests on, printed beside it. A NaN among them makes the claim
        false: a check never passes on NaN.

    Returns
    -------
    bool
        Whether the claim held.

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"text must be a non-empty str, got {text!r}")
    quick = quick_mode() if quick is None else check_bool("quick", quick)
    values = {}
    for name, value in numbers.items():
        if getattr(value, "shape", ()) != () or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be a number (printed beside the claim), got {value!r}")
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number (printed beside the claim), got {value!r}") from None
    if getattr(condition, "shape", ()) != ():
        raise TypeError(f"condition must be one bool, got an array of shape {tuple(condition.shape)}")
    held = bool(condition) and not any(math.isnan(v) for v in values.values())
    shown = ", ".join(f"{k}={_number_text(v)}" if math.isfinite(v) else f"{k}={v}" for k, v in values.items())
    line = f"{'✓' if held else '✗'} {text}" + (f"  ({shown})" if shown else "")
    if not held and quick:
        line += "  [QUICK mode: too little data and too few epochs to show this; the FULL run checks it]"
    print(line)
    if not held and not quick:
        raise ClaimFailed(line)
    return held
