"""Self-checks for the exercises of chapter 1. Each compares a learner's function with the
reference on several cases and says what is wrong, not only that it is wrong.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from .. import backend as B, measure, models
from ..nn import functional as F
from .checks import ExerciseFailed
from ..nn import Conv2d, Linear, Sequential
from . import checks

__all__ = ["check_linear_params", "check_conv_flops", "check_model_bytes", "check_linear_backward"]

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


def _linear_case():
    """A fixed small batch: x (5, 4), W (3, 4), dy (5, 3) in float64 -- no square matrix, so that
    a transposed answer shows as a wrong shape."""
    g = B.generator(7)
    numpy64 = B.get_backend("numpy", "float64")
    x, weight, dout = (numpy64.asarray(g.standard_normal(shape)) for shape in ((5, 4), (3, 4), (5, 3)))
    return x, weight, dout


def _gradient(name: str, got, want, variants: dict) -> str | None:
    """None when ``got`` equals ``want``; else the first named mistake it equals, or where it differs."""
    want = checks.as_float64(want, name)
    shape = tuple(want.shape)
    try:
        got = B.to_numpy(got).astype("float64")
    except Exception:                              # noqa: BLE001 - a learner may return anything
        return f"{name} could not be read as an array of numbers ({type(got).__name__})"
    for message, value in variants.items():
        value = checks.as_float64(value, name)
        if tuple(got.shape) == tuple(value.shape) and (abs(got - value) <= 1e-9 * (1 + abs(value))).all() \
                and not (tuple(got.shape) == shape and (abs(got - want) <= 1e-9 * (1 + abs(want))).all()):
            return message
    if tuple(got.shape) != shape:
        return f"{name} has shape {tuple(got.shape)}, expected {shape}"
    error = float(abs(got - want).max())
    if not error <= 1e-9 * (1 + float(abs(want).max())):
        return f"{name} differs from the reference by up to {error:.3g}"
    return None


def check_linear_backward(fn) -> None:
    r"""``fn(dout, x, weight)`` must return ``(dx, dweight, dbias)`` of :math:`y = xW^\top + b`.

    Compared with :func:`nnopt_lab.nn.functional.linear_backward` (itself checked against torch
    autograd) on a fixed batch, x (5, 4), W (3, 4), dy (5, 3); the usual mistakes are named.

    See: chapters/01_why_optimize.ipynb
    """
    x, weight, dout = _linear_case()
    want = F.linear_backward(dout, ("linear", x, weight, True))
    answer = checks.call("linear_backward", fn, dout.copy(), x.copy(), weight.copy())
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise ExerciseFailed("✗ linear_backward must return three arrays (dx, dweight, dbias), "
                             f"got {type(answer).__name__}")
    n = x.shape[0]
    mistakes = [
        ("dx", answer[0], want[0], {}),
        ("dweight", answer[1], want[1], {"dweight = xᵀ·dy is the (in, out) transpose: the weight is stored "
                                         "(out, in), so ∂W = dyᵀ·x": x.T @ dout,
                                         "dweight is divided by the batch size: the mean over the batch is "
                                         "already in dy (the loss's backward divides by N)": want[1] / n}),
        ("dbias", answer[2], want[2], {"dbias is the mean of dy over the batch; it is the SUM (each example "
                                       "adds its own dy to the one bias)": want[2] / n,
                                       "dbias summed over the outputs (axis 1); sum over the batch, axis 0":
                                       dout.sum(axis=1)}),
    ]
    for name, got, reference, variants in mistakes:
        message = _gradient(name, got, reference, variants)
        if message is not None:
            raise ExerciseFailed(f"✗ linear_backward: {message}")
    print("✓ linear_backward matches nnopt_lab.nn.functional.linear_backward (and so torch autograd): "
          "∂x = dy·W, ∂W = dyᵀ·x, ∂b = Σₙ dyₙ")
