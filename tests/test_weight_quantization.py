"""Weight quantization (chapter 3.1) against torch's observers and fake-quant functions, bit for bit.

References: torch.ao.quantization.MinMaxObserver / PerChannelMinMaxObserver (scale, zero point from
the weight's range), torch.fake_quantize_per_tensor_affine / _per_channel_affine (values, codes),
XNOR-Net's alpha as a torch expression and as torch.linalg.lstsq's least-squares scale, torch.nn
models for whole-model fake quantization, and hand-computed bit counts for the size accounting.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from nnopt_lab import backend as B
from nnopt_lab import measure, nn
from nnopt_lab.compression import quantization as Q
from nnopt_lab.compression.weight_sharing import SharedLayer

UNIFORM = [("affine", False), ("affine", True), ("symmetric", False), ("symmetric", True)]


# ----------------------------------------------------------------------------- references
def observer(bits, scheme, per_channel, axis=0):
    symmetric = scheme == "symmetric"
    qmin, qmax = Q.integer_range(bits, symmetric)
    dtype = torch.qint32 if bits > 8 else torch.qint8 if symmetric else torch.quint8
    if per_channel:
        qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        return PerChannelMinMaxObserver(ch_axis=axis, dtype=dtype, quant_min=qmin, quant_max=qmax, qscheme=qscheme)
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    return MinMaxObserver(dtype=dtype, quant_min=qmin, quant_max=qmax, qscheme=qscheme)


def torch_weight(w, bits, scheme, per_channel, axis=0):
    """torch's (scale, zero point, fake-quantized w, codes) for the numpy weight ``w``."""
    qmin, qmax = Q.integer_range(bits, scheme == "symmetric")
    t = torch.from_numpy(w)
    obs = observer(bits, scheme, per_channel, axis)
    obs(t)
    scale, zp = obs.calculate_qparams()
    if per_channel:
        zp = zp.to(torch.int32)                # per_channel_symmetric gives int64 zeros; the kernel takes int32
        ref = torch.fake_quantize_per_channel_affine(t, scale, zp, axis % w.ndim, qmin, qmax).numpy()
        shape = [-1 if d == axis % w.ndim else 1 for d in range(w.ndim)]
        s, z = scale.numpy().astype(np.float64).reshape(shape), zp.numpy().reshape(shape)
    else:
        scale, zp = float(scale), int(zp)
        ref = torch.fake_quantize_per_tensor_affine(t, scale, zp, qmin, qmax).numpy()
        s, z = np.float64(scale), zp
    codes = np.round(ref.astype(np.float64) / s) + z                # (q - z)·Δ within rounding of an integer
    return scale, zp, ref, codes


def with_ties(g, shape, bits, scheme, per_channel, axis, dtype):
    """A random weight whose entries include exact ties (k + 1/2)·Δ of its own scale, and their neighbours."""
    w = g.standard_normal(shape).astype(dtype)
    scale, zp, _, _ = torch_weight(w, bits, scheme, per_channel, axis)
    moved = np.moveaxis(w, axis, 0) if per_channel else w.reshape(1, -1)
    scales = scale.numpy().astype(np.float64) if per_channel else [np.float64(scale)]
    for c, s in enumerate(scales):
        row = moved[c].reshape(-1)
        lo, hi = row.min(), row.max()
        k = np.arange(math.floor(lo / s), math.ceil(hi / s))
        ties = ((k + 0.5) * s).astype(dtype)
        ties = ties[(ties > lo) & (ties < hi)]                 # inside the range: the qparams do not change
        near = np.nextafter(ties, np.full_like(ties, np.inf))
        new = np.concatenate([ties, near])[: max(row.size - 2, 0)]
        inner = [i for i in range(row.size) if row[i] not in (lo, hi)][: new.size]
        row[inner] = new[: len(inner)]
        moved[c] = row.reshape(moved[c].shape)
    return w


# ----------------------------------------------------------------------------- bit for bit with torch
@pytest.mark.parametrize("scheme,per_channel", UNIFORM)
@pytest.mark.parametrize("shape,axis", [((12, 10), 0), ((6, 3, 3, 3), 0), ((5, 7), 1), ((4, 6, 2), -1)])
def test_quantize_weight_equals_observer_and_fake_quant_bit_for_bit(be32, scheme, per_channel, shape, axis):
    g = B.generator(100)
    for bits in (2, 3, 4, 8, 12):
        w = with_ties(g, shape, bits, scheme, per_channel, axis, np.float32)
        scale, zp, ref, ref_codes = torch_weight(w, bits, scheme, per_channel, axis)
        record = Q.quantize_weight(be32.asarray(w), bits, scheme, per_channel, axis)
        if per_channel:
            np.testing.assert_array_equal(B.to_numpy(record.scale), scale.numpy())
            np.testing.assert_array_equal(B.to_numpy(record.zero_point), zp.numpy())
        else:
            assert (record.scale, record.zero_point) == (scale, zp)
        np.testing.assert_array_equal(B.to_numpy(record.codes).astype(np.float64), ref_codes)
        deq = record.dequantize()
        assert B.dtype_name(deq) == "float32" and B.same_kind(deq, be32.asarray(w))
        np.testing.assert_array_equal(B.to_numpy(deq), ref)


@pytest.mark.parametrize("scheme,per_channel", UNIFORM)
def test_float64_weights_get_torchs_codes_and_exact_values(be64, scheme, per_channel):
    # torch's per-tensor float64 kernel rounds (q - z)·Δ to float32; ours keeps the exact product
    g = B.generator(101)
    for bits in (2, 4, 8, 16):
        w = with_ties(g, (8, 9), bits, scheme, per_channel, 0, np.float64)
        scale, zp, ref, ref_codes = torch_weight(w, bits, scheme, per_channel)
        record = Q.quantize_weight(be64.asarray(w), bits, scheme, per_channel)
        codes = B.to_numpy(record.codes).astype(np.float64)
        np.testing.assert_array_equal(codes, ref_codes)
        deq = B.to_numpy(record.dequantize())
        assert deq.dtype == np.float64
        s = scale.numpy().astype(np.float64)[:, None] if per_channel else scale
        z = zp.numpy()[:, None] if per_channel else zp
        np.testing.assert_array_equal(deq, (codes - z) * s)
        np.testing.assert_array_equal(deq.astype(np.float32), ref.astype(np.float32))


def test_ties_go_where_torch_sends_them(be32):
    # [-1, 1] at 4 bits symmetric: Δ = float32(1/7); 0.5/Δ is the tie 3.5 in exact arithmetic (code 4)
    # but 3.4999998 in torch's float32 (code 3). Affine 8 bits: z of [-1, 1] is torch's 127, not 128.
    w = np.array([[-1.0, 1.0, 0.5, -0.5], [1.5 / 7, 2.5 / 7, 0.0, -3.5 / 7]], dtype=np.float32)
    record = Q.quantize_weight(be32.asarray(w), 4, "symmetric")
    assert record.scale == float(np.float32(1 / 7)) and record.zero_point == 0
    assert B.to_numpy(record.codes)[0].tolist() == [-7, 7, 3, -3]
    np.testing.assert_array_equal(B.to_numpy(record.dequantize()), torch_weight(w, 4, "symmetric", False)[2])
    affine = Q.quantize_weight(be32.asarray(w), 8)
    assert affine.zero_point == 127 == torch_weight(w, 8, "affine", False)[1]
    np.testing.assert_array_equal(B.to_numpy(affine.dequantize()), torch_weight(w, 8, "affine", False)[2])


@pytest.mark.parametrize("bits,scheme,dtype", [(8, "affine", "uint8"), (8, "symmetric", "int8"), (1, "affine", "uint8"),
                                               (4, "symmetric", "int8"), (9, "affine", "int32"),
                                               (16, "symmetric", "int32"), (1, "binary", "int8")])
def test_record_holds_codes_at_the_narrowest_dtype(be32, bits, scheme, dtype):
    w = be32.asarray(B.generator(102).standard_normal((5, 4)))
    record = Q.quantize_weight(w, bits, scheme)
    assert B.dtype_name(record.codes) == dtype
    assert record.bits == bits and record.scheme == scheme and record.shape == (5, 4) and record.axis is None
    assert isinstance(record.scale, float) and record.scale == float(np.float32(record.scale))
    assert isinstance(record.zero_point, int)
    per_channel = Q.quantize_weight(w, bits, scheme, per_channel=True)
    assert B.dtype_name(per_channel.scale) == "float32" and B.dtype_name(per_channel.zero_point) == "int32"
    assert tuple(per_channel.scale.shape) == (5,) and per_channel.axis == 0
    if scheme != "affine":
        assert record.zero_point == 0 and not B.to_numpy(per_channel.zero_point).any()


def test_numpy_and_torch_scalars_are_accepted(be32):
    w = be32.asarray(B.generator(103).standard_normal((3, 4)))
    ref = B.to_numpy(Q.quantize_weight(w, 4, per_channel=True, axis=1).dequantize())
    for bits, axis in [(np.int64(4), np.int32(1)), (torch.tensor(4), -1)]:
        out = Q.quantize_weight(w, bits, per_channel=np.bool_(True), axis=axis).dequantize()
        np.testing.assert_array_equal(B.to_numpy(out), ref)


# ----------------------------------------------------------------------------- binary
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(7, 5), (4, 3, 3, 3), (6,)])
def test_binarize_is_xnor_nets_sign_times_mean_abs(be32, be64, per_channel, shape):
    w = B.generator(104).standard_normal(shape)
    dims = tuple(range(1, w.ndim)) if per_channel and w.ndim > 1 else None
    for be, dtype in ((be32, torch.float32), (be64, torch.float64)):
        t = torch.from_numpy(w).to(dtype)                       # the same weights on both sides
        mean_abs = t.abs() if per_channel and w.ndim == 1 else t.double().abs().mean(dim=dims, keepdim=per_channel)
        alpha = mean_abs.float()                                # the float64 mean, stored as float32
        record = Q.binarize_weight(be.asarray(w), per_channel)
        assert record.scheme == "binary" and record.bits == 1 and B.dtype_name(record.codes) == "int8"
        np.testing.assert_array_equal(B.to_numpy(record.codes), torch.sign(t).numpy())   # no zeros in w
        ref = torch.sign(t) * alpha.to(dtype)                                             # XNOR-Net's W ≈ αB
        np.testing.assert_array_equal(B.to_numpy(record.dequantize()), ref.numpy())
    # and against torch's own float32 mean (a different summation order): equal to float32 rounding
    t32 = t.float()
    mean32 = t32.abs() if dims is None and per_channel else t32.abs().mean(dim=dims, keepdim=per_channel)
    ref32 = torch.sign(t32) * mean32
    np.testing.assert_allclose(B.to_numpy(Q.binarize_weight(be32.asarray(w), per_channel).dequantize()),
                               ref32.numpy(), rtol=1e-6, atol=0)


def test_sign_of_zero_is_plus_one(be64):
    # BinaryConnect's deterministic binarization: +1 for w >= 0 (torch.sign(0) would be 0, a third level)
    w = np.array([[0.0, -0.0, 2.0, -4.0], [0.0, 0.0, 0.0, 0.0]])
    record = Q.binarize_weight(be64.asarray(w), per_channel=True)
    assert B.to_numpy(record.codes).tolist() == [[1, 1, 1, -1], [1, 1, 1, 1]]
    np.testing.assert_array_equal(B.to_numpy(record.scale), [1.5, 0.0])   # mean |w|, zeros counted
    np.testing.assert_array_equal(B.to_numpy(record.dequantize()), [[1.5, 1.5, 1.5, -1.5], [0.0] * 4])
    ref = torch.where(torch.from_numpy(w) >= 0, 1.0, -1.0).double() * torch.tensor([[1.5], [0.0]], dtype=torch.float64)
    np.testing.assert_array_equal(B.to_numpy(record.dequantize()), ref.numpy())


@pytest.mark.parametrize("per_channel", [False, True])
def test_mean_abs_is_the_least_squares_scale_for_the_sign(be64, per_channel):
    # for fixed signs s, argmin_α ||w - α s||² is lstsq(s, w) = <w, s>/n = mean|w| (XNOR-Net eq. 4)
    g = B.generator(105)
    w = g.standard_normal((6, 50)) * g.uniform(0.1, 3.0, (6, 1))
    record = Q.binarize_weight(be64.asarray(w), per_channel)
    s = torch.from_numpy(B.to_numpy(record.codes).astype(np.float64))
    t = torch.from_numpy(w)
    rows = [(s[c], t[c]) for c in range(6)] if per_channel else [(s.reshape(-1), t.reshape(-1))]
    alphas = np.atleast_1d(B.to_numpy(record.scale) if per_channel else record.scale)
    for (sc, wc), alpha in zip(rows, alphas):
        best = torch.linalg.lstsq(sc[:, None], wc[:, None]).solution.item()
        assert abs(alpha - best) <= 2 ** -24 * best                  # α is the optimum rounded to float32
        error = lambda a: float(((wc - a * sc) ** 2).sum())          # noqa: E731
        assert error(best) < error(best * (1 + 1e-3)) and error(best) < error(best * (1 - 1e-3))
        assert error(best) <= error(alpha) <= error(best) * (1 + 1e-12)


# ----------------------------------------------------------------------------- round trip (property test)
ROUND_TRIP = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@ROUND_TRIP
@given(seed=st.integers(0, 2 ** 32 - 1), rows=st.integers(1, 6), cols=st.integers(1, 40), bits=st.integers(2, 16),
       scheme=st.sampled_from(["affine", "symmetric"]), per_channel=st.booleans(),
       dtype=st.sampled_from(["float32", "float64"]), magnitude=st.integers(-30, 30), shift=st.floats(-2.0, 2.0),
       zeros=st.booleans())
def test_round_trip_error_is_at_most_half_a_scale(backend_name, seed, rows, cols, bits, scheme, per_channel,
                                                   dtype, magnitude, shift, zeros):
    # |w - ŵ| <= Δ/2, plus what float arithmetic adds: torch's float32 reciprocal 1/Δ and the product
    # w·(1/Δ) (each 2^-24 relative, so at most |w|·2^-23 in all) and Δ's own float32 rounding
    g = B.generator(seed)
    w = (g.standard_normal((rows, cols)) + shift) * 10.0 ** magnitude
    if zeros:
        w[g.integers(rows), g.integers(cols)] = 0.0
    be = B.get_backend(backend_name, dtype)
    x = be.asarray(w)
    record = Q.quantize_weight(x, bits, scheme, per_channel)
    w_np = B.to_numpy(x).astype(np.float64)
    error = np.abs(w_np - B.to_numpy(record.dequantize()).astype(np.float64))
    scale = B.to_numpy(record.scale).astype(np.float64)[:, None] if per_channel else record.scale
    amax = np.abs(w_np).max(axis=1, keepdims=True) if per_channel else np.abs(w_np).max()
    assert (error <= scale / 2 + 2.0 ** -21 * amax).all(), (error.max(), scale)
    assert (B.to_numpy(record.dequantize())[w_np == 0] == 0).all()            # 0 is exact


def test_round_trip_bound_is_tight_without_float_error(be64):
    # integer multiples of a power-of-two scale, ties included: every error is exactly <= Δ/2
    w = np.concatenate([np.arange(-127, 128), np.arange(-127, 127) + 0.5, [0.3, -0.7]]) / 64.0
    record = Q.quantize_weight(be64.asarray(w[None, :]), 8, "symmetric")
    assert record.scale == 127 / 64 / 127 == 1 / 64
    error = np.abs(B.to_numpy(record.dequantize())[0] - w)
    assert error.max() == 1 / 128 and (error[:255] == 0).all()


# ----------------------------------------------------------------------------- whole models
def mlp(backend):
    return nn.Sequential(nn.Linear(20, 16, backend=backend), nn.ReLU(), nn.Linear(16, 10, backend=backend),
                         nn.ReLU(), nn.Linear(10, 3, backend=backend))


def cnn(backend):
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, backend=backend), nn.BatchNorm2d(4, backend=backend),
                         nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2, backend=backend), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5, backend=backend))


def torch_twin(model, make):
    """The torch.nn model with the same architecture and ``model``'s state_dict."""
    twin = make()
    twin.load_state_dict({k: torch.from_numpy(B.to_numpy(v).copy()) for k, v in model.state_dict().items()})
    return twin.double() if B.dtype_name(model.parameters()[0].data) == "float64" else twin


def torch_mlp():
    return torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10), torch.nn.ReLU(),
                               torch.nn.Linear(10, 3))


def torch_cnn():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 6, 3, groups=2), torch.nn.Flatten(), torch.nn.Linear(96, 5))


def snapshot(model):
    return {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scheme,per_channel", UNIFORM + [("binary", False), ("binary", True)])
@pytest.mark.parametrize("make,make_torch,shape", [(mlp, torch_mlp, (4, 20)), (cnn, torch_cnn, (2, 2, 6, 6))])
def test_fake_quantized_model_computes_like_torch_with_fake_quantized_weights(be32, scheme, per_channel, make,
                                                                             make_torch, shape):
    bits = 1 if scheme == "binary" else 4
    model = make(be32).eval()
    twin = torch_twin(model, make_torch).eval()
    with torch.no_grad():                       # torch's side: observers + fake quant on each weight
        for m in twin.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                w = m.weight.detach().numpy().copy()
                if scheme == "binary":
                    dims = tuple(range(1, w.ndim)) if per_channel else None
                    alpha = m.weight.double().abs().mean(dim=dims, keepdim=per_channel).float()
                    m.weight.copy_(torch.where(m.weight >= 0, 1.0, -1.0) * alpha)
                else:
                    m.weight.copy_(torch.from_numpy(torch_weight(w, bits, scheme, per_channel)[2]))
    before = snapshot(model)
    saved = Q.fake_quantize_model(model, bits, scheme, per_channel)
    assert list(saved.records) == [f"{i}.weight" for i, m in enumerate(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
    after = snapshot(model)
    for key in before:                          # weights changed, biases and BatchNorm kept
        assert (key in saved.records) == (not np.array_equal(after[key], before[key])), key
    x = g_input(shape)
    ours = B.to_numpy(model(be32.asarray(x)))
    with torch.no_grad():
        ref = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    for key, p in model.named_parameters():
        if key in saved.records:
            np.testing.assert_array_equal(B.to_numpy(p.data), twin.state_dict()[key].numpy())


def g_input(shape):
    return B.generator(106).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("make", [mlp, cnn])
def test_restore_gives_back_the_state_dict_bit_for_bit(be64, make):
    model = make(be64)
    before = snapshot(model)
    arrays = {k: p.data for k, p in model.named_parameters()}
    saved = Q.fake_quantize_model(model, 3, "affine", per_channel=True)
    assert any(not np.array_equal(snapshot(model)[k], before[k]) for k in saved.records)
    assert Q.restore_model(model, saved) is model
    after = snapshot(model)
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
        assert after[key].dtype == before[key].dtype
    assert all(p.data is arrays[k] for k, p in model.named_parameters())    # the very arrays
    with Q.fake_quantize_model(model, 2, "symmetric") as fq:                  # a with block restores
        assert isinstance(fq, Q.FakeQuantizedModel) and fq.model is model
        assert not np.array_equal(B.to_numpy(model.parameters()[0].data), before["0.weight"])
    for key, value in snapshot(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_layers_chooses_which_weights_and_errors_leave_the_model_unchanged(be32):
    model = mlp(be32)
    before = snapshot(model)
    saved = Q.fake_quantize_model(model, 8, layers=["2"])
    assert list(saved.records) == ["2.weight"]
    now = snapshot(model)
    assert np.array_equal(now["0.weight"], before["0.weight"])
    assert not np.array_equal(now["2.weight"], before["2.weight"])
    saved.restore()
    with pytest.raises(ValueError, match=r"layers must name Linear or Conv2d layers of the model, one of "
                                         r"\['0', '2', '4'\], got '1'"):
        Q.fake_quantize_model(model, 8, layers=["1"])
    with pytest.raises(ValueError, match=r"layers must name at least one layer"):
        Q.fake_quantize_model(model, 8, layers=[])
    with pytest.raises(TypeError, match=r"layers must be a sequence"):
        Q.fake_quantize_model(model, 8, layers=2)
    model[4]._params["weight"].data[0, 0] = math.inf          # the last layer fails: nothing changes
    with pytest.raises(ValueError, match=r"4.weight: w must hold finite float32 numbers"):
        Q.fake_quantize_model(model, 8)
    after = snapshot(model)
    for key in ("0.weight", "2.weight"):
        np.testing.assert_array_equal(after[key], before[key])


def test_model_errors_name_the_argument(be32):
    model = mlp(be32)
    with pytest.raises(TypeError, match=r"model must be an nnopt_lab.nn Module, got Linear"):
        Q.fake_quantize_model(torch.nn.Linear(2, 2), 8)
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        Q.fake_quantize_model(model, 0)
    with pytest.raises(ValueError, match=r"scheme must be one of \('affine', 'symmetric', 'binary'\), got 'int8'"):
        Q.fake_quantize_model(model, 8, scheme="int8")
    with pytest.raises(ValueError, match=r"model has no Linear or Conv2d layer"):
        Q.fake_quantize_model(nn.Sequential(nn.ReLU()), 8)
    model.parameters()[0].mask = B.to_backend(np.ones((16, 20)), be32)
    with pytest.raises(ValueError, match=r"0.weight carries a pruning mask: binary codes have no 0"):
        Q.fake_quantize_model(model, 1, "binary")
    saved = Q.fake_quantize_model(model, 8)                    # uniform codes keep pruned zeros at 0
    with pytest.raises(ValueError, match=r"saved was made by fake_quantize_model for another model"):
        Q.restore_model(mlp(be32), saved)
    with pytest.raises(TypeError, match=r"saved must be what fake_quantize_model returned"):
        Q.restore_model(model, {})


def test_pruned_zeros_stay_zero_under_uniform_fake_quantization(be32):
    model = mlp(be32)
    mask = (B.generator(107).random((16, 20)) > 0.5).astype(np.float32)
    p = model.parameters()[0]
    p.mask = B.to_backend(mask, be32)
    p.apply_mask()
    with Q.fake_quantize_model(model, 3, "affine", per_channel=True):
        assert (B.to_numpy(p.data)[mask == 0] == 0).all()


# ----------------------------------------------------------------------------- size accounting
W784 = 784 * 300


@pytest.mark.parametrize("bits,scheme,per_channel,expected", [
    (8, "affine", False, W784 * 8 + 32 + 32 + 300 * 32),
    (8, "affine", True, W784 * 8 + 300 * (32 + 32) + 300 * 32),
    (8, "symmetric", False, W784 * 8 + 32 + 300 * 32),               # no zero point stored: it is 0
    (8, "symmetric", True, W784 * 8 + 300 * 32 + 300 * 32),
    (4, "affine", False, W784 * 4 + 32 + 32 + 300 * 32),
    (1, "binary", False, W784 + 32 + 300 * 32),
    (1, "binary", True, W784 + 300 * 32 + 300 * 32),
])
def test_size_of_linear_784_300_by_hand(bits, scheme, per_channel, expected):
    model = nn.Sequential(nn.Linear(784, 300))
    saved = Q.fake_quantize_model(model, bits, scheme, per_channel)
    report = Q.quantized_size(saved)
    (row,) = report.layers
    assert (row.name, row.kind, row.params, row.bits) == ("0", scheme, W784 + 300, bits)
    assert row.code_bits == W784 * bits and row.float_bits == 300 * 32 and row.codebook_bits == 0
    assert row.scale_bits == 32 * (300 if per_channel else 1)
    assert row.zero_point_bits == (32 * (300 if per_channel else 1) if scheme == "affine" else 0)
    assert report.total_bits == row.total_bits == expected
    assert report.fp32_bits == (W784 + 300) * 32 and report.ratio == expected / ((W784 + 300) * 32)
    assert report.total_bytes == math.ceil(expected / 8)
    assert Q.quantized_size(model, saved.records).total_bits == expected         # model + records
    record = saved.records["0.weight"]
    assert Q.quantized_size(record).total_bits == record.total_bits == expected - 300 * 32


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_mlp_is_at_most_026_of_fp32_with_scales_counted(per_channel):
    # the done-when figure: int8 <= 0.26 of fp32 (the physical limit 0.25 plus scales,
    # zero points and the float32 biases), here LeNet-300-100
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    with Q.fake_quantize_model(model, 8, per_channel=per_channel) as saved:
        report = Q.quantized_size(saved)
    weights, biases = 784 * 300 + 300 * 100 + 100 * 10, 410
    channels = 410 if per_channel else 3
    assert report.total_bits == weights * 8 + channels * 64 + biases * 32
    assert report.fp32_bits == (weights + biases) * 32 == measure.model_bytes(model) * 8
    assert 0.25 < report.ratio <= 0.26
    assert str(report).splitlines()[-1].split()[0] == "total"


def test_float_model_and_batchnorm_count_at_float32():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))
    report = Q.quantized_size(model)
    assert [(r.name, r.kind) for r in report.layers] == [("0", "float"), ("1", "float"), ("3", "float")]
    assert report.total_bits == report.fp32_bits == measure.model_bytes(model) * 8 and report.ratio == 1.0
    saved = Q.fake_quantize_model(model, 4, "symmetric", per_channel=True, layers=["0"])
    rows = Q.quantized_size(saved).layers
    assert rows[0].total_bits == 4 * 18 * 4 + 4 * 32 + 4 * 32           # codes, 4 scales, 4 float32 biases
    assert rows[1].total_bits == 8 * 32 and rows[2].kind == "float"


def test_shared_layer_reports_indices_and_codebook():
    linear = nn.Linear(30, 20)
    shared = SharedLayer(linear, k=16)
    model = nn.Sequential(shared, nn.ReLU(), nn.Linear(20, 4))
    saved = Q.fake_quantize_model(model, 8, layers=["2"])              # the SharedLayer's inner Linear is skipped
    assert list(saved.records) == ["2.weight"]
    report = Q.quantized_size(saved)
    row = report.layers[0]
    assert (row.kind, row.bits, row.code_bits, row.codebook_bits, row.float_bits) == (
        "shared", 4, 600 * 4, 16 * 32, 20 * 32)
    assert row.total_bits == shared.parameter_bytes(32) * 8            # what the layer says it stores
    assert report.layers[1].total_bits == 80 * 8 + 32 + 32 + 4 * 32


def test_size_errors_name_the_argument():
    model = nn.Sequential(nn.Linear(4, 3))
    other = Q.quantize_weight(B.generator(108).standard_normal((2, 2)), 8)
    with pytest.raises(ValueError, match=r"records\['0.weight'\] has shape \(2, 2\) but the model's 0.weight"):
        Q.quantized_size(model, {"0.weight": other})
    with pytest.raises(ValueError, match=r"records name weights the model does not have: \['5.weight'\]"):
        Q.quantized_size(model, {"5.weight": other})
    with pytest.raises(TypeError, match=r"records\['0.weight'\] must be a QuantizedWeight, got ndarray"):
        Q.quantized_size(model, {"0.weight": np.zeros((3, 4))})
    with pytest.raises(TypeError, match=r"records must be a QuantizedWeight, a mapping of them"):
        Q.quantized_size(model, [other])
    with pytest.raises(TypeError, match=r"source must be a Module, a FakeQuantizedModel, a QuantizedWeight or a "
                                        r"mapping of str -> QuantizedWeight, got int"):
        Q.quantized_size(3)                          # the caller's argument is source, not records
    with pytest.raises(TypeError, match=r"source\['w'\] must be a QuantizedWeight, got str"):
        Q.quantized_size({"w": "abc"})
    with pytest.raises(ValueError, match=r"source must hold at least one QuantizedWeight"):
        Q.quantized_size({})
    with pytest.raises(ValueError, match=r"records must be None unless source is a model"):
        Q.quantized_size(other, {"w": other})


def test_fake_quantized_model_checks_its_arguments():
    model = nn.Sequential(nn.Linear(4, 3))
    record = Q.quantize_weight(model[0]._params["weight"].data, 8)
    param = model[0]._params["weight"]
    for bad in (None, "abc", 0, 2.5, object()):       # used to fail later with AttributeError: no .items
        with pytest.raises(TypeError, match=r"parameters must be a mapping of str -> Parameter, got "):
            Q.FakeQuantizedModel(model, {"0.weight": record}, bad)
        with pytest.raises(TypeError, match=r"records must be a mapping of str -> QuantizedWeight, got "):
            Q.FakeQuantizedModel(model, bad, {"0.weight": param})
    with pytest.raises(TypeError, match=r"model must be an nnopt_lab.nn Module, got str"):
        Q.FakeQuantizedModel("abc", {}, {})
    with pytest.raises(TypeError, match=r"parameters\['0.weight'\] must be a Parameter, got ndarray"):
        Q.FakeQuantizedModel(model, {"0.weight": record}, {"0.weight": param.data})
    with pytest.raises(ValueError, match=r"parameters must have the keys of records \['0.weight'\], got \[\]"):
        Q.FakeQuantizedModel(model, {"0.weight": record}, {})
    saved = Q.FakeQuantizedModel(model, {"0.weight": record}, {"0.weight": param})
    original = param.data
    param.data = record.dequantize()
    assert saved.restore() is model and model[0]._params["weight"].data is original


# ----------------------------------------------------------------------------- bad input
W = np.linspace(-1.0, 1.0, 12).reshape(3, 4)


@pytest.mark.parametrize("bits,error", [(0, ValueError), (17, ValueError), (-1, ValueError), (2.5, ValueError),
                                        (True, TypeError), ("8", TypeError), (None, TypeError)])
def test_bits_outside_1_to_16_raise(bits, error):
    with pytest.raises(error, match=r"bits must be an int in \[1, 16\], got"):
        Q.quantize_weight(W, bits)
    with pytest.raises(error, match=r"bits must be an int in \[1, 16\], got"):
        Q.fake_quantize_model(nn.Linear(4, 3), bits)


def test_bad_weight_arguments_raise_naming_the_argument():
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 16\] for scheme='symmetric'.*got 1"):
        Q.quantize_weight(W, 1, "symmetric")
    with pytest.raises(ValueError, match=r"bits must be 1 for scheme='binary' \(codes ±1\), got 8"):
        Q.quantize_weight(W, 8, "binary")
    with pytest.raises(ValueError, match=r"scheme must be one of \('affine', 'symmetric', 'binary'\), got 'asym'"):
        Q.quantize_weight(W, 8, "asym")
    with pytest.raises(TypeError, match=r"scheme must be one of"):
        Q.quantize_weight(W, 8, np.array(["affine"]))
    with pytest.raises(ValueError, match=r"axis must be an int in \[-2, 1\], got 2"):
        Q.quantize_weight(W, 8, per_channel=True, axis=2)
    with pytest.raises(ValueError, match=r"axis must be an int in \[-2, 1\], got 2"):
        Q.binarize_weight(W, per_channel=True, axis=2)
    with pytest.raises(TypeError, match=r"axis must be an int, got '0'|axis must be an int in \[-2, 1\], got '0'"):
        Q.quantize_weight(W, 8, per_channel=True, axis="0")
    with pytest.raises(TypeError, match=r"per_channel must be a bool, got 1"):
        Q.quantize_weight(W, 8, per_channel=1)
    with pytest.raises(ValueError, match=r"w must have at least one axis for per_channel=True"):
        Q.quantize_weight(np.float64(1.0) * np.ones(()), 8, per_channel=True)
    with pytest.raises(ValueError, match=r"w must have at least one entry, got shape \(0, 3\)"):
        Q.quantize_weight(np.zeros((0, 3)), 8)
    with pytest.raises(TypeError, match=r"w must be a floating-point array, got dtype int64"):
        Q.quantize_weight(np.arange(6), 8)
    with pytest.raises(TypeError, match=r"w must be a numpy array or a torch tensor, got list"):
        Q.quantize_weight([0.0, 1.0], 8)
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        Q.quantize_weight(W, 8).dequantize("int8")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e39])
@pytest.mark.parametrize("scheme", ["affine", "symmetric", "binary"])
def test_non_finite_weights_raise(backend_name, bad, scheme):
    w = np.array(W)
    w[1, 2] = bad
    x = B.get_backend(backend_name, "float64").asarray(w)
    bits = 1 if scheme == "binary" else 8
    for per_channel in (False, True):
        with pytest.raises(ValueError, match=r"w must hold finite float32 numbers .* in 1 entries"):
            Q.quantize_weight(x, bits, scheme, per_channel)


def test_a_range_wider_than_float32_raises_naming_w():
    w = np.array([[-3e38, 3e38]], dtype=np.float32)
    with pytest.raises(ValueError, match=r"w's range is too wide for 8-bit affine codes: x_max - x_min must fit"):
        Q.quantize_weight(w, 8)
    with pytest.raises(ValueError, match=r"w's range is too wide"):
        Q.quantize_weight(w, 8, per_channel=True)
    assert np.isfinite(Q.quantize_weight(w, 8, "symmetric").dequantize()).all()   # max|w|/127 fits
