r"""Input compression (seed §2.1.3, §3.1.3, §4.1.3, "数据压缩"): fewer bytes per sample.

The seed names two families, and this module reads them as follows:

* quantization (量化) -- *integer-ization* (整数化): k-bit uniform quantization of the inputs,
  :func:`quantize_inputs` (built on :mod:`nnopt_lab.compression.quantization`, the workbook's
  one quantizer), with optional dithering; *binarization* (二进制化): :func:`binarize` with a
  fixed threshold or Otsu's (:func:`otsu_threshold`);
* splitting (分割) -- *spatial split* (空间分割): :func:`downsample` (average pooling or
  striding) and :func:`to_patches` / :func:`from_patches` (non-overlapping p×p tiles);
  *feature split* (特征分割): :class:`TopVarianceSelector` (keep the k most variable features)
  and :class:`PCA` (keep k principal components, via the SVD).

:func:`bytes_per_sample` gives the storage cost of each, for accuracy-against-bytes charts.

All functions run on numpy arrays and torch tensors (CPU or CUDA).

See: chapters/02_3_data_compression.ipynb
"""
from __future__ import annotations

from typing import Any

from .. import backend as B
from ..compression.quantization import quantize_uniform
from ..nn.functional import avgpool2d_forward
from ..validation import check_array, check_choice, check_int, check_number, check_shape

__all__ = ["DITHERS", "quantize_inputs", "floyd_steinberg", "binarize", "otsu_threshold",
           "downsample", "upsample", "to_patches", "from_patches", "TopVarianceSelector", "PCA",
           "bytes_per_sample", "METHODS"]

DITHERS = (None, "uniform", "floyd-steinberg")
METHODS = ("float32", "kbit", "binary", "downsample", "top_variance", "pca")
MAX_SIDE = 4096     # largest side (pixels) upsample makes: beyond it a typo, not a request


# ----------------------------------------------------------------------------- checks
def _array(name: str, x: Any, ndim: int, layout: str) -> Any:
    """Check that ``x`` is a non-empty array of shape ``layout``; return its namespace."""
    check_array(name, x, ndim, layout)
    if 0 in tuple(x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return B.namespace(x)


# ----------------------------------------------------------------------------- integer-ization
def quantize_inputs(x: Any, bits: int, lo: float = 0.0, hi: float = 1.0, dither: str | None = None) -> Any:
    r"""k-bit inputs: each value rounded to one of :math:`2^k` levels from ``lo`` to ``hi``.

    .. math::

        \Delta = \frac{hi - lo}{2^k - 1}, \qquad
        \hat x = lo + \Delta\,\operatorname{clamp}\big(\operatorname{round}((x - lo)/\Delta),
        0, 2^k - 1\big)

    A sample of D values then needs :math:`kD/8` bytes instead of :math:`4D` (float32).

    Parameters
    ----------
    x : float array, any shape (``"floyd-steinberg"``: images, shape (..., H, W))
    bits : int in [1, 16]
    lo, hi : float
        The known range of the inputs (digits from :func:`nnopt_lab.datasets.load_digits` with
        ``standardize=False`` lie in [0, 1]).
    dither : {None, "uniform", "floyd-steinberg"}
        ``None``: round to nearest. ``"uniform"``: add noise :math:`u \sim U(-\Delta/2, \Delta/2)`
        before rounding (non-subtractive dither; the same operation as stochastic rounding,
        so :math:`E[\hat x] = x`, and the rounding error no longer follows the image).
        ``"floyd-steinberg"``: error diffusion, :func:`floyd_steinberg`.

    Returns
    -------
    float array, shape and dtype of ``x``

    Seed: §2.1.3 / §3.1.3.1 整数化; §4.1.3's ``np.round(data / 2) * 2`` is the step-2 case.
    See: chapters/02_3_data_compression.ipynb
    """
    check_choice("dither", dither, DITHERS)
    check_array("x", x)
    if dither == "floyd-steinberg":
        return floyd_steinberg(x, bits, lo, hi)
    return quantize_uniform(x, bits, lo, hi, rounding="stochastic" if dither == "uniform" else "nearest")


FLOYD_STEINBERG_WEIGHTS = ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16))
"""(row offset, column offset, share of the error) of Floyd & Steinberg (1976)."""


def floyd_steinberg(images: Any, bits: int, lo: float = 0.0, hi: float = 1.0) -> Any:
    r"""k-bit images by Floyd–Steinberg error diffusion (Floyd & Steinberg 1976).

    Pixels are visited row by row, left to right. Each is rounded to the nearest of the
    :math:`2^k` levels (:func:`~nnopt_lab.compression.quantization.quantize_uniform`), and its
    rounding error :math:`e = x - \hat x` is pushed onto the pixels not yet visited:

    .. math::

        x_{i, j+1} \mathrel{+}= \tfrac{7}{16} e, \quad x_{i+1, j-1} \mathrel{+}= \tfrac{3}{16} e,
        \quad x_{i+1, j} \mathrel{+}= \tfrac{5}{16} e, \quad x_{i+1, j+1} \mathrel{+}= \tfrac{1}{16} e

    (shares that fall outside the image are dropped). Local averages of the output follow the
    input, so 1-bit images keep their grey shades as dot densities.

    Parameters
    ----------
    images : float array, shape (..., H, W)
    bits : int in [1, 16]
    lo, hi : float

    Returns
    -------
    float array, shape and dtype of ``images``, values on the :math:`2^k` levels

    See: chapters/02_3_data_compression.ipynb
    """
    check_array("images", images)
    if images.ndim < 2:
        raise ValueError(f"images must have shape (..., H, W), got shape {tuple(images.shape)}")
    xp = B.namespace(images)
    check_int("bits", bits, 1, 16)
    lo, hi = check_number("lo", lo), check_number("hi", hi)
    if not lo < hi:
        raise ValueError(f"lo must be < hi, got lo={lo!r}, hi={hi!r}")
    if not xp.isdtype(images.dtype, "real floating"):
        raise TypeError(f"images must be a floating-point array, got dtype {B.dtype_name(images)}")
    if not B.float_of(xp.all(xp.isfinite(images))):
        raise ValueError("images must be finite: NaN or inf has no k-bit code and would spread to its neighbours")
    h, w = images.shape[-2:]
    work = xp.asarray(images, copy=True)
    out = xp.zeros_like(images)
    for i in range(h):
        for j in range(w):
            old = work[..., i, j]
            new = quantize_uniform(old, bits, lo, hi)
            out[..., i, j] = new
            err = old - new
            for di, dj, share in FLOYD_STEINBERG_WEIGHTS:
                if i + di < h and 0 <= j + dj < w:
                    work[..., i + di, j + dj] = work[..., i + di, j + dj] + share * err
    return out


# ----------------------------------------------------------------------------- binarization
def binarize(x: Any, threshold: float) -> Any:
    r"""1-bit inputs by thresholding: :math:`b = [x > t]`, as 0.0 / 1.0 in ``x``'s dtype.

    With :math:`t = (lo + hi)/2` this is the 1-bit uniform quantizer (levels lo and hi, ties
    rounding down); :func:`otsu_threshold` picks :math:`t` from the data instead.

    Seed: §2.1.3 / §3.1.3.1 二进制化.
    See: chapters/02_3_data_compression.ipynb
    """
    check_array("x", x)
    xp = B.namespace(x)
    t = check_number("threshold", threshold, finite=False)
    dtype = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float64
    return xp.astype(x > t, dtype)


def otsu_threshold(x: Any) -> float:
    r"""Otsu's threshold (Otsu 1979): the cut that best separates the values of ``x`` in two classes.

    For every cut :math:`t` between two distinct values, class 0 is :math:`\{x \le t\}` with
    weight :math:`\omega_0` and mean :math:`\mu_0`, class 1 the rest; Otsu's :math:`t` maximizes
    the between-class variance

    .. math:: \sigma_B^2(t) = \omega_0\,\omega_1\,(\mu_0 - \mu_1)^2,

    which is the same as minimizing the within-class variance. Computed exactly on the sorted
    values with cumulative sums (no histogram binning): :math:`O(n \log n)`.

    Parameters
    ----------
    x : float array, any shape, with at least two distinct values
        Usually all pixels of the training images (one global threshold).

    Returns
    -------
    float
        The largest value of class 0; use ``binarize(x, t)`` (``x > t`` is class 1).
        Ties between cuts go to the smallest ``t``.

    Seed: §3.1.3.1 二进制化.
    See: chapters/02_3_data_compression.ipynb
    """
    check_array("x", x)
    xp = B.namespace(x)
    v = xp.sort(xp.reshape(xp.astype(x, xp.float64), (-1,)))
    n = v.shape[0]
    if n and not B.float_of(xp.all(xp.isfinite(v))):
        raise ValueError("x must be finite: it holds NaN or inf")
    if n < 2 or B.float_of(v[0]) == B.float_of(v[-1]):
        raise ValueError("x must hold at least two distinct values to be split by a threshold")
    below = xp.cumulative_sum(v)[:-1]                       # sum of the i smallest, i = 1..n-1
    count = xp.arange(1, n, dtype=xp.float64, device=B.device(v))
    w0 = count / n
    mu0 = below / count
    mu1 = (xp.sum(v) - below) / (n - count)
    between = w0 * (1 - w0) * (mu0 - mu1) ** 2
    between = xp.where(v[:-1] < v[1:], between, -1.0)       # only cuts between distinct values
    return B.float_of(v[xp.argmax(between)])


# ----------------------------------------------------------------------------- spatial split
def downsample(images: Any, factor: int, method: str = "mean") -> Any:
    r"""Spatial split by downsampling: keep one value per ``factor``×``factor`` block.

    .. math::

        \text{mean:}\; y_{n,c,i,j} = \frac{1}{f^2}\sum_{u,v<f} x_{n,c,fi+u,fj+v}
        \qquad \text{stride:}\; y_{n,c,i,j} = x_{n,c,fi,fj}

    ``"mean"`` is average pooling (:func:`nnopt_lab.nn.functional.avgpool2d_forward`), an
    anti-aliasing low-pass filter before sub-sampling; ``"stride"`` just drops pixels.

    Parameters
    ----------
    images : array, shape (N, C, H, W), with H and W divisible by ``factor``
    factor : int >= 1
    method : {"mean", "stride"}

    Returns
    -------
    array, shape (N, C, H/f, W/f): :math:`f^2` times fewer values

    Seed: §3.1.3.2 空间分割.
    See: chapters/02_3_data_compression.ipynb
    """
    check_choice("method", method, ("mean", "stride"))
    xp = _array("images", images, 4, "(N, C, H, W)")
    if method == "mean" and not xp.isdtype(images.dtype, "real floating"):
        raise TypeError(f"images must be a floating-point array to average, got dtype {B.dtype_name(images)}")
    factor = check_int("factor", factor, 1)
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"factor must divide the image size {h}×{w}, got {factor}")
    if method == "mean":
        return avgpool2d_forward(images, factor)[0]
    return images[:, :, ::factor, ::factor]


def upsample(images: Any, factor: int) -> Any:
    r"""Nearest-neighbour upsampling, :math:`y_{n,c,i,j} = x_{n,c,\lfloor i/f\rfloor,\lfloor j/f\rfloor}`.

    Shows a downsampled image at its original size. Shape (N, C, H, W) → (N, C, fH, fW).

    See: chapters/02_3_data_compression.ipynb
    """
    xp = _array("images", images, 4, "(N, C, H, W)")
    n, c, h, w = images.shape
    factor = check_int("factor", factor, 1, max(1, MAX_SIDE // max(h, w)))
    big = xp.broadcast_to(images[:, :, :, None, :, None], (n, c, h, factor, w, factor))
    return xp.reshape(big, (n, c, h * factor, w * factor))


def to_patches(images: Any, patch: int) -> Any:
    r"""Spatial split into non-overlapping ``patch``×``patch`` tiles.

    Tile :math:`l = a\,(W/p) + b` holds :math:`x_{n, c, pa+u, pb+v}` at position
    :math:`(c, u, v)` flattened -- the layout of
    ``torch.nn.functional.unfold(x, p, stride=p).transpose(1, 2)`` (ViT's "patchify").

    Parameters
    ----------
    images : array, shape (N, C, H, W), with H and W divisible by ``patch``
    patch : int >= 1

    Returns
    -------
    array, shape (N, L, C·p·p) with :math:`L = (H/p)(W/p)`

    Seed: §3.1.3.2 空间分割.
    See: chapters/02_3_data_compression.ipynb
    """
    xp = _array("images", images, 4, "(N, C, H, W)")
    patch = check_int("patch", patch, 1)
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"patch must divide the image size {h}×{w}, got {patch}")
    tiles = xp.reshape(images, (n, c, h // patch, patch, w // patch, patch))
    tiles = xp.permute_dims(tiles, (0, 2, 4, 1, 3, 5))          # (N, H/p, W/p, C, p, p)
    return xp.reshape(tiles, (n, (h // patch) * (w // patch), c * patch * patch))


def from_patches(patches: Any, image_shape: tuple, patch: int) -> Any:
    """Inverse of :func:`to_patches`: (N, L, C·p·p) → (N, C, H, W) with ``image_shape = (C, H, W)``.

    Seed: §3.1.3.2 空间分割. See: chapters/02_3_data_compression.ipynb
    """
    xp = _array("patches", patches, 3, "(N, L, C·p·p)")
    patch = check_int("patch", patch, 1)
    if not isinstance(image_shape, (tuple, list)):
        raise TypeError(f"image_shape must be a tuple (C, H, W) of ints >= 1, got {image_shape!r}")
    c, h, w = check_shape("image_shape", image_shape, 3)
    n = patches.shape[0]
    if h % patch or w % patch or tuple(patches.shape[1:]) != ((h // patch) * (w // patch), c * patch * patch):
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not tile image_shape {tuple(image_shape)} "
                         f"with patch {patch}")
    tiles = xp.reshape(patches, (n, h // patch, w // patch, c, patch, patch))
    tiles = xp.permute_dims(tiles, (0, 3, 1, 4, 2, 5))          # (N, C, H/p, p, W/p, p)
    return xp.reshape(tiles, (n, c, h, w))


# ----------------------------------------------------------------------------- feature split
class _Fitted:
    """fit / transform / inverse_transform on (N, D) matrices, fitted on the training split only."""

    _fitted_attr = "mean_"

    def _check_x(self, x: Any, name: str = "x", fitting: bool = False) -> Any:
        xp = _array(name, x, 2, "(N, D)")
        fitted = getattr(self, "mean_", None)
        if not fitting and fitted is not None and not B.same_kind(x, fitted):
            raise TypeError(f"{name} must be on the backend and device {type(self).__name__} was fitted on "
                            f"({B.backend_of(fitted).name}), got {B.backend_of(x).name}")
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"{name} must be a floating-point array, got dtype {B.dtype_name(x)}")
        if not B.float_of(xp.all(xp.isfinite(x))):
            raise ValueError(f"{name} must be finite: it holds NaN or inf (fill missing values first, "
                             f"nnopt_lab.preprocessing.cleaning.SimpleImputer)")
        return xp

    def _check_fitted(self) -> None:
        if getattr(self, self._fitted_attr, None) is None:
            raise ValueError(f"{type(self).__name__} is not fitted yet: call .fit(X_train) first")

    def _check_features(self, x: Any) -> None:
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"x has {x.shape[1]} features, but {type(self).__name__} was fitted "
                             f"with {self.mean_.shape[0]}")

    def fit_transform(self, x: Any) -> Any:
        return self.fit(x).transform(x)


class TopVarianceSelector(_Fitted):
    r"""Feature split by variance: keep the ``k`` features that vary most on the training data.

    .. math:: \sigma_j^2 = \frac1N \sum_n (x_{nj} - \mu_j)^2, \qquad
        S = \text{indices of the } k \text{ largest } \sigma_j^2

    (ties go to the lower index). On digits the border pixels are almost always 0 and carry
    nothing; this drops them first.

    Attributes (after :meth:`fit`)
    ------------------------------
    variances_ : (D,)   mean_ : (D,)   indices_ : (k,) int64, by decreasing variance

    Seed: §3.1.3.2 特征分割.
    See: chapters/02_3_data_compression.ipynb
    """

    def __init__(self, k: int):
        self.k = check_int("k", k, 1)
        self.variances_ = self.mean_ = self.indices_ = None

    def fit(self, x: Any) -> "TopVarianceSelector":
        """Compute the variances of ``x`` (N, D) and pick the top ``k``; returns self."""
        xp = self._check_x(x, fitting=True)
        if self.k > x.shape[1]:
            raise ValueError(f"k must be <= the number of features {x.shape[1]}, got {self.k}")
        self.mean_ = xp.mean(x, axis=0)
        self.variances_ = xp.mean((x - self.mean_) ** 2, axis=0)
        self.indices_ = xp.argsort(-self.variances_, stable=True)[:self.k]
        return self

    def transform(self, x: Any) -> Any:
        """(N, D) → (N, k): the kept columns."""
        xp = self._check_x(x)
        self._check_fitted()
        self._check_features(x)
        return xp.take(x, self.indices_, axis=1)

    def inverse_transform(self, z: Any) -> Any:
        """(N, k) → (N, D): kept features back in place, dropped ones set to their training mean."""
        xp = self._check_x(z, "z")
        self._check_fitted()
        d = self.mean_.shape[0]
        cols = xp.arange(d, device=B.device(z))
        pick = xp.astype(self.indices_[:, None] == cols[None, :], z.dtype)      # (k, D) one-hot
        dropped = 1 - xp.sum(pick, axis=0)
        return z @ pick + self.mean_ * dropped


class PCA(_Fitted):
    r"""Feature split by principal components (Pearson 1901; Jolliffe 2002), via the SVD.

    With the training data centred, :math:`X_c = X - \mu = U S V^\top` (thin SVD):

    .. math::

        z = (x - \mu) V_k, \qquad \hat x = z V_k^\top + \mu, \qquad
        \text{explained variance}_i = \frac{s_i^2}{N - 1}, \qquad
        \text{ratio}_i = \frac{s_i^2}{\sum_j s_j^2}

    :math:`V_k` holds the first ``n_components`` right singular vectors: the orthonormal
    directions of largest variance; among all rank-k linear maps this reconstruction has the
    least squared error (Eckart–Young). Signs follow scikit-learn (≥ 1.5): the entry of largest
    magnitude of each component is positive.

    Attributes (after :meth:`fit`)
    ------------------------------
    mean_ : (D,)  components_ : (k, D)  singular_values_ : (k,)
    explained_variance_ : (k,)  explained_variance_ratio_ : (k,)  n_samples_ : int

    Seed: §3.1.3.2 特征分割.
    See: chapters/02_3_data_compression.ipynb
    """

    def __init__(self, n_components: int):
        self.n_components = check_int("n_components", n_components, 1)
        self.mean_ = self.components_ = self.singular_values_ = None
        self.explained_variance_ = self.explained_variance_ratio_ = None
        self.n_samples_ = None

    def fit(self, x: Any) -> "PCA":
        """Centre ``x`` (N, D), take its thin SVD and keep the first ``n_components``; returns self."""
        xp = self._check_x(x, fitting=True)
        n, d = x.shape
        if self.n_components > min(n, d):
            raise ValueError(f"n_components must be <= min(N, D) = {min(n, d)}, got {self.n_components}")
        if n < 2:
            raise ValueError(f"x must have at least 2 samples to estimate a variance, got {n}")
        self.mean_ = xp.mean(x, axis=0)
        _, s, vt = xp.linalg.svd(x - self.mean_, full_matrices=False)
        k = self.n_components
        vt = vt[:k] * _sign_of_largest(vt[:k])[:, None]
        power = s ** 2
        self.components_ = vt
        self.singular_values_ = s[:k]
        self.explained_variance_ = power[:k] / (n - 1)
        self.explained_variance_ratio_ = power[:k] / xp.sum(power)
        self.n_samples_ = n
        return self

    def transform(self, x: Any, n_components: int | None = None) -> Any:
        """(N, D) → (N, m): coordinates on the first ``m`` components (default all kept)."""
        self._check_x(x)
        self._check_fitted()
        self._check_features(x)
        m = self._check_m(n_components)
        return (x - self.mean_) @ self.components_[:m].T

    def inverse_transform(self, z: Any) -> Any:
        """(N, m) → (N, D): :math:`z V_m^\\top + \\mu` for the first ``m = z.shape[1]`` components."""
        self._check_x(z, "z")
        self._check_fitted()
        m = self._check_m(z.shape[1])
        return z @ self.components_[:m] + self.mean_

    def reconstruct(self, x: Any, n_components: int | None = None) -> Any:
        """Project (N, D) on the first ``n_components`` and map back: the rank-m approximation."""
        return self.inverse_transform(self.transform(x, n_components))

    def _check_m(self, m: int | None) -> int:
        return self.n_components if m is None else check_int("n_components", m, 1, self.n_components)


def _sign_of_largest(rows: Any) -> Any:
    """+1 or -1 per row: the sign of the row's entry of largest magnitude (first on ties)."""
    xp = B.namespace(rows)
    cols = xp.arange(rows.shape[1], device=B.device(rows))
    at = xp.argmax(xp.abs(rows), axis=1)
    largest = xp.sum(xp.where(cols[None, :] == at[:, None], rows, xp.zeros_like(rows)), axis=1)
    ones = xp.ones_like(largest)
    return xp.where(largest < 0, -ones, ones)


# ----------------------------------------------------------------------------- bytes
def bytes_per_sample(method: str, n_features: int, *, bits: int | None = None, factor: int = 1,
                     k: int | None = None) -> float:
    r"""Bytes to store one sample after input compression: values kept × bits per value / 8.

    ========================  ==========================  =====================
    method                    values kept                 bits per value
    ========================  ==========================  =====================
    ``"float32"``             D                           32
    ``"kbit"``                D                           ``bits`` (required)
    ``"binary"``              D                           1
    ``"downsample"``          D / factor²                 ``bits`` (default 32)
    ``"top_variance"``        k                           ``bits`` (default 32)
    ``"pca"``                 k                           ``bits`` (default 32)
    ========================  ==========================  =====================

    E.g. digits (D = 64): float32 256 B, 4-bit 32 B, binary 8 B, PCA with 10 float32
    components 40 B. Fixed costs paid once per data set (PCA's mean and components,
    :math:`4D(k+1)` bytes; the selected indices) are not included.

    Returns
    -------
    float (may be fractional, e.g. 1-bit features 4 → 0.5 byte)

    Seed: §2.1.3 ("减少数据的规模").
    See: chapters/02_3_data_compression.ipynb
    """
    check_choice("method", method, METHODS)
    n_features = check_int("n_features", n_features, 1)
    fixed = {"float32": 32, "binary": 1}
    if method in fixed:
        if bits is not None and bits != fixed[method]:
            raise ValueError(f"bits must be None or {fixed[method]} for method {method!r}, got {bits!r}")
        bits = fixed[method]
    elif method == "kbit":
        if bits is None:
            raise ValueError("bits must be given for method 'kbit' (an int in [1, 16]), got None")
        bits = check_int("bits", bits, 1, 16)
    else:
        bits = 32 if bits is None else check_int("bits", bits, 1, 32)
    values = n_features
    if method == "downsample":
        check_int("factor", factor, 1)
        if n_features % (factor * factor):
            raise ValueError(f"factor**2 must divide n_features={n_features}, got factor={factor}")
        values = n_features // (factor * factor)
    elif method in ("top_variance", "pca"):
        if k is None:
            raise ValueError(f"k must be given for method {method!r} (an int in [1, n_features]), got None")
        values = check_int("k", k, 1, n_features)
    return values * bits / 8
