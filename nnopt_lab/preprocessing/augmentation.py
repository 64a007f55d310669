r"""Data augmentation (数据增强): flip, rotate, crop -- on image batches, from scratch.

Seed §2.1.2 (concept), §3.1.2 (principles: horizontal / vertical flip 水平/垂直翻转,
clockwise / counter-clockwise rotation 顺时针/逆时针旋转, random / fixed crop 随机/固定裁剪)
and §4.1.2 (the example that calls ``np.rot90`` on a 1-D list).

Every function takes a batch ``x`` of shape (N, C, H, W) (any leading axes for the
deterministic ones) on any backend and returns a new array on the same backend.

* deterministic: :func:`hflip`, :func:`vflip`, :func:`rot90`, :func:`rotate` (any angle,
  bilinear, with a fill value), :func:`crop`, :func:`center_crop`, :func:`pad`, :func:`resize`
  (bilinear), :func:`resized_crop`;
* random transforms (small classes with a probability ``p``, driven by the project's seeded
  generator, one draw per image): :class:`HorizontalFlip`, :class:`VerticalFlip`,
  :class:`RandomRotate90`, :class:`RandomRotation`, :class:`RandomCrop`,
  :class:`RandomResizedCrop`, plus :class:`CenterCrop` and :class:`Resize`, chained by
  :class:`Compose`;
* a pipeline plugs into training as ``fit(..., augment=pipeline)``, which transforms every
  training batch as the model receives it (:func:`for_flat_batches` for an MLP's flat rows).

Coordinates: row 0 is the top of the image; positive angles rotate counter-clockwise as the
image is displayed (the convention of ``numpy.rot90`` and ``scipy.ndimage.rotate``).

See: chapters/02_2_data_augmentation.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from .. import backend as B
from ..validation import (as_float, as_int, check_array, check_callable, check_choice, check_generator, check_int,
                          check_number, check_probability, check_shape)
from .cleaning import MODES, pad_axis

__all__ = ["hflip", "vflip", "rot90", "rotate", "crop", "center_crop", "pad", "resize", "resized_crop",
           "Transform", "HorizontalFlip", "VerticalFlip", "RandomRotate90", "RandomRotation", "RandomCrop",
           "CenterCrop", "Resize", "RandomResizedCrop", "Compose", "for_flat_batches"]


# ----------------------------------------------------------------------------- checks
MAX_SIZE = 4096      # largest output side (pixels) of a resize or crop: beyond it a typo, not a request


def _images(x: Any, min_ndim: int = 2, finite: bool = False) -> Any:
    """``x`` as a floating, non-empty image batch: (..., H, W), or exactly (N, C, H, W) for ``min_ndim=4``.

    ``finite``: refuse NaN and inf too (bilinear weights times inf give NaN).
    """
    check_array("x", x)
    if x.ndim < min_ndim or (min_ndim == 4 and x.ndim != 4):
        want = "(N, C, H, W)" if min_ndim == 4 else "(..., H, W)"
        raise ValueError(f"x must be an image batch of shape {want}, got shape {tuple(x.shape)}")
    if 0 in tuple(x.shape):
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    xp = B.namespace(x)
    x = x if B.dtype_name(x).startswith(("float", "bfloat")) else xp.astype(x, xp.float64)
    if finite and not B.float_of(xp.all(xp.isfinite(x))):
        raise ValueError("x must be finite for a bilinear resampling (NaN or inf would spread to its neighbours)")
    return x


_check_images = _images    # old name, still used by widgets/augmentation.py (not this module's owner)


def _size(name: str, size: Any) -> tuple[int, int]:
    """An int or an (h, w) pair of ints in [1, MAX_SIZE]."""
    pair = check_shape(name, size, 2)
    if max(pair) > MAX_SIZE:
        raise ValueError(f"{name} must be at most {MAX_SIZE} pixels per side, got {size!r}")
    return pair


def _box(box: Any, height: int, width: int) -> tuple[int, int, int, int]:
    """A (top, left, h, w) box of ints that lies inside a (height, width) image."""
    values = tuple(map(as_int, box)) if isinstance(box, (tuple, list)) else ()
    if len(values) != 4 or None in values:
        raise ValueError(f"boxes must hold (top, left, height, width) int tuples, got {box!r}")
    top, left, h, w = values
    if top < 0 or left < 0 or h < 1 or w < 1 or top + h > height or left + w > width:
        raise ValueError(f"boxes must lie inside the image ({height}, {width}), got {box!r}")
    return values


def _fits(h: int, w: int, height: int, width: int, what: str = "crop") -> None:
    if h > height or w > width:
        raise ValueError(f"size ({h}, {w}) of the {what} is larger than the image ({height}, {width}); "
                         f"pad the image first or choose a smaller size")


def _pair(name: str, value: Any) -> tuple[float, float]:
    """A (low, high) pair of finite numbers."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high) of numbers, got {value!r}")
    return check_number(name, value[0]), check_number(name, value[1])


# ----------------------------------------------------------------------------- flips and 90° turns
def hflip(x: Any) -> Any:
    r"""Horizontal flip (水平翻转), left ↔ right: :math:`y_{i,j} = x_{i,\,W-1-j}`.

    Parameters
    ----------
    x : array, shape (..., H, W)

    Same as ``numpy.flip(x, axis=-1)``. Seed §3.1.2.1. See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x)
    return B.namespace(x).flip(x, axis=-1)


def vflip(x: Any) -> Any:
    r"""Vertical flip (垂直翻转), top ↔ bottom: :math:`y_{i,j} = x_{H-1-i,\,j}`.

    Parameters
    ----------
    x : array, shape (..., H, W)

    Same as ``numpy.flip(x, axis=-2)``. Seed §3.1.2.1. See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x)
    return B.namespace(x).flip(x, axis=-2)


def _swap_hw(x: Any) -> Any:
    xp = B.namespace(x)
    return xp.permute_dims(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


def rot90(x: Any, k: int = 1) -> Any:
    r"""Rotate by ``k`` quarter turns counter-clockwise (逆时针); ``k < 0`` turns clockwise (顺时针).

    One counter-clockwise quarter turn is a transpose after a horizontal flip,
    :math:`y_{i,j} = x_{j,\,W-1-i}`; a (H, W) image becomes (W, H).

    Parameters
    ----------
    x : array, shape (..., H, W)
    k : int
        Number of counter-clockwise quarter turns (taken modulo 4); ``rot90(x, -1)`` is one
        clockwise turn.

    Same as ``numpy.rot90(x, k, axes=(-2, -1))``. Seed §3.1.2.2.
    See: chapters/02_2_data_augmentation.ipynb
    """
    k = check_int("k", k, None)
    x = _images(x)
    xp = B.namespace(x)
    k %= 4
    if k == 0:
        return xp.asarray(x, copy=True)
    if k == 2:
        return xp.flip(xp.flip(x, axis=-1), axis=-2)
    if k == 1:
        return _swap_hw(xp.flip(x, axis=-1))
    return xp.flip(_swap_hw(x), axis=-1)


# ----------------------------------------------------------------------------- bilinear sampling
def _bilinear(x: Any, rows: Any, cols: Any, fill: float) -> Any:
    r"""Sample ``x`` (N, C, H, W) at real coordinates ``rows``, ``cols`` (M, Ho, Wo), M in {1, N}.

    .. math:: y = \sum_{a,b \in \{0,1\}} (1-|r - r_a|)(1-|c - c_b|)\; x[r_a, c_b],
              \quad r_0 = \lfloor r \rfloor,\ r_1 = r_0 + 1

    with ``fill`` for neighbours outside the image (the image is extended by the constant).
    """
    xp = B.namespace(x)
    rows, cols = xp.broadcast_arrays(rows, cols)
    n, c, h, w = x.shape
    m, ho, wo = rows.shape
    flat = xp.reshape(x, (n, c, h * w))
    r0, c0 = xp.floor(rows), xp.floor(cols)
    fr, fc = rows - r0, cols - c0

    def corner(base, step, size):
        """(clipped integer index, inside mask) of neighbour base + step along an axis of ``size``."""
        pos = base + step
        return xp.astype(xp.clip(pos, 0, size - 1), xp.int64), (pos >= 0) & (pos <= size - 1)

    row_corners = [(corner(r0, 0.0, h), 1.0 - fr), (corner(r0, 1.0, h), fr)]
    col_corners = [(corner(c0, 0.0, w), 1.0 - fc), (corner(c0, 1.0, w), fc)]
    out = None
    for (ri, r_in), wr in row_corners:
        for (ci, c_in), wc in col_corners:
            index = xp.broadcast_to(xp.reshape(ri * w + ci, (m, 1, ho * wo)), (n, c, ho * wo))
            value = xp.reshape(xp.take_along_axis(flat, index, axis=2), (n, c, ho, wo))
            value = xp.where((r_in & c_in)[:, None], value, xp.full_like(value, fill))
            term = (wr * wc)[:, None] * value
            out = term if out is None else out + term
    return out


def _grid(x: Any, ho: int, wo: int) -> tuple[Any, Any]:
    """Output pixel coordinates as float arrays of shape (1, Ho, 1) and (1, 1, Wo)."""
    xp = B.namespace(x)
    i = xp.arange(ho, dtype=x.dtype, device=B.device(x))
    j = xp.arange(wo, dtype=x.dtype, device=B.device(x))
    return xp.reshape(i, (1, ho, 1)), xp.reshape(j, (1, 1, wo))


def _cos_sin_degrees(angle: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact at multiples of 90° (as scipy's cosdg/sindg)."""
    a = angle % 360.0
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), 270.0: (0.0, -1.0)}
    if a in exact:
        return exact[a]
    return math.cos(math.radians(a)), math.sin(math.radians(a))


def _per_image(name: str, value: Any, n: int) -> list[float]:
    """A number or a sequence of n numbers (one per image) as a list of n finite floats."""
    if as_float(value) is not None:
        return [check_number(name, value)] * n
    if not isinstance(value, (list, tuple)) and not hasattr(value, "shape"):
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {type(value).__name__}")
    items = list(value) if isinstance(value, (list, tuple)) else B.to_numpy(value).reshape(-1).tolist()
    values = [as_float(v) for v in items]
    if None in values:
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {value!r}")
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be a finite number or {n} finite numbers (one per image), got {value!r}")
    return values


def rotate(x: Any, angle: float | Sequence[float], fill: float = 0.0) -> Any:
    r"""Rotate about the image centre by ``angle`` degrees counter-clockwise, bilinear (旋转).

    Each output pixel :math:`(i, j)` reads the input at

    .. math::
        \begin{pmatrix} r \\ c \end{pmatrix} =
        \begin{pmatrix} \cos\theta & \sin\theta \\ -\sin\theta & \cos\theta \end{pmatrix}
        \begin{pmatrix} i - c_H \\ j - c_W \end{pmatrix} + \begin{pmatrix} c_H \\ c_W \end{pmatrix},
        \qquad c_H = \tfrac{H-1}{2},\ c_W = \tfrac{W-1}{2}

    interpolated bilinearly; what falls outside the input is ``fill``. The output keeps the
    input's shape (corners are cut). Negative angles turn clockwise.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    angle : float or sequence of N floats
        Degrees, counter-clockwise; one angle for the batch or one per image.
    fill : float
        Value outside the input.

    Same as ``scipy.ndimage.rotate(x, angle, axes=(2, 3), reshape=False, order=1,
    mode="grid-constant", cval=fill)``; with scipy's default ``mode="constant"`` the two agree
    wherever the source lies inside the image. Seed §3.1.2.2.
    See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x, 4, finite=True)
    fill = check_number("fill", fill)
    n, _, h, w = x.shape
    cos_sin = [_cos_sin_degrees(a) for a in _per_image("angle", angle, n)]
    cos = B.asarray([[[cs[0]]] for cs in cos_sin], x)                      # (N, 1, 1)
    sin = B.asarray([[[cs[1]]] for cs in cos_sin], x)
    i, j = _grid(x, h, w)
    di, dj = i - (h - 1) / 2.0, j - (w - 1) / 2.0
    rows = cos * di + sin * dj + (h - 1) / 2.0
    cols = -sin * di + cos * dj + (w - 1) / 2.0
    return _bilinear(x, rows, cols, fill)


# ----------------------------------------------------------------------------- crops and sizes
def crop(x: Any, top: int, left: int, height: int, width: int) -> Any:
    """The window ``x[..., top:top+height, left:left+width]`` (fixed crop, 固定裁剪).

    Parameters
    ----------
    x : array, shape (..., H, W)
    top, left : int >= 0
    height, width : int >= 1

    Raises ValueError when the window does not lie inside the image.

    Seed §3.1.2.3. See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x)
    height, width = check_int("height", height, 1), check_int("width", width, 1)
    top, left = check_int("top", top, 0), check_int("left", left, 0)
    h, w = x.shape[-2:]
    if top + height > h or left + width > w:
        raise ValueError(f"top + height and left + width must fit in the images of x ({h}, {w}), got top={top}, "
                         f"height={height}, left={left}, width={width}")
    return x[..., top:top + height, left:left + width]


def center_crop(x: Any, size: int | tuple[int, int]) -> Any:
    """The centred ``size`` window: top = (H - h) // 2, left = (W - w) // 2.

    Parameters
    ----------
    x : array, shape (..., H, W)
    size : int or (h, w)

    Seed §3.1.2.3. See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x)
    ch, cw = _size("size", size)
    h, w = x.shape[-2:]
    _fits(ch, cw, h, w)
    return crop(x, (h - ch) // 2, (w - cw) // 2, ch, cw)


def pad(x: Any, padding: int, mode: str = "constant", fill: float = 0.0) -> Any:
    """Add ``padding`` pixels on every side of the images, with a border mode.

    Parameters
    ----------
    x : array, shape (..., H, W)
    padding : int >= 0
    mode : {"constant", "reflect", "mirror", "nearest", "wrap"}
        ``scipy.ndimage`` names, as in :func:`nnopt_lab.preprocessing.cleaning.pad_axis`.
    fill : float
        Value of ``"constant"`` borders.

    See: chapters/02_2_data_augmentation.ipynb (padding before a random crop)
    """
    x = _images(x)
    padding = check_int("padding", padding, 0, MAX_SIZE)
    check_choice("mode", mode, MODES)
    fill = check_number("fill", fill)
    for axis in (-2, -1):
        x = pad_axis(x, padding, padding, axis, mode, fill)
    return x


def _gather_crops(x: Any, tops: list[int], lefts: list[int], h: int, w: int) -> Any:
    """One (h, w) window per image, at its own (top, left): shape (N, C, h, w)."""
    xp = B.namespace(x)
    n, c, height, width = x.shape
    like_int = B.Backend(B.backend_of(x).name)
    rows = B.to_backend([[t + i for i in range(h)] for t in tops], like_int, dtype="int64")   # (N, h)
    cols = B.to_backend([[l + j for j in range(w)] for l in lefts], like_int, dtype="int64")  # (N, w)
    rows = xp.broadcast_to(xp.reshape(rows, (n, 1, h, 1)), (n, c, h, width))
    x = xp.take_along_axis(x, rows, axis=2)
    cols = xp.broadcast_to(xp.reshape(cols, (n, 1, 1, w)), (n, c, h, w))
    return xp.take_along_axis(x, cols, axis=3)


def resized_crop(x: Any, boxes: Sequence[tuple[int, int, int, int]], size: int | tuple[int, int]) -> Any:
    r"""Crop one box per image and resize it to ``size`` (bilinear): crop-and-zoom.

    Equal to ``resize(crop(x[n], top, left, h, w), size)`` for each image, done in one pass.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    boxes : N tuples (top, left, height, width) of ints, each inside the image
    size : int or (Ho, Wo)

    Returns
    -------
    array, shape (N, C, Ho, Wo)

    Seed §3.1.2.3. See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x, 4, finite=True)
    ho, wo = _size("size", size)
    n, _, height, width = x.shape
    if not isinstance(boxes, (tuple, list)):
        raise TypeError(f"boxes must be a list of (top, left, height, width) tuples, got {type(boxes).__name__}")
    if len(boxes) != n:
        raise ValueError(f"boxes must hold one (top, left, height, width) per image ({n}), got {len(boxes)}")
    boxes = [_box(b, height, width) for b in boxes]
    col = lambda k: B.asarray([[[float(b[k])]] for b in boxes], x)              # (N, 1, 1)
    top, left, bh, bw = col(0), col(1), col(2), col(3)
    i, j = _grid(x, ho, wo)
    xp = B.namespace(x)
    rows = top + xp.clip((i + 0.5) * bh / ho - 0.5, 0.0, None)
    cols = left + xp.clip((j + 0.5) * bw / wo - 0.5, 0.0, None)
    rows = xp.minimum(rows, top + bh - 1.0)
    cols = xp.minimum(cols, left + bw - 1.0)
    return _bilinear(x, rows, cols, 0.0)


def resize(x: Any, size: int | tuple[int, int]) -> Any:
    r"""Bilinear resize to ``size`` with half-pixel centres.

    Output pixel i reads the input at :math:`r = \operatorname{clip}\big((i + \tfrac12)\,\tfrac{H}{H_o} -
    \tfrac12,\ 0,\ H-1\big)` (same for columns) and interpolates bilinearly.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    size : int or (Ho, Wo)

    Same as ``torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)``.
    See: chapters/02_2_data_augmentation.ipynb
    """
    x = _images(x, 4)
    n, _, h, w = x.shape
    return resized_crop(x, [(0, 0, h, w)] * n, size)


# ----------------------------------------------------------------------------- random transforms
class Transform:
    """A random transform of an image batch, applied to each image with probability ``p``.

    Subclasses implement :meth:`apply` (transform every image, drawing what they need from the
    generator); ``__call__`` draws which images keep the result. All randomness comes from
    ``generator`` (default: the project's :func:`nnopt_lab.backend.rng`), so one seed gives the
    same batch on every backend.

    Parameters
    ----------
    p : float in [0, 1]
        Probability that an image is transformed.

    Seed §3.1.2. See: chapters/02_2_data_augmentation.ipynb
    """

    def __init__(self, p: float = 1.0):
        self.p = check_probability("p", p)

    def apply(self, x: Any, generator) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any, generator=None) -> Any:
        x = _images(x, 4)
        g = check_generator("generator", generator) or B.rng()
        chosen = g.random(x.shape[0]) < self.p
        out = self.apply(x, g)
        if self.p >= 1.0:
            return out
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"{self!r} changes the image shape {tuple(x.shape)} -> {tuple(out.shape)}, "
                             f"so it cannot be applied to only some images: use p=1")
        xp = B.namespace(x)
        keep = B.asarray(chosen.reshape(-1, 1, 1, 1), x) > 0.5
        return xp.where(keep, out, x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class HorizontalFlip(Transform):
    """Mirror left ↔ right with probability ``p`` (default 0.5). See :func:`hflip`."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, x, generator):
        return hflip(x)


class VerticalFlip(Transform):
    """Mirror top ↔ bottom with probability ``p`` (default 0.5). See :func:`vflip`."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, x, generator):
        return vflip(x)


class RandomRotate90(Transform):
    """Turn each image by a quarter-turn count drawn uniformly from ``ks`` (see :func:`rot90`).

    Parameters
    ----------
    ks : sequence of ints
        Counter-clockwise quarter turns to choose from; default (1, 2, 3). Odd turns need
        square images.
    p : float
    """

    def __init__(self, ks: Sequence[int] = (1, 2, 3), p: float = 1.0):
        super().__init__(p)
        if not isinstance(ks, (tuple, list)) or not ks:
            raise TypeError(f"ks must be a non-empty sequence of ints (quarter turns), got {ks!r}")
        self.ks = tuple(check_int("ks", k, None) for k in ks)

    def apply(self, x, generator):
        h, w = x.shape[-2:]
        if h != w and any(k % 2 for k in self.ks):
            raise ValueError(f"odd quarter turns need square images, got ({h}, {w}); use ks=(2,)")
        picks = [self.ks[i] % 4 for i in generator.integers(0, len(self.ks), size=x.shape[0]).tolist()]
        xp = B.namespace(x)
        out = x
        for k in sorted(set(picks) - {0}):
            take = B.asarray([[[[float(p == k)]]] for p in picks], x) > 0.5
            out = xp.where(take, rot90(x, k), out)
        return out


class RandomRotation(Transform):
    """Rotate each image by an angle drawn uniformly from ``degrees`` (see :func:`rotate`).

    Parameters
    ----------
    degrees : float or (low, high)
        A number d means (-d, d).
    fill : float
        Value for pixels that come from outside the image.
    p : float
    """

    def __init__(self, degrees: float | tuple[float, float] = 15.0, fill: float = 0.0, p: float = 1.0):
        super().__init__(p)
        if isinstance(degrees, (tuple, list)):
            lo, hi = _pair("degrees", degrees)
        else:
            hi = check_number("degrees", degrees, 0.0)
            lo = -hi
        if lo > hi:
            raise ValueError(f"degrees must be a number >= 0 or a pair (low, high) with low <= high, got {degrees!r}")
        self.degrees, self.fill = (lo, hi), check_number("fill", fill)

    def apply(self, x, generator):
        angles = generator.uniform(self.degrees[0], self.degrees[1], size=x.shape[0]).tolist()
        return rotate(x, angles, self.fill)


class RandomCrop(Transform):
    """Pad by ``padding`` then cut a ``size`` window at a random place in each image (随机裁剪).

    With ``size`` equal to the image size and ``padding = q`` this is a random shift of up to
    q pixels in each direction (the classic CIFAR augmentation: pad 4, crop 32).

    Parameters
    ----------
    size : int or (h, w)
    padding : int >= 0
    fill : float
        Value of the padding when ``mode="constant"``.
    mode : {"constant", "reflect", "mirror", "nearest", "wrap"}
    p : float
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 0, fill: float = 0.0,
                 mode: str = "constant", p: float = 1.0):
        super().__init__(p)
        self.size = _size("size", size)
        self.padding = check_int("padding", padding, 0, MAX_SIZE)
        self.fill, self.mode = check_number("fill", fill), check_choice("mode", mode, MODES)

    def apply(self, x, generator):
        xpad = pad(x, self.padding, self.mode, self.fill)
        (h, w), (height, width) = self.size, xpad.shape[-2:]
        _fits(h, w, height, width, "crop (after padding)")
        n = x.shape[0]
        tops = generator.integers(0, height - h + 1, size=n).tolist()
        lefts = generator.integers(0, width - w + 1, size=n).tolist()
        return _gather_crops(xpad, tops, lefts, h, w)


class CenterCrop(Transform):
    """The fixed centred window of ``size`` (see :func:`center_crop`); deterministic."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__(1.0)
        self.size = _size("size", size)

    def apply(self, x, generator):
        return center_crop(x, self.size)


class Resize(Transform):
    """Bilinear resize to ``size`` (see :func:`resize`); deterministic."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__(1.0)
        self.size = _size("size", size)

    def apply(self, x, generator):
        return resize(x, self.size)


class RandomResizedCrop(Transform):
    r"""Crop a random box and resize it back to ``size`` (the Inception / ImageNet crop).

    Per image: area fraction :math:`s \sim U(\text{scale})`, aspect :math:`a = w/h` with
    :math:`\log a \sim U(\log \text{ratio})`; :math:`w = \mathrm{round}(\sqrt{s a H W})`,
    :math:`h = \mathrm{round}(\sqrt{s H W / a})`, clipped to the image; a uniformly placed box.

    Parameters
    ----------
    size : int or (h, w)
        Output size (usually the input size).
    scale : (low, high) in (0, 1]
    ratio : (low, high) > 0
    p : float
    """

    def __init__(self, size: int | tuple[int, int], scale: tuple[float, float] = (0.6, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), p: float = 1.0):
        super().__init__(p)
        self.size = _size("size", size)
        lo, hi = _pair("scale", scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must be a pair (low, high) with 0 < low <= high <= 1, got {scale!r}")
        rlo, rhi = _pair("ratio", ratio)
        if not 0 < rlo <= rhi:
            raise ValueError(f"ratio must be a pair (low, high) with 0 < low <= high, got {ratio!r}")
        self.scale, self.ratio = (lo, hi), (rlo, rhi)

    def apply(self, x, generator):
        n, _, height, width = x.shape
        area = (generator.uniform(*self.scale, size=n) * (height * width)).tolist()
        log_ratio = generator.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=n).tolist()
        place = generator.random((n, 2)).tolist()                   # where the box goes, in [0, 1)
        boxes = []
        for a, lr, (u, v) in zip(area, log_ratio, place):
            r = math.exp(lr)
            w = min(max(round(math.sqrt(a * r)), 1), width)
            h = min(max(round(math.sqrt(a / r)), 1), height)
            boxes.append((int(u * (height - h + 1)), int(v * (width - w + 1)), h, w))
        return resized_crop(x, boxes, self.size)


class Compose:
    """Apply transforms in order: ``Compose([RandomCrop(8, padding=1), RandomRotation(10)])(x)``.

    Parameters
    ----------
    transforms : sequence of callables taking and returning an (N, C, H, W) batch

    A :class:`Transform` in the list receives the generator given to the pipeline (default: the
    project's). See: chapters/02_2_data_augmentation.ipynb
    """

    def __init__(self, transforms: Sequence[Any]):
        if not isinstance(transforms, (tuple, list)):
            raise TypeError(f"transforms must be a list of callables, got {type(transforms).__name__}")
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] must be callable, got {type(t).__name__}")
        self.transforms = transforms

    def __call__(self, x: Any, generator=None) -> Any:
        for t in self.transforms:
            x = t(x, generator) if isinstance(t, (Transform, Compose)) else t(x)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


# ----------------------------------------------------------------------------- training
def for_flat_batches(transform: Any, image_shape: tuple[int, int, int]) -> Callable[[Any], Any]:
    """Wrap an image transform for flat batches (N, C·H·W), the inputs of an MLP.

    ``fit(model, (X, y), augment=...)`` applies its ``augment`` to every training batch as the
    model receives it; an MLP receives flat rows, the transforms want (N, C, H, W) images.

    >>> pipeline = Compose([RandomRotation(10), RandomCrop(8, padding=1)])          # doctest: +SKIP
    >>> fit(mlp, (X_train, y_train), epochs=30, augment=for_flat_batches(pipeline, (1, 8, 8)))  # doctest: +SKIP

    Parameters
    ----------
    transform : callable
        Takes and returns an (N, C, H, W) batch of the same shape (e.g. a :class:`Compose`).
    image_shape : (C, H, W)

    Returns
    -------
    callable mapping (N, C·H·W) to (N, C·H·W).

    See: chapters/02_2_data_augmentation.ipynb
    """
    check_callable("transform", transform)
    if not isinstance(image_shape, (tuple, list)):
        raise TypeError(f"image_shape must be a tuple (C, H, W) of ints >= 1, got {image_shape!r}")
    shape = check_shape("image_shape", image_shape, 3)

    def augment(xb: Any) -> Any:
        check_array("xb", xb)
        xp = B.namespace(xb)
        if xb.ndim != 2 or xb.shape[1] != math.prod(shape) or xb.shape[0] == 0:
            raise ValueError(f"xb must be a non-empty flat batch (N, {math.prod(shape)}) for image_shape {shape}, "
                             f"got shape {tuple(xb.shape)}")
        images = xp.reshape(xb, (xb.shape[0],) + shape)
        out = transform(images)
        if tuple(out.shape) != tuple(images.shape):
            raise ValueError(f"transform changed the image shape {tuple(images.shape)} -> {tuple(out.shape)}; "
                             f"training images must keep their shape (crop back with RandomCrop or Resize)")
        return xp.reshape(out, tuple(xb.shape))

    return augment
