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

__all__ = ["batch_tradeoff", "batch_explorer"]


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


def batch_explorer(n_samples: int, trace_cov: float, grad_norm2: float, epochs: int = 10) -> Any:
    """An ipywidgets explorer of :func:`batch_tradeoff`: batch size and lr → updates and noise.

    See: chapters/04_2_batch_size.ipynb
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    sizes = [2 ** k for k in range(0, int(math.log2(n_samples)) + 1)]

    def draw(log2_batch=5, lr=0.1):
        b = 2 ** log2_batch
        r = batch_tradeoff(b, lr, n_samples, trace_cov, grad_norm2, epochs)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        curve = [batch_tradeoff(s, lr, n_samples, trace_cov, grad_norm2, epochs) for s in sizes]
        axes[0].loglog(sizes, [c["noise"] for c in curve], label="gradient noise E‖g_B − G‖²")
        axes[0].axhline(grad_norm2, color="gray", ls=":", label="signal ‖G‖²")
        axes[0].plot([b], [max(r["noise"], 1e-12)], "ro")
        axes[0].set(xlabel="batch size B", ylabel="squared norm", title=f"B = {b}: SNR {r['snr']:.3g}")
        axes[0].legend(fontsize=8)
        axes[1].loglog(sizes, [c["total_updates"] for c in curve], label=f"updates in {epochs} epochs")
        axes[1].plot([b], [r["total_updates"]], "ro")
        axes[1].set(xlabel="batch size B", ylabel="parameter updates",
                    title=f"{r['total_updates']} updates, ηN/B = {r['sgd_temperature']:.3g}")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        plt.show()
    return widgets.interactive(
        draw, log2_batch=widgets.IntSlider(5, 0, len(sizes) - 1, 1, description="log2 B"),
        lr=widgets.FloatLogSlider(0.1, base=10, min=-3, max=1, description="lr"))
