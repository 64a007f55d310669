"""Forward/backward pairs of the network building blocks, from scratch.

Every ``*_forward`` returns ``(out, cache)``; its ``*_backward(dout, cache)`` returns the
gradients with respect to the inputs and parameters, as in CS231n's layers. Layouts follow
torch: Linear weight (out, in), images NCHW, conv weight (Cout, Cin/groups, kh, kw).

A cache is a tuple whose first item names the function that made it (``("conv2d", ...)``):
a backward given anything else (None, another function's cache) raises an error naming
``cache`` instead of failing somewhere inside.

Every public function checks its arguments: wrong kinds raise ``TypeError``, values out of
range ``ValueError``, each naming the argument (``stride must be an int >= 1 or a tuple of
such ints, got 0``).

All functions run unchanged on numpy arrays and torch tensors (the array API); the only
non-portable pieces come from :mod:`nnopt_lab.backend`.

See: chapters/01_why_optimize.ipynb (seed §1.2: the baseline models every chapter reuses)
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from ..validation import check_array, check_bool, check_int, check_number, check_probability, check_shape

__all__ = [
    "linear_forward", "linear_backward", "conv2d_forward", "conv2d_backward",
    "im2col", "col2im", "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
    "avgpool2d_backward", "relu_forward", "relu_backward", "batchnorm_forward",
    "batchnorm_backward", "dropout_forward", "dropout_backward", "softmax",
    "log_softmax", "cross_entropy_forward", "cross_entropy_backward", "conv_output_size",
]


# ----------------------------------------------------------------------------- argument checks
def _check_array(name: str, x: Any, ndim: int | None = None, layout: str = "", like: Any = None,
                 floating: bool = True, like_name: str = "x") -> None:
    """``x`` must be a numpy array or torch tensor (on the backend, device and dtype of
    ``like``, the array called ``like_name``), with ``ndim`` axes and, when ``floating``, a
    float dtype."""
    if type(x) not in _ARRAY_TYPES or (ndim is not None and x.ndim != ndim):   # cheap checks first
        check_array(name, x, ndim, layout)             # the shared wording of both errors
        _ARRAY_TYPES.add(type(x))
    if like is not None and (type(x) is not type(like) or (B.is_torch(x) and x.device != like.device)) \
            and not B.same_kind(x, like):                # (a subclass, a torch Parameter, is the same kind)
        raise TypeError(f"{name} is on {B.backend_of(x).name} ({B.device_of(x)}) but {like_name} is on "
                        f"{B.backend_of(like).name} ({B.device_of(like)}): backends mixed in one call; move "
                        f"the arrays to one backend with nnopt_lab.backend.to_backend(...)")
    if floating and not _is_float(x):
        raise TypeError(f"{name} must be a float array, got dtype {B.dtype_name(x)}")
    if like is not None and floating and x.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {B.dtype_name(x)} but {like_name} is {B.dtype_name(like)}; convert "
                        f"one of them (numpy would silently upcast, torch refuses)")


MAX_ELEMENTS = 2 ** 40        # more values than any array here may hold (a clear error before allocating)
_ARRAY_TYPES: set = set()     # types B.namespace accepted (numpy array, torch tensor, ...)
_FLOAT_DTYPES: dict = {}      # dtype -> is it a float dtype (memoized: dtype_name builds a string)
_INTEGER_DTYPES: dict = {}    # dtype -> is it a (signed or unsigned) integer dtype


def _is_float(x: Any) -> bool:
    kind = _FLOAT_DTYPES.get(x.dtype)
    if kind is None:
        kind = _FLOAT_DTYPES[x.dtype] = B.dtype_name(x).startswith(("float", "bfloat"))
    return kind


def _is_integer(x: Any) -> bool:
    kind = _INTEGER_DTYPES.get(x.dtype)
    if kind is None:
        kind = _INTEGER_DTYPES[x.dtype] = B.dtype_name(x).startswith(("int", "uint"))
    return kind


def _check_optional(name: str, x: Any, shape: tuple, like: Any) -> None:
    """``x`` is None, or an array of exactly ``shape`` on ``like``'s backend and dtype."""
    if x is None:
        return
    _check_array(name, x, len(shape), like=like)
    if x.shape != shape:                               # a torch.Size is a tuple
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")


def _check_dout(dout: Any, shape: tuple, like: Any) -> None:
    """The upstream gradient must have the forward output's shape, backend and dtype."""
    _check_array("dout", dout, len(shape), like=like, like_name="the forward's arrays")
    if dout.shape != shape:
        raise ValueError(f"dout must have the forward output's shape {tuple(shape)}, got {tuple(dout.shape)}")


def _open_cache(cache: Any, kind: str, size: int) -> tuple:
    """The ``size`` items of a cache made by ``{kind}_forward``; a clear error for anything else."""
    made_here = f"cache must be the cache that {kind}_forward returned"
    if not isinstance(cache, tuple):
        raise TypeError(f"{made_here} (a tuple starting with {kind!r}), got {type(cache).__name__}; "
                        f"call {kind}_forward before {kind}_backward")
    tag = cache[0] if cache and isinstance(cache[0], str) else None
    if tag != kind or len(cache) != size + 1:
        origin = f"the cache of {tag}_forward" if tag else f"a tuple of {len(cache)} items"
        raise ValueError(f"{made_here} (a tuple of {size + 1} items starting with {kind!r}), got {origin}")
    return cache[1:]


def _pair(name: str, value: Any, low: int) -> tuple[int, int]:
    """An int or a pair of ints, each ``>= low``, as a pair (torch's ``_pair``)."""
    if type(value) is int and value >= low:            # the common cases, without the general check
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int \
            and value[0] >= low and value[1] >= low:
        return value
    return check_shape(name, value, length=2, low=low)


def _int(name: str, value: Any, low: int) -> int:
    """check_int with a fast path for a plain int."""
    return value if type(value) is int and value >= low else check_int(name, value, low=low)


def _bool(name: str, value: Any) -> bool:
    """check_bool with a fast path for a plain bool."""
    return value if value is True or value is False else check_bool(name, value)


def _show(pair: tuple) -> str:
    return str(pair[0]) if len(pair) == 1 else str(tuple(pair))


def _output_shape(size: tuple, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple,
                  kernel_name: str = "kernel", input_name: str = "x") -> tuple:
    """Output lengths ``(size + 2p - d(k-1) - 1) // s + 1`` per axis; ValueError where none fits.

    ``kernel_name`` and ``input_name`` are the caller's names for the two sizes compared.
    """
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    padded = tuple(n + 2 * p for n, p in zip(size, padding))
    if any(span > n for span, n in zip(spans, padded)):
        dilated = "" if set(dilation) == {1} else f" with dilation {_show(dilation)}"
        sizes = f"{input_name}'s height and width" if len(size) == 2 else input_name
        raise ValueError(f"{kernel_name} {_show(kernel)}{dilated} spans {_show(spans)}, more than {sizes} "
                         f"{_show(size)} padded by {_show(padding)} to {_show(padded)}: no output position fits")
    return tuple((n - span) // s + 1 for n, span, s in zip(padded, spans, stride))


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    r"""Output length of a convolution or pooling along one axis.

    .. math:: n_o = \left\lfloor \frac{n + 2p - d\,(k - 1) - 1}{s} \right\rfloor + 1

    Raises
    ------
    ValueError
        When the (dilated) kernel is larger than the padded input: no output position fits.

    See: chapters/01_why_optimize.ipynb
    """
    args = (check_int("size", size, low=1), check_int("kernel", kernel, low=1), check_int("stride", stride, low=1),
            check_int("padding", padding, low=0), check_int("dilation", dilation, low=1))
    return _output_shape(*((a,) for a in args), input_name="size")[0]


def _zeros(shape: tuple, like: Any) -> Any:
    """Zeros of ``like``'s backend, device and dtype."""
    return B.namespace(like).zeros(shape, dtype=like.dtype, device=B.device(like))


# ----------------------------------------------------------------------------- linear
def linear_forward(x: Any, weight: Any, bias: Any | None = None):
    r"""Affine map :math:`y = x W^\top + b`.

    Parameters
    ----------
    x : (N, in) float
    weight : (out, in), same backend and dtype as x
    bias : (out,) or None

    Returns
    -------
    out : (N, out)
    cache : ``("linear", x, weight, has_bias)`` -- x and W for the gradients, and whether
        there is a bias to give one
    """
    _check_array("x", x, 2, "(N, in)")
    _check_array("weight", weight, 2, "(out, in)", like=x)
    if 0 in weight.shape:
        raise ValueError(f"weight must have at least one entry on every axis (out, in), "
                         f"got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x must have shape (N, {weight.shape[1]}) for weight {tuple(weight.shape)}, "
                         f"got {tuple(x.shape)}")
    _check_optional("bias", bias, (weight.shape[0],), x)
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out, ("linear", x, weight, bias is not None)


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
    x, weight, has_bias = _open_cache(cache, "linear", 3)
    _check_dout(dout, (x.shape[0], weight.shape[0]), x)
    need_dx = _bool("need_dx", need_dx)
    xp = B.namespace(dout)
    dx = dout @ weight if need_dx else None
    dweight = dout.T @ x
    dbias = xp.sum(dout, axis=0) if has_bias else None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- im2col
def _flat_geometry(x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple) -> dict:
    """Sizes of the padded image laid out as one flat row per channel (see :func:`im2col`).

    ``row`` is the width of one image row in the flat layout: the padded width, widened (with
    zero columns on the right) until one output-row step ``sh·row`` is a whole number of
    column steps ``sw``; ``wq = sh·row / sw`` is then the width of the wide output grid.
    Square strides need no widening (``row = wp``, ``wq = wp``). Along an axis with a single
    output position the stride reads nothing and counts as 1 (a huge stride widens nothing).
    """
    n, c, h, w = x_shape
    (kh, kw), (ph, pw), (dh, dw) = kernel, padding, dilation
    ho, wo = _output_shape((h, w), kernel, stride, padding, dilation, "kernel (kh, kw)")
    sh, sw = (stride[0] if ho > 1 else 1), (stride[1] if wo > 1 else 1)
    stride = (sh, sw)
    hp, wp = h + 2 * ph, w + 2 * pw
    if n * c * hp * wp > MAX_ELEMENTS:
        raise ValueError(f"padding {_show(padding)} pads x to {hp}×{wp} per channel, {n * c * hp * wp} values "
                         f"in all: more than {MAX_ELEMENTS} (2**40)")
    step = sw // math.gcd(sh, sw)                      # row must be a multiple of this
    row = -(-wp // step) * step
    wq = sh * row // sw                                # columns of the wide output grid, >= wo
    span = ho * wq
    offsets = [di * dh * row + dj * dw for di in range(kh) for dj in range(kw)]
    length = max(hp * row, offsets[-1] + sw * (span - 1) + 1)
    return dict(n=n, c=c, h=h, w=w, hp=hp, row=row, ho=ho, wo=wo, wq=wq, span=span, length=length,
                offsets=offsets, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def im2col(x: Any, kh: int, kw: int, stride: int | tuple = 1, padding: int | tuple = 0,
           dilation: int | tuple = 1):
    r"""Unfold an image batch into one column per output position, on a *wide* output grid.

    Lay each padded channel out as one flat row (image rows of width :math:`R` one after
    the other). Kernel tap :math:`(d_i, d_j)` of output pixel :math:`(i, j)` reads flat
    position :math:`d_i \delta_h R + d_j \delta_w + s_h i R + s_w j` (δ: dilation). With
    :math:`R` chosen so that :math:`s_h R = s_w W_q`, that is :math:`s_w (i W_q + j)` past
    the tap's offset: for a fixed tap, the whole output grid is ONE strided slice of the row.
    Taking :math:`j` over all :math:`W_q` columns (not only the :math:`W_o` valid ones) keeps
    it a single slice; the extra columns read junk that :func:`conv2d_forward` drops. So
    im2col is kh·kw slice copies, each over the whole batch. (Square strides: :math:`R = W_q
    = W_p`, the padded width.)

    Parameters
    ----------
    x : (N, C, H, W)
    kh, kw : int >= 1, the kernel's height and width
    stride, dilation : int >= 1 or pair; padding : int >= 0 or pair

    Returns
    -------
    cols : (C*kh*kw, N*Ho*Wq)
        Rows ordered (c, di, dj) like a flattened conv weight, so that
        ``W.reshape(Cout, -1) @ cols`` is the convolution on the wide grid.
    geometry : dict of the sizes (``ho``, ``wo``, ``wq``, ...), for :func:`col2im`

    See: chapters/01_why_optimize.ipynb
    """
    _check_array("x", x, 4, "(N, C, H, W)", floating=False)
    kernel = (_int("kh", kh, 1), _int("kw", kw, 1))
    g = _flat_geometry(tuple(x.shape), kernel, _pair("stride", stride, 1), _pair("padding", padding, 0),
                       _pair("dilation", dilation, 1))
    xp = B.namespace(x)
    (ph, pw), sw = g["padding"], g["stride"][1]
    rows = _zeros((g["c"], g["n"], g["length"]), x)                      # (C, N, flat padded image)
    # a view (reshape only splits the last axis), so writing the image fills ``rows``
    image = xp.reshape(rows[:, :, :g["hp"] * g["row"]], (g["c"], g["n"], g["hp"], g["row"]))
    image[:, :, ph:ph + g["h"], pw:pw + g["w"]] = xp.permute_dims(x, (1, 0, 2, 3))
    stop = sw * (g["span"] - 1) + 1
    taps = [rows[:, :, off:off + stop:sw] for off in g["offsets"]]
    cols = xp.reshape(xp.stack(taps, axis=1), (g["c"] * kh * kw, g["n"] * g["span"]))
    return cols, g


def col2im(dcols: Any, geometry: dict) -> Any:
    """Adjoint of :func:`im2col`: add every column back onto the pixels it was read from.

    Overlapping windows add up. kh·kw strided slice-adds over the flat rows, each over the
    whole batch: vectorized on every backend without a scatter. Columns of the wide grid
    beyond the valid outputs must hold zeros (they do when ``dcols`` comes from zero-padded
    output gradients).

    Parameters
    ----------
    dcols : (C*kh*kw, N*Ho*Wq)
    geometry : the dict :func:`im2col` returned (kernel, stride, padding, dilation, sizes)

    Returns
    -------
    dx : (N, C, H, W)

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(geometry, dict) or "offsets" not in geometry:
        raise TypeError(f"geometry must be the dict that im2col returned, got {type(geometry).__name__}")
    g = geometry
    taps_count = len(g["offsets"])
    _check_array("dcols", dcols, 2, "(C*kh*kw, N*Ho*Wq)", floating=False)
    if tuple(dcols.shape) != (g["c"] * taps_count, g["n"] * g["span"]):
        raise ValueError(f"dcols must have shape {(g['c'] * taps_count, g['n'] * g['span'])} for this geometry, "
                         f"got {tuple(dcols.shape)}")
    xp = B.namespace(dcols)
    (ph, pw), sw = g["padding"], g["stride"][1]
    taps = xp.reshape(dcols, (g["c"], taps_count, g["n"], g["span"]))
    rows = _zeros((g["c"], g["n"], g["length"]), dcols)
    stop = sw * (g["span"] - 1) + 1
    for t, off in enumerate(g["offsets"]):
        rows[:, :, off:off + stop:sw] += taps[:, t]
    image = xp.reshape(rows[:, :, :g["hp"] * g["row"]], (g["c"], g["n"], g["hp"], g["row"]))
    inner = image[:, :, ph:ph + g["h"], pw:pw + g["w"]]
    return xp.permute_dims(inner, (1, 0, 2, 3))


# ----------------------------------------------------------------------------- conv2d
def _check_conv(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any):
    """Shapes and settings of a (grouped) convolution; returns stride, padding, dilation as pairs
    and groups as an int."""
    _check_array("x", x, 4, "(N, C, H, W)")
    _check_array("weight", weight, 4, "(Cout, Cin/groups, kh, kw)", like=x)
    groups = _int("groups", groups, 1)
    if 0 in weight.shape:
        raise ValueError(f"weight must have at least one entry on every axis (Cout, Cin/groups, kh, kw), "
                         f"got shape {tuple(weight.shape)}")
    cout, cin_per_group = weight.shape[0], weight.shape[1]
    if cout % groups:
        raise ValueError(f"groups must divide the out-channels {cout} of weight {tuple(weight.shape)}, got {groups}")
    if x.shape[1] != cin_per_group * groups:
        raise ValueError(f"x must have shape (N, {cin_per_group * groups}, H, W) for weight {tuple(weight.shape)} "
                         f"and groups={groups}, got {tuple(x.shape)}")
    _check_optional("bias", bias, (cout,), x)
    stride, padding, dilation = _pair("stride", stride, 1), _pair("padding", padding, 0), _pair("dilation", dilation, 1)
    _output_shape(tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation, "weight's kernel (kh, kw)")
    return stride, padding, dilation, groups


def _grouped(a: Any, groups: int) -> Any:
    """(G·m, k) -> (G, m, k): the rows of each group as one matrix of a batch."""
    return B.namespace(a).reshape(a, (groups, a.shape[0] // groups, a.shape[1]))


def _swap_last(a: Any) -> Any:
    """Transpose the last two axes of a 3-D array (``.T`` is only for 2-D)."""
    return B.namespace(a).permute_dims(a, (0, 2, 1))


def _outer_or_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for 3-D stacks; with an inner size of 1 (depthwise, one output per group) it is an
    outer product, computed as a broadcast product (the same numbers; numpy's matmul is several
    times slower there)."""
    return a * b if a.shape[-1] == 1 else a @ b


def conv2d_forward(x: Any, weight: Any, bias: Any | None = None, stride: int | tuple = 1,
                   padding: int | tuple = 0, dilation: int | tuple = 1, groups: int = 1):
    r"""2-D convolution (cross-correlation, as in torch) by im2col and one matrix product.

    .. math:: y_{n,o,i,j} = b_o + \sum_{c \in G(o)} \sum_{u,v} W_{o,c,u,v}\,
              x_{n,c,\,i s_h + u \delta_h - p_h,\,j s_w + v \delta_w - p_w}

    With ``groups`` g, input and output channels are cut into g groups and output channel
    o reads only its group G(o) of C/g input channels (g = C: depthwise). The product is
    then ONE batched matrix product over the groups: (g, Cout/g, C/g·kh·kw) @
    (g, C/g·kh·kw, N·Ho·Wq).

    Parameters
    ----------
    x : (N, C, H, W) float
    weight : (Cout, C/groups, kh, kw), same backend and dtype
    bias : (Cout,) or None
    stride, dilation : int >= 1 or pair (s_h, s_w), (δ_h, δ_w)
    padding : int >= 0 or pair (p_h, p_w), zeros on both sides
    groups : int >= 1 dividing C and Cout

    Returns
    -------
    out : (N, Cout, Ho, Wo) with ``Ho = (H + 2p_h - δ_h (kh - 1) - 1) // s_h + 1``
    cache : what :func:`conv2d_backward` needs

    See: chapters/01_why_optimize.ipynb
    """
    stride, padding, dilation, groups = _check_conv(x, weight, bias, stride, padding, dilation, groups)
    xp = B.namespace(x)
    cout, cin_g, kh, kw = weight.shape
    cols, g = im2col(x, kh, kw, stride, padding, dilation)               # (C*kh*kw, N*Ho*Wq)
    w2 = xp.reshape(weight, (cout, cin_g * kh * kw))
    if groups == 1:
        out = w2 @ cols                                                   # (Cout, N*Ho*Wq)
    else:
        out = xp.reshape(_grouped(w2, groups) @ _grouped(cols, groups), (cout, -1))
    if bias is not None:
        out += bias[:, None]
    out = xp.reshape(out, (cout, g["n"], g["ho"], g["wq"]))[:, :, :, :g["wo"]]   # drop the wide columns
    out = xp.permute_dims(out, (1, 0, 2, 3))
    return out, ("conv2d", cols, g, weight, bias is not None, groups)


def conv2d_backward(dout: Any, cache, need_dx: bool = True):
    r"""Gradients of :func:`conv2d_forward`.

    With ``X`` the im2col matrix (C·kh·kw, N·Ho·Wq) and ``dY`` the output gradient on the
    same wide grid (Cout, N·Ho·Wq), zero on the extra columns, per group:
    :math:`\partial W = dY\, X^\top`, :math:`\partial b = \sum dY`,
    :math:`\partial x = \mathrm{col2im}(W^\top dY)`.

    ``need_dx=False`` skips :math:`\partial x` (returns None), as for the network's input.

    Returns
    -------
    dx : (N, C, H, W) or None, dweight : (Cout, C/groups, kh, kw), dbias : (Cout,) or None

    See: chapters/01_why_optimize.ipynb
    """
    cols, g, weight, has_bias, groups = _open_cache(cache, "conv2d", 5)
    cout = weight.shape[0]
    _check_dout(dout, (g["n"], cout, g["ho"], g["wo"]), weight)
    need_dx = _bool("need_dx", need_dx)
    xp = B.namespace(dout)
    d4 = _zeros((cout, g["n"], g["ho"], g["wq"]), dout)
    d4[:, :, :, :g["wo"]] = xp.permute_dims(dout, (1, 0, 2, 3))         # zeros on the wide columns
    d2 = xp.reshape(d4, (cout, -1))                                        # (Cout, N*Ho*Wq)
    w2 = xp.reshape(weight, (cout, -1))
    dbias = xp.sum(d2, axis=1) if has_bias else None
    if groups == 1:
        dweight = xp.reshape(d2 @ cols.T, weight.shape)
        dcols = w2.T @ d2 if need_dx else None
    else:
        d3, c3 = _grouped(d2, groups), _grouped(cols, groups)
        dweight = xp.reshape(d3 @ _swap_last(c3), weight.shape)
        dcols = xp.reshape(_outer_or_matmul(_swap_last(_grouped(w2, groups)), d3), (cols.shape[0], -1)) \
            if need_dx else None
    dx = col2im(dcols, g) if need_dx else None
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- pooling
def _check_pool(x: Any, kernel: Any, stride: Any, integers: bool = False) -> tuple:
    """x (N, C, H, W) float (or, with ``integers``, integer), kernel and stride (default: kernel) as
    pairs; output (Ho, Wo)."""
    _check_array("x", x, 4, "(N, C, H, W)", floating=not integers)
    if integers and not (_is_float(x) or _is_integer(x)):
        raise TypeError(f"x must be a float or integer array, got dtype {B.dtype_name(x)}")
    kernel = _pair("kernel", kernel, 1)
    stride = kernel if stride is None else _pair("stride", stride, 1)
    out_hw = _output_shape(tuple(x.shape[2:]), kernel, stride, (0, 0), (1, 1), "kernel")
    stride = tuple(s if n > 1 else 1 for s, n in zip(stride, out_hw))    # one window: the stride reads nothing
    return kernel, stride, out_hw


def _window(offset: int, stride: int, count: int) -> slice:
    """The input positions that offset ``offset`` of ``count`` strided windows reads."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _pool_slices(x: Any, kernel: tuple, stride: tuple, out_hw: tuple):
    """The kh·kw strided views ``x[:, :, di::sh, dj::sw]`` (each (N, C, Ho, Wo)), with their slices."""
    for di in range(kernel[0]):
        for dj in range(kernel[1]):
            rows, cols = _window(di, stride[0], out_hw[0]), _window(dj, stride[1], out_hw[1])
            yield (rows, cols), x[:, :, rows, cols]


def maxpool2d_forward(x: Any, kernel: int | tuple, stride: int | tuple | None = None):
    r"""Max pooling: :math:`y_{n,c,i,j} = \max_{u<k_h,\,v<k_w} x_{n,c,i s_h+u,\,j s_w+v}`.

    Computed as the elementwise maximum of the kh·kw strided views of x (one per window
    offset), so every operation runs over the whole batch. No padding. Integer arrays (the
    uint8 codes of integer inference) are pooled in their own dtype: the maximum of codes is
    the code of the maximum, as the map :math:`q \mapsto S(q - z)` is increasing.

    Parameters
    ----------
    x : (N, C, H, W) float or integer (no gradient for integers: :func:`maxpool2d_backward` refuses them)
    kernel : int >= 1 or pair (kh, kw)
    stride : int >= 1, pair or None (= kernel)

    Returns
    -------
    out : (N, C, Ho, Wo), ``Ho = (H - kh) // sh + 1``
    cache : ``("maxpool2d", x, out, kernel, stride)``

    See: chapters/01_why_optimize.ipynb
    """
    kernel, stride, out_hw = _check_pool(x, kernel, stride, integers=True)
    xp = B.namespace(x)
    out = None
    for _, view in _pool_slices(x, kernel, stride, out_hw):
        out = view if out is None else xp.maximum(out, view)
    return out, ("maxpool2d", x, out, kernel, stride)


def maxpool2d_backward(dout: Any, cache) -> Any:
    """Route each output gradient to the first maximum of its window (torch's choice on ties).

    Walk the window offsets in order; at each, the gradient not yet routed goes to the
    positions that hold the maximum, so a tie (common after ReLU: a window of zeros) gives
    it to the first one only. Returns dx (N, C, H, W). An infinite upstream gradient (a
    diverged step, which :func:`nnopt_lab.training.fit` stops on) gives NaN beside the
    maxima (inf·0), as in :func:`relu_backward`.

    See: chapters/01_why_optimize.ipynb
    """
    x, out, kernel, stride = _open_cache(cache, "maxpool2d", 4)
    if not _is_float(x):
        raise TypeError(f"cache is from maxpool2d_forward on an integer array (dtype {B.dtype_name(x)}): codes "
                        f"have no gradient; pool the float array to train")
    _check_dout(dout, tuple(out.shape), x)
    dx = _zeros(tuple(x.shape), dout)
    overlapping = stride[0] < kernel[0] or stride[1] < kernel[1]     # windows share pixels: accumulate
    remaining = dout
    for (rows, cols), view in _pool_slices(x, kernel, stride, tuple(out.shape[2:])):
        routed = remaining * (view == out)      # a product, not a select: numpy's where is ~5x slower
        if overlapping:
            dx[:, :, rows, cols] += routed
        else:
            dx[:, :, rows, cols] = routed
        remaining = remaining - routed
    return dx


def avgpool2d_forward(x: Any, kernel: int | tuple, stride: int | tuple | None = None):
    r"""Average pooling: :math:`y_{n,c,i,j} = \frac{1}{k_h k_w}\sum_{u<k_h,\,v<k_w} x_{n,c,i s_h+u,\,j s_w+v}`.

    Parameters as :func:`maxpool2d_forward`; returns ``(out, cache)``.

    See: chapters/01_why_optimize.ipynb
    """
    kernel, stride, out_hw = _check_pool(x, kernel, stride)
    total = None
    for _, view in _pool_slices(x, kernel, stride, out_hw):
        total = view if total is None else total + view
    out = total * (1.0 / (kernel[0] * kernel[1]))
    return out, ("avgpool2d", _zeros((0,), x), tuple(x.shape), tuple(out.shape), kernel, stride)


def avgpool2d_backward(dout: Any, cache) -> Any:
    """Spread each output gradient evenly over its window; returns dx (N, C, H, W).

    See: chapters/01_why_optimize.ipynb
    """
    like, x_shape, out_shape, kernel, stride = _open_cache(cache, "avgpool2d", 5)
    _check_dout(dout, out_shape, like)
    dx = _zeros(x_shape, dout)
    share = dout * (1.0 / (kernel[0] * kernel[1]))
    for (rows, cols), _ in _pool_slices(dx, kernel, stride, out_shape[2:]):
        dx[:, :, rows, cols] += share
    return dx


# ----------------------------------------------------------------------------- activations
def relu_forward(x: Any):
    r""":math:`\mathrm{relu}(x) = \max(x, 0)` for a float array of any shape.

    Returns
    -------
    out : same shape as x
    cache : ``("relu", out)``

    See: chapters/01_why_optimize.ipynb
    """
    _check_array("x", x)
    out = B.namespace(x).maximum(x, 0.0)
    return out, ("relu", out)


def relu_backward(dout: Any, cache) -> Any:
    """Pass the gradient where the output was positive (the subgradient at 0 is 0, as in torch).

    See: chapters/01_why_optimize.ipynb
    """
    (out,) = _open_cache(cache, "relu", 1)
    _check_dout(dout, tuple(out.shape), out)
    return dout * (out > 0)


# ----------------------------------------------------------------------------- batch norm
def _check_batchnorm(x, gamma, beta, running_mean, running_var) -> None:
    _check_array("x", x)
    if x.ndim not in (2, 4) or x.shape[1] == 0:
        raise ValueError(f"x must have shape (N, C) or (N, C, H, W) with C >= 1, got {tuple(x.shape)}")
    c = (x.shape[1],)
    for name, value in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if value is None:
            raise TypeError(f"{name} must be an array of shape {c}, got None")
        _check_optional(name, value, c, x)


def batchnorm_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                      training: bool, momentum: float = 0.1, eps: float = 1e-5):
    r"""Batch normalization over N (1-D: x is (N, F)) or over N, H, W (2-D: x is (N, C, H, W)).

    .. math:: y = \gamma\,\frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} + \beta

    In training the batch statistics are used (biased variance) and the running statistics
    are updated *in place* as torch does: ``r ← (1 - momentum)·r + momentum·stat`` with the
    unbiased variance ``σ²·m/(m-1)``. In evaluation the running statistics are used.

    Parameters
    ----------
    x : (N, C) or (N, C, H, W) float
    gamma, beta, running_mean, running_var : (C,), same backend and dtype
    training : bool
    momentum : float in [0, 1]
    eps : float > 0

    Returns
    -------
    out : same shape as x
    cache : what :func:`batchnorm_backward` needs

    See: chapters/01_why_optimize.ipynb
    """
    _check_batchnorm(x, gamma, beta, running_mean, running_var)
    training = _bool("training", training)
    momentum = check_probability("momentum", momentum)
    eps = check_number("eps", eps, 0.0, low_open=True)
    xp = B.namespace(x)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    if training:
        m = math.prod(x.shape[a] for a in axes)
        if m < 2:
            raise ValueError(f"batch norm in training needs more than 1 value per channel, got {m} "
                             f"(x of shape {tuple(x.shape)})")
        mean = xp.mean(x, axis=axes)
        var = xp.mean((x - xp.reshape(mean, shape)) ** 2, axis=axes)
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
        running_var[...] = (1.0 - momentum) * running_var + momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean, running_var
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = (x - xp.reshape(mean, shape)) * xp.reshape(inv_std, shape)
    out = xhat * xp.reshape(gamma, shape) + xp.reshape(beta, shape)
    return out, ("batchnorm", xhat, inv_std, gamma, axes, shape, training)


def batchnorm_backward(dout: Any, cache):
    r"""Gradients of :func:`batchnorm_forward`.

    In training, with :math:`\hat x` the normalized input and m values per channel:

    .. math:: \partial x = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}
              \Big(m\,\partial y - \sum \partial y - \hat x \sum \partial y\,\hat x\Big)

    In evaluation the statistics are constants: :math:`\partial x = \gamma\,\partial y / \sqrt{\sigma^2+\epsilon}`.

    Returns
    -------
    dx, dgamma, dbeta

    See: chapters/01_why_optimize.ipynb
    """
    xhat, inv_std, gamma, axes, shape, training = _open_cache(cache, "batchnorm", 6)
    _check_dout(dout, tuple(xhat.shape), xhat)
    xp = B.namespace(dout)
    dbeta = xp.sum(dout, axis=axes)
    dgamma = xp.sum(dout * xhat, axis=axes)
    scale = xp.reshape(gamma * inv_std, shape)
    if not training:
        return dout * scale, dgamma, dbeta
    m = math.prod(dout.shape[a] for a in axes)
    dx = scale * (dout - xp.reshape(dbeta, shape) / m - xhat * xp.reshape(dgamma, shape) / m)
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- dropout
def dropout_forward(x: Any, p: float, training: bool):
    r"""Inverted dropout: zero each value with probability p, scale survivors by 1/(1-p).

    The mask is drawn from the project's seeded generator (:func:`nnopt_lab.backend.rng`),
    so one seed gives the same mask on every backend. Identity in evaluation.

    Parameters
    ----------
    x : float array of any shape
    p : float in [0, 1)
    training : bool

    Returns
    -------
    out : same shape as x
    cache : ``("dropout", keep, shape)``, keep the scaled mask (None when nothing was dropped)

    See: chapters/01_why_optimize.ipynb
    """
    _check_array("x", x)
    p = check_probability("p", p, high_open=True)
    training = _bool("training", training)
    if not training or p == 0.0:
        return x, ("dropout", None, tuple(x.shape), _zeros((0,), x))
    keep = B.asarray(B.rng().random(tuple(x.shape)) >= p, x) * (1.0 / (1.0 - p))
    return _times_mask(x, keep), ("dropout", keep, tuple(x.shape), keep)


def _times_mask(a: Any, keep: Any) -> Any:
    """``a * keep`` with exact zeros where ``keep`` is 0 (a product would turn an inf there into NaN)."""
    return B.namespace(a).where(keep != 0, a, 0.0) * keep


def dropout_backward(dout: Any, cache) -> Any:
    """Gradient of :func:`dropout_forward`: the same mask and scale.

    See: chapters/01_why_optimize.ipynb
    """
    keep, shape, like = _open_cache(cache, "dropout", 3)
    _check_dout(dout, shape, like)
    return dout if keep is None else _times_mask(dout, keep)


# ----------------------------------------------------------------------------- losses
def log_softmax(logits: Any) -> Any:
    r"""Stable :math:`\log\mathrm{softmax}(z)_k = z_k - \max z - \log\sum_j e^{z_j - \max z}` over the last axis.

    See: chapters/01_why_optimize.ipynb
    """
    _check_logits(logits, None)
    return _log_softmax(logits)


def _log_softmax(logits: Any) -> Any:
    xp = B.namespace(logits)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(logits: Any) -> Any:
    r"""Stable :math:`\mathrm{softmax}(z)_k = e^{z_k - \max z} / \sum_j e^{z_j - \max z}` over the last axis.

    See: chapters/01_why_optimize.ipynb
    """
    _check_logits(logits, None)
    xp = B.namespace(logits)
    e = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _check_logits(logits: Any, ndim: int | None) -> None:
    """Float logits (integers would wrap around or truncate), with at least one class."""
    _check_array("logits", logits, ndim, "(N, K)")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have at least one class on the last axis, got shape {tuple(logits.shape)}")


def _check_labels(labels: Any, logits: Any) -> None:
    """Integer class indices (N,), one per row of logits (their range: :func:`_one_hot`)."""
    n = logits.shape[0]
    if type(labels) not in _ARRAY_TYPES:
        check_array("labels", labels)
    if not _is_integer(labels):
        raise TypeError(f"labels must be integer class indices, got dtype {B.dtype_name(labels)}")
    _check_array("labels", labels, 1, "(N,)", like=logits, floating=False, like_name="logits")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have one class index per row of logits ({n}), got {labels.shape[0]}")


def _one_hot(labels: Any, k: int, like: Any) -> Any:
    """(N, K) one-hot rows of ``like``'s dtype; ValueError unless every label is in [0, K).

    A label out of range matches no class, so its row is all zeros: the labels are valid
    exactly when the N·K comparisons hold N hits (one count, one device sync).
    """
    xp = B.namespace(like)
    classes = xp.arange(k, device=B.device(like))
    hits = labels[:, None] == classes[None, :]
    if int(xp.count_nonzero(hits)) != labels.shape[0]:
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(f"labels must be class indices in [0, {k}) for logits with {k} classes, "
                         f"got values from {lo} to {hi}")
    return xp.astype(hits, like.dtype)


def cross_entropy_forward(logits: Any, labels: Any):
    r"""Mean softmax cross-entropy, stable for logits of any size (±1e4 included).

    .. math:: L = \frac{1}{N}\sum_n \Big(\log\sum_k e^{z_{nk}} - z_{n,y_n}\Big)

    Parameters
    ----------
    logits : (N, K) float, N >= 1
        Integer logits are refused (``TypeError``): uint8 arithmetic would wrap around.
    labels : (N,) integer class indices in [0, K), same backend as logits

    Returns
    -------
    loss : 0-d array
    cache : ``("cross_entropy", probabilities, one-hot labels)``

    Raises
    ------
    TypeError
        For non-float logits, non-integer labels, or arrays of two backends.
    ValueError
        For shapes that do not fit and labels outside [0, K) (checked with one device sync).

    See: chapters/01_why_optimize.ipynb
    """
    _check_logits(logits, 2)
    if logits.shape[0] == 0:
        raise ValueError(f"logits must have at least one row (the mean over no samples is NaN), "
                         f"got shape {tuple(logits.shape)}")
    _check_labels(labels, logits)
    xp = B.namespace(logits)
    logp = _log_softmax(logits)
    onehot = _one_hot(labels, logits.shape[1], logits)
    loss = -xp.sum(logp * onehot) / logits.shape[0]
    return loss, ("cross_entropy", xp.exp(logp), onehot)


def cross_entropy_backward(cache, dloss: float = 1.0) -> Any:
    r""":math:`\partial L/\partial z = \partial L \cdot (\mathrm{softmax}(z) - \mathrm{onehot}(y)) / N`.

    ``dloss`` is the upstream gradient of the (scalar) loss, a finite number.

    Non-finite logits (a diverged network) give a non-finite loss and gradient, as in torch:
    :func:`nnopt_lab.training.fit` stops on exactly that, so it is not an error here.

    See: chapters/01_why_optimize.ipynb
    """
    probs, onehot = _open_cache(cache, "cross_entropy", 2)
    if not (type(dloss) is float and math.isfinite(dloss)):     # the common case without the general check
        dloss = check_number("dloss", dloss)
    return (probs - onehot) * (dloss / probs.shape[0])
