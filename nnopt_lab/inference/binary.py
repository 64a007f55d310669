r"""Binary and ternary networks: 1- and 2-bit weights, ±1 activations and the bit-count dot product.

Built on the ONE quantization module: binary weights are
:func:`nnopt_lab.compression.quantization.binarize_weight` (:math:`\alpha\,\operatorname{sign}(W)`,
XNOR-Net's BWN), and ternary weights are returned as its
:class:`~nnopt_lab.compression.quantization.QuantizedWeight` records. This module adds:

* :func:`ternarize_weight` -- ternary weights :math:`\alpha\,\{-1, 0, +1\}` with the threshold
  :math:`\Delta = 0.7\,\operatorname{mean}|W|` of TWN (Li, Zhang & Liu 2016);
* :func:`two_level` -- the seed's "asymmetric binarization" (非对称二值化), read as two-level
  quantization: every weight becomes one of two levels :math:`\{a, b\}`, not :math:`\pm\alpha`,
  with the threshold and levels that minimise the L2 error (exact 1-D 2-means);
* :func:`binarize_activations` -- :math:`\operatorname{sign}(x)` with sign(0) = +1;
* :func:`pack_signs`, :func:`popcount`, :func:`xnor_dot` -- ±1 vectors as bits, 8 to a byte, and
  their dot product by XNOR and bit count:
  :math:`\langle a, b\rangle = n - 2\,\operatorname{popcount}(a \oplus b)`;
* :func:`xnor_linear` -- an XNOR-Net Linear layer, :math:`\beta\,\alpha\,(\operatorname{sign}x\cdot
  \operatorname{sign}W^\top)` computed with the bit count.

Seed: §2.4.3 / §3.4.3.2 (二进制化: binarization of weights and activations).
See: chapters/05_3_quantization.ipynb
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import backend as B
from ..compression import quantization as Q
from ..compression.quantization import SCALE_EPS, QuantizedWeight, binarize_weight
from ..validation import check_bool, check_int, check_number

__all__ = ["ternarize_weight", "TwoLevelWeight", "two_level", "binarize_activations", "pack_signs", "popcount",
           "xnor_dot", "xnor_linear"]

_FLOAT32_MAX = 2.0 ** 128 - 2.0 ** 104


def _float_array(name: str, x: Any, *, nonempty: bool = True) -> Any:
    """The namespace of ``x``: a float numpy array / torch tensor, finite, with entries (``nonempty``)."""
    xp = Q._float_array(name, x)                    # the quantizer's check: a float numpy array / torch tensor
    if nonempty and math.prod(tuple(x.shape)) == 0:
        raise ValueError(f"{name} must have at least one entry, got shape {tuple(x.shape)}")
    bad = ~(xp.abs(xp.astype(x, xp.float64)) <= _FLOAT32_MAX)                 # NaN and inf are bad
    count = int(B.float_of(xp.sum(xp.astype(bad, xp.int64))))
    if count:
        raise ValueError(f"{name} must hold finite float32 numbers (no NaN or inf), got {count} entries that are not")
    return xp


def _channels(name: str, w: Any, per_channel: Any, axis: Any) -> tuple[Any, int | None]:
    """``w`` as a (C, M) float64 matrix (C = 1 per tensor) and the channel axis (None per tensor)."""
    xp = _float_array(name, w)
    per_channel = check_bool("per_channel", per_channel)
    ndim = len(w.shape)
    if not per_channel:
        return xp.reshape(xp.astype(w, xp.float64), (1, -1)), None
    if ndim == 0:
        raise ValueError(f"{name} must have at least one axis for per_channel=True, got a 0-d array")
    axis = check_int("axis", axis, -ndim, ndim - 1) % ndim
    moved = xp.moveaxis(xp.astype(w, xp.float64), axis, 0)
    return xp.reshape(moved, (w.shape[axis], -1)), axis


def _unchannel(m: Any, w: Any, axis: int | None) -> Any:
    """The (C, M) matrix ``m`` back in ``w``'s shape (inverse of :func:`_channels`)."""
    xp = B.namespace(m)
    if axis is None:
        return xp.reshape(m, tuple(w.shape))
    moved = tuple(w.shape[axis:axis + 1]) + tuple(s for d, s in enumerate(w.shape) if d != axis)
    return xp.moveaxis(xp.reshape(m, moved), 0, axis)


# ----------------------------------------------------------------------------- ternary (TWN)
def ternarize_weight(w: Any, threshold_factor: float = 0.7, per_channel: bool = True,
                     axis: int = 0) -> QuantizedWeight:
    r"""Ternary weight :math:`\hat W = \alpha\,t`, :math:`t \in \{-1, 0, +1\}`: Ternary Weight Networks.

    .. math::

        \Delta = f\cdot\frac{1}{n}\sum_i |W_i|,\qquad
        t_i = \operatorname{sign}(W_i)\,[\,|W_i| > \Delta\,],\qquad
        \alpha = \frac{\sum_i |W_i|\,[\,|W_i| > \Delta\,]}{\sum_i [\,|W_i| > \Delta\,]}

    with :math:`f = 0.7` (Li, Zhang & Liu 2016, eq. 6 and 5: for a fixed support the L2-optimal
    :math:`\alpha` is the mean magnitude on it, and :math:`0.7\,E|W|` approximates the optimal
    threshold for Gaussian or uniform weights). Per channel: one :math:`(\Delta, \alpha)` per
    entry of ``axis`` (0 = output channels), the means over the other axes. Computed in
    float64, :math:`\alpha` stored as float32. A channel of zeros has no weight above
    :math:`\Delta`: its codes are all 0 and its :math:`\alpha` is set to
    :data:`~nnopt_lab.compression.quantization.SCALE_EPS` (any positive scale gives 0).

    Parameters
    ----------
    w : float array, any shape, finite (e.g. Linear (out, in), Conv2d (Cout, Cin, kh, kw))
    threshold_factor : float in [0, 1)
        f; 0 keeps every non-zero weight (binary on the support).
    per_channel : bool
    axis : int, the channel axis when ``per_channel``

    Returns
    -------
    QuantizedWeight
        ``scheme="ternary"``, ``bits=2``, codes int8 in {-1, 0, 1} of ``w``'s shape, ``scale``
        α (a float, or float32 (C,) per channel), zero point 0; ``.dequantize()`` is
        :math:`\alpha\,t` in ``w``'s dtype and backend.

    Seed: §3.4.3.2 (二进制化; ternary, 三值).
    See: chapters/05_3_quantization.ipynb
    """
    factor = check_number("threshold_factor", threshold_factor, 0.0, 1.0, high_open=True)
    m, axis = _channels("w", w, per_channel, axis)
    xp = B.namespace(m)
    magnitude = xp.abs(m)
    delta = factor * xp.mean(magnitude, axis=1, keepdims=True)
    support = xp.astype(magnitude > delta, xp.float64)
    count = xp.sum(support, axis=1)
    alpha = xp.sum(magnitude * support, axis=1) / xp.where(count > 0, count, 1.0)
    alpha = xp.where(count > 0, alpha, SCALE_EPS)
    signs = xp.astype(m > 0, xp.int8) - xp.astype(m < 0, xp.int8)
    codes = _unchannel(signs * xp.astype(support, xp.int8), w, axis)
    if axis is None:
        scale, zero_point = B.float_of(xp.astype(alpha, xp.float32)[0]), 0
    else:
        scale = xp.astype(alpha, xp.float32)
        zero_point = xp.zeros_like(scale, dtype=xp.int32)
    return QuantizedWeight(codes, scale, zero_point, 2, "ternary", axis, tuple(w.shape), B.dtype_name(w))


# ----------------------------------------------------------------------------- two levels {a, b}
@dataclass(frozen=True, eq=False)
class TwoLevelWeight:
    r"""A weight stored as one bit per entry and two levels per channel: :math:`\hat w = b` where c = 1, else a.

    Attributes
    ----------
    codes : uint8 array of the weight's shape, 0 (level a) or 1 (level b)
    low, high : float (per tensor) or float64 arrays (C,) (per channel): the levels a <= b
    threshold : float or float64 (C,): (a + b)/2; entries above it take level b
    axis : int or None, the channel axis (None: per tensor)
    shape : tuple of int
    dtype : {"float32", "float64"}, of the weight
    error : float, the squared L2 error :math:`\lVert w - \hat w\rVert^2` (float64)

    See: chapters/05_3_quantization.ipynb
    """

    codes: Any
    low: Any
    high: Any
    threshold: Any
    axis: int | None
    shape: tuple
    dtype: str
    error: float

    def dequantize(self) -> Any:
        """Level b where the code is 1, a where it is 0, in the weight's dtype, shape and backend."""
        xp = B.namespace(self.codes)
        high = self.codes == 1
        if self.axis is None:
            level = xp.asarray([self.low, self.high], dtype=xp.float64, device=B.device(self.codes))
            out = xp.where(high, level[1], level[0])
        else:
            shape = tuple(self.shape[self.axis] if d == self.axis else 1 for d in range(len(self.shape)))
            out = xp.where(high, xp.reshape(self.high, shape), xp.reshape(self.low, shape))
        return xp.astype(out, getattr(xp, self.dtype))

    def __repr__(self) -> str:
        where = "per tensor" if self.axis is None else f"per channel (axis {self.axis})"
        return f"TwoLevelWeight({where}, shape={self.shape}, squared error {self.error:.4g})"


def two_level(w: Any, per_channel: bool = False, axis: int = 0) -> TwoLevelWeight:
    r"""Two-level ("asymmetric binary") quantization :math:`w \mapsto \{a, b\}` with the smallest L2 error.

    The seed's "asymmetric binarization" (非对称二值化) is read here as quantization to two
    arbitrary levels :math:`a \le b` (not :math:`\pm\alpha`, which is symmetric about 0): the
    threshold :math:`\tau` and the levels minimising

    .. math::

        \sum_{w_i \le \tau} (w_i - a)^2 + \sum_{w_i > \tau} (w_i - b)^2 ,

    i.e. exact 1-D 2-means. For a split of the sorted weights after the k-th, the optimal
    levels are the two means, and the error is :math:`\sum w^2 - k\,a_k^2 - (n-k)\,b_k^2`;
    every split is tried at once with cumulative sums (after a sort, :math:`O(n \log n)`), in
    float64. The codes are then nearest-level (:math:`\tau = (a + b)/2`), which the optimal
    split satisfies. With one distinct value, :math:`a = b` = that value.

    Parameters
    ----------
    w : float array, any shape, finite
    per_channel : bool
        One (a, b) per entry of ``axis`` instead of one pair for the tensor.
    axis : int

    Returns
    -------
    TwoLevelWeight
        ``codes`` (uint8 0/1), ``low`` a, ``high`` b, ``threshold``, ``error``; ``.dequantize()``.

    Seed: §3.4.3.2 (二进制化, "非对称" binarization), read as {a, b} two-level quantization.
    See: chapters/05_3_quantization.ipynb
    """
    m, axis = _channels("w", w, per_channel, axis)
    xp = B.namespace(m)
    n = m.shape[1]
    ordered = xp.sort(m, axis=1)
    total = xp.sum(m * m, axis=1)
    if n == 1:
        low = high = ordered[:, 0]
        error = xp.zeros_like(low)
    else:
        csum = xp.cumulative_sum(ordered, axis=1)[:, :-1]                       # sums of the k smallest, k = 1..n-1
        k = xp.astype(xp.arange(1, n, device=B.device(m)), xp.float64)[None, :]
        whole = xp.sum(m, axis=1, keepdims=True)
        a, b = csum / k, (whole - csum) / (n - k)
        errors = total[:, None] - k * a ** 2 - (n - k) * b ** 2
        best = xp.argmin(errors, axis=1)
        rows = xp.arange(m.shape[0], device=B.device(m))
        low, high = a[rows, best], b[rows, best]
        error = xp.clip(errors[rows, best], 0.0, None)
    threshold = (low + high) / 2
    codes = _unchannel(xp.astype(m > threshold[:, None], xp.uint8), w, axis)
    exact = xp.sum((m - xp.where(m > threshold[:, None], high[:, None], low[:, None])) ** 2)
    if axis is None:
        low, high, threshold = B.float_of(low[0]), B.float_of(high[0]), B.float_of(threshold[0])
    return TwoLevelWeight(codes, low, high, threshold, axis, tuple(w.shape), B.dtype_name(w), B.float_of(exact))


# ----------------------------------------------------------------------------- ±1 activations and bits
def binarize_activations(x: Any) -> Any:
    r""":math:`\operatorname{sign}(x)` with sign(0) = +1: the ±1 activations of XNOR-Net / BNN.

    Parameters
    ----------
    x : float array, any shape, no NaN

    Returns
    -------
    float array of ``x``'s shape, dtype and backend, entries -1.0 or +1.0
    (``torch.sign`` would give 0 at 0: one bit has no third value).

    Seed: §3.4.3.2 (二进制化 of activations).
    See: chapters/05_3_quantization.ipynb
    """
    xp = _float_array("x", x, nonempty=False)
    return xp.astype(x >= 0, x.dtype) * 2 - 1


def pack_signs(x: Any) -> Any:
    r"""The signs of ``x`` along its last axis as bits, 8 to a byte: 1 for :math:`x \ge 0` (+1), 0 for -1.

    Entry j of a row goes to bit :math:`j \bmod 8` (least significant first) of byte
    :math:`\lfloor j/8 \rfloor`; the last byte is padded with 0 bits.

    Parameters
    ----------
    x : float array (..., n), n >= 1, no NaN (e.g. ±1 values, or any reals: their signs)

    Returns
    -------
    uint8 array (..., ceil(n/8)) on ``x``'s backend

    See: chapters/05_3_quantization.ipynb
    """
    xp = _float_array("x", x)
    if len(x.shape) == 0:
        raise ValueError("x must have at least one axis (the bits are packed along the last), got a 0-d array")
    n = x.shape[-1]
    words = -(-n // 8)
    bits = xp.astype(x >= 0, xp.int64)
    pad = words * 8 - n
    if pad:
        bits = xp.concat([bits, xp.zeros(tuple(x.shape[:-1]) + (pad,), dtype=xp.int64, device=B.device(x))], axis=-1)
    bits = xp.reshape(bits, tuple(x.shape[:-1]) + (words, 8))
    weights = xp.asarray([1, 2, 4, 8, 16, 32, 64, 128], dtype=xp.int64, device=B.device(x))
    return xp.astype(xp.sum(bits * weights, axis=-1), xp.uint8)


def _check_words(name: str, words: Any) -> Any:
    try:
        xp = B.namespace(words)
    except TypeError:
        raise TypeError(f"{name} must be a uint8 numpy array or torch tensor, got {type(words).__name__}") from None
    if B.dtype_name(words) != "uint8":
        raise TypeError(f"{name} must be an array of uint8 words (from pack_signs), got dtype {B.dtype_name(words)}")
    return xp


def popcount(words: Any) -> Any:
    r"""The number of 1 bits of each uint8 word, by the SWAR bit trick (no table, no loop over bits).

    .. math::

        v \leftarrow v - ((v \gg 1)\,\&\,\mathtt{0x55});\quad
        v \leftarrow (v\,\&\,\mathtt{0x33}) + ((v \gg 2)\,\&\,\mathtt{0x33});\quad
        v \leftarrow (v + (v \gg 4))\,\&\,\mathtt{0x0F}

    (pairs, then nibbles, then the byte: each step adds neighbouring bit counts in place).

    Parameters
    ----------
    words : uint8 array, any shape

    Returns
    -------
    uint8 array of the same shape, entries in [0, 8]

    See: chapters/05_3_quantization.ipynb
    """
    xp = _check_words("words", words)
    v = words - ((words >> 1) & 0x55)
    v = (v & 0x33) + ((v >> 2) & 0x33)
    return xp.astype((v + (v >> 4)) & 0x0F, xp.uint8)


def xnor_dot(a_packed: Any, b_packed: Any, n: int) -> Any:
    r"""Dot products of ±1 vectors from their packed signs, by XNOR and bit count.

    .. math::

        \langle a, b\rangle = n - 2\,\mathrm{popcount}(a \oplus b)

    Equal signs (XNOR = 1) add +1, different ones (XOR = 1) add -1, so the dot product is
    :math:`n - 2` × (number of differing bits); the padding bits are 0 in both and differ nowhere.
    This is the XNOR-Net / BNN kernel: 64 multiply-adds become one XOR and one bit count.

    Parameters
    ----------
    a_packed, b_packed : uint8 arrays (..., W), broadcastable, from :func:`pack_signs`
    n : int, the length of the vectors, :math:`8(W - 1) < n \le 8W`

    Returns
    -------
    int64 array of the broadcast leading shape: exact integers in [-n, n]

    See: chapters/05_3_quantization.ipynb
    """
    xp = _check_words("a_packed", a_packed)
    _check_words("b_packed", b_packed)
    if not B.same_kind(a_packed, b_packed):
        raise TypeError(f"a_packed and b_packed must be on one backend and device, got {type(a_packed).__name__} "
                        f"on {B.device_of(a_packed)} and b_packed {type(b_packed).__name__} on {B.device_of(b_packed)}")
    if len(a_packed.shape) == 0 or len(b_packed.shape) == 0:
        raise ValueError("a_packed and b_packed must have at least one axis (the words)")
    words = a_packed.shape[-1]
    if b_packed.shape[-1] != words:
        raise ValueError(f"a_packed and b_packed must have the same number of words on their last axis, got "
                         f"{a_packed.shape[-1]} and {b_packed.shape[-1]}")
    n = check_int("n", n, max(1, 8 * words - 7), 8 * words)
    differ = popcount(a_packed ^ b_packed)
    return n - 2 * xp.sum(xp.astype(differ, xp.int64), axis=-1)


def xnor_linear(x: Any, w: Any, bias: Any = None) -> Any:
    r"""XNOR-Net Linear layer: both operands binarised, the product by bit count, then rescaled.

    .. math::

        y_{nm} = \beta_n\,\alpha_m\,\big\langle \operatorname{sign} x_n,\, \operatorname{sign} W_m \big\rangle
        + b_m,\qquad \beta_n = \tfrac{1}{K}\sum_k |x_{nk}|,\quad \alpha_m = \tfrac{1}{K}\sum_k |W_{mk}|

    (Rastegari et al. 2016, §3.2: :math:`x^\top W \approx \beta\alpha\,\operatorname{sign}(x)^\top
    \operatorname{sign}(W)`), sign(0) = +1. :math:`\alpha` and the signs of W are
    :func:`~nnopt_lab.compression.quantization.binarize_weight` per output channel; the ±1 dot
    products are :func:`xnor_dot` of :func:`pack_signs` (exact integers).

    Parameters
    ----------
    x : float array (N, K), finite
    w : float array (M, K), finite (torch's Linear layout)
    bias : float array (M,) or None

    Returns
    -------
    float array (N, M), ``x``'s dtype and backend

    Seed: §3.4.3.2 (二进制化: binary weights and activations, XNOR).
    See: chapters/05_3_quantization.ipynb
    """
    xp = _float_array("x", x)
    _float_array("w", w)
    if len(x.shape) != 2 or len(w.shape) != 2:
        raise ValueError(f"x must be (N, K) and w (M, K), got shapes {tuple(x.shape)} and {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same K (x is (N, K), w is (M, K)), got shapes {tuple(x.shape)} and "
                         f"{tuple(w.shape)}")
    w = B.asarray(w, x)
    record = binarize_weight(w, per_channel=True, axis=0)
    alpha = xp.astype(record.scale, xp.float64)
    beta = xp.mean(xp.abs(xp.astype(x, xp.float64)), axis=1)
    k = x.shape[1]
    dots = xnor_dot(pack_signs(x)[:, None, :], pack_signs(xp.astype(record.codes, x.dtype))[None, :, :], k)
    out = beta[:, None] * alpha[None, :] * xp.astype(dots, xp.float64)
    if bias is not None:
        _float_array("bias", bias)
        if tuple(bias.shape) != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},) (one per output), got {tuple(bias.shape)}")
        out = out + xp.astype(B.asarray(bias, x), xp.float64)[None, :]
    return xp.astype(out, x.dtype)
