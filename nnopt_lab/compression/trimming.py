r"""Model trimming (seed §2.2.3, §3.2.3): merge, fold, fuse and remove, keeping the function.

* merge layers (层合并) -- :func:`fold_batchnorm` / :func:`fold_batchnorms`: an eval-mode
  BatchNorm after a Linear/Conv2d becomes part of its weight and bias;
  :func:`fuse_linear` / :func:`fuse_linears`: two Linear layers with nothing between are one;
* merge parameters (参数合并) -- :func:`duplicate_groups`, :func:`merge_duplicate_neurons`:
  hidden units with equal incoming weights compute the same value, so one of them can carry
  the sum of their outgoing weights;
* remove layers (层去除) -- :func:`remove_layers`, :func:`removal_damage`: drop a block
  whose input and output shapes agree, and measure the loss and accuracy it costs;
* remove parameters (参数去除) -- :func:`dead_units`, :func:`remove_units`: neurons or
  channels that pruning emptied are cut out of the weight matrices (the next layer's input
  slices, an intermediate BatchNorm's channels with them), giving a smaller dense model.

Every function returns a NEW model (or layer); the one passed in is not changed.

See: chapters/03_3_model_trimming.ipynb
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from .. import backend as B
from ..nn.layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                         Module, Parameter, ReLU, Sequential, _BatchNorm)
from ..nn.functional import MAX_ELEMENTS
from ..validation import as_int, check_array, check_int, check_number, check_sequence, check_shape
from .factorization import conv_from, linear_from

__all__ = ["fold_batchnorm", "fold_batchnorms", "fuse_linear", "fuse_linears", "duplicate_groups",
           "merge_duplicate_neurons", "remove_layers", "RemovalDamage", "removal_damage", "dead_units",
           "remove_units"]

_ELEMENTWISE = (ReLU, Dropout)           # act on each value alone (Dropout: eval mode is the identity)
_POOLS = (MaxPool2d, AvgPool2d)          # act on each channel alone; a constant channel stays constant


# ----------------------------------------------------------------------------- helpers
def _check_sequential(model: Any) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    return model


def _describe(model: Sequential, i: int) -> str:
    return f"model[{i}] ({type(model[i]).__name__})"


def _weight(layer: Module) -> Any:
    """The layer's weight as the model uses it (masked entries zero)."""
    p = layer._params["weight"]
    return p.masked(p.data)


def _bias_or_zeros(layer: Module) -> Any:
    """The layer's bias (masked), or zeros of its output size when it has none."""
    weight = layer._params["weight"].data
    p = layer._params.get("bias")
    if p is None:
        return B.namespace(weight).zeros((weight.shape[0],), dtype=weight.dtype, device=B.device(weight))
    return p.masked(p.data)


def _same_settings(conv: Conv2d, weight: Any, bias: Any) -> Conv2d:
    """A Conv2d with ``conv``'s stride, padding, dilation and groups holding new arrays."""
    return conv_from(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _with_layers(model: Sequential, layers: list) -> Sequential:
    """A Sequential of ``layers`` in ``model``'s train/eval mode."""
    return Sequential(*layers).train(model.training)


def _copy(layer: Module) -> Module:
    """A deep copy of ``layer`` without its forward cache, sharing no array with it."""
    caches = [(m, m._cache) for m in layer.modules()]
    for m, _ in caches:
        m._cache = None
    try:
        return copy.deepcopy(layer)
    finally:
        for m, cache in caches:
            m._cache = cache


def _copies(model: Sequential) -> list:
    """Deep copies of the layers, so the result shares nothing with ``model``."""
    return [_copy(layer) for layer in model]


# ----------------------------------------------------------------------------- BatchNorm folding
def fold_batchnorm(layer: Linear | Conv2d, bn: BatchNorm1d | BatchNorm2d) -> Linear | Conv2d:
    r"""The Linear/Conv2d that computes ``bn(layer(x))`` in eval mode (running statistics).

    With :math:`s_o = \gamma_o / \sqrt{\hat\sigma^2_o + \epsilon}` for each output channel o,

    .. math::
        W'_{o,\dots} = s_o\, W_{o,\dots}, \qquad b'_o = (b_o - \hat\mu_o)\, s_o + \beta_o

    (:math:`b_o = 0` for a layer without bias), as ``torch.nn.utils.fusion.fuse_conv_bn_eval``
    and ``fuse_linear_bn_eval`` compute it. A pruning mask on the weight is kept (a zero
    weight stays zero).

    Parameters
    ----------
    layer : Linear (with a BatchNorm1d) or Conv2d (with a BatchNorm2d)
    bn : BatchNorm1d or BatchNorm2d with ``num_features`` = the layer's outputs

    Returns
    -------
    A new layer of ``layer``'s type, with a bias; ``layer`` and ``bn`` are unchanged.

    See: chapters/03_3_model_trimming.ipynb
    """
    pairs = {Linear: BatchNorm1d, Conv2d: BatchNorm2d}
    if type(layer) not in pairs:
        raise TypeError(f"layer must be an nnopt_lab Linear or Conv2d, got {type(layer).__name__}")
    if not isinstance(bn, pairs[type(layer)]):
        raise TypeError(f"bn must be a {pairs[type(layer)].__name__} to follow a {type(layer).__name__}, "
                        f"got {type(bn).__name__}")
    weight = layer._params["weight"]
    outputs = weight.shape[0]
    if bn.num_features != outputs:
        raise ValueError(f"bn has {bn.num_features} features but layer has {outputs} outputs")
    xp = B.namespace(weight.data)
    scale = bn._params["weight"].data / xp.sqrt(bn._buffers["running_var"] + bn.eps)
    shape = (outputs,) + (1,) * (weight.data.ndim - 1)
    folded_weight = _weight(layer) * xp.reshape(scale, shape)
    folded_bias = (_bias_or_zeros(layer) - bn._buffers["running_mean"]) * scale + bn._params["bias"].data
    new = linear_from(folded_weight, folded_bias) if isinstance(layer, Linear) else \
        _same_settings(layer, folded_weight, folded_bias)
    new._params["weight"].mask = weight.mask
    return new.train(layer.training)


def fold_batchnorms(model: Sequential) -> Sequential:
    r"""``model`` with every BatchNorm folded into the Linear/Conv2d before it (:func:`fold_batchnorm`).

    The result computes what ``model.eval()`` computes, with one layer fewer per BatchNorm.
    Nested Sequentials are folded inside themselves.

    Raises
    ------
    ValueError
        When a BatchNorm does not directly follow a Linear or Conv2d (it is named by its
        position, ``model[3] (BatchNorm2d) follows model[2] (ReLU)``): folding it would change
        the function.

    See: chapters/03_3_model_trimming.ipynb
    """
    _check_sequential(model)
    layers: list = []
    for i, layer in enumerate(model):
        if isinstance(layer, _BatchNorm):
            if i == 0 or not isinstance(model[i - 1], (Linear, Conv2d)):
                after = f"follows {_describe(model, i - 1)}" if i else "is the first layer"
                raise ValueError(f"cannot fold {_describe(model, i)}: it {after}, not a Linear or Conv2d")
            layers[-1] = fold_batchnorm(model[i - 1], layer)
        elif isinstance(layer, Sequential):
            layers.append(fold_batchnorms(layer))
        else:
            layers.append(_copy(layer))
    return _with_layers(model, layers)


# ----------------------------------------------------------------------------- Linear fusion
def fuse_linear(first: Linear, second: Linear) -> Linear:
    r"""One Linear computing ``second(first(x))``: :math:`W = W_2 W_1`, :math:`b = W_2 b_1 + b_2`.

    Exact in real arithmetic: nothing non-linear lies between. It saves only when the hidden
    width h is large: parameters :math:`h(d_{in} + d_{out}) \to d_{in} d_{out}`, the same for
    the MACs (a rank-h bottleneck, :func:`~nnopt_lab.compression.factorization.low_rank_linear`,
    is the reverse).

    Parameters
    ----------
    first : Linear(d_in, h)
    second : Linear(h, d_out)

    Returns
    -------
    Linear(d_in, d_out), with a bias when either layer has one.

    See: chapters/03_3_model_trimming.ipynb
    """
    for name, layer in (("first", first), ("second", second)):
        if not isinstance(layer, Linear):
            raise TypeError(f"{name} must be an nnopt_lab Linear, got {type(layer).__name__}")
    if second.in_features != first.out_features:
        raise ValueError(f"second takes {second.in_features} features but first gives {first.out_features}")
    w1, w2 = _weight(first), _weight(second)
    has_bias = "bias" in first._params or "bias" in second._params
    bias = w2 @ _bias_or_zeros(first) + _bias_or_zeros(second) if has_bias else None
    return linear_from(w2 @ w1, bias).train(second.training)


def fuse_linears(model: Sequential) -> Sequential:
    """``model`` with every run of adjacent Linear layers fused into one (:func:`fuse_linear`).

    See: chapters/03_3_model_trimming.ipynb
    """
    _check_sequential(model)
    layers: list = []
    for i, layer in enumerate(model):
        if isinstance(layer, Linear) and i and isinstance(model[i - 1], Linear):
            layers[-1] = fuse_linear(layers[-1], layer)
        else:
            layers.append(_copy(layer))
    return _with_layers(model, layers)


# ----------------------------------------------------------------------------- duplicate neurons
def duplicate_groups(weight: Any, bias: Any | None = None, tol: float = 0.0) -> list[list[int]]:
    r"""Groups of rows (hidden units) whose incoming weights and bias agree within ``tol``.

    Unit j joins the group of the first unit i before it (in index order) with
    :math:`\max(\max_k |W_{jk} - W_{ik}|,\ |b_j - b_i|) \le \text{tol}`; groups of one are left out.

    Parameters
    ----------
    weight : (units, inputs) array
    bias : (units,) array or None
    tol : float >= 0 (0: exact duplicates)

    Returns
    -------
    list of lists of int, each sorted, the first entry the unit that stays.

    See: chapters/03_3_model_trimming.ipynb
    """
    check_array("weight", weight, 2, "(units, inputs)")
    tol = check_number("tol", tol, 0.0)
    if 0 in weight.shape:
        raise ValueError(f"weight must have at least one unit and one input, got shape {tuple(weight.shape)}")
    xp = B.namespace(weight)
    rows = weight
    if bias is not None:
        check_array("bias", bias, 1, "(units,)")
        if not B.same_kind(bias, weight) or bias.dtype != weight.dtype:
            raise TypeError(f"bias must be on weight's backend and dtype ({B.backend_of(weight).name}, "
                            f"{B.dtype_name(weight)}), got {B.backend_of(bias).name}, {B.dtype_name(bias)}")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},) for weight {tuple(weight.shape)}, "
                             f"got {tuple(bias.shape)}")
        rows = xp.concat([weight, xp.reshape(bias, (-1, 1))], axis=1)
    if not bool(xp.all(xp.isfinite(rows))):
        raise ValueError("weight and bias must be finite to compare units")
    close = [B.to_numpy(xp.max(xp.abs(rows - rows[i:i + 1, :]), axis=1) <= tol)   # one row at a time:
             for i in range(rows.shape[0])]                                         # memory O(units·inputs)
    taken, groups = set(), []
    for i in range(rows.shape[0]):
        if i in taken:
            continue
        group = [j for j in range(i, rows.shape[0]) if j not in taken and close[i][j]]
        taken.update(group)
        if len(group) > 1:
            groups.append(group)
    return groups


def merge_duplicate_neurons(model: Sequential, layer: int, tol: float = 0.0) -> Sequential:
    r"""Merge the duplicate hidden units of ``model[layer]`` (a Linear) into one each.

    The units of a group (:func:`duplicate_groups`) receive the same pre-activation
    :math:`z`, so after any elementwise activation they emit the same :math:`a(z)`, and the
    next Linear sees :math:`\sum_{j\in G} W^{(2)}_{:,j}\, a(z)`. Keeping the first unit i of
    each group with the summed column

    .. math:: W^{(2)}_{:,i} \leftarrow \sum_{j \in G} W^{(2)}_{:,j}

    and dropping the others leaves the outputs unchanged for exact duplicates (``tol = 0``);
    for near duplicates the kept unit stands in for the others, an error that grows with
    ``tol`` and the activation's slope.

    Parameters
    ----------
    model : Sequential
    layer : int, the index of a Linear followed by elementwise layers (ReLU, Dropout) and then a Linear
    tol : float >= 0

    Returns
    -------
    A new Sequential with ``model[layer]`` narrower and the next Linear's inputs summed.

    See: chapters/03_3_model_trimming.ipynb
    """
    _check_sequential(model)
    first, between, consumer = _linear_chain(model, layer)
    groups = duplicate_groups(_weight(model[first]), _bias_or_zeros(model[first]), tol)
    layers = _copies(model)
    if not groups:
        return _with_layers(model, layers)
    nxt = layers[consumer]._params["weight"]
    mask, nxt.mask = nxt.mask, None
    nxt.data = _sum_columns(_weight(model[consumer]), groups, lambda a, b: a + b)
    if mask is not None:                  # a merged column lives where any of its parts lived
        nxt.mask = _sum_columns(mask, groups, lambda a, b: B.namespace(a).maximum(a, b))
    drop = [j for group in groups for j in group[1:]]
    return _remove(model, _with_layers(model, layers), first, drop, between, consumer, None, absorb=False)


def _sum_columns(matrix: Any, groups: list[list[int]], combine) -> Any:
    """``matrix`` with column ``group[0]`` of each group replaced by the combination of the group's columns."""
    columns = [matrix[:, j] for j in range(matrix.shape[1])]
    for group in groups:
        for j in group[1:]:
            columns[group[0]] = combine(columns[group[0]], columns[j])
    return B.namespace(matrix).stack(columns, axis=1)


def _linear_chain(model: Sequential, layer: Any) -> tuple[int, list[int], int]:
    """``model[layer]`` is a Linear, then elementwise layers, then a Linear: their positions."""
    i = check_int("layer", layer, 0, len(model) - 1)
    if not isinstance(model[i], Linear):
        raise ValueError(f"layer must be the index of a Linear, got {i}: {_describe(model, i)}")
    for j in range(i + 1, len(model)):
        if isinstance(model[j], Linear):
            return i, list(range(i + 1, j)), j
        if not isinstance(model[j], _ELEMENTWISE):
            raise ValueError(f"{_describe(model, j)} lies between model[{i}] and the next Linear: only "
                             f"elementwise layers (ReLU, Dropout) keep duplicate units equal")
    raise ValueError(f"model[{i}] has no Linear after it: its units' outputs are the model's outputs")


# ----------------------------------------------------------------------------- removing layers
def _chain_shape(model: Sequential, input_shape: tuple, what: str, positions: list[int] | None = None) -> tuple:
    """The output shape of one zero sample through ``model`` (eval mode), or a ValueError naming ``what``
    and the failing layer by its position in the caller's model (``positions[i]``)."""
    params = model.parameters()
    backend = B.backend_of(params[0].data) if params else B.active()
    if math.prod(input_shape) > MAX_ELEMENTS:
        raise ValueError(f"input_shape {input_shape} has {math.prod(input_shape)} values, more than 2**40")
    x = backend.zeros((1,) + input_shape)
    was_training = model.training
    model.eval()
    try:
        for i, layer in enumerate(model):
            try:
                x = layer.forward(x)
            except (TypeError, ValueError) as error:
                where = f"model[{i if positions is None else positions[i]}] ({type(layer).__name__})"
                raise ValueError(f"{what}: the shapes do not chain at {where}, which gets a "
                                 f"batch of shape {tuple(x.shape)}: {error}") from None
    finally:
        model.train(was_training)
    return tuple(x.shape)


def remove_layers(model: Sequential, start: int, stop: int | None = None, *, input_shape: tuple) -> Sequential:
    """``model`` without the layers ``model[start:stop]`` (``stop`` default ``start + 1``).

    Parameters
    ----------
    model : Sequential
    start, stop : ints with 0 <= start < stop <= len(model)
    input_shape : int or tuple of int, keyword only
        One sample's shape (no batch axis), to check that the remaining layers chain.

    Raises
    ------
    ValueError
        When the remaining layers do not chain (a layer gets an input of the wrong shape) or
        the model's output shape changes; when nothing would be left.

    See: chapters/03_3_model_trimming.ipynb
    """
    _check_sequential(model)
    start = check_int("start", start, 0, len(model) - 1)
    if stop is not None and as_int(stop) is not None and as_int(stop) <= start:
        raise ValueError(f"stop must be greater than start={start} (and at most {len(model)}), got {stop!r}")
    stop = start + 1 if stop is None else check_int("stop", stop, start + 1, len(model))
    input_shape = check_shape("input_shape", input_shape)
    if stop - start == len(model):
        raise ValueError(f"removing model[{start}:{stop}] would leave no layer")
    what = f"removing model[{start}:{stop}]"
    before = _chain_shape(model, input_shape, "input_shape does not fit the model")
    kept = _copies(model)
    new = _with_layers(model, kept[:start] + kept[stop:])
    after = _chain_shape(new, input_shape, what, list(range(start)) + list(range(stop, len(model))))
    if after != before:
        raise ValueError(f"{what} changes the output shape from {before} to {after}")
    return new


@dataclass(frozen=True)
class RemovalDamage:
    """Loss and accuracy on the same data with and without ``model[start:stop]``.

    See: chapters/03_3_model_trimming.ipynb
    """

    start: int
    stop: int
    loss_before: float
    loss_after: float
    accuracy_before: float
    accuracy_after: float
    model: Sequential

    def __str__(self) -> str:
        return (f"without model[{self.start}:{self.stop}]: loss {self.loss_before:.4f} -> {self.loss_after:.4f}, "
                f"accuracy {self.accuracy_before:.4f} -> {self.accuracy_after:.4f}")


def removal_damage(model: Sequential, start: int, stop: int | None, data: tuple, loss_fn=None) -> RemovalDamage:
    """Remove ``model[start:stop]`` (:func:`remove_layers`) and measure loss and accuracy on ``data``.

    Parameters
    ----------
    model : Sequential (a classifier: logits (N, K))
    start, stop : as in :func:`remove_layers`
    data : (X, y)
    loss_fn : as in :func:`nnopt_lab.training.evaluate` (default cross-entropy)

    Returns
    -------
    RemovalDamage, whose ``model`` is the model without the block (not retrained).

    See: chapters/03_3_model_trimming.ipynb
    """
    from ..training.loop import check_xy, evaluate    # training imports the nn; import it when needed

    x, _ = check_xy("data", data)
    new = remove_layers(model, start, stop, input_shape=tuple(x.shape[1:]))
    loss0, acc0 = evaluate(model, data, loss_fn)
    loss1, acc1 = evaluate(new, data, loss_fn)
    stop = start + 1 if stop is None else stop
    return RemovalDamage(int(start), int(stop), loss0, loss1, acc0, acc1, new)


# ----------------------------------------------------------------------------- removing units
def dead_units(layer: Linear | Conv2d) -> list[int]:
    """Output units (Linear rows) or channels (Conv2d filters) whose incoming weights are all zero.

    The weights are read as the model uses them, masked (``Parameter.mask``): a unit that
    structured pruning masked out is dead even before ``apply_mask``. Its output is the
    constant bias (0 without one), which :func:`remove_units` folds into the next layer.

    See: chapters/03_3_model_trimming.ipynb
    """
    if not isinstance(layer, (Linear, Conv2d)):
        raise TypeError(f"layer must be an nnopt_lab Linear or Conv2d, got {type(layer).__name__}")
    weight = _weight(layer)
    xp = B.namespace(weight)
    alive = B.to_numpy(xp.any(xp.reshape(weight, (weight.shape[0], -1)) != 0, axis=1))
    return [i for i in range(weight.shape[0]) if not alive[i]]


def _unit_chain(model: Sequential, i: int) -> tuple[list[int], int, bool]:
    """Positions of the layers between ``model[i]`` and the next layer with weights, that one's
    position, and whether a Flatten lies between (conv channels -> Linear columns)."""
    source = model[i]
    if isinstance(source, Conv2d) and source.groups != 1:
        raise ValueError(f"layer must be an ordinary convolution (groups=1), got {_describe(model, i)} "
                         f"with groups={source.groups}")
    allowed = _ELEMENTWISE + (BatchNorm1d,) if isinstance(source, Linear) else _ELEMENTWISE + _POOLS + (BatchNorm2d,)
    between, flatten = [], False
    for j in range(i + 1, len(model)):
        layer = model[j]
        if isinstance(layer, (Linear, Conv2d)):
            if isinstance(layer, Conv2d) and (flatten or isinstance(source, Linear) or layer.groups != 1):
                raise ValueError(f"{_describe(model, j)} cannot take the channels of {_describe(model, i)} "
                                 f"(only an ordinary convolution after a convolution)")
            if isinstance(layer, Linear) and isinstance(source, Conv2d) and not flatten:
                raise ValueError(f"{_describe(model, j)} follows the convolution {_describe(model, i)} "
                                 f"without a Flatten")
            return between, j, flatten
        if isinstance(layer, Flatten) and isinstance(source, Conv2d) and not flatten:
            flatten = True
        elif not isinstance(layer, allowed) or (flatten and not isinstance(layer, _ELEMENTWISE)):
            raise ValueError(f"{_describe(model, j)} lies between {_describe(model, i)} and the next layer "
                             f"with weights: remove_units follows only ReLU, Dropout, pooling, BatchNorm and "
                             f"one Flatten")
        between.append(j)
    raise ValueError(f"{_describe(model, i)} has no layer with weights after it: removing its units would "
                     f"change the model's outputs")


def _check_indices(indices: Any, count: int, what: str) -> list[int]:
    items = check_sequence("indices", indices)
    out = sorted({check_int(f"indices[{k}]", v, 0, count - 1) for k, v in enumerate(items)})
    if len(out) == count:
        raise ValueError(f"indices would remove all {count} {what}: at least one must stay")
    return out


def remove_units(model: Sequential, layer: int, indices: Any = None) -> Sequential:
    r"""Physically remove output units (Linear) or channels (Conv2d) of ``model[layer]``.

    The layer loses rows ``indices`` of its weight and bias; an intermediate BatchNorm loses
    those channels; the next Linear/Conv2d loses the matching input columns -- after a
    Flatten, channel c of an (C, H, W) map is the columns :math:`cHW \dots (c+1)HW - 1`.
    Masks are sliced with their weights. The result is a smaller dense model.

    A removed unit whose incoming weights are all zero (:func:`dead_units`) emits a
    constant: its bias :math:`b_j`, carried through the layers between as :math:`a_j`. The
    next layer's bias absorbs it, :math:`b^{(2)} \mathrel{+}= \sum_{\text{its inputs of } j}
    W^{(2)} a_j`, so that removing dead units leaves the outputs unchanged. Units with live
    weights are simply removed (Torch-Pruning's ``DependencyGraph`` does the same), which
    changes the outputs.

    Parameters
    ----------
    model : Sequential
    layer : int, the index of a Linear or an ordinary Conv2d (groups=1), followed by ReLU /
        Dropout / BatchNorm (and, for a Conv2d, pooling and one Flatten), then a Linear or Conv2d
    indices : sequence of int in [0, units) or None
        None removes the dead units (possibly none). Not all of them.

    Raises
    ------
    ValueError
        For indices out of range or removing every unit; a chain it cannot follow; a dead
        channel whose constant is not zero before a convolution that pads (zero padding makes
        the constant's contribution differ at the borders: it cannot become a bias).

    See: chapters/03_3_model_trimming.ipynb
    """
    _check_sequential(model)
    i = check_int("layer", layer, 0, len(model) - 1)
    if not isinstance(model[i], (Linear, Conv2d)):
        raise ValueError(f"layer must be the index of a Linear or Conv2d, got {i}: {_describe(model, i)}")
    between, consumer, flatten = _unit_chain(model, i)
    units = model[i]._params["weight"].shape[0]
    drop = dead_units(model[i]) if indices is None else _check_indices(indices, units, "units")
    if len(drop) == units:
        raise ValueError(f"all {units} units of {_describe(model, i)} are dead: removing them all leaves no model")
    hw = None
    if flatten:
        inputs = model[consumer].in_features
        if inputs % units:
            raise ValueError(f"{_describe(model, consumer)} takes {inputs} features, not a multiple of the "
                             f"{units} channels of {_describe(model, i)}")
        hw = inputs // units
    return _remove(model, _with_layers(model, _copies(model)), i, drop, between, consumer, hw)


def _constants(model: Sequential, i: int, between: list[int], dead: list[int]) -> list[float]:
    """What each dead unit of ``model[i]`` emits after the layers ``between`` (eval mode)."""
    source = model[i]
    bias = _bias_or_zeros(source)
    xp = B.namespace(bias)
    if isinstance(source, Conv2d):
        side, width = _probe_size([model[j] for j in between if isinstance(model[j], _POOLS)])
        probe = xp.reshape(bias, (1, -1, 1, 1)) + xp.zeros((1, bias.shape[0], side, width), dtype=bias.dtype,
                                                          device=B.device(bias))
    else:
        probe = xp.reshape(bias, (1, -1))
    for j in between:
        if isinstance(model[j], Flatten):
            break
        probe = _copy(model[j]).eval().forward(probe)
    flat = B.to_numpy(xp.reshape(probe, (probe.shape[0], probe.shape[1], -1))[0, :, 0])
    return [float(flat[u]) for u in dead]


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _probe_size(pools: list) -> tuple[int, int]:
    """The smallest (H, W) that leaves at least 1 x 1 after ``pools``: need <- (need - 1)·stride + kernel."""
    need = [1, 1]
    for pool in reversed(pools):
        kernel, stride = _pair(pool.kernel_size), _pair(pool.stride)
        need = [(n - 1) * s + k for n, s, k in zip(need, stride, kernel)]
    return need[0], need[1]


def _keep_rows(p, keep: Any, axis: int):
    """Parameter ``p``'s data (and mask) restricted to the indices ``keep`` along ``axis``."""
    xp = B.namespace(p.data)
    mask = p.mask
    p.mask = None
    p.data = B.copy(xp.take(p.data, keep, axis=axis))
    if mask is not None:
        p.mask = xp.take(mask, keep, axis=axis)


def _remove(model: Sequential, new: Sequential, i: int, drop: list[int], between: list[int], consumer: int,
            flatten_hw: int | None, absorb: bool = True) -> Sequential:
    """In ``new`` (a copy of ``model``), remove units ``drop`` of layer i, through ``between`` to ``consumer``;
    ``absorb``: fold the constants of dropped dead units into the consumer's bias."""
    if not drop:
        return new
    source = new[i]
    units = source._params["weight"].shape[0]
    xp = B.namespace(source._params["weight"].data)
    device = B.device(source._params["weight"].data)
    keep_list = [u for u in range(units) if u not in set(drop)]
    keep = xp.asarray(keep_list, dtype=xp.int64, device=device)
    dead = [u for u in drop if u in set(dead_units(model[i]))] if absorb else []
    _absorb_constants(model, new, i, between, consumer, dead, flatten_hw)

    for p in source._params.values():
        _keep_rows(p, keep, 0)
    _resize(source, len(keep_list))
    for j in between:
        if isinstance(new[j], _BatchNorm):
            bn = new[j]
            for p in bn._params.values():
                _keep_rows(p, keep, 0)
            for name in ("running_mean", "running_var"):
                bn._buffers[name] = B.copy(xp.take(bn._buffers[name], keep, axis=0))
            bn.num_features = len(keep_list)
    columns = keep
    if flatten_hw is not None:
        columns = xp.asarray([c * flatten_hw + k for c in keep_list for k in range(flatten_hw)],
                             dtype=xp.int64, device=device)
    _keep_rows(new[consumer]._params["weight"], columns, 1)
    _resize_inputs(new[consumer], int(columns.shape[0]))
    return new


def _resize(layer: Module, outputs: int) -> None:
    if isinstance(layer, Linear):
        layer.out_features = outputs
    else:
        layer.out_channels = outputs


def _resize_inputs(layer: Module, inputs: int) -> None:
    if isinstance(layer, Linear):
        layer.in_features = inputs
    else:
        layer.in_channels = inputs


def _absorb_constants(model: Sequential, new: Sequential, i: int, between: list[int], consumer: int,
                      dead: list[int], flatten_hw: int | None) -> None:
    """Add what the dead units' constant outputs contributed to ``new[consumer]``'s bias."""
    if not dead:
        return
    constants = _constants(model, i, between, dead)
    if not any(constants):
        return
    target = new[consumer]
    weight = _weight(model[consumer])
    xp = B.namespace(weight)
    if isinstance(target, Conv2d) and target.padding != (0, 0):
        live = [(u, a) for u, a in zip(dead, constants) if a != 0.0]
        raise ValueError(f"unit {live[0][0]} of {_describe(model, i)} has zero weights but emits the constant "
                         f"{live[0][1]:.6g} into {_describe(model, consumer)}, which pads with zeros: the constant "
                         f"cannot become a bias there; zero its bias first (and the BatchNorm's, if any)")
    extra = xp.zeros((weight.shape[0],), dtype=weight.dtype, device=B.device(weight))
    for u, a in zip(dead, constants):
        if a == 0.0:
            continue
        if isinstance(target, Conv2d):
            extra = extra + a * xp.sum(weight[:, u, :, :], axis=(1, 2))
        elif flatten_hw is not None:
            extra = extra + a * xp.sum(weight[:, u * flatten_hw:(u + 1) * flatten_hw], axis=1)
        else:
            extra = extra + a * weight[:, u]
    bias = target._params.get("bias")
    if bias is None:
        target._params["bias"] = Parameter(extra)
    else:
        bias.data = bias.data + extra
