"""The checking helpers never pass on NaN and check their arguments.

Each test below names a call that the earlier testing.py let through silently (a passing
gradient check with a NaN backward, a NaN tolerance, a NaN max |diff| returned as a number).
"""
import math

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import testing as T


def square(x):
    return x * x


def square_backward(x):
    return lambda g: 2 * x * g


def test_gradcheck_passes_a_correct_backward(be64):
    x = be64.asarray(np.linspace(-1.0, 1.0, 5))
    assert T.gradcheck(square, square_backward(x), x) < 1e-8


def test_gradcheck_fails_a_nan_backward(be64):
    x = be64.asarray(np.linspace(-1.0, 1.0, 5))
    xp = B.namespace(x)
    with pytest.raises(AssertionError, match="NaN"):
        T.gradcheck(square, lambda g: xp.full_like(x, math.nan), x)
    one_nan = lambda g: xp.where(xp.arange(5, device=x.device) == 2, math.nan, 2 * x * g)
    with pytest.raises(AssertionError, match="NaN"):
        T.gradcheck(square, one_nan, x)


def test_gradcheck_fails_a_nan_forward(be64):
    x = be64.asarray(np.linspace(-1.0, 1.0, 5))
    with pytest.raises(AssertionError, match="NaN"):
        T.gradcheck(lambda v: v * math.nan, square_backward(x), x)


@pytest.mark.parametrize("arg, value", [("tol", math.nan), ("h", math.nan), ("tol", math.inf), ("h", 0.0),
                                        ("tol", -1.0), ("h", "1e-6"), ("tol", None), ("seed", -1),
                                        ("seed", 2.5), ("quiet", "yes")])
def test_gradcheck_refuses_bad_settings(arg, value):
    x = np.linspace(-1.0, 1.0, 5)
    with pytest.raises((ValueError, TypeError), match=arg):
        T.gradcheck(square, square_backward(x), x, **{arg: value})


def test_gradcheck_accepts_numpy_scalars():
    x = np.linspace(-1.0, 1.0, 5)
    T.gradcheck(square, square_backward(x), x, seed=np.int64(1), h=np.float32(1e-6), tol=np.float64(1e-7))


def test_gradcheck_refuses_a_gradient_of_the_wrong_shape():
    x = np.linspace(-1.0, 1.0, 6)
    with pytest.raises(AssertionError, match="shape"):
        T.gradcheck(square, lambda g: (2 * x * g).reshape(2, 3), x)


def test_gradcheck_refuses_non_callables_and_non_float64():
    x = np.linspace(-1.0, 1.0, 5)
    with pytest.raises(TypeError, match="forward"):
        T.gradcheck(None, square_backward(x), x)
    with pytest.raises(TypeError, match="backward"):
        T.gradcheck(square, 3, x)
    with pytest.raises(TypeError, match="x must be a float64"):
        T.gradcheck(square, square_backward(x), x.astype("float32"))
    with pytest.raises(TypeError, match="x must be"):
        T.gradcheck(square, square_backward(x), [1.0, 2.0])


def test_gradcheck_still_fails_a_wrong_backward():
    x = np.linspace(-1.0, 1.0, 5)
    with pytest.raises(AssertionError, match="relative error"):
        T.gradcheck(square, lambda g: 3 * x * g, x)


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
def test_numerical_gradient_fails_on_nan_and_bad_h(be64):
    x = be64.asarray(np.linspace(0.5, 1.0, 4))
    xp = B.namespace(x)
    with pytest.raises(AssertionError, match="nan"):
        T.numerical_gradient(lambda: xp.sum(xp.log(x - 0.75)), x)     # log of a negative number
    with pytest.raises(AssertionError, match="inf"):
        T.numerical_gradient(lambda: xp.sum(x) * math.inf, x)
    for h in (math.nan, 0.0, -1e-6, math.inf):
        with pytest.raises(ValueError, match="h must be"):
            T.numerical_gradient(lambda: xp.sum(x * x), x, h=h)
    with pytest.raises(TypeError, match="f must be callable"):
        T.numerical_gradient(None, x)
    with pytest.raises(TypeError, match="x must be a floating"):
        T.numerical_gradient(lambda: 0.0, np.arange(3))


def test_numerical_gradient_is_right_and_restores_x(be64):
    x = be64.asarray(np.linspace(0.5, 1.0, 4))
    before = B.to_numpy(x).copy()
    grad = T.numerical_gradient(lambda: B.namespace(x).sum(x ** 3), x)
    np.testing.assert_allclose(grad, 3 * before ** 2, rtol=1e-8)
    np.testing.assert_array_equal(B.to_numpy(x), before)


def test_numerical_gradient_refuses_a_non_contiguous_x():
    """Before: reshape made a copy, the nudges never reached f, and the gradient was all zeros."""
    base = np.linspace(0.5, 1.0, 12).reshape(3, 4)
    x = base.T                                   # a transposed view: reshape(-1) copies
    with pytest.raises(ValueError, match="contiguous"):
        T.numerical_gradient(lambda: float((x ** 2).sum()), x)
    t = torch.tensor(base, dtype=torch.float64).T
    with pytest.raises(ValueError, match="contiguous"):
        T.numerical_gradient(lambda: float((t ** 2).sum()), t)


@pytest.mark.parametrize("helper", [T.rel_error, T.max_abs_diff])
def test_rel_error_and_max_abs_diff_refuse_nan(helper, be64):
    """Before: both returned nan, and a check written ``assert not err > tol`` passes on it."""
    good = be64.asarray(np.array([1.0, 2.0, 3.0]))
    bad = be64.asarray(np.array([1.0, math.nan, 3.0]))
    with pytest.raises(ValueError, match="a contains NaN"):
        helper(bad, good)
    with pytest.raises(ValueError, match="b contains NaN"):
        helper(good, bad)
    with pytest.raises(ValueError, match="b contains NaN or inf"):
        helper(good, be64.asarray(np.array([1.0, math.inf, 3.0])))
    with pytest.raises(ValueError, match="same shape"):
        helper(good, good[:2])
    with pytest.raises(TypeError, match="a must be an array"):
        helper(None, good)
    assert helper(good, good) == 0.0
    assert helper(be64.asarray(np.zeros(0)), be64.asarray(np.zeros(0))) == 0.0


def test_rel_error_and_max_abs_diff_values():
    a, b = np.array([1.0, 2.0]), np.array([1.0, 2.5])
    assert T.max_abs_diff(a, b) == 0.5
    assert T.rel_error(a, b) == pytest.approx(0.5 / 4.5, rel=1e-15)


def test_compare_fails_on_nan_in_ours_or_reference(be64):
    """Before: a NaN in both arrays at one place matched."""
    ref = np.array([1.0, math.nan, 3.0])
    with pytest.raises(AssertionError, match="NaN"):
        T.compare(be64.asarray(ref), ref, "a reference with NaN", quiet=True)
    with pytest.raises(AssertionError, match="NaN"):
        T.compare(be64.asarray(ref), np.array([1.0, 2.0, 3.0]), "ours with NaN", quiet=True)
    with pytest.raises(AssertionError, match="NaN"):
        T.compare(be64.asarray(np.array([1.0, 2.0, 3.0])), ref, "reference with NaN", quiet=True)
    # an explicit opt-in for references that are NaN by definition (nan_euclidean_distances)
    assert T.compare(be64.asarray(ref), ref, "NaN by definition", quiet=True, equal_nan=True) == 0.0


def test_compare_matches_same_infinities_only():
    ref = np.array([1.0, -math.inf, math.inf])
    assert T.compare(ref.copy(), ref, "log of zero", quiet=True) == 0.0
    with pytest.raises(AssertionError):
        T.compare(np.array([1.0, math.inf, math.inf]), ref, "opposite infinity", quiet=True)
    with pytest.raises(AssertionError):
        T.compare(np.array([1.0, 5.0, math.inf]), ref, "finite for infinite", quiet=True)


@pytest.mark.parametrize("arg, value", [("rtol", math.nan), ("atol", math.nan), ("rtol", math.inf),
                                        ("atol", -1.0), ("rtol", "1e-7"), ("atol", None), ("quiet", 1),
                                        ("equal_nan", "no")])
def test_compare_refuses_bad_tolerances(arg, value):
    """Before: atol=inf or rtol=inf passed anything, and a negative or NaN tolerance was not refused."""
    with pytest.raises((ValueError, TypeError), match=arg):
        T.compare(np.array([1.0]), np.array([2.0]), "x", **{arg: value})


def test_compare_refuses_a_bad_name_and_non_arrays():
    with pytest.raises(TypeError, match="name must be a str"):
        T.compare(np.ones(2), np.ones(2), None)
    with pytest.raises(TypeError, match="ours must be"):
        T.compare(None, np.ones(2), "x")
    with pytest.raises(TypeError, match="reference must be"):
        T.compare(np.ones(2), "abc", "x")


def test_compare_accepts_numpy_scalar_tolerances_and_reports(capsys):
    T.compare(np.ones(3), np.ones(3) + 1e-12, "torch.ones", rtol=np.float32(1e-7), atol=np.float64(1e-10))
    assert capsys.readouterr().out.startswith("✓ matches torch.ones")
    with pytest.raises(AssertionError, match="1 of 3 entries off"):
        T.compare(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.1, 3.0]), "ref", quiet=True)


def test_gradcheck_refuses_an_empty_x():
    x = np.zeros((0, 3))
    with pytest.raises(ValueError, match="x must not be empty"):
        T.gradcheck(square, square_backward(x), x)


def test_gradcheck_of_a_0d_x():
    x = np.array(0.7)
    assert T.gradcheck(square, square_backward(x), x) < 1e-8
