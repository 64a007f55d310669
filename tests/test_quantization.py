"""nnopt_lab.compression.quantization against torch's quantization references.

References: torch.fake_quantize_per_tensor_affine / _per_channel_affine (values),
torch.quantize_per_tensor(...).int_repr() (codes), torch.ao.quantization.MinMaxObserver (qparams).
"""
import math

import numpy as np
import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver

from nnopt_lab import backend as B
from nnopt_lab.compression import quantization as Q


def f32(value: float) -> float:
    """A Python float that float32 represents exactly (torch stores scales as float32)."""
    return float(np.float32(value))


def data(n=4000, spread=3.0, seed=1, dtype="float64"):
    x = B.generator(seed).standard_normal(n) * spread
    return x.astype(dtype)


def with_ties(x, scale, count=40):
    """Overwrite the first entries with exact ties (k + 1/2)·scale of round(x / scale)."""
    x = x.copy()
    x[:count] = (np.arange(count) - count // 2 + 0.5) * scale
    return x


def torch_fq(x, scale, zero_point, qmin, qmax):
    return torch.fake_quantize_per_tensor_affine(torch.from_numpy(np.asarray(x)), scale, zero_point,
                                                 qmin, qmax).numpy()


# ----------------------------------------------------------------------------- integer_range / qparams
def test_integer_range_values():
    assert Q.integer_range(8) == (0, 255)
    assert Q.integer_range(8, symmetric=True) == (-127, 127)
    assert Q.integer_range(1) == (0, 1)
    assert Q.integer_range(2, symmetric=True) == (-1, 1)
    assert Q.integer_range(16) == (0, 65535)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
# (no range whose zero point is an exact tie: torch computes it in float32, we in float64)
@pytest.mark.parametrize("lo,hi", [(-1.3, 2.7), (0.4, 5.0), (-6.0, -0.5), (-2.0, 2.2)])
def test_qparams_affine_match_minmax_observer(bits, lo, hi):
    obs = MinMaxObserver(dtype=torch.quint8 if bits <= 8 else torch.qint32, quant_min=0,
                         quant_max=2 ** bits - 1)
    obs(torch.tensor([lo, hi]))
    ref_scale, ref_zp = obs.calculate_qparams()
    scale, zp = Q.qparams(lo, hi, bits)
    assert isinstance(zp, int)
    assert scale == pytest.approx(float(ref_scale), rel=1e-6)
    assert zp == int(ref_zp)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("lo,hi", [(-1.3, 2.7), (0.4, 5.0), (-6.0, -0.5)])
def test_qparams_symmetric_match_minmax_observer(bits, lo, hi):
    top = 2 ** (bits - 1) - 1
    obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-top, quant_max=top)
    obs(torch.tensor([lo, hi]))
    ref_scale, ref_zp = obs.calculate_qparams()
    scale, zp = Q.qparams(lo, hi, bits, symmetric=True)
    assert scale == pytest.approx(float(ref_scale), rel=1e-6)
    assert zp == int(ref_zp) == 0


@pytest.mark.parametrize("symmetric", [False, True])
def test_zero_is_exactly_representable(symmetric, be64):
    for lo, hi in [(-0.37, 1.91), (0.2, 3.3), (-5.1, -0.3)]:
        scale, zp = Q.qparams(lo, hi, 8, symmetric)
        qmin, qmax = Q.integer_range(8, symmetric)
        zero = be64.asarray(np.zeros(3))
        assert B.to_numpy(Q.fake_quantize(zero, scale, zp, qmin, qmax)).tolist() == [0.0, 0.0, 0.0]


def test_qparams_of_all_zero_range_is_usable():
    assert Q.qparams(0.0, 0.0, 8) == (1.0, 0)
    assert Q.qparams(0.0, 0.0, 8, symmetric=True) == (1.0, 0)


# ----------------------------------------------------------------------------- fake_quantize vs torch
@pytest.mark.parametrize("bits,symmetric,lo,hi", [(8, False, -1.0, 2.5), (4, False, -3.0, 3.0),
                                                  (8, True, -4.0, 4.0), (3, True, -2.0, 1.0),
                                                  (2, False, 0.0, 1.0), (16, False, -5.0, 5.0)])
def test_fake_quantize_float32_is_bit_identical_to_torch(be32, bits, symmetric, lo, hi):
    scale, zp = Q.qparams(lo, hi, bits, symmetric)
    scale = f32(scale)          # torch keeps the scale as float32
    qmin, qmax = Q.integer_range(bits, symmetric)
    x = with_ties(data(dtype="float32"), scale).astype("float32")       # includes clamped values
    ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax))
    ref = torch_fq(x, scale, zp, qmin, qmax)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("scale,zp", [(0.25, 7), (0.125, 0), (2.0, 100)])
def test_fake_quantize_float64_is_exact_for_power_of_two_scales(be64, scale, zp):
    # torch's float64 kernel uses a float32 scale; with power-of-two scales every step is exact
    x = with_ties(data(), scale)
    ours = B.to_numpy(Q.fake_quantize(be64.asarray(x), scale, zp, 0, 255))
    np.testing.assert_array_equal(ours, torch_fq(x, scale, zp, 0, 255))


def test_fake_quantize_float64_other_scales_within_float32_scale_error(be64):
    scale, zp = f32(0.0371), 31
    x = data()                        # random: no entry within 1e-7 of a rounding tie
    ours = B.to_numpy(Q.fake_quantize(be64.asarray(x), scale, zp, 0, 255))
    np.testing.assert_allclose(ours, torch_fq(x, scale, zp, 0, 255), rtol=1e-7, atol=1e-12)


def test_rounding_is_half_to_even(be64):
    x = be64.asarray(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5]))
    codes = B.to_numpy(Q.quantize(x, 1.0, 0, -128, 127))
    assert codes.tolist() == [-2, -2, 0, 0, 2, 2, 4]


# ----------------------------------------------------------------------------- codes vs quantize_per_tensor
QPT_DEPRECATED = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


@QPT_DEPRECATED
@pytest.mark.parametrize("symmetric", [False, True])
def test_codes_match_torch_quantize_per_tensor(be32, symmetric):
    lo, hi = -2.0, 3.0
    scale, zp = Q.qparams(lo, hi, 8, symmetric)
    scale = f32(scale)
    qmin, qmax = Q.integer_range(8, symmetric)
    x = np.clip(data(dtype="float32"), lo, hi)
    ours = B.to_numpy(Q.quantize(be32.asarray(x), scale, zp, qmin, qmax))
    ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp,
                                    torch.qint8 if symmetric else torch.quint8).int_repr().numpy()
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref.astype(np.int64))


@QPT_DEPRECATED
def test_codes_at_ties_match_torch_for_even_zero_point(be32):
    # quantize_per_tensor rounds x/Δ + z, fake-quant and we round x/Δ then add z: the same
    # unless x/Δ is an exact tie and z is odd (then torch's quantize_per_tensor rounds to odd)
    scale, zp = 0.25, 8
    x = with_ties(data(dtype="float32"), scale).astype("float32").clip(-2.0, 2.0)
    ours = B.to_numpy(Q.quantize(be32.asarray(x), scale, zp, 0, 255))
    ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8).int_repr().numpy()
    np.testing.assert_array_equal(ours, ref.astype(np.int64))


@QPT_DEPRECATED
def test_dequantize_matches_torch(be32):
    scale, zp = f32(0.0371), 100
    x = data(dtype="float32")
    q = Q.quantize(be32.asarray(x), scale, zp, 0, 255)
    ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8).dequantize().numpy()
    np.testing.assert_array_equal(B.to_numpy(Q.dequantize(q, scale, zp)), ref)


def test_per_channel_scale_matches_torch_per_channel(be32):
    x = data(600, dtype="float32").reshape(3, 200)
    scales = np.array([0.02, 0.05, 0.11], dtype=np.float32)
    zps = np.array([0, 100, 255], dtype=np.int64)
    ours = Q.fake_quantize(be32.asarray(x), be32.asarray(scales)[:, None],
                           B.to_backend(zps, be32)[:, None], 0, 255)
    ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(scales),
                                                 torch.from_numpy(zps).int(), 0, 0, 255).numpy()
    np.testing.assert_array_equal(B.to_numpy(ours), ref)


# ----------------------------------------------------------------------------- round trips, seed example
@pytest.mark.parametrize("symmetric", [False, True])
def test_integer_inputs_round_trip_exactly(be64, symmetric):
    qmin, qmax = Q.integer_range(8, symmetric)
    x = np.arange(qmin, qmax + 1, dtype=np.float64)
    q = Q.quantize(be64.asarray(x), 1.0, 0, qmin, qmax)
    np.testing.assert_array_equal(B.to_numpy(q), x.astype(np.int64))
    np.testing.assert_array_equal(B.to_numpy(Q.dequantize(q, 1.0, 0, dtype="float64")), x)
    # and the multiples of a scale, with a zero point
    scale, zp = 0.125, -qmin
    y = x * scale                                                        # codes x - qmin
    back = Q.dequantize(Q.quantize(be64.asarray(y), scale, zp, 0, qmax - qmin), scale, zp, dtype="float64")
    np.testing.assert_array_equal(B.to_numpy(back), y)


def test_seed_example_is_a_step_two_uniform_quantizer(be64):
    data_ = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    seed_result = np.round(np.array(data_) / 2) * 2                       # seed §4.1.3, as written
    ours = Q.fake_quantize(be64.asarray(np.array(data_, dtype=np.float64)), 2.0, 0, 0, 255)
    np.testing.assert_array_equal(B.to_numpy(ours), seed_result)
    assert seed_result.tolist() == [2, 4, 4, 4, 6, 8, 8, 8, 10]


# ----------------------------------------------------------------------------- quantize_uniform
@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_quantize_uniform_matches_torch_and_has_2k_levels(be32, bits):
    lo, hi = -1.0, 3.0
    x = B.generator(4).uniform(lo - 0.5, hi + 0.5, 2001).astype(np.float32)     # no exact ties
    ours = B.to_numpy(Q.quantize_uniform(be32.asarray(x), bits, lo, hi))
    scale = (hi - lo) / (2 ** bits - 1)
    ref = torch_fq((x - np.float32(lo)), f32(scale), 0, 0, 2 ** bits - 1) + np.float32(lo)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    levels = np.unique(ours)
    assert len(levels) == 2 ** bits
    assert levels[0] == lo and levels[-1] == pytest.approx(hi, abs=1e-6)


def test_one_bit_uniform_is_threshold_at_midpoint(be64):
    x = B.generator(3).uniform(0.0, 1.0, 500)
    ours = B.to_numpy(Q.quantize_uniform(be64.asarray(x), 1, 0.0, 1.0))
    np.testing.assert_array_equal(ours, (x > 0.5).astype(np.float64))


def test_stochastic_rounding_is_unbiased(be64):
    x = be64.asarray(np.full(40000, 0.3))
    out = B.to_numpy(Q.fake_quantize(x, 1.0, 0, -8, 8, rounding="stochastic"))
    assert set(np.unique(out).tolist()) == {0.0, 1.0}
    # mean 0.3, std of the mean sqrt(0.21/40000) = 0.0023: 5 sigma
    assert abs(out.mean() - 0.3) < 0.012
    out2 = B.to_numpy(Q.quantize_uniform(x, 2, 0.0, 1.0, rounding="stochastic"))   # levels 0, 1/3, ...
    np.testing.assert_allclose(np.unique(out2), [0.0, 1 / 3], rtol=1e-15)
    assert abs(out2.mean() - 0.3) < 0.012


def test_stochastic_rounding_repeats_with_the_seed(be64):
    x = be64.asarray(data(100))
    B.seed(5)
    a = B.to_numpy(Q.fake_quantize(x, 0.5, 0, -64, 64, rounding="stochastic"))
    B.seed(5)
    b = B.to_numpy(Q.fake_quantize(x, 0.5, 0, -64, 64, rounding="stochastic"))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bits", [0, 17, -1, 2.0, True])
def test_bad_bits_raise(bits):
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got"):
        Q.qparams(0.0, 1.0, bits)


def test_one_bit_symmetric_raises():
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 16\], got 1"):
        Q.integer_range(1, symmetric=True)


def test_bad_range_raises():
    with pytest.raises(ValueError, match=r"x_max must be >= x_min, got x_min=3.0, x_max=1.0"):
        Q.qparams(3.0, 1.0, 8)
    with pytest.raises(ValueError, match=r"x_min must be a finite number, got nan"):
        Q.qparams(math.nan, 1.0, 8)
    with pytest.raises(ValueError, match=r"hi must be > lo, got lo=1.0, hi=1.0"):
        Q.quantize_uniform(np.zeros(3), 4, 1.0, 1.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf])
def test_bad_scale_raises(scale):
    with pytest.raises(ValueError, match=r"scale must be a finite number"):
        Q.fake_quantize(np.zeros(3), scale, 0, 0, 255)


def test_bad_array_scale_raises():
    with pytest.raises(ValueError, match=r"scale must be finite numbers > 0"):
        Q.fake_quantize(np.zeros((2, 3)), np.array([[0.1], [0.0]]), 0, 0, 255)


def test_bad_zero_point_and_range_raise():
    with pytest.raises(ValueError, match=r"zero_point must be in \[qmin, qmax\] = \[0, 255\], got 300"):
        Q.quantize(np.zeros(3), 0.1, 300, 0, 255)
    with pytest.raises(TypeError, match=r"zero_point must be an int, got 1.5"):
        Q.quantize(np.zeros(3), 0.1, 1.5, 0, 255)
    with pytest.raises(ValueError, match=r"qmin must be < qmax, got qmin=5, qmax=5"):
        Q.quantize(np.zeros(3), 0.1, 5, 5, 5)
    with pytest.raises(ValueError, match=r"qmax - qmin must be <= 2\*\*16 - 1"):
        Q.quantize(np.zeros(3), 0.1, 0, 0, 2 ** 20)


def test_bad_x_and_rounding_raise():
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int64"):
        Q.quantize(np.arange(3), 0.1, 0, 0, 255)
    with pytest.raises(ValueError, match=r"x must be finite to be quantized"):
        Q.quantize(np.array([0.0, math.nan]), 0.1, 0, 0, 255)
    with pytest.raises(ValueError, match=r"rounding must be one of \('nearest', 'stochastic'\), got 'up'"):
        Q.fake_quantize(np.zeros(3), 0.1, 0, 0, 255, rounding="up")
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        Q.dequantize(np.zeros(3, dtype=np.int64), 0.1, 0, dtype="int8")
