r"""Optimizers, from scratch, with torch.optim's update rules and defaults (seed §2.3.3, §3.3.3).

An optimizer holds a list of :class:`~nnopt_lab.nn.layers.Parameter` and one ``state`` dict
per parameter. :meth:`Optimizer.step` updates every trainable parameter that has a gradient
*in place* and then re-applies pruning masks, so a pruned weight stays exactly zero (its
optimizer state is masked too, so no stale momentum hides behind the mask).
Frozen parameters (``requires_grad = False``) are skipped.

The family, each equal to the "for-loop" (single-tensor) implementation of torch.optim:

* :class:`SGD` -- gradient descent (梯度下降) with momentum, dampening, Nesterov, weight decay.
  *Full-batch* gradient descent is SGD with the whole training set as one batch
  (``fit(..., batch_size=len(X))``); *stochastic* gradient descent (随机梯度下降) uses mini-batches.
* :class:`Adagrad`, :class:`RMSprop`, :class:`Adam`, :class:`AdamW` -- adaptive methods: a
  per-weight step size from running statistics of the gradient.

Hyper-parameter arithmetic stays in Python floats (no numpy scalars that would upcast float32,
no GPU syncs); the step counter is a Python int.

See: chapters/01_why_optimize.ipynb (plain SGD), chapters/04_3_optimizers.ipynb (the family)
"""
from __future__ import annotations

from typing import Any, Iterable

from .. import backend as B
from ..nn.layers import Module, Parameter
from ..validation import check_bool, check_number, check_sequence

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "check_lr", "OPTIMIZERS"]


def _copy(x: Any) -> Any:
    """A copy of an array on its own backend."""
    return B.namespace(x).asarray(x, copy=True)


# ----------------------------------------------------------------------------- validation
def check_lr(lr: Any) -> float:
    """Validate a learning rate: a finite number >= 0 (numpy/torch scalars accepted), as a float.

    See: chapters/01_why_optimize.ipynb, chapters/04_3_optimizers.ipynb (seed §3.3.3)
    """
    return check_number("lr", lr, 0.0)


def _check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}")
    return (check_number("betas[0]", betas[0], 0.0, 1.0, high_open=True),
            check_number("betas[1]", betas[1], 0.0, 1.0, high_open=True))


# ----------------------------------------------------------------------------- base class
class Optimizer:
    """Base class: parameters, per-parameter state, masks, state_dict.

    Subclasses implement :meth:`update` for one parameter and :meth:`hyperparameters`.

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float
        The learning rate; schedules change ``optimizer.lr`` between steps.

    See: chapters/01_why_optimize.ipynb, chapters/04_3_optimizers.ipynb (seed §3.3.3)
    """

    def __init__(self, params: Module | Iterable[Parameter], lr: float):
        if isinstance(params, Parameter):
            raise TypeError("params must be a Module or an iterable of Parameter, got one Parameter: "
                            "wrap it in a list, [p]")
        self.params = params.parameters() if isinstance(params, Module) else check_sequence("params", params)
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
        """Apply one update to every trainable parameter with a gradient, then its mask.

        The update sees the masked gradient (``p.masked(p.grad)``; ``p.grad`` itself is not
        changed); afterwards the pruned weights and their state entries are set back to zero.
        State made before a ``model.to(...)`` follows the parameter to its new backend.
        """
        self.step_count += 1
        for p, state in zip(self.params, self.state):
            if p.grad is None or not p.requires_grad:
                continue
            _follow(p, state)
            self.update(p, p.masked(p.grad), state)
            if p.mask is not None:
                _apply_mask(p, state)

    def update(self, p: Parameter, grad: Any, state: dict) -> None:  # pragma: no cover - abstract
        """Change ``p.data`` in place from ``grad`` (never modify ``grad`` itself)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The optimizer's settings (learning rate included) as a dict."""
        return {"lr": self.lr}

    def state_dict(self) -> dict:
        """Settings and per-parameter state; arrays are *copies* on their backend, so training
        on after taking a state dict does not change it."""
        return {"hyperparameters": self.hyperparameters(), "step_count": self.step_count,
                "state": [{k: (_copy(v) if hasattr(v, "shape") else v) for k, v in s.items()}
                          for s in self.state]}

    def load_state_dict(self, sd: dict) -> None:
        """Restore what :meth:`state_dict` gave (same optimizer kind, same number of parameters).

        Arrays are copied onto each parameter's backend and dtype.
        """
        if len(sd["state"]) != len(self.params):
            raise ValueError(f"state_dict has state for {len(sd['state'])} parameters, "
                             f"this optimizer has {len(self.params)}")
        own, given = set(self.hyperparameters()), set(sd["hyperparameters"])
        if own != given:
            raise ValueError(f"state_dict holds the settings {sorted(given)} but {type(self).__name__} "
                             f"has {sorted(own)}: it was saved from another kind of optimizer")
        for key, value in sd["hyperparameters"].items():
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        self.step_count = sd["step_count"]
        self.state = [{k: (_copy(B.asarray(v, p.data)) if hasattr(v, "shape") else v)
                       for k, v in s.items()} for s, p in zip(sd["state"], self.params)]

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"


def _apply_mask(p: Parameter, state: dict) -> None:
    """Zero the pruned entries of the weight and of every state array shaped like it (in place)."""
    p.apply_mask()
    for value in state.values():
        if hasattr(value, "shape") and tuple(value.shape) == tuple(p.data.shape):
            value *= p.mask


def _follow(p: Parameter, state: dict) -> None:
    """Move state arrays onto the parameter's backend, device and dtype when ``Module.to`` moved it."""
    for key, value in state.items():
        if hasattr(value, "shape") and not (B.same_kind(value, p.data) and value.dtype == p.data.dtype):
            state[key] = _copy(B.asarray(value, p.data))


# ----------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    r"""(Stochastic) gradient descent with momentum, dampening, Nesterov and weight decay.

    With gradient :math:`g_t`, weight decay :math:`\lambda`, momentum :math:`\mu`,
    dampening :math:`\tau` and learning rate :math:`\eta` (torch.optim.SGD's rule):

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} g_t & t = 1 \\ \mu\, b_{t-1} + (1-\tau)\, g_t & t > 1 \end{cases} \\
        d_t &= \begin{cases} g_t + \mu\, b_t & \text{Nesterov} \\ b_t & \text{otherwise} \end{cases} \\
        \theta_t &= \theta_{t-1} - \eta\, d_t

    With ``momentum=0`` this is plain :math:`\theta \leftarrow \theta - \eta\, g`. Full-batch
    gradient descent (梯度下降) is this optimizer fed the gradient of the whole training set
    (``fit(model, (X, y), batch_size=X.shape[0], ...)``); mini-batches make it stochastic
    gradient descent (随机梯度下降).

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float >= 0, default 1e-3
    momentum : float >= 0, default 0
    dampening : float in [0, 1], default 0
    weight_decay : float >= 0, default 0 (L2 penalty :math:`\tfrac{\lambda}{2}\|\theta\|^2` added to the gradient)
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening = 0`` (as in torch).

    State per parameter: ``momentum_buffer`` (same shape as the parameter) when ``momentum > 0``.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3.1 梯度下降, §3.3.3.2 动态更新)
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = check_number("momentum", momentum, 0.0)
        self.dampening = check_number("dampening", dampening, 0.0, 1.0)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        self.nesterov = check_bool("nesterov", nesterov)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"nesterov=True requires momentum > 0 and dampening = 0, "
                             f"got momentum={momentum!r}, dampening={dampening!r}")

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def update(self, p, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = _copy(grad)
            else:
                buf *= self.momentum
                buf += grad if self.dampening == 0 else (1.0 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * grad


# ----------------------------------------------------------------------------- Adagrad
class Adagrad(Optimizer):
    r"""Adagrad (Duchi, Hazan & Singer 2011): a per-weight step that shrinks with the sum of
    squared gradients seen so far.

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        \tilde\eta_t &= \eta / (1 + (t-1)\,\kappa) \\
        s_t &= s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &= \theta_{t-1} - \tilde\eta_t\, g_t / (\sqrt{s_t} + \epsilon)

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float >= 0, default 1e-2
    lr_decay : float >= 0, default 0 (:math:`\kappa`)
    weight_decay : float >= 0, default 0
    initial_accumulator_value : float >= 0, default 0
    eps : float > 0, default 1e-10

    State per parameter: ``step`` (int), ``sum`` (:math:`s_t`, shaped like the parameter).

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3.3)
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        super().__init__(params, lr)
        self.lr_decay = check_number("lr_decay", lr_decay, 0.0)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        self.initial_accumulator_value = check_number("initial_accumulator_value", initial_accumulator_value, 0.0)
        self.eps = check_number("eps", eps, 0.0, low_open=True)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}

    def update(self, p, grad, state):
        if not state:
            state["step"] = 0
            state["sum"] = B.namespace(p.data).zeros_like(p.data) + self.initial_accumulator_value
        state["step"] = step = state["step"] + 1
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        clr = self.lr / (1.0 + (step - 1) * self.lr_decay)
        total = state["sum"]
        total += grad * grad
        std = B.namespace(total).sqrt(total)
        std += self.eps
        p.data -= clr * grad / std                                   # torch's addcdiv_ order


# ----------------------------------------------------------------------------- RMSprop
class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton 2012): divide the gradient by a running RMS of its history.

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \\
        v_t &= \alpha\, v_{t-1} + (1-\alpha)\, g_t^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1-\alpha)\, g_t \quad\text{(centered only)} \\
        r_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)} \quad\text{or}\quad \sqrt{v_t} + \epsilon \\
        b_t &= \mu\, b_{t-1} + g_t / r_t, \qquad \theta_t = \theta_{t-1} - \eta\, b_t
            \quad (\mu > 0; \text{ else } \theta_t = \theta_{t-1} - \eta\, g_t / r_t)

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float >= 0, default 1e-2
    alpha : float in [0, 1], default 0.99
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    momentum : float >= 0, default 0
    centered : bool, default False

    State per parameter: ``step``, ``square_avg``, and ``momentum_buffer`` / ``grad_avg`` when used.

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3.3)
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__(params, lr)
        self.alpha = check_number("alpha", alpha, 0.0, 1.0)
        self.eps = check_number("eps", eps, 0.0, low_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        self.momentum = check_number("momentum", momentum, 0.0)
        self.centered = check_bool("centered", centered)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "centered": self.centered}

    def update(self, p, grad, state):
        xp = B.namespace(p.data)
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if self.momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if self.centered:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1.0 - self.alpha) * grad * grad               # torch's addcmul_ order
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg += (1.0 - self.alpha) * (grad - grad_avg)       # torch's lerp_
            avg = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += self.eps
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += grad / avg
            p.data -= self.lr * buf
        else:
            p.data -= self.lr * grad / avg


# ----------------------------------------------------------------------------- Adam, AdamW
class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2015): momentum on the gradient, RMSprop on its scale, both
    bias-corrected.

    .. math::

        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \quad\text{(L2; or, decoupled:}\
             \theta_{t-1} \leftarrow (1-\eta\lambda)\,\theta_{t-1}) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t)\ \text{(AMSGrad)}\quad\text{or}\quad v_t \\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    Parameters
    ----------
    params : Module or iterable of Parameter
    lr : float >= 0, default 1e-3
    betas : (float, float) each in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    amsgrad : bool, default False (Reddi et al. 2018)
    decoupled_weight_decay : bool, default False
        True gives :class:`AdamW`.

    State per parameter: ``step`` (int), ``exp_avg`` (:math:`m`), ``exp_avg_sq`` (:math:`v`),
    ``max_exp_avg_sq`` with AMSGrad.

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3.3)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, decoupled_weight_decay: bool = False):
        super().__init__(params, lr)
        self.betas = _check_betas(betas)
        self.eps = check_number("eps", eps, 0.0, low_open=True)
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0)
        self.amsgrad = check_bool("amsgrad", amsgrad)
        self.decoupled_weight_decay = check_bool("decoupled_weight_decay", decoupled_weight_decay)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": self.amsgrad, "decoupled_weight_decay": self.decoupled_weight_decay}

    def update(self, p, grad, state):
        xp = B.namespace(p.data)
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if self.amsgrad:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] = step = state["step"] + 1
        beta1, beta2 = self.betas
        if self.weight_decay:
            if self.decoupled_weight_decay:
                p.data *= 1.0 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * p.data
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1.0 - beta1) * (grad - exp_avg)                    # torch's lerp_
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * grad * grad
        step_size = self.lr / (1.0 - beta1 ** step)
        bias_correction2_sqrt = (1.0 - beta2 ** step) ** 0.5
        if self.amsgrad:
            max_sq = state["max_exp_avg_sq"]
            max_sq[...] = xp.maximum(max_sq, exp_avg_sq)
            denom = xp.sqrt(max_sq)
        else:
            denom = xp.sqrt(exp_avg_sq)
        denom /= bias_correction2_sqrt
        denom += self.eps
        p.data -= step_size * exp_avg / denom


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019):
    :math:`\theta \leftarrow (1-\eta\lambda)\,\theta` before the Adam step, instead of adding
    :math:`\lambda\theta` to the gradient (where the adaptive scaling would shrink it).

    Same parameters as :class:`Adam`, with ``weight_decay`` defaulting to 1e-2.

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3.3)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay=True)


#: The optimizers by name (lower case), e.g. for explorers: ``OPTIMIZERS["adam"](model, lr=1e-3)``.
OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
