"""Array backends: the ONLY module of nnopt_lab that names numpy or torch.

Every technique in the workbook is written once against the array API
(``xp = namespace(x)``; ``xp.matmul``, ``xp.reshape``, ...) and so runs unchanged on

* ``"numpy"``      -- numpy arrays on the CPU,
* ``"torch-cpu"``  -- torch tensors on the CPU,
* ``"torch-cuda"`` -- torch tensors on an NVIDIA GPU,
* ``"auto"``       -- ``"torch-cuda"`` where a GPU is present, else ``"numpy"``.

Moving an array (:func:`to_backend`) keeps its shape (a 0-d array stays 0-d) and its
integer width (int8 codes stay int8, int32 accumulators stay int32); floats take the
backend's float dtype. :func:`device` gives the ``device=`` keyword that creates a new
array beside an existing one.

What the array API does not offer, this module does, each with a *fast path* (the
library's own routine) and a *portable fallback* (plain array-API code) that the tests
hold equal to it:

* :func:`sliding_windows` -- the (kh, kw) windows of an image batch, the heart of im2col;
* :func:`scatter_add`     -- ``out[index] += values`` that keeps repeated indices;
* :func:`int_matmul`      -- the exact integer product int8 @ int8 -> int32 of integer inference.

Randomness has one source: a seeded numpy ``Generator`` (:func:`seed`, :func:`rng`).
Numbers are drawn there and moved to the active device, so one seed gives the same
weights, batches and masks on every backend.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .validation import check_bool, check_choice, check_int, check_number, check_path

try:  # torch is a dependency, but the numpy path must not need it to import
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None

BACKENDS = ("numpy", "torch-cpu", "torch-cuda")
DTYPES = ("float32", "float64")
#: Integer dtypes that keep their width when moved between backends.
INT_DTYPES = ("int8", "uint8", "int16", "int32", "int64")
#: Every dtype that :func:`to_backend` can be asked for.
ARRAY_DTYPES = ("bool",) + INT_DTYPES + ("float16",) + DTYPES
_FLOAT_KINDS = ("float16", "bfloat16", "float32", "float64")
_WIDE_UNSIGNED = ("uint16", "uint32", "uint64")   # torch supports few ops on them: moved as int64
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

__all__ = [
    "BACKENDS", "DTYPES", "INT_DTYPES", "ARRAY_DTYPES", "Backend", "get_backend", "set_backend", "active",
    "namespace", "is_torch", "device", "device_of", "to_numpy", "to_backend", "asarray", "dtype_name",
    "same_kind", "cuda_available", "seed", "rng", "generator", "backend_of", "randn", "rand", "uniform",
    "permutation", "sliding_windows", "sliding_windows_portable", "scatter_add", "scatter_add_portable",
    "segment_sum", "segment_sum_portable",
    "int_matmul", "int_matmul_portable", "synchronize", "float_of", "no_tf32", "copy",
]


def _describe(value: Any) -> str:
    """``repr`` of a small value, the type name of anything bulky (an array in an error message)."""
    if value is None or isinstance(value, (bool, int, float, str, tuple, list, np.generic)):
        text = repr(value)
        return text if len(text) <= 80 else f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------- backends
def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    return torch is not None and torch.cuda.is_available()


@dataclass(frozen=True)
class Backend:
    """Where arrays live and which float type they use.

    Attributes
    ----------
    name : str
        One of ``"numpy"``, ``"torch-cpu"``, ``"torch-cuda"``.
    dtype : str
        ``"float32"`` (default, as in torch) or ``"float64"`` (for checks).
    """

    name: str
    dtype: str = "float32"

    def __post_init__(self):
        check_choice("backend", self.name, BACKENDS)
        check_choice("dtype", self.dtype, DTYPES)

    @property
    def xp(self) -> Any:
        """The array-API namespace of this backend."""
        return _NUMPY_XP if self.name == "numpy" else _TORCH_XP

    @property
    def device(self) -> Any:
        """The device arrays are created on (``"cpu"`` for numpy)."""
        return {"numpy": "cpu", "torch-cpu": "cpu", "torch-cuda": "cuda"}[self.name]

    @property
    def float_dtype(self) -> Any:
        """The backend's own dtype object for :attr:`dtype`."""
        if self.name == "numpy":
            return np.dtype(self.dtype)
        return getattr(torch, self.dtype)

    @property
    def is_torch(self) -> bool:
        return self.name != "numpy"

    def asarray(self, x: Any, dtype: str | None = None) -> Any:
        """Copy-free where possible: ``x`` as an array of this backend (floats get :attr:`dtype`)."""
        return to_backend(x, self, dtype=dtype)

    def zeros(self, shape, dtype: str | None = None) -> Any:
        """A zero array of ``shape`` (an int or a tuple) with this backend's float dtype (or ``dtype``)."""
        shape = _check_sizes("shape", (shape,))
        dtype = self.dtype if dtype is None else check_choice("dtype", dtype, ARRAY_DTYPES)
        if self.name == "numpy":
            return np.zeros(shape, dtype=dtype)
        return torch.zeros(shape, dtype=getattr(torch, dtype), device=self.device)

    def __str__(self) -> str:
        return f"{self.name} ({self.dtype})"


_ACTIVE = Backend("numpy")


def get_backend(name: str | Backend = "auto", dtype: str = "float32") -> Backend:
    """Resolve a backend name.

    Parameters
    ----------
    name : {"auto", "numpy", "torch-cpu", "torch-cuda"} or Backend
        ``"auto"`` picks ``"torch-cuda"`` where a GPU is present, else ``"numpy"``.
        A :class:`Backend` is returned as it is (its own dtype wins).
    dtype : {"float32", "float64"}

    Raises
    ------
    TypeError
        For a name that is not a str or a Backend (``None``, a number).
    ValueError
        For an unknown name or dtype, or ``"torch-cuda"`` on a machine without a GPU.
        The messages say ``backend must be ...``: functions with a ``backend=`` argument
        pass it here, so the message names their argument too.

    See: chapters/01_why_optimize.ipynb
    """
    check_choice("dtype", dtype, DTYPES)
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str or Backend, got {_describe(name)} "
                        f"(give a backend name: one of {('auto',) + BACKENDS})")
    if name not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {name!r} (no backend has that name)")
    if name == "auto":
        name = "torch-cuda" if cuda_available() else "numpy"
    if name != "numpy" and torch is None:
        raise ValueError(f"backend {name!r} needs torch, which is not installed")
    if name == "torch-cuda" and not cuda_available():
        raise ValueError("backend 'torch-cuda' was requested but torch sees no CUDA device; "
                         "use 'auto', 'numpy' or 'torch-cpu'")
    return Backend(name, dtype)


def set_backend(name: str | Backend = "auto", dtype: str = "float32") -> Backend:
    """Make a backend the active one (the default for new layers and data) and return it.

    Arguments as in :func:`get_backend`; on an error the active backend is left unchanged.
    """
    global _ACTIVE
    _ACTIVE = get_backend(name, dtype)
    return _ACTIVE


def active() -> Backend:
    """The active backend (``numpy``/float32 until :func:`set_backend` is called)."""
    return _ACTIVE


def _resolve(backend: str | Backend | None) -> Backend:
    """A ``backend=`` argument as a Backend: ``None`` is the active one."""
    if backend is None:
        return active()
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return get_backend(backend)
    raise TypeError(f"backend must be a backend name, a Backend or None, got {_describe(backend)}")


# ----------------------------------------------------------------------------- arrays
def is_torch(x: Any) -> bool:
    """True for a torch tensor."""
    return torch is not None and isinstance(x, torch.Tensor)


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or is_torch(x)


def namespace(*arrays: Any) -> Any:
    """The array-API namespace shared by ``arrays``.

    Raises
    ------
    TypeError
        When numpy arrays and torch tensors are mixed, or a non-array is passed. The message
        says "the arrays given to backend.namespace": functions pass their own arguments here.
    """
    xp = None
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, (np.ndarray, np.generic)):
            kind = _NUMPY_XP
        elif torch is not None and isinstance(a, torch.Tensor):
            kind = _TORCH_XP
        else:
            raise TypeError(f"expected numpy arrays or torch tensors, got {type(a).__name__} "
                            f"(among the arrays given to backend.namespace)")
        if xp is not None and kind is not xp:
            raise TypeError("numpy arrays and torch tensors were mixed in one call (the arrays given to "
                            "backend.namespace); move them to one backend first with "
                            "nnopt_lab.backend.to_backend(x, backend)")
        xp = kind
    if xp is None:
        raise TypeError("expected at least one numpy array or torch tensor, got none (the arrays given to "
                        "backend.namespace were all None)")
    return xp


_NUMPY_XP = array_api_compat.array_namespace(np.empty(0))
_TORCH_XP = array_api_compat.array_namespace(torch.empty(0)) if torch is not None else None


def device(x: Any) -> Any:
    """The ``device=`` keyword that creates a new array beside ``x``.

    ``None`` for a numpy array (numpy has one device), ``x.device`` for a torch tensor, so
    ``xp.zeros(shape, dtype=x.dtype, device=B.device(x))`` works on every backend.

    Raises
    ------
    TypeError
        When ``x`` is not a numpy array or torch tensor.

    See: chapters/01_why_optimize.ipynb
    """
    if is_torch(x):
        return x.device
    if isinstance(x, (np.ndarray, np.generic)):
        return None
    raise TypeError(f"x must be a numpy array or a torch tensor, got {_describe(x)}")


def device_of(x: Any) -> str:
    """``"cpu"`` or ``"cuda"`` (with index) for an array."""
    return str(x.device) if is_torch(x) else "cpu"


def backend_of(x: Any) -> Backend:
    """The :class:`Backend` an array belongs to (its name, and its dtype if it is float32/64)."""
    if not _is_array(x):
        raise TypeError(f"x must be a numpy array or a torch tensor, got {_describe(x)}")
    dtype = dtype_name(x)
    dtype = dtype if dtype in DTYPES else "float32"
    if is_torch(x):
        return Backend("torch-cuda" if x.is_cuda else "torch-cpu", dtype)
    return Backend("numpy", dtype)


_DTYPE_NAMES: dict = {}     # dtype object -> its name (numpy and torch dtypes only)


def dtype_name(x: Any) -> str:
    """The dtype of an array (or a dtype) as a plain string: ``"float32"``, ``"int8"``, ``"bool"``.

    The same name on numpy and torch (``torch.int8`` and ``numpy.int8`` are both ``"int8"``).

    Raises
    ------
    TypeError
        When ``x`` is neither an array nor a numpy/torch dtype.
    """
    dt = getattr(x, "dtype", x)
    if isinstance(x, type) and issubclass(x, np.generic):   # np.float32, np.int8 (the scalar types)
        dt = np.dtype(x)
    if isinstance(dt, np.dtype) or (torch is not None and isinstance(dt, torch.dtype)):
        name = _DTYPE_NAMES.get(dt)
        if name is None:                    # numpy's dtype.name builds a new string each time: look it up once
            name = dt.name if isinstance(dt, np.dtype) else str(dt).replace("torch.", "")
            _DTYPE_NAMES[dt] = name         # byte order left out: ">f8" is "float64"
        return name
    raise TypeError(f"x must be an array or a numpy/torch dtype, got {_describe(x)}")


def same_kind(x: Any, like: Any) -> bool:
    """True when ``x`` and ``like`` are both numpy or both torch on one device."""
    return is_torch(x) == is_torch(like) and device_of(x) == device_of(like)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy copy (or view) of any array, tensor, list or scalar (a 0-d value stays 0-d).

    bfloat16 tensors, which numpy cannot hold, come back as float32.
    """
    if x is None:
        raise TypeError("x must be an array, a tensor, a number or a list of numbers, got None")
    if is_torch(x):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _as_source(x: Any) -> Any:
    """``x`` as a torch tensor (unchanged) or a numpy array; refuses what is not numbers."""
    if is_torch(x):
        return x
    if x is None:
        raise TypeError("x must be an array, a tensor, a number or a list of numbers, got None")
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as err:   # ragged lists, objects numpy cannot convert
        raise ValueError(f"x cannot be made into an array ({err}), got {_describe(x)}") from None


def _target_dtype(source: Any, b: Backend, dtype: str | None) -> str:
    """The dtype ``source`` takes on ``b``: ``dtype`` if asked, else the rules of :func:`to_backend`."""
    kind = dtype_name(source)
    if kind not in _FLOAT_KINDS + INT_DTYPES + _WIDE_UNSIGNED + ("bool",):
        raise TypeError(f"x must hold numbers or bools, got an array of dtype {kind}")
    if kind == "uint64" and _size(source) and int(to_numpy(source).max()) > INT64_MAX:
        raise ValueError("x holds uint64 values above 2**63 - 1, which int64 cannot hold")
    if dtype is not None:
        return check_choice("dtype", dtype, ARRAY_DTYPES)
    if kind in _FLOAT_KINDS:
        return b.dtype
    return "int64" if kind in _WIDE_UNSIGNED else kind


def _size(x: Any) -> int:
    n = 1
    for s in x.shape:
        n *= int(s)
    return n


def _numpy_to_torch(a: np.ndarray) -> Any:
    """A CPU tensor of the numpy array ``a``, any shape (0-d included), sharing memory where it can."""
    if not a.dtype.isnative:                                  # big-endian file data
        a = a.astype(a.dtype.newbyteorder("="))
    if not (a.flags.c_contiguous and a.flags.writeable):      # strided views, read-only buffers
        a = np.array(a, order="C", copy=True)                 # (np.ascontiguousarray makes 0-d into (1,))
    return torch.from_numpy(a)


def to_backend(x: Any, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Move ``x`` to ``backend``, keeping its shape and its integer width.

    Parameters
    ----------
    x : numpy array, torch tensor, number or (nested) list of numbers, any shape (0-d included)
    backend : str, Backend or None
        Where to put it (``None``: the active backend, :func:`active`).
    dtype : one of :data:`ARRAY_DTYPES`, optional
        Force this dtype. Without it:

        * floating arrays take the backend's float dtype (float32 or float64);
        * int8, uint8, int16, int32, int64 and bool keep their dtype (integer codes keep their
          width); uint16/uint32/uint64 become int64 (torch has few kernels for them).

    Returns
    -------
    array of ``backend``, same shape as ``x``; the input itself where nothing changes.

    Raises
    ------
    TypeError
        For ``None``, arrays of strings, objects or complex numbers, or a bad ``backend``.
    ValueError
        For an unknown ``dtype`` or backend name, or a ragged list.

    See: chapters/01_why_optimize.ipynb
    """
    b = _resolve(backend)
    source = _as_source(x)
    target = _target_dtype(source, b, dtype)
    if b.name == "numpy":
        return to_numpy(source).astype(target, copy=False)
    if is_torch(source):
        return source.to(device=b.device, dtype=getattr(torch, target))
    return _numpy_to_torch(source.astype(target, copy=False)).to(device=b.device)


def asarray(x: Any, like: Any) -> Any:
    """``x`` on the same backend and device as the array ``like``, shape kept (0-d stays 0-d).

    When ``like`` is float32/float64, ``x`` takes that dtype (even if it holds integers);
    otherwise the rules of :func:`to_backend` apply (integers keep their width).
    """
    if not _is_array(like):
        raise TypeError(f"like must be a numpy array or a torch tensor, got {_describe(like)}")
    kind = dtype_name(like)
    return to_backend(x, backend_of(like), dtype=kind if kind in DTYPES else None)


def copy(x: Any) -> Any:
    """A copy of an array that shares no memory with it (numpy ``copy`` / torch ``clone``)."""
    return x.clone() if is_torch(x) else np.array(x, copy=True)


def float_of(x: Any) -> float:
    """A Python float from a number or a one-element array (syncs the GPU: keep out of hot loops).

    Raises
    ------
    TypeError
        For anything that is not a real number (``None``, a str, a complex number).
    ValueError
        For an array of more than one element.
    """
    if _is_array(x):
        if _size(x) != 1:
            raise ValueError(f"x must be a number or an array of one element, got shape {tuple(x.shape)}")
        x = x.item()
    if not isinstance(x, numbers.Real):   # bools count: float_of(xp.all(...)) is 1.0 or 0.0
        raise TypeError(f"x must be a real number or an array of one element, got {_describe(x)}")
    return float(x)


def synchronize(x: Any = None) -> None:
    """Wait for queued GPU work (a no-op on the CPU); needed before reading a clock."""
    if cuda_available():
        torch.cuda.synchronize()


def no_tf32() -> None:
    """Turn TF32 matmuls off, so CUDA float32 checks are not 1e-3 off."""
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


# ----------------------------------------------------------------------------- randomness
_RNG = np.random.default_rng(0)


def seed(value: int) -> np.random.Generator:
    """Reset the project's one source of randomness and return it.

    Parameters
    ----------
    value : int
        A non-negative integer (Python, numpy or 0-d torch).

    Raises
    ------
    TypeError
        For ``None``, a str, a bool.
    ValueError
        For a negative or non-integral number.
    """
    global _RNG
    _RNG = np.random.default_rng(check_int("seed value", value, low=0))
    return _RNG


def generator(seed_value: int) -> np.random.Generator:
    """A separate numpy Generator (for checks that must not disturb :func:`rng`).

    ``seed_value`` is a non-negative integer, checked as in :func:`seed`.
    """
    return np.random.default_rng(check_int("seed_value", seed_value, low=0))


def rng() -> np.random.Generator:
    """The project's seeded numpy Generator."""
    return _RNG


def _check_sizes(name: str, sizes: tuple) -> tuple[int, ...]:
    """``sizes`` (ints, or one int / tuple of ints) as a tuple of Python ints >= 0."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    return tuple(check_int(name, s, low=0) for s in sizes)


def _drawn(name: str, value: Any, draw: Any) -> Any:
    """``draw()``, with numpy's "array is too big" / out-of-memory refusal as a ValueError naming ``name``."""
    try:
        return draw()
    except (ValueError, MemoryError) as err:
        raise ValueError(f"{name} must give an array that fits in memory, got {value!r} ({err})") from None


def _destination(backend: str | Backend | None, dtype: str | None) -> Backend:
    """The checked ``backend=`` and ``dtype=`` of a draw, resolved *before* drawing (so that
    a wrong argument leaves :func:`rng` where it was)."""
    if dtype is not None:
        check_choice("dtype", dtype, ARRAY_DTYPES)
    return _resolve(backend)


def _place(a: np.ndarray, backend: Backend, dtype: str | None) -> Any:
    return to_backend(a, backend, dtype=dtype)


def randn(*shape: int, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Standard normal numbers of ``shape`` (``randn(2, 3)`` or ``randn((2, 3))``), from :func:`rng`."""
    shape = _check_sizes("shape", shape)
    b = _destination(backend, dtype)
    return _place(_drawn("shape", shape, lambda: _RNG.standard_normal(shape)), b, dtype)


def rand(*shape: int, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Uniform numbers in [0, 1) of ``shape``, drawn from :func:`rng`, on ``backend``."""
    shape = _check_sizes("shape", shape)
    b = _destination(backend, dtype)
    return _place(_drawn("shape", shape, lambda: _RNG.random(shape)), b, dtype)


def uniform(low: float, high: float, shape: tuple, backend=None, dtype=None) -> Any:
    """Uniform numbers in [low, high) of ``shape`` (an int or a tuple) on ``backend``, from :func:`rng`.

    ``low <= high``, both finite, and ``high - low`` finite too (else a ValueError naming them).
    """
    low, high = check_number("low", low), check_number("high", high)
    if high < low:
        raise ValueError(f"low must be <= high, got low={low!r} and high={high!r}")
    if not math.isfinite(high - low):
        raise ValueError(f"high - low must be a finite number, got low={low!r} and high={high!r}")
    shape = _check_sizes("shape", (shape,))
    b = _destination(backend, dtype)
    return _place(_drawn("shape", shape, lambda: _RNG.uniform(low, high, size=shape)), b, dtype)


def permutation(n: int, generator: np.random.Generator | None = None) -> np.ndarray:
    """A random permutation of ``range(n)`` as a numpy int64 array (for indexing batches).

    Drawn from ``generator`` (a numpy Generator, e.g. from :func:`generator`) or :func:`rng`.
    """
    n = check_int("n", n, low=0)
    if generator is not None and not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy Generator (from backend.generator) or None, "
                        f"got {_describe(generator)}")
    return _drawn("n", n, lambda: (generator or _RNG).permutation(n))


# ----------------------------------------------------------------------------- fast paths
def _check_windows(x: Any, kh: int, kw: int, stride: int) -> tuple[int, int, int]:
    """Checked ``kh, kw, stride`` for the windows of ``x``; cheap (no pass over the data)."""
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"x must be an image batch of shape (N, C, H, W), got "
                         f"{tuple(x.shape) if _is_array(x) else _describe(x)}")
    h, w = x.shape[2], x.shape[3]
    if h == 0 or w == 0:
        raise ValueError(f"x must have H >= 1 and W >= 1 (shape (N, C, H, W)), got shape {tuple(x.shape)}")
    kh, kw = check_int("kh", kh), check_int("kw", kw)
    stride = check_int("stride", stride)
    if kh > h or kw > w:
        name, k, size, what = ("kh", kh, h, "height") if kh > h else ("kw", kw, w, "width")
        raise ValueError(f"{name} must be an int in [1, {size}] (the {what} of x), got {k}: "
                         f"the window ({kh}, {kw}) is larger than the image ({h}, {w})")
    return kh, kw, stride


def sliding_windows(x: Any, kh: int, kw: int, stride: int = 1) -> Any:
    """All (kh, kw) windows of an image batch, as a view where the library allows one.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    kh, kw : int
        Window height and width, at most H and W.
    stride : int

    Returns
    -------
    array, shape (N, C, Ho, Wo, kh, kw)
        ``out[n, c, i, j] == x[n, c, i*stride : i*stride+kh, j*stride : j*stride+kw]``
        with ``Ho = (H - kh) // stride + 1`` (same for Wo).
    """
    kh, kw, stride = _check_windows(x, kh, kw, stride)
    if is_torch(x):
        return x.unfold(2, kh, stride).unfold(3, kw, stride)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sc, sh, sw = x.strides
    # a stride >= H gives one row of windows, whose step is never taken: capping it at H keeps
    # a huge stride from overflowing the byte strides, with the same result (same for W)
    step_h, step_w = (stride if stride < h else h), (stride if stride < w else w)
    return np.lib.stride_tricks.as_strided(
        x, (n, c, ho, wo, kh, kw), (sn, sc, sh * step_h, sw * step_w, sh, sw), writeable=False)


def sliding_windows_portable(x: Any, kh: int, kw: int, stride: int = 1) -> Any:
    """The array-API fallback of :func:`sliding_windows` (a copy built from kh·kw slices)."""
    kh, kw, stride = _check_windows(x, kh, kw, stride)
    xp = namespace(x)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    rows = []
    for di in range(kh):
        cols = [x[:, :, di:di + stride * (ho - 1) + 1:stride, dj:dj + stride * (wo - 1) + 1:stride]
                for dj in range(kw)]
        rows.append(xp.stack(cols, axis=-1))          # (N, C, Ho, Wo, kw)
    return xp.stack(rows, axis=-2)                     # (N, C, Ho, Wo, kh, kw)


def _kind(x: Any) -> str:
    return "torch tensor" if is_torch(x) else "numpy array"


_NUMPY_ARRAYS = (np.ndarray, np.generic)
_TORCH_INDEX_DTYPES = (frozenset(getattr(torch, n) for n in INT_DTYPES) if torch is not None else frozenset())


def _check_scatter(out: Any, index: Any, values: Any) -> None:
    """Every check of a scatter-add, up front: kinds, backends, axes, dtypes, shapes, index range.

    All are O(1) attribute tests except the range of ``index`` (one min and one max): an
    index outside ``[0, M)`` would otherwise wrap around (numpy, negative) or crash the GPU.
    """
    if is_torch(out):
        same_kind_ = is_torch(index) and is_torch(values) and index.device == out.device == values.device
        int_index = same_kind_ and index.dtype in _TORCH_INDEX_DTYPES
    else:
        same_kind_ = (isinstance(out, _NUMPY_ARRAYS) and isinstance(index, _NUMPY_ARRAYS)
                      and isinstance(values, _NUMPY_ARRAYS))
        int_index = same_kind_ and index.dtype.kind in "iu"
    if not same_kind_:
        _explain_scatter_kinds(out, index, values)
    if out.ndim == 0:
        raise ValueError("out must have at least one axis (shape (M, ...)), got shape ()")
    if index.ndim != 1:
        raise ValueError(f"index must be a 1-D integer array, got shape {tuple(index.shape)}")
    if not int_index:
        raise TypeError(f"index must be a 1-D integer array, got dtype {dtype_name(index)}")
    if values.dtype != out.dtype:
        raise TypeError(f"values must have the dtype of out ({dtype_name(out)}), got {dtype_name(values)}")
    if values.ndim != out.ndim or values.shape[0] != index.shape[0] or values.shape[1:] != out.shape[1:]:
        raise ValueError(f"values must have shape (len(index),) + out.shape[1:] = "
                         f"{(index.shape[0],) + tuple(out.shape[1:])}, got {tuple(values.shape)}")
    if index.shape[0]:
        _check_index_range(index, out.shape[0])


def _explain_scatter_kinds(out: Any, index: Any, values: Any) -> None:
    """Raise the error that names the first of ``out, index, values`` of the wrong kind or place."""
    for name, a in (("out", out), ("index", index), ("values", values)):
        if not _is_array(a):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {_describe(a)}")
    for name, a in (("index", index), ("values", values)):
        if is_torch(a) != is_torch(out):
            raise TypeError(f"{name} must be a {_kind(out)} like out, got a {_kind(a)}; move it first "
                            f"with nnopt_lab.backend.to_backend(x, backend)")
        if is_torch(a) and a.device != out.device:
            raise ValueError(f"{name} must be on the device of out ({out.device}), got {a.device}")


def _check_index_range(index: Any, m: int) -> None:
    """Every entry of the non-empty integer array ``index`` must lie in ``[0, m)``."""
    if is_torch(index):
        low_high = torch.aminmax(index)
        if index.is_cuda:
            low, high = torch.stack(low_high).tolist()       # one GPU sync, not two
        else:
            low, high = int(low_high[0]), int(low_high[1])
    else:
        low, high = int(index.min()), int(index.max())
    if low < 0 or high >= m:
        raise ValueError(f"index entries must lie in [0, out.shape[0]) = [0, {m}), "
                         f"got entries in [{low}, {high}]")


def scatter_add(out: Any, index: Any, values: Any) -> Any:
    """``out[index[i]] += values[i]`` along axis 0, *keeping* repeated indices; in place.

    Parameters
    ----------
    out : array, shape (M, ...)
    index : integer array, shape (K,)
    values : array, shape (K, ...)

    Returns
    -------
    out (modified in place). Plain ``out[index] += values`` would add only once per index.
    """
    _check_scatter(out, index, values)
    if is_torch(out):
        if index.dtype not in (torch.int32, torch.int64):   # index_add_ takes no narrower index
            index = index.to(torch.int64)
        return out.index_add_(0, index, values)
    np.add.at(out, index, values)
    return out


def _check_segments(values: Any, offsets: Any) -> int:
    """``values`` (K, ...) and ``offsets`` (M + 1,) non-decreasing integers from 0 to K; returns M."""
    for name, a in (("values", values), ("offsets", offsets)):
        if not _is_array(a):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {_describe(a)}")
    if is_torch(values) != is_torch(offsets):
        raise TypeError(f"offsets must be a {_kind(values)} like values, got a {_kind(offsets)}")
    if values.ndim < 1:
        raise ValueError(f"values must have at least one axis (K, ...), got shape {tuple(values.shape)}")
    if offsets.ndim != 1 or offsets.shape[0] < 1 or dtype_name(offsets) not in INT_DTYPES:
        raise TypeError(f"offsets must be a 1-D integer array (M + 1,), got {dtype_name(offsets)} "
                        f"of shape {tuple(offsets.shape)}")
    steps = offsets[1:] - offsets[:-1]
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0 or last != values.shape[0] or (steps.shape[0] and int(steps.min()) < 0):
        raise ValueError(f"offsets must rise from 0 to len(values) = {values.shape[0]} without falling, "
                         f"got offsets from {first} to {last}")
    return int(offsets.shape[0]) - 1


def segment_sum(values: Any, offsets: Any) -> Any:
    r"""Sums of consecutive runs of rows: :math:`S_{i} = \sum_{p=o_i}^{o_{i+1}-1} V_{p}`.

    The rows of ``values`` belonging to segment ``i`` are ``values[offsets[i]:offsets[i+1]]``
    (sorted, as in a CSR matrix, whose row pointers are exactly these offsets); an empty
    segment sums to 0. Fast path: numpy's ``add.reduceat`` over the non-empty segments, torch's
    ``index_add_``; the fallback :func:`segment_sum_portable` is a cumulative-count scatter.

    Parameters
    ----------
    values : array, shape (K, ...)
    offsets : integer array, shape (M + 1,), non-decreasing from 0 to K

    Returns
    -------
    array, shape (M, ...), the dtype of ``values``
    """
    m = _check_segments(values, offsets)
    if is_torch(values):
        return segment_sum_portable(values, offsets)
    out = np.zeros((m,) + tuple(values.shape[1:]), dtype=values.dtype)
    starts = offsets[:-1]
    nonempty = starts < offsets[1:]
    if values.shape[0]:
        out[nonempty] = np.add.reduceat(values, starts[nonempty], axis=0)
    return out


def segment_sum_portable(values: Any, offsets: Any) -> Any:
    """Array-API fallback of :func:`segment_sum`: segment ids from the offsets, then a scatter-add."""
    m = _check_segments(values, offsets)
    xp = namespace(values)
    counts = xp.astype(offsets[1:] - offsets[:-1], xp.int64)
    ids = xp.repeat(xp.arange(m, dtype=xp.int64, device=device(values)), counts) if m else \
        xp.zeros((0,), dtype=xp.int64, device=device(values))
    out = xp.zeros((m,) + tuple(values.shape[1:]), dtype=values.dtype, device=device(values))
    if values.shape[0]:
        scatter_add(out, ids, values)
    return out


def scatter_add_portable(out: Any, index: Any, values: Any) -> Any:
    """Array-API fallback of :func:`scatter_add`: a one-hot matrix product, in place.

    ``out += onehot(index).T @ values`` with ``onehot`` of shape (K, M). (Integer ``out`` on
    torch-cuda is not supported: torch's CUDA matmul has no integer kernel.)
    """
    _check_scatter(out, index, values)
    xp = namespace(out)
    m = out.shape[0]
    onehot = xp.astype(xp.astype(index, xp.int64)[:, None] == xp.arange(m, device=device(out))[None, :],
                       out.dtype)
    flat = xp.reshape(values, (values.shape[0], math.prod(out.shape[1:])))   # not -1: ambiguous for K = 0
    out[...] = out + xp.reshape(onehot.T @ flat, out.shape)
    return out


# ----------------------------------------------------------------------------- exact integer matmul
#: Operand dtypes of :func:`int_matmul`, and the largest |value| each can hold.
_MATMUL_ABS_MAX = {"int8": 2**7, "uint8": 2**8 - 1, "int16": 2**15, "int32": 2**31}
_FLOAT64_EXACT = 2**53        # every integer of magnitude <= 2**53 is a float64
_PORTABLE_BLOCK = 2**22       # int64 elements of one (M, k-block, N) product in the fallback


def _check_int_operands(a: Any, b: Any) -> Any:
    """The namespace of ``a`` (M, K) and ``b`` (K, N), after checking kinds, dtypes and shapes."""
    for name, m in (("a", a), ("b", b)):
        if not _is_array(m):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {_describe(m)}")
        if dtype_name(m) not in _MATMUL_ABS_MAX:
            raise TypeError(f"{name} must be an integer array of dtype {tuple(_MATMUL_ABS_MAX)}, "
                            f"got {dtype_name(m)}")
        if m.ndim != 2:
            raise ValueError(f"{name} must be 2-D (a: (M, K), b: (K, N)), got shape {tuple(m.shape)}")
    if is_torch(a) != is_torch(b):
        raise TypeError(f"a and b must both be numpy arrays or both torch tensors, got a: {_kind(a)}, "
                        f"b: {_kind(b)}; move them to one backend with nnopt_lab.backend.to_backend")
    xp = namespace(a, b)
    if device_of(a) != device_of(b):
        raise ValueError(f"a and b must be on one device, got {device_of(a)} and {device_of(b)}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a's columns must match b's rows (a: (M, K), b: (K, N)), "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    return xp


def _abs_max(x: Any) -> int:
    """max |x| as a Python int (0 for an empty array); in int64, so |-128| does not wrap."""
    if _size(x) == 0:
        return 0
    xp = namespace(x)
    return int(xp.max(xp.abs(xp.astype(x, xp.int64))))


def _product_bound(a: Any, b: Any) -> int:
    """An upper bound on |partial sum| of ``a @ b``: ``K * max|a| * max|b|``.

    From the dtypes alone when that is within int32 (no pass over the data, no GPU sync:
    int8 x int8 for any K <= 131071), else from the values.
    """
    k = a.shape[1]
    worst = k * _MATMUL_ABS_MAX[dtype_name(a)] * _MATMUL_ABS_MAX[dtype_name(b)]
    return worst if worst <= INT32_MAX else k * _abs_max(a) * _abs_max(b)


def _check_fits_int32(out: Any) -> None:
    """Raise when an entry of the exact product ``out`` lies outside int32."""
    if _size(out) == 0:
        return
    xp = namespace(out)
    low, high = int(xp.min(out)), int(xp.max(out))
    if low < -INT32_MAX - 1 or high > INT32_MAX:
        raise ValueError(f"a @ b does not fit the int32 accumulator: its entries reach [{low}, {high}], "
                         f"outside [-2**31, 2**31 - 1]; use smaller values or split K")


def _int_mm_applies(a: Any, b: Any) -> bool:
    """True when ``torch._int_mm`` (int8 x int8 -> int32) takes these operands.

    CPU (torch >= 2.3): any shape. CUDA (cuBLASLt): M > 16, K and N positive multiples of 8.
    """
    if not (is_torch(a) and hasattr(torch, "_int_mm")):
        return False
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        return False
    if a.device.type == "cpu":
        return True
    (m, k), n = a.shape, b.shape[1]
    return a.device.type == "cuda" and m > 16 and k > 0 and k % 8 == 0 and n > 0 and n % 8 == 0


def _matmul_float64(a: Any, b: Any) -> Any:
    """``a @ b`` by a float64 GEMM, as float64; exact when the product bound is < 2**53."""
    xp = namespace(a)
    return xp.matmul(xp.astype(a, xp.float64), xp.astype(b, xp.float64))


def int_matmul(a: Any, b: Any) -> Any:
    """The exact integer matrix product ``a @ b`` with an int32 result, by the fastest exact route.

    The matmul of integer inference: int8 (or uint8) codes times int8 weights, summed in an
    int32 accumulator, as in ``torch._int_mm`` and integer-only accelerators.

    .. math::

        C_{ij} = \\sum_{k=1}^{K} A_{ik} B_{kj} \\quad \\text{(exactly, in integers)}

    Parameters
    ----------
    a : integer array, shape (M, K), dtype int8, uint8, int16 or int32
    b : integer array, shape (K, N), same backend and device as ``a`` (dtypes may differ,
        e.g. uint8 activations times int8 weights)

    Returns
    -------
    int32 array, shape (M, N), on the backend of ``a``.

    Raises
    ------
    TypeError
        For non-arrays, float/bool/int64 operands, or numpy mixed with torch.
    ValueError
        For shapes that do not chain, or when an entry of ``a @ b`` does not fit int32
        (never a silent wrap-around).

    Notes
    -----
    Exactness. Every partial sum is an integer of magnitude at most
    :math:`\\beta = K \\max|A| \\max|B|` (for int8 x int8, :math:`K \\cdot 2^{14}`).

    * :math:`\\beta \\le 2^{31} - 1`: no partial sum and no entry can leave int32. On torch with
      int8 operands, ``torch._int_mm`` (CPU; CUDA when M > 16 and K, N are multiples of 8);
      otherwise a float64 GEMM: float64 holds every integer up to :math:`2^{53}`, so each
      product and each addition, in whatever order the BLAS sums, is exact.
    * :math:`2^{31} \\le \\beta < 2^{53}`: the float64 GEMM is still exact; its result is checked
      against the int32 range (a ValueError, not a wrap, when it leaves it).
    * :math:`\\beta \\ge 2^{53}`: :func:`int_matmul_portable` (int64 arithmetic, same check).

    The bound comes from the dtypes when that suffices (no pass over the data); else from
    the values. Tested equal to :func:`int_matmul_portable` and to numpy's int64 matmul.

    See: chapters/01_why_optimize.ipynb
    """
    xp = _check_int_operands(a, b)
    bound = _product_bound(a, b)
    if bound <= INT32_MAX and _int_mm_applies(a, b):
        return torch._int_mm(a.contiguous(), b.contiguous())
    if bound >= _FLOAT64_EXACT:
        return int_matmul_portable(a, b)
    out = _matmul_float64(a, b)              # exact integers, as float64
    if bound > INT32_MAX:
        _check_fits_int32(out)
    return xp.astype(out, xp.int32)


def int_matmul_portable(a: Any, b: Any) -> Any:
    """Array-API fallback of :func:`int_matmul`: the exact product in int64 blocks, as int32.

    ``C = sum over blocks of K of sum_k A[:, k, None] * B[None, k, :]``, all in int64 (only
    elementwise products and sums, which every backend has for integers -- torch's CUDA
    matmul has no integer kernel). Exact while :math:`K \\max|A| \\max|B| \\le 2^{63} - 1`.

    Parameters
    ----------
    a : integer array, shape (M, K), dtype int8, uint8, int16 or int32
    b : integer array, shape (K, N)

    Returns
    -------
    int32 array, shape (M, N).

    Raises
    ------
    ValueError
        When an entry does not fit int32, or the int64 accumulation could overflow.
    """
    xp = _check_int_operands(a, b)
    (m, k), n = a.shape, b.shape[1]
    if k * _abs_max(a) * _abs_max(b) > INT64_MAX:
        raise ValueError("a @ b cannot be accumulated exactly in int64: K * max|a| * max|b| > 2**63 - 1")
    a64, b64 = xp.astype(a, xp.int64), xp.astype(b, xp.int64)
    out = xp.zeros((m, n), dtype=xp.int64, device=device(a))
    step = max(1, _PORTABLE_BLOCK // max(1, m * n))
    for k0 in range(0, k, step):
        out = out + xp.sum(a64[:, k0:k0 + step, None] * b64[None, k0:k0 + step, :], axis=1)
    _check_fits_int32(out)
    return xp.astype(out, xp.int32)


# ----------------------------------------------------------------------------- bytes and files (data loading)
# numpy-only helpers for nnopt_lab.datasets: file formats are not techniques, so there is no
# portable fallback; results are numpy arrays (move them with to_backend).
__all__ += ["from_bytes", "to_bytes", "save_npz", "load_npz"]


def _file_dtype(dtype: Any, big_endian: bool) -> np.dtype:
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a numpy dtype name such as 'uint8', got {_describe(dtype)}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be a numpy dtype name such as 'uint8', got {dtype!r}") from None
    return dt.newbyteorder(">" if check_bool("big_endian", big_endian) else "<")


def from_bytes(buffer: bytes, dtype: str, shape: tuple, big_endian: bool = True) -> np.ndarray:
    """Decode raw bytes into a numpy array of ``shape`` in native byte order (a copy).

    numpy-only (file decoding, no fallback needed). ``dtype`` is a numpy dtype name
    (``"uint8"``, ``"int16"``, ``"float32"``, ...); ``buffer`` must hold exactly
    ``prod(shape)`` values of it.
    """
    if not isinstance(buffer, (bytes, bytearray, memoryview)):
        raise TypeError(f"buffer must be bytes, got {_describe(buffer)}")
    dt = _file_dtype(dtype, big_endian)
    shape = _check_sizes("shape", (shape,))
    want = dt.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(buffer) != want:
        raise ValueError(f"buffer must hold {want} bytes for shape {shape} of {dtype}, got {len(buffer)}")
    return np.frombuffer(buffer, dtype=dt).reshape(shape).astype(np.dtype(dtype))


def to_bytes(x: Any, dtype: str, big_endian: bool = True) -> bytes:
    """The values of ``x`` as raw bytes of ``dtype`` (C order); numpy-only, no fallback needed."""
    dt = _file_dtype(dtype, big_endian)
    source = to_numpy(_as_source(x))
    if source.dtype.kind not in "biuf":
        raise TypeError(f"x must hold numbers or bools, got an array of dtype {source.dtype}")
    return np.ascontiguousarray(source).astype(dt).tobytes()


def save_npz(file: Any, arrays: dict) -> None:
    """Write named arrays to an open binary file (or path) with ``numpy.savez``; numpy-only."""
    if not hasattr(file, "write"):
        file = check_path("file", file)
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> array, got {_describe(arrays)}")
    np.savez(file, **{k: to_numpy(v) for k, v in arrays.items()})


def load_npz(path: Any) -> dict:
    """Read every array of an ``.npz`` file into a dict (``allow_pickle=False``); numpy-only."""
    with np.load(check_path("path", path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ----------------------------------------------------------------------------- bfloat16 rounding
def _float_source(x: Any) -> Any:
    """``x`` as a floating numpy array or torch tensor (float16, bfloat16, float32 or float64)."""
    if not _is_array(x):
        raise TypeError(f"x must be a numpy array or a torch tensor, got {_describe(x)}")
    if dtype_name(x) not in _FLOAT_KINDS:
        raise TypeError(f"x must be a floating-point array, got dtype {dtype_name(x)}")
    return x


def round_bfloat16(x: Any) -> Any:
    r"""``x`` rounded to the nearest bfloat16 (ties to even), as a float32 array on ``x``'s backend.

    bfloat16 is the upper half of a float32: 1 sign bit, the 8 exponent bits of float32 and 7
    fraction bits (8 significant bits). Fast paths: on torch ``x.to(float32).to(bfloat16)
    .to(float32)``; on numpy (which has no bfloat16) the float32 bits viewed as uint32 and
    rounded on their upper 16 bits,

    .. math::

        u' = \big(u + \mathtt{0x7FFF} + ((u \gg 16)\,\&\,1)\big)\;\&\;\mathtt{0xFFFF0000},

    NaN kept as NaN (the sum would turn some NaN payloads into inf). float64 inputs are first
    rounded to float32, as torch converts them. Overflow (:math:`|x| \ge 2^{128} - 2^{119}`)
    gives ±inf, as in torch. :func:`round_bfloat16_portable` is the array-API fallback.

    See: chapters/05_3_quantization.ipynb
    """
    x = _float_source(x)
    if is_torch(x):
        return x.to(torch.float32).to(torch.bfloat16).to(torch.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.asarray(x, dtype=np.float32)
    u = a.view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000))
    return np.where(np.isnan(a), a, rounded.view(np.float32))


def round_bfloat16_portable(x: Any) -> Any:
    r""":func:`round_bfloat16` with array-API arithmetic only (no bit views): the portable fallback.

    With :math:`e = \lfloor \log_2 |x| \rfloor` (corrected to :math:`2^e \le |x| < 2^{e+1}`)
    and the bfloat16 spacing :math:`q = 2^{\max(e - 7,\, -133)}` (8 significant bits;
    subnormals below :math:`2^{-126}` are spaced :math:`2^{-133}`), the result is
    :math:`\operatorname{round}(x/q)\,q` in float64 (round half to even, exact: q is a power of
    2), then stored as float32 (exact, or ±inf past the bfloat16 range). 0, ±inf and NaN pass
    through unchanged. Equal to the fast path bit for bit (tested on every kind of float32).

    See: chapters/05_3_quantization.ipynb
    """
    x = _float_source(x)
    xp = namespace(x)
    with np.errstate(over="ignore", invalid="ignore"):
        v = xp.astype(xp.astype(x, xp.float32), xp.float64)
        mag = xp.abs(v)
        regular = (mag > 0) & (mag < math.inf)
        safe = xp.where(regular, mag, xp.ones_like(mag))
        e = xp.floor(xp.log2(safe))
        e = xp.where(2.0 ** e > safe, e - 1, e)
        e = xp.where(2.0 ** (e + 1) <= safe, e + 1, e)
        spacing = 2.0 ** xp.maximum(e - 7, xp.full_like(e, -133.0))
        rounded = xp.round(v / spacing) * spacing
        return xp.astype(xp.where(regular, rounded, v), xp.float32)


__all__ += ["round_bfloat16", "round_bfloat16_portable"]
