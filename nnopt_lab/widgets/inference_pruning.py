"""Experiments and explorer of pruning for inference: latency and bytes against sparsity and batch size.

* :func:`pruned_forms` -- one MLP pruned to a sparsity in the three forms of
  :func:`nnopt_lab.inference.sparse.three_ways`: unstructured (magnitude) pruning kept dense
  with zeros and kept as CSR, and structured pruning of hidden units physically removed --
  with the same number of weights left in every form;
* :func:`latency_grid` -- median forward latency of the three forms over a grid of sparsities
  and batch sizes, measured in interleaved rounds (a slow phase of a shared machine lands on
  every form alike), with each form's bytes and MACs;
* :func:`crossover` -- the lowest sparsity from which CSR stays faster than dense;
* :func:`explore` -- the pure look-up of one slider setting (tested);
* :func:`plot_grid` -- the static figure; :func:`explorer` -- the thin ipywidgets layer over
  one figure whose curves are redrawn with ``set_ydata`` (no measuring in the callback).

See: chapters/05_1_inference_pruning.ipynb
"""
from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

from .. import backend as B
from ..compression.pruning import ln_structured, prune, remove_pruned_units
from ..inference.sparse import three_ways
from ..measure import latency, model_bytes, summary
from ..models import mlp
from ..validation import check_int, check_probability, check_sequence
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["FORMS", "pruned_forms", "latency_grid", "crossover", "explore", "plot_grid", "explorer"]

#: The three forms of one pruned model, in the order they are plotted.
FORMS = ("dense with zeros", "CSR", "structured, removed")
_COLORS = {"dense with zeros": "tab:gray", "CSR": "tab:orange", "structured, removed": "tab:green"}


def pruned_forms(sizes: Sequence[int], sparsity: float, backend: Any = None, seed: int = 0) -> dict:
    r"""An MLP of ``sizes`` pruned to ``sparsity`` three ways (all in eval mode).

    * ``"dense with zeros"`` and ``"CSR"``: every Linear pruned by magnitude to ``sparsity``
      (:func:`~nnopt_lab.compression.pruning.prune`), stored dense (the zeros multiplied) and as
      CSR (:class:`~nnopt_lab.inference.sparse.SparseLinear`);
    * ``"structured, removed"``: ``round(s H)`` hidden units of the first layer pruned whole
      (:func:`~nnopt_lab.compression.pruning.ln_structured`) and cut out: the first layer loses
      rows, the second the matching columns, so a one-hidden-layer MLP keeps the same
      :math:`(1 - s)(D H + H O)` weights as the unstructured forms.

    Returns
    -------
    dict {form name: Sequential}
    """
    sparsity = check_probability("sparsity", sparsity, high_open=True)
    b = B.active() if backend is None else B.get_backend(backend)
    B.seed(seed)
    unstructured = mlp(tuple(sizes), backend=b)
    structured = mlp(tuple(sizes), backend=b)
    structured.load_state_dict(unstructured.state_dict())
    if sparsity > 0:
        prune(unstructured, sparsity)
        ln_structured(structured[0], sparsity, dim=0, bias=True)
    ways = three_ways(unstructured)
    return {"dense with zeros": ways.dense, "CSR": ways.csr, "structured, removed": remove_pruned_units(structured).eval()}


def latency_grid(sizes: Sequence[int], sparsities: Sequence[float], batches: Sequence[int] = (1, 64), *,
                 rounds: int = 3, repeats: int = 10, backend: Any = None, seed: int = 0, progress: bool = False) -> dict:
    """Median latency (seconds) of the three forms of :func:`pruned_forms` at each sparsity and batch size.

    Each round times every (sparsity, batch, form) once with :func:`nnopt_lab.measure.latency`
    (one warm-up call, ``repeats`` timed calls); the result is the median of the ``rounds *
    repeats`` samples. Bytes (each layer's own ``parameter_bytes``: CSR counts values, column
    indices and row pointers) and MACs per sample come from :func:`nnopt_lab.measure.summary`.

    Returns
    -------
    dict with lists ``sparsity``, ``batch``; ``latency[form][batch]`` (one value per sparsity),
    ``bytes[form]`` and ``macs[form]`` (per sparsity), and ``backend`` (its name).
    """
    sparsities = [check_probability(f"sparsities[{k}]", s, high_open=True)
                  for k, s in enumerate(check_sequence("sparsities", sparsities))]
    batches = [check_int(f"batches[{k}]", n, 1) for k, n in enumerate(check_sequence("batches", batches))]
    rounds, repeats = check_int("rounds", rounds, 1), check_int("repeats", repeats, 1)
    b = B.active() if backend is None else B.get_backend(backend)
    forms = [pruned_forms(sizes, s, b, seed) for s in sparsities]
    g = B.generator(seed)
    xs = {n: B.to_backend(g.standard_normal((n, sizes[0])), b) for n in batches}
    samples = {(f, n, i): [] for f in FORMS for n in batches for i in range(len(sparsities))}
    steps = range(rounds)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="latency rounds")
    for _ in steps:
        for i, models in enumerate(forms):
            for n in batches:
                for f in FORMS:
                    samples[f, n, i] += latency(models[f].forward, xs[n], warmup=1, repeats=repeats).samples
    shape = (sizes[0],)
    return {"sparsity": sparsities, "batch": batches, "backend": b.name, "sizes": tuple(sizes),
            "latency": {f: {n: [statistics.median(samples[f, n, i]) for i in range(len(sparsities))] for n in batches}
                        for f in FORMS},
            "bytes": {f: [model_bytes(m[f], dtype=None) for m in forms] for f in FORMS},
            "macs": {f: [summary(m[f], shape).total_macs for m in forms] for f in FORMS}}


def crossover(sparsities: Sequence[float], baseline: Sequence[float], candidate: Sequence[float]) -> float | None:
    """The lowest grid sparsity from which ``candidate`` is below ``baseline`` there and at every higher one.

    None when the candidate is not below the baseline at the highest sparsity.
    """
    sparsities = list(sparsities)
    if not (len(sparsities) == len(baseline) == len(candidate)):
        raise ValueError(f"sparsities, baseline and candidate must have one length, got {len(sparsities)}, "
                         f"{len(baseline)} and {len(candidate)}")
    found = None
    for s, base, cand in sorted(zip(sparsities, baseline, candidate), reverse=True):
        if cand < base:
            found = s
        else:
            break
    return found


def explore(grid: Mapping, sparsity_index: int, batch_index: int) -> dict:
    """The numbers behind one slider setting: each form's latency (s) and bytes, and the fastest form."""
    i = check_int("sparsity_index", sparsity_index, 0, len(grid["sparsity"]) - 1)
    n = grid["batch"][check_int("batch_index", batch_index, 0, len(grid["batch"]) - 1)]
    times = {f: grid["latency"][f][n][i] for f in FORMS}
    return {"sparsity": grid["sparsity"][i], "batch": n, "latency": times,
            "bytes": {f: grid["bytes"][f][i] for f in FORMS}, "fastest": min(times, key=times.get),
            "csr_speedup": times["dense with zeros"] / times["CSR"]}


def plot_grid(grid: Mapping, fig: Any = None) -> tuple:
    """Static figure: latency against sparsity, one panel per batch size, and bytes against sparsity.

    Returns (fig, axes).
    """
    import matplotlib.pyplot as plt

    fig = fig or plt.figure(figsize=(15, 4.2))
    axes = fig.subplots(1, len(grid["batch"]) + 1)
    x = [100 * s for s in grid["sparsity"]]
    for ax, n in zip(axes, grid["batch"]):
        for f in FORMS:
            ax.plot(x, [1e3 * t for t in grid["latency"][f][n]], "o-", color=_COLORS[f], label=f)
        ax.set(yscale="log", title=f"Latency at batch {n} ({grid['backend']})", xlabel="sparsity (% of weights zero)",
               ylabel="median forward time (ms)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for f in FORMS:
        ax.plot(x, [v / 1e3 for v in grid["bytes"][f]], "o-", color=_COLORS[f], label=f)
    ax.set(title="Storage (values + indices + row pointers)", xlabel="sparsity (% of weights zero)",
           ylabel="parameter bytes (kB)", yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, axes


class _Explorer(FigureView):
    """One figure made once. A batch size swaps the three curves' y data (``set_ydata``), a
    sparsity moves the cursor; the axes are rendered once into a background and :meth:`draw`
    draws only the moving artists over it (blitting). :meth:`frame` returns the PNG the widget shows."""

    def __init__(self, grid: Mapping):
        self.grid = grid
        self.fig, self.ax = agg_figure((8, 4.4), 72)
        self.canvas = self.fig.canvas
        self.x = [100 * s for s in grid["sparsity"]]
        every = [1e3 * t for f in FORMS for n in grid["batch"] for t in grid["latency"][f][n]]
        self.lines = {f: self.ax.plot(self.x, [every[0]] * len(self.x), "o-", color=_COLORS[f], label=f,
                                      animated=True)[0] for f in FORMS}
        self.cursor = self.ax.axvline(self.x[0], color="crimson", lw=1, animated=True)
        self.ax.set(yscale="log", ylim=(min(every) / 1.5, max(every) * 1.5), xlim=(min(self.x) - 0.5, max(self.x) + 0.5),
                    xlabel="sparsity (% of weights zero)", ylabel="median forward time (ms)")
        self.ax.grid(alpha=0.3, which="both")
        self.ax.legend(handles=list(self.lines.values()), fontsize=8, loc="upper right")
        self.text = self.fig.text(0.5, 0.985, "", ha="center", va="top", fontsize=9, animated=True)
        self.fig.subplots_adjust(top=0.86, bottom=0.12)
        self.canvas.draw()            # everything but the animated artists
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def update(self, sparsity_index: int, batch_index: int) -> dict:
        """Show one setting; returns :func:`explore`'s dict."""
        r = explore(self.grid, sparsity_index, batch_index)
        for f, line in self.lines.items():
            line.set_ydata([1e3 * t for t in self.grid["latency"][f][r["batch"]]])
        self.cursor.set_xdata([100 * r["sparsity"]] * 2)
        t = r["latency"]
        self.text.set_text(f"batch {r['batch']}, sparsity {100 * r['sparsity']:g} %: dense {1e3 * t['dense with zeros']:.3f} ms, "
                           f"CSR {1e3 * t['CSR']:.3f} ms, removed {1e3 * t['structured, removed']:.3f} ms\n"
                           f"fastest: {r['fastest']}; dense / CSR time ×{r['csr_speedup']:.2f}")
        return r

    def draw(self) -> None:
        """Restore the background and draw the moving artists over it (blitting)."""
        self.canvas.restore_region(self.background)
        for artist in (*self.lines.values(), self.cursor, self.text):
            self.fig.draw_artist(artist)


def explorer(grid: Mapping):
    """The ipywidgets explorer: a sparsity slider and a batch-size toggle over the precomputed grid.

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/05_1_inference_pruning.ipynb
    """
    import ipywidgets as widgets

    view = _Explorer(grid)
    sparsity = widgets.SelectionSlider(options=[(f"{100 * s:g} %", k) for k, s in enumerate(grid["sparsity"])],
                                       value=len(grid["sparsity"]) // 2, description="sparsity")
    batch = widgets.ToggleButtons(options=[(str(n), k) for k, n in enumerate(grid["batch"])], value=0,
                                  description="batch")
    return image_explorer(view, {"sparsity_index": sparsity, "batch_index": batch})
