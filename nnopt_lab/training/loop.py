r"""The training loop every chapter reuses: seeded mini-batches, history, callbacks, tqdm.

>>> history = fit(model, (X_train, y_train), epochs=10, batch_size=64,
...               optimizer=SGD(model, lr=0.1), val=(X_val, y_val))     # doctest: +SKIP

One training step is

.. math:: \text{logits} = f_\theta(x_B),\quad L = \ell(\text{logits}, y_B\,[, x_B]),\quad
          g = \nabla_\theta L,\quad \theta \leftarrow \text{optimizer}(\theta, g)

with hooks where the next chapters need them:

* :class:`Callback` -- ``on_train_begin``, ``on_epoch_begin``, ``on_after_backward`` (between the
  backward pass and the update: the gradients are in ``p.grad``, a pruning callback may mask
  them), ``on_step_end``, ``on_epoch_end``, ``on_train_end``; each receives the
  :class:`TrainState` and may set ``state.stop = True``;
* :class:`BatchLoss` -- a loss that also sees the batch's inputs (a teacher's logits for
  distillation), and whose ``parts`` (the terms of a combined loss) are recorded per epoch;
* ``metrics={"sparsity": fn}`` -- any ``fn(model) -> float`` recorded after each epoch.

Divergence never ends in NaN weights: training stops at the first batch whose loss or gradient
is not finite, *before* that update, records where in ``history.stopped`` and raises
:class:`TrainingDiverged` (a ``FloatingPointError``; ``on_divergence="stop"`` returns the history
with a :class:`DivergenceWarning` instead); a loss that grows more than 50-fold without
overflowing warns once.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm

from .. import backend as B
from ..nn.layers import CrossEntropyLoss, Module
from ..validation import as_float, check_array, check_bool, check_callable, check_choice, check_generator, check_int
from .optim import SGD, Optimizer
from .snapshot import preserved

__all__ = ["check_xy", "batches", "fit", "evaluate", "predict", "accuracy", "train_step", "Callback",
           "TrainState", "History", "BatchLoss", "DivergenceWarning", "TrainingDiverged", "EXPLOSION_FACTOR"]

#: Upper bound of ``epochs`` (a typo such as 10**9 fails at once instead of running for days).
MAX_EPOCHS = 1_000_000

#: ``fit`` warns once when an epoch's mean loss exceeds this multiple of the lowest loss seen
#: (the first batch's, or an earlier epoch's).
EXPLOSION_FACTOR = 50.0


class DivergenceWarning(RuntimeWarning):
    """Training diverged: it stopped at a non-finite loss or gradient, or the loss exploded."""


class TrainingDiverged(FloatingPointError):
    """``fit`` met a non-finite loss or gradient; the model keeps the weights from before that step.

    Attributes
    ----------
    history : History
        The epochs trained so far, with ``history.stopped`` saying where training stopped.
    """

    def __init__(self, message: str, history: "History"):
        super().__init__(message)
        self.history = history


def check_xy(name: str, data: Any) -> tuple[Any, Any]:
    """Validate a data pair ``(X, y)`` passed as the argument ``name``: arrays with at least one axis,
    on one backend, with the same number of samples; return it.

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (X, y), got {type(data).__name__}")
    x, y = data
    _check_same_backend((f"{name}'s X", check_array(f"{name}'s X", x, ndim=range(1, 33))),
                        (f"{name}'s y", check_array(f"{name}'s y", y, ndim=range(1, 33))))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: X has {x.shape[0]} samples but y has {y.shape[0]}")
    return x, y


def batches(x: Any, y: Any, batch_size: int, shuffle: bool = True, drop_last: bool = False,
            generator=None) -> Iterator[tuple[Any, Any]]:
    """Yield (X_batch, y_batch) pairs; the order comes from the project's seeded generator.

    Parameters
    ----------
    x : (N, ...) ; y : (N, ...)
        The same number of rows N, on one backend.
    batch_size : int >= 1
    shuffle : bool
        Draw a fresh permutation from ``generator`` (default :func:`nnopt_lab.backend.rng`).
    drop_last : bool
        Skip the last batch when it is smaller than ``batch_size``.

    See: chapters/01_why_optimize.ipynb
    """
    _check_same_backend(("x", check_array("x", x, ndim=range(1, 33))), ("y", check_array("y", y, ndim=range(1, 33))))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y must have one row per row of x: x has {x.shape[0]} samples but y has {y.shape[0]}")
    batch_size = check_int("batch_size", batch_size)
    check_generator("generator", generator)
    shuffle, drop_last = check_bool("shuffle", shuffle), check_bool("drop_last", drop_last)
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


def _check_same_backend(*named: tuple[str, Any]) -> None:
    """All arrays on one backend (numpy, or torch on one device); the error names them."""
    (first, a), rest = named[0], named[1:]
    for name, b in rest:
        if not B.same_kind(a, b):
            raise TypeError(f"{name} is on {B.backend_of(b).name} but {first} is on {B.backend_of(a).name}: "
                            f"move both to one backend with nnopt_lab.backend.to_backend")


def _check_logits_labels(logits: Any, labels: Any) -> None:
    _check_same_backend(("logits", check_array("logits", logits, ndim=range(1, 33))),
                        ("labels", check_array("labels", labels)))
    if logits.shape[-1] == 0:
        raise ValueError(f"logits must have at least one class (its last axis), got shape {tuple(logits.shape)}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels must have shape {tuple(logits.shape[:-1])} (one class index per row of "
                         f"logits {tuple(logits.shape)}), got {tuple(labels.shape)}")


def accuracy(logits: Any, labels: Any) -> float:
    r"""Fraction of rows whose largest logit is the label: :math:`\frac1N\sum_i [\arg\max_c z_{ic} = y_i]`.

    Parameters
    ----------
    logits : (N, C)
    labels : (N,) int
        Shape (N, 1) or any other shape is refused (it would broadcast to an N × N comparison).

    See: chapters/01_why_optimize.ipynb
    """
    _check_logits_labels(logits, labels)
    if math.prod(labels.shape) == 0:
        raise ValueError("logits and labels are empty: the accuracy of no sample is undefined")
    xp = B.namespace(logits)
    correct = xp.sum(xp.astype(xp.argmax(logits, axis=-1) == labels, xp.int64))
    return B.float_of(correct) / math.prod(labels.shape)


def predict(model: Module, x: Any, batch_size: int = 1024) -> Any:
    """Model outputs for ``x`` (N, ...) in evaluation mode, computed in batches (mode restored after).

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    batch_size = check_int("batch_size", batch_size)
    check_array("x", x, ndim=range(1, 33))
    if x.shape[0] == 0:
        raise ValueError("x has no rows: there is nothing to predict")
    _check_finite("x", x)
    with preserved(model, weights=False, grads=False):
        model.eval()
        outs = [model.forward(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return B.namespace(outs[0]).concat(outs, axis=0)


def evaluate(model: Module, data: tuple, loss_fn=None, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``data = (X, y)`` in evaluation mode.

    A :class:`BatchLoss` is given ``X`` as its inputs.

    See: chapters/01_why_optimize.ipynb
    """
    x, y = check_xy("data", data)
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    logits = predict(model, x, batch_size)
    loss = compute_loss(loss_fn, logits, y, x)
    return B.float_of(loss), accuracy(logits, y)


class History(dict):
    """Lists per epoch: ``loss``, ``acc`` (training, averaged over the epoch's batches),
    ``val_loss``, ``val_acc`` (when validation data is given), ``lr`` and ``seconds``; plus
    ``loss/<part>`` for each part of a combined loss and one list per extra metric.

    Attributes
    ----------
    stopped : str or None
        Why training ended early by itself (``"non-finite loss at epoch 2 step 37"``), else None.

    See: chapters/01_why_optimize.ipynb
    """

    def __init__(self):
        super().__init__(loss=[], acc=[], val_loss=[], val_acc=[], lr=[], seconds=[])
        self.stopped: str | None = None

    def last(self) -> dict:
        return {k: v[-1] for k, v in self.items() if v}


@dataclass
class TrainState:
    """What callbacks see and may change.

    ``step`` counts the updates taken so far; ``batch`` is the current ``(X_batch, y_batch)``
    and ``batch_loss`` its loss (a 0-d array).
    """

    model: Module
    optimizer: Optimizer
    history: History
    epochs: int
    epoch: int = 0
    step: int = 0
    batch: tuple | None = None
    batch_loss: Any = None
    stop: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.model, Module):
            raise TypeError(f"model must be an nnopt_lab Module, got {type(self.model).__name__}")
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be an nnopt_lab Optimizer, got {type(self.optimizer).__name__}")
        if not isinstance(self.history, History):
            raise TypeError(f"history must be a History, got {type(self.history).__name__}")
        self.epochs = check_int("epochs", self.epochs, 0)
        self.epoch, self.step = check_int("epoch", self.epoch, 0), check_int("step", self.step, 0)
        self.stop = check_bool("stop", self.stop)
        if self.batch is not None and not (isinstance(self.batch, tuple) and len(self.batch) == 2):
            raise TypeError(f"batch must be None or a pair (X_batch, y_batch), got {type(self.batch).__name__}")
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra must be a dict, got {type(self.extra).__name__}")


class Callback:
    """Override any of these hooks; each receives the :class:`TrainState`.

    ``on_after_backward`` runs between the backward pass and ``optimizer.step()``: the gradients
    are in each parameter's ``.grad`` and may be changed in place (masked, clipped, logged).

    See: chapters/01_why_optimize.ipynb
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState) -> None: ...
    def on_after_backward(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


class BatchLoss:
    r"""Base class of losses that see the batch's inputs: ``loss(logits, labels, inputs)``.

    :func:`fit`, :func:`evaluate` and :func:`train_step` call a loss with ``batch_aware = True``
    as ``loss_fn(logits, labels, inputs)`` (any other loss as ``loss_fn(logits, labels)``), then
    ``loss_fn.backward()`` for :math:`\partial L / \partial \text{logits}`. A distillation loss
    runs its teacher on ``inputs``; no copy of the loop is needed.

    A combined loss may also set ``self.parts`` -- a dict ``{name: 0-d array or float}`` -- in each
    call; :func:`fit` averages each part over the epoch's batches (weighted by batch size, like the
    loss) into ``history["loss/<name>"]``.

    See: chapters/01_why_optimize.ipynb
    """

    batch_aware = True
    parts: dict = {}

    def __call__(self, logits: Any, labels: Any, inputs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dloss: float = 1.0) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def compute_loss(loss_fn, logits: Any, labels: Any, inputs: Any) -> Any:
    """``loss_fn(logits, labels, inputs)`` for a batch-aware loss, else ``loss_fn(logits, labels)``.

    See: chapters/01_why_optimize.ipynb
    """
    if getattr(loss_fn, "batch_aware", False):
        return loss_fn(logits, labels, inputs)
    return loss_fn(logits, labels)


def train_step(model: Module, loss_fn, optimizer: Optimizer, xb: Any, yb: Any):
    """One forward, backward and update; returns (loss, logits) as arrays (no GPU sync).

    The hot path of the benchmarks: the kinds of the arguments are checked, their values are not
    read (that would sync a GPU), so NaN/inf in ``xb`` comes back as a NaN loss. :func:`fit`
    checks its data once and each step's loss and gradients.

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an nnopt_lab Optimizer, got {type(optimizer).__name__}")
    check_loss_fn(loss_fn)
    check_array("xb", xb, ndim=range(1, 33))
    check_array("yb", yb)
    try:
        logits = model.forward(xb)
    except (TypeError, ValueError) as error:
        raise type(error)(f"xb does not fit the model: {error}") from None
    try:
        loss = compute_loss(loss_fn, logits, yb, xb)
    except (TypeError, ValueError) as error:
        raise type(error)(f"yb (the labels of xb) or loss_fn: {error}") from None
    model.backward(loss_fn.backward(), need_dx=False)     # the data needs no gradient
    optimizer.step()
    return loss, logits


# ----------------------------------------------------------------------------- fit's checks
def _check_finite(name: str, x: Any) -> None:
    """Data must not hold NaN or inf (a missing value would surface later as a 'diverged' loss)."""
    xp = B.namespace(x)
    if B.dtype_name(x).startswith(("float", "complex", "bfloat")) and not B.float_of(xp.all(xp.isfinite(x))):
        bad = int(B.float_of(xp.sum(xp.astype(~xp.isfinite(x), xp.int64))))
        raise ValueError(f"{name} holds {bad} NaN or inf entries; clean the data first (e.g. fill missing values, "
                         f"chapters/02_1_data_cleaning.ipynb)")


def _check_optimizer_for(model: Module, optimizer: Any) -> None:
    """The optimizer must update this model's own Parameter objects (a subset is fine)."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an nnopt_lab Optimizer, got {type(optimizer).__name__}")
    own = {id(p) for p in model.parameters()}
    foreign = [i for i, p in enumerate(optimizer.params) if id(p) not in own]
    if foreign:
        raise ValueError(f"optimizer holds {len(foreign)} of its {len(optimizer.params)} parameters "
                         f"(params[{foreign[0]}], ...) that are not this model's: it was built for another "
                         f"model, so fit would train nothing; build it on this one, e.g. SGD(model, lr=0.1)")


_HOOKS = ("on_train_begin", "on_epoch_begin", "on_after_backward", "on_step_end", "on_epoch_end", "on_train_end")


def _check_callbacks(callbacks: Any) -> list:
    """A list of callbacks, each a :class:`Callback` or an object with at least one of its hooks."""
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a sequence of Callback objects, got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback) and not any(callable(getattr(cb, h, None)) for h in _HOOKS):
            raise TypeError(f"callbacks[{i}] must be a Callback (an object with on_epoch_end, on_step_end, ...), "
                            f"got {type(cb).__name__}: it would never be called")
    return callbacks


def check_loss_fn(loss_fn: Any) -> Any:
    """``loss_fn`` must be a loss object: callable on (logits, labels) and with a ``backward()``.

    See: chapters/01_why_optimize.ipynb
    """
    if not callable(loss_fn) or not callable(getattr(loss_fn, "backward", None)):
        raise TypeError(f"loss_fn must be a loss object: loss_fn(logits, labels) and loss_fn.backward() "
                        f"(e.g. CrossEntropyLoss() or a BatchLoss), got {type(loss_fn).__name__}")
    return loss_fn


def _check_metrics(metrics: Any) -> dict:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict {{name: fn(model) -> float}}, got {type(metrics).__name__}")
    for name, fn in metrics.items():
        if not isinstance(name, str) or name in History() or name.startswith("loss/"):
            raise ValueError(f"metrics names must be new str keys of History (not {sorted(History())} "
                             f"nor 'loss/...'), got {name!r}")
        check_callable(f"metrics[{name!r}]", fn)
    return metrics


def _metric_value(name: str, fn: Callable, model: Module) -> float:
    raw = fn(model)
    value = as_float(B.float_of(raw) if hasattr(raw, "shape") else raw)
    if value is None or math.isnan(value):
        raise ValueError(f"metrics[{name!r}](model) must return a real number, got {raw!r}")
    return value


def _grad_sum(params: list, xp) -> Any:
    """The sum of every gradient entry the optimizer will apply, a 0-d array: NaN or inf when any entry is."""
    total = None
    for p in params:
        if p.grad is not None and p.requires_grad:
            s = xp.sum(p.grad)
            total = s if total is None else total + s
    return total


def _weights_finite(model: Module) -> bool:
    xp = None
    for p in model.parameters():
        xp = xp or B.namespace(p.data)
        if not B.float_of(xp.all(xp.isfinite(p.data))):
            return False
    return True


class _Epoch:
    """Running sums of one epoch: loss and parts (Python floats), correct predictions (on the device)."""

    def __init__(self):
        self.t0, self.loss, self.correct, self.seen, self.parts = time.perf_counter(), 0.0, 0.0, 0, {}
        self.first_loss = math.inf

    def add(self, loss_value: float, logits: Any, yb: Any, parts: dict) -> None:
        xp, n = B.namespace(logits), yb.shape[0]
        if not self.seen:
            self.first_loss = loss_value
        self.loss += loss_value * n
        self.correct = self.correct + xp.sum(xp.astype(xp.argmax(logits, axis=-1) == yb, logits.dtype))
        self.seen += n
        for name, value in parts.items():
            self.parts[name] = self.parts.get(name, 0.0) + value * n      # stays on the device

    def record(self, h: History, lr: float) -> None:
        h["loss"].append(self.loss / self.seen)
        h["acc"].append(B.float_of(self.correct) / self.seen)
        h["lr"].append(lr)
        h["seconds"].append(time.perf_counter() - self.t0)
        for name, total in self.parts.items():
            h.setdefault(f"loss/{name}", []).append(B.float_of(total) / self.seen)


def _call(callbacks, hook: str, state: TrainState) -> None:
    for cb in callbacks:
        method = getattr(cb, hook, None)      # duck-typed callbacks may lack the newer hooks
        if method is not None:
            method(state)


def fit(model: Module, train: tuple, *, epochs: int, batch_size: int = 64,
        optimizer: Optimizer | None = None, lr: float | None = None, loss_fn=None, val: tuple | None = None,
        seed: int | None = None, callbacks=(), progress: bool = True, drop_last: bool = False,
        augment=None, desc: str = "train", metrics: dict | None = None, on_divergence: str = "raise") -> History:
    r"""Train ``model`` on ``train = (X, y)`` with mini-batches; return the per-epoch :class:`History`.

    Each step: forward, loss, backward, ``on_after_backward`` callbacks, a finiteness check of the
    loss and the gradients (one GPU sync per step), ``optimizer.step()``, ``on_step_end``.

    Parameters
    ----------
    model : Module
    train : (X (N, ...), y (N,) int)
    epochs : int >= 1
    batch_size : int >= 1
        With ``drop_last=True`` it must be <= N (else no batch would be trained).
    optimizer : Optimizer, optional
        Built on this model's parameters (checked by identity). Default ``SGD(model, lr)``.
    lr : float >= 0, optional
        The rate of the default SGD (0.1 when not given); refused together with ``optimizer``.
    loss_fn : loss, optional
        Default :class:`~nnopt_lab.nn.layers.CrossEntropyLoss`. Any object with
        ``loss_fn(logits, labels)`` returning a 0-d array and ``loss_fn.backward()`` returning
        :math:`\partial L / \partial \text{logits}`; a :class:`BatchLoss` also gets the inputs,
        and its ``parts`` are recorded as ``history["loss/<part>"]``.
    val : (X, y), optional
        Evaluated after every epoch (``val_loss``, ``val_acc``).
    seed : int, optional
        Reseeds the project's generator first, so that data order and dropout masks repeat.
    callbacks : sequence of Callback
    progress : bool
        Show a tqdm progress bar over epochs.
    drop_last : bool
        Skip each epoch's last, smaller batch.
    augment : callable, optional
        Applied to every training batch ``X`` before the forward pass (data augmentation,
        chapter 2.2); it draws its randomness from the project's generator.
    desc : str
        The progress bar's label.
    metrics : dict {name: fn(model) -> float}, optional
        Evaluated after every epoch (after validation) into ``history[name]``, e.g. sparsity.
    on_divergence : {"raise", "stop"}
        What a non-finite loss or gradient does once training has stopped before that update:
        raise :class:`TrainingDiverged` (default), or return the history with a warning.

    Returns
    -------
    History
        ``history.stopped`` says why training stopped early on its own (a non-finite loss or
        gradient: the model keeps the finite weights from before that step), else None.

    Raises
    ------
    ValueError
        Before training, when the data hold NaN/inf, ``drop_last`` would drop every batch, or the
        optimizer updates another model's parameters.
    TrainingDiverged
        A ``FloatingPointError`` at a non-finite loss or gradient (``on_divergence="raise"``); its
        ``history`` holds the epochs trained and ``history.stopped``.

    Warns
    -----
    DivergenceWarning
        When training stops at a non-finite loss or gradient with ``on_divergence="stop"``, and
        (once) when an epoch's loss exceeds :data:`EXPLOSION_FACTOR` times the lowest loss seen so far.

    See: chapters/01_why_optimize.ipynb
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    x, y = check_xy("train", train)
    if val is not None:
        check_xy("val", val)
    epochs, batch_size = check_int("epochs", epochs, 1, MAX_EPOCHS), check_int("batch_size", batch_size)
    drop_last, progress = check_bool("drop_last", drop_last), check_bool("progress", progress)
    on_divergence = check_choice("on_divergence", on_divergence, ("raise", "stop"))
    if x.shape[0] == 0:
        raise ValueError("train has no samples: there is nothing to fit")
    _check_finite("train's X", x)
    if val is not None:
        _check_finite("val's X", val[0])
    if drop_last and batch_size > x.shape[0]:
        raise ValueError(f"batch_size must be <= the number of training samples {x.shape[0]} with "
                         f"drop_last=True (else every batch is dropped and nothing is trained), got {batch_size}")
    if optimizer is not None and lr is not None:
        raise ValueError(f"give lr or optimizer, not both: lr={lr!r} would be ignored by {optimizer!r}")
    if augment is not None:
        check_callable("augment", augment)
    metrics, callbacks = _check_metrics(metrics), _check_callbacks(callbacks)
    optimizer = optimizer if optimizer is not None else SGD(model, lr=0.1 if lr is None else lr)
    _check_optimizer_for(model, optimizer)
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    if seed is not None:
        B.seed(seed)
    xp = B.namespace(x)
    state = TrainState(model, optimizer, History(), epochs)
    floor, warned = math.inf, False          # the lowest loss seen: the first batch's, then epoch means
    _call(callbacks, "on_train_begin", state)
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        state.epoch = epoch
        model.train()
        _call(callbacks, "on_epoch_begin", state)
        run = _train_epoch(state, batches(x, y, batch_size, shuffle=True, drop_last=drop_last), loss_fn, augment,
                           callbacks, xp)
        h = state.history
        if run.seen:
            run.record(h, optimizer.lr)
            floor = run.first_loss if floor == math.inf else floor   # the run's first batch, then epoch means
            warned = warned or _warn_if_exploded(h, epoch, floor, optimizer.lr)
            floor = min(floor, h["loss"][-1])
            _end_of_epoch(state, val, loss_fn, metrics)
            bar.set_postfix({k: round(v, 4) for k, v in h.last().items() if k != "seconds"})
            _call(callbacks, "on_epoch_end", state)
        if h.stopped is not None:
            _stop_diverged(model, h, optimizer, on_divergence)
        if state.stop:
            break
    _call(callbacks, "on_train_end", state)
    return state.history


def _train_epoch(state: TrainState, data_batches, loss_fn, augment, callbacks, xp) -> "_Epoch":
    """One pass over ``data_batches``; stops before the update of a batch with a non-finite loss or gradient."""
    model, run = state.model, _Epoch()
    for i, (xb, yb) in enumerate(data_batches):
        if augment is not None:
            xb = augment(xb)
        state.batch = (xb, yb)
        logits = model.forward(xb)
        loss = state.batch_loss = compute_loss(loss_fn, logits, yb, xb)
        model.backward(loss_fn.backward(), need_dx=False)     # the data needs no gradient
        _call(callbacks, "on_after_backward", state)
        loss_value, bad = _read_loss(loss, state.optimizer.params, xp)   # the step's one sync
        if bad:
            state.history.stopped = f"non-finite {bad} at epoch {state.epoch} step {i}"
            state.stop = True
            break
        state.optimizer.step()
        run.add(loss_value, logits, yb, dict(getattr(loss_fn, "parts", None) or {}))
        state.step += 1
        _call(callbacks, "on_step_end", state)
        if state.stop:
            break
    return run


def _warn_if_exploded(h: History, epoch: int, floor: float, lr: float) -> bool:
    """Warn (and return True) when the epoch's loss exceeds EXPLOSION_FACTOR times the lowest loss seen."""
    if not h["loss"][-1] > EXPLOSION_FACTOR * floor:
        return False
    warnings.warn(f"the training loss exploded: {h['loss'][-1]:.4g} in epoch {epoch}, more than "
                  f"{EXPLOSION_FACTOR:g}x the lowest loss so far ({floor:.4g}); lower the learning rate (lr={lr})",
                  DivergenceWarning, stacklevel=3)
    return True


def _end_of_epoch(state: TrainState, val: tuple | None, loss_fn, metrics: dict) -> None:
    """Validation loss and accuracy, then the extra metrics, into the history."""
    h = state.history
    if val is not None:
        vl, va = evaluate(state.model, val, loss_fn)
        h["val_loss"].append(vl)
        h["val_acc"].append(va)
    for name, fn in metrics.items():
        h.setdefault(name, []).append(_metric_value(name, fn, state.model))


def _read_loss(loss: Any, params: list, xp) -> tuple[float, str | None]:
    """The batch loss as a float, and ``"loss"`` / ``"gradient"`` when it or a gradient is NaN/inf.

    ``loss + 0 · (sum of all gradient entries)`` is finite exactly when the loss and every
    gradient entry are (``0 · inf`` and ``0 · nan`` are NaN), so one number read per step checks
    them all: one GPU sync; the sums cost one pass over the gradients, small next to backward.
    """
    grads = _grad_sum(params, xp)
    probe = loss if grads is None else loss + 0.0 * grads
    finite = math.isfinite(B.float_of(probe))
    value = B.float_of(loss)                      # already computed: no second wait on a GPU
    if finite:
        return value, None
    return value, "loss" if not math.isfinite(value) else "gradient"


def _stop_diverged(model: Module, h: History, optimizer: Optimizer, on_divergence: str) -> None:
    if not _weights_finite(model):      # only an update that overflowed on finite gradients gets here
        raise TrainingDiverged(f"training stopped at a {h.stopped}, and the weights were already not finite "
                               f"(the previous update overflowed); lower the learning rate (lr={optimizer.lr})", h)
    message = (f"training stopped at a {h.stopped}; the model keeps the weights from before that step. "
               f"Lower the learning rate (lr={optimizer.lr})")
    if on_divergence == "raise":
        raise TrainingDiverged(message, h)
    warnings.warn(message, DivergenceWarning, stacklevel=3)
