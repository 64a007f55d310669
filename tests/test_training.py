"""The fit loop: seeded batches, callbacks, and a model trained from scratch landing on the same
weights as its torch.nn twin trained with autograd and torch.optim.SGD."""
import math
import re
import warnings

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.reference import torch_twin, train_torch_twin
from nnopt_lab.testing import compare
from nnopt_lab.nn.layers import CrossEntropyLoss
from nnopt_lab.training import (SGD, BatchLoss, Callback, DivergenceWarning, TrainingDiverged, accuracy, batches,
                                evaluate, fit, predict, train_step)


def _toy(b, n=96, d=8, classes=3):
    B.seed(5)
    x = B.randn(n, d, backend=b)
    w = B.randn(d, classes, backend=b)
    y = B.namespace(x).argmax(x @ w, axis=1)
    return x, y


@pytest.mark.parametrize("make", [
    lambda b: models.mlp((8, 16, 12, 3), backend=b),
    lambda b: models.mlp((8, 16, 3), batchnorm=True, backend=b),
])
def test_mlp_trained_from_scratch_ends_with_the_torch_twins_weights(be64, make):
    x, y = _toy(be64)
    B.seed(11)
    ours = make(be64)
    twin = torch_twin(ours)
    fit(ours, (x, y), epochs=4, batch_size=10, lr=0.2, seed=3, progress=False)
    train_torch_twin(twin, (x, y), epochs=4, batch_size=10, lr=0.2, seed=3)
    for key, value in twin.state_dict().items():
        compare(ours.state_dict()[key], value, f"torch.optim.SGD-trained {key}", rtol=1e-9, atol=1e-11, quiet=True)


def test_cnn_trained_from_scratch_ends_with_the_torch_twins_weights(backend_name):
    b = B.get_backend(backend_name, "float64")
    B.seed(2)
    x = B.randn(40, 1, 8, 8, backend=b)
    y = B.to_backend(B.rng().integers(0, 10, 40), b)
    ours = models.small_cnn(channels=(4, 6), backend=b)
    twin = torch_twin(ours)
    fit(ours, (x, y), epochs=2, batch_size=8, lr=0.1, seed=1, progress=False)
    train_torch_twin(twin, (x, y), epochs=2, batch_size=8, lr=0.1, seed=1)
    for key, value in twin.state_dict().items():
        compare(ours.state_dict()[key], value, key, rtol=1e-9, atol=1e-11, quiet=True)


def test_float32_training_stays_close_to_the_twin(backend_name):
    b = B.get_backend(backend_name, "float32")
    x, y = _toy(b)
    ours = models.mlp((8, 16, 3), backend=b)
    twin = torch_twin(ours)
    fit(ours, (x, y), epochs=2, batch_size=16, lr=0.1, seed=0, progress=False)
    train_torch_twin(twin, (x, y), epochs=2, batch_size=16, lr=0.1, seed=0)
    for key, value in twin.state_dict().items():
        compare(ours.state_dict()[key], value, key, rtol=1e-4, atol=1e-5, quiet=True)


def test_batches_cover_every_sample_once_in_a_seeded_order():
    x = np.arange(23, dtype=np.float32)[:, None]
    y = np.arange(23)
    B.seed(0)
    first = [B.to_numpy(yb) for _, yb in batches(x, y, 5)]
    B.seed(0)
    again = [B.to_numpy(yb) for _, yb in batches(x, y, 5)]
    assert [len(b) for b in first] == [5, 5, 5, 5, 3]
    assert sorted(np.concatenate(first).tolist()) == list(range(23))
    assert all(np.array_equal(a, c) for a, c in zip(first, again))
    assert not np.array_equal(np.concatenate(first), y)          # it did shuffle
    assert [len(b) for _, b in batches(x, y, 5, drop_last=True)] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        list(batches(x, y, 0))


def test_fit_learns_and_records_history_and_calls_callbacks():
    b = B.get_backend("numpy", "float32")
    x, y = _toy(b, n=300)
    model = models.mlp((8, 32, 3), backend=b)
    seen = []

    class Recorder(Callback):
        def on_epoch_end(self, state):
            seen.append((state.epoch, state.step))

    hist = fit(model, (x[:240], y[:240]), epochs=6, batch_size=16, lr=0.2, val=(x[240:], y[240:]),
               callbacks=[Recorder()], progress=False, seed=0)
    assert len(hist["loss"]) == len(hist["val_acc"]) == 6
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["val_acc"][-1] > 0.85
    assert seen == [(e, 15 * (e + 1)) for e in range(6)]
    loss, acc = evaluate(model, (x[240:], y[240:]))
    assert acc == pytest.approx(hist["val_acc"][-1]) and loss == pytest.approx(hist["val_loss"][-1])


def test_a_callback_can_stop_training():
    x, y = _toy(B.get_backend("numpy"))

    class StopAfterTwo(Callback):
        def on_epoch_end(self, state):
            state.stop = state.epoch == 1

    hist = fit(models.mlp((8, 3)), (x, y), epochs=10, callbacks=[StopAfterTwo()], progress=False)
    assert len(hist["loss"]) == 2


def _weights(model):
    return [B.to_numpy(p.data).copy() for p in model.parameters()]


class _WeightsAfterEachStep(Callback):
    def __init__(self):
        self.after = []

    def on_train_begin(self, state):
        self.after.append(_weights(state.model))

    def on_step_end(self, state):
        self.after.append(_weights(state.model))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # numpy's overflow warning while it diverges
def test_divergence_stops_at_the_first_non_finite_batch_and_keeps_the_last_finite_weights(backend_name):
    b = B.get_backend(backend_name, "float32")
    x, y = _toy(b)
    model = models.mlp((8, 64, 3), backend=b)
    steps = _WeightsAfterEachStep()
    with pytest.warns(DivergenceWarning, match="lower the learning rate") as caught:
        hist = fit(model, (x * 1e3, y), epochs=3, lr=1e6, progress=False, callbacks=[steps], on_divergence="stop")
    assert len([w for w in caught if "training stopped at a non-finite" in str(w.message)]) == 1
    assert re.fullmatch(r"non-finite (loss|gradient) at epoch \d+ step \d+", hist.stopped)
    final = _weights(model)
    assert all(np.all(np.isfinite(w)) for w in final)
    for got, want in zip(final, steps.after[-1]):          # the weights from before the bad step
        np.testing.assert_array_equal(got, want)
    assert all(math.isfinite(v) for v in hist["loss"])


class _NaNGradientAt(CrossEntropyLoss):
    """Cross-entropy whose gradient is NaN from the ``bad``-th call on (the loss stays finite)."""

    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = bad, 0

    def __call__(self, logits, labels):
        self.calls += 1
        return super().__call__(logits, labels)

    def backward(self, dloss=1.0):
        g = super().backward(dloss)
        return g * float("nan") if self.calls >= self.bad else g


def test_a_nan_gradient_with_a_finite_loss_stops_before_the_update(backend_name):
    b = B.get_backend(backend_name, "float64")
    x, y = _toy(b, n=40)
    model = models.mlp((8, 5, 3), backend=b)
    steps = _WeightsAfterEachStep()
    with pytest.raises(TrainingDiverged, match="non-finite gradient at epoch 1 step 1") as caught:
        fit(model, (x, y), epochs=3, batch_size=10, loss_fn=_NaNGradientAt(6), progress=False, callbacks=[steps])
    assert isinstance(caught.value, FloatingPointError)      # what chapters catch to mark a diverged run
    hist = caught.value.history
    assert hist.stopped == "non-finite gradient at epoch 1 step 1"
    assert len(steps.after) == 1 + 5                     # 5 good updates, the 6th never taken
    assert len(hist["loss"]) == 2                        # epoch 0 and the one good batch of epoch 1
    for got, want in zip(_weights(model), steps.after[-1]):
        np.testing.assert_array_equal(got, want)


class _GrowingLoss(CrossEntropyLoss):
    """Reports cross-entropy times a factor that grows each call (training itself stays sane)."""

    def __init__(self, growth):
        super().__init__()
        self.growth, self.scale = growth, 1.0

    def __call__(self, logits, labels):
        self.scale *= self.growth
        return super().__call__(logits, labels) * self.scale


def test_a_loss_that_explodes_without_nan_warns_once():
    x, y = _toy(B.get_backend("numpy", "float64"), n=40)
    with pytest.warns(DivergenceWarning, match="exploded") as caught:
        hist = fit(models.mlp((8, 3), backend=B.get_backend("numpy", "float64")), (x, y), epochs=6,
                   batch_size=10, loss_fn=_GrowingLoss(3.0), progress=False)
    assert len(caught) == 1
    assert hist.stopped is None and len(hist["loss"]) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # a steady loss does not warn
        fit(models.mlp((8, 3)), _toy(B.get_backend("numpy"), n=40), epochs=6, batch_size=10, progress=False)


def test_fit_rejects_bad_arguments():
    x, y = _toy(B.get_backend("numpy"))
    model = models.mlp((8, 3))
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 1000000\], got 0"):
        fit(model, (x, y), epochs=0)
    with pytest.raises(ValueError, match="X has 96 samples but y has 95"):
        fit(model, (x, y[:95]), epochs=1)
    with pytest.raises(TypeError, match="train.s y is on torch-cpu but train.s X is on numpy"):
        fit(model, (x, torch.as_tensor(y)), epochs=1)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \[0, inf\), got -0.1"):
        SGD(model, lr=-0.1)


def test_sgd_keeps_masked_weights_at_zero_and_skips_frozen_ones():
    b = B.get_backend("numpy", "float64")
    x, y = _toy(b)
    model = models.mlp((8, 4, 3), backend=b)
    first, last = model[0]._params["weight"], model[2]._params["weight"]
    mask = (B.rng().random(first.shape) > 0.5).astype("float64")
    first.mask = mask
    first.data = first.data * mask
    last.requires_grad = False
    frozen = last.data.copy()
    fit(model, (x, y), epochs=2, batch_size=8, lr=0.5, progress=False)
    assert np.all(B.to_numpy(first.data)[mask == 0] == 0.0)
    assert np.any(B.to_numpy(first.data)[mask == 1] != 0.0)
    np.testing.assert_array_equal(B.to_numpy(last.data), frozen)


def test_fit_applies_augment_to_every_training_batch_only():
    x, y = _toy(B.get_backend("numpy"), n=50)
    calls = []

    def augment(xb):
        calls.append(xb.shape[0])
        return xb * 0.0          # a destructive "augmentation": with zero inputs only the bias can learn

    model = models.mlp((8, 3))
    w0 = model[0]._params["weight"].data.copy()
    b0 = model[0]._params["bias"].data.copy()
    fit(model, (x, y), epochs=2, batch_size=20, augment=augment, val=(x, y), progress=False)
    assert calls == [20, 20, 10] * 2                          # training batches only, not validation
    np.testing.assert_array_equal(model[0]._params["weight"].data, w0)
    assert not np.array_equal(model[0]._params["bias"].data, b0)


def test_silent_wrong_answers_raise_instead(backend_name):
    b = B.get_backend(backend_name, "float64")
    x, y = _toy(b, n=30)
    model = models.mlp((8, 3), backend=b)
    with pytest.raises(ValueError, match="x has 30 samples but y has 29"):
        next(batches(x, y[:29], 8))
    w0 = _weights(model)
    with pytest.raises(ValueError, match="batch_size must be <= the number of training samples 30 with "
                                         "drop_last=True .* got 31"):
        fit(model, (x, y), epochs=2, batch_size=31, drop_last=True, progress=False)
    other = models.mlp((8, 3), backend=b)
    with pytest.raises(ValueError, match="optimizer holds 2 of its 2 parameters .* not this model's"):
        fit(model, (x, y), epochs=1, optimizer=SGD(other, lr=0.1), progress=False)
    with pytest.raises(ValueError, match=r"on_divergence must be one of \('raise', 'stop'\), got 'ignore'"):
        fit(model, (x, y), epochs=1, on_divergence="ignore", progress=False)
    with pytest.raises(ValueError, match="give lr or optimizer, not both"):
        fit(model, (x, y), epochs=1, optimizer=SGD(model, lr=0.1), lr=0.5, progress=False)
    assert all(np.array_equal(a, c) for a, c in zip(_weights(model), w0))      # nothing trained
    # a subset of the model's own parameters is fine (fine-tuning the last layer only)
    fit(model, (x, y), epochs=1, optimizer=SGD(model.parameters()[-2:], lr=0.1), progress=False)
    logits = model(x)
    yy = B.namespace(y).reshape(y, (-1, 1))
    with pytest.raises(ValueError, match=r"labels must have shape \(30,\) .* got \(30, 1\)"):
        accuracy(logits, yy)
    with pytest.raises(ValueError, match=r"labels must have shape \(30,\) .* got \(29,\)"):
        accuracy(logits, y[:29])
    with pytest.raises(ValueError, match=r"labels must have shape \(29,\) .* got \(30,\)"):
        accuracy(logits[:29], y)
    want = float((B.to_numpy(logits).argmax(1) == B.to_numpy(y)).mean())
    assert accuracy(logits, y) == want


def test_accuracy_on_n_by_1_labels_was_a_wrong_number_before():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = np.array([0, 1, 1])
    assert accuracy(logits, labels) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels"):
        accuracy(logits, labels[:, None])      # broadcasting gave (3, 3) comparisons -> 5/9


# ----------------------------------------------------------------------------- hooks
class _MaskGradients(Callback):
    """A pruning-style callback: zero the gradient of chosen weights between backward and step."""

    def __init__(self, param, mask):
        self.param, self.mask, self.calls = param, mask, 0

    def on_after_backward(self, state):
        assert self.param.grad is not None           # the gradient is there, the update not yet made
        self.calls += 1
        self.param.grad = self.param.grad * self.mask


def _torch_fit(twin, x, y, *, epochs, batch_size, lr, seed, loss=None, after_backward=None):
    """torch.optim.SGD + autograd on the batches fit(seed=seed) draws, in the same order."""
    xt, yt = torch.as_tensor(B.to_numpy(x)), torch.as_tensor(B.to_numpy(y))
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    loss = loss or (lambda z, yb, xb: (torch.nn.functional.cross_entropy(z, yb), {}))
    B.seed(seed)
    parts_per_epoch = []
    for _ in range(epochs):
        sums, n = {}, 0
        for xb, yb in batches(xt, yt, batch_size):
            opt.zero_grad()
            value, parts = loss(twin(xb), yb, xb)
            value.backward()
            if after_backward:
                after_backward(twin)
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item() * xb.shape[0]
            n += xb.shape[0]
        parts_per_epoch.append({k: v / n for k, v in sums.items()})
    return parts_per_epoch


def test_on_after_backward_masks_gradients_like_a_torch_grad_hook(be64):
    x, y = _toy(be64, n=48)
    B.seed(1)
    ours = models.mlp((8, 6, 3), backend=be64)
    twin = torch_twin(ours)
    weight = ours[0]._params["weight"]
    mask_np = (np.random.default_rng(0).random(weight.shape) > 0.5).astype("float64")
    w0 = B.to_numpy(weight.data).copy()
    cb = _MaskGradients(weight, B.asarray(mask_np, weight.data))
    fit(ours, (x, y), epochs=3, batch_size=12, lr=0.3, seed=4, progress=False, callbacks=[cb])
    mask_t = torch.as_tensor(mask_np)

    def hook(net):
        net[0].weight.grad *= mask_t
    _torch_fit(twin, x, y, epochs=3, batch_size=12, lr=0.3, seed=4, after_backward=hook)
    assert cb.calls == 3 * 4
    w = B.to_numpy(weight.data)
    np.testing.assert_array_equal(w[mask_np == 0], w0[mask_np == 0])      # masked weights never moved
    assert np.all(w[mask_np == 1] != w0[mask_np == 1])
    for key, value in twin.state_dict().items():
        compare(ours.state_dict()[key], value, key, rtol=1e-10, atol=1e-12, quiet=True)


class _ToyDistillation(BatchLoss):
    r"""(1 - a)·CE(z, y) + a·½·mean_i ‖z_i - t(x_i)‖²: needs the batch's inputs for the teacher t."""

    def __init__(self, teacher, alpha=0.5):
        self.teacher, self.alpha, self.ce = teacher, alpha, CrossEntropyLoss()

    def __call__(self, logits, labels, inputs):
        xp = B.namespace(logits)
        self._diff = logits - predict(self.teacher, inputs)
        ce = self.ce(logits, labels)
        match = 0.5 * xp.mean(xp.sum(self._diff ** 2, axis=1))
        self.parts = {"ce": ce, "match": match}
        return (1 - self.alpha) * ce + self.alpha * match

    def backward(self, dloss=1.0):
        n = self._diff.shape[0]
        return (1 - self.alpha) * self.ce.backward(dloss) + self.alpha * dloss * self._diff / n


def test_a_batch_aware_loss_sees_the_inputs_and_its_parts_are_recorded_like_torch(be64):
    x, y = _toy(be64, n=40)
    B.seed(2)
    teacher, student = models.mlp((8, 10, 3), backend=be64), models.mlp((8, 3), backend=be64)
    t_twin, s_twin = torch_twin(teacher), torch_twin(student)
    hist = fit(student, (x, y), epochs=3, batch_size=16, lr=0.2, seed=7, progress=False,
               loss_fn=_ToyDistillation(teacher, 0.7))

    def torch_loss(z, yb, xb):
        with torch.no_grad():
            t = t_twin(xb)
        ce = torch.nn.functional.cross_entropy(z, yb)
        match = 0.5 * ((z - t) ** 2).sum(1).mean()
        return 0.3 * ce + 0.7 * match, {"ce": ce, "match": match}
    parts = _torch_fit(s_twin, x, y, epochs=3, batch_size=16, lr=0.2, seed=7, loss=torch_loss)
    for key, value in s_twin.state_dict().items():
        compare(student.state_dict()[key], value, key, rtol=1e-10, atol=1e-12, quiet=True)
    for name in ("ce", "match"):
        np.testing.assert_allclose(hist[f"loss/{name}"], [p[name] for p in parts], rtol=1e-10)
    np.testing.assert_allclose(hist["loss"], [0.3 * p["ce"] + 0.7 * p["match"] for p in parts], rtol=1e-10)


def test_extra_metrics_are_recorded_after_every_epoch():
    x, y = _toy(B.get_backend("numpy", "float64"), n=40)
    model = models.mlp((8, 3), backend=B.get_backend("numpy", "float64"))
    seen = []

    def weight_norm(m):
        value = float(np.linalg.norm(B.to_numpy(m[0]._params["weight"].data)))
        seen.append(value)
        return value
    hist = fit(model, (x, y), epochs=4, batch_size=10, metrics={"weight_norm": weight_norm}, progress=False)
    assert hist["weight_norm"] == seen and len(seen) == 4
    assert hist["weight_norm"][-1] == weight_norm(model)
    with pytest.raises(ValueError, match="metrics names must be new str keys"):
        fit(model, (x, y), epochs=1, metrics={"loss": weight_norm}, progress=False)
    with pytest.raises(TypeError, match=r"metrics\['w'\] must be callable"):
        fit(model, (x, y), epochs=1, metrics={"w": 3.0}, progress=False)
    with pytest.raises(ValueError, match=r"metrics\['w'\]\(model\) must return a real number, got nan"):
        fit(model, (x, y), epochs=1, metrics={"w": lambda m: float("nan")}, progress=False)


def test_fit_names_the_argument_of_the_wrong_kind():
    x, y = _toy(B.get_backend("numpy"), n=20)
    model = models.mlp((8, 3))
    cases = [
        (dict(model=3), "model must be an nnopt_lab Module, got int"),
        (dict(callbacks=3), "callbacks must be a sequence of Callback objects, got int"),
        (dict(callbacks=[lambda state: None]), r"callbacks\[0\] must be a Callback .* got function"),
        (dict(loss_fn=lambda z, y: 0.0), "loss_fn must be a loss object"),
        (dict(optimizer="sgd"), "optimizer must be an nnopt_lab Optimizer, got str"),
        (dict(epochs=2.5), None), (dict(epochs="2"), r"epochs must be an int in \[1, 1000000\], got '2'"),
        (dict(epochs=2 ** 62), "epochs must be an int in"),
        (dict(drop_last=1), "drop_last must be a bool, got 1"),
        (dict(augment=3), "augment must be callable, got int"),
        (dict(metrics=[1]), "metrics must be a dict"),
    ]
    for kwargs, match in cases:
        args = dict(model=model, train=(x, y), epochs=1, progress=False)
        args.update(kwargs)
        with pytest.raises((TypeError, ValueError), match=match):
            fit(args.pop("model"), args.pop("train"), **args)


def test_data_with_nan_is_refused_before_training_and_errors_name_the_argument(backend_name):
    b = B.get_backend(backend_name, "float64")
    x, y = _toy(b, n=20)
    model = models.mlp((8, 3), backend=b)
    holed = B.copy(x)
    holed[3, 2] = float("nan")
    with pytest.raises(ValueError, match="train's X holds 1 NaN or inf entries"):
        fit(model, (holed, y), epochs=1, progress=False)
    with pytest.raises(ValueError, match="x holds 1 NaN or inf entries"):
        predict(model, holed)
    other = B.to_backend(B.to_numpy(y), "numpy" if backend_name != "numpy" else "torch-cpu")
    with pytest.raises(TypeError, match="labels is on .* but logits is on"):
        accuracy(model(x), other)
    with pytest.raises(TypeError, match="y is on .* but x is on"):
        next(batches(x, other, 4))
    with pytest.raises(ValueError, match="logits must have at least one class"):
        accuracy(B.namespace(x).zeros((4, 0), dtype=x.dtype), y[:4])
    int_logits = B.to_backend(np.array([[0, 3], [5, 1]]), b)
    assert accuracy(int_logits, B.to_backend(np.array([1, 1]), b)) == 0.5      # torch: mean() of ints failed
    with pytest.raises(ValueError, match="xb does not fit the model"):
        train_step(model, CrossEntropyLoss(), SGD(model, lr=0.1), x[:, :5], y)
    with pytest.raises(TypeError, match="yb .*labels must be integer"):
        train_step(model, CrossEntropyLoss(), SGD(model, lr=0.1), x, B.namespace(x).astype(y, x.dtype))
