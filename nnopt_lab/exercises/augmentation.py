"""Self-checks for the exercises of chapter 2.2 (data augmentation). Each runs the learner's function
on known images and says what the answer actually did (the other flip, the other direction, a
corner instead of the centre, ...).

See: chapters/02_2_data_augmentation.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .. import backend as B
from .checks import ExerciseFailed
from ..preprocessing import augmentation as A
from . import checks

__all__ = ["check_hflip", "check_rot90_clockwise", "check_center_crop", "check_rotate"]

_NUMPY64 = B.Backend("numpy", "float64")


def _batch(h: int = 5, w: int = 7) -> Any:
    """Two 1-channel images whose every pixel is different (so any misplaced pixel shows)."""
    g = B.generator(3)
    return _NUMPY64.asarray(g.permutation(2 * h * w).reshape(2, 1, h, w).astype("float64"))


def _answer(fn: Callable, x: Any, *args) -> Any:
    """The learner's ``fn(x, *args)`` as a numpy float64 array (errors reported by the checker kit)."""
    return checks.as_float64(checks.call("your function", fn, x.copy(), *args), "your function")


def _same(a: Any, b: Any) -> bool:
    if tuple(a.shape) != tuple(b.shape):
        return False
    xp = B.namespace(a)
    return B.float_of(xp.max(xp.abs(a - b))) == 0.0


def _guess(got: Any, x: Any) -> str:
    """Name the transform of ``x`` that ``got`` equals, if any."""
    candidates = {"the unchanged image": x, "a horizontal flip (left ↔ right)": A.hflip(x),
                  "a vertical flip (top ↔ bottom)": A.vflip(x),
                  "a counter-clockwise quarter turn (np.rot90(x, 1))": A.rot90(x, 1),
                  "a clockwise quarter turn (np.rot90(x, -1))": A.rot90(x, -1),
                  "a half turn (180°)": A.rot90(x, 2),
                  "a transpose (rows ↔ columns) without any flip": A._swap_hw(x)}
    for name, value in candidates.items():
        if _same(got, value):
            return name
    return ""


def check_hflip(fn: Callable[[Any], Any]) -> bool:
    """``fn(x)``: the horizontal flip (left ↔ right) of a batch (N, C, H, W)."""
    x = _batch()
    got, want = _answer(fn, x), A.hflip(x)
    if _same(got, want):
        print("✓ hflip mirrors left ↔ right: out[..., i, j] = x[..., i, W-1-j] (= numpy.flip(x, axis=-1))")
        return True
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"output shape {tuple(got.shape)}, expected {tuple(want.shape)}: a flip keeps the shape")
    what = _guess(got, x)
    hint = " Which axis is the width? In (N, C, H, W) it is the LAST one." if what else ""
    raise ExerciseFailed(f"your output is {what or 'not a flip of the input'}, not a horizontal flip.{hint}")


def check_rot90_clockwise(fn: Callable[[Any], Any]) -> bool:
    """``fn(x)``: one clockwise quarter turn of a batch (N, C, H, W); (H, W) becomes (W, H)."""
    x = _batch()
    got, want = _answer(fn, x), A.rot90(x, -1)
    if _same(got, want):
        print("✓ clockwise quarter turn: out[..., i, j] = x[..., H-1-j, i] (= numpy.rot90(x, -1, axes=(2, 3)))")
        return True
    if tuple(got.shape) != tuple(want.shape):
        raise ExerciseFailed(f"output shape {tuple(got.shape)}, expected {tuple(want.shape)}: a quarter turn swaps "
                             f"height and width, and only those two axes (axes=(2, 3) or (-2, -1)).")
    what = _guess(got, x)
    if what.startswith("a counter-clockwise"):
        raise ExerciseFailed("your turn goes COUNTER-clockwise: numpy.rot90(x, k) with k > 0 turns counter-"
                             "clockwise (the seed's comment makes the same mistake); use k = -1 or k = 3.")
    raise ExerciseFailed(f"your output is {what or 'not a quarter turn of the input'}; a clockwise turn is a "
                         f"transpose followed by a horizontal flip.")


def check_center_crop(fn: Callable[[Any, int], Any]) -> bool:
    """``fn(x, size)``: the centred size × size window, top = (H - size) // 2, left = (W - size) // 2."""
    for h, w, size in ((8, 8, 6), (8, 8, 5), (7, 9, 3)):
        x = _batch(h, w)
        got, want = _answer(fn, x, size), A.center_crop(x, size)
        if _same(got, want):
            continue
        case = f"{h}×{w} image, size {size}"
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{case}: output shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        for top in range(h - size + 1):
            for left in range(w - size + 1):
                if _same(got, A.crop(x, top, left, size, size)):
                    where = "the top-left corner" if top == left == 0 else f"top={top}, left={left}"
                    raise ExerciseFailed(f"{case}: you cut the window at {where}; the centre is top = (H - size) // 2 "
                                         f"= {(h - size) // 2}, left = (W - size) // 2 = {(w - size) // 2}.")
        raise ExerciseFailed(f"{case}: your output is not a size × size window of the input")
    print("✓ center_crop cuts the centred window (top = (H - size) // 2, left = (W - size) // 2) on 3 cases")
    return True


# ----------------------------------------------------------------------------- exercise 4: rotation
_ANGLES = (20.0, -35.0, 90.0, 150.0)


def _close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    """Same shape and equal to ``tol`` (relative to the largest entry of ``b``); NaN never matches."""
    a, b = checks.as_float64(a, "answer"), checks.as_float64(b, "reference")
    if tuple(a.shape) != tuple(b.shape):
        return False
    return bool((abs(a - b) <= tol * (1.0 + abs(b).max())).all())


def _rotation_image():
    """A fixed 7×9 image (not square, no symmetry) with values 1..63 scaled to (0, 1]."""
    g = B.generator(5)
    return _NUMPY64.xp.asarray(g.permutation(63).reshape(7, 9).astype("float64") / 63.0 + 1.0 / 63.0)


def _sample(image: Any, angle: float, fill: float, centre_shift: float = 0.0, nearest: bool = False) -> Any:
    """Rotation by pull-back with one usual mistake switched on: the centre at (H/2, W/2) instead of
    ((H-1)/2, (W-1)/2) (``centre_shift=0.5``), or the nearest pixel instead of bilinear."""
    xp = B.namespace(image)
    h, w = image.shape
    ch, cw = (h - 1) / 2.0 + centre_shift, (w - 1) / 2.0 + centre_shift
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    out = xp.full((h, w), fill, dtype=image.dtype)
    for i in range(h):
        for j in range(w):
            r = cos * (i - ch) + sin * (j - cw) + ch
            c = -sin * (i - ch) + cos * (j - cw) + cw
            if nearest:
                ri, ci = math.floor(r + 0.5), math.floor(c + 0.5)
                out[i, j] = image[ri, ci] if 0 <= ri < h and 0 <= ci < w else fill
                continue
            r0, c0 = math.floor(r), math.floor(c)
            total = 0.0
            for dr, wr in ((0, 1 - (r - r0)), (1, r - r0)):
                for dc, wc in ((0, 1 - (c - c0)), (1, c - c0)):
                    rr, cc = r0 + dr, c0 + dc
                    value = B.float_of(image[rr, cc]) if 0 <= rr < h and 0 <= cc < w else fill
                    total += wr * wc * value
            out[i, j] = total
    return out


def check_rotate(fn: Callable[[Any, float, float], Any]) -> None:
    """``fn(image, angle, fill)``: an (H, W) image turned ``angle`` degrees counter-clockwise about
    its centre ((H-1)/2, (W-1)/2), bilinear, ``fill`` outside; compared with
    :func:`nnopt_lab.preprocessing.augmentation.rotate` (equal to ``scipy.ndimage.rotate``, order 1)
    on a fixed 7×9 image at four angles.

    See: chapters/02_2_data_augmentation.ipynb
    """
    image, fill = _rotation_image(), 0.25
    xp = _NUMPY64.xp
    for angle in _ANGLES:
        want = A.rotate(image[None, None], angle, fill=fill)[0, 0]
        got = checks.as_float64(checks.call("rotate", fn, xp.asarray(image, copy=True), angle, fill),
                                f"rotate(image, {angle:g}, fill={fill})", tuple(image.shape))
        if _close(got, want):
            continue
        mistakes = {
            "it turns the other way: a positive angle is COUNTER-clockwise (the output pixel pulls from "
            "r = cos·(i−c_H) + sin·(j−c_W) + c_H)": A.rotate(image[None, None], -angle, fill=fill)[0, 0],
            "the centre is at (H/2, W/2); the centre of an H×W pixel grid is ((H−1)/2, (W−1)/2)":
                _sample(image, angle, fill, centre_shift=0.5),
            "that is the nearest pixel; interpolate bilinearly between the four neighbours":
                _sample(image, angle, fill, nearest=True),
            "outside the image the value must be `fill`, not 0": A.rotate(image[None, None], angle, fill=0.0)[0, 0],
        }
        for message, values in mistakes.items():
            if _close(got, values):
                raise ExerciseFailed(f"✗ rotate(image, {angle:g}°): {message}")
        i, j = next((i, j) for i in range(image.shape[0]) for j in range(image.shape[1])
                    if abs(B.float_of(got[i, j]) - B.float_of(want[i, j])) > 1e-9)
        raise ExerciseFailed(f"✗ rotate(image, {angle:g}°): pixel ({i}, {j}) is {B.float_of(got[i, j]):.6g}, "
                             f"expected {B.float_of(want[i, j]):.6g}")
    print(f"✓ rotate matches nnopt_lab's rotate (and so scipy.ndimage.rotate, order 1) at "
          f"{', '.join(f'{a:g}°' for a in _ANGLES)}")
