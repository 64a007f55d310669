"""The baseline models every chapter starts from (seed §1.2).

* :func:`mlp` -- fully connected ReLU network, e.g. 64-100-10 for digits or the
  classic LeNet-300-100 (784-300-100-10) for MNIST.
* :func:`small_cnn` -- two 3×3 conv + ReLU + 2×2 max-pool blocks and a linear classifier.

Both are :class:`~nnopt_lab.nn.Sequential`, so ``nnopt_lab.reference.torch_twin`` builds
the torch.nn model of the same shape with the same weights.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from . import backend as B
from .nn.layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU,
                        Sequential)
from .validation import check_bool, check_int, check_probability, check_sequence

__all__ = ["mlp", "small_cnn"]


def _int_sequence(name: str, value: Any, min_length: int) -> tuple[int, ...]:
    """``value`` as a tuple of ints >= 1 with at least ``min_length`` entries; each named ``name[i]``."""
    items = check_sequence(name, value)
    if len(items) < min_length:
        raise ValueError(f"{name} must have at least {min_length} entr{'y' if min_length == 1 else 'ies'}, "
                         f"got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, 1) for i, v in enumerate(items))


def _backend(backend: Any) -> B.Backend:
    """The backend the weights go to (the active one for None); a bad name is named ``backend``."""
    return B.active() if backend is None else B.get_backend(backend)


@contextmanager
def _allocating(what: str) -> Iterator[None]:
    """Turn a failed allocation of the weights into a ValueError naming the caller's sizes."""
    try:
        yield
    except (MemoryError, RuntimeError, ValueError) as error:
        raise ValueError(f"{what}, more than can be allocated ({error})") from None


def mlp(sizes=(64, 100, 10), dropout: float = 0.0, batchnorm: bool = False, backend=None) -> Sequential:
    """Linear → [BatchNorm1d] → ReLU → [Dropout] → ... → Linear.

    Parameters
    ----------
    sizes : sequence of int >= 1
        Input size, hidden sizes..., number of classes; at least two entries.
    dropout : float in [0, 1)
        Dropout after each hidden ReLU (0 = none).
    batchnorm : bool
        BatchNorm1d after each hidden Linear.
    backend : backend name or Backend, optional
        Where the weights live (default: the active backend).

    Raises
    ------
    TypeError, ValueError
        Naming the argument: ``sizes[1] must be an int >= 1, got 0``.

    See: chapters/01_why_optimize.ipynb
    """
    sizes = _int_sequence("sizes", sizes, 2)
    dropout = check_probability("dropout", dropout, high_open=True)
    batchnorm = check_bool("batchnorm", batchnorm)
    backend = _backend(backend)
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    with _allocating(f"sizes {sizes!r} make {params:,} parameters"):
        return _mlp_layers(sizes, dropout, batchnorm, backend)


def _mlp_layers(sizes: tuple, dropout: float, batchnorm: bool, backend) -> Sequential:
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

    Parameters
    ----------
    in_channels : int >= 1
    image_size : int >= 1
        Height = width of the input; divisible by ``2 ** len(channels)`` (each block halves
        it). Digits are 8×8, so two blocks leave 2×2 feature maps.
    channels : sequence of int >= 1
        Output channels of each block; at least one.
    num_classes : int >= 1
    batchnorm : bool
        BatchNorm2d after each convolution.
    backend : backend name or Backend, optional

    Raises
    ------
    TypeError, ValueError
        Naming the argument: ``channels[0] must be an int >= 1, got 0``.

    See: chapters/01_why_optimize.ipynb
    """
    in_channels = check_int("in_channels", in_channels, 1)
    image_size = check_int("image_size", image_size, 1)
    channels = _int_sequence("channels", channels, 1)
    num_classes = check_int("num_classes", num_classes, 1)
    batchnorm = check_bool("batchnorm", batchnorm)
    backend = _backend(backend)
    if image_size % (2 ** len(channels)):
        raise ValueError(f"image_size must be divisible by 2**len(channels) = {2 ** len(channels)}, "
                         f"got {image_size}")
    side = image_size // 2 ** len(channels)
    widths = (in_channels,) + channels
    params = sum((a * 9 + 1) * b for a, b in zip(widths[:-1], widths[1:]))
    params += (channels[-1] * side * side + 1) * num_classes
    with _allocating(f"in_channels {in_channels}, channels {channels!r}, image_size {image_size} and "
                     f"num_classes {num_classes} make {params:,} parameters"):
        return _cnn_layers(in_channels, side, channels, num_classes, batchnorm, backend)


def _cnn_layers(in_channels: int, side: int, channels: tuple, num_classes: int, batchnorm: bool,
                backend) -> Sequential:
    layers, c_in = [], in_channels
    for c in channels:
        layers.append(Conv2d(c_in, c, 3, padding=1, backend=backend))
        if batchnorm:
            layers.append(BatchNorm2d(c, backend=backend))
        layers += [ReLU(), MaxPool2d(2)]
        c_in = c
    layers += [Flatten(), Linear(c_in * side * side, num_classes, backend=backend)]
    return Sequential(*layers)
