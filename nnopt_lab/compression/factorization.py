r"""Splitting a layer into cheaper ones (seed §2.2.1, §3.2.1 "split the model"): low rank and separable.

Three splits, each from the singular value decomposition of a reshaped weight, and each the
best approximation of its kind in the Frobenius norm (Eckart--Young: truncating an SVD to
rank :math:`r` leaves the error :math:`\sqrt{\sum_{i>r}\sigma_i^2}`, and no rank-:math:`r`
matrix is closer):

* :func:`low_rank_linear` -- ``Linear(d_in, d_out)`` into ``Linear(d_in, r)`` then
  ``Linear(r, d_out)``: :math:`W \approx U_r\Sigma_r V_r^\top`;
* :func:`spatially_separable` -- a :math:`k_h\times k_w` convolution into a
  :math:`k_h\times 1` one to :math:`R` channels, then a :math:`1\times k_w` one
  (Jaderberg, Vedaldi & Zisserman 2014, scheme 2);
* :func:`to_depthwise_separable` -- a convolution into a depthwise :math:`k_h\times k_w` one
  (``groups = C_in``) and a pointwise :math:`1\times 1` one (MobileNet's block), fitted by a
  rank-:math:`m` SVD per input channel; :func:`depthwise_separable` builds the pair fresh.

:func:`rank_for_energy` picks the smallest rank that keeps a fraction of
:math:`\sum\sigma_i^2`; :func:`truncation_error` is the Eckart--Young error;
:func:`savings` counts parameters, bytes and MACs before and after any of these.

The SVD is the backend's own linear algebra (``xp.linalg.svd`` of the array API standard).
Building a layer here draws no random numbers: the project's generator is left as it was.

See: chapters/03_1_model_compression.ipynb
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .. import backend as B
from .. import measure
from ..nn.layers import Conv2d, Linear, Module, Sequential
from ..validation import as_int, check_array, check_bool, check_int, check_number, check_shape

__all__ = ["rank_for_energy", "truncation_error", "low_rank_linear", "spatially_separable",
           "depthwise_separable", "to_depthwise_separable", "Savings", "savings"]

MAX_BLOCK_PARAMETERS = 2 ** 28
"""Largest depthwise-separable block :func:`depthwise_separable` builds (1 GiB of float32): more is a typo."""


# ----------------------------------------------------------------------------- helpers
def _quietly(build: Callable[[], Module]) -> Module:
    """``build()`` without consuming the project's random numbers (its initial values get replaced)."""
    generator = B.rng()
    state = generator.bit_generator.state
    try:
        return build()
    finally:
        generator.bit_generator.state = state


def linear_from(weight: Any, bias: Any | None = None) -> Linear:
    """A :class:`Linear` holding ``weight`` (out, in) and ``bias`` (out,) or None (no copies made)."""
    out_features, in_features = weight.shape
    layer = _quietly(lambda: Linear(in_features, out_features, bias=bias is not None,
                                    backend=B.backend_of(weight)))
    layer._params["weight"].data = weight
    if bias is not None:
        layer._params["bias"].data = bias
    return layer


def conv_from(weight: Any, bias: Any | None = None, stride: tuple = (1, 1), padding: tuple = (0, 0),
              dilation: tuple = (1, 1), groups: int = 1) -> Conv2d:
    """A :class:`Conv2d` holding ``weight`` (Cout, Cin/groups, kh, kw) and ``bias`` (no copies made)."""
    cout, cin_g, kh, kw = weight.shape
    layer = _quietly(lambda: Conv2d(cin_g * groups, cout, (kh, kw), stride, padding, dilation, groups,
                                    bias=bias is not None, backend=B.backend_of(weight)))
    layer._params["weight"].data = weight
    if bias is not None:
        layer._params["bias"].data = bias
    return layer


def _check_layer(name: str, layer: Any, kind: type) -> Any:
    if not isinstance(layer, kind):
        raise TypeError(f"{name} must be an nnopt_lab {kind.__name__}, got {type(layer).__name__}")
    return layer


def _check_finite(name: str, weight: Any) -> None:
    xp = B.namespace(weight)
    if not bool(xp.all(xp.isfinite(weight))):
        raise ValueError(f"{name}'s weight holds NaN or inf: its SVD is undefined")


def _weight(layer: Module) -> Any:
    """The weight as the model uses it: pruned entries (``Parameter.mask``) are zero."""
    p = layer._params["weight"]
    return p.masked(p.data)


def _bias(layer: Module) -> Any | None:
    bias = layer._params.get("bias")
    return None if bias is None else B.copy(bias.data)


def _svd(matrix: Any) -> tuple[Any, Any, Any]:
    """Thin SVD ``matrix = u @ diag(s) @ vt`` (stacks too), singular values in decreasing order."""
    u, s, vt = B.namespace(matrix).linalg.svd(matrix, full_matrices=False)
    return u, s, vt


def _choose_rank(s: Any, rank: Any, energy: Any, max_rank: int) -> int:
    """``rank`` checked against [1, max_rank], or the rank that keeps ``energy`` of Σσ²."""
    if (rank is None) == (energy is None):
        raise TypeError(f"give exactly one of rank and energy, got rank={rank!r} and energy={energy!r}")
    if rank is not None:
        return check_int("rank", rank, 1, max_rank)
    return rank_for_energy(s, energy)


# ----------------------------------------------------------------------------- rank
def _singular_values(values: Any) -> list[list[float]]:
    """``values`` (k,) or a stack (..., k) as rows of Python floats: finite, >= 0, decreasing, k >= 1."""
    check_array("singular_values", values, ndim=range(1, 33), layout="(k,) or (..., k)")
    if not B.dtype_name(values).startswith(("float", "int", "uint")):
        raise TypeError(f"singular_values must be real numbers, got dtype {B.dtype_name(values)}")
    array = B.to_numpy(values)
    if array.shape[-1] == 0 or 0 in array.shape:
        raise ValueError(f"singular_values must hold at least one value per row, got shape {tuple(array.shape)}")
    rows = [[float(v) for v in row] for row in array.reshape(-1, array.shape[-1])]
    for row in rows:                       # a few numbers per layer: plain Python
        if not all(math.isfinite(v) and v >= 0.0 for v in row):
            raise ValueError("singular_values must be finite and >= 0 (as an SVD gives them)")
        if any(a < b for a, b in zip(row, row[1:])):
            raise ValueError("singular_values must be in decreasing order (as xp.linalg.svd gives them)")
    return rows


def _squares(row: list[float]) -> list[float]:
    """σ_i² / σ_max² (scaled, so that 1e300 does not overflow; all 0 for a zero row)."""
    top = row[0] or 1.0
    return [(v / top) ** 2 for v in row]


def rank_for_energy(singular_values: Any, energy: float) -> int:
    r"""The smallest rank :math:`r` whose singular values keep a fraction ``energy`` of the total.

    .. math:: r = \min\Big\{ r \ge 1 : \sum_{i\le r}\sigma_i^2 \;\ge\; e \sum_i \sigma_i^2 \Big\}

    Parameters
    ----------
    singular_values : (k,) array, finite, >= 0, in decreasing order (as ``xp.linalg.svd`` returns them)
    energy : float in (0, 1]
        ``1`` keeps every nonzero singular value (a rank-deficient matrix gets its rank).

    Returns
    -------
    int in [1, k]

    See: chapters/03_1_model_compression.ipynb
    """
    check_array("singular_values", singular_values, ndim=1, layout="(k,)")
    energy = check_number("energy", energy, 0.0, 1.0, low_open=True)
    squares = _squares(_singular_values(singular_values)[0])
    total = sum(squares)
    kept = 0.0
    for r, square in enumerate(squares, 1):
        kept += square                      # the same sum, in the same order, as total: exact at r = k
        if kept >= energy * total:
            return r
    return len(squares)


def truncation_error(singular_values: Any, rank: int) -> float:
    r"""Eckart--Young: the Frobenius error of the best rank-``rank`` approximation,
    :math:`\sqrt{\sum_{i>r}\sigma_i^2}`.

    Parameters
    ----------
    singular_values : (k,) array, or (..., k) for a stack (their errors add in squares);
        finite, >= 0, decreasing along the last axis
    rank : int in [1, k]

    See: chapters/03_1_model_compression.ipynb
    """
    rows = _singular_values(singular_values)
    if as_int(rank) is not None and not 1 <= as_int(rank) <= len(rows[0]):
        raise ValueError(f"rank must be an int in [1, {len(rows[0])}] (the number of singular_values), got {rank!r}")
    rank = check_int("rank", rank, 1, len(rows[0]))
    top = max(row[0] for row in rows) or 1.0
    return top * math.sqrt(sum((v / top) ** 2 for row in rows for v in row[rank:]))


# ----------------------------------------------------------------------------- Linear
def low_rank_linear(layer: Linear, rank: int | None = None, *, energy: float | None = None) -> Sequential:
    r"""Split ``Linear(d_in, d_out)`` into ``Linear(d_in, r, bias=False)`` then ``Linear(r, d_out)``.

    With the SVD :math:`W = U\Sigma V^\top` (W is (d_out, d_in)), the rank-:math:`r`
    truncation is shared evenly between the two factors:

    .. math::
        W \approx W_2 W_1, \qquad W_1 = \Sigma_r^{1/2} V_r^\top \;(r \times d_{in}), \qquad
        W_2 = U_r \Sigma_r^{1/2} \;(d_{out} \times r),

    and the bias stays on the second layer. The weight's Frobenius error is
    :math:`\|W - W_2W_1\|_F = \sqrt{\sum_{i>r}\sigma_i^2}` (:func:`truncation_error`), the
    smallest any rank-:math:`r` pair can reach. Parameters go from
    :math:`d_{out} d_{in}` to :math:`r(d_{in} + d_{out})`: a saving when
    :math:`r < d_{in} d_{out} / (d_{in} + d_{out})`.

    Parameters
    ----------
    layer : Linear
    rank : int in [1, min(d_out, d_in)]
    energy : float in (0, 1], keyword only
        Instead of ``rank``: the smallest rank keeping this fraction of :math:`\sum\sigma_i^2`
        (:func:`rank_for_energy`). Give exactly one of the two.

    Returns
    -------
    Sequential(Linear(d_in, r, bias=False), Linear(r, d_out, bias=layer's))
        New layers on the layer's backend and dtype; ``layer`` is unchanged.

    See: chapters/03_1_model_compression.ipynb
    """
    _check_layer("layer", layer, Linear)
    weight = _weight(layer)
    _check_finite("layer", weight)
    u, s, vt = _svd(weight)
    r = _choose_rank(s, rank, energy, min(weight.shape))
    root = B.namespace(s).sqrt(s[:r])
    first = vt[:r, :] * root[:, None]                  # (r, d_in)
    second = u[:, :r] * root[None, :]                  # (d_out, r)
    return Sequential(linear_from(B.copy(first)), linear_from(B.copy(second), _bias(layer)))


# ----------------------------------------------------------------------------- spatially separable
def _check_plain_conv(name: str, conv: Any) -> Conv2d:
    _check_layer(name, conv, Conv2d)
    if conv.groups != 1:
        raise ValueError(f"{name} must be an ordinary convolution (groups=1), got groups={conv.groups}")
    _check_finite(name, _weight(conv))
    return conv


def spatially_separable(conv: Conv2d, rank: int | None = None, *, energy: float | None = None) -> Sequential:
    r"""Split a :math:`k_h\times k_w` convolution into a :math:`k_h\times 1` one to :math:`R`
    channels and a :math:`1\times k_w` one (Jaderberg et al. 2014, scheme 2), by one SVD.

    Reshape the weight :math:`W` (C_out, C_in, k_h, k_w) into the matrix
    :math:`M_{(c,u),(o,v)} = W_{o,c,u,v}` of shape :math:`(C_{in}k_h) \times (C_{out}k_w)`
    and truncate its SVD :math:`M = \sum_r \sigma_r\, a_r b_r^\top` to :math:`R` terms:

    .. math::
        V_{r,c,u} = \sqrt{\sigma_r}\,(a_r)_{(c,u)} \quad \text{(vertical, } R \times C_{in} \times k_h \times 1),
        \qquad
        H_{o,r,v} = \sqrt{\sigma_r}\,(b_r)_{(o,v)} \quad \text{(horizontal, } C_{out} \times R \times 1 \times k_w).

    Applying V then H is one convolution with :math:`\hat W_{o,c,u,v} = \sum_r H_{o,r,v}
    V_{r,c,u}`, and :math:`\|W - \hat W\|_F = \sqrt{\sum_{r>R}\sigma_r^2}`. Stride, padding
    and dilation split by axis: the vertical convolution takes the row ones, the horizontal
    the column ones; it is exact because the vertical convolution has no bias, so the
    columns the horizontal one pads are zeros in both. Parameters go from
    :math:`C_{out}C_{in}k_hk_w` to :math:`R(C_{in}k_h + C_{out}k_w)`.

    Parameters
    ----------
    conv : Conv2d with groups=1
    rank : int in [1, min(C_in k_h, C_out k_w)]
    energy : float in (0, 1], keyword only (instead of ``rank``, see :func:`rank_for_energy`)

    Returns
    -------
    Sequential(Conv2d(C_in, R, (k_h, 1), bias=False), Conv2d(R, C_out, (1, k_w), bias=conv's))

    See: chapters/03_1_model_compression.ipynb
    """
    _check_plain_conv("conv", conv)
    weight = _weight(conv)
    xp = B.namespace(weight)
    cout, cin, kh, kw = weight.shape
    matrix = xp.reshape(xp.permute_dims(weight, (1, 2, 0, 3)), (cin * kh, cout * kw))
    u, s, vt = _svd(matrix)
    r = _choose_rank(s, rank, energy, min(matrix.shape))
    root = xp.sqrt(s[:r])
    a = xp.reshape(u[:, :r] * root[None, :], (cin, kh, r))             # (C_in, k_h, R)
    vertical = xp.reshape(xp.permute_dims(a, (2, 0, 1)), (r, cin, kh, 1))
    b = xp.reshape(vt[:r, :] * root[:, None], (r, cout, kw))           # (R, C_out, k_w)
    horizontal = xp.reshape(xp.permute_dims(b, (1, 0, 2)), (cout, r, 1, kw))
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    return Sequential(conv_from(B.copy(vertical), None, (sh, 1), (ph, 0), (dh, 1)),
                      conv_from(B.copy(horizontal), _bias(conv), (1, sw), (0, pw), (1, dw)))


# ----------------------------------------------------------------------------- depthwise separable
def depthwise_separable(in_channels: int, out_channels: int, kernel_size: int | tuple, stride: int | tuple = 1,
                        padding: int | tuple = 0, dilation: int | tuple = 1, bias: bool = True,
                        depth_multiplier: int = 1, backend=None) -> Sequential:
    r"""A fresh depthwise-separable convolution (MobileNet): depthwise then pointwise.

    .. math::
        z_{c m + j} = D_{cm+j} \star x_c \quad (\text{depthwise, groups} = C_{in}), \qquad
        y_o = b_o + \sum_{c,j} P_{o,\,cm+j}\, z_{cm+j} \quad (1\times 1)

    with :math:`m` = ``depth_multiplier`` filters per input channel. Parameters
    :math:`C_{in} m k_h k_w + C_{out} C_{in} m (+ C_{out})` instead of
    :math:`C_{out} C_{in} k_h k_w (+ C_{out})`; MACs per output position
    :math:`C_{in} m (k_h k_w + C_{out})` instead of :math:`C_{out} C_{in} k_h k_w`.

    Parameters
    ----------
    in_channels, out_channels : int >= 1
    kernel_size, stride, dilation : int >= 1 or pair; padding : int >= 0 or pair (of the depthwise part)
    bias : bool (on the pointwise part; the depthwise part has none)
    depth_multiplier : int >= 1
    backend : name or Backend, default the active one

    Returns
    -------
    Sequential(Conv2d(C_in, C_in m, k, groups=C_in, bias=False), Conv2d(C_in m, C_out, 1, bias=bias))
        Initialized as torch initializes each convolution.

    See: chapters/03_1_model_compression.ipynb
    """
    in_channels = check_int("in_channels", in_channels)
    out_channels = check_int("out_channels", out_channels)
    depth_multiplier = check_int("depth_multiplier", depth_multiplier)
    bias = check_bool("bias", bias)
    kernel_size = check_shape("kernel_size", kernel_size, length=2, low=1)
    inner = in_channels * depth_multiplier
    count = inner * math.prod(kernel_size) + out_channels * inner
    if count > MAX_BLOCK_PARAMETERS:
        raise ValueError(f"in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel_size} and "
                         f"depth_multiplier={depth_multiplier} make {count:,} parameters, more than "
                         f"{MAX_BLOCK_PARAMETERS:,} (2**28): too large for one block")
    return Sequential(Conv2d(in_channels, inner, kernel_size, stride, padding, dilation, groups=in_channels,
                             bias=False, backend=backend),
                      Conv2d(inner, out_channels, 1, bias=bias, backend=backend))


def to_depthwise_separable(conv: Conv2d, depth_multiplier: int = 1) -> Sequential:
    r"""The depthwise-separable pair closest to a trained convolution: a rank-:math:`m` SVD per input channel.

    A depthwise-separable pair computes the convolution with weight
    :math:`\hat W_{o,c,:,:} = \sum_{j<m} P_{o,cm+j}\, D_{cm+j}` : for each input channel
    :math:`c`, the :math:`C_{out}\times k_hk_w` slice :math:`W_{:,c}` is replaced by a matrix
    of rank :math:`m`. The slices are independent, so the least-squares fit
    :math:`\min \|W - \hat W\|_F` is the truncated SVD of each slice
    :math:`W_{:,c} = \sum_j \sigma_{c,j} u_{c,j} v_{c,j}^\top` (Eckart--Young):

    .. math::
        D_{cm+j} = \sqrt{\sigma_{c,j}}\; v_{c,j} \;(k_h\times k_w), \qquad
        P_{o,cm+j} = \sqrt{\sigma_{c,j}}\; (u_{c,j})_o, \qquad
        \|W - \hat W\|_F^2 = \sum_c \sum_{j \ge m} \sigma_{c,j}^2 .

    Stride, padding and dilation go to the depthwise part, the bias to the pointwise part.
    With :math:`m = \min(C_{out}, k_hk_w)` the pair is exact.

    Parameters
    ----------
    conv : Conv2d with groups=1
    depth_multiplier : int in [1, min(C_out, k_h k_w)]

    Returns
    -------
    Sequential(Conv2d(C_in, C_in m, k, groups=C_in, bias=False), Conv2d(C_in m, C_out, 1))

    See: chapters/03_1_model_compression.ipynb
    """
    _check_plain_conv("conv", conv)
    weight = _weight(conv)
    xp = B.namespace(weight)
    cout, cin, kh, kw = weight.shape
    m = check_int("depth_multiplier", depth_multiplier, 1, min(cout, kh * kw))
    slices = xp.reshape(xp.permute_dims(weight, (1, 0, 2, 3)), (cin, cout, kh * kw))   # W[:, c] per c
    u, s, vt = _svd(slices)                                        # (C_in, C_out, k), (C_in, k), (C_in, k, kh kw)
    root = xp.sqrt(s[:, :m])                                       # (C_in, m)
    depthwise = xp.reshape(vt[:, :m, :] * root[:, :, None], (cin * m, 1, kh, kw))
    pointwise = xp.permute_dims(u[:, :, :m] * root[:, None, :], (1, 0, 2))          # (C_out, C_in, m)
    pointwise = xp.reshape(pointwise, (cout, cin * m, 1, 1))
    return Sequential(conv_from(B.copy(depthwise), None, conv.stride, conv.padding, conv.dilation, groups=cin),
                      conv_from(B.copy(pointwise), _bias(conv)))


# ----------------------------------------------------------------------------- savings
@dataclass(frozen=True)
class Savings:
    """Parameters, bytes and multiply-accumulates of one sample's forward pass, before and after.

    See: chapters/03_1_model_compression.ipynb
    """

    params_before: int
    params_after: int
    bytes_before: int
    bytes_after: int
    macs_before: int
    macs_after: int

    @property
    def param_ratio(self) -> float:
        """after / before (below 1: smaller)."""
        return self.params_after / self.params_before

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / self.macs_before

    def __str__(self) -> str:
        return (f"parameters {self.params_before:,} -> {self.params_after:,} ({self.param_ratio:.3f}×), "
                f"bytes {self.bytes_before:,} -> {self.bytes_after:,}, "
                f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.mac_ratio:.3f}×)")


def savings(before: Module, after: Module, input_shape: tuple, dtype: str | int | None = "float32") -> Savings:
    r"""What a split (or a trim) saves: parameters, bytes and MACs of one sample, before and after.

    Counted as :mod:`nnopt_lab.measure` counts them (each layer's
    :meth:`~nnopt_lab.nn.Module.macs` and stored bytes), e.g. for a Linear split to rank r:
    parameters :math:`d_{out}d_{in} + d_{out} \to r(d_{in}+d_{out}) + d_{out}`,
    MACs :math:`d_{out}d_{in} \to r(d_{in}+d_{out})`.

    Parameters
    ----------
    before, after : Module
        Models (or single layers) taking the same input.
    input_shape : int or tuple of int
        One sample without the batch axis: ``(64,)`` or ``(1, 8, 8)``.
    dtype : storage type for the bytes (see :func:`nnopt_lab.measure.model_bytes`)

    See: chapters/03_1_model_compression.ipynb
    """
    rows = []
    for name, model in (("before", before), ("after", after)):
        if not isinstance(model, Module):
            raise TypeError(f"{name} must be an nnopt_lab.nn Module, got {type(model).__name__}")
        rows.append((measure.count_parameters(model), measure.model_bytes(model, dtype),
                     measure.summary(model, input_shape).total_macs))
    (p0, b0, m0), (p1, b1, m1) = rows
    return Savings(p0, p1, b0, b1, m0, m1)
