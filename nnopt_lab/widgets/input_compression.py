"""Explorer of input compression: bits and PCA components against reconstruction and accuracy.

* :func:`explore` -- the pure compute function (tested): k-bit and PCA reconstructions of a few
  images, their bytes per sample, mean squared error, and the accuracy looked up in a table
  computed beforehand (so the widget answers at once);
* :func:`plot_explorer` -- one figure of that result; :func:`reconstruction_grid` -- the static
  figure beside the widget (several settings at once);
* :class:`InputCompressionView` -- the explorer's figure made once (three rows of images whose
  pixels and titles a setting replaces); :func:`explorer` -- the thin ipywidgets layer.

See: chapters/02_3_data_compression.ipynb
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import backend as B
from ..preprocessing.input_compression import PCA, bytes_per_sample, quantize_inputs
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["explore", "plot_explorer", "reconstruction_grid", "InputCompressionView", "explorer"]


def _squared_error(a: Any, b: Any) -> float:
    xp = B.namespace(a)
    return B.float_of(xp.mean((a - b) ** 2))


def explore(x: Any, bits: int, n_components: int, pca: PCA, accuracy: Mapping | None = None,
            lo: float = 0.0, hi: float = 1.0) -> dict:
    r"""k-bit and PCA versions of the samples ``x``, with their cost and quality.

    Parameters
    ----------
    x : float array, shape (n, D)
        A few samples in [lo, hi] (e.g. digits pixels in [0, 1]).
    bits : int in [1, 16]
    n_components : int in [1, pca.n_components]
    pca : PCA
        Fitted on the training split with at least ``n_components`` components.
    accuracy : mapping, optional
        ``{("kbit", bits): acc, ("pca", k): acc}`` measured beforehand; missing keys give None.
    lo, hi : float
        The input range of the k-bit quantizer.

    Returns
    -------
    dict with numpy arrays ``original``, ``kbit``, ``pca`` (each (n, D)) and floats
    ``kbit_bytes``, ``pca_bytes`` (float32 components), ``kbit_mse``, ``pca_mse``,
    ``kbit_acc``, ``pca_acc`` (None when not in ``accuracy``).
    """
    d = x.shape[1]
    kbit = quantize_inputs(x, bits, lo, hi)
    low_rank = pca.reconstruct(x, n_components)
    accuracy = accuracy or {}
    return {
        "original": B.to_numpy(x), "kbit": B.to_numpy(kbit), "pca": B.to_numpy(low_rank),
        "bits": bits, "n_components": n_components,
        "kbit_bytes": bytes_per_sample("kbit", d, bits=bits),
        "pca_bytes": bytes_per_sample("pca", d, k=n_components),
        "kbit_mse": _squared_error(kbit, x), "pca_mse": _squared_error(low_rank, x),
        "kbit_acc": accuracy.get(("kbit", bits)), "pca_acc": accuracy.get(("pca", n_components)),
    }


def _label(name: str, nbytes: float, mse: float, acc: float | None) -> str:
    acc_text = "n/a" if acc is None else f"{100 * acc:.1f} %"
    return f"{name}: {nbytes:g} B/sample, MSE {mse:.4f}, test acc {acc_text}"


def _strip(images: Any, image_shape: tuple) -> Any:
    """n flat images side by side in one picture, one blank column between them (numpy, for imshow)."""
    h, w = image_shape
    n = images.shape[0]
    out = [[0.0] * (n * (w + 1) - 1) for _ in range(h)]
    for k in range(n):
        img = images[k].reshape(h, w).tolist()
        for i in range(h):
            out[i][k * (w + 1):k * (w + 1) + w] = img[i]
    return out


def _draw_rows(rows: list, image_shape: tuple, title: str, fig=None):
    """One axis per row: the row's images side by side, its label as the axis title."""
    import matplotlib.pyplot as plt

    n = rows[0][1].shape[0]
    fig = fig or plt.figure(figsize=(max(6.0, 0.9 * n), 0.95 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, imgs) in zip(axes, rows):
        ax.imshow(_strip(imgs, image_shape), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(label, loc="left", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_explorer(result: dict, image_shape: tuple = (8, 8), fig=None):
    """Three rows of images (original, k-bit, PCA) with bytes, error and accuracy in the titles."""
    rows = [("original (float32)", result["original"]),
            (_label(f"{result['bits']}-bit", result["kbit_bytes"], result["kbit_mse"], result["kbit_acc"]),
             result["kbit"]),
            (_label(f"PCA k={result['n_components']}", result["pca_bytes"], result["pca_mse"],
                    result["pca_acc"]), result["pca"])]
    return _draw_rows(rows, image_shape, "Input compression explorer (pixel value 0 = white, 1 = black)", fig)


def reconstruction_grid(x: Any, pca: PCA, bits_list=(1, 2, 3, 8), components_list=(2, 8, 32),
                        accuracy: Mapping | None = None, image_shape: tuple = (8, 8)):
    """Static figure: one row per setting (k-bit rows, then PCA rows), the samples side by side."""
    rows = [("original (float32)", B.to_numpy(x))]
    for bits in bits_list:
        r = explore(x, bits, components_list[0], pca, accuracy)
        rows.append((_label(f"{bits}-bit", r["kbit_bytes"], r["kbit_mse"], r["kbit_acc"]), r["kbit"]))
    for k in components_list:
        r = explore(x, bits_list[0], k, pca, accuracy)
        rows.append((_label(f"PCA k={k}", r["pca_bytes"], r["pca_mse"], r["pca_acc"]), r["pca"]))
    return _draw_rows(rows, image_shape, "k-bit quantization and PCA reconstructions of test digits")


class InputCompressionView(FigureView):
    """The explorer's figure, made once: original, k-bit and PCA rows of the samples ``x``.

    :meth:`update` computes :func:`explore` (a k-bit rounding and one PCA projection of a few
    samples: milliseconds; the accuracies are looked up) and replaces the rows' pixels and titles.

    See: chapters/02_3_data_compression.ipynb
    """

    def __init__(self, x: Any, pca: PCA, accuracy: Mapping | None = None, image_shape: tuple = (8, 8),
                 dpi: int = 72):
        self.x, self.pca, self.accuracy, self.image_shape = x, pca, accuracy, tuple(image_shape)
        n = x.shape[0]
        self.fig, axes = agg_figure((max(6.0, 0.9 * n), 0.95 * 3 + 0.4), dpi, nrows=3)
        strip = _strip(B.to_numpy(x), self.image_shape)
        self.axes, self.images = list(axes), []
        for ax in self.axes:
            self.images.append(ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest"))
            ax.set_title("original (float32)", loc="left", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        self.fig.suptitle("Input compression explorer (pixel value 0 = white, 1 = black)", fontsize=10)
        self.fig.tight_layout()

    def update(self, bits: int, n_components: int) -> dict:
        """Show ``bits``-bit inputs and the PCA reconstruction from ``n_components``; returns :func:`explore`'s dict."""
        r = explore(self.x, bits, n_components, self.pca, self.accuracy)
        rows = [(_label(f"{bits}-bit", r["kbit_bytes"], r["kbit_mse"], r["kbit_acc"]), r["kbit"]),
                (_label(f"PCA k={n_components}", r["pca_bytes"], r["pca_mse"], r["pca_acc"]), r["pca"])]
        for ax, image, (label, values) in zip(self.axes[1:], self.images[1:], rows):
            image.set_data(_strip(values, self.image_shape))
            ax.set_title(label, loc="left", fontsize=8)
        return r


def explorer(x: Any, pca: PCA, accuracy: Mapping | None = None, bits_options=range(1, 9),
             components_options=(1, 2, 4, 8, 16, 32, 64)) -> Any:
    """The ipywidgets explorer: sliders for bits and PCA components over an :class:`InputCompressionView`.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/02_3_data_compression.ipynb
    """
    import ipywidgets as widgets

    options = [k for k in components_options if k <= pca.n_components]
    bits = list(bits_options)
    view = InputCompressionView(x, pca, accuracy)
    controls = {"bits": widgets.SelectionSlider(options=bits, value=bits[min(1, len(bits) - 1)], description="bits"),
                "n_components": widgets.SelectionSlider(options=options, value=options[min(3, len(options) - 1)],
                                                        description="PCA k")}
    return image_explorer(view, controls)
