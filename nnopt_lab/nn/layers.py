"""Layers with parameters, gradients and state, built on :mod:`nnopt_lab.nn.functional`.

A :class:`Module` is torch-shaped (``named_parameters``, ``state_dict`` with the same keys
and layouts as ``torch.nn``, ``train``/``eval``) but does backpropagation by hand:
``forward(x)`` remembers what it needs, ``backward(dout)`` writes ``param.grad`` for each of
its parameters and returns the gradient with respect to its input.

Unlike torch, ``backward`` *overwrites* ``param.grad`` (no accumulation), so there is no
need to zero gradients between steps.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterator

from .. import backend as B
from ..validation import check_bool, check_int
from . import functional as F

__all__ = ["Parameter", "Module", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU",
           "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "Sequential", "CrossEntropyLoss"]


def _count_nonzero(x: Any) -> int:
    """Number of nonzero entries (one sync on a GPU)."""
    return int(B.namespace(x).count_nonzero(x))


def _check_dtype(layer: "Module", x: Any, weight: Any) -> None:
    """Inputs must have the parameters' float dtype (numpy would silently upcast, torch refuses)."""
    if x.dtype != weight.dtype:
        raise TypeError(f"{type(layer).__name__} got x of dtype {B.dtype_name(x)} but its parameters are "
                        f"{B.dtype_name(weight)}; convert x with nnopt_lab.backend.to_backend(x, backend, "
                        f"dtype={B.dtype_name(weight)!r}) or move the model with model.to(...)")




class Parameter:
    """A trainable array with its gradient.

    Attributes
    ----------
    data : array
        The values (updated in place by optimizers).
    grad : array or None
        Written by the owning module's ``backward``.
    requires_grad : bool
        False freezes the parameter: optimizers skip it.
    mask : array or None
        Same shape as ``data``, 1 where the weight lives and 0 where it was pruned;
        optimizers keep pruned weights at exactly zero.
    """

    __slots__ = ("data", "grad", "requires_grad", "mask")

    def __init__(self, data: Any):
        self.data = data
        self.grad = None
        self.requires_grad = True
        self.mask = None

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={B.dtype_name(self.data)})"


class Module:
    """Base class: parameters, buffers, sub-modules, train/eval, state_dict."""

    def __init__(self):
        self._params: "OrderedDict[str, Parameter]" = OrderedDict()
        self._buffers: "OrderedDict[str, Any]" = OrderedDict()
        self._modules: "OrderedDict[str, Module]" = OrderedDict()
        self.training = True

    # -- structure
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(name, Parameter) pairs with torch's dotted names (``"0.weight"``)."""
        for name, p in self._params.items():
            yield prefix + name, p
        for mname, m in self._modules.items():
            yield from m.named_parameters(prefix + mname + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for name, b in self._buffers.items():
            yield prefix + name, b
        for mname, m in self._modules.items():
            yield from m.named_buffers(prefix + mname + ".")

    def modules(self) -> Iterator["Module"]:
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def num_parameters(self) -> int:
        """Number of scalar parameters."""
        return sum(math.prod(p.shape) for p in self.parameters())

    # -- cost (each layer reports its own; measure.summary adds them up)
    def macs(self, in_shape: tuple, out_shape: tuple) -> int:
        r"""Multiply-accumulates of one forward pass of THIS layer (not its children).

        Parameters
        ----------
        in_shape, out_shape : tuple of int
            The full input and output shapes, batch axis included.

        Returns
        -------
        int
            0 for layers without multiplications by weights (ReLU, pooling, Flatten, ...);
            layers with weights override it (:class:`Linear`, :class:`Conv2d`).

        See: chapters/01_why_optimize.ipynb (seed §1.1)
        """
        return 0

    def parameter_bytes(self, bits: int | None = None, nonzero: bool = False) -> int:
        r"""Storage of THIS module's own parameters (not its children's), in bytes.

        .. math:: \text{bytes} = \Big\lceil \tfrac{1}{8} \sum_p n_p\, b_p \Big\rceil

        Parameters
        ----------
        bits : int >= 1 or None
            Bits per stored value; None uses each array's own width (itemsize·8).
        nonzero : bool
            Count only the nonzero entries :math:`n_p` (what a sparse format stores, indices
            aside) instead of every entry.

        See: chapters/01_why_optimize.ipynb (seed §1.1)
        """
        if bits is not None:
            bits = check_int("bits", bits, low=1)
        nonzero = check_bool("nonzero", nonzero)
        total_bits = 0
        for p in self._params.values():
            count = _count_nonzero(p.data) if nonzero else math.prod(p.shape)
            total_bits += count * (p.data.dtype.itemsize * 8 if bits is None else bits)
        return -(-total_bits // 8)

    # -- state
    def state_dict(self) -> "OrderedDict[str, Any]":
        """Parameters and buffers by torch's names, in torch's order."""
        out: "OrderedDict[str, Any]" = OrderedDict()
        self._state_into(out, "")
        return out

    def _state_into(self, out, prefix):
        for name, p in self._params.items():
            out[prefix + name] = p.data
        for name, b in self._buffers.items():
            out[prefix + name] = b
        for mname, m in self._modules.items():
            m._state_into(out, prefix + mname + ".")

    def load_state_dict(self, state: dict) -> "Module":
        """Copy values in from a state dict (ours or a torch.nn model's, any backend).

        The values are copied: training afterwards never changes the caller's arrays.

        Raises
        ------
        ValueError
            When keys are missing or unexpected, or a shape differs.
        """
        own = self.state_dict()
        missing, extra = set(own) - set(state), set(state) - set(own)
        if missing or extra:
            raise ValueError(f"state_dict keys do not match: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for key, value in state.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(f"state_dict[{key!r}] has shape {tuple(value.shape)}, "
                                 f"expected {tuple(own[key].shape)}")
            moved = (B.asarray(value, own[key]) if B.dtype_name(own[key]) in B.DTYPES
                     else B.to_backend(value, B.backend_of(own[key])))
            self._set_state(key.split("."), B.copy(moved))   # never share memory with the caller's dict
        return self

    def _set_state(self, path, value):
        if len(path) > 1:
            return self._modules[path[0]]._set_state(path[1:], value)
        if path[0] in self._params:
            self._params[path[0]].data = value
        else:
            self._buffers[path[0]] = value

    def to(self, backend: str | B.Backend) -> "Module":
        """Move every parameter and buffer to ``backend`` (name or Backend), in place."""
        b = B.get_backend(backend) if isinstance(backend, str) else backend
        for m in self.modules():
            for p in m._params.values():
                p.data = B.to_backend(p.data, b)
                p.grad = None
                p.mask = None if p.mask is None else B.to_backend(p.mask, b)
            for name, buf in m._buffers.items():
                m._buffers[name] = B.to_backend(buf, b)
        return self

    # -- computation
    def forward(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: Any, need_dx: bool = True) -> Any:  # pragma: no cover - abstract
        """Write the parameters' gradients; return the input's gradient (None if not ``need_dx``)."""
        raise NotImplementedError

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        inner = "\n".join(f"  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}(\n{inner}\n)"


def _uniform_init(shape: tuple, bound: float, backend: B.Backend) -> Any:
    """U(-bound, bound) from the project's generator: torch's default for Linear and Conv2d."""
    return B.uniform(-bound, bound, shape, backend=backend)


class Linear(Module):
    r""":math:`y = x W^\top + b` with W (out_features, in_features), initialized as torch.nn.Linear:
    :math:`W, b \sim U(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend=None):
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        b = B.active() if backend is None else B.get_backend(backend)
        bound = 1.0 / math.sqrt(in_features)
        self._params["weight"] = Parameter(_uniform_init((out_features, in_features), bound, b))
        if bias:
            self._params["bias"] = Parameter(_uniform_init((out_features,), bound, b))
        self._cache = None

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) expects x of shape "
                             f"(N, {self.in_features}), got {tuple(x.shape)}")
        _check_dtype(self, x, self._params["weight"].data)
        bias = self._params.get("bias")
        out, self._cache = F.linear_forward(x, self._params["weight"].data, bias and bias.data)
        return out

    def backward(self, dout, need_dx=True):
        dx, dw, db = F.linear_backward(dout, self._cache, need_dx)
        self._params["weight"].grad = dw
        if db is not None:
            self._params["bias"].grad = db
        return dx

    def macs(self, in_shape, out_shape):
        r""":math:`N \cdot d_{in} \cdot d_{out}` (N: all axes of the output but the last)."""
        return math.prod(tuple(out_shape)[:-1]) * self.in_features * self.out_features

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={'bias' in self._params}"


class Conv2d(Module):
    """2-D convolution (im2col), weight (out_channels, in_channels, k, k), torch's initialization."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, backend=None):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.kernel_size = check_int("kernel_size", kernel_size)
        self.stride = check_int("stride", stride)
        self.padding = check_int("padding", padding, low=0)
        b = B.active() if backend is None else B.get_backend(backend)
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self._params["weight"] = Parameter(_uniform_init(shape, bound, b))
        if bias:
            self._params["bias"] = Parameter(_uniform_init((out_channels,), bound, b))
        self._cache = None

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects x of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        k, p = self.kernel_size, self.padding
        if x.shape[2] + 2 * p < k or x.shape[3] + 2 * p < k:
            raise ValueError(f"input {tuple(x.shape[2:])} with padding {p} is smaller than kernel_size {k}")
        _check_dtype(self, x, self._params["weight"].data)
        bias = self._params.get("bias")
        out, self._cache = F.conv2d_forward(x, self._params["weight"].data, bias and bias.data,
                                            self.stride, self.padding)
        return out

    def backward(self, dout, need_dx=True):
        dx, dw, db = F.conv2d_backward(dout, self._cache, need_dx)
        self._params["weight"].grad = dw
        if db is not None:
            self._params["bias"].grad = db
        return dx

    def macs(self, in_shape, out_shape):
        r""":math:`N C_{out} H_o W_o \cdot (C_{in}/g)\, k_h k_w` (g: groups; each output reads
        only its group's input channels)."""
        kh, kw = (self.kernel_size, self.kernel_size) if isinstance(self.kernel_size, int) else self.kernel_size
        groups = getattr(self, "groups", 1)
        return math.prod(tuple(out_shape)) * (self.in_channels // groups) * kh * kw

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class _Pool2d(Module):
    _forward = _backward = None

    def __init__(self, kernel_size: int, stride: int | None = None):
        super().__init__()
        self.kernel_size = check_int("kernel_size", kernel_size)
        self.stride = kernel_size if stride is None else check_int("stride", stride)
        self._cache = None

    def forward(self, x):
        if x.ndim != 4 or x.shape[2] < self.kernel_size or x.shape[3] < self.kernel_size:
            raise ValueError(f"{type(self).__name__}(kernel_size={self.kernel_size}) expects x of shape "
                             f"(N, C, H, W) with H, W >= {self.kernel_size}, got {tuple(x.shape)}")
        out, self._cache = type(self)._forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, dout, need_dx=True):
        return type(self)._backward(dout, self._cache)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Max pooling over k×k windows (stride defaults to k), no padding."""
    _forward = staticmethod(F.maxpool2d_forward)
    _backward = staticmethod(F.maxpool2d_backward)


class AvgPool2d(_Pool2d):
    """Average pooling over k×k windows (stride defaults to k), no padding."""
    _forward = staticmethod(F.avgpool2d_forward)
    _backward = staticmethod(F.avgpool2d_backward)


class ReLU(Module):
    """Elementwise max(x, 0)."""

    def forward(self, x):
        out, self._cache = F.relu_forward(x)
        return out

    def backward(self, dout, need_dx=True):
        return F.relu_backward(dout, self._cache)


class _BatchNorm(Module):
    _ndim = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, backend=None):
        super().__init__()
        self.num_features = check_int("num_features", num_features)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        b = B.active() if backend is None else B.get_backend(backend)
        self._params["weight"] = Parameter(b.asarray([1.0] * num_features))
        self._params["bias"] = Parameter(b.zeros((num_features,)))
        self._buffers["running_mean"] = b.zeros((num_features,))
        self._buffers["running_var"] = b.asarray([1.0] * num_features)
        self._buffers["num_batches_tracked"] = b.asarray(0, dtype="int64")
        self._cache = None

    def forward(self, x):
        if x.ndim != self._ndim or x.shape[1] != self.num_features:
            want = "(N, C)" if self._ndim == 2 else "(N, C, H, W)"
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects x of shape {want} "
                             f"with C = {self.num_features}, got {tuple(x.shape)}")
        _check_dtype(self, x, self._params["weight"].data)
        if self.training:
            self._buffers["num_batches_tracked"] = self._buffers["num_batches_tracked"] + 1
        out, self._cache = F.batchnorm_forward(
            x, self._params["weight"].data, self._params["bias"].data, self._buffers["running_mean"],
            self._buffers["running_var"], self.training, self.momentum, self.eps)
        return out

    def backward(self, dout, need_dx=True):
        dx, dgamma, dbeta = F.batchnorm_backward(dout, self._cache)
        self._params["weight"].grad, self._params["bias"].grad = dgamma, dbeta
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) features; running statistics kept as torch keeps them."""
    _ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) images, per channel; running statistics as torch keeps them."""
    _ndim = 4


class Dropout(Module):
    """Inverted dropout with drop probability p in [0, 1)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"p must be a float in [0, 1), got {p!r}")
        self.p = float(p)
        self._cache = None

    def forward(self, x):
        out, self._cache = F.dropout_forward(x, self.p, self.training)
        return out

    def backward(self, dout, need_dx=True):
        return F.dropout_backward(dout, self._cache)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1·d2·...)."""

    def forward(self, x):
        self._shape = tuple(x.shape)
        return B.namespace(x).reshape(x, (x.shape[0], -1))

    def backward(self, dout, need_dx=True):
        return B.namespace(dout).reshape(dout, self._shape)


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... as in torch.nn.Sequential."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} must be a Module, got {type(layer).__name__}")
            self._modules[str(i)] = layer

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer.forward(x)
        return x

    def backward(self, dout, need_dx=True):
        """Backpropagate through the layers in reverse order.

        With ``need_dx=False`` (the network's input needs no gradient, as when training)
        the layers before the first one with parameters are skipped and that layer does not
        compute its input gradient.
        """
        layers = list(self._modules.values())
        first = 0 if need_dx else next((i for i, m in enumerate(layers) if m.parameters()), len(layers))
        for i in range(len(layers) - 1, first - 1, -1):
            dout = layers[i].backward(dout, need_dx=need_dx or i > first)
        return dout if need_dx else None


class CrossEntropyLoss:
    """Mean softmax cross-entropy of logits (N, K) against integer labels (N,).

    ``loss = crit(logits, labels)`` then ``dlogits = crit.backward()``.
    """

    def __call__(self, logits: Any, labels: Any) -> Any:
        if B.dtype_name(labels).startswith("float"):
            raise TypeError(f"labels must be integer class indices, got dtype {B.dtype_name(labels)}")
        loss, self._cache = F.cross_entropy_forward(logits, labels)
        return loss

    def backward(self, dloss: float = 1.0) -> Any:
        return F.cross_entropy_backward(self._cache, dloss)
