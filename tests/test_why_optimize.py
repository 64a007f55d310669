"""Chapter 1's explorer compute function and exercise checkers: right answers pass, wrong ones are
rejected with a message that says what is wrong."""
import pytest

from nnopt_lab.exercises.why_optimize import check_conv_flops, check_linear_params, check_model_bytes
from nnopt_lab.widgets.why_optimize import cost_grid, mlp_costs


def test_mlp_costs_follow_the_formulas():
    c = mlp_costs(32, 2, input_size=64, classes=10, timed=False)
    params = (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert c["sizes"] == (64, 32, 32, 10)
    assert c["params"] == params
    assert c["bytes_fp32"] == 4 * params and c["bytes_int8"] == params
    assert c["flops"] == 2 * (64 * 32 + 32 * 32 + 32 * 10)
    assert c["latency_ms"] is None
    timed = mlp_costs(8, 0, repeats=3)
    assert timed["sizes"] == (64, 10) and timed["latency_ms"] > 0


def test_cost_grid_and_bad_arguments():
    grid = cost_grid([8, 16], [0, 1], timed=False)
    assert [c["params"] for c in grid[1]] == [64 * 8 + 8 + 8 * 10 + 10, 64 * 16 + 16 + 16 * 10 + 10]
    with pytest.raises(ValueError, match="depth must be an int >= 0, got -1"):
        mlp_costs(8, -1)
    with pytest.raises(ValueError, match="width must be an int >= 1, got 0"):
        mlp_costs(0, 1)


def test_linear_params_checker():
    assert check_linear_params(lambda i, o: i * o + o)
    with pytest.raises(AssertionError, match="the bias adds"):
        check_linear_params(lambda i, o: i * o)
    with pytest.raises(AssertionError, match="one bias per OUTPUT"):
        check_linear_params(lambda i, o: (o + 1) * i)
    with pytest.raises(AssertionError, match="has 6500 parameters, you gave 1"):
        check_linear_params(lambda i, o: 1)


def test_conv_flops_checker():
    assert check_conv_flops(lambda ci, co, k, h, w: 2 * ci * co * k * k * h * w)
    with pytest.raises(AssertionError, match="multiply-accumulates"):
        check_conv_flops(lambda ci, co, k, h, w: ci * co * k * k * h * w)
    with pytest.raises(AssertionError, match="every one of the"):
        check_conv_flops(lambda ci, co, k, h, w: 2 * ci * co * k * k)


def test_model_bytes_checker():
    params = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert check_model_bytes(4 * params, params)
    with pytest.raises(AssertionError, match="did you count parameters instead of bytes"):
        check_model_bytes(params, params)
    with pytest.raises(AssertionError, match="int8: expected 266,610 bytes"):
        check_model_bytes(4 * params, 2 * params)
