"""Optimizer playground: paths of the optimizers on the 2-D test functions.

* :func:`optimizer_path` -- the pure compute function (tested): one optimizer, one function;
* :func:`plot_paths`     -- contour plot of a function with one coloured path per optimizer;
* :func:`playground`     -- the thin ipywidgets layer (function, optimizer, lr, momentum, steps).

See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from ..functions2d import FUNCTIONS, Function2D, IllConditionedQuadratic, run_optimizer
from ..training.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["OPTIMIZER_CHOICES", "make_optimizer", "get_function", "optimizer_path", "plot_paths",
           "PlaygroundView", "playground"]

#: The optimizers of the playground. "gd" is SGD without momentum: on these deterministic
#: functions the gradient is exact, so it is plain gradient descent.
OPTIMIZER_CHOICES = ("gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9):
    """The optimizer called ``name`` (one of :data:`OPTIMIZER_CHOICES`).

    ``momentum`` is SGD's momentum for "momentum"/"nesterov", RMSprop's momentum, and β1 for
    Adam/AdamW (β2 stays 0.999); "gd" and "adagrad" ignore it.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    if name not in OPTIMIZER_CHOICES:
        raise ValueError(f"optimizer must be one of {OPTIMIZER_CHOICES}, got {name!r}")
    if name == "gd":
        return SGD(params, lr=lr)
    if name in ("momentum", "nesterov"):
        return SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adagrad":
        return Adagrad(params, lr=lr)
    if name == "rmsprop":
        return RMSprop(params, lr=lr, momentum=momentum)
    cls = Adam if name == "adam" else AdamW
    return cls(params, lr=lr, betas=(momentum, 0.999))


def get_function(function: str | Function2D, condition: float = 10.0) -> Function2D:
    """A :class:`Function2D` from its name in :data:`nnopt_lab.functions2d.FUNCTIONS`.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    if isinstance(function, Function2D):
        return function
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {tuple(FUNCTIONS)}, got {function!r}")
    return IllConditionedQuadratic(condition) if function == "ill-conditioned" else FUNCTIONS[function]()


def optimizer_path(function: str | Function2D = "rosenbrock", optimizer: str = "adam", lr: float = 0.01,
                   momentum: float = 0.9, steps: int = 200, start=None, condition: float = 10.0) -> dict:
    """Run one optimizer on one test function.

    Parameters
    ----------
    function : name in ``FUNCTIONS`` or a Function2D
    optimizer : one of :data:`OPTIMIZER_CHOICES`
    lr, momentum : float
    steps : int >= 0
    start : (x, y), default the function's classic start
    condition : float >= 1, the condition number for "ill-conditioned"

    Returns
    -------
    dict
        ``path`` (steps+1, 2) numpy float64, ``values`` (steps+1,) f along the path,
        ``final_value`` (float), ``distance`` (float, from the last point to the nearest minimum;
        nan when the function has none), ``diverged_at`` (first step whose point is not finite
        or escaped, else None), ``fn`` (the Function2D).

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    fn = get_function(function, condition)
    start = fn.start if start is None else start
    path = run_optimizer(lambda p: make_optimizer(optimizer, p, lr, momentum), fn, start, steps)
    values = fn.value(path[:, 0], path[:, 1])
    finite = [i for i in range(path.shape[0]) if not all(math.isfinite(v) for v in path[i])]
    last = path[-1]
    distance = min((math.dist(last, m) for m in fn.minima), default=float("nan"))
    return {"path": path, "values": values, "final_value": float(values[-1]), "distance": distance,
            "diverged_at": finite[0] if finite else None, "fn": fn}


def _levels(fn: Function2D, z) -> list:
    lo, hi = float(z.min()), float(z.max())
    if fn.log_levels and lo >= 0:
        lo = max(lo, 1e-3 * max(hi, 1e-12), 1e-6)
        return [lo * (hi / lo) ** (i / 24) for i in range(25)]
    return [lo + (hi - lo) * i / 24 for i in range(25)]


def plot_paths(fn: Function2D, paths: dict, ax=None, title: str | None = None, n: int = 200):
    """Contours of ``fn`` with one coloured path per entry of ``paths`` (name -> (k, 2) array).

    Minima are marked with a star, saddles with a cross, the start with a circle.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    gx, gy, z = fn.grid(n)
    ax.contour(gx, gy, z, levels=_levels(fn, z), colors="0.7", linewidths=0.6)
    for (name, path), colour in zip(paths.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3):
        ax.plot(path[:, 0], path[:, 1], "-", color=colour, lw=1.4, label=name)
        ax.plot(path[-1:, 0], path[-1:, 1], "o", color=colour, ms=4)
    if paths:
        first = next(iter(paths.values()))
        ax.plot(first[0, 0], first[0, 1], "ko", ms=6, mfc="white", label="start")
    for i, m in enumerate(fn.minima):
        ax.plot(*m, "*", color="gold", mec="k", ms=14, label="minimum" if i == 0 else None)
    for i, s in enumerate(fn.stationary):
        ax.plot(*s, "x", color="k", ms=10, mew=2, label="saddle point" if i == 0 else None)
    ax.set_xlim(*fn.xlim)
    ax.set_ylim(*fn.ylim)
    ax.set_xlabel("x (parameter 1, no unit)")
    ax.set_ylabel("y (parameter 2, no unit)")
    ax.set_title(title or f"Optimizer paths on {fn.name}")
    ax.legend(fontsize=8, loc="best")
    return ax


def _compact(value: float, _: Any = None) -> str:
    """A short log-axis tick label: 1, 10, 0.01, 1e-12, 1e64 (at most 5 characters)."""
    if value <= 0:
        return f"{value:g}"
    k = round(math.log10(value))
    if abs(value - 10.0 ** k) > 1e-9 * value:
        return f"{value:.2g}"
    return f"{value:g}" if -2 <= k <= 3 else f"1e{k}"


class PlaygroundView(FigureView):
    """The playground's figure, made once: contours of the current function with the path, and
    f − f* along the path. :meth:`update` computes one path (:func:`optimizer_path`, a few
    milliseconds on a 2-D function) and moves the lines (``set_data``); the contours are redrawn
    only when the function changes.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    def __init__(self, figsize=(11, 4), dpi: int = 72, n: int = 120):
        self.n, self.function, self.contours, self.marks = n, None, None, []
        self.fig, (self.ax_path, self.ax_values) = agg_figure(figsize, dpi, ncols=2)
        (self.path_line,) = self.ax_path.plot([], [], "-", color="C0", lw=1.4, label="path")
        (self.end_marker,) = self.ax_path.plot([], [], "o", color="C0", ms=4)
        (self.start_marker,) = self.ax_path.plot([], [], "ko", ms=6, mfc="white", label="start")
        self.ax_path.set(xlabel="x (parameter 1, no unit)", ylabel="y (parameter 2, no unit)", title="path")
        (self.values_line,) = self.ax_values.plot([], [], color="C0")
        self.ax_values.set(xlabel="step", title="objective along the path")
        self.fig.suptitle(" ")
        # a fixed layout with room between the panels for the right panel's tick labels and its
        # y label (a layout measured once, on empty axes, let the label overlap the ticks)
        self.fig.subplots_adjust(left=0.07, right=0.985, bottom=0.12, top=0.85, wspace=0.3)

    def _draw_function(self, fn: Function2D) -> None:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        if self.contours is not None:
            self.contours.remove()
        for artist in self.marks:
            artist.remove()
        gx, gy, z = fn.grid(self.n)
        self.contours = self.ax_path.contour(gx, gy, z, levels=_levels(fn, z), colors="0.7", linewidths=0.6)
        self.marks = [self.ax_path.plot(*m, "*", color="gold", mec="k", ms=14)[0] for m in fn.minima]
        self.marks += [self.ax_path.plot(*st, "x", color="k", ms=10, mew=2)[0] for st in fn.stationary]
        self.ax_path.set_xlim(*fn.xlim)
        self.ax_path.set_ylim(*fn.ylim)
        has_min = fn.min_value is not None
        self.ax_values.set_yscale("log" if has_min else "linear")     # (resets the tick formatters)
        self.ax_values.yaxis.set_major_formatter(FuncFormatter(_compact if has_min else (lambda v, _: f"{v:g}")))
        self.ax_values.yaxis.set_minor_formatter(NullFormatter())    # no crowded mathtext minor labels
        self.ax_values.set_ylabel("f − f* (no unit)" if has_min else "f (no unit)")

    def update(self, function: str, optimizer: str, lr: float, momentum: float, steps: int) -> dict:
        """Run ``optimizer`` on ``function`` and show it; returns :func:`optimizer_path`'s dict."""
        out = optimizer_path(function, optimizer, lr, momentum, steps)
        fn = out["fn"]
        if function != self.function:
            self._draw_function(fn)
            self.function = function
        last = out["diverged_at"] if out["diverged_at"] is not None else out["path"].shape[0]
        path = out["path"][:last]
        self.path_line.set_data(path[:, 0], path[:, 1])
        self.end_marker.set_data(path[-1:, 0], path[-1:, 1])
        self.start_marker.set_data(path[:1, 0], path[:1, 1])
        values = out["values"][:last] - (fn.min_value or 0.0)
        if fn.min_value is not None:
            values = [max(float(v), 1e-300) for v in values]
        self.values_line.set_data(range(len(values)), values)
        self.ax_values.relim()
        self.ax_values.autoscale_view()
        self.ax_path.set_title(f"{optimizer}, lr = {lr:.2g} on {fn.name}")
        note = f"diverged at step {out['diverged_at']}" if out["diverged_at"] is not None \
            else f"final f = {out['final_value']:.3g}, distance to minimum {out['distance']:.3g}"
        self.fig.suptitle(note)
        return out


def playground(steps_max: int = 1000) -> Any:
    """ipywidgets explorer: pick function, optimizer, lr (log slider), momentum/β1, steps.

    The figure is a :class:`PlaygroundView`, made once; a control computes one 2-D path and moves
    the lines.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    import ipywidgets as W

    class _Log10(PlaygroundView):
        def update(self, function: str, optimizer: str, log10_lr: float, momentum: float, steps: int) -> dict:
            return super().update(function, optimizer, 10.0 ** log10_lr, momentum, steps)

    view = _Log10()
    controls = {"function": W.Dropdown(options=list(FUNCTIONS), value="rosenbrock", description="function"),
                "optimizer": W.Dropdown(options=list(OPTIMIZER_CHOICES), value="adam", description="optimizer"),
                "log10_lr": W.FloatSlider(value=-2.0, min=-5.0, max=0.0, step=0.1, description="log10 lr"),
                "momentum": W.FloatSlider(value=0.9, min=0.0, max=0.99, step=0.01, description="momentum/β1"),
                "steps": W.IntSlider(value=300, min=10, max=steps_max, step=10, description="steps")}
    return image_explorer(view, controls, rows=[["function", "optimizer"], ["log10_lr", "momentum", "steps"]])
