"""The checkers of chapter 4.1's exercises (nnopt_lab/exercises/learning_rate.py): a right answer passes,
each usual mistake is named, a learner who has not started is told so."""
import math

import pytest

from nnopt_lab.exercises import learning_rate as ex
from nnopt_lab.exercises.checks import ExerciseFailed
from nnopt_lab.training import schedules as S


def cosine_right(t, base_lr, T_max, eta_min=0.0):
    return eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max))


def warmup_cosine_right(t, base_lr, W, T, f0=0.1):
    if t < W:
        return base_lr * (f0 + (1 - f0) * t / W)
    return 0.5 * base_lr * (1 + math.cos(math.pi * (t - W) / (T - W)))


def plateau_right(metrics, lr, factor, patience):
    best, bad, out = math.inf, 0, []
    for m in metrics:
        best, bad = (m, 0) if m < best else (best, bad + 1)
        if bad > patience:
            lr, bad = lr * factor, 0
        out.append(lr)
    return out


def schedule(kind="right"):
    class WarmupCosine(S.LRScheduler):
        def __init__(self, optimizer, warmup_steps, total_steps, start_factor=0.1):
            self.warmup_steps, self.total_steps, self.start_factor = warmup_steps, total_steps, start_factor
            super().__init__(optimizer)

        def get_lr(self):
            if kind == "not started":
                raise NotImplementedError()
            t, base, W, T, f0 = self.last_epoch, self.base_lrs[0], self.warmup_steps, self.total_steps, self.start_factor
            if t < W:
                return base * ((0.0 if kind == "from 0" else f0) + (1 - (0.0 if kind == "from 0" else f0)) * t / W)
            shift = 0 if kind == "not shifted" else W
            return 0.5 * base * (1 + math.cos(math.pi * (t - shift) / (T - W))) * (1.01 if kind == "off" else 1.0)
    return WarmupCosine


def test_right_answers_pass(capsys):
    ex.check_cosine_annealing(cosine_right)
    ex.check_warmup_cosine(warmup_cosine_right)
    ex.check_plateau(plateau_right)
    ex.check_warmup_cosine_schedule(schedule())
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("✓") for line in out)


@pytest.mark.parametrize("checker, answer, message", [
    (ex.check_cosine_annealing, lambda t, b, T, e: e + (b - e) * (1 + math.cos(math.pi * t / T)), "missing the 1/2"),
    (ex.check_warmup_cosine, lambda t, b, W, T, f0: warmup_cosine_right(t, b, W, T, 0.0), "starts at 0"),
    (ex.check_warmup_cosine_schedule, schedule("not shifted"), "not shifted"),
    (ex.check_warmup_cosine_schedule, schedule("from 0"), "starts at 0"),
    (ex.check_warmup_cosine_schedule, schedule("not started"), "not answered yet"),
    (ex.check_warmup_cosine_schedule, schedule("off"), "first difference at step 10"),
    (ex.check_warmup_cosine_schedule, lambda *a: None, "must be a class derived from LRScheduler"),
])
def test_each_usual_mistake_is_named(checker, answer, message):
    with pytest.raises(ExerciseFailed, match=message):
        checker(answer)


# ----------------------------------------------------------------------------- the chapter's explorer
def test_the_schedule_designer_replaces_one_line_within_200_ms():
    """The figure is made once; a redraw (new curve + the PNG the notebook shows, which draws the figure) takes < 200 ms."""
    import io
    import statistics
    import time

    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnopt_lab.widgets import learning_rate as W

    view = W.ScheduleView(total_steps=200, lr=0.1)
    times = []
    for kind, warmup, eta_min, log_y in [("cosine", 0, 0.0, False), ("step", 20, 0.0, True),
                                         ("warm restarts", 60, 0.01, True), ("one-cycle", 0, 0.0, False),
                                         ("linear", 10, 0.05, False)]:
        t0 = time.perf_counter()
        curve = view.update(kind, warmup, eta_min, log_y)
        view.fig.savefig(io.BytesIO(), format="png")
        times.append(time.perf_counter() - t0)
        assert curve == W.schedule_curve(kind, 200, 0.1, warmup, eta_min=eta_min)
        assert list(view.line.get_data()[1]) == curve and len(view.ax.lines) == 1
        assert view.ax.get_yscale() == ("log" if log_y and min(curve) > 0 else "linear")
    assert statistics.median(times) < 0.2, times
    assert W.schedule_explorer().children
    plt.close("all")
