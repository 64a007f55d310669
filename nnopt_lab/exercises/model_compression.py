r"""Self-checks for the exercises of chapters/03_1_model_compression.ipynb.

* :func:`check_linear_quantize` -- the learner's ``linear_quantize(w, bits) -> (codes, scale,
  zero_point)``, affine per-tensor k-bit quantization of a weight, against
  :func:`nnopt_lab.compression.quantization.qparams` and
  :func:`~nnopt_lab.compression.quantization.quantize` (which equal torch's ``MinMaxObserver``
  and ``torch.fake_quantize_per_tensor_affine`` bit for bit; tests/test_model_compression_exercises.py
  checks these very inputs against torch);
* :func:`check_kmeans_quantize` -- the learner's ``kmeans_quantize(w, centroids) -> (codebook,
  labels)``, Lloyd's k-means from given starting centroids, against
  :func:`nnopt_lab.compression.weight_sharing.kmeans` (which equals scikit-learn's ``KMeans``
  started from the same centroids; the test checks these inputs against scikit-learn).

Each checker runs the learner's function on fixed small inputs, and when the answer differs it
replays the usual mistakes to name the one that was made; a learner who has not started is told
so (:data:`nnopt_lab.exercises.checks.NOT_STARTED`).

See: chapters/03_1_model_compression.ipynb (seed §3.2.1.1)
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .. import backend as B
from ..compression import quantization as Q
from ..compression import weight_sharing as WS
from . import checks

__all__ = ["linear_quantize_cases", "kmeans_cases", "check_linear_quantize", "check_kmeans_quantize"]

SCALE_RTOL = 1e-6   # the reference scale is float32 (as torch's), a learner's may be float64


# ----------------------------------------------------------------------------- exercise 1
def linear_quantize_cases() -> list[tuple[str, Any, int]]:
    """The fixed inputs of :func:`check_linear_quantize`: ``(what, w (float64, active backend), bits)``.

    A weight matrix with both signs, an all-positive one (its range must be widened to 0) and an
    all-negative one, at 8, 4 and 2 bits. No entry lies next to a rounding tie.
    """
    g = B.generator(31)
    b64 = B.get_backend(B.active().name, "float64")
    mixed = g.standard_normal((6, 10)) * 0.3 + 0.05
    positive = g.uniform(0.2, 1.5, (4, 7))
    negative = -g.uniform(0.1, 0.9, (12,))
    cases = []
    for what, w in (("a weight of both signs", mixed), ("an all-positive weight", positive),
                    ("an all-negative weight", negative)):
        for bits in (8, 4, 2):
            cases.append((what, B.to_backend(w, b64), bits))
    return cases


def _reference_quantize(w: Any, bits: int) -> tuple[Any, float, int]:
    """(codes as float64 numpy, scale, zero point) of the production quantizer."""
    xp = B.namespace(w)
    scale, zero_point = Q.qparams(B.float_of(xp.min(w)), B.float_of(xp.max(w)), bits)
    qmin, qmax = Q.integer_range(bits)
    codes = Q.quantize(w, scale, zero_point, qmin, qmax)
    return B.to_numpy(codes).astype("float64"), scale, zero_point


def _number(what: str, value: Any) -> float:
    try:
        number = float(B.to_numpy(value)) if hasattr(value, "shape") else float(value)
    except (TypeError, ValueError):
        raise checks.ExerciseFailed(f"✗ {what} must be one number, got {value!r}") from None
    if not math.isfinite(number):
        raise checks.ExerciseFailed(f"✗ {what} must be a finite number, got {number}")
    return number


def _quantize_mistake(w: Any, bits: int, codes: Any, scale: float, zero_point: float) -> str | None:
    """The name of the usual mistake that gives (codes, scale, zero_point), else None."""
    x = B.to_numpy(w).astype("float64")
    lo, hi = float(x.min()), float(x.max())
    qmax = 2 ** bits - 1
    widened = (max(hi, 0.0) - min(lo, 0.0)) / qmax
    if abs(scale - (hi - lo) / qmax) <= SCALE_RTOL * abs(scale) and abs(scale - widened) > SCALE_RTOL * widened:
        return ("the range was not widened to contain 0: use x_min = min(w.min(), 0) and x_max = max(w.max(), 0), "
                "so that 0.0 is exactly representable (its code is the zero point)")
    if abs(scale - widened * qmax / 2 ** bits) <= SCALE_RTOL * widened:
        return (f"the scale is off by one level: {bits} bits give 2^b = {2 ** bits} codes but 2^b − 1 = {qmax} steps, "
                f"so Δ = (x_max − x_min)/{qmax}, not /{2 ** bits}")
    top = 2 ** (bits - 1) - 1
    if top > 0 and abs(scale - max(abs(lo), abs(hi)) / top) <= SCALE_RTOL * scale and zero_point == 0 and \
            abs(widened - scale) > SCALE_RTOL * widened:
        return ("that is the symmetric scheme (z = 0, Δ = max|w|/(2^(b−1) − 1)); the exercise asks for the affine "
                "one: Δ = (x_max − x_min)/(2^b − 1) and z = q_min − round(x_min/Δ)")
    if zero_point != round(zero_point):
        return "the zero point must be an integer: z = q_min − round(x_min/Δ) (round it, then clamp to [0, 2^b − 1])"
    expected_z = min(max(-round(min(lo, 0.0) / widened), 0), qmax)
    if zero_point == -expected_z and expected_z != 0:
        return "the zero point has the wrong sign: z = q_min − round(x_min/Δ) = −round(x_min/Δ), positive when x_min < 0"
    if abs(scale - widened) <= SCALE_RTOL * widened and zero_point == expected_z:
        y = x / scale
        if (abs(codes - ((y // 1) + zero_point).clip(0, qmax)) < 1e-9).all():
            return "the codes are truncated (floor) instead of rounded: use round(w/Δ) + z"
        if (abs(codes - ((y.round() + zero_point).clip(0, qmax) - zero_point) * scale) < 1e-6 * scale).all():
            return "you returned the dequantized values (x_q − z)·Δ; return the integer codes x_q themselves"
        if (abs(codes - (y.round() - zero_point).clip(0, qmax)) < 1e-9).all() or \
                (abs(codes - (y.round() - zero_point)) < 1e-9).all():
            return "the zero point is subtracted from the codes; it is added: x_q = round(w/Δ) + z"
    return None


def check_linear_quantize(fn: Callable[[Any, int], tuple]) -> None:
    r"""Check ``fn(w, bits) -> (codes, scale, zero_point)``: affine per-tensor k-bit quantization.

    Expected: :math:`x_{\min} = \min(w, 0)`, :math:`x_{\max} = \max(w, 0)`,
    :math:`\Delta = (x_{\max} - x_{\min})/(2^b - 1)`,
    :math:`z = \operatorname{clamp}(-\operatorname{round}(x_{\min}/\Delta), 0, 2^b - 1)`,
    :math:`x_q = \operatorname{clamp}(\operatorname{round}(w/\Delta) + z, 0, 2^b - 1)` -- what
    ``MinMaxObserver(quant_min=0, quant_max=2^b - 1)`` and
    ``torch.fake_quantize_per_tensor_affine`` compute. The scale may differ from the reference
    (a float32 number) by a relative 1e-6; codes and zero point must be equal.
    """
    checks.require_function("linear_quantize", fn)
    for what, w, bits in linear_quantize_cases():
        name = f"linear_quantize (on {what}, bits={bits})"
        answer = checks.call(name, fn, w, bits)
        if not isinstance(answer, tuple) or len(answer) != 3:
            raise checks.ExerciseFailed(f"✗ {name} must return a tuple (codes, scale, zero_point), got "
                                 f"{type(answer).__name__}" + (f" of length {len(answer)}" if isinstance(answer, tuple) else ""))
        want_codes, want_scale, want_z = _reference_quantize(w, bits)
        codes = checks.as_float64(answer[0], f"{name}'s codes", tuple(want_codes.shape))
        scale = _number(f"{name}'s scale", answer[1])
        zero_point = _number(f"{name}'s zero_point", answer[2])
        right = (abs(scale - want_scale) <= SCALE_RTOL * want_scale and zero_point == want_z
                 and bool((codes == want_codes).all()))
        if right:
            continue
        mistake = _quantize_mistake(w, bits, codes, scale, zero_point)
        if mistake is None:
            if abs(scale - want_scale) > SCALE_RTOL * want_scale:
                mistake = f"scale {scale:.6g}, expected {want_scale:.6g}"
            elif zero_point != want_z:
                mistake = f"zero point {zero_point:g}, expected {want_z}"
            else:
                bad = int((codes != want_codes).argmax())
                mistake = (f"{int((codes != want_codes).sum())} codes differ, the first at flat index {bad}: "
                           f"yours {codes.reshape(-1)[bad]:g}, expected {want_codes.reshape(-1)[bad]:g}")
        raise checks.ExerciseFailed(f"✗ {name}: {mistake}")
    print("✓ your linear_quantize matches nnopt_lab's quantizer (= torch MinMaxObserver + "
          "fake_quantize_per_tensor_affine): codes, scale and zero point at 8, 4 and 2 bits")


# ----------------------------------------------------------------------------- exercise 2
def kmeans_cases() -> list[tuple[str, Any, Any]]:
    """The fixed inputs of :func:`check_kmeans_quantize`: ``(what, w, starting centroids)``, float64.

    A (5, 12) weight of two bumps with 4 linearly spaced starting centroids (2 bits), and a
    (200,) heavy-tailed weight with 8 density-based ones (3 bits), given in shuffled order (the
    codebook keeps the order of the starting centroids). No cluster ever empties.
    """
    g = B.generator(32)
    b64 = B.get_backend(B.active().name, "float64")
    bumps = B.to_backend(list(g.normal(-0.4, 0.1, 30)) + list(g.normal(0.3, 0.15, 30)), b64)
    bumps = B.namespace(bumps).reshape(bumps, (5, 12))
    heavy = B.to_backend(g.standard_t(4, 200) * 0.1, b64)
    shuffled = B.to_backend(B.to_numpy(WS.init_centroids(heavy, 8, "density"))[[3, 0, 6, 1, 7, 2, 5, 4]], b64)
    return [("a (5, 12) weight, k = 4 from linear init", bumps, WS.init_centroids(bumps, 4, "linear")),
            ("a (200,) weight, k = 8 from shuffled density init", heavy, shuffled)]


def _lloyd_steps(x: Any, c: Any, steps: int) -> tuple[Any, Any]:
    """(centroids, labels) after exactly ``steps`` assign-then-update rounds (numpy float64, no empties)."""
    labels = None
    for _ in range(steps):
        labels = abs(x[:, None] - c[None, :]).argmin(axis=1)
        c = c.copy()
        for j in range(c.shape[0]):
            if (labels == j).any():
                c[j] = x[labels == j].mean()
    return c, labels


def check_kmeans_quantize(fn: Callable[[Any, Any], tuple]) -> None:
    r"""Check ``fn(w, centroids) -> (codebook, labels)``: Lloyd's k-means of the weights from
    the given starting centroids, until the labels stop changing.

    Expected: the codebook of :func:`nnopt_lab.compression.weight_sharing.kmeans` (``init`` =
    the centroids, ``tol=0``), in the order of the starting centroids, to 1e-9; the label of
    every weight (flat or in ``w``'s shape); the inertia :math:`\sum (w - c_{label})^2` follows.
    """
    checks.require_function("kmeans_quantize", fn)
    for what, w, init in kmeans_cases():
        name = f"kmeans_quantize (on {what})"
        k = int(init.shape[0])
        n = math.prod(tuple(w.shape))
        answer = checks.call(name, fn, w, B.copy(init))
        if not isinstance(answer, tuple) or len(answer) != 2:
            shape = tuple(getattr(answer, "shape", ()))
            hint = " (that looks like the reconstructed weight codebook[labels])" if shape == tuple(w.shape) else ""
            raise checks.ExerciseFailed(f"✗ {name} must return a tuple (codebook, labels), got "
                                 f"{type(answer).__name__}{hint}")
        ref = WS.kmeans(w, k, init=init, tol=0.0)
        want_c = B.to_numpy(ref.centroids).astype("float64")
        want_labels = B.to_numpy(ref.labels).astype("int64")
        codebook = checks.as_float64(answer[0], f"{name}'s codebook")
        labels = checks.as_float64(answer[1], f"{name}'s labels")
        if codebook.reshape(-1).shape != (k,):
            raise checks.ExerciseFailed(f"✗ {name}'s codebook must hold k = {k} centroids, got shape {tuple(codebook.shape)}")
        if labels.size != n:
            raise checks.ExerciseFailed(f"✗ {name}'s labels must hold one index per weight ({n}), got shape "
                                 f"{tuple(labels.shape)}")
        codebook, labels = codebook.reshape(-1), labels.reshape(-1)
        if checks.close_numbers(codebook.tolist(), want_c.tolist()) and (labels == want_labels).all():
            continue
        x = B.to_numpy(w).astype("float64").reshape(-1)
        start = B.to_numpy(init).astype("float64")
        inertia = float(((x - codebook[labels.clip(0, k - 1).astype("int64")]) ** 2).sum())
        detail = f"your inertia {inertia:.6g}, expected {ref.inertia:.6g}"
        mistake = None
        if checks.close_numbers(codebook.tolist(), want_c.tolist()):
            mistake = ("the codebook is right but the labels are not the nearest centroid of each weight "
                       "(return the labels of the last assignment)")
        elif checks.close_numbers(sorted(codebook.tolist()), sorted(want_c.tolist())):
            mistake = ("the right centroids in another order: keep them in the order of the starting centroids "
                       "(label j must mean centroid j)")
        else:
            for steps in range(1, 6):
                c_s, l_s = _lloyd_steps(x, start, steps)
                if checks.close_numbers(codebook.tolist(), c_s.tolist()):
                    mistake = (f"you stopped after {steps} assign-and-update round(s); repeat until the labels no "
                               f"longer change (the reference needs {ref.n_iter})")
                    break
            if mistake is None and checks.close_numbers(codebook.tolist(), start.tolist()):
                mistake = "the codebook is the starting centroids: move each centroid to the mean of its weights"
        raise checks.ExerciseFailed(f"✗ {name}: {mistake or 'codebook or labels differ'} ({detail})")
    print("✓ your kmeans_quantize matches nnopt_lab's k-means (= scikit-learn KMeans from the same init): "
          "codebook and labels on both inputs")
