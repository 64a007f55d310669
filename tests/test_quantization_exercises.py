"""The checkers of chapter 5.3's exercises: a right answer passes, each usual mistake is named, a
learner who has not started is told so; the expected answers equal torch's (fake-quantize codes,
and torch.ao.nn.quantized.Linear on the qnnpack engine, exactly)."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab.exercises import quantization as EQ
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


# ----------------------------------------------------------------------------- exercise 1
def _inverse(s):
    return np.float32(1.0) / np.float32(s)


def _torch_codes(x, s, z, qmin, qmax):
    """The codes of torch.fake_quantize_per_tensor_affine: round(x̂ / s) + z (x̂ / s is within 1e-3 of an integer)."""
    fq = torch.fake_quantize_per_tensor_affine(torch.as_tensor(x), float(s), int(z), qmin, qmax)
    return (torch.round(fq.double() / float(np.float32(s))) + z).numpy()


def _answer(kind="right"):
    def linear_quantize(x, s, z, qmin, qmax):
        y = x * _inverse(s)
        if kind == "away":
            r = np.sign(y) * np.floor(np.abs(y) + 0.5)
        elif kind == "half_up":
            r = np.floor(y + 0.5)
        elif kind == "divide":
            r = np.round(x / np.float32(s))
        elif kind == "floor":
            r = np.floor(y)
        elif kind == "int":
            r = y.astype(np.int64)
        else:
            r = np.round(y)
        if kind == "zp_first":
            q = np.round(y + z)
        elif kind == "minus_zp":
            q = r - z
        else:
            q = r + z
        if kind == "dequantized":
            return (np.clip(q, qmin, qmax) - z) * np.float32(s)
        return q if kind == "no_clamp" else np.clip(q, qmin, qmax)
    return linear_quantize


def test_the_expected_codes_are_torchs_fake_quantize_codes():
    for case, (s, z, qmin, qmax, _) in enumerate(EQ.QUANTIZE_CASES):
        x = EQ._quantize_inputs(case)
        want = B.to_numpy(EQ.quantize(x, s, z, qmin, qmax)).astype(np.float64)
        assert (want == _torch_codes(x, s, z, qmin, qmax)).all()
        assert want.min() == qmin and want.max() == qmax           # every case clamps at both ends


def test_the_cases_hold_ties_and_values_where_dividing_gives_another_code():
    x = EQ._quantize_inputs(2)
    s = np.float32(EQ.QUANTIZE_CASES[2][0])
    assert (np.round(x / s) != np.round(x * _inverse(s))).sum() >= 3
    ties = EQ._quantize_inputs(1) / np.float32(0.5)
    assert (ties - np.floor(ties) == 0.5).sum() >= 10


def test_right_answers_pass(capsys):
    EQ.check_linear_quantize(_answer())
    EQ.check_linear_quantize(lambda x, s, z, qmin, qmax: _torch_codes(x, s, z, qmin, qmax))
    EQ.check_linear_quantize(lambda x, s, z, qmin, qmax: np.clip(np.round(x * (1 / s)) + z, qmin, qmax))  # float64 1/s
    EQ.check_linear_quantize(lambda x, s, z, qmin, qmax: torch.clamp(torch.round(torch.as_tensor(x) * (1 / s)) + z,
                                                                     qmin, qmax).to(torch.int32))
    assert capsys.readouterr().out.count("✓ linear_quantize matches") == 4


@pytest.mark.parametrize("kind, words", [
    ("away", "half away from zero"), ("half_up", "half up"), ("divide", "divides by scale"),
    ("zp_first", "adds the zero point before rounding"), ("floor", "truncates .floor"), ("int", "truncates toward zero"),
    ("minus_zp", "subtracts the zero point"), ("no_clamp", r"outside \[qmin, qmax\]"), ("dequantized", "not an integer"),
])
def test_each_usual_mistake_of_linear_quantize_is_named(kind, words):
    with pytest.raises(ExerciseFailed, match=words):
        EQ.check_linear_quantize(_answer(kind))


def test_torch_quantize_per_tensor_rounds_after_adding_the_zero_point_and_is_told_so():
    def per_tensor(x, s, z, qmin, qmax):
        dtype = torch.quint8 if qmin >= 0 else torch.qint8
        q = torch.quantize_per_tensor(torch.as_tensor(x), float(s), int(z), dtype).int_repr()
        return torch.clamp(q.to(torch.int32), qmin, qmax)
    with pytest.raises(ExerciseFailed, match="torch.quantize_per_tensor rounds your way"):
        EQ.check_linear_quantize(per_tensor)


def test_linear_quantize_not_started_wrong_shape_and_unknown_mistake():
    def linear_quantize(*args):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed) as info:
        EQ.check_linear_quantize(linear_quantize)
    assert NOT_STARTED in str(info.value)
    with pytest.raises(ExerciseFailed, match="returned shape"):
        EQ.check_linear_quantize(lambda x, *a: _answer()(x, *a)[:3])
    with pytest.raises(ExerciseFailed, match="yours .* expected .* codes differ"):
        EQ.check_linear_quantize(lambda x, s, z, lo, hi: np.clip(_answer()(x, s, z, lo, hi) + (x > 1), lo, hi))
    with pytest.raises(TypeError, match="must be a function"):
        EQ.check_linear_quantize(3)


# ----------------------------------------------------------------------------- exercise 2
def _torch_linear(x_q, x_scale, x_zp, w_q, w_scale, bias_q, y_scale, y_zp, engine="qnnpack"):
    """torch.ao.nn.quantized.Linear with these codes; the float bias is b_q S_x S_w (torch requantizes it to b_q)."""
    import torch.ao.nn.quantized as nnq
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        out, k = w_q.shape
        layer = nnq.Linear(k, out, dtype=torch.qint8)
        w = torch._make_per_tensor_quantized_tensor(torch.as_tensor(w_q), w_scale, 0)
        bias = torch.tensor(np.asarray(bias_q, np.float64) * (np.float32(x_scale) * np.float32(w_scale)),
                            dtype=torch.float32)
        layer.set_weight_bias(w, bias)
        layer.scale, layer.zero_point = float(y_scale), int(y_zp)
        return layer(torch._make_per_tensor_quantized_tensor(torch.as_tensor(x_q), x_scale, x_zp)).int_repr().numpy()
    finally:
        torch.backends.quantized.engine = previous


def test_the_expected_outputs_are_torch_qnnpack_exactly_and_clamp_at_both_ends():
    clamped = {0: 0, 255: 0}
    for case in range(len(EQ.LINEAR_CASES)):
        a = EQ._linear_inputs(case)
        want = B.to_numpy(EQ._linear_reference(a))
        assert (want == _torch_linear(*a.values())).all(), f"case {case}"
        clamped[0] += int((want == 0).sum())
        clamped[255] += int((want == 255).sum())
        assert len(np.unique(want)) > 3                               # the outputs are not all one code
    assert clamped[0] > 0 and clamped[255] > 0


def test_the_first_case_is_so_small_that_no_accumulator_leaves_int8():
    a = EQ._linear_inputs(0)
    assert np.abs(B.to_numpy(EQ._accumulator(a))).max() < 128
    big = EQ._linear_inputs(1)
    assert np.abs(B.to_numpy(EQ._accumulator(big))).max() > 2 ** 15     # an int16 accumulator wraps here


def _linear_answer(kind="right"):
    def quantized_linear_forward(x_q, x_scale, x_zp, w_q, w_scale, bias_q, y_scale, y_zp):
        x = x_q if kind == "uint8_sub" else x_q.astype(np.int32)
        w = w_q.astype(np.int16 if kind == "int16" else np.int32)
        if kind == "int16":
            x = x_q.astype(np.int16)
        x = x if kind == "no_zp" else x - x_zp
        acc = x @ w.T
        if kind not in ("no_bias", "bias_out"):
            acc = acc + bias_q
        m = (y_scale / (x_scale * w_scale)) if kind == "inverted" else x_scale * w_scale / y_scale
        y = {"floor": np.floor, "trunc": np.trunc}.get(kind, np.round)(acc * m)
        if kind == "bias_out":
            y = y + bias_q
        y = y + (0 if kind == "no_y_zp" else y_zp)
        if kind == "unclamped":
            return y
        if kind == "wrap":
            return y.astype(np.int64).astype(np.uint8)
        return np.clip(y, 0, 255).astype(np.uint8)
    return quantized_linear_forward


def test_right_answers_of_the_linear_pass(capsys):
    EQ.check_quantized_linear(_linear_answer())
    EQ.check_quantized_linear(_torch_linear)
    assert capsys.readouterr().out.count("✓ quantized_linear_forward matches") == 2


@pytest.mark.parametrize("kind, words", [
    ("no_zp", "zero point is not subtracted"), ("uint8_sub", "computed in uint8"), ("int16", "int16"),
    ("no_bias", "bias is missing"), ("bias_out", "bias is added at the output scale"), ("inverted", "upside down"),
    ("no_y_zp", "output zero point is missing"), ("floor", "truncates .floor"), ("trunc", "truncates toward zero"),
    ("unclamped", r"outside \[0, 255\]"), ("wrap", "not clamped"),
])
def test_each_usual_mistake_of_the_linear_is_named(kind, words):
    with pytest.raises(ExerciseFailed, match=words):
        EQ.check_quantized_linear(_linear_answer(kind))


def test_the_linear_not_started_unknown_mistake_and_shape():
    def quantized_linear_forward(*args):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed) as info:
        EQ.check_quantized_linear(quantized_linear_forward)
    assert NOT_STARTED in str(info.value)
    with pytest.raises(ExerciseFailed, match="returned shape"):
        EQ.check_quantized_linear(lambda *a: _linear_answer()(*a)[:1])
    with pytest.raises(ExerciseFailed, match="not integers"):
        EQ.check_quantized_linear(lambda *a: _linear_answer()(*a) * 0.5)

    def off_by_one_on_big_sums(*a):
        y = _linear_answer()(*a).astype(np.int64)
        return np.clip(y + (a[0].shape[1] > 10), 0, 255)
    with pytest.raises(ExerciseFailed, match="right on the tiny case"):
        EQ.check_quantized_linear(off_by_one_on_big_sums)


def test_the_checkers_on_torch_tensors_too():
    """A learner on the torch backend gets numpy inputs but may return tensors."""
    EQ.check_quantized_linear(lambda *a: torch.as_tensor(_linear_answer()(*a)))
    EQ.check_linear_quantize(lambda x, *a: torch.as_tensor(_answer()(x, *a)))


# ----------------------------------------------------------------------------- exercise 3
def _grid_search(x, bits, steps=100):
    lo, hi = float(x.min()), float(x.max())
    candidates = [(lo * k / steps, hi * k / steps) for k in range(1, steps + 1)]
    return min(candidates, key=lambda r: EQ.range_error(x, r[0], r[1], bits))


def test_range_error_is_the_torch_fake_quantize_error():
    x = EQ._range_inputs(0)
    from torch.ao.quantization import MinMaxObserver
    obs = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=15)
    obs(torch.as_tensor(np.clip(x, -2.0, 3.0)))
    s, z = obs.calculate_qparams()
    xt = torch.as_tensor(x).double()
    want = ((torch.fake_quantize_per_tensor_affine(xt.float(), float(s), int(z), 0, 15).double() - xt) ** 2).mean()
    assert EQ.range_error(x, -2.0, 3.0, 4) == pytest.approx(float(want), rel=1e-6)


def test_a_grid_search_passes_and_clipping_pays_where_the_cases_say(capsys):
    EQ.check_mse_range(_grid_search)
    assert "✓ mse_range" in capsys.readouterr().out
    for case, (_, bits) in enumerate(EQ.RANGE_CASES[:3]):          # at 3-4 bits min-max is far from the best
        x = EQ._range_inputs(case)
        lo, hi = _grid_search(x, bits)
        assert EQ.range_error(x, float(x.min()), float(x.max()), bits) > 1.5 * EQ.range_error(x, lo, hi, bits)


@pytest.mark.parametrize("answer, words", [
    (lambda x, b: (float(x.min()), float(x.max())), "returned the min-max range"),
    (lambda x, b: (float(x.min()) * 0.005, float(x.max()) * 0.005), "clips more than it gains"),
    (lambda x, b: _grid_search(x, b, steps=4), "a finer or wider search"),
    (lambda x, b: (1.0, -1.0), "lo = 1 > hi = -1"),
    (lambda x, b: 3.0, "expected a pair"),
    (lambda x, b: (float("nan"), 1.0), "must be finite"),
])
def test_each_usual_mistake_of_mse_range_is_named(answer, words):
    with pytest.raises(ExerciseFailed, match=words):
        EQ.check_mse_range(answer)


def test_mse_range_not_started():
    def mse_range(x, bits):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed) as info:
        EQ.check_mse_range(mse_range)
    assert NOT_STARTED in str(info.value)
