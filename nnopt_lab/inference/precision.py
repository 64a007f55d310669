r"""Lower-precision floats: fp16 and bf16 values by casting, their error, and a model cast in place.

Two 16-bit formats halve the bytes of float32 (seed §3.4.3.1, fp32/fp64 → fp16/bf16):

* **float16** (IEEE half): 5 exponent bits, 10 fraction bits. Unit roundoff
  :math:`u = 2^{-11} \approx 4.9\cdot10^{-4}`; largest value 65504, anything with
  :math:`|x| \ge 65520` rounds to inf; normal down to :math:`2^{-14} \approx 6.1\cdot10^{-5}`,
  subnormal down to :math:`2^{-24} \approx 6\cdot10^{-8}`, then 0.
* **bfloat16** ("brain float"): the upper half of a float32 -- float32's 8 exponent bits, 7
  fraction bits. :math:`u = 2^{-8} \approx 3.9\cdot10^{-3}` (coarser), but the range of
  float32 (up to :math:`3.39\cdot10^{38}`): no overflow in practice.

Rounding is to nearest, ties to even, as torch's ``.to(torch.float16)`` /
``.to(torch.bfloat16)``, equal bit for bit (float64 inputs are rounded to float32 first, as
torch does). For a value in the normal range the relative error is at most u.

**Overflow policy.** A finite value that float16 cannot hold would silently become inf and
then NaN in a model (inf - inf). :func:`cast` raises (``overflow="raise"``, the default) and
names how many values overflow; ``overflow="inf"`` gives IEEE's inf, as torch does, and
:func:`precision_error` reports the count instead of raising. :func:`cast_model` always raises.

See: chapters/05_3_quantization.ipynb
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from .. import backend as B
from ..nn.layers import Module
from ..validation import check_choice

__all__ = ["LOW_PRECISION", "UNIT_ROUNDOFF", "LARGEST", "OVERFLOWS", "cast", "precision_error", "CastModel",
           "cast_model"]

LOW_PRECISION = ("float16", "bfloat16")
"""The 16-bit float formats :func:`cast` rounds to."""

UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
"""Largest relative rounding error in the normal range: half the spacing at 1."""

LARGEST = {"float16": 65504.0, "bfloat16": (2.0 - 2.0 ** -7) * 2.0 ** 127}
"""Largest finite value of each format."""

OVERFLOWS = {"float16": 65520.0, "bfloat16": 2.0 ** 128 - 2.0 ** 119}
"""The smallest magnitude that rounds to inf: half-way from :data:`LARGEST` to the next power of 2."""

OVERFLOW_POLICIES = ("raise", "inf")


def _dtype(dtype: Any) -> str:
    if hasattr(dtype, "shape") or not isinstance(dtype, str):
        raise TypeError(f"dtype must be one of {LOW_PRECISION}, got {type(dtype).__name__}")
    return check_choice("dtype", dtype, LOW_PRECISION)


def _float_array(name: str, x: Any) -> Any:
    try:
        xp = B.namespace(x)
    except TypeError:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}") from None
    if B.dtype_name(x) not in ("float16", "bfloat16", "float32", "float64"):
        raise TypeError(f"{name} must be a floating-point array, got dtype {B.dtype_name(x)}")
    nans = int(B.float_of(xp.sum(xp.astype(xp.isnan(x), xp.int64))))
    if nans:
        raise ValueError(f"{name} must not hold NaN (a NaN has no rounding), got {nans} NaN entries")
    return xp


def _round(x: Any, dtype: str) -> Any:
    """The rounded values: float16 arrays for float16, float32 arrays holding bfloat16 values for bfloat16."""
    xp = B.namespace(x)
    if dtype == "bfloat16":
        return B.round_bfloat16(x)
    if B.dtype_name(x) == "float16":
        return B.copy(x)
    with warnings.catch_warnings():                 # numpy warns of the overflow that cast() reports itself
        warnings.simplefilter("ignore", RuntimeWarning)
        return B.to_backend(xp.astype(x, xp.float32), B.backend_of(x), dtype="float16")   # via float32, as torch


def _overflowed(x: Any, y: Any) -> Any:
    """Entries finite in ``x`` and infinite in ``y`` (boolean array)."""
    xp = B.namespace(x)
    return xp.isinf(y) & ~xp.isinf(x)


def cast(x: Any, dtype: str, overflow: str = "raise") -> Any:
    r"""``x`` rounded to float16 or bfloat16 (nearest, ties to even): the values a 16-bit store keeps.

    .. math::

        \hat x = \operatorname{fl}_{16}(\operatorname{fl}_{32}(x)),\qquad
        |\hat x - x| \le u\,|x| \text{ in the normal range}

    Parameters
    ----------
    x : float array (float16, bfloat16, float32 or float64), any shape, no NaN (±inf stay ±inf)
    dtype : {"float16", "bfloat16"}
    overflow : {"raise", "inf"}
        What to do with finite values past the format's range (:data:`OVERFLOWS`: 65520 for
        float16): ``"raise"`` a ValueError that counts them; ``"inf"`` give ±inf, as IEEE and torch.

    Returns
    -------
    array on ``x``'s backend: float16 for ``"float16"`` (``B.to_backend(..., dtype="float16")``);
    float32 holding bfloat16 values for ``"bfloat16"`` (numpy has no bfloat16;
    :func:`nnopt_lab.backend.round_bfloat16`). Equal bit for bit to torch's
    ``x.to(torch.float16)`` / ``x.to(torch.bfloat16).float()``, ties and subnormals included.

    Raises
    ------
    ValueError
        NaN in ``x``; an overflow with ``overflow="raise"``.

    Seed: §3.4.3.1 (fp32/fp64 → fp16/bf16).
    See: chapters/05_3_quantization.ipynb
    """
    xp = _float_array("x", x)
    dtype = _dtype(dtype)
    if hasattr(overflow, "shape") or not isinstance(overflow, str):
        raise TypeError(f"overflow must be one of {OVERFLOW_POLICIES}, got {type(overflow).__name__}")
    check_choice("overflow", overflow, OVERFLOW_POLICIES)
    y = _round(x, dtype)
    if overflow == "raise":
        bad = _overflowed(x, y)
        count = int(B.float_of(xp.sum(xp.astype(bad, xp.int64))))
        if count:
            worst = B.float_of(xp.max(xp.abs(xp.astype(x[bad], xp.float64))))
            raise ValueError(f"x has {count} entries beyond the {dtype} range (|x| >= {OVERFLOWS[dtype]:.6g} rounds "
                             f"to inf; the largest {dtype} is {LARGEST[dtype]:.6g}), e.g. |x| = {worst:.6g}: scale or "
                             f"clip them, use bfloat16, or pass overflow='inf' for IEEE infinities")
    return y


def precision_error(x: Any, dtype: str) -> dict:
    r"""The rounding error of :func:`cast`: largest absolute and relative error and the RMS error.

    .. math::

        \text{max\_abs} = \max_i |\hat x_i - x_i|,\quad
        \text{max\_rel} = \max_{x_i \ne 0} \frac{|\hat x_i - x_i|}{|x_i|},\quad
        \text{rmse} = \sqrt{\tfrac{1}{n}\textstyle\sum_i (\hat x_i - x_i)^2}

    in float64, over the entries that stay finite. Overflows are not hidden: they are counted
    in ``"overflow"`` (and left out of the three errors, which would be inf); values that round
    to 0 are counted in ``"underflow"`` (their relative error is 1).

    Parameters
    ----------
    x : float array, at least one entry, no NaN (±inf entries are left out)
    dtype : {"float16", "bfloat16"}

    Returns
    -------
    dict
        ``max_abs``, ``max_rel``, ``rmse`` (floats), ``overflow``, ``underflow``, ``n`` (ints: the
        entries counted), ``unit_roundoff`` (:data:`UNIT_ROUNDOFF`, the bound on ``max_rel`` in
        the normal range).

    See: chapters/05_3_quantization.ipynb
    """
    xp = _float_array("x", x)
    dtype = _dtype(dtype)
    if math.prod(tuple(x.shape)) == 0:
        raise ValueError(f"x must have at least one entry, got shape {tuple(x.shape)}")
    y = _round(x, dtype)
    x64, y64 = xp.astype(x, xp.float64), xp.astype(B.to_backend(y, B.backend_of(x), dtype="float32"), xp.float64)
    over = _overflowed(x64, y64)
    kept = ~xp.isinf(x64) & ~over
    error = xp.where(kept, xp.abs(y64 - x64), xp.zeros_like(x64))
    nonzero = kept & (x64 != 0)
    rel = xp.where(nonzero, error / xp.where(nonzero, xp.abs(x64), xp.ones_like(x64)), xp.zeros_like(x64))
    n = int(B.float_of(xp.sum(xp.astype(kept, xp.int64))))
    count = (lambda mask: int(B.float_of(xp.sum(xp.astype(mask, xp.int64)))))
    return {"max_abs": B.float_of(xp.max(error)), "max_rel": B.float_of(xp.max(rel)),
            "rmse": math.sqrt(B.float_of(xp.sum(error * error)) / n) if n else 0.0,
            "overflow": count(over), "underflow": count(nonzero & (y64 == 0)), "n": n,
            "unit_roundoff": UNIT_ROUNDOFF[dtype]}


class CastModel:
    """What :func:`cast_model` changed, to undo it: the model and its original arrays.

    ``restore()`` puts back exactly the arrays that were there (not copies: bit for bit);
    ``with cast_model(model, "float16"): ...`` restores on leaving the block.

    Attributes
    ----------
    model : Module
    dtype : {"float16", "bfloat16"}
    originals : dict of (module, kind, name) -> array
        ``kind`` is ``"param"`` or ``"buffer"``.

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, model: Module, dtype: str, originals: dict):
        if not isinstance(model, Module):
            raise TypeError(f"model must be an nnopt_lab.nn Module, got {type(model).__name__}")
        self.model, self.dtype = model, _dtype(dtype)
        if not isinstance(originals, dict):
            raise TypeError(f"originals must be a dict, got {type(originals).__name__}")
        self.originals = originals

    def restore(self) -> Module:
        """Put the original arrays back; returns the model."""
        for (module, kind, name), value in self.originals.items():
            if kind == "param":
                module._params[name].data = value
            else:
                module._buffers[name] = value
        return self.model

    def __enter__(self) -> CastModel:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"CastModel({self.dtype}, {len(self.originals)} arrays rounded)"


def _named_modules(module: Module, prefix: str = "") -> list:
    out = [(prefix, module)]
    for name, child in module._modules.items():
        out += _named_modules(child, f"{prefix}.{name}" if prefix else name)
    return out


def cast_model(model: Module, dtype: str) -> CastModel:
    r"""Round every floating parameter and buffer of ``model`` to ``dtype``, in place (``model.half()`` simulated).

    Weights, biases, BatchNorm's parameters and running statistics take the values a 16-bit
    model stores (:func:`cast`), kept in the model's own dtype (float32/float64) so every layer
    runs unchanged: the model then computes with fp16/bf16 *weights* (activations stay in the
    model's dtype; cast them with :func:`cast` to simulate 16-bit activations). Integer
    buffers (``num_batches_tracked``) are left alone. Every array is rounded and checked before
    any is replaced: on an error the model is unchanged.

    Parameters
    ----------
    model : Module
    dtype : {"float16", "bfloat16"}

    Returns
    -------
    CastModel
        ``restore()`` (or leaving a ``with`` block) puts the original arrays back: the
        state_dict is then bit for bit the one before.

    Raises
    ------
    ValueError
        A parameter or buffer with values beyond the format's range (named, with the count):
        a 16-bit model never holds an inf that float32 did not (see the module's overflow policy).

    Seed: §3.4.3.1 (fp32 → fp16/bf16 weights).
    See: chapters/05_3_quantization.ipynb
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab.nn Module, got {type(model).__name__}")
    dtype = _dtype(dtype)
    originals, rounded = {}, {}
    seen = set()
    for prefix, module in _named_modules(model):
        if id(module) in seen:
            continue
        seen.add(id(module))
        items = [("param", name, p.data) for name, p in module._params.items()]
        items += [("buffer", name, b) for name, b in module._buffers.items()]
        for kind, name, value in items:
            if B.dtype_name(value) not in ("float16", "bfloat16", "float32", "float64"):
                continue
            key = f"{prefix}.{name}" if prefix else name
            try:
                low = cast(value, dtype)
            except ValueError as error:
                raise ValueError(f"model's {key}: {error}".replace("pass overflow='inf' for IEEE infinities",
                                                                   "a 16-bit model must not hold inf")) from None
            xp = B.namespace(value)
            rounded[(module, kind, name)] = xp.astype(B.asarray(low, value) if B.dtype_name(value) in B.DTYPES
                                                      else low, value.dtype)
            originals[(module, kind, name)] = value
    for (module, kind, name), value in rounded.items():
        if kind == "param":
            module._params[name].data = value
        else:
            module._buffers[name] = value
    return CastModel(model, dtype, originals)
