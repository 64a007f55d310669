"""Explorer for chapter 4.1: a learning-rate schedule designer.

A pure compute function (tested) plus a thin ipywidgets layer:
:func:`schedule_curve` -- the lr at every step of a named schedule (with optional warm-up),
computed by the schedule classes of :mod:`nnopt_lab.training.schedules` themselves;
:func:`schedule_explorer` draws it live.

See: chapters/04_1_learning_rate.ipynb
"""
from __future__ import annotations

import math
from typing import Any

from ..training import schedules as S
from ..validation import check_choice, check_int

__all__ = ["SCHEDULE_KINDS", "build_schedule", "schedule_curve", "plot_schedule_curves", "schedule_explorer"]

SCHEDULE_KINDS = ("constant", "step", "exponential", "linear", "cosine", "warm restarts", "one-cycle")


def build_schedule(kind: str, optimizer: Any, total_steps: int, warmup_steps: int = 0, gamma: float | None = None,
                   eta_min: float = 0.0, cycles: int = 3, start_factor: float = 0.1) -> S.LRScheduler:
    """A schedule of ``kind`` over ``total_steps`` steps, after ``warmup_steps`` of linear warm-up.

    Parameters
    ----------
    kind : one of :data:`SCHEDULE_KINDS`
    optimizer : Optimizer (anything with ``lr``)
    total_steps : int >= 2
    warmup_steps : int in [0, total_steps)
        Ignored by "one-cycle" (it has its own rise: 30 % of the steps).
    gamma : float, optional
        "step": factor every third of the decay (default 0.1); "exponential": factor per step
        (default: reach 1 % of the rate at the end).
    eta_min : float
        Floor of "cosine" and "warm restarts"; end value (as a fraction of lr, <= 1) of "linear".
    cycles : int
        Number of cycles of "warm restarts" (T_mult = 2).

    See: chapters/04_1_learning_rate.ipynb
    """
    check_choice("kind", kind, SCHEDULE_KINDS)
    total_steps = check_int("total_steps", total_steps, 2)
    warmup_steps = check_int("warmup_steps", warmup_steps, 0)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be < total_steps = {total_steps}, got {warmup_steps}")
    if kind == "one-cycle":
        return S.OneCycleLR(optimizer, max_lr=optimizer.lr, total_steps=total_steps, cycle_momentum=False)
    n = total_steps - warmup_steps
    if kind == "constant":
        sched = S.ConstantLR(optimizer, factor=1.0, total_iters=1)
    elif kind == "step":
        sched = S.StepLR(optimizer, step_size=max(1, math.ceil(n / 3)), gamma=0.1 if gamma is None else gamma)
    elif kind == "exponential":
        sched = S.ExponentialLR(optimizer, gamma=0.01 ** (1 / n) if gamma is None else gamma)
    elif kind == "linear":
        sched = S.LinearLR(optimizer, start_factor=1.0, end_factor=min(eta_min, 1.0), total_iters=n)
    elif kind == "cosine":
        sched = S.CosineAnnealingLR(optimizer, T_max=n, eta_min=eta_min)
    else:  # warm restarts: cycles T0, 2T0, 4T0, ... covering the n steps (the last may end just after)
        T_0 = max(1, math.ceil(n / (2 ** check_int("cycles", cycles) - 1)))
        sched = S.CosineAnnealingWarmRestarts(optimizer, T_0=T_0, T_mult=2, eta_min=eta_min)
    return S.with_warmup(sched, warmup_steps, start_factor) if warmup_steps else sched


def schedule_curve(kind: str, total_steps: int = 100, lr: float = 0.1, warmup_steps: int = 0, **options) -> list[float]:
    """The learning rate in force at each of ``total_steps`` steps of :func:`build_schedule`'s schedule.

    See: chapters/04_1_learning_rate.ipynb
    """
    return S.lr_curve(lambda opt: build_schedule(kind, opt, total_steps, warmup_steps, **options), total_steps, lr)


def plot_schedule_curves(curves: dict, ax: Any = None, log: bool = False, title: str = "Learning-rate schedules",
                         xlabel: str = "step") -> Any:
    """Draw ``{label: list of lr}`` on one axis; returns the axis.

    See: chapters/04_1_learning_rate.ipynb
    """
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    for label, values in curves.items():
        ax.plot(range(len(values)), values, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel="learning rate")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return ax


def schedule_explorer(total_steps: int = 200, lr: float = 0.1) -> Any:
    """An ipywidgets designer: pick a schedule, warm-up, floor; the curve redraws live.

    See: chapters/04_1_learning_rate.ipynb
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def draw(kind="cosine", warmup_steps=0, eta_min=0.0, log_y=False):
        curve = schedule_curve(kind, total_steps, lr, warmup_steps, eta_min=eta_min)
        fig, ax = plt.subplots(figsize=(7, 3.2))
        plot_schedule_curves({f"{kind}, warm-up {warmup_steps}": curve}, ax, log=log_y and min(curve) > 0,
                             title=f"{kind}: lr from {curve[0]:.3g} to {curve[-1]:.3g}")
        plt.show()
    return widgets.interactive(
        draw, kind=widgets.Dropdown(options=SCHEDULE_KINDS, value="cosine"),
        warmup_steps=widgets.IntSlider(0, 0, total_steps // 2, 1, description="warm-up"),
        eta_min=widgets.FloatSlider(0.0, min=0.0, max=lr, step=lr / 20, description="eta_min"),
        log_y=widgets.Checkbox(False, description="log lr axis"))
