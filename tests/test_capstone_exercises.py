"""The checkers of chapter 6's exercises: a right answer passes, each usual mistake is named, a
learner who has not started is told so; the budget checker reads order, size and accuracy."""
import pytest

from nnopt_lab.exercises import capstone as X
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed


def _front(costs, accs, *, strict=True, cost_sign=1.0, acc_sign=1.0, keep_all=False, dedupe=True, order=True):
    """An independent Pareto front (pairwise domination), with one of the usual mistakes switched on."""
    c = [cost_sign * x for x in costs]
    a = [acc_sign * x for x in accs]
    n = len(c)

    def dominated(i):
        for j in range(n):
            if j == i:
                continue
            no_worse = c[j] <= c[i] and (a[j] >= a[i])
            better = c[j] < c[i] or a[j] > a[i]
            if strict and no_worse and better:
                return True
            if not strict and c[j] <= c[i] and a[j] > a[i]:
                return True
        return False

    keep = list(range(n)) if keep_all else [i for i in range(n) if not dominated(i)]
    if dedupe:
        keep = [i for i in keep if not any(c[j] == c[i] and a[j] == a[i] for j in keep if j < i)]
    return sorted(keep, key=lambda i: (costs[i], i)) if order else sorted(keep, key=lambda i: -costs[i])


def test_right_answer_passes(capsys):
    X.check_pareto_front(lambda c, a: _front(c, a))
    assert "✓ pareto_front matches" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, words", [
    (dict(strict=False), "same accuracy as a cheaper one is kept"),
    (dict(cost_sign=-1.0), "cost is maximised"),
    (dict(acc_sign=-1.0), "accuracy is minimised"),
    (dict(keep_all=True), "every point is returned"),
    (dict(dedupe=False), "exactly equal points"),
    (dict(order=False), "wrong order"),
])
def test_each_usual_mistake_is_named(mistake, words):
    with pytest.raises(ExerciseFailed, match=words):
        X.check_pareto_front(lambda c, a: _front(c, a, **mistake))


def test_an_unknown_mistake_and_a_non_list_and_not_started():
    with pytest.raises(ExerciseFailed, match="expected .* yours"):
        X.check_pareto_front(lambda c, a: [0])
    with pytest.raises(ExerciseFailed, match="list of indices"):
        X.check_pareto_front(lambda c, a: 3)

    def pareto_front(c, a):
        raise NotImplementedError()

    with pytest.raises(ExerciseFailed) as info:
        X.check_pareto_front(pareto_front)
    assert NOT_STARTED in str(info.value)
    with pytest.raises(ExerciseFailed, match="raised ZeroDivisionError"):
        X.check_pareto_front(lambda c, a: 1 / 0)
    with pytest.raises(TypeError, match="must be a function"):
        X.check_pareto_front([1, 2])


# step stand-ins named like the pipeline's (order_problem reads the class names only)
class QuantizeInt8: pass
class ShareWeights: pass
class Prune: pass
class FineTune: pass
class Distill: pass
class Trim: pass


@pytest.mark.parametrize("steps, words", [
    ([Prune(), QuantizeInt8(), FineTune()], r"step 2 \(FineTune\) comes after step 1 \(QuantizeInt8\)"),
    ([QuantizeInt8(), Trim()], "make it the last step"),
    ([ShareWeights(), Prune()], "prune first, then share"),
    ([Prune(), ShareWeights(), Distill()], "distil first"),
    ([ShareWeights(), QuantizeInt8()], "choose one"),
    ([ShareWeights(), Trim()], "before sharing"),
    ([ShareWeights(), FineTune(), ShareWeights()], r"step 2 \(ShareWeights\) comes after step 0"),
])
def test_impossible_orders_are_named(steps, words):
    assert X.order_problem(steps) is not None
    with pytest.raises(ExerciseFailed, match="impossible order: .*" + words):
        X.check_budget_pipeline(lambda: steps, None, None, 1000)


def test_possible_orders_pass_the_order_check():
    for steps in ([Distill(), Prune(), FineTune(), Trim(), QuantizeInt8()], [Prune(), ShareWeights()],
                  [QuantizeInt8()], [Prune(), Prune(), FineTune(), Trim(), ShareWeights(), FineTune()]):
        assert X.order_problem(steps) is None


def _rows(*triples):
    return [{"step": s, "accuracy": a, "bytes": b} for s, a, b in triples]


def test_diagnose_report_says_over_budget_and_names_the_biggest_cut():
    rows = _rows(("baseline", 0.97, 17480), ("Prune(0.5)", 0.97, 9000), ("QuantizeInt8()", 0.965, 2400))
    message = X.diagnose_report(rows, 2000)
    assert message.startswith("over budget: the final model stores 2,400 B, the budget is 2,000 B (1.20x too big)")
    assert "17,480 B → Prune(0.5): 9,000 B → QuantizeInt8(): 2,400 B" in message
    assert "the biggest cut was QuantizeInt8() (3.8x)" in message
    assert "no step made it smaller" in X.diagnose_report(_rows(("baseline", 0.9, 100), ("Trim()", 0.9, 100)), 50)
    assert "It also loses" not in message
    both = X.diagnose_report(_rows(("baseline", 0.97, 17480), ("Prune(0.99)", 0.5, 3000)), 2000)
    assert both.startswith("over budget") and both.endswith("It also loses 47.0 points of accuracy (at most 1 allowed).")


def test_diagnose_report_says_accuracy_lost_and_at_which_step():
    rows = _rows(("baseline", 0.97, 17480), ("Prune(0.95)", 0.93, 3000), ("FineTune(3)", 0.95, 3000),
                 ("QuantizeInt8()", 0.945, 800))
    message = X.diagnose_report(rows, 1000)
    assert message.startswith("accuracy lost: 94.5 % against the baseline's 97.0 % (2.5 points, at most 1 allowed)")
    assert "The step that lost most: Prune(0.95) (4.0 points)" in message
    assert X.diagnose_report(rows, 1000, max_drop_points=3.0) is None
    assert X.diagnose_report(rows, 1000, baseline_accuracy=0.95) is None
    assert X.diagnose_report(rows, 800, max_drop_points=2.5) is None          # the limits are inclusive


def test_diagnose_report_refuses_bad_arguments():
    with pytest.raises(ValueError, match="budget_bytes must be"):
        X.diagnose_report(_rows(("baseline", 0.9, 10)), 0)
    with pytest.raises(ValueError, match="max_drop_points must be"):
        X.diagnose_report(_rows(("baseline", 0.9, 10)), 10, max_drop_points=-1)
    with pytest.raises(ValueError, match="at least one row"):
        X.diagnose_report([], 10)


def test_budget_checker_tells_not_started_and_non_pipelines():
    def my_pipeline():
        raise NotImplementedError()

    with pytest.raises(ExerciseFailed) as info:
        X.check_budget_pipeline(my_pipeline, None, None, 1000)
    assert NOT_STARTED in str(info.value)
    with pytest.raises(ExerciseFailed, match="expected a Pipeline"):
        X.check_budget_pipeline(lambda: 3, None, None, 1000)
    with pytest.raises(ExerciseFailed, match="no steps"):
        X.check_budget_pipeline(lambda: [], None, None, 1000)


# ----------------------------------------------------------------------------- the budget checker on real runs
@pytest.fixture
def trained(be32):
    from nnopt_lab import backend as B, datasets, models
    from nnopt_lab.training import fit
    from nnopt_lab.training.optim import Adam

    data = datasets.load_digits(backend=be32, seed=0)
    B.seed(0)
    model = models.mlp((64, 32, 10), backend=be32)
    fit(model, data.train, epochs=15, batch_size=32, optimizer=Adam(model, lr=3e-3), seed=0, progress=False)
    return model.eval(), data


def test_budget_checker_passes_a_pipeline_that_fits_and_returns_its_report(trained, capsys):
    from nnopt_lab.pipeline import Pipeline, ShareWeights

    model, data = trained
    report = X.check_budget_pipeline(lambda: Pipeline([ShareWeights(4, fine_tune_epochs=3)]), model, data, 2000,
                                     max_drop_points=3.0)
    out = capsys.readouterr().out
    assert out.startswith("✓ my_pipeline fits the budget: ") and f"{report.final.bytes:,} B ≤ 2,000 B" in out
    assert report.final.bytes <= 2000 and 100 * (report.baseline.accuracy - report.final.accuracy) <= 3.0
    assert X.diagnose_report(report, 2000, 3.0) is None


def test_budget_checker_reads_the_report_it_ran(trained):
    from nnopt_lab.pipeline import Pipeline, Prune, QuantizeInt8

    model, data = trained
    with pytest.raises(ExerciseFailed, match="over budget: the final model stores .* the budget is 500 B"):
        X.check_budget_pipeline(lambda: [QuantizeInt8()], model, data, 500)       # a list of steps is taken too
    with pytest.raises(ExerciseFailed, match=r"accuracy lost: .* The step that lost most: Prune\(sparsity=0.99"):
        X.check_budget_pipeline(lambda: Pipeline([Prune(0.99)]), model, data, 10 ** 6)


def test_budget_checker_reports_what_the_pipeline_refuses(trained):
    from nnopt_lab.nn.layers import BatchNorm1d, Linear, ReLU, Sequential
    from nnopt_lab.pipeline import QuantizeInt8

    _, data = trained
    with_bn = Sequential(Linear(64, 8), BatchNorm1d(8), ReLU(), Linear(8, 10)).to(data.backend).eval()
    with pytest.raises(ExerciseFailed, match="the pipeline stopped \\(ValueError: QuantizeInt8 got a model with "
                                             "BatchNorm"):
        X.check_budget_pipeline(lambda: [QuantizeInt8()], with_bn, data, 10 ** 6)
