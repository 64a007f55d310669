r"""Explorer of model compression: bits, clusters and rank of one layer against its weight
histogram, its reconstruction error and the model's accuracy.

* :func:`compression_grid` -- the pure compute function (tested): for every setting of the
  sliders -- uniform quantization at b bits (:func:`~nnopt_lab.compression.quantization.quantize_weight`),
  k-means sharing with k clusters (:func:`~nnopt_lab.compression.weight_sharing.share_weights`),
  truncated SVD to rank r (:func:`~nnopt_lab.compression.factorization.low_rank_linear`) --
  the histogram of the reconstructed weight, the relative error
  :math:`\lVert W - \hat W\rVert_F / \lVert W\rVert_F`, the layer's bytes and the model's
  accuracy with that layer replaced. Everything the sliders index is computed here, once;
* :func:`explorer` -- the thin ipywidgets layer: one figure made once (:class:`CompressionView`),
  whose artists are updated (``set_ydata``, ``set_data``) by :func:`update`, which does no
  computing, and sent as a PNG;
* :func:`static_figure` -- the figure beside the widget (a few settings of each method).

See: chapters/03_1_model_compression.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from .. import backend as B
from ..compression import factorization as FZ
from ..compression import quantization as Q
from ..compression import weight_sharing as WS
from ..nn.layers import Linear, Module
from ..validation import check_callable, check_choice, check_int
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["METHODS", "compression_grid", "CompressionView", "explorer", "update", "static_figure"]

METHODS = ("bits", "clusters", "rank")
"""The three sliders: uniform quantization bits, k-means clusters, SVD rank."""


def _histogram(values: Any, edges: list[float]) -> list[int]:
    """Counts of ``values`` (numpy, flat) in the bins ``edges`` (values outside go to the end bins)."""
    counts = [0] * (len(edges) - 1)
    lo, width = edges[0], (edges[-1] - edges[0]) / (len(edges) - 1)
    for v in values.tolist():
        counts[min(max(int((v - lo) / width), 0), len(counts) - 1)] += 1
    return counts


def _reconstruct(method: str, weight: Any, value: int, bits_scheme: str, generator) -> tuple[Any, int]:
    """(Ŵ, bits to store the weight) for one setting."""
    n = math.prod(tuple(weight.shape))
    if method == "bits":
        record = (Q.binarize_weight(weight, per_channel=True) if value == 1 else
                  Q.quantize_weight(weight, value, bits_scheme, per_channel=True))
        return record.dequantize(), record.total_bits
    if method == "clusters":
        codebook, indices = WS.share_weights(weight, value, init="linear", generator=generator)
        xp = B.namespace(codebook)
        flat = xp.astype(xp.reshape(indices, (-1,)), xp.int64)
        return xp.reshape(xp.take(codebook, flat, axis=0), tuple(weight.shape)), n * WS.index_bits(value) + 32 * value
    pair = FZ.low_rank_linear(FZ.linear_from(weight), value)
    first, second = pair[0]._params["weight"].data, pair[1]._params["weight"].data
    return B.namespace(first).matmul(second, first), 32 * value * (weight.shape[0] + weight.shape[1])


def compression_grid(model: Module, layer_index: int, evaluate: Callable[[Module], float],
                     bits_options: Sequence[int] = (8, 6, 4, 3, 2, 1),
                     clusters_options: Sequence[int] = (256, 64, 16, 8, 4, 2),
                     rank_options: Sequence[int] = (32, 16, 8, 4, 2, 1),
                     bins: int = 60, bits_scheme: str = "affine", seed: int = 0) -> dict:
    r"""Everything the explorer shows, for every slider position, computed once.

    Parameters
    ----------
    model : Module
        A trained model (e.g. a ``Sequential`` MLP); left unchanged.
    layer_index : int
        Index in ``model`` (a Sequential) of the Linear layer to compress.
    evaluate : callable, model -> float
        The accuracy of a model (e.g. ``lambda m: evaluate(m, test)[1]``).
    bits_options, clusters_options, rank_options : sequences of int
        Bits b (1 = binary sign·α per channel; else ``bits_scheme`` per channel), clusters k
        (k-means from linear init), ranks r (truncated SVD, :math:`\hat W = W_2 W_1`).
    bins : int >= 2
        Bins of the histograms, over the range of the original weight.
    bits_scheme : {"affine", "symmetric"}
    seed : int
        Seed of the (unused by linear init) k-means generator, for reproducibility.

    Returns
    -------
    dict with ``edges`` (bins + 1 floats), ``centers``, ``original`` (counts), ``fp32_bytes``
    (the layer's weight as float32), ``base_accuracy``, and ``methods``: for each name in
    :data:`METHODS` a dict ``{"options": [...], "counts": [[...]], "error": [...],
    "bytes": [...], "accuracy": [...]}`` in the order of the options.
    """
    layers = list(model)
    layer_index = check_int("layer_index", layer_index, -len(layers), len(layers) - 1)
    layer = layers[layer_index]
    if not isinstance(layer, Linear):
        raise TypeError(f"layer_index must point to a Linear layer of model, got {type(layer).__name__}")
    check_callable("evaluate", evaluate)
    bins = check_int("bins", bins, 2)
    check_choice("bits_scheme", bits_scheme, ("affine", "symmetric"))
    rank_cap = min(layer._params["weight"].shape)
    options = {"bits": [check_int("bits_options[]", b, 1, Q.MAX_BITS) for b in bits_options],
               "clusters": [check_int("clusters_options[]", k, 1) for k in clusters_options],
               "rank": [check_int("rank_options[]", r, 1, rank_cap) for r in rank_options]}
    weight = layer._params["weight"].data
    xp = B.namespace(weight)
    flat = B.to_numpy(weight).reshape(-1).astype("float64")
    lo, hi = float(flat.min()), float(flat.max())
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    norm = B.float_of(xp.sqrt(xp.sum(weight * weight)))
    out = {"edges": edges, "centers": [(a + b) / 2 for a, b in zip(edges, edges[1:])],
           "original": _histogram(flat, edges), "fp32_bytes": 4 * flat.shape[0],
           "base_accuracy": float(evaluate(model)), "layer_index": layer_index, "methods": {}}
    generator = B.generator(seed)
    p = layer._params["weight"]
    for method in METHODS:
        rows = {"options": options[method], "counts": [], "error": [], "bytes": [], "accuracy": []}
        for value in options[method]:
            w_hat, nbits = _reconstruct(method, weight, value, bits_scheme, generator)
            rows["counts"].append(_histogram(B.to_numpy(w_hat).reshape(-1).astype("float64"), edges))
            rows["error"].append(B.float_of(xp.sqrt(xp.sum((weight - w_hat) ** 2))) / norm)
            rows["bytes"].append(nbits / 8)
            original, p.data = p.data, w_hat
            try:
                rows["accuracy"].append(float(evaluate(model)))
            finally:
                p.data = original
        out["methods"][method] = rows
    return out


def _make_figure(grid: dict, fig: Any = None):
    """The explorer's figure, made once: histogram, error and accuracy panels with their artists.

    ``fig``: a figure to draw in (default: an Agg figure outside pyplot, :func:`~.figures.agg_figure`).
    The axis scales are set here, once (a ``set_xscale`` per redraw would rebuild the ticks).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if fig is None:
        fig, axes = agg_figure((14, 3.8), 72, ncols=3)
    else:
        axes = fig.subplots(1, 3)
    width = grid["edges"][1] - grid["edges"][0]
    axes[0].bar(grid["centers"], grid["original"], width=width, color="0.8", label="original (float32)")
    hist, = axes[0].step(grid["centers"], grid["original"], where="mid", color="C3", label="compressed")
    axes[0].set(yscale="log", xlabel="weight value", ylabel="count (log)")
    axes[0].legend(fontsize=8)
    curve, = axes[1].plot([], [], "o-", color="C0")
    marker, = axes[1].plot([], [], "o", color="C3", markersize=12, alpha=0.6)
    axes[1].set(xlabel="setting (log scale)", ylabel="‖W − Ŵ‖ / ‖W‖ (log)")
    acc_curve, = axes[2].plot([], [], "o-", color="C0")
    acc_marker, = axes[2].plot([], [], "o", color="C3", markersize=12, alpha=0.6)
    axes[2].axhline(100 * grid["base_accuracy"], color="k", ls=":", lw=1, label="float32")
    axes[2].set(xlabel="bytes of the layer's weight (log)", ylabel="test accuracy (%)")
    axes[2].legend(fontsize=8)
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log")
    axes[2].set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")          # 1, 2, 4, 8 bits; 2000 B: no crowded 2×10³ labels
    for axis in (axes[0].yaxis, axes[1].xaxis, axes[2].xaxis):
        if axis is not axes[1].xaxis:
            axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))    # 1000, 2000, 5000, ...
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.grid(alpha=0.3)
    artists = {"axes": axes, "hist": hist, "curve": curve, "marker": marker, "acc_curve": acc_curve,
               "acc_marker": acc_marker}
    update(grid, artists, METHODS[0], 0)              # data on the log axes before the layout is measured
    fig.tight_layout()
    return fig, artists


def update(grid: dict, artists: dict, method: str, position: int) -> None:
    """Show setting ``position`` of ``method``: only ``set_data`` / ``set_ydata`` / titles (no computing)."""
    rows = grid["methods"][method]
    options = rows["options"]
    value = options[position]
    axes = artists["axes"]
    artists["hist"].set_ydata([max(c, 0.5) for c in rows["counts"][position]])   # 0.5: visible on the log axis
    error = [max(e, 1e-16) for e in rows["error"]]                               # 0 (exact): on the log axis
    artists["curve"].set_data(options, error)
    artists["marker"].set_data([value], [error[position]])
    artists["acc_curve"].set_data(rows["bytes"], [100 * a for a in rows["accuracy"]])
    artists["acc_marker"].set_data([rows["bytes"][position]], [100 * rows["accuracy"][position]])
    if artists.get("method") != method:                                         # new curves: new limits
        for ax in axes[1:]:
            ax.relim()
            ax.autoscale_view()
        artists["method"] = method
    label = {"bits": f"{value} bit(s)" + (" (binary)" if value == 1 else ""), "clusters": f"k = {value} clusters",
             "rank": f"rank {value}"}[method]
    axes[0].set_title(f"layer {grid['layer_index']}: {label}", fontsize=9)
    axes[1].set_title(f"reconstruction error {rows['error'][position]:.3g}", fontsize=9)
    axes[2].set_title(f"{rows['bytes'][position]:,.0f} B ({rows['bytes'][position] / grid['fp32_bytes']:.3f} of "
                      f"fp32), accuracy {100 * rows['accuracy'][position]:.1f} %", fontsize=9)


class CompressionView(FigureView):
    """The explorer's figure (:func:`_make_figure`), made once; :meth:`update` calls :func:`update`.

    The curves of a method and the axes are drawn once per method and cached; a redraw draws
    only the histogram, the two markers and the titles over that picture (blitting).

    See: chapters/03_1_model_compression.ipynb
    """

    def __init__(self, grid: dict):
        self.grid = grid
        self.fig, self.artists = _make_figure(grid)
        a = self.artists
        self.animated = [a["hist"], a["marker"], a["acc_marker"]] + [ax.title for ax in a["axes"]]

    def background_key(self) -> str:
        return self.artists.get("method")

    def update(self, method: str, value: int) -> None:
        """Show the setting ``value`` (an option, e.g. 4 bits) of ``method``."""
        check_choice("method", method, METHODS)
        options = self.grid["methods"][method]["options"]
        update(self.grid, self.artists, method, options.index(check_choice("value", value, options)))


def explorer(grid: dict):
    """The ipywidgets explorer over a :func:`compression_grid`: method and setting sliders.

    Returns the widget box (:func:`~nnopt_lab.widgets.figures.image_explorer`); its ``redraw``
    (the callback), ``figure`` and ``artists`` attributes let a notebook time :func:`update`.

    See: chapters/03_1_model_compression.ipynb
    """
    import ipywidgets as widgets

    view = CompressionView(grid)
    method = widgets.ToggleButtons(options=list(METHODS), value="bits", description="method")
    position = widgets.SelectionSlider(options=grid["methods"]["bits"]["options"], description="setting")

    def on_change(name: str) -> None:
        options = grid["methods"][method.value]["options"]
        if list(position.options) != options:
            position.options = options
            position.value = options[0]

    box = image_explorer(view, {"method": method, "value": position}, on_change=on_change)
    box.figure, box.artists = view.fig, view.artists
    return box


def static_figure(grid: dict, picks: dict | None = None):
    """Beside the widget: for each method, the histograms of a few settings over the original one."""
    import matplotlib.pyplot as plt

    picks = picks or {m: grid["methods"][m]["options"][1::2] for m in METHODS}
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), sharey=True)
    width = grid["edges"][1] - grid["edges"][0]
    names = {"bits": "bits (uniform, per channel; 1 = binary)", "clusters": "k-means clusters", "rank": "SVD rank"}
    for ax, method in zip(axes, METHODS):
        rows = grid["methods"][method]
        ax.bar(grid["centers"], grid["original"], width=width, color="0.85", label="original")
        for value in picks[method]:
            i = rows["options"].index(value)
            ax.step(grid["centers"], [max(c, 0.5) for c in rows["counts"][i]], where="mid",
                    label=f"{value}: err {rows['error'][i]:.2f}, acc {100 * rows['accuracy'][i]:.1f} %")
        ax.set(yscale="log", title=f"layer {grid['layer_index']} — {names[method]}", xlabel="weight value")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("count (log)")
    fig.tight_layout()
    return fig
