r"""Batch-size tools (批量大小调整), from scratch: speed, gradient noise, scaling rules, schedules.

* :func:`throughput` -- training samples per second against batch size on the active backend
  (larger batches for speed, 增大批量大小);
* :func:`gradient_noise` -- how far a mini-batch gradient lies from the full-batch one, against
  batch size: :math:`E\|g_B - G\|^2 = \frac{\operatorname{tr}\Sigma}{B}\frac{N-B}{N-1}` (smaller
  batches give noisier steps, 减小批量大小);
* :func:`linear_scaling_rule` and :func:`linear_scaling_warmup` -- Goyal et al. (2017): multiply
  the rate by k when the batch grows k-fold, ramping up to it over a warm-up;
* :class:`BatchSizeSchedule` and :func:`fit_with_batch_schedule` -- dynamic batch size
  (动态批量大小): grow the batch at milestones instead of decaying the rate (Smith et al. 2017),
  counting the parameter updates saved.

Seed: §2.3.2, §3.3.2.
See: chapters/04_2_batch_size.ipynb
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .. import backend as B
from ..measure import latency
from ..nn.layers import CrossEntropyLoss, Module
from .loop import MAX_EPOCHS, History, check_loss_fn, check_xy, compute_loss, fit, train_step
from .optim import SGD, check_lr
from .schedules import LinearWarmup
from .snapshot import preserved
from ..validation import check_callable, check_int, check_number, check_sequence

__all__ = ["throughput", "GradientNoise", "full_gradient", "gradient_noise", "linear_scaling_rule",
           "linear_scaling_warmup", "updates_per_epoch", "BatchSizeSchedule", "fit_with_batch_schedule"]


#: Upper bound of step and repeat counts (a typo such as 10**9 fails at once instead of running for days).
MAX_REPEATS = 1_000_000


def _check_batch_sizes(batch_sizes: Sequence[int], limit: int | None = None) -> list[int]:
    sizes = check_sequence("batch_sizes", batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes must hold at least one batch size, got none")
    for i, b in enumerate(sizes):
        check_int(f"batch_sizes[{i}]", b)
        if limit is not None and b > limit:
            raise ValueError(f"batch_sizes[{i}] must be <= the number of samples {limit}, got {b}")
    return sizes


# ----------------------------------------------------------------------------- speed
def throughput(model_factory: Callable[[], Module], data: tuple, batch_sizes: Sequence[int],
               backend: str | B.Backend | None = None, steps: int = 20, warmup: int = 3, lr: float = 1e-3,
               loss_fn=None) -> dict[int, float]:
    r"""Training throughput: samples per second of forward + backward + SGD update, per batch size.

    For each batch size :math:`B` a fresh model takes ``warmup`` untimed steps, then ``steps``
    timed ones (:func:`nnopt_lab.measure.latency`: the GPU is synchronized around each) on one
    fixed batch already on the device, so data loading is not measured. The median step time
    is used, which shrugs off the odd step slowed by another process:

    .. math:: \text{throughput}(B) = \frac{B}{\operatorname{median}(\text{seconds per step})}

    Parameters
    ----------
    model_factory : callable returning a Module
        Called once per batch size; the model is moved to ``backend``.
    data : (X (N, ...), y (N,))
        Rows are repeated when a batch is larger than N.
    batch_sizes : sequence of int >= 1
    backend : name or Backend, optional
        Default: the active backend.
    steps : int >= 1
    warmup : int >= 0
    lr : float
        SGD rate of the timed steps (small, so weights stay finite; it does not change the timing).

    Returns
    -------
    dict {batch size: samples per second}

    See: chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2)
    """
    check_callable("model_factory", model_factory)
    x, y = check_xy("data", data)
    sizes = _check_batch_sizes(batch_sizes)
    steps = check_int("steps", steps, 1, MAX_REPEATS)
    warmup = check_int("warmup", warmup, 0, MAX_REPEATS)
    lr = check_lr(lr)
    be = B.active() if backend is None else B.get_backend(backend)
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    x, y = B.to_backend(x, be), B.to_backend(y, be)
    n = x.shape[0]
    xp = B.namespace(x)
    out = {}
    for b in sizes:
        model = model_factory()
        if not isinstance(model, Module):
            raise TypeError(f"model_factory() must return a Module, got {type(model).__name__}")
        model.to(be).train()
        opt = SGD(model, lr=lr)
        idx = B.to_backend([i % n for i in range(b)], be, dtype="int64")
        xb, yb = xp.take(x, idx, axis=0), xp.take(y, idx, axis=0)
        timing = latency(train_step, model, loss_fn, opt, xb, yb, warmup=warmup, repeats=steps)
        out[b] = b / timing.median
    return out


# ----------------------------------------------------------------------------- gradient noise
def _flat_grad(model: Module) -> Any:
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    xp = B.namespace(grads[0])
    return xp.concat([xp.reshape(g, (-1,)) for g in grads])


def _batch_gradient(model: Module, loss_fn, x: Any, y: Any) -> Any:
    compute_loss(loss_fn, model.forward(x), y, x)
    model.backward(loss_fn.backward())
    return _flat_grad(model)


def full_gradient(model: Module, data: tuple, loss_fn=None, chunk: int = 1024) -> Any:
    r"""The gradient :math:`G = \nabla_\theta \frac1N\sum_i \ell_i` over all of ``data``, flattened.

    Computed in chunks of ``chunk`` rows (each chunk's mean gradient weighted by its share),
    in the model's current mode; parameters are concatenated in ``model.parameters()`` order.

    Returns
    -------
    array, shape (P,) with P the number of trainable parameters
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    x, y = check_xy("data", data)
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    n = x.shape[0]
    total = None
    for start in range(0, n, check_int("chunk", chunk)):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        g = _batch_gradient(model, loss_fn, xb, yb) * (xb.shape[0] / n)
        total = g if total is None else total + g
    return total


@dataclass
class GradientNoise:
    r"""What :func:`gradient_noise` measured.

    Attributes
    ----------
    batch_sizes : list of int
    variance : list of float
        :math:`\widehat{E}\|g_B - G\|^2`, the mean over ``repeats`` draws.
    stderr : list of float
        Standard error of each mean.
    n_samples : int
        N.
    trace_cov : float
        :math:`\operatorname{tr}\Sigma` (per-sample gradient covariance, divisor N), fitted to
        ``variance`` through the law of :meth:`predicted` in log space (geometric mean of v / c(B)).
    grad_norm2 : float
        :math:`\|G\|^2`.
    slope : float
        Slope of log(variance · (N−1)/(N−B)) against log B over the batch sizes below N: the
        without-replacement factor removed, the law predicts exactly −1.
    """

    batch_sizes: list
    variance: list
    stderr: list
    n_samples: int
    trace_cov: float
    grad_norm2: float
    slope: float

    def predicted(self, batch_size: float) -> float:
        r""":math:`\frac{\operatorname{tr}\Sigma}{B}\frac{N-B}{N-1}` -- the law fitted to the measurements."""
        n = self.n_samples
        return self.trace_cov / batch_size * (n - batch_size) / (n - 1)

    @property
    def noise_scale(self) -> float:
        r"""McCandlish et al.'s simple noise scale :math:`B_{simple} = \operatorname{tr}\Sigma / \|G\|^2`."""
        return self.trace_cov / self.grad_norm2


def _slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else float("nan")


def _noise_by_batch_size(model: Module, loss_fn, x: Any, y: Any, g_full: Any, sizes: list[int], repeats: int,
                         gen) -> tuple[list[float], list[float]]:
    r"""For each batch size B: the mean and standard error of :math:`\|g_B - G\|^2` over ``repeats``
    batches of B distinct samples drawn by ``gen``."""
    xp, n = B.namespace(g_full), x.shape[0]
    means, errs = [], []
    for b in sizes:
        d2 = []
        for _ in range(repeats):
            idx = B.to_backend(gen.choice(n, size=b, replace=False), B.backend_of(x), dtype="int64")
            g = _batch_gradient(model, loss_fn, xp.take(x, idx, axis=0), xp.take(y, idx, axis=0))
            d2.append(B.float_of(xp.sum((g - g_full) ** 2)))
        mean = sum(d2) / repeats
        means.append(mean)
        errs.append(math.sqrt(sum((v - mean) ** 2 for v in d2) / (repeats - 1) / repeats))
    return means, errs


def gradient_noise(model: Module, data: tuple, batch_sizes: Sequence[int], repeats: int = 20, seed: int = 0,
                   loss_fn=None) -> GradientNoise:
    r"""Mini-batch gradient noise against batch size.

    For each :math:`B`, draw ``repeats`` batches of :math:`B` distinct samples (without
    replacement) and average the squared distance of their mean gradient to the full-batch one:

    .. math:: v(B) = \widehat{E}\,\|g_B - G\|^2 \approx \frac{\operatorname{tr}\Sigma}{B}\,\frac{N-B}{N-1}

    which falls as 1/B while :math:`B \ll N` and reaches exactly 0 at :math:`B = N`.
    The gradients are taken in evaluation mode (dropout off, batch norm on running statistics)
    so that each sample has one gradient; the model's weights are not changed, its mode and
    the parameters' ``.grad`` are restored.

    Parameters
    ----------
    model : Module
    data : (X (N, ...), y (N,))
    batch_sizes : sequence of int in [1, N]
    repeats : int >= 2
    seed : int
        Seeds the batch draws (a separate generator: the project's generator is not advanced).

    Returns
    -------
    GradientNoise

    See: chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2)
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    x, y = check_xy("data", data)
    n = x.shape[0]
    sizes = _check_batch_sizes(batch_sizes, limit=n)
    repeats = check_int("repeats", repeats, 2, MAX_REPEATS)
    seed = check_int("seed", seed, 0)
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    with preserved(model, weights=False):
        model.eval()
        g_full = full_gradient(model, (x, y), loss_fn)
        means, errs = _noise_by_batch_size(model, loss_fn, x, y, g_full, sizes, repeats, B.generator(seed))
    xp = B.namespace(g_full)
    grad_norm2 = B.float_of(xp.sum(g_full ** 2))
    # the law v = trace · c(B), c(B) = (N - B) / ((N - 1) B), fitted in log space (each B weighs the same)
    pos = [(b, v, (n - b) / ((n - 1) * b)) for b, v in zip(sizes, means) if v > 0 and b < n]
    trace = math.exp(sum(math.log(v / c) for _, v, c in pos) / len(pos)) if pos else 0.0
    slope = _slope([b for b, _, _ in pos], [v * (n - 1) / (n - b) for b, v, _ in pos]) if len(pos) >= 2 \
        else float("nan")
    return GradientNoise(sizes, means, errs, n, trace, grad_norm2, slope)


# ----------------------------------------------------------------------------- scaling rules
def linear_scaling_rule(base_lr: float, base_batch: int, batch: int) -> float:
    r"""Goyal et al. (2017): when the batch grows k-fold, grow the rate k-fold.

    .. math:: \eta = \eta_{base} \cdot \frac{B}{B_{base}}

    (keeps the SGD noise scale :math:`\eta N / B` and, for small :math:`\eta`, k small steps ≈ one
    big one.) Example: 0.1 at 256 → 3.2 at 8192.

    See: chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2)
    """
    base_lr = check_number("base_lr", base_lr, 0.0)
    return base_lr * check_int("batch", batch) / check_int("base_batch", base_batch)


def linear_scaling_warmup(optimizer: Any, base_lr: float, base_batch: int, batch: int,
                          warmup_steps: int) -> LinearWarmup:
    r"""Set up Goyal et al.'s large-batch recipe on ``optimizer``: scaled rate, gradual warm-up.

    Sets ``optimizer.lr`` to :math:`\eta = \eta_{base} B / B_{base}` and returns the
    :class:`~nnopt_lab.training.schedules.LinearWarmup` that starts at :math:`\eta_{base}`
    (``start_factor = B_base / B``, capped at 1) and reaches :math:`\eta` after
    ``warmup_steps`` steps. Step it once per optimizer step (``ScheduleCallback(..., "step")``),
    or compose a decay after it with :func:`~nnopt_lab.training.schedules.with_warmup` style
    :class:`~nnopt_lab.training.schedules.SequentialLR`.

    The optimizer must not already have a schedule (its ``initial_lr`` is reset).

    See: chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2)
    """
    if not hasattr(optimizer, "lr"):
        raise TypeError(f"optimizer must have a float attribute 'lr' (an nnopt_lab Optimizer), "
                        f"got {type(optimizer).__name__}")
    lr = linear_scaling_rule(base_lr, base_batch, batch)
    optimizer.lr = lr
    optimizer.initial_lr = lr
    return LinearWarmup(optimizer, check_int("warmup_steps", warmup_steps), start_factor=min(1.0, base_batch / batch))


# ----------------------------------------------------------------------------- dynamic batch size
def updates_per_epoch(n_samples: int, batch_size: int, drop_last: bool = False) -> int:
    r"""Parameter updates in one epoch: :math:`\lceil N/B \rceil` (:math:`\lfloor N/B \rfloor` with ``drop_last``)."""
    n, b = check_int("n_samples", n_samples, 0), check_int("batch_size", batch_size)
    return n // b if drop_last else -(-n // b)


class BatchSizeSchedule:
    r"""A batch size per epoch that grows by ``factor`` at each milestone (dynamic batch size, 动态批量大小).

    .. math:: B_e = \min\big(B_0 \cdot k^{\,|\{m_i \le e\}|},\; B_{max}\big)

    Smith, Kindermans, Ying & Le (2017), "Don't decay the learning rate, increase the batch
    size": where a step schedule would divide the rate by k, multiply the batch by k instead;
    the SGD noise scale :math:`\eta N/B` falls the same way, accuracy is about the same, and
    the number of parameter updates drops.

    Parameters
    ----------
    batch_size : int >= 1
        :math:`B_0`.
    milestones : sequence of int >= 1, strictly increasing (epochs, counted from 0)
    factor : float >= 1
    max_batch_size : int, optional
        Cap (e.g. the number of training samples).

    See: chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2)
    """

    def __init__(self, batch_size: int, milestones: Sequence[int] = (), factor: float = 2.0,
                 max_batch_size: int | None = None):
        self.batch_size = check_int("batch_size", batch_size)
        self.milestones = [check_int(f"milestones[{i}]", m) for i, m in enumerate(check_sequence("milestones", milestones))]
        if any(a >= b for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {list(milestones)!r}")
        self.factor = check_number("factor", factor, 1.0)
        self.max_batch_size = None if max_batch_size is None else check_int("max_batch_size", max_batch_size)

    @classmethod
    def instead_of_step_decay(cls, batch_size: int, milestones: Sequence[int], gamma: float,
                              max_batch_size: int | None = None) -> "BatchSizeSchedule":
        """The batch schedule that replaces ``MultiStepLR(milestones, gamma)``: factor = 1/gamma."""
        gamma = check_number("gamma", gamma, 0.0, 1.0, low_open=True)
        return cls(batch_size, milestones, 1.0 / gamma, max_batch_size)

    def batch_size_at(self, epoch: int) -> int:
        """:math:`B_e` for epoch ``epoch`` (>= 0)."""
        b = int(round(self.batch_size * self.factor ** bisect_right(self.milestones, check_int("epoch", epoch, 0))))
        return b if self.max_batch_size is None else min(b, self.max_batch_size)

    def phases(self, epochs: int) -> list[tuple[int, int]]:
        """``[(batch size, number of epochs), ...]`` covering ``epochs`` epochs, equal sizes merged."""
        out: list[list[int]] = []
        for e in range(check_int("epochs", epochs, 1, MAX_EPOCHS)):
            b = self.batch_size_at(e)
            if out and out[-1][0] == b:
                out[-1][1] += 1
            else:
                out.append([b, 1])
        return [(b, k) for b, k in out]

    def total_updates(self, n_samples: int, epochs: int, drop_last: bool = False) -> int:
        r""":math:`\sum_e \lceil N / B_e \rceil` parameter updates over ``epochs`` epochs."""
        return sum(k * updates_per_epoch(n_samples, b, drop_last) for b, k in self.phases(epochs))

    def __repr__(self) -> str:
        return (f"BatchSizeSchedule(batch_size={self.batch_size}, milestones={self.milestones}, "
                f"factor={self.factor}, max_batch_size={self.max_batch_size})")


def fit_with_batch_schedule(model: Module, train: tuple, schedule: BatchSizeSchedule, *, epochs: int,
                            optimizer=None, lr: float = 0.1, val: tuple | None = None, seed: int | None = None,
                            callbacks=(), progress: bool = True, drop_last: bool = False, **fit_kwargs) -> History:
    """:func:`~nnopt_lab.training.fit` with the batch size of each epoch taken from ``schedule``.

    Runs ``fit`` once per phase of constant batch size with the same optimizer (so its state,
    e.g. momentum, carries over) and joins the histories. ``seed`` seeds the first phase only,
    so the whole run is reproducible. Callbacks see each phase as one ``fit`` call (their
    ``state.epoch`` and ``state.step`` restart per phase).

    Returns
    -------
    History
        ``fit``'s lists plus ``batch_size`` (per epoch) and ``updates`` (cumulative parameter
        updates at the end of each epoch).

    See: chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2)
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module, got {type(model).__name__}")
    x, _ = check_xy("train", train)
    if not isinstance(schedule, BatchSizeSchedule):
        raise TypeError(f"schedule must be a BatchSizeSchedule, got {type(schedule).__name__}")
    optimizer = optimizer or SGD(model, lr=lr)
    history = History()
    history["batch_size"], history["updates"] = [], []
    done = 0
    for i, (b, n_epochs) in enumerate(schedule.phases(check_int("epochs", epochs))):
        h = fit(model, train, epochs=n_epochs, batch_size=b, optimizer=optimizer, val=val,
                seed=seed if i == 0 else None, callbacks=callbacks, progress=progress, drop_last=drop_last,
                desc=f"train (batch {b})", **fit_kwargs)
        for key, values in h.items():
            history.setdefault(key, []).extend(values)
        per_epoch = updates_per_epoch(x.shape[0], b, drop_last)
        for _ in h["loss"]:
            done += per_epoch
            history["batch_size"].append(b)
            history["updates"].append(done)
        if h.stopped is not None or len(h["loss"]) < n_epochs:      # diverged, or a callback stopped it
            history.stopped = h.stopped
            break
    return history
