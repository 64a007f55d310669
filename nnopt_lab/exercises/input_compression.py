"""Self-checks for the exercises of chapters/02_3_data_compression.ipynb.

Each checker runs the learner's function on fixed inputs, compares it with the workbook's
reference (:mod:`nnopt_lab.compression.quantization`, :mod:`nnopt_lab.preprocessing.input_compression`)
and, when it differs, recognizes the usual mistakes and says which one was made. A pass prints a
line starting with "✓"; a failure raises AssertionError with the diagnosis.

See: chapters/02_3_data_compression.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

from .. import backend as B
from .checks import ExerciseFailed
from ..compression.quantization import quantize_uniform
from ..preprocessing.input_compression import PCA, otsu_threshold
from . import checks

__all__ = ["check_kbit_quantizer", "check_explained_variance_ratio", "check_otsu_threshold", "check_pca_reconstruct"]

_TOL = 1e-5


def _close(a, b) -> bool:
    return a.shape == b.shape and bool((abs(a - b) <= _TOL).all())


# ----------------------------------------------------------------------------- exercise 1
def _kbit_inputs():
    values = B.generator(11).uniform(0.0, 1.0, 200).tolist() + [0.0, 1.0, -0.2, 1.3, 0.5, 0.25]
    return B.active().asarray(values)


def check_kbit_quantizer(fn: Callable[[Any, int], Any]) -> None:
    r"""Check ``fn(x, bits)``: x in [0, 1] rounded to the :math:`2^k` levels :math:`0, \Delta, ..., 1`.

    Reference: :func:`~nnopt_lab.compression.quantization.quantize_uniform` (x, bits, 0, 1).
    """
    x = _kbit_inputs()
    xn = B.to_numpy(x).astype("float64")
    for bits in (1, 2, 3, 4, 8):
        steps = 2 ** bits - 1
        ours = B.to_numpy(quantize_uniform(x, bits, 0.0, 1.0)).astype("float64")
        what = f"your function (bits={bits})"
        got = checks.as_float64(checks.call(what, fn, x, bits), what, ours.shape)
        if _close(got, ours):
            continue
        clamped = xn.clip(0.0, 1.0)
        levels = sorted(set(round(v, 9) for v in got.tolist()))
        hint = None
        if _close(got, (clamped * 2 ** bits).round().clip(0, 2 ** bits) / 2 ** bits) or _close(
                got, (clamped * 2 ** bits).round().clip(0, steps) / 2 ** bits):
            hint = (f"your levels are off by one: 2^k = {2 ** bits} levels need 2^k − 1 = {steps} steps, "
                    f"so Δ = (hi − lo)/(2^k − 1) = 1/{steps}, not 1/{2 ** bits}")
        elif _close(got, (clamped * steps).round()):
            hint = (f"you returned the integer codes 0..{steps}; the exercise asks for the values: "
                    f"multiply the codes by Δ = 1/{steps}")
        elif _close(got, (clamped * steps) // 1 / steps):
            hint = "you truncate (floor) instead of rounding to the nearest level: use round, not floor"
        elif _close(got, (xn * steps).round() / steps):
            hint = "values outside [0, 1] are not clamped: clip the codes to [0, 2^k − 1]"
        elif len(levels) > 2 ** bits:
            hint = f"you produce {len(levels)} distinct values, but {bits} bits allow only {2 ** bits}"
        bad = int((abs(got - ours) > _TOL).argmax())
        detail = (f"at bits={bits}, x={xn[bad]:.4f}: yours {got[bad]:.6f}, expected {ours[bad]:.6f}")
        raise ExerciseFailed("✗ " + (hint + f" ({detail})" if hint else f"wrong value {detail}"))
    print("✓ your k-bit quantizer matches nnopt_lab.compression.quantization.quantize_uniform "
          "for bits 1, 2, 3, 4, 8")


# ----------------------------------------------------------------------------- exercise 2
def _pca_inputs():
    g = B.generator(12)
    base = g.standard_normal((60, 6)) * [3.0, 2.0, 1.0, 0.5, 0.2, 0.1] + [5.0, -2.0, 1.0, 0.0, 3.0, 1.0]
    return B.to_backend(base, B.get_backend(B.active().name, "float64"))


def check_explained_variance_ratio(fn: Callable[[Any], Any]) -> None:
    r"""Check ``fn(X)``: the explained-variance ratio of every principal component, largest first.

    Reference: ``PCA(D).fit(X).explained_variance_ratio_`` (equal to scikit-learn's).
    """
    x = _pca_inputs()
    ref = B.to_numpy(PCA(x.shape[1]).fit(x).explained_variance_ratio_).astype("float64")
    got = checks.as_float64(checks.call("your function", fn, x), "your function")
    if got.shape != ref.shape:
        raise ExerciseFailed(f"✗ expected one ratio per component, shape {ref.shape}; got shape {got.shape}")
    if _close(got, ref):
        print("✓ your explained-variance ratios match nnopt_lab's PCA (and so sklearn's): "
              + ", ".join(f"{v:.3f}" for v in ref.tolist()))
        return
    xp = B.namespace(x)
    s_centred = B.to_numpy(xp.linalg.svd(x - xp.mean(x, axis=0), full_matrices=False)[1])
    s_raw = B.to_numpy(xp.linalg.svd(x, full_matrices=False)[1])
    if _close(got, (s_raw ** 2) / (s_raw ** 2).sum()):
        hint = "you forgot to centre the data: subtract the column means before the SVD"
    elif _close(got, s_centred / s_centred.sum()):
        hint = "variance grows with the SQUARE of the singular values: use s², not s"
    elif _close(got, ref[::-1]):
        hint = "the order is reversed: the first component must explain the most variance"
    elif abs(got.sum() - 1.0) > 1e-6:
        hint = f"ratios must add up to 1 over all components, yours add up to {got.sum():.4f}"
    else:
        hint = None
    detail = f"yours {[round(v, 4) for v in got.tolist()]}, expected {[round(v, 4) for v in ref.tolist()]}"
    raise ExerciseFailed("✗ " + (f"{hint} ({detail})" if hint else detail))


# ----------------------------------------------------------------------------- exercise 3
def _otsu_inputs():
    g = B.generator(13)
    bimodal = list(g.normal(0.2, 0.05, 300)) + list(g.normal(0.7, 0.1, 100))
    levels = [k / 16 for k in g.integers(0, 17, 500).tolist()]
    return [B.active().asarray(v) for v in (bimodal, levels)]


def check_otsu_threshold(fn: Callable[[Any], float]) -> None:
    r"""Check ``fn(x) -> t``: Otsu's threshold, with class 0 = {x <= t}.

    Any ``t`` that splits the values into the same two classes as
    :func:`~nnopt_lab.preprocessing.input_compression.otsu_threshold` is accepted.
    """
    for i, x in enumerate(_otsu_inputs()):
        xn = B.to_numpy(x).astype("float64")
        t_ref = otsu_threshold(x)
        answer = checks.call("your function", fn, x)
        try:
            t = float(B.to_numpy(answer))
        except (TypeError, ValueError) as err:
            raise ExerciseFailed(f"✗ your function must return one number, got an error: {err}") from None
        if ((xn <= t) == (xn <= t_ref)).all():
            continue
        n_ref, n_got = int((xn <= t_ref).sum()), int((xn <= t).sum())
        values = sorted(set(xn.tolist()))
        between = []
        for cut in values[:-1]:
            c0, c1 = xn[xn <= cut], xn[xn > cut]
            w0 = len(c0) / len(xn)
            between.append(w0 * (1 - w0) * (c0.mean() - c1.mean()) ** 2)
        smallest = values[int(min(range(len(between)), key=between.__getitem__))]
        if ((xn <= t) == (xn <= smallest)).all():
            hint = "you picked the cut with the SMALLEST between-class variance; Otsu maximizes ω0·ω1·(μ0 − μ1)²"
        elif abs(t - xn.mean()) < 1e-5 * (1 + abs(xn.mean())):
            hint = "that is the mean of the data; Otsu's threshold maximizes the between-class variance"
        elif (xn < t).sum() == n_ref:
            hint = "class 0 must be x <= t (your t is the first value of class 1)"
        else:
            hint = None
        detail = f"on test input {i + 1}: your t = {t:.4f} puts {n_got} values in class 0, expected {n_ref} (t = {t_ref:.4f})"
        raise ExerciseFailed("✗ " + (f"{hint} ({detail})" if hint else detail))
    print("✓ your Otsu threshold splits both test inputs like nnopt_lab.preprocessing.input_compression.otsu_threshold")


# ----------------------------------------------------------------------------- exercise 4: PCA code
def _pca_code_inputs():
    """Fixed small tables: train (30, 6) with correlated columns and an offset, test (5, 6), float64."""
    g = B.generator(21)
    mix = g.standard_normal((6, 6)) * (0.3 + g.uniform(size=(6, 1)) * 2.0)
    numpy64 = B.get_backend("numpy", "float64")
    train = g.standard_normal((30, 6)) @ mix + 3.0
    test = g.standard_normal((5, 6)) @ mix + 3.0
    return numpy64.asarray(train), numpy64.asarray(test)


def check_pca_reconstruct(fn: Callable[[Any, Any, int], Any]) -> None:
    r"""``fn(train, x, k)``: the rank-``k`` PCA reconstruction :math:`\hat x = (x - \mu) V_k V_k^\top + \mu`
    of ``x`` with :math:`\mu` and :math:`V_k` from ``train``; compared with
    :meth:`nnopt_lab.preprocessing.input_compression.PCA.reconstruct` (equal to scikit-learn's PCA)
    for k = 1, 2, 4 on fixed 30×6 / 5×6 tables. The reconstruction does not depend on the signs of
    the components, so any SVD gives the same answer.

    See: chapters/02_3_data_compression.ipynb
    """
    train, test = _pca_code_inputs()
    xp = B.namespace(train)
    for k in (1, 2, 4):
        want = B.to_numpy(PCA(k).fit(train).reconstruct(test))
        got = checks.as_float64(checks.call("pca_reconstruct", fn, xp.asarray(train, copy=True),
                                            xp.asarray(test, copy=True), k),
                                f"pca_reconstruct(train, x, {k})", tuple(test.shape))
        if _close(got, want):
            continue
        mu, mu_x = xp.mean(train, axis=0), xp.mean(test, axis=0)
        vt = xp.linalg.svd(train - mu, full_matrices=False)[2]
        vt_raw = xp.linalg.svd(train, full_matrices=False)[2]
        v_k, smallest = vt[:k].T, vt[-k:].T
        mistakes = {
            "the data was not centred: subtract the training mean before the SVD and add it back after":
                (test @ vt_raw[:k].T) @ vt_raw[:k],
            "the mean was not added back: x̂ = (x − μ)·V_k·V_kᵀ + μ": (test - mu) @ v_k @ v_k.T,
            "x was centred with its own mean; μ must come from the TRAINING data": (test - mu_x) @ v_k @ v_k.T + mu_x,
            "those are the k components of SMALLEST variance: the SVD returns them largest first":
                (test - mu) @ smallest @ smallest.T + mu,
            "the components are the ROWS of Vᵀ (xp.linalg.svd returns U, S, Vᵀ), not its columns":
                (test - mu) @ vt[:, :k] @ vt[:, :k].T + mu,
        }
        for message, values in mistakes.items():
            if _close(got, B.to_numpy(values)):
                raise ExerciseFailed(f"✗ pca_reconstruct(k={k}): {message}")
        error = float(abs(got - want).max())
        raise ExerciseFailed(f"✗ pca_reconstruct(k={k}): differs from the reference by up to {error:.3g}")
    print("✓ pca_reconstruct matches PCA(k).fit(train).reconstruct(x) (and so sklearn's PCA) for k = 1, 2, 4")
