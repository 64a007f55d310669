r"""Explorer of chapter 6 (putting it together): pick a budget in bytes or in latency and see the
best pipeline found for it, on the Pareto plots of accuracy against bytes and against latency.

Everything here is pure look-up over **precomputed records**, one per pipeline run (the final
row of its :class:`nnopt_lab.pipeline.Report`); nothing trains or measures in a callback.

* :func:`record_from_report` -- one record ``{"name", "accuracy", "bytes", "latency_ms",
  "path"}`` from a pipeline report (its final row, and every row as the path);
* :func:`pareto_front` -- the indices of the non-dominated points (less cost, more accuracy);
* :func:`best_for_budget` -- the most accurate record whose bytes (or latency) fit a budget;
* :func:`explorer_data` -- the pure compute function (tested): the records, both fronts, a grid
  of budgets for each kind and the best record at every grid point;
* :class:`BudgetView` -- one figure made once (two Pareto panels); :meth:`BudgetView.update`
  only moves a budget line and a marker and rewrites the title;
* :func:`explorer` -- the thin ipywidgets layer (a bytes/latency toggle and a budget slider).

See: chapters/06_capstone.ipynb (seed §1.2, §2, §3)
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..validation import check_choice, check_int, check_number, check_sequence
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["KINDS", "record_from_report", "pareto_front", "best_for_budget", "explorer_data", "BudgetView",
           "explorer"]

#: The two budgets a learner can set: the record key each one reads, and its unit.
KINDS = {"bytes": ("bytes", "bytes as stored"), "latency": ("latency_ms", "ms per sample at batch 1")}


def _row_value(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, Mapping) else getattr(row, key)


def record_from_report(name: str, report: Any, latency_key: str = "latency_b1_ms") -> dict:
    """One explorer record from a pipeline report: its final row, and all its rows as the path.

    Parameters
    ----------
    name : str
        What the explorer calls this pipeline (e.g. ``"prune 90 % → int8"``).
    report : nnopt_lab.pipeline.Report, or a sequence of rows
        Anything with ``rows`` (or a sequence itself) whose rows have ``step``, ``accuracy``
        (fraction), ``bytes`` and ``latency_key`` (attributes or mapping keys).
    latency_key : str
        The latency field to read (``"latency_b1_ms"`` or ``"latency_b64_ms"``).

    Returns
    -------
    dict with ``name``, ``accuracy``, ``bytes``, ``latency_ms`` (the final row) and ``path``:
    a list of ``{"step", "accuracy", "bytes", "latency_ms"}`` for every row, baseline first.

    See: chapters/06_capstone.ipynb
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    rows = getattr(report, "rows", report)
    rows = list(check_sequence("report.rows", rows))
    if not rows:
        raise ValueError("report must hold at least one row (the baseline)")
    path = []
    for i, row in enumerate(rows):
        try:
            point = {"step": str(_row_value(row, "step")), "accuracy": _row_value(row, "accuracy"),
                     "bytes": _row_value(row, "bytes"), "latency_ms": _row_value(row, latency_key)}
        except (KeyError, AttributeError) as err:
            raise ValueError(f"report.rows[{i}] lacks a field the explorer reads: {err}") from None
        path.append(_checked_point(f"report.rows[{i}]", point))
    return {"name": name, **{k: path[-1][k] for k in ("accuracy", "bytes", "latency_ms")}, "path": path}


def _checked_point(where: str, point: Mapping) -> dict:
    out = dict(point)
    out["accuracy"] = check_number(f"{where}['accuracy']", point["accuracy"], 0.0, 1.0)
    out["bytes"] = check_int(f"{where}['bytes']", point["bytes"], 1)
    latency = point.get("latency_ms")
    out["latency_ms"] = None if latency is None else check_number(f"{where}['latency_ms']", latency, 0.0,
                                                                  low_open=True)
    return out


def _records(records: Any) -> list[dict]:
    items = list(check_sequence("records", records))
    if not items:
        raise ValueError("records must hold at least one pipeline record")
    out = []
    for i, r in enumerate(items):
        if not isinstance(r, Mapping):
            raise TypeError(f"records[{i}] must be a dict (see record_from_report), got {type(r).__name__}")
        missing = [k for k in ("name", "accuracy", "bytes") if k not in r]
        if missing:
            raise ValueError(f"records[{i}] lacks {missing} (a record has name, accuracy, bytes, latency_ms)")
        rec = _checked_point(f"records[{i}]", {**r, "latency_ms": r.get("latency_ms")})
        rec["name"] = str(r["name"])
        out.append(rec)
    return out


def _costs(records: list[dict], kind: str) -> list[float]:
    key = KINDS[check_choice("kind", kind, tuple(KINDS))][0]
    costs = [r[key] for r in records]
    if any(c is None for c in costs):
        raise ValueError(f"every record needs a '{key}' for kind={kind!r}; "
                         f"{[r['name'] for r in records if r[key] is None]} have none")
    return [float(c) for c in costs]


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    r"""Indices of the Pareto-optimal points, by increasing cost.

    Point :math:`i` is dominated when another point :math:`j` has :math:`c_j \le c_i` and
    :math:`a_j \ge a_i` with one of the two strict; the front is every point not dominated.
    Of exact duplicates the first index is kept.

    Parameters
    ----------
    costs : (N,) floats (bytes or latency: less is better)
    accuracies : (N,) floats (more is better)

    Returns
    -------
    list of int: the front, sorted by increasing cost (so its accuracy increases too).

    See: chapters/06_capstone.ipynb
    """
    costs = [check_number(f"costs[{i}]", c) for i, c in enumerate(check_sequence("costs", costs))]
    accs = [check_number(f"accuracies[{i}]", a) for i, a in enumerate(check_sequence("accuracies", accuracies))]
    if len(costs) != len(accs):
        raise ValueError(f"costs and accuracies must have the same length, got {len(costs)} and {len(accs)}")
    front, best = [], -math.inf
    for i in sorted(range(len(costs)), key=lambda i: (costs[i], -accs[i], i)):
        if accs[i] > best:            # cheaper points came first: only strictly more accurate survives
            front.append(i)
            best = accs[i]
    return front


def best_for_budget(records: Sequence[Mapping], budget: float, kind: str = "bytes") -> int | None:
    """Index of the most accurate record whose cost fits ``budget``; None when none fits.

    Ties in accuracy go to the cheaper record, then to the first one.

    Parameters
    ----------
    records : sequence of dicts with ``name``, ``accuracy``, ``bytes`` and ``latency_ms``
    budget : float > 0, in bytes (``kind="bytes"``) or ms per sample at batch 1 (``"latency"``)
    kind : {"bytes", "latency"}

    See: chapters/06_capstone.ipynb
    """
    recs = _records(records)
    budget = check_number("budget", budget, 0.0, low_open=True)
    costs = _costs(recs, kind)
    fits = [i for i, c in enumerate(costs) if c <= budget]
    if not fits:
        return None
    return min(fits, key=lambda i: (-recs[i]["accuracy"], costs[i], i))


def _budget_grid(costs: list[float], budgets: Any, kind: str) -> list[float]:
    if budgets is None:
        return sorted(set(costs))                  # every step of the slider changes what fits
    grid = [check_number(f"budgets_{kind}[{i}]", b, 0.0, low_open=True)
            for i, b in enumerate(check_sequence(f"budgets_{kind}", budgets))]
    if not grid or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"budgets_{kind} must be a non-empty increasing sequence, got {grid}")
    return grid


def explorer_data(records: Sequence[Mapping], budgets_bytes: Any = None, budgets_latency: Any = None,
                  baseline: int = 0) -> dict:
    """Everything the explorer shows, computed once.

    Parameters
    ----------
    records : sequence of dicts (see :func:`record_from_report`); ``path`` entries are drawn
        as the route each pipeline took, when present
    budgets_bytes, budgets_latency : increasing floats, optional
        The slider's budgets; default: every distinct cost of the records (each step of the
        slider then changes the set that fits).
    baseline : int
        Index of the uncompressed baseline among ``records`` (compression ratios are to it).

    Returns
    -------
    dict with ``records`` (checked copies), ``baseline``, and for each kind in :data:`KINDS`
    an entry ``{"costs", "front", "budgets", "best"}``: ``best[j]`` is
    :func:`best_for_budget` at ``budgets[j]`` (None where nothing fits). The ``"latency"`` entry
    is left out when a record has no latency (ValueError if ``budgets_latency`` was given).

    See: chapters/06_capstone.ipynb
    """
    recs = _records(records)
    baseline = check_int("baseline", baseline, 0, len(recs) - 1)
    data: dict = {"records": recs, "baseline": baseline}
    accs = [r["accuracy"] for r in recs]
    for kind, budgets in (("bytes", budgets_bytes), ("latency", budgets_latency)):
        if kind == "latency" and any(r["latency_ms"] is None for r in recs):
            if budgets is not None:
                raise ValueError(f"budgets_latency was given but records "
                                 f"{[r['name'] for r in recs if r['latency_ms'] is None]} have no latency_ms "
                                 f"(run their pipelines with latency=True)")
            continue                                # no latency measured: only the bytes budget
        costs = _costs(recs, kind)
        grid = _budget_grid(costs, budgets, kind)
        best = []
        for b in grid:
            fits = [i for i, c in enumerate(costs) if c <= b]
            best.append(min(fits, key=lambda i: (-accs[i], costs[i], i)) if fits else None)
        data[kind] = {"costs": costs, "front": pareto_front(costs, accs), "budgets": grid, "best": best}
    return data


def _size_text(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


class BudgetView(FigureView):
    """Two Pareto panels (accuracy against bytes, against latency) on one Agg figure, made once.

    Static: every record (grey), each Pareto front (a step line), the routes of the records
    listed in ``paths`` (their ``path``: one point per step). :meth:`update` only moves the
    budget line, the ring around the best record on both panels and the title; :meth:`draw`
    renders the static part once and then blits only those moving artists over it.

    See: chapters/06_capstone.ipynb
    """

    def __init__(self, data: dict, figsize=(11, 3.8), dpi: int = 72, paths: Sequence[int] = ()):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        self.data = data
        recs = data["records"]
        self.kinds = [k for k in KINDS if k in data]
        self.fig, axes = agg_figure(figsize, dpi, ncols=len(self.kinds), squeeze=False)
        self.axes = dict(zip(self.kinds, axes[0]))
        plain = FuncFormatter(lambda v, _: f"{v:g}")     # plain tick labels: mathtext 10^k costs most of a redraw
        accs = [100 * r["accuracy"] for r in recs]
        self.lines, self.rings = {}, {}
        for kind, ax in self.axes.items():
            d = data[kind]
            scale = 1024.0 if kind == "bytes" else 1.0
            xs = [c / scale for c in d["costs"]]
            ax.plot(xs, accs, "o", color="0.6", ms=5, label="pipelines run")
            front = d["front"]
            ax.step([xs[i] for i in front], [accs[i] for i in front], "-", where="post", color="C0", lw=1.5,
                    label="Pareto front")
            for j, k in enumerate(paths):
                path = recs[k].get("path") or []
                key = KINDS[kind][0]
                if path and all(p.get(key) is not None for p in path):
                    ax.plot([p[key] / scale for p in path], [100 * p["accuracy"] for p in path], ".--",
                            color=f"C{j + 1}", lw=1, label=f"route: {recs[k]['name']}")
            b = recs[data["baseline"]]
            ax.plot([xs[data["baseline"]]], [accs[data["baseline"]]], "s", color="k", ms=6, label="baseline" if b["name"] == "baseline" else f"baseline ({b['name']})")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(xlabel="stored size (KiB, log scale)" if kind == "bytes" else "latency, batch 1 (ms, log scale)",
                   ylabel="test accuracy (%)",
                   title="Accuracy against bytes" if kind == "bytes" else "Accuracy against latency")
            lo = min(accs)
            ax.set_ylim(max(0.0, lo - 0.1 * (max(accs) - lo) - 1), min(100.0, max(accs) + 1))
            ax.grid(alpha=0.3)
            self.lines[kind] = ax.axvline(xs[0], color="crimson", lw=1, ls="--", animated=True)
            (self.rings[kind],) = ax.plot([], [], "o", color="crimson", ms=12, mfc="none", mew=2, animated=True)
        self.axes[self.kinds[0]].legend(fontsize=7, loc="lower right")
        self.title = self.fig.suptitle("", fontsize=10, animated=True)
        self.fig.tight_layout(rect=(0, 0, 1, 0.92))
        self._background = None
        self.update(self.kinds[0], len(data[self.kinds[0]]["budgets"]) - 1)

    def update(self, kind: str = "bytes", index: int = 0) -> dict:
        """Show budget ``index`` of ``kind``; returns ``{"budget", "best"}`` (best: index or None)."""
        kind = check_choice("kind", kind, tuple(self.kinds))
        d = self.data[kind]
        index = check_int("index", index, 0, len(d["budgets"]) - 1)
        budget, best = d["budgets"][index], d["best"][index]
        scale = 1024.0 if kind == "bytes" else 1.0
        for k, line in self.lines.items():
            line.set_visible(k == kind)
        self.lines[kind].set_xdata([budget / scale] * 2)
        recs = self.data["records"]
        unit = _size_text(budget) if kind == "bytes" else f"{budget:.3g} ms"
        if best is None:
            for ring in self.rings.values():
                ring.set_data([], [])
            self.title.set_text(f"budget ≤ {unit}: no pipeline fits")
        else:
            r = recs[best]
            for k, ring in self.rings.items():
                c = self.data[k]["costs"][best] / (1024.0 if k == "bytes" else 1.0)
                ring.set_data([c], [100 * r["accuracy"]])
            base = recs[self.data["baseline"]]
            latency = "" if r["latency_ms"] is None else f", {r['latency_ms']:.3g} ms"
            self.title.set_text(f"budget ≤ {unit}: best is '{r['name']}' — {100 * r['accuracy']:.1f} % "
                                f"(baseline {100 * base['accuracy']:.1f} %), {_size_text(r['bytes'])} "
                                f"({base['bytes'] / r['bytes']:.1f}x smaller){latency}")
        return {"budget": budget, "best": best}

    def draw(self) -> None:
        """Blit: the static panels are rendered once; each call restores them and draws the moving artists."""
        canvas = self.fig.canvas
        if self._background is None:
            canvas.draw()                                   # everything but the animated artists
            self._background = canvas.copy_from_bbox(self.fig.bbox)
        canvas.restore_region(self._background)
        for artist in [*self.lines.values(), *self.rings.values(), self.title]:
            if artist.get_visible():
                self.fig.draw_artist(artist)


def explorer(data: dict, paths: Sequence[int] = ()) -> Any:
    """The thin ipywidgets layer over :func:`explorer_data`: a budget kind toggle and a budget slider.

    Switching the kind (bytes / latency) swaps the slider's budgets and starts it at the
    largest (everything fits: the most accurate record wins).

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/06_capstone.ipynb
    """
    import ipywidgets as widgets

    view = BudgetView(data, paths=paths)
    kinds = [k for k in KINDS if k in data]

    def options(k):
        return [(f"{b:,.0f} B" if k == "bytes" else f"{b:.4g} ms", j) for j, b in enumerate(data[k]["budgets"])]

    kind = widgets.ToggleButtons(options=kinds, value=kinds[0], description="budget in")
    slider = widgets.SelectionSlider(options=options(kinds[0]), value=len(data[kinds[0]]["budgets"]) - 1,
                                     description="budget ≤", continuous_update=True,
                                     layout=widgets.Layout(width="60%"))

    def switch(changed: str) -> None:
        if changed == "kind":
            slider.options = options(kind.value)
            slider.value = len(data[kind.value]["budgets"]) - 1

    return image_explorer(view, {"kind": kind, "index": slider}, on_change=switch)
