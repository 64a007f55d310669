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
from ..validation import check_array, check_bool, check_choice, check_int, check_number

__all__ = ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
           "PercentileObserver", "MSEObserver", "EntropyObserver", "OBSERVERS", "make_observer",
           "MAX_HISTOGRAM_BINS"]

_FLOAT32_MAX = 2.0 ** 128 - 2.0 ** 104          # the largest float32


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (float32 arithmetic emulated on Python floats).

    One float32 operation (+, -, *) on float32 operands, done in float64 and rounded once to
    float32, gives the float32 result exactly (float64 has more than 2·24 + 2 bits).
    """
    return struct.unpack("f", struct.pack("f", value))[0]


def _where(x: Any) -> str:
    return f"torch on {B.device_of(x)}" if B.is_torch(x) else "numpy"


def _candidates(name: str, value: Any, like: Any) -> Any:
    """Candidate range ends: a non-empty 1-D float array of finite float32 numbers where ``like`` lives."""
    check_array(name, value, ndim=1)
    if not B.same_kind(value, like):
        raise TypeError(f"{name} must be on the histogram's backend ({_where(like)}), got {_where(value)}")
    if B.dtype_name(value) not in ("float32", "float64"):
        raise TypeError(f"{name} must be a float32 or float64 array, got {B.dtype_name(value)}")
    xp = B.namespace(value)
    if value.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one candidate, got shape {tuple(value.shape)}")
    if not bool(xp.all(xp.abs(xp.astype(value, xp.float64)) <= _FLOAT32_MAX)):
        raise ValueError(f"{name} must hold finite float32 numbers, got a NaN, inf or a value beyond float32")
    return value


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

    # -- what subclasses define (the base observes nothing)
    def _reset(self) -> None:
        pass

    def _observe(self, x: Any) -> None:
        raise NotImplementedError

    def _range(self) -> tuple[Any, Any]:
        raise NotImplementedError

    # -- the interface
    def reset(self) -> Observer:
        """Forget every batch seen (returns the observer)."""
        self.batches = 0
        self._first = None
        self._reset()
        return self

    def __call__(self, x: Any) -> Any:
        """Observe one batch ``x`` (a float array, any shape, finite) and return it unchanged.

        Every batch must live where the first one did (numpy, or torch on one device)."""
        batch = _batch(x)
        if self._first is not None and not B.same_kind(batch, self._first):
            raise TypeError(f"x must be on the backend of the batches seen before ({_where(self._first)}), "
                            f"got {_where(batch)}; move it with nnopt_lab.backend.to_backend or reset() first")
        self._observe(batch)
        if self._first is None:
            self._first = B.namespace(batch).reshape(batch, (-1,))[:0]     # where it lives, not its data
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


# ----------------------------------------------------------------------------- histograms
MAX_HISTOGRAM_BINS = 2 ** 22
"""Most bins a histogram may grow to when later batches widen the range (about 32 MiB of counts)."""


def _counts(x: Any, edges: Any, *, drop_above: bool = False) -> Any:
    r"""Counts of ``x`` in the bins :math:`[e_i, e_{i+1})` of ``edges`` (float64, increasing, on x's backend).

    ``numpy.histogram(x, bins=edges)``: the last bin is closed (it holds :math:`e_n`) and values
    below :math:`e_0` are not counted; values above :math:`e_n` are not counted either with
    ``drop_above``, else they go to the last bin (the signed histograms' edges span the data:
    that only catches float rounding). int64 counts on ``x``'s backend, found by sorting ``x``
    (rounded to float32, as the observers see it) and ``searchsorted`` on the edges.
    """
    xp = B.namespace(x)
    xs = xp.sort(xp.reshape(xp.astype(xp.astype(x, xp.float32), xp.float64), (-1,)))
    edges = B.asarray(edges, xs)
    n = edges.shape[0] - 1
    below = xp.searchsorted(xs, edges[:n], side="left")                   # entries below e_0 .. e_{n-1}
    if drop_above:
        top = xp.searchsorted(xs, edges[n:], side="right")
    else:
        top = xp.full((1,), xs.shape[0], dtype=below.dtype, device=B.device(xs))
    cumulative = xp.concat([below, top])
    return xp.astype(cumulative[1:] - cumulative[:-1], xp.int64)


def _linspace32(start: float, stop: float, n: int, like: Any) -> Any:
    r"""``numpy.linspace(start, stop, n + 1, dtype=float32)`` op by op, as float64 on ``like``'s backend.

    :math:`e_i = \mathrm{fl}(\mathrm{fl}(i\cdot s) + start)`, :math:`s = \mathrm{fl}(\mathrm{fl}(stop - start)/n)`
    in float32, :math:`e_n = stop` -- the edges of ``numpy.histogram(x, n, range=(start, stop))``
    on float32 data, which onnxruntime's calibrators use (0 need not be an edge). Where
    :math:`stop - start` overflows float32 the edges are computed in float64.
    """
    xp = B.namespace(like)
    i = xp.arange(n + 1, device=B.device(like))
    delta = _float32(stop - start)
    if math.isinf(delta):
        edges = xp.astype(i, xp.float64) * ((stop - start) / n) + start
    else:
        edges = xp.astype(xp.astype(i, xp.float32) * _float32(delta / n) + start, xp.float64)
    ends = xp.astype(i == n, xp.float64)
    return edges * (1 - ends) + stop * ends


class _SignedHistogram:
    r"""onnxruntime's ``HistogramCollector.collect_value``: counts on :math:`[-t, t]`, t = max |x| seen.

    The first batch makes ``bins`` bins on :math:`[-t_1, t_1]` (edges of :func:`_linspace32`).
    A batch inside the range adds its counts; a wider one adds whole bins on both sides (the
    old counts keep their bins, nothing is re-binned): :math:`h = \lfloor (t' - t)/s \rfloor + 1`
    bins each side, :math:`s = 2t/n`, and the new :math:`t = t + h s` (float32, as onnxruntime).
    Batches of zeros before any other are counted into the bin of 0 when the first non-zero
    batch sets the range (onnxruntime adds them bin by bin into the new histogram).
    """

    def __init__(self, bins: int):
        self.bins = bins
        self.counts, self.threshold, self.zeros = None, 0.0, 0

    def add(self, x: Any, t: float) -> None:
        if self.counts is None:
            if t == 0:
                self.zeros += math.prod(tuple(x.shape))
                return
            self.threshold = t
            self.counts = _counts(x, _linspace32(-t, t, self.bins, x))
            if self.zeros:
                self.counts = self.counts + self.zeros * _counts(x[..., :1] * 0, self.edges())
            return
        n, old = self.counts.shape[0], self.threshold
        if t <= old:
            self.counts = self.counts + B.asarray(_counts(x, self.edges()), self.counts)
            return
        stride = _float32(2 * old / n)
        half = int(_float32(t - old) / stride // 1 + 1)
        if n + 2 * half > MAX_HISTOGRAM_BINS:
            raise ValueError(f"x widens the calibration range from {old:.6g} to {t:.6g}: the histogram would need "
                             f"{n + 2 * half} bins of width {stride:.3g} (more than {MAX_HISTOGRAM_BINS}); calibrate "
                             f"with a first batch that spans the range, or reset() the observer")
        self.threshold = _float32(_float32(half * stride) + old)
        counts = B.asarray(_counts(x, _linspace32(-self.threshold, self.threshold, n + 2 * half, x)), self.counts)
        xp = B.namespace(counts)
        self.counts = xp.concat([counts[:half], counts[half:half + n] + self.counts, counts[half + n:]])

    def edges(self) -> Any:
        """The bin edges (float64 array holding float32 numbers, on the counts' backend)."""
        return _linspace32(-self.threshold, self.threshold, self.counts.shape[0], self.counts)


class _HistogramObserver(MinMaxObserver):
    """A min-max observer that also keeps a histogram of the values (the base of the three below)."""

    def __init__(self, bins: int = 2048, bits: int = 8, symmetric: bool = False):
        self.n_bins = check_int("bins", bins, 2, 2 ** 16)
        if self.n_bins % 2:
            raise ValueError(f"bins must be an even int (the bins are symmetric about 0), got {bins}")
        super().__init__(bits, symmetric)

    def _reset(self) -> None:
        super()._reset()
        self.histogram = _SignedHistogram(self.n_bins)
        self._chosen_range = None

    def _observe(self, x: Any) -> None:
        lo, hi = self._batch_minmax(x)
        self.min_val, self.max_val = min(self.min_val, lo), max(self.max_val, hi)
        self.histogram.add(x, max(abs(lo), abs(hi)))
        self._chosen_range = None

    def _clipped(self, lo: float, hi: float) -> tuple[float, float]:
        """(lo, hi) as float32 numbers, inside [min seen, max seen] (onnxruntime clips the same way)."""
        return max(_float32(lo), self.min_val), min(_float32(hi), self.max_val)

    def _range(self) -> tuple[float, float]:
        if self.histogram.counts is None:                      # only zeros seen
            return self.min_val, self.max_val
        if self._chosen_range is None:                         # the search runs once per set of batches
            self._chosen_range = self._chosen()
        return self._chosen_range

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", bins={self.n_bins})"


class PercentileObserver(_HistogramObserver):
    r"""Clip the tails: the range holding ``percentile`` % of the values, read off a histogram.

    onnxruntime's ``HistogramCollector("percentile", symmetric, num_bins=bins, percentile=p)``:
    with :math:`F` the cumulative fraction of the counts and :math:`e` the bin edges,

    .. math::

        \text{affine:}\quad x_{\min} = e_{\,\mathrm{ss}(F,\, c)},\quad x_{\max} = e_{\,\mathrm{ss}(F,\, 1 - c)},
        \qquad c = \frac{100 - p}{200}

        \text{symmetric:}\quad x_{\max} = -x_{\min} = e'_{\,\mathrm{ss}(F',\, p/100)}

    where ss is ``searchsorted`` (the first bin where F reaches the level), the affine
    histogram is the signed one on :math:`[-t, t]` (see :class:`MSEObserver`) and the
    symmetric one is a histogram of :math:`|x|` from the first batch's :math:`\min|x|` to
    :math:`\max|x|`, extended by bins of the same width when a later batch goes beyond (edges
    computed as onnxruntime does: ``numpy.linspace`` / ``numpy.arange`` on float32 numbers,
    stored in float32); then clipped to :math:`[\min x, \max x]`. As in onnxruntime, values
    of a later batch below the first edge (the first batch's smallest :math:`|x|`) are not
    counted: they are the smallest magnitudes and only lower the total.

    Parameters
    ----------
    percentile : float in (0, 100]
        100 gives the range of the histogram (min-max up to a bin).
    bins : even int in [2, 65536]
        Bins of the first batch's histogram (later, wider batches add bins).
    bits, symmetric : see :class:`Observer`

    Seed: §3.4.3.1 (整数化, calibration by percentile).
    See: chapters/05_3_quantization.ipynb
    """

    method = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = 2048, bits: int = 8, symmetric: bool = False):
        self.percentile = check_number("percentile", percentile, 0.0, 100.0, low_open=True)
        super().__init__(bins, bits, symmetric)

    def _reset(self) -> None:
        super()._reset()
        self.abs_counts = self.abs_edges = None

    def _observe(self, x: Any) -> None:
        super()._observe(x)
        if not self.symmetric:
            return
        xp = B.namespace(x)
        a = xp.abs(x)
        amin, amax = _float32(B.float_of(xp.min(a))), _float32(B.float_of(xp.max(a)))
        if self.abs_counts is None:                     # numpy.histogram(|x|, bins): range [min, max] of |x|
            start, stop = (amin, amax) if amax > amin else (_float32(amin - 0.5), _float32(amax + 0.5))
            self.abs_edges = _linspace32(start, stop, self.n_bins, a)
            self.abs_counts = _counts(a, self.abs_edges, drop_above=True)
            return
        edges = self.abs_edges
        last = B.float_of(edges[-1])
        if amax > last:                                 # onnxruntime: np.arange(last + w, amax + w, w), w in float32
            width = _float32(B.float_of(edges[1]) - B.float_of(edges[0]))
            start, stop = _float32(last + width), _float32(amax + width)
            more = math.ceil(_float32(stop - start) / width)
            if edges.shape[0] - 1 + more > MAX_HISTOGRAM_BINS:
                raise ValueError(f"x widens the calibration range to |x| <= {amax:.6g}: the |x| histogram would "
                                 f"need {edges.shape[0] - 1 + more} bins (more than {MAX_HISTOGRAM_BINS}); reset() "
                                 f"the observer")
            step = _float32(start + width) - start      # numpy's arange: start + i·(second - first), in float64
            new = xp.astype(xp.arange(more, device=B.device(edges)), xp.float64) * step + start
            edges = xp.concat([edges, new])
        counts = B.asarray(_counts(a, edges, drop_above=True), self.abs_counts)
        xq = B.namespace(counts)
        old = self.abs_counts.shape[0]
        self.abs_counts = xq.concat([counts[:old] + self.abs_counts, counts[old:]])
        self.abs_edges = xq.astype(xq.astype(edges, xq.float32), xq.float64)    # onnxruntime keeps them in float32

    @staticmethod
    def _edge_at(counts: Any, edges: Any, level: float) -> float:
        xp = B.namespace(counts)
        cdf = xp.cumulative_sum(xp.astype(counts, xp.float64) / B.float_of(xp.sum(counts)))
        index = int(B.float_of(xp.searchsorted(cdf, B.asarray([level], cdf), side="left")[0]))
        return B.float_of(edges[min(index, edges.shape[0] - 1)])

    def _chosen(self) -> tuple[float, float]:
        if self.symmetric:
            t = self._edge_at(self.abs_counts, self.abs_edges, self.percentile / 100.0)
            return self._clipped(-t, t)
        cut = (100.0 - self.percentile) / 200.0
        counts, edges = self.histogram.counts, self.histogram.edges()
        return self._clipped(self._edge_at(counts, edges, cut), self._edge_at(counts, edges, 1.0 - cut))


def _sawtooth_integral(v: Any, vlo: Any, vhi: Any) -> Any:
    r""":math:`H(v) = \int_{v_{lo}}^{v} r(u)^2\,du`, r(u) = u - clamp(round(u), v_lo, v_hi), v_lo, v_hi integers.

    Inside: :math:`\lfloor v\rfloor`-many full periods of :math:`\int (u - \mathrm{round}\,u)^2 = 1/12`
    plus :math:`g(s) = s^3/3` (:math:`s \le 1/2`) or :math:`1/12 + (s-1)^3/3`; outside, the
    clipping error :math:`\pm|v - v_{end}|^3/3`.
    """
    xp = B.namespace(v)
    inside = xp.clip(v, vlo, vhi)
    whole = xp.floor(inside)
    s = inside - whole
    g = xp.where(s <= 0.5, s ** 3 / 3, 1.0 / 12 + (s - 1) ** 3 / 3)
    above = xp.clip(v - vhi, 0.0, None) ** 3 / 3
    below = xp.clip(vlo - v, 0.0, None) ** 3 / 3
    return (whole - vlo) / 12 + g + above - below


class MSEObserver(_HistogramObserver):
    r"""The range whose quantization has the smallest mean squared error on the values seen.

    .. math::

        [x_{\min}, x_{\max}] = \arg\min_{[a, b]} \; \sum_i n_i\,
        \frac{1}{w}\int_{e_i}^{e_{i+1}} \big(x - \hat x_{a,b}(x)\big)^2\,dx

    over a histogram of counts :math:`n_i` in bins :math:`[e_i, e_{i+1})` of width w, taking
    the values uniform inside a bin; :math:`\hat x_{a,b}` is the fake-quantized value with
    the (scale, zero point) of ``qparams(a, b)`` (rounding error inside, clipping error
    outside the range). The integral is exact (:math:`\int (u - \mathrm{round}\,u)^2` in
    closed form), every candidate at once. Symmetric: :math:`b = -a = t` over every
    positive bin edge; affine: :math:`b` over the edges :math:`\ge 0` and :math:`a` over those
    :math:`\le 0` (and the observed min and max), by coordinate descent from the min-max
    range (at most 4 sweeps), each 1-D search coarse to fine (65 candidates a level).

    The histogram is onnxruntime's signed one: ``bins`` bins on :math:`[-t, t]`, t = the
    largest :math:`|x|` seen, grown by whole bins when a later batch is wider.
    ``torch.ao.quantization.HistogramObserver`` minimizes the same error by a greedy search
    that narrows the range bin by bin; this exhaustive search finds a range at least as good.

    Parameters
    ----------
    bins : even int in [2, 65536]
    bits, symmetric : see :class:`Observer`

    Seed: §3.4.3.1 (整数化, calibration by the error).
    See: chapters/05_3_quantization.ipynb
    """

    method = "mse"
    sweeps = 4
    grid = 65

    def errors(self, lo: Any, hi: Any) -> Any:
        r"""Estimated :math:`\sum_x (x - \hat x)^2` of the histogram for each candidate range.

        ``lo``, ``hi``: float arrays (K,) on the histogram's backend; returns float64 (K,).
        """
        self._check_calibrated()
        lo, hi = _candidates("lo", lo, self.histogram.counts), _candidates("hi", hi, self.histogram.counts)
        if tuple(lo.shape) != tuple(hi.shape):
            raise ValueError(f"lo and hi must have one shape (one entry per candidate range), got {tuple(lo.shape)} "
                             f"and {tuple(hi.shape)}")
        xp = B.namespace(self.histogram.counts)
        if bool(xp.any(hi < lo)):
            raise ValueError("hi must be >= lo for every candidate range")
        counts = xp.astype(self.histogram.counts, xp.float64)
        edges = self.histogram.edges()
        used = counts > 0
        n, a, b = counts[used], edges[:-1][used], edges[1:][used]
        scale, zero_point = qparams_per_channel(xp.astype(lo, xp.float32), xp.astype(hi, xp.float32), self.bits,
                                                self.symmetric)
        scale = xp.astype(scale, xp.float64)[:, None]
        z = xp.astype(zero_point, xp.float64)[:, None]
        vlo, vhi = self.qmin - z, self.qmax - z
        va, vb = a[None, :] / scale, b[None, :] / scale
        mean_r2 = (_sawtooth_integral(vb, vlo, vhi) - _sawtooth_integral(va, vlo, vhi)) / (vb - va)
        return xp.sum(n[None, :] * mean_r2, axis=1) * scale[:, 0] ** 2

    def _search(self, candidates: Any, make: Any) -> float:
        """The candidate c (sorted 1-D float64) whose range make(c) has the smallest error: coarse to fine.

        A grid of at most :attr:`grid` candidates, then the same around the best one, down to
        neighbouring candidates (the error is smooth in the range, up to the zero point's steps).
        """
        xp = B.namespace(candidates)
        lo_i, hi_i = 0, candidates.shape[0] - 1
        while True:
            step = max(1, -(-(hi_i - lo_i) // (self.grid - 1)))
            index = xp.arange(lo_i, hi_i + 1, step, device=B.device(candidates))
            if int(B.float_of(index[-1])) != hi_i:
                index = xp.concat([index, B.asarray([hi_i], index)])
            cands = xp.take(candidates, index)
            k = int(B.float_of(xp.argmin(self.errors(*make(cands)))))
            best = int(B.float_of(index[k]))
            if step == 1:
                return B.float_of(candidates[best])
            lo_i, hi_i = max(lo_i, best - step), min(hi_i, best + step)

    def _chosen(self) -> tuple[float, float]:
        edges = self.histogram.edges()
        xp = B.namespace(edges)
        lo_seen, hi_seen = self.min_val, self.max_val
        if self.symmetric:
            top = max(abs(lo_seen), abs(hi_seen))
            t = edges[(edges > 0) & (edges < top)]
            t = xp.concat([t, B.asarray([top], t)])
            best = self._search(t, lambda c: (-c, c))
            return self._clipped(-best, best)
        his = xp.concat([edges[(edges >= 0) & (edges < hi_seen)], B.asarray([max(hi_seen, 0.0)], edges)])
        los = xp.concat([edges[(edges <= 0) & (edges > lo_seen)], B.asarray([min(lo_seen, 0.0)], edges)])
        los = xp.sort(los)
        lo, hi = min(lo_seen, 0.0), max(hi_seen, 0.0)
        for _ in range(self.sweeps):
            before = (lo, hi)
            hi = self._search(his, lambda c: (xp.full_like(c, lo), c))
            lo = self._search(los, lambda c: (c, xp.full_like(c, hi)))
            if (lo, hi) == before:
                break
        return self._clipped(lo, hi)


class EntropyObserver(_HistogramObserver):
    r"""The range whose quantized histogram is closest in KL divergence to the real one (TensorRT).

    onnxruntime's ``HistogramCollector("entropy", num_bins=bins, num_quantized_bins=m)``
    (after TensorRT's 8-bit calibration, Migacz 2017, and MXNet's code). On the signed
    histogram of :math:`N` bins (zero bin :math:`N/2`), for each half-width
    :math:`i = m/2, \ldots, N/2` the window :math:`[N/2 - i, N/2 + i]`:

    * :math:`p` = the window's counts, the counts left and right of it added to its end bins;
    * :math:`q` = the window's counts merged into m groups of :math:`\lfloor L/m \rfloor`
      bins (the rest into the last group), each group's sum spread evenly (floored to an
      integer, as onnxruntime keeps q in int64) over the group's bins where :math:`p \ne 0`;
    * both smoothed (zeros get :math:`\varepsilon = 10^{-4}`, taken off the non-zeros) and
      normalised; :math:`D_i = \sum_j p_j \log(p_j/q_j)` (inf where a side is all zero).

    The range is the window's edges at :math:`\arg\min_i D_i`, clipped to :math:`[\min x, \max x]`.

    Parameters
    ----------
    bins : even int in [2, 65536]
    quantized_bins : int in [1, bins] or None
        m, the levels the window is quantized to; None: :math:`2^{b-1}` (128 at 8 bits, onnxruntime's
        default ``num_quantized_bins``).
    bits, symmetric : see :class:`Observer`

    Seed: §3.4.3.1 (整数化, calibration by KL divergence).
    See: chapters/05_3_quantization.ipynb
    """

    method = "entropy"

    def __init__(self, bins: int = 2048, quantized_bins: int | None = None, bits: int = 8, symmetric: bool = False):
        super().__init__(bins, bits, symmetric)
        if quantized_bins is None:
            quantized_bins = 2 ** (self.bits - 1)
            if quantized_bins > self.n_bins:
                raise ValueError(f"bins must be >= 2**(bits - 1) = {quantized_bins} for entropy calibration at "
                                 f"{self.bits} bits with quantized_bins=None (or give quantized_bins <= bins), "
                                 f"got bins={self.n_bins}")
        self.quantized_bins = check_int("quantized_bins", quantized_bins, 1, self.n_bins)

    def divergences(self) -> Any:
        r"""(thresholds (K, 2) float64, :math:`D` (K,) float64): every window's edges and KL divergence."""
        self._check_calibrated()
        counts = self.histogram.counts
        xp = B.namespace(counts)
        hist = xp.astype(counts, xp.float64)
        edges = self.histogram.edges()
        n, m = hist.shape[0], self.quantized_bins
        zero, half = n // 2, m // 2
        cum = xp.concat([xp.zeros((1,), dtype=xp.float64, device=B.device(hist)), xp.cumulative_sum(hist)])
        total = B.float_of(cum[-1])
        lows, highs, divs = [], [], []
        for i in range(half, zero + 1):
            start, end = zero - i, min(zero + i + 1, n)
            lows.append(start)
            highs.append(end)
            sliced = hist[start:end]
            length = end - start
            p = B.copy(sliced)
            p[0] = p[0] + B.float_of(cum[start])
            p[-1] = p[-1] + (total - B.float_of(cum[end]))
            nonzero = xp.astype(p != 0, xp.float64)
            merged = length // m
            if merged == 0:
                divs.append(math.inf)
                continue
            groups = xp.reshape(sliced[:merged * m], (m, merged))
            quantized = xp.sum(groups, axis=1)
            rest = B.float_of(xp.sum(sliced[merged * m:])) if merged * m < length else 0.0
            quantized = xp.concat([quantized[:-1], quantized[-1:] + rest])
            norm = xp.sum(xp.reshape(nonzero[:merged * m], (m, merged)), axis=1)
            spread = xp.where(norm > 0, xp.floor(quantized / xp.where(norm > 0, norm, 1.0)), 0.0)
            q = xp.concat([xp.reshape(xp.broadcast_to(spread[:, None], (m, merged)), (-1,)),
                           xp.zeros((length - merged * m,), dtype=xp.float64, device=B.device(hist))])
            divs.append(_kl(_smooth(p), _smooth(q)))
        bounds = B.asarray([[B.float_of(edges[a]), B.float_of(edges[b])] for a, b in zip(lows, highs)], hist)
        return bounds, B.asarray(divs, hist)

    def _chosen(self) -> tuple[float, float]:
        bounds, divs = self.divergences()
        xp = B.namespace(divs)
        k = int(B.float_of(xp.argmin(divs)))
        return self._clipped(B.float_of(bounds[k, 0]), B.float_of(bounds[k, 1]))


def _smooth(p: Any, eps: float = 1e-4) -> Any:
    """Zeros of the counts ``p`` replaced by eps, eps·(#zeros/#non-zeros) taken off the others; None if all 0."""
    xp = B.namespace(p)
    zeros = xp.astype(p == 0, xp.float64)
    n_zeros = B.float_of(xp.sum(zeros))
    n_nonzeros = p.shape[0] - n_zeros
    if not n_nonzeros:
        return None
    return p + eps * zeros - (eps * n_zeros / n_nonzeros) * (1 - zeros)


def _kl(p: Any, q: Any) -> float:
    r""":math:`\sum p \log(p/q)` of p and q normalised to sum 1 (inf if either is None)."""
    if p is None or q is None:
        return math.inf
    xp = B.namespace(p)
    p, q = p / xp.sum(p), q / xp.sum(q)
    return B.float_of(xp.sum(p * xp.log(p / q)))


# ----------------------------------------------------------------------------- by name
OBSERVERS: dict = {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver,
                   "percentile": PercentileObserver, "mse": MSEObserver, "entropy": EntropyObserver}
"""The per-tensor calibration methods by name (:func:`make_observer` also takes ``"per_channel_minmax"``)."""

_MAKEABLE = {**OBSERVERS, "per_channel_minmax": PerChannelMinMaxObserver}


def make_observer(method: str, bits: int = 8, symmetric: bool = False, **options: Any) -> Observer:
    r"""A new observer by name: ``OBSERVERS[method](bits=bits, symmetric=symmetric, **options)``.

    Parameters
    ----------
    method : str
        A key of :data:`OBSERVERS` (``"minmax"``, ``"moving_average"``, ``"percentile"``,
        ``"mse"``, ``"entropy"``) or ``"per_channel_minmax"``.
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
        raise TypeError(f"method must be one of {tuple(_MAKEABLE)}, got {type(method).__name__}")
    cls = _MAKEABLE[check_choice("method", method, tuple(_MAKEABLE))]
    import inspect
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "bits", "symmetric")]
    for key in options:
        if key not in allowed:
            raise ValueError(f"options: {key!r} is not an option of method {method!r} (it takes {allowed})")
    return cls(bits=bits, symmetric=symmetric, **options)
