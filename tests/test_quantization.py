"""nnopt_lab.compression.quantization against torch's quantization references, bit for bit.

References: torch.ao.quantization.MinMaxObserver / PerChannelMinMaxObserver (scale, zero point),
torch.fake_quantize_per_tensor_affine / _per_channel_affine (values and codes),
torch.quantize_per_tensor(...).int_repr() / .dequantize() (codes, values).
Ranges and inputs come from seeded random trials that include exact rounding ties, values one
float32 step from a tie, tiny ranges (1e-38, 1e-45), empty ranges, ranges without 0 and huge ones.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from nnopt_lab import backend as B
from nnopt_lab.compression import quantization as Q

QPT_DEPRECATED = pytest.mark.filterwarnings("ignore:.*quantize_per_tensor:UserWarning",
                                            "ignore:.*quantized:UserWarning")


# ----------------------------------------------------------------------------- references
def f32(value: float) -> float:
    """A Python float that float32 represents exactly (torch stores scales as float32)."""
    return float(np.float32(value))


def observer_dtype(bits, symmetric):
    if bits > 8:
        return torch.qint32
    return torch.qint8 if symmetric else torch.quint8


def torch_qparams(lo, hi, bits, symmetric=False):
    """MinMaxObserver's (scale, zero point) for the range [lo, hi] on our integer range."""
    qmin, qmax = Q.integer_range(bits, symmetric)
    obs = MinMaxObserver(dtype=observer_dtype(bits, symmetric), quant_min=qmin, quant_max=qmax,
                         qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    obs(torch.tensor([lo, hi], dtype=torch.float32))
    scale, zero_point = obs.calculate_qparams()
    return float(scale), int(zero_point)


def torch_fq(x, scale, zero_point, qmin, qmax):
    return torch.fake_quantize_per_tensor_affine(torch.from_numpy(np.asarray(x)), scale, zero_point,
                                                 qmin, qmax).numpy()


def codes_of(values, scale, zero_point):
    """The codes behind fake-quantized values: (q - z)·Δ is within float32 rounding of an integer."""
    return np.round(np.asarray(values, dtype=np.float64) / np.float64(scale)) + zero_point


def random_range(g):
    """One range [lo, hi] of a random kind (the kinds the issue names), as Python floats."""
    kind = int(g.integers(8))
    if kind == 0:                                               # ordinary, any magnitude
        lo, hi = sorted(g.normal(size=2) * 10.0 ** g.uniform(-6, 6))
    elif kind == 1:                                             # simple fractions: ties in the zero point
        lo, hi = -int(g.integers(1, 40)) / int(g.integers(1, 9)), int(g.integers(1, 40)) / int(g.integers(1, 9))
    elif kind == 2:                                             # empty range
        lo = hi = float(g.normal() * 10.0 ** g.uniform(-46, 3))
    elif kind == 3:                                             # all negative
        lo, hi = sorted(-np.abs(g.normal(size=2)) * 10.0 ** g.uniform(-10, 10))
    elif kind == 4:                                             # all positive (0 not inside)
        lo, hi = sorted(np.abs(g.normal(size=2)) * 10.0 ** g.uniform(-10, 10))
    elif kind == 5:                                             # tiny
        lo, hi = sorted(g.normal(size=2) * 10.0 ** g.uniform(-46, -36))
    elif kind == 6:                                             # huge
        lo, hi = sorted(g.normal(size=2) * 10.0 ** g.uniform(36, 37.9))
    else:                                                       # symmetric about 0
        hi = float(2.0 ** g.integers(-10, 10)) * int(g.integers(1, 9))
        lo = -hi
    return float(lo), float(hi)


def random_scheme(g, max_bits=8):
    symmetric = bool(g.integers(2))
    bits = int(g.integers(2, max_bits + 1))
    return bits, symmetric


def inputs_for(g, scale, zero_point, qmin, qmax, n=400, dtype=np.float32):
    """Values over and beyond the code range, with exact ties (k + 1/2)·Δ, their float neighbours and 0."""
    k = g.integers(qmin - zero_point - 3, qmax - zero_point + 3, size=n)
    ties = ((k + 0.5) * np.float64(scale)).astype(dtype)
    near = np.nextafter(ties, np.where(g.integers(2, size=n) == 1, np.inf, -np.inf).astype(dtype))
    spread = g.uniform(qmin - zero_point - 4, qmax - zero_point + 4, size=n) * scale
    spread = np.clip(spread, -3e38, 3e38).astype(dtype)
    return np.concatenate([ties, near, spread, np.zeros(3, dtype=dtype)])


# ----------------------------------------------------------------------------- integer_range / code_dtype
def test_integer_range_values():
    assert Q.integer_range(8) == (0, 255)
    assert Q.integer_range(8, symmetric=True) == (-127, 127)
    assert Q.integer_range(1) == (0, 1)
    assert Q.integer_range(2, symmetric=True) == (-1, 1)
    assert Q.integer_range(16) == (0, 65535)
    assert Q.integer_range(np.int64(4)) == (0, 15)               # numpy integers are accepted


def test_code_dtype_is_the_narrowest():
    assert Q.code_dtype(0, 255) == "uint8"
    assert Q.code_dtype(0, 1) == "uint8"
    assert Q.code_dtype(-127, 127) == "int8"
    assert Q.code_dtype(-128, 127) == "int8"
    assert Q.code_dtype(0, 4095) == "int32"
    assert Q.code_dtype(-2047, 2047) == "int32"
    assert Q.code_dtype(-1, 255) == "int32"


# ----------------------------------------------------------------------------- qparams vs MinMaxObserver
def test_qparams_match_minmax_observer_bit_for_bit_on_random_ranges():
    g = B.generator(7)
    trials = 0
    for _ in range(1500):
        lo, hi = random_range(g)
        bits, symmetric = random_scheme(g, max_bits=16)
        assert Q.qparams(lo, hi, bits, symmetric) == torch_qparams(lo, hi, bits, symmetric), (lo, hi, bits, symmetric)
        trials += 1
    assert trials == 1500


@pytest.mark.parametrize("bits", range(1, 17))
def test_qparams_affine_every_bit_width(bits):
    for lo, hi in [(-1.3, 2.7), (0.4, 5.0), (-6.0, -0.5), (-2.0, 2.2), (-1.0, 1.0), (-0.5, 1.5)]:
        scale, zp = Q.qparams(lo, hi, bits)
        assert isinstance(scale, float) and isinstance(zp, int)
        assert (scale, zp) == torch_qparams(lo, hi, bits)


@pytest.mark.parametrize("bits", range(2, 17))
def test_qparams_symmetric_every_bit_width(bits):
    for lo, hi in [(-1.3, 2.7), (0.4, 5.0), (-6.0, -0.5), (-1.0, 1.0)]:
        assert Q.qparams(lo, hi, bits, symmetric=True) == torch_qparams(lo, hi, bits, True)
        assert Q.qparams(lo, hi, bits, symmetric=True)[1] == 0


def test_zero_point_of_minus_one_to_one_is_torchs_127():
    # the case: in float64, -1 / (2/255) is the exact tie -127.5, which rounds to -128 and
    # gives z = 128; torch computes Δ and -1/Δ in float32, where the quotient is just above the tie
    assert 0 - round(-1.0 / (2.0 / 255.0)) == 128                 # the float64 answer (before the fix)
    assert torch_qparams(-1.0, 1.0, 8) == (f32(2 / 255), 127)
    assert Q.qparams(-1.0, 1.0, 8) == (f32(2 / 255), 127)


def test_symmetric_four_bit_sends_half_to_torchs_code(be32):
    # Δ = float32(1/7); 0.5 / Δ is the tie 3.5 in exact arithmetic (code 4), 3.4999998 in float32
    scale, zp = Q.qparams(-1.0, 1.0, 4, symmetric=True)
    assert (scale, zp) == torch_qparams(-1.0, 1.0, 4, True) == (f32(1 / 7), 0)
    x = np.array([0.5, -0.5, 1.5 / 7, 0.0], dtype=np.float32)
    ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, -7, 7))
    ref = torch_fq(x, scale, zp, -7, 7)
    np.testing.assert_array_equal(ours, ref)
    assert B.to_numpy(Q.quantize(be32.asarray(x), scale, zp, -7, 7)).tolist()[0] == 3
    assert round(0.5 / (1 / 7)) == 4                               # exact arithmetic (before the fix)


TINY_RANGES = [(-1e-38, 1e-38), (0.0, 1e-38), (-1e-45, 0.0), (0.0, 1e-45), (1e-45, 1e-45),
               (-1e-46, 1e-46), (0.0, 0.0), (-3e-39, 2e-40), (5e-39, 5e-38), (-1e-37, -1e-38)]


@pytest.mark.parametrize("lo,hi", TINY_RANGES)
@pytest.mark.parametrize("symmetric", [False, True])
def test_tiny_ranges_clamp_the_scale_and_keep_zero_exact(be32, lo, hi, symmetric):
    # before: Δ ~ 1e-40 made 1/Δ overflow float32 and 0 · inf turned 0.0 into NaN
    for bits in (2, 8):
        scale, zp = Q.qparams(lo, hi, bits, symmetric)
        assert (scale, zp) == torch_qparams(lo, hi, bits, symmetric)
        assert scale == Q.SCALE_EPS == float(torch.finfo(torch.float32).eps)
        qmin, qmax = Q.integer_range(bits, symmetric)
        x = np.array([0.0, -0.0, lo, hi, (lo + hi) / 2], dtype=np.float32)
        ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax))
        assert np.isfinite(ours).all()
        assert ours[0] == 0.0 and ours[1] == 0.0
        np.testing.assert_array_equal(ours, torch_fq(x, scale, zp, qmin, qmax))


@pytest.mark.parametrize("lo,hi", [(-1e38, 1e38), (0.0, 3.4e38), (-3.4e38, -1e38), (-1.7e38, 1.7e38),
                                   (2e38, 3e38)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_huge_ranges_match_torch(be32, lo, hi, symmetric):
    scale, zp = Q.qparams(lo, hi, 8, symmetric)
    assert (scale, zp) == torch_qparams(lo, hi, 8, symmetric)
    qmin, qmax = Q.integer_range(8, symmetric)
    x = np.array([0.0, lo, hi, lo / 3, hi / 7], dtype=np.float32)
    ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax))
    assert np.isfinite(ours).all() and ours[0] == 0.0
    np.testing.assert_array_equal(ours, torch_fq(x, scale, zp, qmin, qmax))


def test_range_wider_than_float32_raises_where_torch_returns_an_infinite_scale():
    assert torch_qparams(-3e38, 3e38, 8)[0] == math.inf            # torch: Δ = inf, then 0·inf = NaN
    with pytest.raises(ValueError, match=r"x_max - x_min must fit in float32"):
        Q.qparams(-3e38, 3e38, 8)
    assert Q.qparams(-3e38, 3e38, 8, symmetric=True) == torch_qparams(-3e38, 3e38, 8, True)
    with pytest.raises(ValueError, match=r"x_max must be a float32 number"):
        Q.qparams(0.0, 1e39, 8)


def test_qparams_of_all_zero_range_is_torchs():
    assert Q.qparams(0.0, 0.0, 8) == (Q.SCALE_EPS, 0) == torch_qparams(0.0, 0.0, 8)
    assert Q.qparams(0.0, 0.0, 8, symmetric=True) == (Q.SCALE_EPS, 0) == torch_qparams(0.0, 0.0, 8, True)


FLOAT32S = st.floats(width=32, allow_nan=False, allow_infinity=False)      # subnormals and extremes too
EXHAUSTIVE = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXHAUSTIVE
@given(a=FLOAT32S, b=FLOAT32S, bits=st.integers(2, 16), symmetric=st.booleans())
def test_qparams_equal_minmax_observer_on_any_float32_range(a, b, bits, symmetric):
    lo, hi = min(a, b), max(a, b)
    ref = torch_qparams(lo, hi, bits, symmetric)
    if math.isinf(ref[0]):                                          # the width overflows float32
        with pytest.raises(ValueError, match=r"x_max - x_min must fit in float32"):
            Q.qparams(lo, hi, bits, symmetric)
    else:
        assert Q.qparams(lo, hi, bits, symmetric) == ref


# numpy warns where x·(1/Δ) overflows to inf (a tiny Δ, a huge x); that entry gets the end code, as in torch
@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@EXHAUSTIVE
@given(x=st.lists(FLOAT32S, min_size=1, max_size=20), scale=FLOAT32S, code=st.integers(0, 2 ** 16),
       bits=st.integers(2, 8), signed=st.booleans())
def test_fake_quantize_equals_torch_on_any_float32_input(be32, x, scale, code, bits, signed):
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    zp = qmin + code % (qmax - qmin + 1)
    scale = abs(scale)
    x = np.array(x, dtype=np.float32)
    if not scale > Q.SMALLEST_SCALE:                            # 1/scale overflows float32: refused
        with pytest.raises(ValueError, match=r"scale must be a (finite|float32) number"):
            Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax)
        return
    ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax))
    np.testing.assert_array_equal(ours, torch_fq(x, scale, zp, qmin, qmax))


def test_qparams_accept_numpy_and_torch_scalars():
    ref = Q.qparams(-1.5, 2.0, 8)
    assert Q.qparams(np.float32(-1.5), np.float64(2.0), np.int64(8)) == ref
    assert Q.qparams(torch.tensor(-1.5), torch.tensor(2.0, dtype=torch.float64), 8) == ref
    assert Q.qparams(-1, 2, 8) == torch_qparams(-1.0, 2.0, 8)      # ints are numbers


# ----------------------------------------------------------------------------- fake_quantize vs torch
def test_fake_quantize_float32_is_bit_identical_to_torch_on_random_trials(be32):
    g = B.generator(11)
    for _ in range(150):
        lo, hi = random_range(g)
        bits, symmetric = random_scheme(g)
        scale, zp = Q.qparams(lo, hi, bits, symmetric)
        qmin, qmax = Q.integer_range(bits, symmetric)
        x = inputs_for(g, scale, zp, qmin, qmax)
        ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax))
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, torch_fq(x, scale, zp, qmin, qmax), err_msg=f"{lo, hi, bits, symmetric}")


def test_fake_quantize_float32_with_any_zero_point_and_scale(be32):
    # scales and zero points that no observer returns (odd z, scales of every magnitude)
    g = B.generator(12)
    for _ in range(150):
        bits = int(g.integers(2, 9))
        qmin, qmax = (0, 2 ** bits - 1) if g.integers(2) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        scale = f32(10.0 ** g.uniform(-30, 30))
        zp = int(g.integers(qmin, qmax + 1))
        x = inputs_for(g, scale, zp, qmin, qmax, n=200)
        ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax))
        np.testing.assert_array_equal(ours, torch_fq(x, scale, zp, qmin, qmax))


def test_fake_quantize_rounds_the_scale_to_float32_like_torch(be32):
    x = inputs_for(B.generator(13), f32(0.1), 3, 0, 255)
    ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), 0.1, 3, 0, 255))   # 0.1 is not a float32
    np.testing.assert_array_equal(ours, torch_fq(x, 0.1, 3, 0, 255))


def test_fake_quantize_float64_codes_are_torchs_and_values_exact(be64):
    # torch's float64 kernel multiplies by the float32 1/Δ in float64 (so its codes are ours) and
    # rounds (q - z)·Δ to float32; ours keeps the exact product (q - z)·Δ of a float32 Δ
    g = B.generator(14)
    for _ in range(100):
        lo, hi = random_range(g)
        bits, symmetric = random_scheme(g)
        scale, zp = Q.qparams(lo, hi, bits, symmetric)
        qmin, qmax = Q.integer_range(bits, symmetric)
        x = inputs_for(g, scale, zp, qmin, qmax, dtype=np.float64)
        ours = B.to_numpy(Q.fake_quantize(be64.asarray(x), scale, zp, qmin, qmax))
        ref = torch_fq(x, scale, zp, qmin, qmax)
        assert ours.dtype == np.float64
        codes = B.to_numpy(Q.quantize(be64.asarray(x), scale, zp, qmin, qmax)).astype(np.float64)
        np.testing.assert_array_equal(codes, codes_of(ref, scale, zp))
        np.testing.assert_array_equal(ours, (codes - zp) * scale)        # exact in float64
        np.testing.assert_array_equal(ours.astype(np.float32), ref.astype(np.float32))


def test_infinities_go_to_the_end_codes_like_torch(be32):
    x = np.array([np.inf, -np.inf, 1e30, -1e30], dtype=np.float32)
    ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), 0.5, 3, 0, 15))
    np.testing.assert_array_equal(ours, torch_fq(x, 0.5, 3, 0, 15))
    assert B.to_numpy(Q.quantize(be32.asarray(x), 0.5, 3, 0, 15)).tolist() == [15, 0, 15, 0]


def test_rounding_is_half_to_even(be64):
    x = be64.asarray(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5]))
    codes = B.to_numpy(Q.quantize(x, 1.0, 0, -128, 127))
    assert codes.tolist() == [-2, -2, 0, 0, 2, 2, 4]


@pytest.mark.parametrize("symmetric", [False, True])
def test_zero_is_exactly_representable(be64, symmetric):
    g = B.generator(15)
    for _ in range(300):
        lo, hi = random_range(g)
        bits = int(g.integers(2, 17))
        scale, zp = Q.qparams(lo, hi, bits, symmetric)
        qmin, qmax = Q.integer_range(bits, symmetric)
        zero = be64.asarray(np.zeros(2))
        assert B.to_numpy(Q.fake_quantize(zero, scale, zp, qmin, qmax)).tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------- codes vs torch
@pytest.mark.parametrize("bits,symmetric,dtype", [(8, False, "uint8"), (8, True, "int8"), (4, False, "uint8"),
                                                  (3, True, "int8"), (12, False, "int32"), (16, True, "int32")])
def test_codes_have_the_narrowest_dtype(be32, bits, symmetric, dtype):
    qmin, qmax = Q.integer_range(bits, symmetric)
    codes = Q.quantize(be32.asarray(np.linspace(-3, 3, 50)), 0.01, 0 if symmetric else qmin, qmin, qmax)
    assert B.dtype_name(codes) == dtype
    assert B.is_torch(codes) == be32.is_torch


def test_codes_match_torch_fake_quant_on_random_trials(be32):
    g = B.generator(16)
    for _ in range(100):
        lo, hi = random_range(g)
        bits, symmetric = random_scheme(g)
        scale, zp = Q.qparams(lo, hi, bits, symmetric)
        qmin, qmax = Q.integer_range(bits, symmetric)
        x = inputs_for(g, scale, zp, qmin, qmax)
        ours = B.to_numpy(Q.quantize(be32.asarray(x), scale, zp, qmin, qmax))
        np.testing.assert_array_equal(ours.astype(np.float64), codes_of(torch_fq(x, scale, zp, qmin, qmax), scale, zp))


@QPT_DEPRECATED
def test_symmetric_codes_equal_quantize_per_tensor_at_ties(be32):
    # z = 0: rounding x/Δ and rounding x/Δ + z are one operation, ties included
    g = B.generator(17)
    for _ in range(60):
        lo, hi = random_range(g)
        scale, zp = Q.qparams(lo, hi, 8, symmetric=True)
        x = inputs_for(g, scale, zp, -127, 127)
        ours = B.to_numpy(Q.quantize(be32.asarray(x), scale, zp, -127, 127))
        ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, 0, torch.qint8).int_repr().numpy()
        assert ours.dtype == ref.dtype == np.int8
        np.testing.assert_array_equal(np.clip(ours, -127, 127), np.clip(ref, -127, 127))


@QPT_DEPRECATED
def test_affine_codes_equal_quantize_per_tensor_away_from_ties(be32):
    # quantize_per_tensor rounds the fused x·(1/Δ) + z, so with z ≠ 0 it may differ next to a tie
    # (within float32 rounding of one); everywhere else the codes are equal
    g = B.generator(18)
    compared = 0
    for _ in range(60):
        lo, hi = random_range(g)
        scale, zp = Q.qparams(lo, hi, 8)
        x = np.clip(g.uniform(-zp - 5, 260 - zp, 3000) * scale, -3e38, 3e38).astype(np.float32)
        ours = B.to_numpy(Q.quantize(be32.asarray(x), scale, zp, 0, 255))
        ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8).int_repr().numpy()
        assert ours.dtype == ref.dtype == np.uint8
        y = x.astype(np.float64) * f32(1 / scale)                        # exact product
        clear = np.abs(np.abs(y - np.floor(y)) - 0.5) > 1e-6 * (np.abs(y) + zp + 1)
        np.testing.assert_array_equal(ours[clear], ref[clear])
        compared += int(clear.sum())
    assert compared > 0.99 * 60 * 3000


@QPT_DEPRECATED
def test_dequantize_matches_torch(be32):
    g = B.generator(19)
    for _ in range(50):
        scale, zp = f32(10.0 ** g.uniform(-6, 3)), int(g.integers(0, 256))
        x = (g.normal(size=500) * 60 * scale).astype(np.float32)
        qt = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8)
        ours = Q.dequantize(B.to_backend(qt.int_repr().numpy(), be32), scale, zp)
        np.testing.assert_array_equal(B.to_numpy(ours), qt.dequantize().numpy())


# ----------------------------------------------------------------------------- per channel
def torch_per_channel(x, axis, bits, symmetric):
    qmin, qmax = Q.integer_range(bits, symmetric)
    obs = PerChannelMinMaxObserver(ch_axis=axis, dtype=observer_dtype(bits, symmetric), quant_min=qmin,
                                   quant_max=qmax,
                                   qscheme=torch.per_channel_symmetric if symmetric else torch.per_channel_affine)
    obs(torch.from_numpy(x))
    scale, zero_point = obs.calculate_qparams()
    return obs.min_val.numpy(), obs.max_val.numpy(), scale.numpy(), zero_point.numpy()


def random_channels(g, shape, axis):
    """A tensor whose channels along ``axis`` each take a range of a random kind."""
    x = np.empty(shape, dtype=np.float32)
    moved = np.moveaxis(x, axis, 0)
    for c in range(shape[axis]):
        lo, hi = random_range(g)
        moved[c] = g.uniform(lo, hi, moved[c].shape) if hi > lo else lo
        moved[c].flat[0], moved[c].flat[-1] = lo, hi
    return x


@pytest.mark.parametrize("shape,axis", [((6, 5), 0), ((4, 3, 3, 3), 0), ((2, 7, 4), 1), ((3, 4, 5), -1), ((9, 1), 0)])
def test_per_channel_qparams_match_per_channel_observer(be32, shape, axis):
    g = B.generator(20)
    for _ in range(25):
        bits, symmetric = random_scheme(g, max_bits=16)
        x = random_channels(g, shape, axis)
        ref_min, ref_max, ref_scale, ref_zp = torch_per_channel(x, axis, bits, symmetric)
        x_min, x_max = Q.channel_minmax(be32.asarray(x), axis)
        np.testing.assert_array_equal(B.to_numpy(x_min), ref_min)
        np.testing.assert_array_equal(B.to_numpy(x_max), ref_max)
        scale, zp = Q.qparams_per_channel(x_min, x_max, bits, symmetric)
        assert B.dtype_name(scale) == "float32" and B.dtype_name(zp) == "int32"
        np.testing.assert_array_equal(B.to_numpy(scale), ref_scale)
        np.testing.assert_array_equal(B.to_numpy(zp), ref_zp)
        for c in range(shape[axis]):                                # and each channel is qparams
            assert Q.qparams(float(ref_min[c]), float(ref_max[c]), bits, symmetric) == (
                float(ref_scale[c]), int(ref_zp[c]))


def test_per_channel_qparams_from_float64_ranges_round_them_to_float32(be64):
    lo = np.array([-1.0 / 3, -0.1, 0.0, 1e-41])
    hi = np.array([2.0 / 3, 0.7, 0.0, 1e-40])
    scale, zp = Q.qparams_per_channel(be64.asarray(lo), be64.asarray(hi), 8)
    for c in range(4):
        assert (float(B.to_numpy(scale)[c]), int(B.to_numpy(zp)[c])) == torch_qparams(lo[c], hi[c], 8)


@pytest.mark.parametrize("shape,axis", [((6, 5), 0), ((4, 3, 3, 3), 0), ((2, 7, 4), 1), ((3, 4, 5), -1)])
def test_per_channel_fake_quantize_is_bit_identical_to_torch(be32, be64, shape, axis):
    g = B.generator(21)
    for _ in range(15):
        bits, symmetric = random_scheme(g)
        qmin, qmax = Q.integer_range(bits, symmetric)
        x = random_channels(g, shape, axis)
        scale, zp = Q.qparams_per_channel(*Q.channel_minmax(be32.asarray(x), axis), bits, symmetric)
        s, z = B.to_numpy(scale), B.to_numpy(zp)
        moved = np.moveaxis(x, axis, 0)                        # ties (k + 1/2)·Δ_c in every channel
        half = moved[:, :1].size // 2 or 1
        for c in range(shape[axis]):
            k = g.integers(qmin - z[c] - 2, qmax - z[c] + 2, size=moved[c].size)
            moved[c].flat[:half] = ((k + 0.5) * np.float64(s[c])).astype(np.float32)[:half]
        ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s),
                                                     torch.from_numpy(z), axis % len(shape), qmin, qmax).numpy()
        ours = B.to_numpy(Q.fake_quantize(be32.asarray(x), scale, zp, qmin, qmax, axis=axis))
        np.testing.assert_array_equal(ours, ref)
        codes = Q.quantize(be32.asarray(x), scale, zp, qmin, qmax, axis=axis)
        assert B.dtype_name(codes) == Q.code_dtype(qmin, qmax)
        back = Q.dequantize(codes, scale, zp, axis=axis)
        np.testing.assert_array_equal(B.to_numpy(back), ref)
        # float64: torch's per-channel kernel keeps (q - z)·Δ exact in float64, as we do
        x64 = x.astype(np.float64) * (1 + 1e-9)
        ref64 = torch.fake_quantize_per_channel_affine(torch.from_numpy(x64), torch.from_numpy(s),
                                                       torch.from_numpy(z), axis % len(shape), qmin, qmax).numpy()
        ours64 = Q.fake_quantize(be64.asarray(x64), B.to_backend(s, be64, dtype="float32"),
                                 B.to_backend(z, be64), qmin, qmax, axis=axis)
        np.testing.assert_array_equal(B.to_numpy(ours64), ref64)


def test_broadcast_scale_without_axis_matches_per_channel(be32):
    x = B.generator(1).standard_normal((3, 200)).astype(np.float32)
    scales = np.array([0.02, 0.05, 0.11], dtype=np.float32)
    zps = np.array([0, 100, 255], dtype=np.int32)
    ours = Q.fake_quantize(be32.asarray(x), be32.asarray(scales)[:, None], B.to_backend(zps, be32)[:, None], 0, 255)
    ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(scales),
                                                 torch.from_numpy(zps), 0, 0, 255).numpy()
    np.testing.assert_array_equal(B.to_numpy(ours), ref)


# ----------------------------------------------------------------------------- round trips, seed example
@pytest.mark.parametrize("symmetric", [False, True])
def test_integer_inputs_round_trip_exactly(be64, symmetric):
    qmin, qmax = Q.integer_range(8, symmetric)
    x = np.arange(qmin, qmax + 1, dtype=np.float64)
    q = Q.quantize(be64.asarray(x), 1.0, 0, qmin, qmax)
    np.testing.assert_array_equal(B.to_numpy(q), x)
    np.testing.assert_array_equal(B.to_numpy(Q.dequantize(q, 1.0, 0, dtype="float64")), x)
    scale, zp = 0.125, -qmin                                     # multiples of a scale, with a zero point
    y = x * scale
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


def test_quantize_uniform_float64_levels_are_exact(be64):
    x = B.generator(5).uniform(-0.2, 1.2, 3000)
    ours = B.to_numpy(Q.quantize_uniform(be64.asarray(x), 3, 0.0, 1.0))
    np.testing.assert_allclose(ours, np.clip(np.round(x * 7), 0, 7) / 7, rtol=0, atol=1e-15)


def test_quantize_uniform_on_a_tiny_range_raises_instead_of_nan(be32):
    with pytest.raises(ValueError, match=r"1/Δ must be finite in float32"):
        Q.quantize_uniform(be32.asarray(np.zeros(3)), 8, 0.0, 1e-38)


def test_one_bit_uniform_is_threshold_at_midpoint(be64):
    x = B.generator(3).uniform(0.0, 1.0, 500)
    ours = B.to_numpy(Q.quantize_uniform(be64.asarray(x), 1, 0.0, 1.0))
    np.testing.assert_array_equal(ours, (x > 0.5).astype(np.float64))


# ----------------------------------------------------------------------------- stochastic rounding
def test_stochastic_rounding_is_unbiased(be64):
    x = be64.asarray(np.full(40000, 0.3))
    out = B.to_numpy(Q.fake_quantize(x, 1.0, 0, -8, 8, rounding="stochastic"))
    assert set(np.unique(out).tolist()) == {0.0, 1.0}
    # mean 0.3, std of the mean sqrt(0.21/40000) = 0.0023: 5 sigma
    assert abs(out.mean() - 0.3) < 0.012
    out2 = B.to_numpy(Q.quantize_uniform(x, 2, 0.0, 1.0, rounding="stochastic"))   # levels 0, 1/3, ...
    np.testing.assert_allclose(np.unique(out2), [0.0, 1 / 3], rtol=1e-15)
    assert abs(out2.mean() - 0.3) < 0.012


def test_stochastic_rounding_keeps_exact_codes(be32):
    # before: floor(y + u) in float32 rounded 4096 + u up to 4097 for u > 1 - 2**-12
    x = be32.asarray(np.full(200000, 4096.0, dtype=np.float32))
    out = B.to_numpy(Q.quantize(x, 1.0, 0, 0, 65535, rounding="stochastic"))
    assert (out == 4096).all()


def test_stochastic_rounding_repeats_with_the_seed(be64):
    x = be64.asarray(B.generator(1).standard_normal(100) * 3)
    B.seed(5)
    a = B.to_numpy(Q.fake_quantize(x, 0.5, 0, -64, 64, rounding="stochastic"))
    B.seed(5)
    b = B.to_numpy(Q.fake_quantize(x, 0.5, 0, -64, 64, rounding="stochastic"))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bits,error", [(0, ValueError), (17, ValueError), (-1, ValueError), (2.5, ValueError),
                                        (True, TypeError), ("8", TypeError), (None, TypeError)])
def test_bad_bits_raise(bits, error):
    with pytest.raises(error, match=r"bits must be an int in \[1, 16\], got"):
        Q.qparams(0.0, 1.0, bits)
    with pytest.raises(error, match=r"bits must be an int in \[1, 16\], got"):
        Q.quantize_uniform(np.zeros(3), bits, 0.0, 1.0)


def test_one_bit_symmetric_raises():
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 16\], got 1"):
        Q.integer_range(1, symmetric=True)
    with pytest.raises(TypeError, match=r"symmetric must be a bool, got 1"):
        Q.integer_range(8, symmetric=1)


def test_bad_range_raises():
    with pytest.raises(ValueError, match=r"x_max must be >= x_min, got x_min=3.0, x_max=1.0"):
        Q.qparams(3.0, 1.0, 8)
    with pytest.raises(ValueError, match=r"x_min must be a finite number in \(-inf, inf\), got nan"):
        Q.qparams(math.nan, 1.0, 8)
    with pytest.raises(ValueError, match=r"x_max must be a finite number"):
        Q.qparams(0.0, math.inf, 8)
    with pytest.raises(TypeError, match=r"x_min must be a finite number.*got '0'"):
        Q.qparams("0", 1.0, 8)
    with pytest.raises(ValueError, match=r"x_min must be a float32 number"):
        Q.qparams(-1e39, 1.0, 8)
    with pytest.raises(ValueError, match=r"hi must be > lo, got lo=1.0, hi=1.0"):
        Q.quantize_uniform(np.zeros(3), 4, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"lo must be a finite number"):
        Q.quantize_uniform(np.zeros(3), 4, math.nan, 1.0)


def test_bad_per_channel_ranges_raise():
    lo, hi = np.array([-1.0, 0.0]), np.array([1.0, 2.0])
    with pytest.raises(ValueError, match=r"x_max must be >= x_min in every channel, got x_min\[1\]=0.0, x_max\[1\]=-1.0"):
        Q.qparams_per_channel(lo, np.array([1.0, -1.0]), 8)
    with pytest.raises(ValueError, match=r"x_min must hold finite float32 numbers"):
        Q.qparams_per_channel(np.array([math.nan, 0.0]), hi, 8)
    with pytest.raises(ValueError, match=r"x_max must hold finite float32 numbers"):
        Q.qparams_per_channel(lo, np.array([1e39, 1.0]), 8)
    with pytest.raises(ValueError, match=r"x_min and x_max must be 1-D of one length"):
        Q.qparams_per_channel(lo, np.array([1.0, 2.0, 3.0]), 8)
    with pytest.raises(ValueError, match=r"x_max - x_min must fit in float32"):
        Q.qparams_per_channel(np.array([-3e38]), np.array([3e38]), 8)
    with pytest.raises(TypeError, match=r"x_min must be a floating-point array, got dtype int64"):
        Q.qparams_per_channel(np.array([0, 1]), hi, 8)
    with pytest.raises(TypeError, match=r"x_min and x_max must be on one backend"):
        Q.qparams_per_channel(lo, torch.tensor(hi), 8)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        Q.qparams_per_channel(lo, hi, 0)
    with pytest.raises(ValueError, match=r"x must not hold NaN"):
        Q.channel_minmax(np.array([[1.0, math.nan]]), 0)
    with pytest.raises(ValueError, match=r"axis must be an int in \[-2, 1\], got 2"):
        Q.channel_minmax(np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match=r"x must have entries in every channel"):
        Q.channel_minmax(np.zeros((2, 0)), 0)


@pytest.mark.parametrize("scale,error", [(0.0, ValueError), (-1.0, ValueError), (math.inf, ValueError),
                                         (math.nan, ValueError), (1e-39, ValueError), (1e-46, ValueError),
                                         (1e39, ValueError), ("0.1", TypeError), (None, TypeError),
                                         (True, TypeError)])
def test_bad_scale_raises(scale, error):
    # 1e-39: a float32 number whose reciprocal overflows float32 (before: 0.0 came back NaN)
    with pytest.raises(error, match=r"scale must be a (finite|float32) number"):
        Q.fake_quantize(np.zeros(3), scale, 0, 0, 255)


def test_bad_array_scale_raises():
    with pytest.raises(ValueError, match=r"scale must hold float32 numbers > 2.9e-39"):
        Q.fake_quantize(np.zeros((2, 3)), np.array([[0.1], [0.0]]), 0, 0, 255)
    with pytest.raises(ValueError, match=r"scale must hold float32 numbers"):
        Q.fake_quantize(np.zeros((2, 3)), np.array([1e-39, 0.1]), 0, 0, 255, axis=0)
    with pytest.raises(ValueError, match=r"scale must have shape \(2,\) \(one entry per channel along axis 0"):
        Q.fake_quantize(np.zeros((2, 3)), np.array([0.1, 0.1, 0.1]), 0, 0, 255, axis=0)
    with pytest.raises(ValueError, match=r"scale of shape \(4,\) must broadcast to x's shape \(2, 3\)"):
        Q.fake_quantize(np.zeros((2, 3)), np.full(4, 0.1), 0, 0, 255)
    with pytest.raises(ValueError, match=r"axis must be an int in \[-2, 1\], got 3"):
        Q.fake_quantize(np.zeros((2, 3)), np.full(2, 0.1), 0, 0, 255, axis=3)


def test_bad_zero_point_and_range_raise():
    with pytest.raises(ValueError, match=r"zero_point must be an int in \[qmin, qmax\] = \[0, 255\], got 300"):
        Q.quantize(np.zeros(3), 0.1, 300, 0, 255)
    with pytest.raises(ValueError, match=r"zero_point must be an int, got 1.5"):
        Q.quantize(np.zeros(3), 0.1, 1.5, 0, 255)
    with pytest.raises(TypeError, match=r"zero_point must be an int, got True"):
        Q.quantize(np.zeros(3), 0.1, True, 0, 255)
    with pytest.raises(ValueError, match=r"zero_point must hold integers in \[qmin, qmax\] = \[0, 255\]"):
        Q.fake_quantize(np.zeros((2, 3)), np.full(2, 0.1), np.array([3, 256]), 0, 255, axis=0)
    with pytest.raises(ValueError, match=r"zero_point must hold integers"):
        Q.fake_quantize(np.zeros((2, 3)), np.full(2, 0.1), np.array([3.5, 2.0]), 0, 255, axis=0)
    with pytest.raises(ValueError, match=r"qmin must be < qmax, got qmin=5, qmax=5"):
        Q.quantize(np.zeros(3), 0.1, 5, 5, 5)
    with pytest.raises(ValueError, match=r"qmax must be an int in \[-65536, 65535\], got 1048576"):
        Q.quantize(np.zeros(3), 0.1, 0, 0, 2 ** 20)
    with pytest.raises(ValueError, match=r"qmax - qmin must be <= 2\*\*16 - 1"):
        Q.quantize(np.zeros(3), 0.1, 0, -40000, 40000)
    with pytest.raises(TypeError, match=r"qmin must be an int"):
        Q.quantize(np.zeros(3), 0.1, 0, None, 255)


def test_bad_x_and_rounding_raise():
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int64"):
        Q.quantize(np.arange(3), 0.1, 0, 0, 255)
    with pytest.raises(TypeError, match=r"x must be a numpy array or a torch tensor, got list"):
        Q.fake_quantize([0.0, 1.0], 0.1, 0, 0, 255)
    with pytest.raises(ValueError, match=r"rounding must be one of \('nearest', 'stochastic'\), got 'up'"):
        Q.fake_quantize(np.zeros(3), 0.1, 0, 0, 255, rounding="up")
    with pytest.raises(TypeError, match=r"rounding must be one of"):
        Q.fake_quantize(np.zeros(3), 0.1, 0, 0, 255, rounding=np.zeros(2))
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        Q.dequantize(np.zeros(3, dtype=np.int64), 0.1, 0, dtype="int8")
    with pytest.raises(TypeError, match=r"q must be an integer or float array, got dtype bool"):
        Q.dequantize(np.zeros(3, dtype=bool), 0.1, 0)
    with pytest.raises(ValueError, match=r"q must not hold NaN"):
        Q.dequantize(np.array([1.0, math.nan]), 0.1, 0)


def test_empty_arrays_give_empty_results(be32):
    empty = be32.asarray(np.zeros(0))
    assert tuple(Q.fake_quantize(empty, 0.1, 0, 0, 255).shape) == (0,)
    assert B.dtype_name(Q.quantize(empty, 0.1, 0, 0, 255)) == "uint8"
    scale, zp = Q.qparams_per_channel(empty, empty, 8)
    assert tuple(scale.shape) == tuple(zp.shape) == (0,)


@pytest.mark.parametrize("fn", [Q.quantize, Q.fake_quantize])
def test_nan_in_x_raises_instead_of_landing_on_an_end_code(be32, fn):
    # torch's fake-quant sends NaN to the lowest level (fmax drops the NaN): a silent wrong value
    x = np.array([0.0, math.nan, 1.0], dtype=np.float32)
    assert np.isfinite(torch_fq(x, 0.1, 0, 0, 255)).all()
    with pytest.raises(ValueError, match=r"x must not hold NaN \(a NaN has no code\), got 1 NaN entries"):
        fn(be32.asarray(x), 0.1, 0, 0, 255)
    with pytest.raises(ValueError, match=r"x must not hold NaN"):
        Q.quantize_uniform(be32.asarray(x), 4, 0.0, 1.0)


def test_numpy_and_torch_scalars_are_accepted_as_arguments(be32):
    x = be32.asarray(np.linspace(-2, 2, 11))
    ref = B.to_numpy(Q.fake_quantize(x, 0.25, 3, 0, 15))
    for scale, zp, qmin, qmax in [(np.float32(0.25), np.int64(3), np.int32(0), np.int64(15)),
                                  (torch.tensor(0.25), torch.tensor(3), 0, 15)]:
        np.testing.assert_array_equal(B.to_numpy(Q.fake_quantize(x, scale, zp, qmin, qmax)), ref)


def test_module_docstring_lists_the_public_api_at_the_top():
    # other chapters and helpers find the names here: every public function and class is in the list
    api = Q.__doc__.split("Public API")[1].split("\n\n")[1]
    callables = [name for name in Q.__all__ if callable(getattr(Q, name))]
    assert len(callables) >= 15
    missing = [name for name in callables if f"`{name}`" not in api]
    assert not missing, f"not in the module docstring's Public API list: {missing}"


# ----------------------------------------------------------------------------- int32 codes, codes before the clamp
@QPT_DEPRECATED
def test_quantize_int32_range_equals_torch_qint32(backend_name):
    """quantize(..., *INT32_RANGE): torch.quantize_per_tensor / _per_channel to qint32, saturation included."""
    rng = np.random.default_rng(21)
    compared = saturated = 0
    for trial in range(40):
        n = int(rng.integers(1, 300))
        scale = f32(10.0 ** rng.uniform(-9, -1))
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
        x[: n // 10] = (rng.standard_normal(n // 10) * 3e9 * scale).astype(np.float32)     # some beyond 2**31 steps
        x[n // 10: n // 5] = (rng.integers(-2 ** 20, 2 ** 20, n // 5 - n // 10) + 0.5) * np.float32(scale)  # ties
        ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, 0, torch.qint32).int_repr().numpy()
        ours = Q.quantize(B.to_backend(x, backend_name), scale, 0, *Q.INT32_RANGE)
        assert B.dtype_name(ours) == "int32"
        np.testing.assert_array_equal(B.to_numpy(ours), ref, err_msg=f"trial {trial}, scale {scale}")
        compared += n
        saturated += int(np.sum((ref == 2 ** 31 - 1) | (ref == -2 ** 31)))
        c = int(rng.integers(1, 6))
        xc = x[: (n // c) * c].reshape(c, -1) if n >= c else x.reshape(1, -1)
        scales = np.array([f32(10.0 ** rng.uniform(-9, -1)) for _ in range(xc.shape[0])], np.float64)
        ref = torch.quantize_per_channel(torch.from_numpy(xc), torch.from_numpy(scales),
                                         torch.zeros(xc.shape[0], dtype=torch.long), 0, torch.qint32)
        ours = Q.quantize(B.to_backend(xc, backend_name), B.to_backend(scales, backend_name), 0, *Q.INT32_RANGE,
                          axis=0)
        np.testing.assert_array_equal(B.to_numpy(ours), ref.int_repr().numpy(), err_msg=f"trial {trial}")
    assert compared > 3000 and saturated > 100        # the saturation was exercised


def test_int32_range_is_for_quantize_only():
    x = np.linspace(-1, 1, 7, dtype=np.float32)
    assert Q.code_dtype(*Q.INT32_RANGE) == "int32"
    with pytest.raises(ValueError, match=r"fake-quantized|qmin must be an int in \[-65536"):
        Q.fake_quantize(x, 0.1, 0, *Q.INT32_RANGE)
    with pytest.raises(ValueError, match="INT32_RANGE"):
        Q.quantize(x, 0.1, 0, -2 ** 31, 2 ** 31 - 2)      # only the whole int32 range is the wide one
    with pytest.raises(ValueError, match="qmin must be an int in"):
        Q.quantize(x, 0.1, 0, -2 ** 32, 0)


def test_codes_before_clamp_are_the_codes_quantize_clamps(backend_name):
    rng = np.random.default_rng(22)
    for dtype in ("float32", "float64"):
        for trial in range(30):
            x = (rng.standard_normal((4, 50)) * 3).astype(dtype)
            x[:, :10] = (rng.integers(-300, 300, (4, 10)) + 0.5) * 0.05            # ties
            scale, z = f32(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 20))
            xb = B.to_backend(x, backend_name, dtype=dtype)
            before = Q.codes_before_clamp(xb, scale, z)
            assert B.dtype_name(before) == dtype and tuple(before.shape) == x.shape
            np.testing.assert_array_equal(np.clip(B.to_numpy(before), -128, 127),
                                          B.to_numpy(Q.quantize(xb, scale, z, -128, 127)))
            assert np.abs(B.to_numpy(before)).max() > 127                   # some are clamped
            if dtype == "float32":     # torch's STE gradient is 1 exactly where the code was not clamped
                tx = torch.from_numpy(x).requires_grad_()
                torch.fake_quantize_per_tensor_affine(tx, scale, z, -128, 127).sum().backward()
                ours = (B.to_numpy(before) >= -128) & (B.to_numpy(before) <= 127)
                np.testing.assert_array_equal(ours, tx.grad.numpy() == 1)
            scales = rng.uniform(0.01, 0.1, 4).astype(np.float32)
            zs = rng.integers(0, 40, 4).astype(np.int32)
            before = Q.codes_before_clamp(xb, B.to_backend(scales, backend_name), B.to_backend(zs, backend_name),
                                          axis=0)
            np.testing.assert_array_equal(
                np.clip(B.to_numpy(before), 0, 255),
                B.to_numpy(Q.quantize(xb, B.to_backend(scales, backend_name), B.to_backend(zs, backend_name), 0,
                                      255, axis=0)))


def test_codes_before_clamp_checks_its_arguments():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        Q.codes_before_clamp(np.array([1.0, np.nan]), 0.1, 0)
    with pytest.raises(ValueError, match="scale"):
        Q.codes_before_clamp(x, 0.0, 0)
    with pytest.raises(ValueError, match="zero_point"):
        Q.codes_before_clamp(x, 0.1, 2 ** 20)
    with pytest.raises(ValueError, match="zero_point"):
        Q.codes_before_clamp(x, 0.1, 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        Q.codes_before_clamp(np.ones(3, np.int32), 0.1, 0)
    with pytest.raises(ValueError, match="axis"):
        Q.codes_before_clamp(x, np.ones(3, np.float32), np.zeros(3, np.int32), axis=1)


@QPT_DEPRECATED
def test_quantizer_is_quantize_and_dequantize_with_its_arguments_checked_once(backend_name):
    rng = np.random.default_rng(23)
    for trial in range(30):
        scale, z = f32(10.0 ** rng.uniform(-3, 0)), int(rng.integers(0, 256))
        x = (rng.standard_normal(200) * 100 * scale).astype(np.float32)
        x[:40] = (rng.integers(-200, 200, 40) + 0.5) * np.float32(scale)                  # ties
        xb = B.to_backend(x, backend_name)
        quantizer = Q.Quantizer(scale, z, 0, 255)
        codes = quantizer.quantize(xb)
        np.testing.assert_array_equal(B.to_numpy(codes), B.to_numpy(Q.quantize(xb, scale, z, 0, 255)))
        for dtype in ("float32", "float64"):
            np.testing.assert_array_equal(B.to_numpy(quantizer.dequantize(codes, dtype)),
                                          B.to_numpy(Q.dequantize(codes, scale, z, dtype)))
        ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, z, torch.quint8)
        np.testing.assert_array_equal(B.to_numpy(quantizer.dequantize(B.to_backend(ref.int_repr().numpy(),
                                                                                   backend_name))),
                                      ref.dequantize().numpy())
    assert Q.Quantizer(0.5, 0, *Q.INT32_RANGE).quantize(np.array([1e10], np.float32)).tolist() == [2 ** 31 - 1]


def test_quantizer_checks_its_arguments():
    with pytest.raises(ValueError, match="zero_point"):
        Q.Quantizer(0.1, 300, 0, 255)
    with pytest.raises(ValueError, match="scale"):
        Q.Quantizer(-0.1, 0, 0, 255)
    with pytest.raises(TypeError, match="numbers"):
        Q.Quantizer(np.ones(3, np.float32), 0, 0, 255)
    with pytest.raises(ValueError, match="qmin must be < qmax"):
        Q.Quantizer(0.1, 0, 5, 5)
    quantizer = Q.Quantizer(0.1, 0, 0, 255)
    with pytest.raises(ValueError, match="NaN"):
        quantizer.quantize(np.array([np.nan], np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        quantizer.quantize(np.ones(2, np.int32))
    with pytest.raises(TypeError, match="integer array"):
        quantizer.dequantize(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        quantizer.dequantize(np.ones(2, np.uint8), "int8")
