"""The four pressures on a network (seed §1.1): size, compute, memory, latency.

* size     -- :func:`count_parameters`, :func:`model_bytes` (bytes at a storage precision),
  :func:`csr_bytes` (a matrix stored as CSR);
* compute  -- :func:`flops` (multiply-accumulates and FLOPs per layer, counted as
  ``torch.utils.flop_counter.FlopCounterMode`` counts them);
* memory   -- :func:`activation_memory` (activations at inference and kept for training);
* latency  -- :func:`latency`, :func:`measure_model_latency` (median of repeated timings).

:func:`summary` puts them in one table a notebook can print. Every chapter measures its
technique with these, the same way every time.

See: chapters/01_why_optimize.ipynb (seed §1.1)
"""
from __future__ import annotations

import copy
import inspect
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import backend as B
from .nn.layers import Module, Sequential
from .validation import as_int, check_bool, check_callable, check_int, check_shape

__all__ = ["BITS", "count_parameters", "model_bytes", "bits_of", "csr_bytes", "LayerStats", "ModelSummary", "summary",
           "flops", "ActivationMemory", "activation_memory", "LatencyResult", "latency",
           "measure_model_latency"]

BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "int4": 4, "binary": 1}


# ----------------------------------------------------------------------------- size
def bits_of(dtype: str | int) -> int:
    """Bits per value of a storage type: a name of :data:`BITS` or an int number of bits in 1..64.

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    bits = as_int(dtype)
    if bits is not None:
        if not 1 <= bits <= 64:
            raise ValueError(f"dtype as bits must be in 1..64, got {dtype!r}")
        return bits
    if not isinstance(dtype, str) or dtype not in BITS:
        raise ValueError(f"dtype must be one of {tuple(BITS)} or an int number of bits in 1..64, got {dtype!r}")
    return BITS[dtype]


def csr_bytes(rows: int, cols: int, nnz: int, value_bits: int = 32, index_bits: int = 32,
              pointer_bits: int | None = None) -> int:
    r"""Bytes of a (rows, cols) matrix stored in CSR (compressed sparse row) form.

    .. math:: \text{bytes} = \Big\lceil \tfrac18 \big(\text{nnz}\, b_v + \text{nnz}\, b_c
              + (\text{rows} + 1)\, b_r \big) \Big\rceil

    the values, one column index per value and ``rows + 1`` row pointers (where each row starts,
    and the end); :math:`b_v` = ``value_bits``, :math:`b_c` = ``index_bits``, :math:`b_r` =
    ``pointer_bits`` (None: ``index_bits``). With 32-bit values and indices CSR needs 8 bytes per
    nonzero against the dense 4 bytes per entry: it is only smaller below about 50 % density.
    The one formula of the project: :attr:`nnopt_lab.inference.sparse.CSRMatrix.nbytes` and
    :func:`nnopt_lab.widgets.pruning.storage_bytes` use it (scipy.sparse.csr_matrix's
    ``data.nbytes + indices.nbytes + indptr.nbytes``).

    Parameters
    ----------
    rows, cols : int >= 0
        The matrix shape (a convolution's weight is read as ``(C_out, C_in·kh·kw)``).
    nnz : int in [0, rows·cols]
        Stored (nonzero) entries.
    value_bits, index_bits : int >= 1
    pointer_bits : int >= 1 or None

    Raises
    ------
    TypeError, ValueError
        Naming the argument that is not an int or out of its range.

    See: chapters/03_2_pruning.ipynb (seed §3.2.2), chapters/05_1_inference_pruning.ipynb (seed §2.4.1)
    """
    rows, cols = check_int("rows", rows, 0), check_int("cols", cols, 0)
    nnz = check_int("nnz", nnz, 0)
    if nnz > rows * cols:
        raise ValueError(f"nnz must be an int in [0, {rows * cols}], got {nnz}: a (rows, cols) = ({rows}, {cols}) "
                         f"matrix holds at most rows·cols entries")
    value_bits, index_bits = check_int("value_bits", value_bits, 1), check_int("index_bits", index_bits, 1)
    pointer_bits = index_bits if pointer_bits is None else check_int("pointer_bits", pointer_bits, 1)
    return -(-(nnz * value_bits + nnz * index_bits + (rows + 1) * pointer_bits) // 8)


def _check_model(model: Any) -> Module:
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab.nn Module, got {type(model).__name__}")
    return model


def _numel(shape: tuple) -> int:
    return math.prod(int(s) for s in shape)


def _unique(items) -> list:
    """``items`` without repeats of one object (a shared layer or parameter counts once)."""
    seen, out = set(), []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            out.append(item)
    return out


def count_parameters(model: Module, trainable_only: bool = False, nonzero: bool = False) -> int:
    r"""Number of scalar parameters, :math:`P = \sum_{p} \prod_i \text{shape}_i(p)`.

    A parameter shared by several layers counts once (as ``torch.nn.Module.parameters`` does).

    Parameters
    ----------
    model : Module
    trainable_only : bool
        Skip frozen parameters (``requires_grad=False``).
    nonzero : bool
        Count only entries that are not exactly zero (what survives pruning).

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    _check_model(model)
    trainable_only = check_bool("trainable_only", trainable_only)
    nonzero = check_bool("nonzero", nonzero)
    total = 0
    for p in _unique(model.parameters()):
        if trainable_only and not p.requires_grad:
            continue
        total += int(B.namespace(p.data).count_nonzero(p.data)) if nonzero else _numel(p.shape)
    return total


def _bytes(count: int, dtype: str | int) -> int:
    """Bytes of ``count`` packed values: :math:`\\lceil count \\cdot bits / 8 \\rceil`."""
    return (count * bits_of(dtype) + 7) // 8


def _storage_bits(dtype: str | int | None) -> int | None:
    """:func:`bits_of`, with None passed through (each array at its own width)."""
    return None if dtype is None else bits_of(dtype)


def _layer_bytes(layer: Module, bits: int | None, nonzero: bool) -> int:
    """What ``layer`` and the modules inside it say their own parameters take (each module once)."""
    return sum(m.parameter_bytes(bits, nonzero) for m in _unique(layer.modules()))


def model_bytes(model: Module, dtype: str | int | None = "float32", nonzero: bool = False) -> int:
    r"""Bytes to store the parameters at a precision, as each layer reports them.

    Every module says what its own parameters take (:meth:`nnopt_lab.nn.Module.parameter_bytes`);
    for the built-in layers that is its values packed densely into whole bytes,

    .. math:: \text{bytes} = \sum_{\text{modules}} \lceil P_m \cdot b / 8 \rceil, \qquad
        b = 32, 16, 16, 8, 4, 1 \text{ for float32, float16, bfloat16, int8, int4, binary}

    (4 / 2 / 2 / 1 / 0.5 / 0.125 bytes per parameter). Scales, zero points, codebooks and
    sparse indices are counted only by the layers that hold them (a quantized or shared
    layer reports its own); a module used twice counts once.

    Parameters
    ----------
    model : Module
    dtype : {"float64", "float32", "float16", "bfloat16", "int8", "int4", "binary"}, int bits or None
        None: every array at its own width (float64 arrays 8 bytes per value, ...).
    nonzero : bool
        Count only nonzero parameters (the payload of a sparse format, without its indices).

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    _check_model(model)
    bits = _storage_bits(dtype)
    return _layer_bytes(model, bits, check_bool("nonzero", nonzero))


# ----------------------------------------------------------------------------- per-layer walk
@dataclass(frozen=True)
class LayerStats:
    """One row of :func:`summary`: a leaf layer and what it costs for one forward pass.

    ``macs`` are the multiply-accumulates the layer reports (:meth:`nnopt_lab.nn.Module.macs`;
    Linear and Conv2d count theirs, layers without weights 0); ``flops = 2 * macs`` (torch's
    FlopCounterMode convention: bias adds, activations, pooling and batch norm are not counted).
    A layer that appears again (shared weights) shows ``params = param_bytes = 0`` the second
    time: its weights are stored once.
    """

    name: str
    type: str
    input_shape: tuple
    output_shape: tuple
    params: int
    param_bytes: int
    macs: int
    flops: int


def _leaves(model: Module, prefix: str = ""):
    """(dotted name, layer) for the layers a Sequential applies in order (nested ones flattened)."""
    if isinstance(model, Sequential):
        for name, layer in model._modules.items():
            yield from _leaves(layer, prefix + name + ".")
    else:
        yield prefix.rstrip(".") or type(model).__name__, model


def _layer_macs(name: str, layer: Module, in_shape: tuple, out_shape: tuple) -> int:
    """``layer.macs(...)``, refused unless it is an int >= 0 (a custom layer's mistake is named)."""
    macs = layer.macs(in_shape, out_shape)
    as_python = as_int(macs)
    if as_python is None or as_python < 0:
        raise TypeError(f"layer {name} ({type(layer).__name__}).macs returned {macs!r}; it must return "
                        f"an int >= 0")
    return as_python


def _input_shape(input_shape: Any) -> tuple:
    """One sample's shape: an int or a non-empty tuple of ints >= 1 (numpy ints accepted)."""
    what = "(one sample, no batch axis, e.g. (64,) or (1, 8, 8))"
    try:
        shape = check_shape("input_shape", input_shape)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error} {what}") from None
    if not shape:
        raise ValueError(f"input_shape must be a non-empty tuple of ints >= 1 {what}, got {input_shape!r}")
    return shape


def _model_backend(model: Module) -> B.Backend:
    """Where (and in which float dtype) the model computes: its first parameter's backend, else its
    first float buffer's (a bias-less SparseLinear keeps its weights as buffers), else the active one."""
    params = model.parameters()
    if params:
        return B.backend_of(params[0].data)
    for _, buffer in model.named_buffers():
        if B.dtype_name(buffer) in B.DTYPES:
            return B.backend_of(buffer)
    return B.active()


def _trace(model: Module, input_shape: tuple, batch_size: int) -> list[tuple[str, Module, tuple, tuple]]:
    """Run a zero batch through the model in eval mode; (name, layer, in shape, out shape) per layer.

    A layer that refuses the batch is reported as a wrong ``input_shape`` (the caller's argument).
    """
    shape = (batch_size,) + input_shape
    try:
        x = _model_backend(model).zeros(shape)
    except (ValueError, MemoryError, RuntimeError) as error:
        raise ValueError(f"batch_size {batch_size} with input_shape {input_shape!r} makes a batch of "
                         f"{_numel(shape):,} values, which cannot be allocated ({error})") from None
    was_training = model.training
    model.eval()
    try:
        rows = []
        for name, layer in _leaves(model):
            try:
                y = layer.forward(x)
            except (TypeError, ValueError) as error:
                raise ValueError(f"input_shape {input_shape!r} does not fit the model: layer {name} "
                                 f"({type(layer).__name__}) got a batch of shape {tuple(x.shape)}: {error}") from None
            rows.append((name, layer, tuple(x.shape), tuple(y.shape)))
            x = y
    finally:
        model.train(was_training)
    return rows


@dataclass(frozen=True)
class ModelSummary:
    """Per-layer rows and totals; ``print(s)`` shows the table."""

    rows: tuple
    input_shape: tuple
    batch_size: int
    dtype: str

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_param_bytes(self) -> int:
        return sum(r.param_bytes for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_flops(self) -> int:
        return sum(r.flops for r in self.rows)

    def table(self) -> str:
        head = ("layer", "type", "output shape", "params", f"bytes ({self.dtype})", "MACs", "FLOPs")
        lines = [(r.name, r.type, str(r.output_shape), f"{r.params:,}", f"{r.param_bytes:,}", f"{r.macs:,}",
                  f"{r.flops:,}") for r in self.rows]
        lines.append(("total", "", "", f"{self.total_params:,}", f"{self.total_param_bytes:,}",
                      f"{self.total_macs:,}", f"{self.total_flops:,}"))
        widths = [max(len(row[i]) for row in [head] + lines) for i in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        rule = "-" * len(fmt(head))
        return "\n".join([f"input {(self.batch_size,) + self.input_shape}", fmt(head), rule]
                         + [fmt(r) for r in lines[:-1]] + [rule, fmt(lines[-1])])

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__


def summary(model: Module, input_shape: tuple, dtype: str | int | None = "float32",
            batch_size: int = 1) -> ModelSummary:
    r"""Per-layer parameters, bytes, MACs, FLOPs and output shape, with totals.

    A zero batch of shape ``(batch_size,) + input_shape`` runs through the layers in eval
    mode (batch norm, dropout untouched) to record each output shape; then every layer
    reports its own cost (:meth:`~nnopt_lab.nn.Module.macs`,
    :meth:`~nnopt_lab.nn.Module.parameter_bytes`), for the built-in layers

    .. math::
        \text{MACs}_{\text{Linear}} = N d_{in} d_{out}, \quad
        \text{MACs}_{\text{Conv2d}} = N H_o W_o C_{out} (C_{in}/g)\, k_h k_w, \quad
        \text{FLOPs} = 2\,\text{MACs}, \quad
        \text{bytes} = \lceil P\,b/8 \rceil.

    Parameters
    ----------
    model : Module (a Sequential is walked layer by layer)
    input_shape : int or tuple of int
        One sample, without the batch axis: ``(64,)`` or ``(1, 8, 8)``.
    dtype : storage type of :func:`model_bytes` (name, bits, or None for the arrays' own)
    batch_size : int >= 1

    Raises
    ------
    TypeError, ValueError
        Naming ``model``, ``input_shape`` (also when a layer refuses a batch of that shape),
        ``dtype`` or ``batch_size``.

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    _check_model(model)
    input_shape = _input_shape(input_shape)
    batch_size = check_int("batch_size", batch_size, 1)
    bits = _storage_bits(dtype)
    rows, seen = [], set()
    for name, layer, in_shape, out_shape in _trace(model, input_shape, batch_size):
        first_use = id(layer) not in seen
        seen.add(id(layer))
        params = sum(_numel(p.shape) for p in _unique(layer.parameters())) if first_use else 0
        stored = _layer_bytes(layer, bits, False) if first_use else 0
        macs = _layer_macs(name, layer, in_shape, out_shape)
        rows.append(LayerStats(name, type(layer).__name__, in_shape, out_shape, params, stored, macs, 2 * macs))
    return ModelSummary(tuple(rows), input_shape, batch_size, "as stored" if dtype is None else str(dtype))


def flops(model: Module, input_shape: tuple, batch_size: int = 1) -> ModelSummary:
    r"""FLOPs of one forward pass, per layer and in total (``.total_flops``, ``.total_macs``).

    Counted as ``torch.utils.flop_counter.FlopCounterMode`` counts: only matrix products and
    convolutions, :math:`\text{FLOPs} = 2\cdot\text{MACs}` (one multiply and one add each),

    .. math::
        \text{Linear: } 2 N d_{in} d_{out}, \qquad
        \text{Conv2d: } 2 N H_o W_o C_{out} (C_{in}/g)\, k_h k_w;

    bias adds, ReLU, pooling and batch norm (:math:`O(\text{activations})`) count zero.
    Each layer reports its own (:meth:`~nnopt_lab.nn.Module.macs`). The same table as
    :func:`summary`.

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    return summary(model, input_shape, batch_size=batch_size)


# ----------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class ActivationMemory:
    """Activation bytes of one forward pass (see :func:`activation_memory` for the formulas)."""

    inference_peak_bytes: int
    training_bytes: int
    per_layer_output_bytes: tuple
    input_bytes: int
    dtype: str
    batch_size: int


def activation_memory(model: Module, input_shape: tuple, dtype: str | int = "float32",
                      batch_size: int = 1) -> ActivationMemory:
    r"""Bytes of activations in a sequential forward pass.

    With :math:`a_0` the input's bytes and :math:`a_\ell` the bytes of layer :math:`\ell`'s output
    (elements × bits / 8, rounded up), for :math:`L` layers:

    .. math::
        M_{\text{inference}} = \max_{1 \le \ell \le L} (a_{\ell-1} + a_\ell), \qquad
        M_{\text{training}} = \sum_{\ell=0}^{L} a_\ell .

    At inference a layer needs only its input and its output alive at once, so the peak is the
    largest such pair. Training keeps every activation for the backward pass. Both are simple
    models: parameters, gradients, optimizer state and framework workspaces are not included;
    every output counts as a new tensor (views such as Flatten's and in-place ReLU would save
    memory in torch), and a layer's own extra cache (e.g. max-pool indices) is not counted.

    Parameters
    ----------
    model : Module
    input_shape : tuple of int, one sample without the batch axis
    dtype : activation storage type (name or bits)
    batch_size : int >= 1

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    _check_model(model)
    input_shape = _input_shape(input_shape)
    batch_size = check_int("batch_size", batch_size, 1)
    bits_of(dtype)
    trace = _trace(model, input_shape, batch_size)
    sizes = [_bytes(_numel((batch_size,) + input_shape), dtype)]
    sizes += [_bytes(_numel(out_shape), dtype) for _, _, _, out_shape in trace]
    peak = max(a + b for a, b in zip(sizes[:-1], sizes[1:])) if trace else sizes[0]
    return ActivationMemory(peak, sum(sizes), tuple(sizes[1:]), sizes[0], str(dtype), batch_size)


# ----------------------------------------------------------------------------- latency
MAX_REPEATS = 10 ** 6          # more timed calls than this is a typo, not a measurement
@dataclass(frozen=True)
class LatencyResult:
    """Timings of repeated calls, in seconds: ``samples`` and their median, IQR, std, min, max."""

    samples: tuple

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def std(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    @property
    def iqr(self) -> float:
        """Interquartile range :math:`Q_3 - Q_1` (0 for a single sample)."""
        if len(self.samples) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q3 - q1

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def __str__(self) -> str:
        return (f"median {self.median * 1e3:.3f} ms (IQR {self.iqr * 1e3:.3f} ms, min {self.min * 1e3:.3f} ms, "
                f"{len(self.samples)} runs)")


def _check_fits(fn: Callable, args: tuple) -> None:
    """``fn(*args)`` must be a valid call (checked on the signature, before any timing)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):       # some builtins have none: the call itself will tell
        return
    try:
        signature.bind(*args)
    except TypeError as error:
        raise TypeError(f"args {_short(args)} do not fit fn{signature}: {error}") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def latency(fn: Callable, /, *args: Any, warmup: int = 3, repeats: int = 20, sync: bool = True) -> LatencyResult:
    r"""Time ``fn(*args)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Each timed call is bracketed by ``time.perf_counter()``; with ``sync`` the GPU queue is
    drained (:func:`nnopt_lab.backend.synchronize`) before each clock read, since CUDA calls
    return before the work is done. Report the median (robust to the odd slow run) with the
    interquartile range :math:`Q_3 - Q_1`.

    Raises
    ------
    TypeError
        When ``fn`` is not callable or ``args`` do not fit its signature, ``sync`` is not a
        bool, ``warmup``/``repeats`` not numbers.
    ValueError
        When ``warmup`` is not an int in [0, 10**6] or ``repeats`` not an int in [1, 10**6].

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    check_callable("fn", fn)
    _check_fits(fn, args)
    warmup = check_int("warmup", warmup, 0, MAX_REPEATS)
    repeats = check_int("repeats", repeats, 1, MAX_REPEATS)
    sync = check_bool("sync", sync)
    for _ in range(warmup):
        fn(*args)
    samples = []
    for _ in range(repeats):
        if sync:
            B.synchronize()
        start = time.perf_counter()
        fn(*args)
        if sync:
            B.synchronize()
        samples.append(time.perf_counter() - start)
    return LatencyResult(tuple(samples))


def measure_model_latency(model: Module, input_shape: tuple, batch_size: int = 1, backend=None,
                          warmup: int = 3, repeats: int = 20) -> LatencyResult:
    """Latency of ``model.forward`` on a random batch ``(batch_size,) + input_shape``, in eval mode.

    ``backend=None`` times the model where its parameters live; another backend times a
    moved *copy* (the model itself is not changed). The batch comes from a separate seeded
    generator, so the project's random stream is not disturbed.

    See: chapters/01_why_optimize.ipynb (seed §1.1)
    """
    _check_model(model)
    input_shape = _input_shape(input_shape)
    batch_size = check_int("batch_size", batch_size, 1)
    warmup = check_int("warmup", warmup, 0, MAX_REPEATS)
    repeats = check_int("repeats", repeats, 1, MAX_REPEATS)
    own = _model_backend(model)
    target = own if backend is None else B.get_backend(backend, own.dtype)
    net = model if target == own else copy.deepcopy(model).to(target)
    _trace(net, input_shape, batch_size)               # a batch the model refuses names input_shape
    x = B.to_backend(B.generator(0).standard_normal((batch_size,) + input_shape), target)
    was_training = net.training
    net.eval()
    try:
        return latency(net.forward, x, warmup=warmup, repeats=repeats)
    finally:
        net.train(was_training)
