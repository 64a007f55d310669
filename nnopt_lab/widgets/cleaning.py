"""Explorer of chapter 2.1: noise level × filter type × window size on one image.

:func:`denoise_preview` is the pure compute function (tested); :class:`DenoiseView` is the
figure made once (four images: clean, noisy, filtered, error) whose images and titles a setting
replaces; :func:`explorer` is the thin ipywidgets layer over it.

See: chapters/02_1_data_cleaning.ipynb (seed §3.1.1.1: mean / median / Gaussian filtering)
"""
from __future__ import annotations

from typing import Any

from .. import backend as B
from ..preprocessing import cleaning as C
from .figures import FigureView, agg_figure, image_explorer

__all__ = ["NOISES", "FILTERS", "denoise_preview", "DenoiseView", "explorer"]

NOISES = ("gaussian", "salt_and_pepper")
FILTERS = ("none", "mean", "median", "gaussian")


def _mse(a: Any, b: Any) -> float:
    xp = B.namespace(a)
    return B.float_of(xp.mean((a - b) ** 2))


def denoise_preview(image: Any, noise: str = "gaussian", level: float = 0.2, filter: str = "median",
                    size: int = 3, sigma: float = 1.0, seed: int = 0) -> dict:
    r"""Corrupt one image with noise, filter it, and measure both errors.

    Parameters
    ----------
    image : array, shape (H, W)
        The clean image (values in any range; salt and pepper use its min and max).
    noise : {"gaussian", "salt_and_pepper"}
    level : float >= 0
        Standard deviation of the Gaussian noise, or the fraction of pixels hit by salt and pepper.
    filter : {"none", "mean", "median", "gaussian"}
    size : int >= 1
        Window of the mean and median filters.
    sigma : float > 0
        Standard deviation of the Gaussian filter (pixels).
    seed : int
        Seed of the noise (a separate generator: the project's one is not disturbed).

    Returns
    -------
    dict with ``clean``, ``noisy``, ``filtered`` (arrays (H, W) on the image's backend) and
    ``mse_noisy``, ``mse_filtered`` (floats): :math:`\frac{1}{HW}\sum (\hat x - x)^2`.
    """
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    clean = C._check_array("image", image)
    if clean.ndim != 2:
        raise ValueError(f"image must be one (H, W) image, got shape {tuple(clean.shape)}")
    g = B.generator(seed)
    if noise == "gaussian":
        noisy = C.add_gaussian_noise(clean, level, generator=g)
    else:
        noisy = C.add_salt_and_pepper(clean, level, generator=g)
    filtered = {"none": lambda x: x,
                "mean": lambda x: C.mean_filter(x, size),
                "median": lambda x: C.median_filter(x, size),
                "gaussian": lambda x: C.gaussian_filter(x, sigma)}[filter](noisy)
    return {"clean": clean, "noisy": noisy, "filtered": filtered,
            "mse_noisy": _mse(noisy, clean), "mse_filtered": _mse(filtered, clean)}


class DenoiseView(FigureView):
    """The explorer's figure, made once: four images (clean, noisy, filtered, error) and a
    colour bar. :meth:`update` runs :func:`denoise_preview` on one small image (a few
    milliseconds) and replaces the images' data and the titles.

    Parameters
    ----------
    images : array, shape (N, H, W) or (N, 1, H, W)

    See: chapters/02_1_data_cleaning.ipynb
    """

    def __init__(self, images: Any, figsize=(11, 3.1), dpi: int = 72):
        xp = B.namespace(images)
        self.images = xp.reshape(images, (images.shape[0],) + tuple(images.shape[-2:]))
        self.fig, axes = agg_figure(figsize, dpi, ncols=4)
        blank = B.to_numpy(self.images[0])
        self.panels = []
        for ax in axes:
            self.panels.append(ax.imshow(blank, cmap="gray_r", interpolation="nearest"))
            ax.set_title(" ", fontsize=9)
            ax.axis("off")
        self.axes = axes
        self.fig.colorbar(self.panels[-1], ax=axes[-1], fraction=0.046)
        self.fig.subplots_adjust(left=0.01, right=0.95, top=0.86, bottom=0.03, wspace=0.08)

    def update(self, index: int = 0, noise: str = "gaussian", level: float = 0.2, filter: str = "median",
               size: int = 3, sigma: float = 1.0, seed: int = 0) -> dict:
        """Show image ``index`` with one noise and filter setting; returns :func:`denoise_preview`'s dict."""
        r = denoise_preview(self.images[index], noise, level, filter, size, sigma, seed)
        xp = B.namespace(r["clean"])
        lo, hi = B.float_of(xp.min(r["clean"])), B.float_of(xp.max(r["clean"]))
        panels = [("clean", r["clean"], lo), (f"noisy, MSE {r['mse_noisy']:.4f}", r["noisy"], lo),
                  (f"{filter} filter, MSE {r['mse_filtered']:.4f}", r["filtered"], lo),
                  ("|filtered − clean|", abs(r["filtered"] - r["clean"]), 0.0)]
        for ax, image, (title, values, vmin) in zip(self.axes, self.panels, panels):
            image.set_data(B.to_numpy(values))
            image.set_clim(vmin, hi)
            ax.set_title(title, fontsize=9)
        return r


def explorer(images: Any) -> Any:
    """Pick an image, a noise and its level, a filter and its size; see the four panels.

    Parameters
    ----------
    images : array, shape (N, H, W) or (N, 1, H, W)

    Returns
    -------
    ipywidgets.VBox (see :func:`~nnopt_lab.widgets.figures.image_explorer`).

    See: chapters/02_1_data_cleaning.ipynb
    """
    import ipywidgets as widgets

    view = DenoiseView(images)
    controls = {
        "index": widgets.IntSlider(value=0, min=0, max=view.images.shape[0] - 1, description="image"),
        "noise": widgets.Dropdown(options=NOISES, value="salt_and_pepper", description="noise"),
        "level": widgets.FloatSlider(value=0.15, min=0.0, max=0.6, step=0.01, description="level"),
        "filter": widgets.Dropdown(options=FILTERS, value="median", description="filter"),
        "size": widgets.IntSlider(value=3, min=1, max=7, description="window"),
        "sigma": widgets.FloatSlider(value=1.0, min=0.2, max=3.0, step=0.1, description="σ (Gaussian)"),
        "seed": widgets.IntSlider(value=0, min=0, max=20, description="seed")}
    return image_explorer(view, controls, rows=[["index", "noise", "level"], ["filter", "size", "sigma", "seed"]])
