"""The checker of chapter 5.2's exercise: a right answer passes, each usual mistake is named,
a learner who has not started is told so."""
import pytest
import torch
import torch.nn.functional as TF

from nnopt_lab import backend as B
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed
from nnopt_lab.exercises.distillation import check_distillation_loss


def _torch_loss(s, t, y, T, alpha, *, t_power=2, reduction="batchmean", swap=False, soften_student=True,
                swap_alpha=False, hard=True, naive=False):
    """The loss computed with torch, with one of the usual mistakes switched on."""
    s, t, y = (torch.as_tensor(B.to_numpy(a)) for a in (s, t, y))
    if naive:     # softmax then log, no max subtraction: overflows on large logits
        log_q = torch.log(torch.exp(s / T) / torch.exp(s / T).sum(1, keepdim=True))
    else:
        log_q = TF.log_softmax(s / T if soften_student else s, 1)
    p = TF.softmax(t / T, 1)
    if swap:
        kl = TF.kl_div(TF.log_softmax(t / T, 1), TF.softmax(s / T, 1), reduction=reduction)
    else:
        kl = TF.kl_div(log_q, p, reduction=reduction)
    a_soft, a_hard = (1 - alpha, alpha) if swap_alpha else (alpha, 1 - alpha)
    loss = a_soft * T ** t_power * kl
    if hard:
        loss = loss + a_hard * TF.cross_entropy(s, y)
    return loss.item()


def test_right_answer_passes(capsys):
    check_distillation_loss(lambda s, t, y, T, a: _torch_loss(s, t, y, T, a))
    assert "✓ distillation_loss matches" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:reduction. .mean.")
@pytest.mark.parametrize("mistake, words", [
    (dict(t_power=0), "lacks the factor T**2"),
    (dict(t_power=1), "multiplied by T, not T**2"),
    (dict(reduction="mean"), "'mean'"),
    (dict(swap=True), "wrong way round"),
    (dict(soften_student=False), "not divided by T"),
    (dict(swap_alpha=True), "swapped"),
    (dict(hard=False), "hard term is missing"),
    (dict(naive=True), "overflows"),
])
def test_each_usual_mistake_is_named(mistake, words):
    with pytest.raises(ExerciseFailed, match=words.replace("*", r"\*").replace("(", r"\(")):
        check_distillation_loss(lambda s, t, y, T, a: _torch_loss(s, t, y, T, a, **mistake))


def test_an_unknown_mistake_shows_both_numbers():
    with pytest.raises(ExerciseFailed, match="yours .* expected"):
        check_distillation_loss(lambda s, t, y, T, a: _torch_loss(s, t, y, T, a) + 0.01)


def test_not_started_is_told_apart():
    def distillation_loss(s, t, y, T, a):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailed) as info:
        check_distillation_loss(distillation_loss)
    assert NOT_STARTED in str(info.value)


def test_a_crash_is_one_line_and_a_non_function_is_refused():
    with pytest.raises(ExerciseFailed, match="raised ZeroDivisionError"):
        check_distillation_loss(lambda *args: 1 / 0)
    with pytest.raises(TypeError, match="must be a function"):
        check_distillation_loss(3.0)
