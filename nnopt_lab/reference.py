"""The production implementations nnopt_lab is checked against (torch.nn, torch.optim).

This is the one module, with :mod:`nnopt_lab.backend`, that imports torch directly: it is
*not* technique code. Tests, the notebooks' check cells and the benchmarks use it to build
the torch.nn twin of one of our models and to train it the same way.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

from typing import Any

import torch

from . import backend as B
from .nn import layers as L
from .training.loop import batches

__all__ = ["torch_twin", "torch_module", "train_torch_twin"]


def torch_module(layer: L.Module) -> torch.nn.Module:
    """The torch.nn layer of the same kind and shape as one of ours (weights not copied)."""
    if isinstance(layer, L.Sequential):
        return torch.nn.Sequential(*[torch_module(m) for m in layer])
    if isinstance(layer, L.Linear):
        return torch.nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer._params)
    if isinstance(layer, L.Conv2d):
        return torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                               layer.padding, bias="bias" in layer._params)
    if isinstance(layer, L.BatchNorm1d):
        return torch.nn.BatchNorm1d(layer.num_features, layer.eps, layer.momentum)
    if isinstance(layer, L.BatchNorm2d):
        return torch.nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
    simple = {L.ReLU: torch.nn.ReLU, L.Flatten: torch.nn.Flatten}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, L.MaxPool2d):
        return torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, L.AvgPool2d):
        return torch.nn.AvgPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, L.Dropout):
        return torch.nn.Dropout(layer.p)
    raise TypeError(f"no torch.nn twin for {type(layer).__name__}")


def torch_twin(model: L.Module, dtype: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """A torch.nn model of the same shape as ``model``, holding a copy of its weights and buffers."""
    dtype = dtype or B.dtype_name(next(iter(model.state_dict().values())))
    twin = torch_module(model).to(device=device, dtype=getattr(torch, dtype))  # before loading:
    state = {k: torch.as_tensor(B.to_numpy(v)) for k, v in model.state_dict().items()}  # no rounding
    twin.load_state_dict(state)
    return twin.train(model.training)


def train_torch_twin(twin: torch.nn.Module, train: tuple, *, epochs: int, batch_size: int, lr: float,
                     seed: int) -> list[float]:
    """Train a torch.nn model with torch.optim.SGD and autograd on the SAME batches, in the same
    order, as ``nnopt_lab.training.fit(..., seed=seed)`` draws. Returns the mean loss per epoch."""
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
