r"""Explorer for chapter 4.2: the batch-size trade-off.

A pure compute function (tested) plus a thin ipywidgets layer: :func:`batch_tradeoff` -- for a
batch size and lr: updates per epoch, mini-batch gradient noise, the SGD noise scale
:math:`\eta N / B`; :func:`batch_explorer` shows them.

See: chapters/04_2_batch_size.ipynb
"""
from __future__ import annotations

import math
from typing import Any

from ..validation import check_int, check_number
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["batch_tradeoff", "BatchTradeoffView", "batch_explorer"]


def batch_tradeoff(batch_size: int, lr: float, n_samples: int, trace_cov: float, grad_norm2: float,
                   epochs: int = 1) -> dict:
    r"""What one (batch size, learning rate) pair means for an epoch of SGD.

    With :math:`N` samples, per-sample gradient covariance trace :math:`\operatorname{tr}\Sigma`
    and full-batch gradient :math:`G`:

    * updates per epoch :math:`\lceil N/B \rceil`;
    * gradient noise :math:`E\|g_B - G\|^2 = \frac{\operatorname{tr}\Sigma}{B}\,\frac{N-B}{N-1}`
      (sampling without replacement);
    * signal-to-noise :math:`\|G\|^2 / E\|g_B - G\|^2`; the simple noise scale
      :math:`B_{simple} = \operatorname{tr}\Sigma / \|G\|^2` (McCandlish et al. 2018) is the batch
      where they are about equal;
    * the SGD noise scale :math:`g = \eta N / B` (Smith & Le 2018): keeping it fixed when B changes
      is the linear scaling rule.

    Returns
    -------
    dict with keys updates_per_epoch, total_updates, noise, snr, noise_scale, sgd_temperature.

    See: chapters/04_2_batch_size.ipynb
    """
    B_ = check_int("batch_size", batch_size)
    N = check_int("n_samples", n_samples)
    if B_ > N:
        raise ValueError(f"batch_size must be <= n_samples = {N}, got {B_}")
    lr = check_number("lr", lr, 0.0)
    trace_cov = check_number("trace_cov", trace_cov, 0.0)
    grad_norm2 = check_number("grad_norm2", grad_norm2, 0.0, low_open=True)
    epochs = check_int("epochs", epochs)
    noise = trace_cov / B_ * ((N - B_) / (N - 1) if N > 1 else 0.0)
    updates = math.ceil(N / B_)
    return {"updates_per_epoch": updates, "total_updates": updates * epochs, "noise": noise,
            "snr": grad_norm2 / noise if noise > 0 else math.inf, "noise_scale": trace_cov / grad_norm2,
            "sgd_temperature": lr * N / B_}


class BatchTradeoffView(FigureView):
    """The explorer's figure, made once: the noise law and the update count against B (fixed lines,
    precomputed), and a marker per panel that :meth:`update` moves (``set_data``) -- no
    computation beyond :func:`batch_tradeoff`'s arithmetic, so a redraw takes milliseconds.

    See: chapters/04_2_batch_size.ipynb
    """

    def __init__(self, n_samples: int, trace_cov: float, grad_norm2: float, epochs: int = 10,
                 figsize=(10, 3.4), dpi: int = 72):
        from matplotlib.ticker import FuncFormatter, NullFormatter

        self.args = (check_int("n_samples", n_samples, 1), trace_cov, grad_norm2, check_int("epochs", epochs))
        self.sizes = [2 ** k for k in range(0, int(math.log2(n_samples)) + 1)]
        curve = [batch_tradeoff(b, 1.0, *self.args[:3], epochs) for b in self.sizes]   # lr-free quantities
        self.fig, (self.ax_noise, self.ax_updates) = agg_figure(figsize, dpi, ncols=2)
        self.ax_noise.loglog(self.sizes, [max(c["noise"], 1e-300) for c in curve], label="gradient noise E‖g_B − G‖²")
        self.ax_noise.axhline(grad_norm2, color="gray", ls=":", label="signal ‖G‖²")
        (self.noise_marker,) = self.ax_noise.plot([], [], "ro", label="chosen B")
        self.ax_noise.set(xlabel="batch size B (samples)", ylabel="squared gradient norm")
        self.ax_noise.legend(fontsize=8)
        self.ax_updates.loglog(self.sizes, [c["total_updates"] for c in curve], label=f"updates in {epochs} epochs")
        (self.updates_marker,) = self.ax_updates.plot([], [], "ro")
        self.ax_updates.set(xlabel="batch size B (samples)", ylabel="parameter updates")
        self.ax_updates.legend(fontsize=8)
        plain = FuncFormatter(lambda v, _: f"{v:g}")     # plain tick labels: mathtext 10^k costs most of a redraw
        for ax in (self.ax_noise, self.ax_updates):
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(NullFormatter())
            ax.set_title("B")                            # room for the titles update() writes
        self.fig.tight_layout()
        # blitting: axes, curves and legends drawn once (cached); a redraw draws markers and titles
        self.animated = [self.noise_marker, self.updates_marker, self.ax_noise.title, self.ax_updates.title]

    def update(self, batch_size: int, lr: float) -> dict:
        """Move the markers to ``batch_size`` and retitle for ``lr``; returns :func:`batch_tradeoff`'s dict."""
        n, trace_cov, grad_norm2, epochs = self.args
        r = batch_tradeoff(batch_size, lr, n, trace_cov, grad_norm2, epochs)
        self.noise_marker.set_data([batch_size], [max(r["noise"], 1e-300)])
        self.updates_marker.set_data([batch_size], [r["total_updates"]])
        self.ax_noise.set_title(f"B = {batch_size}: signal-to-noise {r['snr']:.3g}")
        self.ax_updates.set_title(f"{r['total_updates']} updates, ηN/B = {r['sgd_temperature']:.3g}")
        return r


def batch_explorer(n_samples: int, trace_cov: float, grad_norm2: float, epochs: int = 10) -> Any:
    """An ipywidgets explorer of :func:`batch_tradeoff`: batch size and lr → updates and noise.

    The figure is a :class:`BatchTradeoffView`, made once; a slider only moves its markers.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/04_2_batch_size.ipynb
    """
    import ipywidgets as widgets

    class _Log2(BatchTradeoffView):
        def update(self, log2_batch: int, lr: float) -> dict:
            return super().update(2 ** log2_batch, lr)

    view = _Log2(n_samples, trace_cov, grad_norm2, epochs)
    controls = {"log2_batch": widgets.IntSlider(5, 0, len(view.sizes) - 1, 1, description="log2 B"),
                "lr": widgets.FloatLogSlider(0.1, base=10, min=-3, max=1, description="lr")}
    return image_explorer(view, controls)
