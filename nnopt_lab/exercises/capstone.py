r"""Self-checks for the exercises of chapters/06_capstone.ipynb.

* :func:`check_pareto_front` -- the learner's Pareto front (the indices of the non-dominated
  (cost, accuracy) points, by increasing cost) against
  :func:`nnopt_lab.widgets.capstone.pareto_front` (which tests/test_capstone_widgets.py holds
  equal to the definition checked pair by pair), on fixed small point sets with ties;
* :func:`check_budget_pipeline` -- the learner's pipeline for a budget: the checker looks at the
  order of its steps, runs it (:meth:`nnopt_lab.pipeline.Pipeline.run`) on the chapter's model
  and data, reads the report and says what is wrong -- a step in an impossible order, the
  result over budget (and which step would cut the most), the accuracy lost (and at which step);
* :func:`diagnose_report` -- the same verdict from a report alone (a run the learner made).

A pass prints one line starting with "✓"; a failure raises
:class:`~nnopt_lab.exercises.checks.ExerciseFailed` with the diagnosis; a learner who has not
started is told so.

See: chapters/06_capstone.ipynb
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..validation import check_int, check_number
from ..widgets.capstone import pareto_front
from . import checks
from .checks import ExerciseFailed

__all__ = ["PARETO_CASES", "check_pareto_front", "ORDER_RULES", "order_problem", "diagnose_report",
           "check_budget_pipeline"]

# ----------------------------------------------------------------------------- exercise 1: the front
#: Fixed (costs, accuracies) of :func:`check_pareto_front`: ties in cost, ties in accuracy, an exact
#: duplicate, a single point, and points given in no particular order.
PARETO_CASES = (
    ([4.0, 1.0, 3.0, 2.0], [0.9, 0.5, 0.8, 0.7]),                       # all on the front, shuffled
    ([1.0, 2.0, 3.0, 4.0, 5.0], [0.6, 0.5, 0.9, 0.9, 0.95]),            # a dearer point with the same accuracy
    ([2.0, 2.0, 1.0, 3.0], [0.7, 0.8, 0.8, 0.6]),                       # same cost; the cheapest is the best
    ([10.0, 1.0, 5.0, 5.0, 7.0, 2.0], [0.97, 0.4, 0.9, 0.9, 0.85, 0.6]),  # an exact duplicate
    ([3.0], [0.5]),
)


def _variants(costs: list, accs: list) -> dict[str, list]:
    """What each usual mistake returns on these points."""
    n = range(len(costs))
    by_cost = sorted(n, key=lambda i: (costs[i], -accs[i], i))
    weak, best = [], -1.0
    for i in by_cost:                  # '>=' instead of '>': a dearer point with the same accuracy is kept
        if accs[i] >= best:
            weak.append(i)
            best = accs[i]
    reversed_front = pareto_front([-c for c in costs], accs)        # more cost taken as better
    worst_front = pareto_front(costs, [-a for a in accs])           # less accuracy taken as better
    return {
        "a point with the same accuracy as a cheaper one is kept: it is dominated (keep a point only when "
        "it is strictly more accurate than every cheaper one)": weak,
        "the cost is maximised: a point is better when it costs LESS (bytes, latency)": reversed_front,
        "the accuracy is minimised: a point is better when it is MORE accurate": worst_front,
        "every point is returned: drop the dominated ones": by_cost,
    }


def check_pareto_front(fn: Callable) -> None:
    """Check the learner's ``pareto_front(costs, accuracies) -> list of indices`` (by increasing cost).

    See: chapters/06_capstone.ipynb
    """
    checks.require_function("pareto_front", fn)
    for k, (costs, accs) in enumerate(PARETO_CASES):
        got = checks.call("pareto_front", fn, list(costs), list(accs))
        try:
            got = [int(i) for i in got]
        except (TypeError, ValueError):
            raise ExerciseFailed(f"✗ pareto_front returned {got!r}; expected a list of indices (ints)") from None
        want = pareto_front(costs, accs)
        if got == want:
            continue
        where = f"(costs={list(costs)}, accuracies={list(accs)}: expected {want}, yours {got})"
        if sorted(got) == sorted(want):
            raise ExerciseFailed(f"✗ pareto_front: the right points in the wrong order: sort them by increasing cost "
                                 f"{where}")
        extra = set(got) - set(want)
        if extra and set(want) <= set(got) and all(
                any(costs[i] == costs[j] and accs[i] == accs[j] for j in want) for i in extra):
            raise ExerciseFailed(f"✗ pareto_front: of exactly equal points keep only the first {where}")
        for message, values in _variants(list(costs), list(accs)).items():
            if got == values or sorted(got) == sorted(values):
                raise ExerciseFailed(f"✗ pareto_front: {message} {where}")
        raise ExerciseFailed(f"✗ pareto_front: {where}")
    print(f"✓ pareto_front matches nnopt_lab.widgets.capstone.pareto_front on {len(PARETO_CASES)} point sets "
          f"(ties in cost and in accuracy, an exact duplicate, one point)")


# ----------------------------------------------------------------------------- exercise 2: a budget
#: Orders a pipeline cannot run, by step class name: (earlier step, later step) -> why.
ORDER_RULES = {
    ("QuantizeInt8", "*"): "QuantizeInt8 turns the model into integer codes (an IntegerModel): nothing can be "
                           "pruned, fine-tuned, distilled, shared or quantized after it; make it the last step",
    ("ShareWeights", "Prune"): "pruning after weight sharing zeroes weights that the codebook then no longer "
                               "describes; prune first, then share the weights",
    ("ShareWeights", "Distill"): "distilling after weight sharing trains a fresh float student and throws the "
                                 "codebook away; distil first",
    ("ShareWeights", "QuantizeInt8"): "int8 and k-means codebooks are two ways to store the same weights: choose one",
    ("ShareWeights", "ShareWeights"): "the weights are shared already: share once, with the bits you want",
    ("ShareWeights", "Trim"): "trim (fold BatchNorm, remove emptied units) before sharing the weights",
}


def _steps_of(pipeline: Any) -> list:
    steps = getattr(pipeline, "steps", pipeline)
    try:
        return list(steps)
    except TypeError:
        raise ExerciseFailed(f"✗ my_pipeline returned {type(pipeline).__name__}; expected a Pipeline([...]) or a "
                             f"list of steps (Distill, Prune, FineTune, Trim, QuantizeInt8, ShareWeights)") from None


def order_problem(steps: Sequence[Any]) -> str | None:
    """The first impossible order among ``steps`` (by class name, :data:`ORDER_RULES`), or None.

    See: chapters/06_capstone.ipynb
    """
    names = [type(s).__name__ for s in steps]
    for i, first in enumerate(names):
        for j in range(i + 1, len(names)):
            why = ORDER_RULES.get((first, "*")) or ORDER_RULES.get((first, names[j]))
            if why:
                return f"step {j} ({names[j]}) comes after step {i} ({first}): {why}"
    return None


def _field(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else getattr(row, key)


def diagnose_report(report: Any, budget_bytes: int, max_drop_points: float = 1.0,
                    baseline_accuracy: float | None = None) -> str | None:
    """What is wrong with a pipeline's report for a budget, in words; None when it fits and keeps its accuracy.

    Parameters
    ----------
    report : nnopt_lab.pipeline.Report (or its ``rows``): row 0 the baseline, the last row the result
    budget_bytes : int >= 1, the most bytes the final model may store
    max_drop_points : float >= 0, accuracy percentage points it may lose against the baseline
    baseline_accuracy : float in [0, 1], optional (default: row 0's accuracy)

    See: chapters/06_capstone.ipynb
    """
    budget_bytes = check_int("budget_bytes", budget_bytes, 1)
    max_drop_points = check_number("max_drop_points", max_drop_points, 0.0, 100.0)
    rows = list(getattr(report, "rows", report))
    if not rows:
        raise ValueError("report must hold at least one row (the baseline)")
    base = _field(rows[0], "accuracy") if baseline_accuracy is None else check_number(
        "baseline_accuracy", baseline_accuracy, 0.0, 1.0)
    final = rows[-1]
    steps = [str(_field(r, "step")) for r in rows]
    size, acc = int(_field(final, "bytes")), float(_field(final, "accuracy"))
    drop = 100 * (base - acc)
    if size > budget_bytes:
        cuts = [(int(_field(a, "bytes")) / max(1, int(_field(b, "bytes"))), steps[k + 1])
                for k, (a, b) in enumerate(zip(rows, rows[1:]))]
        sizes = " → ".join(f"{s}: {int(_field(r, 'bytes')):,} B" for s, r in zip(steps, rows))
        hint = ("no step made it smaller: add Prune and a quantization step (QuantizeInt8 or ShareWeights)"
                if not cuts or max(c for c, _ in cuts) <= 1.0 else
                f"the biggest cut was {max(cuts)[1]} ({max(cuts)[0]:.1f}x); prune more, quantize to fewer bits "
                f"or distil into a smaller student")
        also = (f" It also loses {drop:.1f} points of accuracy (at most {max_drop_points:g} allowed)."
                if drop > max_drop_points + 1e-9 else "")
        return (f"over budget: the final model stores {size:,} B, the budget is {budget_bytes:,} B "
                f"({size / budget_bytes:.2f}x too big). Sizes: {sizes}. {hint}.{also}")
    if drop > max_drop_points + 1e-9:
        accs = [float(_field(r, "accuracy")) for r in rows]
        losses = [(100 * (a - b), steps[k + 1]) for k, (a, b) in enumerate(zip(accs, accs[1:]))]
        worst = max(losses) if losses else (drop, steps[-1])
        return (f"accuracy lost: {100 * acc:.1f} % against the baseline's {100 * base:.1f} % "
                f"({drop:.1f} points, at most {max_drop_points:g} allowed). The step that lost most: {worst[1]} "
                f"({worst[0]:.1f} points); fine-tune after it (FineTune, or Prune's fine_tune_epochs), prune less, "
                f"or use per-channel int8 instead of fewer bits")
    return None


def check_budget_pipeline(build: Callable, model: Any, data: Any, budget_bytes: int, *,
                          max_drop_points: float = 1.0, seed: int = 0, baseline_accuracy: float | None = None) -> Any:
    """Check the learner's ``my_pipeline()`` for a budget: order, then a run, then the report.

    Parameters
    ----------
    build : callable
        The learner's ``my_pipeline()`` returning a :class:`nnopt_lab.pipeline.Pipeline` (or a
        list of steps).
    model : Sequential, the trained baseline (left unchanged)
    data : nnopt_lab.datasets.Dataset
    budget_bytes : int >= 1
    max_drop_points : float, accuracy points the result may lose against the baseline
    seed : int, the run's seed
    baseline_accuracy : float, optional; default the report's first row

    Returns
    -------
    The report, when the pipeline passes (prints one ✓ line).

    See: chapters/06_capstone.ipynb
    """
    checks.require_function("my_pipeline", build)
    pipeline = checks.call("my_pipeline", build)
    steps = _steps_of(pipeline)
    if not steps:
        raise ExerciseFailed("✗ my_pipeline: the pipeline has no steps; the baseline alone does not fit the budget")
    problem = order_problem(steps)
    if problem:
        raise ExerciseFailed(f"✗ my_pipeline: a step in an impossible order: {problem}")
    from ..pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        try:
            pipeline = Pipeline(steps)
        except (TypeError, ValueError) as err:
            raise ExerciseFailed(f"✗ my_pipeline: Pipeline(steps) refused the steps: {err}") from None
    try:
        report = pipeline.run(model, data, seed=seed, latency=False)
    except (TypeError, ValueError) as err:
        raise ExerciseFailed(f"✗ my_pipeline: the pipeline stopped ({type(err).__name__}: {err}); a step in an "
                             f"order it cannot take, or a parameter out of range") from None
    message = diagnose_report(report, budget_bytes, max_drop_points, baseline_accuracy)
    if message:
        raise ExerciseFailed(f"✗ my_pipeline: {message}")
    rows = report.rows
    base = _field(rows[0], "accuracy") if baseline_accuracy is None else baseline_accuracy
    print(f"✓ my_pipeline fits the budget: {int(_field(rows[-1], 'bytes')):,} B ≤ {budget_bytes:,} B "
          f"({int(_field(rows[0], 'bytes')) / int(_field(rows[-1], 'bytes')):.1f}x smaller than the baseline), "
          f"accuracy {100 * float(_field(rows[-1], 'accuracy')):.1f} % against {100 * base:.1f} % "
          f"(at most {max_drop_points:g} point{'s' if max_drop_points != 1 else ''} lost)")
    return report
