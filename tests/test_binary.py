"""nnopt_lab.inference.binary: ternary (TWN), two-level, ±1 activations, packed bits and the XNOR dot product.

References: a hand-computed TWN example and the TWN formula written directly in numpy here; brute
force over every threshold for two_level's L2 optimum; the float dot product of ±1 vectors
(exact, random lengths including non-multiples of 8); Python's int.bit_count for popcount;
XNOR-Net's formula in torch for xnor_linear.
"""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab.compression import quantization as Q
from nnopt_lab.inference import binary as BI


# ----------------------------------------------------------------------------- ternary
def test_ternary_hand_computed_example(backend_name):
    w = B.to_backend([[0.1, -0.9, 0.5, 0.0], [2.0, -2.0, 0.2, -0.2]], backend_name, dtype="float64")
    # row 0: mean|w| = 1.5/4 = 0.375, Δ = 0.2625: support {-0.9, 0.5}, α = 0.7, codes [0, -1, 1, 0]
    # row 1: mean|w| = 4.4/4 = 1.1,  Δ = 0.77:  support {2, -2},      α = 2.0, codes [1, -1, 0, 0]
    r = BI.ternarize_weight(w)
    assert (r.scheme, r.bits, r.axis) == ("ternary", 2, 0)
    np.testing.assert_array_equal(B.to_numpy(r.codes), [[0, -1, 1, 0], [1, -1, 0, 0]])
    assert B.dtype_name(r.codes) == "int8"
    np.testing.assert_array_equal(B.to_numpy(r.scale), np.float32([0.7, 2.0]))
    np.testing.assert_array_equal(B.to_numpy(r.dequantize()),
                                  np.float32([0.7, 2.0])[:, None].astype(np.float64) * [[0, -1, 1, 0], [1, -1, 0, 0]])
    # per tensor: mean|w| = 5.9/8, Δ = 0.51625: support {-0.9, 2, -2}, α = 4.9/3
    t = BI.ternarize_weight(w, per_channel=False)
    np.testing.assert_array_equal(B.to_numpy(t.codes), [[0, -1, 0, 0], [1, -1, 0, 0]])
    assert t.scale == float(np.float32(4.9 / 3)) and t.axis is None


def twn_numpy(w, factor, axis):
    """TWN written directly: Δ_c = f·mean|w_c|, α_c = mean of |w| over |w| > Δ_c."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else w.reshape(1, -1)
    delta = factor * np.abs(moved).mean(axis=1, keepdims=True)
    keep = np.abs(moved) > delta
    alpha = np.array([np.abs(row[k]).mean() for row, k in zip(moved, keep)])
    codes = np.sign(moved) * keep
    return codes, alpha


@pytest.mark.parametrize("shape, axis", [((6, 5), 0), ((4, 3, 3, 3), 0), ((5, 7), 1), ((10,), None), ((3, 4, 2), None)])
@pytest.mark.parametrize("factor", [0.7, 0.5, 0.0])
def test_ternary_equals_the_twn_formula(backend_name, shape, axis, factor):
    w = np.random.default_rng(len(shape)).standard_normal(shape)
    r = BI.ternarize_weight(B.to_backend(w, backend_name, dtype="float64"), factor, per_channel=axis is not None,
                            axis=axis or 0)
    codes, alpha = twn_numpy(w, factor, axis)
    ours = B.to_numpy(r.codes)
    mine = np.moveaxis(ours, axis, 0).reshape(codes.shape) if axis is not None else ours.reshape(codes.shape)
    np.testing.assert_array_equal(mine, codes)
    np.testing.assert_array_equal(np.atleast_1d(B.to_numpy(r.scale)), alpha.astype(np.float32))
    # α is the L2-optimal scale for its codes: the error grows when α moves
    deq = B.to_numpy(r.dequantize())
    for s in (0.98, 1.02):
        assert ((w - deq) ** 2).sum() <= ((w - deq * s) ** 2).sum()


def test_ternary_zero_channel_and_size():
    w = np.array([[0.0, 0.0, 0.0], [1.0, -3.0, 0.1]], dtype=np.float32)
    r = BI.ternarize_weight(w)
    np.testing.assert_array_equal(r.dequantize()[0], 0.0)
    assert B.to_numpy(r.scale)[0] == Q.SCALE_EPS
    assert r.code_bits == 2 * 6 and r.zero_point_bits == 0 and r.scale_bits == 2 * 32
    assert r.dequantize().dtype == np.float32


# ----------------------------------------------------------------------------- two levels
def brute_two_level(w):
    """Every threshold between sorted neighbours: levels = the two means, error = the sum of squares."""
    v = np.sort(w.reshape(-1))
    best = (np.inf, None)
    for k in range(1, v.size):
        a, b = v[:k].mean(), v[k:].mean()
        err = ((v[:k] - a) ** 2).sum() + ((v[k:] - b) ** 2).sum()
        if err < best[0]:
            best = (err, (a, b))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_two_level_is_the_l2_optimum_of_brute_force(backend_name, seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(2, 60))
    w = g.standard_normal(n) * g.uniform(0.1, 3) + g.uniform(-1, 1) if seed % 2 else g.exponential(size=n)
    r = BI.two_level(B.to_backend(w, backend_name, dtype="float64"))
    err, (a, b) = brute_two_level(w)
    assert r.error == pytest.approx(err, rel=1e-12, abs=1e-12)
    assert (r.low, r.high) == pytest.approx((a, b), rel=1e-12)
    deq = B.to_numpy(r.dequantize())
    assert ((w - deq) ** 2).sum() == pytest.approx(err, rel=1e-12, abs=1e-12)
    assert set(np.unique(deq)) <= {r.low, r.high}
    # and it is at least as good as the symmetric ±α binarization
    bin_err = ((w - B.to_numpy(Q.binarize_weight(w).dequantize())) ** 2).sum()
    assert r.error <= bin_err + 1e-12


def test_two_level_per_channel_is_two_level_of_each_channel(backend_name):
    w = np.random.default_rng(7).standard_normal((4, 3, 5))
    r = BI.two_level(B.to_backend(w, backend_name, dtype="float64"), per_channel=True, axis=1)
    for c in range(3):
        err, (a, b) = brute_two_level(w[:, c])
        assert (B.float_of(r.low[c]), B.float_of(r.high[c])) == pytest.approx((a, b), rel=1e-12)
    assert B.to_numpy(r.dequantize()).shape == w.shape and B.dtype_name(r.codes) == "uint8"


def test_two_level_of_a_constant_and_of_one_value():
    r = BI.two_level(np.full(5, 0.25))
    assert r.low == r.high == 0.25 and r.error == 0.0
    assert BI.two_level(np.array([3.0])).low == 3.0


# ----------------------------------------------------------------------------- bits
def test_binarize_activations_sign_of_zero_is_plus_one(backend_name):
    x = B.to_backend([-2.0, -0.0, 0.0, 1e-30, 3.0], backend_name)
    np.testing.assert_array_equal(B.to_numpy(BI.binarize_activations(x)), [-1, 1, 1, 1, 1])
    assert B.dtype_name(BI.binarize_activations(x)) == B.dtype_name(x)


def test_pack_signs_layout():
    x = np.array([1, -1, 1, 1, -1, -1, -1, -1, 1, -1], dtype=np.float32)   # bits 0,2,3 of byte 0; bit 0 of byte 1
    np.testing.assert_array_equal(BI.pack_signs(x), np.array([1 + 4 + 8, 1], dtype=np.uint8))


def test_popcount_equals_bit_count_on_every_byte(backend_name):
    words = B.to_backend(np.arange(256, dtype=np.uint8), backend_name)
    np.testing.assert_array_equal(B.to_numpy(BI.popcount(words)), [int(v).bit_count() for v in range(256)])


@pytest.mark.parametrize("seed", range(8))
def test_xnor_dot_equals_the_float_dot_of_plus_minus_one_vectors(backend_name, seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(1, 200)) if seed else 8 * 13            # random lengths, most not multiples of 8
    a = np.where(g.random((6, n)) < 0.5, -1.0, 1.0)
    b = np.where(g.random((5, n)) < g.uniform(0.1, 0.9), -1.0, 1.0)
    pa, pb = (BI.pack_signs(B.to_backend(v, backend_name, dtype="float64")) for v in (a, b))
    dots = BI.xnor_dot(pa[:, None, :], pb[None, :, :], n)
    assert B.dtype_name(dots) == "int64"
    np.testing.assert_array_equal(B.to_numpy(dots), (a @ b.T).astype(np.int64))   # exact


def test_xnor_dot_refuses_a_wrong_length():
    p = BI.pack_signs(np.ones(10))
    with pytest.raises(ValueError, match="n must be an int in \\[9, 16\\]"):
        BI.xnor_dot(p, p, 8)
    with pytest.raises(TypeError, match="uint8"):
        BI.xnor_dot(p.astype(np.int64), p, 10)


@pytest.mark.parametrize("k", [1, 7, 64, 100])
def test_xnor_linear_equals_xnor_nets_formula_in_torch(backend_name, k):
    g = np.random.default_rng(k)
    x, w, bias = g.standard_normal((9, k)), g.standard_normal((4, k)), g.standard_normal(4)
    x[0, 0] = 0.0                                                     # sign(0) = +1
    ours = BI.xnor_linear(*(B.to_backend(v, backend_name, dtype="float64") for v in (x, w, bias)))
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    sx, sw = torch.where(tx >= 0, 1.0, -1.0).double(), torch.where(tw >= 0, 1.0, -1.0).double()
    beta, alpha = tx.abs().mean(dim=1), torch.from_numpy(np.float32(np.abs(w).mean(axis=1)).astype(np.float64))
    ref = beta[:, None] * alpha[None, :] * (sx @ sw.T) + torch.from_numpy(bias)
    np.testing.assert_allclose(B.to_numpy(ours), ref.numpy(), rtol=1e-14, atol=1e-14)
    # and it approximates the float layer: same sign as x·Wᵀ far more often than chance
    agree = np.mean(np.sign(B.to_numpy(ours) - bias) == np.sign(x @ w.T))
    assert agree > (0.6 if k > 1 else 0.99)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="threshold_factor"):
        BI.ternarize_weight(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="w must have at least one entry"):
        BI.ternarize_weight(np.ones((0, 3)))
    with pytest.raises(ValueError, match="w must hold finite"):
        BI.two_level(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="same K"):
        BI.xnor_linear(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="bias must have shape"):
        BI.xnor_linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(3))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        BI.pack_signs(np.ones(3, dtype=np.int64))
