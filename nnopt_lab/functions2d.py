r"""Two-dimensional test functions for watching optimizers move (seed §2.3.3, §3.3.3).

Each function has a hand-written value and gradient that work elementwise on Python floats,
numpy arrays and torch tensors (they are polynomials), its known minima, and a plotting window:

* :class:`Rosenbrock`   -- a curved, flat-bottomed valley; minimum (a, a²), value 0;
* :class:`Beale`        -- steep walls and flat plateaus; minimum (3, 0.5), value 0;
* :class:`Saddle`       -- :math:`x^2 - y^2`, a saddle point at the origin and no minimum;
* :class:`IllConditionedQuadratic` -- a (rotated) elliptic bowl with condition number κ.

:class:`Param2D` turns a point into a :class:`~nnopt_lab.nn.Parameter` inside a tiny Module,
so every optimizer of :mod:`nnopt_lab.training.optim` runs on these functions unchanged, and
:func:`run_optimizer` records the path.

See: chapters/04_3_optimizers.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Callable

from . import backend as B
from .nn.layers import Module, Parameter
from .validation import as_float, check_callable, check_int, check_number

__all__ = ["Function2D", "Rosenbrock", "Beale", "Saddle", "IllConditionedQuadratic", "FUNCTIONS",
           "Param2D", "run_optimizer"]


MAX_STEPS = 100_000   # longest path run_optimizer draws (about a few seconds)


def _window(name: str, value: Any, default: tuple) -> tuple[float, float]:
    """``value`` (default ``default``) as a (low, high) pair of finite Python floats with low < high."""
    if value is None:
        return default
    pair = tuple(map(as_float, value)) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or None in pair or not all(math.isfinite(v) for v in pair) or not pair[0] < pair[1]:
        raise ValueError(f"{name} must be a pair (low, high) of finite numbers with low < high, got {value!r}")
    return pair


def _start(start: Any) -> tuple[float, float]:
    """``start`` as two finite Python floats (x, y)."""
    values = tuple(map(as_float, start)) if isinstance(start, (tuple, list)) else ()
    if len(values) != 2 or None in values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"start must be two finite numbers (x, y), got {start!r}")
    return values


class Function2D:
    """Base class: ``f(x, y)``, ``grad(x, y)``, known minima and a plotting window.

    Attributes
    ----------
    name : str
    minima : tuple of (x, y)
        The global minimizers (empty when the function is unbounded below).
    min_value : float or None
        f at the minima.
    stationary : tuple of (x, y)
        Other points where the gradient vanishes (saddles), for the plots.
    xlim, ylim : (float, float)
        A window that shows the interesting part.
    start : (float, float)
        A classic starting point.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    name = "function"
    minima: tuple = ()
    min_value: float | None = None
    stationary: tuple = ()
    xlim = (-2.0, 2.0)
    ylim = (-2.0, 2.0)
    start = (-1.0, 1.0)
    log_levels = True

    def value(self, x: Any, y: Any) -> Any:  # pragma: no cover - abstract
        """f(x, y), elementwise."""
        raise NotImplementedError

    def grad(self, x: Any, y: Any) -> tuple[Any, Any]:  # pragma: no cover - abstract
        """(∂f/∂x, ∂f/∂y), elementwise."""
        raise NotImplementedError

    def __call__(self, x: Any, y: Any) -> Any:
        return self.value(x, y)

    def grid(self, n: int = 200, xlim=None, ylim=None):
        """(X, Y, Z) numpy float64 grids of shape (n, n) over the window, for contour plots.

        ``n`` in [2, 4096]; ``xlim``, ``ylim``: (low, high) pairs of finite numbers, default the
        function's window.
        """
        n = check_int("n", n, 2, 4096)
        (x0, x1), (y0, y1) = _window("xlim", xlim, self.xlim), _window("ylim", ylim, self.ylim)
        xp = B.get_backend("numpy", "float64").xp
        xs = xp.linspace(x0, x1, n, dtype=xp.float64)
        ys = xp.linspace(y0, y1, n, dtype=xp.float64)
        gx, gy = xp.meshgrid(xs, ys)
        return gx, gy, self.value(gx, gy)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Rosenbrock(Function2D):
    r"""Rosenbrock's banana valley.

    .. math::

        f(x, y) = (a - x)^2 + b\,(y - x^2)^2, \qquad
        \nabla f = \big(-2(a - x) - 4 b x (y - x^2),\; 2 b (y - x^2)\big)

    Minimum :math:`(a, a^2)` with value 0. Defaults a = 1, b = 100.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    name = "Rosenbrock"
    xlim, ylim, start = (-2.0, 2.0), (-1.0, 3.0), (-1.5, 2.0)

    def __init__(self, a: float = 1.0, b: float = 100.0):
        self.a = check_number("a", a, -1e6, 1e6)
        self.b = check_number("b", b, 0.0, 1e6, low_open=True)
        self.minima, self.min_value = ((self.a, self.a ** 2),), 0.0

    def value(self, x, y):
        return (self.a - x) ** 2 + self.b * (y - x * x) ** 2

    def grad(self, x, y):
        r = y - x * x
        return -2.0 * (self.a - x) - 4.0 * self.b * x * r, 2.0 * self.b * r

    def __repr__(self) -> str:
        return f"Rosenbrock(a={self.a:g}, b={self.b:g})"


class Beale(Function2D):
    r"""Beale's function: flat plateaus between steep walls.

    .. math::

        f(x, y) = \sum_{k=1}^{3} \big(c_k - x + x y^k\big)^2,\quad c = (1.5, 2.25, 2.625), \qquad
        \frac{\partial f}{\partial x} = \sum_k 2 r_k (y^k - 1),\;
        \frac{\partial f}{\partial y} = \sum_k 2 r_k\, k\, x\, y^{k-1}

    with :math:`r_k = c_k - x + x y^k`. Minimum (3, 0.5) with value 0.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    name = "Beale"
    minima, min_value = ((3.0, 0.5),), 0.0
    xlim, ylim, start = (-4.5, 4.5), (-4.5, 4.5), (1.0, 1.5)
    _C = (1.5, 2.25, 2.625)

    def value(self, x, y):
        y2 = y * y
        return ((self._C[0] - x + x * y) ** 2 + (self._C[1] - x + x * y2) ** 2
                + (self._C[2] - x + x * y2 * y) ** 2)

    def grad(self, x, y):
        y2 = y * y
        y3 = y2 * y
        r1, r2, r3 = self._C[0] - x + x * y, self._C[1] - x + x * y2, self._C[2] - x + x * y3
        gx = 2.0 * (r1 * (y - 1.0) + r2 * (y2 - 1.0) + r3 * (y3 - 1.0))
        gy = 2.0 * x * (r1 + 2.0 * r2 * y + 3.0 * r3 * y2)
        return gx, gy


class Saddle(Function2D):
    r"""The saddle :math:`f(x, y) = x^2 - y^2`, :math:`\nabla f = (2x, -2y)`.

    The origin is a stationary point but no minimum: f is unbounded below along y. Started
    almost on the x axis, plain gradient descent crawls away from the saddle only as fast as
    the tiny y offset grows (×(1 + 2η) per step); momentum and adaptive methods escape sooner.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    name = "Saddle x²−y²"
    minima, min_value, stationary = (), None, ((0.0, 0.0),)
    xlim, ylim, start = (-1.5, 1.5), (-1.5, 1.5), (-1.0, 1e-3)
    log_levels = False

    def value(self, x, y):
        return x * x - y * y

    def grad(self, x, y):
        return 2.0 * x, -2.0 * y


class IllConditionedQuadratic(Function2D):
    r"""An elliptic bowl with condition number κ, optionally rotated by ``angle`` (radians).

    .. math::

        f(x, y) = \tfrac12 \big(u^2 + \kappa\, v^2\big),\quad
        u = x\cos\phi + y\sin\phi,\; v = -x\sin\phi + y\cos\phi, \qquad
        \nabla f = \big(u\cos\phi - \kappa v \sin\phi,\; u\sin\phi + \kappa v\cos\phi\big)

    The Hessian has eigenvalues 1 and κ: gradient descent is stable only for η < 2/κ and then
    needs about κ steps along the flat direction. Minimum (0, 0) with value 0. With
    ``angle = 0`` the axes are the eigenvectors, which per-coordinate (diagonal) methods such as
    Adam exploit; a rotated bowl takes that advantage away.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    name = "ill-conditioned bowl"
    minima, min_value = ((0.0, 0.0),), 0.0
    xlim, ylim, start = (-5.0, 5.0), (-3.0, 3.0), (-4.5, 2.0)

    def __init__(self, condition: float = 10.0, angle: float = 0.0):
        self.condition = check_number("condition", condition, 1.0, 1e12)
        self.angle = check_number("angle", angle)
        self._c, self._s = math.cos(self.angle), math.sin(self.angle)
        self.name = f"ill-conditioned bowl (κ = {self.condition:g})"

    def _uv(self, x, y):
        return self._c * x + self._s * y, -self._s * x + self._c * y

    def value(self, x, y):
        u, v = self._uv(x, y)
        return 0.5 * (u * u + self.condition * v * v)

    def grad(self, x, y):
        u, v = self._uv(x, y)
        kv = self.condition * v
        return u * self._c - kv * self._s, u * self._s + kv * self._c

    def __repr__(self) -> str:
        return f"IllConditionedQuadratic(condition={self.condition:g}, angle={self.angle:g})"


#: The test functions by name, each a factory taking no arguments.
FUNCTIONS: dict[str, Callable[[], Function2D]] = {
    "rosenbrock": Rosenbrock, "beale": Beale, "saddle": Saddle,
    "ill-conditioned": IllConditionedQuadratic,
}


class Param2D(Module):
    """A point (x, y) as the single :class:`Parameter` ``xy`` (shape (2,)) of a Module.

    ``forward()`` gives f at the point (0-d array); ``backward()`` writes its gradient into
    ``xy.grad``, so any optimizer can minimise ``fn``:

    >>> m = Param2D(Rosenbrock(), (-1.5, 2.0)); opt = Adam(m, lr=0.05)   # doctest: +SKIP
    >>> for _ in range(100): m.backward(); opt.step()                     # doctest: +SKIP

    Parameters
    ----------
    fn : Function2D
    start : (float, float)
    backend : str or Backend, default numpy float64

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """

    def __init__(self, fn: Function2D, start, backend=None):
        super().__init__()
        if not isinstance(fn, Function2D):
            raise TypeError(f"fn must be a Function2D, got {type(fn).__name__}")
        start = _start(start)
        self.fn = fn
        b = B.get_backend("numpy", "float64") if backend is None else B.get_backend(backend)
        self._params["xy"] = Parameter(B.to_backend(list(start), b))

    @property
    def xy(self) -> Parameter:
        return self._params["xy"]

    def forward(self, x: Any = None) -> Any:
        """f at the current point (0-d array)."""
        p = self.xy.data
        return self.fn.value(p[0], p[1])

    def backward(self, dout: Any = 1.0, need_dx: bool = True) -> None:
        """Write ``dout · ∇f`` at the current point into ``xy.grad``."""
        p = self.xy.data
        gx, gy = self.fn.grad(p[0], p[1])
        self.xy.grad = B.namespace(p).stack([gx, gy]) * dout


def run_optimizer(opt_factory: Callable, fn: Function2D, start, steps: int, backend=None,
                  escape: float = 1e6):
    """Run an optimizer on a 2-D function and return its path.

    Parameters
    ----------
    opt_factory : callable
        ``opt_factory(params) -> Optimizer``, e.g. ``lambda p: Adam(p, lr=0.05)``.
    fn : Function2D
    start : (float, float)
    steps : int in [0, 100000]
    backend : str or Backend, default numpy float64
    escape : float > 0
        Stop when |x| or |y| exceeds it (divergence); the remaining rows are nan, the
        documented marker of a diverged run (plots leave them out).

    Returns
    -------
    numpy array, shape (steps + 1, 2), float64
        Row 0 is ``start``, row k the point after k steps.

    See: chapters/04_3_optimizers.ipynb (seed §2.3.3, §3.3.3)
    """
    check_callable("opt_factory", opt_factory)
    steps = check_int("steps", steps, 0, MAX_STEPS)
    escape = check_number("escape", escape, 0.0, low_open=True, finite=False)
    model = Param2D(fn, start, backend)
    opt = opt_factory(model.parameters())
    p = model.xy
    xp = B.namespace(p.data)
    path = [xp.asarray(p.data, copy=True)]
    for _ in range(steps):
        model.backward()
        opt.step()
        path.append(xp.asarray(p.data, copy=True))
        if not B.float_of(xp.max(xp.abs(p.data))) <= escape:       # also catches nan
            path += [p.data * float("nan")] * (steps + 1 - len(path))
            break
    return B.to_numpy(xp.astype(xp.stack(path), xp.float64))
