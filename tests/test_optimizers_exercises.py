"""The checkers of chapter 4.3's exercises (nnopt_lab/exercises/optimizers.py): a right answer passes on
both backends, each usual mistake is named, a learner who has not started is told so, and no whole
array is dumped into the message."""
import pytest

from nnopt_lab import backend as B
from nnopt_lab.exercises import optimizers as ex
from nnopt_lab.exercises.checks import ExerciseFailed
from nnopt_lab.training.optim import Optimizer


def nesterov_right(p, g, buf, lr, momentum):
    buf = g if buf is None else momentum * buf + g
    return p - lr * (g + momentum * buf), buf


def heavy_ball(p, g, buf, lr, momentum):
    buf = g if buf is None else momentum * buf + g
    return p - lr * buf, buf


def adam_right(p, g, m, v, t, lr, beta1, beta2, eps):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)) ** 0.5 + eps), m, v


def adam_returns_m_hat(p, g, m, v, t, lr, beta1, beta2, eps):
    p_new, m_new, v_new = adam_right(p, g, m, v, t, lr, beta1, beta2, eps)
    return p_new * 1.0 + 0.0 * m_new, m_new / (1 - beta1 ** t), v_new


def clip_right(grads, max_norm):
    total = sum(float((g * g).sum()) for g in grads) ** 0.5
    return [g * min(1.0, max_norm / (total + 1e-6)) for g in grads]


def clip_per_tensor(grads, max_norm):
    return [g * min(1.0, max_norm / (float((g * g).sum()) ** 0.5 + 1e-6)) for g in grads]


def make_adamw(kind):
    class MyAdamW(Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
            super().__init__(params, lr)
            self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

        def update(self, p, grad, state):
            if kind == "not started":
                raise NotImplementedError()
            xp = B.namespace(p.data)
            if not state:
                state["step"], state["m"], state["v"] = 0, xp.zeros_like(p.data), xp.zeros_like(p.data)
            state["step"] = t = state["step"] + 1
            b1, b2 = self.betas
            if kind == "coupled":
                grad = grad + self.weight_decay * p.data
            elif kind == "no lr in decay":
                p.data *= 1 - self.weight_decay
            elif kind != "local copy":
                p.data *= 1 - self.lr * self.weight_decay
            state["m"] = b1 * state["m"] + (1 - b1) * grad
            state["v"] = b2 * state["v"] + (1 - b2) * grad * grad
            m_hat, v_hat = state["m"] / (1 - b1 ** t), state["v"] / (1 - b2 ** t)
            step = self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)
            if kind == "local copy":
                data = p.data * 1.0
                data -= step
            elif kind == "off":
                p.data -= 1.01 * step
            else:
                p.data -= step
    return MyAdamW


def test_right_answers_pass_on_numpy_and_torch(be64, capsys):
    for checker, answer in ((ex.check_nesterov_step, nesterov_right), (ex.check_adam_step, adam_right),
                            (ex.check_clip_by_global_norm, clip_right),
                            (ex.check_adamw_optimizer, make_adamw("right"))):
        assert checker(answer, backend=be64) is None
        assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("checker, answer, message", [
    (ex.check_nesterov_step, heavy_ball, "plain \\(heavy-ball\\) momentum"),
    (ex.check_clip_by_global_norm, clip_per_tensor, "each tensor is clipped on its own"),
    (ex.check_adamw_optimizer, make_adamw("coupled"), "Adam with L2 regularisation"),
    (ex.check_adamw_optimizer, make_adamw("no lr in decay"), "not \\(1 − λ\\)"),
    (ex.check_adamw_optimizer, make_adamw("local copy"), "did not change"),
    (ex.check_adamw_optimizer, make_adamw("not started"), "not answered yet"),
])
def test_each_usual_mistake_is_named(checker, answer, message):
    with pytest.raises(ExerciseFailed, match=message):
        checker(answer)


def test_adam_that_returns_m_hat_for_m_is_told_where_without_arrays():
    with pytest.raises(ExerciseFailed, match="the m you return is the bias-corrected m̂ = m / \\(1 − β\\^t\\) \\(at step 1 the factor is 1/\\(1 − 0.9\\) = 10\\)") as err:
        ex.check_adam_step(adam_returns_m_hat)
    assert "array(" not in str(err.value) and len(str(err.value)) < 300


def test_an_unknown_adamw_mistake_names_the_first_step_and_the_tensor():
    with pytest.raises(ExerciseFailed, match="differ from AdamW's from step 1 on \\(tensor 0, max \\|diff\\|"):
        ex.check_adamw_optimizer(make_adamw("off"))


def test_adamw_checker_wants_an_optimizer_class():
    with pytest.raises(ExerciseFailed, match="must be a class derived from Optimizer"):
        ex.check_adamw_optimizer(lambda *a: None)


def test_a_wrong_moment_without_a_named_mistake_is_located_without_dumping_arrays():
    def adam_bad_v(p, g, m, v, t, lr, beta1, beta2, eps):
        p_new, m_new, v_new = adam_right(p, g, m, v, t, lr, beta1, beta2, eps)
        return p_new, m_new, v_new + 1.0
    with pytest.raises(ExerciseFailed, match="v \\(second moment\\) is wrong from step 1 on \\(max \\|diff\\| 1 ") as err:
        ex.check_adam_step(adam_bad_v)
    assert "array(" not in str(err.value)


# ----------------------------------------------------------------------------- the chapter's playground
def test_the_playground_moves_its_lines_in_one_figure_within_200_ms():
    """One figure; a redraw (one 2-D path + the PNG the notebook shows) takes < 200 ms; the contours
    are redrawn only when the function changes, and a diverged path is cut where it diverged."""
    import statistics
    import time

    import numpy as np
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnopt_lab.widgets.optimizers import PlaygroundView, optimizer_path, playground

    view = PlaygroundView()
    times, contours = [], {}
    for args in [("rosenbrock", "adam", 0.01, 0.9, 300), ("rosenbrock", "gd", 1e-3, 0.9, 1000),
                 ("beale", "momentum", 0.01, 0.9, 500), ("saddle", "rmsprop", 0.01, 0.9, 300),
                 ("ill-conditioned", "nesterov", 0.05, 0.9, 300), ("ill-conditioned", "gd", 0.05, 0.9, 200)]:
        t0 = time.process_time()          # CPU time of this process: a busy shared machine does not count
        out = view.update(*args)
        assert view.frame()[:4] == b"\x89PNG"       # what the widget sends: draw and encode
        times.append(time.process_time() - t0)
        want = optimizer_path(*args)
        cut = want["diverged_at"] if want["diverged_at"] is not None else want["path"].shape[0]
        np.testing.assert_array_equal(np.column_stack(view.path_line.get_data()), want["path"][:cut])
        assert len(view.values_line.get_data()[0]) == cut and out["diverged_at"] == want["diverged_at"]
        contours.setdefault(args[0], view.contours)
        assert view.contours is contours[args[0]]          # same function: contours kept
        assert len(view.ax_path.lines) == 3 + len(view.marks)
    assert statistics.median(times) < 0.2, times
    diverged = view.update("ill-conditioned", "gd", 1.0, 0.9, 200)
    assert diverged["diverged_at"] is not None
    assert len(view.path_line.get_data()[0]) == diverged["diverged_at"]
    assert "diverged at step" in view.fig.texts[0].get_text()
    assert playground().children
    plt.close("all")
