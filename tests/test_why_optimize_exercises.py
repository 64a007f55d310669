"""The checker of chapter 1's linear-backward exercise: a right answer passes on numpy and torch
inputs, each named mistake is recognised, a learner who has not started is told so."""
import pytest

from nnopt_lab import backend as B
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed
from nnopt_lab.exercises.why_optimize import check_linear_backward


def right(dout, x, weight):
    xp = B.namespace(dout)
    return dout @ weight, dout.T @ x, xp.sum(dout, axis=0)


def test_right_answer_passes(capsys):
    assert check_linear_backward(right) is None      # returns None: no stray Out[] in the notebook
    assert "✓ linear_backward" in capsys.readouterr().out


def test_right_answer_on_torch_tensors_passes(capsys):
    torch = pytest.importorskip("torch")

    def via_torch(dout, x, weight):
        d, xx, w = (torch.as_tensor(a) for a in (dout, x, weight))
        return right(d, xx, w)
    check_linear_backward(via_torch)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (lambda d, x, w: (d @ w, x.T @ d, d.sum(0)), "transpose"),
    (lambda d, x, w: (d @ w, d.T @ x / len(x), d.sum(0)), "divided by the batch size"),
    (lambda d, x, w: (d @ w, d.T @ x, d.mean(0)), "SUM"),
    (lambda d, x, w: (d @ w, d.T @ x, d.sum(1)), "axis 0"),
    (lambda d, x, w: (d @ w.T[:3, :3] if False else d, d.T @ x, d.sum(0)), "dx has shape (5, 3), expected (5, 4)"),
    (lambda d, x, w: (2 * (d @ w), d.T @ x, d.sum(0)), "dx differs from the reference"),
    (lambda d, x, w: (d @ w, d.T @ x), "three arrays"),
])
def test_each_named_mistake_is_recognised(wrong, words):
    with pytest.raises(ExerciseFailed) as err:
        check_linear_backward(wrong)
    assert words in str(err.value)
    assert "[[" not in str(err.value)                 # no array dumped


def test_not_started_is_told_apart():
    def todo(dout, x, weight):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed, match="not answered yet") as err:
        check_linear_backward(todo)
    assert NOT_STARTED in str(err.value)


def test_an_error_in_the_answer_is_one_line():
    with pytest.raises(ExerciseFailed, match="raised ValueError"):
        check_linear_backward(lambda d, x, w: (d @ x, d, d))
