"""Chapter 1's explorer compute function and exercise checkers: right answers pass, wrong ones are
rejected with a message that says what is wrong."""
import pytest

from nnopt_lab.exercises.why_optimize import check_conv_flops, check_linear_params, check_model_bytes
from nnopt_lab.widgets.why_optimize import CostView, cost_grid, explorer, mlp_costs, plot_costs


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


def test_the_explorer_looks_the_sweep_up_and_starts_on_its_grid():
    import matplotlib
    matplotlib.use("Agg")
    widths, depths = [16, 64, 256], [1, 3]
    grids = {1: cost_grid(widths, depths, repeats=2), 8: cost_grid(widths, depths, batch_size=8, repeats=2)}
    view = CostView(grids, "numpy")
    c = view.update(64, 3, 8)
    assert c is grids[8][3][1]                                                   # a look-up, nothing measured
    assert [list(m.get_xdata()) for m in view.markers] == [[64]] * 3
    assert list(view.markers[2].get_ydata()) == [c["latency_ms"]]
    assert list(view.lines["flops"][1].get_ydata()) == [g["flops"] for g in grids[8][1]]
    assert "MLP 64-64-64-64-10, batch 8" in view.text.get_text()
    with pytest.raises(ValueError, match="width"):
        view.update(100, 1)
    with pytest.raises(ValueError, match="grids must share widths"):
        CostView({1: grids[1], 8: cost_grid([16, 64], depths, timed=False)})
    box = explorer(grids)
    width = box.controls["width"]
    assert list(width.options) == widths and width.value == 64                   # on the grid, nearest 100
    first = box.image.value
    width.value = 256
    assert box.image.value != first
    axes = plot_costs(grids[1])
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["16", "64", "256"]   # one label per width


def test_linear_params_checker(capsys):
    check_linear_params(lambda i, o: i * o + o)             # a right answer: no exception, the ✓ verdict
    assert capsys.readouterr().out.startswith("✓ linear_params is right on 4 layers")
    with pytest.raises(AssertionError, match="the bias adds"):
        check_linear_params(lambda i, o: i * o)
    with pytest.raises(AssertionError, match="one bias per OUTPUT"):
        check_linear_params(lambda i, o: (o + 1) * i)
    with pytest.raises(AssertionError, match="has 6500 parameters, you gave 1"):
        check_linear_params(lambda i, o: 1)


def test_conv_flops_checker(capsys):
    check_conv_flops(lambda ci, co, k, h, w: 2 * ci * co * k * k * h * w)
    assert capsys.readouterr().out.startswith("✓ conv_flops is right on 3 layers")
    with pytest.raises(AssertionError, match="multiply-accumulates"):
        check_conv_flops(lambda ci, co, k, h, w: ci * co * k * k * h * w)
    with pytest.raises(AssertionError, match="every one of the"):
        check_conv_flops(lambda ci, co, k, h, w: 2 * ci * co * k * k)


def test_model_bytes_checker(capsys):
    params = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    check_model_bytes(4 * params, params)
    assert capsys.readouterr().out.startswith("✓ LeNet-300-100 takes 1,041 KiB as float32 and 260 KiB as int8 (4× smaller)")
    with pytest.raises(AssertionError, match="did you count parameters instead of bytes"):
        check_model_bytes(params, params)
    with pytest.raises(AssertionError, match="int8: expected 266,610 bytes"):
        check_model_bytes(4 * params, 2 * params)
