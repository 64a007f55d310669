"""The checkers of chapter 4.2's exercises (nnopt_lab/exercises/batch_size.py): a right answer passes,
each usual mistake is named, a learner who has not started is told so."""
import math

import pytest

from nnopt_lab import backend as B
from nnopt_lab.exercises import batch_size as ex
from nnopt_lab.exercises.checks import ExerciseFailed
from nnopt_lab.training import batch_size as BS


def warmup_right(step, base_lr, base_batch, batch, warmup_steps):
    peak = base_lr * batch / base_batch
    return base_lr + (peak - base_lr) * min(step, warmup_steps) / warmup_steps


def count_right(n_samples, batch_size, milestones, factor, epochs):
    return sum(math.ceil(n_samples / (batch_size * factor ** sum(1 for m in milestones if m <= e)))
               for e in range(epochs))


def predict_right(v0, b0, b, n):
    return v0 * (b0 / b) * (n - b) / (n - b0)


def noise(kind="right"):
    def minibatch_noise(model, data, batch_size, repeats, seed):
        if kind == "not started":
            raise NotImplementedError()
        x, y = data
        gen = B.generator(seed)
        G = BS.full_gradient(model, data)
        total = 0.0
        for _ in range(repeats):
            idx = gen.choice(x.shape[0], size=batch_size, replace=kind == "with replacement")
            g = BS.full_gradient(model, (x[idx], y[idx]))
            d2 = float(((g - G) ** 2).sum())
            total += math.sqrt(d2) if kind == "norm" else d2
        return total / (repeats - 1 if kind == "repeats - 1" else repeats) * (1.01 if kind == "off" else 1.0)
    return minibatch_noise


def test_right_answers_pass(capsys):
    ex.check_warmup_lr(warmup_right)
    ex.check_update_count(count_right)
    ex.check_noise_prediction(predict_right)
    ex.check_minibatch_noise(noise())
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("✓") for line in out)


@pytest.mark.parametrize("checker, answer, message", [
    (ex.check_warmup_lr, lambda t, lr, b0, b, w: lr, "no scaling"),
    (ex.check_update_count, lambda n, b, m, f, e: sum(n // (b * f ** sum(1 for x in m if x <= ep)) for ep in range(e)),
     "rounded down"),
    (ex.check_noise_prediction, lambda v0, b0, b, n: v0 * b0 / b, "missing the finite-population factor"),
    (ex.check_noise_prediction, lambda v0, b0, b, n: v0 * math.sqrt(b0 / b) * (n - b) / (n - b0), "falls as 1/B"),
    (ex.check_minibatch_noise, noise("with replacement"), "WITH replacement"),
    (ex.check_minibatch_noise, noise("norm"), "its SQUARE"),
    (ex.check_minibatch_noise, noise("repeats - 1"), "not repeats − 1"),
    (ex.check_minibatch_noise, noise("not started"), "not answered yet"),
    (ex.check_minibatch_noise, noise("off"), "at B = 1: yours"),
])
def test_each_usual_mistake_is_named(checker, answer, message):
    with pytest.raises(ExerciseFailed, match=message):
        checker(answer)


def test_the_noise_checker_does_not_change_the_global_generator():
    B.seed(0)
    before = B.rng().random()
    B.seed(0)
    ex.check_minibatch_noise(noise())
    assert B.rng().random() == before


# ----------------------------------------------------------------------------- the chapter's explorer
def test_the_explorer_moves_its_markers_in_one_figure_within_200_ms():
    """The figure is made once; a redraw (update + the PNG the notebook shows, which draws the figure) takes < 200 ms."""
    import statistics
    import time

    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnopt_lab.widgets.batch_size import BatchTradeoffView, batch_explorer, batch_tradeoff

    view = BatchTradeoffView(1078, 17.0, 0.28, epochs=10)
    lines_before = len(view.ax_noise.lines) + len(view.ax_updates.lines)
    times = []
    for b, lr in [(1, 0.01), (32, 0.1), (256, 1.0), (1024, 0.5), (8, 0.05)]:
        t0 = time.process_time()          # CPU time of this process: a busy shared machine does not count
        r = view.update(b, lr)
        assert view.frame()[:4] == b"\x89PNG"       # what the widget sends: draw (blitted) and encode
        times.append(time.process_time() - t0)
        want = batch_tradeoff(b, lr, 1078, 17.0, 0.28, 10)
        assert r == want
        assert list(view.noise_marker.get_data()[0]) == [b]
        assert list(view.updates_marker.get_data()[1]) == [want["total_updates"]]
        assert f"ηN/B = {want['sgd_temperature']:.3g}" in view.ax_updates.get_title()
    assert len(view.ax_noise.lines) + len(view.ax_updates.lines) == lines_before     # artists moved, none added
    assert statistics.median(times) < 0.2, times
    assert batch_explorer(1078, 17.0, 0.28).children
    plt.close("all")
