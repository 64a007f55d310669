"""Splitting layers: truncated SVD of Linear weights, spatially separable and depthwise-separable convs.

Eckart-Young errors against numpy's / scipy's SVD of the same matrices (built here, independently of
the code under test), outputs and gradients against torch.nn.functional.conv2d with `groups` and
autograd, on seeded random shapes and settings; savings against hand-computed formulas."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from nnopt_lab import backend as B
from nnopt_lab import nn
from nnopt_lab.compression import factorization as Fz
from nnopt_lab.reference import torch_twin

TRIALS = 8


def _np(x):
    return B.to_numpy(x)


def _w(layer):
    return _np(layer._params["weight"].data)


def _b(layer):
    return _np(layer._params["bias"].data) if "bias" in layer._params else None


def _frobenius_discarded(matrix, rank):
    """sqrt(sum of the discarded sigma^2) from scipy's SVD (the reference)."""
    s = scipy.linalg.svd(matrix, compute_uv=False)
    return math.sqrt(float(np.sum(s[rank:] ** 2)))


def _torch(x):
    return torch.as_tensor(_np(x))


# ----------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("trial", range(TRIALS))
def test_low_rank_linear_error_is_eckart_young(be64, trial):
    rng = np.random.default_rng(trial)
    d_in, d_out = int(rng.integers(2, 12)), int(rng.integers(2, 12))
    layer = nn.Linear(d_in, d_out, bias=bool(trial % 2), backend=be64)
    rank = int(rng.integers(1, min(d_in, d_out) + 1))
    split = Fz.low_rank_linear(layer, rank)
    assert (split[0].in_features, split[0].out_features, split[1].out_features) == (d_in, rank, d_out)
    assert "bias" not in split[0]._params and ("bias" in split[1]._params) == bool(trial % 2)
    w = _w(layer)
    approx = _w(split[1]) @ _w(split[0])
    expected = _frobenius_discarded(w, rank)
    assert abs(np.linalg.norm(w - approx) - expected) < 1e-10
    assert abs(Fz.truncation_error(np.linalg.svd(w, compute_uv=False), rank) - expected) < 1e-12
    # the outputs are those of torch's linear with the reconstructed weight
    x = B.randn(5, d_in, backend=be64)
    bias = None if _b(layer) is None else torch.as_tensor(_b(layer))
    ref = torch.nn.functional.linear(_torch(x), torch.as_tensor(approx), bias)
    np.testing.assert_allclose(_np(split(x)), ref.numpy(), rtol=0, atol=1e-12)


def test_low_rank_linear_at_full_rank_is_the_layer(be64):
    layer = nn.Linear(7, 4, backend=be64)
    x = B.randn(3, 7, backend=be64)
    np.testing.assert_allclose(_np(Fz.low_rank_linear(layer, 4)(x)), _np(layer(x)), atol=1e-13)


def test_low_rank_linear_float32(be32):
    layer = nn.Linear(20, 10, backend=be32)
    split = Fz.low_rank_linear(layer, 6)
    w = _w(layer).astype(np.float64)
    assert _w(split[0]).dtype == np.float32
    err = np.linalg.norm(w - _w(split[1]).astype(np.float64) @ _w(split[0]).astype(np.float64))
    assert err == pytest.approx(_frobenius_discarded(w, 6), rel=1e-4)


def _known_spectrum_layer(be, sigmas=(4.0, 2.0, 1.0, 0.5)):
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.standard_normal((6, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((5, 4)))
    layer = nn.Linear(5, 6, backend=be)
    layer._params["weight"].data = B.to_backend(u @ np.diag(sigmas) @ v.T, be)
    return layer


@pytest.mark.parametrize("energy, rank", [(0.75, 1), (0.7529, 1), (0.76, 2), (0.941, 2), (0.95, 3),
                                          (0.988, 3), (0.99, 4), (1.0, 4)])
def test_rank_chosen_by_energy(be64, energy, rank):
    # sigma^2 = 16, 4, 1, 0.25 of 21.25: cumulative 0.75294, 0.94118, 0.98824, 1
    layer = _known_spectrum_layer(be64)
    split = Fz.low_rank_linear(layer, energy=energy)
    assert split[0].out_features == rank
    assert Fz.rank_for_energy(np.array([4.0, 2.0, 1.0, 0.5]), energy) == rank


@pytest.mark.parametrize("values, words", [
    (np.array([1.0, 2.0]), "decreasing order"),
    (np.array([2.0, -1.0]), "finite and >= 0"),
    (np.array([2.0, np.nan]), "finite and >= 0"),
    (np.zeros(0), "at least one value"),
])
def test_singular_values_are_checked(values, words):
    for call in (lambda: Fz.rank_for_energy(values, 0.5), lambda: Fz.truncation_error(values, 1)):
        with pytest.raises(ValueError, match=words):
            call()
    with pytest.raises(TypeError, match="singular_values must be a numpy array or torch tensor"):
        Fz.rank_for_energy([3.0, 1.0], 0.5)


def test_truncation_error_of_huge_values_does_not_overflow():
    assert Fz.truncation_error(np.array([1e300, 1e300, 1e300]), 1) == pytest.approx(math.sqrt(2) * 1e300)
    assert Fz.truncation_error(np.array([[3.0, 1.0], [2.0, 2.0]]), 1) == pytest.approx(math.sqrt(5))
    with pytest.raises(ValueError, match="rank must be an int in \\[1, 2\\] \\(the number of singular_values\\)"):
        Fz.truncation_error(np.array([3.0, 1.0]), 3)


def test_energy_one_on_a_rank_deficient_matrix_gives_its_rank():
    assert Fz.rank_for_energy(np.array([3.0, 1.0, 0.0, 0.0]), 1.0) == 2


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(rank=0), ValueError, "rank must be an int in [1, 4], got 0"),
    (dict(rank=5), ValueError, "rank must be an int in [1, 4], got 5"),
    (dict(rank=2.5), ValueError, "rank"),
    (dict(rank="2"), TypeError, "rank"),
    (dict(energy=0.0), ValueError, "energy must be a finite number in (0, 1], got 0.0"),
    (dict(energy=1.5), ValueError, "energy"),
    (dict(energy=float("nan")), ValueError, "energy"),
    (dict(), TypeError, "exactly one of rank and energy"),
    (dict(rank=2, energy=0.5), TypeError, "exactly one of rank and energy"),
])
def test_low_rank_linear_refuses_bad_rank_and_energy(kwargs, error, words):
    layer = nn.Linear(4, 6)
    with pytest.raises(error) as info:
        Fz.low_rank_linear(layer, **kwargs)
    assert words in str(info.value)


def test_low_rank_linear_refuses_other_layers_and_nan():
    with pytest.raises(TypeError, match="layer must be an nnopt_lab Linear, got Conv2d"):
        Fz.low_rank_linear(nn.Conv2d(1, 1, 1), 1)
    layer = nn.Linear(3, 3)
    layer._params["weight"].data[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Fz.low_rank_linear(layer, 1)


def test_building_draws_no_random_numbers():
    layer = nn.Linear(5, 5)
    before = B.rng().bit_generator.state
    Fz.low_rank_linear(layer, 2)
    assert B.rng().bit_generator.state == before


# ----------------------------------------------------------------------------- spatially separable
def _conv_setting(rng):
    cin, cout = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    return cin, cout, kernel, stride, padding, dilation


def _separable_reconstruction(seq):
    """W_hat[o, c, u, v] = sum_r H[o, r, 0, v] V[r, c, u, 0], from the two layers' weights."""
    return np.einsum("orv,rcu->ocuv", _w(seq[1])[:, :, 0, :], _w(seq[0])[:, :, :, 0])


@pytest.mark.parametrize("trial", range(TRIALS))
def test_spatially_separable_error_and_outputs(be64, trial):
    rng = np.random.default_rng(100 + trial)
    cin, cout, kernel, stride, padding, dilation = _conv_setting(rng)
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=bool(trial % 2), backend=be64)
    w = _w(conv)
    matrix = w.transpose(1, 2, 0, 3).reshape(cin * kernel[0], cout * kernel[1])   # M[(c,u),(o,v)]
    rank = int(rng.integers(1, min(matrix.shape) + 1))
    seq = Fz.spatially_separable(conv, rank)
    assert _w(seq[0]).shape == (rank, cin, kernel[0], 1) and _w(seq[1]).shape == (cout, rank, 1, kernel[1])
    w_hat = _separable_reconstruction(seq)
    assert abs(np.linalg.norm(w - w_hat) - _frobenius_discarded(matrix, rank)) < 1e-10
    h, wd = (dilation[i] * (kernel[i] - 1) + 1 + int(rng.integers(0, 5)) for i in range(2))
    x = B.randn(2, cin, h, wd, backend=be64)
    bias = None if _b(conv) is None else torch.as_tensor(_b(conv))
    ref = torch.nn.functional.conv2d(_torch(x), torch.as_tensor(w_hat), bias, stride, padding, dilation)
    np.testing.assert_allclose(_np(seq(x)), ref.numpy(), rtol=0, atol=1e-12)


def test_spatially_separable_at_full_rank_is_the_conv(be64):
    conv = nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), backend=be64)
    x = B.randn(2, 3, 9, 8, backend=be64)
    np.testing.assert_allclose(_np(Fz.spatially_separable(conv, 8)(x)), _np(conv(x)), atol=1e-12)


def test_spatially_separable_backward_equals_torch(be64):
    conv = nn.Conv2d(3, 5, 3, padding=1, backend=be64)
    seq = Fz.spatially_separable(conv, 2)
    x = B.randn(2, 3, 6, 7, backend=be64)
    twin = torch_twin(seq, dtype="float64")
    xt = _torch(x).requires_grad_(True)
    out_t = twin(xt)
    dout = torch.randn(out_t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out_t.backward(dout)
    np.testing.assert_allclose(_np(seq(x)), out_t.detach().numpy(), atol=1e-12)
    dx = seq.backward(B.to_backend(dout.numpy(), be64))
    np.testing.assert_allclose(_np(dx), xt.grad.numpy(), atol=1e-12)
    for (name, p), (_, q) in zip(seq.named_parameters(), twin.named_parameters()):
        np.testing.assert_allclose(_np(p.grad), q.grad.numpy(), atol=1e-12, err_msg=name)


def test_splits_read_the_masked_weight(be64):
    layer = nn.Linear(4, 3, backend=be64)
    mask = np.ones((3, 4))
    mask[0, 1] = 0
    layer._params["weight"].mask = B.to_backend(mask, be64)      # not applied: the model uses W * mask
    split = Fz.low_rank_linear(layer, 3)
    np.testing.assert_allclose(_w(split[1]) @ _w(split[0]), _w(layer) * mask, atol=1e-13)


@pytest.mark.parametrize("split", ["spatial", "depthwise"])
def test_conv_splits_float32(be32, split):
    conv = nn.Conv2d(3, 4, 3, padding=1, backend=be32)
    seq = Fz.spatially_separable(conv, 3) if split == "spatial" else Fz.to_depthwise_separable(conv, 2)
    assert _w(seq[0]).dtype == np.float32 and _w(seq[1]).dtype == np.float32
    x = B.randn(2, 3, 6, 6, backend=be32)
    if split == "spatial":
        w_hat = _separable_reconstruction(seq)
    else:
        p, d = _w(seq[1])[:, :, 0, 0].reshape(4, 3, 2), _w(seq[0])[:, 0].reshape(3, 2, 3, 3)
        w_hat = np.einsum("ocj,cjuv->ocuv", p, d)
    ref = torch.nn.functional.conv2d(_torch(x), torch.as_tensor(w_hat), torch.as_tensor(_b(conv)), padding=1)
    np.testing.assert_allclose(_np(seq(x)), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_spatially_separable_refuses():
    with pytest.raises(ValueError, match="rank must be an int in \\[1, 6\\], got 7"):
        Fz.spatially_separable(nn.Conv2d(2, 3, 3), 7)       # M is (2*3) x (3*3)
    with pytest.raises(ValueError, match="groups=1"):
        Fz.spatially_separable(nn.Conv2d(2, 2, 3, groups=2), 1)
    with pytest.raises(TypeError, match="conv must be an nnopt_lab Conv2d"):
        Fz.spatially_separable(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="energy"):
        Fz.spatially_separable(nn.Conv2d(2, 3, 3), energy=0)


# ----------------------------------------------------------------------------- depthwise separable
def _forward_backward_against_torch(seq, x, be):
    twin = torch_twin(seq, dtype="float64" if be.dtype == "float64" else "float32")
    xt = _torch(x).requires_grad_(True)
    out_t = twin(xt)
    dout = torch.randn(out_t.shape, dtype=out_t.dtype, generator=torch.Generator().manual_seed(1))
    out_t.backward(dout)
    tol = dict(rtol=0, atol=1e-12) if be.dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(seq(x)), out_t.detach().numpy(), **tol)
    np.testing.assert_allclose(_np(seq.backward(B.to_backend(dout.numpy(), be))), xt.grad.numpy(), **tol)
    for (name, p), (_, q) in zip(seq.named_parameters(), twin.named_parameters()):
        np.testing.assert_allclose(_np(p.grad), q.grad.numpy(), err_msg=name, **tol)
    return twin


@pytest.mark.parametrize("trial", range(TRIALS))
def test_depthwise_separable_layers_equal_torch_groups(be64, trial):
    rng = np.random.default_rng(200 + trial)
    cin, cout, kernel, stride, padding, dilation = _conv_setting(rng)
    m = int(rng.integers(1, 3))
    seq = nn.Sequential(*Fz.depthwise_separable(cin, cout, kernel, stride, padding, dilation,
                                                bias=bool(trial % 2), depth_multiplier=m, backend=be64))
    assert seq[0].groups == cin and _w(seq[0]).shape == (cin * m, 1) + kernel
    assert _w(seq[1]).shape == (cout, cin * m, 1, 1)
    h, w = (dilation[i] * (kernel[i] - 1) + 1 + int(rng.integers(0, 4)) for i in range(2))
    twin = _forward_backward_against_torch(seq, B.randn(2, cin, h, w, backend=be64), be64)
    assert twin[0].groups == cin                                        # torch's conv2d with groups


def test_depthwise_separable_float32(be32):
    seq = Fz.depthwise_separable(4, 6, 3, padding=1, backend=be32)
    _forward_backward_against_torch(seq, B.randn(2, 4, 7, 7, backend=be32), be32)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_to_depthwise_separable_is_the_per_channel_svd(be64, trial):
    rng = np.random.default_rng(300 + trial)
    cin, cout, kernel, stride, padding, dilation = _conv_setting(rng)
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, backend=be64)
    m = int(rng.integers(1, min(cout, kernel[0] * kernel[1]) + 1))
    seq = Fz.to_depthwise_separable(conv, m)
    w = _w(conv)
    # the depthwise-separable pair's weight: W_hat[o, c] = sum_j P[o, c m + j] D[c m + j]
    p = _w(seq[1])[:, :, 0, 0].reshape(cout, cin, m)
    d = _w(seq[0])[:, 0].reshape(cin, m, *kernel)
    w_hat = np.einsum("ocj,cjuv->ocuv", p, d)
    expected = math.sqrt(sum(_frobenius_discarded(w[:, c].reshape(cout, -1), m) ** 2 for c in range(cin)))
    assert abs(np.linalg.norm(w - w_hat) - expected) < 1e-10
    h, wd = (dilation[i] * (kernel[i] - 1) + 1 + int(rng.integers(0, 4)) for i in range(2))
    x = B.randn(2, cin, h, wd, backend=be64)
    ref = torch.nn.functional.conv2d(_torch(x), torch.as_tensor(w_hat), torch.as_tensor(_b(conv)), stride,
                                     padding, dilation)
    np.testing.assert_allclose(_np(seq(x)), ref.numpy(), rtol=0, atol=1e-12)
    _forward_backward_against_torch(seq, x, be64)


def test_to_depthwise_separable_is_exact_at_full_multiplier(be64):
    conv = nn.Conv2d(3, 4, 2, padding=1, backend=be64)           # k_h k_w = 4 = C_out
    x = B.randn(2, 3, 5, 5, backend=be64)
    np.testing.assert_allclose(_np(Fz.to_depthwise_separable(conv, 4)(x)), _np(conv(x)), atol=1e-12)


def test_to_depthwise_separable_refuses():
    with pytest.raises(ValueError, match="depth_multiplier must be an int in \\[1, 4\\], got 5"):
        Fz.to_depthwise_separable(nn.Conv2d(2, 4, 3), 5)
    with pytest.raises(ValueError, match="depth_multiplier"):
        Fz.to_depthwise_separable(nn.Conv2d(2, 4, 3), 0)
    with pytest.raises(ValueError, match="groups=1"):
        Fz.to_depthwise_separable(nn.Conv2d(2, 4, 3, groups=2))
    with pytest.raises(ValueError, match="depth_multiplier"):
        Fz.depthwise_separable(2, 3, 3, depth_multiplier=0)
    with pytest.raises(TypeError, match="bias"):
        Fz.depthwise_separable(2, 3, 3, bias=1)
    with pytest.raises(ValueError, match="depth_multiplier=75115985 make .* parameters, more than"):
        Fz.depthwise_separable(2, 3, 3, depth_multiplier=75115985)


# ----------------------------------------------------------------------------- savings
def test_savings_of_a_low_rank_linear_by_hand():
    layer = nn.Linear(64, 32)
    s = Fz.savings(layer, Fz.low_rank_linear(layer, 8), (64,))
    # before: 64*32 + 32 params, 64*32 MACs; after: 8*64 + 32*8 + 32 params, 8*(64 + 32) MACs
    assert (s.params_before, s.params_after) == (2080, 800)
    assert (s.macs_before, s.macs_after) == (2048, 768)
    assert (s.bytes_before, s.bytes_after) == (2080 * 4, 800 * 4)
    assert s.param_ratio == pytest.approx(800 / 2080) and "2,080 -> 800" in str(s)


def test_savings_of_the_conv_splits_by_hand():
    conv = nn.Conv2d(8, 16, 3, padding=1)                       # on 8 x 10 x 10: output 16 x 10 x 10
    shape = (8, 10, 10)
    spatial = Fz.savings(conv, Fz.spatially_separable(conv, 4), shape)
    assert (spatial.params_before, spatial.macs_before) == (16 * 8 * 9 + 16, 16 * 100 * 8 * 9)
    # vertical 4 x 8 x 3 x 1 (no bias), horizontal 16 x 4 x 1 x 3 + 16; MACs 4*100*(8*3) + 16*100*(4*3)
    assert (spatial.params_after, spatial.macs_after) == (96 + 192 + 16, 9600 + 19200)
    depthwise = Fz.savings(conv, Fz.to_depthwise_separable(conv), shape)
    # depthwise 8 x 1 x 3 x 3, pointwise 16 x 8 + 16; MACs 8*100*9 + 16*100*8
    assert (depthwise.params_after, depthwise.macs_after) == (72 + 128 + 16, 7200 + 12800)
    assert depthwise.bytes_after == 216 * 4


def test_savings_refuses():
    with pytest.raises(TypeError, match="after must be an nnopt_lab.nn Module"):
        Fz.savings(nn.Linear(2, 2), "x", (2,))
    with pytest.raises(ValueError, match="input_shape"):
        Fz.savings(nn.Linear(2, 2), nn.Linear(2, 2), (3,))
