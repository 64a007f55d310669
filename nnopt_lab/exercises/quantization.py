r"""Self-checks for chapters/05_3_quantization.ipynb: a linear quantizer and an integer-only Linear.

1. ``linear_quantize(x, scale, zero_point, qmin, qmax)`` returns the integer codes
   :math:`x_q = \operatorname{clamp}(\operatorname{round}(x \cdot \tfrac{1}{\Delta}) + z,\, q_{\min}, q_{\max})`,
   round half to even, with the float32 reciprocal :math:`1/\Delta` as torch's kernels use it.
   :func:`check_linear_quantize` compares it on fixed small inputs with
   :func:`nnopt_lab.compression.quantization.quantize` (equal bit for bit to the codes of
   ``torch.fake_quantize_per_tensor_affine``; the tests check both) and names the usual mistakes:
   rounding half away from zero or half up, no clamp, dividing by :math:`\Delta` where the float32
   reciprocal gives another code, the zero point added before rounding (what
   ``torch.quantize_per_tensor`` itself does, which differs at ties), codes returned dequantized.
2. ``quantized_linear_forward(x_q, x_scale, x_zp, w_q, w_scale, bias_q, y_scale, y_zp)`` returns
   the uint8 output codes of an int8 Linear layer,

   .. math::

       y_q = \operatorname{clamp}\Big(\operatorname{round}\big(M\,(\textstyle\sum_k (x_q - z_x)\,w_q
       + b_q)\big) + z_y,\; 0,\; 255\Big),\qquad M = \frac{S_x S_w}{S_y},

   with the sum in int32 and :math:`b_q` the int32 bias at scale :math:`S_x S_w`.
   :func:`check_quantized_linear` compares it with :class:`nnopt_lab.inference.integer.IntegerLinear`
   (QNNPACK's float32 requantization; the tests hold the expected codes equal to
   ``torch.ao.nn.quantized.Linear`` on the ``qnnpack`` engine, exactly) and names the
   usual mistakes: the input zero point not subtracted, an accumulator narrower than int32 that
   wraps (int8/int16, or a uint8 ``x_q - z_x``), the bias missing or added at the output scale,
   :math:`M` upside down, the output zero point missing, truncation instead of rounding, no clamp.

3. ``mse_range(x, bits)`` returns a clipping range ``(lo, hi)`` for calibration data ``x`` whose
   ``bits``-bit affine quantization error :math:`E(x - \hat x)^2` is small (MSE calibration).
   :func:`check_mse_range` measures the error of the learner's range (through
   :func:`~nnopt_lab.compression.quantization.qparams` and ``fake_quantize``) on four fixed data
   sets with outliers and holds it to within 15 % of the range that
   :class:`nnopt_lab.inference.calibration.MSEObserver` finds (a search, so not to equality), and
   below the min-max range's error where clipping pays; it names the min-max range returned
   unchanged, a range that clips more than it gains, and ``lo > hi``.

See: chapters/05_3_quantization.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

from .. import backend as B
from ..compression.quantization import fake_quantize, integer_range, qparams, quantize
from ..inference.calibration import MSEObserver
from ..inference.integer import IntegerLinear
from . import checks

__all__ = ["check_linear_quantize", "check_quantized_linear", "check_mse_range", "range_error", "QUANTIZE_CASES", "LINEAR_CASES",
           "RANGE_CASES", "RANGE_TOLERANCE"]

#: (scale, zero_point, qmin, qmax, kind of inputs) of the fixed inputs of exercise 1.
QUANTIZE_CASES = ((0.5, 0, -128, 127, "ties"), (0.5, 3, 0, 255, "ties"), (0.1, 7, 0, 255, "reciprocal"),
                  (0.3, 5, 0, 15, "reciprocal"), (0.02, 128, 0, 255, "random"))

#: (N, K, out, x zero point, y scale, y zero point, code range) of the fixed inputs of exercise 2;
#: the first case is so small that no accumulator leaves int8, the others use the full code range.
LINEAR_CASES = ((2, 4, 3, 120, 0.001, 100, "small"), (4, 64, 5, 131, 0.25, 128, "full"),
                (3, 200, 6, 0, 0.5, 30, "full"), (5, 96, 4, 255, 0.08, 77, "full"))

#: (kind of data, bits) of the fixed inputs of exercise 3.
RANGE_CASES = (("gaussian with outliers", 4), ("exponential (ReLU-like)", 3), ("shifted gaussian, one outlier", 4),
               ("gaussian with outliers", 8))

#: How much larger than the MSE observer's error the learner's range may make it (a search: not equality).
RANGE_TOLERANCE = 1.15


def _float32(value: float) -> float:
    """``value`` rounded to float32, through the array library (no struct)."""
    return B.float_of(B.to_backend([value], "numpy", dtype="float32")[0])


# ----------------------------------------------------------------------------- exercise 1
def _quantize_inputs(case: int) -> Any:
    """The float32 inputs of case ``case``: ties, values next to a tie where x/Δ and x·(1/Δ)
    round apart, values beyond the code range, ordinary values."""
    scale, zero_point, qmin, qmax, kind = QUANTIZE_CASES[case]
    g = B.generator(50 + case)
    s = _float32(scale)
    values = [float(v) for v in g.normal(0.0, (qmax - qmin) * s / 6, 12)]
    values += [(qmin - zero_point - 20) * s, (qmax - zero_point + 20) * s, 0.0]      # beyond both ends, zero
    if kind == "ties":
        values += [(k + 0.5) * s for k in range(-6, 6)]                             # exact ties (Δ a power of 2)
    if kind == "reciprocal":
        inverse = B.to_backend([1.0], "numpy", dtype="float32") / B.to_backend([s], "numpy", dtype="float32")
        ties = B.to_backend([(k + 0.5) * s for k in range(qmin - zero_point, qmax - zero_point)], "numpy",
                            dtype="float32")
        xp = B.namespace(ties)
        near = xp.concat([ties, xp.nextafter(ties, ties + 1), xp.nextafter(ties, ties - 1)])
        apart = xp.round(near / s) != xp.round(near * inverse)                      # float32 arithmetic
        values += [float(v) for v in near[apart].tolist()[:6]]
    return B.to_backend(values, "numpy", dtype="float32")


def _quantize_variants(x: Any, scale: float, z: int, qmin: int, qmax: int) -> dict[str, Any]:
    """The codes each usual mistake gives (float64 numpy arrays), in float32 arithmetic like the answer."""
    xp = B.namespace(x)
    s = _float32(scale)
    inverse = B.to_backend([1.0], "numpy", dtype="float32") / B.to_backend([s], "numpy", dtype="float32")
    y = x * inverse
    clamp = lambda v: xp.clip(v, qmin, qmax)                                        # noqa: E731
    away = xp.sign(y) * xp.floor(xp.abs(y) + 0.5)
    as64 = lambda v: xp.astype(v, xp.float64)                                       # noqa: E731
    return {
        "codes outside [qmin, qmax]: clamp round(x / scale) + zero_point to [qmin, qmax] (the codes must fit "
        "the integer type)": as64(xp.round(y) + z),
        "rounds half away from zero (like C's round()); the rule is round half to even, as torch, numpy's "
        "round and Python's round(), e.g. 0.5 -> 0, 1.5 -> 2, 2.5 -> 2":
            as64(clamp(away + z)),
        "rounds half up (floor(y + 0.5)); the rule is round half to even, e.g. 0.5 -> 0, 2.5 -> 2, -0.5 -> 0":
            as64(clamp(xp.floor(y + 0.5) + z)),
        "adds the zero point before rounding: round(x / scale + zero_point). The formula rounds x / scale "
        "first, then adds the integer zero point; the two differ at ties when the zero point is odd "
        "(torch.quantize_per_tensor rounds your way, torch.fake_quantize_per_tensor_affine and this "
        "chapter the formula's way)": as64(clamp(xp.round(y + z))),
        "divides by scale: x / scale and x * (1 / scale) round to different codes next to a tie; torch's "
        "kernels (and this chapter) multiply by the float32 reciprocal 1 / scale, computed once":
            as64(clamp(xp.round(x / s) + z)),
        "truncates (floor or int()) instead of rounding to the nearest code":
            as64(clamp(xp.floor(y) + z)),
        "truncates toward zero (astype(int) without rounding) instead of rounding to the nearest code":
            as64(clamp(xp.trunc(y) + z)),
        "subtracts the zero point; quantizing adds it (x_q = round(x / scale) + z), dequantizing subtracts it":
            as64(clamp(xp.round(y) - z)),
    }


def check_linear_quantize(fn: Callable) -> None:
    """Check the learner's ``linear_quantize(x, scale, zero_point, qmin, qmax)`` (integer codes).

    Five fixed cases: 8-bit signed and unsigned, 4-bit, exact ties, values beyond the code range,
    values next to a tie where ``x / scale`` and ``x * (1 / scale)`` give different codes. Prints
    one ✓ line, or raises :class:`~nnopt_lab.exercises.checks.ExerciseFailed` naming the mistake
    (or that the function is not written yet).

    See: chapters/05_3_quantization.ipynb
    """
    checks.require_function("linear_quantize", fn)
    for case, (scale, z, qmin, qmax, kind) in enumerate(QUANTIZE_CASES):
        x = _quantize_inputs(case)
        where = f"(scale={scale:g}, zero_point={z}, qmin={qmin}, qmax={qmax})"
        got = checks.as_float64(checks.call("linear_quantize", fn, B.copy(x), scale, z, qmin, qmax),
                                "linear_quantize", tuple(x.shape))
        want = B.to_numpy(quantize(x, scale, z, qmin, qmax)).astype("float64")
        if (got == want).all():
            continue
        if (got != got).any():
            raise checks.ExerciseFailed(f"✗ linear_quantize: returned NaN {where}")
        if (got != got.round()).any():
            i = int((got != got.round()).argmax())
            raise checks.ExerciseFailed(
                f"✗ linear_quantize: returned {got[i]:.6g} for x = {float(x[i]):.6g} {where}, not an integer: "
                f"return the codes round(x / scale) + zero_point, not the dequantized values (or you forgot to round)")
        if (got < qmin).any() or (got > qmax).any():
            raise checks.ExerciseFailed(
                f"✗ linear_quantize: codes outside [qmin, qmax] = [{qmin}, {qmax}] (min {got.min():g}, max "
                f"{got.max():g}) {where}: clamp round(x / scale) + zero_point to [qmin, qmax]")
        for message, value in _quantize_variants(x, scale, z, qmin, qmax).items():
            if (got == B.to_numpy(value)).all():
                raise checks.ExerciseFailed(f"✗ linear_quantize: {message} {where}")
        i = int((got != want).argmax())
        raise checks.ExerciseFailed(
            f"✗ linear_quantize: for x = {float(x[i]):.9g} {where} yours {got[i]:g}, expected {want[i]:g} "
            f"({int((got != want).sum())} of {got.shape[0]} codes differ)")
    print(f"✓ linear_quantize matches nnopt_lab's quantize (= the codes of torch.fake_quantize_per_tensor_affine) "
          f"on {len(QUANTIZE_CASES)} cases: ties, clamping, 8 and 4 bits, the float32 reciprocal")


# ----------------------------------------------------------------------------- exercise 2
def _linear_inputs(case: int) -> dict[str, Any]:
    """The fixed integer inputs of case ``case`` (numpy arrays, Python numbers)."""
    n, k, out, x_zp, y_scale, y_zp, kind = LINEAR_CASES[case]
    g = B.generator(70 + case)
    if kind == "small":
        x_q = g.integers(x_zp - 3, x_zp + 4, (n, k))
        w_q = g.integers(-3, 4, (out, k))
        bias_q = g.integers(-20, 21, out)
    else:
        x_q = g.integers(0, 256, (n, k))
        w_q = g.integers(-127, 128, (out, k))
        bias_q = g.integers(-3000, 3001, out)
    return {"x_q": B.to_backend(x_q, "numpy", dtype="uint8"), "x_scale": _float32(0.05 + 0.01 * case),
            "x_zp": x_zp, "w_q": B.to_backend(w_q, "numpy", dtype="int8"), "w_scale": _float32(0.004 + 0.001 * case),
            "bias_q": B.to_backend(bias_q, "numpy", dtype="int32"), "y_scale": _float32(y_scale), "y_zp": y_zp}


def _wrap(v: Any, bits: int, signed: bool = True) -> Any:
    """Integer values (float64) wrapped to ``bits`` bits, as a narrow integer type stores them."""
    xp = B.namespace(v)
    m = 2.0 ** bits
    w = v - xp.floor(v / m) * m
    return w - m * xp.astype(w >= m / 2, w.dtype) if signed else w


def _requantize(acc: Any, multiplier: float, y_zp: int, rounding: str = "nearest", clamp: bool = True) -> Any:
    """``clamp(round(acc * M) + z_y, 0, 255)`` with M and the product in float32 (as qnnpack); float64 out."""
    xp = B.namespace(acc)
    scaled = xp.astype(xp.astype(acc, xp.float32) * _float32(multiplier), xp.float64)
    rounded = {"nearest": xp.round, "floor": xp.floor, "trunc": xp.trunc}[rounding](scaled) + y_zp
    return xp.clip(rounded, 0, 255) if clamp else rounded


def _multiplier(a: dict) -> float:
    """M = S_x S_w / S_y in float32: the product S_x S_w rounded to float32, then divided (as torch)."""
    return _float32(_float32(a["x_scale"] * a["w_scale"]) / a["y_scale"])


def _accumulator(a: dict, subtract: bool = True, wrap_sub: bool = False, bias: bool = True) -> Any:
    """:math:`\\sum_k (x_q - z_x) w_q + b_q` as exact integers (int32 through the backend's integer matmul)."""
    x = B.to_backend(a["x_q"], "numpy", dtype="int32")
    if subtract:
        x = x - a["x_zp"]
    if wrap_sub:
        x = _wrap(B.to_backend(x, "numpy", dtype="float64"), 8, signed=False)
        x = B.to_backend(x, "numpy", dtype="int32")
    xp = B.namespace(x)
    acc = xp.astype(B.int_matmul(x, xp.astype(xp.permute_dims(a["w_q"], (1, 0)), xp.int32)), xp.float64)
    return acc + xp.astype(a["bias_q"], xp.float64) if bias else acc


def _linear_reference(a: dict) -> Any:
    """The right output codes (float64 numpy): :class:`nnopt_lab.inference.integer.IntegerLinear` with
    QNNPACK's float32 requantization."""
    layer = IntegerLinear(a["w_q"], a["w_scale"], a["bias_q"], a["x_scale"], a["x_zp"], a["y_scale"], a["y_zp"],
                          requantization="float")
    return B.to_numpy(layer.forward(a["x_q"])).astype("float64")


def _linear_variants(a: dict) -> dict[str, Any]:
    """The output codes each usual mistake gives."""
    m, y_zp = _multiplier(a), a["y_zp"]
    acc, acc_nb = _accumulator(a), _accumulator(a, bias=False)
    bias = B.to_backend(a["bias_q"], "numpy", dtype="float64")
    return {
        "the input zero point is not subtracted: accumulate (x_q - x_zp) * w_q, not x_q * w_q":
            _requantize(_accumulator(a, subtract=False), m, y_zp),
        "the accumulator wraps around: x_q - x_zp computed in uint8 (negative values wrap to 255, 254, ...); "
        "convert the codes to int32 before subtracting":
            _requantize(_accumulator(a, wrap_sub=True), m, y_zp),
        "the accumulator wraps around: the sum is kept in int16 (numpy's uint8 @ int8 result type); "
        "accumulate in int32":
            _requantize(_wrap(acc_nb, 16) + bias, m, y_zp),
        "the accumulator wraps around: the sum (bias included) is kept in int16; accumulate in int32":
            _requantize(_wrap(acc, 16), m, y_zp),
        "the accumulator wraps around: the sum is kept in int8; accumulate in int32":
            _requantize(_wrap(acc_nb, 8) + bias, m, y_zp),
        "the bias is missing: add bias_q to the int32 accumulator": _requantize(acc_nb, m, y_zp),
        "the bias is added at the output scale (after multiplying by M); bias_q is at scale x_scale * w_scale, "
        "so it joins the int32 accumulator before the rescale":
            B.namespace(acc).clip(_requantize(acc_nb, m, 0, clamp=False) + bias + y_zp, 0, 255),
        "the multiplier is upside down: M = x_scale * w_scale / y_scale":
            _requantize(acc, _float32(a["y_scale"] / (a["x_scale"] * a["w_scale"])), y_zp),
        "the output zero point is missing: add y_zp after rounding": _requantize(acc, m, 0),
        "the output zero point is subtracted; it is added (y_q = round(M * acc) + y_zp)": _requantize(acc, m, -y_zp),
        "truncates (floor) instead of rounding M * acc to the nearest integer": _requantize(acc, m, y_zp, "floor"),
        "truncates toward zero (astype without rounding) instead of rounding M * acc to the nearest integer":
            _requantize(acc, m, y_zp, "trunc"),
        "the output is not clamped to [0, 255] before the uint8 cast, so it wraps around":
            _wrap(_requantize(acc, m, y_zp, clamp=False), 8, signed=False),
    }


def check_quantized_linear(fn: Callable) -> None:
    """Check the learner's ``quantized_linear_forward(x_q, x_scale, x_zp, w_q, w_scale, bias_q, y_scale, y_zp)``.

    Four fixed cases (one tiny, three with full-range uint8 inputs and int8 weights, outputs that
    clamp at 0 and 255); the expected codes are those of ``torch.ao.nn.quantized.Linear`` on the
    ``qnnpack`` engine (the tests check that, exactly). Prints one ✓ line, or raises
    :class:`~nnopt_lab.exercises.checks.ExerciseFailed` naming the mistake.

    See: chapters/05_3_quantization.ipynb
    """
    checks.require_function("quantized_linear_forward", fn)
    for case, (n, k, out, x_zp, y_scale, y_zp, kind) in enumerate(LINEAR_CASES):
        a = _linear_inputs(case)
        where = f"(N={n}, K={k}, out={out}, x_zp={x_zp}, y_zp={y_zp})"
        args = [B.copy(v) if hasattr(v, "shape") else v for v in a.values()]
        got = checks.as_float64(checks.call("quantized_linear_forward", fn, *args), "quantized_linear_forward",
                                (n, out))
        want = B.to_numpy(_linear_reference(a))
        if (got == want).all():
            continue
        if (got != got).any() or (got != got.round()).any():
            raise checks.ExerciseFailed(
                f"✗ quantized_linear_forward: returned values that are not integers {where}: return the uint8 "
                f"codes y_q, rounded, not the dequantized outputs")
        if (got < 0).any() or (got > 255).any():
            raise checks.ExerciseFailed(
                f"✗ quantized_linear_forward: codes outside [0, 255] (min {got.min():g}, max {got.max():g}) "
                f"{where}: clamp round(M * acc) + y_zp to [0, 255]")
        for message, value in _linear_variants(a).items():
            if (got == B.to_numpy(value)).all():
                raise checks.ExerciseFailed(f"✗ quantized_linear_forward: {message} {where}")
        if kind == "full" and _passes_small(fn):
            hint = ("; it is right on the tiny case, so look for a value that leaves its integer type (accumulate "
                    "in int32)")
        else:
            hint = ""
        i, j = (int(v) for v in divmod(int((got != want).argmax()), out))
        raise checks.ExerciseFailed(
            f"✗ quantized_linear_forward: output [{i}, {j}] is {got[i, j]:g}, expected {want[i, j]:g} {where} "
            f"({int((got != want).sum())} of {got.size} codes differ){hint}")
    print(f"✓ quantized_linear_forward matches the integer-only Linear (= torch.ao.nn.quantized.Linear on qnnpack, "
          f"exactly) on {len(LINEAR_CASES)} cases, K up to 200, full-range codes, outputs clamped at 0 and 255")


def _passes_small(fn: Callable) -> bool:
    """Whether ``fn`` is right on the tiny first case (its accumulators fit int8)."""
    a = _linear_inputs(0)
    try:
        got = B.to_numpy(fn(*[B.copy(v) if hasattr(v, "shape") else v for v in a.values()])).astype("float64")
    except Exception:                              # noqa: BLE001 - the learner's code; only a hint depends on it
        return False
    return tuple(got.shape) == (LINEAR_CASES[0][0], LINEAR_CASES[0][2]) and bool((got == B.to_numpy(_linear_reference(a))).all())


# ----------------------------------------------------------------------------- exercise 3
def _range_inputs(case: int) -> Any:
    """The float32 calibration data of case ``case`` (5000 values and a few outliers, numpy)."""
    kind, _ = RANGE_CASES[case]
    g = B.generator(90 + case)
    if kind == "gaussian with outliers":
        values = [float(v) for v in g.normal(0.0, 1.0, 5000)] + [25.0, -18.0, 30.0]
    elif kind == "exponential (ReLU-like)":
        values = [float(v) for v in g.exponential(1.0, 5000)]
    else:
        values = [float(v) for v in g.normal(2.0, 0.5, 5000)] + [15.0]
    return B.to_backend(values, "numpy", dtype="float32")


def range_error(x: Any, lo: float, hi: float, bits: int) -> float:
    r"""The mean squared error :math:`E(x - \hat x)^2` of ``bits``-bit affine quantization on the range [lo, hi].

    :math:`(\Delta, z)` = :func:`~nnopt_lab.compression.quantization.qparams` (the range widened to
    contain 0), :math:`\hat x` = ``fake_quantize``; in float64.

    See: chapters/05_3_quantization.ipynb
    """
    scale, zero_point = qparams(lo, hi, bits)
    qmin, qmax = integer_range(bits)
    xp = B.namespace(x)
    x64 = xp.astype(x, xp.float64)
    return B.float_of(xp.mean((fake_quantize(x64, scale, zero_point, qmin, qmax) - x64) ** 2))


def _pair(got: Any, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in got)
    except (TypeError, ValueError):
        raise checks.ExerciseFailed(f"✗ mse_range returned {got!r} {where}; expected a pair (lo, hi) of numbers") from None
    if not (lo == lo and hi == hi) or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise checks.ExerciseFailed(f"✗ mse_range returned ({lo}, {hi}) {where}: the range must be finite numbers")
    if lo > hi:
        raise checks.ExerciseFailed(f"✗ mse_range returned lo = {lo:.4g} > hi = {hi:.4g} {where}: return (lo, hi) with "
                                    f"lo <= hi")
    return lo, hi


def check_mse_range(fn: Callable) -> None:
    """Check the learner's ``mse_range(x, bits)`` (a clipping range of small quantization error).

    Four fixed data sets (gaussian with outliers, exponential, shifted gaussian; 3, 4 and 8 bits).
    Passes when the range's error (:func:`range_error`) is at most :data:`RANGE_TOLERANCE` times
    that of :class:`~nnopt_lab.inference.calibration.MSEObserver`'s range; otherwise raises
    :class:`~nnopt_lab.exercises.checks.ExerciseFailed` saying what is wrong.

    See: chapters/05_3_quantization.ipynb
    """
    checks.require_function("mse_range", fn)
    worst = 0.0
    for case, (kind, bits) in enumerate(RANGE_CASES):
        x = _range_inputs(case)
        where = f"({kind}, {bits} bits)"
        lo, hi = _pair(checks.call("mse_range", fn, B.copy(x), bits), where)
        observer = MSEObserver(bits=bits)
        observer(x)
        best_lo, best_hi = observer.range()
        best = range_error(x, best_lo, best_hi, bits)
        x_min, x_max = B.float_of(B.namespace(x).min(x)), B.float_of(B.namespace(x).max(x))
        minmax = range_error(x, x_min, x_max, bits)
        got = range_error(x, lo, hi, bits)
        worst = max(worst, got / best)
        if got <= RANGE_TOLERANCE * best:
            continue
        if abs(lo - x_min) <= 1e-6 * max(1.0, abs(x_min)) and abs(hi - x_max) <= 1e-6 * max(1.0, abs(x_max)):
            raise checks.ExerciseFailed(
                f"✗ mse_range: returned the min-max range [{lo:.4g}, {hi:.4g}] {where}, whose error {minmax:.4g} is "
                f"{minmax / best:.1f}x the best found ({best:.4g} at [{best_lo:.4g}, {best_hi:.4g}]): search over "
                f"smaller ranges and keep the one with the smallest error")
        if got > minmax:
            raise checks.ExerciseFailed(
                f"✗ mse_range: your range [{lo:.4g}, {hi:.4g}] clips more than it gains {where}: its error {got:.4g} "
                f"is larger than the min-max range's ({minmax:.4g}); the values you clip cost more than the finer "
                f"step saves. Compare each candidate's error with E(x - x̂)² and keep the smallest")
        raise checks.ExerciseFailed(
            f"✗ mse_range: your range [{lo:.4g}, {hi:.4g}] has error {got:.4g} {where}, {got / best:.2f}x the "
            f"{best:.4g} of MSEObserver's [{best_lo:.4g}, {best_hi:.4g}] (allowed: {RANGE_TOLERANCE:g}x): a finer or "
            f"wider search finds a better range")
    print(f"✓ mse_range: on {len(RANGE_CASES)} data sets (3, 4 and 8 bits) your ranges' errors are within "
          f"{RANGE_TOLERANCE:g}x of nnopt_lab's MSEObserver (worst {worst:.2f}x)")
