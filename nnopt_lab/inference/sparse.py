r"""Sparse inference (seed §2.4.1, §3.4.1): a pruned weight stored and multiplied as CSR.

Pruning (:mod:`nnopt_lab.compression.pruning`) zeroes weights, but a dense matrix product
still multiplies by every zero. Two ways turn the zeros into saved time and bytes:

* **fine-grained sparsity kept as CSR** (compressed sparse row, 压缩稀疏行): store only the
  nonzero values, their column indices and one pointer per row, and multiply only those
  (:func:`csr_from_dense`, :func:`csr_matmul`, :class:`SparseLinear`);
* **structured removal** (结构化剪枝后的物理移除): whole units are cut out and the model stays
  dense but smaller (:func:`nnopt_lab.compression.pruning.remove_pruned_units`).

:func:`three_ways` builds the same pruned model in the three forms (dense with zeros, CSR,
physically removed) so that their outputs, bytes and latencies can be compared.

The CSR layout of an (M, K) matrix with ``nnz`` stored entries:

.. math::
    \text{values} \in \mathbb{R}^{nnz},\quad \text{col\_indices} \in [0, K)^{nnz},\quad
    \text{crow\_indices} \in [0, nnz]^{M+1},

row i holds ``values[crow[i]:crow[i+1]]`` in the columns ``col_indices[crow[i]:crow[i+1]]``
(scipy.sparse.csr_matrix's ``data``, ``indices``, ``indptr``; torch's ``to_sparse_csr``).

See: chapters/05_1_inference_pruning.ipynb
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from .. import backend as B
from .. import measure
from ..nn.layers import Linear, Module, Parameter, Sequential, check_layer_dtype, check_layer_input
from ..validation import check_array, check_bool, check_choice, check_int, check_shape

__all__ = ["CSRMatrix", "csr_from_dense", "csr_matmul", "SparseLinear", "sparsify", "three_ways", "ThreeWays",
           "RelativeIndexed", "relative_from_dense"]

INDEX_DTYPES = ("int32", "int64")
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class CSRMatrix:
    """An (M, K) matrix in compressed sparse row form (arrays of one backend).

    Attributes
    ----------
    values : array, shape (nnz,)
        The stored entries, row by row, columns ascending inside a row.
    col_indices : int32/int64 array, shape (nnz,)
        Column of each stored entry.
    crow_indices : int32/int64 array, shape (M + 1,)
        Row pointers: row i is ``values[crow_indices[i]:crow_indices[i + 1]]``; ``crow[0] = 0``,
        ``crow[M] = nnz``.
    shape : (M, K)

    See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """

    values: Any
    col_indices: Any
    crow_indices: Any
    shape: tuple

    def __post_init__(self):
        """The three arrays must fit together (1-D, nnz values and columns, M + 1 integer row pointers)."""
        for name in ("values", "col_indices", "crow_indices"):
            check_array(name, getattr(self, name), ndim=1)
        B.namespace(self.values, self.col_indices, self.crow_indices)
        m, k = check_shape("shape", self.shape, length=2, low=0)
        nnz = int(self.values.shape[0])
        if self.col_indices.shape[0] != nnz or self.crow_indices.shape[0] != m + 1:
            raise ValueError(f"a CSR matrix of shape {(m, k)} with {nnz} values needs {nnz} col_indices and "
                             f"{m + 1} crow_indices, got {self.col_indices.shape[0]} and {self.crow_indices.shape[0]}")
        for name in ("col_indices", "crow_indices"):
            if B.dtype_name(getattr(self, name)) not in INDEX_DTYPES:
                raise TypeError(f"{name} must be int32 or int64, got {B.dtype_name(getattr(self, name))}")
        object.__setattr__(self, "shape", (m, k))

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.values.shape[0])

    @property
    def density(self) -> float:
        """``nnz / (M K)`` (0 for an empty shape)."""
        total = math.prod(self.shape)
        return self.nnz / total if total else 0.0

    @property
    def nbytes(self) -> int:
        r"""Bytes of the three arrays, :math:`nnz(b_v + b_c) + (M + 1) b_r`: :func:`nnopt_lab.measure.csr_bytes`."""
        bits = [a.dtype.itemsize * 8 for a in (self.values, self.col_indices, self.crow_indices)]
        return measure.csr_bytes(self.shape[0], self.shape[1], self.nnz, *bits)

    def row_indices(self) -> Any:
        """Row of each stored entry, shape (nnz,): row i repeated ``crow[i+1] - crow[i]`` times."""
        xp = B.namespace(self.crow_indices)
        counts = self.crow_indices[1:] - self.crow_indices[:-1]
        rows = xp.arange(self.shape[0], dtype=self.crow_indices.dtype, device=B.device(self.crow_indices))
        return xp.repeat(rows, counts)

    def to_dense(self) -> Any:
        """The (M, K) dense matrix (zeros where nothing is stored)."""
        xp = B.namespace(self.values)
        m, k = self.shape
        flat = xp.zeros((m * k,), dtype=self.values.dtype, device=B.device(self.values))
        position = xp.astype(self.row_indices(), xp.int64) * k + xp.astype(self.col_indices, xp.int64)
        flat[position] = self.values              # positions are distinct: plain assignment is exact
        return xp.reshape(flat, (m, k))

    def __matmul__(self, x: Any) -> Any:
        return csr_matmul(self, x)

    def __repr__(self) -> str:
        return (f"CSRMatrix(shape={self.shape}, nnz={self.nnz}, density={self.density:.4f}, "
                f"values={B.dtype_name(self.values)}, indices={B.dtype_name(self.col_indices)})")


def _index_dtype(index_dtype: str, m: int, k: int, nnz: int) -> str:
    index_dtype = check_choice("index_dtype", index_dtype, INDEX_DTYPES)
    if index_dtype == "int32" and max(m, k, nnz) > _INT32_MAX:
        raise ValueError(f"index_dtype 'int32' cannot hold indices up to {max(m, k, nnz)}; use 'int64'")
    return index_dtype


def csr_from_dense(weight: Any, mask: Any = None, index_dtype: str = "int32") -> CSRMatrix:
    r"""CSR of a (pruned) 2-D weight: keep the entries of ``weight · mask`` that are not zero.

    .. math:: \text{crow}[i + 1] = \text{crow}[i] + \#\{j : W_{ij} m_{ij} \ne 0\}

    Built without a loop: the nonzero positions in row-major order give the values and
    columns; the row counts' running sum gives the row pointers. The same entries as
    ``scipy.sparse.csr_matrix(weight * mask)`` (explicit zeros are not stored).

    Parameters
    ----------
    weight : array, shape (M, K)
        Or an nnopt_lab :class:`~nnopt_lab.nn.Parameter` (its own mask is then used).
    mask : array of 0/1 of shape (M, K), or None
        Pruning mask (1 kept); None uses ``weight`` as it is.
    index_dtype : {"int32", "int64"}
        Width of the column indices and row pointers (int32 as in Deep Compression's and
        cuSPARSE's usual layout; int64 is torch's default).

    Returns
    -------
    CSRMatrix on ``weight``'s backend.

    Raises
    ------
    TypeError
        When ``weight`` (or ``mask``) is not an array.
    ValueError
        When ``weight`` is not 2-D, or ``mask`` has another shape.

    See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """
    if isinstance(weight, Parameter):
        weight, mask = weight.data, weight.mask if mask is None else mask
    check_array("weight", weight, ndim=2, layout="(M, K) (a Linear weight (out_features, in_features))")
    xp = B.namespace(weight)
    if mask is not None:
        check_array("mask", mask)
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(f"mask must have weight's shape {tuple(weight.shape)}, got {tuple(mask.shape)}")
        B.namespace(weight, mask)
        weight = weight * xp.astype(mask, weight.dtype)
    m, k = (int(s) for s in weight.shape)
    keep = weight != 0
    rows, cols = xp.nonzero(keep)                        # row-major order: rows ascending, then columns
    dtype = getattr(xp, _index_dtype(index_dtype, m, k, int(rows.shape[0])))
    counts = xp.sum(xp.astype(keep, xp.int64), axis=1)
    zero = xp.zeros((1,), dtype=xp.int64, device=B.device(weight))
    crow = xp.concat([zero, xp.cumulative_sum(counts)])
    return CSRMatrix(weight[rows, cols], xp.astype(cols, dtype), xp.astype(crow, dtype), (m, k))


def _check_csr(name: str, a: Any) -> CSRMatrix:
    if not isinstance(a, CSRMatrix):
        raise TypeError(f"{name} must be a CSRMatrix (nnopt_lab.inference.sparse.csr_from_dense), "
                        f"got {type(a).__name__}")
    return a


def csr_matmul(a: CSRMatrix, x: Any) -> Any:
    r"""CSR × dense: :math:`Y = A X`, multiplying only the stored entries.

    .. math:: Y_{i:} = \sum_{p = \text{crow}[i]}^{\text{crow}[i+1] - 1} v_p\, X_{c_p :}

    Vectorised, no loop over rows: gather :math:`P_{p:} = v_p X_{c_p:}` for all ``nnz``
    entries at once, then sum each row's run of products, which the row pointers delimit
    (:func:`nnopt_lab.backend.segment_sum`: numpy's ``add.reduceat``, a scatter-add on torch). The work is
    :math:`nnz \cdot N` multiply-adds instead of :math:`M K N`.

    Parameters
    ----------
    a : CSRMatrix, shape (M, K)
    x : array, shape (K,) or (K, N), same backend and float dtype as ``a.values``

    Returns
    -------
    array, shape (M,) or (M, N)

    Raises
    ------
    TypeError
        When ``a`` is not a CSRMatrix, ``x`` not an array, or their backends/dtypes differ.
    ValueError
        When ``x`` is not 1-D/2-D or ``x.shape[0] != K``.

    See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """
    _check_csr("a", a)
    check_array("x", x, ndim=(1, 2), layout="(K,) or (K, N)")
    m, k = a.shape
    if x.shape[0] != k:
        raise ValueError(f"x must have {k} rows (a is {m}×{k}), got x of shape {tuple(x.shape)}")
    if not B.same_kind(x, a.values) or x.dtype != a.values.dtype:
        raise TypeError(f"x ({B.backend_of(x).name}, {B.dtype_name(x)}) must be on a's backend and dtype "
                        f"({B.backend_of(a.values).name}, {B.dtype_name(a.values)})")
    xp = B.namespace(x)
    vector = x.ndim == 1
    x2 = xp.reshape(x, (k, 1)) if vector else x
    # P[:, p] = v_p X[c_p, :], built as (N, nnz) so that the gather reads along X's rows and each
    # row's run of products is contiguous for the segment sum (5x faster at N = 64 than (nnz, N)).
    products = xp.take(xp.matrix_transpose(x2), a.col_indices, axis=1) * a.values[None, :]
    out = B.segment_sum(xp.matrix_transpose(products), a.crow_indices)   # row i: P[:, crow[i]:crow[i+1]]
    return xp.reshape(out, (m,)) if vector else out


# ----------------------------------------------------------------------------- the layer
class SparseLinear(Module):
    r""":math:`y = x W^\top + b` with W stored as CSR: an inference-only Linear (forward only).

    Build it from a pruned :class:`~nnopt_lab.nn.Linear` with :meth:`from_linear`. The CSR
    arrays are buffers (``values``, ``col_indices``, ``crow_indices``, in the state dict);
    the bias, if any, stays a dense :class:`~nnopt_lab.nn.Parameter`.

    Cost, as the layer reports it:

    .. math:: \text{bytes} = nnz\,(b_v + b_c) + (M + 1)\, b_r + M b_v\ [\text{bias}],
        \qquad \text{MACs} = nnz \cdot N

    See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """

    def __init__(self, weight: CSRMatrix, bias: Any = None):
        super().__init__()
        weight = _check_csr("weight", weight)
        self.out_features, self.in_features = weight.shape
        if bias is not None:
            check_array("bias", bias, ndim=1, layout="(out_features,)")
            if bias.shape[0] != self.out_features:
                raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
            if not B.same_kind(bias, weight.values) or bias.dtype != weight.values.dtype:
                raise TypeError(f"bias must be on weight's backend and dtype ({B.backend_of(weight.values).name}, "
                                f"{B.dtype_name(weight.values)}), got {B.backend_of(bias).name}, {B.dtype_name(bias)}")
            self._params["bias"] = Parameter(B.copy(bias))
        self._buffers["values"] = weight.values
        self._buffers["col_indices"] = weight.col_indices
        self._buffers["crow_indices"] = weight.crow_indices

    @classmethod
    def from_linear(cls, layer: Linear, index_dtype: str = "int32") -> "SparseLinear":
        """The CSR form of a (masked) :class:`~nnopt_lab.nn.Linear`: same outputs, only nonzeros stored.

        See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
        """
        if not isinstance(layer, Linear):
            raise TypeError(f"layer must be an nnopt_lab Linear, got {type(layer).__name__}")
        bias = layer._params.get("bias")
        return cls(csr_from_dense(layer._params["weight"], index_dtype=index_dtype),
                   None if bias is None else bias.data)

    @property
    def weight(self) -> CSRMatrix:
        """The stored weight as a :class:`CSRMatrix`."""
        return CSRMatrix(self._buffers["values"], self._buffers["col_indices"], self._buffers["crow_indices"],
                         (self.out_features, self.in_features))

    @property
    def nnz(self) -> int:
        return int(self._buffers["values"].shape[0])

    def forward(self, x):
        check_layer_input(self, x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"SparseLinear({self.in_features}, {self.out_features}) expects x of shape "
                             f"(N, {self.in_features}), got {tuple(x.shape)}")
        check_layer_dtype(self, x, self._buffers["values"])
        xp = B.namespace(x)
        out = xp.permute_dims(csr_matmul(self.weight, xp.permute_dims(x, (1, 0))), (1, 0))
        bias = self._params.get("bias")
        return out if bias is None else out + bias.data

    def backward(self, dout, need_dx=True):
        raise NotImplementedError("SparseLinear is for inference only: train the masked Linear, then convert it "
                                  "with SparseLinear.from_linear")

    def macs(self, in_shape, out_shape):
        r""":math:`nnz \cdot N` (N: all axes of the output but the last): only stored weights multiply."""
        return math.prod(tuple(out_shape)[:-1]) * self.nnz

    def parameter_bytes(self, bits: int | None = None, nonzero: bool = False) -> int:
        r"""Values + column indices + row pointers (+ bias), in bytes.

        ``bits`` sets the width of the values and the bias (None: their own width); the
        indices keep their own width. ``nonzero`` changes nothing: CSR stores only nonzeros.
        """
        if bits is not None:
            bits = check_int("bits", bits, low=1)
        check_bool("nonzero", nonzero)
        values = self._buffers["values"]
        value_bits = values.dtype.itemsize * 8 if bits is None else bits
        bias = self._params.get("bias")
        n_values = self.nnz + (0 if bias is None else self.out_features)
        index_bytes = sum(int(self._buffers[k].shape[0]) * self._buffers[k].dtype.itemsize
                          for k in ("col_indices", "crow_indices"))
        return -(-n_values * value_bits // 8) + index_bytes

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
                f"bias={'bias' in self._params}")


def sparsify(model: Sequential, index_dtype: str = "int32") -> Sequential:
    """A copy of ``model`` with every :class:`~nnopt_lab.nn.Linear` replaced by its :class:`SparseLinear`.

    Other layers are deep-copied; ``model`` is not changed. For inference (eval mode).

    See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    check_choice("index_dtype", index_dtype, INDEX_DTYPES)
    layers = [SparseLinear.from_linear(m, index_dtype) if isinstance(m, Linear) else copy.deepcopy(m)
              for m in model]
    return Sequential(*layers).eval()


@dataclass(frozen=True)
class ThreeWays:
    """One pruned model in three forms: ``dense`` (zeros multiplied), ``csr`` (:func:`sparsify`),
    ``removed`` (dead units cut out, :func:`~nnopt_lab.compression.pruning.remove_pruned_units`)."""

    dense: Sequential
    csr: Sequential
    removed: Sequential


def three_ways(model: Sequential, index_dtype: str = "int32") -> ThreeWays:
    """The same pruned model as dense-with-zeros, CSR and physically removed (all in eval mode).

    ``dense`` is a copy with the masks applied (the zeros still multiplied); ``csr`` stores
    each Linear weight as CSR; ``removed`` cuts out units whose incoming weights are all
    pruned (structured pruning) and is again dense. All three give the same outputs.

    See: chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """
    from ..compression.pruning import remove_pruned_units

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    dense = copy.deepcopy(model)
    for p in dense.parameters():
        p.apply_mask()
    return ThreeWays(dense.eval(), sparsify(dense, index_dtype), remove_pruned_units(dense).eval())


# ----------------------------------------------------------------------------- relative indices (Deep Compression)
#: Widths of a relative index that :func:`relative_from_dense` takes (Deep Compression: 5 for fc, 8 for conv).
MAX_RELATIVE_BITS = 16


@dataclass(frozen=True)
class RelativeIndexed:
    r"""A weight stored as Deep Compression's relative-index sparse format (Han et al. 2016, §2).

    Read the weight flat (row-major). Every stored *entry* keeps its value and the number of
    zeros skipped since the previous entry, :math:`g \in [0, 2^b - 1]`, in ``bits`` = b bits;
    a run of :math:`r \ge 2^b` zeros inserts a *filler* entry of value 0 after
    :math:`2^b - 1` of them (so a run of r zeros costs :math:`\lfloor r / 2^b \rfloor`
    fillers). Zeros after the last nonzero are not stored (``shape`` says how many there are).
    Entry j sits at position :math:`p_j = p_{j-1} + g_j + 1` (:math:`p_{-1} = -1`).

    Attributes
    ----------
    values : array, shape (n_entries,), the nonzero values and the fillers' zeros, in order
    gaps : int64 array, shape (n_entries,), in [0, 2**bits - 1]
    shape : tuple, the dense weight's shape
    bits : int, width of one relative index

    See: chapters/06_capstone.ipynb (seed §2.2.1)
    """

    values: Any
    gaps: Any
    shape: tuple
    bits: int

    def __post_init__(self):
        """The arrays must fit together: 1-D, as many gaps (integers in [0, 2**bits - 1]) as values, all
        entries inside ``shape``."""
        for name in ("values", "gaps"):
            check_array(name, getattr(self, name), ndim=1)
        xp = B.namespace(self.values, self.gaps)
        if not B.dtype_name(self.gaps).startswith("int"):
            raise TypeError(f"gaps must be an integer array, got {B.dtype_name(self.gaps)}")
        bits = check_int("bits", self.bits, 1, MAX_RELATIVE_BITS)
        shape = check_shape("shape", self.shape, low=0)
        n = int(self.values.shape[0])
        if int(self.gaps.shape[0]) != n:
            raise ValueError(f"values and gaps must have one entry each: got {n} values and {self.gaps.shape[0]} gaps")
        if n:
            low, high = int(xp.min(self.gaps)), int(xp.max(self.gaps))
            if low < 0 or high > 2 ** bits - 1:
                raise ValueError(f"gaps must lie in [0, {2 ** bits - 1}] for bits={bits}, got [{low}, {high}]")
            last = int(xp.sum(xp.astype(self.gaps, xp.int64))) + n - 1
            if last >= math.prod(shape):
                raise ValueError(f"the entries reach flat position {last}, outside shape {shape} "
                                 f"({math.prod(shape)} entries)")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "bits", bits)

    @property
    def n_entries(self) -> int:
        """Stored entries: the nonzeros plus the fillers."""
        return int(self.values.shape[0])

    @property
    def n_fillers(self) -> int:
        """Filler entries (stored zeros that only bridge a long gap)."""
        return self.n_entries - int(B.namespace(self.values).count_nonzero(self.values))

    def nbits(self, value_bits: int) -> int:
        r"""Bits of the format at fixed widths: :math:`n_{\text{entries}}\,(b_{\text{value}} + b)`."""
        return self.n_entries * (check_int("value_bits", value_bits, 1) + self.bits)

    def positions(self) -> Any:
        """Flat position of every entry, shape (n_entries,): the running sum of ``gaps + 1``, minus 1."""
        xp = B.namespace(self.gaps)
        return xp.cumulative_sum(self.gaps + 1) - 1

    def to_dense(self) -> Any:
        """The weight of ``shape`` (zeros where nothing is stored): exactly the array encoded."""
        xp = B.namespace(self.values)
        flat = xp.zeros((math.prod(self.shape),), dtype=self.values.dtype, device=B.device(self.values))
        if self.n_entries:
            flat[self.positions()] = self.values
        return xp.reshape(flat, self.shape)

    def __repr__(self) -> str:
        return (f"RelativeIndexed(shape={self.shape}, bits={self.bits}, entries={self.n_entries}, "
                f"fillers={self.n_fillers})")


def relative_from_dense(weight: Any, bits: int = 5) -> RelativeIndexed:
    r"""Deep Compression's relative-index form of a (pruned) weight of any shape, read flat.

    With the nonzero positions :math:`q_1 < q_2 < \dots` (row-major, :math:`q_0 = -1`) the run
    of zeros before nonzero j is :math:`r_j = q_j - q_{j-1} - 1`; it costs
    :math:`f_j = \lfloor r_j / 2^b \rfloor` fillers at :math:`q_{j-1} + t\,2^b`
    (:math:`t = 1..f_j`), and the entry itself then stores :math:`r_j - f_j 2^b < 2^b`:

    .. math:: n_{\text{entries}} = nnz + \sum_j \lfloor r_j / 2^b \rfloor .

    Built without a loop over entries (each nonzero's fillers by ``repeat``); the round trip
    :meth:`RelativeIndexed.to_dense` is exact.

    Parameters
    ----------
    weight : array, any shape (a Parameter: its mask is applied)
    bits : int in [1, 16], the width of one relative index (Deep Compression: 5 for fully
        connected layers, 8 for convolutions)

    Returns
    -------
    RelativeIndexed on ``weight``'s backend.

    Seed: none (deterministic).

    See: chapters/06_capstone.ipynb (seed §2.2.1)
    """
    if isinstance(weight, Parameter):
        weight = weight.masked(weight.data)
    check_array("weight", weight)
    bits = check_int("bits", bits, 1, MAX_RELATIVE_BITS)
    xp = B.namespace(weight)
    shape = tuple(int(s) for s in weight.shape)
    flat = xp.reshape(weight, (-1,))
    dev = B.device(weight)
    q = xp.astype(xp.nonzero(flat != 0)[0], xp.int64)
    prev = xp.concat([xp.asarray([-1], dtype=xp.int64, device=dev), q[:-1]]) if q.shape[0] else q
    span = 2 ** bits
    fillers = (q - prev - 1) // span
    counts = fillers + 1                                   # each nonzero: its fillers, then itself
    owner = xp.repeat(xp.arange(int(q.shape[0]), dtype=xp.int64, device=dev), counts)
    start = xp.cumulative_sum(counts) - counts
    t = xp.arange(int(owner.shape[0]), dtype=xp.int64, device=dev) - start[owner]     # 0..f_j within a nonzero
    is_filler = t < fillers[owner]
    position = xp.where(is_filler, prev[owner] + (t + 1) * span, q[owner])
    before = xp.concat([xp.asarray([-1], dtype=xp.int64, device=dev), position[:-1]]) if position.shape[0] \
        else position
    return RelativeIndexed(flat[position], position - before - 1, shape, bits)
