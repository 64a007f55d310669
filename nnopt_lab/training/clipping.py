r"""Gradient clipping: bound the gradient before the optimizer uses it.

* :func:`clip_grad_norm` -- rescale all gradients together so that their total norm is at most
  ``max_norm`` (torch.nn.utils.clip_grad_norm_);
* :func:`clip_grad_value` -- clamp every gradient entry to ``[-clip_value, clip_value]``
  (torch.nn.utils.clip_grad_value_);
* :class:`ClippedOptimizer` -- wraps any :class:`~nnopt_lab.training.optim.Optimizer` so that
  its ``step()`` clips first.

Why a wrapper: clipping must happen *between* the backward pass and the update. An optimizer
whose ``step`` clips and then delegates puts the clip exactly there -- for every optimizer, in
:func:`nnopt_lab.training.fit` and in any hand-written loop alike, with learning-rate schedules
still working (``lr`` is forwarded). Inside ``fit`` a :class:`~nnopt_lab.training.Callback` with
``on_after_backward`` could clip too (it runs at the same place); the wrapper keeps the clip
with the optimizer, so a checkpoint or a loop that does not use ``fit`` clips the same way.

See: chapters/04_3_optimizers.ipynb (seed §3.3.3)
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from .. import backend as B
from ..nn.layers import Module, Parameter
from ..validation import as_float, check_array, check_number, check_sequence
from .optim import Optimizer

__all__ = ["clip_grad_norm", "clip_grad_value", "total_grad_norm", "ClippedOptimizer"]


def _with_grads(params: Module | Parameter | Iterable[Parameter]) -> list[Parameter]:
    """The trainable parameters that have a gradient."""
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Parameter):
        params = [params]
    else:
        params = check_sequence("params", params)
    out = []
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"params[{i}] must be a Parameter, got {type(p).__name__}")
        if p.grad is not None and p.requires_grad:
            out.append(p)
    return out


def _check_norm_type(norm_type: Any) -> float:
    """A p-norm's order: a number > 0, ``float('inf')`` included (the interval check of validation)."""
    value = as_float(norm_type)
    if value is None or not value > 0:          # NaN fails ``> 0``
        error = TypeError if value is None else ValueError
        raise error(f"norm_type must be a number > 0 or float('inf'), got {norm_type!r}")
    return value


def total_grad_norm(grads: list, norm_type: float = 2.0) -> Any:
    r"""The p-norm of all gradients viewed as one vector, as a 0-d array (no GPU sync).

    .. math:: \|g\|_p = \Big(\sum_k \|g_k\|_p^p\Big)^{1/p}, \qquad
              \|g\|_\infty = \max_k \max_i |g_{k,i}|

    computed, like torch, as the norm of the per-tensor norms.

    See: chapters/04_3_optimizers.ipynb (not in the seed; a guard for §3.3.3's optimizers)
    """
    norm_type = _check_norm_type(norm_type)
    grads = check_sequence("grads", grads)
    if not grads:
        raise ValueError("grads is empty: there is no gradient to measure")
    for i, g in enumerate(grads):
        check_array(f"grads[{i}]", g)
    xp = B.namespace(grads[0])
    norms = xp.stack([xp.linalg.vector_norm(g, ord=norm_type) for g in grads])
    return xp.linalg.vector_norm(norms, ord=norm_type)


def clip_grad_norm(params, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> Any:
    r"""Rescale the gradients in place so that their total norm is at most ``max_norm``.

    .. math:: g_k \leftarrow g_k \cdot \min\Big(1, \frac{c}{\|g\|_p + 10^{-6}}\Big)

    with :math:`\|g\|_p` the norm of all gradients together (:func:`total_grad_norm`). Frozen
    parameters and parameters without a gradient are left out, as in torch. A pruned weight's
    gradient counts as 0 in the norm (``p.masked(p.grad)``, what torch.nn.utils.prune's
    ``weight_orig.grad`` holds), but ``p.grad`` is only rescaled -- never replaced or masked here:
    the optimizer applies the mask.

    Parameters
    ----------
    params : Module, Parameter or iterable of Parameter
    max_norm : float >= 0 (:math:`c`)
    norm_type : float > 0 or ``float('inf')``, default 2
    error_if_nonfinite : bool, default False
        Raise FloatingPointError when the total norm is nan or inf (this reads the norm, which
        syncs a GPU).

    Returns
    -------
    0-d array
        The total norm *before* clipping (like ``torch.nn.utils.clip_grad_norm_``); 0.0 when no
        parameter has a gradient.

    See: chapters/04_3_optimizers.ipynb
    """
    max_norm = check_number("max_norm", max_norm, 0.0)
    norm_type = _check_norm_type(norm_type)
    with_grads = _with_grads(params)
    if not with_grads:
        return 0.0
    total = total_grad_norm([p.masked(p.grad) for p in with_grads], norm_type)   # pruned entries count 0
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise FloatingPointError(f"the total gradient norm (ord {norm_type}) is {float(total)}; "
                                 f"it cannot be clipped")
    xp = B.namespace(total)
    coef = xp.clip(max_norm / (total + 1e-6), max=1.0)
    for p in with_grads:
        p.grad *= coef                                  # in place, as torch does
    return total


def clip_grad_value(params, clip_value: float) -> None:
    r"""Clamp every gradient entry in place: :math:`g \leftarrow \min(\max(g, -c), c)`.

    Parameters
    ----------
    params : Module, Parameter or iterable of Parameter
    clip_value : float >= 0 (:math:`c`)

    See: chapters/04_3_optimizers.ipynb
    """
    clip_value = check_number("clip_value", clip_value, 0.0)
    for p in _with_grads(params):
        p.grad[...] = B.namespace(p.grad).clip(p.grad, -clip_value, clip_value)


class ClippedOptimizer(Optimizer):
    """An optimizer whose ``step()`` clips the gradients, then runs ``optimizer.step()``.

    >>> opt = ClippedOptimizer(Adam(model, lr=1e-3), max_norm=1.0)   # doctest: +SKIP
    >>> fit(model, train, epochs=5, optimizer=opt)                    # doctest: +SKIP

    Parameters
    ----------
    optimizer : Optimizer
    max_norm : float >= 0, optional
        Clip by total norm (:func:`clip_grad_norm`).
    clip_value : float >= 0, optional
        Clip each entry (:func:`clip_grad_value`). Give exactly one of the two.
    norm_type : float > 0 or inf, default 2

    Attributes
    ----------
    last_norm : 0-d array or None
        The total norm before the last clip (``max_norm`` mode), kept on the device.

    ``lr``, ``params``, ``state``, ``state_dict`` and ``load_state_dict`` are the wrapped
    optimizer's, so schedules and checkpoints work unchanged.

    See: chapters/04_3_optimizers.ipynb (not in the seed; a guard for §3.3.3's optimizers)
    """

    def __init__(self, optimizer: Optimizer, max_norm: float | None = None,
                 clip_value: float | None = None, norm_type: float = 2.0):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an nnopt_lab Optimizer, got {type(optimizer).__name__}")
        if (max_norm is None) == (clip_value is None):
            raise ValueError(f"give exactly one of max_norm and clip_value, got max_norm={max_norm!r}, "
                             f"clip_value={clip_value!r}")
        self.optimizer = optimizer
        self.max_norm = None if max_norm is None else check_number("max_norm", max_norm, 0.0)
        self.clip_value = None if clip_value is None else check_number("clip_value", clip_value, 0.0)
        self.norm_type = _check_norm_type(norm_type)
        self.last_norm = None

    # the wrapped optimizer's attributes, read and written through
    lr = property(lambda self: self.optimizer.lr, lambda self, v: setattr(self.optimizer, "lr", v))
    params = property(lambda self: self.optimizer.params)
    state = property(lambda self: self.optimizer.state)
    step_count = property(lambda self: self.optimizer.step_count)

    def step(self) -> None:
        """Clip the trainable gradients, then take the wrapped optimizer's step."""
        if self.max_norm is not None:
            self.last_norm = clip_grad_norm(self.optimizer.params, self.max_norm, self.norm_type)
        else:
            clip_grad_value(self.optimizer.params, self.clip_value)
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def hyperparameters(self) -> dict:
        return self.optimizer.hyperparameters()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.optimizer.load_state_dict(sd)

    def __repr__(self) -> str:
        how = f"max_norm={self.max_norm}, norm_type={self.norm_type}" if self.max_norm is not None \
            else f"clip_value={self.clip_value}"
        return f"ClippedOptimizer({self.optimizer!r}, {how})"
