r"""Explorer and storage arithmetic of chapter 3.2 (pruning, 剪枝).

* :func:`csr_bytes` and :func:`storage_bytes` answer "why is my pruned model not smaller?" with
  numbers: a masked model stores every zero (dense), a CSR copy stores the nonzeros plus their
  indices, a physically smaller model stores smaller dense matrices. (CSR *inference* lives with
  chapter 5.1; here only its size is counted.)
* :func:`explorer_data` is the pure compute function of the explorer: for a grid of sparsities
  it precomputes, with :mod:`nnopt_lab.compression.pruning`, every layer's threshold, mask and
  the accuracy, so that :func:`explorer` (the thin ipywidgets layer) only indexes and redraws.

See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from ..nn.layers import Conv2d, Linear, Module
from ..validation import check_int

__all__ = ["csr_bytes", "storage_bytes", "weight_layers"]


def csr_bytes(rows: int, cols: int, nnz: int, value_bits: int = 32, index_bits: int = 32) -> int:
    r"""Bytes of a matrix stored in CSR (compressed sparse row) form.

    .. math:: \text{bytes} = \Big\lceil \tfrac18 \big(\text{nnz}\, b_v + \text{nnz}\, b_i
              + (\text{rows} + 1)\, b_i \big) \Big\rceil

    the values, one column index per value and ``rows + 1`` row pointers (where each row starts,
    and the end). With 32-bit values and indices CSR needs 8 bytes per nonzero against the dense
    4 bytes per entry: it is only smaller below about 50 % density (above 50 % sparsity).

    Parameters
    ----------
    rows, cols : int >= 1
        The matrix shape (a convolution's weight is read as ``(C_out, C_in·kh·kw)``).
    nnz : int in [0, rows·cols]
        Stored (nonzero) entries.
    value_bits, index_bits : int >= 1

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    rows, cols = check_int("rows", rows, 1), check_int("cols", cols, 1)
    nnz = check_int("nnz", nnz, 0, rows * cols)
    value_bits, index_bits = check_int("value_bits", value_bits, 1), check_int("index_bits", index_bits, 1)
    return math.ceil((nnz * value_bits + nnz * index_bits + (rows + 1) * index_bits) / 8)


def weight_layers(model: Module) -> list[tuple[str, Module]]:
    """``(name, layer)`` for every Linear and Conv2d of ``model``, in order (torch's dotted names)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    out, stack = [], [("", model)]
    while stack:
        prefix, m = stack.pop(0)
        if isinstance(m, (Linear, Conv2d)):
            out.append((prefix.rstrip("."), m))
        stack[0:0] = [(prefix + name + ".", child) for name, child in m._modules.items()]
    return out


def _effective_weight(layer: Module) -> Any:
    p = layer._params["weight"]
    return p.data if p.mask is None else p.masked(p.data)


def storage_bytes(model: Module, value_bits: int = 32, index_bits: int = 32) -> dict:
    r"""Bytes of ``model``'s parameters stored dense (masked or not) and with every weight in CSR.

    Returns
    -------
    dict
        ``dense``: every entry at ``value_bits`` (what a masked model occupies, zeros included);
        ``csr``: each Linear/Conv2d weight as :func:`csr_bytes` of its nonzeros (as
        ``(C_out, rest)``), biases and other parameters dense; ``nonzero_values``: the
        nonzero payload alone, indices aside (``measure.model_bytes(nonzero=True)``).

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    value_bits, index_bits = check_int("value_bits", value_bits, 1), check_int("index_bits", index_bits, 1)
    layers = weight_layers(model)
    weights = {id(layer._params["weight"]) for _, layer in layers}
    dense_bits = csr = nonzero_bits = 0
    for p in model.parameters():
        n = math.prod(p.shape)
        dense_bits += n * value_bits
        if id(p) not in weights:
            csr += math.ceil(n * value_bits / 8)
    for _, layer in layers:
        w = _effective_weight(layer)
        xp = B.namespace(w)
        nnz = int(xp.count_nonzero(w))
        nonzero_bits += nnz * value_bits
        csr += csr_bytes(w.shape[0], math.prod(w.shape[1:]), nnz, value_bits, index_bits)
    bias_bits = dense_bits - sum(math.prod(layer._params["weight"].shape) for _, layer in layers) * value_bits
    return {"dense": math.ceil(dense_bits / 8), "csr": csr,
            "nonzero_values": math.ceil((nonzero_bits + bias_bits) / 8)}
