"""The production implementations nnopt_lab is checked against (torch.nn, torch.optim).

This is the one module, with :mod:`nnopt_lab.backend`, that imports torch directly: it is
*not* technique code. Tests, the notebooks' check cells and the benchmarks use it to build
the torch.nn twin of one of our models and to train it the same way.

Twins come from one registry: a layer type joins it with :func:`register_twin`, whose
builder turns one of our layers into the torch.nn module of the same kind and shape::

    @register_twin(MyLowRankLinear)
    def _(layer):
        return torch.nn.Sequential(torch.nn.Linear(...), torch.nn.Linear(...))

By default the layer's ``state_dict`` is then copied into the built module (same keys, as
torch.nn uses); a builder that copies its own weights registers with ``copy_state=False``.
:func:`torch_module` looks a layer's type up along its MRO, so a subclass of a registered
layer gets its parent's twin unless it registers its own.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.utils.prune  # noqa: F401  (torch.nn.utils.prune.custom_from_mask)

from . import backend as B
from .compression.weight_sharing import SharedLayer
from .inference.sparse import SparseLinear
from .nn import layers as L
from .training.loop import batches
from .validation import check_bool, check_callable, check_choice, check_int, check_number

__all__ = ["register_twin", "torch_twin", "torch_module", "train_torch_twin"]

MAX_EPOCHS = 10 ** 6            # more is a typo, not a training run
_TWINS: dict[type, tuple[Callable[[L.Module], torch.nn.Module], bool]] = {}


def register_twin(*layer_types: type, copy_state: bool = True) -> Callable:
    """Decorator: ``builder(layer) -> torch.nn.Module`` becomes the twin of ``layer_types``.

    Parameters
    ----------
    *layer_types : subclasses of :class:`nnopt_lab.nn.Module`
    copy_state : bool
        After building, copy the layer's ``state_dict`` (parameters and buffers, at their
        own precision) into the twin; ``False`` when the builder copies the weights itself.

    Returns
    -------
    The decorator, which registers the builder and returns it unchanged. Registering a type
    again replaces its builder.

    See: chapters/01_why_optimize.ipynb
    """
    if not layer_types:
        raise TypeError("register_twin needs at least one layer type")
    for t in layer_types:
        if not (isinstance(t, type) and issubclass(t, L.Module)):
            raise TypeError(f"layer_types must be subclasses of nnopt_lab.nn.Module, got {t!r}")
    copy_state = check_bool("copy_state", copy_state)

    def decorator(builder: Callable) -> Callable:
        check_callable("builder", builder)
        for t in layer_types:
            _TWINS[t] = (builder, copy_state)
        return builder
    return decorator


def _lookup(layer: L.Module) -> tuple[Callable, bool]:
    for cls in type(layer).__mro__:
        if cls in _TWINS:
            return _TWINS[cls]
    raise TypeError(f"no torch.nn twin registered for {type(layer).__name__}; add one with "
                    f"@nnopt_lab.reference.register_twin({type(layer).__name__})")


def _apply_masks(twin: torch.nn.Module, state: dict) -> dict:
    """Pruning masks (``<name>_mask``, torch.nn.utils.prune's key) become torch prune masks on the twin.

    torch keeps a pruned parameter as ``<name>_orig`` with ``<name>_mask`` beside it, and
    multiplies them in every forward; ours keeps ``<name>`` itself. Returns the state with
    ``<name>`` renamed ``<name>_orig`` where a mask was applied.
    """
    own = twin.state_dict()
    for key in [k for k in state if k.endswith("_mask") and k not in own]:
        path, _, name = key[: -len("_mask")].rpartition(".")
        module = twin.get_submodule(path)
        if not isinstance(getattr(module, name, None), torch.nn.Parameter):
            continue                               # not a mask of a parameter: load_state_dict names it
        torch.nn.utils.prune.custom_from_mask(module, name, state[key].to(dtype=getattr(module, name).dtype))
        prefix = path + "." if path else ""
        state[prefix + name + "_orig"] = state.pop(prefix + name)
    return state


def _copy_state(twin: torch.nn.Module, layer: L.Module) -> None:
    """Load ``layer``'s state into ``twin`` without rounding: the twin takes the layer's float dtype."""
    state = {k: torch.as_tensor(B.to_numpy(v)) for k, v in layer.state_dict().items()}
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    if floats:
        twin.to(dtype=floats[0])
    twin.load_state_dict(_apply_masks(twin, state))


def torch_module(layer: L.Module) -> torch.nn.Module:
    """The torch.nn module of the same kind and shape as one of ours, holding a copy of its state.

    Built on the CPU, in the dtype of the layer's parameters (float32 where it has none), in
    the layer's train/eval mode.

    Raises
    ------
    TypeError
        When ``layer`` is not one of our Modules, or no twin is registered for its type.

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(layer, L.Module):
        raise TypeError(f"layer must be an nnopt_lab.nn Module, got {type(layer).__name__}")
    builder, copy_state = _lookup(layer)
    twin = builder(layer)
    if not isinstance(twin, torch.nn.Module):
        raise TypeError(f"the twin builder of {type(layer).__name__} returned {type(twin).__name__}, "
                        f"not a torch.nn.Module")
    if copy_state:
        _copy_state(twin, layer)
    return twin.train(layer.training)


def torch_twin(model: L.Module, dtype: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """A torch.nn model of the same shape as ``model``, holding a copy of its weights and buffers.

    Parameters
    ----------
    model : Module (every layer's type registered, see :func:`register_twin`)
    dtype : {"float32", "float64"} or None
        None keeps the model's own float dtype. The weights are rounded once, from the
        model's own values.
    device : str
        A torch device ("cpu", "cuda", "cuda:0").

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(model, L.Module):
        raise TypeError(f"model must be an nnopt_lab.nn Module, got {type(model).__name__}")
    if dtype is not None:
        check_choice("dtype", dtype, B.DTYPES)
    device = _torch_device(device)
    twin = torch_module(model)
    twin = twin.to(device=device, dtype=getattr(torch, dtype)) if dtype else twin.to(device=device)
    return twin


def _torch_device(device: Any) -> torch.device:
    """``device`` as a torch.device that exists on this machine."""
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str such as 'cpu' or 'cuda', got {device!r}")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {device!r}") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and not B.cuda_available()):
        raise ValueError(f"device must be 'cpu' or, where torch sees a GPU, 'cuda'; got {str(device)!r}")
    return device


# ----------------------------------------------------------------------------- the registry
def _has_bias(layer: L.Module) -> bool:
    return "bias" in layer._params


@register_twin(L.Sequential, copy_state=False)
def _sequential(layer: L.Sequential) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch_module(m) for m in layer])


@register_twin(L.Linear)
def _linear(layer: L.Linear) -> torch.nn.Module:
    return torch.nn.Linear(layer.in_features, layer.out_features, bias=_has_bias(layer))


@register_twin(L.Conv2d)
def _conv2d(layer: L.Conv2d) -> torch.nn.Module:
    return torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                           bias=_has_bias(layer))


@register_twin(L.BatchNorm1d)
def _batchnorm1d(layer: L.BatchNorm1d) -> torch.nn.Module:
    return torch.nn.BatchNorm1d(layer.num_features, layer.eps, layer.momentum)


@register_twin(L.BatchNorm2d)
def _batchnorm2d(layer: L.BatchNorm2d) -> torch.nn.Module:
    return torch.nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)


@register_twin(L.MaxPool2d)
def _maxpool2d(layer: L.MaxPool2d) -> torch.nn.Module:
    return torch.nn.MaxPool2d(layer.kernel_size, layer.stride)


@register_twin(L.AvgPool2d)
def _avgpool2d(layer: L.AvgPool2d) -> torch.nn.Module:
    return torch.nn.AvgPool2d(layer.kernel_size, layer.stride)


@register_twin(L.ReLU)
def _relu(layer: L.ReLU) -> torch.nn.Module:
    return torch.nn.ReLU()


@register_twin(L.Flatten)
def _flatten(layer: L.Flatten) -> torch.nn.Module:
    return torch.nn.Flatten()


@register_twin(L.Dropout)
def _dropout(layer: L.Dropout) -> torch.nn.Module:
    return torch.nn.Dropout(layer.p)


@register_twin(SharedLayer, copy_state=False)
def _shared(layer: SharedLayer) -> torch.nn.Module:
    """The wrapped layer's twin holding the dense weight ``codebook[indices]`` (for outputs;
    torch.nn has no shared-weight layer, so training the twin does not keep the sharing)."""
    twin = torch_module(layer.layer)
    with torch.no_grad():
        twin.weight.copy_(torch.as_tensor(B.to_numpy(layer.weight())))
        if "bias" in layer._params:
            twin.bias.copy_(torch.as_tensor(B.to_numpy(layer._params["bias"].data)))
    return twin


@register_twin(SparseLinear, copy_state=False)
def _sparse_linear(layer: SparseLinear) -> torch.nn.Module:
    """torch.nn.Linear holding the CSR weight as a dense matrix (the same outputs)."""
    weight = torch.as_tensor(B.to_numpy(layer.weight.to_dense()))
    twin = torch.nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer._params, dtype=weight.dtype)
    with torch.no_grad():
        twin.weight.copy_(weight)
        if "bias" in layer._params:
            twin.bias.copy_(torch.as_tensor(B.to_numpy(layer._params["bias"].data)))
    return twin


# ----------------------------------------------------------------------------- training
def train_torch_twin(twin: torch.nn.Module, train: tuple, *, epochs: int, batch_size: int, lr: float,
                     seed: int) -> list[float]:
    """Train a torch.nn model with torch.optim.SGD and autograd on the SAME batches, in the same
    order, as ``nnopt_lab.training.fit(..., seed=seed)`` draws. Returns the mean loss per epoch.

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(twin, torch.nn.Module):
        raise TypeError(f"twin must be a torch.nn.Module, got {type(twin).__name__}")
    if not isinstance(train, (tuple, list)) or len(train) != 2:
        raise TypeError(f"train must be a pair (X, y), got {type(train).__name__}")
    epochs = check_int("epochs", epochs, 1, MAX_EPOCHS)
    batch_size = check_int("batch_size", batch_size, 1)
    lr = check_number("lr", lr, 0.0, low_open=True)
    seed = check_int("seed", seed, 0)
    x, y = (torch.as_tensor(B.to_numpy(a)) for a in train)
    param = next(twin.parameters())
    x = x.to(device=param.device, dtype=param.dtype)
    y = y.to(device=param.device)
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss()
    B.seed(seed)
    losses = []
    twin.train()
    for _ in range(epochs):
        total, n = 0.0, 0
        for xb, yb in batches(x, y, batch_size, shuffle=True):
            opt.zero_grad()
            loss = lossf(twin(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
            n += xb.shape[0]
        losses.append(total / n)
    return losses
