r"""Uniform (affine and symmetric) quantization: the ONE quantization module of the workbook.

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

Names, from the bottom up:

* :func:`integer_range` -- :math:`(q_{\min}, q_{\max})` for ``bits`` and the scheme;
* :func:`qparams`       -- :math:`(\Delta, z)` from a real range :math:`[x_{\min}, x_{\max}]`;
* :func:`quantize`      -- real → integer codes; :func:`dequantize` -- codes → real;
* :func:`fake_quantize` -- quantize then dequantize (what ``torch.fake_quantize_per_tensor_affine``
  does), the value a quantized tensor stands for;
* :func:`quantize_uniform` -- k-bit levels on a known range [lo, hi] (inputs such as pixels).

Extension points: ``scale`` and ``zero_point`` may be arrays broadcastable to ``x`` (one per
channel, for per-channel quantization), and ``rounding="stochastic"`` gives unbiased random
rounding (the same operation as uniform dithering of inputs).

See: chapters/02_3_data_compression.ipynb
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B

__all__ = ["MAX_BITS", "ROUNDINGS", "integer_range", "qparams", "quantize", "dequantize",
           "fake_quantize", "quantize_uniform"]

MAX_BITS = 16
"""Largest bit width accepted: codes fit int16/uint16 and every code is exact in float32."""

ROUNDINGS = ("nearest", "stochastic")


# ----------------------------------------------------------------------------- checks
def _check_bits(bits: Any, low: int = 1) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in [{low}, {MAX_BITS}], got {bits!r}")
    return bits


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_0d(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = B.float_of(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _is_0d(value: Any) -> bool:
    return hasattr(value, "shape") and tuple(value.shape) == () and hasattr(value, "item")


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not _is_0d(value)


def _check_scale(scale: Any) -> None:
    if _is_array(scale):
        xp = B.namespace(scale)
        if not B.float_of(xp.all(xp.isfinite(scale) & (scale > 0))):
            raise ValueError("scale must be finite numbers > 0, got an array with entries "
                             f"in [{B.float_of(xp.min(scale))}, {B.float_of(xp.max(scale))}]")
        return
    value = _check_real("scale", scale)
    if value <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {value}")


def _check_range(qmin: Any, qmax: Any) -> None:
    for name, v in (("qmin", qmin), ("qmax", qmax)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if qmin >= qmax:
        raise ValueError(f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    if qmax - qmin > 2 ** MAX_BITS - 1:
        raise ValueError(f"qmax - qmin must be <= 2**{MAX_BITS} - 1 = {2 ** MAX_BITS - 1}, "
                         f"got qmin={qmin}, qmax={qmax}")


def _check_zero_point(zero_point: Any, qmin: int, qmax: int) -> None:
    if _is_array(zero_point):
        xp = B.namespace(zero_point)
        inside = (zero_point >= qmin) & (zero_point <= qmax) & (xp.round(zero_point) == zero_point)
        if not B.float_of(xp.all(inside)):
            raise ValueError(f"zero_point must be integers in [qmin, qmax] = [{qmin}, {qmax}]")
        return
    if isinstance(zero_point, bool) or not isinstance(zero_point, int):
        raise TypeError(f"zero_point must be an int, got {zero_point!r}")
    if not qmin <= zero_point <= qmax:
        raise ValueError(f"zero_point must be in [qmin, qmax] = [{qmin}, {qmax}], got {zero_point}")


def _check_rounding(rounding: Any) -> None:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def _check_float_array(x: Any) -> Any:
    xp = B.namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a floating-point array, got dtype {B.dtype_name(x)}")
    return xp


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
    if symmetric:
        _check_bits(bits, low=2)
        top = 2 ** (bits - 1) - 1
        return -top, top
    _check_bits(bits)
    return 0, 2 ** bits - 1


def qparams(x_min: float, x_max: float, bits: int, symmetric: bool = False) -> tuple[float, int]:
    r"""Scale and zero point that map the real range :math:`[x_{\min}, x_{\max}]` onto ``bits`` bits.

    The range is first widened to contain 0 (:math:`x_{\min} \le 0 \le x_{\max}`), so that 0.0
    is exactly representable (Jacob et al. 2018 §2.1). With :math:`(q_{\min}, q_{\max})` from
    :func:`integer_range`:

    .. math::

        \text{affine:}\quad \Delta = \frac{x_{\max} - x_{\min}}{q_{\max} - q_{\min}},\qquad
        z = \operatorname{clamp}\big(q_{\min} - \operatorname{round}(x_{\min}/\Delta),\,
        q_{\min}, q_{\max}\big)

        \text{symmetric:}\quad \Delta = \frac{\max(|x_{\min}|, |x_{\max}|)}{2^{b-1} - 1},
        \qquad z = 0

    These are the formulas of ``torch.ao.quantization.MinMaxObserver`` (which the tests compare
    with). When the widened range is empty (all values 0) any scale represents the data
    exactly; 1.0 is returned.

    Parameters
    ----------
    x_min, x_max : float (or 0-d arrays), with x_min <= x_max
        The range to cover, e.g. the min and max of a calibration batch.
    bits : int in [1, 16] (symmetric: [2, 16])
    symmetric : bool

    Returns
    -------
    scale : float > 0
    zero_point : int in [qmin, qmax]

    Seed: §3.1.3.1 (inputs), §3.2.1 (weights), §3.4.3.1 (inference), "整数化".
    See: chapters/02_3_data_compression.ipynb
    """
    lo, hi = _check_real("x_min", x_min), _check_real("x_max", x_max)
    if hi < lo:
        raise ValueError(f"x_max must be >= x_min, got x_min={lo}, x_max={hi}")
    qmin, qmax = integer_range(bits, symmetric)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        amax = max(-lo, hi)
        return (amax / qmax if amax > 0 else 1.0), 0
    if hi == lo:
        return 1.0, qmin
    scale = (hi - lo) / (qmax - qmin)
    zero_point = min(max(qmin - round(lo / scale), qmin), qmax)
    return scale, int(zero_point)


# ----------------------------------------------------------------------------- quantizers
def _operand(value: Any, like: Any) -> Any:
    """A Python number stays one (weakly typed); an array takes the float dtype of ``like``."""
    if _is_array(value):
        return B.namespace(like).astype(B.asarray(value, like), like.dtype)
    return B.float_of(value)


def _rounded(y: Any, rounding: str) -> Any:
    """round-half-to-even(y), or floor(y + u) with u ~ U[0, 1) from the project's generator."""
    xp = B.namespace(y)
    if rounding == "nearest":
        return xp.round(y)
    u = B.asarray(B.rng().random(tuple(y.shape)), y)
    return xp.floor(y + u)


def _codes(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int, rounding: str) -> Any:
    """The codes :math:`x_q` as floats holding integers (exact up to 2**24)."""
    xp = _check_float_array(x)
    _check_scale(scale)
    _check_range(qmin, qmax)
    _check_zero_point(zero_point, qmin, qmax)
    _check_rounding(rounding)
    # x * (1/scale), not x / scale: one division per tensor, and bit-identical to torch/fbgemm,
    # which quantize with ``nearbyint(x * inv_scale)``
    inv_scale = 1.0 / _operand(scale, x)
    return xp.clip(_rounded(x * inv_scale, rounding) + _operand(zero_point, x), qmin, qmax)


def quantize(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int,
             rounding: str = "nearest") -> Any:
    r"""Integer codes of ``x``: :math:`x_q = \operatorname{clamp}(\operatorname{round}(x/\Delta) + z, q_{\min}, q_{\max})`.

    Parameters
    ----------
    x : float array, any shape
    scale : float > 0, or float array broadcastable to ``x`` (per channel)
    zero_point : int in [qmin, qmax], or integer-valued array broadcastable to ``x``
    qmin, qmax : int
        The code range, e.g. from :func:`integer_range`.
    rounding : {"nearest", "stochastic"}
        ``"nearest"``: round half to even (torch, numpy). ``"stochastic"``:
        :math:`\lfloor x/\Delta + u \rfloor`, :math:`u \sim U[0, 1)` drawn from
        :func:`nnopt_lab.backend.rng` -- unbiased, :math:`E[\hat x] = x` inside the range.

    Returns
    -------
    int64 array, same shape as ``x`` (``torch.quantize_per_tensor(...).int_repr()`` up to dtype)

    Raises
    ------
    ValueError
        For non-finite ``x`` (a NaN has no code), scale <= 0, zero_point outside [qmin, qmax].

    Seed: §3.1.3.1 / §3.4.3.1 整数化 (the codes are what is stored).
    See: chapters/02_3_data_compression.ipynb
    """
    codes = _codes(x, scale, zero_point, qmin, qmax, rounding)
    xp = B.namespace(x)
    if not B.float_of(xp.all(xp.isfinite(x))):
        raise ValueError("x must be finite to be quantized: it holds NaN or inf")
    return xp.astype(codes, xp.int64)


def dequantize(q: Any, scale: Any, zero_point: Any, dtype: str = "float32") -> Any:
    r"""Real values of integer codes: :math:`\hat x = (x_q - z)\,\Delta`.

    Parameters
    ----------
    q : integer (or integer-valued float) array
    scale : float > 0, or array broadcastable to ``q``
    zero_point : int, or array broadcastable to ``q``
    dtype : {"float32", "float64"}
        Float type of the result (torch's ``dequantize`` gives float32).

    Returns
    -------
    float array, shape of ``q``

    See: chapters/02_3_data_compression.ipynb
    """
    if dtype not in B.DTYPES:
        raise ValueError(f"dtype must be one of {B.DTYPES}, got {dtype!r}")
    _check_scale(scale)
    xp = B.namespace(q)
    qf = xp.astype(q, getattr(xp, dtype))
    return (qf - _operand(zero_point, qf)) * _operand(scale, qf)


def fake_quantize(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int,
                  rounding: str = "nearest") -> Any:
    r"""Quantize then dequantize: the real value each entry of ``x`` is stored as.

    .. math::

        \hat x = \big(\operatorname{clamp}(\operatorname{round}(x/\Delta) + z,
        q_{\min}, q_{\max}) - z\big)\,\Delta

    Same arguments as :func:`quantize`; returns an array of ``x``'s shape and float dtype.
    In float32 it equals ``torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin,
    qmax)`` bit for bit when ``scale`` is a float32 number. NaN entries stay NaN.

    Seed: §4.1.3 -- ``np.round(data / 2) * 2`` is ``fake_quantize(data, 2.0, 0, qmin, qmax)``
    with a range wide enough never to clamp.
    See: chapters/02_3_data_compression.ipynb
    """
    codes = _codes(x, scale, zero_point, qmin, qmax, rounding)
    return (codes - _operand(zero_point, x)) * _operand(scale, x)


def quantize_uniform(x: Any, bits: int, lo: float, hi: float, rounding: str = "nearest") -> Any:
    r"""Round ``x`` to the :math:`2^b` evenly spaced levels from ``lo`` to ``hi`` (both included).

    For inputs with a known range (pixels in [0, 16], [0, 255] or [0, 1]): :math:`2^b` levels
    need :math:`2^b - 1` steps, so

    .. math::

        \Delta = \frac{hi - lo}{2^b - 1},\qquad
        \hat x = lo + \Delta\,\operatorname{clamp}\big(\operatorname{round}((x - lo)/\Delta),
        0,\, 2^b - 1\big).

    This is :func:`fake_quantize` of :math:`x - lo` with zero point 0 on codes
    :math:`[0, 2^b - 1]`; values outside [lo, hi] are clamped to the end levels.

    Parameters
    ----------
    x : float array, any shape
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
    _check_bits(bits)
    lo, hi = _check_real("lo", lo), _check_real("hi", hi)
    if not hi > lo:
        raise ValueError(f"hi must be > lo, got lo={lo}, hi={hi}")
    qmax = 2 ** bits - 1
    scale = (hi - lo) / qmax
    return fake_quantize(x - lo, scale, 0, 0, qmax, rounding) + lo
