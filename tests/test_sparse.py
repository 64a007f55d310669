"""CSR inference against scipy.sparse and torch's to_sparse_csr on the same random matrices:
construction (values, column indices, row pointers), CSR × dense at sparsities 0 … 0.999 with
empty rows and an all-zero matrix (float64 to 1e-12, float32 rtol 1e-5), SparseLinear's outputs,
bytes and MACs, the same pruned model three ways (dense, CSR, removed) with equal outputs, bad input."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

from nnopt_lab import backend as B
from nnopt_lab import measure, models, nn
from nnopt_lab.compression import pruning as P
from nnopt_lab.inference import sparse as S

SPARSITIES = (0.0, 0.3, 0.5, 0.9, 0.99, 0.999)
TRIALS = 6


def _random_sparse(rng, m, k, sparsity, empty_rows=True):
    w = rng.standard_normal((m, k)) * (rng.random((m, k)) >= sparsity)
    if empty_rows and m > 2:
        w[rng.integers(0, m, 2)] = 0.0          # rows with nothing stored
    return w


def _shapes(rng):
    return int(rng.integers(1, 60)), int(rng.integers(1, 60)), int(rng.integers(1, 9))


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_csr_arrays_equal_scipy_and_torch(sparsity, index_dtype, be64):
    rng = np.random.default_rng(int(sparsity * 1000))
    for _ in range(TRIALS):
        m, k, _ = _shapes(rng)
        w = _random_sparse(rng, m, k, sparsity)
        a = S.csr_from_dense(B.to_backend(w, be64), index_dtype=index_dtype)
        ref = sp.csr_matrix(w)
        tref = torch.from_numpy(w).to_sparse_csr()
        assert a.shape == (m, k) and a.nnz == ref.nnz
        assert B.dtype_name(a.col_indices) == index_dtype == B.dtype_name(a.crow_indices)
        np.testing.assert_array_equal(B.to_numpy(a.col_indices), ref.indices)
        np.testing.assert_array_equal(B.to_numpy(a.crow_indices), ref.indptr)
        np.testing.assert_array_equal(B.to_numpy(a.values), ref.data)
        np.testing.assert_array_equal(B.to_numpy(a.crow_indices), tref.crow_indices().numpy())
        np.testing.assert_array_equal(B.to_numpy(a.col_indices), tref.col_indices().numpy())
        np.testing.assert_array_equal(B.to_numpy(a.to_dense()), w)


def test_mask_is_applied_and_parameter_mask_used(backend_name):
    be = B.get_backend(backend_name, "float64")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 9))
    mask = (rng.random((6, 9)) > 0.5).astype(np.float64)
    a = S.csr_from_dense(B.to_backend(w, be), B.to_backend(mask, be))
    np.testing.assert_array_equal(B.to_numpy(a.to_dense()), w * mask)
    p = nn.Parameter(B.to_backend(w, be))
    p.mask = B.to_backend(mask, be)                      # mask set, data not yet zeroed
    b = S.csr_from_dense(p)
    np.testing.assert_array_equal(B.to_numpy(b.to_dense()), w * mask)
    assert b.nnz == int(mask.sum())


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_csr_matmul_float64_equals_scipy_and_torch(sparsity, be64):
    rng = np.random.default_rng(7 + int(sparsity * 1000))
    for _ in range(TRIALS):
        m, k, n = _shapes(rng)
        w = _random_sparse(rng, m, k, sparsity)
        x = rng.standard_normal((k, n))
        a = S.csr_from_dense(B.to_backend(w, be64))
        ours = B.to_numpy(S.csr_matmul(a, B.to_backend(x, be64)))
        np.testing.assert_allclose(ours, sp.csr_matrix(w) @ x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours, (torch.from_numpy(w).to_sparse_csr() @ torch.from_numpy(x)).numpy(),
                                   rtol=1e-12, atol=1e-12)
        vec = B.to_numpy(a @ B.to_backend(x[:, 0], be64))      # a vector x gives a vector
        assert vec.shape == (m,)
        np.testing.assert_allclose(vec, sp.csr_matrix(w) @ x[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_csr_matmul_float32(sparsity, be32):
    rng = np.random.default_rng(11 + int(sparsity * 1000))
    for _ in range(TRIALS):
        m, k, n = _shapes(rng)
        w = _random_sparse(rng, m, k, sparsity).astype(np.float32)
        x = rng.standard_normal((k, n)).astype(np.float32)
        ours = S.csr_matmul(S.csr_from_dense(B.to_backend(w, be32)), B.to_backend(x, be32))
        assert B.dtype_name(ours) == "float32"
        ref = sp.csr_matrix(w.astype(np.float64)) @ x.astype(np.float64)
        np.testing.assert_allclose(B.to_numpy(ours), ref, rtol=1e-5, atol=1e-5)


def test_all_zero_and_empty_shapes(be64):
    a = S.csr_from_dense(be64.zeros((5, 4)))
    assert a.nnz == 0 and B.to_numpy(a.crow_indices).tolist() == [0] * 6
    out = S.csr_matmul(a, B.to_backend(np.ones((4, 3)), be64))
    np.testing.assert_array_equal(B.to_numpy(out), np.zeros((5, 3)))
    one = S.csr_from_dense(B.to_backend(np.array([[0.0, 2.5]]), be64))
    np.testing.assert_array_equal(B.to_numpy(one @ B.to_backend(np.array([[1.0], [2.0]]), be64)), [[5.0]])


def test_large_matrix_at_high_sparsity(be64):
    rng = np.random.default_rng(3)
    w = _random_sparse(rng, 300, 400, 0.999)
    x = rng.standard_normal((400, 64))
    ours = S.csr_matmul(S.csr_from_dense(B.to_backend(w, be64)), B.to_backend(x, be64))
    np.testing.assert_allclose(B.to_numpy(ours), sp.csr_matrix(w) @ x, rtol=1e-12, atol=1e-12)


def test_nbytes_counts_the_three_arrays(be64):
    w = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 3.0]])
    a = S.csr_from_dense(B.to_backend(w, be64))
    assert a.nbytes == 3 * 8 + 3 * 4 + 4 * 4
    assert S.csr_from_dense(B.to_backend(w, be64), index_dtype="int64").nbytes == 3 * 8 + 3 * 8 + 4 * 8


# ----------------------------------------------------------------------------- the layer
def _pruned_linear(be, rng, sparsity=0.8, in_f=13, out_f=7, bias=True):
    lin = nn.Linear(in_f, out_f, bias=bias, backend=be)
    lin._params["weight"].data = B.to_backend(rng.standard_normal((out_f, in_f)), be)
    P.l1_unstructured(lin, sparsity)
    return lin


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_equals_torch_linear(bias, backend_name):
    be = B.get_backend(backend_name, "float64")
    rng = np.random.default_rng(5)
    lin = _pruned_linear(be, rng, bias=bias)
    layer = S.SparseLinear.from_linear(lin)
    x = rng.standard_normal((10, 13))
    ref = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(B.to_numpy(lin._params["weight"].data)),
                                     torch.from_numpy(B.to_numpy(lin._params["bias"].data)) if bias else None)
    np.testing.assert_allclose(B.to_numpy(layer(B.to_backend(x, be))), ref.numpy(), rtol=1e-12, atol=1e-12)
    tref = torch.from_numpy(B.to_numpy(lin._params["weight"].data)).to_sparse_csr()
    np.testing.assert_array_equal(B.to_numpy(layer.weight.col_indices), tref.col_indices().numpy())


def test_sparse_linear_reports_bytes_and_macs(backend_name):
    be = B.get_backend(backend_name, "float32")
    rng = np.random.default_rng(6)
    lin = _pruned_linear(be, rng, sparsity=0.75, in_f=8, out_f=4)        # 32 weights, 24 pruned
    layer = S.SparseLinear.from_linear(lin)
    assert layer.nnz == 8
    assert layer.parameter_bytes() == 8 * 4 + 8 * 4 + 5 * 4 + 4 * 4      # values, columns, row pointers, bias
    assert layer.parameter_bytes(bits=8) == 8 + 4 + 8 * 4 + 5 * 4          # values and bias at 1 byte
    model = nn.Sequential(layer)
    assert measure.model_bytes(model, dtype=None) == layer.parameter_bytes()
    s = measure.summary(model, (8,), batch_size=64)
    assert s.total_macs == 8 * 64
    assert layer.macs((64, 8), (64, 4)) == 8 * 64


def test_three_ways_give_equal_outputs(backend_name):
    be = B.get_backend(backend_name, "float64")
    B.seed(0)
    model = models.mlp((20, 30, 25, 5), backend=be)
    rng = np.random.default_rng(2)
    P.ln_structured(model[0], 0.5, dim=0)              # half the first layer's units: removable
    P.l1_unstructured(model[2], 0.9)
    P.l1_unstructured(model[4], 0.5)
    ways = S.three_ways(model)
    x = B.to_backend(rng.standard_normal((9, 20)), be)
    dense = B.to_numpy(ways.dense(x))
    np.testing.assert_allclose(B.to_numpy(model.eval()(x)), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(ways.csr(x)), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(ways.removed(x)), dense, rtol=1e-12, atol=1e-12)
    assert ways.removed[0].out_features == 15 and ways.removed[2].in_features == 15
    assert isinstance(ways.csr[0], S.SparseLinear)
    assert measure.model_bytes(ways.removed) < measure.model_bytes(ways.dense)


def test_state_moves_with_to(backend_name):
    be = B.get_backend(backend_name, "float64")
    layer = S.SparseLinear.from_linear(_pruned_linear(be, np.random.default_rng(0)))
    model = nn.Sequential(layer).to(B.get_backend("numpy", "float32"))
    assert B.dtype_name(model[0]._buffers["col_indices"]) == "int32"
    assert B.dtype_name(model[0]._buffers["values"]) == "float32"


# ----------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument(be64):
    with pytest.raises(ValueError, match="weight must have 2 axes"):
        S.csr_from_dense(be64.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="weight must be a numpy array"):
        S.csr_from_dense([[1.0, 0.0]])
    with pytest.raises(ValueError, match="mask must have weight's shape"):
        S.csr_from_dense(be64.zeros((2, 3)), be64.zeros((3, 2)))
    with pytest.raises(ValueError, match="index_dtype"):
        S.csr_from_dense(be64.zeros((2, 3)), index_dtype="int16")
    a = S.csr_from_dense(B.to_backend(np.eye(3), be64))
    with pytest.raises(ValueError, match="x must have 3 rows"):
        S.csr_matmul(a, be64.zeros((4, 2)))
    with pytest.raises(ValueError, match="x must have 1 or 2 axes"):
        S.csr_matmul(a, be64.zeros((3, 2, 1)))
    with pytest.raises(TypeError, match="a must be a CSRMatrix"):
        S.csr_matmul(np.eye(3), be64.zeros((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        S.csr_matmul(a, B.to_backend(np.ones((3, 2)), be64, dtype="float32"))
    layer = S.SparseLinear(a)
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 3\)"):
        layer(be64.zeros((2, 4)))
    with pytest.raises(TypeError, match="layer must be an nnopt_lab Linear"):
        S.SparseLinear.from_linear(nn.ReLU())
    with pytest.raises(ValueError, match="bias must have shape"):
        S.SparseLinear(a, be64.zeros((4,)))
    with pytest.raises(NotImplementedError, match="inference only"):
        layer.backward(be64.zeros((2, 3)))


def test_bias_on_another_backend_or_dtype_is_named(be64):
    a = S.csr_from_dense(B.to_backend(np.eye(3), be64))
    other = B.to_backend(np.zeros(3), B.get_backend("torch-cpu" if be64.name == "numpy" else "numpy", "float64"))
    with pytest.raises(TypeError, match="bias must be on weight's backend"):
        S.SparseLinear(a, other)
    with pytest.raises(TypeError, match="bias must be on weight's backend and dtype"):
        S.SparseLinear(a, B.to_backend(np.zeros(3), be64, dtype="float32"))


def test_inconsistent_csr_arrays_are_refused(be64):
    a = S.csr_from_dense(B.to_backend(np.eye(3), be64))
    with pytest.raises(ValueError, match="needs 3 col_indices and 4 crow_indices"):
        S.CSRMatrix(a.values, a.col_indices, a.crow_indices[:-1], (3, 3))
    with pytest.raises(TypeError, match="col_indices must be int32 or int64"):
        S.CSRMatrix(a.values, a.values, a.crow_indices, (3, 3))
