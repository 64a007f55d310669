"""The explorer of chapters/03_1_model_compression.ipynb: its compute function against the
quantizer, k-means and SVD it calls (and numpy's SVD), and a redraw within 200 ms."""
import time

import numpy as np
import pytest

from nnopt_lab import backend as B, models
from nnopt_lab.compression import quantization as Q
from nnopt_lab.widgets import model_compression as W


@pytest.fixture
def setup(backend_name):
    be = B.set_backend(backend_name, "float64")
    B.seed(0)
    model = models.mlp((12, 20, 3), backend=be)
    x = B.to_backend(B.generator(1).standard_normal((40, 12)), be)
    calls = []

    def evaluate(m):
        calls.append(1)
        return float(B.to_numpy(m(x)).sum())          # any function of the model's output
    return model, evaluate, calls


def test_grid_matches_the_modules_it_calls(setup):
    model, evaluate, calls = setup
    w = model[0]._params["weight"].data
    before = B.to_numpy(w).copy()
    grid = W.compression_grid(model, 0, evaluate, bits_options=(8, 2, 1), clusters_options=(4, 2),
                              rank_options=(12, 3, 1), bins=10)
    assert np.array_equal(B.to_numpy(model[0]._params["weight"].data), before)      # model unchanged
    assert len(calls) == 1 + 3 + 2 + 3
    assert sum(grid["original"]) == w.shape[0] * w.shape[1]
    bits = grid["methods"]["bits"]
    rec = Q.quantize_weight(w, 8, "affine", per_channel=True)
    ref = np.linalg.norm(before - B.to_numpy(rec.dequantize())) / np.linalg.norm(before)
    assert abs(bits["error"][0] - ref) <= 1e-12
    assert bits["bytes"][0] == rec.total_bits / 8
    assert bits["bytes"][2] == Q.binarize_weight(w, per_channel=True).total_bits / 8
    rank = grid["methods"]["rank"]
    s = np.linalg.svd(before, compute_uv=False)
    assert rank["error"][0] < 1e-12                                               # full rank: exact
    assert abs(rank["error"][1] - np.sqrt((s[3:] ** 2).sum()) / np.linalg.norm(before)) < 1e-10   # Eckart-Young
    clusters = grid["methods"]["clusters"]
    assert all(sum(c) == sum(grid["original"]) for c in clusters["counts"])
    assert sum(1 for c in clusters["counts"][1] if c) <= 2                           # two values, two bins at most
    assert clusters["error"][1] >= clusters["error"][0]


def test_bad_arguments_are_named(setup):
    model, evaluate, _ = setup
    with pytest.raises(TypeError, match="Linear"):
        W.compression_grid(model, 1, evaluate)
    with pytest.raises(ValueError, match="rank_options"):
        W.compression_grid(model, 0, evaluate, rank_options=(13,))
    with pytest.raises(TypeError, match="evaluate"):
        W.compression_grid(model, 0, 3)


def test_redraw_is_fast_and_only_updates_artists():
    import matplotlib
    matplotlib.use("Agg")
    from nnopt_lab.widgets.figures import redraw_times
    B.set_backend("numpy")
    B.seed(0)
    model = models.mlp((64, 100, 10))
    x = B.randn(50, 64)
    grid = W.compression_grid(model, 0, lambda m: float(B.to_numpy(m(x)).mean()))
    view = W.CompressionView(grid)
    artists = dict(view.artists)
    settings = [dict(method=m, value=v) for m in W.METHODS for v in grid["methods"][m]["options"]]
    times = redraw_times(view, settings, repeats=len(settings))        # update + draw (blitted), as the widget does
    assert all(view.artists[k] is artists[k] for k in artists)
    assert times["frame_ms"] < 200, f"median redraw {times['frame_ms']:.0f} ms"
    view.update("rank", 4)
    assert list(view.artists["marker"].get_xdata()) == [4]
    assert list(view.artists["hist"].get_ydata()) == [max(c, 0.5) for c in grid["methods"]["rank"]["counts"][3]]
    W.static_figure(grid)


def test_explorer_switches_method_and_setting():
    import matplotlib
    matplotlib.use("Agg")
    B.set_backend("numpy")
    B.seed(0)
    model = models.mlp((12, 20, 3))
    x = B.randn(10, 12)
    grid = W.compression_grid(model, 0, lambda m: float(B.to_numpy(m(x)).mean()), clusters_options=(16, 4), rank_options=(8, 4, 2))
    box = W.explorer(grid)
    method, position = box.children[0].children
    method.value = "rank"
    assert list(position.options) == [8, 4, 2]
    position.value = 2
    assert box.figure.axes[0].get_title().endswith("rank 2")
    method.value = "clusters"
    assert list(position.options) == list(grid["methods"]["clusters"]["options"])
    assert "clusters" in box.figure.axes[0].get_title()
