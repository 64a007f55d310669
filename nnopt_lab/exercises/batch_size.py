r"""Self-checks for chapters/04_2_batch_size.ipynb (seed §2.3.2, §3.3.2).

Each checker runs the learner's function on fixed inputs, compares it with
:mod:`nnopt_lab.training.batch_size` (whose warm-up is held equal to torch's LinearLR by
tests/test_schedules.py and tests/test_batch_size.py), prints one ``✓`` line when it matches and
otherwise raises ``AssertionError`` saying what is off.

See: chapters/04_2_batch_size.ipynb
"""
from __future__ import annotations

import math
from typing import Callable

from ..training.batch_size import BatchSizeSchedule, linear_scaling_warmup
from ..training.schedules import LRProbe
from .checks import diagnose, numbers, verdict

__all__ = ["check_warmup_lr", "check_update_count", "check_noise_prediction", "check_minibatch_noise"]


# ----------------------------------------------------------------------------- exercise 1
def check_warmup_lr(warmup_lr: Callable, base_lr: float = 0.1, base_batch: int = 32, batch: int = 512,
                    warmup_steps: int = 20, steps: int = 40) -> None:
    r"""Check ``warmup_lr(step, base_lr, base_batch, batch, warmup_steps)``: Goyal et al.'s rate at a step.

    Expected: the rate rises linearly from ``base_lr`` (step 0) to
    :math:`\eta = \eta_{base} B / B_{base}` (step ``warmup_steps``) and stays there.
    """
    probe = LRProbe(base_lr)
    sched = linear_scaling_warmup(probe, base_lr, base_batch, batch, warmup_steps)
    want = []
    for _ in range(steps):
        want.append(probe.lr)
        sched.step()
    got = numbers("warmup_lr", warmup_lr, [(t, base_lr, base_batch, batch, warmup_steps) for t in range(steps)])
    k, peak = batch / base_batch, base_lr * batch / base_batch

    def ramp(t, start=base_lr, top=peak, w=warmup_steps):
        return start + (top - start) * min(t, w) / w
    variants = {
        "no scaling: the rate must grow to base_lr·batch/base_batch": [base_lr] * steps,
        "no warm-up: the rate should start at base_lr and reach the scaled rate after warmup_steps": [peak] * steps,
        "square-root scaling (base_lr·√k) is another rule; the linear rule multiplies by k = batch/base_batch":
            [ramp(t, top=base_lr * math.sqrt(k)) for t in range(steps)],
        "the warm-up starts at 0; Goyal et al. start from the small-batch rate base_lr":
            [ramp(t, start=0.0) for t in range(steps)],
        "the warm-up reaches the peak one step early: divide by warmup_steps, not warmup_steps − 1":
            [ramp(t, w=warmup_steps - 1) for t in range(steps)],
    }
    verdict("warmup_lr", diagnose(got, want, variants),
             f"linear_scaling_warmup (torch LinearLR({base_batch}/{batch}, 1, {warmup_steps})) at {steps} steps")


# ----------------------------------------------------------------------------- exercise 2
def check_update_count(count_updates: Callable, n_samples: int = 1078, batch_size: int = 32,
                       milestones=(5, 10), factor: int = 4, epochs: int = 15) -> None:
    r"""Check ``count_updates(n_samples, batch_size, milestones, factor, epochs)`` = parameter updates.

    Expected: :math:`\sum_{e<E} \lceil N / B_e \rceil` with :math:`B_e = B_0 k^{|\{m \le e\}|}`.
    """
    cases = [(n_samples, batch_size, tuple(milestones), factor, epochs), (1000, 50, (3,), 2, 6),
             (360, 16, (2, 4, 6), 3, 8)]
    want = [BatchSizeSchedule(b, m, f).total_updates(n, e) for n, b, m, f, e in cases]
    got = numbers("count_updates", count_updates, cases)

    def count(n, b, m, f, e, rounding=math.ceil, late=0):
        return sum(rounding(n / (b * f ** sum(1 for x in m if x + late <= ep))) for ep in range(e))
    variants = {
        "rounded down: the last, smaller batch of an epoch is an update too (ceil(N / B), drop_last=False)":
            [count(*c, rounding=math.floor) for c in cases],
        "not rounded: an epoch has a whole number of updates, ceil(N / B)":
            [count(*c, rounding=lambda v: v) for c in cases],
        "the batch grows one epoch late: at epoch m (a milestone) the new batch size is already used":
            [count(*c, late=1) for c in cases],
    }
    verdict("count_updates", diagnose(got, want, variants, label="case"),
             f"BatchSizeSchedule.total_updates on {len(cases)} cases")


# ----------------------------------------------------------------------------- exercise 3
def check_noise_prediction(predict_noise: Callable) -> None:
    r"""Check ``predict_noise(v0, b0, b, n)``: the gradient noise at batch ``b`` from its value ``v0`` at ``b0``.

    Expected, from :math:`v(B) = \frac{\operatorname{tr}\Sigma}{B}\frac{N-B}{N-1}` (Σ with divisor N):
    :math:`v(b) = v_0 \frac{b_0}{b} \frac{N-b}{N-b_0}`.
    """
    cases = [(2.0, 16, 64, 1078), (0.5, 8, 512, 1078), (3.0, 32, 1078, 1078), (1.0, 100, 25, 1000)]
    want = [v0 * b0 / b * (n - b) / (n - b0) for v0, b0, b, n in cases]
    got = numbers("predict_noise", predict_noise, cases)
    variants = {
        "missing the finite-population factor (N − b)/(N − b0): sampling without replacement, "
        "so the noise reaches 0 at b = N": [v0 * b0 / b for v0, b0, b, n in cases],
        "the variance falls as 1/B, not 1/√B (the standard deviation falls as 1/√B)":
            [v0 * math.sqrt(b0 / b) * (n - b) / (n - b0) for v0, b0, b, n in cases],
        "upside down: a larger batch gives a smaller noise, multiply by b0/b": [v0 * b / b0 * (n - b) / (n - b0)
                                                                              for v0, b0, b, n in cases],
    }
    verdict("predict_noise", diagnose(got, want, variants, label="case"),
             f"v0·(b0/b)·(N−b)/(N−b0) on {len(cases)} cases")


# ----------------------------------------------------------------------------- exercise 4
def _noise_problem():
    """A tiny fixed problem: an MLP 4-3-3 (float64, numpy) and 24 samples of 3 classes."""
    from .. import backend as B
    from ..models import mlp

    b = B.get_backend("numpy", "float64")
    gen = B.generator(5)
    x = B.to_backend(gen.standard_normal((24, 4)), b)
    y = B.to_backend(gen.integers(0, 3, size=24), b, dtype="int64")
    saved = B.rng().bit_generator.state            # building the model draws from the project's generator:
    model = mlp((4, 3, 3), backend=b)               # put it back, so a check never changes later cells' draws
    B.rng().bit_generator.state = saved
    model.load_state_dict({k: B.to_backend(0.7 * gen.standard_normal(tuple(v.shape)), b)
                           for k, v in model.state_dict().items()})
    return model, (x, y)


def _noise_variant(model, data, batch_size, repeats, seed, kind):
    from .. import backend as B
    from ..training.batch_size import full_gradient

    x, y = data
    gen, g_full = B.generator(seed), full_gradient(model, data)
    values = []
    for _ in range(repeats):
        idx = gen.choice(x.shape[0], size=batch_size, replace=kind == "with replacement")
        g = full_gradient(model, (x[idx], y[idx]))
        d2 = float(((g if kind == "no G" else g - g_full) ** 2).sum())
        values.append(math.sqrt(d2) if kind == "norm" else d2)
    return sum(values) / (repeats - 1 if kind == "repeats - 1" else repeats)


def check_minibatch_noise(minibatch_noise: Callable, batch_sizes=(1, 4, 12, 24), repeats: int = 6,
                          seed: int = 3) -> None:
    r"""Check ``minibatch_noise(model, data, batch_size, repeats, seed)`` -- the mean over ``repeats``
    batches of :math:`\|g_B - G\|^2`, the batches drawn WITHOUT replacement by
    ``B.generator(seed).choice(N, size=B, replace=False)`` -- against
    :func:`~nnopt_lab.training.batch_size.gradient_noise` (the library's measurement) on a fixed
    MLP 4-3-3 with 24 samples, at ``batch_sizes``.

    Prints ✓ or raises ExerciseFailed naming the mistake (with replacement, the norm instead of its
    square, dividing by repeats − 1, forgetting to subtract G).

    See: chapters/04_2_batch_size.ipynb
    """
    from ..training.batch_size import gradient_noise
    from .checks import ExerciseFailed, require_function

    require_function("minibatch_noise", minibatch_noise)
    model, data = _noise_problem()
    want = [gradient_noise(model, data, [b], repeats=repeats, seed=seed).variance[0] for b in batch_sizes]
    got = numbers("minibatch_noise", lambda b: minibatch_noise(model, data, b, repeats, seed),
                  [(b,) for b in batch_sizes])
    variants = {
        "the batches were drawn WITH replacement (replace=True): the law's (N − B)/(N − 1) factor is for "
        "B distinct samples, and at B = N the noise must be exactly 0":
            [_noise_variant(model, data, b, repeats, seed, "with replacement") for b in batch_sizes],
        "you averaged the norm ‖g_B − G‖; the law is for its SQUARE ‖g_B − G‖²":
            [_noise_variant(model, data, b, repeats, seed, "norm") for b in batch_sizes],
        "divide by repeats (a plain mean of the squared distances), not repeats − 1":
            [_noise_variant(model, data, b, repeats, seed, "repeats - 1") for b in batch_sizes],
        "you measured ‖g_B‖²: subtract the full-batch gradient G first":
            [_noise_variant(model, data, b, repeats, seed, "no G") for b in batch_sizes],
    }
    message = diagnose(got, want, variants, label="batch size index")
    if message is not None and message.startswith("first difference"):
        i = next(i for i, (a, w) in enumerate(zip(got, want)) if abs(a - w) > 1e-9 * max(1.0, abs(w)))
        message = f"at B = {batch_sizes[i]}: yours {got[i]:.6g}, expected {want[i]:.6g}"
    if message is not None:
        raise ExerciseFailed(f"✗ minibatch_noise: {message}")
    print(f"✓ minibatch_noise matches nnopt_lab.training.batch_size.gradient_noise at B = "
          f"{', '.join(map(str, batch_sizes))} ({repeats} batches each)")
