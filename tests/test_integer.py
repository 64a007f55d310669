"""Integer-only int8 inference (nnopt_lab.inference.integer) against torch's quantized engines.

* qnnpack: ``torch.ao.nn.quantized.Linear`` / ``Conv2d`` (and the fused ``LinearReLU`` /
  ``ConvReLU2d``) give the SAME uint8 codes as ours with ``requantization="float"``, per tensor
  and per channel (qnnpack takes both), on seeded random shapes, codes, scales and zero points.
* x86 / fbgemm: differences measured and asserted as found (see ``test_x86_*``).
* the fixed-point path: equal to gemmlowp's formulas written with Python ints, within 1 LSB
  of the float path.
* converted MLP / CNN: the dequantized output within the error bound derived in convert's
  docstring, computed here independently from the float model.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.compression import trimming
from nnopt_lab.inference import integer as I
from nnopt_lab.nn import layers as L
from nnopt_lab.nn import functional as F

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*quantize_per_tensor:UserWarning",
                                        "ignore:.*torch.ao.quantization:UserWarning")

INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
f32 = np.float32


@pytest.fixture
def engine():
    """Set torch.backends.quantized.engine for one test and put the old one back."""
    old = torch.backends.quantized.engine

    def use(name):
        if name not in torch.backends.quantized.supported_engines:
            pytest.skip(f"torch has no {name} engine here")
        torch.backends.quantized.engine = name

    yield use
    torch.backends.quantized.engine = old


# ----------------------------------------------------------------------------- torch references
def _tq_input(codes, scale, zero_point):
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(codes)), scale, zero_point)


def _tq_weight(codes, scale):
    w = torch.from_numpy(np.ascontiguousarray(codes))
    if np.ndim(scale):
        return torch._make_per_channel_quantized_tensor(w, torch.from_numpy(np.asarray(scale, np.float64)),
                                                        torch.zeros(len(scale), dtype=torch.long), 0)
    return torch._make_per_tensor_quantized_tensor(w, float(scale), 0)


def _torch_linear(wc, sw, bias, sy, zy, relu):
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    m, k = wc.shape
    layer = nniq.LinearReLU(k, m, bias=bias is not None) if relu else nnq.Linear(k, m, bias_=bias is not None)
    layer.set_weight_bias(_tq_weight(wc, sw), None if bias is None else torch.from_numpy(bias))
    layer.scale, layer.zero_point = sy, zy
    return layer


def _torch_conv(wc, sw, bias, sy, zy, relu, stride, padding, dilation, groups):
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    cout, cin_g, kh, kw = wc.shape
    layer = (nniq.ConvReLU2d if relu else nnq.Conv2d)(cin_g * groups, cout, (kh, kw), stride, padding, dilation,
                                                      groups, bias=bias is not None)
    layer.set_weight_bias(_tq_weight(wc, sw), None if bias is None else torch.from_numpy(bias))
    layer.scale, layer.zero_point = sy, zy
    return layer


def _qparams(rng, per_channel, cout, x_hi=255):
    """Random float32 scales and zero points (input codes in [0, x_hi])."""
    sx = float(f32(rng.uniform(1e-3, 0.1)))
    zx = int(rng.integers(0, x_hi + 1))
    sw = rng.uniform(1e-3, 0.05, cout).astype(np.float32) if per_channel else float(f32(rng.uniform(1e-3, 0.05)))
    sy = float(f32(rng.uniform(0.01, 5.0)))
    zy = int(rng.integers(0, 256))
    return sx, zx, sw, sy, zy


def _ours(kind, be, wc, sw, bias, sx, zx, sy, zy, relu, requantization, **conv):
    w = B.to_backend(wc, be)
    scale = B.to_backend(sw, be) if np.ndim(sw) else sw
    bias_codes = None if bias is None else I.quantize_bias(B.to_backend(bias, be), scale, sx)
    cls = I.IntegerLinear if kind == "linear" else I.IntegerConv2d
    return cls(w, scale, bias_codes, sx, zx, sy, zy, relu=relu, requantization=requantization, **conv)


# ----------------------------------------------------------------------------- qnnpack: exact
@pytest.mark.parametrize("per_channel", [False, True])
def test_linear_equals_qnnpack_exactly(backend_name, engine, per_channel):
    engine("qnnpack")
    rng = np.random.default_rng(11 + per_channel)
    compared = 0
    for trial in range(40):
        n, k, m = int(rng.integers(1, 9)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        relu, has_bias = trial % 3 == 1, trial % 5 != 4
        sx, zx, sw, sy, zy = _qparams(rng, per_channel, m)
        xc = rng.integers(0, 256, (n, k)).astype(np.uint8)
        wc = rng.integers(-127, 128, (m, k)).astype(np.int8)
        bias = (rng.standard_normal(m) * 2).astype(np.float32) if has_bias else None
        ref = _torch_linear(wc, sw, bias, sy, zy, relu)(_tq_input(xc, sx, zx)).int_repr().numpy()
        ours = _ours("linear", backend_name, wc, sw, bias, sx, zx, sy, zy, relu, "float")
        out = B.to_numpy(ours(B.to_backend(xc, backend_name)))
        assert out.dtype == np.uint8 and out.shape == ref.shape
        np.testing.assert_array_equal(out, ref, err_msg=f"trial {trial}: n={n} k={k} m={m} relu={relu}")
        compared += ref.size
    assert compared > 2000


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv2d_equals_qnnpack_exactly(backend_name, engine, per_channel):
    engine("qnnpack")
    rng = np.random.default_rng(21 + per_channel)
    compared = 0
    for trial in range(25):
        groups = int(rng.choice([1, 1, 2, 3]))
        cin, cout = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 6))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        dilation = (int(rng.integers(1, 3)), 1)
        h, w = int(rng.integers(kh * dilation[0], 12)), int(rng.integers(kw, 12))
        n = int(rng.integers(1, 4))
        relu, has_bias = trial % 3 == 1, trial % 4 != 3
        sx, zx, sw, sy, zy = _qparams(rng, per_channel, cout)
        xc = rng.integers(0, 256, (n, cin, h, w)).astype(np.uint8)
        wc = rng.integers(-127, 128, (cout, cin // groups, kh, kw)).astype(np.int8)
        bias = (rng.standard_normal(cout) * 2).astype(np.float32) if has_bias else None
        conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        ref = _torch_conv(wc, sw, bias, sy, zy, relu, **conv)(_tq_input(xc, sx, zx)).int_repr().numpy()
        ours = _ours("conv", backend_name, wc, sw, bias, sx, zx, sy, zy, relu, "float", **conv)
        out = B.to_numpy(ours(B.to_backend(xc, backend_name)))
        assert out.dtype == np.uint8 and out.shape == ref.shape
        np.testing.assert_array_equal(out, ref, err_msg=f"trial {trial}: {conv}, shape {xc.shape}, w {wc.shape}")
        compared += ref.size
    assert compared > 2000


def test_quantize_bias_equals_torch(backend_name):
    """torch's QuantizeBias: quantize_per_tensor / _per_channel to qint32 at S_w * S_x."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        c = int(rng.integers(1, 50))
        bias = (rng.standard_normal(c) * 3).astype(np.float32)
        sx = float(f32(rng.uniform(1e-3, 0.1)))
        sw = rng.uniform(1e-4, 0.05, c).astype(np.float32)
        ref = torch.quantize_per_channel(torch.from_numpy(bias), torch.from_numpy(sw.astype(np.float64)) * sx,
                                         torch.zeros(c, dtype=torch.long), 0, torch.qint32).int_repr().numpy()
        ours = I.quantize_bias(B.to_backend(bias, backend_name), B.to_backend(sw, backend_name), sx)
        np.testing.assert_array_equal(B.to_numpy(ours), ref)
        ref = torch.quantize_per_tensor(torch.from_numpy(bias), float(sw[0]) * sx, 0, torch.qint32).int_repr()
        np.testing.assert_array_equal(B.to_numpy(I.quantize_bias(B.to_backend(bias, backend_name), float(sw[0]), sx)),
                                      ref.numpy())


# ----------------------------------------------------------------------------- x86 / fbgemm: measured
def _x86_differences(reduce_range, with_bias, trials=60, seed=5):
    """(max |ours - torch| in LSB, fraction of codes differing) against torch's current engine."""
    rng = np.random.default_rng(seed)
    worst, differing, total = 0, 0, 0
    hi = 127 if reduce_range else 255
    for _ in range(trials):
        n, k, m = int(rng.integers(1, 9)), int(rng.integers(16, 300)), int(rng.integers(1, 40))
        sx, zx, sw, sy, zy = _qparams(rng, False, m, x_hi=hi)
        xc = rng.integers(0, hi + 1, (n, k)).astype(np.uint8)
        wc = rng.integers(-127, 128, (m, k)).astype(np.int8)
        bias = (rng.standard_normal(m) * 2).astype(np.float32) if with_bias else None
        ref = _torch_linear(wc, sw, bias, sy, zy, False)(_tq_input(xc, sx, zx)).int_repr().numpy().astype(np.int64)
        out = B.to_numpy(_ours("linear", "numpy", wc, sw, bias, sx, zx, sy, zy, False, "float")(xc)).astype(np.int64)
        d = np.abs(out - ref)
        worst, differing, total = max(worst, int(d.max())), differing + int((d > 0).sum()), total + d.size
    return worst, differing / total


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _has_vnni():
    return "avx512_vnni" in _cpu_flags()


@pytest.mark.parametrize("name", ["x86", "fbgemm"])
def test_x86_engine_differences_measured(engine, name):
    """x86/fbgemm on this CPU's own instruction set (measured: see the figures in the asserts).

    * with a float bias, fbgemm adds the bias in float after scaling the accumulator,
      ``(acc·S_x·S_w + b)/S_y``, instead of an int32 bias code: at most 1 LSB apart (measured
      0.01-0.03 % of the codes), with or without reduce_range;
    * without a bias and with reduce_range (7-bit activations): exact on every instruction set;
    * without a bias and full-range uint8: exact where fbgemm uses AVX512-VNNI (vpdpbusd sums
      u8·s8 products straight into int32); on AVX2/AVX512 without VNNI, vpmaddubsw sums PAIRS
      of u8·s8 products into a saturating int16 (255·127·2 = 64770 > 32767), so codes differ by
      up to hundreds of LSB (see the AVX2 subprocess test).
    """
    engine(name)
    worst, frac = _x86_differences(True, with_bias=True)           # measured: 1 LSB, 0.01 % of the codes
    assert worst <= 1 and frac < 0.005, (worst, frac)
    worst, frac = _x86_differences(True, with_bias=False)
    assert (worst, frac) == (0, 0.0)
    for with_bias in (True, False):
        worst, frac = _x86_differences(False, with_bias=with_bias)  # measured with VNNI: 1 LSB / 0.03 %; 0 / 0
        if _has_vnni():
            assert worst <= int(with_bias) and frac < 0.005, (with_bias, worst, frac)
        else:                                                        # AVX2 / AVX512 without VNNI: saturation
            assert worst > 1, (with_bias, worst, frac)


_AVX2_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, {tests!r})
    import torch, test_integer as T
    torch.backends.quantized.engine = "x86"
    print(json.dumps({{f"{{r}}-{{b}}": T._x86_differences(r, b) for r in (False, True) for b in (False, True)}}))
""")


@pytest.mark.skipif("x86" not in torch.backends.quantized.supported_engines or " avx2" not in _cpu_flags(),
                    reason="needs torch's x86 engine on a CPU with AVX2 (Linux)")
def test_x86_engine_avx2_saturates_and_reduce_range_avoids_it():
    """fbgemm forced to AVX2 (FBGEMM_ENABLE_INSTRUCTIONS, read once at start: a subprocess).

    Measured here: full-range uint8 activations differ from the exact integers by up to 255
    LSB in about half of the codes (int16 saturation of vpmaddubsw); with reduce_range
    (activations in [0, 127], 127·127·2 = 32258 fits int16) at most 1 LSB with a float bias
    (fbgemm's float bias addition) and exactly equal without one.
    """
    script = _AVX2_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FBGEMM_ENABLE_INSTRUCTIONS="AVX2")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for bias in ("False", "True"):
        worst, frac = found[f"False-{bias}"]
        assert worst >= 50 and frac > 0.2, found                     # saturation
    assert found["True-False"] == [0, 0.0], found                  # reduce_range: exact
    worst, frac = found["True-True"]
    assert worst <= 1 and frac < 0.005, found


# ----------------------------------------------------------------------------- fixed point: gemmlowp in Python ints
def _ref_srdhm(a, b):
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    v = ab + (2 ** 30 if ab >= 0 else 1 - 2 ** 30)
    q = abs(v) // 2 ** 31                          # C: division truncates toward zero
    return q if v >= 0 else -q


def _ref_rdbpot(x, e):
    mask = (1 << e) - 1
    remainder, threshold = x & mask, (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def _ref_requantize(acc, m, s, z, qmin, qmax):
    x = min(max(acc * 2 ** max(-s, 0), INT32_MIN), INT32_MAX)
    return min(max(z + _ref_rdbpot(_ref_srdhm(x, m), max(s, 0)), qmin), qmax)


def _int32_draws(rng, n):
    """Random int32 values with the corners: 0, ±1, INT32_MIN, INT32_MAX, powers of two and ties."""
    corners = [0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN + 1, 2 ** 30, -2 ** 30, 3 << 20, -(3 << 20)]
    wide = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    small = rng.integers(-70000, 70000, n)
    return np.concatenate([np.array(corners, dtype=np.int64), wide, small]).astype(np.int32)


def test_srdhm_and_rdbpot_equal_python_int_reference(backend_name):
    rng = np.random.default_rng(7)
    a = _int32_draws(rng, 400)
    b = np.concatenate([_int32_draws(rng, 200), _int32_draws(rng, 200)[:a.size - 410]])
    assert a.size == b.size
    ours = B.to_numpy(I.saturating_rounding_doubling_high_mul(B.to_backend(a, backend_name),
                                                              B.to_backend(b, backend_name)))
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, [_ref_srdhm(int(x), int(y)) for x, y in zip(a, b)])
    # the saturation corner: INT32_MIN * INT32_MIN doubled is 2**63, the only overflow
    corner = B.to_backend(np.array([INT32_MIN, INT32_MIN, INT32_MAX], dtype=np.int32), backend_name)
    np.testing.assert_array_equal(B.to_numpy(I.saturating_rounding_doubling_high_mul(corner, INT32_MIN)),
                                  [INT32_MAX, INT32_MAX, -INT32_MAX])
    for e in (0, 1, 2, 5, 17, 31, 40, 62):
        out = B.to_numpy(I.rounding_divide_by_pot(B.to_backend(a, backend_name), e))
        np.testing.assert_array_equal(out, [_ref_rdbpot(int(x), e) for x in a], err_msg=f"exponent {e}")
    # ties go away from zero: 5 / 2 -> 3, -5 / 2 -> -3, 6 / 4 -> 2 (1.5), -6 / 4 -> -2
    ties = B.to_backend(np.array([5, -5, 6, -6, 3, -3], dtype=np.int32), backend_name)
    np.testing.assert_array_equal(B.to_numpy(I.rounding_divide_by_pot(ties, 1)), [3, -3, 3, -3, 2, -2])


def test_requantize_multiplier_properties():
    rng = np.random.default_rng(8)
    reals = list(10.0 ** rng.uniform(-12, 3, 300)) + [0.5, 1.0, 0.25, 1 - 2 ** -40, 2 ** -63, 2.0 ** 31 - 1]
    for real in reals:
        m, s = I.requantize_multiplier(real)
        assert isinstance(m, int) and isinstance(s, int)
        assert 2 ** 30 <= m < 2 ** 31, (real, m, s)
        # |m 2**-31 2**-s - M| <= 2**-32 2**-s (half a unit of the multiplier's last bit)
        assert abs(m * 2.0 ** (-31 - s) - real) <= 2.0 ** (-32 - s), (real, m, s)
    assert I.requantize_multiplier(1 - 2 ** -40) == (2 ** 30, -1)        # rounds to 2**31: halved, shift - 1
    assert I.requantize_multiplier(0.5) == (2 ** 30, 0)
    for bad in (0.0, -1.0, 2.0 ** 31, math.nan, math.inf, 2.0 ** -64):
        with pytest.raises(ValueError, match="real_multiplier"):
            I.requantize_multiplier(bad)


def test_requantize_equals_python_int_reference(backend_name):
    """Random multipliers and shifts (left shifts included), accumulators with the int32 corners."""
    rng = np.random.default_rng(9)
    acc = _int32_draws(rng, 150)
    for trial in range(40):
        real = float(10.0 ** rng.uniform(-9, 1.5))
        m, s = I.requantize_multiplier(real)
        if trial % 8 == 0:
            m = int(rng.integers(0, 2 ** 31))                # any non-negative int32 multiplier
        z = int(rng.integers(0, 256))
        qmin, qmax = (0, 255) if trial % 2 else (-2 ** 20, 2 ** 20)
        z = min(max(z, qmin), qmax)
        out = B.to_numpy(I.requantize(B.to_backend(acc, backend_name), m, s, z, qmin, qmax))
        want = [_ref_requantize(int(a), m, s, z, qmin, qmax) for a in acc]
        np.testing.assert_array_equal(out.astype(np.int64), want, err_msg=f"M={real} m={m} s={s}")
        assert out.dtype == (np.uint8 if qmax == 255 else np.int32)
    # per channel along axis 1
    accs = _int32_draws(rng, 40)[:48].reshape(12, 4)
    pairs = [I.requantize_multiplier(r) for r in (0.3, 1e-4, 2.5, 7e-7)]
    ms = B.to_backend(np.array([p[0] for p in pairs]), backend_name)
    ss = B.to_backend(np.array([p[1] for p in pairs]), backend_name)
    out = B.to_numpy(I.requantize(B.to_backend(accs, backend_name), ms, ss, 3, 0, 255))
    want = [[_ref_requantize(int(accs[i, j]), *pairs[j], 3, 0, 255) for j in range(4)] for i in range(12)]
    np.testing.assert_array_equal(out, want)


def test_fixed_point_within_one_lsb_of_qnnpack_float_path(backend_name):
    """Measured on random layers: fixed and float requantization differ by at most 1 LSB, rarely."""
    rng = np.random.default_rng(10)
    differing, total = 0, 0
    for trial in range(30):
        per_channel = trial % 2 == 0
        n, k, m = int(rng.integers(1, 9)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        sx, zx, sw, sy, zy = _qparams(rng, per_channel, m)
        xc = B.to_backend(rng.integers(0, 256, (n, k)).astype(np.uint8), backend_name)
        wc = rng.integers(-127, 128, (m, k)).astype(np.int8)
        bias = (rng.standard_normal(m) * 2).astype(np.float32)
        fixed = _ours("linear", backend_name, wc, sw, bias, sx, zx, sy, zy, False, "fixed")
        flt = _ours("linear", backend_name, wc, sw, bias, sx, zx, sy, zy, False, "float")
        d = np.abs(B.to_numpy(fixed(xc)).astype(np.int64) - B.to_numpy(flt(xc)).astype(np.int64))
        assert d.max() <= 1
        differing, total = differing + int((d > 0).sum()), total + d.size
    assert total > 2000 and differing / total < 0.01, (differing, total)      # measured: 0 of 2200
    # on the accumulators alone, over wide ranges (f32(acc) rounds beyond 2**24): measured 0.44 % differ
    differing, total = 0, 0
    for trial in range(50):
        real = float(10.0 ** rng.uniform(-6, -1))
        acc = B.to_backend(rng.integers(-int(200 / real), int(200 / real), 20000).astype(np.int32), backend_name)
        fixed = I.requantize(acc, *I.requantize_multiplier(real), 50, 0, 255)
        flt = I.requantize_float(acc, real, 50, 0, 255)
        d = np.abs(B.to_numpy(fixed).astype(np.int64) - B.to_numpy(flt).astype(np.int64))
        assert d.max() <= 1, real
        differing, total = differing + int((d > 0).sum()), total + d.size
    assert 0.001 < differing / total < 0.02, (differing, total)


# ----------------------------------------------------------------------------- converted models
def _float_bound(model, imodel, x, per_sample_out):
    """The error bound of convert's docstring, propagated through the FLOAT model layer by layer (torch float64)."""
    tf = torch.nn.functional
    xs = torch.from_numpy(B.to_numpy(x).astype(np.float64))
    eps = torch.full_like(xs, imodel.input_scale / 2)
    weighted = iter([lay for lay in imodel.layers if isinstance(lay, (I.IntegerLinear, I.IntegerConv2d))])
    layers = list(model)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, (L.Linear, L.Conv2d)):
            q = next(weighted)
            w = torch.from_numpy(B.to_numpy(layer._params["weight"].data).astype(np.float64))
            b = torch.from_numpy(B.to_numpy(layer._params["bias"].data).astype(np.float64))
            sw = torch.from_numpy(np.atleast_1d(B.to_numpy(q.weight_scale) if q.per_channel
                                                else np.float64(q.weight_scale)).astype(np.float64))
            sw = sw.expand(w.shape[0])
            what = torch.from_numpy(B.to_numpy(q.weight_codes).astype(np.float64)) * sw.reshape((-1,) + (1,) * (w.ndim - 1))
            if isinstance(layer, L.Linear):
                y = xs @ w.T + b
                spread = eps @ what.abs().T + (sw / 2) * xs.abs().sum(1, keepdim=True)
                tail = (sw * q.input_scale / 2 + q.output_scale)
            else:
                conv = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
                y = tf.conv2d(xs, w, b, **conv)
                spread = (tf.conv2d(eps, what.abs(), None, **conv)
                          + (sw / 2).reshape(1, -1, 1, 1) * tf.conv2d(xs.abs(), torch.ones_like(w), None, **conv))
                tail = (sw * q.input_scale / 2 + q.output_scale).reshape(1, -1, 1, 1)
            xs, eps = y, spread + tail
        elif isinstance(layer, L.ReLU):
            xs = xs.clamp(min=0)
        elif isinstance(layer, L.MaxPool2d):
            xs, eps = tf.max_pool2d(xs, layer.kernel_size, layer.stride), tf.max_pool2d(eps, layer.kernel_size,
                                                                                      layer.stride)
        elif isinstance(layer, L.Flatten):
            xs, eps = xs.flatten(1), eps.flatten(1)
        i += 1
    return xs.numpy(), eps.numpy()


def _check_within_bound(model, imodel, x):
    y_float, bound = _float_bound(model, imodel, x, True)
    np.testing.assert_allclose(B.to_numpy(model.eval()(x)), y_float, rtol=1e-10, atol=1e-10)
    y_int = B.to_numpy(imodel(x)).astype(np.float64)
    err = np.abs(y_int - y_float)
    ratio = float(np.max(err / bound))
    assert np.all(err <= bound * (1 + 1e-6) + 1e-12), f"max err/bound {ratio:.3f}"
    # a bound that says something: below the spread of the logits; the error reaches a few % of it
    spread, typical = float(np.ptp(y_float)), float(np.median(bound))
    assert typical < 0.6 * spread and ratio > 0.01, (typical, spread, ratio)
    return err, bound


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("requantization", ["fixed", "float"])
def test_mlp_within_derived_bound(be64, per_channel, requantization):
    B.seed(1)
    model = models.mlp((64, 100, 10), backend=be64)
    x = B.to_backend(np.random.default_rng(2).uniform(0, 1, (200, 64)), be64)
    imodel = I.convert(model, x, per_channel=per_channel, requantization=requantization, batch_size=64)
    assert imodel.backend.name == be64.name and imodel.backend.dtype == "float64"
    assert [type(lay) for lay in imodel.layers] == [I.IntegerLinear, I.IntegerLinear]
    assert imodel.layers[0].relu and not imodel.layers[1].relu
    assert imodel.eval() is imodel and model.training           # the model's mode is left as it was
    _check_within_bound(model, imodel, x)


@pytest.mark.parametrize("per_channel", [False, True])
def test_cnn_within_derived_bound(be64, per_channel):
    B.seed(2)
    model = models.small_cnn(channels=(6, 8), backend=be64)
    x = B.to_backend(np.random.default_rng(3).uniform(0, 1, (40, 1, 8, 8)), be64)
    imodel = I.convert(model, x, per_channel=per_channel)
    assert [type(lay).__name__ for lay in imodel.layers] == [
        "IntegerConv2d", "IntegerMaxPool2d", "IntegerConv2d", "IntegerMaxPool2d", "IntegerFlatten", "IntegerLinear"]
    _check_within_bound(model, imodel, x)


def test_backends_give_the_same_codes():
    B.seed(4)
    model = models.small_cnn(channels=(4, 4), backend="numpy")
    x = np.random.default_rng(4).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    a = I.convert(model, x)
    b = I.convert(model.to("torch-cpu"), B.to_backend(x, "torch-cpu"))
    qa = a.forward_codes(a.quantize_input(x))
    qb = b.forward_codes(b.quantize_input(B.to_backend(x, "torch-cpu")))
    assert B.is_torch(qb) and qb.dtype == torch.uint8
    np.testing.assert_array_equal(qa, B.to_numpy(qb))
    c = I.convert(model.to("torch-cpu"), x)                     # calibration data from another backend: moved
    assert c.backend.name == "torch-cpu" and c.stored_bytes() == a.stored_bytes()
    np.testing.assert_array_equal(B.to_numpy(c.forward_codes(c.quantize_input(B.to_backend(x, "torch-cpu")))), qa)
    with pytest.raises(TypeError, match="to_backend"):
        c(x)                                                    # but inputs must be on the model's backend


def test_converted_model_equals_torch_modules_on_qnnpack(engine):
    """The whole converted MLP, layer by layer through torch's quantized modules: the same codes."""
    engine("qnnpack")
    B.seed(5)
    model = models.mlp((64, 32, 10), backend="numpy")
    x = np.random.default_rng(5).uniform(0, 1, (64, 64)).astype(np.float32)
    imodel = I.convert(model, x, requantization="float")
    q = imodel.quantize_input(x)
    tq = _tq_input(q, imodel.input_scale, imodel.input_zero_point)
    for lay, flt in zip(imodel.layers, [model[0], model[2]]):
        bias = B.to_numpy(flt._params["bias"].data).astype(np.float32)
        sw = B.to_numpy(lay.weight_scale) if lay.per_channel else lay.weight_scale
        tq = _torch_linear(B.to_numpy(lay.weight_codes), sw, bias, lay.output_scale, lay.output_zero_point,
                           lay.relu)(tq)
        q = lay(q)
        np.testing.assert_array_equal(q, tq.int_repr().numpy())


def test_batchnorm_refused_until_folded(backend_name):
    B.seed(6)
    model = models.mlp((8, 6, 3), batchnorm=True, backend=backend_name)
    x = B.to_backend(np.random.default_rng(6).standard_normal((32, 8)), backend_name)
    model.train()
    model(x)                                    # running statistics that are not the defaults
    model.eval()
    with pytest.raises(ValueError, match=r"model\[1\] is a BatchNorm1d.*fold_batchnorms"):
        I.convert(model, x)
    folded = trimming.fold_batchnorms(model)
    imodel = I.convert(folded, x)
    ref = B.to_numpy(model(x))
    out = B.to_numpy(imodel(x))
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    cnn = models.small_cnn(channels=(2,), batchnorm=True, backend=backend_name)
    with pytest.raises(ValueError, match="BatchNorm2d.*fold"):
        I.convert(cnn, B.to_backend(np.zeros((2, 1, 8, 8)), backend_name))


def test_convert_errors():
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"model\[1\] \(AvgPool2d\).*supported: Linear"):
        I.convert(L.Sequential(L.Linear(4, 4), L.AvgPool2d(2)), x)
    with pytest.raises(ValueError, match="at least one Linear or Conv2d"):
        I.convert(L.Sequential(L.Flatten()), x)
    with pytest.raises(ValueError, match="calibration_x"):
        I.convert(L.Sequential(L.Linear(4, 4)), x[:0])
    with pytest.raises(ValueError, match="observer"):
        I.convert(L.Sequential(L.Linear(4, 4)), x, observer="nope")
    with pytest.raises(TypeError, match="model"):
        I.convert(L.Linear(4, 4), x)
    with pytest.raises(ValueError, match="calibration_x does not fit the model at model\\[0\\]"):
        I.convert(L.Sequential(L.Linear(5, 4)), x)


def test_accumulator_overflow_is_refused():
    """K·127·255 must stay below 2**31 - 1: K = 66311 fits, K = 66312 does not (codes ±127, z_x = 0)."""
    for k, fits in ((66311, True), (66312, False)):
        w = np.full((1, k), 127, dtype=np.int8)
        if fits:
            I.IntegerLinear(w, 0.01, None, 0.01, 0, 1.0, 0)
        else:
            with pytest.raises(ValueError, match="int32 accumulator can overflow.*66312 \\* 127 \\* 255"):
                I.IntegerLinear(w, 0.01, None, 0.01, 0, 1.0, 0)
    # the actual code ranges count: z_x = 128 halves max|x_q - z_x|
    I.IntegerLinear(np.full((1, 100000), 127, dtype=np.int8), 0.01, None, 0.01, 128, 1.0, 0)
    # and in convert the error names the layer
    model = L.Sequential(L.Linear(70000, 1, backend="numpy"))
    model[0]._params["weight"].data[...] = 1.0
    with pytest.raises(ValueError, match=r"model\[0\] \(Linear\).*overflow"):
        I.convert(model, np.random.default_rng(0).uniform(0, 1, (2, 70000)).astype(np.float32))


def test_stored_bytes():
    B.seed(7)
    model = models.mlp((64, 100, 10), backend="numpy")
    x = np.random.default_rng(7).uniform(0, 1, (50, 64)).astype(np.float32)
    for per_channel, requantization in ((True, "fixed"), (False, "fixed"), (True, "float")):
        imodel = I.convert(model, x, per_channel=per_channel, requantization=requantization)
        per = 4 + (8 if requantization == "fixed" else 4)        # weight scale + requantization constants
        c1, c2 = (100, 10) if per_channel else (1, 1)
        want = 8 + (64 * 100 + 4 * 100 + c1 * per + 8) + (100 * 10 + 4 * 10 + c2 * per + 8)
        assert imodel.stored_bytes() == want
    fp32 = 4 * ((64 + 1) * 100 + (100 + 1) * 10)
    assert 0.25 < imodel.stored_bytes() / fp32 < 0.3


def test_layer_errors_name_the_argument():
    w = np.zeros((3, 4), dtype=np.int8)
    with pytest.raises(TypeError, match="weight_codes"):
        I.IntegerLinear(w.astype(np.int16), 0.1, None, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="weight_scale"):
        I.IntegerLinear(w, np.ones(2, np.float32), None, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="input_zero_point"):
        I.IntegerLinear(w, 0.1, None, 0.1, 256, 0.1, 0)
    with pytest.raises(ValueError, match="bias_codes"):
        I.IntegerLinear(w, 0.1, np.zeros(2, np.int32), 0.1, 0, 0.1, 0)
    layer = I.IntegerLinear(w, 0.1, None, 0.1, 0, 0.1, 0)
    with pytest.raises(TypeError, match="uint8"):
        layer(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        layer(np.zeros((2, 5), dtype=np.uint8))
    with pytest.raises(TypeError, match="torch"):
        layer(torch.zeros((2, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match="bias"):
        I.quantize_bias(np.array([1e6], np.float32), 1e-4, 1e-4)
    with pytest.raises(ValueError, match="zero_point"):
        I.requantize(np.zeros(3, np.int32), 2 ** 30, 0, 300, 0, 255)
    with pytest.raises(ValueError, match="shift"):
        I.requantize(np.zeros(3, np.int32), 2 ** 30, 63, 0, 0, 255)
    with pytest.raises(ValueError, match="acc"):
        I.requantize(np.array([2 ** 40]), 2 ** 30, 0, 0, 0, 255)


def test_maxpool_and_relu_on_codes_equal_torch(backend_name):
    rng = np.random.default_rng(12)
    q = rng.integers(0, 256, (3, 4, 9, 7)).astype(np.uint8)
    tq = _tq_input(q, 0.05, 40)
    for kernel, stride in ((2, None), (3, 2), ((2, 3), (1, 2))):
        ref = torch.nn.functional.max_pool2d(tq, kernel, stride).int_repr().numpy()
        out = I.IntegerMaxPool2d(kernel, stride)(B.to_backend(q, backend_name))
        np.testing.assert_array_equal(B.to_numpy(out), ref)
    ref = torch.nn.functional.relu(tq).int_repr().numpy()                  # clamps at the zero point
    np.testing.assert_array_equal(B.to_numpy(I.IntegerReLU(40)(B.to_backend(q, backend_name))), ref)


def test_unfused_relu_and_dropout(be64):
    """Linear -> Dropout -> ReLU: Dropout is dropped, the ReLU (not right after the Linear) clamps codes."""
    B.seed(8)
    model = L.Sequential(L.Linear(12, 20, backend=be64), L.Dropout(0.3), L.ReLU(), L.Linear(20, 5, backend=be64))
    x = B.to_backend(np.random.default_rng(8).uniform(-1, 1, (100, 12)), be64)
    imodel = I.convert(model, x)
    assert [type(lay) for lay in imodel.layers] == [I.IntegerLinear, I.IntegerReLU, I.IntegerLinear]
    assert not imodel.layers[0].relu and imodel.layers[1].zero_point == imodel.layers[0].output_zero_point
    _check_within_bound(model, imodel, x)


def test_trained_digits_mlp_keeps_its_accuracy(backend_name):
    """Post-training int8 of a briefly trained digits MLP (64-100-10): test accuracy within 1 point.

    Measured: float 97.2 %, int8 97.5 % per tensor and per channel (numpy and torch-cpu alike).
    """
    from nnopt_lab import datasets
    from nnopt_lab.training.loop import fit
    B.seed(0)
    data = datasets.load_digits(backend="numpy")
    model = models.mlp((64, 100, 10), backend="numpy")
    fit(model, data.train, epochs=20, batch_size=32, lr=0.1, seed=0, progress=False)
    model = model.to(backend_name).eval()
    (x_train, _), (x_test, y_test) = data.to(backend_name).train, data.to(backend_name).test

    def accuracy(f):
        return float((B.to_numpy(f(x_test)).argmax(1) == B.to_numpy(y_test)).mean())

    base = accuracy(model)
    assert base > 0.9
    for per_channel in (False, True):
        assert abs(accuracy(I.convert(model, x_train[:256], per_channel=per_channel)) - base) <= 0.01


def test_grouped_strided_conv_model_within_bound(be64):
    """from_float keeps stride, padding, dilation and groups (a grouped, strided, dilated CNN)."""
    B.seed(9)
    model = L.Sequential(L.Conv2d(2, 4, 3, stride=2, padding=1, backend=be64), L.ReLU(),
                         L.Conv2d(4, 6, 2, padding=(1, 0), dilation=(1, 2), groups=2, backend=be64), L.ReLU(),
                         L.Flatten(), L.Linear(6 * 6 * 3, 3, backend=be64))
    x = B.to_backend(np.random.default_rng(9).uniform(-1, 1, (20, 2, 10, 10)), be64)
    imodel = I.convert(model, x, per_channel=True)
    conv = imodel.layers[1]
    assert (conv.stride, conv.padding, conv.dilation, conv.groups) == ((1, 1), (1, 0), (1, 2), 2)
    _check_within_bound(model, imodel, x)


def test_quantize_bias_uses_the_whole_int32_range_and_refuses_its_ends():
    # 2**31 - 128 is the largest float32 below 2**31: a valid code; the next float32 (2**31) saturates
    sw, sx = 0.5, 0.5
    codes = I.quantize_bias(np.array([(2 ** 31 - 128) * 0.25, -(2 ** 31 - 128) * 0.25, 1.0], np.float32), sw, sx)
    assert codes.dtype == np.int32 and codes.tolist() == [2 ** 31 - 128, -(2 ** 31 - 128), 4]
    for big in (2.0 ** 31 * 0.25, -(2.0 ** 31) * 0.25, 1e30):
        with pytest.raises(ValueError, match=r"bias\[1\] .* steps of S_w\*S_x: at or beyond the ends of the int32"):
            I.quantize_bias(np.array([0.0, big], np.float32), sw, sx)
        with pytest.raises(ValueError, match=r"bias\[1\]"):
            I.quantize_bias(np.array([0.0, big], np.float32), np.array([sw, sw], np.float32), sx)
    for bad in (np.nan, np.inf, 1e39):
        with pytest.raises(ValueError, match=r"bias must hold finite float32 numbers .* bias\[0\]"):
            I.quantize_bias(np.array([bad, 0.0]), sw, sx)


def test_functional_max_pool_takes_codes_in_their_dtype(backend_name):
    """IntegerMaxPool2d is nn.functional.maxpool2d_forward on the codes: same values as on floats, dtype kept."""
    rng = np.random.default_rng(13)
    for dtype in ("uint8", "int8", "int32"):
        info = np.iinfo(dtype)
        q = rng.integers(info.min, info.max, (2, 3, 7, 6), endpoint=True).astype(dtype)
        for kernel, stride in ((2, None), (3, 2), ((2, 3), (1, 2))):
            out, cache = F.maxpool2d_forward(B.to_backend(q, backend_name), kernel, stride)
            assert B.dtype_name(out) == dtype
            ref = torch.nn.functional.max_pool2d(torch.from_numpy(q.astype(np.float64)), kernel, stride)
            np.testing.assert_array_equal(B.to_numpy(out), ref.numpy().astype(dtype))
        with pytest.raises(TypeError, match="codes have no gradient"):
            F.maxpool2d_backward(B.to_backend(np.ones(tuple(out.shape), np.float32), backend_name), cache)
    with pytest.raises(TypeError, match="float or integer"):
        F.maxpool2d_forward(B.to_backend(np.ones((1, 1, 2, 2), bool), backend_name), 2)


def test_convert_passes_observer_options_to_every_observer(backend_name):
    from nnopt_lab.inference import calibration
    B.seed(4)
    model = models.mlp((6, 8, 3), backend=backend_name).eval()
    x = B.to_backend(np.random.default_rng(4).standard_normal((300, 6)).astype(np.float32), backend_name)
    options = {"bins": 512, "quantized_bins": 256}
    converted = I.convert(model, x, observer="entropy", observer_options=options, batch_size=128)
    # by hand: the same observers on the same batches (input, then the fused Linear+ReLU output, then the logits)
    hand = [calibration.make_observer("entropy", bits=8, **options) for _ in range(3)]
    for start in range(0, 300, 128):
        xb = x[start:start + 128]
        hand[0](xb)
        h = F.relu_forward(model[0].forward(xb))[0]
        hand[1](h)
        hand[2](model[2].forward(h))
    expected = [(float(np.float32(s)), int(z)) for s, z in (o.calculate_qparams() for o in hand)]
    got = [(converted.input_scale, converted.input_zero_point)] + [
        (layer.output_scale, layer.output_zero_point) for layer in converted.layers if isinstance(layer, I.IntegerLinear)]
    assert got == expected
    default = I.convert(model, x, observer="entropy", batch_size=128)
    assert (default.layers[0].output_scale, default.layers[0].output_zero_point) != expected[1]   # the option mattered
    with pytest.raises(ValueError, match=r"observer_options .* 'nope' is not an option of method 'entropy'"):
        I.convert(model, x, observer="entropy", observer_options={"nope": 1})
    with pytest.raises(ValueError, match="quantized_bins"):
        I.convert(model, x, observer="entropy", observer_options={"bins": 64, "quantized_bins": 128})
    with pytest.raises(ValueError, match="must not set 'bits'"):
        I.convert(model, x, observer_options={"bits": 4})
    with pytest.raises(TypeError, match="observer_options must be a dict"):
        I.convert(model, x, observer_options=[("bins", 3)])
    with pytest.raises(TypeError, match="str keys"):
        I.convert(model, x, observer_options={1: 2})
    assert I.convert(model, x, observer_options={}).input_scale == I.convert(model, x).input_scale


def test_codes_to_int8_flips_the_top_bit(backend_name):
    q = B.to_backend(np.arange(256, dtype=np.uint8).reshape(16, 16), backend_name)
    out = I._to_int8(q)
    assert B.dtype_name(out) == "int8"
    np.testing.assert_array_equal(B.to_numpy(out), np.arange(256).reshape(16, 16) - 128)


def test_model_forward_skips_no_check_of_x(backend_name):
    """IntegerModel.forward runs the layers unchecked inside; x itself is still checked, and the result is the
    checked path's (quantize_input, forward_codes, dequantize) bit for bit."""
    B.seed(5)
    model = models.small_cnn(backend=backend_name).eval()
    x = B.to_backend(np.random.default_rng(5).standard_normal((40, 1, 8, 8)).astype(np.float32), backend_name)
    converted = I.convert(trimming.fold_batchnorms(model), x)
    from nnopt_lab.compression import quantization as Q
    codes = converted.forward_codes(converted.quantize_input(x))
    expected = Q.dequantize(codes, converted.output_scale, converted.output_zero_point)
    np.testing.assert_array_equal(B.to_numpy(converted(x)), B.to_numpy(expected))
    with pytest.raises(ValueError, match="NaN"):
        converted(x * float("nan"))
    with pytest.raises(TypeError, match="floating-point"):
        converted(B.to_backend(np.ones((2, 1, 8, 8), np.uint8), backend_name))
    with pytest.raises(ValueError, match=r"does not fit the model: IntegerConv2d expects q of shape \(N, 1, H, W\)"):
        converted(x[:, :, :, :, None][..., 0].reshape(40, 64, 1, 1))
    other = "torch-cpu" if backend_name == "numpy" else "numpy"
    with pytest.raises(TypeError, match="move x"):
        converted(B.to_backend(np.ones((2, 1, 8, 8), np.float32), other))
