"""The explorer of chapters/06_capstone.ipynb (nnopt_lab/widgets/capstone.py): the Pareto front and the
best pipeline for a budget against brute force over seeded random records, the precomputed look-up
tables, the refusals, and one figure that redraws fast."""
import random
import statistics
import time

import pytest

from nnopt_lab.widgets import capstone as W

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _dominated(i, costs, accs):
    """Brute force: some other point is no worse in both and strictly better in one."""
    return any((costs[j] <= costs[i] and accs[j] >= accs[i]) and (costs[j] < costs[i] or accs[j] > accs[i])
               for j in range(len(costs)) if j != i)


def _random_points(rng, n):
    # small integer grids: many ties in cost, in accuracy, and exact duplicates
    return [float(rng.randint(1, 8)) for _ in range(n)], [rng.randint(0, 6) / 6 for _ in range(n)]


def test_pareto_front_is_the_set_of_non_dominated_points_by_increasing_cost():
    rng = random.Random(0)
    for trial in range(300):
        costs, accs = _random_points(rng, rng.randint(1, 12))
        front = W.pareto_front(costs, accs)
        undominated = [i for i in range(len(costs)) if not _dominated(i, costs, accs)]
        # of exact duplicates among the undominated, the first index is the one kept
        firsts = [i for i in undominated
                  if not any(costs[j] == costs[i] and accs[j] == accs[i] for j in undominated if j < i)]
        assert sorted(front) == firsts, (trial, costs, accs)
        assert [costs[i] for i in front] == sorted(costs[i] for i in front)
        assert all(accs[a] < accs[b] for a, b in zip(front, front[1:]))


def _records(rng, n, latency=True):
    out = []
    for k in range(n):
        r = {"name": f"p{k}", "accuracy": rng.randint(50, 100) / 100, "bytes": rng.randint(1, 30) * 100}
        if latency:
            r["latency_ms"] = rng.randint(1, 20) / 100
        out.append(r)
    return out


def test_best_for_budget_is_the_most_accurate_that_fits_then_the_cheapest():
    rng = random.Random(1)
    for _ in range(200):
        recs = _records(rng, rng.randint(1, 10))
        kind = rng.choice(["bytes", "latency"])
        key = "bytes" if kind == "bytes" else "latency_ms"
        budget = rng.choice([r[key] for r in recs]) * rng.choice([0.5, 1.0, 1.3])
        fits = [i for i, r in enumerate(recs) if r[key] <= budget]
        got = W.best_for_budget(recs, budget, kind)
        if not fits:
            assert got is None
            continue
        top = max(recs[i]["accuracy"] for i in fits)
        cheapest = min(recs[i][key] for i in fits if recs[i]["accuracy"] == top)
        assert recs[got]["accuracy"] == top and recs[got][key] == cheapest and got in fits


def test_explorer_data_looks_up_the_same_answers_on_every_budget_of_its_grid():
    rng = random.Random(2)
    recs = _records(rng, 25)
    data = W.explorer_data(recs, baseline=3)
    assert data["baseline"] == 3
    for kind, key in (("bytes", "bytes"), ("latency", "latency_ms")):
        d = data[kind]
        assert d["budgets"] == sorted({float(r[key]) for r in recs})
        assert d["best"] == [W.best_for_budget(recs, b, kind) for b in d["budgets"]]
        assert d["front"] == W.pareto_front([r[key] for r in recs], [r["accuracy"] for r in recs])
        assert d["best"][-1] == max(range(len(recs)), key=lambda i: (recs[i]["accuracy"], -recs[i][key], -i))
    grid = W.explorer_data(recs, budgets_bytes=[50, 1000, 5000])["bytes"]
    assert grid["budgets"] == [50, 1000, 5000] and grid["best"][0] is None


def test_records_without_latency_give_the_bytes_budget_only():
    data = W.explorer_data(_records(random.Random(3), 5, latency=False))
    assert "bytes" in data and "latency" not in data
    with pytest.raises(ValueError, match="needs a 'latency_ms'"):
        W.best_for_budget(_records(random.Random(3), 5, latency=False), 1.0, "latency")


class _Row:
    def __init__(self, step, accuracy, bytes, latency_b1_ms):
        self.step, self.accuracy, self.bytes, self.latency_b1_ms = step, accuracy, bytes, latency_b1_ms


class _Report:
    def __init__(self, rows):
        self.rows = rows


def test_record_from_report_takes_the_final_row_and_keeps_the_route():
    report = _Report([_Row("baseline", 0.97, 17000, 0.05), _Row("Prune(0.9)", 0.95, 4000, 0.04),
                      _Row("QuantizeInt8()", 0.94, 1200, 0.02)])
    rec = W.record_from_report("prune → int8", report)
    assert (rec["name"], rec["accuracy"], rec["bytes"], rec["latency_ms"]) == ("prune → int8", 0.94, 1200, 0.02)
    assert [p["step"] for p in rec["path"]] == ["baseline", "Prune(0.9)", "QuantizeInt8()"]
    assert [p["bytes"] for p in rec["path"]] == [17000, 4000, 1200]
    rows = [{"step": "baseline", "accuracy": 0.9, "bytes": 10, "latency_b64_ms": 1.0}]
    assert W.record_from_report("b", rows, latency_key="latency_b64_ms")["latency_ms"] == 1.0


@pytest.mark.parametrize("call, error, words", [
    (lambda: W.pareto_front([1, 2], [0.5]), ValueError, "same length"),
    (lambda: W.pareto_front([1, float("nan")], [0.5, 0.6]), ValueError, r"costs\[1\] must be"),
    (lambda: W.best_for_budget([{"name": "a", "accuracy": 1.5, "bytes": 3}], 10), ValueError,
     r"records\[0\]\['accuracy'\] must be"),
    (lambda: W.best_for_budget([{"name": "a", "accuracy": 0.5, "bytes": 0}], 10), ValueError,
     r"records\[0\]\['bytes'\] must be"),
    (lambda: W.best_for_budget([{"name": "a", "accuracy": 0.5}], 10), ValueError, r"lacks \['bytes'\]"),
    (lambda: W.best_for_budget([], 10), ValueError, "at least one pipeline record"),
    (lambda: W.best_for_budget([{"name": "a", "accuracy": 0.5, "bytes": 3}], 0), ValueError, "budget must be"),
    (lambda: W.best_for_budget([{"name": "a", "accuracy": 0.5, "bytes": 3}], 5, "flops"), ValueError, "kind must be"),
    (lambda: W.explorer_data([{"name": "a", "accuracy": 0.5, "bytes": 3}], budgets_bytes=[5, 2]), ValueError,
     "increasing"),
    (lambda: W.explorer_data([{"name": "a", "accuracy": 0.5, "bytes": 3}], baseline=1), ValueError, "baseline must be"),
    (lambda: W.record_from_report("x", _Report([])), ValueError, "at least one row"),
    (lambda: W.record_from_report("x", [{"step": "a", "accuracy": 0.5}]), ValueError, "lacks a field"),
    (lambda: W.record_from_report("", [{"step": "a", "accuracy": 0.5, "bytes": 1, "latency_b1_ms": 1}]), TypeError,
     "name must be"),
])
def test_refusals_name_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


def _view_records():
    rng = random.Random(4)
    recs = [{"name": "baseline", "accuracy": 0.975, "bytes": 17480, "latency_ms": 0.06}] + _records(rng, 30)
    recs[1]["path"] = [{"step": "baseline", "accuracy": 0.975, "bytes": 17480, "latency_ms": 0.06},
                       {"step": "Prune", "accuracy": recs[1]["accuracy"], "bytes": recs[1]["bytes"],
                        "latency_ms": recs[1]["latency_ms"]}]
    return recs


def test_the_view_marks_the_best_record_and_redraws_fast():
    data = W.explorer_data(_view_records())
    view = W.BudgetView(data, paths=[1])
    j = len(data["bytes"]["budgets"]) // 2
    out = view.update("bytes", j)
    best = data["bytes"]["best"][j]
    assert out == {"budget": data["bytes"]["budgets"][j], "best": best}
    r = data["records"][best]
    assert list(view.rings["bytes"].get_xdata()) == [r["bytes"] / 1024]
    assert list(view.rings["latency"].get_ydata()) == [100 * r["accuracy"]]
    assert f"best is '{r['name']}'" in view.title.get_text()
    assert view.lines["bytes"].get_visible() and not view.lines["latency"].get_visible()
    none = W.explorer_data(_view_records(), budgets_bytes=[1.0, 1e6])
    v2 = W.BudgetView(none)
    v2.update("bytes", 0)
    assert "no pipeline fits" in v2.title.get_text() and list(v2.rings["bytes"].get_xdata()) == []
    for ax in view.axes.values():
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    times = []
    for k in range(10):
        start = time.perf_counter()
        kind = "bytes" if k % 2 else "latency"
        view.update(kind, k % len(data[kind]["budgets"]))
        view.draw()                              # what the widget's frame() draws: blitted over the static panels
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    full = []
    for k in range(10):                          # and a full re-render of the whole figure, for comparison
        start = time.perf_counter()
        view.update("bytes", k % len(data["bytes"]["budgets"]))
        view.fig.canvas.draw()
        full.append(time.perf_counter() - start)
    print(f"capstone explorer: update + draw median {1e3 * median:.1f} ms over 10 (budget 200 ms); "
          f"update + a full fig.canvas.draw() {1e3 * statistics.median(full):.0f} ms")
    assert median < 0.6, f"median redraw {1e3 * median:.0f} ms (budget 200 ms; failing only above 600 ms)"
    assert statistics.median(full) < 0.6, f"full redraw {1e3 * statistics.median(full):.0f} ms"
    with pytest.raises(ValueError, match="index must be"):
        view.update("bytes", len(data["bytes"]["budgets"]))


def test_the_widget_switches_budget_kind_and_slider_options_and_redraws_the_image():
    pytest.importorskip("ipywidgets")
    data = W.explorer_data(_view_records())
    box = W.explorer(data)
    kind, slider = box.children[0].children
    first = box.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(slider.options) == len(data["bytes"]["budgets"]) and slider.options[0][0].endswith(" B")
    slider.value = 0
    assert box.image.value != first                          # moving the slider redraws
    assert box.view.title.get_text().startswith(f"budget ≤ {data['bytes']['budgets'][0]:.0f} B")
    kind.value = "latency"
    assert len(slider.options) == len(data["latency"]["budgets"]) and slider.options[0][0].endswith(" ms")
    assert slider.value == len(data["latency"]["budgets"]) - 1
    assert box.view.lines["latency"].get_visible() and not box.view.lines["bytes"].get_visible()


def test_record_from_a_real_pipeline_report(be32):
    from nnopt_lab import datasets, models
    from nnopt_lab.pipeline import Pipeline, Prune, ShareWeights

    data = datasets.load_digits(backend=be32, seed=0)
    model = models.mlp((64, 16, 10), backend=be32).eval()
    report = Pipeline([Prune(0.5), ShareWeights(3)]).run(model, data, seed=0, repeats=2)
    rec = W.record_from_report("prune → share", report)
    assert [p["bytes"] for p in rec["path"]] == [r.bytes for r in report.rows]
    assert [p["latency_ms"] for p in rec["path"]] == [r.latency_b1_ms for r in report.rows]
    assert (rec["accuracy"], rec["bytes"]) == (report.final.accuracy, report.final.bytes)
    b64 = W.record_from_report("b64", report, latency_key="latency_b64_ms")
    assert b64["latency_ms"] == report.final.latency_b64_ms
    data_ = W.explorer_data([W.record_from_report("baseline", report.rows[:1]), rec])
    assert data_["bytes"]["best"][-1] in (0, 1) and data_["bytes"]["best"][0] == 1   # the smaller one fits first
    nolat = Pipeline([]).run(model, data, seed=0, latency=False)
    assert "latency" not in W.explorer_data([W.record_from_report("x", nolat)])     # no latency measured
    with pytest.raises(ValueError, match=r"budgets_latency was given but records \['x'\] have no latency_ms"):
        W.explorer_data([W.record_from_report("x", nolat)], budgets_latency=[1.0])
