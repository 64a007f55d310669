"""Checkers of chapters/03_3_model_trimming.ipynb's exercises: a right answer passes on every backend,
each named mistake is recognised, a learner who has not started is told so, and the checkers'
reference answers are torch.nn.utils.fusion's (fuse_linear_bn_eval / fuse_conv_bn_eval) and torch's
two Linear layers."""
import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from nnopt_lab import backend as B
from nnopt_lab.exercises import model_trimming as ex


# ----------------------------------------------------------------------------- answers, right and wrong
def fold_right(weight, bias, bn):
    scale = bn["gamma"] / (bn["running_var"] + bn["eps"]) ** 0.5
    new_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    bias = 0 * bn["running_mean"] if bias is None else bias
    return new_weight, (bias - bn["running_mean"]) * scale + bn["beta"]


def _fold(mean="running_mean", var="running_var", eps=True, sqrt=True, shift=True, beta=True, scale_bias=True,
          scale_weight=True, columns=False):
    def fold(weight, bias, bn):
        denominator = bn[var] + (bn["eps"] if eps else 0.0)
        scale = bn["gamma"] / (denominator ** 0.5 if sqrt else denominator)
        if columns:
            new_weight = weight * scale.reshape((1, -1))
        elif scale_weight:
            new_weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        else:
            new_weight = weight
        bias = 0 * bn["running_mean"] if bias is None else bias
        shifted = bias - bn[mean] if shift else bias
        return new_weight, (shifted * scale if scale_bias else shifted) + (bn["beta"] if beta else 0.0)
    return fold


FOLD_MISTAKES = [
    (_fold(mean="batch_mean", var="batch_var"), "statistics of the last training batch"),
    (_fold(eps=False), "you forgot eps"),
    (_fold(sqrt=False), "you divided by the variance: "),
    (_fold(sqrt=False, eps=False), "divided by the variance without eps"),
    (_fold(shift=False), "not shifted by the mean"),
    (_fold(beta=False), "beta is missing"),
    (_fold(scale_bias=False), "the bias is not scaled"),
    (_fold(scale_weight=False), "the weight is not scaled"),
    (_fold(columns=True), "input COLUMNS"),
]


def fuse_right(w1, b1, w2, b2):
    return w2 @ w1, w2 @ b1 + b2


FUSE_MISTAKES = [
    (lambda w1, b1, w2, b2: (w2 @ w1, b1 + b2), "the bias is b1 \\+ b2"),
    (lambda w1, b1, w2, b2: (w2 @ w1, w2 @ b1), "b2 is missing"),
    (lambda w1, b1, w2, b2: (w2 @ w1, b2), "W2 b1 is missing"),
    (lambda w1, b1, w2, b2: (w1 @ w2, w2 @ b1 + b2), "wrong order: y = W2"),
    (lambda w1, b1, w2, b2: (w1 @ w2, w1 @ b2 + b1), "wrong order \\(W = W2 @ W1\\) and the bias too"),
]


def not_started(*args):
    raise NotImplementedError()


def broken(*args):
    return 1 / 0


CHECKERS = [ex.check_fold_batchnorm, ex.check_fuse_linear]


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("backend_name", ["numpy", "torch-cpu"])
def test_right_answers_pass_on_every_backend(backend_name, capsys):
    B.set_backend(backend_name)
    ex.check_fold_batchnorm(fold_right)
    ex.check_fuse_linear(fuse_right)
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and "fuse_conv_bn_eval" in out


@pytest.mark.parametrize("answer, words", FOLD_MISTAKES, ids=[w for _, w in FOLD_MISTAKES])
@pytest.mark.parametrize("backend_name", ["numpy", "torch-cpu"])
def test_each_folding_mistake_is_named(backend_name, answer, words):
    B.set_backend(backend_name)
    with pytest.raises(AssertionError, match=words):
        ex.check_fold_batchnorm(answer)


@pytest.mark.parametrize("answer, words", FUSE_MISTAKES, ids=[w for _, w in FUSE_MISTAKES])
def test_each_fusion_mistake_is_named(answer, words):
    with pytest.raises(AssertionError, match=words):
        ex.check_fuse_linear(answer)


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_not_started_and_broken_answers_are_told_apart(checker):
    with pytest.raises(AssertionError, match="not answered yet .*NotImplementedError.* write your answer in the cell above"):
        checker(not_started)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError: division by zero"):
        checker(broken)
    with pytest.raises(TypeError, match="must be a function"):
        checker(3)


def test_an_unknown_wrong_answer_says_where_it_differs():
    def off(weight, bias, bn):
        w, b = fold_right(weight, bias, bn)
        return w, b + 0.5
    with pytest.raises(AssertionError, match=r"wrong bias at index \(0,\): yours .*, expected"):
        ex.check_fold_batchnorm(off)

    def off_weight(w1, b1, w2, b2):
        return w2 @ w1 * 1.01, w2 @ b1 + b2
    with pytest.raises(AssertionError, match="wrong weight at index"):
        ex.check_fuse_linear(off_weight)


def test_answers_of_the_wrong_kind_or_shape():
    with pytest.raises(AssertionError, match=r"must return two arrays \(weight, bias\), got ndarray"):
        ex.check_fold_batchnorm(lambda w, b, bn: w)
    with pytest.raises(AssertionError, match=r"\(bias\) returned shape \(1,\), expected \(4,\)"):
        ex.check_fold_batchnorm(lambda w, b, bn: (fold_right(w, b, bn)[0], [0.0]))
    with pytest.raises(AssertionError, match="could not be read as an array"):
        ex.check_fuse_linear(lambda w1, b1, w2, b2: ("w", "b"))


def test_a_nan_answer_never_passes():
    def nan_fold(weight, bias, bn):
        w, b = fold_right(weight, bias, bn)
        return w * float("nan"), b
    with pytest.raises(AssertionError, match="wrong weight"):
        ex.check_fold_batchnorm(nan_fold)


def _torch_bn(case, dims):
    bn = (torch.nn.BatchNorm1d if dims == 2 else torch.nn.BatchNorm2d)(case["weight"].shape[0],
                                                                        eps=case["bn"]["eps"]).double().eval()
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(case["bn"]["gamma"]))
        bn.bias.copy_(torch.as_tensor(case["bn"]["beta"]))
        bn.running_mean.copy_(torch.as_tensor(case["bn"]["running_mean"]))
        bn.running_var.copy_(torch.as_tensor(case["bn"]["running_var"]))
    return bn


def test_the_folding_reference_is_torch_fusion():
    for case in ex.fold_batchnorm_cases():
        w = torch.as_tensor(case["weight"])
        if w.ndim == 2:
            layer = torch.nn.Linear(w.shape[1], w.shape[0]).double().eval()
        else:
            layer = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=False).double().eval()
        with torch.no_grad():
            layer.weight.copy_(w)
            if case["bias"] is not None:
                layer.bias.copy_(torch.as_tensor(case["bias"]))
        fuse = fuse_linear_bn_eval if w.ndim == 2 else fuse_conv_bn_eval
        fused = fuse(layer, _torch_bn(case, w.ndim))
        ours_w, ours_b = ex.reference_fold(case)
        assert abs(ours_w - fused.weight.detach().numpy()).max() < 1e-12
        assert abs(ours_b - fused.bias.detach().numpy()).max() < 1e-12
        # and the named mistakes really differ from the right answer (a check that cannot fail is a defect)
        for w_bad, b_bad in ex._fold_mistakes(case).values():
            assert abs(w_bad - ours_w).max() + abs(b_bad - ours_b).max() > 1e-6


def test_the_fusion_reference_is_two_torch_linears():
    for case in ex.fuse_linear_cases():
        x = torch.randn(7, case["w1"].shape[1], dtype=torch.float64)
        first, second = (torch.nn.Linear(*case[w].shape[::-1]).double() for w in ("w1", "w2"))
        with torch.no_grad():
            for layer, w, b in ((first, "w1", "b1"), (second, "w2", "b2")):
                layer.weight.copy_(torch.as_tensor(case[w]))
                layer.bias.copy_(torch.as_tensor(case[b]))
            want = second(first(x)).numpy()
        w, b = ex.reference_fuse(case)
        assert abs(x.numpy() @ w.T + b - want).max() < 1e-12
        for w_bad, b_bad in ex._fuse_mistakes(case).values():
            assert w_bad.shape != w.shape or abs(w_bad - w).max() + abs(b_bad - b).max() > 1e-6
