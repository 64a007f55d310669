"""Model trimming: BN folding against torch.nn.utils.fusion, Linear fusion, duplicate-neuron merging,
layer removal with its damage, physical removal of units and channels (against Torch-Pruning's
DependencyGraph on the same channel indices); bytes and MACs against hand-computed numbers."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.utils.fusion as fusion
import torch_pruning as tp

from nnopt_lab import backend as B
from nnopt_lab import measure, nn
from nnopt_lab.compression import trimming as T
from nnopt_lab.reference import torch_twin

TRIALS = 6


def _np(x):
    return B.to_numpy(x)


def _w(layer):
    return _np(layer._params["weight"].data)


def _randomize_bn(bn, be, rng):
    c = bn.num_features
    bn._params["weight"].data = B.to_backend(rng.standard_normal(c), be)
    bn._params["bias"].data = B.to_backend(rng.standard_normal(c), be)
    bn._buffers["running_mean"] = B.to_backend(rng.standard_normal(c), be)
    bn._buffers["running_var"] = B.to_backend(rng.random(c) + 0.2, be)
    return bn


def _close(a, b, be, atol=1e-12):
    if be.dtype == "float64":
        np.testing.assert_allclose(_np(a), _np(b), rtol=0, atol=atol)
    else:
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- BN folding
@pytest.mark.parametrize("trial", range(TRIALS))
def test_fold_conv_bn_equals_torch_fusion(be64, trial):
    rng = np.random.default_rng(trial)
    groups = int(rng.choice([1, 2]))
    conv = nn.Conv2d(2 * groups, 3 * groups, (3, 2), stride=(1, 2), padding=1, groups=groups,
                     bias=bool(trial % 2), backend=be64)
    bn = _randomize_bn(nn.BatchNorm2d(3 * groups, eps=1e-3, backend=be64), be64, rng)
    folded = T.fold_batchnorm(conv, bn)
    ref = fusion.fuse_conv_bn_eval(torch_twin(conv, "float64").eval(), torch_twin(bn, "float64").eval())
    _close(folded._params["weight"].data, ref.weight.detach(), be64)
    _close(folded._params["bias"].data, ref.bias.detach(), be64)
    x = B.randn(2, 2 * groups, 6, 7, backend=be64)
    _close(folded(x), bn.eval()(conv(x)), be64)


@pytest.mark.parametrize("bias", [True, False])
def test_fold_linear_bn_equals_torch_fusion(be64, bias):
    rng = np.random.default_rng(7)
    layer = nn.Linear(5, 4, bias=bias, backend=be64)
    bn = _randomize_bn(nn.BatchNorm1d(4, backend=be64), be64, rng)
    folded = T.fold_batchnorm(layer, bn)
    ref = fusion.fuse_linear_bn_eval(torch_twin(layer, "float64").eval(), torch_twin(bn, "float64").eval())
    _close(folded._params["weight"].data, ref.weight.detach(), be64)
    _close(folded._params["bias"].data, ref.bias.detach(), be64)


def test_fold_float32(be32):
    conv = nn.Conv2d(3, 4, 3, backend=be32)
    bn = _randomize_bn(nn.BatchNorm2d(4, backend=be32), be32, np.random.default_rng(1))
    x = B.randn(2, 3, 5, 5, backend=be32)
    _close(T.fold_batchnorm(conv, bn)(x), bn.eval()(conv(x)), be32)


def _cnn(be, rng):
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, backend=be), nn.BatchNorm2d(6, backend=be), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(96, 8, backend=be),
                          nn.BatchNorm1d(8, backend=be), nn.ReLU(), nn.Linear(8, 5, backend=be))
    _randomize_bn(model[1], be, rng)
    _randomize_bn(model[6], be, rng)
    return model.eval()


def test_fold_batchnorms_in_a_sequential(be64):
    model = _cnn(be64, np.random.default_rng(2))
    x = B.randn(3, 3, 8, 8, backend=be64)
    folded = T.fold_batchnorms(model)
    assert [type(m).__name__ for m in folded] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "ReLU",
                                                  "Linear"]
    _close(folded(x), model(x), be64)
    assert measure.summary(folded, (3, 8, 8)).total_macs == measure.summary(model, (3, 8, 8)).total_macs
    # the BNs' 2 x 6 + 2 x 8 parameters are gone
    assert measure.count_parameters(model) - measure.count_parameters(folded) == 28


def test_fold_batchnorms_keeps_the_pruning_mask(be64):
    conv = nn.Conv2d(2, 3, 3, backend=be64)
    mask = np.ones((3, 2, 3, 3))
    mask[1] = 0
    conv._params["weight"].mask = B.to_backend(mask, be64)
    conv._params["weight"].apply_mask()
    folded = T.fold_batchnorm(conv, _randomize_bn(nn.BatchNorm2d(3, backend=be64), be64, np.random.default_rng(0)))
    np.testing.assert_array_equal(_np(folded._params["weight"].mask), mask)
    assert not np.any(_w(folded)[1])


@pytest.mark.parametrize("layers, words", [
    (lambda: [nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)],
     "cannot fold model[2] (BatchNorm1d): it follows model[1] (ReLU), not a Linear or Conv2d"),
    (lambda: [nn.BatchNorm1d(4), nn.Linear(4, 4)], "cannot fold model[0] (BatchNorm1d): it is the first layer"),
])
def test_fold_refuses_a_bn_after_something_else(layers, words):
    with pytest.raises(ValueError) as info:
        T.fold_batchnorms(nn.Sequential(*layers()))
    assert words in str(info.value)


def test_fold_batchnorm_refuses():
    with pytest.raises(TypeError, match="bn must be a BatchNorm2d to follow a Conv2d"):
        T.fold_batchnorm(nn.Conv2d(1, 2, 1), nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match="bn has 3 features but layer has 2 outputs"):
        T.fold_batchnorm(nn.Linear(1, 2), nn.BatchNorm1d(3))
    with pytest.raises(TypeError, match="layer must be an nnopt_lab Linear or Conv2d"):
        T.fold_batchnorm(nn.ReLU(), nn.BatchNorm1d(3))
    with pytest.raises(TypeError, match="model must be an nnopt_lab Sequential"):
        T.fold_batchnorms(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- Linear fusion
@pytest.mark.parametrize("bias1, bias2", [(True, True), (False, True), (True, False), (False, False)])
def test_fuse_linear(be64, bias1, bias2):
    first, second = nn.Linear(6, 9, bias=bias1, backend=be64), nn.Linear(9, 4, bias=bias2, backend=be64)
    fused = T.fuse_linear(first, second)
    t1, t2 = torch_twin(first, "float64"), torch_twin(second, "float64")
    _close(fused._params["weight"].data, (t2.weight @ t1.weight).detach(), be64)
    assert ("bias" in fused._params) == (bias1 or bias2)
    x = B.randn(5, 6, backend=be64)
    _close(fused(x), second(first(x)), be64)


def test_fuse_linears_fuses_every_run(be64):
    model = nn.Sequential(nn.Linear(4, 8, backend=be64), nn.Linear(8, 8, backend=be64), nn.ReLU(),
                          nn.Linear(8, 6, backend=be64), nn.Linear(6, 5, backend=be64), nn.Linear(5, 3, backend=be64))
    fused = T.fuse_linears(model)
    assert [type(m).__name__ for m in fused] == ["Linear", "ReLU", "Linear"]
    x = B.randn(4, 4, backend=be64)
    _close(fused(x), model(x), be64)
    # parameters: 4*8+8 + 8*8+8 + 8*6+6 + 6*5+5 + 5*3+3 = 219 before; 4*8+8 + 8*3+3 = 67 after
    assert (measure.count_parameters(model), measure.count_parameters(fused)) == (219, 67)


def test_fuse_linear_refuses():
    with pytest.raises(ValueError, match="second takes 3 features but first gives 4"):
        T.fuse_linear(nn.Linear(2, 4), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="second must be an nnopt_lab Linear"):
        T.fuse_linear(nn.Linear(2, 4), nn.ReLU())


# ----------------------------------------------------------------------------- duplicate neurons
def _mlp_with_duplicates(be, noise=0.0):
    model = nn.Sequential(nn.Linear(5, 6, backend=be), nn.ReLU(), nn.Linear(6, 3, backend=be))
    w, b = _np(model[0]._params["weight"].data).copy(), _np(model[0]._params["bias"].data).copy()
    w[1], w[3], b[1], b[3] = w[0], w[0], b[0], b[0]             # units 0, 1, 3 are one unit
    w[5], b[5] = w[2] + noise, b[2]                              # unit 5 is unit 2 up to noise
    model[0]._params["weight"].data = B.to_backend(w, be)
    model[0]._params["bias"].data = B.to_backend(b, be)
    return model


def test_duplicate_groups():
    model = _mlp_with_duplicates(B.get_backend("numpy", "float64"), noise=1e-7)
    weight, bias = model[0]._params["weight"].data, model[0]._params["bias"].data
    assert T.duplicate_groups(weight, bias) == [[0, 1, 3]]
    assert T.duplicate_groups(weight, bias, tol=1e-6) == [[0, 1, 3], [2, 5]]
    with pytest.raises(ValueError, match="tol must be a finite number in \\[0, inf\\), got -1"):
        T.duplicate_groups(weight, bias, tol=-1)
    with pytest.raises(ValueError, match="bias must have shape \\(6,\\)"):
        T.duplicate_groups(weight, bias[:3])
    with pytest.raises(TypeError, match="bias must be on weight's backend"):
        T.duplicate_groups(weight, torch.as_tensor(bias))
    with pytest.raises(ValueError, match="weight must have at least one unit"):
        T.duplicate_groups(weight[:0], bias[:0])


def test_duplicate_groups_on_torch_equal_numpy():
    model = _mlp_with_duplicates(B.get_backend("torch-cpu", "float64"), noise=1e-7)
    assert T.duplicate_groups(model[0]._params["weight"].data, model[0]._params["bias"].data, 1e-6) == \
        [[0, 1, 3], [2, 5]]


def test_merging_exact_duplicates_keeps_the_outputs(be64):
    model = _mlp_with_duplicates(be64, noise=1e-7)
    merged = T.merge_duplicate_neurons(model, 0)
    assert (merged[0].out_features, merged[2].in_features) == (4, 4)
    x = B.randn(7, 5, backend=be64)
    _close(merged(x), model(x), be64)
    # the kept unit 0 carries the sum of columns 0, 1, 3
    w2 = _w(model[2])
    np.testing.assert_allclose(_w(merged[2])[:, 0], w2[:, 0] + w2[:, 1] + w2[:, 3], atol=1e-15)
    # 2 units fewer: 2 x (5 + 1) incoming and 2 x 3 outgoing parameters, 2 x (5 + 3) MACs per sample
    assert measure.count_parameters(model) - measure.count_parameters(merged) == 18
    macs = lambda m: measure.summary(m, (5,)).total_macs
    assert macs(model) - macs(merged) == 16


def test_merging_near_duplicates_changes_outputs_a_little(be64):
    model = _mlp_with_duplicates(be64, noise=1e-7)
    merged = T.merge_duplicate_neurons(model, 0, tol=1e-6)
    assert merged[0].out_features == 3
    x = B.randn(7, 5, backend=be64)
    diff = np.max(np.abs(_np(merged(x)) - _np(model(x))))
    assert 0 < diff < 1e-5


def test_merge_refuses():
    with pytest.raises(ValueError, match="model\\[1\\] \\(BatchNorm1d\\) lies between model\\[0\\] and the next"):
        T.merge_duplicate_neurons(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)), 0)
    with pytest.raises(ValueError, match="layer must be the index of a Linear, got 1"):
        T.merge_duplicate_neurons(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), 1)
    with pytest.raises(ValueError, match="layer must be an int in \\[0, 2\\], got 3"):
        T.merge_duplicate_neurons(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), 3)
    with pytest.raises(ValueError, match="has no Linear after it"):
        T.merge_duplicate_neurons(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), 0)


# ----------------------------------------------------------------------------- removing layers
def _mlp(be):
    return nn.Sequential(nn.Linear(8, 16, backend=be), nn.ReLU(), nn.Linear(16, 16, backend=be), nn.ReLU(),
                         nn.Linear(16, 4, backend=be))


def test_remove_layers(be64):
    model = _mlp(be64)
    short = T.remove_layers(model, 2, 4, input_shape=(8,))
    assert [type(m).__name__ for m in short] == ["Linear", "ReLU", "Linear"]
    x = B.randn(3, 8, backend=be64)
    _close(short(x), model[4](model[1](model[0](x))), be64)
    assert len(model) == 5                                       # the model passed in is unchanged


@pytest.mark.parametrize("start, stop, words", [
    (0, None, "removing model[0:1]: the shapes do not chain at model[2] (Linear), which gets a batch of shape (1, 8)"),
    (4, None, "removing model[4:5] changes the output shape from (1, 4) to (1, 16)"),
    (0, 5, "would leave no layer"),
    (5, None, "start must be an int in [0, 4], got 5"),
    (2, 2, "stop must be greater than start=2 (and at most 5), got 2"),
    (2, 6, "stop must be an int in [3, 5], got 6"),
])
def test_remove_layers_refuses(start, stop, words):
    with pytest.raises(ValueError) as info:
        T.remove_layers(_mlp(B.active()), start, stop, input_shape=(8,))
    assert words in str(info.value)


def test_remove_layers_refuses_a_huge_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        T.remove_layers(_mlp(B.active()), 2, input_shape=(2 ** 21, 2 ** 21))


def test_removal_damage_is_the_torch_loss_before_and_after(be64):
    model = _mlp(be64)
    x = B.randn(40, 8, backend=be64)
    y = B.to_backend(np.arange(40) % 4, be64)
    damage = T.removal_damage(model, 2, 4, (x, y))
    twin = torch_twin(model, "float64")
    xt, yt = torch.as_tensor(_np(x)), torch.as_tensor(_np(y))
    for net, loss, acc in ((twin, damage.loss_before, damage.accuracy_before),
                           (torch.nn.Sequential(twin[0], twin[1], twin[4]), damage.loss_after, damage.accuracy_after)):
        with torch.no_grad():
            logits = net(xt)
        assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, yt)), abs=1e-12)
        assert acc == pytest.approx(float((logits.argmax(1) == yt).double().mean()), abs=1e-15)
    assert "without model[2:4]" in str(damage) and len(damage.model) == 3


# ----------------------------------------------------------------------------- removing units
def _dead_mlp(be, rng):
    model = nn.Sequential(nn.Linear(6, 8, backend=be), nn.BatchNorm1d(8, backend=be), nn.ReLU(),
                          nn.Linear(8, 3, backend=be))
    _randomize_bn(model[1], be, rng)
    w = _np(model[0]._params["weight"].data).copy()
    w[[2, 5]] = 0.0                                              # units 2 and 5: zero weights, live bias
    model[0]._params["weight"].data = B.to_backend(w, be)
    return model.eval()


def test_remove_dead_units_keeps_outputs_and_shrinks_exactly(be64):
    model = _dead_mlp(be64, np.random.default_rng(5))
    assert T.dead_units(model[0]) == [2, 5]
    small = T.remove_units(model, 0)
    x = B.randn(9, 6, backend=be64)
    _close(small(x), model(x), be64)
    assert (small[0].out_features, small[1].num_features, small[3].in_features) == (6, 6, 6)
    # 2 units: 2 x (6 + 1) incoming, 2 x 2 BN, 2 x 3 outgoing = 24 parameters; 2 x (6 + 3) = 18 MACs
    assert measure.count_parameters(model) - measure.count_parameters(small) == 24
    assert measure.model_bytes(model, None) - measure.model_bytes(small, None) == 24 * 8
    macs = lambda m: measure.summary(m, (6,)).total_macs
    assert (macs(model), macs(small)) == (72, 54)


def test_remove_units_that_a_mask_removed(be64):
    model = nn.Sequential(nn.Linear(4, 5, backend=be64), nn.ReLU(), nn.Linear(5, 2, bias=False, backend=be64))
    mask = np.ones((5, 4))
    mask[[0, 3]] = 0                                             # structured pruning of units 0 and 3
    model[0]._params["weight"].mask = B.to_backend(mask, be64)   # not applied yet: the mask decides
    out_mask = np.ones((2, 5))
    out_mask[1, 4] = 0
    model[2]._params["weight"].mask = B.to_backend(out_mask, be64)
    for p in model.parameters():
        p.apply_mask()
    small = T.remove_units(model, 0)
    x = B.randn(6, 4, backend=be64)
    _close(small(x), model(x), be64)                             # the dead units' relu(bias) became a bias
    assert small[0].out_features == 3 and "bias" in small[2]._params
    np.testing.assert_array_equal(_np(small[2]._params["weight"].mask), out_mask[:, [1, 2, 4]])
    assert _np(small[0]._params["weight"].mask).shape == (3, 4)


def _dead_cnn(be, rng, dead=(1, 4)):
    model = _cnn(be, rng)
    w = _np(model[0]._params["weight"].data).copy()
    w[list(dead)] = 0.0
    model[0]._params["weight"].data = B.to_backend(w, be)
    return model


def test_remove_dead_channels_through_bn_pool_and_flatten(be64):
    model = _dead_cnn(be64, np.random.default_rng(6))
    small = T.remove_units(model, 0)
    x = B.randn(3, 3, 8, 8, backend=be64)
    _close(small(x), model(x), be64)
    assert small[5].in_features == 4 * 16                       # channel c -> columns 16c .. 16c + 15
    # 2 channels: 2 x (27 + 1) conv, 2 x 2 BN, 2 x 16 x 8 Linear columns = 316 parameters
    assert measure.count_parameters(model) - measure.count_parameters(small) == 316
    assert measure.model_bytes(model, None) - measure.model_bytes(small, None) == 316 * 8
    assert measure.model_bytes(model, "float32") - measure.model_bytes(small, "float32") == 316 * 4
    macs = lambda m: measure.summary(m, (3, 8, 8)).total_macs
    # conv 2 x 64 x 27 MACs, Linear 2 x 16 x 8
    assert macs(model) - macs(small) == 2 * 64 * 27 + 2 * 16 * 8


def test_dead_channels_through_pools_of_any_stride(be64):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, backend=be64), nn.ReLU(), nn.MaxPool2d(2, stride=3),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3, backend=be64))
    w = _np(model[0]._params["weight"].data).copy()
    w[3] = 0.0
    model[0]._params["weight"].data = B.to_backend(w, be64)
    x = B.randn(2, 2, 14, 14, backend=be64)                      # 14 -> 5 -> 2
    small = T.remove_units(model, 0)
    assert small[5].in_features == 12
    _close(small(x), model(x), be64)


def test_remove_units_float32(be32):
    model = _dead_cnn(be32, np.random.default_rng(6))
    x = B.randn(2, 3, 8, 8, backend=be32)
    _close(T.remove_units(model, 0)(x), model(x), be32)


def _conv_conv(be, padding):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, backend=be), nn.BatchNorm2d(6, backend=be), nn.ReLU(),
                         nn.Conv2d(6, 4, 3, padding=padding, backend=be), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * (8 - 2 + 2 * padding) ** 2, 3, backend=be))


@pytest.mark.parametrize("indices", [[0, 3], [5], [1, 2, 4]])
@pytest.mark.parametrize("chain", ["bn_pool_flatten", "conv_conv"])
def test_remove_channels_equals_torch_pruning(be64, indices, chain):
    rng = np.random.default_rng(11)
    if chain == "conv_conv":
        model = _conv_conv(be64, 1)
        _randomize_bn(model[1], be64, rng)
        model.eval()
    else:
        model = _cnn(be64, rng)
    x = B.randn(2, 3, 8, 8, backend=be64)
    ours = T.remove_units(model, 0, indices)
    twin = torch_twin(model, "float64").eval()
    graph = tp.DependencyGraph().build_dependency(twin, example_inputs=torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    graph.get_pruning_group(twin[0], tp.prune_conv_out_channels, idxs=list(indices)).prune()
    theirs = twin.state_dict()
    mine = ours.state_dict()
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    for key in mine:
        np.testing.assert_array_equal(_np(mine[key]), theirs[key].numpy(), err_msg=key)
    _close(ours(x), twin(torch.as_tensor(_np(x))).detach(), be64)


@pytest.mark.parametrize("indices", [[0, 7], [3]])
def test_remove_neurons_equals_torch_pruning(be64, indices):
    model = nn.Sequential(nn.Linear(6, 8, backend=be64), nn.BatchNorm1d(8, backend=be64), nn.ReLU(),
                          nn.Linear(8, 3, backend=be64))
    _randomize_bn(model[1], be64, np.random.default_rng(4))
    model.eval()
    ours = T.remove_units(model, 0, indices)
    twin = torch_twin(model, "float64").eval()
    graph = tp.DependencyGraph().build_dependency(twin, example_inputs=torch.zeros(2, 6, dtype=torch.float64))
    graph.get_pruning_group(twin[0], tp.prune_linear_out_channels, idxs=list(indices)).prune()
    theirs, mine = twin.state_dict(), ours.state_dict()
    assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    for key in mine:
        np.testing.assert_array_equal(_np(mine[key]), theirs[key].numpy(), err_msg=key)
    x = B.randn(4, 6, backend=be64)
    _close(ours(x), twin(torch.as_tensor(_np(x))).detach(), be64)


def test_dead_channel_before_an_unpadded_conv_becomes_its_bias(be64):
    model = _conv_conv(be64, 0)
    _randomize_bn(model[1], be64, np.random.default_rng(3))
    model.eval()
    w = _np(model[0]._params["weight"].data).copy()
    w[2] = 0.0
    model[0]._params["weight"].data = B.to_backend(w, be64)
    x = B.randn(2, 3, 8, 8, backend=be64)
    small = T.remove_units(model, 0)
    assert small[3].in_channels == 5
    _close(small(x), model(x), be64)


def test_dead_channel_before_a_padded_conv(be64):
    model = _conv_conv(be64, 1)
    model.eval()
    w = _np(model[0]._params["weight"].data).copy()
    w[2] = 0.0
    model[0]._params["weight"].data = B.to_backend(w, be64)
    with pytest.raises(ValueError, match="unit 2 of model\\[0\\] \\(Conv2d\\) has zero weights but emits"):
        T.remove_units(model, 0)                                 # bias b_2 != 0, then BN, ReLU: a constant
    b = _np(model[0]._params["bias"].data).copy()
    b[2] = 0.0                                                   # a zero channel through BN(0) = beta = 0
    model[0]._params["bias"].data = B.to_backend(b, be64)
    x = B.randn(2, 3, 8, 8, backend=be64)
    _close(T.remove_units(model, 0)(x), model(x), be64)


@pytest.mark.parametrize("build, layer, indices, error, words", [
    (lambda: _mlp(B.active()), 0, [3, 16], ValueError, "indices[1] must be an int in [0, 15], got 16"),
    (lambda: _mlp(B.active()), 0, [-1], ValueError, "indices[0] must be an int in [0, 15], got -1"),
    (lambda: _mlp(B.active()), 0, list(range(16)), ValueError, "would remove all 16 units"),
    (lambda: _mlp(B.active()), 0, 3, TypeError, "indices must be a sequence"),
    (lambda: _mlp(B.active()), 1, [0], ValueError, "layer must be the index of a Linear or Conv2d, got 1"),
    (lambda: _mlp(B.active()), 4, [0], ValueError, "has no layer with weights after it"),
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 1, groups=2), nn.Conv2d(4, 2, 1)), 0, [0], ValueError, "groups=1"),
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 1), nn.Linear(4, 2)), 0, [0], ValueError, "without a Flatten"),
    (lambda: nn.Sequential(nn.Linear(2, 4), nn.Flatten(), nn.Linear(4, 2)), 0, [0], ValueError,
     "model[1] (Flatten) lies between model[0] (Linear)"),
])
def test_remove_units_refuses(build, layer, indices, error, words):
    with pytest.raises(error) as info:
        T.remove_units(build(), layer, indices)
    assert words in str(info.value)


def test_removing_every_dead_unit_is_refused():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    model[0]._params["weight"].data[...] = 0.0
    with pytest.raises(ValueError, match="all 3 units of model\\[0\\] \\(Linear\\) are dead"):
        T.remove_units(model, 0)


def test_trimming_leaves_the_model_alone(be64):
    model = _dead_cnn(be64, np.random.default_rng(6))
    state = {k: _np(v).copy() for k, v in model.state_dict().items()}
    for result in (T.remove_units(model, 0), T.fold_batchnorms(model), T.remove_layers(model, 7, input_shape=(3, 8, 8))):
        assert result is not model
    after = model.state_dict()
    assert all(np.array_equal(state[k], _np(after[k])) for k in state)
    assert copy.deepcopy(model) is not model
