r"""Integer-only int8 inference (整数化推理): Linear and Conv2d that compute with integers only.

Jacob et al. 2018 (gemmlowp / TFLite) and Krishnamoorthi 2018 §2: a real activation is
:math:`x = S_x (x_q - z_x)` with uint8 codes :math:`x_q \in [0, 255]`, a weight is
:math:`w = S_w w_q` with int8 codes (symmetric, zero point 0, :math:`[-127, 127]`; one
:math:`S_w` per tensor or per output channel). One output of a Linear layer is then

.. math::

    y_j = \sum_k w_{jk} x_k + b_j
        = S_w S_x \Big(\underbrace{\sum_k w_{q,jk}\,(x_{q,k} - z_x) + b_{q,j}}_{\text{int32 accumulator } a_j}\Big),
    \qquad b_{q,j} = \operatorname{round}\big(b_j / (S_w S_x)\big) \text{ (int32)},

and its uint8 code at the output scale :math:`S_y` and zero point :math:`z_y` is

.. math::

    y_{q,j} = \operatorname{clamp}\big(z_y + \operatorname{round}(M a_j),\; q_{\min}, 255\big),
    \qquad M = \frac{S_w S_x}{S_y},

with :math:`q_{\min} = z_y` when a ReLU follows (ReLU fused by clamping at the code of 0.0)
and 0 otherwise. Everything but :math:`M` is an integer. The product by :math:`M` is done
two ways (``requantization``):

* ``"fixed"`` (gemmlowp, TFLite): :math:`M = m \cdot 2^{-31} \cdot 2^{-s}` with an int32
  :math:`m \in [2^{30}, 2^{31})` (:func:`requantize_multiplier`); then
  ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(a, m), s)`` (:func:`requantize`),
  integers only (int64 intermediates);
* ``"float"`` (PyTorch's QNNPACK, which this reproduces bit for bit): :math:`\operatorname{round}
  (\mathrm{f32}(a) \cdot \mathrm{f32}(M))` with round-half-to-even, where torch computes
  :math:`\mathrm{f32}(M) = \mathrm{f32}(\mathrm{f32}(S_w S_x) \cdot \mathrm{f32}(1 / S_y))`
  (:func:`requantize_float`).

torch's engines (measured in tests/test_integer.py, torch 2.13 CPU). ``qnnpack`` (per tensor
and per channel, Linear and Conv2d, fused ReLU): the same codes as ``requantization="float"``,
bit for bit. ``x86`` / ``fbgemm``: it adds a float bias after scaling the accumulator instead
of an int32 bias code, so up to 1 LSB apart (about 0.02 % of the codes); without a bias, exact
where fbgemm uses AVX512-VNNI; on AVX2 (``vpmaddubsw`` sums pairs of u8·s8 products in a
saturating int16: 255·127·2 > 32767) codes differ by up to 255 LSB with full-range uint8
activations, and ``reduce_range`` (7-bit activations, 127·127·2 < 32767) makes them exact.
The fixed-point path is within 1 LSB of the float one (0.44 % of random wide accumulators).

Zero points the gemmlowp way. With :math:`z_w = 0` the accumulator is
:math:`\sum_k w_{q,jk} (x_{q,k} - 128) + (128 - z_x) \sum_k w_{q,jk} + b_{q,j}`: the first
sum is an int8 × int8 product (:func:`nnopt_lab.backend.int_matmul`, ``torch._int_mm`` on
torch), the rest a per-row int32 constant computed once. Convolutions are the same product
on the im2col columns of the code image (:func:`nnopt_lab.nn.functional.im2col`), padded
with the code of 0.0, :math:`z_x`, as torch pads quantized images.

Names:

* :func:`requantize_multiplier`, :func:`saturating_rounding_doubling_high_mul`,
  :func:`rounding_divide_by_pot`, :func:`requantize`, :func:`requantize_float` -- the
  arithmetic; :func:`quantize_bias` -- int32 bias codes as torch makes them;
* :class:`IntegerLinear`, :class:`IntegerConv2d` -- uint8 codes in, uint8 codes out (each
  with ``from_float``); :class:`IntegerMaxPool2d`, :class:`IntegerReLU`,
  :class:`IntegerFlatten` -- on codes (max pooling commutes with the increasing map
  :math:`q \mapsto S (q - z)`, so it is exact on codes);
* :class:`IntegerModel` -- float in, quantize, integer layers, dequantize; and
  :func:`convert`, which builds one from a float :class:`~nnopt_lab.nn.layers.Sequential`
  with activation ranges from :mod:`nnopt_lab.inference.calibration` observers.

Seed: §2.4.3 / §3.4.3 (量化推理, integer-only inference).
See: chapters/05_3_quantization.ipynb
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .. import backend as B
from ..compression import quantization as Q
from ..nn import functional as F
from ..nn.layers import (Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ReLU,
                         Sequential, _BatchNorm)
from ..validation import check_bool, check_choice, check_int, check_number, check_shape
from . import calibration

__all__ = ["INT32_MIN", "INT32_MAX", "REQUANTIZATIONS", "requantize_multiplier",
           "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot", "requantize", "requantize_float",
           "quantize_bias", "IntegerLinear", "IntegerConv2d", "IntegerMaxPool2d", "IntegerReLU", "IntegerFlatten",
           "IntegerModel", "convert"]

INT32_MIN = -2 ** 31
INT32_MAX = 2 ** 31 - 1
REQUANTIZATIONS = ("fixed", "float")
"""``"fixed"``: gemmlowp's integer multiplier and rounding shift; ``"float"``: QNNPACK's float32 multiplier."""

SHIFT_MIN, SHIFT_MAX = -31, 62
"""Shifts :func:`requantize` takes: a left shift of up to 31 bits (M up to 2**31), a right one of up to 62."""

ACT_QMIN, ACT_QMAX = 0, 255          # uint8 activations (torch's quint8)
_OFFSET = 128                        # x_q - 128 is int8: the product runs int8 x int8
_FLOAT_OK = ("float32", "float64")


# ----------------------------------------------------------------------------- checks
def _int_array(name: str, x: Any) -> Any:
    """The namespace of ``x``, which must be an integer numpy array or torch tensor."""
    try:
        xp = B.namespace(x)
    except TypeError:
        raise TypeError(f"{name} must be a numpy array or a torch tensor of integers, got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array, got dtype {B.dtype_name(x)}")
    return xp


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and tuple(value.shape) != ()


def _python_ints(name: str, value: Any, low: int, high: int) -> list[int] | int:
    """An int, or a 1-D integer array as a list of Python ints, every entry in [low, high]."""
    if not _is_array(value):
        return check_int(name, value, low, high)
    xp = _int_array(name, value)
    if value.ndim != 1:
        raise ValueError(f"{name} must be an int or a 1-D array (one entry per channel), got shape {tuple(value.shape)}")
    items = [int(v) for v in B.to_numpy(xp.astype(value, xp.int64)).tolist()]
    bad = [v for v in items if not low <= v <= high]
    if bad:
        raise ValueError(f"{name} must hold ints in [{low}, {high}], got {bad[0]}")
    return items


def _positive_floats(name: str, value: Any) -> list[float] | float:
    """A float > 0 (finite), or a 1-D float array as a list of Python floats, all finite and > 0."""
    if not _is_array(value):
        return check_number(name, value, 0.0, low_open=True, high=Q.FLOAT32_OVERFLOW, high_open=True)
    try:
        xp = B.namespace(value)
    except TypeError:
        raise TypeError(f"{name} must be a number or a 1-D float array, got {type(value).__name__}") from None
    if not xp.isdtype(value.dtype, "real floating"):
        raise TypeError(f"{name} must be a float array, got dtype {B.dtype_name(value)}")
    if value.ndim != 1:
        raise ValueError(f"{name} must be a number or a 1-D array (one entry per channel), got shape "
                         f"{tuple(value.shape)}")
    items = [float(v) for v in B.to_numpy(value).tolist()]
    bad = [v for v in items if not 0.0 < v < Q.FLOAT32_OVERFLOW]      # NaN is bad
    if bad:
        raise ValueError(f"{name} must hold finite numbers > 0, got {bad[0]}")
    return items


def _channels(values: Any, like: Any, axis: int, dtype: str) -> Any:
    """A Python number, or a list of numbers as an array on ``like``'s backend shaped along ``axis``."""
    if not isinstance(values, list):
        return values
    xp = B.namespace(like)
    arr = B.to_backend(values, B.backend_of(like), dtype=dtype)
    return xp.reshape(arr, tuple(len(values) if d == axis else 1 for d in range(like.ndim)))


def _check_channels(name: str, values: Any, acc: Any) -> None:
    if isinstance(values, list):
        if acc.ndim < 2 or acc.shape[1] != len(values):
            raise ValueError(f"{name} has {len(values)} entries, one per channel, but acc of shape "
                             f"{tuple(acc.shape)} has {acc.shape[1] if acc.ndim >= 2 else 'no'} channels on axis 1")


def _code_range(qmin: Any, qmax: Any) -> tuple[int, int, str]:
    qmin = check_int("qmin", qmin, -2 ** 31, 2 ** 31 - 1)
    qmax = check_int("qmax", qmax, -2 ** 31, 2 ** 31 - 1)
    if qmin >= qmax:
        raise ValueError(f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    if 0 <= qmin and qmax <= 255:
        return qmin, qmax, "uint8"
    if -128 <= qmin and qmax <= 127:
        return qmin, qmax, "int8"
    return qmin, qmax, "int32"


def _zero_point_in(name: str, value: Any, qmin: int, qmax: int) -> int:
    """An int in [qmin, qmax]; the error names qmin and qmax too (either may be the wrong one)."""
    value = check_int(name, value, None)
    if not qmin <= value <= qmax:
        raise ValueError(f"{name} must be an int in [qmin, qmax] = [{qmin}, {qmax}], got {value}")
    return value


def _acc_int64(acc: Any) -> Any:
    """``acc`` (an integer array with int32 values) as int64."""
    xp = _int_array("acc", acc)
    if B.dtype_name(acc) in ("int64", "uint32", "uint64") and math.prod(tuple(acc.shape)):
        low, high = int(xp.min(acc)), int(xp.max(acc))
        if low < INT32_MIN or high > INT32_MAX:
            raise ValueError(f"acc must hold int32 values (an int32 accumulator), got entries in [{low}, {high}]")
    return xp.astype(acc, xp.int64)


# ----------------------------------------------------------------------------- fixed-point arithmetic
def requantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    r"""gemmlowp's fixed-point form of a real multiplier: :math:`M \approx m \cdot 2^{-31} \cdot 2^{-s}`.

    ``QuantizeMultiplier`` of TFLite: :math:`M = q\,2^{e}` with :math:`q \in [1/2, 1)`
    (``frexp``), :math:`m = \operatorname{round}(q\, 2^{31})` (half away from zero, as
    ``std::round``), and :math:`s = -e`; when the rounding gives :math:`m = 2^{31}`, it is
    halved and :math:`s` lowered by one. So :math:`m` has 31 significant bits and
    :math:`|m\,2^{-31-s} - M| \le 2^{-32-s} \le 2^{-31} M`.

    Parameters
    ----------
    real_multiplier : float in [2**-63, 2**31)
        :math:`M = S_w S_x / S_y` (usually below 1: shift :math:`s \ge 0`, a right shift; a
        negative shift is a left shift).

    Returns
    -------
    multiplier : int in [2**30, 2**31)
    shift : int in [-31, 62]

    See: chapters/05_3_quantization.ipynb
    """
    real = check_number("real_multiplier", real_multiplier, 2.0 ** -63, 2.0 ** 31, high_open=True)
    q, exponent = math.frexp(real)
    m = math.floor(q * 2.0 ** 31 + 0.5)             # exact: q * 2**31 < 2**31 has an ulp <= 2**-22
    if m == 2 ** 31:
        m //= 2
        exponent += 1
    shift = -exponent
    if not SHIFT_MIN <= shift <= SHIFT_MAX:         # only at the ends of the accepted range
        raise ValueError(f"real_multiplier must be in [2**-63, 2**31), got {real!r}")
    return int(m), int(shift)


def _srdhm(a: Any, b: Any) -> Any:
    """SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values (b may be a Python int).

    gemmlowp's ``trunc((ab + nudge) / 2**31)`` with nudge ``2**30`` (ab >= 0) or ``1 - 2**30``
    (ab < 0) is ``floor((ab + 2**30) / 2**31)``: for s < 0, trunc(s/d) = floor((s + d - 1)/d), and
    ``1 - 2**30 + 2**31 - 1 = 2**30``. So one add and one arithmetic shift (tested against the
    literal formula).
    """
    xp = B.namespace(a)
    high = (a * b + 2 ** 30) >> 31                      # operators: the xp wrappers cost µs a call
    if isinstance(b, int):
        if b != INT32_MIN:
            return high
        overflow = a == INT32_MIN
    else:
        overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return xp.where(overflow, xp.ones_like(high) * INT32_MAX, high)


def _rdbpot(x: Any, exponent: Any, half: Any, negative_step: Any) -> Any:
    """RoundingDivideByPOT, ``(x + half - negative_step·[x < 0]) >> e`` with half = 2**e // 2 and
    negative_step = [e > 0] given (ints or arrays).

    gemmlowp's ``(x >> e) + [r > t]`` with ``r = x & (2**e - 1)``, ``t = ((2**e - 1) >> 1) + [x < 0]``
    rounds half away from zero: for e >= 1 that is ``floor((x + 2**(e-1) - [x < 0]) / 2**e)``.
    """
    return (x + half - (x < 0) * negative_step) >> exponent     # bool * int64 is int64 (numpy, torch)


def saturating_rounding_doubling_high_mul(a: Any, b: Any) -> Any:
    r"""gemmlowp's ``SaturatingRoundingDoublingHighMul``: the high 32 bits of :math:`2ab`, rounded.

    .. math::

        \operatorname{SRDHM}(a, b) = \begin{cases}
        2^{31} - 1 & a = b = -2^{31} \text{ (the one overflow)}\\
        \operatorname{trunc}\big((ab + \nu) / 2^{31}\big), &
        \nu = 2^{30} \text{ if } ab \ge 0 \text{ else } 1 - 2^{30}
        \end{cases}

    (trunc: toward zero, as C's integer division), computed in int64.

    Parameters
    ----------
    a, b : integer arrays (or ints) with int32 values, broadcastable, one backend

    Returns
    -------
    int32 array of the broadcast shape.

    See: chapters/05_3_quantization.ipynb
    """
    arrays = [v for v in (a, b) if hasattr(v, "shape")]
    if not arrays:
        raise TypeError(f"a or b must be an integer array, got {type(a).__name__} and {type(b).__name__}")
    values = []
    for name, v in (("a", a), ("b", b)):
        if hasattr(v, "shape"):
            _int_array(name, v)
            if arrays[0] is not v and not B.same_kind(v, arrays[0]):
                raise TypeError("a and b must be on one backend (both numpy or both torch on one device)")
            v64 = B.namespace(v).astype(v, B.namespace(v).int64)
            if math.prod(tuple(v.shape)):
                low, high = int(B.namespace(v).min(v64)), int(B.namespace(v).max(v64))
                if low < INT32_MIN or high > INT32_MAX:
                    raise ValueError(f"{name} must hold int32 values, got entries in [{low}, {high}]")
            values.append(v64)
        else:
            values.append(check_int(name, v, INT32_MIN, INT32_MAX))
    av, bv = values
    if hasattr(av, "shape") and hasattr(bv, "shape"):
        _broadcast_shape(tuple(av.shape), tuple(bv.shape))
    if not hasattr(av, "shape"):
        av = B.namespace(bv).ones_like(bv) * av
    xp = B.namespace(av)
    return xp.astype(_srdhm(av, bv), xp.int32)


def _broadcast_shape(a: tuple, b: tuple) -> tuple:
    """The broadcast shape of ``a`` and ``b``; a ValueError naming both when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x, y = (a[-i] if i <= len(a) else 1), (b[-i] if i <= len(b) else 1)
        if x != y and 1 not in (x, y):
            raise ValueError(f"a and b must have broadcastable shapes, got a {a} and b {b}")
        out.append(y if x == 1 else x)
    return tuple(out[::-1])


def rounding_divide_by_pot(x: Any, exponent: Any) -> Any:
    r"""gemmlowp's ``RoundingDivideByPOT``: :math:`x / 2^{e}` rounded to nearest, ties away from zero.

    .. math::

        r = x \mathbin{\&} (2^e - 1),\quad t = \lfloor (2^e - 1)/2 \rfloor + [x < 0],\quad
        \operatorname{RDBPOT}(x, e) = (x \gg e) + [r > t]

    (:math:`\gg`: arithmetic shift, :math:`\lfloor x / 2^e \rfloor`), in int64.

    Parameters
    ----------
    x : integer array with int32 values
    exponent : int in [0, 62], or 1-D integer array (one per channel along axis 1 of x)

    Returns
    -------
    int32 array, the shape of x.

    See: chapters/05_3_quantization.ipynb
    """
    x64 = _acc_int64(_checked_int32("x", x))
    e = _python_ints("exponent", exponent, 0, SHIFT_MAX)
    _check_channels("exponent", e, x64)
    xp = B.namespace(x64)
    fixed = _Fixed(0, e)
    _, _, exponent, half, step = fixed.on(x64)
    return xp.astype(_rdbpot(x64, exponent, half, step), xp.int32)


def _checked_int32(name: str, x: Any) -> Any:
    xp = _int_array(name, x)
    if math.prod(tuple(x.shape)):
        x64 = xp.astype(x, xp.int64)
        low, high = int(xp.min(x64)), int(xp.max(x64))
        if low < INT32_MIN or high > INT32_MAX:
            raise ValueError(f"{name} must hold int32 values, got entries in [{low}, {high}]")
    return x


class _Fixed:
    """Precomputed per-channel constants of the fixed-point requantization (Python ints or lists)."""

    def __init__(self, multiplier: Any, shift: Any):
        lists = isinstance(multiplier, list) or isinstance(shift, list)
        n = len(multiplier) if isinstance(multiplier, list) else len(shift) if isinstance(shift, list) else 1
        ms = multiplier if isinstance(multiplier, list) else [multiplier] * n
        ss = shift if isinstance(shift, list) else [shift] * n
        if len(ms) != len(ss):
            raise ValueError(f"multiplier and shift must have one length, got {len(ms)} and {len(ss)}")
        pick = (lambda v: v) if lists else (lambda v: v[0])
        self.multiplier = pick(ms)
        self.left = pick([2 ** max(-s, 0) for s in ss])
        self.exponent = pick([max(s, 0) for s in ss])
        self.half = pick([2 ** max(s, 0) // 2 for s in ss])
        self.step = pick([int(s > 0) for s in ss])
        self.any_left = any(s < 0 for s in ss)

    def on(self, like: Any, axis: int = 1) -> tuple:
        key = (like.ndim, B.device_of(like), B.is_torch(like))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = tuple(_channels(v, like, axis, "int64") for v in (self.multiplier, self.left, self.exponent,
                                                                           self.half, self.step))
        return cache[key]


def _requantize_fixed(acc64: Any, constants: tuple, any_left: bool, zero_point: int, qmin: int, qmax: int,
                      dtype: str) -> Any:
    xp = B.namespace(acc64)
    m, left, exponent, half, step = constants
    if any_left:
        acc64 = (acc64 * left).clip(INT32_MIN, INT32_MAX)          # saturating left shift
    # SRDHM without its one overflow case (a = m = -2**31): m is in [0, 2**31 - 1] here (requantize
    # checks it; layers take it from requantize_multiplier, in [2**30, 2**31))
    y = _rdbpot((acc64 * m + 2 ** 30) >> 31, exponent, half, step) + zero_point
    return xp.astype(y.clip(qmin, qmax), getattr(xp, dtype))       # the method: array_api_compat clip is slow


def requantize(acc: Any, multiplier: Any, shift: Any, zero_point: int, qmin: int, qmax: int) -> Any:
    r"""Integer-only requantization of an int32 accumulator (gemmlowp / TFLite).

    .. math::

        y_q = \operatorname{clamp}\Big(z + \operatorname{RDBPOT}\big(\operatorname{SRDHM}
        (\operatorname{sat}(a \cdot 2^{\ell}),\, m),\, r\big),\; q_{\min}, q_{\max}\Big),
        \qquad \ell = \max(-s, 0),\; r = \max(s, 0)

    (:func:`saturating_rounding_doubling_high_mul`, :func:`rounding_divide_by_pot`; sat:
    clamp to int32), i.e. :math:`y_q \approx z + a\,m\,2^{-31-s}`. TFLite's
    ``MultiplyByQuantizedMultiplier`` followed by the zero point and the clamp.

    Parameters
    ----------
    acc : integer array with int32 values, shape (N, C, ...) (or any shape per tensor)
    multiplier : int in [0, 2**31 - 1], or 1-D integer array (C,) -- per channel along axis 1
    shift : int in [-31, 62], or 1-D integer array (C,)
        From :func:`requantize_multiplier`.
    zero_point : int in [qmin, qmax]
    qmin, qmax : int, qmin < qmax (int32 range)
        e.g. 0, 255 for uint8; ``zero_point, 255`` for a fused ReLU.

    Returns
    -------
    integer array, shape of acc: uint8 when [qmin, qmax] fits it, else int8, else int32.

    See: chapters/05_3_quantization.ipynb
    """
    acc64 = _acc_int64(_checked_int32("acc", acc))
    m = _python_ints("multiplier", multiplier, 0, INT32_MAX)
    s = _python_ints("shift", shift, SHIFT_MIN, SHIFT_MAX)
    _check_channels("multiplier", m, acc64)
    _check_channels("shift", s, acc64)
    qmin, qmax, dtype = _code_range(qmin, qmax)
    zero_point = _zero_point_in("zero_point", zero_point, qmin, qmax)
    fixed = _Fixed(m, s)
    return _requantize_fixed(acc64, fixed.on(acc64), fixed.any_left, zero_point, qmin, qmax, dtype)


def _requantize_float(acc32: Any, multiplier: Any, zero_point: int, qmin: int, qmax: int, dtype: str) -> Any:
    xp = B.namespace(acc32)
    y = xp.round(xp.astype(acc32, xp.float32) * multiplier) + zero_point
    return xp.astype(y.clip(qmin, qmax), getattr(xp, dtype))


def requantize_float(acc: Any, multiplier: Any, zero_point: int, qmin: int, qmax: int) -> Any:
    r"""Requantization with a float32 multiplier, as PyTorch's QNNPACK kernels do it.

    .. math::

        y_q = \operatorname{clamp}\big(z + \operatorname{round}(\mathrm{f32}(a) \cdot
        \mathrm{f32}(M)),\; q_{\min}, q_{\max}\big)

    in float32, round half to even (SSE2 ``cvtps2dq``). :math:`\mathrm{f32}(a)` rounds
    accumulators beyond :math:`2^{24}`, as the kernel does. Products beyond the int range
    saturate to the end codes.

    Parameters
    ----------
    acc : integer array with int32 values, shape (N, C, ...)
    multiplier : float > 0 or 1-D float array (C,) (per channel along axis 1); used as float32
    zero_point : int in [qmin, qmax]
    qmin, qmax : int, qmin < qmax

    Returns
    -------
    integer array, shape of acc (uint8 / int8 / int32 as in :func:`requantize`).

    See: chapters/05_3_quantization.ipynb
    """
    acc32 = _checked_int32("acc", acc)
    mult = _positive_floats("multiplier", multiplier)
    _check_channels("multiplier", mult, acc32)
    qmin, qmax, dtype = _code_range(qmin, qmax)
    zero_point = _zero_point_in("zero_point", zero_point, qmin, qmax)
    xp = B.namespace(acc32)
    mult = [Q._float32(v) for v in mult] if isinstance(mult, list) else Q._float32(mult)
    if any(math.isinf(v) for v in (mult if isinstance(mult, list) else [mult])):
        raise ValueError(f"multiplier must hold float32 numbers (<= 3.4e+38), got {multiplier!r}")
    m = _channels(mult, acc32, 1, "float32")
    return _requantize_float(xp.astype(acc32, xp.int32), m, zero_point, qmin, qmax, dtype)


# ----------------------------------------------------------------------------- bias
def quantize_bias(bias: Any, weight_scale: Any, input_scale: float) -> Any:
    r"""int32 bias codes at the accumulator's scale :math:`S_b = S_w S_x`, as torch quantizes them.

    .. math::

        b_q = \operatorname{round}\big(\mathrm{f32}(b) \cdot \mathrm{f32}(1 / S_b)\big),\qquad
        S_b = \mathrm{f32}(S_w \cdot S_x)\ \text{(the product in float64)}

    (round half to even): torch's ``QuantizeBias`` (``quantize_per_tensor`` /
    ``_per_channel`` to ``qint32`` with zero point 0), by the ONE quantizer:
    :func:`nnopt_lab.compression.quantization.quantize` on the codes
    :data:`~nnopt_lab.compression.quantization.INT32_RANGE` (its float32 reciprocal).

    Parameters
    ----------
    bias : float array (C,)
    weight_scale : float > 0, or float array (C,) (per output channel)
    input_scale : float > 0

    Returns
    -------
    int32 array (C,), on bias's backend.

    Raises
    ------
    ValueError
        When a code would reach or pass the ends of the int32 range (the bias is too large
        for these scales; torch would saturate it silently), or for NaN / inf in ``bias``.

    See: chapters/05_3_quantization.ipynb
    """
    xp = Q._float_array("bias", bias)
    if bias.ndim != 1 or bias.shape[0] == 0:
        raise ValueError(f"bias must be 1-D with at least one entry (one per output channel), got shape "
                         f"{tuple(bias.shape)}")
    sw = _positive_floats("weight_scale", weight_scale)
    sx = check_number("input_scale", input_scale, 0.0, low_open=True, high=Q.FLOAT32_OVERFLOW, high_open=True)
    if isinstance(sw, list) and len(sw) != bias.shape[0]:
        raise ValueError(f"weight_scale must have one entry per bias entry ({bias.shape[0]}), got {len(sw)}")
    fits = xp.abs(xp.astype(bias, xp.float64)) < Q.FLOAT32_OVERFLOW    # False for NaN, inf, beyond float32
    if not B.float_of(xp.all(fits)):
        j = int(B.float_of(xp.argmax(xp.astype(~fits, xp.int32))))
        raise ValueError(f"bias must hold finite float32 numbers (|b| <= 3.4028235e+38), got bias[{j}] = "
                         f"{B.float_of(bias[j])}")
    b32 = xp.astype(bias, xp.float32)
    sx = Q._float32(sx)
    if isinstance(sw, list):
        sb = [Q._float32(v) * sx for v in sw]
        codes = Q.quantize(b32, B.to_backend(sb, B.backend_of(b32), dtype="float64"), 0, *Q.INT32_RANGE, axis=0)
    else:
        sb = Q._float32(sw) * sx
        codes = Q.quantize(b32, sb, 0, *Q.INT32_RANGE)
    end = (codes == INT32_MAX) | (codes == INT32_MIN)    # saturated (float32 has no 2**31 - 1)
    if B.float_of(xp.any(end)):
        j = int(B.float_of(xp.argmax(xp.astype(end, xp.int32))))
        step = sb[j] if isinstance(sb, list) else sb
        raise ValueError(f"bias[{j}] = {B.float_of(b32[j])} is {B.float_of(b32[j]) / step:.4g} steps of "
                         f"S_w*S_x: at or beyond the ends of the int32 range of the bias codes (the weight or "
                         f"input scale is too small for it)")
    return codes


# ----------------------------------------------------------------------------- layers
def _to_int8(q: Any) -> Any:
    """uint8 codes q -> the int8 q - 128, in one op: flip the top bit and view the bytes as int8."""
    return (q ^ _OFFSET).view(B.namespace(q).int8)


def _check_codes(layer: Any, q: Any, ndim: int, layout: str) -> Any:
    try:
        xp = B.namespace(q)
    except TypeError:
        raise TypeError(f"{type(layer).__name__} expects q to be a numpy array or torch tensor of uint8 codes, "
                        f"got {type(q).__name__}") from None
    if q.dtype != xp.uint8:                              # not B.dtype_name: it builds a string (~1 µs)
        raise TypeError(f"{type(layer).__name__} expects q of dtype uint8 (activation codes), got "
                        f"{B.dtype_name(q)}; quantize float inputs first (IntegerModel does)")
    if q.ndim != ndim:
        raise ValueError(f"{type(layer).__name__} expects q of shape {layout}, got {tuple(q.shape)}")
    return xp


def _scale32(name: str, value: Any) -> float:
    """A scale as the float32 number torch stores."""
    value = check_number(name, value, 0.0, low_open=True, high=Q.FLOAT32_OVERFLOW, high_open=True)
    scale = Q._float32(value)
    if not Q.SMALLEST_SCALE < scale < Q.FLOAT32_OVERFLOW:
        raise ValueError(f"{name} must be a float32 number > 2.9e-39 and <= 3.4e+38, got {value!r}")
    return scale


class _Weighted:
    """What IntegerLinear and IntegerConv2d share: codes, scales, multipliers, the int32 constant per row."""

    kind = ""

    def _setup(self, weight_codes: Any, weight_scale: Any, bias_codes: Any, input_scale: Any,
               input_zero_point: Any, output_scale: Any, output_zero_point: Any, relu: Any,
               requantization: Any, ndim: int, layout: str) -> None:
        xp = _int_array("weight_codes", weight_codes)
        if B.dtype_name(weight_codes) != "int8":
            raise TypeError(f"weight_codes must be int8 (symmetric int8 codes), got {B.dtype_name(weight_codes)}")
        if weight_codes.ndim != ndim or 0 in tuple(weight_codes.shape):
            raise ValueError(f"weight_codes must have shape {layout} with no empty axis, got "
                             f"{tuple(weight_codes.shape)}")
        cout = weight_codes.shape[0]
        sw = _positive_floats("weight_scale", weight_scale)
        if isinstance(sw, list):
            if len(sw) != cout:
                raise ValueError(f"weight_scale must be a number or have one entry per output channel ({cout}), "
                                 f"got {len(sw)}")
            sw = [_scale32("weight_scale", v) for v in sw]
        else:
            sw = _scale32("weight_scale", sw)
        self.input_scale = _scale32("input_scale", input_scale)
        self.input_zero_point = check_int("input_zero_point", input_zero_point, ACT_QMIN, ACT_QMAX)
        self.output_scale = _scale32("output_scale", output_scale)
        self.output_zero_point = check_int("output_zero_point", output_zero_point, ACT_QMIN, ACT_QMAX)
        self.relu = check_bool("relu", relu)
        self.requantization = check_choice("requantization", requantization, REQUANTIZATIONS)
        if bias_codes is not None:
            _int_array("bias_codes", bias_codes)
            if not B.same_kind(bias_codes, weight_codes):
                raise TypeError("bias_codes must be on weight_codes's backend and device")
            if tuple(bias_codes.shape) != (cout,):
                raise ValueError(f"bias_codes must have shape ({cout},), one per output channel, got "
                                 f"{tuple(bias_codes.shape)}")
            bias_codes = xp.astype(_checked_int32("bias_codes", bias_codes), xp.int32)
        self.weight_codes = weight_codes
        self.bias_codes = bias_codes
        self.per_channel = isinstance(sw, list)
        self.weight_scale = B.to_backend(sw, B.backend_of(weight_codes), dtype="float32") if self.per_channel else sw
        self.weight_zero_point = (xp.zeros((cout,), dtype=xp.int32, device=B.device(weight_codes))
                                  if self.per_channel else 0)
        scales = sw if self.per_channel else [sw]
        # the real multiplier in float64 (TFLite); QNNPACK's float32 one: f32(f32(Sw*Sx) * f32(1/Sy))
        reals = [s * self.input_scale / self.output_scale for s in scales]
        inv_y = Q._float32(1.0 / self.output_scale)
        floats = [Q._float32(Q._float32(s * self.input_scale) * inv_y) for s in scales]
        if not all(0.0 < f < math.inf for f in floats):
            raise ValueError(f"weight_scale * input_scale / output_scale must be a float32 number > 0, got "
                             f"{reals[0]!r}")
        try:
            pairs = [requantize_multiplier(r) for r in reals]
        except ValueError:
            raise ValueError(f"weight_scale * input_scale / output_scale must be in [2**-63, 2**31) for the "
                             f"fixed-point multiplier, got {min(reals)!r} .. {max(reals)!r}") from None
        pick = (lambda v: v) if self.per_channel else (lambda v: v[0])
        self._fixed = _Fixed(pick([p[0] for p in pairs]), pick([p[1] for p in pairs]))
        self.multiplier, self.shift = self._channel_ints(pick([p[0] for p in pairs])), \
            self._channel_ints(pick([p[1] for p in pairs]))
        self.float_multiplier = (B.to_backend(floats, B.backend_of(weight_codes), dtype="float32")
                                 if self.per_channel else floats[0])
        self._floats = pick(floats)
        self._float_cache: dict = {}
        # overflow: |acc| <= K * max|w_q| * max|x_q - z_x| + max|b_q| must fit int32
        k = math.prod(tuple(weight_codes.shape[1:]))
        w_max = int(xp.max(xp.abs(xp.astype(weight_codes, xp.int32))))
        x_max = max(self.input_zero_point - ACT_QMIN, ACT_QMAX - self.input_zero_point)
        b_max = 0 if bias_codes is None else int(xp.max(xp.abs(xp.astype(bias_codes, xp.int64))))
        bound = k * w_max * x_max + b_max
        if bound > INT32_MAX:
            raise ValueError(f"{self.kind}: the int32 accumulator can overflow: K * max|w_q| * max|x_q - z_x| + "
                             f"max|b_q| = {k} * {w_max} * {x_max} + {b_max} = {bound} > 2**31 - 1; split the "
                             f"layer (K = {k} inputs per output) or use fewer bits")
        # the int32 constant of each row: (128 - z_x) * sum_k w_q + b_q, in int64
        rows = xp.sum(xp.reshape(xp.astype(weight_codes, xp.int64), (cout, k)), axis=1)
        offset = (_OFFSET - self.input_zero_point) * rows
        if bias_codes is not None:
            offset = offset + xp.astype(bias_codes, xp.int64)
        # |offset| <= K max|w_q| max|x_q - z_x| + max|b_q| <= 2**31 - 1 (checked above), and so is every
        # accumulator: int32 arithmetic cannot wrap
        self._offset = xp.astype(offset, xp.int32)
        self._qmin = self.output_zero_point if self.relu else ACT_QMIN

    def _channel_ints(self, values: Any) -> Any:
        if isinstance(values, list):
            return B.to_backend(values, B.backend_of(self.weight_codes), dtype="int64")
        return values

    def _requantize(self, acc: Any) -> Any:
        """acc (N, C, ...) int32 -> uint8 codes at the output scale (int64 only inside the fixed-point product)."""
        xp = B.namespace(acc)
        if self.requantization == "fixed":
            acc64 = xp.astype(acc, xp.int64)
            return _requantize_fixed(acc64, self._fixed.on(acc64), self._fixed.any_left, self.output_zero_point,
                                     self._qmin, ACT_QMAX, "uint8")
        key = (acc.ndim, B.device_of(acc), B.is_torch(acc))
        if key not in self._float_cache:
            self._float_cache[key] = _channels(self._floats, acc, 1, "float32")
        return _requantize_float(acc, self._float_cache[key], self.output_zero_point, self._qmin, ACT_QMAX, "uint8")

    def _check_backend(self, q: Any) -> None:
        if not B.same_kind(q, self.weight_codes):
            raise TypeError(f"{type(self).__name__} got q on {B.backend_of(q).name} ({B.device_of(q)}) but its "
                            f"codes are on {B.backend_of(self.weight_codes).name} "
                            f"({B.device_of(self.weight_codes)}); move q with nnopt_lab.backend.to_backend")

    def stored_bytes(self) -> int:
        r"""Bytes this layer stores: int8 codes, int32 biases, float32 weight scales, the requantization
        constants per channel (fixed: int32 multiplier + int32 shift; float: a float32 multiplier), and
        the output scale (float32) and zero point (int32). Weight zero points are 0 by the scheme
        (not stored); the input scale and zero point are the previous layer's output ones."""
        n = math.prod(tuple(self.weight_codes.shape))
        c = self.weight_codes.shape[0] if self.per_channel else 1
        bias = 0 if self.bias_codes is None else 4 * self.weight_codes.shape[0]
        per_channel = 4 + (8 if self.requantization == "fixed" else 4)
        return n + bias + c * per_channel + 8

    def dequantized_weight(self, dtype: str = "float32") -> Any:
        """:math:`S_w w_q`, the real weight the codes stand for (per channel along axis 0)."""
        return Q.dequantize(self.weight_codes, self.weight_scale, 0, dtype=dtype,
                            axis=0 if self.per_channel else None)

    def __call__(self, q: Any) -> Any:
        return self.forward(q)

    def _repr_fields(self) -> str:
        where = "per channel" if self.per_channel else "per tensor"
        return (f"{where}, relu={self.relu}, requantization={self.requantization!r}, "
                f"input=({self.input_scale:.4g}, {self.input_zero_point}), "
                f"output=({self.output_scale:.4g}, {self.output_zero_point})")


def _quantized_weight(layer: Module, per_channel: bool) -> tuple[Any, Any]:
    weight = layer._params["weight"].data
    record = Q.quantize_weight(weight, 8, "symmetric", per_channel, 0)
    xp = B.namespace(record.codes)
    return xp.astype(record.codes, xp.int8), record.scale


def _layer_bias(layer: Module, weight_scale: Any, input_scale: float) -> Any:
    if "bias" not in layer._params:
        return None
    return quantize_bias(layer._params["bias"].data, weight_scale, input_scale)


class IntegerLinear(_Weighted):
    r"""int8 Linear on uint8 codes: :math:`y_q = \operatorname{requant}\big(W_q (x_q - z_x) + b_q\big)`.

    .. math::

        a_{nj} = \sum_k (x_{q,nk} - 128)\, w_{q,jk} + (128 - z_x) \sum_k w_{q,jk} + b_{q,j},
        \qquad y_{q,nj} = \operatorname{clamp}\big(z_y + \operatorname{round}(M_j a_{nj}),
        q_{\min}, 255\big)

    the first sum by :func:`nnopt_lab.backend.int_matmul` (int8 × int8 → int32), the rest a
    constant per output; :math:`M_j = S_{w,j} S_x / S_y` by :func:`requantize`
    (``"fixed"``) or :func:`requantize_float` (``"float"``), :math:`q_{\min} = z_y` with
    ``relu``. Equal to ``torch.ao.nn.quantized.Linear`` (``LinearReLU``) on the ``qnnpack``
    engine with ``requantization="float"``, bit for bit (tested).

    Parameters
    ----------
    weight_codes : int8 array (out_features, in_features), symmetric codes (zero point 0)
    weight_scale : float > 0 (per tensor) or float array (out_features,) (per channel)
    bias_codes : int32 array (out_features,) at scale S_w·S_x (:func:`quantize_bias`), or None
    input_scale, output_scale : float > 0 (used as float32)
    input_zero_point, output_zero_point : int in [0, 255]
    relu : bool
        ReLU fused: the output is clamped at :math:`z_y` (the code of 0.0).
    requantization : {"fixed", "float"}

    Attributes
    ----------
    weight_codes, weight_scale, weight_zero_point (0, or int32 zeros per channel), bias_codes,
    input_scale, input_zero_point, output_scale, output_zero_point, relu, requantization,
    per_channel; multiplier, shift (ints, or int64 arrays per channel: :func:`requantize_multiplier`
    of the float64 :math:`M`); float_multiplier (QNNPACK's float32 :math:`M`).

    Raises
    ------
    ValueError
        When :math:`K \max|w_q| \max|x_q - z_x| + \max|b_q|` passes the int32 accumulator
        (:math:`2^{31} - 1`; :math:`K \cdot 127 \cdot 255 < 2^{31}` needs K ≤ 66311).

    See: chapters/05_3_quantization.ipynb
    """

    kind = "IntegerLinear"

    def __init__(self, weight_codes: Any, weight_scale: Any, bias_codes: Any, input_scale: float,
                 input_zero_point: int, output_scale: float, output_zero_point: int, relu: bool = False,
                 requantization: str = "fixed"):
        self._setup(weight_codes, weight_scale, bias_codes, input_scale, input_zero_point, output_scale,
                    output_zero_point, relu, requantization, 2, "(out_features, in_features)")
        xp = B.namespace(weight_codes)
        self.out_features, self.in_features = weight_codes.shape
        self._weight_t = B.copy(xp.permute_dims(weight_codes, (1, 0)))       # (in, out), contiguous

    @classmethod
    def from_float(cls, layer: Linear, input_scale: float, input_zero_point: int, output_scale: float,
                   output_zero_point: int, *, per_channel: bool = True, relu: bool = False,
                   requantization: str = "fixed") -> "IntegerLinear":
        """An IntegerLinear from a float :class:`~nnopt_lab.nn.layers.Linear`: weights int8 symmetric
        (:func:`~nnopt_lab.compression.quantization.quantize_weight`, per tensor or per output
        channel), bias by :func:`quantize_bias`."""
        if not isinstance(layer, Linear):
            raise TypeError(f"layer must be a Linear, got {type(layer).__name__}")
        per_channel = check_bool("per_channel", per_channel)
        codes, scale = _quantized_weight(layer, per_channel)
        sx = _scale32("input_scale", input_scale)
        return cls(codes, scale, _layer_bias(layer, scale, sx), sx, input_zero_point, output_scale,
                   output_zero_point, relu=relu, requantization=requantization)

    def forward(self, q: Any) -> Any:
        """uint8 codes (N, in_features) -> uint8 codes (N, out_features)."""
        _check_codes(self, q, 2, f"(N, {self.in_features})")
        self._check_backend(q)
        return self._run(q)

    def _run(self, q: Any) -> Any:
        """forward on uint8 codes already on the layer's backend (IntegerModel guarantees both)."""
        if q.ndim != 2 or q.shape[1] != self.in_features:
            raise ValueError(f"IntegerLinear expects q of shape (N, {self.in_features}), got {tuple(q.shape)}")
        acc = B.int_matmul(_to_int8(q), self._weight_t) + self._offset
        return self._requantize(acc)

    def __repr__(self) -> str:
        return f"IntegerLinear({self.in_features}, {self.out_features}, {self._repr_fields()})"


class IntegerConv2d(_Weighted):
    r"""int8 Conv2d on uint8 code images, by im2col and one int8 × int8 product per group.

    The code image is shifted to int8 (:math:`x_q - 128`), padded with :math:`z_x - 128`
    (the code of 0.0, as torch pads), unfolded by :func:`nnopt_lab.nn.functional.im2col`
    and multiplied by the flattened int8 weight with :func:`nnopt_lab.backend.int_matmul`;
    then, as :class:`IntegerLinear`,

    .. math::

        a_{n,o,i,j} = \sum_{c,u,v} w_{q,o,c,u,v}\,(x_{q,n,c,\dots} - z_x) + b_{q,o},\qquad
        y_q = \operatorname{clamp}\big(z_y + \operatorname{round}(M_o a), q_{\min}, 255\big).

    Equal to ``torch.ao.nn.quantized.Conv2d`` (``ConvReLU2d``) on the ``qnnpack`` engine
    with ``requantization="float"``, bit for bit (tested).

    Parameters
    ----------
    weight_codes : int8 array (Cout, Cin/groups, kh, kw)
    weight_scale, bias_codes, input_scale, input_zero_point, output_scale, output_zero_point,
    relu, requantization
        As in :class:`IntegerLinear`.
    stride, dilation : int >= 1 or pair; padding : int >= 0 or pair; groups : int >= 1

    See: chapters/05_3_quantization.ipynb
    """

    kind = "IntegerConv2d"

    def __init__(self, weight_codes: Any, weight_scale: Any, bias_codes: Any, input_scale: float,
                 input_zero_point: int, output_scale: float, output_zero_point: int, relu: bool = False,
                 requantization: str = "fixed", stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1):
        self.stride = check_shape("stride", stride, length=2, low=1)
        self.padding = check_shape("padding", padding, length=2, low=0)
        self.dilation = check_shape("dilation", dilation, length=2, low=1)
        self.groups = check_int("groups", groups, 1)
        self._setup(weight_codes, weight_scale, bias_codes, input_scale, input_zero_point, output_scale,
                    output_zero_point, relu, requantization, 4, "(Cout, Cin/groups, kh, kw)")
        cout, cin_g, kh, kw = weight_codes.shape
        if cout % self.groups:
            raise ValueError(f"groups must divide the out-channels {cout} of weight_codes, got {self.groups}")
        self.out_channels, self.in_channels, self.kernel_size = cout, cin_g * self.groups, (kh, kw)
        xp = B.namespace(weight_codes)
        self._w2 = xp.reshape(weight_codes, (cout, cin_g * kh * kw))

    @classmethod
    def from_float(cls, layer: Conv2d, input_scale: float, input_zero_point: int, output_scale: float,
                   output_zero_point: int, *, per_channel: bool = True, relu: bool = False,
                   requantization: str = "fixed") -> "IntegerConv2d":
        """An IntegerConv2d from a float :class:`~nnopt_lab.nn.layers.Conv2d` (its stride, padding,
        dilation and groups), weights int8 symmetric per tensor or per output channel."""
        if not isinstance(layer, Conv2d):
            raise TypeError(f"layer must be a Conv2d, got {type(layer).__name__}")
        per_channel = check_bool("per_channel", per_channel)
        codes, scale = _quantized_weight(layer, per_channel)
        sx = _scale32("input_scale", input_scale)
        return cls(codes, scale, _layer_bias(layer, scale, sx), sx, input_zero_point, output_scale,
                   output_zero_point, relu=relu, requantization=requantization, stride=layer.stride,
                   padding=layer.padding, dilation=layer.dilation, groups=layer.groups)

    def forward(self, q: Any) -> Any:
        """uint8 codes (N, Cin, H, W) -> uint8 codes (N, Cout, Ho, Wo)."""
        _check_codes(self, q, 4, f"(N, {self.in_channels}, H, W)")
        self._check_backend(q)
        return self._run(q)

    def _run(self, q: Any) -> Any:
        """forward on uint8 codes already on the layer's backend (IntegerModel guarantees both)."""
        xp = B.namespace(q)
        if q.ndim != 4 or q.shape[1] != self.in_channels:
            raise ValueError(f"IntegerConv2d expects q of shape (N, {self.in_channels}, H, W), got {tuple(q.shape)}")
        F._output_shape(tuple(q.shape[2:]), self.kernel_size, self.stride, self.padding, self.dilation,
                        "kernel_size", "q")
        n, c, h, w = q.shape
        (ph, pw), (kh, kw) = self.padding, self.kernel_size
        x8 = _to_int8(q)
        if ph or pw:
            padded = xp.full((n, c, h + 2 * ph, w + 2 * pw), self.input_zero_point - _OFFSET, dtype=xp.int8,
                             device=B.device(q))
            padded[:, :, ph:ph + h, pw:pw + w] = x8
            x8 = padded
        cols, g = F.im2col(x8, kh, kw, self.stride, 0, self.dilation)            # (Cin*kh*kw, N*Ho*Wq)
        if self.groups == 1:
            acc = B.int_matmul(self._w2, cols)
        else:
            rows, k = self.out_channels // self.groups, self._w2.shape[1]
            acc = xp.concat([B.int_matmul(self._w2[i * rows:(i + 1) * rows], cols[i * k:(i + 1) * k])
                             for i in range(self.groups)], axis=0)
        acc = acc + self._offset[:, None]
        acc = xp.reshape(acc, (self.out_channels, n, g["ho"], g["wq"]))[:, :, :, :g["wo"]]
        return self._requantize(xp.permute_dims(acc, (1, 0, 2, 3)))

    def __repr__(self) -> str:
        return (f"IntegerConv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, {self._repr_fields()})")


class _CodeLayer:
    """A layer on codes that keeps the scale and zero point (stores nothing)."""

    def __call__(self, q: Any) -> Any:
        return self.forward(q)

    def _run(self, q: Any) -> Any:
        """forward inside an IntegerModel (uint8 codes on the model's backend); by default forward itself."""
        return self.forward(q)

    def stored_bytes(self) -> int:
        return 0


class IntegerMaxPool2d(_CodeLayer):
    r"""Max pooling on uint8 codes: :math:`y_q = \max_{\text{window}} x_q` (no padding).

    Exact: :math:`q \mapsto S(q - z)` is increasing, so the max of the codes is the code of
    the max. Same kernel/stride conventions as :class:`~nnopt_lab.nn.layers.MaxPool2d`.

    Parameters
    ----------
    kernel_size : int >= 1 or pair
    stride : int >= 1, pair or None (= kernel_size)

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, kernel_size: Any, stride: Any = None):
        self.kernel_size = check_shape("kernel_size", kernel_size, length=2, low=1)
        self.stride = self.kernel_size if stride is None else check_shape("stride", stride, length=2, low=1)

    def forward(self, q: Any) -> Any:
        """uint8 codes (N, C, H, W) -> (N, C, Ho, Wo), ``Ho = (H - kh) // sh + 1``."""
        _check_codes(self, q, 4, "(N, C, H, W)")
        return self._run(q)

    def _run(self, q: Any) -> Any:
        if q.ndim != 4:
            raise ValueError(f"IntegerMaxPool2d expects q of shape (N, C, H, W), got {tuple(q.shape)}")
        F._output_shape(tuple(q.shape[2:]), self.kernel_size, self.stride, (0, 0), (1, 1), "kernel_size", "q")
        return F.maxpool2d_forward(q, self.kernel_size, self.stride)[0]     # on the codes, in uint8

    def __repr__(self) -> str:
        return f"IntegerMaxPool2d(kernel_size={self.kernel_size}, stride={self.stride})"


class IntegerReLU(_CodeLayer):
    r"""ReLU on codes: :math:`y_q = \max(x_q, z)`, z the code of 0.0 (a ReLU that could not be fused).

    Parameters
    ----------
    zero_point : int in [0, 255]

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, zero_point: int):
        self.zero_point = check_int("zero_point", zero_point, ACT_QMIN, ACT_QMAX)

    def forward(self, q: Any) -> Any:
        """uint8 codes, any shape (at least 1-D) -> uint8 codes, same shape."""
        try:
            xp = B.namespace(q)
        except TypeError:
            raise TypeError(f"IntegerReLU expects q to be a numpy array or torch tensor of uint8 codes, "
                            f"got {type(q).__name__}") from None
        if B.dtype_name(q) != "uint8":
            raise TypeError(f"IntegerReLU expects q of dtype uint8 (activation codes), got {B.dtype_name(q)}")
        return self._run(q)

    def _run(self, q: Any) -> Any:
        return q.clip(self.zero_point, ACT_QMAX)           # uint8 stays uint8 (python ints in its range)

    def __repr__(self) -> str:
        return f"IntegerReLU(zero_point={self.zero_point})"


class IntegerFlatten(_CodeLayer):
    """(N, d1, d2, ...) codes -> (N, d1·d2·...) codes.

    See: chapters/05_3_quantization.ipynb
    """

    def forward(self, q: Any) -> Any:
        """uint8 codes (N, d1, ...) -> (N, d1·d2·...)."""
        try:
            xp = B.namespace(q)
        except TypeError:
            raise TypeError(f"IntegerFlatten expects q to be a numpy array or torch tensor, got "
                            f"{type(q).__name__}") from None
        if q.ndim < 2:
            raise ValueError(f"IntegerFlatten expects q of shape (N, d1, ...), got {tuple(q.shape)}")
        return xp.reshape(q, (q.shape[0], math.prod(tuple(q.shape[1:]))))

    def __repr__(self) -> str:
        return "IntegerFlatten()"


_LAYER_TYPES = (IntegerLinear, IntegerConv2d, IntegerMaxPool2d, IntegerReLU, IntegerFlatten)


# ----------------------------------------------------------------------------- the model
class IntegerModel:
    r"""A model that runs on integers between a quantized input and a dequantized output.

    .. math::

        x_q = \operatorname{quantize}(x; S_0, z_0),\quad
        q_L = f_L(\dots f_1(x_q)),\quad \hat y = S_L (q_L - z_L)

    (:func:`~nnopt_lab.compression.quantization.quantize` /
    :func:`~nnopt_lab.compression.quantization.dequantize`), :math:`f_l` the integer layers.

    Parameters
    ----------
    layers : sequence of IntegerLinear, IntegerConv2d, IntegerMaxPool2d, IntegerReLU, IntegerFlatten
        Each weighted layer's input scale and zero point must be the output ones of the
        weighted layer before it (or the model's input ones).
    input_scale : float > 0
    input_zero_point : int in [0, 255]
    dtype : {"float32", "float64"}
        Float dtype of the dequantized outputs (:func:`convert` gives the model's).

    Attributes
    ----------
    layers (list), input_scale, input_zero_point, output_scale, output_zero_point, backend
    (where the codes live, with the float dtype outputs are given in).

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, layers: Any, input_scale: float, input_zero_point: int, dtype: str = "float32"):
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__") or hasattr(layers, "shape"):
            raise TypeError(f"layers must be a sequence of integer layers, got {type(layers).__name__}")
        layers = list(layers)
        self.input_scale = _scale32("input_scale", input_scale)
        self.input_zero_point = check_int("input_zero_point", input_zero_point, ACT_QMIN, ACT_QMAX)
        dtype = check_choice("dtype", dtype, _FLOAT_OK)
        scale, zero_point, where = self.input_scale, self.input_zero_point, None
        for i, layer in enumerate(layers):
            if not isinstance(layer, _LAYER_TYPES):
                raise TypeError(f"layers[{i}] must be one of {[t.__name__ for t in _LAYER_TYPES]}, got "
                                f"{type(layer).__name__}")
            if isinstance(layer, _Weighted):
                if (layer.input_scale, layer.input_zero_point) != (scale, zero_point):
                    if where is None:
                        raise ValueError(f"input_scale and input_zero_point ({scale}, {zero_point}) must be the "
                                         f"input ones of layers[{i}], ({layer.input_scale}, "
                                         f"{layer.input_zero_point})")
                    raise ValueError(f"layers[{i}] expects input scale/zero point ({layer.input_scale}, "
                                     f"{layer.input_zero_point}) but the layer before gives ({scale}, {zero_point})")
                if where is not None and not B.same_kind(layer.weight_codes, where):
                    raise ValueError(f"layers[{i}] is on another backend than the layers before it")
                scale, zero_point, where = layer.output_scale, layer.output_zero_point, layer.weight_codes
        if where is None:
            raise ValueError("layers must hold at least one IntegerLinear or IntegerConv2d")
        self.layers = layers
        self.output_scale, self.output_zero_point = scale, zero_point
        self.backend = B.Backend(B.backend_of(where).name, dtype)
        self._like = where
        # the input's and output's quantizers, checked once here (not on every call)
        self._input = Q.Quantizer(self.input_scale, self.input_zero_point, ACT_QMIN, ACT_QMAX)
        self._output = Q.Quantizer(self.output_scale, self.output_zero_point, ACT_QMIN, ACT_QMAX)

    def eval(self) -> "IntegerModel":
        """Nothing to switch (no dropout, no batch statistics): returns self."""
        return self

    def forward_codes(self, q: Any) -> Any:
        """uint8 input codes -> uint8 output codes (the integer part of :meth:`forward`)."""
        for layer in self.layers:
            q = layer.forward(q)
        return q

    def quantize_input(self, x: Any) -> Any:
        """The uint8 codes of a float input at the input scale and zero point."""
        Q._float_array("x", x)
        if not B.same_kind(x, self._like):
            raise TypeError(f"x is on {B.backend_of(x).name} ({B.device_of(x)}) but the model is on "
                            f"{self.backend.name}; move x with nnopt_lab.backend.to_backend(x, model.backend)")
        return self._input.quantize(x)          # = Q.quantize(x, input_scale, input_zero_point, 0, 255)

    def forward(self, x: Any) -> Any:
        """Float input (N, ...) -> dequantized float output (N, ...) in ``backend.dtype`` (the logits).

        The codes between the layers are made by the layers themselves (uint8, on the model's
        backend), so only ``x`` is checked and the layers skip their dtype/backend checks."""
        try:
            q = self.quantize_input(x)
            for layer in self.layers:
                q = layer._run(q)
        except ValueError as error:       # a layer's complaint about its codes is one about the caller's x
            raise ValueError(f"x (shape {tuple(x.shape)}) does not fit the model: {error}") from None
        return self._output.dequantize(q, self.backend.dtype)

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def stored_bytes(self) -> int:
        r"""Bytes of what the model stores: the sum of the layers' ``stored_bytes()`` (int8
        weight codes, int32 biases, float32 weight scales, per-channel multipliers and shifts
        -- int32 each -- or float32 multipliers, output scale and zero point) plus the input
        scale (float32) and zero point (int32): 8 bytes."""
        return 8 + sum(layer.stored_bytes() for layer in self.layers)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return (f"IntegerModel(input=({self.input_scale:.4g}, {self.input_zero_point}), {self.stored_bytes()} "
                f"bytes,\n{inner}\n)")


# ----------------------------------------------------------------------------- convert
_SUPPORTED = "Linear, Conv2d, ReLU, Flatten, MaxPool2d, Dropout"


def _flat_layers(model: Sequential, prefix: str = "model") -> list[tuple[str, Module]]:
    out = []
    for i, layer in enumerate(model):
        name = f"{prefix}[{i}]"
        if isinstance(layer, Sequential):
            out += _flat_layers(layer, name)
        else:
            out.append((name, layer))
    return out


def _check_layers(layers: list) -> None:
    for name, layer in layers:
        if isinstance(layer, _BatchNorm):
            raise ValueError(f"{name} is a {type(layer).__name__}: fold it into the layer before it first "
                             f"(model = nnopt_lab.compression.trimming.fold_batchnorms(model)), then convert")
    bad = [f"{name} ({type(layer).__name__})" for name, layer in layers
           if not isinstance(layer, (Linear, Conv2d, ReLU, Flatten, MaxPool2d, Dropout))]
    if bad:
        raise ValueError(f"model holds layers with no integer version: {', '.join(bad)}; supported: {_SUPPORTED}")
    if not any(isinstance(layer, (Linear, Conv2d)) for _, layer in layers):
        raise ValueError("model must hold at least one Linear or Conv2d")


def _plan(layers: list) -> list[tuple[str, Module, bool]]:
    """(name, layer, fused ReLU) for every layer kept: Dropout dropped, a ReLU after Linear/Conv2d fused."""
    plan, skip = [], set()
    for i, (name, layer) in enumerate(layers):
        if i in skip or isinstance(layer, Dropout):
            continue
        fused = (isinstance(layer, (Linear, Conv2d)) and i + 1 < len(layers) and isinstance(layers[i + 1][1], ReLU))
        if fused:
            skip.add(i + 1)
        plan.append((name, layer, fused))
    return plan


def _observer_options(options: Any) -> dict:
    """``observer_options`` checked: None or a mapping with str keys, without bits / symmetric."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"observer_options must be a dict of the observer's options or None, got "
                        f"{type(options).__name__}")
    bad = [key for key in options if not isinstance(key, str)]
    if bad:
        raise TypeError(f"observer_options must have str keys (option names), got {bad[0]!r}")
    fixed = [key for key in ("bits", "symmetric") if key in options]
    if fixed:
        raise ValueError(f"observer_options must not set {fixed[0]!r}: convert's activations are 8-bit affine "
                         f"(bits=8, symmetric=False)")
    return dict(options)


def _observer_maker(observer: str, options: dict) -> Any:
    """A function making one observer; made once here, so that a bad option fails before calibrating."""
    def make():
        return calibration.make_observer(observer, bits=8, symmetric=False, **options)
    try:
        make()
    except (TypeError, ValueError) as error:
        raise type(error)(f"observer_options {options} for observer {observer!r}: {error}") from None
    return make


def convert(model: Sequential, calibration_x: Any, *, per_channel: bool = True, observer: str = "minmax",
            requantization: str = "fixed", batch_size: int = 256,
            observer_options: dict | None = None) -> IntegerModel:
    r"""Post-training int8 quantization of a float model into an :class:`IntegerModel`.

    1. Activation ranges: the float model (in eval mode) runs on ``calibration_x`` in batches;
       an observer (:func:`nnopt_lab.inference.calibration.make_observer`, 8 bits, affine)
       watches the input and the output of every Linear/Conv2d (after its ReLU when one
       follows: the ReLU is fused). Max pooling, Flatten and ReLU keep the scale; Dropout is
       the identity.
    2. Weights: int8 symmetric (:func:`~nnopt_lab.compression.quantization.quantize_weight`,
       codes in [-127, 127], zero point 0) per tensor or per output channel; biases int32 at
       :math:`S_w S_x` (:func:`quantize_bias`).

    Error bound (tested). Let :math:`x` be a layer's real input in the float model and
    :math:`\hat x` the dequantized integer one, :math:`|\hat x_k - x_k| \le \varepsilon_k`
    (at the model input, inside the calibrated range: :math:`\varepsilon = S_0/2`). With
    :math:`\hat W = S_w W_q` (:math:`|\hat W_{jk} - W_{jk}| \le S_{w,j}/2`) and
    :math:`|\hat b_j - b_j| \le S_{w,j} S_x / 2`, from
    :math:`\hat W\hat x - W x = \hat W(\hat x - x) + (\hat W - W) x`, the output error is

    .. math::

        |\hat y_j - y_j| \le \sum_k |\hat W_{jk}|\, \varepsilon_k
        + \frac{S_{w,j}}{2} \sum_k |x_k| + \frac{S_{w,j} S_x}{2} + S_y

    where :math:`S_y` (one output step) covers the requantization rounding (:math:`S_y/2`)
    and the fixed-point or float32 multiplier's own roundings, as long as :math:`y` lies in
    the calibrated output range (no clipping: true on the calibration data with min-max
    ranges). ReLU and max pooling are 1-Lipschitz, so the bound passes through them
    elementwise (pooling: the max of the bounds in the window); it is applied layer by
    layer up to the logits.

    Parameters
    ----------
    model : Sequential
        Of Linear, Conv2d, ReLU, Flatten, MaxPool2d, Dropout (nested Sequentials are
        flattened). On any backend; not changed (its train/eval modes are restored).
    calibration_x : float array (N, ...), N >= 1
        Inputs for the activation ranges; moved to the model's backend.
    per_channel : bool
        One weight scale per output channel (else one per tensor).
    observer : str
        A method of :data:`nnopt_lab.inference.calibration.OBSERVERS` ("minmax", ...).
    requantization : {"fixed", "float"}
    batch_size : int >= 1
        Calibration batch size.
    observer_options : mapping of str -> value, or None
        The method's own options, given to every observer through
        :func:`~nnopt_lab.inference.calibration.make_observer` (e.g. ``{"quantized_bins": 256}``
        for ``"entropy"`` on ReLU outputs, ``{"percentile": 99.9}``); not ``bits`` or
        ``symmetric`` (activations are 8-bit affine).

    Returns
    -------
    IntegerModel
        On the model's backend; its outputs are in the model's float dtype.

    Raises
    ------
    ValueError
        A BatchNorm layer (fold it first with
        :func:`nnopt_lab.compression.trimming.fold_batchnorms`), a layer with no integer
        version (named), an empty calibration set, or an accumulator that could overflow
        int32 (named with the layer).

    See: chapters/05_3_quantization.ipynb
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Sequential, got {type(model).__name__}")
    per_channel = check_bool("per_channel", per_channel)
    if hasattr(observer, "shape"):
        raise TypeError(f"observer must be one of {tuple(calibration.OBSERVERS)}, got {type(observer).__name__}")
    observer = check_choice("observer", observer, tuple(calibration.OBSERVERS))
    requantization = check_choice("requantization", requantization, REQUANTIZATIONS)
    batch_size = check_int("batch_size", batch_size, 1)
    options = _observer_options(observer_options)
    make = _observer_maker(observer, options)
    layers = _flat_layers(model)
    _check_layers(layers)
    params = model.parameters()
    backend = B.backend_of(params[0].data)
    xp = Q._float_array("calibration_x", calibration_x)
    if calibration_x.ndim < 2 or 0 in tuple(calibration_x.shape):
        raise ValueError(f"calibration_x must be (N, ...) with at least one sample and no empty axis, got shape "
                         f"{tuple(calibration_x.shape)}")
    Q._as_float32("calibration_x", calibration_x)                  # no NaN, no inf: every value has a code
    plan = _plan(layers)
    # observers: [0] the input, then one after every Linear/Conv2d (and its fused ReLU)
    observers = [make()] + [make() for _, layer, _ in plan if isinstance(layer, (Linear, Conv2d))]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for start in range(0, calibration_x.shape[0], batch_size):
            x = B.to_backend(calibration_x[start:start + batch_size], backend)
            observers[0](x)
            k = 1
            for name, layer, fused in plan:
                try:
                    x = layer.forward(x)
                except (TypeError, ValueError) as error:
                    raise ValueError(f"calibration_x does not fit the model at {name}: {error}") from None
                if fused:
                    x = F.relu_forward(x)[0]
                if isinstance(layer, (Linear, Conv2d)):
                    observers[k](x)
                    k += 1
    finally:
        for m, mode in modes:
            m.training = mode
    qparams = [obs.calculate_qparams() for obs in observers]
    scale, zero_point = (float(v) for v in qparams[0])
    input_qparams = (scale, int(zero_point))
    out, k = [], 1
    for name, layer, fused in plan:
        if isinstance(layer, (Linear, Conv2d)):
            sy, zy = float(qparams[k][0]), int(qparams[k][1])
            k += 1
            cls = IntegerLinear if isinstance(layer, Linear) else IntegerConv2d
            try:
                out.append(cls.from_float(layer, scale, int(zero_point), sy, zy, per_channel=per_channel,
                                          relu=fused, requantization=requantization))
            except ValueError as error:
                raise ValueError(f"{name} ({type(layer).__name__}): {error}") from None
            scale, zero_point = sy, zy
        elif isinstance(layer, ReLU):
            out.append(IntegerReLU(int(zero_point)))
        elif isinstance(layer, Flatten):
            out.append(IntegerFlatten())
        elif isinstance(layer, MaxPool2d):
            out.append(IntegerMaxPool2d(layer.kernel_size, layer.stride))
    return IntegerModel(out, input_qparams[0], input_qparams[1], dtype=backend.dtype)
