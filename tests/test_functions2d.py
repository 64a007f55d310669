"""2-D test functions: hand-written gradients vs torch autograd, minima, Param2D, run_optimizer,
and the optimizer playground's compute function."""
import math

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab.functions2d import (FUNCTIONS, Beale, IllConditionedQuadratic, Param2D, Rosenbrock, Saddle,
                                   run_optimizer)
from nnopt_lab.testing import compare, gradcheck
from nnopt_lab.training.optim import SGD, Adam
from nnopt_lab.widgets import optimizers as W



ALL = [Rosenbrock(), Rosenbrock(a=-0.5, b=10), Beale(), Saddle(), IllConditionedQuadratic(),
       IllConditionedQuadratic(condition=50, angle=0.6)]
IDS = [repr(f) for f in ALL]
POINTS = np.random.default_rng(3).uniform(-2, 2, (20, 2))


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_gradient_matches_autograd(fn, be64):
    xy = torch.tensor(POINTS, dtype=torch.float64, requires_grad=True)
    fn.value(xy[:, 0], xy[:, 1]).sum().backward()
    pts = B.to_backend(POINTS, be64)
    gx, gy = fn.grad(pts[:, 0], pts[:, 1])
    compare(B.namespace(pts).stack([gx, gy], axis=1), xy.grad, f"autograd of {fn!r}", rtol=1e-12,
            atol=1e-12, quiet=True)


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_gradcheck(fn, be64):
    for point in POINTS[:5]:
        x = B.to_backend(point.copy(), be64)
        gradcheck(lambda v: fn.value(v[0], v[1]),
                  lambda g: g * B.namespace(x).stack(list(fn.grad(x[0], x[1]))), x, tol=1e-7)


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_minima_and_stationary_points(fn):
    for x, y in fn.minima:
        assert fn.value(x, y) == pytest.approx(fn.min_value, abs=1e-14)
        assert max(abs(g) for g in fn.grad(x, y)) < 1e-12
        for dx, dy in [(1e-3, 0), (0, 1e-3), (-1e-3, 1e-3)]:       # a local minimum: higher nearby
            assert fn.value(x + dx, y + dy) > fn.value(x, y)
    for x, y in fn.stationary:
        assert max(abs(g) for g in fn.grad(x, y)) == 0
    assert fn.minima or fn.stationary


def test_known_values():
    assert Rosenbrock().value(0.0, 0.0) == 1.0 and Rosenbrock().value(-1.0, 1.0) == 4.0
    assert Beale().value(0.0, 0.0) == pytest.approx(1.5 ** 2 + 2.25 ** 2 + 2.625 ** 2)
    assert Saddle().value(1.0, 2.0) == -3.0
    q = IllConditionedQuadratic(condition=100.0, angle=math.pi / 2)
    assert q.value(1.0, 0.0) == pytest.approx(50.0) and q.value(0.0, 1.0) == pytest.approx(0.5)


def test_param2d_and_run_optimizer(backend_name):
    be = B.get_backend(backend_name, "float64")
    m = Param2D(Rosenbrock(), (-1.0, 1.0), backend=be)
    assert B.float_of(m.forward()) == 4.0
    m.backward()
    np.testing.assert_allclose(B.to_numpy(m.xy.grad), [-4.0 - 0.0, 0.0], atol=1e-15)
    path = run_optimizer(lambda p: SGD(p, lr=0.1), IllConditionedQuadratic(condition=4.0), (2.0, 1.0), 3,
                         backend=be)
    assert path.shape == (4, 2) and path.dtype == np.float64
    # gradient descent on ½(x² + 4y²): x ← 0.9x, y ← 0.6y
    np.testing.assert_allclose(path, [[2.0 * 0.9 ** k, 1.0 * 0.6 ** k] for k in range(4)], rtol=1e-14)


def test_adam_reaches_rosenbrock_minimum():
    path = run_optimizer(lambda p: Adam(p, lr=0.02), Rosenbrock(), (-1.5, 2.0), 3000)
    np.testing.assert_allclose(path[-1], [1.0, 1.0], atol=1e-2)


def test_run_optimizer_stops_on_divergence():
    path = run_optimizer(lambda p: SGD(p, lr=0.3), IllConditionedQuadratic(condition=10.0), (1.0, 1.0), 100)
    assert path.shape == (101, 2)
    bad = ~np.isfinite(path).all(axis=1)
    first = int(bad.argmax())
    assert bad.any() and bad[first:].all() and np.isfinite(path[:first - 1]).all()


@pytest.mark.parametrize("call, err, match", [
    (lambda: Rosenbrock(b=0), ValueError, r"b must be a finite number in \(0, 1e\+06\], got 0"),
    (lambda: Rosenbrock(a=float("nan")), ValueError, r"a must be a finite number in \[-1e\+06, 1e\+06\], got nan"),
    (lambda: Rosenbrock(a=1e300), ValueError, r"a must be a finite number"),          # was an OverflowError
    (lambda: IllConditionedQuadratic(condition=0.5), ValueError, r"condition must be a finite number in \[1, "),
    (lambda: IllConditionedQuadratic(angle="x"), TypeError, r"angle must be a finite number"),
    (lambda: Param2D("rosenbrock", (0, 0)), TypeError, r"fn must be a Function2D, got str"),
    (lambda: Param2D(Saddle(), (0, 0, 0)), ValueError, r"start must be two finite numbers"),
    (lambda: Param2D(Saddle(), 3.0), ValueError, r"start must be two finite numbers"),   # was "has no len()"
    (lambda: run_optimizer(lambda p: SGD(p), Saddle(), (0, 0), -1), ValueError, r"steps must be an int in \[0, "),
    (lambda: run_optimizer(None, Saddle(), (0, 0), 3), TypeError, r"opt_factory must be callable"),
    (lambda: run_optimizer(lambda p: SGD(p), Saddle(), (0, 0), 3, escape=float("nan")), ValueError,
     r"escape must be a number in \(0, inf\), got nan"),                       # was a path of NaN
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ----------------------------------------------------------------------------- playground
def test_playground_compute_function():
    out = W.optimizer_path("ill-conditioned", "gd", lr=0.05, steps=50, condition=10.0)
    assert out["path"].shape == (51, 2) and out["diverged_at"] is None
    # GD on ½(x² + 10y²) from the classic start: the closed form (1 - η)^k, (1 - 10η)^k
    x0, y0 = IllConditionedQuadratic().start
    np.testing.assert_allclose(out["path"][-1], [x0 * 0.95 ** 50, y0 * 0.5 ** 50], rtol=1e-12)
    assert out["final_value"] == pytest.approx(out["fn"].value(*out["path"][-1]))
    assert out["distance"] == pytest.approx(math.hypot(*out["path"][-1]))
    boom = W.optimizer_path("ill-conditioned", "gd", lr=0.3, steps=200)
    assert boom["diverged_at"] is not None
    saddle = W.optimizer_path("saddle", "momentum", lr=0.01, steps=10)
    assert math.isnan(saddle["distance"])


@pytest.mark.parametrize("name", W.OPTIMIZER_CHOICES)
def test_playground_optimizers_are_the_library_ones(name):
    fn = Rosenbrock()
    out = W.optimizer_path(fn, name, lr=1e-3, momentum=0.8, steps=20)
    again = run_optimizer(lambda p: W.make_optimizer(name, p, 1e-3, 0.8), fn, fn.start, 20)
    np.testing.assert_array_equal(out["path"], again)
    assert not np.array_equal(out["path"][0], out["path"][-1])


def test_playground_bad_names():
    with pytest.raises(ValueError, match=r"optimizer must be one of .* got 'sgdd'"):
        W.optimizer_path("saddle", "sgdd")
    with pytest.raises(ValueError, match=r"function must be one of .* got 'banana'"):
        W.optimizer_path("banana", "adam")


def test_plot_paths_and_widget():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for name in FUNCTIONS:
        fn = W.get_function(name)
        ax = W.plot_paths(fn, {"gd": W.optimizer_path(fn, "gd", lr=1e-3, steps=5)["path"]}, n=40)
        assert ax.get_title().startswith("Optimizer paths") and ax.get_legend() is not None
        plt.close("all")
    assert W.playground().children
    plt.close("all")


def test_numpy_scalars_are_accepted_like_python_numbers():
    """Before: np.float32 / np.int64 were refused ("a must be a finite number, got np.float32(1.0)")."""
    fn = Rosenbrock(a=np.float32(1.0), b=np.int64(100))
    assert (fn.a, fn.b) == (1.0, 100.0)
    path = run_optimizer(lambda p: SGD(p, lr=1e-3), fn, (np.float64(-1.0), np.float32(1.0)), np.int64(3))
    np.testing.assert_array_equal(path, run_optimizer(lambda p: SGD(p, lr=1e-3), Rosenbrock(), (-1.0, 1.0), 3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=None), r"n must be an int in \[2, 4096\]"),          # was "'NoneType' object cannot be interpreted"
    (dict(n=2 ** 62), r"n must be an int in \[2, 4096\]"),       # was numpy's "array is too big"
    (dict(xlim=2.5), r"xlim must be a pair \(low, high\)"),      # was "cannot unpack non-iterable float"
    (dict(ylim=(1.0, float("nan"))), r"ylim must be a pair"),
    (dict(xlim=(3.0, 1.0)), r"xlim must be a pair \(low, high\) of finite numbers with low < high"),
])
def test_grid_checks_its_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Rosenbrock().grid(**kwargs)


def test_grid_accepts_numpy_scalars():
    gx, gy, gz = Rosenbrock().grid(np.int64(5), xlim=(np.float32(-1.0), 1.0))
    assert gx.shape == (5, 5) and gx[0, 0] == -1.0
