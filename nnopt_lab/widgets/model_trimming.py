"""Experiments and explorer of model trimming: merge tolerance and removed channels against size and accuracy.

* :func:`mask_smallest_units` -- the structured-pruning stand-in the chapter removes physically:
  mask the units (Linear rows, Conv2d filters, with their biases) of smallest L1 norm
  (Li et al. 2017); chapter 3.2 teaches pruning itself;
* :func:`interleaved_latency` -- median latency of several models measured in alternating
  rounds, so that a slow phase of a shared machine hits all of them alike;
* :func:`merge_sweep`, :func:`removal_sweep` -- the tables the sliders index (computed once:
  merging near-duplicate neurons at growing tolerances; removing the k smallest channels);
* :func:`explore` -- the pure look-up of one slider setting (tested);
* :func:`plot_sweeps` -- the static figure; :func:`explorer` -- the thin ipywidgets layer that
  moves markers on that one figure (no training, no model code in the callback).

See: chapters/03_3_model_trimming.ipynb
"""
from __future__ import annotations

import copy
import statistics
from typing import Any, Mapping, Sequence

from .. import backend as B
from ..compression.trimming import merge_duplicate_neurons, remove_units
from ..measure import measure_model_latency, model_bytes, summary
from ..nn.layers import Conv2d, Linear, Module, Sequential
from ..training.loop import evaluate
from ..validation import check_int, check_number, check_sequence
from .figures import FigureView, image_explorer

__all__ = ["mask_smallest_units", "interleaved_latency", "merge_sweep", "removal_sweep", "explore",
           "plot_sweeps", "explorer"]


def _weighted(model: Any, layer: Any) -> int:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    i = check_int("layer", layer, 0, len(model) - 1)
    if not isinstance(model[i], (Linear, Conv2d)):
        raise ValueError(f"layer must be the index of a Linear or Conv2d, got {i}: {type(model[i]).__name__}")
    return i


def mask_smallest_units(model: Sequential, layer: int, count: int) -> list[int]:
    r"""Mask (in place) the ``count`` output units of ``model[layer]`` with the smallest L1 norm.

    Unit o's norm is :math:`\sum |W_{o,\dots}|`; its weight row (filter) and its bias get
    mask 0 and are zeroed (``apply_mask``), so the unit emits exactly 0 before any
    BatchNorm -- :func:`~nnopt_lab.compression.trimming.remove_units` can then cut it out
    with the outputs unchanged. Ties go to the lower index.

    Returns
    -------
    list of int, the masked units, sorted.
    """
    i = _weighted(model, layer)
    weight = model[i]._params["weight"]
    units = weight.shape[0]
    count = check_int("count", count, 0, units - 1)
    xp = B.namespace(weight.data)
    norms = B.to_numpy(xp.sum(xp.abs(xp.reshape(weight.masked(weight.data), (units, -1))), axis=1)).tolist()
    drop = sorted(sorted(range(units), key=lambda u: (norms[u], u))[:count])
    keep = [0.0 if u in set(drop) else 1.0 for u in range(units)]
    row = xp.asarray(keep, dtype=weight.data.dtype, device=B.device(weight.data))
    full = xp.reshape(row, (units,) + (1,) * (weight.data.ndim - 1)) * xp.ones_like(weight.data)
    weight.mask = full if weight.mask is None else weight.mask * full
    weight.apply_mask()
    bias = model[i]._params.get("bias")
    if bias is not None:
        bias.mask = row if bias.mask is None else bias.mask * row
        bias.apply_mask()
    return drop


def interleaved_latency(models: Mapping[str, Module], input_shape: tuple, batch_size: int = 1, rounds: int = 5,
                        repeats: int = 20) -> dict[str, float]:
    """Median forward time (seconds) of each model, over ``rounds`` alternating rounds of ``repeats`` calls.

    Each round times every model once (:func:`~nnopt_lab.measure.measure_model_latency`), so
    a slow phase of the machine lands on all of them; the result is the median of all
    ``rounds * repeats`` samples of each model.
    """
    rounds = check_int("rounds", rounds, 1)
    samples: dict[str, list] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            samples[name] += measure_model_latency(model, input_shape, batch_size, repeats=repeats).samples
    return {name: statistics.median(s) for name, s in samples.items()}


def _hidden_units(model: Sequential, layers: Sequence[int]) -> list[int]:
    return [model[i]._params["weight"].shape[0] for i in layers]


def merge_sweep(model: Sequential, layers: Sequence[int], tolerances: Sequence[float], data: tuple) -> dict:
    r"""Merge near-duplicate neurons of ``model[layers]`` (last first) at each tolerance; measure the result.

    Parameters
    ----------
    model : Sequential (an MLP: Linear, elementwise layers, Linear ...)
    layers : indices of the Linear layers whose units are merged
        (:func:`~nnopt_lab.compression.trimming.merge_duplicate_neurons`)
    tolerances : increasing floats >= 0
    data : (X, y) to measure the accuracy on

    Returns
    -------
    dict with lists ``tolerance``, ``units`` (hidden units left, all layers), ``per_layer``
    (units left per layer), ``accuracy``, ``bytes`` (float32) and the ints ``units_before``,
    ``bytes_before``, floats ``accuracy_before``.
    """
    layers = [_weighted(model, i) for i in check_sequence("layers", layers)]
    tolerances = [check_number(f"tolerances[{k}]", t, 0.0) for k, t in enumerate(check_sequence("tolerances", tolerances))]
    out = {"tolerance": [], "units": [], "per_layer": [], "accuracy": [], "bytes": []}
    for tol in tolerances:
        merged = model
        for i in sorted(layers, reverse=True):
            merged = merge_duplicate_neurons(merged, i, tol)
        per_layer = _hidden_units(merged, layers)
        out["tolerance"].append(tol)
        out["per_layer"].append(per_layer)
        out["units"].append(sum(per_layer))
        out["accuracy"].append(evaluate(merged, data)[1])
        out["bytes"].append(model_bytes(merged))
    out["units_before"] = sum(_hidden_units(model, layers))
    out["bytes_before"] = model_bytes(model)
    out["accuracy_before"] = evaluate(model, data)[1]
    return out


def removal_sweep(model: Sequential, layer: int, counts: Sequence[int], data: tuple, input_shape: tuple) -> dict:
    """Mask the ``count`` smallest units of ``model[layer]`` (:func:`mask_smallest_units`), remove them
    physically (:func:`~nnopt_lab.compression.trimming.remove_units`) and measure, for each count.

    No re-training: the accuracy is what the cut alone costs.

    Returns
    -------
    dict with lists ``count``, ``accuracy``, ``bytes`` (float32), ``macs`` (one sample) and
    ``units_before``.
    """
    i = _weighted(model, layer)
    counts = [check_int(f"counts[{k}]", c, 0) for k, c in enumerate(check_sequence("counts", counts))]
    out = {"count": [], "accuracy": [], "bytes": [], "macs": []}
    for count in counts:
        masked = copy.deepcopy(model)
        mask_smallest_units(masked, i, count)
        small = remove_units(masked, i)
        out["count"].append(count)
        out["accuracy"].append(evaluate(small, data)[1])
        out["bytes"].append(model_bytes(small))
        out["macs"].append(summary(small, input_shape).total_macs)
    out["units_before"] = model[i]._params["weight"].shape[0]
    return out


def explore(merge: Mapping, removal: Mapping, tol_index: int, count_index: int) -> dict:
    """The numbers of one slider setting, looked up in the sweeps (no computation on models).

    Returns
    -------
    dict with ``tolerance``, ``units``, ``merge_accuracy``, ``merge_bytes`` (merging) and
    ``count``, ``removal_accuracy``, ``removal_bytes``, ``removal_macs`` (removal), plus the
    ratios ``merge_bytes_ratio`` and ``removal_macs_ratio`` to the untouched model.
    """
    t = check_int("tol_index", tol_index, 0, len(merge["tolerance"]) - 1)
    c = check_int("count_index", count_index, 0, len(removal["count"]) - 1)
    return {"tolerance": merge["tolerance"][t], "units": merge["units"][t], "merge_accuracy": merge["accuracy"][t],
            "merge_bytes": merge["bytes"][t], "merge_bytes_ratio": merge["bytes"][t] / merge["bytes_before"],
            "count": removal["count"][c], "removal_accuracy": removal["accuracy"][c],
            "removal_bytes": removal["bytes"][c], "removal_macs": removal["macs"][c],
            "removal_macs_ratio": removal["macs"][c] / removal["macs"][0] if removal["count"][0] == 0 else None}


def plot_sweeps(merge: Mapping, removal: Mapping, removal_name: str = "channels", fig=None):
    """Static figure: accuracy and units against the merge tolerance; accuracy and MACs against units removed.

    Returns (fig, axes) -- axes[0], axes[1] the left/right panels (their twins hold units / MACs).
    """
    import matplotlib.pyplot as plt

    fig = fig or plt.figure(figsize=(13, 4.2))
    axes = fig.subplots(1, 2)
    ax, twin = axes[0], axes[0].twinx()
    ax.plot(merge["tolerance"], [100 * a for a in merge["accuracy"]], "o-", color="C0", ms=3, label="test accuracy")
    twin.plot(merge["tolerance"], merge["units"], "s--", color="C1", ms=3, label="hidden units kept")
    ax.set(title="Merging near-duplicate neurons", xlabel="tolerance (max |Δw|, weight units)",
           ylabel="test accuracy (%)")
    twin.set_ylabel("hidden units kept (count)")
    _legend(ax, twin)
    ax2, twin2 = axes[1], axes[1].twinx()
    ax2.plot(removal["count"], [100 * a for a in removal["accuracy"]], "o-", color="C0", ms=3, label="test accuracy")
    twin2.plot(removal["count"], [m / 1e3 for m in removal["macs"]], "s--", color="C2", ms=3, label="MACs")
    ax2.set(title=f"Removing the smallest {removal_name}, no re-training",
            xlabel=f"{removal_name} removed (count)", ylabel="test accuracy (%)")
    twin2.set_ylabel("MACs per sample (thousands)")
    _legend(ax2, twin2)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig, (ax, twin, ax2, twin2)


def _legend(ax, twin) -> None:
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower left")


class _Explorer(FigureView):
    """One figure made once. A setting moves the markers and rewrites the title: the static
    curves are rendered once into a background, :meth:`draw` restores it and draws only the
    moving artists (blitting), and :meth:`frame` returns the PNG the widget shows."""

    def __init__(self, merge: Mapping, removal: Mapping, removal_name: str = "channels"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.merge, self.removal = merge, removal
        figure = Figure(figsize=(13, 4.6))
        self.canvas = FigureCanvasAgg(figure)
        self.fig, (self.ax, _, self.ax2, _) = plot_sweeps(merge, removal, removal_name, figure)
        style = dict(color="crimson", ms=11, mfc="none", mew=2, animated=True)
        self.marker = self.ax.plot([], [], "o", **style)[0]
        self.line = self.ax.axvline(0.0, color="crimson", lw=0.8, animated=True)
        self.marker2 = self.ax2.plot([], [], "o", **style)[0]
        self.line2 = self.ax2.axvline(0.0, color="crimson", lw=0.8, animated=True)
        self.text = self.fig.text(0.5, 0.985, "", ha="center", va="top", fontsize=9, animated=True)
        self.fig.subplots_adjust(top=0.84)
        self.canvas.draw()            # everything but the animated artists
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def update(self, tol_index: int, count_index: int) -> dict:
        """Move the markers to one setting and redraw them over the background; returns :func:`explore`'s dict."""
        r = explore(self.merge, self.removal, tol_index, count_index)
        self.marker.set_data([r["tolerance"]], [100 * r["merge_accuracy"]])
        self.line.set_xdata([r["tolerance"], r["tolerance"]])
        self.marker2.set_data([r["count"]], [100 * r["removal_accuracy"]])
        self.line2.set_xdata([r["count"], r["count"]])
        macs = "" if r["removal_macs_ratio"] is None else f" ({100 * r['removal_macs_ratio']:.0f} % of the MACs)"
        self.text.set_text(f"merge at tolerance {r['tolerance']:g}: {r['units']} hidden units, "
                           f"{100 * r['merge_accuracy']:.1f} %, {r['merge_bytes']:,} B   |   "
                           f"{r['count']} removed: {100 * r['removal_accuracy']:.1f} %, {r['removal_bytes']:,} B, "
                           f"{r['removal_macs']:,} MACs{macs}")
        return r

    def draw(self) -> None:
        """Restore the background and draw the moving artists over it (blitting)."""
        self.canvas.restore_region(self.background)
        for artist in (self.line, self.marker, self.line2, self.marker2, self.text):
            self.fig.draw_artist(artist)


def explorer(merge: Mapping, removal: Mapping, removal_name: str = "channels"):
    """The ipywidgets explorer: a tolerance slider and a removed-units slider over the precomputed sweeps.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/03_3_model_trimming.ipynb
    """
    import ipywidgets as widgets

    view = _Explorer(merge, removal, removal_name)
    tol = widgets.SelectionSlider(options=[(f"{t:g}", k) for k, t in enumerate(merge["tolerance"])],
                                  value=len(merge["tolerance"]) // 2, description="tolerance")
    count = widgets.SelectionSlider(options=[(str(c), k) for k, c in enumerate(removal["count"])],
                                    value=len(removal["count"]) // 2, description=f"{removal_name} cut")
    return image_explorer(view, {"tol_index": tol, "count_index": count})
