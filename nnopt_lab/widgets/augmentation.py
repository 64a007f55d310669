"""Explorer of chapter 2.2: an augmentation preview grid (pick transforms, probability, seed).

:func:`augmentation_grid` is the pure compute function (tested); :class:`AugmentationView` draws
the grid as ONE image (a mosaic of the originals and their draws, made once: a setting replaces
its pixels, so a redraw costs one axis, not one per picture); :func:`explorer` is the thin
ipywidgets layer.

See: chapters/02_2_data_augmentation.ipynb (seed §3.1.2: flip, rotate, crop)
"""
from __future__ import annotations

from typing import Any, Sequence

from .. import backend as B
from ..preprocessing import augmentation as A
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["TRANSFORMS", "build_pipeline", "augmentation_grid", "mosaic", "AugmentationView", "explorer"]

#: name -> factory(p, image size) of a transform
TRANSFORMS = {
    "horizontal flip": lambda p, s: A.HorizontalFlip(p),
    "vertical flip": lambda p, s: A.VerticalFlip(p),
    "rotate by k·90°": lambda p, s: A.RandomRotate90(p=p),
    "rotate ±15°": lambda p, s: A.RandomRotation(15.0, p=p),
    "shift ±1 px (pad + random crop)": lambda p, s: A.RandomCrop(s, padding=1, p=p),
    "resized crop (60–100 % area)": lambda p, s: A.RandomResizedCrop(s, scale=(0.6, 1.0), p=p),
}


def build_pipeline(names: Sequence[str], p: float, image_size: tuple[int, int]) -> A.Compose:
    """A :class:`~nnopt_lab.preprocessing.augmentation.Compose` of the named transforms, in order.

    Parameters
    ----------
    names : sequence of keys of :data:`TRANSFORMS`
    p : float in [0, 1]
        Probability of each transform.
    image_size : (H, W)
    """
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}")
    return A.Compose([TRANSFORMS[n](p, tuple(image_size)) for n in names])


def augmentation_grid(images: Any, names: Sequence[str], p: float = 1.0, seed: int = 0, copies: int = 4) -> Any:
    """The images and ``copies`` augmented draws of each.

    Parameters
    ----------
    images : array, shape (N, C, H, W)
    names : sequence of keys of :data:`TRANSFORMS`
    p : float in [0, 1]
    seed : int
        Seed of a separate generator, so the grid repeats for one seed (and the project's
        generator is not disturbed).
    copies : int >= 1

    Returns
    -------
    array, shape (copies + 1, N, C, H, W): row 0 holds the originals.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be an int >= 1, got {copies!r}")
    images = A._check_images(images, 4)
    pipeline = build_pipeline(names, p, tuple(images.shape[-2:]))
    g = B.generator(seed)
    rows = [images] + [pipeline(images, g) for _ in range(copies)]
    return B.namespace(images).stack(rows, axis=0)


def mosaic(grid: Any, gap: int = 1) -> Any:
    """The (rows, N, C, H, W) grid of :func:`augmentation_grid` as one (rows·(H+gap)−gap, N·(W+gap)−gap)
    numpy picture of channel 0, with NaN (drawn pale blue) between the pictures.

    See: chapters/02_2_data_augmentation.ipynb
    """
    grid = B.to_numpy(grid)
    if grid.ndim != 5:
        raise ValueError(f"grid must have shape (rows, N, C, H, W), got {tuple(grid.shape)}")
    rows, n, _, h, w = grid.shape
    xp = B.namespace(grid)
    out = xp.full((rows * (h + gap) - gap, n * (w + gap) - gap), float("nan"))
    for r in range(rows):
        for c in range(n):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = grid[r, c, 0]
    return out


class AugmentationView(FigureView):
    """The preview grid made once, as one image: originals on the first row, ``copies`` draws below.

    :meth:`update` draws the augmented copies (:func:`augmentation_grid`: a few small images,
    milliseconds) and replaces the image's pixels and the title.

    Parameters
    ----------
    images : array, shape (N, C, H, W) (a few images, e.g. 10)
    labels : optional labels shown above the originals
    copies : int >= 1, rows of draws

    See: chapters/02_2_data_augmentation.ipynb
    """

    def __init__(self, images: Any, labels: Sequence[Any] | None = None, copies: int = 4, dpi: int = 72):
        self.images, self.copies = A._check_images(images, 4), copies
        n, _, h, w = tuple(self.images.shape)
        if labels is not None and len(labels) != n:
            raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}")
        first = mosaic(augmentation_grid(self.images, [], 1.0, 0, copies))
        self.fig, self.ax = agg_figure((max(4.0, 1.05 * n), 1.05 * (copies + 1) + 0.6), dpi)
        cmap = _gray_with_blank()
        self.image = self.ax.imshow(first, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        self.ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(copies + 1)],
                           ["original"] + [f"draw {r}" for r in range(1, copies + 1)], fontsize=8)
        if labels is not None:
            self.ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(n)], [f"label {v}" for v in labels],
                               fontsize=8)
            self.ax.xaxis.tick_top()
        else:
            self.ax.set_xticks([])
        self.ax.tick_params(length=0)
        for side in self.ax.spines.values():
            side.set_visible(False)
        self.title = self.fig.text(0.5, 0.995, " ", ha="center", va="top", fontsize=9)
        self.fig.tight_layout(rect=(0, 0, 1, 0.93))

    def update(self, names: Sequence[str] = (), p: float = 1.0, seed: int = 0) -> Any:
        """Show the draws of the transforms ``names`` (in :data:`TRANSFORMS`' order) at ``p`` and ``seed``;
        returns the grid (numpy, (copies + 1, N, C, H, W))."""
        grid = B.to_numpy(augmentation_grid(self.images, list(names), p, seed, self.copies))
        self.image.set_data(mosaic(grid))
        self.title.set_text((" → ".join(names) or "no transform") + f"  (p = {p:g}, seed {seed})")
        return grid


def _gray_with_blank() -> Any:
    import matplotlib

    return matplotlib.colormaps["gray_r"].with_extremes(bad="#d5e3f3")     # the gaps: pale blue, not a pixel value


def explorer(images: Any, labels: Sequence[Any] | None = None) -> Any:
    """Checkboxes for the transforms, sliders for p and the seed; draws the preview grid.

    Parameters
    ----------
    images : array, shape (N, C, H, W) (a few images, e.g. 10)
    labels : optional labels shown above the originals

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/02_2_data_augmentation.ipynb
    """
    import ipywidgets as widgets

    class _Chosen(AugmentationView):
        def update(self, p: float = 1.0, seed: int = 0, **chosen: bool) -> Any:
            return super().update([n for n in TRANSFORMS if chosen.get(_key(n))], p, seed)

    view = _Chosen(images, labels)
    boxes = {_key(n): widgets.Checkbox(value=n in ("rotate ±15°", "shift ±1 px (pad + random crop)"), description=n,
                                       indent=False) for n in TRANSFORMS}
    controls = {"p": widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="p"),
                "seed": widgets.IntSlider(value=0, min=0, max=50, description="seed"), **boxes}
    keys = list(boxes)
    return image_explorer(view, controls, rows=[["p", "seed"], keys[:3], keys[3:]])

def _key(name: str) -> str:
    """A keyword-safe name for a transform's checkbox."""
    return "t_" + "".join(ch if ch.isalnum() else "_" for ch in name)
