"""Checking helpers a learner can read: numerical gradient checks and reference comparisons.

``compare(ours, reference, "torch.nn.Conv2d")`` prints one line such as
``✓ matches torch.nn.Conv2d: max |diff| 3e-15`` and raises ``AssertionError`` (with the
place of the worst difference) when the arrays do not match.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

import math

from . import backend as B

__all__ = ["rel_error", "max_abs_diff", "compare", "numerical_gradient", "gradcheck"]


def _np(x: Any):
    """A numpy float64 array of at least one dimension."""
    a = B.to_numpy(x).astype("float64")
    return a.reshape(a.shape or (1,))


def max_abs_diff(a: Any, b: Any) -> float:
    """max |a - b| over all entries (both moved to numpy float64 first)."""
    a, b = _np(a), _np(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(abs(a - b).max()) if a.size else 0.0


def rel_error(a: Any, b: Any) -> float:
    r"""Largest relative error :math:`\max |a-b| / \max(|a|+|b|, 10^{-300})`, elementwise."""
    a, b = _np(a), _np(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if not a.size:
        return 0.0
    return float((abs(a - b) / (abs(a) + abs(b)).clip(min=1e-300)).max())


def compare(ours: Any, reference: Any, name: str, rtol: float = 1e-7, atol: float = 1e-10,
            quiet: bool = False) -> float:
    """Check ``ours`` against ``reference`` elementwise: |ours - ref| <= atol + rtol·|ref|.

    Prints a one-line verdict and returns max |diff|; raises AssertionError on a mismatch.
    NaN or inf in either array is a mismatch unless both have it in the same place.
    """
    a, b = _np(ours), _np(reference)
    if a.shape != b.shape:
        raise AssertionError(f"✗ differs from {name}: shape {a.shape} vs reference {b.shape}")
    if a.size == 0:
        if not quiet:
            print(f"✓ matches {name}: both empty")
        return 0.0
    same_nonfinite = (~(abs(a) < math.inf)) & (~(abs(b) < math.inf)) & ((a == b) | ((a != a) & (b != b)))
    diff = abs(a - b)
    diff[same_nonfinite] = 0.0
    bad = ~(diff <= atol + rtol * abs(b))
    bad[same_nonfinite] = False
    worst = float(diff.max()) if diff.size else 0.0
    if bad.any():
        idx = tuple(int(i) for i in zip(*bad.nonzero()).__next__())
        raise AssertionError(
            f"✗ differs from {name}: {int(bad.sum())} of {a.size} entries off, max |diff| {worst:.3g}; "
            f"first at index {idx}: ours {a[idx]!r}, reference {b[idx]!r} (rtol={rtol}, atol={atol})")
    if not quiet:
        print(f"✓ matches {name}: max |diff| {worst:.1g}")
    return worst


def numerical_gradient(f: Callable[[], float], x: Any, h: float = 1e-6) -> Any:
    r"""Central differences :math:`\partial f/\partial x_i \approx (f(x+h e_i) - f(x-h e_i)) / 2h`.

    ``x`` is changed in place and restored; ``f`` takes no arguments and reads ``x``.
    Returns a numpy float64 array shaped like ``x``.
    """
    grad = B.to_numpy(B.Backend("numpy", "float64").zeros(tuple(x.shape)))
    flat_view = B.namespace(x).reshape(x, (-1,))
    for i in range(grad.size):
        old = B.float_of(flat_view[i])
        flat_view[i] = old + h
        fp = f()
        flat_view[i] = old - h
        fm = f()
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

    Returns the relative error; raises AssertionError when it exceeds ``tol``.
    """
    if B.dtype_name(x) != "float64":
        raise TypeError(f"gradcheck needs a float64 x, got {B.dtype_name(x)}")
    out = forward(x)
    g = B.asarray(B.generator(seed).standard_normal(tuple(out.shape)), x)
    xp = B.namespace(x)
    analytic = _np(backward(g))
    numeric = numerical_gradient(lambda: B.float_of(xp.sum(forward(x) * g)), x, h)
    err = rel_error(analytic, numeric) if abs(numeric).max() > 0 or abs(analytic).max() > 0 else 0.0
    # relative error is unstable for entries near zero: use the scale of the whole gradient
    scale = max(float(abs(numeric).max()), 1e-12)
    err = min(err, float(abs(analytic - numeric).max()) / scale)
    if err > tol:
        raise AssertionError(f"✗ {name} fails the gradient check: relative error {err:.2e} > {tol:.0e}")
    if not quiet:
        print(f"✓ {name} passes the gradient check: relative error {err:.1e}")
    return err
