r"""Explorer and storage arithmetic of chapter 3.2 (pruning, 剪枝).

* :func:`csr_bytes` and :func:`storage_bytes` answer "why is my pruned model not smaller?" with
  numbers: a masked model stores every zero (dense), a CSR copy stores the nonzeros plus their
  indices, a physically smaller model stores smaller dense matrices. (CSR *inference* lives with
  chapter 5.1; here only its size is counted.)
* :func:`explorer_data` is the pure compute function of the explorer: for a grid of sparsities
  it precomputes, with :mod:`nnopt_lab.compression.pruning`, every layer's threshold, mask and
  the accuracy, so that :func:`explorer` (the thin ipywidgets layer) only indexes and redraws.

See: chapters/03_2_pruning.ipynb (seed §2.2.2, §3.2.2)
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from .. import measure
from ..compression import pruning
from ..nn.layers import Conv2d, Linear, Module
from ..training.loop import check_xy, evaluate
from ..training.snapshot import preserved
from ..validation import check_choice, check_int, check_probability, check_sequence
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["csr_bytes", "storage_bytes", "weight_layers", "explorer_data", "PruningView", "explorer"]

SCOPES = ("global", "layer")


def csr_bytes(rows: int, cols: int, nnz: int, value_bits: int = 32, index_bits: int = 32) -> int:
    r"""Bytes of a (rows, cols) matrix stored in CSR (compressed sparse row) form, the answer of
    the chapter's exercise: :func:`nnopt_lab.measure.csr_bytes` (the project's one formula, also
    behind :attr:`nnopt_lab.inference.sparse.CSRMatrix.nbytes`), for a non-empty matrix.

    .. math:: \text{bytes} = \Big\lceil \tfrac18 \big(\text{nnz}\, b_v + \text{nnz}\, b_i
              + (\text{rows} + 1)\, b_i \big) \Big\rceil

    the values, one column index per value and ``rows + 1`` row pointers (where each row starts,
    and the end). With 32-bit values and indices CSR needs 8 bytes per nonzero against the dense
    4 bytes per entry: it is only smaller below about 50 % density (above 50 % sparsity).

    Parameters
    ----------
    rows, cols : int >= 1
        The matrix shape (a convolution's weight is read as ``(C_out, C_in·kh·kw)``).
    nnz : int in [0, rows·cols]
        Stored (nonzero) entries.
    value_bits, index_bits : int >= 1

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    rows, cols = check_int("rows", rows, 1), check_int("cols", cols, 1)
    return measure.csr_bytes(rows, cols, nnz, value_bits, index_bits)


def weight_layers(model: Module) -> list[tuple[str, Module]]:
    """``(name, layer)`` for every Linear and Conv2d of ``model``, in order (torch's dotted names)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    out, stack = [], [("", model)]
    while stack:
        prefix, m = stack.pop(0)
        if isinstance(m, (Linear, Conv2d)):
            out.append((prefix.rstrip("."), m))
        stack[0:0] = [(prefix + name + ".", child) for name, child in m._modules.items()]
    return out


def _effective_weight(layer: Module) -> Any:
    p = layer._params["weight"]
    return p.data if p.mask is None else p.masked(p.data)


def storage_bytes(model: Module, value_bits: int = 32, index_bits: int = 32) -> dict:
    r"""Bytes of ``model``'s parameters stored dense (masked or not) and with every weight in CSR.

    Returns
    -------
    dict
        ``dense``: every entry at ``value_bits`` (what a masked model occupies, zeros included);
        ``csr``: each Linear/Conv2d weight as :func:`nnopt_lab.measure.csr_bytes` of its nonzeros (as
        ``(C_out, rest)``), biases and other parameters dense; ``nonzero_values``: the
        nonzero payload alone, indices aside (``measure.model_bytes(nonzero=True)``).

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    value_bits, index_bits = check_int("value_bits", value_bits, 1), check_int("index_bits", index_bits, 1)
    layers = weight_layers(model)
    weights = {id(layer._params["weight"]) for _, layer in layers}
    dense_bits = csr = nonzero_bits = 0
    for p in model.parameters():
        n = math.prod(p.shape)
        dense_bits += n * value_bits
        if id(p) not in weights:
            csr += math.ceil(n * value_bits / 8)
    for _, layer in layers:
        w = _effective_weight(layer)
        xp = B.namespace(w)
        nnz = int(xp.count_nonzero(w))
        nonzero_bits += nnz * value_bits
        csr += measure.csr_bytes(w.shape[0], math.prod(w.shape[1:]), nnz, value_bits, index_bits)
    bias_bits = dense_bits - sum(math.prod(layer._params["weight"].shape) for _, layer in layers) * value_bits
    return {"dense": math.ceil(dense_bits / 8), "csr": csr,
            "nonzero_values": math.ceil((nonzero_bits + bias_bits) / 8)}


# ----------------------------------------------------------------------------- explorer: compute
def _grid(sparsities: Any) -> list[float]:
    items = check_sequence("sparsities", sparsities)
    if not items:
        raise ValueError("sparsities is empty: give the slider's grid, e.g. [0, 0.5, 0.9]")
    grid = [check_probability(f"sparsities[{i}]", v, high_open=True) for i, v in enumerate(items)]
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"sparsities must increase, got {grid}")
    return grid


def _mask_2d(p) -> Any:
    """The parameter's mask as a (rows, rest) float numpy array (all ones when it has none)."""
    mask = p.mask if p.mask is not None else B.namespace(p.data).ones_like(p.data)
    return B.to_numpy(mask).astype("float64").reshape(p.shape[0], -1)


def explorer_data(model: Module, data: tuple, sparsities: Any, *, scopes: Any = SCOPES, bins: int = 40) -> dict:
    r"""Everything the pruning explorer shows, precomputed for a grid of sparsities.

    For each scope (``"global"``: one magnitude threshold across all layers; ``"layer"``: every
    layer pruned to the same sparsity) and each sparsity :math:`s` of the grid, the model is
    pruned one-shot by magnitude with :func:`nnopt_lab.compression.pruning.prune` (no
    retraining), evaluated on ``data`` and restored. Recorded per weight: the mask, the
    threshold :math:`t` (the largest pruned :math:`|w|`, 0 when nothing is pruned: every
    :math:`|w| \le t` is pruned apart from ties) and the layer's sparsity.

    Parameters
    ----------
    model : Module, trained (it is left unchanged)
    data : (X, y) for the accuracy
    sparsities : increasing sequence of floats in [0, 1)
    scopes : subset of ("global", "layer")
    bins : int >= 1, histogram bins of each layer's :math:`|w|`

    Returns
    -------
    dict with ``sparsities``, ``names`` (weight names), ``hist`` {name: (counts, edges)},
    and for each scope ``frames[scope]``: a list over the grid of dicts ``accuracy``,
    ``thresholds`` {name: t}, ``layer_sparsity`` {name: s_l}, ``masks`` {name: (rows, cols)
    numpy array of 0/1}. All plain Python / numpy, ready to index.

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    grid = _grid(sparsities)
    scopes = [check_choice("scopes", v, SCOPES) for v in check_sequence("scopes", scopes)]
    bins = check_int("bins", bins, 1)
    check_xy("data", data)
    weights = pruning.prunable(model)
    magnitudes = {k: abs(B.to_numpy(p.masked(p.data)).astype("float64")) for k, p in weights.items()}
    hist = {}
    for k, m in magnitudes.items():
        top = float(m.max()) or 1.0
        edges = [top * i / bins for i in range(bins + 1)]
        counts = [0] * bins
        for v in m.ravel().tolist():
            counts[min(int(v / top * bins), bins - 1)] += 1
        hist[k] = (counts, edges)
    frames = {}
    for scope in scopes:
        frames[scope] = []
        for s in grid:
            with preserved(model):
                report = pruning.prune(model, s, scope=scope)
                accuracy = evaluate(model, data)[1]
                masks = {k: _mask_2d(p) for k, p in weights.items()}
            thresholds = {k: float(magnitudes[k].reshape(masks[k].shape)[masks[k] == 0].max())
                          if (masks[k] == 0).any() else 0.0 for k in weights}
            frames[scope].append({"accuracy": float(accuracy), "thresholds": thresholds, "masks": masks,
                                  "layer_sparsity": report.as_dict(), "sparsity": report.sparsity})
    return {"sparsities": grid, "names": list(weights), "hist": hist, "frames": frames}


# ----------------------------------------------------------------------------- explorer: drawing
class PruningView(FigureView):
    """One figure made once (histogram + threshold, mask picture, accuracy curve); :meth:`update`
    only moves its artists (``set_data``, ``set_xdata``), so a redraw takes milliseconds. The
    figure is an Agg figure outside pyplot (``display(view.fig)`` shows it in a notebook).

    See: chapters/03_2_pruning.ipynb
    """

    def __init__(self, data: dict, figsize=(13, 3.6), dpi: int = 72):
        self.data = data
        self.fig, (self.ax_hist, self.ax_mask, self.ax_acc) = agg_figure(figsize, dpi, ncols=3)
        name = data["names"][0]
        counts, edges = data["hist"][name]
        self.stairs = self.ax_hist.stairs(counts, edges, fill=True, alpha=0.6, label="|w| before pruning")
        self.line = self.ax_hist.axvline(0.0, color="C3", lw=2, label="threshold t")
        self.ax_hist.set(xlabel="|w| (weight magnitude)", ylabel="weights per bin", yscale="log")
        self.ax_hist.legend(fontsize=8, loc="upper right")
        first = next(iter(data["frames"].values()))[0]
        self.image = self.ax_mask.imshow(first["masks"][name], cmap="gray", vmin=0, vmax=1, aspect="auto",
                                         interpolation="nearest")
        self.ax_mask.set(xlabel="input (column)", ylabel="output unit (row)")
        # a fixed label place with room for 4-digit row numbers: the layout is measured once, on the
        # first weight, and a taller mask must not push its label over its ticks
        self.ax_mask.yaxis.set_label_coords(-0.2, 0.5)
        grid = [100 * s for s in data["sparsities"]]
        for scope, frames in data["frames"].items():
            self.ax_acc.plot(grid, [100 * f["accuracy"] for f in frames], "o-", ms=3, label=f"{scope} magnitude")
        (self.marker,) = self.ax_acc.plot([grid[0]], [100 * first["accuracy"]], "o", color="C3", ms=10,
                                          mfc="none", mew=2, label="shown")
        self.ax_acc.set(title="Accuracy without retraining", xlabel="sparsity (% of weights pruned)",
                        ylabel="accuracy (%)")
        self.ax_acc.legend(fontsize=8)
        self.ax_acc.grid(alpha=0.3)
        self.fig.tight_layout()
        self.shown = name
        # blitting: the histogram and the accuracy curves are drawn once per weight (cached),
        # a redraw draws the threshold, the mask, the marker and the titles over them
        self.animated = [self.line, self.image, self.marker, self.ax_hist.title, self.ax_mask.title,
                         self.ax_acc.title]

    def background_key(self) -> str:
        return self.shown

    def update(self, scope: str, name: str, index: int) -> None:
        """Show weight ``name`` at grid point ``index`` of ``scope`` (no computation, only artists)."""
        frame = self.data["frames"][scope][index]
        self.shown = name
        counts, edges = self.data["hist"][name]
        self.stairs.set_data(counts, edges)
        self.ax_hist.set_xlim(edges[0], edges[-1])
        self.ax_hist.set_ylim(0.8, 1.5 * max(counts))
        t = frame["thresholds"][name]
        self.line.set_xdata([t, t])
        self.ax_hist.set_title(f"{name}: {100 * frame['layer_sparsity'][name]:.1f} % pruned, t = {t:.3g}", fontsize=10)
        mask = frame["masks"][name]
        self.image.set_data(mask)
        self.image.set_extent((-0.5, mask.shape[1] - 0.5, mask.shape[0] - 0.5, -0.5))
        self.ax_mask.set_title(f"mask of {name} {mask.shape} (white = kept)", fontsize=10)
        s = 100 * self.data["sparsities"][index]
        self.marker.set_data([s], [100 * frame["accuracy"]])
        self.ax_acc.set_title(f"{scope}, {s:.0f} % pruned: {100 * frame['accuracy']:.1f} % (no retraining)", fontsize=10)


def explorer(data: dict) -> Any:
    """The thin ipywidgets layer over :func:`explorer_data`: scope, layer and a sparsity slider.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/03_2_pruning.ipynb
    """
    import ipywidgets as widgets

    view = PruningView(data)
    labels = [(f"{100 * s:g} %", i) for i, s in enumerate(data["sparsities"])]
    controls = {"scope": widgets.ToggleButtons(options=list(data["frames"]), description="scope"),
                "name": widgets.Dropdown(options=data["names"], description="weight"),
                "index": widgets.SelectionSlider(options=labels, value=0, description="sparsity",
                                                 continuous_update=True)}
    return image_explorer(view, controls, rows=[["scope", "name"], ["index"]])
