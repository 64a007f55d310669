r"""The learning-rate range test (Smith 2015, "Cyclical learning rates for training neural networks", §3.3).

Train for a few hundred mini-batches while the rate grows geometrically from tiny to huge,
record the smoothed loss, and read a good rate off the curve: where the loss still falls fast,
well below where it diverges. The model is left exactly as it was (:func:`~nnopt_lab.training.snapshot.preserved`).

Seed: §2.3.1, §3.3.1.
See: chapters/04_1_learning_rate.ipynb
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from .. import backend as B
from ..nn.layers import CrossEntropyLoss, Module
from ..validation import check_callable, check_choice, check_int, check_number
from .loop import batches, check_loss_fn, check_xy, train_step
from .optim import SGD
from .snapshot import preserved

__all__ = ["RangeTestResult", "lr_range_test"]

#: Upper bound of ``steps`` (the test is a few hundred steps; a typo must not run for days).
MAX_STEPS = 1_000_000


@dataclass
class RangeTestResult:
    """What :func:`lr_range_test` measured.

    Attributes
    ----------
    lrs : list of float
        The rate of each step taken (geometric from ``lr_min``; stops early at divergence).
    losses : list of float
        The smoothed (bias-corrected exponential moving average) training loss at each step.
    raw_losses : list of float
        The batch losses themselves.
    suggested_lr : float
        The pick by ``rule``.
    rule : str
        ``"steepest"`` -- where the smoothed loss falls fastest against log lr (before its minimum;
        slopes over a window of ±n/20 steps, the first n/10 steps skipped);
        ``"min/10"`` -- a tenth of the rate at the minimum smoothed loss.
    min_loss_lr, steepest_lr : float
        Both candidates.
    diverged : bool
        Whether the run stopped because the loss exceeded ``diverge`` × its best.
    """

    lrs: list
    losses: list
    raw_losses: list
    suggested_lr: float
    rule: str
    min_loss_lr: float
    steepest_lr: float
    diverged: bool
    extra: dict = field(default_factory=dict)


def _steepest_index(log_lrs: list[float], losses: list[float], stop: int) -> int:
    """Index of the most negative slope d loss / d log lr before ``stop`` (the minimum's index).

    Slopes are differences over a window of ±n/20 points, and the first n/10 points (where the
    moving average is still young and noisy) are skipped: a one-step slope is dominated by noise.
    """
    n = len(losses)
    window = max(1, n // 20)
    first = max(window, n // 10)
    if first >= stop:                      # the minimum came early: fall back to one-step slopes
        window, first = 1, 1
    best, best_slope = min(first, n - 1), math.inf
    for i in range(first, max(stop, first + 1)):
        j0, j1 = max(i - window, 0), min(i + window, n - 1)
        if j1 == j0:
            break
        slope = (losses[j1] - losses[j0]) / (log_lrs[j1] - log_lrs[j0])
        if slope < best_slope:
            best, best_slope = i, slope
    return best


def lr_range_test(model: Module | Callable[[], Module], data: tuple, lr_min: float = 1e-5,
                  lr_max: float = 10.0, steps: int = 100, batch_size: int = 64, smooth: float = 0.98,
                  diverge: float = 4.0, rule: str = "steepest", optimizer: Callable[[Any, float], Any] | None = None,
                  loss_fn=None, seed: int = 0, progress: bool = False) -> RangeTestResult:
    r"""The learning-rate range test (Smith 2015, "Cyclical learning rates", §3.3).

    Train for ``steps`` mini-batches while the rate grows geometrically from ``lr_min`` to
    ``lr_max``,

    .. math:: \eta_i = \eta_{min} \Big(\frac{\eta_{max}}{\eta_{min}}\Big)^{i/(n-1)},

    recording the loss smoothed by a bias-corrected moving average
    :math:`\bar L_i = a_i / (1 - \beta^{i+1})`, :math:`a_i = \beta a_{i-1} + (1-\beta) L_i`.
    Stop when :math:`\bar L_i > d \cdot \min_{j\le i} \bar L_j` (the loss diverges). A good rate
    lies where the loss still falls fast, below the divergence.

    Parameters
    ----------
    model : Module or callable returning a fresh Module
        A Module is trained and then restored to its weights and buffers (and mode); a factory
        is called once, so the caller's model is untouched either way.
    data : (X (N, ...), y (N,))
    lr_min, lr_max : float, 0 < lr_min < lr_max
    steps : int >= 2
    batch_size : int >= 1
    smooth : float in [0, 1)
        :math:`\beta` of the moving average (0 = no smoothing).
    diverge : float > 1
    rule : {"steepest", "min/10"}
        Which candidate becomes ``suggested_lr`` (both are returned).
    optimizer : callable(model, lr) -> Optimizer, optional
        Default ``SGD(model, lr)``.
    seed : int
        Seeds the batch order (a separate generator: the project's generator is not advanced).

    Returns
    -------
    RangeTestResult

    See: chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1)
    """
    lr_min = check_number("lr_min", lr_min, 0.0, low_open=True)
    lr_max = check_number("lr_max", lr_max, 0.0, low_open=True)
    if lr_max <= lr_min:
        raise ValueError(f"lr_min must be < lr_max, got lr_min={lr_min!r} and lr_max={lr_max!r}")
    steps = check_int("steps", steps, 2, MAX_STEPS)
    batch_size = check_int("batch_size", batch_size)
    seed = check_int("seed", seed, 0)
    if optimizer is not None:
        check_callable("optimizer", optimizer)
    loss_fn = check_loss_fn(CrossEntropyLoss() if loss_fn is None else loss_fn)
    smooth = check_number("smooth", smooth, 0.0, 1.0, high_open=True)
    diverge = check_number("diverge", diverge, 1.0, low_open=True)
    rule = check_choice("rule", rule, ("steepest", "min/10"))
    x, y = check_xy("data", data)
    if isinstance(model, Module):
        net = model
    elif callable(model):
        net = model()
        if not isinstance(net, Module):
            raise TypeError(f"model() must return a Module, got {type(net).__name__}")
    else:
        raise TypeError(f"model must be a Module or a callable returning one, got {type(model).__name__}")
    with preserved(net):          # a fresh model from a factory needs no restoring, but it costs little
        lrs, raw, smoothed, diverged = _sweep(net, x, y, lr_min, lr_max, steps, batch_size, smooth, diverge,
                                              optimizer, loss_fn, seed, progress)
    if len(lrs) < 3:
        raise ValueError(f"the loss diverged after {len(lrs)} steps: lower lr_min (got {lr_min})")
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    i_steep = _steepest_index([math.log10(v) for v in lrs], smoothed, max(i_min, 2))
    min_loss_lr, steepest_lr = lrs[i_min], lrs[i_steep]
    pick = steepest_lr if rule == "steepest" else min_loss_lr / 10
    return RangeTestResult(lrs, smoothed, raw, pick, rule, min_loss_lr, steepest_lr, diverged)


def _sweep(net: Module, x: Any, y: Any, lr_min: float, lr_max: float, steps: int, batch_size: int,
           smooth: float, diverge: float, optimizer, loss_fn, seed: int, progress: bool):
    """Train with a geometrically growing rate; (lrs, smoothed losses, raw losses, diverged)."""
    opt = (optimizer or SGD)(net, lr_min)
    gen = B.generator(seed)
    ratio = lr_max / lr_min
    lrs, raw, smoothed, avg, best = [], [], [], 0.0, math.inf

    def endless():
        while True:
            yield from batches(x, y, batch_size, shuffle=True, generator=gen)
    stream = endless()
    net.train()
    for i in tqdm(range(steps), desc="range test", disable=not progress, leave=False):
        lr = lr_min * ratio ** (i / (steps - 1))
        opt.lr = lr
        xb, yb = next(stream)
        loss, _ = train_step(net, loss_fn, opt, xb, yb)
        value = B.float_of(loss)
        if not math.isfinite(value):
            return lrs, raw, smoothed, True
        avg = smooth * avg + (1 - smooth) * value
        value_s = avg / (1 - smooth ** (i + 1))
        lrs.append(lr)
        raw.append(value)
        smoothed.append(value_s)
        best = min(best, value_s)
        if value_s > diverge * best:
            return lrs, raw, smoothed, True
    return lrs, raw, smoothed, False
