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

import copy
import io
import time
import warnings
from typing import Any, Callable

import torch
import torch.ao.nn.intrinsic.quantized
import torch.ao.nn.quantized
import torch.ao.quantization
import torch.nn.utils.prune  # noqa: F401  (torch.nn.utils.prune.custom_from_mask)

from . import backend as B
from .compression.weight_sharing import SharedLayer
from .inference.qat import FakeQuantize, QATLayer
from .inference.sparse import SparseLinear
from .nn import layers as L
from .training.loop import batches
from .validation import check_bool, check_callable, check_choice, check_int, check_number

__all__ = ["register_twin", "torch_twin", "torch_module", "train_torch_twin", "from_torch", "to_torch", "IMPORTABLE",
           "torch_tools_baseline", "to_torch_quantized", "QuantizedSequential"]

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


def _with_weight(twin: torch.nn.Module, layer: L.Module, weight: Any) -> torch.nn.Module:
    """``twin`` holding ``weight`` (one of our arrays) and the layer's bias, when it has one."""
    with torch.no_grad():
        twin.weight.copy_(torch.as_tensor(B.to_numpy(weight)))
        if "bias" in layer._params:
            twin.bias.copy_(torch.as_tensor(B.to_numpy(layer._params["bias"].data)))
    return twin


@register_twin(SharedLayer, copy_state=False)
def _shared(layer: SharedLayer) -> torch.nn.Module:
    """The wrapped layer's twin holding the dense weight ``codebook[indices]`` (for outputs;
    torch.nn has no shared-weight layer, so training the twin does not keep the sharing)."""
    return _with_weight(torch_module(layer.layer), layer, layer.weight())


@register_twin(SparseLinear, copy_state=False)
def _sparse_linear(layer: SparseLinear) -> torch.nn.Module:
    """torch.nn.Linear holding the CSR weight as a dense matrix (the same outputs)."""
    weight = layer.weight.to_dense()
    twin = torch.nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer._params,
                           dtype=getattr(torch, B.dtype_name(weight)))
    return _with_weight(twin, layer, weight)


class _FrozenFakeQuantize(torch.nn.Module):
    """``torch.fake_quantize_per_tensor_affine`` with a fixed scale and zero point (a calibrated
    :class:`~nnopt_lab.inference.qat.FakeQuantize` in eval mode)."""

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int):
        super().__init__()
        self.scale, self.zero_point, self.qmin, self.qmax = scale, zero_point, qmin, qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)


@register_twin(FakeQuantize, copy_state=False)
def _fake_quantize(layer: FakeQuantize) -> torch.nn.Module:
    """The eval-mode twin: torch's fake-quantization with the layer's calibrated (or learned) range.

    Raises ValueError when the layer has not seen a training batch yet (no range to copy)."""
    if layer.scale is None:
        raise ValueError("layer is a FakeQuantize that has no range yet: calibrate it (qat.calibrate or a "
                         "training batch) before building its torch twin")
    return _FrozenFakeQuantize(float(layer.scale), int(layer.zero_point), layer.qmin, layer.qmax)


@register_twin(QATLayer, copy_state=False)
def _qat_layer(layer: QATLayer) -> torch.nn.Module:
    """torch.nn.Linear / Conv2d holding the fake-quantized weight W-hat (the layer's inference outputs;
    training the twin does not keep the quantization)."""
    return _with_weight(torch_module(layer.layer), layer, layer.quantized_weight())


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


# ----------------------------------------------------------------------------- a learner's torch model
IMPORTABLE = ("Sequential", "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "ReLU", "Flatten", "MaxPool2d",
              "AvgPool2d", "Dropout")


def _refuse(where: str, module: torch.nn.Module, why: str) -> None:
    raise ValueError(f"{where} is a torch.nn.{type(module).__name__} {why}")


def _pool_args(where: str, m: torch.nn.Module) -> tuple:
    pair = (lambda v: v if isinstance(v, int) else tuple(v))
    if m.padding not in (0, (0, 0)):
        _refuse(where, m, f"with padding={m.padding}: nnopt_lab's pooling has no padding")
    if m.ceil_mode:
        _refuse(where, m, "with ceil_mode=True: nnopt_lab's pooling floors the output size")
    if isinstance(m, torch.nn.MaxPool2d) and (m.dilation not in (1, (1, 1)) or m.return_indices):
        _refuse(where, m, "with dilation or return_indices: nnopt_lab's MaxPool2d has neither")
    if isinstance(m, torch.nn.AvgPool2d) and m.divisor_override is not None:
        _refuse(where, m, "with divisor_override: nnopt_lab's AvgPool2d divides by the window size")
    return pair(m.kernel_size), pair(m.stride)


def _import_layer(where: str, m: torch.nn.Module, backend: B.Backend) -> L.Module:
    """Our layer of the same kind and shape as the torch module ``m`` (its weights copied later)."""
    if isinstance(m, torch.nn.Sequential):
        return L.Sequential(*[_import_layer(f"{where}[{i}]", c, backend) for i, c in enumerate(m)])
    if type(m) is torch.nn.Linear:
        return L.Linear(m.in_features, m.out_features, bias=m.bias is not None, backend=backend)
    if type(m) is torch.nn.Conv2d:
        if isinstance(m.padding, str) and m.padding != "valid":
            _refuse(where, m, f"with padding={m.padding!r}: give the padding as numbers")
        if m.padding_mode != "zeros":
            _refuse(where, m, f"with padding_mode={m.padding_mode!r}: nnopt_lab pads with zeros only")
        padding = 0 if m.padding == "valid" else m.padding
        return L.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=padding,
                        dilation=m.dilation, groups=m.groups, bias=m.bias is not None, backend=backend)
    if type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d):
        if not m.affine or not m.track_running_stats or m.momentum is None:
            _refuse(where, m, "without affine=True, track_running_stats=True and a momentum: nnopt_lab's "
                              "BatchNorm has all three")
        cls = L.BatchNorm1d if type(m) is torch.nn.BatchNorm1d else L.BatchNorm2d
        return cls(m.num_features, eps=m.eps, momentum=m.momentum, backend=backend)
    if type(m) is torch.nn.ReLU:
        return L.ReLU()
    if type(m) is torch.nn.Flatten:
        if m.start_dim != 1 or m.end_dim != -1:
            _refuse(where, m, f"with start_dim={m.start_dim}, end_dim={m.end_dim}: nnopt_lab's Flatten keeps "
                              f"the batch axis and flattens the rest (1, -1)")
        return L.Flatten()
    if type(m) is torch.nn.MaxPool2d:
        return L.MaxPool2d(*_pool_args(where, m))
    if type(m) is torch.nn.AvgPool2d:
        return L.AvgPool2d(*_pool_args(where, m))
    if type(m) is torch.nn.Dropout:
        return L.Dropout(m.p)
    raise ValueError(f"{where} is a {type(m).__module__}.{type(m).__name__}, which nnopt_lab cannot import; "
                     f"supported: torch.nn.{', torch.nn.'.join(IMPORTABLE)}")


def from_torch(torch_sequential: torch.nn.Module, backend: Any = None) -> L.Sequential:
    """Our :class:`~nnopt_lab.nn.Sequential` with the same layers and a copy of a torch model's weights.

    Supported: ``torch.nn.Sequential`` (nested too) of Linear, Conv2d (zero padding), BatchNorm1d/2d
    (affine, running statistics), ReLU, Flatten (from dim 1), MaxPool2d / AvgPool2d (no padding,
    floor mode), Dropout. Weights, biases, running statistics and pruning masks
    (``torch.nn.utils.prune``'s ``weight_orig`` / ``weight_mask``) are copied, the train/eval mode
    too, so that ``model(x)`` equals ``torch_sequential(x)`` (float64: to ~1e-12, float32: ~1e-6).

    Parameters
    ----------
    torch_sequential : torch.nn.Sequential
    backend : None, a backend name or a Backend
        None: the active backend, in the torch model's float dtype; a name: that backend in the
        torch model's dtype; a Backend: exactly it (weights converted to its dtype).

    Raises
    ------
    TypeError
        When ``torch_sequential`` is not a torch.nn.Sequential.
    ValueError
        For a layer nnopt_lab cannot import, named by its position and type
        (``torch_sequential[2] is a torch.nn.modules.activation.GELU, which nnopt_lab cannot import``),
        or a setting it does not have (padding_mode="reflect", ceil_mode=True, ...).

    Seed: building the layers does not draw from the project's random stream.

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    if not isinstance(torch_sequential, torch.nn.Sequential):
        raise TypeError(f"torch_sequential must be a torch.nn.Sequential (of {', '.join(IMPORTABLE[1:])}), got "
                        f"{type(torch_sequential).__name__}")
    floats = [t.dtype for t in torch_sequential.state_dict().values() if t.is_floating_point()]
    dtype = str(floats[0]).replace("torch.", "") if floats else "float32"
    if dtype not in B.DTYPES:
        raise ValueError(f"torch_sequential holds {dtype} weights; nnopt_lab computes in {B.DTYPES}: call "
                         f"torch_sequential.float() or .double() first")
    if isinstance(backend, B.Backend):
        target = backend
    else:
        name = B.active().name if backend is None else backend
        target = B.get_backend(name, dtype)
    state = B.rng().bit_generator.state              # layer initialisation must not move the project's stream
    try:
        model = _import_layer("torch_sequential", torch_sequential, target)
    finally:
        B.rng().bit_generator.state = state
    source = {k: v.detach().cpu() for k, v in torch_sequential.state_dict().items()}
    model.load_state_dict({k: B.to_backend(v.numpy(), target, dtype=None if not v.is_floating_point() else
                                           target.dtype) for k, v in source.items()})
    return model.train(torch_sequential.training)


def to_torch(model: L.Module, dtype: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """Export one of our models as a ``torch.nn.Sequential`` with a copy of its weights (same outputs).

    :func:`torch_twin` under the name a user looks for: pruning masks become torch.nn.utils.prune
    masks (``weight_orig``, ``weight_mask``), a k-means shared layer a Linear/Conv2d holding
    ``codebook[indices]``, a CSR layer a dense Linear. ``from_torch(to_torch(m))`` gives back the
    same weights and masks.

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    return torch_twin(model, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- what a user would pick instead
_FUSABLE = ((torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU), (torch.nn.Conv2d, torch.nn.BatchNorm2d),
            (torch.nn.Conv2d, torch.nn.ReLU), (torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU),
            (torch.nn.Linear, torch.nn.BatchNorm1d), (torch.nn.Linear, torch.nn.ReLU))


def _fusions(seq: torch.nn.Sequential, prefix: str = "") -> list[list[str]]:
    """Names of the runs of a Sequential that eager-mode ``fuse_modules`` fuses (conv/linear [+bn] [+relu])."""
    children = list(seq.named_children())
    out, i = [], 0
    while i < len(children):
        name, m = children[i]
        if isinstance(m, torch.nn.Sequential):
            out += _fusions(m, prefix + name + ".")
            i += 1
            continue
        for pattern in _FUSABLE:
            run = children[i:i + len(pattern)]
            if len(run) == len(pattern) and all(type(c) is t for (_, c), t in zip(run, pattern)):
                try:                                   # this torch may not fuse the pattern (linear+bn+relu)
                    torch.ao.quantization.fuse_modules(torch.nn.Sequential(*[copy.deepcopy(c) for _, c in run]).eval(),
                                                       [[str(k) for k in range(len(run))]])
                except (AssertionError, NotImplementedError, RuntimeError, KeyError):
                    continue
                out.append([prefix + n for n, _ in run])
                i += len(pattern)
                break
        else:
            i += 1
    return out


def _code_storage(codes: torch.Tensor) -> tuple[int, str]:
    from .pipeline import _storage
    w2d = codes.reshape(codes.shape[0], -1)
    return _storage(codes.numel(), int(torch.count_nonzero(codes)), int(codes.shape[0]), 8, w2d)


def _quantized_bytes(qmodel: torch.nn.Module) -> tuple[int, int, int, int, str]:
    """(bytes, parameters, zero codes, codes, storage) of a torch.ao quantized model, counted as
    :func:`nnopt_lab.pipeline.stored_bytes` counts ours: int8 codes (CSR when smaller), float32
    biases and scales, int32 zero points (weights' and every quantized output's)."""
    total_bits, params, zeros, codes_n, formats = 0, 0, 0, 0, set()
    for m in qmodel.modules():
        if isinstance(m, torch.ao.nn.quantized.Quantize):
            total_bits += 64
        if not isinstance(m, (torch.ao.nn.quantized.Linear, torch.ao.nn.quantized.Conv2d)):
            continue
        w = m.weight()
        codes = w.int_repr()
        size, fmt = _code_storage(codes)
        formats.add(fmt)
        channels = w.q_per_channel_scales().numel() if w.qscheme() in (torch.per_channel_affine,
                                                                       torch.per_channel_symmetric) else 1
        bias = m.bias()
        nb = 0 if bias is None else bias.numel()
        total_bits += 8 * size + 32 * nb + 64 * channels + 64      # codes, bias, weight qparams, output qparams
        params += codes.numel() + nb
        zeros += codes.numel() - int(torch.count_nonzero(codes))
        codes_n += codes.numel()
    return -(-total_bits // 8), params, zeros, codes_n, "+".join(sorted(formats)) or "dense"


def _torch_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = torch.cat([net(x[i:i + 1024]) for i in range(0, x.shape[0], 1024)])
    return float((logits.argmax(1) == y).double().mean())


def _torch_latency_ms(net: torch.nn.Module, x: torch.Tensor, batch: int, repeats: int) -> float:
    from .measure import latency
    xb = x[:batch]
    if xb.shape[0] < batch:
        xb = xb.repeat(-(-batch // xb.shape[0]), *([1] * (xb.ndim - 1)))[:batch]

    def run(xb):
        with torch.inference_mode():
            return net(xb)
    return latency(run, xb, warmup=2, repeats=repeats).median * 1e3


def torch_tools_baseline(model: L.Module, data: Any, sparsity: float, *, calibration_samples: int = 256,
                         engine: str | None = None, epochs: int = 0, lr: float = 0.01,
                         batch_size: int = 64, latency: bool = True, repeats: int = 20, seed: int = 0) -> dict:
    """What a user would pick instead: torch's own pruning and post-training int8 on the same model.

    1. ``to_torch(model)`` (float32, eval);
    2. ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` at ``sparsity`` over every
       Linear / Conv2d weight (optionally fine-tuned ``epochs`` with torch.optim.SGD through
       :func:`train_torch_twin`), then ``prune.remove``;
    3. eager-mode static post-training quantization (``torch.ao.quantization``): ``QuantWrapper``,
       ``fuse_modules`` (conv/linear [+bn] [+relu]), ``get_default_qconfig(engine)``, ``prepare``,
       calibration on ``calibration_samples`` training samples, ``convert``.

    It is measured as :class:`nnopt_lab.pipeline.Pipeline` measures its rows: test and validation
    accuracy, bytes counted by the same rule (int8 codes, CSR when smaller; float32 biases and
    scales; int32 zero points), MACs, and the median latency at batch 1 and 64.

    Parameters
    ----------
    model : Module (the trained float model, as given to the pipeline)
    data : nnopt_lab Dataset
    sparsity : float in [0, 1)
    calibration_samples : int >= 1
    engine : {"qnnpack", "x86", "fbgemm", "onednn"} or None
        The quantized engine; None takes "qnnpack" where torch has it, else "x86". Restored afterwards.
    epochs : int >= 0, fine-tuning epochs after pruning (0: none)
    lr, batch_size : the fine-tuning's SGD
    latency : bool
    repeats : int >= 1
    seed : int >= 0 (the fine-tuning's batch order)

    Returns
    -------
    dict with the fields of :class:`nnopt_lab.pipeline.StepResult` (``Report.add`` takes it) and
    ``engine``, ``pruned_accuracy`` (float, after pruning, before int8), ``serialized_bytes``
    (``torch.save`` of the quantized state_dict) and ``quantized_model``.

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    from .datasets import Dataset
    from .measure import flops, model_bytes, MAX_REPEATS

    if not isinstance(model, L.Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be an nnopt_lab Dataset, got {type(data).__name__}")
    sparsity = check_number("sparsity", sparsity, 0.0, 1.0, high_open=True)
    calibration_samples = check_int("calibration_samples", calibration_samples, 1)
    engines = tuple(e for e in torch.backends.quantized.supported_engines if e != "none")
    engine = ("qnnpack" if "qnnpack" in engines else "x86") if engine is None else check_choice("engine", engine,
                                                                                                 engines)
    epochs = check_int("epochs", epochs, 0, MAX_EPOCHS)
    lr = check_number("lr", lr, 0.0, low_open=True)
    batch_size = check_int("batch_size", batch_size, 1)
    latency = check_bool("latency", latency)
    repeats = check_int("repeats", repeats, 1, MAX_REPEATS)
    seed = check_int("seed", seed, 0)
    start = time.perf_counter()
    as_torch = (lambda a, dt=torch.float32: torch.as_tensor(B.to_numpy(a)).to(dt))
    x_test, y_test = as_torch(data.test[0]), as_torch(data.test[1], torch.int64)
    x_val, y_val = as_torch(data.val[0]), as_torch(data.val[1], torch.int64)
    twin = to_torch(model, dtype="float32").eval()
    targets = [(m, "weight") for m in twin.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if not targets:
        raise ValueError("model has no Linear or Conv2d weight to prune")
    torch.nn.utils.prune.global_unstructured(targets, pruning_method=torch.nn.utils.prune.L1Unstructured,
                                             amount=sparsity)
    if epochs:
        train_torch_twin(twin, (data.train[0], data.train[1]), epochs=epochs, batch_size=batch_size,
                         lr=lr, seed=seed)
        twin.eval()
    for m, name in targets:
        torch.nn.utils.prune.remove(m, name)
    pruned_accuracy = _torch_accuracy(twin, x_test, y_test)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():          # torch's own deprecation notes on quantized tensors
            warnings.filterwarnings("ignore", message=".*(deprecated|reduce_range).*", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*",
                                    category=DeprecationWarning)
            qmodel = _eager_ptq(twin, engine, as_torch(data.train[0][:calibration_samples]))
            size, params, zeros, codes, storage = _quantized_bytes(qmodel)
            accuracy, val_accuracy = _torch_accuracy(qmodel, x_test, y_test), _torch_accuracy(qmodel, x_val, y_val)
            lat = ((_torch_latency_ms(qmodel, x_test, 1, repeats), _torch_latency_ms(qmodel, x_test, 64, repeats))
                   if latency else (None, None))
            buffer = io.BytesIO()
            torch.save(qmodel.state_dict(), buffer)
    finally:
        torch.backends.quantized.engine = previous
    return {"step": f"torch: prune.global_unstructured({sparsity:g}) + torch.ao PTQ int8 ({engine})",
            "kind": "torch", "accuracy": accuracy, "val_accuracy": val_accuracy, "bytes": size,
            "compression": model_bytes(model, "float32") / size,
            "macs": flops(model, tuple(data.input_shape), batch_size=1).total_macs, "params": params,
            "sparsity": zeros / codes if codes else 0.0, "latency_b1_ms": lat[0], "latency_b64_ms": lat[1],
            "storage": storage, "seconds": time.perf_counter() - start, "engine": engine,
            "pruned_accuracy": pruned_accuracy, "serialized_bytes": len(buffer.getvalue()),
            "quantized_model": qmodel}


def _eager_ptq(twin: torch.nn.Module, engine: str, calibration: torch.Tensor) -> torch.nn.Module:
    """Eager-mode static post-training int8 of a float torch model, as torch's tutorial does it."""
    qmodel = torch.ao.quantization.QuantWrapper(copy.deepcopy(twin)).eval()
    fusions = _fusions(qmodel.module)
    if fusions:
        torch.ao.quantization.fuse_modules(qmodel.module, fusions, inplace=True)
    qmodel.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.prepare(qmodel, inplace=True)
    with torch.inference_mode():
        qmodel(calibration)
    return torch.ao.quantization.convert(qmodel, inplace=True)


# ----------------------------------------------------------------------------- int8 export
class QuantizedSequential(torch.nn.Sequential):
    """A ``torch.nn.Sequential`` of torch.ao quantized modules that runs on the quantized engine its
    weights were packed for (``engine``; set for the call, restored after it).

    See: chapters/06_capstone.ipynb (seed §1.2)
    """

    def __init__(self, engine: str, modules=()):
        engines = tuple(e for e in torch.backends.quantized.supported_engines if e != "none")
        engine = check_choice("engine", engine, engines)
        if isinstance(modules, torch.nn.Module) or not isinstance(modules, (list, tuple)):
            raise TypeError(f"modules must be a list of torch.nn.Module, got {type(modules).__name__}")
        for i, m in enumerate(modules):
            if not isinstance(m, torch.nn.Module):
                raise TypeError(f"modules[{i}] must be a torch.nn.Module, got {type(m).__name__}")
        super().__init__(*modules)
        self.engine = engine

    def forward(self, x):
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.engine
        try:
            return super().forward(x)
        finally:
            torch.backends.quantized.engine = previous


def _qweight(layer: Any) -> torch.Tensor:
    codes = torch.as_tensor(B.to_numpy(layer.weight_codes)).to(torch.int8)
    if layer.per_channel:
        scales = torch.as_tensor(B.to_numpy(layer.weight_scale), dtype=torch.float64)
        return torch._make_per_channel_quantized_tensor(codes, scales, torch.zeros(codes.shape[0], dtype=torch.int64),
                                                        0)
    return torch._make_per_tensor_quantized_tensor(codes, float(layer.weight_scale), 0)


def _float_bias(layer: Any) -> torch.Tensor | None:
    """The float bias whose torch quantization (at S_w·S_x) gives back the int32 bias codes."""
    if layer.bias_codes is None:
        return None
    codes = torch.as_tensor(B.to_numpy(layer.bias_codes)).to(torch.float64)
    sx = float(torch.tensor(layer.input_scale, dtype=torch.float32))
    sw = torch.as_tensor(B.to_numpy(layer.weight_scale), dtype=torch.float32).to(torch.float64) \
        if layer.per_channel else torch.tensor(float(layer.weight_scale), dtype=torch.float32).to(torch.float64)
    sb = (sw * sx).to(torch.float32).to(torch.float64)
    return (codes * sb).to(torch.float32)


def _export_integer_layer(layer: Any) -> torch.nn.Module:
    from .inference import integer as I

    if isinstance(layer, I.IntegerLinear):
        if layer.relu:
            m = torch.ao.nn.intrinsic.quantized.LinearReLU(layer.in_features, layer.out_features,
                                                           bias=layer.bias_codes is not None)
        else:
            m = torch.ao.nn.quantized.Linear(layer.in_features, layer.out_features, bias_=layer.bias_codes is not None)
    elif isinstance(layer, I.IntegerConv2d):
        cls = torch.ao.nn.intrinsic.quantized.ConvReLU2d if layer.relu else torch.ao.nn.quantized.Conv2d
        m = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                dilation=layer.dilation, groups=layer.groups, bias=layer.bias_codes is not None)
    elif isinstance(layer, I.IntegerMaxPool2d):
        return torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
    elif isinstance(layer, I.IntegerReLU):
        return torch.nn.ReLU()
    elif isinstance(layer, I.IntegerFlatten):
        return torch.nn.Flatten()
    else:                                           # IntegerModel checks its layers: nothing else gets here
        raise TypeError(f"no torch quantized module for {type(layer).__name__}")
    m.set_weight_bias(_qweight(layer), _float_bias(layer))
    m.scale, m.zero_point = float(layer.output_scale), int(layer.output_zero_point)
    return m


def to_torch_quantized(integer_model: Any, engine: str = "qnnpack") -> torch.nn.Module:
    """Export an int8 :class:`~nnopt_lab.inference.integer.IntegerModel` as torch.ao quantized modules.

    ``Quantize(S_0, z_0, quint8)`` -> ``torch.ao.nn.quantized.Linear`` / ``Conv2d`` (``LinearReLU`` /
    ``ConvReLU2d`` where our layer fuses its ReLU) with our int8 codes, weight scales (per tensor or
    per channel, zero point 0), the float bias that torch quantizes back to our int32 codes, and our
    output scales and zero points; ``MaxPool2d``, ``ReLU``, ``Flatten`` as they are; ``DeQuantize``.
    Weights are packed for ``engine`` and the returned :class:`QuantizedSequential` switches to it for
    each call. On "qnnpack", its uint8 codes equal ours bit for bit for a model converted with
    ``requantization="float"`` (QNNPACK's float32 multiplier), and within one code with
    ``"fixed"`` (gemmlowp's integer multiplier rounds ties otherwise). Input: float32 tensors.

    Parameters
    ----------
    integer_model : IntegerModel (from :func:`nnopt_lab.inference.integer.convert` or the
        pipeline's :class:`~nnopt_lab.pipeline.QuantizeInt8`)
    engine : {"qnnpack", "x86", "fbgemm", "onednn"}, where torch has it

    Returns
    -------
    QuantizedSequential (a torch.nn.Sequential)

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    from .inference import integer as I

    if not isinstance(integer_model, I.IntegerModel):
        raise TypeError(f"integer_model must be an nnopt_lab IntegerModel (inference.integer.convert), got "
                        f"{type(integer_model).__name__}")
    engines = tuple(e for e in torch.backends.quantized.supported_engines if e != "none")
    engine = check_choice("engine", engine, engines)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
            inner = [_export_integer_layer(layer) for layer in integer_model.layers]
    finally:
        torch.backends.quantized.engine = previous
    stub = torch.ao.nn.quantized.Quantize(float(integer_model.input_scale), int(integer_model.input_zero_point),
                                          torch.quint8)
    return QuantizedSequential(engine, [stub, *inner, torch.ao.nn.quantized.DeQuantize()]).eval()
