"""Backends: resolution, moving arrays, randomness, and the fast paths against their fallbacks."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B


def test_auto_is_numpy_without_gpu_and_cuda_with_it():
    expected = "torch-cuda" if torch.cuda.is_available() else "numpy"
    assert B.get_backend("auto").name == expected


@pytest.mark.parametrize("name", ["tensorflow", "cuda", "", "NUMPY"])
def test_unknown_backend_names_are_refused(name):
    with pytest.raises(ValueError, match=f"backend must be one of .* got {name!r}"):
        B.get_backend(name)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of .* got 'float16'"):
        B.get_backend("numpy", "float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_request_without_gpu_is_refused():
    with pytest.raises(ValueError, match="torch-cuda.*no CUDA device"):
        B.get_backend("torch-cuda")


def test_mixing_numpy_and_torch_is_refused():
    with pytest.raises(TypeError, match="mixed"):
        B.namespace(np.zeros(2), torch.zeros(2))
    with pytest.raises(TypeError, match="expected numpy arrays or torch tensors"):
        B.namespace([1.0, 2.0])


def test_to_backend_keeps_integers_and_sets_float_dtype(backend_name):
    b = B.get_backend(backend_name, "float64")
    x = B.to_backend(np.arange(6, dtype=np.float32).reshape(2, 3), b)
    y = B.to_backend(np.array([1, 2], dtype=np.int32), b)
    assert B.dtype_name(x) == "float64" and B.backend_of(x).name == backend_name
    assert B.dtype_name(y) == "int64"
    np.testing.assert_array_equal(B.to_numpy(x), np.arange(6).reshape(2, 3))


def test_same_seed_gives_same_numbers_on_every_backend(backend_name):
    B.seed(3)
    a = B.to_numpy(B.randn(4, 5, backend=backend_name))
    B.seed(3)
    b = B.to_numpy(B.randn(4, 5, backend="numpy"))
    np.testing.assert_array_equal(a, b)
    B.seed(4)
    assert not np.array_equal(B.to_numpy(B.randn(4, 5)), b)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        B.seed(bad)


@pytest.mark.parametrize("shape,k,stride", [((2, 3, 7, 6), (3, 3), 1), ((1, 2, 8, 8), (2, 2), 2),
                                            ((2, 1, 9, 7), (3, 2), 2), ((1, 1, 5, 5), (5, 5), 1)])
def test_sliding_windows_fast_path_equals_portable_fallback(be64, shape, k, stride):
    x = B.randn(*shape, backend=be64)
    fast = B.sliding_windows(x, *k, stride)
    slow = B.sliding_windows_portable(x, *k, stride)
    assert tuple(fast.shape) == tuple(slow.shape)
    np.testing.assert_array_equal(B.to_numpy(fast), B.to_numpy(slow))
    # and both against the definition, one window checked by hand
    i, j = fast.shape[2] - 1, fast.shape[3] - 1
    np.testing.assert_array_equal(
        B.to_numpy(fast)[0, 0, i, j],
        B.to_numpy(x)[0, 0, i * stride:i * stride + k[0], j * stride:j * stride + k[1]])


def test_scatter_add_keeps_repeated_indices_and_equals_fallback(be64):
    index = B.to_backend(np.array([0, 2, 2, 2, 4, 0]), be64)
    values = B.randn(6, 3, backend=be64)
    fast = B.scatter_add(be64.zeros((5, 3)), index, values)
    slow = B.scatter_add_portable(be64.zeros((5, 3)), index, values)
    expected = np.zeros((5, 3))
    for i, v in zip(B.to_numpy(index), B.to_numpy(values)):
        expected[i] += v
    np.testing.assert_allclose(B.to_numpy(fast), expected, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(B.to_numpy(slow), expected, rtol=1e-14, atol=1e-14)
