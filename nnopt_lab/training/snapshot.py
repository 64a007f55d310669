"""Save a model's state on entering a block and put it back on leaving it, whatever happens inside.

>>> with preserved(model):                       # doctest: +SKIP
...     fit(model, train, epochs=3)             # a probe run: train, measure ...
>>> # ... and the model is exactly as before: weights, buffers, masks, gradients, train/eval mode

What is saved, per part (each can be switched off):

* ``mode`` -- the ``training`` flag of every sub-module (not only the root's);
* ``weights`` -- every parameter's values (copies), mask, ``requires_grad``, and every buffer
  (BatchNorm's running statistics) -- training changes them in place;
* ``grads`` -- every parameter's ``.grad`` (copies: clipping rescales gradients in place).

One helper instead of a hand-written save/restore in each tool that probes a model
(:func:`~nnopt_lab.training.lr_range_test`, :func:`~nnopt_lab.training.gradient_noise`,
:func:`~nnopt_lab.training.predict`).

See: chapters/04_1_learning_rate.ipynb
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from .. import backend as B
from ..nn.layers import Module
from ..validation import check_bool

__all__ = ["preserved"]


def _copy_or_none(x: Any) -> Any:
    return None if x is None else B.copy(x)


@contextmanager
def preserved(model: Module, *, mode: bool = True, weights: bool = True, grads: bool = True) -> Iterator[Module]:
    """Restore ``model``'s mode, weights (with masks and buffers) and gradients when the block ends.

    Parameters
    ----------
    model : Module
    mode, weights, grads : bool, default True
        Which parts to save and restore (see the module docstring). Restoring assigns the saved
        arrays back (``p.data = saved``), so it also undoes a ``model.to(...)`` or a
        ``load_state_dict`` made inside the block.

    Yields
    ------
    Module
        ``model`` itself.

    See: chapters/04_1_learning_rate.ipynb
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    mode, weights, grads = check_bool("mode", mode), check_bool("weights", weights), check_bool("grads", grads)
    modules = list(model.modules())
    params = [p for m in modules for p in m._params.values()]
    saved_modes = [m.training for m in modules] if mode else None
    saved_params = [(B.copy(p.data), p.mask, p.requires_grad) for p in params] if weights else None
    saved_buffers = [{k: _copy_or_none(v) for k, v in m._buffers.items()} for m in modules] if weights else None
    saved_grads = [_copy_or_none(p.grad) for p in params] if grads else None
    try:
        yield model
    finally:
        if saved_modes is not None:
            for m, training in zip(modules, saved_modes):
                m.training = training
        if saved_params is not None:
            for p, (data, mask, requires_grad) in zip(params, saved_params):
                p.data, p.mask, p.requires_grad = data, mask, requires_grad
            for m, buffers in zip(modules, saved_buffers):
                m._buffers.clear()
                m._buffers.update(buffers)
        if saved_grads is not None:
            for p, g in zip(params, saved_grads):
                p.grad = g
