"""nnopt_lab.inference.precision (fp16 / bf16), backend.round_bfloat16, and stochastic rounding.

References: torch's ``.to(torch.float16)`` and ``.to(torch.bfloat16).float()`` bit for bit, on float32
bit patterns drawn at random over every exponent plus the cases that matter (ties to even, fp16
and bf16 subnormals, the overflow thresholds 65504 / 65520 and 2**128 - 2**119, ±0, ±inf) and on
float64 inputs (rounded to float32 first, as torch). Stochastic rounding of
compression.quantization: unbiased, its mean error shrinking as 1/sqrt(n), measured.
"""
import math

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.compression import quantization as Q
from nnopt_lab.inference import precision as P

TORCH_DTYPE = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def float32_cases(seed=0, n=100_000):
    """float32 values (no NaN): random bit patterns, ties of fp16 and bf16, subnormals, the edges."""
    g = np.random.default_rng(seed)
    bits = g.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    bf16_ties = (g.integers(0, 2 ** 16, 3000).astype(np.uint32) << np.uint32(16)) | np.uint32(0x8000)
    fp16_ties = (g.integers(0x3000, 0x4800, 3000).astype(np.uint32) << np.uint32(13)) | np.uint32(0x1000)
    x = np.concatenate([bits.view(np.float32), bf16_ties.view(np.float32), fp16_ties.view(np.float32)])
    small = np.float32(2.0 ** -25) * g.integers(0, 3000, 3000).astype(np.float32)   # fp16 subnormals and their ties
    edges = np.float32([0.0, -0.0, np.inf, -np.inf, 65504, 65519.996, 65520, -65520, 2.0 ** -14, 2.0 ** -24,
                        2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -126, 2.0 ** -133, 2.0 ** -134, 3 * 2.0 ** -135,
                        3.3895314e38, 3.3961776e38, 3.4028235e38, -3.4028235e38, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8])
    x = np.concatenate([x, small, -small, edges])
    return x[~np.isnan(x)]


def torch_round(x, dtype):
    return torch.from_numpy(np.ascontiguousarray(x)).to(TORCH_DTYPE[dtype]).to(torch.float32).numpy()


def same_bits(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ----------------------------------------------------------------------------- the backend's bfloat16 paths
def test_round_bfloat16_fast_and_portable_paths_equal_torch_bit_for_bit():
    x = float32_cases(1)
    x = np.concatenate([x, np.float32([np.nan]), np.uint32([0x7F800001, 0xFFC00001]).view(np.float32)])
    ref = torch_round(x, "bfloat16")
    nan = np.isnan(ref)
    for name, got in (("numpy fast", B.round_bfloat16(x)), ("numpy portable", B.round_bfloat16_portable(x)),
                      ("torch fast", B.round_bfloat16(torch.from_numpy(x))),
                      ("torch portable", B.round_bfloat16_portable(torch.from_numpy(x)))):
        got = B.to_numpy(got)
        assert got.dtype == np.float32, name
        assert np.array_equal(np.isnan(got), nan), name                   # NaN stays NaN, never inf
        assert same_bits(got[~nan], ref[~nan]), name


def test_round_bfloat16_known_values():
    x = np.float32([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20, 3.4028235e38, -0.0])
    np.testing.assert_array_equal(B.round_bfloat16(x),
                                  np.float32([1.0, 1.0 + 2.0 ** -6, 1.0 + 2.0 ** -7, np.inf, -0.0]))
    assert np.signbit(B.round_bfloat16(x)[-1]) and np.signbit(B.round_bfloat16_portable(x)[-1])


def test_round_bfloat16_keeps_shape_and_refuses_integers():
    assert B.round_bfloat16(np.float32(1.5) * np.ones((2, 0, 3), dtype=np.float32)).shape == (2, 0, 3)
    assert B.round_bfloat16(np.array(1.00390625, dtype=np.float64)).shape == ()
    with pytest.raises(TypeError, match="floating-point"):
        B.round_bfloat16(np.arange(3))
    with pytest.raises(TypeError, match="floating-point"):
        B.round_bfloat16_portable(torch.arange(3))


# ----------------------------------------------------------------------------- cast
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cast_equals_torch_bit_for_bit(backend_name, dtype):
    x = float32_cases(2)
    ours = P.cast(B.to_backend(x, backend_name), dtype, overflow="inf")
    assert B.dtype_name(ours) == ("float16" if dtype == "float16" else "float32")
    assert B.is_torch(ours) == (backend_name != "numpy")
    assert same_bits(B.to_numpy(ours).astype(np.float32), torch_round(x, dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cast_of_float64_rounds_through_float32_like_torch(backend_name, dtype):
    g = np.random.default_rng(3)
    x = np.concatenate([g.standard_normal(50_000) * 10.0 ** g.integers(-8, 5, 50_000),
                        [1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -8 + 2.0 ** -40]])   # direct rounding would go up
    ours = B.to_numpy(P.cast(B.to_backend(x, backend_name, dtype="float64"), dtype)).astype(np.float32)
    ref = torch.from_numpy(x).to(TORCH_DTYPE[dtype]).to(torch.float32).numpy()
    assert same_bits(ours, ref)
    assert ours[-2 if dtype == "float16" else -1] == 1.0                     # the double-rounding cases: a tie, to even


def test_cast_ties_go_to_even_and_subnormals_are_kept():
    half = np.float32([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -24, 2.0 ** -26])
    np.testing.assert_array_equal(P.cast(half, "float16").astype(np.float32),
                                  np.float32([1.0, 1 + 2 * 2.0 ** -10, 0.0, 2 * 2.0 ** -24, 2.0 ** -24, 0.0]))


@pytest.mark.parametrize("dtype, big", [("float16", 65520.0), ("float16", -1e5), ("bfloat16", 3.4e38)])
def test_overflow_raises_unless_asked_for_inf(backend_name, dtype, big):
    x = B.to_backend([1.0, big, 2.0], backend_name)
    with pytest.raises(ValueError, match=f"1 entries beyond the {dtype} range"):
        P.cast(x, dtype)
    assert math.isinf(B.float_of(P.cast(x, dtype, overflow="inf")[1]))
    assert B.float_of(P.cast(B.to_backend([65519.0], backend_name), "float16")[0]) == 65504.0   # rounds down: no error
    inf = B.to_backend([math.inf, -1.0], backend_name)
    assert math.isinf(B.float_of(P.cast(inf, dtype)[0]))               # an inf that was there is no overflow


# ----------------------------------------------------------------------------- precision_error
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_precision_error_against_torch_and_the_unit_roundoff(backend_name, dtype):
    g = np.random.default_rng(4)
    x = np.where(g.random(20_000) < 0.5, -1.0, 1.0) * 10.0 ** g.uniform(-3, 3, 20_000)   # the normal range
    report = P.precision_error(B.to_backend(x, backend_name, dtype="float64"), dtype)
    ref = torch.from_numpy(x).to(TORCH_DTYPE[dtype]).double().numpy()
    err = np.abs(ref - x)
    assert report["max_abs"] == err.max() and report["max_rel"] == (err / np.abs(x)).max()
    assert report["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-12)
    assert report["max_rel"] <= report["unit_roundoff"] == P.UNIT_ROUNDOFF[dtype]
    assert report["max_rel"] > 0.9 * report["unit_roundoff"]           # the bound is reached: the test can fail
    assert (report["overflow"], report["underflow"], report["n"]) == (0, 0, x.size)


def test_precision_error_reports_overflow_and_underflow():
    x = np.array([1.0, 1e5, -7e4, 1e-9, 0.0, 2.0 ** -24], dtype=np.float64)
    report = P.precision_error(x, "float16")
    assert (report["overflow"], report["underflow"], report["n"]) == (2, 1, 4)
    assert report["max_rel"] == 1.0 and math.isfinite(report["max_abs"])
    assert P.precision_error(x, "bfloat16")["overflow"] == 0


# ----------------------------------------------------------------------------- cast_model
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cast_model_rounds_like_torch_half_and_restores_exactly(backend_name, dtype):
    model = models.mlp((6, 8, 3), batchnorm=True, backend=B.Backend(backend_name, "float32"))
    x = B.to_backend(np.random.default_rng(5).standard_normal((16, 6)), backend_name)
    model.train()
    model(x)                                       # BatchNorm running statistics become non-trivial
    model.eval()
    before = {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}
    y0 = B.to_numpy(model(x))
    with P.cast_model(model, dtype) as saved:
        assert "arrays rounded" in repr(saved)
        state = model.state_dict()
        for key, value in before.items():
            got = B.to_numpy(state[key])
            if value.dtype.kind == "f":
                ref = torch.from_numpy(value).to(TORCH_DTYPE[dtype]).float().numpy()
                assert got.dtype == value.dtype and same_bits(got, ref), key
            else:
                np.testing.assert_array_equal(got, value)
        y1 = B.to_numpy(model(x))
        assert 0 < np.abs(y1 - y0).max() < 50 * P.UNIT_ROUNDOFF[dtype] * np.abs(y0).max()
    after = model.state_dict()
    for key, value in before.items():
        assert B.to_numpy(after[key]).tobytes() == value.tobytes(), key


def test_cast_model_refuses_an_overflow_and_leaves_the_model_unchanged():
    model = models.mlp((3, 4, 2), backend=B.Backend("numpy", "float32"))
    model[2]._params["bias"].data[1] = 1e6
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="2.bias: .*1 entries beyond the float16 range.*must not hold inf"):
        P.cast_model(model, "float16")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    P.cast_model(model, "bfloat16").restore()          # bfloat16 holds it


def test_errors_are_clear():
    with pytest.raises(ValueError, match="dtype must be one of"):
        P.cast(np.ones(3), "int8")
    with pytest.raises(ValueError, match="NaN"):
        P.cast(np.array([np.nan]), "float16")
    with pytest.raises(ValueError, match="overflow must be one of"):
        P.cast(np.ones(3), "float16", overflow="clip")
    with pytest.raises(TypeError, match="model must be"):
        P.cast_model(np.ones(3), "float16")
    with pytest.raises(ValueError, match="at least one entry"):
        P.precision_error(np.ones(0), "float16")


# ----------------------------------------------------------------------------- stochastic rounding
def test_stochastic_rounding_is_unbiased_with_mean_error_shrinking_as_one_over_sqrt_n(be64):
    """Mean error of n stochastically rounded values (Q.fake_quantize, rounding="stochastic"), averaged in
    absolute value over 40 repetitions: slope -1/2 in log-log, each below 4 sigma/sqrt(n); round-to-nearest
    of the same values keeps a bias that does not shrink."""
    B.seed(0)
    scale, reps = 0.1, 40
    sizes = [100, 316, 1000, 3162, 10_000, 31_623, 100_000]
    g = np.random.default_rng(12345)     # not the library's seed 0: the same stream would correlate x and u
    mean_abs, nearest = [], []
    for n in sizes:
        x = be64.asarray(g.uniform(0.0, 0.1, (reps, n)) * 0.6 + 0.3)    # inside one step above code 3: 3.0..3.6 codes
        errors = Q.fake_quantize(x, scale, 0, -128, 127, rounding="stochastic") - x
        means = B.to_numpy(errors).mean(axis=1)
        sigma = B.to_numpy(errors).std()
        assert np.all(np.abs(means) < 4 * sigma / math.sqrt(n)), n
        mean_abs.append(np.abs(means).mean())
        nearest.append(abs(B.to_numpy(Q.fake_quantize(x, scale, 0, -128, 127) - x).mean()))
    slope = np.polyfit(np.log(sizes), np.log(mean_abs), 1)[0]
    assert -0.65 < slope < -0.35, slope
    assert min(nearest) > 10 * mean_abs[-1]                             # nearest rounding is biased here


def test_stochastic_rounding_keeps_values_on_the_grid_and_rounds_to_a_neighbour(be64):
    x = be64.asarray(np.linspace(-1.0, 1.0, 1001))
    fq = B.to_numpy(Q.fake_quantize(x, 0.125, 0, -8, 7, rounding="stochastic"))
    xs = B.to_numpy(x)
    inside = xs < 7 * 0.125
    assert np.all(np.abs(fq[inside] - xs[inside]) < 0.125)
    codes = fq / 0.125
    np.testing.assert_array_equal(codes, np.round(codes))
