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


def linear_backward(dout: Any, cache):
    r"""Gradients of :func:`linear_forward`.

    :math:`\partial x = \partial y\, W`, :math:`\partial W = \partial y^\top x`,
    :math:`\partial b = \sum_n \partial y_n`.

    Returns
    -------
    dx : (N, in), dweight : (out, in), dbias : (out,) or None
    """
    x, weight, has_bias = cache
    xp = B.namespace(dout)
    dx = dout @ weight
    dweight = dout.T @ x
    dbias = xp.sum(dout, axis=0) if has_bias else None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- im2col
def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling: ``(size + 2*padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x: Any, padding: int) -> Any:
    if padding == 0:
        return x
    xp = B.namespace(x)
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype,
                   device=B.device_of(x) if B.is_torch(x) else None)
    out[:, :, padding:padding + h, padding:padding + w] = x
    return out


def im2col(x: Any, kh: int, kw: int, stride: int = 1, padding: int = 0):
    """Unfold an image batch into one row per output position.

    Parameters
    ----------
    x : (N, C, H, W)

    Returns
    -------
    cols : (N*Ho*Wo, C*kh*kw)
        Row ``(n, i, j)`` holds the receptive field of output pixel (i, j) of image n,
        ordered (c, di, dj) like a flattened conv weight.
    (ho, wo) : the output height and width
    """
    xp = B.namespace(x)
    windows = B.sliding_windows(_pad(x, padding), kh, kw, stride)   # (N, C, Ho, Wo, kh, kw)
    n, c, ho, wo = windows.shape[:4]
    cols = xp.reshape(xp.permute_dims(windows, (0, 2, 3, 1, 4, 5)), (n * ho * wo, c * kh * kw))
    return cols, (ho, wo)


def col2im(dcols: Any, x_shape: tuple, kh: int, kw: int, stride: int = 1, padding: int = 0) -> Any:
    """Adjoint of :func:`im2col`: add every row back onto the pixels it was read from.

    Overlapping windows add up. Written as kh·kw strided slice-adds, each over the whole
    batch, so it is vectorized on every backend without a scatter.

    Parameters
    ----------
    dcols : (N*Ho*Wo, C*kh*kw)
    x_shape : (N, C, H, W) of the unpadded input

    Returns
    -------
    dx : (N, C, H, W)
    """
    xp = B.namespace(dcols)
    n, c, h, w = x_shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    d6 = xp.permute_dims(xp.reshape(dcols, (n, ho, wo, c, kh, kw)), (0, 3, 1, 2, 4, 5))
    return _fold(d6, x_shape, stride, padding)


def _fold(d6: Any, x_shape: tuple, stride: int, padding: int) -> Any:
    """Sum window gradients ``d6`` (N, C, Ho, Wo, kh, kw) back onto an (N, C, H, W) image."""
    xp = B.namespace(d6)
    n, c, h, w = x_shape
    ho, wo, kh, kw = d6.shape[2:]
    dx = xp.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=d6.dtype,
                  device=B.device_of(d6) if B.is_torch(d6) else None)
    for di in range(kh):
        for dj in range(kw):
            dx[:, :, di:di + stride * (ho - 1) + 1:stride,
               dj:dj + stride * (wo - 1) + 1:stride] += d6[:, :, :, :, di, dj]
    return dx[:, :, padding:padding + h, padding:padding + w] if padding else dx


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
    cols, (ho, wo) = im2col(x, kh, kw, stride, padding)
    out = cols @ xp.reshape(weight, (cout, cin * kh * kw)).T          # (N*Ho*Wo, Cout)
    if bias is not None:
        out += bias
    out = xp.permute_dims(xp.reshape(out, (x.shape[0], ho, wo, cout)), (0, 3, 1, 2))
    return out, (cols, tuple(x.shape), weight, bias is not None, stride, padding)


def conv2d_backward(dout: Any, cache):
    r"""Gradients of :func:`conv2d_forward`.

    With ``X`` the im2col matrix and ``dY`` the output gradient as (N·Ho·Wo, Cout):
    :math:`\partial W = dY^\top X`, :math:`\partial b = \sum dY`,
    :math:`\partial x = \mathrm{col2im}(dY\, W)`.

    Returns
    -------
    dx : (N, C, H, W), dweight : (Cout, C, kh, kw), dbias : (Cout,) or None
    """
    cols, x_shape, weight, has_bias, stride, padding = cache
    xp = B.namespace(dout)
    cout, cin, kh, kw = weight.shape
    d2 = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (-1, cout))   # (N*Ho*Wo, Cout)
    w2 = xp.reshape(weight, (cout, cin * kh * kw))
    dweight = xp.reshape(d2.T @ cols, weight.shape)
    dbias = xp.sum(d2, axis=0) if has_bias else None
    dx = col2im(d2 @ w2, x_shape, kh, kw, stride, padding)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- pooling
def _pool_windows(x: Any, kernel: int, stride: int):
    xp = B.namespace(x)
    windows = B.sliding_windows(x, kernel, kernel, stride)          # (N, C, Ho, Wo, k, k)
    n, c, ho, wo = windows.shape[:4]
    return xp.reshape(windows, (n, c, ho, wo, kernel * kernel))


def maxpool2d_forward(x: Any, kernel: int, stride: int | None = None):
    r"""Max pooling: :math:`y_{n,c,i,j} = \max_{u,v < k} x_{n,c,is+u,js+v}`.

    Returns
    -------
    out : (N, C, Ho, Wo)
    cache : (argmax within each window, input shape, kernel, stride)
    """
    xp = B.namespace(x)
    stride = stride or kernel
    flat = _pool_windows(x, kernel, stride)
    arg = xp.argmax(flat, axis=-1)
    return xp.max(flat, axis=-1), (arg, tuple(x.shape), kernel, stride)


def maxpool2d_backward(dout: Any, cache) -> Any:
    """Route each output gradient to the (first) maximum of its window; returns dx (N, C, H, W)."""
    arg, x_shape, kernel, stride = cache
    xp = B.namespace(dout)
    hit = arg[..., None] == xp.arange(kernel * kernel, device=B.device_of(dout) if B.is_torch(dout) else None)
    d6 = xp.reshape(xp.astype(hit, dout.dtype) * dout[..., None], (*dout.shape, kernel, kernel))
    return _fold(d6, x_shape, stride, 0)


def avgpool2d_forward(x: Any, kernel: int, stride: int | None = None):
    r"""Average pooling: :math:`y_{n,c,i,j} = \frac{1}{k^2}\sum_{u,v<k} x_{n,c,is+u,js+v}`."""
    xp = B.namespace(x)
    stride = stride or kernel
    return xp.mean(_pool_windows(x, kernel, stride), axis=-1), (tuple(x.shape), kernel, stride)


def avgpool2d_backward(dout: Any, cache) -> Any:
    """Spread each output gradient evenly over its window; returns dx (N, C, H, W)."""
    x_shape, kernel, stride = cache
    xp = B.namespace(dout)
    d6 = xp.broadcast_to((dout / (kernel * kernel))[..., None, None], (*dout.shape, kernel, kernel))
    return _fold(d6, x_shape, stride, 0)


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
