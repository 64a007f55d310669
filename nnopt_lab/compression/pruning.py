r"""Pruning (剪枝, seed §2.2.2, §3.2.2): masks, importance criteria, sparsification and schedules.

A pruned weight is a weight whose :attr:`~nnopt_lab.nn.layers.Parameter.mask` entry is 0: the
model keeps it at exactly zero through training (optimizers mask gradients and state), and the
mask travels in ``state_dict`` as ``<name>_mask`` (torch.nn.utils.prune's key).

* **masks from scores** -- :func:`pruned_count` (how many), :func:`select_lowest` (which),
  :func:`prune_mask` (unstructured), :func:`ln_structured_mask` (whole rows / channels);
* **torch.nn.utils.prune's pruners**, on a layer's parameter, with torch's masks (ties included)
  -- :func:`l1_unstructured`, :func:`random_unstructured`, :func:`global_unstructured`,
  :func:`ln_structured`; :func:`remove_masks` makes the pruning permanent;
* **importance** (基于重要性) -- magnitude :math:`|w|`, first-order Taylor :math:`|w\,\partial L/\partial w|`
  (:func:`taylor_scores`), random (the control); **sparsity-based** (基于稀疏性) -- the average
  percentage of zero activations, :func:`apoz`;
* **model level** -- :func:`prune` brings layers (or all of them jointly) to a target sparsity;
  :func:`mask_units` and :func:`remove_pruned_units` turn structured masks into a smaller dense
  model (:func:`nnopt_lab.compression.trimming.remove_units`); :func:`sparsity`,
  :func:`sparsity_report` count the zeros;
* **sparsification** (稀疏化) -- :class:`Penalty` (L1 / L2 added to the gradients inside
  :func:`~nnopt_lab.training.fit`), :func:`soft_threshold` and :class:`ProximalL1` (exact zeros);
* **schedules** -- one-shot (:func:`prune`), iterative prune -> fine-tune
  (:func:`iterative_prune`), gradual (:class:`PolynomialDecay`, :class:`GradualPruning`),
  per-layer sensitivity (:func:`sensitivity_scan`, :meth:`SensitivityScan.plan`).

How many, and which ties -- the peers differ (``rule=``):

* torch.nn.utils.prune (the default, ``rule="torch"``) removes exactly
  :math:`k = \mathrm{round}(s\,n)` weights (Python's ``round``: half to even, so 0.5 of 5 is 2)
  by ``torch.topk``; among equal scores it picks the ones torch's CPU ``topk`` picks (its
  heap / ``nth_element`` order, reproduced here exactly; CUDA's topk may order ties otherwise);
* MIT EfficientML Lab 1 (``rule="threshold"``) takes the k-th smallest value as a threshold and
  prunes every weight at or below it (ties at the threshold all go: possibly more than k);
* tfmot (``rule="keep_ties"``) keeps every weight at or above the (n-k)-th largest (ties all
  stay: possibly fewer than k pruned; tfmot itself keeps :math:`\mathrm{round}((1-s)\,n)`,
  which differs from :math:`n - \mathrm{round}(s\,n)` at exact halves);
* Torch-Pruning removes :math:`C - \lfloor C(1-r) \rfloor` channels (it floors the count kept).

See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import backend as B
from ..nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Linear, Module, Parameter, ReLU, Sequential
from ..training.loop import MAX_EPOCHS, Callback, History, check_xy, evaluate, fit
from ..training.snapshot import preserved
from ..validation import (as_float, as_int, check_array, check_bool, check_choice, check_int, check_number,
                          check_probability, check_sequence)

__all__ = ["RULES", "CRITERIA", "MAX_ROUNDS", "pruned_count", "select_lowest", "prune_mask", "ln_structured_mask", "prunable",
           "l1_unstructured", "random_unstructured", "global_unstructured", "ln_structured", "remove_masks",
           "prune", "taylor_scores", "apoz", "mask_units", "remove_pruned_units", "sparsity", "sparsity_report",
           "LayerSparsity", "SparsityReport", "Penalty", "soft_threshold", "ProximalL1", "PolynomialDecay",
           "GradualPruning", "iterative_prune", "PruningRound", "sensitivity_scan", "SensitivityScan"]

#: How ties at the pruning threshold are resolved (see the module docstring).
RULES = ("torch", "threshold", "keep_ties")
#: Upper bound of :func:`iterative_prune`'s ``rounds`` (a typo such as 10**9 fails at once instead of running for days).
MAX_ROUNDS = 10_000
#: The criteria :func:`prune` knows by name (or pass a dict of score arrays, e.g. :func:`taylor_scores`).
CRITERIA = ("magnitude", "random")


# ----------------------------------------------------------------------------- how many
def pruned_count(amount: Any, n: int, name: str = "amount", *,
                 what: str = "the number of weights that can be pruned") -> int:
    r"""The number of entries to prune out of ``n``, by torch.nn.utils.prune's rule.

    .. math:: k = \begin{cases} \text{amount} & \text{an int in } [0, n] \\
              \mathrm{round}(\text{amount} \cdot n) & \text{a fraction in } [0, 1) \end{cases}

    ``round`` is Python's (half to even): ``pruned_count(0.5, 5) == 2``, ``pruned_count(0.5, 7) == 4``.

    Parameters
    ----------
    amount : int in [0, n] or float in [0, 1)
        numpy / torch scalars are accepted; bool is not.
    n : int >= 0
        The number of entries that can be pruned.
    name : str
        The caller's name for ``amount`` in error messages.
    what : str
        What ``n`` counts, in the caller's words (error messages name the array it comes from).

    Raises
    ------
    TypeError
        When ``amount`` is not a number.
    ValueError
        For a fraction outside [0, 1), a negative int or an int above ``n``.
    """
    n = check_int("n", n, low=0)
    count = as_int(amount)
    if count is not None:
        if not 0 <= count <= n:
            raise ValueError(f"{name} must be an int in [0, {n}] ({what}) or a fraction in [0, 1), got {amount!r}")
        return count
    if as_float(amount) is None:
        raise TypeError(f"{name} must be a fraction in [0, 1) or an int count, got {amount!r}")
    return round(check_number(name, amount, 0.0, 1.0, high_open=True) * n)


# ----------------------------------------------------------------------------- torch.topk's choice among ties
# torch.topk on the CPU (aten/src/ATen/native/cpu/SortingKernel / TopKImpl.h) fills a queue of
# (value, index) pairs and selects with libstdc++'s heap functions (k * 64 <= n) or std::nth_element
# (otherwise); which of several equal values it returns is fixed by those algorithms. The functions
# below follow them step by step on (value, index) pairs with "a is better than b" = a[0] < b[0].

def _push_heap(h: list, hole: int, top: int, value: tuple) -> None:
    parent = (hole - 1) // 2
    while hole > top and h[parent][0] < value[0]:
        h[hole] = h[parent]
        hole = parent
        parent = (hole - 1) // 2
    h[hole] = value


def _adjust_heap(h: list, first: int, hole: int, length: int, value: tuple) -> None:
    """libstdc++'s __adjust_heap on h[first:first + length] (indices relative to ``first``)."""
    top, child = hole, hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if h[first + child][0] < h[first + child - 1][0]:
            child -= 1
        h[first + hole] = h[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        h[first + hole] = h[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and h[first + parent][0] < value[0]:
        h[first + hole] = h[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    h[first + hole] = value


def _make_heap(h: list, first: int, last: int) -> None:
    length = last - first
    if length < 2:
        return
    parent = (length - 2) // 2
    while True:
        _adjust_heap(h, first, parent, length, h[first + parent])
        if parent == 0:
            return
        parent -= 1


def _heap_path(pairs: list, k: int) -> list:
    """torch's selection for k * 64 <= n: a heap of the first k, replaced by each better newcomer."""
    heap = pairs[:k]
    _make_heap(heap, 0, k)
    for item in pairs[k:]:
        if item[0] < heap[0][0]:
            if k > 1:                                   # std::pop_heap: the front to the back, re-heap
                value, heap[k - 1] = heap[k - 1], heap[0]
                _adjust_heap(heap, 0, 0, k - 1, value)
            heap[k - 1] = item
            _push_heap(heap, k - 1, 0, item)            # std::push_heap
    return heap


def _insertion_sort(a: list, first: int, last: int) -> None:
    for i in range(first + 1, last):
        value = a[i]
        if value[0] < a[first][0]:
            a[first + 1:i + 1] = a[first:i]
            a[first] = value
        else:
            j = i
            while value[0] < a[j - 1][0]:
                a[j] = a[j - 1]
                j -= 1
            a[j] = value


def _median_to_first(a: list, result: int, x: int, y: int, z: int) -> None:
    if a[x][0] < a[y][0]:
        pick = y if a[y][0] < a[z][0] else z if a[x][0] < a[z][0] else x
    elif a[x][0] < a[z][0]:
        pick = x
    elif a[y][0] < a[z][0]:
        pick = z
    else:
        pick = y
    a[result], a[pick] = a[pick], a[result]


def _partition(a: list, first: int, last: int) -> int:
    """libstdc++'s __unguarded_partition_pivot: median of three to ``first``, Hoare partition after it."""
    _median_to_first(a, first, first + 1, first + (last - first) // 2, last - 1)
    pivot, lo, hi = a[first][0], first + 1, last
    while True:
        while a[lo][0] < pivot:
            lo += 1
        hi -= 1
        while pivot < a[hi][0]:
            hi -= 1
        if not lo < hi:
            return lo
        a[lo], a[hi] = a[hi], a[lo]
        lo += 1


def _nth_element_path(pairs: list, k: int) -> list:
    """torch's selection for k * 64 > n: std::nth_element (introselect) at position k - 1."""
    a, nth = list(pairs), k - 1
    first, last = 0, len(a)
    depth = 2 * (len(a).bit_length() - 1)
    while last - first > 3:
        if depth == 0:                                  # std::__heap_select, then the nth to its place
            _make_heap(a, first, nth + 1)
            for i in range(nth + 1, last):
                if a[i][0] < a[first][0]:
                    value, a[i] = a[i], a[first]
                    _adjust_heap(a, first, 0, nth + 1 - first, value)
            a[first], a[nth] = a[nth], a[first]
            return a[:k]
        depth -= 1
        cut = _partition(a, first, last)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(a, first, last)
    return a[:k]


def _torch_topk_positions(values: list, k: int) -> list[int]:
    """The positions of the k smallest of ``values`` (Python floats, no NaN) that torch.topk picks."""
    if k == 0:
        return []
    pairs = [(v, i) for i, v in enumerate(values)]
    chosen = _heap_path(pairs, k) if k * 64 <= len(values) else _nth_element_path(pairs, k)
    return sorted(i for _, i in chosen)


# ----------------------------------------------------------------------------- which
def _check_scores(name: str, scores: Any) -> Any:
    check_array(name, scores)
    if not B.dtype_name(scores).startswith(("float", "int", "uint", "bfloat")):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {B.dtype_name(scores)}")
    xp = B.namespace(scores)
    if B.dtype_name(scores).startswith(("float", "bfloat")) and bool(xp.any(xp.isnan(scores))):
        raise ValueError(f"{name} holds NaN: a NaN score has no rank (check the weights and gradients)")
    return scores


def _select(values: Any, k: int, rule: str) -> Any:
    """Boolean array over the 1-D ``values``: True for the entries to prune (the k lowest by ``rule``)."""
    xp = B.namespace(values)
    n = values.shape[0]
    if k == 0:
        return xp.zeros((n,), dtype=xp.bool, device=B.device(values))
    if k == n:
        return xp.ones((n,), dtype=xp.bool, device=B.device(values))
    ordered = xp.sort(values)
    kth, after = ordered[k - 1], ordered[k]
    if rule == "threshold":
        return values <= kth
    if rule == "keep_ties":
        return values < after
    if not bool(kth == after):                       # no tie across the cut: the k lowest are unique
        return values <= kth
    chosen = _torch_topk_positions([float(v) for v in B.to_numpy(values).tolist()], k)
    out = xp.zeros((n,), dtype=xp.bool, device=B.device(values))
    out[xp.asarray(chosen, dtype=xp.int64, device=B.device(values))] = True
    return out


def select_lowest(scores: Any, amount: Any, *, rule: str = "torch") -> list[int]:
    r"""Indices of the entries of the 1-D ``scores`` to prune: the ``amount`` lowest.

    With ``rule="torch"`` these are exactly the indices of
    ``torch.topk(scores, k, largest=False)`` on the CPU, :math:`k` = :func:`pruned_count`,
    ties included. ``rule="threshold"`` (MIT Lab 1) prunes every entry at or below the k-th
    smallest; ``rule="keep_ties"`` (tfmot) every entry below the (k+1)-th smallest.

    Parameters
    ----------
    scores : (n,) array, no NaN
    amount : int in [0, n] or float in [0, 1)
    rule : {"torch", "threshold", "keep_ties"}

    Returns
    -------
    list of int, increasing.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    _check_scores("scores", scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    rule = check_choice("rule", rule, RULES)
    n = int(scores.shape[0])
    chosen = _select(scores, pruned_count(amount, n, what=f"the number of entries of scores, shape ({n},)"), rule)
    xp = B.namespace(scores)
    return [int(i) for i in B.to_numpy(xp.nonzero(chosen)[0]).tolist()]


def _check_mask_for(mask: Any, like: Any, name: str = "mask") -> Any:
    """A 0/1 mask of ``like``'s shape (None: all ones), as a bool array on ``like``'s backend."""
    xp = B.namespace(like)
    if mask is None:
        return xp.ones(tuple(like.shape), dtype=xp.bool, device=B.device(like))
    probe = Parameter(B.copy(like) if B.dtype_name(like).startswith("float") else xp.astype(like, xp.float64))
    probe.mask = mask                                # the Parameter's checks: shape, 0s and 1s, backend
    return probe.mask != 0


def _float_like(x: Any) -> Any:
    xp = B.namespace(x)
    return x if B.dtype_name(x).startswith("float") else xp.astype(x, xp.float64)


def prune_mask(scores: Any, amount: Any, *, mask: Any = None, rule: str = "torch") -> Any:
    r"""Unstructured mask: prune the ``amount`` lowest ``scores`` among the entries ``mask`` keeps.

    As torch.nn.utils.prune composes pruners, the amount applies to the entries still alive:
    :math:`k` = :func:`pruned_count` ``(amount, n_alive)``; 0.5 then 0.5 leaves 25 %. Equal to
    ``prune.l1_unstructured`` for ``scores = |W|`` (and ``random_unstructured`` for ``scores =
    -u``, u its uniform draw), ties included with ``rule="torch"``.

    Parameters
    ----------
    scores : array of any shape, no NaN
        Importance: higher is kept (``|W|``, Taylor scores, ...).
    amount : int in [0, n_alive] or float in [0, 1)
    mask : array of 0s and 1s of the same shape, optional
        The current mask (None: nothing pruned yet).
    rule : {"torch", "threshold", "keep_ties"}
        How ties at the threshold are broken (module docstring).

    Returns
    -------
    array of scores' shape, 1.0 kept / 0.0 pruned, scores' float dtype (float64 for integer scores).

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    _check_scores("scores", scores)
    rule = check_choice("rule", rule, RULES)
    alive = _check_mask_for(mask, scores)
    xp = B.namespace(scores)
    flat_alive = xp.reshape(alive, (-1,))
    positions = xp.nonzero(flat_alive)[0]
    live_scores = xp.reshape(scores, (-1,))[positions]
    n_alive = int(positions.shape[0])
    count = pruned_count(amount, n_alive, what=f"the weights still alive, out of {math.prod(scores.shape)}")
    chosen = _select(live_scores, count, rule)
    out = xp.astype(flat_alive, _float_like(scores).dtype)
    out[positions[chosen]] = 0
    return xp.reshape(out, tuple(scores.shape))


def _norms(x: Any, n: float, dim: int) -> Any:
    """:math:`\\|x_c\\|_n` of each slice c along ``dim`` (over all the other axes)."""
    xp = B.namespace(x)
    rows = _slices(x, dim)
    if n == math.inf:
        return xp.max(xp.abs(rows), axis=1)
    if n == 1:
        return xp.sum(xp.abs(rows), axis=1)
    if n == 2:
        return xp.sqrt(xp.sum(rows * rows, axis=1))
    return xp.sum(xp.abs(rows) ** n, axis=1) ** (1.0 / n)


def _slices(x: Any, dim: int) -> Any:
    """``x`` as a (C, rest) matrix, one row per slice along ``dim`` (also when C or rest is 0)."""
    xp = B.namespace(x)
    rest = math.prod(s for i, s in enumerate(x.shape) if i != dim)     # explicit: -1 is ambiguous for 0 entries
    return xp.reshape(xp.moveaxis(x, dim, 0), (x.shape[dim], rest))


def _check_dim(dim: Any, ndim: int) -> int:
    dim = check_int("dim", dim, low=-ndim, high=ndim - 1)
    return dim % ndim


def ln_structured_mask(weight: Any, amount: Any, n: float = 2, dim: int = 0, *, mask: Any = None) -> Any:
    r"""Structured mask: prune whole slices along ``dim`` with the smallest :math:`L_n` norm.

    Slice c (a neuron's row for ``dim=0`` of a Linear weight, a filter of a Conv2d weight; an
    input column for ``dim=1``) has importance

    .. math:: \|W_c\|_n = \Big(\sum_{\text{other axes}} |W_c|^n\Big)^{1/n};

    the :math:`C - k` slices with the largest norms are kept (``torch.topk(norms, C - k)``,
    ties as torch), :math:`k` = :func:`pruned_count` ``(amount, C)`` counting only slices that
    ``mask`` still keeps (any live entry). Torch-Pruning would instead keep
    :math:`\lfloor C(1-r) \rfloor` channels, and MIT Lab 1 :math:`\mathrm{round}(C(1-r))`.
    Equal to ``torch.nn.utils.prune.ln_structured`` on
    the same weight; torch reads the norms from ``weight_orig`` (values before masking) --
    pass those as ``weight`` to match it after an earlier unstructured pruning.

    Parameters
    ----------
    weight : array with >= 2 axes, no NaN
    amount : int in [0, C] or float in [0, 1)
    n : float > 0 or inf
        1 (L1), 2 (L2), ...
    dim : int in [-ndim, ndim)
    mask : current 0/1 mask of weight's shape, optional

    Returns
    -------
    array of weight's shape and float dtype, 1.0 kept / 0.0 pruned.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    _check_scores("weight", weight)
    if weight.ndim < 2:
        raise ValueError(f"weight must have at least 2 axes for structured pruning (rows, channels), "
                         f"got shape {tuple(weight.shape)}")
    n = check_number("n", n, 0.0, low_open=True, finite=False)
    dim = _check_dim(dim, weight.ndim)
    weight = _float_like(weight)
    xp = B.namespace(weight)
    alive = _check_mask_for(mask, weight)
    out = xp.astype(alive, weight.dtype)
    live_rows = xp.any(_slices(alive, dim), axis=1)
    channels = xp.nonzero(live_rows)[0]
    count = pruned_count(amount, int(channels.shape[0]),
                         what=f"the slices along dim {dim} of weight, shape {tuple(weight.shape)}, with a live entry")
    if count == 0:
        return out
    norms = _norms(xp.take(weight, channels, axis=dim), n, dim)
    kept = _select(-norms, int(channels.shape[0]) - count, "torch")     # torch.topk(norms, C - k, largest=True)
    shape = [1] * weight.ndim
    shape[dim] = weight.shape[dim]
    rows = xp.ones((weight.shape[dim],), dtype=weight.dtype, device=B.device(weight))
    rows[channels[~kept]] = 0
    return out * xp.reshape(rows, tuple(shape))


# ----------------------------------------------------------------------------- the parameters that prune
def _named_modules(module: Module, prefix: str = ""):
    yield prefix, module
    for name, child in module._modules.items():
        yield from _named_modules(child, prefix + name + ".")


def prunable(model: Module) -> "OrderedDict[str, Parameter]":
    """The weights that pruning acts on: ``{"0.weight": Parameter, ...}`` of every Linear and Conv2d.

    Biases and BatchNorm parameters are left alone (as in Han et al. 2015 and MIT Lab 1).

    Raises
    ------
    TypeError
        When ``model`` is not an nnopt_lab Module.
    ValueError
        When it holds no Linear or Conv2d (nothing to prune).

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    out = OrderedDict((prefix + "weight", m._params["weight"]) for prefix, m in _named_modules(model)
                      if isinstance(m, (Linear, Conv2d)))
    if not out:
        raise ValueError(f"model has no Linear or Conv2d weights to prune ({type(model).__name__})")
    return out


def _parameter(layer: Any, name: str, what: str = "layer", name_arg: str | None = "name") -> Parameter:
    """``layer``'s parameter ``name`` (a Parameter itself is taken as it is).

    ``name_arg`` is the caller's argument that gave ``name`` (None: the caller fixed it).
    """
    if isinstance(layer, Parameter):
        return layer
    if not isinstance(layer, Module):
        raise TypeError(f"{what} must be an nnopt_lab Module or Parameter, got {type(layer).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"{name_arg} must be a str (a parameter's name, e.g. 'weight'), got {name!r}")
    if name not in layer._params:
        have = sorted(layer._params) or "no parameters"
        lead = "" if name_arg is None else f"{name_arg} must name a parameter of {what}, got {name!r}: "
        raise ValueError(f"{lead}{what} ({type(layer).__name__}) has no parameter {name!r} to prune (it has {have})")
    return layer._params[name]


def _set_mask(p: Parameter, mask: Any) -> Any:
    p.mask = mask
    p.apply_mask()
    return p.mask


def _effective(p: Parameter) -> Any:
    """The weight as the model uses it (pruned entries zero)."""
    return p.masked(p.data)


# ----------------------------------------------------------------------------- torch.nn.utils.prune's pruners
def l1_unstructured(layer: Module | Parameter, amount: Any, name: str = "weight", *, rule: str = "torch") -> Any:
    r"""Prune the ``amount`` smallest :math:`|w|` of ``layer.<name>`` (torch.nn.utils.prune.l1_unstructured).

    Sets the parameter's mask (1 kept, 0 pruned) and zeroes the pruned weights. A second call
    prunes ``amount`` of the weights still alive (torch's composition: 0.5 then 0.5 -> 75 %).

    Parameters
    ----------
    layer : Module or Parameter
    amount : int count or float in [0, 1)
    name : str, the parameter (default "weight")
    rule : {"torch", "threshold", "keep_ties"} (module docstring)

    Returns
    -------
    The new mask (the parameter's own array).

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    p = _parameter(layer, name)
    xp = B.namespace(p.data)
    return _set_mask(p, prune_mask(xp.abs(p.data), amount, mask=p.mask, rule=rule))


def _uniform_like(x: Any, generator=None) -> Any:
    """Uniform [0, 1) numbers of x's shape from ``generator`` (default the project's), on x's backend."""
    if generator is not None and not hasattr(generator, "bit_generator"):
        raise TypeError(f"generator must be a numpy Generator (nnopt_lab.backend.generator(seed)) or None, "
                        f"got {type(generator).__name__}")
    draws = (generator or B.rng()).random(tuple(x.shape))
    return B.to_backend(draws, B.backend_of(x), dtype=B.dtype_name(_float_like(x)))


def random_unstructured(layer: Module | Parameter, amount: Any, name: str = "weight", *, scores: Any = None,
                        generator=None) -> Any:
    r"""Prune ``amount`` weights at random, the control of every criterion (torch's random_unstructured).

    torch draws :math:`u \sim U[0, 1)` per weight (``torch.rand_like``) and prunes the
    :math:`k` largest :math:`u`; so does this function, drawing from ``generator`` (default
    the project's :func:`nnopt_lab.backend.rng`) unless ``scores`` gives the draw -- pass
    torch's to get torch's mask exactly.

    Parameters
    ----------
    layer : Module or Parameter
    amount : int count or float in [0, 1) (of the weights still alive)
    name : str
    scores : array of the weight's shape, optional
        The uniform draw :math:`u` (the largest are pruned).
    generator : numpy Generator, optional

    Returns
    -------
    The new mask.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    p = _parameter(layer, name)
    u = _uniform_like(p.data, generator) if scores is None else _check_scores("scores", scores)
    if tuple(u.shape) != p.shape:
        raise ValueError(f"scores must have the weight's shape {p.shape}, got {tuple(u.shape)}")
    return _set_mask(p, prune_mask(-_float_like(u), amount, mask=p.mask))


def _targets(layers: Any) -> list[Parameter]:
    items = check_sequence("layers", layers)
    if not items:
        raise ValueError("layers is empty: there is nothing to prune")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2:
            out.append(_parameter(item[0], item[1], f"layers[{i}]", f"layers[{i}][1]"))
        else:
            out.append(_parameter(item, "weight", f"layers[{i}]", None))
    return out


def global_unstructured(layers: Iterable, amount: Any, *, scores: Any = None, rule: str = "torch") -> list:
    r"""Prune the ``amount`` lowest scores over several parameters together: one threshold across layers.

    torch.nn.utils.prune.global_unstructured with ``L1Unstructured``: the scores of all the
    parameters (default :math:`|w|`) are concatenated in order, flattened, and the lowest
    :math:`k` = :func:`pruned_count` ``(amount, n_alive)`` are pruned, so a layer with small
    weights loses more than one with large weights.

    Parameters
    ----------
    layers : sequence of Module (its "weight"), (Module, name) pairs or Parameters
    amount : int count or float in [0, 1)
    scores : sequence of arrays, one per entry of ``layers``, optional (default |w|)
    rule : {"torch", "threshold", "keep_ties"}

    Returns
    -------
    list of the new masks, one per parameter.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    params = _targets(layers)
    if scores is None:
        scores = [B.namespace(p.data).abs(_effective(p)) for p in params]
    scores = check_sequence("scores", scores)
    if len(scores) != len(params):
        raise ValueError(f"scores must hold one array per parameter ({len(params)}), got {len(scores)}")
    for i, (s, p) in enumerate(zip(scores, params)):
        _check_scores(f"scores[{i}]", s)
        if tuple(s.shape) != p.shape:
            raise ValueError(f"scores[{i}] must have the shape of its parameter {p.shape}, got {tuple(s.shape)}")
    xp = B.namespace(params[0].data)
    flat = xp.concat([xp.reshape(_float_like(s), (-1,)) for s in scores])
    masks = [xp.reshape(_check_mask_for(p.mask, p.data), (-1,)) for p in params]
    joint = prune_mask(flat, amount, mask=xp.astype(xp.concat(masks), flat.dtype), rule=rule)
    out, start = [], 0
    for p in params:
        size = math.prod(p.shape)
        out.append(_set_mask(p, xp.reshape(joint[start:start + size], p.shape)))
        start += size
    return out


def ln_structured(layer: Module | Parameter, amount: Any, n: float = 2, dim: int = 0, name: str = "weight", *,
                  bias: bool = False) -> Any:
    r"""Prune whole rows / channels of ``layer.<name>`` by their :math:`L_n` norm (torch's ln_structured).

    ``dim=0`` prunes output units (Linear rows, Conv2d filters): what
    :func:`remove_pruned_units` then removes physically. See :func:`ln_structured_mask`.

    Parameters
    ----------
    layer : Module or Parameter
    amount : int count or float in [0, 1) of the slices still alive
    n : float > 0 or inf
    dim : int
    name : str
    bias : bool
        Also mask the bias of the pruned output units (``dim=0`` only). torch leaves the bias
        (a pruned unit still emits it, a constant); Torch-Pruning removes it with the channel.

    Returns
    -------
    The new mask.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    p = _parameter(layer, name)
    bias = check_bool("bias", bias)
    mask = _set_mask(p, ln_structured_mask(p.data, amount, n, dim, mask=p.mask))
    if bias:
        _mask_bias(layer, mask, dim)
    return mask


def _mask_bias(layer: Any, mask: Any, dim: int) -> None:
    if _check_dim(dim, mask.ndim) != 0:
        raise ValueError(f"bias=True needs dim=0 (output units), got dim={dim}")
    if not isinstance(layer, Module) or "bias" not in layer._params:
        return
    xp = B.namespace(mask)
    live = xp.any(xp.reshape(mask, (mask.shape[0], -1)) != 0, axis=1)
    b = layer._params["bias"]
    old = _check_mask_for(b.mask, b.data)
    _set_mask(b, xp.astype(old & live, b.data.dtype))


def remove_masks(model: Module) -> Module:
    """Make the pruning permanent (torch's ``prune.remove``): zero the pruned weights, drop the masks.

    Afterwards the zeros are ordinary values: training may move them again.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    for p in model.parameters():
        p.apply_mask()
        p.mask = None
    return model


# ----------------------------------------------------------------------------- model level
def _pruned_entries(p: Parameter) -> int:
    return 0 if p.mask is None else int(B.namespace(p.mask).count_nonzero(p.mask == 0))


def _criterion_scores(criterion: Any, name: str, p: Parameter) -> Any:
    """Scores of parameter ``name`` (higher is kept) for a criterion name or a dict of score arrays."""
    if isinstance(criterion, Mapping):
        if name not in criterion:
            raise ValueError(f"criterion (a dict of scores) has no entry for {name!r}; it has {sorted(criterion)}")
        s = _check_scores(f"criterion[{name!r}]", criterion[name])
        if tuple(s.shape) != p.shape:
            raise ValueError(f"criterion[{name!r}] must have the weight's shape {p.shape}, got {tuple(s.shape)}")
        return _float_like(s)
    if criterion == "magnitude":
        return B.namespace(p.data).abs(_effective(p))
    return -_uniform_like(p.data)                 # random: the largest draws go, as in torch


def _check_criterion(criterion: Any) -> Any:
    if isinstance(criterion, Mapping):
        return criterion
    if not isinstance(criterion, str):
        raise TypeError(f"criterion must be one of {CRITERIA} or a dict {{name: scores}} (e.g. taylor_scores), "
                        f"got {type(criterion).__name__}")
    return check_choice("criterion", criterion, CRITERIA)


def _plan(model: Module, sparsity: Any, layers: Any) -> "OrderedDict[str, tuple[Parameter, float]]":
    """{name: (parameter, target sparsity)} of the layers :func:`prune` acts on."""
    weights = prunable(model)
    if isinstance(sparsity, Mapping):
        if layers is not None:
            raise ValueError("give layers or a dict of sparsities, not both (the dict names its layers)")
        unknown = sorted(set(sparsity) - set(weights))
        if unknown:
            raise ValueError(f"sparsity names layers the model does not have: {unknown}; prunable: {list(weights)}")
        return OrderedDict((k, (weights[k], check_probability(f"sparsity[{k!r}]", v, high_open=True)))
                           for k, v in sparsity.items())
    s = check_probability("sparsity", sparsity, high_open=True)
    names = list(weights) if layers is None else [str(x) for x in check_sequence("layers", layers)]
    missing = sorted(set(names) - set(weights))
    if missing:
        raise ValueError(f"layers names weights the model does not have: {missing}; prunable: {list(weights)}")
    if not names:
        raise ValueError("layers is empty: there is nothing to prune")
    return OrderedDict((k, (weights[k], s)) for k in names)


def prune(model: Module, sparsity: Any, *, criterion: Any = "magnitude", scope: str = "layer",
          rule: str = "torch", layers: Any = None) -> "SparsityReport":
    r"""One-shot pruning: bring the prunable weights to a target sparsity (fraction of zeros in the mask).

    Unlike torch's pruners, ``sparsity`` is the *total* reached, not a fraction of what is left:
    a layer of :math:`n` weights ends with :math:`\mathrm{round}(s\,n)` pruned (exactly, with
    ``rule="torch"``). Pruned weights stay pruned (a lower target prunes nothing more); the new
    ones are the lowest scores among the weights still alive.

    Parameters
    ----------
    model : Module
    sparsity : float in [0, 1), or dict {weight name: sparsity} (a per-layer plan, e.g.
        :meth:`SensitivityScan.plan`)
    criterion : "magnitude" (|w|), "random" (the control), or dict {weight name: scores}
        (e.g. :func:`taylor_scores`; higher scores are kept)
    scope : {"layer", "global"}
        ``"layer"``: every layer reaches ``sparsity``; ``"global"``: one threshold across all of them
        together (:func:`global_unstructured`), :math:`\mathrm{round}(s \sum n_l)` pruned in total.
    rule : {"torch", "threshold", "keep_ties"}
    layers : sequence of weight names (``"0.weight"``), optional (default: every Linear / Conv2d)

    Returns
    -------
    SparsityReport of the model afterwards.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    criterion = _check_criterion(criterion)
    scope = check_choice("scope", scope, ("layer", "global"))
    rule = check_choice("rule", rule, RULES)
    plan = _plan(model, sparsity, layers)
    if scope == "global":
        if isinstance(sparsity, Mapping):
            raise ValueError("scope='global' takes one sparsity for all layers, got a dict")
        params = [p for p, _ in plan.values()]
        total = sum(math.prod(p.shape) for p in params)
        extra = round(check_probability("sparsity", sparsity, high_open=True) * total) - sum(map(_pruned_entries, params))
        if extra > 0:
            global_unstructured(params, extra, scores=[_criterion_scores(criterion, k, p) for k, (p, _) in plan.items()],
                                rule=rule)
    else:
        for name, (p, s) in plan.items():
            extra = round(s * math.prod(p.shape)) - _pruned_entries(p)
            if extra > 0:
                _set_mask(p, prune_mask(_criterion_scores(criterion, name, p), extra, mask=p.mask, rule=rule))
    return sparsity_report(model)


def taylor_scores(model: Module, data: tuple, *, loss_fn=None, batch_size: int = 256) -> "OrderedDict[str, Any]":
    r"""First-order Taylor importance of every prunable weight, averaged over the batches of ``data``.

    Removing weight :math:`w` changes the loss by about :math:`-w\,\partial L/\partial w`
    (Molchanov et al. 2017, 2019); its importance is

    .. math:: S(w) = \frac{1}{B} \sum_{b=1}^{B} \Big| w \,\frac{\partial L_b}{\partial w} \Big|

    over the B batches of ``data`` in order (no shuffling), the model in evaluation mode
    (dropout off, BatchNorm's running statistics), at the masked weights. The model's mode and
    gradients are restored afterwards; the weights are not changed.

    Parameters
    ----------
    model : Module (a classifier)
    data : (X (N, ...), y (N,))
    loss_fn : as in :func:`nnopt_lab.training.fit` (default cross-entropy)
    batch_size : int >= 1

    Returns
    -------
    OrderedDict {weight name: array of its shape} -- pass it as ``prune(..., criterion=scores)``.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    from ..nn.layers import CrossEntropyLoss
    from ..training.loop import check_loss_fn, compute_loss

    x, y = check_xy("data", data)
    batch_size = check_int("batch_size", batch_size)
    if x.shape[0] == 0:
        raise ValueError("data has no samples: Taylor scores need at least one batch")
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    weights = prunable(model)
    xp = B.namespace(x)
    total = OrderedDict((k, None) for k in weights)
    count = 0
    with preserved(model, weights=False):
        model.eval()
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            loss = compute_loss(loss_fn, model.forward(xb), yb, xb)
            model.backward(loss_fn.backward(), need_dx=False)
            for k, p in weights.items():
                if p.grad is None:
                    raise ValueError(f"{k} got no gradient from the backward pass: cannot score it")
                term = xp.abs(_effective(p) * p.masked(p.grad))
                total[k] = term if total[k] is None else total[k] + term
            count += 1
            del loss
    return OrderedDict((k, v / count) for k, v in total.items())


_BEFORE_RELU = (BatchNorm1d, BatchNorm2d, Dropout)


def _relu_after(model: Sequential, layer: int) -> int:
    """The position of the ReLU that follows ``model[layer]`` (through BatchNorm / Dropout)."""
    for j in range(layer + 1, len(model)):
        if isinstance(model[j], ReLU):
            return j
        if not isinstance(model[j], _BEFORE_RELU):
            break
    raise ValueError(f"model[{layer}] ({type(model[layer]).__name__}) is not followed by a ReLU (through "
                     f"BatchNorm or Dropout only): APoZ counts the zeros a ReLU makes")


def _check_layer_index(model: Any, layer: Any) -> int:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    i = check_int("layer", layer, 0, len(model) - 1)
    if not isinstance(model[i], (Linear, Conv2d)):
        raise ValueError(f"layer must be the index of a Linear or Conv2d, got {i}: model[{i}] is "
                         f"{type(model[i]).__name__}")
    return i


def apoz(model: Sequential, x: Any, layer: int, *, batch_size: int = 1024) -> Any:
    r"""Average Percentage of Zeros (Hu et al. 2016) of each output unit of ``model[layer]``, after its ReLU.

    For unit (neuron or channel) c with post-ReLU outputs :math:`O_c` over N samples and M
    positions (M = 1 for a Linear, H·W for a Conv2d),

    .. math:: \mathrm{APoZ}_c = \frac{1}{N M} \sum_{i=1}^{N} \sum_{j=1}^{M} [\,O_{c,j}(x_i) = 0\,].

    A unit that is almost always zero contributes little: prune the highest APoZ first
    (``select_lowest(-apoz(...), amount)``, then :func:`mask_units`). Evaluation mode; the
    model's mode is restored.

    Parameters
    ----------
    model : Sequential
    x : (N, ...) the calibration inputs
    layer : int, the index of a Linear or Conv2d followed by a ReLU (BatchNorm / Dropout between allowed)
    batch_size : int >= 1

    Returns
    -------
    (units,) array of fractions in [0, 1], in the float dtype of the activations.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    i = _check_layer_index(model, layer)
    relu = _relu_after(model, i)
    check_array("x", x, ndim=range(1, 33))
    batch_size = check_int("batch_size", batch_size)
    if x.shape[0] == 0:
        raise ValueError("x has no samples: APoZ needs a calibration set")
    zeros, per_unit = None, 0
    with preserved(model, weights=False, grads=False):
        model.eval()
        for start in range(0, x.shape[0], batch_size):
            out = x[start:start + batch_size]
            for j in range(relu + 1):
                out = model[j].forward(out)
            xp = B.namespace(out)
            axes = (0,) + tuple(range(2, out.ndim))
            counts = xp.sum(xp.astype(out == 0, out.dtype), axis=axes)
            zeros = counts if zeros is None else zeros + counts
            per_unit += math.prod(out.shape) // out.shape[1]
    return zeros / per_unit


def mask_units(layer: Module, indices: Any, *, bias: bool = False) -> Any:
    """Mask whole output units of a Linear / Conv2d: rows ``indices`` of its weight (dim 0).

    For criteria that rank units by something other than their weights (:func:`apoz`,
    summed :func:`taylor_scores`). The existing mask is kept; :func:`remove_pruned_units`
    then cuts the units out.

    Parameters
    ----------
    layer : Linear or Conv2d
    indices : sequence of int in [0, units)
    bias : bool, also mask their bias (see :func:`ln_structured`)

    Returns
    -------
    The new weight mask.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    if not isinstance(layer, (Linear, Conv2d)):
        raise TypeError(f"layer must be an nnopt_lab Linear or Conv2d, got {type(layer).__name__}")
    bias = check_bool("bias", bias)
    p = layer._params["weight"]
    units = p.shape[0]
    drop = sorted({check_int(f"indices[{k}]", v, 0, units - 1) for k, v in enumerate(check_sequence("indices", indices))})
    xp = B.namespace(p.data)
    rows = xp.ones((units,), dtype=p.data.dtype, device=B.device(p.data))
    if drop:
        rows[xp.asarray(drop, dtype=xp.int64, device=B.device(p.data))] = 0
    old = xp.astype(_check_mask_for(p.mask, p.data), p.data.dtype)
    mask = _set_mask(p, old * xp.reshape(rows, (units,) + (1,) * (p.data.ndim - 1)))
    if bias:
        _mask_bias(layer, mask, 0)
    return mask


def remove_pruned_units(model: Sequential) -> Sequential:
    """A smaller dense copy of ``model`` without the units whose weights are all pruned.

    Each Linear / Conv2d with dead output units (:func:`nnopt_lab.compression.trimming.dead_units`:
    every incoming weight masked or zero) that feeds a later Linear / Conv2d goes through
    :func:`nnopt_lab.compression.trimming.remove_units`: its rows, the next layer's input
    columns and any BatchNorm channels between are cut out, and a removed unit's constant
    output (its bias) is folded into the next layer's bias, so the outputs do not change.
    The last layer's outputs are never removed. ``model`` itself is not changed.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    from . import trimming

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    weighted = [i for i, m in enumerate(model) if isinstance(m, (Linear, Conv2d))]
    new = model
    for i in weighted[:-1]:
        if trimming.dead_units(new[i]):
            new = trimming.remove_units(new, i)         # a new model each time
    return copy.deepcopy(model) if new is model else new


# ----------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class LayerSparsity:
    """One weight's counts: ``zeros`` (exact zeros as the model uses it), ``masked`` (mask entries 0), ``total``."""

    name: str
    zeros: int
    masked: int
    total: int

    @property
    def sparsity(self) -> float:
        """zeros / total."""
        return self.zeros / self.total


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and global sparsity of the prunable weights (exact integer counts).

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """

    layers: tuple

    @property
    def zeros(self) -> int:
        return sum(r.zeros for r in self.layers)

    @property
    def masked(self) -> int:
        return sum(r.masked for r in self.layers)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.layers)

    @property
    def sparsity(self) -> float:
        """Global: zeros over all prunable weights."""
        return self.zeros / self.total

    def as_dict(self) -> dict:
        """{weight name: sparsity}."""
        return {r.name: r.sparsity for r in self.layers}

    def __str__(self) -> str:
        width = max(len(r.name) for r in self.layers + (LayerSparsity("global", 0, 0, 1),))
        lines = [f"{'weight':<{width}}  {'zeros':>9}  {'total':>9}  sparsity"]
        for r in self.layers:
            lines.append(f"{r.name:<{width}}  {r.zeros:>9}  {r.total:>9}  {100 * r.sparsity:7.2f} %")
        lines.append(f"{'global':<{width}}  {self.zeros:>9}  {self.total:>9}  {100 * self.sparsity:7.2f} %")
        return "\n".join(lines)


def sparsity_report(model: Module) -> SparsityReport:
    """Zeros, masked entries and sizes of every prunable weight, and their sums.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    rows = []
    for name, p in prunable(model).items():
        w = _effective(p)
        zeros = math.prod(p.shape) - int(B.namespace(w).count_nonzero(w))
        rows.append(LayerSparsity(name, zeros, _pruned_entries(p), math.prod(p.shape)))
    return SparsityReport(tuple(rows))


def sparsity(x: Any) -> float:
    r"""Fraction of exact zeros: of an array, or of all the prunable weights of a model (global).

    .. math:: s = \frac{\#\{w = 0\}}{n}

    Use as a metric of :func:`~nnopt_lab.training.fit`: ``metrics={"sparsity": pruning.sparsity}``.

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    if isinstance(x, Module):
        return sparsity_report(x).sparsity
    check_array("x", x)
    n = math.prod(x.shape)
    if n == 0:
        raise ValueError("x is empty: the sparsity of no entries is undefined")
    return (n - int(B.namespace(x).count_nonzero(x))) / n


# ----------------------------------------------------------------------------- sparsification
def _layer_subset(model: Module, layers: Any) -> "OrderedDict[str, Parameter]":
    weights = prunable(model)
    if layers is None:
        return weights
    missing = sorted(set(layers) - set(weights))
    if missing:
        raise ValueError(f"layers names weights the model does not have: {missing}; prunable: {list(weights)}")
    return OrderedDict((k, weights[k]) for k in layers)


class Penalty(Callback):
    r"""An L1 or L2 penalty on the prunable weights, added to their gradients inside :func:`fit`.

    .. math::

        R_{L1}(W) = \lambda \sum |w|, \quad \nabla R_{L1} = \lambda\,\mathrm{sign}(w)
        \qquad\qquad R_{L2}(W) = \frac{\lambda}{2} \sum w^2, \quad \nabla R_{L2} = \lambda\,w

    (:math:`\mathrm{sign}(0) = 0`, the subgradient torch's autograd takes). ``on_after_backward``
    adds :math:`\nabla R` to each ``p.grad``, so the optimizer minimises :math:`L + R`; the
    recorded loss is :math:`L` alone (:meth:`value` gives :math:`R`). The L1 subgradient makes
    weights hover around zero without reaching it; :class:`ProximalL1` gives exact zeros.
    L2 with SGD is torch's ``weight_decay`` (biases excluded here).

    Parameters
    ----------
    kind : {"l1", "l2"}
    strength : float >= 0 (:math:`\lambda`)
    layers : sequence of weight names, optional (default every Linear / Conv2d weight)

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """

    def __init__(self, kind: str, strength: float, layers: Any = None):
        self.kind = check_choice("kind", kind, ("l1", "l2"))
        self.strength = check_number("strength", strength, 0.0)
        self.layers = None if layers is None else [str(k) for k in check_sequence("layers", layers)]

    def gradient(self, w: Any) -> Any:
        """:math:`\\nabla R` at the array ``w``."""
        xp = B.namespace(check_array("w", w))
        return self.strength * (xp.sign(w) if self.kind == "l1" else w)

    def value(self, model: Module) -> float:
        """:math:`R(W)` of ``model``'s weights."""
        total = 0.0
        for p in _layer_subset(model, self.layers).values():
            w = _effective(p)
            xp = B.namespace(w)
            total += B.float_of(xp.sum(xp.abs(w)) if self.kind == "l1" else 0.5 * xp.sum(w * w))
        return self.strength * total

    def on_after_backward(self, state) -> None:
        for p in _layer_subset(state.model, self.layers).values():
            if p.grad is not None:
                p.grad = p.grad + self.gradient(_effective(p))


def soft_threshold(w: Any, threshold: float) -> Any:
    r"""The proximal operator of :math:`t\,\|w\|_1`: shrink every entry towards 0 by ``threshold``.

    .. math:: \mathrm{prox}_{t\|\cdot\|_1}(w) = \mathrm{sign}(w)\,\max(|w| - t,\; 0)

    Entries with :math:`|w| \le t` become exactly 0.

    Parameters
    ----------
    w : array
    threshold : float >= 0

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    xp = B.namespace(check_array("w", w))
    t = check_number("threshold", threshold, 0.0)
    return xp.sign(w) * xp.clip(xp.abs(w) - t, min=0.0)


class ProximalL1(Callback):
    r"""Proximal L1 sparsification: after each optimizer step, soft-threshold the weights.

    .. math:: w \leftarrow \mathrm{sign}(w)\,\max(|w| - \eta\lambda,\; 0)

    with :math:`\eta` the optimizer's current ``lr`` -- proximal gradient descent on
    :math:`L + \lambda\|W\|_1` for SGD (ISTA); with adaptive optimizers the threshold is the
    plain :math:`\eta\lambda`. Unlike the L1 subgradient (:class:`Penalty`), this produces exact
    zeros, which :func:`prune` and :func:`sparsity` then see. Masks are re-applied.

    Parameters
    ----------
    strength : float >= 0 (:math:`\lambda`)
    layers : sequence of weight names, optional

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """

    def __init__(self, strength: float, layers: Any = None):
        self.strength = check_number("strength", strength, 0.0)
        self.layers = None if layers is None else [str(k) for k in check_sequence("layers", layers)]

    def on_step_end(self, state) -> None:
        t = float(state.optimizer.lr) * self.strength
        for p in _layer_subset(state.model, self.layers).values():
            if not p.requires_grad:                     # frozen: the optimizer does not move it either
                continue
            p.data[...] = soft_threshold(p.data, t)
            p.apply_mask()


# ----------------------------------------------------------------------------- schedules
class PolynomialDecay:
    r"""Gradual sparsity over training steps (Zhu & Gupta 2017), tfmot's ``PolynomialDecay``.

    .. math::

        p_t = \mathrm{clip}\Big(\frac{t - t_0}{t_1 - t_0},\, 0,\, 1\Big), \qquad
        s_t = s_f + (s_i - s_f)\,(1 - p_t)^{\text{power}}

    and the masks are updated at step t only when :math:`t_0 \le t \le t_1` and
    :math:`(t - t_0) \bmod \text{frequency} = 0` (tfmot's ``_should_prune_in_step``).
    torch.ao.pruning's ``CubicSL(init_sl=s_i, init_t=t_0, delta_t=Δ, total_t=n)`` is the same
    cubic with :math:`t_1 = t_0 + Δ\,n` (power 3). tfmot computes in float32, this in float64;
    ``end_step == begin_step`` prunes at once to :math:`s_f` (tfmot divides 0 by 0 there).

    Parameters
    ----------
    initial_sparsity, final_sparsity : float in [0, 1)
    begin_step : int >= 0
    end_step : int >= begin_step
    power : float > 0, default 3
    frequency : int >= 1, default 100

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """

    def __init__(self, initial_sparsity: float, final_sparsity: float, begin_step: int, end_step: int,
                 power: float = 3, frequency: int = 100):
        self.initial_sparsity = check_probability("initial_sparsity", initial_sparsity, high_open=True)
        self.final_sparsity = check_probability("final_sparsity", final_sparsity, high_open=True)
        self.begin_step = check_int("begin_step", begin_step, low=0)
        self.end_step = check_int("end_step", end_step, low=None)
        if self.end_step < self.begin_step:
            raise ValueError(f"end_step must be >= begin_step={self.begin_step} (the schedule cannot end before "
                             f"it begins), got {end_step!r}")
        self.power = check_number("power", power, 0.0, low_open=True)
        self.frequency = check_int("frequency", frequency, low=1)

    def sparsity(self, step: int) -> float:
        """:math:`s_t`, the target sparsity at ``step``."""
        step = check_int("step", step, low=0)
        if self.end_step == self.begin_step:
            p = 1.0 if step >= self.begin_step else 0.0
        else:
            p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def should_update(self, step: int) -> bool:
        """Whether the masks are updated at ``step``."""
        step = check_int("step", step, low=0)
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0

    def __call__(self, step: int) -> tuple[bool, float]:
        """(should_update, sparsity), as tfmot's schedule returns them."""
        return self.should_update(step), self.sparsity(step)

    def __repr__(self) -> str:
        return (f"PolynomialDecay({self.initial_sparsity} -> {self.final_sparsity}, steps {self.begin_step}.."
                f"{self.end_step}, power={self.power}, frequency={self.frequency})")


class GradualPruning(Callback):
    r"""Gradual magnitude pruning during :func:`fit`: the masks follow a :class:`PolynomialDecay`.

    The callback counts the optimizer updates it has seen, t (across fit calls); before the
    update that follows t updates (at ``on_train_begin`` and after each step), when
    ``schedule.should_update(t)``, it calls :func:`prune` with ``schedule.sparsity(t)``.
    ``self.log`` records ``(t, target, reached)`` of every update.

    Parameters
    ----------
    schedule : PolynomialDecay
    criterion, scope, rule, layers : as in :func:`prune`

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """

    def __init__(self, schedule: PolynomialDecay, *, criterion: Any = "magnitude", scope: str = "layer",
                 rule: str = "torch", layers: Any = None):
        if not isinstance(schedule, PolynomialDecay):
            raise TypeError(f"schedule must be a PolynomialDecay, got {type(schedule).__name__}")
        self.schedule = schedule
        self.criterion = _check_criterion(criterion)
        self.scope = check_choice("scope", scope, ("layer", "global"))
        self.rule = check_choice("rule", rule, RULES)
        self.layers = layers
        self.step = 0
        self.log: list[tuple[int, float, float]] = []

    def _update(self, model: Module) -> None:
        if self.schedule.should_update(self.step):
            target = self.schedule.sparsity(self.step)
            report = prune(model, target, criterion=self.criterion, scope=self.scope, rule=self.rule,
                           layers=self.layers)
            self.log.append((self.step, target, report.sparsity))

    def on_train_begin(self, state) -> None:
        if self.step == 0:
            self._update(state.model)

    def on_step_end(self, state) -> None:
        self.step += 1
        self._update(state.model)


@dataclass(frozen=True)
class PruningRound:
    """One round of :func:`iterative_prune`: the sparsity asked and reached, and the fine-tuning's history."""

    round: int
    target: float
    reached: float
    history: History


def iterative_prune(model: Module, train: tuple, *, final_sparsity: float, rounds: int,
                    criterion: Any = "magnitude", scope: str = "layer", rule: str = "torch", layers: Any = None,
                    **fit_kwargs: Any) -> list[PruningRound]:
    r"""Iterative pruning (Han et al. 2015): ``rounds`` times prune, then fine-tune with :func:`fit`.

    Each round removes the same fraction of the weights still alive, so after round r

    .. math:: s_r = 1 - (1 - s_f)^{r / R},

    and the last round reaches :math:`s_f` exactly (:func:`prune`'s count). The survivors are
    retrained from their values (no re-initialisation); masks keep the pruned ones at zero.

    Parameters
    ----------
    model : Module
    train : (X, y)
    final_sparsity : float in [0, 1)
    rounds : int in [1, MAX_ROUNDS] (1 is one-shot pruning followed by fine-tuning)
    criterion, scope, rule, layers : as in :func:`prune`
    **fit_kwargs
        Passed to :func:`~nnopt_lab.training.fit` every round (``epochs``, an int in
        [1, MAX_EPOCHS], is required; an ``optimizer`` given here keeps its state across rounds).

    Returns
    -------
    list of PruningRound

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    final_sparsity = check_probability("final_sparsity", final_sparsity, high_open=True)
    rounds = check_int("rounds", rounds, low=1, high=MAX_ROUNDS)
    if "epochs" not in fit_kwargs:
        raise TypeError("iterative_prune needs epochs= (the fine-tuning epochs of each round, passed to fit)")
    fit_kwargs["epochs"] = check_int("epochs", fit_kwargs["epochs"], 1, MAX_EPOCHS)   # before the model changes
    out = []
    for r in range(1, rounds + 1):
        target = final_sparsity if r == rounds else 1.0 - (1.0 - final_sparsity) ** (r / rounds)
        prune(model, target, criterion=criterion, scope=scope, rule=rule, layers=layers)
        history = fit(model, train, **fit_kwargs)
        out.append(PruningRound(r, target, sparsity_report(model).sparsity, history))
    return out


@dataclass(frozen=True)
class SensitivityScan:
    """Accuracy of the model with one layer pruned at a time (:func:`sensitivity_scan`).

    Attributes
    ----------
    baseline : float, the accuracy unpruned
    sparsities : tuple of float
    accuracy : dict {weight name: list of accuracy, one per sparsity}

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """

    baseline: float
    sparsities: tuple
    accuracy: dict = field(default_factory=dict)

    def plan(self, tolerance: float) -> dict:
        r"""{weight name: the largest scanned sparsity whose accuracy drop is <= ``tolerance``} (0.0 if none).

        .. math:: s_l = \max\{s : a_{\text{base}} - a_l(s) \le \text{tolerance}\}

        Pass it to :func:`prune` as a per-layer plan. The layers are judged alone: pruning
        all of them together costs more than each drop.
        """
        tolerance = check_number("tolerance", tolerance, 0.0)
        return {name: max([s for s, a in zip(self.sparsities, accs) if self.baseline - a <= tolerance], default=0.0)
                for name, accs in self.accuracy.items()}


def sensitivity_scan(model: Module, data: tuple, sparsities: Any = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                     *, layers: Any = None, criterion: Any = "magnitude", rule: str = "torch",
                     loss_fn=None) -> SensitivityScan:
    r"""Per-layer sensitivity (MIT Lab 1): accuracy on ``data`` with each layer alone pruned to each sparsity.

    For layer l and sparsity s: :func:`prune` ``(model, {l: s})`` (no fine-tuning), evaluate, and
    restore the model exactly (:func:`~nnopt_lab.training.preserved`: weights, masks, buffers).

    Parameters
    ----------
    model : Module (a classifier)
    data : (X, y), the validation data
    sparsities : sequence of float in [0, 1)
    layers : sequence of weight names, optional (default every prunable weight)
    criterion, rule : as in :func:`prune`
    loss_fn : as in :func:`~nnopt_lab.training.evaluate`

    Returns
    -------
    SensitivityScan (``.plan(tolerance)`` chooses per-layer sparsities).

    See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
    """
    check_xy("data", data)
    values = tuple(check_probability(f"sparsities[{i}]", s, high_open=True)
                   for i, s in enumerate(check_sequence("sparsities", sparsities)))
    if not values:
        raise ValueError("sparsities is empty: give at least one sparsity to scan")
    names = list(_layer_subset(model, None if layers is None else [str(k) for k in check_sequence("layers", layers)]))
    _check_criterion(criterion)
    baseline = evaluate(model, data, loss_fn)[1]
    accuracy = {}
    for name in names:
        accs = []
        for s in values:
            with preserved(model):
                prune(model, {name: s}, criterion=criterion, rule=rule)
                accs.append(evaluate(model, data, loss_fn)[1])
        accuracy[name] = accs
    return SensitivityScan(baseline, values, accuracy)
