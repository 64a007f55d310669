"""The explorer of chapters/05_3_quantization.ipynb (nnopt_lab/widgets/quantization.py): the sweep equals the
same simulated quantization done with torch.ao's observers and fake-quantize ops, the look-up, and a redraw
timed (median update + draw on Agg, failing only far above the 200 ms budget)."""
import statistics
import time

import pytest
import torch

from nnopt_lab import backend as B, models
from nnopt_lab.widgets import quantization as W

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _setup(be, n=60, d=8, hidden=12, classes=4, seed=0):
    g = B.generator(seed)
    model = models.mlp((d, hidden, classes), backend=be).eval()
    x = B.to_backend(g.normal(0.0, 1.0, (n, d)), be)
    y = B.to_backend(g.integers(0, classes, n), be, "int64")
    cal = B.to_backend(g.normal(0.0, 1.0, (40, d)), be)
    return model, cal, (x, y)


def _torch_logits(model, cal, x, bits, per_channel):
    """Simulated quantization with torch.ao observers (min-max) and torch's fake-quantize kernels."""
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver
    top = 2 ** (bits - 1) - 1
    layers = []
    for layer in model:
        if hasattr(layer, "in_features"):
            w = torch.as_tensor(B.to_numpy(layer._params["weight"].data))
            b = torch.as_tensor(B.to_numpy(layer._params["bias"].data))
            if per_channel:
                obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                               quant_min=-top, quant_max=top)
                obs(w)
                s, z = obs.calculate_qparams()
                w = torch.fake_quantize_per_channel_affine(w, s, z.to(torch.int32), 0, -top, top)
            else:
                obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-top, quant_max=top)
                obs(w)
                s, z = obs.calculate_qparams()
                w = torch.fake_quantize_per_tensor_affine(w, float(s), int(z), -top, top)
            layers.append(("linear", w, b))
        else:
            layers.append(("relu", None, None))
    h = torch.as_tensor(B.to_numpy(cal))
    qparams = []
    for kind, w, b in layers:                         # calibrate on the float model's activations
        if kind == "linear":
            obs = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=2 ** bits - 1)
            obs(h)
            s, z = obs.calculate_qparams()
            qparams.append((float(s), int(z)))
            h = h @ torch.as_tensor(B.to_numpy(model[len(qparams) * 2 - 2]._params["weight"].data)).T + b
        else:
            h = torch.relu(h)
    h = torch.as_tensor(B.to_numpy(x))
    k = 0
    for kind, w, b in layers:
        if kind == "linear":
            h = torch.fake_quantize_per_tensor_affine(h, *qparams[k], 0, 2 ** bits - 1)
            h = h @ w.T + b
            k += 1
        else:
            h = torch.relu(h)
    return h.double().numpy()


def test_the_sweep_equals_torch_ao_observers_and_fake_quantize(be32):
    model, cal, test = _setup(be32)
    data = W.quantization_sweep(model, cal, test, bits=(8, 4, 3), methods=("minmax",), bins=11)
    reference = B.to_numpy(model.forward(test[0])).astype("float64")
    labels = B.to_numpy(test[1])
    for i, bits in enumerate(data["bits"]):
        for g, per_channel in enumerate((False, True)):
            logits = _torch_logits(model, cal, test[0], bits, per_channel)
            err = logits - reference
            assert data["accuracy"][i][g][0] == float((logits.argmax(1) == labels).mean())
            assert data["rms"][i][g][0] == pytest.approx(float((err ** 2).mean() ** 0.5), rel=1e-4, abs=1e-7)
            assert sum(data["counts"][i][g][0]) == err.size
    assert data["float_accuracy"] == float((reference.argmax(1) == labels).mean())
    assert data["rms"][0][0][0] < data["rms"][1][0][0] < data["rms"][2][0][0]      # fewer bits, larger error
    assert B.to_numpy(model.forward(test[0])).astype("float64") == pytest.approx(reference)   # model restored


def test_the_histogram_edges_are_symmetric_and_hold_every_logit():
    model, cal, test = _setup("numpy")
    data = W.quantization_sweep(model, cal, test, bits=(6, 2), methods=("minmax", "percentile"), bins=9)
    for edges in data["edges"]:
        assert len(edges) == 10 and edges[0] == pytest.approx(-edges[-1]) and edges[0] < 0
    n = test[0].shape[0] * 4
    assert all(sum(c) == n for row in data["counts"] for g in row for c in g)
    lo, hi = data["ranges"][0][0]
    x = B.to_numpy(cal)
    assert lo <= x.min() + 1e-6 and hi >= x.max() - 1e-6             # min-max covers the calibration inputs


@pytest.mark.parametrize("call, error, words", [
    (lambda m, c, t: W.quantization_sweep([m], c, t), TypeError, "model must be an nnopt_lab Sequential"),
    (lambda m, c, t: W.quantization_sweep(m, c, t, bits=(1,)), ValueError, r"bits\[0\] must be"),
    (lambda m, c, t: W.quantization_sweep(m, c, t, bits=(4, 4)), ValueError, "must not repeat"),
    (lambda m, c, t: W.quantization_sweep(m, c, t, bits=()), ValueError, "at least one"),
    (lambda m, c, t: W.quantization_sweep(m, c, t, methods=("histogram",)), ValueError, r"methods\[0\] must be one of"),
    (lambda m, c, t: W.quantization_sweep(m, c, (t[0], t[1][:3])), ValueError, "as many inputs as labels"),
    (lambda m, c, t: W.quantization_sweep(m, c, t[0]), TypeError, "test must be a pair"),
    (lambda m, c, t: W.quantization_sweep(m, c, t, bins=2), ValueError, "bins must be"),
])
def test_the_sweep_refuses(call, error, words):
    with pytest.raises(error, match=words):
        call(*_setup("numpy"))


def _data():
    bits = [8, 4, 2]
    acc = [[[0.9, 0.89], [0.91, 0.9]], [[0.8, 0.85], [0.88, 0.87]], [[0.1, 0.3], [0.4, 0.5]]]
    return {"bits": bits, "methods": ["minmax", "mse"], "granularities": list(W.GRANULARITIES), "float_accuracy": 0.92,
            "accuracy": acc, "rms": [[[0.01 * (b + 1) * (m + 1)] * 2 for m in range(2)] for b in range(3)],
            "counts": [[[[k, 2 * k, 5, 2 * k, k] for _ in range(2)] for _ in range(2)] for k in (1, 3, 9)],
            "edges": [[-t, -t / 2, -t / 5, t / 5, t / 2, t][:6] for t in (0.1, 1.0, 5.0)],
            "ranges": [[(-1.0, 2.0), (-0.5, 1.5)] for _ in range(3)]}


def test_explore_is_a_lookup():
    r = W.explore(_data(), 1, 0, 1)
    assert (r["bits"], r["granularity"], r["method"], r["accuracy"]) == (4, "per tensor", "mse", 0.85)
    assert r["drop"] == pytest.approx(7.0) and r["range"] == (-0.5, 1.5) and r["counts"] == [3, 6, 5, 6, 3]
    with pytest.raises(ValueError, match="bits_index must be"):
        W.explore(_data(), 3, 0, 0)
    with pytest.raises(ValueError, match="method_index must be"):
        W.explore(_data(), 0, 0, 2)


def test_the_view_redraws_within_budget_and_the_widget_responds():
    import matplotlib
    matplotlib.use("Agg")
    model, cal, test = _setup("numpy")
    data = W.quantization_sweep(model, cal, test, bits=(8, 6, 4, 3, 2), methods=("minmax", "percentile", "mse"))
    view = W.QuantizationView(data)
    times = []
    for k in range(11):
        start = time.perf_counter()
        view.update(k % 5, k % 2, k % 3)
        view.draw()                 # fig.canvas.draw() of the static part (once per bits), then the moving artists
        times.append(time.perf_counter() - start)
    median = statistics.median(times[1:])
    print(f"QuantizationView update + draw: median {1e3 * median:.0f} ms over 10 redraws (budget 200 ms), "
          f"first (every background cold) {1e3 * times[0]:.0f} ms")
    assert median < 0.6, f"median redraw {1e3 * median:.0f} ms"
    r = view.update(2, 1, 2)
    assert list(view.marker.get_xdata()) == [4] and list(view.marker.get_ydata()) == [100 * r["accuracy"]]
    assert view.lines[2].get_linewidth() > view.lines[0].get_linewidth()
    values, edges, _ = view.hist.get_data()
    assert sum(values) == pytest.approx(100.0) and list(edges) == pytest.approx(r["edges"])
    assert list(values) == pytest.approx([100 * c / sum(r["counts"]) for c in r["counts"]])
    assert "4 bits, per channel, mse" in view.hist_title.get_text()
    fresh = W.QuantizationView(data)
    fresh.update(2, 1, 2)
    assert fresh.frame() == view.frame()           # blitting over a kept background draws what a fresh figure does
    widget = W.explorer(data)
    first = widget.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    widget.controls["bits_index"].value = 4
    assert widget.image.value != first
    for ax in (view.ax_acc, view.ax_hist):
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
