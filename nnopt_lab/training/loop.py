"""The training loop every chapter reuses: seeded mini-batches, history, callbacks, tqdm.

>>> history = fit(model, (X_train, y_train), epochs=10, batch_size=64,
...               optimizer=SGD(model, lr=0.1), val=(X_val, y_val))     # doctest: +SKIP

Callbacks hook in at the begin/end of training, of each epoch and after each step; they
receive the :class:`TrainState` (model, optimizer, epoch, step, history, last batch loss)
and may set ``state.stop = True``. Pruning schedules and learning-rate schedules use them.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from tqdm.auto import tqdm

from .. import backend as B
from ..validation import check_int
from ..nn.layers import CrossEntropyLoss, Module
from .optim import SGD, Optimizer

__all__ = ["check_xy", "batches", "fit", "evaluate", "predict", "accuracy", "Callback", "TrainState", "History"]


def check_xy(name: str, data: Any) -> tuple[Any, Any]:
    """Validate a data pair ``(X, y)``: one backend, the same number of samples; return it."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (X, y), got {type(data).__name__}")
    x, y = data
    B.namespace(x, y)  # raises on a numpy/torch mix
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: X has {x.shape[0]} samples but y has {y.shape[0]}")
    return x, y


def batches(x: Any, y: Any, batch_size: int, shuffle: bool = True, drop_last: bool = False,
            generator=None) -> Iterator[tuple[Any, Any]]:
    """Yield (X_batch, y_batch) pairs; the order comes from the project's seeded generator.

    Parameters
    ----------
    x : (N, ...) ; y : (N,)
    batch_size : int >= 1
    shuffle : bool
        Draw a fresh permutation from ``generator`` (default :func:`nnopt_lab.backend.rng`).
    drop_last : bool
        Skip the last batch when it is smaller than ``batch_size``.
    """
    check_int("batch_size", batch_size)
    n = x.shape[0]
    if shuffle:
        order = B.to_backend(B.permutation(n, generator), B.backend_of(x), dtype="int64")
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if shuffle:
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]
        else:
            yield x[start:start + batch_size], y[start:start + batch_size]


def accuracy(logits: Any, labels: Any) -> float:
    """Fraction of rows whose largest logit is the label."""
    xp = B.namespace(logits)
    return B.float_of(xp.mean(xp.astype(xp.argmax(logits, axis=-1) == labels, logits.dtype)))


def predict(model: Module, x: Any, batch_size: int = 1024) -> Any:
    """Model outputs for ``x`` in evaluation mode, computed in batches (mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        outs = [model.forward(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return B.namespace(outs[0]).concat(outs, axis=0)


def evaluate(model: Module, data: tuple, loss_fn=None, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``data = (X, y)`` in evaluation mode."""
    x, y = check_xy("data", data)
    logits = predict(model, x, batch_size)
    loss = (loss_fn or CrossEntropyLoss())(logits, y)
    return B.float_of(loss), accuracy(logits, y)


class History(dict):
    """Lists per epoch: ``loss``, ``acc`` (training, averaged over the epoch's batches),
    ``val_loss``, ``val_acc`` (when validation data is given), ``lr`` and ``seconds``."""

    def __init__(self):
        super().__init__(loss=[], acc=[], val_loss=[], val_acc=[], lr=[], seconds=[])

    def last(self) -> dict:
        return {k: v[-1] for k, v in self.items() if v}


@dataclass
class TrainState:
    """What callbacks see and may change."""

    model: Module
    optimizer: Optimizer
    history: History
    epochs: int
    epoch: int = 0
    step: int = 0
    batch_loss: Any = None
    stop: bool = False
    extra: dict = field(default_factory=dict)


class Callback:
    """Override any of these hooks; each receives the :class:`TrainState`."""

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


def train_step(model: Module, loss_fn, optimizer: Optimizer, xb: Any, yb: Any):
    """One forward, backward and update; returns (loss, logits) as arrays (no GPU sync)."""
    logits = model.forward(xb)
    loss = loss_fn(logits, yb)
    model.backward(loss_fn.backward(), need_dx=False)     # the data needs no gradient
    optimizer.step()
    return loss, logits


def fit(model: Module, train: tuple, *, epochs: int, batch_size: int = 64,
        optimizer: Optimizer | None = None, lr: float = 0.1, loss_fn=None, val: tuple | None = None,
        seed: int | None = None, callbacks=(), progress: bool = True, drop_last: bool = False,
        augment=None, desc: str = "train") -> History:
    """Train ``model`` on ``train = (X, y)`` with mini-batches; return the per-epoch :class:`History`.

    Parameters
    ----------
    model : Module
    train : (X (N, ...), y (N,) int)
    epochs : int >= 1
    batch_size : int >= 1
    optimizer : Optimizer, optional
        Default ``SGD(model, lr)``.
    val : (X, y), optional
        Evaluated after every epoch.
    seed : int, optional
        Reseeds the project's generator first, so that data order and dropout masks repeat.
    callbacks : sequence of Callback
    progress : bool
        Show a tqdm progress bar over epochs.
    augment : callable, optional
        Applied to every training batch ``X`` before the forward pass (data augmentation,
        chapter 2.2); it draws its randomness from the project's generator.
    """
    x, y = check_xy("train", train)
    if val is not None:
        check_xy("val", val)
    check_int("epochs", epochs)
    if seed is not None:
        B.seed(seed)
    optimizer = optimizer or SGD(model, lr=lr)
    loss_fn = loss_fn or CrossEntropyLoss()
    xp = B.namespace(x)
    state = TrainState(model, optimizer, History(), epochs)
    for cb in callbacks:
        cb.on_train_begin(state)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        state.epoch = epoch
        model.train()
        for cb in callbacks:
            cb.on_epoch_begin(state)
        t0, total_loss, correct, seen = time.perf_counter(), 0.0, 0.0, 0
        for xb, yb in batches(x, y, batch_size, shuffle=True, drop_last=drop_last):
            if augment is not None:
                xb = augment(xb)
            loss, logits = train_step(model, loss_fn, optimizer, xb, yb)
            total_loss = total_loss + loss * xb.shape[0]          # stays on the device
            correct = correct + xp.sum(xp.astype(xp.argmax(logits, axis=-1) == yb, logits.dtype))
            seen += xb.shape[0]
            state.step += 1
            state.batch_loss = loss
            for cb in callbacks:
                cb.on_step_end(state)
            if state.stop:
                break
        h = state.history
        h["loss"].append(B.float_of(total_loss) / max(seen, 1))
        h["acc"].append(B.float_of(correct) / max(seen, 1))
        h["lr"].append(optimizer.lr)
        h["seconds"].append(time.perf_counter() - t0)
        if h["loss"][-1] != h["loss"][-1] or h["loss"][-1] in (float("inf"), float("-inf")):
            raise FloatingPointError(f"training loss became {h['loss'][-1]} in epoch {epoch}; "
                                     f"lower the learning rate (lr={optimizer.lr})")
        if val is not None:
            vl, va = evaluate(model, val, loss_fn)
            h["val_loss"].append(vl)
            h["val_acc"].append(va)
        bar.set_postfix({k: round(v, 4) for k, v in h.last().items() if k != "seconds"})
        for cb in callbacks:
            cb.on_epoch_end(state)
        if state.stop:
            break
    for cb in callbacks:
        cb.on_train_end(state)
    return state.history
