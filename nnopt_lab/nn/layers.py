"""Layers with parameters, gradients and state, built on :mod:`nnopt_lab.nn.functional`.

A :class:`Module` is torch-shaped (``named_parameters``, ``state_dict`` with the same keys
and layouts as ``torch.nn``, ``train``/``eval``) but does backpropagation by hand:
``forward(x)`` remembers what it needs, ``backward(dout)`` writes ``param.grad`` for each of
its parameters and returns the gradient with respect to its input.

Unlike torch, ``backward`` *overwrites* ``param.grad`` (no accumulation), so there is no
need to zero gradients between steps.

Pruning masks belong to the :class:`Parameter` (``p.mask``, ``p.apply_mask()``,
``p.masked(g)``); they travel in ``state_dict`` under torch.nn.utils.prune's key
``<name>_mask``.

Each layer reports its own cost (:meth:`Module.macs`, :meth:`Module.parameter_bytes`), so
that :mod:`nnopt_lab.measure` needs no list of layer types.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Iterator

from .. import backend as B
from ..validation import as_int, check_array, check_bool, check_int, check_number, check_probability, check_shape
from . import functional as F

__all__ = ["Parameter", "Module", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU",
           "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "Sequential", "CrossEntropyLoss",
           "check_layer_input", "check_layer_dtype"]

MASK_SUFFIX = "_mask"   # torch.nn.utils.prune's buffer name: "weight" -> "weight_mask"
ORIG_SUFFIX = "_orig"   # ... and its parameter holding the unpruned values: "weight_orig"


def _count_nonzero(x: Any) -> int:
    """Number of nonzero entries (one sync on a GPU)."""
    return int(B.namespace(x).count_nonzero(x))


def check_layer_dtype(layer: "Module", x: Any, weight: Any) -> None:
    """A layer's input must be on its weights' backend and device, with their float dtype.

    numpy would silently upcast a float32 input against float64 weights and torch refuses it
    with a message that names neither: this says which layer, what it got and how to move it.
    Used by every layer with weights (here and :class:`nnopt_lab.inference.sparse.SparseLinear`).

    Parameters
    ----------
    layer : Module, named in the message (``type(layer).__name__``)
    x : array, the layer's input
    weight : array, any of the layer's parameters or stored weights

    Raises
    ------
    TypeError
        When ``x`` or ``weight`` is not an array, or ``x`` is on another backend / device or
        has another dtype than ``weight``.

    See: chapters/01_why_optimize.ipynb
    """
    if (getattr(x, "dtype", None) == getattr(weight, "dtype", object())
            and (not B.is_torch(x) or x.device == weight.device)):
        return                                          # the common case, quickly (numpy and torch dtypes differ)
    check_array("x", x)
    check_array("weight", weight)
    if not B.same_kind(x, weight):
        raise TypeError(f"{type(layer).__name__} got x on {B.backend_of(x).name} ({B.device_of(x)}) but its "
                        f"parameters (weight) are on {B.backend_of(weight).name} ({B.device_of(weight)}); move x with "
                        f"nnopt_lab.backend.to_backend(x, backend) or the model with model.to(...)")
    if x.dtype != weight.dtype:
        raise TypeError(f"{type(layer).__name__} got x of dtype {B.dtype_name(x)} but its parameters (weight) are "
                        f"{B.dtype_name(weight)}; convert x with nnopt_lab.backend.to_backend(x, backend, "
                        f"dtype={B.dtype_name(weight)!r}) or move the model with model.to(...)")


def check_layer_input(layer: "Module", x: Any) -> None:
    """A layer's input ``x`` must be an array (numpy or torch); the message names the layer and ``x``.

    Parameters
    ----------
    layer : Module, named in the message (``type(layer).__name__``)
    x : the layer's input

    Raises
    ------
    TypeError
        When ``x`` is neither a numpy array nor a torch tensor.

    See: chapters/01_why_optimize.ipynb
    """
    try:
        B.namespace(x)
    except TypeError:
        raise TypeError(f"{type(layer).__name__} expects x to be a numpy array or torch tensor, "
                        f"got {type(x).__name__}") from None


# ----------------------------------------------------------------------------- Parameter
_REAL_KINDS = ("bool", "int", "uint", "float", "bfloat")


def _checked_mask(value: Any, data: Any, name: str = "mask") -> Any:
    """``value`` as a mask for ``data``: 0s and 1s of its shape, on its backend and dtype (a copy)."""
    xp = B.namespace(check_array(name, value))
    if not B.dtype_name(value).startswith(_REAL_KINDS):
        raise TypeError(f"{name} must be an array of 0s and 1s (bool, integer or float), got dtype "
                        f"{B.dtype_name(value)}")
    if tuple(value.shape) != tuple(data.shape):
        raise ValueError(f"{name} must have the parameter's shape {tuple(data.shape)}, got {tuple(value.shape)}")
    if B.dtype_name(value) != "bool":
        binary = (value == 0) | (value == 1)
        if not bool(xp.all(binary)):                       # one device sync; masks are set rarely
            bad = xp.reshape(value, (-1,))[xp.reshape(~binary, (-1,))]
            raise ValueError(f"{name} must hold only 0s and 1s, got {int(bad.shape[0])} other values "
                             f"such as {float(bad[0])!r}")
    return B.copy(B.to_backend(value, B.backend_of(data), dtype=B.dtype_name(data)))


class Parameter:
    """A trainable array with its gradient and, once pruned, its mask.

    Attributes
    ----------
    data : array
        The values (updated in place by optimizers).
    grad : array or None
        Written by the owning module's ``backward``.
    requires_grad : bool
        False freezes the parameter: optimizers skip it.
    mask : array or None
        Same shape as ``data``, 1 where the weight lives and 0 where it was pruned. Setting
        it checks it (``ValueError`` for another shape or values other than 0/1, NaN
        included) and stores a copy on ``data``'s backend and dtype; setting it does not
        change ``data`` -- call :meth:`apply_mask`. Optimizers keep pruned weights at
        exactly zero through :meth:`masked` and :meth:`apply_mask`.

    See: chapters/01_why_optimize.ipynb
    """

    __slots__ = ("data", "grad", "requires_grad", "_mask")

    def __init__(self, data: Any):
        self.data = data
        self.grad = None
        self.requires_grad = True
        self._mask = None

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def mask(self) -> Any:
        return self._mask

    @mask.setter
    def mask(self, value: Any) -> None:
        self._mask = None if value is None else _checked_mask(value, self.data)

    def apply_mask(self) -> None:
        """Zero the pruned weights in place: ``data *= mask`` (nothing without a mask)."""
        if self._mask is not None:
            self._check_mask_fits(self.data)
            self.data *= self._mask

    def masked(self, array: Any) -> Any:
        """``array * mask`` (a new array), or ``array`` itself when there is no mask (or it is None).

        For gradients and optimizer state: ``p.masked(p.grad)`` is the gradient a pruned
        weight sees.
        """
        if self._mask is None or array is None:
            return array
        self._check_mask_fits(array)
        return array * self._mask

    def _check_mask_fits(self, array: Any) -> None:
        """A mask of another shape would broadcast silently (data replaced after the mask was set)."""
        if array.shape != self._mask.shape:
            raise ValueError(f"the mask has shape {tuple(self._mask.shape)} but the array has {tuple(array.shape)}; "
                             f"set p.mask again after changing the parameter's shape")

    def __repr__(self) -> str:
        masked = "" if self._mask is None else ", masked"
        return f"Parameter(shape={self.shape}, dtype={B.dtype_name(self.data)}{masked})"


# ----------------------------------------------------------------------------- Module
class Module:
    """Base class: parameters, buffers, sub-modules, train/eval, state_dict, cost.

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self):
        self._params: "OrderedDict[str, Parameter]" = OrderedDict()
        self._buffers: "OrderedDict[str, Any]" = OrderedDict()
        self._modules: "OrderedDict[str, Module]" = OrderedDict()
        self.training = True
        self._cache = None          # what forward saved for backward

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
        mode = check_bool("mode", mode)
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
    def state_dict(self, keep_masks: bool = True) -> "OrderedDict[str, Any]":
        """Parameters and buffers by torch's names, in torch's order, and the pruning masks.

        Each masked parameter adds ``<name>_mask`` (torch.nn.utils.prune's buffer name,
        e.g. ``"0.weight_mask"``) after the module's parameters and buffers. The arrays are
        the model's own (not copies).

        Parameters
        ----------
        keep_masks : bool
            False leaves the masks out: a plain dict that loads into an unpruned torch.nn
            model (``torch_module.load_state_dict(model.state_dict(keep_masks=False))``).

        See: chapters/01_why_optimize.ipynb
        """
        keep_masks = check_bool("keep_masks", keep_masks)
        out: "OrderedDict[str, Any]" = OrderedDict()
        self._state_into(out, "", keep_masks)
        return out

    def _state_into(self, out, prefix, keep_masks):
        for name, p in self._params.items():
            out[prefix + name] = p.data
        for name, b in self._buffers.items():
            out[prefix + name] = b
        if keep_masks:
            for name, p in self._params.items():
                if p.mask is not None:
                    out[prefix + name + MASK_SUFFIX] = p.mask
        for mname, m in self._modules.items():
            m._state_into(out, prefix + mname + ".", keep_masks)

    def load_state_dict(self, state: Mapping) -> "Module":
        """Copy values in from a state dict (ours or a torch.nn model's, any backend).

        The values are copied: training afterwards never changes the caller's arrays. Each
        value takes the dtype and backend of the array it replaces.

        Masks: a key ``<name>_mask`` sets parameter ``<name>``'s mask (also on a model that
        had none) and zeroes the pruned weights. A dict of a model pruned by
        torch.nn.utils.prune holds ``<name>_orig`` and ``<name>_mask`` instead of
        ``<name>``; it loads as ``<name> = <name>_orig · <name>_mask``, which is torch's
        pruned weight. A model with masks needs its ``_mask`` keys (missing ones are an
        error, as in torch).

        Raises
        ------
        TypeError
            When ``state`` is not a mapping of arrays.
        ValueError
            When keys are missing or unexpected, a shape differs, or a mask holds values
            other than 0 and 1.

        See: chapters/01_why_optimize.ipynb
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict of arrays (a state_dict), got {type(state).__name__}")
        state = _fold_torch_pruning(state)
        own = self.state_dict()
        params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
        masks = {k for k in state if k.endswith(MASK_SUFFIX) and k[:-len(MASK_SUFFIX)] in params
                 and k not in params and k not in buffers}
        missing, extra = set(own) - set(state), set(state) - set(own) - masks
        if missing or extra:
            raise ValueError(f"state_dict keys do not match: missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        for key, value in state.items():
            if key in masks:
                continue
            _check_state_value(key, value, own[key])
            moved = B.to_backend(value, B.backend_of(own[key]), dtype=B.dtype_name(own[key]))
            self._set_state(key.split("."), B.copy(moved))   # never share memory with the caller's dict
        for key in masks:                                      # after the data: a mask follows its data
            p = params[key[:-len(MASK_SUFFIX)]]
            try:
                p.mask = state[key]
            except (TypeError, ValueError) as error:
                raise type(error)(f"state_dict[{key!r}]: {error}") from None
            p.apply_mask()
        return self

    def _set_state(self, path, value):
        if len(path) > 1:
            return self._modules[path[0]]._set_state(path[1:], value)
        if path[0] in self._params:
            self._params[path[0]].data = value
        else:
            self._buffers[path[0]] = value

    def to(self, backend: str | B.Backend) -> "Module":
        """Move every parameter, buffer and mask to ``backend`` (name or Backend), in place.

        Gradients are dropped; masks follow their parameter's new backend and dtype.

        See: chapters/01_why_optimize.ipynb
        """
        b = B.get_backend(backend) if isinstance(backend, str) else backend
        for m in self.modules():
            for p in m._params.values():
                p.data = B.to_backend(p.data, b)
                p.grad = None
                p.mask = p.mask          # re-checked and moved next to the new data
            for name, buf in m._buffers.items():
                m._buffers[name] = B.to_backend(buf, b)
        return self

    # -- computation
    def forward(self, x: Any) -> Any:  # pragma: no cover - abstract
        """Compute the output and save what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, dout: Any, need_dx: bool = True) -> Any:  # pragma: no cover - abstract
        """Write the parameters' gradients for the last :meth:`forward`; return the input's gradient.

        Parameters
        ----------
        dout : array
            Gradient of the loss with respect to the last forward's output (its shape).
        need_dx : bool
            False says the caller does not need the input's gradient: layers where it costs
            a matrix product (:class:`Linear`, :class:`Conv2d`) then skip it and return
            None; cheap layers may return it anyway. :class:`Sequential` returns None.
            The parameters' gradients are the same either way.

        Raises
        ------
        RuntimeError
            When called before :meth:`forward`.
        """
        raise NotImplementedError

    def _saved(self) -> Any:
        """The cache of the last forward; a clear error when there was none."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward: "
                               f"call forward before backward")
        return self._cache

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        inner = "\n".join(f"  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}(\n{inner}\n)"


def _fold_torch_pruning(state: Mapping) -> dict:
    """torch.nn.utils.prune's ``<name>_orig`` + ``<name>_mask`` -> ``<name> = orig · mask`` (+ the mask)."""
    state = dict(state)
    for key in [k for k in state if k.endswith(ORIG_SUFFIX)]:
        base = key[:-len(ORIG_SUFFIX)]
        if base not in state and base + MASK_SUFFIX in state:
            orig, mask = state.pop(key), state[base + MASK_SUFFIX]
            _check_state_value(key, orig, None)
            _check_state_value(base + MASK_SUFFIX, mask, orig)
            state[base] = orig * B.asarray(mask, orig)
    return state


def _check_state_value(key: str, value: Any, like: Any) -> None:
    """A state-dict value must be an array (of ``like``'s shape)."""
    try:
        B.namespace(value)
    except TypeError:
        raise TypeError(f"state_dict[{key!r}] must be a numpy array or torch tensor, "
                        f"got {type(value).__name__}") from None
    if like is not None and tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"state_dict[{key!r}] has shape {tuple(value.shape)}, expected {tuple(like.shape)}")
    kind = B.dtype_name(value)
    if not kind.startswith(_REAL_KINDS):
        raise TypeError(f"state_dict[{key!r}] must hold real numbers, got dtype {kind}")
    if like is not None and B.dtype_name(like).startswith(("int", "uint")) and not kind.startswith(("int", "uint")):
        raise TypeError(f"state_dict[{key!r}] must be an integer array like the {B.dtype_name(like)} it "
                        f"replaces, got dtype {kind} (a float would be truncated)")


def _check_count(what: str, count: int) -> None:
    """A layer's parameter count must fit in memory at all (a clear error before allocating)."""
    if count > F.MAX_ELEMENTS:
        raise ValueError(f"{what} = {count} parameters is more than {F.MAX_ELEMENTS} (2**40): too large to allocate")


def _uniform_init(shape: tuple, bound: float, backend: B.Backend) -> Any:
    """U(-bound, bound) from the project's generator: torch's default for Linear and Conv2d."""
    return B.uniform(-bound, bound, shape, backend=backend)


# ----------------------------------------------------------------------------- layers
class Linear(Module):
    r""":math:`y = x W^\top + b` with W (out_features, in_features), initialized as torch.nn.Linear:
    :math:`W, b \sim U(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})`.

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend=None):
        super().__init__()
        self.in_features = check_int("in_features", in_features)
        self.out_features = check_int("out_features", out_features)
        _check_count("in_features × out_features", self.in_features * self.out_features)
        bias = check_bool("bias", bias)
        b = B.active() if backend is None else B.get_backend(backend)
        bound = 1.0 / math.sqrt(self.in_features)
        self._params["weight"] = Parameter(_uniform_init((self.out_features, self.in_features), bound, b))
        if bias:
            self._params["bias"] = Parameter(_uniform_init((self.out_features,), bound, b))

    def forward(self, x):
        bias = self._params.get("bias")
        try:                                  # linear_forward checks x; on a refusal, say it for the layer
            out, self._cache = F.linear_forward(x, self._params["weight"].data, bias and bias.data)
        except (TypeError, ValueError):
            self._explain(x)
            raise
        return out

    def _explain(self, x):
        """Raise the layer's own message for an input it cannot take."""
        check_layer_input(self, x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) expects x of shape "
                             f"(N, {self.in_features}), got {tuple(x.shape)}")
        check_layer_dtype(self, x, self._params["weight"].data)

    def backward(self, dout, need_dx=True):
        dx, dw, db = F.linear_backward(dout, self._saved(), need_dx)
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
    r"""2-D convolution by im2col (:func:`nnopt_lab.nn.functional.conv2d_forward`), as torch.nn.Conv2d.

    Parameters
    ----------
    in_channels, out_channels : int >= 1, both divisible by ``groups``
    kernel_size, stride, dilation : int >= 1 or pair
    padding : int >= 0 or pair (zeros on both sides)
    groups : int >= 1
        Output channels of group g read only input channels of group g; ``groups =
        in_channels`` is a depthwise convolution (with a 1×1 convolution after it: a
        depthwise-separable one).
    bias : bool

    Attributes are stored as torch stores them: ``kernel_size``, ``stride``, ``padding``,
    ``dilation`` as pairs, ``groups`` as an int. The weight is (out_channels,
    in_channels/groups, kh, kw), initialized as torch does:
    :math:`U(-1/\sqrt{f}, 1/\sqrt{f})` with fan-in :math:`f = (C_{in}/g)\,k_h k_w`.

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple, stride: int | tuple = 1,
                 padding: int | tuple = 0, dilation: int | tuple = 1, groups: int = 1, bias: bool = True,
                 backend=None):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.kernel_size = check_shape("kernel_size", kernel_size, length=2, low=1)
        self.stride = check_shape("stride", stride, length=2, low=1)
        self.padding = check_shape("padding", padding, length=2, low=0)
        self.dilation = check_shape("dilation", dilation, length=2, low=1)
        self.groups = check_int("groups", groups, low=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups must divide in_channels ({self.in_channels}) and out_channels "
                             f"({self.out_channels}), got {groups!r}")
        bias = check_bool("bias", bias)
        b = B.active() if backend is None else B.get_backend(backend)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        _check_count("out_channels × in_channels/groups × kernel_size", math.prod(shape))
        bound = 1.0 / math.sqrt(math.prod(shape[1:]))
        self._params["weight"] = Parameter(_uniform_init(shape, bound, b))
        if bias:
            self._params["bias"] = Parameter(_uniform_init((self.out_channels,), bound, b))

    def forward(self, x):
        bias = self._params.get("bias")
        try:                                  # conv2d_forward checks x; on a refusal, say it for the layer
            out, self._cache = F.conv2d_forward(x, self._params["weight"].data, bias and bias.data,
                                                self.stride, self.padding, self.dilation, self.groups)
        except (TypeError, ValueError):
            self._explain(x)
            raise
        return out

    def _explain(self, x):
        """Raise the layer's own message for an input it cannot take."""
        check_layer_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects x of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        check_layer_dtype(self, x, self._params["weight"].data)
        F._output_shape(tuple(x.shape[2:]), self.kernel_size, self.stride, self.padding, self.dilation,
                        "kernel_size")

    def backward(self, dout, need_dx=True):
        dx, dw, db = F.conv2d_backward(dout, self._saved(), need_dx)
        self._params["weight"].grad = dw
        if db is not None:
            self._params["bias"].grad = db
        return dx

    def macs(self, in_shape, out_shape):
        r""":math:`N C_{out} H_o W_o \cdot (C_{in}/g)\, k_h k_w` (g: groups; each output reads
        only its group's input channels)."""
        return math.prod(tuple(out_shape)) * (self.in_channels // self.groups) * math.prod(self.kernel_size)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if "bias" in self._params else ", bias=False")


def _int_or_pair(name: str, value: Any) -> int | tuple[int, int]:
    """An int >= 1 stays an int, a pair becomes a tuple (as torch's pooling layers keep them)."""
    pair = check_shape(name, value, length=2, low=1)
    return pair[0] if as_int(value) is not None else pair


class _Pool2d(Module):
    _forward = _backward = None

    def __init__(self, kernel_size: int | tuple, stride: int | tuple | None = None):
        super().__init__()
        self.kernel_size = _int_or_pair("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _int_or_pair("stride", stride)

    def forward(self, x):
        check_layer_input(self, x)
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__}(kernel_size={self.kernel_size}) expects x of shape "
                             f"(N, C, H, W), got {tuple(x.shape)}")
        pair = lambda v: (v, v) if isinstance(v, int) else v
        F._output_shape(tuple(x.shape[2:]), pair(self.kernel_size), pair(self.stride), (0, 0), (1, 1),
                        "kernel_size")                  # the error in the layer's own words
        out, self._cache = type(self)._forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, dout, need_dx=True):
        return type(self)._backward(dout, self._saved())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Max pooling over kh×kw windows (``kernel_size`` int or pair; stride defaults to it), no padding.

    See: chapters/01_why_optimize.ipynb
    """
    _forward = staticmethod(F.maxpool2d_forward)
    _backward = staticmethod(F.maxpool2d_backward)


class AvgPool2d(_Pool2d):
    """Average pooling over kh×kw windows (``kernel_size`` int or pair; stride defaults to it), no padding.

    See: chapters/01_why_optimize.ipynb
    """
    _forward = staticmethod(F.avgpool2d_forward)
    _backward = staticmethod(F.avgpool2d_backward)


class ReLU(Module):
    """Elementwise max(x, 0).

    See: chapters/01_why_optimize.ipynb
    """

    def forward(self, x):
        check_layer_input(self, x)
        out, self._cache = F.relu_forward(x)
        return out

    def backward(self, dout, need_dx=True):
        return F.relu_backward(dout, self._saved())


class _BatchNorm(Module):
    _ndim = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, backend=None):
        super().__init__()
        self.num_features = check_int("num_features", num_features)
        _check_count("num_features", self.num_features)
        self.eps = check_number("eps", eps, 0.0, low_open=True)
        self.momentum = check_probability("momentum", momentum)
        b = B.active() if backend is None else B.get_backend(backend)
        self._params["weight"] = Parameter(b.zeros((self.num_features,)) + 1.0)
        self._params["bias"] = Parameter(b.zeros((self.num_features,)))
        self._buffers["running_mean"] = b.zeros((self.num_features,))
        self._buffers["running_var"] = b.zeros((self.num_features,)) + 1.0
        self._buffers["num_batches_tracked"] = b.asarray(0, dtype="int64")   # 0-d, as in torch

    def forward(self, x):
        check_layer_input(self, x)
        if x.ndim != self._ndim or x.shape[1] != self.num_features:
            want = "(N, C)" if self._ndim == 2 else "(N, C, H, W)"
            raise ValueError(f"{type(self).__name__}({self.num_features}) expects x of shape {want} "
                             f"with C = {self.num_features}, got {tuple(x.shape)}")
        check_layer_dtype(self, x, self._params["weight"].data)
        out, self._cache = F.batchnorm_forward(
            x, self._params["weight"].data, self._params["bias"].data, self._buffers["running_mean"],
            self._buffers["running_var"], self.training, self.momentum, self.eps)
        if self.training:
            self._buffers["num_batches_tracked"] = self._buffers["num_batches_tracked"] + 1
        return out

    def backward(self, dout, need_dx=True):
        dx, dgamma, dbeta = F.batchnorm_backward(dout, self._saved())
        self._params["weight"].grad, self._params["bias"].grad = dgamma, dbeta
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) features; running statistics kept as torch keeps them.

    See: chapters/01_why_optimize.ipynb
    """
    _ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) images, per channel; running statistics as torch keeps them.

    See: chapters/01_why_optimize.ipynb
    """
    _ndim = 4


class Dropout(Module):
    """Inverted dropout with drop probability p in [0, 1).

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_probability("p", p, high_open=True)

    def forward(self, x):
        check_layer_input(self, x)
        out, self._cache = F.dropout_forward(x, self.p, self.training)
        return out

    def backward(self, dout, need_dx=True):
        return F.dropout_backward(dout, self._saved())

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1·d2·...).

    See: chapters/01_why_optimize.ipynb
    """

    def forward(self, x):
        check_layer_input(self, x)
        if x.ndim < 2:
            raise ValueError(f"Flatten expects x of shape (N, d1, ...), got {tuple(x.shape)}")
        self._cache = tuple(x.shape)
        return B.namespace(x).reshape(x, (x.shape[0], -1))

    def backward(self, dout, need_dx=True):
        shape = self._saved()
        check_layer_input(self, dout)
        if tuple(dout.shape) != (shape[0], math.prod(shape[1:])):
            raise ValueError(f"dout must have the forward output's shape {(shape[0], math.prod(shape[1:]))}, "
                             f"got {tuple(dout.shape)}")
        return B.namespace(dout).reshape(dout, shape)


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... as in torch.nn.Sequential.

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{i}] must be a Module, got {type(layer).__name__}")
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
        self._cache = True
        return x

    def backward(self, dout, need_dx=True):
        """Backpropagate through the layers in reverse order.

        With ``need_dx=False`` (the network's input needs no gradient, as when training)
        the layers before the first one with parameters are skipped, that layer does not
        compute its input gradient, and the result is None.
        """
        self._saved()
        if not (need_dx is True or need_dx is False):
            need_dx = check_bool("need_dx", need_dx)
        layers = list(self._modules.values())
        first = 0 if need_dx else next((i for i, m in enumerate(layers) if m.parameters()), len(layers))
        for i in range(len(layers) - 1, first - 1, -1):
            dout = layers[i].backward(dout, need_dx=need_dx or i > first)
        return dout if need_dx else None


class CrossEntropyLoss:
    """Mean softmax cross-entropy of float logits (N, K) against integer labels (N,) in [0, K).

    ``loss = crit(logits, labels)`` then ``dlogits = crit.backward()``. Integer logits are
    refused (TypeError), labels out of range or of the wrong shape raise ValueError
    (see :func:`nnopt_lab.nn.functional.cross_entropy_forward`).

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self):
        self._cache = None

    def __call__(self, logits: Any, labels: Any) -> Any:
        loss, self._cache = F.cross_entropy_forward(logits, labels)
        return loss

    def backward(self, dloss: float = 1.0) -> Any:
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward was called before the loss: "
                               "call crit(logits, labels) before crit.backward()")
        return F.cross_entropy_backward(self._cache, dloss)
