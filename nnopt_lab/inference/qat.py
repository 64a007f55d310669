r"""Quantization-aware training (QAT): fake-quantized layers trained with the straight-through estimator.

Post-training quantization (PTQ) rounds a trained float model; at 4 bits the rounding error is
large enough to cost accuracy. QAT trains *through* the rounding instead (Jacob et al. 2018 §3,
Krishnamoorthi 2018 §3): every weight and activation is *fake-quantized* in the forward pass,
:math:`\hat x = (\operatorname{clamp}(\operatorname{round}(x/\Delta) + z, q_{\min}, q_{\max}) - z)\,\Delta`
(:func:`nnopt_lab.compression.quantization.fake_quantize`, THE ONE quantizer), so the loss is the
loss of the quantized model, and the backward pass lets the gradient through the rounding as if
it were the identity -- the **straight-through estimator** (STE, Bengio et al. 2013) -- but only
where the code was inside :math:`[q_{\min}, q_{\max}]` before clamping:

.. math::

    \frac{\partial L}{\partial x} = \frac{\partial L}{\partial \hat x}\cdot
    \big[\,q_{\min} \le \operatorname{round}(x/\Delta) + z \le q_{\max}\,\big]

which is ``torch.fake_quantize_per_tensor_affine``'s (and ``_per_channel_affine``'s) gradient,
mask for mask. A weight kept float underneath ("shadow" weight) collects these gradients; small
steps accumulate until a weight crosses to the next code.

Ranges are *observed* (an observer of :mod:`nnopt_lab.inference.calibration` updates the range of
every activation in training mode; frozen in eval mode) or *learned*: LSQ (Esser et al. 2019)
makes the step size :math:`\Delta` a parameter with the gradient

.. math::

    \frac{\partial \hat x}{\partial \Delta} =
    \begin{cases} q_{\min} - z & \operatorname{round}(x/\Delta) + z < q_{\min} \\
                  q_{\max} - z & \operatorname{round}(x/\Delta) + z > q_{\max} \\
                  (\hat x - x)/\Delta & \text{otherwise}\end{cases}
    \qquad\text{times } g = 1/\sqrt{N\,q_{\max}}

(``torch._fake_quantize_learnable_per_tensor_affine``'s, which also gives
:math:`\partial \hat x/\partial z = -\Delta` outside the range and 0 inside).

Names, from the bottom up:

* :func:`fake_quantize_forward` / :func:`fake_quantize_backward` -- the STE pair (forward is
  ``fake_quantize``; the cache is the mask);
* :func:`lsq_forward` / :func:`lsq_backward` -- the LSQ pair: gradients for x, the scale(s) and
  the zero point(s); :func:`lsq_grad_factor` -- LSQ's :math:`g`;
* :class:`FakeQuantize` -- a layer: observer + fake quantization of activations (``learnable``:
  LSQ step size), as ``torch.ao.quantization.FakeQuantize``;
* :class:`QATLayer` -- a Linear or Conv2d whose weight is fake-quantized (symmetric, per output
  channel or per tensor, range from the current weight) in every forward, STE in backward;
* :func:`prepare_qat` -- a BN-folded Sequential made trainable in fake-quantized form (train it
  with :func:`nnopt_lab.training.fit` unchanged); :func:`calibrate` -- observe activation ranges
  without training (this is PTQ, in the same form); :func:`strip_qat` -- back to a plain float
  Sequential holding the quantized weights, for :func:`nnopt_lab.inference.integer.convert`.

**QAT of k-means codebooks** needs no new code: :class:`~nnopt_lab.compression.weight_sharing.SharedLayer`
already trains its codebook (each centroid gets the sum of its members' weight gradients,
Deep Compression §3.2). Put SharedLayers in the model and :func:`prepare_qat` keeps them as they
are (their weight is already quantized, to the codebook) and fake-quantizes the activations
around them; ``fit`` then fine-tunes the centroids under quantized activations::

    shared = Sequential(SharedLayer(model[0], 16), ReLU(), SharedLayer(model[2], 16))
    qat = prepare_qat(shared, activation_bits=4)         # codebooks + 4-bit activations
    fit(qat, train, epochs=3, lr=0.01)                   # centroids move, indices stay

Seed: §2.4.3 / §3.4.3 (量化, quantized inference: training with quantization in the loop).
See: chapters/05_3_quantization.ipynb
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from ..compression import quantization as Q
from ..compression.trimming import _copy          # a layer's deep copy without its caches: one helper
from ..compression.weight_sharing import SharedLayer
from ..nn.layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module,
                         Parameter, ReLU, Sequential)
from ..validation import check_array, check_bool, check_choice, check_int, check_number
from . import calibration

__all__ = ["fake_quantize_forward", "fake_quantize_backward", "lsq_grad_factor", "lsq_forward", "lsq_backward",
           "FakeQuantize", "QATLayer", "prepare_qat", "calibrate", "strip_qat"]


# ----------------------------------------------------------------------------- the STE pair
class _STECache:
    """What :func:`fake_quantize_backward` needs: the mask, and the output's shape and kind to check dout."""

    __slots__ = ("mask", "shape")

    def __init__(self, mask: Any):
        self.mask = mask
        self.shape = tuple(mask.shape)


def fake_quantize_forward(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int,
                          axis: int | None = None) -> tuple[Any, Any]:
    r"""Fake quantization with the straight-through estimator: the output and the cache of its gradient.

    .. math::

        q = \operatorname{round}(x/\Delta) + z, \qquad
        \hat x = (\operatorname{clamp}(q, q_{\min}, q_{\max}) - z)\,\Delta, \qquad
        m = [\,q_{\min} \le q \le q_{\max}\,]

    :math:`\hat x` is :func:`nnopt_lab.compression.quantization.fake_quantize` (same
    arguments, same checks, same result bit for bit: ``torch.fake_quantize_per_tensor_affine``
    / ``_per_channel_affine``); the cache holds the mask :math:`m` of the codes that were not
    clamped, as torch's ``..._cachemask`` kernels compute it (round half to even of
    :math:`x \cdot (1/\Delta)` in float32 arithmetic for float32 x, plus z). Values exactly on
    the range's edges (code :math:`q_{\min}` or :math:`q_{\max}`) are inside: their gradient passes.

    Parameters
    ----------
    x : float array, any shape, no NaN
    scale : float > 0, or float array of shape (C,) with ``axis``
    zero_point : int in [qmin, qmax], or integer array of shape (C,) with ``axis``
    qmin, qmax : int, qmin < qmax (e.g. from :func:`~nnopt_lab.compression.quantization.integer_range`)
    axis : int or None
        The channel axis for per-channel scales and zero points.

    Returns
    -------
    out : float array, shape and dtype of ``x``
    cache : object for :func:`fake_quantize_backward` (its ``mask``: bool array of x's shape)

    Raises
    ------
    ValueError, TypeError
        Those of ``fake_quantize``, naming the argument.

    Seed: §3.4.3 (quantization-aware training).
    See: chapters/05_3_quantization.ipynb
    """
    out = Q.fake_quantize(x, scale, zero_point, qmin, qmax, axis=axis)     # checks every argument
    qmin, qmax = int(qmin), int(qmax)
    code = Q.codes_before_clamp(x, scale, zero_point, axis)               # the code fake_quantize clamps
    return out, _STECache((code >= qmin) & (code <= qmax))


def _check_dout(dout: Any, like: Any, shape: tuple) -> Any:
    """dout must be a float array of the forward output's shape, on the cache's backend."""
    check_array("dout", dout)
    xp = B.namespace(dout)
    if not xp.isdtype(dout.dtype, "real floating"):
        raise TypeError(f"dout must be a floating-point array (a gradient), got dtype {B.dtype_name(dout)}")
    if tuple(dout.shape) != shape:
        raise ValueError(f"dout must have the forward output's shape {shape}, got {tuple(dout.shape)}")
    if not B.same_kind(dout, like):
        raise TypeError(f"dout is on {B.backend_of(dout).name} but the forward ran on {B.backend_of(like).name}")
    return xp


def fake_quantize_backward(dout: Any, cache: Any) -> Any:
    r"""The straight-through gradient: :math:`\partial L/\partial x = m \odot \partial L/\partial \hat x`.

    Zero exactly where the code was clamped (outside :math:`[q_{\min}, q_{\max}]`), ``dout``
    unchanged elsewhere -- ``torch.fake_quantize_per_tensor_affine``'s autograd gradient.

    Parameters
    ----------
    dout : float array, the shape of the forward's output
    cache : what :func:`fake_quantize_forward` returned

    Returns
    -------
    dx : float array, shape and dtype of ``dout``

    See: chapters/05_3_quantization.ipynb
    """
    if not isinstance(cache, _STECache):
        raise TypeError(f"cache must be what fake_quantize_forward returned, got {type(cache).__name__}")
    xp = _check_dout(dout, cache.mask, cache.shape)
    return xp.where(cache.mask, dout, xp.zeros_like(dout))


# ----------------------------------------------------------------------------- LSQ
def lsq_grad_factor(n: int, qmax: int) -> float:
    r"""LSQ's gradient scale :math:`g = 1/\sqrt{n\,q_{\max}}` (Esser et al. 2019 §2.2).

    ``n`` is the number of values one step size quantizes (torch's ``_LearnableFakeQuantize``
    with ``use_grad_scaling=True`` takes ``X.numel()``); it keeps the step size's updates on
    the scale of the weights' updates.

    Parameters
    ----------
    n : int >= 1
    qmax : int >= 1 (the largest code, :math:`Q_P` in the paper)

    See: chapters/05_3_quantization.ipynb
    """
    return 1.0 / math.sqrt(check_int("n", n, 1) * check_int("qmax", qmax, 1))


class _LSQCache:
    __slots__ = ("x", "scale", "inv_scale", "zero_point", "qmin", "qmax", "grad_factor", "axis", "scale_shape")

    def __init__(self, **values):
        for key, value in values.items():
            setattr(self, key, value)


def _scale_shape(scale: Any, axis: int | None) -> tuple | None:
    """The shape the scale's gradient takes: None for a number, else the array's (() or (1,) per tensor)."""
    if not hasattr(scale, "shape"):
        return None
    shape = tuple(scale.shape)
    if axis is None and shape not in ((), (1,)):
        raise ValueError(f"scale must be a number or an array of shape () or (1,) per tensor (axis=None), got "
                         f"shape {shape}; give axis for one scale per channel")
    return shape


def lsq_forward(x: Any, scale: Any, zero_point: Any, qmin: int, qmax: int, axis: int | None = None,
                grad_factor: float = 1.0) -> tuple[Any, Any]:
    r"""Fake quantization with a learnable step size (LSQ): the output and the cache of its gradients.

    The forward is :func:`~nnopt_lab.compression.quantization.fake_quantize` (that of
    ``torch._fake_quantize_learnable_per_tensor_affine`` / ``_per_channel_affine`` for an
    integer zero point); :func:`lsq_backward` gives the gradients for ``x``, ``scale`` and
    ``zero_point``.

    Parameters
    ----------
    x : float array, any shape, no NaN
    scale : float > 0, an array of shape () or (1,) (per tensor), or (C,) with ``axis``
        Used as float32, as torch does.
    zero_point : int in [qmin, qmax], or integer-valued array (C,) with ``axis``
        A learned (float) zero point is the caller's to round first, as torch's forward does.
    qmin, qmax : int, qmin < qmax
    axis : int or None
    grad_factor : float > 0
        Multiplies the scale's and zero point's gradients (:func:`lsq_grad_factor`: LSQ's g).

    Returns
    -------
    out : float array, shape and dtype of ``x``
    cache : for :func:`lsq_backward`

    See: chapters/05_3_quantization.ipynb
    """
    out = Q.fake_quantize(x, scale, zero_point, qmin, qmax, axis=axis)     # checks every argument
    grad_factor = check_number("grad_factor", grad_factor, 0.0, low_open=True)
    axis = Q._check_axis(axis, x)
    shape = _scale_shape(scale, axis)
    if shape == () or shape == (1,):
        scale = B.float_of(scale)                  # per tensor: a number, as torch's kernel reads scale[0]
    scale32, inv_scale = Q._scale(scale, x, axis)
    z = Q._zero_point(zero_point, x, axis, None, None)
    return out, _LSQCache(x=x, scale=scale32, inv_scale=inv_scale, zero_point=z, qmin=int(qmin), qmax=int(qmax),
                          grad_factor=grad_factor, axis=axis, scale_shape=shape)


def _fused_code(x: Any, inv_scale: Any, zero_point: Any) -> Any:
    r""":math:`z + x \cdot (1/\Delta)` rounded once, as the fused multiply-add of torch's compiled kernels.

    float32: the product of two float32 numbers is exact in float64, so computing in float64
    and rounding to float32 once gives the FMA's result (up to a double rounding that needs a
    float64 sum exactly half-way between two float32 numbers). float64: the plain expression.
    """
    xp = B.namespace(x)
    if x.dtype != xp.float32:
        return zero_point + x * inv_scale
    as64 = (lambda v: xp.astype(v, xp.float64)) if hasattr(inv_scale, "shape") else (lambda v: v)
    z64 = xp.astype(zero_point, xp.float64) if hasattr(zero_point, "shape") else zero_point
    return xp.astype(xp.astype(x, xp.float64) * as64(inv_scale) + z64, xp.float32)


def lsq_backward(dout: Any, cache: Any) -> tuple[Any, Any, Any]:
    r"""Gradients of LSQ fake quantization for x, the scale(s) and the zero point(s).

    With :math:`q = \operatorname{round}(z + x/\Delta)` (torch's backward kernels round the
    sum, computed as one fused multiply-add: in float32 it is rounded once, as here), :math:`\hat x = (\operatorname{clamp}(q, q_{\min}, q_{\max}) - z)\Delta` and
    :math:`g` = ``grad_factor``:

    .. math::

        \frac{\partial L}{\partial x} = \delta\,[q_{\min} \le q \le q_{\max}], \qquad
        \frac{\partial L}{\partial \Delta} = g \sum \delta \cdot
        \begin{cases} q_{\min} - z & q < q_{\min}\\ q_{\max} - z & q > q_{\max}\\
                      (\hat x - x)/\Delta & \text{otherwise}\end{cases}, \qquad
        \frac{\partial L}{\partial z} = g \sum_{q \notin [q_{\min}, q_{\max}]} -\delta\,\Delta

    (:math:`\delta` = ``dout``; sums over the tensor, or over every axis but ``axis``), term by
    term the float operations of torch's CPU kernels. For an integer z the forward's code
    :math:`\operatorname{round}(x/\Delta) + z` and this one differ only at exact ties with an
    odd z (round half to even); torch's learnable ops do the same. One difference: torch's
    per-tensor backward reads the zero point as ``int(z + 0.5)``, truncated toward 0, so a
    negative zero point (e.g. -1 with symmetric codes) becomes one more there than in its
    forward; here the backward uses the forward's z.

    Parameters
    ----------
    dout : float array, the shape of the forward's output
    cache : what :func:`lsq_forward` returned

    Returns
    -------
    dx : float array, x's shape
    dscale, dzero_point : float arrays of the scale's shape (0-d for a number scale, (1,) or
        (C,) as given), x's dtype and backend

    See: chapters/05_3_quantization.ipynb
    """
    if not isinstance(cache, _LSQCache):
        raise TypeError(f"cache must be what lsq_forward returned, got {type(cache).__name__}")
    x = cache.x
    xp = _check_dout(dout, x, tuple(x.shape))
    s, inv, z, gf = cache.scale, cache.inv_scale, cache.zero_point, cache.grad_factor
    q = xp.round(_fused_code(x, inv, z))
    below, above = q < cache.qmin, q > cache.qmax
    inside = ~(below | above)
    zeros = xp.zeros_like(dout)
    dx = xp.where(inside, dout, zeros)
    xfq = (xp.clip(q, cache.qmin, cache.qmax) - z) * s
    dscale = xp.where(inside, dout * (xfq - x) * inv,
                      xp.where(below, dout * (cache.qmin - z), dout * (cache.qmax - z))) * gf
    dzero = xp.where(inside, zeros, dout * (-1.0) * s * gf)
    if cache.axis is None:
        dscale, dzero = xp.sum(dscale), xp.sum(dzero)
        if cache.scale_shape == (1,):
            dscale, dzero = xp.reshape(dscale, (1,)), xp.reshape(dzero, (1,))
    else:
        others = tuple(d for d in range(len(x.shape)) if d != cache.axis)
        if others:
            dscale, dzero = xp.sum(dscale, axis=others), xp.sum(dzero, axis=others)
    return dx, dscale, dzero


# ----------------------------------------------------------------------------- layers
def _observer_name(observer: Any) -> str:
    """A per-tensor method of :data:`nnopt_lab.inference.calibration.OBSERVERS`, checked as the caller's ``observer``."""
    names = tuple(k for k, cls in calibration.OBSERVERS.items()
                  if not issubclass(cls, calibration.PerChannelMinMaxObserver))      # activations: one range
    if not isinstance(observer, str):
        raise TypeError(f"observer must be one of {names}, got {type(observer).__name__}")
    return check_choice("observer", observer, names)


def _backend_of(backend: Any) -> B.Backend:
    return B.active() if backend is None else B.get_backend(backend)


class FakeQuantize(Module):
    r"""Fake quantization of activations with an observed (or learned) range: ``torch.ao.quantization.FakeQuantize``.

    In training mode each forward first shows the batch to the observer, takes the observer's
    :math:`(\Delta, z)` and then fake-quantizes the batch with them (torch's ``FakeQuantize``
    with its observer enabled); in eval mode the range is frozen. Backward: the STE
    (:func:`fake_quantize_backward`). With the default moving-average observer its outputs and
    gradients equal torch's ``FakeQuantize(MovingAverageMinMaxObserver, quant_min, quant_max)``
    step after step.

    ``learnable=True`` (LSQ): the scale is a Parameter ``scale`` of shape (1,). The first batch
    seen in training mode initializes it (and the zero point) from the observer; from then on
    the scale is learned (:func:`lsq_backward`, gradient factor :func:`lsq_grad_factor` of the
    batch's size, as torch's ``_LearnableFakeQuantize(use_grad_scaling=True)``); it is clamped to
    at least :data:`~nnopt_lab.compression.quantization.SCALE_EPS` before each forward, as torch
    clamps it. The zero point stays the calibrated integer (LSQ learns the step size only).

    Parameters
    ----------
    bits : int in [1, 16] (symmetric: [2, 16])
    symmetric : bool
        False: affine unsigned codes :math:`[0, 2^b - 1]` (torch ``quint8``); True: signed
        :math:`[-(2^{b-1}-1), 2^{b-1}-1]`, zero point 0.
    observer : str
        A per-tensor method of :func:`nnopt_lab.inference.calibration.make_observer`
        (``"moving_average"``, ``"minmax"``, ``"percentile"``, ``"mse"``, ``"entropy"``).
    learnable : bool
    backend : backend name or Backend, optional
        Where the learnable scale lives (default: the active backend).
    **observer_options
        Options of the observer (``averaging_constant=0.01``, ...).

    Attributes
    ----------
    observer : calibration.Observer
    qmin, qmax : int
    scale, zero_point : float and int, or None before the first training batch
        The quantization parameters in use (learnable: the current value of the Parameter).

    Raises
    ------
    ValueError
        bits outside 1..16, an unknown observer name (from ``make_observer``); in forward, eval
        mode before any training batch ("calibrate first").

    Seed: §3.4.3 (quantization-aware training).
    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, observer: str = "moving_average",
                 learnable: bool = False, backend: Any = None, **observer_options: Any):
        super().__init__()
        self.bits = check_int("bits", bits, 1, Q.MAX_BITS)
        self.symmetric = check_bool("symmetric", symmetric)
        self.qmin, self.qmax = Q.integer_range(self.bits, self.symmetric)
        self.learnable = check_bool("learnable", learnable)
        self.observer = calibration.make_observer(_observer_name(observer), self.bits, self.symmetric,
                                                  **observer_options)
        self._scale, self._zero_point = None, None
        if self.learnable:
            self._params["scale"] = Parameter(_backend_of(backend).zeros((1,)) + 1.0)

    @property
    def scale(self) -> float | None:
        if self._scale is None or not self.learnable:
            return self._scale
        return B.float_of(self._params["scale"].data)

    @property
    def zero_point(self) -> int | None:
        return self._zero_point

    def forward(self, x):
        Q._float_array("x", x)
        if self.training and (self._scale is None or not self.learnable):
            self.observer(x)
            self._scale, self._zero_point = self.observer.calculate_qparams()
            if self.learnable:
                p = self._params["scale"]
                p.data = B.namespace(p.data).zeros_like(p.data) + self._scale
        if self._scale is None:
            raise ValueError("FakeQuantize has seen no batch in training mode, so it has no range: calibrate first "
                             "(qat.calibrate(model, x), or train it) before using it in eval mode")
        if not self.learnable:
            out, self._cache = fake_quantize_forward(x, self._scale, self._zero_point, self.qmin, self.qmax)
            return out
        p = self._params["scale"]
        xp = B.namespace(p.data)
        p.data = xp.clip(p.data, Q.SCALE_EPS, None)
        factor = lsq_grad_factor(max(math.prod(tuple(x.shape)), 1), self.qmax)
        out, self._cache = lsq_forward(x, p.data, self._zero_point, self.qmin, self.qmax, grad_factor=factor)
        return out

    def backward(self, dout, need_dx=True):
        cache = self._saved()
        if not self.learnable:
            return fake_quantize_backward(dout, cache)
        dx, dscale, _ = lsq_backward(dout, cache)
        p = self._params["scale"]
        p.grad = B.asarray(dscale, p.data)
        return dx

    def extra_repr(self):
        scheme = "symmetric" if self.symmetric else "affine"
        learn = ", learnable" if self.learnable else ""
        return f"bits={self.bits}, {scheme}, observer={self.observer.method!r}{learn}"


class QATLayer(Module):
    r"""A Linear or Conv2d whose weight is fake-quantized in every forward; the float weight trains (STE).

    .. math::

        \hat W = \text{fake\_quantize}(W;\ \Delta_c, 0), \qquad
        \Delta_c = \frac{\max_{k} |W_{c,k}|}{2^{b-1} - 1}, \qquad
        \frac{\partial L}{\partial W} = m \odot \frac{\partial L}{\partial \hat W}

    Symmetric signed codes :math:`[-(2^{b-1}-1), 2^{b-1}-1]` (torch ``qint8`` with
    ``quant_min=-127``), one scale per output channel (axis 0) or per tensor, from the current
    weight's range (torch's ``PerChannelMinMaxObserver`` / ``MinMaxObserver`` on the weight,
    recomputed at each step): every code is in range, so the STE passes every gradient. The
    inner layer computes with :math:`\hat W`; the bias stays float (torch's QAT modules too).

    ``learnable=True``: LSQ step sizes, a Parameter ``weight_scale`` of shape (C,) or (1,)
    initialized from the weight's range and then trained (:func:`lsq_backward`, factor
    :func:`lsq_grad_factor` of the weight's size); weights beyond the learned range are
    clamped and get no gradient.

    Parameters
    ----------
    layer : Linear or Conv2d
        Copied (the caller's layer is unchanged); a pruning mask on its weight is kept.
    bits : int in [2, 16]
    per_channel : bool
    learnable : bool

    ``named_parameters``: ``weight`` (the float weight), ``bias``, and ``weight_scale`` when
    learnable. :meth:`quantized_weight` gives :math:`\hat W`.

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, layer: Module, bits: int = 8, per_channel: bool = True, learnable: bool = False):
        super().__init__()
        if not isinstance(layer, (Linear, Conv2d)):
            raise TypeError(f"layer must be a Linear or Conv2d, got {type(layer).__name__}")
        self.bits = check_int("bits", bits, 1, Q.MAX_BITS)
        if self.bits < 2:
            raise ValueError(f"bits must be an int in [2, {Q.MAX_BITS}] for weights (symmetric codes -1, 0, 1 need "
                             f"2 bits), got {bits!r}")
        self.per_channel = check_bool("per_channel", per_channel)
        self.learnable = check_bool("learnable", learnable)
        self.qmin, self.qmax = Q.integer_range(self.bits, True)
        self._inner = _copy(layer)
        master = self._inner._params["weight"]
        self._params["weight"] = master
        self._inner._params["weight"] = Parameter(master.data)     # the inner layer computes with W-hat
        if "bias" in self._inner._params:
            self._params["bias"] = self._inner._params["bias"]
        self._axis = 0 if self.per_channel else None
        if self.learnable:
            scale, _ = self._minmax_qparams(master.data)
            self._params["weight_scale"] = Parameter(B.asarray(scale if self.per_channel else [scale], master.data))

    @property
    def layer(self) -> Module:
        """The wrapped layer (its weight is the quantized weight of the last forward)."""
        return self._inner

    def _minmax_qparams(self, w: Any) -> tuple[Any, Any]:
        """Symmetric (Δ, 0) from the weight's own range: per channel (float32 (C,), int32 (C,)) or per tensor."""
        try:
            if self.per_channel:
                return Q.qparams_per_channel(*Q.channel_minmax(w, 0), self.bits, True)
            xp = B.namespace(w)
            return Q.qparams(B.float_of(xp.min(w)), B.float_of(xp.max(w)), self.bits, True)
        except ValueError as error:
            raise ValueError(f"the weight cannot be quantized: {error}") from None

    def _quantize(self, w: Any) -> tuple[Any, Any]:
        if not self.learnable:
            scale, zero_point = self._minmax_qparams(w)
            return fake_quantize_forward(w, scale, zero_point, self.qmin, self.qmax, axis=self._axis)
        p = self._params["weight_scale"]
        p.data = B.namespace(p.data).clip(p.data, Q.SCALE_EPS, None)
        zero = B.namespace(p.data).zeros_like(p.data) if self.per_channel else 0
        factor = lsq_grad_factor(math.prod(tuple(w.shape)), self.qmax)
        return lsq_forward(w, p.data, zero, self.qmin, self.qmax, axis=self._axis, grad_factor=factor)

    def quantized_weight(self) -> Any:
        r""":math:`\hat W`, the weight the forward computes with (a new array)."""
        return self._quantize(self._params["weight"].data)[0]

    def forward(self, x):
        w_hat, cache = self._quantize(self._params["weight"].data)
        self._inner._params["weight"].data = w_hat
        out = self._inner.forward(x)
        self._cache = cache
        return out

    def backward(self, dout, need_dx=True):
        cache = self._saved()
        dx = self._inner.backward(dout, need_dx)
        dw_hat = self._inner._params["weight"].grad
        if self.learnable:
            dw, dscale, _ = lsq_backward(dw_hat, cache)
            self._params["weight_scale"].grad = dscale
        else:
            dw = fake_quantize_backward(dw_hat, cache)
        self._params["weight"].grad = dw
        return dx

    def macs(self, in_shape, out_shape):
        """The wrapped layer's multiply-accumulates."""
        return self._inner.macs(in_shape, out_shape)

    def extra_repr(self):
        where = "per channel" if self.per_channel else "per tensor"
        learn = ", learnable" if self.learnable else ""
        return f"{type(self._inner).__name__}({self._inner.extra_repr()}), bits={self.bits}, {where}{learn}"


# ----------------------------------------------------------------------------- models
_KEEPS_CODES = (MaxPool2d, Flatten, Dropout)        # their output values are input values: no new range
_WEIGHTED = (Linear, Conv2d, SharedLayer)


def _check_sequential(name: str, model: Any) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(f"{name} must be an nnopt_lab Sequential, got {type(model).__name__}")
    for i, layer in enumerate(model):
        for m in layer.modules():
            if isinstance(m, (BatchNorm1d, BatchNorm2d)):
                raise ValueError(f"{name}[{i}] is (or holds) a {type(m).__name__}: fold first -- call "
                                 f"nnopt_lab.compression.trimming.fold_batchnorms({name}) (QAT of a BN-folded "
                                 f"model quantizes the weights inference will use)")
    return model


def _model_backend(model: Module) -> B.Backend:
    params = model.parameters()
    if not params:
        return B.active()
    data = params[0].data
    return B.Backend(B.backend_of(data).name, B.dtype_name(data))


def prepare_qat(model: Sequential, bits: int = 8, activation_bits: int = 8, per_channel: bool = True,
                learnable: bool = False, observer: str = "moving_average") -> Sequential:
    r"""A fake-quantized copy of a (BN-folded) Sequential, ready for quantization-aware training.

    Each Linear/Conv2d becomes a :class:`QATLayer` (``bits``-bit symmetric weights, per output
    channel or per tensor); a :class:`FakeQuantize` (``activation_bits``-bit affine, the
    ``observer``'s range) is put on the input and after every ReLU, and after every
    Linear/Conv2d/SharedLayer or AvgPool2d not followed by a ReLU (the last layer's logits):
    the places where an integer model (``torch.ao``, :func:`nnopt_lab.inference.integer.convert`)
    requantizes, with ReLU fused into the layer before it. MaxPool2d, Flatten and Dropout keep
    the codes of their input and get none. A
    :class:`~nnopt_lab.compression.weight_sharing.SharedLayer` stays as it is (its codebook is
    its quantizer, trained by its own backward).

    Train the result with :func:`nnopt_lab.training.fit` unchanged (its parameters are the float
    weights, the biases and, when ``learnable``, the LSQ scales); evaluate it in eval mode (the
    ranges frozen); :func:`strip_qat` turns it back into a float Sequential with the quantized
    weights.

    Parameters
    ----------
    model : Sequential of Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, SharedLayer
        Copied; left unchanged. No BatchNorm (fold it first).
    bits : int in [2, 16]
        Weight bits.
    activation_bits : int in [1, 16]
    per_channel : bool
        One weight scale per output channel (torch's default for weights) or one per tensor.
    learnable : bool
        LSQ: learned step sizes for weights and activations.
    observer : str
        The activations' observer (:func:`nnopt_lab.inference.calibration.make_observer`).

    Returns
    -------
    Sequential, in training mode, on the model's backend.

    Raises
    ------
    ValueError
        A BatchNorm layer ("fold first"), a layer of another type (named), bits outside their
        range, an unknown observer.
    TypeError
        A model that is not a Sequential.

    Seed: §3.4.3 (quantization-aware training).
    See: chapters/05_3_quantization.ipynb
    """
    model = _check_sequential("model", model)
    bits = check_int("bits", bits, 1, Q.MAX_BITS)
    if bits < 2:
        raise ValueError(f"bits must be an int in [2, {Q.MAX_BITS}] (weights are symmetric: codes -1, 0, 1 need 2 "
                         f"bits), got {bits!r}")
    activation_bits = check_int("activation_bits", activation_bits, 1, Q.MAX_BITS)
    per_channel, learnable = check_bool("per_channel", per_channel), check_bool("learnable", learnable)
    observer = _observer_name(observer)
    supported = _WEIGHTED + _KEEPS_CODES + (ReLU, AvgPool2d)
    layers = list(model)
    for i, layer in enumerate(layers):
        if not isinstance(layer, supported):
            raise ValueError(f"model[{i}] is a {type(layer).__name__}, which prepare_qat does not quantize; supported: "
                             f"{', '.join(t.__name__ for t in supported)}")
    backend = _model_backend(model)

    def fake_quant():
        return FakeQuantize(activation_bits, observer=observer, learnable=learnable, backend=backend)

    out = [fake_quant()]
    for i, layer in enumerate(layers):
        if isinstance(layer, (Linear, Conv2d)):
            out.append(QATLayer(layer, bits, per_channel, learnable))
        else:
            out.append(_copy(layer))
        followed_by_relu = i + 1 < len(layers) and isinstance(layers[i + 1], ReLU)
        if isinstance(layer, ReLU) or (isinstance(layer, _WEIGHTED + (AvgPool2d,)) and not followed_by_relu):
            out.append(fake_quant())
    return Sequential(*out).train()


def calibrate(qat_model: Sequential, x: Any, batch_size: int = 256) -> Sequential:
    r"""Observe the activation ranges of a :func:`prepare_qat` model on ``x`` without training it.

    Every :class:`FakeQuantize` is put in training mode (its observer sees each batch), every
    other layer in eval mode (Dropout off), the batches of ``x`` are run forward in order, and
    the whole model is left in eval mode with the ranges frozen. A model prepared and
    calibrated, not trained, is post-training quantization (PTQ) in the same fake-quantized
    form as QAT: the two compare on equal terms.

    Parameters
    ----------
    qat_model : Sequential from :func:`prepare_qat`
    x : float array (N, ...) on the model's backend, N >= 1
    batch_size : int >= 1

    Returns
    -------
    qat_model itself, in eval mode.

    See: chapters/05_3_quantization.ipynb
    """
    qat_model = _check_qat("qat_model", qat_model)
    check_array("x", x, ndim=range(1, 33))
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample to calibrate on, got shape {tuple(x.shape)}")
    batch_size = check_int("batch_size", batch_size, 1)
    qat_model.eval()
    for m in qat_model.modules():
        if isinstance(m, FakeQuantize):
            m.training = True
    try:
        for start in range(0, int(x.shape[0]), batch_size):
            qat_model.forward(x[start:start + batch_size])
    finally:
        qat_model.eval()
    return qat_model


def _check_qat(name: str, qat_model: Any) -> Sequential:
    model = _check_sequential(name, qat_model)
    if not any(isinstance(m, (FakeQuantize, QATLayer)) for m in model.modules()):
        raise ValueError(f"{name} holds no FakeQuantize or QATLayer: make it with prepare_qat(model)")
    return model


def strip_qat(qat_model: Sequential) -> Sequential:
    r"""The float model a QAT model stands for: quantized weights in plain layers, no fake quantization.

    Each :class:`QATLayer` becomes a copy of its Linear/Conv2d with the weight :math:`\hat W` it
    computes with (:meth:`QATLayer.quantized_weight`: float values on the weight grid) and its
    float bias; every :class:`FakeQuantize` is dropped; the other layers are copied. The result
    is ready for :func:`nnopt_lab.inference.integer.convert` (which calibrates activations
    again) or any float use; ``qat_model`` is unchanged.

    Parameters
    ----------
    qat_model : Sequential from :func:`prepare_qat`

    Returns
    -------
    Sequential, in qat_model's mode (training / eval).

    See: chapters/05_3_quantization.ipynb
    """
    qat_model = _check_qat("qat_model", qat_model)
    layers = []
    for layer in qat_model:
        if isinstance(layer, FakeQuantize):
            continue
        if isinstance(layer, QATLayer):
            plain = _copy(layer.layer)
            plain._params["weight"].data = layer.quantized_weight()
            if layer._params["weight"].mask is not None:
                plain._params["weight"].mask = layer._params["weight"].mask
            layers.append(plain)
        else:
            layers.append(_copy(layer))
    return Sequential(*layers).train(qat_model.training)
