r"""Weight sharing by k-means (Deep Compression, Han et al. 2016, stage 2): codebook + indices.

The n weights of a layer are replaced by k shared values, the *codebook*
:math:`c_1, \dots, c_k`, and one small integer per weight, its *index* :math:`i(w)`:

.. math::

    \hat w = c_{i(w)}, \qquad
    \min_{c,\, i} \sum_{w} \big(w - c_{i(w)}\big)^2 \quad \text{(k-means in one dimension)} .

Storing indices of :math:`\lceil \log_2 k \rceil` bits and a codebook of b-bit floats instead of
n b-bit floats compresses by

.. math:: r = \frac{n\, b}{n \lceil\log_2 k\rceil + k\, b} .

Names, from the bottom up:

* :func:`init_centroids` -- the k starting centroids: ``"linear"``, ``"random"``, ``"density"``,
  ``"kmeans++"`` (the meanings tensorflow-model-optimization's ``CentroidInitialization``
  gives them; Deep Compression found linear the best, since it keeps the rare large weights);
* :func:`kmeans` -- Lloyd's iterations as scikit-learn's ``KMeans(algorithm="lloyd")`` runs them
  (same ``tol``, same convergence test, same relocation of empty clusters);
* :func:`share_weights` -- an array as (codebook, indices) with the narrowest index dtype
  (:func:`index_dtype`); :func:`compression_ratio` -- the :math:`r` above;
* :class:`SharedLayer` -- a Linear or Conv2d that stores and trains the codebook: its forward
  uses :math:`W = c[\text{indices}]`, its backward gives each centroid the SUM of its members'
  weight gradients, :math:`\partial L/\partial c_j = \sum_{w:\, i(w)=j} \partial L/\partial w`
  (:func:`nnopt_lab.backend.scatter_add`), so fine-tuning moves shared values, not weights.

Seed §2.2.1 / §3.2.1 (quantize parameters 量化). Chapter 3.1 (model compression) teaches it.

See: chapters/03_1_model_compression.ipynb
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import backend as B
from ..nn.layers import Conv2d, Linear, Module, Parameter
from ..validation import check_array, check_bool, check_choice, check_generator, check_int, check_number

__all__ = ["INITS", "KMeansResult", "init_centroids", "kmeans", "index_dtype", "index_bits", "share_weights",
           "compression_ratio", "SharedLayer"]

INITS = ("linear", "random", "density", "kmeans++")
"""Names of the centroid initialisations (tfmot's LINEAR, RANDOM, DENSITY_BASED, KMEANS_PLUS_PLUS)."""

_CHUNK = 2 ** 22   # entries of one (rows, k) block of distances: memory stays bounded for big layers


# ----------------------------------------------------------------------------- checks
def _as_values(name: str, w: Any) -> Any:
    """``w`` (any shape) as a flat float array of its backend; refuses empty, integer and non-finite input."""
    check_array(name, w)
    if not B.dtype_name(w).startswith("float"):
        raise TypeError(f"{name} must be a floating array (weights), got dtype {B.dtype_name(w)}")
    xp = B.namespace(w)
    x = xp.reshape(w, (-1,))
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: there are no weights to cluster")
    finite = xp.isfinite(x)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int64)))
        raise ValueError(f"{name} holds {bad} NaN or inf entries; k-means of non-finite weights is meaningless")
    return x


def _check_k(k: Any, x: Any, name: str = "w") -> int:
    """k must be an int in [1, number of distinct values of x] (at most the number of weights)."""
    n = int(x.shape[0])
    k = check_int("k", k, low=1)
    if k > n:
        raise ValueError(f"k must be at most the number of weights in {name} ({n}), got {k}")
    distinct = int(B.namespace(x).unique_values(x).shape[0])
    if k > distinct:
        raise ValueError(f"k must be at most the number of distinct values in {name} ({distinct} of its {n} "
                         f"weights), got {k}: k-means cannot make {k} different centroids from them")
    return k


def _check_init_array(init: Any, x: Any, k: int) -> Any:
    """An array of k starting centroids, on x's backend and dtype."""
    if tuple(init.shape) not in ((k,), (k, 1)):
        raise ValueError(f"init as an array must hold the k = {k} starting centroids, shape ({k},), "
                         f"got shape {tuple(init.shape)}")
    if not B.same_kind(init, x):
        raise TypeError(f"init is on {B.backend_of(init).name} but w is on {B.backend_of(x).name}: "
                        f"move both to one backend with nnopt_lab.backend.to_backend")
    c = B.asarray(B.namespace(x).reshape(init, (k,)), x)
    if not bool(B.namespace(x).all(B.namespace(x).isfinite(c))):
        raise ValueError("init holds NaN or inf centroids")
    return B.copy(c)


# ----------------------------------------------------------------------------- initialisation
def init_centroids(w: Any, k: int, init: str = "linear", generator=None) -> Any:
    r"""The k starting centroids of :func:`kmeans` for the weights ``w``.

    Parameters
    ----------
    w : float array, any shape
        The weights (flattened); finite.
    k : int in [1, number of distinct values of w]
    init : {"linear", "random", "density", "kmeans++"}
        The meanings of tfmot's ``CentroidInitialization``:

        * ``"linear"``: evenly spaced between the smallest and the largest weight,
          :math:`c_j = w_{\min} + \frac{j}{k-1}(w_{\max} - w_{\min})` (``linspace``);
        * ``"random"``: :math:`c_j \sim U(w_{\min}, w_{\max})`, drawn from ``generator``;
        * ``"density"``: evenly spaced on the empirical CDF :math:`F` of the weights,
          :math:`c_j = F^{-1}\big(\tfrac{j}{k-1}\big)`, the quantile with linear interpolation
          between order statistics (``numpy.quantile``'s default), so dense regions of the
          histogram get more centroids. tfmot reads :math:`F` on a 30-point grid and starts at
          probability 0.01; here the exact empirical CDF is used, from probability 0 to 1;
        * ``"kmeans++"``: scikit-learn's greedy k-means++ (Arthur & Vassilvitskii 2007): the first
          centroid a uniformly drawn weight; each next one the best (least total squared
          distance) of :math:`2 + \lfloor\ln k\rfloor` candidates drawn with probability
          :math:`\propto D(w)^2`, the squared distance to the nearest centroid so far. With a
          numpy ``Generator`` over the bit generator of a ``RandomState(seed)`` it picks the
          same weights as ``sklearn.cluster.kmeans_plusplus(..., random_state=RandomState(seed))``.

        With k = 1 every initialisation gives one centroid (linear and density: the smallest weight).
    generator : numpy Generator or None
        Source of the random draws of ``"random"`` and ``"kmeans++"`` (default: the project's
        :func:`nnopt_lab.backend.rng`).

    Returns
    -------
    array, shape (k,), on w's backend and dtype.

    Raises
    ------
    TypeError
        For a non-array or integer ``w``, a non-int ``k``, a bad ``generator``.
    ValueError
        For an empty or non-finite ``w``, ``k`` outside [1, distinct values], an unknown ``init``.

    See: chapters/03_1_model_compression.ipynb
    """
    x = _as_values("w", w)
    k = _check_k(k, x)
    if not isinstance(init, str):
        raise TypeError(f"init must be one of {INITS}, got {init!r}")
    check_choice("init", init, INITS)
    check_generator("generator", generator)
    return _initial(x, k, init, generator or B.rng())


def _initial(x: Any, k: int, init: str, generator) -> Any:
    xp = B.namespace(x)
    if init == "linear":
        return xp.linspace(B.float_of(xp.min(x)), B.float_of(xp.max(x)), k, dtype=x.dtype, device=B.device(x))
    if init == "random":
        lo, hi = B.float_of(xp.min(x)), B.float_of(xp.max(x))
        return B.asarray(generator.uniform(lo, hi, size=k), x)
    if init == "density":
        return _quantiles(x, k)
    return _kmeans_plusplus(x, k, generator)


def _quantiles(x: Any, k: int) -> Any:
    r"""Empirical quantiles at :math:`p_j = j/(k-1)`: :math:`x_{(\lfloor h\rfloor)} + (h - \lfloor h\rfloor)
    (x_{(\lfloor h\rfloor+1)} - x_{(\lfloor h\rfloor)})`, :math:`h = p_j (n-1)` (numpy's "linear")."""
    xp = B.namespace(x)
    s = xp.sort(x)
    n = s.shape[0]
    h = xp.linspace(0.0, float(n - 1), k, dtype=xp.float64, device=B.device(x)) if k > 1 else \
        xp.zeros((1,), dtype=xp.float64, device=B.device(x))
    lo = xp.astype(xp.floor(h), xp.int64)
    hi = xp.clip(lo + 1, max=n - 1)
    frac = xp.astype(h - xp.astype(lo, xp.float64), x.dtype)
    below, above = xp.take(s, lo, axis=0), xp.take(s, hi, axis=0)
    return below + frac * (above - below)


def _kmeans_plusplus(x: Any, k: int, generator) -> Any:
    """scikit-learn's greedy k-means++ on 1-D values; the draws are ``generator.random`` doubles."""
    xp = B.namespace(x)
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = min(int(generator.random() * n), n - 1)          # a uniformly drawn weight
    chosen = [first]
    closest = (x - x[first]) ** 2                              # D(w)^2 to the nearest centroid so far
    potential = xp.sum(closest)
    for _ in range(1, k):
        draws = B.asarray(generator.random(trials), x) * potential
        candidates = xp.clip(xp.searchsorted(xp.cumulative_sum(closest), draws), max=n - 1)
        dist = xp.minimum(closest[None, :], (x[None, :] - xp.take(x, candidates, axis=0)[:, None]) ** 2)
        potentials = xp.sum(dist, axis=1)
        best = int(xp.argmin(potentials))
        chosen.append(int(candidates[best]))
        closest, potential = dist[best], potentials[best]
    return xp.take(x, B.to_backend(chosen, B.backend_of(x), dtype="int64"), axis=0)


# ----------------------------------------------------------------------------- Lloyd's iterations
@dataclass(frozen=True)
class KMeansResult:
    """What :func:`kmeans` found.

    Attributes
    ----------
    centroids : array, shape (k,)
        The codebook, in the order of the starting centroids (not sorted).
    labels : int64 array, shape (n,)
        Index of each (flattened) weight's centroid.
    inertia : float
        :math:`\\sum_w (w - c_{i(w)})^2`.
    n_iter : int
        Lloyd iterations run (scikit-learn's ``n_iter_``).
    converged : bool
        True when the labels stopped changing or the centroids moved less than the tolerance
        before ``max_iter``.

    See: chapters/03_1_model_compression.ipynb
    """

    centroids: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool


def _nearest(x: Any, c: Any) -> Any:
    """Index of the nearest centroid of each value (the first one on a tie), in blocks of rows."""
    xp = B.namespace(x)
    step = max(1, _CHUNK // c.shape[0])
    parts = [xp.argmin((x[s:s + step, None] - c[None, :]) ** 2, axis=1) for s in range(0, x.shape[0], step)]
    return xp.astype(parts[0] if len(parts) == 1 else xp.concat(parts), xp.int64)


def _update(x: Any, labels: Any, old: Any) -> Any:
    """New centroids: the mean of each cluster, after relocating empty clusters as scikit-learn does.

    Each empty cluster takes one of the values farthest from their (old) centroid -- the
    farthest to the lowest-numbered empty cluster -- and that value leaves its cluster.
    A cluster left empty by that (it gave all its values away) takes the mean of the largest
    cluster (the first of the largest), what scikit-learn's ``_average_centers`` intends.
    """
    xp = B.namespace(x)
    sums = B.scatter_add(xp.zeros_like(old), labels, x)
    counts = B.scatter_add(xp.zeros_like(old), labels, xp.ones_like(x))
    empty = counts == 0
    if bool(xp.any(empty)):
        targets = xp.nonzero(empty)[0]
        far = xp.argsort((x - xp.take(old, labels, axis=0)) ** 2, descending=True, stable=True)[:targets.shape[0]]
        donors, moved = xp.take(labels, far, axis=0), xp.take(x, far, axis=0)
        sums = B.scatter_add(sums, donors, -moved)
        counts = B.scatter_add(counts, donors, -xp.ones_like(moved))
        sums[targets], counts[targets] = moved, xp.ones_like(moved)
    means = sums / xp.where(counts > 0, counts, xp.ones_like(counts))
    return xp.where(counts > 0, means, xp.zeros_like(means) + means[xp.argmax(counts)])


def kmeans(w: Any, k: int, init: Any = "linear", max_iter: int = 300, tol: float = 1e-4,
           generator=None) -> KMeansResult:
    r"""k-means of the values of ``w`` by Lloyd's iterations, as ``sklearn.cluster.KMeans(algorithm="lloyd")``.

    Each iteration assigns every value to its nearest centroid (the first on a tie) and moves
    each centroid to the mean of its values:

    .. math::

        i(w) = \arg\min_j (w - c_j)^2, \qquad c_j \leftarrow \frac{1}{|S_j|}\sum_{w \in S_j} w,
        \quad S_j = \{w : i(w) = j\} .

    It stops, as scikit-learn does, when the labels are the same as in the previous
    iteration ("strict convergence"), or when the centroids moved by
    :math:`\sum_j \lVert c_j^{new} - c_j^{old}\rVert^2 \le \text{tol} \cdot \operatorname{Var}(w)`
    (``tol`` is relative to the variance of the data), or after ``max_iter`` iterations; unless
    the labels converged strictly, they are then recomputed from the final centroids.

    **Empty clusters** (a centroid no weight is nearest to, frequent with ``"linear"`` on
    heavy-tailed weights) are relocated as scikit-learn relocates them: with m clusters empty,
    the m weights farthest from their centroid leave their clusters, the farthest to the
    lowest-numbered empty cluster, and each becomes the centroid of its new cluster.
    scikit-learn picks them with ``argpartition`` (its order among the m is not specified; in
    the tests it is this one). Where a cluster gives ALL its weights away and is left empty,
    it takes the centroid (the mean) of the largest cluster; scikit-learn means to do the same
    (``_average_centers``) but, when the largest cluster has a higher number, copies its
    not-yet-averaged SUM, so only in that case the two differ.

    Parameters
    ----------
    w : float array, any shape
        The weights (flattened), finite.
    k : int in [1, number of distinct values of w]
        More clusters than distinct values is refused (some centroids would coincide).
    init : {"linear", "random", "density", "kmeans++"} or array of shape (k,)
        See :func:`init_centroids`; an array gives the starting centroids (as scikit-learn's
        ``init=`` array, with ``n_init=1``).
    max_iter : int >= 1
    tol : float >= 0
        Relative tolerance on the centroid shift (scikit-learn's default 1e-4).
    generator : numpy Generator or None
        For the random initialisations (default :func:`nnopt_lab.backend.rng`).

    Returns
    -------
    KMeansResult
        ``centroids`` (k,), ``labels`` (n,) int64, ``inertia``, ``n_iter``, ``converged``.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: ``w`` not a finite non-empty float array, ``k`` outside
        [1, distinct values], an unknown ``init`` or an ``init`` array of another shape,
        ``max_iter < 1``, ``tol < 0``.

    See: chapters/03_1_model_compression.ipynb
    """
    return _kmeans("w", w, k, init, max_iter, tol, generator)


def _kmeans(name: str, w: Any, k: Any, init: Any, max_iter: Any, tol: Any, generator) -> KMeansResult:
    """:func:`kmeans` of the caller's argument ``name`` (the errors name it)."""
    x = _as_values(name, w)
    k = _check_k(k, x, name)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_number("tol", tol, 0.0)
    check_generator("generator", generator)
    if isinstance(init, str):
        check_choice("init", init, INITS)
        centroids = _initial(x, k, init, generator or B.rng())
    elif hasattr(init, "shape") and hasattr(init, "dtype"):
        centroids = _check_init_array(check_array("init", init), x, k)
    else:
        raise TypeError(f"init must be one of {INITS} or an array of k starting centroids, got {init!r}")
    return _lloyd(x, centroids, max_iter, tol)


def _lloyd(x: Any, centroids: Any, max_iter: int, tol: float) -> KMeansResult:
    xp = B.namespace(x)
    threshold = tol * B.float_of(xp.var(x)) if tol > 0 else 0.0     # scikit-learn's _tolerance
    labels_old, strict, converged = None, False, False
    for n_iter in range(1, max_iter + 1):
        labels = _nearest(x, centroids)
        new = _update(x, labels, centroids)
        shift = B.float_of(xp.sum((new - centroids) ** 2))
        centroids = new
        if labels_old is not None and bool(xp.all(labels == labels_old)):
            strict = converged = True
            break
        if shift <= threshold:
            converged = True
            break
        labels_old = labels
    if not strict:
        labels = _nearest(x, centroids)
    inertia = B.float_of(xp.sum((x - xp.take(centroids, labels, axis=0)) ** 2))
    return KMeansResult(centroids, labels, inertia, n_iter, converged)


# ----------------------------------------------------------------------------- codebook + indices
def index_dtype(k: int) -> str:
    """The narrowest integer dtype holding the indices 0 .. k-1: uint8 (k <= 256), int16, int32, int64.

    (uint16 and uint32 are left out: torch has few kernels for them.)

    See: chapters/03_1_model_compression.ipynb
    """
    k = check_int("k", k, low=1)
    for dtype, top in (("uint8", 2 ** 8), ("int16", 2 ** 15), ("int32", 2 ** 31)):
        if k <= top:
            return dtype
    return "int64"


def share_weights(w: Any, k: int, init: Any = "linear", max_iter: int = 300, tol: float = 1e-4,
                  generator=None) -> tuple[Any, Any]:
    r"""``w`` as a codebook of k shared values and one index per weight: :math:`w \approx c[\text{indices}]`.

    Parameters
    ----------
    w : float array, any shape
    k, init, max_iter, tol, generator
        As in :func:`kmeans`.

    Returns
    -------
    codebook : array, shape (k,), w's dtype
    indices : integer array, w's shape, dtype :func:`index_dtype` (uint8 for k <= 256)

    See: chapters/03_1_model_compression.ipynb
    """
    check_array("w", w)
    result = kmeans(w, k, init=init, max_iter=max_iter, tol=tol, generator=generator)
    xp = B.namespace(result.labels)
    indices = xp.reshape(xp.astype(result.labels, getattr(xp, index_dtype(k))), tuple(w.shape))
    return result.centroids, indices


def _reconstruct(codebook: Any, indices: Any) -> Any:
    """``codebook[indices]`` with indices' shape (indices of any integer dtype, on every backend)."""
    xp = B.namespace(codebook)
    flat = xp.astype(xp.reshape(indices, (-1,)), xp.int64)     # torch reads a uint8 index as a mask
    return xp.reshape(xp.take(codebook, flat, axis=0), tuple(indices.shape))


def index_bits(k: int) -> int:
    r""":math:`\lceil \log_2 k \rceil`: bits of a fixed-width index into k centroids (0 for k = 1).

    See: chapters/03_1_model_compression.ipynb
    """
    return (check_int("k", k, low=1) - 1).bit_length()


def compression_ratio(n: int, k: int, bits: int = 32) -> float:
    r"""Deep Compression's ratio :math:`r = n b / (n \lceil\log_2 k\rceil + k b)` of k-way sharing.

    Parameters
    ----------
    n : int >= 1
        Number of weights.
    k : int in [1, n]
        Number of shared values (the codebook, b bits each).
    bits : int >= 1
        Bits b of one weight before sharing, and of one codebook entry.

    See: chapters/03_1_model_compression.ipynb
    """
    n = check_int("n", n, low=1)
    k = check_int("k", k, low=1, high=n)
    bits = check_int("bits", bits, low=1)
    return n * bits / (n * index_bits(k) + k * bits)


# ----------------------------------------------------------------------------- the layer
class SharedLayer(Module):
    r"""A Linear or Conv2d whose weight is a trainable codebook and a fixed index per weight.

    .. math::

        W = c[\text{indices}], \qquad
        \frac{\partial L}{\partial c_j} = \sum_{w:\ \text{indices}(w) = j} \frac{\partial L}{\partial W_w}

    The forward is the wrapped layer's with that weight; the backward runs the layer's
    backward and adds its weight gradient into the centroids with
    :func:`nnopt_lab.backend.scatter_add` (Deep Compression §3.2, centroid fine-tuning). The
    bias stays a plain trainable parameter. Optimizers and :func:`nnopt_lab.training.fit` see
    two parameters, ``codebook`` (k,) and ``bias``; ``indices`` is a buffer.

    Parameters
    ----------
    layer : Linear or Conv2d
        Copied (the caller's layer is left unchanged). Its weight must carry no pruning mask.
    k : int in [1, distinct weights]
    init, max_iter, tol, generator
        The k-means of the weight, as in :func:`kmeans`.

    Attributes
    ----------
    k : int
    codebook : Parameter, shape (k,)
    indices : integer array, the weight's shape, dtype :func:`index_dtype` (uint8 for k <= 256)
    inertia : float
        The k-means inertia of the weight when the layer was built.

    ``state_dict`` keys: ``codebook``, ``bias`` (when the layer has one), ``indices``.

    See: chapters/03_1_model_compression.ipynb
    """

    def __init__(self, layer: Module, k: int, init: Any = "linear", max_iter: int = 300, tol: float = 1e-4,
                 generator=None):
        super().__init__()
        if not isinstance(layer, (Linear, Conv2d)):
            raise TypeError(f"layer must be a Linear or Conv2d, got {type(layer).__name__}")
        weight = layer._params["weight"]
        if weight.mask is not None:
            raise ValueError("layer's weight carries a pruning mask: remove the pruned weights first (physical "
                             "removal) or share the masked weights with share_weights and your own codebook")
        result = _kmeans("layer's weight", weight.data, k, init, max_iter, tol, generator)
        self._inner = copy.deepcopy(layer)
        self._inner._cache = None
        self.k = result.centroids.shape[0]
        self.inertia = result.inertia
        xp = B.namespace(result.labels)
        self._params["codebook"] = Parameter(B.copy(result.centroids))
        if "bias" in self._inner._params:
            self._params["bias"] = self._inner._params["bias"]
        self._buffers["indices"] = xp.reshape(xp.astype(result.labels, getattr(xp, index_dtype(self.k))),
                                              tuple(weight.data.shape))

    @property
    def codebook(self):
        return self._params["codebook"]

    @property
    def indices(self):
        return self._buffers["indices"]

    @property
    def layer(self) -> Module:
        """The wrapped layer (its weight is :meth:`weight` after each forward)."""
        return self._inner

    def weight(self) -> Any:
        """The dense weight :math:`c[\\text{indices}]` (a new array)."""
        return _reconstruct(self._params["codebook"].data, self._buffers["indices"])

    def forward(self, x):
        self._inner._params["weight"].data = self.weight()
        out = self._inner.forward(x)
        self._cache = True
        return out

    def backward(self, dout, need_dx=True):
        self._saved()
        dx = self._inner.backward(dout, need_dx)
        dw = self._inner._params["weight"].grad
        xp = B.namespace(dw)
        codebook = self._params["codebook"]
        codebook.grad = B.scatter_add(xp.zeros_like(codebook.data), xp.reshape(self._buffers["indices"], (-1,)),
                                      xp.reshape(dw, (-1,)))
        return dx

    def macs(self, in_shape, out_shape):
        """The wrapped layer's multiply-accumulates (a table lookup is not a MAC)."""
        return self._inner.macs(in_shape, out_shape)

    def parameter_bytes(self, bits: int | None = None, nonzero: bool = False) -> int:
        r"""Bytes of indices, codebook and bias:
        :math:`\lceil (n \lceil\log_2 k\rceil + k\,b + n_b\,b) / 8 \rceil`.

        Parameters
        ----------
        bits : int >= 1 or None
            Bits b of a codebook entry and a bias entry (None: their dtype's width, 32 for float32).
            Each index takes :math:`\lceil\log_2 k\rceil` bits whatever its array dtype.
        nonzero : bool
            Count only the weights whose shared value is nonzero (their indices), the nonzero
            centroids and the nonzero bias entries, as a sparse format stores them.
        """
        if bits is not None:
            bits = check_int("bits", bits, low=1)
        nonzero = check_bool("nonzero", nonzero)
        xp = B.namespace(self._params["codebook"].data)
        if nonzero:
            n_idx = int(xp.count_nonzero(self.weight()))
        else:
            n_idx = math.prod(tuple(self._buffers["indices"].shape))
        total = n_idx * index_bits(self.k)
        for p in self._params.values():
            count = int(xp.count_nonzero(p.data)) if nonzero else math.prod(p.shape)
            total += count * (p.data.dtype.itemsize * 8 if bits is None else bits)
        return -(-total // 8)

    def load_state_dict(self, state):
        """As :meth:`Module.load_state_dict`; indices outside [0, k) are refused (ValueError), checked
        before they are cast to the buffer's dtype (an int64 300 would wrap to a uint8 44)."""
        indices = state.get("indices") if isinstance(state, Mapping) else None
        if hasattr(indices, "dtype") and B.dtype_name(indices).startswith(("int", "uint")) and indices.ndim:
            xp = B.namespace(indices)
            idx = xp.astype(xp.reshape(indices, (-1,)), xp.int64)
            low, high = (int(xp.min(idx)), int(xp.max(idx))) if idx.shape[0] else (0, 0)
            if low < 0 or high >= self.k:
                raise ValueError(f"state_dict['indices'] must lie in [0, {self.k}) (k = {self.k} centroids), "
                                 f"got values in [{low}, {high}]")
        return super().load_state_dict(state)

    def to(self, backend):
        """Move codebook, bias and indices (and the wrapped layer) to ``backend``, in place."""
        super().to(backend)
        self._inner.to(backend)            # its bias is this layer's bias (moved once more: a no-op)
        return self

    def extra_repr(self):
        return f"k={self.k}, {type(self._inner).__name__}({self._inner.extra_repr()})"

