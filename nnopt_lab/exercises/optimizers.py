r"""Self-checks for chapters/04_3_optimizers.ipynb: Nesterov momentum, the Adam update,
gradient clipping by global norm, and a whole AdamW optimizer written as an Optimizer subclass.

Each checker runs the learner's function for a few steps on fixed inputs, compares it with the
workbook's optimizer (which the tests hold equal to torch.optim / torch.nn.utils to 1e-10) and,
when it differs, replays the *usual mistakes* to say which one was made (e.g. "no bias
correction", "heavy-ball instead of Nesterov"), else where the first difference appears.

See: chapters/04_3_optimizers.ipynb (seed §3.3.3)
"""
from __future__ import annotations

from typing import Any, Callable

from .. import backend as B
from .checks import ExerciseFailed, as_float64
from ..nn.layers import Parameter
from ..training.clipping import clip_grad_norm
from ..training.optim import SGD, Adam, AdamW, Optimizer
from . import checks

__all__ = ["check_adam_step", "check_nesterov_step", "check_clip_by_global_norm", "check_adamw_optimizer"]

RTOL = 1e-6


def _close(a: Any, b: Any) -> bool:
    """Same shape and |a - b| <= 1e-12 + 1e-6 |b| everywhere (nan never matches)."""
    a, b = B.to_numpy(a), B.to_numpy(b)
    if tuple(a.shape) != tuple(b.shape):
        return False
    return bool(((abs(a - b) <= 1e-12 + RTOL * abs(b))).all())


def _problem(backend, n: int = 6):
    """A fixed start point and a gradient oracle g(p) = H p - c + noise_t (varies per step)."""
    b = B.get_backend("numpy", "float64") if backend is None else B.get_backend(backend)
    gen = B.generator(2024)
    p0 = B.to_backend(gen.standard_normal(n), b)
    h = B.to_backend(gen.uniform(0.5, 3.0, n), b)
    c = B.to_backend(gen.standard_normal(n), b)
    noise = [B.to_backend(0.3 * gen.standard_normal(n), b) for _ in range(8)]
    return p0, (lambda p, t: h * p - c + noise[t % len(noise)])


def _run_learner(name: str, fn: Callable, p0, grad, steps: int, init_state, call) -> list:
    """Outputs of the learner's function per step, or AssertionError on a malformed return."""
    p, state, out = p0, init_state, []
    for t in range(1, steps + 1):
        g = grad(p, t)
        res = checks.call(name, call, fn, p, g, state, t)
        if not isinstance(res, tuple):
            raise ExerciseFailed(f"✗ {name} must return a tuple, got {type(res).__name__}")
        p, state = res[0], res[1:] if len(res) > 2 else res[1]
        if tuple(p.shape) != tuple(p0.shape):
            raise ExerciseFailed(f"✗ {name} returned a parameter of shape {tuple(p.shape)}, "
                                 f"expected {tuple(p0.shape)}")
        out.append(res)
    return out


def _diagnose(name: str, learner: list, reference: list, variants: dict, labels: tuple) -> None:
    """Print ✓ when learner == reference; else raise naming the matching mistake or the first
    step and output that differs."""
    if all(all(_close(a, b) for a, b in zip(x, y)) for x, y in zip(learner, reference)):
        print(f"✓ {name} matches the reference over {len(reference)} steps")
        return
    for t, x in enumerate(learner, start=1):
        if not bool((abs(B.to_numpy(x[0])) < float("inf")).all()):
            raise ExerciseFailed(
                f"✗ {name}: the parameter became nan/inf at step {t}. A square root of a negative "
                f"number or a division by zero? (Adam's v averages the SQUARED gradient g², so it "
                f"is never negative, and ε keeps the denominator away from 0.)")
    for mistake, outs in variants.items():
        if all(_close(x[0], y[0]) for x, y in zip(learner, outs)):
            raise ExerciseFailed(f"✗ {name}: {mistake}")
    for t, (x, y) in enumerate(zip(learner, reference), start=1):
        for label, a, b in zip(labels, x, y):
            if not _close(a, b):
                raise ExerciseFailed(f"✗ {name}: {label} is wrong from step {t} on ({_difference(a, b)})")
    raise ExerciseFailed(f"✗ {name} differs from the reference")  # pragma: no cover


def _difference(got: Any, want: Any) -> str:
    """Where ``got`` differs from ``want``, in one short phrase (no whole arrays)."""
    a, b = as_float64(got, "the answer"), B.to_numpy(want).astype("float64")
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(a.shape)}, expected {tuple(b.shape)}"
    err = abs(a - b).reshape(-1)
    i = int(err.argmax())
    return (f"max |diff| {float(err[i]):.3g} at flat index {i}: yours {float(a.reshape(-1)[i]):.6g}, "
            f"expected {float(b.reshape(-1)[i]):.6g}")


# ----------------------------------------------------------------------------- Nesterov
def _nesterov_reference(p0, grad, steps, lr, momentum):
    p = Parameter(B.namespace(p0).asarray(p0, copy=True))
    opt = SGD([p], lr=lr, momentum=momentum, nesterov=True)
    out = []
    for t in range(1, steps + 1):
        p.grad = grad(p.data, t)
        opt.step()
        out.append((B.namespace(p0).asarray(p.data, copy=True), opt.state[0]["momentum_buffer"] * 1.0))
    return out


def _nesterov_variant(rule):
    def step(p, g, buf, lr, momentum):
        buf = g if buf is None else rule["buffer"](buf, g, momentum)
        return p - lr * rule["direction"](buf, g, momentum), buf
    return step


_NESTEROV_MISTAKES = {
    "this is plain (heavy-ball) momentum, θ ← θ − η·b. Nesterov steps along the look-ahead "
    "direction g + μ·b, not along b":
        dict(buffer=lambda b, g, m: m * b + g, direction=lambda b, g, m: b),
    "the look-ahead has the wrong sign: the direction is g + μ·b, not g − μ·b":
        dict(buffer=lambda b, g, m: m * b + g, direction=lambda b, g, m: g - m * b),
    "the buffer is an average b ← μ·b + (1−μ)·g (dampening = μ); torch's Nesterov needs "
    "dampening 0: b ← μ·b + g":
        dict(buffer=lambda b, g, m: m * b + (1 - m) * g, direction=lambda b, g, m: g + m * b),
    "the direction should be g + μ·b (the buffer already holds g): you used μ·b alone":
        dict(buffer=lambda b, g, m: m * b + g, direction=lambda b, g, m: m * b),
}


def check_nesterov_step(nesterov_step: Callable, backend=None, lr: float = 0.05,
                        momentum: float = 0.9, steps: int = 6) -> None:
    r"""Check ``nesterov_step(p, g, buf, lr, momentum) -> (p_new, buf_new)`` against
    ``SGD(nesterov=True)`` (torch's rule: :math:`b_1 = g_1`, :math:`b_t = \mu b_{t-1} + g_t`,
    :math:`\theta \leftarrow \theta - \eta (g_t + \mu b_t)`). ``buf`` is None on the first step.

    Prints ✓ or raises AssertionError saying what is wrong.

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3)
    """
    checks.require_function("nesterov_step", nesterov_step)
    p0, grad = _problem(backend)
    call = (lambda fn, p, g, buf, t: fn(p, g, buf, lr, momentum))
    learner = _run_learner("nesterov_step", nesterov_step, p0, grad, steps, None, call)
    variants = {m: _run_learner("variant", _nesterov_variant(rule), p0, grad, steps, None, call)
                for m, rule in _NESTEROV_MISTAKES.items()}
    _diagnose("nesterov_step", learner, _nesterov_reference(p0, grad, steps, lr, momentum), variants,
              ("the parameter", "the momentum buffer"))


# ----------------------------------------------------------------------------- Adam
def _adam_reference(p0, grad, steps, lr, beta1, beta2, eps):
    xp = B.namespace(p0)
    p = Parameter(xp.asarray(p0, copy=True))
    opt = Adam([p], lr=lr, betas=(beta1, beta2), eps=eps)
    out = []
    for t in range(1, steps + 1):
        p.grad = grad(p.data, t)
        opt.step()
        s = opt.state[0]
        out.append((xp.asarray(p.data, copy=True), s["exp_avg"] * 1.0, s["exp_avg_sq"] * 1.0))
    return out


def _adam_variant(m_rule, v_rule, correct_m=True, correct_v=True, denom="sqrt+eps", sign=-1.0):
    def step(p, g, m, v, t, lr, beta1, beta2, eps):
        m, v = m_rule(m, g, beta1), v_rule(v, g, beta2)
        m_hat = m / (1 - beta1 ** t) if correct_m else m
        v_hat = v / (1 - beta2 ** t) if correct_v else v
        d = {"sqrt+eps": lambda: v_hat ** 0.5 + eps, "sqrt(v+eps)": lambda: (v_hat + eps) ** 0.5,
             "no sqrt": lambda: v_hat + eps}[denom]()
        return p + sign * lr * m_hat / d, m, v
    return step


_M = lambda m, g, b1: b1 * m + (1 - b1) * g             # noqa: E731
_V = lambda v, g, b2: b2 * v + (1 - b2) * g * g          # noqa: E731
_ADAM_MISTAKES = {
    "no bias correction: divide m by (1 − β1^t) and v by (1 − β2^t) before the step "
    "(early steps are far too small without it, since m and v start at 0)":
        _adam_variant(_M, _V, False, False),
    "bias correction only on m: v̂ = v / (1 − β2^t) is missing": _adam_variant(_M, _V, True, False),
    "bias correction only on v: m̂ = m / (1 − β1^t) is missing": _adam_variant(_M, _V, False, True),
    "the first moment mixes the betas the wrong way round: m ← β1·m + (1−β1)·g":
        _adam_variant(lambda m, g, b1: (1 - b1) * m + b1 * g, _V),
    "the second moment mixes the betas the wrong way round: v ← β2·v + (1−β2)·g²":
        _adam_variant(_M, lambda v, g, b2: (1 - b2) * v + b2 * g * g),
    "the step divides by v̂ + ε; it should divide by √v̂ + ε": _adam_variant(_M, _V, denom="no sqrt"),
    "ε goes outside the square root: √v̂ + ε, not √(v̂ + ε)": _adam_variant(_M, _V, denom="sqrt(v+eps)"),
    "the sign is flipped: Adam moves AGAINST the gradient, θ ← θ − η·m̂/(√v̂ + ε)":
        _adam_variant(_M, _V, sign=1.0),
}


def check_adam_step(adam_step: Callable, backend=None, lr: float = 0.1, betas=(0.9, 0.999),
                    eps: float = 1e-8, steps: int = 6) -> None:
    r"""Check ``adam_step(p, g, m, v, t, lr, beta1, beta2, eps) -> (p_new, m_new, v_new)``
    (t = 1, 2, ...; m and v start at zeros) against :class:`~nnopt_lab.training.optim.Adam`,
    which equals ``torch.optim.Adam``.

    Prints ✓ or raises AssertionError naming the mistake (no bias correction, swapped betas,
    ε inside the root, missing square, flipped sign, ...).

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3)
    """
    checks.require_function("adam_step", adam_step)
    p0, grad = _problem(backend)
    xp = B.namespace(p0)
    beta1, beta2 = betas
    call = (lambda fn, p, g, mv, t: fn(p, g, mv[0], mv[1], t, lr, beta1, beta2, eps))
    zeros = (xp.zeros_like(p0), xp.zeros_like(p0))
    learner = _run_learner("adam_step", adam_step, p0, grad, steps, zeros, call)
    variants = {m: _run_learner("variant", v, p0, grad, steps, zeros, call) for m, v in _ADAM_MISTAKES.items()}
    reference = _adam_reference(p0, grad, steps, lr, beta1, beta2, eps)
    for k, (what, beta) in enumerate((("m", beta1), ("v", beta2)), start=1):
        if not _close(learner[0][k], reference[0][k]) and _close(learner[0][k], reference[0][k] / (1 - beta)):
            raise ExerciseFailed(
                f"✗ adam_step: the {what} you return is the bias-corrected {what}̂ = {what} / (1 − β^t) "
                f"(at step 1 the factor is 1/(1 − {beta:g}) = {1 / (1 - beta):.4g}): return the raw running "
                f"average {what} and divide only the copy used in the step")
    _diagnose("adam_step", learner, reference, variants,
              ("the parameter", "m (first moment)", "v (second moment)"))


# ----------------------------------------------------------------------------- clipping
def _clip_variant(kind):
    def clip(grads, max_norm):
        if kind == "per-tensor":
            return [g * min(1.0, max_norm / (B.float_of(_norm(g)) + 1e-6)) for g in grads]
        total = sum(B.float_of(_norm(g)) ** 2 for g in grads)
        total = total if kind == "squared" else total ** 0.5
        coef = max_norm / (total + 1e-6)
        return [g * (coef if kind == "always" else min(1.0, coef)) for g in grads]
    return clip


def _norm(g):
    xp = B.namespace(g)
    return xp.sqrt(xp.sum(g * g))


def check_clip_by_global_norm(clip: Callable, backend=None) -> None:
    r"""Check ``clip(grads, max_norm) -> list of clipped grads`` against
    :func:`~nnopt_lab.training.clipping.clip_grad_norm` (= ``torch.nn.utils.clip_grad_norm_``):
    :math:`g_k \leftarrow g_k \min(1, c / (\|g\|_2 + 10^{-6}))` with :math:`\|g\|_2` the norm of
    ALL gradients together. Cases: a large gradient (clipped) and a small one (left alone).

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3)
    """
    checks.require_function("clip", clip)
    b = B.get_backend("numpy", "float64") if backend is None else B.get_backend(backend)
    gen = B.generator(7)
    mistakes = {
        "each tensor is clipped on its own; clip by the norm of ALL gradients together, so their "
        "directions stay as they were": "per-tensor",
        "small gradients must be left alone: the factor is min(1, c / ‖g‖), never above 1": "always",
        "the total norm is √(Σ ‖g_k‖²): you used the squared norm": "squared",
    }
    for scale, max_norm in ((5.0, 1.0), (0.01, 1.0)):
        shapes = ((3, 4), (4,), (2, 2))
        grads = [B.to_backend(scale * gen.standard_normal(s), b) for s in shapes]
        params = []
        for g in grads:
            params.append(Parameter(B.namespace(g).zeros_like(g)))
            params[-1].grad = g * 1.0
        clip_grad_norm(params, max_norm)
        expected = [p.grad for p in params]
        got = checks.call("clip", clip, [g * 1.0 for g in grads], max_norm)
        if not isinstance(got, (list, tuple)) or len(got) != len(grads):
            raise ExerciseFailed(f"✗ clip must return a list of {len(grads)} arrays, got {type(got).__name__}")
        if all(_close(a, e) for a, e in zip(got, expected)):
            continue
        for mistake, kind in mistakes.items():
            if all(_close(a, e) for a, e in zip(got, _clip_variant(kind)([g * 1.0 for g in grads], max_norm))):
                raise ExerciseFailed(f"✗ clip: {mistake}")
        case = "large gradients (should be scaled down)" if scale > 1 else "small gradients (should stay)"
        worst = max(range(len(got)), key=lambda k: float(abs(as_float64(got[k], "clip") - B.to_numpy(expected[k])).max())
                    if tuple(B.to_numpy(got[k]).shape) == tuple(expected[k].shape) else float("inf"))
        raise ExerciseFailed(f"✗ clip is wrong on {case}: gradient {worst}: "
                             f"{_difference(got[worst], expected[worst])}")
    print("✓ clip matches torch.nn.utils.clip_grad_norm_'s rule on large and small gradients")


# ----------------------------------------------------------------------------- AdamW, a whole optimizer
class _AdamWVariant(Optimizer):
    """AdamW with one of the usual mistakes switched on (for naming the learner's)."""

    def __init__(self, params, lr, betas, eps, weight_decay, mistake):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay, self.mistake = betas, eps, weight_decay, mistake

    def update(self, p, grad, state):
        xp = B.namespace(p.data)
        if not state:
            state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, xp.zeros_like(p.data), xp.zeros_like(p.data)
        state["step"] = t = state["step"] + 1
        beta1, beta2 = self.betas
        lr, wd, kind = self.lr, self.weight_decay, self.mistake
        if kind == "coupled":
            grad = grad + wd * p.data
        elif kind == "decay without lr":
            p.data *= 1.0 - wd
        elif kind != "decay after":
            p.data *= 1.0 - lr * wd
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * grad * grad
        m_hat = m if kind == "no bias correction" else m / (1.0 - beta1 ** t)
        v_hat = v if kind == "no bias correction" else v / (1.0 - beta2 ** t)
        step = lr * m_hat / (xp.sqrt(v_hat) + self.eps)
        if kind == "decay after":
            p.data -= step
            p.data *= 1.0 - lr * wd
        else:
            p.data -= step


_ADAMW_MISTAKES = {
    "coupled": "this is Adam with L2 regularisation: you added λ·θ to the gradient, where Adam's division "
               "by √v̂ rescales it. AdamW DECOUPLES the decay: θ ← (1 − η·λ)·θ, then the Adam step "
               "on the plain gradient",
    "decay without lr": "the decay factor is (1 − η·λ), not (1 − λ): torch's AdamW multiplies the weight "
                        "decay by the learning rate",
    "decay after": "the decay comes BEFORE the Adam step (θ ← (1 − η·λ)·θ on the old weights), not after it",
    "no bias correction": "no bias correction: divide m by (1 − β1^t) and v by (1 − β2^t) before the step",
}


def _adamw_problem(backend):
    b = B.get_backend("numpy", "float64") if backend is None else B.get_backend(backend)
    gen = B.generator(31)
    shapes = ((3, 4), (4,))
    start = [B.to_backend(gen.standard_normal(s), b) for s in shapes]
    curv = [B.to_backend(gen.uniform(0.5, 3.0, s), b) for s in shapes]
    noise = [[B.to_backend(0.3 * gen.standard_normal(s), b) for s in shapes] for _ in range(5)]
    return start, (lambda k, p, t: curv[k] * p - 1.0 + noise[t % len(noise)][k])


def _adamw_run(make, start, grad, steps):
    """Weights after each step of the optimizer ``make(params)`` on the fixed problem (copies)."""
    params = [Parameter(B.namespace(s).asarray(s, copy=True)) for s in start]
    opt = make(params)
    out = []
    for t in range(1, steps + 1):
        for k, p in enumerate(params):
            p.grad = grad(k, p.data, t)
        opt.step()
        out.append([B.to_numpy(p.data).astype("float64").copy() for p in params])
    return out


def check_adamw_optimizer(optimizer_class: Callable, backend=None, lr: float = 0.05, betas=(0.9, 0.999),
                          eps: float = 1e-8, weight_decay: float = 0.1, steps: int = 10) -> None:
    r"""Check a learner's ``optimizer_class(params, lr, betas, eps, weight_decay)`` -- an
    :class:`~nnopt_lab.training.optim.Optimizer` subclass whose ``update(p, grad, state)`` does
    one AdamW step -- against :class:`~nnopt_lab.training.optim.AdamW` (= ``torch.optim.AdamW``):

    .. math:: \theta \leftarrow (1-\eta\lambda)\,\theta,\quad
              \theta \leftarrow \theta - \eta\,\frac{\hat m_t}{\sqrt{\hat v_t}+\epsilon}

    on two parameter tensors (shapes (3, 4) and (4,)) with fixed gradients, for ``steps`` steps.
    Prints ✓ or raises :class:`ExerciseFailed` naming the mistake (L2 instead of decoupled decay,
    decay without η, decay after the step, no bias correction) or the first step that differs.

    See: chapters/04_3_optimizers.ipynb (seed §3.3.3.3)
    """
    name = "MyAdamW"
    checks.require_function(name, optimizer_class)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
        raise ExerciseFailed(f"✗ {name} must be a class derived from Optimizer, got {optimizer_class!r}")
    start, grad = _adamw_problem(backend)
    learner = checks.call(name, _adamw_run, lambda ps: optimizer_class(ps, lr, betas, eps, weight_decay),
                          start, grad, steps)
    want = _adamw_run(lambda ps: AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
                      start, grad, steps)

    def same(a, b):
        return all(_close(x, y) for x, y in zip(a, b))

    if all(same(a, b) for a, b in zip(learner, want)):
        print(f"✓ {name} matches torch.optim.AdamW's rule (nnopt_lab.training.AdamW) over {steps} steps "
              f"on 2 tensors")
        return
    for t, weights in enumerate(learner, start=1):
        if not all(bool((abs(w) < float("inf")).all()) for w in weights):
            raise ExerciseFailed(f"✗ {name}: the weights became nan/inf at step {t} (a division by zero? "
                                 f"ε belongs outside the square root, √v̂ + ε)")
    if same(learner[0], [B.to_numpy(s).astype("float64") for s in start]):
        raise ExerciseFailed(f"✗ {name}: the weights did not change: update must change p.data in place "
                             f"(p.data -= ...), not a local copy")
    for kind, message in _ADAMW_MISTAKES.items():
        variant = _adamw_run(lambda ps: _AdamWVariant(ps, lr, betas, eps, weight_decay, kind), start, grad, steps)
        if all(same(a, b) for a, b in zip(learner, variant)):
            raise ExerciseFailed(f"✗ {name}: {message}")
    t = next(t for t, (a, b) in enumerate(zip(learner, want), start=1) if not same(a, b))
    k = next(k for k, (x, y) in enumerate(zip(learner[t - 1], want[t - 1])) if not _close(x, y))
    diff = float(abs(learner[t - 1][k] - want[t - 1][k]).max())
    raise ExerciseFailed(f"✗ {name}: the weights differ from AdamW's from step {t} on (tensor {k}, "
                         f"max |diff| {diff:.3g})")
