"""Array backends: the ONLY module of nnopt_lab that names numpy or torch.

Every technique in the workbook is written once against the array API
(``xp = namespace(x)``; ``xp.matmul``, ``xp.reshape``, ...) and so runs unchanged on

* ``"numpy"``      -- numpy arrays on the CPU,
* ``"torch-cpu"``  -- torch tensors on the CPU,
* ``"torch-cuda"`` -- torch tensors on an NVIDIA GPU,
* ``"auto"``       -- ``"torch-cuda"`` where a GPU is present, else ``"numpy"``.

What the array API does not offer, this module does, each with a *fast path* (the
library's own routine) and a *portable fallback* (plain array-API code) that the tests
hold equal to it:

* :func:`sliding_windows` -- the (kh, kw) windows of an image batch, the heart of im2col;
* :func:`scatter_add`     -- ``out[index] += values`` that keeps repeated indices.

Randomness has one source: a seeded numpy ``Generator`` (:func:`seed`, :func:`rng`).
Numbers are drawn there and moved to the active device, so one seed gives the same
weights, batches and masks on every backend.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

try:  # torch is a dependency, but the numpy path must not need it to import
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None

BACKENDS = ("numpy", "torch-cpu", "torch-cuda")
DTYPES = ("float32", "float64")

__all__ = [
    "BACKENDS", "Backend", "get_backend", "set_backend", "active", "namespace", "is_torch",
    "device_of", "to_numpy", "to_backend", "asarray", "dtype_name", "same_kind",
    "cuda_available", "seed", "rng", "generator", "backend_of", "randn", "rand", "uniform", "permutation",
    "sliding_windows", "sliding_windows_portable", "scatter_add", "scatter_add_portable",
    "synchronize", "float_of", "no_tf32", "copy",
]


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

    @property
    def xp(self) -> Any:
        """The array-API namespace of this backend."""
        if self.name == "numpy":
            return array_api_compat.array_namespace(np.empty(0))
        return array_api_compat.array_namespace(torch.empty(0))

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
        """A zero array of ``shape`` with this backend's float dtype (or ``dtype``)."""
        if self.name == "numpy":
            return np.zeros(shape, dtype=dtype or self.dtype)
        return torch.zeros(shape, dtype=getattr(torch, dtype or self.dtype), device=self.device)

    def __str__(self) -> str:
        return f"{self.name} ({self.dtype})"


_ACTIVE = Backend("numpy")


def get_backend(name: str | Backend = "auto", dtype: str = "float32") -> Backend:
    """Resolve a backend name.

    Parameters
    ----------
    name : {"auto", "numpy", "torch-cpu", "torch-cuda"} or Backend
        ``"auto"`` picks ``"torch-cuda"`` where a GPU is present, else ``"numpy"``.
    dtype : {"float32", "float64"}

    Raises
    ------
    ValueError
        For an unknown name or dtype, or ``"torch-cuda"`` on a machine without a GPU.
    """
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str or Backend, got {type(name).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if name == "auto":
        name = "torch-cuda" if cuda_available() else "numpy"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto',) + BACKENDS}, got {name!r}")
    if name != "numpy" and torch is None:
        raise ValueError(f"backend {name!r} needs torch, which is not installed")
    if name == "torch-cuda" and not cuda_available():
        raise ValueError("backend 'torch-cuda' was requested but torch sees no CUDA device; "
                         "use 'auto', 'numpy' or 'torch-cpu'")
    return Backend(name, dtype)


def set_backend(name: str | Backend = "auto", dtype: str = "float32") -> Backend:
    """Make a backend the active one (the default for new layers and data) and return it."""
    global _ACTIVE
    _ACTIVE = get_backend(name, dtype)
    return _ACTIVE


def active() -> Backend:
    """The active backend (``numpy``/float32 until :func:`set_backend` is called)."""
    return _ACTIVE


# ----------------------------------------------------------------------------- arrays
def is_torch(x: Any) -> bool:
    """True for a torch tensor."""
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*arrays: Any) -> Any:
    """The array-API namespace shared by ``arrays``.

    Raises
    ------
    TypeError
        When numpy arrays and torch tensors are mixed, or a non-array is passed.
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
            raise TypeError(f"expected numpy arrays or torch tensors, got {type(a).__name__}")
        if xp is not None and kind is not xp:
            raise TypeError("numpy arrays and torch tensors were mixed in one call; move them to one "
                            "backend first with nnopt_lab.backend.to_backend(x, backend)")
        xp = kind
    if xp is None:
        raise TypeError("expected at least one numpy array or torch tensor, got none")
    return xp


_NUMPY_XP = array_api_compat.array_namespace(np.empty(0))
_TORCH_XP = array_api_compat.array_namespace(torch.empty(0)) if torch is not None else None


def device_of(x: Any) -> str:
    """``"cpu"`` or ``"cuda"`` (with index) for an array."""
    return str(x.device) if is_torch(x) else "cpu"


def backend_of(x: Any) -> Backend:
    """The :class:`Backend` an array belongs to (its name and dtype)."""
    dtype = dtype_name(x)
    dtype = dtype if dtype in DTYPES else "float32"
    if is_torch(x):
        return Backend("torch-cuda" if x.is_cuda else "torch-cpu", dtype)
    return Backend("numpy", dtype)


def dtype_name(x: Any) -> str:
    """The dtype of an array as a plain string (``"float32"``, ``"int64"``, ...)."""
    return str(x.dtype).replace("torch.", "")


def same_kind(x: Any, like: Any) -> bool:
    """True when ``x`` and ``like`` are both numpy or both torch on one device."""
    return is_torch(x) == is_torch(like) and device_of(x) == device_of(like)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy copy (or view) of any array, tensor, list or scalar."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_backend(x: Any, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Move ``x`` to ``backend`` (default: the active one).

    Floating arrays take ``dtype`` (default: the backend's dtype); integer arrays become
    int64 (the index type of both libraries: labels, permutations); bool stays bool.
    """
    b = active() if backend is None else get_backend(backend) if isinstance(backend, str) else backend
    a = to_numpy(x) if (b.name == "numpy" or not is_torch(x)) else x
    kind = dtype_name(a)
    if dtype is None:
        dtype = b.dtype if kind.startswith(("float", "bfloat")) else None if kind == "bool" else "int64"
    if b.name == "numpy":
        return np.asarray(a).astype(dtype, copy=False) if dtype else np.asarray(a)
    t = a if is_torch(a) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device=b.device, dtype=getattr(torch, dtype) if dtype else None)


def asarray(x: Any, like: Any) -> Any:
    """``x`` on the same backend, device and float dtype as the array ``like``."""
    return to_backend(x, backend_of(like), dtype=dtype_name(like) if dtype_name(like) in DTYPES else None)


def copy(x: Any) -> Any:
    """A copy of an array that shares no memory with it (numpy ``copy`` / torch ``clone``)."""
    return x.clone() if is_torch(x) else np.array(x, copy=True)


def float_of(x: Any) -> float:
    """A Python float from a 0-d array (syncs the GPU: keep out of hot loops)."""
    return float(x.item() if hasattr(x, "item") else x)


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
        A non-negative integer.
    """
    global _RNG
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative int, got {value!r}")
    _RNG = np.random.default_rng(int(value))
    return _RNG


def generator(seed_value: int) -> np.random.Generator:
    """A separate numpy Generator (for checks that must not disturb :func:`rng`)."""
    return np.random.default_rng(seed_value)


def rng() -> np.random.Generator:
    """The project's seeded numpy Generator."""
    return _RNG


def _place(a: np.ndarray, backend: str | Backend | None, dtype: str | None) -> Any:
    return to_backend(a, backend, dtype=dtype)


def randn(*shape: int, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Standard normal numbers of ``shape``, drawn from :func:`rng`, on ``backend``."""
    return _place(_RNG.standard_normal(shape), backend, dtype)


def rand(*shape: int, backend: str | Backend | None = None, dtype: str | None = None) -> Any:
    """Uniform numbers in [0, 1) of ``shape``, drawn from :func:`rng`, on ``backend``."""
    return _place(_RNG.random(shape), backend, dtype)


def uniform(low: float, high: float, shape: tuple, backend=None, dtype=None) -> Any:
    """Uniform numbers in [low, high) of ``shape`` on ``backend`` (drawn from :func:`rng`)."""
    return _place(_RNG.uniform(low, high, size=shape), backend, dtype)


def permutation(n: int, generator: np.random.Generator | None = None) -> np.ndarray:
    """A random permutation of ``range(n)`` as a numpy int64 array (for indexing batches)."""
    return (generator or _RNG).permutation(n)


# ----------------------------------------------------------------------------- fast paths
def sliding_windows(x: Any, kh: int, kw: int, stride: int = 1) -> Any:
    """All (kh, kw) windows of an image batch, as a view where the library allows one.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    kh, kw : int
        Window height and width.
    stride : int

    Returns
    -------
    array, shape (N, C, Ho, Wo, kh, kw)
        ``out[n, c, i, j] == x[n, c, i*stride : i*stride+kh, j*stride : j*stride+kw]``
        with ``Ho = (H - kh) // stride + 1`` (same for Wo).
    """
    if is_torch(x):
        return x.unfold(2, kh, stride).unfold(3, kw, stride)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sc, sh, sw = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, ho, wo, kh, kw), (sn, sc, sh * stride, sw * stride, sh, sw), writeable=False)


def sliding_windows_portable(x: Any, kh: int, kw: int, stride: int = 1) -> Any:
    """The array-API fallback of :func:`sliding_windows` (a copy built from kh·kw slices)."""
    xp = namespace(x)
    n, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    rows = []
    for di in range(kh):
        cols = [x[:, :, di:di + stride * (ho - 1) + 1:stride, dj:dj + stride * (wo - 1) + 1:stride]
                for dj in range(kw)]
        rows.append(xp.stack(cols, axis=-1))          # (N, C, Ho, Wo, kw)
    return xp.stack(rows, axis=-2)                     # (N, C, Ho, Wo, kh, kw)


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
    if is_torch(out):
        return out.index_add_(0, index, values)
    np.add.at(out, index, values)
    return out


def scatter_add_portable(out: Any, index: Any, values: Any) -> Any:
    """Array-API fallback of :func:`scatter_add`: a one-hot matrix product, in place.

    ``out += onehot(index).T @ values`` with ``onehot`` of shape (K, M).
    """
    xp = namespace(out)
    m = out.shape[0]
    onehot = xp.astype(index[:, None] == xp.arange(m, device=array_api_compat.device(out))[None, :],
                       out.dtype)
    flat = xp.reshape(values, (values.shape[0], -1))
    out[...] = out + xp.reshape(onehot.T @ flat, out.shape)
    return out


# ----------------------------------------------------------------------------- bytes and files (data loading)
# numpy-only helpers for nnopt_lab.datasets: file formats are not techniques, so there is no
# portable fallback; results are numpy arrays (move them with to_backend).
__all__ += ["from_bytes", "to_bytes", "save_npz", "load_npz"]


def from_bytes(buffer: bytes, dtype: str, shape: tuple, big_endian: bool = True) -> np.ndarray:
    """Decode raw bytes into a numpy array of ``shape`` in native byte order (a copy).

    numpy-only (file decoding, no fallback needed). ``dtype`` is a numpy dtype name
    (``"uint8"``, ``"int16"``, ``"float32"``, ...); the caller checks the byte count.
    """
    dt = np.dtype(dtype).newbyteorder(">" if big_endian else "<")
    return np.frombuffer(buffer, dtype=dt).reshape(shape).astype(np.dtype(dtype))


def to_bytes(x: Any, dtype: str, big_endian: bool = True) -> bytes:
    """The values of ``x`` as raw bytes of ``dtype`` (C order); numpy-only, no fallback needed."""
    dt = np.dtype(dtype).newbyteorder(">" if big_endian else "<")
    return np.ascontiguousarray(to_numpy(x)).astype(dt).tobytes()


def save_npz(file: Any, arrays: dict) -> None:
    """Write named arrays to an open binary file (or path) with ``numpy.savez``; numpy-only."""
    np.savez(file, **{k: to_numpy(v) for k, v in arrays.items()})


def load_npz(path: Any) -> dict:
    """Read every array of an ``.npz`` file into a dict (``allow_pickle=False``); numpy-only."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
