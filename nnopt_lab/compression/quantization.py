r"""Uniform (affine and symmetric) and binary quantization: the ONE quantization module of the workbook.

Public API (stable names):

* arrays  -- :func:`integer_range`, :func:`code_dtype`, :func:`qparams`, :func:`qparams_per_channel`,
  :func:`channel_minmax`, :func:`quantize`, :func:`dequantize`, :func:`fake_quantize`,
  :func:`quantize_uniform`, :func:`codes_before_clamp` (the code before the clamp, for the
  straight-through estimator), :class:`Quantizer` (per tensor, arguments checked once); :data:`INT32_RANGE` (int32 codes of biases, for :func:`quantize`);
* weights -- :func:`quantize_weight` (k-bit affine / symmetric, per tensor / per output channel)
  and :func:`binarize_weight` (:math:`\operatorname{sign}(w)\,\operatorname{mean}|w|`), both
  returning a :class:`QuantizedWeight` (codes, scales, zero points, ``.dequantize()``);
* models  -- :func:`fake_quantize_model` (in place, returns a :class:`FakeQuantizedModel`, also a
  context manager) and :func:`restore_model`;
* size    -- :func:`quantized_size` -> :class:`SizeReport` of :class:`LayerSize` rows: bits of
  codes, scales (:data:`SCALE_BITS`), zero points (:data:`ZERO_POINT_BITS`), codebooks and float
  parameters (:data:`FLOAT_BITS`), per layer and in total, and the ratio to float32.

Three chapters use it (DESIGN.md: "one module serves all three"):

* inputs     -- seed §2.1.3 / §3.1.3 / §4.1.3, chapters/02_3_data_compression.ipynb
* weights    -- seed §2.2.1 / §3.2.1, chapters/03_1_model_compression.ipynb
* inference  -- seed §2.4.3 / §3.4.3, chapters/05_3_quantization.ipynb

The scheme is the one of Jacob et al. 2018 and Krishnamoorthi 2018 (§2), also used by
``torch.ao.quantization``. A real number :math:`x` is stored as an integer code :math:`x_q`
with a *scale* :math:`\Delta > 0` and an integer *zero point* :math:`z`:

.. math::

    x_q = \operatorname{clamp}\big(\operatorname{round}(x / \Delta) + z,\; q_{\min},\; q_{\max}\big),
    \qquad \hat x = (x_q - z)\,\Delta .

``round`` is round-half-to-even, as in torch and numpy. 0.0 is always exactly representable
(its code is :math:`z`), so zero padding and ReLU zeros cost no error.

**Bit for bit with torch.** torch stores scales as float32 and computes its observers and its
fake-quantization kernels in float32, so values next to a rounding tie land on the code that
float32 arithmetic gives, not the one of exact arithmetic (the zero point of [-1, 1] at 8 bits
is 127, where exact arithmetic gives the tie -127.5 and 128). This module does the same
operations in the same order: :func:`qparams` computes the scale, clamps it to
:data:`SCALE_EPS` and rounds the zero point in float32, and :func:`quantize` multiplies by the
float32 reciprocal ``1.0f / scale`` (as torch's kernels do) instead of dividing.

Names, from the bottom up:

* :func:`integer_range` -- :math:`(q_{\min}, q_{\max})` for ``bits`` and the scheme;
  :func:`code_dtype` -- the narrowest integer dtype holding those codes;
* :func:`qparams`       -- :math:`(\Delta, z)` from a real range :math:`[x_{\min}, x_{\max}]`
  (``MinMaxObserver``); :func:`qparams_per_channel` -- one pair per channel
  (``PerChannelMinMaxObserver``), from the ranges of :func:`channel_minmax`;
* :func:`quantize`      -- real → integer codes; :func:`dequantize` -- codes → real;
* :func:`fake_quantize` -- quantize then dequantize (``torch.fake_quantize_per_tensor_affine``,
  and with ``axis``, ``torch.fake_quantize_per_channel_affine``): the value a code stands for;
* :func:`quantize_uniform` -- k-bit levels on a known range [lo, hi] (inputs such as pixels);
* :func:`quantize_weight` -- a weight's codes from its own range (the observers' min/max),
  per tensor or per output channel; :func:`binarize_weight` -- 1 bit, sign(0) = +1;
* :func:`fake_quantize_model` -- every Linear/Conv2d weight replaced by its quantized values
  (biases stay float), undone exactly by :func:`restore_model`;
* :func:`quantized_size` -- what the quantized model stores, bit by bit.

``rounding="stochastic"`` gives unbiased random rounding (the same operation as uniform
dithering of inputs).

See: chapters/02_3_data_compression.ipynb
"""
from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import backend as B
from ..nn.layers import Conv2d, Linear, Module, Parameter
from ..validation import check_bool, check_choice, check_int, check_number, check_sequence
from .weight_sharing import SharedLayer, index_bits

__all__ = ["MAX_BITS", "ROUNDINGS", "SCALE_EPS", "INT32_RANGE", "integer_range", "code_dtype", "qparams",
           "qparams_per_channel", "channel_minmax", "quantize", "dequantize", "fake_quantize", "codes_before_clamp", "Quantizer",
           "quantize_uniform", "SCHEMES", "SCALE_BITS", "ZERO_POINT_BITS", "FLOAT_BITS", "QuantizedWeight",
           "quantize_weight", "binarize_weight", "FakeQuantizedModel", "fake_quantize_model", "restore_model",
           "LayerSize", "SizeReport", "quantized_size"]

MAX_BITS = 16
"""Largest bit width accepted: codes fit int32 and every code is exact in float32."""

ROUNDINGS = ("nearest", "stochastic")

SCALE_EPS = 2.0 ** -23
"""Smallest scale :func:`qparams` returns: ``torch.finfo(torch.float32).eps``, the observers' clamp.

It keeps :math:`1/\\Delta` finite for empty and tiny ranges (``[0, 0]``, ``[-1e-38, 1e-38]``),
so that 0.0 still maps to exactly 0.0."""

FLOAT32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103
"""The smallest real number that float32 rounds to inf (half-way from the largest float32 to 2**128)."""

SMALLEST_SCALE = 2.0 ** -128 + 2.0 ** -150
"""Scales up to this one (2.9e-39) round to float32 numbers whose float32 reciprocal overflows."""

CODE_LIMIT = 2 ** 16
"""``qmin`` and ``qmax`` lie in [-2**16, 2**16 - 1]: every code is exact in float32."""

INT32_RANGE = (-2 ** 31, 2 ** 31 - 1)
"""The one code range wider than :data:`CODE_LIMIT` that :func:`quantize` takes: int32 codes.

For the int32 biases of integer inference (codes at the accumulator's scale
:math:`S_w S_x`, torch's ``qint32``). ``round(x · (1/Δ))`` is then the float of ``x``'s dtype
(in float32, codes beyond 2**24 are the float32 products, as torch's kernel rounds them); the
zero point is added and the codes clamped to int32 exactly (in float64), so values beyond the
range saturate to the end codes, as ``torch.quantize_per_tensor(x, s, z, torch.qint32)`` does.
:func:`fake_quantize` does not take it (a bias is quantized, never fake-quantized)."""


# ----------------------------------------------------------------------------- checks
def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (inf beyond the float32 range)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _float_array(name: str, x: Any) -> Any:
    """The namespace of ``x``, which must be a floating-point numpy array or torch tensor."""
    try:
        xp = B.namespace(x)
    except TypeError:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must be a floating-point array, got dtype {B.dtype_name(x)}")
    return xp


def _check_no_nan(name: str, x: Any) -> None:
    """A NaN has no code: refuse it rather than send it silently to an end code."""
    xp = B.namespace(x)
    if B.float_of(xp.any(xp.isnan(x))):                  # one reduction; the count only for the message
        count = B.float_of(xp.sum(xp.astype(xp.isnan(x), xp.int32)))
        raise ValueError(f"{name} must not hold NaN (a NaN has no code), got {int(count)} NaN entries")


def _choice(name: str, value: Any, choices: tuple) -> Any:
    """check_choice, refusing arrays first (``array in choices`` raises numpy's own ValueError)."""
    if hasattr(value, "shape"):
        raise TypeError(f"{name} must be one of {choices}, got {type(value).__name__}")
    return check_choice(name, value, choices)


def _check_code_range(qmin: Any, qmax: Any, wide: bool = False) -> tuple[int, int]:
    """(qmin, qmax) checked; with ``wide``, :data:`INT32_RANGE` is also accepted."""
    if wide:
        qmin = check_int("qmin", qmin, *INT32_RANGE)
        qmax = check_int("qmax", qmax, *INT32_RANGE)
        if (qmin, qmax) == INT32_RANGE:
            return INT32_RANGE
    try:
        qmin = check_int("qmin", qmin, -CODE_LIMIT, CODE_LIMIT - 1)
        qmax = check_int("qmax", qmax, -CODE_LIMIT, CODE_LIMIT - 1)
    except ValueError as error:
        if not wide:
            raise
        raise ValueError(f"{error} (or qmin, qmax = INT32_RANGE = {INT32_RANGE}, the int32 codes of "
                         f"biases)") from None
    if qmin >= qmax:
        raise ValueError(f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    if qmax - qmin > 2 ** MAX_BITS - 1:
        raise ValueError(f"qmax - qmin must be <= 2**{MAX_BITS} - 1 = {2 ** MAX_BITS - 1}, "
                         f"got qmin={qmin}, qmax={qmax}")
    return qmin, qmax


def _is_array(value: Any) -> bool:
    """An array of at least one dimension (0-d arrays are taken as numbers)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and tuple(value.shape) != ()


def _per_channel(name: str, value: Any, x: Any, axis: int | None, dtype: str) -> Any:
    """An array ``value`` on ``x``'s backend in ``dtype``, shaped to broadcast against ``x``.

    With ``axis``: a 1-D array of length ``x.shape[axis]``. Without: any shape broadcastable
    to ``x.shape`` that does not enlarge it.
    """
    xp = B.namespace(x)
    if B.dtype_name(value) == "bool":
        raise TypeError(f"{name} must be a number or a numeric array, got dtype bool")
    value = B.to_backend(value, B.backend_of(x), dtype=dtype)
    shape, ndim = tuple(value.shape), len(x.shape)
    if axis is None:
        if len(shape) > ndim or any(s not in (1, n) for s, n in zip(shape[::-1], x.shape[::-1])):
            raise ValueError(f"{name} of shape {shape} must broadcast to x's shape {tuple(x.shape)}")
        return value
    if shape != (x.shape[axis],):
        raise ValueError(f"{name} must have shape ({x.shape[axis]},) (one entry per channel along "
                         f"axis {axis} of x, shape {tuple(x.shape)}), got shape {shape}")
    return xp.reshape(value, tuple(x.shape[axis] if d == axis else 1 for d in range(ndim)))


def _check_axis(axis: Any, x: Any) -> int | None:
    if axis is None:
        return None
    ndim = len(x.shape)
    if ndim == 0:
        raise ValueError(f"axis must be None for a 0-d x, got {axis!r}")
    return check_int("axis", axis, -ndim, ndim - 1) % ndim


def _scale(scale: Any, x: Any, axis: int | None) -> tuple[Any, Any]:
    r"""(Δ, 1/Δ) as torch's kernels get them: Δ rounded to float32, 1/Δ computed in float32.

    Numbers stay Python floats (weakly typed: they take ``x``'s dtype, exactly); arrays come
    back in ``x``'s dtype, shaped to broadcast. Δ must round to a float32 number whose
    reciprocal is finite in float32: :data:`SMALLEST_SCALE` < Δ < 3.4e38.
    """
    if not _is_array(scale):
        value = check_number("scale", scale, 0.0, low_open=True)
        if not SMALLEST_SCALE < value < FLOAT32_OVERFLOW:
            raise ValueError(f"scale must be a float32 number > 2.9e-39 and <= 3.4e+38 (so that 1/scale "
                             f"is finite in float32), got {scale!r}")
        scale32 = _float32(value)
        return scale32, _float32(1.0 / scale32)
    xp = B.namespace(x)
    scale64 = _per_channel("scale", scale, x, axis, "float64")
    good = (scale64 > SMALLEST_SCALE) & (scale64 < FLOAT32_OVERFLOW)        # NaN is not good
    if not B.float_of(xp.all(good)):
        bad = scale64[~good]
        raise ValueError(f"scale must hold float32 numbers > 2.9e-39 and <= 3.4e+38 (so that 1/scale is "
                         f"finite in float32), got {int(bad.shape[0])} entries outside, e.g. "
                         f"{B.float_of(bad[0])}")
    scale32 = xp.astype(scale64, xp.float32)
    inverse = 1.0 / scale32                               # float32, as torch's per-channel kernel
    return xp.astype(scale32, x.dtype), xp.astype(inverse, x.dtype)


def _zero_point(zero_point: Any, x: Any, axis: int | None, qmin: int | None, qmax: int | None) -> Any:
    """``zero_point`` checked (an integer, in [qmin, qmax] where given): an int, or an array in x's dtype."""
    if not _is_array(zero_point):
        if qmin is None:
            return check_int("zero_point", zero_point, None)
        value = check_int("zero_point", zero_point, None)
        if not qmin <= value <= qmax:
            raise ValueError(f"zero_point must be an int in [qmin, qmax] = [{qmin}, {qmax}], got {value}")
        return value
    xp = B.namespace(x)
    z = _per_channel("zero_point", zero_point, x, axis, "float64")
    good = (xp.round(z) == z) & (xp.abs(z) <= CODE_LIMIT)
    if qmin is not None:
        good = good & (z >= qmin) & (z <= qmax)
    if not B.float_of(xp.all(good)):
        where = f"in [-{CODE_LIMIT}, {CODE_LIMIT}]" if qmin is None else f"in [qmin, qmax] = [{qmin}, {qmax}]"
        raise ValueError(f"zero_point must hold integers {where}, got e.g. {B.float_of(z[~good][0])}")
    return xp.astype(z, x.dtype)


def _as_float32(name: str, value: Any) -> Any:
    """A float array rounded to float32, refusing NaN and values beyond the float32 range."""
    xp = B.namespace(value)
    value64 = xp.astype(value, xp.float64)
    bad = ~(xp.abs(value64) < FLOAT32_OVERFLOW)                              # NaN is bad
    if B.float_of(xp.any(bad)):
        raise ValueError(f"{name} must hold finite float32 numbers (|v| <= 3.4028235e+38), got "
                         f"{B.float_of(value64[bad][0])} in {int(B.float_of(xp.sum(xp.astype(bad, xp.int32))))} "
                         f"entries")
    return xp.astype(value64, xp.float32)


# ----------------------------------------------------------------------------- parameters
def integer_range(bits: int, symmetric: bool = False) -> tuple[int, int]:
    r"""The integer codes available to a ``bits``-bit quantizer.

    Parameters
    ----------
    bits : int in [1, 16] (symmetric: [2, 16])
    symmetric : bool
        ``False`` (affine, unsigned): :math:`[0,\; 2^b - 1]`.
        ``True`` (signed, *restricted* to be symmetric about 0, Krishnamoorthi 2018 §2.2):
        :math:`[-(2^{b-1} - 1),\; 2^{b-1} - 1]`, e.g. int8 weights in [-127, 127].

    Returns
    -------
    (qmin, qmax) : tuple of int

    See: chapters/02_3_data_compression.ipynb
    """
    symmetric = check_bool("symmetric", symmetric)
    if symmetric:
        top = 2 ** (check_int("bits", bits, 2, MAX_BITS) - 1) - 1
        return -top, top
    return 0, 2 ** check_int("bits", bits, 1, MAX_BITS) - 1


def code_dtype(qmin: int, qmax: int) -> str:
    """The narrowest integer dtype of the codes [qmin, qmax]: ``"uint8"``, ``"int8"`` or ``"int32"``.

    These are torch's ``quint8``, ``qint8`` and ``qint32`` (``int_repr()`` dtypes). Takes the
    ranges :func:`quantize` takes, :data:`INT32_RANGE` included.

    See: chapters/02_3_data_compression.ipynb
    """
    qmin, qmax = _check_code_range(qmin, qmax, wide=True)
    if 0 <= qmin and qmax <= 255:
        return "uint8"
    if -128 <= qmin and qmax <= 127:
        return "int8"
    return "int32"


def _observer(lo: Any, hi: Any, qmin: int, qmax: int, symmetric: bool) -> tuple[Any, Any]:
    r"""torch.ao's ``_calculate_qparams`` on float32 arrays (one entry per channel), op by op.

    Python numbers are weakly typed, so every operation below is a float32 operation.
    """
    xp = B.namespace(lo)
    lo = xp.minimum(lo, xp.zeros_like(lo))                  # widen to contain 0
    hi = xp.maximum(hi, xp.zeros_like(hi))
    if symmetric:
        scale = xp.clip(xp.maximum(-lo, hi) / ((qmax - qmin) / 2), SCALE_EPS, None)
        return scale, xp.zeros_like(scale, dtype=xp.int32)
    width = xp.astype(hi, xp.float64) - xp.astype(lo, xp.float64)   # exact, to refuse an inf scale
    if B.float_of(xp.any(width >= FLOAT32_OVERFLOW)):
        raise ValueError(f"x_max - x_min must fit in float32 (<= 3.4e+38), got a range of width "
                         f"{B.float_of(xp.max(width)):.4g}")
    scale = xp.clip((hi - lo) / float(qmax - qmin), SCALE_EPS, None)
    zero_point = xp.clip(qmin - xp.round(lo / scale), qmin, qmax)
    return scale, xp.astype(zero_point, xp.int32)


def qparams(x_min: float, x_max: float, bits: int, symmetric: bool = False) -> tuple[float, int]:
    r"""Scale and zero point that map the real range :math:`[x_{\min}, x_{\max}]` onto ``bits`` bits.

    The range is first widened to contain 0 (:math:`x_{\min} \le 0 \le x_{\max}`), so that 0.0
    is exactly representable (Jacob et al. 2018 §2.1). With :math:`(q_{\min}, q_{\max})` from
    :func:`integer_range` and :math:`\varepsilon` = :data:`SCALE_EPS`:

    .. math::

        \text{affine:}\quad \Delta = \max\Big(\frac{x_{\max} - x_{\min}}{q_{\max} - q_{\min}},\,
        \varepsilon\Big),\qquad
        z = \operatorname{clamp}\big(q_{\min} - \operatorname{round}(x_{\min}/\Delta),\,
        q_{\min}, q_{\max}\big)

        \text{symmetric:}\quad \Delta = \max\Big(\frac{\max(|x_{\min}|, |x_{\max}|)}{2^{b-1} - 1},
        \,\varepsilon\Big), \qquad z = 0

    These are the formulas of ``torch.ao.quantization.MinMaxObserver`` (``quint8`` /
    ``qint8``, ``per_tensor_affine`` / ``per_tensor_symmetric``, ``quant_min`` and
    ``quant_max`` from :func:`integer_range`), computed as it does: the range rounded to
    float32, every operation in float32. The results are equal bit for bit.

    Parameters
    ----------
    x_min, x_max : float (or 0-d arrays), with x_min <= x_max, inside the float32 range
        The range to cover, e.g. the min and max of a calibration batch.
    bits : int in [1, 16] (symmetric: [2, 16])
    symmetric : bool

    Returns
    -------
    scale : float, a float32 number >= SCALE_EPS
    zero_point : int in [qmin, qmax]

    Raises
    ------
    ValueError
        For NaN/inf or x_min > x_max, a value beyond float32 (|x| > 3.4e38), or a range
        x_max - x_min that overflows float32.

    Seed: §3.1.3.1 (inputs), §3.2.1 (weights), §3.4.3.1 (inference), "整数化".
    See: chapters/02_3_data_compression.ipynb
    """
    lo, hi = check_number("x_min", x_min), check_number("x_max", x_max)
    qmin, qmax = integer_range(bits, symmetric)
    if hi < lo:
        raise ValueError(f"x_max must be >= x_min, got x_min={lo}, x_max={hi}")
    for name, value in (("x_min", lo), ("x_max", hi)):
        if not abs(value) < FLOAT32_OVERFLOW:
            raise ValueError(f"{name} must be a float32 number (|{name}| <= 3.4028235e+38), got {value!r}")
    bounds = B.to_backend([_float32(lo), _float32(hi)], "numpy", dtype="float32")   # exact: no rounding
    scale, zero_point = _observer(bounds[:1], bounds[1:], qmin, qmax, symmetric)
    return B.float_of(scale[0]), int(zero_point[0])


def channel_minmax(x: Any, axis: int = 0) -> tuple[Any, Any]:
    r"""Per-channel range of ``x``: the min and max over every axis except ``axis``.

    What ``torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=axis)`` records, e.g. one
    range per output channel of a weight (``axis=0``).

    Parameters
    ----------
    x : float array, shape (..., C, ...) with C at ``axis``
    axis : int

    Returns
    -------
    x_min, x_max : float arrays of shape (C,), x's dtype and backend

    See: chapters/02_3_data_compression.ipynb
    """
    xp = _float_array("x", x)
    ndim = len(x.shape)
    if ndim == 0:
        raise ValueError("x must have at least one axis (the channels), got a 0-d array")
    axis = check_int("axis", axis, -ndim, ndim - 1) % ndim
    others = tuple(d for d in range(ndim) if d != axis)
    if any(x.shape[d] == 0 for d in others):
        raise ValueError(f"x must have entries in every channel, got shape {tuple(x.shape)}")
    _check_no_nan("x", x)
    if not others:                                             # 1-D: every entry is a channel
        return B.copy(x), B.copy(x)
    return xp.min(x, axis=others), xp.max(x, axis=others)


def qparams_per_channel(x_min: Any, x_max: Any, bits: int, symmetric: bool = False) -> tuple[Any, Any]:
    r"""One scale and zero point per channel: :func:`qparams` applied to each entry of the ranges.

    The formulas of :func:`qparams`, on arrays, computed as
    ``torch.ao.quantization.PerChannelMinMaxObserver`` (``per_channel_affine`` /
    ``per_channel_symmetric``) computes them: in float32, equal bit for bit (tested on the
    CPU, numpy and torch).

    Parameters
    ----------
    x_min, x_max : float arrays of shape (C,), one backend, x_min <= x_max entrywise
        E.g. from :func:`channel_minmax`; rounded to float32 first (torch keeps them as float32).
    bits : int in [1, 16] (symmetric: [2, 16])
    symmetric : bool

    Returns
    -------
    scale : float32 array, shape (C,), entries >= SCALE_EPS
    zero_point : int32 array, shape (C,), entries in [qmin, qmax]
        Both on the backend and device of ``x_min``; pass them to :func:`fake_quantize` /
        :func:`quantize` with ``axis`` (``torch.fake_quantize_per_channel_affine``).

    See: chapters/02_3_data_compression.ipynb
    """
    xp = _float_array("x_min", x_min)
    _float_array("x_max", x_max)
    if B.is_torch(x_min) != B.is_torch(x_max):
        raise TypeError(f"x_min and x_max must be on one backend, got {type(x_min).__name__} and "
                        f"{type(x_max).__name__}")
    if len(x_min.shape) != 1 or tuple(x_max.shape) != tuple(x_min.shape):
        raise ValueError(f"x_min and x_max must be 1-D of one length (one entry per channel), got shapes "
                         f"{tuple(x_min.shape)} and {tuple(x_max.shape)}")
    qmin, qmax = integer_range(bits, symmetric)
    lo, hi = _as_float32("x_min", x_min), _as_float32("x_max", x_max)
    if B.float_of(xp.any(hi < lo)):
        c = int(B.float_of(xp.argmax(xp.astype(hi < lo, xp.int32))))
        raise ValueError(f"x_max must be >= x_min in every channel, got x_min[{c}]={B.float_of(lo[c])}, "
                         f"x_max[{c}]={B.float_of(hi[c])}")
    return _observer(lo, hi, qmin, qmax, symmetric)


# ----------------------------------------------------------------------------- quantizers
def _rounded(y: Any, rounding: str) -> Any:
    """round-half-to-even(y); or stochastic: up with probability y - floor(y), u ~ U[0, 1)."""
    xp = B.namespace(y)
    if rounding == "nearest":
        return xp.round(y)
    down = xp.floor(y)
    u = B.asarray(B.rng().random(tuple(y.shape)), y)
    return down + xp.astype(u < y - down, y.dtype)       # exact: no rounding of y + u


def _codes(x: Any, inv_scale: Any, zero_point: Any, qmin: int, qmax: int, rounding: str) -> Any:
    """The codes :math:`x_q` as floats holding integers (exact up to 2**24), op by op as torch.

    ``x * (1/Δ)``, not ``x / Δ``: torch/fbgemm quantize with ``nearbyint(x * inv_scale)``
    where ``inv_scale = 1.0f / scale`` in float32; next to a tie the two differ by one code.
    For :data:`INT32_RANGE` the rounded product is moved to float64 before the zero point is
    added and the clamp applied (float32 cannot hold 2**31 - 1): float64 codes.
    The ``.clip`` method, not ``xp.clip``: array_api_compat's clip costs ~10 µs a call.
    """
    y = _rounded(x * inv_scale, rounding)
    if qmax - qmin > 2 ** MAX_BITS - 1:                   # INT32_RANGE
        xp = B.namespace(x)
        y = xp.astype(y, xp.float64)
        if hasattr(zero_point, "shape"):
            zero_point = xp.astype(zero_point, xp.float64)
    return (y + zero_point).clip(qmin, qmax)


def _unclamped(x: Any, inv_scale: Any, zero_point: Any) -> Any:
    """round(x · (1/Δ)) + z, the code before the clamp of :func:`_codes` (round half to even)."""
    return _rounded(x * inv_scale, "nearest") + zero_point


def _checked(x: Any, scale: Any, zero_point: Any, qmin: Any, qmax: Any, rounding: Any,
             axis: Any, wide: bool = False) -> tuple[Any, Any, Any, int, int]:
    """The arguments of quantize / fake_quantize, checked: (Δ, 1/Δ, z, qmin, qmax)."""
    _float_array("x", x)
    qmin, qmax = _check_code_range(qmin, qmax, wide)
    axis = _check_axis(axis, x)
    scale, inv_scale = _scale(scale, x, axis)
    zero_point = _zero_point(zero_point, x, axis, qmin, qmax)
    _choice("rounding", rounding, ROUNDINGS)
    _check_no_nan("x", x)
    return scale, inv_scale, zero_point, qmin, qmax


def quantize(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int,
             rounding: str = "nearest", axis: int | None = None) -> Any:
    r"""Integer codes of ``x``: :math:`x_q = \operatorname{clamp}(\operatorname{round}(x/\Delta) + z, q_{\min}, q_{\max})`.

    Parameters
    ----------
    x : float array, any shape, no NaN (±inf go to the end codes)
    scale : float > 0, or float array (per channel); used as float32, as in torch
    zero_point : int in [qmin, qmax], or integer-valued array (per channel)
    qmin, qmax : int in [-2**16, 2**16 - 1], qmin < qmax, qmax - qmin < 2**16; or :data:`INT32_RANGE`
        The code range, e.g. from :func:`integer_range`; ``*INT32_RANGE`` for int32 bias codes
        (``torch.quantize_per_tensor(..., torch.qint32)``, saturating at the ends).
    rounding : {"nearest", "stochastic"}
        ``"nearest"``: round half to even (torch, numpy). ``"stochastic"``: with
        :math:`y = x/\Delta`, :math:`\lfloor y \rfloor + [u < y - \lfloor y \rfloor]`,
        :math:`u \sim U[0, 1)` drawn from :func:`nnopt_lab.backend.rng` (the law of
        :math:`\lfloor y + u \rfloor`, without its rounding) -- unbiased,
        :math:`E[\hat x] = x` inside the range.
    axis : int or None
        ``None``: ``scale`` and ``zero_point`` are numbers, or arrays broadcastable to ``x``.
        An int: they are 1-D arrays with one entry per channel along ``axis`` (e.g. from
        :func:`qparams_per_channel`).

    Returns
    -------
    integer array, same shape as ``x``, of dtype :func:`code_dtype` (qmin, qmax): uint8, int8
    or int32. The codes of ``torch.fake_quantize_per_tensor_affine`` /
    ``_per_channel_affine``, bit for bit. ``torch.quantize_per_tensor(...).int_repr()``
    agrees except next to ties when z ≠ 0: it rounds the fused :math:`x/\Delta + z` (an FMA)
    instead of adding z to the rounded :math:`x/\Delta`.

    Raises
    ------
    ValueError
        For NaN in ``x`` (a NaN has no code), scale <= 0 or with 1/scale beyond float32,
        zero_point outside [qmin, qmax].

    Seed: §3.1.3.1 / §3.4.3.1 整数化 (the codes are what is stored).
    See: chapters/02_3_data_compression.ipynb
    """
    scale, inv_scale, zero_point, qmin, qmax = _checked(x, scale, zero_point, qmin, qmax, rounding, axis,
                                                        wide=True)
    xp = B.namespace(x)
    codes = _codes(x, inv_scale, zero_point, qmin, qmax, rounding)
    return xp.astype(codes, getattr(xp, code_dtype(qmin, qmax)))


def codes_before_clamp(x: Any, scale: Any, zero_point: Any, axis: int | None = None) -> Any:
    r"""The codes of :func:`quantize` before the clamp: :math:`\operatorname{round}(x \cdot (1/\Delta)) + z`.

    The same float32 :math:`\Delta` and float32 reciprocal, the same round half to even and
    the same order of operations as :func:`quantize` and :func:`fake_quantize`, so
    ``clip(codes_before_clamp(x, s, z), qmin, qmax)`` is their code bit for bit (in ``x``'s
    float dtype). What the straight-through estimator needs: the mask
    :math:`q_{\min} \le q \le q_{\max}` of the entries that were not clamped (torch's
    ``fake_quantize_per_tensor_affine_cachemask``).

    Parameters
    ----------
    x : float array, any shape, no NaN (±inf give ±inf)
    scale : float > 0, or float array (per channel, with ``axis``); used as float32
    zero_point : int, or integer-valued array (per channel) in [-2**16, 2**16]
    axis : int or None
        As in :func:`quantize`.

    Returns
    -------
    float array, shape and dtype of ``x``, holding integers (exact up to 2**24 in float32)

    See: chapters/05_3_quantization.ipynb
    """
    _float_array("x", x)
    axis = _check_axis(axis, x)
    _, inv_scale = _scale(scale, x, axis)
    if not _is_array(zero_point):
        zero_point = check_int("zero_point", zero_point, -CODE_LIMIT, CODE_LIMIT)
    zero_point = _zero_point(zero_point, x, axis, None, None)
    _check_no_nan("x", x)
    return _unclamped(x, inv_scale, zero_point)


def dequantize(q: Any, scale: Any, zero_point: Any, dtype: str = "float32", axis: int | None = None) -> Any:
    r"""Real values of integer codes: :math:`\hat x = (x_q - z)\,\Delta`.

    Parameters
    ----------
    q : integer (or integer-valued float) array
    scale : float > 0, or float array (per channel); used as float32, as in torch
    zero_point : int, or integer-valued array (per channel)
    dtype : {"float32", "float64"}
        Float type of the result (torch's ``dequantize`` gives float32).
    axis : int or None
        As in :func:`quantize`.

    Returns
    -------
    float array, shape of ``q``; in float32 equal to ``torch.quantize_per_tensor(...).dequantize()``

    See: chapters/02_3_data_compression.ipynb
    """
    dtype = _choice("dtype", dtype, B.DTYPES)
    try:
        xp = B.namespace(q)
    except TypeError:
        raise TypeError(f"q must be a numpy array or a torch tensor, got {type(q).__name__}") from None
    if not xp.isdtype(q.dtype, ("integral", "real floating")):
        raise TypeError(f"q must be an integer or float array, got dtype {B.dtype_name(q)}")
    if xp.isdtype(q.dtype, "real floating"):
        _check_no_nan("q", q)
    qf = xp.astype(q, getattr(xp, dtype))
    axis = _check_axis(axis, qf)
    scale, _ = _scale(scale, qf, axis)
    return (qf - _zero_point(zero_point, qf, axis, None, None)) * scale


def fake_quantize(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int,
                  rounding: str = "nearest", axis: int | None = None) -> Any:
    r"""Quantize then dequantize: the real value each entry of ``x`` is stored as.

    .. math::

        \hat x = \big(\operatorname{clamp}(\operatorname{round}(x/\Delta) + z,
        q_{\min}, q_{\max}) - z\big)\,\Delta

    Same arguments as :func:`quantize`; returns an array of ``x``'s shape and float dtype.
    In float32 it equals ``torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin,
    qmax)`` (with ``axis``: ``torch.fake_quantize_per_channel_affine``) bit for bit. In
    float64 the codes are torch's and the values the exact :math:`(x_q - z)\Delta`, which
    torch's per-tensor kernel rounds to float32 (its per-channel kernel does not).

    Seed: §4.1.3 -- ``np.round(data / 2) * 2`` is ``fake_quantize(data, 2.0, 0, qmin, qmax)``
    with a range wide enough never to clamp.
    See: chapters/02_3_data_compression.ipynb
    """
    scale, inv_scale, zero_point, qmin, qmax = _checked(x, scale, zero_point, qmin, qmax, rounding, axis)
    codes = _codes(x, inv_scale, zero_point, qmin, qmax, rounding)
    return (codes - zero_point) * scale


def quantize_uniform(x: Any, bits: int, lo: float, hi: float, rounding: str = "nearest") -> Any:
    r"""Round ``x`` to the :math:`2^b` evenly spaced levels from ``lo`` to ``hi`` (both included).

    For inputs with a known range (pixels in [0, 16], [0, 255] or [0, 1]): :math:`2^b` levels
    need :math:`2^b - 1` steps, so

    .. math::

        \Delta = \frac{hi - lo}{2^b - 1},\qquad
        \hat x = lo + \Delta\,\operatorname{clamp}\big(\operatorname{round}((x - lo)/\Delta),
        0,\, 2^b - 1\big).

    This is :func:`fake_quantize` of :math:`x - lo` with zero point 0 on codes
    :math:`[0, 2^b - 1]`, except that :math:`\Delta` keeps ``x``'s precision (float64 levels
    are exact); values outside [lo, hi] are clamped to the end levels.

    Parameters
    ----------
    x : float array, any shape, no NaN
    bits : int in [1, 16]
    lo, hi : float, lo < hi
    rounding : {"nearest", "stochastic"}
        ``"stochastic"`` is uniform dithering: rounding after adding noise (see :func:`quantize`).

    Returns
    -------
    float array, shape and dtype of ``x``, with at most :math:`2^b` distinct values

    Seed: §2.1.3 / §3.1.3.1, "整数化" of inputs (k-bit inputs); 1 bit is thresholding at
    :math:`(lo + hi)/2`, "二进制化".
    See: chapters/02_3_data_compression.ipynb
    """
    xp = _float_array("x", x)
    qmax = 2 ** check_int("bits", bits, 1, MAX_BITS) - 1
    lo, hi = check_number("lo", lo), check_number("hi", hi)
    _choice("rounding", rounding, ROUNDINGS)
    if not hi > lo:
        raise ValueError(f"hi must be > lo, got lo={lo}, hi={hi}")
    largest = float(xp.finfo(x.dtype).max)
    scale = (hi - lo) / qmax
    inv_scale = 1.0 / scale if scale > 0 else math.inf
    if not (max(abs(lo), abs(hi), scale, inv_scale) <= largest):
        raise ValueError(f"lo, hi, Δ = (hi - lo)/{qmax} and 1/Δ must be finite in {B.dtype_name(x)}, "
                         f"got lo={lo}, hi={hi}")
    _check_no_nan("x", x)
    return _codes(x - lo, inv_scale, 0, 0, qmax, rounding) * scale + lo


class Quantizer:
    r"""A per-tensor quantizer with its arguments checked once: :func:`quantize` / :func:`dequantize` as methods.

    ``Quantizer(scale, zero_point, qmin, qmax).quantize(x)`` is ``quantize(x, scale, zero_point,
    qmin, qmax)`` and ``.dequantize(q, dtype)`` is ``dequantize(q, scale, zero_point, dtype)``,
    bit for bit (the same float32 :math:`\Delta`, float32 reciprocal and operations); only
    ``x`` (a float array without NaN) and ``q`` (an integer array) are checked per call. For a
    model's input and output (:class:`nnopt_lab.inference.integer.IntegerModel`), where the
    checks of the scale, zero point and code range would cost more than the rounding itself.

    Parameters
    ----------
    scale : float > 0 (a number: one scale for the tensor); used as float32
    zero_point : int in [qmin, qmax]
    qmin, qmax : int
        As in :func:`quantize` (:data:`INT32_RANGE` included).

    Attributes
    ----------
    scale (the float32 :math:`\Delta`, a Python float), zero_point, qmin, qmax, dtype (of the codes,
    :func:`code_dtype`).

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int):
        if _is_array(scale) or _is_array(zero_point):
            raise TypeError(f"scale and zero_point must be numbers (one per tensor; per channel, use quantize "
                            f"with axis), got {type(scale).__name__} and {type(zero_point).__name__}")
        self.qmin, self.qmax = _check_code_range(qmin, qmax, wide=True)
        self.scale, self._inv_scale = _scale(scale, None, None)
        self.zero_point = _zero_point(zero_point, None, None, self.qmin, self.qmax)
        self.dtype = code_dtype(self.qmin, self.qmax)

    def quantize(self, x: Any) -> Any:
        """Codes of ``x`` (float array, no NaN): :func:`quantize` with this scale and zero point."""
        xp = _float_array("x", x)
        _check_no_nan("x", x)
        codes = _codes(x, self._inv_scale, self.zero_point, self.qmin, self.qmax, "nearest")
        return xp.astype(codes, getattr(xp, self.dtype))

    def dequantize(self, q: Any, dtype: str = "float32") -> Any:
        """Real values of integer codes ``q``: :func:`dequantize` with this scale and zero point."""
        try:
            xp = B.namespace(q)
        except TypeError:
            raise TypeError(f"q must be a numpy array or a torch tensor, got {type(q).__name__}") from None
        if not xp.isdtype(q.dtype, "integral"):
            raise TypeError(f"q must be an integer array (codes), got dtype {B.dtype_name(q)}")
        dtype = _choice("dtype", dtype, B.DTYPES)
        return (xp.astype(q, getattr(xp, dtype)) - self.zero_point) * self.scale

    def __repr__(self) -> str:
        return f"Quantizer(scale={self.scale!r}, zero_point={self.zero_point}, qmin={self.qmin}, qmax={self.qmax})"


# ----------------------------------------------------------------------------- weights (chapter 3.1)
SCHEMES = ("affine", "symmetric", "binary")
"""Weight quantizers: k-bit affine (unsigned codes, a zero point), k-bit symmetric (signed codes,
zero point 0), and 1-bit binary :math:`\\operatorname{sign}(w)\\,\\alpha` (XNOR-Net)."""

SCALE_BITS = 32
"""Bits of one stored scale (or binary :math:`\\alpha`): a float32, as torch stores it."""

ZERO_POINT_BITS = 32
"""Bits of one stored affine zero point: an int32, what torch's observers return.

Symmetric and binary weights store no zero point (it is 0 by the scheme's definition): 0 bits."""

FLOAT_BITS = 32
"""Bits of a parameter kept in floating point (biases, BatchNorm, codebook entries): float32."""


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    r"""A weight stored as integer codes with its scale(s) and zero point(s).

    :math:`\hat w = (w_q - z)\,\Delta` (for ``"binary"``: :math:`\hat w = w_q\,\alpha`, codes ±1;
    for ``"ternary"``: codes -1/0/1 at 2 bits, from :func:`nnopt_lab.inference.binary.ternarize_weight`),
    with one :math:`(\Delta, z)` for the tensor or one per channel along ``axis``.

    Attributes
    ----------
    codes : integer array, shape ``shape``
        :func:`code_dtype` of the code range (uint8 affine and int8 symmetric up to 8 bits,
        int32 beyond); int8 ±1 for binary.
    scale : float (per tensor) or float32 array of shape (C,) (per channel)
        Δ, or binary's α; always a float32 number.
    zero_point : int (per tensor) or int32 array of shape (C,); 0 for symmetric and binary
    bits : int
    scheme : {"affine", "symmetric", "binary", "ternary"}
    axis : int or None
        The channel axis (0: output channels), None per tensor.
    shape : tuple of int
    dtype : {"float32", "float64"}
        The float dtype of the weight that was quantized (what :meth:`dequantize` returns).

    ``code_bits``, ``scale_bits``, ``zero_point_bits`` and ``total_bits`` give its exact
    size: :math:`n\,b` bits of codes, :data:`SCALE_BITS` per scale, :data:`ZERO_POINT_BITS`
    per affine zero point.

    See: chapters/02_3_data_compression.ipynb
    """

    codes: Any
    scale: Any
    zero_point: Any
    bits: int
    scheme: str
    axis: int | None
    shape: tuple
    dtype: str

    def dequantize(self, dtype: str | None = None) -> Any:
        r"""The real weight the codes stand for, :math:`(w_q - z)\,\Delta`, in ``dtype`` (default: the weight's).

        In float32 equal bit for bit to torch's ``fake_quantize_per_tensor_affine`` /
        ``fake_quantize_per_channel_affine`` of the original weight; in float64 the exact
        product of the code and the float32 scale.
        """
        dtype = self.dtype if dtype is None else _choice("dtype", dtype, B.DTYPES)
        if self.scheme != "binary":
            return dequantize(self.codes, self.scale, self.zero_point, dtype=dtype, axis=self.axis)
        xp = B.namespace(self.codes)
        signs = xp.astype(self.codes, getattr(xp, dtype))
        if self.axis is None:
            return signs * self.scale                   # a Python float: exact in float32 and float64
        return signs * xp.astype(_along(self.scale, self.axis, len(self.shape)), getattr(xp, dtype))

    @property
    def n_weights(self) -> int:
        return math.prod(self.shape)

    @property
    def n_scales(self) -> int:
        """1 per tensor, C per channel."""
        return 1 if self.axis is None else self.shape[self.axis]

    @property
    def code_bits(self) -> int:
        return self.n_weights * self.bits

    @property
    def scale_bits(self) -> int:
        return self.n_scales * SCALE_BITS

    @property
    def zero_point_bits(self) -> int:
        return self.n_scales * ZERO_POINT_BITS if self.scheme == "affine" else 0

    @property
    def total_bits(self) -> int:
        return self.code_bits + self.scale_bits + self.zero_point_bits

    def __repr__(self) -> str:
        where = "per tensor" if self.axis is None else f"per channel (axis {self.axis})"
        return (f"QuantizedWeight({self.scheme}, {self.bits} bits, {where}, shape={self.shape}, "
                f"codes {B.dtype_name(self.codes)}, {self.total_bits} bits)")


def _along(values: Any, axis: int, ndim: int) -> Any:
    """A (C,) array reshaped to broadcast along ``axis`` of an ``ndim``-d array."""
    xp = B.namespace(values)
    return xp.reshape(values, tuple(values.shape[0] if d == axis else 1 for d in range(ndim)))


def _weight_bits(bits: Any, scheme: str) -> int:
    bits = check_int("bits", bits, 1, MAX_BITS)
    if scheme == "symmetric" and bits < 2:
        raise ValueError(f"bits must be an int in [2, {MAX_BITS}] for scheme='symmetric' (codes -1, 0, 1 "
                         f"need 2 bits; for 1 bit use scheme='binary'), got {bits}")
    if scheme == "binary" and bits != 1:
        raise ValueError(f"bits must be 1 for scheme='binary' (codes ±1), got {bits}")
    return bits


def _weight_axis(axis: Any, w: Any, per_channel: bool) -> int | None:
    """The channel axis (non-negative) for per-channel quantization, None per tensor."""
    ndim = len(w.shape)
    if ndim == 0:
        if per_channel:
            raise ValueError("w must have at least one axis for per_channel=True, got a 0-d array")
        return None
    axis = check_int("axis", axis, -ndim, ndim - 1) % ndim
    return axis if per_channel else None


def _check_weight(w: Any) -> None:
    """w must have entries, all finite and inside the float32 range (scales are float32)."""
    if math.prod(tuple(w.shape)) == 0:
        raise ValueError(f"w must have at least one entry, got shape {tuple(w.shape)}")
    _as_float32("w", w)


def _binarize(w: Any, axis: int | None) -> QuantizedWeight:
    r"""sign(w) (with sign(0) = +1) and α = mean |w|, over the tensor or per channel (float64, then float32)."""
    xp = B.namespace(w)
    signs = xp.astype(w >= 0, xp.int8) * 2 - 1
    magnitude = xp.abs(xp.astype(w, xp.float64))
    if axis is None:
        alpha, zero_point = _float32(B.float_of(xp.mean(magnitude))), 0
    else:
        others = tuple(d for d in range(len(w.shape)) if d != axis)
        mean = xp.mean(magnitude, axis=others) if others else magnitude     # 1-D: each entry its channel
        alpha = xp.astype(mean, xp.float32)
        zero_point = xp.zeros_like(alpha, dtype=xp.int32)
    return QuantizedWeight(signs, alpha, zero_point, 1, "binary", axis, tuple(w.shape), B.dtype_name(w))


def quantize_weight(w: Any, bits: int, scheme: str = "affine", per_channel: bool = False,
                    axis: int = 0) -> QuantizedWeight:
    r"""Quantize a weight to ``bits``-bit codes, with one scale per tensor or per output channel.

    The range is the weight's own min and max (per channel: over every axis but ``axis``),
    as ``torch.ao.quantization.MinMaxObserver`` / ``PerChannelMinMaxObserver`` record it:

    .. math::

        \Delta, z = \text{qparams}(\min w, \max w), \qquad
        w_q = \operatorname{clamp}\big(\operatorname{round}(w/\Delta) + z,\, q_{\min}, q_{\max}\big)

    (:func:`qparams`, :func:`quantize`). ``"symmetric"`` uses :math:`z = 0` and signed codes
    :math:`[-(2^{b-1}-1), 2^{b-1}-1]`; ``"affine"`` unsigned codes :math:`[0, 2^b - 1]`.
    ``"binary"`` (``bits=1``) is :func:`binarize_weight`.

    Parameters
    ----------
    w : float array (float32 or float64), any shape, finite, inside the float32 range
        E.g. a Linear weight (out, in) or a Conv2d weight (Cout, Cin, kh, kw).
    bits : int in [1, 16] (symmetric: [2, 16]; binary: 1)
    scheme : {"affine", "symmetric", "binary"}
    per_channel : bool
        One (Δ, z) per entry of ``axis`` (torch's ``per_channel_affine`` /
        ``per_channel_symmetric``) instead of one for the tensor.
    axis : int
        The channel axis, 0 = output channels (torch's ``ch_axis=0`` for weights).

    Returns
    -------
    QuantizedWeight
        Its :meth:`~QuantizedWeight.dequantize` equals, in float32 and bit for bit,
        torch's observer followed by ``torch.fake_quantize_per_tensor_affine`` (per
        channel: ``torch.fake_quantize_per_channel_affine``), ties included.

    Raises
    ------
    ValueError
        bits outside 1..16 (or 1 for symmetric, not 1 for binary), an unknown scheme, axis
        out of range, NaN/inf in ``w`` or values beyond float32, an empty ``w``.
    TypeError
        ``w`` not a float numpy array / torch tensor; bits, per_channel of the wrong kind.

    Seed: §2.2.1 / §3.2.1, quantizing the parameters (参数量化).
    See: chapters/02_3_data_compression.ipynb
    """
    xp = _float_array("w", w)
    scheme = _choice("scheme", scheme, SCHEMES)
    bits = _weight_bits(bits, scheme)
    per_channel = check_bool("per_channel", per_channel)
    axis = _weight_axis(axis, w, per_channel)
    _check_weight(w)
    if scheme == "binary":
        return _binarize(w, axis)
    symmetric = scheme == "symmetric"
    qmin, qmax = integer_range(bits, symmetric)
    try:
        if axis is None:
            scale, zero_point = qparams(B.float_of(xp.min(w)), B.float_of(xp.max(w)), bits, symmetric)
        else:
            scale, zero_point = qparams_per_channel(*channel_minmax(w, axis), bits, symmetric)
    except ValueError as error:                          # the range's width overflows float32
        raise ValueError(f"w's range is too wide for {bits}-bit {scheme} codes: {error}") from None
    codes = quantize(w, scale, zero_point, qmin, qmax, axis=axis)
    return QuantizedWeight(codes, scale, zero_point, bits, scheme, axis, tuple(w.shape), B.dtype_name(w))


def binarize_weight(w: Any, per_channel: bool = False, axis: int = 0) -> QuantizedWeight:
    r"""1-bit weight :math:`\hat w = \operatorname{sign}(w)\,\alpha`, :math:`\alpha = \operatorname{mean}|w|`: XNOR-Net.

    For a fixed sign pattern :math:`s \in \{-1, +1\}^n` the scale that minimises
    :math:`\lVert w - \alpha s \rVert_2^2` is :math:`\alpha^* = \langle w, s\rangle / n`, and
    with :math:`s = \operatorname{sign}(w)` that is :math:`\frac{1}{n}\sum |w|`
    (Rastegari et al. 2016, eq. 4). Per channel: one :math:`\alpha_c` = the mean of
    :math:`|w|` over every axis but ``axis`` (one per output channel for ``axis=0``).

    **sign(0) = +1**, as BinaryConnect's deterministic binarization (Courbariaux et al. 2015,
    eq. 1) sets it: a code is one bit, so there is no third value 0 (``torch.sign(0)`` is 0,
    which would make the weight ternary). α is computed in float64 and stored as float32.

    Parameters
    ----------
    w : float array, any shape, finite
    per_channel : bool
    axis : int, the channel axis (0 = output channels)

    Returns
    -------
    QuantizedWeight
        ``scheme="binary"``, ``bits=1``, codes int8 in {-1, +1}, ``scale`` α, zero point 0.

    Seed: §2.2.1 / §3.2.1, binarized parameters (二值化).
    See: chapters/02_3_data_compression.ipynb
    """
    return quantize_weight(w, 1, "binary", per_channel, axis)


# ----------------------------------------------------------------------------- whole models
def _named_modules(module: Module, prefix: str = "") -> list[tuple[str, Module]]:
    """(dotted name, module) for ``module`` and every sub-module, torch's ``named_modules`` order."""
    out = [(prefix, module)]
    for name, child in module._modules.items():
        out += _named_modules(child, f"{prefix}.{name}" if prefix else name)
    return out


def _label(name: str, module: Module) -> str:
    """A layer's name in reports: its dotted path, or its class for the top-level model."""
    return name or type(module).__name__


def _weight_key(name: str) -> str:
    """The state_dict key of a layer's weight: ``"0.weight"`` (``"weight"`` for the model itself)."""
    return f"{name}.weight" if name else "weight"


def _check_model(model: Any) -> Module:
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab.nn Module, got {type(model).__name__}")
    return model


def _chosen_layers(model: Module, layers: Any) -> list[tuple[str, Module]]:
    """The Linear/Conv2d layers of ``model`` named by ``layers`` (None: all of them)."""
    available = [(name, m) for name, m in _named_modules(model) if isinstance(m, (Linear, Conv2d))]
    if not available:
        raise ValueError(f"model has no Linear or Conv2d layer to quantize, got {type(model).__name__}")
    if layers is None:
        return available
    names = check_sequence("layers", layers)
    if not names:
        raise ValueError("layers must name at least one layer (None: every Linear and Conv2d), got []")
    by_name = dict(available)
    for name in names:
        if not isinstance(name, str) or name not in by_name:
            raise ValueError(f"layers must name Linear or Conv2d layers of the model, one of "
                             f"{[n for n, _ in available]}, got {name!r}")
    return [(name, by_name[name]) for name in dict.fromkeys(names)]


class FakeQuantizedModel:
    """What :func:`fake_quantize_model` changed, to undo it: the records and the original weights.

    Attributes
    ----------
    model : Module
    records : dict of str -> QuantizedWeight
        By the weight's state_dict key (``"0.weight"``); pass to :func:`quantized_size`.
    originals : dict of str -> array
        The weights as they were (the arrays themselves, not copies).

    Use :meth:`restore` (or :func:`restore_model`), or a ``with`` block that restores on exit::

        with fake_quantize_model(model, 4) as fq:
            accuracy = evaluate(model)

    Parameters
    ----------
    model : Module
    records : mapping of str -> QuantizedWeight
    parameters : mapping of str -> Parameter
        The quantized parameters, by the same keys as ``records``; their current ``data`` are
        the originals kept.

    Raises
    ------
    TypeError
        A ``model`` that is not a Module, ``records`` / ``parameters`` that are not mappings of
        QuantizedWeight / Parameter.
    ValueError
        When ``records`` and ``parameters`` do not have the same keys.

    See: chapters/02_3_data_compression.ipynb
    """

    def __init__(self, model: Module, records: dict, parameters: dict):
        self.model = _check_model(model)
        self.records = _check_records(records, "records", mapping_only=True)
        self._parameters = _check_parameters(parameters)
        if set(self.records) != set(self._parameters):
            raise ValueError(f"parameters must have the keys of records {sorted(self.records)}, "
                             f"got {sorted(self._parameters)}")
        self.originals = {key: p.data for key, p in parameters.items()}

    def restore(self) -> Module:
        """Put the original weights back (exactly the arrays that were there); returns the model."""
        for key, p in self._parameters.items():
            p.data = self.originals[key]
        return self.model

    def __enter__(self) -> "FakeQuantizedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"FakeQuantizedModel({len(self.records)} weights: {', '.join(self.records)})"


def fake_quantize_model(model: Module, bits: int, scheme: str = "affine", per_channel: bool = False,
                        layers: Any = None) -> FakeQuantizedModel:
    r"""Replace the weights of a model's Linear and Conv2d layers by their quantized values, in place.

    Each weight :math:`W` becomes :math:`\hat W` = ``quantize_weight(W, bits, scheme,
    per_channel, axis=0).dequantize()`` (per channel: one scale per output channel, axis 0
    of both (out, in) and (Cout, Cin/g, kh, kw)), in the weight's dtype and backend. The
    model then computes with the values its codes stand for ("fake quantization", as
    torch.ao's QAT modules and ``torch.ao.quantization.quantize_fx`` simulation do).

    What is left alone, as torch's quantized Linear/Conv2d leave it: biases (kept float32),
    BatchNorm and other parameters, buffers, and the codebooks of a
    :class:`~nnopt_lab.compression.weight_sharing.SharedLayer` (its inner layer is not a
    child module). Every weight is quantized before any is replaced: on an error the
    model is unchanged.

    Parameters
    ----------
    model : Module
    bits, scheme, per_channel
        As in :func:`quantize_weight` (scheme ``"binary"`` with ``bits=1``).
    layers : sequence of str or None
        Module names (``"0"``, ``"features.3"``) of the Linear/Conv2d layers to quantize;
        None: every one.

    Returns
    -------
    FakeQuantizedModel
        ``restore()`` (or :func:`restore_model`, or leaving a ``with`` block) puts the
        original arrays back: the state_dict is then bit for bit the one before.

    Raises
    ------
    ValueError
        No Linear/Conv2d in the model, a name in ``layers`` that is not one, scheme
        ``"binary"`` on a pruned weight (its zeros would become ±α), or any error of
        :func:`quantize_weight` (named with the layer).

    See: chapters/02_3_data_compression.ipynb
    """
    model = _check_model(model)
    scheme = _choice("scheme", scheme, SCHEMES)
    bits = _weight_bits(bits, scheme)
    per_channel = check_bool("per_channel", per_channel)
    records, parameters = {}, {}
    for name, layer in _chosen_layers(model, layers):
        key, weight = _weight_key(name), layer._params["weight"]
        if scheme == "binary" and weight.mask is not None:
            raise ValueError(f"{key} carries a pruning mask: binary codes have no 0, so its pruned weights would "
                             f"become ±alpha; use a uniform scheme (0 stays exactly 0) or remove the pruned weights")
        try:
            records[key] = quantize_weight(weight.data, bits, scheme, per_channel, 0)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
        parameters[key] = weight
    saved = FakeQuantizedModel(model, records, parameters)
    for key, p in parameters.items():
        p.data = records[key].dequantize()
    return saved


def restore_model(model: Module, saved: FakeQuantizedModel) -> Module:
    """Undo :func:`fake_quantize_model`: the original weights back in ``model`` (``saved.restore()``).

    Raises ValueError when ``saved`` was made for another model.

    See: chapters/02_3_data_compression.ipynb
    """
    model = _check_model(model)
    if not isinstance(saved, FakeQuantizedModel):
        raise TypeError(f"saved must be what fake_quantize_model returned, got {type(saved).__name__}")
    if saved.model is not model:
        raise ValueError("saved was made by fake_quantize_model for another model")
    return saved.restore()


# ----------------------------------------------------------------------------- size accounting
@dataclass(frozen=True)
class LayerSize:
    r"""One row of :func:`quantized_size`: what one layer stores, in bits.

    ``kind`` is ``"affine"``, ``"symmetric"``, ``"binary"`` (a quantized weight), ``"shared"``
    (a k-means :class:`~nnopt_lab.compression.weight_sharing.SharedLayer`: codes are the
    :math:`\lceil\log_2 k\rceil`-bit indices) or ``"float"`` (nothing quantized).
    ``params`` counts the layer's scalar parameters (weights, biases, ...); ``fp32_bits`` is
    what they take as float32, ``32 · params``.
    """

    name: str
    kind: str
    params: int
    bits: int | None
    code_bits: int
    scale_bits: int
    zero_point_bits: int
    codebook_bits: int
    float_bits: int

    @property
    def total_bits(self) -> int:
        return self.code_bits + self.scale_bits + self.zero_point_bits + self.codebook_bits + self.float_bits

    @property
    def fp32_bits(self) -> int:
        return self.params * FLOAT_BITS

    @property
    def ratio(self) -> float:
        """total_bits / fp32_bits (0.25 would be int8 with nothing else stored)."""
        return self.total_bits / self.fp32_bits


_FIELDS = ("code_bits", "scale_bits", "zero_point_bits", "codebook_bits", "float_bits")


@dataclass(frozen=True)
class SizeReport:
    """Per-layer rows and totals of :func:`quantized_size` (``str(report)`` is a table)."""

    layers: tuple

    def _sum(self, field: str) -> int:
        return sum(getattr(row, field) for row in self.layers)

    @property
    def code_bits(self) -> int:
        return self._sum("code_bits")

    @property
    def scale_bits(self) -> int:
        return self._sum("scale_bits")

    @property
    def zero_point_bits(self) -> int:
        return self._sum("zero_point_bits")

    @property
    def codebook_bits(self) -> int:
        return self._sum("codebook_bits")

    @property
    def float_bits(self) -> int:
        return self._sum("float_bits")

    @property
    def total_bits(self) -> int:
        return self._sum("total_bits")

    @property
    def total_bytes(self) -> int:
        """:math:`\\lceil \\text{total\\_bits} / 8 \\rceil`."""
        return -(-self.total_bits // 8)

    @property
    def fp32_bits(self) -> int:
        return self._sum("fp32_bits")

    @property
    def ratio(self) -> float:
        """Size against float32: total_bits / fp32_bits."""
        return self.total_bits / self.fp32_bits

    def __str__(self) -> str:
        head = ("layer", "kind", "params", "bits", "codes", "scales", "zero pts", "codebook", "float", "total",
                "/ fp32")
        rows = [(r.name, r.kind, r.params, "-" if r.bits is None else r.bits, r.code_bits, r.scale_bits,
                 r.zero_point_bits, r.codebook_bits, r.float_bits, r.total_bits, f"{r.ratio:.4f}")
                for r in self.layers]
        rows.append(("total", "", sum(r.params for r in self.layers), "", self.code_bits, self.scale_bits,
                     self.zero_point_bits, self.codebook_bits, self.float_bits, self.total_bits,
                     f"{self.ratio:.4f}"))
        widths = [max(len(str(x)) for x in column) for column in zip(head, *rows)]
        lines = ["  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w) for i, (x, w) in enumerate(zip(line, widths)))
                 for line in [head, *rows]]
        return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:-1] + ["-" * len(lines[0])] + lines[-1:])


def _record_row(name: str, record: QuantizedWeight, float_params: int = 0) -> LayerSize:
    return LayerSize(name, record.scheme, record.n_weights + float_params, record.bits, record.code_bits,
                     record.scale_bits, record.zero_point_bits, 0, float_params * FLOAT_BITS)


def _shared_row(name: str, layer: SharedLayer) -> LayerSize:
    """Indices at ceil(log2 k) bits, the codebook and the bias as float32 (SharedLayer.parameter_bytes(32))."""
    n = math.prod(tuple(layer.indices.shape))
    bias = math.prod(layer._params["bias"].shape) if "bias" in layer._params else 0
    return LayerSize(name, "shared", n + bias, index_bits(layer.k), n * index_bits(layer.k), 0, 0,
                     layer.k * FLOAT_BITS, bias * FLOAT_BITS)


def _check_records(records: Any, name: str = "records", *, mapping_only: bool = False) -> dict:
    """{key: QuantizedWeight} from a mapping of them (or a FakeQuantizedModel / one record); ``name`` is the caller's."""
    if not mapping_only and isinstance(records, FakeQuantizedModel):
        return records.records
    if not mapping_only and isinstance(records, QuantizedWeight):
        return {"weight": records}
    if not isinstance(records, Mapping):
        what = "a mapping of str -> QuantizedWeight" if mapping_only else \
            "a QuantizedWeight, a mapping of them or a FakeQuantizedModel"
        raise TypeError(f"{name} must be {what}, got {type(records).__name__}")
    for key, record in records.items():
        if not isinstance(record, QuantizedWeight):
            raise TypeError(f"{name}[{key!r}] must be a QuantizedWeight, got {type(record).__name__}")
    return dict(records)


def _check_parameters(parameters: Any) -> dict:
    if not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a mapping of str -> Parameter, got {type(parameters).__name__}")
    for key, p in parameters.items():
        if not isinstance(p, Parameter):
            raise TypeError(f"parameters[{key!r}] must be a Parameter, got {type(p).__name__}")
    return dict(parameters)


def _model_rows(model: Module, records: dict) -> list[LayerSize]:
    rows, left = [], dict(records)
    seen = set()
    for name, module in _named_modules(model):
        if id(module) in seen or not module._params:
            continue
        seen.add(id(module))
        if isinstance(module, SharedLayer):
            rows.append(_shared_row(_label(name, module), module))
            continue
        key = _weight_key(name)
        params = {n: math.prod(p.shape) for n, p in module._params.items()}
        record = left.pop(key, None)
        if record is None:
            rows.append(LayerSize(_label(name, module), "float", sum(params.values()), None, 0, 0, 0, 0,
                                  sum(params.values()) * FLOAT_BITS))
            continue
        if record.shape != module._params["weight"].shape:
            raise ValueError(f"records[{key!r}] has shape {record.shape} but the model's {key} has shape "
                             f"{module._params['weight'].shape}")
        rows.append(_record_row(_label(name, module), record, sum(params.values()) - params["weight"]))
    if left:
        raise ValueError(f"records name weights the model does not have: {sorted(left)}")
    return rows


def quantized_size(source: Any, records: Any = None) -> SizeReport:
    r"""Exact storage of a (partly) quantized model, layer by layer, in bits.

    .. math::

        \text{bits} = \underbrace{n\,b}_{\text{codes}}
        + \underbrace{32\,C}_{\text{scales}} + \underbrace{32\,C\,[\text{affine}]}_{\text{zero points}}
        + \underbrace{32\,k}_{\text{codebook}} + \underbrace{32\,n_{\text{float}}}_{\text{biases, ...}}

    with n weights at b bits, C = 1 scale per tensor or one per output channel, zero points
    stored as int32 (:data:`ZERO_POINT_BITS`) for affine weights and not at all for
    symmetric and binary ones (they are 0), scales and every float parameter as float32.
    A :class:`~nnopt_lab.compression.weight_sharing.SharedLayer` stores n indices of
    :math:`\lceil\log_2 k\rceil` bits and a codebook of k float32 values (its
    ``parameter_bytes(32)``, in bits). Only parameters count (no buffers), as
    :func:`nnopt_lab.measure.model_bytes`.

    Parameters
    ----------
    source : Module, FakeQuantizedModel, QuantizedWeight or mapping of str -> QuantizedWeight
        A model (its layers without a record are float), what :func:`fake_quantize_model`
        returned (its model and records), or records alone (only their weights counted).
    records : FakeQuantizedModel, mapping or None
        With a model: the records of its quantized weights, by state_dict key ("0.weight").

    Returns
    -------
    SizeReport
        ``layers`` (one :class:`LayerSize` per layer with parameters), the totals
        (``code_bits``, ``scale_bits``, ``zero_point_bits``, ``codebook_bits``,
        ``float_bits``, ``total_bits``, ``total_bytes``), ``fp32_bits`` and ``ratio`` (to
        float32). E.g. Linear(784, 300) at int8 affine per tensor: 784·300·8 + 32 + 32 +
        300·32 bits (per channel: 784·300·8 + 300·(32 + 32) + 300·32).

    See: chapters/02_3_data_compression.ipynb
    """
    if isinstance(source, FakeQuantizedModel):
        if records is not None:
            raise ValueError("records must be None when source is a FakeQuantizedModel (it holds its records)")
        return SizeReport(tuple(_model_rows(source.model, source.records)))
    if isinstance(source, Module):
        return SizeReport(tuple(_model_rows(source, {} if records is None else _check_records(records))))
    if not isinstance(source, (QuantizedWeight, Mapping)):
        raise TypeError(f"source must be a Module, a FakeQuantizedModel, a QuantizedWeight or a mapping of "
                        f"str -> QuantizedWeight, got {type(source).__name__}")
    if records is not None:
        raise ValueError("records must be None unless source is a model")
    rows = [_record_row(key, record) for key, record in _check_records(source, "source").items()]
    if not rows:
        raise ValueError("source must hold at least one QuantizedWeight, got an empty mapping")
    return SizeReport(tuple(rows))
