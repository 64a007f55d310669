r"""Explorer of chapter 5.2 (knowledge distillation, 知识蒸馏): a temperature slider over a
teacher's softened outputs.

* :func:`explorer_data` -- the pure compute function (tested): for a few real samples and a grid
  of temperatures, the softened distributions :math:`\mathrm{softmax}(t/T)` and their entropies,
  computed with :func:`nnopt_lab.inference.distillation.softmax_temperature`;
* :class:`SoftTargetView` -- one figure made once (grouped bars per sample, the entropy curves);
  :meth:`SoftTargetView.update` only changes bar heights and a marker;
* :func:`explorer` -- the thin ipywidgets layer (a temperature slider).

See: chapters/05_2_distillation.ipynb (seed §2.4.2, §3.4.2)
"""
from __future__ import annotations

import math
from typing import Any

from .. import backend as B
from ..inference.distillation import softmax_temperature
from ..validation import check_array, check_number, check_sequence
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["explorer_data", "SoftTargetView", "explorer"]


def _grid(temperatures: Any) -> list[float]:
    grid = [check_number(f"temperatures[{i}]", t, 0.0, low_open=True)
            for i, t in enumerate(check_sequence("temperatures", temperatures))]
    if not grid:
        raise ValueError("temperatures must hold at least one temperature")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"temperatures must increase, got {grid}")
    return grid


def explorer_data(teacher_logits: Any, temperatures: Any, labels: Any = None) -> dict:
    r"""Softened teacher distributions for every temperature of a grid.

    Parameters
    ----------
    teacher_logits : (M, K) float
        The teacher's logits for M samples (a few: each gets a bar chart).
    temperatures : increasing sequence of floats > 0
    labels : (M,) int, optional
        The true classes, shown in the titles.

    Returns
    -------
    dict with ``temperatures`` (list), ``probs`` -- numpy (len(temperatures), M, K) of
    :math:`\mathrm{softmax}(t/T)` --, ``entropy`` -- numpy (len(temperatures), M), in bits,
    :math:`H = -\sum_k p_k \log_2 p_k` --, ``labels`` (list or None) and ``classes`` K.

    See: chapters/05_2_distillation.ipynb
    """
    check_array("teacher_logits", teacher_logits, ndim=2)
    grid = _grid(temperatures)
    m, k = tuple(teacher_logits.shape)
    if m == 0 or k == 0:
        raise ValueError(f"teacher_logits must hold at least one sample and one class, got shape {(m, k)}")
    xp = B.namespace(teacher_logits)
    probs = xp.stack([softmax_temperature(teacher_logits, t) for t in grid])          # (G, M, K)
    safe = xp.where(probs > 0, probs, xp.ones_like(probs))                            # 0 log 0 = 0
    entropy = -xp.sum(probs * xp.log(safe), axis=-1) / math.log(2.0)                  # (G, M) bits
    shown = None if labels is None else [int(v) for v in B.to_numpy(labels).tolist()]
    if shown is not None and len(shown) != m:
        raise ValueError(f"labels must have one class per row of teacher_logits ({m}), got {len(shown)}")
    return {"temperatures": grid, "probs": B.to_numpy(probs).astype("float64"),
            "entropy": B.to_numpy(entropy).astype("float64"), "labels": shown,
            "classes": k}


class SoftTargetView(FigureView):
    """Grouped bars of the softened distribution of each sample, and the entropy against T; made once.

    Two axes only (tick labels are most of a redraw's cost): :meth:`update` changes bar heights,
    a marker and a title.

    See: chapters/05_2_distillation.ipynb
    """

    def __init__(self, data: dict, figsize=(11, 3.3), dpi: int = 72):
        self.data = data
        m, k = data["probs"].shape[1:]
        self.fig, (self.ax_bars, ax) = agg_figure(figsize, dpi, ncols=2, gridspec_kw={"width_ratios": [2, 1]})
        width = 0.8 / m
        self.bars = []
        for j in range(m):
            label = f"sample {j}" + ("" if data["labels"] is None else f" (true class {data['labels'][j]})")
            xs = [c + (j - (m - 1) / 2) * width for c in range(k)]
            self.bars.append(self.ax_bars.bar(xs, data["probs"][0, j], width, color=f"C{j}", label=label))
        self.ax_bars.set(xlabel="class", ylabel="probability softmax(t / T)", ylim=(0, 1.02), xticks=range(k))
        self.ax_bars.legend(fontsize=8, loc="upper right")
        self.bar_title = self.ax_bars.set_title("")
        for j in range(m):
            ax.plot(data["temperatures"], data["entropy"][:, j], "o-", ms=3, color=f"C{j}", label=f"sample {j}")
        ax.axhline(math.log2(k), color="gray", ls="--", lw=1)
        ax.text(data["temperatures"][0], math.log2(k), f"uniform: log2 {k} bits", va="bottom", fontsize=8)
        (self.marker,) = ax.plot([data["temperatures"][0]] * m, data["entropy"][0], "o", color="k", ms=9,
                                 mfc="none", mew=2)
        ax.set(title="Entropy of the soft targets", xlabel="temperature T (log scale)", ylabel="entropy (bits)",
               xscale="log")
        ax.set_ylim(0, 1.15 * math.log2(k))
        ax.minorticks_off()               # fewer tick labels to draw: the redraw stays fast (colours: as left)
        self.fig.tight_layout()
        # blitting: the axes, the entropy curves and the legend are drawn once (cached); a redraw
        # draws the bars, the marker and the title over them
        self.animated = [bar for bars in self.bars for bar in bars] + [self.marker, self.bar_title]
        self.update(0)

    def update(self, index: int) -> None:
        """Show grid point ``index`` (only bar heights, the marker and a title change)."""
        t = self.data["temperatures"][index]
        for bars, row in zip(self.bars, self.data["probs"][index]):
            for bar, p in zip(bars, row.tolist()):
                bar.set_height(p)
        self.marker.set_data([t] * len(self.bars), self.data["entropy"][index])
        self.bar_title.set_text(f"The teacher's soft targets at T = {t:g}")


def explorer(data: dict) -> Any:
    """The thin ipywidgets layer over :func:`explorer_data`: one temperature slider.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/05_2_distillation.ipynb
    """
    import ipywidgets as widgets

    view = SoftTargetView(data)
    labels = [(f"{t:g}", i) for i, t in enumerate(data["temperatures"])]
    return image_explorer(view, {"index": widgets.SelectionSlider(options=labels, value=0, description="T",
                                                                  continuous_update=True)})
