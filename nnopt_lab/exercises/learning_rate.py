r"""Self-checks for chapters/04_1_learning_rate.ipynb (seed §2.3.1, §3.3.1).

Each checker runs the learner's function on fixed inputs, compares it with the reference
schedule of :mod:`nnopt_lab.training.schedules` (which tests/test_schedules.py holds equal to
``torch.optim.lr_scheduler`` to 1e-12), prints one ``✓`` line when it matches and otherwise
raises ``AssertionError`` saying *what* is off: a missing factor, a step too early, a sign.

See: chapters/04_1_learning_rate.ipynb
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from ..training.schedules import CosineAnnealingLR, ReduceLROnPlateau, lr_curve, with_warmup
from .checks import ExerciseFailed, call, diagnose, numbers, verdict

__all__ = ["check_cosine_annealing", "check_warmup_cosine", "check_plateau", "check_warmup_cosine_schedule", "diagnose"]


# ----------------------------------------------------------------------------- exercise 1
def check_cosine_annealing(cosine_lr: Callable, base_lr: float = 0.1, T_max: int = 50,
                           eta_min: float = 0.001) -> None:
    r"""Check ``cosine_lr(step, base_lr, T_max, eta_min)`` against CosineAnnealingLR for steps 0..T_max.

    Expected: :math:`\eta_{min} + \tfrac12(\eta_0-\eta_{min})(1+\cos(\pi t/T_{max}))`.
    """
    steps = list(range(T_max + 1))
    want = lr_curve(lambda o: CosineAnnealingLR(o, T_max=T_max, eta_min=eta_min), T_max + 1, lr=base_lr)
    got = numbers("cosine_lr", cosine_lr, [(t, base_lr, T_max, eta_min) for t in steps])

    def formula(t, b=base_lr, T=T_max, e=eta_min, half=0.5, sign=1.0, angle=math.pi):
        return e + half * (b - e) * (1 + sign * math.cos(angle * t / T))
    variants = {
        "missing the 1/2 factor: (1 + cos) runs from 2 to 0, so halve it": [formula(t, half=1.0) for t in steps],
        "one step early: step t should use cos(π·t/T_max), yours uses t + 1": [formula(t + 1) for t in steps],
        "one step late: step t should use cos(π·t/T_max), yours uses t − 1": [formula(t - 1) for t in steps],
        "eta_min is ignored: the curve must end at eta_min, anneal (base_lr − eta_min) and add eta_min":
            [formula(t, e=0.0) for t in steps],
        "eta_min added but not subtracted from base_lr: use eta_min + ½(base_lr − eta_min)(1 + cos)":
            [eta_min + 0.5 * base_lr * (1 + math.cos(math.pi * t / T_max)) for t in steps],
        "wrong sign: 1 − cos starts at eta_min and rises; use 1 + cos": [formula(t, sign=-1.0) for t in steps],
        "the angle lacks π: use cos(π·t/T_max) (radians), not cos(t/T_max)": [formula(t, angle=1.0) for t in steps],
        "divided by T_max − 1: the bottom is reached at step T_max, so divide by T_max":
            [formula(t, T=T_max - 1) for t in steps],
    }
    verdict("cosine_lr", diagnose(got, want, variants),
             f"CosineAnnealingLR(T_max={T_max}, eta_min={eta_min}) at all {len(steps)} steps")


# ----------------------------------------------------------------------------- exercise 2
def check_warmup_cosine(warmup_cosine_lr: Callable, base_lr: float = 0.2, warmup_steps: int = 10,
                        total_steps: int = 100, start_factor: float = 0.1) -> None:
    r"""Check ``warmup_cosine_lr(step, base_lr, warmup_steps, total_steps, start_factor)``.

    Reference: ``with_warmup(CosineAnnealingLR(opt, T_max=total_steps - warmup_steps), warmup_steps,
    start_factor)`` = torch's ``SequentialLR([LinearLR(start_factor, 1, W), CosineAnnealingLR(T - W)], [W])``.
    """
    W, N = warmup_steps, total_steps
    steps = list(range(N))
    want = lr_curve(lambda o: with_warmup(CosineAnnealingLR(o, T_max=N - W), W, start_factor), N, lr=base_lr)
    got = numbers("warmup_cosine_lr", warmup_cosine_lr, [(t, base_lr, W, N, start_factor) for t in steps])
    verdict("warmup_cosine_lr", diagnose(got, want, _warmup_cosine_mistakes(base_lr, W, N, start_factor)),
             f"SequentialLR(LinearLR({start_factor}, 1, {W}), CosineAnnealingLR({N - W})) at all {N} steps")


def _warmup_cosine_mistakes(base_lr: float, W: int, N: int, start_factor: float) -> dict:
    """The usual mistakes of a linear warm-up followed by a cosine, as rate curves over N steps."""
    steps = list(range(N))

    def warm(t, denom=W, f0=start_factor):
        return base_lr * (f0 + (1 - f0) * min(t, denom) / denom)

    def cos(t, T=N - W):
        return 0.5 * base_lr * (1 + math.cos(math.pi * t / T))
    variants = {
        "the cosine phase is not shifted: after the warm-up use cos(π·(t − W)/(T − W)), not cos(π·t/…)":
            [warm(t) if t < W else cos(t) for t in steps],
        "the cosine phase should last total_steps − warmup_steps steps (T_max = T − W), not T":
            [warm(t) if t < W else cos(t - W, T=N) for t in steps],
        "the warm-up reaches the peak one step early: divide by warmup_steps, not warmup_steps − 1":
            [warm(t, denom=W - 1) if t < W else cos(t - W) for t in steps],
        "the warm-up starts at 0: it should start at start_factor·base_lr":
            [warm(t, f0=0.0) if t < W else cos(t - W) for t in steps],
    }
    return variants


# ----------------------------------------------------------------------------- exercise 3
PLATEAU_METRICS = (1.0, 0.9, 0.9, 0.95, 0.8, 0.8, 0.85, 0.9, 0.7, 0.75, 0.75, 0.76, 0.77, 0.6,
                   0.6, 0.61, 0.62, 0.63, 0.64, 0.5, 0.55, 0.55, 0.56, 0.57, 0.58)


def check_plateau(plateau_lrs: Callable, lr: float = 0.1, factor: float = 0.5, patience: int = 2,
                  metrics: Sequence[float] = PLATEAU_METRICS) -> None:
    """Check ``plateau_lrs(metrics, lr, factor, patience) -> list of lr after each epoch``.

    Reference: ``ReduceLROnPlateau(mode="min", factor, patience, threshold=0)``: a value improves
    when it is strictly below the best so far; after *more than* ``patience`` epochs without
    improvement the rate is multiplied by ``factor`` and the count restarts.
    """
    metrics = list(metrics)
    want = lr_curve(lambda o: ReduceLROnPlateau(o, factor=factor, patience=patience, threshold=0.0),
                    len(metrics) + 1, lr=lr, metrics=metrics + [0.0])[1:]
    result = call("plateau_lrs", plateau_lrs, list(metrics), lr, factor, patience)
    try:
        got = [float(v) for v in result]
    except (TypeError, ValueError):
        raise ExerciseFailed(f"✗ plateau_lrs returned {result!r}; expected a list of numbers") from None
    if len(got) != len(metrics):
        raise ExerciseFailed(f"✗ plateau_lrs: expected one rate per epoch ({len(metrics)}), got {len(got)}")

    def variant(reduce_at_patience=False, ties_improve=False, keep_count=False):
        best, bad, rate, out = math.inf, 0, lr, []
        for m in metrics:
            if m < best or (ties_improve and m == best):
                best, bad = m, 0
            else:
                bad += 1
            if (bad >= patience) if reduce_at_patience else (bad > patience):
                rate *= factor
                bad = bad if keep_count else 0
            out.append(rate)
        return out
    variants = {
        "reduced after `patience` bad epochs; reduce only after more than `patience` (count > patience)":
            variant(reduce_at_patience=True),
        "an equal value counted as an improvement; only a strictly lower value is one":
            variant(ties_improve=True),
        "the bad-epoch count was not reset after a reduction, so the rate keeps falling every epoch":
            variant(keep_count=True),
    }
    verdict("plateau_lrs", diagnose(got, want, variants, label="epoch"),
             f"ReduceLROnPlateau(factor={factor}, patience={patience}, threshold=0) over {len(metrics)} epochs")


# ----------------------------------------------------------------------------- exercise 4
def check_warmup_cosine_schedule(schedule_class: Callable, base_lr: float = 0.2, warmup_steps: int = 10,
                                 total_steps: int = 100, start_factor: float = 0.1) -> None:
    r"""Check a learner's schedule class ``schedule_class(optimizer, warmup_steps, total_steps,
    start_factor)`` -- an :class:`~nnopt_lab.training.schedules.LRScheduler` subclass whose
    ``get_lr()`` gives the rate at step ``self.last_epoch`` -- against
    ``with_warmup(CosineAnnealingLR(opt, T_max=total_steps - warmup_steps), warmup_steps, start_factor)``
    (= torch's ``SequentialLR([LinearLR, CosineAnnealingLR], [W])``) at every step, run the way
    training runs it (built on an optimizer, ``step()`` after each update).

    Prints ✓ or raises ExerciseFailed naming the mistake (cosine clock not shifted, wrong length,
    warm-up one step short, warm-up from 0) or the first step that differs.

    See: chapters/04_1_learning_rate.ipynb
    """
    from ..training.schedules import LRScheduler

    name = "WarmupCosine"
    if not (isinstance(schedule_class, type) and issubclass(schedule_class, LRScheduler)):
        raise ExerciseFailed(f"✗ {name} must be a class derived from LRScheduler, got {schedule_class!r}")
    W, N = warmup_steps, total_steps
    want = lr_curve(lambda o: with_warmup(CosineAnnealingLR(o, T_max=N - W), W, start_factor), N, lr=base_lr)
    result = call(name, lr_curve, lambda o: schedule_class(o, W, N, start_factor), N, base_lr)
    try:
        got = [float(v) for v in result]
    except (TypeError, ValueError):
        raise ExerciseFailed(f"✗ {name}.get_lr must return a number (the rate), got {result[:1]!r}") from None
    verdict(name, diagnose(got, want, _warmup_cosine_mistakes(base_lr, W, N, start_factor)),
            f"torch's SequentialLR(LinearLR({start_factor}, 1, {W}), CosineAnnealingLR({N - W})) at all {N} steps")
