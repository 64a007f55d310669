"""Quantization-aware training: the STE mask and LSQ gradients against torch (bit for bit where torch
is exact), FakeQuantize against torch.ao.quantization.FakeQuantize over several steps, QATLayer against
torch's fake-quantized F.linear / F.conv2d, prepare_qat / calibrate / strip_qat, bad input, and the
chapter's claim: 4-bit QAT beats 4-bit PTQ of the same float model on digits."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from nnopt_lab import backend as B
from nnopt_lab.compression import quantization as Q
from nnopt_lab.compression.weight_sharing import SharedLayer
from nnopt_lab.datasets import load_digits
from nnopt_lab.inference import qat
from nnopt_lab.models import mlp, small_cnn
from nnopt_lab.nn.layers import AvgPool2d, BatchNorm1d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from nnopt_lab.testing import gradcheck
from nnopt_lab.training import fit
from nnopt_lab.training.loop import evaluate
from nnopt_lab.training.optim import SGD

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

# (scale, zero_point, qmin, qmax): 8-bit affine and symmetric, 4-bit, 2-bit, 16-bit
SETTINGS = [(0.05, 128, 0, 255), (0.02, 0, -127, 127), (0.3, 5, 0, 15), (0.25, -1, -7, 7), (0.7, 1, 0, 3),
            (1e-4, 30000, 0, 65535)]


def _edges(scale, zero_point, qmin, qmax):
    """Values on the range's edges, half a code beyond them (ties) and a little inside / outside."""
    s = float(np.float32(scale))
    edges = []
    for code in (qmin, qmax):
        for offset in (0.0, -0.5, 0.5, -0.49, 0.49, -1.0, 1.0, -0.51, 0.51):
            edges.append((code - zero_point + offset) * s)
    return np.array(edges)


def _inputs(scale, zero_point, qmin, qmax, n=300, seed=0):
    g = np.random.default_rng(seed)
    lo, hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    width = hi - lo
    x = g.uniform(lo - 0.3 * width, hi + 0.3 * width, n)
    return np.concatenate([x, _edges(scale, zero_point, qmin, qmax)])


def _torch_ste(x, dout, scale, zero_point, qmin, qmax, axis=None):
    xt = torch.tensor(x, requires_grad=True)
    if axis is None:
        out = torch.fake_quantize_per_tensor_affine(xt, scale, zero_point, qmin, qmax)
    else:
        out = torch.fake_quantize_per_channel_affine(xt, torch.tensor(scale, dtype=torch.float32),
                                                     torch.tensor(zero_point, dtype=torch.int32), axis, qmin, qmax)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy()


# ----------------------------------------------------------------------------- the STE
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ste_output_and_mask_equal_torch_per_tensor(backend_name, setting, dtype):
    scale, zp, qmin, qmax = setting
    x = _inputs(*setting).astype(dtype)
    dout = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    want_out, want_dx = _torch_ste(x, dout, scale, zp, qmin, qmax)
    be = B.get_backend(backend_name, dtype)
    out, cache = qat.fake_quantize_forward(B.to_backend(x, be), scale, zp, qmin, qmax)
    dx = B.to_numpy(qat.fake_quantize_backward(B.to_backend(dout, be), cache))
    mask = B.to_numpy(cache.mask)
    assert mask.dtype == bool and 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(dx, want_dx)                      # the gradient, bit for bit
    np.testing.assert_array_equal(mask, want_dx != 0)
    if dtype == "float32":
        np.testing.assert_array_equal(B.to_numpy(out), want_out)
    else:                                  # torch's per-tensor kernel rounds its float64 output to float32
        np.testing.assert_allclose(B.to_numpy(out), want_out, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(B.to_numpy(out), B.to_numpy(Q.fake_quantize(B.to_backend(x, be), scale, zp,
                                                                               qmin, qmax)))


def test_ste_edges_pass_and_beyond_is_zero(backend_name):
    """Exactly on q_min / q_max the gradient passes; one code beyond it is zero; ties round half to even."""
    be = B.get_backend(backend_name, "float32")
    s = 0.25                                                          # exact in float32: no rounding noise
    x = np.array([0.0, 15 * s, -s, 16 * s, -0.5 * s, 15.5 * s, -1.5 * s, 14.5 * s, 16.5 * s], dtype=np.float32)
    out, cache = qat.fake_quantize_forward(B.to_backend(x, be), s, 0, 0, 15)
    # round half to even: -0.5 -> -0 (in), 15.5 -> 16 (out), -1.5 -> -2 (out), 14.5 -> 14 (in), 16.5 -> 16 (out)
    np.testing.assert_array_equal(B.to_numpy(cache.mask), [1, 1, 0, 0, 1, 0, 0, 1, 0])
    _, want = _torch_ste(x, np.ones_like(x), s, 0, 0, 15)
    np.testing.assert_array_equal(B.to_numpy(cache.mask), want != 0)
    np.testing.assert_array_equal(B.to_numpy(out), [0, 3.75, 0, 3.75, 0, 3.75, 0, 3.5, 3.75])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_ste_per_channel_equals_torch(backend_name, dtype, axis):
    g = np.random.default_rng(2)
    x = (g.standard_normal((5, 6, 3)) * 2).astype(dtype)
    c = x.shape[axis]
    scale = (g.uniform(0.05, 0.5, c)).astype(np.float32)
    zp = g.integers(0, 16, c).astype(np.int32)
    x.reshape(-1)[:4] = [0.0, (15 - zp[0]) * scale[0], (-zp[0]) * scale[0], (15.5 - zp[0]) * scale[0]]
    dout = g.standard_normal(x.shape).astype(dtype)
    want_out, want_dx = _torch_ste(x, dout, scale, zp, 0, 15, axis % 3)
    be = B.get_backend(backend_name, dtype)
    out, cache = qat.fake_quantize_forward(B.to_backend(x, be), B.to_backend(scale, be, dtype="float32"),
                                           B.to_backend(zp, be), 0, 15, axis=axis)
    dx = B.to_numpy(qat.fake_quantize_backward(B.to_backend(dout, be), cache))
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_array_equal(B.to_numpy(out), want_out)
    assert 0 < B.to_numpy(cache.mask).sum() < x.size


def test_ste_errors():
    x = np.linspace(-1, 1, 5)
    out, cache = qat.fake_quantize_forward(x, 0.1, 0, -8, 7)
    with pytest.raises(ValueError, match="dout must have the forward output's shape"):
        qat.fake_quantize_backward(np.ones(4), cache)
    with pytest.raises(TypeError, match="cache must be what fake_quantize_forward returned"):
        qat.fake_quantize_backward(np.ones(5), (out,))
    with pytest.raises(TypeError, match="dout must be a floating-point array"):
        qat.fake_quantize_backward(np.ones(5, dtype=np.int64), cache)
    with pytest.raises(TypeError, match="dout is on torch-cpu"):
        qat.fake_quantize_backward(torch.ones(5, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match="scale"):
        qat.fake_quantize_forward(x, 0.0, 0, -8, 7)
    with pytest.raises(ValueError, match="zero_point"):
        qat.fake_quantize_forward(x, 0.1, 9, -8, 7)
    with pytest.raises(ValueError, match="NaN"):
        qat.fake_quantize_forward(np.array([np.nan]), 0.1, 0, -8, 7)


# ----------------------------------------------------------------------------- LSQ
def _torch_learnable(x, dout, scale, zp, qmin, qmax, grad_factor, axis=None):
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    st = torch.tensor(np.atleast_1d(scale), dtype=torch.float32, requires_grad=True)
    zt = torch.tensor(np.atleast_1d(zp), dtype=torch.float32, requires_grad=True)
    if axis is None:
        out = torch._fake_quantize_learnable_per_tensor_affine(xt, st, zt, qmin, qmax, grad_factor)
    else:
        out = torch._fake_quantize_learnable_per_channel_affine(xt, st, zt, axis, qmin, qmax, grad_factor)
    out.backward(torch.tensor(dout, dtype=torch.float32))
    return out.detach().numpy(), xt.grad.numpy(), st.grad.numpy(), zt.grad.numpy()


@pytest.mark.parametrize("setting", [s for s in SETTINGS[:5] if s[1] >= 0])
@pytest.mark.parametrize("grad_factor", [1.0, 0.37])
def test_lsq_per_tensor_equals_torch_learnable_float32(backend_name, setting, grad_factor):
    scale, zp, qmin, qmax = setting
    x = _inputs(*setting).astype(np.float32)
    dout = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    want = _torch_learnable(x, dout, scale, zp, qmin, qmax, grad_factor)
    be = B.get_backend(backend_name, "float32")
    s = B.to_backend(np.array([scale], dtype=np.float32), be)
    out, cache = qat.lsq_forward(B.to_backend(x, be), s, zp, qmin, qmax, grad_factor=grad_factor)
    dx, ds, dz = (B.to_numpy(a) for a in qat.lsq_backward(B.to_backend(dout, be), cache))
    np.testing.assert_array_equal(B.to_numpy(out), want[0])
    np.testing.assert_array_equal(dx, want[1])
    assert ds.shape == dz.shape == (1,)
    np.testing.assert_allclose(ds, want[2], rtol=2e-5, atol=1e-5)     # a float32 sum in another order
    np.testing.assert_allclose(dz, want[3], rtol=2e-5, atol=1e-5)
    assert dz[0] != 0 and ds[0] != 0


def test_lsq_backward_rounds_z_plus_x_over_scale_as_torch():
    """At an exact tie with an odd z, torch's learnable backward reads round(z + x/Δ), not z + round(x/Δ)."""
    x = np.array([14.5 * 0.25, 13.5 * 0.25, 2.5 * 0.25], dtype=np.float32)    # x/Δ = 14.5: z + x/Δ = 15.5 -> 16
    want = _torch_learnable(x, np.ones(3, np.float32), 0.25, 1, 0, 15, 1.0)
    out, cache = qat.lsq_forward(x, 0.25, 1, 0, 15)
    dx, ds, dz = qat.lsq_backward(np.ones(3, np.float32), cache)
    np.testing.assert_array_equal(dx, want[1])
    np.testing.assert_array_equal(dx, [0, 1, 1])
    np.testing.assert_array_equal(out, want[0])
    np.testing.assert_allclose(ds, want[2][0], rtol=1e-6)
    np.testing.assert_allclose(dz, want[3][0], rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_lsq_per_channel_equals_torch_learnable_float32(backend_name, axis):
    g = np.random.default_rng(4)
    x = (g.standard_normal((6, 5, 2)) * 1.5).astype(np.float32)
    c = x.shape[axis]
    scale = g.uniform(0.05, 0.4, c).astype(np.float32)
    zp = g.integers(0, 16, c).astype(np.float32)
    dout = g.standard_normal(x.shape).astype(np.float32)
    want = _torch_learnable(x, dout, scale, zp, 0, 15, 0.5, axis)
    be = B.get_backend(backend_name, "float32")
    out, cache = qat.lsq_forward(B.to_backend(x, be), B.to_backend(scale, be), B.to_backend(zp, be), 0, 15,
                                 axis=axis, grad_factor=0.5)
    dx, ds, dz = (B.to_numpy(a) for a in qat.lsq_backward(B.to_backend(dout, be), cache))
    np.testing.assert_array_equal(B.to_numpy(out), want[0])
    np.testing.assert_array_equal(dx, want[1])
    assert ds.shape == dz.shape == (c,)
    np.testing.assert_allclose(ds, want[2], rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(dz, want[3], rtol=2e-5, atol=1e-5)


def _lsq_autograd(x, dout, scale, zp, qmin, qmax, grad_factor, axis=None):
    """LSQ as torch autograd of its definition (float64): STE round, clamp, gradient scaling of Δ and z."""
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(np.atleast_1d(scale), dtype=torch.float64, requires_grad=True)
    zt = torch.tensor(np.atleast_1d(zp), dtype=torch.float64, requires_grad=True)
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    s = (st * grad_factor + (st - st * grad_factor).detach()).reshape(shape)
    z = (zt * grad_factor + (zt - zt * grad_factor).detach()).reshape(shape)
    v = xt / s
    v = v + (torch.round(v) - v).detach()                  # straight-through round
    out = (torch.clamp(v + z, qmin, qmax) - z) * s
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), st.grad.numpy(), zt.grad.numpy()


@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("grad_factor", [1.0, 0.05])
def test_lsq_gradients_equal_torch_autograd_of_the_definition_float64(be64, axis, grad_factor):
    """Scales that are powers of two (1/Δ exact), so float64 agrees with the real-number definition."""
    g = np.random.default_rng(5)
    x = g.standard_normal((7, 4)) * 2
    if axis is None:
        scale, zp = np.array([0.125]), np.array([3.0])
    else:
        scale, zp = np.array([0.125, 0.25, 0.0625, 0.5]), np.array([0.0, 2.0, 7.0, 15.0])
    dout = g.standard_normal(x.shape)
    want = _lsq_autograd(x, dout, scale, zp, 0, 15, grad_factor, axis)
    s = B.to_backend(scale, be64)
    z = B.to_backend(zp, be64) if axis is not None else 3
    out, cache = qat.lsq_forward(B.to_backend(x, be64), s, z, 0, 15, axis=axis, grad_factor=grad_factor)
    dx, ds, dz = (B.to_numpy(a) for a in qat.lsq_backward(B.to_backend(dout, be64), cache))
    np.testing.assert_allclose(B.to_numpy(out), want[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(dx, want[1])
    np.testing.assert_allclose(ds, want[2], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dz, want[3], rtol=1e-12, atol=1e-13)
    assert np.abs(ds).min() > 0 and np.abs(dz).min() > 0


def test_lsq_scale_gradient_passes_gradcheck_where_smooth(be64):
    """Every entry clamped: the output is (q_min - z)Δ or (q_max - z)Δ, linear in Δ, and LSQ's gradient is exact."""
    x = B.to_backend(np.array([-40.0, -9.0, 12.0, 50.0, 33.0]), be64)
    seen = {}

    def forward(s):
        out, seen["cache"] = qat.lsq_forward(x, s, 2, 0, 15)
        return out

    def backward(g):
        return qat.lsq_backward(g, seen["cache"])[1]

    err = gradcheck(forward, backward, B.to_backend(np.array([0.5]), be64), h=2.0 ** -20, tol=1e-10)
    assert err < 1e-10


def test_lsq_grad_factor_and_errors():
    assert qat.lsq_grad_factor(100, 15) == pytest.approx(1 / math.sqrt(1500), rel=1e-15)
    assert qat.lsq_grad_factor(np.int64(4), 1) == 0.5
    with pytest.raises(ValueError, match="n must be"):
        qat.lsq_grad_factor(0, 15)
    with pytest.raises(ValueError, match="grad_factor"):
        qat.lsq_forward(np.ones(3), 0.1, 0, 0, 15, grad_factor=0.0)
    with pytest.raises(ValueError, match="scale must be a number or an array of shape"):
        qat.lsq_forward(np.ones((3, 2)), np.ones(2), 0, 0, 15)
    with pytest.raises(TypeError, match="cache must be what lsq_forward returned"):
        qat.lsq_backward(np.ones(3), qat.fake_quantize_forward(np.ones(3), 0.1, 0, 0, 15)[1])


# ----------------------------------------------------------------------------- FakeQuantize
@pytest.mark.parametrize("bits,symmetric", [(8, False), (4, False), (8, True), (3, True)])
def test_fake_quantize_module_equals_torch_ao_fake_quantize_over_steps(backend_name, bits, symmetric):
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver
    qmin, qmax = Q.integer_range(bits, symmetric)
    ref = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=qmin, quant_max=qmax,
                       dtype=torch.qint8 if symmetric else torch.quint8,
                       qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    ours = qat.FakeQuantize(bits, symmetric)
    be = B.get_backend(backend_name, "float32")
    g = np.random.default_rng(6)
    for step in range(6):
        x = (g.standard_normal((16, 7)) * (1 + step) + 0.4 * step).astype(np.float32)
        dout = g.standard_normal(x.shape).astype(np.float32)
        xt = torch.tensor(x, requires_grad=True)
        want = ref(xt)
        want.backward(torch.tensor(dout))
        out = ours(B.to_backend(x, be))
        dx = ours.backward(B.to_backend(dout, be))
        np.testing.assert_array_equal(B.to_numpy(out), want.detach().numpy())
        np.testing.assert_array_equal(B.to_numpy(dx), xt.grad.numpy())
        assert ours.scale == ref.scale.item() and ours.zero_point == ref.zero_point.item()
    # eval: frozen (torch: observer disabled)
    ours.eval()
    ref.disable_observer()
    x = (g.standard_normal((16, 7)) * 30).astype(np.float32)
    before = ours.scale
    np.testing.assert_array_equal(B.to_numpy(ours(B.to_backend(x, be))), ref(torch.tensor(x)).numpy())
    assert ours.scale == before


def test_fake_quantize_module_errors():
    with pytest.raises(ValueError, match="bits"):
        qat.FakeQuantize(17)
    with pytest.raises(ValueError, match="bits"):
        qat.FakeQuantize(0)
    with pytest.raises(ValueError, match="observer must be one of"):
        qat.FakeQuantize(8, observer="magic")
    with pytest.raises(TypeError, match="observer must be one of"):
        qat.FakeQuantize(8, observer=None)
    with pytest.raises(ValueError, match="observer must be one of"):
        qat.FakeQuantize(8, observer="per_channel_minmax")          # one range per activation tensor
    fq = qat.FakeQuantize(8, observer="percentile", percentile=99.0)
    fq(np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32))
    assert fq.scale > 0
    with pytest.raises(ValueError, match="calibrate first"):
        qat.FakeQuantize(8).eval()(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        qat.FakeQuantize(8).backward(np.ones(3))


def test_learnable_fake_quantize_initializes_from_the_observer_then_learns():
    fq = qat.FakeQuantize(4, learnable=True, backend="numpy")
    assert [n for n, _ in fq.named_parameters()] == ["scale"]
    x = np.random.default_rng(7).standard_normal((32, 5)).astype(np.float32)
    out = fq(x)
    s0, z0 = Q.qparams(float(x.min()), float(x.max()), 4)
    assert fq.scale == s0 and fq.zero_point == z0
    np.testing.assert_array_equal(out, Q.fake_quantize(x, s0, z0, 0, 15))
    dout = np.ones_like(x)
    dx = fq.backward(dout)
    want = qat.lsq_backward(dout, qat.lsq_forward(x, s0, z0, 0, 15, grad_factor=qat.lsq_grad_factor(160, 15))[1])
    np.testing.assert_array_equal(dx, want[0])
    np.testing.assert_array_equal(fq._params["scale"].grad, np.reshape(want[1], (1,)))
    fq._params["scale"].data = fq._params["scale"].data * 2          # a learned step: no observer afterwards
    fq(x * 10)
    assert fq.scale == pytest.approx(2 * s0)


# ----------------------------------------------------------------------------- QATLayer
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_qat_linear_equals_torch_fake_quantized_linear(backend_name, per_channel, dtype):
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver
    be = B.get_backend(backend_name, dtype)
    layer = Linear(6, 4, backend=be)
    q = qat.QATLayer(layer, bits=4, per_channel=per_channel)
    g = np.random.default_rng(8)
    x, dout = g.standard_normal((5, 6)).astype(dtype), g.standard_normal((5, 4)).astype(dtype)
    w = torch.tensor(B.to_numpy(layer._params["weight"].data), requires_grad=True)
    b = torch.tensor(B.to_numpy(layer._params["bias"].data), requires_grad=True)
    if per_channel:
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       quant_min=-7, quant_max=7)
        obs(w.detach().float())
        s, z = obs.calculate_qparams()
        w_hat = torch.fake_quantize_per_channel_affine(w, s, z.to(torch.int32), 0, -7, 7)
    else:
        obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-7, quant_max=7)
        obs(w.detach().float())
        s, z = obs.calculate_qparams()
        w_hat = torch.fake_quantize_per_tensor_affine(w, s.item(), int(z.item()), -7, 7)
        if dtype == "float64":    # torch rounds its float64 output to float32: take its codes times the scale
            w_hat = w + (torch.round(w_hat / s.item()) * s.item() - w).detach()     # (every code in range)
    xt = torch.tensor(x, requires_grad=True)
    want = TF.linear(xt, w_hat, b)
    want.backward(torch.tensor(dout))
    out = q(B.to_backend(x, be))
    dx = q.backward(B.to_backend(dout, be))
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(B.to_numpy(q.quantized_weight()), w_hat.detach().numpy(), **tol)
    np.testing.assert_allclose(B.to_numpy(out), want.detach().numpy(), **tol)
    np.testing.assert_allclose(B.to_numpy(dx), xt.grad.numpy(), **tol)
    np.testing.assert_allclose(B.to_numpy(q._params["weight"].grad), w.grad.numpy(), **tol)
    np.testing.assert_allclose(B.to_numpy(q._params["bias"].grad), b.grad.numpy(), **tol)
    np.testing.assert_array_equal(B.to_numpy(layer._params["weight"].data), w.detach().numpy())   # caller's unchanged


def test_qat_conv_equals_torch_fake_quantized_conv(be64):
    from torch.ao.quantization import PerChannelMinMaxObserver
    conv = Conv2d(2, 3, 3, padding=1, backend=be64)
    q = qat.QATLayer(conv, bits=3)
    g = np.random.default_rng(9)
    x, dout = g.standard_normal((2, 2, 5, 5)), g.standard_normal((2, 3, 5, 5))
    w = torch.tensor(B.to_numpy(conv._params["weight"].data), requires_grad=True)
    b = torch.tensor(B.to_numpy(conv._params["bias"].data), requires_grad=True)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                   quant_min=-3, quant_max=3)
    obs(w.detach().float())
    s, z = obs.calculate_qparams()
    xt = torch.tensor(x, requires_grad=True)
    want = TF.conv2d(xt, torch.fake_quantize_per_channel_affine(w, s, z.to(torch.int32), 0, -3, 3), b, padding=1)
    want.backward(torch.tensor(dout))
    out = q(B.to_backend(x, be64))
    dx = q.backward(B.to_backend(dout, be64))
    np.testing.assert_allclose(B.to_numpy(out), want.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(dx), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(q._params["weight"].grad), w.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_learnable_qat_layer_scale_gradient_is_lsq(be64):
    layer = Linear(5, 3, backend=be64)
    q = qat.QATLayer(layer, bits=4, learnable=True)
    assert [n for n, _ in q.named_parameters()] == ["weight", "bias", "weight_scale"]
    s0, _ = Q.qparams_per_channel(*Q.channel_minmax(layer._params["weight"].data, 0), 4, True)
    np.testing.assert_array_equal(B.to_numpy(q._params["weight_scale"].data), B.to_numpy(s0))
    x = B.to_backend(np.random.default_rng(10).standard_normal((4, 5)), be64)
    q._params["weight_scale"].data = q._params["weight_scale"].data * 0.6         # some weights now clamped
    q(x)
    q.backward(B.to_backend(np.ones((4, 3)), be64))
    w = q._params["weight"].data
    dw_hat = B.namespace(w).matmul(B.to_backend(np.ones((3, 4)), be64), x)
    want = qat.lsq_backward(dw_hat, qat.lsq_forward(w, q._params["weight_scale"].data,
                                                    B.namespace(w).zeros_like(q._params["weight_scale"].data), -7, 7,
                                                    axis=0, grad_factor=qat.lsq_grad_factor(15, 7))[1])
    np.testing.assert_allclose(B.to_numpy(q._params["weight"].grad), B.to_numpy(want[0]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(B.to_numpy(q._params["weight_scale"].grad), B.to_numpy(want[1]), rtol=1e-12,
                               atol=1e-14)
    assert 0 < int((B.to_numpy(q._params["weight"].grad) == 0).sum()) < 15         # the clamped ones get none


def test_qat_layer_errors():
    with pytest.raises(TypeError, match="layer must be a Linear or Conv2d"):
        qat.QATLayer(ReLU())
    with pytest.raises(ValueError, match="bits"):
        qat.QATLayer(Linear(2, 2), bits=1)
    with pytest.raises(ValueError, match="bits"):
        qat.QATLayer(Linear(2, 2), bits=17)


# ----------------------------------------------------------------------------- models
def test_prepare_qat_places_fake_quantizers_and_copies():
    model = mlp((4, 5, 6, 3), dropout=0.1)
    prepared = qat.prepare_qat(model, bits=4, activation_bits=6)
    kinds = [type(m).__name__ for m in prepared]
    assert kinds == ["FakeQuantize", "QATLayer", "ReLU", "FakeQuantize", "Dropout", "QATLayer", "ReLU", "FakeQuantize",
                     "Dropout", "QATLayer", "FakeQuantize"]
    assert all(m.bits == 6 for m in prepared if isinstance(m, qat.FakeQuantize))
    assert prepared.training
    assert prepared[1]._params["weight"].data is not model[0]._params["weight"].data
    cnn = small_cnn(in_channels=1, image_size=8, channels=(2, 2), num_classes=3)
    kinds = [type(m).__name__ for m in qat.prepare_qat(cnn)]
    assert kinds[:5] == ["FakeQuantize", "QATLayer", "ReLU", "FakeQuantize", "MaxPool2d"] and kinds[-1] == "FakeQuantize"
    pooled = Sequential(Conv2d(1, 2, 3), AvgPool2d(2), Flatten(), Linear(2, 2))
    assert [type(m).__name__ for m in qat.prepare_qat(pooled)] == [
        "FakeQuantize", "QATLayer", "FakeQuantize", "AvgPool2d", "FakeQuantize", "Flatten", "QATLayer", "FakeQuantize"]


def test_prepare_qat_errors():
    with pytest.raises(ValueError, match="fold first"):
        qat.prepare_qat(mlp((3, 4, 2), batchnorm=True))
    with pytest.raises(ValueError, match="fold_batchnorms"):
        qat.prepare_qat(Sequential(Linear(3, 3), BatchNorm1d(3)))
    with pytest.raises(TypeError, match="model must be an nnopt_lab Sequential"):
        qat.prepare_qat(Linear(3, 3))
    for bad in (0, 1, 17):
        with pytest.raises(ValueError, match="bits"):
            qat.prepare_qat(mlp((3, 4, 2)), bits=bad)
    for bad in (0, 17):
        with pytest.raises(ValueError, match="activation_bits"):
            qat.prepare_qat(mlp((3, 4, 2)), activation_bits=bad)
    with pytest.raises(ValueError, match="observer must be one of"):
        qat.prepare_qat(mlp((3, 4, 2)), observer="nope")

    class Odd(ReLU):
        pass

    qat.prepare_qat(Sequential(Linear(3, 3), Odd()))              # a ReLU subclass is a ReLU
    from nnopt_lab.nn.layers import Module

    class Unknown(Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"model\[1\] is a Unknown"):
        qat.prepare_qat(Sequential(Linear(3, 3), Unknown()))
    with pytest.raises(ValueError, match="make it with prepare_qat"):
        qat.strip_qat(mlp((3, 4, 2)))
    with pytest.raises(ValueError, match="at least one sample"):
        qat.calibrate(qat.prepare_qat(mlp((3, 4, 2))), np.zeros((0, 3), dtype=np.float32))


def test_strip_qat_gives_the_quantized_weights_and_the_same_function_without_activation_quantization(backend_name):
    be = B.get_backend(backend_name, "float64")
    model = mlp((6, 5, 3), backend=be)
    prepared = qat.prepare_qat(model, bits=4, activation_bits=16)
    x = B.to_backend(np.random.default_rng(11).standard_normal((20, 6)), be)
    qat.calibrate(prepared, x)
    stripped = qat.strip_qat(prepared)
    assert [type(m).__name__ for m in stripped] == ["Linear", "ReLU", "Linear"] and not stripped.training
    for plain, layer in zip((stripped[0], stripped[2]), (prepared[1], prepared[4])):
        w = B.to_numpy(plain._params["weight"].data)
        np.testing.assert_array_equal(w, B.to_numpy(layer.quantized_weight()))
        scale = np.abs(w).max(axis=1, keepdims=True) / 7
        codes = w / scale
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-5)        # on the 4-bit grid, [-7, 7]
        assert np.abs(np.round(codes)).max() == 7
        # re-quantizing the stripped weights changes nothing: what integer.convert will store
        again = Q.quantize_weight(plain._params["weight"].data, 4, "symmetric", per_channel=True).dequantize()
        np.testing.assert_allclose(B.to_numpy(again), w, rtol=1e-6, atol=0)
    # 16-bit activations: the QAT model is the stripped model within the activations' rounding
    np.testing.assert_allclose(B.to_numpy(prepared(x)), B.to_numpy(stripped(x)), atol=1e-3)


def test_fit_trains_a_qat_model_and_leaves_the_float_model_alone(backend_name):
    be = B.get_backend(backend_name, "float32")
    d = load_digits(backend=be)
    model = mlp((64, 16, 10), backend=be)
    before = B.to_numpy(model[0]._params["weight"].data).copy()
    prepared = qat.prepare_qat(model, bits=4, activation_bits=4, learnable=True)
    names = [n for n, _ in prepared.named_parameters()]
    assert names.count("0.scale") == 1 and "1.weight_scale" in names
    scale0 = B.to_numpy(prepared[1]._params["weight_scale"].data).copy()
    history = fit(prepared, d.split("train"), epochs=3, batch_size=64, lr=0.2, progress=False)
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert evaluate(prepared.eval(), d.split("test"))[1] > 0.6
    assert not np.array_equal(B.to_numpy(prepared[1]._params["weight_scale"].data), scale0)   # LSQ steps learned
    np.testing.assert_array_equal(B.to_numpy(model[0]._params["weight"].data), before)


def test_codebook_qat_with_shared_layers_and_fake_quantized_activations():
    d = load_digits()
    model = mlp((64, 16, 10))
    fit(model, d.split("train"), epochs=5, batch_size=64, lr=0.1, progress=False)
    shared = Sequential(SharedLayer(model[0], 8), ReLU(), SharedLayer(model[2], 8))
    prepared = qat.prepare_qat(shared, activation_bits=4)
    assert [type(m).__name__ for m in prepared] == ["FakeQuantize", "SharedLayer", "ReLU", "FakeQuantize",
                                                    "SharedLayer", "FakeQuantize"]
    codebook, indices = B.copy(prepared[1].codebook.data), B.copy(prepared[1].indices)
    fit(prepared, d.split("train"), epochs=2, batch_size=64, lr=0.01, progress=False)
    assert not np.array_equal(prepared[1].codebook.data, codebook)          # centroids trained ...
    np.testing.assert_array_equal(prepared[1].indices, indices)              # ... indices fixed
    np.testing.assert_array_equal(shared[0].codebook.data, codebook)         # the input model untouched
    assert np.unique(prepared[1].weight()).size <= 8


def test_qat_at_4_bits_beats_ptq_at_4_bits_on_digits():
    """The chapter's claim, small: mlp 64-32-10, PTQ = prepare + calibrate, QAT = prepare + 10 epochs (seeds 0-2)."""
    d = load_digits(backend="numpy")
    train, test = d.split("train"), d.split("test")
    rows = []
    for seed in range(3):
        B.seed(seed)
        model = mlp((64, 32, 10))
        fit(model, train, epochs=30, batch_size=32, lr=0.1, progress=False)
        float_acc = evaluate(model, test)[1]
        ptq = evaluate(qat.calibrate(qat.prepare_qat(model, 4, 4), train[0]), test)[1]
        prepared = qat.prepare_qat(model, 4, 4)
        fit(prepared, train, epochs=10, batch_size=32, optimizer=SGD(prepared, lr=0.05, momentum=0.9),
            progress=False)
        rows.append((float_acc, ptq, evaluate(prepared.eval(), test)[1]))
    rows = np.array(rows)
    print("float / 4-bit PTQ / 4-bit QAT test accuracy per seed:\n", rows.round(4))
    assert (rows[:, 1] < rows[:, 0]).all()                        # 4-bit PTQ loses accuracy ...
    assert (rows[:, 2] >= rows[:, 1]).all()                       # ... QAT never does worse ...
    assert (rows[:, 2] - rows[:, 1]).mean() >= 0.005              # ... and recovers some of it on average


def test_prepared_mlp_trains_as_the_same_torch_fake_quantized_mlp(backend_name):
    """prepare_qat(mlp) over 4 SGD steps = torch: FakeQuantize (moving average) on the input and after ReLU /
    the last Linear, weights fake-quantized per channel from their current range, autograd, torch.optim.SGD."""
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, PerChannelMinMaxObserver
    from nnopt_lab.nn.layers import CrossEntropyLoss
    from nnopt_lab.training.loop import train_step
    be = B.get_backend(backend_name, "float64")
    model = mlp((6, 8, 4), backend=be)
    prepared = qat.prepare_qat(model, bits=4, activation_bits=8)
    opt = SGD(prepared, lr=0.1)
    params = [torch.tensor(B.to_numpy(p.data), requires_grad=True) for p in model.parameters()]
    topt = torch.optim.SGD(params, lr=0.1)
    fqs = [FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine) for _ in range(3)]

    def weight(w):
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       quant_min=-7, quant_max=7)
        obs(w.detach().float())
        s, z = obs.calculate_qparams()
        return torch.fake_quantize_per_channel_affine(w, s, z.to(torch.int32), 0, -7, 7)

    g = np.random.default_rng(12)
    for step in range(4):
        x, y = g.standard_normal((16, 6)) * (1 + step), g.integers(0, 4, 16)
        loss, logits = train_step(prepared, CrossEntropyLoss(), opt, B.to_backend(x, be),
                                  B.to_backend(y, be, dtype="int64"))
        h = fqs[0](torch.tensor(x))
        h = fqs[1](torch.relu(TF.linear(h, weight(params[0]), params[1])))
        want = fqs[2](TF.linear(h, weight(params[2]), params[3]))
        tloss = TF.cross_entropy(want, torch.tensor(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        # torch's per-tensor kernel rounds float64 outputs to float32: agreement to float32 precision
        np.testing.assert_allclose(B.to_numpy(logits), want.detach().numpy(), rtol=1e-6, atol=1e-6)
        assert B.float_of(loss) == pytest.approx(tloss.item(), rel=1e-6)
        for p, t in zip(prepared.parameters(), params):
            np.testing.assert_allclose(B.to_numpy(p.data), t.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert prepared[0].scale == pytest.approx(fqs[0].scale.item(), rel=1e-7)
