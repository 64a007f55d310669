r"""Knowledge distillation (知识蒸馏): a student learns from a teacher's softened outputs.

Hinton, Vinyals & Dean (2015): soften both networks' logits with a temperature :math:`T`,

.. math:: p^T = \mathrm{softmax}(t / T),\qquad q^T = \mathrm{softmax}(s / T),

and train the student on a mix of the soft-target term and the ordinary cross-entropy,

.. math:: L = \alpha\, T^2\, \frac1N \sum_n \mathrm{KL}\big(p^T_n \,\|\, q^T_n\big)
          + (1 - \alpha)\, \mathrm{CE}(s, y).

Its gradient with respect to the student's logits, written by hand,

.. math:: \frac{\partial L}{\partial s} = \frac{1}{N}\Big(\alpha\, T\, (q^T - p^T)
          + (1 - \alpha)\, (\mathrm{softmax}(s) - \mathrm{onehot}(y))\Big):

the factor :math:`T^2` cancels the :math:`1/T^2` by which softening shrinks the soft-target
gradient (for large :math:`T`, :math:`q^T - p^T \approx (s - t)/(KT)` after centring), so
changing the temperature does not change the balance of the two terms.

* :func:`softmax_temperature`, :func:`log_softmax_temperature` -- the softened distributions;
* :func:`distillation_forward` / :func:`distillation_backward` -- the loss and its gradient;
  :func:`distillation_loss` -- the loss alone;
* :class:`DistillationLoss` -- a :class:`~nnopt_lab.training.loop.BatchLoss` for
  :func:`~nnopt_lab.training.fit`: it runs the frozen teacher (in eval mode) once per batch
  and records the parts ``soft`` and ``hard`` in the history.

See: chapters/05_2_distillation.ipynb
"""
from __future__ import annotations

from typing import Any

from .. import backend as B
from ..nn import functional as F
from ..nn.layers import Module
from ..training.loop import BatchLoss
from ..validation import check_array, check_number, check_probability

__all__ = ["MAX_TEMPERATURE", "softmax_temperature", "log_softmax_temperature", "distillation_forward", "distillation_backward",
           "distillation_loss", "DistillationLoss", "check_temperature"]


MAX_TEMPERATURE = 1e4
"""Largest temperature accepted: far beyond any used (Hinton et al. go to 20); above it T² overflows
the soft term's scale and every softened distribution is uniform to float precision."""


def check_temperature(temperature: Any, name: str = "temperature") -> float:
    """``temperature`` must be a finite number in (0, MAX_TEMPERATURE]; returned as a float.

    See: chapters/05_2_distillation.ipynb
    """
    return check_number(name, temperature, 0.0, MAX_TEMPERATURE, low_open=True)


def softmax_temperature(logits: Any, temperature: float = 1.0) -> Any:
    r"""Softened probabilities :math:`\mathrm{softmax}(z / T)` over the last axis.

    Parameters
    ----------
    logits : (..., K) float
    temperature : float > 0
        :math:`T = 1` is the ordinary softmax; a larger :math:`T` flattens the distribution
        (towards uniform), a smaller one sharpens it (towards one-hot).

    Returns
    -------
    (..., K) array, rows summing to 1.

    See: chapters/05_2_distillation.ipynb
    """
    return F.softmax(check_array("logits", logits) / check_temperature(temperature))


def log_softmax_temperature(logits: Any, temperature: float = 1.0) -> Any:
    r"""Stable :math:`\log\mathrm{softmax}(z / T)` over the last axis (finite for logits of ±1e4).

    See: chapters/05_2_distillation.ipynb
    """
    return F.log_softmax(check_array("logits", logits) / check_temperature(temperature))


def _check_pair(student_logits: Any, teacher_logits: Any) -> None:
    """Two (N, K) float arrays of one backend with the same classes."""
    for name, z in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not hasattr(z, "shape") or getattr(z, "ndim", None) != 2:
            raise ValueError(f"{name} must be a 2-d array (N, K), got "
                             f"{tuple(z.shape) if hasattr(z, 'shape') else type(z).__name__}")
    if not B.same_kind(student_logits, teacher_logits):
        raise TypeError(f"teacher_logits is on {B.backend_of(teacher_logits).name} but student_logits is on "
                        f"{B.backend_of(student_logits).name}: move both to one backend")
    (n, k), (nt, kt) = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if k != kt:
        raise ValueError(f"the teacher has {kt} classes but the student has {k}: distillation needs the same "
                         f"classes in the same order (teacher_logits {(nt, kt)}, student_logits {(n, k)})")
    if n != nt:
        raise ValueError(f"teacher_logits must have one row per row of student_logits ({n}), got {nt}")
    if B.dtype_name(student_logits) != B.dtype_name(teacher_logits):
        raise TypeError(f"teacher_logits is {B.dtype_name(teacher_logits)} but student_logits is "
                        f"{B.dtype_name(student_logits)}: give both the same dtype")


def distillation_forward(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float = 4.0,
                         alpha: float = 0.9):
    r"""Distillation loss of a batch, and the cache for :func:`distillation_backward`.

    .. math:: L = \alpha T^2 \frac1N\sum_n\sum_k p^T_{nk}\big(\log p^T_{nk} - \log q^T_{nk}\big)
              + (1-\alpha)\,\frac1N\sum_n\Big(\log\sum_k e^{s_{nk}} - s_{n,y_n}\Big)

    with :math:`p^T = \mathrm{softmax}(t/T)` (teacher), :math:`q^T = \mathrm{softmax}(s/T)`
    (student). Both logs come from a stable log-softmax, so logits of ±1e4 give finite values; a
    teacher probability that underflows to 0 contributes 0 (as ``torch.nn.functional.kl_div``).

    Parameters
    ----------
    student_logits : (N, K) float, N >= 1
    teacher_logits : (N, K) float, same backend and dtype (treated as constants)
    labels : (N,) int in [0, K)
    temperature : float > 0
    alpha : float in [0, 1]
        Weight of the soft-target term; 0 is plain cross-entropy, 1 ignores the labels.

    Returns
    -------
    loss : 0-d array
    cache : ``("distillation", q^T - p^T, softmax(s) - onehot(y), T, alpha, soft, hard)``
        ``soft`` (:math:`T^2\,\mathrm{KL}`) and ``hard`` (CE) are the two unweighted terms.

    Raises
    ------
    ValueError
        For ``temperature <= 0``, ``alpha`` outside [0, 1], different class counts or row counts.

    See: chapters/05_2_distillation.ipynb
    """
    temperature = check_temperature(temperature)
    alpha = check_probability("alpha", alpha)
    _check_pair(student_logits, teacher_logits)
    hard, ce_cache = F.cross_entropy_forward(student_logits, labels)
    xp = B.namespace(student_logits)
    log_p = F.log_softmax(teacher_logits / temperature)
    log_q = F.log_softmax(student_logits / temperature)
    p = xp.exp(log_p)
    kl = xp.sum(p * (log_p - log_q)) / student_logits.shape[0]
    soft = kl * (temperature * temperature)
    loss = alpha * soft + (1.0 - alpha) * hard
    _, probs, onehot = ce_cache
    return loss, ("distillation", xp.exp(log_q) - p, probs - onehot, temperature, alpha, soft, hard)


def distillation_backward(cache, dloss: float = 1.0) -> Any:
    r""":math:`\partial L/\partial s = \frac{\partial L}{N}\big(\alpha T (q^T - p^T)
    + (1-\alpha)(\mathrm{softmax}(s) - \mathrm{onehot}(y))\big)`, shape (N, K).

    See: chapters/05_2_distillation.ipynb
    """
    if not (isinstance(cache, tuple) and len(cache) == 7 and cache[0] == "distillation"):
        raise TypeError("cache must be the second value returned by distillation_forward")
    dloss = check_number("dloss", dloss)
    _, soft_diff, hard_diff, temperature, alpha, _, _ = cache
    n = soft_diff.shape[0]
    return soft_diff * (dloss * alpha * temperature / n) + hard_diff * (dloss * (1.0 - alpha) / n)


def distillation_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float = 4.0,
                      alpha: float = 0.9) -> Any:
    r"""The distillation loss alone (a 0-d array): :func:`distillation_forward` without the cache.

    Equals ``alpha * T**2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1),
    reduction="batchmean") + (1 - alpha) * F.cross_entropy(s, y)`` in torch.

    See: chapters/05_2_distillation.ipynb
    """
    return distillation_forward(student_logits, teacher_logits, labels, temperature, alpha)[0]


def _check_teacher_mode(teacher: Module) -> None:
    training = [m for m in teacher.modules() if m.training]
    if training:
        raise ValueError(f"the teacher is in training mode ({len(training)} of its modules have training=True): "
                         f"call teacher.eval() first -- a teacher in training mode would drop units and update "
                         f"batch-norm statistics while it teaches")


class DistillationLoss(BatchLoss):
    r"""Teacher -> student loss for :func:`nnopt_lab.training.fit` (a batch-aware loss).

    For each batch ``fit`` calls ``loss(student_logits, labels, inputs)``: the teacher runs once
    on ``inputs`` (its logits are constants: no backward through it, its parameters never
    change), then :func:`distillation_forward`; ``backward()`` returns the gradient for the
    student. ``parts = {"soft": T^2 KL, "hard": CE}`` land in ``history["loss/soft"]`` and
    ``history["loss/hard"]``.

    Parameters
    ----------
    teacher : Module
        Trained, and in evaluation mode (``teacher.eval()``); checked here and at every call.
        The student itself is refused that way: ``fit`` puts it in training mode.
    temperature : float > 0
    alpha : float in [0, 1]

    Attributes
    ----------
    teacher_calls : int
        How many times the teacher ran (one per training batch, one per evaluation).

    Raises
    ------
    ValueError
        For ``temperature <= 0``, ``alpha`` outside [0, 1], a teacher in training mode, or a
        teacher whose class count differs from the student's.

    See: chapters/05_2_distillation.ipynb
    """

    def __init__(self, teacher: Module, temperature: float = 4.0, alpha: float = 0.9):
        if not isinstance(teacher, Module):
            raise TypeError(f"teacher must be an nnopt_lab Module, got {type(teacher).__name__}")
        self.temperature = check_temperature(temperature)
        self.alpha = check_probability("alpha", alpha)
        _check_teacher_mode(teacher)
        self.teacher = teacher
        self.teacher_calls = 0
        self.parts = {}
        self._cache = None

    def teacher_logits(self, inputs: Any) -> Any:
        """The teacher's logits for ``inputs`` (evaluation mode, no gradient kept)."""
        _check_teacher_mode(self.teacher)
        self.teacher_calls += 1
        return self.teacher.forward(inputs)

    def __call__(self, logits: Any, labels: Any, inputs: Any) -> Any:
        teacher_logits = self.teacher_logits(inputs)
        loss, self._cache = distillation_forward(logits, teacher_logits, labels, self.temperature, self.alpha)
        self.parts = {"soft": self._cache[5], "hard": self._cache[6]}
        return loss

    def backward(self, dloss: float = 1.0) -> Any:
        if self._cache is None:
            raise RuntimeError("DistillationLoss.backward was called before the loss: call "
                               "loss(logits, labels, inputs) first")
        return distillation_backward(self._cache, dloss)

    def __repr__(self) -> str:
        return f"DistillationLoss(temperature={self.temperature:g}, alpha={self.alpha:g})"
