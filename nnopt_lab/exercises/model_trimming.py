"""Self-checks for the exercises of chapters/03_3_model_trimming.ipynb.

* :func:`check_fold_batchnorm` -- the learner's BatchNorm folding against
  :func:`nnopt_lab.compression.trimming.fold_batchnorm` (which equals
  ``torch.nn.utils.fusion.fuse_linear_bn_eval`` / ``fuse_conv_bn_eval``: tests/test_trimming.py
  and the chapter's §5 check it), on a square Linear, a rectangular Linear and a Conv2d
  without bias;
* :func:`check_fuse_linear` -- the learner's fusion of two Linear layers against
  :func:`nnopt_lab.compression.trimming.fuse_linear`.

Each checker runs the learner's function on fixed float64 inputs, compares with the reference
and, when it differs, names the usual mistake (forgotten eps, the variance instead of its
square root, the batch's statistics instead of the running ones, a bias not shifted by the
mean, the product in the wrong order ...). A pass prints one line starting with "✓"; a
failure raises AssertionError with the diagnosis; a learner who has not started is told so.

See: chapters/03_3_model_trimming.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

from .. import backend as B
from .checks import ExerciseFailed
from ..compression.factorization import conv_from, linear_from
from ..compression.trimming import fold_batchnorm, fuse_linear
from ..nn.layers import BatchNorm1d, BatchNorm2d
from . import checks

__all__ = ["fold_batchnorm_cases", "check_fold_batchnorm", "fuse_linear_cases", "check_fuse_linear"]

_TOL = 1e-9
_EPS = 1e-3          # large enough that forgetting it is visible on the small variances below


def _backend64() -> B.Backend:
    return B.get_backend(B.active().name, "float64")


def _close(got, want) -> bool:
    return got.shape == want.shape and bool((abs(got - want) <= _TOL * (1.0 + abs(want))).all())


def _first_difference(got_w, want_w, got_b, want_b) -> str:
    """Where the learner's (weight, bias) first differs from the reference (NaN counts as a difference)."""
    part, got, want = ("weight", got_w, want_w) if not _close(got_w, want_w) else ("bias", got_b, want_b)
    bad = tuple(int(i) for i in next(zip(*(~(abs(got - want) <= _TOL * (1.0 + abs(want)))).nonzero())))
    return f"wrong {part} at index {bad}: yours {got[bad]:.6g}, expected {want[bad]:.6g}"


# ----------------------------------------------------------------------------- exercise 1: folding
def fold_batchnorm_cases() -> list[dict]:
    """The fixed inputs of :func:`check_fold_batchnorm`: a square Linear (4 -> 4), a Linear 5 -> 3
    and a Conv2d 2 -> 4 (3x3, no bias), each with a BatchNorm whose running statistics differ
    from the statistics of the last training batch (``batch_mean``, ``batch_var``).

    Returns a list of dicts with numpy float64 arrays ``weight``, ``bias`` (None for the conv)
    and ``bn`` = {"gamma", "beta", "running_mean", "running_var", "batch_mean", "batch_var", "eps"}.
    """
    g = B.generator(31)
    cases = []
    for name, shape, has_bias in (("Linear 4 -> 4", (4, 4), True), ("Linear 5 -> 3", (3, 5), True),
                                  ("Conv2d 2 -> 4, 3x3, no bias", (4, 2, 3, 3), False)):
        out = shape[0]
        bn = {"gamma": g.uniform(0.5, 2.0, out), "beta": g.normal(0.0, 1.0, out),
              "running_mean": g.normal(0.0, 1.0, out), "running_var": g.uniform(0.004, 0.05, out),
              "batch_mean": g.normal(0.0, 1.0, out), "batch_var": g.uniform(0.1, 2.0, out), "eps": _EPS}
        cases.append({"name": name, "weight": g.normal(0.0, 1.0, shape),
                      "bias": g.normal(0.0, 1.0, out) if has_bias else None, "bn": bn})
    return cases


def _bn_module(bn: dict, conv: bool, be: B.Backend):
    out = bn["gamma"].shape[0]
    module = (BatchNorm2d if conv else BatchNorm1d)(out, eps=bn["eps"], backend=be)
    module._params["weight"].data = B.to_backend(bn["gamma"], be)
    module._params["bias"].data = B.to_backend(bn["beta"], be)
    module._buffers["running_mean"] = B.to_backend(bn["running_mean"], be)
    module._buffers["running_var"] = B.to_backend(bn["running_var"], be)
    return module.eval()


def reference_fold(case: dict, be: B.Backend | None = None) -> tuple:
    """``(weight, bias)`` of :func:`~nnopt_lab.compression.trimming.fold_batchnorm` for one case (numpy)."""
    be = be or _backend64()
    weight = B.to_backend(case["weight"], be)
    bias = None if case["bias"] is None else B.to_backend(case["bias"], be)
    conv = case["weight"].ndim == 4
    layer = conv_from(weight, bias, padding=(1, 1)) if conv else linear_from(weight, bias)
    folded = fold_batchnorm(layer.eval(), _bn_module(case["bn"], conv, be))
    return (B.to_numpy(folded._params["weight"].data).astype("float64"),
            B.to_numpy(folded._params["bias"].data).astype("float64"))


def _fold_with(case: dict, mean, var, *, eps=True, sqrt=True, shift=True, beta=True, scale_bias=True,
               scale_weight=True) -> tuple:
    """The fold of one case computed a known-wrong way (numpy), for naming the learner's mistake."""
    bn, w = case["bn"], case["weight"]
    b = case["bias"] if case["bias"] is not None else 0.0 * bn["running_mean"]
    denominator = var + (bn["eps"] if eps else 0.0)
    s = bn["gamma"] / (denominator ** 0.5 if sqrt else denominator)
    w_new = w * s.reshape((-1,) + (1,) * (w.ndim - 1)) if scale_weight else w
    shifted = b - mean if shift else b
    b_new = (shifted * s if scale_bias else shifted) + (bn["beta"] if beta else 0.0)
    return w_new, b_new


def _fold_mistakes(case: dict) -> dict[str, tuple]:
    bn = case["bn"]
    run = (bn["running_mean"], bn["running_var"])
    mistakes = {
        "you used the statistics of the last training batch (batch_mean, batch_var); a model is folded for "
        "inference, where BatchNorm uses its RUNNING statistics (running_mean, running_var)":
            _fold_with(case, bn["batch_mean"], bn["batch_var"]),
        "you forgot eps: the scale is gamma / sqrt(running_var + eps), as BatchNorm divides by "
        "sqrt(var + eps) in eval mode": _fold_with(case, *run, eps=False),
        "you divided by the variance: the scale is gamma / sqrt(running_var + eps), not gamma / (var + eps)":
            _fold_with(case, *run, sqrt=False),
        "you divided by the variance without eps: the scale is gamma / sqrt(running_var + eps)":
            _fold_with(case, *run, sqrt=False, eps=False),
        "the bias is not shifted by the mean: b' = (b - running_mean) * scale + beta":
            _fold_with(case, *run, shift=False),
        "beta is missing from the bias: b' = (b - running_mean) * scale + beta":
            _fold_with(case, *run, beta=False),
        "the bias is not scaled: b' = (b - running_mean) * scale + beta (the whole shifted bias is scaled)":
            _fold_with(case, *run, scale_bias=False),
        "the weight is not scaled: each output row (filter) o of W is multiplied by scale[o]":
            _fold_with(case, *run, scale_weight=False),
    }
    if case["weight"].ndim == 2 and case["weight"].shape[0] == case["weight"].shape[1]:
        s = bn["gamma"] / (bn["running_var"] + bn["eps"]) ** 0.5
        right = _fold_with(case, *run)
        mistakes["you scaled the input COLUMNS of W: scale[o] multiplies output row o (W * scale[:, None])"] = (
            case["weight"] * s[None, :], right[1])
    return mistakes


def _pair(name: str, answer: Any, shapes: tuple) -> tuple:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ExerciseFailed(f"✗ {name} must return two arrays (weight, bias), got {type(answer).__name__}")
    return tuple(checks.as_float64(a, f"{name} ({part})", shape)
                 for a, part, shape in zip(answer, ("weight", "bias"), shapes))


def check_fold_batchnorm(fn: Callable[[Any, Any, dict], tuple]) -> None:
    r"""Check ``fn(weight, bias, bn) -> (weight', bias')``: BatchNorm (eval mode) folded into the layer before it.

    With :math:`s = \gamma / \sqrt{\hat\sigma^2 + \epsilon}` per output channel,
    :math:`W'_{o,\dots} = s_o W_{o,\dots}` and :math:`b' = (b - \hat\mu) s + \beta` (``bias`` None
    counts as zeros). ``bn`` holds numpy-or-torch float64 arrays ``gamma``, ``beta``,
    ``running_mean``, ``running_var``, ``batch_mean``, ``batch_var`` and the float ``eps``.
    Reference: :func:`nnopt_lab.compression.trimming.fold_batchnorm`.
    """
    checks.require_function("fold_batchnorm", fn)
    be = _backend64()
    for case in fold_batchnorm_cases():
        want_w, want_b = reference_fold(case, be)
        bn = {k: (v if k == "eps" else B.to_backend(v, be)) for k, v in case["bn"].items()}
        bias = None if case["bias"] is None else B.to_backend(case["bias"], be)
        what = f"fold_batchnorm on the {case['name']}"
        answer = checks.call(what, fn, B.to_backend(case["weight"], be), bias, bn)
        got_w, got_b = _pair(what, answer, (want_w.shape, want_b.shape))
        if _close(got_w, want_w) and _close(got_b, want_b):
            continue
        for message, (w, b) in _fold_mistakes(case).items():
            if _close(got_w, w) and _close(got_b, b):
                raise ExerciseFailed(f"✗ {what}: {message}")
        raise ExerciseFailed(f"✗ {what}: " + _first_difference(got_w, want_w, got_b, want_b))
    print("✓ fold_batchnorm matches nnopt_lab.compression.trimming.fold_batchnorm (= torch.nn.utils.fusion."
          "fuse_linear_bn_eval / fuse_conv_bn_eval) on a square Linear, a Linear 5 -> 3 and a Conv2d without bias")


# ----------------------------------------------------------------------------- exercise 2: fusion
def fuse_linear_cases() -> list[dict]:
    """The fixed inputs of :func:`check_fuse_linear`: 4 -> 4 -> 4 (square, so the wrong order runs)
    and 5 -> 3 -> 2; numpy float64 arrays ``w1`` (h, d_in), ``b1`` (h,), ``w2`` (d_out, h), ``b2`` (d_out,)."""
    g = B.generator(32)
    return [{"name": f"Linear {d} -> {h} -> Linear {h} -> {o}", "w1": g.normal(0.0, 1.0, (h, d)),
             "b1": g.normal(0.0, 1.0, h), "w2": g.normal(0.0, 1.0, (o, h)), "b2": g.normal(0.0, 1.0, o)}
            for d, h, o in ((4, 4, 4), (5, 3, 2))]


def reference_fuse(case: dict, be: B.Backend | None = None) -> tuple:
    """``(weight, bias)`` of :func:`~nnopt_lab.compression.trimming.fuse_linear` for one case (numpy)."""
    be = be or _backend64()
    first = linear_from(B.to_backend(case["w1"], be), B.to_backend(case["b1"], be))
    second = linear_from(B.to_backend(case["w2"], be), B.to_backend(case["b2"], be))
    fused = fuse_linear(first, second)
    return (B.to_numpy(fused._params["weight"].data).astype("float64"),
            B.to_numpy(fused._params["bias"].data).astype("float64"))


def _fuse_mistakes(case: dict) -> dict[str, tuple]:
    w1, b1, w2, b2 = case["w1"], case["b1"], case["w2"], case["b2"]
    w = w2 @ w1
    mistakes = {
        "the bias is b1 + b2: b1 passes through the second layer too, so b = W2 b1 + b2": (w, b1 + b2)
        if b1.shape == b2.shape else None,
        "b2 is missing: b = W2 b1 + b2": (w, w2 @ b1),
        "W2 b1 is missing from the bias: b = W2 b1 + b2": (w, b2),
    }
    if w1.shape[0] == w1.shape[1] == w2.shape[0]:
        mistakes["the product is in the wrong order: y = W2 (W1 x + b1) + b2, so W = W2 @ W1, not W1 @ W2"] = (
            w1 @ w2, w2 @ b1 + b2)
        mistakes["the product is in the wrong order (W = W2 @ W1) and the bias too (b = W2 b1 + b2)"] = (
            w1 @ w2, w1 @ b2 + b1)
    return {k: v for k, v in mistakes.items() if v is not None}


def check_fuse_linear(fn: Callable[[Any, Any, Any, Any], tuple]) -> None:
    r"""Check ``fn(w1, b1, w2, b2) -> (w, b)``: the one Linear computing Linear2(Linear1(x)).

    :math:`W = W_2 W_1`, :math:`b = W_2 b_1 + b_2`. Reference:
    :func:`nnopt_lab.compression.trimming.fuse_linear`.
    """
    checks.require_function("fuse_linear", fn)
    be = _backend64()
    for case in fuse_linear_cases():
        want_w, want_b = reference_fuse(case, be)
        what = f"fuse_linear on {case['name']}"
        args = [B.to_backend(case[k], be) for k in ("w1", "b1", "w2", "b2")]
        got_w, got_b = _pair(what, checks.call(what, fn, *args), (want_w.shape, want_b.shape))
        if _close(got_w, want_w) and _close(got_b, want_b):
            continue
        for message, (w, b) in _fuse_mistakes(case).items():
            if w.shape == got_w.shape and _close(got_w, w) and _close(got_b, b):
                raise ExerciseFailed(f"✗ {what}: {message}")
        raise ExerciseFailed(f"✗ {what}: " + _first_difference(got_w, want_w, got_b, want_b))
    print("✓ fuse_linear matches nnopt_lab.compression.trimming.fuse_linear on 4 -> 4 -> 4 and 5 -> 3 -> 2")
