"""Optimizers, from scratch, with torch.optim's update rules and defaults.

An optimizer holds a list of :class:`~nnopt_lab.nn.layers.Parameter` and one ``state`` dict
per parameter. :meth:`Optimizer.step` updates every trainable parameter that has a gradient
*in place* and then re-applies pruning masks, so a pruned weight stays exactly zero.
Frozen parameters (``requires_grad = False``) are skipped.

See: chapters/01_why_optimize.ipynb (plain SGD), chapters/04_3_optimizers.ipynb (the family)
"""
from __future__ import annotations

from typing import Any, Iterable

from .. import backend as B
from ..nn.layers import Module, Parameter

__all__ = ["Optimizer", "SGD", "check_lr"]


def check_lr(lr: Any) -> float:
    """Validate a learning rate: a finite float >= 0."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0.0 <= lr < float("inf"):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


class Optimizer:
    """Base class: parameters, per-parameter state, masks, state_dict.

    Subclasses implement :meth:`update` for one parameter.

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float
        The learning rate; schedules change ``optimizer.lr`` between steps.
    """

    def __init__(self, params: Module | Iterable[Parameter], lr: float):
        self.params = params.parameters() if isinstance(params, Module) else list(params)
        if not self.params:
            raise ValueError("params is empty: the optimizer has nothing to update")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params[{i}] must be a Parameter, got {type(p).__name__}")
        self.lr = check_lr(lr)
        self.state: list[dict] = [{} for _ in self.params]
        self.step_count = 0

    def zero_grad(self) -> None:
        """Forget the gradients (our modules overwrite them anyway)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Apply one update to every trainable parameter with a gradient, then its mask."""
        self.step_count += 1
        for p, state in zip(self.params, self.state):
            if p.grad is None or not p.requires_grad:
                continue
            grad = p.grad if p.mask is None else p.grad * p.mask
            self.update(p, grad, state)
            if p.mask is not None:
                p.data *= p.mask

    def update(self, p: Parameter, grad: Any, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The optimizer's settings (learning rate included) as a dict."""
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """Settings and per-parameter state (arrays stay on their backend)."""
        return {"hyperparameters": self.hyperparameters(), "step_count": self.step_count,
                "state": [dict(s) for s in self.state]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore what :meth:`state_dict` gave (same number of parameters)."""
        if len(sd["state"]) != len(self.params):
            raise ValueError(f"state_dict has state for {len(sd['state'])} parameters, "
                             f"this optimizer has {len(self.params)}")
        for key, value in sd["hyperparameters"].items():
            setattr(self, key, value)
        self.step_count = sd["step_count"]
        self.state = [{k: (B.asarray(v, p.data) if hasattr(v, "shape") and v.ndim else v)
                       for k, v in s.items()} for s, p in zip(sd["state"], self.params)]

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"


class SGD(Optimizer):
    r"""Plain stochastic gradient descent: :math:`\theta \leftarrow \theta - \eta\, g`.

    Matches ``torch.optim.SGD(params, lr)`` (momentum and the rest of the family live in
    chapter 4.3).
    """

    def __init__(self, params, lr: float = 1e-3):
        super().__init__(params, lr)

    def update(self, p, grad, state):
        p.data -= self.lr * grad
