"""Convolution (grouped, depthwise, tuple kernel/stride/padding, dilation) and pooling with pairs:
forward and backward against torch.nn.functional and autograd on SEEDED RANDOM shapes and settings,
in float64 (~1e-10) and float32 (rtol 1e-4), plus numerical gradient checks."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import nn
from nnopt_lab.nn import functional as F
from nnopt_lab.testing import gradcheck

TRIALS = 30


def _random_setting(rng: np.random.Generator) -> dict:
    """One random convolution: kernel (1..5, 1..5), stride/padding/dilation pairs, groups incl. depthwise."""
    groups = str(rng.choice(["1", "1", "2", "3", "dw"]))
    per_group_in, per_group_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if groups == "dw":
        g = int(rng.integers(2, 6))
        cin, cout = g, g * int(rng.integers(1, 3))                 # depthwise (channel multiplier 1 or 2)
    else:
        g = int(groups)
        cin, cout = g * per_group_in, g * per_group_out
    kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    h, w = (max(1, s - 2 * p + int(rng.integers(0, 7))) for s, p in zip(span, padding))   # non-square images
    return dict(n=int(rng.integers(1, 4)), cin=cin, cout=cout, h=h, w=w, kernel=kernel, stride=stride,
                padding=padding, dilation=dilation, groups=g, bias=bool(rng.random() < 0.7))


SETTINGS = [_random_setting(np.random.default_rng(1000 + i)) for i in range(TRIALS)]


def _ids(s):
    return (f"n{s['n']}c{s['cin']}-{s['cout']}g{s['groups']}_{s['h']}x{s['w']}_k{s['kernel']}"
            f"s{s['stride']}p{s['padding']}d{s['dilation']}").replace(" ", "")


def _arrays(s, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((s["n"], s["cin"], s["h"], s["w"])).astype(dtype)
    w = rng.standard_normal((s["cout"], s["cin"] // s["groups"]) + s["kernel"]).astype(dtype)
    b = rng.standard_normal(s["cout"]).astype(dtype) if s["bias"] else None
    return x, w, b


def _torch_reference(s, x, w, b, g):
    xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, w))
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    out = torch.nn.functional.conv2d(xt, wt, bt, s["stride"], s["padding"], s["dilation"], s["groups"])
    out.backward(torch.tensor(g))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def _check_setting(s, backend_name, dtype, rtol, atol):
    be = B.get_backend(backend_name, dtype)
    x, w, b = _arrays(s, dtype)
    ox, ow = B.to_backend(x, be), B.to_backend(w, be)
    ob = None if b is None else B.to_backend(b, be)
    out, cache = F.conv2d_forward(ox, ow, ob, s["stride"], s["padding"], s["dilation"], s["groups"])
    g = np.random.default_rng(8).standard_normal(tuple(out.shape)).astype(dtype)
    ref_out, ref_dx, ref_dw, ref_db = _torch_reference(s, x, w, b, g)
    dx, dw, db = F.conv2d_backward(B.to_backend(g, be), cache)
    np.testing.assert_allclose(B.to_numpy(out), ref_out, rtol=rtol, atol=atol, err_msg="forward")
    np.testing.assert_allclose(B.to_numpy(dx), ref_dx, rtol=rtol, atol=atol, err_msg="dx")
    np.testing.assert_allclose(B.to_numpy(dw), ref_dw, rtol=rtol, atol=atol, err_msg="dweight")
    if b is None:
        assert db is None
    else:
        np.testing.assert_allclose(B.to_numpy(db), ref_db, rtol=rtol, atol=atol, err_msg="dbias")


def test_the_random_settings_cover_what_they_claim():
    """A check that the trials exercise every feature (so the random draw cannot silently shrink)."""
    assert any(s["groups"] == s["cin"] > 1 for s in SETTINGS)                           # depthwise
    assert any(1 < s["groups"] < s["cin"] for s in SETTINGS)                            # grouped
    assert any(s["kernel"][0] != s["kernel"][1] for s in SETTINGS)
    assert any(s["stride"][0] != s["stride"][1] for s in SETTINGS)
    assert any(s["padding"][0] != s["padding"][1] for s in SETTINGS)
    assert any(s["dilation"] != (1, 1) for s in SETTINGS)
    assert any(s["h"] != s["w"] for s in SETTINGS)
    assert {s["n"] for s in SETTINGS} == {1, 2, 3}


@pytest.mark.parametrize("s", SETTINGS, ids=_ids)
def test_conv2d_matches_torch_float64(s, backend_name):
    _check_setting(s, backend_name, "float64", rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("s", SETTINGS[:10], ids=_ids)
def test_conv2d_matches_torch_float32(s, backend_name):
    _check_setting(s, backend_name, "float32", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("s", SETTINGS[:4], ids=_ids)
def test_conv2d_gradients_pass_numerical_check(s):
    be = B.get_backend("numpy", "float64")
    x, w, b = (None if a is None else B.to_backend(a, be) for a in _arrays(s, "float64"))
    args = (s["stride"], s["padding"], s["dilation"], s["groups"])
    gradcheck(lambda v: F.conv2d_forward(v, w, b, *args)[0],
              lambda g: F.conv2d_backward(g, F.conv2d_forward(x, w, b, *args)[1])[0], x, name="conv dx", tol=1e-7)
    gradcheck(lambda v: F.conv2d_forward(x, v, b, *args)[0],
              lambda g: F.conv2d_backward(g, F.conv2d_forward(x, w, b, *args)[1])[1], w, name="conv dw", tol=1e-7)


def test_im2col_col2im_are_adjoint_with_stride_wider_than_high():
    """<im2col(x), c> = <x, col2im(c)> where the flat rows must be widened (stride (1, 3))."""
    be = B.get_backend("numpy", "float64")
    x = B.randn(2, 3, 5, 7, backend=be)
    cols, geometry = F.im2col(x, 2, 3, stride=(1, 3), padding=(1, 0), dilation=(2, 1))
    assert geometry["w"] == 7 and geometry["row"] == 9                  # flat rows widened to a multiple of 3
    c = B.randn(*cols.shape, backend=be)
    # only the valid columns of the wide grid are read back by col2im's callers: zero the others
    c4 = np.array(B.to_numpy(c)).reshape(cols.shape[0], 2, geometry["ho"], geometry["wq"])
    c4[..., geometry["wo"]:] = 0.0
    c = B.to_backend(c4.reshape(cols.shape), be)
    lhs = float(np.sum(B.to_numpy(cols) * B.to_numpy(c)))
    rhs = float(np.sum(B.to_numpy(x) * B.to_numpy(F.col2im(c, geometry))))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("layer_kw,shape", [
    (dict(in_channels=4, out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
          groups=4), (2, 4, 7, 9)),
    (dict(in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3), (2, 3, 6, 5)),
])
def test_conv2d_layer_matches_torch_nn_conv2d(layer_kw, shape, be64):
    """Layer attributes as torch stores them; the twin built from them gives the same output and gradients."""
    ours = nn.Conv2d(**layer_kw, backend=be64)
    assert isinstance(ours.kernel_size, tuple) and isinstance(ours.stride, tuple)
    assert isinstance(ours.padding, tuple) and isinstance(ours.dilation, tuple) and isinstance(ours.groups, int)
    ref = torch.nn.Conv2d(ours.in_channels, ours.out_channels, ours.kernel_size, ours.stride, ours.padding,
                          ours.dilation, ours.groups).double()
    for attr in ("kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(ours, attr) == getattr(ref, attr)
    assert tuple(ours._params["weight"].shape) == tuple(ref.weight.shape)
    ref.load_state_dict({k: torch.as_tensor(B.to_numpy(v)) for k, v in ours.state_dict().items()})
    x = B.randn(*shape, backend=be64)
    xt = torch.as_tensor(B.to_numpy(x)).requires_grad_()
    out, out_t = ours(x), ref(xt)
    np.testing.assert_allclose(B.to_numpy(out), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = B.randn(*out.shape, backend=be64)
    out_t.backward(torch.as_tensor(B.to_numpy(g)))
    np.testing.assert_allclose(B.to_numpy(ours.backward(g)), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(ours._params["weight"].grad), ref.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-12)
    assert ours.macs(shape, tuple(out.shape)) == (
        int(np.prod(out.shape)) * (ours.in_channels // ours.groups) * int(np.prod(ours.kernel_size)))


def test_conv2d_init_bound_uses_the_fan_in_of_one_group():
    layer = nn.Conv2d(8, 8, 3, groups=8, backend=B.get_backend("numpy", "float64"))
    w = B.to_numpy(layer._params["weight"].data)
    assert w.shape == (8, 1, 3, 3)
    assert np.abs(w).max() <= 1 / 3 and np.abs(w).max() > 0.2     # U(-1/sqrt(9), 1/sqrt(9))


POOLS = [((2, 3), None, (2, 3, 7, 8)), ((3, 2), (1, 2), (2, 2, 6, 7)), (2, (1, 3), (1, 2, 5, 9)),
         ((1, 4), (2, 1), (2, 1, 5, 6))]


@pytest.mark.parametrize("kernel,stride,shape", POOLS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_with_pairs_matches_torch(kind, kernel, stride, shape, be64):
    ours = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(kernel, stride)
    ref = (torch.nn.MaxPool2d if kind == "max" else torch.nn.AvgPool2d)(kernel, stride)
    assert ours.kernel_size == ref.kernel_size and ours.stride == ref.stride        # stored as torch stores them
    n = int(np.prod(shape))
    x_np = B.rng().permutation(n).reshape(shape) * 0.01                              # no ties in max windows
    x = B.to_backend(x_np, be64)
    xt = torch.tensor(x_np, requires_grad=True)
    out, out_t = ours(x), ref(xt)
    np.testing.assert_allclose(B.to_numpy(out), out_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    g = B.randn(*out.shape, backend=be64)
    out_t.backward(torch.as_tensor(B.to_numpy(g)))
    np.testing.assert_allclose(B.to_numpy(ours.backward(g)), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_with_pairs_passes_numerical_check(kind):
    be = B.get_backend("numpy", "float64")
    layer = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)((3, 2), (1, 2))
    x = B.to_backend(B.rng().permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) * 0.01, be)
    gradcheck(layer.forward, layer.backward, x, name=f"{kind}pool", tol=1e-7)


def test_depthwise_separable_block_matches_torch():
    """Depthwise 3x3 then pointwise 1x1 (a separable convolution) through Sequential, float32 on numpy."""
    be = B.get_backend("numpy", "float32")
    ours = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6, backend=be), nn.ReLU(),
                         nn.Conv2d(6, 4, 1, backend=be))
    ref = torch.nn.Sequential(torch.nn.Conv2d(6, 6, 3, padding=1, groups=6), torch.nn.ReLU(),
                              torch.nn.Conv2d(6, 4, 1))
    ref.load_state_dict({k: torch.as_tensor(B.to_numpy(v)) for k, v in ours.state_dict().items()})
    x = B.randn(3, 6, 8, 7, backend=be)
    xt = torch.as_tensor(B.to_numpy(x)).requires_grad_()
    out, out_t = ours(x), ref(xt)
    np.testing.assert_allclose(B.to_numpy(out), out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = B.randn(*out.shape, backend=be)
    out_t.backward(torch.as_tensor(B.to_numpy(g)))
    np.testing.assert_allclose(B.to_numpy(ours.backward(g)), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    for (name, p), (_, tp) in zip(ours.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(B.to_numpy(p.grad), tp.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
