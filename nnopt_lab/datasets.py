"""The data every chapter trains on (seed §1; §2.1 preprocesses it).

* :func:`load_digits`  -- scikit-learn's bundled 8×8 handwritten digits (1797 samples, 10 classes);
* :func:`load_mnist1d` -- MNIST-1D (Greydanus 2020), 40-point signals generated locally by the
  ``mnist1d`` package (nothing is downloaded) and cached under ``data/cache/``;
* :func:`make_moons`, :func:`make_spirals` -- 2-D toy sets for pictures of decision boundaries;
* :func:`load_idx`, :func:`write_idx`, :func:`load_mnist_family` -- the IDX files of MNIST,
  Fashion-MNIST and KMNIST, for users who have them (optional, never downloaded here).

Every loader returns a :class:`Dataset`: a seeded, *stratified* train/val/test split whose
standardization statistics come from the training split only, on the backend you ask for.
Arithmetic is done in float64 on the CPU and cast once at the end, so numpy and torch get
bit-identical data.

The ``sklearn.datasets`` and ``mnist1d`` imports here load data; they do no technique.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import backend as B
from .validation import as_float, check_array, check_bool, check_choice, check_int, check_number, check_path

__all__ = ["Dataset", "load_digits", "load_mnist1d", "make_moons", "make_spirals",
           "stratified_split", "load_idx", "write_idx", "load_mnist_family", "DATA_DIR", "CACHE_DIR"]

# the repository's data/ folder; set NNOPT_LAB_DATA to use another (e.g. for a non-editable install)
DATA_DIR = Path(os.environ.get("NNOPT_LAB_DATA", Path(__file__).resolve().parents[1] / "data"))
CACHE_DIR = DATA_DIR / "cache"
MIN_STD = 1e-6  # features whose training std is below this are only centred (divided by 1)
MAX_SAMPLES = 1_000_000  # largest generated data set (toy sets, MNIST-1D): beyond it a typo, not a request
SPLIT_NAMES = ("train", "val", "test")


# ----------------------------------------------------------------------------- the container
@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/val/test split on one backend.

    Attributes
    ----------
    name : str
    train, val, test : tuple (X, y)
        ``X`` float in the backend's dtype, shape ``(N,) + input_shape``; ``y`` int64, shape (N,).
    num_classes : int
    input_shape : tuple
        Shape of one sample of ``X`` as stored: ``(64,)`` flat or ``(1, 8, 8)`` for images.
    image_shape : tuple
        Shape of one sample as an image/signal with a channel axis, e.g. ``(1, 8, 8)``, ``(1, 40)``.
    class_names : tuple of str
    mean, std : array or None
        The per-feature statistics (from the training split) used for standardization, shape
        (D,) with D the flat feature count; None when ``standardize=False``.
    """

    name: str
    train: tuple
    val: tuple
    test: tuple
    num_classes: int
    input_shape: tuple
    image_shape: tuple
    class_names: tuple
    mean: Any = None
    std: Any = None
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple:
        """The (X, y) pair of ``"train"``, ``"val"`` or ``"test"``."""
        return getattr(self, check_choice("name", name, SPLIT_NAMES))

    def images(self, x: Any) -> Any:
        """``X`` (or a split name) reshaped to ``(N,) + image_shape``, e.g. (N, 1, 8, 8)."""
        x = self._samples(x)
        return B.namespace(x).reshape(x, (x.shape[0],) + tuple(self.image_shape))

    def flat(self, x: Any) -> Any:
        """``X`` (or a split name) reshaped to (N, D), D = prod(image_shape)."""
        x = self._samples(x)
        return B.namespace(x).reshape(x, (x.shape[0], math.prod(self.image_shape)))

    def _samples(self, x: Any) -> Any:
        """A split's X (for a split name) or ``x``, checked to hold samples of this data set."""
        x = self.split(check_choice("x", x, SPLIT_NAMES))[0] if isinstance(x, str) else check_array("x", x)
        size = math.prod(self.image_shape)
        if x.ndim < 1 or math.prod(tuple(x.shape[1:])) != size:
            raise ValueError(f"x must hold samples of {size} values (image_shape {tuple(self.image_shape)}), "
                             f"got shape {tuple(x.shape)}")
        return x

    def to(self, backend: str | B.Backend) -> "Dataset":
        """A copy with every array moved to ``backend`` (floats take its dtype, labels stay int64)."""
        b = _backend(backend)
        move = (lambda a: None if a is None else B.to_backend(a, b))
        return replace(self, train=_move_pair(self.train, b), val=_move_pair(self.val, b),
                       test=_move_pair(self.test, b), mean=move(self.mean), std=move(self.std))

    @property
    def backend(self) -> B.Backend:
        return B.backend_of(self.train[0])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={self.split(n)[0].shape[0]}" for n in SPLIT_NAMES)
        return (f"Dataset({self.name!r}, {sizes}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, backend={self.backend})")


def _move_pair(pair: tuple, backend: B.Backend) -> tuple:
    x, y = pair
    return B.to_backend(x, backend), B.to_backend(y, backend, dtype="int64")


# ----------------------------------------------------------------------------- validation
def _split(split: Any) -> tuple[float, float, float]:
    """``split`` as three Python floats (train, val, test): non-negative, summing to 1, train > 0."""
    fractions = tuple(map(as_float, split)) if isinstance(split, (tuple, list)) else ()
    if (len(fractions) != 3 or None in fractions or any(not math.isfinite(f) or f < 0 for f in fractions)
            or fractions[0] <= 0 or abs(sum(fractions) - 1.0) > 1e-9):
        raise ValueError("split must be three non-negative fractions (train, val, test) summing to 1 "
                         f"with train > 0, got {split!r}")
    return fractions




def _backend(backend: Any) -> B.Backend:
    if backend is None:
        return B.active()
    if not isinstance(backend, (str, B.Backend)):
        raise TypeError(f"backend must be None, a backend name or a Backend, got {type(backend).__name__}")
    return B.get_backend(backend)


# ----------------------------------------------------------------------------- splitting
def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def stratified_split(y: Any, split=(0.6, 0.2, 0.2), seed: int = 0) -> tuple:
    r"""Indices of a seeded, stratified train/val/test split.

    For each class :math:`c` with :math:`n_c` samples (permuted by a generator made from ``seed``)

    .. math::
        n_c^{train} = \lfloor f_{train} n_c + \tfrac12 \rfloor, \quad
        n_c^{val} = \min(\lfloor f_{val} n_c + \tfrac12 \rfloor,\; n_c - n_c^{train}), \quad
        n_c^{test} = n_c - n_c^{train} - n_c^{val},

    so each count is within one sample of :math:`f\,n_c` (round half up; the test split takes
    the remainder). Each split's indices are then shuffled, so classes are interleaved.

    Parameters
    ----------
    y : integer array, shape (N,)
    split : (f_train, f_val, f_test), non-negative, summing to 1, f_train > 0
    seed : int >= 0

    Returns
    -------
    (train_idx, val_idx, test_idx) : numpy int64 arrays
    """
    f_train, f_val, _ = _split(split)
    seed = check_int("seed", seed, 0)
    check_array("y", y, 1, "(N,)")
    if not B.dtype_name(y).startswith(("int", "uint")):
        raise TypeError(f"y must be an integer array of labels, got dtype {B.dtype_name(y)}")
    if y.shape[0] == 0:
        raise ValueError("y must hold at least one label, got an empty array")
    gen = B.generator(seed)
    y = B.to_numpy(y)
    xp = B.namespace(y)
    parts: list[list] = [[], [], []]
    for c in xp.unique_values(y):
        idx = xp.nonzero(y == c)[0]
        idx = idx[gen.permutation(idx.shape[0])]
        n = idx.shape[0]
        n_train = _round_half_up(f_train * n)
        n_val = min(_round_half_up(f_val * n), n - n_train)
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train:n_train + n_val], idx[n_train + n_val:])):
            part.append(chunk)
    out = []
    for part in parts:
        idx = xp.astype(xp.concat(part), xp.int64)
        out.append(idx[gen.permutation(idx.shape[0])])
    return tuple(out)


# ----------------------------------------------------------------------------- assembling
def _standardize(x_train: Any, others: list) -> tuple:
    r"""z-score with the training split's per-feature statistics.

    .. math:: \hat x_{ij} = (x_{ij} - \mu_j) / s_j, \quad \mu_j, \sigma_j \text{ over the training
        rows}, \quad s_j = \sigma_j \text{ if } \sigma_j \ge 10^{-6} \text{ else } 1

    (population std; constant training features are centred only, never blown up).
    """
    xp = B.namespace(x_train)
    mean = xp.mean(x_train, axis=0)
    std = xp.std(x_train, axis=0)
    std = xp.where(std < MIN_STD, xp.ones_like(std), std)
    return [(x - mean) / std for x in [x_train] + others], mean, std


def _build(name: str, x: Any, y: Any, parts: tuple, *, backend: Any, standardize: bool, as_images: bool,
           image_shape: tuple, class_names: tuple, info: dict) -> Dataset:
    """Split float64 numpy data (N, D) by ``parts`` indices, standardize, reshape, move."""
    b = _backend(backend)
    xp = B.namespace(x)
    x = xp.astype(x, xp.float64)
    y = xp.astype(y, xp.int64)
    xs = [x[idx] for idx in parts]
    mean = std = None
    if standardize:
        xs, mean, std = _standardize(xs[0], xs[1:])
    sample_shape = tuple(image_shape) if as_images else (x.shape[1],)
    pairs = [(B.to_backend(xp.reshape(xi, (xi.shape[0],) + sample_shape), b),
              B.to_backend(y[idx], b, dtype="int64")) for xi, idx in zip(xs, parts)]
    return Dataset(name, *pairs, num_classes=len(class_names), input_shape=sample_shape,
                   image_shape=tuple(image_shape), class_names=tuple(class_names),
                   mean=None if mean is None else B.to_backend(mean, b),
                   std=None if std is None else B.to_backend(std, b), info=info)


# ----------------------------------------------------------------------------- digits
def load_digits(backend=None, split=(0.6, 0.2, 0.2), seed: int = 0, standardize: bool = True,
                as_images: bool = False) -> Dataset:
    r"""scikit-learn's 8×8 handwritten digits (UCI optdigits test set): 1797 × 64, 10 classes.

    Pixels (integers 0..16) are first scaled to [0, 1] by :math:`x/16`; with ``standardize``
    each of the 64 features is then z-scored with the *training* split's mean and std
    (see :func:`stratified_split` for the split, ``Dataset.mean``/``.std`` for the statistics).

    Parameters
    ----------
    backend : None (the active one), a name or a Backend
    split : (f_train, f_val, f_test)
        Default 0.6/0.2/0.2 gives 1078/359/360 samples.
    seed : int
        Seed of the split (the same seed always gives the same split).
    standardize : bool
    as_images : bool
        X of shape (N, 1, 8, 8) instead of (N, 64).

    Returns
    -------
    Dataset

    See: chapters/01_why_optimize.ipynb (seed §1)
    """
    from sklearn import datasets as skdatasets  # data loading only

    _split(split)
    b = _backend(backend)
    seed = check_int("seed", seed, 0)
    standardize, as_images = check_bool("standardize", standardize), check_bool("as_images", as_images)
    raw = skdatasets.load_digits()
    x, y = raw.data, raw.target
    parts = stratified_split(y, split, seed)
    return _build("digits", x / 16.0, y, parts, backend=b, standardize=standardize,
                  as_images=as_images, image_shape=(1, 8, 8),
                  class_names=tuple(str(c) for c in range(10)),
                  info={"source": "sklearn.datasets.load_digits", "split": tuple(split), "seed": seed,
                        "scaling": "x/16" + (", then z-score (train stats)" if standardize else "")})


# ----------------------------------------------------------------------------- MNIST-1D
def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(fileobj)`` into a temporary file next to ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _generate_mnist1d(num_samples: int, generation_seed: int) -> dict:
    """Run mnist1d's own generator (procedural; its download path is never used)."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, generation_seed
    state = random.getstate()  # mnist1d reseeds Python's and numpy's global generators
    try:
        data = make_dataset(args)
    finally:
        random.setstate(state)
    xp = B.namespace(data["x"])
    return {"x": xp.concat([data["x"], data["x_test"]]), "y": xp.concat([data["y"], data["y_test"]]),
            "t": data["t"]}


def load_mnist1d(backend=None, split=(0.6, 0.2, 0.2), seed: int = 0, standardize: bool = True,
                 num_samples: int = 5000, cache_dir: str | os.PathLike | None = None,
                 generation_seed: int = 42, verbose: bool = False) -> Dataset:
    r"""MNIST-1D: 10 classes of 40-point 1-D signals (Greydanus, 2020), generated locally.

    The ``mnist1d`` package draws ``10 * (num_samples // 10)`` signals from ten templates
    (padding, shear, translation, correlated and i.i.d. noise) with its global seed
    ``generation_seed`` (42 = the paper's data) and centres/scales the whole set to mean 0,
    std 1. The arrays are cached as ``mnist1d_n{N}_s{seed}.npz`` in ``cache_dir`` (default
    ``data/cache/``, git-ignored), written to a temporary file and renamed into place; a later
    call reads the cache (``allow_pickle=False``), regenerating it if it is unreadable.
    Generation takes a few seconds for 5000 samples on a laptop core.

    The package's own 80/20 split is not used: the signals are split like :func:`load_digits`
    (stratified, seeded) and, with ``standardize``, z-scored per feature with training statistics.

    Parameters
    ----------
    backend, split, seed, standardize : as :func:`load_digits`
    num_samples : int in [10, 1000000]
    cache_dir : path or None
    generation_seed : int >= 0
    verbose : bool
        Print whether the cache was used and how long generation took.

    Returns
    -------
    Dataset with X of shape (N, 40) (``images`` gives (N, 1, 40)); ``info["t"]`` holds the
    40 sample positions.

    See: chapters/01_why_optimize.ipynb (seed §1)
    """
    num_samples = check_int("num_samples", num_samples, 10, MAX_SAMPLES)
    generation_seed = check_int("generation_seed", generation_seed, 0, 2 ** 32 - 1)
    _split(split)
    b = _backend(backend)
    seed = check_int("seed", seed, 0)
    standardize, verbose = check_bool("standardize", standardize), check_bool("verbose", verbose)
    folder = Path(check_path("cache_dir", cache_dir)) if cache_dir is not None else CACHE_DIR
    path = folder / f"mnist1d_n{num_samples}_s{generation_seed}.npz"
    data, source, seconds = None, "cache", 0.0
    if path.exists():
        try:
            data = B.load_npz(path)
            if set(data) != {"x", "y", "t"}:
                data = None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            data = None
    if data is None:
        start = time.perf_counter()
        data = _generate_mnist1d(num_samples, generation_seed)
        seconds, source = time.perf_counter() - start, "generated"
        _atomic_write(path, lambda f: B.save_npz(f, data))
    if verbose:
        print(f"MNIST-1D: {source} {path}" + (f" in {seconds:.1f} s" if seconds else ""))
    parts = stratified_split(data["y"], split, seed)
    return _build("mnist1d", data["x"], data["y"], parts, backend=b, standardize=standardize,
                  as_images=False, image_shape=(1, data["x"].shape[1]),
                  class_names=tuple(str(c) for c in range(10)),
                  info={"source": source, "cache": str(path), "generation_seconds": seconds,
                        "t": data["t"], "split": tuple(split), "seed": seed})


# ----------------------------------------------------------------------------- 2-D toy sets
def _toy_output(x: Any, y: Any, seed_gen, backend) -> tuple:
    xp = B.namespace(x)
    order = seed_gen.permutation(x.shape[0])
    b = _backend(backend)
    return B.to_backend(x[order], b), B.to_backend(xp.astype(y[order], xp.int64), b, dtype="int64")


def make_moons(n: int = 200, noise: float = 0.1, seed: int = 0, backend=None) -> tuple:
    r"""Two interleaving half circles (the construction of ``sklearn.datasets.make_moons``).

    With :math:`n_0 = \lfloor n/2 \rfloor` outer and :math:`n_1 = n - n_0` inner points,
    :math:`\theta_0 \in \text{linspace}(0, \pi, n_0)`, :math:`\theta_1 \in \text{linspace}(0, \pi, n_1)`:

    .. math::
        \text{class 0: } (\cos\theta_0, \sin\theta_0), \qquad
        \text{class 1: } (1 - \cos\theta_1, \tfrac12 - \sin\theta_1),

    plus :math:`\mathcal N(0, \text{noise}^2)` on each coordinate, then shuffled.

    Returns
    -------
    X : (n, 2) float on ``backend``; y : (n,) int64 with labels 0/1.
    """
    n = check_int("n", n, 2, MAX_SAMPLES)
    noise = check_number("noise", noise, 0.0)
    seed = check_int("seed", seed, 0)
    _backend(backend)
    gen = B.generator(seed)
    xp = B.get_backend("numpy").xp
    n_out, n_in = n // 2, n - n // 2
    t0 = xp.linspace(0.0, math.pi, n_out, dtype=xp.float64)
    t1 = xp.linspace(0.0, math.pi, n_in, dtype=xp.float64)
    outer = xp.stack([xp.cos(t0), xp.sin(t0)], axis=1)
    inner = xp.stack([1.0 - xp.cos(t1), 0.5 - xp.sin(t1)], axis=1)
    x = xp.concat([outer, inner]) + noise * gen.standard_normal((n, 2))
    y = xp.concat([xp.zeros(n_out, dtype=xp.int64), xp.ones(n_in, dtype=xp.int64)])
    return _toy_output(x, y, gen, backend)


def make_spirals(n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0, backend=None) -> tuple:
    r"""``classes`` interleaved spiral arms (the CS231n toy set).

    Arm :math:`k` has :math:`m_k` points (n split as evenly as possible), radius
    :math:`r \in \text{linspace}(0, 1, m_k)` and angle
    :math:`\theta \in \text{linspace}(4k, 4(k+1), m_k) + \mathcal N(0, \text{noise}^2)`:

    .. math:: x = (r \sin\theta,\; r \cos\theta).

    Returns
    -------
    X : (n, 2) float on ``backend``; y : (n,) int64 with labels 0..classes-1.
    """
    classes = check_int("classes", classes, 2, 1000)
    n = check_int("n", n, classes, MAX_SAMPLES)
    noise = check_number("noise", noise, 0.0)
    seed = check_int("seed", seed, 0)
    _backend(backend)
    gen = B.generator(seed)
    xp = B.get_backend("numpy").xp
    xs, ys = [], []
    for k in range(classes):
        m = n // classes + (1 if k < n % classes else 0)
        r = xp.linspace(0.0, 1.0, m, dtype=xp.float64)
        theta = xp.linspace(4.0 * k, 4.0 * (k + 1), m, dtype=xp.float64) + noise * gen.standard_normal(m)
        xs.append(xp.stack([r * xp.sin(theta), r * xp.cos(theta)], axis=1))
        ys.append(xp.full(m, k, dtype=xp.int64))
    return _toy_output(xp.concat(xs), xp.concat(ys), gen, backend)


# ----------------------------------------------------------------------------- IDX files
IDX_TYPES = {0x08: ("uint8", 1), 0x09: ("int8", 1), 0x0B: ("int16", 2), 0x0C: ("int32", 4),
             0x0D: ("float32", 4), 0x0E: ("float64", 8)}
_IDX_CODES = {name: code for code, (name, _) in IDX_TYPES.items()}


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _file_path(path: Any) -> Path:
    """``path`` (checked) as a Path that is not a directory."""
    path = Path(check_path("path", path))
    if path.is_dir():
        raise ValueError(f"path must name a file, got the directory {str(path)!r}")
    return path


def load_idx(path: str | os.PathLike, expected_sha256: str | None = None) -> Any:
    """Read an IDX file (the MNIST format), raw or gzip-compressed.

    Layout (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions d, then d uint32 sizes,
    then the values in C order. A gzip file is recognised by its magic bytes 1f 8b.

    Parameters
    ----------
    path : path
    expected_sha256 : str or None
        Hex SHA-256 of the file *as stored* (the ``.gz`` when compressed).

    Returns
    -------
    numpy array of the header's dtype and shape (move it with ``B.to_backend``).

    Raises
    ------
    FileNotFoundError
    ValueError
        On a checksum mismatch (names the file, expected and actual digest), a bad magic
        number, an unknown type code, a broken gzip stream, or a wrong byte count
        (says the expected and actual number of bytes).
    """
    path = _file_path(path)
    if expected_sha256 is not None and not isinstance(expected_sha256, str):
        raise TypeError(f"expected_sha256 must be a hex str or None, got {type(expected_sha256).__name__}")
    raw = path.read_bytes()
    if expected_sha256 is not None:
        actual = _sha256(raw)
        if actual.lower() != str(expected_sha256).lower():
            raise ValueError(f"{path}: SHA-256 mismatch, expected_sha256 is {expected_sha256}, the file's is {actual}")
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({err})") from err
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file: magic bytes {raw[:4].hex()!r}, expected 0000 followed by "
                         f"a type code in {[hex(c) for c in IDX_TYPES]} and the number of dimensions")
    dtype, itemsize = IDX_TYPES[raw[2]]
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header: expected {header} bytes, got {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape) * itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: wrong length for shape {shape} of {dtype}: expected {expected} bytes, "
                         f"got {len(raw)} (truncated or corrupt file)")
    return B.from_bytes(raw[header:], dtype, shape, big_endian=True)


def write_idx(path: str | os.PathLike, array: Any, compress: bool | None = None) -> str:
    """Write an array as an IDX file (gzip when ``compress`` or the name ends in ``.gz``), atomically.

    Returns the file's SHA-256 (as stored), for :func:`load_idx`'s ``expected_sha256``.
    """
    path = _file_path(path)
    check_array("array", array)
    if compress is not None:
        check_bool("compress", compress)
    dtype = B.dtype_name(array)
    if dtype not in _IDX_CODES:
        raise TypeError(f"array dtype must be one of {sorted(_IDX_CODES)}, got {dtype}")
    shape = tuple(array.shape)
    if len(shape) > 255:
        raise ValueError(f"IDX files hold at most 255 dimensions, got {len(shape)}")
    raw = (bytes([0, 0, _IDX_CODES[dtype], len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
           + B.to_bytes(array, dtype, big_endian=True))
    if compress or (compress is None and path.suffix == ".gz"):
        raw = gzip.compress(raw, mtime=0)
    _atomic_write(path, lambda f: f.write(raw))
    return _sha256(raw)


MNIST_FAMILY = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (mirrors: https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/)",
    "kmnist": "https://github.com/rois-codh/kmnist (MNIST-format .gz files)",
}
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).exists():
            return directory / name
    return None


def load_mnist_family(directory: str | os.PathLike | None = None, kind: str = "mnist", backend=None,
                      val_fraction: float = 1 / 6, seed: int = 0, standardize: bool = True,
                      as_images: bool = False, sha256: dict | None = None) -> Dataset:
    """MNIST, Fashion-MNIST or KMNIST from the four IDX files a user has put on disk.

    Looks in ``directory`` (default ``data/<kind>/``) for ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
    optionally ``.gz``. Pixels are scaled by 1/255; the official 60 000 training images are
    split (stratified, seeded) into train and val by ``val_fraction`` (1/6 = 10 000), the official
    10 000 test images are the test split; ``standardize`` z-scores with training statistics.

    Parameters
    ----------
    sha256 : dict or None
        ``{file name: expected hex digest}`` checked by :func:`load_idx`.

    Raises
    ------
    FileNotFoundError
        Listing the files looked for, where, and where to get them.
    ValueError
        For an unknown ``kind`` or a corrupt file.
    """
    check_choice("kind", kind, tuple(MNIST_FAMILY))
    val_fraction = check_number("val_fraction", val_fraction, 0.0, 1.0, high_open=True)
    seed = check_int("seed", seed, 0)
    b = _backend(backend)
    standardize, as_images = check_bool("standardize", standardize), check_bool("as_images", as_images)
    if sha256 is not None and not isinstance(sha256, dict):
        raise TypeError(f"sha256 must be a dict {{file name: hex digest}} or None, got {type(sha256).__name__}")
    directory = Path(check_path("directory", directory)) if directory is not None else DATA_DIR / kind
    found = {stem: _find_idx(directory, stem) for stem in MNIST_FILES}
    missing = [stem for stem, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"{kind}: missing {', '.join(s + '[.gz]' for s in missing)} in {directory}. "
            f"Download the four IDX files from {MNIST_FAMILY[kind]} and put them there (see data/README.md).")
    sha256 = sha256 or {}
    arrays = {stem: load_idx(p, sha256.get(p.name)) for stem, p in found.items()}
    x_tr, y_tr, x_te, y_te = (arrays[s] for s in MNIST_FILES)
    xp = B.namespace(x_tr)
    x = xp.concat([xp.reshape(x_tr, (x_tr.shape[0], -1)), xp.reshape(x_te, (x_te.shape[0], -1))])
    y = xp.concat([xp.astype(y_tr, xp.int64), xp.astype(y_te, xp.int64)])
    train_idx, val_idx, _ = stratified_split(y_tr, (1.0 - val_fraction, val_fraction, 0.0), seed)
    test_idx = xp.arange(y_tr.shape[0], y.shape[0], dtype=xp.int64)
    names = {"mnist": tuple(str(c) for c in range(10)), "fashion": FASHION_CLASSES, "kmnist": KMNIST_CLASSES}
    return _build(kind, xp.astype(x, xp.float64) / 255.0, y, (train_idx, val_idx, test_idx), backend=b,
                  standardize=standardize, as_images=as_images, image_shape=(1,) + tuple(x_tr.shape[1:]),
                  class_names=names[kind], info={"directory": str(directory), "seed": seed})
