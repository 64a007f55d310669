"""The exact integer matmul: fast path (torch._int_mm / float64 GEMM) == portable int64 fallback
== numpy's int64 matmul, on random shapes, dtype mixes, extreme values and empty dimensions."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B

RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-2**15, 2**15 - 1), "int32": (-2**31, 2**31 - 1)}


def _random(gen, shape, dtype, low=None, high=None):
    lo, hi = RANGES[dtype]
    lo, hi = lo if low is None else low, hi if high is None else high
    return gen.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def _reference(a, b):
    """The exact product, by numpy's integer matmul in int64 (no float anywhere)."""
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def _check_both(a_np, b_np, backend_name):
    a, b = B.to_backend(a_np, backend_name), B.to_backend(b_np, backend_name)
    want = _reference(a_np, b_np)
    assert np.abs(want).max(initial=0) <= 2**31 - 1
    for f in (B.int_matmul, B.int_matmul_portable):
        got = f(a, b)
        assert B.dtype_name(got) == "int32" and B.backend_of(got).name == backend_name, f.__name__
        assert tuple(got.shape) == want.shape
        np.testing.assert_array_equal(B.to_numpy(got), want, err_msg=f.__name__)


@pytest.mark.parametrize("da,db", [("int8", "int8"), ("uint8", "int8"), ("int8", "uint8"), ("uint8", "uint8"),
                                   ("int16", "int8"), ("int16", "int16")])
def test_int_matmul_equals_portable_and_int64_reference_on_random_shapes(backend_name, da, db):
    gen = B.generator(11)
    for trial in range(12):
        m, k, n = (int(s) for s in gen.integers(1, 40, size=3))
        if da == db == "int16":     # keep K * 2**30 below 2**31: values, not only dtypes, decide
            a_np, b_np = _random(gen, (m, k), da, -180, 180), _random(gen, (k, n), db, -180, 180)
        else:
            a_np, b_np = _random(gen, (m, k), da), _random(gen, (k, n), db)
        _check_both(a_np, b_np, backend_name)


@pytest.mark.parametrize("shape", [(17, 64, 24), (32, 128, 8), (1, 4096, 1), (3, 20000, 2)])
def test_int8_large_k_and_torch_int_mm_shapes(backend_name, shape):
    gen = B.generator(12)
    m, k, n = shape
    _check_both(_random(gen, (m, k), "int8"), _random(gen, (k, n), "int8"), backend_name)


@pytest.mark.parametrize("value_a,value_b", [(-128, -128), (-128, 127), (127, 127), (255, -128), (255, 127)])
def test_extreme_values_are_exact(backend_name, value_a, value_b):
    da = "uint8" if value_a > 127 else "int8"
    k = 131071 // 2 if da == "uint8" else 131071     # K * max|a| * max|b| at the int32 limit
    a_np = np.full((2, k), value_a, dtype=da)
    b_np = np.full((k, 3), value_b, dtype="int8")
    _check_both(a_np, b_np, backend_name)


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)])
def test_zero_size_dimensions(backend_name, shape):
    m, k, n = shape
    gen = B.generator(13)
    for db in ("int8", "uint8"):          # int8 x int8 goes through torch._int_mm on torch-cpu
        _check_both(_random(gen, (m, k), "int8"), _random(gen, (k, n), db), backend_name)


def test_int_matmul_keeps_exact_results_beyond_the_dtype_bound(backend_name):
    """int32 operands whose dtype bound is far beyond int32 but whose product fits: exact."""
    gen = B.generator(14)
    a_np = _random(gen, (5, 300), "int32", -1000, 1000)
    b_np = _random(gen, (300, 4), "int32", -1000, 1000)
    a_np[0, 0] = 2**20                                        # a large value against a zero
    b_np[0, :] = 0
    _check_both(a_np, b_np, backend_name)


def test_products_beyond_float64_exactness_take_the_int64_route(backend_name):
    """K * max|a| * max|b| >= 2**53 (int32 values near 2**31), but the entries cancel to fit int32."""
    a_np = np.array([[2**31 - 1, -(2**31 - 1), 3]], dtype=np.int32)       # (1, 3)
    b_np = np.array([[2**30 + 7], [2**30 + 7], [5]], dtype=np.int32)      # (3, 1)
    assert 3 * (2**31 - 1) * (2**30 + 7) >= 2**53
    _check_both(a_np, b_np, backend_name)


@pytest.mark.parametrize("which", ["int_matmul", "int_matmul_portable"])
def test_overflow_beyond_int32_raises_and_never_wraps(backend_name, which):
    f = getattr(B, which)
    k = 131072                                        # K * 128 * 128 = 2**31: one past int32
    a = B.to_backend(np.full((1, k), -128, dtype=np.int8), backend_name)
    b = B.to_backend(np.full((k, 1), -128, dtype=np.int8), backend_name)
    with pytest.raises(ValueError, match="does not fit the int32 accumulator.*2147483648"):
        f(a, b)
    big = B.to_backend(np.full((2, 2), 2**31 - 1, dtype=np.int32), backend_name)
    with pytest.raises(ValueError, match="int32 accumulator"):
        f(big, big)
    # at the limit itself (2**31 - 1 is int32's top) there is no error, and the answer is exact
    a_fit = B.to_backend(np.array([[-128] * 3, [1, 2, 3]], dtype=np.int8), backend_name)
    np.testing.assert_array_equal(B.to_numpy(f(a_fit, B.to_backend(np.full((3, 1), -128, np.int8),
                                                                   backend_name))), [[3 * 16384], [-768]])


def test_torch_int_mm_alone_would_wrap_where_int_matmul_raises():
    """The reason for the bound check: torch._int_mm on the CPU wraps silently at 2**31."""
    k = 140000
    a = torch.full((1, k), -128, dtype=torch.int8)
    wrapped = torch._int_mm(a, a.T.contiguous())
    assert int(wrapped) != k * 16384
    with pytest.raises(ValueError, match="int32 accumulator"):
        B.int_matmul(a, a.T)


@pytest.mark.parametrize("which", ["int_matmul", "int_matmul_portable"])
def test_bad_operands_are_refused(which):
    f = getattr(B, which)
    a = np.ones((2, 3), dtype=np.int8)
    cases = [
        ((np.ones((2, 3)), np.ones((3, 2), np.int8)), TypeError, "a must be an integer array of dtype .* got float64"),
        ((a, np.ones((3, 2), np.int64)), TypeError, "b must be an integer array .* got int64"),
        ((a, np.ones((3, 2), bool)), TypeError, "b must be an integer array .* got bool"),
        ((a, np.ones((2, 2), np.int8)), ValueError, "a's columns must match b's rows .* a \\(2, 3\\) and b \\(2, 2\\)"),
        ((np.ones(3, np.int8), np.ones((3, 2), np.int8)), ValueError, "a must be 2-D"),
        ((a, torch.ones((3, 2), dtype=torch.int8)), TypeError,
         "a and b must both be numpy arrays or both torch tensors, got a: numpy array, b: torch tensor"),
        ((torch.ones((2, 3), dtype=torch.int8), np.ones((3, 2), np.int8)), TypeError,
         "a and b must both be numpy arrays or both torch tensors, got a: torch tensor, b: numpy array"),
        (([[1, 2]], a), TypeError, "a must be a numpy array or a torch tensor"),
    ]
    for args, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            f(*args)


def test_non_contiguous_operands(backend_name):
    gen = B.generator(15)
    a_np = _random(gen, (40, 24), "int8")
    b_np = _random(gen, (32, 24), "int8")
    a, b = B.to_backend(a_np, backend_name), B.to_backend(b_np, backend_name)
    want = _reference(a_np, b_np.T)
    np.testing.assert_array_equal(B.to_numpy(B.int_matmul(a, b.T)), want)
    np.testing.assert_array_equal(B.to_numpy(B.int_matmul_portable(a, b.T)), want)


def test_torch_int8_operands_take_torch_int_mm(monkeypatch):
    """The fast path is really taken on torch-cpu (torch 2.13 has a CPU kernel), and not beyond the bound."""
    calls = []
    real = torch._int_mm

    def spy(a, b):
        calls.append(tuple(a.shape) + tuple(b.shape))
        return real(a, b)

    monkeypatch.setattr(torch, "_int_mm", spy)
    gen = B.generator(16)
    a_np, b_np = _random(gen, (5, 7), "int8"), _random(gen, (7, 3), "int8")
    got = B.int_matmul(torch.from_numpy(a_np), torch.from_numpy(b_np))
    np.testing.assert_array_equal(got.numpy(), _reference(a_np, b_np))
    assert calls == [(5, 7, 7, 3)]
    B.int_matmul(torch.from_numpy(a_np.astype(np.uint8)), torch.from_numpy(b_np))   # uint8: no _int_mm kernel
    assert len(calls) == 1
