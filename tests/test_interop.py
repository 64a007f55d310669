"""A learner's own torch model in and out: from_torch (outputs equal torch's, unsupported layers named),
to_torch round trips, to_torch_quantized (codes equal ours on qnnpack), a pipeline on an imported
model exported back, and torch's own tools (prune + torch.ao PTQ) as the side-by-side baseline."""
import copy

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import datasets, measure, models
from nnopt_lab import pipeline as P
from nnopt_lab import reference as R
from nnopt_lab.compression import pruning
from nnopt_lab.training import fit

TRIALS = 4


def _has_int8():
    from nnopt_lab.inference import integer
    return hasattr(integer, "convert")


needs_int8 = pytest.mark.skipif(not _has_int8(), reason="nnopt_lab.inference.integer.convert not written yet")


def _randomize_bn(model, g):
    """Non-trivial running statistics and affine parameters in every BatchNorm of a torch model."""
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.as_tensor(g.standard_normal(c)))
                m.bias.copy_(torch.as_tensor(g.standard_normal(c)))
                m.running_mean.copy_(torch.as_tensor(g.standard_normal(c)))
                m.running_var.copy_(torch.as_tensor(g.random(c) + 0.3))
    return model


def _random_mlp(g):
    widths = [int(w) for w in g.integers(3, 12, size=int(g.integers(1, 4)))]
    layers, n_in = [], 7
    for w in widths:
        layers += [torch.nn.Linear(n_in, w, bias=bool(g.integers(0, 2)))]
        if g.random() < 0.5:
            layers.append(torch.nn.BatchNorm1d(w, eps=float(g.choice([1e-5, 1e-3])), momentum=0.2))
        layers.append(torch.nn.ReLU())
        if g.random() < 0.5:
            layers.append(torch.nn.Dropout(0.3))
        n_in = w
    layers.append(torch.nn.Linear(n_in, 4))
    return torch.nn.Sequential(*layers), (7,)


def _random_cnn(g):
    c1, c2 = (int(c) for c in g.integers(2, 6, size=2))
    pool = torch.nn.MaxPool2d(2) if g.random() < 0.5 else torch.nn.AvgPool2d(2, stride=2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, c1, 3, padding=1, stride=1), torch.nn.BatchNorm2d(c1), torch.nn.ReLU(), pool,
        torch.nn.Sequential(torch.nn.Conv2d(c1, c2, (3, 2), stride=(1, 2), padding=(1, 0), dilation=1,
                                            bias=bool(g.integers(0, 2))), torch.nn.ReLU()),
        torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(c2 * 4 * 2, 3))
    return net, (2, 8, 8)


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("build", [_random_mlp, _random_cnn], ids=["mlp", "cnn"])
def test_from_torch_outputs_equal_torch_float64(be64, build, trial):
    g = np.random.default_rng(trial)
    torch.manual_seed(trial)
    net, shape = build(g)
    net = _randomize_bn(net.double(), g).eval()
    ours = R.from_torch(net, backend=be64)
    assert not ours.training
    x = g.standard_normal((5,) + shape)
    with torch.no_grad():
        want = net(torch.as_tensor(x)).numpy()
    got = B.to_numpy(ours(B.to_backend(x, be64)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert measure.count_parameters(ours) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("build", [_random_mlp, _random_cnn], ids=["mlp", "cnn"])
def test_from_torch_outputs_equal_torch_float32(be32, build):
    g = np.random.default_rng(7)
    net, shape = build(g)
    net = _randomize_bn(net, g).float().eval()
    ours = R.from_torch(net, backend=be32.name)          # a name: the torch model's dtype (float32)
    x = g.standard_normal((5,) + shape).astype(np.float32)
    with torch.no_grad():
        want = net(torch.as_tensor(x)).numpy()
    got = B.to_numpy(ours(B.to_backend(x, be32)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_from_torch_copies_training_mode_and_batchnorm_statistics_train_step():
    g = np.random.default_rng(1)
    net = _randomize_bn(torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(),
                                            torch.nn.Linear(5, 2)).double(), g).train()
    ours = R.from_torch(net, backend=B.get_backend("numpy", "float64"))
    assert ours.training
    x = g.standard_normal((6, 4))
    np.testing.assert_allclose(B.to_numpy(ours(x)), net(torch.as_tensor(x)).detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(ours[1]._buffers["running_var"]), net[1].running_var.numpy(), atol=1e-15)


def test_from_torch_keeps_torch_pruning_masks():
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
    torch.nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.6)
    ours = R.from_torch(net, backend=B.get_backend("numpy", "float64"))
    mask = ours[0]._params["weight"].mask
    np.testing.assert_array_equal(B.to_numpy(mask), net[0].weight_mask.numpy())
    np.testing.assert_array_equal(B.to_numpy(ours[0]._params["weight"].data), net[0].weight.detach().numpy())
    fit(ours, (np.random.default_rng(0).standard_normal((16, 6)), np.arange(16) % 3), epochs=2, batch_size=4,
        lr=0.1, progress=False)
    assert (B.to_numpy(ours[0]._params["weight"].data)[B.to_numpy(mask) == 0] == 0).all()


def test_from_torch_does_not_move_the_random_stream():
    B.seed(11)
    R.from_torch(torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.Conv2d(1, 2, 3)), backend="numpy")
    after = B.rng().random()
    B.seed(11)
    assert after == B.rng().random()


@pytest.mark.parametrize("net, words", [
    (torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.GELU()),
     r"torch_sequential\[2\] is a torch\.nn\.modules\.activation\.GELU, which nnopt_lab cannot import"),
    (torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.LayerNorm(3))),
     r"torch_sequential\[1\]\[0\] is a torch\.nn\.modules\.normalization\.LayerNorm"),
    (torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
     r"torch_sequential\[0\] is a torch\.nn\.Conv2d with padding_mode='reflect'"),
    (torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding="same")), "padding='same'"),
    (torch.nn.Sequential(torch.nn.MaxPool2d(2, ceil_mode=True)), "ceil_mode"),
    (torch.nn.Sequential(torch.nn.MaxPool2d(2, padding=1)), "padding=1"),
    (torch.nn.Sequential(torch.nn.AvgPool2d(2, divisor_override=3)), "divisor_override"),
    (torch.nn.Sequential(torch.nn.BatchNorm1d(3, affine=False)), "affine"),
    (torch.nn.Sequential(torch.nn.Flatten(2)), "start_dim=2"),
    (torch.nn.Sequential(torch.nn.Linear(3, 3)).half(), "float16"),
])
def test_from_torch_names_what_it_cannot_import(net, words):
    with pytest.raises(ValueError, match=words):
        R.from_torch(net)


def test_from_torch_refuses_what_is_not_a_sequential():
    with pytest.raises(TypeError, match="torch_sequential must be a torch.nn.Sequential"):
        R.from_torch(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="torch_sequential"):
        R.from_torch(models.mlp((3, 2)))


def test_round_trips_are_exact(be64):
    B.seed(0)
    ours = models.mlp((6, 5, 4, 3), batchnorm=True, backend=be64)
    pruning.prune(ours, 0.5)
    back = R.from_torch(R.to_torch(ours), backend=be64)
    a, b = ours.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(B.to_numpy(a[k]), B.to_numpy(b[k]), err_msg=k)
    g = np.random.default_rng(0)
    net = _randomize_bn(_random_cnn(g)[0].double(), g).eval()
    again = R.to_torch(R.from_torch(net, backend=be64))
    for k, v in net.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


# ----------------------------------------------------------------------------- a learner's model, end to end
@pytest.fixture(scope="module")
def digits():
    return datasets.load_digits(B.get_backend("numpy", "float32"))


@pytest.fixture(scope="module")
def learner(digits):
    """A learner's torch model, trained by torch."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 10))
    R.train_torch_twin(net, digits.train, epochs=8, batch_size=32, lr=0.1, seed=0)
    return net.eval()


def test_pipeline_on_an_imported_torch_model_exports_back_with_equal_outputs(digits, learner):
    model = R.from_torch(learner, backend="numpy")
    report = P.Pipeline([P.Prune(0.5, structured=True, fine_tune_epochs=1), P.Trim()]).run(model, digits,
                                                                                         latency=False)
    with torch.no_grad():
        want = learner(torch.as_tensor(digits.test[0])).argmax(1).numpy()
    assert report.rows[0].accuracy == (want == digits.test[1]).mean()
    exported = R.to_torch(report.final_model).eval()
    assert isinstance(exported, torch.nn.Sequential) and exported[0].out_features == 16
    with torch.no_grad():
        out = exported(torch.as_tensor(digits.test[0])).numpy()
    np.testing.assert_allclose(out, B.to_numpy(report.final_model(digits.test[0])), rtol=1e-6, atol=1e-6)


@needs_int8
@pytest.mark.parametrize("per_channel", [True, False])
def test_to_torch_quantized_codes_equal_ours_on_qnnpack(digits, learner, per_channel):
    from nnopt_lab.inference import integer

    model = R.from_torch(learner, backend="numpy")
    x = digits.test[0]
    for requantization in ("float", "fixed"):
        q = integer.convert(model, digits.train[0][:200], per_channel=per_channel, requantization=requantization)
        exported = R.to_torch_quantized(q)
        assert isinstance(exported, torch.nn.Sequential) and exported.engine == "qnnpack"
        ours = B.to_numpy(q.forward_codes(q.quantize_input(x))).astype(np.int64)
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = "qnnpack"
        try:
            with torch.inference_mode():
                theirs = torch.nn.Sequential(*list(exported)[:-1])(torch.as_tensor(x)).int_repr().numpy()
                logits = exported(torch.as_tensor(x)).numpy()
        finally:
            torch.backends.quantized.engine = previous
        if requantization == "float":
            np.testing.assert_array_equal(ours, theirs)
            np.testing.assert_array_equal(logits, B.to_numpy(q(x)))
        else:
            assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 0.05
    assert torch.backends.quantized.engine == previous          # the export's call restores the engine


@needs_int8
def test_to_torch_quantized_convolutions_equal_ours():
    from nnopt_lab.inference import integer

    data = datasets.load_digits(B.get_backend("numpy", "float32"), as_images=True)
    B.seed(0)
    cnn = models.small_cnn(in_channels=1, image_size=8, channels=(3, 4), num_classes=10, backend="numpy")
    fit(cnn, data.train, epochs=1, batch_size=64, lr=0.05, progress=False, seed=0)
    q = integer.convert(cnn, data.train[0][:100], requantization="float")
    with torch.inference_mode():
        out = R.to_torch_quantized(q)(torch.as_tensor(data.test[0])).numpy()
    np.testing.assert_array_equal(out, B.to_numpy(q(data.test[0])))


def test_to_torch_quantized_refuses_a_float_model():
    with pytest.raises(TypeError, match="integer_model"):
        R.to_torch_quantized(models.mlp((3, 2)))


# ----------------------------------------------------------------------------- torch's own tools
def test_torch_tools_baseline_prunes_like_torch_and_gives_sensible_numbers(digits, learner):
    model = R.from_torch(learner, backend="numpy")
    d = R.torch_tools_baseline(model, digits, 0.7, repeats=3)
    assert d["kind"] == "torch" and d["engine"] in torch.backends.quantized.supported_engines
    float_acc = P.evaluate_accuracy(model, digits.test)
    assert float_acc - 0.08 < d["accuracy"] <= 1.0 and 0.5 < d["val_accuracy"] <= 1.0
    assert d["pruned_accuracy"] > float_acc - 0.08
    # the same 70 % as torch.nn.utils.prune.global_unstructured, then int8 codes of those weights
    assert 0.7 <= d["sparsity"] < 0.75
    hand = copy.deepcopy(model)
    pruning.prune(hand, 0.7, scope="global")
    codes = [m.weight().int_repr() for m in d["quantized_model"].modules()
             if isinstance(m, (torch.ao.nn.quantized.Linear,))]
    for layer, c in zip([hand[0], hand[2], hand[4]], codes):
        w = B.to_numpy(layer._params["weight"].data)
        assert (c.numpy()[w == 0] == 0).all()                     # torch pruned what we prune
    n_w, n_b = 64 * 32 + 32 * 16 + 16 * 10, 32 + 16 + 10
    assert d["params"] == n_w + n_b and d["macs"] == n_w
    assert d["bytes"] < measure.model_bytes(model, "float32") / 3.5
    assert d["compression"] == pytest.approx(measure.model_bytes(model, "float32") / d["bytes"])
    assert 0 < d["latency_b1_ms"] < 1e3 and 0 < d["latency_b64_ms"] < 1e3
    assert d["serialized_bytes"] > d["bytes"] * 0.5
    report = P.Pipeline([]).run(model, digits, latency=False).add(d)
    assert report.rows[-1].kind == "torch" and report.rows[-1].bytes == d["bytes"]


def test_torch_tools_baseline_bytes_by_the_pipelines_rule():
    """Hand count: int8 codes dense (1 B) or CSR, float32 biases, per channel scale + zero point, outputs."""
    data = datasets.load_digits(B.get_backend("numpy", "float32"))
    B.seed(0)
    model = models.mlp((64, 8, 10), backend="numpy")
    d = R.torch_tools_baseline(model, data, 0.0, engine="x86", latency=False)
    assert d["latency_b1_ms"] is None
    per_channel = d["quantized_model"].module[0].weight().qscheme() == torch.per_channel_affine
    c = (8 + 10) if per_channel else 2
    assert d["bytes"] == 64 * 8 + 8 * 10 + 4 * 18 + 8 * c + 8 * 2 + 8
    with pytest.raises(ValueError, match="engine"):
        R.torch_tools_baseline(model, data, 0.5, engine="tpu")
    with pytest.raises(ValueError, match="sparsity"):
        R.torch_tools_baseline(model, data, 1.0)
    with pytest.raises(TypeError, match="data"):
        R.torch_tools_baseline(model, data.train, 0.5)
    assert torch.backends.quantized.engine != "none"
