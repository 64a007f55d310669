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
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["SCHEDULE_KINDS", "build_schedule", "schedule_curve", "plot_schedule_curves", "ScheduleView",
           "schedule_explorer"]

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


class ScheduleView(FigureView):
    """The schedule designer's figure, made once: one line whose data :meth:`update` replaces
    (``set_data``) with a freshly computed :func:`schedule_curve` (a few hundred Python floats:
    milliseconds), and the axis scale and title.

    See: chapters/04_1_learning_rate.ipynb
    """

    def __init__(self, total_steps: int = 200, lr: float = 0.1, figsize=(7, 3.2), dpi: int = 72):
        self.total_steps, self.lr = check_int("total_steps", total_steps, 2), float(lr)
        self.fig, self.ax = agg_figure(figsize, dpi)
        (self.line,) = self.ax.plot([], [], label="schedule")
        self.ax.set(xlabel="step", ylabel="learning rate", xlim=(0, self.total_steps - 1),
                    title="schedule")                    # room for the title update() writes
        self.ax.legend(fontsize=8)
        self.fig.tight_layout()

    def update(self, kind: str, warmup_steps: int = 0, eta_min: float = 0.0, log_y: bool = False) -> list[float]:
        """Show ``kind`` with ``warmup_steps`` and ``eta_min``; returns the curve."""
        curve = schedule_curve(kind, self.total_steps, self.lr, warmup_steps, eta_min=eta_min)
        self.line.set_data(range(len(curve)), curve)
        self.line.set_label(f"{kind}, warm-up {warmup_steps}")
        log = log_y and min(curve) > 0
        if self.ax.get_yscale() != ("log" if log else "linear"):
            from matplotlib.ticker import FuncFormatter, NullFormatter

            self.ax.set_yscale("log" if log else "linear")      # (resets the formatters)
            if log:                                             # 0.001, not a wider mathtext 10^-3
                self.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                self.ax.yaxis.set_minor_formatter(NullFormatter())
        top = max(curve)
        self.ax.set_ylim((0.5 * min(curve), 2 * top) if log else (0.0, 1.05 * top))
        self.ax.set_title(f"{kind}: lr from {curve[0]:.3g} to {curve[-1]:.3g}")
        self.ax.legend(fontsize=8)
        return curve


def schedule_explorer(total_steps: int = 200, lr: float = 0.1) -> Any:
    """An ipywidgets designer: pick a schedule, warm-up, floor; the curve redraws live.

    The figure is a :class:`ScheduleView`, made once; a control only replaces its line's data.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/04_1_learning_rate.ipynb
    """
    import ipywidgets as widgets

    view = ScheduleView(total_steps, lr)
    controls = {"kind": widgets.Dropdown(options=SCHEDULE_KINDS, value="cosine", description="kind"),
                "warmup_steps": widgets.IntSlider(0, 0, total_steps // 2, 1, description="warm-up"),
                "eta_min": widgets.FloatSlider(0.0, min=0.0, max=lr, step=lr / 20, description="eta_min"),
                "log_y": widgets.Checkbox(False, description="log lr axis")}
    return image_explorer(view, controls, rows=[["kind", "warmup_steps"], ["eta_min", "log_y"]])
