"""The baseline models every chapter starts from (seed §1.2).

* :func:`mlp` -- fully connected ReLU network, e.g. 64-100-10 for digits or the
  classic LeNet-300-100 (784-300-100-10) for MNIST.
* :func:`small_cnn` -- two 3×3 conv + ReLU + 2×2 max-pool blocks and a linear classifier.

Both are :class:`~nnopt_lab.nn.Sequential`, so ``nnopt_lab.reference.torch_twin`` builds
the torch.nn model of the same shape with the same weights.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from .nn.layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU,
                        Sequential)

__all__ = ["mlp", "small_cnn"]


def mlp(sizes=(64, 100, 10), dropout: float = 0.0, batchnorm: bool = False, backend=None) -> Sequential:
    """Linear → [BatchNorm1d] → ReLU → [Dropout] → ... → Linear.

    Parameters
    ----------
    sizes : sequence of int
        Input size, hidden sizes..., number of classes; at least two entries.
    dropout : float in [0, 1)
        Dropout after each hidden ReLU (0 = none).
    batchnorm : bool
        BatchNorm1d after each hidden Linear.
    """
    sizes = tuple(sizes)
    if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be at least two positive ints, got {sizes!r}")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, backend=backend))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(BatchNorm1d(b, backend=backend))
            layers.append(ReLU())
            if dropout:
                layers.append(Dropout(dropout))
    return Sequential(*layers)


def small_cnn(in_channels: int = 1, image_size: int = 8, channels=(16, 32), num_classes: int = 10,
              batchnorm: bool = False, backend=None) -> Sequential:
    """[Conv3×3(pad 1) → [BatchNorm2d] → ReLU → MaxPool2] per entry of ``channels`` → Flatten → Linear.

    ``image_size`` must be divisible by ``2 ** len(channels)``; digits are 8×8, so two blocks
    leave 2×2 feature maps.
    """
    channels = tuple(channels)
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % (2 ** len(channels)):
        raise ValueError(f"image_size must be an int divisible by 2**len(channels) = {2 ** len(channels)}, "
                         f"got {image_size!r}")
    layers, c_in = [], in_channels
    for c in channels:
        layers.append(Conv2d(c_in, c, 3, padding=1, backend=backend))
        if batchnorm:
            layers.append(BatchNorm2d(c, backend=backend))
        layers += [ReLU(), MaxPool2d(2)]
        c_in = c
    side = image_size // 2 ** len(channels)
    layers += [Flatten(), Linear(c_in * side * side, num_classes, backend=backend)]
    return Sequential(*layers)
