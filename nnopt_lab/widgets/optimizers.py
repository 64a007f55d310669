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

__all__ = ["OPTIMIZER_CHOICES", "make_optimizer", "get_function", "optimizer_path", "plot_paths",
           "playground"]

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


def playground(steps_max: int = 1000) -> Any:
    """ipywidgets explorer: pick function, optimizer, lr (log slider), momentum/β1, steps.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt

    def show(function, optimizer, log10_lr, momentum, steps):
        out = optimizer_path(function, optimizer, 10.0 ** log10_lr, momentum, steps)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        plot_paths(out["fn"], {optimizer: out["path"]}, ax=ax1,
                   title=f"{optimizer}, lr = {10.0 ** log10_lr:.2g} on {out['fn'].name}")
        ax2.plot(out["values"] - (out["fn"].min_value or 0.0), color="C0")
        if out["fn"].min_value is not None:
            ax2.set_yscale("log")
        ax2.set_xlabel("step")
        ax2.set_ylabel("f − f* (no unit)" if out["fn"].min_value is not None else "f (no unit)")
        ax2.set_title("objective along the path")
        note = f"diverged at step {out['diverged_at']}" if out["diverged_at"] is not None \
            else f"final f = {out['final_value']:.3g}, distance to minimum {out['distance']:.3g}"
        fig.suptitle(note)
        plt.show()

    return W.interactive(
        show,
        function=W.Dropdown(options=list(FUNCTIONS), value="rosenbrock", description="function"),
        optimizer=W.Dropdown(options=list(OPTIMIZER_CHOICES), value="adam", description="optimizer"),
        log10_lr=W.FloatSlider(value=-2.0, min=-5.0, max=0.0, step=0.1, description="log10 lr"),
        momentum=W.FloatSlider(value=0.9, min=0.0, max=0.99, step=0.01, description="momentum/β1"),
        steps=W.IntSlider(value=300, min=10, max=steps_max, step=10, description="steps"),
    )
