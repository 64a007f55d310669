r"""Learning-rate schedules (学习率调整), from scratch, with torch.optim.lr_scheduler's semantics.

A schedule is attached to an optimizer and changes its ``optimizer.lr`` (a Python float) each
time :meth:`LRScheduler.step` is called -- after every optimizer step or after every epoch,
as you choose. Names, arguments and results follow ``torch.optim.lr_scheduler``:

================================  =====================================================  ============
class                             learning rate after ``t`` calls of ``step()``           seed term
================================  =====================================================  ============
:class:`ConstantLR`               :math:`\eta_0 f` for :math:`t < T`, then :math:`\eta_0`
:class:`StepLR`                   :math:`\eta_0 \gamma^{\lfloor t/s \rfloor}`             step decay
:class:`MultiStepLR`              :math:`\eta_0 \gamma^{\#\{m_i \le t\}}`
:class:`ExponentialLR`            :math:`\eta_0 \gamma^{t}`                               指数衰减
:class:`LinearLR`                 :math:`\eta_0 (f_0 + (f_1 - f_0)\min(t, T)/T)`          线性衰减
:class:`LinearWarmup`             LinearLR rising from :math:`f_0 \eta_0` to :math:`\eta_0`  warm-up
:class:`CosineAnnealingLR`        :math:`\eta_{min} + \tfrac12(\eta_0-\eta_{min})(1+\cos\pi t/T)`
:class:`CosineAnnealingWarmRestarts`  the same per cycle, cycles of :math:`T_0, T_0 m, T_0 m^2 ...`
:class:`OneCycleLR`               up to ``max_lr`` then down far below the start
:class:`SequentialLR`             one schedule after another at milestones
:class:`ReduceLROnPlateau`        :math:`\eta \leftarrow \eta f` when a metric stalls     动态调整
================================  =====================================================  ============

torch computes several of these *recursively* (each lr from the previous one, which lets
schedules be chained); so do we, in the same order of floating-point operations, so the two
agree to the last bit over thousands of steps. The closed forms above are what the
recursions equal in exact arithmetic, and each class's :meth:`closed_form_lr` gives them
where torch has one.

Also here: :class:`ScheduleCallback` (use any schedule from :func:`~nnopt_lab.training.fit`,
per step or per epoch) and :func:`lr_curve` (a schedule's lr for every step, for plots).
The learning-rate range test is :func:`nnopt_lab.training.range_test.lr_range_test`.

Seed: §2.3.1, §3.3.1 (dynamic adjustment 动态调整 and decay 衰减).
See: chapters/04_1_learning_rate.ipynb
"""
from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Sequence

from ..validation import (as_float, check_bool, check_callable, check_choice, check_int, check_number,
                          check_sequence)

#: Upper bound of :func:`lr_curve`'s ``steps`` (a curve for a plot, not a training run).
MAX_CURVE_STEPS = 10_000_000
from .loop import Callback, TrainState
from .optim import check_lr

__all__ = [
    "LRScheduler", "ConstantLR", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR", "LinearWarmup",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR", "SequentialLR",
    "ReduceLROnPlateau", "with_warmup", "LRProbe", "lr_curve", "ScheduleCallback",
]


# ----------------------------------------------------------------------------- argument checks
def _check_optimizer(optimizer: Any) -> Any:
    if not hasattr(optimizer, "lr"):
        raise TypeError(f"optimizer must have a float attribute 'lr' (an nnopt_lab Optimizer), "
                        f"got {type(optimizer).__name__}")
    check_lr(optimizer.lr)
    return optimizer


# ----------------------------------------------------------------------------- the base class
class LRScheduler:
    r"""Base class: holds the optimizer, the step counter and the last learning rate.

    As in torch, creating a schedule performs step 0: it may change ``optimizer.lr`` at once
    (e.g. a warm-up starts low). Call :meth:`step` *after* each ``optimizer.step()``.

    The first schedule built on an optimizer records ``optimizer.initial_lr`` (torch keeps
    ``param_group["initial_lr"]``); every later schedule on that optimizer starts from it --
    that is how :class:`SequentialLR` hands one schedule's start to the next.

    Attributes
    ----------
    optimizer : Optimizer
        Anything with a float attribute ``lr``.
    base_lrs : list of one float
        :math:`\eta_0`, the learning rate the schedule is relative to.
    last_epoch : int
        How many times :meth:`step` has been called (0 right after construction).

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """

    def __init__(self, optimizer: Any):
        self.optimizer = _check_optimizer(optimizer)
        if getattr(optimizer, "initial_lr", None) is None:
            optimizer.initial_lr = float(optimizer.lr)
        self.base_lrs = [optimizer.initial_lr]
        self.last_epoch = -1
        self._is_initial = False
        self._initial_step()

    # -- stepping, as torch.optim.lr_scheduler.LRScheduler
    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        """Advance one step (or epoch) and write the new rate into ``optimizer.lr``."""
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            value = self.get_lr()
        else:  # jump to `epoch`: the closed form where there is one (torch: _get_closed_form_lr)
            self.last_epoch = epoch
            value = self.closed_form_lr() if hasattr(self, "closed_form_lr") else self.get_lr()
        self.optimizer.lr = value
        self._last_lr = [value]

    def get_lr(self) -> float:  # pragma: no cover - abstract
        """The next learning rate (called by :meth:`step`; read :meth:`get_last_lr` instead)."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The learning rate the last :meth:`step` set, as a one-element list (torch's format)."""
        return list(self._last_lr)

    @property
    def base_lr(self) -> float:
        r""":math:`\eta_0`."""
        return self.base_lrs[0]

    def _current_lr(self) -> float:
        return self.optimizer.lr

    # -- checkpoints
    def state_dict(self) -> dict:
        """Everything but the optimizer (torch's format: the instance's attributes), copied."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s result, and set ``optimizer.lr`` to the saved last rate.

        (torch leaves the rate to the optimizer's own state_dict; we set it too, so that a
        schedule restored alone continues where it stopped.)
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        self.__dict__.update({k: copy.deepcopy(v) for k, v in state.items()})
        if "_last_lr" in state:
            self.optimizer.lr = self._last_lr[0]

    def __repr__(self) -> str:
        skip = {"optimizer", "base_lrs", "last_epoch", "_step_count", "_is_initial", "_last_lr"}
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k not in skip and not k.startswith("_"))
        return f"{type(self).__name__}({args})"


# ----------------------------------------------------------------------------- decay schedules
class ConstantLR(LRScheduler):
    r"""Multiply the rate by ``factor`` for the first ``total_iters`` steps, then restore it.

    .. math:: \eta_t = \eta_0 \,\big(f \text{ if } t < T \text{ else } 1\big)

    Parameters
    ----------
    optimizer : Optimizer
    factor : float in [0, 1]
    total_iters : int >= 1
    """

    def __init__(self, optimizer: Any, factor: float = 1.0 / 3, total_iters: int = 5):
        self.factor = check_number("factor", factor, 0.0, 1.0)
        self.total_iters = check_int("total_iters", total_iters)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self.last_epoch == 0:
            return self._current_lr() * self.factor
        if self.last_epoch != self.total_iters:
            return self._current_lr()
        return self._current_lr() * (1.0 / self.factor)

    def closed_form_lr(self) -> float:
        return self.base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))


class StepLR(LRScheduler):
    r"""Step decay: multiply the rate by ``gamma`` every ``step_size`` steps.

    .. math:: \eta_t = \eta_0\, \gamma^{\lfloor t / s \rfloor}

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int >= 1
    gamma : float > 0
        Usually < 1 (0.1 in torch).
    """

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1):
        self.step_size = check_int("step_size", step_size)
        self.gamma = check_number("gamma", gamma, 0.0, low_open=True)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lr()
        return self._current_lr() * self.gamma

    def closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class MultiStepLR(LRScheduler):
    r"""Multiply the rate by ``gamma`` at each milestone.

    .. math:: \eta_t = \eta_0\, \gamma^{\,|\{i : m_i \le t\}|}

    Parameters
    ----------
    optimizer : Optimizer
    milestones : sequence of int >= 1, non-decreasing (a repeated milestone applies gamma twice)
    gamma : float > 0
    """

    def __init__(self, optimizer: Any, milestones: Sequence[int], gamma: float = 0.1):
        milestones = check_sequence("milestones", milestones)
        milestones = [check_int(f"milestones[{i}]", m) for i, m in enumerate(milestones)]   # Python ints
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be non-decreasing, got {milestones!r}")
        self.milestones = Counter(milestones)
        self.gamma = check_number("gamma", gamma, 0.0, low_open=True)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self.last_epoch not in self.milestones:
            return self._current_lr()
        return self._current_lr() * self.gamma ** self.milestones[self.last_epoch]

    def closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** bisect_right(sorted(self.milestones.elements()), self.last_epoch)


class ExponentialLR(LRScheduler):
    r"""Exponential decay (指数衰减): multiply the rate by ``gamma`` every step.

    .. math:: \eta_t = \eta_0\, \gamma^{t}

    Parameters
    ----------
    optimizer : Optimizer
    gamma : float > 0
    """

    def __init__(self, optimizer: Any, gamma: float):
        self.gamma = check_number("gamma", gamma, 0.0, low_open=True)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self._is_initial:
            return self._current_lr()
        return self._current_lr() * self.gamma

    def closed_form_lr(self) -> float:
        return self.base_lr * self.gamma ** self.last_epoch


class LinearLR(LRScheduler):
    r"""Linear change (线性衰减 when decaying, warm-up when rising) of a factor over ``total_iters`` steps.

    .. math:: \eta_t = \eta_0 \Big(f_0 + (f_1 - f_0)\,\frac{\min(t, T)}{T}\Big)

    torch computes it recursively, :math:`\eta_t = \eta_{t-1}\big(1 + \frac{f_1 - f_0}
    {T f_0 + (t-1)(f_1 - f_0)}\big)`; so do we.

    Parameters
    ----------
    optimizer : Optimizer
    start_factor : float in (0, 1]
    end_factor : float in [0, 1]
    total_iters : int >= 1
    """

    def __init__(self, optimizer: Any, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5):
        self.start_factor = check_number("start_factor", start_factor, 0.0, 1.0, low_open=True)
        self.end_factor = check_number("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = check_int("total_iters", total_iters)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        if self.last_epoch == 0:
            return self._current_lr() * self.start_factor
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._current_lr()
        change = self.end_factor - self.start_factor
        return self._current_lr() * (
            1.0 + change / (self.total_iters * self.start_factor + (self.last_epoch - 1) * change))

    def closed_form_lr(self) -> float:
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                               * min(self.total_iters, self.last_epoch) / self.total_iters)


class LinearWarmup(LinearLR):
    r"""Linear warm-up: rise from ``start_factor·lr`` to ``lr`` over ``warmup_steps`` steps.

    The same as ``LinearLR(optimizer, start_factor, 1.0, warmup_steps)`` (what torch users
    write); after the warm-up the rate stays at ``lr`` -- compose with :func:`with_warmup` or
    :class:`SequentialLR` to decay afterwards.

    .. math:: \eta_t = \eta_0 \Big(f_0 + (1 - f_0)\,\frac{\min(t, T_w)}{T_w}\Big)

    Goyal et al. (2017) start from the small-batch rate: ``start_factor = base_batch / batch``.
    """

    def __init__(self, optimizer: Any, warmup_steps: int, start_factor: float = 0.1):
        super().__init__(optimizer, start_factor=start_factor, end_factor=1.0,
                         total_iters=check_int("warmup_steps", warmup_steps))


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing (SGDR without restarts, Loshchilov & Hutter 2017).

    .. math:: \eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})\Big(1 + \cos\frac{\pi t}{T_{max}}\Big)

    computed, as torch does, by the recursion
    :math:`\eta_{t} = \eta_{min} + (\eta_{t-1} - \eta_{min})\,
    \frac{1 + \cos(\pi t / T_{max})}{1 + \cos(\pi (t-1)/T_{max})}`. After :math:`T_{max}` steps
    the rate climbs back along the cosine (no restart: use :class:`CosineAnnealingWarmRestarts`).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int >= 1
        Steps from :math:`\eta_0` down to :math:`\eta_{min}`.
    eta_min : float >= 0

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0):
        self.T_max = check_int("T_max", T_max)
        self.eta_min = check_number("eta_min", eta_min, 0.0)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        lr, t, T = self._current_lr(), self.last_epoch, self.T_max
        if self._is_initial:
            return lr
        if self._step_count == 1 and t > 0:
            return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(t * math.pi / T)) / 2
        if (t - 1 - T) % (2 * T) == 0:   # at the bottom the ratio is 0/0: step up explicitly
            return lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (lr - self.eta_min) + self.eta_min)

    def closed_form_lr(self) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""SGDR: cosine annealing restarted every cycle; cycles grow by ``T_mult``.

    .. math:: \eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})\Big(1 + \cos\frac{\pi T_{cur}}{T_i}\Big)

    with :math:`T_{cur}` the steps since the last restart and :math:`T_i = T_0 T_{mult}^i`.

    Parameters
    ----------
    optimizer : Optimizer
    T_0 : int >= 1
        Length of the first cycle.
    T_mult : int >= 1
    eta_min : float >= 0

    :meth:`step` also takes a (fractional) ``epoch``, as torch's does, to restart mid-epoch:
    ``sched.step(epoch + i / steps_per_epoch)``.
    """

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        self.T_0 = check_int("T_0", T_0)
        self.T_i = T_0
        self.T_mult = check_int("T_mult", T_mult)
        self.eta_min = check_number("eta_min", eta_min, 0.0)
        self.T_cur = -1
        super().__init__(optimizer)

    def get_lr(self) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2

    def step(self, epoch: float | None = None) -> None:
        """Advance one step, or jump to ``epoch`` (a number >= 0, fractions allowed)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            epoch = check_number("epoch", epoch, 0.0)
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        value = self.get_lr()
        self.optimizer.lr = value
        self._last_lr = [value]


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy (Smith & Topin 2017): warm up to ``max_lr``, then anneal far below the start.

    Two phases by default (fastai's and torch's default), three with ``three_phase=True``
    (the paper's). With :math:`\eta_{start} = \eta_{max}/d` and
    :math:`\eta_{end} = \eta_{start}/d_{final}`, phase :math:`k` anneals from its start to its end
    value as its fraction :math:`p` of steps goes 0 → 1:

    .. math:: \text{cos: } \eta = \eta_{b} + \tfrac12(\eta_{a} - \eta_{b})(1 + \cos \pi p)
              \qquad \text{linear: } \eta = \eta_{a} + (\eta_{b} - \eta_{a})\, p

    Momentum is cycled the opposite way (``max_momentum`` → ``base_momentum`` → back) when
    ``cycle_momentum`` is true; the optimizer then needs a ``momentum`` attribute (SGD with
    momentum) or ``betas`` (Adam: beta1 is cycled). With plain SGD pass ``cycle_momentum=False``.

    Parameters
    ----------
    optimizer : Optimizer
    max_lr : float > 0
    total_steps : int >= 1, optional
        Or give ``epochs`` and ``steps_per_epoch``.
    pct_start : float in [0, 1]
        Fraction of the steps spent rising.
    anneal_strategy : {"cos", "linear"}
    cycle_momentum : bool
    base_momentum, max_momentum : float
    div_factor, final_div_factor : float > 0
    three_phase : bool
    """

    def __init__(self, optimizer: Any, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False):
        _check_optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = check_int("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = check_int("epochs", epochs) * check_int("steps_per_epoch", steps_per_epoch)
        else:
            raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch; got neither")
        pct_start = check_number("pct_start", pct_start, 0.0, 1.0)
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        max_lr = check_number("max_lr", max_lr, 0.0, low_open=True)
        div_factor = check_number("div_factor", div_factor, 0.0, low_open=True)
        final_div_factor = check_number("final_div_factor", final_div_factor, 0.0, low_open=True)
        n = self.total_steps
        if check_bool("three_phase", three_phase):
            self._phases = [
                (float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self._phases = [
                (float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self.initial_lr = max_lr / div_factor
        self.max_lr = max_lr
        self.min_lr = self.initial_lr / final_div_factor
        optimizer.initial_lr = self.initial_lr          # torch overwrites param_group["initial_lr"]
        self.cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
        if self.cycle_momentum:
            if not (hasattr(optimizer, "momentum") or hasattr(optimizer, "betas")):
                raise ValueError(f"cycle_momentum=True needs an optimizer with a 'momentum' or 'betas' "
                                 f"attribute, {type(optimizer).__name__} has neither; pass cycle_momentum=False")
            self.use_beta1 = hasattr(optimizer, "betas")
            self.max_momentum = check_number("max_momentum", max_momentum, 0.0, 1.0)
            self.base_momentum = check_number("base_momentum", base_momentum, 0.0, 1.0)
            self._set_momentum(optimizer, self.max_momentum)
        super().__init__(optimizer)

    def _set_momentum(self, optimizer: Any, value: float) -> None:
        if self.use_beta1:
            optimizer.betas = (value, *tuple(optimizer.betas)[1:])
        else:
            optimizer.momentum = value

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> float:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR was stepped {step} times, but total_steps is {self.total_steps}")
        start_step = 0.0
        for i, (end_step, lr_a, lr_b, m_a, m_b) in enumerate(self._phases):
            if step <= end_step or i == len(self._phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                lr = self._anneal(getattr(self, lr_a), getattr(self, lr_b), pct)
                if self.cycle_momentum:
                    self._set_momentum(self.optimizer, self._anneal(getattr(self, m_a), getattr(self, m_b), pct))
                return lr
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------- composition
class SequentialLR(LRScheduler):
    r"""Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (restarted at 0), ...

    Typical use: a warm-up then a decay (see :func:`with_warmup`). All schedulers must be
    built on ``optimizer`` first; as in torch, the one switched to at a milestone restarts
    from step 0 using its closed form.

    Parameters
    ----------
    optimizer : Optimizer
    schedulers : sequence of LRScheduler (not ReduceLROnPlateau)
    milestones : sequence of int, strictly increasing, ``len(schedulers) - 1`` of them
    """

    def __init__(self, optimizer: Any, schedulers: Sequence[LRScheduler], milestones: Sequence[int]):
        _check_optimizer(optimizer)
        schedulers, milestones = check_sequence("schedulers", schedulers), check_sequence("milestones", milestones)
        if not schedulers:
            raise ValueError("schedulers must hold at least one schedule, got none")
        for i, s in enumerate(schedulers):
            if isinstance(s, ReduceLROnPlateau):
                raise ValueError(f"schedulers[{i}] is a ReduceLROnPlateau, which SequentialLR cannot run "
                                 "(its step needs a metric)")
            if not isinstance(s, LRScheduler):
                raise TypeError(f"schedulers[{i}] must be an LRScheduler, got {type(s).__name__}")
            if s.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}] ({type(s).__name__}) drives another optimizer; "
                                 "all schedulers must be built on the optimizer given to SequentialLR")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones must have len(schedulers) - 1 = {len(schedulers) - 1} entries, "
                             f"got {len(milestones)}")
        for i, m in enumerate(milestones):
            check_int(f"milestones[{i}]", m)
        if any(a >= b for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {milestones!r}")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = 0
        self.optimizer = optimizer
        optimizer.lr = optimizer.initial_lr          # reset, then undo the children's first steps
        self._recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def _recursive_undo(self, sched: Any = None) -> None:
        sched = self if sched is None else sched
        if hasattr(sched, "_schedulers"):
            for s in sched._schedulers:
                self._recursive_undo(s)
        elif hasattr(sched, "last_epoch"):
            sched.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        children = state.pop("_schedulers")
        if len(children) != len(self._schedulers):
            raise ValueError(f"state holds {len(children)} schedulers, this SequentialLR has {len(self._schedulers)}")
        for s, child in zip(self._schedulers, children):
            s.load_state_dict(child)
        super().load_state_dict(state)


def with_warmup(after: LRScheduler, warmup_steps: int, start_factor: float = 0.1) -> SequentialLR:
    r"""A linear warm-up of ``warmup_steps`` steps, then the schedule ``after`` (restarted at 0).

    ``with_warmup(CosineAnnealingLR(opt, T_max=90), 10)`` is torch's
    ``SequentialLR(opt, [LinearLR(opt, 0.1, 1.0, 10), CosineAnnealingLR(opt, 90)], [10])``
    with the cosine built first.

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """
    if not isinstance(after, LRScheduler) or isinstance(after, ReduceLROnPlateau):
        raise TypeError(f"after must be an LRScheduler other than ReduceLROnPlateau, got {type(after).__name__}")
    warmup_steps = check_int("warmup_steps", warmup_steps)      # a Python int, also for np.int64
    warm = LinearWarmup(after.optimizer, warmup_steps, start_factor)
    return SequentialLR(after.optimizer, [warm, after], [warmup_steps])


# ----------------------------------------------------------------------------- reduce on plateau
class ReduceLROnPlateau(LRScheduler):
    r"""Dynamic adjustment (动态调整): cut the rate by ``factor`` when a metric stops improving.

    After each epoch call ``step(metric)``. A value is an improvement when it beats the best so far
    by the threshold (mode "min", threshold_mode "rel": :math:`m < m^* (1 - \theta)`; "abs":
    :math:`m < m^* - \theta`; "max" mirrors these). After more than ``patience`` epochs without
    improvement the rate becomes :math:`\max(\eta f, \eta_{min})` (skipped if that changes it by
    ``eps`` or less), then ``cooldown`` epochs are ignored.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}
    factor : float in (0, 1)
    patience : int >= 0
    threshold : float >= 0
    threshold_mode : {"rel", "abs"}
    cooldown : int >= 0
    min_lr : float >= 0
    eps : float >= 0

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8):
        self.factor = check_number("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.optimizer = _check_optimizer(optimizer)
        self.min_lr = check_number("min_lr", min_lr, 0.0)
        self.patience = check_int("patience", patience, 0)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.eps = check_number("eps", eps, 0.0)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.threshold = check_number("threshold", threshold, 0.0)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.last_epoch = 0
        self._last_lr = [float(optimizer.lr)]
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def is_better(self, value: float, best: float) -> bool:
        """Does ``value`` improve on ``best`` by the threshold?"""
        if self.mode == "min" and self.threshold_mode == "rel":
            return value < best * (1.0 - self.threshold)
        if self.mode == "min":
            return value < best - self.threshold
        if self.threshold_mode == "rel":
            return value > best * (self.threshold + 1.0)
        return value > best + self.threshold

    def step(self, metrics: Any) -> None:
        """Feed the epoch's metric (a number or a 0-d array); maybe reduce ``optimizer.lr``."""
        current = as_float(metrics)
        if current is None or not math.isfinite(current):
            raise ValueError(f"metrics must be a finite number, got {metrics!r}")
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [self.optimizer.lr]


# ----------------------------------------------------------------------------- curves for plots
class LRProbe:
    """A stand-in optimizer holding only ``lr`` (and ``momentum``), to draw a schedule without training."""

    def __init__(self, lr: float = 1.0, momentum: float | None = 0.9):
        self.lr = check_lr(lr)
        if momentum is not None:
            self.momentum = check_number("momentum", momentum, 0.0)     # a Python float, also for np.float64

    def __repr__(self) -> str:
        return f"LRProbe(lr={self.lr})"


def lr_curve(build: Callable[[Any], LRScheduler], steps: int, lr: float = 1.0,
             metrics: Sequence[float] | None = None) -> list[float]:
    r"""The learning rate used at each of ``steps`` steps by the schedule ``build(optimizer)``.

    Entry ``t`` is the rate in force for step ``t`` (before the schedule's ``t``-th
    :meth:`~LRScheduler.step`), which is what torch's ``optimizer.param_groups[0]["lr"]`` reads
    at that time. For :class:`ReduceLROnPlateau` pass the metric of each step in ``metrics``.

    >>> lr_curve(lambda opt: StepLR(opt, step_size=2, gamma=0.5), 5, lr=1.0)
    [1.0, 1.0, 0.5, 0.5, 0.25]

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """
    steps = check_int("steps", steps, 0, MAX_CURVE_STEPS)
    check_callable("build", build)
    probe = LRProbe(lr)
    schedule = build(probe)
    if not isinstance(schedule, LRScheduler):
        raise TypeError(f"build(optimizer) must return an LRScheduler, got {type(schedule).__name__}")
    if isinstance(schedule, ReduceLROnPlateau) and (metrics is None or len(metrics) < steps):
        raise ValueError(f"ReduceLROnPlateau needs one metric per step: metrics must have >= {steps} entries")
    out = []
    for t in range(steps):
        out.append(probe.lr)
        schedule.step(metrics[t]) if isinstance(schedule, ReduceLROnPlateau) else schedule.step()
    return out


# ----------------------------------------------------------------------------- fit callback
class ScheduleCallback(Callback):
    """Step a schedule from :func:`~nnopt_lab.training.fit`, after every step or every epoch.

    >>> opt = SGD(model, lr=0.1)                                               # doctest: +SKIP
    >>> sched = CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)          # doctest: +SKIP
    >>> fit(model, train, epochs=epochs, optimizer=opt, callbacks=[ScheduleCallback(sched)])  # doctest: +SKIP

    :class:`ReduceLROnPlateau` is stepped after each epoch with ``history[metric][-1]``.

    Parameters
    ----------
    schedule : LRScheduler
        Built on the optimizer that ``fit`` will use.
    every : {"step", "epoch"}
        Ignored for ReduceLROnPlateau (always per epoch).
    metric : str
        History key fed to ReduceLROnPlateau: "val_loss" (needs ``val=``), "val_acc", "loss", "acc".

    Attributes
    ----------
    lrs : list of float
        The rate used by each optimizer step (so ``len(lrs)`` = number of updates).

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """

    def __init__(self, schedule: LRScheduler, every: str = "step", metric: str = "val_loss"):
        if not isinstance(schedule, LRScheduler):
            raise TypeError(f"schedule must be an LRScheduler, got {type(schedule).__name__}")
        self.schedule = schedule
        self.every = check_choice("every", every, ("step", "epoch"))
        self.metric = check_choice("metric", metric, ("val_loss", "val_acc", "loss", "acc"))
        self.lrs: list[float] = []
        self._lr_before = None

    def on_train_begin(self, state: TrainState) -> None:
        if state.optimizer is not self.schedule.optimizer:
            raise ValueError("the schedule drives another optimizer than the one fit uses: build the "
                             "schedule on the optimizer you pass to fit(optimizer=...)")

    def on_epoch_begin(self, state: TrainState) -> None:
        self._lr_before = state.optimizer.lr

    def on_step_end(self, state: TrainState) -> None:
        self.lrs.append(self._lr_before)
        if self.every == "step" and not isinstance(self.schedule, ReduceLROnPlateau):
            self.schedule.step()
        self._lr_before = state.optimizer.lr

    def on_epoch_end(self, state: TrainState) -> None:
        if isinstance(self.schedule, ReduceLROnPlateau):
            values = state.history[self.metric]
            if not values:
                raise ValueError(f"ReduceLROnPlateau is fed history[{self.metric!r}], which is empty: "
                                 "pass val=(X, y) to fit or use metric='loss'")
            self.schedule.step(values[-1])
        elif self.every == "epoch":
            self.schedule.step()
