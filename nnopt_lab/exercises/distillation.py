r"""Self-check for chapters/05_2_distillation.ipynb: the distillation loss written by the learner.

The learner writes ``distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)``
returning :math:`\alpha T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))`
(batch mean) :math:`+ (1-\alpha)\,\mathrm{CE}(s, y)`. The checker runs it on fixed small inputs,
compares with :func:`nnopt_lab.inference.distillation.distillation_loss` (which the tests hold
equal to torch autograd of the same formula to 1e-12) and, when it differs, names the usual
mistake: no :math:`T^2`, :math:`T` instead of :math:`T^2`, the 'mean' reduction (divides by
:math:`N K`), the KL the wrong way round, the student's logits not divided by :math:`T`, the
weights :math:`\alpha` and :math:`1-\alpha` swapped, a softmax that overflows on large logits.

See: chapters/05_2_distillation.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .. import backend as B
from ..inference.distillation import distillation_loss
from ..nn import functional as F
from . import checks

__all__ = ["check_distillation_loss", "CASES"]

#: (temperature, alpha, logit scale) of the fixed inputs; the last one has logits of ±1000.
CASES = ((4.0, 0.9, 3.0), (2.0, 0.5, 2.0), (1.0, 0.3, 1.0), (10.0, 1.0, 3.0), (3.0, 0.0, 2.0), (2.0, 0.5, 1000.0))


def _inputs(scale: float, seed: int):
    g = B.generator(seed)
    b = B.get_backend("numpy", "float64")
    s = B.to_backend(g.standard_normal((6, 5)) * scale, b)
    t = B.to_backend(g.standard_normal((6, 5)) * scale, b)
    y = B.to_backend(g.integers(0, 5, 6), b, dtype="int64")
    return s, t, y


def _kl(p_logits: Any, q_logits: Any, temperature: float) -> Any:
    """Batch-mean KL(softmax(p/T) || softmax(q/T)), a float."""
    xp = B.namespace(p_logits)
    log_p, log_q = F.log_softmax(p_logits / temperature), F.log_softmax(q_logits / temperature)
    return B.float_of(xp.sum(xp.exp(log_p) * (log_p - log_q))) / p_logits.shape[0]


def _ce(s: Any, y: Any) -> float:
    return B.float_of(F.cross_entropy_forward(s, y)[0])


def _mistakes(s, t, y, T: float, a: float) -> dict[str, float]:
    """The loss each usual mistake gives on these inputs."""
    kl, ce = _kl(t, s, T), _ce(s, y)
    xp = B.namespace(s)
    log_p = F.log_softmax(t / T)
    unsoftened = B.float_of(xp.sum(xp.exp(log_p) * (log_p - F.log_softmax(s)))) / s.shape[0]
    return {
        "the soft term lacks the factor T**2 (its gradient then shrinks like 1/T**2)": a * kl + (1 - a) * ce,
        "the soft term is multiplied by T, not T**2": a * T * kl + (1 - a) * ce,
        "the KL is averaged over N*K entries ('mean'); use the batch mean, divide by N only":
            a * T * T * kl / s.shape[1] + (1 - a) * ce,
        "the KL is the wrong way round: KL(student || teacher); the teacher's distribution p comes first":
            a * T * T * _kl(s, t, T) + (1 - a) * ce,
        "the student's logits are not divided by T (softmax(s), not softmax(s / T))":
            a * T * T * unsoftened + (1 - a) * ce,
        "alpha and 1 - alpha are swapped: alpha weighs the soft (teacher) term": (1 - a) * T * T * kl + a * ce,
        "the hard term is missing: add (1 - alpha) * cross_entropy(student_logits, labels)": a * T * T * kl,
    }


def check_distillation_loss(fn: Callable) -> None:
    """Check the learner's ``distillation_loss(student_logits, teacher_logits, labels, temperature, alpha)``.

    Prints one ✓ line, or raises :class:`~nnopt_lab.exercises.checks.ExerciseFailed` naming the
    mistake (or that the function is not written yet).

    See: chapters/05_2_distillation.ipynb
    """
    checks.require_function("distillation_loss", fn)
    for i, (T, a, scale) in enumerate(CASES):
        s, t, y = _inputs(scale, seed=i)
        got = checks.numbers("distillation_loss", lambda *args: fn(*args), [(s, t, y, T, a)])[0]
        want = B.float_of(distillation_loss(s, t, y, T, a))
        where = f"(temperature={T:g}, alpha={a:g}, logits of size ~{scale:g})"
        if not math.isfinite(got):
            raise checks.ExerciseFailed(
                f"✗ distillation_loss: returned {got} {where}: the softmax overflows on large logits; compute "
                f"log-probabilities with a stable log_softmax (subtract the row's max first)")
        if checks.close_numbers([got], [want], 1e-9):
            continue
        for message, value in _mistakes(s, t, y, T, a).items():
            if checks.close_numbers([got], [value], 1e-9):
                raise checks.ExerciseFailed(f"✗ distillation_loss: {message} {where}")
        raise checks.ExerciseFailed(f"✗ distillation_loss: yours {got:.10g}, expected {want:.10g} {where}")
    print(f"✓ distillation_loss matches nnopt_lab's distillation loss (= torch autograd's formula) "
          f"on {len(CASES)} cases, logits up to ±1e3 included")
