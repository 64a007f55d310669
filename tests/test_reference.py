"""nnopt_lab.reference: torch.nn twins from one registry give the same outputs as our layers."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab import nn
from nnopt_lab.reference import register_twin, torch_module, torch_twin, train_torch_twin
from nnopt_lab.testing import compare

# (our model factory, input shape)
TWINS = {
    "linear": (lambda b: nn.Linear(7, 5, backend=b), (6, 7)),
    "linear_nobias": (lambda b: nn.Linear(7, 5, bias=False, backend=b), (6, 7)),
    "conv": (lambda b: nn.Conv2d(3, 4, 3, stride=2, padding=1, backend=b), (2, 3, 7, 6)),
    "conv_nobias": (lambda b: nn.Conv2d(2, 3, 1, bias=False, backend=b), (2, 2, 4, 5)),
    "bn1d_train": (lambda b: nn.BatchNorm1d(5, backend=b), (8, 5)),
    "bn2d_eval": (lambda b: nn.BatchNorm2d(3, backend=b).eval(), (4, 3, 5, 5)),
    "maxpool": (lambda b: nn.MaxPool2d(3, stride=2), (2, 2, 7, 7)),
    "avgpool": (lambda b: nn.AvgPool2d(2), (2, 3, 6, 4)),
    "mlp": (lambda b: models.mlp((6, 5, 4, 3), batchnorm=True, backend=b).eval(), (5, 6)),
    "cnn": (lambda b: models.small_cnn(channels=(3, 4), image_size=8, batchnorm=True, backend=b), (3, 1, 8, 8)),
    "conv_groups": (lambda b: nn.Conv2d(4, 6, 3, padding=1, groups=2, backend=b), (2, 4, 6, 5)),
    "conv_depthwise": (lambda b: nn.Conv2d(3, 3, 3, groups=3, backend=b), (2, 3, 6, 6)),
    "conv_tuple": (lambda b: nn.Conv2d(2, 3, (3, 1), stride=(2, 1), padding=(1, 0), backend=b),
                   (2, 2, 7, 5)),
    "conv_dilation": (lambda b: nn.Conv2d(2, 3, 3, dilation=2, padding=2, backend=b), (1, 2, 7, 7)),
    "separable": (lambda b: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, backend=b),
                                          nn.Conv2d(4, 6, 1, backend=b)), (2, 4, 5, 5)),
}


def _randomize_batchnorm(model, b):
    """Non-trivial gamma/beta/running statistics, so the twin is not checked against 1s and 0s."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.load_state_dict({"weight": B.uniform(0.5, 2.0, (c,), backend=b), "bias": B.randn(c, backend=b),
                               "running_mean": B.randn(c, backend=b),
                               "running_var": B.uniform(0.5, 2.0, (c,), backend=b),
                               "num_batches_tracked": B.to_backend(np.array(3), b)})
    return model


@pytest.mark.parametrize("name", list(TWINS))
def test_twin_gives_our_output_float64(name, be64):
    make, shape = TWINS[name]
    ours = _randomize_batchnorm(make(be64), be64)
    twin = torch_twin(ours)
    assert twin.training == ours.training
    assert all(v.dtype == torch.float64 for v in twin.state_dict().values() if v.is_floating_point())
    x = B.randn(*shape, backend=be64)
    out = ours.forward(x)
    ref = twin(torch.as_tensor(B.to_numpy(x)))
    compare(out, ref.detach(), f"torch.nn twin of {name}", rtol=1e-12, atol=1e-12, quiet=True)
    for key, value in twin.state_dict().items():              # training updated the same statistics
        compare(ours.state_dict()[key], value, key, rtol=1e-12, atol=1e-12, quiet=True)


@pytest.mark.parametrize("name", ["conv", "cnn", "separable"])
def test_twin_float32(name, be32):
    make, shape = TWINS[name]
    ours = make(be32)
    twin = torch_twin(ours)
    x = B.randn(*shape, backend=be32)
    compare(ours.forward(x), twin(torch.as_tensor(B.to_numpy(x))).detach(), name, rtol=1e-4, atol=1e-5,
            quiet=True)


def test_twin_dtype_rounds_once_from_our_values():
    ours = nn.Linear(3, 2, backend=B.get_backend("numpy", "float64"))
    twin = torch_twin(ours, dtype="float32")
    assert twin.weight.dtype == torch.float32
    assert torch.equal(twin.weight, torch.as_tensor(B.to_numpy(ours._params["weight"].data)).float())
    small = models.mlp((3, 2))                                   # float32 model, float64 twin: exact
    back = torch_twin(small, dtype="float64")
    assert back[0].weight.dtype == torch.float64
    assert torch.equal(back[0].weight.float(), torch.as_tensor(B.to_numpy(small[0]._params["weight"].data)))


def test_twin_of_parameterless_model_and_mode():
    twin = torch_twin(nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Dropout(0.3)).eval())
    assert not twin.training and isinstance(twin[2], torch.nn.Dropout) and twin[2].p == 0.3


def test_conv_twin_passes_every_setting():
    conv = torch_module(nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=4))
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) == \
        ((3, 5), (2, 1), (1, 2), (1, 2), 4)
    assert conv.weight.shape == (8, 1, 3, 5)


class Scale(nn.Module):
    """y = a·x with one parameter a (shape (1,)): a layer the registry does not know."""

    def __init__(self, a=2.0, backend=None):
        super().__init__()
        b = B.active() if backend is None else B.get_backend(backend)
        self._params["a"] = nn.Parameter(b.asarray([a]))

    def forward(self, x):
        return x * self._params["a"].data


class TorchScale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.a


class TwiceScale(Scale):
    """A subclass: no registration of its own, finds Scale's along the MRO."""


def test_unregistered_layer_raises_naming_it():
    with pytest.raises(TypeError, match="no torch.nn twin registered for Scale"):
        torch_twin(nn.Sequential(nn.Linear(2, 2), Scale()))
    with pytest.raises(TypeError, match="layer must be an nnopt_lab.nn Module, got Linear"):
        torch_module(torch.nn.Linear(2, 2))


def test_registered_custom_layer_and_subclass(be64):
    from nnopt_lab import reference
    register_twin(Scale)(lambda layer: TorchScale())
    try:
        ours = nn.Sequential(nn.Linear(3, 4, backend=be64), Scale(3.5, backend=be64), TwiceScale(-1.0, backend=be64))
        twin = torch_twin(ours)
        assert twin[1].a.item() == 3.5 and twin[2].a.item() == -1.0           # state copied by key
        x = B.randn(2, 3, backend=be64)
        compare(ours(x), twin(torch.as_tensor(B.to_numpy(x))).detach(), "custom twin", rtol=1e-12, quiet=True)
    finally:
        reference._TWINS.pop(Scale)


def test_builder_that_copies_its_own_weights(be64):
    from nnopt_lab import reference

    @register_twin(Scale, copy_state=False)
    def _(layer):                      # the torch twin of y = a·x as a 1→1 Linear without bias
        lin = torch.nn.Linear(1, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.fill_(B.float_of(layer._params["a"].data[0]))
        return torch.nn.Sequential(torch.nn.Unflatten(1, (-1, 1)), lin, torch.nn.Flatten())
    try:
        ours = Scale(1.5, backend=be64)
        x = B.randn(2, 3, backend=be64)
        compare(ours(x), torch_twin(ours)(torch.as_tensor(B.to_numpy(x))).detach(), "own copy", rtol=1e-12,
                quiet=True)
    finally:
        reference._TWINS.pop(Scale)


def test_register_twin_bad_arguments():
    with pytest.raises(TypeError, match="layer_types must be subclasses of nnopt_lab.nn.Module"):
        register_twin(torch.nn.Linear)
    with pytest.raises(TypeError, match="copy_state must be a bool"):
        register_twin(Scale, copy_state=1)
    with pytest.raises(TypeError, match="builder must be callable"):
        register_twin(Scale)(3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        torch_twin(nn.Linear(2, 2), dtype="float16")
    with pytest.raises(TypeError, match="model must be an nnopt_lab.nn Module, got NoneType"):
        torch_twin(None)
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu'.*got 'abc'"):
        torch_twin(nn.Linear(2, 2), device="abc")
    with pytest.raises(TypeError, match="device must be a str"):
        torch_twin(nn.Linear(2, 2), device=0)
    if not B.cuda_available():
        with pytest.raises(ValueError, match="device must be 'cpu' or, where torch sees a GPU, 'cuda'"):
            torch_twin(nn.Linear(2, 2), device="cuda")


def test_train_torch_twin_bad_arguments():
    twin = torch_twin(models.mlp((4, 2)))
    data = (np.zeros((4, 4), dtype=np.float32), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 1000000\], got 0"):
        train_torch_twin(twin, data, epochs=0, batch_size=2, lr=0.1, seed=0)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got nan"):
        train_torch_twin(twin, data, epochs=1, batch_size=2, lr=float("nan"), seed=0)
    with pytest.raises(ValueError, match=r"epochs must be an int in \[1, 1000000\]"):
        train_torch_twin(twin, data, epochs=2 ** 62, batch_size=2, lr=0.1, seed=0)
    with pytest.raises(TypeError, match="twin must be a torch.nn.Module"):
        train_torch_twin(models.mlp((4, 2)), data, epochs=1, batch_size=2, lr=0.1, seed=0)
    assert len(train_torch_twin(twin, data, epochs=np.int64(2), batch_size=2, lr=np.float32(0.1), seed=0)) == 2


def test_twin_of_a_pruned_model_uses_torch_prune(be64):
    ours = nn.Sequential(nn.Linear(3, 2, backend=be64), nn.ReLU())
    weight = ours[0]._params["weight"]
    weight.mask = B.to_backend(np.array([[1, 0, 1], [0, 0, 1]], dtype=np.float64), be64)
    weight.apply_mask()
    twin = torch_twin(ours)
    assert set(twin.state_dict()) == {"0.weight_orig", "0.bias", "0.weight_mask"}   # torch's pruned keys
    assert torch.equal(twin[0].weight_mask, torch.as_tensor(B.to_numpy(weight.mask)))
    x = B.randn(4, 3, backend=be64)
    compare(ours(x), twin(torch.as_tensor(B.to_numpy(x))).detach(), "pruned twin", rtol=1e-12, quiet=True)
    back = nn.Sequential(nn.Linear(3, 2, backend=be64), nn.ReLU()).load_state_dict(twin.state_dict())
    compare(back(x), ours(x), "pruned round trip", rtol=0, atol=0, quiet=True)
    assert back[0]._params["weight"].mask is not None


def test_twin_of_a_shared_weight_layer(be64):
    from nnopt_lab.compression.weight_sharing import SharedLayer
    for layer, shape in [(nn.Linear(6, 4, backend=be64), (3, 6)), (nn.Conv2d(2, 3, 3, padding=1, backend=be64),
                                                                     (2, 2, 5, 5))]:
        shared = SharedLayer(layer, 4)
        shared.codebook.data = shared.codebook.data * 1.5           # changed since the last forward
        twin = torch_twin(nn.Sequential(shared, nn.ReLU()))
        x = B.randn(*shape, backend=be64)
        compare(nn.Sequential(shared, nn.ReLU())(x), twin(torch.as_tensor(B.to_numpy(x))).detach(),
                f"shared {type(layer).__name__} twin", rtol=1e-12, atol=1e-12, quiet=True)
        assert len(torch.unique(twin[0].weight)) <= 4


def test_twin_of_a_sparse_linear(be64):
    from nnopt_lab.inference.sparse import sparsify
    dense = models.mlp((6, 5, 3), backend=be64)
    w = dense[0]._params["weight"]
    w.mask = B.to_backend((np.arange(30).reshape(5, 6) % 3 == 0).astype(np.float64), be64)
    w.apply_mask()
    sparse = sparsify(dense)
    twin = torch_twin(sparse)
    assert isinstance(twin[0], torch.nn.Linear) and int((twin[0].weight != 0).sum()) == sparse[0].nnz
    x = B.randn(4, 6, backend=be64)
    compare(sparse(x), twin(torch.as_tensor(B.to_numpy(x))).detach(), "SparseLinear twin", rtol=1e-12,
            atol=1e-12, quiet=True)


def test_every_exported_layer_type_has_a_twin():
    import importlib
    import pkgutil

    import nnopt_lab
    from nnopt_lab import reference
    kinds = []
    for info in pkgutil.walk_packages(nnopt_lab.__path__, "nnopt_lab."):
        if info.name.startswith(("nnopt_lab.widgets", "nnopt_lab.exercises")):
            continue
        module = importlib.import_module(info.name)
        kinds += [getattr(module, n) for n in getattr(module, "__all__", ())]
    not_layers = {"Param2D"}         # a point on a 2-D function (chapter 4.3), not a layer of a network
    kinds = {k for k in kinds if isinstance(k, type) and issubclass(k, nn.Module) and k is not nn.Module
             and k.__name__ not in not_layers}
    assert len(kinds) >= 11
    missing = [k.__name__ for k in kinds if not any(c in reference._TWINS for c in k.__mro__)]
    assert not missing, f"layer types without a torch.nn twin (add @register_twin): {missing}"


@pytest.mark.parametrize("per_channel", [False, True])
def test_twin_of_a_calibrated_qat_model_gives_its_outputs(be32, per_channel):
    """FakeQuantize and QATLayer twins: torch's fake-quantization with our range, the layer with W-hat."""
    from nnopt_lab.inference import qat
    model = models.mlp((12, 16, 5), backend=be32)
    x = B.randn((40, 12), backend=be32)
    prepared = qat.prepare_qat(model, bits=4, activation_bits=4, per_channel=per_channel)
    qat.calibrate(prepared, x)
    prepared.eval()
    ours = B.to_numpy(prepared(x))
    twin = torch_twin(prepared).eval()
    with torch.no_grad():
        theirs = twin(torch.as_tensor(B.to_numpy(x))).numpy()
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, np.abs(theirs).max())
    assert len(np.unique(ours)) < ours.size          # the outputs really are on a 4-bit grid


def test_twin_of_an_uncalibrated_fake_quantize_is_refused():
    from nnopt_lab.inference import qat
    with pytest.raises(ValueError, match="calibrate"):
        torch_module(qat.FakeQuantize(bits=8))
