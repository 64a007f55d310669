"""Pruning during and around training: L1/L2 penalties (gradients against torch autograd, inside fit),
the proximal step (exact zeros; softshrink), masks through every optimizer and save/load, sparsity
reports, Taylor scores (against autograd), APoZ (hand-counted), structured removal (outputs kept, layers
shrink), the gradual schedule (tfmot's PolynomialDecay formula, torch.ao's CubicSL), iterative pruning,
the sensitivity scan and its plan; bad input."""
import io

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models, nn
from nnopt_lab.compression import pruning as P
from nnopt_lab.reference import torch_twin
from nnopt_lab.training import SGD, Adagrad, Adam, AdamW, RMSprop, evaluate, fit, predict, preserved


def _np(x):
    return B.to_numpy(x)


def _data(be, n=48, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return B.to_backend(x, be), B.to_backend(y % k, be, dtype="int64")


def _mlp(be, sizes=(6, 10, 8, 3), seed=0):
    B.seed(seed)
    return models.mlp(sizes, backend=be)


# ----------------------------------------------------------------------------- penalties
@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_penalty_value_and_gradient_equal_torch_autograd(kind, be64):
    w = np.random.default_rng(1).standard_normal((5, 4))
    w[0, :2] = 0.0                                          # sign(0) = 0: autograd's subgradient of |w|
    penalty = P.Penalty(kind, 0.3)
    t = torch.tensor(w, requires_grad=True)
    ref = 0.3 * (t.abs().sum() if kind == "l1" else 0.5 * (t * t).sum())
    ref.backward()
    np.testing.assert_allclose(_np(penalty.gradient(B.to_backend(w, be64))), t.grad.numpy(), rtol=1e-13, atol=0)
    model = nn.Sequential(nn.Linear(4, 5, backend=be64))
    model[0]._params["weight"].data = B.to_backend(w, be64)
    assert penalty.value(model) == pytest.approx(ref.item(), rel=1e-13)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_fit_with_a_penalty_follows_torch_on_loss_plus_penalty(kind, be64):
    x, y = _data(be64)
    model = _mlp(be64)
    twin = torch_twin(model, dtype="float64")
    lam, lr = 0.01, 0.1
    fit(model, (x, y), epochs=20, batch_size=48, optimizer=SGD(model, lr=lr), callbacks=[P.Penalty(kind, lam)],
        progress=False)
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    tx, ty = torch.as_tensor(_np(x)), torch.as_tensor(_np(y))
    for _ in range(20):
        opt.zero_grad()
        weights = [m.weight for m in twin.modules() if isinstance(m, torch.nn.Linear)]
        reg = sum(w.abs().sum() if kind == "l1" else 0.5 * (w * w).sum() for w in weights)
        (torch.nn.functional.cross_entropy(twin(tx), ty) + lam * reg).backward()
        opt.step()
    for (name, ours), (tname, theirs) in zip(model.state_dict().items(), twin.state_dict().items()):
        np.testing.assert_allclose(_np(ours), theirs.detach().numpy(), rtol=0, atol=1e-12, err_msg=name)


def test_soft_threshold_is_torch_softshrink(be64):
    w = np.random.default_rng(2).standard_normal(200)
    ref = torch.nn.functional.softshrink(torch.tensor(w), 0.4).numpy()
    np.testing.assert_allclose(_np(P.soft_threshold(B.to_backend(w, be64), 0.4)), ref, rtol=0, atol=1e-15)


def test_one_proximal_step_is_the_gradient_step_then_softshrink(be64):
    x, y = _data(be64)
    model = _mlp(be64)
    twin = torch_twin(model, dtype="float64")
    fit(model, (x, y), epochs=1, batch_size=48, optimizer=SGD(model, lr=0.5), callbacks=[P.ProximalL1(0.2)],
        progress=False)
    loss = torch.nn.functional.cross_entropy(twin(torch.as_tensor(_np(x))), torch.as_tensor(_np(y)))
    loss.backward()
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.nn.functional.softshrink(m.weight - 0.5 * m.weight.grad, 0.5 * 0.2))
                m.bias -= 0.5 * m.bias.grad
    for (name, ours), theirs in zip(model.state_dict().items(), twin.state_dict().values()):
        np.testing.assert_allclose(_np(ours), theirs.numpy(), rtol=0, atol=1e-13, err_msg=name)


def test_l1_proximal_training_gives_exact_zeros_and_l2_none(be64):
    x, y = _data(be64)
    prox, l2 = _mlp(be64), _mlp(be64)
    fit(prox, (x, y), epochs=30, batch_size=16, lr=0.1, callbacks=[P.ProximalL1(0.05)], progress=False, seed=0)
    fit(l2, (x, y), epochs=30, batch_size=16, lr=0.1, callbacks=[P.Penalty("l2", 0.05)], progress=False, seed=0)
    assert P.sparsity_report(prox).zeros > 0.3 * P.sparsity_report(prox).total
    assert P.sparsity_report(l2).zeros == 0
    assert all(p.mask is None for p in prox.parameters())   # zeros by value, no mask


# ----------------------------------------------------------------------------- masks through training
@pytest.mark.parametrize("make", [lambda m: SGD(m, lr=0.1), lambda m: SGD(m, lr=0.05, momentum=0.9, nesterov=True),
                                  lambda m: Adam(m, lr=0.01), lambda m: AdamW(m, lr=0.01, weight_decay=0.1),
                                  lambda m: RMSprop(m, lr=0.01, momentum=0.5), lambda m: Adagrad(m, lr=0.1)],
                         ids=["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"])
def test_masks_stay_applied_through_fine_tuning_and_save_load(make, be64):
    x, y = _data(be64)
    model = _mlp(be64)
    fit(model, (x, y), epochs=2, batch_size=16, lr=0.1, progress=False)
    P.prune(model, 0.6)
    masks = {k: _np(p.mask).copy() for k, p in P.prunable(model).items()}
    optimizer = make(model)
    fit(model, (x, y), epochs=3, batch_size=16, optimizer=optimizer, progress=False, metrics={"sparsity": P.sparsity})
    for (k, p), state in zip(P.prunable(model).items(), [optimizer.state[optimizer.params.index(p)]
                                                         for p in P.prunable(model).values()]):
        np.testing.assert_array_equal(_np(p.mask), masks[k])
        assert np.all(_np(p.data)[masks[k] == 0] == 0), k
        for name, value in state.items():
            if hasattr(value, "shape") and tuple(value.shape) == p.shape:
                assert np.all(_np(value)[masks[k] == 0] == 0), (k, name)
    buffer = io.BytesIO()
    B.save_npz(buffer, dict(model.state_dict()))
    buffer.seek(0)
    loaded = _mlp(be64, seed=5).load_state_dict(dict(np.load(buffer, allow_pickle=False)))
    for (k, p), q in zip(P.prunable(model).items(), P.prunable(loaded).values()):
        np.testing.assert_array_equal(_np(q.mask), masks[k])
        np.testing.assert_array_equal(_np(q.data), _np(p.data))
    fit(loaded, (x, y), epochs=1, batch_size=16, optimizer=make(loaded), progress=False)
    assert P.sparsity_report(loaded).masked == sum(int((m == 0).sum()) for m in masks.values())
    assert all(np.all(_np(q.data)[masks[k] == 0] == 0) for k, q in P.prunable(loaded).items())


def test_a_pruned_model_loads_into_torch_with_the_same_outputs(be64):
    x, _ = _data(be64)
    model = _mlp(be64)
    P.prune(model, 0.5)
    twin = torch_twin(model, dtype="float64")
    np.testing.assert_allclose(twin(torch.as_tensor(_np(x))).detach().numpy(), _np(predict(model, x)),
                               rtol=0, atol=1e-13)


def test_sparsity_report_counts_exactly(be64):
    model = _mlp(be64)                                      # weights 60, 80, 24
    P.prune(model, {"0.weight": 0.5, "4.weight": 0.25})
    report = P.sparsity_report(model)
    assert [(r.name, r.zeros, r.masked, r.total) for r in report.layers] == [
        ("0.weight", 30, 30, 60), ("2.weight", 0, 0, 80), ("4.weight", 6, 6, 24)]
    assert (report.zeros, report.total) == (36, 164) and report.sparsity == 36 / 164
    assert P.sparsity(model) == 36 / 164
    assert "global" in str(report) and "50.00 %" in str(report)
    assert report.as_dict() == {"0.weight": 0.5, "2.weight": 0.0, "4.weight": 0.25}


# ----------------------------------------------------------------------------- Taylor, APoZ
def test_taylor_scores_equal_autograd_averaged_over_batches(be64):
    x, y = _data(be64, n=50)
    model = _mlp(be64)
    P.prune(model, 0.3)
    twin = torch_twin(model, dtype="float64").eval()
    scores = P.taylor_scores(model, (x, y), batch_size=16)
    tx, ty = torch.as_tensor(_np(x)), torch.as_tensor(_np(y))
    linears = [m for m in twin.modules() if isinstance(m, torch.nn.Linear)]
    ref = [torch.zeros_like(m.weight) for m in linears]
    batches = range(0, 50, 16)
    for start in batches:
        twin.zero_grad()
        torch.nn.functional.cross_entropy(twin(tx[start:start + 16]), ty[start:start + 16]).backward()
        for r, m in zip(ref, linears):
            grad = m.weight_orig.grad if hasattr(m, "weight_orig") else m.weight.grad   # torch.nn.utils.prune's
            r += (m.weight * grad).abs().detach()                                       # weight = orig · mask
    for (name, ours), r in zip(scores.items(), ref):
        np.testing.assert_allclose(_np(ours), (r / len(batches)).numpy(), rtol=1e-12, atol=1e-15, err_msg=name)
    assert all(p.grad is None for p in model.parameters())   # gradients restored (none before)


def test_apoz_counts_the_zeros_after_relu(be64):
    lin = nn.Linear(2, 3, backend=be64)
    lin._params["weight"].data = B.to_backend(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), be64)
    lin._params["bias"].data = B.to_backend(np.zeros(3), be64)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 2, backend=be64))
    x = B.to_backend(np.array([[1.0, 1.0], [-1.0, 2.0], [3.0, -1.0], [-2.0, -2.0]]), be64)
    # unit 0 = relu(x0): rows 1, 3 are zero -> 2/4; unit 1 = relu(x1): rows 2, 3 -> 2/4;
    # unit 2 = relu(-x0 - x1) = relu(-2), relu(-1), relu(-2), relu(4): rows 0, 1, 2 -> 3/4
    np.testing.assert_allclose(_np(P.apoz(model, x, 0, batch_size=3)), [0.5, 0.5, 0.75], rtol=0, atol=0)


def test_apoz_of_a_convolution_averages_over_positions(be64):
    B.seed(3)
    model = models.small_cnn(1, 8, (4,), 3, backend=be64)
    x = B.randn(7, 1, 8, 8, backend=be64)
    out = _np(model[1].forward(model[0].forward(x)))
    expected = (out == 0).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(_np(P.apoz(model, x, 0, batch_size=2)), expected, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match=r"model\[3\] \(MaxPool2d\)|layer must be the index of a Linear or Conv2d"):
        P.apoz(model, x, 3)


# ----------------------------------------------------------------------------- structured removal
def test_structured_masks_then_removal_keep_the_outputs_and_shrink_the_layers(be64):
    x, _ = _data(be64)
    model = _mlp(be64, sizes=(6, 10, 8, 3))
    P.ln_structured(model[0], 0.5, n=2, dim=0)               # bias left: removal folds its constant
    P.ln_structured(model[2], 3, n=1, dim=0)
    small = P.remove_pruned_units(model)
    assert (small[0].out_features, small[2].in_features, small[2].out_features, small[4].in_features) == (5, 5, 5, 5)
    np.testing.assert_allclose(_np(predict(small, x)), _np(predict(model, x)), rtol=0, atol=1e-12)
    assert small.num_parameters() < model.num_parameters()


def test_channel_pruning_of_a_cnn_by_apoz_then_removal(be64):
    B.seed(4)
    model = models.small_cnn(1, 8, (6, 8), 3, backend=be64)
    x = B.randn(5, 1, 8, 8, backend=be64)
    scores = P.apoz(model, x, 0)
    drop = P.select_lowest(-scores, 0.5)                      # the highest APoZ go
    P.mask_units(model[0], drop, bias=True)                  # conv 2 pads: the channel must emit exactly 0
    P.ln_structured(model[3], 0.25, n=1, dim=0, bias=True)
    small = P.remove_pruned_units(model)
    assert (small[0].out_channels, small[3].in_channels, small[3].out_channels) == (3, 3, 6)
    np.testing.assert_allclose(_np(predict(small, x)), _np(predict(model, x)), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- schedules
def _tfmot_polynomial_decay(step, s_i, s_f, begin, end, power, frequency):
    """tfmot pruning_schedule.PolynomialDecay.__call__ and PruningSchedule._should_prune_in_step, in Python
    (tensorflow_model_optimization/python/core/sparsity/keras/pruning_schedule.py)."""
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    sparsity = (s_i - s_f) * (1 - p) ** power + s_f
    should = begin <= step <= end and (step - begin) % frequency == 0
    return should, sparsity


@pytest.mark.parametrize("s_i,s_f,begin,end,power,frequency", [(0.0, 0.9, 0, 1000, 3, 100), (0.2, 0.8, 37, 250, 3, 7),
                                                               (0.5, 0.6, 10, 11, 2, 1), (0.0, 0.75, 5, 95, 1.5, 10)])
def test_polynomial_decay_equals_tfmots_formula_step_by_step(s_i, s_f, begin, end, power, frequency):
    schedule = P.PolynomialDecay(s_i, s_f, begin, end, power=power, frequency=frequency)
    for step in range(end + 50):
        should, s = schedule(step)
        ref_should, ref_s = _tfmot_polynomial_decay(step, s_i, s_f, begin, end, power, frequency)
        assert should == ref_should and s == pytest.approx(ref_s, rel=1e-15, abs=1e-15), step


def test_polynomial_decay_is_torch_ao_cubic_sl():
    from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL
    schedule = P.PolynomialDecay(0.1, 0.85, 20, 20 + 5 * 16)
    for t in range(150):
        ref = CubicSL.sparsity_compute_fn(0.1, 0.85, t, 20, 5, 16)
        assert schedule.sparsity(t) == pytest.approx(ref, rel=1e-14, abs=1e-15), t


def test_gradual_pruning_updates_on_schedule_to_the_asked_sparsity(be64):
    x, y = _data(be64)
    model = _mlp(be64)
    schedule = P.PolynomialDecay(0.0, 0.8, 2, 14, frequency=4)
    callback = P.GradualPruning(schedule)
    history = fit(model, (x, y), epochs=6, batch_size=16, lr=0.1, callbacks=[callback], progress=False,
                  metrics={"sparsity": P.sparsity})
    assert [t for t, _, _ in callback.log] == [2, 6, 10, 14]
    for t, target, reached in callback.log:
        assert target == schedule.sparsity(t)
        assert reached == sum(round(target * n) for n in (60, 80, 24)) / 164
    assert history["sparsity"][-1] == sum(round(0.8 * n) for n in (60, 80, 24)) / 164


def test_iterative_pruning_reaches_the_final_sparsity_exactly(be64):
    x, y = _data(be64)
    model = _mlp(be64)
    rounds = P.iterative_prune(model, (x, y), final_sparsity=0.9, rounds=3, epochs=2, batch_size=16, lr=0.1,
                               progress=False)
    assert [r.round for r in rounds] == [1, 2, 3]
    assert rounds[0].target == pytest.approx(1 - 0.1 ** (1 / 3)) and rounds[-1].target == 0.9
    assert [r.masked for r in P.sparsity_report(model).layers] == [round(0.9 * n) for n in (60, 80, 24)]
    assert all(len(r.history["loss"]) == 2 for r in rounds)


def test_sensitivity_scan_restores_the_model_and_plans_per_layer(be64):
    x, y = _data(be64)
    model = _mlp(be64)
    fit(model, (x, y), epochs=20, batch_size=16, lr=0.2, progress=False)
    before = {k: _np(v).copy() for k, v in model.state_dict().items()}
    scan = P.sensitivity_scan(model, (x, y), (0.25, 0.5, 0.9))
    assert {k: _np(v).tolist() for k, v in model.state_dict().items()} == {k: v.tolist() for k, v in before.items()}
    assert all(p.mask is None for p in model.parameters())
    with preserved(model):
        P.prune(model, {"2.weight": 0.5})
        assert scan.accuracy["2.weight"][1] == evaluate(model, (x, y))[1]
    hand = P.SensitivityScan(0.9, (0.2, 0.5, 0.8), {"a": [0.9, 0.89, 0.5], "b": [0.7, 0.9, 0.89], "c": [0.1, 0.1, 0.1]})
    assert hand.plan(0.02) == {"a": 0.5, "b": 0.8, "c": 0.0}


# ----------------------------------------------------------------------------- bad input
def test_bad_schedules_and_callbacks_are_refused():
    with pytest.raises(ValueError, match=r"end_step must be >= begin_step=10 .* got 5"):
        P.PolynomialDecay(0.0, 0.5, 10, 5)
    with pytest.raises(ValueError, match=r"frequency must be an int >= 1, got 0"):
        P.PolynomialDecay(0.0, 0.5, 0, 5, frequency=0)
    with pytest.raises(ValueError, match=r"final_sparsity must be a finite number in \[0, 1\), got 1.0"):
        P.PolynomialDecay(0.0, 1.0, 0, 5)
    with pytest.raises(ValueError, match=r"begin_step must be an int >= 0, got -1"):
        P.PolynomialDecay(0.0, 0.5, -1, 5)
    with pytest.raises(TypeError, match=r"schedule must be a PolynomialDecay"):
        P.GradualPruning(0.5)
    with pytest.raises(ValueError, match=r"kind must be one of \('l1', 'l2'\), got 'l3'"):
        P.Penalty("l3", 0.1)
    with pytest.raises(ValueError, match=r"strength must be a finite number in \[0, inf\), got -0.1"):
        P.ProximalL1(-0.1)
    with pytest.raises(ValueError, match=r"threshold must be a finite number in \[0, inf\)"):
        P.soft_threshold(np.ones(3), -1.0)


def test_bad_model_level_calls_are_refused(be64):
    x, y = _data(be64)
    model = _mlp(be64)
    with pytest.raises(TypeError, match=r"iterative_prune needs epochs="):
        P.iterative_prune(model, (x, y), final_sparsity=0.5, rounds=2)
    with pytest.raises(ValueError, match=r"rounds must be an int in \[1, 10000\], got 0"):
        P.iterative_prune(model, (x, y), final_sparsity=0.5, rounds=0, epochs=1)
    with pytest.raises(ValueError, match=r"rounds must be an int in \[1, 10000\], got 10{30}"):
        P.iterative_prune(model, (x, y), final_sparsity=0.5, rounds=10 ** 30, epochs=1)    # used to run for ever
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 1000000\], got 10{30}"):
        P.iterative_prune(model, (x, y), final_sparsity=0.5, rounds=2, epochs=10 ** 30)
    assert P.MAX_ROUNDS == 10_000
    assert all(p.mask is None for p in P.prunable(model).values())     # refused before any pruning
    with pytest.raises(ValueError, match=r"sparsities\[1\] must be a finite number in \[0, 1\), got 1.0"):
        P.sensitivity_scan(model, (x, y), (0.5, 1.0))
    with pytest.raises(ValueError, match=r"model\[1\] is ReLU"):
        P.apoz(model, x, 1)
    with pytest.raises(ValueError, match=r"is not followed by a ReLU"):
        P.apoz(model, x, 4)
    with pytest.raises(ValueError, match=r"indices\[0\] must be an int in \[0, 9\], got 10"):
        P.mask_units(model[0], [10])
    with pytest.raises(ValueError, match=r"criterion \(a dict of scores\) has no entry for '2.weight'"):
        P.prune(model, 0.5, criterion={"0.weight": B.to_backend(np.ones((10, 6)), be64)})


# ----------------------------------------------------------------------------- float32
def test_float32_penalised_pruned_training_follows_torch(be32):
    x, y = _data(be32)
    model = _mlp(be32)
    P.prune(model, 0.5)
    twin = torch_twin(model, dtype="float32")
    fit(model, (x, y), epochs=10, batch_size=48, optimizer=SGD(model, lr=0.1), callbacks=[P.Penalty("l1", 0.01)],
        progress=False)
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    tx, ty = torch.as_tensor(_np(x)), torch.as_tensor(_np(y))
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(tx), ty)     # the forward recomputes weight = orig · mask
        reg = sum(m.weight.abs().sum() for m in twin.modules() if isinstance(m, torch.nn.Linear))
        (loss + 0.01 * reg).backward()
        opt.step()
    np.testing.assert_allclose(twin(tx).detach().numpy(), _np(predict(model, x)), rtol=1e-4, atol=1e-5)
    scores = P.taylor_scores(model, (x, y))
    assert all(B.dtype_name(s) == "float32" for s in scores.values())


def test_remove_pruned_units_without_dead_units_returns_a_copy(be64):
    model = _mlp(be64)
    same = P.remove_pruned_units(model)
    assert same is not model and same[0] is not model[0]
    np.testing.assert_array_equal(_np(same[0]._params["weight"].data), _np(model[0]._params["weight"].data))


def test_proximal_step_leaves_frozen_weights_alone(be64):
    x, y = _data(be64)
    model = _mlp(be64)
    frozen = model[0]._params["weight"]
    frozen.requires_grad = False
    before = _np(frozen.data).copy()
    fit(model, (x, y), epochs=2, batch_size=16, lr=0.1, callbacks=[P.ProximalL1(1.0)], progress=False)
    np.testing.assert_array_equal(_np(frozen.data), before)
    assert P.sparsity(model[2]._params["weight"].data) > 0
