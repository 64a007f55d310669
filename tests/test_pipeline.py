"""The capstone pipeline: every step equals the per-technique functions run by hand, bytes as stored
against hand-counted (scipy CSR) numbers, one seed -> one report, clear errors for steps in an
order that cannot work, and the report's table / JSON / CSV (atomic) / best_within / pareto."""
import copy
import csv
import json
import math
import os

import numpy as np
import pytest
import scipy.sparse

from nnopt_lab import backend as B
from nnopt_lab import datasets, measure, models
from nnopt_lab import pipeline as P
from nnopt_lab.compression import pruning, trimming
from nnopt_lab.compression import quantization as Q
from nnopt_lab.compression.weight_sharing import SharedLayer, share_weights
from nnopt_lab.inference.distillation import DistillationLoss
from nnopt_lab.nn import layers as L
from nnopt_lab.training import fit
from nnopt_lab.training.loop import evaluate
from nnopt_lab.training.optim import SGD

SEED = 3


def _has_int8():
    from nnopt_lab.inference import integer
    return hasattr(integer, "convert") and hasattr(integer, "IntegerModel")


needs_int8 = pytest.mark.skipif(not _has_int8(), reason="nnopt_lab.inference.integer.convert not written yet")


@pytest.fixture(scope="module")
def digits64():
    return datasets.load_digits(B.get_backend("numpy", "float64"))


def _trained(data, sizes=(64, 24, 16, 10), batchnorm=False, epochs=4):
    B.seed(0)
    model = models.mlp(sizes, batchnorm=batchnorm, backend=data.backend)
    fit(model, data.train, epochs=epochs, batch_size=64, optimizer=SGD(model, lr=0.05, momentum=0.9), seed=0,
        progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def trained64(digits64):
    return _trained(digits64)


def _weights(model):
    return {k: B.to_numpy(v) for k, v in model.state_dict().items()}


def _same_weights(a, b, exact=True):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if exact:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
        else:
            np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _ft(model, data, seed, epochs, lr):
    """What a training step runs: fit with SGD(momentum 0.9), batch 64, the step's seed."""
    fit(model, data.train, epochs=epochs, batch_size=64, seed=seed, progress=False,
        optimizer=SGD(model, lr=lr, momentum=0.9))


def _hand_bytes(model):
    """Bytes as stored, counted independently: scipy's CSR (float32 values, int32 indices) or dense."""
    total = 0
    for layer in model:
        if isinstance(layer, (L.Linear, L.Conv2d)):
            p = layer._params["weight"]
            w = B.to_numpy(p.masked(p.data)).reshape(p.shape[0], -1)
            csr = scipy.sparse.csr_matrix(w)
            sparse = csr.nnz * 4 + csr.nnz * 4 + (w.shape[0] + 1) * 4
            total += min(w.size * 4, sparse) if csr.nnz < w.size else w.size * 4
            total += 4 * (layer._params["bias"].shape[0] if "bias" in layer._params else 0)
        elif layer._params:
            total += 4 * sum(math.prod(p.shape) for p in layer.parameters())
    return total


# ----------------------------------------------------------------------------- measuring
def test_baseline_row_is_the_model_measured_by_hand(digits64, trained64):
    report = P.Pipeline([]).run(trained64, digits64, seed=SEED, latency=False)
    row = report.rows[0]
    assert row.step == "baseline" and row.kind == "float" and len(report.rows) == 1
    assert row.accuracy == evaluate(trained64, digits64.test)[1]
    assert row.val_accuracy == evaluate(trained64, digits64.val)[1]
    assert row.bytes == 4 * (64 * 24 + 24 + 24 * 16 + 16 + 16 * 10 + 10) == measure.model_bytes(trained64, "float32")
    assert row.macs == 64 * 24 + 24 * 16 + 16 * 10 and row.params == row.bytes // 4
    assert row.compression == 1.0 and row.sparsity == 0.0 and row.storage == "dense"
    assert row.latency_b1_ms is None and row.latency_b64_ms is None


def test_stored_bytes_uses_csr_only_where_it_is_smaller(digits64, trained64):
    for sparsity in (0.0, 0.3, 0.6, 0.95):
        model = copy.deepcopy(trained64)
        if sparsity:
            pruning.prune(model, sparsity, scope="layer")
        size, fmt = P.stored_bytes(model, detail=True)
        assert size == _hand_bytes(model)
        assert fmt == {0.0: "dense", 0.3: "dense", 0.6: "csr", 0.95: "csr"}[sparsity]


def test_latency_is_measured_at_batch_1_and_64(digits64, trained64):
    row = P.Pipeline([]).run(trained64, digits64, latency=True, repeats=3).rows[0]
    assert 0 < row.latency_b1_ms < 1e3 and 0 < row.latency_b64_ms < 1e3


# ----------------------------------------------------------------------------- each step = the library by hand
def test_prune_oneshot_equals_prune_then_fit_by_hand(digits64, trained64):
    report = P.Pipeline([P.Prune(0.8, fine_tune_epochs=2, lr=0.02)]).run(trained64, digits64, seed=SEED,
                                                                         latency=False)
    hand = copy.deepcopy(trained64)
    pruning.prune(hand, 0.8, scope="global")
    _ft(hand, digits64, SEED * 1000 + 1, 2, 0.02)
    _same_weights(report.final_model, hand)
    row = report.rows[1]
    assert row.step == "Prune(sparsity=0.8, structured=False, schedule='oneshot', fine_tune_epochs=2)"
    assert row.accuracy == evaluate(hand, digits64.test)[1]
    assert row.sparsity == pytest.approx(0.8, abs=1e-3) == pruning.sparsity(hand)
    assert row.bytes == _hand_bytes(hand) and row.compression == report.rows[0].bytes / row.bytes
    assert row.macs == report.rows[0].macs                  # masked weights are still multiplied


def test_prune_iterative_equals_iterative_prune_by_hand(digits64, trained64):
    step = P.Prune(0.9, schedule="iterative", rounds=3, fine_tune_epochs=1, scope="layer")
    report = P.Pipeline([step]).run(trained64, digits64, seed=SEED, latency=False)
    hand = copy.deepcopy(trained64)
    pruning.iterative_prune(hand, digits64.train, final_sparsity=0.9, rounds=3, scope="layer", epochs=1,
                            batch_size=64, seed=SEED * 1000 + 1, progress=False,
                            optimizer=SGD(hand, lr=0.01, momentum=0.9))
    _same_weights(report.final_model, hand)
    assert pruning.sparsity_report(report.final_model).as_dict() == pytest.approx(
        {"0.weight": 0.9, "2.weight": 0.9, "4.weight": 0.9}, abs=2e-3)


def test_prune_gradual_equals_gradual_pruning_in_fit_by_hand(digits64, trained64):
    report = P.Pipeline([P.Prune(0.8, schedule="gradual", fine_tune_epochs=3)]).run(trained64, digits64, seed=SEED,
                                                                                   latency=False)
    hand = copy.deepcopy(trained64)
    steps = -(-digits64.train[0].shape[0] // 64)
    callback = pruning.GradualPruning(pruning.PolynomialDecay(0.0, 0.8, 0, 2 * steps, frequency=1), scope="global")
    _ft_with = dict(epochs=3, batch_size=64, seed=SEED * 1000 + 1, progress=False, callbacks=[callback],
                    optimizer=SGD(hand, lr=0.01, momentum=0.9))
    fit(hand, digits64.train, **_ft_with)
    _same_weights(report.final_model, hand)
    assert report.rows[1].sparsity == pytest.approx(0.8, abs=1e-3)
    assert callback.log[0][1] == 0.0 and callback.log[-1][1] == pytest.approx(0.8) and len(callback.log) == 2 * steps + 1


def test_structured_prune_then_trim_equals_ln_structured_and_removal_by_hand(digits64, trained64):
    report = P.Pipeline([P.Prune(0.5, structured=True), P.Trim()]).run(trained64, digits64, seed=SEED,
                                                                       latency=False)
    hand = copy.deepcopy(trained64)
    pruning.ln_structured(hand[0], 12, n=2, dim=0, bias=True)
    pruning.ln_structured(hand[2], 8, n=2, dim=0, bias=True)
    _same_weights(report.models[1], hand)
    removed = pruning.remove_pruned_units(trimming.fold_batchnorms(hand))
    _same_weights(report.final_model, removed)
    assert (report.final_model[0].out_features, report.final_model[2].out_features) == (12, 8)
    x = digits64.test[0]
    np.testing.assert_allclose(B.to_numpy(report.final_model(x)), B.to_numpy(hand(x)), rtol=0, atol=1e-12)
    pruned, trimmed = report.rows[1], report.rows[2]
    assert trimmed.accuracy == pruned.accuracy and trimmed.macs == 64 * 12 + 12 * 8 + 8 * 10
    assert trimmed.bytes == 4 * (64 * 12 + 12 + 12 * 8 + 8 + 8 * 10 + 10) < pruned.bytes


def test_trim_folds_batchnorm_without_changing_outputs(digits64):
    model = _trained(digits64, batchnorm=True, epochs=2)
    report = P.Pipeline([P.Trim()]).run(model, digits64, latency=False)
    assert not [m for m in report.final_model if isinstance(m, (L.BatchNorm1d, L.BatchNorm2d))]
    _same_weights(report.final_model, trimming.fold_batchnorms(model.eval()))
    x = digits64.test[0]
    np.testing.assert_allclose(B.to_numpy(report.final_model(x)), B.to_numpy(model.eval()(x)), rtol=0, atol=1e-12)
    assert report.rows[1].accuracy == report.rows[0].accuracy


def test_finetune_equals_fit_by_hand(digits64, trained64):
    report = P.Pipeline([P.FineTune(epochs=2, lr=0.03)]).run(trained64, digits64, seed=SEED, latency=False)
    hand = copy.deepcopy(trained64)
    _ft(hand, digits64, SEED * 1000 + 1, 2, 0.03)
    _same_weights(report.final_model, hand)


def test_distill_equals_distillation_loss_in_fit_by_hand(digits64, trained64):
    step = P.Distill(hidden=(8,), temperature=3.0, alpha=0.7, epochs=2, lr=0.05)
    report = P.Pipeline([step]).run(trained64, digits64, seed=SEED, latency=False)
    B.seed(SEED * 1000 + 1)
    student = models.mlp((64, 8, 10), backend=digits64.backend)
    fit(student, digits64.train, loss_fn=DistillationLoss(copy.deepcopy(trained64).eval(), 3.0, 0.7), epochs=2,
        batch_size=64, seed=SEED * 1000 + 2, progress=False, optimizer=SGD(student, lr=0.05, momentum=0.9))
    _same_weights(report.final_model, student)
    assert report.rows[1].bytes == 4 * (64 * 8 + 8 + 8 * 10 + 10)
    assert report.rows[1].accuracy == evaluate(student, digits64.test)[1]


def test_distill_puts_a_flatten_before_the_student_for_images():
    data = datasets.load_digits(B.get_backend("numpy", "float64"), as_images=True)
    B.seed(0)
    cnn = models.small_cnn(in_channels=1, image_size=8, channels=(2, 2), num_classes=10, backend=data.backend)
    report = P.Pipeline([P.Distill(hidden=(6,), epochs=1)]).run(cnn, data, latency=False)
    assert isinstance(report.final_model[0], L.Flatten) and report.final_model[1].in_features == 64


def test_share_weights_equals_kmeans_by_hand_and_quantized_size(digits64, trained64):
    report = P.Pipeline([P.ShareWeights(bits=3)]).run(trained64, digits64, seed=SEED, latency=False)
    final = report.final_model
    assert all(isinstance(final[i], SharedLayer) and final[i].k == 8 for i in (0, 2, 4))
    for i in (0, 2, 4):
        hand = SharedLayer(trained64[i], 8)
        np.testing.assert_array_equal(B.to_numpy(final[i].weight()), B.to_numpy(hand.weight()))
    row = report.rows[1]
    assert row.kind == "shared" and row.bytes == Q.quantized_size(final).total_bytes
    n_w, n_b = 64 * 24 + 24 * 16 + 16 * 10, 24 + 16 + 10
    assert row.bytes == n_w * 3 // 8 + 4 * (3 * 8 + n_b)          # 3-bit indices, 3 codebooks of 8, biases
    assert row.params == n_w + n_b


def test_share_weights_after_pruning_keeps_zeros_at_a_fixed_zero_centroid(digits64, trained64):
    steps = [P.Prune(0.8, scope="layer"), P.ShareWeights(bits=2, fine_tune_epochs=2, lr=0.01)]
    report = P.Pipeline(steps).run(trained64, digits64, seed=SEED, latency=False)
    pruned = report.models[1]
    for i in (0, 2, 4):
        shared = report.final_model[i]
        w = B.to_numpy(pruned[i]._params["weight"].masked(pruned[i]._params["weight"].data))
        cb = B.to_numpy(shared.codebook.data)
        assert cb[0] == 0.0 and shared.k == 4
        np.testing.assert_array_equal(B.to_numpy(shared.weight()) == 0, w == 0)     # zeros stay, none added
        centroids, idx = share_weights(B.to_backend(w[w != 0], digits64.backend), 3)   # k-means of the nonzeros
        assert sorted(np.unique(B.to_numpy(shared.indices)[w != 0])) == [1, 2, 3]
        assert np.array_equal(B.to_numpy(shared.indices)[w != 0] - 1, B.to_numpy(idx))
        assert not np.array_equal(cb[1:], B.to_numpy(centroids))                  # fine-tuning moved them ...
    assert report.rows[2].sparsity == pytest.approx(report.rows[1].sparsity)      # ... but not the zero one


def test_report_of_a_deep_compression_run_is_consistent(digits64, trained64):
    steps = [P.Prune(0.7, fine_tune_epochs=1), P.Trim(), P.ShareWeights(bits=4)]
    report = P.Pipeline(steps).run(trained64, digits64, seed=SEED, latency=False)
    assert [r.step.split("(")[0] for r in report.rows] == ["baseline", "Prune", "Trim", "ShareWeights"]
    assert [r.kind for r in report.rows] == ["float", "float", "float", "shared"]
    assert report.rows[-1].bytes < report.rows[1].bytes < report.rows[0].bytes
    for r in report.rows:
        assert r.compression == pytest.approx(report.rows[0].bytes / r.bytes)
    assert report.final is report.rows[-1] and report.baseline is report.rows[0]


# ----------------------------------------------------------------------------- reproducible
def test_same_seed_same_report_on_numpy(digits64, trained64):
    steps = [P.Prune(0.6, structured=True, fine_tune_epochs=1), P.Trim(), P.ShareWeights(bits=3, fine_tune_epochs=1),
             ]
    a = P.Pipeline(steps).run(trained64, digits64, seed=5, latency=False)
    b = P.Pipeline(steps).run(trained64, digits64, seed=5, latency=False)
    c = P.Pipeline(steps).run(trained64, digits64, seed=6, latency=False)
    assert a.as_dict(timings=False) == b.as_dict(timings=False)
    _same_weights(a.final_model, b.final_model)
    assert _weights(a.final_model)["0.codebook"].tolist() != _weights(c.final_model)["0.codebook"].tolist()


def test_same_seed_same_report_on_torch_cpu_within_tolerance(digits64):
    data = digits64.to(B.get_backend("torch-cpu", "float64"))
    model = _trained(data)
    steps = [P.Distill(hidden=(12,), epochs=1), P.Prune(0.5, fine_tune_epochs=1)]
    a = P.Pipeline(steps).run(model, data, seed=1, latency=False)
    b = P.Pipeline(steps).run(model, data, seed=1, latency=False)
    for ra, rb in zip(a.rows, b.rows):
        da, db = ra.as_dict(timings=False), rb.as_dict(timings=False)
        assert {k: v for k, v in da.items() if isinstance(v, (str, int))} == \
            {k: v for k, v in db.items() if isinstance(v, (str, int))}
        assert da["accuracy"] == pytest.approx(db["accuracy"], abs=1e-12)
    _same_weights(a.final_model, b.final_model, exact=False)


def test_every_backend_gives_the_numpy_pipeline_in_float64(digits64, trained64, be64):
    steps = [P.Prune(0.5, fine_tune_epochs=1), P.Trim(), P.ShareWeights(2)]
    a = P.Pipeline(steps).run(trained64, digits64, seed=2, latency=False)
    b = P.Pipeline(steps).run(trained64, digits64.to(be64), seed=2, latency=False)
    assert B.backend_of(b.final_model.parameters()[0].data).name == be64.name
    _same_weights(a.final_model, b.final_model, exact=False)
    for ra, rb in zip(a.rows, b.rows):
        assert (ra.bytes, ra.macs, ra.params) == (rb.bytes, rb.macs, rb.params)
        assert ra.accuracy == pytest.approx(rb.accuracy, abs=2 / len(digits64.test[1]))


def test_the_callers_model_is_not_changed(digits64, trained64):
    before = _weights(trained64)
    P.Pipeline([P.Prune(0.5, fine_tune_epochs=1), P.Trim()]).run(trained64, digits64, latency=False)
    after = _weights(trained64)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p.mask is None for p in trained64.parameters())


# ----------------------------------------------------------------------------- errors
def test_steps_in_an_impossible_order_raise_clearly(digits64, trained64):
    with pytest.raises(ValueError, match="ShareWeights already ran.*Prune before ShareWeights"):
        P.Pipeline([P.ShareWeights(2), P.Prune(0.5)]).run(trained64, digits64, latency=False)
    with pytest.raises(ValueError, match="Trim before ShareWeights"):
        P.Pipeline([P.ShareWeights(2), P.Trim()]).run(trained64, digits64, latency=False)
    bn = _trained(digits64, batchnorm=True, epochs=1)
    with pytest.raises(ValueError, match=r"BatchNorm \(model\[1\] \(BatchNorm1d\).*Trim\(\) before QuantizeInt8"):
        P.Pipeline([P.QuantizeInt8()]).run(bn, digits64, latency=False)
    with pytest.raises(ValueError, match="not both"):
        P.Pipeline([P.ShareWeights(2), P.QuantizeInt8()]).run(trained64, digits64, latency=False)


@needs_int8
def test_a_quantized_model_cannot_be_pruned_or_trained(digits64, trained64):
    for later, words in ((P.Prune(0.5), "Prune before QuantizeInt8"), (P.FineTune(1), "before QuantizeInt8"),
                         (P.Trim(), "before QuantizeInt8"), (P.ShareWeights(2), "not both"),
                         (P.QuantizeInt8(), "int8 already")):
        with pytest.raises(ValueError, match=words):
            P.Pipeline([P.QuantizeInt8(), later]).run(trained64, digits64, latency=False)


@pytest.mark.parametrize("build, words", [
    (lambda: P.Prune(1.5), "sparsity"), (lambda: P.Prune(0.5, schedule="cubic"), "schedule"),
    (lambda: P.Prune(0.5, schedule="iterative", fine_tune_epochs=0), "fine_tune_epochs"),
    (lambda: P.Prune(0.5, scope="net"), "scope"), (lambda: P.Prune(0.5, structured=True, schedule="gradual", fine_tune_epochs=1), "prunes single weights"),
    (lambda: P.Prune(0.5, schedule="gradual"), "fine_tune_epochs"), (lambda: P.Distill(hidden=(0,)), r"hidden\[0\]"),
    (lambda: P.Distill(temperature=0), "temperature"), (lambda: P.Distill(alpha=2), "alpha"),
    (lambda: P.FineTune(epochs=0), "epochs"), (lambda: P.FineTune(lr=-1), "lr"),
    (lambda: P.ShareWeights(bits=9), "bits"), (lambda: P.ShareWeights(init="best"), "init"),
    (lambda: P.QuantizeInt8(requantization="exact"), "requantization"), (lambda: P.Trim(remove_masks=1), "remove_masks"),
    (lambda: P.Pipeline([P.Trim(), "prune"]), r"steps\[1\]"),
])
def test_bad_step_arguments_name_the_argument(build, words):
    with pytest.raises((TypeError, ValueError), match=words):
        build()


def test_run_checks_its_arguments(digits64, trained64):
    import torch
    with pytest.raises(TypeError, match="from_torch"):
        P.Pipeline([]).run(torch.nn.Sequential(torch.nn.Linear(64, 10)), digits64)
    with pytest.raises(TypeError, match="data"):
        P.Pipeline([]).run(trained64, digits64.train)
    with pytest.raises(ValueError, match="seed"):
        P.Pipeline([]).run(trained64, digits64, seed=-1)
    assert P.Pipeline([]).run(trained64, digits64, seed=np.int64(2), latency=np.bool_(False)).seed == 2


# ----------------------------------------------------------------------------- the report
def _row(step, acc, size, lat=None):
    return P.StepResult(step, "float", acc, acc, size, 1000 / size, 10, 10, 0.0, lat, lat)


def _report(rows):
    return P.Report(rows, None, [None] * len(rows))


def test_best_within_takes_the_smallest_row_within_the_points():
    report = _report([_row("base", 0.95, 1000), _row("a", 0.945, 300), _row("b", 0.93, 100), _row("c", 0.96, 500)])
    assert report.best_within(1).step == "a"           # 0.945 >= 0.94, 300 bytes
    assert report.best_within(2).step == "b"
    assert report.best_within(0).step == "c"
    assert report.best_within(0, baseline=0.90).step == "b"
    with pytest.raises(ValueError, match="no row"):
        report.best_within(0, baseline=0.99)
    with pytest.raises(ValueError, match="points"):
        report.best_within(-1)


def test_pareto_front_of_accuracy_against_bytes_and_latency():
    report = _report([_row("base", 0.95, 1000, 2.0), _row("a", 0.945, 300, 1.0), _row("b", 0.93, 400, 0.5),
                      _row("c", 0.96, 500, 3.0), _row("d", 0.90, 100, 0.5)])
    assert [r.step for r in report.pareto("bytes")] == ["d", "a", "c"]
    assert [r.step for r in report.pareto("latency_b1_ms")] == ["b", "a", "base", "c"]
    with pytest.raises(ValueError, match="metric"):
        report.pareto("accuracy")
    with pytest.raises(ValueError, match="latency=True"):
        _report([_row("base", 0.9, 10)]).pareto("latency_b64_ms")


def test_json_and_csv_hold_the_rows_and_are_written_atomically(tmp_path, digits64, trained64, monkeypatch):
    report = P.Pipeline([P.Prune(0.5), P.ShareWeights(2)]).run(trained64, digits64, latency=True, repeats=2)
    path = report.to_json(str(tmp_path / "r.json"))
    assert json.loads(open(path).read()) == json.loads(json.dumps(report.as_dict()))
    rows = list(csv.DictReader(open(report.to_csv(str(tmp_path / "r.csv")))))
    assert [r["step"] for r in rows] == [r.step for r in report.rows]
    assert [int(r["bytes"]) for r in rows] == [r.bytes for r in report.rows]
    assert [float(r["accuracy"]) for r in rows] == [r.accuracy for r in report.rows]
    assert sorted(os.listdir(tmp_path)) == ["r.csv", "r.json"]
    before = open(path).read()

    def broken(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        report.to_json(path)
    assert open(path).read() == before and sorted(os.listdir(tmp_path)) == ["r.csv", "r.json"]
    text = report.table()
    assert text.splitlines()[0].startswith("step") and len(text.splitlines()) == 2 + len(report.rows)
    assert "ShareWeights(bits=2, fine_tune_epochs=0)" in text


def test_report_add_takes_a_row_dict_and_recomputes_compression(digits64, trained64):
    report = P.Pipeline([]).run(trained64, digits64, latency=False)
    d = report.rows[0].as_dict()
    d.update(step="other", bytes=report.rows[0].bytes // 4, extra="ignored")
    report.add(d)
    assert report.rows[-1].compression == pytest.approx(4.0, rel=1e-3) and report.rows[-1].step == "other"
    with pytest.raises(ValueError, match="accuracy"):
        report.add({"step": "x"})


# ----------------------------------------------------------------------------- int8
def _hand_int8_bytes(q):
    """The int8 model's bytes counted by hand: per layer int8 codes (dense or scipy CSR + int32 indices),
    int32 biases, per channel float32 scale + int32 multiplier + int32 shift, output scale + zero point;
    and the input's scale + zero point."""
    total = 8
    for layer in q.layers:
        if not hasattr(layer, "weight_codes"):
            continue
        codes = B.to_numpy(layer.weight_codes).reshape(layer.weight_codes.shape[0], -1)
        csr = scipy.sparse.csr_matrix(codes)
        total += min(codes.size, csr.nnz * (1 + 4) + (codes.shape[0] + 1) * 4)
        c = codes.shape[0] if layer.per_channel else 1
        total += 4 * codes.shape[0] * (layer.bias_codes is not None) + c * (4 + 4 + 4) + 8
    return total


@needs_int8
@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_int8_equals_convert_by_hand(digits64, trained64, per_channel):
    from nnopt_lab.inference import integer
    steps = [P.Prune(0.9, scope="layer"), P.QuantizeInt8(per_channel=per_channel, calibration_samples=300)]
    report = P.Pipeline(steps).run(trained64, digits64, seed=SEED, latency=False)
    q = report.final_model
    assert isinstance(q, integer.IntegerModel)
    hand = copy.deepcopy(trained64)
    pruning.prune(hand, 0.9, scope="layer")
    want = integer.convert(hand, digits64.train[0][:300], per_channel=per_channel)
    x = digits64.test[0]
    np.testing.assert_array_equal(B.to_numpy(q(x)), B.to_numpy(want(x)))
    row = report.rows[2]
    assert row.kind == "int8" and row.accuracy == P.evaluate_accuracy(want, digits64.test)
    assert row.bytes == _hand_int8_bytes(want) and row.storage == "csr"
    assert row.bytes < want.stored_bytes()                     # the 90 % zero codes are stored sparse
    assert row.macs == report.rows[1].macs and row.sparsity >= 0.9
    assert row.params == sum(math.prod(p.shape) for p in trained64.parameters())


@needs_int8
def test_int8_after_trim_is_within_a_point_of_float_and_exports_to_torch(digits64):
    from nnopt_lab import reference as R
    import torch
    model = _trained(digits64, batchnorm=True, epochs=4)
    steps = [P.Trim(), P.QuantizeInt8(requantization="float")]
    report = P.Pipeline(steps).run(model, digits64, seed=SEED, latency=False)
    float_row, int8_row = report.rows[1], report.rows[2]
    assert abs(int8_row.accuracy - float_row.accuracy) <= 0.01
    exported = R.to_torch_quantized(report.final_model)
    x = digits64.test[0]
    with torch.inference_mode():
        out = exported(torch.as_tensor(B.to_numpy(x), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(out, B.to_numpy(report.final_model(x)), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- Deep Compression's storage
from nnopt_lab.compression import huffman as H  # noqa: E402
from nnopt_lab.inference.sparse import RelativeIndexed, relative_from_dense  # noqa: E402


def _relative_by_loop(flat, bits):
    """The relative-index format written element by element (an independent encoder): a zero after
    2**bits - 1 skipped zeros is stored as a filler; fillers after the last nonzero are dropped."""
    entries, gap = [], 0
    for v in flat:
        if v != 0:
            entries.append((v, gap))
            gap = 0
        elif gap == 2 ** bits - 1:
            entries.append((0.0, gap))
            gap = 0
        else:
            gap += 1
    while entries and entries[-1][0] == 0:
        entries.pop()
    return entries


def _sparse_cases(rng):
    w = rng.normal(size=(30, 40)) * (rng.random((30, 40)) < 0.08)
    w[0, :7] = 0.0
    w[-1, -9:] = 0.0                                   # trailing zeros
    long_gap = np.zeros((3, 100))
    long_gap[0, 0], long_gap[2, 99] = 1.5, -2.0        # a gap of 298 zeros
    conv = rng.normal(size=(4, 3, 3, 3)) * (rng.random((4, 3, 3, 3)) < 0.3)
    return [w, long_gap, conv, np.zeros((5, 6)), rng.normal(size=(4, 5))]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_relative_index_format_is_exact_and_counted_like_a_direct_encoder(be64, bits):
    rng = np.random.default_rng(bits)
    for w in _sparse_cases(rng):
        enc = relative_from_dense(B.to_backend(w, be64), bits)
        assert isinstance(enc, RelativeIndexed) and enc.shape == w.shape and enc.bits == bits
        np.testing.assert_array_equal(B.to_numpy(enc.to_dense()), w)               # the round trip is exact
        by_loop = _relative_by_loop(w.reshape(-1).tolist(), bits)
        values, gaps = B.to_numpy(enc.values), B.to_numpy(enc.gaps)
        assert enc.n_entries == len(by_loop) and values.tolist() == [v for v, _ in by_loop]
        assert gaps.tolist() == [g for _, g in by_loop]
        assert gaps.size == 0 or (gaps.min() >= 0 and gaps.max() <= 2 ** bits - 1)
        csr = scipy.sparse.csr_matrix(w.reshape(w.shape[0], -1))                  # the nonzeros, as scipy has them
        nonzero = values != 0
        np.testing.assert_array_equal(values[nonzero], csr.data)
        k = csr.shape[1]
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        np.testing.assert_array_equal(B.to_numpy(enc.positions())[nonzero], rows * k + csr.indices)
        q = np.flatnonzero(w)                                                     # the count in closed form
        assert enc.n_fillers == int(((q - np.r_[-1, q[:-1]] - 1) // 2 ** bits).sum()) if q.size else enc.n_entries == 0
        assert enc.nbits(32) == enc.n_entries * (32 + bits)


def test_relative_index_format_gap_of_exactly_the_width():
    flat = np.zeros(40)
    flat[[0, 8, 17, 33]] = 1.0                  # runs of 7, 8 and 15 zeros with 3-bit gaps: 0, 1 and 1 fillers
    enc = relative_from_dense(flat, 3)
    assert B.to_numpy(enc.gaps).tolist() == [0, 7, 7, 0, 7, 7] and enc.n_fillers == 2


def test_relative_index_format_checks_its_arguments():
    with pytest.raises(ValueError, match="bits"):
        relative_from_dense(np.ones(3), 0)
    with pytest.raises(ValueError, match="bits"):
        relative_from_dense(np.ones(3), 17)
    with pytest.raises(TypeError, match="weight"):
        relative_from_dense([1.0, 0.0], 3)
    with pytest.raises(ValueError, match="value_bits"):
        relative_from_dense(np.ones(3), 3).nbits(0)


def _hand_encoded(model, rel_bits, use_huffman):
    """encoded_bytes counted by hand: the loop encoder for the entries, symbol counts by numpy,
    Huffman bits as sum(count * code length) with the stated code table."""
    def part(symbols, width):
        fixed = len(symbols) * width
        if not use_huffman or not len(symbols):
            return fixed
        values, counts = np.unique(np.asarray(symbols, dtype=np.int64), return_counts=True)
        code = H.huffman_code(dict(zip(values.tolist(), counts.tolist())))
        coded = sum(int(c) * len(code[int(v)]) for v, c in zip(values, counts))
        coded += min(2 ** width * 8, len(values) * (width + 8))
        return min(fixed, coded)

    total = 0
    for layer in model:
        if isinstance(layer, SharedLayer):
            w, idx = B.to_numpy(layer.weight()).reshape(-1), B.to_numpy(layer.indices).reshape(-1).tolist()
            width = (layer.k - 1).bit_length()
            entries = _relative_by_loop(w.tolist(), rel_bits)
            positions = np.cumsum([g + 1 for _, g in entries]) - 1
            dense = part(idx, width)
            relative = part([idx[p] for p in positions], width) + part([g for _, g in entries], rel_bits)
            total += -(-min(dense, relative) // 8) + 4 * sum(math.prod(p.shape) for p in layer._params.values())
        elif isinstance(layer, (L.Linear, L.Conv2d)):
            p = layer._params["weight"]
            w = B.to_numpy(p.masked(p.data)).reshape(-1)
            entries = _relative_by_loop(w.tolist(), rel_bits)
            relative = 32 * len(entries) + part([g for _, g in entries], rel_bits)
            total += -(-min(32 * w.size, relative) // 8) + 4 * layer._params["bias"].shape[0]
    return total


@pytest.mark.parametrize("use_huffman", [False, True])
@pytest.mark.parametrize("rel_bits", [3, 5])
def test_encoded_bytes_equal_a_hand_count(digits64, trained64, use_huffman, rel_bits):
    pruned = copy.deepcopy(trained64)
    pruning.prune(pruned, 0.85, scope="global")
    shared = P.ShareWeights(3).apply(copy.deepcopy(pruned), digits64, P._Context(0))
    for model in (pruned, shared, trained64):
        assert P.encoded_bytes(model, rel_bits, use_huffman) == _hand_encoded(model, rel_bits, use_huffman)
    size, fmt = P.encoded_bytes(shared, rel_bits, use_huffman, detail=True)
    assert size < P.stored_bytes(shared) and ("huffman" in fmt) == use_huffman


def test_huffman_coded_indices_are_within_the_entropy_bound(digits64, trained64):
    """Without the tables, the Huffman bits of a dense shared layer lie in [N H, N (H + 1))."""
    shared = P.ShareWeights(4).apply(copy.deepcopy(trained64), digits64, P._Context(0))
    layer = shared[0]
    idx = B.to_numpy(layer.indices).reshape(-1)
    _, counts = np.unique(idx, return_counts=True)
    p = counts / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    table = min(16 * 8, len(counts) * (4 + 8))
    bits = P._encode_weight("w", layer.weight(), layer.indices, 4, 5, True)[0] - table
    assert idx.size * entropy - 1e-9 <= bits < idx.size * (entropy + 1)


def test_encode_step_keeps_the_model_and_adds_encoded_bytes_from_then_on(digits64, trained64):
    steps = [P.Prune(0.8, fine_tune_epochs=1), P.ShareWeights(3), P.Encode(relative_index_bits=4),
             P.FineTune(1)]
    report = P.Pipeline(steps).run(trained64, digits64, seed=SEED, latency=False)
    before, encoded, after = report.rows[2], report.rows[3], report.rows[4]
    assert [r.encoded_bytes for r in report.rows[:3]] == [None] * 3
    assert encoded.bytes == before.bytes and encoded.accuracy == before.accuracy
    x = digits64.test[0]
    np.testing.assert_array_equal(B.to_numpy(report.models[3](x)), B.to_numpy(report.models[2](x)))
    for r, m in ((encoded, report.models[3]), (after, report.models[4])):
        assert r.encoded_bytes == P.encoded_bytes(m, 4, True) < r.bytes
        assert r.encoded_compression == pytest.approx(report.rows[0].bytes / r.encoded_bytes)
    text = report.table()
    assert "encoded" in text and "enc ×" in text
    plain = P.Pipeline(steps[:2]).run(trained64, digits64, seed=SEED, latency=False).table()
    assert "encoded" not in plain
    assert report.as_dict()["rows"][3]["encoded_bytes"] == encoded.encoded_bytes


@needs_int8
def test_encode_counts_int8_codes_and_float_weights(digits64, trained64):
    report = P.Pipeline([P.Prune(0.9), P.QuantizeInt8(calibration_samples=64), P.Encode()]).run(
        trained64, digits64, seed=SEED, latency=False)
    model = report.final_model
    codes = [B.to_numpy(layer.weight_codes) for layer in model.layers
             if getattr(layer, "weight_codes", None) is not None]
    rest = int(model.stored_bytes()) - sum(c.size for c in codes)
    hand = rest
    for c in codes:
        entries = _relative_by_loop(c.reshape(-1).tolist(), 5)
        hand += -(-min(8 * c.size, 13 * len(entries)) // 8)
    assert P.encoded_bytes(model, 5, huffman=False) == hand
    assert report.final.encoded_bytes == P.encoded_bytes(model, 5, True) <= hand < report.final.bytes


def test_encode_checks_its_arguments():
    for kwargs, words in ((dict(relative_index_bits=0), "relative_index_bits"),
                          (dict(relative_index_bits=17), "relative_index_bits"), (dict(huffman=2), "huffman")):
        with pytest.raises((TypeError, ValueError), match=words):
            P.Encode(**kwargs)
    with pytest.raises(TypeError, match="model"):
        P.encoded_bytes("model")
    with pytest.raises(TypeError, match="encoding"):
        P.measure_step(models.mlp((64, 3, 10)), datasets.load_digits(), encoding="huffman", latency=False)


def test_relative_indexed_refuses_arrays_that_do_not_fit():
    good = dict(values=np.array([1.5, -2.0]), gaps=np.array([1, 2]), shape=(2, 3), bits=2)
    np.testing.assert_array_equal(RelativeIndexed(**good).to_dense(), [[0, 1.5, 0], [0, -2.0, 0]])
    for change, words in ((dict(gaps=np.array([1])), "one entry each"), (dict(gaps=np.array([1.0, 2.0])), "integer"),
                          (dict(gaps=np.array([1, 4])), r"\[0, 3\]"), (dict(gaps=np.array([-1, 2])), r"\[0, 3\]"),
                          (dict(shape=(2, 2)), "outside shape"), (dict(bits=0), "bits"),
                          (dict(values=np.ones((2, 1))), "values")):
        with pytest.raises((TypeError, ValueError), match=words):
            RelativeIndexed(**{**good, **change})


def test_encoded_bytes_are_the_same_on_every_backend(digits64, trained64, be64):
    pruned = copy.deepcopy(trained64)
    pruning.prune(pruned, 0.8, scope="global")
    shared = P.ShareWeights(3).apply(copy.deepcopy(pruned), digits64, P._Context(0))
    for model in (pruned, shared):
        there = copy.deepcopy(model).to(be64)
        for use_huffman in (False, True):
            assert P.encoded_bytes(there, 5, use_huffman, detail=True) == P.encoded_bytes(model, 5, use_huffman,
                                                                                           detail=True)
        np.testing.assert_array_equal(B.to_numpy(P.Encode().apply(there, digits64, P._Context(0))(
            B.to_backend(B.to_numpy(digits64.test[0]), be64))), B.to_numpy(model(digits64.test[0])))
