r"""Data cleaning (数据清洗): denoise, fill missing values, standardize -- from scratch.

Seed §2.1.1 (concept), §3.1.1 (principles: mean / median / Gaussian filtering 均值/中值/高斯滤波;
mean / median / nearest-neighbour filling 均值/中值/最近邻填充; mean and variance scaling 标准化)
and §4.1.1 (the example that fills a missing value with 0).

* **Filters** for 1-D signals, 2-D images and batches of them (the trailing 1 or 2 axes are
  filtered): :func:`mean_filter`, :func:`median_filter`, :func:`gaussian_filter`, with
  ``scipy.ndimage``'s border modes and its conventions (window placement for even sizes,
  Gaussian radius ``int(truncate * sigma + 0.5)``), so the results equal scipy's.
* **Imputers** (fit on the training split, transform any split): :class:`SimpleImputer`
  (mean, median, constant) and :class:`KNNImputer` (nan-Euclidean distance, uniform weights),
  with scikit-learn's semantics.
* **Scalers**: :class:`StandardScaler` (z-score, population std) and :class:`MinMaxScaler`.
* **Corruptions** for experiments, drawn from the project's seeded generator:
  :func:`add_gaussian_noise`, :func:`add_salt_and_pepper`, :func:`drop_at_random`.

Border modes (for a row ``a b c d``; same names as ``scipy.ndimage``)::

    reflect   d c b a | a b c d | d c b a     (half-sample symmetric: the edge is repeated)
    mirror      d c b | a b c d | c b a       (whole-sample symmetric: the edge is not repeated)
    nearest   a a a a | a b c d | d d d d
    constant  k k k k | a b c d | k k k k     (k = cval)
    wrap      a b c d | a b c d | a b c d

See: chapters/02_1_data_cleaning.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from .. import backend as B
from ..validation import (check_array, check_bool, check_choice, check_generator, check_int, check_number,
                          check_probability)

__all__ = ["MODES", "pad_axis", "mean_filter", "median_filter", "gaussian_kernel1d", "gaussian_filter",
           "SimpleImputer", "KNNImputer", "nan_euclidean_distances", "StandardScaler", "MinMaxScaler",
           "add_gaussian_noise", "add_salt_and_pepper", "drop_at_random"]

MODES = ("reflect", "mirror", "nearest", "constant", "wrap")
_EPS64 = 2.220446049250313e-16      # float64 machine epsilon, as scikit-learn uses it
MAX_WINDOW = 1025                   # longest filter window / Gaussian kernel (taps per axis)
MAX_MEDIAN_WINDOW = 1024            # most samples in one median window (it is sorted at every output)
MAX_PAD = 65536                     # most samples pad_axis adds on one side


# ----------------------------------------------------------------------------- argument checks
def _floating(name: str, x: Any) -> Any:
    """``x`` (checked to be an array) as a floating array: integers and bools become float64."""
    check_array(name, x)
    xp = B.namespace(x)
    if not B.dtype_name(x).startswith(("float", "bfloat")):
        x = xp.astype(x, xp.float64)
    return x


_check_array = _floating   # old name, still imported by widgets/cleaning.py (not this module's owner)


def _filtered_axes(x: Any, ndim: int | None) -> tuple[int, ...]:
    """The trailing axes a filter works on: the last ``ndim`` (default ``min(x.ndim, 2)``)."""
    ndim = min(x.ndim, 2) if ndim is None else check_int("ndim", ndim, 1, 2)
    if x.ndim < max(ndim, 1):
        raise ValueError(f"x must have at least ndim={ndim} axes to filter, got shape {tuple(x.shape)}")
    return tuple(range(x.ndim - ndim, x.ndim))


def _per_axis(name: str, value: Any, n: int, check) -> tuple:
    """A scalar or a length-``n`` sequence, checked entry by entry, as an n-tuple."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{name} must be a number or a sequence of {n} numbers (one per filtered axis), "
                         f"got {value!r}")
    return tuple(check(name, v) for v in values)


def _window_size(name: str, value: Any) -> int:
    return check_int(name, value, 1, MAX_WINDOW)


# ----------------------------------------------------------------------------- borders
def _source_index(i: int, n: int, mode: str) -> int:
    """Index of the input sample that border ``mode`` puts at position ``i`` (may be outside [0, n))."""
    if 0 <= i < n:
        return i
    if mode == "nearest":
        return min(max(i, 0), n - 1)
    if mode == "wrap":
        return i % n
    if mode == "reflect":                                # period 2n: a b c d d c b a
        m = i % (2 * n)
        return m if m < n else 2 * n - 1 - m
    if n == 1:                                           # mirror of a single sample
        return 0
    m = i % (2 * n - 2)                                  # mirror, period 2n-2: a b c d c b
    return m if m < n else 2 * n - 2 - m


def pad_axis(x: Any, before: int, after: int, axis: int, mode: str = "reflect", cval: float = 0.0) -> Any:
    """Extend ``x`` along one axis by ``before`` and ``after`` samples with a border mode.

    Parameters
    ----------
    x : array, any shape
    before, after : int in [0, 65536]
        Samples added in front of and behind the axis (may exceed its length: the rule repeats).
    axis : int
    mode : {"reflect", "mirror", "nearest", "constant", "wrap"}
        ``scipy.ndimage`` names (see the module docstring).
    cval : float
        The value of ``"constant"`` borders.

    Returns
    -------
    array, ``x.shape`` with ``before + after`` more entries along ``axis``.

    Seed §3.1.1.1 (the borders of every filter). See: chapters/02_1_data_cleaning.ipynb
    """
    check_array("x", x)
    check_choice("mode", mode, MODES)
    before, after = check_int("before", before, 0, MAX_PAD), check_int("after", after, 0, MAX_PAD)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis to pad, got a 0-d array")
    if check_int("axis", axis, None) not in range(-x.ndim, x.ndim):
        raise ValueError(f"axis must be an int in [{-x.ndim}, {x.ndim - 1}] for x of shape {tuple(x.shape)}, "
                         f"got {axis!r}")
    axis = int(axis) % x.ndim
    cval = check_number("cval", cval)
    xp = B.namespace(x)
    n = x.shape[axis]
    if n == 0:
        raise ValueError(f"x must not be empty along axis {axis} to pad it, got shape {tuple(x.shape)}")
    if mode == "constant":
        def block(k):
            shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
            return xp.full(shape, cval, dtype=x.dtype, device=B.device(x))
        return xp.concat([block(before), x, block(after)], axis=axis)
    idx = [_source_index(i, n, mode) for i in range(-before, n + after)]
    return xp.take(x, B.to_backend(idx, B.backend_of(x), dtype="int64"), axis=axis)


def _shifted(xpad: Any, axis: int, shift: int, length: int) -> Any:
    """``xpad[..., shift : shift + length, ...]`` along ``axis``."""
    index = [slice(None)] * xpad.ndim
    index[axis] = slice(shift, shift + length)
    return xpad[tuple(index)]


def _window_extent(size: int) -> tuple[int, int]:
    """Samples before and after the centre in scipy's window of ``size`` (origin 0).

    Output ``i`` sees inputs ``i - size//2, ..., i + size - 1 - size//2``: centred for odd sizes,
    one more sample in front for even sizes.
    """
    return size // 2, size - 1 - size // 2


def _correlate1d(x: Any, weights: Sequence[float], axis: int, mode: str, cval: float) -> Any:
    r""":math:`y_i = \sum_j w_j\,x_{i - r + j}` along ``axis`` (weights as Python floats)."""
    before, after = _window_extent(len(weights))
    xpad = pad_axis(x, before, after, axis, mode, cval)
    n = x.shape[axis]
    out = _shifted(xpad, axis, 0, n) * weights[0]
    for j in range(1, len(weights)):
        out = out + _shifted(xpad, axis, j, n) * weights[j]
    return out


# ----------------------------------------------------------------------------- filters
def _window_filter_args(x: Any, size, mode: str, cval: float, ndim: int | None) -> tuple:
    """Check the arguments shared by the mean and median filters; return (x, axes, sizes, cval)."""
    x = _floating("x", x)
    axes = _filtered_axes(x, ndim)
    sizes = _per_axis("size", size, len(axes), _window_size)
    check_choice("mode", mode, MODES)
    return x, axes, sizes, check_number("cval", cval)


def mean_filter(x: Any, size: int | Sequence[int] = 3, mode: str = "reflect", cval: float = 0.0,
                ndim: int | None = None) -> Any:
    r"""Mean (box, uniform) filter (均值滤波): each sample becomes the average of its window.

    .. math:: y_i = \frac{1}{k}\sum_{j=-\lfloor k/2\rfloor}^{k-1-\lfloor k/2\rfloor} x_{i+j}

    applied along each filtered axis in turn (the 2-D box is separable), as
    ``scipy.ndimage.uniform_filter``.

    Parameters
    ----------
    x : array, shape (..., L) or (..., H, W)
    size : int or sequence of ints in [1, 1025]
        Window length per filtered axis.
    mode : {"reflect", "mirror", "nearest", "constant", "wrap"}
    cval : float
        Border value for ``mode="constant"``.
    ndim : {1, 2}, optional
        Number of trailing axes to filter; default ``min(x.ndim, 2)``. Use ``ndim=1`` for a
        batch of signals (N, L).

    Returns
    -------
    array, same shape as ``x``.

    Seed §3.1.1.1. See: chapters/02_1_data_cleaning.ipynb
    """
    x, axes, sizes, cval = _window_filter_args(x, size, mode, cval, ndim)
    for axis, k in zip(axes, sizes):
        before, after = _window_extent(k)
        xpad = pad_axis(x, before, after, axis, mode, cval)
        total = _shifted(xpad, axis, 0, x.shape[axis])
        for j in range(1, k):
            total = total + _shifted(xpad, axis, j, x.shape[axis])
        x = total / k
    return x


def median_filter(x: Any, size: int | Sequence[int] = 3, mode: str = "reflect", cval: float = 0.0,
                  ndim: int | None = None) -> Any:
    r"""Median filter (中值滤波): each sample becomes the median of its (k × k) window.

    .. math:: y_{i} = \operatorname{sort}\big(\{x_{i+j} : j \in \text{window}\}\big)_{\lfloor m/2 \rfloor}

    with m the number of samples in the window. For an odd m this is the median; for an even
    window it is the *upper* of the two middle values, as ``scipy.ndimage.median_filter`` does
    (not their mean). Not separable: the whole window is sorted. Robust to outliers, so it
    removes salt-and-pepper noise that a mean filter only smears.

    Parameters
    ----------
    x : array, shape (..., L) or (..., H, W)
    size : int or sequence of ints in [1, 1025]
        At most 1024 samples in the whole window (it is sorted for every output).
    mode, cval, ndim :
        As in :func:`mean_filter`.

    Returns
    -------
    array, same shape as ``x``.

    Seed §3.1.1.1. See: chapters/02_1_data_cleaning.ipynb
    """
    x, axes, sizes, cval = _window_filter_args(x, size, mode, cval, ndim)
    if math.prod(sizes) > MAX_MEDIAN_WINDOW:
        raise ValueError(f"size must give a median window of at most {MAX_MEDIAN_WINDOW} samples, got {size!r}")
    xp = B.namespace(x)
    xpad = x
    for axis, k in zip(axes, sizes):
        xpad = pad_axis(xpad, *_window_extent(k), axis, mode, cval)
    kh, kw = (1,) + sizes if len(sizes) == 1 else sizes
    lead = x.shape[:x.ndim - len(axes)]
    as_images = xp.reshape(xpad, (-1, 1) + ((1,) if len(axes) == 1 else ()) + tuple(xpad.shape[-len(axes):]))
    windows = B.sliding_windows(as_images, kh, kw)                  # (M, 1, H, W, kh, kw)
    flat = xp.reshape(windows, tuple(windows.shape[:4]) + (kh * kw,))
    ranked = xp.sort(flat, axis=-1)[..., (kh * kw) // 2]
    return xp.reshape(ranked, lead + tuple(x.shape[x.ndim - len(axes):]))


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> list[float]:
    r"""The normalized 1-D Gaussian kernel scipy uses, as a list of Python floats.

    .. math:: w_j = \frac{e^{-j^2 / 2\sigma^2}}{\sum_{l=-r}^{r} e^{-l^2/2\sigma^2}}, \quad
              j = -r, \dots, r, \quad r = \lfloor \text{truncate}\cdot\sigma + 0.5 \rfloor

    Parameters
    ----------
    sigma : float > 0
        With ``truncate``, at most a 1025-tap kernel (``truncate * sigma <= 512``).
    truncate : float >= 0
        Radius in standard deviations.
    """
    sigma = check_number("sigma", sigma, 0.0, low_open=True)
    truncate = check_number("truncate", truncate, 0.0)
    radius = _radius(sigma, truncate)
    phi = [math.exp(-0.5 / (sigma * sigma) * j * j) for j in range(-radius, radius + 1)]
    total = math.fsum(phi)
    return [p / total for p in phi]


def _radius(sigma: float, truncate: float) -> int:
    """scipy's kernel radius ``int(truncate * sigma + 0.5)``, refused beyond :data:`MAX_WINDOW` taps."""
    radius = truncate * sigma + 0.5
    if 2 * radius + 1 > MAX_WINDOW + 1:
        raise ValueError(f"sigma * truncate must give a kernel of at most {MAX_WINDOW} taps, got sigma={sigma!r}, "
                         f"truncate={truncate!r} (radius {radius:.3g})")
    return int(radius)


def gaussian_filter(x: Any, sigma: float | Sequence[float] = 1.0, mode: str = "reflect", cval: float = 0.0,
                    truncate: float = 4.0, ndim: int | None = None) -> Any:
    r"""Gaussian filter (高斯滤波): a weighted average whose weights fall off as a Gaussian.

    .. math:: y_i = \sum_{j=-r}^{r} w_j\, x_{i+j}, \qquad
              w_j \propto e^{-j^2/2\sigma^2}, \quad r = \lfloor \text{truncate}\cdot\sigma + 0.5\rfloor

    applied along each filtered axis in turn (the 2-D Gaussian is separable), as
    ``scipy.ndimage.gaussian_filter``. An axis with ``sigma = 0`` is left unchanged.

    Parameters
    ----------
    x : array, shape (..., L) or (..., H, W)
    sigma : float or sequence of floats, >= 0
        Standard deviation in samples (pixels), per filtered axis.
    mode, cval, ndim :
        As in :func:`mean_filter`.
    truncate : float >= 0
        Kernel radius in standard deviations.

    Returns
    -------
    array, same shape as ``x``.

    Seed §3.1.1.1. See: chapters/02_1_data_cleaning.ipynb
    """
    x = _floating("x", x)
    axes = _filtered_axes(x, ndim)
    sigmas = _per_axis("sigma", sigma, len(axes), lambda n, v: check_number(n, v, 0.0))
    truncate = check_number("truncate", truncate, 0.0)
    check_choice("mode", mode, MODES)
    cval = check_number("cval", cval)
    for s in sigmas:
        _radius(s, truncate)
    for axis, s in zip(axes, sigmas):
        if s > 1e-15:                                      # scipy skips (near-)zero sigmas
            x = _correlate1d(x, gaussian_kernel1d(s, truncate), axis, mode, cval)
    return x


# ----------------------------------------------------------------------------- tables: shared checks
def _table(name: str, X: Any, allow_nan: bool = True, allow_inf: bool | None = None) -> Any:
    """``X`` as a floating 2-D table with at least one row and one column.

    NaN (a missing value) is refused unless ``allow_nan``; inf unless ``allow_inf`` (default:
    as ``allow_nan``; a scaler cannot standardize an infinite column).
    """
    allow_inf = allow_nan if allow_inf is None else allow_inf
    X = _floating(name, X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D table (n_samples, n_features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(X.shape)}")
    xp = B.namespace(X)
    if not allow_nan and B.float_of(xp.sum(xp.astype(xp.isnan(X), X.dtype))) > 0:
        raise ValueError(f"{name} contains NaN; fill the missing values first (SimpleImputer, KNNImputer)")
    if not allow_inf and B.float_of(xp.sum(xp.astype(xp.isinf(X), X.dtype))) > 0:
        raise ValueError(f"{name} contains inf: a distance to it is not a number (NaN marks a missing value)")
    return X


class _Fitted:
    """fit / transform / fit_transform bookkeeping shared by the imputers and scalers."""

    n_features_in_: int | None = None

    def fit(self, X: Any) -> "_Fitted":
        raise NotImplementedError

    def transform(self, X: Any) -> Any:
        raise NotImplementedError

    def fit_transform(self, X: Any) -> Any:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def _remember(self, X: Any) -> None:
        """Note the number of features and the backend/device of the training table."""
        self.n_features_in_, self._fitted_like = X.shape[1], X[:0]

    def _check_fitted(self, X: Any, allow_nan: bool = True, name: str = "X") -> Any:
        if self.n_features_in_ is None:
            raise ValueError(f"{type(self).__name__} is not fitted yet: call fit(X_train) first")
        X = _table(name, X, allow_nan)
        if not B.same_kind(X, self._fitted_like):
            raise TypeError(f"{name} must be on the backend and device {type(self).__name__} was fitted on "
                            f"({B.backend_of(self._fitted_like).name}), got {B.backend_of(X).name}")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"{name} has {X.shape[1]} features but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_}")
        return X


def _empty_columns(X: Any) -> list[int]:
    xp = B.namespace(X)
    observed = xp.sum(xp.astype(~xp.isnan(X), X.dtype), axis=0)
    return [j for j, c in enumerate(B.to_numpy(observed).tolist()) if c == 0]


def _refuse_empty_columns(X: Any, who: str) -> None:
    empty = _empty_columns(X)
    if empty:
        raise ValueError(f"X has no observed value in column(s) {empty}; {who} cannot learn a fill for them "
                         f"(drop those columns, or use SimpleImputer(strategy='constant'))")


def _nan_mean(X: Any) -> Any:
    """Column means over the observed (non-NaN) entries."""
    xp = B.namespace(X)
    observed = ~xp.isnan(X)
    total = xp.sum(xp.where(observed, X, xp.zeros_like(X)), axis=0)
    return total / xp.sum(xp.astype(observed, X.dtype), axis=0)


def _nan_median(X: Any) -> Any:
    """Column medians over the observed entries (mean of the two middle values for an even count)."""
    xp = B.namespace(X)
    ordered = xp.sort(X, axis=0)                     # NaN sorts last on numpy and torch
    count = xp.astype(xp.sum(xp.astype(~xp.isnan(X), X.dtype), axis=0), xp.int64)
    lo = xp.take_along_axis(ordered, ((count - 1) // 2)[None, :], axis=0)[0]
    hi = xp.take_along_axis(ordered, (count // 2)[None, :], axis=0)[0]
    return (lo + hi) / 2


# ----------------------------------------------------------------------------- imputers
class SimpleImputer(_Fitted):
    r"""Fill missing values (NaN) column by column (填充缺失值: 均值/中值填充).

    ``strategy="mean"``: :math:`\hat x_{ij} = \frac{1}{|O_j|}\sum_{i' \in O_j} x_{i'j}` over the
    observed rows :math:`O_j` of the *training* table; ``"median"``: their median;
    ``"constant"``: ``fill_value`` (0 reproduces ``np.nan_to_num``, seed §4.1.1).

    Parameters
    ----------
    strategy : {"mean", "median", "constant"}
    fill_value : float
        Used by ``"constant"``.

    Attributes
    ----------
    statistics_ : array, shape (n_features,)
        The fill of each column, learned by :meth:`fit`.

    Same results as ``sklearn.impute.SimpleImputer``. Seed §3.1.1.2.
    See: chapters/02_1_data_cleaning.ipynb
    """

    STRATEGIES = ("mean", "median", "constant")

    def __init__(self, strategy: str = "mean", fill_value: float = 0.0):
        self.strategy = check_choice("strategy", strategy, self.STRATEGIES)
        self.fill_value = check_number("fill_value", fill_value)
        self.statistics_ = None

    def fit(self, X: Any) -> "SimpleImputer":
        """Learn one fill value per column from the training table X (n_samples, n_features)."""
        X = _table("X", X)
        xp = B.namespace(X)
        if self.strategy == "constant":
            self.statistics_ = xp.full((X.shape[1],), self.fill_value, dtype=X.dtype, device=B.device(X))
        else:
            _refuse_empty_columns(X, f"SimpleImputer(strategy={self.strategy!r})")
            self.statistics_ = _nan_mean(X) if self.strategy == "mean" else _nan_median(X)
        self._remember(X)
        return self

    def transform(self, X: Any) -> Any:
        """X with every NaN replaced by its column's fill; a new array."""
        X = self._check_fitted(X)
        xp = B.namespace(X)
        return xp.where(xp.isnan(X), xp.astype(self.statistics_, X.dtype)[None, :], X)


def nan_euclidean_distances(X: Any, Y: Any) -> Any:
    r"""Euclidean distances that skip missing coordinates, rescaled to all coordinates.

    .. math:: d(x, y) = \sqrt{\frac{D}{|P|}\sum_{k \in P} (x_k - y_k)^2}, \qquad
              P = \{k : x_k, y_k \text{ both observed}\}

    NaN where :math:`P` is empty. Same as ``sklearn.metrics.pairwise.nan_euclidean_distances``.

    Parameters
    ----------
    X : array, shape (n, D) ; Y : array, shape (m, D)

    Returns
    -------
    array, shape (n, m)

    Seed §3.1.1.2 (the distance of nearest-neighbour filling). See: chapters/02_1_data_cleaning.ipynb
    """
    X, Y = _table("X", X, allow_inf=False), _table("Y", Y, allow_inf=False)
    if B.is_torch(X) != B.is_torch(Y) or B.device_of(X) != B.device_of(Y):
        raise TypeError(f"X and Y must be on one backend and device, got {B.backend_of(X).name} and "
                        f"{B.backend_of(Y).name}")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same number of columns, got {X.shape[1]} and {Y.shape[1]}")
    xp = B.namespace(X, Y)
    dtype = xp.result_type(X.dtype, Y.dtype)                  # float32 with float64: both in float64
    X, Y = xp.astype(X, dtype), xp.astype(Y, dtype)
    mx, my = xp.astype(~xp.isnan(X), X.dtype), xp.astype(~xp.isnan(Y), X.dtype)
    x0, y0 = xp.where(mx > 0, X, xp.zeros_like(X)), xp.where(my > 0, Y, xp.zeros_like(Y))
    # sum over shared coordinates of x^2 - 2xy + y^2, as three matrix products
    sq = (x0 * x0) @ my.T - 2.0 * (x0 @ y0.T) + mx @ (y0 * y0).T
    shared = mx @ my.T
    sq = xp.clip(sq, 0.0, None) * X.shape[1] / xp.where(shared > 0, shared, xp.ones_like(shared))
    return xp.where(shared > 0, xp.sqrt(sq), xp.full(sq.shape, math.nan, dtype=X.dtype, device=B.device(X)))


class KNNImputer(_Fitted):
    r"""Fill each missing entry with the mean of that feature over the k nearest training rows
    that have it (最近邻填充).

    Distances are :func:`nan_euclidean_distances` to the training rows; for feature j the
    candidate donors are the training rows where j is observed; the k nearest with a defined
    distance are averaged (uniform weights). A row that shares no observed coordinate with any
    donor gets the training mean of j.

    Parameters
    ----------
    n_neighbors : int >= 1

    Same results as ``sklearn.impute.KNNImputer(weights="uniform")``. Seed §3.1.1.2.
    See: chapters/02_1_data_cleaning.ipynb
    """

    def __init__(self, n_neighbors: int = 5):
        self.n_neighbors = check_int("n_neighbors", n_neighbors, 1)

    def fit(self, X: Any) -> "KNNImputer":
        """Remember the training table (the donors) and its column means."""
        X = _table("X", X, allow_inf=False)
        _refuse_empty_columns(X, "KNNImputer")
        xp = B.namespace(X)
        self._fit_X = X
        self._observed = ~xp.isnan(X)
        self._fit_X0 = xp.where(self._observed, X, xp.zeros_like(X))
        self._col_mean = _nan_mean(X)
        self._remember(X)
        return self

    def transform(self, X: Any) -> Any:
        """X with every NaN replaced by its k-nearest-neighbour mean; a new array."""
        X = self._check_fitted(X)
        xp = B.namespace(X)
        missing = xp.isnan(X)
        missing_per_column = B.to_numpy(xp.sum(xp.astype(missing, X.dtype), axis=0)).tolist()
        if not any(missing_per_column):
            return xp.asarray(X, copy=True)
        dist = nan_euclidean_distances(X, xp.astype(self._fit_X, X.dtype))
        inf = xp.full(dist.shape, math.inf, dtype=X.dtype, device=B.device(X))
        dist = xp.where(xp.isnan(dist), inf, dist)
        columns = [X[:, j] if not missing_per_column[j] else
                   xp.where(missing[:, j], self._impute_column(dist, inf, j), X[:, j])
                   for j in range(X.shape[1])]
        return xp.stack(columns, axis=1)

    def _impute_column(self, dist: Any, inf: Any, j: int) -> Any:
        """The k-NN estimate of column j for every row of ``dist`` (n, n_train)."""
        xp = B.namespace(dist)
        donors = self._observed[:, j]
        k = min(self.n_neighbors, int(B.float_of(xp.sum(xp.astype(donors, dist.dtype)))))
        dist_j = xp.where(donors[None, :], dist, inf)
        nearest = xp.argsort(dist_j, axis=1, stable=True)[:, :k]               # (n, k)
        weight = xp.astype(xp.isfinite(xp.take_along_axis(dist_j, nearest, axis=1)), dist.dtype)
        values = xp.reshape(xp.take(xp.astype(self._fit_X0[:, j], dist.dtype), xp.reshape(nearest, (-1,))),
                            nearest.shape)
        total = xp.sum(weight, axis=1)
        mean = xp.sum(weight * values, axis=1) / xp.where(total > 0, total, xp.ones_like(total))
        return xp.where(total > 0, mean, xp.astype(self._col_mean[j], dist.dtype))


# ----------------------------------------------------------------------------- scalers
def _scale_or_one(scale: Any, constant: Any) -> Any:
    """``scale`` with 1 where a column is constant (so constant columns pass through)."""
    xp = B.namespace(scale)
    return xp.where(constant, xp.ones_like(scale), scale)


def _corrected_two_pass_variance(X: Any, mean: Any) -> Any:
    r"""Population variance of each column by the corrected two-pass algorithm.

    .. math:: \sigma^2 = \frac1n\Big(\sum_i d_i^2 - \frac1n\big(\sum_i d_i\big)^2\Big), \qquad d_i = x_i - \mu

    The second term would be 0 in exact arithmetic; in floating point it removes the error
    of the rounded mean :math:`\mu` (Chan, Golub & LeVeque 1983), which matters when a column
    has a large offset (1e9 + small noise: 1e-8 relative error without it, 1e-16 with it).
    scikit-learn's ``StandardScaler`` computes it the same way.
    """
    n = X.shape[0]
    xp = B.namespace(X)
    d = X - mean
    correction = xp.sum(d, axis=0)
    return (xp.sum(d * d, axis=0) - correction * correction / n) / n


class StandardScaler(_Fitted):
    r"""Z-score standardization (标准化: 均值与方差标准化), statistics from the training split.

    .. math:: z = \frac{x - \mu}{\sigma}, \qquad \mu = \frac1n\sum_i x_i, \quad
              \sigma^2 = \frac1n\sum_i (x_i - \mu)^2

    (population variance, by the corrected two-pass algorithm, exact to ~1e-16 relative even
    for columns with a large offset). A column whose variance is zero up to rounding keeps
    :math:`\sigma = 1`, as scikit-learn does.

    Attributes
    ----------
    mean_, var_, scale_ : arrays, shape (n_features,)

    Same results as ``sklearn.preprocessing.StandardScaler``. Seed §3.1.1.3.
    See: chapters/02_1_data_cleaning.ipynb
    """

    def __init__(self, with_mean: bool = True, with_std: bool = True):
        self.with_mean, self.with_std = check_bool("with_mean", with_mean), check_bool("with_std", with_std)

    def fit(self, X: Any) -> "StandardScaler":
        """Learn the column means and standard deviations of the training table."""
        X = _table("X", X, allow_nan=False)
        xp = B.namespace(X)
        n = X.shape[0]
        self.mean_ = xp.sum(X, axis=0) / n
        self.var_ = _corrected_two_pass_variance(X, self.mean_)
        constant = self.var_ <= n * _EPS64 * self.var_ + (n * self.mean_ * _EPS64) ** 2
        self.scale_ = _scale_or_one(xp.sqrt(self.var_), constant)
        self._remember(X)
        return self

    def transform(self, X: Any) -> Any:
        """(X - mean_) / scale_, using the training statistics."""
        X = self._check_fitted(X, allow_nan=False)
        xp = B.namespace(X)
        if self.with_mean:
            X = X - xp.astype(self.mean_, X.dtype)
        return X / xp.astype(self.scale_, X.dtype) if self.with_std else X

    def inverse_transform(self, Z: Any) -> Any:
        """Undo :meth:`transform`: Z * scale_ + mean_."""
        Z = self._check_fitted(Z, allow_nan=False, name="Z")
        xp = B.namespace(Z)
        if self.with_std:
            Z = Z * xp.astype(self.scale_, Z.dtype)
        return Z + xp.astype(self.mean_, Z.dtype) if self.with_mean else Z


class MinMaxScaler(_Fitted):
    r"""Min-max scaling of each column to ``feature_range = (a, b)``, fitted on the training split.

    .. math:: x' = a + (x - x_{\min})\,\frac{b - a}{x_{\max} - x_{\min}}

    computed as ``x * scale_ + min_`` like scikit-learn; a constant column gets scale ``b - a``.
    Test values outside the training range land outside (a, b) unless ``clip=True``.

    Same results as ``sklearn.preprocessing.MinMaxScaler``. Seed §3.1.1.3.
    See: chapters/02_1_data_cleaning.ipynb
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0), clip: bool = False):
        if not isinstance(feature_range, (tuple, list)) or len(feature_range) != 2:
            raise ValueError(f"feature_range must be a pair (min, max), got {feature_range!r}")
        lo, hi = (check_number("feature_range", v) for v in feature_range)
        if not lo < hi:
            raise ValueError(f"feature_range must have min < max, got {tuple(feature_range)!r}")
        self.feature_range, self.clip = (lo, hi), check_bool("clip", clip)

    def fit(self, X: Any) -> "MinMaxScaler":
        """Learn each column's minimum and maximum on the training table."""
        X = _table("X", X, allow_nan=False)
        xp = B.namespace(X)
        lo, hi = self.feature_range
        self.data_min_, self.data_max_ = xp.min(X, axis=0), xp.max(X, axis=0)
        self.data_range_ = self.data_max_ - self.data_min_
        constant = self.data_range_ < 10 * _EPS64
        self.scale_ = (hi - lo) / _scale_or_one(self.data_range_, constant)
        self.min_ = lo - self.data_min_ * self.scale_
        self._remember(X)
        return self

    def transform(self, X: Any) -> Any:
        """X * scale_ + min_ (then clipped to feature_range when ``clip``)."""
        X = self._check_fitted(X, allow_nan=False)
        xp = B.namespace(X)
        out = X * xp.astype(self.scale_, X.dtype) + xp.astype(self.min_, X.dtype)
        return xp.clip(out, *self.feature_range) if self.clip else out

    def inverse_transform(self, Z: Any) -> Any:
        """Undo :meth:`transform`: (Z - min_) / scale_."""
        Z = self._check_fitted(Z, allow_nan=False, name="Z")
        xp = B.namespace(Z)
        return (Z - xp.astype(self.min_, Z.dtype)) / xp.astype(self.scale_, Z.dtype)


# ----------------------------------------------------------------------------- corruptions
def add_gaussian_noise(x: Any, std: float, generator=None) -> Any:
    r"""Additive white Gaussian noise: :math:`\tilde x = x + \sigma\,\varepsilon`, :math:`\varepsilon \sim N(0, 1)`.

    Parameters
    ----------
    x : array, any shape
    std : float >= 0
        :math:`\sigma`, in the units of ``x``.
    generator : numpy Generator, optional
        Default: the project's :func:`nnopt_lab.backend.rng`.

    See: chapters/02_1_data_cleaning.ipynb (the corrupted-digits experiment)
    """
    x = _floating("x", x)
    std = check_number("std", std, 0.0)
    noise = (check_generator("generator", generator) or B.rng()).standard_normal(tuple(x.shape))
    return x + std * B.asarray(noise, x)


def add_salt_and_pepper(x: Any, amount: float, low: float | None = None, high: float | None = None,
                        generator=None) -> Any:
    """Impulse noise: a fraction ``amount`` of the entries becomes ``low`` or ``high`` (half each).

    Parameters
    ----------
    x : array, any shape
    amount : float in [0, 1]
        Probability that an entry is hit.
    low, high : float, optional
        "Pepper" and "salt" values; default the minimum and maximum of ``x``.
    generator : numpy Generator, optional

    See: chapters/02_1_data_cleaning.ipynb (the corrupted-digits experiment)
    """
    x = _floating("x", x)
    amount = check_probability("amount", amount)
    g = check_generator("generator", generator) or B.rng()
    low = None if low is None else check_number("low", low)
    high = None if high is None else check_number("high", high)
    xp = B.namespace(x)
    if x.shape and 0 in tuple(x.shape):
        return xp.asarray(x, copy=True)
    low = B.float_of(xp.min(x)) if low is None else low
    high = B.float_of(xp.max(x)) if high is None else high
    hit = B.asarray(g.random(tuple(x.shape)) < amount, x) > 0.5
    salt = B.asarray(g.random(tuple(x.shape)) < 0.5, x) > 0.5
    return xp.where(hit, xp.where(salt, xp.full_like(x, high), xp.full_like(x, low)), x)


def drop_at_random(x: Any, rate: float, generator=None) -> Any:
    """Missing completely at random (MCAR): each entry becomes NaN with probability ``rate``.

    Parameters
    ----------
    x : array, any shape
    rate : float in [0, 1]
    generator : numpy Generator, optional

    See: chapters/02_1_data_cleaning.ipynb (the corrupted-digits experiment)
    """
    x = _floating("x", x)
    rate = check_probability("rate", rate)
    xp = B.namespace(x)
    drop = B.asarray((check_generator("generator", generator) or B.rng()).random(tuple(x.shape)) < rate, x) > 0.5
    return xp.where(drop, xp.full_like(x, math.nan), x)
