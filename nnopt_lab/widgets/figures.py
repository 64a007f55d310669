"""Pieces the chapters' explorers share: one figure made once, redrawn in place, sent as a PNG.

Every explorer follows one pattern (DESIGN.md: a redraw in <= 200 ms, kernel side):

* a *view* -- :class:`FigureView` -- owns one matplotlib figure on its own Agg canvas, made once
  and kept out of pyplot (so the inline backend neither shows it twice nor re-lays it out with
  ``bbox_inches="tight"``); its ``update(**setting)`` only changes artists (``set_data``,
  ``set_ydata``, ``set_height``, an image's ``set_data``, texts), its :meth:`~FigureView.draw`
  renders, and :meth:`~FigureView.frame` returns the PNG bytes;
* :func:`image_explorer` -- the thin ipywidgets layer: the controls and one ``widgets.Image``
  whose value is the view's frame after each change;
* :func:`redraw_times` -- the timing every chapter and ``tests/test_explorer_timing.py`` use:
  update + draw, and update + draw + PNG, median over the settings after a warm-up.

See: chapters/03_3_model_trimming.ipynb
"""
from __future__ import annotations

import io
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

from ..validation import check_int, check_sequence

__all__ = ["canvas_png", "agg_figure", "FigureView", "image_explorer", "redraw_times"]

#: The description width of every explorer control: the whole label ("momentum/β1", "σ (Gaussian)").
LABEL_STYLE = {"description_width": "initial"}


def canvas_png(canvas: Any) -> bytes:
    """The figure on an Agg ``canvas`` as drawn now, as PNG bytes (fast, level-1 compression).

    What an explorer sends to the browser after a redraw; its cost is part of the redraw budget.

    See: chapters/03_3_model_trimming.ipynb
    """
    from PIL import Image

    width, height = canvas.get_width_height()
    out = io.BytesIO()
    Image.frombuffer("RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1).save(
        out, format="png", compress_level=1)
    return out.getvalue()


def agg_figure(figsize: tuple = (8.0, 4.0), dpi: int = 72, **subplots: Any) -> tuple:
    """A figure on its own Agg canvas, outside pyplot, and its axes (``fig.subplots(**subplots)``).

    Parameters
    ----------
    figsize : (width, height) in inches
    dpi : int >= 1
        72 keeps the PNG small (a 10-inch figure is 720 pixels wide) and the redraw fast.
    **subplots
        Passed to :meth:`matplotlib.figure.Figure.subplots` (``nrows``, ``ncols``,
        ``gridspec_kw``, ...); none: one axis.

    Returns
    -------
    (fig, axes) -- ``axes`` as ``Figure.subplots`` returns it.

    See: chapters/03_3_model_trimming.ipynb
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=tuple(figsize), dpi=check_int("dpi", dpi, 1))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


class FigureView:
    """Base of the explorers' views: ``self.fig`` on an Agg canvas (:func:`agg_figure`), made once.

    A subclass makes its artists in ``__init__`` and changes them in ``update(**setting)``;
    :meth:`draw` renders the figure and :meth:`frame` returns the PNG a ``widgets.Image``
    shows. In a notebook ``display(view)`` shows the current frame.

    Blitting: a subclass that lists the artists a setting changes in ``animated`` gets them
    drawn over a cached picture of everything else (the axes, ticks and fixed curves: most of
    a redraw's cost). One picture is kept per :meth:`background_key` -- a subclass returns
    what the fixed part depends on (e.g. the method whose curves are shown).

    See: chapters/03_3_model_trimming.ipynb
    """

    fig: Any = None
    #: the artists drawn over the cached background on each redraw (empty: no blitting)
    animated: Sequence[Any] = ()

    def background_key(self) -> Any:
        """What the non-animated part of the figure depends on now (one cached picture per value)."""
        return None

    def draw(self) -> None:
        """Render the figure as it is now on its canvas (blitting the ``animated`` artists, if any)."""
        canvas = self.fig.canvas
        if not self.animated:
            canvas.draw()
            return
        cache = self.__dict__.setdefault("_backgrounds", {})
        key = self.background_key()
        if key in cache:
            canvas.restore_region(cache[key])
        else:
            for artist in self.animated:
                artist.set_animated(True)
            canvas.draw()                                  # everything but the animated artists
            cache[key] = canvas.copy_from_bbox(self.fig.bbox)
        for artist in self.animated:
            self.fig.draw_artist(artist)

    def frame(self) -> bytes:
        """Draw, and return the figure as PNG bytes (what the widget sends)."""
        self.draw()
        return canvas_png(self.fig.canvas)

    def _repr_png_(self) -> bytes:
        return self.frame()


def image_explorer(view: Any, controls: Mapping[str, Any], rows: Sequence[Sequence[str]] | None = None,
                   on_change: Callable[[str], None] | None = None) -> Any:
    """The thin ipywidgets layer of an explorer: ``controls`` above one ``widgets.Image``.

    Parameters
    ----------
    view : a :class:`FigureView` (``update(**setting)`` and ``frame()``)
    controls : mapping keyword -> ipywidgets control
        Each change calls ``view.update(**{keyword: control.value, ...})`` and puts
        ``view.frame()`` into the image. Every control gets ``description_width: initial``
        (its whole label shows).
    rows : sequence of sequences of keywords, optional
        How the controls are laid out (one ``HBox`` per row); default one row.
    on_change : callable(keyword), optional
        Called before the update with the keyword of the control that changed (e.g. to change
        another control's options); a change it makes triggers no second redraw.

    Returns
    -------
    ipywidgets.VBox with the attributes ``view``, ``image``, ``controls`` and ``redraw``.

    See: chapters/03_3_model_trimming.ipynb
    """
    import ipywidgets as widgets

    controls = dict(controls)
    rows = [list(r) for r in check_sequence("rows", rows)] if rows is not None else [list(controls)]
    missing = sorted(set(controls) - {k for r in rows for k in r})
    if missing:
        raise ValueError(f"rows must place every control, missing {missing}")
    for control in controls.values():
        if hasattr(control, "style") and hasattr(control.style, "description_width"):
            control.style.description_width = LABEL_STYLE["description_width"]
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))   # narrow pages: scaled down
    busy: list = []

    def redraw(change: Any = None) -> None:
        if busy:
            return
        busy.append(True)
        try:
            if on_change is not None and change is not None:
                on_change(next((k for k, c in controls.items() if c is change.get("owner")), ""))
        finally:
            busy.clear()
        view.update(**{name: control.value for name, control in controls.items()})
        image.value = view.frame()

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([controls[k] for k in r]) for r in rows] + [image])
    box.view, box.image, box.controls, box.redraw = view, image, controls, redraw
    return box


def redraw_times(view: Any, settings: Sequence[Mapping[str, Any]], repeats: int = 10, warmup: int = 1) -> dict:
    """Kernel-side cost of an explorer's redraw: ``update`` + ``draw``, and with the PNG encoded.

    Parameters
    ----------
    view : a :class:`FigureView`
    settings : non-empty sequence of keyword dicts for ``view.update``, cycled through
    repeats : int >= 1
        Timed redraws (after ``warmup`` untimed ones).

    Returns
    -------
    dict with ``draw_ms`` and ``frame_ms`` (medians, milliseconds) and the lists ``draw`` and
    ``frame`` (seconds, one per timed redraw). Wall-clock time (``time.perf_counter``).

    See: chapters/03_3_model_trimming.ipynb
    """
    settings = check_sequence("settings", settings)
    if not settings:
        raise ValueError("settings must hold at least one setting")
    repeats, warmup = check_int("repeats", repeats, 1), check_int("warmup", warmup, 0)
    draw, frame = [], []
    for k in range(warmup + repeats):
        t0 = time.perf_counter()
        view.update(**settings[k % len(settings)])
        view.draw()
        t1 = time.perf_counter()
        canvas_png(view.fig.canvas)
        t2 = time.perf_counter()
        if k >= warmup:
            draw.append(t1 - t0)
            frame.append(t2 - t0)
    return {"draw_ms": 1e3 * statistics.median(draw), "frame_ms": 1e3 * statistics.median(frame),
            "draw": draw, "frame": frame}
