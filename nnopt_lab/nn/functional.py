"""Forward/backward pairs of the network building blocks, from scratch.

Every ``*_forward`` returns ``(out, cache)``; its ``*_backward(dout, cache)`` returns the
gradients with respect to the inputs and parameters, as in CS231n's layers. Layouts follow
torch: Linear weight (out, in), images NCHW, conv weight (Cout, Cin, kh, kw).

All functions run unchanged on numpy arrays and torch tensors (the array API); the only
non-portable pieces, the sliding windows of im2col and scatter-add, come from
:mod:`nnopt_lab.backend`.

See: chapters/01_why_optimize.ipynb (seed §1.2: the baseline models every chapter reuses)
"""
from __future__ import annotations

from typing import Any

from .. import backend as B

__all__ = [
    "linear_forward", "linear_backward", "conv2d_forward", "conv2d_backward",
    "im2col", "col2im", "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
    "avgpool2d_backward", "relu_forward", "relu_backward", "batchnorm_forward",
    "batchnorm_backward", "dropout_forward", "dropout_backward", "softmax",
    "log_softmax", "cross_entropy_forward", "cross_entropy_backward", "conv_output_size",
]


# ----------------------------------------------------------------------------- linear
def linear_forward(x: Any, weight: Any, bias: Any | None = None):
    r"""Affine map :math:`y = x W^\top + b`.

    Parameters
    ----------
    x : (N, in)
    weight : (out, in)
    bias : (out,) or None

    Returns
    -------
    out : (N, out)
    cache : (x, weight)
    """
    B.namespace(x, weight)  # one backend: a numpy/torch mix is a TypeError that says so
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out, (x, weight, bias is not None)


def linear_backward(dout: Any, cache, need_dx: bool = True):
    r"""Gradients of :func:`linear_forward`.

    :math:`\partial x = \partial y\, W`, :math:`\partial W = \partial y^\top x`,
    :math:`\partial b = \sum_n \partial y_n`.

    ``need_dx=False`` skips :math:`\partial x` (returns None): the first layer of a network
    needs no gradient for its input, and it is one of the three matrix products.

    Returns
    -------
    dx : (N, in) or None, dweight : (out, in), dbias : (out,) or None
    """
    x, weight, has_bias = cache
    xp = B.namespace(dout)
    dx = dout @ weight if need_dx else None
    dweight = dout.T @ x
    dbias = xp.sum(dout, axis=0) if has_bias else None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- im2col
def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling: ``(size + 2*padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _flat_geometry(x_shape: tuple, kh: int, kw: int, stride: int, padding: int) -> dict:
    """Sizes of the padded image laid out as one flat row per channel (see :func:`im2col`)."""
    n, c, h, w = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    span = ho * wp                                    # one "wide" output grid: ho rows of wp columns
    length = max(hp * wp, (kh - 1) * wp + (kw - 1) + stride * (span - 1) + 1)
    return dict(n=n, c=c, h=h, w=w, hp=hp, wp=wp, ho=ho, wo=wo, span=span, length=length)


def _offsets(kh: int, kw: int, wp: int) -> list[int]:
    """Flat offset of each kernel tap (di, dj) in a row-major image of width wp."""
    return [di * wp + dj for di in range(kh) for dj in range(kw)]


def im2col(x: Any, kh: int, kw: int, stride: int = 1, padding: int = 0):
    r"""Unfold an image batch into one column per output position, on a *wide* output grid.

    Lay each padded channel out as one flat row of length :math:`H_p W_p`. Then kernel tap
    :math:`(d_i, d_j)` of output pixel :math:`(i, j)` reads flat position
    :math:`d_i W_p + d_j + s\,(i W_p + j)`: for a fixed tap, the whole output grid is ONE
    strided slice of the row. Taking :math:`j` over all :math:`W_p` columns (not only the
    :math:`W_o` valid ones) keeps it a single slice; the extra columns read junk that
    :func:`conv2d_forward` drops. So im2col is kh·kw slice copies, each over the whole batch.

    Parameters
    ----------
    x : (N, C, H, W)

    Returns
    -------
    cols : (C*kh*kw, N*Ho*Wp)
        Rows ordered (c, di, dj) like a flattened conv weight, so that
        ``W.reshape(Cout, -1) @ cols`` is the convolution on the wide grid.
    geometry : dict of the sizes (``ho``, ``wo``, ``wp``, ...), for :func:`col2im`
    """
    xp = B.namespace(x)
    g = _flat_geometry(tuple(x.shape), kh, kw, stride, padding)
    rows = xp.zeros((g["c"], g["n"], g["length"]), dtype=x.dtype,
                    device=B.device_of(x) if B.is_torch(x) else None)   # (C, N, flat padded image)
    # a view (reshape only splits the last axis), so writing the image fills ``rows``
    image = xp.reshape(rows[:, :, :g["hp"] * g["wp"]], (g["c"], g["n"], g["hp"], g["wp"]))
    image[:, :, padding:padding + g["h"], padding:padding + g["w"]] = xp.permute_dims(x, (1, 0, 2, 3))
    stop = stride * (g["span"] - 1) + 1
    taps = [rows[:, :, off:off + stop:stride] for off in _offsets(kh, kw, g["wp"])]
    cols = xp.reshape(xp.stack(taps, axis=1), (g["c"] * kh * kw, g["n"] * g["span"]))
    return cols, g


def col2im(dcols: Any, geometry: dict, kh: int, kw: int, stride: int = 1, padding: int = 0) -> Any:
    """Adjoint of :func:`im2col`: add every column back onto the pixels it was read from.

    Overlapping windows add up. kh·kw strided slice-adds over the flat rows, each over the
    whole batch: vectorized on every backend without a scatter. Columns of the wide grid
    beyond the valid outputs must hold zeros (they do when ``dcols`` comes from zero-padded
    output gradients).

    Parameters
    ----------
    dcols : (C*kh*kw, N*Ho*Wp)
    geometry : the dict :func:`im2col` returned

    Returns
    -------
    dx : (N, C, H, W)
    """
    xp = B.namespace(dcols)
    g = geometry
    taps = xp.reshape(dcols, (g["c"], kh * kw, g["n"], g["span"]))
    rows = xp.zeros((g["c"], g["n"], g["length"]), dtype=dcols.dtype,
                    device=B.device_of(dcols) if B.is_torch(dcols) else None)
    stop = stride * (g["span"] - 1) + 1
    for t, off in enumerate(_offsets(kh, kw, g["wp"])):
        rows[:, :, off:off + stop:stride] += taps[:, t]
    image = xp.reshape(rows[:, :, :g["hp"] * g["wp"]], (g["c"], g["n"], g["hp"], g["wp"]))
    inner = image[:, :, padding:padding + g["h"], padding:padding + g["w"]]
    return xp.permute_dims(inner, (1, 0, 2, 3))


def _window(offset: int, stride: int, count: int) -> slice:
    """The input positions that offset ``offset`` of ``count`` strided windows reads."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _zeros_like_padded(like: Any, x_shape: tuple, padding: int) -> Any:
    xp = B.namespace(like)
    n, c, h, w = x_shape
    return xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=like.dtype,
                    device=B.device_of(like) if B.is_torch(like) else None)


# ----------------------------------------------------------------------------- conv2d
def conv2d_forward(x: Any, weight: Any, bias: Any | None = None, stride: int = 1, padding: int = 0):
    r"""2-D convolution (cross-correlation, as in torch) by im2col and one matrix product.

    .. math:: y_{n,o,i,j} = b_o + \sum_{c,u,v} W_{o,c,u,v}\, x_{n,c,\,i s + u - p,\,j s + v - p}

    Parameters
    ----------
    x : (N, C, H, W)
    weight : (Cout, C, kh, kw)
    bias : (Cout,) or None

    Returns
    -------
    out : (N, Cout, Ho, Wo) with ``Ho = (H + 2p - kh) // s + 1``
    cache : what :func:`conv2d_backward` needs
    """
    xp = B.namespace(x, weight)
    cout, cin, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != cin:
        raise ValueError(f"x must have shape (N, {cin}, H, W) for this weight, got {tuple(x.shape)}")
    cols, g = im2col(x, kh, kw, stride, padding)
    out = xp.reshape(weight, (cout, cin * kh * kw)) @ cols               # (Cout, N*Ho*Wp)
    if bias is not None:
        out += bias[:, None]
    out = xp.reshape(out, (cout, g["n"], g["ho"], g["wp"]))[:, :, :, :g["wo"]]   # drop the wide columns
    out = xp.permute_dims(out, (1, 0, 2, 3))
    return out, (cols, g, weight, bias is not None, stride, padding)


def conv2d_backward(dout: Any, cache, need_dx: bool = True):
    r"""Gradients of :func:`conv2d_forward`.

    With ``X`` the im2col matrix (C·kh·kw, N·Ho·Wp) and ``dY`` the output gradient on the
    same wide grid (Cout, N·Ho·Wp), zero on the extra columns: :math:`\partial W = dY\, X^\top`, :math:`\partial b = \sum dY`,
    :math:`\partial x = \mathrm{col2im}(W^\top dY)`.

    ``need_dx=False`` skips :math:`\partial x` (returns None), as for the network's input.

    Returns
    -------
    dx : (N, C, H, W) or None, dweight : (Cout, C, kh, kw), dbias : (Cout,) or None
    """
    cols, g, weight, has_bias, stride, padding = cache
    xp = B.namespace(dout)
    cout, cin, kh, kw = weight.shape
    d4 = xp.zeros((cout, g["n"], g["ho"], g["wp"]), dtype=dout.dtype,
                  device=B.device_of(dout) if B.is_torch(dout) else None)
    d4[:, :, :, :g["wo"]] = xp.permute_dims(dout, (1, 0, 2, 3))         # zeros on the wide columns
    d2 = xp.reshape(d4, (cout, -1))                                        # (Cout, N*Ho*Wp)
    w2 = xp.reshape(weight, (cout, cin * kh * kw))
    dweight = xp.reshape(d2 @ cols.T, weight.shape)
    dbias = xp.sum(d2, axis=1) if has_bias else None
    dx = col2im(w2.T @ d2, g, kh, kw, stride, padding) if need_dx else None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- pooling
def _pool_slices(x: Any, kernel: int, stride: int):
    """The k·k strided views ``x[:, :, di::s, dj::s]`` (each (N, C, Ho, Wo)), with their slices."""
    ho = conv_output_size(x.shape[2], kernel, stride, 0)
    wo = conv_output_size(x.shape[3], kernel, stride, 0)
    for di in range(kernel):
        for dj in range(kernel):
            rows, cols = _window(di, stride, ho), _window(dj, stride, wo)
            yield (rows, cols), x[:, :, rows, cols]


def maxpool2d_forward(x: Any, kernel: int, stride: int | None = None):
    r"""Max pooling: :math:`y_{n,c,i,j} = \max_{u,v < k} x_{n,c,is+u,js+v}`.

    Computed as the elementwise maximum of the k² strided views of x (one per window
    offset), so every operation runs over the whole batch.

    Returns
    -------
    out : (N, C, Ho, Wo)
    cache : (x, out, kernel, stride)
    """
    xp = B.namespace(x)
    stride = stride or kernel
    out = None
    for _, view in _pool_slices(x, kernel, stride):
        out = view if out is None else xp.maximum(out, view)
    return out, (x, out, kernel, stride)


def maxpool2d_backward(dout: Any, cache) -> Any:
    """Route each output gradient to the first maximum of its window (torch's choice on ties).

    Walk the window offsets in order; at each, the gradient not yet routed goes to the
    positions that hold the maximum, so a tie (common after ReLU: a window of zeros) gives
    it to the first one only. Returns dx (N, C, H, W).
    """
    x, out, kernel, stride = cache
    xp = B.namespace(dout)
    dx = xp.zeros(tuple(x.shape), dtype=dout.dtype, device=B.device_of(dout) if B.is_torch(dout) else None)
    remaining = dout
    for (rows, cols), view in _pool_slices(x, kernel, stride):
        routed = remaining * (view == out)
        if stride < kernel:                 # overlapping windows share pixels: accumulate
            dx[:, :, rows, cols] += routed
        else:
            dx[:, :, rows, cols] = routed
        remaining = remaining - routed
    return dx


def avgpool2d_forward(x: Any, kernel: int, stride: int | None = None):
    r"""Average pooling: :math:`y_{n,c,i,j} = \frac{1}{k^2}\sum_{u,v<k} x_{n,c,is+u,js+v}`."""
    stride = stride or kernel
    total = None
    for _, view in _pool_slices(x, kernel, stride):
        total = view if total is None else total + view
    return total * (1.0 / (kernel * kernel)), (tuple(x.shape), kernel, stride)


def avgpool2d_backward(dout: Any, cache) -> Any:
    """Spread each output gradient evenly over its window; returns dx (N, C, H, W)."""
    x_shape, kernel, stride = cache
    dx = _zeros_like_padded(dout, x_shape, 0)
    share = dout * (1.0 / (kernel * kernel))
    for (rows, cols), _ in _pool_slices(dx, kernel, stride):
        dx[:, :, rows, cols] += share
    return dx


# ----------------------------------------------------------------------------- activations
def relu_forward(x: Any):
    r""":math:`\mathrm{relu}(x) = \max(x, 0)`; returns (out, cache)."""
    xp = B.namespace(x)
    out = xp.maximum(x, 0.0)
    return out, out


def relu_backward(dout: Any, cache) -> Any:
    """Pass the gradient where the output was positive (the subgradient at 0 is 0, as in torch)."""
    return dout * (cache > 0)


# ----------------------------------------------------------------------------- batch norm
def batchnorm_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                      training: bool, momentum: float = 0.1, eps: float = 1e-5):
    r"""Batch normalization over N (1-D: x is (N, F)) or over N, H, W (2-D: x is (N, C, H, W)).

    .. math:: y = \gamma\,\frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} + \beta

    In training the batch statistics are used (biased variance) and the running statistics
    are updated *in place* as torch does: ``r ← (1 - momentum)·r + momentum·stat`` with the
    unbiased variance ``σ²·m/(m-1)``. In evaluation the running statistics are used.

    Returns
    -------
    out : same shape as x
    cache : what :func:`batchnorm_backward` needs
    """
    xp = B.namespace(x)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    if training:
        m = x.shape[0] if x.ndim == 2 else x.shape[0] * x.shape[2] * x.shape[3]
        if m < 2:
            raise ValueError(f"batch norm in training needs more than 1 value per channel, got {m}")
        mean = xp.mean(x, axis=axes)
        var = xp.mean((x - xp.reshape(mean, shape)) ** 2, axis=axes)
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
        running_var[...] = (1.0 - momentum) * running_var + momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = (x - xp.reshape(mean, shape)) * xp.reshape(inv_std, shape)
    out = xhat * xp.reshape(gamma, shape) + xp.reshape(beta, shape)
    return out, (xhat, inv_std, gamma, axes, shape, training)


def batchnorm_backward(dout: Any, cache):
    r"""Gradients of :func:`batchnorm_forward`.

    In training, with :math:`\hat x` the normalized input and m values per channel:

    .. math:: \partial x = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}
              \Big(m\,\partial y - \sum \partial y - \hat x \sum \partial y\,\hat x\Big)

    Returns
    -------
    dx, dgamma, dbeta
    """
    xhat, inv_std, gamma, axes, shape, training = cache
    xp = B.namespace(dout)
    dbeta = xp.sum(dout, axis=axes)
    dgamma = xp.sum(dout * xhat, axis=axes)
    scale = xp.reshape(gamma * inv_std, shape)
    if not training:
        return dout * scale, dgamma, dbeta
    m = 1
    for a in axes:
        m *= dout.shape[a]
    dx = scale * (dout - xp.reshape(dbeta, shape) / m - xhat * xp.reshape(dgamma, shape) / m)
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- dropout
def dropout_forward(x: Any, p: float, training: bool):
    r"""Inverted dropout: zero each value with probability p, scale survivors by 1/(1-p).

    The mask is drawn from the project's seeded generator (:func:`nnopt_lab.backend.rng`),
    so one seed gives the same mask on every backend. Identity in evaluation.
    """
    if not training or p == 0.0:
        return x, None
    keep = B.asarray(B.rng().random(tuple(x.shape)) >= p, x) * (1.0 / (1.0 - p))
    return x * keep, keep


def dropout_backward(dout: Any, cache) -> Any:
    """Gradient of :func:`dropout_forward`: the same mask and scale."""
    return dout if cache is None else dout * cache


# ----------------------------------------------------------------------------- losses
def log_softmax(logits: Any) -> Any:
    r"""Stable :math:`\log\mathrm{softmax}(z)_k = z_k - \max z - \log\sum_j e^{z_j - \max z}`."""
    xp = B.namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(logits: Any) -> Any:
    r"""Stable :math:`\mathrm{softmax}(z)_k = e^{z_k - \max z} / \sum_j e^{z_j - \max z}`."""
    xp = B.namespace(logits)
    e = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _one_hot(labels: Any, k: int, like: Any) -> Any:
    xp = B.namespace(like)
    classes = xp.arange(k, device=B.device_of(like) if B.is_torch(like) else None)
    return xp.astype(labels[:, None] == classes[None, :], like.dtype)


def cross_entropy_forward(logits: Any, labels: Any):
    r"""Mean softmax cross-entropy, stable for logits of any size (±1e4 included).

    .. math:: L = \frac{1}{N}\sum_n \Big(\log\sum_k e^{z_{nk}} - z_{n,y_n}\Big)

    Parameters
    ----------
    logits : (N, K) float
    labels : (N,) integer class indices in [0, K)

    Returns
    -------
    loss : 0-d array
    cache : (probabilities, one-hot labels)
    """
    xp = B.namespace(logits, labels)
    if logits.ndim != 2 or labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    logp = log_softmax(logits)
    onehot = _one_hot(labels, logits.shape[1], logits)
    loss = -xp.sum(logp * onehot) / logits.shape[0]
    return loss, (xp.exp(logp), onehot)


def cross_entropy_backward(cache, dloss: float = 1.0) -> Any:
    r""":math:`\partial L/\partial z = (\mathrm{softmax}(z) - \mathrm{onehot}(y)) / N`."""
    probs, onehot = cache
    return (probs - onehot) * (dloss / probs.shape[0])
