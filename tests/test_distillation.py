"""Distillation: the loss and its hand-written gradient against torch autograd, the T^2 scaling,
bad input, and teacher -> student training through fit's batch-aware loss."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from nnopt_lab import backend as B
from nnopt_lab.inference import distillation as D
from nnopt_lab.models import mlp
from nnopt_lab.testing import gradcheck
from nnopt_lab.training import fit
from nnopt_lab.training.loop import evaluate

TEMPERATURES = (1.0, 2.0, 4.0, 20.0)
ALPHAS = (0.0, 0.5, 1.0)


def _inputs(scale: float, n: int = 7, k: int = 5, seed: int = 0):
    g = np.random.default_rng(seed)
    s = g.standard_normal((n, k)) * scale
    t = g.standard_normal((n, k)) * scale
    y = g.integers(0, k, n)
    return s, t, y


def _torch_reference(s, t, y, temperature, alpha, dtype=torch.float64):
    st = torch.tensor(s, dtype=dtype, requires_grad=True)
    tt = torch.tensor(t, dtype=dtype)
    kl = TF.kl_div(TF.log_softmax(st / temperature, 1), TF.softmax(tt / temperature, 1), reduction="batchmean")
    loss = kl * temperature ** 2 * alpha + (1 - alpha) * TF.cross_entropy(st, torch.tensor(y))
    loss.backward()
    return loss.item(), st.grad.numpy()


def _ours(be, s, t, y, temperature, alpha):
    ss, tt = B.to_backend(s, be), B.to_backend(t, be)
    yy = B.to_backend(y, be, dtype="int64")
    loss, cache = D.distillation_forward(ss, tt, yy, temperature, alpha)
    return B.float_of(loss), B.to_numpy(D.distillation_backward(cache))


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_loss_and_gradient_equal_torch_autograd_float64(be64, temperature, alpha, scale):
    s, t, y = _inputs(scale)
    want_loss, want_grad = _torch_reference(s, t, y, temperature, alpha)
    loss, grad = _ours(be64, s, t, y, temperature, alpha)
    assert math.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(want_loss, rel=1e-12, abs=1e-12 * scale)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_loss_and_gradient_equal_torch_autograd_float32(be32, temperature, alpha, scale):
    s, t, y = _inputs(scale)
    s32, t32 = s.astype(np.float32), t.astype(np.float32)
    want_loss, want_grad = _torch_reference(s32, t32, y, temperature, alpha, torch.float32)
    loss, grad = _ours(be32, s32, t32, y, temperature, alpha)
    assert math.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(want_loss, rel=1e-4, abs=1e-4 * scale)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)


def test_teacher_probabilities_that_underflow_contribute_zero_not_nan(be64):
    """A teacher logit gap of 2e4 makes p exactly 0 in float64: 0 * log 0 must count as 0."""
    t = np.array([[1e4, -1e4, 0.0]])
    s = np.array([[-1e4, 1e4, 0.0]])
    y = np.array([0])
    want_loss, want_grad = _torch_reference(s, t, y, 1.0, 0.5)
    loss, grad = _ours(be64, s, t, y, 1.0, 0.5)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-13)


def test_distillation_loss_is_the_forward_loss(be64):
    s, t, y = _inputs(2.0)
    args = (B.to_backend(s, be64), B.to_backend(t, be64), B.to_backend(y, be64, dtype="int64"), 3.0, 0.7)
    assert B.float_of(D.distillation_loss(*args)) == B.float_of(D.distillation_forward(*args)[0])


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_gradcheck_passes(be64, temperature):
    s, t, y = _inputs(3.0, seed=1)
    tt, yy = B.to_backend(t, be64), B.to_backend(y, be64, dtype="int64")
    x = B.to_backend(s, be64)
    state = {}

    def forward(z):
        loss, state["cache"] = D.distillation_forward(z, tt, yy, temperature, 0.5)
        return loss

    err = gradcheck(forward, lambda g: D.distillation_backward(state["cache"], B.float_of(g)), x, tol=1e-7)
    assert err < 1e-7


def test_backward_scales_with_the_upstream_gradient(be64):
    s, t, y = _inputs(1.0)
    _, cache = D.distillation_forward(B.to_backend(s, be64), B.to_backend(t, be64),
                                      B.to_backend(y, be64, dtype="int64"), 2.0, 0.5)
    np.testing.assert_allclose(B.to_numpy(D.distillation_backward(cache, 3.0)),
                               3.0 * B.to_numpy(D.distillation_backward(cache)), rtol=1e-14)


def _soft_gradient_norm(s, t, temperature, scaled=True):
    """Norm of the alpha = 1 gradient; without T^2 it is the plain KL's gradient (divide by T^2)."""
    st = torch.tensor(s, dtype=torch.float64)
    _, cache = D.distillation_forward(st, torch.tensor(t), torch.zeros(s.shape[0], dtype=torch.int64),
                                      temperature, 1.0)
    g = B.to_numpy(D.distillation_backward(cache))
    return float(np.linalg.norm(g)) / (1.0 if scaled else temperature ** 2)


def test_t_squared_makes_the_soft_gradient_size_independent_of_temperature():
    s, t, _ = _inputs(3.0, n=32, k=10)
    temps = [40.0, 80.0, 160.0, 320.0]
    norms = [_soft_gradient_norm(s, t, T) for T in temps]
    ratios = [a / b for a, b in zip(norms[1:], norms[:-1])]       # g(2T) / g(T)
    # the ratio tends to 1: ever closer as T grows ...
    deviations = [abs(r - 1.0) for r in ratios]
    assert all(b < a for a, b in zip(deviations, deviations[1:]))
    assert deviations[-1] < 2e-3
    # ... to the large-T limit  T (q - p) -> (centred s - centred t) / K, divided by N
    limit = (s - s.mean(1, keepdims=True)) - (t - t.mean(1, keepdims=True))
    assert norms[-1] == pytest.approx(np.linalg.norm(limit) / (s.shape[1] * s.shape[0]), rel=2e-3)
    # without T^2 the same gradient shrinks like 1/T^2: doubling T quarters it
    plain = [_soft_gradient_norm(s, t, T, scaled=False) for T in temps]
    assert plain[-1] / plain[-2] == pytest.approx(0.25, rel=5e-3)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_softmax_temperature_equals_torch(be64, temperature):
    z = np.random.default_rng(0).standard_normal((4, 6)) * 5
    got = B.to_numpy(D.softmax_temperature(B.to_backend(z, be64), temperature))
    np.testing.assert_allclose(got, TF.softmax(torch.tensor(z) / temperature, 1).numpy(), rtol=1e-12, atol=1e-15)
    got = B.to_numpy(D.log_softmax_temperature(B.to_backend(z, be64), temperature))
    np.testing.assert_allclose(got, TF.log_softmax(torch.tensor(z) / temperature, 1).numpy(), rtol=1e-12)


def test_higher_temperature_flattens_the_distribution():
    z = np.array([[4.0, 1.0, 0.0, -2.0]])
    maxima = [float(D.softmax_temperature(z, T).max()) for T in (0.5, 1.0, 2.0, 8.0, 100.0)]
    assert all(b < a for a, b in zip(maxima, maxima[1:]))
    assert maxima[-1] == pytest.approx(0.25, abs=0.02)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("temperature", [0, -1.0, 0.0, float("nan"), float("inf")])
def test_bad_temperature_raises_naming_it(temperature):
    s, t, y = _inputs(1.0)
    with pytest.raises(ValueError, match="temperature"):
        D.distillation_forward(s, t, y, temperature, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        D.softmax_temperature(s, temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_bad_alpha_raises_naming_it(alpha):
    s, t, y = _inputs(1.0)
    with pytest.raises(ValueError, match="alpha"):
        D.distillation_forward(s, t, y, 2.0, alpha)
    with pytest.raises(ValueError, match="alpha"):
        D.DistillationLoss(mlp((4, 3)).eval(), alpha=alpha)


def test_bool_and_string_arguments_are_refused():
    s, t, y = _inputs(1.0)
    with pytest.raises(TypeError, match="temperature"):
        D.distillation_forward(s, t, y, True, 0.5)
    with pytest.raises(TypeError, match="alpha"):
        D.distillation_forward(s, t, y, 2.0, "0.5")


def test_different_class_counts_raise():
    s, _, y = _inputs(1.0, k=5)
    t = np.zeros((s.shape[0], 4))
    with pytest.raises(ValueError, match="teacher has 4 classes but the student has 5"):
        D.distillation_forward(s, t, y)


def test_different_rows_backends_and_dtypes_raise():
    s, t, y = _inputs(1.0)
    with pytest.raises(ValueError, match="one row per row"):
        D.distillation_forward(s, t[:3], y)
    with pytest.raises(TypeError, match="backend"):
        D.distillation_forward(s, torch.tensor(t), y)
    with pytest.raises(TypeError, match="dtype"):
        D.distillation_forward(s, t.astype(np.float32), y)
    with pytest.raises(ValueError, match="2-d"):
        D.distillation_forward(s[0], t[0], y[:1])


def test_backward_needs_a_distillation_cache():
    with pytest.raises(TypeError, match="cache"):
        D.distillation_backward(("cross_entropy", 1, 2))
    with pytest.raises(RuntimeError, match="before the loss"):
        D.DistillationLoss(mlp((4, 3)).eval()).backward()


# ----------------------------------------------------------------------------- training
def _toy(backend, n=120, d=6, k=3, seed=0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    y = np.argmax(x[:, :k] + 0.3 * g.standard_normal((n, k)), axis=1)
    return B.to_backend(x, backend), B.to_backend(y, backend, dtype="int64")


def _trained_teacher(backend, x, y):
    teacher = mlp((x.shape[1], 32, 3), backend=backend)
    fit(teacher, (x, y), epochs=30, batch_size=32, lr=0.2, seed=0, progress=False)
    return teacher.eval()


def test_teacher_in_training_mode_raises(be64):
    teacher = mlp((6, 8, 3), backend=be64)
    with pytest.raises(ValueError, match="teacher.eval()"):
        D.DistillationLoss(teacher)
    loss = D.DistillationLoss(teacher.eval())
    teacher[0].train()            # one sub-module switched back
    x, y = _toy(be64)
    with pytest.raises(ValueError, match="training mode"):
        loss(mlp((6, 3), backend=be64).forward(x), y, x)


def test_the_student_cannot_be_its_own_teacher(be64):
    x, y = _toy(be64)
    student = mlp((6, 8, 3), backend=be64).eval()
    with pytest.raises(ValueError, match="training mode"):
        fit(student, (x, y), epochs=1, loss_fn=D.DistillationLoss(student), progress=False)


def test_teacher_with_other_class_count_raises_in_fit(be64):
    x, y = _toy(be64)
    teacher = mlp((6, 8, 4), backend=be64).eval()
    with pytest.raises(ValueError, match="teacher has 4 classes but the student has 3"):
        fit(mlp((6, 3), backend=be64), (x, y), epochs=1, loss_fn=D.DistillationLoss(teacher), progress=False)


def test_teacher_is_not_a_module_raises():
    with pytest.raises(TypeError, match="teacher"):
        D.DistillationLoss(lambda x: x)


def test_fit_distills_once_per_batch_with_a_frozen_teacher_and_records_parts(be64):
    x, y = _toy(be64)
    teacher = _trained_teacher(be64, x, y)
    before = {k: B.to_numpy(v).copy() for k, v in teacher.state_dict().items()}
    for p in teacher.parameters():
        p.grad = None             # left by its own training: no gradient may flow into it now
    loss_fn = D.DistillationLoss(teacher, temperature=3.0, alpha=0.7)
    student = mlp((6, 3), backend=be64)
    h = fit(student, (x, y), epochs=4, batch_size=32, lr=0.1, loss_fn=loss_fn, seed=0, progress=False)
    assert loss_fn.teacher_calls == 4 * math.ceil(x.shape[0] / 32)       # once per batch
    after = teacher.state_dict()
    assert all(np.array_equal(before[k], B.to_numpy(after[k])) for k in before)
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    for epoch in range(4):      # the loss is the weighted sum of its recorded parts
        assert h["loss"][epoch] == pytest.approx(0.7 * h["loss/soft"][epoch] + 0.3 * h["loss/hard"][epoch], rel=1e-10)
    assert h["loss"][-1] < h["loss"][0]


def test_one_fit_step_matches_torch_autograd_on_the_student(be64):
    """The student's weight gradient after one distillation step equals torch's on the same weights."""
    x, y = _toy(be64, n=16)
    teacher = _trained_teacher(be64, x, y)
    student = mlp((6, 3), backend=be64)
    w0 = B.to_numpy(student[0]._params["weight"].data).copy()
    b0 = B.to_numpy(student[0]._params["bias"].data).copy()
    loss_fn = D.DistillationLoss(teacher, temperature=4.0, alpha=0.5)
    fit(student, (x, y), epochs=1, batch_size=16, lr=1.0, loss_fn=loss_fn, progress=False)
    xt, yt = torch.tensor(B.to_numpy(x)), torch.tensor(B.to_numpy(y))
    w, b = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    t = torch.tensor(B.to_numpy(teacher.forward(x)))
    s = xt @ w.T + b
    ref = (TF.kl_div(TF.log_softmax(s / 4, 1), TF.softmax(t / 4, 1), reduction="batchmean") * 16 * 0.5
           + 0.5 * TF.cross_entropy(s, yt))
    ref.backward()
    np.testing.assert_allclose(B.to_numpy(student[0]._params["weight"].data), w0 - w.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_distilled_student_learns_the_task(be64):
    x, y = _toy(be64, n=200)
    teacher = _trained_teacher(be64, x, y)
    student = mlp((6, 3), backend=be64)
    fit(student, (x, y), epochs=20, batch_size=32, lr=0.2, seed=0, progress=False,
        loss_fn=D.DistillationLoss(teacher, temperature=2.0, alpha=1.0))
    _, acc = evaluate(student, (x, y))
    assert acc > 0.8


# ----------------------------------------------------------------------------- explorer
def test_explorer_data_softens_real_logits_and_measures_entropy(be64):
    from nnopt_lab.widgets import distillation as W
    z = np.array([[6.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0], [1e4, 0.0, 0.0, 0.0]])
    data = W.explorer_data(B.to_backend(z, be64), [0.5, 1, 4, 50], labels=B.to_backend([0, 2, 0], be64, dtype="int64"))
    assert data["probs"].shape == (4, 3, 4) and data["entropy"].shape == (4, 3)
    for i, T in enumerate([0.5, 1, 4, 50]):
        p = TF.softmax(torch.tensor(z) / T, 1).numpy()
        np.testing.assert_allclose(data["probs"][i], p, rtol=1e-12, atol=1e-300)
        ent = -(TF.softmax(torch.tensor(z) / T, 1) * TF.log_softmax(torch.tensor(z) / T, 1)).sum(1).numpy() / np.log(2)
        np.testing.assert_allclose(data["entropy"][i], ent, rtol=1e-10, atol=1e-12)
    assert np.isfinite(data["entropy"]).all() and (np.diff(data["entropy"][:, 0]) > 0).all()
    assert data["labels"] == [0, 2, 0]


def test_explorer_data_refuses_bad_grids():
    from nnopt_lab.widgets import distillation as W
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="increase"):
        W.explorer_data(z, [2, 1])
    with pytest.raises(ValueError, match=r"temperatures\[0\]"):
        W.explorer_data(z, [0, 1])
    with pytest.raises(ValueError, match="labels"):
        W.explorer_data(z, [1, 2], labels=np.array([0]))


def test_view_updates_bars_only():
    import matplotlib
    matplotlib.use("Agg")
    from nnopt_lab.widgets import distillation as W
    z = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    data = W.explorer_data(z, [1, 2, 4])
    view = W.SoftTargetView(data)
    view.update(2)
    heights = [b.get_height() for b in view.bars[1]]
    assert "T = 4" in view.bar_title.get_text()
    np.testing.assert_allclose(heights, data["probs"][2, 1])


@pytest.mark.parametrize("temperature", [1e300, float("inf"), 2 * 1e4])
def test_a_temperature_beyond_the_largest_is_refused_not_nan(temperature):
    from nnopt_lab.inference.distillation import MAX_TEMPERATURE, distillation_loss
    s, t = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, t, np.array([0, 1]), temperature=temperature)
    assert np.isfinite(float(distillation_loss(s, t, np.array([0, 1]), temperature=MAX_TEMPERATURE)))


@pytest.mark.parametrize("logits", [None, "abc", [[1.0, 2.0]]])
def test_softened_distributions_need_an_array(logits):
    from nnopt_lab.inference.distillation import log_softmax_temperature, softmax_temperature
    for fn in (softmax_temperature, log_softmax_temperature):
        with pytest.raises(TypeError, match="logits"):
            fn(logits, 2.0)
