r"""Calibration: the clipping range of an activation, chosen from a few batches by an *observer*.

Post-training quantization (PTQ) of activations needs a range :math:`[x_{\min}, x_{\max}]`
for every tensor before the model runs on integers. An observer watches calibration batches
(``observer(x)`` returns ``x`` unchanged, as torch's observers do inside a model), keeps a
small summary (a min and a max, or a histogram), and then gives the range it chose
(:meth:`Observer.range`) and the scale and zero point of that range
(:meth:`Observer.calculate_qparams`), computed by THE ONE quantizer,
:func:`nnopt_lab.compression.quantization.qparams` / ``qparams_per_channel``.

The observers, by how they choose the range (seed §3.4.3.1, "整数化", calibration 校准):

* :class:`MinMaxObserver` -- the smallest and largest value seen (``torch.ao.quantization.MinMaxObserver``);
* :class:`MovingAverageMinMaxObserver` -- an exponential moving average of each batch's min and
  max (``MovingAverageMinMaxObserver``);
* :class:`PerChannelMinMaxObserver` -- one min and max per channel (``PerChannelMinMaxObserver``);
* :class:`PercentileObserver` -- cut the tails: the ``percentile`` of a histogram
  (onnxruntime's ``HistogramCollector('percentile')``);
* :class:`MSEObserver` -- the range whose quantization error :math:`E(x - \hat x)^2` is
  smallest (estimated on a histogram, as torch's ``HistogramObserver`` does by its own search);
* :class:`EntropyObserver` -- the range whose quantized histogram is closest to the real one in
  KL divergence (TensorRT's entropy calibration, as onnxruntime's ``HistogramCollector('entropy')``).

:data:`OBSERVERS` maps method names to the classes; :func:`make_observer` builds one by name.

Outliers are what separates them: one large activation stretches the min-max range, and with
255 levels over a wide range every ordinary value loses resolution; clipping it (percentile,
MSE, entropy) trades a large error on a few values for a smaller one on all the others.

See: chapters/05_3_quantization.ipynb
"""
from __future__ import annotations

import math
import struct
from typing import Any

from .. import backend as B
from ..compression.quantization import MAX_BITS, integer_range, qparams, qparams_per_channel
from ..validation import check_bool, check_choice, check_int, check_number

__all__ = ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
           "OBSERVERS", "make_observer"]

_FLOAT32_MAX = 2.0 ** 128 - 2.0 ** 104          # the largest float32


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (float32 arithmetic emulated on Python floats).

    One float32 operation (+, -, *) on float32 operands, done in float64 and rounded once to
    float32, gives the float32 result exactly (float64 has more than 2·24 + 2 bits).
    """
    return struct.unpack("f", struct.pack("f", value))[0]


def _batch(x: Any) -> Any:
    """``x`` checked as a calibration batch: a float array with entries, all finite float32 numbers."""
    try:
        xp = B.namespace(x)
    except TypeError:
        raise TypeError(f"x must be a numpy array or a torch tensor, got {type(x).__name__}") from None
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a floating-point array, got dtype {B.dtype_name(x)}")
    if math.prod(tuple(x.shape)) == 0:
        raise ValueError(f"x must have at least one entry (an empty batch calibrates nothing), got shape "
                         f"{tuple(x.shape)}")
    big = xp.abs(xp.astype(x, xp.float64))
    bad = ~(big <= _FLOAT32_MAX)                                  # NaN and inf are bad
    count = int(B.float_of(xp.sum(xp.astype(bad, xp.int64))))
    if count:
        nans = int(B.float_of(xp.sum(xp.astype(xp.isnan(x), xp.int64))))
        what = f"{nans} NaN" if nans else "values beyond the float32 range (inf)"
        raise ValueError(f"x must hold finite float32 numbers (a NaN or inf has no code), got {what} in "
                         f"{count} entries")
    return x


class Observer:
    r"""Base of the observers: watch batches, then give a clipping range and its (scale, zero point).

    ``observer(x)`` records one batch and returns ``x`` unchanged; :meth:`range` is the range
    chosen so far; :meth:`calculate_qparams` its scale :math:`\Delta` and zero point :math:`z`
    from :func:`nnopt_lab.compression.quantization.qparams` (the range widened to contain 0);
    :meth:`reset` forgets every batch.

    Parameters
    ----------
    bits : int in [1, 16] (symmetric: [2, 16])
        Width of the codes, :func:`~nnopt_lab.compression.quantization.integer_range`.
    symmetric : bool
        False: affine, unsigned codes :math:`[0, 2^b - 1]` (torch ``quint8``, ``per_tensor_affine``);
        True: signed codes :math:`[-(2^{b-1}-1), 2^{b-1}-1]`, zero point 0 (torch ``qint8``,
        ``per_tensor_symmetric`` with ``quant_min=-127``).

    Raises
    ------
    ValueError
        :meth:`range` / :meth:`calculate_qparams` before any batch ("calibrate on at least one
        batch first"); a batch that is empty or holds NaN or inf.

    Seed: §3.4.3.1 (整数化: the range of the activations).
    See: chapters/05_3_quantization.ipynb
    """

    method = "base"

    def __init__(self, bits: int = 8, symmetric: bool = False):
        self.bits = check_int("bits", bits, 1, MAX_BITS)
        self.symmetric = check_bool("symmetric", symmetric)
        self.qmin, self.qmax = integer_range(self.bits, self.symmetric)
        self.batches = 0
        self.reset()

    # -- what subclasses define
    def _reset(self) -> None:
        raise NotImplementedError

    def _observe(self, x: Any) -> None:
        raise NotImplementedError

    def _range(self) -> tuple[Any, Any]:
        raise NotImplementedError

    # -- the interface
    def reset(self) -> Observer:
        """Forget every batch seen (returns the observer)."""
        self.batches = 0
        self._reset()
        return self

    def __call__(self, x: Any) -> Any:
        """Observe one batch ``x`` (a float array, any shape, finite) and return it unchanged."""
        self._observe(_batch(x))
        self.batches += 1
        return x

    forward = __call__

    def _check_calibrated(self) -> None:
        if not self.batches:
            raise ValueError(f"{type(self).__name__} has seen no batch: calibrate on at least one batch first "
                             f"(call the observer on calibration data)")

    def range(self) -> tuple[Any, Any]:
        r"""The clipping range :math:`(x_{\min}, x_{\max})` chosen from the batches seen (Python floats,
        float32 numbers; per channel: float32 arrays of shape (C,)). Not yet widened to contain 0."""
        self._check_calibrated()
        return self._range()

    def calculate_qparams(self) -> tuple[Any, Any]:
        r"""(scale, zero_point) of :meth:`range`: ``qparams(lo, hi, bits, symmetric)`` (float, int)."""
        lo, hi = self.range()
        return qparams(lo, hi, self.bits, self.symmetric)

    def __repr__(self) -> str:
        scheme = "symmetric" if self.symmetric else "affine"
        return f"{type(self).__name__}(bits={self.bits}, {scheme}, batches={self.batches})"


# ----------------------------------------------------------------------------- min-max family
class MinMaxObserver(Observer):
    r"""The range of every value seen: :math:`x_{\min} = \min_t \min x_t`, :math:`x_{\max} = \max_t \max x_t`.

    ``torch.ao.quantization.MinMaxObserver``: the running min and max, kept in float32. Its
    (scale, zero point) equal torch's bit for bit (``quint8`` affine, and ``qint8``
    ``per_tensor_symmetric`` with ``quant_min=-127, quant_max=127``), over any number of batches.
    Every value is inside the range, so nothing is clipped; one outlier widens it for all.

    Parameters
    ----------
    bits, symmetric : see :class:`Observer`

    Seed: §3.4.3.1 (整数化, calibration by min-max).
    See: chapters/05_3_quantization.ipynb
    """

    method = "minmax"

    def _reset(self) -> None:
        self.min_val, self.max_val = math.inf, -math.inf

    def _batch_minmax(self, x: Any) -> tuple[float, float]:
        xp = B.namespace(x)
        return _float32(B.float_of(xp.min(x))), _float32(B.float_of(xp.max(x)))

    def _observe(self, x: Any) -> None:
        lo, hi = self._batch_minmax(x)
        self.min_val, self.max_val = min(self.min_val, lo), max(self.max_val, hi)

    def _range(self) -> tuple[float, float]:
        return self.min_val, self.max_val


class MovingAverageMinMaxObserver(MinMaxObserver):
    r"""An exponential moving average of each batch's min and max.

    .. math::

        m_1 = \min x_1, \qquad m_t = m_{t-1} + c\,(\min x_t - m_{t-1})

    (the same for the max), :math:`c` = ``averaging_constant``, every operation in float32 as
    ``torch.ao.quantization.MovingAverageMinMaxObserver`` does: its (scale, zero point) are
    equal bit for bit. A rare wide batch moves the range only by :math:`c` of the way, so
    values of later batches may fall outside it (they are clipped).

    Parameters
    ----------
    averaging_constant : float in (0, 1]
        1 keeps only the last batch's range.
    bits, symmetric : see :class:`Observer`

    Seed: §3.4.3.1 (整数化, calibration).
    See: chapters/05_3_quantization.ipynb
    """

    method = "moving_average"

    def __init__(self, averaging_constant: float = 0.01, bits: int = 8, symmetric: bool = False):
        self.averaging_constant = check_number("averaging_constant", averaging_constant, 0.0, 1.0, low_open=True)
        super().__init__(bits, symmetric)

    def _observe(self, x: Any) -> None:
        lo, hi = self._batch_minmax(x)
        if not self.batches:
            self.min_val, self.max_val = lo, hi
            return
        c = _float32(self.averaging_constant)
        self.min_val = _float32(self.min_val + _float32(c * _float32(lo - self.min_val)))
        self.max_val = _float32(self.max_val + _float32(c * _float32(hi - self.max_val)))


class PerChannelMinMaxObserver(Observer):
    r"""One range per channel: the min and max over every axis but ``axis``, over all batches.

    ``torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=axis)``; (scales, zero points)
    equal torch's bit for bit (``per_channel_affine`` quint8, ``per_channel_symmetric`` qint8
    with ``quant_min=-127``). Used for weights (axis 0, output channels) and for activations
    whose channels differ in scale.

    Parameters
    ----------
    axis : int
        The channel axis of every batch (negative counts from the end).
    bits, symmetric : see :class:`Observer`

    :meth:`range` gives float32 arrays of shape (C,); :meth:`calculate_qparams` gives
    ``(scales float32 (C,), zero_points int32 (C,))`` on the backend of the first batch.

    Seed: §3.4.3.1 (整数化, per channel).
    See: chapters/05_3_quantization.ipynb
    """

    method = "per_channel_minmax"

    def __init__(self, axis: int = 0, bits: int = 8, symmetric: bool = False):
        self.axis = check_int("axis", axis, None)
        super().__init__(bits, symmetric)

    def _reset(self) -> None:
        self.min_val = self.max_val = None

    def _observe(self, x: Any) -> None:
        xp = B.namespace(x)
        ndim = len(x.shape)
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"x must have the channel axis {self.axis} of this observer, got shape "
                             f"{tuple(x.shape)}")
        axis = self.axis % ndim
        others = tuple(d for d in range(ndim) if d != axis)
        x32 = xp.astype(x, xp.float32)
        lo, hi = (xp.min(x32, axis=others), xp.max(x32, axis=others)) if others else (x32, x32)
        if self.min_val is None:
            self.min_val, self.max_val = B.copy(lo), B.copy(hi)
            return
        if tuple(lo.shape) != tuple(self.min_val.shape):
            raise ValueError(f"x must have {self.min_val.shape[0]} channels along axis {self.axis} (as the "
                             f"batches before), got shape {tuple(x.shape)}")
        lo, hi = B.asarray(lo, self.min_val), B.asarray(hi, self.max_val)
        xq = B.namespace(self.min_val)
        self.min_val, self.max_val = xq.minimum(self.min_val, lo), xq.maximum(self.max_val, hi)

    def _range(self) -> tuple[Any, Any]:
        return B.copy(self.min_val), B.copy(self.max_val)

    def calculate_qparams(self) -> tuple[Any, Any]:
        """(scales float32 (C,), zero_points int32 (C,)): ``qparams_per_channel`` of :meth:`range`."""
        lo, hi = self.range()
        return qparams_per_channel(lo, hi, self.bits, self.symmetric)


# ----------------------------------------------------------------------------- by name
OBSERVERS: dict = {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver,
                   "per_channel_minmax": PerChannelMinMaxObserver}
"""Observer classes by method name (what :func:`make_observer` accepts)."""


def make_observer(method: str, bits: int = 8, symmetric: bool = False, **options: Any) -> Observer:
    r"""A new observer by name: ``OBSERVERS[method](bits=bits, symmetric=symmetric, **options)``.

    Parameters
    ----------
    method : str, a key of :data:`OBSERVERS`
        ``"minmax"``, ``"moving_average"``, ``"per_channel_minmax"``, ``"percentile"``,
        ``"mse"``, ``"entropy"``.
    bits, symmetric : see :class:`Observer`
    **options
        The method's own options (``averaging_constant``, ``axis``, ``percentile``, ``bins``).

    Returns
    -------
    Observer

    Raises
    ------
    ValueError
        An unknown method, or an option the method does not take (named).

    See: chapters/05_3_quantization.ipynb
    """
    if hasattr(method, "shape") or not isinstance(method, str):
        raise TypeError(f"method must be one of {tuple(OBSERVERS)}, got {type(method).__name__}")
    cls = OBSERVERS[check_choice("method", method, tuple(OBSERVERS))]
    import inspect
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "bits", "symmetric")]
    for key in options:
        if key not in allowed:
            raise ValueError(f"options: {key!r} is not an option of method {method!r} (it takes {allowed})")
    return cls(bits=bits, symmetric=symmetric, **options)
