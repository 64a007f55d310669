"""Explorer of chapter 2.2: an augmentation preview grid (pick transforms, probability, seed).

:func:`augmentation_grid` is the pure compute function (tested); :func:`explorer` is the thin
ipywidgets layer that draws the grid with matplotlib.

See: chapters/02_2_data_augmentation.ipynb (seed §3.1.2: flip, rotate, crop)
"""
from __future__ import annotations

from typing import Any, Sequence

from .. import backend as B
from ..preprocessing import augmentation as A

__all__ = ["TRANSFORMS", "build_pipeline", "augmentation_grid", "explorer"]

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


def explorer(images: Any, labels: Sequence[Any] | None = None):
    """Checkboxes for the transforms, sliders for p and the seed; draws the preview grid.

    Parameters
    ----------
    images : array, shape (N, C, H, W) (a few images, e.g. 6)
    labels : optional labels shown above the originals
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    boxes = {n: widgets.Checkbox(value=n in ("rotate ±15°", "shift ±1 px (pad + random crop)"), description=n,
                                 indent=False) for n in TRANSFORMS}

    def show(p, seed, **chosen):
        names = [n for n in TRANSFORMS if chosen.get(_key(n))]
        grid = B.to_numpy(augmentation_grid(images, names, p, seed))
        rows, n = grid.shape[:2]
        fig, axes = plt.subplots(rows, n, figsize=(1.4 * n, 1.4 * rows), squeeze=False)
        for r in range(rows):
            for c in range(n):
                axes[r][c].imshow(grid[r, c, 0], cmap="gray_r", vmin=0, vmax=1)
                axes[r][c].set_xticks([]), axes[r][c].set_yticks([])
            axes[r][0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=8)
        if labels is not None:
            for c in range(n):
                axes[0][c].set_title(f"label {labels[c]}", fontsize=8)
        fig.suptitle(" → ".join(names) or "no transform", fontsize=9)
        plt.show()

    controls = {"p": widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="p"),
                "seed": widgets.IntSlider(value=0, min=0, max=50, description="seed")}
    controls.update({_key(n): box for n, box in boxes.items()})
    return widgets.interactive(show, **controls)


def _key(name: str) -> str:
    """A keyword-safe name for a transform's checkbox."""
    return "t_" + "".join(ch if ch.isalnum() else "_" for ch in name)
