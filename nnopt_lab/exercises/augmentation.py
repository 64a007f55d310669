"""Self-checks for the exercises of chapter 2.2 (data augmentation). Each runs the learner's function
on known images and says what the answer actually did (the other flip, the other direction, a
corner instead of the centre, ...).

See: chapters/02_2_data_augmentation.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

from .. import backend as B
from .checks import ExerciseFailed
from ..preprocessing import augmentation as A
from . import checks

__all__ = ["check_hflip", "check_rot90_clockwise", "check_center_crop"]

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
