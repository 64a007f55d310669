r"""Explorer of chapter 5.3 (quantization, 量化): bits × granularity × calibration method, against
accuracy and the error of the logits.

* :func:`quantization_sweep` -- the pure compute function (tested): for every number of bits,
  weight granularity (one scale per tensor or per output channel) and activation calibration
  method, the model run with simulated ("fake") quantization -- int-``b`` symmetric weights
  (:func:`~nnopt_lab.compression.quantization.fake_quantize_model`) and ``b``-bit affine
  activations at the input of every Linear/Conv2d, with the range an observer of
  :mod:`nnopt_lab.inference.calibration` chose on calibration data -- its test accuracy, the RMS
  error of its logits against the float model's, and a histogram of that error;
* :class:`QuantizationView` -- one figure made once (accuracy against bits; the error histogram);
  :meth:`QuantizationView.update` only moves lines, a marker and one step patch;
* :func:`explorer` -- the thin ipywidgets layer (a bits slider, two toggles).

See: chapters/05_3_quantization.ipynb (seed §2.4.3, §3.4.3)
"""
from __future__ import annotations

from typing import Any, Sequence

from .. import backend as B
from ..compression.quantization import fake_quantize, fake_quantize_model, integer_range
from ..inference.calibration import OBSERVERS, make_observer
from ..nn.layers import Conv2d, Linear, Sequential
from ..validation import check_array, check_choice, check_int, check_sequence
from .figures import FigureView, image_explorer

__all__ = ["GRANULARITIES", "quantization_sweep", "explore", "QuantizationView", "explorer"]

#: Weight granularities: one scale per tensor, or one per output channel.
GRANULARITIES = ("per tensor", "per channel")


def _settings(name: str, values: Any, check) -> list:
    values = [check(f"{name}[{i}]", v) for i, v in enumerate(check_sequence(name, values))]
    if not values:
        raise ValueError(f"{name} must hold at least one entry")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat an entry, got {values}")
    return values


def _quantized_inputs(model: Sequential) -> list[int]:
    """Indices of the Linear/Conv2d layers: their inputs are the activations quantized."""
    return [i for i, layer in enumerate(model) if isinstance(layer, (Linear, Conv2d))]


def _forward(model: Sequential, x: Any, qparams: dict, qmax: int) -> Any:
    """The model on ``x``, with the input of layer i fake-quantized to [0, qmax] by ``qparams[i]``."""
    for i, layer in enumerate(model):
        if i in qparams:
            x = fake_quantize(x, *qparams[i], 0, qmax)
        x = layer.forward(x)
    return x


def _calibrate(model: Sequential, x: Any, method: str, bits: int, batch_size: int) -> dict:
    """(scale, zero point) of the input of every Linear/Conv2d, from an observer on the float model;
    and the range chosen for the first one."""
    targets = _quantized_inputs(model)
    observers = {i: make_observer(method, bits) for i in targets}
    for start in range(0, x.shape[0], batch_size):
        h = x[start:start + batch_size]
        for i, layer in enumerate(model):
            if i in observers:
                observers[i](h)
            h = layer.forward(h)
    return {i: obs.calculate_qparams() for i, obs in observers.items()}, observers[targets[0]].range()


def quantization_sweep(model: Any, calibration_x: Any, test: tuple, bits: Sequence[int] = (8, 6, 5, 4, 3),
                       methods: Sequence[str] = ("minmax", "percentile", "mse"), bins: int = 41,
                       batch_size: int = 256) -> dict:
    r"""Accuracy and logit error of a model under simulated quantization, over a grid of settings.

    For each ``b`` in ``bits``, granularity :data:`GRANULARITIES` and calibration ``method``: the
    weights of every Linear/Conv2d become their symmetric ``b``-bit values
    :math:`\hat W = \Delta\,\operatorname{clamp}(\operatorname{round}(W/\Delta), -(2^{b-1}-1), 2^{b-1}-1)`
    (one :math:`\Delta` per tensor or per output channel), and the input :math:`x` of each of
    those layers becomes
    :math:`\hat x = (\operatorname{clamp}(\operatorname{round}(x/\Delta_x) + z_x, 0, 2^b - 1) - z_x)\Delta_x`
    with :math:`(\Delta_x, z_x)` from ``make_observer(method, b)`` calibrated on the float model's
    activations for ``calibration_x``. The model is restored afterwards.

    Parameters
    ----------
    model : Sequential, in eval mode (no BatchNorm left unfolded matters: it is run as is)
    calibration_x : float array (N, ...), a few hundred samples
    test : (x, y) -- float array (M, ...) and int labels (M,)
    bits : distinct ints in [2, 16]
    methods : distinct names of :data:`nnopt_lab.inference.calibration.OBSERVERS`
    bins : int in [5, 1001], bins of the error histograms
    batch_size : int >= 1, of the calibration passes

    Returns
    -------
    dict with ``bits``, ``methods``, ``granularities`` (lists); ``float_accuracy`` (float in
    [0, 1]); ``accuracy`` and ``rms`` -- nested lists indexed [bits][granularity][method], the
    test accuracy and :math:`\sqrt{\operatorname{mean}(\hat y - y)^2}` of the logits; ``counts``
    -- nested [bits][granularity][method] lists of ``bins`` ints, the histogram of
    :math:`\hat y - y` on ``edges[bits]`` (``bins + 1`` floats, symmetric about 0, spanning the
    largest 99.5th percentile of :math:`|\hat y - y|` over that row; values beyond go to the end
    bins); ``ranges`` -- [bits][method] the clipping range (lo, hi) the observer chose for the
    first layer's input (before it is widened to contain 0).

    See: chapters/05_3_quantization.ipynb
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an nnopt_lab Sequential, got {type(model).__name__}")
    if not _quantized_inputs(model):
        raise ValueError("model must hold at least one Linear or Conv2d layer to quantize")
    check_array("calibration_x", calibration_x)
    if not isinstance(test, (tuple, list)) or len(test) != 2:
        raise TypeError(f"test must be a pair (x, y), got {type(test).__name__}")
    x, y = check_array("test[0]", test[0]), check_array("test[1]", test[1], ndim=1)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0 or calibration_x.shape[0] == 0:
        raise ValueError(f"test must pair as many inputs as labels (at least one) and calibration_x hold a sample, "
                         f"got {x.shape[0]} inputs, {y.shape[0]} labels, {calibration_x.shape[0]} calibration samples")
    bits = _settings("bits", bits, lambda n, v: check_int(n, v, 2, 16))
    methods = _settings("methods", methods, lambda n, v: check_choice(n, v, tuple(OBSERVERS)))
    bins = check_int("bins", bins, 5, 1001)
    batch_size = check_int("batch_size", batch_size, 1)
    labels = B.to_numpy(y).astype("int64")
    reference = B.to_numpy(model.forward(x)).astype("float64")
    float_accuracy = float((reference.argmax(axis=1) == labels).mean())
    accuracy, rms, errors, ranges = [], [], [], []
    for b in bits:
        qmax = integer_range(b)[1]
        calibrated = [_calibrate(model, calibration_x, m, b, batch_size) for m in methods]
        ranges.append([tuple(float(v) for v in r) for _, r in calibrated])
        calibrated = [q for q, _ in calibrated]
        acc_row, rms_row, err_row = [], [], []
        for granularity in GRANULARITIES:
            with fake_quantize_model(model, b, "symmetric", per_channel=granularity == "per channel"):
                outs = [B.to_numpy(_forward(model, x, q, qmax)).astype("float64") for q in calibrated]
            err = [o - reference for o in outs]
            acc_row.append([float((o.argmax(axis=1) == labels).mean()) for o in outs])
            rms_row.append([float((e ** 2).mean() ** 0.5) for e in err])
            err_row.append(err)
        accuracy.append(acc_row)
        rms.append(rms_row)
        errors.append(err_row)
    edges, counts = [], []
    for err_row in errors:
        flat = [e.ravel() for row in err_row for e in row]
        top = max(_quantile(abs(f), 0.995) for f in flat) or 1e-12
        step = 2 * top / bins
        row_edges = [-top + k * step for k in range(bins + 1)]
        edges.append(row_edges)
        counts.append([[_histogram(e.ravel(), -top, step, bins) for e in row] for row in err_row])
    return {"bits": bits, "methods": methods, "granularities": list(GRANULARITIES), "float_accuracy": float_accuracy,
            "accuracy": accuracy, "rms": rms, "counts": counts, "edges": edges, "ranges": ranges}


def _quantile(values: Any, q: float) -> float:
    """The ``q`` quantile of ``values`` (1-D numpy), the order statistic at floor(q (n - 1))."""
    xp = B.namespace(values)
    ordered = xp.sort(values)
    return B.float_of(ordered[int(q * (ordered.shape[0] - 1))])


def _histogram(values: Any, start: float, step: float, bins: int) -> list[int]:
    """Counts of ``values`` (numpy) in ``bins`` bins of width ``step`` from ``start``; beyond: the end bins."""
    out = [0] * bins
    for i in ((values - start) / step).astype("int64").clip(0, bins - 1).tolist():
        out[i] += 1
    return out


def explore(data: dict, bits_index: int, granularity_index: int, method_index: int) -> dict:
    """One setting of a :func:`quantization_sweep` result: a look-up, no computation.

    Returns a dict with ``bits``, ``granularity``, ``method``, ``accuracy``, ``rms``, ``counts``,
    ``edges``, ``range`` and ``drop`` (float accuracy minus this one, in points).

    See: chapters/05_3_quantization.ipynb
    """
    b = check_int("bits_index", bits_index, 0, len(data["bits"]) - 1)
    g = check_int("granularity_index", granularity_index, 0, len(data["granularities"]) - 1)
    m = check_int("method_index", method_index, 0, len(data["methods"]) - 1)
    acc = data["accuracy"][b][g][m]
    return {"bits": data["bits"][b], "granularity": data["granularities"][g], "method": data["methods"][m],
            "accuracy": acc, "rms": data["rms"][b][g][m], "counts": data["counts"][b][g][m],
            "edges": data["edges"][b], "range": tuple(data["ranges"][b][m]),
            "drop": 100 * (data["float_accuracy"] - acc)}


class QuantizationView(FigureView):
    """Accuracy against bits (one line per calibration method, for the chosen granularity) and the
    histogram of the logit error of the chosen setting; one figure, made once.

    :meth:`update` changes line data, a marker, one step patch (the histogram), the axis limits and the titles;
    :meth:`draw` blits them over the static part, rendered once per number of bits.

    See: chapters/05_3_quantization.ipynb
    """

    def __init__(self, data: dict, figsize=(11.0, 3.6), dpi: int = 72):
        from .figures import agg_figure

        self.data = data
        self.fig, (self.ax_acc, self.ax_hist) = agg_figure(figsize, dpi, ncols=2)
        bits = data["bits"]
        self.lines = [self.ax_acc.plot(bits, [0.0] * len(bits), "o-", ms=4, label=m, animated=True)[0]
                      for m in data["methods"]]
        self.ax_acc.axhline(100 * data["float_accuracy"], color="gray", ls="--", lw=1, label="float")
        (self.marker,) = self.ax_acc.plot([bits[0]], [0.0], "o", color="k", ms=11, mfc="none", mew=2, animated=True)
        self.ax_acc.set(xlabel="bits (weights and activations)", ylabel="test accuracy (%)", xticks=bits,
                        ylim=(0, 102))
        self.ax_acc.legend(fontsize=8, loc="lower right")
        self.ax_acc.grid(alpha=0.3)
        self.acc_title = self.ax_acc.set_title("", animated=True)
        bins = len(data["counts"][0][0][0])
        self.hist = self.ax_hist.stairs([0.0] * bins, list(range(bins + 1)), fill=True, color="C0", alpha=0.8,
                                        animated=True)
        self.ax_hist.set(xlabel="logit error (quantized − float); end bins: the ≤ 0.5 % beyond",
                         ylabel="share of logits (%)")
        self.hist_title = self.ax_hist.set_title("", animated=True)
        self._top = [1.1 * max(100 * max(c) / (sum(c) or 1) for g in row for c in g) or 1.0 for row in data["counts"]]
        self._limits_of = None
        self._backgrounds: dict = {}
        self.fig.tight_layout()
        self.fig.subplots_adjust(top=0.87)                # room for the titles (animated: not in the layout)
        self.update(0, 0, 0)

    def update(self, bits_index: int = 0, granularity_index: int = 0, method_index: int = 0) -> dict:
        """Show one setting; returns :func:`explore`'s dict."""
        r = explore(self.data, bits_index, granularity_index, method_index)
        g = granularity_index
        for m, line in enumerate(self.lines):
            line.set_ydata([100 * self.data["accuracy"][b][g][m] for b in range(len(self.data["bits"]))])
            line.set_linewidth(2.5 if m == method_index else 1.0)
        self.marker.set_data([r["bits"]], [100 * r["accuracy"]])
        edges, counts = r["edges"], r["counts"]
        total = sum(counts) or 1
        shares = [100 * c / total for c in counts]
        self.hist.set_data(shares, edges)
        if self._limits_of != bits_index:            # axis limits (and so tick labels) change with the bits only
            self.ax_hist.set_xlim(edges[0], edges[-1])
            self.ax_hist.set_ylim(0, self._top[bits_index])
            self._limits_of = bits_index
        self.acc_title.set_text(f"{r['granularity']} weights: {100 * r['accuracy']:.1f} % at {r['bits']} bits "
                                f"({r['method']})")
        self.hist_title.set_text(f"Logit error, {r['bits']} bits, {r['granularity']}, {r['method']}: "
                                 f"RMS {r['rms']:.3g}")
        return r

    def draw(self) -> None:
        """Blit: the static part (axes, ticks, labels, legend) is rendered once per number of bits and
        kept; each redraw restores it and draws only the lines, the marker, the histogram and the titles."""
        canvas = self.fig.canvas
        background = self._backgrounds.get(self._limits_of)
        if background is None:
            canvas.draw()                                  # everything but the animated artists
            background = self._backgrounds[self._limits_of] = canvas.copy_from_bbox(self.fig.bbox)
        else:
            canvas.restore_region(background)
        for artist in (*self.lines, self.marker, self.hist, self.acc_title, self.hist_title):
            self.fig.draw_artist(artist)


def explorer(data: dict) -> Any:
    """The thin ipywidgets layer over a :func:`quantization_sweep` result: bits, granularity, method.

    See: chapters/05_3_quantization.ipynb
    """
    import ipywidgets as widgets

    view = QuantizationView(data)
    controls = {
        "bits_index": widgets.SelectionSlider(options=[(str(b), i) for i, b in enumerate(data["bits"])], value=0,
                                              description="bits"),
        "granularity_index": widgets.ToggleButtons(options=[(g, i) for i, g in enumerate(data["granularities"])],
                                                   value=0, description="weights"),
        "method_index": widgets.ToggleButtons(options=[(m, i) for i, m in enumerate(data["methods"])], value=0,
                                              description="calibration"),
    }
    return image_explorer(view, controls, rows=[["bits_index"], ["granularity_index"], ["method_index"]])
