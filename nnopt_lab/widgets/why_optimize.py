"""Explorer of chapter 1: how width and depth of an MLP drive its size, compute and latency.

:func:`mlp_costs` is the pure compute function (tested) and :func:`cost_grid` its sweep, measured
once; :func:`plot_costs` is the static figure; :class:`CostView` is that figure made once with a
marker that a setting moves (no model is built or timed in the callback); :func:`explorer` is the
thin ipywidgets layer over it.

See: chapters/01_why_optimize.ipynb (seed §1.1: model complexity and resource limits)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import measure, models
from ..validation import check_choice, check_int
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["mlp_costs", "cost_grid", "plot_costs", "CostView", "explorer"]


def mlp_costs(width: int, depth: int, input_size: int = 64, classes: int = 10, batch_size: int = 1,
              timed: bool = True, repeats: int = 15, backend=None) -> dict:
    """Parameters, bytes (float32 and int8), forward FLOPs and latency of an MLP.

    Parameters
    ----------
    width : int >= 1
        Units of every hidden layer.
    depth : int >= 0
        Number of hidden layers (0 = logistic regression).
    timed : bool
        Also measure the median forward latency (ms) of one batch on ``backend``.

    Returns
    -------
    dict with ``sizes``, ``params``, ``bytes_fp32``, ``bytes_int8``, ``flops``, ``latency_ms``
    (None when not timed). Parameters follow :math:`P = \\sum_\\ell (d_{\\ell-1} + 1)\\, d_\\ell`
    and FLOPs :math:`2 N \\sum_\\ell d_{\\ell-1} d_\\ell`.
    """
    check_int("depth", depth, 0)
    check_int("width", width, 1)
    sizes = (input_size,) + (width,) * depth + (classes,)
    model = models.mlp(sizes, backend=backend)
    table = measure.summary(model, (input_size,), batch_size=batch_size)
    lat = (measure.measure_model_latency(model, (input_size,), batch_size=batch_size, repeats=repeats).median * 1e3
           if timed else None)
    return {"sizes": sizes, "params": table.total_params, "bytes_fp32": measure.model_bytes(model, "float32"),
            "bytes_int8": measure.model_bytes(model, "int8"), "flops": table.total_flops, "latency_ms": lat}




def cost_grid(widths: Sequence[int], depths: Sequence[int], **kw: Any) -> dict:
    """:func:`mlp_costs` for every (depth, width): ``{depth: [costs for each width]}``.

    See: chapters/01_why_optimize.ipynb
    """
    return {d: [mlp_costs(w, d, **kw) for w in widths] for d in depths}


def _widths(grid: Mapping) -> list[int]:
    """The widths of a :func:`cost_grid` (the hidden width of each entry; depth 0 has none)."""
    for depth, costs in grid.items():
        if depth > 0:
            return [c["sizes"][1] for c in costs]
    raise ValueError("grid must hold at least one depth >= 1 (depth 0 has no width)")


def _width_axis(ax: Any, widths: Sequence[int]) -> None:
    """A log-2 width axis with one plain label per width of the sweep and no minor labels."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(list(widths)))
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("hidden width (units)")


def _log_axis(ax: Any, plain: bool = False) -> None:
    """A log y axis labelled only at major ticks (no crowded minor labels); ``plain``: at 1, 2, 5 × 10^k
    written as plain numbers (0.01, 0.02, 0.05: a latency range of less than a decade keeps labels)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if plain else (1,)))
    if plain:
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_costs(grid: Mapping, axes: Any = None, batch_size: int = 1, backend_name: str = "") -> Any:
    """The static figure: parameters, FLOPs and latency against the width, one line per depth.

    Parameters
    ----------
    grid : the dict of :func:`cost_grid` (``{depth: [costs per width]}``), measured at ``batch_size``
    axes : three matplotlib axes, optional (default: a new 14 × 3.8 inch pyplot figure)
    batch_size : int, the batch the grid's FLOPs and latency were measured at (for the titles)
    backend_name : str, shown in the latency title

    Returns
    -------
    the three axes (size, compute, latency); ``axes[0].lines_by[quantity][depth]`` is the line of
    ``quantity`` ("params", "flops", "latency_ms") at ``depth``.

    See: chapters/01_why_optimize.ipynb
    """
    if axes is None:
        import matplotlib.pyplot as plt
        axes = plt.subplots(1, 3, figsize=(14, 3.8))[1]
    widths = _widths(grid)
    lines: dict = {"params": {}, "flops": {}, "latency_ms": {}}
    for d, costs in grid.items():
        if d == 0:
            continue
        for ax, key in zip(axes, lines):
            lines[key][d] = ax.plot(widths, [c[key] for c in costs], "o-", ms=4, label=f"depth {d}")[0]
    on = f" ({backend_name})" if backend_name else ""
    axes[0].set(title="Size", ylabel="parameters (count)")
    axes[1].set(title=f"Compute at batch {batch_size}", ylabel="FLOPs per forward pass")
    axes[2].set(title=f"Latency at batch {batch_size}{on}", ylabel="median forward time (ms)")
    for ax in axes:
        _width_axis(ax, widths)
        _log_axis(ax, plain=ax is axes[2])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].lines_by = lines
    return axes


class CostView(FigureView):
    """Chapter 1's explorer figure, made once: :func:`plot_costs` of a measured sweep, with a
    marker per panel and a text line that :meth:`update` changes (no model is built or timed).

    Parameters
    ----------
    grids : mapping batch size -> :func:`cost_grid` (the same widths and depths for every batch)

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self, grids: Mapping[int, Mapping], backend_name: str = "", figsize=(12, 3.9), dpi: int = 72):
        if not grids:
            raise ValueError("grids must hold at least one batch size")
        self.grids = {check_int("batch size", b): g for b, g in grids.items()}
        first = next(iter(self.grids.values()))
        self.widths, self.depths = _widths(first), [d for d in first if d > 0]
        for b, g in self.grids.items():
            if _widths(g) != self.widths or [d for d in g if d > 0] != self.depths:
                raise ValueError(f"grids must share widths {self.widths} and depths {self.depths}; batch {b} differs")
        self.fig, axes = agg_figure(figsize, dpi, ncols=3)
        self.axes = plot_costs(first, axes, next(iter(self.grids)), backend_name)
        self.backend_name = backend_name
        self.lines = self.axes[0].lines_by
        self.markers = [ax.plot([], [], "o", color="crimson", ms=11, mfc="none", mew=2, zorder=5)[0]
                        for ax in self.axes]
        self.text = self.fig.text(0.5, 0.99, " ", ha="center", va="top", fontsize=10)
        self.fig.tight_layout(rect=(0, 0, 1, 0.9))
        self._batch, self._depth = None, None
        # blitting: one cached picture per (batch, depth) -- the curves and their highlight; a
        # redraw draws the markers and the text line over it
        self.animated = [*self.markers, self.text, *(ax.title for ax in self.axes[1:])]

    def background_key(self) -> tuple:
        return self._batch, self._depth

    def update(self, width: int, depth: int, batch_size: int | None = None) -> dict:
        """Show the MLP of ``width`` × ``depth`` at ``batch_size``; returns its costs (a look-up)."""
        batch = next(iter(self.grids)) if batch_size is None else check_choice("batch_size", batch_size,
                                                                               list(self.grids))
        check_choice("width", width, self.widths)
        check_choice("depth", depth, self.depths)
        grid = self.grids[batch]
        if batch != self._batch:                          # the FLOPs and latency curves of this batch
            for key in ("flops", "latency_ms"):
                for d in self.depths:
                    self.lines[key][d].set_ydata([c[key] for c in grid[d]])
            for ax in self.axes[1:]:
                ax.relim()
                ax.autoscale_view()
            on = f" ({self.backend_name})" if self.backend_name else ""
            self.axes[1].set_title(f"Compute at batch {batch}")
            self.axes[2].set_title(f"Latency at batch {batch}{on}")
            self._batch = batch
        c = grid[depth][self.widths.index(width)]
        self._depth = depth
        for d in self.depths:
            for lines in self.lines.values():
                lines[d].set_alpha(1.0 if d == depth else 0.35)
        for marker, key in zip(self.markers, self.lines):
            marker.set_data([width], [c[key]])
        self.text.set_text(f"MLP {'-'.join(map(str, c['sizes']))}, batch {batch}: {c['params']:,} parameters "
                           f"= {c['bytes_fp32'] / 1024:,.1f} KiB as float32 ({c['bytes_int8'] / 1024:,.1f} KiB as "
                           f"int8), {c['flops']:,} FLOPs, {c['latency_ms']:.3f} ms (median, measured once)")
        return c


def explorer(grids: Mapping[int, Mapping], backend_name: str = "") -> Any:
    """Sliders for width and depth and a batch-size choice over sweeps measured beforehand.

    Parameters
    ----------
    grids : mapping batch size -> :func:`cost_grid` (e.g. ``{1: cost_grid(widths, depths),
        64: cost_grid(widths, depths, batch_size=64)}``); the sliders step through its widths
        and depths, so every position is a measured model.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/01_why_optimize.ipynb
    """
    import ipywidgets as widgets

    view = CostView(grids, backend_name)
    start = min(view.widths, key=lambda w: abs(w - 100))          # a width of the sweep, near 100
    controls = {"width": widgets.SelectionSlider(options=view.widths, value=start, description="hidden width"),
                "depth": widgets.SelectionSlider(options=view.depths, value=view.depths[0],
                                                 description="hidden layers"),
                "batch_size": widgets.Dropdown(options=list(view.grids), value=next(iter(view.grids)),
                                               description="batch")}
    return image_explorer(view, controls)
