"""Self-checks for the exercises of chapter 1. Each compares a learner's function with the
reference on several cases and says what is wrong, not only that it is wrong.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from .. import measure, models
from .checks import ExerciseFailed
from ..nn import Conv2d, Linear, Sequential
from . import checks

__all__ = ["check_linear_params", "check_conv_flops", "check_model_bytes"]

_LINEAR_CASES = [(64, 100), (100, 10), (784, 300), (3, 1)]
_CONV_CASES = [(1, 16, 3, 8, 8), (16, 32, 3, 4, 4), (3, 8, 5, 28, 28)]


def check_linear_params(fn) -> bool:
    """``fn(n_in, n_out)`` must give the parameter count of ``Linear(n_in, n_out)``."""
    for n_in, n_out in _LINEAR_CASES:
        want = Linear(n_in, n_out).num_parameters()
        got = checks.call("linear_params", fn, n_in, n_out)
        if got == want:
            continue
        if got == n_in * n_out:
            raise ExerciseFailed(f"Linear({n_in}, {n_out}): you gave {got} = n_in·n_out — the bias adds "
                                 f"n_out = {n_out} more parameters.")
        if got == (n_out + 1) * n_in:
            raise ExerciseFailed(f"Linear({n_in}, {n_out}): you gave {got}; there is one bias per OUTPUT, "
                                 f"so (n_in + 1)·n_out = {want}.")
        raise ExerciseFailed(f"Linear({n_in}, {n_out}) has {want} parameters, you gave {got}.")
    print(f"✓ linear_params is right on {len(_LINEAR_CASES)} layers (weights n_in·n_out plus n_out biases)")
    return True


def check_conv_flops(fn) -> bool:
    """``fn(c_in, c_out, k, h_out, w_out)``: forward FLOPs of one image through a k×k Conv2d."""
    for c_in, c_out, k, h, w in _CONV_CASES:
        layer = Sequential(Conv2d(c_in, c_out, k, padding=(k - 1) // 2))
        want = measure.flops(layer, (c_in, h, w)).total_flops
        got = checks.call("conv_flops", fn, c_in, c_out, k, h, w)
        if got == want:
            continue
        if got == want // 2:
            raise ExerciseFailed(f"conv {c_in}->{c_out}, {k}x{k}, output {h}x{w}: {got} is the number of "
                                 f"multiply-accumulates; each is 2 FLOPs (a multiply and an add): {want}.")
        if got == 2 * c_in * c_out * k * k:
            raise ExerciseFailed("you counted one output position; the kernel is applied at every one of the "
                                 f"h_out·w_out = {h * w} positions.")
        raise ExerciseFailed(f"conv {c_in}->{c_out}, {k}x{k}, output {h}x{w}: expected {want:,} FLOPs, got {got:,}.")
    print(f"✓ conv_flops is right on {len(_CONV_CASES)} layers (2·C_in·k²·C_out·H_out·W_out)")
    return True


def check_model_bytes(float32_bytes: int, int8_bytes: int) -> bool:
    """Sizes of LeNet-300-100 (784-300-100-10) in bytes as float32 and as int8."""
    lenet = models.mlp((784, 300, 100, 10))
    want32, want8 = measure.model_bytes(lenet, "float32"), measure.model_bytes(lenet, "int8")
    if float32_bytes != want32:
        hint = " (did you count parameters instead of bytes? float32 is 4 bytes each)" \
            if float32_bytes == lenet.num_parameters() else ""
        raise ExerciseFailed(f"float32: expected {want32:,} bytes, got {float32_bytes:,}{hint}")
    if int8_bytes != want8:
        raise ExerciseFailed(f"int8: expected {want8:,} bytes (1 byte per parameter), got {int8_bytes:,}")
    print(f"✓ LeNet-300-100 takes {want32 / 1024:,.0f} KiB as float32 and {want8 / 1024:,.0f} KiB as int8 "
          f"({want32 // want8}× smaller)")
    return True
