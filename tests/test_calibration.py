"""nnopt_lab.inference.calibration against torch.ao's observers and onnxruntime's calibrators.

References: torch.ao.quantization.MinMaxObserver / MovingAverageMinMaxObserver /
PerChannelMinMaxObserver (scale and zero point, bit for bit, over several batches),
onnxruntime.quantization.calibrate.HistogramCollector ('percentile', 'entropy') on the same
float32 batches: the same float32 bin edges and counts, so percentile ranges are equal (affine and
symmetric); entropy ranges equal except where two windows' KL divergences tie within float32 rounding
(onnxruntime sums in float32: then its window is one of ours, within 1e-4 of our minimum KL),
torch.ao.quantization.HistogramObserver (the MSE observer's L2 error must be no larger).
"""
import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab.compression import quantization as Q
from nnopt_lab.inference import calibration as C

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*torch.ao.quantization:UserWarning",
                                        "ignore:.*deprecated:UserWarning", "ignore:.*deprecated:FutureWarning")


def torch_observer(cls, bits, symmetric, **kwargs):
    qmin, qmax = Q.integer_range(bits, symmetric)
    dtype = torch.qint32 if bits > 8 else torch.qint8 if symmetric else torch.quint8
    per_channel = cls is torch.ao.quantization.PerChannelMinMaxObserver
    scheme = {(False, False): torch.per_tensor_affine, (False, True): torch.per_tensor_symmetric,
              (True, False): torch.per_channel_affine, (True, True): torch.per_channel_symmetric}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(dtype=dtype, qscheme=scheme[per_channel, symmetric], quant_min=qmin, quant_max=qmax, **kwargs)


def batches(kind, n=4, size=3000, seed=0, shape=None):
    """float32 batches of a distribution: a Gaussian whose scale and mean drift, Laplace with one outlier a
    batch, ReLU outputs (a third exactly 0)."""
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if kind == "gauss":
            x = g.standard_normal(size) * (1 + 0.3 * i) + 0.2 * i
        elif kind == "laplace":
            x = np.concatenate([g.laplace(size=size - 1), [25.0 * (i + 1) * (-1) ** i]])
        else:
            x = np.maximum(g.standard_normal(size) + 0.1 * i, 0)
        out.append(x.astype(np.float32).reshape(shape or (-1,)))
    return out


KINDS = ("gauss", "laplace", "relu")


# ----------------------------------------------------------------------------- min-max family vs torch
@pytest.mark.parametrize("bits", [8, 4, 12])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_minmax_observer_equals_torch_bit_for_bit(backend_name, bits, symmetric, kind):
    ours = C.MinMaxObserver(bits=bits, symmetric=symmetric)
    ref = torch_observer(torch.ao.quantization.MinMaxObserver, bits, symmetric)
    for x in batches(kind):
        assert ours(B.to_backend(x, backend_name)) is not None
        ref(torch.from_numpy(x))
    scale, zero_point = ours.calculate_qparams()
    assert isinstance(scale, float) and isinstance(zero_point, int)
    ts, tz = ref.calculate_qparams()
    assert (scale, zero_point) == (float(ts), int(tz))
    assert ours.range() == (float(ref.min_val), float(ref.max_val))


@pytest.mark.parametrize("constant", [0.01, 0.3, 1.0])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_moving_average_observer_equals_torch_bit_for_bit(backend_name, constant, symmetric, kind):
    ours = C.MovingAverageMinMaxObserver(averaging_constant=constant, bits=8, symmetric=symmetric)
    ref = torch_observer(torch.ao.quantization.MovingAverageMinMaxObserver, 8, symmetric,
                         averaging_constant=constant)
    for x in batches(kind, n=7):
        ours(B.to_backend(x, backend_name, dtype="float64"))     # float64 batches: torch casts them to float32
        ref(torch.from_numpy(x))
        ts, tz = ref.calculate_qparams()
        assert ours.calculate_qparams() == (float(ts), int(tz))
    assert ours.range() == (float(ref.min_val), float(ref.max_val))


def test_moving_average_differs_from_minmax_after_a_wide_batch():
    """The check above can fail: the average moves 1 % of the way, the min-max all of it."""
    xs = batches("laplace", n=3)
    avg, mm = C.MovingAverageMinMaxObserver(0.01), C.MinMaxObserver()
    for x in xs:
        avg(x), mm(x)
    assert avg.range()[1] < mm.range()[1] / 2


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("symmetric", [False, True])
def test_per_channel_observer_equals_torch_bit_for_bit(backend_name, axis, symmetric):
    g = np.random.default_rng(3)
    ours = C.PerChannelMinMaxObserver(axis=axis, bits=8, symmetric=symmetric)
    ref = torch_observer(torch.ao.quantization.PerChannelMinMaxObserver, 8, symmetric, ch_axis=axis)
    for i in range(4):
        x = (g.standard_normal((6, 5, 4)) * g.uniform(0.1, 3, (1, 5, 1)) + 0.3 * i).astype(np.float32)
        ours(B.to_backend(x, backend_name))
        ref(torch.from_numpy(x))
    scale, zero_point = ours.calculate_qparams()
    ts, tz = ref.calculate_qparams()
    assert B.dtype_name(scale) == "float32" and B.dtype_name(zero_point) == "int32"
    np.testing.assert_array_equal(B.to_numpy(scale), ts.numpy())
    np.testing.assert_array_equal(B.to_numpy(zero_point), tz.numpy())
    lo, hi = ours.range()
    np.testing.assert_array_equal(B.to_numpy(lo), ref.min_val.numpy())
    np.testing.assert_array_equal(B.to_numpy(hi), ref.max_val.numpy())


def test_per_channel_refuses_a_batch_with_other_channels():
    obs = C.PerChannelMinMaxObserver(axis=1)
    obs(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="3 channels along axis 1"):
        obs(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="channel axis 1"):
        obs(np.ones(3, dtype=np.float32))


def test_observer_returns_its_input_and_reset_forgets():
    x = np.linspace(-1, 2, 7, dtype=np.float32)
    obs = C.MinMaxObserver()
    assert obs(x) is x
    assert obs.range() == (-1.0, 2.0)
    obs.reset()
    with pytest.raises(ValueError, match="calibrate on at least one batch first"):
        obs.range()


# ----------------------------------------------------------------------------- histograms vs onnxruntime
_ORT = {}


def ort_range(method, symmetric, xs, bins=2048, quantized_bins=128, percentile=99.99):
    """onnxruntime's range for these batches (remembered: its entropy search is a slow Python loop)."""
    key = (method, symmetric, bins, quantized_bins, percentile, b"".join(x.tobytes() for x in xs))
    if key not in _ORT:
        _ORT[key] = _ort_range(method, symmetric, xs, bins, quantized_bins, percentile)
    return _ORT[key]


def _ort_range(method, symmetric, xs, bins, quantized_bins, percentile):
    from onnxruntime.quantization.calibrate import HistogramCollector
    collector = HistogramCollector(method, symmetric, bins, quantized_bins, percentile, scenario="same")
    with contextlib.redirect_stdout(io.StringIO()):
        for x in xs:
            collector.collect({"x": [x]})
        result = collector.compute_collection_result()["x"]
    return float(result[0]), float(result[1])


@pytest.mark.parametrize("percentile", [99.99, 99.0, 90.0])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_percentile_observer_equals_onnxruntime(backend_name, percentile, symmetric, kind):
    xs = batches(kind, seed=5)
    obs = C.PercentileObserver(percentile=percentile, bits=8, symmetric=symmetric)
    for x in xs:
        obs(B.to_backend(x, backend_name))
    lo, hi = obs.range()
    ref = ort_range("percentile", symmetric, xs, percentile=percentile)
    top = max(np.abs(x).max() for x in xs)
    assert (lo, hi) == ref                                   # the same float32 edges, the same counts: equal
    if percentile <= 99 and kind == "laplace":
        assert hi < top / 2                                   # the outliers are clipped: the test can fail


def assert_entropy_range_is_onnxruntimes(obs, ref):
    """Equal; or, where two windows' KL divergences tie within float32 rounding (onnxruntime sums p log(p/q)
    in float32, numpy's pairwise order), onnxruntime's window is one of ours and its KL within 1e-4 of our min."""
    lo, hi = obs.range()
    if (lo, hi) == ref:
        return
    bounds, divs = (B.to_numpy(a) for a in obs.divergences())
    clipped = np.stack([np.maximum(bounds[:, 0], obs.min_val), np.minimum(bounds[:, 1], obs.max_val)], axis=1)
    match = np.flatnonzero((np.abs(clipped - np.float32(ref)) <= 1e-6 * np.abs(ref).max()).all(axis=1))
    assert match.size, (lo, hi, ref)
    assert divs[match].min() <= divs.min() * (1 + 1e-4) + 1e-9, (divs[match].min(), divs.min())


@pytest.mark.parametrize("bins", [2048, 512])
@pytest.mark.parametrize("kind", KINDS)
def test_entropy_observer_equals_onnxruntime(backend_name, bins, kind):
    xs = batches(kind, seed=7, size=2000)
    obs = C.EntropyObserver(bins=bins, bits=8)
    for x in xs:
        obs(B.to_backend(x, backend_name))
    assert_entropy_range_is_onnxruntimes(obs, ort_range("entropy", False, xs, bins=bins))


def test_entropy_quantized_bins_option_is_onnxruntimes_num_quantized_bins():
    xs = batches("gauss", seed=8, size=2000)
    obs = C.EntropyObserver(bins=512, quantized_bins=32)
    for x in xs:
        obs(x)
    assert_entropy_range_is_onnxruntimes(obs, ort_range("entropy", False, xs, bins=512, quantized_bins=32))


def test_entropy_clips_an_outlier_that_minmax_keeps():
    xs = batches("laplace", seed=7, size=2000)
    obs, mm = C.EntropyObserver(), C.MinMaxObserver()
    for x in xs:
        obs(x), mm(x)
    assert obs.range()[1] < mm.range()[1] / 4


def test_histogram_grows_by_whole_bins_and_keeps_every_count():
    obs = C.PercentileObserver(bins=8)
    obs(np.array([0.0, 0.0], dtype=np.float32))              # zeros first: no range yet
    obs(np.array([-1.0, 0.5, 1.0], dtype=np.float32))
    obs(np.array([2.9], dtype=np.float32))
    h = obs.histogram
    assert h.threshold == 3.0 and h.counts.shape[0] == 24       # stride 0.25: 8 more bins each side
    assert int(h.counts.sum()) == 6
    edges = B.to_numpy(h.edges())
    assert edges[0] == -3.0 and edges[-1] == 3.0
    counts = B.to_numpy(h.counts)
    assert counts[np.searchsorted(edges, 0.0, side="right") - 1] == 2   # the two zeros in the bin of 0
    assert counts[-1] == 1 and counts[np.searchsorted(edges, -1.0, side="right") - 1] == 1


# ----------------------------------------------------------------------------- MSE vs HistogramObserver
def l2_error(x, scale, zero_point, bits, symmetric):
    qmin, qmax = Q.integer_range(bits, symmetric)
    return float(((Q.fake_quantize(x, scale, zero_point, qmin, qmax) - x) ** 2).sum())


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_mse_observer_is_at_least_as_good_as_histogram_observer(bits, symmetric, kind):
    xs = batches(kind, seed=11)
    data = np.concatenate(xs)
    ours = C.MSEObserver(bits=bits, symmetric=symmetric)
    ref = torch_observer(torch.ao.quantization.HistogramObserver, bits, symmetric)
    minmax = C.MinMaxObserver(bits=bits, symmetric=symmetric)
    for x in xs:
        ours(x), ref(torch.from_numpy(x)), minmax(x)
    ts, tz = ref.calculate_qparams()
    e_ours = l2_error(data, *ours.calculate_qparams(), bits, symmetric)
    e_torch = l2_error(data, float(ts), int(tz), bits, symmetric)
    e_minmax = l2_error(data, *minmax.calculate_qparams(), bits, symmetric)
    assert e_ours <= e_torch, (e_ours, e_torch)
    assert e_ours <= e_minmax
    if bits == 4:
        assert e_ours < 0.9 * e_minmax                           # clipping pays at 4 bits


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_estimate_is_the_measured_error_and_its_minimum_over_a_grid(symmetric):
    """The histogram estimate of the error equals the measured error within a few %; no grid range beats
    the chosen one by more than that."""
    x = batches("laplace", n=1, size=20000, seed=2)[0]
    obs = C.MSEObserver(bits=4, symmetric=symmetric)
    obs(x)
    lo, hi = obs.range()
    measured = l2_error(x, *obs.calculate_qparams(), 4, symmetric)
    estimate = float(obs.errors(np.array([lo]), np.array([hi]))[0])
    assert estimate == pytest.approx(measured, rel=0.05)
    for t in np.linspace(0.5, x.max(), 60):
        a = -t if symmetric else max(float(x.min()), -t)
        s, z = Q.qparams(a, t, 4, symmetric)
        assert measured <= 1.05 * l2_error(x, s, z, 4, symmetric)


def test_sawtooth_integral_against_quadrature():
    v = np.linspace(-9.3, 9.7, 20001)
    vlo, vhi = -7.0, 7.0
    r2 = (v - np.clip(np.round(v), vlo, vhi)) ** 2
    numeric = np.concatenate([[0], np.cumsum((r2[1:] + r2[:-1]) / 2 * np.diff(v))])
    ours = C._sawtooth_integral(v, vlo, vhi)
    np.testing.assert_allclose(ours - ours[0], numeric, atol=1e-6)


# ----------------------------------------------------------------------------- every observer
@pytest.mark.parametrize("method", sorted(C.OBSERVERS))
def test_every_observer_on_every_backend_gives_one_answer(method):
    xs = batches("laplace", n=2, seed=4, size=500)
    answers = []
    for name in ("numpy", "torch-cpu"):
        obs = C.make_observer(method, bits=8)
        for x in xs:
            obs(B.to_backend(x, name))
        scale, zero_point = obs.calculate_qparams()
        answers.append((np.asarray(B.to_numpy(scale)).tolist(), np.asarray(B.to_numpy(zero_point)).tolist()))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("method", sorted(C.OBSERVERS))
def test_errors_are_clear(method):
    with pytest.raises(ValueError, match="bits"):
        C.make_observer(method, bits=17)
    with pytest.raises(ValueError, match="bits"):
        C.make_observer(method, bits=0)
    with pytest.raises(ValueError, match="bits"):
        C.make_observer(method, bits=1, symmetric=True)
    obs = C.make_observer(method)
    with pytest.raises(ValueError, match="calibrate on at least one batch first"):
        obs.calculate_qparams()
    with pytest.raises(ValueError, match="calibrate on at least one batch first"):
        obs.range()
    with pytest.raises(ValueError, match="empty batch"):
        obs(np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        obs(np.array([1.0, math.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="inf"):
        obs(np.array([1.0, math.inf]))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        obs(np.arange(3))
    with pytest.raises(ValueError, match="calibrate on at least one batch first"):
        obs.range()                                               # refused batches count for nothing


def test_make_observer_builds_the_per_channel_observer_too():
    obs = C.make_observer("per_channel_minmax", bits=4, symmetric=True, axis=1)
    assert isinstance(obs, C.PerChannelMinMaxObserver) and obs.axis == 1 and "per_channel_minmax" not in C.OBSERVERS
    obs(np.arange(6, dtype=np.float32).reshape(2, 3) - 2)
    assert B.to_numpy(obs.calculate_qparams()[0]).shape == (3,)


def test_histogram_search_runs_once_per_set_of_batches():
    obs = C.EntropyObserver(bins=256)
    obs(batches("gauss", n=1)[0])
    first = obs.range()
    obs.divergences = None                       # a second search would fail
    assert obs.range() == first and obs.calculate_qparams() == Q.qparams(*first, 8)
    obs(batches("laplace", n=1)[0])
    del obs.divergences
    assert obs.range() != first


def test_make_observer_names_a_wrong_option():
    with pytest.raises(ValueError, match="method"):
        C.make_observer("kl")
    with pytest.raises(ValueError, match="'percentile' is not an option of method 'mse'"):
        C.make_observer("mse", percentile=99.0)
    obs = C.make_observer("percentile", bits=6, symmetric=True, percentile=99.0, bins=256)
    assert (obs.bits, obs.symmetric, obs.percentile, obs.n_bins) == (6, True, 99.0, 256)
    with pytest.raises(ValueError, match="bins must be >= 2"):
        C.make_observer("entropy", bits=13)


def test_all_zero_batches_give_the_zero_range():
    for method in sorted(C.OBSERVERS):
        obs = C.make_observer(method)
        obs(np.zeros(5, dtype=np.float32))
        assert C.make_observer("minmax")(np.zeros(1)) is not None
        scale, zero_point = obs.calculate_qparams()
        assert float(np.max(B.to_numpy(scale))) == Q.SCALE_EPS


def test_numpy_scalars_are_accepted():
    obs = C.MovingAverageMinMaxObserver(np.float32(0.5), bits=np.int64(6), symmetric=np.bool_(True))
    obs(np.ones(3, dtype=np.float32))
    assert obs.calculate_qparams()[1] == 0


@pytest.mark.parametrize("method", sorted(C.OBSERVERS))
def test_an_observer_refuses_a_batch_on_another_backend_than_the_first(method):
    obs = C.make_observer(method)
    obs(np.linspace(-1.0, 2.0, 50, dtype=np.float32))
    with pytest.raises(TypeError, match=r"\bx\b.*numpy"):
        obs(torch.linspace(-1.0, 2.0, 50))
    obs.reset()(torch.linspace(-1.0, 2.0, 50))         # after reset() another backend is fine
    assert obs.batches == 1


def test_mse_errors_checks_its_candidate_ranges():
    obs = C.MSEObserver(bins=64)
    obs(np.linspace(-1.0, 2.0, 500, dtype=np.float32))
    lo, hi = np.array([-1.0, -0.5], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)
    assert obs.errors(lo, hi).shape == (2,)
    with pytest.raises(ValueError, match=r"\blo and hi\b"):
        obs.errors(lo, hi[:1])
    with pytest.raises(ValueError, match=r"\bhi must be >= lo\b"):
        obs.errors(hi, lo)
    with pytest.raises(TypeError, match=r"\blo\b"):
        obs.errors([-1.0], hi[:1])
