"""The explorer and experiment helpers of chapters/03_3_model_trimming.ipynb (nnopt_lab/widgets/model_trimming.py):
pruning stand-in, sweeps whose bytes and MACs are computed by hand, the pure look-up, and a redraw within 200 ms."""
import copy
import statistics
import time

import pytest

from nnopt_lab import backend as B, models
from nnopt_lab.compression import trimming as T
from nnopt_lab.training import evaluate
from nnopt_lab.widgets import model_trimming as W


def _data(be, n=40, d=8, classes=3, seed=0):
    g = B.generator(seed)
    return B.to_backend(g.normal(0.0, 1.0, (n, d)), be), B.to_backend(g.integers(0, classes, n), be, "int64")


def test_mask_smallest_units_masks_rows_and_bias_of_the_smallest_l1_norm(be64):
    model = models.mlp((8, 6, 3), backend=be64)
    w = model[0]._params["weight"]
    scales = [3.0, 0.1, 2.0, 0.2, 1.0, 0.05]          # L1 norms ordered by these factors
    w.data = w.data * B.to_backend([[s] for s in scales], be64)
    dropped = W.mask_smallest_units(model, 0, 3)
    assert dropped == [1, 3, 5]
    rows = B.to_numpy(w.data)
    assert all((rows[u] == 0).all() for u in dropped) and all((rows[u] != 0).all() for u in (0, 2, 4))
    assert B.to_numpy(model[0]._params["bias"].data)[dropped].tolist() == [0.0, 0.0, 0.0]
    assert T.dead_units(model[0]) == dropped
    x, _ = _data(be64)
    small = T.remove_units(model, 0)
    assert small[0].out_features == 3
    assert abs(B.to_numpy(small.forward(x)) - B.to_numpy(model.forward(x))).max() < 1e-12


def test_mask_smallest_units_on_a_conv_and_twice(be64):
    model = models.small_cnn(channels=(4,), backend=be64)
    assert W.mask_smallest_units(model, 0, 1) != []
    second = W.mask_smallest_units(model, 0, 2)           # the masked one has norm 0: it stays among the smallest
    assert len(second) == 2 and len(T.dead_units(model[0])) == 2


@pytest.mark.parametrize("call, error, words", [
    (lambda m: W.mask_smallest_units(m, 1, 1), ValueError, "layer must be the index of a Linear or Conv2d, got 1"),
    (lambda m: W.mask_smallest_units(m, 0, 6), ValueError, "count must be"),
    (lambda m: W.mask_smallest_units(m, 0, "1"), TypeError, "count must be an int"),
    (lambda m: W.mask_smallest_units([m], 0, 1), TypeError, "model must be an nnopt_lab Sequential"),
])
def test_mask_smallest_units_refuses(call, error, words):
    with pytest.raises(error, match=words):
        call(models.mlp((8, 6, 3)))


def test_interleaved_latency_gives_a_median_per_model():
    nets = {"a": models.mlp((8, 6, 3)).eval(), "b": models.mlp((8, 3)).eval()}
    out = W.interleaved_latency(nets, (8,), batch_size=2, rounds=2, repeats=3)
    assert set(out) == {"a", "b"} and all(isinstance(v, float) and v > 0 for v in out.values())
    with pytest.raises(ValueError, match="rounds must be"):
        W.interleaved_latency(nets, (8,), rounds=0)


def test_merge_sweep_merges_exact_duplicates_at_tolerance_zero(be64):
    model = models.mlp((8, 4, 3), backend=be64)
    w, b = model[0]._params["weight"], model[0]._params["bias"]
    w.data[2], b.data[2] = w.data[0], b.data[0]             # unit 2 duplicates unit 0
    data = _data(be64)
    sweep = W.merge_sweep(model, [0], [0.0, 100.0], data)
    assert sweep["units_before"] == 4 and sweep["units"] == [3, 1] and sweep["per_layer"] == [[3], [1]]
    assert sweep["accuracy"][0] == sweep["accuracy_before"] == evaluate(model, data)[1]
    assert sweep["bytes"][0] == 4 * ((8 + 1) * 3 + (3 + 1) * 3) and sweep["bytes_before"] == 4 * (9 * 4 + 5 * 3)
    with pytest.raises(ValueError, match=r"tolerances\[1\] must be"):
        W.merge_sweep(model, [0], [0.0, -1.0], data)


def test_removal_sweep_shrinks_bytes_and_macs_by_the_hand_computed_amounts(be64):
    model = models.mlp((8, 6, 3), backend=be64)
    data = _data(be64)
    sweep = W.removal_sweep(model, 0, [0, 2, 5], data, (8,))
    assert sweep["units_before"] == 6 and sweep["count"] == [0, 2, 5]
    assert sweep["bytes"] == [4 * ((8 + 1) * h + (h + 1) * 3) for h in (6, 4, 1)]
    assert sweep["macs"] == [8 * h + h * 3 for h in (6, 4, 1)]
    assert sweep["accuracy"][0] == evaluate(model, data)[1]
    assert T.dead_units(model[0]) == []                      # the model passed in is left alone


def test_removal_sweep_equals_masking_then_evaluating(be64):
    model = models.small_cnn(channels=(4, 6), backend=be64).eval()
    g = B.generator(1)
    x, y = B.to_backend(g.normal(0.0, 1.0, (12, 1, 8, 8)), be64), B.to_backend(g.integers(0, 10, 12), be64, "int64")
    sweep = W.removal_sweep(model, 3, [3], (x, y), (1, 8, 8))
    masked = copy.deepcopy(model)
    W.mask_smallest_units(masked, 3, 3)
    assert sweep["accuracy"] == [evaluate(masked, (x, y))[1]]
    assert sweep["macs"][0] == 8 * 8 * 4 * 9 + 4 * 4 * 3 * 4 * 9 + 3 * 2 * 2 * 10


def _sweeps():
    merge = {"tolerance": [0.0, 0.1, 0.2], "units": [10, 8, 3], "per_layer": [[10], [8], [3]],
             "accuracy": [0.9, 0.8, 0.2], "bytes": [100, 80, 30], "units_before": 10, "bytes_before": 100,
             "accuracy_before": 0.9}
    removal = {"count": [0, 2, 4], "accuracy": [0.9, 0.7, 0.3], "bytes": [100, 70, 40], "macs": [1000, 600, 200],
               "units_before": 8}
    return merge, removal


def test_explore_is_a_lookup():
    merge, removal = _sweeps()
    r = W.explore(merge, removal, 1, 2)
    assert (r["tolerance"], r["units"], r["merge_accuracy"], r["merge_bytes"]) == (0.1, 8, 0.8, 80)
    assert (r["count"], r["removal_accuracy"], r["removal_bytes"], r["removal_macs"]) == (4, 0.3, 40, 200)
    assert r["merge_bytes_ratio"] == 0.8 and r["removal_macs_ratio"] == 0.2
    with pytest.raises(ValueError, match="tol_index must be"):
        W.explore(merge, removal, 3, 0)
    with pytest.raises(ValueError, match="count_index must be"):
        W.explore(merge, removal, 0, -1)


def test_the_explorer_redraws_within_200_ms_and_shows_a_png():
    merge, removal = _sweeps()
    view = W._Explorer(merge, removal)
    times = []
    for k in range(9):
        start = time.perf_counter()
        view.update(k % 3, (k + 1) % 3)
        png = view.frame()
        times.append(time.perf_counter() - start)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert statistics.median(times) < 0.2, f"median redraw {statistics.median(times):.3f} s"
    assert view.text.get_text().startswith("merge at tolerance 0.2: 3 hidden units, 20.0 %, 30 B")
    assert "0 removed: 90.0 %, 100 B, 1,000 MACs (100 % of the MACs)" in view.text.get_text()
    assert list(view.marker.get_xdata()) == [0.2] and list(view.marker2.get_xdata()) == [0]
    widget = W.explorer(merge, removal)
    first = widget.children[1].value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    widget.children[0].children[0].value = 0 if widget.children[0].children[0].value else 2
    assert widget.children[1].value != first                 # moving a slider redraws the image


def test_plot_sweeps_labels_every_axis():
    merge, removal = _sweeps()
    fig, axes = W.plot_sweeps(merge, removal)
    for ax in axes:
        assert ax.get_ylabel()
    assert axes[0].get_title() and axes[2].get_title() and axes[0].get_xlabel() and axes[2].get_xlabel()
