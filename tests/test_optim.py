"""The optimizer family against torch.optim: same trajectories for hundreds of steps.

Problem: softmax regression (a Linear(5, 3) layer + cross-entropy on 32 fixed samples), our
layer and backward against torch.nn.functional + autograd. Whole trajectories (weights after
every step) are compared, float64 at rtol 1e-10, float32 at rtol 1e-4.
"""
import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.utils.prune

from nnopt_lab import backend as B
from nnopt_lab.exercises import optimizers as ex
from nnopt_lab.functions2d import Rosenbrock, run_optimizer
from nnopt_lab.nn import CrossEntropyLoss, Linear
from nnopt_lab.testing import compare
from nnopt_lab.training import fit
from nnopt_lab.training.optim import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop



STEPS = 500

# (name, torch.optim class name, kwargs) -- every option of every optimizer
CONFIGS = [
    ("sgd", "SGD", dict(lr=0.5)),
    ("sgd", "SGD", dict(lr=0.1, momentum=0.9)),
    ("sgd", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    ("sgd", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("sgd", "SGD", dict(lr=0.1, momentum=0.8, weight_decay=0.05)),
    ("sgd", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adagrad", "Adagrad", dict(lr=0.1)),
    ("adagrad", "Adagrad", dict(lr=0.5, lr_decay=0.01)),
    ("adagrad", "Adagrad", dict(lr=0.2, initial_accumulator_value=0.5, weight_decay=0.01, eps=1e-6)),
    ("rmsprop", "RMSprop", dict(lr=1e-3, alpha=0.999)),
    ("rmsprop", "RMSprop", dict(lr=1e-3, momentum=0.9)),
    ("rmsprop", "RMSprop", dict(lr=2e-3, centered=True)),
    ("rmsprop", "RMSprop", dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=0.01)),
    ("adam", "Adam", dict(lr=1e-2)),
    ("adam", "Adam", dict(lr=1e-2, amsgrad=True)),
    ("adam", "Adam", dict(lr=1e-2, weight_decay=0.05)),
    ("adam", "Adam", dict(lr=2e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01, amsgrad=True)),
    ("adamw", "AdamW", dict(lr=1e-2)),
    ("adamw", "AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]
CONFIG_IDS = [f"{n}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for n, _, kw in CONFIGS]

_G = np.random.default_rng(42)
X = _G.standard_normal((32, 5))
Y = (X @ _G.standard_normal((5, 3))).argmax(axis=1)       # separable: the loss keeps falling, the
W0 = _G.standard_normal((3, 5)) * 0.5                       # weights keep moving, no chaotic bounce
B0 = _G.standard_normal(3) * 0.5
MASK = (_G.random((3, 5)) > 0.4).astype(np.float64)


def _kw_key(kw):
    return tuple(sorted(kw.items()))


def _torch_softmax_regression_grads(x, onehot, w, b):
    """d(mean cross-entropy)/d(w, b) for logits x w^T + b (the autograd check of this formula is
    test_softmax_regression_gradient_is_autograds; writing it out keeps 500-step runs fast)."""
    d = (torch.softmax(x @ w.T + b, dim=1) - onehot) / x.shape[0]
    return d.T @ x, d.sum(0)


@functools.lru_cache(maxsize=None)
def torch_trajectory(cls_name, kw_key, steps, dtype="float64", masked=False, freeze_bias=False):
    """Weights after every step (steps+1, 18) of torch.optim.<cls_name>."""
    dt = getattr(torch, dtype)
    w = torch.tensor(W0 * MASK if masked else W0, dtype=dt, requires_grad=True)
    b = torch.tensor(B0, dtype=dt, requires_grad=not freeze_bias)
    x, onehot = torch.tensor(X, dtype=dt), torch.nn.functional.one_hot(torch.tensor(Y), 3).to(dt)
    params = [w] if freeze_bias else [w, b]
    opt = getattr(torch.optim, cls_name)(params, foreach=False, **dict(kw_key))
    mask = torch.tensor(MASK, dtype=dt)
    rows = [torch.cat([w.detach().flatten(), b.detach()])]
    with torch.no_grad():
        for _ in range(steps):
            w.grad, gb = _torch_softmax_regression_grads(x, onehot, w, b)
            if not freeze_bias:
                b.grad = gb
            if masked:
                w.grad *= mask
            opt.step()
            rows.append(torch.cat([w.flatten(), b]))
    return torch.stack(rows).numpy()


def test_softmax_regression_gradient_is_autograds():
    x, y = torch.tensor(X), torch.tensor(Y)
    w, b = torch.tensor(W0, requires_grad=True), torch.tensor(B0, requires_grad=True)
    torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, w, b), y).backward()
    gw, gb = _torch_softmax_regression_grads(x, torch.nn.functional.one_hot(y, 3).double(), w.detach(),
                                             b.detach())
    compare(gw, w.grad, "autograd", rtol=1e-12, atol=1e-15, quiet=True)
    compare(gb, b.grad, "autograd", rtol=1e-12, atol=1e-15, quiet=True)


def make_problem(be, masked=False):
    layer = Linear(5, 3, backend=be)
    layer.load_state_dict({"weight": W0 * MASK if masked else W0.copy(), "bias": B0.copy()})
    if masked:
        layer._params["weight"].mask = B.to_backend(MASK, be)
    return layer, B.to_backend(X, be), B.to_backend(Y, be)


def our_trajectory(name, kw, be, steps, masked=False, freeze_bias=False):
    layer, x, y = make_problem(be, masked)
    if freeze_bias:
        layer._params["bias"].requires_grad = False
    opt = OPTIMIZERS[name](layer, **kw)
    lossf = CrossEntropyLoss()
    xp = B.namespace(x)
    w, b = layer._params["weight"], layer._params["bias"]
    rows = [xp.concat([xp.reshape(w.data, (-1,)), b.data])]
    for _ in range(steps):
        lossf(layer.forward(x), y)
        layer.backward(lossf.backward())
        opt.step()
        rows.append(xp.concat([xp.reshape(w.data, (-1,)), b.data]))
    return B.to_numpy(xp.stack(rows)), opt


@pytest.mark.parametrize("name, ref, kw", CONFIGS, ids=CONFIG_IDS)
def test_trajectory_matches_torch_float64(name, ref, kw, be64):
    ours, _ = our_trajectory(name, kw, be64, STEPS)
    expected = torch_trajectory(ref, _kw_key(kw), STEPS)
    assert np.abs(expected[-1] - expected[0]).max() > 0.05      # the weights really moved
    compare(ours, expected, f"torch.optim.{ref}", rtol=1e-10, atol=1e-12, quiet=True)


@pytest.mark.parametrize("name, ref, kw", [CONFIGS[i] for i in (3, 8, 12, 16, 18)],
                         ids=[CONFIG_IDS[i] for i in (3, 8, 12, 16, 18)])
def test_trajectory_matches_torch_float32(name, ref, kw, be32):
    ours, _ = our_trajectory(name, kw, be32, 100)
    assert ours.dtype == np.float32
    compare(ours, torch_trajectory(ref, _kw_key(kw), 100, "float32"), f"torch.optim.{ref}",
            rtol=1e-4, atol=1e-5, quiet=True)


@pytest.mark.parametrize("name, ref, kw", [CONFIGS[i] for i in (5, 8, 12, 16, 18)],
                         ids=[CONFIG_IDS[i] for i in (5, 8, 12, 16, 18)])
def test_masked_weights_stay_zero_and_match_torch(name, ref, kw, backend_name):
    be = B.get_backend(backend_name, "float64")
    ours, opt = our_trajectory(name, kw, be, 200, masked=True)
    compare(ours, torch_trajectory(ref, _kw_key(kw), 200, masked=True), f"torch.optim.{ref} (masked grad)",
            rtol=1e-10, atol=1e-12, quiet=True)
    pruned = np.concatenate([MASK.ravel() == 0, np.zeros(3, bool)])
    assert (ours[:, pruned] == 0).all()
    for key, value in opt.state[0].items():
        if hasattr(value, "shape"):
            assert (B.to_numpy(value)[MASK == 0] == 0).all(), key


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_mask_set_mid_training_clears_state(name, backend_name):
    be = B.get_backend(backend_name, "float64")
    layer, x, y = make_problem(be)
    kw = {"sgd": dict(lr=0.1, momentum=0.9), "rmsprop": dict(momentum=0.9, centered=True),
          "adam": dict(amsgrad=True)}.get(name, {})
    opt = OPTIMIZERS[name](layer, **kw)
    lossf = CrossEntropyLoss()
    w = layer._params["weight"]
    for step in range(40):
        if step == 20:                                  # prune mid-training (state already filled)
            w.mask = B.to_backend(MASK, be)
            w.data *= w.mask
        lossf(layer.forward(x), y)
        layer.backward(lossf.backward())
        opt.step()
    assert (B.to_numpy(w.data)[MASK == 0] == 0).all()
    arrays = [v for v in opt.state[0].values() if hasattr(v, "shape")]
    assert arrays
    for v in arrays:
        assert (B.to_numpy(v)[MASK == 0] == 0).all()


@pytest.mark.parametrize("name, ref, kw", [CONFIGS[i] for i in (4, 8, 13, 18)],
                         ids=[CONFIG_IDS[i] for i in (4, 8, 13, 18)])
def test_frozen_parameter_does_not_move(name, ref, kw, backend_name):
    be = B.get_backend(backend_name, "float64")
    ours, opt = our_trajectory(name, kw, be, 100, freeze_bias=True)
    np.testing.assert_array_equal(ours[:, -3:], np.tile(B0, (101, 1)))
    assert opt.state[1] == {}
    compare(ours, torch_trajectory(ref, _kw_key(kw), 100, freeze_bias=True), f"torch.optim.{ref} (frozen)",
            rtol=1e-10, atol=1e-12, quiet=True)


ROSENBROCK_RUNS = [(SGD, dict(lr=1e-3, momentum=0.9, nesterov=True)), (Adagrad, dict(lr=0.1)),
                   (RMSprop, dict(lr=1e-3, centered=True)), (Adam, dict(lr=1e-2, amsgrad=True)),
                   (AdamW, dict(lr=1e-2))]


@functools.lru_cache(maxsize=None)
def torch_rosenbrock_path(i):
    cls, kw = ROSENBROCK_RUNS[i]
    p = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, cls.__name__)([p], foreach=False, **kw)
    ref = [p.detach().clone()]
    for _ in range(STEPS):
        opt.zero_grad()
        Rosenbrock().value(p[0], p[1]).backward()
        opt.step()
        ref.append(p.detach().clone())
    return torch.stack(ref).numpy()


@pytest.mark.parametrize("i", range(len(ROSENBROCK_RUNS)), ids=[c.__name__ for c, _ in ROSENBROCK_RUNS])
def test_rosenbrock_paths_match_torch(i, backend_name):
    """Every optimizer on the Rosenbrock valley (a hard, curved problem), 500 steps, via Param2D."""
    cls, kw = ROSENBROCK_RUNS[i]
    be = B.get_backend(backend_name, "float64")
    ours = run_optimizer(lambda p: cls(p, **kw), Rosenbrock(), (-1.5, 2.0), STEPS, backend=be)
    compare(ours, torch_rosenbrock_path(i), f"torch.optim.{cls.__name__}", rtol=1e-9, atol=1e-12, quiet=True)


@pytest.mark.parametrize("name, ref, kw", [CONFIGS[i] for i in (5, 8, 12, 16, 18)],
                         ids=[CONFIG_IDS[i] for i in (5, 8, 12, 16, 18)])
def test_state_dict_round_trip(name, ref, kw, backend_name):
    """Stop after 60 steps, save, build a fresh optimizer, load, go on: the same trajectory."""
    be = B.get_backend(backend_name, "float64")
    layer, x, y = make_problem(be)
    opt = OPTIMIZERS[name](layer, **kw)
    lossf = CrossEntropyLoss()

    def run(model, optimizer, steps):
        for _ in range(steps):
            lossf(model.forward(x), y)
            model.backward(lossf.backward())
            optimizer.step()

    run(layer, opt, 60)
    sd = opt.state_dict()
    saved = copy.deepcopy(sd)
    twin = Linear(5, 3, backend=be).load_state_dict({k: v * 1.0 for k, v in layer.state_dict().items()})
    run(layer, opt, 60)                                       # training on must not change sd
    for s, t in zip(sd["state"], saved["state"]):
        for k in s:
            np.testing.assert_array_equal(B.to_numpy(s[k]), B.to_numpy(t[k]))
    fresh = OPTIMIZERS[name](twin, lr=123.0)                  # settings come from the state dict
    fresh.load_state_dict(sd)
    assert fresh.hyperparameters() == opt.hyperparameters() and fresh.step_count == 60
    run(twin, fresh, 60)
    for k in ("weight", "bias"):
        np.testing.assert_array_equal(B.to_numpy(twin.state_dict()[k]), B.to_numpy(layer.state_dict()[k]))
    full = torch_trajectory(ref, _kw_key(kw), 120)
    compare(B.to_numpy(twin.state_dict()["bias"]), full[120, -3:], f"torch.optim.{ref}", rtol=1e-10,
            atol=1e-12, quiet=True)


def test_state_dict_moves_between_backends():
    np64, t64 = B.get_backend("numpy", "float64"), B.get_backend("torch-cpu", "float64")
    layer, x, y = make_problem(np64)
    opt = Adam(layer, lr=1e-2, amsgrad=True)
    lossf = CrossEntropyLoss()
    lossf(layer.forward(x), y)
    layer.backward(lossf.backward())
    opt.step()
    other = Linear(5, 3, backend=t64).load_state_dict(layer.state_dict())
    opt2 = Adam(other, lr=1e-2, amsgrad=True)
    opt2.load_state_dict(opt.state_dict())
    assert all(B.is_torch(v) for v in opt2.state[0].values() if hasattr(v, "shape"))
    assert opt2.state[0]["step"] == 1


def test_state_dict_of_another_kind_is_refused():
    layer, _, _ = make_problem(B.get_backend("numpy", "float64"))
    with pytest.raises(ValueError, match="another kind of optimizer"):
        SGD(layer, lr=0.1).load_state_dict(Adam(layer).state_dict())


def test_defaults_are_torchs():
    p = torch.zeros(2, requires_grad=True)
    layer, _, _ = make_problem(B.get_backend("numpy", "float64"))
    for name, cls in OPTIMIZERS.items():
        ref = getattr(torch.optim, {"sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad",
                                    "adam": "Adam", "adamw": "AdamW"}[name])([p]).defaults
        ours = cls(layer).hyperparameters()
        for key, value in ours.items():
            assert ref[key] == (tuple(value) if isinstance(value, tuple) else value), (name, key)


def test_plain_sgd_interface_unchanged(backend_name):
    be = B.get_backend(backend_name, "float64")
    layer, x, y = make_problem(be)
    opt = SGD(layer.parameters(), 0.1)
    assert isinstance(opt, Optimizer) and opt.hyperparameters()["lr"] == 0.1 and SGD(layer).lr == 1e-3
    w_before = B.to_numpy(layer._params["weight"].data).copy()
    lossf = CrossEntropyLoss()
    lossf(layer.forward(x), y)
    layer.backward(lossf.backward())
    grad = B.to_numpy(layer._params["weight"].grad).copy()
    opt.step()
    np.testing.assert_allclose(B.to_numpy(layer._params["weight"].data), w_before - 0.1 * grad,
                               rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(B.to_numpy(layer._params["weight"].grad), grad)   # grad untouched


def test_full_batch_gradient_descent_is_sgd_with_one_batch(backend_name):
    """fit(..., batch_size=N) is gradient descent: compare with torch.optim.SGD on the full set."""
    be = B.get_backend(backend_name, "float64")
    layer, x, y = make_problem(be)
    fit(layer, (x, y), epochs=30, batch_size=32, optimizer=SGD(layer, lr=0.5, momentum=0.9),
        progress=False, seed=0)
    expected = torch_trajectory("SGD", _kw_key(dict(lr=0.5, momentum=0.9)), 30)[-1]
    ours = np.concatenate([B.to_numpy(layer._params["weight"].data).ravel(),
                           B.to_numpy(layer._params["bias"].data)])
    compare(ours, expected, "torch.optim.SGD (full batch)", rtol=1e-10, atol=1e-12, quiet=True)


BAD = [
    (SGD, dict(lr=-1), ValueError, r"lr must be a finite number in \[0, inf\), got -1"),
    (SGD, dict(lr=float("nan")), ValueError, r"lr must be"),
    (SGD, dict(momentum=-0.1), ValueError, r"momentum must be a finite number in \[0, inf\), got -0.1"),
    (SGD, dict(dampening=1.5), ValueError, r"dampening must be a finite number in \[0, 1\], got 1.5"),
    (SGD, dict(weight_decay=-1e-4), ValueError, r"weight_decay must be .* got -0.0001"),
    (SGD, dict(nesterov=True), ValueError, r"nesterov=True requires momentum > 0 and dampening = 0"),
    (SGD, dict(momentum=0.9, dampening=0.1, nesterov=True), ValueError, r"got momentum=0.9, dampening=0.1"),
    (SGD, dict(nesterov=1), TypeError, r"nesterov must be a bool, got 1"),
    (Adagrad, dict(lr_decay=-1), ValueError, r"lr_decay must be .* got -1"),
    (Adagrad, dict(initial_accumulator_value=-1), ValueError, r"initial_accumulator_value must be"),
    (Adagrad, dict(eps=0.0), ValueError, r"eps must be a finite number in \(0, inf\), got 0.0"),
    (RMSprop, dict(alpha=1.5), ValueError, r"alpha must be a finite number in \[0, 1\], got 1.5"),
    (RMSprop, dict(alpha=-0.1), ValueError, r"alpha must be .* got -0.1"),
    (RMSprop, dict(momentum=-1), ValueError, r"momentum must be"),
    (RMSprop, dict(eps=-1e-8), ValueError, r"eps must be .* got -1e-08"),
    (RMSprop, dict(centered="yes"), TypeError, r"centered must be a bool"),
    (Adam, dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be a finite number in \[0, 1\), got 1.0"),
    (Adam, dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be .* got -0.1"),
    (Adam, dict(betas=0.9), TypeError, r"betas must be a pair"),
    (Adam, dict(eps=0), ValueError, r"eps must be .* got 0"),
    (Adam, dict(weight_decay=-0.1), ValueError, r"weight_decay must be"),
    (Adam, dict(amsgrad=None), TypeError, r"amsgrad must be a bool, got None"),
    (AdamW, dict(weight_decay=float("inf")), ValueError, r"weight_decay must be .* got inf"),
]


@pytest.mark.parametrize("cls, kw, err, match", BAD, ids=[f"{c.__name__}-{kw}" for c, kw, _, _ in BAD])
def test_bad_hyperparameters(cls, kw, err, match):
    layer, _, _ = make_problem(B.get_backend("numpy", "float64"))
    with pytest.raises(err, match=match):
        cls(layer, **kw)


def test_bad_params():
    with pytest.raises(ValueError, match="params is empty"):
        Adam([])
    with pytest.raises(TypeError, match=r"params\[0\] must be a Parameter, got ndarray"):
        Adam([np.zeros(3)])


def test_nesterov_errors_like_torch():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        torch.optim.SGD([p], lr=0.1, nesterov=True)
    layer, _, _ = make_problem(B.get_backend("numpy", "float64"))
    with pytest.raises(ValueError, match="nesterov=True requires"):
        SGD(layer, lr=0.1, nesterov=True)


# ----------------------------------------------------------------------------- exercise checkers
def _adam_solution(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return p - lr * m_hat / (v_hat ** 0.5 + eps), m, v


def _adam_no_bias_correction(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr * m / (v ** 0.5 + eps), m, v


def _adam_swapped_betas(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = (1 - beta1) * m + beta1 * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return p - lr * m_hat / (v_hat ** 0.5 + eps), m, v


def test_adam_checker_accepts_a_right_answer(backend_name, capsys):
    ex.check_adam_step(_adam_solution, backend=B.get_backend(backend_name, "float64"))
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, says", [(_adam_no_bias_correction, "bias correction"),
                                         (_adam_swapped_betas, "first moment")])
def test_adam_checker_says_what_is_wrong(wrong, says):
    with pytest.raises(AssertionError, match=says):
        ex.check_adam_step(wrong)


def _nesterov_solution(p, g, buf, lr, momentum):
    buf = g if buf is None else momentum * buf + g
    return p - lr * (g + momentum * buf), buf


def _heavy_ball(p, g, buf, lr, momentum):
    buf = g if buf is None else momentum * buf + g
    return p - lr * buf, buf


def test_nesterov_checker(capsys):
    ex.check_nesterov_step(_nesterov_solution)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="plain .heavy-ball. momentum"):
        ex.check_nesterov_step(_heavy_ball)


def test_checker_rejects_non_callable():
    with pytest.raises(TypeError, match="adam_step must be a function"):
        ex.check_adam_step(3)


def _adam_square_root_of_g(p, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g                                   # g instead of g²
    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    return p - lr * m_hat / (abs(v_hat) ** 0.5 * (v_hat / abs(v_hat)) ** 0.5 + eps), m, v


def test_adam_checker_reports_nan():
    with pytest.warns(RuntimeWarning), pytest.raises(AssertionError, match="became nan/inf at step 1"):
        ex.check_adam_step(_adam_square_root_of_g)


def _clip_per_tensor(grads, max_norm):
    return [g * min(1.0, max_norm / (float((g * g).sum()) ** 0.5 + 1e-6)) for g in grads]


def _clip_solution(grads, max_norm):
    total = sum(float((g * g).sum()) for g in grads) ** 0.5
    return [g * min(1.0, max_norm / (total + 1e-6)) for g in grads]


def test_clip_checker(capsys, backend_name):
    ex.check_clip_by_global_norm(_clip_solution, backend=B.get_backend(backend_name, "float64"))
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="each tensor is clipped on its own"):
        ex.check_clip_by_global_norm(_clip_per_tensor)


# ----------------------------------------------------------------------------- masks
MASK_CONFIGS = [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)), ("Adam", dict(lr=0.05, amsgrad=True)),
                ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)), ("Adagrad", dict(lr=0.1))]


@pytest.mark.parametrize("name, kw", MASK_CONFIGS, ids=[c[0] for c in MASK_CONFIGS])
def test_masks_are_honoured_like_torch_prune_also_after_module_to(name, kw):
    """Ours: p.mask on the weight; torch: torch.nn.utils.prune's weight = weight_orig * mask, whose
    weight_orig.grad is the masked gradient. Half-way our model moves numpy -> torch-cpu."""
    B.seed(3)
    layer = Linear(5, 4, backend=B.get_backend("numpy", "float64"))
    weight = layer._params["weight"]
    gen = np.random.default_rng(1)
    mask = (gen.random((4, 5)) > 0.4).astype("float64")
    weight.mask = mask
    weight.apply_mask()
    ref = torch.nn.Linear(5, 4).double()
    with torch.no_grad():
        ref.weight.copy_(torch.as_tensor(B.to_numpy(weight.data)))
        ref.bias.copy_(torch.as_tensor(B.to_numpy(layer._params["bias"].data)))
    torch.nn.utils.prune.custom_from_mask(ref, "weight", torch.as_tensor(mask))
    opt = OPTIMIZERS[name.lower()](layer, **kw)
    ref_opt = getattr(torch.optim, name)(ref.parameters(), **kw)
    x, y = gen.standard_normal((16, 5)), gen.integers(0, 4, 16)
    loss_fn = CrossEntropyLoss()
    for step in range(40):
        if step == 20:
            layer.to(B.get_backend("torch-cpu", "float64"))
        xb = B.to_backend(x, B.backend_of(weight.data))
        loss_fn(layer.forward(xb), B.to_backend(y, B.backend_of(weight.data)))
        layer.backward(loss_fn.backward())
        opt.step()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(torch.as_tensor(x)), torch.as_tensor(y)).backward()
        ref_opt.step()
    assert B.is_torch(weight.data) and all(B.is_torch(v) for v in opt.state[0].values() if hasattr(v, "shape"))
    assert (B.to_numpy(weight.data)[mask == 0] == 0).all()
    effective = (ref.weight_orig * ref.weight_mask).detach()      # ref.weight is refreshed only by a forward
    compare(weight.data, effective, f"pruned {name} weight", rtol=1e-10, atol=1e-12, quiet=True)
    compare(layer._params["bias"].data, ref.bias.detach(), f"{name} bias", rtol=1e-10, atol=1e-12, quiet=True)


def test_the_update_sees_the_masked_gradient_but_grad_is_left_alone():
    p = Linear(3, 2, backend=B.get_backend("numpy", "float64"))._params["weight"]
    p.mask = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    p.apply_mask()
    p.grad = np.ones((2, 3))
    before = p.data.copy()
    SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p.data, (before - 0.5) * p.mask)
    np.testing.assert_array_equal(p.grad, np.ones((2, 3)))
