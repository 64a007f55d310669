"""Every layer: forward and backward against torch autograd on the same weights, gradient checks,
state_dict round trips with torch.nn, and clear errors for bad input."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import nn
from nnopt_lab.nn import functional as F
from nnopt_lab.reference import torch_module, torch_twin
from nnopt_lab.testing import compare, gradcheck

# (our layer factory, input shape); each is checked against its torch.nn twin
LAYERS = {
    "linear": (lambda b: nn.Linear(7, 5, backend=b), (6, 7)),
    "linear_nobias": (lambda b: nn.Linear(7, 5, bias=False, backend=b), (6, 7)),
    "conv": (lambda b: nn.Conv2d(3, 4, 3, backend=b), (2, 3, 7, 6)),
    "conv_stride_pad": (lambda b: nn.Conv2d(2, 3, 3, stride=2, padding=1, backend=b), (2, 2, 7, 8)),
    "conv_5x5_pad2": (lambda b: nn.Conv2d(1, 2, 5, padding=2, backend=b), (2, 1, 6, 6)),
    "conv_1x1": (lambda b: nn.Conv2d(3, 4, 1, backend=b), (2, 3, 5, 4)),
    "conv_stride3_nonsquare": (lambda b: nn.Conv2d(2, 3, 2, stride=3, padding=1, backend=b), (2, 2, 9, 7)),
    "conv_groups": (lambda b: nn.Conv2d(4, 6, 3, padding=1, groups=2, backend=b), (2, 4, 6, 5)),
    "conv_depthwise_stride_pair": (lambda b: nn.Conv2d(3, 3, 3, stride=(2, 1), groups=3, backend=b), (2, 3, 7, 6)),
    "conv_dilated_tuple": (lambda b: nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1),
                                               backend=b), (1, 2, 7, 8)),
    "maxpool": (lambda b: nn.MaxPool2d(2), (2, 3, 6, 6)),
    "maxpool_pair": (lambda b: nn.MaxPool2d((2, 3), (1, 2)), (2, 2, 6, 7)),
    "avgpool_pair": (lambda b: nn.AvgPool2d((3, 2)), (1, 2, 7, 6)),
    "maxpool_overlap": (lambda b: nn.MaxPool2d(3, stride=2), (2, 2, 7, 7)),
    "avgpool": (lambda b: nn.AvgPool2d(2), (2, 3, 6, 4)),
    "avgpool_overlap": (lambda b: nn.AvgPool2d(3, stride=1), (1, 2, 5, 5)),
    "relu": (lambda b: nn.ReLU(), (4, 9)),
    "flatten": (lambda b: nn.Flatten(), (2, 3, 4, 2)),
    "bn1d_train": (lambda b: nn.BatchNorm1d(5, backend=b), (8, 5)),
    "bn2d_train": (lambda b: nn.BatchNorm2d(3, backend=b), (4, 3, 5, 5)),
    "bn1d_eval": (lambda b: nn.BatchNorm1d(5, backend=b).eval(), (8, 5)),
    "bn2d_eval": (lambda b: nn.BatchNorm2d(3, backend=b).eval(), (4, 3, 5, 5)),
}


def _nonzero_affine(layer, b):
    """Give BatchNorm non-trivial gamma/beta/running stats, so the check is not against 1s and 0s."""
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        c = layer.num_features
        layer.load_state_dict({"weight": B.uniform(0.5, 2.0, (c,), backend=b),
                               "bias": B.randn(c, backend=b),
                               "running_mean": B.randn(c, backend=b),
                               "running_var": B.uniform(0.5, 2.0, (c,), backend=b),
                               "num_batches_tracked": B.to_backend(np.array(3), b)})
    return layer


def _run_both(name, b, rtol, atol):
    make, shape = LAYERS[name]
    ours = _nonzero_affine(make(b), b)
    ref = torch_twin(ours, dtype=b.dtype) if ours.state_dict() else torch_module(ours).to(getattr(torch, b.dtype))
    ref.train(ours.training)
    x = B.randn(*shape, backend=b)
    xt = torch.as_tensor(B.to_numpy(x)).requires_grad_()
    out, out_t = ours.forward(x), ref(xt)
    compare(out, out_t.detach(), f"torch.nn {name} forward", rtol=rtol, atol=atol, quiet=True)
    g = B.randn(*out.shape, backend=b)
    dx = ours.backward(g)
    out_t.backward(torch.as_tensor(B.to_numpy(g)))
    compare(dx, xt.grad, f"torch.nn {name} input gradient", rtol=rtol, atol=atol, quiet=True)
    for (pname, p), (tname, tp) in zip(ours.named_parameters(), ref.named_parameters()):
        assert pname == tname
        compare(p.grad, tp.grad, f"torch.nn {name} {pname} gradient", rtol=rtol, atol=atol, quiet=True)
    for key, value in ref.state_dict().items():   # running statistics updated the same way
        compare(ours.state_dict()[key], value, f"torch.nn {name} {key}", rtol=rtol, atol=atol, quiet=True)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_torch_float64(name, be64):
    _run_both(name, be64, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_torch_float32(name, be32):
    _run_both(name, be32, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in LAYERS if n not in ("relu",)])
def test_input_gradient_passes_numerical_check(name):
    b = B.get_backend("numpy", "float64")
    make, shape = LAYERS[name]
    layer = _nonzero_affine(make(b), b)
    x = B.randn(*shape, backend=b)
    if "maxpool" in name:     # keep window maxima apart so tiny steps cannot swap the argmax
        x = B.to_backend(B.rng().permutation(int(np.prod(shape))).reshape(shape) * 0.01, b)
    gradcheck(lambda v: layer.forward(v), lambda g: layer.backward(g), x, name=name, tol=1e-7)


def test_relu_gradient_check_away_from_the_kink():
    x = B.to_backend(np.array([[-2.0, -0.5, 0.3, 1.7], [0.9, -1.1, 2.2, -0.01]]), "numpy", dtype="float64")
    layer = nn.ReLU()
    gradcheck(layer.forward, layer.backward, x, tol=1e-9)


@pytest.mark.parametrize("name", ["linear", "conv_stride_pad", "bn2d_train"])
def test_parameter_gradients_pass_numerical_check(name):
    b = B.get_backend("numpy", "float64")
    make, shape = LAYERS[name]
    layer = _nonzero_affine(make(b), b)
    x = B.randn(*shape, backend=b)
    g = B.randn(*layer.forward(x).shape, backend=b)
    for pname, p in layer.named_parameters():
        def f(w, p=p):
            p.data = w
            return layer.forward(x)

        def back(gg, p=p):
            layer.forward(x)
            layer.backward(gg)
            return p.grad
        gradcheck(f, back, p.data.copy(), name=f"{name}.{pname}", tol=1e-7)


def test_numpy_and_torch_paths_agree():
    outs = []
    for name in ("numpy", "torch-cpu"):
        b = B.get_backend(name, "float64")
        B.seed(1)
        model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, backend=b), nn.BatchNorm2d(3, backend=b), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(3 * 4 * 4, 5, backend=b))
        x = B.randn(4, 1, 8, 8, backend=b)
        out = model(x)
        dx = model.backward(B.randn(*out.shape, backend=b))
        outs.append((B.to_numpy(out), B.to_numpy(dx), [B.to_numpy(p.grad) for p in model.parameters()]))
    (o1, d1, g1), (o2, d2, g2) = outs
    np.testing.assert_allclose(o1, o2, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(d1, d2, rtol=1e-12, atol=1e-13)
    for a, c in zip(g1, g2):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13)


def test_dropout_scales_survivors_and_is_identity_in_eval():
    layer = nn.Dropout(0.25)
    x = B.to_backend(np.ones((200, 50)), B.get_backend("numpy", "float64"))
    out = B.to_numpy(layer(x))
    assert set(np.unique(out)) == {0.0, 1.0 / 0.75}
    assert abs((out == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(B.to_numpy(layer.backward(x)), out)   # same mask for the gradient
    assert np.array_equal(B.to_numpy(layer.eval()(x)), B.to_numpy(x))


@pytest.mark.parametrize("big", [1e4, -1e4, 3e4])
def test_cross_entropy_is_stable_for_huge_logits(be64, big):
    logits = B.to_backend(np.array([[big, 0.0, -big], [0.0, big, 1.0], [1.0, 2.0, 3.0]]), be64)
    labels = B.to_backend(np.array([2, 1, 0]), be64)
    crit = nn.CrossEntropyLoss()
    loss = crit(logits, labels)
    dlogits = crit.backward()
    lt = torch.as_tensor(B.to_numpy(logits)).requires_grad_()
    ref = torch.nn.functional.cross_entropy(lt, torch.as_tensor(B.to_numpy(labels)))
    ref.backward()
    assert np.isfinite(B.float_of(loss))
    compare(loss, ref.detach(), "torch.nn.functional.cross_entropy", rtol=1e-12, quiet=True)
    compare(dlogits, lt.grad, "cross_entropy gradient", rtol=1e-12, atol=1e-15, quiet=True)


def test_cross_entropy_gradient_check():
    b = B.get_backend("numpy", "float64")
    labels = B.to_backend(np.array([0, 3, 1, 3]), b)
    crit = nn.CrossEntropyLoss()
    gradcheck(lambda z: crit(z, labels), lambda g: crit.backward(B.float_of(g)), B.randn(4, 5, backend=b))


def test_state_dict_round_trips_with_torch_nn():
    b = B.get_backend("numpy", "float64")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3, backend=b), nn.BatchNorm2d(2, backend=b), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3, backend=b), nn.BatchNorm1d(3, backend=b))
    ref = torch_module(ours).double()
    assert list(ours.state_dict()) == list(ref.state_dict())            # same keys, same order
    ours.load_state_dict(ref.state_dict())                                # torch -> ours
    for key, value in ref.state_dict().items():
        compare(ours.state_dict()[key], value, key, rtol=0, atol=0, quiet=True)
    back = torch_module(ours).double()
    back.load_state_dict({k: torch.as_tensor(B.to_numpy(v)) for k, v in ours.state_dict().items()})  # ours -> torch
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    ours.eval(), ref.eval(), back.eval()
    compare(ours(B.to_backend(x.numpy(), b)), ref(x).detach(), "round trip", rtol=1e-12, quiet=True)


def test_load_state_dict_reports_missing_and_misshapen_keys():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"missing \['0.bias'\]"):
        model.load_state_dict({"0.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"state_dict\['0.weight'\] has shape \(3, 2\), expected \(2, 3\)"):
        model.load_state_dict({"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(2)})


@pytest.mark.parametrize("make,error,message", [
    (lambda: nn.Conv2d(1, 2, 3, stride=0), ValueError, r"stride must be an int >= 1 or a tuple of such ints, got 0"),
    (lambda: nn.Conv2d(1, 2, 3, stride=(1, 0)), ValueError, r"stride must be .*, got \(1, 0\)"),
    (lambda: nn.Conv2d(1, 2, 3, stride=(1, 2, 3)), ValueError, r"stride must be an int or a tuple of 2 ints"),
    (lambda: nn.Conv2d(1, 2, 3, stride=1.5), TypeError, r"stride must be an int or a tuple of ints, got 1.5"),
    (lambda: nn.Conv2d(1, 2, 0), ValueError, "kernel_size must be an int >= 1 or a tuple of such ints, got 0"),
    (lambda: nn.Conv2d(1, 2, 3, padding=-1), ValueError, "padding must be an int >= 0 or a tuple of such ints, got -1"),
    (lambda: nn.Conv2d(1, 2, 3, dilation=0), ValueError, "dilation must be an int >= 1"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, r"groups must divide in_channels \(4\) and out_channels \(6\), got 4"),
    (lambda: nn.Conv2d(4, 4, 3, groups=0), ValueError, "groups must be an int >= 1, got 0"),
    (lambda: nn.Conv2d(4, 4, 3, bias=1), TypeError, "bias must be a bool, got 1"),
    (lambda: nn.Dropout(1.5), ValueError, r"p must be a finite number in \[0, 1\), got 1.5"),
    (lambda: nn.Dropout(-0.1), ValueError, r"p must be a finite number in \[0, 1\), got -0.1"),
    (lambda: nn.Dropout("0.1"), TypeError, r"p must be a finite number in \[0, 1\), got '0.1'"),
    (lambda: nn.Linear(0, 3), ValueError, "in_features must be an int >= 1, got 0"),
    (lambda: nn.BatchNorm1d(4, momentum=2.0), ValueError, r"momentum must be a finite number in \[0, 1\], got 2.0"),
    (lambda: nn.BatchNorm1d(4, eps=0.0), ValueError, r"eps must be a finite number in \(0, inf\), got 0.0"),
    (lambda: nn.MaxPool2d(2, stride=0), ValueError, "stride must be an int >= 1 or a tuple of such ints, got 0"),
    (lambda: nn.AvgPool2d((2, 0)), ValueError, "kernel_size must be an int >= 1"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, r"layers\[1\] must be a Module, got str"),
])
def test_bad_constructor_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_forward_inputs_are_named():
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 7\), got \(2, 6\)"):
        nn.Linear(7, 3)(np.zeros((2, 6), dtype=np.float32))
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 3, H, W\), got \(2, 1, 5, 5\)"):
        nn.Conv2d(3, 2, 3)(np.zeros((2, 1, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"kernel_size \(5, 5\) spans \(5, 5\), more than x's height and width \(3, 3\) "
                                         r"padded by \(0, 0\) to \(3, 3\)"):
        nn.Conv2d(1, 2, 5)(np.zeros((1, 1, 3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="mixed"):
        F.linear_forward(np.zeros((2, 3)), torch.zeros(4, 3))[0] + 0
    with pytest.raises(TypeError, match="labels must be integer class indices, got dtype float32"):
        nn.CrossEntropyLoss()(np.zeros((2, 3), dtype=np.float32), np.zeros(2, dtype=np.float32))
    with pytest.raises(TypeError, match=r"Linear got x of dtype float64 but its parameters \(weight\) are float32"):
        nn.Linear(3, 2)(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="Conv2d got x of dtype int64"):
        nn.Conv2d(1, 2, 3)(np.zeros((1, 1, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="needs more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), dtype=np.float32))


def test_load_state_dict_refuses_values_it_would_change():
    model = nn.Sequential(nn.BatchNorm1d(2))
    state = dict(model.state_dict())
    with pytest.raises(TypeError, match=r"state_dict\['0.num_batches_tracked'\] must be an integer array like the "
                                        r"int64 it replaces, got dtype float64"):
        model.load_state_dict({**state, "0.num_batches_tracked": np.array(2.7)})
    with pytest.raises(TypeError, match=r"state_dict\['0.weight'\] must hold real numbers, got dtype complex128"):
        model.load_state_dict({**state, "0.weight": np.ones(2, dtype=complex)})
    with pytest.raises(TypeError, match=r"state_dict\['0.bias'\] must be a numpy array or torch tensor, got list"):
        model.load_state_dict({**state, "0.bias": [0.0, 0.0]})
    with pytest.raises(TypeError, match=r"state must be a dict of arrays"):
        model.load_state_dict(None)
    model.load_state_dict({**state, "0.num_batches_tracked": np.array(5, dtype=np.int32)})   # int widths convert
    assert B.dtype_name(model.state_dict()["0.num_batches_tracked"]) == "int64"


def test_load_state_dict_copies_instead_of_sharing_memory(backend_name):
    model = nn.Sequential(nn.Linear(3, 2, backend=backend_name))
    state = {k: B.copy(v) for k, v in model.state_dict().items()}
    saved = B.to_numpy(state["0.weight"]).copy()
    model.load_state_dict(state)
    model[0]._params["weight"].data *= 0.0                      # an in-place update, as optimizers do
    np.testing.assert_array_equal(B.to_numpy(state["0.weight"]), saved)


def test_backward_without_input_gradient_gives_the_same_parameter_gradients(be64):
    B.seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8, backend=be64), nn.ReLU(), nn.Linear(8, 3, backend=be64))
    x = B.randn(5, 1, 4, 4, backend=be64)
    g = B.randn(5, 3, backend=be64)
    model(x)
    dx = model.backward(g)
    full = [B.to_numpy(p.grad).copy() for p in model.parameters()]
    model(x)
    assert model.backward(g, need_dx=False) is None
    assert tuple(dx.shape) == (5, 1, 4, 4)
    for a, p in zip(full, model.parameters()):
        np.testing.assert_array_equal(a, B.to_numpy(p.grad))


# ----------------------------------------------------------------------------- per-layer cost
def test_layers_report_their_own_macs():
    assert nn.Linear(7, 5).macs((6, 7), (6, 5)) == 6 * 7 * 5
    assert nn.Conv2d(3, 4, 3).macs((2, 3, 7, 6), (2, 4, 5, 4)) == 2 * 4 * 5 * 4 * 3 * 9
    for layer, shape in [(nn.ReLU(), (4, 9)), (nn.MaxPool2d(2), (2, 3, 6, 6)), (nn.Flatten(), (2, 3, 4, 2))]:
        assert layer.macs(shape, shape) == 0


def test_parameter_bytes_counts_own_parameters_only(backend_name):
    layer = nn.Linear(7, 5, backend=B.get_backend(backend_name, "float64"))
    assert layer.parameter_bytes() == 8 * (35 + 5)
    assert layer.parameter_bytes(bits=4) == (4 * 40 + 7) // 8
    assert layer.parameter_bytes(bits=3) == -(-3 * 40 // 8)      # rounded up to whole bytes
    layer._params["weight"].data[0] = 0.0                         # 7 zeros
    assert layer.parameter_bytes(nonzero=True) == 8 * (40 - 7)
    assert nn.Sequential(layer).parameter_bytes() == 0            # a container owns no parameters
    with pytest.raises(ValueError, match="bits must be an int >= 1, got 0"):
        layer.parameter_bytes(bits=0)
    with pytest.raises(TypeError, match="nonzero must be a bool"):
        layer.parameter_bytes(nonzero=1)


# ----------------------------------------------------------------------------- 0-d buffers
def test_batchnorm_state_dict_loads_from_torch_nn_on_every_backend(be64):
    """num_batches_tracked is 0-d, as in torch: a torch.nn state dict loads into a numpy or torch model."""
    ref = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).double()
    ref.train()
    for _ in range(3):
        ref(torch.randn(4, 3, 5, 5, dtype=torch.float64))
    ours = nn.Sequential(nn.BatchNorm2d(3, backend=be64))
    assert tuple(ours.state_dict()["0.num_batches_tracked"].shape) == ()
    ours.load_state_dict(ref.state_dict())
    tracked = ours.state_dict()["0.num_batches_tracked"]
    assert tuple(tracked.shape) == () and B.dtype_name(tracked) == "int64" and int(tracked) == 3
    for key, value in ref.state_dict().items():
        compare(ours.state_dict()[key], value, key, rtol=0, atol=0, quiet=True)
    ours(B.randn(4, 3, 5, 5, backend=be64))                                # training goes on counting
    assert int(ours.state_dict()["0.num_batches_tracked"]) == 4
    back = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).double()          # ours -> torch.nn
    back.load_state_dict({k: torch.as_tensor(B.to_numpy(v)) for k, v in ours.state_dict().items()})
    assert int(back[0].num_batches_tracked) == 4
    other = nn.Sequential(nn.BatchNorm2d(3, backend=B.get_backend("numpy" if be64.is_torch else "torch-cpu",
                                                                      "float64")))
    other.load_state_dict(ours.state_dict())                              # across our two backends
    assert int(other.state_dict()["0.num_batches_tracked"]) == 4
