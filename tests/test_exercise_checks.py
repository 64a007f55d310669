"""The checker kit shared by every chapter's exercises (nnopt_lab/exercises/checks.py): a learner who
has not started is told so, a learner's error is one clear line, NaN answers are named."""
import math

import numpy as np
import pytest

from nnopt_lab.exercises import batch_size as ex_bs
from nnopt_lab.exercises import checks
from nnopt_lab.exercises import cleaning as ex_clean
from nnopt_lab.exercises import learning_rate as ex_lr
from nnopt_lab.exercises import optimizers as ex_opt
from nnopt_lab.exercises import why_optimize as ex_why


def not_started(*args):
    raise NotImplementedError()


def broken(*args):
    return 1 / 0


@pytest.mark.parametrize("checker", [ex_lr.check_cosine_annealing, ex_lr.check_warmup_cosine, ex_lr.check_plateau,
                                     ex_bs.check_warmup_lr, ex_bs.check_update_count, ex_bs.check_noise_prediction,
                                     ex_bs.check_minibatch_noise,
                                     ex_opt.check_nesterov_step, ex_opt.check_adam_step,
                                     ex_opt.check_clip_by_global_norm, ex_clean.check_mean_filter_1d,
                                     ex_why.check_linear_params, ex_why.check_conv_flops],
                         ids=lambda c: c.__name__)
def test_every_checker_tells_a_learner_who_has_not_started_and_one_whose_code_fails(checker):
    with pytest.raises(AssertionError, match="not answered yet .*NotImplementedError.* write your answer in the cell above"):
        checker(not_started)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError: division by zero"):
        checker(broken)


def test_a_nan_answer_is_a_named_difference_not_a_crash():
    def cosine_nan(t, base_lr, T_max, eta_min):
        return float("nan") if t == 7 else eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max))
    with pytest.raises(AssertionError, match="first difference at step 7: yours nan"):
        ex_lr.check_cosine_annealing(cosine_nan)


def test_the_kit_pieces():
    assert checks.close_numbers([1.0, 2.0], [1.0, 2.0 + 1e-12]) and not checks.close_numbers([float("nan")], [1.0])
    assert checks.diagnose([1.0, 2.0], [1.0, 2.0], {}) is None
    assert checks.diagnose([2.0, 4.0], [1.0, 2.0], {"doubled": [2.0, 4.0]}) == "doubled"
    assert checks.diagnose([1.0], [1.0, 2.0], {}) == "expected 2 values, got 1"
    with pytest.raises(AssertionError, match=r"✗ f\(1,\) returned 'x'; expected a number"):
        checks.numbers("f", lambda v: "x", [(1,)])
    with pytest.raises(AssertionError, match=r"returned shape \(2,\), expected \(3,\)"):
        checks.as_float64(np.zeros(2), "f", (3,))
    with pytest.raises(TypeError, match="f must be a function, got float"):
        checks.call("f", 3.0)
    with pytest.raises(AssertionError, match="✗ g: wrong"):
        checks.verdict("g", "wrong", "x")
    checks.verdict("g", None, "the reference")
